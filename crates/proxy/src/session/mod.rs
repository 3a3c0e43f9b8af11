//! One client connection: read pipelined requests, route each, write replies in request order.
//!
//! The session never waits for a node: it queues each request on a node's connection and goes on
//! reading, so a client may pipeline thousands of commands and commands for different nodes run
//! concurrently. Replies arrive on the session's own channel, tagged with their request's sequence
//! number, and the [`Pipeline`] releases them in order.

mod admin;
pub mod clients;
mod dispatch;
mod local;
mod pipeline;
mod pubsub;
mod recent;
mod stateful;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::sleep_until;

use crate::command::{Handling, LocalKind, Merge, StatefulKind};
use crate::error::ProxyError;
use crate::executor::{Executor, Part, Target, scripts};
use crate::metrics::labels;
use crate::resp::RequestDecoder;
use crate::resp::reply::Protocol;
use crate::router::{self, Route};
use crate::shared::Shared;
use crate::slot::Slot;
use crate::upstream::ScriptKind;

pub use local::ClientState;
use pipeline::{Meta, Pipeline};

/// Most bytes read from a client while its next request waits (behind a blocking command or a
/// subscription change).
const HELD_INPUT: usize = 64 * 1024;

/// Smallest read buffer, and the size a new client starts with.
const MIN_READ: usize = 64;

/// Largest read buffer sized from a client's usual requests (bigger bursts use [`READ_CHUNK`]).
const MAX_READ_HINT: usize = 4096;

