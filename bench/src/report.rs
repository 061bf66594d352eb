//! Results, their ratios, the summary table and the JSON file.
//!
//! A run produces [`Section`]s in the order it measured them: a [`Comparison`] is one workload
//! beside the baseline it is judged against; a [`Sweep`] is one workload measured at several
//! settings (rates, queue counts, sizes), with each step's ratio to a reference.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::goals::{self, GoalCheck};
use crate::latency::Latency;
use crate::measure::{Throughput, thousands};

/// One measured run, of a workload or a baseline.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Measured {
    /// Bytes per second only (a raw stream has no messages).
    Bandwidth(Throughput),
    /// Messages and bytes per second.
    Throughput(Throughput),
    /// Latency percentiles and rate.
    Latency(Latency),
}

/// A figure the table shows and the goals refer to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    OpsPerS,
    MbPerS,
    P50Us,
    P90Us,
    P99Us,
    P999Us,
    P9999Us,
    MaxUs,
    /// The whole process's CPU time (user + system) per operation, µs.
    CpuUsPerOp,
    /// The broker threads' share of it (an embedded broker only).
    BrokerCpuUsPerOp,
    /// The rest of the process: the clients (an embedded broker only).
    ClientCpuUsPerOp,
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
            Metric::P9999Us => "p99.99 µs",
            Metric::MaxUs => "max µs",
            Metric::CpuUsPerOp => "CPU µs/op",
            Metric::BrokerCpuUsPerOp => "broker µs/op",
            Metric::ClientCpuUsPerOp => "client µs/op",
        }
    }

    /// Whether the figure is CPU time: measured where the clocks can be read, and split
    /// between broker and clients only where the broker runs in this process.
    fn is_cpu(self) -> bool {
        matches!(
            self,
            Metric::CpuUsPerOp | Metric::BrokerCpuUsPerOp | Metric::ClientCpuUsPerOp
        )
    }

    fn format(self, value: f64) -> String {
        match self {
            Metric::OpsPerS => thousands(value),
            // A produced message costs a microsecond or two.
            Metric::CpuUsPerOp | Metric::BrokerCpuUsPerOp | Metric::ClientCpuUsPerOp => {
                format!("{value:.2}")
            }
            _ => format!("{value:.1}"),
        }
    }
}

impl Measured {
    /// The figures this kind of run has, in table order.
    pub fn metrics(&self) -> &'static [Metric] {
        match self {
            Measured::Bandwidth(_) => &[Metric::MbPerS],
            Measured::Throughput(_) => &[
                Metric::OpsPerS,
                Metric::MbPerS,
                Metric::CpuUsPerOp,
                Metric::BrokerCpuUsPerOp,
                Metric::ClientCpuUsPerOp,
            ],
            Measured::Latency(_) => &[
                Metric::P50Us,
                Metric::P90Us,
                Metric::P99Us,
                Metric::P999Us,
                Metric::P9999Us,
                Metric::MaxUs,
                Metric::OpsPerS,
                Metric::CpuUsPerOp,
                Metric::BrokerCpuUsPerOp,
                Metric::ClientCpuUsPerOp,
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
            (Measured::Latency(l), Metric::P9999Us) => l.p9999_us,
            (Measured::Latency(l), Metric::MaxUs) => l.max_us,
            (_, Metric::CpuUsPerOp) => throughput.cpu?.total_us,
            (_, Metric::BrokerCpuUsPerOp) => throughput.cpu?.broker_us?,
            (_, Metric::ClientCpuUsPerOp) => throughput.cpu?.client_us?,
            _ => return None,
        })
    }

    pub fn throughput(&self) -> &Throughput {
        match self {
            Measured::Bandwidth(t) | Measured::Throughput(t) => t,
            Measured::Latency(l) => &l.throughput,
        }
    }

    /// The latency figures, for runs that have them.
    pub fn latency(&self) -> Option<&Latency> {
        match self {
            Measured::Latency(l) => Some(l),
            _ => None,
        }
    }

    /// Every figure non-zero and finite, and something was measured: what `--smoke` checks.
    /// CPU figures may be absent (no split with `--target`), but those present must be sane
    /// too: nothing completes without costing some CPU on both sides.
    fn insane_figures(&self) -> Vec<Metric> {
        self.metrics()
            .iter()
            .copied()
            .filter(|&m| match self.get(m) {
                Some(v) => !v.is_finite() || v <= 0.0,
                None => !m.is_cpu(),
            })
            .collect()
    }

    /// Whether CPU time was measured here but could not be split: the broker runs elsewhere.
    fn cpu_of_clients_only(&self) -> bool {
        self.throughput()
            .cpu
            .is_some_and(|cpu| cpu.broker_us.is_none())
    }
}

