//! WAIT and WAITAOF as a series of short waits on the node.
//!
//! They count the replicas (and, for WAITAOF, the local fsync) that acknowledged the client's
//! writes, so they go to the pooled connection the client's writes went through — which other
//! clients share. A node keeps a WAIT's reply until enough replicas acknowledged or its timeout
//! passed: sent as asked, `WAIT 1 5000` with a replica down would hold every other request on that
//! connection for 5 s, and past `command_timeout` it failed with `upstream timeout` and took the
//! connection's other requests down with it. So the node is asked to wait at most 100 ms (and
//! half of `command_timeout`) at a time, and asked again, with the time left, while fewer
//! acknowledged than the client asked for: the client's reply is the node's count once enough
//! acknowledged or its own timeout passed (never, with 0), as from one node, and the other
//! requests on that connection wait for one short wait at most (for each client waiting so).
//!
//! Each short wait counts the acknowledgements of the connection's last write when it is sent,
//! other clients' writes in between included: under a steady write load with replicas more than
//! a short wait behind, the count may stay below what one long WAIT sent first would reach.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::command::parse_integer;
use crate::resp::request::encode_command;
use crate::resp::{Request, scan};

/// The longest one wait holds the connection it shares with other clients.
const STEP: Duration = Duration::from_millis(100);

/// How long one wait on the node lasts at most: [`STEP`], and half of `command_timeout`, so that
/// the node's reply never times out.
pub fn step(command_timeout: Duration) -> Duration {
    STEP.min(command_timeout / 2)
}

/// A timeout beyond this (about 31 years) is left to the node, which may call it out of range.
const LONGEST: u64 = 1_000_000_000_000;

/// What the client asked a WAIT or WAITAOF for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitPlan {
    /// `WAITAOF`'s local fsyncs asked for; `None` for `WAIT`.
    numlocal: Option<i64>,
    numreplicas: i64,
    /// When the client's timeout passes; `None`: it waits until enough acknowledged.
    until: Option<Instant>,
    /// The client's own command: sent as it is when the node refuses a short wait, so that the
    /// client gets the node's error about its command (`unknown command` with its arguments, on a
    /// version without WAITAOF).
    original: Bytes,
    /// `CLIENT UNBLOCK` ended it: the short wait out is the last (`Some(true)`: answered with
    /// Redis' `-UNBLOCKED` error rather than its count).
    unblocked: Option<bool>,
}

/// Redis' reply to a command ended by `CLIENT UNBLOCK … ERROR`.
pub const UNBLOCKED: &[u8] = b"-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n";

impl WaitPlan {
    /// The plan of `request`, a WAIT or WAITAOF read at `now`; `None` when its arguments are not
    /// what the node accepts (it is sent as it is, for the node's own error).
    pub fn of(request: &Request, now: Instant) -> Option<WaitPlan> {
        let number = |i: usize| parse_integer(request.arg(i));
        let (numlocal, numreplicas, timeout) = match request.argc() {
            3 if request.arg(0).eq_ignore_ascii_case(b"wait") => (None, number(1)?, number(2)?),
            4 if request.arg(0).eq_ignore_ascii_case(b"waitaof") => (Some(number(1)?), number(2)?, number(3)?),
            _ => return None,
        };
        if numreplicas < 0 || numlocal.is_some_and(|n| n < 0) || timeout < 0 {
            return None;
        }
        let until = match timeout as u64 {
            0 => None,
            1..=LONGEST => Some(now.checked_add(Duration::from_millis(timeout as u64))?),
            _ => return None,
        };
        Some(WaitPlan { numlocal, numreplicas, until, original: request.bytes().clone(), unblocked: None })
    }

    /// `CLIENT UNBLOCK`: the short wait out is the last; with `error`, its answer is Redis'
    /// `-UNBLOCKED` error. The first one decides.
    pub fn end(&mut self, error: bool) {
        self.unblocked.get_or_insert(error);
    }

    /// Ended by `CLIENT UNBLOCK … ERROR`: the answer is [`UNBLOCKED`].
    pub fn unblocked_with_error(&self) -> bool {
        self.unblocked == Some(true)
    }

    /// The client's own command (see [`WaitPlan::original`]).
    pub fn into_original(self) -> Bytes {
        self.original
    }

