//! Commands a module adds, which the proxy learns from the nodes' `COMMAND` reply: Redis 7.0.15's
//! key-spec test module (`tests/modules/keyspecs.c`) loaded into every node. For each way a module
//! declares its keys (only the legacy first/last/step, a getkeys callback, index and keyword
//! searches, ranges and key counts), the proxy's `COMMAND GETKEYS` — answered from what it learned —
//! is byte for byte the node's (Redis' own cases, `tests/unit/moduleapi/keyspecs.tcl`), and the
//! command is routed by those keys: keys of one slot go straight to their master (no `-MOVED` to
//! follow), keys of several slots get a node's `-CROSSSLOT` from the proxy, no node running it.

use std::time::Duration;

use redisforge_tests::{
    Cluster, ClusterOptions, Proxy, ProxyOptions, modules, raw_roundtrip_until, resp, resp_command,
};

/// Redis' own `COMMAND GETKEYS` cases for the module (tests/unit/moduleapi/keyspecs.tcl), with
/// `{k}` where a key goes.
const CASES: &[&str] = &[
    "kspec.none {k}1 val1 {k}2 val2",
    "kspec.nonewithgetkeys {k}1 val1 {k}2 val2",
    "kspec.tworanges {k}foo {k}bar baz quux",
    "kspec.tworangeswithgap {k}foo bar {k}baz quux",
    "kspec.keyword foo KEYS {k}bar {k}baz",
    "kspec.complex1 {k}foo dummy KEYS 1 {k}bar baz STORE {k}quux",
    "kspec.complex2 {k}foo {k}bar 2 {k}baz {k}quux banana STORE {k}dst dummy MOREKEYS {k}hey {k}ho",
];

fn cluster() -> Cluster {
    let module = modules::keyspecs_loadmodule(env!("CARGO_TARGET_TMPDIR"));
    Cluster::start(ClusterOptions { extra_config: vec![module], ..ClusterOptions::default() })
}

/// How often the masters ran or refused `kspec.*` commands (INFO commandstats' `calls` and
/// `rejected_calls`).
fn kspec_calls(cluster: &Cluster) -> u64 {
    let mut total = 0;
    for master in cluster.masters() {
        let info: String = redis::cmd("INFO").arg("commandstats").query(&mut cluster.client(&master)).expect("INFO");
        for line in info.lines().filter(|l| l.starts_with("cmdstat_kspec.")) {
            for field in line.split([':', ',']) {
                if let Some(n) = field.strip_prefix("calls=").or_else(|| field.strip_prefix("rejected_calls=")) {
                    total += n.parse::<u64>().expect("a count");
                }
            }
        }
    }
    total
}

/// `case` with each key given a tag of its own, every tag in another slot (asked of a node).
fn spread(cluster: &Cluster, case: &str) -> Vec<String> {
    let mut con = cluster.client(&cluster.masters()[0]);
    let mut slots = std::collections::HashSet::new();
    let mut candidates = (0..).map(|n| format!("spread{n}:"));
    case.split(' ')
        .map(|arg| match arg.contains("{k}") {
            true => {
                let key = candidates
                    .by_ref()
                    .find(|key| {
                        slots.insert(
                            redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query::<u16>(&mut con).expect("KEYSLOT"),
                        )
                    })
                    .expect("a key in a slot of its own");
                arg.replace("{k}", &key)
            }
            false => arg.to_string(),
        })
        .collect()
}

/// `case` with its keys' `{k}` made `{tag}`, split into arguments.
fn args(case: &str, tag: &str) -> Vec<String> {
    case.split(' ').map(|arg| arg.replace("{k}", &format!("{{{tag}}}"))).collect()
}

fn roundtrip(addr: &str, args: &[String]) -> String {
    let parts: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    let complete = |got: &[u8]| matches!(resp::parse(got), Ok(Some(_)));
    let reply = raw_roundtrip_until(addr, &resp_command(&parts), Duration::from_secs(5), complete);
    String::from_utf8_lossy(&reply).into_owned()
}

#[test]
fn command_getkeys_for_module_commands_matches_the_node() {
    let cluster = cluster();
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let node = cluster.masters().remove(0);
    for case in CASES {
        let mut getkeys = vec!["COMMAND".to_string(), "GETKEYS".to_string()];
        getkeys.extend(args(case, "k"));
        let from_node = roundtrip(&node, &getkeys);
        assert!(from_node.starts_with('*'), "{case}: the node answered {from_node:?}");
        assert_eq!(roundtrip(&proxy.addr(), &getkeys), from_node, "COMMAND GETKEYS {case}");
    }
}

#[test]
fn module_commands_are_routed_by_their_keys() {
    let cluster = cluster();
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let moved = || proxy.metric("redisforge_redirections_total{kind=\"moved\"}").expect("the MOVED counter");
    for case in CASES {
        // Every key in one slot: the command runs on that slot's master, as on the node, and the
        // proxy sent it there itself (a wrong guess would have been corrected by a -MOVED).
        let one_slot = args(case, "m");
        let owner = cluster.node_for_key("{m}");
        let from_proxy = roundtrip(&proxy.addr(), &one_slot);
        assert_eq!(from_proxy, "+OK\r\n", "{case}, keys of one slot");
        assert_eq!(from_proxy, roundtrip(&owner, &one_slot), "{case}, keys of one slot, on the node");
        assert_eq!(moved(), 0.0, "{case}: the proxy sent it to the wrong master first");
        // The keys spread over slots: refused with a cluster node's error, by the proxy itself.
        let before = kspec_calls(&cluster);
        let from_proxy = roundtrip(&proxy.addr(), &spread(&cluster, case));
        assert_eq!(from_proxy, "-CROSSSLOT Keys in request don't hash to the same slot\r\n", "{case}, keys over slots");
        assert_eq!(kspec_calls(&cluster), before, "{case}, keys over slots: a node saw it");
    }
    // The count does see what nodes run: each case ran twice with its keys in one slot (through
    // the proxy and on the node).
    assert_eq!(kspec_calls(&cluster), 2 * CASES.len() as u64);
}
