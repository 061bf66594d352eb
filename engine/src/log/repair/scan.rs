//! Step 1 of a repair: what one segment file's bytes hold, as runs of intact batches and
//! damaged ranges, judged by checksums and offset continuity, so that a damaged stamped offset
//! is never believed. Pure over bytes.

use protocol::record::{BATCH_HEADER_LEN, BATCH_LEN_MAX, BatchHeader, BatchView};

use crate::log::{
    config::DEFAULT_INDEX_INTERVAL_BYTES,
    index::{SparseIndex, decode_entries},
};

/// Intact contiguous batches of one segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Byte position of the first batch.
    pub start: u64,
    /// Byte position after the last batch.
    pub end: u64,
    /// Offset of the first record.
    pub first_offset: u64,
    /// Offset after the last record.
    pub next_offset: u64,
    /// Batches in the run.
    pub batches: u64,
}

/// What a byte range that holds no intact batch is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// First damaged byte.
    pub start: u64,
    /// Byte after the damaged range.
    pub end: u64,
    /// Why the batch at `start` was refused.
    pub reason: String,
    /// The file ends inside a batch (a truncated file), rather than holding garbage.
    pub truncated: bool,
}

/// What one segment file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentScan {
    /// Base offset, from the file name.
    pub base: u64,
    /// Length of the `.log` file.
    pub file_len: u64,
    /// Intact runs, in file order.
    pub runs: Vec<Run>,
    /// Damaged ranges, in file order.
    pub damage: Vec<Damage>,
    /// Zero padding after the last batch, left as is.
    pub padding_from: Option<u64>,
    /// The index is missing, malformed, or does not match the batches.
    pub index_bad: bool,
}

impl SegmentScan {
    /// Whether the segment is intact: one run from its base at position 0, no damage.
    pub fn is_intact(&self) -> bool {
        self.damage.is_empty()
            && match self.runs.as_slice() {
                [] => self.file_len == 0 || self.padding_from == Some(0),
                [run] => run.start == 0 && run.first_offset == self.base,
                _ => false,
            }
    }

    /// Offset after the last intact batch; the base when there is none.
    pub fn next_offset(&self) -> u64 {
        self.runs.last().map_or(self.base, |r| r.next_offset)
    }
}

/// Scans one segment's bytes: its intact runs and damaged ranges (step 1).
pub fn scan_segment(base: u64, bytes: &[u8]) -> SegmentScan {
    let file_len = bytes.len() as u64;
    let mut scan = SegmentScan {
        base,
        file_len,
        runs: Vec::new(),
        damage: Vec::new(),
        padding_from: None,
        index_bad: false,
    };
    let mut at = 0usize;
    // Offsets below this were already seen: no later batch may claim them.
    let mut seen_offset = base;
    let mut run: Option<Run> = None;
    while at < bytes.len() {
        match batch_at(bytes, at) {
            Ok(header) => {
                let len = header.batch_len as usize;
                let continues = run.is_some_and(|r| r.next_offset == header.base_offset);
                let starts = run.is_none()
                    && (header.base_offset == seen_offset
                        || (header.base_offset > seen_offset && confirmed(bytes, at, &header)));
                if continues || starts {
                    let r = run.get_or_insert(Run {
                        start: at as u64,
                        end: at as u64,
                        first_offset: header.base_offset,
                        next_offset: header.base_offset,
                        batches: 0,
                    });
                    r.end = (at + len) as u64;
                    r.next_offset = header.next_offset();
                    r.batches += 1;
                    seen_offset = header.next_offset();
                    at += len;
                    continue;
                }
                // A valid batch that breaks continuity: its stamped offset cannot be trusted.
                if let Some(r) = run.take() {
                    scan.runs.push(r);
                }
                let reason = format!(
                    "batch claims offset {} where {seen_offset} was expected",
                    header.base_offset
                );
                at = resync(bytes, at, seen_offset, reason, &mut scan);
            }
            Err(Refusal::Padding) => {
                if let Some(r) = run.take() {
                    scan.runs.push(r);
                }
                scan.padding_from = Some(at as u64);
                return scan;
            }
            Err(Refusal::Invalid(reason)) => {
                if let Some(r) = run.take() {
                    scan.runs.push(r);
                }
                at = resync(bytes, at, seen_offset, reason, &mut scan);
            }
        }
    }
    if let Some(r) = run.take() {
        scan.runs.push(r);
    }
    scan
}

