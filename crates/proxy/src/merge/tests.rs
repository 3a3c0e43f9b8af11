//! Byte fixtures for every merge: node replies in, the client's reply out, RESP2 and RESP3.

use super::*;

fn b(s: &[u8]) -> Bytes {
    Bytes::copy_from_slice(s)
}

fn merged(kind: Merge, parts: &[&[u8]]) -> Bytes {
    let parts: Vec<Bytes> = parts.iter().map(|p| b(p)).collect();
    merge(&kind, &parts, &[])
}

fn is_shape_error(reply: &[u8]) -> bool {
    reply.starts_with(b"-ERR proxy received an unexpected reply shape")
}

#[test]
fn mget_values_come_back_in_key_order() {
    // MGET a b c: a and c went to part 0, b to part 1.
    let parts = [b(b"*2\r\n$2\r\nva\r\n$-1\r\n"), b(b"*1\r\n$2\r\nvb\r\n")];
    let places = [KeyPlace { part: 0, index: 0 }, KeyPlace { part: 1, index: 0 }, KeyPlace { part: 0, index: 1 }];
    let merged = merge(&Merge::ArrayInKeyOrder, &parts, &places);
    assert_eq!(&merged[..], b"*3\r\n$2\r\nva\r\n$2\r\nvb\r\n$-1\r\n");
}

#[test]
fn counts_are_summed_and_oks_collapse() {
    assert_eq!(&merged(Merge::SumIntegers, &[b":2\r\n", b":0\r\n", b":1\r\n"])[..], b":3\r\n");
    assert_eq!(&merged(Merge::AllOk, &[b"+OK\r\n", b"+OK\r\n"])[..], b"+OK\r\n");
}

#[test]
fn first_error_wins() {
    let parts: [&[u8]; 3] = [b":1\r\n", b"-WRONGTYPE x\r\n", b"-ERR y\r\n"];
    assert_eq!(&merged(Merge::SumIntegers, &parts)[..], b"-WRONGTYPE x\r\n");
    for kind in [Merge::SameReply, Merge::ConcatArrays, Merge::FunctionStats, Merge::UnionArrays, Merge::SumPairs] {
        assert_eq!(&merged(kind.clone(), &[b"*0\r\n", b"-ERR y\r\n", b"-ERR z\r\n"])[..], b"-ERR y\r\n", "{kind:?}");
    }
    // RESP3 blob errors are errors too.
    assert_eq!(&merged(none_remembered(), &[b"*1\r\n:1\r\n", b"!3\r\nERR\r\n"])[..], b"!3\r\nERR\r\n");
}

#[test]
fn unexpected_shapes_are_an_error_not_a_panic() {
    let parts = [b(b"+QUEUED\r\n")];
    let places = [KeyPlace { part: 0, index: 0 }];
    assert!(merge(&Merge::ArrayInKeyOrder, &parts, &places).starts_with(b"-ERR"));
    assert!(merge(&Merge::SumIntegers, &parts, &[]).starts_with(b"-ERR"));
    assert!(merge(&Merge::AllOk, &[b(b"+QUEUED\r\n")], &[]).starts_with(b"-ERR"));
    let short = [b(b"*1\r\n$1\r\na\r\n")];
    let too_many = [KeyPlace { part: 0, index: 3 }];
    assert!(merge(&Merge::ArrayInKeyOrder, &short, &too_many).starts_with(b"-ERR"));
    let kinds = [
        Merge::SameReply,
        Merge::ScriptExists { remembered: Vec::new() },
        Merge::AnyOk,
        Merge::ConcatArrays,
        Merge::FunctionStats,
        Merge::UnionArrays,
        Merge::SumPairs,
        Merge::ScanCursor { master: 0, masters: 2 },
        Merge::InfoSums { own: Vec::new() },
    ];
    for kind in kinds {
        // No parts at all, a truncated frame, trailing bytes: never a panic.
        let _ = merge(&kind, &[], &[]);
        let _ = merged(kind.clone(), &[b"*3\r\n$1\r\na\r\n"]);
        let _ = merged(kind.clone(), &[b"*1\r\n:1\r\n:2\r\n"]);
        let _ = merged(kind.clone(), &[b"*99999999999\r\n"]);
    }
}

