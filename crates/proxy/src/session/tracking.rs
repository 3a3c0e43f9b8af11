//! A client's side of client-side caching: `CLIENT TRACKING`, `CACHING`, `GETREDIR` and
//! `TRACKINGINFO` with Redis' replies, the keys its reads register with the [`Hub`], and the
//! invalidation messages it is sent.
//!
//! A client that does not track has no [`Tracking`] (`Session::tracking` is `None`): its requests
//! pay one `is_some()` check and nothing else.
//!
//! Messages are written *after* the replies of every request read before they arrived (the
//! pipeline's trailers): an invalidation never precedes the reply of a read still in flight when
//! it came, and never lands inside a reply, as with Redis, which sends a command's invalidations
//! after its reply.
//!
//! [`Hub`]: crate::tracking::Hub

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::Session;
use super::clients::{BCAST, BROKEN_REDIRECT, TRACKING};
use super::pipeline::Meta;
use crate::command::{CommandFlags, CommandSpec, Handling, TransactionStep, parse_integer};
use crate::error::ProxyError;
use crate::resp::Request;
use crate::resp::reply::{self, Protocol, put_bulk, put_header};
use crate::tracking::{Invalidation, TrackingEvent};

/// More messages than this waiting behind replies collapse into one flush.
const MAX_TRAILERS: usize = 4096;

/// A tracking client's settings and bookkeeping.
#[derive(Debug, Default)]
pub(super) struct Tracking {
    /// Client id messages go to; 0: the client itself.
    redirect: u64,
    bcast: bool,
    /// BCAST prefixes; they accumulate over `ON` calls, as in Redis.
    prefixes: BTreeSet<Bytes>,
    optin: bool,
    optout: bool,
    noloop: bool,
    /// `CLIENT CACHING yes|no` for the next command: one flag, as Redis' `CLIENT_TRACKING_CACHING`
    /// — YES under OPTIN, NO under OPTOUT; it outlives CLIENT commands, TRACKING ON included.
    caching: bool,
    broken_redirect: bool,
    /// A read was tracked since the last flush was sent: a flush now means something.
    read_since_flush: bool,
    /// Tracked reads in flight, by request sequence number, with their keys: invalidated after
    /// their reply when a part went to a master whose stream is not confirmed.
    reads: VecDeque<(u64, Arc<[Bytes]>)>,
    /// Keys of reads queued in MULTI, registered when EXEC runs them.
    queued: Vec<Bytes>,
}

impl Tracking {
    /// What Redis' `resetClient` does to the caching flag after every command, run or refused: it
    /// lasts for one command, or a whole transaction (`in_multi`: one is open once `name` is
    /// done), and CLIENT commands leave it alone.
    fn after_command(&mut self, name: &[u8], in_multi: bool) {
        if !in_multi && !name.eq_ignore_ascii_case(b"client") {
            self.caching = false;
        }
    }
}

/// `CLIENT TRACKING`'s options, as parsed.
#[derive(Debug, Default, PartialEq, Eq)]
struct Options {
    redirect: Option<u64>,
    bcast: bool,
    optin: bool,
    optout: bool,
    noloop: bool,
    prefixes: Vec<Bytes>,
}

fn error(text: &'static str) -> ProxyError {
    ProxyError::command(text)
}

impl Session {
    /// `CLIENT TRACKING | CACHING | GETREDIR | TRACKINGINFO`.
    pub(super) fn client_tracking(&mut self, request: &Request, meta: Meta) {
        let sub = request.arg(1).to_ascii_lowercase();
        let answer = match sub.as_slice() {
            b"tracking" => self.tracking_command(request),
            b"caching" => self.caching_command(request.arg(2)),
            b"getredir" => Ok(reply::integer(self.tracking.as_ref().map_or(-1, |t| t.redirect as i64))),
            _ => Ok(tracking_info(self.tracking.as_deref(), self.state.protocol)),
        };
        match answer {
            Ok(reply) => self.pipeline.push_ready(reply, meta),
            Err(error) => self.push_error(error, meta),
        }
    }

