//! Every setting and limit of the GSL, with its default and why.
//!
//! Read from TOML (`gsl.toml` beside this crate lists every key with its default), then
//! overridden by command-line flags ([`crate::cli`]), then checked by [`GslConfig::validate`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use protocol::frame::{FRAME_LEN_MAX_DEFAULT, FrameLimits};
use serde::{Deserialize, Serialize};
pub use svc::config::FRAME_LEN_MIN;
use svc::config::{Settings, check_at_least_one};

use crate::directory::Limits;
use crate::error::GslError;

/// Default port: the one after the nameserver's 9876, so a bus's control ports sit together
/// (nameserver 9876, GSL 9877, SGS 9878).
pub const LISTEN_PORT_DEFAULT: u16 = 9877;
/// Default listen address: loopback, port [`LISTEN_PORT_DEFAULT`]; another address needs
/// `[security]` (or `--insecure`).
pub const LISTEN_ADDR_DEFAULT: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), LISTEN_PORT_DEFAULT);
/// Default address of the `/metrics` endpoint: loopback, after the broker's 9110 and the
/// nameserver's 9111.
pub const METRICS_ADDR_DEFAULT: &str = "127.0.0.1:9112";
/// Default data directory, relative to the working directory.
pub const DATA_DIR_DEFAULT: &str = "./gsl-data";
/// Default bound on services held: 100,000, far above any bus we know (DeFiBus installations
/// run thousands), and about 20 MB of snapshot at the worst.
pub const SERVICES_MAX_DEFAULT: usize = 100_000;
/// Default bound on deployments (areas) of one service.
pub const DEPLOYMENTS_PER_SERVICE_MAX_DEFAULT: usize = 64;
/// Default limit on open connections (clients resolve rarely: on a cache miss or refresh).
pub const MAX_CONNECTIONS_DEFAULT: usize = 1_024;
/// Default idle timeout: 60 s, as DeFiBus closes idle connections.
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 60_000;
/// Default frame limit: 4 MiB, room for an update of the largest service
/// ([`DEPLOYMENTS_PER_SERVICE_MAX_DEFAULT`] deployments of a few KiB each) many times over.
pub const FRAME_LEN_MAX_GSL_DEFAULT: usize = 4 << 20;
const _: () = {
    assert!(FRAME_LEN_MIN <= FRAME_LEN_MAX_GSL_DEFAULT);
    assert!(FRAME_LEN_MAX_GSL_DEFAULT <= FRAME_LEN_MAX_DEFAULT);
};

/// The GSL's settings. Every field has a default, so an empty TOML file is valid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GslConfig {
    /// Address to listen on. Default `127.0.0.1:9877` ([`LISTEN_ADDR_DEFAULT`]); port 0 picks a
    /// free port (tests, `defibus standalone`).
    pub listen_addr: SocketAddr,
    /// `host:port` of the Prometheus `/metrics` endpoint (port 0: ephemeral); empty: none.
    /// Default `127.0.0.1:9112` ([`METRICS_ADDR_DEFAULT`]). A GSL that cannot listen there
    /// runs without it and says so (WARN).
    pub metrics_addr: String,
    /// Directory of the durable directory (`services.gsl`) and its `LOCK`. Default
    /// `./gsl-data` ([`DATA_DIR_DEFAULT`]).
    pub data_dir: PathBuf,
    /// Most services held; an update adding one more is refused with `SystemBusy`. Default
    /// 100000 ([`SERVICES_MAX_DEFAULT`]).
    pub services_max: usize,
    /// Most deployments per service. Default 64 ([`DEPLOYMENTS_PER_SERVICE_MAX_DEFAULT`]).
    pub deployments_per_service_max: usize,
    /// Most connections open at once; further connections are closed at once. Default 1024
    /// ([`MAX_CONNECTIONS_DEFAULT`]).
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed. Default 60000 ms
    /// ([`IDLE_TIMEOUT_MS_DEFAULT`]).
    pub idle_timeout_ms: u64,
    /// Largest request frame accepted, header included, in bytes. Default 4 MiB
    /// ([`FRAME_LEN_MAX_GSL_DEFAULT`]), at least [`FRAME_LEN_MIN`].
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
    /// Authentication, the ACL and the audit log (`[security]`, docs/ARCHITECTURE.md §9):
    /// with `enabled`, callers authenticate and updates need `admin_service`; the policy
    /// comes from `policy_nameservers` (required then: the GSL knows no nameserver of its
    /// own). Default: off.
    pub security: auth::SecuritySettings,
    /// TLS on the listener and on the GSL's own connections (the `[tls]` table,
    /// docs/ARCHITECTURE.md §4.6): a verified client certificate names its caller. Default
    /// none: plaintext.
    pub tls: Option<tls::TlsSettings>,
}

