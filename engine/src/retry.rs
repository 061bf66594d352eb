//! Nacks: a rejected message is copied to its group's retry topic, to be redelivered after
//! the group's backoff, or past its last redelivery to the dead-letter topic (ARCHITECTURE
//! §13.2).
//!
//! The shard that pushed the message serves the nack: it reads the record from its own log,
//! appends a copy with a retry mark (`protocol::record::RetryMark`: attempt, due time,
//! origin, group, reason) to queue `level` of `<topic>.RETRY.<group>` (or to queue 0 of
//! `<topic>.DLQ.<group>`), on whichever shard owns that queue, creating the topic through
//! shard 0 the first time, and answers once the copy is stored as its topic promises. Each
//! level queue holds one delay, so it is ordered by due time and its push loop only waits
//! for its head ([`due_ms`]): no timer per message, and the state is the log itself, so a
//! pending retry survives a restart.

use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use protocol::codes::{Command, Status};
use protocol::control::{self, Nack, NackAck, ProduceAck, SubscriptionMode, TopicConfig};
use protocol::data::BatchAddress;
use protocol::frame::{FrameBytes, FrameHeader, FrameMeta};
use protocol::record::{
    BATCH_LEN_MAX, BatchBuilder, BatchView, MessageType, Property, Record, RetryMark,
    truncate_reason,
};
use protocol::retry::{self as names, TopicKind};

use crate::error::Reject;
use crate::group::Subscription;
use crate::log::LogError;
use crate::shard::Shard;

