//! Requests handed straight into a node connection's write buffer by the session that sends
//! them, instead of queued for the connection's task: no queue push and take per request, and
//! the task is woken only when a request starts a batch while it waits.
//!
//! The connection's state ([`Wire`]) and its request queue ([`Inbox`]) live behind a lock its
//! task holds while it runs. A session sending a request takes the lock if it is free (the task
//! waits, or is about to run again), takes the requests queued meanwhile first (so a sender's
//! requests keep their order, whichever way each came), then puts its own in the write buffer
//! and in flight as the task would. Otherwise — the lock is taken (the task runs), no connection
//! is established (it connects, or reconnects) or the connection is a subscribed one — the
//! request is queued as before. The mirror of the replies' hand-over to a waiting session
//! (`session/serve/handover.rs`).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError, Weak};
use std::task::{Context, Poll, Waker};

use super::{Turn, Wire};
use crate::metrics::NodeMetrics;
use crate::upstream::UpstreamRequest;
use crate::upstream::conn::Inbox;
use crate::upstream::queue::HandOver;

/// What a node connection's task shares with the sessions that send it requests.
pub(in crate::upstream) struct Outlet {
    state: Mutex<Outgoing>,
    metrics: Arc<NodeMetrics>,
}

/// The connection's requests and, while one is established, its state.
pub(in crate::upstream) struct Outgoing {
    /// The requests queued for the task (those not handed over), kept across connections.
    pub(in crate::upstream) inbox: Inbox,
    /// The established connection, while the task serves it.
    wire: Option<Wire>,
    /// The connection takes requests handed over: false from the poll that ends it (failed, or
    /// finished) on, so that nothing handed over then is failed with it.
    serving: bool,
    /// The task waits: its last poll of the connection returned Pending.
    waiting: bool,
    /// The task's waker, from that poll.
    waker: Option<Waker>,
}

impl Outlet {
    /// The outlet of the connection whose queue is `inbox`: the queue's later sends hand their
    /// requests to it.
    pub(in crate::upstream) fn new(inbox: Inbox, metrics: Arc<NodeMetrics>) -> Arc<Outlet> {
        let outlet = Arc::new(Outlet {
            state: Mutex::new(Outgoing { inbox, wire: None, serving: false, waiting: false, waker: None }),
            metrics,
        });
        let receiver: Weak<dyn HandOver<UpstreamRequest>> = Arc::downgrade(&outlet) as Weak<Outlet>;
        outlet.lock().inbox.rx.hand_over_to(receiver);
        outlet
    }

    /// Locks the shared state. A panic while it was held leaves a valid queue and connection
    /// state (each request is put in the buffer and in flight at once): go on with it.
    pub(in crate::upstream) fn lock(&self) -> MutexGuard<'_, Outgoing> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An established connection is served from here on.
    pub(super) fn open(&self, wire: Wire) {
        let mut state = self.lock();
        state.wire = Some(wire);
        state.serving = true;
        state.waiting = false;
    }

    /// The connection is served no more; later requests are queued. Returns its state, with the
    /// requests whose bytes were not written at all put back in front of the queue (they go out
    /// on the next connection, as those still queued do).
    pub(super) fn close(&self) -> Option<Wire> {
        let mut state = self.lock();
        let Outgoing { inbox, wire, serving, .. } = &mut *state;
        *serving = false;
        let mut wire = wire.take()?;
        for request in wire.never_sent().into_iter().rev() {
            inbox.waiting.push_front(request);
        }
        Some(wire)
    }

    /// Runs `f` on the established connection and the queue (the task, between polls).
    pub(super) fn with_wire<R: Default>(&self, f: impl FnOnce(&mut Wire, &mut Inbox) -> R) -> R {
        let mut state = self.lock();
        let Outgoing { inbox, wire, .. } = &mut *state;
        wire.as_mut().map_or_else(R::default, |wire| f(wire, inbox))
    }

    /// Polls the established connection with `serve`, noting whether the task waits afterwards
    /// (and its waker), for requests handed over meanwhile.
    pub(super) fn poll_wire(
        &self,
        cx: &mut Context<'_>,
        serve: impl FnOnce(&mut Wire, &mut Inbox, &mut Context<'_>) -> Poll<Turn>,
    ) -> Poll<Turn> {
        let mut state = self.lock();
        let Outgoing { inbox, wire, serving, waiting, waker } = &mut *state;
        let Some(wire) = wire.as_mut() else {
            return Poll::Ready(Turn::Finished);
        };
        let turn = serve(wire, inbox, cx);
        if let Poll::Ready(Turn::Finished | Turn::Failed(_)) = turn {
            *serving = false;
        }
        *waiting = turn.is_pending();
        if *waiting && !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *waker = Some(cx.waker().clone());
        }
        turn
    }
}

