//! Key specs and their interpreter: where the keys of a request are.
//!
//! Redis 7 describes key positions with *key specs*: a `begin_search` step (a fixed index, or the
//! argument after a keyword) followed by a `find_keys` step (a range, or a count read from the
//! request). [`find_key_positions`] runs them the way Redis' `getKeysUsingKeySpecs` does, so the
//! proxy routes a request by exactly the keys Redis Cluster checks for slot ownership. The few
//! commands whose specs are `unknown` or `incomplete` (SORT's STORE, MIGRATE's KEYS form) get the
//! same hand-written finders Redis falls back to.
//!
//! A little over ~600 lines: the key-spec types and their one interpreter stay together so that
//! they can be checked against Redis' `db.c` side by side.

use redis_protocol::resp2::types::OwnedFrame;

use super::Args;

mod getkeys;
pub use getkeys::GetKeysError;
pub(super) use getkeys::command_getkeys;

/// A key spec as the generated table stores it: flags, begin search, find keys.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawKeySpec(pub &'static [&'static str], pub RawBegin, pub RawFind);

/// `begin_search` as generated: `Index(index)`, `Keyword(keyword, startfrom)` or `Unknown`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RawBegin {
    Index(i64),
    Keyword(&'static str, i64),
    Unknown,
}

/// `find_keys` as generated: `Range(lastkey, keystep, limit)`,
/// `Keynum(keynumidx, firstkey, keystep)` or `Unknown`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RawFind {
    Range(i64, i64, i64),
    Keynum(i64, i64, i64),
    Unknown,
}

/// Bit set of key spec flags (`RW`, `RO`, `OW`, `RM`, `access`, ...), as `COMMAND` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct KeySpecFlags(u16);

impl KeySpecFlags {
    /// Read-write: the command reads and modifies the key.
    pub const RW: Self = Self(1);
    /// Read-only.
    pub const RO: Self = Self(1 << 1);
    /// Overwrite: the old value is replaced without being read.
    pub const OW: Self = Self(1 << 2);
    /// Remove: the key is deleted.
    pub const RM: Self = Self(1 << 3);
    /// The value is returned, copied or otherwise exposed.
    pub const ACCESS: Self = Self(1 << 4);
    /// The value is updated in place.
    pub const UPDATE: Self = Self(1 << 5);
    /// Data is added to the value.
    pub const INSERT: Self = Self(1 << 6);
    /// Data is removed from the value.
    pub const DELETE: Self = Self(1 << 7);
    /// Not a key but routed like one (sharded pub/sub channels).
    pub const NOT_KEY: Self = Self(1 << 8);
    /// The spec may miss keys; Redis falls back to a per-command finder.
    pub const INCOMPLETE: Self = Self(1 << 9);
    /// The real flags depend on the arguments.
    pub const VARIABLE_FLAGS: Self = Self(1 << 10);

    const NAMES: [(&'static str, KeySpecFlags); 11] = [
        ("RW", Self::RW),
        ("RO", Self::RO),
        ("OW", Self::OW),
        ("RM", Self::RM),
        ("access", Self::ACCESS),
        ("update", Self::UPDATE),
        ("insert", Self::INSERT),
        ("delete", Self::DELETE),
        ("not_key", Self::NOT_KEY),
        ("incomplete", Self::INCOMPLETE),
        ("variable_flags", Self::VARIABLE_FLAGS),
    ];

    /// The flag `COMMAND` calls `name` (case-insensitive); `None` for flags unknown here.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|&(_, f)| f)
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The raw bits.
    pub const fn bits(self) -> u16 {
        self.0
    }

    fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        names.into_iter().filter_map(Self::from_name).fold(Self::default(), |a, b| a | b)
    }
}

impl std::ops::BitOr for KeySpecFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// What a request does with one key, as Redis 7's ACL derives it from the key spec flags
/// (`ACLSelectorCheckKey`): `access` reads the value; `insert`, `delete` and `update` write it. The
/// `RW`/`RO`/`OW`/`RM` flags play no part, so a key flagged only `RO` (EXISTS, TYPE, OBJECT
/// ENCODING) needs neither permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyAccess {
    /// Only existence, type or metadata: any pattern matching the key allows it.
    Metadata,
    /// The value is read, returned or copied.
    Read,
    /// The value is written, added to or deleted, without being read.
    Write,
    /// The value is read and written.
    ReadWrite,
}

