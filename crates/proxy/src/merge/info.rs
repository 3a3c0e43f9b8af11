//! `INFO` sections that describe the data, not the proxy (keyspace, stats, memory, persistence,
//! commandstats, errorstats), summed over the masters so that they describe the whole cluster.
//!
//! The rules, field by field, for the same field on every master:
//! - `dbN:keys=…,expires=…,avg_ttl=…`: keys and expires summed, avg_ttl weighted by expires;
//! - `name:k=v,k=v…` (commandstats, errorstats, latencystats): each numeric `v` summed, and
//!   `usec_per_call` computed again from the sums;
//! - a number: summed (counters, byte counts, ops/s), except where a sum means nothing
//!   ([`combine_rule`]): flags, ratios, durations and the counts of what every master holds alike
//!   take the largest value (`loading`, `mem_fragmentation_ratio`, `rdb_last_bgsave_time_sec`,
//!   `number_of_cached_scripts` after a SCRIPT LOAD that loaded on every master), and the last save's
//!   time the earliest (the cluster is saved up to the oldest of its masters' saves);
//! - anything else: kept when every master says the same, left out when they differ (a human
//!   readable size or a policy name summed or picked from one node would mislead).

use bytes::{Bytes, BytesMut};

use super::{parse_u64, put_string, string_payload};

/// One section, its fields in first-seen order.
#[derive(Default)]
struct Section<'a> {
    name: &'a [u8],
    fields: Vec<(&'a [u8], Field<'a>)>,
}

enum Field<'a> {
    Integer(i128),
    Float(f64),
    /// `k=v,…` pairs, numeric ones summed; `None` once a non-numeric value differs.
    Pairs(Vec<(&'a [u8], PairValue<'a>)>),
    /// Text, and whether every master agreed on it.
    Text(&'a [u8], bool),
}

#[derive(Clone, Copy)]
enum PairValue<'a> {
    Number(f64, bool),
    Text(&'a [u8]),
}

/// Merges the `INFO` replies of the masters (bulk or verbatim strings) into one; the fields in
/// `own` get the proxy's value where the masters show them.
pub(super) fn info_sums(parts: &[Bytes], own: &[(&'static str, u64)]) -> Option<Bytes> {
    let mut sections: Vec<Section> = Vec::new();
    let mut kind = b'$';
    for (i, part) in parts.iter().enumerate() {
        let (part_kind, text) = string_payload(part)?;
        if i == 0 {
            kind = part_kind;
        }
        let mut current: Option<usize> = None;
        for line in text.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l)) {
            if line.is_empty() {
                continue;
            }
            if let Some(name) = line.strip_prefix(b"# ") {
                current = Some(match sections.iter().position(|s| s.name == name) {
                    Some(at) => at,
                    None => {
                        sections.push(Section { name, fields: Vec::new() });
                        sections.len() - 1
                    }
                });
                continue;
            }
            let colon = line.iter().position(|&b| b == b':')?;
            let section = &mut sections[current?];
            add_field(section, &line[..colon], &line[colon + 1..]);
        }
    }
    let mut text = Vec::new();
    for (i, section) in sections.iter().enumerate() {
        if i > 0 {
            text.extend_from_slice(b"\r\n");
        }
        text.extend_from_slice(b"# ");
        text.extend_from_slice(section.name);
        text.extend_from_slice(b"\r\n");
        for (name, field) in &section.fields {
            match own.iter().find(|(own_name, _)| own_name.as_bytes() == *name) {
                Some((_, value)) => write_field(&mut text, name, &Field::Integer(i128::from(*value))),
                None => write_field(&mut text, name, field),
            }
        }
    }
    let mut out = BytesMut::with_capacity(text.len() + 16);
    put_string(&mut out, kind, &text);
    Some(out.freeze())
}

fn add_field<'a>(section: &mut Section<'a>, name: &'a [u8], value: &'a [u8]) {
    let mut parsed = parse_field(value);
    if is_db(name) {
        weigh_ttl(&mut parsed);
    }
    match section.fields.iter_mut().find(|(n, _)| *n == name) {
        None => section.fields.push((name, parsed)),
        Some((_, field)) => combine(field, parsed, combine_rule(name)),
    }
}

