//! Carrying out a [`Route`]: a part per node it names, handed to the executor; or an answer
//! from the session's own modules (local state, the proxy's clients, transactions, blocking
//! commands, subscriptions, operator commands in `admin.rs`).

use std::sync::Arc;

use bytes::Bytes;

use super::pipeline::Meta;
use super::settings::{self, Plan};
use super::{AfterEarlier, Channel, Session, clients, local};
use crate::command::{CommandFlags, CommandSpec, LocalKind, Merge, StatefulKind, TransactionStep};
use crate::error::ProxyError;
use crate::executor::{Part, Target};
use crate::resp::Request;
use crate::router::{self, Route};
use crate::upstream::ScriptKind;

impl Session {
    /// Carries out `route`, planned for `request` of command `spec`: the usual request for one
    /// node here, every other kind out of line ([`Session::carry_out_other`]), whose code inlined
    /// made this path's frame large (bench/RESULTS.md).
    #[inline(always)]
    pub(super) fn carry_out(&mut self, route: Route, spec: &CommandSpec, request: Request, meta: Meta) {
        match route {
            Route::Single { slot, write } if self.may_send_on(Channel::Pool) => {
                // It owns nothing: forgotten rather than dropped through `Route`'s drop glue (a
                // call per request).
                std::mem::forget(route);
                self.sent_upto[Channel::Pool as usize] = self.pipeline.next_seq() + 1;
                let readonly = spec.flags.contains(CommandFlags::READONLY);
                self.single(request.into_bytes(), slot, (write, readonly), None, meta);
            }
            route => self.carry_out_other(route, spec, request, meta),
        }
    }

    /// [`Session::carry_out`] for every route but a [`Route::Single`] that may go out now.
    #[inline(never)]
    fn carry_out_other(&mut self, route: Route, spec: &CommandSpec, request: Request, meta: Meta) {
        if let Some(channel) = channel_of(&route) {
            if !self.may_send_on(channel) {
                return self.after_earlier(request, meta, AfterEarlier::Channel { spec: spec.index, route });
            }
            self.sent_upto[channel as usize] = self.pipeline.next_seq() + 1;
        }
        // When it goes out: a SCRIPT FLUSH waiting behind an EVALSHA must not forget its script
        // before the EVALSHA ran.
        super::admin::note_going_out(&self.shared, spec, &request);
        let readonly = spec.flags.contains(CommandFlags::READONLY);
        match route {
            Route::Single { slot, write } => self.single(request.into_bytes(), slot, (write, readonly), None, meta),
            Route::Script { slot, write, function } => {
                let kind = if function { ScriptKind::Function } else { ScriptKind::Eval };
                self.single(request.into_bytes(), slot, (write, readonly), Some(kind), meta);
            }
            Route::Split { merge, parts, places } => {
                let parts: Vec<Part> = parts
                    .into_iter()
                    .map(|p| {
                        let mut part = Part::new(p.payload, Target::Slot(Some(p.slot)), true);
                        part.resend_safe = readonly;
                        part
                    })
                    .collect();
                let count = parts.len() as u32;
                let seq = self.pipeline.push_multi(parts, merge, places, meta);
                (0..count).for_each(|part| self.send(seq, part));
            }
            Route::FanOut { merge } => {
                // SCRIPT KILL and FUNCTION KILL must reach a node that a script keeps busy.
                let allow_busy = spec.flags.contains(CommandFlags::ALLOW_BUSY);
                self.fan_out_parts(request.bytes().clone(), merge, meta, allow_busy);
            }
            Route::Admin(kind) => self.admin(&request, kind, meta),
            Route::Local(LocalKind::Scan) => self.scan(&request, meta),
            Route::Local(LocalKind::RandomKey) => self.random_key(meta),
            Route::Local(LocalKind::Clients | LocalKind::Unpause) => {
                match self.clients_command(&request) {
                    Ok(reply) => self.pipeline.push_ready(reply, meta),
                    Err(error) => self.push_error(error, meta),
                }
                // Killed by its own CLIENT KILL: as Redis closes after the reply, nothing read after
                // it runs, and the replies before it and its own still go out.
                if self.entry.is_killed() {
                    self.pipeline.push_close();
                    self.state.closing = true;
                }
            }
            Route::Local(LocalKind::Tracking) => self.client_tracking(&request, meta),
            Route::Local(LocalKind::Connection | LocalKind::Echo) => self.answer_locally(&request, meta),
            Route::Stateful(kind) => self.stateful(kind, spec, request, meta),
            Route::Refuse(error) => self.push_error(error, meta),
        }
    }

