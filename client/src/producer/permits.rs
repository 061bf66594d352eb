//! The bound on a producer's sends in flight (`ClientConfig::in_flight_sends_max`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use crate::error::{ClientError, Result};

/// A counting bound on sends in flight. Taking and returning permits is one atomic operation
/// while nobody waits; the lock and condition variable are only for waiters, so returning a
/// batch's permits costs no system call on the (reader) thread that acknowledges it.
pub(super) struct Permits {
    used: AtomicUsize,
    max: usize,
    /// Threads blocked in `acquire` or `wait_idle`.
    waiters: AtomicUsize,
    lock: Mutex<()>,
    changed: Condvar,
}

impl Permits {
    pub(super) fn new(max: usize) -> Self {
        Self {
            used: AtomicUsize::new(0),
            max,
            waiters: AtomicUsize::new(0),
            lock: Mutex::new(()),
            changed: Condvar::new(),
        }
    }

    fn try_acquire(&self) -> bool {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                (used < self.max).then_some(used + 1)
            })
            .is_ok()
    }

    pub(super) fn acquire(&self) {
        if self.try_acquire() {
            return;
        }
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        // Registered before the re-check, so a release either sees us or frees a permit the
        // re-check finds (both sides use SeqCst).
        self.waiters.fetch_add(1, Ordering::SeqCst);
        while !self.try_acquire() {
            guard = self
                .changed
                .wait(guard)
                .unwrap_or_else(PoisonError::into_inner);
        }
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    pub(super) fn release(&self, count: usize) {
        if count == 0 {
            return;
        }
        let _ = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                Some(used.saturating_sub(count))
            });
        if self.waiters.load(Ordering::SeqCst) > 0 {
            // Taking the lock orders this wake-up after a waiter's re-check.
            drop(self.lock.lock().unwrap_or_else(PoisonError::into_inner));
            self.changed.notify_all();
        }
    }

    pub(super) fn wait_idle(&self, timeout: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        if self.used.load(Ordering::SeqCst) == 0 {
            return Ok(());
        }
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let result = loop {
            if self.used.load(Ordering::SeqCst) == 0 {
                break Ok(());
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                break Err(ClientError::Timeout { after: timeout });
            }
            guard = self
                .changed
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        };
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        drop(guard);
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn permits_bound_and_drain() {
        let permits = Arc::new(Permits::new(2));
        permits.acquire();
        permits.acquire();
        let waiter = permits.clone();
        let t = std::thread::spawn(move || {
            waiter.acquire();
            waiter.release(1);
        });
        assert!(permits.wait_idle(Duration::from_millis(5)).is_err());
        permits.release(1);
        t.join().unwrap();
        permits.release(1);
        permits.wait_idle(Duration::from_secs(5)).unwrap();
    }
}
