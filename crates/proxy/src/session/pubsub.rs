//! Pub/Sub: a subscribed client gets upstream connections of its own in subscribed mode, one for
//! classic channels and patterns (any master: a cluster delivers PUBLISH everywhere) and one per
//! shard for sharded channels. Their frames are forwarded to the client as received, in order.
//! When such a connection dies, the proxy subscribes again elsewhere and swallows the repeated
//! confirmations, so the client sees no gap other than messages published meanwhile, and no
//! message twice ([`Delivered`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use bytes::Bytes;

use super::Session;
use super::awaited::{Answer, Awaited, Command};
use super::pipeline::Meta;
use super::recent::Delivered;
use crate::error::ProxyError;
use crate::redirect::{self, Redirect};
use crate::resp::reply::Protocol;
use crate::resp::{Request, reply};
use crate::slot::key_slot;
use crate::upstream::{ConnMode, OwnedConn, PUSH, Tag, UpstreamRequest};
use frames::{channel, confirmation, expected_frames, is_message, parse_confirmation, with_count};

/// The key of the classic (non-sharded) subscription connection in [`Subscriptions::conns`].
const CLASSIC: u32 = 0;

/// The next subscription connection's link (see [`SubConn::link`]): one counter for the whole
/// process, so that no two connections a client ever had share one, across `RESET` too.
static NEXT_LINK: AtomicU32 = AtomicU32::new(0);

/// A client's subscriptions and the connections that carry them.
#[derive(Debug, Default)]
pub(super) struct Subscriptions {
    /// By part: [`CLASSIC`] and one per shard connection or mirror. A replacement takes the part
    /// of the connection it replaces.
    conns: HashMap<u32, SubConn>,
    next_part: u32,
    /// Connections replaced lately, whose frames may still arrive.
    replaced: Vec<replaced::Replaced>,
    /// The topology generation the classic connection's home was last checked at.
    generation: u64,
    /// When to look at the home again though the map did not change (the classic connection is on
    /// a stand-in, see [`Session::rehome_if_moved`]).
    look_again_at: Option<Instant>,
    /// Frames for the client (with whether its reply is dropped) held while a mirror has not yet
    /// confirmed what the client's (P)(UN)SUBSCRIBE asked of it: one node's confirmation promises
    /// every notification published after it, so the client's waits for the mirrors' too, and
    /// what comes after it waits behind it.
    held_for_mirrors: Vec<(Bytes, bool)>,
}

#[derive(Debug)]
struct SubConn {
    conn: OwnedConn,
    /// The tag part its frames carry: its own, never its predecessor's, so that a frame the
    /// replaced connection sent late is not taken for the replacement's.
    link: u32,
    /// Channels and patterns subscribed on this connection, from the node's confirmations.
    channels: BTreeSet<Bytes>,
    patterns: BTreeSet<Bytes>,
    /// Confirmations (and PING answers) the client asked for and has not got yet, per command
    /// (see [`Awaited`]). The proxy reads nothing more from the client meanwhile, so every later
    /// reply keeps its place, and a subscription count of zero only means the client left
    /// subscribed mode once nothing is owed.
    awaiting: Awaited,
    /// The node's last reported subscription count.
    count: i64,
    sharded: bool,
    /// Replacements in a row that failed before the node sent anything (see
    /// [`Session::resubscribe`]).
    failures: u32,
    /// Resubscriptions the nodes refused for now in a row (`-CLUSTERDOWN` …), carried over to
    /// replacements until one is answered in full: bounds the retries and sets their backoff.
    refusals: u32,
    /// Opened in RESP3: its frames are pushes, which a client that switched to RESP2 since
    /// (`HELLO 2`) gets as arrays ([`frames::in_resp2`]).
    resp3: bool,
    /// A mirror: carries only keyspace-notification subscriptions (and patterns that may match
    /// them) to a master other than the home (notifications are published on each node for its
    /// own keys and never travel the cluster bus); its confirmations are swallowed, its
    /// notifications delivered, other messages dropped.
    mirror: bool,
    /// Messages this connection and the ones it replaced lately delivered, so that no copy of one
    /// is delivered again.
    delivered: Delivered,
}

/// What every keyspace-notification channel starts with (`__keyspace@…`, `__keyevent@…`,
/// `__keymiss@…`): each node publishes them for its own keys only.
const NOTIFICATIONS: &[u8] = b"__key";

