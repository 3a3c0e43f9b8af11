//! Random command sequences, each run through the proxy and then directly on the master that owns
//! its keys, must get the same bytes back.
//!
//! `command_walk` checks one hand-written case per command; Redis' own suites check what their
//! authors thought of. This test looks where neither does: commands in random orders, with
//! wrong arguments mixed in (an argument dropped or added, a number that is not one, an empty
//! string), inside and outside MULTI, under WATCH, pipelined in random batches, with RESP2 and
//! RESP3. Every key of a sequence shares one hash tag, so each sequence has a single owner, and
//! the cluster is flushed before each side runs, so both start from nothing. Commands whose reply
//! depends on the time or on chance (TTL, TIME, SPOP, RANDOMKEY …) are left out; sets, hashes and
//! sorted sets stay small, so every reply's order is the insertion order on both sides.
//!
//! A failure names the seed, the protocol, the command and the commands before it; rerun one seed
//! with `REDISFORGE_DIFF_SEED=<seed>` (and `REDISFORGE_DIFF_SHOW=1` for every reply of both
//! sides), search further with `REDISFORGE_DIFF_ROUNDS=<n>`, or run batches of one's own with
//! `REDISFORGE_DIFF_SCRIPT` ([`replay`]). Bounded: `ROUNDS` sequences of `COMMANDS` commands, and
//! `TIME_BUDGET` at most.

use std::time::{Duration, Instant};

use redisforge_proxy::slot::key_slot;
use redisforge_tests::resp::{Conn, Frame, encode, show};
use redisforge_tests::rng::Rng;
use redisforge_tests::{Cluster, Proxy, ProxyOptions};

/// Sequences per run.
const ROUNDS: u64 = 60;
/// Commands per sequence (a transaction's MULTI and EXEC among them).
const COMMANDS: usize = 80;
/// The run stops after this even if rounds are left (a busy machine), having run at least one.
const TIME_BUDGET: Duration = Duration::from_secs(90);
/// Longest reply shown in a failure message.
const SHOW: usize = 300;

