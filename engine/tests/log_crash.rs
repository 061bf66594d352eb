//! Nothing acknowledged under `FlushMode::Sync` is lost to `kill -9` (DESIGN.md §3), and under
//! `FlushMode::Async` no acknowledged offset is ever given to another record (ARCHITECTURE
//! §3.1, step 11): an acknowledged batch either reads back at its offsets or they lie in a
//! recorded skipped range.
//!
//! The test re-runs its own binary as a child process (the pattern of sled's
//! `tests/test_crash_recovery.rs`), selected by [`CHILD_ENV`]. The child opens a real log on
//! `DmaStorage` in sync mode with small segments and runs [`APPENDERS`] concurrent appenders; after
//! each acknowledged append it prints `ack <base_offset> <next_offset> <round>:<task>:<seq>`. The
//! parent reads acks up to a random point, `SIGKILL`s the child, reopens the log in-process and
//! checks that every acknowledged batch (of this and every earlier round) is at its offsets and
//! intact, that every batch in the log is valid and offsets are contiguous, and that the log takes
//! new appends at `next_offset`. Each round reuses the directory, so recovery runs again and again
//! on a growing log with many segments.
//!
//! `DEFIBUS_CRASH_SEED` replays a run; `DEFIBUS_CRASH_ROUNDS` sets the round count.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{batch_of, parse_batch, read_whole_log, run_local, seed_from_env};
use engine::log::{FlushMode, Log, LogConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Set in the child: the log directory to append to.
const CHILD_ENV: &str = "DEFIBUS_CRASH_CHILD";
/// Set in the child: the round number, written into every record so the parent can tell rounds
/// apart.
const CHILD_ROUND_ENV: &str = "DEFIBUS_CRASH_CHILD_ROUND";
/// Set in the child: `sync` or `async`, the flush mode under test.
const CHILD_MODE_ENV: &str = "DEFIBUS_CRASH_CHILD_MODE";
const ROUNDS_DEFAULT: u32 = 30;
/// Async: appender 0 flushes after every this many of its appends.
const FLUSH_EVERY: u32 = 10;
const APPENDERS: u32 = 8;
/// Small, so segments roll every few dozen appends and crashes land around rolls too.
const SEGMENT_BYTES_MAX: u64 = 48 << 10;
/// The task number of the batch the parent appends after each recovery.
const PARENT_TASK: u32 = 1000;
/// Longest the parent waits for the acks it wants from one child.
const ROUND_DEADLINE: Duration = Duration::from_secs(30);
/// A child that outlives its parent (which should kill it) stops on its own after this.
const CHILD_LIFETIME_MAX: Duration = Duration::from_secs(60);

/// The flush mode under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Acknowledged means durable.
    Sync,
    /// Acknowledged once buffered: may be lost, but its offset is never reused.
    Async,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Sync => "sync",
            Self::Async => "async",
        }
    }

    /// The test function running this mode, for the child's `--exact` filter.
    fn test_name(self) -> &'static str {
        match self {
            Self::Sync => "sync_acks_survive_kill_9",
            Self::Async => "async_acked_offsets_are_never_reused_after_kill_9",
        }
    }
}

fn config(dir: &Path, mode: Mode) -> LogConfig {
    let mut config = LogConfig::new(dir);
    config.segment_bytes_max = SEGMENT_BYTES_MAX;
    config.index_interval_bytes = 4096;
    config.flush = match mode {
        Mode::Sync => FlushMode::Sync,
        // The default interval: a kill loses the last few milliseconds of acks.
        Mode::Async => FlushMode::Async {
            interval_ms: engine::log::config::DEFAULT_FLUSH_INTERVAL_MS,
            bytes: engine::log::config::DEFAULT_FLUSH_BYTES,
        },
    };
    config
}

#[test]
fn sync_acks_survive_kill_9() {
    child_or_parent(Mode::Sync);
}

#[test]
fn async_acked_offsets_are_never_reused_after_kill_9() {
    child_or_parent(Mode::Async);
}

fn child_or_parent(mode: Mode) {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let round = std::env::var(CHILD_ROUND_ENV)
            .expect("the parent sets the round")
            .parse()
            .expect("the round is a number");
        let child_mode = std::env::var(CHILD_MODE_ENV).expect("the parent sets the mode");
        assert_eq!(child_mode, mode.name(), "the child runs the parent's mode");
        run_child(Path::new(&dir), round, mode);
        return;
    }
    run_parent(mode);
}

/// Identifies one appended batch; its content is a pure function of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct BatchId {
    round: u32,
    task: u32,
    seq: u32,
}

