//! Where a client's classic subscriptions live: on the pub/sub home (the master of
//! [`PUBSUB_HOME_SLOT`]), or on a stand-in while the home is failing, with mirror connections to
//! every other master for keyspace notifications, which each node publishes for its own keys only.

use std::time::{Duration, Instant};

use super::resubscribe::resubscriptions;
use super::{CLASSIC, is_notification};
use crate::resp::{Request, request::encode_command};
use crate::router::PUBSUB_HOME_SLOT;
use crate::session::Session;
use crate::session::awaited::Command;

/// How long a client's classic subscriptions stay on a stand-in before the home, which the map
/// names but whose connections failed lately, is looked at again.
const LOOK_AGAIN: Duration = Duration::from_secs(1);

impl Session {
    /// Keyspace notifications (`__keyspace@…`, `__keyevent@…` channels, and patterns that may
    /// match them: `__key*`, `*`) happen on each master for its own keys: the part of a (P)(UN)SUBSCRIBE about them
    /// is sent to every other master too, on mirror connections whose confirmations the client
    /// never sees (it gets the home's, in order and with the right counts).
    pub(super) fn mirror_notifications(&mut self, name: &[u8], request: &Request) {
        let patterns = name.starts_with(b"p");
        let notifications: Vec<&[u8]> =
            (1..request.argc()).map(|i| request.arg(i)).filter(|c| is_notification(c, patterns)).collect();
        let has_mirrors = self.subs.as_ref().is_some_and(|s| s.conns.values().any(|c| c.mirror));
        let unsubscribe_all = name.starts_with(b"un") || name.starts_with(b"pun");
        let unsubscribe_all = unsubscribe_all && request.argc() == 1;
        if notifications.is_empty() && !(unsubscribe_all && has_mirrors) {
            return;
        }
        let mut args: Vec<&[u8]> = vec![request.arg(0)];
        args.extend(notifications);
        let payload = encode_command(&args);
        for (part, _) in self.ensure_mirrors() {
            self.sub_send_as(part, Command::own(payload.clone()));
        }
    }

    /// A mirror connection to every master but the classic connection's (one is opened only to a
    /// master that did not fail lately); their parts, and whether each was opened now.
    fn ensure_mirrors(&mut self) -> Vec<(u32, bool)> {
        let classic = self.subs.as_ref().and_then(|s| s.conns.get(&CLASSIC)).map(|c| c.conn.addr().to_string());
        let masters: Vec<String> = (self.shared.topology.routing().masters().iter())
            .map(|m| m.addr().to_string())
            .filter(|a| Some(a) != classic.as_ref() && !self.kept_on(a))
            .collect();
        let mut parts = Vec::new();
        for addr in masters {
            if let Some(part) = self.part_to(&addr, |c| c.mirror) {
                parts.push((part, false));
            } else if !self.shared.topology.is_suspect(&addr) {
                parts.push((self.add_conn(&addr, false, true), true));
            }
        }
        parts
    }

    /// Fits the mirrors to where the classic connection is and to the map: the master the
    /// classic connection is on delivers that master's notifications through it, so a mirror
    /// there would deliver them twice and goes, as does one to a node that is no master any more
    /// (a replica publishes notifications for its master's writes too); every other master that
    /// is not failing gets a mirror of the notification subscriptions (the master the classic
    /// connection left, one added to the cluster). Called when the classic connection moved or
    /// the map changed.
    pub(super) fn fit_mirrors(&mut self) {
        let routing = self.shared.topology.routing_snapshot();
        let Some(subs) = self.subs.as_mut() else { return };
        let Some(classic) = subs.conns.get(&CLASSIC) else { return };
        let on = classic.conn.addr().to_string();
        let notifications = resubscriptions(classic, is_notification);
        let is_master = |addr: &str| routing.masters().iter().any(|m| m.addr() == addr);
        subs.conns.retain(|_, c| !c.mirror || (c.conn.addr() != on && is_master(c.conn.addr())));
        self.release_held_for_mirrors();
        if notifications.is_empty() {
            return;
        }
        for (part, opened) in self.ensure_mirrors() {
            for payload in notifications.iter().filter(|_| opened) {
                self.sub_send_as(part, Command::own(payload.clone()));
            }
        }
    }

