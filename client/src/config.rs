//! Client configuration and every default, limit and bound of the SDK in one place.
//!
//! Options of one role live with the role: [`crate::ConsumerOptions`] (mode, start, commit)
//! and [`crate::ResponderOptions`], whose `inline` runs a responder's handler on the
//! connections' reader threads (no handoff to a handler thread; the handler must not block).

use std::time::Duration;

use protocol::names::{Area, ClientId, NameError};

/// Default timeout of a request to a broker or nameserver (produce, subscribe, admin): 3 s.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(3);
/// Default timeout of establishing a TCP connection and its first heartbeat: 3 s.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(3);
/// Default heartbeat interval, as in the data-plane contract (`heartbeat_interval_ms` = 3000).
pub const HEARTBEAT_INTERVAL_DEFAULT: Duration = Duration::from_secs(3);
/// Default period of topic route refreshes: 30 s (routes are also refreshed after errors).
pub const ROUTE_REFRESH_INTERVAL_DEFAULT: Duration = Duration::from_secs(30);
/// Default number of extra attempts of a failed send, each on another queue (DeFiBus: 2).
pub const RETRIES_DEFAULT: u32 = 2;
/// Default linger of the producer batcher: zero, i.e. every send goes out at once on the
/// caller's thread. Raise it (1-5 ms) for throughput: concurrent sends then share one batch.
pub const BATCH_LINGER_DEFAULT: Duration = Duration::ZERO;
/// Default size bound of one coalesced batch: 1 MiB.
pub const BATCH_BYTES_MAX_DEFAULT: usize = 1 << 20;
/// Default bound on sends accepted but not yet acknowledged by one producer.
pub const IN_FLIGHT_SENDS_MAX_DEFAULT: usize = 16 * 1024;
/// Default consumer credit window, DeFiBus's ack window: the broker pushes at most this many
/// records not yet processed; credit is granted back when half the window is consumed.
pub const CREDIT_WINDOW_DEFAULT: u32 = 1000;
/// Default period of automatic offset commits: 1 s (and once more on close).
pub const AUTO_COMMIT_INTERVAL_DEFAULT: Duration = Duration::from_secs(1);
/// Default time a queue is avoided after a send to it failed (DeFiBus: 60 s); a probe lifts
/// it earlier once the queue's shard answers again, when the failure was the connection's.
pub const QUEUE_ISOLATION_DEFAULT: Duration = Duration::from_secs(60);
/// Default pause between two probes of the shards of queues isolated as unreachable: 1 s. A
/// probe of a dead shard costs one refused connect, and attempts on one endpoint are further
/// spaced by the reconnect backoff, so a broker back from a crash is used again within about
/// `reconnect_backoff_max` instead of the whole isolation period.
pub const ISOLATION_PROBE_INTERVAL_DEFAULT: Duration = Duration::from_secs(1);
/// Default least number of healthy (not isolated) writable own-area queues for a producer to
/// send only in its own area; with fewer, every area's queues are used (DeFiBus's
/// `minMqCountWhenSendLocal`: 1, i.e. leave the area only when nothing healthy is left in it).
pub const MIN_LOCAL_QUEUES_DEFAULT: usize = 1;
/// Default time a consumer avoids a broker whose shards stalled (DeFiBus: 5 min).
pub const STALLED_BROKER_ISOLATION_DEFAULT: Duration = Duration::from_secs(5 * 60);
/// Default age past which a service's cached GSL resolution is refreshed: 30 s, the route
/// refresh period, so a service's locations and its routes go stale together.
pub const SERVICE_REFRESH_INTERVAL_DEFAULT: Duration = Duration::from_secs(30);
/// Most services whose resolution a client caches; past it the oldest is dropped.
pub const CACHED_SERVICES_MAX: usize = 10_000;
/// First delay between reconnect attempts to one endpoint.
pub const RECONNECT_BACKOFF_MIN_DEFAULT: Duration = Duration::from_millis(100);
/// Longest delay between reconnect attempts to one endpoint.
pub const RECONNECT_BACKOFF_MAX_DEFAULT: Duration = Duration::from_secs(10);
/// Bound on replies awaited at once by one client's requesters.
pub const PENDING_REPLIES_MAX: usize = 64 * 1024;
/// Most bytes read from a socket per `read` call by a connection's reader thread.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Fewest bytes offered to a `read` call: a request-reply stream's reads stay this small, so
/// little of the buffer is zero-filled per read (see `protocol::frame::ReadSizer`).
pub const READ_CHUNK_MIN_BYTES: usize = 4 * 1024;
/// Bodies at least this long are written with their own `write` call instead of being copied
/// behind the header: a copy costs more than a syscall past this size.
pub const WRITE_COPY_BYTES_MAX: usize = 16 * 1024;

