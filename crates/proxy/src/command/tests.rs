//! Tests of the command table: lookup, arity, handling, key positions (pure and against a real
//! `redis-server`'s `COMMAND GETKEYS`), and learning from a `COMMAND` reply.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis_protocol::resp2::types::OwnedFrame;

use super::*;

fn table() -> CommandTable {
    CommandTable::builtin()
}

fn spec<'t>(table: &'t CommandTable, args: &[&str]) -> &'t CommandSpec {
    table.lookup(args).unwrap_or_else(|| panic!("{args:?} is unknown"))
}

fn key_names<'a>(table: &CommandTable, args: &[&'a str]) -> Result<Vec<&'a str>, KeyError> {
    let mut out = vec![99];
    spec(table, args).key_positions(args, &mut out)?;
    Ok(out.into_iter().map(|i| args[i]).collect())
}

/// Requests whose keys must match what `COMMAND GETKEYS` answers on Redis 7.0, with those keys.
const KEY_CASES: &[(&[&str], &[&str])] = &[
    (&["SET", "k", "v"], &["k"]),
    (&["MGET", "a", "b", "c"], &["a", "b", "c"]),
    (&["MSET", "a", "1", "b", "2"], &["a", "b"]),
    (&["ZUNIONSTORE", "dst", "2", "a", "b", "WEIGHTS", "1", "2"], &["dst", "a", "b"]),
    (&["LMPOP", "2", "a", "b", "LEFT"], &["a", "b"]),
    (&["XREAD", "COUNT", "2", "STREAMS", "s1", "s2", "0", "0"], &["s1", "s2"]),
    (&["XREADGROUP", "GROUP", "g", "c", "STREAMS", "s1", ">"], &["s1"]),
    (&["EVAL", "return 1", "2", "k1", "k2", "a1"], &["k1", "k2"]),
    (&["GEORADIUS", "src", "0", "0", "1", "km", "STORE", "dst"], &["src", "dst"]),
    (&["GEORADIUSBYMEMBER", "src", "m", "1", "km", "STOREDIST", "dst"], &["src", "dst"]),
    (&["SORT", "src", "BY", "x", "STORE", "dst"], &["src", "dst"]),
    (&["SORT", "src", "store", "d1", "LIMIT", "0", "1", "STORE", "d2"], &["src", "d2"]),
    (&["SORT_RO", "src", "BY", "x"], &["src"]),
    (&["MIGRATE", "h", "1", "", "0", "5000", "KEYS", "a", "b"], &["a", "b"]),
    (&["MIGRATE", "h", "1", "", "0", "5000", "COPY", "AUTH", "keys", "KEYS", "a"], &["a"]),
    (&["MIGRATE", "h", "1", "k", "0", "5000"], &["k"]),
    (&["OBJECT", "ENCODING", "k"], &["k"]),
    (&["XINFO", "STREAM", "s"], &["s"]),
    (&["BITOP", "AND", "dst", "a", "b"], &["dst", "a", "b"]),
    (&["BLMPOP", "0", "2", "a", "b", "LEFT"], &["a", "b"]),
    (&["ZINTERCARD", "2", "a", "b", "LIMIT", "1"], &["a", "b"]),
    (&["BLPOP", "a", "b", "0"], &["a", "b"]),
    (&["MEMORY", "USAGE", "k"], &["k"]),
    (&["EVAL", "return 1", "0"], &[]),
    (&["PING"], &[]),
];

#[test]
fn key_positions_match_redis_getkeys_examples() {
    let t = table();
    for (args, keys) in KEY_CASES {
        assert_eq!(key_names(&t, args).as_deref(), Ok(*keys), "{args:?}");
    }
}

#[test]
fn key_positions_are_in_request_order_even_when_specs_are_not() {
    // GEORADIUS lists its STORE spec before STOREDIST; Redis returns spec order, we request order.
    let t = table();
    let args = ["GEORADIUS", "src", "0", "0", "1", "km", "STOREDIST", "d2", "STORE", "d"];
    let mut out = Vec::new();
    spec(&t, &args).key_positions(&args, &mut out).unwrap();
    assert_eq!(out, [1, 7, 9]);
}