/// Messages held behind replies in flight at most; past it messages are written at once rather
/// than held without bound behind slow replies.
const MAX_HELD_MESSAGES: usize = 4096;

/// Whether a channel names keyspace notifications, or a pattern may match one (`__key*`, and
/// also `*` or `*:foo`, which match every channel or such ones among others).
fn is_notification(name: &[u8], pattern: bool) -> bool {
    match pattern {
        true => crate::auth::glob::may_match_prefixed(name, NOTIFICATIONS),
        false => name.starts_with(NOTIFICATIONS),
    }
}

mod frames;
pub(super) use frames::{arguments, frame_kind};
mod home;
mod replaced;
mod resubscribe;
mod subscribed_mode;
pub(super) use subscribed_mode::allowed_while_subscribed;

impl Session {
    /// Whether the proxy waits for subscription confirmations before reading more requests.
    pub(super) fn awaiting_confirmations(&self) -> bool {
        self.subs.as_ref().is_some_and(|s| s.conns.values().any(|c| c.awaiting.any()))
    }

    /// Whether the client is in subscribed mode (RESP2 rules apply to its requests).
    pub(super) fn subscribed(&self) -> bool {
        self.subs.is_some()
    }

    /// A (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET while subscribed, or the first
    /// subscription (with the pipeline already empty).
    pub(super) fn on_pubsub(&mut self, request: &Request, meta: Meta) {
        let name = request.arg(0).to_ascii_lowercase();
        if !self.awaiting_confirmations() {
            // Clients ping subscribed connections to keep them alive: a chance to follow the home.
            self.rehome_if_moved();
        }
        self.entry.set_subscribed(true);
        let subs = self.subs.get_or_insert_with(Box::default);
        match name.as_slice() {
            b"subscribe" | b"psubscribe" | b"unsubscribe" | b"punsubscribe" | b"ping" => {
                if name == b"ping"
                    && let Some(part) = subs.answers_ping()
                {
                    return self.sub_send(part, request.bytes().clone(), meta.dropped);
                }
                if name.starts_with(b"un") && request.argc() == 1 && !subs.conns.contains_key(&CLASSIC) {
                    // Nothing to unsubscribe from: Redis still confirms, with a null channel.
                    let confirmation = confirmation(&name, None, 0, self.state.protocol);
                    self.direct.extend_from_slice(&confirmation);
                    return self.leave_subscribed_if_done();
                }
                if !self.ensure_classic() {
                    return self.sub_error(ProxyError::NoTopology, meta);
                }
                self.sub_send(CLASSIC, request.bytes().clone(), meta.dropped);
                if name != b"ping" {
                    self.mirror_notifications(&name, request);
                }
            }
            b"ssubscribe" | b"sunsubscribe" => {
                if request.argc() == 1 {
                    let parts: Vec<u32> = subs.conns.iter().filter(|(_, c)| c.sharded).map(|(p, _)| *p).collect();
                    if parts.is_empty() {
                        let confirmation = confirmation(b"sunsubscribe", None, 0, self.state.protocol);
                        self.direct.extend_from_slice(&confirmation);
                        return self.leave_subscribed_if_done();
                    }
                    for part in parts {
                        self.sub_send(part, request.bytes().clone(), meta.dropped);
                    }
                    return;
                }
                // Every channel of one SSUBSCRIBE must hash to one slot, as on Redis.
                let slot = key_slot(request.arg(1));
                if (2..request.argc()).any(|i| key_slot(request.arg(i)) != slot) {
                    return self.sub_error(ProxyError::CrossSlot, meta);
                }
                // A channel is unsubscribed where it is subscribed, which a followed `-MOVED` may
                // have made another node than the map names yet.
                let holder = (name == b"sunsubscribe")
                    .then(|| subs.conns.iter().find(|(_, c)| c.sharded && c.channels.contains(request.arg(1))))
                    .flatten()
                    .map(|(part, _)| *part);
                let part = match holder {
                    Some(part) => part,
                    None => match self.shared.topology.routing().master(slot).map(|p| p.addr().to_string()) {
                        Some(addr) => self.ensure_shard_conn(&addr),
                        None => return self.sub_error(ProxyError::SlotNotServed, meta),
                    },
                };
                self.sub_send(part, request.bytes().clone(), meta.dropped);
            }
            b"quit" => {
                self.pipeline.push_ready(reply::ok(), meta);
                self.pipeline.push_close();
                self.state.closing = true;
            }
            b"reset" => self.answer_locally(request, meta),
            _ => self.refuse_while_subscribed(request, meta),
        }
    }

