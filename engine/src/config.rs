//! The broker's configuration: every limit and default in one place, read from TOML.
//!
//! Each field's default is written in its doc comment and in a `*_DEFAULT` constant; the
//! `const` block at the end asserts how the limits relate, so a change that breaks a relation
//! fails to compile rather than at 3 a.m.

use std::path::PathBuf;
use std::time::Duration;

use protocol::frame::{EXT_LEN_MAX_DEFAULT, FrameLimits, HEADER_LEN};
use serde::Deserialize;

use crate::error::BrokerError;
use crate::log::config as log_config;

/// With `spin_before_park_us` unset, how long executors spin before parking on machines with
/// [`SPIN_CORES_MIN`] cores or more, µs: an executor that just served a request polls this
/// long for the next before it parks (each park is a process-wide `membarrier` plus a
/// wake-up later). On a 16-core machine it took request-reply p50 from 2.3× to 1.9× the TCP
/// relay and lowered CPU per round trip; its cost is up to this much CPU after each burst of
/// work, as seastar-style reactors pay by polling.
pub const SPIN_BEFORE_PARK_US_AUTO: u64 = 50;
/// Fewest cores on which executors spin by default: below it a spinning shard takes the core
/// the clients and the other shard need.
pub const SPIN_CORES_MIN: usize = 4;
/// Most shards a broker runs; the client directory keeps one bit per shard in a `u64`.
pub const SHARDS_MAX: usize = 64;
/// Default address of the `/metrics` endpoint: loopback, beside Prometheus exporters' ports.
pub const METRICS_ADDRESS_DEFAULT: &str = "127.0.0.1:9110";
/// Default first port: shard `n` listens on `port_base + n`. RocketMQ's broker port.
pub const PORT_BASE_DEFAULT: u16 = 10911;
/// Default interval of registrations with every nameserver, ms.
pub const REGISTER_INTERVAL_MS_DEFAULT: u64 = 3000;
/// Default interval of the light `BrokerHeartbeat`s the replication controller's failure
/// detector listens to, ms: a third of the nameserver's default `broker_timeout_ms` (1500),
/// so one late heartbeat never moves a leadership and a dead broker's queues move within
/// about 2 s.
pub const CONTROLLER_HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = 500;
/// Default interval clients are told to heartbeat at, ms (`HeartbeatAck` does not carry it;
/// it is the protocol's default).
pub const HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = protocol::control::HEARTBEAT_INTERVAL_MS_DEFAULT;
/// Default time without a heartbeat after which a consumer is dead: three heartbeats, ms.
pub const CONSUMER_TIMEOUT_MS_DEFAULT: u64 = 3 * HEARTBEAT_INTERVAL_MS_DEFAULT;
/// Default longest pause of a queue handed over from a live member, waiting for its commit, ms.
pub const REVOKE_TIMEOUT_MS_DEFAULT: u64 = 3000;
/// Default interval at which shard 0 matches dynamic topics' queue counts to their consumers, ms.
pub const DYNAMIC_QUEUES_INTERVAL_MS_DEFAULT: u64 = 1000;
/// Default delay between opening a grown topic's read queues and its write queues, ms: one
/// registration interval, so consumers hold the new queues before producers write to them.
pub const DYNAMIC_QUEUES_WRITE_DELAY_MS_DEFAULT: u64 = REGISTER_INTERVAL_MS_DEFAULT;
/// Default time a connection may stay silent before it is closed, ms (DeFiBus: 60 s).
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 60_000;
/// Default time a frame may take to arrive once its first byte has, ms: far more than any
/// client on a working network needs for the largest frame, far less than a slowloris hopes
/// to hold a connection.
pub const FRAME_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Default bytes that frames larger than a connection's read buffer may hold while they
/// arrive, per shard: together with `read_buffer_bytes` per connection, the most memory
/// clients can make a shard buffer.
pub const PARTIAL_FRAME_BYTES_SHARD_MAX_DEFAULT: usize = 64 << 20;
/// Default frames with an unknown command one connection may send before it is closed: a
/// newer client probing an older broker sends one or two, a fuzzer thousands.
pub const UNKNOWN_COMMANDS_PER_CONNECTION_MAX_DEFAULT: u32 = 16;
/// Default IO memory the runtime registers per shard: its own default, 10 MiB.
pub const IO_MEMORY_BYTES_DEFAULT: usize = 10 << 20;
/// Default open connections per shard.
pub const CONNECTIONS_PER_SHARD_MAX_DEFAULT: usize = 10_000;
/// Default requests one connection may have in progress before the broker stops reading it.
pub const INFLIGHT_REQUESTS_MAX_DEFAULT: usize = 256;
/// Default frames queued for writing to one connection before producers of them wait.
pub const OUTBOUND_FRAMES_MAX_DEFAULT: usize = 1024;
/// Default largest batch a producer may send, bytes: the log's default.
pub const BATCH_LEN_MAX_DEFAULT: usize = log_config::DEFAULT_BATCH_LEN_MAX;
/// Default largest frame, bytes: one largest batch plus header and largest extension.
pub const FRAME_LEN_MAX_DEFAULT: usize = HEADER_LEN + EXT_LEN_MAX_DEFAULT + BATCH_LEN_MAX_DEFAULT;
/// Default initial size of a connection's receive buffer, bytes.
pub const READ_BUFFER_BYTES_DEFAULT: usize = 64 << 10;
/// Default bytes read from a queue per push round.
pub const PUSH_READ_BYTES_DEFAULT: usize = 256 << 10;
/// Default interval between retention passes over a shard's queues, ms.
pub const RETENTION_CHECK_INTERVAL_MS_DEFAULT: u64 = 60_000;
/// Default background scrub rate per shard, bytes per second: low enough to leave the disk to
/// producers and consumers, high enough to read 1 TiB a day across 16 shards.
pub const SCRUB_BYTES_PER_SEC_DEFAULT: u64 = 16 << 20;
/// Default pause between background scrub passes, ms.
pub const SCRUB_INTERVAL_MS_DEFAULT: u64 = 6 * 3600 * 1000;
/// Default subscriptions one connection may hold.
pub const SUBSCRIPTIONS_PER_CONNECTION_MAX_DEFAULT: usize = 1024;
/// Default free space, percent of the data directory's filesystem, below which produces are
/// refused with `DiskFull`.
pub const MIN_FREE_PERCENT_DEFAULT: u8 = 5;
/// Default wait after a failed write before a poisoned log is reopened by the next write, ms.
pub const REOPEN_AFTER_POISON_MS_DEFAULT: u64 = 1000;
/// Default pushes remembered per group and queue for `defibus trace` (each a range of
/// offsets pushed to one member in one millisecond; 40 bytes at most).
pub const TRACE_PUSHES_REMEMBERED_DEFAULT: usize = 64;
/// Default stored bytes one `defibus trace` lookup may read (key search, commit times in the
/// offset journal, replies in the reply queue).
pub const TRACE_SCAN_BYTES_MAX_DEFAULT: u64 = 64 << 20;
/// Default longest delay a delayed message may ask for, ms: 40 days.
pub const HELD_DELAY_MAX_MS_DEFAULT: u64 = 40 * 24 * 3600 * 1000;
/// Default wait for a half message's outcome before the broker asks its producer group, and
/// between checks, ms.
pub const HELD_CHECK_INTERVAL_MS_DEFAULT: u64 = 6000;
/// Default check-backs of one half message before the default outcome applies.
pub const HELD_CHECKS_MAX_DEFAULT: u32 = 15;
/// The free-space check is refreshed at most this often, ms (it is a `statvfs` call).
pub const FREE_SPACE_CHECK_INTERVAL_MS: u64 = 100;
/// ... or once this many bytes were appended by the shard since the last check.
pub const FREE_SPACE_CHECK_BYTES: u64 = 4 << 20;

