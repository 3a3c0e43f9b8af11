//! # RedisForge fuzz targets
//!
//! # Layout
//! - [`targets`]: the three checks, each a `fn(&[u8])` that panics when the proxy's pure core
//!   misbehaves on the input: [`targets::resp_request`] (request framing), [`targets::resp_scan`]
//!   (reply boundaries, checked against `redis-protocol`), [`targets::route`] (request → route).
//! - [`replay`]: the driver used when libFuzzer is not available: the checked-in corpus, then
//!   deterministic mutations of it, bounded in time.
//!
//! `fuzz_targets/*.rs` wire each check either to libFuzzer (feature `libfuzzer`, the default, for
//! `cargo fuzz`) or to [`replay::main`].
#![forbid(unsafe_code)]

pub mod replay;
pub mod targets;
