//! The queues between sessions and node connections, both ways: requests to a connection,
//! replies back to a session. Many senders push; the one receiver takes everything waiting in one
//! go.
//!
//! A message is one push under an uncontended lock, and the receiver is woken only when its queue
//! turns non-empty; the receiver swaps the whole queue out with one lock, and finds an empty queue
//! empty without taking the lock. A general channel (tokio's `mpsc`) costs several times that per
//! message, on a path every request takes twice (bench/RESULTS.md, "queues").

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

/// Where a queue's messages may be handed over at once instead of queued: the receiver itself,
/// when it is free to take one now (see [`Receiver::hand_over_to`]).
pub trait HandOver<T>: Send + Sync {
    /// Takes `message` now, or gives it back (the receiver is busy, or would rather have it
    /// queued) to be queued. One taken must come after those queued before it: the receiver takes
    /// what is queued first.
    fn try_take(&self, message: T) -> Result<(), T>;

    /// Takes every message of `run` now, in order, leaving it empty; or none of them (false),
    /// leaving `run` as it was, to be queued.
    fn try_take_run(&self, run: &mut Vec<T>) -> bool;
}

/// What the senders and the receiver of one queue share.
struct Shared<T> {
    queue: Mutex<Waiting<T>>,
    /// `queue` holds messages (changed under its lock).
    queued: AtomicBool,
    waker: AtomicWaker,
    senders: AtomicUsize,
    /// Tried before the queue, once set.
    hand_over: OnceLock<Weak<dyn HandOver<T>>>,
}

impl<T> std::fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("queued", &self.queued).field("senders", &self.senders).finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Waiting<T> {
    messages: VecDeque<T>,
    /// The receiver is gone or closed the queue: nothing more is taken in.
    closed: bool,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, Waiting<T>> {
        // A panic while holding the lock leaves a valid queue: go on with it.
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One of the senders of a queue.
#[derive(Debug)]
pub struct Sender<T>(Arc<Shared<T>>);

/// The receiving end of a queue.
#[derive(Debug)]
pub struct Receiver<T>(Arc<Shared<T>>);

/// A new, empty queue.
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Waiting { messages: VecDeque::new(), closed: false }),
        queued: AtomicBool::new(false),
        waker: AtomicWaker::new(),
        senders: AtomicUsize::new(1),
        hand_over: OnceLock::new(),
    });
    (Sender(Arc::clone(&shared)), Receiver(shared))
}

impl<T> Sender<T> {
    /// Hands `message` over to the receiver when it takes it ([`Receiver::hand_over_to`]), else
    /// queues it; gives it back when the receiver is gone or closed the queue (decided under the
    /// queue's lock, so a message is either taken in and seen by the receiver, or given back:
    /// never left behind).
    pub fn send(&self, message: T) -> Result<(), T> {
        match self.0.hand_over.get().and_then(Weak::upgrade) {
            Some(receiver) => match receiver.try_take(message) {
                Ok(()) => Ok(()),
                Err(message) => {
                    // Let go first, as before the push: a receiver dropped meanwhile closes the
                    // queue, and the message comes back rather than being dropped with it.
                    drop(receiver);
                    self.push(message)
                }
            },
            // Pushed from where it was passed: binding it anew first copied it once more (a
            // request is ~100 bytes).
            None => self.push(message),
        }
    }

    /// [`Sender::send`]'s push onto the queue. Always inlined, so that the message goes into the
    /// queue from where the caller passed it rather than through one more copy.
    #[inline(always)]
    fn push(&self, message: T) -> Result<(), T> {
        let was_empty = {
            let mut queue = self.0.lock();
            if queue.closed {
                return Err(message);
            }
            let was_empty = queue.messages.is_empty();
            // A first buffer of one: a Vec's first push makes room for four (~300 bytes of
            // replies), which a client with one request out at a time never uses; a pipeline's
            // batch grows it once.
            if queue.messages.capacity() == 0 {
                queue.messages.reserve_exact(1);
            }
            queue.messages.push_back(message);
            self.0.queued.store(true, Ordering::Release);
            was_empty
        };
        // A non-empty queue has had its wake-up already.
        if was_empty {
            self.0.waker.wake();
        }
        Ok(())
    }

    /// Queues every message of `run`, in order, under one lock and with at most one wake-up (a
    /// pipelined client's replies read together from one node: one message each cost ~190
    /// instructions, bench/RESULTS.md), unless the receiver takes the whole run handed over. A run
    /// of one goes as [`Sender::send`] sends it. When the receiver is gone the messages are
    /// dropped, where `send` gives them back.
    pub fn send_run(&self, run: &mut Vec<T>) {
        if run.len() <= 1 {
            if let Some(message) = run.pop() {
                let _ = self.send(message);
            }
            return;
        }
        if let Some(receiver) = self.0.hand_over.get().and_then(Weak::upgrade)
            && receiver.try_take_run(run)
        {
            return;
        }
        // The same locked push as `send`'s, for many messages: one helper for both moved each
        // request through a closure, +18 instructions per `send` (bench/RESULTS.md).
        let was_empty = {
            let mut queue = self.0.lock();
            if queue.closed {
                drop(queue);
                run.clear();
                return;
            }
            let was_empty = queue.messages.is_empty();
            queue.messages.extend(run.drain(..));
            self.0.queued.store(true, Ordering::Release);
            was_empty
        };
        if was_empty {
            self.0.waker.wake();
        }
    }