impl HandOver<UpstreamRequest> for Outlet {
    fn try_take(&self, request: UpstreamRequest) -> Result<(), UpstreamRequest> {
        let mut state = match self.state.try_lock() {
            Ok(state) => state,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return Err(request),
        };
        let Outgoing { inbox, wire, serving, waiting, waker } = &mut *state;
        let Some(wire) = wire.as_mut().filter(|wire| *serving && wire.expects_reply) else {
            return Err(request);
        };
        let buffered = wire.wbuf.len();
        wire.hand_over(request, inbox, &self.metrics);
        let grew = wire.wbuf.len() > buffered;
        // A batch this starts waits a yield for the other sessions of the turn to add theirs.
        wire.gather |= wire.gathers && grew && buffered == 0;
        // A task that waits is woken to write what went into the buffer (not for a request that
        // waits behind a login or a full buffer: the task takes it when it may). A task that does
        // not wait polls again anyway.
        if *waiting
            && grew
            && let Some(waker) = waker.as_ref()
        {
            *waiting = false;
            waker.wake_by_ref();
        }
        Ok(())
    }

    /// Requests are sent one by one.
    fn try_take_run(&self, _run: &mut Vec<UpstreamRequest>) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use bytes::Bytes;

    use super::*;
    use crate::metrics::Metrics;
    use crate::upstream::conn::ConnMode;
    use crate::upstream::queue::{self, Sender};
    use crate::upstream::{ReplySender, Tag, reply_channel};

