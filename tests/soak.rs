//! A bounded soak: eight clients mixing every data type, MGET/MSET, transactions, pub/sub and SCAN
//! through the proxy for 90 s (`REDISFORGE_SOAK_SECS` to change it), with a master SIGKILLed (and
//! brought back as a replica) after a third of the time and a slot migrated after two thirds.
//!
//! Every client owns its keys, so its model of them is exact and every reply is checked against
//! it. The exceptions are the ones a single Redis node would make too: after an error reply a
//! write may or may not have been applied, and writes the killed master acknowledged but had not
//! replicated are lost with it. Such keys are marked uncertain, and the next full read (GET,
//! HGETALL, LRANGE, SMEMBERS, ZRANGE) takes the node's value as the truth again.
//!
//! Asserted: no wrong reply ever; errors only during the failover window; no pub/sub message
//! duplicated, reordered or lost outside that window; SCAN returns every key of its client when no
//! failover or migration overlapped it; the proxy's file descriptors back near their start value
//! once the clients are gone. Memory (VmRSS) and fd counts are printed.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use redis::{Cmd, Connection, Value};
use redisforge_proxy::resp::FrameScanner;
use redisforge_proxy::slot::key_slot;
use redisforge_tests::process::{fd_count, rss_bytes};
use redisforge_tests::{Cluster, ClusterOptions, Proxy, ProxyOptions, connect, http_get, wait_until};

const CLIENTS: usize = 8;
/// Soak length without `REDISFORGE_SOAK_SECS`.
const DEFAULT_SECS: u64 = 90;
/// Keys per family per client.
const STRINGS: usize = 16;
const OTHERS: usize = 4;
/// Requests sent this long after the first successful write on the failed slots may still fail:
/// they were being retried when it succeeded.
const ERROR_GRACE: Duration = Duration::from_secs(2);
/// Pub/sub messages published this close to the failover may be lost (at-most-once delivery while
/// the proxy moves the subscription off the dead node).
const PUBSUB_GRACE: Duration = Duration::from_secs(3);
/// File descriptors the proxy may hold beyond its start once every client left: pools to nodes that
/// became masters or replicas during the soak.
const FD_SLACK: usize = 4;

fn soak_duration() -> Duration {
    let secs = std::env::var("REDISFORGE_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_SECS);
    Duration::from_secs(secs.max(30))
}

/// The proxy's TCP sockets as `local -> remote` ports (from `/proc/net/tcp`), for failure messages.
fn sockets(pid: u32) -> Vec<String> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port = |addr: &str| addr.split(':').nth(1).and_then(|p| u16::from_str_radix(p, 16).ok()).unwrap_or(0);
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() > 9 && inodes.contains(f[9])).then(|| format!("{} -> {} (st {})", port(f[1]), port(f[2]), f[3]))
        })
        .collect()
}

fn client_connections(proxy: &Proxy) -> Option<f64> {
    let (_, body) = http_get(&proxy.metrics_addr(), "/metrics", Duration::from_secs(5));
    body.lines().find_map(|l| l.strip_prefix("redisforge_client_connections ")).and_then(|v| v.trim().parse().ok())
}

/// An error reply or a broken connection, with when the request went out and came back.
#[derive(Debug, Clone)]
struct Failure {
    sent: Instant,
    answered: Instant,
    text: String,
}

/// What the whole soak shares: the stop flag, the event times and everything the clients saw.
#[derive(Default)]
struct Soak {
    stop: AtomicBool,
    ops: AtomicU64,
    /// Acknowledged writes the failover lost (a resync after the kill found another value).
    lost: AtomicU64,
    wrong: Mutex<Vec<String>>,
    failures: Mutex<Vec<Failure>>,
    /// When the master was killed (set once it is reaped).
    killed_at: OnceLock<Instant>,
    /// Periods in which a SCAN may legitimately miss keys (failover, migration); `None`: still open.
    unsettled: Mutex<Vec<(Instant, Option<Instant>)>>,
    scans_checked: AtomicU64,
    scans_skipped: AtomicU64,
    /// When the soak started, for times in messages.
    began: OnceLock<Instant>,
}

impl Soak {
    fn wrong(&self, what: String) {
        self.wrong.lock().expect("wrong lock").push(what);
    }

    fn overlaps_unsettled(&self, from: Instant, to: Instant) -> bool {
        self.unsettled
            .lock()
            .expect("unsettled lock")
            .iter()
            .any(|&(start, end)| start <= to && end.is_none_or(|e| e >= from))
    }

    fn open_unsettled(&self) -> usize {
        let mut periods = self.unsettled.lock().expect("unsettled lock");
        periods.push((Instant::now(), None));
        periods.len() - 1
    }

    fn close_unsettled(&self, index: usize) {
        self.unsettled.lock().expect("unsettled lock")[index].1 = Some(Instant::now());
    }
}

