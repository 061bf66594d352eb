//! Releasing held records into their queue, and writing outcome markers.
//!
//! The order is what makes a release happen once across crashes (ARCHITECTURE §13.3):
//! 1. the held records are durable (fdatasynced) before they are read for release;
//! 2. their copies are appended to the queue, each with `HELD_ORIGIN`, and fdatasynced;
//! 3. only then the markers are appended to the held log.
//!
//! A crash after 2 and before 3 leaves copies without markers; recovery finds them by their
//! origin and writes the missing markers instead of releasing again. Callers hold the held
//! lock, so releases of one queue never interleave and markers follow copies in order.

use std::rc::Rc;

use bytes::BytesMut;
use protocol::record::{BATCH_LEN_MAX, BatchBuilder, BatchView, Property, Record, RecordView};

use super::marker::{Marker, Outcome};
use super::{Held, Queue};
use crate::error::Reject;
use crate::log::{Log, LogError};
use crate::shard::Shard;

/// Bytes read from the held log at once when collecting records to release.
const READ_BYTES: usize = 1 << 20;

/// Calls `each` with every record of `log` at `offsets` (ascending), reading from the log;
/// offsets that hold no record (a gap) are passed over.
pub(super) async fn for_each_record(
    log: &Log,
    offsets: &[u64],
    mut each: impl FnMut(&RecordView<'_>, i64),
) -> Result<(), LogError> {
    let mut i = 0;
    while i < offsets.len() {
        let batches = log.read(offsets[i], READ_BYTES).await?;
        let Some(last) = batches.last() else {
            break;
        };
        let end = BatchView::parse(last, BATCH_LEN_MAX)
            .map(|v| v.next_offset())
            .unwrap_or(offsets[i] + 1);
        for batch in &batches {
            // Verified by the read; parsed again only to walk it.
            let Ok(view) = BatchView::parse(batch, BATCH_LEN_MAX) else {
                continue;
            };
            let appended_ms = view.header().append_time_ms;
            for record in view.records() {
                while i < offsets.len() && offsets[i] < record.offset() {
                    i += 1;
                }
                if i < offsets.len() && offsets[i] == record.offset() {
                    each(&record, appended_ms);
                    i += 1;
                }
            }
        }
        while i < offsets.len() && offsets[i] < end {
            i += 1;
        }
    }
    Ok(())
}

/// The copy of a held record as it enters the queue: its key, value, time and properties,
/// less `TXN_GROUP` (a committed half is an ordinary message), plus `HELD_ORIGIN`. A delayed
/// message keeps its `DELIVER_AT_MS`, so consumers see when it was due.
fn push_copy(builder: &mut BatchBuilder, record: &RecordView<'_>) -> Result<(), String> {
    let mut properties: Vec<Property<'_>> = record
        .properties()
        .filter_map(Result::ok)
        .filter(|p| !matches!(p, Property::TxnGroup(_)))
        .collect();
    properties.push(Property::HeldOrigin(record.offset()));
    builder
        .push(&Record {
            timestamp_ms: record.timestamp_ms(),
            message_type: record.message_type(),
            key: record.key(),
            properties: &properties,
            value: record.value(),
        })
        .map_err(|e| e.to_string())
}

/// Releases the pending records at `offsets` (ascending) into `queue`, then records
/// `outcome` (fired or committed) for each. The caller holds the held lock.
pub(super) async fn release(
    shard: &Rc<Shard>,
    queue: &Rc<Queue>,
    held: &Held,
    offsets: &[u64],
    outcome: Outcome,
) -> Result<(), Reject> {
    let Some(&last) = offsets.last() else {
        return Ok(());
    };
    // Step 1: never release what a crash could take back from the held log.
    held.log.wait_synced(last + 1).await?;
    let batch_len_max = shard.config.limits.batch_len_max;
    let mut batches = Vec::new();
    let mut origins = Vec::with_capacity(offsets.len());
    let mut builder = BatchBuilder::new(batch_len_max);
    let mut failed = None;
    for_each_record(&held.log, offsets, |record, _| {
        if failed.is_some() {
            return;
        }
        if push_copy(&mut builder, record).is_err() {
            // The batch is full: start the next one with this record.
            let full = std::mem::replace(&mut builder, BatchBuilder::new(batch_len_max));
            batches.extend(full.finish());
            if let Err(e) = push_copy(&mut builder, record) {
                failed = Some(e);
                return;
            }
        }
        origins.push(record.offset());
    })
    .await?;
    if let Some(e) = failed {
        return Err(Reject::new(
            protocol::codes::Status::Internal,
            format!("a held record cannot be copied into its queue: {e}"),
        ));
    }
    batches.extend(builder.finish());
    // Step 2: the copies, durable.
    let mut queue_offsets = Vec::with_capacity(origins.len());
    let mut queue_end = None;
    for batch in batches {
        let appended = queue.append(BytesMut::from(&batch[..])).await?;
        queue_offsets.extend(appended.base_offset..appended.next_offset);
        queue_end = Some(appended.next_offset);
    }
    if let Some(end) = queue_end {
        queue.log.wait_synced(end).await?;
    }
    // Step 3: the markers.
    let markers: Vec<Marker> = origins
        .iter()
        .zip(&queue_offsets)
        .map(|(&origin, &queue_offset)| Marker {
            origin,
            outcome,
            queue_offset,
        })
        .collect();
    append_markers(held, &markers).await?;
    Ok(())
}

/// Records `outcome` (cancelled or rolled back) for the pending records at `offsets`:
/// nothing reaches the queue. The caller holds the held lock.
pub(super) async fn settle_without_release(
    held: &Held,
    offsets: &[u64],
    outcome: Outcome,
) -> Result<(), Reject> {
    let markers: Vec<Marker> = offsets
        .iter()
        .map(|&origin| Marker {
            origin,
            outcome,
            queue_offset: 0,
        })
        .collect();
    append_markers(held, &markers).await?;
    Ok(())
}

/// Appends `markers` to the held log and settles them in memory. An acknowledged cancel or
/// rollback is durable by the queue's flush mode, like a produce.
pub(super) async fn append_markers(held: &Held, markers: &[Marker]) -> Result<(), LogError> {
    if markers.is_empty() {
        return Ok(());
    }
    let now_ms = crate::log::now_ms();
    let mut builder = BatchBuilder::new(BATCH_LEN_MAX);
    let mut batches = Vec::new();
    for marker in markers {
        if marker.push_to(&mut builder, now_ms).is_err() {
            let full = std::mem::replace(&mut builder, BatchBuilder::new(BATCH_LEN_MAX));
            batches.extend(full.finish());
            // A marker is tens of bytes: it fits an empty batch.
            let _ = marker.push_to(&mut builder, now_ms);
        }
    }
    batches.extend(builder.finish());
    for batch in batches {
        held.log.append(BytesMut::from(&batch[..])).await?;
    }
    let mut state = held.state.borrow_mut();
    for marker in markers {
        if marker.outcome == Outcome::Base {
            continue;
        }
        state.pending.remove(marker.origin);
        state.halves.remove(&marker.origin);
        state.recent.record(marker.origin, marker.outcome);
        held.stats.count(marker.outcome, 1);
    }
    Ok(())
}
