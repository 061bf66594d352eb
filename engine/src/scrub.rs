//! Scrubbing on a shard: in the background at `storage.scrub_bytes_per_sec`, one queue after
//! another, a pass every `storage.scrub_interval_ms`; and on demand (`defibus log scrub`),
//! unpaced. What a scrub finds is recorded in the queue's log (see `log::damage`), shown by
//! `admin topic stats` and reported to consumers that reach it.

use std::rc::Rc;
use std::time::Duration;

use protocol::control::{QueueDamage, QueueScrub};

use crate::log::scrub::{Pacer, ScrubReport};
use crate::queue::Queue;
use crate::shard::Shard;

/// Runs background scrub passes until dropped; returns at once when the rate is 0.
pub(crate) async fn run(shard: Rc<Shard>) {
    let rate = shard.config.storage.scrub_bytes_per_sec;
    if rate == 0 {
        return;
    }
    let pause = Duration::from_millis(shard.config.storage.scrub_interval_ms);
    loop {
        let mut pacer = Pacer::new(Some(rate));
        let mut bytes = 0;
        let queues = shard.topics.queues();
        for queue in &queues {
            bytes += scrub_queue(shard.id, queue, &mut pacer).await.bytes;
        }
        log::info!(
            "shard {}: background scrub verified {bytes} bytes of {} queues",
            shard.id,
            queues.len()
        );
        crate::rt::sleep(pause).await;
    }
}

/// Scrubs the queues of this shard whose topic is `topic` (all when empty), unpaced.
pub(crate) async fn on_demand(shard: &Shard, topic: &str) -> Vec<QueueScrub> {
    let mut pacer = Pacer::new(None);
    let mut out = Vec::new();
    for queue in shard
        .topics
        .queues()
        .iter()
        .filter(|q| topic.is_empty() || &*q.topic == topic)
    {
        let (report, error) = match queue.log.scrub(&mut pacer).await {
            Ok(report) => (report, String::new()),
            Err(e) => (ScrubReport::default(), e.to_string()),
        };
        out.push(QueueScrub {
            topic: queue.topic.to_string(),
            queue_id: queue.id,
            segments: report.segments as u64,
            bytes: report.bytes,
            batches: report.batches,
            // The queue's earliest damage, whoever found it.
            damage: queue.log.damage().map(|d| QueueDamage {
                offset: d.offset,
                detail: d.to_string(),
            }),
            index_problems: report.index_problems,
            error,
        });
    }
    out
}

/// One background scrub of a queue; what it finds is logged (damage by the log itself).
async fn scrub_queue(shard_id: usize, queue: &Queue, pacer: &mut Pacer) -> ScrubReport {
    match queue.log.scrub(pacer).await {
        Ok(report) => {
            for problem in &report.index_problems {
                log::warn!(
                    "shard {shard_id}: scrub of {}/{}: damaged index, reads scan instead and `defibus log repair` rebuilds it: {problem}",
                    queue.topic,
                    queue.id
                );
            }
            report
        }
        Err(e) => {
            // An IO error reading: the next pass tries again; reads report their own.
            log::warn!(
                "shard {shard_id}: scrub of {}/{} stopped: {e}",
                queue.topic,
                queue.id
            );
            ScrubReport::default()
        }
    }
}

/// How long an on-demand scrub waits for the other shards: long, as it reads everything.
const ON_DEMAND_WITHIN: Duration = Duration::from_secs(3600);

/// `ScrubLogs`: every shard scrubs its queues of `topic` (all when empty) now; merged, sorted.
pub(crate) async fn broker_wide(shard: &Rc<Shard>, topic: String) -> Vec<QueueScrub> {
    let origin = shard.id;
    let others = crate::mesh::call_all_within(shard, ON_DEMAND_WITHIN, |token| {
        crate::mesh::MeshMsg::Scrub {
            origin,
            token,
            topic: topic.clone(),
        }
    });
    let (local, others) = futures_lite::future::zip(on_demand(shard, &topic), others).await;
    let mut queues = local;
    for reply in others {
        if let crate::mesh::MeshReply::Scrubbed(found) = reply {
            queues.extend(found);
        }
    }
    queues.sort_by(|a, b| (&a.topic, a.queue_id).cmp(&(&b.topic, b.queue_id)));
    queues
}
