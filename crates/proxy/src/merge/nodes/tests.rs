//! Byte fixtures for the merges of operator commands: node replies in, the client's reply out,
//! RESP2 and RESP3.

use std::time::Duration;

use bytes::Bytes;

use crate::command::{Merge, OwnConfig, OwnValue};
use crate::merge::merge;
use crate::output_classes::{Class, Limits};
use crate::resp::reply::Protocol;

fn nodes(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("127.0.0.1:700{i}")).collect()
}

/// CONFIG GET from `n` masters, with the proxy's own settings at Redis' defaults.
fn config_get(n: usize) -> Merge {
    Merge::ConfigValues { nodes: nodes(n), own: own(1_000_000, Limits::NONE, PUBSUB_DEFAULT) }
}

const PUBSUB_DEFAULT: Limits = Limits { hard: 32 << 20, soft: 8 << 20, soft_time: Duration::from_secs(60) };

fn own(tracking_table_max_keys: usize, normal: Limits, pubsub: Limits) -> OwnConfig {
    own_with_maxclients(tracking_table_max_keys, 10_000, normal, pubsub)
}

fn own_with_maxclients(tracking_table_max_keys: usize, maxclients: usize, normal: Limits, pubsub: Limits) -> OwnConfig {
    let whole = |n: usize| OwnValue::Whole(n.to_string());
    vec![
        (&b"client-output-buffer-limit"[..], OwnValue::Classes([(Class::Normal, normal), (Class::PubSub, pubsub)])),
        (b"tracking-table-max-keys", whole(tracking_table_max_keys)),
        (b"maxclients", whole(maxclients)),
        (b"timeout", whole(0)),
    ]
}

fn merged(kind: Merge, parts: &[&[u8]]) -> Bytes {
    let parts: Vec<Bytes> = parts.iter().map(|p| Bytes::copy_from_slice(p)).collect();
    merge(&kind, &parts, &[])
}

fn text(reply: &[u8]) -> String {
    String::from_utf8_lossy(reply).into_owned()
}

#[test]
fn config_get_answers_the_value_most_masters_have() {
    let kind = config_get(3);
    let a: &[u8] = b"*4\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n$4\r\nport\r\n$4\r\n7000\r\n";
    let b: &[u8] = b"*4\r\n$9\r\nmaxmemory\r\n$3\r\n100\r\n$4\r\nport\r\n$4\r\n7001\r\n";
    let c: &[u8] = b"*4\r\n$9\r\nmaxmemory\r\n$3\r\n100\r\n$4\r\nport\r\n$4\r\n7002\r\n";
    // Two of three say 100; the ports are all different, so the first master's wins the tie.
    assert_eq!(
        &merged(kind.clone(), &[a, b, c])[..],
        b"*4\r\n$9\r\nmaxmemory\r\n$3\r\n100\r\n$4\r\nport\r\n$4\r\n7000\r\n"
    );
    // Agreeing masters: the first master's bytes exactly.
    assert_eq!(&merged(kind.clone(), &[a, a, a])[..], a);
    // A 1–1 tie goes to the first master.
    assert_eq!(&merged(config_get(2), &[a, b])[..], a);
}

#[test]
fn config_get_keeps_the_resp3_map_and_the_first_masters_order() {
    let kind = config_get(3);
    let a: &[u8] = b"%2\r\n$4\r\nport\r\n$4\r\n7000\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n";
    // Another master lists the parameters in another order: matched by name.
    let b: &[u8] = b"%2\r\n$9\r\nmaxmemory\r\n$1\r\n5\r\n$4\r\nport\r\n$4\r\n7001\r\n";
    let c: &[u8] = b"%2\r\n$9\r\nmaxmemory\r\n$1\r\n5\r\n$4\r\nport\r\n$4\r\n7002\r\n";
    assert_eq!(
        &merged(kind.clone(), &[a, b, c])[..],
        b"%2\r\n$4\r\nport\r\n$4\r\n7000\r\n$9\r\nmaxmemory\r\n$1\r\n5\r\n"
    );
    // No match: an empty reply stays empty.
    assert_eq!(&merged(kind.clone(), &[b"%0\r\n", b"%0\r\n", b"%0\r\n"])[..], b"%0\r\n");
    assert_eq!(&merged(kind, &[b"*0\r\n", b"*0\r\n", b"*0\r\n"])[..], b"*0\r\n");
}

