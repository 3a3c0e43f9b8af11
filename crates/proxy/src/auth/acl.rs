//! ACL rules: applying an ACL file's `user` lines the way Redis 7.0's `ACLSetUser` does, and
//! checking requests against the result the way `ACLSelectorCheckCmd` does.
//!
//! Parsing resolves every rule against the command table once, into a bitset over the table's
//! commands, so a check is one hash lookup by command name plus glob matching of the keys and
//! channels; it allocates nothing.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{Denied, User, glob};
use crate::command::{Args, CommandFlags, CommandSpec, CommandTable, KeyAccess};

/// Every category Redis 7.0 knows (`ACLCommandCategories`); a rule may name one even when no
/// command in the table carries it.
#[rustfmt::skip]
const REDIS_CATEGORIES: [&str; 21] = [
    "keyspace", "read", "write", "set", "sortedset", "list", "hash", "string", "bitmap", "hyperloglog", "geo",
    "stream", "pubsub", "admin", "fast", "slow", "blocking", "dangerous", "connection", "transaction", "scripting",
];

/// Command name (`get`, `client|setname`) → bit in a user's command bitset; one per snapshot,
/// shared by all its users.
struct CommandIndex {
    bits: HashMap<Box<str>, usize>,
}

impl fmt::Debug for CommandIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandIndex").field("commands", &self.bits.len()).finish()
    }
}

/// What applying rules needs to know about the command table.
struct Catalog<'t> {
    index: Arc<CommandIndex>,
    specs: Vec<&'t CommandSpec>,
    /// By bit: the bits of a container's subcommands (empty for other commands).
    subcommands: Vec<Vec<usize>>,
    categories: HashSet<&'t str>,
}

impl<'t> Catalog<'t> {
    fn new(table: &'t CommandTable) -> Catalog<'t> {
        let specs: Vec<&CommandSpec> = table.iter().collect();
        let bits: HashMap<Box<str>, usize> =
            specs.iter().enumerate().map(|(i, s)| (s.name.as_str().into(), i)).collect();
        let mut subcommands = vec![Vec::new(); specs.len()];
        for (i, spec) in specs.iter().enumerate() {
            if let Some(&container) = spec.name.split_once('|').and_then(|(c, _)| bits.get(c)) {
                subcommands[container].push(i);
            }
        }
        let mut categories: HashSet<&str> = REDIS_CATEGORIES.into_iter().collect();
        categories.extend(specs.iter().flat_map(|s| s.acl_categories.iter().map(String::as_str)));
        Catalog { index: Arc::new(CommandIndex { bits }), specs, subcommands, categories }
    }

    /// The bit of a command named in a rule (case-insensitive, `container|sub` for subcommands).
    fn lookup(&self, name: &[u8]) -> Result<usize, RuleError> {
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        self.index.bits.get(name.as_str()).copied().ok_or(RuleError::UnknownCommand(name))
    }
}

/// Which commands a user may run: Redis' `allowed_commands` bitmap, `ALLCOMMANDS` flag and
/// `allowed_firstargs`.
#[derive(Clone)]
struct CommandRules {
    /// Set by `allcommands`, cleared by any removal: skips the bit test entirely.
    all: bool,
    bits: Vec<u64>,
    /// The bit of commands missing from the index (learned after parsing): like Redis' bitmap,
    /// set by `allcommands` and cleared by `nocommands` only.
    unindexed: bool,
    /// `+select|0`: a command allowed with this first argument only (lowercase).
    first_args: Vec<(usize, Box<[u8]>)>,
    index: Option<Arc<CommandIndex>>,
}

impl CommandRules {
    fn set_all(&mut self, allow: bool) {
        self.all = allow;
        self.unindexed = allow;
        self.bits.fill(if allow { u64::MAX } else { 0 });
        self.first_args.clear();
    }

    fn set_bit(&mut self, bit: usize, allow: bool) {
        let (word, mask) = (bit / 64, 1u64 << (bit % 64));
        if allow {
            self.bits[word] |= mask;
        } else {
            self.bits[word] &= !mask;
            self.all = false;
        }
    }

    /// `ACLChangeSelectorPerm`: a container's rule applies to every subcommand too.
    fn change(&mut self, catalog: &Catalog<'_>, bit: usize, allow: bool) {
        self.set_bit(bit, allow);
        self.first_args.retain(|(b, _)| *b != bit);
        for &sub in &catalog.subcommands[bit] {
            self.set_bit(sub, allow);
        }
    }

