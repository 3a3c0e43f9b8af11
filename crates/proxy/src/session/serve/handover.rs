//! Replies handed over to a waiting session by the node connection that read them, instead of
//! queued for the session's task: no task wake-up per reply.
//!
//! The session's state lives behind a lock its task holds while it runs. A node connection with
//! a reply for the session takes the lock if it is free and the task waits (its last poll
//! returned Pending, with every waker registered), handles the reply as the task would, and
//! writes the client's replies — a pipelined client's reply runs too, whose released replies may
//! wait in the write buffer for the hand-over that completes their batch
//! (`Session::gathers_in_place`): one write per batch and no wake-up for it. The task is woken
//! only when that leaves it something to do — a
//! write that must wait, a pipelined batch to gather, input it may read again, a timer to arm,
//! the connection to close. Otherwise (the lock is taken, the task is running or about to) the
//! reply is queued and wakes the task as before. A reply handed over takes the queued ones first,
//! so the session sees a connection's replies in the order sent.
//!
//! Measured (bench/RESULTS.md, "Session of 2026-12-05, second part"): one task poll per
//! unpipelined request instead of two; with reply runs gathered in place ("Session of
//! 2026-12-06"), GET `-P 16` 1.13× → 1.22× predixy's ops/s, CPU per request 1.18 → 0.82 µs.

use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError, Weak};
use std::task::{Context, Poll, Waker};

use crate::socket::Socket;

use super::{ClientIo, Settled};
use crate::session::Session;
use crate::upstream::queue::HandOver;
use crate::upstream::{PUSH, UpstreamReply};

/// What a session's task shares with the node connections that hand it replies.
pub(in crate::session) struct Served<S> {
    pub(in crate::session) session: Session,
    pub(super) io: ClientIo,
    /// The client's connection: read by the task, written by the task and by hand-overs.
    pub(super) stream: S,
    /// The task's waker, kept from its last poll: writes made for it register it, and it wakes
    /// the task.
    pub(super) waker: Option<Waker>,
    /// The task waits: its last poll returned Pending, so a reply may be handed over.
    pub(super) waiting: bool,
    /// Handling a reply handed over panicked: the state may be half changed, so the task ends the
    /// session at its next poll (the node connection that handed it over goes on).
    pub(super) failed: bool,
}

/// Locks `served`. A panic while it was held (in the task, which then ends; or in a hand-over,
/// which marks it `failed`) leaves a session that is served no more: its state is read only to
/// end it.
pub(in crate::session) fn lock<S>(served: &Mutex<Served<S>>) -> MutexGuard<'_, Served<S>> {
    served.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The state `session` is served from, with the client's `stream`, set up for replies to be
/// handed over. Built outside any future: a session moved through an async function's arguments
/// kept a second copy of itself in that future's state (measured: 2.63 → 5.16 KiB per idle
/// client).
pub(in crate::session) fn served<S>(session: Session, stream: S) -> Arc<Mutex<Served<S>>>
where
    S: Socket + Send + 'static,
{
    let io = ClientIo::new(Arc::clone(&session.shared), !session.shared.clients.is_stopping());
    let served = Arc::new(Mutex::new(Served { session, io, stream, waker: None, waiting: false, failed: false }));
    let receiver: Weak<Mutex<Served<S>>> = Arc::downgrade(&served);
    lock(&served).session.exec.hand_replies_over_to(receiver);
    served
}

impl<S: Socket + Send + 'static> HandOver<UpstreamReply> for Mutex<Served<S>> {
    fn try_take(&self, reply: UpstreamReply) -> Result<(), UpstreamReply> {
        let mut reply = Some(reply);
        match hand_over(self, |served| served.take(&mut reply)) {
            true => Ok(()),
            false => reply.map_or(Ok(()), Err),
        }
    }

    fn try_take_run(&self, run: &mut Vec<UpstreamReply>) -> bool {
        hand_over(self, |served| served.take_run(run))
    }
}

/// Runs `take` on the session when its task waits and the lock is free, and, for a client with
/// several requests out, when their replies may wait in its write buffer for the rest of their
/// batch ([`Session::gathers_in_place`]); false when it did not run, or declined.
fn hand_over<S: Socket>(served: &Mutex<Served<S>>, take: impl FnOnce(&mut Served<S>) -> bool) -> bool {
    let mut served = match served.try_lock() {
        Ok(served) => served,
        Err(TryLockError::WouldBlock | TryLockError::Poisoned(_)) => return false,
    };
    // A pipelined client's replies are written once the batch is in: here, by the hand-over that
    // completes it; or, when they may not wait for it (a script out, say), by the task, which
    // gathers what comes in one turn (`Turn::Yield`) — a write per hand-over would only delay.
    let Served { session, io, waiting, .. } = &*served;
    if !*waiting || (session.pipeline.len() > 1 && !session.gathers_in_place(io)) {
        return false;
    }
    // Session code runs in the node connection's task now: a panic in it must not end that
    // task, which serves other clients too. The session ends instead.
    let taken = std::panic::catch_unwind(AssertUnwindSafe(|| take(&mut served)));
    if let Ok(taken) = taken {
        return taken;
    }
    crate::log_limited!(
        5,
        error,
        client = served.session.state.id,
        "handling a node reply panicked: closing the client"
    );
    served.failed = true;
    served.waiting = false;
    if let Some(waker) = &served.waker {
        waker.wake_by_ref();
    }
    true
}

