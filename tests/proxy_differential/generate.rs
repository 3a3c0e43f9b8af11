//! The commands `proxy_differential` sends: templates filled with values from small pools, so
//! that commands meet each other's keys and types, some with an argument dropped, added or made
//! odd, and MULTI … EXEC, WATCH and RESET placed so that both sides may run them alike.

use redisforge_tests::rng::Rng;

/// Commands per sequence (a transaction's MULTI and EXEC among them).
pub const COMMANDS: usize = 80;

/// The command templates. Placeholders: `K` a key (of the sequence's tags, [`Keys`]), `V` a value, `I` an
/// integer, `F` a float, `M` a member or field, `S` a score, `T` a time to live. Anything else
/// is sent as it is. MULTI, EXEC and DISCARD are placed by [`sequence`]. MEMORY USAGE and OBJECT
/// REFCOUNT are left out: a value's allocation and references depend on how the node read it (an
/// inline line or a RESP array, one read or several, a transaction queued at once or over time).
pub const TEMPLATES: &[&str] = &[
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
    "EVAL return_redis.call('MSET',KEYS[1],ARGV[1],KEYS[2],ARGV[2]) 2 K K V V",
    "EVAL return_redis.call('RPOPLPUSH',KEYS[1],KEYS[2]) 2 K K",
    "EVAL return_redis.call('NOSUCH') 0",
    "EVAL return_redis.error_reply('MY~error') 0",
    "EVAL return~{1,'two',{3.5},redis.status_reply('OK')} 0",
    // functions: one function per library, so FUNCTION LIST lists in one order in any process
    "FUNCTION LOAD LIB_GET",
    "FUNCTION LOAD REPLACE LIB_RO",
    "FUNCTION LOAD LIB_MSET",
    "FUNCTION DELETE dlib1",
    "FUNCTION LIST LIBRARYNAME dlib2",
    "FUNCTION LIST LIBRARYNAME dlib1 WITHCODE",
    "FCALL dget 1 K",
    "FCALL_RO dro 1 K",
    "FCALL_RO dget 1 K",
    "FCALL dmset 2 K K V V",
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
    "GEOADD K 13.361389 38.115556 M",
    "GEODIST K M M km",
    "GEOPOS K M M",
    "GEOSEARCH K FROMLONLAT 15 37 BYRADIUS 200 km ASC",
    "XINFO STREAM K",
    "XGROUP CREATE K g I",
    "XREADGROUP GROUP g c COUNT I STREAMS K >",
    "XACK K g I",
    "XREAD COUNT I STREAMS K 0",
    "XREVRANGE K + - COUNT I",
    "XADD K NOMKSTREAM I M V",
    "XADD K MAXLEN I I M V",
    "XSETID K I",
    "XGROUP SETID K g I",
    "XGROUP CREATECONSUMER K g c2",
    "XGROUP DELCONSUMER K g c",
    "XPENDING K g",
    "XCLAIM K g c2 0 I JUSTID",
    "XAUTOCLAIM K g c2 0 0 JUSTID",
    "XINFO GROUPS K",
    // absolute expiry times far in the future, never reached (EXPIRETIME is left out: after a
    // relative EXPIRE it is the clock's)
    "EXPIREAT K 4102444800",
    "PEXPIREAT K 4102444800000 GT",
    "SET K V EXAT 4102444800",
    "GETEX K PXAT 4102444800000",
    "ZREVRANGEBYSCORE K +inf -inf LIMIT I I",
    "ZINTERSTORE K 2 K K WEIGHTS 1 2",
    "ZDIFFSTORE K 2 K K",
    "ZREMRANGEBYSCORE K S S",
    "ZMPOP 1 K MIN COUNT I",
    "BZPOPMIN K 0.01",
    "BLMOVE K K RIGHT LEFT 0.01",
    "BLMPOP 0.01 2 K K LEFT",
    "BZMPOP 0.01 1 K MAX",
    "PFMERGE K K K",
    "GEOHASH K M",
    "GEOSEARCHSTORE K K FROMLONLAT 15 37 BYRADIUS 200 km",
    "SINTERCARD 2 K K LIMIT I",
    "LPOS K V MAXLEN I",
    "BITFIELD K OVERFLOW SAT INCRBY i8 I I",
    "OBJECT HELP",
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
    // Of this sequence's channels only: the other test of the binary subscribes at the same time.
    "PUBSUB CHANNELS ANYCHANNEL",
    "SPUBLISH K V",
    "OBJECT FREQ K",
    "CLIENT NO-EVICT on",
    "CLIENT NO-EVICT off",
    "RESET",
    // the reply mode (`replies_expected` says which commands are answered)
    "CLIENT REPLY SKIP",
    "CLIENT REPLY OFF",
    "CLIENT REPLY ON",
    "CLIENT REPLY ON",
    // HELLO switches the protocol mid-sequence (its `id` and `mode` differ: `comparable`)
    "HELLO 3",
    "HELLO 2",
    "HELLO",
    "EXEC",
    "DISCARD",
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

/// The function libraries `FUNCTION LOAD LIB_…` loads, one function each.
const LIBRARIES: &[(&str, &str)] = &[
    (
        "LIB_GET",
        "#!lua name=dlib1\nredis.register_function('dget', function(keys, args) return redis.call('GET', keys[1]) end)",
    ),
    (
        "LIB_RO",
        "#!lua name=dlib2\nredis.register_function{function_name='dro', \
         callback=function(keys, args) return redis.call('GET', keys[1]) end, flags={'no-writes'}}",
    ),
    // `or ''`: a function whose `redis.call` got a nil argument (an argument dropped) makes Redis
    // 7.4.1 crash at the next FUNCTION FLUSH (`freeClientArgv` on the Lua client's argv, which
    // that error left freed); the same error stays covered through EVAL.
    (
        "LIB_MSET",
        "#!lua name=dlib3\nredis.register_function('dmset', \
         function(keys, args) return redis.call('MSET', keys[1], args[1] or '', keys[2], args[2] or '') end)",
    ),
];

/// Subscriptions, in half the sequences (with no WATCH, see `sequence`, and no CLIENT REPLY,
/// whose effect on a subscriber's confirmations differs between versions). One channel, one
/// pattern and one shard channel per sequence, on its first tag (`CHANNEL`, `PATTERN`,
/// `SHARDCHANNEL`; `ANYCHANNEL` matches all three): a bare UNSUBSCRIBE confirms the channels in
/// the order of the node's hash table, so never more than one. Nothing is published to them: a
/// node delivers a client's own message at once, the proxy after the reply (README, "pub/sub").
const SUBSCRIPTIONS: &[&str] = &[
    "SUBSCRIBE CHANNEL",
    "SUBSCRIBE CHANNEL CHANNEL",
    "UNSUBSCRIBE CHANNEL",
    "UNSUBSCRIBE",
    "PSUBSCRIBE PATTERN",
    "PUNSUBSCRIBE PATTERN PATTERN",
    "PUNSUBSCRIBE",
    "SSUBSCRIBE SHARDCHANNEL",
    "SUNSUBSCRIBE SHARDCHANNEL",
    "SUNSUBSCRIBE",
    "PUBSUB NUMSUB CHANNEL",
    "PUBSUB SHARDNUMSUB SHARDCHANNEL",
    "PUBSUB SHARDCHANNELS ANYCHANNEL",
];

/// Whether `name` (any case) subscribes or unsubscribes: one confirmation per channel it names,
/// or one for a bare unsubscribe (never more than one channel of a kind is subscribed).
fn subscribes(name: &[u8]) -> bool {
    ["SUBSCRIBE", "UNSUBSCRIBE", "PSUBSCRIBE", "PUNSUBSCRIBE", "SSUBSCRIBE", "SUNSUBSCRIBE"]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
}

/// Marks a command of the other client: sent on a connection of its own between two batches of
/// the sequence's client, whose WATCH, transactions and blocking commands then meet its writes.
pub const OTHER: &[u8] = b"@other";

/// What the other client sends: writes to the sequence's keys (of any tag), and now and then the
/// end of the scripts or functions the first client loaded.
const OTHER_TEMPLATES: &[&str] = &[
    "SET K V",
    "DEL K",
    "LPUSH K V",
    "INCR K",
    "SADD K M",
    "HSET K M V",
    "ZADD K S M",
    "XADD K I M V",
    "EXPIRE K 1000",
    "GET K",
    "SCRIPT FLUSH",
    "FUNCTION DELETE dlib1",
];

/// `commands` cut into `batches`, with a batch of one to three commands of the other client
/// ([`OTHER`]) after a third of them — only after a batch whose last command is answered
/// (`frames`, [`frames_expected`]): under CLIENT REPLY OFF nothing tells when the first client's
/// commands have run, so the other client's would meet them in either order.
pub fn interleave(
    rng: &mut Rng,
    keys: &Keys,
    commands: Vec<Command>,
    batches: &[usize],
    frames: &[usize],
) -> (Vec<Command>, Vec<usize>) {
    let (mut out, mut sizes) = (Vec::with_capacity(commands.len() * 2), Vec::with_capacity(batches.len() * 2));
    let (mut rest, mut done) = (commands.into_iter(), 0);
    for &size in batches {
        let batch: Vec<Command> = rest.by_ref().take(size).collect();
        done += batch.len();
        sizes.push(batch.len());
        out.extend(batch);
        if frames.get(done.wrapping_sub(1)).is_some_and(|&n| n > 0) && rng.below(3) == 0 {
            let count = 1 + rng.below(3);
            for _ in 0..count {
                let template = rng.pick(OTHER_TEMPLATES);
                let tag = &keys.tags[rng.below(keys.tags.len())];
                let command = std::iter::once(OTHER.to_vec()).chain(template.split(' ').map(|w| fill(rng, w, tag)));
                out.push(command.collect());
            }
            sizes.push(count);
        }
    }
    (out, sizes)
}

/// A value large enough to be read in pieces and streamed (`V` picks it now and then).
pub const BIG: usize = 100_000;

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
pub type Command = Vec<Vec<u8>>;

/// The hash tags of a sequence's keys: one (every key on one master, the owner compared), or
/// several on different masters (compared with a standalone node holding them all).
pub struct Keys<'a> {
    pub tags: &'a [String],
    /// The reference is another process than the nodes (a standalone node): commands listing a
    /// set's members or a large hash's fields are left out, since they come in the order of a
    /// hash table, whose seed each process draws at random.
    pub other_process: bool,
    /// Logins (whole commands, each valid) placed now and then when the sequences run as a user
    /// of an ACL file; empty for the default user.
    pub logins: &'a [&'a str],
}

