//! CPU time spent during a measurement window, split between the broker and its clients.
//!
//! The process's user + system time comes from `getrusage(RUSAGE_SELF)`, which counts every
//! thread, including threads that ended inside the window. The broker's share is the sum over
//! its threads, found by name in `/proc/self/task/*/comm` and read from
//! `/proc/self/task/*/schedstat` (time on CPU in nanoseconds; `stat`'s utime + stime, in clock
//! ticks, where there is no schedstat): `getrusage(RUSAGE_THREAD)` sees only the calling
//! thread. The clients' share is the rest: the bench's own workers, the client library's
//! threads, and the allocator's background threads.
//!
//! With `--target` the broker runs in another process: no thread here has a broker's name, so
//! there is no split and the process's time is the clients' alone.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Thread names (as `/proc` shows them: the first 15 bytes) of the broker side in this
/// process: the engine's shard executors (`defibus-shard-N`, and the blocking-IO threads each
/// shard starts, which inherit its name) and its trash thread; the embedded nameserver
/// (`nameserver-PORT`); the proxy's server, workers and pumps (`proxy-…`, the proxy workload);
/// and the two-hop relay of the relay baseline (`bench-relay`), the broker's counterpart there.
/// The relay baseline's echo server (`bench-echo`) is its responder, so it counts as a client,
/// as the echo Responder of `rr` does.
const BROKER_THREAD_PREFIXES: [&str; 5] = [
    "defibus-shard",
    "defibus-trash",
    "nameserver-",
    "proxy-",
    "bench-relay",
];

/// The CPU time of the process and of its broker threads at one moment.
#[derive(Clone, Copy, Debug)]
pub struct CpuSample {
    process: Duration,
    /// `None` where no broker thread runs in this process.
    broker: Option<Duration>,
}

impl CpuSample {
    /// Reads the clocks now; `None` where they cannot be read (not Linux).
    pub fn now() -> Option<Self> {
        Some(Self {
            process: process_cpu()?,
            broker: broker_cpu(),
        })
    }

    /// The time used between `self` and the later sample `end`.
    pub fn until(self, end: CpuSample) -> CpuTime {
        let broker = match (self.broker, end.broker) {
            // A broker thread that ended inside the window takes its time with it, so the
            // difference is clamped at zero rather than trusted to be positive.
            (Some(start), Some(end)) => Some(end.saturating_sub(start)),
            // Threads appeared or all ended inside the window: count from zero.
            (None, Some(end)) => Some(end),
            (_, None) => None,
        };
        CpuTime {
            total_s: end.process.saturating_sub(self.process).as_secs_f64(),
            broker_s: broker.map(|b| b.as_secs_f64()),
        }
    }
}

/// CPU seconds (user + system) used during a window.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CpuTime {
    /// The whole process.
    pub total_s: f64,
    /// The broker's threads, where they run in this process.
    pub broker_s: Option<f64>,
}

/// CPU time per completed operation, µs: what one message or round trip cost.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CpuPerOp {
    /// The CPU seconds it divides.
    pub used: CpuTime,
    /// The whole process's time per operation.
    pub total_us: f64,
    /// The broker threads' time per operation; `None` with `--target`.
    pub broker_us: Option<f64>,
    /// The rest of the process (the clients) per operation; `None` with `--target`, where
    /// `total_us` is the clients' alone.
    pub client_us: Option<f64>,
}

impl CpuPerOp {
    /// `used` spread over `ops` operations; `None` where nothing completed.
    pub fn new(used: CpuTime, ops: u64) -> Option<Self> {
        if ops == 0 {
            return None;
        }
        let per_op_us = |seconds: f64| seconds * 1e6 / ops as f64;
        // Sampled a moment apart, the broker's sum can exceed the process's by a hair.
        let broker_s = used.broker_s.map(|b| b.min(used.total_s));
        Some(Self {
            used,
            total_us: per_op_us(used.total_s),
            broker_us: broker_s.map(per_op_us),
            client_us: broker_s.map(|b| per_op_us(used.total_s - b)),
        })
    }
}

