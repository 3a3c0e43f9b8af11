//! Protocol details where the proxy answers for one Redis node, each checked against a real node
//! with the same bytes: PING's arity, request headers that count no arguments, CLIENT REPLY
//! OFF/ON/SKIP, a `no_multi` command inside MULTI; and RANDOMKEY drawing from every master.

use std::collections::HashSet;
use std::time::Duration;

use redisforge_tests::{Cluster, ClusterOptions, Proxy, ProxyOptions, RedisServer, query_args, raw_roundtrip};

/// Sends the same raw bytes (which end with QUIT) through the proxy and to a standalone node;
/// the two answers must be identical. Returns the answer.
fn same_as_a_node(bytes: &[u8]) -> String {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let node = RedisServer::start(dir.path(), |port| vec![format!("port {port}")]).expect("reference node");
    let through_proxy = raw_roundtrip(&proxy.addr(), bytes, Duration::from_secs(5));
    let on_node = raw_roundtrip(&node.addr(), bytes, Duration::from_secs(5));
    let (through_proxy, on_node) = (String::from_utf8_lossy(&through_proxy), String::from_utf8_lossy(&on_node));
    assert_eq!(through_proxy, on_node, "proxy vs node for {:?}", String::from_utf8_lossy(bytes));
    through_proxy.into_owned()
}

#[test]
fn ping_arity_and_empty_headers_match_a_node() {
    let answer = same_as_a_node(b"PING a b c\r\nPING\r\n*-10\r\n*0\r\nPING x\r\n*-1\r\nQUIT\r\n");
    assert_eq!(answer, "-ERR wrong number of arguments for 'ping' command\r\n+PONG\r\n$1\r\nx\r\n+OK\r\n");
}

#[test]
fn client_reply_off_on_and_skip_match_a_node() {
    // The commands run while their replies are dropped: the SETs take effect.
    let answer = same_as_a_node(
        b"CLIENT REPLY OFF\r\nSET {reply}a 1\r\nGET {reply}a\r\nNOSUCH\r\nCLIENT REPLY ON\r\nGET {reply}a\r\n\
          CLIENT REPLY SKIP\r\nSET {reply}b 2\r\nGET {reply}b\r\nCLIENT REPLY SKIP\r\nCLIENT REPLY SKIP\r\n\
          PING\r\nCLIENT REPLY OFF\r\nCLIENT REPLY SKIP\r\nPING\r\nCLIENT REPLY ON\r\nCLIENT REPLY MAYBE\r\nQUIT\r\n",
    );
    assert_eq!(answer, "+OK\r\n$1\r\n1\r\n$1\r\n2\r\n+OK\r\n-ERR syntax error\r\n+OK\r\n");
}

#[test]
fn a_no_multi_command_inside_multi_gets_redis_error_and_aborts_exec() {
    let answer = same_as_a_node(b"MULTI\r\nSET {nomulti}a 1\r\nSAVE\r\nEXEC\r\nGET {nomulti}a\r\nQUIT\r\n");
    assert!(answer.contains("-ERR Command not allowed inside a transaction\r\n-EXECABORT"), "{answer}");
}

#[test]
fn randomkey_draws_from_every_master() {
    // A cluster of its own: the three keys below are all it holds, so RANDOMKEY can only answer
    // one of them, each a third of the time.
    let cluster = Cluster::start(ClusterOptions { replicas_per_master: 0, ..ClusterOptions::default() });
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let mut con = proxy.client();
    let keys = cluster.key_per_master("randomkey");
    for key in &keys {
        assert_eq!(query_args(&mut con, &["SET", key, "v"]), Ok(redis::Value::Okay));
    }
    let mut seen = HashSet::new();
    for _ in 0..300 {
        if let Ok(redis::Value::BulkString(key)) = query_args(&mut con, &["RANDOMKEY"]) {
            seen.insert(String::from_utf8_lossy(&key).into_owned());
        }
        if keys.iter().all(|k| seen.contains(k)) {
            break;
        }
    }
    assert!(keys.iter().all(|k| seen.contains(k)), "RANDOMKEY drew only {seen:?} of {keys:?}");
}