/// Commands whose replies list a set's members, or a hash's fields once a large value made it a
/// hash table, in hash-table order (and DUMP, which writes them so).
const SET_ORDER: &[&str] =
    &["SMEMBERS", "SINTER ", "SUNION ", "SDIFF ", "SSCAN", "DUMP", "HGETALL", "HKEYS", "HVALS", "HSCAN"];

/// The commands the proxy splits by slot and merges, whose keys may each be anywhere; every other
/// command's keys share one tag (the proxy refuses them across slots, as a cluster does).
const SPLIT: &[&str] = &["MGET ", "MSET ", "DEL ", "UNLINK ", "EXISTS ", "TOUCH "];

/// Where a sequence is: inside MULTI, watching, and the tag of the transaction or WATCH.
#[derive(Default)]
struct State {
    in_multi: bool,
    watching: bool,
    current: usize,
}

/// Builds one sequence: commands from the templates with their placeholders filled, one in eight
/// with an argument dropped, added or replaced, and a MULTI … EXEC (or DISCARD) now and then.
/// With several tags, a transaction and the WATCH before it keep to one tag (all their keys on
/// one master, as the proxy requires), and so do other commands' keys but the split ones'.
pub fn sequence(rng: &mut Rng, keys: &Keys) -> Vec<Command> {
    let mut out = Vec::with_capacity(COMMANDS);
    let mut state = State::default();
    let subscriber = rng.below(2) == 0;
    while out.len() < COMMANDS {
        if !state.in_multi && rng.below(12) == 0 {
            out.push(vec![b"MULTI".to_vec()]);
            state.in_multi = true;
            if !state.watching {
                state.current = rng.below(keys.tags.len());
            }
            continue;
        }
        if state.in_multi && rng.below(6) == 0 {
            let end: &[u8] = if rng.below(5) == 0 { b"DISCARD" } else { b"EXEC" };
            out.push(vec![end.to_vec()]);
            state = State { current: state.current, ..State::default() };
            continue;
        }
        let template = match (subscriber && rng.below(8) == 0, !keys.logins.is_empty() && rng.below(30) == 0) {
            (_, true) => rng.pick(keys.logins),
            (true, false) => rng.pick(SUBSCRIPTIONS),
            (false, false) => rng.pick(TEMPLATES),
        };
        // Nor WATCH: in RESP2 subscribed mode MULTI, EXEC and DISCARD are refused, so whether a
        // WATCH still holds (and ties the next transaction's keys to its tag) is not followed.
        if subscriber && (template.starts_with("CLIENT REPLY") || template == "WATCH K") {
            continue;
        }
        // DBSIZE, SCRIPT, PUBSUB and COMMAND answer for every master or from the proxy's own
        // table: refused inside a transaction, which runs on one (README, "Transactions").
        let every_master =
            ["DBSIZE", "SCRIPT", "PUBSUB", "COMMAND", "FUNCTION"].iter().any(|p| template.starts_with(p));
        // Outside a transaction only: EXEC and DISCARD (their errors without MULTI); CLIENT
        // REPLY, HELLO and AUTH, which the proxy refuses inside MULTI (README, "Inside MULTI": a HELLO
        // in EXEC's array would switch the protocol of the node's elements after it).
        let outside_only = ["EXEC", "DISCARD", "CLIENT REPLY", "HELLO", "AUTH"].iter().any(|p| template.starts_with(p))
            || subscribes(template.split(' ').next().unwrap_or_default().as_bytes());
        if state.in_multi && (every_master || outside_only) {
            continue;
        }
        if keys.other_process && SET_ORDER.iter().any(|p| template.starts_with(p)) {
            continue;
        }
        // With users, no PUBSUB CHANNELS (and the like): Redis 7.0.15 closes a connection that
        // sends one, then a RESET that logs it out, then anything else in the same read.
        if !keys.logins.is_empty() && template.starts_with("PUBSUB") {
            continue;
        }
        out.push(command(rng, keys, &mut state, template));
    }
    if state.in_multi {
        out.push(vec![b"EXEC".to_vec()]);
    }
    // Replies on again at the end (the last commands' replies are read, or time out).
    if out.iter().any(|c| c.len() > 1 && c[0].eq_ignore_ascii_case(b"CLIENT") && c[1].eq_ignore_ascii_case(b"REPLY")) {
        out.push(["CLIENT", "REPLY", "ON"].iter().map(|w| w.as_bytes().to_vec()).collect());
    }
    out
}

