//! `defibus standalone`: a whole bus in one process, for a first run and for development.
//!
//! It runs a nameserver, a broker (all cores; `--brokers N` for a local cluster of N), a GSL
//! and an SGS with data under `./defibus-data`, registers the brokers with the nameserver,
//! configures the SGS with the local area (this cluster and this nameserver) as its one area
//! and GSL, and runs the proxy (HTTP and WebSocket access, the web console at `/console`,
//! which lists this SGS's services) unless `--no-proxy`; each part serves Prometheus
//! `/metrics` on its own loopback port (`--metrics-port-base`, or none with `--no-metrics`);
//! it prints where everything listens, and stops cleanly on SIGTERM or SIGINT. [`Bus`] is the
//! same bus without the signals, for tests.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

#[derive(Args)]
pub struct StandaloneArgs {
    /// Settings for the parts, as the servers take them one by one: a TOML file with
    /// [nameserver], [broker], [gsl], [sgs] and [proxy] tables (e.g. [broker.storage]
    /// segment_bytes_max, [broker.limits], [proxy] rate limits). Addresses, data
    /// directories, ids, area, [security] and [tls] come from the flags here; a file that
    /// sets them is refused, naming the flag.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the broker keeps its queues, offsets and topic registry (`broker/`), and the GSL,
    /// SGS and proxy their state (`gsl/`, `sgs/`, `proxy/`).
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
    /// Brokers of the bus, 1 to 26: `broker-a` (data in `broker/`), then `broker-b`,
    /// `broker-c`, ... (data in `broker-b/`, ...; ports from port_base + 100, + 200, ...): a
    /// local cluster for replicated topics (`admin topic create --replicas 3`). With more than
    /// one, the nameserver also runs the replication controller (data in `controller/`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=26))]
    brokers: u8,
    /// Area code of this bus (three uppercase letters or digits).
    #[arg(long, default_value = "A10")]
    area: String,
    /// GSL (service location) listen address.
    #[arg(long, default_value = "127.0.0.1:9877")]
    gsl_addr: SocketAddr,
    /// SGS (service governance) listen address.
    #[arg(long, default_value = "127.0.0.1:9878")]
    sgs_addr: SocketAddr,
    /// Proxy listen address: HTTP and WebSocket access, and the web console at /console;
    /// port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    proxy_addr: SocketAddr,
    /// Do not start the proxy.
    #[arg(long)]
    no_proxy: bool,
    /// First Prometheus /metrics port: every part serves its own on loopback, broker-a on
    /// this port, the nameserver on +1, the GSL +2, the SGS +3, the proxy +4, then broker-b
    /// +5, broker-c +6, ... (the servers' own defaults, 9110 to 9114); 0: ephemeral ports.
    /// Each address is printed at start; one that cannot be bound is logged and that part
    /// runs without metrics.
    #[arg(long, default_value_t = 9110, value_name = "PORT")]
    metrics_port_base: u16,
    /// Serve no /metrics endpoint.
    #[arg(long, conflicts_with = "metrics_port_base")]
    no_metrics: bool,
    /// Run secured: every connection authenticates and every action needs a grant, with the
    /// policy and tokens `defibus security init --out DIR` wrote (the nameserver keeps
    /// DIR/policy.json; each part uses its own DIR/<part>.token; the audit log goes to
    /// <data-dir>/audit.log).
    #[arg(long, value_name = "DIR")]
    security: Option<PathBuf>,
    /// Speak TLS 1.3 on every listener, with the certificates `defibus certs dev --out DIR`
    /// wrote: each server presents DIR/server.pem, trusts DIR/ca.pem, and asks clients for
    /// a certificate without requiring one (a client with one is its principal, mutual
    /// TLS; one without authenticates with a token); each part connects to the others with
    /// its own DIR/<part>.pem. Clients then need `--tls-ca DIR/ca.pem`.
    #[arg(long, value_name = "DIR")]
    tls: Option<PathBuf>,
    /// Listen on non-loopback addresses without TLS and authentication, accepting that
    /// anyone who can reach the ports may read, write and delete every topic.
    #[arg(long)]
    insecure: bool,
}

