//! The checks the fuzz targets run. Each takes arbitrary bytes and panics on a broken invariant.

use std::sync::OnceLock;

use bytes::BytesMut;
use redisforge_proxy::command::{CommandTable, Handling};
use redisforge_proxy::resp::scan::MAX_LINE;
use redisforge_proxy::resp::{FrameScanner, Limits, Request, RequestDecoder};
use redisforge_proxy::router::{self, Route};
use redisforge_proxy::slot::key_slot;

/// Most requests one input may yield; keeps every run short whatever the input.
const MAX_REQUESTS: usize = 256;

fn args(request: &Request) -> Vec<Vec<u8>> {
    (0..request.argc()).map(|i| request.arg(i).to_vec()).collect()
}

/// Small limits picked by the input's first byte, so the limit checks are reached by short inputs.
fn small_limits(byte: u8) -> Limits {
    Limits { max_request_bytes: 16 + usize::from(byte & 0x3f) * 32, max_array_len: 1 + usize::from(byte >> 6) * 5 }
}

/// Everything a decoder yields for `input` fed in pieces of `chunk` bytes: the requests' arguments,
/// and whether it ended on a protocol error.
///
/// Checks on the way: every request consumed bytes, has a command name, stays within the limits,
/// and its forwarded bytes decode (with `redis-protocol`) to the same arguments; a decoder that
/// needs more bytes never holds more than one request plus one header line.
fn decode_in_pieces(limits: Limits, input: &[u8], chunk: usize) -> (Vec<Vec<Vec<u8>>>, bool) {
    let mut decoder = RequestDecoder::new(limits);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        while out.len() < MAX_REQUESTS {
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Some(request)) => {
                    assert!(buf.len() < before, "a request was decoded without consuming input");
                    check_request(limits, &request);
                    out.push(args(&request));
                }
                Ok(None) => {
                    let bound = limits.max_request_bytes.max(MAX_LINE) + MAX_LINE;
                    assert!(buf.len() <= bound, "{} bytes buffered waiting for more (bound {bound})", buf.len());
                    break;
                }
                Err(_) => return (out, true),
            }
        }
        if out.len() >= MAX_REQUESTS {
            break;
        }
    }
    (out, false)
}

fn check_request(limits: Limits, request: &Request) {
    assert!(request.argc() >= 1, "a request without a command name: {:?}", request.bytes());
    assert!(request.argc() <= limits.max_array_len, "{} arguments over the limit", request.argc());
    // Multibulk requests are bounded by max_request_bytes; inline ones by the 64 KiB line, and
    // re-encoding an inline line adds at most its headers.
    let bound = limits.max_request_bytes.max(MAX_LINE * 8);
    assert!(request.bytes().len() <= bound, "request of {} bytes", request.bytes().len());
    match redis_protocol::resp2::decode::decode(request.bytes()) {
        Ok(Some((redis_protocol::resp2::types::OwnedFrame::Array(frames), len))) => {
            assert_eq!(len, request.bytes().len(), "forwarded bytes hold more than one frame");
            let decoded: Vec<Vec<u8>> = frames
                .iter()
                .map(|f| match f {
                    redis_protocol::resp2::types::OwnedFrame::BulkString(b) => b.clone(),
                    other => panic!("forwarded argument is not a bulk string: {other:?}"),
                })
                .collect();
            assert_eq!(decoded, args(request), "forwarded bytes disagree with the arguments");
        }
        other => panic!("forwarded bytes {:?} are not one RESP array: {other:?}", request.bytes()),
    }
}

