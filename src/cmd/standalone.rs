//! `defibus standalone`: a whole bus in one process, for a first run and for development.
//!
//! It runs a nameserver, a broker (all cores; `--brokers N` for a local cluster of N), a GSL
//! and an SGS with data under `./defibus-data`, registers the brokers with the nameserver,
//! configures the SGS with the local area (this cluster and this nameserver) as its one area
//! and GSL, and runs the proxy (HTTP and WebSocket access, the web console at `/console`,
//! which lists this SGS's services) unless `--no-proxy`; it prints
//! where everything listens, and stops cleanly on SIGTERM or SIGINT.

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

pub fn run(args: StandaloneArgs) -> anyhow::Result<()> {
    check_exposure(&args)?;
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
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("installing signal handlers")?;
    // A local cluster gets a controller (one voter), so its replicated queues fail over by
    // themselves; its Raft address is a free loopback port, named up front to the voter set.
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
        controller,
        security: security_for(&args, "nameserver"),
        tls: tls_for(&args, "nameserver"),
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
            security: security_for(&args, "broker"),
            tls: tls_for(&args, "broker"),
            ..parts.broker.clone()
        };
        let broker = engine::Broker::start(broker_config)
            .with_context(|| format!("starting the broker {broker_id}"))?;
        brokers.push(broker);
    }
    let cluster = parts.broker.cluster.clone();
    let gsl = gsl::start(gsl::GslConfig {
        listen_addr: args.gsl_addr,
        data_dir: args.data_dir.join("gsl"),
        security: auth::SecuritySettings {
            policy_nameservers: vec![nameserver_addr.to_string()],
            ..security_for(&args, "gsl")
        },
        tls: tls_for(&args, "gsl"),
        ..parts.gsl.clone()
    })
    .context("starting the GSL")?;
    let local_area = sgs::config::AreaConfig {
        cluster,
        nameservers: vec![nameserver_addr.to_string()],
    };
    let sgs = sgs::start(sgs::SgsConfig {
        listen_addr: args.sgs_addr,
        data_dir: args.data_dir.join("sgs"),
        gsl_endpoints: vec![gsl.local_addr().to_string()],
        areas: [(args.area.clone(), local_area)].into_iter().collect(),
        security: security_for(&args, "sgs"),
        tls: tls_for(&args, "sgs"),
        ..parts.sgs.clone()
    })
    .context("starting the SGS")?;
    let proxy = if args.no_proxy {
        None
    } else {
        let proxy_config = proxy::ProxyConfig {
            listen_addr: args.proxy_addr,
            nameservers: vec![nameserver_addr.to_string()],
            gsl_endpoints: vec![gsl.local_addr().to_string()],
            sgs_endpoint: Some(sgs.local_addr().to_string()),
            area: args.area.clone(),
            data_dir: args.data_dir.join("proxy"),
            security: security_for(&args, "proxy"),
            tls: tls_for(&args, "proxy"),
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
    if how.is_empty() {
        println!("DeFiBus standalone is running (area {}):", args.area);
    } else {
        println!(
            "DeFiBus standalone is running (area {}; {}):",
            args.area,
            how.join("; ")
        );
    }
    println!("  nameserver  {nameserver_addr}");
    for broker in &brokers {
        let ports: Vec<String> = broker.shard_ports().iter().map(u16::to_string).collect();
        println!(
            "  broker      {} shard ports {}",
            broker.broker_id(),
            ports.join(", ")
        );
    }
    println!("  gsl         {}", gsl.local_addr());
    println!("  sgs         {} (area {})", sgs.local_addr(), args.area);
    if let Some(proxy) = &proxy {
        let scheme = if args.tls.is_some() { "https" } else { "http" };
        println!("  proxy       {scheme}://{}", proxy.local_addr());
        println!("  console     {scheme}://{}/console", proxy.local_addr());
    }
    println!("  data        {}", args.data_dir.display());
    println!("Stop with Ctrl-C or SIGTERM.");
    if let Some(signal) = signals.forever().next() {
        log::info!("signal {signal}: shutting down");
    }
    if let Some(proxy) = proxy {
        proxy.shutdown().context("shutting down the proxy")?;
    }
    sgs.shutdown().context("shutting down the SGS")?;
    gsl.shutdown().context("shutting down the GSL")?;
    for broker in brokers {
        let id = broker.broker_id().to_owned();
        broker
            .shutdown()
            .with_context(|| format!("shutting down the broker {id}"))?;
    }
    nameserver
        .shutdown()
        .context("shutting down the nameserver")?;
    Ok(())
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
