use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{AclError, AuthError, Denied, User, Users, glob};
use crate::command::{CommandTable, KeyAccess};

fn table() -> &'static CommandTable {
    static TABLE: OnceLock<CommandTable> = OnceLock::new();
    TABLE.get_or_init(CommandTable::builtin)
}

/// An enabled `nopass` user with `rules`.
fn user(rules: &str) -> Arc<User> {
    let users = Users::parse(&format!("user u on nopass {rules}"), table()).expect("valid rules");
    users.get("u").expect("user u is defined")
}

/// The verdict for a request written with single spaces, as "ok", "cmd", "key" or "chan".
fn verdict(user: &User, request: &str) -> &'static str {
    let args: Vec<&[u8]> = request.split(' ').map(str::as_bytes).collect();
    let spec = table().lookup(&args[..]).expect("known command");
    match user.check(spec, &args[..], &mut Vec::new()) {
        Ok(()) => "ok",
        Err(Denied::Command { .. }) => "cmd",
        Err(Denied::Key) => "key",
        Err(Denied::Channel) => "chan",
    }
}

fn assert_verdicts(rules: &str, cases: &[(&str, &str)]) {
    let u = user(rules);
    for &(request, expected) in cases {
        assert_eq!(verdict(&u, request), expected, "rules '{rules}', request '{request}'");
    }
}

fn load_error(text: &str) -> String {
    Users::parse(text, table()).expect_err("the file should be refused").to_string()
}

fn sha256_hex(password: &str) -> String {
    hex::encode(Sha256::digest(password.as_bytes()))
}

/// Glob cases: pattern, string, whether Redis' `stringmatchlen` matches.
const GLOBS: &[(&[u8], &[u8], bool)] = &[
    (b"h?llo", b"hello", true),
    (b"h?llo", b"hllo", false),
    (b"h*llo", b"heeeello", true),
    (b"h*llo", b"hllo", true),
    (b"h[ae]llo", b"hallo", true),
    (b"h[ae]llo", b"hillo", false),
    (b"h[^e]llo", b"hallo", true),
    (b"h[^e]llo", b"hello", false),
    (b"h[a-c]llo", b"hbllo", true),
    (b"h[c-a]llo", b"hbllo", true),
    (b"h[a-c]llo", b"hdllo", false),
    (b"h\\*llo", b"h*llo", true),
    (b"h\\*llo", b"hello", false),
    (b"[\\]]", b"]", true),
    (b"[\\-]", b"-", true),
    (b"Hello", b"hello", false),
    (b"*", b"", false),
    (b"", b"", true),
    (b"a*", b"a", true),
    (b"a**b", b"ab", true),
    (b"[abc", b"b", true),
    (b"[abc", b"d", false),
    (b"[a-]", b"_", true),
    (b"[a-]", b"-", false),
    (b"[^", b"x", true),
    (b"[", b"x", false),
    (b"ab\\", b"ab\\", true),
    (b"*a*b*c*", b"xaybzc", true),
    (b"[a-\xff]", b"0", true),
    (b"[a-\xff]", b"b", false),
    (b"a*a*a*a*a*a*a*a*b", b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false),
];

#[test]
fn glob_matches_like_redis_stringmatchlen() {
    for &(pattern, string, expected) in GLOBS {
        let (p, s) = (String::from_utf8_lossy(pattern), String::from_utf8_lossy(string));
        assert_eq!(glob::matches(pattern, string), expected, "pattern '{p}', string '{s}'");
    }
}

#[test]
fn patterns_that_may_match_a_prefixed_string_are_told_apart() {
    let cases: [(&[u8], bool); 16] = [
        (b"*", true),
        (b"_*", true),
        (b"*:foo", true),
        (b"__key*", true),
        (b"__keyspace@0__:*", true),
        (b"__keyevent@*__:set", true),
        (b"?_key*", true),
        (b"[_]_k[a-z]y*", true),
        (b"*x*y*", true),
        (b"__key", true),
        (b"__ke", false),
        (b"__kez*", false),
        (b"news.*", false),
        (b"h?llo", false),
        (b"[^_]*", false),
        (b"", false),
    ];
    for (pattern, expected) in cases {
        let p = String::from_utf8_lossy(pattern);
        assert_eq!(glob::may_match_prefixed(pattern, b"__key"), expected, "pattern '{p}'");
    }
}

