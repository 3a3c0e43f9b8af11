//! The frames of subscription connections: what kind a frame is, what a confirmation says, how
//! many frames a command is answered with, and a frame in the client's protocol when the client
//! switched to RESP2 (`HELLO 2`) over connections opened in RESP3.

use bytes::{Bytes, BytesMut};

use crate::resp::reply::{self, Protocol};
use crate::resp::scan;

/// The kind of a pub/sub frame (`message`, `subscribe` …): the first bulk of an array.
pub(in crate::session) fn frame_kind(frame: &[u8]) -> Option<&[u8]> {
    // RESP2 arrays and RESP3 pushes alike.
    let (b'*' | b'>', _, first) = scan::header(frame, 0)? else {
        return None;
    };
    bulk_at(frame, first)
}

/// The content of the bulk string at `at` in `frame`; `None` for anything else (a null included).
fn bulk_at(frame: &[u8], at: usize) -> Option<&[u8]> {
    scan::string_at(frame, at).and_then(|(kind, payload)| (kind == b'$').then_some(payload))
}

/// The type byte and the elements of an aggregate frame (a RESP2 array, a RESP3 push); `None`
/// for any other frame or one cut short.
fn elements(frame: &[u8]) -> Option<(u8, Vec<&[u8]>)> {
    let (kind @ (b'*' | b'>'), count, mut at) = scan::header(frame, 0)? else {
        return None;
    };
    let mut elements = Vec::with_capacity(count.min(16));
    for _ in 0..count {
        let len = crate::resp::FrameScanner::new().scan(frame.get(at..)?).ok()??;
        elements.push(&frame[at..at + len]);
        at += len;
    }
    Some((kind, elements))
}

/// Whether a frame of that kind (see [`frame_kind`], lowercased) is a message: what a
/// subscription delivers, rather than a confirmation or a `PING` answer.
pub(super) fn is_message(kind: Option<&[u8]>) -> bool {
    matches!(kind, Some(b"message" | b"pmessage" | b"smessage"))
}

/// What a message frame was delivered for: the channel of a `message` or `smessage`, the pattern
/// of a `pmessage`.
pub(super) fn subject(message: &[u8]) -> Option<&[u8]> {
    let (_, elements) = elements(message)?;
    bulk_at(elements.get(1)?, 0)
}

/// The channel a message frame was published on: the second element of a `message` or
/// `smessage`, the third of a `pmessage`.
pub(super) fn channel(message: &[u8]) -> Option<&[u8]> {
    let at = match frame_kind(message)?.eq_ignore_ascii_case(b"pmessage") {
        true => 2,
        false => 1,
    };
    let (_, elements) = elements(message)?;
    bulk_at(elements.get(at)?, 0)
}

/// `(kind, channel, count)` of a (un)subscribe confirmation, RESP2 array or RESP3 push; the
/// channel is `None` for the null of an unsubscribe with nothing subscribed.
pub(super) fn parse_confirmation(frame: &[u8]) -> Option<(Vec<u8>, Option<Bytes>, i64)> {
    let (_, elements) = elements(frame)?;
    let [kind, name, count] = elements.get(..3)? else {
        return None;
    };
    let bulk = |element: &[u8]| bulk_at(element, 0).map(<[u8]>::to_vec);
    let kind = bulk(kind)?.to_ascii_lowercase();
    let name = bulk(name).map(Bytes::from);
    let count = scan::integer(count)?;
    Some((kind, name, count))
}

/// `confirmation` with the subscription count it ends with replaced by `count`; `None` for a
/// frame that is no confirmation.
pub(super) fn with_count(confirmation: &[u8], count: i64) -> Option<Bytes> {
    let (kind, elements) = elements(confirmation)?;
    let (last, rest) = elements.split_last()?;
    if !last.starts_with(b":") {
        return None;
    }
    let mut out = BytesMut::with_capacity(confirmation.len() + 4);
    reply::put_header(&mut out, kind, elements.len());
    for element in rest {
        out.extend_from_slice(element);
    }
    reply::put_integer(&mut out, count);
    Some(out.freeze())
}

