//! Helpers shared by the log integration tests: building batches, running a future on a
//! glommio executor, reading a whole log back and checking every batch on the way, and a
//! `FaultyStorage` seen through process incarnations so a simulated crash stops the old one.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use engine::log::{Log, Storage};
use engine::testing::FaultyStorage;
use glommio::{LocalExecutorBuilder, Placement};
use protocol::record::{BATCH_LEN_MAX, BatchBuilder, BatchView, Record};

/// Runs `future` to completion on a fresh, unpinned glommio executor in this thread.
pub fn run_local<F: Future>(future: F) -> F::Output {
    LocalExecutorBuilder::new(Placement::Unbound)
        .make()
        .expect("a glommio executor starts")
        .run(future)
}

/// Reads the seed from `var` when set (to replay a failure), else draws one; prints it.
pub fn seed_from_env(var: &str) -> u64 {
    let seed = match std::env::var(var) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{var}={text:?} is not a u64: {e}")),
        Err(_) => rand::random(),
    };
    println!("seed {seed} (replay with {var}={seed})");
    seed
}

/// A batch of one record per value, unstamped, as a producer would send it.
pub fn batch_of(values: &[&[u8]]) -> BytesMut {
    let len: usize = values.iter().map(|v| v.len() + 64).sum();
    let mut builder = BatchBuilder::with_capacity(BATCH_LEN_MAX, len + 64);
    for (i, value) in values.iter().enumerate() {
        builder
            .push(&Record {
                timestamp_ms: 1_700_000_000_000 + i as i64,
                value,
                ..Record::default()
            })
            .expect("a test record fits in a batch");
    }
    let bytes = builder.finish().expect("at least one value");
    BytesMut::from(Bytes::from(bytes))
}

/// One batch as read back: its offsets and the values of its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBatch {
    pub base_offset: u64,
    pub next_offset: u64,
    pub values: Vec<Vec<u8>>,
}

impl ReadBatch {
    /// `(base_offset, next_offset, value lengths)`, for failure messages.
    pub fn offsets_and_lens(&self) -> (u64, u64, Vec<usize>) {
        let lens = self.values.iter().map(Vec::len).collect();
        (self.base_offset, self.next_offset, lens)
    }
}

/// Parses one batch as returned by `Log::read`, panicking with `context` if it is not a whole,
/// valid batch (header, batch checksum and every record checksum).
pub fn parse_batch(bytes: &[u8], context: &str) -> ReadBatch {
    let view = BatchView::parse(bytes, BATCH_LEN_MAX)
        .unwrap_or_else(|e| panic!("{context}: batch read back is invalid: {e}"));
    assert_eq!(
        view.len(),
        bytes.len(),
        "{context}: a read returned {} bytes for a batch of {} (batches must be whole)",
        bytes.len(),
        view.len()
    );
    ReadBatch {
        base_offset: view.base_offset(),
        next_offset: view.next_offset(),
        values: view.records().map(|r| r.value().to_vec()).collect(),
    }
}

/// Reads every batch in `[log.start_offset(), log.next_offset())` and checks they are valid and
/// contiguous: each batch starts where the previous one ended.
/// Whether the log's skipped ranges cover every offset in `[from, to)`.
pub fn gap_is_recorded<S: Storage + 'static>(log: &Log<S>, from: u64, to: u64) -> bool {
    let mut at = from;
    let mut ranges: Vec<_> = log
        .skipped_ranges()
        .iter()
        .map(|r| (r.from, r.to))
        .collect();
    ranges.sort_unstable();
    for (start, end) in ranges {
        if start <= at && end > at {
            at = end;
        }
    }
    at >= to
}

pub async fn read_whole_log<S: Storage + 'static>(log: &Log<S>, context: &str) -> Vec<ReadBatch> {
    let start = log.start_offset();
    let end = log.next_offset();
    let mut out = Vec::new();
    let mut offset = start;
    while offset < end {
        let batches = log
            .read(offset, 256 << 10)
            .await
            .unwrap_or_else(|e| panic!("{context}: read at offset {offset} failed: {e}"));
        if batches.is_empty() && gap_is_recorded(log, offset, end) {
            // A recorded gap up to next_offset: nothing after it yet.
            break;
        }
        assert!(
            !batches.is_empty(),
            "{context}: read at offset {offset} < next_offset {end} returned no batch"
        );
        for bytes in &batches {
            let batch = parse_batch(bytes, &format!("{context}, reading at {offset}"));
            if out.is_empty() {
                assert!(
                    batch.base_offset <= offset && offset < batch.next_offset,
                    "{context}: first batch [{}, {}) does not contain the read offset {offset}",
                    batch.base_offset,
                    batch.next_offset
                );
                assert_eq!(
                    batch.base_offset, start,
                    "{context}: the log starts at {start} but its first batch at {}",
                    batch.base_offset
                );
            } else if batch.base_offset != offset {
                assert!(
                    gap_is_recorded(log, offset, batch.base_offset),
                    "{context}: offsets are not contiguous: a batch ends at {offset}, the next \
                     starts at {}, and no skipped range records the gap (recorded: {:?})",
                    batch.base_offset,
                    log.skipped_ranges()
                );
            }
            offset = batch.next_offset;
            out.push(batch);
        }
    }
    assert!(
        offset == end || gap_is_recorded(log, offset, end),
        "{context}: the last batch ends at {offset}, next_offset is {end}, and no skipped range \
         records the gap (recorded: {:?})",
        log.skipped_ranges()
    );
    let tail = log
        .read(end, 64 << 10)
        .await
        .unwrap_or_else(|e| panic!("{context}: read at next_offset {end} failed: {e}"));
    assert!(
        tail.is_empty(),
        "{context}: read at next_offset {end} returned {} batches, expected none",
        tail.len()
    );
    out
}

