//! Combining the replies of a request that was split per slot (MGET, MSET, DEL …) or fanned out to
//! every master (DBSIZE, KEYS, SCRIPT LOAD, PUBSUB NUMSUB …) into the one reply a single Redis node
//! would have given.
//!
//! Pure: raw reply bytes in, raw reply bytes out. Element bytes are copied as received, never
//! decoded and re-encoded; only what the merge computes (sums, counts, a rewritten SCAN cursor) is
//! written by the proxy. Both RESP2 and RESP3 replies are understood, and a merged reply keeps the
//! form the nodes used (an array stays an array, a RESP3 set or map stays a set or map).
//!
//! Operator commands sent to named nodes (CONFIG, SLOWLOG, LATENCY, MEMORY) are merged in
//! `merge/nodes.rs`: those merges know which node gave which reply and say so; LATENCY HISTOGRAM's
//! per-command distributions are added up in `merge/latency.rs`.

use std::collections::HashSet;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;

use crate::command::Merge;
use crate::error::ProxyError;
use crate::resp::scan::integer;
use crate::resp::{FrameScanner, reply, scan};

mod latency;
mod nodes;

/// Where one key of the original request went: which part, and its index among that part's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPlace {
    pub part: u32,
    pub index: u32,
}

/// How many masters a proxy SCAN cursor can tell apart; see [`split_scan_cursor`].
pub const SCAN_MAX_MASTERS: usize = 1024;

/// Merges the replies of all parts, `parts[i]` being the reply to part `i` (for a fan-out: of
/// master `i`).
///
/// The first error reply (in part order) wins, as the client would have seen an error from a
/// single node too; [`Merge::AnyOk`], [`Merge::Exec`] and [`Merge::AllOkNamed`] are the
/// exceptions, they look at the errors themselves. `places` is only used by
/// [`Merge::ArrayInKeyOrder`]. A reply of a shape the merge does not expect becomes an `-ERR`,
/// never a panic.
pub fn merge(kind: &Merge, parts: &[Bytes], places: &[KeyPlace]) -> Bytes {
    if !matches!(kind, Merge::AnyOk | Merge::Exec { .. } | Merge::AllOkNamed { .. })
        && let Some(error) = parts.iter().find(|p| is_error(p))
    {
        return error.clone();
    }
    let merged = match kind {
        Merge::Exec { local_places } => exec_with_local(parts, local_places),
        Merge::AllOk => parts.iter().all(|p| p.as_ref() == b"+OK\r\n").then(reply::ok),
        Merge::SumIntegers => {
            parts.iter().try_fold(0i64, |sum, p| integer(p).and_then(|n| sum.checked_add(n))).map(reply::integer)
        }
        Merge::ArrayInKeyOrder => array_in_key_order(parts, places),
        Merge::SameReply => same_reply(parts),
        Merge::ScriptExists { remembered } => script_exists(parts, remembered),
        Merge::AnyOk => any_ok(parts),
        Merge::FunctionStats => function_stats(parts),
        Merge::ConcatArrays => concat_arrays(parts),
        Merge::RandomKey { seed } => random_key(parts, *seed),
        Merge::UnionArrays => union_arrays(parts),
        Merge::SumPairs => sum_pairs(parts),
        Merge::ScanCursor { master, masters } => scan_cursor(parts, *master, *masters),
        Merge::InfoSums { own } => info::info_sums(parts, own),
        Merge::ConfigValues { nodes, own } => nodes::config_values(parts, nodes, own),
        Merge::AllOkNamed { command, nodes } => nodes::all_ok_named(parts, command, nodes),
        Merge::Slowlog { nodes, count } => nodes::slowlog(parts, nodes, *count),
        Merge::KeyedByNode { nodes, protocol } => nodes::keyed_by_node(parts, nodes, *protocol),
        Merge::LatencyHistogram { protocol } => latency::latency_histogram(parts, *protocol),
    };
    merged.unwrap_or_else(|| {
        ProxyError::Merge("proxy received an unexpected reply shape from a node while merging".into()).to_resp()
    })
}

