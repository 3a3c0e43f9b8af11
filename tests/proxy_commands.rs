//! Command families through the proxy, with a plain (non-cluster) `redis` client, against a real
//! 3+3 cluster shared by the tests of this file (each test uses its own keys).

use redis::{Commands, Connection, Value};
use redisforge_tests::{Cluster, Proxy, ProxyOptions};

fn proxy() -> Proxy {
    Proxy::start(Cluster::shared(), ProxyOptions::default())
}

/// Runs a raw command and returns the reply value (errors included as values).
fn raw(con: &mut Connection, args: &[&str]) -> redis::RedisResult<Value> {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(con)
}

fn err_text(result: redis::RedisResult<Value>) -> String {
    match result {
        Err(error) => error.to_string(),
        Ok(value) => panic!("expected an error, got {value:?}"),
    }
}

#[test]
fn strings_hashes_lists_sets_and_sorted_sets_work() {
    let proxy = proxy();
    let mut con = proxy.client();
    let _: () = con.set("cmd:str", "v1").expect("SET");
    assert_eq!(con.get::<_, String>("cmd:str").expect("GET"), "v1");
    assert_eq!(con.incr::<_, _, i64>("cmd:counter", 5).expect("INCRBY"), 5);
    assert_eq!(con.append::<_, _, i64>("cmd:str", "x").expect("APPEND"), 3);
    let _: () = con.hset_multiple("cmd:hash", &[("f1", "a"), ("f2", "b")]).expect("HSET");
    assert_eq!(con.hget::<_, _, String>("cmd:hash", "f2").expect("HGET"), "b");
    assert_eq!(con.hlen::<_, i64>("cmd:hash").expect("HLEN"), 2);
    let _: () = con.rpush("cmd:list", &["a", "b", "c"]).expect("RPUSH");
    assert_eq!(con.lrange::<_, Vec<String>>("cmd:list", 0, -1).expect("LRANGE"), ["a", "b", "c"]);
    let _: () = con.sadd("cmd:set", &["x", "y"]).expect("SADD");
    assert_eq!(con.scard::<_, i64>("cmd:set").expect("SCARD"), 2);
    let _: () = con.zadd_multiple("cmd:zset", &[(1, "one"), (2, "two")]).expect("ZADD");
    assert_eq!(con.zrange::<_, Vec<String>>("cmd:zset", 0, -1).expect("ZRANGE"), ["one", "two"]);
    let id: String = redis::cmd("XADD").arg("cmd:stream").arg("*").arg("f").arg("v").query(&mut con).expect("XADD");
    assert!(id.contains('-'));
    assert_eq!(redis::cmd("XLEN").arg("cmd:stream").query::<i64>(&mut con).expect("XLEN"), 1);
    let _: () = con.expire("cmd:str", 100).expect("EXPIRE");
    let ttl: i64 = con.ttl("cmd:str").expect("TTL");
    assert!((1..=100).contains(&ttl));
    assert_eq!(con.get::<_, Option<String>>("cmd:missing").expect("GET missing"), None);
}

#[test]
fn multi_key_commands_across_slots_are_split_and_merged() {
    let proxy = proxy();
    let mut con = proxy.client();
    let keys: Vec<String> = (0..50).map(|i| format!("cmd:split:{i}")).collect();
    let pairs: Vec<(String, String)> = keys.iter().map(|k| (k.clone(), format!("v-{k}"))).collect();
    let _: () = con.mset(&pairs).expect("MSET across slots");
    let mut asked = keys.clone();
    asked.insert(10, "cmd:split:absent".to_string());
    let values: Vec<Option<String>> = con.mget(&asked).expect("MGET across slots");
    assert_eq!(values.len(), 51);
    for (key, value) in asked.iter().zip(&values) {
        if key == "cmd:split:absent" {
            assert_eq!(value, &None);
        } else {
            assert_eq!(value.as_deref(), Some(format!("v-{key}").as_str()), "{key}");
        }
    }
    assert_eq!(con.exists::<_, i64>(&asked).expect("EXISTS"), 50);
    assert_eq!(
        raw(&mut con, &["TOUCH", "cmd:split:1", "cmd:split:2", "cmd:split:absent"]).expect("TOUCH"),
        Value::Int(2)
    );
    assert_eq!(con.unlink::<_, i64>(&keys[..10]).expect("UNLINK"), 10);
    assert_eq!(con.del::<_, i64>(&asked).expect("DEL"), 40);
    assert_eq!(con.exists::<_, i64>(&asked).expect("EXISTS after DEL"), 0);
}