const _: () = {
    assert!(CONSUMER_TIMEOUT_MS_DEFAULT > HEARTBEAT_INTERVAL_MS_DEFAULT);
    assert!(IDLE_TIMEOUT_MS_DEFAULT > CONSUMER_TIMEOUT_MS_DEFAULT);
    assert!(FRAME_LEN_MAX_DEFAULT >= HEADER_LEN + BATCH_LEN_MAX_DEFAULT);
    assert!(BATCH_LEN_MAX_DEFAULT <= log_config::BATCH_LEN_MAX_LIMIT);
    assert!(READ_BUFFER_BYTES_DEFAULT >= HEADER_LEN);
    assert!(PUSH_READ_BYTES_DEFAULT <= log_config::DEFAULT_TAIL_CACHE_BYTES);
    assert!(INFLIGHT_REQUESTS_MAX_DEFAULT <= OUTBOUND_FRAMES_MAX_DEFAULT);
    assert!(SHARDS_MAX <= u64::BITS as usize);
    assert!(MIN_FREE_PERCENT_DEFAULT < 100);
};

/// The whole broker configuration (`defibus-broker --config broker.toml`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Unique id within the cluster. Default `broker-a`.
    pub broker_id: String,
    /// Cluster name. Default `DefaultCluster`.
    pub cluster: String,
    /// Area code of the broker's data centre. Default `A10`.
    pub area: String,
    /// Address every shard listens on. Default `127.0.0.1`: another address must be asked
    /// for, and then needs `[security]` (or `--insecure`).
    pub listen_address: String,
    /// Address advertised to nameservers; default: `listen_address`, or `127.0.0.1` when that
    /// is the unspecified address.
    pub advertise_address: Option<String>,
    /// Shard `n` listens on `port_base + n`; 0 gives every shard an ephemeral port (tests).
    /// Default 10911.
    pub port_base: u16,
    /// `host:port` of the Prometheus `/metrics` endpoint (port 0: ephemeral); empty: none.
    /// Default `127.0.0.1:9110`. A broker that cannot listen there runs without it and says
    /// so (WARN): metrics are not worth refusing to carry messages.
    pub metrics_address: String,
    /// Shards (executors, one per core); 0 means one per available core. Default 0.
    pub shards: usize,
    /// Where queues, offsets, replies and the topic registry live. Default `./defibus-data/broker`.
    pub data_dir: PathBuf,
    /// Nameserver addresses (`host:port`) registered with. Default none.
    pub nameservers: Vec<String>,
    /// Interval of registrations, ms. Default 3000.
    pub register_interval_ms: u64,
    /// Interval of heartbeats to the nameservers' replication controller, ms; 0 sends none
    /// (registrations still count as heartbeats). Default 500.
    pub controller_heartbeat_interval_ms: u64,
    /// A subscribed connection with no heartbeat for this long is closed and its queues
    /// reassigned, ms. Default 9000 (three heartbeats).
    pub consumer_timeout_ms: u64,
    /// Longest pause of a queue handed over from a live member, waiting for it to commit what
    /// it was pushed, ms. Default 3000.
    pub revoke_timeout_ms: u64,
    /// A connection that sends nothing for this long is closed, ms. Default 60000.
    pub idle_timeout_ms: u64,
    /// A frame whose first byte arrived must be whole within this, or its connection is
    /// closed (a slowloris), ms. Default 10000.
    pub frame_timeout_ms: u64,
    /// How often topics with dynamic queues are matched to their consumers, ms. Default 1000.
    pub dynamic_queues_interval_ms: u64,
    /// After a dynamic topic's read queues grew, how long before its write queues follow, ms.
    /// Default 3000.
    pub dynamic_queues_write_delay_ms: u64,
    /// Executors spin this long before parking, µs (a wake-up costs ~25 µs, and parking
    /// issues a process-wide memory barrier). Unset: [`SPIN_BEFORE_PARK_US_AUTO`] on machines
    /// with at least [`SPIN_CORES_MIN`] cores, 0 below (see [`Self::spin_before_park`]).
    pub spin_before_park_us: Option<u64>,
    /// IO memory the runtime registers per shard, bytes. Default 10 MiB.
    pub io_memory_bytes: usize,
    /// Bounds on connections, requests and buffers.
    pub limits: Limits,
    /// Storage settings every queue log is opened with.
    pub storage: StorageConfig,
    /// What `defibus trace` remembers and may read (`[trace]`).
    pub trace: TraceConfig,
    /// Redelivery of nacked messages (`[retry]`, docs/ARCHITECTURE.md §13.2): the backoff
    /// schedule, how many redeliveries before the dead-letter topic, per-group overrides.
    pub retry: RetryConfig,
    /// Delayed and transactional (half) messages (`[held]`).
    pub held: HeldConfig,
    /// The idempotent producer's duplicate window per queue (`[producers]`, ARCHITECTURE
    /// §13.1).
    pub producers: ProducersConfig,
    /// Authentication, the ACL and the audit log (`[security]`, docs/ARCHITECTURE.md §9):
    /// with `enabled`, every connection authenticates first and every action is checked
    /// against the policy the nameservers serve; `token_file` is the broker's own token
    /// (principal with the `broker` grant) for its connections to nameservers and leaders.
    /// Default: off.
    pub security: auth::SecuritySettings,
    /// TLS on every shard's listener (table `[tls]`, see [`tls::TlsSettings`]): the server
    /// certificate and key, and the CA whose client certificates are accepted
    /// (`client_auth`, default `"required"`: mutual TLS). A connection completes its
    /// handshake within `frame_timeout_ms` or is closed. Unset (the default): plaintext.
    pub tls: Option<tls::TlsSettings>,
}

