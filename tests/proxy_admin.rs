//! Operator commands through the proxy (issue #10): CONFIG SET / RESETSTAT / REWRITE on every
//! node, replicas included, with refusals naming the node; CONFIG GET with masters that disagree;
//! SLOWLOG merged across the masters; LATENCY and MEMORY diagnostics keyed by master; refusals
//! that say why; WAIT. Everything is compared with what each node says directly. Tests that change
//! settings start their own cluster; the others use the shared 3+3 one and change nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use redis::{Connection, Value};
use redisforge_proxy::resp::FrameScanner;
use redisforge_tests::{Cluster, ClusterOptions, Proxy, ProxyOptions, raw_roundtrip_until, resp_command, wait_until};

/// Runs a raw command and returns the reply value, or the error's text.
fn raw(con: &mut Connection, args: &[&str]) -> Result<Value, String> {
    redisforge_tests::query_args(con, args)
}

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

fn text(value: &Value) -> String {
    match value {
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::VerbatimString { text, .. } => text.clone(),
        other => panic!("not a string: {other:?}"),
    }
}

fn int(value: &Value) -> i64 {
    match value {
        Value::Int(n) => *n,
        other => panic!("not an integer: {other:?}"),
    }
}

fn items(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items,
        other => panic!("not an array: {other:?}"),
    }
}

/// One value of a node's `CONFIG GET name`.
fn config_get(con: &mut Connection, name: &str) -> String {
    let reply = items(raw(con, &["CONFIG", "GET", name]).unwrap_or_else(|e| panic!("CONFIG GET {name}: {e}")));
    assert_eq!(reply.len(), 2, "CONFIG GET {name}: {reply:?}");
    text(&reply[1])
}

fn info(con: &mut Connection, section: &str) -> String {
    raw(con, &["INFO", section]).map(|v| text(&v)).unwrap_or_else(|e| panic!("INFO {section}: {e}"))
}

/// A RESP2 flat array or RESP3 map of `address → reply`, as pairs.
fn by_node(value: Value) -> Vec<(String, Value)> {
    match value {
        Value::Map(pairs) => pairs.into_iter().map(|(k, v)| (text(&k), v)).collect(),
        Value::Array(flat) => {
            assert!(flat.len().is_multiple_of(2), "not a flat map: {flat:?}");
            flat.chunks(2).map(|pair| (text(&pair[0]), pair[1].clone())).collect()
        }
        other => panic!("not keyed by node: {other:?}"),
    }
}

#[test]
fn config_set_resetstat_and_rewrite_reach_every_master_and_replica() {
    let cluster = Cluster::start(ClusterOptions::default());
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let mut con = proxy.client();
    let nodes = cluster.nodes();
    assert_eq!(nodes.len(), 6, "3 masters and 3 replicas: {nodes:?}");

    let set = raw(&mut con, &["CONFIG", "SET", "maxmemory-samples", "7", "slowlog-max-len", "222"]);
    assert_eq!(set, Ok(Value::Okay));
    for node in &nodes {
        let mut direct = cluster.client(node);
        assert_eq!(config_get(&mut direct, "maxmemory-samples"), "7", "on {node}");
        assert_eq!(config_get(&mut direct, "slowlog-max-len"), "222", "on {node}");
    }
    // CONFIG GET answers like a node, in a node's form.
    let get = raw(&mut con, &["CONFIG", "GET", "maxmemory-samples"]);
    assert_eq!(get, Ok(Value::Array(vec![bulk("maxmemory-samples"), bulk("7")])));

    // RESETSTAT clears the command statistics of every node, replicas too.
    for node in &nodes {
        let mut direct = cluster.client(node);
        raw(&mut direct, &["ECHO", "counted"]).expect("ECHO on a node");
        assert!(info(&mut direct, "commandstats").contains("cmdstat_echo:"), "ECHO not counted on {node}");
    }
    assert_eq!(raw(&mut con, &["CONFIG", "RESETSTAT"]), Ok(Value::Okay));
    for node in &nodes {
        let stats = info(&mut cluster.client(node), "commandstats");
        assert!(!stats.contains("cmdstat_echo:"), "CONFIG RESETSTAT did not reach {node}:\n{stats}");
    }

    // REWRITE persists the setting in every node's own redis.conf.
    assert_eq!(raw(&mut con, &["CONFIG", "REWRITE"]), Ok(Value::Okay));
    for node in &nodes {
        let port = node.rsplit(':').next().expect("host:port");
        let conf = std::fs::read_to_string(cluster.dir().join(port).join("redis.conf")).expect("read redis.conf");
        assert!(conf.contains("maxmemory-samples 7"), "{node}'s redis.conf was not rewritten:\n{conf}");
    }
}