/// The command templates. Placeholders: `K` a key of the sequence's tag, `V` a value, `I` an
/// integer, `F` a float, `M` a member or field, `S` a score, `T` a time to live. Anything else
/// is sent as it is. MULTI, EXEC and DISCARD are placed by [`sequence`]; MEMORY USAGE is left out
/// (a value's allocation depends on how the node read it: an inline line, or a RESP array the
/// proxy sends).
const TEMPLATES: &[&str] = &[
    // strings
    "SET K V",
    "SET K V NX",
    "SET K V XX GET",
    "SET K V KEEPTTL",
    "SET K V GET",
    "SETNX K V",
    "GET K",
    "GETSET K V",
    "GETDEL K",
    "GETEX K PERSIST",
    "APPEND K V",
    "STRLEN K",
    "INCR K",
    "DECR K",
    "INCRBY K I",
    "DECRBY K I",
    "INCRBYFLOAT K F",
    "SETRANGE K I V",
    "GETRANGE K I I",
    "SUBSTR K I I",
    "MSET K V K V",
    "MSETNX K V K V",
    "MGET K K K",
    "LCS K K",
    "LCS K K LEN",
    // lists
    "LPUSH K V V",
    "RPUSH K V",
    "LPUSHX K V",
    "RPUSHX K V",
    "LPOP K",
    "LPOP K I",
    "RPOP K I",
    "LRANGE K I I",
    "LLEN K",
    "LINDEX K I",
    "LSET K I V",
    "LREM K I V",
    "LINSERT K BEFORE V V",
    "LINSERT K AFTER V V",
    "LTRIM K I I",
    "LPOS K V",
    "LPOS K V RANK I COUNT I",
    "LMOVE K K LEFT RIGHT",
    "RPOPLPUSH K K",
    "LMPOP 2 K K LEFT COUNT I",
    "BLPOP K 0.01",
    "BRPOP K K 0.01",
    // hashes
    "HSET K M V",
    "HSET K M V M V",
    "HSETNX K M V",
    "HGET K M",
    "HMGET K M M",
    "HDEL K M M",
    "HLEN K",
    "HEXISTS K M",
    "HGETALL K",
    "HKEYS K",
    "HVALS K",
    "HSTRLEN K M",
    "HINCRBY K M I",
    "HINCRBYFLOAT K M F",
    // sets
    "SADD K M M",
    "SREM K M",
    "SISMEMBER K M",
    "SMISMEMBER K M M",
    "SCARD K",
    "SMEMBERS K",
    "SINTER K K",
    "SUNION K K",
    "SDIFF K K",
    "SINTERCARD 2 K K",
    "SMOVE K K M",
    "SUNIONSTORE K K K",
    "SDIFFSTORE K K K",
    // sorted sets
    "ZADD K S M",
    "ZADD K NX S M S M",
    "ZADD K XX CH S M",
    "ZADD K INCR S M",
    "ZINCRBY K S M",
    "ZSCORE K M",
    "ZMSCORE K M M",
    "ZRANK K M",
    "ZREVRANK K M",
    "ZREM K M",
    "ZCARD K",
    "ZCOUNT K S S",
    "ZRANGE K I I",
    "ZRANGE K I I WITHSCORES",
    "ZRANGE K S S BYSCORE",
    "ZRANGE K S S BYSCORE LIMIT I I",
    "ZRANGEBYSCORE K -inf +inf WITHSCORES",
    "ZREVRANGE K I I",
    "ZPOPMIN K",
    "ZPOPMAX K I",
    "ZUNIONSTORE K 2 K K",
    "ZINTER 2 K K WITHSCORES",
    "ZRANGESTORE K K I I",
    // bits and HyperLogLog
    "SETBIT K I I",
    "GETBIT K I",
    "BITCOUNT K",
    "BITCOUNT K I I",
    "BITPOS K I",
    "BITOP OR K K K",
    "BITFIELD K INCRBY u8 I I",
    "PFADD K M M",
    "PFCOUNT K K",
    // streams (explicit IDs only: `*` takes the clock)
    "XADD K I M V",
    "XLEN K",
    "XRANGE K - +",
    "XDEL K I",
    "XTRIM K MAXLEN I",
    // keys
    "DEL K K",
    "UNLINK K",
    "EXISTS K K",
    "TYPE K",
    "RENAME K K",
    "RENAMENX K K",
    "COPY K K",
    "COPY K K REPLACE",
    "EXPIRE K 1000",
    "EXPIRE K T NX",
    "PERSIST K",
    "TOUCH K K",
    "OBJECT ENCODING K",
    "SORT K",
    "SORT K ALPHA LIMIT I I DESC",
    "DUMP K",
    // scripts
    "EVAL return_redis.call('GET',KEYS[1]) 1 K",
    "EVAL return_redis.call('INCR',KEYS[1]) 1 K",
    "EVAL return_{KEYS[1],ARGV[1]} 1 K V",
    "EVAL return_redis.pcall('LPUSH',KEYS[1],ARGV[1]) 1 K V",
    "EVAL_RO return_redis.call('GET',KEYS[1]) 1 K",
    // more of each type
    "SETEX K T V",
    "PSETEX K T V",
    "GETEX K EX 1000",
    "SORT_RO K",
    "ZLEXCOUNT K - +",
    "ZRANGEBYLEX K - + LIMIT I I",
    "ZREMRANGEBYRANK K I I",
    "ZDIFF 2 K K",
    "ZUNION 2 K K WITHSCORES",
    "ZINTERCARD 2 K K",
    "SINTERSTORE K K K",
    "BITFIELD_RO K GET u4 I",
    "HSCAN K 0",
    "SSCAN K 0 MATCH *",
    "ZSCAN K 0",
    "OBJECT REFCOUNT K",
    "GEOADD K 13.361389 38.115556 M",
    "GEODIST K M M km",
    "GEOPOS K M M",
    "GEOSEARCH K FROMLONLAT 15 37 BYRADIUS 200 km ASC",
    "XINFO STREAM K",
    "XGROUP CREATE K g I",
    "XREADGROUP GROUP g c COUNT I STREAMS K >",
    "XACK K g I",
    "XREAD COUNT I STREAMS K 0",
    "SCRIPT EXISTS a",
    "EVALSHA 0123456789012345678901234567890123456789 1 K",
    "PUBLISH K V",
    // what the proxy answers itself or sends every master
    "COMMAND GETKEYS SET K V",
    "COMMAND GETKEYS MSET K V K V",
    "COMMAND INFO GET HSET",
    "COMMAND COUNT",
    "SCRIPT LOAD return~1",
    "EVALSHA e0e1f9fabfc9d4800c877a703b823ac0578ff8db 0",
    "FCALL nosuch 0",
    "PUBSUB NUMSUB K",
    "PUBSUB CHANNELS",
    "SPUBLISH K V",
    "OBJECT FREQ K",
    "CLIENT NO-EVICT on",
    "CLIENT NO-EVICT off",
    "RESET",
    // the connection and the server
    "PING",
    "PING V",
    "ECHO V",
    "DBSIZE",
    "SELECT 0",
    "CLIENT SETNAME V",
    "CLIENT GETNAME",
    "WATCH K",
    "UNWATCH",
    "EXISTS K",
    // mistakes
    "NOSUCHCOMMAND K",
    "GET",
    "SET K",
    "HSET K M",
    "ZADD K M",
    "LRANGE K I",
    "CLIENT",
    "CLIENT NOSUCH",
    "OBJECT NOSUCH K",
];