    /// CLIENT LIST, INFO, KILL, PAUSE, UNPAUSE …: about the proxy's clients (`session/clients.rs`).
    /// A WRITE pause starts the lookup of the functions' flags, which decide what it holds.
    pub(super) fn clients_command(&mut self, request: &Request) -> Result<Bytes, ProxyError> {
        let user_exists = |name: &str| self.shared.access.user_exists(name);
        let topology = &self.shared.topology;
        let format = clients::LineFormat::of_version(&topology.reported_version(), topology.valkey().as_ref());
        let (table, state) = (&self.shared.table, &self.state);
        let asking = clients::Asking {
            id: state.id,
            query_len: self.query_len.max(request.bytes().len()) as u64,
            argv_mem: (0..request.argc()).map(|i| request.arg(i).len() as u64).sum(),
            traffic: self.traffic,
            private_query_buffer: self.private_query_buffer,
        };
        let reply = clients::command(&self.shared.clients, table, state, request, format, asking, user_exists)?;
        if is_pause_write(request) {
            crate::executor::functions::learn_for_pause(&self.shared);
        }
        Ok(reply)
    }

    /// A request for one node: the slot's owner (any master when keyless), or one of its script
    /// lanes. Its reply is forwarded untouched, so a large one may stream. `(write, readonly)`:
    /// whether the command writes (never to a replica) and whether it only reads (may be resent
    /// after a lost connection).
    fn single(
        &mut self,
        payload: Bytes,
        slot: Option<crate::slot::Slot>,
        (write, readonly): (bool, bool),
        script: Option<ScriptKind>,
        meta: Meta,
    ) {
        if write && slot.is_some() {
            self.last_write_slot = slot;
        }
        let mut part = Part::new(payload, Target::Slot(slot), write);
        part.resend_safe = readonly;
        // A dropped reply (CLIENT REPLY OFF/SKIP) is never written, so none of it may stream out.
        part.streamable = !meta.dropped;
        part.script = script;
        self.send_single(part, meta);
    }

    /// Transactions, blocking commands and subscriptions: on connections of the client's own.
    fn stateful(&mut self, kind: StatefulKind, spec: &CommandSpec, request: Request, meta: Meta) {
        let slot = match router::slot_of(spec, &request, &mut self.keys) {
            Ok(slot) => slot,
            Err(error) => return self.push_error(error, meta),
        };
        if self.moves_own_under_earlier(self.own_slot_for(kind, slot)) {
            let route = Route::Stateful(kind);
            return self.after_earlier(request, meta, AfterEarlier::Channel { spec: spec.index, route });
        }
        match kind {
            StatefulKind::Transaction(step) => self.on_transaction(step, request, slot, meta),
            StatefulKind::Blocking => self.on_blocking(request, slot, meta),
            StatefulKind::WaitReplicas => self.on_wait_replicas(request, meta),
            StatefulKind::PubSub => self.pubsub_in_order(request, meta),
        }
    }

    /// The slot `request` (of `kind`, for `slot`) would take the client's own connection to:
    /// WATCH's, the transaction's at EXEC, a blocking command's; `None` for the rest, which
    /// leave it where it is.
    fn own_slot_for(&self, kind: StatefulKind, slot: Option<crate::slot::Slot>) -> Option<crate::slot::Slot> {
        match kind {
            StatefulKind::Blocking => slot,
            StatefulKind::Transaction(TransactionStep::Watch) if self.tx.is_none() => slot,
            StatefulKind::Transaction(TransactionStep::Exec) => self.exec_slot(),
            _ => None,
        }
    }

    /// A subscription command, or any command in RESP2 subscribed mode, once every earlier
    /// request is answered ([`AfterEarlier::PubSub`]).
    pub(super) fn pubsub_in_order(&mut self, request: Request, meta: Meta) {
        match self.pipeline.is_empty() {
            true => self.on_pubsub(&request, meta),
            false => self.after_earlier(request, meta, AfterEarlier::PubSub),
        }
    }

