//! The output limits of Redis' client classes (`client-output-buffer-limit`), for the two classes a
//! client of the proxy can be in: `normal`, and `pubsub` while it has a subscription.
//!
//! They start as the config file says (`limits.normal_output_*`, by default none as in Redis, and
//! `limits.pubsub_output_*`) and follow a `CONFIG SET client-output-buffer-limit` sent through the
//! proxy, whose `normal` and `pubsub` groups never reach the nodes (only `replica` groups do,
//! [`replica_groups`]): the proxy's own clients are the ones a client's setting is about. The
//! value is checked as Redis' `updateClientOutputBufferLimit` checks it (all classes or none); a
//! value Redis refuses goes to the nodes as it came, for their refusal, and changes nothing here.
//! Every client is also under `limits.client_output_limit`, the proxy's own bound, which no class
//! setting lifts.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The classes whose limits the proxy applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Normal,
    PubSub,
}

impl Class {
    /// The class named `name` in `client-output-buffer-limit` (any case); `None` for the ones
    /// the proxy has no clients of (`slave`, `replica`) and unknown names alike.
    fn from_name(name: &str) -> Option<Class> {
        [Class::Normal, Class::PubSub].into_iter().find(|class| class.name().eq_ignore_ascii_case(name))
    }

    /// The class's name in `client-output-buffer-limit`.
    pub fn name(self) -> &'static str {
        match self {
            Class::Normal => "normal",
            Class::PubSub => "pubsub",
        }
    }
}

/// One class's limits: buffered bytes at which a client is disconnected at once, and bytes it may
/// keep buffered for at most `soft_time`; 0 turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub hard: usize,
    pub soft: usize,
    pub soft_time: Duration,
}

/// Which of a class's limits a client's buffered output broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breach {
    Hard,
    Soft,
}

impl Limits {
    /// Redis' default for the `normal` class: no limit.
    pub const NONE: Limits = Limits { hard: 0, soft: 0, soft_time: Duration::ZERO };

    /// Redis' `checkClientOutputBufferLimits` for `buffered` bytes at `now`: at the hard limit;
    /// or at the soft limit at this look and at every look since `over_soft_since`, for longer
    /// than `soft_time`. The first look that finds the client over the soft limit only starts the
    /// count (Redis: "first time we see the soft limit reached"), a look under it ends it.
    pub fn check(&self, buffered: usize, over_soft_since: &mut Option<Instant>, now: Instant) -> Option<Breach> {
        if self.hard > 0 && buffered >= self.hard {
            return Some(Breach::Hard);
        }
        if !(self.soft > 0 && buffered >= self.soft) {
            *over_soft_since = None;
            return None;
        }
        match *over_soft_since {
            None => {
                *over_soft_since = Some(now);
                None
            }
            Some(since) => (now.saturating_duration_since(since) > self.soft_time).then_some(Breach::Soft),
        }
    }
}

/// The classes' limits as they are now, read by every session that looks at its output.
#[derive(Debug)]
pub struct OutputClasses {
    normal: Stored,
    pubsub: Stored,
}

#[derive(Debug, Default)]
struct Stored {
    hard: AtomicUsize,
    soft: AtomicUsize,
    soft_nanos: AtomicU64,
}

impl Stored {
    fn store(&self, limits: Limits) {
        self.hard.store(limits.hard, Ordering::Relaxed);
        self.soft.store(limits.soft, Ordering::Relaxed);
        let nanos = u64::try_from(limits.soft_time.as_nanos()).unwrap_or(u64::MAX);
        self.soft_nanos.store(nanos, Ordering::Relaxed);
    }

    fn load(&self) -> Limits {
        Limits {
            hard: self.hard.load(Ordering::Relaxed),
            soft: self.soft.load(Ordering::Relaxed),
            soft_time: Duration::from_nanos(self.soft_nanos.load(Ordering::Relaxed)),
        }
    }
}

