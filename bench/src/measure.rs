//! The one measurement loop every workload and baseline runs in.
//!
//! [`run_window`] starts the worker threads, waits out the warm-up, measures for the window's
//! duration while printing a progress line, then stops the workers. Workers count completed
//! operations on the shared [`Meter`]; closed-loop workers time each operation with
//! [`closed_loop`], which records into an HDR histogram only inside the window. So ours and the
//! baselines are measured by the same code, and their ratios compare like with like.
//!
//! Open-loop workers pace their sends with [`open_loop`]: operation `i` is due at
//! `start + i / rate` whatever happened to the operations before it, and its latency is
//! measured from that intended time, not from when it was actually sent. A closed loop that
//! stalls sends nothing while stalled and so never times the requests that would have waited
//! (coordinated omission); the open loop does.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::cli::Window;
use crate::cpu::{CpuPerOp, CpuSample, CpuTime};
use crate::latency::{Latency, new_histogram, record_ns};

/// How often the progress line is refreshed.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

/// Completed operations and their payload bytes, counted by every worker.
///
/// A worker that counts millions of operations a second takes its own [`Meter::child`]: one
/// set of counters (and one reference count, cloned per asynchronous send) touched by all
/// producers at once would bounce its cache line between their cores and make the bench,
/// not the client, the ceiling on a many-core machine.
#[derive(Debug, Default)]
pub struct Meter {
    ops: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    /// Meters of workers, summed into this one's counts.
    children: Mutex<Vec<Arc<Meter>>>,
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

    /// The callback of an asynchronous send: one message of `bytes` once the broker
    /// acknowledged it, else one error.
    pub fn on_send(
        self: &Arc<Self>,
        bytes: u64,
    ) -> impl FnOnce(client::Result<client::SendResult>) + Send + 'static {
        let meter = self.clone();
        move |result| match result {
            Ok(_) => meter.record(1, bytes),
            Err(e) => {
                log::debug!("send failed: {e}");
                meter.error();
            }
        }
    }

    /// A meter for one worker whose counts are summed into this one's.
    pub fn child(&self) -> Arc<Meter> {
        let child = Arc::new(Meter::default());
        self.children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(child.clone());
        child
    }

    fn counts(&self) -> Counts {
        let own = Counts {
            ops: self.ops.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        };
        let children = self.children.lock().unwrap_or_else(PoisonError::into_inner);
        children.iter().fold(own, |sum, child| {
            let c = child.counts();
            Counts {
                ops: sum.ops + c.ops,
                bytes: sum.bytes + c.bytes,
                errors: sum.errors + c.errors,
            }
        })
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
    pub fn recording(&self) -> bool {
        self.recording.load(Ordering::Acquire)
    }

    /// Ends the run early: a worker that finished its work (a drained backlog) closes the
    /// window, which is then measured up to this moment.
    pub fn finish(&self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Operations and bytes completed per second inside the window.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Throughput {
    pub seconds: f64,
    pub ops: u64,
    pub bytes: u64,
    /// Operations that failed inside the window (not counted in `ops`).
    pub errors: u64,
    pub ops_per_s: f64,
    /// Payload megabytes (10^6 bytes) per second.
    pub mb_per_s: f64,
    /// The CPU time each operation cost, over the same window; absent from reports written
    /// before it was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuPerOp>,
}

impl Throughput {
    /// `ops` operations carrying `bytes` of payload, `errors` failed, in `seconds`.
    pub fn new(ops: u64, bytes: u64, errors: u64, seconds: f64) -> Self {
        Self {
            seconds,
            ops,
            bytes,
            errors,
            ops_per_s: ops as f64 / seconds,
            mb_per_s: bytes as f64 / seconds / 1e6,
            cpu: None,
        }
    }

    /// With `used`, the CPU time of the window these operations completed in, spread over
    /// them.
    pub fn with_cpu(mut self, used: Option<CpuTime>) -> Self {
        self.cpu = used.and_then(|used| CpuPerOp::new(used, self.ops));
        self
    }

    fn between(start: Counts, end: Counts, elapsed: Duration) -> Self {
        Self::new(
            end.ops - start.ops,
            end.bytes - start.bytes,
            end.errors - start.errors,
            elapsed.as_secs_f64(),
        )
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
            record_ns(&mut histogram, elapsed_ns);
        }
    }
    Ok(histogram)
}

/// What one open-loop worker did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Paced {
    /// Operations started.
    pub started: u64,
    /// Operations started inside the window (the ones whose latency counts).
    pub started_in_window: u64,
    /// How far behind its schedule the worker fell at worst: a sender that cannot keep up.
    pub lag_max: Duration,
}

