//! The security flags every server's command line shares, and the check made before a
//! server binds (docs/ARCHITECTURE.md §9).

use std::path::PathBuf;

use auth::SecuritySettings;
use auth::settings::SettingsError;

/// `--secure`, `--token-file`, `--audit-log`, `--policy-nameserver` and `--insecure`.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityArgs {
    /// Require authentication and grants ([security] enabled = true).
    #[arg(long)]
    pub secure: bool,
    /// This process's own token, for its connections to the other servers ([security]
    /// token_file).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Append admin actions and denials here, as JSON lines ([security] audit_log)
    /// [default: the process log].
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// A nameserver to fetch the security policy from, host:port; repeat for several
    /// ([security] policy_nameservers).
    #[arg(long = "policy-nameserver", value_name = "HOST:PORT")]
    pub policy_nameservers: Vec<String>,
    /// Listen on a non-loopback address without TLS and authentication, accepting that
    /// anyone who can reach the port may use it.
    #[arg(long)]
    pub insecure: bool,
}

impl SecurityArgs {
    /// Applies the flags given over the file's `[security]` table.
    pub fn apply(&self, settings: &mut SecuritySettings) {
        settings.enabled |= self.secure;
        if let Some(path) = &self.token_file {
            settings.token_file = Some(path.clone());
        }
        if let Some(path) = &self.audit_log {
            settings.audit_log = Some(path.clone());
        }
        if !self.policy_nameservers.is_empty() {
            settings.policy_nameservers = self.policy_nameservers.clone();
        }
    }

    /// Refuses to let `process` listen on `address` unprotected: a non-loopback address
    /// needs authentication and `tls` (the server's `[tls]` is set), or `--insecure`.
    pub fn check_exposure(
        &self,
        settings: &SecuritySettings,
        process: &str,
        address: &str,
        tls: bool,
    ) -> Result<(), SettingsError> {
        settings.check_exposure(process, address, tls, self.insecure)
    }
}