    fn allows(&self, spec: &CommandSpec, args: &(impl Args + ?Sized)) -> bool {
        // AUTH and HELLO (no_auth) are never denied, as in Redis.
        if self.all || spec.flags.contains(CommandFlags::NO_AUTH) {
            return true;
        }
        let Some(bit) = self.index.as_ref().and_then(|index| index.bits.get(spec.name.as_str()).copied()) else {
            return self.unindexed;
        };
        if self.bits[bit / 64] & (1u64 << (bit % 64)) != 0 {
            return true;
        }
        args.len() >= 2 && self.first_args.iter().any(|(b, arg)| *b == bit && args.get(1).eq_ignore_ascii_case(arg))
    }
}

impl fmt::Debug for CommandRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first_args: Vec<_> = self.first_args.iter().map(|(bit, arg)| (bit, String::from_utf8_lossy(arg))).collect();
        f.debug_struct("CommandRules")
            .field("all", &self.all)
            .field("allowed", &self.bits.iter().map(|w| w.count_ones()).sum::<u32>())
            .field("first_args", &first_args)
            .finish()
    }
}

/// One key pattern with its `%R~` / `%W~` permissions (`~` grants both).
#[derive(Clone)]
struct KeyPattern {
    pattern: Box<[u8]>,
    read: bool,
    write: bool,
}

impl fmt::Debug for KeyPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let perms = match (self.read, self.write) {
            (true, true) => "",
            (true, false) => "%R",
            _ => "%W",
        };
        write!(f, "{perms}~{}", String::from_utf8_lossy(&self.pattern))
    }
}

#[derive(Debug, Clone, Default)]
struct KeyRules {
    all: bool,
    patterns: Vec<KeyPattern>,
}

impl KeyRules {
    /// `ACLSelectorCheckKey`: some pattern grants every permission the access needs and matches.
    fn allows(&self, key: &[u8], access: KeyAccess) -> bool {
        let granted = |p: &KeyPattern| match access {
            KeyAccess::Metadata => true,
            KeyAccess::Read => p.read,
            KeyAccess::Write => p.write,
            KeyAccess::ReadWrite => p.read && p.write,
        };
        self.all || self.patterns.iter().any(|p| granted(p) && glob::matches(&p.pattern, key))
    }

    fn add(&mut self, op: &[u8]) -> Result<(), RuleError> {
        if self.all {
            return Err(RuleError::PatternAfterAllKeys);
        }
        let (read, write, pattern) = if op[0] == b'%' {
            let (mut read, mut write, mut start) = (false, false, op.len());
            for (i, &c) in op.iter().enumerate().skip(1) {
                match c.to_ascii_uppercase() {
                    b'R' if !read => read = true,
                    b'W' if !write => write = true,
                    b'~' => {
                        start = i + 1;
                        break;
                    }
                    _ => return Err(RuleError::Syntax),
                }
            }
            if !read && !write {
                return Err(RuleError::Syntax);
            }
            (read, write, &op[start..])
        } else {
            (true, true, &op[1..])
        };
        if has_spaces(pattern) {
            return Err(RuleError::Syntax);
        }
        match self.patterns.iter_mut().find(|p| *p.pattern == *pattern) {
            Some(existing) => {
                existing.read |= read;
                existing.write |= write;
            }
            None => self.patterns.push(KeyPattern { pattern: pattern.into(), read, write }),
        }
        Ok(())
    }
}

#[derive(Clone, Default)]
struct ChannelRules {
    all: bool,
    patterns: Vec<Box<[u8]>>,
}

impl fmt::Debug for ChannelRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let patterns: Vec<_> = self.patterns.iter().map(|p| format!("&{}", String::from_utf8_lossy(p))).collect();
        f.debug_struct("ChannelRules").field("all", &self.all).field("patterns", &patterns).finish()
    }
}

/// Everything a user may do: Redis' root selector.
#[derive(Debug, Clone)]
pub(super) struct Rules {
    commands: CommandRules,
    keys: KeyRules,
    channels: ChannelRules,
}

impl Rules {
    /// `on nopass ~* &* +@all`'s rules.
    pub(super) fn unrestricted() -> Rules {
        Rules {
            commands: CommandRules {
                all: true,
                bits: Vec::new(),
                unindexed: true,
                first_args: Vec::new(),
                index: None,
            },
            keys: KeyRules { all: true, patterns: Vec::new() },
            channels: ChannelRules { all: true, patterns: Vec::new() },
        }
    }

