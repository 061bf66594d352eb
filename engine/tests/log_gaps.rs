//! Offset gaps: an `Async` log never hands out an offset it acknowledged before a crash (the
//! offset reservation), every gap is recorded in the skipped journal, and reads across a gap
//! serve every surviving batch in order.

mod log_common;

use std::path::Path;

use engine::{
    FlushMode, Log, LogConfig, LogError, file,
    log::{SkipReason, damage::FoundBy, reservation},
    testing::FaultyStorage,
};
use log_common::*;

fn config(dir: &Path, flush: FlushMode) -> LogConfig {
    let mut config = LogConfig::new(dir);
    config.segment_bytes_max = 3_000;
    config.index_interval_bytes = 250;
    config.tail_cache_bytes = 0;
    config.flush = flush;
    config
}

/// Never syncs on its own within a test: only what the test flushes (and the committer's
/// streaming) is durable.
fn quiet_async() -> FlushMode {
    FlushMode::Async {
        interval_ms: 3_600_000,
        bytes: 1 << 30,
    }
}

/// The reservation limit a power loss would leave on disk now.
fn durable_limit(storage: &FaultyStorage, dir: &Path) -> u64 {
    let bytes = storage
        .synced_contents(&file::reservation_path(dir))
        .expect("an async log has a reservation file");
    reservation::current(&bytes)
        .expect("the reservation is readable")
        .expect("the reservation was written")
        .limit
}

#[test]
fn async_acks_stay_below_the_durable_reservation() {
    run(|| async {
        let storage = FaultyStorage::new();
        let dir = Path::new("/q");
        let log = Log::open_with(storage.clone(), config(dir, quiet_async()))
            .await
            .unwrap();
        // Past several minimum steps, so the committer raises the limit while appends run.
        let mut acked = 0;
        while acked < 3 * engine::log::config::RESERVE_STEP_OFFSETS_MIN {
            let appended = log.append(batch(500, 0, 1)).await.unwrap();
            acked = appended.next_offset;
            let limit = durable_limit(&storage, dir);
            assert!(
                acked <= limit,
                "offset {} acknowledged above the durable reservation {limit}",
                acked - 1
            );
        }
        log.close().await.unwrap();
        // A clean close lowers the limit to the end: the next open continues without a gap.
        assert_eq!(durable_limit(&storage, dir), acked);
        let log = Log::open_with(storage.clone(), config(dir, quiet_async()))
            .await
            .unwrap();
        assert_eq!(log.next_offset(), acked);
        assert!(log.skipped_ranges().is_empty());
        assert_eq!(log.recovery_report().skipped_at_open, None);
        log.close().await.unwrap();
    });
}

