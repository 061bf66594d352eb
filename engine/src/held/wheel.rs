//! The timer index of one queue's held messages: which held offset is due when.
//!
//! Millions of delayed messages may wait at once, so an entry is 16 bytes (due time and held
//! offset, nothing boxed) and the index is two tiers, a coarse timing wheel:
//!
//! - *far*: buckets of [`BUCKET_MS`] by due time, each a plain `Vec` of entries in arrival
//!   order (a `BTreeMap` node per bucket, not per entry);
//! - *near*: the earliest bucket, turned into a binary heap when it becomes current, so
//!   entries fire in due order.
//!
//! Every near entry is due before `near_until` and every far entry at or after it, so the
//! heap's top is the earliest entry of all. Cancelled entries are not searched for: the
//! queue's pending set says whether a popped entry still waits ([`super::Pending`]). Memory is
//! at most about 32 bytes per entry (a `Vec` grows to twice its length), well under the
//! 64 bytes per pending message the issue allows.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

/// Width of a far bucket: entries due within one bucket are ordered only when it becomes
/// current, so a bucket bounds the heap a burst can build.
pub(crate) const BUCKET_MS: u64 = 1_000;

/// One entry: the held offset due at `due_ms`. Ordered by time, then offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Entry {
    pub due_ms: u64,
    pub offset: u64,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 16);

/// See the module docs.
#[derive(Default)]
pub(crate) struct Wheel {
    near: BinaryHeap<Reverse<Entry>>,
    /// Entries due before this are in `near`.
    near_until: u64,
    far: BTreeMap<u64, Vec<Entry>>,
    len: usize,
}

impl Wheel {
    /// Adds an entry.
    pub fn insert(&mut self, entry: Entry) {
        self.len += 1;
        if entry.due_ms < self.near_until {
            self.near.push(Reverse(entry));
        } else {
            self.far
                .entry(entry.due_ms / BUCKET_MS)
                .or_default()
                .push(entry);
        }
    }

    /// The earliest due time, if any entry waits.
    pub fn next_due_ms(&mut self) -> Option<u64> {
        self.refill();
        self.near.peek().map(|Reverse(e)| e.due_ms)
    }

    /// Removes and returns the earliest entry if it is due at `now_ms`.
    pub fn pop_due(&mut self, now_ms: u64) -> Option<Entry> {
        self.refill();
        match self.near.peek() {
            Some(Reverse(e)) if e.due_ms <= now_ms => {
                self.len -= 1;
                self.near.pop().map(|Reverse(e)| e)
            }
            _ => None,
        }
    }

    /// Entries waiting (cancelled ones included until their time).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes of memory the index holds (allocated capacity, not only what is used).
    pub fn bytes(&self) -> usize {
        let entry = std::mem::size_of::<Entry>();
        let vec = std::mem::size_of::<Vec<Entry>>();
        // A B-tree node holds up to 11 keys and values; count a node's share per bucket.
        let far: usize = self
            .far
            .values()
            .map(|v| v.capacity() * entry + vec + 8 + 16)
            .sum();
        std::mem::size_of::<Self>() + self.near.capacity() * entry + far
    }

    /// Moves the next far bucket into the heap once the heap ran empty.
    fn refill(&mut self) {
        if !self.near.is_empty() {
            return;
        }
        let Some((bucket, entries)) = self.far.pop_first() else {
            return;
        };
        self.near_until = (bucket + 1).saturating_mul(BUCKET_MS);
        // Reuses the bucket's allocation; the old, empty heap's is dropped.
        self.near = BinaryHeap::from(entries.into_iter().map(Reverse).collect::<Vec<_>>());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_out_in_due_order_only_when_due() {
        let mut wheel = Wheel::default();
        for (due, offset) in [(5_000, 1), (10, 2), (2_500, 3), (10, 0), (999_999, 4)] {
            wheel.insert(Entry {
                due_ms: due,
                offset,
            });
        }
        assert_eq!(wheel.next_due_ms(), Some(10));
        assert_eq!(wheel.pop_due(9), None);
        let mut out = Vec::new();
        while let Some(e) = wheel.pop_due(6_000) {
            out.push((e.due_ms, e.offset));
            // An entry arriving for the current bucket still comes out in order.
            if e.offset == 2 {
                wheel.insert(Entry {
                    due_ms: 20,
                    offset: 9,
                });
            }
        }
        assert_eq!(
            out,
            [(10, 0), (10, 2), (20, 9), (2_500, 3), (5_000, 1)],
            "due order, ties by offset"
        );
        assert_eq!(wheel.len(), 1);
        assert_eq!(wheel.next_due_ms(), Some(999_999));
    }

    /// The bound: 1 M pending delayed messages in at most 64 MiB.
    #[test]
    fn a_million_pending_entries_fit_in_64_mib() {
        let mut wheel = Wheel::default();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for offset in 0..1_000_000u64 {
            // Due times spread over an hour, in no order.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            wheel.insert(Entry {
                due_ms: 1_700_000_000_000 + x % 3_600_000,
                offset,
            });
        }
        let bytes = wheel.bytes();
        assert!(bytes <= 64 << 20, "{bytes} bytes for 1 M entries");
        assert!(bytes <= 40 << 20, "{bytes} bytes: more than ~40 B an entry");
        let mut last = 0;
        let mut n = 0;
        while let Some(e) = wheel.pop_due(u64::MAX) {
            assert!(e.due_ms >= last);
            last = e.due_ms;
            n += 1;
        }
        assert_eq!(n, 1_000_000);
    }
}