impl OutputClasses {
    /// The classes' limits as the config file gives them.
    pub fn new(normal: Limits, pubsub: Limits) -> OutputClasses {
        let classes = OutputClasses { normal: Stored::default(), pubsub: Stored::default() };
        classes.normal.store(normal);
        classes.pubsub.store(pubsub);
        classes
    }

    /// Both classes' limits, for `CONFIG GET client-output-buffer-limit`.
    pub fn both(&self) -> [(Class, Limits); 2] {
        [(Class::Normal, self.get(Class::Normal)), (Class::PubSub, self.get(Class::PubSub))]
    }

    pub fn get(&self, class: Class) -> Limits {
        match class {
            Class::Normal => self.normal.load(),
            Class::PubSub => self.pubsub.load(),
        }
    }

    /// Whether a client without subscriptions has class limits to look at: the two loads such a
    /// client pays per settling.
    #[inline]
    pub fn normal_limited(&self) -> bool {
        self.normal.hard.load(Ordering::Relaxed) > 0 || self.normal.soft.load(Ordering::Relaxed) > 0
    }

    /// Takes the value of `CONFIG SET client-output-buffer-limit`: `<class> <hard> <soft>
    /// <soft seconds>` repeated, sizes with Redis' units (`32mb`, `8m`, `1gb`). Returns false, and
    /// changes nothing, for a value Redis refuses. `replica` (`slave`) limits are the nodes' alone.
    pub fn set_from_config(&self, value: &[u8]) -> bool {
        let Some(parsed) = parse_config_value(value) else {
            return false;
        };
        for (class, limits) in parsed {
            match class {
                Some(Class::Normal) => self.normal.store(limits),
                Some(Class::PubSub) => self.pubsub.store(limits),
                None => {}
            }
        }
        true
    }
}

/// A node's `client-output-buffer-limit` value (`normal 0 0 0 slave 268435456 67108864 60 pubsub
/// …`, as Redis' `getConfigClientOutputBufferLimitOption` writes it) with the groups of the
/// classes in `own` written as Redis writes them from those limits; the other groups (replicas)
/// as the node has them. `None` for a value not made of such groups.
pub fn config_value_with(node_value: &[u8], own: &[(Class, Limits)]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(node_value).ok()?;
    let words: Vec<&str> = text.split(' ').collect();
    if !words.len().is_multiple_of(4) {
        return None;
    }
    let groups: Vec<String> = words
        .chunks(4)
        .map(|group| match own.iter().find(|(class, _)| Some(*class) == Class::from_name(group[0])) {
            Some((class, limits)) => {
                let soft_seconds = crate::clock::whole_seconds(limits.soft_time);
                format!("{} {} {} {soft_seconds}", class.name(), limits.hard, limits.soft)
            }
            None => group.join(" "),
        })
        .collect();
    Some(groups.join(" ").into_bytes())
}

/// The `replica` (`slave`) groups of a `CONFIG SET client-output-buffer-limit` value, the nodes'
/// part of it, joined as they came (empty when there are none); `None` for a value Redis refuses.
pub fn replica_groups(value: &[u8]) -> Option<Vec<u8>> {
    let parsed = parse_config_value(value)?;
    let groups = config_fields(std::str::from_utf8(value).ok()?);
    let replica = groups.chunks(4).zip(&parsed).filter(|(_, (class, _))| class.is_none());
    Some(replica.map(|(group, _)| group.join(" ")).collect::<Vec<_>>().join(" ").into_bytes())
}