#[test]
fn async_crash_skips_past_every_acknowledged_offset_and_records_the_gap() {
    run(|| async {
        let storage = FaultyStorage::new();
        let dir = Path::new("/q");
        let log = Log::open_with(storage.clone(), config(dir, quiet_async()))
            .await
            .unwrap();
        let mut expected = Vec::new();
        for i in 0..20u32 {
            append(&log, batch(1 + i % 3, 100, i as u8), &mut expected).await;
        }
        log.flush().await.unwrap();
        let flushed = log.next_offset();
        for i in 0..30u32 {
            append(&log, batch(1 + i % 4, 120, 0x80 | i as u8), &mut expected).await;
        }
        let acked = log.next_offset();
        assert!(log.synced_offset() < acked, "the tail is not synced yet");
        drop(log);
        // Power loss: only synced bytes survive.
        storage.crash(|_, _| 0);

        let log = Log::open_with(storage.clone(), config(dir, quiet_async()))
            .await
            .unwrap();
        let end = recovered_end(&log);
        assert!(end >= flushed && end <= acked, "recovered to {end}");
        assert!(
            log.next_offset() >= acked,
            "the log continues at {}, reusing acknowledged offsets below {acked}",
            log.next_offset()
        );
        let skipped = log.skipped_ranges().to_vec();
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert_eq!(
            (skipped[0].from, skipped[0].to, skipped[0].reason),
            (end, log.next_offset(), SkipReason::UnsyncedAtCrash)
        );
        assert_eq!(log.recovery_report().skipped_at_open, Some(skipped[0]));
        assert!(log.recovery_report().unrecorded_gaps.is_empty());
        // Nothing after the gap yet: a read in it is empty, like a read at the end.
        assert!(log.read(end, 1000).await.unwrap().is_empty());

        // New appends land after the gap, in a new segment; reads across it deliver every
        // surviving batch in order and jump over the gap.
        let mut surviving = prefix(&expected, end).to_vec();
        let gap_end = log.next_offset();
        for i in 0..10u32 {
            append(&log, batch(2, 90, 0x40 | i as u8), &mut surviving).await;
        }
        assert_eq!(surviving[surviving.len() - 10].base_offset, gap_end);
        check_all_reads(&log, &surviving).await;
        let in_gap = log.read(end + (gap_end - end) / 2, 1).await.unwrap();
        assert_eq!(in_gap.len(), 1);
        same_batch(&in_gap[0], &surviving[surviving.len() - 10]);
        log.close().await.unwrap();

        // The gap stays recorded and recovery accepts it.
        let log = Log::open_with(storage.clone(), config(dir, quiet_async()))
            .await
            .unwrap();
        assert_eq!(log.skipped_ranges(), &skipped[..]);
        assert!(log.recovery_report().unrecorded_gaps.is_empty());
        check_all_reads(&log, &surviving).await;
        log.close().await.unwrap();
    });
}

#[test]
fn an_empty_async_log_that_crashes_starts_after_the_gap() {
    run(|| async {
        let storage = FaultyStorage::new();
        let dir = Path::new("/q");
        let log = Log::open_with(storage.clone(), config(dir, quiet_async()))
            .await
            .unwrap();
        let mut expected = Vec::new();
        for i in 0..5u32 {
            append(&log, batch(2, 10, i as u8), &mut expected).await;
        }
        drop(log);
        storage.crash(|_, _| 0);
        let log = Log::open_with(storage.clone(), config(dir, quiet_async()))
            .await
            .unwrap();
        assert_eq!(recovered_end(&log), 0);
        assert!(log.next_offset() >= 10);
        assert_eq!(log.start_offset(), log.next_offset());
        let mut after = Vec::new();
        append(&log, batch(1, 10, 9), &mut after).await;
        check_all_reads(&log, &after).await;
        log.close().await.unwrap();
    });
}

#[test]
fn a_sync_log_honours_a_reservation_left_by_async_mode() {
    run(|| async {
        let storage = FaultyStorage::new();
        let dir = Path::new("/q");
        let log = Log::open_with(storage.clone(), config(dir, quiet_async()))
            .await
            .unwrap();
        let mut expected = Vec::new();
        for i in 0..8u32 {
            append(&log, batch(3, 50, i as u8), &mut expected).await;
        }
        let acked = log.next_offset();
        drop(log);
        storage.crash(|_, _| 0);
        let log = Log::open_with(storage.clone(), config(dir, FlushMode::Sync))
            .await
            .unwrap();
        assert!(log.next_offset() >= acked);
        assert_eq!(log.skipped_ranges().len(), 1);
        let mut after = prefix(&expected, recovered_end(&log)).to_vec();
        append(&log, batch(1, 10, 7), &mut after).await;
        check_all_reads(&log, &after).await;
        log.close().await.unwrap();
    });
}

