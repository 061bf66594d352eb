//! Damage on disk (issue 11): flipped payload bytes, stamped fields and lengths, truncated
//! sealed segments, garbled indexes, all done to real segment files. What must hold: a batch
//! that fails its checks is never served, nothing past it is served (no record is skipped or
//! relabelled), the log says where and why, appends go on, and the scrub finds the same
//! damage before any consumer reads it.

mod log_common;

use std::path::{Path, PathBuf};

use engine::log::damage::FoundBy;
use engine::log::scrub::Pacer;
use engine::{FlushMode, Log, LogConfig, LogError, file};
use log_common::*;
use protocol::record::BatchHeader;

fn config(dir: &Path) -> LogConfig {
    let mut config = LogConfig::new(dir);
    config.segment_bytes_max = 8_000;
    config.index_interval_bytes = 1_000;
    config.tail_cache_bytes = 0;
    config.flush = FlushMode::Sync;
    config
}

/// Writes 60 batches of 3 records across several segments; returns what was appended.
async fn fill(dir: &Path) -> Vec<Expected> {
    let log = Log::open(config(dir)).await.unwrap();
    let mut expected = Vec::new();
    for i in 0..60u32 {
        append(
            &log,
            batch(3, 150 + (i as usize % 7) * 10, i as u8),
            &mut expected,
        )
        .await;
    }
    log.close().await.unwrap();
    expected
}

/// The segment base offsets of the queue directory, in order.
fn segment_bases(dir: &Path) -> Vec<u64> {
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

/// (position, base offset, length) of every batch of a segment file.
fn batches_of(path: &Path) -> Vec<(usize, u64, usize)> {
    let bytes = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    while let Ok(header) = BatchHeader::decode(&bytes[at..]) {
        if header.batch_len == 0 {
            break;
        }
        out.push((at, header.base_offset, header.batch_len as usize));
        at += header.batch_len as usize;
    }
    out
}

/// A sealed segment (not the last) and one of its middle batches: (path, position, offset).
fn middle_batch_of_sealed(dir: &Path) -> (PathBuf, usize, u64, usize) {
    let bases = segment_bases(dir);
    assert!(
        bases.len() >= 3,
        "the test needs several segments: {bases:?}"
    );
    let path = file::log_path(dir, bases[1]);
    let batches = batches_of(&path);
    let (position, offset, len) = batches[batches.len() / 2];
    (path, position, offset, len)
}

fn flip(path: &Path, at: usize, mask: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= mask;
    std::fs::write(path, bytes).unwrap();
}

/// Every offset below `damaged` reads back exactly what was appended; `damaged` and every
/// offset after it (in any segment) is refused as damaged, naming `damaged`.
async fn served_up_to(log: &Log, expected: &[Expected], damaged: u64) {
    for e in expected.iter().filter(|e| e.next_offset <= damaged) {
        for offset in e.base_offset..e.next_offset {
            let got = log.read(offset, 1).await.expect("below the damage reads");
            same_batch(&got[0], e);
        }
    }
    // A long read from the start stops before the damage rather than skip it.
    let mut offset = log.start_offset();
    while offset < damaged {
        let got = log.read(offset, 1 << 20).await.unwrap();
        for b in &got {
            let header = BatchHeader::decode(b).unwrap();
            assert_eq!(header.base_offset, offset, "no gap, no relabel");
            offset = header.next_offset();
        }
    }
    assert_eq!(offset, damaged);
    for e in expected.iter().filter(|e| e.base_offset >= damaged) {
        match log.read(e.base_offset, 1).await {
            Err(LogError::Damaged { damage }) => assert_eq!(damage.offset, damaged),
            other => panic!("offset {} past the damage: {other:?}", e.base_offset),
        }
    }
}

async fn expect_damage_on_read_and_scrub(dir: PathBuf, expected: Vec<Expected>, damaged: u64) {
    // A scrub finds it before any read.
    let log = Log::open(config(&dir)).await.unwrap();
    let report = log.scrub(&mut Pacer::new(None)).await.unwrap();
    let found = report.damage.expect("the scrub finds the damage");
    assert_eq!(found.offset, damaged);
    assert_eq!(found.found_by, FoundBy::Scrub);
    assert_eq!(log.damage().unwrap().offset, damaged);
    served_up_to(&log, &expected, damaged).await;
    log.close().await.unwrap();

    // Without a scrub, the read that reaches it finds it, and appends go on.
    let log = Log::open(config(&dir)).await.unwrap();
    served_up_to(&log, &expected, damaged).await;
    let damage = log.damage().expect("recorded");
    assert_eq!(damage.found_by, FoundBy::Read);
    let next = log.next_offset();
    let appended = log.append(batch(1, 10, 9)).await.unwrap();
    assert_eq!(appended.base_offset, next);
    assert!(matches!(
        log.read(appended.base_offset, 1).await,
        Err(LogError::Damaged { .. })
    ));
    log.close().await.unwrap();
}

#[test]
fn flipped_payload_bytes_in_a_sealed_segment_are_never_served() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let expected = fill(dir.path()).await;
        let (path, position, offset, len) = middle_batch_of_sealed(dir.path());
        flip(&path, position + len - 3, 0xFF);
        expect_damage_on_read_and_scrub(dir.path().to_path_buf(), expected, offset).await;
    });
}

