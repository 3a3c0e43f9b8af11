//! When a client's buffered output ends it: Redis' `checkClientOutputBufferLimits`, for the two
//! classes a client of the proxy can be in (`crate::output_classes`).
//!
//! Every client falls under `limits.client_output_limit`, the proxy's own bound (Redis' `normal`
//! class has none by default; a proxy cannot buffer without bound for one client). A client with
//! subscriptions is in Redis' `pubsub` class (`getClientType`: while it has any subscription, in
//! either protocol) and also under that class's limits, by default Redis' `pubsub 32mb 8mb 60`: a
//! subscriber that does not keep up with what it subscribed to is cut off at 32 MiB, or once it
//! has stayed over 8 MiB for more than 60 s. The `normal` class has limits only once a CONFIG SET
//! gives it some.

use std::time::Instant;

use super::Session;
use crate::output_classes::Class;

impl Session {
    /// Whether `buffered` bytes waiting for the client end it. Looked at each time the session
    /// settles (after replies or messages were added, and after writes), as Redis looks when it
    /// adds to a client's output.
    #[inline(always)]
    pub(super) fn over_output_limits(&mut self, buffered: usize) -> bool {
        if buffered > self.shared.client_output_limit {
            return true;
        }
        let class_limits = self.subscribed() || self.shared.output_classes.normal_limited();
        (class_limits || self.soft_limit_since.is_some()) && self.over_class_limits(buffered)
    }

    /// The class's limits: at the hard limit at once; at the soft limit when it has been over it
    /// at every look for longer than its time, counted from the first look that found it there (a
    /// look under it starts over), as Redis counts.
    #[inline(never)]
    fn over_class_limits(&mut self, buffered: usize) -> bool {
        let limits = self.shared.output_classes.get(self.output_class());
        if limits.hard > 0 && buffered >= limits.hard {
            return true;
        }
        if !(limits.soft > 0 && buffered >= limits.soft) {
            self.soft_limit_since = None;
            return false;
        }
        let since = *self.soft_limit_since.get_or_insert_with(Instant::now);
        since.elapsed() > limits.soft_time
    }

    /// The client's class for its output limits (Redis' `getClientType`).
    pub(super) fn output_class(&self) -> Class {
        if self.subscribed() { Class::PubSub } else { Class::Normal }
    }
}
