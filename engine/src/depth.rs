//! Circuit breaking on queue depth (DESIGN §6, DeFiBus's queue-depth flow control).
//!
//! A queue's depth is its next offset minus the furthest offset pushed by an online clustering
//! group (the minimum lag over those groups). At `max_queue_depth` a produce or request to the
//! queue is refused with `QueueDepthExceeded`: a stuck or dead consumer then sends producers to
//! other queues at once, and requests fail fast instead of waiting behind it for a reply that
//! would come too late. Broadcast groups do not count: every instance gets every message, so
//! one slow instance must not stop the topic. A queue nobody consumes has no depth.

use protocol::codes::Status;

use crate::error::Reject;
use crate::queue::Queue;
use crate::shard::Shard;

/// Percent of `max_queue_depth` at which the broker warns that a queue is filling up.
pub(crate) const WARN_PERCENT: u64 = 70;

/// The depth of `queue`, or `None` while no online clustering group consumes it.
pub(crate) fn depth(shard: &Shard, queue: &Queue) -> Option<u64> {
    let delivered = shard
        .consumption
        .furthest_delivered(&queue.topic, queue.id)?;
    Some(queue.log.next_offset().saturating_sub(delivered))
}

/// Refuses a produce to `queue` once its depth reached `max_depth`; warns (once per
/// crossing) when it passes [`WARN_PERCENT`] of it.
pub(crate) fn admit(shard: &Shard, queue: &Queue, max_depth: u64) -> Result<(), Reject> {
    let Some(depth) = depth(shard, queue) else {
        queue.depth_warned.set(false);
        return Ok(());
    };
    let warn_at = max_depth.saturating_mul(WARN_PERCENT) / 100;
    if depth < warn_at {
        queue.depth_warned.set(false);
    } else if !queue.depth_warned.replace(true) {
        log::warn!(
            "shard {}: queue {} of {} holds {depth} unconsumed messages, {}% of its \
             max_queue_depth {max_depth}; produces are refused at the limit",
            shard.id,
            queue.id,
            queue.topic,
            depth * 100 / max_depth.max(1),
        );
    }
    if depth >= max_depth {
        queue.traffic.refused_at_depth();
        return Err(Reject::new(
            Status::QueueDepthExceeded,
            format!(
                "queue {} of {} holds {depth} unconsumed messages (max_queue_depth \
                 {max_depth}); send to another queue",
                queue.id, queue.topic
            ),
        ));
    }
    Ok(())
}
