//! Scrubbing: reading a log's written segments end to end and verifying every batch (the same
//! judgement as reads, [`verify_batch`]) and every index entry, so damage is found before a
//! consumer reaches it. The broker runs it in the background at a bounded rate and on demand
//! (`defibus log scrub`); what it finds is recorded like damage found by a read.

use std::rc::Rc;
use std::time::{Duration, Instant};

use protocol::record::BATCH_HEADER_LEN;

use super::damage::{Damage, FoundBy, Verdict, verify_batch};
use super::index::IndexEntry;
use super::segment::SegmentFiles;
use super::{LogError, Shared, Storage};

/// Bytes read at a time.
const SCRUB_CHUNK_BYTES: u64 = 1 << 20;

/// Keeps a scrub under a byte rate (`None`: as fast as the disk allows), across logs.
#[derive(Debug)]
pub struct Pacer {
    bytes_per_sec: Option<u64>,
    started: Instant,
    bytes: u64,
}

impl Pacer {
    /// A pacer allowing `bytes_per_sec` (0 or `None`: no limit).
    pub fn new(bytes_per_sec: Option<u64>) -> Self {
        Self {
            bytes_per_sec: bytes_per_sec.filter(|&r| r > 0),
            started: Instant::now(),
            bytes: 0,
        }
    }

    /// Counts `bytes` read and waits until the rate allows more.
    async fn consumed(&mut self, bytes: u64) {
        self.bytes += bytes;
        let Some(rate) = self.bytes_per_sec else {
            return;
        };
        let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(self.started.elapsed()) {
            crate::rt::sleep(wait).await;
        }
    }
}

/// What a scrub of one log found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Segments read.
    pub segments: usize,
    /// Bytes verified.
    pub bytes: u64,
    /// Batches verified.
    pub batches: u64,
    /// The earliest damage found, if any (also recorded in the log).
    pub damage: Option<Damage>,
    /// Index entries that do not point at the batch they name: reads fall back to scanning,
    /// and `defibus log repair` rebuilds the index.
    pub index_problems: Vec<String>,
}

/// One segment as the scrub reads it: what was written when the scrub reached it.
struct Target<F> {
    base: u64,
    files: Rc<SegmentFiles<F>>,
    written_len: u64,
    /// Every batch before this offset is written: stopping short of it is damage.
    written_offset: u64,
    /// The segment's next offset: batches from `written_offset` on are verified as far as
    /// they are written (recent ones may still be in flight).
    end_offset: u64,
    index: Vec<IndexEntry>,
}

/// Scrubs every written segment of the log, oldest first, up to what is written now.
pub(crate) async fn scrub<S: Storage>(
    shared: &Shared<S>,
    pacer: &mut Pacer,
) -> Result<ScrubReport, LogError> {
    let targets: Vec<Target<S::File>> = {
        let state = shared.state.borrow();
        let cache_start = state.cache.start_offset();
        state
            .segments
            .iter()
            .filter_map(|(&base, segment)| {
                let files = segment.files.clone()?;
                let written_len = segment.log.written_len();
                Some(Target {
                    base,
                    files,
                    written_len,
                    // Batches from the cache's start on may be only partly written.
                    written_offset: segment.next_offset.min(cache_start),
                    end_offset: segment.next_offset,
                    index: segment
                        .index
                        .entries()
                        .iter()
                        .copied()
                        .filter(|e| u64::from(e.position) < written_len)
                        .collect(),
                })
            })
            .collect()
    };
    let mut report = ScrubReport::default();
    for target in targets {
        // Past known damage nothing is served, and repair rescans it anyway.
        if shared
            .damage
            .borrow()
            .earliest()
            .is_some_and(|d| d.offset <= target.base)
        {
            break;
        }
        report.segments += 1;
        let damage = scrub_segment(&shared.storage, &target, pacer, &mut report).await?;
        if let Some(damage) = damage {
            shared.damage.borrow_mut().record(damage.clone());
            report.damage = Some(damage);
            break;
        }
    }
    Ok(report)
}

async fn scrub_segment<S: Storage>(
    storage: &S,
    target: &Target<S::File>,
    pacer: &mut Pacer,
    report: &mut ScrubReport,
) -> Result<Option<Damage>, LogError> {
    let path = &target.files.log_path;
    let damage = |position: u64, offset: u64, reason: String| Damage {
        offset,
        path: path.clone(),
        position,
        reason,
        found_by: FoundBy::Scrub,
    };
    let mut entries = target.index.iter().peekable();
    let mut position = 0u64;
    let mut expected = target.base;
    let mut need = 0u64;
    let mut unwritten_tail = false;
    while position < target.written_len && expected < target.end_offset {
        let len = SCRUB_CHUNK_BYTES
            .max(need)
            .min(target.written_len - position);
        let chunk = storage
            .read_at(&target.files.log, position, len as usize)
            .await
            .map_err(|e| LogError::io("read", path, e))?;
        if (chunk.len() as u64) < len {
            let at = position + chunk.len() as u64;
            let reason = format!("file ends before its written length {}", target.written_len);
            return Ok(Some(damage(at, expected, reason)));
        }
        let mut at = 0usize;
        while chunk.len() - at >= BATCH_HEADER_LEN && expected < target.end_offset {
            let here = position + at as u64;
            let header = match verify_batch(&chunk[at..], expected) {
                Verdict::Batch(header) => header,
                Verdict::Incomplete => break,
                Verdict::Invalid(reason) => return Ok(Some(damage(here, expected, reason))),
            };
            while let Some(entry) = entries.next_if(|e| u64::from(e.position) <= here) {
                let names = target.base + u64::from(entry.relative_offset);
                if u64::from(entry.position) != here || names != expected {
                    report.index_problems.push(format!(
                        "{}: entry (offset {names}, byte {}) does not point at a batch start naming it",
                        target.files.index_path.display(),
                        entry.position
                    ));
                }
            }
            at += header.batch_len as usize;
            expected = header.next_offset();
            report.batches += 1;
        }
        if at == 0 {
            // A batch larger than the chunk, its header valid: read all of it next time.
            need =
                protocol::record::BatchHeader::decode(&chunk).map_or(0, |h| u64::from(h.batch_len));
            if need == 0 || position + need > target.written_len {
                if expected >= target.written_offset {
                    // A cached batch not yet (wholly) written: nothing more to verify.
                    unwritten_tail = true;
                    break;
                }
                let reason = format!(
                    "batch of {need} bytes passes the written length {}",
                    target.written_len
                );
                return Ok(Some(damage(position, expected, reason)));
            }
        }
        position += at as u64;
        report.bytes += at as u64;
        pacer.consumed(at as u64).await;
    }
    if expected < target.written_offset {
        let reason = format!(
            "the file's written data ends at byte {position} before offset {}",
            target.written_offset
        );
        return Ok(Some(damage(position, expected, reason)));
    }
    // Entries for batches still being written are checked by a later pass.
    for entry in entries.filter(|_| !unwritten_tail) {
        report.index_problems.push(format!(
            "{}: entry (offset {}, byte {}) points past the last batch",
            target.files.index_path.display(),
            target.base + u64::from(entry.relative_offset),
            entry.position
        ));
    }
    Ok(None)
}
