//! `TraceMessage`: one message's life, answered by the shard owning its queue
//! (`docs/ARCHITECTURE.md` §12).
//!
//! - **stored**: the record is read back from the queue (by offset, or by key among the newest
//!   records); its batch's stamped append time is when it was stored.
//! - **pushed**: [`pushes`] remembers, per group and queue, the latest ranges pushed, in
//!   bounded memory (`trace.pushes_remembered` entries); the answer says from when that memory
//!   is complete.
//! - **committed**: the offset journal stamps every commit with its append time, so the first
//!   journal record of the group's key whose offset passes the message, stored after it, is
//!   when the group committed it; found by bisection on time, then a forward scan.
//! - **replied**: a request's reply is looked for in the reply queue of this shard (where
//!   responders send replies: the shard that pushed the request), from the request's storing
//!   to its deadline plus a second of clock slack.
//!
//! Every read counts against one budget per lookup (`trace.scan_bytes_max`); where it runs out
//! the answer says how far it got. Nothing here touches the produce or push path but the
//! ring's record call in [`crate::push`].

pub(crate) mod pushes;
pub(crate) mod scan;

use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use protocol::codes::Status;
use protocol::control::{
    CommitTime, GroupLife, MessageLife, ReplySearch, RequestLife, TraceReply, TraceRequest,
    TraceTarget,
};
use protocol::record::{BATCH_LEN_MAX, BatchView, MessageType, RecordView};

pub(crate) use pushes::{PushLog, Pushes};
use scan::{Budget, Scanned, Step};

use crate::error::Reject;
use crate::log::LogError;
use crate::queue::Queue;
use crate::shard::Shard;

/// The group a trace is checked against: a trace shows every group's progress, so it needs
/// `consume` on the topic for every group (a grant whose group pattern is `*`).
pub(crate) const TRACE_GROUP: &str = "*";

/// Answers `request` about `queue`, which this shard owns.
pub(crate) async fn answer(
    shard: &Rc<Shard>,
    queue: &Rc<Queue>,
    request: &TraceRequest,
) -> Result<TraceReply, Reject> {
    let budget = Budget::new(shard.config.trace.scan_bytes_max);
    let (start_offset, next_offset) = (queue.log.start_offset(), queue.log.next_offset());
    let (found, searched_from, searched_to) = match &request.target {
        TraceTarget::Offset(offset) => (at_offset(queue, *offset).await?, *offset, *offset),
        TraceTarget::Newest if next_offset > start_offset => {
            let newest = next_offset - 1;
            (at_offset(queue, newest).await?, newest, newest)
        }
        TraceTarget::Newest => (Vec::new(), next_offset, next_offset),
        TraceTarget::Key {
            key,
            search_records,
            matches_max,
        } => {
            let from = start_offset.max(next_offset.saturating_sub(*search_records));
            let (found, to) = with_key(queue, key, from, *matches_max, &budget).await?;
            (found, from, to)
        }
    };
    let mut messages = Vec::with_capacity(found.len());
    for facts in found {
        messages.push(life(shard, queue, facts, &budget).await);
    }
    Ok(TraceReply {
        broker_id: shard.config.broker_id.clone(),
        shard_id: shard.id as u32,
        topic: queue.topic.to_string(),
        queue_id: queue.id,
        start_offset,
        next_offset,
        now_ms: crate::log::now_ms(),
        searched_from,
        searched_to,
        messages,
    })
}

/// What the stored record says, copied out of its batch.
struct Facts {
    life: MessageLife,
    deadline_ms: Option<u64>,
    reply_to: Option<String>,
    correlation_id: Option<Vec<u8>>,
}

impl Facts {
    fn of(view: &BatchView<'_>, record: &RecordView<'_>) -> Self {
        let header = view.header();
        Self {
            life: MessageLife {
                offset: record.offset(),
                batch_base_offset: header.base_offset,
                batch_records: header.record_count,
                stored_ms: header.append_time_ms,
                created_ms: record.timestamp_ms(),
                message_type: record.message_type() as u8,
                key: record.key().to_vec(),
                value_bytes: record.value().len() as u32,
                traceparent: record.trace_parent().map(|p| p.to_string()),
                tracestate: record.trace_state().map(str::to_owned),
                groups: Vec::new(),
                request: None,
            },
            deadline_ms: record.deadline_ms(),
            reply_to: record.reply_to().map(str::to_owned),
            correlation_id: record.correlation_id().map(<[u8]>::to_vec),
        }
    }
}

