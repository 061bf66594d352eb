//! The broker's metric names and labels, rendered from every shard's snapshot.
//!
//! Labels are bounded by what an operator configured: `topic`, `queue` (its id), `group` and
//! `shard`. No client id appears: a broadcast group's offsets are kept per client
//! (`group/client`), so its lag is left out rather than labelled by client.

use std::collections::BTreeMap;

use telemetry::{Histogram, Scrape};

use crate::mesh::ShardSnapshot;
use crate::metrics::HeldMetrics;

/// One scrape of every shard's figures.
pub(super) fn render(snapshots: &[ShardSnapshot]) -> Scrape {
    let mut scrape = Scrape::default();
    for snapshot in snapshots {
        shard_metrics(&mut scrape, snapshot);
    }
    for snapshot in snapshots {
        queue_metrics(&mut scrape, snapshot);
    }
    request_metrics(&mut scrape, snapshots);
    scrape
}

/// Request-reply figures per topic (the service), merged over its queues on every shard.
fn request_metrics(scrape: &mut Scrape, snapshots: &[ShardSnapshot]) {
    let mut topics: BTreeMap<&str, (Histogram, u64)> = BTreeMap::new();
    for queue in snapshots.iter().flat_map(|s| &s.metrics.queues) {
        if let Some(requests) = &queue.requests {
            let (latency, timeouts) = topics.entry(&queue.topic).or_default();
            latency.merge(&requests.0);
            *timeouts += requests.1;
        }
    }
    for (topic, (latency, _)) in &topics {
        scrape.histogram(
            "defibus_request_reply_seconds",
            "Time from a request stored to its reply stored, for replies stored before the \
             request's deadline.",
            &[("topic", topic)],
            latency,
            1e-6,
        );
    }
    for (topic, (_, timeouts)) in &topics {
        scrape.counter(
            "defibus_request_timeouts",
            "Requests whose deadline passed with no reply stored (expired before delivery, \
             unanswered, or answered late).",
            &[("topic", topic)],
            *timeouts,
        );
    }
}

fn shard_metrics(scrape: &mut Scrape, snapshot: &ShardSnapshot) {
    let shard = snapshot.shard.shard_id.to_string();
    let labels = [("shard", shard.as_str())];
    let stats = &snapshot.shard;
    scrape.gauge(
        "defibus_broker_connections",
        "Open client connections.",
        &labels,
        stats.connections,
    );
    scrape.counter(
        "defibus_broker_bad_frames",
        "Frames refused as malformed.",
        &labels,
        stats.bad_frames,
    );
    scrape.counter(
        "defibus_broker_replies",
        "Replies stored in the reply queue.",
        &labels,
        stats.replies,
    );
    for (level, retries) in stats.retries_by_level.iter().enumerate() {
        let level = level.to_string();
        scrape.counter(
            "defibus_broker_retries",
            "Nacked messages appended to a retry topic, by backoff level (the retry topic's \
             queue).",
            &[("shard", shard.as_str()), ("level", level.as_str())],
            *retries,
        );
    }
    scrape.counter(
        "defibus_broker_dead_letters",
        "Nacked messages appended to a dead-letter topic (past max_redeliveries, or given up \
         by an ordered consumer).",
        &labels,
        stats.dead_letters,
    );
    let executor = &snapshot.metrics.executor;
    scrape.counter_f64(
        "defibus_broker_shard_busy_seconds",
        "Time the shard's executor spent running tasks.",
        &labels,
        executor.tasks.as_secs_f64(),
    );
    scrape.counter_f64(
        "defibus_broker_shard_active_seconds",
        "Time the shard's executor was not idle: tasks, io_uring polling, timers (not \
         spinning or parked).",
        &labels,
        executor.total.as_secs_f64(),
    );
    scrape.counter(
        "defibus_broker_shard_tasks",
        "Task polls the shard's executor ran.",
        &labels,
        executor.tasks_run,
    );
    scrape.counter(
        "defibus_request_untracked",
        "Requests stored while the shard already tracked its most (65536) for latency and \
         timeouts: they are in neither figure.",
        &labels,
        snapshot.metrics.untracked_requests,
    );
    let sync = &snapshot.metrics.sync;
    scrape.histogram(
        "defibus_broker_fdatasync_seconds",
        "Latency of each fdatasync of a queue, offset journal or reply queue.",
        &labels,
        &sync.fdatasync_us,
        1e-6,
    );
    scrape.histogram(
        "defibus_broker_group_commit_appends",
        "Appends acknowledged by one fdatasync (sync topics, offset commits, replies).",
        &labels,
        &sync.appends_per_sync,
        1.0,
    );
}

