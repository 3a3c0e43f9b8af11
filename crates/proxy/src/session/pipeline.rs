//! A client's requests in flight, in the order the client sent them.
//!
//! Replies from different nodes come back in any order; each carries the sequence number of its
//! request, and replies are released to the client only from the front, so the client reads them in
//! request order however the nodes interleave. Pure bookkeeping: no I/O.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use crate::clock::Tick;
use crate::command::Merge;
use crate::executor::{Part, Target, in_order, order_slot};
use crate::merge::KeyPlace;
use crate::metrics::Metrics;
use crate::upstream::StreamCredit;

pub use multi::OnMerged;
use multi::{Multi, complete_part};

use crate::writes::WriteBuffer;

#[derive(Debug)]
enum Entry {
    /// The reply is known.
    Ready(Bytes),
    /// The rest of a reply whose start was streamed to the client already (never an error).
    Streamed(Bytes),
    /// Waiting for the reply of a single part, which waits in [`Pipeline::singles`] at this
    /// index.
    Single(usize),
    /// Waiting for several parts whose replies are merged.
    Multi(Box<Multi>),
    /// Close the connection once every earlier reply is written (QUIT, protocol error).
    Close,
}

/// An entry with what its metrics need (`None` for close markers): one queue, so a request costs
/// one push and one pop, not two of each.
#[derive(Debug)]
struct Queued {
    entry: Entry,
    meta: Option<Meta>,
}

/// What a request's metrics need: its `command` label and when its last byte was read; and
/// what a resend of an earlier request must not pass ([`Reach`]).
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub label: usize,
    pub read_at: Tick,
    /// The reply is counted but not sent (`CLIENT REPLY OFF`/`SKIP`).
    pub dropped: bool,
    /// Set as the request enters the pipeline.
    pub reach: Reach,
}

impl Meta {
    pub fn new(label: usize, read_at: Tick, dropped: bool) -> Meta {
        Meta { label, read_at, dropped, reach: Reach::Node(None) }
    }
}

/// Which of the client's parts a request keeps its order with, as the executor keeps them
/// (`executor::order_slot`, `executor::in_order`): one that reached a node, those of its slot (or
/// all, `None`: a keyless, multi-part or own-connection request); one the proxy answered itself,
/// none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    Proxy,
    Node(Option<crate::slot::Slot>),
}

impl Reach {
    /// Whether a request of this reach keeps its order with a part for `slot` (`None`: any).
    fn meets(self, slot: Option<crate::slot::Slot>) -> bool {
        match self {
            Reach::Proxy => false,
            Reach::Node(of) => in_order(of, slot),
        }
    }
}

/// The client's pipeline: entries by sequence number, oldest first.
#[derive(Debug, Default)]
pub struct Pipeline {
    entries: VecDeque<Queued>,
    /// Sequence number of the front entry.
    base: u64,
    /// Frames written once the reply of the request with this sequence number is (client-side
    /// caching messages, which must follow the replies of requests read before they came).
    trailers: VecDeque<(u64, Bytes)>,
    /// The parts of single-part requests waiting for their reply, where [`Entry::Single`] finds
    /// them: a part is 120 bytes (~250 when this was measured), and kept here it is written once
    /// and dropped in place, where in `entries` it was copied on every push and release (~150
    /// instructions per request, bench/RESULTS.md). Slots are reused (`free`), so a part costs no allocation.
    singles: Vec<Option<Part>>,
    free: Vec<usize>,
    /// Credit for the pieces of streamed replies released into the write buffer, given back
    /// ([`Pipeline::give_back_credit`]) once it is written, so that a node connection reads no
    /// further ahead of a slow client than its window.
    credits: Vec<(Arc<StreamCredit>, usize)>,
    /// The newest request that may wait long at its node — a script or a blocking command, which
    /// no `command_timeout` bounds, or WAIT: replies released before it do not wait for the rest
    /// of their batch while it is out ([`Pipeline::waits_long`]).
    long_seq: Option<u64>,
}

