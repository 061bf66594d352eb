//! The follower's task: copy the leader's log of one queue, for one epoch.
//!
//! 1. Connect to the leader's owning shard.
//! 2. Ask where this replica's latest epoch ended in the leader's log (`ReplicaEpochEnd`) and
//!    cut the local log there if it runs past it: that tail was written in an epoch the
//!    leader never saw (a deposed leader's unreplicated writes), and was never committed.
//! 3. Fetch from the local end (`ReplicaFetch`): the fetch offset tells the leader that
//!    everything below it is durable here. Append what comes back, bytes as they are
//!    ([`crate::log::Log::append_replicated`] verifies each batch), record the epochs that
//!    began in it, wait until it is durable by the topic's flush mode, and fetch again.
//!
//! Errors reconnect after a backoff (50 ms doubling to 1 s); a refusal for a stale epoch
//! waits the same way for the controller's next assignment, which replaces this task. The
//! task stops when its [`Stop`] is raised, only ever while waiting on the network, so a cut or
//! an append is never abandoned midway.

use std::{rc::Rc, time::Duration};

use bytes::Bytes;
use futures_lite::future;
use protocol::codes::Command;
use protocol::control::{
    self, ReplicaEpochEnd, ReplicaEpochEndReply, ReplicaFetch, ReplicaFetchReply,
};
use protocol::record::BatchHeader;

use super::role::Stop;
use crate::log::EpochStart;
use crate::peer::{Credentials, Peer, PeerError};
use crate::queue::Queue;
use crate::shard::Shard;

/// Longest wait for the leader to connect or answer; a fetch's own wait stays below it.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the leader may hold a fetch that finds nothing new.
const FETCH_MAX_WAIT_MS: u32 = 500;
/// Most bytes of batches per fetch.
const FETCH_MAX_BYTES: u32 = 1 << 20;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Why one session with the leader ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error("{0}")]
    Local(String),
}

