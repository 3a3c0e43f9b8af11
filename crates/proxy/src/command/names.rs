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
/// is a few shifts, a multiply and an integer compare, where hashing bytes and comparing slices
/// cost ~150 instructions per request (bench/RESULTS.md). Longer names go through a byte-keyed map.
#[derive(Debug, Clone)]
pub(super) struct Names<V> {
    packed: HashMap<u128, V, BuildHasherDefault<Mix>>,
    long: HashMap<Box<[u8]>, V, BuildHasherDefault<Fnv>>,
}

impl<V> Default for Names<V> {
    fn default() -> Self {
        Names { packed: HashMap::default(), long: HashMap::default() }
    }
}

impl<V> Names<V> {
    /// What `name` (any case) maps to.
    #[inline]
    pub(super) fn get(&self, name: &[u8]) -> Option<&V> {
        match pack(name) {
            Some(key) => self.packed.get(&key),
            None => self.long.get(lowercase(name, &mut [0; MAX_NAME])?),
        }
    }

    pub(super) fn get_mut(&mut self, name: &[u8]) -> Option<&mut V> {
        match pack(name) {
            Some(key) => self.packed.get_mut(&key),
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
            None => self.long.insert(name.to_ascii_lowercase().into(), value),
        };
        true
    }

    pub(super) fn is_empty(&self) -> bool {
        self.packed.is_empty() && self.long.is_empty()
    }
}

/// `name` lowercased into an integer, its length in the top byte (so `get` and `get\0` differ),
/// when it is at most [`PACKED`] bytes long.
#[inline]
fn pack(name: &[u8]) -> Option<u128> {
    if name.len() > PACKED {
        return None;
    }
    let mut key = (name.len() as u128) << 120;
    for (i, &b) in name.iter().enumerate() {
        key |= u128::from(b.to_ascii_lowercase()) << (8 * i);
    }
    Some(key)
}

/// Lowercases `name` into `buf`; `None` when it does not fit (no command is that long).
fn lowercase<'b>(name: &[u8], buf: &'b mut [u8; MAX_NAME]) -> Option<&'b [u8]> {
    let out = buf.get_mut(..name.len())?;
    for (o, &c) in out.iter_mut().zip(name) {
        *o = c.to_ascii_lowercase();
    }
    Some(out)
}

/// Hashes a packed name with one folded multiply (as foldhash does): both halves of the product
/// depend on every byte, so hashbrown's bucket (low bits) and tag (top bits) are both spread.
#[derive(Default)]
struct Mix(u64);

impl Hasher for Mix {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u128(u128::from(self.0) << 8 | u128::from(b));
        }
    }

    fn write_u128(&mut self, key: u128) {
        let folded = (key as u64) ^ (key >> 64) as u64 ^ self.0;
        let product = u128::from(folded) * 0x9e37_79b9_7f4a_7c15;
        self.0 = (product as u64) ^ (product >> 64) as u64;
    }
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
}
