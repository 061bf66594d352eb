//! Every setting and limit of the nameserver, with its default and why.
//!
//! Read from TOML (`nameserver.toml` beside this crate lists every key with its default), then
//! overridden by command-line flags ([`crate::cli`]), then checked by
//! [`NameserverConfig::validate`] before the server starts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use protocol::frame::{FRAME_LEN_MAX_DEFAULT, FrameLimits};
use serde::{Deserialize, Serialize};
pub use svc::config::FRAME_LEN_MIN;
use svc::config::{Settings, check_at_least_one};
pub use svc::limits::{
    CONNECTIONS_PER_IP_MAX_DEFAULT, FRAME_TIMEOUT_MS_DEFAULT, PARTIAL_FRAME_BYTES_MAX_DEFAULT,
};
use svc::limits::{Limits, check_limits};

use crate::error::NameserverError;

/// Default port: the one RocketMQ and DeFiBus nameservers have always used, so existing
/// firewall rules and habits carry over.
pub const LISTEN_PORT_DEFAULT: u16 = 9876;
/// Default address of the `/metrics` endpoint: loopback, beside the broker's 9110.
pub const METRICS_ADDR_DEFAULT: &str = "127.0.0.1:9111";
/// Default listen address: loopback, port [`LISTEN_PORT_DEFAULT`] (another address must be
/// asked for, and then needs `[security]` or `--insecure`).
pub const LISTEN_ADDR_DEFAULT: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), LISTEN_PORT_DEFAULT);
/// How often brokers register (their `register_interval_ms` default); registration is the
/// heartbeat.
pub const BROKER_REGISTER_INTERVAL_MS_DEFAULT: u64 = 3_000;
/// Registrations a broker may miss before it is dropped.
pub const BROKER_EXPIRY_INTERVALS_DEFAULT: u64 = 3;
/// Default broker expiry: [`BROKER_EXPIRY_INTERVALS_DEFAULT`] register intervals, 9 s.
pub const BROKER_EXPIRY_MS_DEFAULT: u64 =
    BROKER_EXPIRY_INTERVALS_DEFAULT * BROKER_REGISTER_INTERVAL_MS_DEFAULT;
/// Default sweep interval: a third of a register interval, so an expired broker lingers in
/// the registry at most a second past its expiry (routes never list it, see
/// [`crate::registry`]).
pub const SWEEP_INTERVAL_MS_DEFAULT: u64 = 1_000;
/// Default limit on open connections. Each buffers up to 64 KiB of a frame on its own, and
/// larger frames share `partial_frame_bytes_max`, so receive buffers hold at most 64 MiB +
/// 64 MiB by default, however many peers send maximal frames at once.
pub const MAX_CONNECTIONS_DEFAULT: usize = 1_024;
/// Default idle timeout: a connection that sends nothing for 60 s is closed, as DeFiBus
/// closes idle connections. Brokers register every 3 s and never get near it.
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 60_000;
/// Default frame limit: 4 MiB. Nameserver frames are control archives; the largest is a
/// registration, about 100 bytes per topic plus 8 per queue, so 4 MiB holds a broker with
/// 10,000 topics of 32 queues each.
pub const FRAME_LEN_MAX_NAMESERVER_DEFAULT: usize = 4 << 20;
const _: () = {
    assert!(BROKER_EXPIRY_MS_DEFAULT == 9_000);
    assert!(SWEEP_INTERVAL_MS_DEFAULT < BROKER_EXPIRY_MS_DEFAULT);
    assert!(IDLE_TIMEOUT_MS_DEFAULT > BROKER_EXPIRY_MS_DEFAULT);
    assert!(FRAME_LEN_MIN <= FRAME_LEN_MAX_NAMESERVER_DEFAULT);
    assert!(FRAME_LEN_MAX_NAMESERVER_DEFAULT <= FRAME_LEN_MAX_DEFAULT);
};

