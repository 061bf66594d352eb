//! The journal of skipped offset ranges: every gap in a queue's offsets, recorded before the
//! gap can be served, so that no offset is ever skipped silently.
//!
//! Gaps come from the offset reservation after a crash in `Async` mode (offsets that were
//! maybe acknowledged but lost, [`super::reservation`]) and from `defibus log repair` (damaged
//! bytes cut out). Gaps lie only *between* segments: a segment's batches stay contiguous, and
//! an append at an offset other than the active segment's end rolls a new segment. Recovery
//! accepts a gap between segments that the journal covers; any other gap is damage (a missing
//! segment) and is reported.
//!
//! The file [`crate::file::SKIPPED_FILE_NAME`] is append-only: fixed [`ENTRY_LEN`]-byte
//! entries, each with its own checksum, then zero padding. An append rewrites the last block
//! (O_DIRECT) and fdatasyncs it. Each entry:
//!
//! | at | len | field |
//! |---:|---:|---|
//! | 0 | 4 | magic `SKIP` |
//! | 4 | 2 | version, 1 (u16 LE) |
//! | 6 | 2 | reason code, [`SkipReason`] (u16 LE) |
//! | 8 | 8 | first skipped offset (u64 LE) |
//! | 16 | 8 | offset after the last skipped one (u64 LE) |
//! | 24 | 8 | when it was recorded, Unix ms (i64 LE) |
//! | 32 | 28 | reserved, zero |
//! | 60 | 4 | CRC32C of bytes `[0, 60)` (u32 LE) |

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use crate::{
    file,
    log::{
        error::LogError,
        segment::{PendingWrite, align_down, write_pending},
        storage::Storage,
    },
};

/// Bytes of one entry; a block holds a whole number of them.
pub const ENTRY_LEN: usize = 64;
const MAGIC: [u8; 4] = *b"SKIP";
const VERSION: u16 = 1;
const CHECKED_LEN: usize = ENTRY_LEN - 4;

const _: () = assert!(4096 % ENTRY_LEN == 0 && 512 % ENTRY_LEN == 0);

/// Why a range of offsets was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// An `Async` log crashed: offsets below its reservation that no synced batch holds. They
    /// may have been acknowledged, so they are never reused.
    UnsyncedAtCrash,
    /// `log repair` cut damaged bytes out of a segment; the offsets they held are gone.
    Damaged,
    /// `log repair` found a segment ending mid-batch (truncated); the rest is gone.
    Truncated,
    /// `log repair` found a gap no entry recorded (a missing segment) and recorded it.
    Missing,
}

impl SkipReason {
    /// The code stored on disk.
    pub fn code(self) -> u16 {
        match self {
            Self::UnsyncedAtCrash => 1,
            Self::Damaged => 2,
            Self::Truncated => 3,
            Self::Missing => 4,
        }
    }

    /// The reason of a stored code.
    pub fn from_code(code: u16) -> Option<Self> {
        Some(match code {
            1 => Self::UnsyncedAtCrash,
            2 => Self::Damaged,
            3 => Self::Truncated,
            4 => Self::Missing,
            _ => return None,
        })
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::UnsyncedAtCrash => "unsynced at crash (async)",
            Self::Damaged => "damaged, cut by repair",
            Self::Truncated => "truncated segment, cut by repair",
            Self::Missing => "missing segment, recorded by repair",
        })
    }
}

/// One skipped range `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkippedRange {
    /// First skipped offset.
    pub from: u64,
    /// Offset after the last skipped one.
    pub to: u64,
    /// Why.
    pub reason: SkipReason,
    /// When it was recorded, Unix ms.
    pub time_ms: i64,
}

