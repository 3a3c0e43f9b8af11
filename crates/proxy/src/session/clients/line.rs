//! The `CLIENT LIST` / `CLIENT INFO` line: Redis' fields, in Redis' order, for the version of the
//! nodes behind the proxy (7.0's, and 7.4's `watch`; Valkey 8's `watch` and traffic counters, and
//! 8.1's `capa`), always with Redis 7.2's `lib-name` and `lib-ver`: the proxy takes `CLIENT
//! SETINFO` whatever the nodes' version (client libraries send it when they connect), so the line
//! shows what was set.
//!
//! Redis reads a client's buffers from its client struct when it lists it. A session owns its
//! buffers, so it publishes what the line shows of them at moments it passes anyway: its buffers
//! (and the output waiting for the socket, if any) each time it waits, its subscriptions after
//! each frame of a subscription connection, its transaction when a command is queued or the
//! transaction ends.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};

use super::{BCAST, BROKEN_REDIRECT, ClientEntry, TRACKING};
use crate::command::CommandTable;
use crate::session::local::ClientModes;

/// Redis' reply buffer and the blocks of its reply list are this size (`PROTO_REPLY_CHUNK_BYTES`).
const REPLY_BLOCK: u64 = 16 * 1024;

/// The client's connection as the line names it: `addr`, `laddr` (the proxy's address it came in
/// on) and `fd`.
#[derive(Debug, Clone, Copy)]
pub struct ClientSocket {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// The socket's descriptor; -1 when there is none (as Redis shows for its fake clients).
    pub fd: i32,
}

impl ClientSocket {
    /// A client whose local address and descriptor are not known (unit tests).
    pub fn peer_only(peer: SocketAddr) -> ClientSocket {
        ClientSocket { peer, local: SocketAddr::from(([0, 0, 0, 0], 0)), fd: -1 }
    }
}

/// What a session published of its state for other clients' `CLIENT LIST`.
#[derive(Debug)]
pub(super) struct Published {
    /// Bytes read and not parsed yet (`qbuf`) and the read buffer's spare room (`qbuf-free`),
    /// after the last read: high and low 32 bits.
    input: AtomicU64,
    /// The write buffer's capacity (`rbs`) and the largest batch of replies it held (`rbp`):
    /// high and low 32 bits.
    reply_buffer: AtomicU64,
    /// The client has a query buffer of its own (see [`LineFormat::shared_query_buffer`]).
    private_query_buffer: AtomicBool,
    /// Reply bytes waiting for the socket when the session last stopped.
    output: AtomicU64,
    /// A write waits for the socket (`events=rw`).
    writing: AtomicBool,
    /// Channels, patterns and shard channels subscribed.
    sub: AtomicU32,
    psub: AtomicU32,
    ssub: AtomicU32,
    /// Commands queued in MULTI (-1: no transaction) and their arguments' bytes.
    multi: AtomicI64,
    multi_mem: AtomicU64,
    /// The client has entered MULTI once, and its transaction has a refused command (see
    /// [`LineFormat::transaction_kept`]).
    multi_used: AtomicBool,
    multi_refused: AtomicBool,
    /// Valkey's `tot-net-in`, `tot-net-out` and `tot-cmds` ([`Traffic`]).
    net_in: AtomicU64,
    net_out: AtomicU64,
    commands_run: AtomicU64,
}

/// What a client sent and received: its disconnect log line, and Valkey 8's `tot-net-in`,
/// `tot-net-out` and `tot-cmds`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Traffic {
    /// Requests read (the log line's count).
    pub commands: u64,
    /// Commands run, counted as Valkey's `commands_processed`: not those refused before they run
    /// (unknown, arity, login, permissions, a wrong slot), nor those queued by MULTI until EXEC
    /// runs them; a blocking command once it returns.
    pub commands_run: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Default for Published {
    fn default() -> Published {
        Published {
            input: AtomicU64::new(0),
            reply_buffer: AtomicU64::new(0),
            private_query_buffer: AtomicBool::new(false),
            output: AtomicU64::new(0),
            writing: AtomicBool::new(false),
            sub: AtomicU32::new(0),
            psub: AtomicU32::new(0),
            ssub: AtomicU32::new(0),
            multi: AtomicI64::new(-1),
            multi_mem: AtomicU64::new(0),
            multi_used: AtomicBool::new(false),
            multi_refused: AtomicBool::new(false),
            net_in: AtomicU64::new(0),
            net_out: AtomicU64::new(0),
            commands_run: AtomicU64::new(0),
        }
    }
}

fn pair(high: usize, low: usize) -> u64 {
    (high.min(u32::MAX as usize) as u64) << 32 | low.min(u32::MAX as usize) as u64
}

fn unpair(both: u64) -> (u64, u64) {
    (both >> 32, both & u64::from(u32::MAX))
}

impl ClientEntry {
    /// What is left unparsed, the read buffer's room, and the write buffer's size and peak.
    #[inline]
    pub fn publish_buffers(
        &self,
        (unparsed, spare, private): (usize, usize, bool),
        reply_capacity: usize,
        reply_peak: usize,
    ) {
        self.published.input.store(pair(unparsed, spare), Ordering::Relaxed);
        self.published.private_query_buffer.store(private, Ordering::Relaxed);
        self.published.reply_buffer.store(pair(reply_capacity, reply_peak), Ordering::Relaxed);
    }

