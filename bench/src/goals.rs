//! The DESIGN §8 performance goals, each a ratio measured in one run: ours over a baseline, or
//! a sweep's last step over its first.

use std::fmt;

use serde::Serialize;

use crate::report::{Metric, Section};

/// A bound on a goal's ratio.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    AtMost(f64),
    AtLeast(f64),
}

/// Where a goal's ratio comes from.
#[derive(Clone, Copy, Debug)]
pub enum Source {
    /// Ours / baseline of a comparison, at the settings the goal is stated for.
    Comparison {
        workload: &'static str,
        metric: Metric,
        message_bytes: usize,
        /// Producers or requesters the goal is stated for; `None` for any.
        concurrency: Option<usize>,
    },
    /// A sweep's last step over its first, when it spans exactly `first..=last`.
    SweepEnds {
        workload: &'static str,
        metric: Metric,
        first: f64,
        last: f64,
    },
}

/// One goal: a ratio, and the bound it must keep.
#[derive(Clone, Copy, Debug)]
pub struct Goal {
    pub text: &'static str,
    pub source: Source,
    pub bound: Bound,
}

/// DESIGN §8: request-reply vs a two-hop relay, produce vs one raw TCP stream, flat cost over
/// queues and connections, the client against the bare protocol.
pub const GOALS: [Goal; 9] = [
    Goal {
        text: "rr p50 ≤ 3× two-hop TCP relay",
        source: Source::Comparison {
            workload: "rr",
            metric: Metric::P50Us,
            message_bytes: 256,
            concurrency: Some(1),
        },
        bound: Bound::AtMost(3.0),
    },
    Goal {
        text: "rr p99 ≤ 4× two-hop TCP relay",
        source: Source::Comparison {
            workload: "rr",
            metric: Metric::P99Us,
            message_bytes: 256,
            concurrency: Some(1),
        },
        bound: Bound::AtMost(4.0),
    },
    Goal {
        text: "produce async ≥ 50% of raw TCP stream MB/s",
        source: Source::Comparison {
            workload: "produce-async",
            metric: Metric::MbPerS,
            message_bytes: 1024,
            concurrency: None,
        },
        bound: Bound::AtLeast(0.5),
    },
    Goal {
        text: "produce sync ≥ 25% of raw TCP stream MB/s",
        source: Source::Comparison {
            workload: "produce-sync",
            metric: Metric::MbPerS,
            message_bytes: 1024,
            concurrency: None,
        },
        bound: Bound::AtLeast(0.25),
    },
    // "Within 10%" is read as "loses at most 10%": more throughput at scale costs nothing.
    Goal {
        text: "flat cost: msg/s at 10,000 queues ≥ 90% of 1",
        source: Source::SweepEnds {
            workload: "scale-queues",
            metric: Metric::OpsPerS,
            first: 1.0,
            last: 10_000.0,
        },
        bound: Bound::AtLeast(0.9),
    },
    Goal {
        text: "flat cost: msg/s at 1,000 connections ≥ 90% of 1",
        source: Source::SweepEnds {
            workload: "scale-connections",
            metric: Metric::OpsPerS,
            first: 1.0,
            last: 1000.0,
        },
        bound: Bound::AtLeast(0.9),
    },
    Goal {
        text: "client rr p50 ≤ 1.2× raw-protocol rr",
        source: Source::Comparison {
            workload: "client-overhead",
            metric: Metric::P50Us,
            message_bytes: 256,
            concurrency: Some(1),
        },
        bound: Bound::AtMost(1.2),
    },
    Goal {
        text: "TLS rr p50 ≤ 1.15× plaintext",
        source: Source::Comparison {
            workload: "tls-rr",
            metric: Metric::P50Us,
            message_bytes: 256,
            concurrency: Some(1),
        },
        bound: Bound::AtMost(1.15),
    },
    Goal {
        text: "TLS produce ≥ 80% of plaintext MB/s",
        source: Source::Comparison {
            workload: "tls-produce",
            metric: Metric::MbPerS,
            message_bytes: 1024,
            concurrency: None,
        },
        bound: Bound::AtLeast(0.8),
    },
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Miss,
    /// The workload ran without its baseline.
    NoBaseline,
    /// The workload ran at other settings than the goal is stated for.
    NotApplicable,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "PASS",
            Verdict::Miss => "MISS",
            Verdict::NoBaseline => "no baseline",
            Verdict::NotApplicable => "n/a (other settings)",
        })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct GoalCheck {
    pub goal: &'static str,
    pub bound: Bound,
    pub ratio: Option<f64>,
    pub verdict: Verdict,
}

