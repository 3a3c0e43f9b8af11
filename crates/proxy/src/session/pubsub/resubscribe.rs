//! When a subscription connection is refused or lost: an SSUBSCRIBE or SUNSUBSCRIBE refused
//! with `-MOVED` (a stale slot map) follows the redirection; a shard channel its node dropped
//! (the node lost the slot) follows its slot; a dead connection is replaced, subscribed again to
//! what it carried (the proxy's own commands, whose confirmations the client never sees), and
//! what the client still waited for on it is sent again there.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::frames::{confirmation, frame_kind};
use super::{CLASSIC, SubConn};
use crate::error::ProxyError;
use crate::redirect::{self, MAX_HOPS, Redirect};
use crate::resp::request::encode_command;
use crate::session::Session;
use crate::session::awaited::{Command, Pending};
use crate::slot::key_slot;
use crate::topology::Trigger;

/// The first backoff of a replacement whose predecessor failed before the node said anything,
/// doubled for each further such failure up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(25);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// Replacements in a row that may fail before the client's waiting subscription commands are
/// refused for want of a node (about 20 s with the backoff).
const GIVE_UP_AFTER: u32 = 25;

impl Session {
    /// The node behind connection `part` refused `pending` with one error, `frame`. A sharded
    /// command refused with `-MOVED` goes where it points; a resubscription refused otherwise
    /// (`-CLUSTERDOWN`, `-TRYAGAIN` during a failover) is tried again on a new connection, backing
    /// off, for about 20 s; another refusal of the client's command reaches the client.
    pub(super) fn on_refused(&mut self, part: u32, pending: Pending, frame: &[u8]) {
        let kind = frame_kind(&pending.command.payload).map(<[u8]>::to_ascii_lowercase);
        if let Redirect::Moved { slot, addr } = redirect::classify(frame) {
            // Only a sharded command with channels is redirected, and for its own slot: a
            // `-MOVED` for anything else answers a command the node already answered with a
            // confirmation of its own (it lost the slot meanwhile), not this one.
            let sharded = matches!(kind.as_deref(), Some(b"ssubscribe" | b"sunsubscribe"));
            if !sharded || pending.channels().first().is_none_or(|channel| key_slot(channel) != slot) {
                if let Some(conn) = self.subs.as_mut().and_then(|s| s.conns.get_mut(&part)) {
                    conn.awaiting.put_back(pending);
                }
                return;
            }
            if pending.command.hops < MAX_HOPS {
                return self.follow_moved(part, addr.to_string(), pending);
            }
        }
        let subscribes = matches!(kind.as_deref(), Some(b"subscribe" | b"psubscribe" | b"ssubscribe"));
        // A channel following its slot is refused by the slot's node, not by a failing connection.
        if pending.is_own() && subscribes && is_transient(frame) && !pending.command.follows_slot {
            let conn = self.subs.as_mut().and_then(|s| s.conns.get_mut(&part));
            if let Some(conn) = conn.filter(|c| c.refusals < GIVE_UP_AFTER) {
                conn.refusals += 1;
                return self.replace(part, Some(pending), false);
            }
        }
        if pending.is_own() && subscribes {
            self.forget(part, &pending);
            let mirror = self.subs.as_ref().and_then(|s| s.conns.get(&part)).is_some_and(|c| c.mirror);
            if !mirror && !pending.command.follows_slot {
                self.lose_subscriptions("a node refused the resubscription");
            }
        }
        self.close_if_carrying_nothing(part);
        if pending.command.follows_slot {
            self.tell_unsubscribed(pending.channels());
        } else if pending.is_own() {
            let error = String::from_utf8_lossy(frame).trim_end().to_string();
            crate::log_limited!(5, warn, client = self.state.id, %error, "a node refused a resubscription");
        } else {
            self.write_direct(frame, pending.command.dropped);
        }
        // A refused first subscription leaves the client in normal mode, as on Redis.
        self.leave_subscribed_if_done();
    }

    /// The proxy's own subscription `refused` is given up: what it subscribes to is not carried by
    /// connection `part` (a replacement took it over from its predecessor), so counts stay exact.
    fn forget(&mut self, part: u32, refused: &Pending) {
        let Some(conn) = self.subs.as_mut().and_then(|s| s.conns.get_mut(&part)) else {
            return;
        };
        let names = if refused.command.is(b"psubscribe") { &mut conn.patterns } else { &mut conn.channels };
        for name in refused.channels() {
            names.remove(name);
        }
    }