impl KeyAccess {
    /// The access a key found by a spec with `flags` needs.
    pub fn from_flags(flags: KeySpecFlags) -> KeyAccess {
        let write = KeySpecFlags::INSERT.0 | KeySpecFlags::DELETE.0 | KeySpecFlags::UPDATE.0;
        match (flags.contains(KeySpecFlags::ACCESS), flags.0 & write != 0) {
            (false, false) => KeyAccess::Metadata,
            (true, false) => KeyAccess::Read,
            (false, true) => KeyAccess::Write,
            (true, true) => KeyAccess::ReadWrite,
        }
    }
}

/// Where the search for a spec's keys starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeginSearch {
    /// Keys start at this argv index (always >= 1).
    Index(usize),
    /// Keys start right after `keyword` (case-insensitive), searched from argv index `startfrom`
    /// forwards, or backwards from `argc + startfrom` when negative.
    Keyword { keyword: String, startfrom: i32 },
    /// Not expressible as a spec; the spec is skipped.
    Unknown,
}

/// How many keys follow the start and how far apart they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindKeys {
    /// The last key is `start + lastkey` when `lastkey >= 0`; otherwise `argc + lastkey`, or, when
    /// `limit > 0`, `start + (argc - start) / limit + lastkey` (XREAD's keys-then-ids layout).
    Range { lastkey: i32, step: usize, limit: usize },
    /// The argument at `start + keynumidx` counts the keys, which begin at `start + firstkey`.
    Keynum { keynumidx: usize, firstkey: usize, step: usize },
    /// Not expressible as a spec; the spec is skipped.
    Unknown,
}

/// One key spec of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub flags: KeySpecFlags,
    pub begin_search: BeginSearch,
    pub find_keys: FindKeys,
}

impl KeySpec {
    pub(super) fn from_raw(raw: &RawKeySpec) -> KeySpec {
        let RawKeySpec(flags, begin, find) = *raw;
        KeySpec {
            flags: KeySpecFlags::from_names(flags.iter().copied()),
            begin_search: match begin {
                RawBegin::Index(index) => begin_search(index, None),
                RawBegin::Keyword(keyword, startfrom) => begin_search(startfrom, Some(keyword.to_owned())),
                RawBegin::Unknown => BeginSearch::Unknown,
            },
            find_keys: match find {
                RawFind::Range(lastkey, step, limit) => range(lastkey, step, limit),
                RawFind::Keynum(keynumidx, firstkey, step) => keynum(keynumidx, firstkey, step),
                RawFind::Unknown => FindKeys::Unknown,
            },
        }
    }

    /// The spec Redis derives from the legacy `first, last, step` triple (servers before 7.0).
    pub(super) fn legacy(first: i64, last: i64, step: i64) -> Option<KeySpec> {
        if first < 1 || step < 1 {
            return None;
        }
        let lastkey = if last >= 0 { last - first } else { last };
        Some(KeySpec {
            flags: KeySpecFlags::default(),
            begin_search: begin_search(first, None),
            find_keys: range(lastkey, step, 0),
        })
    }

    /// Parses one key spec of a `COMMAND` reply (a RESP2 flat map); unusable parts are `Unknown`.
    pub(super) fn from_frame(frame: &OwnedFrame) -> Option<KeySpec> {
        let mut spec = KeySpec {
            flags: KeySpecFlags::default(),
            begin_search: BeginSearch::Unknown,
            find_keys: FindKeys::Unknown,
        };
        for (key, value) in map_pairs(frame)? {
            match key {
                b"flags" => {
                    let names = array(value)?.iter().filter_map(|f| text(f).and_then(|t| std::str::from_utf8(t).ok()));
                    spec.flags = KeySpecFlags::from_names(names);
                }
                b"begin_search" => {
                    let (kind, args) = typed_spec(value)?;
                    spec.begin_search = match kind {
                        b"index" => begin_search(int_field(&args, b"index")?, None),
                        b"keyword" => {
                            let keyword = args.iter().find(|(k, _)| *k == b"keyword").and_then(|(_, v)| text(v));
                            let keyword = keyword.and_then(|k| std::str::from_utf8(k).ok())?;
                            begin_search(int_field(&args, b"startfrom")?, Some(keyword.to_owned()))
                        }
                        _ => BeginSearch::Unknown,
                    };
                }
                b"find_keys" => {
                    let (kind, args) = typed_spec(value)?;
                    let field = |name: &[u8]| int_field(&args, name);
                    spec.find_keys = match kind {
                        b"range" => range(field(b"lastkey")?, field(b"keystep")?, field(b"limit")?),
                        b"keynum" => keynum(field(b"keynumidx")?, field(b"firstkey")?, field(b"keystep")?),
                        _ => FindKeys::Unknown,
                    };
                }
                _ => {}
            }
        }
        Some(spec)
    }
}

