//! A randomized model test of the segment log: thousands of seeded operations (append, read,
//! flush, close and reopen, crash, retention by size) run against the log and against a plain
//! in-memory model (`offset → record value`), and after each one the two must agree.
//!
//! Small segments make rolls frequent. Runs on real files (`DmaStorage` in a temporary
//! directory) and on the in-memory `FaultyStorage`, which can also simulate a crash: in sync mode
//! every acknowledged append must survive it; in async mode everything up to the last `flush()`.
//!
//! `DEFIBUS_MODEL_SEED` replays a run; `DEFIBUS_MODEL_OPS` sets the operation count;
//! `DEFIBUS_MODEL_TRACE=1` prints every operation to stderr; `DEFIBUS_MODEL_RESTARTS=0` stops
//! the restarts without a power loss that otherwise follow half the injected IO faults.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use common::{
    Faulty, Incarnation, ReadBatch, batch_of, parse_batch, read_whole_log, run_local, seed_from_env,
};
use engine::log::{Appended, FlushMode, Log, LogConfig, LogError, Storage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SEGMENT_BYTES_MAX: u64 = 64 << 10;
const RETENTION_BYTES_MAX: u64 = 5 * SEGMENT_BYTES_MAX;
const RECORD_BYTES_MAX: usize = 4 << 10;
const OPS_DEFAULT: usize = 3000;

fn config(dir: PathBuf, flush: FlushMode) -> LogConfig {
    let mut config = LogConfig::new(dir);
    config.segment_bytes_max = SEGMENT_BYTES_MAX;
    config.index_interval_bytes = 4096;
    config.tail_cache_bytes = 32 << 10;
    config.retention_bytes_max = Some(RETENTION_BYTES_MAX);
    config.flush = flush;
    config
}

fn async_mode() -> FlushMode {
    // Long enough that only the test's own flush() calls, and the size bound, flush.
    FlushMode::Async {
        interval_ms: 60_000,
        bytes: 256 << 10,
    }
}

/// The two ways the model test gets a log; the in-memory one can also crash and inject faults.
trait Backend {
    type S: Storage + 'static;
    async fn open(&self, config: LogConfig) -> Result<Log<Self::S>, LogError>;
    /// The in-memory storage, when this backend is one.
    fn faulty(&self) -> Option<&Faulty>;
    /// Base offsets of the segment files (`<base-offset:020>.log`), sorted.
    fn segment_bases(&self) -> Vec<u64>;
}

fn segment_bases_of(names: impl Iterator<Item = String>) -> Vec<u64> {
    let mut bases: Vec<u64> = names
        .filter_map(|name| name.strip_suffix(".log")?.parse().ok())
        .collect();
    bases.sort_unstable();
    bases
}

struct Dma {
    dir: tempfile::TempDir,
}

impl Backend for Dma {
    type S = engine::log::DmaStorage;
    async fn open(&self, config: LogConfig) -> Result<Log<Self::S>, LogError> {
        Log::open(config).await
    }
    fn faulty(&self) -> Option<&Faulty> {
        None
    }
    fn segment_bases(&self) -> Vec<u64> {
        let entries = std::fs::read_dir(self.dir.path()).expect("the log directory lists");
        segment_bases_of(entries.filter_map(|e| e.ok()?.file_name().into_string().ok()))
    }
}

impl Backend for Faulty {
    type S = Incarnation;
    async fn open(&self, config: LogConfig) -> Result<Log<Self::S>, LogError> {
        Log::open_with(self.incarnation(), config).await
    }
    fn faulty(&self) -> Option<&Faulty> {
        Some(self)
    }
    fn segment_bases(&self) -> Vec<u64> {
        let paths = self.storage.paths();
        let names = paths
            .iter()
            .filter(|p| p.parent() == Some(self.dir.as_path()))
            .filter_map(|p| Some(p.file_name()?.to_str()?.to_owned()));
        segment_bases_of(names)
    }
}

/// What the log should hold.
#[derive(Default)]
struct Model {
    /// The log's start offset.
    start: u64,
    /// The log's next offset.
    next: u64,
    /// Record values by offset; offsets in gaps (skipped after a crash) have none.
    values: BTreeMap<u64, Vec<u8>>,
    /// Base offsets of the batches still in the log: reads start at these, retention cuts at one.
    batch_bases: BTreeSet<u64>,
    /// Everything below this offset is durable (sync acks, or an async flush()).
    durable_next: u64,
    /// Offset after the last acknowledged record: never handed out again, even after a crash
    /// that lost it (async mode).
    acked_next: u64,
}

impl Model {
    fn next(&self) -> u64 {
        self.next
    }

    fn value(&self, offset: u64) -> Option<&[u8]> {
        self.values.get(&offset).map(Vec::as_slice)
    }

    /// Offsets `[next, to)` were skipped: lost after a crash, recorded as a gap.
    fn skip_to(&mut self, to: u64) {
        if self.batch_bases.is_empty() {
            // An empty log starts after the gap.
            self.start = to;
        }
        self.next = to;
    }

    /// Records an acknowledged append of `values`.
    fn push_acked(&mut self, appended: Appended, values: Vec<Vec<u8>>, sync: bool, context: &str) {
        assert_eq!(
            (appended.base_offset, appended.next_offset),
            (self.next(), self.next() + values.len() as u64),
            "{context}: append stamped the wrong offsets"
        );
        self.push_unacked(values);
        self.acked_next = self.next();
        if sync {
            self.durable_next = self.next();
        }
    }

    /// Records an append that failed: it may or may not survive a crash.
    fn push_unacked(&mut self, values: Vec<Vec<u8>>) {
        self.batch_bases.insert(self.next());
        for value in values {
            self.values.insert(self.next, value);
            self.next += 1;
        }
    }

    fn drop_before(&mut self, start: u64) {
        self.values = self.values.split_off(&start);
        self.start = start;
        self.batch_bases = self.batch_bases.split_off(&start);
    }

    fn truncate_to(&mut self, next: u64) {
        self.values.split_off(&next);
        self.next = next;
        self.batch_bases.retain(|&b| b < next);
        self.durable_next = self.durable_next.min(next);
    }

    /// Checks batches read back against the model, from `offset` on.
    fn check_batches(&self, offset: u64, batches: &[ReadBatch], context: &str) {
        let mut expected_base = None;
        for batch in batches {
            match expected_base {
                None if self.value(offset).is_none() => {
                    // A read in a gap is served from the first batch after it.
                    assert_eq!(
                        Some(batch.base_offset),
                        self.batch_bases.range(offset..).next().copied(),
                        "{context}: offset {offset} lies in a gap; the first batch after it \
                         should be served"
                    );
                }
                None => {
                    assert!(
                        batch.base_offset <= offset && offset < batch.next_offset,
                        "{context}: first batch [{}, {}) does not hold offset {offset}",
                        batch.base_offset,
                        batch.next_offset
                    );
                    assert!(
                        self.batch_bases.contains(&batch.base_offset),
                        "{context}: a batch starts at {}, where the model has no batch start",
                        batch.base_offset
                    );
                }
                Some(base) => assert!(
                    batch.base_offset == base
                        || (batch.base_offset > base
                            && self.values.range(base..batch.base_offset).next().is_none()),
                    "{context}: batches are not contiguous: one ends at {base}, the next starts \
                     at {}, and the model has records between",
                    batch.base_offset
                ),
            }
            assert!(
                batch.next_offset <= self.next(),
                "{context}: batch [{}, {}) runs past the model's next offset {}",
                batch.base_offset,
                batch.next_offset,
                self.next()
            );
            for (i, value) in batch.values.iter().enumerate() {
                let at = batch.base_offset + i as u64;
                assert!(
                    Some(value.as_slice()) == self.value(at),
                    "{context}: record at offset {at} holds {} bytes that differ from the {:?} \
                     bytes appended",
                    value.len(),
                    self.value(at).map(<[u8]>::len)
                );
            }
            expected_base = Some(batch.next_offset);
        }
    }
}

fn is_out_of_range(error: &LogError) -> bool {
    matches!(error, LogError::OffsetOutOfRange { .. })
}

/// Runs `ops` seeded operations against a log on `backend` and the model.
async fn run_model<B: Backend>(backend: B, flush: FlushMode, seed: u64, ops: usize, dir: PathBuf) {
    let sync = matches!(flush, FlushMode::Sync);
    let trace = std::env::var_os("DEFIBUS_MODEL_TRACE").is_some();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = Model::default();
    let mut log = backend
        .open(config(dir.clone(), flush))
        .await
        .expect("a new log opens");
    let mut counts = Counts::default();
    for op in 0..ops {
        let context = format!("seed {seed}, op {op}");
        let choice = rng.random_range(0..100);
        if trace {
            eprintln!(
                "{context}: choice {choice}, model [{}, {}) durable below {}; log [{}, {}), {} \
                 segments, files {:?}",
                model.start,
                model.next(),
                model.durable_next,
                log.start_offset(),
                log.next_offset(),
                log.segment_count(),
                backend.segment_bases()
            );
        }
        match choice {
            // Append 1-5 records of 0 B to 4 KiB.
            0..45 => {
                counts.appends += 1;
                let values = random_values(&mut rng);
                let appended = log
                    .append(batch_of(&as_slices(&values)))
                    .await
                    .unwrap_or_else(|e| panic!("{context}: append failed: {e}"));
                model.push_acked(appended, values, sync, &context);
                assert_eq!(log.next_offset(), model.next(), "{context}: next_offset");
            }
            // Read from a random offset in the log, with a random byte budget.
            45..72 => {
                counts.reads += 1;
                if model.next() == model.start {
                    continue;
                }
                let offset = rng.random_range(model.start..model.next());
                let max_bytes = rng.random_range(1..=96 << 10);
                let context = format!("{context}: read({offset}, {max_bytes})");
                let bytes = log
                    .read(offset, max_bytes)
                    .await
                    .unwrap_or_else(|e| panic!("{context} failed: {e}"));
                if model.batch_bases.range(offset..).next().is_none()
                    && model.value(offset).is_none()
                {
                    // In the gap at the end: nothing after it yet.
                    assert!(
                        bytes.is_empty(),
                        "{context}: returned data from a trailing gap"
                    );
                    continue;
                }
                assert!(!bytes.is_empty(), "{context}: returned nothing");
                let total: usize = bytes.iter().map(|b| b.len()).sum();
                assert!(
                    bytes.len() == 1 || total <= max_bytes,
                    "{context}: returned {} batches of {total} bytes in all, over the budget",
                    bytes.len()
                );
                let batches: Vec<ReadBatch> =
                    bytes.iter().map(|b| parse_batch(b, &context)).collect();
                model.check_batches(offset, &batches, &context);
            }
            // Reads at the edges: at the end (empty), past it and below the start (errors).
            72..77 => {
                counts.edge_reads += 1;
                let at_end = log
                    .read(model.next(), 4096)
                    .await
                    .unwrap_or_else(|e| panic!("{context}: read at next_offset failed: {e}"));
                assert!(
                    at_end.is_empty(),
                    "{context}: read at next_offset {} returned data",
                    model.next()
                );
                let past = model.next() + rng.random_range(1..1000);
                match log.read(past, 4096).await {
                    Err(e) if is_out_of_range(&e) => {}
                    other => panic!(
                        "{context}: read at {past}, past next_offset {}, gave {:?} instead of \
                         an out-of-range error",
                        model.next(),
                        other.map(|b| b.len())
                    ),
                }
                if model.start > 0 {
                    let below = rng.random_range(0..model.start);
                    match log.read(below, 4096).await {
                        Err(e) if is_out_of_range(&e) => {}
                        other => panic!(
                            "{context}: read at {below}, below start_offset {}, gave {:?} \
                             instead of an out-of-range error",
                            model.start,
                            other.map(|b| b.len())
                        ),
                    }
                }
            }
            77..83 => {
                counts.flushes += 1;
                log.flush()
                    .await
                    .unwrap_or_else(|e| panic!("{context}: flush failed: {e}"));
                model.durable_next = model.next();
            }
            // Close and reopen: nothing is lost, whatever the flush mode.
            83..87 => {
                counts.reopens += 1;
                log.close()
                    .await
                    .unwrap_or_else(|e| panic!("{context}: close failed: {e}"));
                log = backend
                    .open(config(dir.clone(), flush))
                    .await
                    .unwrap_or_else(|e| panic!("{context}: reopen after close failed: {e}"));
                model.durable_next = model.next();
                check_whole_log(&log, &model, &context).await;
            }
            // Crash: drop the log without closing it and lose what was not durable, keeping a
            // random torn prefix of the rest.
            87..91 => {
                let Some(faulty) = backend.faulty() else {
                    continue;
                };
                counts.crashes += 1;
                drop(log);
                faulty.crash(rng.random());
                let config = config(dir.clone(), flush);
                log = reopen_and_recover(&backend, config, &mut model, true, &context).await;
            }
            // A short write from the kernel: the log must write the rest and carry on.
            91..94 => {
                let Some(faulty) = backend.faulty() else {
                    continue;
                };
                counts.short_writes += 1;
                faulty.storage.short_write_next(rng.random_range(1..4096));
            }
            // A failed write or fdatasync: the log refuses further appends, and after a reopen
            // (with or without a crash) holds everything durable and nothing it never took.
            94..95 => {
                let Some(faulty) = backend.faulty() else {
                    continue;
                };
                let storage = &faulty.storage;
                counts.io_faults += 1;
                let after = rng.random_range(0..3);
                let fsync = rng.random_bool(0.5);
                if fsync {
                    storage.fail_fdatasync_after(after);
                } else {
                    storage.fail_write_after(after);
                }
                let context = format!(
                    "{context}: {} fails after {after} more successes",
                    if fsync { "fdatasync" } else { "write" }
                );
                let error = surface_fault(&log, &mut rng, &mut model, sync, &context).await;
                let refused = log.append(batch_of(&[&b"after the fault"[..]])).await;
                assert!(
                    refused.is_err(),
                    "{context}: the log took an append after failing with {error}"
                );
                drop(log);
                // A restart without power loss recovers unsynced writes, which recovery must make
                // durable (`recovered_tail_is_durable_before_it_is_served`).
                let crashed = !restarts_enabled() || rng.random_bool(0.5);
                if crashed {
                    faulty.crash(rng.random());
                } else {
                    faulty.restart();
                }
                let config = config(dir.clone(), flush);
                log = reopen_and_recover(&backend, config, &mut model, crashed, &context).await;
            }
            // Retention by size: whole segments go from the front.
            _ => {
                counts.retentions += 1;
                let before = (log.start_offset(), log.size_bytes(), log.segment_count());
                log.apply_retention(now_ms())
                    .await
                    .unwrap_or_else(|e| panic!("{context}: apply_retention failed: {e}"));
                let after = (log.start_offset(), log.size_bytes(), log.segment_count());
                check_retention(&backend, &model, before, after, &context);
                model.drop_before(after.0);
                assert_eq!(log.next_offset(), model.next(), "{context}: next_offset");
            }
        }
    }
    check_whole_log(&log, &model, &format!("seed {seed}, end")).await;
    log.close().await.expect("close at the end");
    println!(
        "seed {seed}: {ops} ops {counts:?}; the log ends at [{}, {})",
        model.start,
        model.next()
    );
}

#[derive(Debug, Default)]
struct Counts {
    appends: usize,
    reads: usize,
    edge_reads: usize,
    flushes: usize,
    reopens: usize,
    crashes: usize,
    short_writes: usize,
    io_faults: usize,
    retentions: usize,
}

fn random_values(rng: &mut StdRng) -> Vec<Vec<u8>> {
    let count = rng.random_range(1..=5);
    (0..count)
        .map(|_| {
            let len = rng.random_range(0..=RECORD_BYTES_MAX);
            (0..len).map(|_| rng.random()).collect()
        })
        .collect()
}

fn as_slices(values: &[Vec<u8>]) -> Vec<&[u8]> {
    values.iter().map(Vec::as_slice).collect()
}

/// Appends and flushes until the injected fault fails one of them; returns that error.
async fn surface_fault<S: Storage + 'static>(
    log: &Log<S>,
    rng: &mut StdRng,
    model: &mut Model,
    sync: bool,
    context: &str,
) -> LogError {
    // At most 2 more successes of each kind are allowed, and every round writes and syncs.
    for _ in 0..10 {
        for _ in 0..rng.random_range(1..=3) {
            let values = random_values(rng);
            match log.append(batch_of(&as_slices(&values))).await {
                Ok(appended) => model.push_acked(appended, values, sync, context),
                Err(error) => {
                    model.push_unacked(values);
                    return error;
                }
            }
        }
        match log.flush().await {
            Ok(()) => model.durable_next = model.next(),
            Err(error) => return error,
        }
    }
    panic!("{context}: the injected fault never failed an append or a flush");
}

