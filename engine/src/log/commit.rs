//! Writing and syncing: the one task that does a log's file IO.
//!
//! Appends only touch memory: they take an offset and copy the batch into the active
//! segment's [`ChunkWriter`](crate::log::segment::ChunkWriter) (aligned buffers, written whole)
//! and the tail cache. The committer task of the log then
//!
//! - *streams*: as chunks fill, it writes them, up to [`WRITES_IN_FLIGHT_MAX`] at once, like a
//!   write-behind stream; appends in `Async` mode wait only once
//!   [`ASYNC_UNWRITTEN_BYTES_MAX`](crate::log::config::ASYNC_UNWRITTEN_BYTES_MAX) bytes are
//!   unwritten (back pressure);
//! - runs *rounds*: a round waits for the IO in flight, cuts the partial chunk, writes
//!   everything buffered so far, seals rolled segments, and issues one fdatasync that
//!   acknowledges every waiter whose offset it covered (group commit). `Sync` appends,
//!   `flush()`, `close()` and rolls run rounds; appends arriving during a round wait for the
//!   next one;
//! - in `Async` mode, syncs every `interval_ms` or once `bytes` are unsynced: by a round when
//!   the log is idle, else by a *background sync*, an fdatasync issued beside the writes in
//!   flight that covers what was written before it started, so streaming never stops for it.
//!
//! A failed write or fdatasync poisons the log: waiters get the error and so does every later
//! append and flush. Nothing is retried, because what reached the disk is no longer known;
//! the log heals only by a reopen (`Log::reopen_if_poisoned`), which recovers from the disk.
//! The durability protocol is §3.1 of `docs/ARCHITECTURE.md`.

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    future::{Future, poll_fn},
    pin::Pin,
    rc::Rc,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use crate::{
    file,
    log::{
        FlushMode, Shared,
        config::WRITES_IN_FLIGHT_MAX,
        error::LogError,
        segment::{Chunk, SegmentFiles, align_down, write_chunk, write_pending},
        storage::Storage,
    },
};

/// Outcome handed to a waiter.
type Outcome = Result<(), Arc<LogError>>;

/// One append or flush waiting for its offset to be synced.
#[derive(Default)]
pub struct Waiter {
    outcome: RefCell<Option<Outcome>>,
    waker: Cell<Option<Waker>>,
}

impl Waiter {
    fn finish(&self, outcome: Outcome) {
        *self.outcome.borrow_mut() = Some(outcome);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// Resolves when the waiter's offset is synced, or with the poisoning error.
pub struct WaitSynced(Rc<Waiter>);

impl Future for WaitSynced {
    type Output = Result<(), LogError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.0.outcome.borrow_mut().take() {
            Some(Ok(())) => Poll::Ready(Ok(())),
            Some(Err(cause)) => Poll::Ready(Err(LogError::Poisoned { cause })),
            None => {
                self.0.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        }
    }
}

/// A one-slot wake-up signal for the committer task.
#[derive(Default)]
struct Kick {
    kicked: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Kick {
    fn kick(&self) {
        self.kicked.set(true);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Ready (and reset) if kicked since the last call; else wakes `cx` on the next kick.
    fn poll_kicked(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.kicked.replace(false) {
            Poll::Ready(())
        } else {
            self.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        }
    }
}

/// Resolves once fewer than `limit` appended bytes wait to be written, or with the
/// poisoning error.
pub struct WaitUnwrittenBelow<'a> {
    commit: &'a Commit,
    limit: u64,
}

impl Future for WaitUnwrittenBelow<'_> {
    type Output = Result<(), LogError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let commit = self.commit;
        if let Err(e) = commit.check_poisoned() {
            return Poll::Ready(Err(e));
        }
        if commit.unwritten_bytes() < self.limit {
            return Poll::Ready(Ok(()));
        }
        commit.space_waiters.borrow_mut().push(cx.waker().clone());
        Poll::Pending
    }
}

/// Durability progress of one log, shared by appenders and the committer task.
#[derive(Default)]
pub struct Commit {
    /// Every offset below this is written and fdatasynced.
    synced_offset: Cell<u64>,
    /// Every offset below this is written to its file (maybe not synced).
    written_offset: Cell<u64>,
    /// Bytes appended since the log opened.
    appended_bytes: Cell<u64>,
    /// Of those, bytes written to their files, in order.
    written_bytes: Cell<u64>,
    /// Of those, bytes an fdatasync covered.
    synced_bytes: Cell<u64>,
    poisoned: RefCell<Option<Arc<LogError>>>,
    /// When the log was poisoned, or last failed to reopen: a reopen waits a while after it.
    poisoned_at: Cell<Option<Instant>>,
    /// Waiters in offset order: (offset that must be synced, waiter).
    waiters: RefCell<VecDeque<(u64, Rc<Waiter>)>>,
    /// Appends waiting for writes to make room (`Async` back pressure).
    space_waiters: RefCell<Vec<Waker>>,
    kick: Kick,
    closing: Cell<bool>,
}

impl Commit {
    /// Progress of a log whose files hold everything below `next_offset`, durably.
    pub fn new(next_offset: u64) -> Self {
        let commit = Self::default();
        commit.synced_offset.set(next_offset);
        commit.written_offset.set(next_offset);
        commit
    }

