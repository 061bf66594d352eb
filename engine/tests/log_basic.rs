//! Round trips, rolls, reads at every offset, reopen, retention.

mod log_common;

use engine::{FlushMode, Log, LogConfig, LogError, testing::FaultyStorage};
use log_common::*;

fn small_config(dir: &str) -> LogConfig {
    let mut config = LogConfig::new(dir);
    config.segment_bytes_max = 2_000;
    config.index_interval_bytes = 300;
    config.tail_cache_bytes = 1_000;
    config
}

#[test]
fn round_trip_across_many_rolls_in_memory() {
    run(|| async {
        let storage = FaultyStorage::new();
        let config = small_config("/q");
        let log = Log::open_with(storage.clone(), config.clone())
            .await
            .unwrap();
        assert_eq!(log.recovery_report().segments, 0);
        let mut expected = Vec::new();
        for i in 0..150u32 {
            append(
                &log,
                batch(1 + i % 4, 20 + (i as usize * 7) % 90, i as u8),
                &mut expected,
            )
            .await;
            if i % 37 == 0 {
                log.flush().await.unwrap();
            }
        }
        assert!(log.segment_count() > 10, "{} segments", log.segment_count());
        // Unflushed data is readable too.
        check_all_reads(&log, &expected).await;
        log.flush().await.unwrap();
        check_all_reads(&log, &expected).await;
        let size = log.size_bytes();
        let segments = log.segment_count();
        log.close().await.unwrap();

        let log = Log::open_with(storage.clone(), config).await.unwrap();
        let report = log.recovery_report().clone();
        assert_eq!(report.bytes_truncated, 0, "{report:?}");
        assert!(report.indexes_rebuilt.is_empty(), "{report:?}");
        assert_eq!(log.size_bytes(), size);
        assert_eq!(log.segment_count(), segments);
        check_all_reads(&log, &expected).await;
        // Appending continues the offsets.
        append(&log, batch(2, 10, 1), &mut expected).await;
        log.flush().await.unwrap();
        check_all_reads(&log, &expected).await;
        log.close().await.unwrap();
    });
}

#[test]
fn round_trip_on_real_files_in_sync_mode() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let mut config = small_config(dir.path().to_str().unwrap());
        config.flush = FlushMode::Sync;
        let log = Log::open(config.clone()).await.unwrap();
        let mut expected = Vec::new();
        for i in 0..60u32 {
            append(
                &log,
                batch(1 + i % 3, 50 + i as usize, i as u8),
                &mut expected,
            )
            .await;
        }
        check_all_reads(&log, &expected).await;
        log.close().await.unwrap();
        let log = Log::open(config).await.unwrap();
        assert_eq!(log.recovery_report().bytes_truncated, 0);
        check_all_reads(&log, &expected).await;
        log.close().await.unwrap();
    });
}

#[test]
fn a_relative_directory_works_like_an_absolute_one() {
    run(|| async {
        // glommio's directory open once failed on a relative path (EBADF).
        let dir = tempfile::tempdir_in(".").unwrap();
        let cwd = std::env::current_dir().unwrap();
        let relative = dir.path().strip_prefix(&cwd).unwrap();
        assert!(relative.is_relative());
        let mut config = small_config(relative.to_str().unwrap());
        config.flush = FlushMode::Sync;
        let log = Log::open(config.clone()).await.unwrap();
        let mut expected = Vec::new();
        for i in 0..10u32 {
            append(&log, batch(2, 300, i as u8), &mut expected).await;
        }
        log.close().await.unwrap();
        let log = Log::open(config).await.unwrap();
        check_all_reads(&log, &expected).await;
        log.close().await.unwrap();
    });
}

#[test]
fn async_mode_flushes_on_its_own() {
    run(|| async {
        for (interval_ms, bytes) in [(1, 1 << 20), (60_000, 100)] {
            let storage = FaultyStorage::new();
            let mut config = small_config("/q");
            config.flush = FlushMode::Async { interval_ms, bytes };
            let log = Log::open_with(storage.clone(), config).await.unwrap();
            let appended = log.append(batch(3, 100, 1)).await.unwrap();
            assert_eq!(
                log.read(0, 10).await.unwrap().len(),
                1,
                "readable before the flush"
            );
            // The flusher (its timer, or the byte threshold) makes it durable without a
            // flush() call; the test only yields until it has.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while log.synced_offset() < appended.next_offset {
                assert!(std::time::Instant::now() < deadline, "flusher never ran");
                futures_lite::future::yield_now().await;
            }
            assert!(storage.stats().fdatasyncs >= 1);
            log.close().await.unwrap();
        }
    });
}

