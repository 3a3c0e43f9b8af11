//! A client's requests from bytes to a route: framing, Redis' admission checks in Redis' order
//! (unknown command, arity, login, `no_multi` inside MULTI, permissions), CLIENT PAUSE, subscribed
//! mode and transaction queueing; then the route is carried out (`route.rs`).

use std::time::Instant;

use bytes::BytesMut;

use super::pipeline::Meta;
use super::settings::{self, Plan};
use super::transaction::RunsAt;
use super::{Session, local, reply_control, transaction};
use crate::clock::Tick;
use crate::command::{AdminKind, CommandFlags, CommandSpec, Handling, LocalKind, Merge, StatefulKind};
use crate::error::ProxyError;
use crate::metrics::labels;
use crate::resp::Request;
use crate::resp::reply::Protocol;
use crate::router::{self, Route};
use crate::shared::Shared;

/// How often a busy client's last interaction is recorded (see [`Session::on_input`]).
const TOUCH_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

impl Session {
    /// Routes every complete request in `rbuf`.
    ///
    /// `shared` is the session's own handle on what sessions share, held apart from `self` so
    /// that the command spec a request borrows from it can live beside `&mut self` without a
    /// reference count change per request.
    pub(super) fn on_input(&mut self, shared: &Shared, rbuf: &mut BytesMut) {
        // Every request completed by this read had its last byte read now: one clock read per read.
        let read_at = Tick::now();
        // `idle=` counts seconds (Redis' from a clock cached per event-loop turn): recorded at
        // most once per TOUCH_EVERY, a comparison per read instead of a conversion to
        // milliseconds (~70 instructions per unpipelined request).
        if read_at >= self.next_touch {
            shared.clients.touch(&self.entry, Instant::now());
            self.next_touch = read_at.after(TOUCH_EVERY);
        }
        // A node's query buffer holds what it read until every request in it ran (CLIENT LIST's
        // `qbuf` for the client asking).
        self.query_len = rbuf.len();
        let mut first = true;
        loop {
            // After QUIT or a protocol error nothing more runs, whatever arrives before the
            // connection is closed.
            if self.state.closing {
                return;
            }
            // Like Redis with a blocked or subscribing client: later requests wait, unparsed, until
            // the pending answer is in; serve() resumes here then.
            if self.input_on_hold() {
                self.paused_input = true;
                return;
            }
            // Everything read was taken: nothing to decode (the usual end of an unpipelined read).
            if rbuf.is_empty() {
                return;
            }
            self.decoder.set_unauthenticated(self.state.user.is_none());
            match self.decoder.decode(rbuf) {
                Ok(Some(request)) => {
                    self.traffic.commands += 1;
                    // More than one request, or part of one, in what was read: Valkey 8 moves it
                    // from its threads' shared query buffer to one of the client's own.
                    self.private_query_buffer |= first && !rbuf.is_empty();
                    first = false;
                    self.on_request(shared, request, read_at);
                }
                Ok(None) => {
                    self.private_query_buffer = true;
                    return;
                }
                Err(error) => {
                    // As Redis does: answer, then close; the stream cannot be resynchronised.
                    tracing::debug!(client = self.state.id, %error, "protocol error");
                    let meta = Meta::new(labels::OTHER, read_at, false);
                    self.push_error(ProxyError::Protocol(error.to_string()), meta);
                    self.pipeline.push_close();
                    self.state.closing = true;
                    rbuf.clear();
                    return;
                }
            }
        }
    }

    /// One request: admitted or refused, held, taken by subscribed mode or a transaction, or
    /// routed and carried out.
    pub(super) fn on_request(&mut self, shared: &Shared, request: Request, read_at: Tick) {
        let dropped = self.state.reply_dropped(|| reply_control(&request));
        self.run_request(shared, request, read_at, dropped);
    }

