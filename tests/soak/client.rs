//! One soak client: a connection through the proxy, an exact model of the keys it owns, and the
//! rule every reply is checked by.
//!
//! The rule: a reply must match the model. After an error reply a write may or may not have been
//! applied, so its key is uncertain until the next full read, which is then taken as the truth.
//! A value older than the model's is Redis' own loss — writes a master acknowledged but had not
//! replicated when it failed — only when a fault hit the key's master since the write was
//! acknowledged ([`Soak::at_risk`]); those are counted, anything else is a wrong reply.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::{Cmd, Connection, Value};
use redisforge_proxy::slot::key_slot;
use redisforge_tests::connect;
use redisforge_tests::rng::Rng;

use crate::shared::Soak;

/// Keys per family per client.
pub const STRINGS: usize = 16;
pub const OTHERS: usize = 4;
/// The key families: strings, counters, hashes, lists, sets, sorted sets.
const FAMILIES: [&str; 6] = ["s", "n", "h", "l", "e", "z"];

/// A key's value as its client knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    Str(String),
    Hash(BTreeMap<String, String>),
    List(VecDeque<String>),
    Set(BTreeSet<String>),
    /// Member → score; Redis orders by (score, member).
    ZSet(BTreeMap<String, i64>),
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub data: Option<Data>,
    /// False after a write whose outcome is unknown.
    pub certain: bool,
    /// When the model last learned the value (an acknowledged write or a full read).
    pub since: Instant,
}

pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Okay => Some("OK".to_owned()),
        _ => None,
    }
}

pub fn items(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(items) | Value::Set(items) => items.iter().map(text).collect(),
        _ => None,
    }
}

pub struct Client {
    pub id: usize,
    addr: String,
    pub con: Option<Connection>,
    rng: Rng,
    pub keys: BTreeMap<String, Entry>,
    pub soak: Arc<Soak>,
    seq: u64,
    /// Pub/sub messages sent: sequence number and when.
    pub published: crate::pubsub::Published,
}

