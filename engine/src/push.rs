//! The push loop of one (subscription, queue): read from the delivered offset, push whole
//! batches while the subscription has credit, wait for appends at the tail.
//!
//! Waits are sequential (credit, then data), never a select over many futures. A batch made
//! only of records past their deadline (requests, or events with a time-to-live, §13.5) is
//! skipped and counted instead of pushed. A queue of a retry topic (§13.2) holds one backoff
//! level, so its records are in due-time order: the loop waits until its next batch is due.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use protocol::record::{
    BATCH_LEN_MAX, BatchHeader, MessageType, Properties, Property, RECORD_HEADER_LEN,
};

use crate::group::Subscription;
use crate::log::LogError;
use crate::metrics::Delivered;
use crate::net::outbox::Outbound;
use crate::queue::Queue;

/// Pushes `queue` to `sub` from `position` until the subscription ends or the task is dropped;
/// what a clustering group is pushed is recorded in `delivered`, to count redeliveries, and
/// each push in `pushes` (the group's ring on this queue, for traces) when there is one.
pub(crate) async fn run(
    sub: Rc<Subscription>,
    queue: Rc<Queue>,
    position: Rc<Cell<u64>>,
    read_bytes: usize,
    delivered: Option<Rc<Delivered>>,
    pushes: Option<crate::trace::PushLog>,
) {
    // One shared name per push task: a ring entry holds a reference, not a copy.
    let client: Rc<str> = Rc::from(sub.client_id.as_str());
    // The damage already reported to this subscriber, by offset: said once, not per wake-up.
    let mut damage_reported = None;
    let retry_queue = protocol::retry::kind(&queue.topic) == protocol::retry::TopicKind::Retry;
    loop {
        // Credit first: a subscription without credit costs nothing but this wait.
        loop {
            if sub.closed.get() {
                return;
            }
            let seen = sub.credit_changed.generation();
            if sub.credit.get() > 0 {
                break;
            }
            sub.credit_changed.wait(seen).await;
        }
        let seen = queue.appended.generation();
        let offset = position.get();
        let batches = match queue.log.read(offset, read_bytes).await {
            Ok(batches) => batches,
            Err(LogError::OffsetOutOfRange {
                start_offset,
                next_offset,
                ..
            }) => {
                // Retention passed the position, or a stale commit points past the end.
                position.set(if offset < start_offset {
                    start_offset
                } else {
                    next_offset
                });
                continue;
            }
            Err(LogError::Damaged { damage }) => {
                // Never skip past damage: tell the consumer, then wait. Appends go on and are
                // served once the queue is repaired; until then each wake-up costs a check.
                if damage_reported != Some(damage.offset) {
                    damage_reported = Some(damage.offset);
                    let message = format!(
                        "queue {}/{} cannot be served from offset {offset}: stored data is damaged at {damage}; an operator must run `defibus log repair`",
                        queue.topic, queue.id
                    );
                    let frame = crate::net::outbox::push_fault(
                        &queue.topic,
                        queue.id,
                        sub.id,
                        protocol::codes::Status::DataDamaged,
                        &message,
                    );
                    if sub.conn.outbox.send(Outbound::Frame(frame)).await.is_err() {
                        return;
                    }
                }
                queue.appended.wait(seen).await;
                continue;
            }
            Err(e) => {
                log::error!(
                    "push of {}/{} to {} stopped: {e}",
                    queue.topic,
                    queue.id,
                    sub.client_id
                );
                return;
            }
        };
        if batches.is_empty() {
            queue.appended.wait(seen).await;
            continue;
        }
        let mut not_durable = false;
        for batch in batches {
            if sub.closed.get() {
                return;
            }
            if retry_queue && !wait_until_due(&sub, &batch).await {
                return;
            }
            let Some(Inspected {
                next_offset,
                records,
                expired,
                now_ms,
            }) = inspect(&batch)
            else {
                log::error!(
                    "push of {}/{}: unreadable batch at offset {offset}",
                    queue.topic,
                    queue.id
                );
                return;
            };
            if next_offset > queue.pushable_end() {
                // Not durable yet (sync topic): wait for the append that covers it.
                not_durable = true;
                break;
            }
            if let Some(expired) = expired {
                let requests = u64::from(expired.requests);
                let events = u64::from(records) - requests;
                queue
                    .expired_requests
                    .set(queue.expired_requests.get() + requests);
                queue
                    .expired_events
                    .set(queue.expired_events.get() + events);
                position.set(next_offset);
                continue;
            }
            let bytes = batch.len() as u64;
            let push = Outbound::Push {
                topic: queue.topic.clone(),
                queue_id: queue.id,
                subscription_id: sub.id,
                batch,
            };
            if sub.conn.outbox.send(push).await.is_err() {
                return;
            }
            queue.traffic.pushed(u64::from(records), bytes);
            if let Some(delivered) = &delivered {
                let base = next_offset - u64::from(records);
                delivered.pushed(position.get(), base, next_offset);
            }
            if let Some(pushes) = &pushes {
                pushes
                    .borrow_mut()
                    .record(position.get(), next_offset, now_ms as i64, &client);
            }
            position.set(next_offset);
            let credit = sub.credit.get().saturating_sub(u64::from(records));
            sub.credit.set(credit);
            if credit == 0 {
                break;
            }
        }
        if not_durable {
            queue.appended.wait(seen).await;
        }
    }
}