/// A key's value as its client knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Data {
    Str(String),
    Hash(BTreeMap<String, String>),
    List(VecDeque<String>),
    Set(BTreeSet<String>),
    /// Member → score; Redis orders by (score, member).
    ZSet(BTreeMap<String, i64>),
}

#[derive(Debug, Clone)]
struct Entry {
    data: Option<Data>,
    /// False after a write whose outcome is unknown, or when the failover may have lost writes.
    certain: bool,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Okay => Some("OK".to_owned()),
        _ => None,
    }
}

fn items(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(items) | Value::Set(items) => items.iter().map(text).collect(),
        _ => None,
    }
}

/// One soak client: its connection, its keys' model, its random generator.
struct Client {
    id: usize,
    addr: String,
    con: Option<Connection>,
    rng: u64,
    keys: BTreeMap<String, Entry>,
    victim: Arc<Vec<bool>>,
    soak: Arc<Soak>,
    noticed_kill: bool,
    seq: u64,
    /// Pub/sub messages sent: sequence number and when.
    published: Arc<Mutex<Vec<(u64, Instant)>>>,
}

impl Client {
    fn new(id: usize, addr: String, victim: Arc<Vec<bool>>, soak: Arc<Soak>) -> Client {
        let mut keys = BTreeMap::new();
        for family in ["s", "n"] {
            for i in 0..if family == "s" { STRINGS } else { OTHERS } {
                keys.insert(format!("soak:c{id}:{family}{i}"), Entry { data: None, certain: true });
            }
        }
        for family in ["h", "l", "e", "z"] {
            for i in 0..OTHERS {
                keys.insert(format!("soak:c{id}:{family}{i}"), Entry { data: None, certain: true });
            }
        }
        for k in ["a", "b"] {
            keys.insert(format!("soak:c{id}:t{{c{id}}}:{k}"), Entry { data: None, certain: true });
        }
        Client {
            id,
            addr,
            con: None,
            rng: 0x2545_F491_4F6C_DD1D ^ ((id as u64 + 1) << 32),
            keys,
            victim,
            soak,
            noticed_kill: false,
            seq: 0,
            published: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn rand(&mut self, n: usize) -> usize {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % n as u64) as usize
    }

    fn key(&mut self, family: &str) -> String {
        let n = if family == "s" { STRINGS } else { OTHERS };
        let i = self.rand(n);
        format!("soak:c{}:{family}{i}", self.id)
    }

    fn unique(&mut self) -> String {
        self.seq += 1;
        format!("c{}v{}", self.id, self.seq)
    }

    /// Sends `cmd`; an error reply or a broken connection is recorded and returned as `None`.
    fn call(&mut self, cmd: &Cmd) -> Option<Value> {
        let sent = Instant::now();
        if self.con.is_none() {
            self.con = connect(&self.addr).ok();
        }
        let result = match self.con.as_mut() {
            Some(con) => cmd.query::<Value>(con),
            None => Err(redis::RedisError::from((redis::ErrorKind::Io, "cannot connect to the proxy"))),
        };
        self.soak.ops.fetch_add(1, Ordering::Relaxed);
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

    fn failed(&self, sent: Instant, text: String) -> Option<Value> {
        let name = format!("client {}: {text}", self.id);
        self.soak.failures.lock().expect("failures lock").push(Failure { sent, answered: Instant::now(), text: name });
        None
    }

    fn entry(&mut self, key: &str) -> &mut Entry {
        self.keys.get_mut(key).expect("a key of this client")
    }

    fn uncertain(&mut self, key: &str) {
        self.entry(key).certain = false;
    }

    /// A write that replaced the whole value.
    fn written(&mut self, key: &str, data: Option<Data>) {
        *self.entry(key) = Entry { data, certain: true };
    }

    /// A full read: checked against the model, or taken as the truth when the key is uncertain.
    fn observe(&mut self, key: &str, got: Option<Data>, what: &str) {
        let killed = self.noticed_kill;
        let id = self.id;
        let soak = Arc::clone(&self.soak);
        let entry = self.entry(key);
        if entry.certain {
            if entry.data != got {
                soak.wrong(format!("client {id}: {what} {key}: got {got:?}, model {:?}", entry.data));
            }
            return;
        }
        if killed && entry.data != got {
            soak.lost.fetch_add(1, Ordering::Relaxed);
        }
        *entry = Entry { data: got, certain: true };
    }

    /// A partial write whose reply depends on the value: checked and applied when the key is known.
    /// `apply` returns the expected reply and updates the data.
    fn partial(&mut self, key: &str, reply: Option<Value>, what: &str, apply: impl FnOnce(&mut Option<Data>) -> Value) {
        let Some(reply) = reply else {
            return self.uncertain(key);
        };
        let id = self.id;
        let soak = Arc::clone(&self.soak);
        let entry = self.entry(key);
        if !entry.certain {
            return;
        }
        let expected = apply(&mut entry.data);
        if expected != reply {
            soak.wrong(format!("client {id}: {what} {key}: got {reply:?}, expected {expected:?}"));
            entry.certain = false;
        }
    }

    fn notice_kill(&mut self) {
        if self.noticed_kill || self.soak.killed_at.get().is_none() {
            return;
        }
        self.noticed_kill = true;
        // Anything the killed master acknowledged may be gone with it.
        let victim = Arc::clone(&self.victim);
        for (key, entry) in &mut self.keys {
            if victim[usize::from(key_slot(key.as_bytes()))] {
                entry.certain = false;
            }
        }
    }

    fn run(mut self) {
        let deadline = Instant::now() + soak_duration() + Duration::from_secs(60);
        let mut round = 0u64;
        while !self.soak.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            self.notice_kill();
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
    }

    fn set(&mut self) {
        let (key, value) = (self.key("s"), self.unique());
        match self.call(redis::cmd("SET").arg(&key).arg(&value)) {
            Some(Value::Okay) => self.written(&key, Some(Data::Str(value))),
            Some(other) => self.soak.wrong(format!("SET {key}: {other:?}")),
            None => self.uncertain(&key),
        }
    }

    fn get(&mut self) {
        let key = self.key("s");
        match self.call(redis::cmd("GET").arg(&key)) {
            Some(Value::Nil) => self.observe(&key, None, "GET"),
            Some(v @ Value::BulkString(_)) => self.observe(&key, text(&v).map(Data::Str), "GET"),
            Some(other) => self.soak.wrong(format!("GET {key}: {other:?}")),
            None => {}
        }
    }

    fn incr(&mut self) {
        let key = self.key("n");
        let reply = self.call(redis::cmd("INCR").arg(&key));
        self.partial(&key, reply, "INCR", |data| {
            let n = match data {
                Some(Data::Str(s)) => s.parse::<i64>().unwrap_or(0) + 1,
                _ => 1,
            };
            *data = Some(Data::Str(n.to_string()));
            Value::Int(n)
        });
    }

    fn append(&mut self) {
        let (key, suffix) = (self.key("s"), self.unique());
        let reply = self.call(redis::cmd("APPEND").arg(&key).arg(&suffix));
        self.partial(&key, reply, "APPEND", |data| {
            let mut s = match data.take() {
                Some(Data::Str(s)) => s,
                _ => String::new(),
            };
            s.push_str(&suffix);
            let len = s.len() as i64;
            *data = Some(Data::Str(s));
            Value::Int(len)
        });
    }

    fn hash(&mut self) {
        let key = self.key("h");
        let field = format!("f{}", self.rand(6));
        match self.rand(4) {
            0 | 1 => {
                let value = self.unique();
                let reply = self.call(redis::cmd("HSET").arg(&key).arg(&field).arg(&value));
                self.partial(&key, reply, "HSET", |data| {
                    let mut map = match data.take() {
                        Some(Data::Hash(m)) => m,
                        _ => BTreeMap::new(),
                    };
                    let new = map.insert(field, value).is_none();
                    *data = Some(Data::Hash(map));
                    Value::Int(i64::from(new))
                });
            }
            2 => {
                let reply = self.call(redis::cmd("HDEL").arg(&key).arg(&field));
                self.partial(&key, reply, "HDEL", |data| {
                    let Some(Data::Hash(map)) = data else { return Value::Int(0) };
                    let removed = map.remove(&field).is_some();
                    if map.is_empty() {
                        *data = None;
                    }
                    Value::Int(i64::from(removed))
                });
            }
            _ => {
                if let Some(v) = self.call(redis::cmd("HGETALL").arg(&key)) {
                    match items(&v) {
                        Some(flat) if flat.len().is_multiple_of(2) => {
                            let map: BTreeMap<String, String> =
                                flat.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect();
                            self.observe(&key, (!map.is_empty()).then_some(Data::Hash(map)), "HGETALL");
                        }
                        _ => self.soak.wrong(format!("HGETALL {key}: {v:?}")),
                    }
                }
            }
        }
    }

    fn list(&mut self) {
        let key = self.key("l");
        let long = matches!(&self.keys[&key].data, Some(Data::List(l)) if l.len() > 20);
        match self.rand(4) {
            0 | 1 if !long => {
                let value = self.unique();
                let reply = self.call(redis::cmd("RPUSH").arg(&key).arg(&value));
                self.partial(&key, reply, "RPUSH", |data| {
                    let mut list = match data.take() {
                        Some(Data::List(l)) => l,
                        _ => VecDeque::new(),
                    };
                    list.push_back(value);
                    let len = list.len() as i64;
                    *data = Some(Data::List(list));
                    Value::Int(len)
                });
            }
            0..=2 => {
                let reply = self.call(redis::cmd("LPOP").arg(&key));
                self.partial(&key, reply, "LPOP", |data| {
                    let Some(Data::List(list)) = data else { return Value::Nil };
                    let popped = list.pop_front();
                    if list.is_empty() {
                        *data = None;
                    }
                    popped.map_or(Value::Nil, |v| Value::BulkString(v.into_bytes()))
                });
            }
            _ => {
                if let Some(v) = self.call(redis::cmd("LRANGE").arg(&key).arg(0).arg(-1)) {
                    match items(&v) {
                        Some(list) => {
                            let got = (!list.is_empty()).then(|| Data::List(list.into()));
                            self.observe(&key, got, "LRANGE");
                        }
                        None => self.soak.wrong(format!("LRANGE {key}: {v:?}")),
                    }
                }
            }
        }
    }

    fn set_type(&mut self) {
        let key = self.key("e");
        let member = format!("m{}", self.rand(8));
        match self.rand(4) {
            0 | 1 => {
                let reply = self.call(redis::cmd("SADD").arg(&key).arg(&member));
                self.partial(&key, reply, "SADD", |data| {
                    let mut set = match data.take() {
                        Some(Data::Set(s)) => s,
                        _ => BTreeSet::new(),
                    };
                    let new = set.insert(member);
                    *data = Some(Data::Set(set));
                    Value::Int(i64::from(new))
                });
            }
            2 => {
                let reply = self.call(redis::cmd("SREM").arg(&key).arg(&member));
                self.partial(&key, reply, "SREM", |data| {
                    let Some(Data::Set(set)) = data else { return Value::Int(0) };
                    let removed = set.remove(&member);
                    if set.is_empty() {
                        *data = None;
                    }
                    Value::Int(i64::from(removed))
                });
            }
            _ => {
                if let Some(v) = self.call(redis::cmd("SMEMBERS").arg(&key)) {
                    match items(&v) {
                        Some(members) => {
                            let set: BTreeSet<String> = members.into_iter().collect();
                            self.observe(&key, (!set.is_empty()).then_some(Data::Set(set)), "SMEMBERS");
                        }
                        None => self.soak.wrong(format!("SMEMBERS {key}: {v:?}")),
                    }
                }
            }
        }
    }

    fn zset(&mut self) {
        let key = self.key("z");
        let member = format!("m{}", self.rand(8));
        match self.rand(4) {
            0 | 1 => {
                let score = self.rand(1000) as i64;
                let reply = self.call(redis::cmd("ZADD").arg(&key).arg(score).arg(&member));
                self.partial(&key, reply, "ZADD", |data| {
                    let mut z = match data.take() {
                        Some(Data::ZSet(z)) => z,
                        _ => BTreeMap::new(),
                    };
                    let new = z.insert(member, score).is_none();
                    *data = Some(Data::ZSet(z));
                    Value::Int(i64::from(new))
                });
            }
            2 => {
                let reply = self.call(redis::cmd("ZREM").arg(&key).arg(&member));
                self.partial(&key, reply, "ZREM", |data| {
                    let Some(Data::ZSet(z)) = data else { return Value::Int(0) };
                    let removed = z.remove(&member).is_some();
                    if z.is_empty() {
                        *data = None;
                    }
                    Value::Int(i64::from(removed))
                });
            }
            _ => {
                let Some(v) = self.call(redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1).arg("WITHSCORES")) else {
                    return;
                };
                let Some(flat) = items(&v).filter(|f| f.len().is_multiple_of(2)) else {
                    return self.soak.wrong(format!("ZRANGE {key}: {v:?}"));
                };
                let pairs: Vec<(String, i64)> =
                    flat.chunks(2).map(|p| (p[0].clone(), p[1].parse::<i64>().unwrap_or(i64::MIN))).collect();
                let mut sorted = pairs.clone();
                sorted.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
                if sorted != pairs {
                    self.soak.wrong(format!("ZRANGE {key} not in (score, member) order: {pairs:?}"));
                }
                let z: BTreeMap<String, i64> = pairs.into_iter().collect();
                self.observe(&key, (!z.is_empty()).then_some(Data::ZSet(z)), "ZRANGE");
            }
        }
    }

    fn mset(&mut self) {
        let n = 2 + self.rand(5);
        let mut pairs = Vec::with_capacity(n);
        for _ in 0..n {
            let (key, value) = (self.key("s"), self.unique());
            pairs.push((key, value));
        }
        let mut cmd = redis::cmd("MSET");
        for (k, v) in &pairs {
            cmd.arg(k).arg(v);
        }
        match self.call(&cmd) {
            Some(Value::Okay) => pairs.into_iter().for_each(|(k, v)| self.written(&k, Some(Data::Str(v)))),
            Some(other) => self.soak.wrong(format!("MSET: {other:?}")),
            None => pairs.iter().for_each(|(k, _)| self.uncertain(k)),
        }
    }

    fn mget(&mut self) {
        let keys: Vec<String> = (0..2 + self.rand(5)).map(|_| self.key("s")).collect();
        let Some(reply) = self.call(redis::cmd("MGET").arg(&keys)) else {
            return;
        };
        match reply {
            Value::Array(values) if values.len() == keys.len() => {
                for (key, value) in keys.iter().zip(&values) {
                    let got = match value {
                        Value::Nil => None,
                        other => text(other).map(Data::Str),
                    };
                    self.observe(key, got, "MGET");
                }
            }
            other => self.soak.wrong(format!("MGET {keys:?}: {other:?}")),
        }
    }

    fn transaction(&mut self) {
        let (a, b) = (format!("soak:c{0}:t{{c{0}}}:a", self.id), format!("soak:c{0}:t{{c{0}}}:b", self.id));
        let value = self.unique();
        let sent = Instant::now();
        if self.con.is_none() {
            self.con = connect(&self.addr).ok();
        }
        let Some(con) = self.con.as_mut() else {
            self.failed(sent, "cannot connect to the proxy".to_owned());
            return;
        };
        let result: redis::RedisResult<Value> = redis::pipe()
            .atomic()
            .cmd("INCR")
            .arg(&a)
            .cmd("SET")
            .arg(&b)
            .arg(&value)
            .ignore()
            .cmd("GET")
            .arg(&b)
            .query(con);
        self.soak.ops.fetch_add(5, Ordering::Relaxed);
        let reply = match result {
            Ok(reply) => reply,
            Err(e) => {
                if e.is_io_error() || e.is_timeout() {
                    self.con = None;
                }
                self.failed(sent, format!("MULTI/EXEC: {e}"));
                self.uncertain(&a);
                self.uncertain(&b);
                return;
            }
        };
        let Value::Array(items) = &reply else {
            return self.soak.wrong(format!("EXEC: {reply:?}"));
        };
        match (items.first(), items.get(1).and_then(text)) {
            (Some(&Value::Int(n)), Some(got)) if got == value && items.len() == 2 => {
                self.partial(&a, Some(Value::Int(n)), "INCR in MULTI", |data| {
                    let next = match data {
                        Some(Data::Str(s)) => s.parse::<i64>().unwrap_or(0) + 1,
                        _ => 1,
                    };
                    *data = Some(Data::Str(next.to_string()));
                    Value::Int(next)
                });
                self.written(&b, Some(Data::Str(value)));
            }
            _ => self.soak.wrong(format!("EXEC: {reply:?}, wanted [n, {value}]")),
        }
    }

    fn del(&mut self) {
        let family = ["s", "h", "l", "e", "z"][self.rand(5)];
        let key = self.key(family);
        let reply = self.call(redis::cmd("DEL").arg(&key));
        let done = reply.is_some();
        self.partial(&key, reply, "DEL", |data| Value::Int(i64::from(data.take().is_some())));
        // Whatever the key held before, it holds nothing now.
        if done {
            self.written(&key, None);
        }
    }

    fn publish(&mut self) {
        self.seq += 1;
        let seq = self.seq;
        let sent = Instant::now();
        let channel = format!("soak:c{}:ch", self.id);
        match self.call(redis::cmd("PUBLISH").arg(&channel).arg(format!("{}:{seq}", self.id))) {
            Some(Value::Int(_)) => self.published.lock().expect("published lock").push((seq, sent)),
            Some(other) => self.soak.wrong(format!("PUBLISH: {other:?}")),
            // Perhaps published: the subscriber may or may not see it.
            None => {}
        }
    }

    /// SCAN over the whole cluster for this client's keys.
    fn scan(&mut self) {
        let started = Instant::now();
        let pattern = format!("soak:c{}:*", self.id);
        let mut seen = HashSet::new();
        let mut cursor = "0".to_owned();
        for _ in 0..10_000 {
            let Some(reply) =
                self.call(redis::cmd("SCAN").arg(&cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000))
            else {
                return;
            };
            let Value::Array(parts) = &reply else {
                return self.soak.wrong(format!("SCAN: {reply:?}"));
            };
            let (Some(next), Some(keys)) = (parts.first().and_then(text), parts.get(1).and_then(items)) else {
                return self.soak.wrong(format!("SCAN: {reply:?}"));
            };
            seen.extend(keys);
            cursor = next;
            if cursor == "0" {
                break;
            }
        }
        if cursor != "0" {
            return self.soak.wrong("SCAN did not finish in 10,000 rounds".to_owned());
        }
        let foreign: Vec<&String> = seen.iter().filter(|k| !self.keys.contains_key(*k)).collect();
        if !foreign.is_empty() {
            return self.soak.wrong(format!("SCAN {pattern} returned keys of no one: {foreign:?}"));
        }
        if self.soak.overlaps_unsettled(started, Instant::now()) {
            self.soak.scans_skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.soak.scans_checked.fetch_add(1, Ordering::Relaxed);
        let mut missed = Vec::new();
        for (key, entry) in &self.keys {
            if !entry.certain {
                continue;
            }
            match (seen.contains(key), entry.data.is_some()) {
                (true, false) => self.soak.wrong(format!("client {}: SCAN returned a deleted key: {key}", self.id)),
                (false, true) => missed.push(key.clone()),
                _ => {}
            }
        }
        if missed.is_empty() {
            return;
        }
        let began = self.soak.began.get().copied().unwrap_or(started);
        let when = format!("scan from +{:?} to +{:?}", started.saturating_duration_since(began), began.elapsed());
        self.soak.wrong(format!("client {}: SCAN missed {missed:?} ({when})", self.id));
    }
}

/// A subscriber on the client's channel: records the sequence numbers it receives, in order.
/// Returns once the subscription is confirmed.
///
/// Raw TCP and the proxy's own frame scanner rather than a client library, so that what is counted
/// is exactly what the proxy sent.
fn spawn_subscriber(addr: String, id: usize, stop: Arc<AtomicBool>) -> JoinHandle<Result<Vec<u64>, String>> {
    use std::io::{Read, Write};
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = thread::spawn(move || {
        let channel = format!("soak:c{id}:ch");
        let mut stream = std::net::TcpStream::connect(&addr).map_err(|e| format!("subscriber {id}: {e}"))?;
        stream.set_read_timeout(Some(Duration::from_millis(200))).map_err(|e| e.to_string())?;
        stream.write_all(format!("SUBSCRIBE {channel}\r\n").as_bytes()).map_err(|e| e.to_string())?;
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut scanner = FrameScanner::new();
        let mut got = Vec::new();
        let mut confirmed = false;
        let deadline = Instant::now() + soak_duration() + Duration::from_secs(60);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            match stream.read(&mut chunk) {
                Ok(0) => return Err(format!("subscriber {id}: the proxy closed the connection")),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
                Err(e) => return Err(format!("subscriber {id}: {e}")),
            }
            // Every complete frame: the confirmation first, then messages.
            while let Some(len) = scanner.scan(&buf).map_err(|e| format!("subscriber {id}: {e}"))? {
                let frame: Vec<u8> = buf.drain(..len).collect();
                let text = String::from_utf8_lossy(&frame);
                let lines: Vec<&str> = text.split("\r\n").collect();
                match lines.as_slice() {
                    ["*3", "$9", "subscribe", _, ch, ":1", ""] if *ch == channel && !confirmed => {
                        confirmed = true;
                        let _ = ready_tx.send(());
                    }
                    ["*3", "$7", "message", _, ch, _, payload, ""] if *ch == channel => {
                        let seq = payload
                            .strip_prefix(&format!("{id}:"))
                            .and_then(|s| s.parse().ok())
                            .ok_or_else(|| format!("subscriber {id} got {payload:?}"))?;
                        got.push(seq);
                    }
                    _ => return Err(format!("subscriber {id}: unexpected frame {text:?}")),
                }
            }
        }
        Ok(got)
    });
    // Bounded: the confirmation arrives at once, or the thread has ended with an error.
    let _ = ready_rx.recv_timeout(Duration::from_secs(10));
    handle
}

/// Polls `replica`'s ROLE on the node itself every 10 ms until it reports master.
fn wait_promotion(cluster: &Cluster, replica: &str) -> Option<Instant> {
    let mut con = cluster.client(replica);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Value::Array(role)) = redis::cmd("ROLE").query::<Value>(&mut con)
            && role.first().and_then(text).as_deref() == Some("master")
        {
            return Some(Instant::now());
        }
        thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Writes `key` through the proxy until a write succeeds; when it did.
fn first_write(proxy: &Proxy, key: &str) -> Option<Instant> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut con = None;
    while Instant::now() < deadline {
        if con.is_none() {
            con = connect(&proxy.addr()).ok();
        }
        if let Some(c) = con.as_mut() {
            match redis::cmd("SET").arg(key).arg("probe").query::<Value>(c) {
                Ok(Value::Okay) => return Some(Instant::now()),
                Err(e) if e.is_io_error() || e.is_timeout() => con = None,
                _ => {}
            }
        }
        thread::sleep(Duration::from_millis(10));
    }
    None
}

