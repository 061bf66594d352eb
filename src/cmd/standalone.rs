//! `defibus standalone`: a whole bus in one process, for a first run and for development.
//!
//! It runs a nameserver and a broker (all cores) with data under `./defibus-data`, registers
//! the broker with the nameserver, prints where everything listens, and stops cleanly on
//! SIGTERM or SIGINT. It also runs the proxy (HTTP and WebSocket access) unless `--no-proxy`.
//! Later issues add GSL and SGS to it.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

#[derive(Args)]
pub struct StandaloneArgs {
    /// Where the broker keeps its queues, offsets and topic registry.
    #[arg(long, default_value = "./defibus-data")]
    data_dir: PathBuf,
    /// Nameserver listen address.
    #[arg(long, default_value = "127.0.0.1:9876")]
    nameserver_addr: SocketAddr,
    /// Broker listen address.
    #[arg(long, default_value = "127.0.0.1")]
    broker_listen: String,
    /// First broker port: shard n listens on port_base + n (0: ephemeral ports).
    #[arg(long, default_value_t = 10911)]
    port_base: u16,
    /// Broker shards; 0 means one per core.
    #[arg(long, default_value_t = 0)]
    shards: usize,
    /// Area code of this bus (three uppercase letters or digits).
    #[arg(long, default_value = "A10")]
    area: String,
    /// Proxy (HTTP and WebSocket) listen address; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    proxy_addr: SocketAddr,
    /// Do not start the proxy.
    #[arg(long)]
    no_proxy: bool,
}

pub fn run(args: StandaloneArgs) -> anyhow::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("installing signal handlers")?;
    let nameserver_config = nameserver::NameserverConfig {
        listen_addr: args.nameserver_addr,
        ..nameserver::NameserverConfig::default()
    };
    let nameserver = nameserver::start(nameserver_config).context("starting the nameserver")?;
    let nameserver_addr = nameserver.local_addr();
    let broker_config = engine::BrokerConfig {
        listen_address: args.broker_listen,
        port_base: args.port_base,
        shards: args.shards,
        area: args.area.clone(),
        data_dir: args.data_dir.join("broker"),
        nameservers: vec![nameserver_addr.to_string()],
        ..engine::BrokerConfig::default()
    };
    let broker = engine::Broker::start(broker_config).context("starting the broker")?;
    let proxy = if args.no_proxy {
        None
    } else {
        let proxy_config = proxy::ProxyConfig {
            listen_addr: args.proxy_addr,
            nameservers: vec![nameserver_addr.to_string()],
            area: args.area.clone(),
            ..proxy::ProxyConfig::default()
        };
        Some(proxy::start(proxy_config).context("starting the proxy")?)
    };
    println!("DeFiBus standalone is running (area {}):", args.area);
    println!("  nameserver  {nameserver_addr}");
    let ports: Vec<String> = broker.shard_ports().iter().map(u16::to_string).collect();
    println!(
        "  broker      {} shard ports {}",
        broker.broker_id(),
        ports.join(", ")
    );
    if let Some(proxy) = &proxy {
        println!("  proxy       http://{}", proxy.local_addr());
    }
    println!("  data        {}", args.data_dir.display());
    println!("Stop with Ctrl-C or SIGTERM.");
    if let Some(signal) = signals.forever().next() {
        log::info!("signal {signal}: shutting down");
    }
    if let Some(proxy) = proxy {
        proxy.shutdown().context("shutting down the proxy")?;
    }
    broker.shutdown().context("shutting down the broker")?;
    nameserver
        .shutdown()
        .context("shutting down the nameserver")?;
    Ok(())
}
