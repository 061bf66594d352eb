//! The command line: `defibus-proxy` and the root CLI's `defibus proxy` share it.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::signal::unix::{SignalKind, signal};

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
    /// Any other than a loopback address needs --insecure (the proxy has no TLS yet).
    #[arg(long, value_name = "ADDR")]
    pub listen_addr: Option<SocketAddr>,
    /// A nameserver, host:port; repeat for several [default: 127.0.0.1:9876].
    #[arg(long = "nameserver", value_name = "ADDR")]
    pub nameservers: Vec<String>,
    /// A GSL, host:port, for `service` ids in publishes and requests; repeat for several
    /// [default: none].
    #[arg(long = "gsl", value_name = "ADDR")]
    pub gsl_endpoints: Vec<String>,
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
    /// Listen on a non-loopback address although the proxy has no TLS: tokens and messages
    /// then cross the network in the clear, and without --secure anyone who can reach the
    /// port may read and write every topic.
    #[arg(long)]
    pub insecure: bool,
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
            nameservers,
            gsl_endpoints,
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
        } = self.clone();
        if let Some(v) = listen_addr {
            config.listen_addr = v;
        }
        if !nameservers.is_empty() {
            config.nameservers = nameservers;
        }
        if !gsl_endpoints.is_empty() {
            config.gsl_endpoints = gsl_endpoints;
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
        config.validate()?;
        Ok(config)
    }
}

/// Runs a proxy in the foreground until SIGTERM or SIGINT, then shuts it down cleanly.
/// Prints `proxy listening on http://ADDR` on stdout once bound. Logging is the caller's.
pub fn cli_main(args: &ProxyArgs) -> Result<(), ProxyError> {
    let config = args.to_config()?;
    // No TLS on the proxy yet: a non-loopback proxy runs only with --insecure
    // (docs/ARCHITECTURE.md §7).
    config
        .security
        .check_exposure(
            "the proxy",
            &config.listen_addr.to_string(),
            false,
            args.insecure,
        )
        .map_err(ProxyError::Security)?;
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
        println!("proxy listening on http://{local}");
        let shutdown = termination_signal()?;
        run(listener, config, shutdown).await
    })
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
        ])
        .unwrap();
        let config = cli.args.to_config().unwrap();
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
}
