//! Dead-letter queues (`defibus dlq`, ARCHITECTURE §13.2): show, resend and purge the
//! pending messages of one queue of a group's dead-letter topic, on the shard that owns it.
//!
//! What is done is a position: the committed offset of the internal group
//! [`DEAD_LETTER_GROUP`] on the queue. A resend re-produces each pending message (its key,
//! value and properties, without the retry mark) to its original topic and queue, then
//! commits past it, one message at a time: a second resend finds nothing to do, and a crash
//! between the two steps resends that one message again (at least once, never lost).

use std::rc::Rc;

use protocol::codes::{Command, Status};
use protocol::control::{
    self, DEAD_LETTER_GROUP, DEAD_LETTER_PREVIEW_BYTES, DEAD_LETTERS_SHOWN_MAX, DeadLetter,
    DeadLetterReply, DeadLetterRequest,
};
use protocol::record::{BATCH_LEN_MAX, BatchBuilder, BatchView, Property, Record};

use crate::error::Reject;
use crate::queue::Queue;
use crate::shard::Shard;

/// Bytes read from the log per step.
const READ_BYTES: usize = 256 << 10;

/// Serves `command` (`DeadLetterShow`, `DeadLetterResend` or `DeadLetterPurge`) for the
/// queue `request` names, which this shard owns.
pub(crate) async fn serve(
    shard: &Rc<Shard>,
    queue: &Queue,
    command: Command,
    request: &DeadLetterRequest,
) -> Result<DeadLetterReply, Reject> {
    let offsets = shard.consumption.offsets();
    let start_offset = queue.log.start_offset();
    let next_offset = queue.log.next_offset();
    let pending_from = offsets
        .get(&request.topic, DEAD_LETTER_GROUP, queue.id)
        .unwrap_or(start_offset)
        .max(start_offset);
    let mut reply = DeadLetterReply {
        start_offset,
        next_offset,
        pending_from,
        letters: Vec::new(),
        done: 0,
    };
    let limit = match (command, request.limit) {
        (Command::DeadLetterShow, 0) => DEAD_LETTERS_SHOWN_MAX,
        (Command::DeadLetterShow, n) => n.min(DEAD_LETTERS_SHOWN_MAX),
        (_, 0) => u32::MAX,
        (_, n) => n,
    };
    if command == Command::DeadLetterPurge {
        let end = next_offset.min(pending_from.saturating_add(u64::from(limit)));
        if end > pending_from {
            offsets
                .commit(&request.topic, DEAD_LETTER_GROUP, queue.id, end)
                .await?;
        }
        reply.done = end - pending_from;
        return Ok(reply);
    }
    if let Some(offset) = request.offset {
        if offset != pending_from || offset >= next_offset {
            return Err(Reject::new(
                Status::InvalidArgument,
                format!(
                    "offset {offset} is not the oldest pending dead letter of queue {} of {} \
                     (pending: {pending_from}..{next_offset}); resend from the oldest, or all",
                    queue.id, request.topic
                ),
            ));
        }
    }
    let limit = if request.offset.is_some() { 1 } else { limit };
    let mut at = pending_from;
    let mut seen = 0u32;
    'read: while at < next_offset && seen < limit {
        let batches = queue.log.read(at, READ_BYTES).await?;
        if batches.is_empty() {
            break;
        }
        for batch in &batches {
            let view = BatchView::parse(batch, BATCH_LEN_MAX)
                .map_err(|e| Reject::new(Status::DataDamaged, e.to_string()))?;
            for record in view.records() {
                if record.offset() < at {
                    continue;
                }
                if record.offset() >= next_offset || seen >= limit {
                    break 'read;
                }
                seen += 1;
                let mut kept: Vec<Property<'_>> = Vec::new();
                let mut mark = None;
                for property in record.properties() {
                    match property.map_err(|e| Reject::new(Status::DataDamaged, e.to_string()))? {
                        Property::Retry(m) => mark = Some(m),
                        other => kept.push(other),
                    }
                }
                let Some(mark) = mark else {
                    return Err(Reject::new(
                        Status::InvalidArgument,
                        format!(
                            "offset {} of {} has no retry mark: it was not dead-lettered",
                            record.offset(),
                            request.topic
                        ),
                    ));
                };
                if command == Command::DeadLetterShow {
                    let value = record.value();
                    let preview = value.len().min(DEAD_LETTER_PREVIEW_BYTES as usize);
                    reply.letters.push(DeadLetter {
                        offset: record.offset(),
                        timestamp_ms: record.timestamp_ms(),
                        origin_topic: mark.origin_topic.to_owned(),
                        origin_queue: mark.origin_queue,
                        origin_offset: mark.origin_offset,
                        deliveries: u32::from(mark.attempt),
                        reason: mark.reason.to_owned(),
                        key: record.key().to_vec(),
                        value_preview: value[..preview].to_vec(),
                        value_len: value.len() as u32,
                    });
                } else {
                    // A resent message is new to its topic: no deadline it may have outlived
                    // is dropped silently, so it is kept as sent (and may expire again).
                    let mut builder = BatchBuilder::new(shard.config.limits.batch_len_max);
                    builder
                        .push(&Record {
                            timestamp_ms: record.timestamp_ms(),
                            message_type: record.message_type(),
                            key: record.key(),
                            properties: &kept,
                            value: record.value(),
                        })
                        .map_err(|e| Reject::new(Status::InvalidArgument, e.to_string()))?;
                    let body = builder
                        .finish()
                        .ok_or_else(|| Reject::new(Status::Internal, "an empty copy"))?;
                    let frame =
                        crate::retry::produce_frame(mark.origin_topic, mark.origin_queue, body)?;
                    let ack: control::ProduceAck = control::decode(
                        &crate::net::dispatch::serve_anywhere(shard, frame).await?,
                    )?;
                    offsets
                        .commit(
                            &request.topic,
                            DEAD_LETTER_GROUP,
                            queue.id,
                            record.offset() + 1,
                        )
                        .await?;
                    log::info!(
                        "shard {}: resent offset {} of {} to offset {} of queue {} of {}",
                        shard.id,
                        record.offset(),
                        request.topic,
                        ack.base_offset,
                        mark.origin_queue,
                        mark.origin_topic
                    );
                    reply.done += 1;
                }
            }
            at = view.next_offset();
        }
    }
    Ok(reply)
}
