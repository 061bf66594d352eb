//! `defibus-bench`: load generation and latency measurement for DeFiBus-rs.
//!
//! Module map: [`cli`] the command line; [`target`] the cluster under test (embedded or
//! remote); [`measure`] the one measurement loop (warm-up, window, progress, histograms);
//! [`workloads`] one module per workload; [`baselines`] one module per raw TCP baseline;
//! [`report`] figures, ratios, table and JSON; [`goals`] the DESIGN §8 goals.

mod baselines;
mod cli;
mod goals;
mod measure;
mod report;
mod target;
mod workloads;

use std::process::ExitCode;

use clap::Parser;

use crate::baselines::{tcp_relay, tcp_stream};
use crate::cli::{Cli, Flush, GlobalArgs, ProduceArgs, RrArgs, WorkloadCommand};
use crate::report::{Baseline, Comparison, Report};
use crate::target::Target;
use crate::workloads::{produce, rr};

fn main() -> ExitCode {
    // Progress lines share stderr with logs: only warnings and errors by default.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("defibus-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let global = &cli.global;
    let target = Target::start(global)?;
    let described = target.describe(global);
    let comparisons = run_workload(&target, global, &cli.workload);
    target.shutdown()?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let report = Report::new(command, described, comparisons?);
    print!("{}", report.table());
    if let Some(path) = &global.json {
        report.write_json(path)?;
        eprintln!("wrote {}", path.display());
    }
    if global.smoke {
        let insane = report.insane_figures();
        if !insane.is_empty() {
            eprintln!(
                "smoke: not sane (zero or not finite): {}",
                insane.join(", ")
            );
            return Ok(ExitCode::FAILURE);
        }
        eprintln!("smoke: every figure is non-zero and finite");
    }
    Ok(ExitCode::SUCCESS)
}

fn run_workload(
    target: &Target,
    global: &GlobalArgs,
    workload: &WorkloadCommand,
) -> anyhow::Result<Vec<Comparison>> {
    match workload {
        WorkloadCommand::Produce(args) => {
            let baseline = stream_baseline(global, args)?;
            Ok(vec![produce::run(target, global, args, baseline)?])
        }
        WorkloadCommand::Rr(args) => {
            let baseline = relay_baseline(global, args)?;
            Ok(vec![rr::run(target, global, args, baseline)?])
        }
        WorkloadCommand::Proxy(args) => crate::workloads::proxy::run(target, global, args),
        WorkloadCommand::All(all) => {
            let produce_async = all.produce(Flush::Async);
            let produce_sync = all.produce(Flush::Sync);
            let rr_args = all.rr();
            // One stream baseline bounds both produce runs.
            let stream = stream_baseline(global, &produce_async)?;
            Ok(vec![
                produce::run(target, global, &produce_async, stream.clone())?,
                produce::run(target, global, &produce_sync, stream)?,
                rr::run(target, global, &rr_args, relay_baseline(global, &rr_args)?)?,
            ])
        }
    }
}

fn stream_baseline(global: &GlobalArgs, args: &ProduceArgs) -> anyhow::Result<Option<Baseline>> {
    global
        .baseline
        .then(|| tcp_stream::run(global.window(args.duration), args.baseline_write_bytes))
        .transpose()
}

fn relay_baseline(global: &GlobalArgs, args: &RrArgs) -> anyhow::Result<Option<Baseline>> {
    global
        .baseline
        .then(|| {
            tcp_relay::run(
                global.window(args.duration),
                args.requesters,
                args.message_bytes,
            )
        })
        .transpose()
}
