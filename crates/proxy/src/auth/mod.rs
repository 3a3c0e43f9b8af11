//! Client users from a Redis ACL file, and the permission check every request of an authenticated
//! client goes through.
//!
//! The file uses Redis 7.0's syntax, one `user NAME RULE...` line per user, and means what Redis
//! makes of it: rules apply in order like `ACL SETUSER`, users start `off` with no permissions,
//! categories and commands come from the [`CommandTable`], and a file Redis would refuse (unknown
//! command or category, malformed hash, ...) is refused with the line number. Selectors (`(...)`)
//! are refused as not supported.
//!
//! [`Users`] is an immutable snapshot: a reload parses a new one and swaps it in. The checks are
//! pure and do no I/O; [`Users::load`] only reads the file.

mod access;
mod acl;
pub mod glob;
mod node_user;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::command::{Args, CommandSpec, CommandTable, KeyAccess};

pub use access::Access;
pub use node_user::{NODE_USER_PREFIX, NodeUser};

/// Every user of an ACL file by name (names are case-sensitive, as in Redis).
///
/// Unlike Redis, a file without a `default` user leaves none: there is no implicit all-powerful
/// `default` user once a file is configured.
#[derive(Debug, Clone, Default)]
pub struct Users {
    users: HashMap<String, Arc<User>>,
}

impl Users {
    /// Parses an ACL file's text.
    ///
    /// # Errors
    /// [`AclError::Line`] for the first line Redis would refuse, naming the line number and the
    /// offending rule (never a password or hash).
    pub fn parse(text: &str, table: &CommandTable) -> Result<Users, AclError> {
        acl::parse_users(text, table).map(|users| Users { users }).map_err(|e| AclError::Line {
            path: None,
            line: e.line,
            message: e.message,
        })
    }

    /// Reads and parses an ACL file.
    ///
    /// # Errors
    /// [`AclError::Read`] when the file cannot be read, [`AclError::Line`] (with the path) as for
    /// [`Users::parse`].
    pub fn load(path: &Path, table: &CommandTable) -> Result<Users, AclError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| AclError::Read { path: path.to_path_buf(), source })?;
        Users::parse(&text, table).map_err(|error| match error {
            AclError::Line { line, message, .. } => AclError::Line { path: Some(path.to_path_buf()), line, message },
            other => other,
        })
    }

    /// The user, if the name and password match and the user is on; `nopass` users accept any
    /// password.
    ///
    /// The password is hashed whatever the name, and compared with every stored hash in constant
    /// time, so timing tells nothing about the password, the stored hashes, or whether the user
    /// exists.
    ///
    /// # Errors
    /// [`AuthError::WrongPass`] for an unknown user, a disabled user or a wrong password alike.
    pub fn authenticate(&self, name: &str, password: &[u8]) -> Result<Arc<User>, AuthError> {
        let digest: [u8; 32] = Sha256::digest(password).into();
        let user = self.users.get(name).ok_or(AuthError::WrongPass)?;
        let accepted = user.accepts(&digest);
        if accepted && user.enabled { Ok(Arc::clone(user)) } else { Err(AuthError::WrongPass) }
    }

    /// The user named `name`, on or off.
    pub fn get(&self, name: &str) -> Option<Arc<User>> {
        self.users.get(name).cloned()
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// One user: whether it may log in, with which passwords, and what it may do once logged in.
///
/// `Debug` shows the rules but only the number of passwords, never their hashes.
pub struct User {
    pub name: String,
    /// `on`: the user may authenticate.
    pub enabled: bool,
    nopass: bool,
    /// SHA-256 digests of the passwords.
    passwords: Vec<[u8; 32]>,
    rules: acl::Rules,
    /// The user's twin on the nodes, which scripts, functions and transactions run as; `None` for
    /// the unrestricted user of a proxy without an ACL file (the upstream user serves it).
    pub node_user: Option<Arc<NodeUser>>,
}

impl User {
    fn new(name: &str, rules: acl::Rules) -> User {
        User { name: name.to_owned(), enabled: false, nopass: false, passwords: Vec::new(), rules, node_user: None }
    }

    /// All-permissions user used when no ACL file is configured (Redis' default user:
    /// `on nopass ~* &* +@all`).
    pub fn unrestricted(name: &str) -> User {
        User { enabled: true, nopass: true, ..User::new(name, acl::Rules::unrestricted()) }
    }

    /// Whether any password is accepted (`nopass`): in Redis, a `default` user like that lets
    /// clients in without AUTH.
    pub fn is_nopass(&self) -> bool {
        self.nopass
    }

    /// Checks command, keys and channels of one request against the user's rules, the way Redis 7
    /// does, in Redis' order: the command (the subcommand's own permission for a subcommand), then
    /// the keys with the access each needs, then the channels of PUBLISH, SPUBLISH, SUBSCRIBE,
    /// SSUBSCRIBE and PSUBSCRIBE (whose patterns must be allowed literally, as in Redis).
    ///
    /// `spec` is the looked-up spec (the subcommand's when there is one), `args` argv-style;
    /// `scratch` is reused for the key positions so that the check allocates nothing. Arity is not
    /// checked here, and a malformed numkeys finds no keys (the command's own error follows).
    ///
    /// # Errors
    /// The first [`Denied`] reason, as Redis would report it.
    pub fn check(
        &self,
        spec: &CommandSpec,
        args: &(impl Args + ?Sized),
        scratch: &mut Vec<(usize, KeyAccess)>,
    ) -> Result<(), Denied> {
        self.rules.check(spec, args, scratch)
    }

    /// Whether `digest` is one of the passwords (every hash compared, no early exit) or the user
    /// is `nopass`.
    fn accepts(&self, digest: &[u8; 32]) -> bool {
        let mut matched = Choice::from(u8::from(self.nopass));
        for stored in &self.passwords {
            matched |= stored[..].ct_eq(&digest[..]);
        }
        bool::from(matched)
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("enabled", &self.enabled)
            .field("nopass", &self.nopass)
            .field("passwords", &self.passwords.len())
            .field("rules", &self.rules)
            .finish()
    }
}

/// Why a request was refused; `Display` is the reply text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Denied {
    /// The user may not run this command; `name` is lowercase, `container|sub` for subcommands.
    #[error("NOPERM this user has no permissions to run the '{name}' command")]
    Command { name: String },
    /// Some key of the request matches no pattern granting the access it needs.
    #[error("NOPERM this user has no permissions to access one of the keys used as arguments")]
    Key,
    /// Some channel of a PUBLISH or SUBSCRIBE matches no channel pattern.
    #[error("NOPERM this user has no permissions to access one of the channels used as arguments")]
    Channel,
}

