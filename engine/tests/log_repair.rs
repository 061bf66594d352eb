//! `log repair` on real segment files: damage (flipped payload bytes, a flipped `batch_len`, a
//! sealed segment cut mid-batch, a damaged first batch, lost or garbled indexes) is cut or
//! skipped, every intact batch after it stays readable in order at its own offsets, and exactly
//! the lost offsets are recorded as skipped.

mod log_common;

use std::path::{Path, PathBuf};

use engine::{
    FlushMode, Log, LogConfig, file,
    log::{
        DmaStorage, SkipReason,
        repair::{RepairOptions, RepairReport, repair_queue},
    },
};
use log_common::*;
use protocol::record::BatchHeader;

fn config(dir: &Path) -> LogConfig {
    let mut config = LogConfig::new(dir);
    config.segment_bytes_max = 3_000;
    config.index_interval_bytes = 250;
    config.tail_cache_bytes = 0;
    config.flush = FlushMode::Sync;
    config
}

/// A closed log of many small segments on real files, and what was appended.
async fn make_log(dir: &Path) -> Vec<Expected> {
    let log = Log::open(config(dir)).await.unwrap();
    let mut expected = Vec::new();
    for i in 0..60u32 {
        append(
            &log,
            batch(1 + i % 3, 150 + i as usize, i as u8),
            &mut expected,
        )
        .await;
    }
    assert!(log.segment_count() >= 5);
    log.close().await.unwrap();
    expected
}

/// Base offsets of the segment files, sorted.
fn bases(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            match file::parse_segment_file_name(&name)? {
                (base, file::SegmentFileKind::Log) => Some(base),
                _ => None,
            }
        })
        .collect();
    bases.sort_unstable();
    bases
}

/// `(position, base_offset, next_offset)` of every batch of a segment file.
fn batches_of(path: &Path) -> Vec<(usize, u64, u64)> {
    let bytes = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    while at + 48 <= bytes.len() {
        let header = BatchHeader::decode(&bytes[at..]).unwrap();
        if header.batch_len == 0 {
            break;
        }
        out.push((at, header.base_offset, header.next_offset()));
        at += header.batch_len as usize;
    }
    out
}

/// Every file of the directory but the lock, with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != file::LOCK_FILE_NAME))
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

fn edit(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    f(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

async fn repair(dir: &Path, dry_run: bool) -> RepairReport {
    let mut lines = Vec::new();
    let report = repair_queue(&DmaStorage, dir, RepairOptions { dry_run }, &mut |line| {
        lines.push(line)
    })
    .await
    .unwrap();
    assert!(!lines.is_empty(), "repair reports its progress");
    report
}

/// Reopens the log and checks it holds exactly `expected` minus the batches in `lost`, with
/// `lost` recorded as skipped with `reason`.
async fn check_repaired(dir: &Path, expected: &[Expected], lost: (u64, u64), reason: SkipReason) {
    let log = Log::open(config(dir)).await.unwrap();
    let skipped: Vec<_> = log
        .skipped_ranges()
        .iter()
        .map(|r| (r.from, r.to, r.reason))
        .collect();
    assert_eq!(skipped, vec![(lost.0, lost.1, reason)]);
    assert!(log.recovery_report().unrecorded_gaps.is_empty());
    assert_eq!(log.recovery_report().bytes_truncated, 0);
    let kept: Vec<Expected> = expected
        .iter()
        .filter(|e| e.next_offset <= lost.0 || e.base_offset >= lost.1)
        .cloned()
        .collect();
    assert!(kept.len() < expected.len());
    check_all_reads(&log, &kept).await;
    log.close().await.unwrap();
}

fn middle_sealed(dir: &Path) -> (u64, PathBuf) {
    let bases = bases(dir);
    let base = bases[bases.len() / 2];
    (base, file::log_path(dir, base))
}

#[test]
fn flipped_payload_bytes_in_a_sealed_segment_skip_that_batch_only() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let expected = make_log(dir.path()).await;
        let (base, path) = middle_sealed(dir.path());
        let batches = batches_of(&path);
        assert!(batches.len() >= 3);
        let (at, from, to) = batches[1];
        edit(&path, |b| b[at + 100] ^= 0xFF);

        let before = snapshot(dir.path());
        let dry = repair(dir.path(), true).await;
        assert!(!dry.consistent && dry.changed());
        assert_eq!(dry.skipped.len(), 1);
        assert_eq!(snapshot(dir.path()), before, "a dry run changed files");
        let report = repair(dir.path(), false).await;
        assert!(report.consistent, "{report:#?}");
        let segment = report
            .segments
            .iter()
            .find(|s| s.scan.base == base)
            .unwrap();
        assert_eq!(segment.truncated_to, Some(at as u64));
        assert_eq!(segment.new_segments, vec![to]);
        assert_eq!(segment.scan.damage.len(), 1);
        assert_eq!(
            (segment.scan.damage[0].start, segment.scan.damage[0].end),
            (at as u64, batches[2].0 as u64)
        );
        check_repaired(dir.path(), &expected, (from, to), SkipReason::Damaged).await;
        // A second run finds nothing to do.
        let again = repair(dir.path(), false).await;
        assert!(again.consistent && !again.changed(), "{again:#?}");
    });
}