/// Bounds on everything a peer can make the broker hold.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Open connections per shard; more are accepted and closed at once. Default 10000.
    pub connections_per_shard_max: usize,
    /// Requests in progress per connection before reading it pauses. Default 256.
    pub inflight_requests_max: usize,
    /// Frames queued for writing per connection before their producers wait. Default 1024.
    pub outbound_frames_max: usize,
    /// Largest frame accepted, bytes. Default 8 MiB + 64 KiB + 40.
    pub frame_len_max: usize,
    /// Largest record batch accepted, bytes. Default 8 MiB.
    pub batch_len_max: usize,
    /// Initial receive buffer per connection, bytes. Default 64 KiB.
    pub read_buffer_bytes: usize,
    /// Bytes read from a queue per push round. Default 256 KiB.
    pub push_read_bytes: usize,
    /// Subscriptions per connection. Default 1024.
    pub subscriptions_per_connection_max: usize,
    /// Bytes that frames larger than `read_buffer_bytes` may hold while they arrive, all
    /// connections of a shard together; a connection whose frame does not fit waits (reading
    /// nothing) until it does or its frame times out. Default 64 MiB.
    pub partial_frame_bytes_shard_max: usize,
    /// Frames with an unknown command one connection may send before it is closed.
    /// Default 16.
    pub unknown_commands_per_connection_max: u32,
}

