//! The durable storage of one queue: a directory of segments, appended by many tasks of one
//! runtime executor and read by tailing and catching-up consumers.
//!
//! - [`config`]: [`LogConfig`], [`FlushMode`], defaults and limits;
//! - [`storage`]: the IO seam ([`Storage`], [`DmaStorage`]);
//! - [`segment`]: one `.log` + `.idx` pair and the O_DIRECT block writer;
//! - [`index`]: the sparse offset index;
//! - [`cache`]: recent batches served from memory;
//! - [`commit`]: the flusher / group-commit task;
//! - [`recovery`]: what `open` does with what it finds on disk;
//! - [`repair`]: offline repair of damaged segments (`defibus log repair`);
//! - [`reservation`]: the offset limit that keeps `Async` acknowledgements unique across
//!   crashes;
//! - [`skipped`]: the journal of offset ranges skipped (gaps), and [`gaps`]: what open and reads
//!   do with them;
//! - [`retention`]: deleting old segments.
//!
//! The durability protocol is written out in `docs/ARCHITECTURE.md` (storage section).

mod cache;
mod commit;
pub mod config;
pub mod error;
mod gaps;
pub mod index;
mod recovery;
pub mod repair;
pub mod reservation;
mod retention;
mod segment;
pub mod skipped;
pub mod storage;

use std::{
    cell::RefCell,
    collections::BTreeMap,
    rc::Rc,
    time::{SystemTime, UNIX_EPOCH},
};

use bytes::{Bytes, BytesMut};
use protocol::record::{BATCH_HEADER_LEN, BatchHeader, BatchView};

use self::{cache::TailCache, commit::Commit, segment::Segment};
pub use self::{
    cache::{CacheBudget, DEFAULT_SHARD_TAIL_CACHE_BYTES, set_shard_budget, shard_budget},
    config::{FlushMode, LogConfig},
    error::LogError,
    recovery::RecoveryReport,
    retention::RetentionReport,
    skipped::{SkipReason, SkippedRange},
    storage::{DmaStorage, Storage},
};

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// Offset after its last record: the next append's base offset.
    pub next_offset: u64,
}

/// Mutable state of a log, borrowed only between awaits.
pub(crate) struct State<F, B> {
    /// Every segment, by base offset; the last is the active one.
    pub(crate) segments: BTreeMap<u64, Segment<F, B>>,
    /// Base offset of the oldest segment not yet sealed (synced for good).
    pub(crate) first_unsealed: u64,
    pub(crate) next_offset: u64,
    pub(crate) size_bytes: u64,
    pub(crate) cache: TailCache,
}

impl<F, B> State<F, B> {
    pub(crate) fn cache_evict_written(&mut self, written_offset: u64) {
        self.cache.evict(written_offset);
    }

    fn start_offset(&self) -> u64 {
        self.segments
            .keys()
            .next()
            .copied()
            .unwrap_or(self.next_offset)
    }
}

/// What the log and its committer task share. The committer keeps it alive until its last
/// write, so the directory lock it holds outlives a dropped `Log` for exactly as long as
/// something may still write to the directory.
pub(crate) struct Shared<S: Storage> {
    pub(crate) storage: S,
    /// Exclusive lock on the directory's lock file: one writer per directory.
    _lock: S::Lock,
    pub(crate) config: LogConfig,
    pub(crate) state: RefCell<State<S::File, S::Buffer>>,
    pub(crate) commit: Commit,
    pub(crate) recovery: RecoveryReport,
    /// The offset reservation, in `Async` mode: appends acknowledge only offsets below it.
    pub(crate) reservation: Option<reservation::Reservation<S::File>>,
    /// Every gap in the log's offsets, as recorded (only `open` records gaps).
    skipped: Vec<SkippedRange>,
    /// Chunk buffers back from their write, for the next appends (at most
    /// [`config::FREE_CHUNKS_MAX`]).
    free_chunks: RefCell<Vec<S::Buffer>>,
}

impl<S: Storage> Shared<S> {
    /// A chunk buffer for appends: a reused one, or a new one.
    pub(crate) fn chunk_buffer(&self) -> S::Buffer {
        self.free_chunks
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| self.storage.alloc_buffer(config::WRITE_CHUNK_BYTES))
    }

    /// Takes back a chunk buffer after its write, if it is whole and the pool has room.
    pub(crate) fn recycle_chunk_buffer(&self, buf: S::Buffer) {
        let mut free = self.free_chunks.borrow_mut();
        if buf.as_ref().len() == config::WRITE_CHUNK_BYTES && free.len() < config::FREE_CHUNKS_MAX {
            free.push(buf);
        }
    }
}

