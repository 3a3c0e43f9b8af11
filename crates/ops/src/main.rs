//! `redisforge-ops`: operations toolkit for the cluster behind RedisForge.
//!
//! Not built yet: the cluster, backup, certs and smoke verbs of `shared/SPEC.md` arrive with their
//! issues. Until then the binary says so instead of pretending.
#![forbid(unsafe_code)]

use clap::Parser;

/// Command-line interface; verbs are added as they are implemented.
#[derive(Parser, Debug)]
#[command(name = "redisforge-ops", version, about = "Operations toolkit for RedisForge")]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    eprintln!("redisforge-ops: no verbs are implemented yet (see README, 'Not done yet')");
    std::process::exit(2);
}
