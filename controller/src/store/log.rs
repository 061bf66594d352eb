//! The Raft log and vote of one node: openraft's `RaftLogStorage`.
//!
//! # The log file
//!
//! ```text
//! header  [0, 8) magic "DFBCLOG1" | [8, 12) version u32 LE, 1 | [12, 16) reserved, zero
//! record  [0, 4) body length u32 LE | [4, 8) CRC32C of the body u32 LE | body
//! ```
//!
//! A body is the `serde_json` of a [`Record`]: a log entry, or the id up to which the log was
//! purged (only ever the first record, see *Purge*). Every entry is also held in memory,
//! with the file offset of its record: the controller's log is small (commands are rare and
//! openraft purges what a snapshot covers), so reads never touch the disk.
//!
//! # Durability protocol
//!
//! - **Append**: 1. write every record of the batch at the end of the file; 2. **fsync the
//!   file** (`fdatasync`); 3. only then add the entries to memory and tell openraft they are
//!   flushed. A write or fsync that fails poisons the store: every later write is refused
//!   and openraft stops the node, since the file's tail is then unknown.
//! - **Truncate** (a new leader overrode uncommitted entries): 1. cut the file at the offset
//!   of the first removed record; 2. **fsync the file**; 3. drop the entries from memory.
//! - **Purge** (a snapshot covers the entries): 1. write the header, a purge record and the
//!   entries kept to `log.tmp`; 2. **fsync it**; 3. rename it over `log`; 4. **fsync the
//!   directory** ([`svc::file::write_atomically`]); 5. drop the entries from memory. A purge
//!   rewrites the whole file, which holds only what no snapshot covers yet: a few thousand
//!   small entries at most.
//! - **Vote**: replaced atomically and fsynced before `save_vote` returns.
//!
//! # Recovery
//!
//! Opening scans every record. A torn append leaves the last record incomplete (its length
//! runs past the end of the file) or with a checksum that does not match as the last bytes
//! of the file; that record was never acknowledged, so the file is cut before it (and
//! fsynced); so is a tail of zeros, a file extended but never written. A bad record with valid-looking bytes after it is not a torn append: the file
//! is reported [`StoreError::Damaged`] and the node does not start, because cutting there
//! could drop entries that were acknowledged to a leader.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use log::{error, warn};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, RaftLogReader};
use serde::{Deserialize, Serialize};

use super::{COMMITTED_FILE, COMMITTED_MAGIC, LOG_FILE, StoreError, VOTE_FILE, VOTE_MAGIC};
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

/// The log file's magic.
pub(crate) const MAGIC: &[u8; 8] = b"DFBCLOG1";
/// The only log format version written and read.
pub(crate) const VERSION: u32 = 1;
/// Bytes of the file header.
pub(crate) const HEADER_LEN: usize = 16;
/// Bytes before each record's body: its length and checksum.
pub(crate) const RECORD_HEADER_LEN: usize = 8;

/// One record of the log file.
#[derive(Debug, Deserialize)]
enum Record {
    /// A log entry.
    Entry(Entry),
    /// Entries up to this id were purged.
    Purged(LogId),
}

/// [`Record`] by reference, for writing without cloning entries; serialises the same.
#[derive(Serialize)]
enum RecordRef<'a> {
    Entry(&'a Entry),
    Purged(&'a LogId),
}

/// The entries in memory, shared with the readers openraft's replication tasks hold.
#[derive(Debug, Default)]
struct Entries {
    by_index: BTreeMap<u64, Entry>,
    purged: Option<LogId>,
}

/// Reads the log from memory; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct LogReader {
    entries: Arc<Mutex<Entries>>,
}

/// The vote and the log of one node.
#[derive(Debug)]
pub(crate) struct LogStore {
    dir: PathBuf,
    path: PathBuf,
    /// The log file, opened for appending.
    file: File,
    file_len: u64,
    /// The file offset of each entry's record in memory.
    offsets: BTreeMap<u64, u64>,
    reader: LogReader,
    vote: Option<Vote>,
    committed: Option<LogId>,
    /// Why a write failed: the file's tail is unknown, so nothing more is written.
    poisoned: Option<String>,
}