/// Checks every goal whose workload ran.
pub fn check(sections: &[Section]) -> Vec<GoalCheck> {
    GOALS
        .iter()
        .filter_map(|goal| {
            let (applies, ratio) = match goal.source {
                Source::Comparison {
                    workload,
                    metric,
                    message_bytes,
                    concurrency,
                } => {
                    let comparison = sections.iter().find_map(|s| match s {
                        Section::Comparison(c) if c.comparison.workload == workload => {
                            Some(&c.comparison)
                        }
                        _ => None,
                    })?;
                    let applies = comparison.message_bytes == message_bytes
                        && concurrency.is_none_or(|n| n == comparison.concurrency);
                    (applies, comparison.ratio(metric))
                }
                Source::SweepEnds {
                    workload,
                    metric,
                    first,
                    last,
                } => {
                    let sweep = sections.iter().find_map(|s| match s {
                        Section::Sweep(sweep) if sweep.workload == workload => Some(sweep),
                        _ => None,
                    })?;
                    let (from, to) = (sweep.steps.first()?, sweep.steps.last()?);
                    let applies = from.x == first && to.x == last;
                    let ratio = match (from.measured.get(metric), to.measured.get(metric)) {
                        (Some(a), Some(b)) if a > 0.0 => Some(b / a),
                        _ => None,
                    };
                    (applies, ratio)
                }
            };
            let verdict = match ratio {
                _ if !applies => Verdict::NotApplicable,
                None => Verdict::NoBaseline,
                Some(r) => match goal.bound {
                    Bound::AtMost(max) if r <= max => Verdict::Pass,
                    Bound::AtLeast(min) if r >= min => Verdict::Pass,
                    _ => Verdict::Miss,
                },
            };
            Some(GoalCheck {
                goal: goal.text,
                bound: goal.bound,
                ratio,
                verdict,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{produce, sweep};

    #[test]
    fn goals_pass_or_miss_on_the_ratio() {
        let checks = check(&[
            produce("produce-async", 2000.0, 4000.0).into(),
            produce("produce-sync", 900.0, 4000.0).into(),
        ]);
        assert_eq!(checks.len(), 2);
        assert_eq!(checks[0].verdict, Verdict::Pass);
        assert_eq!(checks[1].verdict, Verdict::Miss);
    }

    #[test]
    fn goals_apply_only_at_their_settings() {
        let mut other_size = produce("produce-async", 4000.0, 4000.0);
        other_size.message_bytes = 100;
        let mut no_baseline = produce("produce-sync", 4000.0, 4000.0);
        no_baseline.baseline = None;
        let checks = check(&[other_size.into(), no_baseline.into()]);
        assert_eq!(checks[0].verdict, Verdict::NotApplicable);
        assert_eq!(checks[1].verdict, Verdict::NoBaseline);
    }

    #[test]
    fn flat_cost_compares_a_sweeps_ends_over_the_stated_span() {
        let full = sweep(
            "scale-queues",
            &[(1.0, 1000.0), (100.0, 990.0), (10_000.0, 920.0)],
        );
        let short = sweep("scale-connections", &[(1.0, 1000.0), (10.0, 500.0)]);
        let checks = check(&[full.into(), short.into()]);
        assert_eq!(checks.len(), 2);
        assert_eq!(checks[0].verdict, Verdict::Pass);
        assert!((checks[0].ratio.unwrap() - 0.92).abs() < 1e-9);
        assert_eq!(checks[1].verdict, Verdict::NotApplicable);
    }
}
