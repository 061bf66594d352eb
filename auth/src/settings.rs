//! The `[security]` table every process's configuration shares, and the start-up check that
//! keeps an unprotected server off the network.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::audit::Audit;
use crate::authority::Authority;
use crate::policy::Policy;

/// Default `policy_refresh_ms`: how often a process asks a nameserver for a newer policy.
pub const POLICY_REFRESH_MS_DEFAULT: u64 = 1_000;
/// Default `preauth_frame_bytes_max`: the largest frame a connection may send before it has
/// authenticated (an `Authenticate` frame is well under 1 KiB).
pub const PREAUTH_FRAME_BYTES_MAX_DEFAULT: u32 = 4 << 10;

/// The `[security]` table.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SecuritySettings {
    /// Require every connection to authenticate and every action to be granted. Default
    /// `false` (a newcomer's loopback bus); a server on a non-loopback address refuses to
    /// start without it unless `--insecure` is given.
    pub enabled: bool,
    /// A file holding this process's own token, presented on its outgoing connections
    /// (broker → nameserver and broker → broker, SGS → brokers and GSL, proxy → brokers, CLI).
    /// Default: none. `defibus security init` writes one per principal.
    pub token_file: Option<PathBuf>,
    /// Nameserver only: the policy document (tokens, hashed, and grants), read at start and
    /// rewritten atomically on every change. `defibus security init` writes the first one;
    /// give each nameserver its own copy. Default: none (required when `enabled`).
    pub policy_file: Option<PathBuf>,
    /// Append-only audit log (JSON lines) of admin actions and denials. Default: none, the
    /// records go to the process log under target `defibus::audit`.
    pub audit_log: Option<PathBuf>,
    /// Nameservers (`host:port`) the policy is fetched from. Default: none, which means the
    /// process's own nameservers (broker, SGS, proxy); the GSL, which knows none, needs it.
    pub policy_nameservers: Vec<String>,
    /// How often a process other than the nameserver asks a nameserver for a newer policy,
    /// ms. Default 1000: a grant or revoke is in force everywhere within about a second.
    pub policy_refresh_ms: u64,
    /// Largest frame accepted before a connection authenticated, bytes. Default 4096.
    pub preauth_frame_bytes_max: u32,
}

impl Default for SecuritySettings {
    fn default() -> Self {
        Self {
            enabled: false,
            token_file: None,
            policy_file: None,
            audit_log: None,
            policy_nameservers: Vec::new(),
            policy_refresh_ms: POLICY_REFRESH_MS_DEFAULT,
            preauth_frame_bytes_max: PREAUTH_FRAME_BYTES_MAX_DEFAULT,
        }
    }
}

/// Why the security settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A file named in the settings cannot be read.
    #[error("security.{key} {path}: {source}")]
    Read {
        /// The setting.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The policy file is not a policy.
    #[error("security.policy_file {path}: {source}")]
    Policy {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: crate::policy::PolicyError,
    },
    /// A required setting is missing or a value is out of range.
    #[error("security.{key}: {reason}")]
    Invalid {
        /// The setting.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The server would listen where anyone can reach it, unprotected.
    #[error(
        "{process} would listen on {address}, which is not a loopback address, without \
         {missing}: anyone who can reach the port could read, write and delete data. \
         Enable [security] (defibus security init) and TLS, bind a loopback address, or \
         pass --insecure to accept the risk"
    )]
    Exposed {
        /// The server.
        process: String,
        /// Its listen address.
        address: String,
        /// What protection is missing.
        missing: &'static str,
    },
}

