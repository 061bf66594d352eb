//! Log append micro-benchmark: our log against raw glommio DMA writes, in one run.
//!
//! Prints (a) raw `DmaStreamWriter` sequential write MB/s with a final fdatasync, the ceiling;
//! (b) async-mode append MB/s and records/s with 1 KiB records in ~64 KiB batches; (c) sync-mode
//! (group commit) append MB/s and appends/s with 1, 16 and 256 concurrent appenders, each append
//! a batch of 16 × 1 KiB records. Every figure is printed beside its ratio to (a), and the goals of
//! DESIGN.md §8 (async ≥ 70% of raw, sync with 256 appenders ≥ 30%) are marked PASS or MISS.
//!
//! Everything runs on one glommio `LocalExecutor` pinned to one CPU.
//!
//! ```text
//! cargo run --release -p defibus-engine --example log_bench [-- --help]
//! ```

use std::cell::Cell;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use engine::log::{DmaStorage, FlushMode, Log, LogConfig, Storage};
use futures_lite::AsyncWriteExt;
use glommio::io::{DmaFile, DmaStreamWriterBuilder, OpenOptions};
use glommio::{LocalExecutorBuilder, Placement};
use protocol::record::{BATCH_LEN_MAX, BatchBuilder, Record};

const HELP: &str = "\
log_bench: append throughput of engine::log against raw glommio DMA writes

USAGE:
    cargo run --release -p defibus-engine --example log_bench [-- OPTIONS]

OPTIONS:
    --dir DIR          directory to write in; a temporary directory is made inside it
                       and removed at the end [env DEFIBUS_BENCH_DIR; default: the system
                       temporary directory]
    --total-mib N      bytes written by the raw and async phases [default 1024]
    --sync-mib N       byte cap of each sync phase [default 1024]
    --seconds S        time cap of each phase [default 8]
    --async-flush-mib N  async mode syncs once N MiB are unsynced (or every second)
                       [default 4]
    --cpu N            CPU to pin the executor to [default 0]
    --smoke            a few MiB only, for CI: checks the bench runs, not the figures
    -h, --help         this text

Record sizes: 1 KiB values. Async phase: ~64 KiB batches (62 records). Sync phases: each
append is one batch of 16 records (~17 KiB), from 1, 16 and 256 concurrent appenders.
Goals (DESIGN.md 8): async >= 70% of raw; sync with 256 appenders >= 30% of raw.
";

const RECORD_VALUE_BYTES: usize = 1024;
const ASYNC_BATCH_BYTES: usize = 64 << 10;
const SYNC_BATCH_RECORDS: usize = 16;
const SYNC_CONCURRENCY: [usize; 3] = [1, 16, 256];
const ASYNC_GOAL: f64 = 0.70;
const SYNC_256_GOAL: f64 = 0.30;
const SEGMENT_BYTES_MAX: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
/// The raw write + fdatasync loop needs only a couple of seconds to settle.
const RAW_SYNC_TIME_MAX: Duration = Duration::from_secs(2);

struct Options {
    dir: Option<PathBuf>,
    total_bytes: u64,
    sync_bytes: u64,
    async_flush_bytes: u64,
    phase_time_max: Duration,
    cpu: usize,
    smoke: bool,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        dir: std::env::var_os("DEFIBUS_BENCH_DIR").map(PathBuf::from),
        total_bytes: 1024 * MIB,
        sync_bytes: 1024 * MIB,
        async_flush_bytes: 4 * MIB,
        phase_time_max: Duration::from_secs(8),
        cpu: 0,
        smoke: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        let number = |name: &str, text: String| {
            text.parse::<u64>()
                .map_err(|e| format!("{name} {text:?}: {e}"))
        };
        match arg.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            "--dir" => options.dir = Some(PathBuf::from(value("--dir")?)),
            "--total-mib" => options.total_bytes = number(&arg, value(&arg)?)? * MIB,
            "--sync-mib" => options.sync_bytes = number(&arg, value(&arg)?)? * MIB,
            "--async-flush-mib" => {
                options.async_flush_bytes = number(&arg, value(&arg)?)?.max(1) * MIB
            }
            "--seconds" => {
                options.phase_time_max = Duration::from_secs(number(&arg, value(&arg)?)?)
            }
            "--cpu" => options.cpu = number(&arg, value(&arg)?)? as usize,
            "--smoke" => options.smoke = true,
            other => return Err(format!("unknown argument {other:?}; see --help")),
        }
    }
    if options.smoke {
        options.total_bytes = options.total_bytes.min(8 * MIB);
        options.sync_bytes = options.sync_bytes.min(2 * MIB);
        options.phase_time_max = options.phase_time_max.min(Duration::from_secs(2));
    }
    Ok(options)
}