/// How many frames answer each command of `commands`: as many as a subscription command names
/// channels (one for a bare unsubscribe), else one, or none where CLIENT REPLY says so — as one
/// node's reply mode decides (`clientCommand` and `resetClient` in Redis' networking.c): `OFF`
/// answers nothing from itself on, `SKIP` neither itself nor the next command, `ON` answers itself
/// and what follows; RESET turns `OFF` and a pending `SKIP` off but is itself skipped when a
/// `SKIP` came just before. With `users` the default user must log in too, so from a RESET until
/// the next login (AUTH, HELLO … AUTH, all valid here) every other command is refused with one
/// `NOAUTH` frame, and does nothing.
pub fn frames_expected(commands: &[Command], users: bool) -> Vec<usize> {
    let (mut off, mut skip_next, mut logged_in) = (false, false, !users);
    let word = |c: &Command, i: usize, w: &str| c.get(i).is_some_and(|a| a.eq_ignore_ascii_case(w.as_bytes()));
    let mut frames = |c: &Command| {
        // The other client's: one reply each, and nothing of the first client's state changes.
        if c[0] == OTHER {
            return 1;
        }
        let reset = c.len() == 1 && word(c, 0, "RESET");
        let login = word(c, 0, "AUTH") || (word(c, 0, "HELLO") && c.iter().any(|a| a.eq_ignore_ascii_case(b"AUTH")));
        if !logged_in && !login && !reset {
            return 1;
        }
        logged_in |= login;
        let skipped = std::mem::take(&mut skip_next);
        if c.len() == 3 && word(c, 0, "CLIENT") && word(c, 1, "REPLY") {
            if word(c, 2, "ON") {
                off = false;
                return 1;
            }
            if word(c, 2, "OFF") {
                off = true;
                return 0;
            }
            if word(c, 2, "SKIP") {
                skip_next = !off;
                return 0;
            }
        }
        if reset {
            off = false;
            logged_in = !users;
            return usize::from(!skipped);
        }
        match (off || skipped, subscribes(&c[0])) {
            (true, _) => 0,
            (false, true) => (c.len() - 1).max(1),
            (false, false) => 1,
        }
    };
    commands.iter().map(&mut frames).collect()
}

