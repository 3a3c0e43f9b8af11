//! One client connection: read pipelined requests, route each, write replies in request order.
//!
//! The session never waits for a node: it hands each request's parts to the
//! [`Executor`](crate::executor) and goes on reading, so a client may pipeline thousands of commands
//! and commands for different nodes run concurrently. Replies come back tagged with their request's
//! sequence number, and the [`Pipeline`] releases them in order.
//!
//! A request's path through the session, one file per step: `serve.rs` (the event loop;
//! `serve/handover.rs`: node replies handled by the connection that read them while it waits) →
//! `request.rs` (framing, Redis' admission checks, pause, subscribed mode, MULTI queueing) →
//! `route.rs` (carrying out the route) → `dispatch.rs` (parts to and from the executor) →
//! `pipeline.rs` (replies in order). What the proxy answers itself lives beside them: `local.rs`
//! (connection state), `clients.rs` (CLIENT LIST/KILL/PAUSE), `transaction.rs` (MULTI/EXEC/WATCH),
//! `blocking.rs` (blocking commands), `pubsub.rs` and `recent.rs` (subscriptions), `admin.rs` (operator commands).

mod admin;
mod awaited;
mod blocking;
pub mod clients;
mod dispatch;
mod local;
mod output;
mod pipeline;
mod pubsub;
mod recent;
mod request;
mod route;
mod serve;
mod settings;
mod tracking;
mod transaction;

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use crate::executor::Executor;
use crate::resp::RequestDecoder;
use crate::shared::Shared;
use crate::slot::Slot;
use crate::socket::Socket;

pub use clients::ClientSocket;
pub use local::ClientState;
use pipeline::{Meta, Pipeline};

/// Serves one client until it disconnects, sends `QUIT`, or breaks the protocol.
///
/// When the server shuts down ([`clients::Clients::stop_all`]) the session stops reading, writes
/// the replies of every request it already read, and closes: a client never sees a truncated reply.
///
/// `identity` is the ACL user a verified client certificate names (`tls.client_user`): the client
/// starts logged in as that user when it exists and is on, as with Valkey's
/// `tls-auth-clients-user`; otherwise it starts as any client does.
pub async fn run<S>(shared: Arc<Shared>, stream: S, socket: ClientSocket, identity: Option<String>)
where
    S: Socket + Send + 'static,
{
    let id = shared.stats.next_client_id();
    let peer = socket.peer;
    let started = Instant::now();
    crate::log_limited!(1000, info, client = id, %peer, "client connected");
    let served = serve::served(Session::new(shared, id, socket, identity.as_deref()), stream);
    let result = serve::serve(&served).await;
    let mut ended = serve::lock(&served);
    let session = &mut ended.session;
    session.stop_tracking();
    session.shared.clients.remove(id);
    let traffic = &session.traffic;
    let user = session.state.user.as_ref().map_or("", |u| u.name.as_str());
    let error = result.err().map(|e| e.to_string()).unwrap_or_default();
    // Never the values or passwords: only sizes and counts.
    crate::log_limited!(
        1000,
        info,
        client = id,
        %peer,
        user,
        duration_ms = started.elapsed().as_millis() as u64,
        commands = traffic.commands,
        bytes_in = traffic.bytes_in,
        bytes_out = traffic.bytes_out,
        error,
        "client disconnected"
    );
}

/// A request held by `CLIENT PAUSE`.
struct Held {
    request: crate::resp::Request,
    read_at: crate::clock::Tick,
    /// When the pause ends.
    until: Instant,
    /// Its reply is dropped: decided when it was read, as Redis keeps a postponed command's
    /// CLIENT REPLY SKIP.
    dropped: bool,
}

use clients::Traffic;

