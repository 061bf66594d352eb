//! The broker's command line, shared by `defibus-broker` and `defibus broker`.

use std::path::PathBuf;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::{Broker, BrokerConfig, BrokerError};

/// Runs a DeFiBus broker: one shard per core, each on its own port (port_base + shard).
///
/// Settings come from the TOML file given with --config (every field optional, defaults
/// documented in engine::config); the flags below override it. Logs go to stderr; set the
/// level with RUST_LOG (default info). The actual ports are printed on stdout, one line per
/// shard: `shard <id> port <port>`.
#[derive(clap::Args, Debug, Clone)]
pub struct BrokerArgs {
    /// TOML configuration file.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Broker id, unique within the cluster.
    #[arg(long)]
    pub broker_id: Option<String>,
    /// Cluster name.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Area code (three uppercase letters or digits).
    #[arg(long)]
    pub area: Option<String>,
    /// Address to listen on [default: 127.0.0.1]. Any other than a loopback address needs
    /// [security] (or --insecure).
    #[arg(long)]
    pub listen: Option<String>,
    /// First port; shard n listens on port_base + n (0: ephemeral ports).
    #[arg(long)]
    pub port_base: Option<u16>,
    /// Address of the Prometheus `/metrics` endpoint (default 127.0.0.1:9110; "" for none).
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_address: Option<String>,
    /// Number of shards (0: one per core).
    #[arg(long)]
    pub shards: Option<usize>,
    /// Data directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Nameserver address host:port; repeat for several.
    #[arg(long = "nameserver")]
    pub nameservers: Vec<String>,
    /// Free-space watermark, percent of the data directory's filesystem: below it produces
    /// are refused with DiskFull (305, retryable); reads, commits and deletes go on
    /// (storage.min_free_percent; default 5, 0 turns the check off).
    #[arg(long)]
    pub min_free_percent: Option<u8>,
    /// Pushes remembered per group and queue for `defibus trace` ([trace]
    /// pushes_remembered; default 64, 0: none).
    #[arg(long, value_name = "N")]
    pub trace_pushes_remembered: Option<usize>,
    /// Stored bytes one `defibus trace` lookup may read ([trace] scan_bytes_max; default
    /// 67108864, 64 MiB).
    #[arg(long, value_name = "BYTES")]
    pub trace_scan_bytes_max: Option<u64>,
    /// Backoff before each redelivery of a nacked message, ms, comma separated ([retry]
    /// schedule_ms; default 1000,5000,10000,30000,60000,120000,...,3600000,7200000, RocketMQ's
    /// 18 levels).
    #[arg(long, value_name = "MS,MS,...", value_delimiter = ',')]
    pub retry_schedule_ms: Option<Vec<u64>>,
    /// Redeliveries of a nacked message before it goes to its group's dead-letter topic
    /// ([retry] max_redeliveries; default 16).
    #[arg(long, value_name = "N")]
    pub max_redeliveries: Option<u32>,
    /// A half message with no outcome this long is checked back with its producer group,
    /// and again every this long, ms ([held] check_interval_ms; default 6000).
    #[arg(long, value_name = "MS")]
    pub held_check_interval_ms: Option<u64>,
    /// Check-backs of one half message before the default outcome applies ([held]
    /// checks_max; default 15).
    #[arg(long, value_name = "N")]
    pub held_checks_max: Option<u32>,
    /// Require authentication and grants ([security] enabled = true); the policy comes from
    /// the nameservers.
    #[arg(long)]
    pub secure: bool,
    /// This broker's own token, for its registrations and replication ([security]
    /// token_file).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Append admin actions and denials here, as JSON lines ([security] audit_log)
    /// [default: the process log].
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// Listen on a non-loopback address without TLS and authentication: anyone who can reach
    /// the ports may then read, write and delete every topic.
    #[arg(long)]
    pub insecure: bool,
    /// TLS: this broker's certificate chain, PEM ([tls] cert). With --tls-key and --tls-ca
    /// every shard speaks TLS and demands client certificates signed by the CA; e.g. the
    /// files of `defibus certs dev --out certs`: --tls-cert certs/server.pem --tls-key
    /// certs/server.key --tls-ca certs/ca.pem.
    #[arg(long, value_name = "PEM", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// TLS: the private key of --tls-cert, PEM ([tls] key).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// TLS: the CA bundle whose client certificates are accepted, PEM ([tls] ca).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,
}

