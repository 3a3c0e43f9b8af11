//! When a session's loop must wake up without an event on its sockets: its two timers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::time::Sleep;

use super::ClientIo;
use crate::session::Session;

/// The session's two timers: the idle check, re-armed when it fires or the timeout changes
/// (instead of a timer reset on every read), and the next retry, pause end, unblock or look at the pub/sub home
/// (re-armed when that moves).
pub(super) struct Timers<'a> {
    pub(super) idle: Pin<&'a mut Sleep>,
    pub(super) idle_timeout: Option<Duration>,
    /// How many times the idle timeout had been turned off when `idle_timeout` was read.
    pub(super) idle_offs: u64,
    pub(super) due: Pin<&'a mut Sleep>,
}

impl Timers<'_> {
    /// The idle timeout may have changed (a `CONFIG SET timeout` signals every client; the idle
    /// timer may fire before the signal is handled): the idle check is armed for the one in force,
    /// `now` ([`IdleTimeout::now`](crate::shared::IdleTimeout::now)). A client whose activity was
    /// not timed meanwhile (the timeout was off) counts as idle from now on. Returns whether the
    /// timeout changed.
    pub(super) fn follow_idle_timeout(&mut self, now: (Option<Duration>, u64), io: &mut ClientIo) -> bool {
        let (timeout, offs) = now;
        if (timeout, offs) == (self.idle_timeout, self.idle_offs) {
            return false;
        }
        if self.idle_timeout.is_none() || offs != self.idle_offs {
            io.last_active = Instant::now();
        }
        (self.idle_timeout, self.idle_offs) = (timeout, offs);
        if let Some(timeout) = timeout {
            self.idle.as_mut().reset((io.last_active + timeout).into());
        }
        true
    }
}

impl Session {
    /// Ready(true) when a timer fired and was handled, Ready(false) when the client idled out.
    pub(super) fn poll_timers(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut ClientIo,
        timers: &mut Timers<'_>,
    ) -> Poll<bool> {
        if let Some(timeout) = timers.idle_timeout
            && timers.idle.as_mut().poll(cx).is_ready()
        {
            if timers.follow_idle_timeout(self.shared.idle_timeout.now(), io) {
                return Poll::Ready(true);
            }
            return match self.idle_check(io, timeout) {
                Some(next) => {
                    timers.idle.as_mut().reset(next.into());
                    Poll::Ready(true)
                }
                None => Poll::Ready(false),
            };
        }
        let Some(at) = self.next_wake() else {
            return Poll::Pending;
        };
        if timers.due.deadline() != at.into() {
            timers.due.as_mut().reset(at.into());
        }
        ready!(timers.due.as_mut().poll(cx));
        self.resend_due();
        self.retry_unblock();
        if self.subs.is_some() {
            self.on_pubsub_timer();
        }
        Poll::Ready(true)
    }

    /// When the loop must wake up without an event: a part's retry, a pause's end, an unblock
    /// to send again, a look at the pub/sub home or a moved subscription connection to close (see
    /// `Session::pubsub_due_at`), the end of a soft output limit's time.
    #[inline(always)]
    pub(super) fn next_wake(&self) -> Option<Instant> {
        // The usual case, looked at per poll and twice per reply handed over: nothing to wait for.
        // Inlined, with the rest out of line: a call per look cost ~50 instructions per request.
        let nothing_due = self.held.is_none() && self.pending_unblock.is_none() && self.soft_limit_since.is_none();
        if !self.exec.has_retries() && nothing_due && self.subs.is_none() {
            return None;
        }
        self.next_wake_of_any()
    }

    /// [`Session::next_wake`] when something may wait.
    #[inline(never)]
    fn next_wake_of_any(&self) -> Option<Instant> {
        let held = self.held.as_ref().map(|h| h.until);
        let unblock = self.pending_unblock.map(|(_, at)| at);
        let pubsub = self.pubsub_due_at();
        let waiting = [held, unblock, pubsub, self.soft_limit_due()];
        self.exec.next_retry().into_iter().chain(waiting.into_iter().flatten()).min()
    }
}