#[test]
fn sharded_channels_are_routed_like_keys() {
    let t = table();
    assert_eq!(key_names(&t, &["SPUBLISH", "ch", "msg"]), Ok(vec!["ch"]));
    assert_eq!(key_names(&t, &["SSUBSCRIBE", "a", "b"]), Ok(vec!["a", "b"]));
    assert_eq!(key_names(&t, &["PUBLISH", "ch", "msg"]), Ok(vec![]));
}

#[test]
fn short_or_mismatched_requests_yield_fewer_keys_not_errors() {
    let t = table();
    assert_eq!(key_names(&t, &["XREAD", "COUNT", "1", "STREAMS", "a"]), Ok(vec![]));
    assert_eq!(key_names(&t, &["GEORADIUS", "src", "0", "0", "1", "km", "STORE"]), Ok(vec!["src"]));
    assert_eq!(key_names(&t, &["MIGRATE", "h", "1", "k", "0", "5000", "KEYS", "a"]), Ok(vec![]));
    assert_eq!(key_names(&t, &["GET"]), Ok(vec![]));
}

fn numkeys_error(args: &[&str]) -> (usize, NumKeysProblem, String) {
    match key_names(&table(), args) {
        Err(e @ KeyError::BadNumKeys { index, problem, .. }) => (index, problem, e.to_string()),
        other => panic!("{args:?}: expected a numkeys error, got {other:?}"),
    }
}

#[test]
fn bad_numkeys_is_an_error_worded_like_redis() {
    use NumKeysProblem::*;
    let too_many = "Number of keys can't be greater than number of args".to_owned();
    assert_eq!(numkeys_error(&["EVAL", "s", "5", "a"]), (2, TooMany, too_many));
    let negative = "Number of keys can't be negative".to_owned();
    assert_eq!(numkeys_error(&["EVALSHA", "s", "-1", "a"]), (2, Negative, negative));
    let not_int = "value is not an integer or out of range".to_owned();
    assert_eq!(numkeys_error(&["FCALL", "f", "x", "a"]), (2, NotAnInteger, not_int.clone()));
    assert_eq!(numkeys_error(&["EVAL", "s", "01", "a"]), (2, NotAnInteger, not_int.clone()));
    assert_eq!(numkeys_error(&["EVAL", "s", "+1", "a"]), (2, NotAnInteger, not_int.clone()));
    assert_eq!(numkeys_error(&["EVAL", "s", "99999999999999999999", "a"]), (2, NotAnInteger, not_int));
    let at_least = "at least 1 input key is needed for 'zunionstore' command".to_owned();
    assert_eq!(numkeys_error(&["ZUNIONSTORE", "d", "0", "a"]), (2, Zero, at_least));
    assert_eq!(numkeys_error(&["ZUNIONSTORE", "d", "2", "a"]), (2, TooMany, "syntax error".to_owned()));
    let positive = "numkeys should be greater than 0".to_owned();
    assert_eq!(numkeys_error(&["LMPOP", "0", "a", "LEFT"]), (1, Zero, positive.clone()));
    assert_eq!(numkeys_error(&["BZMPOP", "0", "0", "a", "MIN"]), (2, Zero, positive));
    assert_eq!(numkeys_error(&["LMPOP", "3", "a", "LEFT"]), (1, TooMany, "syntax error".to_owned()));
}

#[test]
fn key_positions_clears_the_output_first() {
    let t = table();
    let mut out = vec![7, 8, 9];
    spec(&t, &["PING"]).key_positions(&["PING"], &mut out).unwrap();
    assert!(out.is_empty());
}

#[test]
fn args_work_for_owned_and_borrowed_arguments() {
    let t = table();
    let owned: Vec<Vec<u8>> = vec![b"mget".to_vec(), b"a".to_vec(), b"b".to_vec()];
    let borrowed: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
    let bytes: Vec<bytes::Bytes> = owned.iter().map(|a| bytes::Bytes::from(a.clone())).collect();
    let mut out = Vec::new();
    spec(&t, &["mget"]).key_positions(&owned, &mut out).unwrap();
    assert_eq!(out, [1, 2]);
    assert_eq!(t.lookup(borrowed.as_slice()).map(|s| s.name.as_str()), Some("mget"));
    assert_eq!(t.lookup(&bytes).map(|s| s.name.as_str()), Some("mget"));
}