/// One command of `template`, its keys' tags as `state` allows; `state` follows what it does.
fn command(rng: &mut Rng, keys: &Keys, state: &mut State, template: &str) -> Command {
    let blocking = template.starts_with('B') && template.split(' ').any(|w| w == "0.01");
    // A watching client's blocking command may be for any master: the WATCH stays where it is.
    let held = state.in_multi || (state.watching && !blocking);
    let channels =
        ["CHANNEL", "PATTERN", "SHARDCHANNEL", "ANYCHANNEL"].iter().any(|w| template.split(' ').any(|t| t == *w));
    let tag = match (held, channels) {
        (_, true) => 0,
        (true, false) => state.current,
        (false, false) => rng.below(keys.tags.len()),
    };
    match template {
        // RESET ends a transaction being queued and a WATCH (EXEC and DISCARD come here only
        // outside one, where they fail and leave a WATCH as it is).
        "RESET" => *state = State { current: state.current, ..State::default() },
        "UNWATCH" if !state.in_multi => state.watching = false,
        "WATCH K" if !state.in_multi => {
            state.watching = true;
            state.current = tag;
        }
        _ => {}
    }
    let spread = !held && SPLIT.iter().any(|name| template.starts_with(name));
    let mut command = Vec::new();
    for word in template.split(' ') {
        let at = if spread { rng.below(keys.tags.len()) } else { tag };
        command.push(fill(rng, word, &keys.tags[at]));
    }
    // Left as written: a blocking command's timeout (`0` or `-0` would block both sides);
    // COMMAND's subcommand (a bare COMMAND lists the commands in the order of the node's table,
    // which differs from node to node); RESET, WATCH and UNWATCH (what they do to `state`).
    // Subscription commands (one confirmation per channel named: `frames_expected`).
    let fixed = blocking
        || subscribes(template.split(' ').next().unwrap_or_default().as_bytes())
        || keys.logins.contains(&template)
        || template.starts_with("COMMAND")
        || ["RESET", "WATCH K", "UNWATCH", "EXEC", "DISCARD"].contains(&template);
    if !fixed && rng.below(8) == 0 {
        mutate(rng, &mut command, &keys.tags[tag]);
    }
    if rng.below(10) == 0 {
        command[0] = command[0].to_ascii_lowercase();
    }
    command
}

