//! The masters' tracking streams: while any client tracks, one RESP3 connection per master runs
//! `CLIENT TRACKING ON BCAST`, so the node pushes every key modified on it to the proxy.
//!
//! A supervisor keeps one stream per master of the current map: it opens streams for new masters,
//! closes those of nodes no longer masters (telling every tracker to flush, since writes to their
//! keys now happen where no confirmed stream may be watching yet), and closes all of them a while
//! after the last tracker left. Each stream is checked with a `PING` every `liveness_interval`: one
//! unanswered for `command_timeout` counts as lost, like a broken connection, and every tracker is
//! told to flush.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::task::JoinHandle;

use super::{FlushReason, Hub, Stamp, StreamState};
use crate::resp::scan;
use crate::topology::Topology;
use crate::upstream::{
    ConnMode, OwnedConn, PUSH, ReplyReceiver, ReplySender, Tag, UpstreamReply, UpstreamRequest, reply_channel,
};

/// Streams stay open this long after the last tracker left (clients reconnect and track again).
const LINGER: Duration = Duration::from_secs(30);

/// How often the supervisor compares the streams with the map.
const SUPERVISE_EVERY: Duration = Duration::from_millis(100);

/// Timing of the streams.
#[derive(Debug, Clone, Copy)]
pub struct StreamTiming {
    pub liveness_interval: Duration,
    pub command_timeout: Duration,
}

/// Starts the supervisor; it runs for the life of the process.
pub fn spawn_supervisor(hub: Arc<Hub>, topology: Arc<Topology>, timing: StreamTiming) {
    tokio::spawn(supervise(hub, topology, timing));
}

async fn supervise(hub: Arc<Hub>, topology: Arc<Topology>, timing: StreamTiming) {
    let mut streams: HashMap<String, JoinHandle<()>> = HashMap::new();
    // None until the first client tracks: a proxy whose clients never track opens no stream
    // (each would make its master push every key written, and the proxy parse it).
    let mut last_tracker: Option<Instant> = None;
    loop {
        if hub.tracker_count() > 0 {
            last_tracker = Some(Instant::now());
        } else if last_tracker.is_none_or(|at| at.elapsed() >= LINGER) {
            for (addr, task) in streams.drain() {
                task.abort();
                stream_gone(&hub, &addr, None);
            }
            hub.wake.notified().await;
            continue;
        }
        let masters: Vec<String> = topology.routing().masters().iter().map(|m| m.addr().to_string()).collect();
        streams.retain(|addr, task| {
            let keep = masters.contains(addr) && !task.is_finished();
            if !keep {
                task.abort();
                stream_gone(&hub, addr, Some(FlushReason::Topology));
            }
            keep
        });
        for addr in masters {
            if let std::collections::hash_map::Entry::Vacant(slot) = streams.entry(addr) {
                let addr = slot.key().clone();
                let state = hub.stream_state(&addr);
                slot.insert(tokio::spawn(follow(Arc::clone(&hub), Arc::clone(&topology), addr, state, timing)));
            }
        }
        tokio::time::sleep(SUPERVISE_EVERY).await;
    }
}

/// A stream closed by the supervisor: unconfirmed first, then (if it was confirmed) every
/// tracker is told to flush for `reason`.
fn stream_gone(hub: &Hub, addr: &str, reason: Option<FlushReason>) {
    let Some((_, state)) = hub.streams.remove(addr) else { return };
    hub.metrics.stream_up(addr, None);
    if state.confirmed.swap(false, Ordering::AcqRel)
        && let Some(reason) = reason
    {
        hub.flush(reason);
    }
}