    /// Offsets below this are written to their files.
    pub fn written_offset(&self) -> u64 {
        self.written_offset.get()
    }

    /// Offsets below this are durable.
    pub fn synced_offset(&self) -> u64 {
        self.synced_offset.get()
    }

    /// Bytes appended but not yet written.
    pub fn unwritten_bytes(&self) -> u64 {
        self.appended_bytes.get() - self.written_bytes.get()
    }

    /// Bytes appended but not yet covered by an fdatasync.
    pub fn unsynced_bytes(&self) -> u64 {
        self.appended_bytes.get() - self.synced_bytes.get()
    }

    /// `Err(Poisoned)` once a write or fdatasync failed.
    pub fn check_poisoned(&self) -> Result<(), LogError> {
        match &*self.poisoned.borrow() {
            Some(cause) => Err(LogError::Poisoned {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// How long ago the log was poisoned (or last failed to reopen); `None` while healthy.
    pub fn poisoned_for(&self) -> Option<Duration> {
        self.poisoned_at.get().map(|at| at.elapsed())
    }

    /// A reopen of the poisoned log failed: the next one waits a full backoff again.
    pub fn reopen_failed(&self) {
        if self.poisoned_at.get().is_some() {
            self.poisoned_at.set(Some(Instant::now()));
        }
    }

    /// Accounts for an appended batch of `len` bytes.
    pub fn on_append(&self, len: u64) {
        self.appended_bytes.set(self.appended_bytes.get() + len);
    }

    /// A future that resolves once every offset below `offset` is synced; wakes the committer.
    pub fn wait_synced(&self, offset: u64) -> WaitSynced {
        let waiter = Rc::new(Waiter::default());
        if let Err(e) = self.check_poisoned() {
            let LogError::Poisoned { cause } = e else {
                unreachable!("check_poisoned returns only Poisoned")
            };
            waiter.finish(Err(cause));
        } else if offset <= self.synced_offset.get() {
            waiter.finish(Ok(()));
        } else {
            self.waiters
                .borrow_mut()
                .push_back((offset, waiter.clone()));
            self.kick.kick();
        }
        WaitSynced(waiter)
    }

    /// A future that resolves once fewer than `limit` appended bytes are unwritten.
    pub fn wait_unwritten_below(&self, limit: u64) -> WaitUnwrittenBelow<'_> {
        self.kick.kick();
        WaitUnwrittenBelow {
            commit: self,
            limit,
        }
    }

    /// Wakes the committer (new data, or close).
    pub fn kick(&self) {
        self.kick.kick();
    }

    /// Asks the committer to run a last round and stop.
    pub fn close(&self) {
        self.closing.set(true);
        self.kick.kick();
    }

    /// Parks `waker` until the log makes progress (a write completes, the offset reservation
    /// is raised) or is poisoned.
    pub(crate) fn park_until_progress(&self, waker: Waker) {
        self.space_waiters.borrow_mut().push(waker);
    }

    fn has_waiters(&self) -> bool {
        !self.waiters.borrow().is_empty()
    }

    fn wake_space_waiters(&self) {
        for waker in self.space_waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Everything below `offset` and the first `bytes` appended bytes are synced.
    fn synced(&self, offset: u64, bytes: u64) {
        let offset = offset.max(self.synced_offset.get());
        self.synced_offset.set(offset);
        self.synced_bytes.set(bytes.max(self.synced_bytes.get()));
        let mut waiters = self.waiters.borrow_mut();
        let mut released = 0;
        while let Some((target, _)) = waiters.front() {
            if *target > offset {
                break;
            }
            if let Some((_, waiter)) = waiters.pop_front() {
                waiter.finish(Ok(()));
                released += 1;
            }
        }
        super::stats::record_group_commit(released);
    }

    pub(crate) fn poison(&self, error: LogError) {
        ::log::error!("log poisoned, appends now fail until it is reopened: {error}");
        let cause = Arc::new(error);
        *self.poisoned.borrow_mut() = Some(cause.clone());
        self.poisoned_at.set(Some(Instant::now()));
        for (_, waiter) in self.waiters.borrow_mut().drain(..) {
            waiter.finish(Err(cause.clone()));
        }
        self.wake_space_waiters();
    }
}

/// The committer task: streams writes and runs rounds until the log closes or is poisoned.
pub(crate) async fn run<S: Storage + 'static>(shared: Rc<Shared<S>>) {
    let mut committer = Committer {
        shared: &shared,
        writes: VecDeque::new(),
        sync: None,
        dirty_since: None,
    };
    let outcome = committer.run().await;
    // Whatever is still in flight is abandoned with the error.
    drop(committer);
    if let Err(error) = outcome {
        shared.commit.poison(error);
    }
}

type IoFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, LogError>> + 'a>>;

/// A chunk write in flight: its future until it finishes, then its result.
struct ChunkWrite<'a, B> {
    /// Base offset of the segment written.
    base: u64,
    /// Logical file length once written.
    end: u64,
    completes_offset: Option<u64>,
    future: Option<IoFuture<'a, Rc<B>>>,
    result: Option<Result<Rc<B>, LogError>>,
}

/// An `Async` mode fdatasync issued while writes stream.
struct BackgroundSync<'a> {
    /// `written_offset` when it was issued: what it makes durable.
    offset: u64,
    /// `written_bytes` when it was issued.
    bytes: u64,
    started: Instant,
    future: Option<IoFuture<'a, ()>>,
    result: Option<Result<(), LogError>>,
}

/// Polls an IO future if it still runs; true if it just finished.
fn poll_io<T>(
    future: &mut Option<IoFuture<'_, T>>,
    result: &mut Option<Result<T, LogError>>,
    cx: &mut Context<'_>,
) -> bool {
    let Some(running) = future else {
        return false;
    };
    match running.as_mut().poll(cx) {
        Poll::Ready(outcome) => {
            *result = Some(outcome);
            *future = None;
            true
        }
        Poll::Pending => false,
    }
}

struct Committer<'a, S: Storage> {
    shared: &'a Shared<S>,
    /// Chunk writes in flight, in file order; finished ones are taken from the front only, so
    /// `written_offset` advances over a contiguous prefix.
    writes: VecDeque<ChunkWrite<'a, S::Buffer>>,
    sync: Option<BackgroundSync<'a>>,
    /// When the log last turned dirty (held unsynced appends): `Async` intervals run from it.
    dirty_since: Option<Instant>,
}

impl<'a, S: Storage + 'static> Committer<'a, S> {
    async fn run(&mut self) -> Result<(), LogError> {
        let shared = self.shared;
        let commit = &shared.commit;
        loop {
            self.reap()?;
            if commit.closing.get() {
                self.round(true).await?;
                return self.lower_reservation().await;
            }
            self.raise_reservation().await?;
            let (dirty, rolled, active_ready) = {
                let state = shared.state.borrow();
                let last = state.segments.iter().next_back();
                (
                    state.next_offset > commit.synced_offset(),
                    last.is_some_and(|(base, _)| *base != state.first_unsealed),
                    last.is_some_and(|(_, segment)| segment.log.has_ready()),
                )
            };
            if !dirty {
                self.dirty_since = None;
            } else if self.dirty_since.is_none() {
                self.dirty_since = Some(Instant::now());
            }
            let mut deadline = None;
            let round_due = commit.has_waiters()
                || rolled
                || match shared.config.flush {
                    FlushMode::Sync => false,
                    FlushMode::Async { interval_ms, bytes } => {
                        let interval = Duration::from_millis(interval_ms);
                        let since = self.dirty_since.unwrap_or_else(Instant::now);
                        let sync_due = dirty
                            && (commit.unsynced_bytes() >= bytes || since.elapsed() >= interval);
                        let idle = self.writes.is_empty() && !active_ready;
                        if dirty && !sync_due {
                            deadline = Some(since + interval);
                        }
                        if sync_due && !idle {
                            self.start_background_sync();
                        }
                        sync_due && idle
                    }
                };
            if round_due {
                self.round(false).await?;
                continue;
            }
            self.stream().await?;
            self.wait(deadline).await;
        }
    }

