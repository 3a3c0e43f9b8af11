//! Transactions: MULTI queues commands in the proxy, EXEC sends MULTI, them and EXEC together on
//! the client's own connection to the node of their slot; WATCH goes there first. Never on a
//! pooled connection shared with other clients.

use std::borrow::Cow;

use bytes::Bytes;

use super::Session;
use super::pipeline::Meta;
use crate::command::{CommandSpec, Merge, TransactionStep};
use crate::error::ProxyError;
use crate::executor::{Part, Target};
use crate::resp::{Request, reply, request::encode_command};
use crate::router;
use crate::slot::Slot;

/// A transaction being queued by the proxy between MULTI and EXEC.
#[derive(Debug, Default)]
pub(super) struct Transaction {
    /// The queued commands, sent as MULTI, these, EXEC at EXEC time.
    queued: Vec<Request>,
    /// Connection commands the proxy answers itself ([`QUEUED_LOCALLY`], and a CONFIG SET of
    /// settings the proxy keeps alone), with their places among all the queued commands: run
    /// once the node ran the transaction.
    local: Vec<(u32, Request)>,
    /// The slot every key so far hashes to.
    slot: Option<Slot>,
    /// A queued command was refused: EXEC answers EXECABORT, as Redis does.
    dirty: bool,
    /// A queued command writes or may replicate: CLIENT PAUSE WRITE holds the EXEC, as Redis
    /// does (its `mstate.cmd_flags`).
    pub(super) may_write: bool,
    /// Queued commands that outside a transaction go to every node (settings: CONFIG SET,
    /// RESETSTAT, REWRITE) or every master (FLUSHALL, FLUSHDB, SCRIPT FLUSH …): after EXEC has
    /// run them on the transaction's node they go to the others too. By index in `queued`.
    elsewhere: Vec<(usize, RunsAt)>,
    /// CLIENT LIST's `multi-mem`: the queued commands' argument bytes and a pointer per argument,
    /// as Redis counts them.
    argv_mem: u64,
}

/// Redis' refusal of a `no_multi` command between MULTI and EXEC (`processCommand`).
pub(super) const NOT_ALLOWED_IN_MULTI: ProxyError =
    ProxyError::Command(Cow::Borrowed("ERR Command not allowed inside a transaction"));
pub(super) const NOT_IN_TRANSACTION: ProxyError = ProxyError::Command(Cow::Borrowed(
    "ERR command not allowed inside a transaction through the proxy (it is not sent to a single node)",
));

/// The connection commands the proxy answers itself that a transaction queues, as a node does
/// (CLIENT CAPA as Valkey 8 does): they run at EXEC, once the node ran the transaction's other
/// commands (not when a WATCH aborted it), with their replies at their places in EXEC's array.
/// CLIENT PAUSE and UNPAUSE among them: a pause in a transaction starts at its end, as on a node.
/// The others the proxy answers itself (but PING and ECHO, sent to the node) stay refused inside
/// MULTI: what changes who the client is or how it is answered (AUTH, HELLO, CLIENT REPLY), what
/// needs every node or any (INFO, COMMAND, SCAN), the rest of the client registry (CLIENT LIST,
/// INFO, KILL …, whose view in the middle of an EXEC the proxy cannot give).
pub(super) const QUEUED_LOCALLY: [&str; 13] = [
    "client|pause",
    "client|unpause",
    "client|capa",
    "client|setname",
    "client|getname",
    "client|id",
    "client|setinfo",
    "client|no-evict",
    "client|no-touch",
    "select",
    "readonly",
    "readwrite",
    "acl|whoami",
];

/// Where a command queued in a transaction runs once EXEC is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RunsAt {
    /// In the node's transaction.
    Node,
    /// In the node's transaction, and once EXEC ran it on every other node too (CONFIG SET,
    /// RESETSTAT, REWRITE: settings).
    EveryNode,
    /// In the node's transaction, and once EXEC ran it on every other master too: what outside a
    /// transaction goes to every master and is `+OK` from all (FLUSHALL, FLUSHDB, SCRIPT FLUSH,
    /// FUNCTION DELETE / FLUSH / RESTORE); the node's reply is the one in EXEC's array.
    EveryMaster,
    /// In the proxy, once the node ran the transaction ([`QUEUED_LOCALLY`]).
    Proxy,
}

/// Whether a command inside MULTI is carried out rather than queued: the transaction's own steps
/// but UNWATCH (which a node queues), and QUIT and RESET, which end the connection's state.
pub(super) fn controls_transaction(spec: &CommandSpec) -> bool {
    match spec.handling.transaction_step() {
        Some(step) => step != TransactionStep::Unwatch,
        None => matches!(spec.name.as_str(), "quit" | "reset"),
    }
}