impl SkippedRange {
    /// The entry's bytes.
    pub fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut out = [0u8; ENTRY_LEN];
        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&VERSION.to_le_bytes());
        out[6..8].copy_from_slice(&self.reason.code().to_le_bytes());
        out[8..16].copy_from_slice(&self.from.to_le_bytes());
        out[16..24].copy_from_slice(&self.to.to_le_bytes());
        out[24..32].copy_from_slice(&self.time_ms.to_le_bytes());
        let crc = crc32c::crc32c(&out[..CHECKED_LEN]);
        out[CHECKED_LEN..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes one entry of exactly [`ENTRY_LEN`] bytes; `Ok(None)` for zero padding.
    pub fn decode(entry: &[u8]) -> Result<Option<Self>, String> {
        if entry.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        if entry.len() != ENTRY_LEN {
            return Err(format!("entry of {} bytes", entry.len()));
        }
        let mut raw4 = [0u8; 4];
        raw4.copy_from_slice(&entry[CHECKED_LEN..]);
        let crc = u32::from_le_bytes(raw4);
        let computed = crc32c::crc32c(&entry[..CHECKED_LEN]);
        if entry[0..4] != MAGIC {
            return Err("bad magic".into());
        }
        if crc != computed {
            return Err(format!(
                "checksum mismatch: stored {crc:#010x}, computed {computed:#010x}"
            ));
        }
        let u16_at = |at: usize| u16::from_le_bytes([entry[at], entry[at + 1]]);
        let u64_at = |at: usize| {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&entry[at..at + 8]);
            u64::from_le_bytes(raw)
        };
        let version = u16_at(4);
        if version != VERSION {
            return Err(format!("unknown version {version}"));
        }
        let code = u16_at(6);
        let reason = SkipReason::from_code(code).ok_or(format!("unknown reason code {code}"))?;
        if entry[32..CHECKED_LEN].iter().any(|&b| b != 0) {
            return Err("reserved bytes are not zero".into());
        }
        let (from, to) = (u64_at(8), u64_at(16));
        if from >= to {
            return Err(format!("empty range [{from}, {to})"));
        }
        Ok(Some(Self {
            from,
            to,
            reason,
            time_ms: u64_at(24) as i64,
        }))
    }
}

/// What a journal's bytes hold: its valid entries, and why it stops early if it does.
#[derive(Debug, Default)]
pub struct Decoded {
    /// The entries, in the order recorded.
    pub entries: Vec<SkippedRange>,
    /// Bytes that hold those entries.
    pub valid_len: u64,
    /// Why decoding stopped before the zero padding: a torn last append.
    pub torn: Option<String>,
}

/// Decodes a journal file's bytes.
pub fn decode(bytes: &[u8]) -> Decoded {
    let mut decoded = Decoded::default();
    for (i, entry) in bytes.chunks(ENTRY_LEN).enumerate() {
        match SkippedRange::decode(entry) {
            Ok(Some(range)) => {
                decoded.entries.push(range);
                decoded.valid_len = ((i + 1) * ENTRY_LEN) as u64;
            }
            Ok(None) => break,
            Err(reason) => {
                decoded.torn = Some(format!("entry at byte {}: {reason}", i * ENTRY_LEN));
                break;
            }
        }
    }
    decoded
}

/// The skipped-ranges journal of one queue directory.
pub struct Journal<F> {
    file: Option<F>,
    dir: PathBuf,
    path: PathBuf,
    entries: Vec<SkippedRange>,
}

impl<F> Journal<F> {
    /// Opens the journal of `dir` if it exists (an absent one has no entries). A torn last
    /// entry (its append was never fdatasynced, so nothing relied on it) is dropped and
    /// overwritten by the next append.
    pub async fn load<S: Storage<File = F>>(storage: &S, dir: &Path) -> Result<Self, LogError> {
        let path = file::skipped_path(dir);
        let mut journal = Self {
            file: None,
            dir: dir.to_path_buf(),
            path,
            entries: Vec::new(),
        };
        let file = match storage.open(&journal.path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(journal),
            Err(e) => return Err(LogError::io("open", &journal.path, e)),
        };
        let len = storage
            .len(&file)
            .await
            .map_err(|e| LogError::io("file length", &journal.path, e))?;
        let bytes = storage
            .read_at(&file, 0, len as usize)
            .await
            .map_err(|e| LogError::io("read", &journal.path, e))?;
        let decoded = decode(&bytes);
        if let Some(torn) = &decoded.torn {
            ::log::warn!(
                "{}: dropping a torn entry after {} valid ones: {torn}",
                journal.path.display(),
                decoded.entries.len()
            );
        }
        journal.entries = decoded.entries;
        journal.file = Some(file);
        Ok(journal)
    }

    /// Every recorded range, in the order recorded.
    pub fn entries(&self) -> &[SkippedRange] {
        &self.entries
    }

    /// Creates the journal with one zeroed block when it does not exist yet, so that recording
    /// its first entries overwrites space already allocated: an `Async` log that crashed on a
    /// full disk can still record its gap when it opens there (ARCHITECTURE §3.6).
    pub async fn preallocate<S: Storage<File = F>>(&mut self, storage: &S) -> Result<(), LogError> {
        if self.file.is_some() {
            return Ok(());
        }
        let file = storage
            .create(&self.path)
            .await
            .map_err(|e| LogError::io("create", &self.path, e))?;
        file::fsync_directory(storage, &self.dir)
            .await
            .map_err(|e| LogError::io("fsync directory", &self.dir, e))?;
        let write = PendingWrite {
            position: 0,
            data: vec![0; storage.alignment(&file) as usize],
        };
        write_pending(storage, &file, &self.path, &write).await?;
        storage
            .fdatasync(&file)
            .await
            .map_err(|e| LogError::io("fdatasync", &self.path, e))?;
        self.file = Some(file);
        Ok(())
    }