/// Splits a cursor the proxy gave a SCAN client into the node cursor and the index of the master
/// it belongs to (in the order of the topology's masters).
///
/// The encoding is `cursor = node_cursor * 1024 + master` ([`SCAN_MAX_MASTERS`]): the client's
/// first cursor `0` is node cursor 0 on master 0; when a master's scan ends (node cursor 0) the
/// next cursor is `master + 1`, node cursor 0 on the next master; after the last master it is `0`,
/// which tells the client the scan is complete. [`Merge::ScanCursor`] writes these cursors.
///
/// Returns `None` for a cursor that is not a plain decimal fitting in 64 bits; the caller answers
/// `-ERR invalid cursor`, as Redis does. The master index is always below [`SCAN_MAX_MASTERS`];
/// the caller must also check it against the number of masters it has now (a cursor from before a
/// topology change, or a made-up one, may name a master that does not exist).
pub fn split_scan_cursor(cursor: &[u8]) -> Option<(u64, usize)> {
    let cursor = parse_u64(cursor)?;
    let masters = SCAN_MAX_MASTERS as u64;
    Some((cursor / masters, usize::try_from(cursor % masters).ok()?))
}

/// The client cursor for node cursor `node` on master `master`; `None` when it does not fit.
fn join_scan_cursor(node: u64, master: usize) -> Option<u64> {
    if master >= SCAN_MAX_MASTERS {
        return None;
    }
    node.checked_mul(SCAN_MAX_MASTERS as u64)?.checked_add(u64::try_from(master).ok()?)
}

/// Whether a reply is an error (`-` simple error, `!` RESP3 blob error).
fn is_error(reply: &[u8]) -> bool {
    matches!(reply.first(), Some(b'-' | b'!'))
}

/// Parses a plain non-negative decimal (no sign, no spaces), as Redis parses cursors.
fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| match d {
        b'0'..=b'9' => n.checked_mul(10)?.checked_add(u64::from(d - b'0')),
        _ => None,
    })
}

/// An aggregate reply taken apart: its type byte, its header count and the byte range of every
/// element (twice the count for a RESP3 map).
struct Aggregate {
    kind: u8,
    count: usize,
    elements: Vec<Range<usize>>,
}

/// Takes apart an array (`*`), RESP3 set (`~`) or RESP3 map (`%`) that is exactly one frame.
fn aggregate(reply: &[u8]) -> Option<Aggregate> {
    let (kind, count, first) = scan::header(reply, 0)?;
    if !matches!(kind, b'*' | b'~' | b'%') {
        return None;
    }
    let total = if kind == b'%' { count.checked_mul(2)? } else { count };
    // Every element takes at least 3 bytes: a claimed count beyond that is a lie, not a reason to
    // reserve memory.
    let mut elements = Vec::with_capacity(total.min(reply.len() / 3));
    let mut at = first;
    for _ in 0..total {
        let len = FrameScanner::new().scan(&reply[at..]).ok()??;
        elements.push(at..at + len);
        at += len;
    }
    (at == reply.len()).then_some(Aggregate { kind, count, elements })
}

/// Element `index` of an array reply (`*`) that is exactly one frame.
pub(crate) fn array_element(reply: &[u8], index: usize) -> Option<&[u8]> {
    let array = aggregate(reply).filter(|a| a.kind == b'*')?;
    array.elements.get(index).map(|range| &reply[range.clone()])
}

/// The aggregates of every part, which must all be of one of `kinds` and all of the same kind.
fn aggregates(parts: &[Bytes], kinds: &[u8]) -> Option<Vec<Aggregate>> {
    let all: Vec<Aggregate> = parts.iter().map(|p| aggregate(p)).collect::<Option<_>>()?;
    let kind = all.first()?.kind;
    (kinds.contains(&kind) && all.iter().all(|a| a.kind == kind)).then_some(all)
}

/// The payload of a bulk string (`$`) or RESP3 verbatim string (`=`, payload after its `fmt:`),
/// with the type byte.
pub(crate) fn string_payload(reply: &[u8]) -> Option<(u8, &[u8])> {
    let (kind, len, start) = scan::header(reply, 0)?;
    if !matches!(kind, b'$' | b'=') {
        return None;
    }
    let payload = reply.get(start..start.checked_add(len)?)?;
    if reply.len() != start + len + 2 || !reply.ends_with(b"\r\n") {
        return None;
    }
    match kind {
        b'=' => Some((kind, payload.get(4..).filter(|_| payload.get(3) == Some(&b':'))?)),
        _ => Some((kind, payload)),
    }
}