const _: () = {
    assert!(
        CREDIT_WINDOW_DEFAULT >= 2,
        "credit is refilled at half the window"
    );
    assert!(RECONNECT_BACKOFF_MIN_DEFAULT.as_nanos() <= RECONNECT_BACKOFF_MAX_DEFAULT.as_nanos());
    assert!(BATCH_BYTES_MAX_DEFAULT <= protocol::record::BATCH_LEN_MAX);
    assert!(WRITE_COPY_BYTES_MAX <= READ_CHUNK_BYTES);
    assert!(READ_CHUNK_MIN_BYTES <= READ_CHUNK_BYTES);
    assert!(
        MIN_LOCAL_QUEUES_DEFAULT >= 1,
        "zero would never prefer the own area"
    );
    assert!(
        ISOLATION_PROBE_INTERVAL_DEFAULT.as_nanos() < QUEUE_ISOLATION_DEFAULT.as_nanos(),
        "a probe must get a chance before the isolation ends by itself"
    );
    assert!(CACHED_SERVICES_MAX > 0);
};

/// How a [`crate::Client`] connects, identifies itself and paces its background work.
///
/// Build one with [`ClientConfig::new`] and the `with_*` setters; every field has a documented
/// default from this module's constants.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Nameserver addresses, `host:port`; each is tried in turn until one answers.
    pub nameservers: Vec<String>,
    /// This client's area (required, see [`ClientConfig::new`]); sent in heartbeats and
    /// subscriptions, and preferred when choosing queues.
    pub area: Area,
    /// The id brokers know this client by; replies are addressed to it. Default
    /// `hostname-or-ip@pid#area` (with `.N` after the pid for the N-th client of a process,
    /// so that two clients of one process never share an id).
    pub client_id: Option<ClientId>,
    /// Timeout of one request to a broker or nameserver.
    pub request_timeout: Duration,
    /// Timeout of establishing a connection, first heartbeat included.
    pub connect_timeout: Duration,
    /// Period of heartbeats on every broker connection.
    pub heartbeat_interval: Duration,
    /// Period of topic route refreshes.
    pub route_refresh_interval: Duration,
    /// Extra attempts of a failed send: on another queue, or for an idempotent send whose
    /// attempt may have stored the batch, on the same queue (ARCHITECTURE §13.1).
    pub retries: u32,
    /// Idempotent produce (default on): batches carry a broker-assigned producer id and a
    /// per-queue sequence, so a retry after a timeout, a lost connection or a broker restart
    /// stores a batch once. Off: a retry may store it twice.
    pub idempotence: bool,
    /// How long the producer batcher waits for more sends before sending a batch; zero sends
    /// each message at once from the caller's thread.
    pub batch_linger: Duration,
    /// Size bound of one coalesced batch, in bytes.
    pub batch_bytes_max: usize,
    /// Bound on sends one producer has accepted and not yet seen acknowledged; a send past it
    /// waits.
    pub in_flight_sends_max: usize,
    /// Records a consumer lets the broker push ahead of processing.
    pub credit_window: u32,
    /// Period of automatic commits of consumed offsets.
    pub auto_commit_interval: Duration,
    /// Time a queue is avoided after a send to it failed.
    pub queue_isolation: Duration,
    /// Pause between probes of the shards of queues isolated as unreachable; an answered
    /// probe lifts their isolation.
    pub isolation_probe_interval: Duration,
    /// Least number of healthy writable own-area queues for sends to stay in the own area;
    /// with fewer, every area's queues are used (nearby send). At least 1.
    pub min_local_queues: usize,
    /// Time a consumer avoids a broker whose shards stalled: a connect, handshake or
    /// subscribe that timed out, or a subscribed connection closed for not answering
    /// heartbeats. Meanwhile the consumer neither waits on nor re-subscribes to it.
    pub stalled_broker_isolation: Duration,
    /// GSL endpoints, `host:port`, tried in turn: where services are located for calls by
    /// service id. Default none (calls by service id then fail, saying so).
    pub gsl_endpoints: Vec<String>,
    /// Age past which a service's cached resolution is refreshed.
    pub service_refresh_interval: Duration,
    /// First delay between reconnect attempts.
    pub reconnect_backoff_min: Duration,
    /// Longest delay between reconnect attempts.
    pub reconnect_backoff_max: Duration,
    /// The token (`dfb.<id>.<secret>`) every connection presents first, to brokers,
    /// nameservers, GSL and SGS that require authentication. Default none.
    pub token: Option<String>,
    /// TLS to every server (see [`tls::TlsSettings`]): brokers, nameservers and GSL alike;
    /// `ca` to verify them, and `cert`/`key` to present for mutual TLS. The handshake is part
    /// of connecting, within `connect_timeout`. Default none (plaintext).
    pub tls: Option<tls::TlsSettings>,
}

