//! Rebuilding a queue's held state when its held log opens (ARCHITECTURE §13.3, recovery).
//!
//! 1. Read the held log from its start: a held record is pending until a marker names it.
//!    Note where released copies may lie beyond the last marker: after the last fired or
//!    committed marker's queue offset, or a base marker's.
//! 2. Scan the queue from there to its end for copies whose `HELD_ORIGIN` is still pending:
//!    released before a crash that lost their marker. They get their marker now, and are
//!    not released again.
//! 3. Append those markers and a base marker at the queue's end, so the next recovery scans
//!    only what is appended after this open.
//! 4. Schedule what is still pending: delayed records at their time, halves at their
//!    append time plus the check interval (checks sent before a restart are not counted).

use std::rc::Rc;

use protocol::codes::Status;
use protocol::record::{BATCH_LEN_MAX, BatchView};

use super::marker::{Marker, NO_ORIGIN, Outcome};
use super::release::append_markers;
use super::{Entry, Held, Queue};
use crate::error::Reject;
use crate::log::Log;
use crate::shard::Shard;

/// Bytes read at once while recovering.
const READ_BYTES: usize = 4 << 20;

/// See the module docs.
pub(super) async fn recover(
    shard: &Rc<Shard>,
    queue: &Rc<Queue>,
    held: &Held,
) -> Result<(), Reject> {
    let interval_ms = shard.config.held.check_interval_ms;
    let mut entries: Vec<Entry> = Vec::new();
    let mut scan_from: Option<u64> = None;
    // Step 1.
    let mut offset = held.log.start_offset();
    let end = held.log.next_offset();
    while offset < end {
        let batches = held.log.read(offset, READ_BYTES).await?;
        if batches.is_empty() {
            break;
        }
        let mut state = held.state.borrow_mut();
        for batch in &batches {
            let view = BatchView::parse(batch, BATCH_LEN_MAX)
                .map_err(|e| Reject::new(Status::DataDamaged, format!("held log: {e}")))?;
            offset = view.next_offset();
            let appended_ms = view.header().append_time_ms.max(0) as u64;
            for record in view.records() {
                let marker =
                    Marker::of(&record).map_err(|e| Reject::new(Status::DataDamaged, e))?;
                if let Some(marker) = marker {
                    let after = match marker.outcome {
                        Outcome::Base => Some(marker.queue_offset),
                        Outcome::Fired | Outcome::Committed => Some(marker.queue_offset + 1),
                        Outcome::Cancelled | Outcome::RolledBack => None,
                    };
                    if let Some(after) = after {
                        scan_from = Some(scan_from.map_or(after, |s| s.max(after)));
                    }
                    if marker.origin != NO_ORIGIN {
                        state.pending.remove(marker.origin);
                        state.halves.remove(&marker.origin);
                    }
                    continue;
                }
                let due_ms = if let Some(due) = record.deliver_at_ms() {
                    due
                } else if record.txn_group().is_some() {
                    state.halves.insert(record.offset(), 0);
                    appended_ms.saturating_add(interval_ms)
                } else {
                    log::warn!(
                        "{}/{}: held record {} is neither delayed nor half; left alone",
                        queue.topic,
                        queue.id,
                        record.offset()
                    );
                    continue;
                };
                state.pending.insert(record.offset());
                entries.push(Entry {
                    due_ms,
                    offset: record.offset(),
                });
            }
        }
        // Settled entries go as they are found, so this stays near the pending count.
        if entries.len() > 2 * state.pending.len() as usize + (1 << 20) {
            entries.retain(|e| state.pending.contains(e.offset));
        }
    }
    // Step 2.
    let from = scan_from.unwrap_or(0).max(queue.log.start_offset());
    let queue_end = queue.log.next_offset();
    let mut markers = released_copies(&queue.log, from, queue_end, held).await?;
    let found = markers.len();
    // Step 3.
    markers.push(Marker {
        origin: NO_ORIGIN,
        outcome: Outcome::Base,
        queue_offset: queue_end,
    });
    append_markers(held, &markers).await?;
    // Step 4.
    let state = &mut *held.state.borrow_mut();
    let mut pending = 0u64;
    for entry in entries {
        if state.pending.contains(entry.offset) {
            state.wheel.insert(entry);
            pending += 1;
        }
    }
    if pending > 0 || found > 0 {
        log::info!(
            "{}/{}: {pending} held messages recovered ({} halves); {found} released before \
             a crash got their outcome now",
            queue.topic,
            queue.id,
            state.halves.len()
        );
    }
    Ok(())
}

/// Markers for the copies in `log` between `from` and `end` whose origin is still pending.
async fn released_copies(
    log: &Log,
    from: u64,
    end: u64,
    held: &Held,
) -> Result<Vec<Marker>, Reject> {
    let mut markers = Vec::new();
    let mut offset = from;
    while offset < end {
        let batches = log.read(offset, READ_BYTES).await?;
        if batches.is_empty() {
            break;
        }
        let state = held.state.borrow();
        for batch in &batches {
            let view = BatchView::parse(batch, BATCH_LEN_MAX)
                .map_err(|e| Reject::new(Status::DataDamaged, format!("queue: {e}")))?;
            offset = view.next_offset();
            for record in view.records() {
                let Some(origin) = record.held_origin() else {
                    continue;
                };
                if !state.pending.contains(origin) {
                    continue;
                }
                let outcome = if state.halves.contains_key(&origin) {
                    Outcome::Committed
                } else {
                    Outcome::Fired
                };
                markers.push(Marker {
                    origin,
                    outcome,
                    queue_offset: record.offset(),
                });
            }
        }
    }
    Ok(markers)
}
