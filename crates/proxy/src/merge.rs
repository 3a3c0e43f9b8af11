//! Combining the replies of a request that was split per slot (MGET, MSET, DEL …) or fanned out to
//! every master (DBSIZE, FLUSHALL) into the one reply a single Redis node would have given.
//!
//! Pure: raw reply bytes in, raw reply bytes out. Element bytes are copied as received, never
//! decoded and re-encoded.

use bytes::{Bytes, BytesMut};

use crate::command::Merge;
use crate::resp::{FrameScanner, reply};

/// Where one key of the original request went: which part, and its index among that part's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPlace {
    pub part: u32,
    pub index: u32,
}

/// Merges the replies of all parts, `parts[i]` being the reply to part `i`.
///
/// The first error reply (in part order) wins, as the client would have seen an error from a
/// single node too. `places` is only used by [`Merge::ArrayInKeyOrder`].
pub fn merge(kind: &Merge, parts: &[Bytes], places: &[KeyPlace]) -> Bytes {
    if *kind == Merge::LastReply {
        return parts.last().cloned().unwrap_or_else(|| reply::error("ERR proxy merged no replies"));
    }
    if let Some(error) = parts.iter().find(|p| p.first() == Some(&b'-')) {
        return error.clone();
    }
    let merged = match kind {
        Merge::AllOk => parts.iter().all(|p| p.as_ref() == b"+OK\r\n").then(reply::ok),
        Merge::SumIntegers => {
            parts.iter().try_fold(0i64, |sum, p| integer(p).and_then(|n| sum.checked_add(n))).map(reply::integer)
        }
        Merge::ArrayInKeyOrder => array_in_key_order(parts, places),
        Merge::LastReply => parts.last().cloned(),
    };
    merged.unwrap_or_else(|| reply::error("ERR proxy received an unexpected reply shape from a node while merging"))
}

/// Parses an integer reply `:n\r\n`.
fn integer(reply: &[u8]) -> Option<i64> {
    let body = reply.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    std::str::from_utf8(body).ok()?.parse().ok()
}

/// The byte ranges of the elements of an array reply.
fn elements(reply: &[u8]) -> Option<Vec<(usize, usize)>> {
    let header_end = reply.windows(2).position(|w| w == b"\r\n")?;
    if reply.first() != Some(&b'*') {
        return None;
    }
    let count: usize = std::str::from_utf8(&reply[1..header_end]).ok()?.parse().ok()?;
    let mut ranges = Vec::with_capacity(count);
    let mut at = header_end + 2;
    for _ in 0..count {
        let len = FrameScanner::new().scan(&reply[at..]).ok()??;
        ranges.push((at, at + len));
        at += len;
    }
    (at == reply.len()).then_some(ranges)
}

fn array_in_key_order(parts: &[Bytes], places: &[KeyPlace]) -> Option<Bytes> {
    let ranges: Vec<Vec<(usize, usize)>> = parts.iter().map(|p| elements(p)).collect::<Option<_>>()?;
    let size: usize = parts.iter().map(|p| p.len()).sum::<usize>() + 16;
    let mut out = BytesMut::with_capacity(size);
    reply::put_header(&mut out, b'*', places.len());
    for place in places {
        let part = usize::try_from(place.part).ok()?;
        let (start, end) = *ranges.get(part)?.get(usize::try_from(place.index).ok()?)?;
        out.extend_from_slice(&parts[part][start..end]);
    }
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &[u8]) -> Bytes {
        Bytes::copy_from_slice(s)
    }

    #[test]
    fn mget_values_come_back_in_key_order() {
        // MGET a b c: a and c went to part 0, b to part 1.
        let parts = [b(b"*2\r\n$2\r\nva\r\n$-1\r\n"), b(b"*1\r\n$2\r\nvb\r\n")];
        let places = [KeyPlace { part: 0, index: 0 }, KeyPlace { part: 1, index: 0 }, KeyPlace { part: 0, index: 1 }];
        let merged = merge(&Merge::ArrayInKeyOrder, &parts, &places);
        assert_eq!(&merged[..], b"*3\r\n$2\r\nva\r\n$2\r\nvb\r\n$-1\r\n");
    }

    #[test]
    fn counts_are_summed_and_oks_collapse() {
        let parts = [b(b":2\r\n"), b(b":0\r\n"), b(b":1\r\n")];
        assert_eq!(&merge(&Merge::SumIntegers, &parts, &[])[..], b":3\r\n");
        let oks = [b(b"+OK\r\n"), b(b"+OK\r\n")];
        assert_eq!(&merge(&Merge::AllOk, &oks, &[])[..], b"+OK\r\n");
    }

    #[test]
    fn first_error_wins() {
        let parts = [b(b":1\r\n"), b(b"-WRONGTYPE x\r\n"), b(b"-ERR y\r\n")];
        assert_eq!(&merge(&Merge::SumIntegers, &parts, &[])[..], b"-WRONGTYPE x\r\n");
    }

    #[test]
    fn unexpected_shapes_are_an_error_not_a_panic() {
        let parts = [b(b"+QUEUED\r\n")];
        let places = [KeyPlace { part: 0, index: 0 }];
        assert!(merge(&Merge::ArrayInKeyOrder, &parts, &places).starts_with(b"-ERR"));
        assert!(merge(&Merge::SumIntegers, &parts, &[]).starts_with(b"-ERR"));
        assert!(merge(&Merge::AllOk, &[b(b"+QUEUED\r\n")], &[]).starts_with(b"-ERR"));
        let short = [b(b"*1\r\n$1\r\na\r\n")];
        let too_many = [KeyPlace { part: 0, index: 3 }];
        assert!(merge(&Merge::ArrayInKeyOrder, &short, &too_many).starts_with(b"-ERR"));
    }
}