#[test]
fn users_are_off_and_powerless_until_granted() {
    let users = Users::parse("user u\nuser v nopass\n", table()).expect("valid file");
    let u = users.get("u").expect("defined");
    assert!(!u.enabled);
    assert_eq!(verdict(&u, "get k"), "cmd");
    assert_eq!(users.authenticate("v", b"x").err(), Some(AuthError::WrongPass), "off, even with nopass");
    assert!(users.get("nobody").is_none());
    assert_eq!((users.len(), users.is_empty()), (2, false));
}

#[test]
fn on_and_off_apply_in_order() {
    let users = Users::parse("user a off on nopass\nuser b on nopass off\n", table()).expect("valid file");
    assert!(users.authenticate("a", b"").is_ok());
    assert_eq!(users.authenticate("b", b"").map(|_| ()), Err(AuthError::WrongPass));
}

#[test]
fn password_rules_add_and_remove_hashes() {
    let text = format!(
        "user plain on >secret\nuser hashed on #{}\nuser any on >old nopass\nuser later on nopass >only\n\
         user reset on >a resetpass\nuser removed on >a >b <a\nuser unhashed on #{} !{}\nuser many on >a >b >a\n",
        sha256_hex("hashed"),
        sha256_hex("x"),
        sha256_hex("x"),
    );
    let users = Users::parse(&text, table()).expect("valid file");
    let ok = |name: &str, password: &str| users.authenticate(name, password.as_bytes()).is_ok();
    assert!(ok("plain", "secret") && !ok("plain", "Secret") && !ok("plain", ""));
    assert!(ok("hashed", "hashed") && !ok("hashed", &sha256_hex("hashed")));
    assert!(ok("any", "old") && ok("any", "anything"));
    assert!(ok("later", "only") && !ok("later", "other"), ">password clears nopass");
    assert!(!ok("reset", "a") && !ok("reset", ""), "resetpass leaves no way in");
    assert!(!ok("removed", "a") && ok("removed", "b"));
    assert!(!ok("unhashed", "x"));
    assert!(ok("many", "a") && ok("many", "b") && !ok("many", "c"));
    assert_eq!(users.get("many").expect("defined").passwords.len(), 2, "duplicates are stored once");
}

#[test]
fn wrongpass_for_unknown_disabled_or_wrong_password() {
    let users = Users::parse("user on on >pw\nuser off off >pw\n", table()).expect("valid file");
    for (name, password) in [("nobody", "pw"), ("off", "pw"), ("on", "wrong"), ("ON", "pw")] {
        let error = users.authenticate(name, password.as_bytes()).expect_err("refused");
        assert_eq!(error.reply_text(), "WRONGPASS invalid username-password pair or user is disabled.");
        assert_eq!(error.to_string(), error.reply_text());
    }
    assert_eq!(users.authenticate("on", b"pw").expect("accepted").name, "on");
}

#[test]
fn authenticate_picks_the_right_user_among_many() {
    let text: String = (0..300).map(|i| format!("user user{i} on >pass{i} >shared{}\n", i % 7)).collect();
    let users = Users::parse(&text, table()).expect("valid file");
    assert_eq!(users.len(), 300);
    for i in (0..300).step_by(37) {
        let name = format!("user{i}");
        assert_eq!(users.authenticate(&name, format!("pass{i}").as_bytes()).expect("own password").name, name);
        assert!(users.authenticate(&name, format!("shared{}", i % 7).as_bytes()).is_ok());
        assert!(users.authenticate(&name, format!("pass{}", i + 1).as_bytes()).is_err());
    }
}

#[test]
fn debug_output_never_shows_passwords_or_hashes() {
    let text = format!("user u on >hunter2 #{} ~app:* +get", sha256_hex("other"));
    let users = Users::parse(&text, table()).expect("valid file");
    let shown = format!("{:?} {:?}", users.get("u").expect("defined"), users);
    for secret in ["hunter2".to_owned(), sha256_hex("hunter2"), sha256_hex("other"), sha256_hex("other")[..16].into()] {
        assert!(!shown.contains(&secret), "{shown}");
    }
    assert!(shown.contains("passwords: 2") && shown.contains("~app:*"), "{shown}");
}

