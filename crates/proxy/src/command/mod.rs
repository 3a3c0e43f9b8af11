//! The command table: for every Redis command, its arity, flags, key positions and how the proxy
//! handles it (forward by slot, split per slot, fan out, answer locally, keep per-client state,
//! refuse).
//!
//! The built-in table is generated from Redis 7.0.15 (`table.rs`, by
//! `scripts/gen-command-table.py`) so the proxy can route before it has talked to a node; at
//! start-up the caller adds whatever a node's `COMMAND` reply knows beyond it (newer commands,
//! modules) with [`CommandTable::learn_from_command_reply`]. After that the table is shared
//! read-only.
//!
//! Lookups happen for every request, so [`CommandTable::lookup`] and [`CommandSpec::key_positions`]
//! never allocate.
//!
//! How the proxy handles each command (`Handling`, `Merge`, `AdminKind`, `LocalKind`,
//! `StatefulKind`) is in `handling.rs`, beside the table of which command gets which.

mod handling;
mod keys;
pub(crate) use keys::parse_integer;
mod names;
mod table;
#[cfg(test)]
mod tests;

use std::ops::{BitOr, BitOrAssign};

use redis_protocol::resp2::types::OwnedFrame;

use handling::handling_for;
pub use handling::{AdminKind, Handling, LocalKind, Merge, OwnConfig, OwnValue, StatefulKind, TransactionStep};
pub use keys::{
    BeginSearch, FindKeys, GetKeysError, KeyAccess, KeyError, KeySpec, KeySpecFlags, NumKeysProblem,
    fallback_key_positions,
};
use keys::{KeyFinder, RawKeySpec};
#[cfg(test)]
use names::MAX_NAME;
use names::Names;

/// Arguments of one request, argv-style: index 0 is the command name.
pub trait Args {
    /// Number of arguments, the command name included.
    fn len(&self) -> usize;
    /// Argument `i`; callers only ask for `i < len()`.
    fn get(&self, i: usize) -> &[u8];
    /// Whether there are no arguments at all (not even a command name).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: AsRef<[u8]>> Args for [T] {
    fn len(&self) -> usize {
        <[T]>::len(self)
    }
    fn get(&self, i: usize) -> &[u8] {
        self[i].as_ref()
    }
}

impl<T: AsRef<[u8]>, const N: usize> Args for [T; N] {
    fn len(&self) -> usize {
        N
    }
    fn get(&self, i: usize) -> &[u8] {
        self[i].as_ref()
    }
}

impl<T: AsRef<[u8]>> Args for Vec<T> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn get(&self, i: usize) -> &[u8] {
        self[i].as_ref()
    }
}

/// Bit set of command flags, as `COMMAND` reports them (`write`, `readonly`, `movablekeys`, ...).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CommandFlags(u32);

impl CommandFlags {
    pub const WRITE: Self = Self(1);
    pub const READONLY: Self = Self(1 << 1);
    pub const DENYOOM: Self = Self(1 << 2);
    pub const ADMIN: Self = Self(1 << 3);
    pub const PUBSUB: Self = Self(1 << 4);
    pub const NOSCRIPT: Self = Self(1 << 5);
    pub const BLOCKING: Self = Self(1 << 6);
    pub const LOADING: Self = Self(1 << 7);
    pub const STALE: Self = Self(1 << 8);
    pub const SKIP_MONITOR: Self = Self(1 << 9);
    pub const SKIP_SLOWLOG: Self = Self(1 << 10);
    pub const ASKING: Self = Self(1 << 11);
    pub const FAST: Self = Self(1 << 12);
    pub const NO_AUTH: Self = Self(1 << 13);
    pub const MAY_REPLICATE: Self = Self(1 << 14);
    pub const NO_MANDATORY_KEYS: Self = Self(1 << 15);
    pub const ALLOW_BUSY: Self = Self(1 << 16);
    /// Key positions depend on the arguments (`movablekeys`).
    pub const MOVABLE_KEYS: Self = Self(1 << 17);
    pub const NO_MULTI: Self = Self(1 << 18);
    pub const NO_ASYNC_LOADING: Self = Self(1 << 19);
    /// Implemented by a module.
    pub const MODULE: Self = Self(1 << 20);

