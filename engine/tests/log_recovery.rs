//! Recovery: crashes with torn tails, files cut or extended on disk, lost or corrupt indexes.

mod log_common;

use std::{io::Write, path::Path};

use engine::{FlushMode, Log, LogConfig, file, testing::FaultyStorage};
use log_common::*;

fn config(dir: &Path) -> LogConfig {
    let mut config = LogConfig::new(dir);
    config.segment_bytes_max = 3_000;
    config.index_interval_bytes = 250;
    config.tail_cache_bytes = 0;
    config.flush = FlushMode::Sync;
    config
}

#[test]
fn crash_keeps_every_acked_batch_and_cuts_the_torn_tail() {
    run(|| async {
        for seed in 1..40u64 {
            let storage = FaultyStorage::new();
            let config = config(Path::new("/q"));
            let log = Log::open_with(storage.clone(), config.clone())
                .await
                .unwrap();
            let mut expected = Vec::new();
            for i in 0..(10 + seed as u32 % 25) {
                append(
                    &log,
                    batch(1 + i % 3, 40 + (seed as usize * i as usize) % 200, i as u8),
                    &mut expected,
                )
                .await;
            }
            // The next round's fdatasync fails after its write reached the file.
            storage.fail_fdatasync_after(0);
            let failed = batch(3, 333, 0xEE);
            assert!(log.append(failed).await.is_err());
            storage.crash_random(seed);
            drop(log);

            let log = Log::open_with(storage.clone(), config).await.unwrap();
            let acked_next = expected.last().unwrap().next_offset;
            let next = log.next_offset();
            assert!(
                next == acked_next || next == acked_next + 3,
                "seed {seed}: {next} vs {acked_next}"
            );
            if next == acked_next {
                check_all_reads(&log, &expected).await;
            }
            // The log takes appends again after recovery, continuing the offsets.
            let appended = log.append(batch(1, 10, 1)).await.unwrap();
            assert_eq!(appended.base_offset, next);
            log.close().await.unwrap();
        }
    });
}

#[test]
fn lost_and_corrupt_indexes_are_rebuilt() {
    run(|| async {
        let storage = FaultyStorage::new();
        let dir = Path::new("/q");
        let config = config(dir);
        let log = Log::open_with(storage.clone(), config.clone())
            .await
            .unwrap();
        let mut expected = Vec::new();
        for i in 0..80u32 {
            append(&log, batch(2, 60, i as u8), &mut expected).await;
        }
        let bases: Vec<u64> = {
            let mut b: Vec<u64> = storage
                .paths()
                .iter()
                .filter_map(|p| file::parse_segment_file_name(p.file_name()?.to_str()?))
                .filter(|(_, kind)| *kind == file::SegmentFileKind::Log)
                .map(|(base, _)| base)
                .collect();
            b.sort();
            b
        };
        assert!(bases.len() >= 3);
        log.close().await.unwrap();

        // Lost: a sealed segment's index and the tail's.
        let tail = *bases.last().unwrap();
        storage.delete_file(&file::index_path(dir, bases[0]));
        storage.delete_file(&file::index_path(dir, tail));
        let log = Log::open_with(storage.clone(), config.clone())
            .await
            .unwrap();
        let report = log.recovery_report().clone();
        assert_eq!(report.indexes_rebuilt, vec![bases[0], tail], "{report:?}");
        assert_eq!(report.bytes_truncated, 0);
        check_all_reads(&log, &expected).await;
        log.close().await.unwrap();
        assert!(
            storage
                .file_contents(&file::index_path(dir, tail))
                .is_some()
        );

        // Corrupt: entries pointing at the wrong batch, and garbage.
        let index_of_1 = file::index_path(dir, bases[1]);
        let mut bad = storage.file_contents(&index_of_1).unwrap();
        let entries = bad
            .chunks(8)
            .take_while(|c| c.iter().any(|&b| b != 0))
            .count();
        assert!(entries >= 2, "segment 1 has index entries");
        // Sealed indexes are checked by shape and by their last entry, which now names the
        // wrong offset.
        bad[(entries - 1) * 8] ^= 0x01;
        storage.set_file_contents(&index_of_1, bad);
        let index_of_tail = file::index_path(dir, tail);
        let mut bad = storage.file_contents(&index_of_tail).unwrap();
        bad.extend_from_slice(&[0xFF; 24]);
        storage.set_file_contents(&index_of_tail, bad);
        let log = Log::open_with(storage.clone(), config).await.unwrap();
        let report = log.recovery_report().clone();
        assert_eq!(report.indexes_rebuilt, vec![bases[1], tail], "{report:?}");
        assert!(report.index_entries_dropped > 0);
        check_all_reads(&log, &expected).await;
        log.close().await.unwrap();
    });
}

