//! Flushing and group commit: the one task that writes and syncs a log's files.
//!
//! Appends only touch memory: they take an offset, copy the batch into the active segment's
//! [`BlockWriter`](crate::log::segment::BlockWriter) and the tail cache. A single committer
//! task per log runs *flush rounds*; a round snapshots everything buffered so far, writes it,
//! and issues one fdatasync that acknowledges every waiter whose offset it covered. Appends
//! arriving while a round is in its fdatasync wait for the next round (group commit).
//!
//! In `Sync` mode every append waits for the round covering it. In `Async` mode appends return
//! at once and the task runs a round every `interval_ms`, or as soon as `bytes` are buffered.
//! A failed write or fdatasync poisons the log: waiters get the error and so does every later
//! append and flush. Nothing is retried, because what reached the disk is no longer known.

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    future::Future,
    pin::Pin,
    rc::Rc,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::Duration,
};

use crate::{
    file,
    log::{
        FlushMode, Shared,
        error::LogError,
        segment::{SegmentFiles, align_down, write_pending},
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

    fn wait(&self) -> KickWait<'_> {
        KickWait(self)
    }
}

struct KickWait<'a>(&'a Kick);

impl Future for KickWait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.kicked.replace(false) {
            Poll::Ready(())
        } else {
            self.0.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        }
    }
}

/// Durability progress of one log, shared by appenders and the committer task.
#[derive(Default)]
pub struct Commit {
    /// Every offset below this is written and fdatasynced.
    synced_offset: Cell<u64>,
    /// Every offset below this is written to its file (maybe not synced).
    written_offset: Cell<u64>,
    /// Appended bytes not yet written.
    unwritten_bytes: Cell<u64>,
    poisoned: RefCell<Option<Arc<LogError>>>,
    /// Waiters in offset order: (offset that must be synced, waiter).
    waiters: RefCell<VecDeque<(u64, Rc<Waiter>)>>,
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
        self.unwritten_bytes.get()
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

