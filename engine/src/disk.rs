//! The free-space watermark: a shard refuses new produces with [`Status::DiskFull`] while the
//! data directory's filesystem has less than `storage.min_free_percent` free, so a disk
//! fills to the watermark rather than to the last block (where every write poisons a log).
//! Reads, commits and deletes are not checked: they free space or need little of it.
//!
//! The check is a `statvfs`, cached: refreshed at most every [`FREE_SPACE_CHECK_INTERVAL_MS`]
//! or once the shard appended [`FREE_SPACE_CHECK_BYTES`] since, never once per produce.

use std::{
    cell::Cell,
    io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use protocol::codes::Status;

use crate::{
    config::{FREE_SPACE_CHECK_BYTES, FREE_SPACE_CHECK_INTERVAL_MS},
    error::Reject,
};

/// One shard's view of its data directory's free space.
pub(crate) struct Watermark {
    dir: PathBuf,
    min_free_percent: u8,
    /// When free space was last read; `None` before the first read.
    checked_at: Cell<Option<Instant>>,
    /// Bytes admitted since the last read.
    admitted_bytes: Cell<u64>,
    /// Free space, percent, at the last read (100 when it could not be read).
    free_percent: Cell<u8>,
}

impl Watermark {
    /// A watermark on the filesystem of `dir`; 0 percent turns the check off.
    pub fn new(dir: &Path, min_free_percent: u8) -> Self {
        Self {
            dir: dir.to_path_buf(),
            min_free_percent,
            checked_at: Cell::new(None),
            admitted_bytes: Cell::new(0),
            free_percent: Cell::new(100),
        }
    }

    /// Admits a produce of `len` bytes, or refuses it with `DiskFull` below the watermark.
    pub fn admit(&self, len: u64) -> Result<(), Reject> {
        if self.min_free_percent == 0 {
            return Ok(());
        }
        self.admit_at(Instant::now(), len, || free_percent(&self.dir))
    }

    /// [`Self::admit`] with the clock and the filesystem read injected.
    fn admit_at(
        &self,
        now: Instant,
        len: u64,
        read_free_percent: impl FnOnce() -> io::Result<u8>,
    ) -> Result<(), Reject> {
        let due = self.checked_at.get().is_none_or(|at| {
            now.saturating_duration_since(at) >= Duration::from_millis(FREE_SPACE_CHECK_INTERVAL_MS)
        }) || self.admitted_bytes.get() >= FREE_SPACE_CHECK_BYTES;
        if due {
            self.refresh(now, read_free_percent());
        }
        let free = self.free_percent.get();
        if free < self.min_free_percent {
            return Err(Reject::new(
                Status::DiskFull,
                format!(
                    "{}: {free}% of {} is free, the watermark is {}% (storage.min_free_percent)",
                    Status::DiskFull.message(),
                    self.dir.display(),
                    self.min_free_percent
                ),
            ));
        }
        self.admitted_bytes.set(self.admitted_bytes.get() + len);
        Ok(())
    }

    /// Takes a new reading, logging each crossing of the watermark once.
    fn refresh(&self, now: Instant, read: io::Result<u8>) {
        self.checked_at.set(Some(now));
        self.admitted_bytes.set(0);
        let was_below = self.free_percent.get() < self.min_free_percent;
        let free = match read {
            Ok(free) => free,
            Err(e) => {
                // Refusing every produce because statvfs failed would turn a monitoring
                // problem into an outage; a full disk still shows as failed writes.
                ::log::warn!(
                    "free space of {} unreadable, produces are not held back: {e}",
                    self.dir.display()
                );
                100
            }
        };
        self.free_percent.set(free);
        let below = free < self.min_free_percent;
        if below && !was_below {
            ::log::warn!(
                "{}: {free}% free, below storage.min_free_percent {}%: refusing produces with \
                 DiskFull until space is freed",
                self.dir.display(),
                self.min_free_percent
            );
        } else if was_below && !below {
            ::log::info!(
                "{}: {free}% free, back above the watermark: taking produces again",
                self.dir.display()
            );
        }
    }
}

/// Free space of the filesystem holding `dir`, percent of its size, rounded down; counts
/// only the blocks an unprivileged writer may use (root's reserve is no room for data).
#[allow(unsafe_code)] // statvfs(3) has no safe wrapper in std
fn free_percent(dir: &Path) -> io::Result<u8> {
    use std::os::unix::ffi::OsStrExt;

    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs is plain old data; all-zero is a valid value.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `stat` a valid, writable statvfs, both
    // alive for the whole call.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let total = u128::from(stat.f_blocks);
    if total == 0 {
        return Ok(100);
    }
    let free = u128::from(stat.f_bavail).min(total);
    Ok(u8::try_from(free * 100 / total).unwrap_or(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(result: Result<(), Reject>) -> Option<Status> {
        result.err().map(|r| r.status)
    }

    #[test]
    fn refuses_below_the_watermark_and_takes_produces_again_above_it() {
        let mark = Watermark::new(Path::new("/data"), 5);
        let t0 = Instant::now();
        assert_eq!(status(mark.admit_at(t0, 10, || Ok(50))), None);
        let later = t0 + Duration::from_millis(FREE_SPACE_CHECK_INTERVAL_MS);
        assert_eq!(
            status(mark.admit_at(later, 10, || Ok(4))),
            Some(Status::DiskFull)
        );
        let again = later + Duration::from_millis(FREE_SPACE_CHECK_INTERVAL_MS);
        assert_eq!(status(mark.admit_at(again, 10, || Ok(5))), None);
    }

    #[test]
    fn reads_free_space_once_per_interval_or_per_bytes_admitted() {
        let mark = Watermark::new(Path::new("/data"), 5);
        let t0 = Instant::now();
        let reads = Cell::new(0);
        let read = || {
            reads.set(reads.get() + 1);
            Ok(50)
        };
        mark.admit_at(t0, 1, read).unwrap();
        for _ in 0..100 {
            mark.admit_at(t0, 1, read).unwrap();
        }
        assert_eq!(reads.get(), 1);
        mark.admit_at(t0, FREE_SPACE_CHECK_BYTES, read).unwrap();
        mark.admit_at(t0, 1, read).unwrap();
        assert_eq!(reads.get(), 2);
        mark.admit_at(
            t0 + Duration::from_millis(FREE_SPACE_CHECK_INTERVAL_MS),
            1,
            read,
        )
        .unwrap();
        assert_eq!(reads.get(), 3);
    }

    #[test]
    fn an_unreadable_filesystem_does_not_hold_produces_back() {
        let mark = Watermark::new(Path::new("/data"), 5);
        let failed = mark.admit_at(Instant::now(), 1, || Err(io::Error::other("gone")));
        assert!(failed.is_ok());
    }

    #[test]
    fn reads_the_free_space_of_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_percent(dir.path()).unwrap();
        assert!(free <= 100);
    }
}
