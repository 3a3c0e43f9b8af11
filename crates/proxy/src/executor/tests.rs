use super::*;
use crate::executor::hold::HoldLimits;
use crate::upstream::PUSH;

fn executor() -> Executor {
    let limits = HoldLimits { max_requests: 10, max_bytes: 1000, per_client_requests: 10, per_client_bytes: 1000 };
    let gauge = prometheus::IntGauge::new("held", "held").expect("a gauge");
    Executor::new(Arc::new(HoldBudget::new(Duration::from_secs(15), limits, gauge)))
}

fn tag(seq: u64) -> Tag {
    Tag { seq, part: 0 }
}

#[test]
fn a_later_part_waits_behind_an_earlier_one_of_its_slot_and_one_that_ran_first_overtakes_it() {
    let mut exec = executor();
    let at = Instant::now();
    // Request 3 (slot 7) waits to be resent.
    exec.delayed.push((at, tag(3), Some(7)));
    assert!(exec.waits_behind(tag(4), Some(7)), "a later request of its slot");
    assert!(exec.waits_behind(tag(4), None), "a later request without a slot");
    assert!(!exec.waits_behind(tag(4), Some(8)), "another slot keeps its own order");
    assert!(!exec.waits_behind(tag(3), Some(7)), "another part of the same request");
    assert!(!exec.waits_behind(tag(2), Some(7)), "an earlier request");
    // Request 5 of another slot ran: 3 is not overtaken; request 4 of slot 7 ran: it is.
    exec.ran(tag(5), Some(8));
    assert!(!exec.has_overtaken());
    exec.ran(tag(4), Some(7));
    assert_eq!(exec.take_overtaken(), [tag(3)]);
    assert!(exec.delayed.is_empty(), "not resent any more");
    // One without a slot (a fan-out) is kept in order with every slot.
    exec.delayed.push((at, tag(6), None));
    assert!(exec.waits_behind(tag(7), Some(1)));
    exec.ran(tag(9), Some(2));
    assert_eq!(exec.take_overtaken(), [tag(6)]);
}

#[test]
fn a_command_for_the_own_connection_waits_for_earlier_replies_and_holds_later_parts_back() {
    let mut exec = executor();
    let unwatch = || UpstreamRequest::unanswered(Bytes::from_static(b"*1\r\n$7\r\nUNWATCH\r\n"), PUSH);
    // Nothing earlier waits for its reply: sent at once, nothing kept.
    exec.send_on_own(None, unwatch(), OwnCommand::Unwatch);
    assert!(!exec.has_own_follow_ups());
    // Request 5 waits for its reply: kept, and the own connection's parts after it wait.
    exec.send_on_own(Some(5), unwatch(), OwnCommand::Unwatch);
    let owned = Part::new(Bytes::from_static(b"*1\r\n$4\r\nPING\r\n"), Target::Owned, false);
    let pooled = Part::new(Bytes::from_static(b"*1\r\n$4\r\nPING\r\n"), Target::Slot(Some(7)), false);
    assert!(exec.waits_for_follow_up(tag(6), &owned));
    assert!(!exec.waits_for_follow_up(tag(5), &owned), "an earlier request's part");
    assert!(!exec.waits_for_follow_up(tag(6), &pooled), "a part for a pool");
    // One with nothing of its own to wait for still goes behind the one kept.
    exec.send_on_own(None, unwatch(), OwnCommand::Unwatch);
    exec.release_own_follow_ups(5);
    assert!(exec.has_own_follow_ups(), "request 5 not released yet");
    exec.release_own_follow_ups(6);
    assert!(!exec.has_own_follow_ups(), "both go once request 5 is released");
    assert!(!exec.waits_for_follow_up(tag(6), &owned));
    // A part held back behind them is due at once.
    exec.delayed.push((Instant::now() + Duration::from_secs(60), tag(7), None));
    exec.send_on_own(Some(6), unwatch(), OwnCommand::Terms);
    exec.release_own_follow_ups(7);
    assert_eq!(exec.take_due(), [tag(7)]);
}

#[test]
fn parts_that_come_due_together_are_resent_in_the_clients_order() {
    let mut exec = executor();
    let at = Instant::now();
    // 1 waited, 3 was gated behind it, then 2 (sent before 3) came back to wait too.
    for seq in [1, 3, 2] {
        exec.delayed.push((at, tag(seq), Some(7)));
    }
    assert_eq!(exec.take_due(), [tag(1), tag(2), tag(3)]);
}