    /// The command for the node's next wait: the client's, with the time left, at most `step`.
    /// `None` once the client's timeout passed.
    pub fn next(&self, now: Instant, step: Duration) -> Option<Bytes> {
        if self.unblocked.is_some() {
            return None;
        }
        let left = match self.until {
            Some(until) if now >= until => return None,
            Some(until) => (until - now).min(step),
            None => step,
        };
        let millis = left.as_millis().max(1).to_string();
        let replicas = self.numreplicas.to_string();
        let payload = match self.numlocal {
            None => encode_command(&[&b"WAIT"[..], replicas.as_bytes(), millis.as_bytes()]),
            Some(local) => {
                let local = local.to_string();
                encode_command(&[&b"WAITAOF"[..], local.as_bytes(), replicas.as_bytes(), millis.as_bytes()])
            }
        };
        Some(payload)
    }

    /// Whether the node's `reply` to one wait counts fewer acknowledgements than the client asked
    /// for (an error or any other reply is the answer as it is).
    pub fn short_of(&self, reply: &[u8]) -> bool {
        match self.numlocal {
            None => scan::integer(reply).is_some_and(|acked| acked < self.numreplicas),
            Some(numlocal) => {
                waitaof_counts(reply).is_some_and(|(local, replicas)| local < numlocal || replicas < self.numreplicas)
            }
        }
    }
}

/// The two counts of a whole WAITAOF reply (`*2\r\n:local\r\n:replicas\r\n`).
fn waitaof_counts(reply: &[u8]) -> Option<(i64, i64)> {
    let (b'*', 2, at) = scan::header(reply, 0)? else { return None };
    let (local, at) = scan::integer_at(reply, at)?;
    let (replicas, end) = scan::integer_at(reply, at)?;
    (end == reply.len()).then_some((local, replicas))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::RequestDecoder;
    use crate::resp::request::Limits;

    fn request(args: &[&str]) -> Request {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let mut buf = bytes::BytesMut::from(&encode_command(&args)[..]);
        RequestDecoder::new(Limits::default()).decode(&mut buf).expect("decodes").expect("whole")
    }

    #[test]
    fn a_long_wait_is_asked_in_steps_until_the_clients_timeout() {
        let now = Instant::now();
        let plan = WaitPlan::of(&request(&["wait", "2", "2500"]), now).expect("a plan");
        let step = Duration::from_millis(1000);
        assert_eq!(plan.next(now, step), Some(encode_command(&[&b"WAIT"[..], b"2", b"1000"])));
        let later = now + Duration::from_millis(2000);
        assert_eq!(plan.next(later, step), Some(encode_command(&[&b"WAIT"[..], b"2", b"500"])));
        assert_eq!(plan.next(now + Duration::from_millis(2500), step), None, "the client's timeout passed");
        assert!(plan.short_of(b":1\r\n"));
        assert!(!plan.short_of(b":2\r\n"));
        assert!(!plan.short_of(b"-ERR WAIT cannot be used with replica instances\r\n"));
    }

    #[test]
    fn a_wait_without_timeout_is_asked_again_for_ever() {
        let now = Instant::now();
        let plan = WaitPlan::of(&request(&["WAIT", "1", "0"]), now).expect("a plan");
        let much_later = now + Duration::from_secs(3600);
        let step = Duration::from_millis(1000);
        assert_eq!(plan.next(much_later, step), Some(encode_command(&[&b"WAIT"[..], b"1", b"1000"])));
    }

    #[test]
    fn waitaof_counts_both_acknowledgements() {
        let now = Instant::now();
        let plan = WaitPlan::of(&request(&["WAITAOF", "1", "1", "100"]), now).expect("a plan");
        let step = Duration::from_millis(1000);
        assert_eq!(plan.next(now, step), Some(encode_command(&[&b"WAITAOF"[..], b"1", b"1", b"100"])));
        assert!(plan.short_of(b"*2\r\n:0\r\n:1\r\n"));
        assert!(plan.short_of(b"*2\r\n:1\r\n:0\r\n"));
        assert!(!plan.short_of(b"*2\r\n:1\r\n:1\r\n"));
    }

    #[test]
    fn arguments_the_node_refuses_are_sent_as_they_are() {
        let now = Instant::now();
        let refused: [&[&str]; 8] = [
            &["WAIT", "1"],
            &["WAIT", "x", "10"],
            &["WAIT", "1", "-1"],
            &["WAITAOF", "1", "1"],
            &["WAIT", "+1", "10"],
            &["WAIT", "1", "010"],
            &["WAIT", "1", "5.0"],
            &["WAIT", "1", "9223372036854775807"],
        ];
        for args in refused {
            assert_eq!(WaitPlan::of(&request(args), now), None, "{args:?}");
        }
    }
}
