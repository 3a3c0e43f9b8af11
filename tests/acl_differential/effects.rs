//! What a command left behind on one side of the differential: the keys that exist afterwards
//! (name, type and, for strings, the value) and the messages a subscriber to every channel got.
//!
//! Each side (the proxy, the reference node) has an admin connection, which sees every key, and a
//! listener subscribed to every classic channel (`PSUBSCRIBE *`). Shard channels have no patterns,
//! so a run that may `SPUBLISH` gets a shard listener on the channels it names. Messages are read
//! up to a barrier the admin publishes after the run: pub/sub delivery keeps order per channel
//! class and node, so everything published before the barrier has arrived when it does.

use redisforge_tests::resp::{Conn, Frame};

/// Keys and messages, sorted, so both sides compare with `==`.
#[derive(Debug, PartialEq, Eq, Default)]
pub struct Effects {
    /// `name type [value]` of every key.
    pub keys: Vec<String>,
    /// `channel payload` of every message received.
    pub messages: Vec<String>,
}

/// One side's observers.
pub struct Observer {
    addr: String,
    pub admin: Conn,
    listener: Conn,
    barriers: u64,
}

/// A listener for shard channels, opened before a run.
pub struct ShardListener {
    conn: Conn,
    barrier: Vec<u8>,
}

fn text(frame: &Frame) -> String {
    String::from_utf8_lossy(frame.text().unwrap_or_default()).into_owned()
}

fn login(addr: &str) -> Conn {
    let mut conn = Conn::open(addr);
    let reply = conn.call(&[b"AUTH".to_vec(), b"admin".to_vec(), b"admin-pass".to_vec()]);
    assert!(matches!(&reply, Ok((bytes, _)) if bytes == b"+OK\r\n"), "AUTH admin at {addr}: {reply:?}");
    conn
}

impl Observer {
    /// Connects the admin and the classic listener to `addr`.
    pub fn open(addr: &str) -> Observer {
        let admin = login(addr);
        let mut listener = login(addr);
        let reply = listener.call(&[b"PSUBSCRIBE".to_vec(), b"*".to_vec()]);
        assert!(matches!(&reply, Ok((_, f)) if !f.is_error()), "PSUBSCRIBE * at {addr}: {reply:?}");
        Observer { addr: addr.to_owned(), admin, listener, barriers: 0 }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Subscribes a new connection to `channels` (all in one slot) and a barrier channel there.
    pub fn shard_listener(&self, channels: &[Vec<u8>]) -> ShardListener {
        let mut conn = login(&self.addr);
        let mut barrier = channels[0].clone();
        barrier.extend_from_slice(b":barrier");
        let mut request = vec![b"SSUBSCRIBE".to_vec(), barrier.clone()];
        request.extend(channels.iter().cloned());
        let first = conn.call(&request);
        assert!(matches!(&first, Ok((_, f)) if !f.is_error()), "SSUBSCRIBE at {}: {first:?}", self.addr);
        for _ in 1..request.len() - 1 {
            let confirmation = conn.read();
            assert!(confirmation.is_ok(), "SSUBSCRIBE confirmation at {}: {confirmation:?}", self.addr);
        }
        ShardListener { conn, barrier }
    }

    /// The keys that exist now and the messages received since the last call.
    pub fn effects(&mut self, shard: Option<ShardListener>) -> Effects {
        let mut effects = Effects { keys: self.keys(), messages: Vec::new() };
        self.barriers += 1;
        let barrier = format!("barrier:{}", self.barriers).into_bytes();
        let published = self.admin.call(&[b"PUBLISH".to_vec(), barrier.clone(), b"end".to_vec()]);
        assert!(matches!(&published, Ok((_, f)) if !f.is_error()), "PUBLISH at {}: {published:?}", self.addr);
        effects.messages.extend(read_until(&mut self.listener, &barrier, &self.addr));
        if let Some(mut shard) = shard {
            let request = [b"SPUBLISH".to_vec(), shard.barrier.clone(), b"end".to_vec()];
            let published = self.admin.call(&request);
            assert!(matches!(&published, Ok((_, f)) if !f.is_error()), "SPUBLISH at {}: {published:?}", self.addr);
            effects.messages.extend(read_until(&mut shard.conn, &shard.barrier, &self.addr));
        }
        effects.messages.sort();
        effects
    }

    fn keys(&mut self) -> Vec<String> {
        let reply = self.admin.call(&[b"KEYS".to_vec(), b"*".to_vec()]);
        let Ok((_, Frame::Aggregate(_, Some(names)))) = reply else { panic!("KEYS * at {}: {reply:?}", self.addr) };
        let mut keys = Vec::with_capacity(names.len());
        for name in names.iter().filter_map(Frame::text) {
            let kind = self.admin.call(&[b"TYPE".to_vec(), name.to_vec()]).map(|(_, f)| text(&f)).unwrap_or_default();
            let mut line = format!("{} {kind}", String::from_utf8_lossy(name));
            if kind == "string" {
                let value = self.admin.call(&[b"GET".to_vec(), name.to_vec()]).map(|(_, f)| text(&f));
                line.push_str(&format!(" {}", value.unwrap_or_default()));
            }
            keys.push(line);
        }
        keys.sort();
        keys
    }
}

/// `channel payload` of every message on `conn` before the one on `barrier`.
fn read_until(conn: &mut Conn, barrier: &[u8], addr: &str) -> Vec<String> {
    let mut messages = Vec::new();
    loop {
        let frame = match conn.read() {
            Ok((_, frame)) => frame,
            Err(e) => panic!("waiting for {} at {addr}: {e}", String::from_utf8_lossy(barrier)),
        };
        let Some(items) = frame.items() else { continue };
        let kind = items.first().and_then(Frame::text).unwrap_or_default();
        if !matches!(kind, b"message" | b"pmessage" | b"smessage") {
            continue;
        }
        // message: [kind, channel, payload]; pmessage: [kind, pattern, channel, payload].
        let (channel, payload) = match items.len() {
            3 => (&items[1], &items[2]),
            4 => (&items[2], &items[3]),
            _ => continue,
        };
        if channel.text() == Some(barrier) {
            return messages;
        }
        messages.push(format!("{} {}", text(channel), text(payload)));
    }
}