#[test]
fn lookup_is_case_insensitive() {
    let t = table();
    for name in ["get", "GET", "gEt"] {
        assert_eq!(spec(&t, &[name, "k"]).name, "get");
    }
    assert!(t.lookup(&["nosuchcommand"]).is_none());
    assert!(t.lookup(&[] as &[&str]).is_none());
    assert!(t.lookup(&["g".repeat(MAX_NAME + 1)]).is_none());
}

#[test]
fn lookup_finds_subcommands_and_falls_back_to_the_container() {
    let t = table();
    assert_eq!(spec(&t, &["CLIENT", "setname", "x"]).name, "client|setname");
    assert_eq!(spec(&t, &["config", "GET", "maxmemory"]).name, "config|get");
    assert_eq!(spec(&t, &["object", "Encoding", "k"]).name, "object|encoding");
    assert_eq!(spec(&t, &["XINFO", "STREAM", "s"]).name, "xinfo|stream");
    assert_eq!(spec(&t, &["client", "bogus"]).name, "client");
    assert_eq!(spec(&t, &["client"]).name, "client");
    // A plain command's arguments are never mistaken for subcommands.
    assert_eq!(spec(&t, &["get", "setname"]).name, "get");
}

#[test]
fn arity_follows_redis_conventions() {
    let t = table();
    let get = spec(&t, &["get"]);
    assert_eq!(get.arity, 2);
    assert!(get.arity_ok(2) && !get.arity_ok(1) && !get.arity_ok(3));
    let set = spec(&t, &["set"]);
    assert_eq!(set.arity, -3);
    assert!(!set.arity_ok(2) && set.arity_ok(3) && set.arity_ok(6));
    assert_eq!(spec(&t, &["client", "setname"]).arity, 3);
    assert_eq!(spec(&t, &["config", "get"]).arity, -3);
    assert_eq!(spec(&t, &["object", "encoding"]).arity, 3);
}

#[test]
fn table_carries_flags_and_acl_categories() {
    let t = table();
    let get = spec(&t, &["get"]);
    assert!(get.flags.contains(CommandFlags::READONLY | CommandFlags::FAST) && !get.is_write());
    assert_eq!(get.acl_categories, ["read", "string", "fast"]);
    assert!(spec(&t, &["set"]).is_write());
    assert!(spec(&t, &["zunionstore"]).flags.contains(CommandFlags::MOVABLE_KEYS));
    assert!(spec(&t, &["eval"]).flags.contains(CommandFlags::NO_MANDATORY_KEYS));
    let set_spec = &spec(&t, &["set"]).key_specs[0];
    assert!(set_spec.flags.contains(KeySpecFlags::RW | KeySpecFlags::VARIABLE_FLAGS));
    assert_eq!(set_spec.begin_search, BeginSearch::Index(1));
    assert_eq!(set_spec.find_keys, FindKeys::Range { lastkey: 0, step: 1, limit: 0 });
    assert!(t.len() > 360 && !t.is_empty() && t.iter().count() == t.len());
    assert!(t.iter().all(|s| s.name == s.name.to_ascii_lowercase()));
}

fn handling(t: &CommandTable, args: &[&str]) -> Handling {
    spec(t, args).handling
}

