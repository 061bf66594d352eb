//! File names and directory durability: the one place that knows how a queue's files are named.
//!
//! A queue directory holds, per segment, `<base-offset:020>.log` (record batches) and
//! `<base-offset:020>.idx` (its sparse offset index). The base offset is zero-padded to 20
//! digits, the width of `u64::MAX`, so names sort in offset order. It also holds [`LOCK_FILE_NAME`],
//! the file whose exclusive lock marks the one log writing the directory, and briefly the
//! iopoll probe files of [`iopoll_probe_file_name`].

use std::path::{Path, PathBuf};

use crate::log::storage::Storage;

/// Suffix of a segment's record batch file.
pub const LOG_SUFFIX: &str = ".log";
/// Suffix of a segment's sparse offset index file.
pub const INDEX_SUFFIX: &str = ".idx";
/// Name of the file a log locks (exclusively) in its directory for as long as it may write.
/// It stays after the log closes: removing it would race with the next log locking it.
pub const LOCK_FILE_NAME: &str = "LOCK";
/// Name of the file holding the offset reservation: offsets below its limit may have been
/// acknowledged (`engine::log::reservation`).
pub const RESERVATION_FILE_NAME: &str = "RESERVED";
/// Name of the journal of offset ranges the log skipped (`engine::log::skipped`).
pub const SKIPPED_FILE_NAME: &str = "SKIPPED";
/// Name of the file a cleanly closed log leaves: how long its tail segment was then
/// (`engine::log::closed`).
pub const CLOSED_FILE_NAME: &str = "CLOSED";
/// Name of the journal of leader epochs: at which offset each epoch of a replicated queue
/// began (`engine::log::epochs`).
pub const EPOCHS_FILE_NAME: &str = "EPOCHS";
/// Prefix of the one-block files `DmaStorage` creates and removes to steer the runtime's iopoll
/// probe.
pub const IOPOLL_PROBE_PREFIX: &str = ".defibus-iopoll-probe";
/// Name of the file in the data directory that keeps space back for metadata writes on a full
/// disk (`engine::reserve`).
pub const RESERVE_FILE_NAME: &str = "reserve";
/// Name of the file in the data directory holding the end of the last block of producer ids
/// leased (`engine::producers::ids`).
pub const PRODUCER_IDS_FILE_NAME: &str = "PRODUCER_IDS";
/// Digits of a base offset in a file name: enough for `u64::MAX`.
pub const BASE_OFFSET_DIGITS: usize = 20;

const _: () = assert!(u64::MAX.ilog10() as usize + 1 == BASE_OFFSET_DIGITS);

/// What a file in a queue directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentFileKind {
    /// `<base>.log`
    Log,
    /// `<base>.idx`
    Index,
}

/// Name of the log file of the segment starting at `base_offset`.
pub fn log_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}{LOG_SUFFIX}")
}

/// Name of the index file of the segment starting at `base_offset`.
pub fn index_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}{INDEX_SUFFIX}")
}

/// Path of the log file of the segment starting at `base_offset` in `dir`.
pub fn log_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(log_file_name(base_offset))
}

/// Path of the index file of the segment starting at `base_offset` in `dir`.
pub fn index_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(index_file_name(base_offset))
}

/// Path of the lock file of the log in `dir`.
pub fn lock_path(dir: &Path) -> PathBuf {
    dir.join(LOCK_FILE_NAME)
}

/// Path of the offset reservation file of the log in `dir`.
pub fn reservation_path(dir: &Path) -> PathBuf {
    dir.join(RESERVATION_FILE_NAME)
}

/// Path of the skipped-ranges journal of the log in `dir`.
pub fn skipped_path(dir: &Path) -> PathBuf {
    dir.join(SKIPPED_FILE_NAME)
}

/// Path of the clean-close record of the log in `dir`.
pub fn closed_path(dir: &Path) -> PathBuf {
    dir.join(CLOSED_FILE_NAME)
}

/// Path of the leader-epoch journal of the queue directory `dir`.
pub fn epochs_path(dir: &Path) -> PathBuf {
    dir.join(EPOCHS_FILE_NAME)
}

/// Name of an iopoll probe file unique to this process (`pid`) and probe (`sequence`), so
/// probes running at once never share a file.
pub fn iopoll_probe_file_name(pid: u32, sequence: u64) -> String {
    format!("{IOPOLL_PROBE_PREFIX}.{pid}.{sequence}")
}

/// Parses a segment file name; `None` for any other file (temporary files, foreign files).
pub fn parse_segment_file_name(name: &str) -> Option<(u64, SegmentFileKind)> {
    let (stem, kind) = if let Some(stem) = name.strip_suffix(LOG_SUFFIX) {
        (stem, SegmentFileKind::Log)
    } else if let Some(stem) = name.strip_suffix(INDEX_SUFFIX) {
        (stem, SegmentFileKind::Index)
    } else {
        return None;
    };
    if stem.len() != BASE_OFFSET_DIGITS || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok().map(|base| (base, kind))
}

/// Makes the creation, removal or truncation of entries in `dir` durable.
///
/// A new file's name lives in its directory; until the directory is synced a crash can lose
/// the file even if its data was fdatasynced.
pub async fn fsync_directory<S: Storage>(storage: &S, dir: &Path) -> std::io::Result<()> {
    storage.fsync_dir(dir).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort() {
        assert_eq!(log_file_name(42), "00000000000000000042.log");
        assert_eq!(index_file_name(u64::MAX), "18446744073709551615.idx");
        assert_eq!(
            parse_segment_file_name("00000000000000000042.log"),
            Some((42, SegmentFileKind::Log))
        );
        assert_eq!(
            parse_segment_file_name("18446744073709551615.idx"),
            Some((u64::MAX, SegmentFileKind::Index))
        );
        assert_eq!(parse_segment_file_name("42.log"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004x.log"), None);
        assert_eq!(parse_segment_file_name("00000000000000000042.tmp"), None);
        assert!(log_file_name(9) < log_file_name(10));
        assert_eq!(parse_segment_file_name(LOCK_FILE_NAME), None);
        assert_eq!(parse_segment_file_name(RESERVATION_FILE_NAME), None);
        assert_eq!(parse_segment_file_name(SKIPPED_FILE_NAME), None);
        assert_eq!(parse_segment_file_name(&iopoll_probe_file_name(7, 3)), None);
        assert_ne!(iopoll_probe_file_name(7, 3), iopoll_probe_file_name(7, 4));
    }
}