    /// `Async` mode: raises the offset reservation once appends used half of its step, and
    /// wakes appends waiting for it.
    async fn raise_reservation(&mut self) -> Result<(), LogError> {
        let shared = self.shared;
        let Some(reservation) = &shared.reservation else {
            return Ok(());
        };
        let next_offset = shared.state.borrow().next_offset;
        if reservation.due(next_offset) {
            reservation.raise(&shared.storage, next_offset).await?;
            shared.commit.wake_space_waiters();
        }
        Ok(())
    }

    /// `Async` mode, after the closing round synced everything: lowers the reservation to the
    /// log's end, so a clean reopen continues there without a gap.
    async fn lower_reservation(&mut self) -> Result<(), LogError> {
        let shared = self.shared;
        let Some(reservation) = &shared.reservation else {
            return Ok(());
        };
        let next_offset = shared.state.borrow().next_offset;
        if shared.commit.synced_offset() >= next_offset {
            reservation.lower(&shared.storage, next_offset).await?;
        }
        Ok(())
    }

    /// Waits until an IO in flight finishes, the committer is kicked, or `deadline` passes.
    async fn wait(&mut self, deadline: Option<Instant>) {
        let kick = &self.shared.commit.kick;
        let mut timer = deadline.map(|at| {
            Box::pin(crate::rt::sleep(
                at.saturating_duration_since(Instant::now()),
            ))
        });
        poll_fn(|cx| {
            let mut finished = false;
            for write in &mut self.writes {
                finished |= poll_io(&mut write.future, &mut write.result, cx);
            }
            if let Some(sync) = &mut self.sync {
                finished |= poll_io(&mut sync.future, &mut sync.result, cx);
            }
            if finished || kick.poll_kicked(cx).is_ready() {
                return Poll::Ready(());
            }
            match &mut timer {
                Some(timer) => timer.as_mut().poll(cx),
                None => Poll::Pending,
            }
        })
        .await;
    }

