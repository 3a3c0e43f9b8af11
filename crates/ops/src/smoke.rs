//! `smoke HOST:PORT [--tls --ca FILE [--cert F --key F]] [--user U --pass-env VAR] [--skip STEP,...]`:
//! an end-to-end check of an endpoint (the proxy, or a single Redis node) as an application sees it.
//!
//! Steps, each on fresh keys that expire after 60 s: `connect` (TCP/TLS + AUTH), `ping`,
//! `set-get`, `mget` (three keys in three different hash slots and one missing key), `del` (two
//! keys in two slots, then EXISTS), `pubsub` (SUBSCRIBE on a second connection, PUBLISH on the
//! first, the message must arrive within `--timeout`, default 5 s). An endpoint that refuses
//! SUBSCRIBE (the proxy, today) fails that step with "unsupported by the endpoint: …"; callers that
//! know this pass `--skip pubsub`.
//!
//! Prints a table (step, result, latency ms, detail) on stdout; exits 0 only when every step that
//! ran passed.

use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::Value;
use redisforge_cluster::slot::key_slot;

use crate::cluster::node::{ConnArgs, Connector, Node, NodeError};
use crate::cluster::parse_duration;

/// `redisforge-ops smoke`.
#[derive(Debug, Clone, clap::Args)]
pub struct SmokeArgs {
    /// The endpoint, `host:port`.
    #[arg(value_name = "HOST:PORT")]
    pub addr: String,
    /// Steps to leave out (comma-separated or repeated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub skip: Vec<Step>,
    /// How long the pub/sub message may take to arrive.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// A step that `--skip` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Step {
    /// PING.
    Ping,
    /// SET then GET one key.
    SetGet,
    /// MGET across hash slots.
    Mget,
    /// DEL across hash slots.
    Del,
    /// SUBSCRIBE/PUBLISH round trip.
    Pubsub,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Ping => "ping",
            Step::SetGet => "set-get",
            Step::Mget => "mget",
            Step::Del => "del",
            Step::Pubsub => "pubsub",
        }
    }
}

/// Why `smoke` exits non-zero.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SmokeError {
    /// Connection options could not be used (password variable unset, unreadable certificate).
    #[error(transparent)]
    Options(#[from] NodeError),
    /// Some steps failed (the table says which and why).
    #[error("smoke: {failed} of {ran} step(s) failed against {addr}")]
    Failed {
        /// The endpoint.
        addr: String,
        /// Failed steps.
        failed: usize,
        /// Steps that ran.
        ran: usize,
    },
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It did what it should.
    Pass,
    /// It did not.
    Fail,
    /// `--skip`ped.
    Skip,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "SKIP",
        })
    }
}

/// One line of the result table.
#[derive(Debug, Clone)]
pub struct Row {
    /// Step name.
    pub step: &'static str,
    /// Result.
    pub outcome: Outcome,
    /// Wall time of the step; `None` when it did not run.
    pub latency: Option<Duration>,
    /// What was checked or what went wrong.
    pub detail: String,
}

/// Runs every step, prints the table and fails when any step failed.
///
/// # Errors
/// [`SmokeError::Options`] before any step runs; [`SmokeError::Failed`] after the table.
pub fn run(args: &SmokeArgs) -> Result<(), SmokeError> {
    let connector = Connector::new(&args.conn)?;
    let rows = steps(&connector, args);
    print!("{}", table(&rows));
    let ran = rows.iter().filter(|r| r.outcome != Outcome::Skip).count();
    let failed = rows.iter().filter(|r| r.outcome == Outcome::Fail).count();
    if failed == 0 { Ok(()) } else { Err(SmokeError::Failed { addr: args.addr.clone(), failed, ran }) }
}

/// Keys in three different hash slots (checked by a unit test).
const TAGS: [&str; 3] = ["{smoke-a}", "{smoke-b}", "{smoke-c}"];

