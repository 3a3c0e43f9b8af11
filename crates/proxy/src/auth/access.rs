//! Who a client is: the users it may log in as, what a client that never logs in may do, and the
//! reload of the ACL file on SIGHUP.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use super::{AclError, AuthError, User, Users};
use crate::command::CommandTable;
use crate::config::AuthConfig;

/// The client-facing login rules, shared by every session.
///
/// Sessions cache their [`User`]; when [`Access::generation`] moves (a reload), they look their
/// user up again, so a user turned `off` in the file is refused from its next command on.
pub struct Access {
    users: ArcSwap<Users>,
    generation: AtomicU64,
    acl_file: Option<PathBuf>,
    /// What a client that never sends AUTH is: `None` means it must log in first.
    anonymous: Anonymous,
    /// The password-less `default` user every client of a proxy without an ACL file is, shared
    /// rather than built per connection (it is ~200 bytes an idle client would otherwise keep).
    unrestricted: Arc<User>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Anonymous {
    /// No ACL file: every client is an unrestricted `default` user, as on a Redis node without
    /// `requirepass`.
    Unrestricted,
    /// `allow_anonymous = true` with an ACL file: the file's `default` user when it defines one
    /// (if it is on and `nopass`; else clients must log in), otherwise unrestricted.
    DefaultUser,
    /// An ACL file without `allow_anonymous`: `-NOAUTH` until the client logs in.
    Refused,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("acl_file", &self.acl_file)
            .field("anonymous", &self.anonymous)
            .field("users", &self.users.load().len())
            .finish()
    }
}

impl Access {
    /// The login rules for `[auth]` (absent: open, as SPEC.md allows on loopback listeners).
    ///
    /// # Errors
    /// [`AclError`] when the ACL file cannot be read or parsed.
    pub fn from_config(auth: Option<&AuthConfig>, table: &CommandTable) -> Result<Access, AclError> {
        let acl_file = auth.and_then(|a| a.acl_file.clone());
        let users = match &acl_file {
            Some(path) => Users::load(path, table)?,
            None => Users::default(),
        };
        let anonymous = match (&acl_file, auth.is_some_and(|a| a.allow_anonymous)) {
            (None, _) => Anonymous::Unrestricted,
            (Some(_), true) => Anonymous::DefaultUser,
            (Some(_), false) => Anonymous::Refused,
        };
        Ok(Access {
            users: ArcSwap::from_pointee(users),
            generation: AtomicU64::new(0),
            acl_file,
            anonymous,
            unrestricted: Arc::new(User::unrestricted("default")),
        })
    }

    /// Whether users come from an ACL file (and requests are checked against their rules).
    pub fn checks_permissions(&self) -> bool {
        self.acl_file.is_some()
    }

    /// The user a new connection starts as; `None`: it must AUTH first.
    pub fn anonymous_user(&self) -> Option<Arc<User>> {
        match self.anonymous {
            Anonymous::Unrestricted => Some(Arc::clone(&self.unrestricted)),
            // The file's `default` user when it needs no password; turned off or with passwords,
            // every client must log in, as on Redis (`clientSetDefaultAuth`).
            Anonymous::DefaultUser => match self.users.load().get("default") {
                Some(default) => (default.enabled && default.is_nopass()).then_some(default),
                None => Some(Arc::clone(&self.unrestricted)),
            },
            Anonymous::Refused => None,
        }
    }

    /// Logs a client in.
    ///
    /// Without an ACL file there is only the password-less `default` user, which Redis accepts
    /// with any password.
    ///
    /// # Errors
    /// [`AuthError::WrongPass`] for an unknown or disabled user or a wrong password.
    pub fn authenticate(&self, name: &str, password: &[u8]) -> Result<Arc<User>, AuthError> {
        if self.acl_file.is_none() {
            return match name {
                "default" => Ok(Arc::clone(&self.unrestricted)),
                _ => Err(AuthError::WrongPass),
            };
        }
        self.users.load().authenticate(name, password)
    }

    /// Whether `AUTH <password>` (as `default`) has a password to check: not without an ACL file,
    /// nor when the file's `default` user is `nopass` (takes any password), which Redis reports as
    /// a configuration error. A file without `default` has no such user: the login fails.
    pub fn has_passwords(&self) -> bool {
        self.acl_file.is_some() && !self.users.load().get("default").is_some_and(|user| user.is_nopass())
    }

