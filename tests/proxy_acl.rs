//! Client users checked by the proxy from a Redis ACL file: NOAUTH, WRONGPASS and NOPERM with
//! Redis' texts, every rule kind allowed and denied, and reload on SIGHUP.

use std::time::Duration;

use redis::{Connection, Value};
use redisforge_tests::{Cluster, Proxy, ProxyOptions, Signal, raw_roundtrip, wait_until};

const USERS: &str = "\
# Test users: one of every rule kind.
user admin on >admin-pass ~* &* +@all
user reader on >read-pass ~app:* -@all +@read +ping
user writer on >write-pass %W~w:* %R~r:* -@all +set +get +ping
user pubsub on >pub-pass resetchannels &news:* -@all +publish
user limited on >lim-pass ~* -@all +@all -@dangerous -flushall
user config on >cfg-pass ~* -@all +client|setname +ping
user nopass-user on nopass ~* +@all
user disabled off >off-pass ~* +@all
";

fn proxy_with(users: &str, allow_anonymous: bool) -> (Proxy, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("users.acl");
    std::fs::write(&file, users).expect("write acl");
    let extra = format!("[auth]\nacl_file = \"{}\"\nallow_anonymous = {allow_anonymous}\n", file.display());
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions { extra_toml: extra, ..ProxyOptions::default() });
    (proxy, dir)
}

fn raw(con: &mut Connection, args: &[&str]) -> Result<Value, String> {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(con).map_err(|e| e.to_string())
}

fn login(proxy: &Proxy, user: &str, pass: &str) -> Connection {
    let mut con = proxy.client();
    raw(&mut con, &["AUTH", user, pass]).unwrap_or_else(|e| panic!("AUTH {user}: {e}"));
    con
}

fn denied(result: Result<Value, String>, what: &str) {
    let text = result.expect_err("expected NOPERM");
    let wanted = match what {
        "key" => "this user has no permissions to access one of the keys used as arguments".to_string(),
        "channel" => "this user has no permissions to access one of the channels used as arguments".to_string(),
        command => format!("this user has no permissions to run the '{command}' command"),
    };
    assert!(text.contains(&wanted), "{text} lacks {wanted}");
}

/// Before it logs in, a client may send no request of more than ten arguments or with an
/// argument over 16 KiB: Redis' `processMultibulkBuffer` answers a protocol error and closes the
/// connection, before reading the rest; logged in, the same requests run.
#[test]
fn a_client_that_has_not_logged_in_sends_small_requests_only() {
    let (proxy, _dir) = proxy_with(USERS, false);
    let eleven = format!("*11\r\n$4\r\nMSET{}", "\r\n$1\r\nk".repeat(10));
    let reply =
        raw_roundtrip(&proxy.addr(), format!("PING\r\n{eleven}\r\nPING\r\n").as_bytes(), Duration::from_secs(5));
    let closed = "-NOAUTH Authentication required.\r\n-ERR Protocol error: unauthenticated multibulk length\r\n";
    assert_eq!(String::from_utf8_lossy(&reply), closed);
    let big = format!("*2\r\n$4\r\nECHO\r\n$16385\r\n{}\r\n", "x".repeat(16385));
    let reply = raw_roundtrip(&proxy.addr(), big.as_bytes(), Duration::from_secs(5));
    assert_eq!(String::from_utf8_lossy(&reply), "-ERR Protocol error: unauthenticated bulk length\r\n");
    // Logged in (in the same read), both are ordinary requests.
    let login = "*3\r\n$4\r\nAUTH\r\n$5\r\nadmin\r\n$10\r\nadmin-pass\r\n";
    let reply = raw_roundtrip(&proxy.addr(), format!("{login}{big}QUIT\r\n").as_bytes(), Duration::from_secs(5));
    assert_eq!(String::from_utf8_lossy(&reply), format!("+OK\r\n$16385\r\n{}\r\n+OK\r\n", "x".repeat(16385)));
}

