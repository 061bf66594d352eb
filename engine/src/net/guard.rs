//! What clients can make one shard hold, bounded, so a hostile or broken client cannot take
//! the shard from the others:
//!
//! - [`FrameBudget`]: the memory of frames still arriving. Each connection reads into its own
//!   buffer of `read_buffer_bytes`; a frame announcing more must first reserve its whole
//!   length from the shard's budget (`partial_frame_bytes_shard_max`), held until the frame is
//!   whole or the connection closes. A connection that cannot reserve stops reading and waits,
//!   until the budget frees or its frame times out (`frame_timeout_ms`). So a shard buffers
//!   at most the budget plus one read buffer per connection, however many connections hold
//!   half-sent 8 MiB frames, and an honest large producer waits at most one frame timeout
//!   behind them.
//! - [`ClosingLog`]: the INFO line for each connection closed for bad input, at most
//!   [`CLOSINGS_LOGGED_PER_SECOND`] a second and then one line counting the rest, so a flood
//!   of bad connections cannot flood the log.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::notify::Notify;

/// Closed connections logged one by one per second and shard; the rest are counted.
pub(crate) const CLOSINGS_LOGGED_PER_SECOND: u32 = 10;

/// The shard's budget for frames larger than a read buffer, while they arrive.
pub(crate) struct FrameBudget {
    max: usize,
    reserved: Cell<usize>,
    freed: Notify,
}

impl FrameBudget {
    /// A budget of `max` bytes.
    pub fn new(max: usize) -> Rc<Self> {
        Rc::new(Self {
            max,
            reserved: Cell::new(0),
            freed: Notify::new(),
        })
    }

    /// Bytes reserved now.
    pub fn reserved(&self) -> usize {
        self.reserved.get()
    }

    /// Reserves `bytes` if they fit now.
    pub fn try_reserve(self: &Rc<Self>, bytes: usize) -> Option<Reservation> {
        let reserved = self.reserved.get();
        if reserved + bytes > self.max {
            return None;
        }
        self.reserved.set(reserved + bytes);
        Some(Reservation {
            budget: Rc::clone(self),
            bytes,
        })
    }

    /// Reserves `bytes`, waiting for other reservations to end until `deadline`; `None` if
    /// they did not fit by then.
    pub async fn reserve_by(
        self: &Rc<Self>,
        bytes: usize,
        deadline: Instant,
    ) -> Option<Reservation> {
        loop {
            let seen = self.freed.generation();
            if let Some(reservation) = self.try_reserve(bytes) {
                return Some(reservation);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            crate::rt::timeout(left, self.freed.wait(seen)).await;
        }
    }
}

/// Bytes of a [`FrameBudget`], given back when dropped.
pub(crate) struct Reservation {
    budget: Rc<FrameBudget>,
    bytes: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let budget = &self.budget;
        budget.reserved.set(budget.reserved.get() - self.bytes);
        budget.freed.notify();
    }
}

/// Rate-limited INFO lines for connections closed for bad input (see the module docs).
pub(crate) struct ClosingLog {
    window_start: Cell<Instant>,
    logged: Cell<u32>,
    suppressed: Cell<u32>,
}

impl Default for ClosingLog {
    fn default() -> Self {
        Self {
            window_start: Cell::new(Instant::now()),
            logged: Cell::new(0),
            suppressed: Cell::new(0),
        }
    }
}

impl ClosingLog {
    /// Logs (or counts) that shard `shard` closes the connection from `peer` for `reason`.
    pub fn closing(&self, shard: usize, peer: &str, reason: &str) {
        if self.admit(Instant::now()) {
            log::info!("shard {shard}: closing connection from {peer}: {reason}");
        }
    }

    /// Whether a line may be logged at `now`; starts a new one-second window when the last
    /// one is over, first reporting what it suppressed.
    fn admit(&self, now: Instant) -> bool {
        if now.saturating_duration_since(self.window_start.get()) >= Duration::from_secs(1) {
            let suppressed = self.suppressed.replace(0);
            if suppressed > 0 {
                log::info!(
                    "{suppressed} more connections were closed for bad input in one second \
                     (logged {CLOSINGS_LOGGED_PER_SECOND} a second at most)"
                );
            }
            self.window_start.set(now);
            self.logged.set(0);
        }
        if self.logged.get() < CLOSINGS_LOGGED_PER_SECOND {
            self.logged.set(self.logged.get() + 1);
            true
        } else {
            self.suppressed.set(self.suppressed.get() + 1);
            false
        }
    }

    /// Closings counted but not logged in the current window.
    #[cfg(test)]
    fn suppressed(&self) -> u32 {
        self.suppressed.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_fit_the_budget_and_give_back_when_dropped() {
        let budget = FrameBudget::new(100);
        let a = budget.try_reserve(60).expect("fits");
        assert!(budget.try_reserve(41).is_none(), "60 + 41 > 100");
        let b = budget.try_reserve(40).expect("fits exactly");
        assert_eq!(budget.reserved(), 100);
        drop(a);
        assert_eq!(budget.reserved(), 40);
        drop(b);
        assert_eq!(budget.reserved(), 0);
    }

    #[test]
    fn closings_past_the_rate_are_counted_not_logged() {
        let log = ClosingLog::default();
        let start = Instant::now();
        let admitted = (0..100).filter(|_| log.admit(start)).count();
        assert_eq!(admitted, CLOSINGS_LOGGED_PER_SECOND as usize);
        assert_eq!(log.suppressed(), 100 - CLOSINGS_LOGGED_PER_SECOND);
        // A second later the window starts again (after reporting the count).
        assert!(log.admit(start + Duration::from_secs(1)));
        assert_eq!(log.suppressed(), 0);
    }
}