impl Session {
    /// Ends WATCH: the watched slot, taken, and the watched keys no longer counted.
    pub(super) fn forget_watch(&mut self) -> Option<Option<Slot>> {
        self.entry.unwatch();
        self.watch_slot.take()
    }

    /// MULTI, EXEC, DISCARD, WATCH, UNWATCH.
    pub(super) fn on_transaction(&mut self, step: TransactionStep, request: Request, slot: Option<Slot>, meta: Meta) {
        match step {
            TransactionStep::Multi => {
                if self.tx.is_some() {
                    return self.push_error(ProxyError::command("ERR MULTI calls can not be nested"), meta);
                }
                self.tx = Some(Box::new(Transaction { slot: self.watch_slot.flatten(), ..Transaction::default() }));
                self.publish_multi();
                self.pipeline.push_ready(reply::ok(), meta);
            }
            TransactionStep::Discard => {
                if self.tx.take().is_none() {
                    return self.push_error(ProxyError::command("ERR DISCARD without MULTI"), meta);
                }
                self.publish_multi();
                self.unwatch(meta);
            }
            TransactionStep::Unwatch => self.unwatch(meta),
            TransactionStep::Watch => {
                if self.tx.is_some() {
                    return self.push_error(ProxyError::command("ERR WATCH inside MULTI is not allowed"), meta);
                }
                // All watched keys, and later the transaction's keys, must live on one node.
                if let Some(Some(watched)) = self.watch_slot
                    && slot.is_some_and(|s| s != watched)
                {
                    return self.push_error(ProxyError::CrossSlot, meta);
                }
                if self.own_conn_for(slot).is_none() {
                    return self.push_error(ProxyError::SlotNotServed, meta);
                }
                self.watch_slot = Some(slot.or(self.watch_slot.flatten()));
                // INFO clients counts watching clients and their keys, as Redis does.
                self.entry.watch((1..request.argc()).map(|i| request.arg(i)));
                let part = Part::new(request.bytes().clone(), Target::Owned, false);
                self.send_single(part, meta);
            }
            TransactionStep::Exec => self.exec(meta),
        }
    }

    /// Queues a command between MULTI and EXEC, to run where `runs` says; `slot` is an error
    /// when one was found at queue time.
    pub(super) fn queue_in_transaction(
        &mut self,
        request: &Request,
        slot: Result<Option<Slot>, ProxyError>,
        runs: RunsAt,
        may_write: bool,
        meta: Meta,
    ) {
        let Some(tx) = self.tx.as_mut() else {
            return;
        };
        let reply = match slot {
            Err(error) => Some(error),
            Ok(Some(slot)) if tx.slot.is_some_and(|s| s != slot) => Some(ProxyError::CrossSlot),
            Ok(slot) => {
                tx.slot = tx.slot.or(slot);
                None
            }
        };
        match reply {
            Some(error) => {
                tx.dirty = true;
                self.publish_multi();
                self.push_error(error, meta);
            }
            // A transaction that failed already keeps nothing more (EXEC aborts it), as Redis'
            // `queueMultiCommand`; the command is still answered QUEUED.
            None if tx.dirty => self.pipeline.push_ready(Bytes::from_static(b"+QUEUED\r\n"), meta),
            None => {
                match runs {
                    RunsAt::Proxy => {
                        let place = u32::try_from(tx.queued.len() + tx.local.len()).unwrap_or(u32::MAX);
                        tx.local.push((place, request.clone()));
                    }
                    RunsAt::EveryNode | RunsAt::EveryMaster => {
                        tx.elsewhere.push((tx.queued.len(), runs));
                        tx.queued.push(request.clone());
                    }
                    RunsAt::Node => tx.queued.push(request.clone()),
                }
                tx.argv_mem += (0..request.argc()).map(|i| request.arg(i).len() as u64 + 8).sum::<u64>();
                tx.may_write |= may_write;
                self.publish_multi();
                self.pipeline.push_ready(Bytes::from_static(b"+QUEUED\r\n"), meta);
            }
        }
    }

    /// `Ok(slot)`, or the node's `-BUSY` error when a script keeps the master the transaction
    /// runs on busy (the command's slot, or the one an earlier queued command chose).
    pub(super) fn refuse_if_busy(&mut self, slot: Option<Slot>) -> Result<Option<Slot>, ProxyError> {
        let runs_on = slot.or(self.tx.as_ref().and_then(|tx| tx.slot));
        match runs_on.and_then(|at| self.exec.busy_master(&self.shared, at)) {
            Some(busy) => Err(busy),
            None => Ok(slot),
        }
    }

