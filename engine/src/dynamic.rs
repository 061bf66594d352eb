//! Dynamic queues (DESIGN §6): a topic with `dynamic_queues` gets as many readable and
//! writable queues as the largest own-area consumer count of its clustering groups (1 to
//! [`QUEUE_COUNT_MAX`]), so queues scale with the consumers that drain them.
//!
//! Shard 0 checks every `dynamic_queues_interval_ms`, one step per topic per check:
//! - grow: readable queues first, so consumers hold a queue before anything is written to
//!   it; writable queues only `dynamic_queues_write_delay_ms` later;
//! - shrink: writable queues first; the readable count drops only once every retiring queue
//!   is drained and fully acknowledged by every online clustering group, so no message is
//!   stranded in a queue nobody reads.
//!
//! The physical `queue_count` never shrinks: a retired queue keeps its log (and offsets), and
//! a later grow reopens it. Each step is an ordinary topic update: registered with the
//! nameservers at once, then announced to subscribers (`TopicConfigChanged`).
//! A topic whose area has no consumer at all keeps its counts: a restarting consumer fleet
//! does not collapse the topic to one queue.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use protocol::control::TopicConfig;

use crate::mesh::{self, MeshMsg, MeshReply};
use crate::shard::Shard;
use crate::topic::QUEUE_COUNT_MAX;

/// Queue counts of a topic on this broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Counts {
    pub queues: u32,
    pub read: u32,
    pub write: u32,
}

impl Counts {
    fn of(config: &TopicConfig) -> Self {
        Self {
            queues: config.queue_count,
            read: config.read_queue_count,
            write: config.write_queue_count,
        }
    }
}

/// The next step from `now` towards `target` queues, if one may be taken: see the module
/// documentation. `write_delay_passed`: the read queues grew long enough ago;
/// `retiring_drained`: queues `target..read` are drained and acknowledged.
pub(crate) fn next_step(
    now: Counts,
    target: u32,
    write_delay_passed: bool,
    retiring_drained: bool,
) -> Option<Counts> {
    let target = target.clamp(1, QUEUE_COUNT_MAX);
    if target > now.read {
        return Some(Counts {
            queues: now.queues.max(target),
            read: target,
            write: now.write.min(target),
        });
    }
    if target > now.write {
        return write_delay_passed.then_some(Counts {
            write: target,
            ..now
        });
    }
    if target < now.write {
        return Some(Counts {
            write: target,
            ..now
        });
    }
    if target < now.read {
        return retiring_drained.then_some(Counts {
            read: target,
            ..now
        });
    }
    None
}

/// What one shard knows of a topic for the next step.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Observation {
    /// Largest number of own-area members of any clustering group of the topic.
    pub consumers: u32,
    /// Whether every queue asked about that this shard owns is drained and acknowledged.
    pub drained: bool,
}

/// This shard's observation of `topic`, for the queues `retiring` (those it owns).
pub(crate) fn observe(shard: &Shard, topic: &str, retiring: &[u32]) -> Observation {
    let (online, consumers) = shard
        .consumption
        .clustering_groups(topic, &shard.config.area);
    let drained = retiring.iter().all(|&queue_id| {
        let Some(queue) = shard.topics.queue(topic, queue_id) else {
            return true; // Another shard's.
        };
        let end = queue.log.next_offset();
        if end == queue.log.start_offset() {
            return true;
        }
        !online.is_empty()
            && online.iter().all(|group| {
                shard
                    .consumption
                    .offsets()
                    .get(topic, group, queue_id)
                    .is_some_and(|committed| committed >= end)
            })
    });
    Observation { consumers, drained }
}

/// Shard 0's loop; ends when the task is dropped.
pub(crate) async fn run(shard: Rc<Shard>) {
    let interval = Duration::from_millis(shard.config.dynamic_queues_interval_ms);
    let write_delay = Duration::from_millis(shard.config.dynamic_queues_write_delay_ms);
    // When each topic's read queues last grew.
    let mut reads_grown: HashMap<String, Instant> = HashMap::new();
    loop {
        crate::rt::sleep(interval).await;
        let dynamic = shard.registry.dynamic();
        reads_grown.retain(|topic, _| dynamic.iter().any(|c| &c.topic == topic));
        for config in dynamic {
            step(&shard, config, write_delay, &mut reads_grown).await;
        }
    }
}

