//! Glob matching with exactly the semantics of Redis' `stringmatchlen` (case-sensitive), the
//! function Redis uses for ACL key and channel patterns, KEYS and PSUBSCRIBE.
//!
//! `*` matches any run of bytes, `?` any one byte, `[abc]` / `[^abc]` / `[a-z]` a byte in (or not
//! in) a set, and `\x` the byte `x` literally, inside or outside brackets. Malformed patterns are
//! not errors: Redis gives them a meaning and so does this (an unterminated `[abc` is a set that
//! runs to the end of the pattern, a trailing `\` matches a backslash, `[z-a]` equals `[a-z]`).

/// Whether `string` matches the glob `pattern`.
pub fn matches(pattern: &[u8], string: &[u8]) -> bool {
    let mut skip_longer = false;
    match_from(pattern, 0, string, 0, false, &mut skip_longer)
}

/// Whether `pattern` matches some string that starts with `prefix` (a pattern subscription that
/// may receive keyspace notifications: `*`, `_*`, `*:foo`, `__keyspace@0__:*`).
pub fn may_match_prefixed(pattern: &[u8], prefix: &[u8]) -> bool {
    let mut skip_longer = false;
    match_from(pattern, 0, prefix, 0, true, &mut skip_longer)
}

/// `stringmatchlen_impl` on `pattern[p..]` and `string[s..]`, kept index for index: the C code
/// steps back one byte at the end of an unterminated set, which slices cannot express.
///
/// `skip_longer` is Redis' fix for exponential backtracking: once the rest of the pattern after a
/// `*` matched nowhere in the rest of the string, no earlier `*` can help by matching more.
///
/// `open_end`: `string` is only the start of the strings asked about, which may go on with
/// anything: the pattern matches once the string is used up, whatever of the pattern is left.
///
/// Longer than ~80 lines on purpose: a line-for-line port of the C function, so that it can be
/// checked against Redis' source (and its fixes carried over) side by side.
fn match_from(
    pattern: &[u8],
    mut p: usize,
    string: &[u8],
    mut s: usize,
    open_end: bool,
    skip_longer: &mut bool,
) -> bool {
    // The C code reads the NUL terminator past the end of the pattern; 0 stands in for it.
    let at = |i: usize| pattern.get(i).copied().unwrap_or(0);
    while p < pattern.len() && s < string.len() {
        let remaining = pattern.len() - p;
        match pattern[p] {
            b'*' => {
                while at(p + 1) == b'*' {
                    p += 1;
                }
                if p + 1 == pattern.len() {
                    return true;
                }
                while s < string.len() {
                    if match_from(pattern, p + 1, string, s, open_end, skip_longer) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                    s += 1;
                }
                if open_end {
                    // The `*` takes the rest of the string; the pattern after it, what follows.
                    return true;
                }
                *skip_longer = true;
                return false;
            }
            b'?' => s += 1,
            b'[' => {
                p += 1;
                let negate = at(p) == b'^';
                if negate {
                    p += 1;
                }
                let c = string[s];
                let mut hit = false;
                loop {
                    let left = pattern.len().saturating_sub(p);
                    if at(p) == b'\\' && left >= 2 {
                        p += 1;
                        hit |= pattern[p] == c;
                    } else if at(p) == b']' {
                        break;
                    } else if left == 0 {
                        // Unterminated set: step back so the shared advance below ends the pattern.
                        p -= 1;
                        break;
                    } else if left >= 3 && pattern[p + 1] == b'-' {
                        // C compares `char`s, which are signed: bytes >= 0x80 sort below ASCII.
                        let (a, b) = (pattern[p] as i8, pattern[p + 2] as i8);
                        let (lo, hi) = if a > b { (b, a) } else { (a, b) };
                        hit |= (lo..=hi).contains(&(c as i8));
                        p += 2;
                    } else {
                        hit |= pattern[p] == c;
                    }
                    p += 1;
                }
                if hit == negate {
                    return false;
                }
                s += 1;
            }
            b'\\' => {
                if remaining >= 2 {
                    p += 1;
                }
                if pattern[p] != string[s] {
                    return false;
                }
                s += 1;
            }
            literal => {
                if literal != string[s] {
                    return false;
                }
                s += 1;
            }
        }
        p += 1;
        if s == string.len() {
            while at(p) == b'*' {
                p += 1;
            }
            break;
        }
    }
    s == string.len() && (open_end || p >= pattern.len())
}
