//! `defibus`: the one command line that fronts every DeFiBus process and tool.
//!
//! Servers (broker, nameserver, GSL, SGS, proxy, standalone) arrive with the issues that build
//! them; each is a thin wrapper over its crate's `run(listener, config, shutdown)`.

mod cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "defibus",
    version,
    about = "DeFiBus-rs: a message bus for financial services (RPC + MQ)",
    long_about = "DeFiBus-rs: a message bus for financial services (RPC + MQ).\n\n\
        Every service is one topic named [area]-[serviceId], e.g. A10-20190001.\n\
        Logs go to stderr; set the level with --log-level or RUST_LOG."
)]
struct Cli {
    /// Log level: error, warn, info, debug or trace (RUST_LOG, if set, takes precedence).
    #[arg(long, global = true, default_value = "info")]
    log_level: log::LevelFilter,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole bus in one process: nameserver + broker (all cores), data in ./defibus-data.
    ///
    /// Prints where each part listens. Stops cleanly on SIGTERM or SIGINT.
    Standalone(cmd::standalone::StandaloneArgs),
    /// Run a nameserver: brokers register with it, clients ask it where a topic's queues live.
    ///
    /// A broker that stops registering is dropped after broker_expiry_ms. Run several for
    /// redundancy; each is independent. Stops cleanly on SIGTERM or SIGINT.
    Nameserver(nameserver::cli::NameserverArgs),
    /// Run a broker: one shard per core, each on its own port (port_base + shard).
    ///
    /// Settings come from the TOML file given with --config (defaults documented in
    /// engine::config and broker.toml); the flags override it. Prints `shard <id> port <port>`
    /// per shard on stdout. Stops cleanly on SIGTERM or SIGINT.
    Broker(engine::cli::BrokerArgs),
    /// Inspect a queue's segment files on disk (read-only).
    #[command(subcommand)]
    Log(cmd::log::LogCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::new()
        .filter_level(cli.log_level)
        .parse_default_env()
        .format_timestamp_micros()
        .init();
    let result = match cli.command {
        Command::Standalone(args) => {
            cmd::standalone::run(args).map(|()| std::process::ExitCode::SUCCESS)
        }
        Command::Nameserver(args) => nameserver::cli::cli_main(&args)
            .map(|()| std::process::ExitCode::SUCCESS)
            .map_err(anyhow::Error::from),
        Command::Broker(args) => engine::cli::cli_main(&args)
            .map(|()| std::process::ExitCode::SUCCESS)
            .map_err(anyhow::Error::from),
        Command::Log(command) => cmd::log::run(command),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            log::error!("{error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