/// One queue's delayed and half messages (ARCHITECTURE §13.3-§13.4).
fn held_metrics(scrape: &mut Scrape, labels: &[(&str, &str)], held: &HeldMetrics) {
    scrape.gauge(
        "defibus_held_pending_delayed",
        "Delayed messages waiting for their time.",
        labels,
        held.pending_delayed,
    );
    scrape.gauge(
        "defibus_held_pending_half",
        "Transactional half messages waiting for commit or rollback.",
        labels,
        held.pending_half,
    );
    scrape.gauge(
        "defibus_held_timer_bytes",
        "Memory of the queue's timer index and pending set.",
        labels,
        held.timer_bytes,
    );
    for (outcome, value) in [
        ("fired", held.fired),
        ("cancelled", held.cancelled),
        ("committed", held.committed),
        ("rolled_back", held.rolled_back),
    ] {
        let mut with_outcome = labels.to_vec();
        with_outcome.push(("outcome", outcome));
        scrape.counter(
            "defibus_held_outcomes",
            "Held messages settled, by outcome.",
            &with_outcome,
            value,
        );
    }
    scrape.counter(
        "defibus_held_checks_sent",
        "Transaction check-backs sent to producer groups.",
        labels,
        held.checks_sent,
    );
    scrape.histogram(
        "defibus_held_fire_lateness_seconds",
        "How long after its time a delayed message was released into its queue.",
        labels,
        &held.lateness,
        1e-6,
    );
}

fn queue_metrics(scrape: &mut Scrape, snapshot: &ShardSnapshot) {
    for (stats, metrics) in snapshot.queues.iter().zip(&snapshot.metrics.queues) {
        debug_assert_eq!(
            (&stats.topic, stats.queue_id),
            (&metrics.topic, metrics.queue_id)
        );
        let queue = stats.queue_id.to_string();
        let labels = [("topic", stats.topic.as_str()), ("queue", queue.as_str())];
        let traffic = &metrics.traffic;
        scrape.counter(
            "defibus_queue_in_records",
            "Records appended.",
            &labels,
            traffic.records_in,
        );
        scrape.counter(
            "defibus_queue_in_bytes",
            "Bytes of record batches appended.",
            &labels,
            traffic.bytes_in,
        );
        scrape.counter(
            "defibus_queue_out_records",
            "Records pushed to consumers, once per subscription reached.",
            &labels,
            traffic.records_out,
        );
        scrape.counter(
            "defibus_queue_out_bytes",
            "Bytes of record batches pushed to consumers, once per subscription reached.",
            &labels,
            traffic.bytes_out,
        );
        scrape.gauge(
            "defibus_queue_end_offset",
            "Offset the next appended record will get.",
            &labels,
            stats.next_offset,
        );
        scrape.gauge(
            "defibus_queue_depth_records",
            "Records not yet pushed to the most advanced online clustering group (0: none consumes).",
            &labels,
            metrics.depth.unwrap_or(0),
        );
        scrape.gauge(
            "defibus_queue_depth_limit_records",
            "The topic's max_queue_depth: produces are refused at it.",
            &labels,
            metrics.depth_limit,
        );
        scrape.counter(
            "defibus_queue_depth_refusals",
            "Produces and requests refused because the queue was at its depth limit.",
            &labels,
            traffic.depth_refusals,
        );
        scrape.counter(
            "defibus_queue_expired_requests",
            "Request records skipped at push because their deadline had passed.",
            &labels,
            stats.expired_requests,
        );
        scrape.counter(
            "defibus_queue_expired_events",
            "Event records skipped at push because their time-to-live had passed.",
            &labels,
            stats.expired_events,
        );
        if let Some(held) = &metrics.held {
            held_metrics(scrape, &labels, held);
        }
        for (group, redelivered) in &metrics.redelivered {
            scrape.counter(
                "defibus_group_redelivered_records",
                "Records pushed to the group again after a push had reached them (its consumer \
                 reconnected, rejoined or the queue moved to another member before a commit).",
                &[
                    ("topic", stats.topic.as_str()),
                    ("queue", queue.as_str()),
                    ("group", group.as_str()),
                ],
                *redelivered,
            );
        }
        for group in stats.groups.iter().filter(|g| !g.group.contains('/')) {
            let lag = stats
                .next_offset
                .saturating_sub(group.committed_offset.unwrap_or(stats.start_offset));
            scrape.gauge(
                "defibus_group_lag_records",
                "Records of the queue after the group's committed offset.",
                &[
                    ("topic", stats.topic.as_str()),
                    ("queue", queue.as_str()),
                    ("group", group.group.as_str()),
                ],
                lag,
            );
        }
    }
}
