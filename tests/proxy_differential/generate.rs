//! The commands `proxy_differential` sends: templates filled with values from small pools, so
//! that commands meet each other's keys and types, some with an argument dropped, added or made
//! odd, and MULTI … EXEC, WATCH and RESET placed so that both sides may run them alike.

use redisforge_tests::rng::Rng;

use super::templates::{LIBRARIES, SUBSCRIPTIONS, TEMPLATES};

/// Commands per sequence (a transaction's MULTI and EXEC among them).
pub const COMMANDS: usize = 80;

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
        // DBSIZE, SCRIPT, PUBSUB, COMMAND and CONFIG answer for every master or from the proxy's
        // own table: refused inside a transaction, which runs on one (README, "Transactions").
        let every_master =
            ["DBSIZE", "SCRIPT", "PUBSUB", "COMMAND", "FUNCTION", "CONFIG"].iter().any(|p| template.starts_with(p));
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
