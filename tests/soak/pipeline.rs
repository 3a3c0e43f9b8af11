//! Pipelined reads and writes: a worker sends `GET k, SET k v, GET k` for each of its keys in one
//! pipeline of 24 commands, then reads the 24 replies. The second GET must return the SET's
//! value (one connection's commands run in order); the first must return the value of the last
//! acknowledged SET — unless a fault of the key's master may have lost it ([`Soak::at_risk`]).
//! Raw RESP through the harness' [`Conn`], so that every reply frame is checked where it lands.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redisforge_proxy::slot::key_slot;
use redisforge_tests::resp::{Conn, Frame};

use crate::shared::Soak;

/// Keys per worker (spread over every master by hashing).
const KEYS: usize = 8;

/// What the worker knows of one key.
#[derive(Clone)]
struct Known {
    value: Option<Vec<u8>>,
    /// False after a SET whose outcome is unknown.
    certain: bool,
    since: Instant,
}

pub struct Pipeliner {
    id: usize,
    addr: String,
    conn: Option<Conn>,
    soak: Arc<Soak>,
    keys: Vec<String>,
    known: Vec<Known>,
    seq: u64,
}

impl Pipeliner {
    pub fn new(id: usize, addr: String, soak: Arc<Soak>) -> Pipeliner {
        let keys = (0..KEYS).map(|i| format!("soak:p{id}:{i}")).collect();
        let known = vec![Known { value: None, certain: true, since: Instant::now() }; KEYS];
        Pipeliner { id, addr, conn: None, soak, keys, known, seq: 0 }
    }

    /// Pipelines until the soak stops (or `deadline`); returns how many pipelines completed.
    pub fn run(mut self, deadline: Instant) -> u64 {
        let mut done = 0;
        while !self.soak.stopped() && Instant::now() < deadline {
            if self.round() {
                done += 1;
            }
        }
        done
    }

    /// One pipeline; false when the connection failed.
    fn round(&mut self) -> bool {
        let sent = Instant::now();
        if self.conn.is_none() {
            match Conn::connect(&self.addr) {
                Ok(conn) => self.conn = Some(conn),
                Err(e) => {
                    self.soak.failed(sent, format!("pipeliner {}: {e}", self.id));
                    std::thread::sleep(Duration::from_millis(100));
                    return false;
                }
            }
        }
        let values: Vec<Vec<u8>> = (0..KEYS)
            .map(|i| {
                self.seq += 1;
                format!("p{}k{i}v{}", self.id, self.seq).into_bytes()
            })
            .collect();
        let replies = self.exchange(&values);
        self.soak.ops.fetch_add(replies.len() as u64, Ordering::Relaxed);
        for (i, frames) in replies.chunks(3).enumerate() {
            self.observe(i, &frames[0], sent, "GET before SET");
            if let Some(set) = frames.get(1) {
                self.on_set(i, set, &values[i], sent);
            }
            if let Some(get) = frames.get(2) {
                self.observe(i, get, sent, "GET after SET");
            }
        }
        if replies.len() < 3 * KEYS {
            self.conn = None;
            // The replies that did not come: whether their SETs ran is unknown.
            (replies.len() / 3..KEYS).for_each(|i| self.known[i].certain = false);
        }
        self.conn.is_some()
    }

    /// Sends the pipeline and reads the replies, as many as arrive before an error.
    fn exchange(&mut self, values: &[Vec<u8>]) -> Vec<Frame> {
        let sent = Instant::now();
        let Some(conn) = self.conn.as_mut() else { return Vec::new() };
        for (key, value) in self.keys.iter().zip(values) {
            let key = key.as_bytes().to_vec();
            for command in [
                vec![b"GET".to_vec(), key.clone()],
                vec![b"SET".to_vec(), key.clone(), value.clone()],
                vec![b"GET".to_vec(), key.clone()],
            ] {
                if let Err(e) = conn.send(&command) {
                    self.soak.failed(sent, format!("pipeliner {}: {e}", self.id));
                    return Vec::new();
                }
            }
        }
        let mut frames = Vec::with_capacity(3 * KEYS);
        for _ in 0..3 * KEYS {
            match conn.read() {
                Ok((_, frame)) => frames.push(frame),
                Err(e) => {
                    self.soak.failed(sent, format!("pipeliner {}: {e}", self.id));
                    break;
                }
            }
        }
        frames
    }

    fn on_set(&mut self, i: usize, reply: &Frame, value: &[u8], sent: Instant) {
        match reply {
            Frame::Line(b'+', ok) if ok == b"OK" => {
                self.known[i] = Known { value: Some(value.to_vec()), certain: true, since: Instant::now() };
            }
            frame if frame.is_error() => {
                self.known[i].certain = false;
                self.soak.failed(sent, format!("pipeliner {}: SET {}: {frame:?}", self.id, self.keys[i]));
            }
            other => {
                self.known[i].certain = false;
                self.soak.wrong(format!("pipeliner {}: SET {}: {other:?}", self.id, self.keys[i]));
            }
        }
    }

    fn observe(&mut self, i: usize, reply: &Frame, sent: Instant, what: &str) {
        let key = &self.keys[i];
        let got = match reply {
            Frame::Blob(b'$', value) => value.clone(),
            frame if frame.is_error() => {
                self.soak.failed(sent, format!("pipeliner {}: {what} {key}: {frame:?}", self.id));
                return;
            }
            other => {
                self.soak.wrong(format!("pipeliner {}: {what} {key}: {other:?}", self.id));
                return;
            }
        };
        let known = &self.known[i];
        if known.certain && known.value != got {
            if self.soak.at_risk(key_slot(key.as_bytes()), known.since, Instant::now()) {
                self.soak.lost.fetch_add(1, Ordering::Relaxed);
            } else {
                let show = |v: &Option<Vec<u8>>| v.as_ref().map(|v| String::from_utf8_lossy(v).into_owned());
                self.soak.wrong(format!(
                    "pipeliner {}: {what} {key}: got {:?}, expected {:?}",
                    self.id,
                    show(&got),
                    show(&known.value)
                ));
            }
        }
        self.known[i] = Known { value: got, certain: true, since: Instant::now() };
    }
}