/// Keeps `addr`'s stream up: connects, turns tracking on, follows it until it breaks, and
/// connects again with backoff. Runs until the supervisor aborts it.
async fn follow(hub: Arc<Hub>, topology: Arc<Topology>, addr: String, state: Arc<StreamState>, timing: StreamTiming) {
    let master: Arc<str> = Arc::from(addr.as_str());
    let mut backoff = Duration::from_millis(100);
    loop {
        let (tx, rx) = reply_channel();
        let mode = ConnMode { pushes: Some((tx.clone(), PUSH)), no_evict: true, ..ConnMode::owned(true, None) };
        let conn = topology.upstreams().owned(&addr, mode);
        // Named so that operators see whose connection it is in the node's CLIENT LIST.
        let name = format!("redisforge-tracking-{}", std::process::id());
        conn.send(request(&[b"CLIENT", b"SETNAME", name.as_bytes()], &tx));
        conn.send(request(&[b"CLIENT", b"TRACKING", b"ON", b"BCAST"], &tx));
        let started = Instant::now();
        let why = serve(&hub, &master, &state, &conn, &rx, timing).await;
        drop(conn);
        if state.confirmed.swap(false, Ordering::AcqRel) {
            hub.metrics.stream_up(&addr, Some(false));
            hub.flush(FlushReason::StreamLost);
        }
        crate::log_limited!(5, warn, node = %addr, why, "client-side caching stream lost; reconnecting");
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(100);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Follows one connection of the stream; returns why it is over.
async fn serve(
    hub: &Hub,
    master: &Arc<str>,
    state: &StreamState,
    conn: &OwnedConn,
    rx: &ReplyReceiver,
    timing: StreamTiming,
) -> String {
    let mut liveness = tokio::time::interval(timing.liveness_interval);
    liveness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When each unanswered PING was sent, oldest first.
    let mut unanswered: VecDeque<Instant> = VecDeque::new();
    let (tx, _) = reply_channel();
    // SETNAME's and TRACKING's: tracking is on at the second.
    let mut oks_to_come = 2;
    loop {
        tokio::select! {
            frame = rx.recv() => {
                let frame = match frame {
                    Some(UpstreamReply { result: Ok(frame), .. }) => frame,
                    Some(UpstreamReply { result: Err(error), .. }) => return error.to_string(),
                    None => return "connection closed".to_string(),
                };
                match parse(&frame) {
                    Frame::Confirmed if oks_to_come > 1 => oks_to_come -= 1,
                    Frame::Confirmed => {
                        state.confirmed.store(true, Ordering::Release);
                        hub.metrics.stream_up(master, Some(true));
                        crate::log_limited!(10, info, node = %master, "client-side caching stream up");
                        // Reads sent before now were not watched here: no cache may keep them.
                        hub.flush(FlushReason::StreamUp);
                    }
                    Frame::Pong => {
                        unanswered.pop_front();
                        state.pongs.fetch_add(1, Ordering::AcqRel);
                    }
                    Frame::Keys(keys) if state.confirmed.load(Ordering::Acquire) => {
                        let pongs = state.pongs.load(Ordering::Acquire);
                        hub.invalidate(keys, Stamp { master: Arc::clone(master), pongs });
                    }
                    Frame::Keys(_) => {}
                    Frame::Flushed => hub.flush(FlushReason::NodeFlush),
                    Frame::Error(text) => return format!("the node refused CLIENT TRACKING: {text}"),
                    Frame::Other => {}
                }
            }
            _ = liveness.tick() => {
                if unanswered.front().is_some_and(|sent| sent.elapsed() > timing.command_timeout) {
                    return "no PONG within command_timeout".to_string();
                }
                ping(state, conn, &tx, &mut unanswered);
            }
            () = state.ping_now.notified() => ping(state, conn, &tx, &mut unanswered),
        }
    }
}

/// Sends a `PING`, numbered before it is queued (see [`Hub::barrier`]).
fn ping(state: &StreamState, conn: &OwnedConn, tx: &ReplySender, unanswered: &mut VecDeque<Instant>) {
    state.pings.fetch_add(1, Ordering::AcqRel);
    unanswered.push_back(Instant::now());
    conn.send(request(&[b"PING"], tx));
}

/// A request on the stream; its reply comes back as a frame on the stream's channel.
fn request(args: &[&[u8]], reply_to: &ReplySender) -> UpstreamRequest {
    UpstreamRequest {
        payload: crate::resp::request::encode_command(args),
        prefix: None,
        tag: Tag { seq: PUSH.seq, part: 0 },
        reply_to: reply_to.clone(),
        bounded: false,
        streamable: false,
        lease: None,
    }
}

/// A frame of a tracking stream.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    /// `+OK`: SETNAME's, then tracking is on.
    Confirmed,
    Pong,
    /// `>2 invalidate [keys]`.
    Keys(Vec<Bytes>),
    /// `>2 invalidate _`: the node was flushed.
    Flushed,
    Error(String),
    Other,
}

/// What a frame of the stream says. Invalidation pushes come one per write on the master, so
/// they are read in place rather than through a general RESP3 decoder.
fn parse(frame: &[u8]) -> Frame {
    match frame {
        b"+OK\r\n" => return Frame::Confirmed,
        b"+PONG\r\n" => return Frame::Pong,
        [b'-' | b'!', ..] => return Frame::Error(String::from_utf8_lossy(frame).trim_end().to_string()),
        _ => {}
    }
    let Some(rest) = frame.strip_prefix(b">2\r\n$10\r\ninvalidate\r\n".as_slice()) else {
        return Frame::Other;
    };
    if rest == b"_\r\n" || rest == b"*-1\r\n" {
        return Frame::Flushed;
    }
    invalidated_keys(rest).map_or(Frame::Other, Frame::Keys)
}

/// The keys of an invalidation push's array (`*N` then N bulk strings), `None` if malformed.
fn invalidated_keys(frame: &[u8]) -> Option<Vec<Bytes>> {
    let (count, mut at) = header(frame, 0, b'*')?;
    let mut keys = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let (len, start) = header(frame, at, b'$')?;
        let key = frame.get(start..start.checked_add(len)?)?;
        at = start + len;
        if frame.get(at..at + 2)? != b"\r\n" {
            return None;
        }
        at += 2;
        keys.push(Bytes::copy_from_slice(key));
    }
    (at == frame.len()).then_some(keys)
}

/// The length in the `kind` header line at `at`, and where what follows the line starts.
fn header(frame: &[u8], at: usize, kind: u8) -> Option<(usize, usize)> {
    match scan::header(frame, at)? {
        (found, len, next) if found == kind => Some((len, next)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_frames_are_told_apart() {
        assert_eq!(parse(b"+OK\r\n"), Frame::Confirmed);
        assert_eq!(parse(b"+PONG\r\n"), Frame::Pong);
        assert_eq!(parse(b">2\r\n$10\r\ninvalidate\r\n_\r\n"), Frame::Flushed);
        assert_eq!(
            parse(b">2\r\n$10\r\ninvalidate\r\n*2\r\n$1\r\na\r\n$2\r\nbc\r\n"),
            Frame::Keys(vec![Bytes::from_static(b"a"), Bytes::from_static(b"bc")])
        );
        assert!(matches!(parse(b"-NOPERM no\r\n"), Frame::Error(text) if text == "-NOPERM no"));
        assert_eq!(parse(b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n"), Frame::Other);
        assert_eq!(parse(b">2\r\n$10\r\ninvalidate\r\n*2\r\n$1\r\na\r\n$5\r\nbc\r\n"), Frame::Other);
        assert_eq!(parse(b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\na\r\nzz"), Frame::Other);
        let binary = b">2\r\n$10\r\ninvalidate\r\n*1\r\n$4\r\na\r\nb\r\n";
        assert_eq!(parse(binary), Frame::Keys(vec![Bytes::from_static(b"a\r\nb")]));
    }
}