#[test]
fn same_reply_returns_the_agreed_sha() {
    let sha: &[u8] = b"$40\r\ne0e1f9fabfc9d4800c877a703b823ac0578ff8db\r\n";
    assert_eq!(&merged(Merge::SameReply, &[sha, sha, sha])[..], sha);
    // FUNCTION LOAD answers with the library name.
    assert_eq!(&merged(Merge::SameReply, &[b"$3\r\nlib\r\n", b"$3\r\nlib\r\n"])[..], b"$3\r\nlib\r\n");
}

#[test]
fn same_reply_reports_nodes_that_disagree() {
    let reply = merged(Merge::SameReply, &[b"$1\r\na\r\n", b"$1\r\na\r\n", b"$1\r\nb\r\n"]);
    assert_eq!(&reply[..], b"-ERR nodes disagree: node 0 replied 'a', node 2 replied 'b'\r\n");
    let long = format!("${}\r\n{}\r\n", 100, "x".repeat(100));
    let reply = merged(Merge::SameReply, &[long.as_bytes(), b":1\r\n"]);
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("-ERR nodes disagree: node 0 replied 'xxx") && text.contains("…', node 1 replied ':1'"));
    assert!(text.ends_with("\r\n") && !text[..text.len() - 2].contains(['\r', '\n']), "{text}");
}

fn none_remembered() -> Merge {
    Merge::ScriptExists { remembered: Vec::new() }
}

#[test]
fn script_exists_is_true_only_where_every_master_has_the_script() {
    let parts: [&[u8]; 3] = [b"*3\r\n:1\r\n:1\r\n:0\r\n", b"*3\r\n:1\r\n:0\r\n:1\r\n", b"*3\r\n:1\r\n:1\r\n:1\r\n"];
    assert_eq!(&merged(none_remembered(), &parts)[..], b"*3\r\n:1\r\n:0\r\n:0\r\n");
    // RESP3 booleans are understood and copied as received.
    assert_eq!(&merged(none_remembered(), &[b"*2\r\n#t\r\n#t\r\n", b"*2\r\n#f\r\n#t\r\n"])[..], b"*2\r\n#f\r\n#t\r\n");
    assert_eq!(&merged(none_remembered(), &[b"*0\r\n", b"*0\r\n"])[..], b"*0\r\n");
}

#[test]
fn script_exists_of_a_remembered_script_is_true_where_one_master_has_it() {
    // The proxy remembers scripts 1 and 2; script 2 is on no master (it did not compile).
    let remembered = Merge::ScriptExists { remembered: vec![false, true, true] };
    let parts: [&[u8]; 2] = [b"*3\r\n:1\r\n:0\r\n:0\r\n", b"*3\r\n:0\r\n:1\r\n:0\r\n"];
    assert_eq!(&merged(remembered.clone(), &parts)[..], b"*3\r\n:0\r\n:1\r\n:0\r\n");
    assert_eq!(&merged(remembered, &[b"*3\r\n#f\r\n#f\r\n#t\r\n"])[..], b"*3\r\n#f\r\n#f\r\n#t\r\n");
}

#[test]
fn script_exists_with_different_lengths_or_non_integers_is_a_shape_error() {
    assert!(is_shape_error(&merged(none_remembered(), &[b"*1\r\n:1\r\n", b"*2\r\n:1\r\n:1\r\n"])));
    assert!(is_shape_error(&merged(none_remembered(), &[b"*1\r\n$1\r\n1\r\n"])));
}

#[test]
fn script_kill_is_ok_when_any_master_killed_a_script() {
    let notbusy: &[u8] = b"-NOTBUSY No scripts in execution right now.\r\n";
    assert_eq!(&merged(Merge::AnyOk, &[notbusy, b"+OK\r\n", notbusy])[..], b"+OK\r\n");
    assert_eq!(&merged(Merge::AnyOk, &[notbusy, notbusy])[..], notbusy);
}

#[test]
fn script_kill_prefers_an_unkillable_script_over_notbusy() {
    let notbusy: &[u8] = b"-NOTBUSY No scripts in execution right now.\r\n";
    let unkillable: &[u8] = b"-UNKILLABLE Sorry the script already executed write commands\r\n";
    assert_eq!(&merged(Merge::AnyOk, &[notbusy, unkillable, notbusy])[..], unkillable);
}