/// How the masters' values of one numeric field make the cluster's value.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Combine {
    Sum,
    Max,
    Min,
}

/// Fields whose sum over the masters means nothing: states and flags (`loading`,
/// `aof_enabled`), ratios and percentages, durations of what is running or ran last (`-1` when
/// nothing did), and the counts and memory of the scripts and functions SCRIPT LOAD and FUNCTION
/// LOAD put on every master alike.
const LARGEST: &[&[u8]] = &[
    b"loading",
    b"async_loading",
    b"aof_enabled",
    b"number_of_cached_scripts",
    b"number_of_functions",
    b"number_of_libraries",
    b"used_memory_lua",
    b"used_memory_vm_eval",
    b"used_memory_scripts_eval",
    b"used_memory_vm_functions",
    b"used_memory_functions",
    b"used_memory_vm_total",
    b"used_memory_scripts",
    b"current_cow_size_age",
    b"latest_fork_usec",
    b"current_eviction_exceeded_time",
    b"current_active_defrag_time",
    b"io_threads_active",
    b"active_defrag_running",
];

/// Name endings of the same kinds of fields: `rdb_bgsave_in_progress`, `aof_rewrite_scheduled`,
/// `rdb_last_bgsave_time_sec`, `mem_fragmentation_ratio`, `current_fork_perc`.
const LARGEST_ENDINGS: &[&[u8]] = &[b"_in_progress", b"_scheduled", b"_time_sec", b"_ratio", b"_perc"];

impl Combine {
    /// Two masters' values of a field as one, integers and floats alike (a float that is not a
    /// number gives way to the other value, as `f64::max` and `f64::min` do).
    fn apply<T: Copy + PartialOrd + std::ops::Add<Output = T>>(self, a: T, b: T) -> T {
        let a_unordered = a.partial_cmp(&a).is_none();
        match self {
            Combine::Sum => a + b,
            Combine::Max if b > a || a_unordered => b,
            Combine::Min if b < a || a_unordered => b,
            Combine::Max | Combine::Min => a,
        }
    }
}

/// The rule for field `name` (see the module's documentation).
fn combine_rule(name: &[u8]) -> Combine {
    if name == b"rdb_last_save_time" {
        Combine::Min
    } else if LARGEST.contains(&name) || LARGEST_ENDINGS.iter().any(|end| name.ends_with(end)) {
        Combine::Max
    } else {
        Combine::Sum
    }
}

fn parse_field(value: &[u8]) -> Field<'_> {
    let text = std::str::from_utf8(value).unwrap_or("");
    if let Ok(n) = text.parse::<i128>() {
        return Field::Integer(n);
    }
    if !text.is_empty()
        && !text.contains('=')
        && let Ok(f) = text.parse::<f64>()
    {
        return Field::Float(f);
    }
    if value.contains(&b'=') {
        let pairs = value
            .split(|&b| b == b',')
            .filter_map(|pair| {
                let eq = pair.iter().position(|&b| b == b'=')?;
                let (k, v) = (&pair[..eq], &pair[eq + 1..]);
                let number = std::str::from_utf8(v).ok().and_then(|v| v.parse::<f64>().ok());
                Some((k, number.map_or(PairValue::Text(v), |n| PairValue::Number(n, !v.contains(&b'.')))))
            })
            .collect();
        return Field::Pairs(pairs);
    }
    Field::Text(value, true)
}

fn combine<'a>(field: &mut Field<'a>, other: Field<'a>, rule: Combine) {
    *field = match (std::mem::replace(field, Field::Text(b"", false)), other) {
        (Field::Integer(a), Field::Integer(b)) => Field::Integer(rule.apply(a, b)),
        (Field::Integer(a), Field::Float(b)) | (Field::Float(b), Field::Integer(a)) => {
            Field::Float(rule.apply(a as f64, b))
        }
        (Field::Float(a), Field::Float(b)) => Field::Float(rule.apply(a, b)),
        (Field::Pairs(mut a), Field::Pairs(b)) => {
            for (k, v) in b {
                match a.iter_mut().find(|(name, _)| *name == k) {
                    None => a.push((k, v)),
                    Some((_, mine)) => {
                        *mine = match (*mine, v) {
                            (PairValue::Number(x, xi), PairValue::Number(y, yi)) => PairValue::Number(x + y, xi && yi),
                            (PairValue::Text(x), PairValue::Text(y)) if x == y => PairValue::Text(x),
                            _ => PairValue::Text(b"?"),
                        }
                    }
                }
            }
            Field::Pairs(a)
        }
        (Field::Text(a, same), Field::Text(b, _)) => Field::Text(a, same && a == b),
        _ => Field::Text(b"", false),
    };
}

