//! What every route and session shares: the configuration, the proxy's own bus client (HTTP
//! publish and request), the webhook subscriptions and the WebSocket sessions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use client::{Client, ClientConfig, Producer, Replier, Requester};

use crate::config::ProxyConfig;
use crate::error::ProxyError;
use crate::limit::RateLimits;
use crate::webhook::Webhooks;
use crate::webhook::store::HookSpec;
use crate::ws::Sessions;

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
    next_id: AtomicU64,
}

impl AppState {
    /// Creates the shared client, opens the subscription store and returns the stored
    /// subscriptions, to be resumed. No connection is made yet.
    pub fn new(config: ProxyConfig) -> Result<(Self, Vec<HookSpec>), ProxyError> {
        let (webhooks, stored) = Webhooks::open(&config)?;
        let client_config = client_config(&config, &config.area, None)?;
        let batch_config = client_config
            .clone()
            .with_batch_linger(Duration::from_millis(config.publish_batch_linger_ms));
        let client = Client::new(client_config).map_err(ProxyError::Client)?;
        let producer = Producer::new(&client).map_err(ProxyError::Client)?;
        let batch_client = Client::new(batch_config).map_err(ProxyError::Client)?;
        let batch_producer = Producer::new(&batch_client).map_err(ProxyError::Client)?;
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
        self.shared.client.close();
        self.shared.batch_client.close();
    }
}

/// The client configuration for `area` (and `client_id`, else the generated default).
pub fn client_config(
    config: &ProxyConfig,
    area: &str,
    client_id: Option<&str>,
) -> Result<ClientConfig, ProxyError> {
    let invalid = |field| ProxyError::InvalidConfig {
        field,
        reason: "not a valid bus name",
    };
    let client_config = ClientConfig::new(config.nameservers.iter().cloned(), area)
        .map_err(|_| invalid("area"))?
        .with_gsl(config.gsl_endpoints.iter().cloned());
    match client_id {
        Some(id) => client_config
            .with_client_id(id)
            .map_err(|_| invalid("client_id")),
        None => Ok(client_config),
    }
}