    const NAMES: [(&'static str, CommandFlags); 21] = [
        ("write", Self::WRITE),
        ("readonly", Self::READONLY),
        ("denyoom", Self::DENYOOM),
        ("admin", Self::ADMIN),
        ("pubsub", Self::PUBSUB),
        ("noscript", Self::NOSCRIPT),
        ("blocking", Self::BLOCKING),
        ("loading", Self::LOADING),
        ("stale", Self::STALE),
        ("skip_monitor", Self::SKIP_MONITOR),
        ("skip_slowlog", Self::SKIP_SLOWLOG),
        ("asking", Self::ASKING),
        ("fast", Self::FAST),
        ("no_auth", Self::NO_AUTH),
        ("may_replicate", Self::MAY_REPLICATE),
        ("no_mandatory_keys", Self::NO_MANDATORY_KEYS),
        ("allow_busy", Self::ALLOW_BUSY),
        ("movablekeys", Self::MOVABLE_KEYS),
        ("no_multi", Self::NO_MULTI),
        ("no_async_loading", Self::NO_ASYNC_LOADING),
        ("module", Self::MODULE),
    ];

    /// No flags.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// The flag `COMMAND` calls `name` (case-insensitive); `None` for flags unknown here.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|&(_, f)| f)
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// The `COMMAND` names of the flags that are set.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES.into_iter().filter(move |&(_, f)| self.contains(f)).map(|(n, _)| n)
    }

    fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        names.into_iter().filter_map(Self::from_name).fold(Self::empty(), |a, b| a | b)
    }
}

impl BitOr for CommandFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl BitOrAssign for CommandFlags {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

/// Everything the proxy knows about one command or subcommand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// Lowercase; subcommands as `container|sub` (`"client|setname"`).
    pub name: String,
    /// Redis convention: >0 exact argc, <0 minimum argc (argc includes the name).
    pub arity: i32,
    pub flags: CommandFlags,
    /// Without `@`, lowercase: `"read"`, `"string"`, `"fast"`, ...
    pub acl_categories: Vec<String>,
    pub key_specs: Vec<KeySpec>,
    pub handling: Handling,
    /// Index of the `command` label this command's metrics use (bounded set, `other` for the rest).
    pub metric_label: usize,
    /// Its place in the table, which names it again for `CLIENT LIST`'s `cmd=` ([`CommandTable::name_at`]).
    pub index: usize,
    finder: KeyFinder,
}

impl CommandSpec {
    /// Whether a request with `argc` arguments (the name included) has the right number of them.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let arity = self.arity.unsigned_abs() as usize;
        match self.arity {
            0 => true,
            a if a > 0 => argc == arity,
            _ => argc >= arity,
        }
    }

    /// Whether the command may modify data.
    pub fn is_write(&self) -> bool {
        self.flags.contains(CommandFlags::WRITE)
    }

    /// Positions (argv indices) of the keys in this request, in request order, found by the key
    /// specs (the general mechanism Redis itself uses for COMMAND GETKEYS). Clears `out` first.
    ///
    /// Sharded pub/sub channels (specs flagged `not_key`) count as keys: Redis Cluster routes
    /// SPUBLISH and SSUBSCRIBE by their slot. Arguments that do not fit a spec (a request too short
    /// for its arity) yield fewer keys rather than an error; check [`Self::arity_ok`] first.
    ///
    /// # Errors
    /// [`KeyError::BadNumKeys`] when a numkeys argument is not an integer, is negative, is zero
    /// for a command that needs keys, or counts more keys than there are arguments; its `Display`
    /// is Redis' own wording for that command.
    pub fn key_positions(&self, args: &(impl Args + ?Sized), out: &mut Vec<usize>) -> Result<(), KeyError> {
        keys::find_key_positions(self, args, out)
    }

    /// The keys of this request as Redis' ACL checks them: like [`Self::key_positions`] (request
    /// order, same finders), each with the [`KeyAccess`] its key spec flags call for, but without
    /// sharded pub/sub channels (`not_key` specs: ACL checks those as channels). SET and BITFIELD
    /// (`variable_flags`) get their access from the arguments, as Redis computes it. Clears `out`
    /// first; never allocates beyond growing `out`.
    ///
    /// # Errors
    /// As [`Self::key_positions`].
    pub fn key_positions_with_access(
        &self,
        args: &(impl Args + ?Sized),
        out: &mut Vec<(usize, KeyAccess)>,
    ) -> Result<(), KeyError> {
        keys::find_keys_with_access(self, args, out)
    }

    fn new(
        name: String,
        arity: i32,
        mut flags: CommandFlags,
        acl: Vec<String>,
        key_specs: Vec<KeySpec>,
        learned: bool,
    ) -> Self {
        flags |= handling::hidden_flags(&name);
        CommandSpec {
            handling: handling_for(&name, flags, learned),
            finder: KeyFinder::for_command(&name, &key_specs),
            metric_label: crate::metrics::labels::label_index(&name),
            index: 0,
            name,
            arity,
            flags,
            acl_categories: acl,
            key_specs,
        }
    }

    fn from_raw(raw: &RawCommand) -> Self {
        let RawCommand(name, arity, flags, acl, specs) = *raw;
        let acl = acl.iter().map(|&c| c.to_owned()).collect();
        let specs = specs.iter().map(KeySpec::from_raw).collect();
        CommandSpec::new(name.to_owned(), arity, CommandFlags::from_names(flags.iter().copied()), acl, specs, false)
    }
}