impl std::fmt::Display for BatchId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.round, self.task, self.seq)
    }
}

impl std::str::FromStr for BatchId {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut parts = text.split(':').map(|p| p.parse::<u32>());
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(Ok(round)), Some(Ok(task)), Some(Ok(seq)), None) => Ok(Self { round, task, seq }),
            _ => Err(format!("bad batch id {text:?}")),
        }
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl BatchId {
    fn hash(&self, salt: u64) -> u64 {
        let packed =
            (u64::from(self.round) << 48) ^ (u64::from(self.task) << 32) ^ u64::from(self.seq);
        splitmix64(packed ^ splitmix64(salt))
    }

    /// 1 to 4 records.
    fn record_count(&self) -> usize {
        1 + (self.hash(0) % 4) as usize
    }

    /// Record `index`: `<id>/<index>;` followed by 0 to 1499 filler bytes derived from both.
    fn value(&self, index: usize) -> Vec<u8> {
        let mut value = format!("{self}/{index};").into_bytes();
        let h = self.hash(1 + index as u64);
        let filler = (h % 1500) as usize;
        value.extend((0..filler).map(|j| (splitmix64(h ^ (j as u64 / 8)) >> ((j % 8) * 8)) as u8));
        value
    }

    fn values(&self) -> Vec<Vec<u8>> {
        (0..self.record_count()).map(|i| self.value(i)).collect()
    }

    /// The id a record value claims, from its `<id>/<index>;` prefix.
    fn of_value(value: &[u8]) -> Option<(BatchId, usize)> {
        let end = value.iter().position(|&b| b == b';')?;
        let text = std::str::from_utf8(&value[..end]).ok()?;
        let (id, index) = text.split_once('/')?;
        Some((id.parse().ok()?, index.parse().ok()?))
    }
}

// ---------------------------------------------------------------------------------------------
// Child: append until killed.

fn run_child(dir: &Path, round: u32, mode: Mode) {
    let born = Instant::now();
    // Async: a short preemption tick. Appenders that never wait yield when it passes, and the
    // executor then polls IO and timers, as between a broker's network reads; with the default
    // 100 ms tick no sync would complete before the kill.
    let mut builder = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound);
    if mode == Mode::Async {
        builder = builder.preempt_timer(Duration::from_millis(2));
    }
    builder
        .make()
        .expect("a glommio executor starts")
        .run(async move {
            let log = Rc::new(
                Log::open(config(dir, mode))
                    .await
                    .unwrap_or_else(|e| panic!("child round {round}: open failed: {e}")),
            );
            let appenders: Vec<_> = (0..APPENDERS)
                .map(|task| {
                    let log = log.clone();
                    glommio::spawn_local(async move {
                        for seq in 0.. {
                            if born.elapsed() > CHILD_LIFETIME_MAX {
                                return;
                            }
                            let id = BatchId { round, task, seq };
                            let values = id.values();
                            let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
                            let appended = log
                                .append(batch_of(&refs))
                                .await
                                .unwrap_or_else(|e| panic!("child: append of {id} failed: {e}"));
                            // Straight to the file descriptor: the test harness must not buffer or
                            // capture it, and the line must be out before the next append starts.
                            let mut out = std::io::stdout().lock();
                            let line = format!(
                                "ack {} {} {id}\n",
                                appended.base_offset, appended.next_offset
                            );
                            if out
                                .write_all(line.as_bytes())
                                .and_then(|()| out.flush())
                                .is_err()
                            {
                                // The parent is gone; nobody will read further acks.
                                std::process::exit(3);
                            }
                            drop(out);
                            // An async append resolves without waiting: yield at the preemption tick.
                            glommio::yield_if_needed().await;
                            // Async: one appender flushes now and then, so some acknowledgements are
                            // covered by a flush (durable) and the rest are not.
                            if mode == Mode::Async
                                && task == 0
                                && seq % FLUSH_EVERY == FLUSH_EVERY - 1
                            {
                                let covers = log.next_offset();
                                log.flush()
                                    .await
                                    .unwrap_or_else(|e| panic!("child: flush failed: {e}"));
                                let mut out = std::io::stdout().lock();
                                if out
                                    .write_all(format!("flushed {covers}\n").as_bytes())
                                    .and_then(|()| out.flush())
                                    .is_err()
                                {
                                    std::process::exit(3);
                                }
                            }
                        }
                    })
                })
                .collect();
            for appender in appenders {
                appender.await;
            }
        });
}