/// `FaultyStorage` as seen by one incarnation of the process: after a simulated crash, IO from
/// an older incarnation fails, as a dead process does no more IO. (A dropped `Log` detaches its
/// committer, which would otherwise go on writing into the storage after the crash.)
#[derive(Clone)]
pub struct Incarnation {
    storage: FaultyStorage,
    epoch: u64,
    current: Rc<Cell<u64>>,
}

impl Incarnation {
    fn alive(&self) -> io::Result<()> {
        if self.epoch == self.current.get() {
            Ok(())
        } else {
            Err(io::Error::other("IO from before a simulated crash"))
        }
    }
}

impl Storage for Incarnation {
    type File = <FaultyStorage as Storage>::File;
    type Buffer = <FaultyStorage as Storage>::Buffer;
    type Lock = <FaultyStorage as Storage>::Lock;

    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.alive()?;
        self.storage.create_dir_all(dir).await
    }
    async fn lock(&self, path: &Path) -> io::Result<Self::Lock> {
        self.alive()?;
        self.storage.lock(path).await
    }
    async fn create(&self, path: &Path) -> io::Result<Self::File> {
        self.alive()?;
        self.storage.create(path).await
    }
    async fn open(&self, path: &Path) -> io::Result<Self::File> {
        self.alive()?;
        self.storage.open(path).await
    }
    fn alignment(&self, file: &Self::File) -> u64 {
        self.storage.alignment(file)
    }
    fn alloc_buffer(&self, len: usize) -> Self::Buffer {
        self.storage.alloc_buffer(len)
    }
    async fn write_at(
        &self,
        file: &Self::File,
        buf: std::rc::Rc<Self::Buffer>,
        pos: u64,
    ) -> io::Result<usize> {
        self.alive()?;
        self.storage.write_at(file, buf, pos).await
    }
    async fn read_at(&self, file: &Self::File, pos: u64, len: usize) -> io::Result<Bytes> {
        self.alive()?;
        self.storage.read_at(file, pos, len).await
    }
    async fn fdatasync(&self, file: &Self::File) -> io::Result<()> {
        self.alive()?;
        self.storage.fdatasync(file).await
    }
    async fn truncate(&self, file: &Self::File, len: u64) -> io::Result<()> {
        self.alive()?;
        self.storage.truncate(file, len).await
    }
    async fn len(&self, file: &Self::File) -> io::Result<u64> {
        self.alive()?;
        self.storage.len(file).await
    }
    async fn remove(&self, path: &Path) -> io::Result<()> {
        self.alive()?;
        self.storage.remove(path).await
    }
    async fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.alive()?;
        self.storage.list_dir(dir).await
    }
    async fn fsync_dir(&self, dir: &Path) -> io::Result<()> {
        self.alive()?;
        self.storage.fsync_dir(dir).await
    }
}

pub struct Faulty {
    pub storage: FaultyStorage,
    epoch: Rc<Cell<u64>>,
    pub dir: PathBuf,
}

impl Faulty {
    pub fn new(dir: &str) -> Self {
        Self {
            storage: FaultyStorage::new(),
            epoch: Rc::default(),
            dir: PathBuf::from(dir),
        }
    }

    /// The storage as the process now running sees it.
    pub fn incarnation(&self) -> Incarnation {
        Incarnation {
            storage: self.storage.clone(),
            epoch: self.epoch.get(),
            current: self.epoch.clone(),
        }
    }

    /// A simulated process death without power loss: written data stays, even unsynced; the
    /// dead process's locks are released.
    pub fn restart(&self) {
        self.epoch.set(self.epoch.get() + 1);
        self.storage.restart();
    }

    /// A simulated power loss that keeps none of the unsynced writes.
    pub fn lose_power(&self) {
        self.epoch.set(self.epoch.get() + 1);
        self.storage.crash(|_, _| 0);
    }

    /// A simulated power loss, keeping a torn prefix of unsynced writes chosen by `seed`.
    pub fn crash(&self, seed: u64) {
        self.epoch.set(self.epoch.get() + 1);
        self.storage.crash_random(seed);
    }
}