    /// The client's traffic so far.
    #[inline]
    pub fn publish_traffic(&self, traffic: &Traffic) {
        self.published.net_in.store(traffic.bytes_in, Ordering::Relaxed);
        self.published.net_out.store(traffic.bytes_out, Ordering::Relaxed);
        self.published.commands_run.store(traffic.commands_run, Ordering::Relaxed);
    }

    /// `waiting` reply bytes wait for the socket (0: everything is written).
    pub fn publish_output(&self, waiting: usize) {
        self.published.output.store(waiting as u64, Ordering::Relaxed);
        self.published.writing.store(waiting > 0, Ordering::Relaxed);
    }

    /// Whether a backlog was published, which the session must clear once it is written.
    #[inline]
    pub fn output_published(&self) -> bool {
        self.published.writing.load(Ordering::Relaxed)
    }

    /// The client's subscriptions: channels, patterns, shard channels.
    pub fn publish_subscriptions(&self, sub: usize, psub: usize, ssub: usize) {
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        self.published.sub.store(count(sub), Ordering::Relaxed);
        self.published.psub.store(count(psub), Ordering::Relaxed);
        self.published.ssub.store(count(ssub), Ordering::Relaxed);
    }

    /// The transaction being queued: commands and their memory (Redis counts each command's
    /// argument bytes and a pointer per argument); `None` outside MULTI. `refused`: a queued
    /// command was refused (the transaction will abort).
    pub fn publish_multi(&self, queued: Option<(usize, u64)>, refused: bool) {
        let (count, memory) = queued.map_or((-1, 0), |(count, memory)| (count as i64, memory));
        self.published.multi.store(count, Ordering::Relaxed);
        self.published.multi_mem.store(memory, Ordering::Relaxed);
        if queued.is_some() {
            self.published.multi_used.store(true, Ordering::Relaxed);
        }
        self.published.multi_refused.store(refused && queued.is_some(), Ordering::Relaxed);
    }

    /// CLIENT LIST's `flags=`, in Redis' order of the flags a proxy client can have.
    fn flags(&self, modes: ClientModes) -> String {
        let tracking = self.tracking_flags.load(Ordering::Relaxed);
        let mut flags = String::new();
        let set = [
            (self.is_subscribed(), 'P'),
            (self.published.multi.load(Ordering::Relaxed) >= 0, 'x'),
            (self.blocked.load(Ordering::Relaxed) || self.is_postponed(), 'b'),
            (tracking & TRACKING != 0, 't'),
            (tracking & BROKEN_REDIRECT != 0, 'R'),
            (tracking & BCAST != 0, 'B'),
            (modes.readonly, 'r'),
            (modes.no_evict, 'e'),
            (modes.no_touch, 'T'),
        ];
        flags.extend(set.iter().filter(|(on, _)| *on).map(|(_, flag)| *flag));
        if flags.is_empty() {
            flags.push('N');
        }
        flags
    }