impl Default for GslConfig {
    fn default() -> Self {
        Self {
            listen_addr: LISTEN_ADDR_DEFAULT,
            metrics_addr: METRICS_ADDR_DEFAULT.into(),
            data_dir: PathBuf::from(DATA_DIR_DEFAULT),
            services_max: SERVICES_MAX_DEFAULT,
            deployments_per_service_max: DEPLOYMENTS_PER_SERVICE_MAX_DEFAULT,
            max_connections: MAX_CONNECTIONS_DEFAULT,
            idle_timeout_ms: IDLE_TIMEOUT_MS_DEFAULT,
            frame_len_max: FRAME_LEN_MAX_GSL_DEFAULT,
            frame_timeout_ms: svc::limits::FRAME_TIMEOUT_MS_DEFAULT,
            partial_frame_bytes_max: svc::limits::PARTIAL_FRAME_BYTES_MAX_DEFAULT,
            connections_per_ip_max: svc::limits::CONNECTIONS_PER_IP_MAX_DEFAULT,
            security: auth::SecuritySettings::default(),
            tls: None,
        }
    }
}

impl GslConfig {
    /// Parses a TOML document; `path` only names the source in errors.
    pub fn from_toml_str(toml_text: &str, path: &Path) -> Result<Self, GslError> {
        svc::config::parse(toml_text, path)
    }

    /// Reads and parses a TOML file. The result is not yet validated.
    pub fn from_file(path: &Path) -> Result<Self, GslError> {
        svc::config::read(path)
    }

    /// Checks that every setting is usable.
    pub fn validate(&self) -> Result<(), GslError> {
        self.security.validate().map_err(GslError::Security)?;
        if self.security.enabled && self.security.policy_nameservers.is_empty() {
            return Err(GslError::ConfigInvalid {
                key: "security.policy_nameservers",
                reason: "required with security on: the GSL fetches the policy from them".into(),
            });
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(GslError::ConfigInvalid {
                key: "data_dir",
                reason: "must not be empty".into(),
            });
        }
        check_at_least_one(&[
            ("services_max", self.services_max as u64),
            (
                "deployments_per_service_max",
                self.deployments_per_service_max as u64,
            ),
            ("max_connections", self.max_connections as u64),
            ("idle_timeout_ms", self.idle_timeout_ms),
        ])?;
        svc::limits::check_limits(
            self.frame_len_max,
            self.frame_timeout_ms,
            self.partial_frame_bytes_max,
            self.connections_per_ip_max,
        )
    }

    /// The directory's bounds.
    pub fn limits(&self) -> Limits {
        Limits {
            services_max: self.services_max,
            deployments_per_service_max: self.deployments_per_service_max,
        }
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
    pub fn server_limits(&self) -> svc::limits::Limits {
        svc::limits::Limits {
            max_connections: self.max_connections,
            connections_per_ip_max: self.connections_per_ip_max,
            partial_frame_bytes_max: self.partial_frame_bytes_max,
            frame_timeout: Duration::from_millis(self.frame_timeout_ms),
        }
    }
}

impl Settings for GslConfig {
    type Error = GslError;

    fn validate(&self) -> Result<(), GslError> {
        GslConfig::validate(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_an_empty_file_means_defaults() {
        let config = GslConfig::default();
        config.validate().unwrap();
        assert_eq!(
            GslConfig::from_toml_str("", Path::new("x")).unwrap(),
            config
        );
        assert_eq!(config.listen_addr.to_string(), "127.0.0.1:9877");
    }

    #[test]
    fn the_example_file_lists_every_default() {
        let uncommented = svc::config::example_settings(include_str!("../gsl.toml"));
        let parsed = GslConfig::from_toml_str(&uncommented, Path::new("example")).unwrap();
        assert_eq!(parsed, GslConfig::default());
        assert_eq!(
            uncommented.lines().filter(|l| !l.starts_with('#')).count(),
            11,
            "one line per setting:\n{uncommented}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_by_name() {
        let err = GslConfig::from_toml_str("service_max = 1", Path::new("gsl.toml")).unwrap_err();
        assert!(err.to_string().contains("gsl.toml"), "{err}");
        let config = GslConfig {
            services_max: 0,
            ..Default::default()
        };
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("services_max"), "{err}");
    }
}
