//! ACL verdicts over the whole command table, against a real node (issue #20).
//!
//! The same ACL file is loaded into a standalone Redis node and into the proxy. Every sample
//! invocation of `tests/command_walk/cases.txt` (every command and subcommand Redis reports) runs
//! as several users against both, once with keys and channels inside the users' patterns and once
//! outside, and whether each one is refused for permissions (`-NOPERM`, or a script's ACL error)
//! must be the same on both sides: the proxy neither lets through what a node refuses nor refuses
//! what a node allows. So must the effects ([`effects`]): the keys that exist afterwards and the
//! messages published. Fixtures run as an admin user; every keyspace is flushed between cases.
//! Each case runs on new connections, so cases that change the connection (QUIT, HELLO, AUTH,
//! subscriptions) are walked too.

use effects::Observer;
use redisforge_proxy::slot::key_slot;
use redisforge_tests::AclSides;
use redisforge_tests::command_cases::{self as cases, CASES, Case, Tags};
use redisforge_tests::resp::{self, Conn, show};

mod effects;
mod generated;

const USERS: &str = "\
user admin on >admin-pass ~* &* +@all
user app on >app-pass ~app:* &app:* +@all -@dangerous
user reader on >read-pass ~* &* -@all +@read +@connection
user keyless on >keyless-pass resetkeys resetchannels +@all -@dangerous
user default off
";

const USERS_UNDER_TEST: [(&str, &str); 3] = [("app", "app-pass"), ("reader", "read-pass"), ("keyless", "keyless-pass")];

/// Whether a reply says the user may not do this: Redis' `-NOPERM`, or a script whose call was
/// refused by the node's ACL (which Redis 7 reports inside the script's error).
fn refused_for_permissions(reply: &Result<(Vec<u8>, resp::Frame), String>) -> bool {
    match reply {
        Ok((bytes, _)) => {
            let text = String::from_utf8_lossy(bytes);
            text.starts_with("-NOPERM") || (text.starts_with('-') && text.contains("no permissions"))
        }
        Err(_) => false,
    }
}

/// An authenticated raw connection.
fn login(addr: &str, user: &str, pass: &str) -> Conn {
    let mut conn = Conn::open(addr);
    let reply = conn.call(&[b"AUTH".to_vec(), user.as_bytes().to_vec(), pass.as_bytes().to_vec()]);
    assert!(matches!(&reply, Ok((bytes, _)) if bytes == b"+OK\r\n"), "AUTH {user} at {addr}: {reply:?}");
    conn
}

/// Runs `case` with `tags` as `user` on both sides; returns the disagreements in verdicts and in
/// effects.
fn compare(
    case: &Case,
    tags: &Tags,
    user: (&str, &str),
    sides: &mut [Observer; 2],
    refused: &mut usize,
) -> Vec<String> {
    let mut problems = Vec::new();
    for side in sides.iter_mut() {
        for line in &case.setup {
            let _ = side.admin.call(&tags.expand(line));
        }
    }
    let shard_channels =
        [tags.expand(&vec![b"{t}ch".to_vec()]).remove(0), tags.expand(&vec![b"{t}other".to_vec()]).remove(0)];
    let may_spublish =
        case.run.iter().flatten().any(|arg| arg.to_ascii_lowercase().windows(8).any(|w| w == b"spublish"));
    let mut shards = sides.each_ref().map(|side| may_spublish.then(|| side.shard_listener(&shard_channels)));
    let [through_proxy, on_node] = sides.each_ref().map(|side| login(side.addr(), user.0, user.1));
    let (mut through_proxy, mut on_node) = (through_proxy, on_node);
    // A request whose keys span slots is refused in a cluster (`-CROSSSLOT`) and runs on a node:
    // the documented difference, after which the effects differ by design.
    let mut cross_slot = false;
    for line in &case.run {
        let args = tags.expand(line);
        let (a, b) = (through_proxy.call(&args), on_node.call(&args));
        cross_slot |= matches!(&a, Ok((bytes, _)) if bytes.starts_with(b"-CROSSSLOT"));
        *refused += usize::from(refused_for_permissions(&b));
        // DEBUG and MODULE are refused by a node's enable-*-command setting before any ACL check;
        // the proxy refuses them by design, after checking the user's permissions.
        let protected = matches!(&b, Ok((bytes, _)) if String::from_utf8_lossy(bytes).contains("command not allowed. If the enable-"));
        if !protected && refused_for_permissions(&a) != refused_for_permissions(&b) {
            problems.push(format!(
                "{} as {}: {}\n  proxy: {}\n  node:  {}",
                at(case),
                user.0,
                shown(&args),
                reply(&a),
                reply(&b)
            ));
        }
        if a.is_err() || b.is_err() {
            break;
        }
    }
    drop((through_proxy, on_node));
    let [proxy_effects, node_effects] = [0, 1].map(|i| sides[i].effects(shards[i].take()));
    if proxy_effects != node_effects && !cross_slot {
        problems.push(format!(
            "{} as {} with {}: different effects\n  proxy: {proxy_effects:?}\n  node:  {node_effects:?}",
            at(case),
            user.0,
            tags.t
        ));
    }
    for side in sides.iter_mut() {
        for line in &case.cleanup {
            let _ = side.admin.call(&tags.expand(line));
        }
        let _ = side.admin.call(&[b"FLUSHALL".to_vec()]);
    }
    problems
}