/// Log settings of every queue.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Segment size, bytes. Default 1 GiB.
    pub segment_bytes_max: u64,
    /// Async-flush interval, ms. Default 10.
    pub flush_interval_ms: u64,
    /// Buffered bytes that start an async flush early. Default 1 MiB.
    pub flush_bytes: u64,
    /// Recent data served from memory per queue, bytes. Default 16 MiB.
    pub tail_cache_bytes: usize,
    /// Recent data served from memory by all queues of one shard together, bytes (data not
    /// yet written to disk is kept past it). Default 256 MiB.
    pub tail_cache_shard_bytes: usize,
    /// How often each shard applies its topics' retention (size and age) to the queues it
    /// owns, deleting whole old segments, ms. Default 60000.
    pub retention_check_interval_ms: u64,
    /// Rate at which each shard scrubs (reads and verifies) the written segments of its
    /// queues in the background, bytes per second; 0 turns the background scrub off (the
    /// on-demand `defibus log scrub` still works). Default 16 MiB/s.
    pub scrub_bytes_per_sec: u64,
    /// Pause between the end of one background scrub pass and the start of the next, ms. The
    /// first pass starts when the broker does. Default 21600000 (6 hours).
    pub scrub_interval_ms: u64,
    /// Produces are refused with `DiskFull` (retryable) while the data directory's filesystem
    /// has less than this percentage free; reads, commits and deletes go on. 0 disables the
    /// check. Default 5.
    pub min_free_percent: u8,
    /// A queue log or offset journal poisoned by a failed write (e.g. a full disk) is reopened
    /// by the first write at least this long after the failure, ms. Default 1000.
    pub reopen_after_poison_ms: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            broker_id: "broker-a".into(),
            cluster: "DefaultCluster".into(),
            area: "A10".into(),
            listen_address: "127.0.0.1".into(),
            advertise_address: None,
            port_base: PORT_BASE_DEFAULT,
            metrics_address: METRICS_ADDRESS_DEFAULT.into(),
            shards: 0,
            data_dir: PathBuf::from("./defibus-data/broker"),
            nameservers: Vec::new(),
            register_interval_ms: REGISTER_INTERVAL_MS_DEFAULT,
            controller_heartbeat_interval_ms: CONTROLLER_HEARTBEAT_INTERVAL_MS_DEFAULT,
            consumer_timeout_ms: CONSUMER_TIMEOUT_MS_DEFAULT,
            revoke_timeout_ms: REVOKE_TIMEOUT_MS_DEFAULT,
            idle_timeout_ms: IDLE_TIMEOUT_MS_DEFAULT,
            frame_timeout_ms: FRAME_TIMEOUT_MS_DEFAULT,
            dynamic_queues_interval_ms: DYNAMIC_QUEUES_INTERVAL_MS_DEFAULT,
            dynamic_queues_write_delay_ms: DYNAMIC_QUEUES_WRITE_DELAY_MS_DEFAULT,
            spin_before_park_us: None,
            io_memory_bytes: IO_MEMORY_BYTES_DEFAULT,
            limits: Limits::default(),
            storage: StorageConfig::default(),
            trace: TraceConfig::default(),
            retry: RetryConfig::default(),
            held: HeldConfig::default(),
            producers: ProducersConfig::default(),
            security: auth::SecuritySettings::default(),
            tls: None,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections_per_shard_max: CONNECTIONS_PER_SHARD_MAX_DEFAULT,
            inflight_requests_max: INFLIGHT_REQUESTS_MAX_DEFAULT,
            outbound_frames_max: OUTBOUND_FRAMES_MAX_DEFAULT,
            frame_len_max: FRAME_LEN_MAX_DEFAULT,
            batch_len_max: BATCH_LEN_MAX_DEFAULT,
            read_buffer_bytes: READ_BUFFER_BYTES_DEFAULT,
            push_read_bytes: PUSH_READ_BYTES_DEFAULT,
            subscriptions_per_connection_max: SUBSCRIPTIONS_PER_CONNECTION_MAX_DEFAULT,
            partial_frame_bytes_shard_max: PARTIAL_FRAME_BYTES_SHARD_MAX_DEFAULT,
            unknown_commands_per_connection_max: UNKNOWN_COMMANDS_PER_CONNECTION_MAX_DEFAULT,
        }
    }
}