/// Starts operations at `rate_per_s` until the run stops: operation `i` is due at
/// `start + i / rate_per_s`. `start_op` gets the operation's intended start time, from which
/// its latency must be measured, and whether it belongs to the window. A worker that fell
/// behind starts the overdue operations at once, each with its own intended time, so the
/// delay shows in their latency instead of vanishing.
pub fn open_loop(
    shared: &Shared,
    rate_per_s: f64,
    mut start_op: impl FnMut(Instant, bool) -> anyhow::Result<()>,
) -> anyhow::Result<Paced> {
    anyhow::ensure!(
        rate_per_s.is_finite() && rate_per_s > 0.0,
        "an open loop needs a positive rate, not {rate_per_s}"
    );
    let interval = Duration::from_secs_f64(1.0 / rate_per_s);
    let start = Instant::now();
    let mut paced = Paced::default();
    while !shared.stopped() {
        let intended = start + interval.mul_f64(paced.started as f64);
        let now = Instant::now();
        if intended > now {
            // Pacing, not synchronisation: nothing else is awaited here.
            std::thread::sleep(intended - now);
        } else {
            paced.lag_max = paced.lag_max.max(now - intended);
        }
        let in_window = shared.recording();
        start_op(intended, in_window)?;
        paced.started += 1;
        paced.started_in_window += u64::from(in_window);
    }
    Ok(paced)
}

/// A count of operations in flight that a thread can wait to see reach zero: open-loop
/// workers wait here at the end for the replies of what they sent inside the window.
#[derive(Debug, Default)]
pub struct InFlight {
    count: Mutex<u64>,
    drained: Condvar,
}

impl InFlight {
    /// One more operation in flight.
    pub fn add(&self) {
        *self.count.lock().unwrap_or_else(PoisonError::into_inner) += 1;
    }

    /// One operation completed.
    pub fn done(&self) {
        let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.drained.notify_all();
        }
    }

    /// Waits until nothing is in flight or `timeout` passed; returns what is still in flight.
    pub fn wait_drained(&self, timeout: Duration) -> u64 {
        let count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        let (count, _) = self
            .drained
            .wait_timeout_while(count, timeout, |count| *count > 0)
            .unwrap_or_else(PoisonError::into_inner);
        *count
    }
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
    let cpu_start = CpuSample::now();
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
    let cpu_end = CpuSample::now();
    shared.recording.store(false, Ordering::Release);
    eprintln!();
    let used = cpu_start.zip(cpu_end).map(|(start, end)| start.until(end));
    Throughput::between(start, end, elapsed).with_cpu(used)
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
        let cpu = latency
            .throughput
            .cpu
            .expect("CPU measured over the window");
        assert!(cpu.total_us.is_finite() && cpu.total_us >= 0.0, "{cpu:?}");
    }

    #[test]
    fn an_open_loop_keeps_its_rate_and_counts_the_window() {
        let window = Window {
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(200),
        };
        let (_, paced) = run_window("test", window, 1, |_, shared| {
            open_loop(shared, 1000.0, |intended, _| {
                anyhow::ensure!(intended <= Instant::now() + Duration::from_millis(1));
                Ok(())
            })
        })
        .unwrap();
        // 250 ms at 1000/s, with slack for a loaded machine (the stop may come late).
        assert!((200..=400).contains(&paced[0].started), "{paced:?}");
        assert!(paced[0].started_in_window < paced[0].started, "{paced:?}");
        assert!(paced[0].started_in_window >= 150, "{paced:?}");
    }

    #[test]
    fn an_open_loop_charges_a_stall_to_every_operation_it_delayed() {
        let window = Window {
            warmup: Duration::ZERO,
            duration: Duration::from_millis(300),
        };
        let (_, histograms) = run_window("test", window, 1, |_, shared| {
            let mut histogram = new_histogram();
            let mut started = 0u32;
            open_loop(shared, 1000.0, |intended, _| {
                started += 1;
                if started == 50 {
                    // One 50 ms stall: a closed loop would time one slow operation.
                    std::thread::sleep(Duration::from_millis(50));
                }
                record_ns(&mut histogram, intended.elapsed().as_nanos() as u64);
                Ok(())
            })?;
            Ok(histogram)
        })
        .unwrap();
        // The ~50 operations due during the stall started late, each by its own share.
        let delayed = histograms[0]
            .iter_recorded()
            .filter(|v| v.value_iterated_to() >= 10_000_000)
            .map(|v| v.count_at_value())
            .sum::<u64>();
        assert!(
            delayed >= 30,
            "only {delayed} operations were charged the stall"
        );
    }

    #[test]
    fn a_finished_worker_closes_the_window_early() {
        let window = Window {
            warmup: Duration::ZERO,
            duration: Duration::from_secs(30),
        };
        let started = Instant::now();
        let (throughput, _) = run_window("test", window, 1, |_, shared| {
            shared.meter.record(5, 50);
            shared.finish();
            Ok(())
        })
        .unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(throughput.seconds < 5.0);
    }

    #[test]
    fn in_flight_drains_to_zero() {
        let in_flight = Arc::new(InFlight::default());
        in_flight.add();
        in_flight.add();
        assert_eq!(in_flight.wait_drained(Duration::from_millis(1)), 2);
        let done = in_flight.clone();
        let finisher = std::thread::spawn(move || {
            done.done();
            done.done();
        });
        assert_eq!(in_flight.wait_drained(Duration::from_secs(10)), 0);
        finisher.join().unwrap();
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