    /// Tells the queue apart from others while it lives: equal for senders of the same queue.
    #[inline]
    pub fn queue_id(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    /// Whether the receiver is gone or closed the queue.
    pub fn is_closed(&self) -> bool {
        self.0.lock().closed
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Sender<T> {
        self.0.senders.fetch_add(1, Ordering::Relaxed);
        Sender(Arc::clone(&self.0))
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        // The last sender gone: a receiver waiting on an empty queue learns that nothing comes.
        if self.0.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.waker.wake();
        }
    }
}

impl<T> Receiver<T> {
    /// Moves every waiting message to the back of `into` (best passed empty: the two buffers are
    /// swapped, so neither allocates once warm). Ready with how many were taken; ready with 0 only
    /// when every sender is gone and nothing is left.
    pub fn poll_take(&self, cx: &mut Context<'_>, into: &mut VecDeque<T>) -> Poll<usize> {
        if let Some(taken) = self.take_queued(into) {
            return Poll::Ready(taken);
        }
        self.0.waker.register(cx.waker());
        // A message (or the last sender's drop) between the check and the registration.
        if let Some(taken) = self.take_queued(into) {
            return Poll::Ready(taken);
        }
        match self.0.senders.load(Ordering::Acquire) {
            0 => Poll::Ready(self.take(into).unwrap_or(0)),
            _ => Poll::Pending,
        }
    }

    /// [`Receiver::take`] when something was queued, seen without the lock: an event loop looks
    /// on each pass and registers its waker ([`Receiver::poll_take`]) only before it waits.
    #[inline]
    pub fn take_queued(&self, into: &mut VecDeque<T>) -> Option<usize> {
        match self.0.queued.load(Ordering::Acquire) {
            true => self.take(into),
            false => None,
        }
    }

    /// Moves every waiting message to the back of `into`, without waiting; `None` when none waits.
    pub fn take(&self, into: &mut VecDeque<T>) -> Option<usize> {
        let mut queue = self.0.lock();
        self.0.queued.store(false, Ordering::Release);
        if queue.messages.is_empty() {
            return None;
        }
        let taken = queue.messages.len();
        match into.is_empty() {
            true => std::mem::swap(&mut queue.messages, into),
            false => into.extend(queue.messages.drain(..)),
        }
        Some(taken)
    }

    /// Gives back the buffer of an empty queue (it is taken again by the next send): the two
    /// buffers [`Receiver::take`] swaps keep their room otherwise, a few hundred bytes an idle
    /// receiver need not hold.
    pub fn give_back_idle_memory(&self) {
        let mut queue = self.0.lock();
        if queue.messages.is_empty() {
            queue.messages = VecDeque::new();
        }
    }