/// The `[security]` settings of one part of a secured standalone bus.
fn security_for(args: &StandaloneArgs, part: &str) -> auth::SecuritySettings {
    let Some(dir) = &args.security else {
        return auth::SecuritySettings::default();
    };
    auth::SecuritySettings {
        enabled: true,
        token_file: Some(dir.join(format!("{part}.token"))),
        policy_file: (part == "nameserver").then(|| dir.join("policy.json")),
        audit_log: Some(args.data_dir.join("audit.log")),
        ..auth::SecuritySettings::default()
    }
}

/// The `[tls]` settings of one part of a standalone bus run with `--tls DIR`: it serves
/// with the server certificate and connects out with its own client certificate.
fn tls_for(args: &StandaloneArgs, part: &str) -> Option<tls::TlsSettings> {
    let certs = tls::dev::DevCerts::plan(args.tls.as_deref()?, &[part]).ok()?;
    Some(tls::TlsSettings {
        client_auth: tls::ClientAuth::Optional,
        ..certs.server_settings_as(part)
    })
}

/// The parts of a standalone bus, which each connect out with their own certificate.
const PARTS: &[&str] = &["nameserver", "broker", "gsl", "sgs", "proxy"];

/// Checks that `--tls DIR` holds every file the parts need, naming the first one missing.
fn check_tls_files(dir: &std::path::Path) -> anyhow::Result<()> {
    let certs = tls::dev::DevCerts::plan(dir, PARTS).context("--tls")?;
    let needed = [&certs.ca, &certs.server_cert, &certs.server_key]
        .into_iter()
        .chain(certs.clients.iter().flat_map(|(_, cert, key)| [cert, key]));
    for file in needed {
        anyhow::ensure!(
            file.exists(),
            "{} does not exist: make the certificates with `defibus certs dev --out {}`",
            file.display(),
            dir.display()
        );
    }
    Ok(())
}

/// Refuses non-loopback addresses unless secured (TLS and authentication) or `--insecure`.
fn check_exposure(args: &StandaloneArgs) -> anyhow::Result<()> {
    let settings = security_for(args, "standalone");
    let addresses = [
        ("the nameserver", args.nameserver_addr.ip().to_string()),
        ("the broker", args.broker_listen.clone()),
        ("the GSL", args.gsl_addr.ip().to_string()),
        ("the SGS", args.sgs_addr.ip().to_string()),
        ("the proxy", args.proxy_addr.ip().to_string()),
    ];
    for (part, address) in addresses {
        settings.check_exposure(part, &address, args.tls.is_some(), args.insecure)?;
    }
    Ok(())
}

/// Where each part serves `/metrics` (see `--metrics-port-base`): its slot's port above the
/// base, on loopback; all ephemeral with base 0; none with `--no-metrics`.
#[derive(Clone, Copy)]
enum MetricsSlot {
    Broker(u8),
    Nameserver,
    Gsl,
    Sgs,
    Proxy,
}

impl MetricsSlot {
    /// The port's offset from the base: broker-a 0, the others 1 to 4 (the servers' own
    /// defaults' order), then the further brokers.
    fn offset(self) -> u16 {
        match self {
            Self::Broker(0) => 0,
            Self::Nameserver => 1,
            Self::Gsl => 2,
            Self::Sgs => 3,
            Self::Proxy => 4,
            Self::Broker(i) => 4 + u16::from(i),
        }
    }
}

/// The metrics address of `slot` as its server's settings take it (`""`: none).
fn metrics_address(args: &StandaloneArgs, slot: MetricsSlot) -> anyhow::Result<String> {
    if args.no_metrics {
        return Ok(String::new());
    }
    let port = match args.metrics_port_base {
        0 => 0,
        base => base
            .checked_add(slot.offset())
            .context("--metrics-port-base leaves no room for every part's metrics port")?,
    };
    Ok(format!("127.0.0.1:{port}"))
}