    /// [`Session::on_request`] once whether its reply is dropped is known (a request held by
    /// CLIENT PAUSE is run again with what was decided when it was read).
    pub(super) fn run_request(&mut self, shared: &Shared, request: Request, read_at: Tick, dropped: bool) {
        let Some(spec) = shared.table.lookup(&request) else {
            return self.on_unknown_command(shared, &request, Meta::new(labels::OTHER, read_at, dropped));
        };
        let meta = Meta::new(spec.metric_label, read_at, dropped);
        // Set at lookup, before any check, as Redis' `lastcmd` is.
        self.entry.record_command(spec.index);
        if let Some(refusal) = self.admission(spec, &request) {
            self.on_refused_request(request.arg(0));
            return self.push_error(refusal, meta);
        }
        // RESP2 subscribed mode refuses most commands before CLIENT PAUSE could hold them, as in
        // Redis' `processCommand`; the ones it allows are held like any other.
        let refused_subscribed = self.subscribed()
            && self.state.protocol == Protocol::Resp2
            && !super::pubsub::allowed_while_subscribed(request.arg(0));
        if !refused_subscribed && self.paused(spec, &request) {
            let until = shared.clients.current_pause().map_or_else(Instant::now, |p| p.until);
            self.held = Some(Box::new(super::Held { request, read_at, until, dropped }));
            self.entry.set_postponed(true);
            return;
        }
        // RESP2 subscribed mode takes every command; in RESP3 other commands run normally, and
        // inside MULTI a subscription command is queued, which refuses it (not sent to one node).
        let pubsub_command = matches!(spec.handling, Handling::Stateful(StatefulKind::PubSub));
        let resp3_queued = self.tx.is_some() && self.state.protocol == Protocol::Resp3;
        if self.subscribed() && (self.state.protocol == Protocol::Resp2 || (pubsub_command && !resp3_queued)) {
            self.traffic.commands_run += u64::from(!refused_subscribed);
            return self.pubsub_in_order(request, meta);
        }
        if self.tracking.is_some() {
            self.on_tracked_request(spec, &request);
        }
        if self.tx.is_some() && !transaction::controls_transaction(spec) {
            return self.queue(spec, &request, meta);
        }
        let route = router::plan_command(spec, &request, &mut self.keys);
        // Counted once it ran, as a node counts it (a CLIENT INFO's own line leaves it out); a
        // blocking command when it returns (`serve`), nothing refused.
        let runs_now =
            !matches!(route, Route::Refuse(_) | Route::Stateful(StatefulKind::Blocking | StatefulKind::WaitReplicas));
        self.carry_out(route, spec, request, meta);
        self.traffic.commands_run += u64::from(runs_now);
    }

    /// A request for a command the table does not know: Redis' error, and the transaction being
    /// queued fails. Out of line, like every rare path of [`Session::run_request`]: their code
    /// inlined made the usual path's frame large (bench/RESULTS.md).
    #[inline(never)]
    fn on_unknown_command(&mut self, shared: &Shared, request: &Request, meta: Meta) {
        // Redis' `lastcmd` is set by the lookup: no command now.
        self.entry.record_command(usize::MAX);
        self.on_refused_request(request.arg(0));
        self.spoil_transaction();
        self.push_error(router::unknown_command(&shared.table, request), meta);
    }

    /// Redis' checks after the command is known, in `processCommand`'s order: arity, login, a
    /// `no_multi` command inside MULTI, then the user's permissions. The one arity check of a
    /// request. A refusal fails the transaction being queued; a refused EXEC ends it.
    fn admission(&mut self, spec: &CommandSpec, request: &Request) -> Option<ProxyError> {
        let arity = router::arity_error(spec, request);
        let no_multi = self.tx.is_some() && self.state.user.is_some() && spec.flags.contains(CommandFlags::NO_MULTI);
        if no_multi && arity.is_none() {
            self.spoil_transaction();
            return Some(transaction::NOT_ALLOWED_IN_MULTI);
        }
        let generation = self.state.user_generation;
        let authorized =
            arity.or_else(|| local::authorize(&mut self.state, &self.shared, spec, request, &mut self.acl_keys));
        if self.state.user_generation != generation {
            // The ACL file was reloaded: the client's node-side twin may have new rules.
            self.log_own_in_again();
        }
        let refusal = authorized?;
        Some(self.refused(spec, refusal))
    }

