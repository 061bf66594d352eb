//! Every setting and limit of the SGS, with its default and why.
//!
//! Read from TOML (`sgs.toml` beside this crate lists every key with its default and an area
//! example), then overridden by command-line flags ([`crate::cli`]), then checked by
//! [`SgsConfig::validate`].

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use protocol::frame::{FRAME_LEN_MAX_DEFAULT, FrameLimits};
use protocol::names::Area;
use serde::{Deserialize, Serialize};
pub use svc::config::FRAME_LEN_MIN;
use svc::config::{Settings, check_at_least_one};

use crate::error::SgsError;

/// Default port: after the nameserver's 9876 and GSL's 9877.
pub const LISTEN_PORT_DEFAULT: u16 = 9878;
/// Default listen address: loopback, port [`LISTEN_PORT_DEFAULT`]; another address needs
/// `[security]` (or `--insecure`).
pub const LISTEN_ADDR_DEFAULT: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), LISTEN_PORT_DEFAULT);
/// Default address of the `/metrics` endpoint: loopback, after the broker's 9110, the
/// nameserver's 9111 and the GSL's 9112.
pub const METRICS_ADDR_DEFAULT: &str = "127.0.0.1:9113";
/// Default data directory, relative to the working directory.
pub const DATA_DIR_DEFAULT: &str = "./sgs-data";
/// Default GSL endpoint: a GSL on this host at its default port.
pub const GSL_ENDPOINT_DEFAULT: &str = "127.0.0.1:9877";
/// Default bound on services registered.
pub const SERVICES_MAX_DEFAULT: usize = 100_000;
/// Most queues a service's topic may have (the dynamic-queue ceiling of DESIGN §6).
pub const QUEUE_COUNT_MAX: u32 = 1024;
/// Default attempts of one broker operation (create or delete a topic) before a deploy or an
/// offline gives up: 5, about 6 s of backoff in all at the default delays.
pub const ATTEMPTS_DEFAULT: u32 = 5;
/// Default first delay between attempts.
pub const RETRY_BACKOFF_MIN_MS_DEFAULT: u64 = 200;
/// Default longest delay between attempts.
pub const RETRY_BACKOFF_MAX_MS_DEFAULT: u64 = 5_000;
/// Default timeout of one request to a broker, nameserver or GSL.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 3_000;
/// Default wait, after creating a topic, for its area's nameservers to route it (brokers
/// register every 3 s): a deploy answers once the service is usable. Past it the deploy still
/// succeeds, with a warning.
pub const ROUTE_WAIT_MS_DEFAULT: u64 = 10_000;
/// Default longest wait, when taking a service offline, for every consumer group to commit
/// the end of every queue; past it the topics are kept and the offline fails (retry it).
pub const DRAIN_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Default pause between two drain checks.
pub const DRAIN_POLL_INTERVAL_MS_DEFAULT: u64 = 500;
/// Default period of re-pushing every service to GSL (also done at start), so a GSL that lost
/// or missed an update converges without an operator.
pub const GSL_SYNC_INTERVAL_MS_DEFAULT: u64 = 30_000;
/// Default limit on open connections (operators and tools only).
pub const MAX_CONNECTIONS_DEFAULT: usize = 256;
/// Default idle timeout: 60 s, as DeFiBus closes idle connections.
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 60_000;
/// Default frame limit: 4 MiB.
pub const FRAME_LEN_MAX_SGS_DEFAULT: usize = 4 << 20;
const _: () = {
    assert!(FRAME_LEN_MIN <= FRAME_LEN_MAX_SGS_DEFAULT);
    assert!(FRAME_LEN_MAX_SGS_DEFAULT <= FRAME_LEN_MAX_DEFAULT);
    assert!(RETRY_BACKOFF_MIN_MS_DEFAULT <= RETRY_BACKOFF_MAX_MS_DEFAULT);
    assert!(DRAIN_POLL_INTERVAL_MS_DEFAULT < DRAIN_TIMEOUT_MS_DEFAULT);
};

/// Where one area's brokers are: `[areas.A10]` in the TOML file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AreaConfig {
    /// The broker cluster that holds the area's service topics.
    pub cluster: String,
    /// The area's nameservers, `host:port`.
    pub nameservers: Vec<String>,
}

