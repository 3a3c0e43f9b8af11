//! `redisforge-ops`: operations toolkit for the cluster behind RedisForge.
//!
//! The verbs live in the library (`lib.rs`): one module per verb group of `shared/SPEC.md`, each
//! owning its clap arguments and a `run`.
//!
//! Exit status: 0 on success, 1 when a verb fails (the message on stderr says why; `cluster check`
//! and `smoke` also exit 1 when they find problems, after printing their report), 2 for usage
//! errors (clap's own).
#![forbid(unsafe_code)]

use redisforge_ops::{backup, certs, cluster, progress, smoke};

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Command-line interface.
#[derive(Parser, Debug)]
#[command(name = "redisforge-ops", version, about = "Operations toolkit for RedisForge")]
struct Cli {
    /// No progress display (a bar on a terminal, a line every few seconds elsewhere).
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

/// The verb groups; each new group is one more variant here and one more module.
#[derive(Subcommand, Debug)]
enum Command {
    /// Back up every master to file://, s3://, gs:// or az:// storage; `backup list`, `backup verify`.
    Backup(backup::BackupCommand),
    /// Restore a backup (URL/ID) into fresh, empty cluster-enabled nodes.
    Restore(backup::RestoreArgs),
    /// TLS certificates for development and mutual TLS.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Build, check and reshape the Redis Cluster.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// End-to-end check of an endpoint: PING, SET/GET, MGET and DEL across slots, pub/sub.
    Smoke(smoke::SmokeArgs),
}

/// `certs …`
#[derive(Subcommand, Debug)]
enum CertsCommand {
    /// Generate a CA, a server certificate (for the proxy and Redis nodes) and a client certificate.
    Generate(certs::GenerateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    progress::init(cli.quiet);
    // Each verb keeps its own error enum; here they only need to be printed.
    let result: Result<(), Box<dyn std::error::Error>> = match &cli.command {
        Command::Certs(CertsCommand::Generate(args)) => certs::run(args).map_err(Into::into),
        Command::Cluster(command) => cluster::run(command).map_err(Into::into),
        Command::Smoke(args) => smoke::run(args).map_err(Into::into),
        Command::Backup(command) => backup::run(command).map_err(Into::into),
        Command::Restore(args) => backup::run_restore(args).map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("redisforge-ops: {err}");
            ExitCode::FAILURE
        }
    }
}
