//! The command line: `defibus-proxy` and the root CLI's `defibus proxy` share it.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::signal::unix::{SignalKind, signal};

use svc::config::set;

use crate::config::ProxyConfig;
use crate::error::ProxyError;
use crate::server::run;

/// Proxy options: a TOML file, and flags that override its settings one by one.
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyArgs {
    /// TOML configuration file; `proxy.toml` in the proxy crate lists every key with its
    /// default. Without it, the defaults apply. Flags below override the file.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// HTTP/WebSocket listen address [default: 127.0.0.1:8080]; port 0 picks a free port.
    /// Any other than a loopback address needs --secure and TLS, or --insecure.
    #[arg(long, value_name = "ADDR")]
    pub listen_addr: Option<SocketAddr>,
    /// Address of the Prometheus `/metrics` endpoint [default: 127.0.0.1:9114]; "" for none.
    /// An address that cannot be bound is logged and the proxy runs without metrics.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
    /// A nameserver, host:port; repeat for several [default: 127.0.0.1:9876].
    #[arg(long = "nameserver", value_name = "ADDR")]
    pub nameservers: Vec<String>,
    /// A GSL, host:port, for `service` ids in publishes and requests; repeat for several
    /// [default: none].
    #[arg(long = "gsl", value_name = "ADDR")]
    pub gsl_endpoints: Vec<String>,
    /// The SGS, host:port, whose services the console lists and whose lifecycle actions
    /// (apply, deploy, offline) it offers; without it those routes answer 503
    /// [default: none].
    #[arg(long = "sgs", value_name = "ADDR")]
    pub sgs_endpoint: Option<String>,
    /// Area of the proxy's own client [default: A10].
    #[arg(long, value_name = "AREA")]
    pub area: Option<String>,
    /// Largest HTTP body or WebSocket message, in bytes [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    pub body_bytes_max: Option<usize>,
    /// Reply wait of a request without timeout_ms, in ms [default: 3000].
    #[arg(long, value_name = "MS")]
    pub request_timeout_ms: Option<u64>,
    /// Webhook attempts per message before it is given up [default: 5].
    #[arg(long, value_name = "N")]
    pub webhook_attempts_max: Option<u32>,
    /// Per-session window of unacked WebSocket pushes [default: 256].
    #[arg(long, value_name = "N")]
    pub ws_window_messages: Option<usize>,
    /// Directory of the durable webhook subscriptions [default: ./defibus-proxy-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Publishes and requests per second per caller; 0 is unlimited [default: 0].
    #[arg(long, value_name = "N")]
    pub rate_limit_messages_per_s: Option<u32>,
    /// Burst of the rate limit, messages; 0 is one second of the rate [default: 0].
    #[arg(long, value_name = "N")]
    pub rate_limit_burst_messages: Option<u32>,
    /// Require a bearer token of every caller and check each action against its grants
    /// ([security] enabled = true); the policy comes from the nameservers.
    #[arg(long)]
    pub secure: bool,
    /// The proxy's own token, for its bus clients ([security] token_file).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Append refused tokens and denials here, as JSON lines ([security] audit_log)
    /// [default: the process log].
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// Listen on a non-loopback address without TLS and authentication: tokens and messages
    /// may then cross the network in the clear, and without --secure anyone who can reach
    /// the port may read and write every topic.
    #[arg(long)]
    pub insecure: bool,
    /// TLS: the proxy's certificate chain, PEM ([tls] cert). With --tls-key and --tls-ca the
    /// proxy serves HTTPS and WSS only, and speaks TLS to the bus; e.g. the files of
    /// `defibus certs dev --out certs`: --tls-cert certs/server.pem --tls-key
    /// certs/server.key --tls-ca certs/ca.pem --tls-client-cert certs/proxy.pem
    /// --tls-client-key certs/proxy.key.
    #[arg(long, value_name = "PEM", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// TLS: the private key of --tls-cert, PEM ([tls] key).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// TLS: the CA bundle that signs the bus's servers' certificates and the client
    /// certificates callers may present, PEM ([tls] ca).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,
    /// TLS: whether callers must present a client certificate ([tls] client_auth)
    /// [default: required]; with "optional" or "none" they may authenticate with a token.
    #[arg(long, value_name = "MODE", value_parser = parse_client_auth)]
    pub tls_client_auth: Option<tls::ClientAuth>,
    /// TLS: the certificate the proxy presents to the bus ([tls] client_cert) [default:
    /// --tls-cert, which then needs the client-auth usage].
    #[arg(long, value_name = "PEM", requires = "tls_client_key")]
    pub tls_client_cert: Option<PathBuf>,
    /// TLS: the private key of --tls-client-cert ([tls] client_key).
    #[arg(long, value_name = "PEM", requires = "tls_client_cert")]
    pub tls_client_key: Option<PathBuf>,
}

