use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;

use super::*;
use crate::upstream::queue::HandOver;
use crate::upstream::{ReplyReceiver, reply_channel};
use crate::upstream::{ReplySender, Tag, UpstreamReply};

/// A session whose task waits: it takes every reply handed over, as `session/serve/handover.rs`
/// does for a client with one request out, and leaves runs queued, as it does when its batch may
/// not wait for the rest (a script out, say).
#[derive(Default)]
struct Waiting {
    taken: Mutex<Vec<(u64, u32)>>,
}

impl HandOver<UpstreamReply> for Waiting {
    fn try_take(&self, reply: UpstreamReply) -> Result<(), UpstreamReply> {
        self.taken.lock().expect("not poisoned").push((reply.tag.seq, reply.tag.part));
        Ok(())
    }

    fn try_take_run(&self, _run: &mut Vec<UpstreamReply>) -> bool {
        false
    }
}

fn client() -> (ReplySender, ReplyReceiver, Arc<Waiting>) {
    let (tx, rx) = reply_channel();
    let waiting = Arc::new(Waiting::default());
    let weak: Weak<Waiting> = Arc::downgrade(&waiting);
    rx.hand_over_to(weak);
    (tx, rx, waiting)
}

fn request(to: &ReplySender, seq: u64, part: u32) -> UpstreamRequest {
    let tag = Tag { seq, part };
    UpstreamRequest {
        payload: Bytes::from_static(b"*1\r\n$4\r\nPING\r\n"),
        prefix: None,
        tag,
        reply_to: to.clone(),
        bounded: true,
        streamable: false,
        lease: None,
    }
}

#[test]
fn a_pipelined_clients_replies_read_together_are_queued_as_one_run_and_others_handed_over() {
    let ((a, a_rx, a_waiting), (b, b_rx, b_waiting)) = (client(), client());
    let (mut wbuf, mut inflight) = (WriteBuffer::default(), VecDeque::new());
    // Client a pipelines requests 1 and 2, client b sends one, then a sends request 3 split in two
    // parts (one request: its client waits for it alone).
    for (to, seq, part) in [(&a, 1, 0), (&a, 2, 0), (&b, 1, 0), (&a, 3, 0), (&a, 3, 1)] {
        queue(request(to, seq, part), &mut wbuf, &mut inflight, 0, true);
    }
    let mut rbuf = BytesMut::from(&b"+1\r\n+2\r\n+3\r\n+4\r\n+5\r\n"[..]);
    let (mut scanner, mut run) = (FrameScanner::new(), ReplyRun::default());
    let dispatched = dispatch_replies(&mut rbuf, &mut scanner, &mut inflight, &mut run, (None, None, "127.0.0.1"));
    assert!(dispatched.is_ok());
    run.flush();
    assert!(inflight.is_empty() && rbuf.is_empty());
    let mut queued = VecDeque::new();
    assert_eq!(a_rx.take(&mut queued), Some(2), "a's pipelined replies queued together");
    let tags: Vec<(u64, u32)> = queued.iter().map(|r| (r.tag.seq, r.tag.part)).collect();
    assert_eq!(tags, [(1, 0), (2, 0)]);
    assert_eq!(*a_waiting.taken.lock().expect("not poisoned"), [(3, 0), (3, 1)], "one request's parts handed over");
    assert_eq!(*b_waiting.taken.lock().expect("not poisoned"), [(1, 0)]);
    assert_eq!(b_rx.take(&mut queued), None);
}

#[test]
fn a_request_and_its_in_flight_entry_stay_small() {
    // Moved on every request: session -> queue -> connection -> in flight -> reply.
    assert!(std::mem::size_of::<UpstreamRequest>() <= 80, "{}", std::mem::size_of::<UpstreamRequest>());
    assert!(std::mem::size_of::<InFlight>() <= 104, "{}", std::mem::size_of::<InFlight>());
}