/// User + system time of the whole process, every thread, ended ones included.
fn process_cpu() -> Option<Duration> {
    // SAFETY: `rusage` is plain integers, for which all zeroes is a valid value.
    #[allow(unsafe_code)]
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable `rusage` that outlives the call.
    #[allow(unsafe_code)]
    let got = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } == 0;
    if !got {
        return None;
    }
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Some(Duration::from_micros(
        micros(usage.ru_utime) + micros(usage.ru_stime),
    ))
}

/// The summed CPU time of this process's broker threads; `None` where there are none.
fn broker_cpu() -> Option<Duration> {
    let mut total = None;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let path = task.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue; // The thread ended since the directory was read.
        };
        if !is_broker_thread(comm.trim_end()) {
            continue;
        }
        if let Some(used) = thread_cpu(&path) {
            *total.get_or_insert(Duration::ZERO) += used;
        }
    }
    total
}

fn is_broker_thread(name: &str) -> bool {
    BROKER_THREAD_PREFIXES
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// One thread's CPU time: `schedstat`'s first field (ns on CPU), else `stat`'s utime + stime.
fn thread_cpu(task: &std::path::Path) -> Option<Duration> {
    if let Ok(schedstat) = std::fs::read_to_string(task.join("schedstat")) {
        if let Some(ns) = schedstat
            .split_whitespace()
            .next()
            .and_then(|f| f.parse().ok())
        {
            return Some(Duration::from_nanos(ns));
        }
    }
    let stat = std::fs::read_to_string(task.join("stat")).ok()?;
    stat_cpu(&stat)
}

/// utime + stime from a `/proc/…/stat` line: fields 14 and 15, counted after the command
/// name, which is in parentheses and may itself hold spaces and parentheses.
fn stat_cpu(stat: &str) -> Option<Duration> {
    let (_, after_name) = stat.rsplit_once(')')?;
    // After the name: field 3 (state) is the first, so utime (14) is the 12th.
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    #[allow(unsafe_code)]
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks_per_s = u64::try_from(ticks_per_s).ok().filter(|&t| t > 0)?;
    Some(Duration::from_nanos(
        (utime + stime) * 1_000_000_000 / ticks_per_s,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn stat_fields_are_read_after_a_name_with_spaces_and_parentheses() {
        let split = stat_cpu("42 (a (b) c) S 1 42 42 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 1");
        let user_only = stat_cpu("42 (x) S 1 42 42 0 -1 4194304 100 0 0 0 300 0 0 0 20 0 1");
        assert!(split.is_some_and(|d| d > Duration::ZERO), "{split:?}");
        assert_eq!(split, user_only);
        assert_eq!(stat_cpu("42 (truncated"), None);
    }

    #[test]
    fn a_busy_broker_thread_is_seen_and_split_from_the_rest() {
        let start = CpuSample::now().expect("CPU clocks readable on Linux");
        let (spun, spun_rx) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let broker = std::thread::Builder::new()
            .name("defibus-shard-9".into())
            .spawn(move || {
                let until = std::time::Instant::now() + Duration::from_millis(60);
                let mut x = 0u64;
                while std::time::Instant::now() < until {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                spun.send(()).unwrap();
                // Kept alive until sampled: an ended thread leaves /proc.
                let _ = released.recv();
            })
            .unwrap();
        spun_rx.recv().unwrap();
        let end = CpuSample::now().unwrap();
        drop(release);
        broker.join().unwrap();
        let used = start.until(end);
        let broker_s = used.broker_s.expect("the broker thread is found by name");
        assert!(broker_s > 0.0, "{used:?}");
        assert!(used.total_s >= broker_s * 0.9, "{used:?}");
        let per_op = CpuPerOp::new(used, 10).unwrap();
        let client_us = per_op.client_us.unwrap();
        assert!(client_us >= 0.0, "{per_op:?}");
        assert!(
            (per_op.broker_us.unwrap() + client_us - per_op.total_us).abs() < 1e-6,
            "{per_op:?}"
        );
        assert_eq!(CpuPerOp::new(used, 0), None);
    }

    #[test]
    fn thread_names_decide_the_side() {
        assert!(is_broker_thread("defibus-shard-0"));
        assert!(is_broker_thread("nameserver-4123"));
        assert!(is_broker_thread("bench-relay"));
        assert!(!is_broker_thread("bench-echo"));
        assert!(!is_broker_thread("bench-rr-0"));
        assert!(!is_broker_thread("defibus-read-12"));
    }
}