    /// Accounts for the finished IO at the front of the queue (and a finished background
    /// sync); the first failure ends the committer.
    fn reap(&mut self) -> Result<(), LogError> {
        let shared = self.shared;
        let commit = &shared.commit;
        while self.writes.front().is_some_and(|w| w.result.is_some()) {
            let Some(write) = self.writes.pop_front() else {
                break;
            };
            let Some(result) = write.result else {
                break;
            };
            let buf = result?;
            {
                let mut state = shared.state.borrow_mut();
                let newly = state
                    .segments
                    .get_mut(&write.base)
                    .map_or(0, |segment| segment.log.complete(write.end));
                commit.written_bytes.set(commit.written_bytes.get() + newly);
                if let Some(offset) = write.completes_offset {
                    if offset > commit.written_offset() {
                        commit.written_offset.set(offset);
                        state.cache_evict_written(offset);
                    }
                }
            }
            if let Ok(buf) = Rc::try_unwrap(buf) {
                shared.recycle_chunk_buffer(buf);
            }
            commit.wake_space_waiters();
        }
        if self.sync.as_ref().is_some_and(|s| s.result.is_some()) {
            if let Some(sync) = self.sync.take() {
                if let Some(result) = sync.result {
                    result?;
                }
                commit.synced(sync.offset, sync.bytes);
                self.dirty_since = Some(sync.started);
            }
        }
        Ok(())
    }

    /// Waits for every IO in flight.
    async fn drain(&mut self) -> Result<(), LogError> {
        loop {
            self.reap()?;
            if self.writes.is_empty() && self.sync.is_none() {
                return Ok(());
            }
            self.wait(None).await;
        }
    }

