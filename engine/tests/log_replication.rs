//! The log primitives replication rests on, on real segment files: a follower's copy of the
//! leader's batches is byte for byte the leader's (offsets, times and checksums as stored);
//! batches that do not continue the log or fail their checksums are refused whole; a
//! divergent tail is cut at a batch boundary, durably; and the leader-epoch journal tells a
//! returning replica where its log and the new leader's part.

mod log_common;

use std::path::Path;

use bytes::Bytes;
use engine::{
    FlushMode, Log, LogConfig, LogError,
    log::{EpochStart, epochs::EpochError},
};
use log_common::*;
use protocol::record::CRC_START;

fn config(dir: &Path, flush: FlushMode) -> LogConfig {
    let mut config = LogConfig::new(dir);
    config.segment_bytes_max = 3_000;
    config.index_interval_bytes = 250;
    config.tail_cache_bytes = 0;
    config.flush = flush;
    config.offset_reservation = false;
    config
}

fn sync(dir: &Path) -> LogConfig {
    config(dir, FlushMode::Sync)
}

fn epoch(epoch: u64, start_offset: u64) -> EpochStart {
    EpochStart {
        epoch,
        start_offset,
    }
}

/// Appends `count` batches of 1-3 records with values seeded from `seed`.
async fn fill(log: &Log, count: u32, seed: u8, expected: &mut Vec<Expected>) {
    for i in 0..count {
        let value_len = 100 + (i as usize * 7) % 200;
        append(
            log,
            batch(1 + i % 3, value_len, seed.wrapping_add(i as u8)),
            expected,
        )
        .await;
    }
}

/// Every stored batch of `log`, from its start.
async fn all_batches(log: &Log) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut offset = log.start_offset();
    while offset < log.next_offset() {
        let got = log.read(offset, 1 << 20).await.expect("read");
        offset = protocol::record::BatchHeader::decode(got.last().unwrap())
            .unwrap()
            .next_offset();
        out.extend(got);
    }
    out
}

/// What a follower does per fetch: copy what the leader holds past the follower's end, with
/// the epochs that began in it, and wait until it is durable.
async fn copy(leader: &Log, follower: &Log, max_bytes: usize) -> u64 {
    let mut copied = 0;
    while follower.next_offset() < leader.next_offset() {
        let batches = leader
            .read(follower.next_offset(), max_bytes)
            .await
            .unwrap();
        let appended = follower.append_replicated(&batches).await.unwrap().unwrap();
        for start in leader.epochs().from_offset(appended.base_offset) {
            if start.start_offset <= follower.next_offset() {
                follower.record_epoch(start).await.unwrap();
            }
        }
        follower.wait_durable(appended.next_offset).await.unwrap();
        copied += appended.next_offset - appended.base_offset;
    }
    copied
}

#[test]
fn a_follower_copies_the_leaders_batches_byte_for_byte() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (ld, fd) = (dirs[0].path().to_owned(), dirs[1].path().to_owned());
    run(move || async move {
        let leader = Log::open(sync(&ld)).await.unwrap();
        leader.record_epoch(epoch(1, 0)).await.unwrap();
        let mut expected = Vec::new();
        fill(&leader, 40, 1, &mut expected).await;
        let follower = Log::open(config(
            &fd,
            FlushMode::Async {
                interval_ms: 5,
                bytes: 4096,
            },
        ))
        .await
        .unwrap();
        // Small fetches: many calls, some ending mid-segment.
        let copied = copy(&leader, &follower, 700).await;
        assert_eq!(copied, leader.next_offset());
        assert!(follower.segment_count() >= 5, "the copy rolls segments too");
        check_all_reads(&follower, &expected).await;
        assert_eq!(all_batches(&follower).await, all_batches(&leader).await);
        assert_eq!(follower.epochs(), leader.epochs());

        // More on the leader, copied after the follower reopened from disk.
        follower.close().await.unwrap();
        fill(&leader, 10, 50, &mut expected).await;
        let follower = Log::open(sync(&fd)).await.unwrap();
        assert_eq!(follower.epochs(), leader.epochs(), "the epochs are durable");
        copy(&leader, &follower, 1 << 20).await;
        check_all_reads(&follower, &expected).await;
        assert_eq!(all_batches(&follower).await, all_batches(&leader).await);
        follower.close().await.unwrap();
        leader.close().await.unwrap();
    });
}

