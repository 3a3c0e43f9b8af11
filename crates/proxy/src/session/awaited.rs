//! The answers a subscription connection still owes the client, command by command.
//!
//! While a subscription command's answers are outstanding the session reads nothing more from the
//! client, so every later reply keeps its place. The node answers the commands of a connection in
//! order: a (P|S)SUBSCRIBE or (P|S)UNSUBSCRIBE with one confirmation per channel, a PING with one
//! answer — unless it refuses the command (`-MOVED`, `-NOPERM`, …), which it answers with a single
//! error whatever the command would have confirmed. So what is owed is kept per command, and an
//! error settles its command as a whole: a plain count would wait forever for the confirmations a
//! refused multi-channel command never sends.

use std::collections::VecDeque;

/// Frames still owed, per command sent and not fully answered, oldest first.
#[derive(Debug, Default)]
pub(super) struct Awaited(VecDeque<usize>);

impl Awaited {
    /// A command was sent that the node answers with `frames` frames (none: nothing to wait for).
    pub(super) fn expect(&mut self, frames: usize) {
        if frames > 0 {
            self.0.push_back(frames);
        }
    }

    /// One frame answering the oldest command came (a confirmation, a PING's answer).
    pub(super) fn answered_one(&mut self) {
        if let Some(front) = self.0.front_mut() {
            *front -= 1;
            if *front == 0 {
                self.0.pop_front();
            }
        }
    }

    /// The node refused the oldest command: nothing more comes for it.
    pub(super) fn refused(&mut self) {
        self.0.pop_front();
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
        awaited.expect(0);
        assert!(!awaited.any(), "a command answered with nothing owes nothing");
        // SSUBSCRIBE a b (two confirmations), then PING (one answer).
        awaited.expect(2);
        awaited.expect(1);
        // The node refuses the SSUBSCRIBE with one -MOVED: only PING's answer is owed now.
        awaited.refused();
        assert!(awaited.any());
        awaited.answered_one();
        assert!(!awaited.any());
        // SUBSCRIBE a b confirmed channel by channel.
        awaited.expect(2);
        awaited.answered_one();
        assert!(awaited.any());
        awaited.answered_one();
        assert!(!awaited.any());
        // Frames nobody waits for change nothing.
        awaited.answered_one();
        awaited.refused();
        assert!(!awaited.any());
    }
}