fn steps(connector: &Connector, args: &SmokeArgs) -> Vec<Row> {
    let token = unique_token();
    let key = |tag: &str, what: &str| format!("redisforge:smoke:{tag}:{what}:{token}");
    let mut rows = Vec::new();
    let started = Instant::now();
    // A PING round trip belongs to connecting: under TLS 1.3 a server that rejects the client
    // certificate only says so after the handshake, on the first read.
    let connected = connector.connect(&args.addr).and_then(|mut con| con.query::<String>(&["PING"]).map(|_| con));
    let mut con = match connected {
        Ok(con) => {
            let mode = if args.conn.tls { "TLS" } else { "plain" };
            rows.push(row("connect", started, Ok(format!("{} ({mode})", args.addr))));
            con
        }
        Err(e) => {
            rows.push(row("connect", started, Err(why(e))));
            for step in [Step::Ping, Step::SetGet, Step::Mget, Step::Del, Step::Pubsub] {
                let outcome = if args.skip.contains(&step) { Outcome::Skip } else { Outcome::Fail };
                let detail = if outcome == Outcome::Fail { "not run: no connection".into() } else { String::new() };
                rows.push(Row { step: step.name(), outcome, latency: None, detail });
            }
            return rows;
        }
    };
    let mut written: Vec<String> = Vec::new();
    for step in [Step::Ping, Step::SetGet, Step::Mget, Step::Del, Step::Pubsub] {
        if args.skip.contains(&step) {
            rows.push(Row { step: step.name(), outcome: Outcome::Skip, latency: None, detail: String::new() });
            continue;
        }
        let t = Instant::now();
        let result = match step {
            Step::Ping => ping(&mut con),
            Step::SetGet => set_get(&mut con, &key(TAGS[0], "setget"), &token, &mut written),
            Step::Mget => {
                let keys: Vec<String> = TAGS.iter().map(|t| key(t, "mget")).collect();
                mget(&mut con, &keys, &key(TAGS[1], "missing"), &token, &mut written)
            }
            Step::Del => del(&mut con, &[key(TAGS[0], "del"), key(TAGS[2], "del")], &token),
            Step::Pubsub => pubsub(connector, &args.addr, &mut con, &format!("redisforge:smoke:{token}"), args.timeout),
        };
        rows.push(row(step.name(), t, result));
    }
    // Best effort, one key per DEL so that a cluster node does not answer CROSSSLOT.
    for k in written {
        let _ = con.query::<i64>(&["DEL", &k]);
    }
    rows
}

fn row(step: &'static str, started: Instant, result: Result<String, String>) -> Row {
    let latency = Some(started.elapsed());
    match result {
        Ok(detail) => Row { step, outcome: Outcome::Pass, latency, detail },
        Err(detail) => Row { step, outcome: Outcome::Fail, latency, detail },
    }
}

fn ping(con: &mut Node) -> Result<String, String> {
    let reply: String = con.query(&["PING"]).map_err(why)?;
    if reply == "PONG" { Ok(reply) } else { Err(format!("expected PONG, got {reply:?}")) }
}

fn set_get(con: &mut Node, key: &str, value: &str, written: &mut Vec<String>) -> Result<String, String> {
    con.query::<()>(&["SET", key, value, "EX", "60"]).map_err(why)?;
    written.push(key.to_owned());
    let got: Option<String> = con.query(&["GET", key]).map_err(why)?;
    match got {
        Some(v) if v == value => Ok(format!("slot {}", key_slot(key.as_bytes()))),
        other => Err(format!("GET returned {other:?}, expected {value:?}")),
    }
}

fn mget(
    con: &mut Node,
    keys: &[String],
    missing: &str,
    value: &str,
    written: &mut Vec<String>,
) -> Result<String, String> {
    for (i, k) in keys.iter().enumerate() {
        con.query::<()>(&["SET", k, &format!("{value}-{i}"), "EX", "60"]).map_err(why)?;
        written.push(k.clone());
    }
    let mut args = vec!["MGET"];
    args.extend(keys.iter().map(String::as_str));
    args.push(missing);
    let got: Vec<Option<String>> = con.query_as("MGET", &args).map_err(why)?;
    let mut want: Vec<Option<String>> = (0..keys.len()).map(|i| Some(format!("{value}-{i}"))).collect();
    want.push(None);
    let slots: Vec<String> = keys.iter().map(|k| key_slot(k.as_bytes()).to_string()).collect();
    if got == want {
        Ok(format!("{} keys in slots {} + 1 missing", keys.len(), slots.join(", ")))
    } else {
        Err(format!("MGET returned {got:?}, expected {want:?}"))
    }
}

fn del(con: &mut Node, keys: &[String], value: &str) -> Result<String, String> {
    for k in keys {
        con.query::<()>(&["SET", k, value, "EX", "60"]).map_err(why)?;
    }
    let mut args = vec!["DEL"];
    args.extend(keys.iter().map(String::as_str));
    let deleted: i64 = con.query_as("DEL", &args).map_err(why)?;
    let mut exists = vec!["EXISTS"];
    exists.extend(keys.iter().map(String::as_str));
    let left: i64 = con.query_as("EXISTS", &exists).map_err(why)?;
    if usize::try_from(deleted).ok() == Some(keys.len()) && left == 0 {
        let slots: Vec<String> = keys.iter().map(|k| key_slot(k.as_bytes()).to_string()).collect();
        Ok(format!("{deleted} keys in slots {}", slots.join(", ")))
    } else {
        Err(format!("DEL removed {deleted} of {}, EXISTS then counted {left}", keys.len()))
    }
}