#[test]
fn config_set_refusals_name_each_node_and_config_get_resolves_disagreements_by_majority() {
    let cluster = Cluster::start(ClusterOptions::default());
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let mut con = proxy.client();
    let nodes = cluster.nodes();

    // Every node refuses an unknown parameter alike: nothing changed anywhere, and the client gets
    // the error one node gives (Redis' own tests match its text).
    let refused = raw(&mut con, &["CONFIG", "SET", "no-such-parameter", "1"]).expect_err("unknown parameter");
    let direct = raw(&mut cluster.client(&nodes[0]), &["CONFIG", "SET", "no-such-parameter", "1"]);
    assert_eq!(Err(refused), direct, "the node's own error");

    // One replica denies CONFIG SET to the user the proxy logs in as: only it is named, with its
    // reason, and the others apply the setting.
    let replica = cluster.replicas().into_iter().next().expect("a replica");
    let mut direct = cluster.client(&replica);
    raw(&mut direct, &["ACL", "SETUSER", "default", "-config|set"]).expect("ACL SETUSER on the replica");
    let refused = raw(&mut con, &["CONFIG", "SET", "maxmemory-samples", "9"]).expect_err("one node refuses");
    assert!(refused.contains(&format!("CONFIG SET failed on {replica} (NOPERM")), "{refused}");
    assert!(refused.contains("5 of 6 nodes said OK"), "{refused}");
    raw(&mut direct, &["ACL", "SETUSER", "default", "+config|set"]).expect("ACL SETUSER back");
    for node in nodes.iter().filter(|n| **n != replica) {
        assert_eq!(config_get(&mut cluster.client(node), "maxmemory-samples"), "9", "on {node}");
    }

    // Masters that disagree: the value most of them have, and a warning in the log.
    let masters = cluster.masters_in_slot_order();
    raw(&mut cluster.client(&masters[0]), &["CONFIG", "SET", "maxmemory-samples", "3"]).expect("CONFIG SET");
    let get = raw(&mut con, &["CONFIG", "GET", "maxmemory-samples"]);
    assert_eq!(get, Ok(Value::Array(vec![bulk("maxmemory-samples"), bulk("9")])), "2 of 3 masters have 9");
    let logged = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        proxy.log().contains("masters disagree on CONFIG values")
    });
    assert!(logged, "no warning about the disagreement:\n{}", proxy.log_tail(20));
    let log = proxy.log();
    let line = log.lines().find(|l| l.contains("masters disagree")).unwrap_or_default();
    assert!(line.contains("maxmemory-samples") && line.contains(&format!("{}=3", masters[0])), "{line}");
    // Three different values: the tie goes to the master of slot 0.
    raw(&mut cluster.client(&masters[1]), &["CONFIG", "SET", "maxmemory-samples", "4"]).expect("CONFIG SET");
    let get = raw(&mut con, &["CONFIG", "GET", "maxmemory-samples"]);
    assert_eq!(get, Ok(Value::Array(vec![bulk("maxmemory-samples"), bulk("3")])));
    // Per-node parameters differ by nature: answered from the first master, not logged.
    let port = masters[0].rsplit(':').next().expect("host:port");
    assert_eq!(raw(&mut con, &["CONFIG", "GET", "port"]), Ok(Value::Array(vec![bulk("port"), bulk(port)])));
}

