//! Subscription connections replaced lately: one that died, or one that moved because the pub/sub
//! home is another master now while its node still works.
//!
//! A replaced connection's frames can reach the session after its replacement took over: those
//! queued before, and those its task read before it saw it was dropped. Each connection's frames
//! carry its own link, so they are known as the old connection's: its messages are passed on
//! unless the replacement delivered them already or the client unsubscribed from them since, and
//! remembered as its delivery ([`Delivered::late_from`]). A connection that moved
//! stays subscribed until its replacement confirmed every subscription and [`OVERLAP`] more
//! ([`KEEP_AT_MOST`] at most), so that a message published meanwhile reaches the client from one
//! node or the other, once — as it would from one Redis node, which never drops a subscriber's
//! message. A client that unsubscribes meanwhile gets no more of the old connection's messages
//! for what it left (they are checked against what the replacement still carries).
//!
//! [`Delivered::late_from`]: crate::session::recent::Delivered::late_from

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{frame_kind, frames};
use crate::session::Session;
use crate::session::recent::REMEMBER_FOR;
use crate::upstream::{OwnedConn, UpstreamError, UpstreamReply};

/// How long a moved connection stays subscribed after its replacement is confirmed: a message
/// published just before the replacement subscribed may reach the old node a little later than
/// the new one (the cluster bus brings it to each on its own time), and only the old connection
/// delivers it. Both deliver what comes in between; the copies are dropped.
const OVERLAP: Duration = Duration::from_millis(100);

/// A moved connection closes this long after the move at the latest, confirmed replacement or not
/// (one that cannot subscribe backs off and tries again meanwhile).
const KEEP_AT_MOST: Duration = Duration::from_secs(10);

/// A connection replaced lately.
#[derive(Debug)]
pub(in crate::session) struct Replaced {
    /// The old connection's link (the tag part of its frames).
    link: u32,
    /// Where its replacement is.
    part: u32,
    /// Its frames are handled while it is kept, and until then: [`REMEMBER_FOR`] after it was
    /// replaced, or after it closed.
    until: Instant,
    /// A connection that moved off a working node, and when it closes: [`OVERLAP`] after its
    /// replacement is confirmed, [`KEEP_AT_MOST`] after the move at the latest.
    kept: Option<(OwnedConn, Instant)>,
}

impl Session {
    /// Handles a frame of a subscription connection: one of the client's connections, or one
    /// replaced lately.
    pub(in crate::session) fn on_push(&mut self, reply: UpstreamReply) {
        let Some(subs) = self.subs.as_mut() else { return };
        let link = reply.tag.part;
        if let Some((&part, _)) = subs.conns.iter().find(|(_, c)| c.link == link) {
            self.on_subscription_frame(part, reply.result);
            // A confirmation, a refusal or a lost connection may have changed what the client is
            // subscribed to (a few loads and stores, also after a message).
            return self.publish_subscriptions();
        }
        let handled = |r: &&Replaced| r.link == link && (r.kept.is_some() || Instant::now() < r.until);
        let part = subs.replaced.iter().find(handled).map(|r| r.part);
        if let Some(part) = part {
            self.on_late_frame(part, link, reply.result);
        }
    }

    /// A frame of a replaced connection: its messages are passed on unless the replacement on
    /// `part` already did, or no longer carries their channel or pattern (the client unsubscribed
    /// since; a shard channel that moved to another connection since is dropped too, as that
    /// connection's memory cannot tell whether it delivered it); anything else (confirmations,
    /// `PING` answers, its end) answered commands that were sent again on the replacement, which
    /// answers them.
    fn on_late_frame(&mut self, part: u32, link: u32, result: Result<Bytes, UpstreamError>) {
        let Ok(frame) = result else { return };
        let kind = frame_kind(&frame).map(<[u8]>::to_ascii_lowercase);
        let Some(conn) = self.subs.as_mut().and_then(|s| s.conns.get_mut(&part)) else { return };
        let carried = match (kind.as_deref(), frames::subject(&frame)) {
            (Some(b"message" | b"smessage"), Some(channel)) => conn.channels.contains(channel),
            (Some(b"pmessage"), Some(pattern)) => conn.patterns.contains(pattern),
            _ => false,
        };
        if !carried || !conn.delivered.late_from(link, &frame, Instant::now()) {
            return;
        }
        let from_resp3 = conn.resp3;
        let frame = self.in_client_protocol(frame, from_resp3);
        self.write_direct(&frame, false);
    }