impl SecuritySettings {
    /// Checks values that do not need the files.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.policy_refresh_ms == 0 {
            return Err(SettingsError::Invalid {
                key: "policy_refresh_ms",
                reason: "must be at least 1".into(),
            });
        }
        if self.preauth_frame_bytes_max < 256 {
            return Err(SettingsError::Invalid {
                key: "preauth_frame_bytes_max",
                reason: "must be at least 256 (an Authenticate frame must fit)".into(),
            });
        }
        Ok(())
    }

    /// The nameservers to fetch the policy from: `policy_nameservers`, or `own` (the
    /// process's own nameservers) when that is empty.
    pub fn policy_sources<'a>(&'a self, own: &'a [String]) -> &'a [String] {
        if self.policy_nameservers.is_empty() {
            own
        } else {
            &self.policy_nameservers
        }
    }

    /// This process's token, when `token_file` is set.
    pub fn token(&self) -> Result<Option<String>, SettingsError> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            key: "token_file",
            path: path.clone(),
            source,
        })?;
        let token = text.trim().to_owned();
        token
            .parse::<crate::Token>()
            .map_err(|e| SettingsError::Invalid {
                key: "token_file",
                reason: format!("{}: {e}", path.display()),
            })?;
        Ok(Some(token))
    }

    /// The authority a server starts with: off when not `enabled`; otherwise on, with the
    /// policy from `policy_file` when given (nameservers) or an empty one to be replaced by
    /// the first fetch (other processes), auditing to `audit_log`.
    pub fn authority(&self, process: &str) -> Result<Authority, SettingsError> {
        if !self.enabled {
            return Ok(Authority::open());
        }
        let audit = Audit::open(process, self.audit_log.as_deref()).map_err(|source| {
            SettingsError::Read {
                key: "audit_log",
                path: self.audit_log.clone().unwrap_or_default(),
                source,
            }
        })?;
        let policy = match &self.policy_file {
            Some(path) => load_policy(path)?,
            None => Policy::default(),
        };
        Ok(Authority::new(policy, audit))
    }

    /// Refuses to let `process` listen on `address` (an IP, or `host:port`) unprotected: a
    /// non-loopback address needs authentication (`enabled`) and `tls`, unless `insecure`.
    pub fn check_exposure(
        &self,
        process: &str,
        address: &str,
        tls: bool,
        insecure: bool,
    ) -> Result<(), SettingsError> {
        if insecure || is_loopback(address) {
            return Ok(());
        }
        let missing = match (self.enabled, tls) {
            (true, true) => return Ok(()),
            (false, false) => "TLS or authentication",
            (false, true) => "authentication",
            (true, false) => "TLS (tokens would cross the network in the clear)",
        };
        Err(SettingsError::Exposed {
            process: process.to_owned(),
            address: address.to_owned(),
            missing,
        })
    }
}

/// Reads a policy document.
pub fn load_policy(path: &Path) -> Result<Policy, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        key: "policy_file",
        path: path.to_owned(),
        source,
    })?;
    Policy::from_json(&text).map_err(|source| SettingsError::Policy {
        path: path.to_owned(),
        source,
    })
}

/// True for `127.x.y.z`, `::1` and `localhost`, with or without a port.
pub fn is_loopback(address: &str) -> bool {
    if let Ok(ip) = address.parse::<IpAddr>() {
        return ip.is_loopback();
    }
    let host = match address.parse::<std::net::SocketAddr>() {
        Ok(addr) => return addr.ip().is_loopback(),
        Err(_) => address
            .rsplit_once(':')
            .map_or(address, |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']'),
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses_are_recognised() {
        for a in [
            "127.0.0.1",
            "127.0.0.1:9876",
            "[::1]:1",
            "::1",
            "localhost:80",
            "127.8.0.3",
        ] {
            assert!(is_loopback(a), "{a}");
        }
        for a in [
            "0.0.0.0",
            "0.0.0.0:10911",
            "10.0.0.1",
            "::",
            "example.com:1",
        ] {
            assert!(!is_loopback(a), "{a}");
        }
    }

    #[test]
    fn an_exposed_server_needs_tls_and_authentication_or_insecure() {
        let mut settings = SecuritySettings::default();
        let err = settings
            .check_exposure("broker", "0.0.0.0", false, false)
            .unwrap_err();
        assert!(err.to_string().contains("--insecure"), "{err}");
        assert!(
            settings
                .check_exposure("broker", "0.0.0.0", false, true)
                .is_ok()
        );
        assert!(
            settings
                .check_exposure("broker", "127.0.0.1", false, false)
                .is_ok()
        );
        settings.enabled = true;
        let err = settings
            .check_exposure("broker", "10.1.1.1:1", false, false)
            .unwrap_err();
        assert!(err.to_string().contains("TLS"), "{err}");
        assert!(
            settings
                .check_exposure("broker", "10.1.1.1:1", true, false)
                .is_ok()
        );
    }
}