/// A baseline run and how it was set up.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Baseline {
    pub name: String,
    pub setup: String,
    pub measured: Measured,
}

/// A workload's result beside its baseline.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Comparison {
    /// `produce-async`, `produce-sync`, `rr`, ...: what goals refer to.
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
#[derive(Clone, Debug, Serialize, Deserialize)]
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
                let baseline = self.baseline_figure(metric);
                Some(Row {
                    metric,
                    ours,
                    baseline,
                    ratio: baseline.filter(|&b| b > 0.0).map(|b| ours / b),
                })
            })
            .collect()
    }

    /// The baseline's figure to set beside ours for `metric`. Where ours has no broker share
    /// (`--target`: its CPU time is the clients' alone), its CPU time is compared with the
    /// baseline's clients, not with a total that includes the baseline's broker.
    fn baseline_figure(&self, metric: Metric) -> Option<f64> {
        let baseline = &self.baseline.as_ref()?.measured;
        if metric == Metric::CpuUsPerOp && self.ours.cpu_of_clients_only() {
            return match baseline.get(Metric::ClientCpuUsPerOp) {
                Some(clients) => Some(clients),
                None if baseline.cpu_of_clients_only() => baseline.get(metric),
                None => None,
            };
        }
        baseline.get(metric)
    }

    /// Ours / baseline for `metric`.
    pub fn ratio(&self, metric: Metric) -> Option<f64> {
        self.rows()
            .into_iter()
            .find(|row| row.metric == metric)
            .and_then(|row| row.ratio)
    }
}

/// One setting of a sweep and what it measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Step {
    /// The setting as the table shows it, e.g. `1,000`.
    pub label: String,
    /// The setting as a number, for plots and goals.
    pub x: f64,
    pub measured: Measured,
    /// Open-loop steps: the rate offered, msg/s (`measured` has the rate delivered).
    pub offered_per_s: Option<f64>,
    /// Open-loop steps: whether the system kept up with the offered rate.
    pub saturated: Option<bool>,
    /// Messages sent inside the window that had not arrived when the drain ended.
    pub undelivered: u64,
}

/// What a sweep's ratio column divides by.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepRatio {
    pub metric: Metric,
    /// What the reference is, e.g. `first step` or `tcp-stream`.
    pub against: String,
    pub reference: f64,
}

/// One workload measured at several settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sweep {
    /// `e2e`, `scale-queues`, `produce-sizes`, ...: what goals and plots refer to.
    pub workload: String,
    pub setup: String,
    /// What the steps vary, e.g. `queues`.
    pub axis: String,
    pub steps: Vec<Step>,
    pub ratio: Option<SweepRatio>,
    /// What the sweep found, e.g. where it saturates.
    pub finding: Option<String>,
}

impl Sweep {
    /// A sweep whose ratio column divides `metric` by the first step's.
    pub fn against_first(mut self, metric: Metric) -> Self {
        self.ratio = self
            .steps
            .first()
            .and_then(|first| first.measured.get(metric))
            .map(|reference| SweepRatio {
                metric,
                against: format!("first step ({})", self.steps[0].label),
                reference,
            });
        self
    }

    /// `step`'s figure over the reference.
    pub fn ratio_of(&self, step: &Step) -> Option<f64> {
        let ratio = self.ratio.as_ref()?;
        let value = step.measured.get(ratio.metric)?;
        (ratio.reference > 0.0).then(|| value / ratio.reference)
    }
}

/// A part of the report, in the order measured.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "section", rename_all = "snake_case")]
pub enum Section {
    Comparison(Box<ComparisonWithRows>),
    Sweep(Sweep),
}

