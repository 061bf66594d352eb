//! One queue's traffic counters, recorded by the shard that owns the queue.
//!
//! Plain `Cell`s: only the owning shard's thread writes or reads them, so recording is an add
//! to memory no other core shares; a scrape reaches them through that shard ([`super::door`]).

use std::cell::Cell;

/// Records and bytes through one queue since the broker started.
#[derive(Default)]
pub(crate) struct Traffic {
    records_in: Cell<u64>,
    bytes_in: Cell<u64>,
    records_out: Cell<u64>,
    bytes_out: Cell<u64>,
    depth_refusals: Cell<u64>,
}

/// A copy of a queue's [`Traffic`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TrafficCounts {
    pub records_in: u64,
    pub bytes_in: u64,
    pub records_out: u64,
    pub bytes_out: u64,
    pub depth_refusals: u64,
}

impl Traffic {
    /// A batch of `records` records, `bytes` long, was appended.
    pub fn appended(&self, records: u64, bytes: u64) {
        add(&self.records_in, records);
        add(&self.bytes_in, bytes);
    }

    /// A batch was pushed to one subscription (counted once per subscription it reaches).
    pub fn pushed(&self, records: u64, bytes: u64) {
        add(&self.records_out, records);
        add(&self.bytes_out, bytes);
    }

    /// A produce or request was refused because the queue was at its depth limit.
    pub fn refused_at_depth(&self) {
        add(&self.depth_refusals, 1);
    }

    pub fn counts(&self) -> TrafficCounts {
        TrafficCounts {
            records_in: self.records_in.get(),
            bytes_in: self.bytes_in.get(),
            records_out: self.records_out.get(),
            bytes_out: self.bytes_out.get(),
            depth_refusals: self.depth_refusals.get(),
        }
    }
}

fn add(cell: &Cell<u64>, n: u64) {
    cell.set(cell.get().wrapping_add(n));
}
