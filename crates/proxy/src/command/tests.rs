//! Tests of the command table: lookup, arity, handling, key positions (pure and against a real
//! `redis-server`'s `COMMAND GETKEYS`), and learning from a `COMMAND` reply.
//!
//! A little over ~600 lines: one test per table property, each short, against the one table.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis_protocol::resp2::types::OwnedFrame;

use super::handling::{TOPOLOGY, UNKNOWN_ADMIN};
use super::*;

fn table() -> CommandTable {
    CommandTable::builtin()
}

/// A request written as in `redis-cli` but without quoting: one space between arguments, and `""`
/// for an empty argument.
fn argv(line: &str) -> Vec<&str> {
    line.split(' ').map(|a| if a == "\"\"" { "" } else { a }).collect()
}

fn spec<'t>(table: &'t CommandTable, args: &[&str]) -> &'t CommandSpec {
    table.lookup(args).unwrap_or_else(|| panic!("{args:?} is unknown"))
}

fn key_names<'a>(table: &CommandTable, line: &'a str) -> Result<Vec<&'a str>, KeyError> {
    let args = argv(line);
    let mut out = vec![99];
    spec(table, &args).key_positions(&args, &mut out)?;
    Ok(out.into_iter().map(|i| args[i]).collect())
}

/// Requests whose keys must match what `COMMAND GETKEYS` answers on Redis 7.0, with those keys.
const KEY_CASES: &[(&str, &str)] = &[
    ("SET k v", "k"),
    ("MGET a b c", "a b c"),
    ("MSET a 1 b 2", "a b"),
    ("ZUNIONSTORE dst 2 a b WEIGHTS 1 2", "dst a b"),
    ("LMPOP 2 a b LEFT", "a b"),
    ("XREAD COUNT 2 STREAMS s1 s2 0 0", "s1 s2"),
    ("XREADGROUP GROUP g c STREAMS s1 >", "s1"),
    ("EVAL script 2 k1 k2 a1", "k1 k2"),
    ("GEORADIUS src 0 0 1 km STORE dst", "src dst"),
    ("GEORADIUSBYMEMBER src m 1 km STOREDIST dst", "src dst"),
    ("SORT src BY x STORE dst", "src dst"),
    ("SORT src store d1 LIMIT 0 1 STORE d2", "src d2"),
    ("SORT_RO src BY x", "src"),
    ("MIGRATE h 1 \"\" 0 5000 KEYS a b", "a b"),
    ("MIGRATE h 1 \"\" 0 5000 COPY AUTH keys KEYS a", "a"),
    ("MIGRATE h 1 k 0 5000", "k"),
    ("OBJECT ENCODING k", "k"),
    ("XINFO STREAM s", "s"),
    ("BITOP AND dst a b", "dst a b"),
    ("BLMPOP 0 2 a b LEFT", "a b"),
    ("ZINTERCARD 2 a b LIMIT 1", "a b"),
    ("BLPOP a b 0", "a b"),
    ("MEMORY USAGE k", "k"),
    ("EVAL script 0", ""),
    ("PING", ""),
];

fn expected_keys(keys: &str) -> Vec<&str> {
    keys.split_whitespace().collect()
}

#[test]
fn key_positions_match_redis_getkeys_examples() {
    let t = table();
    for (line, keys) in KEY_CASES {
        assert_eq!(key_names(&t, line), Ok(expected_keys(keys)), "{line}");
    }
}

