//! Blocking commands (BLPOP, XREAD BLOCK …): on the client's own connection, so that a blocked
//! client never holds up others, with the client's later requests waiting as on Redis; CLIENT
//! UNBLOCK by another client is carried out on the node. WAIT and WAITAOF go where the client's
//! writes went, its pooled connection, in short waits (`executor/wait.rs`).

use super::Session;
use super::pipeline::Meta;
use crate::error::ProxyError;
use crate::executor::{Part, Target, WaitPlan};
use crate::resp::{Request, request::encode_command};
use crate::slot::Slot;
use bytes::Bytes;

/// How often a pending `CLIENT UNBLOCK` is sent again while the client stays blocked.
const UNBLOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

impl Session {
    /// `CLIENT UNBLOCK` of this client by another: the node unblocks the own connection's command
    /// (`CLIENT UNBLOCK <its id> TIMEOUT|ERROR`, sent on a pooled connection), so the reply is the
    /// node's own: a timeout's null or `-UNBLOCKED`. Nothing is lost: a command the node already
    /// answered is not unblocked.
    fn unblock_own(&mut self, how: super::clients::Unblock) {
        if self.end_wait(how) {
            return;
        }
        let Some((addr, id)) = self.exec.own().and_then(|own| Some((own.addr().to_string(), own.node_client_id()?)))
        else {
            return;
        };
        let how: &[u8] = match how {
            super::clients::Unblock::Timeout => b"TIMEOUT",
            super::clients::Unblock::Error => b"ERROR",
        };
        let id = id.to_string();
        let payload = encode_command(&[&b"CLIENT"[..], b"UNBLOCK", id.as_bytes(), how]);
        let request = crate::upstream::UpstreamRequest::unanswered(payload, crate::upstream::PUSH);
        self.shared.topology.upstreams().pool(&addr, false).send(self.state.id as usize, false, request);
    }

    /// Carries out a pending `CLIENT UNBLOCK` while the client is still blocked, and tries again
    /// every [`UNBLOCK_RETRY`]: the own connection may still be logging in, or its blocking
    /// command may not have reached the node, when the unblock is first sent. A block that ended
    /// clears it (see `serve`), so a later command is never unblocked by it.
    pub(super) fn retry_unblock(&mut self) {
        let Some((how, at)) = self.pending_unblock else { return };
        if !self.hold_reading {
            self.pending_unblock = None;
            return;
        }
        if at > std::time::Instant::now() {
            return;
        }
        self.unblock_own(how);
        self.pending_unblock = Some((how, std::time::Instant::now() + UNBLOCK_RETRY));
    }

    /// WAIT and WAITAOF count the replicas that acknowledged the client's writes, which went
    /// through its pooled connection to the node it last wrote to: asked there.
    pub(super) fn on_wait_replicas(&mut self, request: Request, meta: Meta) {
        let mut part = Part::new(request.bytes().clone(), Target::Slot(self.last_write_slot), true);
        part.waits_long = true;
        let planned = self.plan_short_waits(&request, &mut part);
        // As on a node, the client's later requests run only once it returns (a write sent
        // between two short waits would be applied before the WAIT's reply), and INFO,
        // CLIENT LIST and CLIENT UNBLOCK see it blocked, on no key.
        self.hold_reading = true;
        self.blocked = true;
        if planned {
            self.entry.block(Vec::new(), false, has_timeout(&request));
        }
        self.send_single(part, meta);
    }