impl LogStore {
    /// Opens (or creates) the log and vote in `dir`, cutting a torn tail.
    pub(crate) fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(LOG_FILE);
        if !path.exists() {
            svc::file::write_atomically(&path, &file_header()).map_err(StoreError::io(&path))?;
        }
        let bytes = std::fs::read(&path).map_err(StoreError::io(&path))?;
        let damaged = |offset: u64, reason: String| StoreError::Damaged {
            path: path.clone(),
            offset,
            reason,
        };
        let scan = scan(&bytes).map_err(|(offset, reason)| damaged(offset, reason))?;
        let mut entries = Entries::default();
        let mut offsets = BTreeMap::new();
        for (offset, record) in scan.records {
            match record {
                Record::Purged(log_id) => {
                    entries.by_index.retain(|&index, _| index > log_id.index);
                    offsets.retain(|&index, _| index > log_id.index);
                    entries.purged = Some(log_id);
                }
                Record::Entry(entry) => {
                    let index = entry.log_id.index;
                    if let Some(expected) = next_index(&entries) {
                        if index != expected {
                            return Err(damaged(
                                offset,
                                format!("entry {index} where entry {expected} belongs"),
                            ));
                        }
                    }
                    entries.by_index.insert(index, entry);
                    offsets.insert(index, offset);
                }
            }
        }
        if let Some(torn) = &scan.torn {
            warn!(
                "{}: cutting a torn append at byte {} ({} bytes): {torn}",
                path.display(),
                scan.valid_len,
                bytes.len() as u64 - scan.valid_len
            );
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(StoreError::io(&path))?;
            file.set_len(scan.valid_len)
                .and_then(|()| file.sync_all())
                .map_err(StoreError::io(&path))?;
        }
        let file = open_append(&path).map_err(StoreError::io(&path))?;
        let vote = super::read_small(&dir.join(VOTE_FILE), VOTE_MAGIC)?;
        // A damaged hint is no hint: the leader will say what is committed.
        let committed =
            super::read_small::<Option<LogId>>(&dir.join(COMMITTED_FILE), COMMITTED_MAGIC)
                .unwrap_or_else(|e| {
                    warn!("ignoring the committed-log-id hint: {e}");
                    None
                })
                .flatten();
        Ok(Self {
            dir: dir.to_path_buf(),
            path,
            file,
            file_len: scan.valid_len,
            offsets,
            reader: LogReader {
                entries: Arc::new(Mutex::new(entries)),
            },
            vote,
            committed,
            poisoned: None,
        })
    }

    /// Refuses a write once an earlier one failed.
    fn check_poisoned(&self) -> std::io::Result<()> {
        match &self.poisoned {
            None => Ok(()),
            Some(reason) => Err(std::io::Error::other(format!(
                "the log is poisoned by an earlier failure: {reason}"
            ))),
        }
    }

    /// Records `e`, the failure of a write to the log, as the reason no more are made.
    fn poison(&mut self, e: &std::io::Error) {
        error!(
            "{}: a write failed, the log takes no more: {e}",
            self.path.display()
        );
        self.poisoned = Some(e.to_string());
    }

    fn append_records(&mut self, entries: Vec<Entry>) -> Result<(), std::io::Error> {
        let mut buf = Vec::new();
        let mut offsets = Vec::with_capacity(entries.len());
        for entry in &entries {
            offsets.push((entry.log_id.index, self.file_len + buf.len() as u64));
            encode_record(&RecordRef::Entry(entry), &mut buf)?;
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        self.file_len += buf.len() as u64;
        self.offsets.extend(offsets);
        let mut memory = self.reader.lock();
        for entry in entries {
            memory.by_index.insert(entry.log_id.index, entry);
        }
        Ok(())
    }

    fn truncate_from(&mut self, index: u64) -> Result<(), std::io::Error> {
        let Some((_, &offset)) = self.offsets.range(index..).next() else {
            return Ok(());
        };
        self.file.set_len(offset)?;
        self.file.sync_all()?;
        self.file_len = offset;
        self.offsets.split_off(&index);
        self.reader.lock().by_index.split_off(&index);
        Ok(())
    }

    fn purge_upto(&mut self, log_id: LogId) -> Result<(), std::io::Error> {
        let mut memory = self.reader.lock();
        let kept = memory.by_index.split_off(&(log_id.index + 1));
        let mut buf = file_header();
        encode_record(&RecordRef::Purged(&log_id), &mut buf)?;
        let mut offsets = BTreeMap::new();
        for (index, entry) in &kept {
            offsets.insert(*index, buf.len() as u64);
            encode_record(&RecordRef::Entry(entry), &mut buf)?;
        }
        let written =
            svc::file::write_atomically(&self.path, &buf).and_then(|()| open_append(&self.path));
        match written {
            Ok(file) => {
                memory.by_index = kept;
                memory.purged = Some(log_id);
                drop(memory);
                self.file = file;
                self.file_len = buf.len() as u64;
                self.offsets = offsets;
                Ok(())
            }
            Err(e) => {
                // Memory still holds every entry: put back the ones split off.
                let mut kept = kept;
                memory.by_index.append(&mut kept);
                Err(e)
            }
        }
    }
}

