//! Floor "one task": every client and node socket of the worker is owned by one task, the shape
//! the proxy's next data path would take (predixy's event loop, on tokio's reactor). A socket's
//! waker queues the socket's id and wakes the task; each turn services the queued sockets with
//! direct calls (a client's request is appended to its node's write buffer, a node's reply is put
//! in its client's slot), then writes each touched socket once.
//!
//! Only what an unpipelined or pipelined single-key request needs: no errors answered, no
//! redirections, a node that closes ends the process. See README.md.

mod resp;
mod signal;

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use signal::lock;

/// The id the accepting task queues when it has new clients.
const ACCEPTED: usize = usize::MAX;
/// Client ids start here; node ids are their index.
const FIRST_CLIENT: usize = 1 << 20;

type Ready = signal::Ready<TcpStream>;
type Signal = signal::Signal<TcpStream>;

struct Socket {
    stream: TcpStream,
    signal: Arc<Signal>,
    waker: Waker,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Listed for this turn's writes.
    touched: bool,
}

impl Socket {
    fn new(stream: TcpStream, id: usize, ready: &Arc<Ready>) -> Socket {
        let _ = stream.set_nodelay(true);
        let signal = Arc::new(Signal { id, queued: AtomicBool::new(false), ready: Arc::clone(ready) });
        Socket {
            stream,
            waker: Waker::from(Arc::clone(&signal)),
            signal,
            rbuf: BytesMut::with_capacity(16 * 1024),
            wbuf: BytesMut::with_capacity(16 * 1024),
            touched: false,
        }
    }

    /// One read: `Some(0)` at EOF or on an error, `None` when nothing is there (the socket's
    /// waker is then registered).
    fn read(&mut self) -> Option<usize> {
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(16 * 1024);
        }
        match pin!(self.stream.read_buf(&mut self.rbuf)).poll(&mut Context::from_waker(&self.waker)) {
            Poll::Ready(read) => Some(read.unwrap_or(0)),
            Poll::Pending => None,
        }
    }

    /// Writes what is buffered, until done or the socket is full; false when it broke.
    fn write(&mut self) -> bool {
        self.touched = false;
        while !self.wbuf.is_empty() {
            match pin!(self.stream.write_buf(&mut self.wbuf)).poll(&mut Context::from_waker(&self.waker)) {
                Poll::Ready(Ok(0) | Err(_)) => return false,
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => return true,
            }
        }
        true
    }
}

struct Client {
    socket: Socket,
    /// Replies by request, in request order; `None` until answered.
    slots: VecDeque<Option<Bytes>>,
    /// The sequence number of `slots[0]`, and of the next request.
    base: u64,
    next: u64,
}

struct Node {
    socket: Socket,
    /// Client index and sequence number of each request written and not answered.
    in_flight: VecDeque<(usize, u64)>,
}

struct Worker {
    ready: Arc<Ready>,
    owner: Vec<u16>,
    nodes: Vec<Node>,
    /// Clients by index; never reused, so a late reply finds `None`, not another client.
    clients: Vec<Option<Client>>,
    touched_nodes: Vec<usize>,
    touched_clients: Vec<usize>,
}

impl Worker {
    /// One turn: services every socket that woke, then writes every socket touched.
    fn turn(&mut self) {
        let ids = std::mem::take(&mut *lock(&self.ready.ids));
        for id in ids {
            match id {
                ACCEPTED => self.accept(),
                id if id >= FIRST_CLIENT => self.on_client(id - FIRST_CLIENT),
                id => self.on_node(id),
            }
        }
        for index in std::mem::take(&mut self.touched_nodes) {
            assert!(self.nodes[index].socket.write(), "node connection broke");
        }
        for index in std::mem::take(&mut self.touched_clients) {
            if let Some(client) = self.clients[index].as_mut()
                && !client.socket.write()
            {
                self.clients[index] = None;
            }
        }
    }

    fn accept(&mut self) {
        let accepted = std::mem::take(&mut *lock(&self.ready.arrivals));
        for stream in accepted {
            let index = self.clients.len();
            let socket = Socket::new(stream, FIRST_CLIENT + index, &self.ready);
            self.clients.push(Some(Client { socket, slots: VecDeque::new(), base: 0, next: 0 }));
            self.on_client(index);
        }
    }