struct Session {
    shared: Arc<Shared>,
    state: ClientState,
    pipeline: Pipeline,
    decoder: RequestDecoder,
    /// Gets the parts of the client's requests answered: peers, redirects, retries.
    exec: Executor,
    /// Nodes' replies taken from the executor's queue, handled in order.
    reply_batch: std::collections::VecDeque<crate::upstream::UpstreamReply>,
    traffic: Traffic,
    /// A read brought more than one request or part of one, and the client has not been idle
    /// since: Valkey 8 gives such a client a query buffer of its own (CLIENT LIST's `qbuf`;
    /// `clients/line.rs`).
    private_query_buffer: bool,
    /// The bytes in the client's query buffer as the requests of the last read run.
    query_len: usize,
    /// The transaction being queued, between MULTI and EXEC.
    tx: Option<Box<transaction::Transaction>>,
    /// WATCH is active on the own connection, for keys of this slot (`Some(None)`: keyless).
    watch_slot: Option<Option<Slot>>,
    /// A `CLIENT UNBLOCK` of this client not carried out yet, and when to try (again): until the
    /// block ends, since the node may not have the blocking command yet when it is first asked.
    pending_unblock: Option<(clients::Unblock, Instant)>,
    /// Read nothing more from the client until the pipeline is answered, like Redis while a
    /// blocking command is in flight: a blocking command, WAIT, a subscription waiting for
    /// earlier replies, EXEC's deferred parts (settings for other nodes, connection commands), a
    /// CONFIG SET of a setting the proxy keeps too (taken when the nodes answer).
    hold_reading: bool,
    /// A blocking command or WAIT is in flight: a client that leaves meanwhile is dropped at once,
    /// as Redis frees a blocked client at EOF (its reply would never be read, and dropping the own
    /// connection unblocks the node). Anything else it sent is answered before the close.
    blocked: bool,
    /// The slot of the client's last write, for WAIT.
    last_write_slot: Option<Slot>,
    /// Subscriptions, while the client is in subscribed mode.
    subs: Option<Box<pubsub::Subscriptions>>,
    /// Frames written to the client outside the request pipeline (subscribed mode).
    direct: BytesMut,
    /// A request that needs every earlier request answered first (see [`AfterEarlier`]). Boxed,
    /// as is `held`: rare, and inline they would add ~300 bytes to every client.
    deferred: Option<Box<(crate::resp::Request, Meta, AfterEarlier)>>,
    /// For each [`Channel`], one past the sequence number of the newest request sent on it (0:
    /// none): a request on it may be unanswered while this is above the pipeline's first
    /// unreleased one.
    sent_upto: [u64; CHANNELS],
    /// Requests are buffered, unparsed, behind a blocking command, a subscription change or a
    /// HELLO, AUTH or RESET that waits for earlier replies.
    paused_input: bool,
    /// Scratch space for key positions.
    keys: Vec<usize>,
    /// Scratch space for key positions with their access, for permission checks.
    acl_keys: Vec<(usize, crate::command::KeyAccess)>,
    /// This client as CLIENT LIST / KILL see it.
    entry: Arc<clients::ClientEntry>,
    /// A reply broke off after part of it was streamed to the client: the connection cannot be
    /// resynchronised and is closed.
    broken: bool,
    /// A reply waiting behind earlier ones grew past `limits.client_output_limit`.
    over_output_limit: bool,
    /// Since when the client has had more output buffered than its class's soft limit (see
    /// `output.rs`).
    soft_limit_since: Option<Instant>,
    /// The client broke an output limit: it is being dropped (logged and counted once, however
    /// often the session settles before it ends).
    cut_off: bool,
    /// A request held by `CLIENT PAUSE`.
    held: Option<Box<Held>>,
    /// CLIENT TRACKING is on (`None` for every other client: their requests pay nothing for it).
    tracking: Option<Box<tracking::Tracking>>,
    /// When a read next records the client's last interaction ([`clients::Clients::touch`]).
    next_touch: crate::clock::Tick,
}

impl Session {
    /// A new client's session, logged in as the user its certificate names, if any (see [`run`]).
    fn new(shared: Arc<Shared>, id: u64, socket: ClientSocket, identity: Option<&str>) -> Session {
        let mut session = Session::unnamed(shared, id, socket);
        if let Some(name) = identity {
            session.log_in_by_certificate(name);
        }
        session
    }

    fn unnamed(shared: Arc<Shared>, id: u64, socket: ClientSocket) -> Session {
        let decoder = RequestDecoder::new(shared.limits);
        let state = ClientState::new(id, socket.peer, shared.access.anonymous_user(), shared.access.generation());
        let entry = shared.clients.register(&state, socket);
        let exec = Executor::new(Arc::clone(&shared.hold));
        Session {
            state,
            entry,
            held: None,
            tracking: None,
            broken: false,
            over_output_limit: false,
            soft_limit_since: None,
            cut_off: false,
            shared,
            pipeline: Pipeline::default(),
            decoder,
            exec,
            reply_batch: std::collections::VecDeque::new(),
            traffic: Traffic::default(),
            private_query_buffer: false,
            query_len: 0,
            tx: None,
            watch_slot: None,
            pending_unblock: None,
            hold_reading: false,
            blocked: false,
            last_write_slot: None,
            subs: None,
            direct: BytesMut::new(),
            deferred: None,
            sent_upto: [0; CHANNELS],
            paused_input: false,
            keys: Vec::new(),
            acl_keys: Vec::new(),
            next_touch: crate::clock::Tick::now(),
        }
    }

