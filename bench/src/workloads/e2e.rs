//! Publish → consume latency for a sweep of offered rates up to saturation (see
//! [`super::delivery`] for how one rate is measured). With `--rates auto` the rate grows
//! geometrically until the first rate the system cannot keep up with.

use client::ConsumeMode;

use super::delivery::{self, Plan, Subscriber};
use crate::cli::{E2eArgs, GlobalArgs, Rates};
use crate::measure::thousands;
use crate::report::{Measured, Step, Sweep};
use crate::target::Target;

pub const NAME: &str = "e2e";
/// The rates of a `--smoke` run: one light, one busier; enough to see the sweep work.
const SMOKE_RATES: [f64; 2] = [500.0, 2000.0];

pub fn run(target: &Target, global: &GlobalArgs, args: &E2eArgs) -> anyhow::Result<Sweep> {
    anyhow::ensure!(
        args.rate_factor > 1.0,
        "--rate-factor must be above 1, not {}",
        args.rate_factor
    );
    let topic = target.create_topic(global, NAME, args.queues, args.flush)?;
    let (rates, stop_at_saturation) = match (&args.rates, global.smoke) {
        (_, true) => (SMOKE_RATES.to_vec(), false),
        (Rates::List(rates), false) => (rates.clone(), false),
        (Rates::Auto, false) => {
            let rates = (0..args.rate_steps_max)
                .map(|step| args.rate_start * args.rate_factor.powi(step as i32))
                .collect();
            (rates, true)
        }
    };
    let mut steps = Vec::new();
    for (index, &rate) in rates.iter().enumerate() {
        let plan = Plan {
            label: format!("{NAME} {}/s", thousands(rate)),
            topic: &topic,
            producers: args.producers,
            rate_per_s: rate,
            message_bytes: args.message_bytes,
            linger: args.linger,
            batch_bytes: args.batch_bytes,
            in_flight: args.in_flight,
            // A fresh group per rate starts at the end: nothing left from the last rate.
            subscribers: (0..args.consumers)
                .map(|_| Subscriber {
                    group: format!("bench-e2e-{index}"),
                    mode: ConsumeMode::Clustering,
                })
                .collect(),
            window: global.window(args.duration),
            drain: global.drain(args.drain),
        };
        let delivered = delivery::run(target, global, &plan)?;
        let saturated = delivered.saturated;
        steps.push(Step {
            label: thousands(rate),
            x: rate,
            measured: Measured::Latency(delivered.total),
            offered_per_s: Some(rate),
            saturated: Some(saturated),
            undelivered: delivered.undelivered,
        });
        if saturated && stop_at_saturation {
            break;
        }
    }
    let finding = saturation_finding(&steps);
    Ok(Sweep {
        workload: NAME.into(),
        setup: format!(
            "{} producer(s) open loop, {} consumer(s) in one group, {} B, linger {:?}, {} \
             queue(s), {} flush; latency from each message's intended send time (corrected \
             for coordinated omission)",
            args.producers,
            args.consumers,
            args.message_bytes,
            args.linger,
            args.queues,
            args.flush.name()
        ),
        axis: "offered/s".into(),
        steps,
        ratio: None,
        finding: Some(finding),
    })
}

/// Says where the sweep saturated: the first rate not kept up with, and the highest kept up.
pub fn saturation_finding(steps: &[Step]) -> String {
    let kept_up = steps
        .iter()
        .filter(|s| s.saturated == Some(false))
        .map(|s| s.x)
        .fold(None, |best: Option<f64>, x| {
            Some(best.map_or(x, |b| b.max(x)))
        });
    let first_saturated = steps.iter().find(|s| s.saturated == Some(true));
    match (first_saturated, kept_up) {
        (Some(step), Some(best)) => format!(
            "saturates at {} msg/s offered ({} msg/s delivered); highest rate kept up: {} msg/s",
            step.label,
            thousands(step.measured.throughput().ops_per_s),
            thousands(best)
        ),
        (Some(step), None) => format!(
            "saturated already at the first rate, {} msg/s offered ({} msg/s delivered)",
            step.label,
            thousands(step.measured.throughput().ops_per_s)
        ),
        (None, Some(best)) => format!(
            "kept up at every rate tried, up to {} msg/s: not saturated",
            thousands(best)
        ),
        (None, None) => "no rate measured".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::throughput;

    fn step(x: f64, saturated: bool) -> Step {
        Step {
            label: thousands(x),
            x,
            measured: Measured::Throughput(throughput(x * 0.9, 1.0)),
            offered_per_s: Some(x),
            saturated: Some(saturated),
            undelivered: 0,
        }
    }

    #[test]
    fn the_finding_names_the_saturation_point() {
        let steps = [step(1000.0, false), step(2000.0, false), step(4000.0, true)];
        let finding = saturation_finding(&steps);
        assert!(finding.contains("saturates at 4,000"), "{finding}");
        assert!(finding.contains("kept up: 2,000"), "{finding}");
        assert!(saturation_finding(&steps[..2]).contains("not saturated"));
        assert!(saturation_finding(&steps[2..]).contains("already at the first"));
    }
}
