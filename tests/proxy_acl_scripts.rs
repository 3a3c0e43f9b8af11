//! A user's ACL rules hold inside scripts and functions run through the proxy, exactly as on a
//! Redis node: the same ACL file is loaded into a standalone node and into the proxy, the same
//! scripts run as the same users against both, and the verdicts (error or not) and the effects
//! (which keys exist afterwards) must match.

use redis::{Connection, Value};
use redisforge_tests::{AclSides, query_args};

const USERS: &str = "\
user admin on >admin-pass ~* &* +@all
user app on >app-pass ~app:* resetchannels &app:* +@all -@dangerous
user reader on >read-pass ~app:* -@all +@read +@scripting -function|load
user scripter on >script-pass ~app:* -@all +@read +@scripting +multi +exec +watch -function|load
";

fn sides() -> AclSides {
    AclSides::start(USERS)
}

fn login(addr: &str, user: &str, pass: &str) -> Connection {
    let client = redis::Client::open(format!("redis://{addr}/")).expect("client");
    let mut con = client.get_connection().expect("connect");
    query_args(&mut con, &["AUTH", user, pass]).unwrap_or_else(|e| panic!("AUTH {user} at {addr}: {e}"));
    con
}

/// What a command did, for comparison: refused (with the error's first word) or answered.
fn verdict(result: &Result<Value, String>) -> &'static str {
    match result {
        Err(_) => "error",
        // EXEC answers an array whose elements may be errors.
        Ok(Value::Array(items)) if items.iter().any(|v| matches!(v, Value::ServerError(_))) => "error inside",
        Ok(_) => "ok",
    }
}

fn exists(con: &mut Connection, key: &str) -> bool {
    query_args(con, &["EXISTS", key]) == Ok(Value::Int(1))
}

/// Runs `commands` as `user` on both sides; the verdict of each and whether `watched` exists
/// afterwards must be the same on both.
fn same_on_both(sides: &AclSides, user: (&str, &str), commands: &[&[&str]], watched: &[&str]) {
    let mut proxy = login(&sides.proxy.addr(), user.0, user.1);
    let mut node = login(&sides.node.addr(), user.0, user.1);
    for command in commands {
        let through_proxy = query_args(&mut proxy, command);
        let on_node = query_args(&mut node, command);
        assert_eq!(
            verdict(&through_proxy),
            verdict(&on_node),
            "{} {command:?}: proxy {through_proxy:?}, node {on_node:?}",
            user.0
        );
    }
    let mut proxy_admin = login(&sides.proxy.addr(), "admin", "admin-pass");
    let mut node_admin = login(&sides.node.addr(), "admin", "admin-pass");
    for key in watched {
        assert_eq!(
            exists(&mut proxy_admin, key),
            exists(&mut node_admin, key),
            "{} wrote {key} on one side only",
            user.0
        );
    }
}

#[test]
fn scripts_run_with_the_callers_key_rules() {
    let sides = sides();
    let write_declared = "return redis.call('SET', KEYS[1], 'x')";
    let write_secret = "return redis.call('SET', 'secret:{app:1}', 'x')";
    let read_secret = "return redis.call('GET', 'secret:{app:1}')";
    let write_anywhere = "return redis.call('SET', 'secret:3', 'x')";
    same_on_both(
        &sides,
        ("app", "app-pass"),
        &[
            &["EVAL", write_declared, "1", "app:{app:1}"],
            // The declared key passes; the undeclared one inside the script must not.
            &["EVAL", write_secret, "1", "app:{app:1}"],
            &["EVAL", read_secret, "1", "app:{app:1}"],
            &["EVAL", write_anywhere, "0"],
            &["EVAL_RO", "return redis.call('GET', KEYS[1])", "1", "app:{app:1}"],
        ],
        &["app:{app:1}", "secret:{app:1}", "secret:3"],
    );
    // The same scripts as a user whose rules allow every key do write.
    same_on_both(
        &sides,
        ("admin", "admin-pass"),
        &[&["EVAL", write_secret, "1", "app:{app:1}"], &["DEL", "secret:{app:1}"]],
        &["secret:{app:1}"],
    );
}

