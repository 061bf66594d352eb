//! `defibus held`: the delayed and half (transactional) messages a topic's queues hold
//! (docs/ARCHITECTURE.md §13.3-§13.4), through the `HeldStats` admin command.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use client::Admin;
use protocol::names::Topic;

use super::shared::BusArgs;

/// `defibus held ...`
#[derive(Args, Debug)]
pub struct HeldArgs {
    #[command(flatten)]
    bus: BusArgs,
    #[command(subcommand)]
    command: HeldCommand,
}

#[derive(Subcommand, Debug)]
enum HeldCommand {
    /// Per queue of a topic: delayed messages waiting for their time, halves waiting for
    /// their outcome, the held log's next offset and the memory of the queue's timer index.
    Stats {
        /// The topic, [area]-[serviceId].
        #[arg(long)]
        topic: Topic,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: HeldArgs) -> anyhow::Result<ExitCode> {
    let client = args.bus.connect()?;
    let admin = Admin::new(&client);
    match args.command {
        HeldCommand::Stats { topic, json } => {
            let answers = admin.held_stats(&topic.to_string())?;
            if json {
                let rows: Vec<_> = answers
                    .iter()
                    .map(|(broker, queue, s)| {
                        serde_json::json!({
                            "broker": broker,
                            "queue": queue,
                            "pending_delayed": s.pending_delayed,
                            "pending_half": s.pending_half,
                            "held_next_offset": s.next_offset,
                            "timer_bytes": s.timer_bytes,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<24} {:>5} {:>15} {:>12} {:>16} {:>12}",
                    "broker",
                    "queue",
                    "pending_delayed",
                    "pending_half",
                    "held_next_offset",
                    "timer_bytes"
                );
                for (broker, queue, s) in &answers {
                    println!(
                        "{broker:<24} {queue:>5} {:>15} {:>12} {:>16} {:>12}",
                        s.pending_delayed, s.pending_half, s.next_offset, s.timer_bytes
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
