use super::multi::prepend_to_bulk;
use super::*;
use crate::executor::Target;

fn meta() -> Meta {
    Meta::new(0, Tick::now(), false)
}

fn part() -> Part {
    Part::new(Bytes::from_static(b"*1\r\n$4\r\nPING\r\n"), Target::Slot(None), false)
}

fn part_named(payload: &'static [u8]) -> Part {
    Part::new(Bytes::from_static(payload), Target::Slot(None), false)
}

#[test]
fn replies_released_together_are_counted_by_command_outcome_and_read_time() {
    use crate::metrics::labels::label_index;
    let metrics = Metrics::new();
    let mut pipeline = Pipeline::default();
    let (get, set) = (label_index("get"), label_index("set"));
    let batch = Tick::now();
    let later = batch.after(std::time::Duration::from_millis(1));
    let replies: [(usize, Tick, &[u8]); 6] = [
        (get, batch, b"$1\r\na\r\n"),
        (get, batch, b"$-1\r\n"),
        (get, batch, b"-WRONGTYPE x\r\n"),
        (set, batch, b"+OK\r\n"),
        (get, later, b"$1\r\nb\r\n"),
        (get, batch, b"$1\r\nc\r\n"),
    ];
    for (label, read_at, reply) in replies {
        pipeline.push_ready(Bytes::from_static(reply), Meta::new(label, read_at, false));
    }
    let mut out = WriteBuffer::default();
    pipeline.release(&mut out, &metrics);
    let text = metrics.render();
    for (command, result, count) in [("get", "ok", 4), ("get", "error", 1), ("set", "ok", 1)] {
        let series = format!("redisforge_commands_total{{command=\"{command}\",result=\"{result}\"}} {count}");
        assert!(text.contains(&series), "{series} in\n{text}");
    }
    assert!(text.contains("redisforge_command_duration_seconds_count{command=\"get\"} 5"), "{text}");
}

#[test]
fn only_an_empty_pipeline_gives_its_memory_back_and_numbering_goes_on() {
    let metrics = Metrics::new();
    let mut pipeline = Pipeline::default();
    let first = pipeline.push_single(part(), meta()).0;
    let second = pipeline.push_single(part(), meta()).0;
    pipeline.complete(first, 0, Bytes::from_static(b"+PONG\r\n"));
    let mut out = WriteBuffer::default();
    pipeline.release(&mut out, &metrics);
    pipeline.give_back_idle_memory();
    assert!(pipeline.part_mut(second, 0).is_some(), "a waiting part is kept");
    assert!(pipeline.singles.capacity() > 0);
    pipeline.complete(second, 0, Bytes::from_static(b"+PONG\r\n"));
    pipeline.release(&mut out, &metrics);
    pipeline.give_back_idle_memory();
    assert_eq!(pipeline.singles.capacity() + pipeline.free.capacity() + pipeline.entries.capacity(), 0);
    assert_eq!(pipeline.push_single(part(), meta()).0, second + 1, "sequence numbers go on");
    assert_eq!(&out[..], b"+PONG\r\n+PONG\r\n");
}

#[test]
fn answered_out_of_order_replies_go_out_in_order_and_freed_slots_serve_new_parts() {
    let metrics = Metrics::new();
    let mut pipeline = Pipeline::default();
    let seqs: Vec<u64> =
        [&b"a"[..], b"b", b"c"].iter().map(|p| pipeline.push_single(part_named(p), meta()).0).collect();
    let mut out = WriteBuffer::default();
    pipeline.complete(seqs[1], 0, Bytes::from_static(b"+b\r\n"));
    assert!(pipeline.part_mut(seqs[1], 0).is_none(), "answered");
    pipeline.release(&mut out, &metrics);
    assert!(out.is_empty(), "a is still out");
    // d takes b's slot while a and c still wait in theirs.
    let d = pipeline.push_single(part_named(b"d"), meta()).0;
    for (seq, payload) in [(seqs[0], &b"a"[..]), (seqs[2], b"c"), (d, b"d")] {
        assert_eq!(&pipeline.part_mut(seq, 0).expect("waiting").payload[..], payload);
    }
    for (seq, reply) in [(d, &b"+d\r\n"[..]), (seqs[0], b"+a\r\n"), (seqs[2], b"+c\r\n")] {
        pipeline.complete(seq, 0, Bytes::from_static(reply));
    }
    pipeline.release(&mut out, &metrics);
    assert_eq!(&out[..], b"+a\r\n+b\r\n+c\r\n+d\r\n");
    assert!(pipeline.is_empty());
    assert_eq!(pipeline.singles.iter().filter(|slot| slot.is_some()).count(), 0, "every part dropped");
    assert_eq!(pipeline.free.len(), pipeline.singles.len(), "every slot free again");
}