    /// Increases with every successful reload.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether a user of that name exists, on or off (`CLIENT KILL USER`): `default` always does,
    /// as on Redis (anonymous clients run as it), the others as the ACL file has them.
    pub fn user_exists(&self, name: &str) -> bool {
        name == "default" || (self.acl_file.is_some() && self.users.load().get(name).is_some())
    }

    /// `name`'s current definition, if it still exists and is on.
    pub fn current(&self, name: &str) -> Option<Arc<User>> {
        self.users.load().get(name).filter(|u| u.enabled)
    }

    /// Re-reads the ACL file; on error the users in force stay.
    ///
    /// # Errors
    /// [`AclError`] naming the file and line.
    pub fn reload(&self, table: &CommandTable) -> Result<Option<usize>, AclError> {
        let Some(path) = &self.acl_file else {
            return Ok(None);
        };
        let users = Users::load(path, table)?;
        let count = users.len();
        self.users.store(Arc::new(users));
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(Some(count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(text: &str, allow_anonymous: bool) -> (Access, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("users.acl");
        std::fs::write(&path, text).expect("write acl");
        let config = AuthConfig { acl_file: Some(path), allow_anonymous };
        (Access::from_config(Some(&config), &CommandTable::builtin()).expect("valid acl"), dir)
    }

    #[test]
    fn without_a_file_everyone_is_the_unrestricted_default_user() {
        let access = Access::from_config(None, &CommandTable::builtin()).expect("open");
        assert_eq!(access.anonymous_user().map(|u| u.name.clone()).as_deref(), Some("default"));
        assert!(access.authenticate("default", b"anything").is_ok());
        assert!(access.authenticate("alice", b"x").is_err());
        assert!(!access.checks_permissions());
    }

    #[test]
    fn with_a_file_clients_must_log_in_unless_anonymous_is_allowed() {
        let (refused, _dir) = access("user alice on >pw +@all ~*\n", false);
        assert!(refused.anonymous_user().is_none());
        assert!(refused.authenticate("alice", b"pw").is_ok());
        assert!(refused.authenticate("alice", b"no").is_err());
        let (allowed, _dir) = access("user default on nopass +get ~*\n", true);
        let anonymous = allowed.anonymous_user().expect("anonymous allowed");
        assert_eq!(anonymous.name, "default");
        assert!(!allowed.has_passwords(), "AUTH <password> with a nopass default is Redis' configuration error");
        // A default user turned off lets no one in without AUTH, as on Redis.
        let (off, _dir) = access("user default off nopass +@all ~*\n", true);
        assert!(off.anonymous_user().is_none(), "an off default user is not the anonymous user");
        // Nor one with a password: Redis authenticates a new client only as a `nopass` default.
        let (guarded, _dir) = access("user default on >pw +@all ~*\n", true);
        assert!(guarded.anonymous_user().is_none(), "a default user with a password must log in");
        assert!(guarded.authenticate("default", b"pw").is_ok());
        let (none, _dir) = access("user alice on >pw +@all ~*\n", true);
        assert_eq!(
            none.anonymous_user().map(|u| u.name.clone()).as_deref(),
            Some("default"),
            "no default: unrestricted"
        );
        assert!(none.has_passwords(), "no default user: AUTH <password> is a failed login");
    }

    #[test]
    fn reload_swaps_users_and_moves_the_generation() {
        let (access, dir) = access("user alice on >pw +@all ~*\n", false);
        assert!(access.current("alice").is_some());
        std::fs::write(dir.path().join("users.acl"), "user alice off >pw +@all ~*\n").expect("rewrite");
        assert_eq!(access.reload(&CommandTable::builtin()).expect("reload"), Some(1));
        assert_eq!(access.generation(), 1);
        assert!(access.current("alice").is_none(), "a user turned off is gone");
        std::fs::write(dir.path().join("users.acl"), "user alice on +nosuchcommand\n").expect("rewrite");
        assert!(access.reload(&CommandTable::builtin()).is_err());
        assert_eq!(access.generation(), 1, "a bad file changes nothing");
    }
}