/// Every part's metrics address in port order, by name: what `--metrics-port-base` plans.
#[cfg(test)]
pub(crate) fn metrics_plan(args: &StandaloneArgs) -> anyhow::Result<Vec<(String, String)>> {
    let mut slots = vec![
        ("broker-a".to_owned(), MetricsSlot::Broker(0)),
        ("nameserver".to_owned(), MetricsSlot::Nameserver),
        ("gsl".to_owned(), MetricsSlot::Gsl),
        ("sgs".to_owned(), MetricsSlot::Sgs),
        ("proxy".to_owned(), MetricsSlot::Proxy),
    ];
    for i in 1..args.brokers {
        let letter = char::from(b'a' + i);
        slots.push((format!("broker-{letter}"), MetricsSlot::Broker(i)));
    }
    slots
        .into_iter()
        .map(|(part, slot)| Ok((part, metrics_address(args, slot)?)))
        .collect()
}

/// A whole bus in this process, as `defibus standalone` runs it: [`Bus::start`] starts every
/// part, [`Bus::banner`] says where each listens, [`Bus::shutdown`] stops them in order.
pub struct Bus {
    area: String,
    how: Vec<String>,
    tls: bool,
    data_dir: PathBuf,
    metrics_off: bool,
    nameserver: nameserver::NameserverHandle,
    brokers: Vec<engine::Broker>,
    gsl: gsl::GslHandle,
    sgs: sgs::SgsHandle,
    proxy: Option<proxy::ProxyHandle>,
}