    /// Shard `channels` the proxy could not subscribe again after their node dropped them: the
    /// client gets the `sunsubscribe` confirmations that node would have sent it, counted as one
    /// node counts.
    fn tell_unsubscribed(&mut self, channels: &[Bytes]) {
        let count = self.shard_subscriptions();
        for channel in channels {
            let frame = confirmation(b"sunsubscribe", Some(channel), count, self.state.protocol);
            self.write_direct(&frame, false);
        }
    }

    /// The node behind connection `from` refused `pending`, an SSUBSCRIBE (or an SUNSUBSCRIBE),
    /// with `-MOVED`: the proxy's slot map was stale. The command goes where the node points, as a
    /// pooled request follows a `-MOVED` (up to the same number of hops), and the map is
    /// refreshed; whoever the command's answers were for gets them from there. A connection left
    /// carrying nothing is closed.
    fn follow_moved(&mut self, from: u32, addr: String, pending: Pending) {
        self.shared.metrics.redirections_moved.inc();
        if self.shared.refresh_on_moved {
            self.shared.topology.request_refresh(Trigger::Moved);
        }
        let own = pending.is_own() && pending.command.is(b"ssubscribe");
        let Some(conn) = self.subs.as_mut().and_then(|s| s.conns.get_mut(&from)) else {
            return;
        };
        // Its channels live elsewhere now (a resubscription's were counted on `from` already).
        for channel in pending.channels() {
            conn.channels.remove(channel);
        }
        // The proxy's own resubscription is moot once the client unsubscribes from everything
        // behind it: subscribed elsewhere, it would outlive that.
        if !(own && self.unsubscribing_from_every_shard_channel()) {
            let part = self.ensure_shard_conn(&addr);
            // The proxy's own subscriptions count where they go from now (the client's count
            // once confirmed).
            if let Some(conn) = self.subs.as_mut().and_then(|s| s.conns.get_mut(&part)).filter(|_| own) {
                conn.channels.extend(pending.channels().iter().cloned());
            }
            let command = pending.again();
            self.sub_send_as(part, Command { hops: command.hops + 1, ..command });
        }
        self.close_if_carrying_nothing(from);
    }

    /// Whether the client's SUNSUBSCRIBE from every shard channel is still being answered, on any
    /// connection: a shard channel the proxy would subscribe again now would outlive it.
    fn unsubscribing_from_every_shard_channel(&self) -> bool {
        self.subs.as_ref().is_some_and(|s| s.conns.values().any(|c| c.awaiting.unsubscribes_all()))
    }

    /// The node behind sharded connection `part` unsubscribed the client from `channel` on its
    /// own: it lost the channel's slot (a migration ended, a failover took it). A client of one
    /// node never sees that, so the channel follows its slot: it is subscribed again, as the
    /// proxy's own command, on the slot's master, and the map refreshed (a stale map sends it back
    /// to the same node, whose `-MOVED` is followed); counted meanwhile where it goes. False when
    /// the map names no master for the slot: the client is told, as a node tells it.
    pub(super) fn follow_slot(&mut self, part: u32, channel: Bytes) -> bool {
        if self.shared.refresh_on_moved {
            self.shared.topology.request_refresh(Trigger::Moved);
        }
        if self.unsubscribing_from_every_shard_channel() {
            return true;
        }
        let master = self.shared.topology.routing().master(key_slot(&channel)).map(|m| m.addr().to_string());
        let Some(addr) = master else {
            return false;
        };
        crate::log_limited!(5, info, client = self.state.id, to = %addr, "a shard channel follows its slot");
        let to = self.ensure_shard_conn(&addr);
        let payload = encode_command(&[&b"SSUBSCRIBE"[..], &channel]);
        if let Some(conn) = self.subs.as_mut().and_then(|s| s.conns.get_mut(&to)) {
            conn.channels.insert(channel);
        }
        self.sub_send_as(to, Command { follows_slot: true, ..Command::own(payload) });
        self.close_if_carrying_nothing(part);
        true
    }

