//! The JSON answers of the read API, built from what the brokers, nameservers and SGS answer
//! the CLI (`admin broker list`, `admin topic list|stats`, `sgs service list`): pure
//! functions, so each figure is checked against its source without a bus.
//!
//! Every answer carries `read_at_ms` (proxy clock, ms since the Unix epoch, taken once the
//! brokers answered): rates are the difference of two reads divided by the difference of
//! their `read_at_ms` (see the module docs of [`super`]).

use std::collections::BTreeMap;

use protocol::control::{
    BrokerStats, BrokerSummary, ClusterInfo, ServiceRecord, ServiceState, TopicInfo,
};
use serde::Serialize;

use crate::config::CONSOLE_QUEUE_ROWS_MAX;

/// A broker that could not be read: the rest of the answer stands without it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BrokerError {
    /// The broker's id.
    pub broker_id: String,
    /// Why, for humans.
    pub message: String,
}

/// `GET /v1/cluster`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterView {
    /// When the read ended, ms since the Unix epoch.
    pub read_at_ms: u64,
    /// The live brokers the nameservers know, by id.
    pub brokers: Vec<BrokerView>,
    /// Every nameserver the proxy is configured with, and what each knows.
    pub nameservers: Vec<NameserverView>,
    /// More brokers are live than one answer lists.
    pub truncated: bool,
}

/// One live broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BrokerView {
    /// Its id within its cluster.
    pub broker_id: String,
    /// Its cluster.
    pub cluster: String,
    /// Its area code.
    pub area: String,
    /// Host name or IP.
    pub address: String,
    /// Topics it holds.
    pub topic_count: u32,
    /// How long ago its last registration arrived (nameserver clock against the proxy's).
    pub registered_ms_ago: u64,
    /// Its shards, by id.
    pub shards: Vec<ShardView>,
    /// Why its statistics could not be read (then the shards' counters are null).
    pub error: Option<String>,
}

/// One shard of a broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ShardView {
    /// The shard id.
    pub shard_id: u32,
    /// The port it listens on, as registered.
    pub port: Option<u16>,
    /// Open client connections.
    pub connections: Option<u64>,
    /// Frames refused as malformed, oversized or cut off.
    pub bad_frames: Option<u64>,
    /// Replies appended to the shard's reply queue.
    pub replies: Option<u64>,
}

/// One configured nameserver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NameserverView {
    /// `host:port`.
    pub address: String,
    /// It answered.
    pub reachable: bool,
    /// Live brokers it knows (null when unreachable).
    pub brokers: Option<u32>,
    /// Why it did not answer.
    pub error: Option<String>,
}

/// The cluster answer from the first nameserver's broker list, each broker's statistics
/// (or why they are missing) and each nameserver's own answer.
pub fn cluster(
    read_at_ms: u64,
    info: &ClusterInfo,
    stats: &[(String, Result<BrokerStats, String>)],
    nameservers: Vec<NameserverView>,
    brokers_max: usize,
) -> ClusterView {
    let mut summaries: Vec<&BrokerSummary> = info.brokers.iter().collect();
    summaries.sort_by(|a, b| a.broker_id.cmp(&b.broker_id));
    let truncated = summaries.len() > brokers_max;
    summaries.truncate(brokers_max);
    let brokers = summaries
        .into_iter()
        .map(|b| {
            let found = stats.iter().find(|(id, _)| *id == b.broker_id);
            let (shard_stats, error) = match found.map(|(_, s)| s) {
                Some(Ok(s)) => (Some(&s.shards), None),
                Some(Err(e)) => (None, Some(e.clone())),
                None => (None, Some("not read".to_owned())),
            };
            let shard_count = shard_stats.map_or(0, Vec::len).max(b.shard_ports.len());
            let shards = (0..shard_count)
                .map(|i| {
                    let s =
                        shard_stats.and_then(|all| all.iter().find(|s| s.shard_id as usize == i));
                    ShardView {
                        shard_id: i as u32,
                        port: b.shard_ports.get(i).copied(),
                        connections: s.map(|s| s.connections),
                        bad_frames: s.map(|s| s.bad_frames),
                        replies: s.map(|s| s.replies),
                    }
                })
                .collect();
            BrokerView {
                broker_id: b.broker_id.clone(),
                cluster: b.cluster.clone(),
                area: b.area.clone(),
                address: b.address.clone(),
                topic_count: b.topic_count,
                registered_ms_ago: u64::try_from(read_at_ms as i64 - b.last_heartbeat_ms)
                    .unwrap_or(0),
                shards,
                error,
            }
        })
        .collect();
    ClusterView {
        read_at_ms,
        brokers,
        nameservers,
        truncated,
    }
}