#[test]
fn unauthenticated_clients_get_noauth_until_they_log_in() {
    let (proxy, _dir) = proxy_with(USERS, false);
    // The proxy answers raw bytes exactly as Redis would.
    let reply = raw_roundtrip(&proxy.addr(), b"GET k\r\nPING\r\nAUTH admin nope\r\nQUIT\r\n", Duration::from_secs(5));
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "-NOAUTH Authentication required.\r\n-NOAUTH Authentication required.\r\n\
         -WRONGPASS invalid username-password pair or user is disabled.\r\n+OK\r\n"
    );
    let mut con = proxy.client();
    assert!(raw(&mut con, &["AUTH", "disabled", "off-pass"]).expect_err("disabled").contains("WRONGPASS"));
    assert!(raw(&mut con, &["AUTH", "nobody", "x"]).expect_err("unknown").contains("WRONGPASS"));
    assert!(raw(&mut con, &["AUTH", "just-a-password"]).expect_err("no default user").contains("WRONGPASS"));
    assert_eq!(raw(&mut con, &["AUTH", "admin", "admin-pass"]), Ok(Value::Okay));
    assert_eq!(raw(&mut con, &["ACL", "WHOAMI"]), Ok(Value::BulkString(b"admin".to_vec())));
    assert_eq!(raw(&mut con, &["SET", "acl:k", "v"]), Ok(Value::Okay));
    let mut nopass = proxy.client();
    assert_eq!(raw(&mut nopass, &["AUTH", "nopass-user", "anything"]), Ok(Value::Okay));
}

#[test]
fn hello_can_authenticate() {
    let (proxy, _dir) = proxy_with(USERS, false);
    let mut con = proxy.client();
    let refused = raw(&mut con, &["HELLO", "2"]).expect_err("HELLO without AUTH");
    // Redis 7.0's text (the suite's nodes); 7.2 added `<proto>` after HELLO.
    assert!(refused.contains("HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"), "{refused}");
    let hello = raw(&mut con, &["HELLO", "2", "AUTH", "admin", "admin-pass", "SETNAME", "app1"]).expect("HELLO AUTH");
    assert!(format!("{hello:?}").contains("proto"));
    assert_eq!(raw(&mut con, &["CLIENT", "GETNAME"]), Ok(Value::BulkString(b"app1".to_vec())));
    assert_eq!(raw(&mut con, &["ACL", "WHOAMI"]), Ok(Value::BulkString(b"admin".to_vec())));
}

#[test]
fn every_rule_kind_is_enforced_with_redis_texts() {
    let (proxy, _dir) = proxy_with(USERS, false);
    let mut admin = login(&proxy, "admin", "admin-pass");
    for (k, v) in [("app:1", "a"), ("other:1", "o"), ("r:1", "r"), ("w:1", "w")] {
        assert_eq!(raw(&mut admin, &["SET", k, v]), Ok(Value::Okay));
    }

    // ~pattern with +@read: reads inside the pattern only, no writes at all.
    let mut reader = login(&proxy, "reader", "read-pass");
    assert_eq!(raw(&mut reader, &["GET", "app:1"]), Ok(Value::BulkString(b"a".to_vec())));
    denied(raw(&mut reader, &["GET", "other:1"]), "key");
    denied(raw(&mut reader, &["SET", "app:1", "x"]), "set");
    denied(raw(&mut reader, &["MGET", "app:1", "other:1"]), "key");

    // %R~ / %W~: reads and writes on different key sets.
    let mut writer = login(&proxy, "writer", "write-pass");
    assert_eq!(raw(&mut writer, &["SET", "w:1", "x"]), Ok(Value::Okay));
    denied(raw(&mut writer, &["GET", "w:1"]), "key");
    assert_eq!(raw(&mut writer, &["GET", "r:1"]), Ok(Value::BulkString(b"r".to_vec())));
    denied(raw(&mut writer, &["SET", "r:1", "x"]), "key");
    denied(raw(&mut writer, &["DEL", "w:1"]), "del");

    // &channel patterns.
    let mut pubsub = login(&proxy, "pubsub", "pub-pass");
    assert!(matches!(raw(&mut pubsub, &["PUBLISH", "news:today", "hi"]), Ok(Value::Int(_))));
    denied(raw(&mut pubsub, &["PUBLISH", "sports:today", "hi"]), "channel");

    // -@dangerous and a single command removed after +@all.
    let mut limited = login(&proxy, "limited", "lim-pass");
    assert_eq!(raw(&mut limited, &["SET", "acl:lim", "1"]), Ok(Value::Okay));
    denied(raw(&mut limited, &["FLUSHALL"]), "flushall");
    denied(raw(&mut limited, &["KEYS", "*"]), "keys");

    // +container|subcommand allows that subcommand only.
    let mut config = login(&proxy, "config", "cfg-pass");
    assert_eq!(raw(&mut config, &["CLIENT", "SETNAME", "x"]), Ok(Value::Okay));
    denied(raw(&mut config, &["CLIENT", "GETNAME"]), "client|getname");
    denied(raw(&mut config, &["GET", "app:1"]), "get");
}