    /// Runs `request` once every earlier request is answered; until then later input waits,
    /// unparsed (and, for a subscription change, also until its confirmations are in).
    fn after_earlier(&mut self, request: Request, meta: Meta, why: AfterEarlier) {
        // Nothing is parsed while one waits: never two at once.
        debug_assert!(self.deferred.is_none(), "a request already waits for earlier replies");
        self.hold_reading |= matches!(why, AfterEarlier::PubSub);
        self.deferred = Some(Box::new((request, meta, why)));
    }

    /// A request that waited for every earlier one to be answered ([`Session::after_earlier`]).
    pub(super) fn run_after_earlier(&mut self, request: &Request, meta: Meta, why: AfterEarlier) {
        match why {
            AfterEarlier::PubSub => self.on_pubsub(request, meta),
            AfterEarlier::Identity => self.answer_locally(request, meta),
            AfterEarlier::Channel { spec, route } => {
                let shared = Arc::clone(&self.shared);
                match shared.table.spec_at(spec) {
                    Some(spec) => self.carry_out(route, spec, request.clone(), meta),
                    None => self.push_error(router::unknown_command(&shared.table, request), meta),
                }
            }
        }
    }

    /// Whether a request may go out on `channel` now: no earlier request of the client on
    /// another kind of connection (or, for a script, on another lane) may still be unanswered
    /// ([`Channel`]). Inlined: a pooled request asks it each time.
    #[inline]
    fn may_send_on(&self, channel: Channel) -> bool {
        let base = self.pipeline.first_unreleased();
        let pending = |other: Channel| self.sent_upto[other as usize] > base;
        match channel {
            Channel::Pool => !pending(Channel::Lane) && !pending(Channel::Own),
            Channel::Lane => !pending(Channel::Pool) && !pending(Channel::Lane) && !pending(Channel::Own),
            Channel::Own => !pending(Channel::Pool) && !pending(Channel::Lane),
        }
    }

    /// Runs a command the proxy answers itself, and keeps what its change of the client's
    /// description concerns in step (the own connection, CLIENT LIST).
    fn run_local(&mut self, request: &Request) -> local::Answer {
        // Only what changes the client's description (HELLO, AUTH, RESET among them) can change
        // the protocol or user its own connection follows: a PING takes no snapshot.
        let changes = local::changes_description(request);
        let before = changes.then(|| self.own_conn_terms());
        let answer = local::answer(&mut self.state, &self.shared, request);
        if let Some(before) = before {
            self.follow_client_on_own(before);
            self.entry.describe(&self.state);
        }
        answer
    }

    /// The reply of a connection command queued in a transaction
    /// ([`super::transaction::QUEUED_LOCALLY`]), run now that EXEC ran: an element of EXEC's
    /// array, errors included.
    pub(super) fn answer_in_exec(&mut self, payload: Bytes) -> Bytes {
        let mut buf = bytes::BytesMut::from(payload.as_ref());
        let request = match crate::resp::RequestDecoder::new(self.shared.limits).decode(&mut buf) {
            Ok(Some(request)) => request,
            // Bytes the session decoded once already: never reached.
            _ => return ProxyError::command("ERR the proxy could not read a queued command again").to_resp(),
        };
        let registry = self.shared.table.lookup(&request).is_some_and(|spec| {
            matches!(spec.handling, crate::command::Handling::Local(LocalKind::Clients | LocalKind::Unpause))
        });
        if registry {
            return self.clients_command(&request).unwrap_or_else(|error| error.to_resp());
        }
        // A CONFIG SET of settings the proxy keeps alone: taken with the transaction's other
        // settings, in order, once EXEC's reply is merged (`settings::kept_if_ran`), or refused.
        if self.shared.table.lookup(&request).is_some_and(|spec| spec.name == "config|set") {
            return match settings::plan(&request) {
                Plan::ProxyOnly => crate::resp::reply::ok(),
                Plan::Refused(error) => error.to_resp(),
                // Queued as the proxy's alone, but no longer (the open-file limit changed
                // meanwhile): nothing of it runs.
                Plan::AsIs | Plan::Nodes(_) => {
                    ProxyError::command("ERR the proxy could not run a queued CONFIG SET again").to_resp()
                }
            };
        }
        match self.run_local(&request) {
            local::Answer::Reply(reply) => reply,
            local::Answer::Error(error) => error.to_resp(),
            // Only the commands of QUEUED_LOCALLY come here; none answers otherwise.
            _ => super::transaction::NOT_IN_TRANSACTION.to_resp(),
        }
    }

