use super::*;
use crate::metrics::Metrics;
use crate::session::ClientState;
use crate::session::clients::Clients;

fn hub(max_keys: usize) -> Hub {
    Hub::new(max_keys, Metrics::new().tracking.clone())
}

fn client(clients: &Clients, id: u64) -> Arc<ClientEntry> {
    let peer = "127.0.0.1:1".parse().expect("address");
    let state = ClientState::new(id, peer, None, 0);
    clients.register(&state, crate::session::ClientSocket::peer_only(peer))
}

fn key(name: &str) -> Bytes {
    Bytes::copy_from_slice(name.as_bytes())
}

fn stamp() -> Stamp {
    Stamp { master: Arc::from("n:1"), pongs: 0 }
}

#[test]
fn a_change_reaches_each_reader_once_and_consumes_the_entry() {
    let (clients, hub) = (Clients::default(), hub(100));
    let (a, b) = (client(&clients, 1), client(&clients, 2));
    hub.set_tracker(&a, None);
    hub.set_tracker(&b, None);
    hub.register(1, &[key("k"), key("j")]);
    hub.register(2, &[key("k")]);
    hub.invalidate(vec![key("k")], stamp());
    assert_eq!(a.take_inbox(), vec![TrackingEvent::Mine(Invalidation::Keys(vec![key("k")]), Some(stamp()))]);
    assert_eq!(b.take_inbox().len(), 1);
    hub.invalidate(vec![key("k")], stamp());
    assert!(a.take_inbox().is_empty(), "the entry was consumed: a second change needs a second read");
    assert_eq!(hub.table_size(), (1, 1));
}

#[test]
fn bcast_trackers_get_one_message_per_matching_prefix() {
    let (clients, hub) = (Clients::default(), hub(100));
    let a = client(&clients, 1);
    hub.set_tracker(&a, Some(vec![key("a:"), key("b:")]));
    hub.invalidate(vec![key("a:1"), key("b:1"), key("a:2"), key("c:1")], stamp());
    let events = a.take_inbox();
    assert_eq!(events.len(), 2);
    assert!(events.contains(&TrackingEvent::Mine(Invalidation::Prefixed(vec![key("a:1"), key("a:2")]), Some(stamp()))));
    assert!(events.contains(&TrackingEvent::Mine(Invalidation::Prefixed(vec![key("b:1")]), Some(stamp()))));
}

#[test]
fn the_table_stays_bounded_and_evicted_keys_are_invalidated() {
    let (clients, hub) = (Clients::default(), hub(3));
    let a = client(&clients, 1);
    hub.set_tracker(&a, None);
    for i in 0..10 {
        hub.register(1, &[key(&format!("k{i}"))]);
    }
    assert_eq!(hub.table_size().0, 3);
    let evicted: Vec<TrackingEvent> = a.take_inbox();
    let expected: Vec<TrackingEvent> =
        (0..7).map(|i| TrackingEvent::Mine(Invalidation::Keys(vec![key(&format!("k{i}"))]), None)).collect();
    assert_eq!(evicted, expected, "the oldest keys go first");
}

#[test]
fn a_smaller_bound_evicts_at_once_and_zero_lifts_it() {
    let (clients, hub) = (Clients::default(), hub(100));
    let a = client(&clients, 1);
    hub.set_tracker(&a, None);
    hub.register(1, &[key("k0"), key("k1"), key("k2")]);
    hub.set_max_keys(1);
    assert_eq!(hub.table_size().0, 1);
    let expected: Vec<TrackingEvent> =
        (0..2).map(|i| TrackingEvent::Mine(Invalidation::Keys(vec![key(&format!("k{i}"))]), None)).collect();
    assert_eq!(a.take_inbox(), expected, "the oldest keys go first");
    hub.set_max_keys(0);
    hub.register(1, &(0..200).map(|i| key(&format!("n{i}"))).collect::<Vec<_>>());
    assert_eq!(hub.table_size().0, 201, "no bound");
    assert!(a.take_inbox().is_empty());
}

#[test]
fn the_eviction_queue_skips_entries_removed_and_created_again() {
    let (clients, hub) = (Clients::default(), hub(2));
    let a = client(&clients, 1);
    hub.set_tracker(&a, None);
    hub.register(1, &[key("x")]);
    hub.register(1, &[key("y")]);
    hub.invalidate(vec![key("x")], stamp());
    hub.register(1, &[key("x")]);
    a.take_inbox();
    hub.register(1, &[key("z")]);
    // y is now the oldest entry: the old queue item of x is skipped.
    assert_eq!(a.take_inbox(), vec![TrackingEvent::Mine(Invalidation::Keys(vec![key("y")]), None)]);
}

#[test]
fn a_flush_clears_the_table_and_tells_every_tracker() {
    let (clients, hub) = (Clients::default(), hub(100));
    let (a, b) = (client(&clients, 1), client(&clients, 2));
    hub.set_tracker(&a, None);
    hub.set_tracker(&b, Some(vec![Bytes::new()]));
    hub.register(1, &[key("k")]);
    hub.flush(FlushReason::StreamLost);
    assert_eq!(hub.table_size(), (0, 0));
    for entry in [&a, &b] {
        assert_eq!(entry.take_inbox(), vec![TrackingEvent::Mine(Invalidation::Flush, None)]);
    }
}

#[test]
fn a_tracker_that_leaves_leaves_nothing_behind() {
    let (clients, hub) = (Clients::default(), hub(100));
    let (a, b) = (client(&clients, 1), client(&clients, 2));
    hub.set_tracker(&a, None);
    hub.set_tracker(&b, None);
    hub.register(1, &[key("k"), key("j")]);
    hub.register(2, &[key("k")]);
    hub.remove_tracker(1);
    assert_eq!(hub.table_size(), (1, 1));
    assert_eq!(hub.tracker_count(), 1);
    hub.remove_tracker(2);
    assert_eq!(hub.table_size(), (0, 0));
    assert_eq!(hub.tracker_count(), 0);
}

#[test]
fn streams_are_unconfirmed_until_they_say_so() {
    let hub = hub(10);
    assert!(!hub.is_confirmed("n:1"));
    let state = hub.stream_state("n:1");
    assert!(hub.barrier("n:1").is_none());
    state.confirmed.store(true, Ordering::Release);
    assert!(hub.is_confirmed("n:1"));
    state.pings.store(4, Ordering::Release);
    assert_eq!(hub.barrier("n:1"), Some(5));
}
