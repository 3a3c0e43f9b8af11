use super::*;
use crate::topology::map::{Node, Role};

fn node(id: &str, port: u16, role: Role) -> Node {
    Node { addr: format!("127.0.0.1:{port}"), id: id.to_string(), role, healthy: true }
}

fn shard(master: Node, replicas: Vec<Node>, ranges: &[(Slot, Slot)]) -> Shard {
    Shard { master, replicas, ranges: ranges.to_vec() }
}

fn epochs(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
    pairs.iter().map(|(id, e)| (id.to_string(), *e)).collect()
}

fn owner(map: &SlotMap, slot: Slot) -> &str {
    &map.shards()[map.shard_for(slot).expect("owned")].master.addr
}

/// What an isolated old master `a` still says, and what the rest of the cluster says after
/// promoting its replica `d` (config epoch 7 against a's 1).
fn stale_and_current() -> (View, View) {
    let stale = View {
        map: SlotMap::from_shards(vec![
            shard(node("a", 7000, Role::Master), vec![node("d", 7003, Role::Replica)], &[(0, 5460)]),
            shard(node("b", 7001, Role::Master), vec![], &[(5461, 10922)]),
            shard(node("c", 7002, Role::Master), vec![], &[(10923, 16383)]),
        ]),
        epochs: epochs(&[("a", 1), ("b", 2), ("c", 3), ("d", 1)]),
    };
    let current = View {
        map: SlotMap::from_shards(vec![
            shard(node("d", 7003, Role::Master), vec![node("a", 7000, Role::Replica)], &[(0, 5460)]),
            shard(node("b", 7001, Role::Master), vec![], &[(5461, 10922)]),
            shard(node("c", 7002, Role::Master), vec![], &[(10923, 16383)]),
        ]),
        epochs: epochs(&[("a", 1), ("b", 2), ("c", 3), ("d", 7)]),
    };
    (stale, current)
}

#[test]
fn the_higher_config_epoch_wins_whichever_node_answered_first() {
    let (stale, current) = stale_and_current();
    for views in [vec![stale.clone(), current.clone()], vec![current, stale]] {
        let map = resolve(views).expect("a map");
        assert_eq!(owner(&map, 0), "127.0.0.1:7003");
        assert_eq!(owner(&map, 5460), "127.0.0.1:7003");
        assert_eq!(owner(&map, 5461), "127.0.0.1:7001");
        assert_eq!(map.covered_slots(), 16384);
        assert_eq!(map.shards().len(), 3);
        // The winner's view of the shard also says who its replicas are.
        assert_eq!(map.shards()[0].replicas[0].addr, "127.0.0.1:7000");
    }
}

#[test]
fn a_slot_imported_by_another_master_goes_with_the_newer_claim() {
    // Slot 100 moved from a to b; b bumped its epoch to 9 when it took it. The node that answered
    // first has not heard yet.
    let before = View {
        map: SlotMap::from_shards(vec![
            shard(node("a", 7000, Role::Master), vec![], &[(0, 8191)]),
            shard(node("b", 7001, Role::Master), vec![], &[(8192, 16383)]),
        ]),
        epochs: epochs(&[("a", 1), ("b", 2)]),
    };
    let after = View {
        map: SlotMap::from_shards(vec![
            shard(node("a", 7000, Role::Master), vec![], &[(0, 99), (101, 8191)]),
            shard(node("b", 7001, Role::Master), vec![], &[(100, 100), (8192, 16383)]),
        ]),
        epochs: epochs(&[("a", 1), ("b", 9)]),
    };
    let map = resolve(vec![before, after]).expect("a map");
    assert_eq!(owner(&map, 99), "127.0.0.1:7000");
    assert_eq!(owner(&map, 100), "127.0.0.1:7001");
    assert_eq!(owner(&map, 101), "127.0.0.1:7000");
    assert_eq!(map.covered_slots(), 16384);
}

#[test]
fn slots_only_one_view_knows_an_owner_for_stay_owned() {
    let (_, current) = stale_and_current();
    let partial = View {
        map: SlotMap::from_shards(vec![shard(node("b", 7001, Role::Master), vec![], &[(5461, 10922)])]),
        epochs: epochs(&[("b", 2)]),
    };
    let map = resolve(vec![partial, current]).expect("a map");
    assert_eq!(map.covered_slots(), 16384);
}

#[test]
fn agreeing_views_give_the_same_map() {
    let (_, current) = stale_and_current();
    let map = resolve(vec![current.clone(), current.clone()]).expect("a map");
    assert_eq!(map, current.map);
    assert!(resolve(Vec::new()).is_none());
}

#[test]
fn cluster_nodes_lines_give_each_node_its_config_epoch() {
    // As Redis 7.0 prints it (with hostnames off), one master failed over.
    let text = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 11 connected 0-5460
garbage line
";
    let epochs = parse_cluster_nodes(&OwnedFrame::BulkString(text.as_bytes().to_vec()));
    assert_eq!(epochs.len(), 4);
    assert_eq!(epochs["e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca"], 11);
    assert_eq!(epochs["67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1"], 2);
    assert!(parse_cluster_nodes(&OwnedFrame::Error("ERR unknown".into())).is_empty());
}
