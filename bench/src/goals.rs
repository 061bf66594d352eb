//! The DESIGN §8 performance goals, each a ratio of ours to a baseline measured in the same run.

use std::fmt;

use serde::Serialize;

use crate::report::{Comparison, Metric};

/// A bound on ours / baseline.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    AtMost(f64),
    AtLeast(f64),
}

/// One goal: a figure of one workload, at the settings the goal is stated for.
#[derive(Clone, Copy, Debug)]
pub struct Goal {
    pub text: &'static str,
    pub workload: &'static str,
    pub metric: Metric,
    pub bound: Bound,
    pub message_bytes: usize,
    /// Producers or requesters the goal is stated for; `None` for any.
    pub concurrency: Option<usize>,
}

/// DESIGN §8: request-reply vs a two-hop relay, produce vs one raw TCP stream.
pub const GOALS: [Goal; 4] = [
    Goal {
        text: "rr p50 ≤ 3× two-hop TCP relay",
        workload: "rr",
        metric: Metric::P50Us,
        bound: Bound::AtMost(3.0),
        message_bytes: 256,
        concurrency: Some(1),
    },
    Goal {
        text: "rr p99 ≤ 4× two-hop TCP relay",
        workload: "rr",
        metric: Metric::P99Us,
        bound: Bound::AtMost(4.0),
        message_bytes: 256,
        concurrency: Some(1),
    },
    Goal {
        text: "produce async ≥ 50% of raw TCP stream MB/s",
        workload: "produce-async",
        metric: Metric::MbPerS,
        bound: Bound::AtLeast(0.5),
        message_bytes: 1024,
        concurrency: None,
    },
    Goal {
        text: "produce sync ≥ 25% of raw TCP stream MB/s",
        workload: "produce-sync",
        metric: Metric::MbPerS,
        bound: Bound::AtLeast(0.25),
        message_bytes: 1024,
        concurrency: None,
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
pub fn check(comparisons: &[Comparison]) -> Vec<GoalCheck> {
    GOALS
        .iter()
        .filter_map(|goal| {
            let comparison = comparisons.iter().find(|c| c.workload == goal.workload)?;
            let applies = comparison.message_bytes == goal.message_bytes
                && goal.concurrency.is_none_or(|n| n == comparison.concurrency);
            let ratio = comparison.ratio(goal.metric);
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
    use crate::report::tests::produce;

    #[test]
    fn goals_pass_or_miss_on_the_ratio() {
        let checks = check(&[
            produce("produce-async", 2000.0, 4000.0),
            produce("produce-sync", 900.0, 4000.0),
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
        let checks = check(&[other_size, no_baseline]);
        assert_eq!(checks[0].verdict, Verdict::NotApplicable);
        assert_eq!(checks[1].verdict, Verdict::NoBaseline);
    }
}