#[test]
fn a_streamed_reply_waits_for_earlier_replies_then_goes_out_in_order() {
    let metrics = Metrics::new();
    let mut pipeline = Pipeline::default();
    let a = pipeline.push_single(part(), meta()).0;
    let b = pipeline.push_single(part(), meta()).0;
    let credit = Arc::new(StreamCredit::default());
    // b's reply starts arriving before a's: its pieces are held, their credit still lent.
    for (piece, kept) in [(&b"$10\r\n01"[..], 7), (b"234", 10)] {
        credit.lend(piece.len());
        assert_eq!(pipeline.stream(b, piece, &credit), kept, "what b keeps unwritten");
    }
    let mut out = WriteBuffer::default();
    pipeline.release(&mut out, &metrics);
    assert!(out.is_empty() && !pipeline.mid_stream() && !pipeline.has_credit_out());
    // a's reply releases what b held: b is now part-way out, and once the buffer is written
    // the held pieces' credit goes back (it used to stay lent until b's next piece came,
    // which a connection out of credit never read).
    pipeline.complete(a, 0, Bytes::from_static(b":1\r\n"));
    pipeline.release(&mut out, &metrics);
    assert_eq!(&out[..], b":1\r\n$10\r\n01234");
    assert!(pipeline.mid_stream());
    pipeline.give_back_credit();
    assert_eq!(credit.outstanding(), 0);
    credit.lend(2);
    pipeline.stream(b, b"56", &credit);
    pipeline.release(&mut out, &metrics);
    pipeline.complete(b, 0, Bytes::from_static(b"789\r\n"));
    assert!(pipeline.mid_stream(), "the end is in, not out");
    pipeline.release(&mut out, &metrics);
    assert_eq!(&out[..], b":1\r\n$10\r\n0123456789\r\n");
    assert!(pipeline.is_empty() && !pipeline.mid_stream());
    pipeline.give_back_credit();
    assert_eq!(credit.outstanding(), 0);
    let text = metrics.render();
    assert!(
        text.contains(&format!(
            "redisforge_commands_total{{command=\"{}\",result=\"error\"}} 0",
            crate::metrics::labels::LABELS[0]
        )),
        "the rest of a streamed reply is not an error"
    );
}

#[test]
fn a_piece_for_a_request_no_longer_waiting_gives_its_credit_back_at_once() {
    let mut pipeline = Pipeline::default();
    let credit = Arc::new(StreamCredit::default());
    credit.lend(5);
    assert_eq!(pipeline.stream(7, b"12345", &credit), 0);
    assert_eq!(credit.outstanding(), 0);
    assert!(!pipeline.has_credit_out());
}

#[test]
fn the_proxy_sections_go_before_the_merged_info_in_either_protocol() {
    let text = b"# Server\r\n\r\n";
    let bulk = Bytes::from_static(b"$11\r\n# Keyspace\n\r\n");
    assert_eq!(&prepend_to_bulk(text, &bulk)[..], b"$23\r\n# Server\r\n\r\n# Keyspace\n\r\n");
    let verbatim = Bytes::from_static(b"=15\r\ntxt:# Keyspace\n\r\n");
    assert_eq!(&prepend_to_bulk(text, &verbatim)[..], b"=27\r\ntxt:# Server\r\n\r\n# Keyspace\n\r\n");
    let error = Bytes::from_static(b"-ERR no\r\n");
    assert_eq!(prepend_to_bulk(text, &error), error);
}