#[test]
fn script_show_answers_with_the_master_that_knows_the_script() {
    let noscript: &[u8] = b"-NOSCRIPT No matching script.\r\n";
    let body: &[u8] = b"$8\r\nreturn 1\r\n";
    assert_eq!(&merged(Merge::AnyOk, &[noscript, body, noscript])[..], body);
    assert_eq!(&merged(Merge::AnyOk, &[noscript, noscript])[..], noscript);
}

#[test]
fn keys_of_every_master_are_flattened() {
    let parts: [&[u8]; 3] = [b"*2\r\n$1\r\na\r\n$2\r\nbb\r\n", b"*0\r\n", b"*1\r\n$3\r\nccc\r\n"];
    assert_eq!(&merged(Merge::ConcatArrays, &parts)[..], b"*3\r\n$1\r\na\r\n$2\r\nbb\r\n$3\r\nccc\r\n");
    assert_eq!(&merged(Merge::ConcatArrays, &[b"*0\r\n", b"*0\r\n"])[..], b"*0\r\n");
    // Binary keys are copied byte for byte.
    let binary: &[u8] = b"*1\r\n$4\r\n\r\n\x00\xff\r\n";
    assert_eq!(&merged(Merge::ConcatArrays, &[binary, b"*0\r\n"])[..], binary);
}

#[test]
fn arrays_of_different_kinds_are_not_mixed() {
    assert!(is_shape_error(&merged(Merge::ConcatArrays, &[b"*1\r\n$1\r\na\r\n", b"~1\r\n$1\r\nb\r\n"])));
    assert!(is_shape_error(&merged(Merge::ConcatArrays, &[b"$1\r\na\r\n"])));
    assert_eq!(
        &merged(Merge::ConcatArrays, &[b"~1\r\n$1\r\na\r\n", b"~1\r\n$1\r\nb\r\n"])[..],
        b"~2\r\n$1\r\na\r\n$1\r\nb\r\n"
    );
}

#[test]
fn channels_are_deduplicated_in_order_of_first_appearance() {
    let parts: [&[u8]; 3] =
        [b"*2\r\n$1\r\na\r\n$1\r\nb\r\n", b"*2\r\n$1\r\nc\r\n$1\r\na\r\n", b"*2\r\n$1\r\nb\r\n$1\r\nd\r\n"];
    assert_eq!(&merged(Merge::UnionArrays, &parts)[..], b"*4\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n");
    assert_eq!(&merged(Merge::UnionArrays, &[b"*0\r\n", b"*0\r\n"])[..], b"*0\r\n");
    // A RESP3 set stays a set.
    assert_eq!(&merged(Merge::UnionArrays, &[b"~1\r\n$1\r\na\r\n", b"~1\r\n$1\r\na\r\n"])[..], b"~1\r\n$1\r\na\r\n");
}

#[test]
fn numsub_counts_are_summed_per_channel() {
    let parts: [&[u8]; 2] = [b"*4\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n:0\r\n", b"*4\r\n$1\r\na\r\n:2\r\n$1\r\nb\r\n:5\r\n"];
    assert_eq!(&merged(Merge::SumPairs, &parts)[..], b"*4\r\n$1\r\na\r\n:3\r\n$1\r\nb\r\n:5\r\n");
    assert_eq!(&merged(Merge::SumPairs, &[b"*0\r\n", b"*0\r\n"])[..], b"*0\r\n");
    // A channel asked for twice is counted in both places, as Redis lists it twice.
    let twice: &[u8] = b"*4\r\n$1\r\na\r\n:1\r\n$1\r\na\r\n:1\r\n";
    assert_eq!(&merged(Merge::SumPairs, &[twice, twice])[..], b"*4\r\n$1\r\na\r\n:2\r\n$1\r\na\r\n:2\r\n");
}

#[test]
fn numsub_as_a_resp3_map_stays_a_map() {
    let parts: [&[u8]; 2] = [b"%2\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n:0\r\n", b"%2\r\n$1\r\na\r\n:2\r\n$1\r\nb\r\n:5\r\n"];
    assert_eq!(&merged(Merge::SumPairs, &parts)[..], b"%2\r\n$1\r\na\r\n:3\r\n$1\r\nb\r\n:5\r\n");
}

