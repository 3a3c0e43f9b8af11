//! On a node's reply: what it means for the part that got it. Pure: it reads the reply, updates
//! the part (its next node, its retry deadline, a script to load first) and says what to do next;
//! the executor carries that out.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::part::{Part, Target};
use super::scripts::{self, Scripts};
use super::wait::WaitPlan;
use crate::error::ProxyError;
use crate::redirect::{self, MAX_HOPS, Redirect};
use crate::upstream::UpstreamError;

/// What to do with a part after its node answered (or failed to).
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The answer: the node's reply, or the proxy's error. `stale_map`: the reply was a
    /// redirection the proxy did not follow, so its map is behind.
    Done { reply: Bytes, stale_map: bool },
    /// A transient error (`CLUSTERDOWN`, `TRYAGAIN`) still there when the part's retry deadline
    /// passed: the node's reply is the answer.
    Expired(Bytes),
    /// The proxy's error for the part. The client's own connection failed when `own_lost`: its
    /// state (WATCH, a transaction) is gone with it.
    Failed { error: ProxyError, own_lost: bool },
    /// A redirection: the part now names its new node; send it there at once.
    Redirected { moved: bool },
    /// The node lacked a script the proxy knows: the part now loads it first; send again at once.
    ScriptLoaded,
    /// One short wait of a WAIT or WAITAOF came back short of what the client asked for, with
    /// time left, or the node refused it: the part now asks for the rest, or sends the client's
    /// own command for the node's error; send again at once (`super::wait`). `answered`: the
    /// length of the payload the node answered, which a hold counted.
    WaitAgain { answered: usize },
    /// A transient failure: send again after a pause, until the part's retry deadline.
    /// `node_failed`: the topology should be refreshed now.
    RetryLater { node_failed: bool },
    /// Part of a reply already went to the client and the rest broke off: the client connection
    /// cannot be resynchronised.
    Broken,
}

/// How long a part is retried for, from its first transient failure.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// After `TRYAGAIN` (a slot in migration): `command_timeout`.
    pub retry_for: Duration,
    /// While the cluster fails over — the node unreachable, `CLUSTERDOWN` — or a slot has no
    /// owner: `upstream.failover_wait` (see [`super::hold`]).
    pub hold_for: Duration,
}

/// Whether `reply` is the answer for `part` as it is, with nothing to act on: only an error can ask
/// for a reload, a redirection or a retry, and the end of a reply whose pieces were passed on is
/// the tail of a value, however it reads (a value may hold `-TRYAGAIN\r\n`). The usual reply;
/// [`super::Executor::on_reply`] checks it before calling [`on_reply`], which checks it too.
#[inline]
pub fn is_final(part: &Part, reply: &[u8]) -> bool {
    reply.first() != Some(&b'-') || part.reply_started()
}

/// A reply with nothing to act on: the answer, unless it ends one short wait of a WAIT or WAITAOF
/// short of what the client asked for while its time is not up (the part then asks again).
fn final_reply(part: &mut Part, reply: Bytes, policy: RetryPolicy, now: impl Fn() -> Instant) -> Outcome {
    let step = super::wait::step(policy.retry_for);
    let again = part.wait_plan().filter(|plan| plan.short_of(&reply)).and_then(|plan| plan.next(now(), step));
    match again {
        Some(payload) => {
            let answered = std::mem::replace(&mut part.payload, payload).len();
            Outcome::WaitAgain { answered }
        }
        None => Outcome::Done { reply, stale_map: false },
    }
}

