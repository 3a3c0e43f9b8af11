//! A client's requests in flight, in the order the client sent them.
//!
//! Replies from different nodes come back in any order; each carries the sequence number of its
//! request, and replies are released to the client only from the front, so the client reads them in
//! request order however the nodes interleave. Pure bookkeeping: no I/O.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;

use crate::command::Merge;
use crate::executor::Part;
use crate::merge::{KeyPlace, merge, put_string, string_payload};
use crate::metrics::Metrics;

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

/// A request of several parts whose replies are merged.
#[derive(Debug)]
struct Multi {
    parts: Vec<Part>,
    missing: usize,
    merge: Merge,
    places: Vec<KeyPlace>,
    /// Text the proxy puts before the merged bulk string (INFO's own sections).
    prefix: Option<Bytes>,
}

/// What a request's metrics need: its `command` label and when its last byte was read.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub label: usize,
    pub read_at: Instant,
    /// The reply is counted but not sent (`CLIENT REPLY OFF`/`SKIP`).
    pub dropped: bool,
}

/// The client's pipeline: entries by sequence number, oldest first.
#[derive(Debug, Default)]
pub struct Pipeline {
    entries: VecDeque<Entry>,
    /// Per entry (close markers included, with no meaning), for the metrics at release.
    metas: VecDeque<Option<Meta>>,
    /// Sequence number of the front entry.
    base: u64,
    /// Frames written once the reply of the request with this sequence number is (client-side
    /// caching messages, which must follow the replies of requests read before they came).
    trailers: VecDeque<(u64, Bytes)>,
    /// The parts of single-part requests waiting for their reply, where [`Entry::Single`] finds
    /// them: a part is ~250 bytes, and kept here it is written once and dropped in place, where
    /// in `entries` it was copied on every push and release (~150 instructions per request,
    /// bench/RESULTS.md). Slots are reused (`free`), so a part costs no allocation.
    singles: Vec<Option<Part>>,
    free: Vec<usize>,
}

impl Pipeline {
    /// Number of requests whose replies have not been released yet.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The sequence number the next request gets.
    pub fn next_seq(&self) -> u64 {
        self.base + self.entries.len() as u64
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
        self.entries.push_back(Entry::Ready(reply));
        self.metas.push_back(Some(meta));
    }

    /// Appends a marker after which the connection is closed.
    pub fn push_close(&mut self) {
        self.entries.push_back(Entry::Close);
        self.metas.push_back(None);
    }

    /// Appends a single-part request; returns its sequence number.
    pub fn push_single(&mut self, part: Part, meta: Meta) -> u64 {
        let seq = self.next_seq();
        let slot = match self.free.pop() {
            Some(slot) => {
                self.singles[slot] = Some(part);
                slot
            }
            None => {
                // Grown from one slot by doubling (a Vec's first push makes room for four): an
                // unpipelined client keeps one slot.
                if self.singles.len() == self.singles.capacity() {
                    self.singles.reserve_exact(self.singles.len().max(1));
                    self.free.reserve_exact(self.singles.capacity());
                }
                self.singles.push(Some(part));
                self.singles.len() - 1
            }
        };
        self.entries.push_back(Entry::Single(slot));
        self.metas.push_back(Some(meta));
        seq
    }

    /// Appends a request of several parts merged with `merge`; returns its sequence number.
    pub fn push_multi(&mut self, parts: Vec<Part>, merge: Merge, places: Vec<KeyPlace>, meta: Meta) -> u64 {
        let seq = self.next_seq();
        let missing = parts.len();
        self.entries.push_back(Entry::Multi(Box::new(Multi { parts, missing, merge, places, prefix: None })));
        self.metas.push_back(Some(meta));
        seq
    }

