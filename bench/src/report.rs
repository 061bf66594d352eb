//! Results, their ratios to the baselines, the summary table and the JSON file.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::goals::{self, GoalCheck};
use crate::measure::{Latency, Throughput, thousands};

/// One measured run, of a workload or a baseline.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Measured {
    /// Bytes per second only (a raw stream has no messages).
    Bandwidth(Throughput),
    /// Messages and bytes per second.
    Throughput(Throughput),
    /// Closed-loop round trips: percentiles and rate.
    Latency(Latency),
}

/// A figure the table shows and the goals refer to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    OpsPerS,
    MbPerS,
    P50Us,
    P90Us,
    P99Us,
    P999Us,
    MaxUs,
}

impl Metric {
    pub fn label(self) -> &'static str {
        match self {
            Metric::OpsPerS => "msg/s",
            Metric::MbPerS => "MB/s",
            Metric::P50Us => "p50 µs",
            Metric::P90Us => "p90 µs",
            Metric::P99Us => "p99 µs",
            Metric::P999Us => "p99.9 µs",
            Metric::MaxUs => "max µs",
        }
    }

    fn format(self, value: f64) -> String {
        match self {
            Metric::OpsPerS => thousands(value),
            _ => format!("{value:.1}"),
        }
    }
}

impl Measured {
    /// The figures this kind of run has, in table order.
    pub fn metrics(&self) -> &'static [Metric] {
        match self {
            Measured::Bandwidth(_) => &[Metric::MbPerS],
            Measured::Throughput(_) => &[Metric::OpsPerS, Metric::MbPerS],
            Measured::Latency(_) => &[
                Metric::P50Us,
                Metric::P90Us,
                Metric::P99Us,
                Metric::P999Us,
                Metric::MaxUs,
                Metric::OpsPerS,
            ],
        }
    }

    /// The value of `metric`, if this run has it.
    pub fn get(&self, metric: Metric) -> Option<f64> {
        if !self.metrics().contains(&metric) {
            return None;
        }
        let throughput = self.throughput();
        Some(match (self, metric) {
            (_, Metric::OpsPerS) => throughput.ops_per_s,
            (_, Metric::MbPerS) => throughput.mb_per_s,
            (Measured::Latency(l), Metric::P50Us) => l.p50_us,
            (Measured::Latency(l), Metric::P90Us) => l.p90_us,
            (Measured::Latency(l), Metric::P99Us) => l.p99_us,
            (Measured::Latency(l), Metric::P999Us) => l.p999_us,
            (Measured::Latency(l), Metric::MaxUs) => l.max_us,
            _ => return None,
        })
    }

    pub fn throughput(&self) -> &Throughput {
        match self {
            Measured::Bandwidth(t) | Measured::Throughput(t) => t,
            Measured::Latency(l) => &l.throughput,
        }
    }

    /// Every figure non-zero and finite, and something was measured: what `--smoke` checks.
    fn insane_figures(&self) -> Vec<Metric> {
        self.metrics()
            .iter()
            .copied()
            .filter(|&m| self.get(m).is_none_or(|v| !v.is_finite() || v <= 0.0))
            .collect()
    }
}

/// A baseline run and how it was set up.
#[derive(Clone, Debug, Serialize)]
pub struct Baseline {
    pub name: &'static str,
    pub setup: String,
    pub measured: Measured,
}

/// A workload's result beside its baseline.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// `produce-async`, `produce-sync`, `rr`: what goals refer to.
    pub workload: String,
    pub setup: String,
    /// Payload bytes per message (goals hold for one size).
    pub message_bytes: usize,
    /// Producers or requesters.
    pub concurrency: usize,
    pub ours: Measured,
    pub baseline: Option<Baseline>,
}

/// One line of the table: a figure, its baseline, and ours / baseline.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub metric: Metric,
    pub ours: f64,
    pub baseline: Option<f64>,
    pub ratio: Option<f64>,
}

impl Comparison {
    pub fn rows(&self) -> Vec<Row> {
        self.ours
            .metrics()
            .iter()
            .filter_map(|&metric| {
                let ours = self.ours.get(metric)?;
                let baseline = self.baseline.as_ref().and_then(|b| b.measured.get(metric));
                Some(Row {
                    metric,
                    ours,
                    baseline,
                    ratio: baseline.filter(|&b| b > 0.0).map(|b| ours / b),
                })
            })
            .collect()
    }

    /// Ours / baseline for `metric`.
    pub fn ratio(&self, metric: Metric) -> Option<f64> {
        self.rows()
            .into_iter()
            .find(|row| row.metric == metric)
            .and_then(|row| row.ratio)
    }
}

/// The machine the figures were measured on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub kernel: String,
}

impl Machine {
    pub fn detect() -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| format!("Linux {}", k.trim()))
            .unwrap_or_else(|_| "unknown".into());
        Self {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            kernel,
        }
    }
}

