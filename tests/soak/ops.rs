//! The soak client's operations: each sends one command (or one transaction) on the client's
//! own keys and checks the reply against the model (see `client.rs`).

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::time::Instant;

use redis::Value;
use redisforge_proxy::slot::key_slot;

use crate::client::{Client, Data, items, text};

impl Client {
    pub fn set(&mut self) {
        let (key, value) = (self.key("s"), self.unique());
        match self.call(redis::cmd("SET").arg(&key).arg(&value)) {
            Some(Value::Okay) => self.written(&key, Some(Data::Str(value))),
            Some(other) => self.soak.wrong(format!("SET {key}: {other:?}")),
            None => self.uncertain(&key),
        }
    }

    pub fn get(&mut self) {
        let key = self.key("s");
        self.read_full(&key, "s");
    }

    pub fn incr(&mut self) {
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

    pub fn append(&mut self) {
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

    pub fn hash(&mut self) {
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
                self.read_full(&key, "h");
            }
        }
    }

    pub fn list(&mut self) {
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
                self.read_full(&key, "l");
            }
        }
    }

    pub fn set_type(&mut self) {
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
                self.read_full(&key, "e");
            }
        }
    }

    pub fn zset(&mut self) {
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
                self.read_full(&key, "z");
            }
        }
    }

    pub fn mset(&mut self) {
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

    pub fn mget(&mut self) {
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

    pub fn transaction(&mut self) {
        let (a, b) = (format!("soak:c{0}:t{{c{0}}}:a", self.id), format!("soak:c{0}:t{{c{0}}}:b", self.id));
        let value = self.unique();
        let sent = Instant::now();
        let Some(con) = self.connection() else { return };
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

    pub fn del(&mut self) {
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

    pub fn publish(&mut self) {
        let seq = self.next_seq();
        let sent = Instant::now();
        let channel = format!("soak:c{}:ch", self.id);
        let reply = self.call(redis::cmd("PUBLISH").arg(&channel).arg(format!("{}:{seq}", self.id)));
        // Only a count acknowledges the message: a wrong reply is reported as wrong, and not once
        // more as a loss should the message never come.
        let acknowledged = match reply {
            Some(Value::Int(_)) => true,
            Some(ref other) => {
                self.soak.wrong(format!("PUBLISH: {other:?}"));
                false
            }
            // Perhaps published, perhaps later: the subscriber may or may not see it.
            None => false,
        };
        self.published.lock().expect("published lock").push((seq, sent, acknowledged));
    }

    /// SCAN over the whole cluster for this client's keys.
    pub fn scan(&mut self) {
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
        if self.soak.unsettled(started, Instant::now()) {
            self.soak.scans_skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.soak.scans_checked.fetch_add(1, Ordering::Relaxed);
        let mut missed = Vec::new();
        let now = Instant::now();
        for (key, entry) in &self.keys {
            // Unknown, or possibly changed by a fault of its master since the model learned it (a
            // write lost, or one that timed out and was applied late): the next full read decides.
            if !entry.certain || self.soak.at_risk(key_slot(key.as_bytes()), entry.since, now) {
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
        let when = format!("scan from {} to {}", self.soak.at(started), self.soak.at(Instant::now()));
        self.soak.wrong(format!("client {}: SCAN missed {missed:?} ({when})", self.id));
    }

    /// Reads `key` of `family` whole and checks it ([`Client::observe`]); `None` when the read
    /// failed (recorded as a failure).
    pub fn read_full(&mut self, key: &str, family: &str) -> Option<()> {
        let v = match family {
            "h" => self.call(redis::cmd("HGETALL").arg(key))?,
            "l" => self.call(redis::cmd("LRANGE").arg(key).arg(0).arg(-1))?,
            "e" => self.call(redis::cmd("SMEMBERS").arg(key))?,
            "z" => self.call(redis::cmd("ZRANGE").arg(key).arg(0).arg(-1).arg("WITHSCORES"))?,
            _ => self.call(redis::cmd("GET").arg(key))?,
        };
        let got = match (family, &v) {
            ("h", _) => match items(&v) {
                Some(flat) if flat.len().is_multiple_of(2) => {
                    let map: BTreeMap<String, String> = flat.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect();
                    Some((!map.is_empty()).then_some(Data::Hash(map)))
                }
                _ => None,
            },
            ("l", _) => items(&v).map(|list| (!list.is_empty()).then(|| Data::List(list.into()))),
            ("e", _) => items(&v).map(|members| {
                let set: BTreeSet<String> = members.into_iter().collect();
                (!set.is_empty()).then_some(Data::Set(set))
            }),
            ("z", _) => self.zset_of(key, &v),
            (_, Value::Nil) => Some(None),
            (_, Value::BulkString(_)) => Some(text(&v).map(Data::Str)),
            _ => None,
        };
        match got {
            Some(got) => self.observe(key, got, "full read"),
            None => self.soak.wrong(format!("client {}: read of {key}: {v:?}", self.id)),
        }
        Some(())
    }

    /// A sorted set from ZRANGE … WITHSCORES, checked for (score, member) order.
    fn zset_of(&self, key: &str, v: &Value) -> Option<Option<Data>> {
        let flat = items(v).filter(|f| f.len().is_multiple_of(2))?;
        let pairs: Vec<(String, i64)> =
            flat.chunks(2).map(|p| (p[0].clone(), p[1].parse::<i64>().unwrap_or(i64::MIN))).collect();
        let mut sorted = pairs.clone();
        sorted.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        if sorted != pairs {
            self.soak.wrong(format!("ZRANGE {key} not in (score, member) order: {pairs:?}"));
        }
        let z: BTreeMap<String, i64> = pairs.into_iter().collect();
        Some((!z.is_empty()).then_some(Data::ZSet(z)))
    }
}