/// `[held]`: delayed and transactional (half) messages (ARCHITECTURE §13.3-§13.4).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeldConfig {
    /// Longest delay a delayed message may ask for, ms; a later `deliver_at` is refused.
    /// Default 40 days.
    pub delay_max_ms: u64,
    /// A half message with no outcome this long after it was stored is checked back with its
    /// producer group, and again every this long. Default 6000.
    pub check_interval_ms: u64,
    /// Check-backs of one half message before `default_outcome` applies. Default 15.
    pub checks_max: u32,
    /// What becomes of a half message nobody decided: `rollback` (default) or `commit`.
    pub default_outcome: HeldOutcome,
}

/// The outcome a half message takes when its checks ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeldOutcome {
    /// Deliver it.
    Commit,
    /// Never deliver it.
    Rollback,
}

impl Default for HeldConfig {
    fn default() -> Self {
        Self {
            delay_max_ms: HELD_DELAY_MAX_MS_DEFAULT,
            check_interval_ms: HELD_CHECK_INTERVAL_MS_DEFAULT,
            checks_max: HELD_CHECKS_MAX_DEFAULT,
            default_outcome: HeldOutcome::Rollback,
        }
    }
}

/// `[trace]`: the bounded memory and reads behind `TraceMessage` (`defibus trace`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TraceConfig {
    /// Pushes remembered per (group, queue): each entry is a range of offsets pushed to one
    /// member within one millisecond, at most 40 bytes; the oldest is let go when full, and a
    /// trace says from when its memory is complete. 0 remembers none (a trace then shows no
    /// pushes). Default 64.
    pub pushes_remembered: usize,
    /// Stored bytes one trace lookup may read in all: the key search, the offset journal
    /// (when each group committed) and the reply queue (a request's reply). Where it runs out
    /// the answer says how far it got. Default 64 MiB.
    pub scan_bytes_max: u64,
}