enum Refusal {
    /// Zero bytes from here to the end: the padding after the last batch.
    Padding,
    /// Not a valid batch: why.
    Invalid(String),
}

/// The header of a valid batch (checksums included) at `at`.
fn batch_at(bytes: &[u8], at: usize) -> Result<BatchHeader, Refusal> {
    let rest = &bytes[at..];
    if rest.iter().take(BATCH_HEADER_LEN).all(|&b| b == 0) && rest.iter().all(|&b| b == 0) {
        return Err(Refusal::Padding);
    }
    if rest.len() < BATCH_HEADER_LEN {
        return Err(Refusal::Invalid(format!(
            "{} bytes at the end, too few for a batch header",
            rest.len()
        )));
    }
    let view =
        BatchView::parse(rest, BATCH_LEN_MAX).map_err(|e| Refusal::Invalid(e.to_string()))?;
    Ok(*view.header())
}

/// Whether the batch at `at` (valid, its offset past what was seen) is followed by a batch
/// that continues its offsets, or by the end of the data: a damaged stamped offset that
/// happened to stay plausible is not confirmed by its successor.
fn confirmed(bytes: &[u8], at: usize, header: &BatchHeader) -> bool {
    let next = at + header.batch_len as usize;
    match batch_at(bytes, next.min(bytes.len())) {
        _ if next >= bytes.len() => true,
        Ok(following) => following.base_offset == header.next_offset(),
        Err(Refusal::Padding) => true,
        Err(Refusal::Invalid(_)) => false,
    }
}

/// Records damage from `from` up to the next position holding a plausible batch, and returns
/// that position (the end of the data when there is none).
fn resync(
    bytes: &[u8],
    from: usize,
    seen_offset: u64,
    reason: String,
    scan: &mut SegmentScan,
) -> usize {
    let mut at = from + 1;
    while at < bytes.len() {
        if let Ok(header) = batch_at(bytes, at) {
            if header.base_offset >= seen_offset && confirmed(bytes, at, &header) {
                break;
            }
        }
        // Zero padding to the end also ends the damage: the padding is kept as such.
        if bytes[at..].iter().all(|&b| b == 0) {
            break;
        }
        at += 1;
    }
    let at = at.min(bytes.len());
    // Only zeros (or nothing) after it: the file ends inside the declared batch.
    let reaches_end = bytes[at..].iter().all(|&b| b == 0);
    let truncated = reaches_end && declared_past_end(bytes, from);
    scan.damage.push(Damage {
        start: from as u64,
        end: at as u64,
        reason,
        truncated,
    });
    at
}

/// Whether the header at `from` is valid but declares a batch longer than the file holds.
fn declared_past_end(bytes: &[u8], from: usize) -> bool {
    BatchHeader::decode(&bytes[from..]).is_ok_and(|h| {
        h.validate(BATCH_LEN_MAX).is_ok() && from + h.batch_len as usize > bytes.len()
    })
}

/// Whether an index file's bytes match the batches of `run` (the segment's first run): every
/// entry well formed and pointing at a batch start with its offset.
pub(super) fn index_matches(index: Option<&[u8]>, bytes: &[u8], base: u64, run_end: u64) -> bool {
    let Some(index) = index else {
        return false;
    };
    let decoded = decode_entries(index, run_end);
    if decoded.dropped > 0 {
        return false;
    }
    decoded.entries.iter().all(|e| {
        let at = e.position as usize;
        (at as u64) < run_end
            && BatchHeader::decode(&bytes[at..])
                .is_ok_and(|h| h.base_offset == base + u64::from(e.relative_offset))
    })
}

