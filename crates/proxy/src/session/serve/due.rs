//! When a session's loop must wake up without an event on its sockets.

use std::time::Instant;

use crate::session::Session;

impl Session {
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
