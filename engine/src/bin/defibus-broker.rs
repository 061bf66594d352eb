//! `defibus-broker`: runs one broker until SIGTERM or SIGINT, then shuts it down cleanly.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use engine::{Broker, BrokerConfig};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Runs a DeFiBus broker: one shard per core, each on its own port (port_base + shard).
///
/// Settings come from the TOML file given with --config (every field optional, defaults
/// documented in engine::config); the flags below override it. Logs go to stderr; set the
/// level with RUST_LOG (default info). The actual ports are printed on stdout, one line per
/// shard: `shard <id> port <port>`.
#[derive(Parser)]
#[command(name = "defibus-broker", version)]
struct Args {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Broker id, unique within the cluster.
    #[arg(long)]
    broker_id: Option<String>,
    /// Cluster name.
    #[arg(long)]
    cluster: Option<String>,
    /// Area code (three uppercase letters or digits).
    #[arg(long)]
    area: Option<String>,
    /// Address to listen on.
    #[arg(long)]
    listen: Option<String>,
    /// First port; shard n listens on port_base + n (0: ephemeral ports).
    #[arg(long)]
    port_base: Option<u16>,
    /// Number of shards (0: one per core).
    #[arg(long)]
    shards: Option<usize>,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Nameserver address host:port; repeat for several.
    #[arg(long = "nameserver")]
    nameservers: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_micros()
        .init();
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => BrokerConfig::load(path)?,
        None => BrokerConfig::default(),
    };
    apply_overrides(&mut config, args);
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("installing signal handlers")?;
    let broker = Broker::start(config).context("starting the broker")?;
    for (shard, port) in broker.shard_ports().iter().enumerate() {
        println!("shard {shard} port {port}");
    }
    if let Some(signal) = signals.forever().next() {
        log::info!("signal {signal}: shutting down");
    }
    broker.shutdown().context("shutting down")?;
    Ok(())
}

fn apply_overrides(config: &mut BrokerConfig, args: Args) {
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
    if let Some(v) = args.shards {
        config.shards = v;
    }
    if let Some(v) = args.data_dir {
        config.data_dir = v;
    }
    if !args.nameservers.is_empty() {
        config.nameservers = args.nameservers;
    }
}