/// The nameserver's settings. Every field has a default, so an empty TOML file is valid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NameserverConfig {
    /// Address to listen on. Default `127.0.0.1:9876` ([`LISTEN_ADDR_DEFAULT`]); port 0 picks a
    /// free port (tests, `defibus standalone`).
    pub listen_addr: SocketAddr,
    /// `host:port` of the Prometheus `/metrics` endpoint (port 0: ephemeral); empty: none.
    /// Default `127.0.0.1:9111` ([`METRICS_ADDR_DEFAULT`]). A nameserver that cannot listen
    /// there runs without it and says so (WARN).
    pub metrics_addr: String,
    /// A broker whose last registration is older than this is no longer routed to and is
    /// dropped by the next sweep; sent to brokers in `RegisterAck`. Default 9000 ms: three
    /// missed registrations at the brokers' default 3000 ms interval
    /// ([`BROKER_EXPIRY_MS_DEFAULT`]).
    pub broker_expiry_ms: u64,
    /// How often expired brokers are removed and logged. Default 1000 ms
    /// ([`SWEEP_INTERVAL_MS_DEFAULT`]); must be below `broker_expiry_ms`.
    pub sweep_interval_ms: u64,
    /// Most connections open at once; further connections are closed at once. Default 1024
    /// ([`MAX_CONNECTIONS_DEFAULT`]).
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed. Default 60000 ms
    /// ([`IDLE_TIMEOUT_MS_DEFAULT`]).
    pub idle_timeout_ms: u64,
    /// Largest request frame accepted, header included, in bytes; a larger one is answered
    /// with `FrameTooLarge` from its header alone and the connection closed. Default 4 MiB
    /// ([`FRAME_LEN_MAX_NAMESERVER_DEFAULT`]), at least [`FRAME_LEN_MIN`].
    pub frame_len_max: usize,
    /// A frame must arrive whole within this long of its first byte, and a new connection's
    /// first frame within this long of connecting; else the connection is closed. Default
    /// 10000 ms ([`FRAME_TIMEOUT_MS_DEFAULT`]).
    pub frame_timeout_ms: u64,
    /// Bytes that partial frames larger than 64 KiB may hold at once, over all connections;
    /// a connection whose frame does not fit waits, reading nothing, until it does or its
    /// frame deadline passes. Default 64 MiB ([`PARTIAL_FRAME_BYTES_MAX_DEFAULT`]), at least
    /// `frame_len_max`.
    pub partial_frame_bytes_max: usize,
    /// Most connections open at once from one peer address; further ones are closed at once.
    /// Default 128 ([`CONNECTIONS_PER_IP_MAX_DEFAULT`]).
    pub connections_per_ip_max: usize,
    /// The replication controller this nameserver runs, one voter of its Raft group
    /// (docs/ARCHITECTURE.md §8.6). Default none: no replicated queue fails over by itself.
    pub controller: Option<ControllerSettings>,
    /// Authentication, the ACL and the audit log (the `[security]` table,
    /// docs/ARCHITECTURE.md §9). The nameserver keeps the policy (`policy_file`) and serves
    /// it to every other process. Default: off.
    pub security: auth::SecuritySettings,
    /// TLS on the listener, on the controller's Raft port and on the nameserver's own
    /// connections (the queue roles its controller sends brokers, the Raft RPCs to the other
    /// voters): the `[tls]` table, docs/ARCHITECTURE.md §4.6. A verified client certificate
    /// names its caller. Default none: plaintext.
    pub tls: Option<tls::TlsSettings>,
}

/// Default interval of the controller's reconciliation (roles sent, elections, in-sync
/// changes), ms.
pub const RECONCILE_INTERVAL_MS_DEFAULT: u64 = 250;
/// Default time a broker may stay silent before the controller moves its leaderships, ms:
/// three of the brokers' default 500 ms heartbeats (`controller_heartbeat_interval_ms`), so
/// one or two late heartbeats never move a leadership, and a dead broker's queues take
/// acknowledged produces on a new leader within about 2 s. Brokers that send no heartbeats
/// (`controller_heartbeat_interval_ms = 0`) need a timeout above two registration intervals.
pub const CONTROLLER_BROKER_TIMEOUT_MS_DEFAULT: u64 = 1_500;

/// The `[controller]` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerSettings {
    /// This node's id in the Raft group, unique among `voters`.
    pub node_id: u64,
    /// Address the controller's Raft traffic listens on (not the nameserver's).
    pub listen_addr: SocketAddr,
    /// Every voter, this one included, as `id=host:port` (three nameservers: three voters).
    pub voters: Vec<String>,
    /// Where the controller keeps its Raft log, vote and snapshot.
    pub data_dir: std::path::PathBuf,
    /// A broker silent this long (no heartbeat, no registration) loses its leaderships to
    /// in-sync replicas. Default 1500 ms ([`CONTROLLER_BROKER_TIMEOUT_MS_DEFAULT`]); keep it
    /// at least three of the brokers' `controller_heartbeat_interval_ms`.
    #[serde(default = "broker_timeout_default")]
    pub broker_timeout_ms: u64,
    /// How often the controller's leader compares its decisions with what brokers report
    /// and acts. Default 250 ms.
    #[serde(default = "reconcile_interval_default")]
    pub reconcile_interval_ms: u64,
}

