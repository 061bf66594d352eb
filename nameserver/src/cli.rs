//! The command line: `defibus-nameserver` and the root CLI's `defibus nameserver` share it.

use std::net::SocketAddr;
use std::path::PathBuf;

use svc::config::set;

use crate::config::{ControllerSettings, NameserverConfig};
use crate::error::NameserverError;
use crate::server::run;

/// Nameserver options: a TOML file, and flags that override its settings one by one.
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct NameserverArgs {
    /// TOML configuration file; `nameserver.toml` in the nameserver crate lists every key with
    /// its default. Without it, the defaults apply. Flags below override the file.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:9876]; port 0 picks a free port. Any other
    /// than a loopback address needs [security] (or --insecure).
    #[arg(long, value_name = "ADDR")]
    pub listen_addr: Option<SocketAddr>,
    /// Address of the Prometheus `/metrics` endpoint [default: 127.0.0.1:9111]; "" for none.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
    /// Drop a broker whose last registration is older than this, in ms [default: 9000,
    /// three missed registrations at the brokers' 3000 ms interval].
    #[arg(long, value_name = "MS")]
    pub broker_expiry_ms: Option<u64>,
    /// How often expired brokers are removed, in ms [default: 1000].
    #[arg(long, value_name = "MS")]
    pub sweep_interval_ms: Option<u64>,
    /// Most connections open at once; more are closed at once [default: 1024].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Close a connection that sends nothing for this long, in ms [default: 60000].
    #[arg(long, value_name = "MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Largest request frame accepted, in bytes [default: 4194304].
    #[arg(long, value_name = "BYTES")]
    pub frame_len_max: Option<usize>,
    /// Close a connection whose frame is not complete this long after its first byte (or
    /// that sends no frame this long after connecting), in ms [default: 10000].
    #[arg(long, value_name = "MS")]
    pub frame_timeout_ms: Option<u64>,
    /// Bytes that partial frames above 64 KiB may hold at once, over all connections
    /// [default: 67108864].
    #[arg(long, value_name = "BYTES")]
    pub partial_frame_bytes_max: Option<usize>,
    /// Most connections open at once from one address; more are closed at once
    /// [default: 128].
    #[arg(long, value_name = "N")]
    pub connections_per_ip_max: Option<usize>,
    /// Run the replication controller as this voter id (with --controller-listen,
    /// --controller-voter and --controller-data-dir, or a [controller] table in the file).
    #[arg(long, value_name = "ID")]
    pub controller_id: Option<u64>,
    /// The controller's Raft address (not --listen-addr).
    #[arg(long, value_name = "ADDR")]
    pub controller_listen: Option<SocketAddr>,
    /// A controller voter as id=host:port; repeat for each, this node included.
    #[arg(long = "controller-voter", value_name = "ID=HOST:PORT")]
    pub controller_voters: Vec<String>,
    /// Where the controller keeps its Raft log, vote and snapshot.
    #[arg(long, value_name = "DIR")]
    pub controller_data_dir: Option<PathBuf>,
    /// A broker silent this long loses its leaderships, in ms [default: 1500; keep it at
    /// least three of the brokers' controller_heartbeat_interval_ms].
    #[arg(long, value_name = "MS")]
    pub controller_broker_timeout_ms: Option<u64>,
    /// The security policy this nameserver keeps and serves ([security] policy_file;
    /// `defibus security init` writes the first one); needed with --secure.
    #[arg(long, value_name = "FILE")]
    pub policy_file: Option<PathBuf>,
    /// Authentication, grants and exposure, as every server takes them.
    #[command(flatten)]
    pub security: svc::security::SecurityArgs,
}