/// `COMMAND GETKEYS <line>` and Redis 7.0's answer: the keys, `*0` for an empty list, or the error.
const GETKEYS_CASES: &[(&str, &str)] = &[
    ("GET k", "k"),
    ("SET k v GET", "k"),
    ("LMOVE a a LEFT RIGHT", "a a"),
    ("MGET a b a", "a b a"),
    ("GEORADIUS g 0 0 1 km STOREDIST e STORE d", "g d e"),
    ("ZUNIONSTORE d 2 a b WEIGHTS 1 2", "d a b"),
    ("SORT s LIMIT 0 1 GET store STORE d", "s d"),
    ("MIGRATE h 1 \"\" 0 5000 AUTH2 u p KEYS a b", "a b"),
    ("MIGRATE h 1 k 0 5000 KEYS a", "ERR Invalid arguments specified for command"),
    ("XREAD COUNT 1 STREAMS a b 0 0", "a b"),
    ("XREAD STREAMS a b 0", "a"),
    ("XREAD COUNT 1 x", "ERR Invalid arguments specified for command"),
    ("SPUBLISH ch m", "ERR The command has no key arguments"),
    ("SUNSUBSCRIBE ch", "ERR The command has no key arguments"),
    ("PING x", "ERR The command has no key arguments"),
    ("OBJECT HELP", "ERR The command has no key arguments"),
    ("OBJECT NOSUCH k", "ERR Invalid command specified"),
    ("NOSUCH k", "ERR Invalid command specified"),
    ("GET a b", "ERR Invalid number of arguments specified for command"),
    ("COMMAND GETKEYS GET", "ERR The command has no key arguments"),
    ("EVAL s 0", "*0"),
    ("EVAL s x", "*0"),
    ("EVAL s 2 k", "*0"),
    ("EVAL s -1", "*0"),
    ("EVAL s 02 k1 k2", "k1 k2"),
    ("FCALL f 1 k", "k"),
    ("ZUNIONSTORE d 0 a", "ERR Invalid arguments specified for command"),
    ("ZUNIONSTORE d 3 a b", "ERR Invalid arguments specified for command"),
    ("ZUNIONSTORE d 02 a b", "a b d"),
    ("ZINTERCARD 0 a", "ERR Invalid arguments specified for command"),
    ("LMPOP x a LEFT", "ERR Invalid arguments specified for command"),
    ("LMPOP 2 a b LEFT", "a b"),
    ("BLMPOP 0 5 a LEFT", "ERR Invalid arguments specified for command"),
    ("SINTERCARD +1 a", "a"),
];

/// What `command_getkeys` answers for `line`, written as in [`GETKEYS_CASES`].
fn getkeys_answer(t: &CommandTable, line: &str) -> String {
    let args = argv(line);
    match t.command_getkeys(&args) {
        Ok(keys) if keys.is_empty() => "*0".to_owned(),
        Ok(keys) => keys.iter().map(|&i| args[i]).collect::<Vec<_>>().join(" "),
        Err(error) => format!("ERR {error}"),
    }
}

#[test]
fn command_getkeys_answers_as_redis() {
    let t = table();
    for (line, expected) in GETKEYS_CASES {
        assert_eq!(getkeys_answer(&t, line), *expected, "{line}");
    }
    // Learned commands answer like built-in ones; an empty request is no command.
    assert_eq!(t.command_getkeys(&[] as &[&str]), Err(GetKeysError::InvalidCommand));
}

#[test]
fn key_positions_are_in_request_order_even_when_specs_are_not() {
    // GEORADIUS lists its STORE spec before STOREDIST; Redis returns spec order, we request order.
    let t = table();
    let args = argv("GEORADIUS src 0 0 1 km STOREDIST d2 STORE d");
    let mut out = Vec::new();
    spec(&t, &args).key_positions(&args, &mut out).unwrap();
    assert_eq!(out, [1, 7, 9]);
}

#[test]
fn sharded_channels_are_routed_like_keys() {
    let t = table();
    assert_eq!(key_names(&t, "SPUBLISH ch msg"), Ok(vec!["ch"]));
    assert_eq!(key_names(&t, "SSUBSCRIBE a b"), Ok(vec!["a", "b"]));
    assert_eq!(key_names(&t, "PUBLISH ch msg"), Ok(vec![]));
}

#[test]
fn short_or_mismatched_requests_yield_fewer_keys_not_errors() {
    let t = table();
    assert_eq!(key_names(&t, "XREAD COUNT 1 STREAMS a"), Ok(vec![]));
    assert_eq!(key_names(&t, "GEORADIUS src 0 0 1 km STORE"), Ok(vec!["src"]));
    assert_eq!(key_names(&t, "MIGRATE h 1 k 0 5000 KEYS a"), Ok(vec![]));
    assert_eq!(key_names(&t, "GET"), Ok(vec![]));
}

