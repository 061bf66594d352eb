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
pub mod closed;
mod commit;
pub mod config;
pub mod damage;
pub mod epochs;
pub mod error;
mod gaps;
pub mod index;
mod recovery;
pub mod repair;
pub mod reservation;
mod retention;
pub mod scrub;
mod segment;
pub mod skipped;
pub mod stats;
pub mod storage;
mod truncate;

use std::{
    cell::{Cell, RefCell},
    collections::BTreeMap,
    rc::Rc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::{Bytes, BytesMut};
use protocol::record::{BATCH_HEADER_LEN, BatchHeader, BatchView};

use self::{cache::TailCache, commit::Commit, segment::Segment};
pub use self::{
    cache::{CacheBudget, DEFAULT_SHARD_TAIL_CACHE_BYTES, set_shard_budget, shard_budget},
    config::{FlushMode, LogConfig},
    damage::{Damage, FoundBy},
    epochs::{EpochHistory, EpochStart},
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
    /// Exclusive lock on the directory's lock file: one writer per directory. A reopen of a
    /// poisoned log releases it early, once the committer stopped, for the new incarnation.
    lock: RefCell<Option<S::Lock>>,
    pub(crate) config: LogConfig,
    pub(crate) state: RefCell<State<S::File, S::Buffer>>,
    pub(crate) commit: Commit,
    pub(crate) recovery: RecoveryReport,
    /// The earliest damage known in the stored data.
    pub(crate) damage: RefCell<damage::DamageRecord>,
    /// The offset reservation, in `Async` mode: appends acknowledge only offsets below it.
    pub(crate) reservation: Option<reservation::Reservation<S::File>>,
    /// Every gap in the log's offsets, as recorded (only `open` records gaps).
    skipped: Vec<SkippedRange>,
    /// Chunk buffers back from their write, for the next appends (at most
    /// [`config::FREE_CHUNKS_MAX`]).
    free_chunks: RefCell<Vec<S::Buffer>>,
    /// The leader-epoch journal (replicated queues; empty otherwise).
    pub(crate) epochs: RefCell<epochs::EpochJournal>,
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
    /// The current incarnation: replaced whole when a poisoned log reopens. Operations clone
    /// the `Rc` so one running across a reopen finishes on the incarnation it started on.
    shared: RefCell<Rc<Shared<S>>>,
    committer: RefCell<Option<crate::rt::Task<()>>>,
    /// A reopen is running: appends meanwhile fail with the poison instead of reopening twice.
    reopening: Cell<bool>,
    /// An epoch is being recorded or the log cut: the one writer of epochs and cuts (the
    /// queue's replication task) never runs two at once, and this catches it if it did.
    epoch_busy: Cell<bool>,
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
        let shared = open_shared(storage, config).await?;
        let committer = crate::rt::spawn(commit::run(shared.clone()));
        Ok(Self {
            shared: RefCell::new(shared),
            committer: RefCell::new(Some(committer)),
            reopening: Cell::new(false),
            epoch_busy: Cell::new(false),
        })
    }

    /// The current incarnation.
    fn shared(&self) -> Rc<Shared<S>> {
        self.shared.borrow().clone()
    }

    /// Reopens the log if a failed write poisoned it at least `config.reopen_after_poison_ms`
    /// ago: stops using the poisoned incarnation, releases its lock and opens the directory
    /// again, so recovery (§3.1 step 2) cuts whatever the failed write left and keeps every
    /// acknowledged batch (they were fdatasynced before it). True if it reopened. A failed
    /// reopen leaves the log poisoned and waits another backoff before the next try.
    pub async fn reopen_if_poisoned(&self) -> Result<bool, LogError> {
        let shared = self.shared();
        let (Some(poisoned_for), Some(after_ms)) = (
            shared.commit.poisoned_for(),
            shared.config.reopen_after_poison_ms,
        ) else {
            return Ok(false);
        };
        if poisoned_for < Duration::from_millis(after_ms) || self.reopening.replace(true) {
            return Ok(false);
        }
        // Cleared even if this future is dropped midway, so a later write reopens instead.
        let reopening = ClearOnDrop(&self.reopening);
        let reopened = self.reopen(&shared).await;
        drop(reopening);
        match reopened {
            Ok(()) => {
                ::log::warn!(
                    "{}: reopened the log poisoned {} ms ago; it takes appends again at offset {}",
                    shared.config.dir.display(),
                    poisoned_for.as_millis(),
                    self.next_offset()
                );
                Ok(true)
            }
            Err(e) => {
                shared.commit.reopen_failed();
                Err(e)
            }
        }
    }

    async fn reopen(&self, poisoned: &Rc<Shared<S>>) -> Result<(), LogError> {
        // The committer stops at the poison; once it has, nothing writes to the directory.
        let committer = self.committer.borrow_mut().take();
        if let Some(committer) = committer {
            committer.await;
        }
        drop(poisoned.lock.borrow_mut().take());
        let shared = open_shared(poisoned.storage.clone(), poisoned.config.clone()).await?;
        let committer = crate::rt::spawn(commit::run(shared.clone()));
        *self.shared.borrow_mut() = shared;
        *self.committer.borrow_mut() = Some(committer);
        Ok(())
    }
}

