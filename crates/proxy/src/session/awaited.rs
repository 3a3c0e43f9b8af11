//! The answers a subscription connection still owes, command by command.
//!
//! While a subscription command's answers are outstanding the session reads nothing more from the
//! client, so every later reply keeps its place. The node answers the commands of a connection in
//! order: a (P|S)SUBSCRIBE or (P|S)UNSUBSCRIBE with one confirmation per channel, a PING with one
//! answer — unless it refuses the command (`-MOVED`, `-NOPERM`, …), which it answers with a single
//! error whatever the command would have confirmed. So what is owed is kept per command, and an
//! error settles its command as a whole: a plain count would wait forever for the confirmations a
//! refused multi-channel command never sends.
//!
//! Each command also says who its answers are for. The proxy's own commands (a resubscription on
//! a replacement connection, a mirror's notifications) answer nobody; a client command answers
//! the client, except its plain answers when its reply was dropped (CLIENT REPLY OFF or SKIP when
//! it was read: they come later, when the reply mode may have changed). And it keeps its bytes,
//! to be sent again where a `-MOVED` points or on a connection that replaces a dead one.

use std::collections::VecDeque;

use bytes::Bytes;

use super::pubsub::{arguments, frame_kind};

/// A subscription command as sent on a connection.
#[derive(Debug, Clone)]
pub(super) struct Command {
    pub payload: Bytes,
    /// Its plain answers (a PING's, an error) are not for the client.
    pub dropped: bool,
    /// How many of its first answers go to nobody: all of them for the proxy's own commands;
    /// those the client already had, for a client command sent again on a replacement.
    pub skip: usize,
    /// `-MOVED` redirections it followed.
    pub hops: u8,
    /// The proxy's own SSUBSCRIBE of a channel whose node dropped it when it lost the slot: if
    /// it is refused, the client is told the channel is gone, as that node would have told it.
    pub follows_slot: bool,
}

impl Command {
    /// A command of the client's.
    pub(super) fn client(payload: Bytes, dropped: bool) -> Command {
        Command { payload, dropped, skip: 0, hops: 0, follows_slot: false }
    }

    /// A command of the proxy's own, whose answers nobody sees.
    pub(super) fn own(payload: Bytes) -> Command {
        Command { payload, dropped: false, skip: usize::MAX, hops: 0, follows_slot: false }
    }

    /// Whether it is the command `name` (lowercase), whatever case it was sent in; also what
    /// kind a confirmation of it is.
    pub(super) fn is(&self, name: &[u8]) -> bool {
        frame_kind(&self.payload).is_some_and(|kind| kind.eq_ignore_ascii_case(name))
    }
}

/// A command not fully answered.
#[derive(Debug)]
pub(super) struct Pending {
    pub command: Command,
    /// Frames it is answered with in all, and still owed.
    frames: usize,
    left: usize,
    /// Its channels (patterns), in the order the node confirms them.
    channels: Vec<Bytes>,
    /// An SUNSUBSCRIBE from every shard channel: answered once a confirmation says none is left
    /// (its count reaches 0), however many channels the connection carried when it was sent
    /// (channels may have moved to another connection since, or been dropped by the node).
    until_none_left: bool,
}

impl Pending {
    /// Its channels (patterns), as the node confirms them.
    pub(super) fn channels(&self) -> &[Bytes] {
        &self.channels
    }

    /// Nothing it still owes is for the client (an error included).
    pub(super) fn is_own(&self) -> bool {
        self.command.skip >= self.left
    }

    /// The command to send again elsewhere: the answers the client already had are skipped there
    /// — but for an unsubscribe from everything, which the new connection answers for what it
    /// still carries (what was confirmed is gone from it already).
    pub(super) fn again(self) -> Command {
        let everything = self.channels.is_empty();
        let answered = if everything { 0 } else { self.frames - self.left };
        Command { skip: self.command.skip.saturating_add(answered), ..self.command }
    }
}

