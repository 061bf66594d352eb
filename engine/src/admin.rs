//! Topic administration and statistics.
//!
//! Shard 0 owns the registry: it validates a change, persists it (`topic::store_registry`),
//! applies it locally, broadcasts it and waits until every shard applied it, and only then
//! answers, so a client that created a topic may produce to any shard at once.

use std::rc::Rc;

use protocol::control::{QueueStats, ShardStats, TopicConfig, TopicInfo};

use crate::error::Reject;
use crate::mesh::{self, MeshMsg, MeshReply, ShardSnapshot, TopicChange};
use crate::shard::{Shard, close_queue, open_topic};

/// `CreateTopic` (`create`) or `UpdateTopic`, on shard 0.
pub(crate) async fn upsert_topic(
    shard: &Rc<Shard>,
    config: TopicConfig,
    create: bool,
) -> Result<(), Reject> {
    crate::topic::validate_config(&config)?;
    shard.registry.upsert(&config, create)?;
    log::info!(
        "topic {} {}",
        config.topic,
        if create { "created" } else { "updated" }
    );
    let topic = config.topic.clone();
    broadcast(shard, TopicChange::Upsert(config)).await;
    // Routes first, then the answer (and for an update the news): the nameservers route a
    // new topic as soon as its creator hears it exists, rather than at the next interval,
    // and a subscriber told to refetch gets the new route.
    crate::register::register_now(shard).await;
    if !create {
        crate::group::announce_change(shard, &topic);
        shard
            .tell_peers(|| MeshMsg::TopicChanged {
                topic: topic.clone(),
            })
            .await;
    }
    Ok(())
}

/// `DeleteTopic`, on shard 0: the topic's queues are closed and their data removed.
pub(crate) async fn delete_topic(shard: &Rc<Shard>, topic: String) -> Result<(), Reject> {
    shard.registry.delete(&topic)?;
    log::info!("topic {topic} deleted");
    broadcast(shard, TopicChange::Delete(topic.clone())).await;
    crate::topic::discard_topic_dir(&shard.config.data_dir, &topic);
    Ok(())
}

/// Applies `change` here, then on every other shard, and waits for them.
async fn broadcast(shard: &Rc<Shard>, change: TopicChange) {
    let copy = match &change {
        TopicChange::Upsert(config) => TopicChange::Upsert(config.clone()),
        TopicChange::Delete(topic) => TopicChange::Delete(topic.clone()),
    };
    apply_change(shard, copy).await;
    let origin = shard.id;
    mesh::call_all(shard, |token| MeshMsg::ApplyTopic {
        origin,
        token,
        change: match &change {
            TopicChange::Upsert(config) => TopicChange::Upsert(config.clone()),
            TopicChange::Delete(topic) => TopicChange::Delete(topic.clone()),
        },
    })
    .await;
}

/// Applies a registry change on this shard: opens or closes owned queues, rebalances groups.
pub(crate) async fn apply_change(shard: &Rc<Shard>, change: TopicChange) {
    match change {
        TopicChange::Upsert(config) => {
            // The current entry keeps serving (produces, routes) while new queues open.
            let previous = shard.topics.entry(&config.topic);
            let opened = open_topic(
                &shard.config,
                shard.id,
                shard.count,
                &config,
                previous.as_ref(),
            )
            .await;
            let entry = match opened {
                Ok(entry) => entry,
                Err(e) => {
                    log::error!(
                        "shard {}: opening queues of {}: {e}",
                        shard.id,
                        config.topic
                    );
                    return;
                }
            };
            let kept = entry.queues.len();
            shard.topics.insert(entry);
            if let Some(previous) = previous {
                for queue in previous.queues.into_iter().skip(kept).flatten() {
                    close_queue(shard.id, queue).await;
                }
            }
            crate::group::rebalance_topic(shard, &config.topic);
        }
        TopicChange::Delete(topic) => {
            crate::group::drop_topic(shard, &topic);
            let entry = shard.topics.remove(&topic);
            for queue in entry.into_iter().flat_map(|e| e.queues).flatten() {
                close_queue(shard.id, queue).await;
            }
        }
    }
}

