//! The `defibus-bench` binary: the bench library behind its own command line (the same one
//! `defibus bench` runs in-process).

use std::process::ExitCode;

use clap::Parser;
use defibus_bench::Cli;

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