    /// A new user's rules: no commands, keys or channels (Redis 7.0's `acl-pubsub-default`).
    fn none(catalog: &Catalog<'_>) -> Rules {
        let commands = CommandRules {
            all: false,
            bits: vec![0; catalog.specs.len().div_ceil(64)],
            unindexed: false,
            first_args: Vec::new(),
            index: Some(Arc::clone(&catalog.index)),
        };
        Rules { commands, keys: KeyRules::default(), channels: ChannelRules::default() }
    }

    /// Command first, then keys, then channels: the order of Redis' checks, hence of its errors.
    pub(super) fn check(
        &self,
        spec: &CommandSpec,
        args: &(impl Args + ?Sized),
        scratch: &mut Vec<(usize, KeyAccess)>,
    ) -> Result<(), Denied> {
        if !self.commands.allows(spec, args) {
            return Err(Denied::Command { name: spec.name.clone() });
        }
        if !self.keys.all {
            let denied = match spec.key_positions_with_access(args, scratch) {
                Ok(()) => scratch.iter().any(|&(i, access)| !self.keys.allows(args.get(i), access)),
                // A bad numkeys: Redis checks the keys its getkeys function finds instead (C's
                // `atoi` of the count; often none), needing no particular access of them.
                Err(_) => {
                    let mut keys = Vec::new();
                    crate::command::fallback_key_positions(spec, args, &mut keys);
                    keys.iter().any(|&i| !self.keys.allows(args.get(i), KeyAccess::Metadata))
                }
            };
            if denied {
                return Err(Denied::Key);
            }
        }
        if !self.channels.all {
            // Redis' `commands_with_channels`; unsubscribing needs no permission.
            let (channels, literal) = match spec.name.as_str() {
                "publish" | "spublish" => (1..args.len().min(2), false),
                "subscribe" | "ssubscribe" => (1..args.len(), false),
                // A pattern subscription must be allowed as that very pattern, not one it matches.
                "psubscribe" => (1..args.len(), true),
                _ => (0..0, false),
            };
            let allowed = |channel: &[u8]| {
                self.channels.patterns.iter().any(|p| if literal { **p == *channel } else { glob::matches(p, channel) })
            };
            if !channels.into_iter().all(|i| allowed(args.get(i))) {
                return Err(Denied::Channel);
            }
        }
        Ok(())
    }
}

/// Why one rule cannot be applied; [`RuleError::describe`] words it for the load error.
#[derive(Debug)]
enum RuleError {
    UnknownRule,
    Syntax,
    UnknownCommand(String),
    UnknownCategory(String),
    FirstArgOfSubcommand,
    PatternAfterAllKeys,
    PatternAfterAllChannels,
    BadHash,
    NoSuchPassword,
    Selector,
}

impl RuleError {
    /// The message for a load error. Rules that carry a password or its hash are never quoted.
    fn describe(&self, rule: &[u8]) -> String {
        let rule = String::from_utf8_lossy(rule);
        match self {
            RuleError::UnknownRule => format!("unknown rule '{rule}'"),
            RuleError::Syntax => format!("syntax error in rule '{rule}'"),
            RuleError::UnknownCommand(name) => format!("unknown command '{name}' in rule '{rule}'"),
            RuleError::UnknownCategory(name) => format!("unknown category '{name}' in rule '{rule}'"),
            RuleError::FirstArgOfSubcommand => {
                format!("allowing a first argument of a subcommand is not supported, in rule '{rule}'")
            }
            RuleError::PatternAfterAllKeys => {
                format!("key pattern '{rule}' after 'allkeys' (or '~*') has no effect; use 'resetkeys' first")
            }
            RuleError::PatternAfterAllChannels => {
                format!(
                    "channel pattern '{rule}' after 'allchannels' (or '&*') has no effect; use 'resetchannels' first"
                )
            }
            RuleError::BadHash => {
                "a password hash ('#' or '!' rule) must be exactly 64 lowercase hexadecimal characters".into()
            }
            RuleError::NoSuchPassword => "a '<' or '!' rule removes a password the user does not have".into(),
            RuleError::Selector => format!("selectors '(...)' are not supported, in rule '{rule}'"),
        }
    }
}

/// A line that cannot be loaded: its 1-based number and what is wrong.
pub(super) struct LineError {
    pub(super) line: usize,
    pub(super) message: String,
}