#[test]
fn a_flipped_stamped_offset_is_caught_not_relabelled() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let expected = fill(dir.path()).await;
        let (path, position, offset, _) = middle_batch_of_sealed(dir.path());
        // base_offset is bytes [8, 16) of the batch: +119 as in the report that filed this.
        let mut bytes = std::fs::read(&path).unwrap();
        let stamped = u64::from_le_bytes(bytes[position + 8..position + 16].try_into().unwrap());
        bytes[position + 8..position + 16].copy_from_slice(&(stamped + 119).to_le_bytes());
        std::fs::write(&path, bytes).unwrap();
        expect_damage_on_read_and_scrub(dir.path().to_path_buf(), expected, offset).await;
    });
}

#[test]
fn a_flipped_append_time_is_caught() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let expected = fill(dir.path()).await;
        let (path, position, offset, _) = middle_batch_of_sealed(dir.path());
        flip(&path, position + 17, 0x01);
        expect_damage_on_read_and_scrub(dir.path().to_path_buf(), expected, offset).await;
    });
}

#[test]
fn a_flipped_batch_length_in_a_sealed_segment_stops_serving_there() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let expected = fill(dir.path()).await;
        let (path, position, offset, _) = middle_batch_of_sealed(dir.path());
        flip(&path, position + 1, 0x10);
        expect_damage_on_read_and_scrub(dir.path().to_path_buf(), expected, offset).await;
    });
}

#[test]
fn a_sealed_segment_cut_mid_batch_is_flagged_by_recovery_and_not_cut_further() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let expected = fill(dir.path()).await;
        let (path, position, offset, len) = middle_batch_of_sealed(dir.path());
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len((position + len / 2) as u64).unwrap();
        drop(file);
        let log = Log::open(config(dir.path())).await.unwrap();
        let damage = log
            .recovery_report()
            .damage
            .clone()
            .expect("recovery reports it");
        assert_eq!(damage.offset, offset);
        assert_eq!(damage.found_by, FoundBy::Recovery);
        assert_eq!(log.damage(), Some(damage));
        // The sealed file is left as it is: repair, not recovery, decides what to keep.
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            (position + len / 2) as u64
        );
        served_up_to(&log, &expected, offset).await;
        log.close().await.unwrap();
    });
}

#[test]
fn a_garbled_index_entry_is_reported_by_the_scrub_and_reads_stay_right() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let expected = fill(dir.path()).await;
        let bases = segment_bases(dir.path());
        let index = file::index_path(dir.path(), bases[1]);
        let mut bytes = std::fs::read(&index).unwrap();
        assert!(bytes.len() >= 16, "the sealed segment has index entries");
        // Entry 0's position (bytes [4, 8)) now points inside a batch; still increasing.
        let position = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
        bytes[4..8].copy_from_slice(&(position + 1).to_le_bytes());
        std::fs::write(&index, bytes).unwrap();
        let log = Log::open(config(dir.path())).await.unwrap();
        let report = log.scrub(&mut Pacer::new(None)).await.unwrap();
        assert_eq!(report.damage, None, "the data is intact");
        assert_eq!(
            report.index_problems.len(),
            1,
            "{:?}",
            report.index_problems
        );
        check_all_reads(&log, &expected).await;
        assert_eq!(log.damage(), None);
        log.close().await.unwrap();
    });
}

#[test]
fn an_intact_log_scrubs_clean_and_counts_what_it_read() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let expected = fill(dir.path()).await;
        let log = Log::open(config(dir.path())).await.unwrap();
        let report = log.scrub(&mut Pacer::new(None)).await.unwrap();
        assert_eq!(report.damage, None);
        assert!(
            report.index_problems.is_empty(),
            "{:?}",
            report.index_problems
        );
        assert_eq!(report.batches, expected.len() as u64);
        assert_eq!(report.segments, segment_bases(dir.path()).len());
        log.close().await.unwrap();
    });
}

#[test]
fn the_scrub_verifies_written_batches_still_in_the_cache() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        config.segment_bytes_max = 1 << 20;
        config.tail_cache_bytes = 1 << 20;
        config.flush = FlushMode::Async {
            interval_ms: 3_600_000,
            bytes: u64::MAX,
        };
        let log = Log::open(config).await.unwrap();
        let mut expected = Vec::new();
        for i in 0..20u32 {
            append(&log, batch(3, 150, i as u8), &mut expected).await;
        }
        // Before a flush some batches may still be in flight: those are not damage.
        let report = log.scrub(&mut Pacer::new(None)).await.unwrap();
        assert_eq!(report.damage, None);
        assert!(report.batches <= 20);
        // Once flushed, every batch is on disk and verified, though reads come from memory.
        log.flush().await.unwrap();
        let report = log.scrub(&mut Pacer::new(None)).await.unwrap();
        assert_eq!(report.damage, None);
        assert!(
            report.index_problems.is_empty(),
            "{:?}",
            report.index_problems
        );
        assert_eq!(report.batches, 20);
        // Damage to a cached batch on disk is what a restart would read: the scrub says so.
        let (position, _, _) = batches_of(&file::log_path(dir.path(), 0))[10];
        flip(&file::log_path(dir.path(), 0), position + 60, 0x01);
        let report = log.scrub(&mut Pacer::new(None)).await.unwrap();
        assert_eq!(
            report.damage.map(|d| d.offset),
            Some(expected[10].base_offset)
        );
        log.close().await.unwrap();
    });
}

