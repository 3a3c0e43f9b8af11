//! Replies the proxy writes itself (local answers, errors, merged results), in RESP2 or RESP3.
//!
//! Replies from Redis never pass through here: they are forwarded as the bytes received.

use bytes::{BufMut, Bytes, BytesMut};

use super::put_decimal;

/// The protocol version a client negotiated with `HELLO` (2 unless it asked for 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Resp2,
    Resp3,
}

/// `+OK`.
pub fn ok() -> Bytes {
    Bytes::from_static(b"+OK\r\n")
}

/// A simple string reply, `+text`. `text` must not contain CR or LF.
pub fn simple(text: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(text.len() + 3);
    out.put_u8(b'+');
    out.put_slice(text.as_bytes());
    out.put_slice(b"\r\n");
    out.freeze()
}

/// An error reply. `text` starts with the error code (`ERR`, `CROSSSLOT`, `NOPERM` …); line breaks
/// are replaced by spaces so that a message can never break the framing.
pub fn error(text: &str) -> Bytes {
    error_bytes(text.as_bytes())
}

/// [`error`] of a text that may hold bytes other than UTF-8 (a client's own, quoted as Redis
/// quotes them).
pub fn error_bytes(text: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(text.len() + 3);
    out.put_u8(b'-');
    out.extend(text.iter().map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
    out.put_slice(b"\r\n");
    out.freeze()
}

/// An integer reply.
pub fn integer(n: i64) -> Bytes {
    let mut out = BytesMut::with_capacity(24);
    out.put_u8(b':');
    put_decimal(&mut out, n);
    out.put_slice(b"\r\n");
    out.freeze()
}

/// A bulk string reply.
pub fn bulk(data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 16);
    put_bulk(&mut out, data);
    out.freeze()
}

/// Text meant for people (INFO, CLIENT INFO): a bulk string in RESP2, a verbatim string
/// (`=len\r\ntxt:…`) in RESP3, as Redis answers.
pub fn text(protocol: Protocol, text: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(text.len() + 24);
    put_text(&mut out, protocol, text);
    out.freeze()
}

/// Appends [`text`]'s encoding of `text`.
pub fn put_text(out: &mut BytesMut, protocol: Protocol, text: &[u8]) {
    match protocol {
        Protocol::Resp2 => put_bulk(out, text),
        Protocol::Resp3 => {
            put_header(out, b'=', text.len() + 4);
            out.extend_from_slice(b"txt:");
            out.extend_from_slice(text);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// The null reply: `$-1` in RESP2, `_` in RESP3.
pub fn null(protocol: Protocol) -> Bytes {
    match protocol {
        Protocol::Resp2 => Bytes::from_static(b"$-1\r\n"),
        Protocol::Resp3 => Bytes::from_static(b"_\r\n"),
    }
}

/// Appends a bulk string.
pub fn put_bulk(out: &mut BytesMut, data: &[u8]) {
    put_header(out, b'$', data.len());
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// Appends an aggregate or bulk header such as `*3\r\n`.
pub fn put_header(out: &mut BytesMut, kind: u8, len: usize) {
    out.put_u8(kind);
    put_decimal(out, len as i64);
    out.put_slice(b"\r\n");
}

/// Appends a map header: a RESP3 map, or a flat array of twice the length in RESP2.
pub fn put_map_header(out: &mut BytesMut, protocol: Protocol, pairs: usize) {
    match protocol {
        Protocol::Resp2 => put_header(out, b'*', pairs * 2),
        Protocol::Resp3 => put_header(out, b'%', pairs),
    }
}

/// Appends an integer.
pub fn put_integer(out: &mut BytesMut, n: i64) {
    out.put_u8(b':');
    put_decimal(out, n);
    out.put_slice(b"\r\n");
}

/// An array of bulk strings.
pub fn bulk_array<A: AsRef<[u8]>>(items: &[A]) -> Bytes {
    let mut out = BytesMut::new();
    put_header(&mut out, b'*', items.len());
    for item in items {
        put_bulk(&mut out, item.as_ref());
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_cannot_break_framing() {
        assert_eq!(&error("ERR bad\r\nthing")[..], b"-ERR bad  thing\r\n");
    }

    #[test]
    fn null_depends_on_protocol() {
        assert_eq!(&null(Protocol::Resp2)[..], b"$-1\r\n");
        assert_eq!(&null(Protocol::Resp3)[..], b"_\r\n");
    }

    #[test]
    fn arrays_and_maps() {
        assert_eq!(&bulk_array(&["a", "bc"])[..], b"*2\r\n$1\r\na\r\n$2\r\nbc\r\n");
        let mut out = BytesMut::new();
        put_map_header(&mut out, Protocol::Resp3, 2);
        put_map_header(&mut out, Protocol::Resp2, 2);
        assert_eq!(&out[..], b"%2\r\n*4\r\n");
        assert_eq!(&integer(-3)[..], b":-3\r\n");
    }
}