    /// Ends the transaction being queued, if any, and WATCH: a refused EXEC, an EXEC of a
    /// transaction a refused command failed, and RESET (Redis' `discardTransaction` in
    /// `clearClientConnectionState`).
    pub(super) fn discard_transaction(&mut self) {
        self.tx = None;
        self.publish_multi();
        if self.forget_watch().is_some() {
            self.send_unwatch();
        }
    }

    /// What CLIENT LIST shows of the transaction being queued (`multi`, `multi-mem`).
    fn publish_multi(&self) {
        let refused = self.tx.as_ref().is_some_and(|tx| tx.dirty);
        self.entry.publish_multi(self.tx.as_ref().map(|tx| (tx.queued.len() + tx.local.len(), tx.argv_mem)), refused);
    }

    /// Marks the transaction in progress as failed (a queued command was refused before routing).
    pub(super) fn spoil_transaction(&mut self) {
        if let Some(tx) = self.tx.as_mut() {
            tx.dirty = true;
            self.publish_multi();
        }
    }

    /// A command refused before routing (arity, permissions) fails the transaction it was queued
    /// in; a refused EXEC ends the transaction and unwatches, and says so (Redis'
    /// `execCommandAbort`), with the reason as Redis formatted it: no `ERR`, which only its
    /// `addReplyError` puts before a reason without a code (`Can't execute 'exec': …`), but a
    /// code of the reason's own (`NOAUTH`, `NOPERM`). Returns the error to answer.
    pub(super) fn refused(&mut self, spec: &crate::command::CommandSpec, refusal: ProxyError) -> ProxyError {
        if spec.name != "exec" {
            self.spoil_transaction();
            return refusal;
        }
        self.discard_transaction();
        match refusal {
            ProxyError::ExecAbort(_) | ProxyError::ExecAbortPrevious => refusal,
            other => {
                let reason = other.to_string();
                ProxyError::ExecAbort(reason.strip_prefix("ERR ").unwrap_or(&reason).to_owned())
            }
        }
    }

    /// A command that cannot be part of a transaction (fan-out, local state, `no_multi`): refused
    /// with `error`, and EXEC will answer EXECABORT, as Redis' `rejectCommand` does.
    pub(super) fn refuse_in_transaction(&mut self, meta: Meta, error: ProxyError) {
        self.spoil_transaction();
        self.push_error(error, meta);
    }

    fn exec(&mut self, meta: Meta) {
        match self.tx.as_ref().map(|tx| tx.dirty) {
            None => return self.push_error(ProxyError::command("ERR EXEC without MULTI"), meta),
            // A queued command was refused: nothing runs, and the WATCH ends, as Redis'
            // `execCommand` does.
            Some(true) => {
                self.discard_transaction();
                return self.push_error(ProxyError::ExecAbortPrevious, meta);
            }
            Some(false) => {}
        }
        let Some(tx) = self.tx.take() else { return };
        self.publish_multi();
        let watched = self.forget_watch();
        let slot = transaction_slot(&self.shared, &tx, watched.flatten());
        if watched.is_none() && self.own_conn_for(slot).is_none() {
            return self.push_error(ProxyError::SlotNotServed, meta);
        }
        // What the proxy notes of a command as it goes out (a script to remember or a SCRIPT
        // FLUSH to forget them, the stats a RESETSTAT resets), it notes of the queued ones now.
        for request in &tx.queued {
            if let Some(spec) = self.shared.table.lookup(request) {
                super::admin::note_going_out(&self.shared, spec, request);
            }
        }
        let keep = super::settings::kept_if_ran(&self.shared, places_in_exec(&tx));
        // MULTI, the queued commands and EXEC go out together; the client gets EXEC's reply. A
        // redirection of any of them makes the node answer EXECABORT: the map is refreshed and the
        // client may retry, as with any aborted transaction.
        // What the nodes get of each (a CONFIG SET loses the settings the proxy keeps alone).
        let to_nodes: Vec<Request> = tx.queued.into_iter().map(super::settings::for_nodes).collect();
        let mut parts: Vec<Part> = self.parts_elsewhere(&to_nodes, &tx.elsewhere);
        let mut payloads = vec![encode_command(&[b"MULTI"])];
        payloads.extend(to_nodes.into_iter().map(Request::into_bytes));
        payloads.push(encode_command(&[b"EXEC"]));
        let settings = parts.len() as u32;
        parts.extend(payloads.into_iter().map(|payload| {
            let mut part = Part::new(payload, Target::Owned, true);
            part.follow_redirects = false;
            part
        }));
        let sent = parts.len() as u32;
        // The local commands are the last parts, answered by the session (`Session::complete`).
        let local_places = tx.local.iter().map(|(place, _)| *place).collect();
        parts.extend(tx.local.into_iter().map(|(_, request)| Part::new(request.into_bytes(), Target::Owned, false)));
        // The settings (and flushes) for the other nodes and the local commands wait for EXEC's
        // reply (they run only if it ran), and EXEC's reply waits for theirs: the client sees it
        // once every node has the setting. Later requests wait unread meanwhile, so none reaches
        // a node before the setting does, nor runs before the local commands changed the client.
        let deferred: Vec<u32> = (0..settings).chain(sent..parts.len() as u32).collect();
        if let Some(exec) = parts.get_mut(sent as usize - 1) {
            exec.set_deferred(deferred.clone());
        }
        // So does a CONFIG SET of a setting the proxy keeps too (as outside a transaction): what
        // the client sends next sees it.
        self.hold_reading |= !deferred.is_empty() || keep.is_some();
        let seq = self.pipeline.push_multi(parts, Merge::Exec { local_places }, Vec::new(), meta);
        if let Some(keep) = keep {
            self.pipeline.on_merged(seq, keep);
        }
        (settings..sent).for_each(|part| self.send(seq, part));
    }

