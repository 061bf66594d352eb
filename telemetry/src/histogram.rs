//! A histogram of non-negative integer observations with fixed power-of-two bucket bounds.
//!
//! Fixed bounds make recording one `leading_zeros` and two additions, with no allocation and
//! no search, and let histograms of several shards be merged bucket by bucket at scrape time.

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
        // The smallest i with value <= 2^i: 0 and 1 land in bucket 0.
        let bucket = (u64::BITS - value.saturating_sub(1).leading_zeros()) as usize;
        self.buckets[bucket.min(BUCKETS - 1)] += 1;
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
    fn merging_adds_counts_and_sums() {
        let mut a = Histogram::default();
        a.observe(10);
        let mut b = Histogram::default();
        b.observe(100);
        a.merge(&b);
        assert_eq!((a.count(), a.sum()), (2, 110));
    }
}
