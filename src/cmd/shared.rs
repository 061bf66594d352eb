//! What the client commands share: how to reach the bus, how a message is described on the
//! command line and printed, tables, and stopping on a signal.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::{ArgGroup, Args};
use client::{Client, ClientConfig, Message, ReceivedMessage};
use protocol::names::{Area, ServiceId, Topic};
use signal_hook::consts::{SIGINT, SIGTERM};

/// Exit code of a command that gave up waiting: no reply, no acknowledgement, or fewer
/// messages than `--count` before `--timeout-ms`.
pub const EXIT_TIMEOUT: u8 = 2;
/// Exit code of a command line clap refuses (sysexits `EX_USAGE`); clap's own 2 would be
/// mistaken for a timeout.
pub const EXIT_USAGE: u8 = 64;

/// The exit-code table every command's `--help` shows.
pub const EXIT_CODES_HELP: &str = "Exit codes:\n  \
    0   success\n  \
    1   failure (the error is logged on stderr)\n  \
    2   timed out: no reply, no acknowledgement, or fewer than --count messages in time\n  \
    64  bad command line";

/// `error` and its causes, one after another as `{:#}` writes them, but without a cause its
/// parent's message already spelled out: many errors name their source in their own message
/// (`cannot connect to X: Connection refused`) and also return it as `source()`, which
/// `{:#}` would print again (`...: Connection refused: Connection refused`).
pub fn error_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    let mut parent = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if !parent.is_empty() && parent.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
        parent = message;
    }
    text
}

/// How a client command reaches the bus.
#[derive(Args, Debug)]
pub struct BusArgs {
    /// Nameserver address, host:port; repeat the flag to list several (each is tried in turn).
    #[arg(
        long = "nameserver",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:9876",
        env = "DEFIBUS_NAMESERVER",
        global = true
    )]
    pub nameservers: Vec<String>,
    /// Area of this client: sent to brokers, preferred when choosing queues.
    #[arg(long, default_value = "A10", global = true)]
    pub area: Area,
    /// GSL address, host:port, where `--service` ids are located; repeat the flag to list
    /// several.
    #[arg(
        long = "gsl",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:9877",
        env = "DEFIBUS_GSL",
        global = true
    )]
    pub gsl: Vec<String>,
    /// A file holding the token to authenticate with, where the bus requires it
    /// (`defibus security init` and `defibus admin token create` write them).
    #[arg(
        long,
        value_name = "FILE",
        env = "DEFIBUS_TOKEN_FILE",
        global = true,
        conflicts_with = "token"
    )]
    pub token_file: Option<std::path::PathBuf>,
    /// The token itself (prefer --token-file: a command line is visible to other users).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "DEFIBUS_TOKEN",
        global = true,
        hide_env_values = true
    )]
    pub token: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// How a client command speaks TLS, where the bus's listeners require it.
#[derive(Args, Debug, Default)]
pub struct TlsArgs {
    /// Speak TLS to every nameserver, broker, GSL and SGS, trusting servers whose
    /// certificates this CA bundle (PEM) signed (`defibus certs dev` writes ca.pem).
    #[arg(long, value_name = "FILE", env = "DEFIBUS_TLS_CA", global = true)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// A client certificate (PEM) to present: over mutual TLS it names this client's
    /// principal, and no token is sent. Needs --tls-ca and --tls-key.
    #[arg(
        long,
        value_name = "FILE",
        env = "DEFIBUS_TLS_CERT",
        global = true,
        requires_all = ["tls_ca", "tls_key"]
    )]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(
        long,
        value_name = "FILE",
        env = "DEFIBUS_TLS_KEY",
        global = true,
        requires = "tls_cert"
    )]
    pub tls_key: Option<std::path::PathBuf>,
    /// The name the servers' certificates must carry [default: the host of each address].
    #[arg(long, value_name = "NAME", global = true, requires = "tls_ca")]
    pub tls_server_name: Option<String>,
}

impl TlsArgs {
    /// The client's TLS settings, when --tls-ca asks for TLS.
    pub fn settings(&self) -> Option<tls::TlsSettings> {
        let ca = self.tls_ca.clone()?;
        Some(tls::TlsSettings {
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            ca: Some(ca),
            server_name: self.tls_server_name.clone(),
            ..tls::TlsSettings::default()
        })
    }
}

