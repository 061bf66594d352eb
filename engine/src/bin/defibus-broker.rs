//! `defibus-broker`: runs one broker until SIGTERM or SIGINT, then shuts it down cleanly.

use std::process::ExitCode;

use clap::Parser;
use engine::cli::{BrokerArgs, cli_main};

/// jemalloc, not the system allocator: it keeps freed memory for reuse, so the logs' 1 MiB
/// write chunks and the connections' receive buffers come back warm instead of as fresh pages
/// the kernel must zero (docs/ARCHITECTURE.md, "Memory").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "defibus-broker", version)]
struct Cli {
    #[command(flatten)]
    args: BrokerArgs,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_micros()
        .init();
    let cli = Cli::parse();
    match cli_main(&cli.args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