    /// A subscription command refused by the proxy; a client whose first subscription is refused
    /// is not in subscribed mode, as on Redis.
    fn sub_error(&mut self, error: ProxyError, meta: Meta) {
        self.write_direct(&error.to_resp(), meta.dropped);
        self.leave_subscribed_if_done();
    }

    /// Writes a frame outside the pipeline, unless it is `dropped`. Under CLIENT REPLY OFF or
    /// SKIP Redis drops a subscription command's plain replies (a PING's answer, an error) but
    /// still sends its confirmations and every message, which it writes as pushes
    /// (`CLIENT_PUSHING` in Redis 7.0.15's pubsub.c).
    fn write_direct(&mut self, frame: &[u8], dropped: bool) {
        if !dropped {
            self.direct.extend_from_slice(frame);
        }
    }

    /// A frame of a connection opened in RESP3 (`from_resp3`) or not, as the client reads it now:
    /// one that switched to RESP2 since (`HELLO 2`) gets pushes as arrays ([`frames::in_resp2`]).
    fn in_client_protocol(&self, frame: Bytes, from_resp3: bool) -> Bytes {
        match from_resp3 && self.state.protocol == Protocol::Resp2 {
            true => frames::in_resp2(&frame).unwrap_or(frame),
            false => frame,
        }
    }

    /// Sends the client's subscription command on connection `part`; `dropped`: its plain
    /// answers are not for the client (its reply was skipped or turned off).
    fn sub_send(&mut self, part: u32, payload: Bytes, dropped: bool) {
        self.sub_send_as(part, Command::client(payload, dropped));
    }

    /// Sends a subscription command on connection `part` (see [`Awaited::expect`]).
    fn sub_send_as(&mut self, part: u32, command: Command) {
        let reply_to = self.exec.reply_sender();
        let Some(conn) = self.subs.as_mut().and_then(|s| s.conns.get_mut(&part)) else {
            return;
        };
        let frames = expected_frames(&command.payload, conn.channels.len(), conn.patterns.len());
        let payload = command.payload.clone();
        conn.awaiting.expect(frames, command);
        // Replies come back as pushes with the connection's tag; this channel is never read.
        conn.conn.send(UpstreamRequest {
            payload,
            prefix: None,
            tag: PUSH,
            reply_to,
            bounded: true,
            streamable: false,
            lease: None,
        });
    }

    /// A subscription connection to `addr`, in the client's protocol.
    fn open(&mut self, addr: &str, sharded: bool) -> SubConn {
        let resp3 = self.state.protocol == Protocol::Resp3;
        self.open_as(addr, sharded, resp3, std::time::Duration::ZERO)
    }

    /// A subscription connection to `addr` in the given protocol, connecting after `delay`.
    fn open_as(&mut self, addr: &str, sharded: bool, resp3: bool, delay: std::time::Duration) -> SubConn {
        // Below the parts of PUSH and LOGIN, the tags nobody's frames carry.
        let link = NEXT_LINK.fetch_add(1, Ordering::Relaxed) % crate::upstream::LOGIN.part;
        let tag = Tag { seq: PUSH.seq, part: link };
        // Channel permissions are the proxy's to check (nothing on a subscribed connection runs
        // a script), so it stays the upstream user.
        let owned = ConnMode::owned(resp3, None);
        let mode = ConnMode { pushes: Some((self.exec.reply_sender(), tag)), connect_after: delay, ..owned };
        SubConn::new(self.shared.topology.upstreams().owned(addr, mode), link, sharded, resp3)
    }

    /// The classic subscription connection, opened to a master when there is none.
    fn ensure_classic(&mut self) -> bool {
        if self.subs.as_ref().is_some_and(|s| s.conns.contains_key(&CLASSIC)) {
            return true;
        }
        let Some(addr) = self.pubsub_home(None) else {
            return false;
        };
        let generation = self.shared.topology.routing().generation;
        let conn = self.open(&addr, false);
        if let Some(subs) = self.subs.as_mut() {
            subs.generation = generation;
            subs.conns.insert(CLASSIC, conn);
        }
        // A mirror left on its node from an earlier classic connection would deliver twice.
        self.fit_mirrors();
        true
    }