#[test]
fn key_patterns_grant_read_and_write() {
    let cases = [("get app:1", "ok"), ("set app:1 v", "ok"), ("get other", "key"), ("set other v", "key")];
    assert_verdicts("~app:* +@all", &cases);
    assert_verdicts("+@all", &[("get k", "key"), ("ping", "ok")]);
}

#[test]
fn read_and_write_key_patterns_split_access() {
    assert_verdicts(
        "%R~r:* %W~w:* +@all",
        &[
            ("get r:1", "ok"),
            ("set r:1 v", "key"),
            ("set w:1 v", "ok"),
            ("get w:1", "key"),
            ("set w:1 v GET", "key"),
            ("exists w:1 r:1", "ok"),
            ("del w:1", "ok"),
            ("del r:1", "key"),
            ("bitfield r:1 GET u8 0", "ok"),
            ("bitfield r:1 SET u8 0 1", "key"),
        ],
    );
    assert_verdicts("%RW~k %r~k2 %W~k2 +@all", &[("incr k", "ok"), ("incr k2", "ok"), ("set k3 v", "key")]);
}

#[test]
fn allkeys_and_resetkeys() {
    assert_verdicts("~a allkeys +@all", &[("get b", "ok")]);
    assert_verdicts("allkeys resetkeys ~a +@all", &[("get a", "ok"), ("get b", "key")]);
    assert_verdicts("~* +@all", &[("get anything", "ok")]);
}

#[test]
fn multi_key_commands_need_every_key() {
    let rules = "~a* %R~src* %W~dst* +@all";
    let cases = [
        ("mset a1 v a2 v", "ok"),
        ("mset a1 v b v", "key"),
        ("mget a1 b", "key"),
        ("copy src1 dst1", "ok"),
        ("copy dst1 src1", "key"),
        ("copy src1 a1", "ok"),
        ("sort src1 store dst1", "ok"),
        ("sort src1 store src2", "key"),
    ];
    assert_verdicts(rules, &cases);
}

#[test]
fn channel_patterns_cover_publish_and_subscribe() {
    let cases = [
        ("publish chan1 m", "ok"),
        ("publish other m", "chan"),
        ("spublish chan1 m", "ok"),
        ("subscribe chan1 chan2", "ok"),
        ("subscribe chan1 other", "chan"),
        ("ssubscribe other", "chan"),
        ("psubscribe chan*", "ok"),
        ("psubscribe chan1*", "chan"),
        ("unsubscribe other", "ok"),
    ];
    assert_verdicts("&chan* +@all", &cases);
    assert_verdicts("allchannels +@all", &[("publish any m", "ok"), ("psubscribe *", "ok")]);
    assert_verdicts("allchannels resetchannels +@all", &[("publish any m", "chan")]);
    assert_verdicts("&a allchannels +@all", &[("subscribe b", "ok")]);
}

#[test]
fn categories_and_commands_apply_in_order() {
    assert_verdicts("~* +@read -@write", &[("get k", "ok"), ("set k v", "cmd"), ("lpush k v", "cmd")]);
    assert_verdicts("~* +@all -@dangerous", &[("get k", "ok"), ("flushall", "cmd"), ("keys *", "cmd")]);
    assert_verdicts("~* +get", &[("get k", "ok"), ("set k v", "cmd"), ("mget k", "cmd")]);
    assert_verdicts("~* +@read -get", &[("get k", "cmd"), ("mget k", "ok")]);
    assert_verdicts("~* -get +@read", &[("get k", "ok")]);
    assert_verdicts("~* +@read -get +@read", &[("get k", "ok")]);
    assert_verdicts("~* +GET +@Write -SET", &[("get k", "ok"), ("set k v", "cmd"), ("del k", "ok")]);
}

