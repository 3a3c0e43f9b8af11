//! `redisforge-proxy`: parse flags, load the config, start logging, run the proxy.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use redisforge_proxy::config::{Config, LogFormat};
use redisforge_proxy::server;

/// Slot-aware Redis Cluster proxy: one RESP endpoint in front of a whole cluster.
#[derive(Parser, Debug)]
#[command(name = "redisforge-proxy", version, about)]
struct Cli {
    /// The TOML config file.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
    /// Validate the config (and the files it names) and exit: 0 when valid, 1 with the reason.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("redisforge-proxy: {error}");
            return ExitCode::FAILURE;
        }
    };
    if cli.check {
        if let Err(error) = server::prepare(&config) {
            eprintln!("redisforge-proxy: {error}");
            return ExitCode::FAILURE;
        }
        println!("redisforge-proxy: {} is valid", cli.config.display());
        return ExitCode::SUCCESS;
    }
    init_logging(&config);
    // One worker thread is the current-thread scheduler: no work stealing and no cross-thread
    // wake-ups.
    let mut runtime = match config.worker_threads() {
        1 => tokio::runtime::Builder::new_current_thread(),
        threads => {
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            runtime.worker_threads(threads);
            runtime
        }
    };
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("redisforge-proxy: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "proxy stopped");
            eprintln!("redisforge-proxy: {error}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers the proxy can still be stopped by SIGKILL; run until then.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
