//! `defibus-bench`: load generation and latency measurement for DeFiBus-rs, as a library so
//! the root CLI runs it in-process (`defibus bench ...`) and as the `defibus-bench` binary.
//!
//! Module map: [`cli`] the command line; [`target`] the cluster under test (embedded or
//! remote); [`measure`] the one measurement loop (warm-up, window, progress, open-loop
//! pacing); [`latency`] histograms and percentiles; [`workloads`] one module per workload;
//! [`baselines`] the raw TCP and raw-protocol baselines; [`report`] figures, ratios, table and
//! JSON; [`cpu`] the CPU time per operation, split between broker and clients; [`goals`] the
//! DESIGN §8 goals; [`plot`] the SVG and PNG plots; [`resources`] the
//! open files and memory the large workloads hold and may hold.

#![deny(unsafe_code)]

mod baselines;
pub mod cli;
mod cpu;
mod goals;
mod latency;
mod measure;
mod plot;
mod report;
mod resources;
mod target;
mod workloads;

use std::process::ExitCode;

pub use crate::cli::Cli;

use crate::baselines::{tcp_relay, tcp_stream};
use crate::cli::{Flush, GlobalArgs, PlotArgs, ProduceArgs, RrArgs, WorkloadCommand};
use crate::report::{Baseline, LoadAverage, Report, Section};
use crate::target::Target;
use crate::workloads::{
    consume, delayed, e2e, fanout, overhead, produce, proxy, retry, rr, scale, tls, transactional,
};

/// Runs one parsed command line: starts the target, runs the workload, prints the table and
/// writes the JSON and plots asked for. Fails on a broken run; under `--smoke`, the exit
/// code also says whether every figure was sane.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let global = &cli.global;
    if let WorkloadCommand::Plot(args) = &cli.workload {
        return replot(global, args);
    }
    let load_at_start = LoadAverage::now();
    let target = Target::start(global)?;
    let described = target.describe();
    let sections = run_workload(&target, global, &cli.workload);
    target.shutdown()?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let report = Report::new(command, described, load_at_start, sections?);
    print!("{}", report.table());
    if let Some(path) = &global.json {
        report.write_json(path)?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(dir) = &global.plot_dir {
        for path in plot::write_all(&report.sections, dir)? {
            eprintln!("wrote {}", path.display());
        }
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

/// `plot`: draws the plots of a saved report; nothing is started or measured.
fn replot(global: &GlobalArgs, args: &PlotArgs) -> anyhow::Result<ExitCode> {
    let dir = global.plot_dir.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "plot needs --plot-dir: where to draw the plots of {}",
            args.from.display()
        )
    })?;
    let sections = report::read_sections(&args.from)?;
    for path in plot::write_all(&sections, dir)? {
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn run_workload(
    target: &Target,
    global: &GlobalArgs,
    workload: &WorkloadCommand,
) -> anyhow::Result<Vec<Section>> {
    match workload {
        WorkloadCommand::Produce(args) if args.replicas > 1 => {
            Ok(produce::run_replicated(target, global, args)?
                .into_iter()
                .map(Section::from)
                .collect())
        }
        WorkloadCommand::Produce(args) => {
            let baseline = stream_baseline(global, args)?;
            if args.sizes.is_empty() {
                Ok(vec![produce::run(target, global, args, baseline)?.into()])
            } else {
                Ok(vec![
                    produce::run_sizes(target, global, args, baseline.as_ref())?.into(),
                ])
            }
        }
        WorkloadCommand::Rr(args) => {
            // The relay is a closed-loop baseline: an open loop stands alone.
            let baseline = if args.rate.is_none() {
                relay_baseline(global, args)?
            } else {
                None
            };
            Ok(vec![rr::run(target, global, args, baseline)?.into()])
        }
        WorkloadCommand::Consume(args) => Ok(vec![consume::run(target, global, args)?.into()]),
        WorkloadCommand::Retry(args) => Ok(vec![retry::run(target, global, args)?.into()]),
        WorkloadCommand::Delayed(args) => Ok(delayed::run(target, global, args)?
            .into_iter()
            .map(Section::from)
            .collect()),
        WorkloadCommand::Transactional(args) => {
            Ok(vec![transactional::run(target, global, args)?.into()])
        }
        WorkloadCommand::E2e(args) => Ok(vec![e2e::run(target, global, args)?.into()]),
        WorkloadCommand::Fanout(args) => fanout::run(target, global, args),
        WorkloadCommand::Scale(args) => scale::run(target, global, args),
        WorkloadCommand::Overhead(args) => Ok(vec![overhead::run(target, global, args)?.into()]),
        WorkloadCommand::Tls(args) => Ok(tls::run(target, global, args)?
            .into_iter()
            .map(Section::from)
            .collect()),
        WorkloadCommand::Proxy(args) => Ok(proxy::run(target, global, args)?
            .into_iter()
            .map(Section::from)
            .collect()),
        WorkloadCommand::All(all) => {
            let produce_async = all.produce(Flush::Async);
            let produce_sync = all.produce(Flush::Sync);
            let rr_args = all.rr();
            // One stream baseline bounds both produce runs and the size sweep.
            let stream = stream_baseline(global, &produce_async)?;
            let mut sections: Vec<Section> = vec![
                produce::run(target, global, &produce_async, stream.clone())?.into(),
                produce::run(target, global, &produce_sync, stream.clone())?.into(),
            ];
            let client_rr = rr::run(target, global, &rr_args, relay_baseline(global, &rr_args)?)?;
            // Not beside `rr`: its responder is the default threaded one.
            let overhead = overhead::run(target, global, &all.overhead())?;
            sections.push(client_rr.into());
            sections.push(overhead.into());
            sections.push(rr::run(target, global, &all.rr_open(), None)?.into());
            sections.push(consume::run(target, global, &all.consume())?.into());
            sections.push(e2e::run(target, global, &all.e2e())?.into());
            sections.extend(fanout::run(target, global, &all.fanout())?);
            sections.extend(scale::run(target, global, &all.scale())?);
            sections.push(
                produce::run_sizes(target, global, &all.produce_sizes(), stream.as_ref())?.into(),
            );
            Ok(sections)
        }
        WorkloadCommand::Plot(_) => anyhow::bail!("plot runs no workload"),
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