/// Validating constructor: an index of 0 would name the command itself as a key.
fn begin_search(index_or_startfrom: i64, keyword: Option<String>) -> BeginSearch {
    match (keyword, usize::try_from(index_or_startfrom), i32::try_from(index_or_startfrom)) {
        (Some(keyword), _, Ok(startfrom)) => BeginSearch::Keyword { keyword, startfrom },
        (None, Ok(index), _) if index >= 1 => BeginSearch::Index(index),
        _ => BeginSearch::Unknown,
    }
}

/// Validating constructor: a step of 0 would never advance, so such specs are `Unknown`.
fn range(lastkey: i64, step: i64, limit: i64) -> FindKeys {
    match (i32::try_from(lastkey), usize::try_from(step), usize::try_from(limit)) {
        (Ok(lastkey), Ok(step), Ok(limit)) if step >= 1 => FindKeys::Range { lastkey, step, limit },
        _ => FindKeys::Unknown,
    }
}

/// Validating constructor, as [`range`].
fn keynum(keynumidx: i64, firstkey: i64, step: i64) -> FindKeys {
    match (usize::try_from(keynumidx), usize::try_from(firstkey), usize::try_from(step)) {
        (Ok(keynumidx), Ok(firstkey), Ok(step)) if step >= 1 => FindKeys::Keynum { keynumidx, firstkey, step },
        _ => FindKeys::Unknown,
    }
}

fn array(frame: &OwnedFrame) -> Option<&[OwnedFrame]> {
    match frame {
        OwnedFrame::Array(items) => Some(items),
        _ => None,
    }
}

/// The bytes of a simple or bulk string.
pub(super) fn text(frame: &OwnedFrame) -> Option<&[u8]> {
    match frame {
        OwnedFrame::SimpleString(s) | OwnedFrame::BulkString(s) => Some(s),
        _ => None,
    }
}

/// The `(key, value)` pairs of a RESP2 map (a flat array of alternating keys and values).
fn map_pairs(frame: &OwnedFrame) -> Option<impl Iterator<Item = (&[u8], &OwnedFrame)>> {
    let items = array(frame)?;
    Some(items.chunks_exact(2).filter_map(|kv| Some((text(&kv[0])?, &kv[1]))))
}

/// Fields of a RESP2 map, by name.
type Fields<'a> = Vec<(&'a [u8], &'a OwnedFrame)>;

/// `{type: <kind>, spec: {...}}` of a `begin_search` or `find_keys` entry.
fn typed_spec(frame: &OwnedFrame) -> Option<(&[u8], Fields<'_>)> {
    let mut kind = None;
    let mut args = Vec::new();
    for (key, value) in map_pairs(frame)? {
        match key {
            b"type" => kind = text(value),
            b"spec" => args = map_pairs(value)?.collect(),
            _ => {}
        }
    }
    Some((kind?, args))
}

fn int_field(args: &[(&[u8], &OwnedFrame)], name: &[u8]) -> Option<i64> {
    match args.iter().find(|(k, _)| *k == name)?.1 {
        OwnedFrame::Integer(i) => Some(*i),
        _ => None,
    }
}

/// How the keys of a command are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyFinder {
    /// The key specs alone.
    Specs,
    /// One spec naming one key at this argv index (GET, SET, INCR … most commands): found without
    /// walking the spec, the request path's usual case.
    One(usize),
    /// SORT: the sorted key plus the destination after the last STORE (specs say `unknown`).
    Sort,
    /// MIGRATE: the key argument, or every key after KEYS (the spec is `incomplete`).
    Migrate,
}

impl KeyFinder {
    pub(super) fn for_command(name: &str, specs: &[KeySpec]) -> KeyFinder {
        match (name, specs) {
            ("sort", _) => KeyFinder::Sort,
            ("migrate", _) => KeyFinder::Migrate,
            (
                _,
                [
                    KeySpec {
                        flags,
                        begin_search: BeginSearch::Index(index),
                        find_keys: FindKeys::Range { lastkey: 0, .. },
                    },
                ],
            ) if !flags.contains(KeySpecFlags::NOT_KEY) => KeyFinder::One(*index),
            _ => KeyFinder::Specs,
        }
    }
}

