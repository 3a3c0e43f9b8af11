//! Values in the config file that are more than a TOML type: durations with a unit (`250ms`,
//! `1s`, `1m`), and optional strings, addresses and counts where an empty value means unset.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

const DURATION_HINT: &str = "expected a number with a unit: 250ms, 1s, 1m";

/// Parses `<digits><unit>` with unit `ns`, `us`, `ms`, `s`, `m` or `h`, e.g. `"250ms"`.
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let too_large = || format!("duration {text:?} is too large");
    let n: u64 = match number.parse() {
        Ok(n) => n,
        Err(_) if number.is_empty() => {
            return Err(format!("invalid duration {text:?} ({DURATION_HINT})"));
        }
        Err(_) => return Err(too_large()),
    };
    let scaled = |factor: u64| n.checked_mul(factor).map(Duration::from_secs).ok_or_else(too_large);
    match unit {
        "ns" => Ok(Duration::from_nanos(n)),
        "us" | "µs" => Ok(Duration::from_micros(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => scaled(60),
        "h" => scaled(3600),
        _ => Err(format!("invalid duration {text:?} ({DURATION_HINT})")),
    }
}

/// Reads a duration string; any other TOML type gets serde's "invalid type … expected" error.
struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string with a unit such as \"250ms\", \"1s\" or \"1m\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration(v).map_err(E::custom)
    }
}

pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_str(DurationVisitor)
}

pub(super) fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let value = d.deserialize_str(DurationVisitor)?;
    Ok((!value.is_zero()).then_some(value))
}

pub(super) fn optional_string<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: From<String>,
{
    let value = String::deserialize(d)?;
    Ok((!value.is_empty()).then(|| T::from(value)))
}

pub(super) fn optional_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let value = String::deserialize(d)?;
    if value.is_empty() {
        return Ok(None);
    }
    let hint = "expected ip:port such as 127.0.0.1:6379 or [::1]:6379; \"\" = off";
    let error = |_| de::Error::custom(format!("invalid address {value:?} ({hint})"));
    value.parse().map(Some).map_err(error)
}

pub(super) fn optional_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let value = usize::deserialize(d)?;
    Ok((value > 0).then_some(value))
}