/// The SGS's settings. Every field has a default, so an empty TOML file is valid (but such an
/// SGS can deploy nowhere until areas are configured).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SgsConfig {
    /// Address to listen on. Default `127.0.0.1:9878`; port 0 picks a free port.
    pub listen_addr: SocketAddr,
    /// `host:port` of the Prometheus `/metrics` endpoint (port 0: ephemeral); empty: none.
    /// Default `127.0.0.1:9113` ([`METRICS_ADDR_DEFAULT`]). An SGS that cannot listen there
    /// runs without it and says so (WARN).
    pub metrics_addr: String,
    /// Directory of the registry (`services.sgs`) and its `LOCK`. Default `./sgs-data`.
    pub data_dir: PathBuf,
    /// GSL endpoints, `host:port`; every change is pushed to each. Default
    /// `["127.0.0.1:9877"]`.
    pub gsl_endpoints: Vec<String>,
    /// Most services registered. Default 100000.
    pub services_max: usize,
    /// Attempts of one broker operation before giving up. Default 5.
    pub attempts: u32,
    /// First delay between attempts, ms; doubled (with jitter) up to the max. Default 200.
    pub retry_backoff_min_ms: u64,
    /// Longest delay between attempts, ms. Default 5000.
    pub retry_backoff_max_ms: u64,
    /// Timeout of one request to a broker, nameserver or GSL, ms. Default 3000.
    pub request_timeout_ms: u64,
    /// After creating a topic, how long to wait for its route, ms. Default 10000.
    pub route_wait_ms: u64,
    /// Longest wait for a service's queues to be consumed before deleting them, ms. Default
    /// 30000.
    pub drain_timeout_ms: u64,
    /// Pause between drain checks, ms. Default 500.
    pub drain_poll_interval_ms: u64,
    /// Period of re-pushing every service to GSL, ms. Default 30000.
    pub gsl_sync_interval_ms: u64,
    /// Most connections open at once. Default 256.
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed, ms. Default 60000.
    pub idle_timeout_ms: u64,
    /// Largest request frame accepted, bytes. Default 4194304.
    pub frame_len_max: usize,
    /// A frame must arrive whole within this long of its first byte, and a new connection's
    /// first frame within this long of connecting; else the connection is closed. Default
    /// 10000 ms.
    pub frame_timeout_ms: u64,
    /// Bytes that partial frames larger than 64 KiB may hold at once, over all connections;
    /// a connection whose frame does not fit waits, reading nothing, until it does or its
    /// frame deadline passes. Default 64 MiB, at least `frame_len_max`.
    pub partial_frame_bytes_max: usize,
    /// Most connections open at once from one peer address; further ones are closed at once.
    /// Default 128.
    pub connections_per_ip_max: usize,
    /// The areas services may be deployed to, by area code. Default none.
    pub areas: BTreeMap<String, AreaConfig>,
    /// Authentication, the ACL and the audit log (`[security]`, docs/ARCHITECTURE.md §9):
    /// with `enabled`, callers authenticate and apply, deploy and offline need
    /// `admin_service` on the service id; `token_file` is the SGS's own token (topic admin on
    /// the brokers, updates to GSL). The policy comes from `policy_nameservers`, else every
    /// area's nameservers. Default: off.
    pub security: auth::SecuritySettings,
    /// TLS on the listener and on the SGS's own connections to the GSL, the nameservers and
    /// the brokers (the `[tls]` table, docs/ARCHITECTURE.md §4.6): a verified client
    /// certificate names its caller. Default none: plaintext.
    pub tls: Option<tls::TlsSettings>,
}

impl Default for SgsConfig {
    fn default() -> Self {
        Self {
            listen_addr: LISTEN_ADDR_DEFAULT,
            metrics_addr: METRICS_ADDR_DEFAULT.into(),
            data_dir: PathBuf::from(DATA_DIR_DEFAULT),
            gsl_endpoints: vec![GSL_ENDPOINT_DEFAULT.to_owned()],
            services_max: SERVICES_MAX_DEFAULT,
            attempts: ATTEMPTS_DEFAULT,
            retry_backoff_min_ms: RETRY_BACKOFF_MIN_MS_DEFAULT,
            retry_backoff_max_ms: RETRY_BACKOFF_MAX_MS_DEFAULT,
            request_timeout_ms: REQUEST_TIMEOUT_MS_DEFAULT,
            route_wait_ms: ROUTE_WAIT_MS_DEFAULT,
            drain_timeout_ms: DRAIN_TIMEOUT_MS_DEFAULT,
            drain_poll_interval_ms: DRAIN_POLL_INTERVAL_MS_DEFAULT,
            gsl_sync_interval_ms: GSL_SYNC_INTERVAL_MS_DEFAULT,
            max_connections: MAX_CONNECTIONS_DEFAULT,
            idle_timeout_ms: IDLE_TIMEOUT_MS_DEFAULT,
            frame_len_max: FRAME_LEN_MAX_SGS_DEFAULT,
            frame_timeout_ms: svc::limits::FRAME_TIMEOUT_MS_DEFAULT,
            partial_frame_bytes_max: svc::limits::PARTIAL_FRAME_BYTES_MAX_DEFAULT,
            connections_per_ip_max: svc::limits::CONNECTIONS_PER_IP_MAX_DEFAULT,
            areas: BTreeMap::new(),
            security: auth::SecuritySettings::default(),
            tls: None,
        }
    }
}

impl SgsConfig {
    /// Parses a TOML document; `path` only names the source in errors.
    pub fn from_toml_str(toml_text: &str, path: &Path) -> Result<Self, SgsError> {
        svc::config::parse(toml_text, path)
    }

    /// Reads and parses a TOML file. The result is not yet validated.
    pub fn from_file(path: &Path) -> Result<Self, SgsError> {
        svc::config::read(path)
    }