fn write_field(out: &mut Vec<u8>, name: &[u8], field: &Field) {
    let value = match field {
        Field::Integer(n) => n.to_string().into_bytes(),
        Field::Float(f) => format!("{f:.2}").into_bytes(),
        Field::Text(_, false) => return,
        Field::Text(text, true) => text.to_vec(),
        Field::Pairs(pairs) if is_db(name) => keyspace_line(pairs),
        Field::Pairs(pairs) => {
            let per_call = match (pair_number(pairs, b"usec"), pair_number(pairs, b"calls")) {
                (Some(usec), Some(calls)) if calls > 0.0 => Some(usec / calls),
                _ => None,
            };
            let mut text = Vec::new();
            for (i, (k, v)) in pairs.iter().enumerate() {
                if i > 0 {
                    text.push(b',');
                }
                text.extend_from_slice(k);
                text.push(b'=');
                match (*k, v) {
                    (b"usec_per_call", _) if per_call.is_some() => {
                        text.extend_from_slice(format!("{:.2}", per_call.unwrap_or_default()).as_bytes())
                    }
                    (_, PairValue::Number(n, true)) => text.extend_from_slice(format!("{n:.0}").as_bytes()),
                    (_, PairValue::Number(n, false)) => text.extend_from_slice(format!("{n:.2}").as_bytes()),
                    (_, PairValue::Text(t)) => text.extend_from_slice(t),
                }
            }
            text
        }
    };
    out.extend_from_slice(name);
    out.push(b':');
    out.extend_from_slice(&value);
    out.extend_from_slice(b"\r\n");
}

/// The numeric value of pair `key`, if it has one.
fn pair_number(pairs: &[(&[u8], PairValue)], key: &[u8]) -> Option<f64> {
    pairs.iter().find(|(k, _)| *k == key).and_then(|(_, v)| match v {
        PairValue::Number(n, _) => Some(*n),
        PairValue::Text(_) => None,
    })
}

fn is_db(name: &[u8]) -> bool {
    name.strip_prefix(b"db").and_then(parse_u64).is_some()
}

/// Turns a master's `avg_ttl` into `avg_ttl × expires`, so that summing gives the total the
/// cluster-wide average is computed from.
fn weigh_ttl(field: &mut Field) {
    let Field::Pairs(pairs) = field else { return };
    let expires = pair_number(pairs, b"expires").unwrap_or(0.0);
    if let Some((_, PairValue::Number(ttl, _))) = pairs.iter_mut().find(|(k, _)| *k == b"avg_ttl") {
        *ttl *= expires;
    }
}

/// `keys=…,expires=…,avg_ttl=…`, with avg_ttl the cluster-wide average weighted by expires.
fn keyspace_line(pairs: &[(&[u8], PairValue)]) -> Vec<u8> {
    let number = |key: &[u8]| pair_number(pairs, key).unwrap_or(0.0);
    let expires = number(b"expires");
    let avg_ttl = if expires > 0.0 { number(b"avg_ttl") / expires } else { 0.0 };
    let mut text = format!("keys={:.0},expires={expires:.0},avg_ttl={avg_ttl:.0}", number(b"keys")).into_bytes();
    for (k, v) in pairs {
        if matches!(*k, b"keys" | b"expires" | b"avg_ttl") {
            continue;
        }
        if let PairValue::Number(n, _) = v {
            text.extend_from_slice(format!(",{}={n:.0}", String::from_utf8_lossy(k)).as_bytes());
        }
    }
    text
}
