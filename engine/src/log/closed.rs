//! The clean-close record: what a log's tail segment held when it was last closed cleanly, so
//! that recovery can tell damage in the tail from a torn write.
//!
//! After a crash, invalid bytes at the end of the tail segment are a torn write (never
//! acknowledged, since every acknowledgement follows an fdatasync covering it) and recovery
//! cuts them. After a clean close nothing can be torn: every byte of the tail was written and
//! synced, so invalid data below the length recorded here is *damage*, and cutting it would
//! lose acknowledged records and hand their offsets out again. Recovery then keeps the segment
//! whole, records the damage and starts a new tail segment at the recorded next offset
//! (`docs/ARCHITECTURE.md` §3.1 step 2).
//!
//! [`Log::close`](super::Log::close) writes the file after its last fdatasync; `open` reads it
//! and removes it before the log writes anything, so a record on disk always describes bytes
//! that have not changed since. A missing or unreadable record means "maybe a crash": the
//! tail is judged as before. The file is one block:
//!
//! | at | len | field |
//! |---:|---:|---|
//! | 0 | 8 | magic `DFBCLOS\0` |
//! | 8 | 4 | version, 1 (u32 LE) |
//! | 12 | 4 | reserved, zero |
//! | 16 | 8 | base offset of the tail segment (u64 LE) |
//! | 24 | 8 | length of the tail segment's batches, bytes (u64 LE) |
//! | 32 | 8 | the log's next offset (u64 LE) |
//! | 40 | 4 | CRC32C of bytes `[0, 40)` (u32 LE) |
//! | 44 | 4052 | zero |

use std::path::Path;

use crate::{
    file,
    log::{
        error::LogError,
        segment::{PendingWrite, write_pending},
        storage::Storage,
    },
};

/// Bytes of the file: one device block, written whole by one O_DIRECT write.
pub const FILE_BYTES: usize = 4096;
const MAGIC: [u8; 8] = *b"DFBCLOS\0";
const VERSION: u32 = 1;
const CHECKED_LEN: usize = 40;
const USED_LEN: usize = CHECKED_LEN + 4;

/// What the tail held at a clean close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanClose {
    /// Base offset of the tail segment.
    pub tail_base: u64,
    /// Bytes of batches in the tail segment (zero padding after them not counted).
    pub tail_len: u64,
    /// The log's next offset.
    pub next_offset: u64,
}

impl CleanClose {
    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![0u8; FILE_BYTES];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&VERSION.to_le_bytes());
        out[16..24].copy_from_slice(&self.tail_base.to_le_bytes());
        out[24..32].copy_from_slice(&self.tail_len.to_le_bytes());
        out[32..40].copy_from_slice(&self.next_offset.to_le_bytes());
        let crc = crc32c::crc32c(&out[..CHECKED_LEN]);
        out[CHECKED_LEN..USED_LEN].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes the file's bytes, or says why they are not a valid record.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < USED_LEN {
            return Err(format!("{} bytes is too short", bytes.len()));
        }
        let u32_at = |at: usize| {
            let mut raw = [0u8; 4];
            raw.copy_from_slice(&bytes[at..at + 4]);
            u32::from_le_bytes(raw)
        };
        let u64_at = |at: usize| {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(raw)
        };
        if bytes[0..8] != MAGIC {
            return Err("bad magic".into());
        }
        let crc = u32_at(CHECKED_LEN);
        let computed = crc32c::crc32c(&bytes[..CHECKED_LEN]);
        if crc != computed {
            return Err(format!(
                "checksum mismatch: stored {crc:#010x}, computed {computed:#010x}"
            ));
        }
        let version = u32_at(8);
        if version != VERSION {
            return Err(format!("unknown version {version}"));
        }
        let record = Self {
            tail_base: u64_at(16),
            tail_len: u64_at(24),
            next_offset: u64_at(32),
        };
        if record.next_offset < record.tail_base {
            return Err(format!(
                "next offset {} is below the tail's base {}",
                record.next_offset, record.tail_base
            ));
        }
        Ok(record)
    }

    /// Reads the record of the log in `dir` with blocking file IO (offline tools): `None`
    /// without a valid one.
    pub fn read_blocking(dir: &Path) -> Option<Self> {
        let bytes = std::fs::read(file::closed_path(dir)).ok()?;
        Self::decode(&bytes).ok()
    }
}

/// Reads the record of the log in `dir`. `None` if there is none or it is unreadable (then the
/// tail is judged as after a crash, which never serves wrong data).
pub(crate) async fn load<S: Storage>(
    storage: &S,
    dir: &Path,
) -> Result<Option<CleanClose>, LogError> {
    let path = file::closed_path(dir);
    let f = match storage.open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::io("open", &path, e)),
    };
    let bytes = storage
        .read_at(&f, 0, FILE_BYTES)
        .await
        .map_err(|e| LogError::io("read", &path, e))?;
    match CleanClose::decode(&bytes) {
        Ok(record) => Ok(Some(record)),
        Err(reason) => {
            ::log::warn!(
                "{}: ignoring the clean-close record ({reason}); the tail is verified as after a crash",
                path.display()
            );
            Ok(None)
        }
    }
}

/// Removes the record of the log in `dir`, if any; the caller makes the removal durable (an
/// fsync of the directory) before the log writes.
pub(crate) async fn remove<S: Storage>(storage: &S, dir: &Path) -> Result<(), LogError> {
    let path = file::closed_path(dir);
    match storage.remove(&path).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(LogError::io("remove", &path, e)),
        _ => Ok(()),
    }
}

/// Writes `record` durably (file, then directory). Called once every batch it covers is
/// synced.
pub(crate) async fn store<S: Storage>(
    storage: &S,
    dir: &Path,
    record: &CleanClose,
) -> Result<(), LogError> {
    let path = file::closed_path(dir);
    let f = storage
        .create(&path)
        .await
        .map_err(|e| LogError::io("create", &path, e))?;
    let write = PendingWrite {
        position: 0,
        data: record.encode(),
    };
    write_pending(storage, &f, &path, &write).await?;
    storage
        .fdatasync(&f)
        .await
        .map_err(|e| LogError::io("fdatasync", &path, e))?;
    file::fsync_directory(storage, dir)
        .await
        .map_err(|e| LogError::io("fsync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_any_flipped_bit_is_caught() {
        let record = CleanClose {
            tail_base: 1_000,
            tail_len: 123_456,
            next_offset: 1_789,
        };
        let bytes = record.encode();
        assert_eq!(bytes.len(), FILE_BYTES);
        assert_eq!(CleanClose::decode(&bytes), Ok(record));
        for bit in 0..USED_LEN * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(CleanClose::decode(&flipped).is_err(), "bit {bit}");
        }
        assert!(CleanClose::decode(&bytes[..10]).is_err());
    }
}