/// Decides what `result` means for `part`, updating the part for its next attempt. `now` reads
/// the clock, which only failures and transient errors need: an ordinary reply costs no clock read.
pub fn on_reply(
    part: &mut Part,
    result: Result<Bytes, UpstreamError>,
    policy: RetryPolicy,
    scripts: &Scripts,
    now: impl Fn() -> Instant,
) -> Outcome {
    let reply = match result {
        // A WAIT ended by `CLIENT UNBLOCK … ERROR`: whatever its short wait got (`super::wait`).
        Ok(_) if part.wait_plan().is_some_and(WaitPlan::unblocked_with_error) => {
            return Outcome::Done { reply: Bytes::from_static(super::wait::UNBLOCKED), stale_map: false };
        }
        Ok(reply) if is_final(part, &reply) => return final_reply(part, reply, policy, now),
        Ok(reply) => reply,
        Err(error) => return on_failure(part, error, policy, now()),
    };
    // A script the proxy saw loaded is missing on this node (a failover promoted a replica, which
    // never had it): load it there and run the command again, once.
    if reply.starts_with(b"-NOSCRIPT")
        && !part.script_reloaded
        && let Some(load) = scripts::reload_for(scripts, &part.payload)
    {
        part.script_reloaded = true;
        part.set_prefix(load);
        return Outcome::ScriptLoaded;
    }
    let next = redirect::classify(&reply);
    // CLUSTERDOWN (every node says so while a failed master's replica waits to be promoted) and
    // TRYAGAIN are transient: resend for as long as a client waits for one command, rather than
    // a fixed number of hops.
    if matches!(next, Redirect::TryAgain | Redirect::ClusterDown) && part.follow_redirects {
        let now = now();
        let wait = if next == Redirect::ClusterDown { policy.hold_for } else { policy.retry_for };
        if now < part.retry_deadline(now + wait) {
            part.set_redirect(None);
            part.set_retry_error(Some(reply.clone()));
            return Outcome::RetryLater { node_failed: next == Redirect::ClusterDown };
        }
        return Outcome::Expired(reply);
    }
    if next == Redirect::None
        && reply.starts_with(b"-ERR ")
        && let Some(original) = part.take_wait_plan().map(WaitPlan::into_original).filter(|o| *o != part.payload)
    {
        // The node refused a short wait (`super::wait`): the client's own command, for the
        // node's error about it (an unknown command's echoes its arguments). Only a plain `-ERR`:
        // after a transient one (`-BUSY`, `-LOADING`) the command could block the connection.
        let answered = std::mem::replace(&mut part.payload, original).len();
        return Outcome::WaitAgain { answered };
    }
    if next == Redirect::None || part.hops >= MAX_HOPS || !part.follow_redirects {
        return Outcome::Done { stale_map: next != Redirect::None, reply };
    }
    part.hops += 1;
    match next {
        Redirect::Moved { addr, .. } => {
            part.set_redirect(Some((addr.to_string(), false)));
            Outcome::Redirected { moved: true }
        }
        Redirect::Ask { addr, .. } => {
            part.set_redirect(Some((addr.to_string(), true)));
            Outcome::Redirected { moved: false }
        }
        // Handled above: only a redirection to follow reaches this point.
        Redirect::TryAgain | Redirect::ClusterDown | Redirect::None => Outcome::Done { reply, stale_map: false },
    }
}