fn fill(rng: &mut Rng, word: &str, tag: &str) -> Vec<u8> {
    match word {
        "K" => format!("{{{tag}}}{}", rng.pick(KEYS)).into_bytes(),
        "CHANNEL" => format!("{{{tag}}}ch").into_bytes(),
        "PATTERN" => format!("{{{tag}}}p*").into_bytes(),
        "SHARDCHANNEL" => format!("{{{tag}}}sch").into_bytes(),
        "ANYCHANNEL" => format!("{{{tag}}}*").into_bytes(),
        "V" if rng.below(40) == 0 => vec![b'x'; BIG],
        "V" => rng.pick(VALUES).as_bytes().to_vec(),
        "I" => rng.pick(INTEGERS).as_bytes().to_vec(),
        "F" => rng.pick(FLOATS).as_bytes().to_vec(),
        "M" => rng.pick(MEMBERS).as_bytes().to_vec(),
        "S" => rng.pick(SCORES).as_bytes().to_vec(),
        "T" => rng.pick(TTLS).as_bytes().to_vec(),
        // Scripts are written with `_` after `return` and `~` for any other space.
        script if script.starts_with("return_") || script.starts_with("return~") => {
            script.replacen('_', " ", 1).replace('~', " ").into_bytes()
        }
        library if library.starts_with("LIB_") => LIBRARIES
            .iter()
            .find(|(name, _)| *name == library)
            .map_or_else(|| panic!("no library {library}"), |(_, code)| code.as_bytes().to_vec()),
        other => other.as_bytes().to_vec(),
    }
}

/// An argument dropped, an extra one added, or one that is not a key replaced by something odd.
/// An added key keeps to the command's tag: one elsewhere is a cross-slot request, which the
/// proxy splits or refuses where one node runs it (by design: README, "Multi-key commands").
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
