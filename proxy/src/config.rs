//! Every setting and limit of the proxy, with its default and why.
//!
//! Read from TOML (`proxy.toml` beside this crate lists every key with its default), then
//! overridden by command-line flags ([`crate::cli`]), then checked by [`ProxyConfig::validate`]
//! before the server starts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use auth::SecuritySettings;
use serde::{Deserialize, Serialize};

use crate::error::ProxyError;

/// Default listen address: loopback, port 8080. Listening elsewhere takes `[security]` and
/// `[tls]` (else a bearer token would cross the network in the clear), or `--insecure` (see
/// [`crate::cli`]).
pub const LISTEN_ADDR_DEFAULT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
/// Default address of the `/metrics` endpoint: loopback, after the broker's 9110, the
/// nameserver's 9111, the GSL's 9112 and the SGS's 9113.
pub const METRICS_ADDR_DEFAULT: &str = "127.0.0.1:9114";
/// Default largest HTTP body or WebSocket message accepted: 1 MiB, the client's default batch
/// bound, so one accepted publish always fits one record batch.
pub const BODY_BYTES_MAX_DEFAULT: usize = 1 << 20;
/// Default bound on messages in one batch publish.
pub const PUBLISH_BATCH_MAX_DEFAULT: usize = 1_000;
/// Default linger of the batch-publish producer, ms: a batch's messages leave as one
/// broker request instead of one each.
pub const PUBLISH_BATCH_LINGER_MS_DEFAULT: u64 = 1;
/// Default wait for a reply when a request names no timeout: 3 s, the client's default.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 3_000;
/// Longest wait for a reply a caller may ask for: 60 s. An HTTP request holds a connection
/// (and a pending-reply slot) for that long.
pub const REQUEST_TIMEOUT_MS_MAX_DEFAULT: u64 = 60_000;
/// Default webhook delivery attempts per message before the give-up policy applies.
pub const WEBHOOK_ATTEMPTS_MAX_DEFAULT: u32 = 5;
/// Default first delay between webhook attempts; it doubles per attempt.
pub const WEBHOOK_BACKOFF_MIN_MS_DEFAULT: u64 = 100;
/// Default longest delay between webhook attempts.
pub const WEBHOOK_BACKOFF_MAX_MS_DEFAULT: u64 = 5_000;
/// Default timeout of one webhook POST, connect included.
pub const WEBHOOK_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Default bound on webhook subscriptions alive at once.
pub const SUBSCRIPTIONS_MAX_DEFAULT: usize = 1_024;
/// Default lease of a webhook subscription: it is removed when its identity sends no
/// heartbeat (`POST /v1/heartbeat`) for this long. Zero keeps subscriptions until deleted.
pub const SUBSCRIPTION_LEASE_MS_DEFAULT: u64 = 0;
/// Default bound on WebSocket sessions at once; each holds a bus client (threads, sockets).
pub const WS_SESSIONS_MAX_DEFAULT: usize = 256;
/// Default per-session window: pushes sent to a WebSocket client and not yet acked. Past it,
/// the session's subscriptions stop taking messages from the broker until acks come.
pub const WS_WINDOW_MESSAGES_DEFAULT: usize = 256;
/// Default silence after which a WebSocket session is closed: 30 s (ten 3 s heartbeats).
pub const WS_IDLE_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Default bound on frames queued to one WebSocket client.
pub const WS_OUTBOX_FRAMES_DEFAULT: usize = 1_024;
/// Default interval of offset commits for WebSocket subscriptions. A commit is made only when
/// every message handed out is acked; once this has passed since the last commit, the
/// subscription stops fetching until its acks catch up, so redelivery after a crash is
/// bounded by about one interval of messages plus the window.
pub const WS_COMMIT_INTERVAL_MS_DEFAULT: u64 = 1_000;