#[test]
fn numsub_with_different_names_or_odd_arrays_is_a_shape_error() {
    let (a, b_): (&[u8], &[u8]) = (b"*2\r\n$1\r\na\r\n:1\r\n", b"*2\r\n$1\r\nb\r\n:1\r\n");
    assert!(is_shape_error(&merged(Merge::SumPairs, &[a, b_])));
    assert!(is_shape_error(&merged(Merge::SumPairs, &[b"*1\r\n$1\r\na\r\n"])));
    assert!(is_shape_error(&merged(Merge::SumPairs, &[a, b"*0\r\n"])));
    assert!(is_shape_error(&merged(Merge::SumPairs, &[a, b"%1\r\n$1\r\na\r\n:1\r\n"])));
    assert!(is_shape_error(&merged(Merge::SumPairs, &[b"*2\r\n$1\r\na\r\n$1\r\n1\r\n"])));
}

fn scan(master: usize, masters: usize, reply: &[u8]) -> Bytes {
    merged(Merge::ScanCursor { master, masters }, &[reply])
}

#[test]
fn scan_cursor_keeps_scanning_the_same_master() {
    let reply = scan(2, 3, b"*2\r\n$2\r\n17\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n");
    assert_eq!(&reply[..], b"*2\r\n$5\r\n17410\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n");
    assert_eq!(split_scan_cursor(b"17410"), Some((17, 2)));
}

#[test]
fn scan_cursor_moves_to_the_next_master_then_ends() {
    assert_eq!(&scan(0, 3, b"*2\r\n$1\r\n0\r\n*1\r\n$1\r\nk\r\n")[..], b"*2\r\n$1\r\n1\r\n*1\r\n$1\r\nk\r\n");
    assert_eq!(split_scan_cursor(b"1"), Some((0, 1)));
    assert_eq!(&scan(1, 3, b"*2\r\n$1\r\n0\r\n*0\r\n")[..], b"*2\r\n$1\r\n2\r\n*0\r\n");
    assert_eq!(&scan(2, 3, b"*2\r\n$1\r\n0\r\n*0\r\n")[..], b"*2\r\n$1\r\n0\r\n*0\r\n");
    assert_eq!(&scan(0, 1, b"*2\r\n$1\r\n0\r\n*0\r\n")[..], b"*2\r\n$1\r\n0\r\n*0\r\n");
    // The client's first cursor starts at master 0.
    assert_eq!(split_scan_cursor(b"0"), Some((0, 0)));
}

#[test]
fn scan_cursor_round_trips_and_rejects_what_it_cannot_hold() {
    for (node, master) in [(0u64, 0usize), (1, 0), (5, 1023), (u64::MAX / 1024, 1023)] {
        let cursor = join_scan_cursor(node, master).expect("fits");
        assert_eq!(split_scan_cursor(cursor.to_string().as_bytes()), Some((node, master)));
    }
    assert_eq!(join_scan_cursor(u64::MAX / 1024 + 1, 0), None);
    assert_eq!(join_scan_cursor(0, 1024), None);
    let huge = format!("*2\r\n$20\r\n{}\r\n*0\r\n", u64::MAX);
    assert!(scan(0, 2, huge.as_bytes()).starts_with(b"-ERR proxy cannot continue SCAN"));
    assert!(scan(1024, 2000, b"*2\r\n$1\r\n5\r\n*0\r\n").starts_with(b"-ERR proxy cannot continue SCAN"));
}

#[test]
fn invalid_client_cursors_are_rejected() {
    for cursor in [&b""[..], b"-1", b"+1", b" 1", b"1x", b"abc", b"18446744073709551616"] {
        assert_eq!(split_scan_cursor(cursor), None, "{}", String::from_utf8_lossy(cursor));
    }
    assert_eq!(split_scan_cursor(b"18446744073709551615"), Some((u64::MAX / 1024, 1023)));
}

#[test]
fn scan_cursor_passes_errors_and_rejects_other_shapes() {
    assert_eq!(&scan(0, 3, b"-ERR invalid cursor\r\n")[..], b"-ERR invalid cursor\r\n");
    assert!(is_shape_error(&scan(0, 3, b"*1\r\n$1\r\n0\r\n")));
    assert!(is_shape_error(&scan(0, 3, b"*2\r\n$1\r\nx\r\n*0\r\n")));
    assert!(is_shape_error(&scan(0, 3, b"*2\r\n:0\r\n*0\r\n")));
    let two = [b(b"*2\r\n$1\r\n0\r\n*0\r\n"), b(b"*2\r\n$1\r\n0\r\n*0\r\n")];
    assert!(is_shape_error(&merge(&Merge::ScanCursor { master: 0, masters: 2 }, &two, &[])));
}

