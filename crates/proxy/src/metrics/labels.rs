//! The bounded set of values the `command` label takes.
//!
//! Every series costs memory in the proxy and in Prometheus, so only the commands that matter on a
//! dashboard get their own label; the long tail (admin commands, rare data types, modules, names a
//! client made up) shares `"other"`. The set is fixed at build time: no client can create a series.

/// The `command` label values, `"other"` last. Lowercase Redis command names; a command with
/// subcommands (`client|setname`) is counted under its container (`client`).
pub const LABELS: &[&str] = &[
    // Strings and keys.
    "get",
    "set",
    "mget",
    "mset",
    "setex",
    "setnx",
    "getset",
    "getdel",
    "append",
    "strlen",
    "del",
    "unlink",
    "exists",
    "incr",
    "incrby",
    "decr",
    "decrby",
    "expire",
    "pexpire",
    "ttl",
    "pttl",
    "type",
    // Hashes.
    "hget",
    "hset",
    "hmget",
    "hgetall",
    "hdel",
    "hincrby",
    // Lists.
    "lpush",
    "rpush",
    "lpop",
    "rpop",
    "lrange",
    "llen",
    // Sets.
    "sadd",
    "srem",
    "smembers",
    "sismember",
    "scard",
    // Sorted sets.
    "zadd",
    "zrange",
    "zrangebyscore",
    "zrem",
    "zscore",
    "zincrby",
    "zcard",
    // Streams.
    "xadd",
    "xread",
    "xreadgroup",
    "xack",
    "xrange",
    // Scripts, pub/sub, transactions.
    "eval",
    "evalsha",
    "publish",
    "subscribe",
    "psubscribe",
    "multi",
    "exec",
    // Connection and server.
    "ping",
    "info",
    "auth",
    "hello",
    "select",
    "client",
    "command",
    "cluster",
    "scan",
    "other",
];

/// Index of `"other"` in [`LABELS`].
pub const OTHER: usize = LABELS.len() - 1;

/// The index in [`LABELS`] under which `command_name` is counted: its own, its container's for a
/// subcommand (`"client|setname"` → `"client"`), else [`OTHER`].
///
/// A linear search: call it once per command when the command table is built, not per request.
pub fn label_index(command_name: &str) -> usize {
    let container = command_name.split_once('|').map_or(command_name, |(container, _)| container);
    LABELS[..OTHER].iter().position(|label| label.eq_ignore_ascii_case(container)).unwrap_or(OTHER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::CommandTable;

    #[test]
    fn other_is_the_last_label() {
        assert_eq!(LABELS[OTHER], "other");
        assert_eq!(label_index("other"), OTHER);
    }

    #[test]
    fn labels_are_unique_lowercase_and_few() {
        let mut seen = std::collections::HashSet::new();
        for label in LABELS {
            assert!(seen.insert(*label), "{label} listed twice");
            assert!(label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{label} is not a lowercase name");
        }
        // Each label costs a histogram (17 series) plus two counters.
        assert!(LABELS.len() <= 80, "{} labels: keep the command label bounded", LABELS.len());
    }

    #[test]
    fn every_label_but_other_is_a_real_command() {
        let table = CommandTable::builtin();
        for label in &LABELS[..OTHER] {
            assert!(table.iter().any(|spec| spec.name == *label), "{label} is not a Redis command");
        }
    }

    #[test]
    fn known_commands_get_their_own_label() {
        assert_eq!(LABELS[label_index("get")], "get");
        assert_eq!(LABELS[label_index("zrangebyscore")], "zrangebyscore");
        assert_eq!(LABELS[label_index("GET")], "get");
    }

    #[test]
    fn subcommands_count_under_their_container() {
        assert_eq!(LABELS[label_index("client|setname")], "client");
        assert_eq!(LABELS[label_index("cluster|slots")], "cluster");
    }

    #[test]
    fn the_long_tail_is_other() {
        assert_eq!(label_index("bitfield"), OTHER);
        assert_eq!(label_index("acl|setuser"), OTHER);
        assert_eq!(label_index(""), OTHER);
        assert_eq!(label_index("made-up-by-a-client"), OTHER);
    }
}