/// The last batch of the tail segment (past its last index entry, where a crash's torn write
/// would be): (path, position, offset, length).
fn last_batch_of_tail(dir: &Path) -> (PathBuf, usize, u64, usize) {
    let bases = segment_bases(dir);
    let path = file::log_path(dir, *bases.last().unwrap());
    let (position, offset, len) = *batches_of(&path).last().unwrap();
    (path, position, offset, len)
}

#[test]
fn damage_in_a_cleanly_closed_tail_is_kept_and_reported_not_cut() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let expected = fill(dir.path()).await;
        let next = expected.last().unwrap().next_offset;
        assert!(
            file::closed_path(dir.path()).exists(),
            "close records itself"
        );
        let (path, position, damaged, len) = last_batch_of_tail(dir.path());
        let file_len = std::fs::metadata(&path).unwrap().len();
        flip(&path, position + len - 5, 0x10);

        let log = Log::open(config(dir.path())).await.unwrap();
        assert!(!file::closed_path(dir.path()).exists(), "open consumes it");
        let report = log.recovery_report();
        assert_eq!(report.bytes_truncated, 0, "{report:?}");
        let damage = log.damage().expect("recovery reports the damage");
        assert_eq!(
            (damage.offset, damage.found_by),
            (damaged, FoundBy::Recovery)
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            file_len,
            "nothing cut"
        );
        // The damaged offsets are never handed out again.
        assert_eq!(log.next_offset(), next);
        served_up_to(&log, &expected, damaged).await;
        let appended = log.append(batch(1, 10, 9)).await.unwrap();
        assert_eq!(appended.base_offset, next);
        log.close().await.unwrap();

        // The damaged segment is sealed now: the next open finds the same, crash or not.
        let log = Log::open(config(dir.path())).await.unwrap();
        assert_eq!(log.damage().map(|d| d.offset), Some(damaged));
        assert_eq!(log.next_offset(), next + 1);
        log.close().await.unwrap();
        std::fs::remove_file(file::closed_path(dir.path())).unwrap(); // as after a crash
        let log = Log::open(config(dir.path())).await.unwrap();
        assert_eq!(log.damage().map(|d| d.offset), Some(damaged));
        assert_eq!(log.recovery_report().bytes_truncated, 0);
        log.close().await.unwrap();
    });
}

#[test]
fn a_cleanly_closed_tail_found_shorter_is_damage() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let expected = fill(dir.path()).await;
        let (path, position, damaged, _) = last_batch_of_tail(dir.path());
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(position as u64).unwrap();
        drop(f);
        let log = Log::open(config(dir.path())).await.unwrap();
        let damage = log.damage().expect("a lost acknowledged batch is damage");
        assert_eq!(damage.offset, damaged);
        assert!(damage.reason.contains("closed cleanly"), "{damage}");
        assert_eq!(log.next_offset(), expected.last().unwrap().next_offset);
        log.close().await.unwrap();
    });
}

#[test]
fn without_a_clean_close_invalid_tail_bytes_are_a_torn_write_and_cut() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let expected = fill(dir.path()).await;
        // As after a crash: no record of a clean close.
        std::fs::remove_file(file::closed_path(dir.path())).unwrap();
        let (path, position, torn, len) = last_batch_of_tail(dir.path());
        flip(&path, position + len - 5, 0x10);
        let log = Log::open(config(dir.path())).await.unwrap();
        assert_eq!(log.damage(), None);
        assert!(log.recovery_report().bytes_truncated >= len as u64);
        assert_eq!(log.next_offset(), torn);
        for e in expected.iter().filter(|e| e.next_offset <= torn) {
            same_batch(&log.read(e.base_offset, 1).await.unwrap()[0], e);
        }
        log.close().await.unwrap();
    });
}

#[test]
fn a_clean_close_record_of_another_tail_is_ignored_and_removed() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let expected = fill(dir.path()).await;
        let stale = engine::log::closed::CleanClose {
            tail_base: 7,
            tail_len: 1 << 20,
            next_offset: 1 << 30,
        };
        std::fs::write(file::closed_path(dir.path()), stale.encode()).unwrap();
        let log = Log::open(config(dir.path())).await.unwrap();
        assert_eq!(log.damage(), None);
        assert_eq!(log.next_offset(), expected.last().unwrap().next_offset);
        assert!(!file::closed_path(dir.path()).exists());
        log.close().await.unwrap();
    });
}