#[test]
fn rejects_invalid_batches_and_reads_out_of_range() {
    run(|| async {
        let log = Log::open_with(FaultyStorage::new(), small_config("/q"))
            .await
            .unwrap();
        let mut b = batch(2, 10, 1);
        let last = b.len() - 1;
        b[last] ^= 1;
        assert!(matches!(
            log.append(b).await,
            Err(LogError::InvalidBatch { .. })
        ));
        let mut b = batch(2, 10, 1);
        b.extend_from_slice(&[0; 4]);
        assert!(matches!(
            log.append(b).await,
            Err(LogError::TrailingBytes { .. })
        ));
        assert_eq!(log.next_offset(), 0);
        assert!(log.read(0, 10).await.unwrap().is_empty());
        assert!(matches!(
            log.read(1, 10).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        log.close().await.unwrap();
    });
}

#[test]
fn retention_by_size_and_by_age() {
    run(|| async {
        let storage = FaultyStorage::new();
        let mut config = small_config("/q");
        config.retention_bytes_max = Some(5_000);
        let log = Log::open_with(storage.clone(), config.clone())
            .await
            .unwrap();
        let mut expected = Vec::new();
        for i in 0..100u32 {
            append(&log, batch(2, 100, i as u8), &mut expected).await;
        }
        log.flush().await.unwrap();
        let before = log.segment_count();
        let report = log.apply_retention(0).await.unwrap();
        assert!(report.segments_removed > 0);
        assert_eq!(log.segment_count(), before - report.segments_removed);
        assert!(log.size_bytes() <= 5_000 + config.segment_bytes_max);
        assert_eq!(report.start_offset, log.start_offset());
        assert!(log.start_offset() > 0);
        assert!(matches!(
            log.read(0, 10).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        check_all_reads(&log, &expected).await;
        // Deleted files are gone, and stay gone after a reopen.
        log.close().await.unwrap();
        let log = Log::open_with(storage.clone(), config.clone())
            .await
            .unwrap();
        assert_eq!(log.start_offset(), report.start_offset);
        check_all_reads(&log, &expected).await;
        log.close().await.unwrap();

        // By age: everything but the active segment is older than a day from now + 2 days.
        config.retention_bytes_max = None;
        config.retention_age_ms = Some(86_400_000);
        let log = Log::open_with(storage.clone(), config).await.unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert_eq!(log.apply_retention(now).await.unwrap().segments_removed, 0);
        let report = log.apply_retention(now + 2 * 86_400_000).await.unwrap();
        assert!(report.segments_removed > 0);
        assert_eq!(log.segment_count(), 1);
        check_all_reads(&log, &expected).await;
        log.close().await.unwrap();
    });
}

#[test]
fn a_second_open_of_a_directory_is_refused_until_the_first_log_is_gone() {
    run(|| async {
        // Real files: a flock on the directory's LOCK file.
        let dir = tempfile::tempdir().unwrap();
        let config = small_config(dir.path().to_str().unwrap());
        let lock_path = engine::file::lock_path(dir.path());
        let first = Log::open(config.clone()).await.unwrap();
        let refused = Log::open(config.clone()).await.err();
        assert!(
            matches!(&refused, Some(LogError::Locked { path }) if *path == lock_path),
            "{refused:?}"
        );
        first.close().await.unwrap();
        Log::open(config).await.unwrap().close().await.unwrap();

        // In memory: the same, and a crash (the process dies) releases the lock.
        let storage = FaultyStorage::new();
        let config = small_config("/q");
        let lock_path = engine::file::lock_path(std::path::Path::new("/q"));
        let first = Log::open_with(storage.clone(), config.clone())
            .await
            .unwrap();
        assert!(storage.is_locked(&lock_path));
        assert!(matches!(
            Log::open_with(storage.clone(), config.clone()).await,
            Err(LogError::Locked { .. })
        ));
        storage.crash(|_, _| 0);
        assert!(!storage.is_locked(&lock_path));
        let second = Log::open_with(storage.clone(), config.clone())
            .await
            .unwrap();
        // The crashed log's lock guard must not release the new holder's lock.
        drop(first);
        assert!(storage.is_locked(&lock_path));
        second.close().await.unwrap();
        assert!(!storage.is_locked(&lock_path));
    });
}
