//! A log poisoned by a failed write (a full disk, say) heals by reopening itself once its
//! backoff passed, keeping every acknowledged batch; before that it stays poisoned.

mod log_common;

use engine::{FlushMode, Log, LogConfig, LogError, testing::FaultyStorage};
use log_common::*;

fn config(reopen_after_poison_ms: u64) -> LogConfig {
    let mut config = LogConfig::new("/q");
    config.segment_bytes_max = 4_000;
    config.index_interval_bytes = 500;
    config.flush = FlushMode::Sync;
    config.reopen_after_poison_ms = Some(reopen_after_poison_ms);
    config
}

#[test]
fn a_poisoned_log_reopens_on_the_next_append_and_keeps_every_acknowledged_batch() {
    run(|| async {
        let storage = FaultyStorage::new();
        let log = Log::open_with(storage.clone(), config(0)).await.unwrap();
        let mut expected = Vec::new();
        // Enough to roll segments, so the reopen recovers sealed ones and a tail.
        for i in 0..40u32 {
            append(&log, batch(2, 50, i as u8), &mut expected).await;
        }
        assert!(log.segment_count() > 1);
        storage.fail_write_after(0);
        let failed = log.append(batch(1, 50, 7)).await.unwrap_err();
        assert!(matches!(failed, LogError::Poisoned { .. }), "{failed:?}");
        storage.clear_faults();

        // The next append reopens (the backoff is 0) and lands right after the acked ones.
        let next = expected.last().unwrap().next_offset;
        append(&log, batch(3, 40, 9), &mut expected).await;
        assert_eq!(expected.last().unwrap().base_offset, next);
        check_all_reads(&log, &expected).await;
        log.close().await.unwrap();

        // Everything acknowledged was durable: a crash keeping only synced data loses none.
        storage.crash(|_, _| 0);
        let log = Log::open_with(storage.clone(), config(0)).await.unwrap();
        check_all_reads(&log, &expected).await;
        log.close().await.unwrap();
    });
}

#[test]
fn a_poisoned_log_stays_poisoned_until_its_backoff_passed() {
    run(|| async {
        let storage = FaultyStorage::new();
        let log = Log::open_with(storage.clone(), config(600_000))
            .await
            .unwrap();
        let mut expected = Vec::new();
        append(&log, batch(2, 50, 1), &mut expected).await;
        storage.fail_write_after(0);
        assert!(matches!(
            log.append(batch(1, 50, 2)).await,
            Err(LogError::Poisoned { .. })
        ));
        storage.clear_faults();
        // Within the backoff neither an append nor an explicit check reopens it.
        assert!(matches!(
            log.append(batch(1, 50, 3)).await,
            Err(LogError::Poisoned { .. })
        ));
        assert!(!log.reopen_if_poisoned().await.unwrap());
        assert_eq!(log.synced_offset(), expected.last().unwrap().next_offset);
    });
}

#[test]
fn a_healthy_log_is_never_reopened() {
    run(|| async {
        let storage = FaultyStorage::new();
        let log = Log::open_with(storage.clone(), config(0)).await.unwrap();
        let mut expected = Vec::new();
        append(&log, batch(2, 50, 1), &mut expected).await;
        assert!(!log.reopen_if_poisoned().await.unwrap());
        check_all_reads(&log, &expected).await;
        log.close().await.unwrap();
    });
}

#[test]
fn a_tail_index_without_room_to_rewrite_is_served_from_memory_and_written_later() {
    run(|| async {
        let storage = FaultyStorage::new();
        let mut expected = Vec::new();
        let log = Log::open_with(storage.clone(), config(0)).await.unwrap();
        for i in 0..10u32 {
            append(&log, batch(2, 50, i as u8), &mut expected).await;
        }
        log.close().await.unwrap();
        // The tail's index is lost, so recovery must write it afresh: on a full disk.
        let index = std::path::Path::new("/q").join("00000000000000000000.idx");
        storage.delete_file(&index);
        storage.set_disk_full();
        let log = Log::open_with(storage.clone(), config(0)).await.unwrap();
        check_all_reads(&log, &expected).await;

        // Once there is room the log writes the whole index with its next round.
        storage.clear_faults();
        append(&log, batch(1, 50, 99), &mut expected).await;
        log.close().await.unwrap();
        let log = Log::open_with(storage.clone(), config(0)).await.unwrap();
        assert_eq!(log.recovery_report().indexes_rebuilt, Vec::<u64>::new());
        check_all_reads(&log, &expected).await;
        log.close().await.unwrap();
    });
}
