//! `defibus-proxy`: the proxy alone; `defibus proxy` is the same command in the root CLI.

use clap::Parser;

/// DeFiBus proxy: HTTP/1.1 JSON and WebSocket access to the bus (see /openapi.json).
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    args: proxy::cli::ProxyArgs,
}

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match proxy::cli::cli_main(&cli.args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}