#[test]
fn slowlog_is_merged_across_masters_newest_first_with_each_node_named() {
    let cluster = Cluster::start(ClusterOptions::default());
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let mut con = proxy.client();
    let masters = cluster.masters_in_slot_order();
    assert_eq!(raw(&mut con, &["CONFIG", "SET", "slowlog-log-slower-than", "0"]), Ok(Value::Okay));
    assert_eq!(raw(&mut con, &["SLOWLOG", "RESET"]), Ok(Value::Okay));
    let keys = cluster.key_per_master("slow");
    for key in &keys {
        raw(&mut con, &["SET", key, "v"]).expect("SET");
        raw(&mut con, &["GET", key]).expect("GET");
    }
    // Stop logging so that the lengths stay put while they are compared.
    assert_eq!(raw(&mut con, &["CONFIG", "SET", "slowlog-log-slower-than", "-1"]), Ok(Value::Okay));

    let len = int(&raw(&mut con, &["SLOWLOG", "LEN"]).expect("SLOWLOG LEN"));
    let direct: i64 =
        masters.iter().map(|m| int(&raw(&mut cluster.client(m), &["SLOWLOG", "LEN"]).expect("LEN"))).sum();
    assert_eq!(len, direct, "SLOWLOG LEN through the proxy is the sum of the masters'");
    assert!(len >= 6, "the SETs and GETs were logged: {len}");

    let all = items(raw(&mut con, &["SLOWLOG", "GET", "-1"]).expect("SLOWLOG GET -1"));
    assert_eq!(all.len() as i64, len);
    let mut named = BTreeSet::new();
    let mut last = i64::MAX;
    for entry in &all {
        let fields = items(entry.clone());
        assert_eq!(fields.len(), 6, "a Redis 7 entry: {fields:?}");
        let timestamp = int(&fields[1]);
        assert!(timestamp <= last, "newest first: {all:?}");
        last = timestamp;
        let node = text(&fields[5]);
        let node = node.strip_prefix("node=").unwrap_or_else(|| panic!("client name without node=: {node}"));
        assert!(masters.iter().any(|m| m == node), "{node} is not a master");
        named.insert(node.to_owned());
        // The client address is left as Redis wrote it: host:port.
        assert!(text(&fields[4]).rsplit(':').next().is_some_and(|p| p.parse::<u16>().is_ok()), "{fields:?}");
        // Each SET is named after the master that owns its key.
        let args: Vec<String> = items(fields[3].clone()).iter().map(text).collect();
        if let [command, key, ..] = args.as_slice()
            && command.eq_ignore_ascii_case("set")
            && let Some(at) = keys.iter().position(|k| k == key)
        {
            assert_eq!(node, masters[at], "SET {key}");
        }
    }
    assert_eq!(named.len(), 3, "entries of every master: {named:?}");

    // The default count is 10, as on a node; a count takes the newest.
    let default = items(raw(&mut con, &["SLOWLOG", "GET"]).expect("SLOWLOG GET"));
    assert_eq!(default.len(), all.len().min(10));
    let two = items(raw(&mut con, &["SLOWLOG", "GET", "2"]).expect("SLOWLOG GET 2"));
    assert_eq!(two, all[..2].to_vec());
    let bad = raw(&mut con, &["SLOWLOG", "GET", "-5"]).expect_err("a count below -1");
    assert!(bad.contains("count should be greater than or equal to -1"), "{bad}");

    assert_eq!(raw(&mut con, &["SLOWLOG", "RESET"]), Ok(Value::Okay));
    assert_eq!(raw(&mut con, &["SLOWLOG", "LEN"]), Ok(Value::Int(0)));
    for master in &masters {
        assert_eq!(raw(&mut cluster.client(master), &["SLOWLOG", "LEN"]), Ok(Value::Int(0)), "on {master}");
    }
}

/// Whether a reply has the form a command's reply should have.
type Shape = fn(&Value) -> bool;

