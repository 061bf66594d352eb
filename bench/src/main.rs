//! The `defibus-bench` binary: the bench library behind its own command line (the same one
//! `defibus bench` runs in-process).

use std::process::ExitCode;

use clap::Parser;
use defibus_bench::Cli;

/// jemalloc, not the system allocator: it keeps freed memory for reuse, so the logs' 1 MiB
/// write chunks and the connections' receive buffers come back warm instead of as fresh pages
/// the kernel must zero (docs/ARCHITECTURE.md, "Memory").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // Progress lines share stderr with logs: only warnings and errors by default.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match defibus_bench::run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("defibus-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
