use super::*;

const A: &[u8] = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\na\r\n";
const B: &[u8] = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nb\r\n";
const OLD: u32 = 7;
const OLDER: u32 = 3;

/// One message of the channel, numbered.
fn numbered(seq: usize) -> Vec<u8> {
    let payload = seq.to_string();
    format!("*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n${}\r\n{payload}\r\n", payload.len()).into_bytes()
}

#[test]
fn each_delivery_of_the_old_connection_excuses_one_copy_of_the_new_one() {
    let now = Instant::now();
    let mut old = Delivered::default();
    assert!(!old.already_delivered(A, now));
    assert!(!old.already_delivered(A, now), "published twice: both delivered");
    let mut replacement = old.hand_over(OLD, now);
    assert!(!replacement.already_delivered(B, now));
    assert!(replacement.already_delivered(A, now));
    assert!(replacement.already_delivered(A, now));
    assert!(!replacement.already_delivered(A, now), "two deliveries excuse two copies, not three");
}

#[test]
fn old_messages_are_forgotten() {
    let then = Instant::now();
    let mut old = Delivered::default();
    assert!(!old.already_delivered(A, then));
    let later = then + REMEMBER_FOR + Duration::from_millis(1);
    let mut replacement = old.hand_over(OLD, later);
    assert!(!replacement.already_delivered(A, later));
    assert_eq!(replacement.passed.len(), 1, "only the new delivery is remembered");
    assert_eq!(replacement.copies.len(), 1);
}

#[test]
fn a_late_frame_of_the_replaced_connection_counts_as_its_delivery() {
    let now = Instant::now();
    // The old connection delivered nothing before it was replaced; then one of its messages, on
    // its way meanwhile, arrives, and after it the new node's copy.
    let mut replacement = Delivered::default().hand_over(OLD, now);
    assert!(replacement.late_from(OLD, A, now), "passed on: the client did not have it");
    assert!(replacement.already_delivered(A, now), "the new node's copy is dropped");
    // The other way round: the new node's copy first, the old connection's late one dropped.
    assert!(!replacement.already_delivered(B, now));
    assert!(!replacement.late_from(OLD, B, now));
    // Copies are matched as long as the message is remembered, whatever the hand-over's time.
    let later = now + REMEMBER_FOR - Duration::from_millis(1);
    assert!(replacement.late_from(OLD, A, later), "A published again");
    assert!(replacement.already_delivered(A, later + Duration::from_millis(1)));
}

#[test]
fn a_second_replacement_still_knows_what_the_first_ones_predecessor_delivered() {
    let now = Instant::now();
    let mut old = Delivered::default();
    assert!(!old.already_delivered(A, now));
    let mut first = old.hand_over(OLDER, now);
    assert!(!first.already_delivered(B, now), "the first replacement delivers B");
    let mut second = first.hand_over(OLD, now);
    assert!(second.already_delivered(A, now), "the old connection's A");
    assert!(second.already_delivered(B, now), "the first replacement's B");
}

#[test]
fn memory_is_bounded_by_count() {
    let now = Instant::now();
    let mut delivered = Delivered::default();
    assert!(!delivered.already_delivered(A, now));
    for seq in 0..CAPACITY {
        assert!(!delivered.already_delivered(&numbered(seq), now));
    }
    assert_eq!(delivered.passed.len(), CAPACITY);
    let mut replacement = delivered.hand_over(OLD, now);
    assert!(!replacement.already_delivered(A, now), "the oldest message made room");
}

/// Connections delivering the same `count` messages, each `lag` messages behind the first; the
/// messages the client gets.
fn overlapping(lags: &[usize], count: usize) -> usize {
    let now = Instant::now();
    // The connection delivering with lags[0] is the latest; the others replaced it in turn.
    let links: Vec<u32> = (0..lags.len() as u32 - 1).map(|at| 100 + at).collect();
    let mut delivered = Delivered::default();
    for link in links.iter().rev() {
        delivered = delivered.hand_over(*link, now);
    }
    let mut passed = 0;
    for step in 0..count + lags.iter().max().copied().unwrap_or(0) {
        for (source, lag) in lags.iter().enumerate() {
            let Some(seq) = step.checked_sub(*lag).filter(|seq| *seq < count) else { continue };
            let frame = numbered(seq);
            passed += usize::from(match source {
                0 => !delivered.already_delivered(&frame, now),
                _ => delivered.late_from(links[source - 1], &frame, now),
            });
        }
    }
    passed
}