impl From<Comparison> for Section {
    fn from(comparison: Comparison) -> Self {
        Section::Comparison(Box::new(ComparisonWithRows {
            rows: comparison.rows(),
            comparison,
        }))
    }
}

impl From<Sweep> for Section {
    fn from(sweep: Sweep) -> Self {
        Section::Sweep(sweep)
    }
}

/// A comparison as written to JSON: with its rows, so ratios need no recomputation.
#[derive(Debug, Serialize, Deserialize)]
pub struct ComparisonWithRows {
    #[serde(flatten)]
    pub comparison: Comparison,
    pub rows: Vec<Row>,
}

/// The comparisons among `sections`, in order.
pub fn comparisons(sections: &[Section]) -> impl Iterator<Item = &Comparison> {
    sections.iter().filter_map(|section| match section {
        Section::Comparison(c) => Some(&c.comparison),
        Section::Sweep(_) => None,
    })
}

/// The sweeps among `sections`, in order.
pub fn sweeps(sections: &[Section]) -> impl Iterator<Item = &Sweep> {
    sections.iter().filter_map(|section| match section {
        Section::Sweep(sweep) => Some(sweep),
        Section::Comparison(_) => None,
    })
}

/// The sections of a report written with `--json`, read back (to redraw its plots).
pub fn read_sections(path: &Path) -> anyhow::Result<Vec<Section>> {
    #[derive(Deserialize)]
    struct Saved {
        sections: Vec<Section>,
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let saved: Saved = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a report written by --json", path.display()))?;
    Ok(saved.sections)
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

/// The 1, 5 and 15 minute load averages: how busy the shared machine was.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct LoadAverage(pub [f64; 3]);

impl LoadAverage {
    /// `/proc/loadavg` now; `None` where there is none.
    pub fn now() -> Option<Self> {
        let text = std::fs::read_to_string("/proc/loadavg").ok()?;
        let mut fields = text.split_whitespace().map(str::parse::<f64>);
        let mut next = || fields.next()?.ok();
        Some(Self([next()?, next()?, next()?]))
    }
}

impl std::fmt::Display for LoadAverage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [one, five, fifteen] = self.0;
        write!(f, "{one:.2} {five:.2} {fifteen:.2}")
    }
}

/// Everything one invocation measured.
#[derive(Debug, Serialize)]
pub struct Report {
    pub command: String,
    pub target: String,
    pub machine: Machine,
    pub load_average_at_start: Option<LoadAverage>,
    pub load_average_at_end: Option<LoadAverage>,
    pub sections: Vec<Section>,
    pub goals: Vec<GoalCheck>,
}

impl Report {
    pub fn new(
        command: String,
        target: String,
        load_average_at_start: Option<LoadAverage>,
        sections: Vec<Section>,
    ) -> Self {
        Self {
            goals: goals::check(&sections),
            command,
            target,
            machine: Machine::detect(),
            load_average_at_start,
            load_average_at_end: LoadAverage::now(),
            sections,
        }
    }

    /// The comparisons, in the order measured.
    pub fn comparisons(&self) -> impl Iterator<Item = &Comparison> {
        comparisons(&self.sections)
    }

