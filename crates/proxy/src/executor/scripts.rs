//! Lua scripts the proxy has seen, so that a `-NOSCRIPT` after a failover (a promoted replica
//! never had the master's script cache) is answered by loading the script there and running the
//! command again, instead of failing the client.

use bytes::Bytes;
use dashmap::DashMap;

use crate::command::CommandSpec;
use crate::resp::{Request, request::encode_command};

/// Scripts kept at most: applications that generate scripts on the fly must not grow the proxy
/// without bound. Past it a new script takes the place of an older one (any), since the newest
/// are the likeliest to run next: an EVALSHA of a script forgotten so is not recovered after a
/// failover, and under CLIENT PAUSE WRITE its shebang's flags are not known (it waits).
const MAX_SCRIPTS: usize = 10_000;

/// Script bodies by lowercase hex SHA1.
pub type Scripts = DashMap<String, Bytes>;

/// Records the script of an `EVAL`/`EVAL_RO` (argument 1) or `SCRIPT LOAD` (argument 2); other
/// commands carry no script body. `SCRIPT FLUSH` forgets them all: after it an EVALSHA gets the
/// node's `-NOSCRIPT`, as on Redis, not a script loaded again.
pub fn remember(scripts: &Scripts, spec: &CommandSpec, request: &Request) {
    let body = match spec.name.as_str() {
        "eval" | "eval_ro" => request.arg(1),
        "script|load" => request.arg(2),
        "script|flush" => return scripts.clear(),
        _ => return,
    };
    let sha = sha1_smol::Sha1::from(body).digest().to_string();
    if scripts.contains_key(&sha) {
        return;
    }
    if scripts.len() >= MAX_SCRIPTS {
        // Its own statement: the iterator's shard lock must be gone before `remove` takes one.
        let older = scripts.iter().next().map(|entry| entry.key().clone());
        if let Some(older) = older {
            scripts.remove(&older);
        }
    }
    scripts.entry(sha).or_insert_with(|| Bytes::copy_from_slice(body));
}

/// Whether the proxy remembers the script of SHA1 `sha` (hex, either case).
pub fn is_remembered(scripts: &Scripts, sha: &[u8]) -> bool {
    scripts.contains_key(&String::from_utf8_lossy(sha).to_ascii_lowercase())
}

/// `SCRIPT LOAD <body>` for the script an `EVALSHA`/`EVALSHA_RO` request names, if known.
pub fn reload_for(scripts: &Scripts, payload: &Bytes) -> Option<Bytes> {
    let request = crate::resp::Request::from_args(&parse_args(payload)?);
    let name = request.arg(0);
    if !name.eq_ignore_ascii_case(b"evalsha") && !name.eq_ignore_ascii_case(b"evalsha_ro") {
        return None;
    }
    let sha = String::from_utf8_lossy(request.arg(1)).to_ascii_lowercase();
    let body = scripts.get(&sha)?;
    Some(encode_command(&[&b"SCRIPT"[..], b"LOAD", &body]))
}

/// Whether the script of an EVAL-family request writes, when its shebang says so: Redis takes
/// the flags a script declares (`#!lua flags=no-writes,…`) instead of the command's own
/// (`evalGetCommandFlags`, `scriptFlagsToCmdFlags`): a script with a shebang writes unless it
/// declares `no-writes`. `None` when the command's flags decide: no shebang (Redis' compatibility
/// mode), a shebang Redis would refuse, an EVALSHA of a script the proxy has not seen, or not a
/// script at all.
pub fn shebang_writes(scripts: &Scripts, spec: &CommandSpec, request: &Request) -> Option<bool> {
    match spec.name.as_str() {
        "eval" | "eval_ro" => shebang_no_writes(request.arg(1)).map(|no_writes| !no_writes),
        "evalsha" | "evalsha_ro" => {
            let sha = String::from_utf8_lossy(request.arg(1)).to_ascii_lowercase();
            let body = scripts.get(&sha)?;
            shebang_no_writes(&body).map(|no_writes| !no_writes)
        }
        _ => None,
    }
}

/// Script flags Redis 7.0 knows (`scripts_flags_def`); any other makes it refuse the shebang.
const SCRIPT_FLAGS: &[&[u8]] = &[b"no-writes", b"allow-oom", b"allow-stale", b"no-cluster", b"allow-cross-slot-keys"];

/// Whether a script's `#!lua` shebang declares `no-writes`, as Redis' `evalExtractShebangFlags`
/// reads it; `None` without a shebang or with one it refuses.
fn shebang_no_writes(body: &[u8]) -> Option<bool> {
    if !body.starts_with(b"#!") {
        return None;
    }
    let line = &body[..body.iter().position(|&b| b == b'\n')?];
    let mut parts = line.split(|b| b.is_ascii_whitespace()).filter(|part| !part.is_empty());
    if parts.next()? != b"#!lua" {
        return None;
    }
    let mut no_writes = false;
    for part in parts {
        // `flags=` alone declares none; otherwise every comma-separated flag must be known (an
        // empty one, as in `no-writes,`, is not). Quoted tokens are left to the node.
        let flags = part.strip_prefix(b"flags=").filter(|flags| !flags.iter().any(|&b| b == b'"' || b == b'\''))?;
        for flag in flags.split(|&b| b == b',').filter(|_| !flags.is_empty()) {
            if !SCRIPT_FLAGS.contains(&flag) {
                return None;
            }
            no_writes |= flag == b"no-writes";
        }
    }
    Some(no_writes)
}