    /// Whether CLIENT PAUSE holds the command: every command (ALL) or those that may write
    /// (WRITE: an EXEC too when a command it runs may), like Redis; CLIENT UNPAUSE itself gets
    /// through.
    fn paused(&self, spec: &CommandSpec, request: &Request) -> bool {
        let Some(pause) = self.shared.clients.current_pause() else {
            return false;
        };
        let exec_writes = spec.name == "exec" && self.tx.as_ref().is_some_and(|tx| tx.may_write);
        let writes = || may_write(&self.shared, spec, request) || exec_writes;
        (!pause.writes_only || writes()) && spec.handling != Handling::Local(LocalKind::Unpause)
    }

    /// Whether the pause in force still holds `request`, held earlier (what a WRITE pause lets
    /// through may have grown since: the functions' flags came in).
    pub(super) fn still_paused(&self, request: &Request) -> bool {
        self.shared.table.lookup(request).is_none_or(|spec| self.paused(spec, request))
    }

    /// Inside MULTI commands are queued, not routed: they run together at EXEC. What one node
    /// cannot answer for the whole cluster (fan-outs merging the masters' replies) and
    /// subscriptions cannot be part of a node's transaction; PING and ECHO mean the same on the
    /// node. Settings (CONFIG SET) and the fan-outs every master answers `+OK` (FLUSHALL …) run in
    /// the node's transaction and reach the other nodes once EXEC has run them; the connection
    /// commands the proxy answers itself run once EXEC has run (transaction.rs).
    #[inline(never)]
    fn queue(&mut self, spec: &CommandSpec, request: &Request, meta: Meta) {
        let runs = match &spec.handling {
            // A CONFIG SET of settings the proxy keeps alone is the proxy's to answer.
            Handling::Admin(AdminKind::EveryNode)
                if matches!(settings::plan(request), Plan::ProxyOnly | Plan::Refused(_)) =>
            {
                RunsAt::Proxy
            }
            Handling::Admin(AdminKind::EveryNode) => RunsAt::EveryNode,
            Handling::FanOut(Merge::AllOk) => RunsAt::EveryMaster,
            Handling::FanOut(_)
            | Handling::Admin(_)
            | Handling::Refuse(_)
            | Handling::Stateful(StatefulKind::PubSub) => {
                return self.refuse_in_transaction(meta, transaction::NOT_IN_TRANSACTION);
            }
            Handling::Local(LocalKind::Echo) => RunsAt::Node,
            Handling::Local(_) if transaction::QUEUED_LOCALLY.contains(&spec.name.as_str()) => RunsAt::Proxy,
            Handling::Local(_) => return self.refuse_in_transaction(meta, transaction::NOT_IN_TRANSACTION),
            _ => RunsAt::Node,
        };
        // What the proxy runs itself holds no key of the node's transaction and writes nothing.
        let (slot, may_write) = match runs {
            RunsAt::Proxy => (Ok(None), false),
            RunsAt::Node | RunsAt::EveryNode | RunsAt::EveryMaster => {
                (router::slot_in_transaction(spec, request, &mut self.keys), may_write(&self.shared, spec, request))
            }
        };
        let slot = match slot {
            Ok(at) if !spec.flags.contains(CommandFlags::ALLOW_BUSY) => self.refuse_if_busy(at),
            other => other,
        };
        self.queue_in_transaction(request, slot, runs, may_write, meta);
    }
}

/// Whether a command writes or may replicate: what CLIENT PAUSE WRITE holds. A script's shebang
/// flags and a function's flags decide for them, as in Redis' `getCommandFlags` (a `no-writes`
/// script or function is a read).
fn may_write(shared: &Shared, spec: &CommandSpec, request: &Request) -> bool {
    // A function's flags replace FCALL's and FCALL_RO's: one that declares `no-writes` writes
    // nothing, any other may (FCALL_RO then refuses to run it, once the pause lets it go).
    if matches!(spec.name.as_str(), "fcall" | "fcall_ro")
        && request.argc() > 1
        && let Some(writes) = shared.functions.writes(request.arg(1))
    {
        return writes;
    }
    crate::executor::scripts::shebang_writes(&shared.scripts, spec, request)
        .unwrap_or_else(|| spec.is_write() || spec.flags.contains(CommandFlags::MAY_REPLICATE))
}
