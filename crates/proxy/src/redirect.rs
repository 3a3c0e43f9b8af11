//! What to do with a reply that is a cluster redirection or a transient cluster error.
//!
//! Pure and table-driven, as in redis-rs' cluster code: the session feeds every error reply's bytes
//! here and gets the next step back. Clients never see `MOVED` or `ASK`.

use crate::slot::Slot;

/// The next step for a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect<'a> {
    /// Not a redirection: hand the reply to the client.
    None,
    /// `-MOVED slot addr`: the slot lives on `addr` for good; resend there and refresh the map.
    Moved { slot: Slot, addr: &'a str },
    /// `-ASK slot addr`: this one request goes to `addr`, preceded by `ASKING`; the map is unchanged.
    Ask { slot: Slot, addr: &'a str },
    /// `-TRYAGAIN`: a multi-key request hit a slot in migration; resend after a short pause.
    TryAgain,
    /// `-CLUSTERDOWN`: the cluster cannot serve the slot right now (failover in progress); resend
    /// after a pause, and refresh the map.
    ClusterDown,
}

/// Most redirections followed for one request before the client gets an error, so that nodes that
/// disagree about a slot cannot bounce a request forever.
pub const MAX_HOPS: u8 = 5;

/// Classifies a reply. Only error replies (`-…`) can redirect.
pub fn classify(reply: &[u8]) -> Redirect<'_> {
    if reply.first() != Some(&b'-') {
        return Redirect::None;
    }
    let line = reply[1..].split(|&b| b == b'\r').next().unwrap_or(&[]);
    let mut words = line.split(|&b| b == b' ');
    let code = words.next().unwrap_or(&[]);
    match code {
        b"MOVED" | b"ASK" => {
            let slot = words.next().and_then(|s| std::str::from_utf8(s).ok()).and_then(|s| s.parse::<Slot>().ok());
            let addr = words.next().and_then(|a| std::str::from_utf8(a).ok());
            match (slot, addr) {
                (Some(slot), Some(addr)) if slot < crate::slot::SLOT_COUNT && !addr.is_empty() => {
                    if code == b"MOVED" {
                        Redirect::Moved { slot, addr }
                    } else {
                        Redirect::Ask { slot, addr }
                    }
                }
                _ => Redirect::None,
            }
        }
        b"TRYAGAIN" => Redirect::TryAgain,
        b"CLUSTERDOWN" => Redirect::ClusterDown,
        _ => Redirect::None,
    }
}

/// A redirection whose address is `:port` (a node that does not know its own endpoint, or
/// `cluster-preferred-endpoint-type unknown-endpoint`) means "the host you asked, on this port";
/// `host` is that host. Returns the reply with the host filled in, or `None` when there is nothing
/// to fill in.
pub fn fill_in_host(reply: &[u8], host: &str) -> Option<bytes::Bytes> {
    let rest = reply.strip_prefix(b"-MOVED ").or_else(|| reply.strip_prefix(b"-ASK "))?;
    let slot_end = rest.iter().position(|&b| b == b' ')?;
    if rest.get(slot_end + 1) != Some(&b':') {
        return None;
    }
    let at = reply.len() - rest.len() + slot_end + 1;
    let mut filled = Vec::with_capacity(reply.len() + host.len());
    filled.extend_from_slice(&reply[..at]);
    filled.extend_from_slice(host.as_bytes());
    filled.extend_from_slice(&reply[at..]);
    Some(filled.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moved_and_ask_name_slot_and_node() {
        assert_eq!(classify(b"-MOVED 3999 127.0.0.1:6381\r\n"), Redirect::Moved { slot: 3999, addr: "127.0.0.1:6381" });
        assert_eq!(classify(b"-ASK 123 10.0.0.2:7000\r\n"), Redirect::Ask { slot: 123, addr: "10.0.0.2:7000" });
        // Redis 7 may announce an unknown endpoint as ":port"; the connection fills in its host
        // (fill_in_host) before the session sees the reply.
        assert_eq!(classify(b"-MOVED 1 :7000\r\n"), Redirect::Moved { slot: 1, addr: ":7000" });
    }

    #[test]
    fn an_unknown_endpoint_is_the_host_that_answered() {
        let filled = fill_in_host(b"-MOVED 1 :7000\r\n", "10.0.0.5").expect("filled");
        assert_eq!(&filled[..], b"-MOVED 1 10.0.0.5:7000\r\n");
        let filled = fill_in_host(b"-ASK 16383 :7001\r\n", "[::1]").expect("filled");
        assert_eq!(classify(&filled), Redirect::Ask { slot: 16383, addr: "[::1]:7001" });
        assert!(fill_in_host(b"-MOVED 1 127.0.0.1:7000\r\n", "h").is_none());
        assert!(fill_in_host(b"-ERR :x\r\n", "h").is_none());
        assert!(fill_in_host(b"-MOVED\r\n", "h").is_none());
    }

    #[test]
    fn transient_cluster_errors_are_retried() {
        assert_eq!(classify(b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n"), Redirect::TryAgain);
        assert_eq!(classify(b"-CLUSTERDOWN The cluster is down\r\n"), Redirect::ClusterDown);
    }

    #[test]
    fn other_replies_pass_through() {
        for reply in [
            &b"+OK\r\n"[..],
            b"$5\r\nMOVED\r\n",
            b"-ERR wrong number of arguments\r\n",
            b"-MOVED\r\n",
            b"-MOVED 99999 h:1\r\n",
            b"-MOVED abc h:1\r\n",
            b"-ASK 12\r\n",
            b"",
        ] {
            assert_eq!(classify(reply), Redirect::None, "{:?}", String::from_utf8_lossy(reply));
        }
    }
}
