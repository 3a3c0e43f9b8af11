use super::*;
use crate::command::TransactionStep;
use crate::slot::key_slot;

fn route(args: &[&str]) -> Route {
    let table = CommandTable::builtin();
    plan(&table, &Request::from_args(args), &mut Vec::new())
}

fn error_text(route: Route) -> String {
    match route {
        Route::Refuse(error) => String::from_utf8_lossy(&error.to_resp()).into_owned(),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

#[test]
fn single_key_commands_route_to_their_slot() {
    assert_eq!(route(&["GET", "foo"]), Route::Single { slot: Some(12182), write: false });
    assert_eq!(route(&["set", "foo", "v"]), Route::Single { slot: Some(12182), write: true });
    assert_eq!(route(&["TIME"]), Route::Single { slot: None, write: false });
}

#[test]
fn same_slot_multi_key_commands_are_forwarded_whole() {
    let slot = key_slot(b"{u}");
    assert_eq!(route(&["MGET", "{u}a", "{u}b"]), Route::Single { slot: Some(slot), write: false });
    assert_eq!(route(&["RENAME", "{u}a", "{u}b"]), Route::Single { slot: Some(slot), write: true });
}

#[test]
fn cross_slot_atomic_commands_get_crossslot() {
    for args in [
        &["MSETNX", "a", "1", "b", "2"][..],
        &["RENAME", "a", "b"],
        &["SMOVE", "a", "b", "m"],
        &["SINTERSTORE", "d", "a", "b"],
        &["EVAL", "return 1", "2", "a", "b"],
    ] {
        assert_eq!(error_text(route(args)), "-CROSSSLOT Keys in request don't hash to the same slot\r\n", "{args:?}");
    }
}

#[test]
fn mget_is_split_per_slot_and_remembers_key_order() {
    let Route::Split { merge, parts, places } = route(&["MGET", "a", "b", "{a}x"]) else {
        panic!("expected a split");
    };
    assert_eq!(merge, Merge::ArrayInKeyOrder);
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0].slot, key_slot(b"a"));
    assert_eq!(&parts[0].payload[..], b"*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$4\r\n{a}x\r\n");
    assert_eq!(&parts[1].payload[..], b"*2\r\n$4\r\nMGET\r\n$1\r\nb\r\n");
    assert_eq!(
        places,
        vec![KeyPlace { part: 0, index: 0 }, KeyPlace { part: 1, index: 0 }, KeyPlace { part: 0, index: 1 },]
    );
}

#[test]
fn a_split_over_many_slots_keeps_every_key_in_its_slots_part_in_order() {
    // More slots than are searched in place: the groups are found through the map from the 17th.
    let keys: Vec<String> = (0..200).map(|i| format!("key:{}", i % 50)).collect();
    let mut args = vec!["MGET".to_string()];
    args.extend(keys.iter().cloned());
    let Route::Split { parts, places, .. } = route(&args.iter().map(String::as_str).collect::<Vec<_>>()) else {
        panic!("expected a split");
    };
    let distinct: std::collections::HashSet<Slot> = keys.iter().map(|k| key_slot(k.as_bytes())).collect();
    assert_eq!(parts.len(), distinct.len());
    assert!(parts.len() > 16, "{} parts", parts.len());
    // Each key's place names the part of its slot and the key's order among that part's keys.
    let mut seen = vec![0u32; parts.len()];
    for (key, place) in keys.iter().zip(&places) {
        let part = &parts[place.part as usize];
        assert_eq!(part.slot, key_slot(key.as_bytes()), "{key}");
        assert_eq!(place.index, seen[place.part as usize], "{key}");
        seen[place.part as usize] += 1;
        let needle = format!("${}\r\n{key}\r\n", key.len());
        assert!(part.payload.windows(needle.len()).any(|w| w == needle.as_bytes()), "{key} in its part");
    }
    // Parts come in order of their slot's first key.
    let firsts: Vec<u32> = places.iter().filter(|p| p.index == 0).map(|p| p.part).collect();
    assert_eq!(firsts, (0..parts.len() as u32).collect::<Vec<_>>());
}

#[test]
fn mset_keeps_values_with_their_keys() {
    let Route::Split { merge, parts, .. } = route(&["MSET", "a", "1", "b", "2"]) else {
        panic!("expected a split");
    };
    assert_eq!(merge, Merge::AllOk);
    assert_eq!(&parts[0].payload[..], b"*3\r\n$4\r\nMSET\r\n$1\r\na\r\n$1\r\n1\r\n");
    assert_eq!(&parts[1].payload[..], b"*3\r\n$4\r\nMSET\r\n$1\r\nb\r\n$1\r\n2\r\n");
}