    /// Sets the text put before the merged bulk reply of request `seq` (see [`Entry::Multi`]).
    pub fn set_prefix(&mut self, seq: u64, text: Bytes) {
        let index = seq.checked_sub(self.base).and_then(|i| usize::try_from(i).ok());
        if let Some(Entry::Multi(multi)) = index.and_then(|i| self.entries.get_mut(i)) {
            multi.prefix = Some(text);
        }
    }

    /// The part `part` of request `seq`, while it still waits for its reply.
    pub fn part_mut(&mut self, seq: u64, part: u32) -> Option<&mut Part> {
        let index = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        match self.entries.get_mut(index)? {
            Entry::Single(slot) if part == 0 => self.singles.get_mut(*slot)?.as_mut().filter(|p| p.reply.is_none()),
            Entry::Multi(multi) => multi.parts.get_mut(part as usize).filter(|p| p.reply.is_none()),
            _ => None,
        }
    }

    /// A piece of a large reply to single-part request `seq`, more of which follows. Returns what
    /// to write to the client now when the request is at the front (every earlier reply is
    /// written); otherwise keeps the piece with the part, to go out with the rest.
    pub fn stream(&mut self, seq: u64, piece: Bytes) -> Option<Bytes> {
        let index = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        let Entry::Single(slot) = self.entries.get_mut(index)? else {
            return None;
        };
        let p = self.singles.get_mut(*slot)?.as_mut()?;
        if index > 0 {
            p.held.extend_from_slice(&piece);
            return None;
        }
        p.streamed = true;
        if p.held.is_empty() {
            return Some(piece);
        }
        p.held.extend_from_slice(&piece);
        Some(p.held.split().freeze())
    }

    /// Stores the final reply of one part and hands back the parts deferred on it
    /// ([`Part::deferred`]). Replies for requests no longer waiting are ignored.
    pub fn complete(&mut self, seq: u64, part: u32, reply: Bytes) -> Vec<u32> {
        let Some(index) = seq.checked_sub(self.base).and_then(|i| usize::try_from(i).ok()) else {
            return Vec::new();
        };
        let Some(entry) = self.entries.get_mut(index) else {
            return Vec::new();
        };
        match entry {
            Entry::Single(slot) if part == 0 => {
                let slot = *slot;
                let Some(p) = self.singles.get_mut(slot).and_then(Option::as_mut) else {
                    return Vec::new();
                };
                let reply = match p.held.is_empty() {
                    true => reply,
                    false => {
                        p.held.extend_from_slice(&reply);
                        p.held.split().freeze()
                    }
                };
                *entry = if p.streamed { Entry::Streamed(reply) } else { Entry::Ready(reply) };
                // The part is done: dropped where it lies, its slot free for the next one.
                self.singles[slot] = None;
                self.free.push(slot);
                Vec::new()
            }
            Entry::Multi(multi) => {
                let (deferred, merged) = complete_part(multi, part, reply);
                if let Some(merged) = merged {
                    *entry = Entry::Ready(merged);
                }
                deferred
            }
            _ => Vec::new(),
        }
    }