/// Lets the executor lock the 10 MiB of IO buffers glommio registers (the default limit here is
/// 8 MiB, and glommio only warns and runs slower when registration fails). Says which path is used.
fn raise_memlock() -> String {
    let wanted: libc::rlim_t = 512 << 20;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) != 0 {
            return "RLIMIT_MEMLOCK unknown".into();
        }
        if limit.rlim_cur >= wanted {
            return format!("RLIMIT_MEMLOCK already {} MiB", limit.rlim_cur >> 20);
        }
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: limit.rlim_max.max(wanted),
        };
        if libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) == 0 {
            "RLIMIT_MEMLOCK raised to 512 MiB: registered IO buffers in use".into()
        } else {
            format!(
                "RLIMIT_MEMLOCK stays {} KiB: glommio may fall back to unregistered buffers",
                limit.rlim_cur >> 10
            )
        }
    }
}

/// One batch of `records` records with 1 KiB values, unstamped.
fn batch_template(records: usize) -> Bytes {
    let value: Vec<u8> = (0..RECORD_VALUE_BYTES)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let mut builder =
        BatchBuilder::with_capacity(BATCH_LEN_MAX, records * (RECORD_VALUE_BYTES + 64));
    for i in 0..records {
        builder
            .push(&Record {
                timestamp_ms: 1_700_000_000_000 + i as i64,
                value: &value,
                ..Record::default()
            })
            .expect("a 1 KiB record fits");
    }
    Bytes::from(builder.finish().expect("records were pushed"))
}

/// Records of 1 KiB that fit a batch of `batch_bytes`.
fn records_per_batch(batch_bytes: usize) -> usize {
    let one = batch_template(1).len();
    let per_record = batch_template(2).len() - one;
    1 + (batch_bytes - one) / per_record
}

/// `DmaStorage` that counts what the log asks of the device, so the bench can print writes and
/// fdatasyncs per append (how well group commit groups). A few `Cell` updates per IO.
#[derive(Clone, Default)]
struct CountingStorage {
    inner: DmaStorage,
    counts: Rc<IoCounts>,
}

#[derive(Default)]
struct IoCounts {
    writes: Cell<u64>,
    bytes_written: Cell<u64>,
    fdatasyncs: Cell<u64>,
}

impl Storage for CountingStorage {
    type File = <DmaStorage as Storage>::File;
    type Buffer = <DmaStorage as Storage>::Buffer;
    type Lock = <DmaStorage as Storage>::Lock;

    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir).await
    }
    async fn lock(&self, path: &Path) -> io::Result<Self::Lock> {
        self.inner.lock(path).await
    }
    async fn create(&self, path: &Path) -> io::Result<Self::File> {
        self.inner.create(path).await
    }
    async fn open(&self, path: &Path) -> io::Result<Self::File> {
        self.inner.open(path).await
    }
    fn alignment(&self, file: &Self::File) -> u64 {
        self.inner.alignment(file)
    }
    fn alloc_buffer(&self, len: usize) -> Self::Buffer {
        self.inner.alloc_buffer(len)
    }
    async fn write_at(
        &self,
        file: &Self::File,
        buf: std::rc::Rc<Self::Buffer>,
        pos: u64,
    ) -> io::Result<usize> {
        let written = self.inner.write_at(file, buf, pos).await?;
        let counts = &self.counts;
        counts.writes.set(counts.writes.get() + 1);
        counts
            .bytes_written
            .set(counts.bytes_written.get() + written as u64);
        Ok(written)
    }
    async fn read_at(&self, file: &Self::File, pos: u64, len: usize) -> io::Result<Bytes> {
        self.inner.read_at(file, pos, len).await
    }
    async fn fdatasync(&self, file: &Self::File) -> io::Result<()> {
        self.counts.fdatasyncs.set(self.counts.fdatasyncs.get() + 1);
        self.inner.fdatasync(file).await
    }
    async fn truncate(&self, file: &Self::File, len: u64) -> io::Result<()> {
        self.inner.truncate(file, len).await
    }
    async fn len(&self, file: &Self::File) -> io::Result<u64> {
        self.inner.len(file).await
    }
    async fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path).await
    }
    async fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(dir).await
    }
    async fn fsync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.fsync_dir(dir).await
    }
}