/// What is wrong with a numkeys argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumKeysProblem {
    /// Not a canonical 64-bit integer (Redis' `string2ll`: no `+`, spaces or leading zeros).
    NotAnInteger,
    /// Below zero.
    Negative,
    /// Zero, for a command that needs at least one key.
    Zero,
    /// More keys than there are arguments after the count.
    TooMany,
}

/// Why the keys of a request cannot be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The client's numkeys argument at argv `index` is unusable. `Display` is Redis' own message
    /// for `command` (without the `ERR ` prefix), so the caller can answer `-ERR {error}`.
    #[error("{}", numkeys_message(.command, *.problem))]
    BadNumKeys { command: String, index: usize, problem: NumKeysProblem },
}

/// The keys a Redis node finds for a request whose key spec it cannot read (a numkeys that is not
/// an integer, or does not fit): its command's own getkeys function's, which reads the count with
/// C's `atoi` (`01` is 1, `1x` is 1, `x` is 0) — what the node checks permissions on and routes by.
pub fn fallback_key_positions(command: &super::CommandSpec, args: &(impl Args + ?Sized), out: &mut Vec<usize>) {
    out.clear();
    out.extend(getkeys::getkeys_function(&command.name, args));
}

/// Redis words numkeys errors differently per command family; mirrored here for the error's text
/// (the router sends such a request to a node, which answers it: [`fallback_key_positions`]).
fn numkeys_message(command: &str, problem: NumKeysProblem) -> String {
    use NumKeysProblem::*;
    const NOT_INTEGER: &str = "value is not an integer or out of range";
    const TOO_MANY: &str = "Number of keys can't be greater than number of args";
    match command {
        "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro" => match problem {
            NotAnInteger => NOT_INTEGER.into(),
            Negative => "Number of keys can't be negative".into(),
            Zero | TooMany => TOO_MANY.into(),
        },
        "zunion" | "zinter" | "zdiff" | "zunionstore" | "zinterstore" | "zdiffstore" | "zintercard" => match problem {
            NotAnInteger => NOT_INTEGER.into(),
            Negative | Zero => format!("at least 1 input key is needed for '{command}' command"),
            TooMany => "syntax error".into(),
        },
        "sintercard" => match problem {
            TooMany => TOO_MANY.into(),
            _ => "numkeys should be greater than 0".into(),
        },
        "lmpop" | "blmpop" | "zmpop" | "bzmpop" => match problem {
            TooMany => "syntax error".into(),
            _ => "numkeys should be greater than 0".into(),
        },
        _ => match problem {
            NotAnInteger => NOT_INTEGER.into(),
            Negative | Zero => "numkeys should be greater than 0".into(),
            TooMany => TOO_MANY.into(),
        },
    }
}

/// Parses an integer the way Redis' `string2ll` does: optional `-`, no leading zeros, fits i64.
pub(crate) fn parse_integer(arg: &[u8]) -> Option<i64> {
    let (negative, digits) = match arg {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, arg),
    };
    match digits {
        [] => return None,
        [b'0'] if !negative => return Some(0),
        [b'0', ..] => return None,
        _ => {}
    }
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        // Accumulate negatively so that i64::MIN parses too.
        value = value.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
    }
    if negative { Some(value) } else { value.checked_neg() }
}

/// The argv index right after `keyword`, as Redis searches: forwards from `startfrom` up to but not
/// including the last argument (a keyword there has no key after it), or backwards from
/// `argc + startfrom` down to index 1.
fn keyword_start(args: &(impl Args + ?Sized), keyword: &str, startfrom: i32) -> Option<usize> {
    let argc = args.len();
    let hit = |&i: &usize| args.get(i).eq_ignore_ascii_case(keyword.as_bytes());
    let found = if startfrom > 0 {
        (startfrom as usize..argc.saturating_sub(1)).find(hit)
    } else {
        let start = argc.checked_sub(startfrom.unsigned_abs() as usize)?;
        (1..=start).rev().find(hit)
    };
    found.map(|i| i + 1)
}