#[test]
fn a_missing_segment_is_an_unrecorded_gap_and_damage() {
    run(|| async {
        let storage = FaultyStorage::new();
        let dir = Path::new("/q");
        let log = Log::open_with(storage.clone(), config(dir, FlushMode::Sync))
            .await
            .unwrap();
        let mut expected = Vec::new();
        for i in 0..40u32 {
            append(&log, batch(2, 200, i as u8), &mut expected).await;
        }
        log.close().await.unwrap();
        let bases: Vec<u64> = storage
            .paths()
            .iter()
            .filter_map(|p| file::parse_segment_file_name(p.file_name()?.to_str()?))
            .filter(|(_, kind)| *kind == file::SegmentFileKind::Log)
            .map(|(base, _)| base)
            .collect();
        assert!(bases.len() >= 4, "{bases:?}");
        let (missing, next) = (bases[1], bases[2]);
        storage.delete_file(&file::log_path(dir, missing));
        storage.delete_file(&file::index_path(dir, missing));
        let log = Log::open_with(storage.clone(), config(dir, FlushMode::Sync))
            .await
            .unwrap();
        assert_eq!(log.recovery_report().unrecorded_gaps, vec![(missing, next)]);
        // The hole is damage: nothing at or past it is served (that would skip the missing
        // records silently) until `log repair` records the skip; what precedes it still is.
        let damage = log.damage().expect("a missing segment is damage");
        assert_eq!(
            (damage.offset, damage.found_by),
            (missing, FoundBy::Recovery)
        );
        for offset in [missing, next] {
            assert!(matches!(
                log.read(offset, 1).await,
                Err(LogError::Damaged { .. })
            ));
        }
        let first = log.read(0, 1).await.unwrap();
        same_batch(&first[0], &expected[0]);
        log.close().await.unwrap();
    });
}

#[test]
fn a_failed_reservation_write_poisons_the_log_and_no_ack_passes_the_durable_limit() {
    run(|| async {
        let storage = FaultyStorage::new();
        let dir = Path::new("/q");
        // One segment: no roll seals (and fdatasyncs) anything.
        let mut big = config(dir, quiet_async());
        big.segment_bytes_max = 1 << 30;
        let log = Log::open_with(storage.clone(), big.clone()).await.unwrap();
        let first_limit = durable_limit(&storage, dir);
        // Quiet async mode syncs nothing on its own: the next fdatasync is the raise, due once
        // half the first step is used. Appends that never wait run ahead of the committer
        // until they reach the limit, and must stop there.
        storage.fail_fdatasync_after(0);
        let mut acked = 0;
        let error = loop {
            match log.append(batch(500, 0, 3)).await {
                Ok(appended) => acked = appended.next_offset,
                Err(e) => break e,
            }
        };
        assert!(
            matches!(error, engine::LogError::Poisoned { .. }),
            "{error:?}"
        );
        assert!(
            acked <= first_limit,
            "acked {acked} past the durable limit {first_limit}"
        );
        assert!(
            acked > first_limit / 2,
            "the raise was due before it failed: {acked}"
        );
        drop(log);
        storage.crash(|_, _| 0);
        let log = Log::open_with(storage.clone(), big).await.unwrap();
        assert!(log.next_offset() >= acked);
        log.close().await.unwrap();
    });
}

#[test]
fn an_unreadable_reservation_refuses_the_open_rather_than_guess() {
    run(|| async {
        let storage = FaultyStorage::new();
        let dir = Path::new("/q");
        let log = Log::open_with(storage.clone(), config(dir, quiet_async()))
            .await
            .unwrap();
        log.close().await.unwrap();
        let path = file::reservation_path(dir);
        let mut bytes = storage.file_contents(&path).unwrap();
        for b in bytes.iter_mut().step_by(7) {
            *b ^= 0x5A;
        }
        storage.set_file_contents(&path, bytes);
        let refused = Log::open_with(storage.clone(), config(dir, quiet_async())).await;
        match refused {
            Err(engine::LogError::Corrupt {
                path: p, reason, ..
            }) => {
                assert_eq!(p, path);
                assert!(reason.contains("remove it"), "{reason}");
            }
            other => panic!(
                "expected a corrupt reservation error, got {:?}",
                other.map(|_| ())
            ),
        }
    });
}