impl Bus {
    /// Checks `args` and starts every part; returns once each listens.
    pub fn start(args: &StandaloneArgs) -> anyhow::Result<Self> {
        check_exposure(args)?;
        let parts = match &args.config {
            Some(path) => super::standalone_config::PartsConfig::load(path)?,
            None => super::standalone_config::PartsConfig::default(),
        };
        if let Some(dir) = &args.tls {
            check_tls_files(dir)?;
        }
        if let Some(dir) = &args.security {
            let policy = dir.join("policy.json");
            anyhow::ensure!(
                policy.exists(),
                "{} does not exist: make it with `defibus security init --out {}`",
                policy.display(),
                dir.display()
            );
        }
        // A local cluster gets a controller (one voter), so its replicated queues fail over
        // by themselves; its Raft address is a free loopback port, named up front to the
        // voter set.
        let controller = if args.brokers > 1 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .context("finding a port for the controller")?
                .port();
            Some(nameserver::config::ControllerSettings {
                node_id: 1,
                listen_addr: SocketAddr::from(([127, 0, 0, 1], port)),
                voters: vec![format!("1=127.0.0.1:{port}")],
                data_dir: args.data_dir.join("controller"),
                broker_timeout_ms: nameserver::config::CONTROLLER_BROKER_TIMEOUT_MS_DEFAULT,
                reconcile_interval_ms: nameserver::config::RECONCILE_INTERVAL_MS_DEFAULT,
            })
        } else {
            None
        };
        let nameserver_config = nameserver::NameserverConfig {
            listen_addr: args.nameserver_addr,
            metrics_addr: metrics_address(args, MetricsSlot::Nameserver)?,
            controller,
            security: security_for(args, "nameserver"),
            tls: tls_for(args, "nameserver"),
            ..parts.nameserver.clone()
        };
        let nameserver = nameserver::start(nameserver_config).context("starting the nameserver")?;
        let nameserver_addr = nameserver.local_addr();
        let mut brokers = Vec::with_capacity(usize::from(args.brokers));
        for i in 0..args.brokers {
            let letter = char::from(b'a' + i);
            let (broker_id, data_dir) = if i == 0 {
                ("broker-a".to_owned(), args.data_dir.join("broker"))
            } else {
                (
                    format!("broker-{letter}"),
                    args.data_dir.join(format!("broker-{letter}")),
                )
            };
            let port_base = match args.port_base {
                0 => 0,
                base => base
                    .checked_add(100 * u16::from(i))
                    .context("--port-base leaves no room for every broker's ports")?,
            };
            let broker_config = engine::BrokerConfig {
                broker_id: broker_id.clone(),
                listen_address: args.broker_listen.clone(),
                port_base,
                shards: args.shards,
                area: args.area.clone(),
                data_dir,
                nameservers: vec![nameserver_addr.to_string()],
                metrics_address: metrics_address(args, MetricsSlot::Broker(i))?,
                security: security_for(args, "broker"),
                tls: tls_for(args, "broker"),
                ..parts.broker.clone()
            };
            let broker = engine::Broker::start(broker_config)
                .with_context(|| format!("starting the broker {broker_id}"))?;
            brokers.push(broker);
        }
        let cluster = parts.broker.cluster.clone();
        let gsl = gsl::start(gsl::GslConfig {
            listen_addr: args.gsl_addr,
            metrics_addr: metrics_address(args, MetricsSlot::Gsl)?,
            data_dir: args.data_dir.join("gsl"),
            security: auth::SecuritySettings {
                policy_nameservers: vec![nameserver_addr.to_string()],
                ..security_for(args, "gsl")
            },
            tls: tls_for(args, "gsl"),
            ..parts.gsl.clone()
        })
        .context("starting the GSL")?;
        let local_area = sgs::config::AreaConfig {
            cluster,
            nameservers: vec![nameserver_addr.to_string()],
        };
        let sgs = sgs::start(sgs::SgsConfig {
            listen_addr: args.sgs_addr,
            metrics_addr: metrics_address(args, MetricsSlot::Sgs)?,
            data_dir: args.data_dir.join("sgs"),
            gsl_endpoints: vec![gsl.local_addr().to_string()],
            areas: [(args.area.clone(), local_area)].into_iter().collect(),
            security: security_for(args, "sgs"),
            tls: tls_for(args, "sgs"),
            ..parts.sgs.clone()
        })
        .context("starting the SGS")?;
        let proxy = if args.no_proxy {
            None
        } else {
            let proxy_config = proxy::ProxyConfig {
                listen_addr: args.proxy_addr,
                metrics_addr: metrics_address(args, MetricsSlot::Proxy)?,
                nameservers: vec![nameserver_addr.to_string()],
                gsl_endpoints: vec![gsl.local_addr().to_string()],
                sgs_endpoint: Some(sgs.local_addr().to_string()),
                area: args.area.clone(),
                data_dir: args.data_dir.join("proxy"),
                security: security_for(args, "proxy"),
                tls: tls_for(args, "proxy"),
                ..parts.proxy.clone()
            };
            Some(proxy::start(proxy_config).context("starting the proxy")?)
        };
        let mut how = Vec::new();
        if let Some(dir) = &args.security {
            how.push(format!("secured, tokens in {}", dir.display()));
        }
        if let Some(dir) = &args.tls {
            how.push(format!("TLS, certificates in {}", dir.display()));
        }
        Ok(Self {
            area: args.area.clone(),
            how,
            tls: args.tls.is_some(),
            data_dir: args.data_dir.clone(),
            metrics_off: args.no_metrics,
            nameserver,
            brokers,
            gsl,
            sgs,
            proxy,
        })
    }

    /// The nameserver's address.
    pub fn nameserver_addr(&self) -> SocketAddr {
        self.nameserver.local_addr()
    }

    /// The proxy's address, when it runs.
    pub fn proxy_addr(&self) -> Option<SocketAddr> {
        self.proxy.as_ref().map(proxy::ProxyHandle::local_addr)
    }

    /// Every part's `/metrics` address by name (`None`: not served, see the log), brokers
    /// first.
    pub fn metrics(&self) -> Vec<(String, Option<SocketAddr>)> {
        let brokers =
            (self.brokers.iter()).map(|b| (b.broker_id().to_owned(), b.metrics_address()));
        let servers = [
            ("nameserver", self.nameserver.metrics_addr()),
            ("gsl", self.gsl.metrics_addr()),
            ("sgs", self.sgs.metrics_addr()),
        ]
        .into_iter()
        .chain(self.proxy.as_ref().map(|p| ("proxy", p.metrics_addr())))
        .map(|(name, address)| (name.to_owned(), address));
        brokers.chain(servers).collect()
    }

    /// What `defibus standalone` prints once the bus runs: where every part listens.
    pub fn banner(&self) -> String {
        let mut lines = Vec::new();
        if self.how.is_empty() {
            lines.push(format!(
                "DeFiBus standalone is running (area {}):",
                self.area
            ));
        } else {
            lines.push(format!(
                "DeFiBus standalone is running (area {}; {}):",
                self.area,
                self.how.join("; ")
            ));
        }
        lines.push(format!("  nameserver  {}", self.nameserver_addr()));
        for broker in &self.brokers {
            let ports: Vec<String> = broker.shard_ports().iter().map(u16::to_string).collect();
            lines.push(format!(
                "  broker      {} shard ports {}",
                broker.broker_id(),
                ports.join(", ")
            ));
        }
        lines.push(format!("  gsl         {}", self.gsl.local_addr()));
        lines.push(format!(
            "  sgs         {} (area {})",
            self.sgs.local_addr(),
            self.area
        ));
        if let Some(proxy) = self.proxy_addr() {
            let scheme = if self.tls { "https" } else { "http" };
            lines.push(format!("  proxy       {scheme}://{proxy}"));
            lines.push(format!("  console     {scheme}://{proxy}/console"));
        }
        if self.metrics_off {
            lines.push("  metrics     off (--no-metrics)".to_owned());
        } else {
            for (part, address) in self.metrics() {
                let at = match address {
                    Some(address) => format!("http://{address}/metrics"),
                    None => "not served (its address is taken: see the log)".to_owned(),
                };
                lines.push(format!("  metrics     {part:<11} {at}"));
            }
        }
        lines.push(format!("  data        {}", self.data_dir.display()));
        lines.push("Stop with Ctrl-C or SIGTERM.".to_owned());
        lines.join("\n") + "\n"
    }

    /// Stops the parts, those that depend on others first.
    pub fn shutdown(self) -> anyhow::Result<()> {
        if let Some(proxy) = self.proxy {
            proxy.shutdown().context("shutting down the proxy")?;
        }
        self.sgs.shutdown().context("shutting down the SGS")?;
        self.gsl.shutdown().context("shutting down the GSL")?;
        for broker in self.brokers {
            let id = broker.broker_id().to_owned();
            broker
                .shutdown()
                .with_context(|| format!("shutting down the broker {id}"))?;
        }
        self.nameserver
            .shutdown()
            .context("shutting down the nameserver")?;
        Ok(())
    }
}