/// The first two arguments of a RESP request (enough to tell EVALSHA and its SHA).
fn parse_args(payload: &Bytes) -> Option<Vec<Bytes>> {
    let mut decoder = crate::resp::RequestDecoder::new(crate::resp::Limits::default());
    let mut buf = bytes::BytesMut::from(&payload[..]);
    let request = decoder.decode(&mut buf).ok()??;
    Some((0..request.argc().min(2)).map(|i| Bytes::copy_from_slice(request.arg(i))).collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Remembers the script `args` carry, as the session does for every request.
    pub(crate) fn remember_args(scripts: &Scripts, args: &[&str]) {
        let table = crate::command::CommandTable::builtin();
        let request = Request::from_args(args);
        let spec = table.lookup(&request).expect("a known command");
        remember(scripts, spec, &request);
    }

    #[test]
    fn past_the_bound_a_new_script_takes_an_older_ones_place() {
        let scripts = Scripts::default();
        let table = crate::command::CommandTable::builtin();
        for i in 0..MAX_SCRIPTS + 5 {
            let request = Request::from_args(&["SCRIPT", "LOAD", &format!("return {i}")]);
            remember(&scripts, table.lookup(&request).expect("SCRIPT LOAD"), &request);
        }
        assert_eq!(scripts.len(), MAX_SCRIPTS);
        let newest = format!("return {}", MAX_SCRIPTS + 4);
        assert!(is_remembered(&scripts, sha1_smol::Sha1::from(newest.as_bytes()).digest().to_string().as_bytes()));
    }

    #[test]
    fn evalsha_of_a_remembered_script_is_reloaded() {
        let scripts = Scripts::default();
        remember_args(&scripts, &["SCRIPT", "LOAD", "return 1"]);
        // SHA1("return 1"), as Redis computes it.
        let sha = "e0e1f9fabfc9d4800c877a703b823ac0578ff8db";
        assert!(scripts.contains_key(sha));
        let evalsha = Request::from_args(&["EVALSHA", sha, "0"]);
        let reload = reload_for(&scripts, evalsha.bytes()).expect("known script");
        assert_eq!(&reload[..], &encode_command(&["SCRIPT", "LOAD", "return 1"])[..]);
        let unknown = Request::from_args(&["EVALSHA", "ffff", "0"]);
        assert!(reload_for(&scripts, unknown.bytes()).is_none());
        let get = Request::from_args(&["GET", sha]);
        assert!(reload_for(&scripts, get.bytes()).is_none());
    }

    #[test]
    fn script_flush_forgets_every_script() {
        let scripts = Scripts::default();
        remember_args(&scripts, &["SCRIPT", "LOAD", "return 1"]);
        remember_args(&scripts, &["EVAL", "return 2", "0"]);
        assert_eq!(scripts.len(), 2);
        remember_args(&scripts, &["SCRIPT", "FLUSH", "ASYNC"]);
        assert!(scripts.is_empty(), "an EVALSHA after SCRIPT FLUSH gets -NOSCRIPT, as on Redis");
    }

    #[test]
    fn a_shebang_decides_whether_a_script_writes() {
        let cases: &[(&str, Option<bool>)] = &[
            ("return 1", None),
            ("#!lua\nreturn 1", Some(false)),
            ("#!lua flags=no-writes\nreturn 1", Some(true)),
            ("#!lua flags=allow-oom,no-writes\nreturn 1", Some(true)),
            ("#!lua flags=allow-oom\nreturn 1", Some(false)),
            ("#!lua   flags=no-writes  \nreturn 1", Some(true)),
            ("#!lua flags=\nreturn 1", Some(false)),
            ("#!lua flags=no-writes,bogus\nreturn 1", None),
            ("#!lua name=x\nreturn 1", None),
            ("#!python flags=no-writes\nreturn 1", None),
            ("#!lua flags=no-writes", None),
            ("#! lua flags=no-writes\nreturn 1", None),
            ("#!lua flags=no-writes,\nreturn 1", None),
            ("#!lua flags=allow-oom,,no-writes\nreturn 1", None),
            ("#!lua flags=no-writes\r\nreturn 1", Some(true)),
        ];
        for (body, expected) in cases {
            assert_eq!(shebang_no_writes(body.as_bytes()), *expected, "{body:?}");
        }
        let scripts = Scripts::default();
        let table = crate::command::CommandTable::builtin();
        let writes = |args: &[&str]| {
            let request = Request::from_args(args);
            shebang_writes(&scripts, table.lookup(&request).expect("known"), &request)
        };
        assert_eq!(writes(&["EVAL", "#!lua flags=no-writes\nreturn 1", "0"]), Some(false));
        assert_eq!(writes(&["EVAL", "return 1", "0"]), None);
        let body = "#!lua flags=no-writes\nreturn 2";
        let sha = sha1_smol::Sha1::from(body).digest().to_string();
        assert_eq!(writes(&["EVALSHA", &sha, "0"]), None, "not seen yet");
        remember_args(&scripts, &["SCRIPT", "LOAD", body]);
        assert_eq!(writes(&["EVALSHA", &sha.to_ascii_uppercase(), "0"]), Some(false));
        assert_eq!(writes(&["GET", "k"]), None);
    }

    #[test]
    fn eval_bodies_are_remembered_too() {
        let scripts = Scripts::default();
        remember_args(&scripts, &["EVAL", "return 1", "0"]);
        assert!(scripts.contains_key("e0e1f9fabfc9d4800c877a703b823ac0578ff8db"));
    }
}