/// `[producers]`: what each queue remembers of its idempotent producers (ARCHITECTURE §13.1).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProducersConfig {
    /// Batches remembered per producer and queue, with their offsets: a retry of one of them
    /// is answered with its offsets; an older one with `DuplicateSequence`. Default 8.
    pub window_batches: usize,
    /// Producers remembered per queue; past it the least recently used is forgotten, and its
    /// next batch starts its numbering afresh (a retry of its older batches is then not
    /// recognised). Default 256.
    pub per_queue_max: usize,
    /// Bytes of a queue's tail read to rebuild its window after a restart or a failover,
    /// once, before its first idempotent batch: producers whose last batch is older are
    /// unknown (as if forgotten). Default 16 MiB.
    pub rebuild_scan_bytes: u64,
}

/// Default of [`ProducersConfig::window_batches`].
pub const PRODUCER_WINDOW_BATCHES_DEFAULT: usize = 8;
/// Default of [`ProducersConfig::per_queue_max`].
pub const PRODUCERS_PER_QUEUE_MAX_DEFAULT: usize = 256;
/// Default of [`ProducersConfig::rebuild_scan_bytes`].
pub const PRODUCER_REBUILD_SCAN_BYTES_DEFAULT: u64 = 16 << 20;

impl Default for ProducersConfig {
    fn default() -> Self {
        Self {
            window_batches: PRODUCER_WINDOW_BATCHES_DEFAULT,
            per_queue_max: PRODUCERS_PER_QUEUE_MAX_DEFAULT,
            rebuild_scan_bytes: PRODUCER_REBUILD_SCAN_BYTES_DEFAULT,
        }
    }
}

impl Default for TraceConfig {
    fn default() -> Self {
        Self {
            pushes_remembered: TRACE_PUSHES_REMEMBERED_DEFAULT,
            scan_bytes_max: TRACE_SCAN_BYTES_MAX_DEFAULT,
        }
    }
}

/// `[retry]`: how nacked messages come back (docs/ARCHITECTURE.md §13.2).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Delay before redelivery `k` is entry `k - 1` (the last entry for later ones), ms; one
    /// queue of a group's retry topic per entry (at most 64). Default RocketMQ's: 1 s 5 s
    /// 10 s 30 s 1 m 2 m 3 m 4 m 5 m 6 m 7 m 8 m 9 m 10 m 20 m 30 m 1 h 2 h.
    pub schedule_ms: Vec<u64>,
    /// Redeliveries before a nacked message goes to the group's dead-letter topic instead.
    /// Default 16.
    pub max_redeliveries: u32,
    /// Per-group overrides (`[[retry.groups]]`). Default none.
    pub groups: Vec<GroupRetryConfig>,
}

/// `[[retry.groups]]`: one group's own schedule or redelivery count.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupRetryConfig {
    /// The consumer group.
    pub group: String,
    /// Its schedule, ms; the broker-wide one when absent.
    pub schedule_ms: Option<Vec<u64>>,
    /// Its redeliveries before the dead-letter topic; the broker-wide count when absent.
    pub max_redeliveries: Option<u32>,
}

/// The retry policy one group gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy<'a> {
    /// Delays by level, ms.
    pub schedule_ms: &'a [u64],
    /// Redeliveries before the dead-letter topic.
    pub max_redeliveries: u32,
}

impl RetryConfig {
    /// The policy of `group`: its override where there is one.
    pub fn policy(&self, group: &str) -> RetryPolicy<'_> {
        let own = self.groups.iter().find(|g| g.group == group);
        RetryPolicy {
            schedule_ms: own
                .and_then(|g| g.schedule_ms.as_deref())
                .unwrap_or(&self.schedule_ms),
            max_redeliveries: own
                .and_then(|g| g.max_redeliveries)
                .unwrap_or(self.max_redeliveries),
        }
    }

    fn validate(&self) -> Result<(), String> {
        let schedules = std::iter::once(("retry.schedule_ms".to_owned(), &self.schedule_ms)).chain(
            self.groups.iter().filter_map(|g| {
                g.schedule_ms
                    .as_ref()
                    .map(|s| (format!("retry.groups {:?} schedule_ms", g.group), s))
            }),
        );
        for (name, schedule) in schedules {
            if schedule.is_empty() || schedule.len() > protocol::retry::SCHEDULE_LEVELS_MAX {
                return Err(format!(
                    "{name} must have 1 to {} entries",
                    protocol::retry::SCHEDULE_LEVELS_MAX
                ));
            }
        }
        for group in &self.groups {
            if let Err(e) = group.group.parse::<protocol::names::GroupName>() {
                return Err(format!("retry.groups: {e}"));
            }
        }
        Ok(())
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            schedule_ms: protocol::retry::SCHEDULE_MS_DEFAULT.to_vec(),
            max_redeliveries: protocol::retry::MAX_REDELIVERIES_DEFAULT,
            groups: Vec::new(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            segment_bytes_max: log_config::DEFAULT_SEGMENT_BYTES_MAX,
            flush_interval_ms: log_config::DEFAULT_FLUSH_INTERVAL_MS,
            flush_bytes: log_config::DEFAULT_FLUSH_BYTES,
            tail_cache_bytes: log_config::DEFAULT_TAIL_CACHE_BYTES,
            tail_cache_shard_bytes: crate::log::DEFAULT_SHARD_TAIL_CACHE_BYTES,
            retention_check_interval_ms: RETENTION_CHECK_INTERVAL_MS_DEFAULT,
            scrub_bytes_per_sec: SCRUB_BYTES_PER_SEC_DEFAULT,
            scrub_interval_ms: SCRUB_INTERVAL_MS_DEFAULT,
            min_free_percent: MIN_FREE_PERCENT_DEFAULT,
            reopen_after_poison_ms: REOPEN_AFTER_POISON_MS_DEFAULT,
        }
    }
}