#[test]
fn handling_overrides_are_applied() {
    use Handling::*;
    use Merge::*;
    use StatefulKind::*;
    let t = table();
    let cases: &[(&[&str], Handling)] = &[
        (&["mget"], Split { merge: ArrayInKeyOrder, key_step: 1 }),
        (&["mset"], Split { merge: AllOk, key_step: 2 }),
        (&["del"], Split { merge: SumIntegers, key_step: 1 }),
        (&["unlink"], Split { merge: SumIntegers, key_step: 1 }),
        (&["exists"], Split { merge: SumIntegers, key_step: 1 }),
        (&["touch"], Split { merge: SumIntegers, key_step: 1 }),
        (&["dbsize"], FanOut(SumIntegers)),
        (&["flushall"], FanOut(AllOk)),
        (&["flushdb"], FanOut(AllOk)),
        (&["script", "flush"], FanOut(AllOk)),
        (&["script", "load"], Forward),
        (&["get"], Forward),
        (&["time"], Forward),
        (&["publish"], Forward),
        (&["spublish"], Forward),
        (&["pubsub", "channels"], Forward),
        (&["cluster", "slots"], Forward),
        (&["cluster", "countkeysinslot"], Forward),
        (&["config", "get"], Forward),
        (&["ping"], Local),
        (&["info"], Local),
        (&["command"], Local),
        (&["command", "getkeys"], Local),
        (&["command", "docs"], Local),
        (&["client", "setname"], Local),
        (&["client", "setinfo"], Local),
        (&["client", "no-touch"], Local),
        (&["client", "no-evict"], Local),
        (&["acl", "whoami"], Local),
        (&["multi"], Stateful(Transaction)),
        (&["watch"], Stateful(Transaction)),
        (&["ssubscribe"], Stateful(PubSub)),
        (&["punsubscribe"], Stateful(PubSub)),
        (&["blpop"], Stateful(Blocking)),
        (&["bzmpop"], Stateful(Blocking)),
        (&["blmove"], Stateful(Blocking)),
        (&["wait"], Stateful(Blocking)),
        (&["waitaof"], Stateful(Blocking)),
        (&["xread"], Stateful(Blocking)),
        (&["xreadgroup"], Stateful(Blocking)),
    ];
    for (args, expected) in cases {
        assert_eq!(handling(&t, args), *expected, "{args:?}");
    }
}

#[test]
fn dangerous_commands_are_refused_with_a_reason() {
    let t = table();
    let refused: &[&[&str]] = &[
        &["keys"], &["scan"], &["randomkey"], &["monitor"], &["sync"], &["psync"], &["replconf"],
        &["shutdown"], &["debug"], &["replicaof"], &["slaveof"], &["failover"], &["save"], &["bgsave"],
        &["bgrewriteaof"], &["swapdb"], &["move"], &["config", "set"], &["config", "resetstat"],
        &["config", "rewrite"], &["acl"], &["acl", "setuser"], &["acl", "list"], &["module", "load"],
        &["latency", "latest"], &["slowlog", "get"], &["client", "kill"], &["client", "list"],
        &["client", "pause"], &["client", "unpause"], &["client", "tracking"], &["client", "caching"],
        &["client", "getredir"], &["client", "trackinginfo"], &["client", "unblock"], &["cluster"],
        &["cluster", "meet"], &["cluster", "setslot"], &["cluster", "getkeysinslot"],
    ];
    for args in refused {
        match handling(&t, args) {
            Handling::Refuse(reason) => assert!(reason.len() > 10, "{args:?}: {reason}"),
            other => panic!("{args:?} should be refused, is {other:?}"),
        }
    }
    assert_eq!(handling(&t, &["cluster", "addslots"]), Handling::Refuse(TOPOLOGY));
}

#[test]
fn every_cluster_acl_and_command_subcommand_is_decided() {
    let t = table();
    let forwarded = ["info", "keyslot", "slots", "shards", "nodes", "myid", "countkeysinslot"];
    for s in t.iter() {
        match s.name.split_once('|') {
            Some(("cluster", sub)) if forwarded.contains(&sub) => assert_eq!(s.handling, Handling::Forward),
            Some(("cluster", _)) => assert!(matches!(s.handling, Handling::Refuse(_)), "{}", s.name),
            Some(("acl", "whoami")) | Some(("command", _)) => assert_eq!(s.handling, Handling::Local),
            Some(("acl", _)) => assert!(matches!(s.handling, Handling::Refuse(_)), "{}", s.name),
            _ if s.flags.contains(CommandFlags::BLOCKING) => {
                assert_eq!(s.handling, Handling::Stateful(StatefulKind::Blocking), "{}", s.name)
            }
            _ => {}
        }
    }
}

fn bulk(s: &str) -> OwnedFrame {
    OwnedFrame::BulkString(s.as_bytes().to_vec())
}