    /// `CLIENT TRACKING ON|OFF [options]`, checked in Redis' order with Redis' texts.
    fn tracking_command(&mut self, request: &Request) -> Result<Bytes, ProxyError> {
        let options = parse_options(request, |id| self.shared.clients.entry(id).is_some())?;
        match request.arg(2).to_ascii_lowercase().as_slice() {
            b"on" => {
                check_options(self.tracking.as_deref(), &options)?;
                self.start_tracking(options);
            }
            b"off" => self.stop_tracking(),
            _ => return Err(error("ERR syntax error")),
        }
        Ok(reply::ok())
    }

    fn start_tracking(&mut self, options: Options) {
        let tracking = self.tracking.get_or_insert_with(Box::default);
        let mut prefixes = std::mem::take(&mut tracking.prefixes);
        if options.bcast {
            if options.prefixes.is_empty() {
                prefixes.insert(Bytes::new());
            }
            prefixes.extend(options.prefixes);
        }
        **tracking = Tracking {
            redirect: options.redirect.unwrap_or(0),
            bcast: options.bcast,
            prefixes,
            optin: options.optin,
            optout: options.optout,
            noloop: options.noloop,
            read_since_flush: tracking.read_since_flush,
            reads: std::mem::take(&mut tracking.reads),
            caching: tracking.caching,
            ..Tracking::default()
        };
        let bcast_prefixes = tracking.bcast.then(|| tracking.prefixes.iter().cloned().collect());
        self.shared.tracking.set_tracker(&self.entry, bcast_prefixes);
        self.show_tracking();
    }

    /// Tracking off (OFF, RESET, disconnect): nothing of the client stays in the hub.
    pub(super) fn stop_tracking(&mut self) {
        if self.tracking.take().is_some() {
            self.shared.tracking.remove_tracker(self.state.id);
            self.show_tracking();
        }
    }

    /// What CLIENT LIST shows of the client's tracking.
    fn show_tracking(&self) {
        let Some(t) = &self.tracking else {
            return self.entry.set_tracking(0, -1);
        };
        let flags = TRACKING | if t.broken_redirect { BROKEN_REDIRECT } else { 0 } | if t.bcast { BCAST } else { 0 };
        self.entry.set_tracking(flags, t.redirect as i64);
    }

    /// `CLIENT CACHING YES|NO`.
    fn caching_command(&mut self, arg: &[u8]) -> Result<Bytes, ProxyError> {
        // Redis checks only that tracking is on here; the mode comes with YES or NO.
        let Some(t) = self.tracking.as_mut() else {
            return Err(error(
                "ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled",
            ));
        };
        match arg.to_ascii_lowercase().as_slice() {
            b"yes" if t.optin => t.caching = true,
            b"yes" => {
                return Err(error("ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode."));
            }
            b"no" if t.optout => t.caching = true,
            b"no" => return Err(error("ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.")),
            _ => return Err(error("ERR syntax error")),
        }
        Ok(reply::ok())
    }

    /// A request refused before it ran (unknown, wrong arity, no permission) ends a `CLIENT
    /// CACHING` as one that ran does ([`Tracking::after_command`]); the transaction, if any, stays
    /// open.
    pub(super) fn on_refused_request(&mut self, name: &[u8]) {
        let in_multi = self.tx.is_some();
        if let Some(t) = self.tracking.as_deref_mut() {
            t.after_command(name, in_multi);
        }
    }

