//! Key → hash slot, as the Redis Cluster specification defines it.
//!
//! `HASH_SLOT = CRC16(key) mod 16384`, where only the part inside the first `{…}` is hashed when it
//! is non-empty, so that applications can force related keys into one slot.

/// Number of hash slots in a Redis Cluster.
pub const SLOT_COUNT: u16 = 16384;

/// A hash slot number, always below [`SLOT_COUNT`].
pub type Slot = u16;

/// CRC-16/XMODEM, the cluster's hash, sixteen bytes per step (slice-by-16 tables, 8 KiB, built
/// at compile time): a 16-byte key costs about a third of the byte-at-a-time table of the `crc16`
/// crate it replaces (bench/RESULTS.md).
static XMODEM: crc::Crc<u16, crc::Table<16>> = crc::Crc::<u16, crc::Table<16>>::new(&crc::CRC_16_XMODEM);

/// The slot a key belongs to. `#[inline]`: it is on every request's path, and the proxy calls it
/// from another crate.
#[inline]
pub fn key_slot(key: &[u8]) -> Slot {
    XMODEM.checksum(hash_tag(key)) & (SLOT_COUNT - 1)
}

/// The part of the key that is hashed: the content of the first `{…}` when it is non-empty,
/// otherwise the whole key.
///
/// The braces are looked for with `memchr` (vector compares): byte by byte the search cost about as
/// much as the hash itself, ~60 instructions more per 16-byte key (bench/RESULTS.md); memchr's
/// portable word-at-a-time search measured no better than the byte loop on keys this short. Keys
/// of 8 to 16 bytes, the usual ones, are searched for `{` as two overlapping words instead
/// ([`find_in_short`]), without memchr's call and set-up.
#[inline]
pub fn hash_tag(key: &[u8]) -> &[u8] {
    let open = match key.len() {
        8..=16 => find_in_short(key, b'{'),
        _ => memchr::memchr(b'{', key),
    };
    let Some(open) = open else {
        return key;
    };
    match memchr::memchr(b'}', &key[open + 1..]) {
        // `{}` hashes the whole key: an empty tag would put every such key into one slot by accident.
        Some(0) | None => key,
        Some(len) => &key[open + 1..open + 1 + len],
    }
}

/// The first `byte` in `bytes` (8 to 16 of them), read as two words that overlap when there are
/// fewer than 16: a byte equal to `byte` becomes zero, and the lowest zero byte of a word is its
/// lowest byte whose top bit survives `(x - 0x01…) & !x & 0x80…` (higher ones may be false, the
/// lowest never is).
#[inline]
fn find_in_short(bytes: &[u8], byte: u8) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const TOPS: u64 = ONES * 0x80;
    let first_match = |at: usize| {
        let word = u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?) ^ (ONES * u64::from(byte));
        let found = word.wrapping_sub(ONES) & !word & TOPS;
        (found != 0).then(|| at + found.trailing_zeros() as usize / 8)
    };
    first_match(0).or_else(|| first_match(bytes.len().checked_sub(8)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_the_cluster_spec_test_vector() {
        // The cluster spec's reference: CRC16 of "123456789" is 0x31C3.
        assert_eq!(XMODEM.checksum(b"123456789"), 0x31C3);
    }

    #[test]
    fn the_sliced_crc_matches_the_bitwise_definition_at_every_length() {
        // CRC-16/XMODEM bit by bit, as Redis' crc16.c defines it (poly 0x1021, init 0).
        fn bitwise(bytes: &[u8]) -> u16 {
            bytes.iter().fold(0u16, |crc, &b| {
                (0..8).fold(crc ^ (u16::from(b) << 8), |c, _| if c & 0x8000 != 0 { (c << 1) ^ 0x1021 } else { c << 1 })
            })
        }
        // Lengths around the 16-byte steps, bytes of every value.
        let bytes: Vec<u8> = (0..100u32).map(|i| (i * 97 + 13) as u8).collect();
        for len in 0..=bytes.len() {
            assert_eq!(XMODEM.checksum(&bytes[..len]), bitwise(&bytes[..len]), "length {len}");
        }
    }

    #[test]
    fn slots_match_redis_cluster_keyslot() {
        // Values from `CLUSTER KEYSLOT` on a real Redis 7.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"hello"), 866);
        assert_eq!(key_slot(b""), 0);
        assert_eq!(key_slot(b"123456789"), 0x31C3 & 16383);
    }

    #[test]
    fn hash_tags_follow_the_spec_examples() {
        // Examples from the cluster specification's "Hash tags" section.
        assert_eq!(hash_tag(b"{user1000}.following"), b"user1000");
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"no-tag"), b"no-tag");
        assert_eq!(hash_tag(b"open{only"), b"open{only");
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"{user1000}.followers"));
        assert_eq!(hash_tag(b"{"), b"{");
        assert_eq!(hash_tag(b"}{"), b"}{");
        assert_eq!(hash_tag(b"a{b}"), b"b");
        // 8 to 16 bytes (two words), a brace in each place.
        for len in 8..=16 {
            for at in 0..len {
                let mut key = vec![b'x'; len];
                key[at] = b'{';
                if at + 2 < len {
                    key[at + 2] = b'}';
                }
                let expected: &[u8] = if at + 2 < len { &key[at + 1..at + 2] } else { &key };
                assert_eq!(hash_tag(&key), expected, "{:?}", String::from_utf8_lossy(&key));
            }
            assert_eq!(hash_tag(&vec![b'{'; len]), vec![b'{'; len].as_slice());
            assert_eq!(find_in_short(&vec![0xfb; len], b'{'), None);
        }
        // Longer than a vector: the search crosses its chunks.
        assert_eq!(hash_tag(b"0123456789abcdefghijklmnopqrstuvwxyz{tag}0123456789abcdef"), b"tag");
        assert_eq!(hash_tag(b"0123456789abcdefghijklmnopqrstuvwxyz{0123456789abcdefghij}"), b"0123456789abcdefghij");
    }
}