    /// Closes sharded connection `part` if it carries nothing any more.
    pub(super) fn close_if_carrying_nothing(&mut self, part: u32) {
        if let Some(subs) = self.subs.as_mut()
            && subs.conns.get(&part).is_some_and(SubConn::carries_nothing)
        {
            subs.conns.remove(&part);
        }
    }

    /// Subscribes again, on a live master, to what connection `part` carried, and sends there
    /// again what the client still waited for on it (skipping the answers it already had).
    pub(super) fn resubscribe(&mut self, part: u32) {
        self.replace(part, None, false);
    }

    /// Moves the classic subscriptions to the pub/sub home, the connection they are on staying
    /// subscribed until the new one is confirmed (see `replaced.rs`).
    pub(super) fn move_classic(&mut self) {
        self.replace(CLASSIC, None, true);
    }

    /// [`Session::resubscribe`], with `refused` (a resubscription the node refused for now) sent
    /// again first; `moved`: the old connection works and is kept until the new one is confirmed.
    fn replace(&mut self, part: u32, refused: Option<Pending>, moved: bool) {
        let Some(mut old) = self.subs.as_mut().and_then(|s| s.conns.remove(&part)) else {
            return;
        };
        // Every command still owed something goes again, the proxy's own included (a mirror's
        // UNSUBSCRIBE, an SSUBSCRIBE that followed a `-MOVED` here).
        let waited: Vec<Pending> = refused.into_iter().chain(old.awaiting.take_all()).collect();
        // While the map names no node for it, the old one is tried again (the map may not know
        // yet of a failover), for a while.
        let home = self.replacement_home(&old, &waited);
        // A mirror whose master is gone (failed over) is dropped: its master's successor gets
        // one when the map names it (`fit_mirrors`).
        let retry_old = !old.mirror && old.failures < GIVE_UP_AFTER;
        let home = home.or_else(|| retry_old.then(|| old.conn.addr().to_string()));
        let Some(addr) = home else {
            let carried = !old.channels.is_empty() || !old.patterns.is_empty();
            if carried && !old.mirror {
                self.lose_subscriptions("no node to subscribe again on");
            }
            return self.refuse_waited(waited);
        };
        // The replacement speaks the protocol the old one did, so that the messages it repeats
        // are recognised (`Delivered` compares frames); one replacing a connection that
        // failed before the node said anything backs off.
        let delay = match old.failures.max(old.refusals) {
            0 => Duration::ZERO,
            n => (RETRY_FIRST * 2u32.saturating_pow(n - 1)).min(RETRY_MAX),
        };
        let mut replacement = self.open_as(&addr, old.sharded, old.resp3, delay);
        replacement.failures = old.failures + 1;
        replacement.refusals = old.refusals;
        replacement.mirror = old.mirror;
        // Its own count comes with its confirmations; meanwhile what it owes keeps the client
        // subscribed.
        // What the client is subscribed to, whether or not the node confirmed it yet: a
        // replacement that fails before its confirmations come must not forget them.
        replacement.channels = old.channels.clone();
        replacement.patterns = old.patterns.clone();
        replacement.delivered = old.delivered.hand_over(old.link, Instant::now());
        if let Some(subs) = self.subs.as_mut() {
            subs.conns.insert(part, replacement);
        }
        let payloads = resubscriptions(&old, |_, _| true);
        self.note_replaced(old.link, part, moved.then_some(old.conn));
        for payload in payloads {
            self.sub_send_as(part, Command::own(payload));
        }
        for pending in waited {
            self.sub_send_as(part, pending.again());
        }
        if part == CLASSIC {
            self.fit_mirrors();
            self.look_at_home_soon();
        }
    }

    /// Where a replacement for `old` goes: a mirror back to its master while it is one, sharded
    /// subscriptions to the master of their (first) channel's slot, classic ones to the pub/sub
    /// home. `None`: nowhere now.
    fn replacement_home(&self, old: &SubConn, waited: &[Pending]) -> Option<String> {
        let routing = self.shared.topology.routing();
        if old.mirror {
            let same = old.conn.addr().to_string();
            return routing.masters().iter().any(|m| m.addr() == same).then_some(same);
        }
        if old.sharded {
            let waited_channel = waited.iter().find_map(|p| p.channels().first().cloned());
            let channel = old.channels.iter().next().cloned().or(waited_channel)?;
            return routing.master(key_slot(&channel)).map(|p| p.addr().to_string());
        }
        drop(routing);
        let failed = old.conn.addr().to_string();
        self.pubsub_home(Some(&failed))
    }