/// Serves `request` for `sub`: see the module docs.
pub(crate) async fn nack(
    shard: &Rc<Shard>,
    sub: &Subscription,
    request: &Nack,
) -> Result<NackAck, Reject> {
    let unavailable = |why: String| Reject::new(Status::RetryUnavailable, why);
    if sub.mode != SubscriptionMode::Clustering {
        return Err(unavailable(format!(
            "{} consumes {} in broadcast mode: only clustering groups retry",
            sub.key.group, sub.key.topic
        )));
    }
    let topic = &sub.key.topic;
    let group = &sub.key.group;
    if names::kind(topic) == TopicKind::DeadLetter {
        return Err(unavailable(format!(
            "{topic} is a dead-letter topic: its messages are resent (`defibus dlq resend`), \
             not retried"
        )));
    }
    let Some(queue) = shard.topics.queue(topic, request.queue_id) else {
        return Err(Reject::new(
            Status::NotOwner,
            format!(
                "queue {} of {topic} is not owned by shard {}",
                request.queue_id, shard.id
            ),
        ));
    };
    let offset = request.offset;
    let gone = |detail: String| {
        Reject::new(
            Status::MessageGone,
            format!("offset {offset} of queue {} of {topic}: {detail}", queue.id),
        )
    };
    let batches = match queue.log.read(offset, 1).await {
        Ok(batches) => batches,
        Err(LogError::OffsetOutOfRange {
            start_offset,
            next_offset,
            ..
        }) => {
            return Err(gone(format!(
                "the queue holds {start_offset}..{next_offset}"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let batch = batches
        .first()
        .ok_or_else(|| gone("not written yet".into()))?;
    let view = BatchView::parse(batch, BATCH_LEN_MAX).map_err(|e| {
        Reject::new(
            Status::DataDamaged,
            format!("reading the nacked batch: {e}"),
        )
    })?;
    let record = view
        .records()
        .find(|r| r.offset() == offset)
        .ok_or_else(|| gone("no record there".into()))?;
    if record.message_type() != MessageType::Event {
        return Err(unavailable(format!(
            "offset {offset} is a {:?}: only events are retried",
            record.message_type()
        )));
    }
    let mut properties: Vec<Property<'_>> = Vec::new();
    let mut previous: Option<RetryMark<'_>> = None;
    for property in record.properties() {
        match property.map_err(|e| Reject::new(Status::DataDamaged, e.to_string()))? {
            Property::Retry(mark) => previous = Some(mark),
            other => properties.push(other),
        }
    }
    // The origin is the first delivery's: a retry's copy names it in its mark.
    let (origin_topic, origin_queue, origin_offset, attempts_before) = match previous {
        Some(mark) => (
            mark.origin_topic,
            mark.origin_queue,
            mark.origin_offset,
            u32::from(mark.attempt),
        ),
        None if names::kind(topic) == TopicKind::Plain => (topic.as_str(), queue.id, offset, 0),
        None => {
            return Err(unavailable(format!(
                "offset {offset} of {topic} has no retry mark: it was not put there by a nack"
            )));
        }
    };
    let attempt = attempts_before + 1;
    let policy = shard.config.retry.policy(group);
    let dead = request.dead_letter || attempt > policy.max_redeliveries;
    let target = if dead {
        names::dead_letter_topic(origin_topic, group)
    } else {
        names::retry_topic(origin_topic, group)
    }
    .map_err(|e| {
        unavailable(format!(
            "group {group} on {origin_topic} cannot have a retry or dead-letter topic: {e}"
        ))
    })?;
    let levels = if dead {
        1
    } else {
        policy.schedule_ms.len() as u32
    };
    let levels = ensure_topic(shard, topic, &target, levels).await?;
    let level = if dead {
        0
    } else {
        names::level_of(attempt, levels)
    };
    let due_ms = if dead {
        0
    } else {
        let delay = policy
            .schedule_ms
            .get(level as usize)
            .or(policy.schedule_ms.last())
            .copied()
            .unwrap_or(0);
        now_ms() + delay
    };
    let mark = RetryMark {
        attempt: u16::try_from(attempt).unwrap_or(u16::MAX),
        due_ms,
        origin_queue,
        origin_offset,
        origin_topic,
        group,
        reason: truncate_reason(&request.reason),
    };
    properties.push(Property::Retry(mark));
    let mut builder = BatchBuilder::new(shard.config.limits.batch_len_max);
    builder
        .push(&Record {
            timestamp_ms: record.timestamp_ms(),
            message_type: MessageType::Event,
            key: record.key(),
            properties: &properties,
            value: record.value(),
        })
        .map_err(|e| {
            Reject::new(
                Status::InvalidArgument,
                format!("the copy of offset {offset} does not fit a batch: {e}"),
            )
        })?;
    let body = builder
        .finish()
        .ok_or_else(|| Reject::new(Status::Internal, "an empty copy"))?;
    let frame = produce_frame(&target, level, body)?;
    let ack: ProduceAck =
        control::decode(&crate::net::dispatch::serve_anywhere(shard, frame).await?)?;
    if dead {
        shard
            .counters
            .dead_letters
            .set(shard.counters.dead_letters.get() + 1);
        log::info!(
            "shard {}: {group} dead-lettered offset {origin_offset} of queue {origin_queue} of \
             {origin_topic} after {attempts_before} redeliveries, to offset {} of {target}",
            shard.id,
            ack.base_offset
        );
    } else {
        let mut by_level = shard.counters.retries_by_level.borrow_mut();
        if by_level.len() <= level as usize {
            by_level.resize(level as usize + 1, 0);
        }
        by_level[level as usize] += 1;
    }
    Ok(NackAck {
        topic: target,
        queue_id: level,
        offset: ack.base_offset,
        attempt,
        dead_lettered: dead,
    })
}

/// Creates `target` (a retry topic with `levels` queues, or a dead-letter topic) unless it
/// exists, with the flush mode of `source` (the topic the nacked message is on, so a sync
/// topic's copies are synced too); its queue count.
async fn ensure_topic(
    shard: &Rc<Shard>,
    source: &str,
    target: &str,
    levels: u32,
) -> Result<u32, Reject> {
    if let Some(count) = shard.topics.with_config(target, |c| c.write_queue_count) {
        return Ok(count);
    }
    let name = target
        .parse()
        .map_err(|e| Reject::new(Status::InvalidName, format!("{target}: {e}")))?;
    let mut config = TopicConfig::new(&name);
    config.queue_count = levels;
    config.read_queue_count = levels;
    config.write_queue_count = levels;
    // Retries wait by design: their depth is no reason to refuse the next one.
    config.max_queue_depth = u64::MAX;
    if let Some(flush_mode) = shard.topics.with_config(source, |c| c.flush_mode) {
        config.flush_mode = flush_mode;
    }
    let body = control::encode(&config)?;
    let meta = FrameMeta::request(Command::CreateTopic, 0);
    let header = FrameHeader::seal(&meta, &[], &body)
        .map_err(|e| Reject::new(Status::Internal, e.to_string()))?;
    let frame = FrameBytes {
        header,
        ext: Bytes::new(),
        body: Bytes::from(body),
    };
    match crate::net::dispatch::serve_anywhere(shard, frame).await {
        Ok(_) => {
            log::info!("shard {}: created {target} for nacks", shard.id);
            // The group's members consume the retry topic once they know it exists: tell the
            // subscribers of the topic the nack came from to refetch routes.
            crate::group::announce_change(shard, source);
            shard
                .tell_peers(|| crate::mesh::MeshMsg::TopicChanged {
                    topic: source.to_owned(),
                })
                .await;
        }
        // Another shard's nack created it first.
        Err(reject) if reject.status == Status::TopicExists => {}
        Err(reject) => return Err(reject),
    }
    shard
        .topics
        .with_config(target, |c| c.write_queue_count)
        .ok_or_else(|| {
            Reject::new(
                Status::Internal,
                format!("{target} was created but this shard does not see it"),
            )
        })
}

/// A `Produce` frame appending `batch` to queue `queue_id` of `topic`.
pub(crate) fn produce_frame(
    topic: &str,
    queue_id: u32,
    batch: Vec<u8>,
) -> Result<FrameBytes, Reject> {
    let mut ext = Vec::new();
    BatchAddress::new(topic, queue_id).encode(&mut ext)?;
    let meta = FrameMeta::request(Command::Produce, 0).without_body_crc();
    let header = FrameHeader::seal(&meta, &ext, &batch)
        .map_err(|e| Reject::new(Status::Internal, e.to_string()))?;
    Ok(FrameBytes {
        header,
        ext: Bytes::from(ext),
        body: Bytes::from(batch),
    })
}

/// When the records of a retry queue's `batch` are due: the latest due time among them
/// (Unix ms), `None` when none carries a retry mark. Read on the push path of retry topics
/// only.
pub(crate) fn due_ms(batch: &[u8]) -> Option<u64> {
    let view = BatchView::parse(batch, BATCH_LEN_MAX).ok()?;
    view.records()
        .flat_map(|r| r.properties())
        .filter_map(|p| match p {
            Ok(Property::Retry(mark)) => Some(mark.due_ms),
            _ => None,
        })
        .max()
}

/// The wall clock, Unix ms: due times are wall-clock times, stored in the log.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