#[test]
fn soak_mixed_clients_through_a_failover_and_a_slot_migration() {
    let duration = soak_duration();
    let cluster = Cluster::start(ClusterOptions::default());
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let pid = proxy.pid();
    let ranges = cluster.slot_ranges();
    let victim_master = ranges[0].master.clone();
    let replica = cluster.replicas_of(&victim_master).pop().expect("the victim has a replica");
    let mut victim = vec![false; 16384];
    for r in ranges.iter().filter(|r| r.master == victim_master) {
        victim[usize::from(r.start)..=usize::from(r.end)].iter_mut().for_each(|s| *s = true);
    }
    let victim = Arc::new(victim);
    let probe_key = (0..100_000)
        .map(|i| format!("soak:probe:{i}"))
        .find(|k| victim[usize::from(key_slot(k.as_bytes()))])
        .expect("a key on the victim");
    // The migrated slot holds soak string keys and lives on a master that is not killed.
    let (migrated_key, migrated_slot) = (0..CLIENTS)
        .flat_map(|c| (0..STRINGS).map(move |i| format!("soak:c{c}:s{i}")))
        .map(|k| {
            let slot = key_slot(k.as_bytes());
            (k, slot)
        })
        .find(|(_, slot)| !victim[usize::from(*slot)])
        .expect("a soak key off the victim");

    let _ = proxy.client();
    let fds_start = fd_count(pid);
    let rss_start = rss_bytes(pid) / (1024 * 1024);
    let soak = Arc::new(Soak::default());
    soak.began.set(Instant::now()).expect("set once");
    let sub_stop = Arc::new(AtomicBool::new(false));
    let mut published = Vec::new();
    let mut subscribers = Vec::new();
    let mut clients = Vec::new();
    for id in 0..CLIENTS {
        subscribers.push(spawn_subscriber(proxy.addr(), id, Arc::clone(&sub_stop)));
        let client = Client::new(id, proxy.addr(), Arc::clone(&victim), Arc::clone(&soak));
        published.push(Arc::clone(&client.published));
        clients.push(thread::spawn(move || client.run()));
    }
    let started = Instant::now();
    let mut rss_peak = rss_start;
    let mut sample = |until: Instant| {
        // Bounded by `until`, sampled twice a second.
        while Instant::now() < until {
            rss_peak = rss_peak.max(rss_bytes(pid) / (1024 * 1024));
            thread::sleep(Duration::from_millis(500));
        }
    };
    sample(started + duration / 3);
    let fds_loaded = fd_count(pid);

    // A master dies; its replica takes over; the old master comes back as a replica.
    let failover_period = soak.open_unsettled();
    let kill_started = Instant::now();
    cluster.kill(&victim_master);
    soak.killed_at.set(Instant::now()).expect("killed once");
    let promoted = wait_promotion(&cluster, &replica).expect("the replica was promoted");
    let recovered = first_write(&proxy, &probe_key).expect("writes through the proxy recovered");
    cluster.restart(&victim_master);
    let rejoined = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        cluster.role(&victim_master).as_deref() == Some("slave")
    });
    assert!(rejoined, "the killed master did not rejoin as a replica");
    cluster.wait_state_ok();
    soak.close_unsettled(failover_period);

    sample(started + duration * 2 / 3);
    let from = cluster.node_for_slot(migrated_slot);
    let to = cluster.masters().into_iter().find(|m| *m != from).expect("another master");
    let migration_period = soak.open_unsettled();
    let migration_started = Instant::now();
    cluster.migrate_slot(migrated_slot, &from, &to);
    let migration_took = migration_started.elapsed();
    soak.close_unsettled(migration_period);
    // Replicas learn the new owner by gossip.
    let moved =
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || cluster.node_for_slot(migrated_slot) == to);
    assert!(moved, "slot {migrated_slot} (of {migrated_key}) not shown on {to} after the migration");

    sample(started + duration);
    soak.stop.store(true, Ordering::Relaxed);
    clients.into_iter().for_each(|c| c.join().expect("soak client"));
    // Let the last messages arrive before the subscribers stop.
    thread::sleep(Duration::from_millis(500));
    sub_stop.store(true, Ordering::Relaxed);
    let received: Vec<Result<Vec<u64>, String>> =
        subscribers.into_iter().map(|s| s.join().expect("subscriber thread")).collect();
    let clients_gone = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        client_connections(&proxy) == Some(0.0) && fd_count(pid) <= fds_start + FD_SLACK
    });
    let (fds_end, rss_end) = (fd_count(pid), rss_bytes(pid) / (1024 * 1024));
    let sockets_end = sockets(pid);

    // Pub/sub: no duplicate; losses only around the failover; reordering only next to a topology
    // change. A client's PUBLISHes go to one master; when a failover or a migration changes which
    // one, two of them may run on two nodes and the cluster bus may deliver them out of order.
    let lossy_from = kill_started - Duration::from_millis(500);
    let lossy_until = recovered + PUBSUB_GRACE;
    let topology_changes: Vec<(Instant, Instant)> = soak
        .unsettled
        .lock()
        .expect("unsettled lock")
        .iter()
        .map(|&(from, to)| (from - Duration::from_secs(1), to.unwrap_or_else(Instant::now) + PUBSUB_GRACE))
        .collect();
    let mut pubsub_problems = Vec::new();
    let (mut delivered, mut lost_messages, mut reordered) = (0usize, 0usize, 0usize);
    for (id, (got, sent)) in received.into_iter().zip(&published).enumerate() {
        let got = match got {
            Ok(got) => got,
            Err(e) => {
                pubsub_problems.push(e);
                continue;
            }
        };
        let sent_at: std::collections::HashMap<u64, Instant> =
            sent.lock().expect("published lock").iter().copied().collect();
        let when = |seq: &u64| sent_at.get(seq).map(|at| at.saturating_duration_since(started));
        let unique: HashSet<u64> = got.iter().copied().collect();
        if unique.len() != got.len() {
            let mut counted = std::collections::HashMap::new();
            got.iter().for_each(|seq| *counted.entry(*seq).or_insert(0) += 1);
            let twice: Vec<String> = counted
                .iter()
                .filter(|(_, n)| **n > 1)
                .map(|(seq, n)| format!("{seq} x{n} (published at +{:?})", when(seq)))
                .collect();
            pubsub_problems.push(format!(
                "subscriber {id}: messages delivered more than once: {twice:?}; failover at +{:?}",
                kill_started - started
            ));
        }
        for w in got.windows(2).filter(|w| w[0] > w[1]) {
            reordered += 1;
            let at = sent_at.get(&w[1]).copied().unwrap_or(started);
            if !topology_changes.iter().any(|&(from, to)| from <= at && at <= to) {
                pubsub_problems.push(format!(
                    "subscriber {id}: message {} (published at +{:?}) delivered after {}, away from any topology change",
                    w[1],
                    at.saturating_duration_since(started),
                    w[0]
                ));
            }
        }
        delivered += unique.len();
        for (&seq, &at) in &sent_at {
            if unique.contains(&seq) {
                continue;
            }
            lost_messages += 1;
            if at < lossy_from || at > lossy_until {
                pubsub_problems.push(format!("subscriber {id}: message {seq} published at +{:?} lost", at - started));
            }
        }
    }

    let failures = soak.failures.lock().expect("failures lock").clone();
    let wrong = soak.wrong.lock().expect("wrong lock").clone();
    let outside: Vec<&Failure> =
        failures.iter().filter(|f| f.answered < kill_started || f.sent > recovered + ERROR_GRACE).collect();
    println!(
        "RELIABILITY soak: {:?} with {CLIENTS} clients, {} requests ({:.0}/s); kill -> promotion {:?}, promotion -> first \
         proxied write {:?}; slot {migrated_slot} migrated in {migration_took:?}; {} errors ({} outside the failover \
         window), {} wrong replies, {} acknowledged writes lost in the failover; pub/sub {delivered} delivered, \
         {lost_messages} lost around the failover, {reordered} reordered near a topology change; SCAN {} checked, {} skipped (overlapped an event)",
        started.elapsed(),
        soak.ops.load(Ordering::Relaxed),
        soak.ops.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64(),
        promoted - kill_started,
        recovered.saturating_duration_since(promoted),
        failures.len(),
        outside.len(),
        wrong.len(),
        soak.lost.load(Ordering::Relaxed),
        soak.scans_checked.load(Ordering::Relaxed),
        soak.scans_skipped.load(Ordering::Relaxed),
    );
    let periods: Vec<String> = soak
        .unsettled
        .lock()
        .expect("unsettled lock")
        .iter()
        .map(|&(from, to)| format!("+{:?}..+{:?}", from - started, to.map(|t| t - started)))
        .collect();
    println!("RELIABILITY soak: failover and migration periods {periods:?}");
    println!(
        "RELIABILITY soak: proxy VmRSS {rss_start} MiB at start, peak {rss_peak} MiB, {rss_end} MiB at the end; fds \
         {fds_start} at start, {fds_loaded} under load, {fds_end} after the clients left"
    );
    let kinds: BTreeSet<String> =
        wrong.iter().map(|w| w.split(|c: char| c.is_ascii_digit()).take(2).collect::<Vec<_>>().join("#")).collect();
    println!("RELIABILITY soak: wrong reply kinds {kinds:#?}");
    assert!(wrong.is_empty(), "{} wrong replies, first ones: {:#?}", wrong.len(), &wrong[..wrong.len().min(10)]);
    assert!(
        outside.is_empty(),
        "{} errors outside the failover window, first ones: {:#?}",
        outside.len(),
        outside.iter().take(10).map(|f| (f.sent.saturating_duration_since(started), &f.text)).collect::<Vec<_>>()
    );
    assert!(pubsub_problems.is_empty(), "pub/sub: {pubsub_problems:#?}");
    assert!(soak.scans_checked.load(Ordering::Relaxed) > 0, "no SCAN ran outside the events");
    assert!(
        clients_gone,
        "fds {fds_start} -> {fds_end} or client_connections did not come back after the clients left; nodes {:?}, \
         proxy sockets {sockets_end:#?}",
        cluster.nodes()
    );
}
