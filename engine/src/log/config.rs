//! Configuration of one log, its defaults, and the limits they must respect.

use std::path::PathBuf;

use crate::log::error::LogError;

/// Default largest segment file: 1 GiB, Kafka's default; big enough that rolls are rare.
pub const DEFAULT_SEGMENT_BYTES_MAX: u64 = 1 << 30;
/// Default spacing of sparse index entries: one per 4 KiB of log, one device block.
pub const DEFAULT_INDEX_INTERVAL_BYTES: u32 = 4096;
/// Default async flush interval.
pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = 10;
/// Default buffered bytes that trigger an async flush before the interval ends.
pub const DEFAULT_FLUSH_BYTES: u64 = 1 << 20;
/// Default memory for recent batches served to tailing consumers.
pub const DEFAULT_TAIL_CACHE_BYTES: usize = 16 << 20;
/// Default largest batch accepted by `append`.
pub const DEFAULT_BATCH_LEN_MAX: usize = 8 << 20;

/// Largest `segment_bytes_max` accepted. Index entries store file positions as `u32`, and one
/// batch may start just below the limit, so limit + largest batch must fit in `u32`.
pub const SEGMENT_BYTES_MAX_LIMIT: u64 = 2 << 30;
/// Largest `batch_len_max` accepted: the protocol's own limit.
pub const BATCH_LEN_MAX_LIMIT: usize = protocol::record::BATCH_LEN_MAX;
/// Appends copy batches into aligned buffers of this size ("chunks"); the committer writes a
/// chunk as soon as it is full. Big enough that a write costs little per byte, small enough
/// that several are in flight at once. A multiple of every device block size.
pub const WRITE_CHUNK_BYTES: usize = 1 << 20;
/// Chunk writes a log keeps in flight at once, like a write-behind stream.
pub const WRITES_IN_FLIGHT_MAX: usize = 4;
/// Async mode: once this many appended bytes wait to be written, an append resolves only when
/// writes brought them below it again (back pressure).
pub const ASYNC_UNWRITTEN_BYTES_MAX: u64 = 8 << 20;
/// Chunk buffers a log keeps for reuse when they come back from a write.
pub const FREE_CHUNKS_MAX: usize = 4;
/// Async mode: the fewest offsets the committer reserves ahead of `next_offset` at once (the
/// offset reservation, `docs/ARCHITECTURE.md` §3.1). Offsets a crash skips are at most this
/// plus what the recent rate asks for; `u64` offsets make the waste harmless.
pub const RESERVE_STEP_OFFSETS_MIN: u64 = 1 << 16;
/// Async mode: the most offsets reserved at once, whatever the rate.
pub const RESERVE_STEP_OFFSETS_MAX: u64 = 1 << 30;
/// Async mode: a reservation covers about this long at the recent append rate, so raising it
/// (one 4 KiB write and an fdatasync) is rare and never on an append's path.
pub const RESERVE_AHEAD_MS: u64 = 2_000;

const _: () = {
    assert!(SEGMENT_BYTES_MAX_LIMIT + BATCH_LEN_MAX_LIMIT as u64 <= u32::MAX as u64);
    assert!(DEFAULT_SEGMENT_BYTES_MAX <= SEGMENT_BYTES_MAX_LIMIT);
    assert!(DEFAULT_BATCH_LEN_MAX <= BATCH_LEN_MAX_LIMIT);
    assert!(DEFAULT_BATCH_LEN_MAX as u64 <= DEFAULT_SEGMENT_BYTES_MAX);
    assert!((DEFAULT_INDEX_INTERVAL_BYTES as u64) < DEFAULT_SEGMENT_BYTES_MAX);
    assert!(DEFAULT_FLUSH_BYTES <= DEFAULT_SEGMENT_BYTES_MAX);
    assert!(DEFAULT_FLUSH_INTERVAL_MS > 0);
    assert!(WRITE_CHUNK_BYTES.is_power_of_two() && WRITE_CHUNK_BYTES >= 4096);
    assert!(WRITES_IN_FLIGHT_MAX >= 1);
    // Back pressure must leave room for the chunks in flight plus one being filled, or appends
    // would wait for writes that cannot start.
    assert!(ASYNC_UNWRITTEN_BYTES_MAX >= ((WRITES_IN_FLIGHT_MAX + 1) * WRITE_CHUNK_BYTES) as u64);
    // The committer raises the reservation once half of it is used: a step must leave room.
    assert!(RESERVE_STEP_OFFSETS_MIN >= 2 && RESERVE_STEP_OFFSETS_MIN <= RESERVE_STEP_OFFSETS_MAX);
};