/// Clears a flag when dropped.
struct ClearOnDrop<'a>(&'a Cell<bool>);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// Locks and recovers the directory: one incarnation of a log, its committer not started.
async fn open_shared<S: Storage>(storage: S, config: LogConfig) -> Result<Rc<Shared<S>>, LogError> {
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
    let epochs = epochs::EpochJournal::load(&storage, dir).await?;
    let settled = gaps::settle(&storage, &config, &mut recovered).await?;
    let next_offset = settled.next_offset;
    let epochs = RefCell::new(epochs);
    let stale = epochs
        .borrow()
        .history()
        .latest()
        .is_some_and(|latest| latest.start_offset > next_offset);
    if stale {
        // A crash lost the batches an epoch began with (never acknowledged to anyone): the
        // epoch holds nothing here, and the history must not say otherwise.
        let event = epochs::EpochEvent::Truncate(next_offset + 1);
        epochs::append(&storage, dir, &epochs, event).await?;
    }
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
    let mut damage = damage::DamageRecord::default();
    if let Some(found) = recovered.report.damage.clone() {
        damage.record(found);
    }
    if let Some(&(from, to)) = recovered.report.unrecorded_gaps.first() {
        // No segment holds these offsets and no repair or crash recorded skipping them: a
        // segment file is missing. Serving on would skip its records silently.
        damage.record(Damage {
            offset: from,
            path: config.dir.clone(),
            position: 0,
            reason: format!(
                "offsets [{from}, {to}) are missing: no segment holds them and the skipped journal does not record them"
            ),
            found_by: FoundBy::Recovery,
        });
    }
    Ok(Rc::new(Shared {
        storage,
        lock: RefCell::new(Some(lock)),
        config,
        state: RefCell::new(state),
        commit: Commit::new(next_offset),
        damage: RefCell::new(damage),
        recovery: recovered.report,
        reservation: settled.reservation,
        skipped: settled.skipped,
        free_chunks: RefCell::new(Vec::new()),
        epochs,
    }))
}