/// The record at `offset`, if the queue holds one there (not below its start, past its end,
/// nor in a recorded gap).
async fn at_offset(queue: &Queue, offset: u64) -> Result<Vec<Facts>, Reject> {
    let batches = match queue.log.read(offset, 1).await {
        Ok(batches) => batches,
        Err(LogError::OffsetOutOfRange { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(unreadable(queue, e)),
    };
    let Some(batch) = batches.first() else {
        return Ok(Vec::new());
    };
    let view = BatchView::parse(batch, BATCH_LEN_MAX)
        .map_err(|e| unreadable(queue, LogError::InvalidBatch { source: e }))?;
    Ok(view
        .records()
        .find(|r| r.offset() == offset)
        .map(|record| Facts::of(&view, &record))
        .into_iter()
        .collect())
}

/// The newest `matches_max` records with `key` from `from` on, and where the search ended.
async fn with_key(
    queue: &Queue,
    key: &[u8],
    from: u64,
    matches_max: u32,
    budget: &Budget,
) -> Result<(Vec<Facts>, u64), Reject> {
    let mut found = VecDeque::new();
    let mut reached = from;
    let scanned = scan::forward(&queue.log, from, budget, |view| {
        // The first batch read may begin before `from`: its older records are not searched.
        for record in view
            .records()
            .filter(|r| r.offset() >= from && r.key() == key)
        {
            if found.len() == matches_max as usize {
                found.pop_front();
            }
            found.push_back(Facts::of(view, &record));
        }
        reached = view.next_offset();
        Step::<()>::Next
    })
    .await;
    match scanned {
        Ok(_) => Ok((found.into(), reached)),
        // Retention moved the start past the search while it ran: what was found stands.
        Err(LogError::OffsetOutOfRange { .. }) => Ok((found.into(), reached)),
        Err(e) => Err(unreadable(queue, e)),
    }
}

/// The whole life of one stored record.
async fn life(shard: &Rc<Shard>, queue: &Queue, facts: Facts, budget: &Budget) -> MessageLife {
    let Facts {
        mut life,
        deadline_ms,
        reply_to,
        correlation_id,
    } = facts;
    life.groups = groups(shard, queue, &life, budget).await;
    if life.message_type == MessageType::Request as u8 {
        if let (Some(deadline_ms), Some(reply_to), Some(correlation_id)) =
            (deadline_ms, reply_to, correlation_id)
        {
            let reply = shard
                .replies
                .find(
                    shard.id as u32,
                    &reply_to,
                    &correlation_id,
                    life.stored_ms,
                    deadline_ms,
                    budget,
                )
                .await;
            life.request = Some(RequestLife {
                reply_to,
                correlation_id,
                deadline_ms,
                reply,
            });
        }
    }
    life
}

/// Every group that consumes the queue now, has committed on it, or was pushed it since the
/// shard started: what it holds of the message.
async fn groups(
    shard: &Shard,
    queue: &Queue,
    life: &MessageLife,
    budget: &Budget,
) -> Vec<GroupLife> {
    let (topic, queue_id, offset) = (&*queue.topic, queue.id, life.offset);
    let mut groups: BTreeMap<String, GroupLife> = BTreeMap::new();
    let started_ms = shard.pushes.started_ms();
    for stats in shard.consumption.queue_stats(topic, queue_id) {
        group_entry(&mut groups, &stats.group, started_ms).client_id = stats.client_id;
    }
    let offsets = shard.consumption.offsets();
    for (name, committed) in offsets.for_queue(topic, queue_id) {
        group_entry(&mut groups, &name, started_ms).committed_offset = Some(committed);
    }
    for (name, pushes, since_ms) in shard.pushes.carrying(topic, queue_id, offset) {
        let group = group_entry(&mut groups, &name, started_ms);
        group.pushes = pushes;
        group.pushes_since_ms = since_ms;
    }
    let mut groups: Vec<GroupLife> = groups.into_values().collect();
    for group in &mut groups {
        group.committed = match group.committed_offset {
            Some(committed) if committed > offset => {
                offsets
                    .first_commit_past(
                        topic,
                        &group.group,
                        queue_id,
                        offset,
                        life.stored_ms,
                        budget,
                    )
                    .await
            }
            _ => CommitTime::NotCommitted,
        };
    }
    groups
}

/// Group `name`'s entry, made with no pushes remembered since `started_ms` when new.
fn group_entry<'g>(
    groups: &'g mut BTreeMap<String, GroupLife>,
    name: &str,
    started_ms: i64,
) -> &'g mut GroupLife {
    groups.entry(name.to_owned()).or_insert_with(|| GroupLife {
        group: name.to_owned(),
        pushes_since_ms: started_ms,
        ..GroupLife::default()
    })
}

fn unreadable(queue: &Queue, error: LogError) -> Reject {
    let status = match error {
        LogError::Damaged { .. } => Status::DataDamaged,
        _ => Status::Internal,
    };
    Reject::new(
        status,
        format!(
            "queue {}/{} cannot be read for a trace: {error}",
            queue.topic, queue.id
        ),
    )
}

/// What a scan that looks for one thing found, as the trace reports it.
pub(crate) fn commit_time(scanned: Result<Scanned<i64>, LogError>) -> CommitTime {
    match scanned {
        Ok(Scanned::Found(at_ms)) => CommitTime::At(at_ms),
        Ok(Scanned::OutOfBudget(at_ms)) => CommitTime::After(at_ms),
        // The group's committed offset is past the message, yet no commit stored after the
        // message passes it: it committed that far before the message was stored (a commit
        // past the end), or the broker's clock stepped back.
        Ok(Scanned::NotFound) => CommitTime::Unknown(
            "no commit past it was stored after it (committed ahead of the queue's end, or \
             the broker's clock stepped back)"
                .into(),
        ),
        Err(e) => CommitTime::Unknown(format!("the offset journal cannot be read: {e}")),
    }
}

/// A reply search, as the trace reports it.
pub(crate) fn reply_search(
    scanned: Result<Scanned<protocol::control::ReplyLife>, LogError>,
) -> ReplySearch {
    match scanned {
        Ok(Scanned::Found(reply)) => ReplySearch::Found(reply),
        Ok(Scanned::NotFound) => ReplySearch::NotFound,
        Ok(Scanned::OutOfBudget(at_ms)) => ReplySearch::After(at_ms),
        Err(e) => ReplySearch::Unknown(format!("the reply queue cannot be read: {e}")),
    }
}