fn sums() -> Merge {
    Merge::InfoSums { own: Vec::new() }
}

fn bulk(text: &str) -> Vec<u8> {
    format!("${}\r\n{text}\r\n", text.len()).into_bytes()
}

#[test]
fn keyspace_info_sums_keys_and_weights_avg_ttl_by_expires() {
    let a = bulk("# Keyspace\r\ndb0:keys=10,expires=2,avg_ttl=1000\r\n");
    let b_ = bulk("# Keyspace\r\ndb0:keys=5,expires=6,avg_ttl=3000\r\n");
    let c = bulk("# Keyspace\r\n");
    let reply = merged(sums(), &[&a, &b_, &c]);
    // (1000×2 + 3000×6) / 8 = 2500.
    assert_eq!(reply, bulk("# Keyspace\r\ndb0:keys=15,expires=8,avg_ttl=2500\r\n"));
}

#[test]
fn keyspace_info_without_keys_is_an_empty_section() {
    let empty = bulk("# Keyspace\r\n");
    assert_eq!(merged(sums(), &[&empty, &empty]), empty);
}

#[test]
fn keyspace_info_without_expires_has_zero_avg_ttl_and_keeps_newer_fields() {
    let a = bulk("# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0,subexpiry=1\r\n");
    let b_ = bulk("# Keyspace\r\ndb0:keys=4,expires=0,avg_ttl=0,subexpiry=2\r\ndb1:keys=1,expires=0,avg_ttl=0\r\n");
    let reply = merged(sums(), &[&b_, &a]);
    let expected = "# Keyspace\r\ndb0:keys=7,expires=0,avg_ttl=0,subexpiry=3\r\ndb1:keys=1,expires=0,avg_ttl=0\r\n";
    assert_eq!(reply, bulk(expected));
}

#[test]
fn keyspace_info_in_resp3_is_verbatim_text() {
    let verbatim = |text: &str| format!("={}\r\ntxt:{text}\r\n", text.len() + 4).into_bytes();
    let a = verbatim("# Keyspace\r\ndb0:keys=1,expires=1,avg_ttl=10\r\n");
    let b_ = verbatim("# Keyspace\r\ndb0:keys=1,expires=1,avg_ttl=30\r\n");
    let reply = merged(sums(), &[&a, &b_]);
    assert_eq!(reply, verbatim("# Keyspace\r\ndb0:keys=2,expires=2,avg_ttl=20\r\n"));
}

#[test]
fn info_that_is_not_info_text_is_a_shape_error() {
    // A field outside any section, a non-string reply, a bulk string of the wrong length.
    assert!(is_shape_error(&merged(sums(), &[&bulk("db0:keys=x\r\n")])));
    assert!(is_shape_error(&merged(sums(), &[b":1\r\n"])));
    assert!(is_shape_error(&merged(sums(), &[b"$5\r\nab\r\n"])));
}

#[test]
fn info_stats_memory_and_commandstats_are_summed_and_disagreeing_text_left_out() {
    let a = bulk(
        "# Memory\r\nused_memory:1000\r\nused_memory_human:1000B\r\nmaxmemory_policy:noeviction\r\n\r\n\
         # Stats\r\ntotal_commands_processed:10\r\ninstantaneous_input_kbps:0.50\r\n\r\n\
         # Commandstats\r\ncmdstat_get:calls=2,usec=10,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n",
    );
    let b_ = bulk(
        "# Memory\r\nused_memory:3000\r\nused_memory_human:2.93K\r\nmaxmemory_policy:noeviction\r\n\r\n\
         # Stats\r\ntotal_commands_processed:5\r\ninstantaneous_input_kbps:0.25\r\n\r\n\
         # Commandstats\r\ncmdstat_get:calls=8,usec=30,usec_per_call=3.75,rejected_calls=1,failed_calls=0\r\n\
         cmdstat_set:calls=1,usec=4,usec_per_call=4.00,rejected_calls=0,failed_calls=0\r\n",
    );
    let reply = merged(sums(), &[&a, &b_]);
    let expected = "# Memory\r\nused_memory:4000\r\nmaxmemory_policy:noeviction\r\n\r\n\
         # Stats\r\ntotal_commands_processed:15\r\ninstantaneous_input_kbps:0.75\r\n\r\n\
         # Commandstats\r\ncmdstat_get:calls=10,usec=40,usec_per_call=4.00,rejected_calls=1,failed_calls=0\r\n\
         cmdstat_set:calls=1,usec=4,usec_per_call=4.00,rejected_calls=0,failed_calls=0\r\n";
    assert_eq!(String::from_utf8_lossy(&reply), String::from_utf8_lossy(&bulk(expected)));
}