    /// The slot the transaction being queued runs in at EXEC ([`transaction_slot`]).
    pub(super) fn exec_slot(&self) -> Option<Slot> {
        let tx = self.tx.as_ref()?;
        transaction_slot(&self.shared, tx, self.watch_slot.flatten())
    }

    /// One part per node other than the own connection's, for each queued command that goes
    /// there too (settings to replicas as well, the rest to masters only): `to_nodes[i]` for each
    /// `(i, _)` of `elsewhere`.
    fn parts_elsewhere(&self, to_nodes: &[Request], elsewhere: &[(usize, RunsAt)]) -> Vec<Part> {
        if elsewhere.is_empty() {
            return Vec::new();
        }
        let own_addr = self.exec.own().map(|own| own.addr().to_string());
        let nodes = self.admin_nodes(crate::command::AdminKind::EveryNode);
        let others = nodes.into_iter().filter(|(addr, _)| Some(addr) != own_addr.as_ref());
        others
            .flat_map(|(addr, replica)| {
                let commands = elsewhere.iter().filter(move |(_, runs)| !replica || *runs == RunsAt::EveryNode);
                commands.filter_map(|(at, _)| to_nodes.get(*at)).map(move |request| {
                    let mut part =
                        Part::new(request.bytes().clone(), Target::Node { addr: addr.clone(), replica }, true);
                    part.follow_redirects = false;
                    part
                })
            })
            .collect()
    }

    /// UNWATCH (or DISCARD, which unwatches too), answered `+OK` by the node or the proxy.
    fn unwatch(&mut self, meta: Meta) {
        if self.forget_watch().is_some() && self.exec.own().is_some() {
            let part = Part::new(encode_command(&[b"UNWATCH"]), Target::Owned, false);
            self.send_single(part, meta);
        } else {
            self.pipeline.push_ready(reply::ok(), meta);
        }
    }

    /// Forgets the watched keys on the node without a reply to the client: nobody waits for it,
    /// since its failure means the connection, and its WATCH, are gone anyway (a reply waited for
    /// would have the connection's loss end a newer WATCH). It goes out after the WATCH it ends,
    /// also one sent again after a retry ([`Session::send_on_own`]).
    fn send_unwatch(&mut self) {
        let unwatch =
            crate::upstream::UpstreamRequest::unanswered(encode_command(&[b"UNWATCH"]), crate::upstream::PUSH);
        self.send_on_own(unwatch, crate::executor::OwnCommand::Unwatch);
    }
}

/// The commands of `tx`, each with its place in EXEC's reply, in order: those the proxy answers
/// itself at the places they took, those that go to its node at the others.
fn places_in_exec(tx: &Transaction) -> impl Iterator<Item = (usize, &Request)> {
    let local = tx.local.iter().map(|(place, request)| (*place as usize, request));
    crate::merge::interleave(local, tx.queued.iter()).enumerate()
}

/// Where `tx` runs: its keys' slot, or the watched keys'; a keyless one on the pub/sub home when
/// it publishes (so that PUBLISH counts the subscribers a node would), else on whichever master
/// the own connection reaches.
fn transaction_slot(shared: &crate::shared::Shared, tx: &Transaction, watched: Option<Slot>) -> Option<Slot> {
    let publishes = || {
        let specs = tx.queued.iter().filter_map(|request| shared.table.lookup(request));
        specs.into_iter().any(router::answered_at_pubsub_home)
    };
    tx.slot.or(watched).or_else(|| publishes().then_some(router::PUBSUB_HOME_SLOT))
}