    /// Called for every admitted request of a tracking client, before it is routed: a read's keys
    /// are registered (before it is sent, so no change after it runs can be missed); inside MULTI
    /// they wait for EXEC. Redis tracks read-only commands and what scripts read (here: a script's
    /// declared keys, a superset).
    pub(super) fn on_tracked_request(&mut self, spec: &CommandSpec, request: &Request) {
        let Some(t) = self.tracking.as_deref_mut() else { return };
        let in_multi = self.tx.is_some();
        let name = request.arg(0);
        let step = spec.handling.transaction_step();
        if !in_multi && step == Some(TransactionStep::Exec) {
            // EXEC without MULTI: nothing queued.
            t.queued.clear();
        }
        let script = matches!(spec.handling, Handling::Script { .. });
        let read =
            (spec.flags.contains(CommandFlags::READONLY) && !spec.flags.contains(CommandFlags::PUBSUB)) || script;
        // OPTIN tracks only after CACHING yes, OPTOUT all but after CACHING no.
        let skipped = (t.optin && !t.caching) || (t.optout && t.caching);
        let exec = in_multi && step == Some(TransactionStep::Exec);
        let ends = exec || step == Some(TransactionStep::Discard);
        t.after_command(name, (in_multi && !ends) || step == Some(TransactionStep::Multi));
        if exec && !t.queued.is_empty() {
            let keys: Arc<[Bytes]> = std::mem::take(&mut t.queued).into();
            self.track_keys(keys);
            return;
        }
        if in_multi && step == Some(TransactionStep::Discard) {
            t.queued.clear();
        }
        if !read || skipped || spec.key_positions(request, &mut self.keys).is_err() {
            return;
        }
        let keys: Vec<Bytes> = self.keys.iter().map(|&i| Bytes::copy_from_slice(request.arg(i))).collect();
        match in_multi {
            true => t.queued.extend(keys),
            false => self.track_keys(keys.into()),
        }
    }

    /// Registers the keys of the request about to be routed (its sequence number is the
    /// pipeline's next).
    fn track_keys(&mut self, keys: Arc<[Bytes]>) {
        let Some(t) = self.tracking.as_deref_mut() else { return };
        t.read_since_flush = true;
        if !t.bcast {
            self.shared.tracking.register(self.state.id, &keys);
        }
        let released = self.pipeline.next_seq() - self.pipeline.len() as u64;
        while t.reads.front().is_some_and(|(seq, _)| *seq < released) {
            t.reads.pop_front();
        }
        t.reads.push_back((self.pipeline.next_seq(), keys));
    }

    /// Whether request `seq` is a tracked read (its parts must go to masters, and are watched
    /// for masters without a confirmed stream).
    pub(super) fn is_tracked_read(&self, seq: u64) -> bool {
        self.tracking.as_ref().is_some_and(|t| t.reads.binary_search_by_key(&seq, |(s, _)| *s).is_ok())
    }

    /// A part of tracked read `seq` went to a master whose stream was not confirmed: the node
    /// may change the keys unseen, so the client is told to drop them right after the reply.
    pub(super) fn invalidate_blind_read(&mut self, seq: u64) {
        let Some(t) = self.tracking.as_deref() else { return };
        let Ok(index) = t.reads.binary_search_by_key(&seq, |(s, _)| *s) else { return };
        let keys = t.reads[index].1.to_vec();
        self.deliver_invalidation(Invalidation::Keys(keys));
    }

    /// Takes the messages the hub and redirecting clients queued for this client.
    pub(super) fn on_tracking_events(&mut self) {
        for event in self.entry.take_inbox() {
            match event {
                TrackingEvent::Mine(invalidation, _) => self.deliver_invalidation(invalidation),
                TrackingEvent::Redirected(invalidation) => self.write_invalidation(&invalidation),
            }
        }
    }

    /// An invalidation for this tracking client: written to it, or sent to the client it
    /// redirects to (a gone one makes the redirect broken, as in Redis).
    fn deliver_invalidation(&mut self, invalidation: Invalidation) {
        let Some(t) = self.tracking.as_deref_mut() else { return };
        if invalidation == Invalidation::Flush {
            if !t.read_since_flush {
                return;
            }
            t.read_since_flush = false;
        }
        if t.redirect == 0 {
            // Without a redirect a RESP2 client is sent nothing, subscribed or not (as Redis).
            if self.state.protocol == Protocol::Resp3 {
                self.write_invalidation(&invalidation);
            }
            return;
        }
        let redirect = t.redirect;
        match self.shared.clients.entry(redirect) {
            Some(target) if redirect == self.state.id => drop(target),
            Some(target) => return target.deliver(TrackingEvent::Redirected(invalidation)),
            None => {
                t.broken_redirect = true;
                self.show_tracking();
                if self.state.protocol == Protocol::Resp3 {
                    let mut frame = BytesMut::new();
                    put_header(&mut frame, b'>', 2);
                    put_bulk(&mut frame, b"tracking-redir-broken");
                    reply::put_integer(&mut frame, redirect as i64);
                    self.write_trailer(frame.freeze());
                }
                return;
            }
        }
        self.write_invalidation(&invalidation);
    }

