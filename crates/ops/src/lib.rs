//! `redisforge-ops`' verbs as a library: the binary (`main.rs`) parses the command line and calls
//! them; the end-to-end suites in `tests/` call the same modules.
//!
//! One module per verb group of `shared/SPEC.md`, each owning its clap arguments and a `run`:
//! [`backup`] (backup, restore), [`certs`], [`cluster`] and [`smoke`]. Beside them, [`progress`]
//! shows how far a long one is.
#![forbid(unsafe_code)]

pub mod backup;
pub mod certs;
pub mod cluster;
pub mod progress;
pub mod smoke;