#[test]
fn functions_and_transactions_run_with_the_callers_key_rules() {
    let sides = sides();
    let library = "#!lua name=esc\nredis.register_function('esc', function(keys) \
                   return redis.call('SET', 'secret:{app:2}', 'x') end)\n\
                   redis.register_function{function_name='own', callback=function(keys) \
                   return redis.call('SET', keys[1], 'y') end}";
    same_on_both(
        &sides,
        ("app", "app-pass"),
        &[
            &["FUNCTION", "LOAD", "REPLACE", library],
            &["FCALL", "esc", "1", "app:{app:2}"],
            &["FCALL", "own", "1", "app:{app:2}"],
        ],
        &["secret:{app:2}", "app:{app:2}"],
    );
    // A script queued in a transaction runs on the client's own connection: same rules there.
    let mut proxy = login(&sides.proxy.addr(), "app", "app-pass");
    let mut node = login(&sides.node.addr(), "app", "app-pass");
    for con in [&mut proxy, &mut node] {
        assert_eq!(query_args(con, &["MULTI"]), Ok(Value::Okay));
        let queued = query_args(con, &["EVAL", "return redis.call('SET', 'secret:{app:4}', 'x')", "1", "app:{app:4}"]);
        assert_eq!(queued, Ok(Value::SimpleString("QUEUED".into())));
    }
    let (through_proxy, on_node) = (query_args(&mut proxy, &["EXEC"]), query_args(&mut node, &["EXEC"]));
    assert_eq!(verdict(&through_proxy), verdict(&on_node), "proxy {through_proxy:?}, node {on_node:?}");
    same_on_both(&sides, ("app", "app-pass"), &[], &["secret:{app:4}"]);
}

#[test]
fn a_read_only_user_cannot_write_from_a_script() {
    let sides = sides();
    same_on_both(
        &sides,
        ("reader", "read-pass"),
        &[
            &["EVAL", "return redis.call('SET', KEYS[1], 'x')", "1", "app:{app:5}"],
            &["EVAL", "return redis.call('GET', KEYS[1])", "1", "app:{app:5}"],
            &["EVAL", "return redis.call('DEL', KEYS[1])", "1", "app:{app:5}"],
        ],
        &["app:{app:5}"],
    );
}

/// A client that logs in as another user keeps its own connection (and its WATCH), and a script
/// in its next transaction runs with the new user's rules, as on a node: `scripter` may run
/// transactions and scripts but not write from them, though the connection was first `admin`'s
/// (AUTH, then HELLO with AUTH); back as `admin`, the same script writes. The switch also works
/// from a user without ACL rights to one whose twin the node has not seen.
#[test]
fn a_transaction_runs_as_the_user_the_client_logged_in_as_last() {
    let sides = sides();
    let write = "return redis.call('SET', KEYS[1], 'x')";
    // First (no twin of `scripter` exists on the nodes yet), from a user that may not set up node
    // users itself (`app`: no ACL commands): the proxy logs in as itself before it sets one up.
    same_on_both(
        &sides,
        ("app", "app-pass"),
        &[
            &["WATCH", "app:{sw2}:watched"],
            &["AUTH", "scripter", "script-pass"],
            &["MULTI"],
            &["EVAL", write, "1", "app:{sw2}:by-scripter"],
            &["EXEC"],
        ],
        &["app:{sw2}:by-scripter"],
    );
    same_on_both(
        &sides,
        ("admin", "admin-pass"),
        &[
            &["WATCH", "app:{sw}:watched"],
            &["AUTH", "scripter", "script-pass"],
            &["MULTI"],
            &["EVAL", write, "1", "app:{sw}:by-scripter"],
            &["EXEC"],
            &["AUTH", "admin", "admin-pass"],
            &["WATCH", "app:{sw}:watched"],
            &["HELLO", "2", "AUTH", "scripter", "script-pass"],
            &["MULTI"],
            &["EVAL", write, "1", "app:{sw}:by-hello"],
            &["EXEC"],
            &["AUTH", "admin", "admin-pass"],
            &["MULTI"],
            &["EVAL", write, "1", "app:{sw}:by-admin"],
            &["EXEC"],
        ],
        &["app:{sw}:by-scripter", "app:{sw}:by-hello", "app:{sw}:by-admin"],
    );
}

/// The same switch with the login and the transaction pipelined in one write: the transaction
/// runs as the new user, and the proxy's hold of what follows the connection's new login until
/// the node accepted it neither stalls nor reorders the pipeline.
#[test]
fn a_pipelined_transaction_after_auth_runs_as_the_new_user() {
    let sides = sides();
    let write = "return redis.call('SET', KEYS[1], 'x')";
    for addr in [sides.proxy.addr(), sides.node.addr()] {
        let mut con = login(&addr, "admin", "admin-pass");
        query_args(&mut con, &["WATCH", "app:{sw3}:watched"]).expect("WATCH");
        let mut pipe = redis::pipe();
        pipe.cmd("AUTH").arg("scripter").arg("script-pass").ignore();
        pipe.cmd("MULTI").ignore();
        pipe.cmd("EVAL").arg(write).arg(1).arg("app:{sw3}:piped").ignore();
        pipe.cmd("EXEC");
        let exec: Result<Vec<Value>, _> = pipe.query(&mut con);
        let verdict = match exec {
            Ok(values) => format!("{values:?}"),
            Err(error) => format!("error: {error}"),
        };
        let mut admin = login(&addr, "admin", "admin-pass");
        assert!(!exists(&mut admin, "app:{sw3}:piped"), "{addr}: the script wrote as admin: {verdict}");
    }
}