#[test]
fn subcommands_have_their_own_permission() {
    let u = user("+config|get");
    assert_eq!(verdict(&u, "config get maxmemory"), "ok");
    let spec = table().lookup(&["config", "set", "a", "b"]).expect("known");
    let denied = u.check(spec, &["config", "set", "a", "b"], &mut Vec::new()).expect_err("denied");
    assert_eq!(denied, Denied::Command { name: "config|set".into() });
    assert_eq!(denied.reply_text(), "NOPERM this user has no permissions to run the 'config|set' command");
    assert_verdicts("+client", &[("client id", "ok"), ("client setname x", "ok"), ("client kill 1.2.3.4:5", "ok")]);
    assert_verdicts("+client -client|kill", &[("client id", "ok"), ("client kill 1.2.3.4:5", "cmd")]);
    assert_verdicts("+@all -config", &[("config get x", "cmd"), ("get k", "key")]);
}

#[test]
fn allcommands_nocommands_and_first_args() {
    assert_verdicts("~* allcommands -get", &[("get k", "cmd"), ("set k v", "ok")]);
    assert_verdicts("~* allcommands nocommands +get", &[("get k", "ok"), ("set k v", "cmd")]);
    assert_verdicts("nocommands", &[("auth a b", "ok"), ("hello 3", "ok"), ("ping", "cmd")]);
    assert_verdicts("+select|0", &[("select 0", "ok"), ("select 1", "cmd")]);
    assert_verdicts("+select|0 +select", &[("select 1", "ok")]);
    assert_verdicts("+select|0 -select", &[("select 0", "cmd")]);
    assert_verdicts("+select|0 nocommands", &[("select 0", "cmd")]);
}

#[test]
fn reset_returns_to_a_new_user() {
    let users = Users::parse("user u on >pw ~* &* +@all reset\nuser v on >pw ~* +@all reset on nopass +get\n", table())
        .expect("valid file");
    let u = users.get("u").expect("defined");
    assert!(!u.enabled && users.authenticate("u", b"pw").is_err());
    assert_eq!(verdict(&u, "ping"), "cmd");
    let v = users.get("v").expect("defined");
    assert_eq!((verdict(&v, "get k"), verdict(&v, "publish c m")), ("key", "cmd"));
}

#[test]
fn unrestricted_user_may_do_everything() {
    let u = User::unrestricted("default");
    assert!(u.enabled && u.is_nopass());
    for request in ["flushall", "get k", "publish c m", "psubscribe *", "config set a b", "client kill 1.2.3.4:5"] {
        assert_eq!(verdict(&u, request), "ok", "{request}");
    }
}

#[test]
fn denied_reply_texts_are_redis_7_0s() {
    assert_eq!(verdict(&user("+get"), "get k"), "key");
    let texts = [
        (Denied::Command { name: "get".into() }, "NOPERM this user has no permissions to run the 'get' command"),
        (Denied::Key, "NOPERM this user has no permissions to access one of the keys used as arguments"),
        (Denied::Channel, "NOPERM this user has no permissions to access one of the channels used as arguments"),
    ];
    for (denied, text) in texts {
        assert_eq!(denied.reply_text(), text);
        assert_eq!(denied.clone().worded("app", false).to_string(), text);
    }
}

#[test]
fn denied_reply_texts_from_redis_7_2_on_name_the_user_and_nothing_else() {
    let texts = [
        (
            Denied::Command { name: "client|kill".into() },
            "NOPERM User app has no permissions to run the 'client|kill' command",
        ),
        (Denied::Key, "NOPERM No permissions to access a key"),
        (Denied::Channel, "NOPERM No permissions to access a channel"),
    ];
    for (denied, text) in texts {
        assert_eq!(denied.worded("app", true).to_string(), text);
    }
}

#[test]
fn key_positions_with_access_follow_the_key_spec_flags() {
    let access = |request: &str| {
        let args: Vec<&str> = request.split(' ').collect();
        let mut out = Vec::new();
        table().lookup(&args[..]).expect("known").key_positions_with_access(&args[..], &mut out).expect("keys");
        out
    };
    use KeyAccess::*;
    assert_eq!(access("copy a b"), [(1, Read), (2, Write)]);
    assert_eq!(access("set k v"), [(1, Write)]);
    assert_eq!(access("set k v ex 10 get"), [(1, ReadWrite)]);
    assert_eq!(access("exists a b"), [(1, Metadata), (2, Metadata)]);
    assert_eq!(access("lmove a b left right"), [(1, ReadWrite), (2, Write)]);
    assert_eq!(access("sort k by w_* store d"), [(1, Read), (5, Write)]);
    assert_eq!(access("migrate h 1  0 5 keys a b"), [(7, ReadWrite), (8, ReadWrite)]);
    assert!(access("spublish chan m").is_empty(), "sharded channels are channels to the ACL");
    let mut positions = Vec::new();
    table().lookup(&["spublish", "c", "m"]).expect("known").key_positions(&["spublish", "c", "m"], &mut positions).ok();
    assert_eq!(positions, [1], "routing still sees the channel's slot");
}