// ---------------------------------------------------------------------------------------------
// Parent: kill the child at a random point, then check recovery.

/// What an acknowledged append promised.
#[derive(Clone, Copy, Debug)]
struct Ack {
    next_offset: u64,
    id: BatchId,
}

enum ChildLine {
    Ack {
        base_offset: u64,
        ack: Ack,
    },
    /// A flush resolved that started when the log's next offset was this: every offset below
    /// it is durable.
    Flushed(u64),
    Eof,
}

fn parse_ack(line: &str) -> Option<(u64, Ack)> {
    let mut words = line.strip_prefix("ack ")?.split_whitespace();
    let base_offset = words.next()?.parse().ok()?;
    let next_offset = words.next()?.parse().ok()?;
    let id = words.next()?.parse().ok()?;
    Some((base_offset, Ack { next_offset, id }))
}

fn spawn_child(dir: &Path, round: u32, mode: Mode) -> Child {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    Command::new(exe)
        .args([
            mode.test_name(),
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .env(CHILD_ROUND_ENV, round.to_string())
        .env(CHILD_MODE_ENV, mode.name())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the child test process starts")
}

/// Forwards the child's complete `ack` lines, then [`ChildLine::Eof`]. A line cut short by the
/// kill has no newline and is dropped: its append may or may not have been acknowledged.
fn forward_acks(stdout: impl Read, tx: mpsc::Sender<ChildLine>) {
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line.ends_with('\n') => {
                if let Some((base_offset, ack)) = parse_ack(&line) {
                    if tx.send(ChildLine::Ack { base_offset, ack }).is_err() {
                        return;
                    }
                }
                let flushed = line
                    .strip_prefix("flushed ")
                    .and_then(|n| n.trim().parse().ok());
                if let Some(offset) = flushed {
                    if tx.send(ChildLine::Flushed(offset)).is_err() {
                        return;
                    }
                }
            }
            Ok(_) => break,
        }
    }
    let _ = tx.send(ChildLine::Eof);
}