/// Writes `payload` as a bulk string, or as a RESP3 verbatim text string when `kind` is `=`.
pub(crate) fn put_string(out: &mut BytesMut, kind: u8, payload: &[u8]) {
    let protocol = if kind == b'=' { reply::Protocol::Resp3 } else { reply::Protocol::Resp2 };
    reply::put_text(out, protocol, payload);
}

/// Each part's array elements, put back in the order of the keys (MGET). A part's elements are
/// taken in order, as its keys' places number them: each part is read once, front to back.
fn array_in_key_order(parts: &[Bytes], places: &[KeyPlace]) -> Option<Bytes> {
    // Per part: where its next element starts, how many were taken, how many it has.
    let mut cursors: SmallVec<[(usize, u32, usize); 16]> =
        parts.iter().map(|p| array_start(p).map(|(at, count)| (at, 0, count))).collect::<Option<_>>()?;
    let size: usize = parts.iter().map(|p| p.len()).sum::<usize>() + 16;
    let mut out = BytesMut::with_capacity(size);
    reply::put_header(&mut out, b'*', places.len());
    let mut scanner = FrameScanner::new();
    for place in places {
        let part = usize::try_from(place.part).ok()?;
        let (at, taken, count) = cursors.get_mut(part)?;
        if place.index != *taken || *taken as usize >= *count {
            return None;
        }
        *taken += 1;
        let reply = &parts[part];
        let len = scanner.scan(&reply[*at..]).ok()??;
        out.extend_from_slice(&reply[*at..*at + len]);
        *at += len;
    }
    let whole =
        cursors.iter().zip(parts).all(|(&(at, taken, count), part)| taken as usize == count && at == part.len());
    whole.then(|| out.freeze())
}

/// EXEC's reply with the local replies (the last parts) put in at `places` of its array. A
/// transaction that did not run (a null for a WATCH, EXECABORT) answers as EXEC did: its local
/// commands did not run either.
fn exec_with_local(parts: &[Bytes], places: &[u32]) -> Option<Bytes> {
    let (node, local) = parts.split_at(parts.len().checked_sub(places.len())?);
    let exec = node.last()?;
    let Some(array) = aggregate(exec).filter(|a| a.kind == b'*' && !local.is_empty()) else {
        return Some(exec.clone());
    };
    let total = array.elements.len() + local.len();
    let mut out = BytesMut::with_capacity(exec.len() + local.iter().map(|l| l.len()).sum::<usize>() + 8);
    reply::put_header(&mut out, b'*', total);
    let from_proxy = places.iter().map(|&place| place as usize).zip(local.iter().map(|l| &l[..]));
    let from_node = array.elements.iter().map(|element| &exec[element.clone()]);
    let mut placed = 0;
    for element in interleave(from_proxy, from_node) {
        out.extend_from_slice(element);
        placed += 1;
    }
    // A place beyond the node's elements: never made by a transaction, whose places count both.
    (placed == total).then_some(())?;
    Some(out.freeze())
}

/// The items of `placed` at their places (in ascending order) and those of `rest`, in order, at
/// the others: EXEC's array, whose elements are a node's but where the proxy answered a queued
/// command itself. Ends where the next place is neither `placed`'s nor filled by `rest`.
pub(crate) fn interleave<T>(
    placed: impl Iterator<Item = (usize, T)>,
    mut rest: impl Iterator<Item = T>,
) -> impl Iterator<Item = T> {
    let mut placed = placed.peekable();
    (0..).map_while(move |at| placed.next_if(|(place, _)| *place == at).map(|(_, item)| item).or_else(|| rest.next()))
}

/// Where the first element of an array reply (`*`) starts, and how many it has.
fn array_start(reply: &[u8]) -> Option<(usize, usize)> {
    match scan::header(reply, 0)? {
        (b'*', count, first) => Some((first, count)),
        _ => None,
    }
}

/// Every part's reply if they are all the same, else an error naming the first disagreement.
fn same_reply(parts: &[Bytes]) -> Option<Bytes> {
    let first = parts.first()?;
    match parts.iter().position(|p| p != first) {
        None => Some(first.clone()),
        Some(other) => Some(
            ProxyError::Merge(
                format!(
                    "nodes disagree: node 0 replied '{}', node {other} replied '{}'",
                    describe(first),
                    describe(&parts[other])
                )
                .into(),
            )
            .to_resp(),
        ),
    }
}