    /// Writes `invalidation` as this client's protocol and state want it: a RESP3 push, a
    /// `__redis__:invalidate` message to a RESP2 client in subscribed mode, or nothing (a RESP2
    /// client not subscribed gets nothing, as from Redis).
    fn write_invalidation(&mut self, invalidation: &Invalidation) {
        let protocol = self.state.protocol;
        if protocol == Protocol::Resp2 && self.subs.is_none() {
            return;
        }
        for frame in frames(invalidation, protocol) {
            self.write_trailer(frame);
        }
    }

    /// Queues `frame` behind every reply still to come for requests read so far.
    fn write_trailer(&mut self, frame: Bytes) {
        if self.pipeline.is_empty() {
            return self.direct.extend_from_slice(&frame);
        }
        if self.pipeline.trailer_count() >= MAX_TRAILERS {
            // Too much waiting behind slow replies: one flush says it all.
            self.pipeline.clear_trailers();
            let flush = frames(&Invalidation::Flush, self.state.protocol).concat();
            return self.pipeline.push_trailer(Bytes::from(flush));
        }
        self.pipeline.push_trailer(frame);
    }
}

/// The frames Redis sends for `invalidation` in `protocol`: one per key in the default mode.
fn frames(invalidation: &Invalidation, protocol: Protocol) -> Vec<Bytes> {
    let one = |keys: Option<&[Bytes]>| {
        let mut out = BytesMut::new();
        match protocol {
            Protocol::Resp3 => {
                put_header(&mut out, b'>', 2);
                put_bulk(&mut out, b"invalidate");
            }
            Protocol::Resp2 => {
                put_header(&mut out, b'*', 3);
                put_bulk(&mut out, b"message");
                put_bulk(&mut out, b"__redis__:invalidate");
            }
        }
        match keys {
            Some(keys) => {
                put_header(&mut out, b'*', keys.len());
                keys.iter().for_each(|key| put_bulk(&mut out, key));
            }
            None => out.extend_from_slice(&reply::null(protocol)),
        }
        out.freeze()
    };
    match invalidation {
        Invalidation::Keys(keys) => keys.iter().map(|key| one(Some(std::slice::from_ref(key)))).collect(),
        Invalidation::Prefixed(keys) => vec![one(Some(keys))],
        Invalidation::Flush => vec![one(None)],
    }
}

/// `CLIENT TRACKING`'s options after ON|OFF, in Redis' order of checks (`exists`: whether a
/// client id is connected).
fn parse_options(request: &Request, exists: impl Fn(u64) -> bool) -> Result<Options, ProxyError> {
    let mut options = Options::default();
    let mut i = 3;
    while i < request.argc() {
        let more = i + 1 < request.argc();
        match request.arg(i).to_ascii_lowercase().as_slice() {
            b"redirect" if more => {
                i += 1;
                if options.redirect.is_some() {
                    return Err(error("ERR A client can only redirect to a single other client"));
                }
                // Redis' strict parse: `+5`, `05` and `-0` are not integers.
                let id = parse_integer(request.arg(i)).ok_or(error("ERR value is not an integer or out of range"))?;
                if id <= 0 || !exists(id as u64) {
                    return Err(error("ERR The client ID you want redirect to does not exist"));
                }
                options.redirect = Some(id as u64);
            }
            b"bcast" => options.bcast = true,
            b"optin" => options.optin = true,
            b"optout" => options.optout = true,
            b"noloop" => options.noloop = true,
            b"prefix" if more => {
                i += 1;
                options.prefixes.push(Bytes::copy_from_slice(request.arg(i)));
            }
            _ => return Err(error("ERR syntax error")),
        }
        i += 1;
    }
    Ok(options)
}