/// A value large enough to be read in pieces and streamed (`V` picks it now and then).
const BIG: usize = 100_000;

/// Values: small numbers (so INCR and friends have something to work on), text, the empty string.
const VALUES: &[&str] = &["0", "1", "-1", "7", "42", "3.5", "abc", "hello", "", "x y", "10", "a"];
const INTEGERS: &[&str] = &["0", "1", "2", "-1", "-2", "3", "5", "100", "-100", "9223372036854775807", "x", ""];
const FLOATS: &[&str] = &["0", "1.5", "-2.25", "1e3", "inf", "nan", "x", "3"];
/// Times to live: long enough never to pass during a run (a key expiring while one side runs
/// and not the other would make the sides differ by timing), or none at all (deleted at once).
const TTLS: &[&str] = &["100000", "1000000", "0", "-1", "x"];
const MEMBERS: &[&str] = &["a", "b", "c", "d", "1", "2"];
const SCORES: &[&str] = &["0", "1", "2.5", "-1", "+inf", "-inf", "(1", "x"];
/// Key suffixes: few, so commands meet each other's keys (and types).
const KEYS: &[&str] = &["a", "b", "c"];

/// One command of a sequence: its arguments.
type Command = Vec<Vec<u8>>;

/// Builds one sequence: commands from the templates with their placeholders filled, one in eight
/// with an argument dropped, added or replaced, and a MULTI … EXEC (or DISCARD) now and then.
fn sequence(rng: &mut Rng, tag: &str) -> Vec<Command> {
    let mut out = Vec::with_capacity(COMMANDS);
    let mut in_multi = false;
    while out.len() < COMMANDS {
        if !in_multi && rng.below(12) == 0 {
            out.push(vec![b"MULTI".to_vec()]);
            in_multi = true;
            continue;
        }
        if in_multi && rng.below(6) == 0 {
            let end: &[u8] = if rng.below(5) == 0 { b"DISCARD" } else { b"EXEC" };
            out.push(vec![end.to_vec()]);
            in_multi = false;
            continue;
        }
        let template = rng.pick(TEMPLATES);
        // DBSIZE, SCRIPT, PUBSUB and COMMAND answer for every master or from the proxy's own
        // table: refused inside a transaction, which runs on one (README, "Transactions").
        let every_master = ["DBSIZE", "SCRIPT", "PUBSUB", "COMMAND"].iter().any(|p| template.starts_with(p));
        if in_multi && every_master {
            continue;
        }
        // RESET ends a transaction being queued.
        in_multi &= template != "RESET";
        let mut command: Command = template.split(' ').map(|word| fill(rng, word, tag)).collect();
        // Left as written: a blocking command's timeout (`0` or `-0` would block both sides);
        // COMMAND's subcommand (a bare COMMAND lists the commands in the order of the node's
        // table, which differs from node to node); RESET (the transaction it ends, above).
        let blocking = template.starts_with('B') && template.ends_with("0.01");
        let fixed = blocking || template.starts_with("COMMAND") || template == "RESET";
        if !fixed && rng.below(8) == 0 {
            mutate(rng, &mut command, tag);
        }
        if rng.below(10) == 0 {
            command[0] = command[0].to_ascii_lowercase();
        }
        out.push(command);
    }
    if in_multi {
        out.push(vec![b"EXEC".to_vec()]);
    }
    out
}