/// A short human-readable form of a reply for an error message: a string's payload, else the
/// reply's text, cut at 64 characters.
fn describe(reply: &[u8]) -> String {
    let text = string_payload(reply).map_or(reply.strip_suffix(b"\r\n").unwrap_or(reply), |(_, payload)| payload);
    let text = String::from_utf8_lossy(text);
    match text.char_indices().nth(64) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.into_owned(),
    }
}

/// A truth value: an integer (non-zero is true) or a RESP3 boolean.
fn truth(element: &[u8]) -> Option<bool> {
    match element {
        b"#t\r\n" => Some(true),
        b"#f\r\n" => Some(false),
        _ => integer(element).map(|n| n != 0),
    }
}

/// SCRIPT EXISTS: the masters' arrays of truth values (of equal length) combined element-wise,
/// as [`Merge::ScriptExists`] says: every master's true, or one master's when the proxy
/// remembers the script (`remembered[i]`).
fn script_exists(parts: &[Bytes], remembered: &[bool]) -> Option<Bytes> {
    let arrays = aggregates(parts, b"*")?;
    let len = arrays[0].elements.len();
    if arrays.iter().any(|a| a.elements.len() != len) {
        return None;
    }
    let mut out = BytesMut::with_capacity(parts[0].len());
    reply::put_header(&mut out, b'*', len);
    for i in 0..len {
        let values: Vec<&[u8]> = parts.iter().zip(&arrays).map(|(p, a)| &p[a.elements[i].clone()]).collect();
        let truths: Vec<bool> = values.iter().map(|v| truth(v)).collect::<Option<_>>()?;
        // The deciding answer, copied as received: for a remembered script the first true one,
        // else the first false one; failing that, the first master's.
        let deciding = match remembered.get(i).copied().unwrap_or(false) {
            true => truths.iter().position(|t| *t),
            false => truths.iter().position(|t| !t),
        };
        let chosen = deciding.unwrap_or(0);
        out.extend_from_slice(values[chosen]);
    }
    Some(out.freeze())
}

/// `+OK` when any part answered `+OK`; else the first error, preferring one that is not
/// `NOTBUSY`: a master that is running a script it could not kill (`UNKILLABLE`) says more than
/// the masters that were running nothing.
fn any_ok(parts: &[Bytes]) -> Option<Bytes> {
    if let Some(success) = parts.iter().find(|p| !is_error(p)) {
        return Some(success.clone());
    }
    let informative = parts.iter().find(|p| is_error(p) && !p.starts_with(b"-NOTBUSY"));
    informative.or_else(|| parts.iter().find(|p| is_error(p))).cloned()
}

/// Every part's elements in one aggregate, in part order (KEYS).
fn concat_arrays(parts: &[Bytes]) -> Option<Bytes> {
    let arrays = aggregates(parts, b"*~")?;
    let total = arrays.iter().map(|a| a.elements.len()).sum();
    let mut out = BytesMut::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>() + 16);
    reply::put_header(&mut out, arrays[0].kind, total);
    for (part, array) in parts.iter().zip(&arrays) {
        if let (Some(first), Some(last)) = (array.elements.first(), array.elements.last()) {
            out.extend_from_slice(&part[first.start..last.end]);
        }
    }
    Some(out.freeze())
}

/// The FUNCTION STATS reply whose `running_script` is not null (RESP2 `*4` or RESP3 `%2` with
/// that field first, as Redis 7 sends it), else the first. A reply of another shape counts as
/// idle: it is passed on when no master runs a function.
fn function_stats(parts: &[Bytes]) -> Option<Bytes> {
    const FIELD: &[u8] = b"$14\r\nrunning_script\r\n";
    let running = |reply: &Bytes| {
        let value = reply.strip_prefix(b"*4\r\n").or_else(|| reply.strip_prefix(b"%2\r\n"));
        value
            .and_then(|v| v.strip_prefix(FIELD))
            .is_some_and(|v| !v.starts_with(b"$-1\r\n") && !v.starts_with(b"_\r\n"))
    };
    parts.iter().find(|p| running(p)).or_else(|| parts.first()).cloned()
}