/// Who one answer is for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Answer {
    /// For nobody: a confirmation of the proxy's own, or one the client already had.
    pub swallowed: bool,
    /// A plain answer to a command whose reply the client dropped.
    pub dropped: bool,
}

/// Frames still owed, per command sent and not fully answered, oldest first.
#[derive(Debug, Default)]
pub(super) struct Awaited(VecDeque<Pending>);

impl Awaited {
    /// `command` was sent; the node answers it with `frames` frames (none: nothing to wait for).
    pub(super) fn expect(&mut self, frames: usize, command: Command) {
        if frames > 0 {
            let channels = arguments(&command.payload);
            let until_none_left = command.is(b"sunsubscribe") && channels.is_empty();
            self.0.push_back(Pending { command, frames, left: frames, channels, until_none_left });
        }
    }

    /// Whether a confirmation of `kind` for `channel` answers the oldest command: a node confirms
    /// a command with the command's own kind, channel by channel in the order given. One that
    /// does not fit came unasked: a node that lost a shard channel's slot (a migration, a
    /// failover) unsubscribes its subscribers on its own.
    pub(super) fn expects(&self, kind: &[u8], channel: Option<&[u8]>) -> bool {
        let Some(front) = self.0.front() else {
            return false;
        };
        if !front.command.is(kind) {
            return false;
        }
        let channels = &front.channels;
        channels.is_empty() || channels.get(front.frames - front.left).map(Bytes::as_ref) == channel
    }

    /// One frame answering the oldest command came (a confirmation with the subscription `count`
    /// it reports, a PING's answer): who it is for (the client, when nothing was owed: a frame
    /// the node sent on its own).
    pub(super) fn answered_one(&mut self, count: Option<i64>) -> Answer {
        let Some(front) = self.0.front_mut() else {
            return Answer::default();
        };
        let answer = Answer { swallowed: front.command.skip > 0, dropped: front.command.dropped };
        front.command.skip = front.command.skip.saturating_sub(1);
        let done = match front.until_none_left {
            true => count == Some(0),
            false => front.left == 1,
        };
        front.left = front.left.saturating_sub(1).max(1);
        if done {
            self.0.pop_front();
        }
        answer
    }

    /// The node refused the oldest command: nothing more comes for it. The command, if one was
    /// owed anything.
    pub(super) fn refused(&mut self) -> Option<Pending> {
        self.0.pop_front()
    }

    /// `pending`, taken by [`Awaited::refused`] for an error that turned out not to answer it, is
    /// owed again, first.
    pub(super) fn put_back(&mut self, pending: Pending) {
        self.0.push_front(pending);
    }

    /// Whether an SUNSUBSCRIBE from every shard channel is waiting for its answers.
    pub(super) fn unsubscribes_all(&self) -> bool {
        self.0.iter().any(|p| p.until_none_left)
    }

    /// Every command still owed something, oldest first (their connection died).
    pub(super) fn take_all(&mut self) -> Vec<Pending> {
        self.0.drain(..).collect()
    }