impl BusArgs {
    /// A client for these nameservers, GSLs and area; connections open on first use.
    pub fn connect(&self) -> anyhow::Result<Client> {
        let mut config = ClientConfig::new(self.nameservers.iter().cloned(), self.area.as_str())
            .context("client configuration")?
            .with_gsl(self.gsl.iter().cloned());
        if let Some(token) = self.token()? {
            config = config.with_token(token);
        }
        if let Some(settings) = self.tls.settings() {
            config = config.with_tls(settings);
        }
        Client::new(config).context("starting the client")
    }

    /// The token given with --token or --token-file, if any.
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        if let Some(token) = &self.token {
            return Ok(Some(token.trim().to_owned()));
        }
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?;
        Ok(Some(text.trim().to_owned()))
    }
}

/// What a command talks to: one topic, or a service by id (located through GSL, its
/// nearest deployment first).
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("target").required(true).args(["topic", "service"])))]
pub struct TargetArgs {
    /// The topic: one service in one area, named [area]-[serviceId], e.g. A10-20190001.
    #[arg(long)]
    pub topic: Option<Topic>,
    /// The service id, e.g. 20190001: its topic is the nearest deployment's, from GSL.
    #[arg(long)]
    pub service: Option<ServiceId>,
}

impl TargetArgs {
    /// The topic to use: the one given, or the service's nearest routable deployment's.
    pub fn topic(&self, client: &Client) -> anyhow::Result<String> {
        match (&self.topic, &self.service) {
            (Some(topic), _) => Ok(topic.to_string()),
            (None, Some(service)) => {
                let topics = client
                    .locator()
                    .topics(service.as_str())
                    .with_context(|| format!("locating service {service}"))?;
                Ok(topics.into_iter().next().unwrap_or_default())
            }
            (None, None) => anyhow::bail!("--topic or --service is required"),
        }
    }
}

impl std::fmt::Display for TargetArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.topic, &self.service) {
            (Some(topic), _) => write!(f, "{topic}"),
            (None, Some(service)) => write!(f, "service {service}"),
            (None, None) => f.write_str("(nothing)"),
        }
    }
}

/// What a produced message or request carries besides its value.
#[derive(Args, Debug)]
pub struct MessageArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Message key; messages with the same key go to the same queue, in order.
    #[arg(long)]
    pub key: Option<String>,
    /// Tag, for dark launch and filtering.
    #[arg(long)]
    pub tag: Option<String>,
    /// A user property, key=value; repeat the flag for several.
    #[arg(long = "property", value_name = "KEY=VALUE")]
    pub properties: Vec<Property>,
    /// W3C trace context to carry to every consumer (and, for a request, to the responder
    /// and back on the reply): 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>. Checked
    /// by the W3C rules; see `defibus trace` for where a message went.
    #[arg(long, value_name = "TRACEPARENT", conflicts_with = "new_trace")]
    pub traceparent: Option<client::TraceParent>,
    /// W3C tracestate beside --traceparent: up to 32 key=value members, 512 bytes.
    #[arg(long, value_name = "TRACESTATE", requires = "traceparent")]
    pub tracestate: Option<client::TraceState>,
    /// Start a new trace with each message (random trace and span ids, sampled); produce
    /// prints each message's traceparent.
    #[arg(long)]
    pub new_trace: bool,
}

impl MessageArgs {
    /// A message with these settings carrying `value`; without a topic when sent by service
    /// id (the service's deployment supplies it).
    pub fn message(&self, value: impl Into<Vec<u8>>) -> Message {
        let topic = self.target.topic.as_ref().map(Topic::to_string);
        let mut message = Message::new(topic.unwrap_or_default(), value);
        if let Some(key) = &self.key {
            message = message.with_key(key.as_bytes().to_vec());
        }
        if let Some(tag) = &self.tag {
            message = message.with_tag(tag.as_str());
        }
        for Property { key, value } in &self.properties {
            message = message.with_property(key.as_str(), value.as_bytes().to_vec());
        }
        if let Some(parent) = self.traceparent {
            message = message.with_trace(client::TraceContext {
                parent,
                state: self.tracestate.clone(),
            });
        } else if self.new_trace {
            message = message.with_new_trace();
        }
        message
    }
}

/// A `key=value` user property from the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Property {
    pub key: String,
    pub value: String,
}

impl FromStr for Property {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok(Self {
                key: key.to_owned(),
                value: value.to_owned(),
            }),
            _ => Err(format!("expected KEY=VALUE, got {s:?}")),
        }
    }
}