#[test]
fn replies_are_released_in_request_order() {
    let metrics = Metrics::new();
    let mut pipeline = Pipeline::default();
    let a = pipeline.push_single(part(), meta()).0;
    let b = pipeline.push_single(part(), meta()).0;
    pipeline.push_ready(Bytes::from_static(b"+local\r\n"), meta());
    let mut out = WriteBuffer::default();
    pipeline.complete(b, 0, Bytes::from_static(b":2\r\n"));
    assert!(!pipeline.release(&mut out, &metrics));
    assert!(out.is_empty(), "b must wait for a");
    pipeline.complete(a, 0, Bytes::from_static(b":1\r\n"));
    pipeline.release(&mut out, &metrics);
    assert_eq!(&out[..], b":1\r\n:2\r\n+local\r\n");
    assert!(pipeline.is_empty());
}

#[test]
fn multi_part_requests_merge_when_all_parts_are_in() {
    let metrics = Metrics::new();
    let mut pipeline = Pipeline::default();
    let seq = pipeline.push_multi(vec![part(), part()], Merge::SumIntegers, Vec::new(), meta());
    pipeline.complete(seq, 1, Bytes::from_static(b":2\r\n"));
    let mut out = WriteBuffer::default();
    pipeline.release(&mut out, &metrics);
    assert!(out.is_empty());
    // A duplicate reply for a part already answered changes nothing.
    pipeline.complete(seq, 1, Bytes::from_static(b":5\r\n"));
    pipeline.complete(seq, 0, Bytes::from_static(b":3\r\n"));
    pipeline.release(&mut out, &metrics);
    assert_eq!(&out[..], b":5\r\n");
}

#[test]
fn a_follow_up_runs_once_with_the_merged_reply_when_the_last_part_is_in() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut pipeline = Pipeline::default();
    let seq = pipeline.push_multi(vec![part(), part()], Merge::SumIntegers, Vec::new(), meta());
    let record = Arc::clone(&seen);
    pipeline.on_merged(seq, OnMerged::new(move |reply| record.lock().expect("lock").push(reply.to_vec())));
    pipeline.complete(seq, 0, Bytes::from_static(b":2\r\n"));
    assert!(seen.lock().expect("lock").is_empty(), "not before every part is in");
    pipeline.complete(seq, 1, Bytes::from_static(b":3\r\n"));
    pipeline.complete(seq, 1, Bytes::from_static(b":4\r\n"));
    assert_eq!(*seen.lock().expect("lock"), vec![b":5\r\n".to_vec()]);
}

#[test]
fn trailers_follow_the_replies_of_requests_read_before_them() {
    let metrics = Metrics::new();
    let mut pipeline = Pipeline::default();
    let a = pipeline.push_single(part(), meta()).0;
    pipeline.push_trailer(Bytes::from_static(b">after-a\r\n"));
    let b = pipeline.push_single(part(), meta()).0;
    let mut out = WriteBuffer::default();
    pipeline.complete(b, 0, Bytes::from_static(b":2\r\n"));
    pipeline.release(&mut out, &metrics);
    assert!(out.is_empty());
    pipeline.complete(a, 0, Bytes::from_static(b":1\r\n"));
    pipeline.release(&mut out, &metrics);
    assert_eq!(&out[..], b":1\r\n>after-a\r\n:2\r\n");
    assert_eq!(pipeline.trailer_count(), 0);
}

