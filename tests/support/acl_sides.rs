//! The two sides of an ACL differential test: the proxy in front of the shared cluster, and one
//! standalone Redis node, both loaded with the same ACL file.

use crate::{Cluster, Proxy, ProxyOptions, RedisServer};

/// A proxy and a reference node with the same users; the ACL file lives as long as this.
pub struct AclSides {
    pub proxy: Proxy,
    pub node: RedisServer,
    _dir: tempfile::TempDir,
}

impl AclSides {
    /// Writes `users` (ACL file text) and starts the proxy (`[auth] acl_file`) and the node
    /// (`aclfile`) with it.
    ///
    /// # Panics
    /// When the file cannot be written or either side does not start.
    pub fn start(users: &str) -> AclSides {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("users.acl");
        std::fs::write(&file, users).expect("write the ACL file");
        let extra = format!("[auth]\nacl_file = \"{}\"\n", file.display());
        let proxy = Proxy::start(Cluster::shared(), ProxyOptions { extra_toml: extra, ..ProxyOptions::default() });
        let acl = file.display().to_string();
        let node = RedisServer::start(dir.path(), |port| vec![format!("port {port}"), format!("aclfile {acl}")])
            .expect("the reference node starts");
        AclSides { proxy, node, _dir: dir }
    }
}
