//! Node addresses as Redis writes them: `host:port`, `[v6]:port` included.

/// Splits `host:port` (also `[v6]:port`, brackets removed); `None` without a host or a port.
pub fn split_addr(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    Some((host, port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(split_addr("127.0.0.1:7000"), Some(("127.0.0.1", 7000)));
        assert_eq!(split_addr("[::1]:7000"), Some(("::1", 7000)));
        assert_eq!(split_addr("redis-1.internal:6379"), Some(("redis-1.internal", 6379)));
        assert_eq!(split_addr(":7000"), None);
        assert_eq!(split_addr("host"), None);
        assert_eq!(split_addr("host:port"), None);
    }
}