/// `GET /v1/topics`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TopicsView {
    /// When the read ended, ms since the Unix epoch.
    pub read_at_ms: u64,
    /// The topics, by name.
    pub topics: Vec<TopicView>,
    /// Brokers that could not be read.
    pub errors: Vec<BrokerError>,
    /// Topics were left out to bound the answer.
    pub truncated: bool,
}

/// One topic, across the brokers that hold it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TopicView {
    /// `[area]-[serviceId]`.
    pub topic: String,
    /// `async` or `sync`.
    pub flush: &'static str,
    /// Unconsumed messages a queue may hold before produces are refused.
    pub max_queue_depth: u64,
    /// Copies of each queue.
    pub replicas: u8,
    /// Unconsumed messages in all its queues.
    pub depth: u64,
    /// Its queues, by broker then queue id.
    pub queues: Vec<QueueView>,
}

/// One queue of a topic on one broker: `admin topic stats`' START and NEXT, `admin topic
/// list`'s depth and limit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QueueView {
    /// The broker holding it.
    pub broker_id: String,
    /// The queue id.
    pub queue_id: u32,
    /// The shard owning it.
    pub shard_id: u32,
    /// The oldest offset it still holds.
    pub start_offset: u64,
    /// The offset its next record gets (its end).
    pub next_offset: u64,
    /// Unconsumed messages, as the broker counts them for its limit (null when the broker
    /// listed no depth for it).
    pub depth: Option<u64>,
    /// The depth limit.
    pub max_depth: u64,
    /// Consumers may read it.
    pub readable: bool,
    /// Producers may write it.
    pub writable: bool,
    /// Requests dropped undelivered since the broker started: their deadline passed first.
    pub expired_requests: u64,
    /// The first offset not served because the stored data is damaged (`log repair`).
    pub damaged_at: Option<u64>,
}

/// One broker's topic list and statistics, or why they could not be read.
pub type BrokerRead = Result<(Vec<TopicInfo>, BrokerStats), String>;

/// Each broker's [`BrokerRead`] by broker id, in broker order.
pub type BrokerReads = [(String, BrokerRead)];

/// The topics answer: every queue the brokers report, `only` one topic when given.
pub fn topics(read_at_ms: u64, reads: &BrokerReads, only: Option<&str>) -> TopicsView {
    let mut by_topic: BTreeMap<&str, TopicView> = BTreeMap::new();
    let mut errors = Vec::new();
    for (broker_id, read) in reads {
        let (infos, stats) = match read {
            Ok(read) => read,
            Err(message) => {
                errors.push(BrokerError {
                    broker_id: broker_id.clone(),
                    message: message.clone(),
                });
                continue;
            }
        };
        for queue in &stats.queues {
            if only.is_some_and(|t| t != queue.topic) {
                continue;
            }
            // A topic deleted between the two calls has statistics and no settings: skipped.
            let Some(info) = infos.iter().find(|i| i.topic == queue.topic) else {
                continue;
            };
            let view = by_topic
                .entry(info.topic.as_str())
                .or_insert_with(|| TopicView {
                    topic: info.topic.clone(),
                    flush: info.flush_mode.as_str(),
                    max_queue_depth: info.max_queue_depth,
                    replicas: info.replicas.max(1),
                    depth: 0,
                    queues: Vec::new(),
                });
            let depth = info.queue_depths.get(queue.queue_id as usize).copied();
            view.depth += depth.unwrap_or(0);
            view.queues.push(QueueView {
                broker_id: broker_id.clone(),
                queue_id: queue.queue_id,
                shard_id: queue.shard_id,
                start_offset: queue.start_offset,
                next_offset: queue.next_offset,
                depth,
                max_depth: info.max_queue_depth,
                readable: queue.queue_id < info.read_queue_count,
                writable: queue.queue_id < info.write_queue_count,
                expired_requests: queue.expired_requests,
                damaged_at: queue.damage.as_ref().map(|d| d.offset),
            });
        }
    }
    let (topics, truncated) = bounded(by_topic.into_values(), |t| t.queues.len());
    TopicsView {
        read_at_ms,
        topics,
        errors,
        truncated,
    }
}