/// Reports the positions one spec finds to `found`. Specs that do not fit the request (a missing
/// keyword, a range past the end) find nothing, like Redis; only a bad numkeys is the client's error.
fn spec_positions(
    spec: &KeySpec,
    args: &(impl Args + ?Sized),
    zero_keys_ok: bool,
    found: &mut impl FnMut(usize, KeySpecFlags),
) -> Result<(), (usize, NumKeysProblem)> {
    let argc = args.len();
    let start = match &spec.begin_search {
        BeginSearch::Index(i) => *i,
        BeginSearch::Keyword { keyword, startfrom } => match keyword_start(args, keyword, *startfrom) {
            Some(i) => i,
            None => return Ok(()),
        },
        BeginSearch::Unknown => return Ok(()),
    };
    // Signed arithmetic: negative lastkeys and short requests make `last` fall before `first`.
    let (first, last, step) = match spec.find_keys {
        FindKeys::Range { lastkey, step, limit } => (start as i64, range_last(start, argc, lastkey, limit), step),
        FindKeys::Keynum { keynumidx, firstkey, step } => {
            let at = start + keynumidx;
            if at >= argc {
                // An arity problem, which the arity check reports; there are no keys to find.
                return Ok(());
            }
            let numkeys = parse_integer(args.get(at)).ok_or((at, NumKeysProblem::NotAnInteger))?;
            let first = (start + firstkey) as i64;
            match numkeys {
                n if n < 0 => return Err((at, NumKeysProblem::Negative)),
                0 if zero_keys_ok => return Ok(()),
                0 => return Err((at, NumKeysProblem::Zero)),
                n if n > argc as i64 - first => return Err((at, NumKeysProblem::TooMany)),
                n => (first, first + n - 1, step),
            }
        }
        FindKeys::Unknown => return Ok(()),
    };
    if first >= argc as i64 || last >= argc as i64 || last < first {
        return Ok(());
    }
    for position in (first as usize..=last as usize).step_by(step) {
        found(position, spec.flags);
    }
    Ok(())
}

/// The argv index of the last key of a range spec whose keys start at `start` (signed: negative
/// lastkeys and short requests put it before `start`).
fn range_last(start: usize, argc: usize, lastkey: i32, limit: usize) -> i64 {
    let (start, argc, lastkey) = (start as i64, argc as i64, i64::from(lastkey));
    if lastkey >= 0 {
        start + lastkey
    } else if limit == 0 {
        argc + lastkey
    } else {
        start + (argc - start) / limit as i64 + lastkey
    }
}

/// SORT's finder, as Redis' `sortGetKeys`: the sorted key, plus the argument after the *last*
/// STORE, skipping the arguments of LIMIT, GET and BY so a pattern named "store" is no keyword.
/// The sorted key is read, the destination overwritten.
fn sort_positions(args: &(impl Args + ?Sized), found: &mut impl FnMut(usize, KeySpecFlags)) {
    let argc = args.len();
    if argc < 2 {
        return;
    }
    found(1, KeySpecFlags::RO | KeySpecFlags::ACCESS);
    let mut store = None;
    let mut i = 2;
    while i < argc {
        let arg = args.get(i);
        if arg.eq_ignore_ascii_case(b"limit") {
            i += 2;
        } else if arg.eq_ignore_ascii_case(b"get") || arg.eq_ignore_ascii_case(b"by") {
            i += 1;
        } else if arg.eq_ignore_ascii_case(b"store") && i + 1 < argc {
            store = Some(i + 1);
        }
        i += 1;
    }
    if let Some(store) = store {
        found(store, KeySpecFlags::OW | KeySpecFlags::UPDATE);
    }
}

/// MIGRATE's finder, as Redis' `migrateGetKeys`: the key argument (index 3), or, with the KEYS
/// option (which requires an empty key argument), every argument after KEYS; all read and deleted.
fn migrate_positions(args: &(impl Args + ?Sized), found: &mut impl FnMut(usize, KeySpecFlags)) {
    let flags = KeySpecFlags::RW | KeySpecFlags::ACCESS | KeySpecFlags::DELETE;
    let argc = args.len();
    let mut i = 6;
    while i < argc {
        let arg = args.get(i);
        if arg.eq_ignore_ascii_case(b"keys") {
            if args.get(3).is_empty() {
                (i + 1..argc).for_each(|key| found(key, flags));
            }
            return;
        }
        if arg.eq_ignore_ascii_case(b"auth") {
            i += 1;
        } else if arg.eq_ignore_ascii_case(b"auth2") {
            i += 2;
        }
        i += 1;
    }
    if argc > 3 {
        found(3, flags);
    }
}