    /// Reads a client's requests and appends each to its slot's node's write buffer.
    fn on_client(&mut self, index: usize) {
        while let Some(client) = self.clients[index].as_mut() {
            client.socket.signal.queued.store(false, Ordering::Release);
            match client.socket.read() {
                None => return,
                Some(0) => self.clients[index] = None,
                Some(_) => {
                    while let Some((len, key)) = resp::request(&client.socket.rbuf) {
                        let slot = key.map_or(0, |(start, end)| resp::slot(&client.socket.rbuf[start..end]));
                        let node_index = usize::from(self.owner[usize::from(slot)]);
                        let node = &mut self.nodes[node_index];
                        node.socket.wbuf.extend_from_slice(&client.socket.rbuf.split_to(len));
                        node.in_flight.push_back((index, client.next));
                        client.slots.push_back(None);
                        client.next += 1;
                        if !std::mem::replace(&mut node.socket.touched, true) {
                            self.touched_nodes.push(node_index);
                        }
                    }
                }
            }
        }
    }

    /// Reads a node's replies, puts each in its client's slot and releases the client's replies
    /// that are ready in order into its write buffer.
    fn on_node(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        node.socket.signal.queued.store(false, Ordering::Release);
        // A node's socket also wakes when it has room for the rest of a write.
        if !node.socket.wbuf.is_empty() && !std::mem::replace(&mut node.socket.touched, true) {
            self.touched_nodes.push(index);
        }
        while let Some(read) = node.socket.read() {
            assert!(read > 0, "node connection closed");
            while let Some(len) = resp::reply(&node.socket.rbuf, 0) {
                let reply = node.socket.rbuf.split_to(len).freeze();
                let (client_index, seq) = node.in_flight.pop_front().expect("a reply answers a request");
                let Some(client) = self.clients[client_index].as_mut() else { continue };
                client.slots[usize::try_from(seq - client.base).unwrap_or(usize::MAX)] = Some(reply);
                while let Some(Some(_)) = client.slots.front() {
                    if let Some(Some(reply)) = client.slots.pop_front() {
                        client.socket.wbuf.extend_from_slice(&reply);
                    }
                    client.base += 1;
                }
                if !std::mem::replace(&mut client.socket.touched, true) {
                    self.touched_clients.push(client_index);
                }
            }
        }
    }
}

fn main() {
    let (listen, seeds) = resp::config().expect("usage: floor-one-task --config FILE (bench/callgrind.sh's config)");
    let (masters, owner) = resp::slot_map(&seeds[0]).expect("the slot map from the first seed");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let ready = Arc::new(Ready::default());
        let mut nodes = Vec::new();
        for (index, addr) in masters.iter().enumerate() {
            let stream = TcpStream::connect(addr).await.expect("a master");
            nodes.push(Node { socket: Socket::new(stream, index, &ready), in_flight: VecDeque::new() });
        }
        let listener = TcpListener::bind(&listen).await.expect("the listen address");
        let accepting = Arc::clone(&ready);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                lock(&accepting.arrivals).push(stream);
                accepting.push(ACCEPTED);
            }
        });
        // callgrind writes its counts at exit.
        tokio::spawn(async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal");
            term.recv().await;
            std::process::exit(0);
        });
        let mut worker = Worker {
            ready: Arc::clone(&ready),
            owner,
            nodes,
            clients: Vec::new(),
            touched_nodes: Vec::new(),
            touched_clients: Vec::new(),
        };
        // A first read registers each node socket's waker.
        for index in 0..worker.nodes.len() {
            worker.on_node(index);
        }
        // Unconstrained: the worker is the whole data path, and it waits (letting the driver
        // poll the sockets) as soon as no socket is queued.
        tokio::task::coop::unconstrained(poll_fn(|cx| {
            loop {
                ready.worker.register(cx.waker());
                if lock(&ready.ids).is_empty() {
                    return Poll::<()>::Pending;
                }
                worker.turn();
            }
        }))
        .await;
    });
}
