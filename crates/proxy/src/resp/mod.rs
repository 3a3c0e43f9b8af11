//! RESP framing: requests in, reply boundaries out, and the few replies the proxy writes itself.

pub mod reply;
pub mod request;
pub mod scan;

pub use request::{Limits, ProtocolError, Request, RequestDecoder};
pub use scan::{FrameScanner, ScanError};

use bytes::{BufMut, BytesMut};

/// Appends `n` in decimal without allocating.
pub fn put_decimal(out: &mut BytesMut, n: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        out.put_u8(b'-');
    }
    out.put_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals() {
        for n in [0i64, 7, 10, 12345, -1, -987, i64::MAX, i64::MIN] {
            let mut out = BytesMut::new();
            put_decimal(&mut out, n);
            assert_eq!(&out[..], n.to_string().as_bytes());
        }
    }
}