/// This shard's statistics.
pub(crate) fn snapshot(shard: &Shard) -> ShardSnapshot {
    let mut queues = Vec::new();
    for queue in shard.topics.queues() {
        let groups = shard.consumption.queue_stats(&queue.topic, queue.id);
        queues.push(QueueStats {
            topic: queue.topic.to_string(),
            queue_id: queue.id,
            shard_id: shard.id as u32,
            start_offset: queue.log.start_offset(),
            next_offset: queue.log.next_offset(),
            expired_requests: queue.expired_requests.get(),
            expired_events: queue.expired_events.get(),
            damage: queue.log.damage().map(|d| protocol::control::QueueDamage {
                offset: d.offset,
                detail: d.to_string(),
            }),
            skipped: queue
                .log
                .skipped_ranges()
                .iter()
                .map(|r| protocol::control::SkippedOffsets {
                    from: r.from,
                    to: r.to,
                    reason: r.reason.to_string(),
                })
                .collect(),
            groups,
            replication: queue
                .replication()
                .map(|r| r.status(queue.id, queue.log.next_offset())),
        });
    }
    ShardSnapshot {
        shard: ShardStats {
            shard_id: shard.id as u32,
            connections: shard.clients.len() as u64,
            bad_frames: shard.counters.bad_frames.get(),
            partial_frame_bytes: shard.frame_budget.reserved() as u64,
            replies: shard.counters.replies.get(),
            retries_by_level: shard.counters.retries_by_level.borrow().clone(),
            dead_letters: shard.counters.dead_letters.get(),
        },
        queues,
        // Built in the same turn as `queues`, so the two list the same queues in one order.
        metrics: crate::metrics::snapshot(shard),
    }
}

/// Every shard's snapshot, this shard's first.
pub(crate) async fn collect_snapshots(shard: &Rc<Shard>) -> Vec<ShardSnapshot> {
    let origin = shard.id;
    let replies = mesh::call_all(shard, |token| MeshMsg::Collect { origin, token }).await;
    let local = snapshot(shard);
    std::iter::once(local)
        .chain(replies.into_iter().filter_map(|r| match r {
            MeshReply::Stats(s) => Some(s),
            MeshReply::Done
            | MeshReply::RedirectTargets { .. }
            | MeshReply::Dynamic(_)
            | MeshReply::Scrubbed(_)
            | MeshReply::Served(_) => None,
        }))
        .collect()
}

/// Every shard's statistics, merged and sorted.
pub(crate) async fn collect(shard: &Rc<Shard>) -> (Vec<ShardStats>, Vec<QueueStats>) {
    let mut shards = Vec::with_capacity(shard.count);
    let mut queues = Vec::new();
    for snapshot in collect_snapshots(shard).await {
        shards.push(snapshot.shard);
        queues.extend(snapshot.queues);
    }
    shards.sort_by_key(|s| s.shard_id);
    queues.sort_by(|a, b| (&a.topic, a.queue_id).cmp(&(&b.topic, b.queue_id)));
    (shards, queues)
}

/// Every topic with its queues' depths: the body of `ListTopics` and of registrations.
///
/// A queue's depth is what the most advanced clustering group has yet to be pushed (DeFiBus:
/// the minimum over online unicast groups); zero while no group consumes it.
pub(crate) async fn topic_infos(shard: &Rc<Shard>) -> Vec<TopicInfo> {
    let (_, queues) = collect(shard).await;
    let configs = shard.topics.configs();
    let mut infos: Vec<TopicInfo> = configs
        .into_iter()
        .map(|c| TopicInfo {
            queue_depths: vec![0; c.queue_count as usize],
            topic: c.topic,
            queue_count: c.queue_count,
            read_queue_count: c.read_queue_count,
            write_queue_count: c.write_queue_count,
            flush_mode: c.flush_mode,
            max_queue_depth: c.max_queue_depth,
            retention_bytes: c.retention_bytes,
            retention_age_ms: c.retention_age_ms,
            redirects: c.redirects,
            dynamic_queues: c.dynamic_queues,
            replicas: c.replicas,
            acks: c.acks,
            replication: Vec::new(),
        })
        .collect();
    infos.sort_by(|a, b| a.topic.cmp(&b.topic));
    for q in queues {
        let Ok(at) = infos.binary_search_by(|i| i.topic.as_str().cmp(&q.topic)) else {
            continue;
        };
        if let Some(replication) = q.replication.clone() {
            infos[at].replication.push(replication);
        }
        let delivered = q.groups.iter().map(|g| g.delivered_offset).max();
        if let (Some(delivered), Some(depth)) = (
            delivered,
            infos[at].queue_depths.get_mut(q.queue_id as usize),
        ) {
            *depth = q.next_offset.saturating_sub(delivered);
        }
    }
    infos
}