impl NameserverArgs {
    /// The configuration: the file's (or the defaults), each flag given overriding its
    /// setting, validated.
    pub fn to_config(&self) -> Result<NameserverConfig, NameserverError> {
        // Destructured so that a flag added to the struct but not here does not compile.
        let Self {
            config: file,
            listen_addr,
            metrics_addr,
            broker_expiry_ms,
            sweep_interval_ms,
            max_connections,
            idle_timeout_ms,
            frame_len_max,
            frame_timeout_ms,
            partial_frame_bytes_max,
            connections_per_ip_max,
            controller_id,
            controller_listen,
            controller_voters,
            controller_data_dir,
            controller_broker_timeout_ms,
            policy_file,
            security,
        } = self.clone();
        svc::config::load(file.as_deref(), |config: &mut NameserverConfig| {
            set(&mut config.listen_addr, listen_addr);
            set(&mut config.metrics_addr, metrics_addr);
            set(&mut config.broker_expiry_ms, broker_expiry_ms);
            set(&mut config.sweep_interval_ms, sweep_interval_ms);
            set(&mut config.max_connections, max_connections);
            set(&mut config.idle_timeout_ms, idle_timeout_ms);
            set(&mut config.frame_len_max, frame_len_max);
            set(&mut config.frame_timeout_ms, frame_timeout_ms);
            set(&mut config.partial_frame_bytes_max, partial_frame_bytes_max);
            set(&mut config.connections_per_ip_max, connections_per_ip_max);
            security.apply(&mut config.security);
            if policy_file.is_some() {
                config.security.policy_file = policy_file;
            }
            let any = controller_id.is_some()
                || controller_listen.is_some()
                || !controller_voters.is_empty()
                || controller_data_dir.is_some()
                || controller_broker_timeout_ms.is_some();
            if any {
                let mut settings = config.controller.take().unwrap_or(ControllerSettings {
                    node_id: 0,
                    listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                    voters: Vec::new(),
                    data_dir: PathBuf::from("./defibus-data/controller"),
                    broker_timeout_ms: crate::config::CONTROLLER_BROKER_TIMEOUT_MS_DEFAULT,
                    reconcile_interval_ms: crate::config::RECONCILE_INTERVAL_MS_DEFAULT,
                });
                set(&mut settings.node_id, controller_id);
                set(&mut settings.listen_addr, controller_listen);
                if !controller_voters.is_empty() {
                    settings.voters = controller_voters;
                }
                set(&mut settings.data_dir, controller_data_dir);
                set(
                    &mut settings.broker_timeout_ms,
                    controller_broker_timeout_ms,
                );
                config.controller = Some(settings);
            }
        })
    }
}

/// A non-loopback nameserver needs [security] and [tls], or --insecure
/// (docs/ARCHITECTURE.md §9.5); so does its controller's Raft port, which serves callers
/// with the same rights.
fn check_exposure(args: &NameserverArgs, config: &NameserverConfig) -> Result<(), NameserverError> {
    let tls = config.tls.is_some();
    let mut listeners = vec![("the nameserver", config.listen_addr)];
    if let Some(controller) = &config.controller {
        listeners.push(("the nameserver's controller", controller.listen_addr));
    }
    for (process, addr) in listeners {
        args.security
            .check_exposure(&config.security, process, &addr.ip().to_string(), tls)
            .map_err(NameserverError::Security)?;
    }
    Ok(())
}

/// Runs a nameserver in the foreground until SIGTERM or SIGINT, then shuts it down cleanly.
/// Logging is the caller's to set up.
pub fn cli_main(args: &NameserverArgs) -> Result<(), NameserverError> {
    let config = args.to_config()?;
    check_exposure(args, &config)?;
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
        args: NameserverArgs,
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns.toml");
        std::fs::write(&path, "broker_expiry_ms = 12000\nmax_connections = 7\n").unwrap();
        let cli = Cli::try_parse_from([
            "ns",
            "--config",
            path.to_str().unwrap(),
            "--max-connections",
            "9",
            "--listen-addr",
            "127.0.0.1:0",
            "--frame-timeout-ms",
            "300",
            "--connections-per-ip-max",
            "3",
        ])
        .unwrap();
        let config = cli.args.to_config().unwrap();
        assert_eq!(config.frame_timeout_ms, 300);
        assert_eq!(config.connections_per_ip_max, 3);
        assert_eq!(config.partial_frame_bytes_max, 64 << 20);
        assert_eq!(config.broker_expiry_ms, 12_000);
        assert_eq!(config.max_connections, 9);
        assert_eq!(config.listen_addr.to_string(), "127.0.0.1:0");
        assert_eq!(config.idle_timeout_ms, 60_000);
    }

    #[test]
    fn a_controller_off_loopback_needs_tls_and_security_like_the_nameserver() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns.toml");
        let table = "[controller]\nnode_id = 1\nlisten_addr = \"0.0.0.0:9886\"\n\
                     voters = [\"1=10.0.0.1:9886\"]\ndata_dir = \"ctl\"\n";
        std::fs::write(&path, table).unwrap();
        let cli = Cli::try_parse_from(["ns", "--config", path.to_str().unwrap()]).unwrap();
        let config = cli.args.to_config().unwrap();
        let err = check_exposure(&cli.args, &config).unwrap_err();
        assert!(err.to_string().contains("controller"), "{err}");
        let cli =
            Cli::try_parse_from(["ns", "--config", path.to_str().unwrap(), "--insecure"]).unwrap();
        check_exposure(&cli.args, &config).unwrap();
    }

    #[test]
    fn invalid_overrides_and_missing_files_are_reported() {
        let cli = Cli::try_parse_from(["ns", "--broker-expiry-ms", "0"]).unwrap();
        let err = cli.args.to_config().unwrap_err();
        assert!(err.to_string().contains("broker_expiry_ms"), "{err}");
        let cli = Cli::try_parse_from(["ns", "--config", "/nonexistent/ns.toml"]).unwrap();
        let err = cli.args.to_config().unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ns.toml"), "{err}");
    }
}