    /// A blocking command (BLPOP, XREAD BLOCK …): on the client's own connection, so that a blocked
    /// client never holds up others; the client's later requests wait, as on Redis.
    pub(super) fn on_blocking(&mut self, request: Request, slot: Option<Slot>, meta: Meta) {
        let name = request.arg(0);
        // Outside WATCH and MULTI the own connection holds nothing of the client's: the executor
        // opens it at the slot's master and, through a failover, holds the command for the next
        // one. A watching client's WATCH stays where it is, as a node keeps it across a BLPOP:
        // a command for another master runs on an own connection of its own there, and the
        // WATCH's comes back when it returns (`serve.rs`, where the block ends).
        let stateless = self.watch_slot.is_none() && self.tx.is_none();
        if !stateless && self.own_elsewhere(slot) {
            self.exec.set_own_aside();
        }
        if !stateless && self.own_conn_for(slot).is_none() {
            self.exec.restore_own();
            self.push_error(ProxyError::SlotNotServed, meta);
            return;
        }
        // INFO clients (`blocked_clients`, `total_blocking_keys`, `clients_in_timeout_table`) and
        // CLIENT UNBLOCK see the client as blocked until the reply is in (see `serve`).
        // BLMOVE and BRPOPLPUSH wait on their source only, as Redis' `blockForKeys` is told.
        let waits_on = match name.eq_ignore_ascii_case(b"blmove") || name.eq_ignore_ascii_case(b"brpoplpush") {
            true => &self.keys[..self.keys.len().min(1)],
            false => &self.keys[..],
        };
        let keys = waits_on.iter().map(|&at| Bytes::copy_from_slice(request.arg(at))).collect();
        // A consumer group's reader is unblocked when its stream is deleted (Redis' `_on_nokey`).
        let on_nokey = name.eq_ignore_ascii_case(b"xreadgroup");
        self.entry.block(keys, on_nokey, has_timeout(&request));
        let mut part = Part::new(request.bytes().clone(), Target::Owned, true);
        // It waits as long as it was asked to: no command timeout. Everything else on the own
        // connection (a transaction on a node that stopped answering) is bounded as usual.
        part.blocks = true;
        part.rehome = stateless.then_some(slot);
        self.hold_reading = true;
        self.blocked = true;
        self.send_single(part, meta);
    }
}

impl Session {
    /// `CLIENT UNBLOCK` of a client in WAIT or WAITAOF, asked of the node in short waits: the one
    /// out is the last, its reply the count so far (`TIMEOUT`) or Redis' error (`ERROR`). Whether
    /// the client was in one.
    fn end_wait(&mut self, how: super::clients::Unblock) -> bool {
        let Some(seq) = self.pipeline.next_seq().checked_sub(1) else { return false };
        let Some(part) = self.pipeline.part_mut(seq, 0) else { return false };
        if !part.end_wait(matches!(how, super::clients::Unblock::Error)) {
            return false;
        }
        // Unblocked now, as on a node: INFO no longer counts it, another CLIENT UNBLOCK gets 0.
        self.entry.unblocked();
        true
    }

    /// A WAIT or WAITAOF is asked of the node in short waits, as the connection it goes to is
    /// shared (`executor/wait.rs`), each on the node its first went to: a promoted replica's
    /// connection never carried the client's writes, and would count acknowledgements of nothing.
    fn plan_short_waits(&self, request: &Request, part: &mut Part) -> bool {
        let now = std::time::Instant::now();
        let affinity = self.state.id as usize;
        let Some(addr) = crate::executor::peer::own_master(&self.shared.topology, self.last_write_slot, affinity, None)
        else {
            return false;
        };
        let Some(plan) = WaitPlan::of(request, now) else { return false };
        let Some(payload) = plan.next(now, crate::executor::wait::step(self.shared.command_timeout)) else {
            return false;
        };
        part.payload = payload;
        part.target = Target::Node { addr, replica: false };
        part.set_wait_plan(plan);
        true
    }
}

/// Whether a blocking command waits for a limited time (a timeout other than 0), which puts a
/// Redis client in the server's timeout table: BLMPOP and BZMPOP name it first, XREAD and
/// XREADGROUP after BLOCK, every other blocking command last.
fn has_timeout(request: &Request) -> bool {
    let name = request.arg(0).to_ascii_lowercase();
    let argc = request.argc();
    let timeout = match name.as_slice() {
        b"blmpop" | b"bzmpop" => request.arg(1),
        b"xread" | b"xreadgroup" => {
            let block = (1..argc).find(|&i| request.arg(i).eq_ignore_ascii_case(b"block"));
            match block.filter(|&i| i + 1 < argc) {
                Some(i) => request.arg(i + 1),
                None => return false,
            }
        }
        _ => request.arg(argc - 1),
    };
    std::str::from_utf8(timeout).ok().and_then(|t| t.parse::<f64>().ok()).is_some_and(|t| t > 0.0)
}
