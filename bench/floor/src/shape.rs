//! The present shape's two futures, shared by the `tasks` and `local` floors: a session per
//! client and one per node connection, the proxy's own queues between them (its
//! `upstream/queue.rs`, compiled in as is), a node connection that lets other sessions queue
//! their requests for one write (a `yield_now` first, as the proxy's does).

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::queue;
use crate::resp;

type ReplySender = queue::Sender<(u64, Bytes)>;

pub struct Request {
    bytes: Bytes,
    seq: u64,
    reply_to: ReplySender,
}

/// A node connection's task: writes the queued requests, hands each reply to its session.
pub async fn node(stream: TcpStream, requests: queue::Receiver<Request>) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let (mut rbuf, mut wbuf) = (BytesMut::with_capacity(64 * 1024), BytesMut::with_capacity(64 * 1024));
    let mut waiting = VecDeque::new();
    let mut in_flight: VecDeque<(u64, ReplySender)> = VecDeque::new();
    loop {
        let taken = poll_fn(|cx| {
            loop {
                if let Poll::Ready(read) = pin!(reader.read_buf(&mut rbuf)).poll(cx) {
                    assert!(read.unwrap_or(0) > 0, "node connection closed");
                    while let Some(len) = resp::reply(&rbuf, 0) {
                        let (seq, reply_to) = in_flight.pop_front().expect("a reply answers a request");
                        let _ = reply_to.send((seq, rbuf.split_to(len).freeze()));
                    }
                    if rbuf.capacity() - rbuf.len() < 4096 {
                        rbuf.reserve(64 * 1024);
                    }
                    continue;
                }
                if !wbuf.is_empty()
                    && let Poll::Ready(written) = pin!(writer.write_buf(&mut wbuf)).poll(cx)
                {
                    written.expect("node connection broke");
                    continue;
                }
                return requests.poll_take(cx, &mut waiting);
            }
        })
        .await;
        if taken == 0 {
            return;
        }
        if wbuf.is_empty() {
            tokio::task::yield_now().await;
            let _ = requests.take(&mut waiting);
        }
        for request in waiting.drain(..) {
            wbuf.extend_from_slice(&request.bytes);
            in_flight.push_back((request.seq, request.reply_to));
        }
    }
}

/// A client's task: sends each request to its slot's node connection, writes the replies in
/// request order.
pub async fn session(stream: TcpStream, nodes: Arc<Vec<queue::Sender<Request>>>, owner: Arc<Vec<u16>>) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let (reply_to, replies) = queue::channel::<(u64, Bytes)>();
    let (mut rbuf, mut wbuf) = (BytesMut::with_capacity(4096), BytesMut::with_capacity(4096));
    let mut slots: VecDeque<Option<Bytes>> = VecDeque::new();
    let (mut base, mut next) = (0u64, 0u64);
    let mut batch = VecDeque::new();
    poll_fn(|cx| {
        loop {
            if replies.take_queued(&mut batch).is_some() {
                for (seq, reply) in batch.drain(..) {
                    slots[usize::try_from(seq - base).unwrap_or(usize::MAX)] = Some(reply);
                }
                while let Some(Some(_)) = slots.front() {
                    if let Some(Some(reply)) = slots.pop_front() {
                        wbuf.extend_from_slice(&reply);
                    }
                    base += 1;
                }
                continue;
            }
            if !wbuf.is_empty()
                && let Poll::Ready(written) = pin!(writer.write_buf(&mut wbuf)).poll(cx)
            {
                match written {
                    Ok(_) => continue,
                    Err(_) => return Poll::Ready(()),
                }
            }
            if let Poll::Ready(read) = pin!(reader.read_buf(&mut rbuf)).poll(cx) {
                if read.unwrap_or(0) == 0 {
                    return Poll::Ready(());
                }
                while let Some((len, key)) = resp::request(&rbuf) {
                    let slot = key.map_or(0, |(start, end)| resp::slot(&rbuf[start..end]));
                    let request = Request { bytes: rbuf.split_to(len).freeze(), seq: next, reply_to: reply_to.clone() };
                    next += 1;
                    slots.push_back(None);
                    let _ = nodes[usize::from(owner[usize::from(slot)])].send(request);
                }
                if rbuf.capacity() - rbuf.len() < 1024 {
                    rbuf.reserve(4096);
                }
                continue;
            }
            if replies.poll_take(cx, &mut batch).is_ready() {
                continue;
            }
            return Poll::Pending;
        }
    })
    .await;
}

/// A future for a floor to run: a session or a node connection.
pub type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Connects to the masters and serves the clients that connect to `listen`: each session and
/// node connection is started by `spawn` (a tokio task each, or a future of a worker's own).
pub async fn serve(listen: String, masters: Vec<String>, owner: Vec<u16>, spawn: impl Fn(Job)) {
    let mut nodes = Vec::new();
    for addr in &masters {
        let stream = TcpStream::connect(addr).await.expect("a master");
        let (requests, inbox) = queue::channel();
        spawn(Box::pin(node(stream, inbox)));
        nodes.push(requests);
    }
    let (nodes, owner) = (Arc::new(nodes), Arc::new(owner));
    // callgrind writes its counts at exit.
    tokio::spawn(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal");
        term.recv().await;
        std::process::exit(0);
    });
    let listener = TcpListener::bind(&listen).await.expect("the listen address");
    while let Ok((stream, _)) = listener.accept().await {
        spawn(Box::pin(session(stream, Arc::clone(&nodes), Arc::clone(&owner))));
    }
}
