//! Offline repair of one queue directory (`defibus log repair`): cuts or skips damaged byte
//! ranges and keeps every intact batch after them, recording what was skipped.
//!
//! Run with the broker stopped: [`repair_queue`] takes the directory's lock like an open log.
//! For each segment it
//!
//! 1. reads the whole `.log` and scans it batch by batch (header, checksums, record layout,
//!    offset continuity). Where a batch fails it resynchronises: it searches forward byte by
//!    byte for the next position holding a batch that parses with valid checksums and whose
//!    offsets are plausible (at or after the offsets already seen, and confirmed by the batch
//!    after it, or the end of the data), so a batch whose stamped offset was damaged is never
//!    taken at its word. The intact *runs* of contiguous batches are what survive.
//! 2. writes every run but the first to a new segment named by its first offset (bytes copied,
//!    index built, **fdatasync `.log`**, **fdatasync `.idx`**, **fsync the directory**);
//! 3. records every skipped offset range in the skipped journal (`SKIPPED`, **fdatasync**):
//!    damage between runs, and damage or a truncation after the last run of a sealed segment,
//!    up to the next segment; also gaps between segments that no entry recorded yet;
//! 4. cuts the segment after its first run (`ftruncate`, **fdatasync**) and rewrites its index,
//!    or removes it when its first batch was damaged; then **fsyncs the directory**.
//!
//! A crash part way leaves the original damage and some copies, which the next open serves
//! consistently (the copies follow the damage and their gap is recorded once step 3 ran);
//! running repair again finishes the job. Step 4 of the tail segment is what recovery would do
//! anyway. Segments are read whole into memory: fine for an offline tool, at most
//! `segment_bytes_max` (2 GiB) at once.

use std::path::{Path, PathBuf};

mod scan;

pub use self::scan::{Damage, Run, SegmentScan, scan_segment};
use self::scan::{build_index, index_matches};
use crate::{
    file::{self, SegmentFileKind},
    log::{
        closed,
        error::LogError,
        segment::{PendingWrite, write_pending},
        skipped::{Journal, SkipReason, SkippedRange, uncovered},
        storage::Storage,
    },
};

/// What repair did (or, dry, would do) to one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRepair {
    /// What the scan found.
    pub scan: SegmentScan,
    /// New segments made from the runs after the first: their base offsets.
    pub new_segments: Vec<u64>,
    /// Length the file is cut to; `None` if it stays (or is removed).
    pub truncated_to: Option<u64>,
    /// The file is removed: its first batch was damaged, every run moved to new segments.
    pub removed: bool,
    /// Its index is rewritten.
    pub index_rewritten: bool,
    /// The tail of a cleanly closed log that lost acknowledged offsets: an empty segment is
    /// made at the log's next offset then, so those offsets stay a recorded gap and are never
    /// handed out again.
    pub empty_successor: Option<u64>,
}

/// What [`repair_queue`] did (or would do) to a queue directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// The queue directory.
    pub dir: PathBuf,
    /// Every segment, in offset order.
    pub segments: Vec<SegmentRepair>,
    /// Ranges recorded in the skipped journal (dry: that would be).
    pub skipped: Vec<SkippedRange>,
    /// Nothing was done: a dry run.
    pub dry_run: bool,
    /// After the repair, every segment is intact and every gap between segments is recorded.
    /// A dry run says whether it already is.
    pub consistent: bool,
}

impl RepairReport {
    /// Whether repair changed (dry: would change) anything.
    pub fn changed(&self) -> bool {
        !self.skipped.is_empty()
            || self.segments.iter().any(|s| {
                !s.new_segments.is_empty()
                    || s.truncated_to.is_some()
                    || s.removed
                    || s.index_rewritten
                    || s.empty_successor.is_some()
            })
    }
}

/// Options of [`repair_queue`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RepairOptions {
    /// Say what would be done; change nothing.
    pub dry_run: bool,
}

