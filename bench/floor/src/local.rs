//! Floor "local": the present shape's futures (`shape.rs`: a session per client, one per node
//! connection, the proxy's queues, the yield before a node write) polled by one tokio task per
//! worker instead of a tokio task each: a future's waker queues its id for the worker (once until
//! polled), and the worker polls the queued ones in turn. It tells what tokio's per-task
//! scheduling costs the present shape, apart from the hand-offs and wake-ups between its
//! futures, which stay. See README.md.

#[path = "../../../crates/proxy/src/upstream/queue.rs"]
#[allow(dead_code)]
mod queue;
mod resp;
mod shape;
mod signal;

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use shape::Job;
use signal::lock;

type Ready = signal::Ready<Job>;
type Signal = signal::Signal<Job>;

struct Slot {
    job: Job,
    signal: Arc<Signal>,
    waker: Waker,
}

/// Polls the futures whose wakers fired, and new ones, until none is left to poll.
fn turn(ready: &Arc<Ready>, slots: &mut Vec<Option<Slot>>, cx: &Context<'_>) -> Poll<()> {
    loop {
        ready.worker.register(cx.waker());
        let spawned = std::mem::take(&mut *lock(&ready.arrivals));
        let mut ids = std::mem::take(&mut *lock(&ready.ids));
        if spawned.is_empty() && ids.is_empty() {
            return Poll::Pending;
        }
        for job in spawned {
            let id = slots.len();
            let signal = Arc::new(Signal { id, queued: AtomicBool::new(true), ready: Arc::clone(ready) });
            slots.push(Some(Slot { job, waker: Waker::from(Arc::clone(&signal)), signal }));
            ids.push(id);
        }
        for id in ids {
            let Some(slot) = slots[id].as_mut() else { continue };
            slot.signal.queued.store(false, Ordering::Release);
            if slot.job.as_mut().poll(&mut Context::from_waker(&slot.waker)).is_ready() {
                slots[id] = None;
            }
        }
    }
}

fn main() {
    let (listen, seeds) = resp::config().expect("usage: floor-local --config FILE (bench/callgrind.sh's config)");
    let (masters, owner) = resp::slot_map(&seeds[0]).expect("the slot map from the first seed");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let ready = Arc::new(Ready::default());
    let worker = Arc::clone(&ready);
    runtime.spawn(tokio::task::coop::unconstrained(async move {
        let mut slots: Vec<Option<Slot>> = Vec::new();
        poll_fn(|cx| turn(&worker, &mut slots, cx)).await;
    }));
    runtime.block_on(shape::serve(listen, masters, owner, |job| {
        lock(&ready.arrivals).push(job);
        ready.worker.wake();
    }));
}