    /// The client's line. `asking` is the request being run when this is the client asking: as
    /// on Redis, its own query buffer then holds that request and `argv-mem` counts its
    /// arguments.
    pub(super) fn line(&self, now_ms: u64, names: &CommandTable, format: LineFormat, asking: Option<Asking>) -> String {
        let d = self.description.lock().map(|d| d.clone()).unwrap_or_default();
        let p = &self.published;
        let asking = asking.filter(|a| a.id == self.id);
        let idle = now_ms.saturating_sub(self.last_active_ms.load(Ordering::Relaxed)) / 1000;
        let (unparsed, qbuf_free) = unpair(p.input.load(Ordering::Relaxed));
        // Redis' reply buffer holds at most one block, the rest goes to its reply list: the
        // write buffer is shown so, its first block as the buffer (`rbs`, `rbp`, `obl`), the rest
        // as the list's blocks (`oll`) and bytes (`omem`).
        let (capacity, peak) = unpair(p.reply_buffer.load(Ordering::Relaxed));
        let (rbs, rbp) = (capacity.min(REPLY_BLOCK), peak.min(REPLY_BLOCK));
        let argv_mem = asking.map_or(0, |a| a.argv_mem);
        // The asking client's query buffer holds the read of the request being run (what it
        // published when it last waited may be that request's first part).
        let qbuf = asking.map_or(unparsed, |a| a.query_len);
        let private = asking.map_or(p.private_query_buffer.load(Ordering::Relaxed), |a| a.private_query_buffer);
        let (qbuf, qbuf_free) = match format.shared_query_buffer && !private {
            true => (0, 0),
            false => (qbuf, qbuf_free),
        };
        let (mut multi, mut multi_mem) = (p.multi.load(Ordering::Relaxed), p.multi_mem.load(Ordering::Relaxed));
        if format.transaction_kept {
            if multi < 0 && p.multi_used.load(Ordering::Relaxed) {
                multi = 0;
            }
            if p.multi_refused.load(Ordering::Relaxed) {
                (multi, multi_mem) = (0, 0);
            }
        }
        let waiting = p.output.load(Ordering::Relaxed);
        let obl = waiting.min(REPLY_BLOCK);
        let omem = waiting - obl;
        let oll = omem.div_ceil(REPLY_BLOCK);
        let fixed = std::mem::size_of::<crate::session::Session>() as u64;
        let tot_mem = fixed + qbuf + qbuf_free + capacity.max(waiting) + argv_mem + multi_mem;
        // Redis' `lastcmd->fullname`: `client|info`, not the metrics label.
        let cmd = names.name_at(self.last_command.load(Ordering::Relaxed)).unwrap_or("NULL");
        let mut line = format!(
            "id={} addr={} laddr={} fd={} name={} age={} idle={idle} flags={}",
            self.id,
            self.socket.peer,
            self.socket.local,
            self.socket.fd,
            d.name,
            self.connected.elapsed().as_secs(),
            self.flags(d.modes),
        );
        if format.capa {
            line.push_str(if d.modes.capa_redirect { " capa=r" } else { " capa=" });
        }
        let _ = write!(
            line,
            " db=0 sub={} psub={} ssub={} multi={}",
            p.sub.load(Ordering::Relaxed),
            p.psub.load(Ordering::Relaxed),
            p.ssub.load(Ordering::Relaxed),
            multi,
        );
        if format.watch {
            let _ = write!(line, " watch={}", self.watched_keys.load(Ordering::Relaxed));
        }
        let events = if p.writing.load(Ordering::Relaxed) { "rw" } else { "r" };
        let _ = write!(
            line,
            " qbuf={qbuf} qbuf-free={qbuf_free} argv-mem={argv_mem} multi-mem={multi_mem} rbs={rbs} rbp={rbp} \
             obl={obl} oll={oll} omem={omem} tot-mem={tot_mem} events={events} cmd={cmd} user={} redir={} resp={}",
            d.user,
            self.redirect.load(Ordering::Relaxed),
            d.resp,
        );
        let _ = write!(line, " lib-name={} lib-ver={}", d.lib_name, d.lib_ver);
        if format.traffic {
            // The asking client's own counts are the session's now; the others' as they last
            // published them (when their session waited).
            let (net_in, net_out, commands) = match asking {
                Some(a) => (a.traffic.bytes_in, a.traffic.bytes_out, a.traffic.commands_run),
                None => (
                    p.net_in.load(Ordering::Relaxed),
                    p.net_out.load(Ordering::Relaxed),
                    p.commands_run.load(Ordering::Relaxed),
                ),
            };
            let _ = write!(line, " tot-net-in={net_in} tot-net-out={net_out} tot-cmds={commands}");
        }
        line.push('\n');
        line
    }
}

/// The fields of the line that depend on the nodes' version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineFormat {
    /// `watch` (Redis 7.4 and later, Valkey 8).
    pub watch: bool,
    /// `capa` (Valkey 8.1 and later).
    pub capa: bool,
    /// `tot-net-in`, `tot-net-out`, `tot-cmds` (Valkey 8).
    pub traffic: bool,
    /// Valkey 8.1 keeps a client's transaction state once it entered MULTI (`multi=0` outside a
    /// transaction afterwards, -1 only before) and frees the queued commands when one is refused
    /// (`multi=0`, `multi-mem=0` until the transaction ends); Redis counts what was queued before.
    pub transaction_kept: bool,
    /// A query buffer shared by the server's clients (Valkey 8): a client gets one of its own only
    /// after a read that brought more than one request or part of one, and keeps it until it was
    /// idle for 2 s with nothing in it (the server's cron frees it); without one, `qbuf` and
    /// `qbuf-free` are 0.
    pub shared_query_buffer: bool,
}

impl LineFormat {
    /// The line of a node of `version` (`redis_version`, `major.minor.patch`) and, for Valkey,
    /// its own version (Valkey 8 reports `redis_version:7.2.4`).
    pub fn of_version(version: &str, valkey: Option<&crate::Valkey>) -> LineFormat {
        let valkey_at_least = |major, minor| valkey.is_some_and(|v| v.at_least(major, minor));
        LineFormat {
            watch: crate::version_at_least(version, 7, 4) || valkey_at_least(8, 0),
            capa: valkey_at_least(8, 1),
            traffic: valkey_at_least(8, 0),
            transaction_kept: valkey_at_least(8, 1),
            shared_query_buffer: valkey_at_least(8, 0),
        }
    }
}

/// The request being run by the client asking for the list.
#[derive(Debug, Clone, Copy)]
pub struct Asking {
    pub id: u64,
    /// The client's query buffer while it runs: the bytes of the read that brought it (a node
    /// keeps them until every request of the read ran), at least the request's own.
    pub query_len: u64,
    /// Its arguments' bytes.
    pub argv_mem: u64,
    /// The asking client's traffic, up to this request (counted as run once it ran).
    pub traffic: Traffic,
    /// Whether the client has a query buffer of its own (see [`LineFormat::shared_query_buffer`]).
    pub private_query_buffer: bool,
}