impl BrokerArgs {
    /// The configuration these arguments describe: the file (or the defaults), then the flags.
    pub fn to_config(&self) -> Result<BrokerConfig, BrokerError> {
        let mut config = match &self.config {
            Some(path) => BrokerConfig::load(path)?,
            None => BrokerConfig::default(),
        };
        apply_overrides(&mut config, self.clone());
        Ok(config)
    }
}

/// Runs a broker in the foreground until SIGTERM or SIGINT, then shuts it down cleanly.
///
/// Prints the actual ports on stdout, one line per shard: `shard <id> port <port>`. Logging is
/// left to the caller.
pub fn cli_main(args: &BrokerArgs) -> Result<(), BrokerError> {
    let config = args.to_config()?;
    config
        .security
        .check_exposure(
            "the broker",
            &config.listen_address,
            config.tls.is_some(),
            args.insecure,
        )
        .map_err(|e| BrokerError::Config {
            reason: e.to_string(),
        })?;
    let mut signals = Signals::new([SIGTERM, SIGINT]).map_err(|source| BrokerError::Io {
        op: "installing signal handlers",
        path: PathBuf::new(),
        source,
    })?;
    let broker = Broker::start(config)?;
    for (shard, port) in broker.shard_ports().iter().enumerate() {
        println!("shard {shard} port {port}");
    }
    if let Some(signal) = signals.forever().next() {
        log::info!("signal {signal}: shutting down");
    }
    broker.shutdown()
}

fn apply_overrides(config: &mut BrokerConfig, args: BrokerArgs) {
    if let Some(v) = args.broker_id {
        config.broker_id = v;
    }
    if let Some(v) = args.cluster {
        config.cluster = v;
    }
    if let Some(v) = args.area {
        config.area = v;
    }
    if let Some(v) = args.listen {
        config.listen_address = v;
    }
    if let Some(v) = args.port_base {
        config.port_base = v;
    }
    if let Some(v) = args.metrics_address {
        config.metrics_address = v;
    }
    if let Some(v) = args.shards {
        config.shards = v;
    }
    if let Some(v) = args.min_free_percent {
        config.storage.min_free_percent = v;
    }
    if let Some(v) = args.data_dir {
        config.data_dir = v;
    }
    if let Some(v) = args.trace_pushes_remembered {
        config.trace.pushes_remembered = v;
    }
    if let Some(v) = args.trace_scan_bytes_max {
        config.trace.scan_bytes_max = v;
    }
    if let Some(v) = args.retry_schedule_ms {
        config.retry.schedule_ms = v;
    }
    if let Some(v) = args.max_redeliveries {
        config.retry.max_redeliveries = v;
    }
    if let Some(v) = args.held_check_interval_ms {
        config.held.check_interval_ms = v;
    }
    if let Some(v) = args.held_checks_max {
        config.held.checks_max = v;
    }
    if !args.nameservers.is_empty() {
        config.nameservers = args.nameservers;
    }
    config.security.enabled |= args.secure;
    if let Some(v) = args.token_file {
        config.security.token_file = Some(v);
    }
    if let Some(v) = args.audit_log {
        config.security.audit_log = Some(v);
    }
    if let (Some(cert), Some(key), Some(ca)) = (args.tls_cert, args.tls_key, args.tls_ca) {
        // Other [tls] settings of the file (client_auth, tls12) stay as they are.
        let tls = config.tls.get_or_insert_with(tls::TlsSettings::default);
        tls.cert = Some(cert);
        tls.key = Some(key);
        tls.ca = Some(ca);
    }
}