/// Opens the log after a crash or a failure and checks it holds every durable record, nothing
/// that was never appended, and a whole number of batches; the model forgets what was lost.
///
/// After a crash everything left on the storage is durable. After a plain reopen, records that
/// were written but never synced may be recovered; whether recovery makes them durable is
/// checked by `recovered_tail_is_durable_before_it_is_served`, not here.
async fn reopen_and_recover<B: Backend>(
    backend: &B,
    config: LogConfig,
    model: &mut Model,
    crashed: bool,
    context: &str,
) -> Log<B::S> {
    let log = backend
        .open(config)
        .await
        .unwrap_or_else(|e| panic!("{context}: reopen after the crash failed: {e}"));
    // The end of the last surviving batch; in async mode the log continues past a recorded
    // gap, at or after every offset it acknowledged.
    let recovered = log
        .recovery_report()
        .skipped_at_open
        .map_or(log.next_offset(), |r| r.from)
        // A log that lost every segment file recovers to 0; the model holds nothing below its
        // start anyway.
        .max(model.start);
    assert!(
        log.next_offset() >= model.acked_next,
        "{context}: the log continues at {}, below the acknowledged offset {}: offsets would \
         be reused",
        log.next_offset(),
        model.acked_next
    );
    if std::env::var_os("DEFIBUS_MODEL_TRACE").is_some() {
        eprintln!(
            "{context}: reopened at [{}, {recovered}), segment files {:?}, {:?}",
            log.start_offset(),
            backend.segment_bases(),
            log.recovery_report()
        );
    }
    // Durable offsets in a gap hold no record: the log may end before them.
    let durable_records_end = model
        .values
        .range(..model.durable_next)
        .next_back()
        .map_or(model.start, |(offset, _)| offset + 1);
    assert!(
        (durable_records_end..=model.next()).contains(&recovered),
        "{context}: after the crash the log ends at {recovered}; everything below {} was durable \
         and nothing past {} was appended",
        model.durable_next,
        model.next()
    );
    // Recovery ends at a batch boundary: a batch start, the end, or the start of a gap.
    if model.value(recovered).is_some() && !model.batch_bases.contains(&recovered) {
        let appended = model.batch_bases.range(..recovered).next_back().copied();
        let last = match log.read(recovered.saturating_sub(1), 1).await {
            Ok(batches) => batches
                .first()
                .map(|b| format!("{:?}", parse_batch(b, context).offsets_and_lens())),
            Err(e) => Some(format!("read error {e}")),
        };
        let tail: Vec<_> = read_whole_log(&log, context)
            .await
            .iter()
            .rev()
            .take(4)
            .map(ReadBatch::offsets_and_lens)
            .collect();
        let model_tail: Vec<_> = model.batch_bases.iter().rev().take(4).collect();
        panic!(
            "{context}: the log recovered to {recovered}, inside the batch appended at \
             {appended:?}; its last batch read back is {last:?}; last batches {tail:?}, model's \
             last batch bases {model_tail:?}"
        );
    }
    model.truncate_to(recovered);
    if crashed {
        model.durable_next = recovered;
    }
    model.skip_to(log.next_offset());
    assert_eq!(
        log.start_offset(),
        model.start,
        "{context}: start_offset after the crash"
    );
    check_whole_log(&log, model, context).await;
    log
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `before` and `after` are `(start_offset, size_bytes, segment_count)`.
fn check_retention<B: Backend>(
    backend: &B,
    model: &Model,
    before: (u64, u64, usize),
    after: (u64, u64, usize),
    context: &str,
) {
    let context =
        format!("{context}: retention took (start, bytes, segments) {before:?} -> {after:?}");
    assert!(after.0 >= before.0, "{context}: start_offset went back");
    assert!(
        after.0 <= model.next(),
        "{context}: start_offset passed the end"
    );
    assert!(after.2 >= 1, "{context}: no segment left");
    if before.1 <= RETENTION_BYTES_MAX {
        assert_eq!(
            before, after,
            "{context}: deleted data under the size limit"
        );
    }
    if after.0 != before.0 {
        assert!(
            model.batch_bases.contains(&after.0),
            "{context}: the new start is not a batch boundary"
        );
        assert!(
            after.2 < before.2 && after.1 < before.1,
            "{context}: start moved but no segment went"
        );
    } else {
        assert_eq!(
            after.2, before.2,
            "{context}: segments went but start stayed"
        );
    }
    assert!(
        after.1 <= RETENTION_BYTES_MAX || after.2 == 1,
        "{context}: still over {RETENTION_BYTES_MAX} bytes with segments to spare"
    );
    // A segment gets its file with its first write: in async mode several recent segments may
    // have none yet.
    let bases = backend.segment_bases();
    assert!(
        bases.len() <= after.2,
        "{context}: more segment files {bases:?} than segments"
    );
    if let Some(&oldest) = bases.first() {
        assert_eq!(
            oldest, after.0,
            "{context}: the oldest segment file {bases:?} does not start at start_offset"
        );
    }
}

async fn check_whole_log<S: Storage + 'static>(log: &Log<S>, model: &Model, context: &str) {
    assert_eq!(
        (log.start_offset(), log.next_offset()),
        (model.start, model.next()),
        "{context}: the log's [start, next) differs from the model's"
    );
    let batches = read_whole_log(log, context).await;
    model.check_batches(model.start, &batches, context);
    let bases: BTreeSet<u64> = batches.iter().map(|b| b.base_offset).collect();
    assert_eq!(
        bases, model.batch_bases,
        "{context}: batch boundaries differ"
    );
}

