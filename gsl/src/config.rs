//! Every setting and limit of the GSL, with its default and why.
//!
//! Read from TOML (`gsl.toml` beside this crate lists every key with its default), then
//! overridden by command-line flags ([`crate::cli`]), then checked by [`GslConfig::validate`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use protocol::frame::{EXT_LEN_MAX_DEFAULT, FRAME_LEN_MAX_DEFAULT, FrameLimits, HEADER_LEN};
use serde::{Deserialize, Serialize};

use crate::directory::Limits;
use crate::error::GslError;

/// Default port: the one after the nameserver's 9876, so a bus's control ports sit together
/// (nameserver 9876, GSL 9877, SGS 9878).
pub const LISTEN_PORT_DEFAULT: u16 = 9877;
/// Default listen address: every interface, port [`LISTEN_PORT_DEFAULT`].
pub const LISTEN_ADDR_DEFAULT: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), LISTEN_PORT_DEFAULT);
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
/// The smallest frame limit accepted.
pub const FRAME_LEN_MIN: usize = 4 << 10;

const _: () = {
    assert!(FRAME_LEN_MIN > HEADER_LEN);
    assert!(FRAME_LEN_MIN <= FRAME_LEN_MAX_GSL_DEFAULT);
    assert!(FRAME_LEN_MAX_GSL_DEFAULT <= FRAME_LEN_MAX_DEFAULT);
};

/// The GSL's settings. Every field has a default, so an empty TOML file is valid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GslConfig {
    /// Address to listen on. Default `0.0.0.0:9877` ([`LISTEN_ADDR_DEFAULT`]); port 0 picks a
    /// free port (tests, `defibus standalone`).
    pub listen_addr: SocketAddr,
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
}

impl Default for GslConfig {
    fn default() -> Self {
        Self {
            listen_addr: LISTEN_ADDR_DEFAULT,
            data_dir: PathBuf::from(DATA_DIR_DEFAULT),
            services_max: SERVICES_MAX_DEFAULT,
            deployments_per_service_max: DEPLOYMENTS_PER_SERVICE_MAX_DEFAULT,
            max_connections: MAX_CONNECTIONS_DEFAULT,
            idle_timeout_ms: IDLE_TIMEOUT_MS_DEFAULT,
            frame_len_max: FRAME_LEN_MAX_GSL_DEFAULT,
        }
    }
}

impl GslConfig {
    /// Parses a TOML document; `path` only names the source in errors.
    pub fn from_toml_str(toml_text: &str, path: &Path) -> Result<Self, GslError> {
        toml::from_str(toml_text).map_err(|source| GslError::ConfigParse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    }

    /// Reads and parses a TOML file. The result is not yet validated.
    pub fn from_file(path: &Path) -> Result<Self, GslError> {
        let text = std::fs::read_to_string(path).map_err(|source| GslError::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text, path)
    }

    /// Checks that every setting is usable.
    pub fn validate(&self) -> Result<(), GslError> {
        let invalid =
            |key: &'static str, reason: String| Err(GslError::ConfigInvalid { key, reason });
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir", "must not be empty".into());
        }
        for (key, value) in [
            ("services_max", self.services_max),
            (
                "deployments_per_service_max",
                self.deployments_per_service_max,
            ),
            ("max_connections", self.max_connections),
        ] {
            if value == 0 {
                return invalid(key, "must be at least 1".into());
            }
        }
        if self.idle_timeout_ms == 0 {
            return invalid("idle_timeout_ms", "must be at least 1".into());
        }
        if !(FRAME_LEN_MIN..=FRAME_LEN_MAX_DEFAULT).contains(&self.frame_len_max) {
            return invalid(
                "frame_len_max",
                format!(
                    "{} is outside {FRAME_LEN_MIN}..={FRAME_LEN_MAX_DEFAULT}",
                    self.frame_len_max
                ),
            );
        }
        Ok(())
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
        FrameLimits {
            frame_len_max: self.frame_len_max,
            ext_len_max: EXT_LEN_MAX_DEFAULT.min(self.frame_len_max),
        }
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
        assert_eq!(config.listen_addr.to_string(), "0.0.0.0:9877");
    }

    #[test]
    fn the_example_file_lists_every_default() {
        let example = include_str!("../gsl.toml");
        let uncommented: String = example
            .lines()
            .map(|line| line.strip_prefix("# ").unwrap_or(line))
            .filter(|line| line.contains(" = "))
            .collect::<Vec<_>>()
            .join("\n");
        let parsed = GslConfig::from_toml_str(&uncommented, Path::new("example")).unwrap();
        assert_eq!(parsed, GslConfig::default());
        assert_eq!(
            uncommented.lines().count(),
            7,
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
