//! Fan-out: one published stream at a fixed rate, delivered to K consumers, as multicast (K
//! groups, one member each) and broadcast (K members of one broadcast group). Measured as
//! `e2e` is ([`super::delivery`]): delivered msg/s and latency per consumer and in total.

use client::ConsumeMode;

use super::delivery::{self, Plan, Subscriber};
use crate::cli::{FanoutArgs, FanoutMode, GlobalArgs};
use crate::measure::thousands;
use crate::report::{Comparison, Measured, Section, Step, Sweep};
use crate::target::Target;

/// Consumers of a `--smoke` run: enough to fan out, few enough for two debug-build cores.
const SMOKE_CONSUMERS: usize = 2;
/// Offered rate of a `--smoke` run, msg/s.
const SMOKE_RATE: f64 = 500.0;

/// Runs the chosen modes; each gives its total (a comparison without baseline) and its
/// per-consumer figures (a sweep over the consumers).
pub fn run(
    target: &Target,
    global: &GlobalArgs,
    args: &FanoutArgs,
) -> anyhow::Result<Vec<Section>> {
    let modes: &[ConsumeMode] = match args.mode {
        FanoutMode::Multicast => &[ConsumeMode::Clustering],
        FanoutMode::Broadcast => &[ConsumeMode::Broadcast],
        FanoutMode::Both => &[ConsumeMode::Clustering, ConsumeMode::Broadcast],
    };
    let (consumers, rate) = if global.smoke {
        (args.consumers.min(SMOKE_CONSUMERS), SMOKE_RATE)
    } else {
        (args.consumers, args.rate)
    };
    let mut sections = Vec::new();
    for &mode in modes {
        let name = match mode {
            ConsumeMode::Clustering => "fanout-multicast",
            ConsumeMode::Broadcast => "fanout-broadcast",
        };
        let topic = target.create_topic(global, name, args.queues, args.flush)?;
        let subscribers = (0..consumers)
            .map(|i| Subscriber {
                group: match mode {
                    ConsumeMode::Clustering => format!("bench-fanout-{i}"),
                    ConsumeMode::Broadcast => "bench-fanout".into(),
                },
                mode,
            })
            .collect();
        let plan = Plan {
            label: name.into(),
            topic: &topic,
            producers: args.producers,
            rate_per_s: rate,
            message_bytes: args.message_bytes,
            linger: args.linger,
            batch_bytes: args.batch_bytes,
            in_flight: client::config::IN_FLIGHT_SENDS_MAX_DEFAULT,
            subscribers,
            window: global.window(args.duration),
            drain: global.drain(args.drain),
        };
        let delivered = delivery::run(target, global, &plan)?;
        let shape = match mode {
            ConsumeMode::Clustering => format!("{consumers} groups of one member"),
            ConsumeMode::Broadcast => format!("one broadcast group of {consumers} members"),
        };
        let setup = format!(
            "{} msg/s offered by {} producer(s) open loop to {shape}, {} B, {} queue(s), {} \
             flush; latency from each message's intended send time",
            thousands(rate),
            args.producers,
            args.message_bytes,
            args.queues,
            args.flush.name()
        );
        let total_per_s = delivered.total.throughput.ops_per_s;
        let finding = format!(
            "delivered {} msg/s in total, {:.1}% of {consumers} × {} offered{}",
            thousands(total_per_s),
            100.0 * total_per_s / (rate * consumers as f64),
            thousands(rate),
            if delivered.undelivered > 0 {
                format!(
                    "; {} sent in the window never arrived",
                    thousands(delivered.undelivered as f64)
                )
            } else {
                String::new()
            }
        );
        let steps = delivered
            .per_subscriber
            .into_iter()
            .enumerate()
            .map(|(i, latency)| Step {
                label: format!("#{}", i + 1),
                x: (i + 1) as f64,
                measured: Measured::Latency(latency),
                offered_per_s: Some(rate),
                saturated: None,
                undelivered: 0,
            })
            .collect();
        sections.push(
            Comparison {
                workload: name.into(),
                setup: format!("{setup}; total over every consumer"),
                message_bytes: args.message_bytes,
                concurrency: consumers,
                ours: Measured::Latency(delivered.total),
                baseline: None,
            }
            .into(),
        );
        sections.push(
            Sweep {
                workload: format!("{name}-per-consumer"),
                setup: format!("{setup}; each consumer"),
                axis: "consumer".into(),
                steps,
                ratio: None,
                finding: Some(finding),
            }
            .into(),
        );
    }
    Ok(sections)
}