/// One received message as a line: `queue=Q offset=O key=K tag=G value=V`, key and tag `-`
/// when absent, `traceparent=T` before the value when the message carries one, the value
/// last as (lossy) UTF-8 text since it may hold spaces.
pub fn message_line(message: &ReceivedMessage) -> String {
    let key = if message.key.is_empty() {
        "-".into()
    } else {
        printable(&message.key)
    };
    let trace = message
        .trace
        .as_ref()
        .map(|t| format!("traceparent={} ", t.traceparent()))
        .unwrap_or_default();
    let redelivery = message
        .redelivery
        .as_ref()
        .map(|r| {
            format!(
                "redelivery={} of {}/{}/{} ",
                r.attempt, r.origin_topic, r.origin_queue_id, r.origin_offset
            )
        })
        .unwrap_or_default();
    format!(
        "queue={} offset={} key={key} tag={} {trace}{redelivery}value={}",
        message.queue_id,
        message.offset,
        message.tag.as_deref().unwrap_or("-"),
        printable(&message.value)
    )
}

/// `bytes` as one line of text that shows every byte and cannot drive the terminal: UTF-8
/// text as it is, except control characters (`\n`, `\u{1b}`) and backslashes (`\\`), which
/// are escaped; bytes that are not UTF-8 as `\xNN`.
pub fn printable(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() || c == '\\' {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out
}

/// Rows under a header, each column as wide as its widest cell, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let padded: Vec<String> = cells
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(&mut header.iter().copied());
    for row in rows {
        out += &line(&mut row.iter().map(String::as_str));
    }
    out
}

/// A flag raised by the first SIGINT or SIGTERM, for commands that run until stopped and
/// then close cleanly. A second signal while the flag is up exits at once (code 1), so a
/// stuck close can still be interrupted.
pub fn stop_on_signal() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 1, stop.clone())
            .context("installing signal handlers")?;
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    Ok(stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_need_a_key_and_an_equals_sign() {
        assert_eq!(
            "trace=a=b".parse::<Property>().unwrap(),
            Property {
                key: "trace".into(),
                value: "a=b".into()
            }
        );
        assert!("=v".parse::<Property>().is_err());
        assert!("novalue".parse::<Property>().is_err());
        assert_eq!("empty=".parse::<Property>().unwrap().value, "");
    }

    #[test]
    fn tables_align_columns_and_trim_line_ends() {
        let out = table(
            &["TOPIC", "QUEUES", "DEPTHS"],
            &[
                vec!["A10-1".into(), "4".into(), "0,0".into()],
                vec!["A10-20190001".into(), "16".into(), "".into()],
            ],
        );
        assert_eq!(
            out,
            "TOPIC         QUEUES  DEPTHS\n\
             A10-1         4       0,0\n\
             A10-20190001  16\n"
        );
    }
}

#[cfg(test)]
mod printable_tests {
    use super::printable;

    #[test]
    fn text_stays_text_and_everything_else_is_escaped() {
        assert_eq!(printable("hello, bus é".as_bytes()), "hello, bus é");
        assert_eq!(printable(b"a\nb\x1b[31mc"), "a\\nb\\u{1b}[31mc");
        assert_eq!(printable(b"\xff\x00BYTES"), "\\xff\\u{0}BYTES");
        assert_eq!(printable(b"back\\slash"), "back\\\\slash");
    }
}

#[cfg(test)]
mod error_text_tests {
    use super::error_text;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot connect to {endpoint}: {source}")]
    struct Connect {
        endpoint: &'static str,
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn a_cause_already_in_its_parents_message_is_printed_once() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let refused_text = refused.to_string();
        let error = anyhow::Error::new(Connect {
            endpoint: "127.0.0.1:9876",
            source: refused,
        })
        .context("asking the nameservers for the brokers");
        let text = error_text(&error);
        assert_eq!(
            text,
            format!(
                "asking the nameservers for the brokers: cannot connect to 127.0.0.1:9876: {refused_text}"
            )
        );
        assert_eq!(text.matches(&refused_text).count(), 1, "{text}");
    }

    #[test]
    fn causes_not_in_their_parent_are_all_printed() {
        let error = anyhow::anyhow!("disk full")
            .context("writing the policy")
            .context("acl grant");
        assert_eq!(
            error_text(&error),
            "acl grant: writing the policy: disk full"
        );
    }
}
