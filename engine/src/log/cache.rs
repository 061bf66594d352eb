//! The tail cache: recent batches kept in memory as `Bytes`, served to tailing consumers
//! without a disk read.
//!
//! Invariant: the cache holds a contiguous run of batches ending at the log's next offset and
//! includes every batch not yet written to disk, so reads at or above
//! [`TailCache::start_offset`] never touch the disk and reads below it only touch written data.

use std::collections::VecDeque;

use bytes::Bytes;

#[derive(Debug)]
struct Cached {
    base_offset: u64,
    next_offset: u64,
    bytes: Bytes,
}

/// Recent batches, bounded by bytes (except for batches not yet written to disk).
#[derive(Debug)]
pub struct TailCache {
    batches: VecDeque<Cached>,
    bytes: usize,
    bytes_max: usize,
    /// First offset served from the cache: the first cached batch, or the log's end if empty.
    start_offset: u64,
}

impl TailCache {
    /// An empty cache for a log whose next offset is `next_offset`.
    pub fn new(bytes_max: usize, next_offset: u64) -> Self {
        Self {
            batches: VecDeque::new(),
            bytes: 0,
            bytes_max,
            start_offset: next_offset,
        }
    }

    /// First offset the cache can serve.
    pub fn start_offset(&self) -> u64 {
        self.start_offset
    }

    /// Adds the newest batch, then evicts what it may (see [`Self::evict`]).
    pub fn push(&mut self, bytes: Bytes, base_offset: u64, next_offset: u64, written_offset: u64) {
        if self.batches.is_empty() {
            self.start_offset = base_offset;
        }
        self.bytes += bytes.len();
        self.batches.push_back(Cached {
            base_offset,
            next_offset,
            bytes,
        });
        self.evict(written_offset);
    }

    /// Drops the oldest batches while over the bound, keeping any batch not fully written to
    /// disk (those below `written_offset` can be read back from the file).
    pub fn evict(&mut self, written_offset: u64) {
        while self.bytes > self.bytes_max {
            let Some(front) = self.batches.front() else {
                break;
            };
            if front.next_offset > written_offset {
                break;
            }
            self.bytes -= front.bytes.len();
            self.start_offset = front.next_offset;
            self.batches.pop_front();
        }
    }

    /// Whole batches from the one containing `offset`, up to `max_bytes` (at least one).
    /// `offset` must be at least [`Self::start_offset`].
    pub fn read(&self, offset: u64, max_bytes: usize) -> Vec<Bytes> {
        let first = self.batches.partition_point(|b| b.next_offset <= offset);
        let mut out = Vec::new();
        let mut total = 0usize;
        for cached in self.batches.range(first..) {
            debug_assert!(cached.base_offset <= offset || !out.is_empty() || first == 0);
            if !out.is_empty() && total + cached.bytes.len() > max_bytes {
                break;
            }
            total += cached.bytes.len();
            out.push(cached.bytes.clone());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_unwritten_batches_and_reads_whole_batches() {
        let mut cache = TailCache::new(10, 0);
        for i in 0..5u64 {
            cache.push(Bytes::from(vec![i as u8; 6]), i * 2, i * 2 + 2, 0);
        }
        // Nothing written yet: all kept despite the bound.
        assert_eq!(cache.start_offset(), 0);
        assert_eq!(cache.read(3, 1).len(), 1);
        assert_eq!(cache.read(3, 1)[0][0], 1);
        assert_eq!(cache.read(3, 12).len(), 2);
        cache.evict(6);
        assert_eq!(cache.start_offset(), 6);
        assert_eq!(cache.read(9, 100).len(), 1);
        assert!(cache.read(10, 100).is_empty());
    }
}