struct Measured {
    bytes: u64,
    appends: u64,
    records: u64,
    elapsed: Duration,
    writes: u64,
    bytes_written: u64,
    fdatasyncs: u64,
}

impl Measured {
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }
    fn per_s(&self, count: u64) -> f64 {
        count as f64 / self.elapsed.as_secs_f64()
    }
    fn io_line(&self) -> String {
        format!(
            "{} writes of {:.0} KiB on average, {} fdatasyncs ({:.1} appends per fdatasync)",
            self.writes,
            self.bytes_written as f64 / self.writes.max(1) as f64 / 1024.0,
            self.fdatasyncs,
            self.appends as f64 / self.fdatasyncs.max(1) as f64
        )
    }
}

/// (a) Sequential O_DIRECT writes of 1 MiB aligned buffers through `DmaStreamWriter`, with 4
/// writes in flight, then fdatasync: what the device gives glommio with no log in the way.
async fn raw_dma(dir: &Path, total_bytes: u64, time_max: Duration) -> Measured {
    let path = dir.join("raw-dma.bin");
    // Not `DmaFile::create`: glommio decides whether a device supports polled IO by reading the
    // first file opened on it, and an empty file makes it guess wrong (reads then fail with
    // EOPNOTSUPP). One block of data up front keeps the probe honest; it is overwritten.
    std::fs::write(&path, vec![0u8; 4096]).expect("create the raw file");
    let file: DmaFile = OpenOptions::new()
        .read(true)
        .write(true)
        .dma_open(&path)
        .await
        .expect("open the raw file");
    let mut writer = DmaStreamWriterBuilder::new(file)
        .with_buffer_size(1 << 20)
        .with_write_behind(4)
        .build();
    let chunk: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 253) as u8).collect();
    let started = Instant::now();
    let mut bytes = 0u64;
    while bytes < total_bytes && started.elapsed() < time_max {
        writer.write_all(&chunk).await.expect("raw write");
        bytes += chunk.len() as u64;
    }
    writer.sync().await.expect("raw fdatasync");
    let elapsed = started.elapsed();
    writer.close().await.expect("close the raw file");
    std::fs::remove_file(&path).expect("remove the raw file");
    Measured {
        bytes,
        appends: bytes >> 20,
        records: 0,
        elapsed,
        writes: bytes >> 20,
        bytes_written: bytes,
        fdatasyncs: 1,
    }
}

/// Sequential `write_at` of one sync-phase batch (rounded up to the block size) followed by an
/// fdatasync, one at a time: what one sync appender could get with no log in the way.
async fn raw_write_fdatasync(dir: &Path, batch_len: usize, time_max: Duration) -> Measured {
    let path = dir.join("raw-sync.bin");
    std::fs::write(&path, vec![0u8; 4096]).expect("create the raw sync file");
    let file: DmaFile = OpenOptions::new()
        .read(true)
        .write(true)
        .dma_open(&path)
        .await
        .expect("open the raw sync file");
    let len = file.align_up(batch_len as u64) as usize;
    let started = Instant::now();
    let mut ops = 0u64;
    while started.elapsed() < time_max {
        let mut buf = file.alloc_dma_buffer(len);
        buf.as_bytes_mut().fill(0x5a);
        let written = file
            .write_at(buf, ops * len as u64)
            .await
            .expect("raw write");
        assert_eq!(written, len, "short raw write");
        file.fdatasync().await.expect("raw fdatasync");
        ops += 1;
    }
    let elapsed = started.elapsed();
    file.close().await.expect("close the raw sync file");
    std::fs::remove_file(&path).expect("remove the raw sync file");
    Measured {
        bytes: ops * batch_len as u64,
        appends: ops,
        records: 0,
        elapsed,
        writes: ops,
        bytes_written: ops * len as u64,
        fdatasyncs: ops,
    }
}

fn log_config(dir: &Path, flush: FlushMode) -> LogConfig {
    let mut config = LogConfig::new(dir);
    config.segment_bytes_max = SEGMENT_BYTES_MAX;
    config.flush = flush;
    config
}

/// (d) Reopens the log in `dir` and scrubs it unpaced: bytes verified, wall time, and this
/// thread's CPU time (the scrub runs on the executor's thread; O_DIRECT reads, no page cache).
async fn scrub_pass(dir: &Path) -> (u64, Duration, Duration) {
    let log = Log::open(log_config(dir, FlushMode::Sync))
        .await
        .expect("reopen the async log");
    let cpu_before = thread_cpu_time();
    let started = Instant::now();
    let report = log
        .scrub(&mut engine::log::scrub::Pacer::new(None))
        .await
        .expect("scrub");
    let elapsed = started.elapsed();
    let cpu = thread_cpu_time().saturating_sub(cpu_before);
    assert_eq!(report.damage, None, "the bench's own log is intact");
    log.close().await.expect("close after the scrub");
    (report.bytes, elapsed, cpu)
}

fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// (b) One appender, async flush: append ~64 KiB batches back to back, then flush. Each append
/// copies the batch from a template into a fresh buffer, as a broker's socket read would.
async fn async_append(dir: &Path, options: &Options) -> Measured {
    let (total_bytes, time_max) = (options.total_bytes, options.phase_time_max);
    let records = records_per_batch(ASYNC_BATCH_BYTES);
    let template = batch_template(records);
    let flush = FlushMode::Async {
        interval_ms: 1000,
        bytes: options.async_flush_bytes,
    };
    let storage = CountingStorage::default();
    let log = Log::open_with(storage.clone(), log_config(dir, flush))
        .await
        .expect("open the async log");
    let started = Instant::now();
    let mut appends = 0u64;
    while appends * (template.len() as u64) < total_bytes && started.elapsed() < time_max {
        log.append(BytesMut::from(&template[..]))
            .await
            .expect("async append");
        appends += 1;
    }
    log.flush().await.expect("final flush");
    let elapsed = started.elapsed();
    log.close().await.expect("close the async log");
    let counts = &storage.counts;
    Measured {
        bytes: appends * template.len() as u64,
        appends,
        records: appends * records as u64,
        elapsed,
        writes: counts.writes.get(),
        bytes_written: counts.bytes_written.get(),
        fdatasyncs: counts.fdatasyncs.get(),
    }
}

/// (c) `concurrency` appenders in sync mode, each appending 16 × 1 KiB batches and waiting for
/// each ack (after fdatasync) before the next.
async fn sync_append(
    dir: &Path,
    concurrency: usize,
    total_bytes: u64,
    time_max: Duration,
) -> Measured {
    let template = batch_template(SYNC_BATCH_RECORDS);
    let storage = CountingStorage::default();
    let log = Rc::new(
        Log::open_with(storage.clone(), log_config(dir, FlushMode::Sync))
            .await
            .expect("open the sync log"),
    );
    let appends_max = total_bytes / template.len() as u64;
    let appends = Rc::new(Cell::new(0u64));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (log, appends, template) = (log.clone(), appends.clone(), template.clone());
            glommio::spawn_local(async move {
                while appends.get() < appends_max && started.elapsed() < time_max {
                    appends.set(appends.get() + 1);
                    log.append(BytesMut::from(&template[..]))
                        .await
                        .expect("sync append");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await;
    }
    let elapsed = started.elapsed();
    let log = Rc::try_unwrap(log).unwrap_or_else(|_| panic!("appenders hold no log"));
    log.close().await.expect("close the sync log");
    let appends = appends.get();
    let counts = &storage.counts;
    Measured {
        bytes: appends * template.len() as u64,
        appends,
        records: appends * SYNC_BATCH_RECORDS as u64,
        elapsed,
        writes: counts.writes.get(),
        bytes_written: counts.bytes_written.get(),
        fdatasyncs: counts.fdatasyncs.get(),
    }
}

fn verdict(ratio: f64, goal: f64, smoke: bool) -> &'static str {
    if smoke {
        "not judged (smoke run)"
    } else if ratio >= goal {
        "PASS"
    } else {
        "MISS"
    }
}

fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("log_bench: {message}");
            std::process::exit(2);
        }
    };
    let memlock = raise_memlock();
    let base = options.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("log-bench-")
        .tempdir_in(&base)
        .unwrap_or_else(|e| panic!("cannot make a directory in {}: {e}", base.display()));
    let dir_path = dir.path().to_path_buf();
    let cpu = options.cpu;
    println!("log_bench: {memlock}");
    println!(
        "dir {}, executor pinned to CPU {cpu}, raw/async up to {} MiB, sync up to {} MiB, \
         {:?} per phase{}",
        dir_path.display(),
        options.total_bytes >> 20,
        options.sync_bytes >> 20,
        options.phase_time_max,
        if options.smoke { " (smoke)" } else { "" }
    );
    let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .name("log-bench")
        .spawn(move || async move { run(&dir_path, &options).await })
        .expect("the pinned executor starts");
    handle.join().expect("the bench executor finishes");
    drop(dir);
}