/// One command as the generated table stores it: name, arity, flags, ACL categories, key specs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawCommand(
    pub &'static str,
    pub i32,
    pub &'static [&'static str],
    pub &'static [&'static str],
    pub &'static [RawKeySpec],
);

/// A top-level command and, for containers (CLIENT, CONFIG, ...), its subcommands by bare name.
#[derive(Debug, Clone, Default)]
struct Entry {
    spec: usize,
    subcommands: Names<usize>,
}

/// Every command the proxy knows: built once at start-up, then shared read-only (behind an `Arc`).
#[derive(Debug, Clone, Default)]
pub struct CommandTable {
    specs: Vec<CommandSpec>,
    commands: Names<Entry>,
}

impl CommandTable {
    /// The table generated from Redis 7.0.15, plus the few newer commands the proxy answers itself,
    /// with the proxy's handling of each.
    pub fn builtin() -> CommandTable {
        let mut table = CommandTable::default();
        for raw in table::COMMANDS.iter().chain(table::SUPPLEMENT) {
            table.insert(CommandSpec::from_raw(raw));
        }
        table
    }

    /// Version of the Redis server the built-in table was generated from.
    pub fn builtin_redis_version() -> &'static str {
        table::REDIS_VERSION
    }

    /// Learn commands the built-in table does not know from a `COMMAND` reply of a node (RESP2
    /// array, as returned by Redis 7.x / 8.x / Valkey; the older 6.x form without key specs falls
    /// back to first/last/step). Returns how many commands and subcommands were added. Known
    /// commands are kept: the built-in table carries the proxy's decisions. Malformed entries are
    /// skipped.
    pub fn learn_from_command_reply(&mut self, reply: &OwnedFrame) -> usize {
        let OwnedFrame::Array(entries) = reply else {
            return 0;
        };
        let mut added = 0;
        for entry in entries {
            let Some((spec, subcommands)) = parse_command(entry) else {
                continue;
            };
            added += usize::from(self.insert_or_adopt(spec));
            for sub in subcommands.iter().filter_map(|s| parse_command(s).map(|(spec, _)| spec)) {
                added += usize::from(self.insert_or_adopt(sub));
            }
        }
        added
    }

    /// Adds a learned command; for one the table knows, takes over the server's arity and
    /// `no_multi` flag only, where the server's version differs from 7.0 (Redis 7.4 lets COMMAND
    /// GETKEYS take a command without arguments; Valkey 8 refuses WATCH inside MULTI as a
    /// `no_multi` command, before checking permissions): the proxy follows the server it serves
    /// there, and keeps its own decisions for everything else.
    fn insert_or_adopt(&mut self, spec: CommandSpec) -> bool {
        let (no_multi, arity, name) = (spec.flags.contains(CommandFlags::NO_MULTI), spec.arity, spec.name.clone());
        if self.insert(spec) {
            return true;
        }
        if let Some(known) = self.specs.iter_mut().find(|s| s.name == name) {
            known.arity = arity;
            if no_multi {
                known.flags |= CommandFlags::NO_MULTI;
            }
        }
        false
    }

    /// The spec at [`CommandSpec::index`] `index`.
    pub fn spec_at(&self, index: usize) -> Option<&CommandSpec> {
        self.specs.get(index)
    }

    /// The full name (`client|info`) of the spec at [`CommandSpec::index`] `index`.
    pub fn name_at(&self, index: usize) -> Option<&str> {
        self.specs.get(index).map(|spec| spec.name.as_str())
    }

    /// Case-insensitive lookup without allocating. For commands with subcommands (CLIENT, CONFIG,
    /// OBJECT, XINFO, ...) returns the subcommand's spec when `args[1]` names a known subcommand,
    /// the container's when there is no `args[1]`, and `None` for an unknown subcommand, as Redis'
    /// `lookupCommand` does (the request is then refused before any permission check; see
    /// [`Self::is_container`]).
    pub fn lookup(&self, args: &(impl Args + ?Sized)) -> Option<&CommandSpec> {
        if args.is_empty() {
            return None;
        }
        let entry = self.commands.get(args.get(0))?;
        if !entry.subcommands.is_empty() && args.len() > 1 {
            let &sub = entry.subcommands.get(args.get(1))?;
            return self.specs.get(sub);
        }
        self.specs.get(entry.spec)
    }

    /// Whether `name` is a command with subcommands (Redis' `isContainerCommandBySds`).
    pub fn is_container(&self, name: &[u8]) -> bool {
        self.commands.get(name).is_some_and(|e| !e.subcommands.is_empty())
    }

    /// `COMMAND GETKEYS` for the request `args`, answered as Redis 7 answers it: the argv positions
    /// of its keys in key-spec order, repeats kept, sharded channels left out, and an empty list
    /// for commands whose keys are optional (EVAL with no keys). Unlike [`Self::lookup`], an
    /// unknown subcommand is not its container. Allocates; not for the request path.
    ///
    /// # Errors
    /// [`GetKeysError`], whose `Display` is Redis' message for each reason.
    pub fn command_getkeys(&self, args: &(impl Args + ?Sized)) -> Result<Vec<usize>, GetKeysError> {
        let entry = match args.is_empty() {
            true => None,
            false => self.commands.get(args.get(0)),
        };
        let Some(entry) = entry else {
            return Err(GetKeysError::InvalidCommand);
        };
        let index = match entry.subcommands.is_empty() || args.len() == 1 {
            true => Some(entry.spec),
            false => entry.subcommands.get(args.get(1)).copied(),
        };
        let spec = index.and_then(|i| self.specs.get(i)).ok_or(GetKeysError::InvalidCommand)?;
        keys::command_getkeys(spec, args)
    }

    /// Number of commands and subcommands.
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Every command and subcommand.
    pub fn iter(&self) -> impl Iterator<Item = &CommandSpec> {
        self.specs.iter()
    }

    /// Adds `spec` unless its name is known, too long to look up, or a subcommand of an unknown
    /// container. Returns whether it was added.
    fn insert(&mut self, mut spec: CommandSpec) -> bool {
        let index = self.specs.len();
        spec.index = index;
        let (container, sub) = match spec.name.split_once('|') {
            Some((container, sub)) => (container, Some(sub)),
            None => (spec.name.as_str(), None),
        };
        let added = match sub {
            None => self.commands.insert(container.as_bytes(), Entry { spec: index, subcommands: Names::default() }),
            Some(sub) => self
                .commands
                .get_mut(container.as_bytes())
                .is_some_and(|entry| entry.subcommands.insert(sub.as_bytes(), index)),
        };
        if !added {
            return false;
        }
        self.specs.push(spec);
        true
    }
}

