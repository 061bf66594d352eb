//! `defibus-nameserver`: the broker registry and topic-route server, in the foreground.

use std::process::ExitCode;

use clap::Parser;
use nameserver::cli::{NameserverArgs, cli_main};

/// DeFiBus nameserver: brokers register with it every few seconds, clients ask it where a
/// topic's queues live. A broker that stops registering is dropped after broker_expiry_ms.
/// Run several for redundancy; each is independent. Stops cleanly on SIGTERM or SIGINT.
/// Logging follows RUST_LOG (default: info).
#[derive(Parser)]
#[command(name = "defibus-nameserver", version)]
struct Cli {
    #[command(flatten)]
    args: NameserverArgs,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli_main(&cli.args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