fn status(s: &str) -> OwnedFrame {
    OwnedFrame::SimpleString(s.as_bytes().to_vec())
}

fn array(items: Vec<OwnedFrame>) -> OwnedFrame {
    OwnedFrame::Array(items)
}

fn statuses(items: &[&str]) -> OwnedFrame {
    array(items.iter().map(|s| status(s)).collect())
}

/// A Redis 7 style `COMMAND` entry (`first/last/step` 1,1,1) with the given key specs and subcommands.
fn command_entry(name: &str, arity: i64, flags: &[&str], specs: Vec<OwnedFrame>, subs: Vec<OwnedFrame>) -> OwnedFrame {
    use OwnedFrame::Integer;
    let acl = statuses(&["@read", "@slow"]);
    array(vec![bulk(name), Integer(arity), statuses(flags), Integer(1), Integer(1), Integer(1), acl, array(vec![]), array(specs), array(subs)])
}

/// A RESP2 key spec: flags, begin_search index, find_keys range.
fn index_range_spec(index: i64, lastkey: i64) -> OwnedFrame {
    use OwnedFrame::Integer;
    let begin = array(vec![bulk("type"), bulk("index"), bulk("spec"), array(vec![bulk("index"), Integer(index)])]);
    let range = array(vec![bulk("lastkey"), Integer(lastkey), bulk("keystep"), Integer(1), bulk("limit"), Integer(0)]);
    let find = array(vec![bulk("type"), bulk("range"), bulk("spec"), range]);
    let notes = bulk("notes");
    array(vec![notes.clone(), notes, bulk("flags"), statuses(&["RO", "access"]), bulk("begin_search"), begin, bulk("find_keys"), find])
}

#[test]
fn learns_a_module_command_with_key_specs() {
    let mut t = table();
    let before = t.len();
    let reply = array(vec![command_entry("JSON.GET", -2, &["readonly"], vec![index_range_spec(1, 0)], vec![])]);
    assert_eq!(t.learn_from_command_reply(&reply), 1);
    assert_eq!(t.len(), before + 1);
    let json_get = spec(&t, &["json.get", "doc", "$.a"]);
    assert_eq!((json_get.name.as_str(), json_get.arity, json_get.handling), ("json.get", -2, Handling::Forward));
    assert_eq!(json_get.acl_categories, ["read", "slow"]);
    assert_eq!(json_get.key_specs[0].flags, KeySpecFlags::RO | KeySpecFlags::ACCESS);
    assert_eq!(key_names(&t, &["JSON.GET", "doc", "$.a"]), Ok(vec!["doc"]));
    // Learning again adds nothing: known commands are kept.
    assert_eq!(t.learn_from_command_reply(&reply), 0);
}

#[test]
fn learns_the_old_first_last_step_form() {
    use OwnedFrame::Integer;
    let mut t = table();
    let old = |name: &str, first, last, step| {
        array(vec![bulk(name), Integer(-2), statuses(&["write"]), Integer(first), Integer(last), Integer(step)])
    };
    let reply = array(vec![old("mod.mset", 1, -1, 2), old("mod.keyless", 0, 0, 0), old("mod.two", 2, 3, 1)]);
    assert_eq!(t.learn_from_command_reply(&reply), 3);
    assert_eq!(key_names(&t, &["mod.mset", "a", "1", "b", "2"]), Ok(vec!["a", "b"]));
    assert_eq!(key_names(&t, &["mod.keyless", "a"]), Ok(vec![]));
    assert_eq!(key_names(&t, &["mod.two", "x", "a", "b", "y"]), Ok(vec!["a", "b"]));
    assert!(spec(&t, &["mod.mset"]).is_write());
}

