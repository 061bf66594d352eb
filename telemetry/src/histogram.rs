//! A histogram of non-negative integer observations with fixed power-of-two bucket bounds.
//!
//! Fixed bounds make recording one `leading_zeros` and two additions, with no allocation and
//! no search, and let histograms of several shards be merged bucket by bucket at scrape time.
//!
//! [`Histogram`] is for one thread (a broker shard's `Cell`-owned state); [`AtomicHistogram`]
//! is the same buckets as relaxed atomics, for servers whose requests run on several threads
//! (the proxy's workers), read at scrape without a lock.

use std::sync::atomic::{AtomicU64, Ordering};

/// Buckets: bound `2^i` for `i` in `0..BUCKETS`, the last one open (`+Inf`).
const BUCKETS: usize = 32;

/// Observations counted into buckets with upper bounds 1, 2, 4, … 2^30, +Inf (in whatever
/// unit the caller records: microseconds, appends).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    buckets: [u64; BUCKETS],
    sum: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: [0; BUCKETS],
            sum: 0,
        }
    }
}

impl Histogram {
    /// Counts one observation of `value`.
    pub fn observe(&mut self, value: u64) {
        self.buckets[bucket_of(value)] += 1;
        self.sum = self.sum.saturating_add(value);
    }

    /// Adds `other`'s observations to these.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *mine += theirs;
        }
        self.sum = self.sum.saturating_add(other.sum);
    }

    /// How many observations were counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The sum of every observation.
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// Non-cumulative counts per upper bound, the bounds scaled by `scale` (e.g. 1e-6 to
    /// report microseconds in seconds); the last bound is `f64::MAX`, which the encoder
    /// writes as `+Inf`.
    pub(crate) fn scaled_buckets(&self, scale: f64) -> Vec<(f64, u64)> {
        (0..BUCKETS)
            .map(|i| {
                let bound = if i == BUCKETS - 1 {
                    f64::MAX
                } else {
                    (1u64 << i) as f64 * scale
                };
                (bound, self.buckets[i])
            })
            .collect()
    }
}

/// The smallest `i` with `value <= 2^i` (0 and 1 land in bucket 0), the last bucket open.
fn bucket_of(value: u64) -> usize {
    let bucket = (u64::BITS - value.saturating_sub(1).leading_zeros()) as usize;
    bucket.min(BUCKETS - 1)
}

/// A [`Histogram`] that any thread may record into: each observation is two relaxed
/// `fetch_add`s, no lock; a scrape copies it with [`AtomicHistogram::snapshot`]. A snapshot
/// taken while observations land may count one in a bucket before its sum, which a scrape
/// every few seconds cannot tell apart from one a moment later.
#[derive(Debug)]
pub struct AtomicHistogram {
    buckets: [AtomicU64; BUCKETS],
    sum: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0),
        }
    }
}

impl AtomicHistogram {
    /// Counts one observation of `value`.
    pub fn observe(&self, value: u64) {
        self.buckets[bucket_of(value)].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// The observations so far, as a plain histogram to render.
    pub fn snapshot(&self) -> Histogram {
        Histogram {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_holds_them() {
        let mut h = Histogram::default();
        for v in [0, 1, 2, 3, 4, 5, u64::MAX] {
            h.observe(v);
        }
        let b = h.scaled_buckets(1.0);
        assert_eq!(b[0], (1.0, 2)); // 0, 1
        assert_eq!(b[1], (2.0, 1)); // 2
        assert_eq!(b[2], (4.0, 2)); // 3, 4
        assert_eq!(b[3], (8.0, 1)); // 5
        assert_eq!(b[BUCKETS - 1], (f64::MAX, 1));
        assert_eq!(h.count(), 7);
    }

    #[test]
    fn an_atomic_histogram_counts_like_a_plain_one_from_many_threads() {
        let shared = std::sync::Arc::new(AtomicHistogram::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let shared = shared.clone();
                std::thread::spawn(move || {
                    for v in [0, 3, 1000] {
                        shared.observe(v);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut plain = Histogram::default();
        for _ in 0..4 {
            for v in [0, 3, 1000] {
                plain.observe(v);
            }
        }
        assert_eq!(shared.snapshot(), plain);
    }

    #[test]
    fn merging_adds_counts_and_sums() {
        let mut a = Histogram::default();
        a.observe(10);
        let mut b = Histogram::default();
        b.observe(100);
        a.merge(&b);
        assert_eq!((a.count(), a.sum()), (2, 110));
    }
}