/// Follows the leader at `endpoint` for `epoch` until `stop` is raised.
pub(crate) async fn follow(
    shard: Rc<Shard>,
    queue: Rc<Queue>,
    epoch: u64,
    endpoint: String,
    stop: Rc<Stop>,
) {
    let name = format!("{}/{}", queue.topic, queue.id);
    let mut backoff = BACKOFF_MIN;
    let mut failing = false;
    while !stop.is_raised() {
        match session(&shard, &queue, epoch, &endpoint, &stop, &mut failing).await {
            Ok(()) => break,
            Err(e) => {
                if !failing {
                    // A leader that stops cleanly closes its connections: an operator's
                    // restart, not a fault.
                    if matches!(e, SessionError::Peer(PeerError::Closed { .. })) {
                        log::info!("{name}: following {endpoint} in epoch {epoch}: {e}; retrying");
                    } else {
                        log::warn!("{name}: following {endpoint} in epoch {epoch}: {e}; retrying");
                    }
                    failing = true;
                }
                let stopped = future::or(
                    async {
                        crate::rt::sleep(backoff).await;
                        false
                    },
                    async {
                        stop.wait().await;
                        true
                    },
                );
                if stopped.await {
                    break;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
    log::debug!("{name}: stopped following {endpoint} in epoch {epoch}");
}

/// `call`, unless `stop` is raised first (`None`): only network waits race the stop signal,
/// so a cut or an append in progress always completes.
async fn unless_stopped<T>(
    stop: &Stop,
    call: impl std::future::Future<Output = Result<T, PeerError>>,
) -> Result<Option<T>, SessionError> {
    future::or(async { call.await.map(Some) }, async {
        stop.wait().await;
        Ok(None)
    })
    .await
    .map_err(SessionError::from)
}

/// One connection's worth of following; `Ok` only when stopped.
async fn session(
    shard: &Shard,
    queue: &Rc<Queue>,
    epoch: u64,
    endpoint: &str,
    stop: &Stop,
    failing: &mut bool,
) -> Result<(), SessionError> {
    let log = &queue.log;
    let config = &shard.config;
    let offsets = shard.consumption.offsets();
    // The leader's offset generation last applied; none yet on this connection.
    let mut offsets_seen = u64::MAX;
    let connect = Peer::connect(
        endpoint,
        PEER_TIMEOUT,
        config.frame_limits(),
        Credentials::of(shard),
    );
    let Some(mut peer) = unless_stopped(stop, connect).await? else {
        return Ok(());
    };
    // 2. Cut what the leader never had.
    let last_epoch = log.epochs().latest().map_or(0, |e| e.epoch);
    let request = ReplicaEpochEnd {
        topic: queue.topic.to_string(),
        queue_id: queue.id,
        epoch,
        last_epoch,
    };
    let body = control::encode(&request).map_err(|e| SessionError::Local(e.to_string()))?;
    let Some(frame) = unless_stopped(stop, peer.call(Command::ReplicaEpochEnd, &body)).await?
    else {
        return Ok(());
    };
    let reply: ReplicaEpochEndReply =
        control::decode(&frame.body).map_err(|e| SessionError::Local(e.to_string()))?;
    let keep = if reply.found {
        reply.end_offset
    } else {
        // The leader's history starts after ours: keep only what we know was committed.
        queue.replication_committed()
    };
    if keep < log.next_offset() {
        log::warn!(
            "{}/{}: cutting offsets {keep}..{} that the leader of epoch {epoch} does not hold",
            queue.topic,
            queue.id,
            log.next_offset()
        );
        log.truncate_to(keep.max(log.start_offset()))
            .await
            .map_err(|e| SessionError::Local(format!("cut to {keep}: {e}")))?;
    }
    // 3. Fetch, append, make durable, repeat.
    loop {
        if stop.is_raised() {
            return Ok(());
        }
        let offset = log.next_offset();
        let request = ReplicaFetch {
            topic: queue.topic.to_string(),
            queue_id: queue.id,
            replica: config.broker_id.clone(),
            epoch,
            offset,
            max_bytes: FETCH_MAX_BYTES,
            max_wait_ms: FETCH_MAX_WAIT_MS,
            offsets_generation: offsets_seen,
        };
        let body = control::encode(&request).map_err(|e| SessionError::Local(e.to_string()))?;
        let Some(frame) = unless_stopped(stop, peer.call(Command::ReplicaFetch, &body)).await?
        else {
            return Ok(());
        };
        if *failing {
            log::info!(
                "{}/{}: following {endpoint} in epoch {epoch} again from offset {offset}",
                queue.topic,
                queue.id
            );
            *failing = false;
        }
        let Fetched {
            batches,
            starts,
            committed,
            offsets_generation,
            group_offsets,
        } = split_reply(&frame)?;
        if let Some(appended) = log
            .append_replicated(&batches)
            .await
            .map_err(|e| SessionError::Local(format!("append at {offset}: {e}")))?
        {
            for start in starts {
                if start.start_offset <= appended.next_offset {
                    log.record_epoch(start)
                        .await
                        .map_err(|e| SessionError::Local(format!("record epoch: {e}")))?;
                }
            }
            log.wait_durable(appended.next_offset)
                .await
                .map_err(|e| SessionError::Local(format!("flush: {e}")))?;
        } else {
            for start in starts.into_iter().filter(|s| s.start_offset <= offset) {
                log.record_epoch(start)
                    .await
                    .map_err(|e| SessionError::Local(format!("record epoch: {e}")))?;
            }
        }
        queue.learned_committed(committed);
        if offsets_generation != offsets_seen {
            for (group, offset) in group_offsets {
                if offsets.get(&queue.topic, &group, queue.id) != Some(offset) {
                    offsets
                        .commit(&queue.topic, &group, queue.id, offset)
                        .await
                        .map_err(|e| SessionError::Local(format!("copy offset of {group}: {e}")))?;
                }
            }
            offsets_seen = offsets_generation;
        }
    }
}

/// What one fetch answer holds.
struct Fetched {
    batches: Vec<Bytes>,
    starts: Vec<EpochStart>,
    committed: u64,
    offsets_generation: u64,
    group_offsets: Vec<(String, u64)>,
}

/// The batches (as slices of the frame body, no copy), epoch starts, commit point and group
/// offsets of a fetch answer.
fn split_reply(frame: &protocol::frame::FrameBytes) -> Result<Fetched, SessionError> {
    let reply = ReplicaFetchReply::decode_ext(&frame.ext)
        .map_err(|e| SessionError::Local(format!("fetch answer: {e}")))?;
    let mut fetched = Fetched {
        batches: Vec::new(),
        starts: reply
            .epoch_starts
            .iter()
            .map(|s| EpochStart {
                epoch: s.epoch,
                start_offset: s.start_offset,
            })
            .collect(),
        committed: reply.committed,
        offsets_generation: reply.offsets_generation,
        group_offsets: reply
            .group_offsets
            .into_iter()
            .map(|g| (g.group, g.offset))
            .collect(),
    };
    let all = &frame.body;
    let mut at = 0;
    while at < all.len() {
        let header = BatchHeader::decode(&all[at..])
            .map_err(|e| SessionError::Local(format!("fetch answer at byte {at}: {e}")))?;
        let len = header.batch_len as usize;
        if len == 0 || at + len > all.len() {
            return Err(SessionError::Local(format!(
                "fetch answer: batch of {len} bytes at byte {at} of {}",
                all.len()
            )));
        }
        fetched.batches.push(all.slice(at..at + len));
        at += len;
    }
    Ok(fetched)
}
