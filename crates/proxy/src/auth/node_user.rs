//! The node-side twin of a client user: scripts, functions and transactions of a client run on
//! upstream connections logged in as a user that carries the client's own ACL rules on the node.
//!
//! The proxy checks every command a client sends, but not the commands a script or function calls
//! on the node: there the node checks them, against the user of the connection the script runs on.
//! Running a client's scripts as the proxy's upstream user (which may touch every key) would let a
//! key-restricted client reach any key from inside a script; running them as this twin makes the
//! node refuse exactly what it would refuse the client itself (`NOPERM` from `redis.call`).
//!
//! The twin is created (or brought up to date) with `ACL SETUSER` by every connection that logs in
//! as it, right before its `AUTH`: a node that restarted, joined, or missed a reload gets the user
//! with the connection that needs it. Its password is derived from the proxy's upstream password
//! and the user's name, so every proxy instance with the same configuration agrees on it and no
//! new secret has to be configured.

use sha2::{Digest, Sha256};

/// Prefix of every node-side user the proxy creates, so operators can tell them apart.
pub const NODE_USER_PREFIX: &str = "redisforge.";

/// Commands the proxy itself sends on such a connection, beside the client's: `ASKING` after an
/// `-ASK`, `SCRIPT LOAD` after a `-NOSCRIPT`, the transaction frame and `UNWATCH` it adds,
/// `READONLY` for replica reads, and `CLIENT ID` (for CLIENT UNBLOCK on the client's behalf). Each is `noscript` in Redis or only changes the connection's own
/// state, so granting them gives a script nothing the client's rules deny; the client's own use of
/// them is still checked by the proxy against the client's rules.
const PROXY_COMMANDS: [&str; 8] =
    ["+asking", "+script|load", "+multi", "+exec", "+discard", "+unwatch", "+readonly", "+client|id"];

/// A client user as a node-side ACL user: its name on the nodes and the rules to give it there.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeUser {
    name: String,
    /// The client's rules from the ACL file, without passwords and `on`/`off`.
    rules: Vec<Vec<u8>>,
}

impl std::fmt::Debug for NodeUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeUser").field("name", &self.name).field("rules", &self.rules.len()).finish()
    }
}

impl NodeUser {
    /// The twin of client user `client_name` with the rules of its ACL file line.
    pub fn new(client_name: &str, rules: &[Vec<u8>]) -> NodeUser {
        let rules = rules.iter().filter(|rule| !is_login_rule(rule)).cloned().collect();
        NodeUser { name: format!("{NODE_USER_PREFIX}{client_name}"), rules }
    }

    /// The user's name on the nodes.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The two commands that log a connection in as this user, to send after the proxy's own
    /// login: `ACL SETUSER` (run as the upstream user, which needs `+acl|setuser`), then `AUTH`.
    ///
    /// `reset` first makes the node's user exactly what the file says whatever it was before;
    /// `resetpass` and the derived password come after the client's rules, so a `reset` among
    /// them cannot undo the login.
    pub fn login_commands(&self, upstream_password: Option<&str>) -> [Vec<Vec<u8>>; 2] {
        let password = self.password(upstream_password);
        let mut setuser: Vec<Vec<u8>> = vec![b"ACL".to_vec(), b"SETUSER".to_vec(), self.name.as_bytes().to_vec()];
        setuser.push(b"reset".to_vec());
        setuser.extend(self.rules.iter().cloned());
        setuser.extend(PROXY_COMMANDS.iter().map(|c| c.as_bytes().to_vec()));
        setuser.push(b"resetpass".to_vec());
        setuser.push(format!(">{password}").into_bytes());
        setuser.push(b"on".to_vec());
        let auth = vec![b"AUTH".to_vec(), self.name.as_bytes().to_vec(), password.into_bytes()];
        [setuser, auth]
    }

    /// SHA-256 of a fixed label, the upstream password and the user's name, in hex: the same on
    /// every proxy with this configuration, unknown to anyone without the upstream password.
    fn password(&self, upstream_password: Option<&str>) -> String {
        let mut hash = Sha256::new();
        hash.update(b"redisforge node user\0");
        hash.update(upstream_password.unwrap_or("").as_bytes());
        hash.update(b"\0");
        hash.update(self.name.as_bytes());
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Rules about logging in rather than permissions: passwords, hashes, `nopass`, `on`/`off`.
fn is_login_rule(rule: &[u8]) -> bool {
    let lower = rule.to_ascii_lowercase();
    matches!(lower.first(), Some(b'>' | b'<' | b'#' | b'!'))
        || matches!(lower.as_slice(), b"on" | b"off" | b"nopass" | b"resetpass")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn login_rules_stay_with_the_proxy_and_permissions_go_to_the_node() {
        let user =
            NodeUser::new("app", &rules(&["on", ">secret", "#abcd", "~app:*", "+@all", "-@dangerous", "nopass"]));
        let [setuser, auth] = user.login_commands(Some("upstream"));
        let words: Vec<String> = setuser.iter().map(|w| String::from_utf8_lossy(w).into_owned()).collect();
        assert_eq!(&words[..7], ["ACL", "SETUSER", "redisforge.app", "reset", "~app:*", "+@all", "-@dangerous"]);
        assert!(!words.iter().any(|w| w == ">secret" || w == "#abcd" || w == "nopass"), "{words:?}");
        assert_eq!(words.last().map(String::as_str), Some("on"));
        let password = &words[words.len() - 2];
        assert!(password.starts_with('>') && password.len() == 65, "{password}");
        assert_eq!(auth[1], b"redisforge.app");
        assert_eq!(&auth[2][..], &password.as_bytes()[1..]);
    }

    #[test]
    fn the_password_depends_on_the_upstream_password_and_the_name() {
        let app = NodeUser::new("app", &[]);
        let other = NodeUser::new("other", &[]);
        assert_eq!(app.password(Some("a")), app.password(Some("a")));
        assert_ne!(app.password(Some("a")), app.password(Some("b")));
        assert_ne!(app.password(Some("a")), other.password(Some("a")));
    }
}
