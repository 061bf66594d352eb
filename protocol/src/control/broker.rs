//! Broker, nameserver and topic-admin payloads.

use rkyv::{Archive, Deserialize, Serialize};

use super::{Acks, ControlError, FlushMode};
use crate::names::{Area, Topic};

/// Default unconsumed-message limit per queue; DeFiBus's default, which keeps a slow consumer
/// from hiding a backlog that request-reply latency would suffer from.
pub const MAX_QUEUE_DEPTH_DEFAULT: u64 = 500;
/// Default number of queues of a new topic.
pub const QUEUE_COUNT_DEFAULT: u32 = 4;
/// Default retention by age: three days, in milliseconds.
pub const RETENTION_AGE_MS_DEFAULT: u64 = 72 * 3600 * 1000;

/// One topic as a broker reports it to the nameserver.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct TopicInfo {
    /// Topic name, `[area]-[serviceId]`.
    pub topic: String,
    /// Queues the topic has on this broker.
    pub queue_count: u32,
    /// Queues consumers may read (the first `read_queue_count`); lowered to drain queues.
    pub read_queue_count: u32,
    /// Queues producers may write (the first `write_queue_count`); lowered before a shrink.
    pub write_queue_count: u32,
    /// How appends are made durable.
    pub flush_mode: FlushMode,
    /// Unconsumed messages a queue may hold before produces get `QueueDepthExceeded`.
    pub max_queue_depth: u64,
    /// Current unconsumed depth of each queue, index = queue id; producers steer by it.
    pub queue_depths: Vec<u64>,
    /// Bytes a queue keeps before its oldest segments are deleted; `None`: no size limit.
    pub retention_bytes: Option<u64>,
    /// Age after which a queue's segments are deleted, ms; `None`: no age limit.
    pub retention_age_ms: Option<u64>,
    /// Dark-launch redirect rules.
    pub redirects: Vec<RedirectRule>,
    /// The broker adjusts the queue counts to the consumers.
    pub dynamic_queues: bool,
    /// Copies of each queue (0 from a broker that predates replication: one).
    pub replicas: u8,
    /// When a produce to a replicated queue is acknowledged.
    pub acks: Acks,
    /// Each replicated queue's role here and, where this broker leads, its followers: what
    /// the controller learns lag and catch-up from.
    pub replication: Vec<super::QueueReplication>,
}

impl TopicInfo {
    /// The topic name, parsed.
    pub fn topic(&self) -> Result<Topic, ControlError> {
        Ok(self.topic.parse()?)
    }

    fn validate(&self) -> Result<(), ControlError> {
        self.topic()?;
        check_queue_counts(
            self.queue_count,
            self.read_queue_count,
            self.write_queue_count,
        )?;
        if self.queue_depths.len() != self.queue_count as usize {
            return Err(invalid("queue_depths", "must list one depth per queue"));
        }
        Ok(())
    }
}

/// A broker's registration with a nameserver; re-sent periodically, which is its heartbeat.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct BrokerRegistration {
    /// Unique id of the broker within its cluster, chosen by the operator (`broker-a`).
    pub broker_id: String,
    /// The cluster the broker belongs to.
    pub cluster: String,
    /// The broker's area code.
    pub area: String,
    /// Host name or IP clients connect to.
    pub address: String,
    /// One port per shard (core); a queue is served by exactly one shard.
    pub shard_ports: Vec<u16>,
    /// Every topic the broker holds.
    pub topics: Vec<TopicInfo>,
}

impl BrokerRegistration {
    /// The broker's area, parsed.
    pub fn area(&self) -> Result<Area, ControlError> {
        Ok(self.area.parse()?)
    }

    /// Checks names and counts, so a nameserver never records a route clients cannot use.
    pub fn validate(&self) -> Result<(), ControlError> {
        check_non_empty("broker_id", &self.broker_id)?;
        check_non_empty("cluster", &self.cluster)?;
        check_non_empty("address", &self.address)?;
        self.area()?;
        if self.shard_ports.is_empty() {
            return Err(invalid("shard_ports", "a broker has at least one shard"));
        }
        self.topics.iter().try_for_each(TopicInfo::validate)
    }
}

/// Where one queue of a topic lives and what it allows.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct QueueRoute {
    /// The broker holding the queue.
    pub broker_id: String,
    /// The broker's cluster.
    pub cluster: String,
    /// The broker's area; clients prefer queues in their own.
    pub area: String,
    /// Host name or IP of the broker.
    pub address: String,
    /// Port of the shard that owns the queue.
    pub shard_port: u16,
    /// Queue id within the topic on that broker.
    pub queue_id: u32,
    /// Consumers may read the queue.
    pub readable: bool,
    /// Producers may write the queue.
    pub writable: bool,
}

/// Every queue of a topic, across brokers: the answer to `TopicRoute`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct TopicRoute {
    /// Topic name, `[area]-[serviceId]`.
    pub topic: String,
    /// The queues, in no particular order.
    pub queues: Vec<QueueRoute>,
}