    fn ensure_shard_conn(&mut self, addr: &str) -> u32 {
        match self.part_to(addr, |c| c.sharded) {
            Some(part) => part,
            None => self.add_conn(addr, true, false),
        }
    }

    /// The part of the client's connection to `addr` that `fits` (a shard connection, a mirror).
    fn part_to(&self, addr: &str, fits: impl Fn(&SubConn) -> bool) -> Option<u32> {
        let conns = &self.subs.as_ref()?.conns;
        conns.iter().find(|(_, c)| fits(c) && c.conn.addr() == addr).map(|(part, _)| *part)
    }

    /// Opens a subscription connection to `addr` as a new part: a shard connection, or a mirror.
    fn add_conn(&mut self, addr: &str, sharded: bool, mirror: bool) -> u32 {
        let part = self.subs.as_mut().map_or(1, |s| {
            s.next_part += 1;
            s.next_part
        });
        let mut conn = self.open(addr, sharded);
        conn.mirror = mirror;
        if let Some(subs) = self.subs.as_mut() {
            subs.conns.insert(part, conn);
        }
        part
    }

    /// A frame (or the end) of subscription connection `part`.
    pub(super) fn on_subscription_frame(&mut self, part: u32, result: Result<Bytes, crate::upstream::UpstreamError>) {
        let Some(conn) = self.subs.as_mut().and_then(|s| s.conns.get_mut(&part)) else {
            return;
        };
        let frame = match result {
            Ok(frame) => {
                // The node works (an error is no sign of it: a refusal retried must back off).
                if !frame.starts_with(b"-") {
                    conn.failures = 0;
                }
                frame
            }
            Err(error) => {
                crate::log_limited!(5, warn, client = self.state.id, %error, "subscription connection lost; subscribing again");
                return self.resubscribe(part);
            }
        };
        let from_resp3 = conn.resp3;
        let kind = frame_kind(&frame).map(<[u8]>::to_ascii_lowercase);
        let message = is_message(kind.as_deref());
        if message && not_for_the_client(conn, &frame, self.state.id) {
            return;
        }
        // An error answers a whole command.
        if frame.starts_with(b"-") {
            let Some(pending) = conn.awaiting.refused() else {
                // A redirection answers a command: with none owed, it is one the node already
                // answered with a confirmation of its own (see `on_refused`), nobody's.
                if !matches!(redirect::classify(&frame), Redirect::Moved { .. } | Redirect::Ask { .. }) {
                    self.write_direct(&frame, false);
                }
                return;
            };
            return self.on_refused(part, pending, &frame);
        }
        let confirmation = matches!(
            kind.as_deref(),
            Some(b"subscribe" | b"psubscribe" | b"ssubscribe" | b"unsubscribe" | b"punsubscribe" | b"sunsubscribe")
        );
        // A PING's answer is a `pong` frame, or (on a RESP3 connection) a plain reply that is no
        // push. A plain answer (an error, a PING's) is dropped when its command's reply was;
        // pushes never are (see `write_direct`).
        let (answer, frame) = if confirmation {
            let answered = self.on_confirmation(part, frame);
            self.on_replacement_confirmed(part);
            match answered {
                Some(answered) => answered,
                None => return,
            }
        } else if matches!(kind.as_deref(), Some(b"pong")) || (!frame.starts_with(b">") && kind.is_none()) {
            (conn.awaiting.answered_one(None), frame)
        } else {
            (Answer::default(), frame)
        };
        if answer.swallowed {
            // A mirror's confirmation may be what the client's waited for; the last of the proxy's
            // own confirmations may be what kept the client subscribed.
            self.release_held_for_mirrors();
            if confirmation {
                self.leave_subscribed_if_done();
            }
            return;
        }
        let frame = self.in_client_protocol(frame, from_resp3);
        self.deliver(frame, answer.dropped, message);
        if confirmation {
            self.leave_subscribed_if_done();
        } else if message && !self.awaiting_confirmations() {
            self.rehome_if_moved();
        }
    }