#[test]
fn repeated_failures_close_the_connection() {
    let (proxy, _dir) = proxy_with(USERS, false);
    let attempts =
        b"AUTH admin a\r\nAUTH admin b\r\nAUTH admin c\r\nAUTH admin d\r\nAUTH admin e\r\nAUTH admin admin-pass\r\n";
    let reply = raw_roundtrip(&proxy.addr(), attempts, Duration::from_secs(5));
    let text = String::from_utf8_lossy(&reply);
    assert_eq!(text.matches("-WRONGPASS").count(), 5, "{text}");
    assert!(!text.contains("+OK"), "the connection must be closed after the fifth failure: {text}");
    assert!(proxy.log().contains("authentication failed"));
    assert!(!proxy.log().contains("admin-pass"), "passwords are never logged");
}

#[test]
fn anonymous_clients_act_as_the_files_default_user_when_allowed() {
    let users = "user default on nopass ~pub:* -@all +get +ping\nuser admin on >admin-pass ~* +@all\n";
    let (proxy, _dir) = proxy_with(users, true);
    let mut con = proxy.client();
    assert_eq!(raw(&mut con, &["PING"]), Ok(Value::SimpleString("PONG".into())));
    assert_eq!(raw(&mut con, &["GET", "pub:x"]), Ok(Value::Nil));
    denied(raw(&mut con, &["SET", "pub:x", "1"]), "set");
    assert_eq!(raw(&mut con, &["AUTH", "admin", "admin-pass"]), Ok(Value::Okay));
    assert_eq!(raw(&mut con, &["SET", "pub:x", "1"]), Ok(Value::Okay));
}

#[test]
fn sighup_reloads_users_and_a_user_turned_off_is_refused_next() {
    let (proxy, dir) = proxy_with(USERS, false);
    let mut reader = login(&proxy, "reader", "read-pass");
    assert!(raw(&mut reader, &["GET", "app:none"]).is_ok());
    let turned_off = USERS.replace("user reader on", "user reader off");
    std::fs::write(dir.path().join("users.acl"), turned_off).expect("rewrite acl");
    proxy.signal(Signal::Hup);
    assert!(wait_until(Duration::from_secs(10), Duration::from_millis(50), || proxy
        .log()
        .contains("ACL file reloaded")));
    assert!(raw(&mut reader, &["GET", "app:none"]).expect_err("refused after reload").contains("NOAUTH"));
    // A broken file is refused and the users in force stay.
    std::fs::write(dir.path().join("users.acl"), "user admin on +nosuchcommand\n").expect("break acl");
    proxy.signal(Signal::Hup);
    assert!(wait_until(Duration::from_secs(10), Duration::from_millis(50), || proxy
        .log()
        .contains("ACL reload refused")));
    let mut admin = login(&proxy, "admin", "admin-pass");
    assert_eq!(raw(&mut admin, &["PING"]), Ok(Value::SimpleString("PONG".into())));
}

/// The file's `default` user decides as Redis' does: turned `off`, anonymous clients must log in
/// even with `allow_anonymous` (it does not fall back to an unrestricted user); `nopass`, a
/// one-argument `AUTH <password>` is Redis' configuration error.
#[test]
fn the_files_default_user_decides_anonymous_access_and_auth_password_as_on_redis() {
    let off = "user default off nopass ~* +@all\nuser admin on >admin-pass ~* &* +@all\n";
    let (proxy, _dir) = proxy_with(off, true);
    let reply = raw_roundtrip(
        &proxy.addr(),
        b"GET acl:anon\r\nAUTH admin admin-pass\r\nPING\r\nQUIT\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(String::from_utf8_lossy(&reply), "-NOAUTH Authentication required.\r\n+OK\r\n+PONG\r\n+OK\r\n");

    let nopass = "user default on nopass ~* +@all\nuser admin on >admin-pass ~* &* +@all\n";
    let (proxy, _dir) = proxy_with(nopass, true);
    let reply = raw_roundtrip(&proxy.addr(), b"AUTH anything\r\nPING\r\nQUIT\r\n", Duration::from_secs(5));
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\r\n+PONG\r\n+OK\r\n"
    );
}
