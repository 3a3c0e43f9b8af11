//! `redisforge-ops`: operations toolkit for the cluster behind RedisForge.
//!
//! One module per verb group of `shared/SPEC.md`, each owning its clap arguments and a `run`:
//! [`certs`] now; `cluster`, `backup`/`restore` and `smoke` join [`Command`] as they are built.
//!
//! Exit status: 0 on success, 1 when a verb fails (the message on stderr says why), 2 for usage
//! errors (clap's own).
#![forbid(unsafe_code)]

mod certs;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Command-line interface.
#[derive(Parser, Debug)]
#[command(name = "redisforge-ops", version, about = "Operations toolkit for RedisForge")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The verb groups; each new group is one more variant here and one more module.
#[derive(Subcommand, Debug)]
enum Command {
    /// TLS certificates for development and mutual TLS.
    #[command(subcommand)]
    Certs(CertsCommand),
}

/// `certs …`
#[derive(Subcommand, Debug)]
enum CertsCommand {
    /// Generate a CA, a server certificate (for the proxy and Redis nodes) and a client certificate.
    Generate(certs::GenerateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Each verb keeps its own error enum; here they only need to be printed.
    let result: Result<(), Box<dyn std::error::Error>> = match &cli.command {
        Command::Certs(CertsCommand::Generate(args)) => certs::run(args).map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("redisforge-ops: {err}");
            ExitCode::FAILURE
        }
    }
}