/// Default directory of the proxy's durable state (the webhook subscriptions and the `LOCK`
/// that keeps a second proxy off it). `defibus standalone` uses `<its data dir>/proxy`.
pub const DATA_DIR_DEFAULT: &str = "./defibus-proxy-data";
/// Default rate limit of publishes and requests, messages per second per caller (its
/// principal with `[security]` on; else an HTTP peer address, a WebSocket session): 0,
/// unlimited.
pub const RATE_LIMIT_MESSAGES_PER_S_DEFAULT: u32 = 0;
/// Default burst of the rate limit, messages: 0, one second's worth of the rate.
pub const RATE_LIMIT_BURST_MESSAGES_DEFAULT: u32 = 0;
/// How often idle rate-limit buckets of HTTP callers are dropped, so the table of callers
/// stays bounded by the callers of the last interval.
pub const RATE_LIMIT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Default `limits.header_timeout_ms`: a request head must be whole within 10 s of the
/// connection being ready for one; an idle keep-alive connection is closed after as long.
pub const HEADER_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Default `limits.body_timeout_ms`: a request body must be whole within 30 s of its head
/// (a 1 MiB body at 35 KB/s), so a body trickled a byte a second holds a connection 30 s, not
/// for as long as the sender likes.
pub const BODY_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Default `limits.connections_max`: connections open at once, WebSockets included. Each
/// costs a descriptor; past this, new connections are closed at accept so descriptors stay
/// for the bus clients and the connections already served.
pub const CONNECTIONS_MAX_DEFAULT: usize = 1_024;
/// Default `limits.connections_per_ip_max`: connections from one peer address at once, so
/// one address cannot take every connection (as the nameserver's `connections_per_ip_max`).
pub const CONNECTIONS_PER_IP_MAX_DEFAULT: usize = 128;
/// How long shutdown waits for HTTP connections to finish their requests before it closes
/// them anyway.
pub const SHUTDOWN_DRAIN_WAIT: Duration = Duration::from_secs(10);

/// Subscriptions (message and responder) one WebSocket session may hold at once.
pub const WS_SESSION_SUBSCRIPTIONS_MAX: usize = 64;
/// How long a new session with an identity already connected waits for the old session to
/// close (its consumers and responders unsubscribed) before going on anyway.
pub const WS_REPLACE_WAIT: Duration = Duration::from_secs(10);

/// Console and read API (`GET /v1/cluster|topics|groups|services`): bus reads in flight at
/// once, across every caller. Each read asks every broker (and the SGS) in turn on a blocking
/// thread; a few at once keep a room full of open consoles from loading the bus.
pub const CONSOLE_READS_MAX: usize = 4;
/// Longest a read waits for its turn and its answers together; past it 504. The blocking
/// work goes on to its own per-call timeouts, still holding its turn, so the bound holds.
pub const CONSOLE_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Service lifecycle actions (`POST /v1/services/{id}/deploy|offline`) in flight at once;
/// more are answered 429. SGS runs one operation at a time anyway.
pub const CONSOLE_ACTIONS_MAX: usize = 2;
/// Longest wait for a lifecycle action: `defibus sgs service`'s default, above the SGS's
/// drain timeout (offline waits for the queues to drain).
pub const CONSOLE_ACTION_TIMEOUT: Duration = Duration::from_secs(120);
/// Brokers a read asks at most (the nameservers' list, by id); the answer says `truncated`.
pub const CONSOLE_BROKERS_MAX: usize = 256;
/// Queue rows a topics or groups answer holds at most: whole topics (groups) are left out
/// past it, and the answer says `truncated`. About 2 MB of JSON.
pub const CONSOLE_QUEUE_ROWS_MAX: usize = 10_000;
/// Services a services answer lists at most, by id.
pub const CONSOLE_SERVICES_MAX: usize = 1_000;
/// Deployed services whose GSL resolution one services answer shows at most (each may cost
/// a GSL call when the client's cache of it is stale).
pub const CONSOLE_GSL_LOOKUPS_MAX: usize = 100;

const _: () = {
    assert!(CONSOLE_READS_MAX > 0 && CONSOLE_ACTIONS_MAX > 0);
    assert!(CONSOLE_GSL_LOOKUPS_MAX <= CONSOLE_SERVICES_MAX);
    assert!(REQUEST_TIMEOUT_MS_DEFAULT <= REQUEST_TIMEOUT_MS_MAX_DEFAULT);
    assert!(WEBHOOK_BACKOFF_MIN_MS_DEFAULT <= WEBHOOK_BACKOFF_MAX_MS_DEFAULT);
    assert!(WS_WINDOW_MESSAGES_DEFAULT <= WS_OUTBOX_FRAMES_DEFAULT);
    assert!(BODY_BYTES_MAX_DEFAULT <= 16 << 20);
    assert!(CONNECTIONS_PER_IP_MAX_DEFAULT <= CONNECTIONS_MAX_DEFAULT);
    assert!(WS_SESSIONS_MAX_DEFAULT <= CONNECTIONS_MAX_DEFAULT);
};