/// The arguments of a command as the proxy sends it (a RESP array of bulk strings), after its
/// name: the channels of a (un)subscription.
pub(in crate::session) fn arguments(payload: &[u8]) -> Vec<Bytes> {
    let Some((b'*', elements)) = elements(payload) else {
        return Vec::new();
    };
    elements.iter().skip(1).filter_map(|element| bulk_at(element, 0)).map(Bytes::copy_from_slice).collect()
}

/// How many frames the node will answer `payload` with on a subscribed connection: one per
/// channel for (un)subscriptions (for an argument-less unsubscribe, one per current subscription,
/// at least one), one for PING.
pub(super) fn expected_frames(payload: &[u8], channels_now: usize, patterns_now: usize) -> usize {
    let Some(kind) = frame_kind(payload).map(<[u8]>::to_ascii_lowercase) else {
        return 0;
    };
    let argc: usize = payload
        .strip_prefix(b"*")
        .and_then(|p| p.split(|&b| b == b'\r').next())
        .and_then(|n| std::str::from_utf8(n).ok()?.parse().ok())
        .unwrap_or(1);
    let channels = argc.saturating_sub(1);
    match kind.as_slice() {
        b"ping" => 1,
        b"subscribe" | b"psubscribe" | b"ssubscribe" => channels,
        b"unsubscribe" | b"sunsubscribe" if channels == 0 => channels_now.max(1),
        b"punsubscribe" if channels == 0 => patterns_now.max(1),
        b"unsubscribe" | b"sunsubscribe" | b"punsubscribe" => channels,
        _ => 1,
    }
}

/// A (un)subscribe confirmation of `kind` for `channel` (`None`: the null of an unsubscribe with
/// nothing subscribed) with the subscription `count`, as an array in RESP2 and a push in RESP3.
pub(super) fn confirmation(kind: &[u8], channel: Option<&[u8]>, count: i64, protocol: Protocol) -> Bytes {
    let mut out = BytesMut::new();
    reply::put_header(&mut out, if protocol == Protocol::Resp3 { b'>' } else { b'*' }, 3);
    reply::put_bulk(&mut out, kind);
    match channel {
        Some(channel) => reply::put_bulk(&mut out, channel),
        None => out.extend_from_slice(&reply::null(protocol)),
    }
    reply::put_integer(&mut out, count);
    out.freeze()
}