/// `GET /v1/groups`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupsView {
    /// When the read ended, ms since the Unix epoch.
    pub read_at_ms: u64,
    /// Each group on each topic it consumes, by group then topic.
    pub groups: Vec<GroupView>,
    /// Brokers that could not be read.
    pub errors: Vec<BrokerError>,
    /// Groups were left out to bound the answer.
    pub truncated: bool,
}

/// One consumer group on one topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupView {
    /// The group (a broadcast member shows as `group/client id`).
    pub group: String,
    /// The topic.
    pub topic: String,
    /// The members holding at least one queue, by client id.
    pub members: Vec<String>,
    /// Messages not yet committed, over every queue.
    pub lag: u64,
    /// Its progress on each queue.
    pub queues: Vec<GroupQueueView>,
}

/// A group's progress on one queue, as `admin topic stats` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupQueueView {
    /// The broker holding the queue.
    pub broker_id: String,
    /// The queue id.
    pub queue_id: u32,
    /// The member the queue is assigned to, null when none is.
    pub member: Option<String>,
    /// The next offset the broker pushes to the group.
    pub delivered_offset: u64,
    /// What the group committed, null before its first commit.
    pub committed_offset: Option<u64>,
    /// The queue's end.
    pub next_offset: u64,
    /// `next_offset` minus the committed offset (minus the queue's start before a commit).
    pub lag: u64,
}

/// The groups answer: every group with progress on a queue, `only` on one topic when given.
pub fn groups(read_at_ms: u64, reads: &BrokerReads, only: Option<&str>) -> GroupsView {
    let mut by_group: BTreeMap<(&str, &str), GroupView> = BTreeMap::new();
    let mut errors = Vec::new();
    for (broker_id, read) in reads {
        let stats = match read {
            Ok((_, stats)) => stats,
            Err(message) => {
                errors.push(BrokerError {
                    broker_id: broker_id.clone(),
                    message: message.clone(),
                });
                continue;
            }
        };
        for queue in &stats.queues {
            if only.is_some_and(|t| t != queue.topic) {
                continue;
            }
            for progress in &queue.groups {
                let view = by_group
                    .entry((progress.group.as_str(), queue.topic.as_str()))
                    .or_insert_with(|| GroupView {
                        group: progress.group.clone(),
                        topic: queue.topic.clone(),
                        members: Vec::new(),
                        lag: 0,
                        queues: Vec::new(),
                    });
                // The same figure `admin topic stats` prints in LAG.
                let lag = queue
                    .next_offset
                    .saturating_sub(progress.committed_offset.unwrap_or(queue.start_offset));
                view.lag += lag;
                let member = (!progress.client_id.is_empty()).then(|| progress.client_id.clone());
                if let Some(member) = member.as_ref().filter(|m| !view.members.contains(m)) {
                    view.members.push(member.clone());
                }
                view.queues.push(GroupQueueView {
                    broker_id: broker_id.clone(),
                    queue_id: queue.queue_id,
                    member,
                    delivered_offset: progress.delivered_offset,
                    committed_offset: progress.committed_offset,
                    next_offset: queue.next_offset,
                    lag,
                });
            }
        }
    }
    for view in by_group.values_mut() {
        view.members.sort();
    }
    let (groups, truncated) = bounded(by_group.into_values(), |g| g.queues.len());
    GroupsView {
        read_at_ms,
        groups,
        errors,
        truncated,
    }
}

/// Keeps whole items, in order, while their rows stay within [`CONSOLE_QUEUE_ROWS_MAX`];
/// says whether any was left out.
fn bounded<T>(items: impl Iterator<Item = T>, rows: impl Fn(&T) -> usize) -> (Vec<T>, bool) {
    let mut kept = Vec::new();
    let mut total = 0;
    let mut truncated = false;
    for item in items {
        total += rows(&item);
        if total > CONSOLE_QUEUE_ROWS_MAX {
            truncated = true;
            break;
        }
        kept.push(item);
    }
    (kept, truncated)
}

/// `GET /v1/services`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServicesView {
    /// When the read ended, ms since the Unix epoch.
    pub read_at_ms: u64,
    /// The SGS asked.
    pub sgs: String,
    /// The services it holds, by id.
    pub services: Vec<ServiceView>,
    /// Services were left out to bound the answer.
    pub truncated: bool,
}