#[test]
fn close_marker_stops_release() {
    let metrics = Metrics::new();
    let mut pipeline = Pipeline::default();
    pipeline.push_ready(Bytes::from_static(b"+OK\r\n"), meta());
    pipeline.push_close();
    pipeline.push_ready(Bytes::from_static(b"+never\r\n"), meta());
    let mut out = WriteBuffer::default();
    assert!(pipeline.release(&mut out, &metrics));
    assert_eq!(&out[..], b"+OK\r\n");
}

#[test]
fn stale_sequence_numbers_are_ignored() {
    let metrics = Metrics::new();
    let mut pipeline = Pipeline::default();
    let seq = pipeline.push_single(part(), meta()).0;
    pipeline.complete(seq, 0, Bytes::from_static(b"+a\r\n"));
    let mut out = WriteBuffer::default();
    pipeline.release(&mut out, &metrics);
    pipeline.complete(seq, 0, Bytes::from_static(b"+late\r\n"));
    pipeline.complete(99, 0, Bytes::from_static(b"+future\r\n"));
    assert!(pipeline.part_mut(seq, 0).is_none());
    assert!(pipeline.is_empty());
}

#[test]
fn a_pushed_single_part_is_the_one_the_pipeline_keeps() {
    let mut pipeline = Pipeline::default();
    let (first, kept) = pipeline.push_single(part(), meta());
    kept.tracked = true;
    assert!(pipeline.part_mut(first, 0).is_some_and(|p| p.tracked), "changed where it is kept");
    pipeline.complete(first, 0, Bytes::from_static(b"+OK\r\n"));
    // The freed slot is taken again: the new part is there, not the old one.
    let (second, kept) = pipeline.push_single(part(), meta());
    assert!(!kept.tracked);
    kept.blind = true;
    assert!(pipeline.part_mut(second, 0).is_some_and(|p| p.blind && !p.tracked));
    assert_eq!(pipeline.singles.len(), 1, "the slot was reused");
}

#[test]
fn a_lost_read_stays_resendable_only_while_no_later_request_of_its_slot_was_sent() {
    let on = |slot: Option<u16>| {
        let mut part = Part::new(Bytes::from_static(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"), Target::Slot(slot), false);
        part.resend_safe = true;
        part
    };
    let resendable_after_loss = |later: &dyn Fn(&mut Pipeline)| {
        let mut pipeline = Pipeline::default();
        let read = pipeline.push_single(on(Some(7)), meta()).0;
        later(&mut pipeline);
        pipeline.on_lost(read, 0);
        pipeline.part_mut(read, 0).is_some_and(|p| p.resend_safe)
    };
    assert!(resendable_after_loss(&|_| {}), "nothing after it");
    assert!(resendable_after_loss(&|p| p.push_ready(Bytes::from_static(b"+PONG\r\n"), meta())), "answered here");
    // Another slot's request, even answered already, does not hold a resend back.
    assert!(resendable_after_loss(&|p| {
        let other = p.push_single(on(Some(8)), meta()).0;
        p.complete(other, 0, Bytes::from_static(b"$1\r\nx\r\n"));
    }));
    // The same slot's, answered or not, a keyless or a multi-part one: it may have run first.
    assert!(!resendable_after_loss(&|p| {
        let same = p.push_single(on(Some(7)), meta()).0;
        p.complete(same, 0, Bytes::from_static(b"+OK\r\n"));
    }));
    assert!(!resendable_after_loss(&|p| {
        p.push_single(on(None), meta());
    }));
    assert!(!resendable_after_loss(&|p| {
        p.push_multi(vec![on(Some(8))], Merge::AllOk, Vec::new(), meta());
    }));
}

/// Every request's entry carries a `Meta`: its `reach` fits in the padding after `dropped`, so
/// entries (and the memcpy of each push and release) did not grow with it; its read time is one
/// `u64` (`clock::Tick`), not an `Instant`'s two words.
#[test]
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn a_request_s_meta_stays_24_bytes() {
    assert_eq!(std::mem::size_of::<Meta>(), 24);
    assert_eq!(std::mem::size_of::<Option<Meta>>(), 24);
}