fn broker_timeout_default() -> u64 {
    CONTROLLER_BROKER_TIMEOUT_MS_DEFAULT
}

fn reconcile_interval_default() -> u64 {
    RECONCILE_INTERVAL_MS_DEFAULT
}

impl ControllerSettings {
    /// The voters as ids and addresses.
    pub fn voter_map(&self) -> Result<std::collections::BTreeMap<u64, String>, NameserverError> {
        let invalid = |reason: String| NameserverError::ConfigInvalid {
            key: "controller.voters",
            reason,
        };
        let mut voters = std::collections::BTreeMap::new();
        for voter in &self.voters {
            let (id, addr) = voter
                .split_once('=')
                .ok_or_else(|| invalid(format!("{voter:?} is not id=host:port")))?;
            let id: u64 = id
                .parse()
                .map_err(|e| invalid(format!("{voter:?}: the id: {e}")))?;
            if voters.insert(id, addr.to_owned()).is_some() {
                return Err(invalid(format!("voter {id} is listed twice")));
            }
        }
        if !voters.contains_key(&self.node_id) {
            return Err(invalid(format!(
                "this node ({}) is not among the voters",
                self.node_id
            )));
        }
        Ok(voters)
    }

    /// The controller's configuration.
    pub fn controller_config(&self) -> Result<controller::ControllerConfig, NameserverError> {
        let mut config = controller::ControllerConfig::new(
            self.node_id,
            self.listen_addr,
            self.voter_map()?,
            &self.data_dir,
        );
        config.broker_timeout = Duration::from_millis(self.broker_timeout_ms);
        // The brokers' heartbeats: a third of the timeout (the brokers' default, 500 ms, for
        // the default timeout).
        config.broker_heartbeat_interval =
            Duration::from_millis((self.broker_timeout_ms / 3).max(1));
        config
            .validate()
            .map_err(|e| NameserverError::ConfigInvalid {
                key: "controller",
                reason: e.to_string(),
            })?;
        Ok(config)
    }
}

impl Default for NameserverConfig {
    fn default() -> Self {
        Self {
            listen_addr: LISTEN_ADDR_DEFAULT,
            metrics_addr: METRICS_ADDR_DEFAULT.into(),
            broker_expiry_ms: BROKER_EXPIRY_MS_DEFAULT,
            sweep_interval_ms: SWEEP_INTERVAL_MS_DEFAULT,
            max_connections: MAX_CONNECTIONS_DEFAULT,
            idle_timeout_ms: IDLE_TIMEOUT_MS_DEFAULT,
            frame_len_max: FRAME_LEN_MAX_NAMESERVER_DEFAULT,
            frame_timeout_ms: FRAME_TIMEOUT_MS_DEFAULT,
            partial_frame_bytes_max: PARTIAL_FRAME_BYTES_MAX_DEFAULT,
            connections_per_ip_max: CONNECTIONS_PER_IP_MAX_DEFAULT,
            controller: None,
            security: auth::SecuritySettings::default(),
            tls: None,
        }
    }
}

impl NameserverConfig {
    /// Parses a TOML document; `path` only names the source in errors.
    pub fn from_toml_str(toml_text: &str, path: &Path) -> Result<Self, NameserverError> {
        svc::config::parse(toml_text, path)
    }

    /// Reads and parses a TOML file. The result is not yet validated.
    pub fn from_file(path: &Path) -> Result<Self, NameserverError> {
        svc::config::read(path)
    }