    /// A command the proxy answers from the client's state; what CLIENT LIST shows is refreshed
    /// when the command may have changed it.
    pub(super) fn answer_locally(&mut self, request: &Request, meta: Meta) {
        let name = request.arg(0);
        if !self.pipeline.is_empty() && [&b"hello"[..], b"auth", b"reset"].iter().any(|c| name.eq_ignore_ascii_case(c))
        {
            return self.after_earlier(request.clone(), meta, AfterEarlier::Identity);
        }
        if name.eq_ignore_ascii_case(b"reset") {
            // RESET leaves every mode: a transaction and WATCH, tracking and subscriptions here,
            // the client's own state (protocol, reply mode, name …) in `local::answer`; in either
            // protocol.
            self.discard_transaction();
            self.stop_tracking();
            self.leave_subscriptions();
        }
        match self.run_local(request) {
            local::Answer::Reply(reply) => self.pipeline.push_ready(reply, meta),
            local::Answer::Error(error) => self.push_error(error, meta),
            local::Answer::ReplyAndClose(reply) => {
                self.pipeline.push_ready(reply, meta);
                self.pipeline.push_close();
                self.state.closing = true;
            }
            local::Answer::WithClusterSections(info) => {
                let mut args: Vec<&[u8]> = vec![b"INFO"];
                args.extend(info.cluster_sections.iter().map(|s| s.as_bytes()));
                let payload = crate::resp::request::encode_command(&args);
                if let Some(seq) = self.fan_out(payload, Merge::InfoSums { own: info.own_fields }, meta) {
                    self.pipeline.set_prefix(seq, Bytes::from(info.own));
                }
            }
            local::Answer::AnyMaster => {
                let part = Part::new(request.bytes().clone(), Target::Slot(None), false);
                self.send_single(part, meta);
            }
        }
    }

    /// Sends the same request to every master and merges the replies.
    pub(super) fn fan_out(&mut self, payload: Bytes, merge: Merge, meta: Meta) -> Option<u64> {
        self.fan_out_parts(payload, merge, meta, false)
    }

    /// [`Self::fan_out`]; `allow_busy` lets the parts through to nodes a script keeps busy.
    fn fan_out_parts(&mut self, payload: Bytes, merge: Merge, meta: Meta, allow_busy: bool) -> Option<u64> {
        let masters = self.exec.routing(&self.shared).masters().len();
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
        let masters = self.exec.routing(&self.shared).masters().len();
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
    fn scan(&mut self, request: &Request, meta: Meta) {
        let masters = self.exec.routing(&self.shared).masters().len();
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

/// The kind of node connection `route` sends on; `None` for answers of the proxy's own and for
/// subscriptions, which keep their order their own way ([`AfterEarlier::PubSub`]).
fn channel_of(route: &Route) -> Option<Channel> {
    match route {
        // WAIT and WAITAOF go where the client's writes went: the pooled connection.
        Route::Stateful(StatefulKind::WaitReplicas) => Some(Channel::Pool),
        Route::Single { .. } | Route::Split { .. } | Route::FanOut { .. } | Route::Admin(_) => Some(Channel::Pool),
        Route::Local(LocalKind::Scan | LocalKind::RandomKey) => Some(Channel::Pool),
        Route::Script { .. } => Some(Channel::Lane),
        Route::Stateful(StatefulKind::Transaction(_) | StatefulKind::Blocking) => Some(Channel::Own),
        Route::Stateful(StatefulKind::PubSub) | Route::Local(_) | Route::Refuse(_) => None,
    }
}

/// `CLIENT PAUSE <ms> WRITE`, which lets FCALL of `no-writes` functions through.
fn is_pause_write(request: &Request) -> bool {
    request.argc() == 4
        && request.arg(1).eq_ignore_ascii_case(b"pause")
        && request.arg(3).eq_ignore_ascii_case(b"write")
}
