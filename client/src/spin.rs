//! Spinning briefly before parking, where the machine has cores to spare.
//!
//! A thread that parks on a futex is woken by the completing thread's system call and then
//! has to be scheduled: on a virtual machine whose idle core halted, tens of microseconds,
//! more than a whole request-reply hop on loopback. A waiter that polls for a short while
//! first sees a completion that comes quickly at once. Spinning takes a core, so it is done
//! only where there are cores to spare: with fewer than [`SPIN_CORES_MIN`] the threads a
//! round trip passes through (the caller, the reader threads, the broker's shards) would
//! compete with the spinner for the one core it leaves, and it costs more than it saves. And
//! at most a quarter of the cores spin at once: with many callers waiting together, the
//! others park at once and leave the cores to the threads that do the work.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Fewest cores on which waiters spin before parking.
pub(crate) const SPIN_CORES_MIN: usize = 4;
/// How long a waiter spins: about a loopback round trip through a broker on an idle
/// many-core machine, so a prompt answer is caught and a slow one costs this much CPU once.
pub(crate) const SPIN_BEFORE_PARK: Duration = Duration::from_micros(100);

/// Threads spinning now, across the process.
static SPINNING: AtomicUsize = AtomicUsize::new(0);

/// This process's spin budget and how many threads may spend it at once: [`SPIN_BEFORE_PARK`]
/// for a quarter of the cores, or none on fewer than [`SPIN_CORES_MIN`] cores.
fn policy() -> (Duration, usize) {
    static POLICY: OnceLock<(Duration, usize)> = OnceLock::new();
    *POLICY.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        if cores >= SPIN_CORES_MIN {
            (SPIN_BEFORE_PARK, cores / 4)
        } else {
            (Duration::ZERO, 0)
        }
    })
}

/// Polls `ready` until it returns true or the spin budget (at most until `deadline`) is
/// spent; returns whether it became true. Returns false at once where the budget is zero or
/// enough other threads are spinning.
pub(crate) fn spin_until(deadline: Instant, ready: impl FnMut() -> bool) -> bool {
    spin_with(policy(), deadline, ready)
}

fn spin_with(
    (budget, spinners_max): (Duration, usize),
    deadline: Instant,
    mut ready: impl FnMut() -> bool,
) -> bool {
    if budget.is_zero() {
        return false;
    }
    if SPINNING.fetch_add(1, Ordering::Relaxed) >= spinners_max {
        SPINNING.fetch_sub(1, Ordering::Relaxed);
        return false;
    }
    let end = (Instant::now() + budget).min(deadline);
    let became_ready = 'spin: loop {
        // Check the clock only every few polls: reading it costs more than a poll.
        for _ in 0..64 {
            if ready() {
                break 'spin true;
            }
            std::hint::spin_loop();
        }
        if Instant::now() >= end {
            break false;
        }
    };
    SPINNING.fetch_sub(1, Ordering::Relaxed);
    became_ready
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_past_deadline_ends_the_spin_at_once_and_the_policy_fits_the_cores() {
        let started = Instant::now();
        assert!(!spin_until(started, || false));
        assert!(started.elapsed() < Duration::from_secs(1));
        // The loop itself, with a budget whatever this machine's cores.
        let budgeted = (Duration::from_millis(1), 1);
        let mut polls = 0;
        assert!(spin_with(
            budgeted,
            started + Duration::from_secs(1),
            || {
                polls += 1;
                polls == 100
            }
        ));
        let spun = Instant::now();
        assert!(!spin_with(budgeted, spun + Duration::from_secs(1), || {
            false
        }));
        assert!(
            spun.elapsed() >= Duration::from_millis(1),
            "the budget is spent"
        );
        assert!(
            !spin_with((Duration::from_secs(1), 0), spun, || true),
            "no spinner allowed"
        );
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let (budget, spinners_max) = policy();
        if cores < SPIN_CORES_MIN {
            assert_eq!((budget, spinners_max), (Duration::ZERO, 0));
        } else {
            assert_eq!((budget, spinners_max), (SPIN_BEFORE_PARK, cores / 4));
        }
    }
}