    /// Notes that the connection with `link` was replaced by the one on `part`; `kept`: the old
    /// connection itself, when it moved off a working node.
    pub(super) fn note_replaced(&mut self, link: u32, part: u32, kept: Option<OwnedConn>) {
        let now = Instant::now();
        // Noted before those done are forgotten: that ends the overlap of every connection left
        // without a replaced one, which this replacement is not.
        if let Some(subs) = self.subs.as_mut() {
            let kept = kept.map(|conn| (conn, now + KEEP_AT_MOST));
            subs.replaced.push(Replaced { link, part, until: now + REMEMBER_FOR, kept });
        }
        self.close_replaced(|at| at <= now);
    }

    /// The connection on `part` got the confirmations it waited for: the connections it replaced
    /// close [`OVERLAP`] later.
    pub(super) fn on_replacement_confirmed(&mut self, part: u32) {
        let Some(subs) = self.subs.as_mut() else { return };
        if subs.replaced.is_empty() || subs.conns.get(&part).is_none_or(|c| c.awaiting.any()) {
            return;
        }
        let now = Instant::now();
        let close_at = now + OVERLAP;
        let mut overlapping = false;
        for (_, at) in subs.replaced.iter_mut().filter(|r| r.part == part).filter_map(|r| r.kept.as_mut()) {
            *at = (*at).min(close_at);
            overlapping = true;
        }
        // Both deliver from now on, each far behind the other at times: the replacement remembers
        // what it delivers until the kept one's copies come.
        if let Some(conn) = subs.conns.get_mut(&part).filter(|_| overlapping) {
            conn.delivered.expect_overlap(now);
        }
    }

    /// When the next moved connection is to close, or the next replaced one's frames are no
    /// longer expected (see [`Session::pubsub_due_at`]).
    pub(super) fn next_close_at(&self) -> Option<Instant> {
        let replaced = self.subs.as_ref()?.replaced.iter();
        replaced.map(|r| r.kept.as_ref().map_or(r.until, |(_, at)| *at)).min()
    }

    /// The nodes where a moved connection still delivers: no mirror is opened there meanwhile,
    /// as it would deliver that node's keyspace notifications a second time.
    pub(super) fn kept_on(&self, addr: &str) -> bool {
        let replaced = self.subs.iter().flat_map(|s| s.replaced.iter());
        replaced.filter_map(|r| r.kept.as_ref()).any(|(kept, _)| kept.addr() == addr)
    }

    /// Closes the moved connections whose closing time is `due`, and forgets the replaced ones
    /// whose frames are no longer expected (and what the connections remember of their copies,
    /// which a quiet connection would keep); a closed connection's node gets a mirror.
    pub(super) fn close_replaced(&mut self, due: impl Fn(Instant) -> bool) {
        let Some(subs) = self.subs.as_mut() else { return };
        let now = Instant::now();
        let mut closed = false;
        for replaced in &mut subs.replaced {
            if replaced.kept.as_ref().is_some_and(|(_, at)| due(*at)) {
                replaced.kept = None;
                // What its task read before it saw it was closed is still on its way.
                replaced.until = replaced.until.max(now + REMEMBER_FOR);
                closed = true;
            }
        }
        let before = subs.replaced.len();
        subs.replaced.retain(|r| r.kept.is_some() || now < r.until);
        if subs.replaced.len() < before {
            let replaced = &subs.replaced;
            let done = subs.conns.iter_mut().filter(|(part, _)| !replaced.iter().any(|r| r.part == **part));
            done.for_each(|(_, c)| c.delivered.end_overlap(now));
        }
        if closed {
            self.fit_mirrors();
        }
    }
}
