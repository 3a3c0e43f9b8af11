//! Property: a multi-key command split per slot by `router::plan`, run on one node per slot and
//! merged by `merge::merge`, answers exactly what one Redis node holding every key answers, and
//! leaves the same data behind.
//!
//! Pure, no servers: a node is a `HashMap` model of Redis' MGET/MSET/DEL/EXISTS (string values and
//! a few hash keys, which MGET reports as nil), answering in RESP2 or RESP3 nulls. Commands come
//! with random keys from a small pool (so keys repeat) plus random bytes, hash tags often.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use redisforge_proxy::command::CommandTable;
use redisforge_proxy::merge::{self, KeyPlace};
use redisforge_proxy::resp::{Limits, Request, RequestDecoder};
use redisforge_proxy::router::{self, Route};
use redisforge_proxy::slot::{Slot, key_slot};

/// A value as the model stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    String(Vec<u8>),
    /// Any non-string type: MGET answers nil for it, DEL and EXISTS count it.
    Hash,
}

/// One Redis node's keyspace and its answers to the four split commands.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Node {
    data: HashMap<Vec<u8>, Value>,
}

fn bulk(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

fn arity_error(name: &str) -> Bytes {
    Bytes::from(format!("-ERR wrong number of arguments for '{name}' command\r\n"))
}

impl Node {
    /// What Redis 7.0 answers to `args`; `resp3` picks the null encoding.
    fn execute(&mut self, args: &[Vec<u8>], resp3: bool) -> Bytes {
        let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
        let keys = &args[1..];
        let out = match name.as_str() {
            "mget" if !keys.is_empty() => {
                let mut out = format!("*{}\r\n", keys.len()).into_bytes();
                for key in keys {
                    match self.data.get(key) {
                        Some(Value::String(v)) => bulk(&mut out, v),
                        _ => out.extend_from_slice(if resp3 { b"_\r\n" } else { b"$-1\r\n" }),
                    }
                }
                out
            }
            // Arity -3, and Redis checks the pairs itself: an odd count of arguments is refused.
            "mset" if keys.len() >= 2 && keys.len().is_multiple_of(2) => {
                for pair in keys.chunks(2) {
                    self.data.insert(pair[0].clone(), Value::String(pair[1].clone()));
                }
                b"+OK\r\n".to_vec()
            }
            "del" if !keys.is_empty() => {
                let n = keys.iter().filter(|k| self.data.remove(*k).is_some()).count();
                format!(":{n}\r\n").into_bytes()
            }
            "exists" if !keys.is_empty() => {
                let n = keys.iter().filter(|k| self.data.contains_key(*k)).count();
                format!(":{n}\r\n").into_bytes()
            }
            "mget" | "mset" | "del" | "exists" => return arity_error(&name),
            other => panic!("the model does not know {other}"),
        };
        Bytes::from(out)
    }
}

/// A cluster with one node per slot, driven through the proxy's planning and merging.
#[derive(Default)]
struct Cluster {
    nodes: HashMap<Slot, Node>,
}

impl Cluster {
    fn node(&mut self, slot: Slot) -> &mut Node {
        self.nodes.entry(slot).or_default()
    }

    fn execute(&mut self, table: &CommandTable, args: &[Vec<u8>], resp3: bool) -> Bytes {
        let request = Request::from_args(args);
        let mut scratch = Vec::new();
        match router::plan(table, &request, &mut scratch) {
            Route::Single { slot: Some(slot), .. } => self.node(slot).execute(args, resp3),
            Route::Split { merge, parts, places } => {
                check_places(&request, &parts, &places);
                let replies: Vec<Bytes> =
                    parts.iter().map(|part| self.node(part.slot).execute(&decode(&part.payload), resp3)).collect();
                merge::merge(&merge, &replies, &places)
            }
            Route::Refuse(error) => error.to_resp(),
            other => panic!("{:?} routed as {other:?}", show(args)),
        }
    }

    /// Every key the nodes hold, as one keyspace.
    fn keyspace(&self) -> HashMap<Vec<u8>, Value> {
        self.nodes.values().flat_map(|n| n.data.iter().map(|(k, v)| (k.clone(), v.clone()))).collect()
    }
}

/// Every node holds only keys of its own slot; checked after each command.
fn assert_keys_on_their_slot(cluster: &Cluster) {
    for (slot, node) in &cluster.nodes {
        for key in node.data.keys() {
            assert_eq!(key_slot(key), *slot, "{:?} stored on the node of slot {slot}", String::from_utf8_lossy(key));
        }
    }
}

/// The parts' places point at request keys that really sit there.
fn check_places(request: &Request, parts: &[router::Part], places: &[KeyPlace]) {
    let part_args: Vec<Vec<Vec<u8>>> = parts.iter().map(|p| decode(&p.payload)).collect();
    let step = if request.arg(0).eq_ignore_ascii_case(b"mset") { 2 } else { 1 };
    for (i, place) in places.iter().enumerate() {
        let key = request.arg(1 + i * step);
        let in_part = &part_args[place.part as usize][1 + place.index as usize * step];
        assert_eq!(in_part.as_slice(), key, "place {i} of {:?}", String::from_utf8_lossy(request.bytes()));
    }
}

fn decode(payload: &[u8]) -> Vec<Vec<u8>> {
    let mut buf = BytesMut::from(payload);
    let request = RequestDecoder::new(Limits::default())
        .decode(&mut buf)
        .expect("a part is valid RESP")
        .expect("a part is one whole request");
    (0..request.argc()).map(|i| request.arg(i).to_vec()).collect()
}

fn show(args: &[Vec<u8>]) -> Vec<String> {
    args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

/// Keys: a pool that repeats (plain, tagged, empty and odd tags), or a few random bytes, sometimes
/// wrapped in a hash tag.
fn key() -> impl Strategy<Value = Vec<u8>> {
    let pool = prop::sample::select(vec![
        "a",
        "b",
        "c",
        "user:1",
        "user:2",
        "{user}:1",
        "{user}:2",
        "{user}",
        "x{user}y",
        "{}a",
        "{}b",
        "{a",
        "a}",
        "{a}",
        "{b}x",
        "{b}y",
        "",
        "{",
        "}",
        "{{user}}",
        "foo{bar}{zap}",
        "foo{}{bar}",
    ])
    .prop_map(|k| k.as_bytes().to_vec());
    let random =
        (prop::collection::vec(any::<u8>(), 0..6), prop::option::of("[a-c]{0,2}")).prop_map(|(k, tag)| match tag {
            Some(tag) => [b"{".as_slice(), tag.as_bytes(), b"}", &k].concat(),
            None => k,
        });
    prop_oneof![3 => pool, 1 => random]
}

/// A command name in random case.
fn name(base: &'static str) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<bool>(), base.len()).prop_map(move |upper| {
        base.bytes().zip(upper).map(|(c, up)| if up { c.to_ascii_uppercase() } else { c }).collect()
    })
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..8)
}