/// When appends become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushMode {
    /// `append` resolves once the batch is in memory (or, under back pressure, once enough
    /// was written). The committer writes [`WRITE_CHUNK_BYTES`] chunks as they fill, several
    /// at once, and fdatasyncs about every `interval_ms`, or once `bytes` are not yet synced,
    /// and on `flush()`/`close()`. While writes are streaming, that fdatasync runs beside them
    /// and covers what was written; the unfilled tail is written when the log goes idle.
    Async {
        /// About the longest time a batch stays unsynced (at most twice this under load).
        interval_ms: u64,
        /// Unsynced bytes that start an fdatasync before the interval ends.
        bytes: u64,
    },
    /// `append` resolves only after an fdatasync covered the batch (group commit: one
    /// fdatasync acknowledges every append buffered before it started).
    Sync,
}

/// Configuration of one log (one queue). Build with [`LogConfig::new`] and override fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Directory holding the segment files; created if missing.
    pub dir: PathBuf,
    /// A segment rolls when the next batch would take it past this size. Default 1 GiB.
    pub segment_bytes_max: u64,
    /// One index entry per this many bytes of log. Default 4096.
    pub index_interval_bytes: u32,
    /// Durability of appends. Default `Async { interval_ms: 10, bytes: 1 MiB }`.
    pub flush: FlushMode,
    /// Retention by total size: oldest segments are deleted past it. Default none.
    pub retention_bytes_max: Option<u64>,
    /// Retention by age of a segment's newest append. Default none.
    pub retention_age_ms: Option<u64>,
    /// Memory for recent batches served without disk reads. Default 16 MiB. Batches not yet
    /// written to disk are always kept, even past this bound.
    pub tail_cache_bytes: usize,
    /// Largest batch `append` accepts. Default 8 MiB.
    pub batch_len_max: usize,
    /// Once a failed write poisoned the log, the first append (or
    /// [`Log::reopen_if_poisoned`](crate::log::Log::reopen_if_poisoned)) at least this long
    /// after the failure reopens it from what is on disk, so a log poisoned by a full disk
    /// heals once space returns. The wait keeps a still-full disk from costing a recovery per
    /// append. Default none: the log stays poisoned until its owner reopens it.
    pub reopen_after_poison_ms: Option<u64>,
    /// In `Async` mode, keep the offset reservation (`RESERVED`): offsets a crash may have
    /// lost are skipped, never reused. Default true. A replicated queue turns it off: its
    /// offsets are the leader's, a replica cuts what a crash left unsynced and fetches it
    /// again, and the leader-epoch journal (not a gap) tells it where its log diverged.
    pub offset_reservation: bool,
}

impl LogConfig {
    /// A configuration with the documented defaults, storing in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_bytes_max: DEFAULT_SEGMENT_BYTES_MAX,
            index_interval_bytes: DEFAULT_INDEX_INTERVAL_BYTES,
            flush: FlushMode::Async {
                interval_ms: DEFAULT_FLUSH_INTERVAL_MS,
                bytes: DEFAULT_FLUSH_BYTES,
            },
            retention_bytes_max: None,
            retention_age_ms: None,
            tail_cache_bytes: DEFAULT_TAIL_CACHE_BYTES,
            batch_len_max: DEFAULT_BATCH_LEN_MAX,
            reopen_after_poison_ms: None,
            offset_reservation: true,
        }
    }

    /// Checks how the fields relate; says which one is wrong.
    pub fn validate(&self) -> Result<(), LogError> {
        let fail = |reason: String| Err(LogError::Config { reason });
        if self.segment_bytes_max == 0 || self.segment_bytes_max > SEGMENT_BYTES_MAX_LIMIT {
            return fail(format!(
                "segment_bytes_max {} must be in 1..={SEGMENT_BYTES_MAX_LIMIT}",
                self.segment_bytes_max
            ));
        }
        if self.batch_len_max == 0 || self.batch_len_max > BATCH_LEN_MAX_LIMIT {
            return fail(format!(
                "batch_len_max {} must be in 1..={BATCH_LEN_MAX_LIMIT}",
                self.batch_len_max
            ));
        }
        if self.index_interval_bytes == 0 {
            return fail("index_interval_bytes must be at least 1".into());
        }
        if let FlushMode::Async { interval_ms, bytes } = self.flush {
            if interval_ms == 0 || bytes == 0 {
                return fail(format!(
                    "async flush needs interval_ms > 0 and bytes > 0, got {interval_ms} ms, {bytes} bytes"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        LogConfig::new("/tmp/x").validate().unwrap();
    }

    #[test]
    fn rejects_oversized_segments() {
        let mut config = LogConfig::new("/tmp/x");
        config.segment_bytes_max = SEGMENT_BYTES_MAX_LIMIT + 1;
        assert!(matches!(config.validate(), Err(LogError::Config { .. })));
    }
}