pub fn run(args: StandaloneArgs) -> anyhow::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("installing signal handlers")?;
    let bus = Bus::start(&args)?;
    print!("{}", bus.banner());
    if let Some(signal) = signals.forever().next() {
        log::info!("signal {signal}: shutting down");
    }
    bus.shutdown()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: StandaloneArgs,
    }

    fn args(extra: &[&str]) -> StandaloneArgs {
        use clap::Parser;
        let argv = std::iter::once("standalone").chain(extra.iter().copied());
        Cli::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn tls_parts_serve_with_the_server_certificate_and_connect_out_as_themselves() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("certs");
        let err = check_tls_files(&out).unwrap_err();
        assert!(err.to_string().contains("certs dev --out"), "{err}");

        tls::dev::generate(&out, tls::dev::DEFAULT_PRINCIPALS).unwrap();
        check_tls_files(&out).unwrap();
        let args = args(&["--tls", out.to_str().unwrap()]);
        let broker = tls_for(&args, "broker").unwrap();
        assert_eq!(
            broker.cert.as_deref(),
            Some(out.join("server.pem").as_path())
        );
        assert_eq!(broker.ca.as_deref(), Some(out.join("ca.pem").as_path()));
        assert_eq!(broker.client_auth, tls::ClientAuth::Optional);
        assert_eq!(
            broker.client_cert.as_deref(),
            Some(out.join("broker.pem").as_path())
        );
        // Every file a part needs: one missing is named before anything starts.
        std::fs::remove_file(out.join("sgs.key")).unwrap();
        let err = check_tls_files(&out).unwrap_err();
        assert!(err.to_string().contains("sgs.key"), "{err}");
    }

    #[test]
    fn without_tls_a_non_loopback_address_needs_insecure_and_with_it_needs_security() {
        let err = check_exposure(&args(&["--proxy-addr", "0.0.0.0:8080"])).unwrap_err();
        assert!(err.to_string().contains("--insecure"), "{err}");
        let tls_only = args(&["--proxy-addr", "0.0.0.0:8080", "--tls", "certs"]);
        assert!(check_exposure(&tls_only).is_err());
        let secured = args(&[
            "--proxy-addr",
            "0.0.0.0:8080",
            "--tls",
            "certs",
            "--security",
            "secrets",
        ]);
        check_exposure(&secured).unwrap();
    }
}
