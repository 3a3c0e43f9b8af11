//! Holding requests while the cluster fails over, within bounds.
//!
//! A part that never reached a node — its master is unreachable, the slot has no owner, or the
//! cluster answers `CLUSTERDOWN` while it elects a new master — is not failed: it waits, and is
//! resent every [`super::RETRY_PAUSE`] until the topology names a node that answers, for up to
//! `upstream.failover_wait`. Applications see a few seconds of latency instead of errors.
//!
//! What is held is bounded per client and for the whole proxy, in requests and in bytes
//! (`[limits]`): past a bound the part fails at once with [`ProxyError::HoldFull`], never a hang
//! and never unbounded memory. Parts whose fate is unknown (in flight when a connection broke) are
//! never held: resending a write that may have been applied could apply it twice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus::IntGauge;

use crate::error::ProxyError;

/// The proxy-wide bounds and counts of held parts (in `Shared`).
#[derive(Debug)]
pub struct HoldBudget {
    /// How long a part may be held (`upstream.failover_wait`).
    pub wait: Duration,
    max_requests: usize,
    max_bytes: usize,
    per_client_requests: usize,
    per_client_bytes: usize,
    requests: AtomicUsize,
    bytes: AtomicUsize,
    /// `held_requests`: parts held now.
    gauge: IntGauge,
}

/// What one client holds now.
#[derive(Debug, Default)]
pub struct Holding {
    requests: usize,
    bytes: usize,
}

impl Holding {
    /// Whether the client holds nothing.
    pub fn is_empty(&self) -> bool {
        self.requests == 0
    }
}

/// The bounds, from `[limits]`.
#[derive(Debug, Clone, Copy)]
pub struct HoldLimits {
    pub max_requests: usize,
    pub max_bytes: usize,
    pub per_client_requests: usize,
    pub per_client_bytes: usize,
}

impl HoldBudget {
    /// Bounds from `[limits]`; `gauge` shows the parts held now.
    pub fn new(wait: Duration, limits: HoldLimits, gauge: IntGauge) -> HoldBudget {
        HoldBudget {
            gauge,
            wait,
            max_requests: limits.max_requests,
            max_bytes: limits.max_bytes,
            per_client_requests: limits.per_client_requests,
            per_client_bytes: limits.per_client_bytes,
            requests: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
        }
    }

    /// Takes room for one more held part of `bytes` for `client`.
    ///
    /// # Errors
    /// [`ProxyError::HoldFull`] when the client's or the proxy's bound would be passed.
    pub fn take(&self, client: &mut Holding, bytes: usize) -> Result<(), ProxyError> {
        if client.requests >= self.per_client_requests || client.bytes + bytes > self.per_client_bytes {
            return Err(ProxyError::HoldFull { whose: "this client's" });
        }
        let requests = self.requests.fetch_add(1, Ordering::AcqRel) + 1;
        let total = self.bytes.fetch_add(bytes, Ordering::AcqRel) + bytes;
        if requests > self.max_requests || total > self.max_bytes {
            self.release(1, bytes);
            return Err(ProxyError::HoldFull { whose: "the proxy's" });
        }
        client.requests += 1;
        client.bytes += bytes;
        self.gauge.inc();
        Ok(())
    }

    /// Gives back the room of one part of `bytes` that is no longer held.
    pub fn give_back(&self, client: &mut Holding, bytes: usize) {
        client.requests = client.requests.saturating_sub(1);
        client.bytes = client.bytes.saturating_sub(bytes);
        self.release(1, bytes);
        self.gauge.dec();
    }

    /// Gives back everything a client held (it went away with parts still held).
    pub fn give_back_all(&self, client: &mut Holding) {
        self.release(client.requests, client.bytes);
        self.gauge.sub(client.requests as i64);
        *client = Holding::default();
    }

    /// Parts held now, proxy-wide.
    pub fn held(&self) -> usize {
        self.requests.load(Ordering::Acquire)
    }

    fn release(&self, requests: usize, bytes: usize) {
        self.requests.fetch_sub(requests, Ordering::AcqRel);
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> HoldBudget {
        let limits = HoldLimits { max_requests: 3, max_bytes: 100, per_client_requests: 2, per_client_bytes: 60 };
        let gauge = IntGauge::new("held", "held").expect("a gauge");
        HoldBudget::new(Duration::from_secs(15), limits, gauge)
    }

    #[test]
    fn each_client_and_the_proxy_are_bounded_in_requests_and_bytes() {
        let budget = budget();
        let (mut a, mut b) = (Holding::default(), Holding::default());
        assert!(budget.take(&mut a, 10).is_ok());
        assert!(budget.take(&mut a, 10).is_ok());
        assert_eq!(budget.take(&mut a, 10), Err(ProxyError::HoldFull { whose: "this client's" }));
        assert!(budget.take(&mut b, 61).is_err(), "past the client's bytes");
        assert!(budget.take(&mut b, 10).is_ok());
        assert_eq!(budget.take(&mut b, 10), Err(ProxyError::HoldFull { whose: "the proxy's" }));
        assert_eq!(budget.held(), 3, "a refused part takes nothing");
        assert_eq!(budget.gauge.get(), 3);
        budget.give_back(&mut a, 10);
        assert!(budget.take(&mut b, 10).is_ok());
        budget.give_back_all(&mut b);
        budget.give_back_all(&mut a);
        assert_eq!(budget.held(), 0);
        assert_eq!(budget.gauge.get(), 0);
    }
}
