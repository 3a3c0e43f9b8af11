//! Whole-keyspace commands: SCAN with a cluster-wide cursor, INFO keyspace summed over masters.

use std::collections::HashSet;

use redisforge_tests::{Cluster, ClusterOptions, Proxy, ProxyOptions};

#[test]
fn scan_returns_every_key_exactly_once_across_masters() {
    let cluster = Cluster::start(ClusterOptions::default());
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let mut con = proxy.client();
    let mut pipe = redis::pipe();
    for i in 0..10_000 {
        pipe.set(format!("scan:{i}"), i).ignore();
    }
    pipe.hset("scan:hash", "f", "v").ignore();
    let () = pipe.query(&mut con).expect("write 10,000 keys");

    let mut seen = Vec::new();
    let mut cursor = "0".to_string();
    for round in 0..100_000 {
        let (next, keys): (String, Vec<String>) =
            redis::cmd("SCAN").arg(&cursor).arg("COUNT").arg(500).query(&mut con).expect("SCAN");
        seen.extend(keys);
        cursor = next;
        if cursor == "0" {
            break;
        }
        assert!(round < 99_999, "SCAN did not finish");
    }
    assert_eq!(seen.len(), 10_001, "every key once, none twice");
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), 10_001);

    // MATCH and TYPE are passed on to every master.
    let mut hashes = Vec::new();
    let mut cursor = "0".to_string();
    for _ in 0..100_000 {
        let (next, keys): (String, Vec<String>) = redis::cmd("SCAN")
            .arg(&cursor)
            .arg("MATCH")
            .arg("scan:*")
            .arg("TYPE")
            .arg("hash")
            .arg("COUNT")
            .arg(1000)
            .query(&mut con)
            .expect("SCAN TYPE");
        hashes.extend(keys);
        cursor = next;
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(hashes, ["scan:hash"]);
    let bad = redis::cmd("SCAN").arg("not-a-cursor").query::<redis::Value>(&mut con);
    assert!(bad.is_err_and(|e| e.to_string().contains("invalid cursor")));

    // INFO keyspace sums the masters; DBSIZE agrees.
    let info: String = redis::cmd("INFO").arg("keyspace").query(&mut con).expect("INFO keyspace");
    assert!(info.contains("db0:keys=10001,"), "{info}");
    let all: String = redis::cmd("INFO").query(&mut con).expect("INFO");
    assert!(all.contains("# Proxy") && all.contains("db0:keys=10001,"), "{all}");
    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut con).expect("DBSIZE");
    assert_eq!(dbsize, 10_001);
}
