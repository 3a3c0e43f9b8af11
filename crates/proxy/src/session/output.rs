//! When a client's buffered output ends it: Redis' `checkClientOutputBufferLimits`, for the two
//! classes a client of the proxy can be in (`crate::output_classes`).
//!
//! Every client falls under `limits.client_output_limit`, the proxy's own bound (Redis' `normal`
//! class has none by default; a proxy cannot buffer without bound for one client). A client with
//! subscriptions is in Redis' `pubsub` class (`getClientType`: while it has any subscription, in
//! either protocol) and also under that class's limits, by default Redis' `pubsub 32mb 8mb 60`: a
//! subscriber that does not keep up with what it subscribed to is cut off at 32 MiB, or once it
//! has stayed over 8 MiB for more than 60 s. The `normal` class has limits only where the config
//! file (`limits.normal_output_*`) or a CONFIG SET gives it some.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Session;
use crate::output_classes::{Breach, Class};

impl Session {
    /// Which limit `buffered` bytes waiting for the client broke, if one did (the disconnect's
    /// log line names it). Looked at each time the session settles — after replies or messages
    /// were added, after writes — and when a soft limit's time ends ([`Session::soft_limit_due`]),
    /// as Redis looks when it adds to a client's output and at every client each second.
    #[inline(always)]
    pub(super) fn output_limit_reached(&mut self, buffered: usize) -> Option<&'static str> {
        // A reply held behind earlier ones past the limit (`dispatch.rs`) counts too.
        if self.over_output_limit || buffered > self.shared.client_output_limit {
            return Some("limits.client_output_limit");
        }
        let class_limits = self.subscribed() || self.shared.output_classes.normal_limited();
        if !class_limits && self.soft_limit_since.is_none() {
            return None;
        }
        self.class_limit_reached(buffered)
    }

    /// [`Session::output_limit_reached`] for the class's limits, out of line: only clients with
    /// subscriptions, a `normal` class given limits, or one over a soft limit get here.
    #[inline(never)]
    fn class_limit_reached(&mut self, buffered: usize) -> Option<&'static str> {
        let class = self.output_class();
        let limits = self.shared.output_classes.get(class);
        let breach = limits.check(buffered, &mut self.soft_limit_since, Instant::now())?;
        Some(match (class, breach) {
            (Class::Normal, Breach::Hard) => "normal class hard limit",
            (Class::Normal, Breach::Soft) => "normal class soft limit",
            (Class::PubSub, Breach::Hard) => "pubsub class hard limit",
            (Class::PubSub, Breach::Soft) => "pubsub class soft limit",
        })
    }

    /// When the session must look at a client over its soft limit again: just after the limit's
    /// time ends, so that a client whose output stopped growing is still cut off (Redis'
    /// `clientsCron` looks at every client once a second).
    pub(super) fn soft_limit_due(&self) -> Option<Instant> {
        let since = self.soft_limit_since?;
        let limits = self.shared.output_classes.get(self.output_class());
        since.checked_add(limits.soft_time)?.checked_add(Duration::from_millis(1))
    }

    /// A client that broke `limit` with `buffered` bytes waiting is dropped: logged and counted
    /// (INFO's `client_output_buffer_limit_disconnections`) once, though a node connection's
    /// hand-over may settle the session again before its task ends it.
    pub(super) fn on_cut_off(&mut self, limit: &'static str, buffered: usize) {
        if std::mem::replace(&mut self.cut_off, true) {
            return;
        }
        crate::log_limited!(10, warn, client = self.state.id, peer = %self.state.peer, buffered, limit,
            "client does not read its replies: output limit reached, disconnecting");
        self.shared.stats.output_limit_disconnections.fetch_add(1, Ordering::Relaxed);
    }

    /// The client's class for its output limits (Redis' `getClientType`).
    pub(super) fn output_class(&self) -> Class {
        if self.subscribed() { Class::PubSub } else { Class::Normal }
    }
}