const TOO_MANY: &str = "Number of keys can't be greater than number of args";
const NEGATIVE: &str = "Number of keys can't be negative";
const NOT_INTEGER: &str = "value is not an integer or out of range";
const POSITIVE: &str = "numkeys should be greater than 0";
const SYNTAX: &str = "syntax error";
const AT_LEAST_ZUNIONSTORE: &str = "at least 1 input key is needed for 'zunionstore' command";
const AT_LEAST_ZDIFF: &str = "at least 1 input key is needed for 'zdiff' command";

/// Requests with a bad numkeys: argv index of the count, the problem, and Redis' message.
const NUMKEYS_CASES: &[(&str, usize, NumKeysProblem, &str)] = {
    use NumKeysProblem::*;
    &[
        ("EVAL s 5 a", 2, TooMany, TOO_MANY),
        ("EVAL s -1 a", 2, Negative, NEGATIVE),
        ("EVAL s x a", 2, NotAnInteger, NOT_INTEGER),
        ("EVAL s 01 a", 2, NotAnInteger, NOT_INTEGER),
        ("EVAL s +1 a", 2, NotAnInteger, NOT_INTEGER),
        ("EVAL s 99999999999999999999 a", 2, NotAnInteger, NOT_INTEGER),
        ("ZUNIONSTORE d 0 a", 2, Zero, AT_LEAST_ZUNIONSTORE),
        ("ZUNIONSTORE d 2 a", 2, TooMany, SYNTAX),
        ("ZINTERCARD x a", 1, NotAnInteger, NOT_INTEGER),
        ("ZDIFF -1 a", 1, Negative, AT_LEAST_ZDIFF),
        ("LMPOP 0 a LEFT", 1, Zero, POSITIVE),
        ("LMPOP 3 a LEFT", 1, TooMany, SYNTAX),
        ("SINTERCARD 0 a", 1, Zero, POSITIVE),
        ("SINTERCARD 3 a", 1, TooMany, TOO_MANY),
        ("BZMPOP 0 0 a MIN", 2, Zero, POSITIVE),
        ("BLMPOP 0 3 a LEFT", 2, TooMany, SYNTAX),
    ]
};

fn numkeys_error(line: &str) -> (usize, NumKeysProblem, String) {
    match key_names(&table(), line) {
        Err(e @ KeyError::BadNumKeys { index, problem, .. }) => (index, problem, e.to_string()),
        other => panic!("{line}: expected a numkeys error, got {other:?}"),
    }
}