/// One service, as SGS records it, with where GSL resolves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceView {
    /// The service id.
    pub service_id: String,
    /// Human-readable name.
    pub name: String,
    /// Owning team or person.
    pub owner: String,
    /// `applied`, `deployed` or `offline`.
    pub state: &'static str,
    /// The areas it is deployed to (or will be).
    pub areas: Vec<String>,
    /// Its topic in each area.
    pub topics: Vec<String>,
    /// Queues of each topic.
    pub queue_count: u32,
    /// Depth limit of each queue.
    pub max_queue_depth: u64,
    /// `async` or `sync`.
    pub flush: &'static str,
    /// The areas GSL resolves it to from the proxy's area, nearest first; null when not
    /// asked (no GSL configured, not deployed, or past the lookups of one answer).
    pub resolved_areas: Option<Vec<String>>,
    /// Why GSL could not be asked.
    pub resolve_error: Option<String>,
    /// The lifecycle actions that move it on from its state (`POST
    /// /v1/services/{id}/{action}`).
    pub actions: Vec<&'static str>,
}

/// Where GSL resolves a service: its areas, or why that is unknown.
pub type Resolution = Result<Vec<String>, String>;

/// One service's view; `resolution` when GSL was asked.
pub fn service(record: &ServiceRecord, resolution: Option<Resolution>) -> ServiceView {
    let (resolved_areas, resolve_error) = match resolution {
        Some(Ok(areas)) => (Some(areas), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    let service = &record.service_id;
    ServiceView {
        service_id: service.clone(),
        name: record.name.clone(),
        owner: record.owner.clone(),
        state: state_name(record.state),
        areas: record.deployed_areas.clone(),
        topics: record
            .deployed_areas
            .iter()
            .map(|area| format!("{area}-{service}"))
            .collect(),
        queue_count: record.queue_count,
        max_queue_depth: record.max_queue_depth,
        flush: record.flush_mode.as_str(),
        resolved_areas,
        resolve_error,
        actions: match record.state {
            ServiceState::Applied => vec!["deploy", "offline"],
            ServiceState::Deployed => vec!["offline"],
            ServiceState::Offline => vec!["deploy"],
        },
    }
}

/// A lifecycle state as `sgs service list` prints it.
pub fn state_name(state: ServiceState) -> &'static str {
    match state {
        ServiceState::Applied => "applied",
        ServiceState::Deployed => "deployed",
        ServiceState::Offline => "offline",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::control::{FlushMode, GroupQueueStats, QueueDamage, QueueStats, ShardStats};

    fn info(topic: &str, depths: Vec<u64>) -> TopicInfo {
        TopicInfo {
            topic: topic.into(),
            queue_count: depths.len() as u32,
            read_queue_count: depths.len() as u32,
            write_queue_count: depths.len() as u32 - 1,
            flush_mode: FlushMode::Sync,
            max_queue_depth: 500,
            queue_depths: depths,
            ..TopicInfo::default()
        }
    }

    fn queue(
        topic: &str,
        id: u32,
        start: u64,
        next: u64,
        groups: Vec<GroupQueueStats>,
    ) -> QueueStats {
        QueueStats {
            topic: topic.into(),
            queue_id: id,
            start_offset: start,
            next_offset: next,
            groups,
            ..QueueStats::default()
        }
    }

    fn progress(
        group: &str,
        member: &str,
        delivered: u64,
        committed: Option<u64>,
    ) -> GroupQueueStats {
        GroupQueueStats {
            group: group.into(),
            client_id: member.into(),
            delivered_offset: delivered,
            committed_offset: committed,
        }
    }

    fn reads() -> Vec<(String, BrokerRead)> {
        let mut damaged = queue("A10-1", 1, 2, 9, vec![progress("g", "", 9, None)]);
        damaged.damage = Some(QueueDamage {
            offset: 7,
            detail: "crc".into(),
        });
        let stats = BrokerStats {
            broker_id: "broker-a".into(),
            queues: vec![
                queue("A10-1", 0, 0, 10, vec![progress("g", "m1", 8, Some(6))]),
                damaged,
                queue("A10-2", 0, 0, 3, vec![]),
            ],
            ..BrokerStats::default()
        };
        vec![
            (
                "broker-a".into(),
                Ok((
                    vec![info("A10-1", vec![4, 7]), info("A10-2", vec![3])],
                    stats,
                )),
            ),
            (
                "broker-b".into(),
                Err("broker-b: connection refused".into()),
            ),
        ]
    }

    #[test]
    fn topics_join_offsets_with_depths_and_name_unreadable_brokers() {
        let view = topics(5, &reads(), None);
        assert_eq!(view.read_at_ms, 5);
        assert_eq!(
            view.topics
                .iter()
                .map(|t| t.topic.as_str())
                .collect::<Vec<_>>(),
            ["A10-1", "A10-2"]
        );
        let first = &view.topics[0];
        assert_eq!(
            (first.flush, first.max_queue_depth, first.depth),
            ("sync", 500, 11)
        );
        let q1 = &first.queues[1];
        assert_eq!(
            (q1.start_offset, q1.next_offset, q1.depth, q1.damaged_at),
            (2, 9, Some(7), Some(7))
        );
        assert!(
            q1.readable && !q1.writable,
            "queue 1 is past write_queue_count 1"
        );
        assert_eq!(view.errors.len(), 1);
        assert_eq!(view.errors[0].broker_id, "broker-b");
        assert!(!view.truncated);
        let only = topics(5, &reads(), Some("A10-2"));
        assert_eq!(only.topics.len(), 1);
        assert_eq!(only.topics[0].queues[0].next_offset, 3);
    }

    #[test]
    fn group_lag_is_what_admin_topic_stats_prints() {
        let view = groups(5, &reads(), None);
        assert_eq!(view.groups.len(), 1);
        let g = &view.groups[0];
        assert_eq!((g.group.as_str(), g.topic.as_str()), ("g", "A10-1"));
        // Queue 0: NEXT 10 - COMMITTED 6; queue 1: no commit, NEXT 9 - START 2.
        assert_eq!(g.queues[0].lag, 4);
        assert_eq!(g.queues[1].lag, 7);
        assert_eq!(g.lag, 11);
        assert_eq!(g.members, ["m1"]);
        assert_eq!(g.queues[1].member, None);
    }

    #[test]
    fn answers_keep_whole_topics_within_the_row_bound() {
        let (kept, truncated) = bounded([4000, 4000, 4000, 1].into_iter(), |n| *n);
        assert_eq!(kept, [4000, 4000]);
        assert!(truncated);
        let (kept, truncated) = bounded([1, 2].into_iter(), |n| *n);
        assert_eq!((kept.len(), truncated), (2, false));
    }

    #[test]
    fn the_cluster_shows_every_shard_with_or_without_its_counters() {
        let summary = |id: &str| BrokerSummary {
            broker_id: id.into(),
            cluster: "c".into(),
            area: "A10".into(),
            address: "127.0.0.1".into(),
            shard_ports: vec![7000, 7001],
            topic_count: 2,
            last_heartbeat_ms: 900,
        };
        let info = ClusterInfo {
            brokers: vec![summary("b"), summary("a")],
        };
        let stats = BrokerStats {
            shards: vec![ShardStats {
                shard_id: 1,
                connections: 3,
                ..ShardStats::default()
            }],
            ..BrokerStats::default()
        };
        let reads = vec![
            ("a".to_owned(), Ok(stats)),
            ("b".to_owned(), Err("timed out".to_owned())),
        ];
        let view = cluster(1000, &info, &reads, Vec::new(), 1);
        assert!(view.truncated, "two brokers, one listed");
        let a = &view.brokers[0];
        assert_eq!((a.broker_id.as_str(), a.registered_ms_ago), ("a", 100));
        assert_eq!(a.shards[1].connections, Some(3));
        assert_eq!(a.shards[0].connections, None);
        assert_eq!(a.shards[1].port, Some(7001));
        let view = cluster(1000, &info, &reads, Vec::new(), 10);
        assert_eq!(view.brokers[1].error.as_deref(), Some("timed out"));
    }

    #[test]
    fn services_offer_the_actions_their_state_allows() {
        let record = ServiceRecord {
            service_id: "20190003".into(),
            deployed_areas: vec!["A10".into(), "B20".into()],
            state: ServiceState::Deployed,
            ..ServiceRecord::default()
        };
        let view = service(&record, Some(Ok(vec!["A10".into()])));
        assert_eq!(view.topics, ["A10-20190003", "B20-20190003"]);
        assert_eq!(view.actions, ["offline"]);
        assert_eq!(view.state, "deployed");
        assert_eq!(view.resolved_areas, Some(vec!["A10".to_owned()]));
        let applied = ServiceRecord {
            state: ServiceState::Applied,
            ..record
        };
        assert_eq!(service(&applied, None).actions, ["deploy", "offline"]);
    }
}