impl Client {
    pub fn new(id: usize, addr: String, soak: Arc<Soak>) -> Client {
        let now = Instant::now();
        let mut keys = BTreeMap::new();
        for family in FAMILIES {
            for i in 0..if family == "s" { STRINGS } else { OTHERS } {
                keys.insert(format!("soak:c{id}:{family}{i}"), Entry { data: None, certain: true, since: now });
            }
        }
        for k in ["a", "b"] {
            keys.insert(format!("soak:c{id}:t{{c{id}}}:{k}"), Entry { data: None, certain: true, since: now });
        }
        Client {
            id,
            addr,
            con: None,
            rng: Rng::new(0x2545_F491_4F6C_DD1D ^ ((id as u64 + 1) << 32)),
            keys,
            soak,
            seq: 0,
            published: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn rand(&mut self, n: usize) -> usize {
        self.rng.below(n)
    }

    pub fn key(&mut self, family: &str) -> String {
        let n = if family == "s" { STRINGS } else { OTHERS };
        let i = self.rand(n);
        format!("soak:c{}:{family}{i}", self.id)
    }

    pub fn unique(&mut self) -> String {
        self.seq += 1;
        format!("c{}v{}", self.id, self.seq)
    }

    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Sends `cmd`; an error reply or a broken connection is recorded and returned as `None`.
    pub fn call(&mut self, cmd: &Cmd) -> Option<Value> {
        let sent = Instant::now();
        self.soak.ops.fetch_add(1, Ordering::Relaxed);
        // A proxy that refuses the connection is recorded as this request's failure.
        let result = cmd.query::<Value>(self.connection()?);
        match result {
            Ok(Value::ServerError(e)) => self.failed(sent, format!("{} {}", e.code(), e.details().unwrap_or(""))),
            Ok(value) => Some(value),
            Err(e) => {
                if e.is_io_error() || e.is_timeout() || e.is_unrecoverable_error() {
                    self.con = None;
                }
                self.failed(sent, e.to_string())
            }
        }
    }

    /// The connection, opened if needed; `None` (recorded as a failure) when the proxy refuses.
    pub fn connection(&mut self) -> Option<&mut Connection> {
        if self.con.is_none() {
            self.con = connect(&self.addr).ok();
            if self.con.is_none() {
                self.failed(Instant::now(), "cannot connect to the proxy".to_owned());
            }
        }
        self.con.as_mut()
    }

    pub fn failed(&self, sent: Instant, text: String) -> Option<Value> {
        self.soak.failed(sent, format!("client {}: {text}", self.id));
        None
    }

    fn entry(&mut self, key: &str) -> &mut Entry {
        self.keys.get_mut(key).expect("a key of this client")
    }

    pub fn uncertain(&mut self, key: &str) {
        self.entry(key).certain = false;
    }

    /// A write that replaced the whole value.
    pub fn written(&mut self, key: &str, data: Option<Data>) {
        *self.entry(key) = Entry { data, certain: true, since: Instant::now() };
    }

    /// Whether a difference from the model is Redis' loss (see the module comment); counts it.
    fn lost(&self, key: &str, since: Instant) -> bool {
        let lost = self.soak.at_risk(key_slot(key.as_bytes()), since, Instant::now());
        if lost {
            self.soak.lost.fetch_add(1, Ordering::Relaxed);
        }
        lost
    }

    /// A full read: checked against the model, or taken as the truth when the key is uncertain.
    pub fn observe(&mut self, key: &str, got: Option<Data>, what: &str) {
        let entry = self.keys[key].clone();
        if entry.certain && entry.data != got && !self.lost(key, entry.since) {
            self.soak.wrong(format!("client {}: {what} {key}: got {got:?}, model {:?}", self.id, entry.data));
        }
        *self.entry(key) = Entry { data: got, certain: true, since: Instant::now() };
    }

    /// A partial write whose reply depends on the value: checked and applied when the key is known.
    /// `apply` returns the expected reply and updates the data.
    pub fn partial(
        &mut self,
        key: &str,
        reply: Option<Value>,
        what: &str,
        apply: impl FnOnce(&mut Option<Data>) -> Value,
    ) {
        let Some(reply) = reply else {
            return self.uncertain(key);
        };
        let mut entry = self.keys[key].clone();
        if !entry.certain {
            return;
        }
        let expected = apply(&mut entry.data);
        if expected == reply {
            entry.since = Instant::now();
            *self.entry(key) = entry;
            return;
        }
        if !self.lost(key, entry.since) {
            self.soak.wrong(format!("client {}: {what} {key}: got {reply:?}, expected {expected:?}", self.id));
        }
        self.uncertain(key);
    }

    /// Mixed operations until the soak stops (bounded by `deadline` too).
    pub fn run(mut self, deadline: Instant) -> Client {
        let mut round = 0u64;
        while !self.soak.stopped() && Instant::now() < deadline {
            round += 1;
            match self.rand(100) {
                0..=11 => self.set(),
                12..=23 => self.get(),
                24..=28 => self.incr(),
                29..=31 => self.append(),
                32..=41 => self.hash(),
                42..=51 => self.list(),
                52..=60 => self.set_type(),
                61..=69 => self.zset(),
                70..=77 => self.mset(),
                78..=85 => self.mget(),
                86..=91 => self.transaction(),
                92..=94 => self.del(),
                _ => self.publish(),
            }
            if round.is_multiple_of(400) {
                self.scan();
            }
        }
        self
    }

    /// After the soak: every key read back in full and checked, retrying reads that fail for up
    /// to `patience` (the cluster has just settled).
    pub fn verify(&mut self, patience: Duration) -> usize {
        let keys: Vec<String> = self.keys.keys().cloned().collect();
        let deadline = Instant::now() + patience;
        let mut unread = 0;
        for key in keys {
            // `soak:c1:h3` is a hash; the transaction's keys `soak:c1:t{c1}:a` are strings.
            let last = key.rsplit(':').next().unwrap_or("s");
            let family = if key.contains(":t{") { "s" } else { &last[..1] };
            let done = redisforge_tests::wait_until(
                deadline.saturating_duration_since(Instant::now()),
                Duration::from_millis(100),
                || self.read_full(&key, family).is_some(),
            );
            unread += usize::from(!done);
        }
        unread
    }
}
