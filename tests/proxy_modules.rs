//! Commands a module adds, which the proxy learns from the nodes' `COMMAND` reply: Redis 7.0.15's
//! key-spec test module (`tests/modules/keyspecs.c`) loaded into every node. For each way a module
//! declares its keys (only the legacy first/last/step, a getkeys callback, index and keyword
//! searches, ranges and key counts), the proxy's `COMMAND GETKEYS` — answered from what it learned —
//! is byte for byte the node's, and the command is routed by those keys: keys of one slot run on
//! their master, keys of several slots get the node's `-CROSSSLOT`.

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
    Cluster::start(ClusterOptions { extra_config: vec![modules::keyspecs_loadmodule()], ..ClusterOptions::default() })
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
    for case in CASES {
        // Every key in one slot: the command runs on that slot's master, as on the node.
        let one_slot = args(case, "m");
        let owner = cluster.node_for_key("{m}");
        let from_proxy = roundtrip(&proxy.addr(), &one_slot);
        assert_eq!(from_proxy, "+OK\r\n", "{case}, keys of one slot");
        assert_eq!(from_proxy, roundtrip(&owner, &one_slot), "{case}, keys of one slot, on the node");
        // The keys spread over slots: refused with a cluster node's error.
        let mut n = 0;
        let spread: Vec<String> = case
            .split(' ')
            .map(|arg| match arg.contains("{k}") {
                true => {
                    n += 1;
                    arg.replace("{k}", &format!("spread{n}:"))
                }
                false => arg.to_string(),
            })
            .collect();
        let from_proxy = roundtrip(&proxy.addr(), &spread);
        assert_eq!(from_proxy, "-CROSSSLOT Keys in request don't hash to the same slot\r\n", "{case}, keys over slots");
    }
}