/// `resp_request`: the request decoder never panics, always makes progress, never buffers without
/// bound, and yields the same requests whether the bytes arrive at once or in small pieces.
///
/// The first input byte picks small limits and the piece size; the rest is the byte stream.
pub fn resp_request(data: &[u8]) {
    let Some((&knob, input)) = data.split_first() else {
        return;
    };
    let limits = small_limits(knob);
    let whole = decode_in_pieces(limits, input, input.len());
    let pieces = decode_in_pieces(limits, input, 1 + usize::from(knob % 7));
    // A piecewise decode may stop early only by hitting MAX_REQUESTS at a different point.
    if whole.0.len() < MAX_REQUESTS && pieces.0.len() < MAX_REQUESTS {
        assert_eq!(whole, pieces, "decoding in pieces changed the result");
    }
}

/// The scanner's answer for `buf` fed as growing prefixes `step` bytes apart.
fn scan_in_pieces(buf: &[u8], step: usize) -> Result<Option<usize>, redisforge_proxy::resp::ScanError> {
    let mut scanner = FrameScanner::new();
    let mut end = 0;
    loop {
        end = (end + step.max(1)).min(buf.len());
        match scanner.scan(&buf[..end]) {
            Ok(None) if end < buf.len() => continue,
            other => return other,
        }
    }
}

/// Whether `redis-protocol` (RESP3, else RESP2) finds a complete frame, and its length.
fn reference_length(buf: &[u8]) -> Option<usize> {
    use redis_protocol::{resp2, resp3};
    if let Ok(Some((_, len))) = resp3::decode::complete::decode(buf) {
        return Some(len);
    }
    // RESP2's null bulk `$-1` and null array `*-1` are not RESP3.
    match resp2::decode::decode(buf) {
        Ok(Some((_, len))) => Some(len),
        _ => None,
    }
}

/// `resp_scan`: the reply scanner never panics; scanning in pieces gives the answer a whole-buffer
/// scan gives; a frame it reports complete is complete one byte later and not one byte earlier;
/// and `redis-protocol` agrees on the frame's length whenever it can decode the frame.
///
/// `redis-protocol` also checks values the scanner deliberately does not look at (an integer's
/// digits, a boolean's letter, map key types), so it may reject a frame the scanner accepts; it
/// must never find a different length, nor a complete frame where the scanner wants more bytes.
pub fn resp_scan(data: &[u8]) {
    let Some((&knob, input)) = data.split_first() else {
        return;
    };
    let whole = FrameScanner::new().scan(input);
    let pieces = scan_in_pieces(input, 1 + usize::from(knob % 13));
    assert_eq!(whole, pieces, "scanning in pieces changed the result");
    match whole {
        Ok(Some(len)) => {
            assert!(len > 0 && len <= input.len(), "frame length {len} of {} bytes", input.len());
            assert_eq!(FrameScanner::new().scan(&input[..len]), Ok(Some(len)), "the frame alone is not complete");
            assert_eq!(FrameScanner::new().scan(&input[..len - 1]), Ok(None), "complete before its last byte");
            if let Some(reference) = reference_length(input) {
                assert_eq!(reference, len, "redis-protocol finds a frame of another length");
            }
        }
        Ok(None) => {
            if let Some(reference) = reference_length(input) {
                panic!("the scanner wants more bytes, redis-protocol found a frame of {reference}");
            }
        }
        Err(_) => {}
    }
}

fn table() -> &'static CommandTable {
    static TABLE: OnceLock<CommandTable> = OnceLock::new();
    TABLE.get_or_init(CommandTable::builtin)
}

/// `route`: planning any request never panics; the route agrees with the request's keys — for a
/// request whose key spec cannot be read (a bad numkeys), the keys a Redis node routes it by
/// instead, its getkeys function's (`fallback_key_positions`).
///
/// - `Single { slot }`: every key hashes to `slot` (none for a keyless request);
/// - `Split`: each part is one request of the same command holding keys of its slot only (with
///   their values, for MSET), no two parts share a slot, and the parts' keys are exactly the
///   request's keys: `places` maps each request key, in order, to the one part entry holding it;
///   a part never holds an argument the request does not have (MSET's value of a dangling key).
pub fn route(data: &[u8]) {
    let mut decoder = RequestDecoder::new(Limits { max_request_bytes: 64 * 1024, max_array_len: 4096 });
    let mut buf = BytesMut::from(data);
    let mut scratch = Vec::new();
    for _ in 0..MAX_REQUESTS {
        match decoder.decode(&mut buf) {
            Ok(Some(request)) => check_route(&request, &mut scratch),
            _ => return,
        }
    }
}

