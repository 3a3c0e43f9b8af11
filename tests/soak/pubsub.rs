//! Pub/sub under faults: a subscriber per client on the client's own channel, and the check of
//! what it received against what the client published.
//!
//! Delivery is at most once: messages published while the proxy moves a subscription off a failed
//! node may be lost, so losses are allowed around faults only. A client's PUBLISHes go to one node;
//! when an event changes which one, two of them may run on two nodes and the cluster bus may deliver
//! them out of order, so reordering is allowed next to an event only. A duplicate is never allowed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use redisforge_proxy::resp::FrameScanner;

use crate::shared::Soak;

/// What a client published on its channel, in order: sequence number, when, and whether the proxy
/// acknowledged it (answered with a count). A PUBLISH answered with an error (a timeout) may still
/// run on its node later, after the partition heals, so its time counts for the reordering check
/// but it may be lost.
pub type Published = Arc<Mutex<Vec<(u64, Instant, bool)>>>;

/// What a subscriber received: sequence number and when, in order.
pub type Received = Vec<(u64, Instant)>;

/// Messages published this close to a fault may be lost; around any event, reordered.
const PUBSUB_GRACE: Duration = Duration::from_secs(3);

/// A subscriber on the client's channel: records the sequence numbers it receives, in order, with
/// when each came.
/// Returns once the subscription is confirmed.
///
/// Raw TCP and the proxy's own frame scanner rather than a client library, so that what is counted
/// is exactly what the proxy sent.
pub fn spawn_subscriber(
    addr: String,
    id: usize,
    stop: Arc<AtomicBool>,
    deadline: Instant,
) -> JoinHandle<Result<Received, String>> {
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
                        got.push((seq, Instant::now()));
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

/// Pub/sub totals over every subscriber.
#[derive(Debug, Default)]
pub struct Delivery {
    pub delivered: usize,
    pub lost: usize,
    pub reordered: usize,
    pub problems: Vec<String>,
}

/// Checks what each subscriber received against what its client published.
pub fn check(soak: &Soak, received: Vec<Result<Received, String>>, published: &[Published]) -> Delivery {
    let windows = |faults_only: bool, before: Duration| -> Vec<(Instant, Instant)> {
        soak.events
            .lock()
            .expect("events lock")
            .iter()
            .filter(|e| !faults_only || e.kind.is_fault())
            .map(|e| (e.start - before, e.end.unwrap_or_else(Instant::now) + PUBSUB_GRACE))
            .collect()
    };
    let (lossy, changes) = (windows(true, Duration::from_millis(500)), windows(false, Duration::from_secs(1)));
    let inside = |spans: &[(Instant, Instant)], at: Instant| spans.iter().any(|&(from, to)| from <= at && at <= to);
    let mut out = Delivery::default();
    for (id, (got, sent)) in received.into_iter().zip(published).enumerate() {
        let (got, arrived): (Vec<u64>, Vec<Instant>) = match got {
            Ok(got) => got.into_iter().unzip(),
            Err(e) => {
                out.problems.push(e);
                continue;
            }
        };
        let sent = sent.lock().expect("published lock");
        let sent_at: HashMap<u64, Instant> = sent.iter().map(|&(seq, at, _)| (seq, at)).collect();
        let unique: HashSet<u64> = got.iter().copied().collect();
        if unique.len() != got.len() {
            let mut counted = HashMap::new();
            got.iter().for_each(|seq| *counted.entry(*seq).or_insert(0) += 1);
            // When each copy came tells a late frame (copies close together) from a message a
            // node delivered again much later.
            let came = |seq: u64| -> Vec<String> {
                got.iter().zip(&arrived).filter(|(s, _)| **s == seq).map(|(_, at)| soak.at(*at)).collect()
            };
            let twice: Vec<String> = counted
                .iter()
                .filter(|(_, n)| **n > 1)
                .map(|(seq, n)| {
                    let published = sent_at.get(seq).map(|t| soak.at(*t));
                    format!("{seq} x{n} (published at {published:?}, delivered at {:?})", came(*seq))
                })
                .collect();
            out.problems.push(format!("subscriber {id}: messages delivered more than once: {twice:?}"));
        }
        for w in got.windows(2).filter(|w| w[0] > w[1]) {
            out.reordered += 1;
            let at = sent_at.get(&w[1]).copied().unwrap_or_else(Instant::now);
            if !inside(&changes, at) {
                out.problems.push(format!(
                    "subscriber {id}: message {} (published at {}) delivered after {}, away from any event",
                    w[1],
                    soak.at(at),
                    w[0]
                ));
            }
        }
        out.delivered += unique.len();
        for &(seq, at, acknowledged) in sent.iter() {
            if !acknowledged || unique.contains(&seq) {
                continue;
            }
            out.lost += 1;
            if !inside(&lossy, at) {
                out.problems.push(format!("subscriber {id}: message {seq} published at {} lost", soak.at(at)));
            }
        }
    }
    out
}
