//! Lua scripts the proxy has seen, so that a `-NOSCRIPT` after a failover (a promoted replica
//! never had the master's script cache) is answered by loading the script there and running the
//! command again, instead of failing the client.

use bytes::Bytes;
use dashmap::DashMap;

use crate::command::CommandSpec;
use crate::resp::{Request, request::encode_command};

/// Scripts kept at most: applications that generate scripts on the fly must not grow the proxy
/// without bound; scripts past this are simply not recovered.
const MAX_SCRIPTS: usize = 10_000;

/// Script bodies by lowercase hex SHA1.
pub type Scripts = DashMap<String, Bytes>;

/// Records the script of an `EVAL`/`EVAL_RO` (argument 1) or `SCRIPT LOAD` (argument 2); other
/// commands carry no script body.
pub fn remember(scripts: &Scripts, spec: &CommandSpec, request: &Request) {
    let body = match spec.name.as_str() {
        "eval" | "eval_ro" => request.arg(1),
        "script|load" => request.arg(2),
        _ => return,
    };
    if scripts.len() >= MAX_SCRIPTS {
        return;
    }
    let sha = sha1_smol::Sha1::from(body).digest().to_string();
    scripts.entry(sha).or_insert_with(|| Bytes::copy_from_slice(body));
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
    fn eval_bodies_are_remembered_too() {
        let scripts = Scripts::default();
        remember_args(&scripts, &["EVAL", "return 1", "0"]);
        assert!(scripts.contains_key("e0e1f9fabfc9d4800c877a703b823ac0578ff8db"));
    }
}