/// The checks of `CLIENT TRACKING ON`, in Redis' order.
fn check_options(current: Option<&Tracking>, options: &Options) -> Result<(), ProxyError> {
    if !options.bcast && !options.prefixes.is_empty() {
        return Err(error("ERR PREFIX option requires BCAST mode to be enabled"));
    }
    if current.is_some_and(|t| t.bcast != options.bcast) {
        return Err(error(
            "ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode.",
        ));
    }
    if options.bcast && (options.optin || options.optout) {
        return Err(error("ERR OPTIN and OPTOUT are not compatible with BCAST"));
    }
    if options.optin && options.optout {
        return Err(error("ERR You can't specify both OPTIN mode and OPTOUT mode"));
    }
    if current.is_some_and(|t| (options.optin && t.optout) || (options.optout && t.optin)) {
        return Err(error(
            "ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode.",
        ));
    }
    if options.bcast {
        check_prefixes(current.map(|t| &t.prefixes), &options.prefixes)?;
    }
    Ok(())
}

/// No two prefixes of a client may overlap (one a prefix of the other, equal ones included).
fn check_prefixes(existing: Option<&BTreeSet<Bytes>>, given: &[Bytes]) -> Result<(), ProxyError> {
    let overlap = |a: &[u8], b: &[u8]| a[..a.len().min(b.len())] == b[..a.len().min(b.len())];
    let show = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
    for (i, prefix) in given.iter().enumerate() {
        if let Some(old) = existing.into_iter().flatten().find(|old| overlap(old, prefix)) {
            return Err(ProxyError::command(format!(
                "ERR Prefix '{}' overlaps with an existing prefix '{}'. Prefixes for a single client must not overlap.",
                show(prefix),
                show(old)
            )));
        }
        if let Some(other) = given[i + 1..].iter().find(|other| overlap(prefix, other)) {
            return Err(ProxyError::command(format!(
                "ERR Prefix '{}' overlaps with another provided prefix '{}'. Prefixes for a single client must not overlap.",
                show(prefix),
                show(other)
            )));
        }
    }
    Ok(())
}

/// `CLIENT TRACKINGINFO`: `flags` (a set), `redirect`, `prefixes`, in Redis' order and shapes.
fn tracking_info(tracking: Option<&Tracking>, protocol: Protocol) -> Bytes {
    let mut flags: Vec<&[u8]> = Vec::new();
    match tracking {
        None => flags.push(b"off"),
        Some(t) => {
            flags.push(b"on");
            let set = [
                (t.bcast, &b"bcast"[..]),
                (t.optin, b"optin"),
                (t.optin && t.caching, b"caching-yes"),
                (t.optout, b"optout"),
                (t.optout && t.caching, b"caching-no"),
                (t.noloop, b"noloop"),
                (t.broken_redirect, b"broken_redirect"),
            ];
            flags.extend(set.iter().filter(|(on, _)| *on).map(|(_, name)| *name));
        }
    }
    let mut out = BytesMut::new();
    reply::put_map_header(&mut out, protocol, 3);
    put_bulk(&mut out, b"flags");
    put_header(&mut out, if protocol == Protocol::Resp3 { b'~' } else { b'*' }, flags.len());
    flags.iter().for_each(|flag| put_bulk(&mut out, flag));
    put_bulk(&mut out, b"redirect");
    reply::put_integer(&mut out, tracking.map_or(-1, |t| t.redirect as i64));
    put_bulk(&mut out, b"prefixes");
    let prefixes = tracking.map(|t| &t.prefixes);
    put_header(&mut out, b'*', prefixes.map_or(0, BTreeSet::len));
    prefixes.into_iter().flatten().for_each(|prefix| put_bulk(&mut out, prefix));
    out.freeze()
}

#[cfg(test)]
mod tests;