impl TopicRoute {
    /// The topic name, parsed.
    pub fn topic(&self) -> Result<Topic, ControlError> {
        Ok(self.topic.parse()?)
    }
}

/// One broker as the nameserver sees it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct BrokerSummary {
    /// The broker's id within its cluster.
    pub broker_id: String,
    /// Its cluster.
    pub cluster: String,
    /// Its area code.
    pub area: String,
    /// Host name or IP.
    pub address: String,
    /// One port per shard.
    pub shard_ports: Vec<u16>,
    /// Topics it holds.
    pub topic_count: u32,
    /// When its last registration arrived, nameserver clock, Unix ms; shows expiry coming.
    pub last_heartbeat_ms: i64,
}

/// Every live broker the nameserver knows: the answer to `ClusterInfo`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ClusterInfo {
    /// The brokers, grouped by nothing; callers sort by cluster as they need.
    pub brokers: Vec<BrokerSummary>,
}

/// A topic's configuration: the body of `CreateTopic` and `UpdateTopic`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct TopicConfig {
    /// Topic name, `[area]-[serviceId]`.
    pub topic: String,
    /// Queues per broker.
    pub queue_count: u32,
    /// Readable queues, at most `queue_count`.
    pub read_queue_count: u32,
    /// Writable queues, at most `queue_count`.
    pub write_queue_count: u32,
    /// How appends are made durable.
    pub flush_mode: FlushMode,
    /// Unconsumed messages per queue before produces are refused with `QueueDepthExceeded`.
    pub max_queue_depth: u64,
    /// Delete the oldest segments once a queue holds more than this; `None` for no limit.
    pub retention_bytes: Option<u64>,
    /// Delete segments older than this, in ms; `None` to keep them regardless of age.
    pub retention_age_ms: Option<u64>,
    /// Dark-launch redirect rules, at most [`REDIRECTS_MAX`].
    pub redirects: Vec<RedirectRule>,
    /// Dynamic queues (DESIGN §6): the broker sets the read and write queue counts to the
    /// largest number of own-area consumers of any clustering group (1 to 1024), growing reads
    /// before writes and shrinking writes before reads. Off by default: an explicit queue
    /// count stays as the operator set it.
    pub dynamic_queues: bool,
    /// Copies of each queue, on distinct brokers (1: the queue lives on one broker's disk).
    pub replicas: u8,
    /// When a produce to a replicated queue is acknowledged.
    pub acks: Acks,
}

/// A topic's configuration as brokers before replication stored it in their registry; read
/// once at start and written back as a [`TopicConfig`] with one replica.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct TopicConfigV1 {
    /// See [`TopicConfig`].
    pub topic: String,
    /// See [`TopicConfig`].
    pub queue_count: u32,
    /// See [`TopicConfig`].
    pub read_queue_count: u32,
    /// See [`TopicConfig`].
    pub write_queue_count: u32,
    /// See [`TopicConfig`].
    pub flush_mode: FlushMode,
    /// See [`TopicConfig`].
    pub max_queue_depth: u64,
    /// See [`TopicConfig`].
    pub retention_bytes: Option<u64>,
    /// See [`TopicConfig`].
    pub retention_age_ms: Option<u64>,
    /// See [`TopicConfig`].
    pub redirects: Vec<RedirectRule>,
    /// See [`TopicConfig`].
    pub dynamic_queues: bool,
}

impl From<TopicConfigV1> for TopicConfig {
    fn from(v1: TopicConfigV1) -> Self {
        Self {
            topic: v1.topic,
            queue_count: v1.queue_count,
            read_queue_count: v1.read_queue_count,
            write_queue_count: v1.write_queue_count,
            flush_mode: v1.flush_mode,
            max_queue_depth: v1.max_queue_depth,
            retention_bytes: v1.retention_bytes,
            retention_age_ms: v1.retention_age_ms,
            redirects: v1.redirects,
            dynamic_queues: v1.dynamic_queues,
            replicas: 1,
            acks: Acks::Leader,
        }
    }
}

/// Most redirect rules a topic may have.
pub const REDIRECTS_MAX: usize = 16;

/// A dark-launch redirect rule (DESIGN §6): messages of the topic tagged `flag` go only to
/// queues that a selected instance of `group` consumes, so a new version of a service gets
/// the flagged traffic and nothing else does.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RedirectRule {
    /// The clustering group whose instances are selected.
    pub group: String,
    /// The message tag the rule applies to.
    pub flag: String,
    /// Client ids of the selected instances; an entry ending in `*` selects every client id
    /// that starts with what precedes it.
    pub instances: Vec<String>,
}

impl RedirectRule {
    /// Whether the instance `client_id` is one the rule selects.
    pub fn selects(&self, client_id: &str) -> bool {
        self.instances
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => client_id.starts_with(prefix),
                None => client_id == pattern,
            })
    }

    /// Checks the group name, and that flag and instances are given.
    pub fn validate(&self) -> Result<(), ControlError> {
        self.group.parse::<crate::names::GroupName>()?;
        check_non_empty("redirect flag", &self.flag)?;
        if self.instances.is_empty() || self.instances.iter().any(|i| i.is_empty()) {
            return Err(invalid(
                "redirect instances",
                "name at least one instance, none empty",
            ));
        }
        Ok(())
    }
}