/// Redis' `updateClientOutputBufferLimit`: every class checked before any is taken. `None` for
/// a class the proxy has no clients of (replicas). The value is split at each single space, as
/// `CONFIG SET` splits it (`sdssplitlen`): an empty field is a size or a time of 0, or an
/// unknown class.
fn parse_config_value(value: &[u8]) -> Option<Vec<(Option<Class>, Limits)>> {
    let args = config_fields(std::str::from_utf8(value).ok()?);
    if !args.len().is_multiple_of(4) {
        return None;
    }
    let mut parsed = Vec::new();
    for group in args.chunks(4) {
        let class = Class::from_name(group[0]);
        if class.is_none() && !["slave", "replica"].iter().any(|name| name.eq_ignore_ascii_case(group[0])) {
            return None;
        }
        let hard = usize::try_from(memtoull(group[1])?).unwrap_or(usize::MAX);
        let soft = usize::try_from(memtoull(group[2])?).unwrap_or(usize::MAX);
        let soft_time = Duration::from_secs(soft_seconds(group[3])?);
        parsed.push((class, Limits { hard, soft, soft_time }));
    }
    Some(parsed)
}

/// The fields of a `client-output-buffer-limit` value as `CONFIG SET` splits it (`sdssplitlen` at
/// each single space; an empty value has none).
fn config_fields(text: &str) -> Vec<&str> {
    if text.is_empty() { Vec::new() } else { text.split(' ').collect() }
}

/// Redis' `memtoull`: digits and an optional unit (`b`, `k` 1000, `kb` 1024, `m`, `mb`, `g`, `gb`,
/// any case); no digits count as 0 and too many saturate, as `strtoull` reads them, but 128 or
/// more do not fit Redis' buffer for them.
fn memtoull(text: &str) -> Option<u64> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits >= 128 {
        return None;
    }
    let (number, unit) = text.split_at(digits);
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    let value = if number.is_empty() { 0 } else { number.parse::<u64>().unwrap_or(u64::MAX) };
    Some(value.wrapping_mul(multiplier))
}

