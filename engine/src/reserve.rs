//! Space kept back for metadata writes: a file of [`RESERVE_BYTES`] in the data directory,
//! filled with zeros (so its blocks are really allocated), that a metadata write hitting
//! `ENOSPC` releases to retry once. Thus rewriting the topic registry, which a topic delete
//! needs before it can free any space, works on a disk filled to the last block.
//!
//! Created at start and re-created after each release once there is room again; a disk too
//! full for it leaves the broker running without a reserve (with a WARN), never refusing to start.

use std::{
    io::{self, Write},
    path::{Path, PathBuf},
};

/// Bytes kept in reserve: far more than a registry of [`crate::topic::QUEUE_COUNT_MAX`]-queue
/// topics takes, so one release always lets a registry rewrite through.
pub const RESERVE_BYTES: usize = 1 << 20;

/// The reserve file of one data directory (used by shard 0, the registry's only writer).
pub(crate) struct Reserve {
    path: PathBuf,
}

impl Reserve {
    /// The reserve of `data_dir`; fills the file if it is missing or short.
    pub fn new(data_dir: &Path) -> Self {
        let reserve = Self {
            path: data_dir.join(crate::file::RESERVE_FILE_NAME),
        };
        reserve.refill();
        reserve
    }

    /// Runs `write`; if it fails with `ENOSPC`, releases the reserve and runs it once more,
    /// then tries to fill the reserve again.
    pub fn write_with<T, E>(&self, mut write: impl FnMut() -> Result<T, E>) -> Result<T, E>
    where
        E: IsNoSpace + std::fmt::Display,
    {
        match write() {
            Err(e) if e.is_no_space() && self.release() => {
                ::log::warn!(
                    "{e}: released the {RESERVE_BYTES}-byte reserve {} and retrying",
                    self.path.display()
                );
                let retried = write();
                self.refill();
                retried
            }
            outcome => outcome,
        }
    }

    /// Frees the reserve's blocks; false if it held none.
    fn release(&self) -> bool {
        match std::fs::metadata(&self.path) {
            Ok(meta) if meta.len() > 0 => {}
            _ => return false,
        }
        match std::fs::OpenOptions::new().write(true).open(&self.path) {
            Ok(file) => file.set_len(0).is_ok(),
            Err(_) => false,
        }
    }

    /// Makes the reserve whole again; a disk without room for it leaves it short (WARN), to
    /// be refilled after the next release.
    fn refill(&self) {
        if std::fs::metadata(&self.path).is_ok_and(|m| m.len() >= RESERVE_BYTES as u64) {
            return;
        }
        if let Err(e) = fill(&self.path) {
            ::log::warn!(
                "no room for the metadata reserve {} ({e}): a topic delete on a full disk may fail",
                self.path.display()
            );
            // A partly written reserve holds blocks a registry rewrite may need; a release
            // frees them, so keep what was written.
        }
    }
}

fn fill(path: &Path) -> io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)?;
    file.set_len(0)?;
    file.write_all(&vec![0u8; RESERVE_BYTES])?;
    file.sync_all()
}

/// Whether an error is "no space left on device".
pub(crate) trait IsNoSpace {
    /// True for `ENOSPC` (or a quota's `EDQUOT`).
    fn is_no_space(&self) -> bool;
}

impl IsNoSpace for io::Error {
    fn is_no_space(&self) -> bool {
        self.kind() == io::ErrorKind::StorageFull
            || matches!(self.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
    }
}

impl IsNoSpace for crate::error::BrokerError {
    fn is_no_space(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.is_no_space())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_failing_for_space_is_retried_once_after_releasing_the_reserve() {
        let dir = tempfile::tempdir().unwrap();
        let reserve = Reserve::new(dir.path());
        let path = dir.path().join(crate::file::RESERVE_FILE_NAME);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            RESERVE_BYTES as u64
        );
        let mut calls = 0;
        let result: io::Result<u32> = reserve.write_with(|| {
            calls += 1;
            if calls == 1 {
                Err(io::Error::from_raw_os_error(libc::ENOSPC))
            } else {
                // The reserve was released before the retry.
                assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
                Ok(7)
            }
        });
        assert_eq!(result.unwrap(), 7);
        assert_eq!(calls, 2);
        // And filled again afterwards, there being room.
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            RESERVE_BYTES as u64
        );
    }

    #[test]
    fn other_errors_are_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let reserve = Reserve::new(dir.path());
        let mut calls = 0;
        let result: io::Result<()> = reserve.write_with(|| {
            calls += 1;
            Err(io::Error::from_raw_os_error(libc::EIO))
        });
        assert!(result.is_err());
        assert_eq!(calls, 1);
    }
}
