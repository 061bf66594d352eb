//! A controller node's settings, their defaults, and the limits of its wire traffic.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use protocol::frame::{EXT_LEN_MAX_DEFAULT, FrameLimits};

use crate::error::ControllerError;

/// Largest frame a controller node accepts or sends: a batch of log entries or one snapshot
/// chunk, far above what a control plane's commands need.
pub const FRAME_LEN_MAX: usize = 16 << 20;
/// Bytes of snapshot per install-snapshot RPC. JSON spells a byte in up to four characters
/// (`255,`), so a chunk's frame is at most four times this plus its envelope.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1 << 20;
/// How long a connection to the controller may stay silent before it is closed. Raft
/// heartbeats keep the peers' connections busy far more often.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections served at once: the peers' Raft streams and the brokers' and tools' calls.
pub const MAX_CONNECTIONS: usize = 256;

const _: () = assert!(4 * SNAPSHOT_CHUNK_BYTES as usize + (64 << 10) < FRAME_LEN_MAX);
// The default partial-frame budget of the server loop must hold a largest frame.
const _: () = assert!(FRAME_LEN_MAX <= svc::limits::PARTIAL_FRAME_BYTES_MAX_DEFAULT);

/// The settings of one controller node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerConfig {
    /// This node's Raft id; a key of `voters`.
    pub node_id: u64,
    /// Where this node serves Raft RPCs and the controller API.
    pub listen: SocketAddr,
    /// Every voter of the controller, this node included: Raft id → `host:port`.
    pub voters: BTreeMap<u64, String>,
    /// Where the node keeps its log, vote and snapshot (see `store`).
    pub data_dir: PathBuf,
    /// How often the Raft leader sends heartbeats.
    pub heartbeat_interval: Duration,
    /// The shortest a follower waits without a heartbeat before it stands for election.
    pub election_timeout_min: Duration,
    /// The longest; each wait is drawn at random between the two, so nodes rarely tie.
    pub election_timeout_max: Duration,
    /// How often brokers are expected to heartbeat; the failure detector looks five times per interval.
    pub broker_heartbeat_interval: Duration,
    /// A broker silent for longer is dead to the failure detector.
    pub broker_timeout: Duration,
    /// The longest a proposal or a forwarded heartbeat waits, elections included.
    pub request_timeout: Duration,
    /// Log entries applied between two snapshots; older entries are then purged.
    pub snapshot_logs: u64,
    /// Who may call this node: with security on, every caller authenticates and needs the
    /// `broker` grant on `controller` (the nameservers' own principal has it). Default off.
    pub authority: auth::Authority,
    /// This node's token, presented to the other voters. Default none.
    pub token: Option<String>,
    /// The `[tls]` table of the process hosting the node. With it the RPC server speaks only
    /// TLS (a verified client certificate names its caller), and the node speaks TLS to the
    /// other voters, presenting `client_cert` (default `cert`): a controller group has TLS
    /// on every voter or on none. Default none: plaintext.
    pub tls: Option<tls::TlsSettings>,
}