/// Appends through real DMA files, closes, then lets `damage` edit the tail segment file.
fn damaged_tail_on_disk(damage: fn(&Path)) -> (u64, engine::RecoveryReport) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let result = std::sync::Arc::new(std::sync::Mutex::new(None));
    let out = result.clone();
    run(move || async move {
        let config = config(&path);
        let log = Log::open(config.clone()).await.unwrap();
        let mut expected = Vec::new();
        for i in 0..25u32 {
            append(&log, batch(1 + i % 2, 100, i as u8), &mut expected).await;
        }
        log.close().await.unwrap();
        // Torn writes come from crashes: no clean close is on record (with one, invalid bytes
        // below its length are damage, `log_damage.rs`).
        std::fs::remove_file(engine::file::closed_path(&path)).unwrap();
        let mut logs: Vec<_> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        logs.sort();
        damage(logs.last().unwrap());
        let log = Log::open(config).await.unwrap();
        let report = log.recovery_report().clone();
        let next = log.next_offset();
        let kept: Vec<_> = expected
            .iter()
            .filter(|e| e.next_offset <= next)
            .cloned()
            .collect();
        check_all_reads(&log, &kept).await;
        // Appends continue after the repaired tail and survive another reopen.
        let appended = log.append(batch(1, 10, 9)).await.unwrap();
        assert_eq!(appended.base_offset, next);
        log.close().await.unwrap();
        let log = Log::open(LogConfig {
            ..config_for(&path)
        })
        .await
        .unwrap();
        assert_eq!(log.next_offset(), next + 1);
        assert_eq!(log.recovery_report().bytes_truncated, 0);
        log.close().await.unwrap();
        *out.lock().unwrap() = Some((next, report));
    });
    let taken = result.lock().unwrap().take();
    taken.unwrap()
}

fn config_for(path: &Path) -> LogConfig {
    config(path)
}

fn logical_len(path: &Path) -> u64 {
    // The tail is zero padded to the block; the logical end is where the zeros start.
    let data = std::fs::read(path).unwrap();
    let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    end as u64
}

#[test]
fn torn_tail_on_disk_is_cut() {
    let (next, report) = damaged_tail_on_disk(|path| {
        let len = logical_len(path);
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.set_len(len - 30).unwrap();
    });
    assert!(report.bytes_truncated > 0, "{report:?}");
    assert!(report.truncation_reason.is_some());
    assert!(next > 0);
}

#[test]
fn garbage_after_the_tail_on_disk_is_cut() {
    let (_, report) = damaged_tail_on_disk(|path| {
        let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        f.write_all(&[0x5A; 1000]).unwrap();
    });
    // The zero padding of the last block before the garbage is cut with it.
    assert!(
        (1000..1000 + 4096).contains(&report.bytes_truncated),
        "{report:?}"
    );
}

#[test]
fn corrupt_last_batch_on_disk_is_cut() {
    let (_, report) = damaged_tail_on_disk(|path| {
        let len = logical_len(path);
        let mut data = std::fs::read(path).unwrap();
        data[len as usize - 5] ^= 0xFF;
        std::fs::write(path, data).unwrap();
    });
    assert!(report.bytes_truncated > 0, "{report:?}");
    assert!(report.truncation_reason.unwrap().contains("checksum"));
}