    /// The client's subscriptions cannot be restored after their connection died (no node takes
    /// them, or a node refuses them for good, e.g. `-NOPERM` once the nodes' user lost the
    /// channels): the client connection is closed once what is buffered for it is written, as a
    /// dying node closes it, rather than left subscribed to nothing. Client libraries reconnect and
    /// subscribe again; Redis itself disconnects a subscriber whose channel permissions are revoked.
    fn lose_subscriptions(&mut self, why: &str) {
        if self.state.closing {
            return;
        }
        crate::log_limited!(5, warn, client = self.state.id, why, "subscriptions lost: closing the client connection");
        self.pipeline.push_close();
        self.state.closing = true;
    }

    /// No node to send the client's waiting subscription commands to: each is refused, and the
    /// client leaves subscribed mode if nothing else keeps it there.
    fn refuse_waited(&mut self, waited: Vec<Pending>) {
        let error = ProxyError::NoTopology.to_resp();
        for pending in waited.into_iter().filter(|p| !p.is_own()) {
            self.write_direct(&error, pending.command.dropped);
        }
        self.leave_subscribed_if_done();
    }
}

/// Whether a node's refusal is one a later try may not get: the cluster is failing over or the
/// slot migrating (`-CLUSTERDOWN`, `-TRYAGAIN`), the node starting or its master gone
/// (`-LOADING`, `-MASTERDOWN`). Anything else (`-NOPERM` …) is final.
fn is_transient(frame: &[u8]) -> bool {
    [&b"-CLUSTERDOWN"[..], b"-TRYAGAIN", b"-LOADING", b"-MASTERDOWN"].iter().any(|code| frame.starts_with(code))
}

/// The proxy's own commands that subscribe a connection to what `old` carried and `keep` keeps:
/// (`keep(name, is_pattern)`): classic channels in one SUBSCRIBE, sharded ones in one SSUBSCRIBE per slot (Redis refuses one
/// across slots), patterns in one PSUBSCRIBE. A replacement takes everything; a mirror the
/// keyspace notifications of the classic connection.
pub(super) fn resubscriptions(old: &SubConn, keep: impl Fn(&[u8], bool) -> bool) -> Vec<Bytes> {
    let mut payloads = Vec::new();
    let channels = old.channels.iter().map(Bytes::as_ref).filter(|c| keep(c, false));
    if old.sharded {
        let mut by_slot: BTreeMap<u16, Vec<&[u8]>> = BTreeMap::new();
        for channel in channels {
            by_slot.entry(key_slot(channel)).or_insert_with(|| vec![&b"SSUBSCRIBE"[..]]).push(channel);
        }
        payloads.extend(by_slot.values().map(|args| encode_command(args)));
    } else {
        payloads.extend(subscription(b"SUBSCRIBE", channels));
    }
    payloads.extend(subscription(b"PSUBSCRIBE", old.patterns.iter().map(Bytes::as_ref).filter(|p| keep(p, true))));
    payloads
}

/// `command` with `names`, unless there is none.
fn subscription<'a>(command: &'a [u8], names: impl Iterator<Item = &'a [u8]>) -> Option<Bytes> {
    let mut args = vec![command];
    args.extend(names);
    (args.len() > 1).then(|| encode_command(&args))
}

#[cfg(test)]
mod tests {
    use super::is_transient;

    #[test]
    fn only_a_failover_or_a_starting_node_makes_a_refusal_worth_retrying() {
        assert!(is_transient(b"-CLUSTERDOWN Hash slot not served\r\n"));
        assert!(is_transient(b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n"));
        assert!(is_transient(b"-LOADING Redis is loading the dataset in memory\r\n"));
        assert!(is_transient(b"-MASTERDOWN Link with MASTER is down\r\n"));
        assert!(!is_transient(b"-NOPERM this user has no permissions to access one of the channels\r\n"));
        assert!(!is_transient(b"-ERR unknown command\r\n"));
    }
}