/// `required`, `optional` or `none`, as `[tls] client_auth` is written.
fn parse_client_auth(text: &str) -> Result<tls::ClientAuth, String> {
    match text {
        "required" => Ok(tls::ClientAuth::Required),
        "optional" => Ok(tls::ClientAuth::Optional),
        "none" => Ok(tls::ClientAuth::None),
        other => Err(format!("{other:?} is not one of required, optional, none")),
    }
}

impl ProxyArgs {
    /// The configuration: the file's (or the defaults), each flag given overriding its
    /// setting, validated.
    pub fn to_config(&self) -> Result<ProxyConfig, ProxyError> {
        let mut config = match &self.config {
            Some(path) => ProxyConfig::from_file(path)?,
            None => ProxyConfig::default(),
        };
        let Self {
            config: _,
            listen_addr,
            metrics_addr,
            nameservers,
            gsl_endpoints,
            sgs_endpoint,
            area,
            body_bytes_max,
            request_timeout_ms,
            webhook_attempts_max,
            ws_window_messages,
            data_dir,
            rate_limit_messages_per_s,
            rate_limit_burst_messages,
            secure,
            token_file,
            audit_log,
            insecure: _,
            tls_cert,
            tls_key,
            tls_ca,
            tls_client_auth,
            tls_client_cert,
            tls_client_key,
        } = self.clone();
        if let Some(v) = listen_addr {
            config.listen_addr = v;
        }
        if let Some(v) = metrics_addr {
            config.metrics_addr = v;
        }
        if !nameservers.is_empty() {
            config.nameservers = nameservers;
        }
        if !gsl_endpoints.is_empty() {
            config.gsl_endpoints = gsl_endpoints;
        }
        if sgs_endpoint.is_some() {
            config.sgs_endpoint = sgs_endpoint;
        }
        if let Some(v) = area {
            config.area = v;
        }
        if let Some(v) = body_bytes_max {
            config.body_bytes_max = v;
        }
        if let Some(v) = request_timeout_ms {
            config.request_timeout_ms = v;
        }
        if let Some(v) = webhook_attempts_max {
            config.webhook_attempts_max = v;
        }
        if let Some(v) = ws_window_messages {
            config.ws_window_messages = v;
        }
        if let Some(v) = data_dir {
            config.data_dir = v;
        }
        if let Some(v) = rate_limit_messages_per_s {
            config.rate_limit_messages_per_s = v;
        }
        if let Some(v) = rate_limit_burst_messages {
            config.rate_limit_burst_messages = v;
        }
        config.security.enabled |= secure;
        if let Some(v) = token_file {
            config.security.token_file = Some(v);
        }
        if let Some(v) = audit_log {
            config.security.audit_log = Some(v);
        }
        if let (Some(cert), Some(key), Some(ca)) = (tls_cert, tls_key, tls_ca) {
            // Other [tls] settings of the file (client_auth, tls12, ...) stay as they are.
            let tls = config.tls.get_or_insert_with(tls::TlsSettings::default);
            tls.cert = Some(cert);
            tls.key = Some(key);
            tls.ca = Some(ca);
        }
        let tls_flag = tls_client_auth.is_some() || tls_client_cert.is_some();
        if let Some(tls) = config.tls.as_mut() {
            set(&mut tls.client_auth, tls_client_auth);
            if tls_client_cert.is_some() {
                tls.client_cert = tls_client_cert;
                tls.client_key = tls_client_key;
            }
        } else if tls_flag {
            return Err(ProxyError::InvalidConfig {
                field: "tls",
                reason: "--tls-client-auth and --tls-client-cert need --tls-cert or a [tls] table",
            });
        }
        config.validate()?;
        Ok(config)
    }
}

/// Runs a proxy in the foreground until SIGTERM or SIGINT, then shuts it down cleanly.
/// Prints `proxy listening on http://ADDR` (`https://` with TLS) on stdout once bound. Logging is the caller's.
pub fn cli_main(args: &ProxyArgs) -> Result<(), ProxyError> {
    let config = args.to_config()?;
    check_exposure(&config, args.insecure)?;
    // A bad [tls] file stops the start before anything is bound.
    crate::handshake::ListenerTls::new(config.tls.as_ref())?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ProxyError::Runtime)?;
    runtime.block_on(async move {
        let addr = config.listen_addr;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ProxyError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| ProxyError::Bind { addr, source })?;
        println!("proxy listening on {scheme}://{local}");
        let shutdown = termination_signal()?;
        run(listener, config, shutdown).await
    })
}

/// Refuses a non-loopback listen address without both `[security]` and `[tls]`, unless
/// `insecure` (docs/ARCHITECTURE.md §9.5): a bearer token must not cross the network in the
/// clear, nor an open proxy be reachable from it.
fn check_exposure(config: &ProxyConfig, insecure: bool) -> Result<(), ProxyError> {
    config
        .security
        .check_exposure(
            "the proxy",
            &config.listen_addr.to_string(),
            config.tls.is_some(),
            insecure,
        )
        .map_err(ProxyError::Security)
}

