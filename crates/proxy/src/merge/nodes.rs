//! Merges for operator commands sent to named nodes (CONFIG, SLOWLOG, LATENCY, MEMORY): unlike
//! the other merges they know which node gave which reply (`nodes[i]` answered part `i`), so the
//! merged reply can say so.
//!
//! Pure like the rest of `merge`, with one exception: CONFIG GET logs a rate-limited warning when
//! the masters disagree on a value, since a Redis reply has no room for such a note.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};

use super::{Aggregate, aggregate, aggregates, describe, integer, string_payload};
use crate::command::{OwnConfig, OwnValue};
use crate::error::ProxyError;
use crate::resp::reply::{self, Protocol};

/// Parameters that differ from node to node by nature (addresses, files, failover preference):
/// masters disagreeing on them is expected and not logged.
const PER_NODE_PARAMETERS: &[&str] = &[
    "port",
    "tls-port",
    "cluster-port",
    "bind",
    "bind-source-addr",
    "dir",
    "dbfilename",
    "logfile",
    "pidfile",
    "syslog-ident",
    "unixsocket",
    "appendfilename",
    "appenddirname",
    "cluster-config-file",
    "cluster-announce-ip",
    "cluster-announce-port",
    "cluster-announce-tls-port",
    "cluster-announce-bus-port",
    "cluster-announce-hostname",
    "cluster-announce-human-nodename",
    "replicaof",
    "slaveof",
    "replica-announce-ip",
    "replica-announce-port",
    "slave-announce-ip",
    "slave-announce-port",
    "replica-priority",
    "slave-priority",
    "tls-cert-file",
    "tls-key-file",
    "tls-client-cert-file",
    "tls-client-key-file",
];

/// Longest node error quoted in an [`all_ok_named`] error, in bytes.
const MAX_REASON: usize = 200;

/// CONFIG GET from every master: the first master's reply (its parameters, in its order, in its
/// form: RESP2 flat array or RESP3 map) with, per parameter, the value most masters have; a tie
/// goes to the earliest master in map order (the master of slot 0 first). Parameters the masters
/// disagree on (other than [`PER_NODE_PARAMETERS`]) are logged, each master's value with it,
/// secrets excepted.
pub(super) fn config_values(parts: &[Bytes], nodes: &[String], own: &OwnConfig) -> Option<Bytes> {
    if parts.len() != nodes.len() {
        return None;
    }
    let all = aggregates(parts, b"*%")?;
    let pairs: Vec<Vec<(&[u8], &[u8])>> =
        parts.iter().zip(&all).map(|(part, agg)| name_value_pairs(part, agg)).collect::<Option<_>>()?;
    let others: Vec<HashMap<&[u8], &[u8]>> = pairs[1..].iter().map(|p| p.iter().copied().collect()).collect();
    let mut out = BytesMut::with_capacity(parts[0].len());
    reply::put_header(&mut out, all[0].kind, all[0].count);
    let mut disagreements = Vec::new();
    for &(name, first) in &pairs[0] {
        let values: Vec<Option<&[u8]>> =
            std::iter::once(Some(first)).chain(others.iter().map(|o| o.get(name).copied())).collect();
        let chosen = majority(&values).unwrap_or(first);
        let name_text = string_payload(name).map_or(name, |(_, text)| text);
        out.extend_from_slice(name);
        match own_value(own, name_text, chosen) {
            Some((kind, value)) => super::put_string(&mut out, kind, &value),
            None => out.extend_from_slice(chosen),
        }
        let expected = PER_NODE_PARAMETERS.iter().any(|p| p.as_bytes().eq_ignore_ascii_case(name_text));
        if !expected && values.iter().flatten().any(|v| *v != chosen) {
            disagreements.push(disagreement(name_text, &values, nodes));
        }
    }
    if !disagreements.is_empty() {
        crate::log_limited!(
            1,
            warn,
            parameters = %disagreements.join("; "),
            "masters disagree on CONFIG values; CONFIG GET answered with the value most masters have \
             (on a tie, the first master's)"
        );
    }
    Some(out.freeze())
}

