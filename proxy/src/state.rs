//! What every route and session shares: the configuration, the proxy's own bus client (HTTP
//! publish and request), the security authority, the webhook subscriptions and the WebSocket
//! sessions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use auth::Authority;
use client::{Client, ClientConfig, Producer, QueueSelector, Replier, Requester};
use svc::policy::{PolicyFollower, PolicySource};
use svc::rpc::TlsClient;

use crate::config::ProxyConfig;
use crate::error::ProxyError;
use crate::limit::RateLimits;
use crate::webhook::Webhooks;
use crate::webhook::store::HookSpec;
use crate::ws::{AreaBuses, Sessions};

/// The router's state; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The settings in force.
    pub config: Arc<ProxyConfig>,
    /// Everything else.
    pub shared: Arc<Shared>,
}

/// The proxy's bus roles and registries.
pub struct Shared {
    /// The proxy's own client: HTTP publishes and requests (replies come back to its id).
    pub client: Client,
    /// Single publishes of the HTTP API: sent at once.
    pub producer: Producer,
    /// Batch publishes of the HTTP API: a client of its own whose batcher lingers
    /// `publish_batch_linger_ms`, so a batch's messages travel as one broker request.
    pub batch_producer: Producer,
    batch_client: Client,
    /// Requests of the HTTP API.
    pub requester: Requester,
    /// Replies of the HTTP API (`POST /v1/reply`).
    pub replier: Replier,
    /// The rate limit's buckets.
    pub limits: RateLimits,
    /// Webhook subscriptions.
    pub webhooks: Webhooks,
    /// Live WebSocket sessions.
    pub sessions: Sessions,
    /// The bus clients WebSocket sessions share, one per area.
    pub session_buses: AreaBuses,
    /// The transactional producers of `POST /v1/transactions`, by producer group.
    pub transactions: crate::transactions::TxProducers,
    /// Requests and connections counted for `/metrics`.
    pub metrics: crate::metrics::ProxyMetrics,
    /// The read API and service actions of the console (bounded reads through `client`).
    pub console: crate::console::Console,
    /// Who callers are and what they may do; open (everything allowed) when `[security]` is
    /// off.
    pub authority: Authority,
    /// The proxy's own token, presented by every bus client it creates (the shared ones, the
    /// WebSocket sessions' per area, each webhook's); read once at start.
    pub bus_token: Option<String>,
    /// Keeps `authority` current from the nameservers; stops when dropped (at close).
    policy: std::sync::Mutex<Option<PolicyFollower>>,
    next_id: AtomicU64,
}

impl AppState {
    /// Creates the shared client, opens the subscription store and returns the stored
    /// subscriptions, to be resumed. With `[security]` on, reads the proxy's token and fetches
    /// the policy (blocking: one round with the nameservers), then follows it on a thread.
    pub fn new(config: ProxyConfig) -> Result<(Self, Vec<HookSpec>), ProxyError> {
        let authority = config
            .security
            .authority("proxy")
            .map_err(ProxyError::Security)?;
        let bus_token = config.security.token().map_err(ProxyError::Security)?;
        // With [tls] the policy comes from the nameservers over TLS, as every bus connection.
        let policy_tls = config
            .tls
            .as_ref()
            .filter(|_| authority.is_enabled())
            .map(TlsClient::new)
            .transpose()
            .map_err(ProxyError::Tls)?;
        let policy = PolicyFollower::start(
            &authority,
            PolicySource {
                nameservers: config.security.policy_sources(&config.nameservers).to_vec(),
                token: bus_token.clone(),
                refresh: Duration::from_millis(config.security.policy_refresh_ms),
                tls: policy_tls,
            },
        );
        let (webhooks, stored) = Webhooks::open(&config, bus_token.clone(), &authority)?;
        let client_config = client_config(&config, bus_token.as_deref(), &config.area, None)?;
        let batch_config = client_config
            .clone()
            .with_batch_linger(Duration::from_millis(config.publish_batch_linger_ms));
        let client = Client::new(client_config).map_err(ProxyError::Client)?;
        let producer = keyed_producer(&client).map_err(ProxyError::Client)?;
        let batch_client = Client::new(batch_config).map_err(ProxyError::Client)?;
        let batch_producer = keyed_producer(&batch_client).map_err(ProxyError::Client)?;
        let console = crate::console::Console::new(&config, &client, bus_token.clone())?;
        let requester = Requester::new(&client);
        let replier = Replier::new(&client);
        let state = Self {
            shared: Arc::new(Shared {
                client,
                producer,
                batch_producer,
                batch_client,
                requester,
                replier,
                limits: RateLimits::new(&config),
                webhooks,
                sessions: Sessions::default(),
                session_buses: AreaBuses::default(),
                transactions: Default::default(),
                metrics: Default::default(),
                console,
                authority,
                bus_token,
                policy: std::sync::Mutex::new(Some(policy)),
                next_id: AtomicU64::new(1),
            }),
            config: Arc::new(config),
        };
        Ok((state, stored))
    }

    /// A number unique in this proxy's life (session generations).
    pub fn next_id(&self) -> u64 {
        self.shared.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Stops every subscription and closes the shared client; blocking. Sessions are closed
    /// before, by `Sessions::close_all`.
    pub fn close(&self) {
        self.shared.webhooks.close_all();
        self.shared.session_buses.close_all();
        self.shared.client.close();
        self.shared.batch_client.close();
        let follower = self
            .shared
            .policy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(follower);
    }
}

/// The client configuration for `area` (and `client_id`, else the generated default),
/// presenting `token` (the proxy's own, with `[security]` on) to the bus, over TLS with the
/// proxy's `[tls]`: trusting `ca`, presenting `client_cert` (default `cert`).
pub fn client_config(
    config: &ProxyConfig,
    token: Option<&str>,
    area: &str,
    client_id: Option<&str>,
) -> Result<ClientConfig, ProxyError> {
    let invalid = |field| ProxyError::InvalidConfig {
        field,
        reason: "not a valid bus name",
    };
    let mut client_config = ClientConfig::new(config.nameservers.iter().cloned(), area)
        .map_err(|_| invalid("area"))?
        .with_gsl(config.gsl_endpoints.iter().cloned());
    if let Some(token) = token {
        client_config = client_config.with_token(token);
    }
    if let Some(tls) = &config.tls {
        client_config = client_config.with_tls(tls.clone());
    }
    match client_id {
        Some(id) => client_config
            .with_client_id(id)
            .map_err(|_| invalid("client_id")),
        None => Ok(client_config),
    }
}

/// A producer as the API promises it: messages with a key go to the queue the key hashes
/// to, so equal keys stay in order (those without one go round robin).
pub(crate) fn keyed_producer(client: &Client) -> Result<Producer, client::ClientError> {
    Producer::with_selector(client, QueueSelector::KeyHash)
}