/// Completes on the first SIGTERM or SIGINT; the handlers are installed before it returns.
fn termination_signal() -> Result<impl Future<Output = ()>, ProxyError> {
    let install = |kind: SignalKind, name: &'static str| {
        signal(kind).map_err(|source| ProxyError::Signal {
            signal: name,
            source,
        })
    };
    let mut term = install(SignalKind::terminate(), "SIGTERM")?;
    let mut int = install(SignalKind::interrupt(), "SIGINT")?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        log::info!("{name} received, shutting down");
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: ProxyArgs,
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, "area = \"B20\"\nws_window_messages = 7\n").unwrap();
        let cli = Cli::try_parse_from([
            "proxy",
            "--config",
            path.to_str().unwrap(),
            "--ws-window-messages",
            "9",
            "--rate-limit-messages-per-s",
            "50",
            "--data-dir",
            "/tmp/p",
            "--nameserver",
            "127.0.0.1:1",
            "--nameserver",
            "127.0.0.1:2",
            "--metrics-addr",
            "",
        ])
        .unwrap();
        let config = cli.args.to_config().unwrap();
        assert_eq!(config.metrics_addr, "");
        assert_eq!(config.area, "B20");
        assert_eq!(config.ws_window_messages, 9);
        assert_eq!(config.rate_limit(), Some((50, 50)));
        assert_eq!(config.data_dir, PathBuf::from("/tmp/p"));
        assert_eq!(config.nameservers, ["127.0.0.1:1", "127.0.0.1:2"]);
        assert!(!config.security.enabled);
        let cli = Cli::try_parse_from([
            "proxy",
            "--secure",
            "--audit-log",
            "/tmp/audit.log",
            "--token-file",
            "/tmp/proxy.token",
        ])
        .unwrap();
        let config = cli.args.to_config().unwrap();
        assert!(config.security.enabled);
        assert_eq!(
            config.security.audit_log.as_deref(),
            Some(std::path::Path::new("/tmp/audit.log"))
        );
        assert_eq!(
            config.security.token_file.as_deref(),
            Some(std::path::Path::new("/tmp/proxy.token"))
        );
        let cli = Cli::try_parse_from(["proxy", "--area", "bad"]).unwrap();
        assert!(
            cli.args
                .to_config()
                .unwrap_err()
                .to_string()
                .contains("area")
        );
    }

    #[test]
    fn a_non_loopback_proxy_needs_insecure() {
        let cli = Cli::try_parse_from(["proxy", "--listen-addr", "0.0.0.0:0"]).unwrap();
        let err = cli_main(&cli.args).unwrap_err();
        assert!(matches!(err, ProxyError::Security(_)), "{err}");
        assert!(err.to_string().contains("--insecure"), "{err}");
    }

    #[test]
    fn tls_flags_fill_the_tls_table_and_with_security_allow_a_non_loopback_address() {
        let tls_flags = [
            "--tls-cert",
            "s.pem",
            "--tls-key",
            "s.key",
            "--tls-ca",
            "ca.pem",
            "--tls-client-auth",
            "optional",
            "--tls-client-cert",
            "proxy.pem",
            "--tls-client-key",
            "proxy.key",
        ];
        let cli = Cli::try_parse_from(
            ["proxy", "--listen-addr", "0.0.0.0:0", "--secure"]
                .into_iter()
                .chain(tls_flags),
        )
        .unwrap();
        let config = cli.args.to_config().unwrap();
        let tls = config.tls.clone().expect("[tls] from the flags");
        assert_eq!(tls.cert, Some(PathBuf::from("s.pem")));
        assert_eq!(tls.key, Some(PathBuf::from("s.key")));
        assert_eq!(tls.ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(tls.client_auth, tls::ClientAuth::Optional);
        assert_eq!(tls.client_cert, Some(PathBuf::from("proxy.pem")));
        assert_eq!(tls.client_key, Some(PathBuf::from("proxy.key")));
        check_exposure(&config, false).expect("TLS and authentication: no --insecure needed");

        // TLS without authentication, or authentication without TLS, is not enough.
        let without_security = ProxyConfig {
            security: auth::SecuritySettings::default(),
            ..config.clone()
        };
        let err = check_exposure(&without_security, false).unwrap_err();
        assert!(err.to_string().contains("authentication"), "{err}");
        let without_tls = ProxyConfig {
            tls: None,
            ..config
        };
        let err = check_exposure(&without_tls, false).unwrap_err();
        assert!(err.to_string().contains("TLS"), "{err}");
        check_exposure(&without_tls, true).expect("--insecure");

        let err = Cli::try_parse_from(["proxy", "--tls-client-auth", "maybe"])
            .err()
            .expect("an unknown client_auth is refused");
        assert!(err.to_string().contains("maybe"), "{err}");
        let cli = Cli::try_parse_from(["proxy", "--tls-client-auth", "none"]).unwrap();
        let err = cli.args.to_config().unwrap_err();
        assert!(err.to_string().contains("--tls-cert"), "{err}");
    }
}
