//! The tail cache: recent batches kept in memory as `Bytes`, served to tailing consumers
//! without a disk read.
//!
//! Invariant: the cache holds a contiguous run of batches ending at the log's next offset and
//! includes every batch not yet written to disk, so reads at or above
//! [`TailCache::start_offset`] never touch the disk and reads below it only touch written data.
//!
//! Each cache is bounded by its log's `tail_cache_bytes`, and all caches of one shard (one
//! executor thread) together by the shard's [`CacheBudget`]: without the shared bound, memory
//! would grow with the number of queues (16 MiB each by default), and a broker with thousands
//! of queues would spend its time zeroing fresh pages for caches nobody reads, or run out.

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    rc::Rc,
};

use bytes::Bytes;

/// Default memory for the tail caches of one shard together: 256 MiB.
pub const DEFAULT_SHARD_TAIL_CACHE_BYTES: usize = 256 << 20;

/// The memory the tail caches of one shard share. Over it, a cache evicts its oldest written
/// batches whenever it is appended to or its writes complete, so the queues being written give
/// memory back and those being read from recently keep theirs.
#[derive(Debug)]
pub struct CacheBudget {
    used: Cell<usize>,
    max: usize,
}

impl CacheBudget {
    fn new(max: usize) -> Rc<Self> {
        Rc::new(Self {
            used: Cell::new(0),
            max,
        })
    }

    /// Bytes held by the shard's caches now (batches not yet written may take it past the
    /// bound).
    pub fn used(&self) -> usize {
        self.used.get()
    }

    /// The bound.
    pub fn max(&self) -> usize {
        self.max
    }

    fn over(&self) -> bool {
        self.used.get() > self.max
    }
}

thread_local! {
    // One per executor thread, so one per shard: logs live on the thread that opened them.
    static SHARD_BUDGET: RefCell<Rc<CacheBudget>> =
        RefCell::new(CacheBudget::new(DEFAULT_SHARD_TAIL_CACHE_BYTES));
}

/// Bounds the tail caches of the logs this thread opens from now on to `max_bytes` together.
/// A shard calls it once at start, before it opens a log.
pub fn set_shard_budget(max_bytes: usize) {
    SHARD_BUDGET.with(|budget| *budget.borrow_mut() = CacheBudget::new(max_bytes));
}

/// The budget the logs this thread opens share.
pub fn shard_budget() -> Rc<CacheBudget> {
    SHARD_BUDGET.with(|budget| budget.borrow().clone())
}

#[derive(Debug)]
struct Cached {
    base_offset: u64,
    next_offset: u64,
    bytes: Bytes,
}

/// Recent batches, bounded by bytes and by the shard's budget (except for batches not yet
/// written to disk).
#[derive(Debug)]
pub struct TailCache {
    batches: VecDeque<Cached>,
    bytes: usize,
    bytes_max: usize,
    budget: Rc<CacheBudget>,
    /// First offset served from the cache: the first cached batch, or the log's end if empty.
    start_offset: u64,
}

impl TailCache {
    /// An empty cache for a log whose next offset is `next_offset`, sharing this thread's
    /// [`shard_budget`].
    pub fn new(bytes_max: usize, next_offset: u64) -> Self {
        Self {
            batches: VecDeque::new(),
            bytes: 0,
            bytes_max,
            budget: shard_budget(),
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
        self.budget.used.set(self.budget.used.get() + bytes.len());
        self.batches.push_back(Cached {
            base_offset,
            next_offset,
            bytes,
        });
        self.evict(written_offset);
    }

    /// Drops the oldest batches while over its bound or the shard's, keeping any batch not
    /// fully written to disk (those below `written_offset` can be read back from the file).
    pub fn evict(&mut self, written_offset: u64) {
        while self.bytes > self.bytes_max || self.budget.over() {
            let Some(front) = self.batches.front() else {
                break;
            };
            if front.next_offset > written_offset {
                break;
            }
            let len = front.bytes.len();
            self.bytes -= len;
            self.budget.used.set(self.budget.used.get() - len);
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

impl Drop for TailCache {
    fn drop(&mut self) {
        self.budget.used.set(self.budget.used.get() - self.bytes);
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

    #[test]
    fn caches_of_one_thread_share_its_budget_and_give_bytes_back() {
        // A thread of its own: the budget is per thread, and tests share threads.
        std::thread::spawn(|| {
            set_shard_budget(20);
            let budget = shard_budget();
            let mut quiet = TailCache::new(100, 0);
            quiet.push(Bytes::from(vec![1; 12]), 0, 1, 1);
            let mut busy = TailCache::new(100, 0);
            busy.push(Bytes::from(vec![2; 6]), 0, 1, 0);
            busy.push(Bytes::from(vec![3; 6]), 1, 2, 0);
            // 24 bytes over a budget of 20, but nothing of `busy` is written yet: all kept.
            assert_eq!(budget.used(), 24);
            assert_eq!(busy.start_offset(), 0);
            // Its writes complete: the cache being written gives back its oldest batch.
            busy.evict(2);
            assert_eq!(budget.used(), 18);
            assert_eq!(busy.start_offset(), 1);
            assert_eq!(
                quiet.start_offset(),
                0,
                "under the budget again: the other cache keeps its batch"
            );
            drop(quiet);
            assert_eq!(budget.used(), 6, "a dropped cache returns its bytes");
            drop(busy);
            assert_eq!(budget.used(), 0);
        })
        .join()
        .unwrap();
    }
}