/// The index of the batches in `bytes` (one run, from position 0, first offset `base`).
pub(super) fn build_index(bytes: &[u8], base: u64) -> Vec<u8> {
    let mut index = SparseIndex::new(Vec::new(), DEFAULT_INDEX_INTERVAL_BYTES);
    let mut at = 0usize;
    while at + BATCH_HEADER_LEN <= bytes.len() {
        let Ok(header) = BatchHeader::decode(&bytes[at..]) else {
            break;
        };
        if header.batch_len == 0 {
            break;
        }
        let relative = u32::try_from(header.base_offset - base).unwrap_or(u32::MAX);
        index.on_batch(relative, at as u64);
        at += header.batch_len as usize;
    }
    index.encode()
}

#[cfg(test)]
mod tests {
    use protocol::record::{BatchBuilder, Record, stamp};

    use super::*;

    /// A segment of one-record batches from `base`; also each batch's position.
    fn segment(base: u64, count: u64) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = Vec::new();
        let mut positions = Vec::new();
        for offset in base..base + count {
            let mut builder = BatchBuilder::new(BATCH_LEN_MAX);
            let value = format!("value {offset}");
            builder
                .push(&Record {
                    value: value.as_bytes(),
                    ..Record::default()
                })
                .unwrap();
            let mut batch = builder.finish().unwrap();
            stamp(&mut batch, offset, 1).unwrap();
            positions.push(bytes.len());
            bytes.extend_from_slice(&batch);
        }
        (bytes, positions)
    }

    fn runs(scan: &SegmentScan) -> Vec<(u64, u64)> {
        scan.runs
            .iter()
            .map(|r| (r.first_offset, r.next_offset))
            .collect()
    }

    #[test]
    fn an_intact_segment_with_padding_is_one_run() {
        let (mut bytes, _) = segment(10, 5);
        bytes.resize(bytes.len() + 300, 0);
        let scan = scan_segment(10, &bytes);
        assert!(scan.is_intact(), "{scan:?}");
        assert_eq!(runs(&scan), vec![(10, 15)]);
    }

    #[test]
    fn garbage_between_batches_is_skipped_to_the_next_valid_batch() {
        let (bytes, positions) = segment(0, 6);
        let mut damaged = bytes[..positions[3]].to_vec();
        damaged.extend_from_slice(&[0xA5; 77]);
        damaged.extend_from_slice(&bytes[positions[3]..]);
        let scan = scan_segment(0, &damaged);
        // Two runs with contiguous offsets: nothing is lost, the second moves to its own
        // segment and no offset is skipped.
        assert_eq!(runs(&scan), vec![(0, 3), (3, 6)], "{scan:?}");
        assert_eq!(scan.damage.len(), 1);
        assert_eq!(
            (scan.damage[0].start, scan.damage[0].end),
            (positions[3] as u64, positions[3] as u64 + 77)
        );
        assert!(!scan.is_intact());
    }

    #[test]
    fn a_relabelled_batch_is_never_believed() {
        let (mut bytes, positions) = segment(0, 6);
        let at = positions[2] + 4;
        bytes[at..at + 8].copy_from_slice(&119u64.to_le_bytes());
        let scan = scan_segment(0, &bytes);
        assert_eq!(runs(&scan), vec![(0, 2), (3, 6)], "{scan:?}");
    }

    #[test]
    fn a_file_ending_mid_batch_is_truncated_damage() {
        let (bytes, positions) = segment(0, 4);
        let cut = &bytes[..positions[3] + 50];
        let scan = scan_segment(0, cut);
        assert_eq!(runs(&scan), vec![(0, 3)]);
        assert!(scan.damage[0].truncated, "{scan:?}");
    }
}