#[test]
fn latency_and_memory_diagnostics_name_every_master() {
    let cluster = Cluster::shared();
    let proxy = Proxy::start(cluster, ProxyOptions::default());
    let mut con = proxy.client();
    let masters = cluster.masters_in_slot_order();
    let cases: [(&[&str], Shape); 6] = [
        (&["MEMORY", "STATS"], |v| matches!(v, Value::Array(a) if !a.is_empty())),
        (&["MEMORY", "DOCTOR"], |v| matches!(v, Value::BulkString(_))),
        (&["MEMORY", "MALLOC-STATS"], |v| matches!(v, Value::BulkString(_))),
        (&["LATENCY", "LATEST"], |v| matches!(v, Value::Array(_))),
        (&["LATENCY", "HISTORY", "command"], |v| matches!(v, Value::Array(_))),
        (&["LATENCY", "DOCTOR"], |v| matches!(v, Value::BulkString(_))),
    ];
    for (args, shape) in cases {
        let reply = by_node(raw(&mut con, args).unwrap_or_else(|e| panic!("{args:?}: {e}")));
        let named: Vec<&str> = reply.iter().map(|(node, _)| node.as_str()).collect();
        assert_eq!(named, masters, "{args:?}: every master, the master of slot 0 first");
        for (node, value) in &reply {
            assert!(shape(value), "{args:?} from {node}: {value:?}");
            let direct = raw(&mut cluster.client(node), args).expect("on the node");
            assert!(shape(&direct), "{args:?} directly on {node}: {direct:?}");
        }
    }
    // MEMORY STATS has the same fields as the node's own.
    let stats = by_node(raw(&mut con, &["MEMORY", "STATS"]).expect("MEMORY STATS"));
    let direct = items(raw(&mut cluster.client(&masters[0]), &["MEMORY", "STATS"]).expect("MEMORY STATS"));
    let fields = |v: &[Value]| v.iter().step_by(2).map(text).collect::<Vec<_>>();
    assert_eq!(fields(&items(stats[0].1.clone())), fields(&direct));

    // RESP3: a map keyed by address.
    let mut request = resp_command(&[b"HELLO", b"3"]);
    request.extend(resp_command(&[b"MEMORY", b"STATS"]));
    let received = raw_roundtrip_until(&proxy.addr(), &request, Duration::from_secs(5), |buf| frames(buf) >= 2);
    let hello_len = FrameScanner::new().scan(&received).ok().flatten().expect("HELLO reply");
    let stats = &received[hello_len..];
    assert!(stats.starts_with(b"%3\r\n"), "{}", String::from_utf8_lossy(stats));
    let first_key = format!("%3\r\n${}\r\n{}\r\n%", masters[0].len(), masters[0]);
    assert!(stats.starts_with(first_key.as_bytes()), "{}", String::from_utf8_lossy(&stats[..80.min(stats.len())]));
}

/// LATENCY HISTOGRAM answers as one node that served every master's commands: per command, the
/// calls summed and the cumulative counts added up, in the node's shape.
#[test]
fn latency_histogram_adds_up_every_masters_distribution() {
    let cluster = Cluster::shared();
    let proxy = Proxy::start(cluster, ProxyOptions::default());
    let mut con = proxy.client();
    // A command no other test of this binary runs, once on each master's key.
    for key in cluster.key_per_master("latency:histogram") {
        raw(&mut con, &["HINCRBYFLOAT", &key, "f", "1.5"]).expect("HINCRBYFLOAT");
    }
    let reply = items(raw(&mut con, &["LATENCY", "HISTOGRAM", "hincrbyfloat"]).expect("LATENCY HISTOGRAM"));
    assert_eq!(reply.len(), 2, "one command, as a node answers: {reply:?}");
    assert_eq!(text(&reply[0]), "hincrbyfloat");
    let stats = items(reply[1].clone());
    assert_eq!((text(&stats[0]), text(&stats[2])), ("calls".to_owned(), "histogram_usec".to_owned()));
    let calls = int(&stats[1]);
    let buckets: Vec<i64> = items(stats[3].clone()).iter().map(int).collect();
    // What the masters say themselves, added up.
    let direct_calls: i64 = cluster
        .masters()
        .iter()
        .map(|m| {
            match items(raw(&mut cluster.client(m), &["LATENCY", "HISTOGRAM", "hincrbyfloat"]).expect("on the node")) {
                node if node.is_empty() => 0,
                node => int(&items(node[1].clone())[1]),
            }
        })
        .sum();
    assert!(calls >= 3, "{calls}");
    assert_eq!(calls, direct_calls, "calls summed over the masters");
    let counts: Vec<i64> = buckets.iter().skip(1).step_by(2).copied().collect();
    assert!(counts.windows(2).all(|w| w[0] < w[1]), "cumulative, growing at each bucket: {buckets:?}");
    assert_eq!(counts.last(), Some(&calls), "the last bucket counts every call: {buckets:?}");
}

/// Complete frames at the start of `buf`.
fn frames(buf: &[u8]) -> usize {
    let (mut at, mut count) = (0, 0);
    while let Ok(Some(len)) = FrameScanner::new().scan(&buf[at..]) {
        at += len;
        count += 1;
    }
    count
}