async fn run(dir: &Path, options: &Options) {
    let phase_dir = |name: &str| {
        let path = dir.join(name);
        std::fs::create_dir_all(&path).expect("make the phase directory");
        path
    };
    let raw = raw_dma(dir, options.total_bytes, options.phase_time_max).await;
    let raw_mb_s = raw.mb_per_s();
    println!();
    println!(
        "(a) raw DMA write (1 MiB buffers, 4 in flight, + fdatasync): {:>8.1} MB/s  100%   \
         ({} MiB in {:.2} s)",
        raw_mb_s,
        raw.bytes >> 20,
        raw.elapsed.as_secs_f64()
    );

    let records = records_per_batch(ASYNC_BATCH_BYTES);
    let a = async_append(&phase_dir("async"), options).await;
    let ratio = a.mb_per_s() / raw_mb_s;
    println!(
        "(b) log append, async, {records} x 1 KiB per batch:        {:>8.1} MB/s  {:>4.0}%   \
         ({} MiB in {:.2} s) goal >= {:.0}%: {}",
        a.mb_per_s(),
        ratio * 100.0,
        a.bytes >> 20,
        a.elapsed.as_secs_f64(),
        ASYNC_GOAL * 100.0,
        verdict(ratio, ASYNC_GOAL, options.smoke)
    );
    println!(
        "    records/s {:.0}, appends/s {:.0}; {}",
        a.per_s(a.records),
        a.per_s(a.appends),
        a.io_line()
    );

    let (scrubbed, scrub_time, scrub_cpu) = scrub_pass(&phase_dir("async")).await;
    println!(
        "(d) scrub (read + verify every batch, full speed) of (b)'s log: {:>8.1} MB/s  {:>4.0}%   \
         ({} MiB in {:.2} s; CPU {:.0} ms per GiB)",
        scrubbed as f64 / 1e6 / scrub_time.as_secs_f64(),
        scrubbed as f64 / 1e6 / scrub_time.as_secs_f64() / raw_mb_s * 100.0,
        scrubbed >> 20,
        scrub_time.as_secs_f64(),
        scrub_cpu.as_secs_f64() * 1e3 / (scrubbed as f64 / f64::from(1u32 << 30)).max(1e-9)
    );

    let sync_batch_len = batch_template(SYNC_BATCH_RECORDS).len();
    let raw_sync = raw_write_fdatasync(
        dir,
        sync_batch_len,
        options.phase_time_max.min(RAW_SYNC_TIME_MAX),
    )
    .await;
    println!(
        "(c) raw write + fdatasync of one {sync_batch_len}-byte batch at a time: {:.0}/s \
         ({:.0} us each), the ceiling of one sync appender",
        raw_sync.per_s(raw_sync.appends),
        1e6 / raw_sync.per_s(raw_sync.appends)
    );

    for concurrency in SYNC_CONCURRENCY {
        let s = sync_append(
            &phase_dir(&format!("sync-{concurrency}")),
            concurrency,
            options.sync_bytes,
            options.phase_time_max,
        )
        .await;
        let ratio = s.mb_per_s() / raw_mb_s;
        let goal = if concurrency == 256 {
            format!(
                " goal >= {:.0}%: {}",
                SYNC_256_GOAL * 100.0,
                verdict(ratio, SYNC_256_GOAL, options.smoke)
            )
        } else {
            String::new()
        };
        println!(
            "(c) log append, sync, {concurrency:>3} appenders x 16 x 1 KiB: {:>8.1} MB/s  {:>4.0}%   \
             ({} MiB in {:.2} s){goal}",
            s.mb_per_s(),
            ratio * 100.0,
            s.bytes >> 20,
            s.elapsed.as_secs_f64()
        );
        println!(
            "    appends/s {:.0}, records/s {:.0}; {}",
            s.per_s(s.appends),
            s.per_s(s.records),
            s.io_line()
        );
        if concurrency == 1 {
            println!(
                "    {:.0}% of raw write + fdatasync one at a time",
                100.0 * s.per_s(s.appends) / raw_sync.per_s(raw_sync.appends)
            );
        }
    }

    // The device is shared and its speed drifts; a second raw run shows by how much.
    let again = raw_dma(dir, options.total_bytes, options.phase_time_max).await;
    let drift = again.mb_per_s() / raw_mb_s - 1.0;
    println!(
        "(a) raw DMA write again at the end:                           {:>8.1} MB/s  {:>4.0}%{}",
        again.mb_per_s(),
        100.0 * again.mb_per_s() / raw_mb_s,
        if drift.abs() > 0.2 {
            "   the device drifted by more than 20% during the run: ratios are rough"
        } else {
            ""
        }
    );
}