/// `frame` as Redis writes it to a RESP2 subscriber, for a client that switched to RESP2
/// (`HELLO 2`) while its subscription connections speak RESP3: a push becomes an array (a null
/// channel a RESP2 null), a PING's plain answer the `pong` array (`PING` answers `+PONG` on a
/// RESP3 connection, `*2 pong ""` to a RESP2 subscriber). `None` for what reads the same in both
/// (errors).
pub(super) fn in_resp2(frame: &[u8]) -> Option<Bytes> {
    let mut out = BytesMut::with_capacity(frame.len() + 16);
    match frame.first()? {
        b'>' => {
            let (_, elements) = elements(frame)?;
            reply::put_header(&mut out, b'*', elements.len());
            for element in elements {
                out.extend_from_slice(if element == b"_\r\n" { b"$-1\r\n" } else { element });
            }
        }
        b'+' | b'$' => {
            reply::put_header(&mut out, b'*', 2);
            reply::put_bulk(&mut out, b"pong");
            match frame.starts_with(b"$") {
                true => out.extend_from_slice(frame),
                false => reply::put_bulk(&mut out, b""),
            }
        }
        _ => return None,
    }
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_kinds() {
        assert_eq!(frame_kind(b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n"), Some(&b"message"[..]));
        assert_eq!(frame_kind(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"), Some(&b"subscribe"[..]));
        assert_eq!(frame_kind(b"+PONG\r\n"), None);
        assert_eq!(frame_kind(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"), Some(&b"pong"[..]));
        assert_eq!(frame_kind(b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n"), Some(&b"message"[..]));
    }

    #[test]
    fn a_message_names_its_channel_after_a_pattern_if_any() {
        assert_eq!(channel(b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n"), Some(&b"ch"[..]));
        let pmessage = b">4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$16\r\n__keyspace@0__:k\r\n$3\r\nset\r\n";
        assert_eq!(channel(pmessage), Some(&b"__keyspace@0__:k"[..]));
        assert_eq!(channel(b"+PONG\r\n"), None);
    }

    #[test]
    fn resp3_frames_as_a_resp2_subscriber_gets_them() {
        let as_resp2 = |frame: &[u8]| in_resp2(frame).map(|f| f.to_vec());
        assert_eq!(
            as_resp2(b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n").as_deref(),
            Some(&b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n"[..])
        );
        assert_eq!(
            as_resp2(b">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n").as_deref(),
            Some(&b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"[..])
        );
        assert_eq!(as_resp2(b"+PONG\r\n").as_deref(), Some(&b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"[..]));
        assert_eq!(as_resp2(b"$2\r\nhi\r\n").as_deref(), Some(&b"*2\r\n$4\r\npong\r\n$2\r\nhi\r\n"[..]));
        assert_eq!(as_resp2(b"-ERR no\r\n"), None);
        assert_eq!(as_resp2(b">3\r\n$7\r\nmessage\r\n"), None, "a truncated push is not made up");
    }

    #[test]
    fn the_channels_of_a_command() {
        let payload = crate::resp::request::encode_command(&[&b"SSUBSCRIBE"[..], b"{a}x", b"{a}y"]);
        assert_eq!(arguments(&payload), [Bytes::from_static(b"{a}x"), Bytes::from_static(b"{a}y")]);
        assert!(arguments(b"+OK\r\n").is_empty());
    }

    #[test]
    fn confirmations_made_up_as_a_node_writes_them() {
        let made = |channel: Option<&[u8]>, count, protocol| confirmation(b"sunsubscribe", channel, count, protocol);
        assert_eq!(made(Some(b"c"), 2, Protocol::Resp2), &b"*3\r\n$12\r\nsunsubscribe\r\n$1\r\nc\r\n:2\r\n"[..]);
        assert_eq!(made(None, 0, Protocol::Resp2), &b"*3\r\n$12\r\nsunsubscribe\r\n$-1\r\n:0\r\n"[..]);
        assert_eq!(made(None, 0, Protocol::Resp3), &b">3\r\n$12\r\nsunsubscribe\r\n_\r\n:0\r\n"[..]);
    }

    #[test]
    fn a_confirmation_with_another_count() {
        let with = |frame: &[u8], count| with_count(frame, count).map(|f| f.to_vec());
        assert_eq!(
            with(b"*3\r\n$10\r\nssubscribe\r\n$1\r\nc\r\n:1\r\n", 12).as_deref(),
            Some(&b"*3\r\n$10\r\nssubscribe\r\n$1\r\nc\r\n:12\r\n"[..])
        );
        assert_eq!(
            with(b">3\r\n$12\r\nsunsubscribe\r\n_\r\n:3\r\n", 0).as_deref(),
            Some(&b">3\r\n$12\r\nsunsubscribe\r\n_\r\n:0\r\n"[..])
        );
        assert_eq!(with(b"*3\r\n$8\r\nsmessage\r\n$1\r\nc\r\n$1\r\nm\r\n", 1), None);
        assert_eq!(with(b"*3\r\n$10\r\nssubscribe\r\n", 1), None, "cut short");
    }

    #[test]
    fn confirmations_in_both_protocols() {
        let (kind, name, count) = parse_confirmation(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n").expect("valid");
        assert_eq!((kind.as_slice(), name.as_deref(), count), (&b"subscribe"[..], Some(&b"ch"[..]), 1));
        let (kind, name, count) = parse_confirmation(b">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n").expect("valid");
        assert_eq!((kind.as_slice(), name, count), (&b"unsubscribe"[..], None, 0));
        assert!(parse_confirmation(b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n").is_none());
    }
}