impl<S: Socket> Served<S> {
    /// Handles `reply` (taken out of the option) as [`Served::handle`] does.
    fn take(&mut self, reply: &mut Option<UpstreamReply>) -> bool {
        let part_reply = reply.as_ref().is_some_and(|r| r.tag.seq != PUSH.seq && r.partial.is_none());
        self.waker.is_some() && self.handle(part_reply, reply.take())
    }

    /// Handles every reply of `run` as [`Served::handle`] does.
    fn take_run(&mut self, run: &mut Vec<UpstreamReply>) -> bool {
        self.waker.is_some() && self.handle(false, run.drain(..))
    }

    /// Handles `replies` (after the replies queued before them) as the task's next poll would,
    /// and writes what they release — or leaves it in the write buffer for the rest of its batch
    /// ([`Session::gathers_in_place`]); wakes the task when that leaves it something to do. Only
    /// once the task has waited (its waker is kept, to write and wake with). `part_reply`: one
    /// reply, for a part.
    fn handle(&mut self, part_reply: bool, replies: impl IntoIterator<Item = UpstreamReply>) -> bool {
        let Served { session, io, stream, waiting, waker, .. } = self;
        let Some(waker) = waker.as_ref() else {
            return false;
        };
        // What the task's last poll left waiting on: reading (its read gate armed, or not) and
        // its timer (armed for the next wake-up then: a retry, a hold's end, a look at the pub/sub
        // home, a moved subscription connection to close; one due at another time now needs the
        // task to arm it).
        let could_read = session.can_read(io);
        let wake_at = session.next_wake();
        let queued = session.exec.take_replies(&mut session.reply_batch);
        if queued {
            session.on_replies();
        }
        // Straight from the run: through the batch's queue each cost ~40 instructions more.
        for reply in replies {
            session.on_reply(reply);
        }
        // One part's reply of a request still waiting for others changes nothing to settle or
        // write (a 10-key MGET's parts cost no settling each); replies queued before it may have.
        let unchanged = part_reply && !queued && session.pipeline.front_waits_for_parts() && session.direct.is_empty();
        let done = match unchanged && !session.broken && !session.over_output_limit {
            true => true,
            false => session.write_released(io, stream, waker),
        };
        session.exec.end_wake_up();
        if !done || session.can_read(io) != could_read || session.next_wake() != wake_at {
            *waiting = false;
            io.settled = false;
            waker.wake_by_ref();
        }
        true
    }
}

impl Session {
    /// Settles and writes what is released, for a reply handed over: true when that is all there
    /// was to do — the state settled, everything written and flushed, or left in the buffer for
    /// the rest of its batch ([`Session::gathers_in_place`]). False leaves the rest to
    /// the task: a write that must wait (its waker, `waker`, is registered), a pipelined batch's
    /// gathering, a request taken up again, the connection to close.
    fn write_released<S: Socket>(&mut self, io: &mut ClientIo, stream: &mut S, waker: &Waker) -> bool {
        if !matches!(self.settle(io), Settled::Wait) {
            return false;
        }
        // Whether a client that stopped sending (or a session closing) is done is for the task to
        // settle once everything is written.
        if !io.reading || io.closing {
            return false;
        }
        if io.wbuf.is_empty() || self.gathers_in_place(io) {
            return true;
        }
        if self.waits_for_batch(io) {
            return false;
        }
        let mut cx = Context::from_waker(waker);
        match io.wbuf.poll_write_to(stream, &mut cx) {
            Poll::Ready(Ok(written)) => self.on_written(io, written),
            // An error is the task's to see (its write fails the same way).
            Poll::Ready(Err(_)) | Poll::Pending => return false,
        }
        if !io.wbuf.is_empty() {
            return false;
        }
        match Pin::new(stream).poll_flush(&mut cx) {
            Poll::Ready(Ok(())) => io.flushing = false,
            Poll::Ready(Err(_)) | Poll::Pending => return false,
        }
        true
    }
}
