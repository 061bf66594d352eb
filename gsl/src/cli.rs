//! The command line of `defibus gsl`.

use std::net::SocketAddr;
use std::path::PathBuf;

use svc::config::set;

use crate::config::GslConfig;
use crate::error::GslError;
use crate::server::run;

/// GSL options: a TOML file, and flags that override its settings.
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct GslArgs {
    /// TOML configuration file; `gsl.toml` in the gsl crate lists every key with its default.
    /// Without it, the defaults apply. Flags below override the file.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:9877]; port 0 picks a free port. Any other
    /// than a loopback address needs [security] (or --insecure).
    #[arg(long, value_name = "ADDR")]
    pub listen_addr: Option<SocketAddr>,
    /// Address of the Prometheus `/metrics` endpoint [default: 127.0.0.1:9112]; "" for none.
    /// An address that cannot be bound is logged and the GSL runs without metrics.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
    /// Directory of the durable service directory [default: ./gsl-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Authentication, grants and exposure.
    #[command(flatten)]
    pub security: svc::security::SecurityArgs,
}

impl GslArgs {
    /// The configuration: the file's (or the defaults), each flag given overriding its
    /// setting, validated.
    pub fn to_config(&self) -> Result<GslConfig, GslError> {
        svc::config::load(self.config.as_deref(), |config: &mut GslConfig| {
            set(&mut config.listen_addr, self.listen_addr);
            set(&mut config.metrics_addr, self.metrics_addr.clone());
            set(&mut config.data_dir, self.data_dir.clone());
            self.security.apply(&mut config.security);
        })
    }
}

/// Runs a GSL in the foreground until SIGTERM or SIGINT, then shuts it down cleanly.
/// Logging is the caller's to set up.
pub fn cli_main(args: &GslArgs) -> Result<(), GslError> {
    let config = args.to_config()?;
    args.security
        .check_exposure(
            &config.security,
            "the GSL",
            &config.listen_addr.ip().to_string(),
            config.tls.is_some(),
        )
        .map_err(GslError::Security)?;
    svc::signal::run_until_terminated(config.listen_addr, move |listener, shutdown| {
        run(listener, config, shutdown)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: GslArgs,
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gsl.toml");
        std::fs::write(&path, "services_max = 7\ndata_dir = \"/var/gsl\"\n").unwrap();
        let cli = Cli::try_parse_from([
            "gsl",
            "--config",
            path.to_str().unwrap(),
            "--data-dir",
            "/tmp/g",
            "--metrics-addr",
            "",
        ])
        .unwrap();
        let config = cli.args.to_config().unwrap();
        assert_eq!(config.metrics_addr, "");
        assert_eq!(config.services_max, 7);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/g"));
        let cli = Cli::try_parse_from(["gsl", "--config", "/nonexistent/gsl.toml"]).unwrap();
        let err = cli.args.to_config().unwrap_err();
        assert!(err.to_string().contains("/nonexistent/gsl.toml"), "{err}");
    }
}