/// Waits until the retry copies in `batch` are due; false if the subscription ended
/// meanwhile. Sleeps at most a second at a time, so a closed subscription stops it soon
/// (its task is also dropped when its queue is reassigned).
async fn wait_until_due(sub: &Subscription, batch: &Bytes) -> bool {
    let Some(due_ms) = crate::retry::due_ms(batch) else {
        return true;
    };
    loop {
        if sub.closed.get() {
            return false;
        }
        let now_ms = crate::retry::now_ms();
        if now_ms >= due_ms {
            return true;
        }
        crate::rt::sleep(Duration::from_millis((due_ms - now_ms).min(1000))).await;
    }
}

/// What the push loop needs of a batch.
struct Inspected {
    next_offset: u64,
    records: u32,
    /// Set when every record is past its deadline: the batch is skipped.
    expired: Option<Expired>,
    /// When it was looked at, Unix ms.
    now_ms: u64,
}

/// A batch whose every record is past its deadline.
struct Expired {
    /// How many of them are requests (the rest are events with a time-to-live).
    requests: u32,
}

/// Reads only the header and, while the records carry deadlines, each record's header and
/// properties: no checksum pass. Every batch in the log was fully validated (checksums
/// included) when it was appended or recovered, and the consumer checks them again; a push
/// verifying them once more per delivery cost two passes over every byte it sends.
fn inspect(batch: &Bytes) -> Option<Inspected> {
    let header = BatchHeader::decode(batch).ok()?;
    header.validate(BATCH_LEN_MAX).ok()?;
    let len = header.batch_len as usize;
    let bytes = batch.get(..len)?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let expired = all_expired(bytes, now_ms)?;
    Some(Inspected {
        next_offset: header.next_offset(),
        records: header.record_count,
        expired,
        now_ms,
    })
}

/// `Some(Expired)` when every record of `batch` (a whole batch, header included) has a
/// deadline at or before `now_ms`, with how many are requests; stops at the first record
/// that has none or a later one. `None` when the record layout does not add up.
fn all_expired(batch: &[u8], now_ms: u64) -> Option<Option<Expired>> {
    let u16_at = |b: &[u8], at: usize| -> Option<u16> {
        Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
    };
    let u32_at = |b: &[u8], at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    let mut requests = 0;
    let mut at = protocol::record::records_start(*batch.get(28)?);
    while at < batch.len() {
        let record = batch.get(at..)?;
        let record_len = u32_at(record, 0)?;
        let record = record.get(..record_len)?;
        if record_len < RECORD_HEADER_LEN {
            return None;
        }
        let key_len = usize::from(u16_at(record, 14)?);
        let properties_len = u32_at(record, 24)?;
        if properties_len == 0 {
            return Some(None);
        }
        let start = RECORD_HEADER_LEN + key_len;
        let properties = record.get(start..start + properties_len)?;
        let deadline = Properties::new(properties)
            .filter_map(Result::ok)
            .find_map(|p| match p {
                Property::DeadlineMs(d) => Some(d),
                _ => None,
            });
        if deadline.is_none_or(|d| d > now_ms) {
            return Some(None);
        }
        // Attributes hold the message type alone (validated at append).
        if u16_at(record, 12)? == MessageType::Request as u16 {
            requests += 1;
        }
        at += record_len;
    }
    Some(Some(Expired { requests }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::record::{BatchBuilder, BatchView, Record, stamp};

    fn batch(records: &[(MessageType, Option<u64>)]) -> Bytes {
        let mut builder = BatchBuilder::new(BATCH_LEN_MAX);
        for (message_type, deadline) in records {
            let properties: Vec<Property<'_>> =
                deadline.iter().map(|d| Property::DeadlineMs(*d)).collect();
            builder
                .push(&Record {
                    timestamp_ms: 1,
                    message_type: *message_type,
                    key: b"k",
                    properties: &properties,
                    value: b"value",
                })
                .unwrap();
        }
        let mut bytes = builder.finish().unwrap();
        stamp(&mut bytes, 10, 2).unwrap();
        Bytes::from(bytes)
    }

    #[test]
    fn inspect_reads_offsets_and_expiry_like_a_full_parse() {
        let cases = [
            vec![(MessageType::Event, None)],
            vec![
                (MessageType::Request, Some(5)),
                (MessageType::Request, Some(6)),
            ],
            vec![(MessageType::Request, Some(5)), (MessageType::Event, None)],
            vec![(MessageType::Request, Some(u64::MAX))],
            vec![(MessageType::Request, None)],
            vec![(MessageType::Event, Some(5)), (MessageType::Event, Some(6))],
            vec![(MessageType::Event, Some(5)), (MessageType::Event, None)],
            vec![
                (MessageType::Event, Some(5)),
                (MessageType::Request, Some(6)),
            ],
        ];
        let expected = [None, Some(2), None, None, None, Some(0), None, Some(1)];
        for (records, expired) in cases.iter().zip(expected) {
            let bytes = batch(records);
            let view = BatchView::parse(&bytes, BATCH_LEN_MAX).unwrap();
            let got = inspect(&bytes).unwrap();
            assert_eq!(
                (
                    got.next_offset,
                    got.records,
                    got.expired.map(|e| e.requests)
                ),
                (view.next_offset(), view.record_count(), expired)
            );
        }
        assert!(inspect(&Bytes::from_static(b"short")).is_none());
        let whole = batch(&[(MessageType::Event, None)]);
        assert!(inspect(&whole.slice(..whole.len() - 1)).is_none());
    }
}
