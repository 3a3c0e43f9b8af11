//! Command names to what the table knows of them, looked up case-insensitively without
//! allocating: the first step of every request.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Longest command or subcommand name a lookup can match; longer names are unknown commands, which
/// keeps the lowercased copy on the stack.
pub(super) const MAX_NAME: usize = 64;

/// Names of up to this many bytes (every Redis command but a few GEORADIUS variants) are looked
/// up as one integer.
const PACKED: usize = 15;

/// Names to `V`. A short name is packed, lowercased, into an integer with its length: a lookup
/// is a copy, a few integer operations, a multiply and an integer compare ([`Packed`]), where
/// hashing bytes and comparing slices cost ~150 instructions per request (bench/RESULTS.md).
/// Longer names go through a byte-keyed map.
#[derive(Debug, Clone)]
pub(super) struct Names<V> {
    packed: Packed<V>,
    long: HashMap<Box<[u8]>, V, BuildHasherDefault<Fnv>>,
}

impl<V> Default for Names<V> {
    fn default() -> Self {
        Names { packed: Packed { slots: Vec::new(), values: Vec::new() }, long: HashMap::default() }
    }
}

impl<V> Names<V> {
    /// What `name` (any case) maps to.
    #[inline]
    pub(super) fn get(&self, name: &[u8]) -> Option<&V> {
        match pack(name) {
            Some(key) => self.packed.find(key).map(|i| &self.packed.values[i]),
            None => self.get_long(name),
        }
    }

    /// [`Names::get`] for a name too long to pack. Not inlined: its lowercased copy on the stack
    /// made every lookup set up a frame of ~140 bytes and save six registers.
    #[inline(never)]
    fn get_long(&self, name: &[u8]) -> Option<&V> {
        self.long.get(lowercase(name, &mut [0; MAX_NAME])?)
    }

    pub(super) fn get_mut(&mut self, name: &[u8]) -> Option<&mut V> {
        match pack(name) {
            Some(key) => self.packed.find(key).map(|i| &mut self.packed.values[i]),
            None => self.long.get_mut(lowercase(name, &mut [0; MAX_NAME])?),
        }
    }

    /// Adds `name` unless it is known or longer than [`MAX_NAME`]; returns whether it was added.
    pub(super) fn insert(&mut self, name: &[u8], value: V) -> bool {
        if name.len() > MAX_NAME || self.get(name).is_some() {
            return false;
        }
        match pack(name) {
            Some(key) => self.packed.insert(key, value),
            None => drop(self.long.insert(name.to_ascii_lowercase().into(), value)),
        }
        true
    }

    pub(super) fn is_empty(&self) -> bool {
        self.packed.values.is_empty() && self.long.is_empty()
    }
}

/// `name` lowercased into an integer, its length in the top byte (so `get` and `get\0` differ),
/// when it is at most [`PACKED`] bytes long. Read with a few word loads ([`load_short`]) and
/// lowercased eight bytes at a time in a few integer operations, where a loop over the bytes cost
/// ~60 instructions per request and a copy into a zeroed word a `memcpy` call of ~20
/// (bench/RESULTS.md).
#[inline]
fn pack(name: &[u8]) -> Option<u128> {
    if name.len() > PACKED {
        return None;
    }
    let (low, high) = load_short(name);
    let low = u128::from(lowercase_word(low));
    // Most names fit in the low word: the high one is zero then.
    let high = u128::from(if name.len() > 8 { lowercase_word(high) } else { 0 });
    Some((name.len() as u128) << 120 | high << 64 | low)
}

/// The bytes of `name` (at most 16) as two little-endian words, zeros past its end: loads that
/// overlap where the length is not a whole word, merged with shifts (the bytes they share are the
/// same), instead of a copy of unknown length.
#[inline(always)]
fn load_short(name: &[u8]) -> (u64, u64) {
    let word = |at: usize| name.get(at..at + 8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes);
    let half = |at: usize| name.get(at..at + 4).and_then(|b| b.try_into().ok()).map_or(0, u32::from_le_bytes);
    let len = name.len();
    match len {
        8..=16 => {
            // The last eight bytes, shifted down so that byte 8 lands at the bottom.
            let tail = word(len - 8).checked_shr(8 * (16 - len) as u32).unwrap_or(0);
            (word(0), tail)
        }
        4..=7 => {
            let tail = u64::from(half(len - 4)) << (8 * (len - 4));
            (u64::from(half(0)) | tail, 0)
        }
        1..=3 => {
            let byte = |i: usize| u64::from(name[i]) << (8 * i);
            (byte(0) | byte(len / 2) | byte(len - 1), 0)
        }
        _ => (0, 0),
    }
}

/// Each byte of `word` as `u8::to_ascii_lowercase` makes it: a byte gets 0x20 added exactly
/// when it is `A`..=`Z` (its top bit clear, at least `A`, not above `Z`; the sums stay inside
/// their byte because the top bit is masked off first).
#[inline]
fn lowercase_word(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const TOP: u64 = ONES * 0x80;
    let low_bits = word & !TOP;
    let at_least_a = low_bits + ONES * u64::from(0x80 - b'A');
    let above_z = low_bits + ONES * u64::from(0x80 - b'Z' - 1);
    let upper = at_least_a & !above_z & !word & TOP;
    word | upper >> 2
}

/// Lowercases `name` into `buf`; `None` when it does not fit (no command is that long).
fn lowercase<'b>(name: &[u8], buf: &'b mut [u8; MAX_NAME]) -> Option<&'b [u8]> {
    let out = buf.get_mut(..name.len())?;
    for (o, &c) in out.iter_mut().zip(name) {
        *o = c.to_ascii_lowercase();
    }
    Some(out)
}