fn run_parent(mode: Mode) {
    let seed = seed_from_env("DEFIBUS_CRASH_SEED");
    let rounds: u32 = std::env::var("DEFIBUS_CRASH_ROUNDS")
        .map(|r| r.parse().expect("DEFIBUS_CRASH_ROUNDS is a number"))
        .unwrap_or(ROUNDS_DEFAULT);
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let started = Instant::now();
    // Every batch ever acknowledged, by base offset, over all rounds.
    let mut acked: BTreeMap<u64, Ack> = BTreeMap::new();
    let mut kills_before_first_ack = 0;
    let mut unacked_in_log = 0;
    let mut truncations = 0;
    let mut acks_lost = 0;
    // Async: base offsets of acknowledged batches a flush that resolved covered: durable.
    let mut flushed: std::collections::BTreeSet<u64> = std::collections::BTreeSet::new();

    for round in 0..rounds {
        let context = format!("seed {seed}, round {round}");
        // Mostly a few hundred acks in; sometimes none, so some kills land during recovery.
        let acks_wanted: usize = if rng.random_bool(0.15) {
            0
        } else {
            rng.random_range(1..400)
        };
        // Async syncs every 10 ms: kills up to 30 ms late land before, during and after syncs.
        let delay_max_us = match mode {
            Mode::Sync => 5_000,
            Mode::Async => 30_000,
        };
        let extra_delay = Duration::from_micros(rng.random_range(0..delay_max_us));

        let mut child = spawn_child(dir.path(), round, mode);
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        let reader = std::thread::spawn(move || forward_acks(stdout, tx));
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let stderr_reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });

        let mut round_acks = Vec::new();
        // Every offset of this round below this was covered by a flush that resolved.
        let mut durable_below = 0;
        let deadline = Instant::now() + ROUND_DEADLINE;
        let mut exited_early = false;
        while round_acks.len() < acks_wanted {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(ChildLine::Ack { base_offset, ack }) => round_acks.push((base_offset, ack)),
                Ok(ChildLine::Flushed(offset)) => durable_below = durable_below.max(offset),
                Ok(ChildLine::Eof) => {
                    exited_early = true;
                    break;
                }
                Err(_) => {
                    kill_and_reap(&mut child);
                    panic!(
                        "{context}: the child acknowledged only {} of {acks_wanted} appends in \
                         {ROUND_DEADLINE:?}; its stderr:\n{}",
                        round_acks.len(),
                        stderr_reader.join().unwrap_or_default()
                    );
                }
            }
        }
        if exited_early {
            let status = child.wait().expect("reap the child");
            panic!(
                "{context}: the child exited by itself ({status}) after {} acks; its stderr:\n{}",
                round_acks.len(),
                stderr_reader.join().unwrap_or_default()
            );
        }
        // The one intended piece of timing: let the child run on a little past the last ack
        // we waited for, so the kill lands at an arbitrary point of an append, fsync or roll.
        std::thread::sleep(extra_delay);
        kill_and_reap(&mut child);
        // Acks the child printed before it died are still in the pipe: they count too.
        for line in rx.iter() {
            match line {
                ChildLine::Ack { base_offset, ack } => round_acks.push((base_offset, ack)),
                ChildLine::Flushed(offset) => durable_below = durable_below.max(offset),
                ChildLine::Eof => break,
            }
        }
        reader.join().expect("the stdout reader ends at EOF");
        let child_stderr = stderr_reader.join().unwrap_or_default();
        if round_acks.is_empty() {
            kills_before_first_ack += 1;
        }

        for (base_offset, ack) in &round_acks {
            assert!(
                ack.next_offset > *base_offset,
                "{context}: ack of {} has an empty range [{base_offset}, {})",
                ack.id,
                ack.next_offset
            );
            assert_eq!(
                ack.next_offset - base_offset,
                ack.id.record_count() as u64,
                "{context}: ack of {} at {base_offset} covers the wrong number of offsets",
                ack.id
            );
            if let Some(other) = acked.insert(*base_offset, *ack) {
                panic!(
                    "{context}: offset {base_offset} was acknowledged twice: for {} and for {}",
                    other.id, ack.id
                );
            }
        }
        let acked_before = acked.len();
        flushed.extend(
            round_acks
                .iter()
                .filter(|(_, ack)| ack.next_offset <= durable_below)
                .map(|(base, _)| *base),
        );
        let recovered = verify_and_extend(dir.path(), mode, &flushed, &mut acked, round, &context)
            .unwrap_or_else(|message| panic!("{message}\nchild stderr:\n{child_stderr}"));
        unacked_in_log = recovered.unacked_batches;
        truncations += usize::from(recovered.bytes_truncated > 0);
        acks_lost = recovered.acked_lost;
        println!(
            "{context}: killed {extra_delay:?} after ack {acks_wanted} ({} acks in all); of \
             {acked_before} acked batches {} are in skipped ranges, the rest recovered ({} unacked \
             ones in the log), {} torn bytes cut; next_offset {}, {} segments",
            round_acks.len(),
            recovered.acked_lost,
            recovered.unacked_batches,
            recovered.bytes_truncated,
            recovered.next_offset,
            recovered.segments
        );
    }
    println!(
        "{rounds} {} rounds in {:?}: {kills_before_first_ack} kills before the first ack, \
         {unacked_in_log} unacknowledged batches survived, {acks_lost} acknowledged batches lost \
         (their offsets skipped, never reused), {} covered by a flush and kept, \
         {truncations} recoveries cut a torn tail",
        mode.name(),
        started.elapsed(),
        flushed.len()
    );
    if mode == Mode::Sync {
        assert_eq!(acks_lost, 0, "sync mode lost acknowledged batches");
    }
}

fn kill_and_reap(child: &mut Child) {
    // `Child::kill` sends SIGKILL: the log gets no chance to clean up.
    let _ = child.kill();
    child.wait().expect("reap the killed child");
}

/// What one recovery found.
struct Recovered {
    next_offset: u64,
    segments: usize,
    /// Batches in the log that were never acknowledged: appends cut short by the kill.
    unacked_batches: usize,
    /// Acknowledged batches (over all rounds) not in the log: their offsets lie in recorded
    /// skipped ranges. Always 0 in `Sync` mode.
    acked_lost: usize,
    /// Torn tail bytes recovery cut off.
    bytes_truncated: u64,
}