    fn start_write(
        &mut self,
        base: u64,
        files: &Rc<SegmentFiles<S::File>>,
        chunk: Chunk<S::Buffer>,
    ) {
        let storage = &self.shared.storage;
        let end = chunk.position + chunk.len as u64;
        let future = write_chunk(storage, files.clone(), Rc::new(chunk.buf), chunk.position);
        self.writes.push_back(ChunkWrite {
            base,
            end,
            completes_offset: chunk.completes_offset,
            future: Some(Box::pin(future)),
            result: None,
        });
    }

    /// The files of segment `base`, created (step 4 of the protocol) if it has none yet.
    async fn files_of(&self, base: u64) -> Result<Option<Rc<SegmentFiles<S::File>>>, LogError> {
        let shared = self.shared;
        let existing = {
            let state = shared.state.borrow();
            let Some(segment) = state.segments.get(&base) else {
                return Ok(None);
            };
            segment.files.clone()
        };
        if let Some(files) = existing {
            return Ok(Some(files));
        }
        let files = Rc::new(create_files(shared, base).await?);
        if let Some(segment) = shared.state.borrow_mut().segments.get_mut(&base) {
            segment.files = Some(files.clone());
        }
        Ok(Some(files))
    }

    /// Starts writes of the active segment's full chunks, up to [`WRITES_IN_FLIGHT_MAX`] in
    /// flight. Leaves rolled segments to a round, which seals them in order.
    async fn stream(&mut self) -> Result<(), LogError> {
        if self.writes.len() >= WRITES_IN_FLIGHT_MAX {
            return Ok(());
        }
        let base = {
            let state = self.shared.state.borrow();
            match state.segments.iter().next_back() {
                Some((&base, segment))
                    if base == state.first_unsealed && segment.log.has_ready() =>
                {
                    base
                }
                _ => return Ok(()),
            }
        };
        let Some(files) = self.files_of(base).await? else {
            return Ok(());
        };
        while self.writes.len() < WRITES_IN_FLIGHT_MAX {
            let chunk = {
                let mut state = self.shared.state.borrow_mut();
                state
                    .segments
                    .get_mut(&base)
                    .and_then(|segment| segment.log.take_ready())
            };
            let Some(chunk) = chunk else {
                break;
            };
            self.start_write(base, &files, chunk);
        }
        Ok(())
    }

    /// `Async` mode: an fdatasync of the active segment beside the writes in flight, covering
    /// what is written now. At most one at a time.
    fn start_background_sync(&mut self) {
        let shared = self.shared;
        let commit = &shared.commit;
        let offset = commit.written_offset();
        if self.sync.is_some() || offset <= commit.synced_offset() {
            return;
        }
        let files = {
            let state = shared.state.borrow();
            // Everything written but unsynced is in the active segment: a rolled one is
            // sealed by a round before the next segment is written.
            match state.segments.iter().next_back() {
                Some((&base, segment)) if base == state.first_unsealed => segment.files.clone(),
                _ => None,
            }
        };
        let Some(files) = files else {
            return;
        };
        let storage = &shared.storage;
        let future = async move { fdatasync(storage, &files.log, &files.log_path).await };
        self.sync = Some(BackgroundSync {
            offset,
            bytes: commit.written_bytes.get(),
            started: Instant::now(),
            future: Some(Box::pin(future)),
            result: None,
        });
    }