#[test]
fn comments_blank_lines_and_quotes() {
    let text = "# users\n\n   \nuser a on \">two words\" '~it\\'s'\r\n  # indented comment\nuser b on \"#x\"x\n";
    let error = load_error(text);
    assert!(error.starts_with("line 6: unbalanced quotes"), "{error}");
    let users = Users::parse(&text[..text.rfind("user b").expect("present")], table()).expect("valid file");
    assert!(users.authenticate("a", b"two words").is_ok());
    let escaped = Users::parse("user c on \">\\x41\\n\" +get", table()).expect("valid file");
    assert!(escaped.authenticate("c", b"A\n").is_ok());
}

#[test]
fn load_errors_name_the_line_and_rule() {
    let cases = [
        ("user u on\nuser v bogus", "line 2: unknown rule 'bogus'"),
        ("user u +gett", "line 1: unknown command 'gett' in rule '+gett'"),
        ("user u -get|x", "line 1: unknown command 'get|x' in rule '-get|x'"),
        ("user u +client|nosuch", "line 1: unknown command 'client|nosuch' in rule '+client|nosuch'"),
        ("user u +@nosuch", "line 1: unknown category 'nosuch' in rule '+@nosuch'"),
        ("user u (~x +get)", "line 1: selectors '(...)' are not supported, in rule '(~x'"),
        ("user u %X~a", "line 1: syntax error in rule '%X~a'"),
        ("user u %~a", "line 1: syntax error in rule '%~a'"),
        ("user u +get|", "line 1: syntax error in rule '+get|'"),
        ("user u +client|kill|x", "line 1: allowing a first argument of a subcommand is not supported"),
        ("user u allkeys ~a", "line 1: key pattern '~a' after 'allkeys'"),
        ("user u &* &a", "line 1: channel pattern '&a' after 'allchannels'"),
        ("user u\n\nuser u", "line 3: user 'u' is already defined on line 1"),
        ("users u on", "line 1: expected 'user NAME RULE...', found 'users'"),
        ("user", "line 1: expected 'user NAME RULE...'"),
        ("user \"a b\" on", "line 1: invalid user name 'a b'"),
    ];
    for (text, expected) in cases {
        let error = load_error(text);
        assert!(error.starts_with(expected), "{text:?}: got '{error}'");
    }
}

#[test]
fn password_errors_do_not_echo_secrets() {
    let short = "#abc123";
    let upper = format!("#{}", sha256_hex("x").to_uppercase());
    for (rule, expected) in [
        (short, "line 1: a password hash ('#' or '!' rule) must be exactly 64 lowercase hexadecimal characters"),
        (upper.as_str(), "line 1: a password hash"),
        ("!abc", "line 1: a password hash"),
        ("<hunter2", "line 1: a '<' or '!' rule removes a password the user does not have"),
    ] {
        let error = load_error(&format!("user u on {rule}"));
        assert!(error.starts_with(expected), "{error}");
        assert!(!error.contains(&rule[1..]), "{error}");
    }
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("users.acl");
    std::fs::write(&path, "user ok on nopass +get\nuser bad +gett\n").expect("write");
    let error = Users::load(&path, table()).expect_err("refused");
    assert!(matches!(error, AclError::Line { line: 2, .. }));
    assert_eq!(error.to_string(), format!("{} line 2: unknown command 'gett' in rule '+gett'", path.display()));
    std::fs::write(&path, "user ok on nopass +get\n").expect("write");
    assert_eq!(Users::load(&path, table()).expect("loads").len(), 1);
    let missing = Users::load(&dir.path().join("missing.acl"), table()).expect_err("no file");
    assert!(matches!(missing, AclError::Read { .. }) && missing.to_string().contains("missing.acl"), "{missing}");
}