fn fill(rng: &mut Rng, word: &str, tag: &str) -> Vec<u8> {
    match word {
        "K" => format!("{{{tag}}}{}", rng.pick(KEYS)).into_bytes(),
        "V" if rng.below(40) == 0 => vec![b'x'; BIG],
        "V" => rng.pick(VALUES).as_bytes().to_vec(),
        "I" => rng.pick(INTEGERS).as_bytes().to_vec(),
        "F" => rng.pick(FLOATS).as_bytes().to_vec(),
        "M" => rng.pick(MEMBERS).as_bytes().to_vec(),
        "S" => rng.pick(SCORES).as_bytes().to_vec(),
        "T" => rng.pick(TTLS).as_bytes().to_vec(),
        // Scripts are written with `_` (or `~`) for their one space.
        script if script.starts_with("return_") || script.starts_with("return~") => {
            script.replacen(['_', '~'], " ", 1).into_bytes()
        }
        other => other.as_bytes().to_vec(),
    }
}

/// An argument dropped, an extra one added, or one that is not a key replaced by something odd.
/// Keys stay in the sequence's slot: a key elsewhere is a cross-slot request, which the proxy
/// splits where the node refuses it (by design: README, "Multi-key commands").
fn mutate(rng: &mut Rng, command: &mut Command, tag: &str) {
    match rng.below(3) {
        0 if command.len() > 1 => {
            command.pop();
        }
        1 => command.push(format!("{{{tag}}}{}", rng.pick(KEYS)).into_bytes()),
        _ => {
            let at = 1 + rng.below(command.len().saturating_sub(1).max(1));
            let odd = rng.pick(&["", "-0", "1.0", "99999999999999999999", "\u{e9}", "0x10", " 1"]);
            if at < command.len() && !command[at].starts_with(b"{") {
                command[at] = odd.as_bytes().to_vec();
            }
        }
    }
}

/// A connection with the sequence's protocol.
fn open(addr: &str, resp3: bool) -> Conn {
    let mut conn = Conn::open(addr);
    if resp3 {
        match conn.call(&[b"HELLO".to_vec(), b"3".to_vec()]) {
            Ok((_, Frame::Aggregate(b'%', Some(_)))) => {}
            other => panic!("HELLO 3 on {addr}: {other:?}"),
        }
    }
    conn
}

/// What one side answered: the bytes of each reply, up to where it broke off and why.
struct Side {
    replies: Vec<Vec<u8>>,
    broke: Option<String>,
}

/// Runs `commands` on `conn` in pipelined batches of the sizes `batches` gives.
fn run(conn: &mut Conn, commands: &[Command], batches: &[usize]) -> Side {
    let mut side = Side { replies: Vec::with_capacity(commands.len()), broke: None };
    let mut rest = commands;
    for &size in batches {
        let (batch, after) = rest.split_at(size.min(rest.len()));
        let bytes: Vec<u8> = batch.iter().flat_map(wire_form).collect();
        if let Err(why) = conn.send_raw(&bytes) {
            side.broke = Some(why);
            return side;
        }
        for _ in batch {
            match conn.read() {
                Ok((reply, _)) => side.replies.push(reply),
                Err(why) => {
                    side.broke = Some(why);
                    return side;
                }
            }
        }
        rest = after;
        if rest.is_empty() {
            break;
        }
    }
    side
}

/// A word of `REDISFORGE_DIFF_SCRIPT`: `<100000_bytes>` (as failures show a large value) is that
/// value again, and `~` a space within a word (`EVAL return~1 0`).
fn script_word(word: &str) -> Vec<u8> {
    match word {
        "<100000_bytes>" => vec![b'x'; BIG],
        word => word.replace('~', " ").into_bytes(),
    }
}