impl TopicConfig {
    /// The defaults for `topic`: [`QUEUE_COUNT_DEFAULT`] queues, async flush, depth
    /// [`MAX_QUEUE_DEPTH_DEFAULT`], three days' retention.
    pub fn new(topic: &Topic) -> Self {
        Self {
            topic: topic.to_string(),
            queue_count: QUEUE_COUNT_DEFAULT,
            read_queue_count: QUEUE_COUNT_DEFAULT,
            write_queue_count: QUEUE_COUNT_DEFAULT,
            flush_mode: FlushMode::Async,
            max_queue_depth: MAX_QUEUE_DEPTH_DEFAULT,
            retention_bytes: None,
            retention_age_ms: Some(RETENTION_AGE_MS_DEFAULT),
            redirects: Vec::new(),
            dynamic_queues: false,
            replicas: 1,
            acks: Acks::Leader,
        }
    }

    /// The topic name, parsed.
    pub fn topic(&self) -> Result<Topic, ControlError> {
        Ok(self.topic.parse()?)
    }

    /// Checks the name and that the counts and limits make sense together.
    pub fn validate(&self) -> Result<(), ControlError> {
        self.topic()?;
        check_queue_counts(
            self.queue_count,
            self.read_queue_count,
            self.write_queue_count,
        )?;
        if self.max_queue_depth == 0 {
            return Err(invalid("max_queue_depth", "must be at least 1"));
        }
        if self.retention_bytes == Some(0) || self.retention_age_ms == Some(0) {
            return Err(invalid(
                "retention",
                "a zero limit would delete every message",
            ));
        }
        if self.redirects.len() > REDIRECTS_MAX {
            return Err(invalid("redirects", "at most 16 rules per topic"));
        }
        if self.replicas == 0 || self.replicas > super::REPLICAS_MAX {
            return Err(invalid(
                "replicas",
                "a topic has 1 to 7 replicas of each queue",
            ));
        }
        self.redirects.iter().try_for_each(RedirectRule::validate)
    }
}

fn invalid(field: &'static str, reason: &'static str) -> ControlError {
    ControlError::Invalid { field, reason }
}

fn check_non_empty(field: &'static str, value: &str) -> Result<(), ControlError> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    Ok(())
}

fn check_queue_counts(queues: u32, read: u32, write: u32) -> Result<(), ControlError> {
    if queues == 0 {
        return Err(invalid("queue_count", "a topic has at least one queue"));
    }
    if read > queues || write > queues {
        return Err(invalid(
            "read/write_queue_count",
            "must not exceed queue_count",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{decode, encode};

    #[test]
    fn topic_config_defaults_are_valid_and_checked() {
        let topic: Topic = "A10-20190001".parse().unwrap();
        let config = TopicConfig::new(&topic);
        config.validate().unwrap();
        assert_eq!(config.max_queue_depth, 500);
        assert_eq!(
            decode::<TopicConfig>(&encode(&config).unwrap()).unwrap(),
            config
        );
        let bad = TopicConfig {
            read_queue_count: 9,
            ..config.clone()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("exceed"));
        let bad = TopicConfig {
            topic: "nope".into(),
            ..config
        };
        assert!(matches!(bad.validate(), Err(ControlError::Name(_))));
    }

    #[test]
    fn redirect_rules_select_instances_and_are_checked() {
        let rule = RedirectRule {
            group: "g1".into(),
            flag: "gray".into(),
            instances: vec!["canary-*".into(), "host@7#A10".into()],
        };
        rule.validate().unwrap();
        assert!(rule.selects("canary-1#A10"));
        assert!(rule.selects("host@7#A10"));
        assert!(!rule.selects("host@8#A10"));
        let mut config = TopicConfig::new(&"A10-1".parse().unwrap());
        config.redirects.push(RedirectRule {
            instances: Vec::new(),
            ..rule.clone()
        });
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("instances")
        );
        config.redirects[0] = rule;
        config.validate().unwrap();
        assert_eq!(
            decode::<TopicConfig>(&encode(&config).unwrap()).unwrap(),
            config
        );
    }

    #[test]
    fn registration_validation_names_the_field() {
        let mut reg = BrokerRegistration {
            broker_id: "broker-a".into(),
            cluster: "c1".into(),
            area: "A10".into(),
            address: "10.0.0.1".into(),
            shard_ports: vec![10911, 10912],
            topics: vec![TopicInfo {
                topic: "A10-1".into(),
                queue_count: 2,
                read_queue_count: 2,
                write_queue_count: 1,
                flush_mode: FlushMode::Sync,
                max_queue_depth: 500,
                queue_depths: vec![0, 3],
                ..TopicInfo::default()
            }],
        };
        reg.validate().unwrap();
        reg.topics[0].queue_depths.pop();
        let err = reg.validate().unwrap_err();
        assert!(err.to_string().contains("queue_depths"), "{err}");
    }
}