/// Whether an MSET sometimes gets a trailing key without a value (Redis refuses it whole; see
/// `cross_slot_mset_with_a_missing_value_is_refused_like_redis`).
const DANGLING_MSET_KEYS: bool = true;

/// MGET/DEL/EXISTS with 0..8 keys, or MSET with 0..6 pairs and sometimes a key without a value.
fn command() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let keys_only = (prop_oneof![name("mget"), name("del"), name("exists")], prop::collection::vec(key(), 0..8))
        .prop_map(|(name, keys)| std::iter::once(name).chain(keys).collect::<Vec<_>>());
    let mset = (
        name("mset"),
        prop::collection::vec((key(), value()), 0..6),
        prop::option::weighted(0.1, key()).prop_map(|k| k.filter(|_| DANGLING_MSET_KEYS)),
    )
        .prop_map(|(name, pairs, dangling)| {
            let mut args = vec![name];
            for (k, v) in pairs {
                args.push(k);
                args.push(v);
            }
            args.extend(dangling);
            args
        });
    prop_oneof![2 => keys_only, 1 => mset]
}

/// Keys that start out holding a hash, so MGET has a non-string to report as nil.
fn hashes() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(key(), 0..3)
}

proptest! {
    // No regression files: the suite's own named tests below keep the cases that failed.
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn split_and_merged_multikey_commands_answer_like_one_redis_node(
        hash_keys in hashes(),
        commands in prop::collection::vec(command(), 1..24),
        resp3 in any::<bool>(),
    ) {
        let table = CommandTable::builtin();
        let mut single = Node::default();
        let mut cluster = Cluster::default();
        for key in hash_keys {
            single.data.insert(key.clone(), Value::Hash);
            cluster.node(key_slot(&key)).data.insert(key, Value::Hash);
        }
        for args in &commands {
            let expected = single.execute(args, resp3);
            let got = cluster.execute(&table, args, resp3);
            prop_assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&expected),
                "{:?}",
                show(args)
            );
            assert_keys_on_their_slot(&cluster);
            prop_assert_eq!(cluster.keyspace(), single.data.clone(), "data after {:?}", show(args));
        }
    }
}

/// The case the property found: `MSET a 1 b` with `a` and `b` in different slots. One Redis node
/// refuses it (an odd number of arguments); the proxy used to split it into `MSET a 1` and
/// `MSET b ""`.
#[test]
fn cross_slot_mset_with_a_missing_value_is_refused_like_redis() {
    let table = CommandTable::builtin();
    let args: Vec<Vec<u8>> = ["MSET", "a", "1", "b"].iter().map(|a| a.as_bytes().to_vec()).collect();
    assert_ne!(key_slot(b"a"), key_slot(b"b"));
    let got = Cluster::default().execute(&table, &args, false);
    let expected = Node::default().execute(&args, false);
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&expected));
    assert!(got.starts_with(b"-ERR wrong number of arguments"), "{}", String::from_utf8_lossy(&got));
}

/// The other case the property found: a reply whose element is an empty line made the frame
/// scanner slice out of bounds.
#[test]
fn merging_a_reply_with_an_empty_header_line_is_an_error_not_a_panic() {
    let parts = [Bytes::from_static(b"*1\r\n\r\n"), Bytes::from_static(b"*1\r\n$1\r\nb\r\n")];
    let places = [KeyPlace { part: 0, index: 0 }, KeyPlace { part: 1, index: 0 }];
    let merged = merge::merge(&redisforge_proxy::command::Merge::ArrayInKeyOrder, &parts, &places);
    assert!(merged.starts_with(b"-ERR"), "{merged:?}");
}
