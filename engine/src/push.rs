//! The push loop of one (subscription, queue): read from the delivered offset, push whole
//! batches while the subscription has credit, wait for appends at the tail.
//!
//! Waits are sequential (credit, then data), never a select over many futures. A batch made
//! only of request records past their deadline is skipped and counted instead of pushed.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use protocol::record::{BATCH_LEN_MAX, BatchView, MessageType};

use crate::group::Subscription;
use crate::log::LogError;
use crate::net::outbox::Outbound;
use crate::queue::Queue;

/// Pushes `queue` to `sub` from `position` until the subscription ends or the task is dropped.
pub(crate) async fn run(
    sub: Rc<Subscription>,
    queue: Rc<Queue>,
    position: Rc<Cell<u64>>,
    read_bytes: usize,
) {
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
            let Some((next_offset, records, expired)) = inspect(&batch) else {
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
            if expired {
                queue
                    .expired_requests
                    .set(queue.expired_requests.get() + u64::from(records));
                position.set(next_offset);
                continue;
            }
            let push = Outbound::Push {
                topic: queue.topic.clone(),
                queue_id: queue.id,
                subscription_id: sub.id,
                batch,
            };
            if sub.conn.outbox.send(push).await.is_err() {
                return;
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

/// The batch's next offset, record count, and whether every record is an expired request.
fn inspect(batch: &Bytes) -> Option<(u64, u32, bool)> {
    let view = BatchView::parse(batch, BATCH_LEN_MAX).ok()?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let expired = view.records().all(|r| {
        r.message_type() == MessageType::Request && r.deadline_ms().is_some_and(|d| d <= now_ms)
    });
    Some((view.next_offset(), view.record_count(), expired))
}