/// The log of one queue. Lives inside one executor; share it as `Rc<Log>` between
/// tasks: every method takes `&self`, and appends from many tasks at once are ordered by the
/// order in which they are called.
pub struct Log<S: Storage + 'static = DmaStorage> {
    shared: Rc<Shared<S>>,
    committer: RefCell<Option<crate::rt::Task<()>>>,
}

impl Log<DmaStorage> {
    /// Opens (recovering) or creates the log in `config.dir` on [`DmaStorage`] (O_DIRECT files).
    pub async fn open(config: LogConfig) -> Result<Self, LogError> {
        Self::open_with(DmaStorage, config).await
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl<S: Storage + 'static> Log<S> {
    /// Opens (recovering) or creates the log in `config.dir` on `storage`, and starts its
    /// committer task on the current executor. Fails with [`LogError::Locked`] while
    /// another log (or the committer of a dropped one, still writing) holds the directory.
    pub async fn open_with(storage: S, config: LogConfig) -> Result<Self, LogError> {
        config.validate()?;
        let dir = &config.dir;
        storage
            .create_dir_all(dir)
            .await
            .map_err(|e| LogError::io("create directory", dir, e))?;
        let lock_path = crate::file::lock_path(dir);
        let lock = match storage.lock(&lock_path).await {
            Ok(lock) => lock,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(LogError::Locked { path: lock_path });
            }
            Err(e) => return Err(LogError::io("lock", lock_path, e)),
        };
        let mut recovered = recovery::recover(&storage, &config).await?;
        let settled = gaps::settle(&storage, &config, &mut recovered).await?;
        let next_offset = settled.next_offset;
        let first_unsealed = recovered
            .segments
            .keys()
            .next_back()
            .copied()
            .unwrap_or(next_offset);
        let size_bytes = recovered.segments.values().map(Segment::size_bytes).sum();
        let state = State {
            segments: recovered.segments,
            first_unsealed,
            next_offset,
            size_bytes,
            cache: TailCache::new(config.tail_cache_bytes, next_offset),
        };
        let shared = Rc::new(Shared {
            storage,
            _lock: lock,
            config,
            state: RefCell::new(state),
            commit: Commit::new(next_offset),
            recovery: recovered.report,
            reservation: settled.reservation,
            skipped: settled.skipped,
            free_chunks: RefCell::new(Vec::new()),
        });
        let committer = crate::rt::spawn(commit::run(shared.clone()));
        Ok(Self {
            shared,
            committer: RefCell::new(Some(committer)),
        })
    }

    /// Validates the batch, stamps its base offset and append time in place, and appends it
    /// (copying it into the log's aligned write buffers). In `Sync` mode resolves only after
    /// an fdatasync covered it; in `Async` mode once it is buffered (or, under back pressure,
    /// once writes brought the unwritten bytes below [`config::ASYNC_UNWRITTEN_BYTES_MAX`]).
    pub async fn append(&self, mut batch: BytesMut) -> Result<Appended, LogError> {
        let shared = &*self.shared;
        shared.commit.check_poisoned()?;
        let header = parse_appended(&batch, shared.config.batch_len_max)?;
        let len = batch.len() as u64;
        let append_time_ms = now_ms();
        let appended = {
            let mut state = shared.state.borrow_mut();
            let base_offset = state.next_offset;
            let next_offset = base_offset
                .checked_add(u64::from(header.record_count))
                .ok_or(LogError::InvalidBatch {
                    source: protocol::record::BatchError::OffsetOverflow { base_offset },
                })?;
            protocol::record::stamp(&mut batch, base_offset, append_time_ms)
                .map_err(|source| LogError::InvalidBatch { source })?;
            let bytes = batch.freeze();
            let segment_bytes_max = shared.config.segment_bytes_max;
            // Past a gap (the offset reservation after a crash) the batch starts a new segment,
            // so every segment's offsets stay contiguous and gaps lie between segments.
            let roll = state.segments.values().next_back().is_none_or(|active| {
                active.must_roll(len, next_offset, segment_bytes_max)
                    || active.next_offset != base_offset
            });
            if roll {
                let segment = Segment::new(base_offset, shared.config.index_interval_bytes);
                state.segments.insert(base_offset, segment);
            }
            let mut alloc = || shared.chunk_buffer();
            let filled = state
                .segments
                .values_mut()
                .next_back()
                .is_some_and(|active| {
                    active.append(&bytes, base_offset, next_offset, append_time_ms, &mut alloc)
                });
            let written = shared.commit.written_offset();
            state.cache.push(bytes, base_offset, next_offset, written);
            state.next_offset = next_offset;
            state.size_bytes += len;
            (
                Appended {
                    base_offset,
                    next_offset,
                },
                filled || roll,
            )
        };
        let (appended, chunk_ready) = appended;
        let commit = &shared.commit;
        let was_clean = commit.unsynced_bytes() == 0;
        commit.on_append(len);
        match shared.config.flush {
            FlushMode::Sync => commit.wait_synced(appended.next_offset).await?,
            FlushMode::Async { bytes, .. } => {
                // The committer starts writes as chunks fill, and its interval timer when the
                // log turns dirty.
                if chunk_ready || was_clean || commit.unsynced_bytes() >= bytes {
                    commit.kick();
                }
                if commit.unwritten_bytes() >= config::ASYNC_UNWRITTEN_BYTES_MAX {
                    commit
                        .wait_unwritten_below(config::ASYNC_UNWRITTEN_BYTES_MAX)
                        .await?;
                }
                // Acknowledge only offsets a crash cannot hand out again.
                if let Some(reservation) = &shared.reservation {
                    if reservation.due(appended.next_offset) {
                        commit.kick();
                    }
                    if appended.next_offset > reservation.limit() {
                        reservation::wait_covers(commit, reservation, appended.next_offset).await?;
                    }
                }
            }
        }
        Ok(appended)
    }