#[test]
fn bad_numkeys_is_an_error_worded_like_redis() {
    for &(line, index, problem, message) in NUMKEYS_CASES {
        assert_eq!(numkeys_error(line), (index, problem, message.to_owned()), "{line}");
    }
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
    let name = |s: Option<&CommandSpec>| s.map(|s| s.name.clone());
    assert_eq!(name(t.lookup(borrowed.as_slice())), Some("mget".to_owned()));
    assert_eq!(name(t.lookup(&bytes)), Some("mget".to_owned()));
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
fn lookup_finds_subcommands_and_the_container_alone() {
    let t = table();
    let name = |line: &str| spec(&t, &argv(line)).name.clone();
    assert_eq!(name("CLIENT setname x"), "client|setname");
    assert_eq!(name("config GET maxmemory"), "config|get");
    assert_eq!(name("object Encoding k"), "object|encoding");
    assert_eq!(name("XINFO STREAM s"), "xinfo|stream");
    assert_eq!(name("client"), "client");
    // An unknown subcommand is no command at all, as in Redis' lookupCommand.
    assert!(t.lookup(&argv("client bogus")).is_none());
    assert!(t.is_container(b"CLIENT") && !t.is_container(b"get"));
    // A plain command's arguments are never mistaken for subcommands.
    assert_eq!(name("get setname"), "get");
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
    let has = |name, flag| spec(&t, &[name]).flags.contains(flag);
    assert!(has("get", CommandFlags::READONLY | CommandFlags::FAST) && !has("get", CommandFlags::WRITE));
    assert!(has("zunionstore", CommandFlags::MOVABLE_KEYS));
    assert!(has("eval", CommandFlags::NO_MANDATORY_KEYS));
    assert!(spec(&t, &["set"]).is_write() && !spec(&t, &["get"]).is_write());
    assert_eq!(spec(&t, &["get"]).acl_categories, ["read", "string", "fast"]);
    let set_spec = &spec(&t, &["set"]).key_specs[0];
    let flags = KeySpecFlags::RW | KeySpecFlags::VARIABLE_FLAGS;
    assert!(set_spec.flags.contains(flags));
    assert_eq!(set_spec.begin_search, BeginSearch::Index(1));
    let range = FindKeys::Range { lastkey: 0, step: 1, limit: 0 };
    assert_eq!(set_spec.find_keys, range);
    assert!(t.len() > 360 && !t.is_empty() && t.iter().count() == t.len());
    assert!(t.iter().all(|s| s.name == s.name.to_ascii_lowercase()));
}

fn handling(t: &CommandTable, line: &str) -> Handling {
    spec(t, &argv(line)).handling.clone()
}

#[test]
fn handling_overrides_are_applied() {
    use Handling::*;
    use Merge::*;
    use StatefulKind::*;
    let split = |merge, key_step| Split { merge, key_step };
    let t = table();
    let cases = [
        (split(ArrayInKeyOrder, 1), "mget"),
        (split(AllOk, 2), "mset"),
        (split(SumIntegers, 1), "del, unlink, exists, touch"),
        (FanOut(SumIntegers), "dbsize"),
        (FanOut(AllOk), "flushall, flushdb, script flush, function delete, function flush, function restore"),
        (FanOut(SameReply), "script load, function load"),
        (FanOut(AnyOk), "script kill, function kill"),
        (FanOut(ConcatArrays), "keys"),
        (FanOut(UnionArrays), "pubsub shardchannels"),
        (FanOut(SumPairs), "pubsub shardnumsub"),
        // The pub/sub home answers these (router::PUBSUB_HOME_SLOT).
        (Forward, "pubsub channels, pubsub numsub, pubsub numpat"),
        (Forward, "get, time, publish, spublish, config help, lastsave"),
        (Forward, "slowlog help, latency help, memory help, memory usage"),
        (Forward, "function list, function dump, script help, pubsub help"),
        (FanOut(FunctionStats), "function stats"),
        (Forward, "cluster slots, cluster countkeysinslot, cluster keyslot"),
        (Local(LocalKind::Echo), "ping, echo"),
        (Local(LocalKind::Connection), "info, command, command getkeys, command docs, acl whoami"),
        (Local(LocalKind::Connection), "client setname, client setinfo, client no-touch, client no-evict"),
        (Local(LocalKind::Scan), "scan"),
        (Local(LocalKind::RandomKey), "randomkey"),
        (Stateful(Transaction(TransactionStep::Multi)), "multi"),
        (Stateful(Transaction(TransactionStep::Exec)), "exec"),
        (Stateful(Transaction(TransactionStep::Discard)), "discard"),
        (Stateful(Transaction(TransactionStep::Watch)), "watch"),
        (Stateful(Transaction(TransactionStep::Unwatch)), "unwatch"),
        (Stateful(PubSub), "subscribe, ssubscribe, punsubscribe"),
        (Stateful(Blocking), "blpop, bzmpop, blmove, xread, xreadgroup"),
        (Stateful(WaitReplicas), "wait, waitaof"),
        (FanOut(SumIntegers), "slowlog len, latency reset"),
        (FanOut(AllOk), "memory purge"),
        (Admin(AdminKind::ConfigGet), "config get"),
        (Admin(AdminKind::EveryNode), "config set, config resetstat, config rewrite"),
        (Admin(AdminKind::SlowlogGet), "slowlog get"),
        (Admin(AdminKind::EveryMasterOk), "slowlog reset"),
        (Admin(AdminKind::PerMaster), "latency latest, latency history, latency doctor, latency graph"),
        (Admin(AdminKind::PerMaster), "memory stats, memory doctor, memory malloc-stats"),
        (Admin(AdminKind::LatencyHistogram), "latency histogram"),
        (Admin(AdminKind::ScriptExists), "script exists"),
    ];
    for (expected, lines) in &cases {
        for line in lines.split(", ") {
            assert_eq!(handling(&t, line), *expected, "{line}");
        }
    }
}

#[test]
fn dangerous_commands_are_refused_with_a_reason() {
    let t = table();
    let refused = [
        "monitor, sync, psync, replconf, shutdown, debug, replicaof",
        "slaveof, failover, save, bgsave, bgrewriteaof, swapdb, move, cluster failover",
        "acl, acl setuser, acl list, module load",
        "cluster, cluster meet, cluster setslot, cluster getkeysinslot, asking, script debug",
    ]
    .join(", ");
    for line in refused.split(", ") {
        match handling(&t, line) {
            Handling::Refuse(reason) => assert!(reason.len() > 10, "{line}: {reason}"),
            other => panic!("{line} should be refused, is {other:?}"),
        }
    }
    assert_eq!(handling(&t, "cluster addslots"), Handling::Refuse(TOPOLOGY));
    // These act on the proxy's own clients (session/clients.rs).
    for line in ["client kill", "client list", "client info", "client pause", "client unblock"] {
        assert_eq!(handling(&t, line), Handling::Local(LocalKind::Clients), "{line}");
    }
    assert_eq!(handling(&t, "client unpause"), Handling::Local(LocalKind::Unpause));
    // Client-side caching is the proxy's own (session/tracking.rs).
    for line in ["client tracking", "client caching", "client getredir", "client trackinginfo"] {
        assert_eq!(handling(&t, line), Handling::Local(LocalKind::Tracking), "{line}");
    }
}

#[test]
fn every_cluster_acl_and_command_subcommand_is_decided() {
    let t = table();
    let forwarded = |sub| "info keyslot slots shards nodes myid countkeysinslot".split(" ").any(|f| f == sub);
    let (local, blocking) = (Handling::Local(LocalKind::Connection), Handling::Stateful(StatefulKind::Blocking));
    for s in t.iter() {
        let refused = matches!(s.handling, Handling::Refuse(_));
        match s.name.split_once('|') {
            Some(("cluster", sub)) if forwarded(sub) => assert_eq!(s.handling, Handling::Forward),
            Some(("cluster", _)) => assert!(refused, "{}", s.name),
            Some(("acl", "whoami")) | Some(("command", _)) => assert_eq!(s.handling, local),
            Some(("acl", _)) => assert!(refused, "{}", s.name),
            // WAIT and WAITAOF block too, but on the pooled connection of the client's writes.
            _ if ["wait", "waitaof"].contains(&s.name.as_str()) => {
                assert_eq!(s.handling, Handling::Stateful(StatefulKind::WaitReplicas));
            }
            _ if s.flags.contains(CommandFlags::BLOCKING) => assert_eq!(s.handling, blocking),
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

fn statuses(items: &str) -> OwnedFrame {
    array(items.split_whitespace().map(status).collect())
}

/// A RESP2 map: a flat array of alternating keys and values.
fn map(pairs: Vec<(&str, OwnedFrame)>) -> OwnedFrame {
    array(pairs.into_iter().flat_map(|(k, v)| [bulk(k), v]).collect())
}

/// A Redis 7 style `COMMAND` entry (`first/last/step` 1,1,1) with key specs and subcommands.
fn entry(name: &str, arity: i64, flags: &str, specs: Vec<OwnedFrame>, subs: Vec<OwnedFrame>) -> OwnedFrame {
    use OwnedFrame::Integer;
    let (acl, tips) = (statuses("@read @slow"), array(vec![]));
    let (first, last, step) = (Integer(1), Integer(1), Integer(1));
    let mut fields = vec![bulk(name), Integer(arity), statuses(flags)];
    fields.extend([first, last, step, acl, tips, array(specs), array(subs)]);
    array(fields)
}

/// A RESP2 key spec `RO access`, begin_search index, find_keys range, as a module would declare it.
fn index_range_spec(index: i64, lastkey: i64) -> OwnedFrame {
    use OwnedFrame::Integer;
    let begin = map(vec![("type", bulk("index")), ("spec", map(vec![("index", Integer(index))]))]);
    let range = map(vec![("lastkey", Integer(lastkey)), ("keystep", Integer(1)), ("limit", Integer(0))]);
    let find = map(vec![("type", bulk("range")), ("spec", range)]);
    let flags = statuses("RO access");
    map(vec![("notes", bulk("n")), ("flags", flags), ("begin_search", begin), ("find_keys", find)])
}

#[test]
fn learns_a_module_command_with_key_specs() {
    let mut t = table();
    let before = t.len();
    let json_get = entry("JSON.GET", -2, "readonly module", vec![index_range_spec(1, 0)], vec![]);
    let reply = array(vec![json_get]);
    assert_eq!(t.learn_from_command_reply(&reply), 1);
    assert_eq!(t.len(), before + 1);
    let json_get = spec(&t, &["json.get", "doc", "$.a"]);
    assert_eq!((json_get.name.as_str(), json_get.arity), ("json.get", -2));
    assert_eq!(json_get.handling, Handling::Forward);
    assert_eq!(json_get.flags, CommandFlags::READONLY | CommandFlags::MODULE);
    assert_eq!(json_get.acl_categories, ["read", "slow"]);
    assert_eq!(json_get.key_specs[0].flags, KeySpecFlags::RO | KeySpecFlags::ACCESS);
    assert_eq!(key_names(&t, "JSON.GET doc $.a"), Ok(vec!["doc"]));
    // Learning again adds nothing: known commands are kept.
    assert_eq!(t.learn_from_command_reply(&reply), 0);
}

#[test]
fn learns_the_old_first_last_step_form() {
    use OwnedFrame::Integer;
    let mut t = table();
    let old = |name: &str, first, last, step| {
        let (first, last, step) = (Integer(first), Integer(last), Integer(step));
        array(vec![bulk(name), Integer(-2), statuses("write"), first, last, step])
    };
    let reply = array(vec![old("mod.mset", 1, -1, 2), old("mod.keyless", 0, 0, 0), old("mod.two", 2, 3, 1)]);
    assert_eq!(t.learn_from_command_reply(&reply), 3);
    assert_eq!(key_names(&t, "mod.mset a 1 b 2"), Ok(vec!["a", "b"]));
    assert_eq!(key_names(&t, "mod.keyless a"), Ok(vec![]));
    assert_eq!(key_names(&t, "mod.two x a b y"), Ok(vec!["a", "b"]));
    assert!(spec(&t, &["mod.mset"]).is_write());
}

#[test]
fn learned_commands_keep_the_proxys_rules() {
    let mut t = table();
    let sub = entry("client|frobnicate", 3, "admin", vec![], vec![]);
    let reply = array(vec![
        entry("get", 99, "", vec![], vec![]),
        entry("client", -2, "", vec![], vec![sub]),
        entry("mod.admin", 1, "admin", vec![], vec![]),
        entry("mod.block", -2, "blocking", vec![index_range_spec(1, 0)], vec![]),
        status("not a command entry"),
        array(vec![bulk("truncated")]),
    ]);
    assert_eq!(t.learn_from_command_reply(&reply), 3);
    // A known command keeps the proxy's decisions but takes the server's arity (the server
    // checks arguments its way: Redis 7.4's COMMAND GETKEYS takes fewer than 7.0's).
    assert_eq!(spec(&t, &["get"]).arity, 99);
    assert_eq!(spec(&t, &["get"]).handling, Handling::Forward);
    let refused = Handling::Refuse(UNKNOWN_ADMIN);
    assert_eq!(handling(&t, "client frobnicate x"), refused);
    assert_eq!(handling(&t, "mod.admin"), refused);
    assert_eq!(handling(&t, "mod.block k"), Handling::Stateful(StatefulKind::Blocking));
    assert_eq!(t.learn_from_command_reply(&status("OK")), 0);
}

// ---- Against a real redis-server ------------------------------------------------------------

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
        let args = format!("--port {port} --bind 127.0.0.1 --daemonize no --save");
        let child = Command::new("redis-server")
            .args(args.split(' ').chain([""]))
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
    for (line, _) in KEY_CASES {
        let reply = server.query(&[&["COMMAND", "GETKEYS"], argv(line).as_slice()].concat());
        let redis: Vec<String> = match &reply {
            OwnedFrame::Array(keys) => {
                let text = |k| String::from_utf8_lossy(keys::text(k).unwrap()).into_owned();
                keys.iter().map(text).collect()
            }
            // Keyless commands: "The command has no key arguments".
            OwnedFrame::Error(_) => vec![],
            other => panic!("{line}: unexpected reply {other:?}"),
        };
        assert_eq!(key_names(&t, line).unwrap(), redis, "{line}");
    }
}

#[test]
fn command_getkeys_agrees_with_a_real_server() {
    let Some(server) = real_server() else { return };
    let t = table();
    for (line, _) in GETKEYS_CASES {
        let redis = match server.query(&[&["COMMAND", "GETKEYS"], argv(line).as_slice()].concat()) {
            OwnedFrame::Array(keys) if keys.is_empty() => "*0".to_owned(),
            OwnedFrame::Array(keys) => {
                let text = |k| String::from_utf8_lossy(keys::text(k).unwrap()).into_owned();
                keys.iter().map(text).collect::<Vec<_>>().join(" ")
            }
            OwnedFrame::Error(error) => error.to_string(),
            other => panic!("{line}: unexpected reply {other:?}"),
        };
        assert_eq!(getkeys_answer(&t, line), redis, "{line}");
    }
}

#[test]
fn numkeys_errors_agree_with_a_real_server() {
    let Some(server) = real_server() else { return };
    for &(line, _, _, message) in NUMKEYS_CASES {
        let OwnedFrame::Error(redis) = server.query(&argv(line)) else { panic!("{line} did not fail") };
        assert_eq!(redis, format!("ERR {message}"), "{line}");
    }
}

#[test]
fn learning_a_real_command_reply_reproduces_the_builtin_table() {
    let Some(server) = real_server() else { return };
    let reply = server.query(&["COMMAND"]);
    let builtin = table();
    let complete = builtin.clone().learn_from_command_reply(&reply);
    assert_eq!(complete, 0, "the generated table knows every command");
    let mut learned = CommandTable::default();
    let added = learned.learn_from_command_reply(&reply);
    assert_eq!(added, builtin.len() - table::SUPPLEMENT.len());
    for s in learned.iter() {
        let b = spec(&builtin, &s.name.split('|').collect::<Vec<_>>());
        let b = (&b.name, b.arity, b.flags, &b.acl_categories, &b.key_specs);
        assert_eq!(b, (&s.name, s.arity, s.flags, &s.acl_categories, &s.key_specs));
    }
}

#[test]
fn learning_takes_over_the_servers_arity_of_known_commands() {
    let Some(server) = real_server() else { return };
    let reply = server.query(&["COMMAND"]);
    let mut t = table();
    t.learn_from_command_reply(&reply);
    let OwnedFrame::Array(info) = server.query(&["COMMAND", "INFO", "command|getkeys"]) else { panic!("COMMAND INFO") };
    let OwnedFrame::Array(fields) = &info[0] else { panic!("COMMAND INFO entry: {info:?}") };
    let OwnedFrame::Integer(arity) = fields[1] else { panic!("arity: {fields:?}") };
    assert_eq!(
        i64::from(spec(&t, &["command", "getkeys"]).arity),
        arity,
        "the server's arity (-4 in 7.0, -3 from 7.4)"
    );
}

/// FCALL's keys when its numkeys is not an integer Redis' key spec reads: C's `atoi`, as
/// Redis' `functionGetKeys` reads it, so the request goes where a node would send it.
#[test]
fn fcall_fallback_keys_read_numkeys_as_atoi() {
    let keys = |line: &str| {
        let args: Vec<&str> = line.split(' ').collect();
        let mut out = Vec::new();
        let table = CommandTable::builtin();
        super::fallback_key_positions(table.lookup(&args[..]).expect("FCALL"), &args[..], &mut out);
        out
    };
    assert_eq!(keys("FCALL f 01 a b"), vec![3]);
    assert_eq!(keys("FCALL f 2x a b"), vec![3, 4]);
    assert_eq!(keys("FCALL f +1 a"), vec![3]);
    assert_eq!(keys("FCALL f x a"), Vec::<usize>::new());
    assert_eq!(keys("FCALL f -1 a"), Vec::<usize>::new());
    assert_eq!(keys("FCALL f 3 a b"), Vec::<usize>::new(), "more than there are: none");
    assert_eq!(keys("FCALL f 99999999999999999999999 a"), Vec::<usize>::new());
    assert_eq!(keys("FCALL f"), Vec::<usize>::new());
}