    /// A (un)subscribe confirmation on connection `part`: the subscriptions it reports are
    /// recorded, and it answers the command it confirms. Returns who it is for and the frame as
    /// the client gets it — a shard channel's with the client's count over all its shard
    /// connections, as one node counts them — or `None` when it is the proxy's to handle: a node
    /// that lost a shard channel's slot unsubscribed it on its own, and the channel follows its
    /// slot ([`Session::follow_slot`]).
    fn on_confirmation(&mut self, part: u32, frame: Bytes) -> Option<(Answer, Bytes)> {
        let subs = self.subs.as_mut()?;
        let conn = subs.conns.get_mut(&part)?;
        let Some((kind, name, count)) = parse_confirmation(&frame) else {
            return Some((Answer::default(), frame));
        };
        let asked = conn.awaiting.expects(&kind, name.as_deref());
        conn.count = count;
        // Every confirmation asked for was awaited, by the client or by the proxy itself; one
        // for the client is a push, which CLIENT REPLY OFF/SKIP never drops (see `write_direct`).
        let answer = match asked {
            true => Answer { dropped: false, ..conn.awaiting.answered_one(Some(count)) },
            false => Answer::default(),
        };
        if !conn.awaiting.any() {
            // Everything sent on it is answered: nothing refused is left to retry.
            conn.refusals = 0;
        }
        let changed = name.clone().is_some_and(|name| match kind.as_slice() {
            b"subscribe" | b"ssubscribe" => conn.channels.insert(name),
            b"psubscribe" => conn.patterns.insert(name),
            b"unsubscribe" | b"sunsubscribe" => conn.channels.remove(&name),
            _ => conn.patterns.remove(&name),
        });
        let sharded = conn.sharded && !conn.mirror;
        if sharded && !asked && kind == b"sunsubscribe" {
            // The node dropped a channel on its own; one the connection no longer carries (the
            // client's own SUNSUBSCRIBE of it crossed the node's) is nobody's any more.
            match name {
                Some(channel) if changed => {
                    if self.follow_slot(part, channel) {
                        return None;
                    }
                }
                _ => return None,
            }
        }
        if !sharded || !matches!(kind.as_slice(), b"ssubscribe" | b"sunsubscribe") {
            return Some((answer, frame));
        }
        let total = self.shard_subscriptions();
        // A shard connection left with nothing (the channels it had moved, or were unsubscribed
        // where a `-MOVED` pointed) is not kept open for nothing.
        self.close_if_carrying_nothing(part);
        Some((answer, with_count(&frame, total).unwrap_or(frame)))
    }

    /// How many shard channels the client is subscribed to, over all its connections: the count
    /// one node reports in SSUBSCRIBE and SUNSUBSCRIBE confirmations.
    fn shard_subscriptions(&self) -> i64 {
        let conns = self.subs.as_ref().map(|s| s.conns.values());
        let count: usize =
            conns.into_iter().flatten().filter(|c| c.sharded && !c.mirror).map(|c| c.channels.len()).sum();
        i64::try_from(count).unwrap_or(i64::MAX)
    }

    /// Drops every subscription at once (RESET): their connections close, the client is back in
    /// normal mode.
    pub(super) fn leave_subscriptions(&mut self) {
        self.subs = None;
        self.entry.set_subscribed(false);
        self.publish_subscriptions();
    }

    /// What CLIENT LIST counts of the client's subscriptions (`sub`, `psub`, `ssub`): the channels
    /// and patterns its connections carry (confirmed by the nodes, or subscribed again by the
    /// proxy and on their way), a mirror's keyspace-notification copies not counted twice.
    pub(super) fn publish_subscriptions(&self) {
        let conns = self.subs.as_ref().map(|s| s.conns.values().filter(|c| !c.mirror));
        let (mut sub, mut psub, mut ssub) = (0, 0, 0);
        for conn in conns.into_iter().flatten() {
            match conn.sharded {
                true => ssub += conn.channels.len(),
                false => sub += conn.channels.len(),
            }
            psub += conn.patterns.len();
        }
        self.entry.publish_subscriptions(sub, psub, ssub);
    }

    /// Writes a subscription frame for the client, unless a mirror has yet to confirm what the
    /// client asked (see [`Subscriptions::held_for_mirrors`]); a `message` may wait for the
    /// replies in flight (see [`Session::messages_follow_replies`]).
    fn deliver(&mut self, frame: Bytes, dropped: bool, message: bool) {
        if let Some(subs) = self.subs.as_mut().filter(|s| s.mirrors_awaiting() || !s.held_for_mirrors.is_empty()) {
            subs.held_for_mirrors.push((frame, dropped));
            return self.release_held_for_mirrors();
        }
        match message && self.messages_follow_replies() {
            true => self.pipeline.push_trailer(frame),
            false => self.write_direct(&frame, dropped),
        }
    }