#[test]
fn an_overlap_far_behind_its_other_half_still_delivers_each_message_once() {
    // One 5,000 messages behind the other (a loaded machine's lag at ~10,000 messages a second
    // was over 512): the later copy of each is dropped, either way round.
    assert_eq!(overlapping(&[0, 5_000], 20_000), 20_000, "the replacement ahead");
    assert_eq!(overlapping(&[5_000, 0], 20_000), 20_000, "the replacement behind");
}

#[test]
fn three_connections_of_two_moves_deliver_each_message_once() {
    // The subscriptions moved twice within the overlap: both old connections still deliver.
    for lags in [[0, 300, 100], [300, 0, 100], [100, 300, 0], [0, 0, 0]] {
        assert_eq!(overlapping(&lags, 2_000), 2_000, "lags {lags:?}");
    }
}

#[test]
fn the_overlap_memory_is_given_back_when_the_replaced_connections_are_done() {
    let now = Instant::now();
    let mut replacement = Delivered::default().hand_over(OLD, now);
    for seq in 0..8 * CAPACITY {
        assert!(!replacement.already_delivered(&numbered(seq), now));
    }
    assert_eq!(replacement.passed.len(), 8 * CAPACITY, "remembered in full during the overlap");
    // A late frame just before the old connection's frames stop being handled extends the
    // overlap; the session ends it when they stop, and the connection goes quiet.
    let late = now + REMEMBER_FOR - Duration::from_millis(10);
    assert!(replacement.late_from(OLD, &numbered(100_000), late));
    let done = now + REMEMBER_FOR + Duration::from_millis(1);
    replacement.end_overlap(done);
    assert_eq!(replacement.passed.len(), 1, "only the late frame is recent enough");
    assert!(replacement.passed.capacity() <= 4 * CAPACITY, "room given back");
    // Busy again: bounded by the usual capacity.
    for seq in 0..2 * CAPACITY {
        assert!(!replacement.already_delivered(&numbered(seq), done));
    }
    assert_eq!(replacement.passed.len(), CAPACITY);
}

#[test]
fn the_overlap_memory_is_bounded_too() {
    let now = Instant::now();
    let mut replacement = Delivered::default().hand_over(OLD, now);
    for seq in 0..OVERLAP_CAPACITY + 10 {
        assert!(!replacement.already_delivered(&numbered(seq), now));
    }
    assert_eq!(replacement.passed.len(), OVERLAP_CAPACITY);
    assert!(replacement.late_from(OLD, &numbered(5), now), "forgotten: passed on");
    assert!(!replacement.late_from(OLD, &numbered(OVERLAP_CAPACITY), now), "remembered: dropped");
}

#[test]
fn a_repeated_payload_is_forgotten_one_copy_per_source() {
    // The old connection delivered A twice, the new one's copy of the second came; once the
    // first is forgotten, one more A from either is news only past the one left.
    let then = Instant::now();
    let mut old = Delivered::default();
    assert!(!old.already_delivered(A, then));
    let now = then + REMEMBER_FOR / 2;
    assert!(!old.already_delivered(A, now));
    let mut replacement = old.hand_over(OLD, now);
    assert!(replacement.already_delivered(A, now), "the new node's copy");
    let later = then + REMEMBER_FOR + Duration::from_millis(1);
    assert!(replacement.already_delivered(A, later), "the second A's other copy, one each left");
    assert!(!replacement.already_delivered(A, later), "a third A is news");
    assert!(!replacement.late_from(OLD, A, later), "and its old copy is not");
}

#[test]
fn a_copy_from_a_connection_no_longer_told_apart_passes_only_when_nobody_sent_it() {
    let now = Instant::now();
    let mut delivered = Delivered::default();
    for link in 0..SOURCES as u32 + 2 {
        delivered = delivered.hand_over(100 + link, now);
    }
    assert_eq!(delivered.links.len(), SOURCES - 1);
    assert!(!delivered.already_delivered(A, now));
    assert!(!delivered.late_from(100, A, now), "the oldest link: not told apart, and A was sent");
    assert!(delivered.late_from(100, B, now), "B nobody sent");
    assert!(delivered.already_delivered(B, now), "and the new node's copy of B is dropped");
    assert!(!delivered.late_from(100, B, now), "another B from the old link is no news either");
}