#[test]
fn learned_commands_keep_the_proxys_rules() {
    let mut t = table();
    let sub = command_entry("client|frobnicate", 3, &["admin"], vec![], vec![]);
    let reply = array(vec![
        command_entry("get", 99, &[], vec![], vec![]),
        command_entry("client", -2, &[], vec![], vec![sub]),
        command_entry("mod.admin", 1, &["admin"], vec![], vec![]),
        command_entry("mod.block", -2, &["blocking"], vec![index_range_spec(1, 0)], vec![]),
        status("not a command entry"),
        array(vec![bulk("truncated")]),
    ]);
    assert_eq!(t.learn_from_command_reply(&reply), 3);
    assert_eq!(spec(&t, &["get"]).arity, 2);
    assert_eq!(handling(&t, &["client", "frobnicate", "x"]), Handling::Refuse(UNKNOWN_ADMIN));
    assert_eq!(handling(&t, &["mod.admin"]), Handling::Refuse(UNKNOWN_ADMIN));
    assert_eq!(handling(&t, &["mod.block", "k"]), Handling::Stateful(StatefulKind::Blocking));
    assert_eq!(t.learn_from_command_reply(&status("OK")), 0);
}

// ---- Against a real redis-server -------------------------------------------------------------

/// A throwaway `redis-server` on a free port, killed on drop.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Option<Server> {
        let dir = tempfile::tempdir().ok()?;
        let port = TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--daemonize", "no"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let server = Server { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    fn query(&self, args: &[&str]) -> OwnedFrame {
        let mut conn = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            request.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        conn.write_all(&request).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        loop {
            if let Some((frame, _)) = redis_protocol::resp2::decode::decode(&buf).unwrap() {
                return frame;
            }
            let n = conn.read(&mut chunk).unwrap();
            assert!(n > 0, "redis-server closed the connection");
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn real_server() -> Option<Server> {
    let server = Server::start();
    if server.is_none() {
        println!("note: redis-server is not installed; skipping the comparison with a real server");
    }
    server
}

#[test]
fn key_positions_agree_with_command_getkeys_of_a_real_server() {
    let Some(server) = real_server() else { return };
    let t = table();
    for (args, _) in KEY_CASES {
        let reply = server.query(&[&["COMMAND", "GETKEYS"], *args].concat());
        let redis: Vec<&str> = match &reply {
            OwnedFrame::Array(keys) => keys.iter().map(|k| std::str::from_utf8(keys::text(k).unwrap()).unwrap()).collect(),
            // Keyless commands: "The command has no key arguments".
            OwnedFrame::Error(_) => vec![],
            other => panic!("{args:?}: unexpected reply {other:?}"),
        };
        assert_eq!(key_names(&t, args).unwrap(), redis, "{args:?}");
    }
}

#[test]
fn numkeys_errors_agree_with_a_real_server() {
    let Some(server) = real_server() else { return };
    let cases: &[&[&str]] = &[
        &["EVAL", "return 1", "5", "a"],
        &["EVAL", "return 1", "-1", "a"],
        &["EVAL", "return 1", "x", "a"],
        &["ZUNIONSTORE", "d", "0", "a"],
        &["ZUNIONSTORE", "d", "2", "a"],
        &["ZINTERCARD", "x", "a"],
        &["ZDIFF", "-1", "a"],
        &["LMPOP", "0", "a", "LEFT"],
        &["LMPOP", "3", "a", "LEFT"],
        &["SINTERCARD", "0", "a"],
        &["SINTERCARD", "3", "a"],
        &["BZMPOP", "0", "0", "a", "MIN"],
        &["BLMPOP", "0", "3", "a", "LEFT"],
    ];
    for args in cases {
        let OwnedFrame::Error(redis) = server.query(args) else { panic!("{args:?} did not fail") };
        assert_eq!(format!("ERR {}", numkeys_error(args).2), redis, "{args:?}");
    }
}

#[test]
fn learning_a_real_command_reply_reproduces_the_builtin_table() {
    let Some(server) = real_server() else { return };
    let reply = server.query(&["COMMAND"]);
    let builtin = table();
    assert_eq!(builtin.clone().learn_from_command_reply(&reply), 0, "the generated table is complete");
    let mut learned = CommandTable::default();
    assert_eq!(learned.learn_from_command_reply(&reply), builtin.len() - table::SUPPLEMENT.len());
    for s in learned.iter() {
        let args: Vec<&str> = s.name.split('|').collect();
        let b = spec(&builtin, &args);
        assert_eq!((&b.name, b.arity, b.flags, &b.acl_categories, &b.key_specs), (&s.name, s.arity, s.flags, &s.acl_categories, &s.key_specs));
    }
}