/// Repairs the queue in `dir` (see the module documentation); `progress` receives a line per
/// step of a long run.
pub async fn repair_queue<S: Storage>(
    storage: &S,
    dir: &Path,
    options: RepairOptions,
    progress: &mut dyn FnMut(String),
) -> Result<RepairReport, LogError> {
    let lock_path = file::lock_path(dir);
    let _lock = match storage.lock(&lock_path).await {
        Ok(lock) => lock,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            return Err(LogError::Locked { path: lock_path });
        }
        Err(e) => return Err(LogError::io("lock", lock_path, e)),
    };
    let mut report = RepairReport {
        dir: dir.to_path_buf(),
        dry_run: options.dry_run,
        ..RepairReport::default()
    };
    let mut journal = Journal::load(storage, dir).await?;
    let bases = segment_bases(storage, dir).await?;
    // A cleanly closed tail held every offset up to the record's next offset (`closed.rs`).
    let clean_next = closed::load(storage, dir)
        .await?
        .filter(|c| bases.last() == Some(&c.tail_base))
        .map(|c| c.next_offset);
    let mut planned: Vec<SkippedRange> = Vec::new();
    let now = super::now_ms();
    let mut previous_end: Option<u64> = None;
    for (i, &base) in bases.iter().enumerate() {
        let next_base = bases.get(i + 1).copied();
        // Where this segment's offsets must reach: the next segment, or for a cleanly closed
        // tail the next offset it had.
        let end_of_segment = next_base.or(clean_next.filter(|&next| next > base));
        let log_path = file::log_path(dir, base);
        let index_path = file::index_path(dir, base);
        let bytes = read_whole(storage, &log_path).await?;
        progress(format!(
            "{}: scanning {} bytes",
            log_path.display(),
            bytes.len()
        ));
        let mut scan = scan_segment(base, &bytes);
        let index_bytes = match storage.open(&index_path).await {
            Ok(_) => Some(read_whole(storage, &index_path).await?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(LogError::io("open", &index_path, e)),
        };
        let first = scan
            .runs
            .first()
            .copied()
            .filter(|r| r.start == 0 && r.first_offset == base);
        let kept_end = first.map_or(0, |r| r.end);
        scan.index_bad = !index_matches(index_bytes.as_deref(), &bytes, base, kept_end.max(1));
        // A gap before this segment that nothing records (a missing segment).
        if let Some(end) = previous_end {
            let mut recorded = journal.entries().to_vec();
            recorded.extend_from_slice(&report.skipped);
            for (from, to) in uncovered(&recorded, end, base) {
                planned.push(SkippedRange {
                    from,
                    to,
                    reason: SkipReason::Missing,
                    time_ms: now,
                });
            }
        }
        let mut repair = SegmentRepair {
            scan: scan.clone(),
            new_segments: Vec::new(),
            truncated_to: None,
            removed: false,
            index_rewritten: false,
            empty_successor: None,
        };
        if !scan.is_intact() {
            // Gaps between runs, and after the last run of a sealed segment.
            let mut end = first.map_or(base, |r| r.next_offset);
            for run in scan.runs.iter().filter(|r| Some(**r) != first) {
                if run.first_offset > end {
                    planned.push(SkippedRange {
                        from: end,
                        to: run.first_offset,
                        reason: SkipReason::Damaged,
                        time_ms: now,
                    });
                }
                repair.new_segments.push(run.first_offset);
                end = run.next_offset;
            }
            if let Some(next) = end_of_segment {
                if end < next {
                    let truncated = scan.damage.last().is_some_and(|d| d.truncated);
                    planned.push(SkippedRange {
                        from: end,
                        to: next,
                        reason: if truncated {
                            SkipReason::Truncated
                        } else {
                            SkipReason::Damaged
                        },
                        time_ms: now,
                    });
                }
            }
            if first.is_some() {
                repair.truncated_to = Some(kept_end);
            } else {
                repair.removed = true;
            }
            if next_base.is_none() && end_of_segment.is_some_and(|next| end < next) {
                repair.empty_successor = end_of_segment;
            }
        } else if let (None, Some(next)) = (next_base, end_of_segment) {
            // An intact tail that ends short of its clean close: it was cut at a batch.
            if scan.next_offset() < next {
                planned.push(SkippedRange {
                    from: scan.next_offset(),
                    to: next,
                    reason: SkipReason::Truncated,
                    time_ms: now,
                });
                repair.empty_successor = Some(next);
            }
        }
        repair.index_rewritten =
            !repair.removed && (scan.index_bad || repair.truncated_to.is_some());
        let past_next =
            end_of_segment.is_some_and(|next| repair.new_segments.iter().any(|b| *b >= next));
        // A run claiming the segment's own base after damaged bytes would need the file
        // rewritten in place, which a crash could lose; it cannot come from a damaged batch.
        let claims_base = repair.removed && repair.new_segments.contains(&base);
        if past_next || claims_base {
            return Err(LogError::Corrupt {
                path: log_path,
                position: 0,
                reason: format!(
                    "intact batches claim offsets {:?} that collide with this segment's base \
                     {base} or pass the next segment {next_base:?}; repair will not guess which \
                     is right",
                    repair.new_segments
                ),
            });
        }
        previous_end = Some(scan.next_offset());
        if !options.dry_run {
            apply_segment(storage, dir, base, &bytes, &repair, &mut journal, &planned).await?;
            report.skipped.append(&mut planned);
            if repair.new_segments.len() + usize::from(repair.truncated_to.is_some()) > 0 {
                progress(format!(
                    "{}: kept {} runs of intact batches, cut {} damaged byte ranges",
                    log_path.display(),
                    scan.runs.len(),
                    scan.damage.len()
                ));
            }
        } else {
            report.skipped.append(&mut planned);
        }
        report.segments.push(repair);
    }
    if !options.dry_run {
        // The files it described have changed; the next open verifies the tail afresh.
        closed::remove(storage, dir).await?;
        file::fsync_directory(storage, dir)
            .await
            .map_err(|e| LogError::io("fsync directory", dir, e))?;
    }
    report.consistent = if options.dry_run {
        !report.changed()
    } else {
        check_consistent(storage, dir).await?
    };
    Ok(report)
}