    /// The pub/sub home: the master of [`PUBSUB_HOME_SLOT`], where every proxy's classic
    /// subscriptions and PUBLISH go so that PUBLISH counts them all. While the topology still
    /// names a home that is failing (`failed`, or one whose connections failed lately), another
    /// master stands in meanwhile and the client is moved back once the home works, or a new one
    /// is known ([`Self::rehome_if_moved`]).
    pub(super) fn pubsub_home(&self, failed: Option<&str>) -> Option<String> {
        let topology = &self.shared.topology;
        let routing = topology.routing();
        let usable = |addr: &str| Some(addr) != failed && !topology.is_suspect(addr);
        let home = routing.master(PUBSUB_HOME_SLOT).map(|m| m.addr().to_string());
        let masters = || routing.masters().iter().map(|m| m.addr().to_string());
        match home {
            Some(home) if usable(&home) => Some(home),
            _ => masters().find(|a| usable(a)).or_else(|| masters().find(|a| Some(a.as_str()) != failed)),
        }
    }

    /// Moves the classic subscriptions to the pub/sub home when the topology names another master
    /// for it than the one they are on (a failover, a slot move, a stand-in after a failure), so
    /// that PUBLISH counts them again — not to a home whose connections failed lately (the map
    /// may name a dead home until its failover is done): that is looked at again a second later.
    /// Checked when the map changed since the last look (the mirrors are fitted to it then), or
    /// when a look is due.
    pub(super) fn rehome_if_moved(&mut self) {
        let Some(subs) = self.subs.as_mut() else { return };
        let generation = self.shared.topology.routing().generation;
        let due = subs.look_again_at.is_some_and(|at| Instant::now() >= at);
        if subs.generation == generation && !due {
            return;
        }
        let changed = subs.generation != generation;
        subs.generation = generation;
        subs.look_again_at = None;
        // Some(whether it failed lately) when the home is another master than the one the classic
        // connection is on.
        let home_elsewhere = subs.conns.get(&CLASSIC).and_then(|classic| {
            let routing = self.shared.topology.routing();
            let home = routing.master(PUBSUB_HOME_SLOT).map(|m| m.addr()).filter(|home| *home != classic.conn.addr());
            home.map(|home| self.shared.topology.is_suspect(home))
        });
        match home_elsewhere {
            Some(false) => {
                crate::log_limited!(5, info, client = self.state.id, "subscriptions follow the pub/sub home");
                // Replacing the classic connection fits the mirrors too.
                return self.move_classic();
            }
            Some(true) => subs.look_again_at = Some(Instant::now() + LOOK_AGAIN),
            None => {}
        }
        if changed {
            self.fit_mirrors();
        }
    }

    /// Subscriptions follow the map now (see [`Self::rehome_if_moved`]): called when the map
    /// changed and when a look at the home is due. While subscription commands wait for their
    /// confirmations the look waits for them.
    pub(in crate::session) fn follow_map(&mut self) {
        // A client being closed (its subscriptions lost) or a server stopping moves nothing.
        let Some(subs) = self.subs.as_mut() else { return };
        if self.state.closing || self.shared.clients.is_stopping() {
            // Nor looks again: a look left due would wake the session's timer at once, again.
            subs.look_again_at = None;
            return;
        }
        match self.awaiting_confirmations() {
            true => self.look_at_home_soon(),
            false => self.rehome_if_moved(),
        }
    }

    /// When the session looks at the pub/sub home again by itself, with no message or command to
    /// prompt it (a home that was failing, a stand-in); `None` while confirmations are awaited.
    fn home_look_due_at(&self) -> Option<Instant> {
        let due = self.subs.as_ref()?.look_again_at?;
        (!self.awaiting_confirmations()).then_some(due)
    }

    /// When the session's timer must act on the client's subscriptions: a look at the home, a
    /// moved connection to close, a replaced one whose frames are no longer expected.
    pub(in crate::session) fn pubsub_due_at(&self) -> Option<Instant> {
        self.home_look_due_at().into_iter().chain(self.next_close_at()).min()
    }

    /// The session's timer fired: closes the moved connections due (and forgets the replaced ones
    /// done), looks at the home if due.
    pub(in crate::session) fn on_pubsub_timer(&mut self) {
        let now = Instant::now();
        self.close_replaced(|at| at <= now);
        if self.home_look_due_at().is_some_and(|due| due <= now) {
            self.follow_map();
        }
    }

    /// The classic connection may be on a stand-in now, which the map does not say: the home is
    /// looked at again at the next chance, changed map or not.
    pub(super) fn look_at_home_soon(&mut self) {
        if let Some(subs) = self.subs.as_mut() {
            subs.look_again_at = Some(Instant::now());
        }
    }
}