#[test]
fn atomic_commands_across_slots_get_crossslot() {
    let proxy = proxy();
    let mut con = proxy.client();
    for args in [
        &["MSETNX", "cmd:a", "1", "cmd:b", "2"][..],
        &["RENAME", "cmd:a", "cmd:b"],
        &["SMOVE", "cmd:a", "cmd:b", "m"],
        &["SINTERSTORE", "cmd:d", "cmd:a", "cmd:b"],
    ] {
        let text = err_text(raw(&mut con, args));
        assert!(text.contains("Keys in request don't hash to the same slot"), "{args:?}: {text}");
    }
    // Same hash tag: fine.
    assert_eq!(raw(&mut con, &["MSETNX", "{cmd}a", "1", "{cmd}b", "2"]).expect("MSETNX"), Value::Int(1));
    assert_eq!(raw(&mut con, &["RENAME", "{cmd}a", "{cmd}c"]).expect("RENAME"), Value::Okay);
}

#[test]
fn commands_answered_by_the_proxy() {
    let proxy = proxy();
    let mut con = proxy.client();
    assert_eq!(raw(&mut con, &["PING"]).expect("PING"), Value::SimpleString("PONG".into()));
    assert_eq!(raw(&mut con, &["PING", "hi"]).expect("PING msg"), Value::BulkString(b"hi".to_vec()));
    assert_eq!(raw(&mut con, &["ECHO", "x y"]).expect("ECHO"), Value::BulkString(b"x y".to_vec()));
    assert_eq!(raw(&mut con, &["SELECT", "0"]).expect("SELECT 0"), Value::Okay);
    assert!(err_text(raw(&mut con, &["SELECT", "1"])).contains("DB index is out of range"));
    assert_eq!(raw(&mut con, &["CLIENT", "SETNAME", "tester"]).expect("SETNAME"), Value::Okay);
    assert_eq!(raw(&mut con, &["CLIENT", "GETNAME"]).expect("GETNAME"), Value::BulkString(b"tester".to_vec()));
    assert!(matches!(raw(&mut con, &["CLIENT", "ID"]).expect("CLIENT ID"), Value::Int(id) if id > 0));
    assert_eq!(raw(&mut con, &["CLIENT", "SETINFO", "LIB-NAME", "redis-rs"]).expect("SETINFO"), Value::Okay);
    let info: String = redis::cmd("INFO").query(&mut con).expect("INFO");
    for field in ["# Proxy", "# Cluster", "cluster_state:ok", "cluster_slots_covered:16384", "redis_version:"] {
        assert!(info.contains(field), "INFO lacks {field}: {info}");
    }
    let hello = raw(&mut con, &["HELLO", "2"]).expect("HELLO 2");
    assert!(format!("{hello:?}").contains("proto"), "{hello:?}");
    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut con).expect("DBSIZE");
    assert!(dbsize >= 0);
    let time: Vec<String> = redis::cmd("TIME").query(&mut con).expect("TIME");
    assert_eq!(time.len(), 2);
    let count: i64 = redis::cmd("COMMAND").arg("COUNT").query(&mut con).expect("COMMAND COUNT");
    assert!(count > 200, "{count}");
    let keys: Vec<String> =
        redis::cmd("COMMAND").arg(&["GETKEYS", "MSET", "a", "1", "b", "2"]).query(&mut con).expect("COMMAND GETKEYS");
    assert_eq!(keys, ["a", "b"]);
}

#[test]
fn dbsize_is_the_sum_over_masters() {
    let proxy = proxy();
    let mut con = proxy.client();
    let cluster = Cluster::shared();
    // Other tests write concurrently, so compare within a bound: read direct counts around it.
    let direct = |cluster: &Cluster| -> i64 {
        cluster
            .masters()
            .iter()
            .map(|m| redis::cmd("DBSIZE").query::<i64>(&mut cluster.client(m)).expect("direct DBSIZE"))
            .sum()
    };
    let _: () = con.set("cmd:dbsize", 1).expect("SET");
    let before = direct(cluster);
    let through: i64 = redis::cmd("DBSIZE").query(&mut con).expect("DBSIZE");
    let after = direct(cluster);
    assert!(through >= before.min(after) - 50 && through <= before.max(after) + 50, "{before} {through} {after}");
    assert!(through >= 1);
}