#[test]
fn batches_that_do_not_continue_the_log_or_fail_their_checksums_are_refused_whole() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (ld, fd) = (dirs[0].path().to_owned(), dirs[1].path().to_owned());
    run(move || async move {
        let leader = Log::open(sync(&ld)).await.unwrap();
        let mut expected = Vec::new();
        fill(&leader, 6, 1, &mut expected).await;
        let batches = leader.read(0, 1 << 20).await.unwrap();
        assert_eq!(batches.len(), 6);
        let follower = Log::open(sync(&fd)).await.unwrap();

        let skipped_one = follower.append_replicated(&batches[1..]).await;
        assert!(
            matches!(
                skipped_one,
                Err(LogError::OutOfSequence {
                    expected: 0,
                    found
                }) if found == expected[1].base_offset
            ),
            "{skipped_one:?}"
        );
        // A gap in the middle of the call refuses it all.
        let gapped = [batches[0].clone(), batches[2].clone()];
        assert!(matches!(
            follower.append_replicated(&gapped).await,
            Err(LogError::OutOfSequence { .. })
        ));
        assert_eq!(follower.next_offset(), 0, "nothing was appended");

        // A flipped payload byte, and a relabelled offset: both fail the batch checksum (the
        // stamp is covered), so a follower never stores what the leader did not.
        let mut damaged = batches[0].to_vec();
        let last = damaged.len() - 1;
        damaged[last] ^= 0x40;
        let mut relabelled = batches[1].to_vec();
        relabelled[8] ^= 1;
        for (bad, what) in [(damaged, "payload"), (relabelled, "offset")] {
            let result = follower.append_replicated(&[Bytes::from(bad)]).await;
            assert!(
                matches!(result, Err(LogError::InvalidBatch { .. })),
                "{what}: {result:?}"
            );
        }
        assert_eq!(follower.next_offset(), 0);
        assert_eq!(follower.append_replicated(&[]).await.unwrap(), None);

        let appended = follower.append_replicated(&batches).await.unwrap().unwrap();
        assert_eq!(
            (appended.base_offset, appended.next_offset),
            (0, leader.next_offset())
        );
        follower.wait_durable(appended.next_offset).await.unwrap();
        assert_eq!(follower.synced_offset(), leader.next_offset());
        check_all_reads(&follower, &expected).await;
        // Time and checksum as the leader stored them: not restamped.
        assert_eq!(all_batches(&follower).await, batches);
        assert_eq!(
            &batches[0][CRC_START..],
            &all_batches(&follower).await[0][CRC_START..]
        );
        follower.close().await.unwrap();
        leader.close().await.unwrap();
    });
}

#[test]
fn a_cut_removes_the_tail_at_a_batch_boundary_durably() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    run(move || async move {
        let log = Log::open(sync(&d)).await.unwrap();
        let mut expected = Vec::new();
        fill(&log, 40, 1, &mut expected).await;
        let segments = log.segment_count();
        assert!(segments >= 5);
        let end = log.next_offset();

        // Refused: inside a batch, outside the log.
        let inside = expected
            .iter()
            .find(|e| e.next_offset - e.base_offset > 1)
            .unwrap();
        let refused = log.truncate_to(inside.base_offset + 1).await;
        assert!(
            matches!(refused, Err(LogError::Truncate { .. })),
            "{refused:?}"
        );
        assert!(matches!(
            log.truncate_to(end + 1).await,
            Err(LogError::Truncate { .. })
        ));
        assert_eq!(log.next_offset(), end, "a refused cut changes nothing");
        check_all_reads(&log, &expected).await;

        // A boundary in the middle of a segment.
        let cut = expected[25].base_offset;
        log.truncate_to(cut).await.unwrap();
        assert_eq!(log.next_offset(), cut);
        assert!(log.segment_count() < segments);
        expected.truncate(25);
        check_all_reads(&log, &expected).await;
        // The log goes on from the cut with other batches, and keeps them over a reopen.
        fill(&log, 5, 90, &mut expected).await;
        log.close().await.unwrap();
        let log = Log::open(sync(&d)).await.unwrap();
        check_all_reads(&log, &expected).await;

        // A cut at the very start of the log keeps its end (an empty segment holds it).
        let start = log.start_offset();
        log.truncate_to(start).await.unwrap();
        assert_eq!(log.next_offset(), start);
        log.close().await.unwrap();
        let log = Log::open(sync(&d)).await.unwrap();
        assert_eq!(log.next_offset(), start, "the cut is durable");
        fill(&log, 2, 7, &mut Vec::new()).await;
        log.close().await.unwrap();
    });
}