impl<S: Storage + 'static> Log<S> {
    /// Validates the batch, stamps its base offset and append time in place, and appends it
    /// (copying it into the log's aligned write buffers). In `Sync` mode resolves only after
    /// an fdatasync covered it; in `Async` mode once it is buffered (or, under back pressure,
    /// once writes brought the unwritten bytes below [`config::ASYNC_UNWRITTEN_BYTES_MAX`]).
    ///
    /// On a poisoned log whose `reopen_after_poison_ms` passed, reopens it first.
    pub async fn append(&self, batch: BytesMut) -> Result<Appended, LogError> {
        match self
            .append_admitted(batch, |_, _| Ok::<(), std::convert::Infallible>(()))
            .await?
        {
            Ok(appended) => Ok(appended),
            Err((never, _)) => match never {},
        }
    }

    /// Like [`Self::append`], with `admit` deciding, once the batch is validated and its
    /// offsets known, whether it is appended: called with the validated bytes and where they
    /// would land, with no await between that call and the stamp, so a decision `admit` takes
    /// from state it keeps beside the log (the idempotent producer's window) holds for the
    /// append. `Ok(Err((refusal, batch)))` when it refused: nothing was appended.
    pub async fn append_admitted<R>(
        &self,
        mut batch: BytesMut,
        admit: impl FnOnce(&[u8], Appended) -> Result<(), R>,
    ) -> Result<Result<Appended, (R, BytesMut)>, LogError> {
        self.reopen_before_write().await;
        let shared = &*self.shared();
        shared.commit.check_poisoned()?;
        let (header, body_crc) = parse_appended(&batch, shared.config.batch_len_max)?;
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
            let landing = Appended {
                base_offset,
                next_offset,
            };
            if let Err(refused) = admit(&batch, landing) {
                drop(state);
                return Ok(Err((refused, batch)));
            }
            protocol::record::stamp_parsed(&mut batch, body_crc, base_offset, append_time_ms)
                .map_err(|source| LogError::InvalidBatch { source })?;
            let bytes = batch.freeze();
            let chunk_ready = push_stamped(
                shared,
                &mut state,
                bytes,
                base_offset,
                next_offset,
                append_time_ms,
            );
            (
                Appended {
                    base_offset,
                    next_offset,
                },
                chunk_ready,
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
        Ok(Ok(appended))
    }

    /// The offset from which the last `bytes` of the log (at least) start, to within one
    /// index interval: where a scan of the log's tail begins. The log's start when it holds
    /// less.
    pub fn tail_start_offset(&self, bytes: u64) -> u64 {
        let shared = self.shared();
        let state = shared.state.borrow();
        let mut left = bytes;
        for segment in state.segments.values().rev() {
            let size = segment.size_bytes();
            if size >= left {
                // The last index entry at or before the position `left` bytes from the end.
                let position = size - left;
                let entry = segment
                    .index
                    .entries()
                    .iter()
                    .take_while(|e| u64::from(e.position) <= position)
                    .last();
                return segment.base_offset + entry.map_or(0, |e| u64::from(e.relative_offset));
            }
            left -= size;
        }
        state.start_offset()
    }

    /// On a poisoned log whose `reopen_after_poison_ms` passed, reopens it (a failure is
    /// logged; the write then fails with the poison).
    async fn reopen_before_write(&self) {
        if self.shared().commit.poisoned_for().is_some() {
            if let Err(e) = self.reopen_if_poisoned().await {
                ::log::warn!(
                    "{}: reopening the poisoned log failed, it stays poisoned: {e}",
                    self.shared().config.dir.display()
                );
            }
        }
    }

    /// Appends batches a leader stored, bytes as they are on its disk (a follower's copy,
    /// `docs/ARCHITECTURE.md` §10): each is verified whole (batch checksum and, for current
    /// batches, the stamped offset and time it covers) and must begin at the log's end, so
    /// the replica's offsets are the leader's. Nothing is restamped. All or none: a batch that
    /// fails refuses the whole call before anything is appended.
    ///
    /// Resolves once the batches are buffered; [`Self::wait_durable`] waits for the flush mode.
    /// `None` for an empty slice.
    pub async fn append_replicated(&self, batches: &[Bytes]) -> Result<Option<Appended>, LogError> {
        if batches.is_empty() {
            return Ok(None);
        }
        self.reopen_before_write().await;
        let shared = &*self.shared();
        shared.commit.check_poisoned()?;
        let (appended, chunk_ready, len) = {
            let mut state = shared.state.borrow_mut();
            let mut expected = state.next_offset;
            let mut headers = Vec::with_capacity(batches.len());
            for batch in batches {
                let (header, _) = parse_appended(batch, shared.config.batch_len_max)?;
                if header.base_offset != expected {
                    return Err(LogError::OutOfSequence {
                        expected,
                        found: header.base_offset,
                    });
                }
                expected = header
                    .base_offset
                    .checked_add(u64::from(header.record_count))
                    .ok_or(LogError::InvalidBatch {
                        source: protocol::record::BatchError::OffsetOverflow {
                            base_offset: header.base_offset,
                        },
                    })?;
                headers.push(header);
            }
            let base_offset = state.next_offset;
            let mut chunk_ready = false;
            let mut len = 0;
            for (batch, header) in batches.iter().zip(&headers) {
                len += batch.len() as u64;
                chunk_ready |= push_stamped(
                    shared,
                    &mut state,
                    batch.clone(),
                    header.base_offset,
                    header.next_offset(),
                    header.append_time_ms,
                );
            }
            let appended = Appended {
                base_offset,
                next_offset: state.next_offset,
            };
            (appended, chunk_ready, len)
        };
        let commit = &shared.commit;
        commit.on_append(len);
        // Kicked even without a full chunk: one wake-up per fetch, and a follower's batches
        // must reach the disk whether or not anyone waits on them yet.
        if chunk_ready || commit.unsynced_bytes() > 0 {
            commit.kick();
        }
        if commit.unwritten_bytes() >= config::ASYNC_UNWRITTEN_BYTES_MAX {
            commit
                .wait_unwritten_below(config::ASYNC_UNWRITTEN_BYTES_MAX)
                .await?;
        }
        Ok(Some(appended))
    }

    /// Resolves once offsets below `offset` are durable by the log's flush mode: fdatasynced in
    /// `Sync` mode, buffered in `Async` mode (what a follower acknowledges to its leader).
    pub async fn wait_durable(&self, offset: u64) -> Result<(), LogError> {
        let shared = self.shared();
        match shared.config.flush {
            FlushMode::Sync => shared.commit.wait_synced(offset).await,
            FlushMode::Async { .. } => shared.commit.check_poisoned(),
        }
    }

    /// Resolves once offsets below `offset` are written and fdatasynced, whatever the flush
    /// mode (an async log syncs within its interval). Held messages are released only once
    /// durable, and their outcome is recorded only once the released copy is.
    pub async fn wait_synced(&self, offset: u64) -> Result<(), LogError> {
        let shared = self.shared();
        shared.commit.wait_synced(offset).await?;
        shared.commit.check_poisoned()
    }

    /// The leader epochs recorded in this log, oldest first (empty for a queue never
    /// replicated).
    pub fn epochs(&self) -> EpochHistory {
        self.shared.borrow().epochs.borrow().history().clone()
    }

    /// The latest leader epoch the log recorded, without copying the history.
    pub fn latest_epoch(&self) -> Option<u64> {
        self.shared
            .borrow()
            .epochs
            .borrow()
            .history()
            .latest()
            .map(|e| e.epoch)
    }

    /// Records durably that `start.epoch` began at `start.start_offset`, at or below the log's
    /// end: a new leader records its epoch at its end before it appends in it, a follower the
    /// leader's epochs as it copies their batches. False when already recorded; an error when
    /// it would go backwards ([`epochs::EpochError`]).
    pub async fn record_epoch(&self, start: EpochStart) -> Result<bool, LogError> {
        let shared = self.shared();
        let log_end = self.next_offset();
        if start.start_offset > log_end {
            return Err(LogError::Epoch {
                source: epochs::EpochError::BeyondEnd {
                    epoch: start.epoch,
                    start_offset: start.start_offset,
                    log_end,
                },
            });
        }
        let changes = shared
            .epochs
            .borrow()
            .history()
            .check(start)
            .map_err(|source| LogError::Epoch { source })?;
        if !changes {
            return Ok(false);
        }
        let _busy = self.epoch_guard()?;
        epochs::append(
            &shared.storage,
            &shared.config.dir,
            &shared.epochs,
            epochs::EpochEvent::Begin(start),
        )
        .await?;
        Ok(true)
    }

    /// Marks the one epoch or cut operation running; an error if one already is.
    fn epoch_guard(&self) -> Result<ClearOnDrop<'_>, LogError> {
        if self.epoch_busy.replace(true) {
            return Err(LogError::Config {
                reason: "a leader epoch or a cut of this log is already being written".into(),
            });
        }
        Ok(ClearOnDrop(&self.epoch_busy))
    }

    /// Cuts the log back so that `offset` is its end: every batch at or past it is removed, and
    /// the epochs that began there are forgotten (a replica's divergent tail,
    /// [`truncate`](self::truncate)). `offset` must be a batch boundary within
    /// `[start_offset, next_offset]`. Flushes first, then reopens the log from disk; the caller
    /// appends nothing meanwhile (a replica's log has one writer, its replication task).
    pub async fn truncate_to(&self, offset: u64) -> Result<(), LogError> {
        let (start_offset, next_offset) = (self.start_offset(), self.next_offset());
        if offset == next_offset {
            return Ok(());
        }
        if offset < start_offset || offset > next_offset {
            return Err(LogError::Truncate {
                offset,
                reason: format!("it is outside the log [{start_offset}, {next_offset}]"),
            });
        }
        let _busy = self.epoch_guard()?;
        self.flush().await?;
        let shared = self.shared();
        shared.commit.close();
        let committer = self.committer.borrow_mut().take();
        if let Some(committer) = committer {
            committer.await;
        }
        let cut = truncate::cut(&shared, offset).await;
        drop(shared.lock.borrow_mut().take());
        // Open again whether or not the cut finished: a partial cut (a crash's equal) is
        // something open recovers from, and the log must not stay without a committer.
        let reopened = open_shared(shared.storage.clone(), shared.config.clone()).await;
        let fresh = match reopened {
            Ok(fresh) => fresh,
            Err(e) => {
                // Keep the stopped incarnation, poisoned: writes fail with a clear error until
                // a reopen succeeds.
                shared.commit.poison(LogError::Config {
                    reason: format!("reopening after a cut to offset {offset} failed: {e}"),
                });
                return Err(e);
            }
        };
        let end = fresh.state.borrow().next_offset;
        *self.committer.borrow_mut() = Some(crate::rt::spawn(commit::run(fresh.clone())));
        *self.shared.borrow_mut() = fresh;
        cut?;
        ::log::info!(
            "{}: cut the log from {next_offset} back to {end} (a replica's divergent tail)",
            self.shared().config.dir.display()
        );
        Ok(())
    }

    /// Whole batches starting with the one that contains `offset`, up to `max_bytes` (at least
    /// one batch when `offset < next_offset`). Empty at `next_offset`; `OffsetOutOfRange`
    /// below `start_offset` or past `next_offset`. Sees appended but unflushed batches.
    ///
    /// Every batch read from disk is verified (checksums and offset continuity) before it is
    /// returned; `Damaged` at or past damage, which the log then remembers (see [`damage`]).
    pub async fn read(&self, offset: u64, max_bytes: usize) -> Result<Vec<Bytes>, LogError> {
        let shared = &*self.shared();
        let (files, base, scan_from, disk_end, offset) = {
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
            if let Some(damage) = shared.damage.borrow().covering(offset) {
                return Err(LogError::Damaged {
                    damage: Box::new(damage.clone()),
                });
            }
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
            let (relative, position) = segment.index.lookup(offset - base);
            // The disk part ends where the cache begins (a batch may be half written there)
            // or where the segment does.
            let end_offset = segment.next_offset.min(state.cache.start_offset());
            (
                files,
                *base,
                (position, base + relative),
                (segment.log.written_len(), end_offset),
                offset,
            )
        };
        let (disk_end, end_offset) = disk_end;
        let range = |(scan_from, expected)| ReadRange {
            offset,
            max_bytes,
            scan_from,
            expected,
            disk_end,
            end_offset,
            index_interval_bytes: shared.config.index_interval_bytes,
        };
        let mut read = read_from_disk(
            &shared.storage,
            &files.log,
            &files.log_path,
            range(scan_from),
        )
        .await?;
        if read.batches.is_empty()
            && read
                .damage
                .as_ref()
                .is_some_and(|d| d.position == scan_from.0)
            && scan_from.0 > 0
        {
            // Bad at the very batch the index points to: the index entry may be what is
            // damaged. Scan the segment from its start before calling the data damaged.
            ::log::warn!(
                "{}: index entry for offset {} points at an invalid batch at byte {}; scanning from the segment start",
                files.index_path.display(),
                scan_from.1,
                scan_from.0
            );
            read = read_from_disk(
                &shared.storage,
                &files.log,
                &files.log_path,
                range((0, base)),
            )
            .await?;
        }
        if let Some(damage) = read.damage {
            let mut record = shared.damage.borrow_mut();
            record.record(damage);
            // What was read before the damage is served; a read starting at it is refused.
            if let (true, Some(earliest)) = (read.batches.is_empty(), record.earliest()) {
                return Err(LogError::Damaged {
                    damage: Box::new(earliest.clone()),
                });
            }
        }
        Ok(read.batches)
    }

    /// Reads every written segment and verifies every batch and index entry, at the pace
    /// `pacer` allows; damage found is recorded as if a read had found it.
    pub async fn scrub(&self, pacer: &mut scrub::Pacer) -> Result<scrub::ScrubReport, LogError> {
        scrub::scrub(&self.shared(), pacer).await
    }

    /// The earliest damage known in the stored data, if any: offsets at or past it are not
    /// served until the queue is repaired.
    pub fn damage(&self) -> Option<Damage> {
        self.shared().damage.borrow().earliest().cloned()
    }

    /// Oldest offset still in the log.
    pub fn start_offset(&self) -> u64 {
        self.shared.borrow().state.borrow().start_offset()
    }

    /// Offset the next appended record gets.
    pub fn next_offset(&self) -> u64 {
        self.shared.borrow().state.borrow().next_offset
    }

    /// Bytes of all segments, buffered bytes included.
    pub fn size_bytes(&self) -> u64 {
        self.shared.borrow().state.borrow().size_bytes
    }

    /// Number of segments, the active one included.
    pub fn segment_count(&self) -> usize {
        self.shared.borrow().state.borrow().segments.len()
    }

    /// Offsets below this are durable (written and fdatasynced).
    pub fn synced_offset(&self) -> u64 {
        self.shared.borrow().commit.synced_offset()
    }

    /// Writes everything buffered and fdatasyncs it; resolves once durable.
    pub async fn flush(&self) -> Result<(), LogError> {
        let next_offset = self.next_offset();
        let shared = self.shared();
        shared.commit.wait_synced(next_offset).await?;
        shared.commit.check_poisoned()
    }

    /// Deletes whole old segments past `retention_bytes_max` or older than `retention_age_ms`
    /// (judged at `now_ms` by each segment's newest append), oldest first; never the active one.
    pub async fn apply_retention(&self, now_ms: i64) -> Result<RetentionReport, LogError> {
        retention::apply(&self.shared(), now_ms).await
    }

    /// Every gap in the log's offsets, as recorded in its skipped journal, in the order
    /// recorded: offsets in them hold no record, and reads of them serve the next batch.
    pub fn skipped_ranges(&self) -> Vec<SkippedRange> {
        self.shared.borrow().skipped.clone()
    }

    /// What `open` (or the last reopen of a poisoned log) found and repaired.
    pub fn recovery_report(&self) -> RecoveryReport {
        self.shared.borrow().recovery.clone()
    }

    /// Flushes everything, syncs the index files, and stops the committer task.
    pub async fn close(self) -> Result<(), LogError> {
        let shared = self.shared();
        shared.commit.close();
        let committer = self.committer.borrow_mut().take();
        if let Some(committer) = committer {
            committer.await;
        }
        shared.commit.check_poisoned()?;
        // Every batch is synced: say so, so that the next open treats invalid bytes in the
        // tail as damage, not a torn write. Without the record the next open is only more
        // cautious about what it cannot tell apart, so a failure here is not the close's.
        let record = {
            let state = shared.state.borrow();
            state
                .segments
                .iter()
                .next_back()
                .filter(|(_, segment)| segment.files.is_some())
                .map(|(&base, segment)| closed::CleanClose {
                    tail_base: base,
                    tail_len: segment.log.logical_len(),
                    next_offset: state.next_offset,
                })
        };
        if let Some(record) = record {
            if let Err(e) = closed::store(&shared.storage, &shared.config.dir, &record).await {
                ::log::warn!("recording the clean close failed: {e}");
            }
        }
        Ok(())
    }
}

