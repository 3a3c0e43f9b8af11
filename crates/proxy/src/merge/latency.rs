//! `LATENCY HISTOGRAM` of every master as one node's reply: per command, the calls summed and the
//! cumulative distributions added up.
//!
//! A node answers a map of command name → `{calls: n, histogram_usec: {bucket: cumulative}}`
//! (RESP2: the same as flat arrays), with a bucket for each power of two (in µs) where the
//! cumulative count grew (`fillCommandCDF` in Redis' `latency.c`). Every node uses the same
//! buckets, so the merged count at a bucket is the sum over the masters of each one's count at its
//! last bucket up to there; a bucket appears where any master's count grew, as it would on one
//! node that had served them all. Commands keep the order in which the masters first name them.

use bytes::{BufMut, Bytes, BytesMut};

use super::{aggregate, string_payload};
use crate::resp::reply::{Protocol, put_bulk, put_integer, put_map_header};
use crate::resp::scan::integer;

/// One command's figures on one master.
struct Figures {
    calls: i64,
    /// `(bucket µs, cumulative count)`, in the node's (ascending) order.
    buckets: Vec<(i64, i64)>,
}

/// The masters' `LATENCY HISTOGRAM` replies merged, in `protocol`'s form.
pub(super) fn latency_histogram(parts: &[Bytes], protocol: Protocol) -> Option<Bytes> {
    // (the command's name as a node wrote it, its figures on each master that has it)
    let mut commands: Vec<(&[u8], Vec<Figures>)> = Vec::new();
    for part in parts {
        let reply = aggregate(part)?;
        for pair in reply.elements.chunks_exact(2) {
            let name = &part[pair[0].clone()];
            string_payload(name)?;
            let figures = figures(&part[pair[1].clone()])?;
            match commands.iter_mut().find(|(known, _)| string_payload(known) == string_payload(name)) {
                Some((_, all)) => all.push(figures),
                None => commands.push((name, vec![figures])),
            }
        }
    }
    let mut out = BytesMut::new();
    put_map_header(&mut out, protocol, commands.len());
    for (name, all) in &commands {
        out.put_slice(name);
        put_map_header(&mut out, protocol, 2);
        put_bulk(&mut out, b"calls");
        put_integer(&mut out, all.iter().try_fold(0i64, |sum, f| sum.checked_add(f.calls))?);
        put_bulk(&mut out, b"histogram_usec");
        let merged = merged_buckets(all)?;
        put_map_header(&mut out, protocol, merged.len());
        for (bucket, count) in merged {
            put_integer(&mut out, bucket);
            put_integer(&mut out, count);
        }
    }
    Some(out.freeze())
}

/// `{calls: n, histogram_usec: {bucket: count, …}}` (or its RESP2 arrays) taken apart.
fn figures(stats: &[u8]) -> Option<Figures> {
    let stats_reply = aggregate(stats)?;
    let [calls_name, calls, histogram_name, histogram] = stats_reply.elements.as_slice() else {
        return None;
    };
    let is = |range: &std::ops::Range<usize>, name: &[u8]| {
        string_payload(&stats[range.clone()]).map(|(_, p)| p) == Some(name)
    };
    if !is(calls_name, b"calls") || !is(histogram_name, b"histogram_usec") {
        return None;
    }
    let histogram = &stats[histogram.clone()];
    let pairs = aggregate(histogram)?;
    let buckets = pairs
        .elements
        .chunks_exact(2)
        .map(|pair| Some((integer(&histogram[pair[0].clone()])?, integer(&histogram[pair[1].clone()])?)))
        .collect::<Option<Vec<_>>>()?;
    Some(Figures { calls: integer(&stats[calls.clone()])?, buckets })
}

/// The masters' cumulative distributions added up at every bucket where one of them grew.
fn merged_buckets(all: &[Figures]) -> Option<Vec<(i64, i64)>> {
    let mut buckets: Vec<i64> = all.iter().flat_map(|f| f.buckets.iter().map(|&(bucket, _)| bucket)).collect();
    buckets.sort_unstable();
    buckets.dedup();
    buckets
        .into_iter()
        .map(|bucket| {
            let at = |f: &Figures| f.buckets.iter().take_while(|&&(b, _)| b <= bucket).last().map_or(0, |&(_, c)| c);
            Some((bucket, all.iter().try_fold(0i64, |sum, f| sum.checked_add(at(f)))?))
        })
        .collect()
}