#[test]
fn a_flipped_batch_len_skips_that_batch_and_resynchronises() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let expected = make_log(dir.path()).await;
        let (_, path) = middle_sealed(dir.path());
        let batches = batches_of(&path);
        let (at, from, to) = batches[1];
        edit(&path, |b| b[at + 1] ^= 0x01);
        let report = repair(dir.path(), false).await;
        assert!(report.consistent, "{report:#?}");
        check_repaired(dir.path(), &expected, (from, to), SkipReason::Damaged).await;
    });
}

#[test]
fn a_flipped_stamped_offset_is_not_relabelled() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let expected = make_log(dir.path()).await;
        let (_, path) = middle_sealed(dir.path());
        let batches = batches_of(&path);
        let (at, from, to) = batches[1];
        // base_offset is bytes 4..12: claim 119 offsets later.
        edit(&path, |b| {
            let v = u64::from_le_bytes(b[at + 4..at + 12].try_into().unwrap()) + 119;
            b[at + 4..at + 12].copy_from_slice(&v.to_le_bytes());
        });
        let report = repair(dir.path(), false).await;
        assert!(report.consistent, "{report:#?}");
        check_repaired(dir.path(), &expected, (from, to), SkipReason::Damaged).await;
    });
}

#[test]
fn a_sealed_segment_cut_mid_batch_keeps_its_whole_batches() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let expected = make_log(dir.path()).await;
        let bases = bases(dir.path());
        let (base, path) = middle_sealed(dir.path());
        let next = bases[bases.iter().position(|b| *b == base).unwrap() + 1];
        let batches = batches_of(&path);
        let &(at, from, _) = batches.last().unwrap();
        edit(&path, |b| b.truncate(at + 60));
        let report = repair(dir.path(), false).await;
        assert!(report.consistent, "{report:#?}");
        check_repaired(dir.path(), &expected, (from, next), SkipReason::Truncated).await;
    });
}

#[test]
fn a_damaged_first_batch_moves_the_rest_of_the_segment() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let expected = make_log(dir.path()).await;
        let (base, path) = middle_sealed(dir.path());
        let batches = batches_of(&path);
        let (_, from, to) = batches[0];
        edit(&path, |b| b[60] ^= 0xFF);
        let report = repair(dir.path(), false).await;
        assert!(report.consistent, "{report:#?}");
        let segment = report
            .segments
            .iter()
            .find(|s| s.scan.base == base)
            .unwrap();
        assert!(segment.removed);
        assert!(!path.exists());
        assert_eq!(from, base);
        check_repaired(dir.path(), &expected, (from, to), SkipReason::Damaged).await;
    });
}

#[test]
fn lost_and_garbled_indexes_are_rebuilt_without_skipping() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let expected = make_log(dir.path()).await;
        let bases = bases(dir.path());
        std::fs::remove_file(file::index_path(dir.path(), bases[1])).unwrap();
        edit(&file::index_path(dir.path(), bases[2]), |b| {
            b.clear();
            b.extend_from_slice(&[0x5A; 24]);
        });
        let report = repair(dir.path(), false).await;
        assert!(report.consistent, "{report:#?}");
        assert!(report.skipped.is_empty());
        let rewritten: Vec<u64> = report
            .segments
            .iter()
            .filter(|s| s.index_rewritten)
            .map(|s| s.scan.base)
            .collect();
        assert_eq!(rewritten, vec![bases[1], bases[2]]);
        let log = Log::open(config(dir.path())).await.unwrap();
        assert!(log.recovery_report().indexes_rebuilt.is_empty());
        assert!(log.skipped_ranges().is_empty());
        check_all_reads(&log, &expected).await;
        log.close().await.unwrap();
    });
}

#[test]
fn repair_refuses_a_queue_its_broker_holds() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        make_log(dir.path()).await;
        let log = Log::open(config(dir.path())).await.unwrap();
        let refused = repair_queue(
            &DmaStorage,
            dir.path(),
            RepairOptions::default(),
            &mut |_| {},
        )
        .await;
        assert!(
            matches!(refused, Err(engine::LogError::Locked { .. })),
            "{refused:?}"
        );
        log.close().await.unwrap();
    });
}

