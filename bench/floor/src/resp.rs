//! What the floors share: just enough RESP to find a request's end and key and a reply's end,
//! the key's slot, the bench config's listen address and seeds, and the slot map from
//! `CLUSTER SLOTS` (read once at start; no redirections are followed).

/// The length of the multibulk request at the front of `buf` and where its key (argument 1) lies;
/// `None` while incomplete. Inline commands are not understood.
pub fn request(buf: &[u8]) -> Option<(usize, Option<(usize, usize)>)> {
    let (count, mut pos) = header(buf, 0, b'*')?;
    let mut key = None;
    for i in 0..count {
        let (len, start) = header(buf, pos, b'$')?;
        let end = start + usize::try_from(len).ok()? + 2;
        if buf.len() < end {
            return None;
        }
        if i == 1 {
            key = Some((start, end - 2));
        }
        pos = end;
    }
    Some((pos, key))
}

/// `<kind><integer>\r\n` at `at`: the integer and where the line ends.
fn header(buf: &[u8], at: usize, kind: u8) -> Option<(i64, usize)> {
    if *buf.get(at)? != kind {
        return None;
    }
    let mut i = at + 1;
    let negative = buf.get(i) == Some(&b'-');
    i += usize::from(negative);
    let mut value: i64 = 0;
    while *buf.get(i)? != b'\r' {
        value = value * 10 + i64::from(buf[i].wrapping_sub(b'0'));
        i += 1;
    }
    (buf.get(i + 1) == Some(&b'\n')).then_some((if negative { -value } else { value }, i + 2))
}

/// The length of the reply starting at `at` (RESP2 and RESP3 types); `None` while incomplete.
pub fn reply(buf: &[u8], at: usize) -> Option<usize> {
    let kind = *buf.get(at)?;
    match kind {
        b'$' | b'!' | b'=' => {
            let (len, start) = header(buf, at, kind)?;
            let Ok(len) = usize::try_from(len) else { return Some(start - at) };
            (buf.len() >= start + len + 2).then_some(start + len + 2 - at)
        }
        b'*' | b'%' | b'~' | b'>' => {
            let (count, start) = header(buf, at, kind)?;
            let count = if kind == b'%' { count * 2 } else { count };
            let mut pos = start;
            for _ in 0..count.max(0) {
                pos += reply(buf, pos)?;
            }
            Some(pos - at)
        }
        _ => buf[at..].windows(2).position(|w| w == b"\r\n").map(|end| end + 2),
    }
}

/// The key's slot, hash tags included.
pub fn slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let len = key[open + 1..].iter().position(|&b| b == b'}')?;
        (len > 0).then(|| &key[open + 1..open + 1 + len])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(key)) & 16383
}

/// The arguments bench/callgrind.sh passes (`--config FILE`, and `--check`, which is answered by
/// exiting): the listen address and the seeds, read from the config's `plain =` and `seeds =`
/// lines.
pub fn config() -> Option<(String, Vec<String>)> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.iter().position(|a| a == "--config").and_then(|i| args.get(i + 1))?;
    if args.iter().any(|a| a == "--check") {
        std::process::exit(0);
    }
    let text = std::fs::read_to_string(path).ok()?;
    let value = |name: &str| text.lines().find_map(|line| line.strip_prefix(name)).map(str::trim);
    let listen = value("plain = ")?.trim_matches('"').to_string();
    let seeds = value("seeds = ")?.trim_matches(['[', ']']).split(',').map(|s| s.trim_matches('"').to_string());
    Some((listen, seeds.collect()))
}

/// The masters' addresses and each slot's master (an index into them), from `CLUSTER SLOTS`.
pub fn slot_map(seed: &str) -> std::io::Result<(Vec<String>, Vec<u16>)> {
    use std::io::{Error, Read, Write};
    let mut stream = std::net::TcpStream::connect(seed)?;
    stream.write_all(b"*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n")?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    while reply(&buf, 0).is_none() {
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return Err(Error::other("the seed closed the connection"));
        }
        buf.extend_from_slice(&chunk[..read]);
    }
    parse_slots(&buf).ok_or_else(|| Error::other("unexpected CLUSTER SLOTS reply"))
}

/// `*N` ranges, each `*M :start :end *[$host :port …]` (the master) and M − 3 replicas.
fn parse_slots(buf: &[u8]) -> Option<(Vec<String>, Vec<u16>)> {
    let mut masters: Vec<String> = Vec::new();
    let mut owner = vec![0u16; 16384];
    let (ranges, mut pos) = header(buf, 0, b'*')?;
    for _ in 0..ranges {
        let (entries, at) = header(buf, pos, b'*')?;
        let (start, at) = header(buf, at, b':')?;
        let (end, at) = header(buf, at, b':')?;
        let (_, host_at) = header(buf, at, b'*')?;
        let (host_len, host_start) = header(buf, host_at, b'$')?;
        let host_end = host_start + usize::try_from(host_len).ok()?;
        let (port, _) = header(buf, host_end + 2, b':')?;
        let addr = format!("{}:{port}", String::from_utf8_lossy(buf.get(host_start..host_end)?));
        let index = masters.iter().position(|a| *a == addr).unwrap_or_else(|| {
            masters.push(addr);
            masters.len() - 1
        });
        for slot in start..=end {
            *owner.get_mut(usize::try_from(slot).ok()?)? = u16::try_from(index).ok()?;
        }
        pos = at;
        for _ in 2..entries {
            pos += reply(buf, pos)?;
        }
    }
    Some((masters, owner))
}