/// Steps 2-4 for one segment.
async fn apply_segment<S: Storage>(
    storage: &S,
    dir: &Path,
    base: u64,
    bytes: &[u8],
    repair: &SegmentRepair,
    journal: &mut Journal<S::File>,
    planned: &[SkippedRange],
) -> Result<(), LogError> {
    // 2. Copies of the runs after the first, each a new segment.
    let first_kept = !repair.removed && repair.scan.runs.first().is_some_and(|r| r.start == 0);
    for run in repair.scan.runs.iter().skip(usize::from(first_kept)) {
        let data = &bytes[run.start as usize..run.end as usize];
        write_new_file(storage, &file::log_path(dir, run.first_offset), data).await?;
        let index = build_index(data, run.first_offset);
        write_new_file(storage, &file::index_path(dir, run.first_offset), &index).await?;
    }
    if let Some(next) = repair.empty_successor {
        write_new_file(storage, &file::log_path(dir, next), &[]).await?;
        write_new_file(storage, &file::index_path(dir, next), &[]).await?;
    }
    if !repair.new_segments.is_empty() || repair.empty_successor.is_some() {
        file::fsync_directory(storage, dir)
            .await
            .map_err(|e| LogError::io("fsync directory", dir, e))?;
    }
    // 3. What was skipped, before the damaged bytes go.
    for range in planned {
        journal.append(storage, *range).await?;
    }
    // 4. Cut (or remove) the damaged segment, and rewrite its index.
    let log_path = file::log_path(dir, base);
    let index_path = file::index_path(dir, base);
    if repair.removed {
        for path in [&log_path, &index_path] {
            match storage.remove(path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io("remove", path, e)),
            }
        }
    } else {
        if let Some(len) = repair.truncated_to {
            let file = storage
                .open(&log_path)
                .await
                .map_err(|e| LogError::io("open", &log_path, e))?;
            storage
                .truncate(&file, len)
                .await
                .map_err(|e| LogError::io("truncate", &log_path, e))?;
            storage
                .fdatasync(&file)
                .await
                .map_err(|e| LogError::io("fdatasync", &log_path, e))?;
        }
        if repair.index_rewritten {
            let kept = repair
                .truncated_to
                .map_or(bytes, |len| &bytes[..len as usize]);
            write_new_file(storage, &index_path, &build_index(kept, base)).await?;
        }
    }
    file::fsync_directory(storage, dir)
        .await
        .map_err(|e| LogError::io("fsync directory", dir, e))
}