impl LogReader {
    fn lock(&self) -> MutexGuard<'_, Entries> {
        // Every update is a whole map operation done under the lock; a panic elsewhere
        // cannot leave it half-done.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self
            .lock()
            .by_index
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.reader.try_get_log_entries(range).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let memory = self.reader.lock();
        let last = memory.by_index.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: memory.purged,
            last_log_id: last.or(memory.purged),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        self.reader.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let path = self.dir.join(VOTE_FILE);
        super::encode_small(vote, VOTE_MAGIC)
            .and_then(|bytes| svc::file::write_atomically(&path, &bytes))
            .map_err(|e| StorageError::from_io_error(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        self.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let path = self.dir.join(COMMITTED_FILE);
        super::encode_small(&committed, COMMITTED_MAGIC)
            .and_then(|bytes| replace_without_fsync(&path, &bytes))
            .map_err(|e| StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
        self.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        self.check_poisoned().map_err(write_error)?;
        match self.append_records(entries.into_iter().collect()) {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                self.poison(&e);
                callback.log_io_completed(Err(std::io::Error::new(e.kind(), e.to_string())));
                Err(write_error(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.check_poisoned().map_err(write_error)?;
        self.truncate_from(log_id.index).map_err(|e| {
            self.poison(&e);
            write_error(e)
        })
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.check_poisoned().map_err(write_error)?;
        self.purge_upto(log_id).map_err(|e| {
            self.poison(&e);
            StorageError::from_io_error(ErrorSubject::Logs, ErrorVerb::Delete, e)
        })
    }
}

fn write_error(e: std::io::Error) -> StorageError {
    StorageError::from_io_error(ErrorSubject::Logs, ErrorVerb::Write, e)
}

/// The index the next entry must have, once anything is known.
fn next_index(entries: &Entries) -> Option<u64> {
    match entries.by_index.keys().next_back() {
        Some(last) => Some(last + 1),
        None => entries.purged.map(|p| p.index + 1),
    }
}

fn file_header() -> Vec<u8> {
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&[0; 4]);
    header
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().append(true).open(path)
}

/// Appends `record`, framed, to `out`.
fn encode_record(record: &RecordRef<'_>, out: &mut Vec<u8>) -> std::io::Result<()> {
    let body = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    let len = u32::try_from(body.len())
        .map_err(|_| std::io::Error::other(format!("a {}-byte log record", body.len())))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

/// What a scan of the log file found.
#[derive(Debug)]
struct Scan {
    /// Every intact record, with its offset.
    records: Vec<(u64, Record)>,
    /// Bytes up to the end of the last intact record.
    valid_len: u64,
    /// Why the bytes after `valid_len` are a torn append, if there are any.
    torn: Option<String>,
}

/// Scans the log file's bytes; an error is the offset and nature of damage that is not a torn
/// append (see the module docs).
fn scan(bytes: &[u8]) -> Result<Scan, (u64, String)> {
    let header = bytes
        .get(..HEADER_LEN)
        .ok_or_else(|| (0, format!("{} bytes, shorter than the header", bytes.len())))?;
    if &header[..8] != MAGIC {
        return Err((0, format!("magic {:?} is not {MAGIC:?}", &header[..8])));
    }
    let version = u32_at(header, 8);
    if version != VERSION {
        return Err((8, format!("version {version}, this build reads {VERSION}")));
    }
    if u32_at(header, 12) != 0 {
        return Err((12, "reserved bytes are not zero".into()));
    }
    let mut records = Vec::new();
    let mut at = HEADER_LEN;
    let torn = loop {
        let rest = &bytes[at..];
        if rest.is_empty() {
            break None;
        }
        // A file extended but never written (a crash between the size and the data reaching
        // the disk) reads as zeros; no record is all zeros, since a body is never empty.
        if rest.iter().all(|&b| b == 0) {
            break Some(format!("{} zero bytes", rest.len()));
        }
        if rest.len() < RECORD_HEADER_LEN {
            break Some(format!("{} bytes of a record header", rest.len()));
        }
        let len = u32_at(rest, 0) as usize;
        let Some(body) = rest.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + len) else {
            break Some(format!(
                "a record of {len} bytes with {} written",
                rest.len() - RECORD_HEADER_LEN
            ));
        };
        let (stored, computed) = (u32_at(rest, 4), crc32c::crc32c(body));
        if stored != computed {
            let reason = format!("checksum {computed:#010x}, record says {stored:#010x}");
            if rest.len() == RECORD_HEADER_LEN + len {
                break Some(reason);
            }
            return Err((at as u64, reason));
        }
        let record: Record = serde_json::from_slice(body)
            .map_err(|e| (at as u64, format!("a record that does not decode: {e}")))?;
        records.push((at as u64, record));
        at += RECORD_HEADER_LEN + len;
    };
    Ok(Scan {
        records,
        valid_len: at as u64,
        torn,
    })
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Replaces `path` with `bytes` through a rename, so a reader sees the old or the new file,
/// without waiting for the disk (for the `committed` hint only, see [`super`]).
fn replace_without_fsync(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(svc::file::TMP_SUFFIX);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests;