/// The soft limit's seconds as Redis reads them: `strtoll` (leading white space as C's `isspace`
/// has it and a sign allowed, nothing after the digits) into an `int` (so truncated to 32 bits),
/// not negative.
fn soft_seconds(field: &str) -> Option<u64> {
    let text = field.trim_start_matches([' ', '\t', '\n', '\x0B', '\x0C', '\r']);
    let digits_from = usize::from(text.starts_with(['+', '-']));
    if text.len() == digits_from {
        // No digits: strtoll reads 0 and leaves the end pointer at the field's start, which is
        // its end only for an empty field.
        return field.is_empty().then_some(0);
    }
    let wide: i64 = match text.parse::<i64>() {
        Ok(value) => value,
        // strtoll saturates what does not fit.
        Err(_) if text[digits_from..].bytes().all(|b| b.is_ascii_digit()) => {
            if text.starts_with('-') {
                i64::MIN
            } else {
                i64::MAX
            }
        }
        Err(_) => return None,
    };
    u64::try_from(wide as i32).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    fn defaults() -> OutputClasses {
        OutputClasses::new(Limits::NONE, Limits { hard: 32 * MIB, soft: 8 * MIB, soft_time: Duration::from_secs(60) })
    }

    #[test]
    fn sizes_take_redis_units() {
        assert_eq!(memtoull("32mb"), Some(32 * 1024 * 1024));
        assert_eq!(memtoull("8M"), Some(8_000_000));
        assert_eq!(memtoull("1Gb"), Some(1024 * 1024 * 1024));
        assert_eq!(memtoull("512k"), Some(512_000));
        assert_eq!(memtoull("4096"), Some(4096));
        assert_eq!(memtoull("0"), Some(0));
        assert_eq!(memtoull("-1"), None);
        assert_eq!(memtoull("10tb"), None);
        assert_eq!(memtoull("1.5mb"), None);
        // strtoull saturates; Redis' buffer for the digits holds 127.
        assert_eq!(memtoull("99999999999999999999"), Some(u64::MAX));
        assert_eq!(memtoull(&"9".repeat(127)), Some(u64::MAX));
        assert_eq!(memtoull(&"0".repeat(128)), None);
    }

    #[test]
    fn a_setting_changes_the_classes_it_names() {
        let classes = defaults();
        assert!(!classes.normal_limited());
        assert!(classes.set_from_config(b"pubsub 64mb 16mb 30 replica 256mb 64mb 60"));
        assert_eq!(
            classes.get(Class::PubSub),
            Limits { hard: 64 * MIB, soft: 16 * MIB, soft_time: Duration::from_secs(30) }
        );
        assert_eq!(classes.get(Class::Normal), Limits::NONE);
        assert!(classes.set_from_config(b"NORMAL 1mb 0 0"));
        assert!(classes.normal_limited());
        assert_eq!(classes.get(Class::Normal), Limits { hard: MIB, soft: 0, soft_time: Duration::ZERO });
        assert!(classes.set_from_config(b"normal 0 0 0"));
        assert!(!classes.normal_limited());
    }

    #[test]
    fn fields_are_split_at_single_spaces_as_config_set_splits_them() {
        let classes = defaults();
        // An empty size or time is 0; an empty class is no class.
        assert!(classes.set_from_config(b"pubsub  1mb 5"));
        assert_eq!(classes.get(Class::PubSub), Limits { hard: 0, soft: MIB, soft_time: Duration::from_secs(5) });
        assert!(classes.set_from_config(b"pubsub 2mb 1mb "));
        assert_eq!(classes.get(Class::PubSub), Limits { hard: 2 * MIB, soft: MIB, soft_time: Duration::ZERO });
        assert!(!classes.set_from_config(b" pubsub 2mb 1mb"));
        assert!(classes.set_from_config(b""));
        assert_eq!(soft_seconds("+7"), Some(7));
        assert_eq!(soft_seconds(" 7"), Some(7));
        // An int: 2^32 + 5 is 5, 2^31 is negative.
        assert_eq!(soft_seconds("4294967301"), Some(5));
        assert_eq!(soft_seconds("2147483648"), None);
        assert_eq!(soft_seconds("99999999999999999999"), None);
        assert_eq!(soft_seconds("-"), None);
        // White space is skipped before digits only, C's `isspace` set (vertical tab too).
        assert_eq!(soft_seconds("\t"), None);
        assert_eq!(soft_seconds("\x0b5"), Some(5));
        assert_eq!(soft_seconds(""), Some(0));
    }

    #[test]
    fn the_soft_limit_counts_from_the_first_look_over_it() {
        let limits = Limits { hard: 100, soft: 10, soft_time: Duration::from_secs(60) };
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let mut since = None;
        assert_eq!(limits.check(100, &mut since, at(0)), Some(Breach::Hard));
        assert_eq!(limits.check(10, &mut since, at(0)), None);
        assert_eq!(since, Some(at(0)));
        assert_eq!(limits.check(50, &mut since, at(60)), None);
        assert_eq!(limits.check(50, &mut since, at(61)), Some(Breach::Soft));
        // A look under it starts over.
        assert_eq!(limits.check(9, &mut since, at(62)), None);
        assert_eq!(since, None);
        assert_eq!(limits.check(50, &mut since, at(200)), None);
        // A soft time of 0 still only starts the count at the first look.
        let zero = Limits { soft_time: Duration::ZERO, ..limits };
        let mut since = None;
        assert_eq!(zero.check(50, &mut since, at(0)), None);
        assert_eq!(zero.check(50, &mut since, at(1)), Some(Breach::Soft));
        assert_eq!(Limits::NONE.check(usize::MAX, &mut since, at(2)), None);
        assert_eq!(since, None);
    }

    #[test]
    fn a_value_redis_refuses_changes_nothing() {
        let classes = defaults();
        let before = classes.get(Class::PubSub);
        for value in [
            &b"pubsub 1mb 1mb"[..],
            b"master 1mb 1mb 10",
            b"pubsub 1mb 1mb 10 normal 1xb 0 0",
            b"pubsub 1mb 1mb -1",
            b"pubsub 1mb 1mb 1.5",
            b"bogus 0 0 0",
        ] {
            assert!(!classes.set_from_config(value), "{}", String::from_utf8_lossy(value));
            assert_eq!(classes.get(Class::PubSub), before);
            assert!(!classes.normal_limited());
        }
    }
}