    /// Whole batches starting with the one that contains `offset`, up to `max_bytes` (at least
    /// one batch when `offset < next_offset`). Empty at `next_offset`; `OffsetOutOfRange`
    /// below `start_offset` or past `next_offset`. Sees appended but unflushed batches.
    pub async fn read(&self, offset: u64, max_bytes: usize) -> Result<Vec<Bytes>, LogError> {
        let shared = &*self.shared;
        let (files, scan_from, disk_end, offset) = {
            let state = shared.state.borrow();
            let start_offset = state.start_offset();
            if offset < start_offset || offset > state.next_offset {
                return Err(LogError::OffsetOutOfRange {
                    offset,
                    start_offset,
                    next_offset: state.next_offset,
                });
            }
            // An offset in a gap (recorded in the skipped journal) is served from the first
            // batch after it: consumers see offsets jump rather than stall.
            let offset = gaps::serve_from(&state.segments, offset, state.next_offset);
            if offset >= state.next_offset {
                return Ok(Vec::new());
            }
            if offset >= state.cache.start_offset() {
                return Ok(state.cache.read(offset, max_bytes));
            }
            let Some((base, segment)) = state.segments.range(..=offset).next_back() else {
                return Err(LogError::OffsetOutOfRange {
                    offset,
                    start_offset,
                    next_offset: state.next_offset,
                });
            };
            // Below the cache everything is written, so the segment has files.
            let Some(files) = segment.files.clone() else {
                return Err(LogError::Corrupt {
                    path: crate::file::log_path(&shared.config.dir, *base),
                    position: 0,
                    reason: format!("offset {offset} is neither cached nor written"),
                });
            };
            let (_, position) = segment.index.lookup(offset - base);
            (files, position, segment.log.written_len(), offset)
        };
        read_from_disk(
            &shared.storage,
            &files.log,
            &files.log_path,
            ReadRange {
                offset,
                max_bytes,
                scan_from,
                disk_end,
                index_interval_bytes: shared.config.index_interval_bytes,
            },
        )
        .await
    }

    /// Oldest offset still in the log.
    pub fn start_offset(&self) -> u64 {
        self.shared.state.borrow().start_offset()
    }

    /// Offset the next appended record gets.
    pub fn next_offset(&self) -> u64 {
        self.shared.state.borrow().next_offset
    }

    /// Bytes of all segments, buffered bytes included.
    pub fn size_bytes(&self) -> u64 {
        self.shared.state.borrow().size_bytes
    }

    /// Number of segments, the active one included.
    pub fn segment_count(&self) -> usize {
        self.shared.state.borrow().segments.len()
    }

    /// Offsets below this are durable (written and fdatasynced).
    pub fn synced_offset(&self) -> u64 {
        self.shared.commit.synced_offset()
    }

    /// Writes everything buffered and fdatasyncs it; resolves once durable.
    pub async fn flush(&self) -> Result<(), LogError> {
        let next_offset = self.next_offset();
        self.shared.commit.wait_synced(next_offset).await?;
        self.shared.commit.check_poisoned()
    }

    /// Deletes whole old segments past `retention_bytes_max` or older than `retention_age_ms`
    /// (judged at `now_ms` by each segment's newest append), oldest first; never the active one.
    pub async fn apply_retention(&self, now_ms: i64) -> Result<RetentionReport, LogError> {
        retention::apply(&self.shared, now_ms).await
    }