/// Packed names to values: open addressing in a table at most half full, so a lookup is one
/// multiply, a load and a compare or two of the key (hashbrown's generic hashing, tag groups and
/// probing cost ~80 instructions per request here). Filled once, when the command table is built.
#[derive(Debug, Clone)]
struct Packed<V> {
    /// Per slot: a key and the index of its value, or [`EMPTY`].
    slots: Vec<(u128, u32)>,
    values: Vec<V>,
}

/// The value index of an empty slot.
const EMPTY: u32 = u32::MAX;

impl<V> Packed<V> {
    /// The index of `key`'s value.
    #[inline]
    fn find(&self, key: u128) -> Option<usize> {
        let mask = self.slots.len().checked_sub(1)?;
        let mut at = spread(key) & mask;
        // At most half the slots are taken: the probe meets an empty one.
        loop {
            let (slot_key, index) = self.slots[at];
            if index == EMPTY {
                return None;
            }
            if slot_key == key {
                return Some(index as usize);
            }
            at = (at + 1) & mask;
        }
    }

    /// Adds `key` (not present yet).
    fn insert(&mut self, key: u128, value: V) {
        if (self.values.len() + 1) * 2 > self.slots.len() {
            let size = (self.slots.len() * 2).max(64);
            let old = std::mem::replace(&mut self.slots, vec![(0, EMPTY); size]);
            for (key, index) in old.into_iter().filter(|&(_, index)| index != EMPTY) {
                self.place(key, index);
            }
        }
        self.place(key, self.values.len() as u32);
        self.values.push(value);
    }

    /// Puts `key` in the first free slot from its own on (the table has room).
    fn place(&mut self, key: u128, index: u32) {
        let mask = self.slots.len() - 1;
        let mut at = spread(key) & mask;
        while self.slots[at].1 != EMPTY {
            at = (at + 1) & mask;
        }
        self.slots[at] = (key, index);
    }
}

/// A slot number from a packed name with one folded multiply (as foldhash does): both halves of
/// the product depend on every byte.
#[inline]
fn spread(key: u128) -> usize {
    let folded = (key as u64) ^ (key >> 64) as u64;
    let product = u128::from(folded) * 0x9e37_79b9_7f4a_7c15;
    ((product as u64) ^ (product >> 64) as u64) as usize
}

/// FNV-1a for the few long names: the table is fixed, so SipHash's DoS resistance buys nothing.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_load_as_their_bytes_padded_with_zeros() {
        let bytes: Vec<u8> = (1..=16u8).map(|i| i.wrapping_mul(37) | 0x80).collect();
        for len in 0..=16 {
            let mut padded = [0u8; 16];
            padded[..len].copy_from_slice(&bytes[..len]);
            let want = (
                u64::from_le_bytes(padded[..8].try_into().expect("8")),
                u64::from_le_bytes(padded[8..].try_into().expect("8")),
            );
            assert_eq!(load_short(&bytes[..len]), want, "length {len}");
        }
    }

    #[test]
    fn names_are_found_in_any_case_and_only_with_their_exact_length() {
        let mut names = Names::default();
        let long = "georadiusbymember_ro";
        for (i, name) in ["get", "getex", "getdel", long, "x"].iter().enumerate() {
            assert!(names.insert(name.as_bytes(), i));
        }
        assert!(!names.insert(b"GET", 9), "known in another case");
        assert_eq!(names.get(b"GeT"), Some(&0));
        assert_eq!(names.get(b"GETEX"), Some(&1));
        assert_eq!(names.get(long.to_ascii_uppercase().as_bytes()), Some(&3));
        assert_eq!(names.get(b"get\0"), None);
        assert_eq!(names.get(b"ge"), None);
        assert_eq!(names.get(b""), None);
        assert_eq!(names.get(&[b'g'; MAX_NAME + 1]), None);
        assert!(!names.insert(&[b'g'; MAX_NAME + 1], 5));
        if let Some(value) = names.get_mut(b"X") {
            *value = 7;
        }
        assert_eq!(names.get(b"x"), Some(&7));
    }

    #[test]
    fn a_table_that_grew_many_times_finds_every_name_and_nothing_else() {
        let mut names = Names::default();
        for i in 0..3000 {
            assert!(names.insert(format!("Cmd{i}").as_bytes(), i));
        }
        for i in 0..3000 {
            assert_eq!(names.get(format!("cMD{i}").as_bytes()), Some(&i));
            assert_eq!(names.get(format!("cmd{}", i + 3000).as_bytes()), None);
        }
    }

    #[test]
    fn packing_matches_lowercasing_byte_by_byte() {
        fn reference(name: &[u8]) -> u128 {
            let bytes = name.iter().enumerate();
            bytes.fold((name.len() as u128) << 120, |key, (i, &b)| key | u128::from(b.to_ascii_lowercase()) << (8 * i))
        }
        // Every byte value, at every position and length a packed name has.
        for len in 0..=PACKED {
            for byte in 0..=u8::MAX {
                for at in 0..len {
                    let mut name: Vec<u8> = (0..len as u8).map(|i| b'@' + i * 5).collect();
                    name[at] = byte;
                    assert_eq!(pack(&name), Some(reference(&name)), "{name:?}");
                }
            }
        }
        assert_eq!(pack(&[b'a'; PACKED + 1]), None);
    }
}