    /// Checks that every setting is usable and that the settings agree with each other.
    pub fn validate(&self) -> Result<(), SgsError> {
        let invalid =
            |key: &'static str, reason: String| Err(SgsError::ConfigInvalid { key, reason });
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir", "must not be empty".into());
        }
        if self.gsl_endpoints.is_empty() || self.gsl_endpoints.iter().any(String::is_empty) {
            return invalid("gsl_endpoints", "at least one non-empty host:port".into());
        }
        check_at_least_one(&[
            ("services_max", self.services_max as u64),
            ("attempts", u64::from(self.attempts)),
            ("retry_backoff_min_ms", self.retry_backoff_min_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("drain_poll_interval_ms", self.drain_poll_interval_ms),
            ("gsl_sync_interval_ms", self.gsl_sync_interval_ms),
            ("max_connections", self.max_connections as u64),
            ("idle_timeout_ms", self.idle_timeout_ms),
        ])?;
        if self.retry_backoff_max_ms < self.retry_backoff_min_ms {
            return invalid(
                "retry_backoff_max_ms",
                format!("below retry_backoff_min_ms ({})", self.retry_backoff_min_ms),
            );
        }
        svc::limits::check_limits(
            self.frame_len_max,
            self.frame_timeout_ms,
            self.partial_frame_bytes_max,
            self.connections_per_ip_max,
        )?;
        for (code, area) in &self.areas {
            if let Err(e) = code.parse::<Area>() {
                return invalid("areas", format!("[areas.{code}]: {e}"));
            }
            if area.cluster.is_empty() {
                return invalid("areas", format!("[areas.{code}]: cluster is empty"));
            }
            if area.nameservers.is_empty() || area.nameservers.iter().any(String::is_empty) {
                return invalid(
                    "areas",
                    format!("[areas.{code}]: at least one non-empty nameserver host:port"),
                );
            }
        }
        Ok(())
    }

    /// A duration setting in ms as a [`Duration`].
    pub fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    /// Idle timeout as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Self::ms(self.idle_timeout_ms)
    }

    /// Request timeout as a duration.
    pub fn request_timeout(&self) -> Duration {
        Self::ms(self.request_timeout_ms)
    }

    /// The framer limits: `frame_len_max`, and an extension limit no larger.
    pub fn frame_limits(&self) -> FrameLimits {
        svc::config::frame_limits(self.frame_len_max)
    }

    /// The connection limits the accept loop and every connection enforce.
    pub fn server_limits(&self) -> svc::limits::Limits {
        svc::limits::Limits {
            max_connections: self.max_connections,
            connections_per_ip_max: self.connections_per_ip_max,
            partial_frame_bytes_max: self.partial_frame_bytes_max,
            frame_timeout: Duration::from_millis(self.frame_timeout_ms),
        }
    }
}

impl Settings for SgsConfig {
    type Error = SgsError;

    fn validate(&self) -> Result<(), SgsError> {
        SgsConfig::validate(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_an_empty_file_means_defaults() {
        let config = SgsConfig::default();
        config.validate().unwrap();
        assert_eq!(
            SgsConfig::from_toml_str("", Path::new("x")).unwrap(),
            config
        );
        assert_eq!(config.listen_addr.to_string(), "127.0.0.1:9878");
    }

    #[test]
    fn the_example_file_lists_every_default_and_its_areas_parse() {
        let example = include_str!("../sgs.toml");
        let (settings, areas) = example.split_once("[areas.").unwrap();
        let uncommented = svc::config::example_settings(settings);
        let parsed = SgsConfig::from_toml_str(&uncommented, Path::new("example")).unwrap();
        assert_eq!(parsed, SgsConfig::default());
        assert_eq!(
            uncommented.lines().filter(|l| !l.starts_with('#')).count(),
            19,
            "one line per setting:\n{uncommented}"
        );
        let with_areas = format!("[areas.{areas}");
        let parsed = SgsConfig::from_toml_str(&with_areas, Path::new("example")).unwrap();
        parsed.validate().unwrap();
        assert_eq!(parsed.areas.len(), 2);
        assert_eq!(
            parsed.areas["A10"].nameservers,
            ["10.0.1.1:9876", "10.0.1.2:9876"]
        );
    }

    #[test]
    fn unknown_keys_and_bad_areas_are_refused_by_name() {
        let err = SgsConfig::from_toml_str("atempts = 1", Path::new("sgs.toml")).unwrap_err();
        assert!(err.to_string().contains("sgs.toml"), "{err}");
        let text = "[areas.a10]\ncluster = \"c\"\nnameservers = [\"h:1\"]\n";
        let config = SgsConfig::from_toml_str(text, Path::new("x")).unwrap();
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("[areas.a10]"), "{err}");
        let text = "[areas.A10]\ncluster = \"c\"\nnameservers = []\n";
        let config = SgsConfig::from_toml_str(text, Path::new("x")).unwrap();
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("nameserver")
        );
    }
}