/// Restarts without a power loss after injected IO faults: on unless `DEFIBUS_MODEL_RESTARTS=0`.
fn restarts_enabled() -> bool {
    std::env::var("DEFIBUS_MODEL_RESTARTS").map_or(true, |v| v != "0")
}

fn ops() -> usize {
    std::env::var("DEFIBUS_MODEL_OPS")
        .map(|n| n.parse().expect("DEFIBUS_MODEL_OPS is a number"))
        .unwrap_or(OPS_DEFAULT)
}

#[test]
fn model_dma_storage_async() {
    let seed = seed_from_env("DEFIBUS_MODEL_SEED");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().to_path_buf();
    run_local(run_model(Dma { dir }, async_mode(), seed, ops(), path));
}

#[test]
fn model_dma_storage_sync() {
    let seed = seed_from_env("DEFIBUS_MODEL_SEED");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().to_path_buf();
    run_local(run_model(
        Dma { dir },
        FlushMode::Sync,
        seed,
        ops() / 4,
        path,
    ));
}

#[test]
fn model_faulty_storage_sync_with_crashes() {
    let seed = seed_from_env("DEFIBUS_MODEL_SEED");
    let backend = Faulty::new("/faulty");
    run_local(run_model(
        backend,
        FlushMode::Sync,
        seed,
        ops(),
        PathBuf::from("/faulty"),
    ));
}