impl BrokerConfig {
    /// Parses a TOML document; absent fields take their defaults.
    pub fn from_toml(text: &str) -> Result<Self, BrokerError> {
        toml::from_str(text).map_err(|e| BrokerError::Config {
            reason: e.to_string(),
        })
    }

    /// Reads and parses a TOML file.
    pub fn load(path: &std::path::Path) -> Result<Self, BrokerError> {
        let text = std::fs::read_to_string(path).map_err(|source| BrokerError::Io {
            op: "read config",
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// How long executors spin before parking: `spin_before_park_us`, or when unset
    /// [`SPIN_BEFORE_PARK_US_AUTO`] on a machine with [`SPIN_CORES_MIN`] cores or more and
    /// none below, where a spinning shard would take the core its clients need.
    pub fn spin_before_park(&self) -> Duration {
        let micros = self.spin_before_park_us.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            if cores >= SPIN_CORES_MIN {
                SPIN_BEFORE_PARK_US_AUTO
            } else {
                0
            }
        });
        Duration::from_micros(micros)
    }

    /// The number of shards to run: `shards`, or one per available core.
    pub fn shard_count(&self) -> usize {
        if self.shards > 0 {
            self.shards
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get().min(SHARDS_MAX))
        }
    }

    /// The address advertised to nameservers and clients.
    pub fn advertised_address(&self) -> String {
        match &self.advertise_address {
            Some(address) => address.clone(),
            None if self.listen_address == "0.0.0.0" || self.listen_address == "::" => {
                "127.0.0.1".into()
            }
            None => self.listen_address.clone(),
        }
    }

    /// The frame limits connections enforce.
    pub fn frame_limits(&self) -> FrameLimits {
        FrameLimits {
            frame_len_max: self.limits.frame_len_max,
            ext_len_max: EXT_LEN_MAX_DEFAULT,
        }
    }

    /// Idle timeout as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// Frame timeout as a duration.
    pub fn frame_timeout(&self) -> Duration {
        Duration::from_millis(self.frame_timeout_ms)
    }

