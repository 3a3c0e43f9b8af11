//! The answers a subscription connection still owes the client, command by command.
//!
//! While a subscription command's answers are outstanding the session reads nothing more from the
//! client, so every later reply keeps its place. The node answers the commands of a connection in
//! order: a (P|S)SUBSCRIBE or (P|S)UNSUBSCRIBE with one confirmation per channel, a PING with one
//! answer — unless it refuses the command (`-MOVED`, `-NOPERM`, …), which it answers with a single
//! error whatever the command would have confirmed. So what is owed is kept per command, and an
//! error settles its command as a whole: a plain count would wait forever for the confirmations a
//! refused multi-channel command never sends.
//!
//! Each command also carries whether its plain answers are dropped (CLIENT REPLY OFF or SKIP when
//! it was read): they come later, when the reply mode may have changed.

use std::collections::VecDeque;

/// Frames still owed, per command sent and not fully answered, oldest first, with whether the
/// command's answers are dropped.
#[derive(Debug, Default)]
pub(super) struct Awaited(VecDeque<(usize, bool)>);

impl Awaited {
    /// A command was sent that the node answers with `frames` frames (none: nothing to wait for);
    /// `dropped`: the client gets none of them.
    pub(super) fn expect(&mut self, frames: usize, dropped: bool) {
        if frames > 0 {
            self.0.push_back((frames, dropped));
        }
    }

    /// One frame answering the oldest command came (a confirmation, a PING's answer); whether
    /// it is dropped (false when nothing was owed).
    pub(super) fn answered_one(&mut self) -> bool {
        let Some((left, dropped)) = self.0.front_mut() else {
            return false;
        };
        let dropped = *dropped;
        *left -= 1;
        if *left == 0 {
            self.0.pop_front();
        }
        dropped
    }

    /// The node refused the oldest command: nothing more comes for it. Whether its error is
    /// dropped.
    pub(super) fn refused(&mut self) -> bool {
        self.0.pop_front().is_some_and(|(_, dropped)| dropped)
    }

    /// Whether anything is still owed.
    pub(super) fn any(&self) -> bool {
        !self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirmations_settle_their_own_command_and_an_error_a_whole_command() {
        let mut awaited = Awaited::default();
        awaited.expect(0, false);
        assert!(!awaited.any(), "a command answered with nothing owes nothing");
        // SSUBSCRIBE a b (two confirmations), then PING (one answer), its reply skipped.
        awaited.expect(2, false);
        awaited.expect(1, true);
        // The node refuses the SSUBSCRIBE with one -MOVED: only PING's answer is owed now.
        assert!(!awaited.refused(), "the SSUBSCRIBE's error goes out");
        assert!(awaited.any());
        assert!(awaited.answered_one(), "the PING's answer is dropped");
        assert!(!awaited.any());
        // SUBSCRIBE a b confirmed channel by channel.
        awaited.expect(2, false);
        assert!(!awaited.answered_one());
        assert!(awaited.any());
        assert!(!awaited.answered_one());
        assert!(!awaited.any());
        // Frames nobody waits for change nothing.
        assert!(!awaited.answered_one());
        assert!(!awaited.refused());
        assert!(!awaited.any());
    }
}