#[test]
fn model_faulty_storage_async_with_crashes() {
    let seed = seed_from_env("DEFIBUS_MODEL_SEED");
    let backend = Faulty::new("/faulty");
    run_local(run_model(
        backend,
        async_mode(),
        seed,
        ops(),
        PathBuf::from("/faulty"),
    ));
}

/// A batch whose fdatasync failed is still in the file; a plain restart (no power loss)
/// recovers it and serves it, and a `flush()` then reports success without syncing it. Recovery
/// must make the tail it accepts durable: otherwise a power loss later takes back records that
/// readers saw and that `flush()` promised, and their offsets are reused by other records.
#[test]
fn recovered_tail_is_durable_before_it_is_served() {
    let faulty = Faulty::new("/faulty");
    let mut config = config(faulty.dir.clone(), FlushMode::Sync);
    config.retention_bytes_max = None;
    run_local(async {
        let log = faulty.open(config.clone()).await.unwrap();
        log.append(batch_of(&[b"durable"])).await.unwrap();
        faulty.storage.fail_fdatasync_after(0);
        let failed = log.append(batch_of(&[b"never synced"])).await;
        assert!(
            failed.is_err(),
            "the injected fdatasync failure was not reported"
        );
        drop(log);

        // The process restarts; the page cache still holds the unsynced write.
        faulty.restart();
        let log = faulty.open(config.clone()).await.unwrap();
        let served = log.next_offset();
        let batches = read_whole_log(&log, "after the restart").await;
        log.flush().await.expect("flush after the restart");
        drop(log);

        // Power is lost; what the reopened log served and flushed must still be there.
        faulty.lose_power();
        let log = faulty.open(config.clone()).await.unwrap();
        assert_eq!(
            log.next_offset(),
            served,
            "after a restart the log served offsets [0, {served}) ({} batches) and flush() \
             returned Ok, but after a power loss it ends at {}: records readers saw are gone and \
             their offsets will be reused",
            batches.len(),
            log.next_offset()
        );
        log.close().await.unwrap();
    });
}