/// Creates (or replaces) `path` with `data`, zero padded to the block, and fdatasyncs it.
pub(crate) async fn write_new_file<S: Storage>(
    storage: &S,
    path: &Path,
    data: &[u8],
) -> Result<(), LogError> {
    let file = storage
        .create(path)
        .await
        .map_err(|e| LogError::io("create", path, e))?;
    if !data.is_empty() {
        let write = PendingWrite {
            position: 0,
            data: data.to_vec(),
        };
        write_pending(storage, &file, path, &write).await?;
    }
    storage
        .fdatasync(&file)
        .await
        .map_err(|e| LogError::io("fdatasync", path, e))
}

async fn read_whole<S: Storage>(storage: &S, path: &Path) -> Result<bytes::Bytes, LogError> {
    let file = storage
        .open(path)
        .await
        .map_err(|e| LogError::io("open", path, e))?;
    let len = storage
        .len(&file)
        .await
        .map_err(|e| LogError::io("file length", path, e))?;
    storage
        .read_at(&file, 0, len as usize)
        .await
        .map_err(|e| LogError::io("read", path, e))
}

/// Base offsets of the `.log` files in `dir`, sorted.
async fn segment_bases<S: Storage>(storage: &S, dir: &Path) -> Result<Vec<u64>, LogError> {
    let names = storage
        .list_dir(dir)
        .await
        .map_err(|e| LogError::io("list directory", dir, e))?;
    let mut bases: Vec<u64> = names
        .iter()
        .filter_map(|name| match file::parse_segment_file_name(name) {
            Some((base, SegmentFileKind::Log)) => Some(base),
            _ => None,
        })
        .collect();
    bases.sort_unstable();
    Ok(bases)
}

/// Whether every segment in `dir` is intact, its index matches, and every gap between
/// segments is recorded.
pub async fn check_consistent<S: Storage>(storage: &S, dir: &Path) -> Result<bool, LogError> {
    let journal = Journal::load(storage, dir).await?;
    let mut previous_end: Option<u64> = None;
    for base in segment_bases(storage, dir).await? {
        let bytes = read_whole(storage, &file::log_path(dir, base)).await?;
        let scan = scan_segment(base, &bytes);
        if !scan.is_intact() {
            return Ok(false);
        }
        let index_path = file::index_path(dir, base);
        let index = match storage.open(&index_path).await {
            Ok(_) => Some(read_whole(storage, &index_path).await?),
            Err(_) => None,
        };
        let end = scan.runs.first().map_or(1, |r| r.end);
        if !index_matches(index.as_deref(), &bytes, base, end) {
            return Ok(false);
        }
        if let Some(previous) = previous_end {
            if previous > base || !uncovered(journal.entries(), previous, base).is_empty() {
                return Ok(false);
            }
        }
        previous_end = Some(scan.next_offset());
    }
    Ok(true)
}

/// [`repair_queue`] on real files ([`crate::log::DmaStorage`]), on a runtime executor started
/// on this thread for the call: the entry point of `defibus log repair`.
pub fn repair_queue_blocking(
    dir: &Path,
    options: RepairOptions,
    progress: &mut dyn FnMut(String),
) -> Result<RepairReport, LogError> {
    crate::rt::run_here(repair_queue(
        &crate::log::DmaStorage,
        dir,
        options,
        progress,
    ))
    .map_err(|e| LogError::io("start the runtime for", dir, std::io::Error::other(e)))?
}
