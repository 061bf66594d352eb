//! What this process holds and may hold: open files and memory. The scale sweep holds
//! thousands of sockets (clients and the embedded broker's ends) and queue files in this one
//! process, on a machine others share; it plans its steps with [`Usage`], [`UnitCost`] and
//! [`fit`] instead of running into the open-file limit or the memory of the machine.

use std::time::{Duration, Instant};

use crate::measure::thousands;

/// Share of the open-file limit a step may plan to use: room for sockets and the rest.
const OPEN_FILES_SHARE: f64 = 0.85;
/// Share of the machine's available memory a step may plan to use: the machine is shared.
const MEMORY_SHARE: f64 = 0.5;
/// Open files above the sweep's starting point that count as settled (heartbeat and admin
/// connections come and go).
const SETTLED_SLACK_FILES: u64 = 128;
/// How often [`settle`] looks again: a file closing elsewhere sends no notice to wait on.
const SETTLE_POLL: Duration = Duration::from_millis(100);

/// Raises the soft open-file limit to the hard one (any process may), and the hard one too
/// when `wanted` is above it and the process is allowed to (CAP_SYS_RESOURCE). Returns the
/// soft limit now in force, `None` where it cannot be read.
pub fn raise_open_files(wanted: u64) -> Option<u64> {
    let mut limit = open_files_rlimit()?;
    if limit.rlim_cur >= wanted {
        return Some(limit.rlim_cur);
    }
    // First both limits to `wanted` (needs CAP_SYS_RESOURCE when above the hard limit), then
    // the soft limit to the hard one, which any process may do.
    let attempts = [
        (wanted, wanted.max(limit.rlim_max)),
        (wanted.min(limit.rlim_max), limit.rlim_max),
    ];
    for (soft, hard) in attempts {
        if soft <= limit.rlim_cur {
            continue;
        }
        let raised = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        #[allow(unsafe_code)]
        // SAFETY: setrlimit only reads the struct we pass.
        let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0;
        if set {
            log::info!(
                "open files: soft limit raised from {} to {soft} (hard {hard})",
                limit.rlim_cur
            );
            if soft >= wanted {
                return Some(soft);
            }
            limit.rlim_cur = soft;
        }
    }
    log::info!(
        "open files: limit {} (hard {}), below the {wanted} asked for; raising the hard limit \
         needs CAP_SYS_RESOURCE",
        limit.rlim_cur,
        limit.rlim_max
    );
    Some(limit.rlim_cur)
}

/// The soft open-file limit in force.
pub fn open_files_limit() -> Option<u64> {
    open_files_rlimit().map(|limit| limit.rlim_cur)
}

fn open_files_rlimit() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    #[allow(unsafe_code)]
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    got.then_some(limit)
}

/// Files this process has open now (sockets and the embedded broker's queue files
/// included).
pub fn open_files() -> Option<u64> {
    std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|entries| entries.count() as u64)
}

/// The memory the machine can still give, bytes (`MemAvailable`).
pub fn memory_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// This process's resident memory, bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What this process holds at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub open_files: u64,
    pub resident_bytes: u64,
}

impl Usage {
    pub fn now() -> Option<Self> {
        Some(Self {
            open_files: open_files()?,
            resident_bytes: resident_bytes()?,
        })
    }
}

/// What one unit of a step (a queue, a client) was measured to hold once opened and
/// written once, before any load: its files, buffers and threads.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct UnitCost {
    pub open_files: f64,
    pub bytes: f64,
}

impl UnitCost {
    /// Learns from a step of `units` that took usage from `before` to `after`: each figure
    /// becomes the larger of what was known and what this step shows.
    pub fn learn(&mut self, before: Usage, after: Usage, units: u64) {
        let units = units.max(1) as f64;
        let files = after.open_files.saturating_sub(before.open_files) as f64 / units;
        let bytes = after.resident_bytes.saturating_sub(before.resident_bytes) as f64 / units;
        self.open_files = self.open_files.max(files);
        self.bytes = self.bytes.max(bytes);
    }
}

/// Whether a step fits.
#[derive(Clone, Debug, PartialEq)]
pub enum Fit {
    Yes,
    /// It does not; `units` (a round count: 1, 2 or 5 × 10^k) would.
    Instead {
        units: u64,
        reason: String,
    },
}