    /// Every gap in the log's offsets, as recorded in its skipped journal, in the order
    /// recorded: offsets in them hold no record, and reads of them serve the next batch.
    pub fn skipped_ranges(&self) -> &[SkippedRange] {
        &self.shared.skipped
    }

    /// What `open` found and repaired.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.shared.recovery
    }

    /// Flushes everything, syncs the index files, and stops the committer task.
    pub async fn close(self) -> Result<(), LogError> {
        self.shared.commit.close();
        let committer = self.committer.borrow_mut().take();
        if let Some(committer) = committer {
            committer.await;
        }
        self.shared.commit.check_poisoned()
    }
}

impl<S: Storage + 'static> Drop for Log<S> {
    fn drop(&mut self) {
        // Not closed explicitly: let the committer write what is buffered and stop on its own.
        self.shared.commit.close();
        if let Some(committer) = self.committer.get_mut().take() {
            committer.detach();
        }
    }
}

/// Checks an appended buffer: exactly one valid batch.
fn parse_appended(batch: &[u8], batch_len_max: usize) -> Result<BatchHeader, LogError> {
    let view = BatchView::parse(batch, batch_len_max)
        .map_err(|source| LogError::InvalidBatch { source })?;
    if view.len() != batch.len() {
        return Err(LogError::TrailingBytes {
            batch_len: view.len(),
            buffer_len: batch.len(),
        });
    }
    Ok(*view.header())
}

/// What a disk read covers.
struct ReadRange {
    offset: u64,
    max_bytes: usize,
    /// Position of an indexed batch at or before `offset`.
    scan_from: u64,
    /// Written length of the segment file.
    disk_end: u64,
    index_interval_bytes: u32,
}

/// Smallest disk read: small reads cost as much as this.
const READ_CHUNK_MIN: u64 = 64 << 10;

async fn read_from_disk<S: Storage>(
    storage: &S,
    file: &S::File,
    path: &std::path::Path,
    range: ReadRange,
) -> Result<Vec<Bytes>, LogError> {
    let mut out = Vec::new();
    let mut total = 0usize;
    let mut position = range.scan_from;
    let mut need = 0u64;
    while position < range.disk_end {
        let wanted = (range.max_bytes.saturating_sub(total) as u64
            + u64::from(range.index_interval_bytes))
        .max(READ_CHUNK_MIN)
        .max(need);
        let len = wanted.min(range.disk_end - position);
        let chunk = storage
            .read_at(file, position, len as usize)
            .await
            .map_err(|e| LogError::io("read", path, e))?;
        if (chunk.len() as u64) < len {
            return Err(LogError::Corrupt {
                path: path.to_path_buf(),
                position: position + chunk.len() as u64,
                reason: format!("file ends before its written length {}", range.disk_end),
            });
        }
        let mut at = 0usize;
        while chunk.len() - at >= BATCH_HEADER_LEN {
            let header = BatchHeader::decode(&chunk[at..])
                .and_then(|h| h.validate(protocol::record::BATCH_LEN_MAX).map(|()| h))
                .map_err(|e| LogError::Corrupt {
                    path: path.to_path_buf(),
                    position: position + at as u64,
                    reason: e.to_string(),
                })?;
            let batch_len = header.batch_len as usize;
            if chunk.len() - at < batch_len {
                break;
            }
            if header.next_offset() > range.offset {
                if out.is_empty() && header.base_offset > range.offset {
                    // The index pointed past the batch holding the offset.
                    return Err(LogError::Corrupt {
                        path: path.to_path_buf(),
                        position: position + at as u64,
                        reason: format!(
                            "batch at base offset {} found where offset {} was expected",
                            header.base_offset, range.offset
                        ),
                    });
                }
                if !out.is_empty() && total + batch_len > range.max_bytes {
                    return Ok(out);
                }
                out.push(chunk.slice(at..at + batch_len));
                total += batch_len;
                if total >= range.max_bytes {
                    return Ok(out);
                }
            }
            at += batch_len;
        }
        if at == 0 {
            // One batch larger than the chunk: read at least all of it next time.
            let header = BatchHeader::decode(&chunk).map_err(|e| LogError::Corrupt {
                path: path.to_path_buf(),
                position,
                reason: e.to_string(),
            })?;
            need = u64::from(header.batch_len);
            if position + need > range.disk_end {
                return Err(LogError::Corrupt {
                    path: path.to_path_buf(),
                    position,
                    reason: format!(
                        "batch of {need} bytes passes the written length {}",
                        range.disk_end
                    ),
                });
            }
        }
        position += at as u64;
    }
    Ok(out)
}