#[test]
fn damage_in_the_tail_segment_keeps_what_follows_and_the_log_goes_on() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let mut expected = make_log(dir.path()).await;
        // Small batches, so the tail segment holds several.
        let log = Log::open(config(dir.path())).await.unwrap();
        // Enough that the tail segment holds several, wherever the last roll fell.
        for i in 0..30u32 {
            append(&log, batch(1, 20, 0x30 + i as u8), &mut expected).await;
        }
        log.close().await.unwrap();
        let tail = *bases(dir.path()).last().unwrap();
        let path = file::log_path(dir.path(), tail);
        let batches = batches_of(&path);
        assert!(batches.len() >= 3, "{batches:?}");
        let (at, from, to) = batches[1];
        edit(&path, |b| b[at + 70] ^= 0x10);
        let report = repair(dir.path(), false).await;
        assert!(report.consistent, "{report:#?}");
        check_repaired(dir.path(), &expected, (from, to), SkipReason::Damaged).await;
        // New appends continue after the last intact batch.
        expected.retain(|e| e.next_offset <= from || e.base_offset >= to);
        let log = Log::open(config(dir.path())).await.unwrap();
        let end = expected.last().unwrap().next_offset;
        assert_eq!(log.next_offset(), end);
        append(&log, batch(2, 10, 0xEE), &mut expected).await;
        check_all_reads(&log, &expected).await;
        log.close().await.unwrap();
    });
}

#[test]
fn a_missing_segment_is_recorded_as_skipped() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let expected = make_log(dir.path()).await;
        let bases = bases(dir.path());
        let (missing, next) = (bases[2], bases[3]);
        std::fs::remove_file(file::log_path(dir.path(), missing)).unwrap();
        std::fs::remove_file(file::index_path(dir.path(), missing)).unwrap();
        let report = repair(dir.path(), false).await;
        assert!(report.consistent, "{report:#?}");
        check_repaired(dir.path(), &expected, (missing, next), SkipReason::Missing).await;
    });
}

/// A cleanly closed log whose tail segment's last batch is damaged: (dir, expected, lost).
async fn damaged_last_batch_after_clean_close() -> (tempfile::TempDir, Vec<Expected>, (u64, u64)) {
    let dir = tempfile::tempdir().unwrap();
    let expected = make_log(dir.path()).await;
    assert!(file::closed_path(dir.path()).exists());
    let tail = *bases(dir.path()).last().unwrap();
    let path = file::log_path(dir.path(), tail);
    let &(at, from, to) = batches_of(&path).last().unwrap();
    edit(&path, |b| b[at + 70] ^= 0x10);
    (dir, expected, (from, to))
}

#[test]
fn the_last_batch_of_a_cleanly_closed_tail_is_recorded_never_reused() {
    run(|| async {
        // Repaired before the broker ever opened it: the record of the clean close says the
        // tail reached `to`, so those offsets are skipped, not handed out again.
        let (dir, mut expected, (from, to)) = damaged_last_batch_after_clean_close().await;
        let dry = repair(dir.path(), true).await;
        assert!(!dry.consistent);
        let report = repair(dir.path(), false).await;
        assert!(report.consistent, "{report:#?}");
        assert_eq!(report.segments.last().unwrap().empty_successor, Some(to));
        assert!(!file::closed_path(dir.path()).exists());
        check_repaired(dir.path(), &expected, (from, to), SkipReason::Damaged).await;
        expected.retain(|e| e.next_offset <= from);
        let log = Log::open(config(dir.path())).await.unwrap();
        assert_eq!(log.next_offset(), to);
        append(&log, batch(1, 10, 0xEE), &mut expected).await;
        assert_eq!(expected.last().unwrap().base_offset, to);
        check_all_reads(&log, &expected).await;
        log.close().await.unwrap();
    });
}

#[test]
fn a_damaged_tail_the_broker_already_sealed_repairs_the_same() {
    run(|| async {
        let (dir, expected, (from, to)) = damaged_last_batch_after_clean_close().await;
        // The broker opened it first: damage reported, a new tail made at `to`.
        let log = Log::open(config(dir.path())).await.unwrap();
        assert_eq!(log.damage().map(|d| d.offset), Some(from));
        assert_eq!(log.next_offset(), to);
        log.close().await.unwrap();
        assert!(bases(dir.path()).contains(&to));
        let report = repair(dir.path(), false).await;
        assert!(report.consistent, "{report:#?}");
        check_repaired(dir.path(), &expected, (from, to), SkipReason::Damaged).await;
    });
}

#[test]
fn a_cleanly_closed_tail_cut_at_a_batch_is_recorded_as_truncated() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let expected = make_log(dir.path()).await;
        let tail = *bases(dir.path()).last().unwrap();
        let path = file::log_path(dir.path(), tail);
        let &(at, from, to) = batches_of(&path).last().unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(at as u64).unwrap();
        drop(f);
        let report = repair(dir.path(), false).await;
        assert!(report.consistent, "{report:#?}");
        check_repaired(dir.path(), &expected, (from, to), SkipReason::Truncated).await;
    });
}
