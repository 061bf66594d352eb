//! The command line of `defibus sgs`.

use std::net::SocketAddr;
use std::path::PathBuf;

use svc::config::set;

use crate::config::SgsConfig;
use crate::error::SgsError;
use crate::server::run;

/// SGS options: a TOML file, and flags that override its settings.
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct SgsArgs {
    /// TOML configuration file; `sgs.toml` in the sgs crate lists every key with its default.
    /// Without it, the defaults apply. Flags below override the file.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:9878]; port 0 picks a free port. Any other
    /// than a loopback address needs [security] (or --insecure).
    #[arg(long, value_name = "ADDR")]
    pub listen_addr: Option<SocketAddr>,
    /// Address of the Prometheus `/metrics` endpoint [default: 127.0.0.1:9113]; "" for none.
    /// An address that cannot be bound is logged and the SGS runs without metrics.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
    /// Directory of the durable service registry [default: ./sgs-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Authentication, grants and exposure.
    #[command(flatten)]
    pub security: svc::security::SecurityArgs,
    /// GSL endpoint to push services to, `host:port`; repeat for several [default:
    /// 127.0.0.1:9877]. Replaces the file's list.
    #[arg(long = "gsl", value_name = "ADDR")]
    pub gsl_endpoints: Vec<String>,
}

impl SgsArgs {
    /// The configuration: the file's (or the defaults), each flag given overriding its
    /// setting, validated.
    pub fn to_config(&self) -> Result<SgsConfig, SgsError> {
        svc::config::load(self.config.as_deref(), |config: &mut SgsConfig| {
            set(&mut config.listen_addr, self.listen_addr);
            set(&mut config.metrics_addr, self.metrics_addr.clone());
            set(&mut config.data_dir, self.data_dir.clone());
            self.security.apply(&mut config.security);
            if !self.gsl_endpoints.is_empty() {
                config.gsl_endpoints = self.gsl_endpoints.clone();
            }
        })
    }
}

/// Runs an SGS in the foreground until SIGTERM or SIGINT, then shuts it down cleanly.
/// Logging is the caller's to set up.
pub fn cli_main(args: &SgsArgs) -> Result<(), SgsError> {
    let config = args.to_config()?;
    args.security
        .check_exposure(
            &config.security,
            "the SGS",
            &config.listen_addr.ip().to_string(),
            config.tls.is_some(),
        )
        .map_err(SgsError::Security)?;
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
        args: SgsArgs,
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sgs.toml");
        let text = "attempts = 7\n[areas.A10]\ncluster = \"c\"\nnameservers = [\"h:9876\"]\n";
        std::fs::write(&path, text).unwrap();
        let cli = Cli::try_parse_from([
            "sgs",
            "--config",
            path.to_str().unwrap(),
            "--data-dir",
            "/tmp/s",
            "--gsl",
            "g1:9877",
            "--gsl",
            "g2:9877",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .unwrap();
        let config = cli.args.to_config().unwrap();
        assert_eq!(config.metrics_addr, "127.0.0.1:0");
        assert_eq!(config.attempts, 7);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/s"));
        assert_eq!(config.gsl_endpoints, ["g1:9877", "g2:9877"]);
        assert_eq!(config.areas["A10"].cluster, "c");
        let cli = Cli::try_parse_from(["sgs", "--config", "/nonexistent/sgs.toml"]).unwrap();
        let err = cli.args.to_config().unwrap_err();
        assert!(err.to_string().contains("/nonexistent/sgs.toml"), "{err}");
    }
}
