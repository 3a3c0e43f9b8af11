//! A request of several parts (a split, a fan-out, a transaction): its parts' replies, merged
//! into the client's once the last one is in.

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;

use super::{Deferred, ran};
use crate::command::Merge;
use crate::executor::Part;
use crate::merge::{KeyPlace, merge, put_string, string_payload};

/// A request of several parts whose replies are merged.
#[derive(Debug)]
pub(super) struct Multi {
    pub(super) parts: Vec<Part>,
    missing: usize,
    pub(super) merge: Merge,
    places: Vec<KeyPlace>,
    /// Text the proxy puts before the merged bulk string (INFO's own sections).
    pub(super) prefix: Option<Bytes>,
    /// Run with the merged reply once it is known ([`super::Pipeline::on_merged`]).
    pub(super) on_merged: Option<OnMerged>,
}

impl Multi {
    pub(super) fn new(parts: Vec<Part>, merge: Merge, places: Vec<KeyPlace>) -> Multi {
        Multi { missing: parts.len(), parts, merge, places, prefix: None, on_merged: None }
    }
}

/// What the session does once a request's merged reply is known, given that reply: a change of
/// the proxy's own that must follow what the nodes did (the settings of a `CONFIG SET` the proxy
/// keeps too, changed only where the nodes accepted the command, as one node changes all of a
/// CONFIG SET's parameters or none).
pub struct OnMerged(FollowUp);

/// A follow-up given the merged reply.
type FollowUp = Box<dyn FnOnce(&[u8]) + Send>;

impl OnMerged {
    pub fn new(then: impl FnOnce(&[u8]) + Send + 'static) -> OnMerged {
        OnMerged(Box::new(then))
    }
}

impl std::fmt::Debug for OnMerged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnMerged")
    }
}

/// Stores the reply of part `part` of `multi`: the parts deferred on it, and the merged reply once
/// it was the last one missing.
#[inline(never)]
pub(super) fn complete_part(multi: &mut Multi, part: u32, reply: Bytes) -> (Deferred, Option<Bytes>) {
    let Multi { parts, missing, merge: kind, places, prefix, on_merged } = multi;
    let Some(p) = parts.get_mut(part as usize).filter(|p| p.reply.is_none()) else {
        return (Deferred::default(), None);
    };
    let deferred = p.take_deferred();
    // Looked at only where parts wait on this one: a single request's reply is never inspected.
    let ran = !deferred.is_empty() && ran(&reply);
    let mut deferred = Deferred { parts: deferred, ran, ran_in_exec: 0 };
    p.reply = Some(reply);
    *missing -= 1;
    if *missing > 0 {
        return (deferred, None);
    }
    let replies: SmallVec<[Bytes; 16]> = parts.iter_mut().filter_map(|p| p.reply.take()).collect();
    let merged = merge(kind, &replies, places);
    if let Some(OnMerged(then)) = on_merged.take() {
        then(&merged);
    }
    if matches!(kind, Merge::Exec { .. }) {
        deferred.ran_in_exec = array_len(&merged);
    }
    let merged = match prefix.take() {
        Some(text) => prepend_to_bulk(&text, &merged),
        None => merged,
    };
    (deferred, Some(merged))
}

/// The length of the array `reply` (0 for anything else: a null, an error).
fn array_len(reply: &[u8]) -> u64 {
    let Some(header) = reply.strip_prefix(b"*") else { return 0 };
    let end = header.iter().position(|&b| b == b'\r').unwrap_or(0);
    std::str::from_utf8(&header[..end]).ok().and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// `text` followed by the content of the bulk (or RESP3 verbatim) string `bulk`, as one string of
/// the same type; an error (or any other reply) is returned as is.
pub(super) fn prepend_to_bulk(text: &[u8], bulk: &Bytes) -> Bytes {
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
