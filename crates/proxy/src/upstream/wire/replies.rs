//! Replies read from a node, each handed to the request it answers (the head of the in-flight
//! FIFO), a pipelined client's together; large ones passed on in pieces, with flow control.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::{InFlight, STREAM_AT, Streaming};
use crate::resp::FrameScanner;
use crate::upstream::lanes::NodeScripts;
use crate::upstream::{ReplySender, STREAM_WINDOW, Tag, UpstreamReply, UpstreamRequest};

/// Why reading a connection's replies ends it.
pub(super) enum Refusal {
    /// Bytes that answer no request: the connection is out of step.
    Mismatch(String),
    /// A login sent on it was refused (the node's answer, first line).
    Login(String),
}

/// Replies read for one client one after another (a pipelined client's, from one read), passed
/// on together once the run ends: handed over whole to a waiting session, or queued with one lock
/// and at most one wake-up for the run ([`super::queue::Sender::send_run`]).
#[derive(Default)]
pub(super) struct ReplyRun {
    to: Option<ReplySender>,
    replies: Vec<UpstreamReply>,
}

impl ReplyRun {
    pub(super) fn is_empty(&self) -> bool {
        self.to.is_none()
    }

    /// Adds `reply` for `reply_to`'s client, whose run this is (or starts).
    pub(super) fn push(&mut self, reply_to: ReplySender, reply: UpstreamReply) {
        // A later sender is a clone of the run's.
        self.to.get_or_insert(reply_to);
        self.replies.push(reply);
    }

    /// Passes the run on to its client (a client that went away simply drops its replies).
    pub(super) fn flush(&mut self) {
        if let Some(to) = self.to.take() {
            to.send_run(&mut self.replies);
        }
    }
}

/// Hands every complete reply in `rbuf` to the request it answers (a pipelined client's through
/// `run`, which the caller flushes: the rest of a run may still be unread).
pub(super) fn dispatch_replies(
    rbuf: &mut BytesMut,
    scanner: &mut FrameScanner,
    inflight: &mut VecDeque<InFlight>,
    run: &mut ReplyRun,
    (pushes, scripts, host): (Option<&(ReplySender, Tag)>, Option<&NodeScripts>, &str),
) -> Result<(), Refusal> {
    let mismatch = |what: &str| Refusal::Mismatch(what.to_string());
    while let Some(len) = scanner.scan(rbuf).map_err(|e| Refusal::Mismatch(e.to_string()))? {
        let mut frame: Bytes = rbuf.split_to(len).freeze();
        // The rest of a reply passed on in pieces is the tail of a value, whatever it starts with.
        let tail = || pushes.is_none() && inflight.front().is_some_and(|head| head.stream.is_some());
        if frame.first() == Some(&b'-') && !tail() {
            if let Some(filled) = crate::redirect::fill_in_host(&frame, host) {
                frame = filled;
            }
            if let Some(scripts) = scripts {
                scripts.saw_error(&frame);
            }
        }
        // A subscribed connection's frames (confirmations, messages, pongs) all go to its owner,
        // in order: they do not pair one-to-one with requests.
        if let Some((pushes, tag)) = pushes {
            let _ = pushes.send(UpstreamReply { tag: *tag, result: Ok(frame), partial: None });
            continue;
        }
        let Some(head) = inflight.front_mut() else {
            return Err(mismatch("reply without a request"));
        };
        if head.prefix_pending {
            head.prefix_pending = false;
            continue;
        }
        let Some(entry) = inflight.pop_front() else {
            return Err(mismatch("reply without a request"));
        };
        if entry.request.tag == crate::upstream::LOGIN && frame.first() == Some(&b'-') {
            // Never the password: the command is not logged, only the node's answer.
            return Err(Refusal::Login(crate::upstream::connect::first_line(&frame)));
        }
        let origin = entry.request.origin();
        let UpstreamRequest { reply_to, tag, lease, .. } = entry.request;
        let reply = UpstreamReply { tag, result: Ok(frame), partial: None };
        // The next request in flight is the same client's next request (a pipelined batch): this
        // reply waits for the run to end. Not the next part of the same request (a split MGET's
        // parts on one node): a client waiting for one request takes each part's reply handed
        // over, without a wake-up. A script lane's reply goes at once: the lane counts busy until
        // it is with its client (its lease, dropped after this).
        let pipelined = |next: &InFlight| next.request.origin().pipelined_with(origin);
        let run_goes_on = lease.is_none() && inflight.front().is_some_and(pipelined);
        if run.is_empty() && !run_goes_on {
            // A caller that went away (client disconnected) simply drops its reply.
            let _ = reply_to.send(reply);
            continue;
        }
        run.push(reply_to, reply);
        if !run_goes_on {
            run.flush();
        }
    }
    Ok(())
}

/// Passes on what has arrived of a large reply to a request that may stream, once at least
/// [`STREAM_AT`] bytes of it are here: the proxy then holds about one read of a reply of any size,
/// not the whole of it. Errors (`-…`), which the session must inspect, never stream.
pub(super) fn stream_piece(
    rbuf: &mut BytesMut,
    scanner: &mut FrameScanner,
    inflight: &mut VecDeque<InFlight>,
    now_tick: u64,
) {
    if rbuf.len() < STREAM_AT {
        return;
    }
    let Some(head) = inflight.front_mut() else { return };
    if !head.request.streamable || head.prefix_pending || (head.stream.is_none() && rbuf.first() == Some(&b'-')) {
        return;
    }
    let settled = scanner.settled(rbuf);
    if settled < STREAM_AT {
        return;
    }
    let piece = rbuf.split_to(settled).freeze();
    scanner.take_settled(settled);
    head.queued_at = now_tick;
    let stream = head.stream.get_or_insert_with(|| Box::new(Streaming { credit: Arc::default(), stalled_since: None }));
    let credit = Arc::clone(&stream.credit);
    credit.lend(piece.len());
    let _ =
        head.request.reply_to.send(UpstreamReply { tag: head.request.tag, result: Ok(piece), partial: Some(credit) });
}

/// Whether reading waits for the client of a streamed reply to catch up: more than
/// [`STREAM_WINDOW`] passed on and not written yet. A client that does not catch up within
/// `command_timeout` no longer holds the connection (which other clients' replies share): reading
/// goes on, and the client output limit bounds what its session holds.
pub(super) fn stream_stalled(head: &mut InFlight, now_tick: u64, timeout_ticks: u64) -> bool {
    let Some(stream) = head.stream.as_mut() else {
        return false;
    };
    if stream.credit.outstanding() <= STREAM_WINDOW || head.request.reply_to.is_closed() {
        stream.stalled_since = None;
        return false;
    }
    let since = *stream.stalled_since.get_or_insert(now_tick);
    let stalled = now_tick - since <= timeout_ticks;
    if stalled {
        // Waiting for the client is not the node being slow.
        head.queued_at = now_tick;
    }
    stalled
}