/// RANDOMKEY for the whole cluster: `parts` holds every master's `DBSIZE`, then every master's
/// `RANDOMKEY`; a master with keys is chosen with probability proportional to its key count, as
/// one node picks uniformly among all its keys. Null when no master has a key.
fn random_key(parts: &[Bytes], seed: u64) -> Option<Bytes> {
    let masters = parts.len() / 2;
    let (counts, keys) = parts.split_at(masters);
    let is_null = |p: &Bytes| matches!(p.as_ref(), b"$-1\r\n" | b"_\r\n");
    let mut weighted = Vec::with_capacity(masters);
    for (count, key) in counts.iter().zip(keys) {
        let count = u64::try_from(integer(count)?).unwrap_or(0);
        if count > 0 && !is_null(key) {
            weighted.push((count, key));
        }
    }
    let total: u64 = weighted.iter().map(|(count, _)| count).sum();
    if total == 0 {
        return keys.first().cloned();
    }
    let mut pick = seed % total;
    for (count, key) in weighted {
        if pick < count {
            return Some(key.clone());
        }
        pick -= count;
    }
    None
}

/// Every part's elements in one aggregate without duplicates, in order of first appearance
/// (PUBSUB CHANNELS).
fn union_arrays(parts: &[Bytes]) -> Option<Bytes> {
    let arrays = aggregates(parts, b"*~")?;
    let mut seen: HashSet<&[u8]> = HashSet::new();
    let mut unique: Vec<&[u8]> = Vec::new();
    for (part, array) in parts.iter().zip(&arrays) {
        for range in &array.elements {
            let element = &part[range.clone()];
            if seen.insert(element) {
                unique.push(element);
            }
        }
    }
    let mut out = BytesMut::with_capacity(unique.iter().map(|e| e.len()).sum::<usize>() + 16);
    reply::put_header(&mut out, arrays[0].kind, unique.len());
    unique.iter().for_each(|e| out.extend_from_slice(e));
    Some(out.freeze())
}

/// Flat `[name, count, …]` arrays or RESP3 maps with the same names in the same order in every
/// part: the names, each with the sum of its counts (PUBSUB NUMSUB).
fn sum_pairs(parts: &[Bytes]) -> Option<Bytes> {
    let all = aggregates(parts, b"*%")?;
    let first = &all[0];
    if first.elements.len() % 2 != 0 || all.iter().any(|a| a.count != first.count) {
        return None;
    }
    let mut out = BytesMut::with_capacity(parts[0].len() + 16);
    reply::put_header(&mut out, first.kind, first.count);
    for at in (0..first.elements.len()).step_by(2) {
        let name = &parts[0][first.elements[at].clone()];
        let mut sum = 0i64;
        for (part, aggregate) in parts.iter().zip(&all) {
            if &part[aggregate.elements[at].clone()] != name {
                return None;
            }
            sum = sum.checked_add(integer(&part[aggregate.elements[at + 1].clone()])?)?;
        }
        out.extend_from_slice(name);
        reply::put_integer(&mut out, sum);
    }
    Some(out.freeze())
}

/// The reply of `SCAN <node cursor> …` on master `master` of `masters`, with the node's cursor
/// replaced by the client cursor that continues the scan ([`split_scan_cursor`] has the encoding).
fn scan_cursor(parts: &[Bytes], master: usize, masters: usize) -> Option<Bytes> {
    let [part] = parts else {
        return None;
    };
    let scan = aggregate(part).filter(|a| a.kind == b'*' && a.elements.len() == 2)?;
    let (cursor_kind, node_cursor) = string_payload(&part[scan.elements[0].clone()])?;
    let next = match parse_u64(node_cursor)? {
        0 if master + 1 < masters => join_scan_cursor(0, master + 1),
        0 => Some(0),
        node => join_scan_cursor(node, master),
    };
    let Some(next) = next else {
        let error = format!(
            "proxy cannot continue SCAN: master {master} of {masters} or its cursor is beyond what a proxy cursor holds"
        );
        return Some(ProxyError::Merge(error.into()).to_resp());
    };
    let keys = &part[scan.elements[1].clone()];
    let mut out = BytesMut::with_capacity(keys.len() + 32);
    reply::put_header(&mut out, b'*', 2);
    put_string(&mut out, cursor_kind, next.to_string().as_bytes());
    out.extend_from_slice(keys);
    Some(out.freeze())
}

mod info;

#[cfg(test)]
mod tests;
