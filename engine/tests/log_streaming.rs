//! The write path at volume: appends fill 1 MiB chunks that are written as they fill, several
//! in flight, while `Async` mode syncs in the background; and `Sync` rounds that write many
//! chunks at once. (The model and crash tests use segments smaller than one chunk.)

mod log_common;

use std::{path::Path, rc::Rc};

use engine::{FlushMode, Log, LogConfig, LogError, log::config, testing::FaultyStorage};
use log_common::*;

const MIB: u64 = 1 << 20;

/// Never syncs on its own: only `flush()`, `close()` and segment rolls sync.
fn quiet_async() -> FlushMode {
    FlushMode::Async {
        interval_ms: 3_600_000,
        bytes: u64::MAX,
    }
}

fn config(dir: &Path, flush: FlushMode, segment_bytes_max: u64) -> LogConfig {
    let mut config = LogConfig::new(dir);
    config.segment_bytes_max = segment_bytes_max;
    config.tail_cache_bytes = 2 << 20;
    config.flush = flush;
    config
}

/// About 60 KiB: 15 records of 4 KiB.
fn big_batch(seed: u8) -> bytes::BytesMut {
    batch(15, 4000, seed)
}

/// Appends batches until `bytes` were appended.
async fn append_bytes<S: engine::Storage>(log: &Log<S>, bytes: u64, expected: &mut Vec<Expected>) {
    let mut appended = 0u64;
    let mut seed = expected.len() as u8;
    while appended < bytes {
        let b = big_batch(seed);
        appended += b.len() as u64;
        append(log, b, expected).await;
        seed = seed.wrapping_add(1);
    }
}

#[test]
fn async_appends_stream_whole_chunks_before_any_flush() {
    run(|| async {
        let storage = FaultyStorage::new();
        // Segments of 6 MiB: rolls happen while chunks stream.
        let config = config(Path::new("/q"), quiet_async(), 6 * MIB);
        let log = Log::open_with(storage.clone(), config.clone())
            .await
            .unwrap();
        let mut expected = Vec::new();
        append_bytes(&log, 20 * MIB, &mut expected).await;
        let stats = storage.stats();
        // Back pressure let the committer write full chunks long before the end.
        assert!(stats.writes >= 8, "{stats:?}");
        assert!(
            log.synced_offset() < log.next_offset(),
            "nothing flushed the tail yet"
        );
        check_all_reads(&log, &expected).await;
        log.flush().await.unwrap();
        assert_eq!(log.synced_offset(), log.next_offset());
        drop(log);
        // Everything flushed survives a power loss that keeps nothing else.
        storage.crash(|_, _| 0);
        let log = Log::open_with(storage.clone(), config).await.unwrap();
        assert_eq!(log.recovery_report().bytes_truncated, 0);
        assert!(log.segment_count() >= 3);
        check_all_reads(&log, &expected).await;
        log.close().await.unwrap();
    });
}

#[test]
fn async_background_syncs_make_streamed_writes_durable_without_flush() {
    run(|| async {
        let storage = FaultyStorage::new();
        let flush = FlushMode::Async {
            interval_ms: 3_600_000,
            bytes: MIB,
        };
        let config = config(Path::new("/q"), flush, 1 << 30);
        let log = Log::open_with(storage.clone(), config.clone())
            .await
            .unwrap();
        let mut expected = Vec::new();
        append_bytes(&log, 24 * MIB, &mut expected).await;
        let synced = log.synced_offset();
        let syncs = storage.stats().fdatasyncs;
        assert!(
            synced > 0 && syncs > 2,
            "no background sync while streaming: synced offset {synced}, {syncs} fdatasyncs"
        );
        drop(log);
        storage.crash(|_, _| 0);
        let log = Log::open_with(storage.clone(), config).await.unwrap();
        let next = recovered_end(&log);
        assert!(
            next >= synced,
            "synced up to {synced} but recovered to {next}"
        );
        // Async acknowledged every append: none of their offsets may be handed out again.
        let acked = expected.last().map_or(0, |e| e.next_offset);
        assert!(
            log.next_offset() >= acked,
            "offset {} reused",
            log.next_offset()
        );
        check_all_reads(&log, prefix(&expected, next)).await;
        log.close().await.unwrap();
    });
}

#[test]
fn short_and_failed_writes_while_streaming() {
    run(|| async {
        let storage = FaultyStorage::new();
        let config = config(Path::new("/q"), quiet_async(), 1 << 30);
        let log = Log::open_with(storage.clone(), config.clone())
            .await
            .unwrap();
        let mut expected = Vec::new();
        append_bytes(&log, 3 * MIB, &mut expected).await;
        storage.short_write_next(100);
        append_bytes(&log, 12 * MIB, &mut expected).await;
        log.flush().await.unwrap();
        let flushed = log.next_offset();

        // A failed chunk write poisons the log; an append waiting under back pressure, or the
        // next flush, reports it.
        storage.fail_write_after(1);
        let mut failure = None;
        for i in 0..1000u32 {
            match log.append(big_batch(i as u8)).await {
                Ok(_) => {}
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let failure = match failure {
            Some(e) => e,
            None => log.flush().await.unwrap_err(),
        };
        assert!(matches!(failure, LogError::Poisoned { .. }), "{failure:?}");
        assert!(matches!(log.flush().await, Err(LogError::Poisoned { .. })));
        drop(log);

        storage.crash(|_, _| 0);
        let log = Log::open_with(storage.clone(), config).await.unwrap();
        assert_eq!(recovered_end(&log), flushed);
        check_all_reads(&log, &expected).await;
        log.close().await.unwrap();
    });
}

#[test]
fn streaming_round_trip_on_real_files() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let flush = FlushMode::Async {
            interval_ms: 5,
            bytes: config::DEFAULT_FLUSH_BYTES,
        };
        let config = config(dir.path(), flush, 10 * MIB);
        let log = Log::open(config.clone()).await.unwrap();
        let mut expected = Vec::new();
        append_bytes(&log, 24 * MIB, &mut expected).await;
        check_all_reads(&log, &expected).await;
        log.close().await.unwrap();
        let log = Log::open(config).await.unwrap();
        assert_eq!(log.recovery_report().bytes_truncated, 0);
        check_all_reads(&log, &expected).await;
        log.close().await.unwrap();
    });
}

#[test]
fn sync_rounds_of_many_chunks_on_real_files() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), FlushMode::Sync, 8 * MIB);
        let log = Rc::new(Log::open(config.clone()).await.unwrap());
        // 64 appenders of ~60 KiB batches: each round holds several chunks.
        let tasks: Vec<_> = (0..64u8)
            .map(|t| {
                let log = log.clone();
                glommio::spawn_local(async move {
                    let mut mine = Vec::new();
                    for _ in 0..6 {
                        append(&log, big_batch(t), &mut mine).await;
                        assert!(log.synced_offset() >= mine.last().unwrap().next_offset);
                    }
                    mine
                })
            })
            .collect();
        let mut expected = Vec::new();
        for task in tasks {
            expected.extend(task.await);
        }
        expected.sort_by_key(|e| e.base_offset);
        check_all_reads(&log, &expected).await;
        let log = Rc::try_unwrap(log).unwrap_or_else(|_| panic!("tasks hold no log"));
        log.close().await.unwrap();
        let log = Log::open(config).await.unwrap();
        check_all_reads(&log, &expected).await;
        log.close().await.unwrap();
    });
}