/// A part that got no reply. Never sent, or a read lost in flight: safe to hold until the
/// topology names a node that answers, for up to `failover_wait`. Maybe applied (a timeout, a
/// write lost in flight): the client gets the error, never a silent second write.
fn on_failure(part: &mut Part, error: UpstreamError, policy: RetryPolicy, now: Instant) -> Outcome {
    if part.streamed {
        return Outcome::Broken;
    }
    // Pieces that came but were not written yet go with the reply they began: the client gets
    // the error alone, never half a value followed by it.
    if let Some(pieces) = part.pieces_if_any() {
        if let Some(credit) = pieces.credit.take() {
            credit.give_back(pieces.held.len());
        }
        pieces.held.clear();
    }
    // The own connection holds state (WATCH, MULTI) that a retry elsewhere would not have: its
    // failures go to the client, unless the connection holds nothing of the client's.
    let own = part.target == Target::Owned;
    let pinned = own && part.rehome.is_none();
    let deadline = part.retry_deadline(now + policy.hold_for);
    // A read lost in flight is resent as one never sent: a node that died mid-pipeline costs
    // its writes an error (they may have run), not its reads.
    let resend = error.never_sent() || (error.lost_in_flight() && part.resend_after_loss());
    if resend && !pinned && now < deadline {
        part.set_redirect(None);
        // A read whose replica is unreachable, or lost it, goes to the master from now on.
        part.write = true;
        part.set_retry_error(Some(crate::error::ProxyError::from(error).to_resp()));
        return Outcome::RetryLater { node_failed: true };
    }
    Outcome::Failed { error: error.into(), own_lost: own }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy { retry_for: Duration::from_secs(5), hold_for: Duration::from_secs(15) };

    fn get() -> Part {
        Part::new(Bytes::from_static(b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n"), Target::Slot(Some(15495)), false)
    }

    fn reply(text: &'static [u8]) -> Result<Bytes, UpstreamError> {
        Ok(Bytes::from_static(text))
    }

    #[test]
    fn an_ordinary_reply_is_the_answer() {
        let mut part = get();
        let outcome = on_reply(&mut part, reply(b"$1\r\nx\r\n"), POLICY, &Scripts::default(), Instant::now);
        assert_eq!(outcome, Outcome::Done { reply: Bytes::from_static(b"$1\r\nx\r\n"), stale_map: false });
    }

    #[test]
    fn moved_and_ask_name_the_next_node_until_the_hop_limit() {
        let mut part = get();
        let now = Instant::now();
        let moved = on_reply(&mut part, reply(b"-MOVED 15495 10.0.0.2:6379\r\n"), POLICY, &Scripts::default(), || now);
        assert_eq!(moved, Outcome::Redirected { moved: true });
        assert_eq!(part.redirect(), Some(&("10.0.0.2:6379".to_string(), false)));
        let ask = on_reply(&mut part, reply(b"-ASK 15495 10.0.0.3:6379\r\n"), POLICY, &Scripts::default(), || now);
        assert_eq!(ask, Outcome::Redirected { moved: false });
        assert_eq!(part.redirect(), Some(&("10.0.0.3:6379".to_string(), true)));
        part.hops = MAX_HOPS;
        let last = on_reply(&mut part, reply(b"-MOVED 15495 10.0.0.4:6379\r\n"), POLICY, &Scripts::default(), || now);
        assert!(matches!(last, Outcome::Done { stale_map: true, .. }), "{last:?}");
    }

    #[test]
    fn inside_a_transaction_a_redirection_goes_to_the_client() {
        let mut part = get();
        part.follow_redirects = false;
        let outcome = on_reply(&mut part, reply(b"-MOVED 1 a:1\r\n"), POLICY, &Scripts::default(), Instant::now);
        assert!(matches!(outcome, Outcome::Done { stale_map: true, .. }));
        let down = on_reply(&mut part, reply(b"-CLUSTERDOWN x\r\n"), POLICY, &Scripts::default(), Instant::now);
        assert!(matches!(down, Outcome::Done { stale_map: true, .. }));
    }

    #[test]
    fn transient_errors_are_retried_until_the_deadline_then_answered() {
        let mut part = get();
        let start = Instant::now();
        let scripts = Scripts::default();
        let first = on_reply(&mut part, reply(b"-TRYAGAIN x\r\n"), POLICY, &scripts, || start);
        assert_eq!(first, Outcome::RetryLater { node_failed: false });
        let again = on_reply(&mut part, reply(b"-TRYAGAIN x\r\n"), POLICY, &scripts, || start + Duration::from_secs(4));
        assert_eq!(again, Outcome::RetryLater { node_failed: false });
        let late = on_reply(&mut part, reply(b"-TRYAGAIN x\r\n"), POLICY, &scripts, || start + Duration::from_secs(6));
        assert_eq!(late, Outcome::Expired(Bytes::from_static(b"-TRYAGAIN x\r\n")));
    }

    #[test]
    fn a_failover_is_waited_for_longer_than_a_migration() {
        let start = Instant::now();
        let scripts = Scripts::default();
        let mut down = get();
        let first = on_reply(&mut down, reply(b"-CLUSTERDOWN The cluster is down\r\n"), POLICY, &scripts, || start);
        assert_eq!(first, Outcome::RetryLater { node_failed: true });
        let later = start + Duration::from_secs(10);
        let held = on_reply(&mut down, reply(b"-CLUSTERDOWN The cluster is down\r\n"), POLICY, &scripts, || later);
        assert_eq!(held, Outcome::RetryLater { node_failed: true }, "within failover_wait");
        let mut moving = get();
        assert!(matches!(
            on_reply(&mut moving, reply(b"-TRYAGAIN x\r\n"), POLICY, &scripts, || start),
            Outcome::RetryLater { .. }
        ));
        let late = on_reply(&mut moving, reply(b"-TRYAGAIN x\r\n"), POLICY, &scripts, || later);
        assert!(matches!(late, Outcome::Expired(_)), "past command_timeout");
        let unreachable = UpstreamError::Unreachable { addr: "a:1".into(), reason: "refused".into() };
        let mut part = get();
        assert!(matches!(on_failure(&mut part, unreachable.clone(), POLICY, start), Outcome::RetryLater { .. }));
        assert!(matches!(on_failure(&mut part, unreachable.clone(), POLICY, later), Outcome::RetryLater { .. }));
        let expired = start + Duration::from_secs(16);
        assert!(matches!(on_failure(&mut part, unreachable, POLICY, expired), Outcome::Failed { .. }));
    }

    #[test]
    fn requests_never_sent_are_retried_but_not_timed_out_ones_nor_on_the_own_connection() {
        let unreachable = || UpstreamError::Unreachable { addr: "a:1".into(), reason: "refused".into() };
        let now = Instant::now();
        let mut part = get();
        assert_eq!(on_failure(&mut part, unreachable(), POLICY, now), Outcome::RetryLater { node_failed: true });
        assert!(part.write, "a read retried goes to the master");
        let timeout = on_failure(&mut get(), UpstreamError::Timeout, POLICY, now);
        assert_eq!(timeout, Outcome::Failed { error: UpstreamError::Timeout.into(), own_lost: false });
        let mut own = get();
        own.target = Target::Owned;
        assert_eq!(
            on_failure(&mut own, unreachable(), POLICY, now),
            Outcome::Failed { error: unreachable().into(), own_lost: true }
        );
        let mut streamed = get();
        streamed.streamed = true;
        assert_eq!(on_failure(&mut streamed, UpstreamError::Timeout, POLICY, now), Outcome::Broken);
        // Pieces held, none written: dropped, and the error is the whole answer.
        let mut held = get();
        held.pieces_mut().held.extend_from_slice(b"$100\r\nabc");
        assert_eq!(
            on_failure(&mut held, UpstreamError::Timeout, POLICY, now),
            Outcome::Failed { error: UpstreamError::Timeout.into(), own_lost: false }
        );
        assert!(held.held().is_some_and(bytes::BytesMut::is_empty));
    }

    #[test]
    fn a_read_lost_in_flight_is_resent_once_a_write_never() {
        let lost = || UpstreamError::ConnectionLost { addr: "a:1".into() };
        let now = Instant::now();
        let mut read = get();
        read.resend_safe = true;
        assert_eq!(on_failure(&mut read, lost(), POLICY, now), Outcome::RetryLater { node_failed: true });
        // Its answer if a later request of the client overtakes it: the loss.
        assert_eq!(read.take_retry_error().as_deref(), Some(&b"-ERR upstream connection to a:1 lost\r\n"[..]));
        // Lost again (a read that makes its node drop the connection): the client's error.
        assert_eq!(
            on_failure(&mut read, lost(), POLICY, now),
            Outcome::Failed { error: lost().into(), own_lost: false }
        );
        let mut write = get();
        write.write = true;
        assert_eq!(
            on_failure(&mut write, lost(), POLICY, now),
            Outcome::Failed { error: lost().into(), own_lost: false }
        );
        // A blocking read would start its wait again; the own connection holds the client's state.
        let mut blocking = get();
        (blocking.resend_safe, blocking.blocks) = (true, true);
        assert!(matches!(on_failure(&mut blocking, lost(), POLICY, now), Outcome::Failed { .. }));
        let mut own = get();
        (own.resend_safe, own.target, own.rehome) = (true, Target::Owned, Some(None));
        assert!(matches!(on_failure(&mut own, lost(), POLICY, now), Outcome::Failed { .. }));
        // Past `failover_wait` (or with it off) the loss is the answer.
        let mut late = get();
        late.resend_safe = true;
        let off = RetryPolicy { hold_for: Duration::ZERO, ..POLICY };
        assert!(matches!(on_failure(&mut late, lost(), off, now), Outcome::Failed { .. }));
    }

    #[test]
    fn the_end_of_a_reply_passed_on_in_pieces_is_never_acted_on() {
        let mut part = get();
        part.pieces_mut().held.extend_from_slice(b"$22\r\nabc\r\n");
        let tail = reply(b"-TRYAGAIN x\r\n-ASK 1 evil:1\r\n\r\n");
        let outcome = on_reply(&mut part, tail.clone(), POLICY, &Scripts::default(), Instant::now);
        assert_eq!(outcome, Outcome::Done { reply: tail.expect("ok"), stale_map: false });
        assert_eq!(part.redirect(), None);
    }

    #[test]
    fn a_missing_script_is_loaded_once() {
        let scripts = Scripts::default();
        scripts::tests::remember_args(&scripts, &["SCRIPT", "LOAD", "return 1"]);
        let evalsha = crate::resp::Request::from_args(&["EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "0"]);
        let mut part = Part::new(evalsha.bytes().clone(), Target::Slot(None), true);
        let now = Instant::now();
        let first = on_reply(&mut part, reply(b"-NOSCRIPT No matching script\r\n"), POLICY, &scripts, || now);
        assert_eq!(first, Outcome::ScriptLoaded);
        assert!(part.take_prefix().is_some());
        let second = on_reply(&mut part, reply(b"-NOSCRIPT No matching script\r\n"), POLICY, &scripts, || now);
        assert!(matches!(second, Outcome::Done { .. }));
    }
}