#[test]
fn errors_use_redis_wording_and_keep_the_connection() {
    let proxy = proxy();
    let mut con = proxy.client();
    let unknown = err_text(raw(&mut con, &["NOSUCHCMD", "a"]));
    assert!(unknown.contains("unknown command 'NOSUCHCMD', with args beginning with: 'a'"), "{unknown}");
    let arity = err_text(raw(&mut con, &["GET"]));
    assert!(arity.contains("wrong number of arguments for 'get' command"), "{arity}");
    for refused in [&["MONITOR"][..], &["SHUTDOWN"], &["CLUSTER", "SETSLOT", "1", "STABLE"], &["DEBUG", "SLEEP", "0"]] {
        let text = err_text(raw(&mut con, refused));
        assert!(text.contains("unsupported command") && text.contains("in proxy"), "{refused:?}: {text}");
    }
    let wrongtype = {
        let _: () = con.set("cmd:wrongtype", "s").expect("SET");
        err_text(raw(&mut con, &["LPUSH", "cmd:wrongtype", "x"]))
    };
    assert!(wrongtype.contains("WRONGTYPE"), "{wrongtype}");
    // The connection is still usable after all of these.
    assert_eq!(raw(&mut con, &["PING"]).expect("PING"), Value::SimpleString("PONG".into()));
}

#[test]
fn ten_thousand_pipelined_mixed_commands_come_back_in_order() {
    let proxy = proxy();
    let mut con = proxy.client();
    let mut pipe = redis::pipe();
    for i in 0..10_000 {
        // Each group of five commands works on one key, so GET sees the SET of its own group.
        let key = format!("cmd:pipe:{}", (i / 5) % 300);
        match i % 5 {
            0 => pipe.set(&key, i).ignore(),
            1 => pipe.get(&key),
            2 => pipe.incr(format!("cmd:pipe:ctr:{}", i % 97), 1),
            3 => pipe.cmd("ECHO").arg(i),
            _ => pipe.exists(&key),
        };
    }
    let replies: Vec<Value> = pipe.query(&mut con).expect("pipeline");
    assert_eq!(replies.len(), 8_000);
    let mut counters = std::collections::HashMap::new();
    let mut replies = replies.into_iter();
    for i in 0..10_000 {
        let set_at = i - i % 5;
        match i % 5 {
            0 => {}
            1 => assert_eq!(replies.next(), Some(Value::BulkString(set_at.to_string().into_bytes())), "GET #{i}"),
            2 => {
                let n = counters.entry(i % 97).or_insert(0i64);
                *n += 1;
                let Some(Value::Int(got)) = replies.next() else { panic!("INCR #{i}") };
                assert!(got >= *n, "INCR #{i}: {got} < {n}");
            }
            3 => assert_eq!(replies.next(), Some(Value::BulkString(i.to_string().into_bytes())), "ECHO #{i}"),
            _ => assert_eq!(replies.next(), Some(Value::Int(1)), "EXISTS #{i}"),
        }
    }
}

#[test]
fn quit_replies_ok_then_closes() {
    let proxy = proxy();
    let reply =
        redisforge_tests::raw_roundtrip(&proxy.addr(), b"PING\r\nQUIT\r\nPING\r\n", std::time::Duration::from_secs(5));
    assert_eq!(reply, b"+PONG\r\n+OK\r\n");
}

/// `INFO` field `name` of `section`-less text.
fn info_field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
}