/// The `[limits]` table: bounds on connections against hostile or broken clients (see
/// `crate::conn`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// A request head must arrive whole within this long of the connection being ready for
    /// one, ms; otherwise the connection is closed. Also closes idle keep-alive connections.
    pub header_timeout_ms: u64,
    /// A request body must arrive whole within this long of its head, ms; otherwise it is
    /// answered 408 `request_timeout` and the connection is closed.
    pub body_timeout_ms: u64,
    /// Connections open at once (WebSockets included); more are closed at accept.
    pub connections_max: usize,
    /// Connections from one peer address at once; more are closed at accept.
    pub connections_per_ip_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout_ms: HEADER_TIMEOUT_MS_DEFAULT,
            body_timeout_ms: BODY_TIMEOUT_MS_DEFAULT,
            connections_max: CONNECTIONS_MAX_DEFAULT,
            connections_per_ip_max: CONNECTIONS_PER_IP_MAX_DEFAULT,
        }
    }
}

/// The proxy's settings. Every field has a default, so an empty TOML file is valid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// HTTP and WebSocket listen address; port 0 picks a free port.
    pub listen_addr: SocketAddr,
    /// `host:port` of the Prometheus `/metrics` endpoint, apart from the API (port 0:
    /// ephemeral); empty: none. Default `127.0.0.1:9114` ([`METRICS_ADDR_DEFAULT`]). A proxy
    /// that cannot listen there runs without it and says so (WARN).
    pub metrics_addr: String,
    /// Nameservers (`host:port`) the proxy's bus clients find brokers through.
    pub nameservers: Vec<String>,
    /// GSL endpoints (`host:port`) through which a `service` id in a publish or request is
    /// resolved to its nearest deployment's topic; none: only topics are accepted.
    pub gsl_endpoints: Vec<String>,
    /// The SGS (`host:port`) whose services the console and `GET /v1/services` list, and
    /// which the service lifecycle routes (`POST /v1/services/{id}/...`) ask; none: those
    /// routes answer 503.
    pub sgs_endpoint: Option<String>,
    /// Area of the proxy's shared client (HTTP publish and request); WebSocket sessions use
    /// their identity's area.
    pub area: String,
    /// Largest HTTP body or WebSocket text message, in bytes; larger bodies get 413.
    pub body_bytes_max: usize,
    /// Most messages in one batch publish.
    pub publish_batch_max: usize,
    /// How long the producer of batch publishes waits to coalesce a batch's messages into
    /// one broker request, ms; 0 sends each message on its own (single publishes never wait).
    pub publish_batch_linger_ms: u64,
    /// Reply wait of a request that names no `timeout_ms`.
    pub request_timeout_ms: u64,
    /// Longest `timeout_ms` a request may ask for; more is refused with 400.
    pub request_timeout_ms_max: u64,
    /// Webhook delivery attempts per message; after the last failure the message is given
    /// up: counted in the subscription's `given_up`, logged at WARN, and committed past (the
    /// subscription goes on with the next message).
    pub webhook_attempts_max: u32,
    /// First delay between webhook attempts; it doubles per attempt up to the maximum.
    pub webhook_backoff_min_ms: u64,
    /// Longest delay between webhook attempts.
    pub webhook_backoff_max_ms: u64,
    /// Timeout of one webhook POST.
    pub webhook_timeout_ms: u64,
    /// Most webhook subscriptions at once.
    pub subscriptions_max: usize,
    /// Webhook subscriptions whose identity sent no heartbeat for this long are removed;
    /// 0 keeps them until deleted.
    pub subscription_lease_ms: u64,
    /// Most WebSocket sessions at once.
    pub ws_sessions_max: usize,
    /// Per-session window of pushes not yet acked.
    pub ws_window_messages: usize,
    /// A session that sends nothing (not even a heartbeat) for this long is closed.
    pub ws_idle_timeout_ms: u64,
    /// Frames queued to one WebSocket client at most.
    pub ws_outbox_frames: usize,
    /// Commit interval of WebSocket subscriptions (see [`WS_COMMIT_INTERVAL_MS_DEFAULT`]).
    pub ws_commit_interval_ms: u64,
    /// Directory of the durable state: webhook subscriptions (`subscriptions.proxy`) and the
    /// `LOCK` file; created if missing.
    pub data_dir: PathBuf,
    /// Publishes and requests per second one caller may make; 0 is unlimited. A batch counts
    /// each message. Callers are told apart by authenticated principal with
    /// `[security]` on (WebSocket sessions included), else HTTP callers by peer address and
    /// WebSocket callers by session; never by the `identity` they declare.
    pub rate_limit_messages_per_s: u32,
    /// Messages a caller may send at once after a quiet spell; 0 means one second's worth of
    /// `rate_limit_messages_per_s`. A batch larger than this is refused with 400.
    pub rate_limit_burst_messages: u32,
    /// The `[security]` table: callers' tokens and grants, the proxy's own token for the bus,
    /// the audit log (see [`auth::SecuritySettings`]; off by default).
    pub security: SecuritySettings,
    /// The `[limits]` table: connection caps and request timeouts.
    pub limits: Limits,
    /// The `[tls]` table (docs/ARCHITECTURE.md §4.6, §7): HTTPS and WSS on `listen_addr`,
    /// each handshake within `limits.header_timeout_ms`, a verified client certificate
    /// naming its caller; and TLS on the proxy's bus connections (nameservers, brokers,
    /// GSL), trusting `ca` and presenting `client_cert`/`client_key` (default `cert`/`key`).
    /// Default none: plaintext both ways.
    pub tls: Option<tls::TlsSettings>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen_addr: LISTEN_ADDR_DEFAULT,
            metrics_addr: METRICS_ADDR_DEFAULT.into(),
            nameservers: vec!["127.0.0.1:9876".to_owned()],
            gsl_endpoints: Vec::new(),
            sgs_endpoint: None,
            area: "A10".to_owned(),
            body_bytes_max: BODY_BYTES_MAX_DEFAULT,
            publish_batch_max: PUBLISH_BATCH_MAX_DEFAULT,
            publish_batch_linger_ms: PUBLISH_BATCH_LINGER_MS_DEFAULT,
            request_timeout_ms: REQUEST_TIMEOUT_MS_DEFAULT,
            request_timeout_ms_max: REQUEST_TIMEOUT_MS_MAX_DEFAULT,
            webhook_attempts_max: WEBHOOK_ATTEMPTS_MAX_DEFAULT,
            webhook_backoff_min_ms: WEBHOOK_BACKOFF_MIN_MS_DEFAULT,
            webhook_backoff_max_ms: WEBHOOK_BACKOFF_MAX_MS_DEFAULT,
            webhook_timeout_ms: WEBHOOK_TIMEOUT_MS_DEFAULT,
            subscriptions_max: SUBSCRIPTIONS_MAX_DEFAULT,
            subscription_lease_ms: SUBSCRIPTION_LEASE_MS_DEFAULT,
            ws_sessions_max: WS_SESSIONS_MAX_DEFAULT,
            ws_window_messages: WS_WINDOW_MESSAGES_DEFAULT,
            ws_idle_timeout_ms: WS_IDLE_TIMEOUT_MS_DEFAULT,
            ws_outbox_frames: WS_OUTBOX_FRAMES_DEFAULT,
            ws_commit_interval_ms: WS_COMMIT_INTERVAL_MS_DEFAULT,
            data_dir: PathBuf::from(DATA_DIR_DEFAULT),
            rate_limit_messages_per_s: RATE_LIMIT_MESSAGES_PER_S_DEFAULT,
            rate_limit_burst_messages: RATE_LIMIT_BURST_MESSAGES_DEFAULT,
            security: SecuritySettings::default(),
            limits: Limits::default(),
            tls: None,
        }
    }
}