impl Pipeline {
    /// Number of requests whose replies have not been released yet.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Gives back the memory of an empty pipeline's queues (an idle client's: see
    /// [`Clients::trim_idle`](super::clients::Clients::trim_idle)); the next request takes them
    /// again at their first size. A pipeline with anything in it keeps everything.
    pub fn give_back_idle_memory(&mut self) {
        let idle = self.trailers.is_empty() && self.credits.is_empty();
        if self.is_empty() && idle && self.singles.iter().all(Option::is_none) {
            *self = Pipeline { base: self.base, ..Pipeline::default() };
        }
    }

    /// The sequence number the next request gets.
    pub fn next_seq(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    /// The sequence number of the oldest request whose reply is not released yet.
    pub fn first_unreleased(&self) -> u64 {
        self.base
    }

    /// The sequence number of the newest request for the client's own connection whose reply is
    /// not final yet: some of its parts are out, or wait to be sent again.
    pub fn last_unanswered_on_own(&self) -> Option<u64> {
        let on_own = |part: &Part| part.target == Target::Owned;
        let index = self.entries.iter().rposition(|q| match &q.entry {
            Entry::Single(slot) => self.singles.get(*slot).and_then(Option::as_ref).is_some_and(on_own),
            Entry::Multi(multi) => multi.parts.iter().any(on_own),
            _ => false,
        })?;
        Some(self.base + index as u64)
    }

    /// Writes `frame` right after the reply of the last request appended so far (call only while
    /// the pipeline is not empty; otherwise the frame can go out at once).
    pub fn push_trailer(&mut self, frame: Bytes) {
        let after = self.next_seq().saturating_sub(1);
        self.trailers.push_back((after, frame));
    }

    pub fn trailer_count(&self) -> usize {
        self.trailers.len()
    }

    pub fn clear_trailers(&mut self) {
        self.trailers.clear();
    }

    /// Appends a request whose reply is already known.
    pub fn push_ready(&mut self, reply: Bytes, meta: Meta) {
        let meta = Meta { reach: Reach::Proxy, ..meta };
        self.entries.push_back(Queued { entry: Entry::Ready(reply), meta: Some(meta) });
    }

    /// Appends a marker after which the connection is closed.
    pub fn push_close(&mut self) {
        self.entries.push_back(Queued { entry: Entry::Close, meta: None });
    }

    /// Appends a single-part request; returns its sequence number and the part, where it now
    /// lies (to be sent without being looked up again).
    pub fn push_single(&mut self, part: Part, meta: Meta) -> (u64, &mut Part) {
        let seq = self.next_seq();
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                // Grown from one slot by doubling (a Vec's first push makes room for four): an
                // unpipelined client keeps one slot.
                if self.singles.len() == self.singles.capacity() {
                    self.singles.reserve_exact(self.singles.len().max(1));
                    self.free.reserve_exact(self.singles.capacity());
                }
                self.singles.push(None);
                self.singles.len() - 1
            }
        };
        let reach = Reach::Node(order_slot(&part));
        self.entries.push_back(Queued { entry: Entry::Single(slot), meta: Some(Meta { reach, ..meta }) });
        self.note_long(seq, &part);
        // A slot is freed once, when its part is done and dropped: a free one is empty.
        debug_assert!(self.singles[slot].is_none(), "slot {slot} reused while taken");
        (seq, self.singles[slot].insert(part))
    }

    /// Notes request `seq` as one that may wait long when `part` may ([`Pipeline::long_seq`]).
    #[inline]
    fn note_long(&mut self, seq: u64, part: &Part) {
        if part.script.is_some() || part.blocks || part.waits_long {
            self.long_seq = Some(seq);
        }
    }

    /// Whether a request that may wait long at its node (a script, a blocking command, WAIT) is
    /// still unreleased.
    pub fn waits_long(&self) -> bool {
        self.long_seq.is_some_and(|seq| seq >= self.base)
    }

    /// Appends a request of several parts merged with `merge`; returns its sequence number.
    pub fn push_multi(&mut self, parts: Vec<Part>, merge: Merge, places: Vec<KeyPlace>, meta: Meta) -> u64 {
        let seq = self.next_seq();
        for part in &parts {
            self.note_long(seq, part);
        }
        let entry = Entry::Multi(Box::new(Multi::new(parts, merge, places)));
        self.entries.push_back(Queued { entry, meta: Some(meta) });
        seq
    }

    /// Sets the text put before the merged bulk reply of request `seq` (see [`Entry::Multi`]).
    pub fn set_prefix(&mut self, seq: u64, text: Bytes) {
        if let Some(multi) = self.multi_mut(seq) {
            multi.prefix = Some(text);
        }
    }

    /// Has `then` run with the merged reply of request `seq` (see [`OnMerged`]).
    pub fn on_merged(&mut self, seq: u64, then: OnMerged) {
        if let Some(multi) = self.multi_mut(seq) {
            multi.on_merged = Some(then);
        }
    }

    /// Request `seq`, while it waits for several parts.
    fn multi_mut(&mut self, seq: u64) -> Option<&mut Multi> {
        let index = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        match &mut self.entries.get_mut(index)?.entry {
            Entry::Multi(multi) => Some(multi),
            _ => None,
        }
    }

    /// The payload of part `part` of request `seq` when the session answers it itself (a
    /// connection command queued in a transaction: the last parts of a [`Merge::Exec`]), while it
    /// waits for its reply.
    pub fn local_part(&self, seq: u64, part: u32) -> Option<Bytes> {
        let index = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        let Entry::Multi(multi) = &self.entries.get(index)?.entry else { return None };
        let Merge::Exec { local_places } = &multi.merge else { return None };
        let first_local = multi.parts.len().checked_sub(local_places.len())?;
        let p = multi.parts.get(part as usize).filter(|p| part as usize >= first_local && p.reply.is_none())?;
        Some(p.payload.clone())
    }

    /// Part `part` of request `seq` was lost with its connection in flight: it may be resent
    /// only if the client sent no later request that keeps order with it — that one may have run
    /// already (or run before the resend), and the resent read must not see it. Rare: out of
    /// line.
    #[inline(never)]
    pub fn on_lost(&mut self, seq: u64, part: u32) {
        let Some(slot) = self.part_mut(seq, part).map(|lost| order_slot(lost)) else {
            return;
        };
        // The part was found: `seq` is in the pipeline, at `seq - base`.
        let later = (seq - self.base) as usize + 1;
        if self.entries.iter().skip(later).any(|q| q.meta.is_some_and(|meta| meta.reach.meets(slot)))
            && let Some(lost) = self.part_mut(seq, part)
        {
            lost.resend_safe = false;
        }
    }

    /// The part `part` of request `seq`, while it still waits for its reply.
    pub fn part_mut(&mut self, seq: u64, part: u32) -> Option<&mut Part> {
        let index = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        match &mut self.entries.get_mut(index)?.entry {
            Entry::Single(slot) if part == 0 => self.singles.get_mut(*slot)?.as_mut().filter(|p| p.reply.is_none()),
            Entry::Multi(multi) => multi.parts.get_mut(part as usize).filter(|p| p.reply.is_none()),
            _ => None,
        }
    }

    /// A piece of a large reply to single-part request `seq`, more of which follows, lent by the
    /// node connection against `credit`. Kept with the part until [`Pipeline::release`] writes it:
    /// at once when the request is at the front, else once every earlier reply is written. A
    /// piece for a request no longer waiting is dropped and its credit given back at once.
    /// Returns how many bytes of the reply the part now keeps unwritten.
    pub fn stream(&mut self, seq: u64, piece: &[u8], credit: &Arc<StreamCredit>) -> usize {
        let index = seq.checked_sub(self.base).and_then(|i| usize::try_from(i).ok());
        let p = match index.and_then(|i| self.entries.get(i)).map(|q| &q.entry) {
            Some(Entry::Single(slot)) => self.singles.get_mut(*slot).and_then(Option::as_mut),
            _ => None,
        };
        let Some(p) = p else {
            credit.give_back(piece.len());
            return 0;
        };
        let pieces = p.pieces_mut();
        pieces.held.extend_from_slice(piece);
        pieces.credit.get_or_insert_with(|| Arc::clone(credit));
        pieces.held.len()
    }

    /// Writes what arrived of the streamed reply of the single part in `slot` (the front
    /// request's) to `out`, keeping the credit to give back once it is written.
    fn release_pieces(&mut self, slot: usize, out: &mut WriteBuffer) {
        let Some(p) = self.singles.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let Some(pieces) = p.pieces_if_any().filter(|pieces| !pieces.held.is_empty()) else {
            return;
        };
        if let Some(credit) = &pieces.credit {
            self.credits.push((Arc::clone(credit), pieces.held.len()));
        }
        out.extend_from_slice(&pieces.held);
        pieces.held.clear();
        p.streamed = true;
    }

    /// Whether the front request's reply is part-way out: its start is written, its end is not.
    /// Nothing else may be written to the client until it is (pushes wait).
    pub fn mid_stream(&self) -> bool {
        match self.entries.front().map(|q| &q.entry) {
            Some(Entry::Single(slot)) => self.singles.get(*slot).and_then(Option::as_ref).is_some_and(|p| p.streamed),
            // Its last piece is in, not yet written.
            Some(Entry::Streamed(_)) => true,
            _ => false,
        }
    }

    /// Whether streamed pieces wait in the write buffer for their credit to be given back.
    pub fn has_credit_out(&self) -> bool {
        !self.credits.is_empty()
    }

    /// The write buffer was written out: the credit of the pieces in it goes back to their node
    /// connections.
    #[inline]
    pub fn give_back_credit(&mut self) {
        // Nearly always none: an empty drain still cost ~30 instructions per write.
        if self.credits.is_empty() {
            return;
        }
        for (credit, written) in self.credits.drain(..) {
            credit.give_back(written);
        }
    }

    /// Stores the final reply of one part and hands back the parts deferred on it
    /// ([`Part::take_deferred`]) with whether that reply says its command ran. Replies for
    /// requests no longer waiting are ignored.
    /// Inlined, with the rare paths (a merge, a streamed reply's end) out of line: as a call with
    /// those in its frame it cost ~25 instructions per reply more (bench/RESULTS.md).
    #[inline(always)]
    pub fn complete(&mut self, seq: u64, part: u32, reply: Bytes) -> Deferred {
        let Some(index) = seq.checked_sub(self.base).and_then(|i| usize::try_from(i).ok()) else {
            return Deferred::default();
        };
        let Some(Queued { entry, .. }) = self.entries.get_mut(index) else {
            return Deferred::default();
        };
        match entry {
            Entry::Single(slot) if part == 0 => {
                let slot = *slot;
                let Some(p) = self.singles.get_mut(slot).and_then(Option::as_mut) else {
                    return Deferred::default();
                };
                let reply = match p.pieces_if_any().filter(|pieces| !pieces.held.is_empty()) {
                    None => reply,
                    Some(pieces) => pieces.end_with(&reply),
                };
                let done = if p.streamed { Entry::Streamed(reply) } else { Entry::Ready(reply) };
                // The entry replaced is a `Single`, an index that owns nothing: forgotten rather
                // than dropped, which was a call into `Entry`'s drop glue per reply.
                std::mem::forget(std::mem::replace(entry, done));
                // The part is done: dropped where it lies, its slot free for the next one.
                self.singles[slot] = None;
                self.free.push(slot);
                Deferred::default()
            }
            Entry::Multi(multi) => {
                let (deferred, merged) = complete_part(multi, part, reply);
                if let Some(merged) = merged {
                    *entry = Entry::Ready(merged);
                }
                deferred
            }
            _ => Deferred::default(),
        }
    }

    /// Whether the front request still waits for some of its parts' replies (a split or fanned
    /// out request): nothing can be released before they are in.
    #[inline]
    pub fn front_waits_for_parts(&self) -> bool {
        matches!(self.entries.front(), Some(Queued { entry: Entry::Multi(_), .. }))
    }

    /// Moves every reply that is ready at the front into `out`, in order, and records each one's
    /// result and latency (read to release: when the reply is next in order for the client,
    /// written then or, in a pipelined batch, with the rest of the batch a little later).
    ///
    /// Returns true when a close marker was reached: nothing after it will ever be written.
    pub fn release(&mut self, out: &mut WriteBuffer, metrics: &Metrics) -> bool {
        let mut tally = Tally::default();
        let closed = loop {
            let Some(Queued { entry, meta }) = self.entries.front() else {
                break false;
            };
            let (reply, streamed) = match entry {
                Entry::Ready(reply) => (reply, false),
                Entry::Streamed(reply) => (reply, true),
                Entry::Close => break true,
                &Entry::Single(slot) => {
                    self.release_pieces(slot, out);
                    break false;
                }
                Entry::Multi(_) => break false,
            };
            let meta = *meta;
            if let Some(meta) = meta {
                // RESP2 errors start with '-', RESP3 blob errors with '!'.
                let error = !streamed && matches!(reply.first(), Some(b'-' | b'!'));
                tally.add(meta, error, metrics);
            }
            if !meta.is_some_and(|m| m.dropped) {
                out.extend_from_slice(reply);
            }
            self.entries.pop_front();
            self.base += 1;
            while self.trailers.front().is_some_and(|(after, _)| *after < self.base) {
                if let Some((_, frame)) = self.trailers.pop_front() {
                    out.extend_from_slice(&frame);
                }
            }
        };
        tally.finish(metrics);
        closed
    }
}