/// Read size for clients that send more than a few bytes at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Serves one client until it disconnects, sends `QUIT`, or breaks the protocol.
///
/// When `shutdown` turns true the session stops reading, writes the replies of every request it
/// already read, and closes: a client never sees a truncated reply.
///
/// `identity` is the ACL user a verified client certificate names (`tls.client_user`): the client
/// starts logged in as that user when it exists and is on, as with Valkey's
/// `tls-auth-clients-user`; otherwise it starts as any client does.
pub async fn run<R, W>(
    shared: Arc<Shared>,
    reader: R,
    writer: W,
    peer: SocketAddr,
    identity: Option<String>,
    shutdown: watch::Receiver<bool>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let id = shared.stats.next_client_id();
    let started = Instant::now();
    crate::log_limited!(1000, info, client = id, %peer, "client connected");
    let mut session = Session::new(shared, id, peer);
    if let Some(name) = identity {
        session.log_in_by_certificate(&name);
    }
    let result = session.serve(reader, writer, shutdown).await;
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

/// What one client sent and received, for its disconnect log line.
#[derive(Debug, Default)]
struct Traffic {
    commands: u64,
    bytes_in: u64,
    bytes_out: u64,
}

struct Session {
    shared: Arc<Shared>,
    state: ClientState,
    pipeline: Pipeline,
    decoder: RequestDecoder,
    /// Gets the parts of the client's requests answered: peers, redirects, retries.
    exec: Executor,
    traffic: Traffic,
    /// The transaction being queued, between MULTI and EXEC.
    tx: Option<stateful::Transaction>,
    /// WATCH is active on the own connection, for keys of this slot (`Some(None)`: keyless).
    watch_slot: Option<Option<Slot>>,
    /// Keys WATCHed on the own connection, for INFO clients.
    watched_keys: u32,
    /// A `CLIENT UNBLOCK` of this client not carried out yet, and when to try (again): until the
    /// block ends, since the node may not have the blocking command yet when it is first asked.
    pending_unblock: Option<(clients::Unblock, Instant)>,
    /// A blocking command is in flight: like Redis, read nothing more from the client until it
    /// is answered.
    hold_reading: bool,
    /// The slot of the client's last write, for WAIT.
    last_write_slot: Option<Slot>,
    /// Subscriptions, while the client is in subscribed mode.
    subs: Option<pubsub::Subscriptions>,
    /// Frames written to the client outside the request pipeline (subscribed mode).
    direct: BytesMut,
    /// A request that needs every earlier reply written first (entering subscribed mode).
    deferred: Option<(crate::resp::Request, Meta)>,
    /// Requests are buffered, unparsed, behind a blocking command or subscription change.
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
    /// Credit for streamed pieces in the write buffer, given back once it is written.
    stream_credits: Vec<(Arc<crate::upstream::StreamCredit>, usize)>,
    /// A request held by `CLIENT PAUSE`, with when it was read, and when the pause ends.
    held: Option<(crate::resp::Request, Instant, Instant)>,
}

impl Session {
    fn new(shared: Arc<Shared>, id: u64, peer: SocketAddr) -> Session {
        let decoder = RequestDecoder::new(shared.limits);
        let state = ClientState::new(id, peer, shared.access.anonymous_user(), shared.access.generation());
        let entry = shared.clients.register(&state);
        Session {
            state,
            entry,
            held: None,
            broken: false,
            stream_credits: Vec::new(),
            shared,
            pipeline: Pipeline::default(),
            decoder,
            exec: Executor::default(),
            traffic: Traffic::default(),
            tx: None,
            watch_slot: None,
            watched_keys: 0,
            pending_unblock: None,
            hold_reading: false,
            last_write_slot: None,
            subs: None,
            direct: BytesMut::new(),
            deferred: None,
            paused_input: false,
            keys: Vec::with_capacity(16),
            acl_keys: Vec::new(),
        }
    }

    async fn serve<R, W>(
        &mut self,
        mut reader: R,
        mut writer: W,
        mut shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        // Buffers start empty and are given back whenever they empty out: an idle client holds no
        // buffer memory, a busy one reads in large chunks.
        let mut rbuf = BytesMut::new();
        let mut wbuf = BytesMut::new();
        let mut last_read_len = 0usize;
        // What this client's requests usually take: the bytes of its last burst, read until the
        // buffer emptied. A fresh buffer gets that much, so a 110-byte SET is one read, not a
        // 64-byte read and another (measured: 2.27 → 1.3 reads per unpipelined SET).
        let mut read_hint = MIN_READ;
        let mut burst = 0usize;
        let entry = Arc::clone(&self.entry);
        let mut reading = !*shutdown.borrow();
        // One future for the whole session rather than a new one (and a new waiter registration)
        // on every turn of the loop; the server only ever sends `true`, so any change means stop.
        let stop = shutdown.changed();
        tokio::pin!(stop);
        let mut stop_armed = reading;
        let mut closing = false;
        // Idle clients are checked on one timer that is only re-armed when it fires, instead of a
        // timer reset on every read.
        let idle_timeout = self.shared.idle_timeout;
        let mut last_read = Instant::now();
        let idle = tokio::time::sleep(idle_timeout.unwrap_or(Duration::from_secs(3600)));
        tokio::pin!(idle);
        loop {
            if self.broken {
                crate::log_limited!(10, warn, client = self.state.id, peer = %self.state.peer,
                    "a streamed reply broke off: closing the client connection");
                return Ok(());
            }
            if !self.direct.is_empty() {
                wbuf.extend_from_slice(&self.direct.split());
            }
            if self.pipeline.is_empty()
                && let Some((request, meta)) = self.deferred.take()
            {
                self.on_pubsub(&request, meta);
                continue;
            }
            closing |= self.pipeline.release(&mut wbuf, &self.shared.metrics);
            if wbuf.len() > self.shared.client_output_limit {
                crate::log_limited!(10, warn, client = self.state.id, peer = %self.state.peer, buffered = wbuf.len(),
                    "client does not read its replies: output limit reached, disconnecting");
                return Ok(());
            }
            if wbuf.is_empty() && (closing || (!reading && self.pipeline.is_empty())) {
                let _ = writer.shutdown().await;
                return Ok(());
            }
            if self.hold_reading && self.pipeline.is_empty() {
                self.hold_reading = false;
                self.entry.set_blocked(0, false);
                self.pending_unblock = None;
            }
            if let Some((request, read_at, until)) = self.held.take() {
                let pause = self.shared.clients.current_pause();
                if pause.is_none() || Instant::now() >= until {
                    self.on_request(request, read_at);
                    continue;
                }
                self.held = Some((request, read_at, pause.map_or(until, |p| p.until)));
            }
            if self.paused_input && !self.input_on_hold() && !closing {
                self.paused_input = false;
                self.on_input(&mut rbuf);
                continue;
            }
            // A client that filled the last read is sending more: read in large chunks. Otherwise
            // the buffer is a fresh one of the client's usual size whenever it empties, so a
            // client that goes idle holds no more than that.
            let spare = rbuf.capacity() - rbuf.len();
            if last_read_len >= read_hint && spare < 1024 {
                rbuf.reserve(READ_CHUNK);
            } else if rbuf.is_empty() && last_read_len < read_hint && spare != read_hint {
                rbuf = BytesMut::with_capacity(read_hint);
            }
            // While a request is on hold the socket is still read (up to HELD_INPUT bytes, kept
            // unparsed, as Redis buffers a blocked client's input) so that a client that leaves is
            // noticed and its blocked upstream connection released.
            let room = !self.input_on_hold() || rbuf.len() < HELD_INPUT;
            let can_read = reading && !closing && room && self.pipeline.len() < self.shared.max_pipeline;
            let next_retry = self
                .exec
                .next_retry()
                .into_iter()
                .chain(self.held.as_ref().map(|h| h.2))
                .chain(self.pending_unblock.map(|(_, at)| at))
                .min();
            tokio::select! {
                biased;
                Some(reply) = self.exec.next_reply(), if self.exec.has_replies() => {
                    self.on_reply(reply);
                    while let Some(reply) = self.exec.try_next_reply() {
                        self.on_reply(reply);
                    }
                }
                written = writer.write_buf(&mut wbuf), if !wbuf.is_empty() => {
                    self.traffic.bytes_out += written? as u64;
                    // TLS buffers records until flushed; for TCP the flush is free.
                    if wbuf.is_empty() {
                        wbuf = BytesMut::new();
                        for (credit, written) in self.stream_credits.drain(..) {
                            credit.give_back(written);
                        }
                        writer.flush().await?;
                    }
                }
                read = reader.read_buf(&mut rbuf), if can_read => {
                    let read = read?;
                    last_read_len = read;
                    self.traffic.bytes_in += read as u64;
                    if read == 0 {
                        // A client gone while blocked will never read the reply; dropping the own
                        // connection unblocks the node.
                        if self.hold_reading {
                            return Ok(());
                        }
                        reading = false;
                    } else {
                        if idle_timeout.is_some() {
                            last_read = Instant::now();
                        }
                        burst += read;
                        self.on_input(&mut rbuf);
                        if rbuf.is_empty() {
                            read_hint = burst.next_power_of_two().clamp(MIN_READ, MAX_READ_HINT);
                            burst = 0;
                        }
                    }
                }
                () = &mut idle, if idle_timeout.is_some() => {
                    let timeout = idle_timeout.unwrap_or_default();
                    // Subscribers wait for messages, not requests: exempt, as in Redis.
                    if self.pipeline.is_empty() && wbuf.is_empty() && self.subs.is_none() && last_read.elapsed() >= timeout {
                        tracing::debug!(client = self.state.id, peer = %self.state.peer, "idle client timed out");
                        return Ok(());
                    }
                    // Busy (replies pending) or active since: look again when it could next be idle.
                    let now = Instant::now();
                    let next = (last_read + timeout).max(now + timeout.min(Duration::from_secs(1)));
                    idle.as_mut().reset(next.into());
                }
                () = retry_at(next_retry), if next_retry.is_some() => {
                    self.resend_due();
                    self.retry_unblock();
                }
                () = entry.signalled() => {
                    // CLIENT KILL closes at once, as Redis does; an unpause only needs the loop to
                    // look at the held request again.
                    if entry.is_killed() {
                        tracing::debug!(client = self.state.id, peer = %self.state.peer, "client killed");
                        return Ok(());
                    }
                    if let Some(how) = entry.take_unblock() {
                        self.pending_unblock = Some((how, Instant::now()));
                        self.retry_unblock();
                    }
                }
                _ = &mut stop, if stop_armed => {
                    stop_armed = false;
                    reading = false;
                }
            }
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

    fn input_on_hold(&self) -> bool {
        self.held.is_some() || self.hold_reading || self.deferred.is_some() || self.awaiting_confirmations()
    }

    /// Routes every complete request in `rbuf`.
    fn on_input(&mut self, rbuf: &mut BytesMut) {
        // Every request completed by this read had its last byte read now: one clock read per read.
        let read_at = Instant::now();
        loop {
            // Like Redis with a blocked or subscribing client: later requests wait, unparsed, until
            // the pending answer is in; serve() resumes here then.
            if self.input_on_hold() {
                self.paused_input = true;
                return;
            }
            match self.decoder.decode(rbuf) {
                Ok(Some(request)) => {
                    self.traffic.commands += 1;
                    self.on_request(request, read_at);
                    if self.state.closing {
                        return;
                    }
                }
                Ok(None) => return,
                Err(error) => {
                    // As Redis does: answer, then close; the stream cannot be resynchronised.
                    tracing::debug!(client = self.state.id, %error, "protocol error");
                    let meta = Meta { label: labels::OTHER, read_at, dropped: false };
                    self.push_error(ProxyError::Protocol(error.to_string()), meta);
                    self.pipeline.push_close();
                    self.state.closing = true;
                    rbuf.clear();
                    return;
                }
            }
        }
    }

    fn on_request(&mut self, request: crate::resp::Request, read_at: Instant) {
        // Redis' order: unknown command, arity, authentication, permissions; then routing.
        let dropped = self.state.reply_dropped(|| is_client_reply(&request));
        let shared = &self.shared;
        let Some(spec) = shared.table.lookup(&request) else {
            self.spoil_transaction();
            let meta = Meta { label: labels::OTHER, read_at, dropped };
            let table = Arc::clone(&self.shared.table);
            self.push_error(router::unknown_command(&table, &request), meta);
            return;
        };
        let meta = Meta { label: spec.metric_label, read_at, dropped };
        // Redis' order (processCommand): arity, login, a `no_multi` command inside MULTI, then the
        // user's permissions.
        let no_multi = self.tx.is_some()
            && self.state.user.is_some()
            && spec.flags.contains(crate::command::CommandFlags::NO_MULTI);
        if no_multi && router::arity_error(spec, &request).is_none() {
            return self.refuse_in_transaction(meta, stateful::NOT_ALLOWED_IN_MULTI);
        }
        if let Some(refusal) = router::arity_error(spec, &request)
            .or_else(|| local::authorize(&mut self.state, shared, spec, &request, &mut self.acl_keys))
        {
            let refusal = self.refused(spec.name == "exec", refusal);
            self.push_error(refusal, meta);
            return;
        }
        self.shared.clients.touch(&self.entry, spec.metric_label, read_at);
        // CLIENT PAUSE holds every command (ALL) or those that may write (WRITE), like Redis;
        // CLIENT UNPAUSE itself must get through.
        if let Some(pause) = self.shared.clients.current_pause()
            && (!pause.writes_only
                || spec.is_write()
                || spec.flags.contains(crate::command::CommandFlags::MAY_REPLICATE))
            && spec.handling != Handling::Local(LocalKind::Unpause)
        {
            self.held = Some((request, read_at, pause.until));
            return;
        }
        // RESP2 subscribed mode takes every command; in RESP3 other commands run normally.
        let pubsub_command = matches!(spec.handling, Handling::Stateful(StatefulKind::PubSub));
        if self.subscribed() && (self.state.protocol == Protocol::Resp2 || pubsub_command) {
            return self.on_pubsub(&request, meta);
        }
        if self.tx.is_some() && !stateful::controls_transaction(&request) {
            // Inside MULTI commands are queued, not routed: they run together at EXEC.
            // What one node cannot answer for the whole cluster (fan-out), what the proxy answers
            // from its own state, and subscriptions cannot be part of a node's transaction; PING and
            // ECHO mean the same on the node.
            // Settings (CONFIG SET) run in the node's transaction and reach the other nodes
            // once EXEC has run them (stateful.rs).
            let setting = spec.handling == Handling::Admin(crate::command::AdminKind::EveryNode);
            let queueable = match &spec.handling {
                Handling::FanOut(_)
                | Handling::Admin(_)
                | Handling::Refuse(_)
                | Handling::Stateful(StatefulKind::PubSub) => setting,
                Handling::Local(kind) => *kind == LocalKind::Echo,
                _ => true,
            };
            if !queueable {
                return self.refuse_in_transaction(meta, stateful::NOT_IN_TRANSACTION);
            }
            let slot = router::slot_of(spec, &request, &mut self.keys);
            return self.queue_in_transaction(&request, slot, setting, meta);
        }
        scripts::remember(&self.shared.scripts, spec, &request);
        let route = router::plan_command(spec, &request, &mut self.keys);
        match route {
            Route::Single { slot, write } => {
                if write && slot.is_some() {
                    self.last_write_slot = slot;
                }
                let mut part = Part::new(request.bytes().clone(), Target::Slot(slot), write);
                part.streamable = true;
                let seq = self.pipeline.push_single(part, meta);
                self.send(seq, 0);
            }
            Route::Script { slot, write, function } => {
                if write && slot.is_some() {
                    self.last_write_slot = slot;
                }
                let mut part = Part::new(request.bytes().clone(), Target::Slot(slot), write);
                part.streamable = true;
                part.script = Some(if function { ScriptKind::Function } else { ScriptKind::Eval });
                let seq = self.pipeline.push_single(part, meta);
                self.send(seq, 0);
            }
            Route::Split { merge, parts, places } => {
                let parts: Vec<Part> =
                    parts.into_iter().map(|p| Part::new(p.payload, Target::Slot(Some(p.slot)), true)).collect();
                let count = parts.len() as u32;
                let seq = self.pipeline.push_multi(parts, merge, places, meta);
                (0..count).for_each(|part| self.send(seq, part));
            }
            Route::FanOut { merge } => {
                // SCRIPT KILL and FUNCTION KILL must reach a node that a script keeps busy.
                let allow_busy = spec.flags.contains(crate::command::CommandFlags::ALLOW_BUSY);
                self.fan_out_parts(request.bytes().clone(), merge, meta, allow_busy);
            }
            Route::Admin(kind) => self.admin(&request, kind, meta),
            Route::Local(LocalKind::Scan) => self.scan(&request, meta),
            Route::Local(LocalKind::RandomKey) => self.random_key(meta),
            Route::Local(LocalKind::Clients | LocalKind::Unpause) => {
                match clients::command(&self.shared.clients, &self.state, &request) {
                    Ok(reply) => self.pipeline.push_ready(reply, meta),
                    Err(error) => self.push_error(error, meta),
                }
            }
            Route::Local(LocalKind::Connection | LocalKind::Echo) => self.answer_locally(&request, meta),
            Route::Stateful(kind) => {
                let slot = match router::slot_of(spec, &request, &mut self.keys) {
                    Ok(slot) => slot,
                    Err(error) => return self.push_error(error, meta),
                };
                match kind {
                    StatefulKind::Transaction => self.on_transaction(request, slot, meta),
                    StatefulKind::Blocking => self.on_blocking(request, slot, meta),
                    // Subscription frames must follow every earlier reply: wait for the pipeline.
                    StatefulKind::PubSub if self.pipeline.is_empty() => self.on_pubsub(&request, meta),
                    StatefulKind::PubSub => {
                        self.deferred = Some((request, meta));
                        self.hold_reading = true;
                    }
                }
            }
            Route::Refuse(error) => self.push_error(error, meta),
        }
    }

    /// A command the proxy answers from the client's state; what CLIENT LIST shows is refreshed
    /// when the command may have changed it.
    fn answer_locally(&mut self, request: &crate::resp::Request, meta: Meta) {
        let answer = local::answer(&mut self.state, &self.shared, request);
        if local::changes_description(request) {
            self.entry.describe(&self.state);
        }
        match answer {
            local::Answer::Reply(reply) => self.pipeline.push_ready(reply, meta),
            local::Answer::Error(error) => self.push_error(error, meta),
            local::Answer::ReplyAndClose(reply) => {
                self.pipeline.push_ready(reply, meta);
                self.pipeline.push_close();
                self.state.closing = true;
            }
            local::Answer::WithClusterSections(text, sections) => {
                let mut args: Vec<&[u8]> = vec![b"INFO"];
                args.extend(sections.iter().map(|s| s.as_bytes()));
                let payload = crate::resp::request::encode_command(&args);
                if let Some(seq) = self.fan_out(payload, Merge::InfoSums, meta) {
                    self.pipeline.set_prefix(seq, text);
                }
            }
            local::Answer::AnyMaster => {
                let part = Part::new(request.bytes().clone(), Target::Slot(None), false);
                let seq = self.pipeline.push_single(part, meta);
                self.send(seq, 0);
            }
        }
    }

    /// Sends the same request to every master and merges the replies.
    fn fan_out(&mut self, payload: Bytes, merge: Merge, meta: Meta) -> Option<u64> {
        self.fan_out_parts(payload, merge, meta, false)
    }

    /// [`Self::fan_out`]; `allow_busy` lets the parts through to nodes a script keeps busy.
    fn fan_out_parts(&mut self, payload: Bytes, merge: Merge, meta: Meta, allow_busy: bool) -> Option<u64> {
        let masters = self.shared.topology.routing().masters().len();
        if masters == 0 {
            self.push_error(ProxyError::NoTopology, meta);
            return None;
        }
        let parts = (0..masters)
            .map(|i| {
                let mut part = Part::new(payload.clone(), Target::Master(i), true);
                part.allow_busy = allow_busy;
                part
            })
            .collect();
        let seq = self.pipeline.push_multi(parts, merge, Vec::new(), meta);
        (0..masters as u32).for_each(|part| self.send(seq, part));
        Some(seq)
    }

    /// RANDOMKEY over the whole cluster: every master's key count and one of its keys, merged
    /// into one key picked with each master weighted by its count ([`Merge::RandomKey`]).
    fn random_key(&mut self, meta: Meta) {
        let masters = self.shared.topology.routing().masters().len();
        if masters == 0 {
            return self.push_error(ProxyError::NoTopology, meta);
        }
        let mut parts = Vec::with_capacity(2 * masters);
        for command in [&b"DBSIZE"[..], b"RANDOMKEY"] {
            let payload = crate::resp::request::encode_command(&[command]);
            parts.extend((0..masters).map(|i| Part::new(payload.clone(), Target::Master(i), false)));
        }
        let seed = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), self.state.id);
        let seq = self.pipeline.push_multi(parts, Merge::RandomKey { seed }, Vec::new(), meta);
        (0..2 * masters as u32).for_each(|part| self.send(seq, part));
    }

    /// SCAN with a cluster-wide cursor: the cursor names a master and that master's own cursor, so
    /// a full iteration walks every master once, with MATCH, COUNT and TYPE passed on.
    fn scan(&mut self, request: &crate::resp::Request, meta: Meta) {
        let masters = self.shared.topology.routing().masters().len();
        let Some((node_cursor, master)) = crate::merge::split_scan_cursor(request.arg(1)).filter(|(_, m)| *m < masters)
        else {
            return self.push_error(ProxyError::command("ERR invalid cursor"), meta);
        };
        let cursor = node_cursor.to_string();
        let mut args: Vec<&[u8]> = vec![request.arg(0), cursor.as_bytes()];
        args.extend((2..request.argc()).map(|i| request.arg(i)));
        let part = Part::new(crate::resp::request::encode_command(&args), Target::Master(master), false);
        let seq = self.pipeline.push_multi(vec![part], Merge::ScanCursor { master, masters }, Vec::new(), meta);
        self.send(seq, 0);
    }
}

/// Whether `request` is `CLIENT REPLY …`, which decides whether it is answered itself.
fn is_client_reply(request: &crate::resp::Request) -> bool {
    request.argc() >= 2
        && request.arg(0).eq_ignore_ascii_case(b"client")
        && request.arg(1).eq_ignore_ascii_case(b"reply")
}

/// Waits until `at`. `select!` builds every branch's future on each turn, enabled or not; this one
/// creates its timer only when polled, so a turn without retries pending costs no timer set-up.
async fn retry_at(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
