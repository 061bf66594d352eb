//! Reconnect pacing: exponential, bounded and jittered, so that a fleet of clients that lost
//! the same broker does not reconnect in lockstep.

use std::time::{Duration, Instant};

/// Exponential backoff between `min` and `max`, with "equal jitter": each delay is half the
/// exponential step plus a random part of the other half.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    /// A backoff starting at `min` and never exceeding `max`, seeded from the clock.
    pub fn new(min: Duration, max: Duration) -> Self {
        let seed = Instant::now().elapsed().as_nanos() as u64
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        Self::with_seed(min, max, seed)
    }

    /// Like [`Self::new`] with a fixed seed, for reproducible tests.
    pub fn with_seed(min: Duration, max: Duration, seed: u64) -> Self {
        Self {
            min: min.min(max),
            max,
            attempt: 0,
            rng: seed | 1,
        }
    }

    /// The delay to wait before the next attempt; each call doubles the step up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let step = self
            .min
            .saturating_mul(1u32 << self.attempt.min(30))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = step / 2;
        let jitter_nanos = half.as_nanos() as u64;
        let jitter = if jitter_nanos == 0 {
            0
        } else {
            self.next_random() % (jitter_nanos + 1)
        };
        half + Duration::from_nanos(jitter)
    }

    /// Starts over at `min`, after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// xorshift64*: jitter needs spread, not cryptographic strength.
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_within_bounds_and_reset() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        let mut backoff = Backoff::with_seed(min, max, 42);
        let mut step = min;
        for _ in 0..10 {
            let delay = backoff.next_delay();
            assert!(
                delay >= step / 2 && delay <= step,
                "{delay:?} for step {step:?}"
            );
            step = (step * 2).min(max);
        }
        assert_eq!(backoff.attempts(), 10);
        backoff.reset();
        assert!(backoff.next_delay() <= min);
    }

    #[test]
    fn jitter_spreads_clients_apart() {
        let min = Duration::from_secs(1);
        let delays: std::collections::HashSet<_> = (0..20)
            .map(|i| Backoff::with_seed(min, min * 8, i * 7919 + 1).next_delay())
            .collect();
        assert!(delays.len() > 10, "{delays:?}");
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut backoff = Backoff::with_seed(Duration::from_secs(1), Duration::from_secs(5), 7);
        for _ in 0..100 {
            assert!(backoff.next_delay() <= Duration::from_secs(5));
        }
    }
}