/// Takes at most one step for the topic `config` describes.
async fn step(
    shard: &Rc<Shard>,
    config: TopicConfig,
    write_delay: Duration,
    reads_grown: &mut HashMap<String, Instant>,
) {
    let now = Counts::of(&config);
    let retiring: Vec<u32> = (now.write..now.read).collect();
    let mut seen = observe(shard, &config.topic, &retiring);
    let origin = shard.id;
    let replies = mesh::call_all(shard, |token| MeshMsg::DynamicQuery {
        origin,
        token,
        topic: config.topic.clone(),
        retiring: retiring.clone(),
    })
    .await;
    for reply in replies {
        if let MeshReply::Dynamic(other) = reply {
            seen.consumers = seen.consumers.max(other.consumers);
            seen.drained &= other.drained;
        }
    }
    if seen.consumers == 0 {
        return;
    }
    let write_delay_passed = reads_grown
        .get(&config.topic)
        .is_none_or(|at| at.elapsed() >= write_delay);
    let Some(next) = next_step(now, seen.consumers, write_delay_passed, seen.drained) else {
        return;
    };
    if next.read > now.read {
        reads_grown.insert(config.topic.clone(), Instant::now());
    }
    log::info!(
        "dynamic queues: {} follows {} consumer(s): read {} → {}, write {} → {}",
        config.topic,
        seen.consumers,
        now.read,
        next.read,
        now.write,
        next.write
    );
    // An admin may have changed the topic while the shards answered: step from the current
    // configuration only if the counts are still those observed.
    let Some(current) = shard.registry.get(&config.topic) else {
        return;
    };
    if Counts::of(&current) != now || !current.dynamic_queues {
        return;
    }
    let updated = TopicConfig {
        queue_count: next.queues,
        read_queue_count: next.read,
        write_queue_count: next.write,
        ..current
    };
    let topic = updated.topic.clone();
    if let Err(e) = crate::admin::upsert_topic(shard, updated, false).await {
        log::warn!("dynamic queues: updating {topic}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn counts(queues: u32, read: u32, write: u32) -> Counts {
        Counts {
            queues,
            read,
            write,
        }
    }

    #[test]
    fn grows_reads_then_writes_after_the_delay() {
        let start = counts(1, 1, 1);
        let reads = next_step(start, 3, false, true).unwrap();
        assert_eq!(reads, counts(3, 3, 1));
        assert_eq!(next_step(reads, 3, false, true), None, "writes wait");
        let writes = next_step(reads, 3, true, true).unwrap();
        assert_eq!(writes, counts(3, 3, 3));
        assert_eq!(next_step(writes, 3, true, true), None);
    }

    #[test]
    fn shrinks_writes_then_reads_once_drained() {
        let start = counts(3, 3, 3);
        let writes = next_step(start, 1, true, false).unwrap();
        assert_eq!(writes, counts(3, 3, 1));
        assert_eq!(
            next_step(writes, 1, true, false),
            None,
            "reads wait for the drain"
        );
        let reads = next_step(writes, 1, true, true).unwrap();
        assert_eq!(reads, counts(3, 1, 1), "the physical queues stay");
        let regrown = next_step(reads, 2, false, true).unwrap();
        assert_eq!(regrown, counts(3, 2, 1), "a retired queue is reopened");
    }

    #[test]
    fn targets_are_clamped() {
        assert_eq!(
            next_step(counts(1, 1, 1), 5000, true, true).unwrap().read,
            QUEUE_COUNT_MAX
        );
        assert_eq!(
            next_step(counts(2, 2, 2), 0, true, true).unwrap(),
            counts(2, 2, 1)
        );
    }
}