#[test]
fn node_and_topology_commands_are_refused_with_the_reason() {
    let cluster = Cluster::shared();
    let proxy = Proxy::start(cluster, ProxyOptions::default());
    let mut con = proxy.client();
    let cases: [(&[&str], &str); 14] = [
        (&["SHUTDOWN", "NOSAVE"], "it would stop one cluster node"),
        (&["DEBUG", "SLEEP", "0"], "run it on a node directly"),
        (&["REPLICAOF", "NO", "ONE"], "redisforge-ops cluster add --replica-of"),
        (&["SLAVEOF", "NO", "ONE"], "redisforge-ops cluster add --replica-of"),
        (&["FAILOVER", "ABORT"], "run CLUSTER FAILOVER on that replica"),
        (&["CLUSTER", "FAILOVER"], "run CLUSTER FAILOVER on that replica"),
        (&["CLUSTER", "ADDSLOTS", "99999"], "change the cluster topology"),
        (&["CLUSTER", "SETSLOT", "1", "STABLE"], "use redisforge-ops cluster"),
        (&["CLUSTER", "FORGET", "0000000000000000000000000000000000000000"], "change the cluster topology"),
        (&["CLUSTER", "MEET", "127.0.0.1", "1"], "change the cluster topology"),
        (&["CLUSTER", "RESET", "SOFT"], "change the cluster topology"),
        (&["MONITOR"], "run MONITOR on a node directly"),
        (&["SYNC"], "replication stream"),
        (&["PSYNC", "?", "-1"], "replication stream"),
    ];
    for (args, why) in cases {
        let error = raw(&mut con, args).expect_err("refused");
        let prefix = format!("unsupported command '{}' in proxy: ", args[0]);
        assert!(error.contains(&prefix) && error.contains(why), "{args:?}: {error}");
        assert_eq!(raw(&mut con, &["PING"]), Ok(Value::SimpleString("PONG".into())), "after {args:?}");
    }
    // Nothing reached a node: every one still runs in its role.
    assert_eq!(cluster.masters().len(), 3);
    assert_eq!(cluster.replicas().len(), 3);
}

#[test]
fn wait_counts_the_replicas_of_the_node_last_written() {
    let cluster = Cluster::shared();
    let proxy = Proxy::start(cluster, ProxyOptions::default());
    let mut con = proxy.client();
    for key in cluster.key_per_master("admin:wait") {
        raw(&mut con, &["SET", &key, "v"]).expect("SET");
        // Each master has one replica; WAIT asks the master the SET went to.
        assert_eq!(raw(&mut con, &["WAIT", "1", "5000"]), Ok(Value::Int(1)), "after SET {key}");
    }
    assert!(matches!(raw(&mut con, &["WAIT", "0", "0"]), Ok(Value::Int(_))));
}

#[test]
fn operator_commands_obey_the_clients_acl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let users = "user ops on >ops-pass ~* -@all +config|get +slowlog|len +ping\nuser admin on >admin-pass ~* +@all\n";
    std::fs::write(dir.path().join("users.acl"), users).expect("write the ACL file");
    let extra = format!("[auth]\nacl_file = \"{}\"\n", dir.path().join("users.acl").display());
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions { extra_toml: extra, ..ProxyOptions::default() });
    let login = |user: &str, pass: &str| {
        let mut con = proxy.client();
        raw(&mut con, &["AUTH", user, pass]).unwrap_or_else(|e| panic!("AUTH {user}: {e}"));
        con
    };
    let mut ops = login("ops", "ops-pass");
    let get = raw(&mut ops, &["CONFIG", "GET", "maxmemory-policy"]);
    assert_eq!(get, Ok(Value::Array(vec![bulk("maxmemory-policy"), bulk("noeviction")])));
    assert!(matches!(raw(&mut ops, &["SLOWLOG", "LEN"]), Ok(Value::Int(_))));
    for (args, command) in
        [(&["CONFIG", "SET", "maxmemory-policy", "noeviction"][..], "config|set"), (&["SLOWLOG", "GET"], "slowlog|get")]
    {
        let denied = raw(&mut ops, args).expect_err("not allowed");
        assert!(denied.contains(&format!("no permissions to run the '{command}' command")), "{denied}");
    }
    // The default value, so the shared cluster is left as it was.
    let mut admin = login("admin", "admin-pass");
    assert_eq!(raw(&mut admin, &["CONFIG", "SET", "maxmemory-policy", "noeviction"]), Ok(Value::Okay));
}