#[test]
fn config_get_answers_the_settings_the_proxy_keeps_with_its_own_values() {
    let node = |max_keys: &str, limits: &str| {
        format!(
            "*6\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n$23\r\ntracking-table-max-keys\r\n${}\r\n{max_keys}\r\n\
             $26\r\nclient-output-buffer-limit\r\n${}\r\n{limits}\r\n",
            max_keys.len(),
            limits.len()
        )
    };
    let redis_default = "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60";
    let a = node("1000000", redis_default);
    let normal = Limits { hard: 1 << 20, soft: 0, soft_time: Duration::ZERO };
    let pubsub = Limits { hard: 2 << 20, soft: 1 << 20, soft_time: Duration::from_secs(5) };
    let kind = Merge::ConfigValues { nodes: nodes(2), own: own(1000, normal, pubsub) };
    // The replica class stays the nodes' (their value, whatever they call it).
    let expected = node("1000", "normal 1048576 0 0 slave 268435456 67108864 60 pubsub 2097152 1048576 5");
    assert_eq!(text(&merged(kind.clone(), &[a.as_bytes(), a.as_bytes()])), expected);
    // The proxy's defaults are Redis' own: a node at its defaults is answered as it is.
    assert_eq!(text(&merged(config_get(2), &[a.as_bytes(), a.as_bytes()])), a);
    // maxclients is the proxy's listener bound (RESP3 map too).
    let kind = Merge::ConfigValues { nodes: nodes(1), own: own_with_maxclients(1, 500, normal, pubsub) };
    let map: &[u8] = b"%1\r\n$10\r\nmaxclients\r\n$5\r\n10000\r\n";
    assert_eq!(text(&merged(kind, &[map])), "%1\r\n$10\r\nmaxclients\r\n$3\r\n500\r\n");
    // A value not made of class groups is the nodes'.
    let kind = Merge::ConfigValues { nodes: nodes(2), own: own(1000, normal, pubsub) };
    let odd = node("1000000", "normal 0 0");
    assert_eq!(text(&merged(kind, &[odd.as_bytes(), odd.as_bytes()])), node("1000", "normal 0 0"));
}

#[test]
fn config_get_passes_errors_and_rejects_odd_shapes() {
    let kind = config_get(2);
    let error: &[u8] = b"-ERR unknown subcommand\r\n";
    assert_eq!(&merged(kind.clone(), &[b"*0\r\n", error])[..], error);
    assert!(merged(kind.clone(), &[b"*1\r\n$1\r\na\r\n", b"*0\r\n"]).starts_with(b"-ERR proxy received"));
    assert!(merged(kind, &[b"*0\r\n", b"%0\r\n"]).starts_with(b"-ERR proxy received"));
}

#[test]
fn config_set_is_ok_only_when_every_node_says_ok() {
    let kind = || Merge::AllOkNamed { command: "CONFIG SET".into(), nodes: nodes(3) };
    assert_eq!(&merged(kind(), &[b"+OK\r\n", b"+OK\r\n", b"+OK\r\n"])[..], b"+OK\r\n");
    let refused = merged(kind(), &[b"+OK\r\n", b"-ERR Unsupported CONFIG parameter: foo\r\n", b"+OK\r\n"]);
    assert_eq!(
        text(&refused),
        "-ERR CONFIG SET failed on 127.0.0.1:7001 (ERR Unsupported CONFIG parameter: foo); 2 of 3 nodes said OK\r\n"
    );
}

#[test]
fn config_set_errors_name_every_node_grouped_by_reason() {
    let kind = Merge::AllOkNamed { command: "CONFIG SET".into(), nodes: nodes(4) };
    let parts: [&[u8]; 4] = [
        b"-ERR bad value\r\n",
        b"!21\r\nNOPERM no permissions\r\n",
        b"-ERR bad value\r\n",
        b"-ERR upstream timeout\r\n",
    ];
    assert_eq!(
        text(&merged(kind, &parts)),
        "-ERR CONFIG SET failed on 127.0.0.1:7000, 127.0.0.1:7002 (ERR bad value); on 127.0.0.1:7001 \
         (NOPERM no permissions); on 127.0.0.1:7003 (ERR upstream timeout); 0 of 4 nodes said OK\r\n"
    );
    // Anything but +OK is a failure, described.
    let kind = Merge::AllOkNamed { command: "SLOWLOG RESET".into(), nodes: nodes(2) };
    assert_eq!(
        text(&merged(kind, &[b"+OK\r\n", b":1\r\n"])),
        "-ERR SLOWLOG RESET failed on 127.0.0.1:7001 (:1); 1 of 2 nodes said OK\r\n"
    );
}

/// A Redis 7 slow log entry: id, timestamp, duration, args, client address, client name.
fn entry(id: i64, timestamp: i64, command: &str, name: &str) -> Vec<u8> {
    let mut out = format!("*6\r\n:{id}\r\n:{timestamp}\r\n:15\r\n*1\r\n${}\r\n{command}\r\n", command.len());
    out.push_str(&format!("$15\r\n127.0.0.1:50000\r\n${}\r\n{name}\r\n", name.len()));
    out.into_bytes()
}

fn list(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", entries.len()).into_bytes();
    entries.iter().for_each(|e| out.extend_from_slice(e));
    out
}

