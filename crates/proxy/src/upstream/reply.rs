//! The queue a caller's replies come back on: node connections push, the caller's task takes
//! everything waiting in one go.
//!
//! A reply is one push under an uncontended lock, and the caller is woken only when its queue
//! turns non-empty; the caller swaps the whole queue out with one lock. A general channel
//! (tokio's `mpsc`) costs several times that per message on the path every request takes twice
//! (bench/RESULTS.md, "reply queue").

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

use super::UpstreamReply;

/// What the senders and the receiver of one queue share.
#[derive(Debug, Default)]
struct Shared {
    replies: Mutex<VecDeque<UpstreamReply>>,
    /// `replies` is not empty (changed under its lock): a receiver with nothing waiting finds out
    /// without taking the lock.
    queued: AtomicBool,
    waker: AtomicWaker,
    senders: AtomicUsize,
    receiver_gone: AtomicBool,
}

impl Shared {
    fn replies(&self) -> MutexGuard<'_, VecDeque<UpstreamReply>> {
        // A panic while holding the lock leaves a valid queue: go on with it.
        self.replies.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Where a node connection sends the replies of one caller.
#[derive(Debug)]
pub struct ReplySender(Arc<Shared>);

/// The caller's end: takes the replies waiting.
#[derive(Debug)]
pub struct ReplyReceiver(Arc<Shared>);

/// A new, empty queue.
pub fn reply_channel() -> (ReplySender, ReplyReceiver) {
    let shared = Arc::new(Shared { senders: AtomicUsize::new(1), ..Shared::default() });
    (ReplySender(Arc::clone(&shared)), ReplyReceiver(shared))
}

impl ReplySender {
    /// Queues `reply`; gives it back when the receiver is gone (its caller left).
    pub fn send(&self, reply: UpstreamReply) -> Result<(), UpstreamReply> {
        if self.0.receiver_gone.load(Ordering::Acquire) {
            return Err(reply);
        }
        let was_empty = {
            let mut replies = self.0.replies();
            let was_empty = replies.is_empty();
            replies.push_back(reply);
            self.0.queued.store(true, Ordering::Release);
            was_empty
        };
        // A non-empty queue has had its wake-up already.
        if was_empty {
            self.0.waker.wake();
        }
        Ok(())
    }

    /// Whether the receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.0.receiver_gone.load(Ordering::Acquire)
    }
}

impl Clone for ReplySender {
    fn clone(&self) -> ReplySender {
        self.0.senders.fetch_add(1, Ordering::Relaxed);
        ReplySender(Arc::clone(&self.0))
    }
}

impl Drop for ReplySender {
    fn drop(&mut self) {
        // The last sender gone: a receiver waiting on an empty queue learns that nothing comes.
        if self.0.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.waker.wake();
        }
    }
}

impl ReplyReceiver {
    /// Moves every waiting reply to the back of `into` (best passed empty: the two buffers are
    /// swapped, so neither allocates once warm). Ready with how many were taken; ready with 0 only
    /// when every sender is gone and nothing is left.
    pub fn poll_take(&self, cx: &mut Context<'_>, into: &mut VecDeque<UpstreamReply>) -> Poll<usize> {
        if !self.0.queued.load(Ordering::Acquire) {
            self.0.waker.register(cx.waker());
            // A reply (or the last sender's drop) between the check and the registration.
            if !self.0.queued.load(Ordering::Acquire) {
                return match self.0.senders.load(Ordering::Acquire) {
                    0 => Poll::Ready(0),
                    _ => Poll::Pending,
                };
            }
        }
        Poll::Ready(self.take(into).unwrap_or(0))
    }

    /// Moves every waiting reply to the back of `into`, without waiting; `None` when none waits.
    pub fn take(&self, into: &mut VecDeque<UpstreamReply>) -> Option<usize> {
        let mut replies = self.0.replies();
        self.0.queued.store(false, Ordering::Release);
        if replies.is_empty() {
            return None;
        }
        let taken = replies.len();
        match into.is_empty() {
            true => std::mem::swap(&mut *replies, into),
            false => into.extend(replies.drain(..)),
        }
        Some(taken)
    }

    /// The next reply; `None` once every sender is gone and the queue is empty.
    pub async fn recv(&self) -> Option<UpstreamReply> {
        std::future::poll_fn(|cx| {
            if let Some(reply) = self.pop() {
                return Poll::Ready(Some(reply));
            }
            self.0.waker.register(cx.waker());
            match self.pop() {
                Some(reply) => Poll::Ready(Some(reply)),
                None if self.0.senders.load(Ordering::Acquire) == 0 => Poll::Ready(None),
                None => Poll::Pending,
            }
        })
        .await
    }
}

impl ReplyReceiver {
    fn pop(&self) -> Option<UpstreamReply> {
        let mut replies = self.0.replies();
        let reply = replies.pop_front();
        self.0.queued.store(!replies.is_empty(), Ordering::Release);
        reply
    }
}

impl Drop for ReplyReceiver {
    fn drop(&mut self) {
        self.0.receiver_gone.store(true, Ordering::Release);
        // Replies already queued hold what they answer (stream credits, lane leases): free them now.
        drop(std::mem::take(&mut *self.0.replies()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::{PUSH, Tag};
    use bytes::Bytes;

    fn reply(part: u32) -> UpstreamReply {
        UpstreamReply { tag: Tag { seq: 0, part }, result: Ok(Bytes::from_static(b"+OK\r\n")), partial: None }
    }

    #[tokio::test]
    async fn replies_come_in_order_and_the_end_is_seen_once_senders_are_gone() {
        let (tx, rx) = reply_channel();
        let other = tx.clone();
        tx.send(reply(1)).expect("receiver alive");
        other.send(reply(2)).expect("receiver alive");
        let mut batch = VecDeque::new();
        let taken = std::future::poll_fn(|cx| rx.poll_take(cx, &mut batch)).await;
        assert_eq!(taken, 2);
        assert_eq!(batch.iter().map(|r| r.tag.part).collect::<Vec<_>>(), [1, 2]);
        tx.send(reply(3)).expect("receiver alive");
        drop((tx, other));
        assert_eq!(rx.recv().await.map(|r| r.tag.part), Some(3));
        assert!(rx.recv().await.is_none(), "every sender gone, nothing left");
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_reply_from_another_task() {
        let (tx, rx) = reply_channel();
        let sender = tokio::spawn(async move {
            tokio::task::yield_now().await;
            tx.send(UpstreamReply { tag: PUSH, result: Ok(Bytes::new()), partial: None }).is_ok()
        });
        assert_eq!(rx.recv().await.map(|r| r.tag), Some(PUSH));
        assert!(sender.await.expect("sender task"));
    }

    #[test]
    fn a_gone_receiver_refuses_replies() {
        let (tx, rx) = reply_channel();
        assert!(!tx.is_closed());
        drop(rx);
        assert!(tx.is_closed());
        assert!(tx.send(reply(1)).is_err());
    }
}