/// Users and requests compared with a real Redis 7.0 by `ACL DRYRUN`.
const REDIS_USERS: &[(&str, &str)] = &[
    ("c1", "~app:* &news.* +@read +@write -del +config|get +client -client|kill"),
    ("c2", "%R~r:* %W~w:* ~k* +@all -@dangerous"),
    ("c3", "allkeys allchannels +@all -@dangerous -select +select|0"),
    ("c4", "~[a-c]x ~\\** ~q?z ~{*}* +@read &chan? +publish +subscribe +psubscribe"),
    ("c5", "nocommands +@pubsub resetchannels &chan* %R~*"),
];

const REDIS_CASES: &[(&str, &[&str])] = &[
    ("c1", &["get", "app:1"]),
    ("c1", &["get", "other"]),
    ("c1", &["set", "app:1", "v"]),
    ("c1", &["del", "app:1"]),
    ("c1", &["config", "get", "maxmemory"]),
    ("c1", &["config", "set", "maxmemory", "1"]),
    ("c1", &["client", "id"]),
    ("c1", &["client", "kill", "1.2.3.4:5"]),
    ("c1", &["publish", "news.x", "m"]),
    ("c1", &["mset", "app:1", "v", "other", "v"]),
    ("c2", &["set", "r:1", "v"]),
    ("c2", &["set", "w:1", "v"]),
    ("c2", &["set", "w:1", "v", "get"]),
    ("c2", &["get", "w:1"]),
    ("c2", &["exists", "w:1"]),
    ("c2", &["copy", "r:1", "w:1"]),
    ("c2", &["copy", "w:1", "r:1"]),
    ("c2", &["lmove", "r:1", "w:1", "left", "right"]),
    ("c2", &["sort", "r:1", "store", "w:1"]),
    ("c2", &["bitfield", "w:1", "set", "u8", "0", "1"]),
    ("c2", &["flushall"]),
    ("c2", &["publish", "x", "m"]),
    ("c3", &["select", "0"]),
    ("c3", &["select", "1"]),
    ("c3", &["keys", "*"]),
    ("c3", &["publish", "any", "m"]),
    ("c4", &["get", "ax"]),
    ("c4", &["get", "dx"]),
    ("c4", &["get", "*foo"]),
    ("c4", &["get", "qaz"]),
    ("c4", &["get", "{x}y"]),
    ("c4", &["set", "ax", "v"]),
    ("c4", &["publish", "chan1", "m"]),
    ("c4", &["publish", "chan12", "m"]),
    ("c4", &["subscribe", "chan1", "other"]),
    ("c4", &["psubscribe", "chan?"]),
    ("c4", &["psubscribe", "chan*"]),
    ("c5", &["spublish", "chanx", "m"]),
    ("c5", &["ssubscribe", "foo"]),
    ("c5", &["get", "k"]),
    ("c5", &["unsubscribe", "foo"]),
];

/// A throwaway `redis-server`, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A minimal RESP2 client: replies as "+simple", "-error", ":int" or the bulk's text.
struct Conn(BufReader<TcpStream>);

impl Conn {
    fn call(&mut self, args: &[&[u8]]) -> String {
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg);
            request.extend_from_slice(b"\r\n");
        }
        self.0.get_mut().write_all(&request).expect("write to redis");
        let mut line = String::new();
        self.0.read_line(&mut line).expect("read from redis");
        let line = line.trim_end().to_owned();
        match line.strip_prefix('$').map(|n| n.parse::<usize>().expect("bulk length")) {
            Some(len) => {
                let mut body = vec![0; len + 2];
                self.0.read_exact(&mut body).expect("read bulk");
                String::from_utf8_lossy(&body[..len]).into_owned()
            }
            None => line,
        }
    }
}

fn start_redis() -> Option<(Server, u16)> {
    let port = TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let spawned = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let server = match spawned {
        Ok(child) => Server(child),
        Err(error) => {
            eprintln!("note: skipping the comparison with Redis, cannot start redis-server: {error}");
            return None;
        }
    };
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((server, port));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("note: skipping the comparison with Redis, redis-server did not start");
    None
}