impl ControllerConfig {
    /// Settings with every default, for node `node_id` of `voters`.
    pub fn new(
        node_id: u64,
        listen: SocketAddr,
        voters: BTreeMap<u64, String>,
        data_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            node_id,
            listen,
            voters,
            data_dir: data_dir.into(),
            heartbeat_interval: Duration::from_millis(250),
            election_timeout_min: Duration::from_millis(1000),
            election_timeout_max: Duration::from_millis(2000),
            broker_heartbeat_interval: Duration::from_millis(500),
            broker_timeout: Duration::from_millis(1500),
            request_timeout: Duration::from_secs(5),
            snapshot_logs: 1000,
            authority: auth::Authority::open(),
            token: None,
            tls: None,
        }
    }

    /// Checks that the settings are usable and agree with each other.
    pub fn validate(&self) -> Result<(), ControllerError> {
        let invalid = |key, reason: String| Err(ControllerError::Config { key, reason });
        if !self.voters.contains_key(&self.node_id) {
            return invalid(
                "voters",
                format!("node {} is not among the voters", self.node_id),
            );
        }
        if self.heartbeat_interval.is_zero() {
            return invalid("heartbeat_interval", "zero".into());
        }
        if self.election_timeout_min <= self.heartbeat_interval {
            return invalid(
                "election_timeout_min",
                "must exceed heartbeat_interval, or followers start elections between heartbeats"
                    .into(),
            );
        }
        if self.election_timeout_max <= self.election_timeout_min {
            return invalid(
                "election_timeout_max",
                "must exceed election_timeout_min".into(),
            );
        }
        if self.broker_heartbeat_interval < Duration::from_millis(2) {
            return invalid("broker_heartbeat_interval", "below 2 ms".into());
        }
        if self.broker_timeout <= self.broker_heartbeat_interval {
            return invalid(
                "broker_timeout",
                "must exceed broker_heartbeat_interval, or a broker is dead between two heartbeats"
                    .into(),
            );
        }
        if self.request_timeout.is_zero() {
            return invalid("request_timeout", "zero".into());
        }
        if self.snapshot_logs == 0 {
            return invalid("snapshot_logs", "zero".into());
        }
        Ok(())
    }

    /// The openraft configuration these settings make.
    pub(crate) fn raft_config(&self) -> Result<openraft::Config, ControllerError> {
        let config = openraft::Config {
            cluster_name: "defibus-controller".into(),
            heartbeat_interval: millis(self.heartbeat_interval),
            election_timeout_min: millis(self.election_timeout_min),
            election_timeout_max: millis(self.election_timeout_max),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_logs),
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            ..Default::default()
        };
        config
            .validate()
            .map_err(|source| ControllerError::RaftConfig {
                source: Box::new(source),
            })
    }

    /// How often the failure detector looks at the brokers: a fifth of the heartbeat
    /// interval (100 ms for 500 ms heartbeats), so a death is acted on within a small part
    /// of the timeout. A look is a scan of the brokers' last-heard times in memory.
    pub(crate) fn detector_interval(&self) -> Duration {
        self.broker_heartbeat_interval / 5
    }
}

/// The frame limits of every controller connection.
pub(crate) fn frame_limits() -> FrameLimits {
    FrameLimits {
        frame_len_max: FRAME_LEN_MAX,
        ext_len_max: EXT_LEN_MAX_DEFAULT,
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ControllerConfig {
        let voters = [(1, "127.0.0.1:1".to_owned())].into_iter().collect();
        ControllerConfig::new(1, "127.0.0.1:1".parse().unwrap(), voters, "/tmp/x")
    }

    #[test]
    fn defaults_are_valid_and_make_a_raft_config() {
        config().validate().unwrap();
        let raft = config().raft_config().unwrap();
        assert_eq!(
            (
                raft.heartbeat_interval,
                raft.election_timeout_min,
                raft.election_timeout_max
            ),
            (250, 1000, 2000)
        );
        assert_eq!(config().detector_interval(), Duration::from_millis(100));
    }

    #[test]
    fn settings_that_contradict_each_other_are_refused_by_key() {
        type Change = fn(&mut ControllerConfig);
        let cases: [(Change, &str); 5] = [
            (|c| c.node_id = 2, "voters"),
            (
                |c| c.election_timeout_min = c.heartbeat_interval,
                "election_timeout_min",
            ),
            (
                |c| c.election_timeout_max = c.election_timeout_min,
                "election_timeout_max",
            ),
            (
                |c| c.broker_timeout = c.broker_heartbeat_interval,
                "broker_timeout",
            ),
            (|c| c.snapshot_logs = 0, "snapshot_logs"),
        ];
        for (change, key) in cases {
            let mut config = config();
            change(&mut config);
            match config.validate() {
                Err(ControllerError::Config { key: got, .. }) => assert_eq!(got, key),
                other => panic!("{key}: {other:?}"),
            }
        }
    }
}