    /// Logs the client in as `name`, the user its verified certificate names, if that user exists
    /// and is on; a certificate naming no such user leaves the client as it was.
    fn log_in_by_certificate(&mut self, name: &str) {
        match self.shared.access.current(name) {
            Some(user) => {
                crate::log_limited!(100, info, client = self.state.id, user = %name, "logged in by client certificate");
                self.state.user = Some(user);
                self.state.anonymous = false;
                self.state.user_generation = self.shared.access.generation();
                self.entry.describe(&self.state);
            }
            None => crate::log_limited!(10, info, client = self.state.id, user = %name,
                "client certificate names no enabled ACL user; the client must log in"),
        }
    }

    /// Whether the client's next request must wait, unparsed: a CLIENT PAUSE holds a request, a
    /// blocking command or a transaction's settings are in flight, a subscription change or a
    /// HELLO, AUTH or RESET waits for earlier replies ([`AfterEarlier`]), or a subscription change
    /// for its confirmations.
    fn input_on_hold(&self) -> bool {
        self.held.is_some() || self.hold_reading || self.deferred.is_some() || self.awaiting_confirmations()
    }

    /// Input was left unparsed while on hold, and nothing holds it any more: it can run now.
    fn paused_input_can_run(&self) -> bool {
        self.paused_input && !self.input_on_hold()
    }
}

/// Why a request waits until every earlier request of the client is answered (and nothing more is
/// read meanwhile), as one Redis connection would have run those first.
#[derive(Debug)]
enum AfterEarlier {
    /// A subscription change, or any command in RESP2 subscribed mode: subscription frames go
    /// to the client directly, so one sent while earlier requests are unanswered would overtake
    /// their replies.
    PubSub,
    /// HELLO, AUTH or RESET: they change the protocol and user that the client's requests are
    /// sent with, and an earlier request still unanswered may be sent again (held through a
    /// failover, a read lost in flight) — with what it was sent with first. Later requests would
    /// also go out on connections of the new protocol and could overtake the earlier ones.
    Identity,
    /// A request for another kind of node connection than earlier requests still unanswered
    /// ([`Channel`]): a node runs each connection's requests in order, not one client's across
    /// connections, so it waits until they are answered. With its command (its place in the
    /// table) and its route, planned already: carried out as planned then.
    Channel { spec: usize, route: crate::router::Route },
}

/// The kinds of node connection a client's requests travel. A client's requests to one node on
/// one connection run in the order sent, as one Redis connection's; across connections they
/// would not (a script on a lane could run before the SET sent just before it on the pooled
/// connection). So a request waits, unparsed input behind it, until the client's requests on the
/// other kinds are answered ([`AfterEarlier::Channel`]) — and a script until earlier scripts are
/// too, since two may take two lanes. Subscriptions keep their order their own way
/// ([`AfterEarlier::PubSub`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    /// The node's pooled connection (keys, splits, fan-outs, operator commands), or a replica's.
    Pool,
    /// A script lane (EVAL, FCALL and their forms).
    Lane,
    /// The client's own connection (transactions, WATCH, blocking commands).
    Own,
}

const CHANNELS: usize = 3;

/// What `request` does to the reply mode ([`local::ReplyControl`]).
fn reply_control(request: &crate::resp::Request) -> local::ReplyControl {
    // Only a valid CLIENT REPLY ON|OFF|SKIP: a malformed one is refused under the mode in force.
    let client_reply = request.argc() == 3
        && request.arg(0).eq_ignore_ascii_case(b"client")
        && request.arg(1).eq_ignore_ascii_case(b"reply")
        && [&b"on"[..], b"off", b"skip"].iter().any(|mode| request.arg(2).eq_ignore_ascii_case(mode));
    match client_reply {
        true => local::ReplyControl::Decides,
        false if request.argc() == 1 && request.arg(0).eq_ignore_ascii_case(b"reset") => local::ReplyControl::TurnsOn,
        false => local::ReplyControl::None,
    }
}