/// Everything one invocation measured.
#[derive(Debug, Serialize)]
pub struct Report {
    pub command: String,
    pub target: String,
    pub machine: Machine,
    pub results: Vec<ComparisonWithRows>,
    pub goals: Vec<GoalCheck>,
}

/// A comparison as written to JSON: with its rows, so ratios need no recomputation.
#[derive(Debug, Serialize)]
pub struct ComparisonWithRows {
    #[serde(flatten)]
    pub comparison: Comparison,
    pub rows: Vec<Row>,
}

impl Report {
    pub fn new(command: String, target: String, comparisons: Vec<Comparison>) -> Self {
        let goals = goals::check(&comparisons);
        Self {
            command,
            target,
            machine: Machine::detect(),
            results: comparisons
                .into_iter()
                .map(|comparison| ComparisonWithRows {
                    rows: comparison.rows(),
                    comparison,
                })
                .collect(),
            goals,
        }
    }

    /// The summary table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(out, "command: {}", self.command);
        let _ = writeln!(out, "target:  {}", self.target);
        let _ = writeln!(
            out,
            "machine: {} CPUs, {}, {}",
            m.nproc, m.cpu_model, m.kernel
        );
        for result in &self.results {
            let c = &result.comparison;
            let _ = writeln!(out, "\n== {}: {}", c.workload, c.setup);
            if let Some(baseline) = &c.baseline {
                let _ = writeln!(out, "   baseline {}: {}", baseline.name, baseline.setup);
            }
            let _ = writeln!(
                out,
                "   {:<10} {:>14} {:>14} {:>14}",
                "metric", "ours", "baseline", "ours/baseline"
            );
            for row in &result.rows {
                let baseline = row.baseline.map_or("-".into(), |b| row.metric.format(b));
                let ratio = row.ratio.map_or("-".into(), |r| format!("{r:.3}"));
                let _ = writeln!(
                    out,
                    "   {:<10} {:>14} {:>14} {:>14}",
                    row.metric.label(),
                    row.metric.format(row.ours),
                    baseline,
                    ratio
                );
            }
            let errors = c.ours.throughput().errors;
            if errors > 0 {
                let _ = writeln!(out, "   errors     {errors:>14}");
            }
        }
        if !self.goals.is_empty() {
            let _ = writeln!(out, "\n== DESIGN §8 goals (ratios measured in this run)");
            for check in &self.goals {
                let ratio = check.ratio.map_or("-".into(), |r| format!("{r:.3}"));
                let _ = writeln!(out, "   {:<46} {:>8}  {}", check.goal, ratio, check.verdict);
            }
        }
        out
    }

    /// Writes the report as JSON to `path`.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self).context("encoding the report")?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }

    /// The figures that are zero, negative or not finite, as `workload metric` (`--smoke`).
    pub fn insane_figures(&self) -> Vec<String> {
        let mut insane = Vec::new();
        for result in &self.results {
            let c = &result.comparison;
            for metric in c.ours.insane_figures() {
                insane.push(format!("{} {}", c.workload, metric.label()));
            }
            if let Some(baseline) = &c.baseline {
                for metric in baseline.measured.insane_figures() {
                    insane.push(format!("{} {}", baseline.name, metric.label()));
                }
            }
        }
        insane
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::measure::Throughput;

    pub(crate) fn throughput(ops_per_s: f64, mb_per_s: f64) -> Throughput {
        Throughput {
            seconds: 1.0,
            ops: ops_per_s as u64,
            bytes: (mb_per_s * 1e6) as u64,
            errors: 0,
            ops_per_s,
            mb_per_s,
        }
    }

    pub(crate) fn produce(workload: &str, ours_mb: f64, tcp_mb: f64) -> Comparison {
        Comparison {
            workload: workload.into(),
            setup: "test".into(),
            message_bytes: 1024,
            concurrency: 1,
            ours: Measured::Throughput(throughput(ours_mb * 1e6 / 1024.0, ours_mb)),
            baseline: Some(Baseline {
                name: "tcp-stream",
                setup: "test".into(),
                measured: Measured::Bandwidth(throughput(100.0, tcp_mb)),
            }),
        }
    }

    #[test]
    fn rows_compare_only_figures_the_baseline_has() {
        let rows = produce("produce-async", 1000.0, 4000.0).rows();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].metric, Metric::OpsPerS);
        assert_eq!(rows[0].ratio, None);
        assert_eq!(rows[1].ratio, Some(0.25));
    }

    #[test]
    fn smoke_flags_zero_figures() {
        let report = Report::new(
            "test".into(),
            "test".into(),
            vec![produce("produce-async", 0.0, 4000.0)],
        );
        assert_eq!(
            report.insane_figures(),
            ["produce-async msg/s", "produce-async MB/s"]
        );
        assert!(report.table().contains("produce-async"));
    }
}