/// Reopens the log, checks it against every ack so far, appends one batch at `next_offset` and
/// closes it. Returns the next offset and segment count, or what is wrong.
fn verify_and_extend(
    dir: &Path,
    mode: Mode,
    flushed: &std::collections::BTreeSet<u64>,
    acked: &mut BTreeMap<u64, Ack>,
    round: u32,
    context: &str,
) -> Result<Recovered, String> {
    run_local(async {
        let log = Log::open(config(dir, mode))
            .await
            .map_err(|e| format!("{context}: reopening after kill -9 failed: {e}"))?;
        let skipped = log.skipped_ranges().to_vec();
        let in_skipped = |from: u64, to: u64| skipped.iter().any(|r| r.from <= from && to <= r.to);
        // An async log that lost every batch starts after the recorded gap.
        if log.start_offset() != 0 && !in_skipped(0, log.start_offset()) {
            return Err(format!(
                "{context}: start_offset is {} after recovery; without retention it stays 0",
                log.start_offset()
            ));
        }
        let batches = read_whole_log(&log, context).await;
        let mut found: BTreeMap<u64, (u64, BatchId)> = BTreeMap::new();
        for batch in &batches {
            // Every batch, acknowledged or not, must be exactly what some appender wrote.
            let (id, _) = batch
                .values
                .first()
                .and_then(|v| BatchId::of_value(v))
                .ok_or_else(|| {
                    format!(
                        "{context}: batch at {} holds a record no appender wrote",
                        batch.base_offset
                    )
                })?;
            if batch.values != id.values() {
                return Err(format!(
                    "{context}: batch {id} at [{}, {}) does not hold the records it was written \
                     with ({} records read, {} written)",
                    batch.base_offset,
                    batch.next_offset,
                    batch.values.len(),
                    id.record_count()
                ));
            }
            found.insert(batch.base_offset, (batch.next_offset, id));
        }
        let mut acked_lost = 0;
        for (base_offset, ack) in acked.iter() {
            match found.get(base_offset) {
                Some(&(next, id)) if next == ack.next_offset && id == ack.id => {}
                // Async: lost to the kill, and its offsets are recorded as skipped, so no other
                // record can ever take them.
                None if mode == Mode::Async
                    && !flushed.contains(base_offset)
                    && in_skipped(*base_offset, ack.next_offset) =>
                {
                    acked_lost += 1;
                }
                Some(&(next, id)) => {
                    return Err(format!(
                        "{context}: acknowledged batch {} at [{base_offset}, {}) was replaced \
                         by batch {id} at [{base_offset}, {next})",
                        ack.id, ack.next_offset
                    ));
                }
                None => {
                    return Err(format!(
                        "{context}: acknowledged batch {} at [{base_offset}, {}) is missing \
                         after recovery and its offsets are not recorded as skipped (log \
                         next_offset {}, {} batches survive, skipped {skipped:?})",
                        ack.id,
                        ack.next_offset,
                        log.next_offset(),
                        found.len()
                    ));
                }
            }
        }
        // No batch in the log may overlap an acknowledged batch's offsets without being it:
        // an offset acknowledged for one record never names another.
        for (&base, &(next, id)) in &found {
            let overlapping = acked
                .range(..next)
                .next_back()
                .filter(|(acked_base, ack)| **acked_base < next && ack.next_offset > base);
            if let Some((acked_base, ack)) = overlapping {
                if *acked_base != base || ack.id != id {
                    return Err(format!(
                        "{context}: batch {id} at [{base}, {next}) reuses offsets acknowledged \
                         for batch {} at [{acked_base}, {})",
                        ack.id, ack.next_offset
                    ));
                }
            }
        }

        // The recovered log takes new appends where it ends.
        let id = BatchId {
            round,
            task: PARENT_TASK,
            seq: 0,
        };
        let values = id.values();
        let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let next_before = log.next_offset();
        let appended = log
            .append(batch_of(&refs))
            .await
            .map_err(|e| format!("{context}: append after recovery failed: {e}"))?;
        if appended.base_offset != next_before
            || appended.next_offset != next_before + values.len() as u64
        {
            return Err(format!(
                "{context}: append after recovery went to [{}, {}), expected [{next_before}, {})",
                appended.base_offset,
                appended.next_offset,
                next_before + values.len() as u64
            ));
        }
        let read_back = log
            .read(appended.base_offset, 1)
            .await
            .map_err(|e| format!("{context}: reading the new batch failed: {e}"))?;
        let first = read_back
            .first()
            .ok_or_else(|| format!("{context}: the batch appended after recovery reads empty"))?;
        let batch = parse_batch(first, context);
        if batch.values != values {
            return Err(format!(
                "{context}: the batch appended after recovery reads back different"
            ));
        }
        acked.insert(
            appended.base_offset,
            Ack {
                next_offset: appended.next_offset,
                id,
            },
        );
        let recovered = Recovered {
            next_offset: log.next_offset(),
            segments: log.segment_count(),
            unacked_batches: found.len() + 1 + acked_lost - acked.len(),
            acked_lost,
            bytes_truncated: log.recovery_report().bytes_truncated,
        };
        log.close()
            .await
            .map_err(|e| format!("{context}: close after recovery failed: {e}"))?;
        Ok(recovered)
    })
}