    /// Checks that every setting is usable and that the settings agree with each other.
    pub fn validate(&self) -> Result<(), NameserverError> {
        check_at_least_one(&[("broker_expiry_ms", self.broker_expiry_ms)])?;
        if self.sweep_interval_ms == 0 || self.sweep_interval_ms >= self.broker_expiry_ms {
            return Err(NameserverError::ConfigInvalid {
                key: "sweep_interval_ms",
                reason: format!(
                    "{} must be at least 1 and below broker_expiry_ms ({})",
                    self.sweep_interval_ms, self.broker_expiry_ms
                ),
            });
        }
        check_at_least_one(&[
            ("max_connections", self.max_connections as u64),
            ("idle_timeout_ms", self.idle_timeout_ms),
        ])?;
        if let Some(controller) = &self.controller {
            controller.controller_config()?;
            check_at_least_one(&[
                ("controller.broker_timeout_ms", controller.broker_timeout_ms),
                (
                    "controller.reconcile_interval_ms",
                    controller.reconcile_interval_ms,
                ),
            ])?;
        }
        self.security
            .validate()
            .map_err(NameserverError::Security)?;
        if self.security.enabled && self.security.policy_file.is_none() {
            return Err(NameserverError::ConfigInvalid {
                key: "security.policy_file",
                reason: "required with security on: the nameserver keeps the policy \
                         (defibus security init writes the first one)"
                    .into(),
            });
        }
        check_limits(
            self.frame_len_max,
            self.frame_timeout_ms,
            self.partial_frame_bytes_max,
            self.connections_per_ip_max,
        )
    }

    /// Broker expiry as a duration.
    pub fn broker_expiry(&self) -> Duration {
        Duration::from_millis(self.broker_expiry_ms)
    }

    /// Sweep interval as a duration.
    pub fn sweep_interval(&self) -> Duration {
        Duration::from_millis(self.sweep_interval_ms)
    }

    /// Idle timeout as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// The framer limits: `frame_len_max`, and an extension limit no larger.
    pub fn frame_limits(&self) -> FrameLimits {
        svc::config::frame_limits(self.frame_len_max)
    }

    /// The connection limits the accept loop and every connection enforce.
    pub fn server_limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            connections_per_ip_max: self.connections_per_ip_max,
            partial_frame_bytes_max: self.partial_frame_bytes_max,
            frame_timeout: Duration::from_millis(self.frame_timeout_ms),
        }
    }
}

impl Settings for NameserverConfig {
    type Error = NameserverError;

    fn validate(&self) -> Result<(), NameserverError> {
        NameserverConfig::validate(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_an_empty_file_means_defaults() {
        let config = NameserverConfig::default();
        config.validate().unwrap();
        assert_eq!(
            NameserverConfig::from_toml_str("", Path::new("x")).unwrap(),
            config
        );
        assert_eq!(config.listen_addr.to_string(), "127.0.0.1:9876");
    }

    #[test]
    fn the_example_file_lists_every_default() {
        let uncommented = svc::config::example_settings(include_str!("../nameserver.toml"));
        let parsed = NameserverConfig::from_toml_str(&uncommented, Path::new("example")).unwrap();
        assert_eq!(parsed, NameserverConfig::default());
        let keys = uncommented.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(keys, 10, "one line per setting:\n{uncommented}");
        // The controller example, uncommented, is a valid table with the defaults.
        let table: Vec<&str> = include_str!("../nameserver.toml")
            .lines()
            .skip_while(|l| *l != "#[controller]")
            .map_while(|l| l.strip_prefix('#'))
            .collect();
        let parsed =
            NameserverConfig::from_toml_str(&table.join("\n"), Path::new("example")).unwrap();
        parsed.validate().unwrap();
        let controller = parsed
            .controller
            .expect("the example has a controller table");
        assert_eq!(
            controller.broker_timeout_ms,
            CONTROLLER_BROKER_TIMEOUT_MS_DEFAULT
        );
        assert_eq!(
            controller.reconcile_interval_ms,
            RECONCILE_INTERVAL_MS_DEFAULT
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_by_name() {
        let err = NameserverConfig::from_toml_str("brokr_expiry_ms = 1", Path::new("ns.toml"))
            .unwrap_err();
        assert!(err.to_string().contains("ns.toml"), "{err}");
        let config = NameserverConfig {
            sweep_interval_ms: 9_000,
            ..Default::default()
        };
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("sweep_interval_ms"), "{err}");
        let config = NameserverConfig {
            frame_len_max: 10,
            ..Default::default()
        };
        assert!(config.validate().is_err());
        let config = NameserverConfig {
            partial_frame_bytes_max: FRAME_LEN_MAX_NAMESERVER_DEFAULT - 1,
            ..Default::default()
        };
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("partial_frame_bytes_max"), "{err}");
    }
}
