//! The one measurement loop every workload and baseline runs in.
//!
//! [`run_window`] starts the worker threads, waits out the warm-up, measures for the window's
//! duration while printing a progress line, then stops the workers. Workers count completed
//! operations on the shared [`Meter`]; closed-loop workers time each operation with
//! [`closed_loop`], which records into an HDR histogram only inside the window. So ours and the
//! baselines are measured by the same code, and their ratios compare like with like.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cli::Window;

/// How often the progress line is refreshed.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);
/// Longest latency the histograms hold, ns; longer ones are clamped to it.
const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// Significant decimal digits the histograms keep (0.1% resolution).
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;

/// Completed operations and their payload bytes, counted by every worker.
#[derive(Debug, Default)]
pub struct Meter {
    ops: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    ops: u64,
    bytes: u64,
    errors: u64,
}

impl Meter {
    /// Counts `ops` completed operations carrying `bytes` of payload.
    pub fn record(&self, ops: u64, bytes: u64) {
        self.ops.fetch_add(ops, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts one failed operation.
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    fn counts(&self) -> Counts {
        Counts {
            ops: self.ops.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// What workers see of the run: the meter, whether the window is open, whether to stop.
#[derive(Debug, Default)]
pub struct Shared {
    pub meter: Arc<Meter>,
    recording: AtomicBool,
    stop: AtomicBool,
}

impl Shared {
    /// Whether workers should end.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Whether the measured window is open.
    fn recording(&self) -> bool {
        self.recording.load(Ordering::Acquire)
    }
}

/// Operations and bytes completed per second inside the window.
#[derive(Clone, Debug, Serialize)]
pub struct Throughput {
    pub seconds: f64,
    pub ops: u64,
    pub bytes: u64,
    /// Operations that failed inside the window (not counted in `ops`).
    pub errors: u64,
    pub ops_per_s: f64,
    /// Payload megabytes (10^6 bytes) per second.
    pub mb_per_s: f64,
}

impl Throughput {
    fn between(start: Counts, end: Counts, elapsed: Duration) -> Self {
        let seconds = elapsed.as_secs_f64();
        let ops = end.ops - start.ops;
        let bytes = end.bytes - start.bytes;
        Self {
            seconds,
            ops,
            bytes,
            errors: end.errors - start.errors,
            ops_per_s: ops as f64 / seconds,
            mb_per_s: bytes as f64 / seconds / 1e6,
        }
    }
}

/// Round-trip latency percentiles of a closed-loop run, µs, and its throughput.
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub throughput: Throughput,
}

impl Latency {
    fn new(histogram: &Histogram<u64>, throughput: Throughput) -> Self {
        let us = |ns: u64| ns as f64 / 1e3;
        Self {
            samples: histogram.len(),
            mean_us: histogram.mean() / 1e3,
            p50_us: us(histogram.value_at_quantile(0.50)),
            p90_us: us(histogram.value_at_quantile(0.90)),
            p99_us: us(histogram.value_at_quantile(0.99)),
            p999_us: us(histogram.value_at_quantile(0.999)),
            max_us: us(histogram.max()),
            throughput,
        }
    }
}

/// Runs `threads` workers for `window`, with a progress line labelled `label` on stderr.
///
/// Each worker gets its index and the [`Shared`] state, loops until [`Shared::stopped`] and
/// returns a value (a histogram, or `()`). A worker error stops the run and is returned.
pub fn run_window<T: Send>(
    label: &str,
    window: Window,
    threads: usize,
    worker: impl Fn(usize, &Shared) -> anyhow::Result<T> + Sync,
) -> anyhow::Result<(Throughput, Vec<T>)> {
    let shared = Shared::default();
    std::thread::scope(|scope| {
        let spawned = (0..threads)
            .map(|index| {
                let (shared, worker) = (&shared, &worker);
                std::thread::Builder::new()
                    .name(format!("bench-{label}-{index}"))
                    .spawn_scoped(scope, move || {
                        let result = worker(index, shared);
                        if result.is_err() {
                            shared.stop.store(true, Ordering::Release);
                        }
                        result
                    })
            })
            .collect::<Result<Vec<_>, _>>();
        let handles = match spawned {
            Ok(handles) => handles,
            Err(e) => {
                // The scope joins the workers that did start once they see the stop.
                shared.stop.store(true, Ordering::Release);
                return Err(anyhow::Error::new(e).context(format!("starting {label} workers")));
            }
        };
        let throughput = watch(label, window, &shared);
        shared.stop.store(true, Ordering::Release);
        let results = handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a {label} worker panicked")))
            })
            .collect::<anyhow::Result<Vec<T>>>()?;
        Ok((throughput, results))
    })
}

/// Like [`run_window`] for closed-loop workers that return histograms; merges them.
pub fn run_latency_window(
    label: &str,
    window: Window,
    threads: usize,
    worker: impl Fn(usize, &Shared) -> anyhow::Result<Histogram<u64>> + Sync,
) -> anyhow::Result<Latency> {
    let (throughput, histograms) = run_window(label, window, threads, worker)?;
    let mut merged = new_histogram();
    for histogram in &histograms {
        merged.add(histogram)?;
    }
    Ok(Latency::new(&merged, throughput))
}

/// Repeats `op` (one round trip carrying `bytes_per_op` of payload) until the run stops,
/// timing every call that ends inside the window.
pub fn closed_loop(
    shared: &Shared,
    bytes_per_op: u64,
    mut op: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Histogram<u64>> {
    let mut histogram = new_histogram();
    while !shared.stopped() {
        let started = Instant::now();
        op()?;
        let elapsed_ns = started.elapsed().as_nanos() as u64;
        shared.meter.record(1, bytes_per_op);
        if shared.recording() {
            histogram.saturating_record(elapsed_ns.clamp(1, LATENCY_NS_MAX));
        }
    }
    Ok(histogram)
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, LATENCY_SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// Waits out the warm-up, then measures the window with a progress line; returns early if a
/// worker stopped the run.
fn watch(label: &str, window: Window, shared: &Shared) -> Throughput {
    let warmup_end = Instant::now() + window.warmup;
    while Instant::now() < warmup_end && !shared.stopped() {
        progress(label, "warming up");
        std::thread::sleep(PROGRESS_INTERVAL.min(warmup_end - Instant::now()));
    }
    shared.recording.store(true, Ordering::Release);
    let started = Instant::now();
    let start = shared.meter.counts();
    let (mut last, mut last_at) = (start, started);
    loop {
        let elapsed = started.elapsed();
        if elapsed >= window.duration || shared.stopped() {
            break;
        }
        std::thread::sleep(PROGRESS_INTERVAL.min(window.duration - elapsed));
        let (now, now_at) = (shared.meter.counts(), Instant::now());
        let recent = Throughput::between(last, now, now_at - last_at);
        progress(
            label,
            &format!(
                "{:>5.1}s  {:>12} msg/s  {:>9.1} MB/s  errors {}",
                started.elapsed().as_secs_f64(),
                thousands(recent.ops_per_s),
                recent.mb_per_s,
                now.errors - start.errors
            ),
        );
        (last, last_at) = (now, now_at);
    }
    let end = shared.meter.counts();
    let elapsed = started.elapsed();
    shared.recording.store(false, Ordering::Release);
    eprintln!();
    Throughput::between(start, end, elapsed)
}

fn progress(label: &str, status: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = write!(stderr, "\r\x1b[2K{label:<24} {status}");
    let _ = stderr.flush();
}

/// `1234567.8` as `1,234,568`.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1_234_567.8), "1,234,568");
    }

    #[test]
    fn a_closed_loop_counts_and_times_inside_the_window() {
        let window = Window {
            warmup: Duration::from_millis(20),
            duration: Duration::from_millis(100),
        };
        let latency = run_latency_window("test", window, 2, |_, shared| {
            closed_loop(shared, 10, || {
                std::thread::sleep(Duration::from_millis(1));
                Ok(())
            })
        })
        .unwrap();
        assert!(latency.samples > 10, "{latency:?}");
        assert!(
            latency.p50_us >= 1000.0 && latency.max_us < 1e6,
            "{latency:?}"
        );
        assert!(latency.throughput.ops_per_s > 100.0, "{latency:?}");
        assert_eq!(latency.throughput.bytes, latency.throughput.ops * 10);
    }

    #[test]
    fn a_worker_error_ends_the_run_and_is_returned() {
        let window = Window {
            warmup: Duration::ZERO,
            duration: Duration::from_secs(30),
        };
        let started = Instant::now();
        let result = run_window("test", window, 1, |_, _| -> anyhow::Result<()> {
            anyhow::bail!("broken")
        });
        assert!(result.is_err());
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