    /// A task waker that counts its wake-ups.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn request(to: &ReplySender, seq: u64, payload: &'static [u8], tag: Option<Tag>) -> UpstreamRequest {
        UpstreamRequest {
            payload: Bytes::from_static(payload),
            prefix: None,
            tag: tag.unwrap_or(Tag { seq, part: 0 }),
            reply_to: to.clone(),
            bounded: true,
            streamable: false,
            lease: None,
        }
    }

    /// A connection's outlet and a sender of its queue, with requests handed over as `conn::spawn`
    /// sets it up.
    fn outlet() -> (Arc<Outlet>, Sender<UpstreamRequest>) {
        let (tx, rx) = queue::channel();
        let metrics = Metrics::new().node("127.0.0.1:7000");
        (Outlet::new(Inbox { rx, waiting: VecDeque::new() }, metrics), tx)
    }

    /// Opens a connection on `outlet` whose task waits (its last poll returned Pending).
    fn open_waiting(outlet: &Outlet, mode: &ConnMode, wakes: &Arc<Wakes>) {
        outlet.open(Wire::new("127.0.0.1:7000", mode, 8));
        let waker = Waker::from(Arc::clone(wakes));
        let polled = outlet.poll_wire(&mut Context::from_waker(&waker), |_, _, _| Poll::Pending);
        assert!(polled.is_pending());
    }

    fn written(outlet: &Outlet) -> Vec<u8> {
        outlet.with_wire(|wire, _| wire.wbuf.to_vec())
    }

    #[tokio::test]
    async fn requests_go_into_a_waiting_connections_buffer_after_those_queued_and_wake_it_once() {
        let (outlet, tx) = outlet();
        let (client, _replies) = reply_channel();
        // Queued while no connection is established.
        assert!(tx.send(request(&client, 1, b"A", None)).is_ok());
        assert!(!outlet.with_wire(|_, _| true), "no connection yet");
        let wakes = Arc::new(Wakes::default());
        let mode = ConnMode::pooled(false);
        open_waiting(&outlet, &mode, &wakes);
        assert!(tx.send(request(&client, 2, b"B", None)).is_ok());
        assert!(tx.send(request(&client, 3, b"C", None)).is_ok());
        assert_eq!(written(&outlet), b"ABC", "the queued request first, then those handed over");
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1, "woken by the first only");
        let (in_flight, pipelined) = outlet.with_wire(|w, _| (w.inflight.len(), w.pipelined));
        assert_eq!((in_flight, pipelined), (3, true));
        // The task's next poll yields once before writing, so that other sessions add theirs;
        // the one after writes the batch.
        let (mut stream, mut node) = tokio::io::duplex(64);
        let every = std::time::Duration::from_secs(60);
        let mut ticker = super::super::Ticker { sleep: std::pin::pin!(tokio::time::sleep(every)), every, armed: false };
        let metrics = Metrics::new().node("127.0.0.1:7000");
        let mut poll = || {
            let waker = Waker::noop();
            outlet.poll_wire(&mut Context::from_waker(waker), |wire, inbox, cx| {
                wire.poll_serve(cx, &mut stream, &mut ticker, inbox, &mode, &metrics)
            })
        };
        assert!(matches!(poll(), Poll::Ready(Turn::Yield)));
        assert!(poll().is_pending());
        let mut sent = [0u8; 3];
        tokio::io::AsyncReadExt::read_exact(&mut node, &mut sent).await.expect("read");
        assert_eq!(&sent, b"ABC");
    }

    /// A client's own connection carries nobody else's requests: what its client handed over is
    /// written at the task's next poll, without the yield a pool's batch waits.
    #[tokio::test]
    async fn an_own_connection_writes_what_its_client_handed_over_without_waiting_a_turn() {
        let (outlet, tx) = outlet();
        let (client, _replies) = reply_channel();
        let wakes = Arc::new(Wakes::default());
        let mode = ConnMode::owned(false, None);
        open_waiting(&outlet, &mode, &wakes);
        assert!(tx.send(request(&client, 1, b"BLPOP", None)).is_ok());
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1);
        let (mut stream, mut node) = tokio::io::duplex(64);
        let every = std::time::Duration::from_secs(60);
        let mut ticker = super::super::Ticker { sleep: std::pin::pin!(tokio::time::sleep(every)), every, armed: false };
        let metrics = Metrics::new().node("127.0.0.1:7000");
        let polled = outlet.poll_wire(&mut Context::from_waker(Waker::noop()), |wire, inbox, cx| {
            wire.poll_serve(cx, &mut stream, &mut ticker, inbox, &mode, &metrics)
        });
        assert!(polled.is_pending(), "written, then waiting for the reply");
        let mut sent = [0u8; 5];
        tokio::io::AsyncReadExt::read_exact(&mut node, &mut sent).await.expect("read");
        assert_eq!(&sent, b"BLPOP");
    }

    #[test]
    fn requests_are_queued_when_no_connection_takes_them_over() {
        let (outlet, tx) = outlet();
        let (client, _replies) = reply_channel();
        let wakes = Arc::new(Wakes::default());
        // A subscribed connection: its frames all go to the owner, its requests through the task.
        let (owner, _frames) = reply_channel();
        let subscribed = ConnMode { pushes: Some((owner, Tag { seq: u64::MAX, part: 0 })), ..ConnMode::pooled(false) };
        open_waiting(&outlet, &subscribed, &wakes);
        assert!(tx.send(request(&client, 1, b"A", None)).is_ok());
        assert!(written(&outlet).is_empty());
        assert_eq!(outlet.lock().inbox.rx.take_queued(&mut VecDeque::new()), Some(1));
        // The task runs (holds the lock).
        open_waiting(&outlet, &ConnMode::pooled(false), &wakes);
        {
            let _running = outlet.lock();
            assert!(tx.send(request(&client, 2, b"B", None)).is_ok());
        }
        assert!(written(&outlet).is_empty());
        // Closed: queued again; the next connection's first hand-over takes it first.
        assert!(outlet.close().is_some());
        assert!(tx.send(request(&client, 3, b"C", None)).is_ok());
        open_waiting(&outlet, &ConnMode::pooled(false), &wakes);
        assert!(tx.send(request(&client, 4, b"D", None)).is_ok());
        assert_eq!(written(&outlet), b"BCD");
    }

    #[test]
    fn what_follows_a_login_waits_for_its_answer() {
        let (outlet, tx) = outlet();
        let (client, _replies) = reply_channel();
        let wakes = Arc::new(Wakes::default());
        open_waiting(&outlet, &ConnMode::pooled(false), &wakes);
        assert!(tx.send(request(&client, 1, b"AUTH", Some(crate::upstream::LOGIN))).is_ok());
        assert!(tx.send(request(&client, 2, b"GET", None)).is_ok());
        assert_eq!(written(&outlet), b"AUTH");
        assert_eq!(outlet.lock().inbox.waiting.len(), 1, "held until the login is answered");
    }

    #[tokio::test]
    async fn a_closed_connections_requests_not_written_at_all_go_to_the_next_one() {
        let (outlet, tx) = outlet();
        let clients: Vec<_> = (0..3).map(|_| reply_channel()).collect();
        let wakes = Arc::new(Wakes::default());
        open_waiting(&outlet, &ConnMode::pooled(false), &wakes);
        for (client, seq, payload) in [(0, 1, &b"AA"[..]), (1, 1, b"BB"), (2, 1, b"CC"), (1, 2, b"DD")] {
            assert!(tx.send(request(&clients[client].0, seq, payload, None)).is_ok());
        }
        // The socket takes three bytes: A whole, B in part, C and D not at all.
        let (mut socket, _node) = tokio::io::duplex(3);
        let sent = outlet.with_wire(|wire, _| {
            let sent = wire.wbuf.poll_write_to(&mut socket, &mut Context::from_waker(Waker::noop()));
            matches!(sent, Poll::Ready(Ok(3)))
        });
        assert!(sent, "three bytes written");
        let Some(wire) = outlet.close() else { panic!("a connection was open") };
        // What the node may have seen fails with the connection, and so does D, whose client has
        // B on the way (the node could still run B after D, sent on the next connection).
        let failing: Vec<&[u8]> = wire.inflight.iter().map(|entry| &entry.request.payload[..]).collect();
        assert_eq!(failing, [&b"AA"[..], b"BB", b"DD"]);
        let queued: Vec<Vec<u8>> = outlet.lock().inbox.waiting.iter().map(|r| r.payload.to_vec()).collect();
        assert_eq!(queued, [b"CC".to_vec()]);
        // Nothing is handed over to a closed connection; the next one writes C first.
        assert!(tx.send(request(&clients[0].0, 2, b"EE", None)).is_ok());
        open_waiting(&outlet, &ConnMode::pooled(false), &wakes);
        assert!(tx.send(request(&clients[2].0, 2, b"FF", None)).is_ok());
        assert_eq!(written(&outlet), b"CCEEFF");
    }
}