#[test]
fn info_flags_ratios_and_durations_take_the_largest_and_the_last_save_the_earliest() {
    let a = bulk(
        "# Memory\r\nnumber_of_cached_scripts:100\r\nmem_fragmentation_ratio:1.50\r\nallocator_active:10\r\n\r\n\
         # Persistence\r\nloading:0\r\nrdb_changes_since_last_save:3\r\nrdb_bgsave_in_progress:0\r\n\
         rdb_last_save_time:1700000100\r\nrdb_last_bgsave_time_sec:-1\r\naof_enabled:1\r\n",
    );
    let b_ = bulk(
        "# Memory\r\nnumber_of_cached_scripts:100\r\nmem_fragmentation_ratio:2.25\r\nallocator_active:20\r\n\r\n\
         # Persistence\r\nloading:0\r\nrdb_changes_since_last_save:4\r\nrdb_bgsave_in_progress:1\r\n\
         rdb_last_save_time:1700000000\r\nrdb_last_bgsave_time_sec:2\r\naof_enabled:1\r\n",
    );
    let reply = merged(sums(), &[&a, &b_]);
    let expected = "# Memory\r\nnumber_of_cached_scripts:100\r\nmem_fragmentation_ratio:2.25\r\nallocator_active:30\r\n\r\n\
         # Persistence\r\nloading:0\r\nrdb_changes_since_last_save:7\r\nrdb_bgsave_in_progress:1\r\n\
         rdb_last_save_time:1700000000\r\nrdb_last_bgsave_time_sec:2\r\naof_enabled:1\r\n";
    assert_eq!(String::from_utf8_lossy(&reply), String::from_utf8_lossy(&bulk(expected)));
}

#[test]
fn info_largest_and_earliest_pass_over_a_value_that_is_not_a_number() {
    let a = bulk("# Memory\r\nmem_fragmentation_ratio:nan\r\n");
    let b_ = bulk("# Memory\r\nmem_fragmentation_ratio:1.50\r\n");
    let expected = bulk("# Memory\r\nmem_fragmentation_ratio:1.50\r\n");
    assert_eq!(String::from_utf8_lossy(&merged(sums(), &[&a, &b_])), String::from_utf8_lossy(&expected));
    assert_eq!(String::from_utf8_lossy(&merged(sums(), &[&b_, &a])), String::from_utf8_lossy(&expected));
}

#[test]
fn info_fields_the_proxy_answers_itself_replace_the_masters_sums() {
    let part = bulk("# Stats\r\ntotal_commands_processed:10\r\ntracking_total_keys:0\r\ntracking_total_prefixes:1\r\n");
    let own = Merge::InfoSums { own: vec![("tracking_total_keys", 7), ("tracking_total_prefixes", 2)] };
    let reply = merged(own, &[&part, &part]);
    let expected = "# Stats\r\ntotal_commands_processed:20\r\ntracking_total_keys:7\r\ntracking_total_prefixes:2\r\n";
    assert_eq!(String::from_utf8_lossy(&reply), String::from_utf8_lossy(&bulk(expected)));
}

#[test]
fn randomkey_weights_masters_by_key_count() {
    let parts = |counts: [&'static [u8]; 3], keys: [&'static [u8]; 3]| -> Vec<Bytes> {
        counts.iter().chain(keys.iter()).map(|p| Bytes::from_static(p)).collect()
    };
    let cluster = parts([b":1\r\n", b":0\r\n", b":3\r\n"], [b"$1\r\na\r\n", b"$-1\r\n", b"$1\r\nc\r\n"]);
    // Seeds 0..4 fall on the four keys in turn: one of master a's, three of master c's.
    let picks: Vec<Bytes> = (0..4).map(|seed| merge(&Merge::RandomKey { seed }, &cluster, &[])).collect();
    assert_eq!(&picks[0][..], b"$1\r\na\r\n");
    assert!(picks[1..].iter().all(|p| &p[..] == b"$1\r\nc\r\n"), "{picks:?}");
    let empty = parts([b":0\r\n", b":0\r\n", b":0\r\n"], [b"_\r\n", b"_\r\n", b"_\r\n"]);
    assert_eq!(&merge(&Merge::RandomKey { seed: 7 }, &empty, &[])[..], b"_\r\n");
}