    /// The next message; `None` once every sender is gone and the queue is empty.
    pub async fn recv(&self) -> Option<T> {
        std::future::poll_fn(|cx| {
            if let Some(message) = self.try_recv() {
                return Poll::Ready(Some(message));
            }
            self.0.waker.register(cx.waker());
            match self.try_recv() {
                Some(message) => Poll::Ready(Some(message)),
                None if self.0.senders.load(Ordering::Acquire) == 0 => Poll::Ready(self.try_recv()),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// The next message, without waiting.
    pub fn try_recv(&self) -> Option<T> {
        let mut queue = self.0.lock();
        let message = queue.messages.pop_front();
        self.0.queued.store(!queue.messages.is_empty(), Ordering::Release);
        message
    }

    /// Has later sends hand their message to `receiver` when it takes it, instead of queueing it
    /// and waking the receiving task: a session takes its node replies this way while its task
    /// waits, so that a reply costs no task wake-up (see `session/serve/handover.rs`), and a node
    /// connection its requests, straight into its write buffer (`upstream/wire/outlet.rs`). Set
    /// once.
    pub fn hand_over_to(&self, receiver: Weak<dyn HandOver<T>>) {
        let _ = self.0.hand_over.set(receiver);
    }

    /// Takes nothing more in: later sends give their message back. What is queued stays, for
    /// [`Receiver::try_recv`] to drain.
    pub fn close(&self) {
        self.0.lock().closed = true;
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let left = {
            let mut queue = self.0.lock();
            queue.closed = true;
            std::mem::take(&mut queue.messages)
        };
        // Messages left hold what they answer (stream credits, lane leases): freed now, outside
        // the lock.
        drop(left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_come_in_order_and_the_end_is_seen_once_senders_are_gone() {
        let (tx, rx) = channel();
        let other = tx.clone();
        tx.send(1).expect("receiver alive");
        other.send(2).expect("receiver alive");
        let mut batch = VecDeque::new();
        let taken = std::future::poll_fn(|cx| rx.poll_take(cx, &mut batch)).await;
        assert_eq!(taken, 2);
        assert_eq!(Vec::from(batch), [1, 2]);
        tx.send(3).expect("receiver alive");
        drop((tx, other));
        assert_eq!(rx.recv().await, Some(3));
        assert_eq!(rx.recv().await, None, "every sender gone, nothing left");
        let mut batch = VecDeque::new();
        assert_eq!(std::future::poll_fn(|cx| rx.poll_take(cx, &mut batch)).await, 0);
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_message_from_another_task() {
        let (tx, rx) = channel();
        let sender = tokio::spawn(async move {
            tokio::task::yield_now().await;
            tx.send("reply").is_ok()
        });
        assert_eq!(rx.recv().await, Some("reply"));
        assert!(sender.await.expect("sender task"));
    }

    #[test]
    fn a_queue_starts_with_room_for_one_and_gives_an_empty_buffer_back() {
        let (tx, rx) = channel();
        tx.send(1).expect("open");
        assert_eq!(rx.0.lock().messages.capacity(), 1, "one message at a time needs room for one");
        tx.send(2).expect("open");
        let mut batch = VecDeque::new();
        assert_eq!(rx.take(&mut batch), Some(2));
        rx.give_back_idle_memory();
        assert_eq!(rx.0.lock().messages.capacity(), 0, "an empty queue gives its buffer back");
        tx.send(3).expect("open");
        rx.give_back_idle_memory();
        assert_eq!(rx.try_recv(), Some(3), "a queue holding a message keeps it");
        batch.clear();
        assert_eq!(rx.take(&mut batch), None);
    }

    #[test]
    fn a_closed_or_gone_receiver_gives_messages_back_and_keeps_what_it_had() {
        let (tx, rx) = channel();
        tx.send(1).expect("open");
        assert!(!tx.is_closed());
        rx.close();
        assert!(tx.is_closed());
        assert_eq!(tx.send(2), Err(2));
        assert_eq!(rx.try_recv(), Some(1));
        drop(rx);
        assert_eq!(tx.send(3), Err(3));
    }

    /// Takes messages while `open`, into `taken`.
    struct Taker {
        open: std::sync::atomic::AtomicBool,
        taken: Mutex<Vec<u32>>,
    }

    impl HandOver<u32> for Taker {
        fn try_take(&self, message: u32) -> Result<(), u32> {
            if !self.open.load(Ordering::Acquire) {
                return Err(message);
            }
            self.taken.lock().expect("not poisoned").push(message);
            Ok(())
        }

        fn try_take_run(&self, run: &mut Vec<u32>) -> bool {
            if !self.open.load(Ordering::Acquire) {
                return false;
            }
            self.taken.lock().expect("not poisoned").append(run);
            true
        }
    }

    #[test]
    fn a_receiver_that_takes_messages_gets_them_without_the_queue_and_the_queue_keeps_the_rest() {
        let (tx, rx) = channel();
        let taker = Arc::new(Taker { open: AtomicBool::new(true), taken: Mutex::new(Vec::new()) });
        tx.send(1).expect("open");
        let weak: Weak<Taker> = Arc::downgrade(&taker);
        rx.hand_over_to(weak);
        tx.send(2).expect("open");
        taker.open.store(false, Ordering::Release);
        tx.send(3).expect("open");
        assert_eq!(*taker.taken.lock().expect("not poisoned"), [2]);
        let mut batch = VecDeque::new();
        assert_eq!(rx.take(&mut batch), Some(2));
        assert_eq!(Vec::from(batch), [1, 3], "queued before the hand-over was set, and refused by it");
        drop(taker);
        tx.send(4).expect("open");
        assert_eq!(rx.try_recv(), Some(4), "a receiver gone from the hand-over: queued");
    }

    #[test]
    fn a_run_is_handed_over_whole_or_queued_in_order() {
        let (tx, rx) = channel();
        let taker = Arc::new(Taker { open: AtomicBool::new(true), taken: Mutex::new(Vec::new()) });
        let weak: Weak<Taker> = Arc::downgrade(&taker);
        rx.hand_over_to(weak);
        let mut run = vec![1, 2, 3];
        tx.send_run(&mut run);
        assert!(run.is_empty(), "the run is taken, its buffer kept");
        run.push(4);
        tx.send_run(&mut run);
        assert_eq!(*taker.taken.lock().expect("not poisoned"), [1, 2, 3, 4], "handed over, in order");
        taker.open.store(false, Ordering::Release);
        run.extend([5, 6, 7]);
        tx.send_run(&mut run);
        assert!(run.is_empty(), "refused by the receiver: queued");
        let mut batch = VecDeque::new();
        assert_eq!(rx.take(&mut batch), Some(3));
        assert_eq!(Vec::from(batch), [5, 6, 7]);
        rx.close();
        run.extend([5, 6]);
        tx.send_run(&mut run);
        assert!(run.is_empty() && rx.try_recv().is_none(), "a closed queue drops the run");
    }
}