impl Denied {
    /// The exact Redis 7.0 error reply, without the leading `-` and the CRLF.
    pub fn reply_text(&self) -> String {
        self.to_string()
    }

    /// The refusal of `user`, worded as the nodes' version words it (`since_7_2`: Redis 7.2 on,
    /// and Valkey, which reports 7.2.4).
    pub fn worded(self, user: &str, since_7_2: bool) -> Refusal {
        let user = since_7_2.then(|| user.to_owned());
        Refusal { denied: self, user }
    }
}

/// A [`Denied`] as the client is told: in Redis 7.0's words, or (with the user's name) in those
/// of Redis 7.2 on (`getAclErrorMessage`), whose NOPERM texts differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    denied: Denied,
    /// The user's name, for 7.2's wording; `None`: 7.0's.
    user: Option<String>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.user, &self.denied) {
            (None, denied) => write!(f, "{denied}"),
            (Some(user), Denied::Command { name }) => {
                write!(f, "NOPERM User {user} has no permissions to run the '{name}' command")
            }
            (Some(_), Denied::Key) => f.write_str("NOPERM No permissions to access a key"),
            (Some(_), Denied::Channel) => f.write_str("NOPERM No permissions to access a channel"),
        }
    }
}

/// Why AUTH (or HELLO AUTH) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Unknown user, disabled user or wrong password: Redis gives the same answer for all three.
    #[error("WRONGPASS invalid username-password pair or user is disabled.")]
    WrongPass,
}

impl AuthError {
    /// The exact Redis error reply, without the leading `-` and the CRLF.
    pub fn reply_text(&self) -> &'static str {
        match self {
            AuthError::WrongPass => "WRONGPASS invalid username-password pair or user is disabled.",
        }
    }
}

/// Why an ACL file cannot be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AclError {
    /// The file cannot be read.
    #[error("cannot read ACL file {}: {source}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// A line Redis would refuse too; `path` is set when the text came from a file.
    #[error("{}line {line}: {message}", file_prefix(.path.as_deref()))]
    Line { path: Option<PathBuf>, line: usize, message: String },
}

fn file_prefix(path: Option<&Path>) -> String {
    path.map(|p| format!("{} ", p.display())).unwrap_or_default()
}