impl ProxyConfig {
    /// Reads a TOML file; keys it leaves out keep their defaults.
    pub fn from_file(path: &Path) -> Result<Self, ProxyError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProxyError::ConfigRead {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ProxyError::ConfigParse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Checks every setting; the first bad one is named in the error.
    pub fn validate(&self) -> Result<(), ProxyError> {
        let bad = |field: &'static str, reason: &'static str| {
            Err(ProxyError::InvalidConfig { field, reason })
        };
        if self.nameservers.is_empty() {
            return bad("nameservers", "at least one nameserver is needed");
        }
        if self
            .sgs_endpoint
            .as_deref()
            .is_some_and(|e| e.rsplit_once(':').is_none_or(|(host, _)| host.is_empty()))
        {
            return bad("sgs_endpoint", "host:port");
        }
        if self.area.parse::<protocol::names::Area>().is_err() {
            return bad("area", "three uppercase ASCII letters or digits");
        }
        if self.body_bytes_max < 1024 || self.body_bytes_max > 16 << 20 {
            return bad("body_bytes_max", "between 1 KiB and 16 MiB");
        }
        if self.publish_batch_max == 0 {
            return bad("publish_batch_max", "at least 1");
        }
        if self.request_timeout_ms == 0 || self.request_timeout_ms > self.request_timeout_ms_max {
            return bad("request_timeout_ms", "between 1 and request_timeout_ms_max");
        }
        if self.webhook_attempts_max == 0 {
            return bad("webhook_attempts_max", "at least 1");
        }
        if self.webhook_backoff_min_ms > self.webhook_backoff_max_ms {
            return bad("webhook_backoff_min_ms", "at most webhook_backoff_max_ms");
        }
        if self.webhook_timeout_ms == 0 {
            return bad("webhook_timeout_ms", "at least 1");
        }
        if self.ws_window_messages == 0 || self.ws_window_messages > self.ws_outbox_frames {
            return bad("ws_window_messages", "between 1 and ws_outbox_frames");
        }
        if self.ws_idle_timeout_ms == 0 {
            return bad("ws_idle_timeout_ms", "at least 1");
        }
        if self.ws_commit_interval_ms == 0 {
            return bad("ws_commit_interval_ms", "at least 1");
        }
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir", "must not be empty");
        }
        if self.rate_limit_messages_per_s == 0 && self.rate_limit_burst_messages != 0 {
            return bad(
                "rate_limit_burst_messages",
                "0 unless rate_limit_messages_per_s is set",
            );
        }
        if self.limits.header_timeout_ms == 0 {
            return bad("limits.header_timeout_ms", "at least 1");
        }
        if self.limits.body_timeout_ms == 0 {
            return bad("limits.body_timeout_ms", "at least 1");
        }
        if self.limits.connections_max == 0 {
            return bad("limits.connections_max", "at least 1");
        }
        if self.limits.connections_per_ip_max == 0
            || self.limits.connections_per_ip_max > self.limits.connections_max
        {
            return bad(
                "limits.connections_per_ip_max",
                "between 1 and limits.connections_max",
            );
        }
        self.security.validate().map_err(ProxyError::Security)?;
        Ok(())
    }

    /// The rate limit in force: (messages per second, burst), or `None` when unlimited.
    pub fn rate_limit(&self) -> Option<(u32, u32)> {
        let rate = self.rate_limit_messages_per_s;
        let burst = match self.rate_limit_burst_messages {
            0 => rate,
            burst => burst,
        };
        (rate > 0).then_some((rate, burst))
    }

    /// [`Self::request_timeout_ms`] as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_the_shipped_file_matches_them() {
        ProxyConfig::default().validate().unwrap();
        let shipped: ProxyConfig =
            toml::from_str(include_str!("../proxy.toml")).expect("proxy.toml parses");
        assert_eq!(shipped, ProxyConfig::default());
    }

    #[test]
    fn bad_settings_are_named() {
        let config = ProxyConfig {
            ws_window_messages: 0,
            ..ProxyConfig::default()
        };
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("ws_window_messages"), "{err}");
        let err = toml::from_str::<ProxyConfig>("no_such_key = 1").unwrap_err();
        assert!(err.to_string().contains("no_such_key"), "{err}");
    }
}