    /// The sweeps, in the order measured.
    pub fn sweeps(&self) -> impl Iterator<Item = &Sweep> {
        sweeps(&self.sections)
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
        if let (Some(start), Some(end)) = (self.load_average_at_start, self.load_average_at_end) {
            let _ = writeln!(
                out,
                "load:    {start} at start, {end} at end (1, 5, 15 min)"
            );
        }
        for section in &self.sections {
            match section {
                Section::Comparison(c) => comparison_table(&mut out, c),
                Section::Sweep(sweep) => sweep_table(&mut out, sweep),
            }
        }
        if !self.goals.is_empty() {
            let _ = writeln!(out, "\n== DESIGN §8 goals (ratios measured in this run)");
            for check in &self.goals {
                let ratio = check.ratio.map_or("-".into(), |r| format!("{r:.3}"));
                let _ = writeln!(out, "   {:<52} {:>8}  {}", check.goal, ratio, check.verdict);
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
        for comparison in self.comparisons() {
            for metric in comparison.ours.insane_figures() {
                insane.push(format!("{} {}", comparison.workload, metric.label()));
            }
            if let Some(baseline) = &comparison.baseline {
                for metric in baseline.measured.insane_figures() {
                    insane.push(format!("{} {}", baseline.name, metric.label()));
                }
            }
        }
        let measured_cpu = self
            .comparisons()
            .map(|c| &c.ours)
            .chain(
                self.sweeps()
                    .flat_map(|s| s.steps.iter().map(|step| &step.measured)),
            )
            .any(|measured| measured.get(Metric::CpuUsPerOp).is_some());
        if !measured_cpu && !self.sections.is_empty() {
            insane.push("no CPU time measured in any workload".into());
        }
        for sweep in self.sweeps() {
            if sweep.steps.is_empty() {
                insane.push(format!("{}: no step measured", sweep.workload));
            }
            for step in &sweep.steps {
                for metric in step.measured.insane_figures() {
                    insane.push(format!(
                        "{} {} {} {}",
                        sweep.workload,
                        step.label,
                        sweep.axis,
                        metric.label()
                    ));
                }
            }
        }
        insane
    }
}

fn comparison_table(out: &mut String, result: &ComparisonWithRows) {
    let c = &result.comparison;
    let _ = writeln!(out, "\n== {}: {}", c.workload, c.setup);
    if let Some(baseline) = &c.baseline {
        let _ = writeln!(out, "   baseline {}: {}", baseline.name, baseline.setup);
    }
    let _ = writeln!(
        out,
        "   {:<12} {:>14} {:>14} {:>14}",
        "metric", "ours", "baseline", "ours/baseline"
    );
    for row in &result.rows {
        let baseline = row.baseline.map_or("-".into(), |b| row.metric.format(b));
        let ratio = row.ratio.map_or("-".into(), |r| format!("{r:.3}"));
        let _ = writeln!(
            out,
            "   {:<12} {:>14} {:>14} {:>14}",
            row.metric.label(),
            row.metric.format(row.ours),
            baseline,
            ratio
        );
    }
    let errors = c.ours.throughput().errors;
    if errors > 0 {
        let _ = writeln!(out, "   errors       {errors:>14}");
    }
    if c.ours.cpu_of_clients_only() {
        let _ = writeln!(out, "   {CLIENTS_ONLY}");
    }
}

/// The note under a run whose CPU time could not be split.
const CLIENTS_ONLY: &str = "CPU µs/op of ours: this process only, the clients (the broker runs \
                            elsewhere); a baseline's beside it is its clients' too";

fn sweep_table(out: &mut String, sweep: &Sweep) {
    let _ = writeln!(out, "\n== {}: {}", sweep.workload, sweep.setup);
    let Some(first) = sweep.steps.first() else {
        let _ = writeln!(out, "   (no step measured)");
        return;
    };
    // CPU columns only where some step measured them (not per consumer, say).
    let metrics: Vec<Metric> = first
        .measured
        .metrics()
        .iter()
        .copied()
        .filter(|&m| !m.is_cpu() || sweep.steps.iter().any(|s| s.measured.get(m).is_some()))
        .collect();
    // The offered rate gets its own column where the steps vary something else.
    let offered = sweep
        .steps
        .iter()
        .any(|s| s.offered_per_s.is_some_and(|rate| rate != s.x));
    let kept_up = sweep.steps.iter().any(|s| s.saturated.is_some());
    let mut header = format!("   {:>14}", sweep.axis);
    if offered {
        let _ = write!(header, " {:>12}", "offered/s");
    }
    for metric in &metrics {
        let _ = write!(header, " {:>12}", metric.label());
    }
    if let Some(ratio) = &sweep.ratio {
        let _ = write!(header, " {:>11}", format!("{} ratio", ratio.metric.label()));
    }
    if kept_up {
        let _ = write!(header, "  kept up");
    }
    let _ = writeln!(out, "{header}");
    for step in &sweep.steps {
        let mut line = format!("   {:>14}", step.label);
        if offered {
            let offered = step.offered_per_s.map_or("-".into(), thousands);
            let _ = write!(line, " {offered:>12}");
        }
        for &metric in &metrics {
            let value = step
                .measured
                .get(metric)
                .map_or("-".into(), |v| metric.format(v));
            let _ = write!(line, " {value:>12}");
        }
        if sweep.ratio.is_some() {
            let ratio = sweep
                .ratio_of(step)
                .map_or("-".into(), |r| format!("{r:.3}"));
            let _ = write!(line, " {ratio:>11}");
        }
        if let Some(saturated) = step.saturated {
            let _ = write!(line, "  {}", if saturated { "no" } else { "yes" });
        }
        let _ = writeln!(out, "{line}");
    }
    if let Some(ratio) = &sweep.ratio {
        let _ = writeln!(
            out,
            "   ratio: {} over {} = {}",
            ratio.metric.label(),
            ratio.against,
            ratio.metric.format(ratio.reference)
        );
    }
    for step in sweep.steps.iter().filter(|s| s.undelivered > 0) {
        let _ = writeln!(
            out,
            "   {} {}: {} message(s) sent in the window had not arrived when the drain ended \
             (counted at the drain's end, a lower bound)",
            step.label,
            sweep.axis,
            thousands(step.undelivered as f64)
        );
    }
    let errors: u64 = sweep
        .steps
        .iter()
        .map(|s| s.measured.throughput().errors)
        .sum();
    if errors > 0 {
        let _ = writeln!(out, "   errors: {errors}");
    }
    if sweep.steps.iter().any(|s| s.measured.cpu_of_clients_only()) {
        let _ = writeln!(out, "   {CLIENTS_ONLY}");
    }
    if let Some(finding) = &sweep.finding {
        let _ = writeln!(out, "   {finding}");
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cpu::CpuTime;
    use crate::measure::Throughput;

    pub(crate) fn throughput(ops_per_s: f64, mb_per_s: f64) -> Throughput {
        Throughput {
            seconds: 1.0,
            ops: ops_per_s as u64,
            bytes: (mb_per_s * 1e6) as u64,
            errors: 0,
            ops_per_s,
            mb_per_s,
            cpu: None,
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
                name: "tcp-stream".into(),
                setup: "test".into(),
                measured: Measured::Bandwidth(throughput(100.0, tcp_mb)),
            }),
        }
    }

    pub(crate) fn sweep(workload: &str, steps: &[(f64, f64)]) -> Sweep {
        Sweep {
            workload: workload.into(),
            setup: "test".into(),
            axis: "queues".into(),
            steps: steps
                .iter()
                .map(|&(x, ops)| Step {
                    label: thousands(x),
                    x,
                    measured: Measured::Throughput(throughput(ops, ops / 1000.0)),
                    offered_per_s: None,
                    saturated: None,
                    undelivered: 0,
                })
                .collect(),
            ratio: None,
            finding: None,
        }
        .against_first(Metric::OpsPerS)
    }

    #[test]
    fn rows_compare_only_figures_the_baseline_has() {
        let rows = produce("produce-async", 1000.0, 4000.0).rows();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].metric, Metric::OpsPerS);
        assert_eq!(rows[0].ratio, None);
        assert_eq!(rows[1].ratio, Some(0.25));
    }

    fn with_cpu(total_s: f64, broker_s: Option<f64>) -> Comparison {
        let measured = throughput(1000.0, 1.0).with_cpu(Some(CpuTime { total_s, broker_s }));
        Comparison {
            workload: "rr".into(),
            setup: "test".into(),
            message_bytes: 256,
            concurrency: 1,
            ours: Measured::Throughput(measured),
            baseline: None,
        }
    }

    #[test]
    fn cpu_per_op_is_split_where_the_broker_runs_here() {
        let split = with_cpu(0.5, Some(0.2));
        let rows: Vec<_> = split.rows().iter().map(|r| (r.metric, r.ours)).collect();
        let near = |metric, want: f64| {
            rows.iter()
                .any(|&(m, v)| m == metric && (v - want).abs() < 1e-9)
        };
        assert!(near(Metric::CpuUsPerOp, 500.0), "{rows:?}");
        assert!(near(Metric::BrokerCpuUsPerOp, 200.0), "{rows:?}");
        assert!(near(Metric::ClientCpuUsPerOp, 300.0), "{rows:?}");
        let report = Report::new("test".into(), "test".into(), None, vec![split.into()]);
        let table = report.table();
        assert!(table.contains("broker µs/op"), "{table}");
        assert!(!table.contains(CLIENTS_ONLY), "{table}");
        assert!(report.insane_figures().is_empty());
    }

    #[test]
    fn cpu_of_a_remote_broker_is_the_clients_alone_and_says_so() {
        let remote = with_cpu(0.5, None);
        let metrics: Vec<_> = remote.rows().iter().map(|r| r.metric).collect();
        assert!(metrics.contains(&Metric::CpuUsPerOp));
        assert!(!metrics.contains(&Metric::BrokerCpuUsPerOp));
        let report = Report::new("test".into(), "test".into(), None, vec![remote.into()]);
        assert!(report.table().contains(CLIENTS_ONLY));
        assert!(report.insane_figures().is_empty());
        // Beside a baseline whose broker ran here, ours is set against its clients' share.
        let mut beside_relay = with_cpu(0.5, None);
        beside_relay.baseline = Some(Baseline {
            name: "tcp-relay".into(),
            setup: "test".into(),
            measured: with_cpu(0.3, Some(0.1)).ours,
        });
        let cpu_row = beside_relay
            .rows()
            .into_iter()
            .find(|r| r.metric == Metric::CpuUsPerOp)
            .unwrap();
        assert!((cpu_row.ours - 500.0).abs() < 1e-9, "{cpu_row:?}");
        assert!(
            cpu_row.baseline.is_some_and(|b| (b - 200.0).abs() < 1e-9),
            "{cpu_row:?}"
        );
        let idle = Report::new(
            "test".into(),
            "test".into(),
            None,
            vec![with_cpu(0.0, None).into()],
        );
        assert_eq!(idle.insane_figures(), ["rr CPU µs/op"]);
    }

    #[test]
    fn smoke_flags_zero_figures() {
        let report = Report::new(
            "test".into(),
            "test".into(),
            None,
            vec![
                produce("produce-async", 0.0, 4000.0).into(),
                sweep("scale-queues", &[(1.0, 100.0), (10.0, 0.0)]).into(),
            ],
        );
        assert_eq!(
            report.insane_figures(),
            [
                "produce-async msg/s",
                "produce-async MB/s",
                "no CPU time measured in any workload",
                "scale-queues 10 queues msg/s",
                "scale-queues 10 queues MB/s"
            ]
        );
        assert!(report.table().contains("produce-async"));
    }

    #[test]
    fn a_json_report_reads_back() {
        let report = Report::new(
            "test".into(),
            "test".into(),
            None,
            vec![
                produce("produce-async", 900.0, 4000.0).into(),
                sweep("scale-queues", &[(1.0, 1000.0), (10.0, 900.0)]).into(),
            ],
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        report.write_json(&path).unwrap();
        let sections = read_sections(&path).unwrap();
        assert_eq!(comparisons(&sections).count(), 1);
        let sweep = sweeps(&sections).next().unwrap();
        assert_eq!(sweep.steps[1].measured.get(Metric::OpsPerS), Some(900.0));
        assert!(read_sections(dir.path()).is_err());
    }

    #[test]
    fn sweeps_show_each_step_against_the_first() {
        let sweep = sweep(
            "scale-queues",
            &[(1.0, 1000.0), (10.0, 950.0), (100.0, 500.0)],
        );
        let ratios: Vec<_> = sweep.steps.iter().map(|s| sweep.ratio_of(s)).collect();
        assert_eq!(ratios, [Some(1.0), Some(0.95), Some(0.5)]);
        let report = Report::new("test".into(), "test".into(), None, vec![sweep.into()]);
        let table = report.table();
        assert!(table.contains("0.950"), "{table}");
        assert!(table.contains("first step (1)"), "{table}");
        // No step measured CPU time, so there is no column of dashes for it.
        assert!(!table.contains("CPU µs/op"), "{table}");
    }
}