#[test]
fn a_returning_replica_cuts_its_divergent_tail_and_converges_on_the_new_leader() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (ad, bd) = (dirs[0].path().to_owned(), dirs[1].path().to_owned());
    run(move || async move {
        // Epoch 1: A leads and B copies.
        let a = Log::open(sync(&ad)).await.unwrap();
        a.record_epoch(epoch(1, 0)).await.unwrap();
        let mut expected = Vec::new();
        fill(&a, 12, 1, &mut expected).await;
        let b = Log::open(sync(&bd)).await.unwrap();
        copy(&a, &b, 1 << 20).await;
        let committed = b.next_offset();

        // A appends more that B never gets (never acknowledged with acks=all), then is lost.
        fill(&a, 4, 30, &mut Vec::new()).await;
        let a_end = a.next_offset();
        a.close().await.unwrap();

        // Epoch 2: B leads from its end and appends other batches at those same offsets.
        b.record_epoch(epoch(2, b.next_offset())).await.unwrap();
        fill(&b, 6, 60, &mut expected).await;
        assert_eq!(b.epochs().starts(), &[epoch(1, 0), epoch(2, committed)]);

        // A returns: its last epoch is 1; the leader says epoch 1 ended at `committed`.
        let a = Log::open(sync(&ad)).await.unwrap();
        assert_eq!(a.next_offset(), a_end);
        let last = a.epochs().latest().unwrap().epoch;
        let (found, end) = b.epochs().end_of(last, b.next_offset()).unwrap();
        assert_eq!((found, end), (1, committed));
        a.truncate_to(end.min(a.next_offset())).await.unwrap();
        assert_eq!(a.next_offset(), committed);
        copy(&b, &a, 900).await;
        assert_eq!(all_batches(&a).await, all_batches(&b).await);
        assert_eq!(a.epochs(), b.epochs());
        check_all_reads(&a, &expected).await;
        a.close().await.unwrap();
        let a = Log::open(sync(&ad)).await.unwrap();
        assert_eq!(a.epochs(), b.epochs());
        check_all_reads(&a, &expected).await;
        a.close().await.unwrap();
        b.close().await.unwrap();
    });
}

#[test]
fn epochs_only_grow_and_never_outlive_their_batches() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    run(move || async move {
        let log = Log::open(sync(&d)).await.unwrap();
        assert!(log.epochs().starts().is_empty());
        log.record_epoch(epoch(1, 0)).await.unwrap();
        assert!(!log.record_epoch(epoch(1, 0)).await.unwrap(), "told twice");
        let mut expected = Vec::new();
        fill(&log, 8, 1, &mut expected).await;
        let end = log.next_offset();
        let refused = log.record_epoch(epoch(2, end + 1)).await;
        assert!(
            matches!(
                refused,
                Err(LogError::Epoch {
                    source: EpochError::BeyondEnd { .. }
                })
            ),
            "{refused:?}"
        );
        assert!(matches!(
            log.record_epoch(epoch(0, end)).await,
            Err(LogError::Epoch {
                source: EpochError::OutOfOrder { .. }
            })
        ));
        log.record_epoch(epoch(3, end)).await.unwrap();

        // A cut below where epoch 3 began forgets it.
        let cut = expected[5].base_offset;
        log.truncate_to(cut).await.unwrap();
        assert_eq!(log.epochs().starts(), &[epoch(1, 0)]);
        log.record_epoch(epoch(4, cut)).await.unwrap();
        log.close().await.unwrap();

        // The tail batch torn off on disk (a crash before its sync): epoch 4 began at the old
        // end, so open forgets it too, durably.
        let log = Log::open(sync(&d)).await.unwrap();
        assert_eq!(log.epochs().starts(), &[epoch(1, 0), epoch(4, cut)]);
        fill(&log, 1, 9, &mut Vec::new()).await;
        log.record_epoch(epoch(5, log.next_offset())).await.unwrap();
        let tail = log.next_offset();
        log.close().await.unwrap();
        // Torn: cut the last batch's bytes off the newest segment, no clean-close record.
        std::fs::remove_file(engine::file::closed_path(&d)).unwrap();
        let newest = std::fs::read_dir(&d)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".log"))
            .max()
            .unwrap();
        let path = d.join(newest);
        let bytes = std::fs::read(&path).unwrap();
        let mut last = 0;
        let mut at = 0;
        while at + 48 <= bytes.len() {
            let header = protocol::record::BatchHeader::decode(&bytes[at..]).unwrap();
            if header.batch_len == 0 {
                break;
            }
            last = at;
            at += header.batch_len as usize;
        }
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(last as u64 + 20).unwrap();
        drop(f);
        let log = Log::open(sync(&d)).await.unwrap();
        assert!(log.next_offset() < tail);
        assert_eq!(log.epochs().latest().map(|e| e.epoch), Some(4));
        log.close().await.unwrap();
        let log = Log::open(sync(&d)).await.unwrap();
        assert_eq!(log.epochs().latest().map(|e| e.epoch), Some(4), "durably");
        log.close().await.unwrap();
    });
}