/// Dropping a `Log` without `close()` detaches its committer, which goes on writing what was
/// buffered. Opening the same directory again right away must not let a second writer in: it
/// must refuse (`LogError::Locked`) until the dropped log's committer is done, and the log
/// opened after that must see every append the dropped log acknowledged.
#[test]
fn reopening_a_dropped_log_keeps_its_acknowledged_appends() {
    for (buffered, value_len) in [(1, 100), (8, 4096), (40, 4096), (60, 16 << 10)] {
        let context = format!("{buffered} buffered batches of {value_len} bytes");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut config = config(dir.path().to_path_buf(), async_mode());
        config.retention_bytes_max = None;
        config.segment_bytes_max = 1 << 30;
        run_local(drop_and_reopen(config, buffered, value_len, context));
    }
}

async fn drop_and_reopen(config: LogConfig, buffered: u32, value_len: usize, context: String) {
    let value_of = |log: &str, i: u32| {
        let mut value = format!("{log} log, batch {i};").into_bytes();
        value.resize(value_len, b'.');
        value
    };
    let first = Log::open(config.clone()).await.unwrap();
    let mut acked = Vec::new();
    // One flush first, so the segment file exists and only appends are in flight at the drop.
    let value = value_of("first", 0);
    acked.push((
        first.append(batch_of(&[&value])).await.unwrap().base_offset,
        value,
    ));
    first.flush().await.unwrap();
    for i in 1..=buffered {
        let value = value_of("first", i);
        let appended = first.append(batch_of(&[&value])).await.unwrap();
        acked.push((appended.base_offset, value));
    }
    let acked_next = first.next_offset();
    drop(first);

    // While the dropped log's committer still writes, the directory is locked and a second
    // open must refuse, naming the lock; once it is done, an open succeeds and must see every
    // acknowledged append (checked below either way).
    let lock_path = config.dir.join(engine::file::LOCK_FILE_NAME);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut refusals = 0u32;
    let second = loop {
        match Log::open(config.clone()).await {
            Ok(log) => break log,
            Err(LogError::Locked { path }) => {
                assert_eq!(path, lock_path, "{context}: the error names another lock");
                assert!(
                    std::time::Instant::now() < deadline,
                    "{context}: the dropped log still holds the lock after 30 s"
                );
                refusals += 1;
                glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            }
            Err(e) => panic!("{context}: reopening right after a drop failed: {e}"),
        }
    };
    println!("{context}: reopen refused {refusals} times while the dropped log was writing");
    let reopened_next = second.next_offset();
    for i in 0..buffered {
        let value = value_of("second", i);
        let appended = second.append(batch_of(&[&value])).await.unwrap();
        acked.push((appended.base_offset, value));
    }
    if let Err(e) = second.close().await {
        panic!(
            "{context}: the log reopened right after a drop (at offset {reopened_next}; the \
             dropped one acknowledged up to {acked_next}) failed to close: {e}"
        );
    }

    let third = Log::open(config.clone()).await.unwrap();
    let batches = read_whole_log(&third, &context).await;
    third.close().await.unwrap();
    let mut lost = Vec::new();
    for (offset, value) in &acked {
        let found = batches
            .iter()
            .find(|b| b.base_offset == *offset)
            .map(|b| b.values[0].as_slice());
        if found != Some(value.as_slice()) {
            let name = |v: &[u8]| {
                let end = v.iter().position(|&b| b == b';').unwrap_or(v.len());
                String::from_utf8_lossy(&v[..end]).into_owned()
            };
            lost.push(format!(
                "offset {offset}: {:?} now holds {:?}",
                name(value),
                found.map(name)
            ));
        }
    }
    assert!(
        lost.is_empty() && reopened_next == acked_next,
        "{context}: the dropped log acknowledged offsets [0, {acked_next}); the log reopened \
         right after it started at {reopened_next}; {} acknowledged appends lost or \
         overwritten, first {:#?}",
        lost.len(),
        &lost[..lost.len().min(3)]
    );
}