    /// Whether anything is still owed.
    pub(super) fn any(&self) -> bool {
        !self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(text: &'static [u8]) -> Bytes {
        Bytes::from_static(text)
    }

    #[test]
    fn confirmations_settle_their_own_command_and_an_error_a_whole_command() {
        let mut awaited = Awaited::default();
        awaited.expect(0, Command::client(command(b"*1\r\n$4\r\nPING\r\n"), false));
        assert!(!awaited.any(), "a command answered with nothing owes nothing");
        // SSUBSCRIBE a b (two confirmations), then PING (one answer), its reply skipped.
        let ssubscribe = command(b"*3\r\n$10\r\nSSUBSCRIBE\r\n$1\r\na\r\n$1\r\nb\r\n");
        awaited.expect(2, Command::client(ssubscribe.clone(), false));
        awaited.expect(1, Command::client(command(b"*1\r\n$4\r\nPING\r\n"), true));
        // The node refuses the SSUBSCRIBE with one -MOVED: only PING's answer is owed now.
        let refused = awaited.refused().expect("owed");
        assert!(!refused.is_own() && !refused.command.dropped, "the SSUBSCRIBE's error goes out");
        assert_eq!(refused.command.payload, ssubscribe, "it can be sent again elsewhere");
        assert!(awaited.any());
        assert_eq!(
            awaited.answered_one(None),
            Answer { swallowed: false, dropped: true },
            "the PING's answer is dropped"
        );
        assert!(!awaited.any());
        // Frames nobody waits for are the client's.
        assert_eq!(awaited.answered_one(None), Answer::default());
        assert!(awaited.refused().is_none());
    }

    #[test]
    fn the_proxys_own_commands_answer_nobody_and_a_command_sent_again_skips_what_was_answered() {
        let mut awaited = Awaited::default();
        awaited.expect(2, Command::own(command(b"*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$1\r\nb\r\n")));
        let subscribe = command(b"*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\nc\r\n$1\r\nd\r\n");
        awaited.expect(2, Command::client(subscribe.clone(), false));
        assert!(awaited.answered_one(None).swallowed);
        assert!(awaited.answered_one(None).swallowed);
        assert!(!awaited.answered_one(None).swallowed, "c is confirmed to the client");
        // The connection dies before d's confirmation: sent again, c's is skipped there.
        let pending = awaited.take_all();
        assert_eq!(pending.len(), 1);
        let again = pending.into_iter().next().expect("one").again();
        assert_eq!((again.payload.clone(), again.skip), (subscribe, 1));
        awaited.expect(2, again);
        assert!(awaited.answered_one(None).swallowed);
        assert!(!awaited.answered_one(None).swallowed);
        assert!(!awaited.any());
        // An unsubscribe from everything, half answered, is answered again for what is left.
        awaited.expect(2, Command::client(command(b"*1\r\n$11\r\nUNSUBSCRIBE\r\n"), false));
        assert!(!awaited.answered_one(None).swallowed);
        let again = awaited.take_all().into_iter().next().expect("one").again();
        assert_eq!(again.skip, 0, "nothing skipped: the new connection confirms only what is left");
        // A refused command of the proxy's own is nobody's error.
        awaited.expect(1, Command::own(command(b"*2\r\n$10\r\nSSUBSCRIBE\r\n$1\r\na\r\n")));
        assert!(awaited.refused().is_some_and(|p| p.is_own()));
    }

    #[test]
    fn a_confirmation_answers_a_command_only_when_it_fits_it() {
        let mut awaited = Awaited::default();
        assert!(!awaited.expects(b"sunsubscribe", Some(b"a")), "nothing owed: the node's own frame");
        awaited.expect(2, Command::client(command(b"*3\r\n$10\r\nSSUBSCRIBE\r\n$1\r\na\r\n$1\r\nb\r\n"), false));
        // The node lost another channel's slot meanwhile: its sunsubscribe is no answer.
        assert!(!awaited.expects(b"sunsubscribe", Some(b"c")));
        assert!(!awaited.expects(b"ssubscribe", Some(b"b")), "confirmations come in the order asked");
        assert!(awaited.expects(b"ssubscribe", Some(b"a")));
        awaited.answered_one(Some(1));
        assert!(awaited.expects(b"ssubscribe", Some(b"b")));
        awaited.answered_one(Some(2));
        assert!(!awaited.any());
        // An SUNSUBSCRIBE from everything fits any channel and ends with a count of 0, however
        // many channels it was sent for.
        awaited.expect(1, Command::client(command(b"*1\r\n$12\r\nSUNSUBSCRIBE\r\n"), false));
        assert!(awaited.expects(b"sunsubscribe", Some(b"a")));
        awaited.answered_one(Some(2));
        awaited.answered_one(Some(1));
        assert!(awaited.any(), "channels are left");
        assert!(awaited.expects(b"sunsubscribe", Some(b"c")));
        awaited.answered_one(Some(0));
        assert!(!awaited.any());
    }
}
