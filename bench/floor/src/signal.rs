//! What the one-task floors share: a waker per socket or future that queues its id for the worker
//! once until the worker services it, and the worker's queue of arrivals (accepted clients,
//! spawned futures).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Wake;

use futures_util::task::AtomicWaker;

pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the wakers, the arrivals' senders and the worker share.
pub struct Ready<T> {
    pub ids: Mutex<Vec<usize>>,
    pub arrivals: Mutex<Vec<T>>,
    pub worker: AtomicWaker,
}

impl<T> Default for Ready<T> {
    fn default() -> Ready<T> {
        Ready { ids: Mutex::new(Vec::new()), arrivals: Mutex::new(Vec::new()), worker: AtomicWaker::new() }
    }
}

impl<T> Ready<T> {
    pub fn push(&self, id: usize) {
        lock(&self.ids).push(id);
        self.worker.wake();
    }
}

/// One socket's or future's waker: queues its id once until it is serviced.
pub struct Signal<T> {
    pub id: usize,
    pub queued: AtomicBool,
    pub ready: Arc<Ready<T>>,
}

impl<T: Send + 'static> Wake for Signal<T> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.ready.push(self.id);
        }
    }
}
