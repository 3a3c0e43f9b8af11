//! Generated cases for the differential, from a seed: scripts and functions whose calls touch keys
//! and channels inside and outside the caller's patterns, declared or not, and SORT's BY/GET
//! patterns — the ways to reach a key that the command table's fixed samples do not vary.
//!
//! Every generated case uses one hash tag of its own (`{gN}`), so its keys share a slot: a script
//! may only reach keys of its declared slot in a cluster (a documented difference this suite does
//! not test). `{t}` stays the declared key's placeholder and takes both prefixes, as in the table.

use redisforge_tests::command_cases::{Case, Mode, Presence};
use redisforge_tests::rng::Rng;

/// The library the `fcall` cases call: one function that runs any command, one that may not write.
pub const LIBRARY: &str = "#!lua name=gen\n\
    redis.register_function('gen_call', function(keys, args) return redis.call(unpack(args)) end)\n\
    redis.register_function{function_name='gen_read', callback=function(keys, args) \
    return redis.call(unpack(args)) end, flags={'no-writes'}}";

/// One command a script or function runs, as Lua string literals; `key` and `other` name keys.
fn command(rng: &mut Rng, key: &str, other: &str, channel: &str) -> Vec<String> {
    let words: Vec<String> = match rng.below(9) {
        0 => vec!["SET".into(), key.into(), "v".into()],
        1 => vec!["GET".into(), key.into()],
        2 => vec!["DEL".into(), key.into()],
        3 => vec!["INCR".into(), key.into()],
        4 => vec!["HSET".into(), key.into(), "f".into(), "v".into()],
        5 => vec!["SADD".into(), key.into(), "m".into()],
        6 => vec!["COPY".into(), key.into(), other.into()],
        7 => vec!["PUBLISH".into(), channel.into(), "m".into()],
        _ => vec!["EXISTS".into(), key.into(), other.into()],
    };
    words
}

/// The keys and channels one case may touch: the declared key and others in its slot.
fn names(n: usize) -> [String; 5] {
    [
        "{t}".into(),
        format!("app:{{g{n}}}a"),
        format!("sec:{{g{n}}}s"),
        format!("app:{{g{n}}}ch"),
        format!("sec:{{g{n}}}ch"),
    ]
}

fn line(words: &[&str]) -> Vec<Vec<u8>> {
    words.iter().map(|w| w.as_bytes().to_vec()).collect()
}

/// `count` cases from `seed`; case `n` uses the hash tag `{gN}`.
pub fn cases(seed: u64, count: usize) -> Vec<Case> {
    let mut rng = Rng::new(seed);
    (0..count).map(|n| one_case(&mut rng, n)).collect()
}

fn one_case(rng: &mut Rng, n: usize) -> Case {
    let [declared, inside, outside, channel_in, channel_out] = names(n);
    let keys = [declared.as_str(), inside.as_str(), outside.as_str()];
    let channels = [channel_in.as_str(), channel_out.as_str()];
    let mut case = Case {
        line: 0,
        name: String::new(),
        mode: Mode::Same,
        fresh: false,
        setup: vec![line(&["SET", &inside, "1"]), line(&["SET", &outside, "1"]), line(&["SET", "{t}", "1"])],
        run: Vec::new(),
        cleanup: Vec::new(),
        expect: Vec::new(),
        getkeys: Vec::new(),
        presence: Presence::Always,
    };
    let steps = 1 + rng.below(3);
    match rng.below(4) {
        // A script of a few calls; pcall goes on after a refused call, call stops there.
        0 | 1 => {
            let call = rng.pick(&["redis.call", "redis.pcall"]);
            let mut body = String::new();
            for _ in 0..steps {
                let (key, other, channel) = (rng.pick(&keys), rng.pick(&keys), rng.pick(&channels));
                let key = if key == "{t}" { "KEYS[1]" } else { key };
                let other = if other == "{t}" { "KEYS[1]" } else { other };
                let args: Vec<String> = command(rng, key, other, channel)
                    .into_iter()
                    .map(|w| if w == "KEYS[1]" { w } else { format!("'{w}'") })
                    .collect();
                body.push_str(&format!("{call}({}) ", args.join(", ")));
            }
            body.push_str("return 1");
            let eval = rng.pick(&["EVAL", "EVAL_RO"]);
            case.name = format!("generated #{n}: {}", eval.to_ascii_lowercase());
            case.run.push(line(&[eval, &body, "1", "{t}"]));
        }
        // A function that runs any one command with the key and channel names as arguments.
        2 => {
            let function = rng.pick(&["gen_call", "gen_read"]);
            let fcall = if function == "gen_read" { rng.pick(&["FCALL", "FCALL_RO"]) } else { "FCALL" };
            case.name = format!("generated #{n}: {}", fcall.to_ascii_lowercase());
            case.setup.push(line(&["FUNCTION", "LOAD", "REPLACE", LIBRARY]));
            for _ in 0..steps {
                let (key, other, channel) = (rng.pick(&keys), rng.pick(&keys), rng.pick(&channels));
                let mut words = vec![fcall.to_owned(), function.to_owned(), "1".into(), "{t}".into()];
                words.extend(command(rng, key, other, channel));
                case.run.push(words.iter().map(|w| w.as_bytes().to_vec()).collect());
            }
            case.cleanup.push(line(&["FUNCTION", "DELETE", "gen"]));
        }
        // SORT reads the keys its BY and GET patterns name.
        _ => {
            let by = format!("{}:{{g{n}}}w_*", rng.pick(&["app", "sec"]));
            let get = format!("{}:{{g{n}}}o_*", rng.pick(&["app", "sec"]));
            case.name = format!("generated #{n}: sort");
            case.setup.push(line(&["DEL", "{t}"]));
            case.setup.push(line(&["RPUSH", "{t}", "1", "2"]));
            case.setup.push(line(&["SET", &by.replace('*', "1"), "5"]));
            case.setup.push(line(&["SET", &get.replace('*', "2"), "x"]));
            let store = rng.pick(&["", "STORE"]);
            let mut words = vec!["SORT", "{t}", "BY", &by, "GET", "#", "GET", &get];
            if !store.is_empty() {
                words.extend([store, &inside]);
            }
            case.run.push(line(&words));
        }
    }
    case
}
