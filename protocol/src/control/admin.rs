//! Broker admin and registration replies: topic names and lists, statistics, and the
//! nameserver's answers to a broker (`docs/ARCHITECTURE.md` §4.1).

use rkyv::{Archive, Deserialize, Serialize};

use super::{ControlError, TopicInfo};
use crate::names::Topic;

/// A topic named alone: the body of `DeleteTopic` and `TopicRoute`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct TopicName {
    /// The topic, `[area]-[serviceId]`.
    pub topic: String,
}

impl TopicName {
    /// The topic, parsed.
    pub fn topic(&self) -> Result<Topic, ControlError> {
        Ok(self.topic.parse()?)
    }
}

/// Every topic a broker holds: the answer to `ListTopics`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct TopicList {
    /// The topics, sorted by name.
    pub topics: Vec<TopicInfo>,
}

/// One consumer group's progress on one queue.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct GroupQueueStats {
    /// The group (for broadcast, `group` + `/` + client id).
    pub group: String,
    /// The member the queue is assigned to, empty when none is.
    pub client_id: String,
    /// Next offset the broker will push.
    pub delivered_offset: u64,
    /// The committed offset, if any.
    pub committed_offset: Option<u64>,
}

/// Damage found in a queue's stored data: offsets from `offset` on are not served until the
/// queue is repaired (`defibus log repair`).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct QueueDamage {
    /// The first offset not served.
    pub offset: u64,
    /// Where and what: file, byte position, reason, who found it.
    pub detail: String,
}

/// Offsets of a queue that hold no record, recorded when they were skipped: lost unsynced
/// `async` appends after a crash, or damage cut out by `defibus log repair`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SkippedOffsets {
    /// First skipped offset.
    pub from: u64,
    /// Offset after the last skipped one.
    pub to: u64,
    /// Why, for humans.
    pub reason: String,
}

/// Body of `ScrubLogs`: which queues to scrub now.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ScrubRequest {
    /// Only the queues of this topic; every queue of the broker when `None`.
    pub topic: Option<String>,
}

/// What an on-demand scrub of one queue found.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct QueueScrub {
    /// The topic.
    pub topic: String,
    /// The queue id.
    pub queue_id: u32,
    /// Segments read.
    pub segments: u64,
    /// Bytes verified.
    pub bytes: u64,
    /// Batches verified.
    pub batches: u64,
    /// The queue's earliest known damage (found now or before), if any.
    pub damage: Option<QueueDamage>,
    /// Index entries that do not point at the batch they name.
    pub index_problems: Vec<String>,
    /// Why the scrub stopped early (an IO error), empty when it did not.
    pub error: String,
}

/// The answer to `ScrubLogs`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ScrubReply {
    /// The broker's id.
    pub broker_id: String,
    /// Per queue, sorted by topic then queue id.
    pub queues: Vec<QueueScrub>,
}

/// One queue's statistics.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct QueueStats {
    /// The topic.
    pub topic: String,
    /// The queue id.
    pub queue_id: u32,
    /// The shard owning the queue.
    pub shard_id: u32,
    /// Oldest retained offset.
    pub start_offset: u64,
    /// Offset the next appended record gets.
    pub next_offset: u64,
    /// Request records dropped because their deadline passed before delivery.
    pub expired_requests: u64,
    /// Event records dropped because their time-to-live passed before delivery (§13.5).
    pub expired_events: u64,
    /// Damage in the stored data, if any was found.
    pub damage: Option<QueueDamage>,
    /// Every recorded gap in the queue's offsets, oldest record first.
    pub skipped: Vec<SkippedOffsets>,
    /// Progress of each group subscribed to the queue.
    pub groups: Vec<GroupQueueStats>,
    /// The queue's role and replicas, when its topic has more than one replica.
    pub replication: Option<super::QueueReplication>,
}

/// One shard's statistics.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ShardStats {
    /// The shard id.
    pub shard_id: u32,
    /// Open client connections.
    pub connections: u64,
    /// Frames refused as malformed, oversized or cut off (their connections were closed).
    pub bad_frames: u64,
    /// Replies appended to the shard's reply queue.
    pub replies: u64,
    /// Bytes that frames still arriving hold of the shard's partial-frame budget.
    pub partial_frame_bytes: u64,
    /// Nacked messages this shard appended to a retry topic, by backoff level (§13.2).
    pub retries_by_level: Vec<u64>,
    /// Nacked messages this shard appended to a dead-letter topic.
    pub dead_letters: u64,
}

/// Runtime statistics of a broker: the answer to `Stats`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct BrokerStats {
    /// The broker's id.
    pub broker_id: String,
    /// Per shard, by shard id.
    pub shards: Vec<ShardStats>,
    /// Per queue, sorted by topic then queue id.
    pub queues: Vec<QueueStats>,
    /// The version of the security policy the broker enforces (0: security off, or no policy
    /// fetched yet): `admin acl` waits until every broker reports its change.
    pub policy_version: u64,
}

/// Nameserver → broker: the registration was recorded.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RegisterAck {
    /// The broker is dropped from routes if no registration arrives within this many ms.
    pub expiry_ms: u64,
}

/// A broker named alone: the body of `BrokerUnregister`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct BrokerId {
    /// The broker's id within its cluster.
    pub broker_id: String,
}