#[test]
fn slowlog_entries_are_merged_newest_first_and_tagged_with_their_node() {
    let a = list(&[entry(2, 1005, "SET", ""), entry(1, 1001, "GET", "app")]);
    let b = list(&[entry(7, 1004, "DEL", ""), entry(6, 1003, "INCR", "")]);
    let c = list(&[]);
    let tagged = |id, timestamp, command, name| entry(id, timestamp, command, name);
    let expected = list(&[
        tagged(2, 1005, "SET", "node=127.0.0.1:7000"),
        tagged(7, 1004, "DEL", "node=127.0.0.1:7001"),
        tagged(6, 1003, "INCR", "node=127.0.0.1:7001"),
    ]);
    let kind = Merge::Slowlog { nodes: nodes(3), count: 3 };
    assert_eq!(text(&merged(kind, &[&a, &b, &c])), text(&expected));
    // Every entry, with a client name kept after the node.
    let kind = Merge::Slowlog { nodes: nodes(3), count: usize::MAX };
    let all = merged(kind, &[&a, &b, &c]);
    assert!(text(&all).starts_with("*4\r\n"), "{}", text(&all));
    assert!(text(&all).ends_with(&text(&tagged(1, 1001, "GET", "node=127.0.0.1:7000 name=app"))));
    // Nothing logged anywhere, or count 0: an empty array.
    assert_eq!(&merged(Merge::Slowlog { nodes: nodes(2), count: 10 }, &[b"*0\r\n", b"*0\r\n"])[..], b"*0\r\n");
    assert_eq!(&merged(Merge::Slowlog { nodes: nodes(1), count: 0 }, &[&a])[..], b"*0\r\n");
}

#[test]
fn slowlog_entries_of_one_second_keep_master_order() {
    let a = list(&[entry(9, 1000, "A", "")]);
    let b = list(&[entry(3, 1000, "B", ""), entry(2, 1000, "C", "")]);
    let got = text(&merged(Merge::Slowlog { nodes: nodes(2), count: 10 }, &[&a, &b]));
    let (at_a, at_b, at_c) = (got.find("\r\nA\r\n"), got.find("\r\nB\r\n"), got.find("\r\nC\r\n"));
    assert!(at_a < at_b && at_b < at_c, "{got}");
}

#[test]
fn slowlog_passes_errors_and_copies_short_entries() {
    let kind = || Merge::Slowlog { nodes: nodes(2), count: 10 };
    let error: &[u8] = b"-ERR count should be greater than or equal to -1\r\n";
    assert_eq!(&merged(kind(), &[error, error])[..], error);
    // A Redis 3 entry (no client fields) is copied as received.
    let old: &[u8] = b"*1\r\n*4\r\n:1\r\n:1000\r\n:5\r\n*1\r\n$3\r\nGET\r\n";
    assert_eq!(&merged(kind(), &[old, b"*0\r\n"])[..], old);
    // An entry without a timestamp is not a slow log entry.
    assert!(merged(kind(), &[b"*1\r\n*2\r\n:1\r\n$1\r\nx\r\n", b"*0\r\n"]).starts_with(b"-ERR proxy received"));
}

#[test]
fn per_master_replies_are_keyed_by_address() {
    let parts: [&[u8]; 2] = [b"$5\r\nhello\r\n", b"*0\r\n"];
    let resp2 = merged(Merge::KeyedByNode { nodes: nodes(2), protocol: Protocol::Resp2 }, &parts);
    assert_eq!(text(&resp2), "*4\r\n$14\r\n127.0.0.1:7000\r\n$5\r\nhello\r\n$14\r\n127.0.0.1:7001\r\n*0\r\n");
    let verbatim: [&[u8]; 2] = [b"=9\r\ntxt:hello\r\n", b"%1\r\n$1\r\na\r\n:1\r\n"];
    let resp3 = merged(Merge::KeyedByNode { nodes: nodes(2), protocol: Protocol::Resp3 }, &verbatim);
    assert_eq!(
        text(&resp3),
        "%2\r\n$14\r\n127.0.0.1:7000\r\n=9\r\ntxt:hello\r\n$14\r\n127.0.0.1:7001\r\n%1\r\n$1\r\na\r\n:1\r\n"
    );
    // A node's error is the reply, as for every fan-out.
    let error: &[u8] = b"-ERR No samples available for event 'x'\r\n";
    assert_eq!(
        &merged(Merge::KeyedByNode { nodes: nodes(2), protocol: Protocol::Resp2 }, &[b"*0\r\n", error])[..],
        error
    );
}

#[test]
fn node_merges_never_panic_on_odd_input() {
    let kinds = [
        config_get(1),
        Merge::AllOkNamed { command: "CONFIG SET".into(), nodes: nodes(1) },
        Merge::Slowlog { nodes: nodes(1), count: 10 },
        Merge::KeyedByNode { nodes: nodes(1), protocol: Protocol::Resp3 },
    ];
    for kind in kinds {
        let _ = merge(&kind, &[], &[]);
        let _ = merged(kind.clone(), &[b"*3\r\n$1\r\na\r\n"]);
        let _ = merged(kind.clone(), &[b"*1\r\n:1\r\n:2\r\n"]);
        let _ = merged(kind.clone(), &[b"*99999999999\r\n"]);
        // More parts than named nodes.
        let _ = merged(kind.clone(), &[b"+OK\r\n", b"+OK\r\n"]);
        let _ = merged(kind, &[b"*1\r\n*6\r\n:1\r\n:2\r\n:3\r\n*0\r\n$1\r\na\r\n:7\r\n"]);
    }
}
