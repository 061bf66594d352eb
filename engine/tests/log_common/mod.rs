//! Helpers shared by the log tests.
#![allow(dead_code)]

use std::future::Future;

use bytes::{Bytes, BytesMut};
use engine::{Log, Storage};
use glommio::LocalExecutorBuilder;
use protocol::record::{
    BATCH_LEN_MAX, BatchBuilder, BatchHeader, BatchView, CRC_START, MessageType, Record, stamp,
};

/// Runs `f` on a fresh glommio executor and waits for it.
pub fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::default()
        .spawn(f)
        .expect("spawn executor")
        .join()
        .expect("executor thread");
}

/// A valid batch of `records` records whose values are `value_len` bytes of `seed`.
pub fn batch(records: u32, value_len: usize, seed: u8) -> BytesMut {
    let value = vec![seed; value_len];
    let mut builder = BatchBuilder::new(BATCH_LEN_MAX);
    for i in 0..records {
        builder
            .push(&Record {
                timestamp_ms: 1_700_000_000_000 + i64::from(i),
                message_type: MessageType::Event,
                key: b"k",
                properties: &[],
                value: &value,
            })
            .expect("push record");
    }
    BytesMut::from(&builder.finish().expect("non-empty")[..])
}

/// What a test appended: stamped base offset and the unstamped bytes.
#[derive(Clone, Debug)]
pub struct Expected {
    pub base_offset: u64,
    pub next_offset: u64,
    pub bytes: Bytes,
}

/// Appends and remembers what was appended.
pub async fn append<S: Storage>(log: &Log<S>, b: BytesMut, expected: &mut Vec<Expected>) {
    let bytes = Bytes::copy_from_slice(&b);
    let appended = log.append(b).await.expect("append");
    expected.push(Expected {
        base_offset: appended.base_offset,
        next_offset: appended.next_offset,
        bytes,
    });
}

/// Checks that a read batch is the expected one: byte for byte the appended batch as the log
/// stamped it (its offset, its append time, and the checksum completed with them).
pub fn same_batch(got: &[u8], want: &Expected) {
    let view = BatchView::parse(got, BATCH_LEN_MAX).expect("read batch parses");
    assert_eq!(view.base_offset(), want.base_offset);
    assert_eq!(view.next_offset(), want.next_offset);
    assert_eq!(&got[CRC_START..], &want.bytes[CRC_START..]);
    let mut stamped = want.bytes.to_vec();
    stamp(&mut stamped, want.base_offset, view.header().append_time_ms).expect("stamp");
    assert_eq!(got, &stamped[..]);
}

/// The expected batches that a log recovered to `next_offset` holds; `next_offset` must be a
/// batch boundary.
pub fn prefix(expected: &[Expected], next_offset: u64) -> &[Expected] {
    let kept = expected.partition_point(|e| e.next_offset <= next_offset);
    let end = kept.checked_sub(1).map_or(0, |i| expected[i].next_offset);
    assert_eq!(end, next_offset, "recovered inside a batch");
    &expected[..kept]
}

/// Where the log recovered to: the end of its last surviving batch. Past it the log may
/// continue after a recorded gap (the offset reservation of `Async` mode).
pub fn recovered_end<S: Storage>(log: &Log<S>) -> u64 {
    log.recovery_report()
        .skipped_at_open
        .map_or(log.next_offset(), |r| r.from)
}

/// Whether the log's skipped ranges cover every offset in `[from, to)`.
pub fn gap_is_recorded<S: Storage>(log: &Log<S>, from: u64, to: u64) -> bool {
    let mut ranges: Vec<_> = log
        .skipped_ranges()
        .iter()
        .map(|r| (r.from, r.to))
        .collect();
    ranges.sort_unstable();
    let mut at = from;
    for (start, end) in ranges {
        if start <= at && end > at {
            at = end;
        }
    }
    at >= to
}

/// Reads at every offset and checks the first batch returned contains it (or, for an offset
/// in a recorded gap, is the first batch after it), then reads the whole log in chunks and
/// compares it with `expected`.
pub async fn check_all_reads<S: Storage>(log: &Log<S>, expected: &[Expected]) {
    let start = log.start_offset();
    let first = expected.partition_point(|e| e.next_offset <= start);
    let expected = &expected[first..];
    let end = expected.last().map_or(start, |e| e.next_offset);
    assert!(
        log.next_offset() == end || gap_is_recorded(log, end, log.next_offset()),
        "the log ends at {}, the expected batches at {end}, and no skipped range records the \
         gap: {:?}",
        log.next_offset(),
        log.skipped_ranges()
    );
    let mut i = 0;
    for offset in start..end {
        while expected[i].next_offset <= offset {
            i += 1;
        }
        if offset < expected[i].base_offset {
            let from = expected[i - 1].next_offset;
            assert!(
                gap_is_recorded(log, from, expected[i].base_offset),
                "offset {offset} lies in an unrecorded gap"
            );
        }
        let got = log.read(offset, 1).await.expect("read");
        assert_eq!(got.len(), 1, "offset {offset}");
        same_batch(&got[0], &expected[i]);
    }
    let mut offset = start;
    let mut i = 0;
    while offset < end {
        let got = log.read(offset, 3000).await.expect("read");
        assert!(!got.is_empty());
        for b in got {
            same_batch(&b, &expected[i]);
            i += 1;
            offset = BatchHeader::decode(&b).unwrap().next_offset();
        }
    }
    assert_eq!(i, expected.len());
    assert!(log.read(end, 100).await.unwrap().is_empty());
    assert!(log.read(log.next_offset(), 100).await.unwrap().is_empty());
}