/// Reports every key of a request for `command` to `found` with the flags of the spec (or the
/// hand-written finder) that found it, in spec order. Specs flagged `not_key` (sharded channels)
/// are skipped unless `with_not_key`.
fn visit_keys(
    command: &super::CommandSpec,
    args: &(impl Args + ?Sized),
    with_not_key: bool,
    found: &mut impl FnMut(usize, KeySpecFlags),
) -> Result<(), KeyError> {
    match command.finder {
        KeyFinder::Sort => sort_positions(args, found),
        KeyFinder::Migrate => migrate_positions(args, found),
        // What spec_positions finds for the one spec (nothing when the request is too short).
        KeyFinder::One(index) => {
            if let (true, Some(spec)) = (index < args.len(), command.key_specs.first()) {
                found(index, spec.flags);
            }
        }
        KeyFinder::Specs => {
            let zero_ok = command.flags.contains(super::CommandFlags::NO_MANDATORY_KEYS);
            for spec in command.key_specs.iter().filter(|s| with_not_key || !s.flags.contains(KeySpecFlags::NOT_KEY)) {
                spec_positions(spec, args, zero_ok, found).map_err(|(index, problem)| KeyError::BadNumKeys {
                    command: command.name.clone(),
                    index,
                    problem,
                })?;
            }
        }
    }
    Ok(())
}

/// Fills `out` with the argv positions of the keys of a request for `command`, in request order.
pub(super) fn find_key_positions(
    command: &super::CommandSpec,
    args: &(impl Args + ?Sized),
    out: &mut Vec<usize>,
) -> Result<(), KeyError> {
    out.clear();
    // One key at a fixed place (GET, SET and most commands): what `visit_keys` finds, without
    // its walk and the sorting checks (~25 instructions per request).
    if let KeyFinder::One(index) = command.finder {
        if index < args.len() && !command.key_specs.is_empty() {
            out.push(index);
        }
        return Ok(());
    }
    visit_keys(command, args, true, &mut |position, _| out.push(position))?;
    // Specs report in spec order (GEORADIUS: STORE before STOREDIST); callers want request order.
    // Usually already sorted, so check before sorting.
    if !out.is_sorted() {
        out.sort_unstable();
    }
    out.dedup();
    Ok(())
}

/// Fills `out` with the keys of a request and the access each needs, in request order, as Redis'
/// ACL sees them: no `not_key` specs, and for the commands whose specs say `variable_flags` the
/// flags their `getkeys` function computes from the arguments.
pub(super) fn find_keys_with_access(
    command: &super::CommandSpec,
    args: &(impl Args + ?Sized),
    out: &mut Vec<(usize, KeyAccess)>,
) -> Result<(), KeyError> {
    out.clear();
    visit_keys(command, args, false, &mut |position, mut flags| {
        if flags.contains(KeySpecFlags::VARIABLE_FLAGS) {
            flags = variable_flags(&command.name, args).unwrap_or(flags);
        }
        out.push((position, KeyAccess::from_flags(flags)));
    })?;
    // One position may need two kinds of access (from two specs); Redis checks each on its own.
    if !out.is_sorted() {
        out.sort_unstable();
    }
    out.dedup();
    Ok(())
}

/// The flags `setGetKeys` and `bitfieldGetKeys` compute for the built-in commands whose specs say
/// `variable_flags`; `None` for others (a module's), whose spec flags stand.
fn variable_flags(command: &str, args: &(impl Args + ?Sized)) -> Option<KeySpecFlags> {
    use KeySpecFlags as F;
    let (argc, is) = (args.len(), |i: usize, word: &[u8]| args.get(i).eq_ignore_ascii_case(word));
    let reads_only = match command {
        // SET reads the old value only with GET, and then writes it too.
        "set" if (3..argc).any(|i| is(i, b"get")) => return Some(F::RW | F::ACCESS | F::UPDATE),
        "set" => return Some(F::OW | F::UPDATE),
        // BITFIELD only reads when every operation is a complete GET or OVERFLOW; anything else
        // (SET, INCRBY, a syntax error) counts as a write, the safe side.
        "bitfield" => {
            let mut i = 2;
            while i < argc && ((is(i, b"get") && i + 2 < argc) || (is(i, b"overflow") && i + 1 < argc)) {
                i += if is(i, b"get") { 3 } else { 2 };
            }
            i >= argc
        }
        _ => return None,
    };
    Some(if reads_only { F::RO | F::ACCESS } else { F::RW | F::ACCESS | F::UPDATE })
}