impl ClientConfig {
    /// A configuration for a client in `area` that finds routes through `nameservers`, with
    /// every other field at its default.
    pub fn new<S: Into<String>>(
        nameservers: impl IntoIterator<Item = S>,
        area: &str,
    ) -> Result<Self, NameError> {
        Ok(Self {
            nameservers: nameservers.into_iter().map(Into::into).collect(),
            area: area.parse()?,
            client_id: None,
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            heartbeat_interval: HEARTBEAT_INTERVAL_DEFAULT,
            route_refresh_interval: ROUTE_REFRESH_INTERVAL_DEFAULT,
            retries: RETRIES_DEFAULT,
            idempotence: true,
            batch_linger: BATCH_LINGER_DEFAULT,
            batch_bytes_max: BATCH_BYTES_MAX_DEFAULT,
            in_flight_sends_max: IN_FLIGHT_SENDS_MAX_DEFAULT,
            credit_window: CREDIT_WINDOW_DEFAULT,
            auto_commit_interval: AUTO_COMMIT_INTERVAL_DEFAULT,
            queue_isolation: QUEUE_ISOLATION_DEFAULT,
            isolation_probe_interval: ISOLATION_PROBE_INTERVAL_DEFAULT,
            min_local_queues: MIN_LOCAL_QUEUES_DEFAULT,
            stalled_broker_isolation: STALLED_BROKER_ISOLATION_DEFAULT,
            gsl_endpoints: Vec::new(),
            service_refresh_interval: SERVICE_REFRESH_INTERVAL_DEFAULT,
            reconnect_backoff_min: RECONNECT_BACKOFF_MIN_DEFAULT,
            reconnect_backoff_max: RECONNECT_BACKOFF_MAX_DEFAULT,
            token: None,
            tls: None,
        })
    }