fn connect(port: u16) -> Conn {
    Conn(BufReader::new(TcpStream::connect(("127.0.0.1", port)).expect("connect to redis")))
}

#[test]
fn verdicts_and_texts_agree_with_redis_7_0() {
    let Some((_server, port)) = start_redis() else { return };
    let mut admin = connect(port);
    let info = admin.call(&[b"INFO", b"server"]);
    if !info.contains("redis_version:7.0.") {
        eprintln!("note: skipping the comparison with Redis, redis-server is not 7.0");
        return;
    }
    let mut text = String::new();
    for (name, rules) in REDIS_USERS {
        text.push_str(&format!("user {name} on nopass {rules}\n"));
        let mut setuser: Vec<&[u8]> = vec![b"ACL", b"SETUSER", name.as_bytes(), b"on", b"nopass"];
        setuser.extend(rules.split(' ').map(str::as_bytes));
        assert_eq!(admin.call(&setuser), "+OK", "{rules}");
    }
    // Glob cases through one user per pattern: %R~pattern and GET string.
    let mut cases: Vec<(String, Vec<&[u8]>)> = Vec::new();
    for (i, &(pattern, string, _)) in GLOBS.iter().enumerate() {
        let name = format!("g{i}");
        let rule = [b"%R~".as_slice(), pattern].concat();
        let setuser: [&[u8]; 7] = [b"ACL", b"SETUSER", name.as_bytes(), b"on", b"nopass", &rule, b"+get"];
        assert_eq!(admin.call(&setuser), "+OK");
        text.push_str(&format!("user {name} on nopass \"{}\" +get\n", escape(&rule)));
        cases.push((name, vec![b"get", string]));
    }
    cases
        .extend(REDIS_CASES.iter().map(|(name, args)| (name.to_string(), args.iter().map(|a| a.as_bytes()).collect())));
    let users = Users::parse(&text, table()).expect("the same rules load here");
    for (name, args) in &cases {
        let shown =
            format!("{name}: {}", args.iter().map(|a| String::from_utf8_lossy(a)).collect::<Vec<_>>().join(" "));
        let spec = table().lookup(&args[..]).expect("known command");
        let ours = users.get(name).expect("defined").check(spec, &args[..], &mut Vec::new());
        let mut dryrun: Vec<&[u8]> = vec![b"ACL", b"DRYRUN", name.as_bytes()];
        dryrun.extend(args);
        let theirs = admin.call(&dryrun);
        let expected = match theirs.as_str() {
            "+OK" => None,
            t if t.ends_with("command") => Some(Denied::Command { name: spec.name.clone() }),
            t if t.ends_with("key") => Some(Denied::Key),
            t if t.ends_with("channel") => Some(Denied::Channel),
            other => panic!("{shown}: unexpected DRYRUN reply {other}"),
        };
        assert_eq!(ours.clone().err(), expected, "{shown}: Redis says '{theirs}'");
        if let Err(denied) = ours {
            // Denied commands do not run, so the real reply is safe to fetch.
            let mut client = connect(port);
            assert_eq!(client.call(&[b"AUTH", name.as_bytes(), b"any"]), "+OK");
            assert_eq!(client.call(args), format!("-{}", denied.reply_text()), "{shown}");
        }
    }
    assert_eq!(admin.call(&[b"ACL", b"SETUSER", b"pw", b"on", b">secret", b"+@all"]), "+OK");
    assert_eq!(admin.call(&[b"ACL", b"SETUSER", b"offuser", b"off", b"nopass"]), "+OK");
    let wrongpass = format!("-{}", AuthError::WrongPass.reply_text());
    for (name, password) in [("pw", "wrong"), ("nobody", "x"), ("offuser", "x")] {
        assert_eq!(admin.call(&[b"AUTH", name.as_bytes(), password.as_bytes()]), wrongpass);
    }
}

/// `rule` inside double quotes of an ACL file line.
fn escape(rule: &[u8]) -> String {
    rule.iter()
        .map(|&c| {
            if c.is_ascii_graphic() && c != b'"' && c != b'\\' {
                (c as char).to_string()
            } else {
                format!("\\x{c:02x}")
            }
        })
        .collect()
}