/// The metrics of the replies one release hands out. Requests read together (a pipelined batch)
/// share their read time, and so their latency, worked out once for them; a run of replies of one
/// command and outcome among them is counted in one go, not one by one (~50 instructions each).
#[derive(Default)]
struct Tally {
    now: Option<Tick>,
    run: Option<Run>,
}

/// Replies counted together: same `command` label, outcome and read time.
struct Run {
    label: usize,
    error: bool,
    read_at: Tick,
    /// Their latency: read to release.
    seconds: f64,
    count: u64,
}

impl Tally {
    /// One more reply: joins the run, or ends it (counted now) and starts the next.
    fn add(&mut self, meta: Meta, error: bool, metrics: &Metrics) {
        let seconds = match &mut self.run {
            Some(run) if run.read_at == meta.read_at => {
                if run.label == meta.label && run.error == error {
                    run.count += 1;
                    return;
                }
                run.seconds
            }
            _ => {
                let now = *self.now.get_or_insert_with(Tick::now);
                now.seconds_since(meta.read_at)
            }
        };
        let run = Run { label: meta.label, error, read_at: meta.read_at, seconds, count: 1 };
        if let Some(done) = self.run.replace(run) {
            done.record(metrics);
        }
    }

    /// Counts the last run.
    fn finish(self, metrics: &Metrics) {
        if let Some(done) = self.run {
            done.record(metrics);
        }
    }
}

impl Run {
    fn record(self, metrics: &Metrics) {
        metrics.record_commands(self.label, self.error, self.seconds, self.count);
    }
}

/// The parts of a request deferred on a part just completed (sent only once its reply is in),
/// and whether that reply says its command ran: not an error, nor the null of a transaction a
/// WATCH aborted. If it did not, the deferred parts are settled unsent.
#[derive(Debug, Default)]
pub struct Deferred {
    pub parts: Vec<u32>,
    pub ran: bool,
    /// The commands a transaction's EXEC ran, once its reply is whole (Valkey's `tot-cmds`).
    pub ran_in_exec: u64,
}

/// Whether `reply` says its command ran (see [`Deferred`]).
fn ran(reply: &[u8]) -> bool {
    !matches!(reply.first(), Some(b'-' | b'!' | b'_')) && !reply.starts_with(b"*-1\r\n")
}

mod multi;
#[cfg(test)]
mod tests;