fn check_route(request: &Request, scratch: &mut Vec<usize>) {
    let table = table();
    let route = router::plan(table, request, scratch);
    let Some(spec) = table.lookup(request) else {
        assert!(matches!(route, Route::Refuse(_)), "an unknown command was routed: {route:?}");
        return;
    };
    let mut positions = Vec::new();
    if spec.key_positions(request, &mut positions).is_err() {
        redisforge_proxy::command::fallback_key_positions(spec, request, &mut positions);
    }
    let keys: Vec<&[u8]> = positions.iter().map(|&i| request.arg(i)).collect();
    match &route {
        Route::Single { slot, .. } => {
            assert!(spec.arity_ok(request.argc()), "wrong arity, yet routed");
            assert_eq!(*slot, keys.first().map(|k| key_slot(k)), "slot of the first key");
            assert!(keys.iter().all(|k| Some(key_slot(k)) == *slot), "keys of several slots sent to one");
        }
        Route::Split { parts, places, .. } => {
            let Handling::Split { key_step, .. } = spec.handling else {
                panic!("{} split without a split handling", spec.name);
            };
            check_split(request, &keys, &positions, key_step, parts, places);
        }
        _ => {}
    }
}

fn check_split(
    request: &Request,
    keys: &[&[u8]],
    positions: &[usize],
    key_step: usize,
    parts: &[router::Part],
    places: &[redisforge_proxy::merge::KeyPlace],
) {
    assert!(parts.len() >= 2, "a split into {} part(s)", parts.len());
    assert_eq!(places.len(), keys.len(), "one place per request key");
    let mut slots: Vec<u16> = parts.iter().map(|p| p.slot).collect();
    slots.sort_unstable();
    slots.dedup();
    assert_eq!(slots.len(), parts.len(), "two parts for one slot");
    // Each part as the node will see it: the command name, then key (and value) groups.
    let part_args: Vec<Vec<Vec<u8>>> = parts
        .iter()
        .map(|part| {
            let mut buf = BytesMut::from(&part.payload[..]);
            let mut decoder = RequestDecoder::new(Limits::default());
            let decoded = decoder.decode(&mut buf).expect("a part is valid RESP").expect("a part is complete");
            assert!(buf.is_empty(), "a part holds more than one request");
            args(&decoded)
        })
        .collect();
    let mut used: Vec<Vec<bool>> = Vec::new();
    for (part, args) in parts.iter().zip(&part_args) {
        assert_eq!(args[0], request.arg(0), "a part runs another command");
        assert_eq!((args.len() - 1) % key_step, 0, "a part with a partial key group");
        let part_keys: Vec<&Vec<u8>> = args[1..].iter().step_by(key_step).collect();
        assert!(part_keys.iter().all(|k| key_slot(k) == part.slot), "a key in the wrong part");
        used.push(vec![false; part_keys.len()]);
    }
    for ((key, &position), place) in keys.iter().zip(positions).zip(places) {
        let (p, i) = (place.part as usize, place.index as usize);
        let group = &part_args[p][1 + i * key_step..1 + (i + 1) * key_step];
        assert_eq!(group[0], *key, "place of a key points at another key");
        for (offset, value) in group.iter().enumerate().skip(1) {
            assert!(position + offset < request.argc(), "a part invents an argument the request does not have");
            assert_eq!(value.as_slice(), request.arg(position + offset), "a key lost its value");
        }
        assert!(!std::mem::replace(&mut used[p][i], true), "two request keys map to one part entry");
    }
    assert!(used.iter().flatten().all(|&u| u), "a part holds a key the request does not have");
}