    /// Moves every reply that is ready at the front into `out`, in order, and records each one's
    /// result and latency (read to release, which is when it is handed to the socket).
    ///
    /// Returns true when a close marker was reached: nothing after it will ever be written.
    pub fn release(&mut self, out: &mut BytesMut, metrics: &Metrics) -> bool {
        let mut tally = Tally::default();
        let closed = loop {
            let (reply, streamed) = match self.entries.front() {
                Some(Entry::Ready(reply)) => (reply, false),
                Some(Entry::Streamed(reply)) => (reply, true),
                Some(Entry::Close) => break true,
                Some(Entry::Single(_) | Entry::Multi(_)) | None => break false,
            };
            let meta = self.metas.front().copied().flatten();
            if let Some(meta) = meta {
                // RESP2 errors start with '-', RESP3 blob errors with '!'.
                let error = !streamed && matches!(reply.first(), Some(b'-' | b'!'));
                tally.add(meta, error, metrics);
            }
            if !meta.is_some_and(|m| m.dropped) {
                out.extend_from_slice(reply);
            }
            self.entries.pop_front();
            self.metas.pop_front();
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
    now: Option<Instant>,
    run: Option<Run>,
}

/// Replies counted together: same `command` label, outcome and read time.
struct Run {
    label: usize,
    error: bool,
    read_at: Instant,
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
                let now = *self.now.get_or_insert_with(Instant::now);
                now.saturating_duration_since(meta.read_at).as_secs_f64()
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

/// Stores the reply of part `part` of `multi`: the parts deferred on it, and the merged reply once
/// it was the last one missing.
fn complete_part(multi: &mut Multi, part: u32, reply: Bytes) -> (Vec<u32>, Option<Bytes>) {
    let Multi { parts, missing, merge: kind, places, prefix } = multi;
    let Some(p) = parts.get_mut(part as usize).filter(|p| p.reply.is_none()) else {
        return (Vec::new(), None);
    };
    let deferred = std::mem::take(&mut p.deferred);
    p.reply = Some(reply);
    *missing -= 1;
    if *missing > 0 {
        return (deferred, None);
    }
    let replies: SmallVec<[Bytes; 16]> = parts.iter_mut().filter_map(|p| p.reply.take()).collect();
    let merged = merge(kind, &replies, places);
    let merged = match prefix.take() {
        Some(text) => prepend_to_bulk(&text, &merged),
        None => merged,
    };
    (deferred, Some(merged))
}

/// `text` followed by the content of the bulk (or RESP3 verbatim) string `bulk`, as one string of
/// the same type; an error (or any other reply) is returned as is.
fn prepend_to_bulk(text: &[u8], bulk: &Bytes) -> Bytes {
    let Some((kind, content)) = string_payload(bulk) else {
        return bulk.clone();
    };
    let mut joined = Vec::with_capacity(text.len() + content.len());
    joined.extend_from_slice(text);
    joined.extend_from_slice(content);
    let mut out = BytesMut::with_capacity(joined.len() + 24);
    put_string(&mut out, kind, &joined);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::Target;

    fn meta() -> Meta {
        Meta { label: 0, read_at: Instant::now(), dropped: false }
    }

    fn part() -> Part {
        Part::new(Bytes::from_static(b"*1\r\n$4\r\nPING\r\n"), Target::Slot(None), false)
    }

    fn part_named(payload: &'static [u8]) -> Part {
        Part::new(Bytes::from_static(payload), Target::Slot(None), false)
    }

    #[test]
    fn replies_released_together_are_counted_by_command_outcome_and_read_time() {
        use crate::metrics::labels::label_index;
        let metrics = Metrics::new();
        let mut pipeline = Pipeline::default();
        let (get, set) = (label_index("get"), label_index("set"));
        let batch = Instant::now();
        let later = batch + std::time::Duration::from_millis(1);
        let replies: [(usize, Instant, &[u8]); 6] = [
            (get, batch, b"$1\r\na\r\n"),
            (get, batch, b"$-1\r\n"),
            (get, batch, b"-WRONGTYPE x\r\n"),
            (set, batch, b"+OK\r\n"),
            (get, later, b"$1\r\nb\r\n"),
            (get, batch, b"$1\r\nc\r\n"),
        ];
        for (label, read_at, reply) in replies {
            pipeline.push_ready(Bytes::from_static(reply), Meta { label, read_at, dropped: false });
        }
        let mut out = BytesMut::new();
        pipeline.release(&mut out, &metrics);
        let text = metrics.render();
        for (command, result, count) in [("get", "ok", 4), ("get", "error", 1), ("set", "ok", 1)] {
            let series = format!("redisforge_commands_total{{command=\"{command}\",result=\"{result}\"}} {count}");
            assert!(text.contains(&series), "{series} in\n{text}");
        }
        assert!(text.contains("redisforge_command_duration_seconds_count{command=\"get\"} 5"), "{text}");
    }

    #[test]
    fn answered_out_of_order_replies_go_out_in_order_and_freed_slots_serve_new_parts() {
        let metrics = Metrics::new();
        let mut pipeline = Pipeline::default();
        let seqs: Vec<u64> =
            [&b"a"[..], b"b", b"c"].iter().map(|p| pipeline.push_single(part_named(p), meta())).collect();
        let mut out = BytesMut::new();
        pipeline.complete(seqs[1], 0, Bytes::from_static(b"+b\r\n"));
        assert!(pipeline.part_mut(seqs[1], 0).is_none(), "answered");
        pipeline.release(&mut out, &metrics);
        assert!(out.is_empty(), "a is still out");
        // d takes b's slot while a and c still wait in theirs.
        let d = pipeline.push_single(part_named(b"d"), meta());
        for (seq, payload) in [(seqs[0], &b"a"[..]), (seqs[2], b"c"), (d, b"d")] {
            assert_eq!(&pipeline.part_mut(seq, 0).expect("waiting").payload[..], payload);
        }
        for (seq, reply) in [(d, &b"+d\r\n"[..]), (seqs[0], b"+a\r\n"), (seqs[2], b"+c\r\n")] {
            pipeline.complete(seq, 0, Bytes::from_static(reply));
        }
        pipeline.release(&mut out, &metrics);
        assert_eq!(&out[..], b"+a\r\n+b\r\n+c\r\n+d\r\n");
        assert!(pipeline.is_empty());
        assert_eq!(pipeline.singles.iter().filter(|slot| slot.is_some()).count(), 0, "every part dropped");
        assert_eq!(pipeline.free.len(), pipeline.singles.len(), "every slot free again");
    }

    #[test]
    fn a_streamed_reply_waits_for_earlier_replies_then_goes_out_in_order() {
        let metrics = Metrics::new();
        let mut pipeline = Pipeline::default();
        let a = pipeline.push_single(part(), meta());
        let b = pipeline.push_single(part(), meta());
        // b's reply starts arriving before a's: its pieces are held.
        assert_eq!(pipeline.stream(b, Bytes::from_static(b"$10\r\n01")), None);
        assert_eq!(pipeline.stream(b, Bytes::from_static(b"234")), None);
        let mut out = BytesMut::new();
        pipeline.complete(a, 0, Bytes::from_static(b":1\r\n"));
        pipeline.release(&mut out, &metrics);
        // Now at the front: what was held goes out with the next piece.
        let now = pipeline.stream(b, Bytes::from_static(b"56")).expect("at the front");
        out.extend_from_slice(&now);
        assert_eq!(pipeline.stream(b, Bytes::from_static(b"7")).as_deref(), Some(&b"7"[..]));
        out.extend_from_slice(b"7");
        pipeline.complete(b, 0, Bytes::from_static(b"89\r\n"));
        pipeline.release(&mut out, &metrics);
        assert_eq!(&out[..], b":1\r\n$10\r\n0123456789\r\n");
        assert!(pipeline.is_empty());
        let text = metrics.render();
        assert!(
            text.contains(&format!(
                "redisforge_commands_total{{command=\"{}\",result=\"error\"}} 0",
                crate::metrics::labels::LABELS[0]
            )),
            "the rest of a streamed reply is not an error"
        );
    }

    #[test]
    fn the_proxy_sections_go_before_the_merged_info_in_either_protocol() {
        let text = b"# Server\r\n\r\n";
        let bulk = Bytes::from_static(b"$11\r\n# Keyspace\n\r\n");
        assert_eq!(&prepend_to_bulk(text, &bulk)[..], b"$23\r\n# Server\r\n\r\n# Keyspace\n\r\n");
        let verbatim = Bytes::from_static(b"=15\r\ntxt:# Keyspace\n\r\n");
        assert_eq!(&prepend_to_bulk(text, &verbatim)[..], b"=27\r\ntxt:# Server\r\n\r\n# Keyspace\n\r\n");
        let error = Bytes::from_static(b"-ERR no\r\n");
        assert_eq!(prepend_to_bulk(text, &error), error);
    }

    #[test]
    fn replies_are_released_in_request_order() {
        let metrics = Metrics::new();
        let mut pipeline = Pipeline::default();
        let a = pipeline.push_single(part(), meta());
        let b = pipeline.push_single(part(), meta());
        pipeline.push_ready(Bytes::from_static(b"+local\r\n"), meta());
        let mut out = BytesMut::new();
        pipeline.complete(b, 0, Bytes::from_static(b":2\r\n"));
        assert!(!pipeline.release(&mut out, &metrics));
        assert!(out.is_empty(), "b must wait for a");
        pipeline.complete(a, 0, Bytes::from_static(b":1\r\n"));
        pipeline.release(&mut out, &metrics);
        assert_eq!(&out[..], b":1\r\n:2\r\n+local\r\n");
        assert!(pipeline.is_empty());
    }

    #[test]
    fn multi_part_requests_merge_when_all_parts_are_in() {
        let metrics = Metrics::new();
        let mut pipeline = Pipeline::default();
        let seq = pipeline.push_multi(vec![part(), part()], Merge::SumIntegers, Vec::new(), meta());
        pipeline.complete(seq, 1, Bytes::from_static(b":2\r\n"));
        let mut out = BytesMut::new();
        pipeline.release(&mut out, &metrics);
        assert!(out.is_empty());
        // A duplicate reply for a part already answered changes nothing.
        pipeline.complete(seq, 1, Bytes::from_static(b":5\r\n"));
        pipeline.complete(seq, 0, Bytes::from_static(b":3\r\n"));
        pipeline.release(&mut out, &metrics);
        assert_eq!(&out[..], b":5\r\n");
    }

    #[test]
    fn trailers_follow_the_replies_of_requests_read_before_them() {
        let metrics = Metrics::new();
        let mut pipeline = Pipeline::default();
        let a = pipeline.push_single(part(), meta());
        pipeline.push_trailer(Bytes::from_static(b">after-a\r\n"));
        let b = pipeline.push_single(part(), meta());
        let mut out = BytesMut::new();
        pipeline.complete(b, 0, Bytes::from_static(b":2\r\n"));
        pipeline.release(&mut out, &metrics);
        assert!(out.is_empty());
        pipeline.complete(a, 0, Bytes::from_static(b":1\r\n"));
        pipeline.release(&mut out, &metrics);
        assert_eq!(&out[..], b":1\r\n>after-a\r\n:2\r\n");
        assert_eq!(pipeline.trailer_count(), 0);
    }

    #[test]
    fn close_marker_stops_release() {
        let metrics = Metrics::new();
        let mut pipeline = Pipeline::default();
        pipeline.push_ready(Bytes::from_static(b"+OK\r\n"), meta());
        pipeline.push_close();
        pipeline.push_ready(Bytes::from_static(b"+never\r\n"), meta());
        let mut out = BytesMut::new();
        assert!(pipeline.release(&mut out, &metrics));
        assert_eq!(&out[..], b"+OK\r\n");
    }

    #[test]
    fn stale_sequence_numbers_are_ignored() {
        let metrics = Metrics::new();
        let mut pipeline = Pipeline::default();
        let seq = pipeline.push_single(part(), meta());
        pipeline.complete(seq, 0, Bytes::from_static(b"+a\r\n"));
        let mut out = BytesMut::new();
        pipeline.release(&mut out, &metrics);
        pipeline.complete(seq, 0, Bytes::from_static(b"+late\r\n"));
        pipeline.complete(99, 0, Bytes::from_static(b"+future\r\n"));
        assert!(pipeline.part_mut(seq, 0).is_none());
        assert!(pipeline.is_empty());
    }
}