#[test]
fn exec_takes_the_proxys_replies_at_their_places() {
    let exec = |places: Vec<u32>, parts: &[&[u8]]| merged(Merge::Exec { local_places: places }, parts);
    // MULTI, QUEUED for SET and GET, EXEC's array of 2; CLIENT SETNAME first, GETNAME last.
    let parts: [&[u8]; 6] =
        [b"+OK\r\n", b"+QUEUED\r\n", b"+QUEUED\r\n", b"*2\r\n+OK\r\n$1\r\nv\r\n", b"+OK\r\n", b"$1\r\nn\r\n"];
    assert_eq!(&exec(vec![0, 3], &parts)[..], b"*4\r\n+OK\r\n+OK\r\n$1\r\nv\r\n$1\r\nn\r\n");
    // Nothing else queued: EXEC's empty array holds the proxy's replies only.
    assert_eq!(&exec(vec![0], &[b"+OK\r\n", b"*0\r\n", b"-ERR bad\r\n"])[..], b"*1\r\n-ERR bad\r\n");
    // Not run (a WATCH, in RESP2 and RESP3; EXECABORT): EXEC's reply as it came.
    for not_run in [&b"*-1\r\n"[..], b"_\r\n", b"-EXECABORT Transaction discarded\r\n"] {
        assert_eq!(&exec(vec![0], &[b"+OK\r\n", not_run, b"+OK\r\n"])[..], not_run);
    }
    // Nothing the proxy answers: EXEC's reply, whatever came before it.
    assert_eq!(&exec(vec![], &[b"-ERR x\r\n", b"*1\r\n:1\r\n"])[..], b"*1\r\n:1\r\n");
    // EXEC's array shorter than the places say: a shape error, not a panic.
    assert!(is_shape_error(&exec(vec![2], &[b"+OK\r\n", b"*0\r\n", b"+OK\r\n"])));
}

#[test]
fn array_elements_are_found_by_index_and_nothing_else_is_an_array() {
    let exec = b"*3\r\n$1\r\nv\r\n-ERR no\r\n*1\r\n+OK\r\n";
    assert_eq!(array_element(exec, 0), Some(&b"$1\r\nv\r\n"[..]));
    assert_eq!(array_element(exec, 1), Some(&b"-ERR no\r\n"[..]));
    assert_eq!(array_element(exec, 2), Some(&b"*1\r\n+OK\r\n"[..]));
    assert_eq!(array_element(exec, 3), None);
    for not_an_array in [&b"*-1\r\n"[..], b"-EXECABORT x\r\n", b"%1\r\n+a\r\n+b\r\n", b"*2\r\n+OK\r\n"] {
        assert_eq!(array_element(not_an_array, 0), None, "{not_an_array:?}");
    }
}

#[test]
fn exec_finds_its_reply_after_the_settings_for_other_nodes() {
    // CONFIG SET's copies for two other nodes come first; then MULTI, QUEUED for CONFIG SET and
    // GET, EXEC's array, and CLIENT SETNAME (queued second).
    let parts: [&[u8]; 7] = [
        b"+OK\r\n",
        b"-ERR no\r\n",
        b"+OK\r\n",
        b"+QUEUED\r\n",
        b"+QUEUED\r\n",
        b"*2\r\n+OK\r\n$1\r\nv\r\n",
        b"+OK\r\n",
    ];
    let merged = merged(Merge::Exec { local_places: vec![1] }, &parts);
    assert_eq!(&merged[..], b"*3\r\n+OK\r\n+OK\r\n$1\r\nv\r\n");
}