    /// Accounts for an appended batch of `len` bytes.
    pub fn on_append(&self, len: u64) {
        self.unwritten_bytes.set(self.unwritten_bytes.get() + len);
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

    /// Wakes the committer (new data, or close).
    pub fn kick(&self) {
        self.kick.kick();
    }

    /// Asks the committer to run a last round and stop.
    pub fn close(&self) {
        self.closing.set(true);
        self.kick.kick();
    }

    fn has_waiters(&self) -> bool {
        !self.waiters.borrow().is_empty()
    }

    fn synced(&self, offset: u64) {
        self.synced_offset.set(offset);
        let mut waiters = self.waiters.borrow_mut();
        while let Some((target, _)) = waiters.front() {
            if *target > offset {
                break;
            }
            if let Some((_, waiter)) = waiters.pop_front() {
                waiter.finish(Ok(()));
            }
        }
    }

    fn poison(&self, error: LogError) {
        ::log::error!("log poisoned, appends now fail until it is reopened: {error}");
        let cause = Arc::new(error);
        *self.poisoned.borrow_mut() = Some(cause.clone());
        for (_, waiter) in self.waiters.borrow_mut().drain(..) {
            waiter.finish(Err(cause.clone()));
        }
    }
}

/// The committer task: runs flush rounds until the log closes or is poisoned.
pub(crate) async fn run<S: Storage>(shared: Rc<Shared<S>>) {
    let commit = &shared.commit;
    loop {
        let closing = commit.closing.get();
        if !closing && !needs_round(&shared) {
            commit.kick.wait().await;
            continue;
        }
        if !closing {
            if let FlushMode::Async { interval_ms, bytes } = shared.config.flush {
                if !commit.has_waiters() && commit.unwritten_bytes.get() < bytes {
                    let timer = glommio::timer::sleep(Duration::from_millis(interval_ms));
                    futures_lite::future::or(commit.kick.wait(), timer).await;
                }
            }
        }
        let closing = commit.closing.get();
        if let Err(error) = round(&shared, closing).await {
            commit.poison(error);
            return;
        }
        if closing {
            return;
        }
    }
}

/// Whether buffered data or an unsealed rolled segment waits for a round.
fn needs_round<S: Storage>(shared: &Shared<S>) -> bool {
    let state = shared.state.borrow();
    state.next_offset > shared.commit.synced_offset.get()
        || state
            .segments
            .range(state.first_unsealed..)
            .nth(1)
            .is_some()
}

/// One flush round: creates missing files, writes everything buffered so far, seals rolled
/// segments, and fdatasyncs the active one; then acknowledges the waiters it covered.
async fn round<S: Storage>(shared: &Shared<S>, closing: bool) -> Result<(), LogError> {
    let storage = &shared.storage;
    let bases: Vec<u64> = {
        let state = shared.state.borrow();
        state
            .segments
            .range(state.first_unsealed..)
            .map(|(base, _)| *base)
            .collect()
    };
    let mut covered = shared.commit.synced_offset.get();
    for base in bases {
        // 1. Create the files of a segment that exists only in memory, then make the new
        //    directory entries durable before any data can be acknowledged in them.
        let has_files = shared
            .state
            .borrow()
            .segments
            .get(&base)
            .is_some_and(|s| s.files.is_some());
        if !has_files {
            let files = create_files(shared, base).await?;
            if let Some(segment) = shared.state.borrow_mut().segments.get_mut(&base) {
                segment.files = Some(Rc::new(files));
            }
        }
        // 2. Snapshot: what this round writes of this segment.
        let (files, log_write, index_write, seal, segment_next) = {
            let mut state = shared.state.borrow_mut();
            let is_last = state.segments.keys().next_back() == Some(&base);
            let Some(segment) = state.segments.get_mut(&base) else {
                continue;
            };
            let Some(files) = segment.files.clone() else {
                continue;
            };
            let alignment = storage.alignment(&files.log);
            let log_write = segment.log.take_pending(u64::MAX, alignment);
            let seal = !is_last;
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
            (files, log_write, index_write, seal, segment.next_offset)
        };
        // 3. Write the log bytes, then the index bytes.
        if let Some(write) = log_write {
            write_pending(storage, &files.log, &files.log_path, &write).await?;
            let written = write.end();
            let mut state = shared.state.borrow_mut();
            if let Some(segment) = state.segments.get_mut(&base) {
                let before = segment.log.written_len();
                segment.log.complete(write);
                let newly = segment.log.written_len() - before;
                let unwritten = shared.commit.unwritten_bytes.get();
                shared
                    .commit
                    .unwritten_bytes
                    .set(unwritten.saturating_sub(newly));
            }
            debug_assert!(written > 0);
        }
        if let Some(write) = index_write {
            write_pending(storage, &files.index, &files.index_path, &write).await?;
            if let Some(segment) = shared.state.borrow_mut().segments.get_mut(&base) {
                segment.index_writer.complete(write);
            }
        }
        {
            let mut state = shared.state.borrow_mut();
            state.cache_evict_written(segment_next);
        }
        shared.commit.written_offset.set(segment_next);
        covered = segment_next;
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
            shared.commit.synced(segment_next);
        } else {
            // 5. The active segment: one fdatasync acknowledges everything this round wrote.
            if segment_next > shared.commit.synced_offset.get() || closing {
                fdatasync(storage, &files.log, &files.log_path).await?;
            }
            if closing {
                fdatasync(storage, &files.index, &files.index_path).await?;
            }
        }
    }
    shared.commit.synced(covered);
    Ok(())
}

async fn fdatasync<S: Storage>(
    storage: &S,
    file: &S::File,
    path: &std::path::Path,
) -> Result<(), LogError> {
    storage
        .fdatasync(file)
        .await
        .map_err(|e| LogError::io("fdatasync", path, e))
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