impl<S: Storage + 'static> Drop for Log<S> {
    fn drop(&mut self) {
        // Not closed explicitly: let the committer write what is buffered and stop on its own.
        self.shared.get_mut().commit.close();
        if let Some(committer) = self.committer.get_mut().take() {
            committer.detach();
        }
    }
}

/// Adds a stamped batch at the end of the log: to the active segment (rolling a new one when
/// it is full or the batch does not continue it) and the tail cache. Returns whether a chunk
/// is ready to be written.
fn push_stamped<S: Storage>(
    shared: &Shared<S>,
    state: &mut State<S::File, S::Buffer>,
    bytes: Bytes,
    base_offset: u64,
    next_offset: u64,
    append_time_ms: i64,
) -> bool {
    let len = bytes.len() as u64;
    let segment_bytes_max = shared.config.segment_bytes_max;
    // Past a gap (the offset reservation after a crash) the batch starts a new segment, so
    // every segment's offsets stay contiguous and gaps lie between segments.
    let roll = state.segments.values().next_back().is_none_or(|active| {
        active.must_roll(len, next_offset, segment_bytes_max) || active.next_offset != base_offset
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
    filled || roll
}

/// Checks an appended buffer: exactly one valid batch. Returns its header and the checksum its
/// stamp completes.
fn parse_appended(batch: &[u8], batch_len_max: usize) -> Result<(BatchHeader, u32), LogError> {
    let view = BatchView::parse(batch, batch_len_max)
        .map_err(|source| LogError::InvalidBatch { source })?;
    if view.len() != batch.len() {
        return Err(LogError::TrailingBytes {
            batch_len: view.len(),
            buffer_len: batch.len(),
        });
    }
    Ok((*view.header(), view.body_crc()))
}

/// What a disk read covers.
struct ReadRange {
    offset: u64,
    max_bytes: usize,
    /// Position of an indexed batch at or before `offset`.
    scan_from: u64,
    /// The base offset the batch at `scan_from` must have.
    expected: u64,
    /// Written length of the segment file.
    disk_end: u64,
    /// The offset where what this read may take from disk ends: the segment's end, or the
    /// first batch still in the tail cache (it may be only partly written).
    end_offset: u64,
    index_interval_bytes: u32,
}

/// Verified batches from disk, and the damage that ended the read early, if any.
struct DiskRead {
    batches: Vec<Bytes>,
    damage: Option<Damage>,
}

/// Smallest disk read: small reads cost as much as this.
const READ_CHUNK_MIN: u64 = 64 << 10;

/// Reads whole batches from `range.scan_from`, verifying each one (header, checksums, and that
/// its base offset continues the previous batch) and returning those at or past
/// `range.offset`. Stops at the first batch that fails, reporting it as damage: a batch that
/// fails is never returned, and nothing after it is, so no record is skipped or relabelled.
async fn read_from_disk<S: Storage>(
    storage: &S,
    file: &S::File,
    path: &std::path::Path,
    range: ReadRange,
) -> Result<DiskRead, LogError> {
    let mut out = DiskRead {
        batches: Vec::new(),
        damage: None,
    };
    let mut total = 0usize;
    let mut position = range.scan_from;
    let mut expected = range.expected;
    let mut need = 0u64;
    let damaged = |out: &mut DiskRead, position: u64, expected: u64, reason: String| {
        out.damage = Some(Damage {
            offset: expected,
            path: path.to_path_buf(),
            position,
            reason,
            found_by: FoundBy::Read,
        });
    };
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
            let reason = format!("file ends before its written length {}", range.disk_end);
            damaged(&mut out, position + chunk.len() as u64, expected, reason);
            return Ok(out);
        }
        let mut at = 0usize;
        while chunk.len() - at >= BATCH_HEADER_LEN {
            if expected >= range.end_offset {
                return Ok(out);
            }
            let here = position + at as u64;
            let header = match damage::verify_batch(&chunk[at..], expected) {
                damage::Verdict::Batch(header) => header,
                damage::Verdict::Incomplete => break,
                damage::Verdict::Invalid(reason) => {
                    damaged(&mut out, here, expected, reason);
                    return Ok(out);
                }
            };
            let batch_len = header.batch_len as usize;
            expected = header.next_offset();
            if header.next_offset() > range.offset {
                if !out.batches.is_empty() && total + batch_len > range.max_bytes {
                    return Ok(out);
                }
                out.batches.push(chunk.slice(at..at + batch_len));
                total += batch_len;
                if total >= range.max_bytes {
                    return Ok(out);
                }
            }
            at += batch_len;
        }
        if expected >= range.end_offset {
            return Ok(out);
        }
        if at == 0 {
            // One batch larger than the chunk: read at least all of it next time. Its header
            // was validated above (or the chunk is shorter than a header).
            let batch_len = BatchHeader::decode(&chunk).map_or(0, |h| u64::from(h.batch_len));
            if batch_len == 0 || position + batch_len > range.disk_end {
                let reason = format!(
                    "batch of {batch_len} bytes passes the written length {}",
                    range.disk_end
                );
                damaged(&mut out, position, expected, reason);
                return Ok(out);
            }
            need = batch_len;
        }
        position += at as u64;
    }
    if expected < range.end_offset {
        let reason = format!(
            "the file's written data ends at byte {position} before offset {}",
            range.end_offset
        );
        damaged(&mut out, position, expected, reason);
    }
    Ok(out)
}