/// The proxy's value of parameter `name` where it keeps the setting itself ([`OwnConfig`]), as a
/// string of the type of the nodes' `value`.
fn own_value(own: &OwnConfig, name: &[u8], value: &[u8]) -> Option<(u8, Vec<u8>)> {
    let (_, shown) = own.iter().find(|(own_name, _)| own_name.eq_ignore_ascii_case(name))?;
    let (kind, node_value) = string_payload(value)?;
    let shown = match shown {
        OwnValue::Whole(text) => text.clone().into_bytes(),
        OwnValue::Classes(classes) => crate::output_classes::config_value_with(node_value, classes)?,
    };
    Some((kind, shown))
}

/// The `(name, value)` element pairs of a CONFIG GET reply: a RESP2 flat array or a RESP3 map.
fn name_value_pairs<'a>(part: &'a [u8], agg: &Aggregate) -> Option<Vec<(&'a [u8], &'a [u8])>> {
    if !agg.elements.len().is_multiple_of(2) {
        return None;
    }
    Some(agg.elements.chunks(2).map(|pair| (&part[pair[0].clone()], &part[pair[1].clone()])).collect())
}

/// The value most entries have (entries of `None` do not vote); on a tie, the earliest one's.
fn majority<'a>(values: &[Option<&'a [u8]>]) -> Option<&'a [u8]> {
    let mut best: Option<(&[u8], usize)> = None;
    for value in values.iter().flatten() {
        let votes = values.iter().flatten().filter(|v| *v == value).count();
        // Strictly more votes: among equals the earliest, seen first, stays.
        if best.is_none_or(|(_, most)| votes > most) {
            best = Some((value, votes));
        }
    }
    best.map(|(value, _)| value)
}

/// `maxmemory: 127.0.0.1:7000=0, 127.0.0.1:7001=1mb` for the warning; the values of secrets
/// (`requirepass`, `masterauth`, `tls-key-file-pass` …) are never written.
fn disagreement(name: &[u8], values: &[Option<&[u8]>], nodes: &[String]) -> String {
    let name = String::from_utf8_lossy(name);
    let secret = name.contains("pass") || name.contains("auth");
    let shown: Vec<String> = values
        .iter()
        .zip(nodes)
        .map(|(value, node)| match value {
            None => format!("{node}=(none)"),
            Some(_) if secret => format!("{node}=(hidden)"),
            Some(value) => format!("{node}={}", describe(value)),
        })
        .collect();
    format!("{name}: {}", shown.join(", "))
}

/// `+OK` when every node said `+OK`; the error itself when every node answered the same error (no
/// node took the change: one node's answer, as Redis' own tests expect it); else one error naming
/// every node that did not say OK, grouped by what they answered, e.g. `ERR CONFIG SET failed on
/// 127.0.0.1:7001 (ERR Unsupported CONFIG parameter: foo); 5 of 6 nodes said OK`. The nodes that
/// said OK keep the change: Redis has no way to apply a setting to several nodes at once, and the
/// count tells the operator so.
pub(super) fn all_ok_named(parts: &[Bytes], command: &str, nodes: &[String]) -> Option<Bytes> {
    if parts.is_empty() || parts.len() != nodes.len() {
        return None;
    }
    if super::is_error(&parts[0]) && parts.iter().all(|part| part == &parts[0]) {
        return Some(parts[0].clone());
    }
    let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
    for (part, node) in parts.iter().zip(nodes) {
        if part.as_ref() == b"+OK\r\n" {
            continue;
        }
        let reason = reply_text(part);
        match groups.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, failed)) => failed.push(node),
            None => groups.push((reason, vec![node])),
        }
    }
    if groups.is_empty() {
        return Some(reply::ok());
    }
    let failed: usize = groups.iter().map(|(_, nodes)| nodes.len()).sum();
    let detail: Vec<String> = groups.iter().map(|(reason, nodes)| format!("{} ({reason})", nodes.join(", "))).collect();
    Some(
        ProxyError::Merge(
            format!(
                "{command} failed on {}; {} of {} nodes said OK",
                detail.join("; on "),
                parts.len() - failed,
                parts.len()
            )
            .into(),
        )
        .to_resp(),
    )
}

