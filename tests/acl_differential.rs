//! ACL verdicts over the whole command table, against a real node (issue #20).
//!
//! The same ACL file is loaded into a standalone Redis node and into the proxy. Every sample
//! invocation of `tests/command_walk/cases.txt` (every command and subcommand Redis reports) runs
//! as several users against both, once with keys and channels inside the users' patterns and once
//! outside, and whether each one is refused for permissions (`-NOPERM`, or a script's ACL error)
//! must be the same on both sides: the proxy neither lets through what a node refuses nor refuses
//! what a node allows. Fixtures run as an admin user; every keyspace is flushed between cases.
//! Cases that change the connection itself (`fresh`: QUIT, HELLO, subscriptions, AUTH) are left to
//! the ACL suites.

// The command walk's case file and raw RESP client; this suite uses part of the client only.
#[allow(dead_code)]
#[path = "command_walk/cases.rs"]
mod cases;
#[allow(dead_code)]
#[path = "command_walk/resp.rs"]
mod resp;

use cases::{Case, Tags};
use redisforge_proxy::slot::key_slot;
use redisforge_tests::AclSides;
use resp::{Conn, show};

const CASES: &str = include_str!("command_walk/cases.txt");

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

fn addrs(sides: &AclSides) -> [String; 2] {
    [sides.proxy.addr(), sides.node.addr()]
}

/// Runs `case` with `tags` as `user` on both sides; returns the disagreements.
fn compare(sides: &AclSides, case: &Case, tags: &Tags, user: (&str, &str), admins: &mut [Conn; 2]) -> Vec<String> {
    let mut problems = Vec::new();
    for admin in admins.iter_mut() {
        for line in &case.setup {
            let _ = admin.call(&tags.expand(line));
        }
    }
    let [proxy_addr, node_addr] = addrs(sides);
    let mut through_proxy = login(&proxy_addr, user.0, user.1);
    let mut on_node = login(&node_addr, user.0, user.1);
    for line in &case.run {
        let args = tags.expand(line);
        let (a, b) = (through_proxy.call(&args), on_node.call(&args));
        // DEBUG and MODULE are refused by a node's enable-*-command setting before any ACL check;
        // the proxy refuses them by design, after checking the user's permissions.
        let protected = matches!(&b, Ok((bytes, _)) if String::from_utf8_lossy(bytes).contains("command not allowed. If the enable-"));
        if !protected && refused_for_permissions(&a) != refused_for_permissions(&b) {
            let shown: Vec<String> = args.iter().map(|x| String::from_utf8_lossy(x).into_owned()).collect();
            let reply = |r: &Result<(Vec<u8>, resp::Frame), String>| match r {
                Ok((bytes, _)) => show(bytes, 160),
                Err(e) => e.clone(),
            };
            problems.push(format!(
                "{} (cases.txt:{}) as {}: {shown:?}\n  proxy: {}\n  node:  {}",
                case.name,
                case.line,
                user.0,
                reply(&a),
                reply(&b)
            ));
        }
        if a.is_err() || b.is_err() {
            break;
        }
    }
    for admin in admins.iter_mut() {
        for line in &case.cleanup {
            let _ = admin.call(&tags.expand(line));
        }
        let _ = admin.call(&[b"FLUSHALL".to_vec()]);
    }
    problems
}

#[test]
fn acl_verdicts_match_a_node_for_every_command_as_every_user() {
    let sides = AclSides::start(USERS);
    let cases: Vec<Case> = cases::parse(CASES).into_iter().filter(|c| !c.fresh).collect();
    assert!(cases.len() > 300, "the case file covers the command table: {} cases", cases.len());
    let [proxy_addr, node_addr] = addrs(&sides);
    let mut admins = [login(&proxy_addr, "admin", "admin-pass"), login(&node_addr, "admin", "admin-pass")];
    let slot_of = |key: &[u8]| key_slot(key);
    let mut problems = Vec::new();
    let mut runs = 0;
    for (index, case) in cases.iter().enumerate() {
        let base = Tags::for_case(index, slot_of);
        // Keys and channels inside app's patterns (`app:{cwN}…`), then outside (`sec:{cwN}…`):
        // the hash tag, and so the slot, stays the case's.
        for prefix in ["app:", "sec:"] {
            let tags = Tags { t: format!("{prefix}{}", base.t), u: format!("{prefix}{}", base.u), slot: base.slot };
            for user in USERS_UNDER_TEST {
                problems.extend(compare(&sides, case, &tags, user, &mut admins));
                runs += case.run.len();
            }
        }
    }
    println!("acl_differential: {} cases, {runs} invocations as {} users", cases.len(), USERS_UNDER_TEST.len());
    assert!(problems.is_empty(), "{} disagreements:\n{}", problems.len(), problems.join("\n"));
}