fn pubsub(
    connector: &Connector,
    addr: &str,
    con: &mut Node,
    channel: &str,
    timeout: Duration,
) -> Result<String, String> {
    let mut sub = connector.connect(addr).map_err(|e| format!("second connection: {e}"))?;
    sub.set_read_timeout(timeout).map_err(why)?;
    let raw = sub.connection();
    raw.send_packed_command(&redis::cmd("SUBSCRIBE").arg(channel).get_packed_command())
        .map_err(|e| format!("SUBSCRIBE: {e}"))?;
    let confirm = raw.recv_response().and_then(Value::extract_error);
    match confirm {
        Ok(Value::Array(items)) if matches!(items.first(), Some(Value::BulkString(k)) if k == b"subscribe") => {}
        Ok(Value::Push { .. }) => {}
        Ok(other) => return Err(format!("unexpected SUBSCRIBE reply {other:?}")),
        Err(e) if e.is_io_error() || e.is_timeout() => return Err(format!("SUBSCRIBE got no reply: {e}")),
        Err(e) => return Err(format!("unsupported by the endpoint: {}", reply_error(&e))),
    }
    let payload = format!("ping-{}", unique_token());
    let receivers: i64 = con.query(&["PUBLISH", channel, &payload]).map_err(why)?;
    let deadline = Instant::now() + timeout;
    // Bounded: each read waits at most `timeout`, and only a handful of unrelated frames can come.
    for _ in 0..16 {
        if Instant::now() >= deadline {
            break;
        }
        let frame = sub.connection().recv_response().map_err(|e| format!("no message within {timeout:?}: {e}"))?;
        let parts = match frame {
            Value::Array(items) | Value::Push { data: items, .. } => items,
            _ => continue,
        };
        let text: Vec<Vec<u8>> = parts
            .iter()
            .map(|v| match v {
                Value::BulkString(b) => b.clone(),
                Value::SimpleString(s) => s.as_bytes().to_vec(),
                _ => Vec::new(),
            })
            .collect();
        if text.len() == 3 && text[0] == b"message" && text[2] == payload.as_bytes() {
            return Ok(format!("message received ({receivers} subscriber(s))"));
        }
    }
    Err(format!("the published message did not arrive within {timeout:?}"))
}

/// A failed command as the table shows it: the command name and the server's (or client's) words.
fn why(e: NodeError) -> String {
    match e {
        NodeError::Command { what, source, .. } => {
            format!("{}: {}", what.split_whitespace().next().unwrap_or_default(), reply_error(&source))
        }
        other => other.to_string(),
    }
}

/// An error reply as the server wrote it (`ERR unsupported command …`), else the client's text.
fn reply_error(e: &redis::RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        _ => e.to_string(),
    }
}

fn table(rows: &[Row]) -> String {
    let mut lines = vec![["STEP".to_owned(), "RESULT".into(), "LATENCY_MS".into(), "DETAIL".into()]];
    for r in rows {
        let ms = r.latency.map_or_else(|| "-".to_owned(), |l| format!("{:.1}", l.as_secs_f64() * 1000.0));
        lines.push([r.step.to_owned(), r.outcome.to_string(), ms, r.detail.clone()]);
    }
    let widths: Vec<usize> = (0..3).map(|c| lines.iter().map(|l| l[c].len()).max().unwrap_or(0)).collect();
    lines
        .iter()
        .map(|l| {
            format!(
                "{:<w0$}  {:<w1$}  {:>w2$}  {}",
                l[0],
                l[1],
                l[2],
                l[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2]
            )
        })
        .map(|l| l.trim_end().to_owned() + "\n")
        .collect()
}

fn unique_token() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{}-{nanos}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoke_keys_land_in_three_different_slots() {
        let slots: Vec<u16> = TAGS.iter().map(|t| key_slot(format!("redisforge:smoke:{t}:x").as_bytes())).collect();
        assert!(slots[0] != slots[1] && slots[1] != slots[2] && slots[0] != slots[2], "{slots:?}");
    }

    #[test]
    fn table_aligns_columns_and_marks_skips() {
        let rows = [
            Row {
                step: "connect",
                outcome: Outcome::Pass,
                latency: Some(Duration::from_micros(1500)),
                detail: "x".into(),
            },
            Row { step: "pubsub", outcome: Outcome::Skip, latency: None, detail: String::new() },
        ];
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("STEP     RESULT  LATENCY_MS  DETAIL"), "{text}");
        assert!(lines[1].starts_with("connect  PASS           1.5  x"), "{text}");
        assert_eq!(lines[2], "pubsub   SKIP             -");
    }
}