fn at(case: &Case) -> String {
    match case.line {
        0 => case.name.clone(),
        line => format!("{} (cases.txt:{line})", case.name),
    }
}

fn shown(args: &[Vec<u8>]) -> String {
    let words: Vec<String> = args.iter().map(|x| String::from_utf8_lossy(x).into_owned()).collect();
    format!("{words:?}")
}

fn reply(r: &Result<(Vec<u8>, resp::Frame), String>) -> String {
    match r {
        Ok((bytes, _)) => show(bytes, 160),
        Err(e) => e.clone(),
    }
}

/// The seed and number of generated cases: fixed in CI, `ACL_DIFF_SEED` / `ACL_DIFF_CASES` for more.
fn generated_cases() -> (u64, Vec<Case>) {
    let number = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let seed = number("ACL_DIFF_SEED", 20);
    (seed, generated::cases(seed, number("ACL_DIFF_CASES", 200) as usize))
}

/// One test, not two: both parts flush the keyspace between cases.
#[test]
fn acl_verdicts_and_effects_match_a_node_for_every_command_and_generated_scripts() {
    let sides = AclSides::start(USERS);
    let mut observers = [Observer::open(&sides.proxy.addr()), Observer::open(&sides.node.addr())];
    let mut problems = Vec::new();
    let table = cases::parse(CASES);
    assert!(table.len() > 300, "the case file covers the command table: {} cases", table.len());
    let (mut runs, mut refused) = (0, 0);
    for (index, case) in table.iter().enumerate() {
        let base = Tags::for_case(index, key_slot);
        // Keys and channels inside app's patterns (`app:{cwN}…`), then outside (`sec:{cwN}…`):
        // the hash tag, and so the slot, stays the case's.
        for prefix in ["app:", "sec:"] {
            let tags = Tags { t: format!("{prefix}{}", base.t), u: format!("{prefix}{}", base.u), slot: base.slot };
            for user in USERS_UNDER_TEST {
                problems.extend(compare(case, &tags, user, &mut observers, &mut refused));
                runs += case.run.len();
            }
        }
    }
    let (seed, generated) = generated_cases();
    for (n, case) in generated.iter().enumerate() {
        // The declared key, inside app's patterns and then outside.
        for prefix in ["app:", "sec:"] {
            let t = format!("{prefix}{{g{n}}}d");
            let tags = Tags { slot: key_slot(t.as_bytes()), u: String::new(), t };
            for user in USERS_UNDER_TEST {
                problems.extend(compare(case, &tags, user, &mut observers, &mut refused));
                runs += case.run.len();
            }
        }
    }
    println!(
        "acl_differential: {} table cases, {} generated (seed {seed}), {runs} invocations as {} users, \
         {refused} refused for permissions",
        table.len(),
        generated.len(),
        USERS_UNDER_TEST.len()
    );
    assert!(refused > runs / 10, "the users' rules refuse a good share of the invocations: {refused} of {runs}");
    assert!(problems.is_empty(), "{} disagreements:\n{}", problems.len(), problems.join("\n"));
}
