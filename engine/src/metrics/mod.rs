//! Prometheus metrics of the broker (ARCHITECTURE §10).
//!
//! Recording costs a shard nothing shared: each queue counts its traffic in `Cell`s
//! ([`traffic`]), its request-reply latency and timeouts ([`requests`]) and what each group
//! was pushed again ([`deliveries`]); each shard's logs count fdatasync latency and group
//! commits in thread-local histograms ([`crate::log::stats`]); the executor's busy time is
//! the runtime's own ([`crate::rt::executor_time`]); and the figures `Stats` already reports
//! (offsets, expired requests, connections, bad frames) are read where they are kept.
//! Nothing is counted twice.
//!
//! Serving happens off the shards: the `/metrics` endpoint is a thread of its own
//! ([`telemetry::Endpoint`]). Per scrape it leaves a request at shard 0's [`door`]; shard 0
//! gathers every shard's snapshot over the mesh, the same call `Stats` makes, turns them
//! into a [`telemetry::Scrape`] ([`render`]) and hands it back; the endpoint thread encodes it.

mod deliveries;
pub(crate) mod door;
mod render;
pub(crate) mod requests;
mod traffic;

use std::rc::Rc;
use std::sync::Arc;

pub(crate) use deliveries::{Delivered, Deliveries};
pub(crate) use door::Door;
pub(crate) use requests::{PendingRequests, RequestStats};
pub(crate) use traffic::{Traffic, TrafficCounts};

use crate::log::stats::SyncStats;
use crate::rt::ExecutorTime;
use crate::shard::Shard;
use telemetry::Histogram;

/// What one shard adds to `Stats` for a scrape.
#[derive(Clone, Debug, Default)]
pub(crate) struct ShardMetrics {
    /// Boxed: two histograms, which would make every mesh message as large.
    pub sync: Box<SyncStats>,
    pub queues: Vec<QueueMetrics>,
    /// The shard's executor: time in tasks and in all.
    pub executor: ExecutorTime,
    /// Requests not tracked for latency and timeouts (too many waited at once).
    pub untracked_requests: u64,
}

/// One queue's figures that `Stats` does not carry.
#[derive(Clone, Debug)]
pub(crate) struct QueueMetrics {
    pub topic: String,
    pub queue_id: u32,
    pub traffic: TrafficCounts,
    /// Records not yet pushed to the most advanced online clustering group; `None` while no
    /// such group consumes the queue ([`crate::depth`]).
    pub depth: Option<u64>,
    /// The topic's `max_queue_depth`.
    pub depth_limit: u64,
    /// Request-reply latency (µs) and timeouts of requests stored here; `None` while there
    /// were none (most queues carry events only: no histogram crosses the mesh for them).
    pub requests: Option<Box<(Histogram, u64)>>,
    /// Records pushed again, by clustering group.
    pub redelivered: Vec<(String, u64)>,
    /// Delayed and half messages, when the queue's held log is open.
    pub held: Option<HeldMetrics>,
}

/// One queue's held (delayed and half) messages ([`crate::held`]).
#[derive(Clone, Debug)]
pub(crate) struct HeldMetrics {
    pub pending_delayed: u64,
    pub pending_half: u64,
    pub timer_bytes: u64,
    pub fired: u64,
    pub cancelled: u64,
    pub committed: u64,
    pub rolled_back: u64,
    pub checks_sent: u64,
    /// How late delayed messages were released, µs.
    pub lateness: Box<Histogram>,
}

/// This shard's metrics; built on the shard, inside `admin::snapshot`.
pub(crate) fn snapshot(shard: &Shard) -> ShardMetrics {
    let queues = shard
        .topics
        .queues()
        .iter()
        .map(|queue| QueueMetrics {
            topic: queue.topic.to_string(),
            queue_id: queue.id,
            traffic: queue.traffic.counts(),
            depth: crate::depth::depth(shard, queue),
            depth_limit: shard
                .topics
                .with_config(&queue.topic, |c| c.max_queue_depth)
                .unwrap_or(u64::MAX),
            requests: {
                let (latency, timeouts) = queue.requests.snapshot();
                (latency.count() > 0 || timeouts > 0).then(|| Box::new((latency, timeouts)))
            },
            redelivered: queue.deliveries.redelivered(),
            held: queue.held().map(|held| held.metrics()),
        })
        .collect();
    ShardMetrics {
        sync: Box::new(crate::log::stats::snapshot()),
        queues,
        executor: crate::rt::executor_time(),
        untracked_requests: shard.pending_requests.untracked(),
    }
}

/// Shard 0's task: answers each scrape left at `door` with every shard's metrics, until the
/// task is dropped at close.
pub(crate) async fn serve(shard: Rc<Shard>, door: Arc<Door>) {
    loop {
        let answer = door.next().await;
        let snapshots = crate::admin::collect_snapshots(&shard).await;
        // One answer fits the channel, so this never blocks; a scraper gone is no error.
        let _ = answer.try_send(render::render(&snapshots));
    }
}
