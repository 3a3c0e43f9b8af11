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
//! it was read: they come later, when the reply mode may have changed), and an SSUBSCRIBE its
//! bytes, to be sent again where a `-MOVED` points.

use std::collections::VecDeque;

use bytes::Bytes;

/// A command sent on a subscription connection and not fully answered.
#[derive(Debug)]
pub(super) struct Pending {
    /// Frames still owed.
    left: usize,
    /// Its plain answers (a PING's, an error) are not for the client.
    pub dropped: bool,
    /// An SSUBSCRIBE: its bytes, and how many `-MOVED` it followed to get here.
    pub resend: Option<(Bytes, u8)>,
}

/// Frames still owed, per command sent and not fully answered, oldest first.
#[derive(Debug, Default)]
pub(super) struct Awaited(VecDeque<Pending>);

impl Awaited {
    /// A command was sent that the node answers with `frames` frames (none: nothing to wait for);
    /// `dropped`: the client gets none of its plain answers.
    pub(super) fn expect(&mut self, frames: usize, dropped: bool, resend: Option<(Bytes, u8)>) {
        if frames > 0 {
            self.0.push_back(Pending { left: frames, dropped, resend });
        }
    }

    /// One frame answering the oldest command came (a confirmation, a PING's answer); whether
    /// it is dropped (false when nothing was owed).
    pub(super) fn answered_one(&mut self) -> bool {
        let Some(front) = self.0.front_mut() else {
            return false;
        };
        let dropped = front.dropped;
        front.left -= 1;
        if front.left == 0 {
            self.0.pop_front();
        }
        dropped
    }

    /// The node refused the oldest command: nothing more comes for it. The command, if one was
    /// owed anything.
    pub(super) fn refused(&mut self) -> Option<Pending> {
        self.0.pop_front()
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
        awaited.expect(0, false, None);
        assert!(!awaited.any(), "a command answered with nothing owes nothing");
        // SSUBSCRIBE a b (two confirmations), then PING (one answer), its reply skipped.
        let ssubscribe = Bytes::from_static(b"*3\r\n$10\r\nSSUBSCRIBE\r\n$1\r\na\r\n$1\r\nb\r\n");
        awaited.expect(2, false, Some((ssubscribe.clone(), 0)));
        awaited.expect(1, true, None);
        // The node refuses the SSUBSCRIBE with one -MOVED: only PING's answer is owed now.
        let refused = awaited.refused().expect("owed");
        assert!(!refused.dropped, "the SSUBSCRIBE's error goes out");
        assert_eq!(refused.resend, Some((ssubscribe, 0)), "it can be sent again elsewhere");
        assert!(awaited.any());
        assert!(awaited.answered_one(), "the PING's answer is dropped");
        assert!(!awaited.any());
        // SUBSCRIBE a b confirmed channel by channel.
        awaited.expect(2, false, None);
        assert!(!awaited.answered_one());
        assert!(awaited.any());
        assert!(!awaited.answered_one());
        assert!(!awaited.any());
        // Frames nobody waits for change nothing.
        assert!(!awaited.answered_one());
        assert!(awaited.refused().is_none());
        assert!(!awaited.any());
    }
}