/// Parses an ACL file's text into users by name, refusing the whole file at the first bad line,
/// as Redis does. Lines are `user NAME RULE...`, split like Redis' `sdssplitargs` (quotes allowed);
/// blank lines and lines starting with `#` are skipped.
pub(super) fn parse_users(text: &str, table: &CommandTable) -> Result<HashMap<String, Arc<User>>, LineError> {
    let catalog = Catalog::new(table);
    let mut users = HashMap::new();
    let mut defined_on = HashMap::new();
    for (n, raw) in text.split('\n').enumerate() {
        let error = |message: String| LineError { line: n + 1, message };
        let line = raw.trim_matches([' ', '\t', '\r', '\n']);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let args = split_args(line.as_bytes()).ok_or_else(|| error("unbalanced quotes".into()))?;
        let [keyword, name, rules @ ..] = args.as_slice() else {
            return Err(error("expected 'user NAME RULE...'".into()));
        };
        if keyword.as_slice() != b"user" {
            let found = String::from_utf8_lossy(keyword);
            return Err(error(format!("expected 'user NAME RULE...', found '{found}'")));
        }
        let name = match std::str::from_utf8(name) {
            Ok(name) if !has_spaces(name.as_bytes()) && !name.is_empty() => name,
            _ => return Err(error(format!("invalid user name '{}'", String::from_utf8_lossy(name)))),
        };
        if let Some(first) = defined_on.insert(name.to_owned(), n + 1) {
            return Err(error(format!("user '{name}' is already defined on line {first}")));
        }
        let mut user = User::new(name, Rules::none(&catalog));
        for rule in rules {
            apply(&mut user, rule, &catalog).map_err(|e| error(e.describe(rule)))?;
        }
        user.node_user = Some(Arc::new(super::NodeUser::new(name, rules)));
        users.insert(name.to_owned(), Arc::new(user));
    }
    Ok(users)
}

/// Applies one rule to `user`, as `ACLSetUser` / `ACLSetSelector` do.
fn apply(user: &mut User, op: &[u8], catalog: &Catalog<'_>) -> Result<(), RuleError> {
    let Some(&first) = op.first() else {
        return Ok(());
    };
    let rules = &mut user.rules;
    match op.to_ascii_lowercase().as_slice() {
        b"on" => user.enabled = true,
        b"off" => user.enabled = false,
        // Payload sanitizing (RESTORE) is Redis' business; there are no selectors to clear.
        b"sanitize-payload" | b"skip-sanitize-payload" | b"clearselectors" => {}
        b"nopass" => {
            user.nopass = true;
            user.passwords.clear();
        }
        b"resetpass" => {
            user.nopass = false;
            user.passwords.clear();
        }
        b"reset" => {
            user.nopass = false;
            user.passwords.clear();
            user.enabled = false;
            rules.keys = KeyRules::default();
            rules.channels = ChannelRules::default();
            rules.commands.set_all(false);
        }
        b"allkeys" | b"~*" => rules.keys = KeyRules { all: true, patterns: Vec::new() },
        b"resetkeys" => rules.keys = KeyRules::default(),
        b"allchannels" | b"&*" => rules.channels = ChannelRules { all: true, patterns: Vec::new() },
        b"resetchannels" => rules.channels = ChannelRules::default(),
        b"allcommands" | b"+@all" => rules.commands.set_all(true),
        b"nocommands" | b"-@all" => rules.commands.set_all(false),
        _ => match first {
            b'>' | b'#' => {
                let digest = if first == b'>' { Sha256::digest(&op[1..]).into() } else { parse_hash(&op[1..])? };
                if !user.passwords.contains(&digest) {
                    user.passwords.push(digest);
                }
                user.nopass = false;
            }
            b'<' | b'!' => {
                let digest = if first == b'<' { Sha256::digest(&op[1..]).into() } else { parse_hash(&op[1..])? };
                let at = user.passwords.iter().position(|p| *p == digest).ok_or(RuleError::NoSuchPassword)?;
                user.passwords.remove(at);
            }
            b'(' => return Err(RuleError::Selector),
            b'~' | b'%' => rules.keys.add(op)?,
            b'&' => {
                if rules.channels.all {
                    return Err(RuleError::PatternAfterAllChannels);
                }
                if has_spaces(&op[1..]) {
                    return Err(RuleError::Syntax);
                }
                if !rules.channels.patterns.iter().any(|p| **p == op[1..]) {
                    rules.channels.patterns.push(op[1..].into());
                }
            }
            b'+' | b'-' if op.get(1) == Some(&b'@') => {
                let category = String::from_utf8_lossy(&op[2..]).to_ascii_lowercase();
                if !catalog.categories.contains(category.as_str()) {
                    return Err(RuleError::UnknownCategory(category));
                }
                // Module commands are left alone by categories, as in Redis.
                let members =
                    catalog.specs.iter().enumerate().filter(|(_, s)| {
                        !s.flags.contains(CommandFlags::MODULE) && s.acl_categories.contains(&category)
                    });
                for (bit, _) in members {
                    rules.commands.change(catalog, bit, first == b'+');
                }
            }
            b'+' => allow_command(&mut rules.commands, &op[1..], catalog)?,
            b'-' => rules.commands.change(catalog, catalog.lookup(&op[1..])?, false),
            _ => return Err(RuleError::UnknownRule),
        },
    }
    Ok(())
}