/// Whether `units` more of what `cost` describes fit now, with `data_bytes` of messages the
/// step will write (which the broker may keep in its caches): their open files within 85%
/// of the limit (with what is open), their memory within half of what the machine has
/// available.
pub fn fit(units: u64, cost: UnitCost, data_bytes: u64, unit: &str) -> Fit {
    let (Some(limit), Some(open), Some(available)) =
        (open_files_limit(), open_files(), memory_available())
    else {
        return Fit::Yes;
    };
    let files_budget = (limit as f64 * OPEN_FILES_SHARE - open as f64).max(0.0);
    let bytes_budget = available as f64 * MEMORY_SHARE;
    let needed_files = cost.open_files * units as f64;
    let needed_bytes = cost.bytes * units as f64 + data_bytes as f64;
    let mut fits = units as f64;
    let mut reasons = Vec::new();
    if needed_files > files_budget {
        fits = fits.min(files_budget / cost.open_files);
        reasons.push(format!(
            "{:.1} open files per {unit} (measured), {} in all, over {:.0}% of this \
             process's open-file limit of {} (the hard limit here; raising it needs \
             CAP_SYS_RESOURCE)",
            cost.open_files,
            thousands(needed_files),
            OPEN_FILES_SHARE * 100.0,
            thousands(limit as f64)
        ));
    }
    if needed_bytes > bytes_budget {
        let for_units = (bytes_budget - data_bytes as f64).max(0.0);
        fits = fits.min(for_units / cost.bytes.max(1.0));
        reasons.push(format!(
            "{:.1} MB of memory per {unit} (measured) and {:.1} GB of data the broker may \
             cache, {:.1} GB in all, over {:.0}% of the {:.1} GB the machine has available",
            cost.bytes / 1e6,
            data_bytes as f64 / 1e9,
            needed_bytes / 1e9,
            MEMORY_SHARE * 100.0,
            available as f64 / 1e9
        ));
    }
    if reasons.is_empty() {
        return Fit::Yes;
    }
    Fit::Instead {
        units: round_down(fits.max(1.0) as u64),
        reason: reasons.join("; "),
    }
}

/// Waits until this process holds no more open files than `baseline` (plus slack), for at
/// most `timeout`: a deleted topic's queue files close after the deletion is answered, and
/// the next step must not count them. Returns whether it settled.
pub fn settle(baseline: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match open_files() {
            Some(open) if open > baseline + SETTLED_SLACK_FILES => {}
            _ => return true,
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(SETTLE_POLL);
    }
}

/// The largest of 1, 2 or 5 × 10^k not above `n` (`n` ≥ 1).
pub fn round_down(n: u64) -> u64 {
    let mut best = 1;
    let mut decade = 1u64;
    while decade <= n {
        for m in [1, 2, 5] {
            if let Some(candidate) = decade.checked_mul(m).filter(|&c| c <= n) {
                best = best.max(candidate);
            }
        }
        let Some(next) = decade.checked_mul(10) else {
            break;
        };
        decade = next;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_files_are_counted_below_the_limit() {
        let open = open_files().expect("Linux has /proc/self/fd");
        let file = tempfile::tempfile().unwrap();
        assert!(open_files().unwrap() > open);
        drop(file);
        assert!(open < open_files_limit().unwrap());
    }

    #[test]
    fn round_counts_round_down() {
        assert_eq!(round_down(1), 1);
        assert_eq!(round_down(4), 2);
        assert_eq!(round_down(5_333), 5_000);
        assert_eq!(round_down(19_999), 10_000);
        assert_eq!(round_down(u64::MAX), 10_000_000_000_000_000_000);
    }

    #[test]
    fn costs_are_learned_per_unit_and_judged_against_the_limits() {
        let mut cost = UnitCost::default();
        let before = Usage {
            open_files: 100,
            resident_bytes: 1 << 20,
        };
        let after = Usage {
            open_files: 3100,
            resident_bytes: (1 << 20) + 2_000_000_000,
        };
        cost.learn(before, after, 1000);
        assert_eq!(cost.open_files, 3.0);
        assert_eq!(cost.bytes, 2_000_000.0);
        assert_eq!(fit(1, cost, 0, "queue"), Fit::Yes);
        let limit = open_files_limit().unwrap();
        match fit(limit, cost, 0, "queue") {
            Fit::Instead { units, reason } => {
                assert!(units < limit / 3, "{units}");
                assert!(reason.contains("open files per queue"), "{reason}");
            }
            Fit::Yes => panic!("{limit} queues of three files each cannot fit"),
        }
    }

    #[test]
    fn settling_returns_at_once_below_the_baseline() {
        assert!(settle(u64::MAX / 2, Duration::ZERO));
    }

    #[test]
    fn the_limit_never_goes_down() {
        let before = raise_open_files(0).expect("readable on Linux");
        assert!(raise_open_files(64).unwrap() >= before.min(64));
        assert_eq!(raise_open_files(0), Some(raise_open_files(0).unwrap()));
    }
}