#[test]
fn counting_commands_are_summed() {
    for name in ["DEL", "UNLINK", "EXISTS", "TOUCH"] {
        let Route::Split { merge, parts, .. } = route(&[name, "a", "b"]) else {
            panic!("expected a split for {name}");
        };
        assert_eq!(merge, Merge::SumIntegers);
        assert_eq!(parts.len(), 2);
    }
}

#[test]
fn fan_out_local_and_stateful() {
    assert_eq!(route(&["DBSIZE"]), Route::FanOut { merge: Merge::SumIntegers });
    assert_eq!(route(&["FLUSHALL"]), Route::FanOut { merge: Merge::AllOk });
    assert_eq!(route(&["KEYS", "user:*"]), Route::FanOut { merge: Merge::ConcatArrays });
    assert_eq!(route(&["RANDOMKEY"]), Route::Local(LocalKind::RandomKey));
    assert_eq!(route(&["SCRIPT", "LOAD", "return 1"]), Route::FanOut { merge: Merge::SameReply });
    assert_eq!(route(&["pubsub", "shardnumsub", "a", "b"]), Route::FanOut { merge: Merge::SumPairs });
    assert_eq!(route(&["PING"]), Route::Local(LocalKind::Echo));
    assert_eq!(route(&["client", "setname", "x"]), Route::Local(LocalKind::Connection));
    assert_eq!(route(&["MULTI"]), Route::Stateful(StatefulKind::Transaction(TransactionStep::Multi)));
    assert_eq!(route(&["BLPOP", "a", "0"]), Route::Stateful(StatefulKind::Blocking));
    assert_eq!(route(&["SUBSCRIBE", "c"]), Route::Stateful(StatefulKind::PubSub));
}

#[test]
fn xread_blocks_only_with_block() {
    assert_eq!(
        route(&["XREAD", "COUNT", "1", "STREAMS", "s", "0"]),
        Route::Single { slot: Some(key_slot(b"s")), write: false }
    );
    assert_eq!(route(&["XREAD", "BLOCK", "0", "STREAMS", "s", "0"]), Route::Stateful(StatefulKind::Blocking));
    // A stream named "block" is a key, not the option.
    assert!(matches!(route(&["XREAD", "STREAMS", "block", "0"]), Route::Single { .. }));
}

#[test]
fn errors_use_redis_wording() {
    assert_eq!(
        error_text(route(&["NOSUCH", "a", "b"])),
        "-ERR unknown command 'NOSUCH', with args beginning with: 'a' 'b' \r\n"
    );
    assert_eq!(error_text(route(&["GET"])), "-ERR wrong number of arguments for 'get' command\r\n");
    let refused = error_text(route(&["MONITOR"]));
    assert!(refused.starts_with("-ERR unsupported command 'MONITOR' in proxy"), "{refused}");
    assert_eq!(error_text(route(&["KEYS"])), "-ERR wrong number of arguments for 'keys' command\r\n");
    assert_eq!(error_text(route(&["RANDOMKEY", "x"])), "-ERR wrong number of arguments for 'randomkey' command\r\n");
    // SCAN is answered by the session with a cluster-wide cursor.
    assert_eq!(route(&["SCAN", "0"]), Route::Local(LocalKind::Scan));
    let cluster = error_text(route(&["CLUSTER", "SETSLOT", "1", "STABLE"]));
    assert!(cluster.starts_with("-ERR unsupported command 'CLUSTER' in proxy"), "{cluster}");
}

#[test]
fn a_malformed_exec_is_an_aborted_transaction_as_in_redis() {
    assert_eq!(
        error_text(route(&["EXEC", "x"])),
        "-EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command\r\n"
    );
    assert_eq!(error_text(route(&["MULTI", "x"])), "-ERR wrong number of arguments for 'multi' command\r\n");
}

#[test]
fn countkeysinslot_goes_to_the_owner_of_the_slot_it_names() {
    assert_eq!(route(&["CLUSTER", "COUNTKEYSINSLOT", "12182"]), Route::Single { slot: Some(12182), write: false });
    assert_eq!(route(&["cluster", "countkeysinslot", "0"]), Route::Single { slot: Some(0), write: false });
    // Not a slot: any master answers with Redis' own error.
    for bad in ["16384", "-1", "x", ""] {
        assert_eq!(route(&["CLUSTER", "COUNTKEYSINSLOT", bad]), Route::Single { slot: None, write: false }, "{bad}");
    }
    assert_eq!(route(&["CLUSTER", "KEYSLOT", "12182"]), Route::Single { slot: None, write: false });
}