/// `+cmd`, `+container|sub`, or `+cmd|firstarg` for a command without subcommands (Redis'
/// deprecated but supported way to allow `SELECT 0` alone).
fn allow_command(commands: &mut CommandRules, name: &[u8], catalog: &Catalog<'_>) -> Result<(), RuleError> {
    let Some(bar) = name.iter().rposition(|&c| c == b'|') else {
        commands.change(catalog, catalog.lookup(name)?, true);
        return Ok(());
    };
    let (command, arg) = (&name[..bar], &name[bar + 1..]);
    let bit = catalog.lookup(command)?;
    if catalog.specs[bit].name.contains('|') {
        return Err(RuleError::FirstArgOfSubcommand);
    }
    if arg.is_empty() {
        return Err(RuleError::Syntax);
    }
    if catalog.subcommands[bit].is_empty() {
        let arg: Box<[u8]> = arg.to_ascii_lowercase().into();
        if !commands.first_args.iter().any(|(b, a)| *b == bit && *a == arg) {
            commands.first_args.push((bit, arg));
        }
    } else {
        commands.change(catalog, catalog.lookup(name)?, true);
    }
    Ok(())
}

/// `ACLCheckPasswordHash`: exactly 64 lowercase hex digits.
fn parse_hash(hash: &[u8]) -> Result<[u8; 32], RuleError> {
    let mut digest = [0u8; 32];
    let lowercase_hex = hash.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    match hex::decode_to_slice(hash, &mut digest) {
        Ok(()) if lowercase_hex => Ok(digest),
        _ => Err(RuleError::BadHash),
    }
}

/// C's `isspace`, which Redis uses to split lines.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// `ACLStringHasSpaces`: patterns and names may hold no blanks or NUL bytes.
fn has_spaces(s: &[u8]) -> bool {
    s.iter().any(|&c| is_space(c) || c == 0)
}

/// Redis' `sdssplitargs`: blanks separate arguments; "double quotes" take `\xHH`, `\n`, `\r`,
/// `\t`, `\b`, `\a` and `\<any>` escapes; 'single quotes' take `\'` only. `None` for unbalanced
/// quotes or a closing quote not followed by a blank.
fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    // The C code walks a NUL-terminated string: 0 stands for its end.
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while at(i) != 0 && is_space(at(i)) {
            i += 1;
        }
        if at(i) == 0 {
            return Some(args);
        }
        let (mut arg, mut double, mut single, mut done) = (Vec::new(), false, false, false);
        while !done {
            let c = at(i);
            let closes = |i: usize| at(i + 1) == 0 || is_space(at(i + 1));
            if double {
                match (c, at(i + 1)) {
                    (b'\\', b'x') if hex(at(i + 2)).is_some() && hex(at(i + 3)).is_some() => {
                        arg.push(hex(at(i + 2))? * 16 + hex(at(i + 3))?);
                        i += 3;
                    }
                    (b'\\', next) if next != 0 => {
                        i += 1;
                        arg.push(match next {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                    }
                    (b'"', _) if closes(i) => done = true,
                    (b'"', _) | (0, _) => return None,
                    _ => arg.push(c),
                }
            } else if single {
                match (c, at(i + 1)) {
                    (b'\\', b'\'') => {
                        i += 1;
                        arg.push(b'\'');
                    }
                    (b'\'', _) if closes(i) => done = true,
                    (b'\'', _) | (0, _) => return None,
                    _ => arg.push(c),
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => done = true,
                    b'"' => double = true,
                    b'\'' => single = true,
                    _ => arg.push(c),
                }
            }
            if at(i) != 0 {
                i += 1;
            }
        }
        args.push(arg);
    }
}
