//! Faults: failed fdatasync poisons the log, short writes are completed, and group commit.

mod log_common;

use std::{cell::Cell, path::Path, rc::Rc};

use engine::{FlushMode, Log, LogConfig, LogError, testing::FaultyStorage};
use log_common::*;

fn config() -> LogConfig {
    let mut config = LogConfig::new("/q");
    config.segment_bytes_max = 4_000;
    config.index_interval_bytes = 500;
    config.flush = FlushMode::Sync;
    config
}

#[test]
fn failed_fdatasync_poisons_and_nothing_unsynced_is_acked() {
    run(|| async {
        let storage = FaultyStorage::new();
        let log = Log::open_with(storage.clone(), config()).await.unwrap();
        let mut expected = Vec::new();
        for i in 0..5u32 {
            append(&log, batch(2, 50, i as u8), &mut expected).await;
        }
        storage.fail_fdatasync_after(0);
        let first = log.append(batch(1, 50, 7)).await.unwrap_err();
        let LogError::Poisoned { cause } = &first else {
            panic!("expected Poisoned, got {first:?}");
        };
        assert!(
            matches!(
                &**cause,
                LogError::Io {
                    op: "fdatasync",
                    ..
                }
            ),
            "cause {cause:?}"
        );
        assert!(
            first.to_string().contains("injected fdatasync error"),
            "{first}"
        );
        // Every later append and flush fails too, without touching the storage.
        let syncs = storage.stats().fdatasyncs;
        assert!(matches!(
            log.append(batch(1, 5, 1)).await,
            Err(LogError::Poisoned { .. })
        ));
        assert!(matches!(log.flush().await, Err(LogError::Poisoned { .. })));
        assert_eq!(storage.stats().fdatasyncs, syncs);
        assert!(matches!(log.close().await, Err(LogError::Poisoned { .. })));

        // Only synced data survives a crash; every acked batch is in it.
        storage.crash(|_, _| 0);
        let log = Log::open_with(storage.clone(), config()).await.unwrap();
        check_all_reads(&log, &expected).await;
        log.close().await.unwrap();
    });
}

#[test]
fn failed_write_poisons_all_waiters_of_the_round() {
    run(|| async {
        let storage = FaultyStorage::new();
        let log = Rc::new(Log::open_with(storage.clone(), config()).await.unwrap());
        log.append(batch(1, 10, 1)).await.unwrap();
        storage.fail_write_after(0);
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let log = log.clone();
                glommio::spawn_local(async move { log.append(batch(1, 10, i)).await })
            })
            .collect();
        for task in tasks {
            assert!(matches!(task.await, Err(LogError::Poisoned { .. })));
        }
        assert_eq!(log.synced_offset(), 1);
    });
}

#[test]
fn short_writes_are_completed() {
    run(|| async {
        let storage = FaultyStorage::new();
        let log = Log::open_with(storage.clone(), config()).await.unwrap();
        let mut expected = Vec::new();
        for i in 0..20u32 {
            if i % 3 == 0 {
                storage.short_write_next(100 + i as usize);
            }
            append(&log, batch(1 + i % 3, 300, i as u8), &mut expected).await;
        }
        check_all_reads(&log, &expected).await;
        drop(log);
        storage.crash(|_, _| 0);
        let log = Log::open_with(storage.clone(), config()).await.unwrap();
        assert_eq!(log.recovery_report().bytes_truncated, 0);
        check_all_reads(&log, &expected).await;
        log.close().await.unwrap();
    });
}

#[test]
fn group_commit_acks_after_fdatasync_with_fewer_syncs_than_appends() {
    run(|| async {
        let storage = FaultyStorage::new();
        let log = Rc::new(Log::open_with(storage.clone(), config()).await.unwrap());
        let acked = Rc::new(Cell::new(0u32));
        let tasks: Vec<_> = (0..64u32)
            .map(|t| {
                let log = log.clone();
                let acked = acked.clone();
                glommio::spawn_local(async move {
                    for i in 0..5u32 {
                        let appended = log.append(batch(1 + i % 2, 64, t as u8)).await.unwrap();
                        // Acknowledged only once an fdatasync covered it.
                        assert!(log.synced_offset() >= appended.next_offset);
                        acked.set(acked.get() + 1);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
        assert_eq!(acked.get(), 320);
        let stats = storage.stats();
        assert!(stats.fdatasyncs < 320 / 4, "{stats:?}");
        // A crash keeping nothing unsynced loses none of the 320 acked appends.
        let next = log.next_offset();
        storage.crash(|_, _| 0);
        let log = Log::open_with(storage.clone(), config()).await.unwrap();
        assert_eq!(log.next_offset(), next);
        let _ = Path::new("/q");
        log.close().await.unwrap();
    });
}