/// What a node answered, for an error message: an error's text, else the reply described.
fn reply_text(part: &[u8]) -> String {
    let text = match part.first() {
        Some(b'-') => String::from_utf8_lossy(part[1..].strip_suffix(b"\r\n").unwrap_or(&part[1..])).into_owned(),
        // A RESP3 blob error: `!<len>\r\n<text>\r\n`.
        Some(b'!') => {
            let body = crate::resp::scan::string_at(part, 0).map(|(_, body)| body);
            String::from_utf8_lossy(body.unwrap_or(&part[1..])).into_owned()
        }
        _ => describe(part),
    };
    match text.char_indices().nth(MAX_REASON) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// SLOWLOG GET from every master: every entry, newest first by timestamp (entries of one second
/// keep master order, and each master's own newest-first order), at most `count`, each tagged
/// with its node in the client-name field (see [`put_tagged_entry`]).
///
/// Each master was asked for its newest `count` entries, so the newest `count` of the cluster are
/// among them.
pub(super) fn slowlog(parts: &[Bytes], nodes: &[String], count: usize) -> Option<Bytes> {
    if parts.len() != nodes.len() {
        return None;
    }
    let lists = aggregates(parts, b"*")?;
    let mut entries: Vec<(i64, usize, &[u8], Aggregate)> = Vec::new();
    for (node, (part, list)) in parts.iter().zip(&lists).enumerate() {
        for range in &list.elements {
            let bytes = &part[range.clone()];
            let entry = aggregate(bytes).filter(|e| e.kind == b'*' && e.elements.len() >= 2)?;
            let timestamp = integer(&bytes[entry.elements[1].clone()])?;
            entries.push((timestamp, node, bytes, entry));
        }
    }
    // Stable: equal timestamps keep the order they were collected in.
    entries.sort_by_key(|&(timestamp, ..)| std::cmp::Reverse(timestamp));
    entries.truncate(count);
    let size: usize = entries.iter().map(|(_, _, bytes, _)| bytes.len() + 32).sum();
    let mut out = BytesMut::with_capacity(size + 16);
    reply::put_header(&mut out, b'*', entries.len());
    for (_, node, bytes, entry) in &entries {
        put_tagged_entry(&mut out, bytes, entry, &nodes[*node]);
    }
    Some(out.freeze())
}

/// Appends one slow log entry with `node=<address>` as its client name (field 6 of Redis 4+'s
/// `[id, timestamp, duration, args, client address, client name]`), followed by ` name=<name>`
/// when the client had one. The client address stays as Redis wrote it: client libraries parse
/// it as `host:port` (Jedis' `HostAndPort`), while the name is free text everywhere. Entries of
/// another form are copied as received.
fn put_tagged_entry(out: &mut BytesMut, bytes: &[u8], entry: &Aggregate, node: &str) {
    let name = entry.elements.get(5).and_then(|range| string_payload(&bytes[range.clone()]));
    let Some((_, name)) = name else {
        out.extend_from_slice(bytes);
        return;
    };
    let tag = match name.is_empty() {
        true => format!("node={node}"),
        false => format!("node={node} name={}", String::from_utf8_lossy(name)),
    };
    reply::put_header(out, b'*', entry.elements.len());
    for (i, range) in entry.elements.iter().enumerate() {
        match i {
            5 => reply::put_bulk(out, tag.as_bytes()),
            _ => out.extend_from_slice(&bytes[range.clone()]),
        }
    }
}

/// Each master's reply as received, keyed by its address: a RESP3 map, or in RESP2 a flat array
/// `[address, reply, address, reply, …]`, the form RESP2 gives every map (CONFIG GET, HELLO).
pub(super) fn keyed_by_node(parts: &[Bytes], nodes: &[String], protocol: Protocol) -> Option<Bytes> {
    if parts.len() != nodes.len() {
        return None;
    }
    let size: usize = parts.iter().zip(nodes).map(|(p, n)| p.len() + n.len() + 16).sum();
    let mut out = BytesMut::with_capacity(size + 16);
    reply::put_map_header(&mut out, protocol, parts.len());
    for (part, node) in parts.iter().zip(nodes) {
        reply::put_bulk(&mut out, node.as_bytes());
        out.extend_from_slice(part);
    }
    Some(out.freeze())
}

#[cfg(test)]
mod tests;
