use super::*;

fn bulk(s: &str) -> OwnedFrame {
    OwnedFrame::BulkString(s.as_bytes().to_vec())
}

fn shard_node(id: &str, port: i64, role: &str, health: &str) -> OwnedFrame {
    OwnedFrame::Array(vec![
        bulk("id"),
        bulk(id),
        bulk("port"),
        OwnedFrame::Integer(port),
        bulk("ip"),
        bulk("127.0.0.1"),
        bulk("endpoint"),
        bulk("127.0.0.1"),
        bulk("role"),
        bulk(role),
        bulk("replication-offset"),
        OwnedFrame::Integer(42),
        bulk("health"),
        bulk(health),
    ])
}

fn shard(slots: &[i64], nodes: Vec<OwnedFrame>) -> OwnedFrame {
    OwnedFrame::Array(vec![
        bulk("slots"),
        OwnedFrame::Array(slots.iter().map(|&s| OwnedFrame::Integer(s)).collect()),
        bulk("nodes"),
        OwnedFrame::Array(nodes),
    ])
}

fn three_shards() -> OwnedFrame {
    OwnedFrame::Array(vec![
        shard(&[0, 5460], vec![shard_node("a", 7000, "master", "online"), shard_node("d", 7003, "replica", "online")]),
        shard(&[5461, 10922], vec![shard_node("b", 7001, "master", "online")]),
        shard(&[10923, 16000, 16001, 16383], vec![shard_node("c", 7002, "master", "online")]),
    ])
}

#[test]
fn cluster_shards_reply_covers_every_slot() {
    let map = SlotMap::from_cluster_shards(&three_shards(), false).expect("valid");
    assert_eq!(map.covered_slots(), 16384);
    assert_eq!(map.shards().len(), 3);
    let owner = |slot| &map.shards()[map.shard_for(slot).expect("owned")].master.addr;
    assert_eq!(owner(0), "127.0.0.1:7000");
    assert_eq!(owner(5461), "127.0.0.1:7001");
    assert_eq!(owner(16383), "127.0.0.1:7002");
    assert_eq!(map.shards()[0].replicas[0].addr, "127.0.0.1:7003");
    // Offsets change on every poll; the map must not, or every refresh would look like a change.
    fn bump_offsets(frame: &mut OwnedFrame) {
        match frame {
            OwnedFrame::Integer(42) => *frame = OwnedFrame::Integer(4242),
            OwnedFrame::Array(items) => items.iter_mut().for_each(bump_offsets),
            _ => {}
        }
    }
    let mut moved_offsets = three_shards();
    bump_offsets(&mut moved_offsets);
    assert_ne!(moved_offsets, three_shards());
    assert_eq!(SlotMap::from_cluster_shards(&moved_offsets, false).expect("valid"), map);
    assert_eq!(map.nodes().count(), 4);
}

#[test]
fn failed_master_loses_to_the_promoted_one() {
    let reply = OwnedFrame::Array(vec![shard(
        &[0, 16383],
        vec![shard_node("old", 7000, "master", "fail"), shard_node("new", 7003, "master", "online")],
    )]);
    let map = SlotMap::from_cluster_shards(&reply, false).expect("valid");
    assert_eq!(map.shards()[0].master.id, "new");
    assert_eq!(map.shards()[0].replicas[0].id, "old");
}

#[test]
fn uncovered_slots_have_no_owner() {
    let reply = OwnedFrame::Array(vec![
        shard(&[0, 99], vec![shard_node("a", 7000, "master", "online")]),
        shard(&[], vec![shard_node("e", 7004, "master", "online")]),
    ]);
    let map = SlotMap::from_cluster_shards(&reply, false).expect("valid");
    assert_eq!(map.covered_slots(), 100);
    assert_eq!(map.shard_for(100), None);
    assert_eq!(map.shards().len(), 1, "a master without slots serves nothing");
}

#[test]
fn tls_port_is_preferred_when_upstream_is_tls() {
    let node = OwnedFrame::Array(vec![
        bulk("id"),
        bulk("x"),
        bulk("port"),
        OwnedFrame::Integer(7000),
        bulk("tls-port"),
        OwnedFrame::Integer(8000),
        bulk("ip"),
        bulk("10.0.0.1"),
        bulk("endpoint"),
        bulk("?"),
        bulk("role"),
        bulk("master"),
        bulk("health"),
        bulk("online"),
    ]);
    let reply = OwnedFrame::Array(vec![shard(&[0, 16383], vec![node])]);
    assert_eq!(SlotMap::from_cluster_shards(&reply, true).expect("valid").shards()[0].master.addr, "10.0.0.1:8000");
    assert_eq!(SlotMap::from_cluster_shards(&reply, false).expect("valid").shards()[0].master.addr, "10.0.0.1:7000");
}

#[test]
fn cluster_slots_reply_groups_ranges_per_master() {
    let node = |port: i64, id: &str| OwnedFrame::Array(vec![bulk("127.0.0.1"), OwnedFrame::Integer(port), bulk(id)]);
    let range = |start: i64, end: i64, nodes: Vec<OwnedFrame>| {
        let mut items = vec![OwnedFrame::Integer(start), OwnedFrame::Integer(end)];
        items.extend(nodes);
        OwnedFrame::Array(items)
    };
    let reply = OwnedFrame::Array(vec![
        range(0, 8000, vec![node(7000, "a"), node(7003, "d")]),
        range(8001, 16000, vec![node(7001, "b")]),
        range(16001, 16383, vec![node(7000, "a"), node(7003, "d")]),
    ]);
    let map = SlotMap::from_cluster_slots(&reply).expect("valid");
    assert_eq!(map.shards().len(), 2);
    assert_eq!(map.shards()[0].ranges, vec![(0, 8000), (16001, 16383)]);
    assert_eq!(map.covered_slots(), 16384);
    assert_eq!(map.shards()[0].replicas[0].role, Role::Replica);
}

#[test]
fn malformed_replies_are_errors() {
    assert!(matches!(
        SlotMap::from_cluster_shards(&OwnedFrame::Error("ERR unknown command".into()), false),
        Err(MapError::NodeError(_))
    ));
    let bad_slots = OwnedFrame::Array(vec![shard(&[0], vec![shard_node("a", 7000, "master", "online")])]);
    assert!(SlotMap::from_cluster_shards(&bad_slots, false).is_err());
    let out_of_range = OwnedFrame::Array(vec![shard(&[0, 20000], vec![shard_node("a", 7000, "master", "online")])]);
    assert!(SlotMap::from_cluster_shards(&out_of_range, false).is_err());
    assert!(SlotMap::from_cluster_slots(&OwnedFrame::Integer(3)).is_err());
}

#[test]
fn moved_slots_are_counted() {
    let before = SlotMap::from_cluster_shards(&three_shards(), false).expect("valid");
    let after_reply = OwnedFrame::Array(vec![
        shard(&[0, 5459], vec![shard_node("a", 7000, "master", "online")]),
        shard(&[5460, 10922], vec![shard_node("b", 7001, "master", "online")]),
        shard(&[10923, 16383], vec![shard_node("c", 7002, "master", "online")]),
    ]);
    let after = SlotMap::from_cluster_shards(&after_reply, false).expect("valid");
    assert_eq!(after.slots_moved_since(&before), 1);
    assert_eq!(before.slots_moved_since(&before), 0);
}

#[test]
fn ipv6_hosts_are_bracketed() {
    assert_eq!(join_host_port("::1", 7000), "[::1]:7000");
    assert_eq!(join_host_port("127.0.0.1", 7000), "127.0.0.1:7000");
}