#[test]
fn info_has_every_default_section_with_cluster_wide_data_numbers() {
    let cluster = Cluster::shared();
    let proxy = proxy();
    let mut con = proxy.client();
    for i in 0..30 {
        let _: () = con.set(format!("info:{i}"), i).expect("SET");
    }
    let text: String = redis::cmd("INFO").query(&mut con).expect("INFO");
    for section in [
        "# Server",
        "# Clients",
        "# Memory",
        "# Persistence",
        "# Stats",
        "# Replication",
        "# CPU",
        "# Cluster",
        "# Keyspace",
    ] {
        assert!(text.contains(&format!("{section}\r\n")), "{section} missing:\n{text}");
    }
    assert!(text.contains("\r\n\r\n# Memory\r\n"), "sections are separated by one blank line:\n{text}");
    assert!(!text.ends_with("\r\n\r\n"), "no blank line at the end");
    assert_eq!(info_field(&text, "role"), Some("master"));
    assert_eq!(info_field(&text, "loading"), Some("0"));
    assert!(info_field(&text, "used_cpu_user").is_some(), "the proxy's own CPU");

    // Data numbers are the masters' sums: used_memory is more than any one master's.
    let masters: Vec<String> = cluster.masters();
    let node_memory: Vec<u64> = masters
        .iter()
        .map(|m| {
            let text: String = redis::cmd("INFO").arg("memory").query(&mut cluster.client(m)).expect("node INFO");
            info_field(&text, "used_memory").and_then(|v| v.parse().ok()).expect("used_memory")
        })
        .collect();
    let summed: u64 = info_field(&text, "used_memory").and_then(|v| v.parse().ok()).expect("used_memory");
    assert!(summed > *node_memory.iter().max().unwrap_or(&0), "{summed} vs {node_memory:?}");

    // The version is the oldest node's, once the health poller has run (every few seconds).
    let node_text: String = redis::cmd("INFO").arg("server").query(&mut cluster.client(&masters[0])).expect("INFO");
    let node_version = info_field(&node_text, "redis_version").expect("redis_version").to_owned();
    let version_seen =
        redisforge_tests::wait_until(std::time::Duration::from_secs(20), std::time::Duration::from_millis(200), || {
            let text: String = redis::cmd("INFO").arg("server").query(&mut con).expect("INFO server");
            info_field(&text, "redis_version") == Some(node_version.as_str())
        });
    assert!(version_seen, "redis_version is not the nodes' {node_version}");

    // Every field a node of that version shows in its server section, in its order (listener
    // lines and the proxy's own version aside), about the proxy's process.
    let names = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|line| line.split_once(':').map(|(name, _)| name.to_owned()))
            .filter(|name| !name.starts_with("listener") && name != "redisforge_version")
            .collect()
    };
    let text: String = redis::cmd("INFO").arg("server").query(&mut con).expect("INFO server");
    assert_eq!(names(&text), names(&node_text), "proxy:\n{text}\nnode:\n{node_text}");
    assert_eq!(info_field(&text, "tcp_port"), Some(proxy.port().to_string().as_str()), "{text}");
    let run_id = info_field(&text, "run_id").expect("run_id").to_owned();
    assert!(run_id.len() == 40 && run_id.bytes().all(|c| c.is_ascii_hexdigit()), "{run_id}");
    assert_ne!(Some(run_id.as_str()), info_field(&node_text, "run_id"), "the proxy's own run id");
    let again: String = redis::cmd("INFO").arg("server").query(&mut con).expect("INFO server");
    assert_eq!(info_field(&again, "run_id"), Some(run_id.as_str()), "fixed for the process");
    assert_eq!(info_field(&again, "process_id"), Some(proxy.pid().to_string().as_str()), "{again}");
    let cluster_section: String = redis::cmd("INFO").arg("cluster").query(&mut con).expect("INFO cluster");
    assert_eq!(info_field(&cluster_section, "cluster_enabled"), Some("0"), "one node, not a cluster");

    let stats: String = redis::cmd("INFO").arg("commandstats").query(&mut con).expect("INFO commandstats");
    let set_calls = info_field(&stats, "cmdstat_set")
        .and_then(|v| v.split(',').find_map(|kv| kv.strip_prefix("calls=")))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("cmdstat_set calls");
    assert!(set_calls >= 30, "{stats}");
    assert!(!stats.contains("# Server"), "only the section asked for");
}

/// INFO persistence is the masters': their writes since the last save added up (what Redis' own
/// tests read as `rdb_changes_since_last_save`), states and durations as one node shows them,
/// not summed.
#[test]
fn info_persistence_adds_up_the_masters_changes_and_keeps_states_unsummed() {
    let cluster = Cluster::shared();
    let proxy = proxy();
    let mut con = proxy.client();
    let number = |text: &str, name: &str| -> i64 {
        info_field(text, name).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name} in:\n{text}"))
    };
    let masters = cluster.masters();
    let node_sections = || -> Vec<String> {
        masters
            .iter()
            .map(|m| redis::cmd("INFO").arg("persistence").query(&mut cluster.client(m)).expect("node INFO"))
            .collect()
    };
    let changes_on_nodes =
        |sections: &[String]| -> i64 { sections.iter().map(|text| number(text, "rdb_changes_since_last_save")).sum() };
    let before = changes_on_nodes(&node_sections());
    let keys = cluster.key_per_master("info:persistence");
    for key in &keys {
        let _: () = con.set(key, 1).expect("SET");
    }
    let text: String = redis::cmd("INFO").arg("persistence").query(&mut con).expect("INFO persistence");
    let nodes = node_sections();
    let changes = number(&text, "rdb_changes_since_last_save");
    // Other tests write to the shared cluster meanwhile: the sum lies between the two readings.
    assert!(
        before + keys.len() as i64 <= changes && changes <= changes_on_nodes(&nodes),
        "{before} {changes} {nodes:?}"
    );
    assert_eq!(number(&text, "loading"), 0);
    let fold = |name: &str, pick: fn(i64, i64) -> i64| nodes.iter().map(|t| number(t, name)).reduce(pick);
    assert_eq!(Some(number(&text, "aof_enabled")), fold("aof_enabled", i64::max));
    assert_eq!(Some(number(&text, "rdb_last_bgsave_time_sec")), fold("rdb_last_bgsave_time_sec", i64::max));
    assert_eq!(Some(number(&text, "rdb_last_save_time")), fold("rdb_last_save_time", i64::min));
    assert_eq!(info_field(&text, "rdb_last_bgsave_status"), Some("ok"));
}