    /// Sets [`Self::token`]: the client authenticates every connection with it.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into().trim().to_owned());
        self
    }

    /// Sets the client id instead of the generated default.
    pub fn with_client_id(mut self, client_id: &str) -> Result<Self, NameError> {
        self.client_id = Some(client_id.parse()?);
        Ok(self)
    }

    /// Sets [`Self::request_timeout`].
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets [`Self::connect_timeout`].
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`Self::route_refresh_interval`].
    pub fn with_route_refresh_interval(mut self, interval: Duration) -> Self {
        self.route_refresh_interval = interval;
        self
    }

    /// Sets [`Self::queue_isolation`].
    pub fn with_queue_isolation(mut self, period: Duration) -> Self {
        self.queue_isolation = period;
        self
    }

    /// Sets [`Self::isolation_probe_interval`].
    pub fn with_isolation_probe_interval(mut self, interval: Duration) -> Self {
        self.isolation_probe_interval = interval;
        self
    }

    /// Sets [`Self::min_local_queues`] (at least 1).
    pub fn with_min_local_queues(mut self, count: usize) -> Self {
        self.min_local_queues = count.max(1);
        self
    }

    /// Sets [`Self::stalled_broker_isolation`].
    pub fn with_stalled_broker_isolation(mut self, period: Duration) -> Self {
        self.stalled_broker_isolation = period;
        self
    }

    /// Locates services through these GSL endpoints ([`Self::gsl_endpoints`]), enabling
    /// calls and subscriptions by service id.
    pub fn with_gsl<S: Into<String>>(mut self, endpoints: impl IntoIterator<Item = S>) -> Self {
        self.gsl_endpoints = endpoints.into_iter().map(Into::into).collect();
        self
    }

    /// Sets [`Self::service_refresh_interval`].
    pub fn with_service_refresh_interval(mut self, interval: Duration) -> Self {
        self.service_refresh_interval = interval;
        self
    }

    /// Sets [`Self::heartbeat_interval`].
    pub fn with_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// Sets [`Self::batch_linger`]; non-zero turns batching on.
    pub fn with_batch_linger(mut self, linger: Duration) -> Self {
        self.batch_linger = linger;
        self
    }

    /// Sets [`Self::retries`].
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Sets [`Self::idempotence`].
    pub fn with_idempotence(mut self, on: bool) -> Self {
        self.idempotence = on;
        self
    }

    /// Sets [`Self::credit_window`] (at least 2).
    pub fn with_credit_window(mut self, window: u32) -> Self {
        self.credit_window = window.max(2);
        self
    }

    /// Speaks TLS to brokers, nameservers and GSL with `settings` ([`Self::tls`]).
    pub fn with_tls(mut self, settings: tls::TlsSettings) -> Self {
        self.tls = Some(settings);
        self
    }

    /// Sets [`Self::auto_commit_interval`].
    pub fn with_auto_commit_interval(mut self, interval: Duration) -> Self {
        self.auto_commit_interval = interval;
        self
    }
}

/// The default client id: `hostname-or-ip@pid#area`, with `.N` after the pid for the N-th
/// (N ≥ 1) client created in this process.
pub(crate) fn default_client_id(area: Area, instance: u64) -> ClientId {
    let host = hostname()
        .map(|h| {
            h.chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
                .collect::<String>()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "127.0.0.1".to_owned());
    let pid = std::process::id();
    let id = if instance == 0 {
        format!("{host}@{pid}#{area}")
    } else {
        format!("{host}@{pid}.{instance}#{area}")
    };
    let max = protocol::names::CLIENT_ID_LEN_MAX;
    let id = if id.len() > max {
        id[id.len() - max..].to_owned()
    } else {
        id
    };
    id.parse().unwrap_or_else(|_| {
        format!("client@{pid}.{instance}#{area}")
            .parse()
            .expect("valid id")
    })
}

/// The host name, where the platform tells it without `unsafe`.
fn hostname() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_client_ids_are_valid_and_distinct_per_instance() {
        let area: Area = "A10".parse().unwrap();
        let first = default_client_id(area, 0);
        let second = default_client_id(area, 1);
        assert!(first.as_str().ends_with("#A10"), "{first}");
        assert!(first.as_str().contains(&format!("@{}", std::process::id())));
        assert_ne!(first, second);
    }

    #[test]
    fn config_rejects_a_bad_area() {
        assert!(ClientConfig::new(["127.0.0.1:9876"], "a1").is_err());
        let config = ClientConfig::new(["127.0.0.1:9876"], "A10").unwrap();
        assert_eq!(config.retries, RETRIES_DEFAULT);
        assert_eq!(config.min_local_queues, 1);
        assert_eq!(config.queue_isolation, Duration::from_secs(60));
        assert_eq!(config.stalled_broker_isolation, Duration::from_secs(300));
        assert!(config.gsl_endpoints.is_empty());
        assert_eq!(config.clone().with_min_local_queues(0).min_local_queues, 1);
        assert!(config.with_client_id("bad id").is_err());
    }
}