#[test]
fn latency_histograms_add_up_per_command_as_one_node_would_count() {
    let stats = |calls: u32, pairs: &[(u32, u32)]| {
        let mut s = format!("*4\r\n$5\r\ncalls\r\n:{calls}\r\n$14\r\nhistogram_usec\r\n*{}\r\n", pairs.len() * 2);
        pairs.iter().for_each(|(bucket, count)| s.push_str(&format!(":{bucket}\r\n:{count}\r\n")));
        s
    };
    let one = format!("*4\r\n$3\r\nset\r\n{}$3\r\nget\r\n{}", stats(3, &[(8, 2), (16, 3)]), stats(1, &[(4, 1)]));
    let two = format!("*2\r\n$3\r\nset\r\n{}", stats(2, &[(4, 1), (32, 2)]));
    let kind = Merge::LatencyHistogram { protocol: crate::resp::reply::Protocol::Resp2 };
    let reply = merged(kind, &[one.as_bytes(), two.as_bytes()]);
    // set: 5 calls; at 4 µs 0 + 1, at 8 µs 2 + 1, at 16 µs 3 + 1, at 32 µs 3 + 2.
    let expected = format!(
        "*4\r\n$3\r\nset\r\n{}$3\r\nget\r\n{}",
        stats(5, &[(4, 1), (8, 3), (16, 4), (32, 5)]),
        stats(1, &[(4, 1)])
    );
    assert_eq!(String::from_utf8_lossy(&reply), expected);

    // RESP3 maps in, a map out; no command on any master: an empty map.
    let resp3 = Merge::LatencyHistogram { protocol: crate::resp::reply::Protocol::Resp3 };
    let map = b"%1\r\n$3\r\nget\r\n%2\r\n$5\r\ncalls\r\n:1\r\n$14\r\nhistogram_usec\r\n%1\r\n:4\r\n:1\r\n";
    assert_eq!(&merged(resp3.clone(), &[&map[..], b"%0\r\n"])[..], &map[..]);
    assert_eq!(&merged(resp3.clone(), &[&b"%0\r\n"[..], b"%0\r\n"])[..], b"%0\r\n");
    // Not a histogram: a shape error, not a panic.
    assert!(is_shape_error(&merged(resp3, &[&b"*2\r\n$3\r\nset\r\n:1\r\n"[..]])));
}

#[test]
fn function_stats_is_the_reply_of_the_master_running_a_function() {
    let idle2: &[u8] = b"*4\r\n$14\r\nrunning_script\r\n$-1\r\n$7\r\nengines\r\n*0\r\n";
    let busy2: &[u8] = b"*4\r\n$14\r\nrunning_script\r\n*2\r\n$4\r\nname\r\n$1\r\nf\r\n$7\r\nengines\r\n*0\r\n";
    let idle3: &[u8] = b"%2\r\n$14\r\nrunning_script\r\n_\r\n$7\r\nengines\r\n%0\r\n";
    let busy3: &[u8] = b"%2\r\n$14\r\nrunning_script\r\n%1\r\n$4\r\nname\r\n$1\r\nf\r\n$7\r\nengines\r\n%0\r\n";
    assert_eq!(&merged(Merge::FunctionStats, &[idle2, busy2, idle2])[..], busy2);
    assert_eq!(&merged(Merge::FunctionStats, &[idle3, idle3, busy3])[..], busy3);
    assert_eq!(&merged(Merge::FunctionStats, &[idle2, idle2])[..], idle2, "nothing runs: the first master's");
    // A shape it does not know counts as idle, and is passed on when nothing runs.
    assert_eq!(&merged(Merge::FunctionStats, &[b"*0\r\n", busy2])[..], busy2);
    assert_eq!(&merged(Merge::FunctionStats, &[b"*0\r\n", idle2])[..], b"*0\r\n");
    let error: &[u8] = b"-ERR x\r\n";
    assert_eq!(&merged(Merge::FunctionStats, &[idle2, error])[..], error, "an error wins, as for other merges");
}

#[test]
fn placed_items_go_at_their_places_and_the_rest_in_order_around_them() {
    let placed = [(0, "a"), (2, "b"), (5, "c")];
    let got: Vec<&str> = interleave(placed.into_iter(), ["x", "y", "z"].into_iter()).collect();
    assert_eq!(got, ["a", "x", "b", "y", "z", "c"]);
    // A place the rest cannot reach ends it there.
    let got: Vec<&str> = interleave([(3, "far")].into_iter(), ["x"].into_iter()).collect();
    assert_eq!(got, ["x"]);
}
