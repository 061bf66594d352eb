//! What this thread's logs measured of their durability work: fdatasync latency and how many
//! waiting appends each sync acknowledged (the group-commit batch).
//!
//! Kept per thread, like the tail-cache budget ([`super::set_shard_budget`]): a broker shard
//! is one thread, so its logs record into plain cells no other shard touches, and the shard
//! copies them out when scraped ([`snapshot`]).

use std::cell::RefCell;
use std::time::Duration;

use telemetry::Histogram;

/// This thread's figures since it started.
#[derive(Clone, Debug, Default)]
pub struct SyncStats {
    /// Each fdatasync's latency, in microseconds.
    pub fdatasync_us: Histogram,
    /// Per fdatasync that released waiting appends (sync topics, offsets, replies): how many.
    pub appends_per_sync: Histogram,
}

thread_local! {
    static STATS: RefCell<SyncStats> = RefCell::new(SyncStats::default());
}

/// Counts one fdatasync that took `elapsed`.
pub(crate) fn record_fdatasync(elapsed: Duration) {
    let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    STATS.with(|s| s.borrow_mut().fdatasync_us.observe(us));
}

/// Counts one sync that released `appends` waiting appends (none: not a group commit).
pub(crate) fn record_group_commit(appends: u64) {
    if appends > 0 {
        STATS.with(|s| s.borrow_mut().appends_per_sync.observe(appends));
    }
}

/// A copy of this thread's figures.
pub fn snapshot() -> SyncStats {
    STATS.with(|s| s.borrow().clone())
}