/// How a command is sent: as a RESP array, or inline (`GET key\r\n`, as telnet would) when its
/// arguments are short plain words; a hash of the arguments picks one, so both sides get the
/// same.
fn wire_form(command: &Command) -> Vec<u8> {
    let plain = |a: &Vec<u8>| !a.is_empty() && a.iter().all(|b| b.is_ascii_alphanumeric() || b"{}._-:+(*".contains(b));
    let pick = command.iter().flatten().fold(7u32, |h, &b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    // Not a long line: Redis refuses one longer than 64 KiB when its end comes in a later read
    // than its start, which depends on how the node's reads fall.
    let short = command.iter().map(Vec::len).sum::<usize>() < 1024;
    if pick % 4 == 0 && short && command.iter().all(plain) {
        let mut line = command.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>().join(" ");
        line.push_str("\r\n");
        return line.into_bytes();
    }
    encode(command)
}

fn flush_masters(masters: &[String]) {
    for addr in masters {
        let reply = Conn::open(addr).call(&[b"FLUSHALL".to_vec()]);
        assert!(matches!(&reply, Ok((bytes, _)) if bytes == b"+OK\r\n"), "FLUSHALL on {addr}: {reply:?}");
    }
}

fn describe(command: &Command) -> String {
    let word = |a: &Vec<u8>| match a.len() {
        0..=64 => String::from_utf8_lossy(a).into_owned(),
        n => format!("<{n} bytes>"),
    };
    command.iter().map(word).collect::<Vec<_>>().join(" ")
}

/// Where two sides' answers first differ, described with the commands before it.
fn first_difference(commands: &[Command], through: &Side, direct: &Side) -> Option<String> {
    let replies = through.replies.iter().zip(&direct.replies);
    let at = match replies.clone().position(|(a, b)| a != b) {
        Some(at) => at,
        None if through.replies.len() == direct.replies.len() => return None,
        None => through.replies.len().min(direct.replies.len()),
    };
    let answer = |side: &Side| match side.replies.get(at) {
        Some(reply) => show(reply, SHOW),
        None => format!("(nothing: {})", side.broke.as_deref().unwrap_or("no reply")),
    };
    let from = at.saturating_sub(6);
    let context: Vec<String> = (from..=at).map(|i| format!("  #{i} {}", describe(&commands[i]))).collect();
    Some(format!(
        "command #{at} `{}`\n  through the proxy: {}\n  on the node:       {}\nthe commands before it:\n{}",
        describe(&commands[at]),
        answer(through),
        answer(direct),
        context.join("\n"),
    ))
}

/// The proxy, in front of the shared cluster, and the cluster's map.
struct Sides {
    proxy: Proxy,
    ranges: Vec<redisforge_tests::SlotRange>,
    masters: Vec<String>,
}

impl Sides {
    fn start() -> Sides {
        let cluster = Cluster::shared();
        // `REDISFORGE_DIFF_TOML='[log]\nlevel = "debug"'` while looking into a difference.
        let extra_toml = std::env::var("REDISFORGE_DIFF_TOML").unwrap_or_default().replace("\\n", "\n");
        let proxy = Proxy::start(cluster, ProxyOptions { extra_toml, ..ProxyOptions::default() });
        let ranges = cluster.slot_ranges();
        let mut masters: Vec<String> = ranges.iter().map(|r| r.master.clone()).collect();
        masters.sort();
        masters.dedup();
        Sides { proxy, ranges, masters }
    }

    /// The master owning the keys tagged `tag`.
    fn owner(&self, tag: &str) -> String {
        let slot = key_slot(tag.as_bytes());
        let range = self.ranges.iter().find(|r| (r.start..=r.end).contains(&slot));
        range.map(|r| r.master.clone()).unwrap_or_else(|| panic!("slot {slot} is not covered: {:?}", self.ranges))
    }

    /// Runs `commands` through the proxy and then on the owner of `tag`, each side on a flushed
    /// cluster.
    fn both(&self, commands: &[Command], batches: &[usize], resp3: bool, tag: &str) -> (Side, Side) {
        flush_masters(&self.masters);
        let through = run(&mut open(&self.proxy.addr(), resp3), commands, batches);
        flush_masters(&self.masters);
        let direct = run(&mut open(&self.owner(tag), resp3), commands, batches);
        flush_masters(&self.masters);
        (through, direct)
    }
}

/// `REDISFORGE_DIFF_SHOW`: every command with both sides' replies, marked where they differ.
fn show_both(commands: &[Command], through: &Side, direct: &Side) {
    for (i, command) in commands.iter().enumerate() {
        let reply = |side: &Side| side.replies.get(i).map(|r| show(r, 80)).unwrap_or_default();
        let (p, n) = (reply(through), reply(direct));
        eprintln!("#{i} {} => {p} {} {n}", describe(command), if p == n { "==" } else { "!=" });
    }
    eprintln!("broke off: through the proxy {:?}, on the node {:?}", through.broke, direct.broke);
}

/// The seeds to run and the time they may take: `REDISFORGE_DIFF_SEED` one seed,
/// `REDISFORGE_DIFF_ROUNDS` that many after the usual ones (for up to 30 minutes), else the usual.
fn seeds() -> (Vec<u64>, Duration) {
    let number = |name: &str| std::env::var(name).ok().map(|v| v.parse::<u64>().expect("a number"));
    match (number("REDISFORGE_DIFF_SEED"), number("REDISFORGE_DIFF_ROUNDS")) {
        (Some(seed), _) => (vec![seed], TIME_BUDGET),
        (None, Some(rounds)) => ((ROUNDS + 1..=ROUNDS + rounds).collect(), Duration::from_secs(1800)),
        (None, None) => ((1..=ROUNDS).collect(), TIME_BUDGET),
    }
}

#[test]
fn random_sequences_get_the_owning_nodes_replies_byte_for_byte() {
    let sides = Sides::start();
    if let Ok(script) = std::env::var("REDISFORGE_DIFF_SCRIPT") {
        return replay(&sides, &script);
    }
    let show = std::env::var_os("REDISFORGE_DIFF_SHOW").is_some();
    let (seeds, budget) = seeds();
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut ran = 0;
    for seed in seeds {
        if ran > 0 && started.elapsed() > budget {
            break;
        }
        ran += 1;
        let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let resp3 = seed % 2 == 0;
        let tag = format!("diff{seed}");
        let commands = sequence(&mut rng, &tag);
        let mut batches = Vec::new();
        while batches.iter().sum::<usize>() < commands.len() {
            let most = if rng.below(2) == 0 { 1 } else { 12 };
            batches.push(1 + rng.below(most));
        }
        let (through, direct) = sides.both(&commands, &batches, resp3, &tag);
        if show {
            show_both(&commands, &through, &direct);
        }
        if let Some(why) = first_difference(&commands, &through, &direct) {
            let protocol = if resp3 { "RESP3" } else { "RESP2" };
            failures.push(format!("seed {seed} ({protocol}), node {}: {why}", sides.owner(&tag)));
        }
    }
    assert!(failures.is_empty(), "{} of {ran} sequences differ:\n\n{}", failures.len(), failures.join("\n\n"));
}

/// `REDISFORGE_DIFF_SCRIPT='cmd args|cmd args;next batch|…'`: runs the given batches on both
/// sides (keys tagged `{s}`, or `REDISFORGE_DIFF_TAG`'s tag; RESP3 with `REDISFORGE_DIFF_RESP3`)
/// and prints every reply, then fails where the sides differ.
fn replay(sides: &Sides, script: &str) {
    let batches: Vec<Vec<Command>> =
        script.split(';').map(|b| b.split('|').map(|c| c.split(' ').map(script_word).collect()).collect()).collect();
    let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
    let commands: Vec<Command> = batches.into_iter().flatten().collect();
    let resp3 = std::env::var_os("REDISFORGE_DIFF_RESP3").is_some();
    let tag = std::env::var("REDISFORGE_DIFF_TAG").unwrap_or_else(|_| "s".into());
    let (through, direct) = sides.both(&commands, &sizes, resp3, &tag);
    show_both(&commands, &through, &direct);
    eprintln!("{}", sides.proxy.log_tail(60));
    assert_eq!(first_difference(&commands, &through, &direct), None);
}