    /// Checks names and how the limits relate; says which field is wrong.
    pub fn validate(&self) -> Result<(), BrokerError> {
        let fail = |reason: String| Err(BrokerError::Config { reason });
        if self.broker_id.is_empty() || self.cluster.is_empty() {
            return fail("broker_id and cluster must not be empty".into());
        }
        if self.producers.window_batches == 0 || self.producers.per_queue_max == 0 {
            return fail(
                "producers.window_batches and producers.per_queue_max must be at least 1".into(),
            );
        }
        if let Err(e) = self.area.parse::<protocol::names::Area>() {
            return fail(format!("area: {e}"));
        }
        if self.shards > SHARDS_MAX {
            return fail(format!("shards {} exceeds {SHARDS_MAX}", self.shards));
        }
        if self.port_base != 0 && usize::from(self.port_base) + self.shard_count() > 65536 {
            return fail(format!(
                "port_base {} leaves no port for every shard",
                self.port_base
            ));
        }
        if let Err(e) = self.security.validate() {
            return fail(e.to_string());
        }
        if self.security.enabled && self.nameservers.is_empty() {
            return fail("security.enabled needs nameservers: the policy comes from them".into());
        }
        let l = &self.limits;
        if l.batch_len_max == 0 || l.batch_len_max > log_config::BATCH_LEN_MAX_LIMIT {
            return fail(format!(
                "limits.batch_len_max {} out of range",
                l.batch_len_max
            ));
        }
        if l.partial_frame_bytes_shard_max < l.frame_len_max {
            return fail(format!(
                "limits.partial_frame_bytes_shard_max {} must hold one frame of frame_len_max {}",
                l.partial_frame_bytes_shard_max, l.frame_len_max
            ));
        }
        if l.frame_len_max < HEADER_LEN + l.batch_len_max {
            return fail(format!(
                "limits.frame_len_max {} must hold a header and a batch of batch_len_max {}",
                l.frame_len_max, l.batch_len_max
            ));
        }
        let positive = [
            (
                "limits.connections_per_shard_max",
                l.connections_per_shard_max,
            ),
            ("limits.inflight_requests_max", l.inflight_requests_max),
            ("limits.outbound_frames_max", l.outbound_frames_max),
            ("limits.read_buffer_bytes", l.read_buffer_bytes),
            ("limits.push_read_bytes", l.push_read_bytes),
            (
                "limits.subscriptions_per_connection_max",
                l.subscriptions_per_connection_max,
            ),
            (
                "limits.partial_frame_bytes_shard_max",
                l.partial_frame_bytes_shard_max,
            ),
            (
                "limits.unknown_commands_per_connection_max",
                l.unknown_commands_per_connection_max as usize,
            ),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return fail(format!("{name} must be at least 1"));
        }
        let intervals = [
            ("register_interval_ms", self.register_interval_ms),
            ("consumer_timeout_ms", self.consumer_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("frame_timeout_ms", self.frame_timeout_ms),
            (
                "dynamic_queues_interval_ms",
                self.dynamic_queues_interval_ms,
            ),
            ("storage.flush_interval_ms", self.storage.flush_interval_ms),
            (
                "storage.retention_check_interval_ms",
                self.storage.retention_check_interval_ms,
            ),
            ("storage.scrub_interval_ms", self.storage.scrub_interval_ms),
            ("held.check_interval_ms", self.held.check_interval_ms),
        ];
        if let Some((name, _)) = intervals.iter().find(|(_, v)| *v == 0) {
            return fail(format!("{name} must be at least 1"));
        }
        if let Err(reason) = self.retry.validate() {
            return fail(reason);
        }
        if self.trace.scan_bytes_max == 0 {
            return fail("trace.scan_bytes_max must be at least 1".into());
        }
        if self.storage.min_free_percent >= 100 {
            return fail(format!(
                "storage.min_free_percent {} must be below 100",
                self.storage.min_free_percent
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_example_file_lists_exactly_the_defaults() {
        let example = include_str!("../broker.toml");
        let parsed = super::BrokerConfig::from_toml(example).unwrap();
        assert_eq!(parsed, super::BrokerConfig::default());
    }

    use super::*;

    #[test]
    fn defaults_are_valid_and_toml_overrides_them() {
        BrokerConfig::default().validate().unwrap();
        let config = BrokerConfig::from_toml(
            "broker_id = \"b1\"\nport_base = 0\n[limits]\ninflight_requests_max = 8\n",
        )
        .unwrap();
        assert_eq!(config.broker_id, "b1");
        assert_eq!(config.limits.inflight_requests_max, 8);
        assert_eq!(config.idle_timeout_ms, IDLE_TIMEOUT_MS_DEFAULT);
        let config =
            BrokerConfig::from_toml("[tls]\ncert = \"s.pem\"\nkey = \"s.key\"\nca = \"ca.pem\"\n")
                .unwrap();
        let tls = config.tls.unwrap();
        assert_eq!(tls.ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(tls.client_auth, tls::ClientAuth::Required);
        let err = BrokerConfig::from_toml("[tls]\ncertificate = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("certificate"), "{err}");
        let err = BrokerConfig::from_toml("nope = 1").unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let bad = BrokerConfig {
            limits: Limits {
                frame_len_max: 10,
                ..Limits::default()
            },
            ..BrokerConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("frame_len_max")
        );
    }
}