/// Parses one entry of a `COMMAND` reply into a spec and the raw frames of its subcommands.
///
/// Layout: name, arity, flags, first key, last key, step, then ACL categories (6.0+), tips (7.0+),
/// key specs (7.0+) and subcommands (7.0+).
fn parse_command(frame: &OwnedFrame) -> Option<(CommandSpec, &[OwnedFrame])> {
    let OwnedFrame::Array(fields) = frame else {
        return None;
    };
    let int = |i: usize| match fields.get(i) {
        Some(OwnedFrame::Integer(n)) => Some(*n),
        _ => None,
    };
    let strings = |i: usize| -> Vec<String> {
        match fields.get(i) {
            Some(OwnedFrame::Array(items)) => {
                items.iter().filter_map(keys::text).map(|t| String::from_utf8_lossy(t).to_ascii_lowercase()).collect()
            }
            _ => Vec::new(),
        }
    };
    let name = std::str::from_utf8(keys::text(fields.first()?)?).ok()?.to_ascii_lowercase();
    let arity = i32::try_from(int(1)?).ok()?;
    let flags = CommandFlags::from_names(strings(2).iter().map(String::as_str));
    let acl = strings(6).into_iter().map(|c| c.trim_start_matches('@').to_owned()).collect();
    let key_specs = match fields.get(8) {
        Some(OwnedFrame::Array(specs)) => specs.iter().filter_map(KeySpec::from_frame).collect(),
        _ => KeySpec::legacy(int(3)?, int(4)?, int(5)?).into_iter().collect(),
    };
    let subcommands = match fields.get(9) {
        Some(OwnedFrame::Array(subs)) => subs.as_slice(),
        _ => &[],
    };
    Some((CommandSpec::new(name, arity, flags, acl, key_specs, true), subcommands))
}