    /// One round: waits for the IO in flight, then per unsealed segment creates missing files,
    /// writes everything buffered so far, seals it if it rolled, and fdatasyncs the active one;
    /// then acknowledges the waiters it covered.
    async fn round(&mut self, closing: bool) -> Result<(), LogError> {
        self.drain().await?;
        let shared = self.shared;
        let storage = &shared.storage;
        let commit = &shared.commit;
        let started = Instant::now();
        let bases: Vec<u64> = {
            let state = shared.state.borrow();
            state
                .segments
                .range(state.first_unsealed..)
                .map(|(base, _)| *base)
                .collect()
        };
        for base in bases {
            // 1. Create the files of a segment that exists only in memory, then make the new
            //    directory entries durable before any data can be acknowledged in them.
            let Some(files) = self.files_of(base).await? else {
                continue;
            };
            // 2. Snapshot: what this round writes of this segment. The partial chunk is cut;
            //    chunks filled during the round wait for the next one.
            let (chunks, index_write, seal) = {
                let mut state = shared.state.borrow_mut();
                let is_last = state.segments.keys().next_back() == Some(&base);
                let Some(segment) = state.segments.get_mut(&base) else {
                    continue;
                };
                let seal = !is_last;
                let mut alloc = || shared.chunk_buffer();
                segment
                    .log
                    .cut_current(storage.alignment(&files.log), !seal, &mut alloc);
                let chunks = segment.log.ready_count();
                // The index is rebuilt by recovery if lost, so the active segment only writes
                // whole index blocks; a sealed or closing segment writes all of it.
                let index_alignment = storage.alignment(&files.index);
                let index_end = if seal || closing {
                    segment.index_writer.logical_len()
                } else {
                    align_down(segment.index_writer.logical_len(), index_alignment)
                };
                let index_write = segment
                    .index_writer
                    .take_pending(index_end, index_alignment);
                (chunks, index_write, seal)
            };
            // 3. Write the log chunks, several at once, then the index bytes.
            for _ in 0..chunks {
                while self.writes.len() >= WRITES_IN_FLIGHT_MAX {
                    self.wait(None).await;
                    self.reap()?;
                }
                let chunk = shared
                    .state
                    .borrow_mut()
                    .segments
                    .get_mut(&base)
                    .and_then(|segment| segment.log.take_ready());
                if let Some(chunk) = chunk {
                    self.start_write(base, &files, chunk);
                }
            }
            self.drain().await?;
            if let Some(write) = index_write {
                write_pending(storage, &files.index, &files.index_path, &write).await?;
                if let Some(segment) = shared.state.borrow_mut().segments.get_mut(&base) {
                    segment.index_writer.complete(write);
                }
            }
            // 4. A rolled segment is sealed: its log and index are synced before any later
            //    segment's file is created, so recovery can trust every segment but the last.
            if seal {
                fdatasync(storage, &files.log, &files.log_path).await?;
                fdatasync(storage, &files.index, &files.index_path).await?;
                let mut state = shared.state.borrow_mut();
                if let Some(segment) = state.segments.get_mut(&base) {
                    segment.sealed = true;
                }
                let next_unsealed = state.segments.range(base + 1..).next().map(|(b, _)| *b);
                if let Some(next) = next_unsealed {
                    state.first_unsealed = next;
                }
                drop(state);
                commit.synced(commit.written_offset(), commit.written_bytes.get());
            } else {
                // 5. The active segment: one fdatasync acknowledges everything written.
                if commit.written_offset() > commit.synced_offset() || closing {
                    fdatasync(storage, &files.log, &files.log_path).await?;
                }
                if closing {
                    fdatasync(storage, &files.index, &files.index_path).await?;
                }
            }
        }
        commit.synced(commit.written_offset(), commit.written_bytes.get());
        self.dirty_since = Some(started);
        Ok(())
    }
}

async fn fdatasync<S: Storage>(
    storage: &S,
    file: &S::File,
    path: &std::path::Path,
) -> Result<(), LogError> {
    let started = Instant::now();
    let synced = storage.fdatasync(file).await;
    super::stats::record_fdatasync(started.elapsed());
    synced.map_err(|e| LogError::io("fdatasync", path, e))
}

/// Creates a segment's `.log` and `.idx` files and fsyncs the directory.
pub(crate) async fn create_files<S: Storage>(
    shared: &Shared<S>,
    base: u64,
) -> Result<SegmentFiles<S::File>, LogError> {
    let storage = &shared.storage;
    let dir = &shared.config.dir;
    let log_path = file::log_path(dir, base);
    let index_path = file::index_path(dir, base);
    let log = storage
        .create(&log_path)
        .await
        .map_err(|e| LogError::io("create", &log_path, e))?;
    let index = storage
        .create(&index_path)
        .await
        .map_err(|e| LogError::io("create", &index_path, e))?;
    file::fsync_directory(storage, dir)
        .await
        .map_err(|e| LogError::io("fsync directory", dir, e))?;
    Ok(SegmentFiles {
        log,
        index,
        log_path,
        index_path,
    })
}