    /// Whether a message goes behind the replies of the client's requests in flight: from Redis
    /// 7.2 on, a message a client's own command publishes to it comes after that command's reply
    /// (`pending_push_messages`; a PUBLISH inside MULTI or a script), and the proxy cannot tell
    /// which messages those are — any other was published while the requests were in flight, so
    /// after them is an order one node could have given. Not while a blocking command waits (a
    /// node delivers to a blocked client at once), only for RESP3 (a RESP2 subscriber's requests
    /// are few and answered in order with its messages), and never past [`MAX_HELD_MESSAGES`].
    /// Nor for a client that tracks keys: when its invalidations pile up behind slow replies
    /// they are replaced by one flush (`session/tracking.rs`), which must not take messages along.
    fn messages_follow_replies(&self) -> bool {
        self.state.protocol == Protocol::Resp3
            && !self.blocked
            && self.tracking.is_none()
            && !self.pipeline.is_empty()
            && self.pipeline.trailer_count() < MAX_HELD_MESSAGES
            && crate::version_at_least(&self.shared.topology.reported_version(), 7, 2)
    }

    /// Writes the frames held for the mirrors' confirmations once none is awaited (or the mirror
    /// that owed one is gone).
    pub(super) fn release_held_for_mirrors(&mut self) {
        let Some(subs) = self.subs.as_mut().filter(|subs| !subs.mirrors_awaiting()) else { return };
        for (frame, dropped) in std::mem::take(&mut subs.held_for_mirrors) {
            self.write_direct(&frame, dropped);
        }
    }

    /// Back to normal mode once nothing is subscribed any more.
    fn leave_subscribed_if_done(&mut self) {
        let done = self.subs.as_ref().is_some_and(|s| s.conns.values().all(|c| c.count == 0 && !c.awaiting.any()));
        if done {
            self.leave_subscriptions();
        }
    }
}

/// Whether a message subscription connection `conn` brought is not the client's to get: a mirror's
/// pattern that matches other channels too (`*`) gets every PUBLISH as well, which the cluster bus
/// brings to every node (the home delivers those); and a copy of a message a replaced connection
/// had delivered.
fn not_for_the_client(conn: &mut SubConn, frame: &[u8], client: u64) -> bool {
    if conn.mirror && !channel(frame).is_some_and(|c| c.starts_with(NOTIFICATIONS)) {
        return true;
    }
    if conn.delivered.already_delivered(frame, Instant::now()) {
        crate::log_limited!(
            5,
            info,
            client,
            "dropped a copy of a message a replaced subscription connection had delivered"
        );
        return true;
    }
    false
}

impl Subscriptions {
    fn mirrors_awaiting(&self) -> bool {
        self.conns.values().any(|c| c.mirror && c.awaiting.any())
    }

    /// The connection a RESP2 subscriber's PING goes to: one the node holds a subscription of the
    /// client's on (Redis' `CLIENT_PUBSUB`), so that it answers in subscribed mode's form — the
    /// classic one unless only shard channels are left (an UNSUBSCRIBE may have opened it for
    /// nothing). `None`: none holds any yet.
    fn answers_ping(&self) -> Option<u32> {
        let holds = |c: &SubConn| !c.mirror && (!c.channels.is_empty() || !c.patterns.is_empty());
        match self.conns.get(&CLASSIC) {
            Some(classic) if holds(classic) => Some(CLASSIC),
            _ => self.conns.iter().find(|(_, c)| holds(c)).map(|(part, _)| *part),
        }
    }
}

impl SubConn {
    fn new(conn: OwnedConn, link: u32, sharded: bool, resp3: bool) -> SubConn {
        SubConn {
            conn,
            link,
            resp3,
            failures: 0,
            refusals: 0,
            channels: BTreeSet::new(),
            patterns: BTreeSet::new(),
            awaiting: Awaited::default(),
            count: 0,
            sharded,
            mirror: false,
            delivered: Delivered::default(),
        }
    }

    /// A sharded connection with no subscription, confirmed or awaited: nothing to keep it for.
    fn carries_nothing(&self) -> bool {
        let empty = self.channels.is_empty() && self.patterns.is_empty() && self.count == 0;
        self.sharded && !self.mirror && empty && !self.awaiting.any()
    }
}