    /// Records `range` durably: writes it after the last valid entry (rewriting that block),
    /// then fdatasyncs; a new journal file's name is fsynced into the directory first.
    pub async fn append<S: Storage<File = F>>(
        &mut self,
        storage: &S,
        range: SkippedRange,
    ) -> Result<(), LogError> {
        if self.file.is_none() {
            let file = storage
                .create(&self.path)
                .await
                .map_err(|e| LogError::io("create", &self.path, e))?;
            file::fsync_directory(storage, &self.dir)
                .await
                .map_err(|e| LogError::io("fsync directory", &self.dir, e))?;
            self.file = Some(file);
        }
        let Some(file) = &self.file else {
            unreachable!("created above")
        };
        let end = (self.entries.len() * ENTRY_LEN) as u64;
        let block = align_down(end, storage.alignment(file));
        let mut data = Vec::with_capacity((end - block) as usize + ENTRY_LEN);
        for entry in &self.entries[(block as usize / ENTRY_LEN)..] {
            data.extend_from_slice(&entry.encode());
        }
        data.extend_from_slice(&range.encode());
        let write = PendingWrite {
            position: block,
            data,
        };
        write_pending(storage, file, &self.path, &write).await?;
        storage
            .fdatasync(file)
            .await
            .map_err(|e| LogError::io("fdatasync", &self.path, e))?;
        self.entries.push(range);
        Ok(())
    }
}

/// The parts of `[from, to)` that no entry of `entries` covers.
pub fn uncovered(entries: &[SkippedRange], from: u64, to: u64) -> Vec<(u64, u64)> {
    // Merge the entries into disjoint intervals first: entries may overlap (a repair re-run).
    let mut merged: BTreeMap<u64, u64> = BTreeMap::new();
    for e in entries {
        let end = merged.entry(e.from).or_insert(e.to);
        *end = (*end).max(e.to);
    }
    let mut out = Vec::new();
    let mut at = from;
    for (&start, &end) in &merged {
        if at >= to {
            break;
        }
        if end <= at {
            continue;
        }
        if start > at {
            out.push((at, start.min(to)));
        }
        at = at.max(end);
    }
    if at < to {
        out.push((at, to));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(from: u64, to: u64) -> SkippedRange {
        SkippedRange {
            from,
            to,
            reason: SkipReason::Damaged,
            time_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn golden_entry_bytes() {
        let entry = range(5, 9).encode();
        let mut want = vec![b'S', b'K', b'I', b'P', 1, 0, 2, 0];
        want.extend_from_slice(&5u64.to_le_bytes());
        want.extend_from_slice(&9u64.to_le_bytes());
        want.extend_from_slice(&1_700_000_000_000i64.to_le_bytes());
        want.extend_from_slice(&[0; 28]);
        assert_eq!(&entry[..CHECKED_LEN], &want[..]);
        // CRC32C checked against an independent bitwise implementation.
        assert_eq!(&entry[CHECKED_LEN..], &[0xa9, 0x8e, 0xaf, 0xf0]);
        assert_eq!(SkippedRange::decode(&entry), Ok(Some(range(5, 9))));
    }

    #[test]
    fn decoding_stops_at_padding_and_at_a_torn_entry() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&range(1, 2).encode());
        bytes.extend_from_slice(&range(10, 20).encode());
        bytes.resize(4096, 0);
        let decoded = decode(&bytes);
        assert_eq!(decoded.entries, vec![range(1, 2), range(10, 20)]);
        assert_eq!(decoded.valid_len, 128);
        assert!(decoded.torn.is_none());
        bytes[ENTRY_LEN + 9] ^= 1;
        let decoded = decode(&bytes);
        assert_eq!(decoded.entries, vec![range(1, 2)]);
        assert!(decoded.torn.is_some());
    }

    #[test]
    fn uncovered_parts_of_a_gap() {
        let entries = [range(10, 20), range(15, 30), range(40, 50)];
        assert_eq!(uncovered(&entries, 10, 30), vec![]);
        assert_eq!(uncovered(&entries, 5, 45), vec![(5, 10), (30, 40)]);
        assert_eq!(uncovered(&entries, 50, 60), vec![(50, 60)]);
        assert_eq!(uncovered(&[], 1, 2), vec![(1, 2)]);
    }
}