#[test]
fn connection_state_commands_that_would_leak_to_other_clients_are_refused() {
    for args in [&["ASKING"][..], &["SCRIPT", "DEBUG", "YES"], &["SCRIPT", "DEBUG", "NO"]] {
        let text = error_text(route(args));
        assert!(text.starts_with(&format!("-ERR unsupported command '{}' in proxy: ", args[0])), "{args:?}: {text}");
    }
}

#[test]
fn operator_commands_go_to_named_nodes() {
    assert_eq!(route(&["CONFIG", "GET", "maxmemory"]), Route::Admin(AdminKind::ConfigGet));
    assert_eq!(route(&["config", "set", "maxmemory", "0"]), Route::Admin(AdminKind::EveryNode));
    assert_eq!(route(&["CONFIG", "RESETSTAT"]), Route::Admin(AdminKind::EveryNode));
    assert_eq!(route(&["SLOWLOG", "GET", "5"]), Route::Admin(AdminKind::SlowlogGet));
    assert_eq!(route(&["SLOWLOG", "RESET"]), Route::Admin(AdminKind::EveryMasterOk));
    assert_eq!(route(&["SLOWLOG", "LEN"]), Route::FanOut { merge: Merge::SumIntegers });
    assert_eq!(route(&["LATENCY", "LATEST"]), Route::Admin(AdminKind::PerMaster));
    assert_eq!(route(&["MEMORY", "STATS"]), Route::Admin(AdminKind::PerMaster));
    // Arity is still the proxy's to check.
    assert!(error_text(route(&["CONFIG", "SET", "maxmemory"])).contains("wrong number of arguments"));
}

#[test]
fn refusals_say_why_and_what_to_do_instead() {
    let cases: [(&[&str], &str); 8] = [
        (&["SHUTDOWN"], "it would stop one cluster node"),
        (&["DEBUG", "SLEEP", "0"], "run it on a node directly"),
        (&["MONITOR"], "run MONITOR on a node directly"),
        (&["PSYNC", "?", "-1"], "replication stream"),
        (&["REPLICAOF", "NO", "ONE"], "redisforge-ops cluster add --replica-of"),
        (&["CLUSTER", "FAILOVER"], "run CLUSTER FAILOVER on that replica"),
        (&["CLUSTER", "SETSLOT", "1", "STABLE"], "use redisforge-ops cluster"),
        (&["BGSAVE"], "redisforge-ops backup"),
    ];
    for (args, why) in cases {
        let text = error_text(route(args));
        let prefix = format!("-ERR unsupported command '{}' in proxy: ", args[0]);
        assert!(text.starts_with(&prefix) && text.contains(why), "{args:?}: {text}");
    }
}

#[test]
fn publish_and_pubsub_introspection_go_to_the_pubsub_home() {
    for args in
        [&["PUBLISH", "ch", "m"][..], &["PUBSUB", "NUMSUB", "ch"], &["PUBSUB", "CHANNELS"], &["PUBSUB", "NUMPAT"]]
    {
        assert_eq!(route(args), Route::Single { slot: Some(PUBSUB_HOME_SLOT), write: true }, "{args:?}");
    }
    // Sharded publishing goes by the channel's slot, as before.
    assert!(matches!(route(&["SPUBLISH", "ch", "m"]), Route::Single { slot: Some(s), .. } if s == key_slot(b"ch")));
}

#[test]
fn inside_multi_publish_and_a_bad_numkeys_tie_the_transaction_to_no_slot() {
    let table = CommandTable::builtin();
    let slot = |args: &[&str]| {
        let request = Request::from_args(args);
        let spec = table.lookup(&request).expect("known");
        slot_in_transaction(spec, &request, &mut Vec::new())
    };
    assert_eq!(slot(&["PUBLISH", "ch", "hi"]), Ok(None), "alone it goes to the pub/sub home, slot 0");
    assert_eq!(slot(&["EVAL", "return 1", "5", "a"]), Ok(None), "queued; the node's EXEC answers the error");
    assert_eq!(slot(&["ZUNIONSTORE", "d", "x", "a"]), Ok(None));
    assert_eq!(slot(&["SET", "foo", "1"]), Ok(Some(key_slot(b"foo"))));
    assert_eq!(slot(&["SPUBLISH", "foo", "m"]), Ok(Some(key_slot(b"foo"))), "a shard channel keeps its slot");
    assert_eq!(slot(&["MGET", "{a}1", "{b}2"]), Err(ProxyError::CrossSlot));
}
