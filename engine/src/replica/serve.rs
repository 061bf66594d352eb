//! The leader's answers to its followers: `ReplicaFetch` and `ReplicaEpochEnd`.

use std::time::{Duration, Instant};

use bytes::Bytes;

use protocol::codes::Status;
use protocol::control::{
    self, EpochStart, GroupOffset, ReplicaEpochEnd, ReplicaEpochEndReply, ReplicaFetch,
    ReplicaFetchReply,
};

use super::{FetchRefused, role::Leading};
use crate::error::Reject;
use crate::queue::Queue;
use crate::shard::Shard;

/// Longest a fetch may wait for new batches, whatever it asks.
const FETCH_MAX_WAIT: Duration = Duration::from_secs(5);
/// Most bytes of batches one fetch answer holds, whatever it asks (at least one batch is
/// always sent): a fetch must not make the leader read gigabytes into memory.
const FETCH_MAX_BYTES: usize = 4 << 20;

/// This broker's leader state for `queue`, checked against the follower's `epoch`.
fn leading(queue: &Queue, epoch: u64) -> Result<std::rc::Rc<Leading>, Reject> {
    let Some(replication) = queue.replication() else {
        return Err(Reject::new(
            Status::InvalidArgument,
            format!("{} has one replica: nothing to fetch", queue.topic),
        ));
    };
    let Some(leading) = replication.leading() else {
        return Err(replication.not_leader(&queue.topic, queue.id));
    };
    if leading.epoch() != epoch {
        return Err(Reject::new(
            Status::StaleEpoch,
            format!(
                "queue {} of {} is in epoch {} here, the request in epoch {epoch}",
                queue.id,
                queue.topic,
                leading.epoch()
            ),
        ));
    }
    Ok(leading)
}

/// Where the follower's latest epoch ended in this leader's log.
pub(crate) fn epoch_end(queue: &Queue, request: &ReplicaEpochEnd) -> Result<Vec<u8>, Reject> {
    leading(queue, request.epoch)?;
    let reply = match queue
        .log
        .epochs()
        .end_of(request.last_epoch, queue.log.next_offset())
    {
        Some((epoch, end_offset)) => ReplicaEpochEndReply {
            found: true,
            epoch,
            end_offset,
        },
        None => ReplicaEpochEndReply::default(),
    };
    Ok(control::encode(&reply)?)
}

/// A follower's fetch: records what it holds (moving the commit point), waits up to
/// `max_wait_ms` when nothing is new, and answers the stored batches from its offset.
/// Returns the answer's header extension and the batches, its body.
pub(crate) async fn fetch(
    shard: &Shard,
    queue: &Queue,
    request: &ReplicaFetch,
) -> Result<(Vec<u8>, Vec<Bytes>), Reject> {
    let leader = leading(queue, request.epoch)?;
    let log_end = queue.log.next_offset();
    match leader.on_fetch(&request.replica, request.offset, log_end) {
        Ok(true) => queue.appended.notify(),
        Ok(false) => {}
        Err(refused @ FetchRefused::EpochMismatch { .. }) => {
            return Err(Reject::new(Status::StaleEpoch, refused.to_string()));
        }
        Err(refused) => return Err(Reject::new(Status::InvalidArgument, refused.to_string())),
    }
    if request.offset >= log_end && request.max_wait_ms > 0 {
        let wait = Duration::from_millis(u64::from(request.max_wait_ms)).min(FETCH_MAX_WAIT);
        let deadline = Instant::now() + wait;
        loop {
            let seen = queue.appended.generation();
            if queue.log.next_offset() > request.offset {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero()
                || crate::rt::timeout(left, queue.appended.wait(seen))
                    .await
                    .is_none()
            {
                break;
            }
        }
        // Deposed while waiting: answer nothing of an epoch that ended.
        leading(queue, request.epoch)?;
    }
    let max_bytes = (request.max_bytes as usize).clamp(1, FETCH_MAX_BYTES);
    let batches = queue.log.read(request.offset, max_bytes).await?;
    let epoch_starts = queue
        .log
        .epochs()
        .from_offset(request.offset)
        .into_iter()
        .map(|s| EpochStart {
            epoch: s.epoch,
            start_offset: s.start_offset,
        })
        .collect();
    let offsets = shard.consumption.offsets();
    let offsets_generation = offsets.generation();
    let group_offsets = if offsets_generation == request.offsets_generation {
        Vec::new()
    } else {
        offsets
            .for_queue(&queue.topic, queue.id)
            .into_iter()
            .map(|(group, offset)| GroupOffset { group, offset })
            .collect()
    };
    let mut reply = ReplicaFetchReply {
        epoch: leader.epoch(),
        committed: leader.committed(),
        leader_end: queue.log.next_offset(),
        epoch_starts,
        offsets_generation,
        group_offsets,
    };
    if let Some(ext) = reply.encode_ext()? {
        return Ok((ext, batches));
    }
    // Too many groups for one answer: send the batches, and the offsets with a later one
    // (the follower keeps its generation, so it is sent them again).
    log::warn!(
        "{}/{}: {} group offsets exceed a fetch answer; they reach followers as they change",
        queue.topic,
        queue.id,
        reply.group_offsets.len()
    );
    reply.group_offsets.clear();
    reply.offsets_generation = request.offsets_generation;
    let ext = reply.encode_ext()?.ok_or_else(|| {
        Reject::new(
            Status::Internal,
            "a fetch answer without offsets exceeds 64 KiB",
        )
    })?;
    Ok((ext, batches))
}
