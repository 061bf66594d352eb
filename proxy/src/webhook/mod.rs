//! Webhook subscriptions: a consumer whose handler POSTs each message to a subscriber URL.
//!
//! Body of each POST: `{"subscription": id, "message": {...}}` (`DeliveredMessage`). A 2xx
//! answer delivers the message. Anything else (another status, a refused connection, a
//! timeout) is retried after a backoff doubling from `webhook_backoff_min_ms` to
//! `webhook_backoff_max_ms`, `webhook_attempts_max` attempts in all. **Give-up policy**: after
//! the last failed attempt the message is skipped: logged at WARN, counted in `given_up`
//! (see `GET /v1/subscriptions/{id}`), and committed past; the subscription goes on with
//! the next message. Messages of one subscription are posted one at a time, in queue order.
//!
//! **Requests** (a subscription on a service topic) carry `reply_to` and `correlation_id`.
//! The webhook answers one either in its 2xx response body, a JSON object with `value` or
//! `value_b64` that the proxy sends as the reply, or later with `POST /v1/reply`. A request
//! whose deadline passed is not posted (counted in `expired`).
//!
//! **Durability**: subscriptions are kept in `data_dir` ([`store`]) before `201` is answered,
//! and started again when the proxy starts, each from its group's committed offsets (a
//! subscription that asked for `earliest` resumes at `committed`: the committed offset,
//! else the oldest message). The consumer commits a message once the POST returned, so a
//! crash redelivers at most the last commit interval's messages and loses none. A restored
//! subscription whose topic cannot be routed yet is retried until it can (`state:
//! "resuming"`).
//!
//! Each subscription has its own bus client, id `system/group/instance/hook#area` from its
//! identity, so two subscribers of one group share its queues and a broadcast subscriber
//! keeps its offsets across re-subscriptions and restarts. With `subscription_lease_ms`, a
//! subscription whose identity sends no heartbeat for that long is removed; a restart grants
//! every restored owner a fresh lease.

mod poster;
mod standing;
pub mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use client::{Client, Consumer, Replier};
use serde::Serialize;

use crate::api::{Mode, Start};
use crate::config::ProxyConfig;
use crate::error::ProxyError;
pub use poster::WebhookTotals;
use poster::{Counters, Poster};
use store::{HookSpec, Snapshot, Store};

/// A webhook subscription's public description and counters.
#[derive(Clone, Debug, Serialize)]
pub struct HookInfo {
    /// Its id.
    pub id: String,
    /// The bus client id it consumes as.
    pub client_id: String,
    /// The topic.
    pub topic: String,
    /// The consumer group.
    pub group: String,
    /// Clustering or broadcast.
    pub mode: Mode,
    /// Where messages are posted.
    pub url: String,
    /// `active`; `resuming` while a restored subscription waits for its topic's route;
    /// `suspended` while its owner's `consume` grant is revoked (nothing is posted).
    pub state: &'static str,
    /// Messages posted with a 2xx answer.
    pub delivered: u64,
    /// Requests answered from the webhook's response body.
    pub replied: u64,
    /// Failed attempts (each retried or, the last one, given up).
    pub failed_attempts: u64,
    /// Messages given up after `webhook_attempts_max` failed attempts.
    pub given_up: u64,
    /// Requests not posted because their deadline had passed.
    pub expired: u64,
    /// The last failure, for diagnosis.
    pub last_error: Option<String>,
}

/// One subscription: what it is, its counters, and its bus roles once started.
struct Running {
    spec: HookSpec,
    counters: Arc<Counters>,
    bus: Option<(Client, Consumer)>,
}

impl Running {
    fn info(&self) -> HookInfo {
        let c = &self.counters;
        HookInfo {
            id: self.spec.id.clone(),
            client_id: hook_client_id(&self.spec),
            topic: self.spec.topic.clone(),
            group: self.spec.group.clone(),
            mode: self.spec.mode,
            url: self.spec.url.clone(),
            state: if self.bus.is_none() {
                "resuming"
            } else if c.suspended.load(Ordering::Acquire) {
                "suspended"
            } else {
                "active"
            },
            delivered: c.delivered.load(Ordering::Relaxed),
            replied: c.replied.load(Ordering::Relaxed),
            failed_attempts: c.failed_attempts.load(Ordering::Relaxed),
            given_up: c.given_up.load(Ordering::Relaxed),
            expired: c.expired.load(Ordering::Relaxed),
            last_error: c
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    fn stop(self) {
        self.counters.close();
        if let Some((client, consumer)) = self.bus {
            if let Err(e) = consumer.close() {
                log::debug!("webhook {} consumer close: {e}", self.spec.id);
            }
            client.close();
        }
    }
}

/// The webhook subscriptions, their store and their owners' last heartbeats.
pub struct Webhooks {
    running: Mutex<HashMap<String, Running>>,
    last_seen: Mutex<HashMap<String, Instant>>,
    /// Held across a change's write and its memory update, so the file and memory change in
    /// one order.
    store: Mutex<Store>,
    next_id: AtomicU64,
    /// The proxy's own token, presented by each subscription's bus client.
    bus_token: Option<String>,
    /// Whose grants each subscription's owner must keep ([`standing`]).
    authority: auth::Authority,
    /// Deliveries of every subscription, for metrics.
    totals: Arc<WebhookTotals>,
}

/// Why a subscription could not be created or removed.
pub enum HookError {
    /// `subscriptions_max` reached.
    TooMany,
    /// The same client already subscribes to the topic.
    Duplicate(String),
    /// The bus refused or failed.
    Client(client::ClientError),
    /// The store could not be written.
    Storage(String),
}

/// The bus client id of a subscription: its identity's, with `/hook`.
fn hook_client_id(spec: &HookSpec) -> String {
    let id = &spec.identity;
    format!(
        "{}/{}/{}/hook#{}",
        id.system, id.group, id.instance, id.area
    )
}

impl Webhooks {
    /// Opens the store in `config.data_dir`; returns the registry (empty) and the stored
    /// subscriptions, to be started with [`Self::resume`].
    pub fn open(
        config: &ProxyConfig,
        bus_token: Option<String>,
        authority: &auth::Authority,
    ) -> Result<(Self, Vec<HookSpec>), ProxyError> {
        let (store, snapshot) = Store::open(&config.data_dir)?;
        let webhooks = Self {
            bus_token,
            authority: authority.clone(),
            running: Mutex::default(),
            last_seen: Mutex::default(),
            store: Mutex::new(store),
            next_id: AtomicU64::new(snapshot.next_id.max(1)),
            totals: Arc::default(),
        };
        Ok((webhooks, snapshot.subscriptions))
    }

    /// Starts restored subscriptions (blocking). One that cannot start yet is registered as
    /// `resuming`, for [`Self::retry_resuming`].
    pub fn resume(&self, specs: Vec<HookSpec>, config: &ProxyConfig) {
        let now = Instant::now();
        for mut spec in specs {
            // Earliest would start over at the oldest message; the committed offsets are
            // where this subscription had got to.
            if spec.start == Start::Earliest {
                spec.start = Start::Committed;
            }
            self.last_seen_lock().insert(spec.identity.client_id(), now);
            let counters = Arc::new(Counters::new(self.totals.clone()));
            let bus = match start_bus(
                &spec,
                &counters,
                config,
                self.bus_token.as_deref(),
                &self.authority,
            ) {
                Ok(bus) => {
                    log::info!("webhook subscription {} to {} resumed", spec.id, spec.topic);
                    Some(bus)
                }
                Err(e) => {
                    log::warn!(
                        "webhook subscription {} to {}: not resumed yet, retrying: {e}",
                        spec.id,
                        spec.topic
                    );
                    counters.failed(format!("resuming: {e}"));
                    None
                }
            };
            let running = Running {
                spec,
                counters,
                bus,
            };
            self.lock().insert(running.spec.id.clone(), running);
        }
    }

    /// Tries again to start the restored subscriptions that could not start (blocking).
    pub fn retry_resuming(&self, config: &ProxyConfig) {
        let waiting: Vec<(HookSpec, Arc<Counters>)> = self
            .lock()
            .values()
            .filter(|r| r.bus.is_none())
            .map(|r| (r.spec.clone(), r.counters.clone()))
            .collect();
        for (spec, counters) in waiting {
            let Ok(bus) = start_bus(
                &spec,
                &counters,
                config,
                self.bus_token.as_deref(),
                &self.authority,
            ) else {
                continue;
            };
            let mut running = self.lock();
            match running.get_mut(&spec.id) {
                Some(entry) if entry.bus.is_none() => {
                    log::info!("webhook subscription {} to {} resumed", spec.id, spec.topic);
                    entry.bus = Some(bus);
                }
                // Removed meanwhile.
                _ => {
                    drop(running);
                    let _ = bus.1.close();
                    bus.0.close();
                }
            }
        }
    }

    /// A new subscription id, never used before (the counter is stored).
    pub fn next_id(&self) -> String {
        format!("sub-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Subscribes (blocking: creates a client and subscribes on every broker shard) and
    /// stores the subscription before it is acknowledged.
    pub fn create(&self, spec: HookSpec, config: &ProxyConfig) -> Result<HookInfo, HookError> {
        self.admissible(&spec, config)?;
        let counters = Arc::new(Counters::new(self.totals.clone()));
        let bus = start_bus(
            &spec,
            &counters,
            config,
            self.bus_token.as_deref(),
            &self.authority,
        )
        .map_err(HookError::Client)?;
        let running = Running {
            spec,
            counters,
            bus: Some(bus),
        };
        let mut store = self.store_lock();
        // Checked again: another create may have won the race while this one subscribed.
        if let Err(e) = self.admissible(&running.spec, config) {
            drop(store);
            running.stop();
            return Err(e);
        }
        let mut snapshot = self.snapshot();
        snapshot.subscriptions.push(running.spec.clone());
        if let Err(e) = store.save(&snapshot) {
            drop(store);
            running.stop();
            return Err(HookError::Storage(e));
        }
        let info = running.info();
        self.last_seen_lock()
            .insert(running.spec.identity.client_id(), Instant::now());
        self.lock().insert(running.spec.id.clone(), running);
        Ok(info)
    }

    fn admissible(&self, spec: &HookSpec, config: &ProxyConfig) -> Result<(), HookError> {
        let running = self.lock();
        if running.len() >= config.subscriptions_max {
            return Err(HookError::TooMany);
        }
        let client_id = hook_client_id(spec);
        if let Some(existing) = running
            .values()
            .find(|r| hook_client_id(&r.spec) == client_id && r.spec.topic == spec.topic)
        {
            return Err(HookError::Duplicate(existing.spec.id.clone()));
        }
        Ok(())
    }

    /// Subscriptions held (active, resuming or suspended).
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Deliveries of every subscription since the proxy started.
    pub fn totals(&self) -> &WebhookTotals {
        &self.totals
    }

    /// The subscription's description and counters.
    pub fn info(&self, id: &str) -> Option<HookInfo> {
        self.lock().get(id).map(Running::info)
    }

    /// Removes (from the store first) and stops a subscription (blocking); `Ok(false)` when
    /// there is none.
    pub fn remove(&self, id: &str) -> Result<bool, HookError> {
        let mut store = self.store_lock();
        let mut snapshot = self.snapshot();
        let before = snapshot.subscriptions.len();
        snapshot.subscriptions.retain(|s| s.id != id);
        if snapshot.subscriptions.len() == before {
            return Ok(false);
        }
        store.save(&snapshot).map_err(HookError::Storage)?;
        let removed = self.lock().remove(id);
        drop(store);
        if let Some(running) = removed {
            running.stop();
        }
        Ok(true)
    }

    /// Renews the lease of `owner`'s subscriptions; returns how many it has.
    pub fn renew(&self, owner: &str) -> usize {
        self.last_seen_lock()
            .insert(owner.to_owned(), Instant::now());
        self.lock()
            .values()
            .filter(|r| r.spec.identity.client_id() == owner)
            .count()
    }

    /// Removes (blocking) the subscriptions whose owner sent no heartbeat for `lease`.
    pub fn expire(&self, lease: Duration) -> usize {
        let now = Instant::now();
        let expired: Vec<String> = {
            let seen = self.last_seen_lock();
            let stale = |owner: &str| {
                seen.get(owner)
                    .is_none_or(|t| now.duration_since(*t) > lease)
            };
            self.lock()
                .iter()
                .filter(|(_, r)| stale(&r.spec.identity.client_id()))
                .map(|(id, _)| id.clone())
                .collect()
        };
        let mut removed = 0;
        for id in &expired {
            log::info!("webhook subscription {id}: lease expired, removing");
            match self.remove(id) {
                Ok(true) => removed += 1,
                Ok(false) => {}
                Err(HookError::Storage(e)) => log::debug!("webhook {id} not removed: {e}"),
                Err(_) => {}
            }
        }
        removed
    }

    /// Stops every subscription (blocking); the store keeps them for the next start.
    pub fn close_all(&self) {
        let all: Vec<Running> = self.lock().drain().map(|(_, r)| r).collect();
        for running in all {
            running.stop();
        }
    }

    /// What the store holds: every registered subscription, by id order.
    fn snapshot(&self) -> Snapshot {
        let mut subscriptions: Vec<HookSpec> =
            self.lock().values().map(|r| r.spec.clone()).collect();
        subscriptions.sort_by(|a, b| a.id.cmp(&b.id));
        Snapshot {
            next_id: self.next_id.load(Ordering::Relaxed),
            subscriptions,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn store_lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn last_seen_lock(&self) -> MutexGuard<'_, HashMap<String, Instant>> {
        self.last_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The subscription's own client and its consumer, posting with `counters`.
fn start_bus(
    spec: &HookSpec,
    counters: &Arc<Counters>,
    config: &ProxyConfig,
    token: Option<&str>,
    authority: &auth::Authority,
) -> Result<(Client, Consumer), client::ClientError> {
    let client_id = hook_client_id(spec);
    let client_config =
        crate::state::client_config(config, token, &spec.identity.area, Some(&client_id))
            .map_err(|e| client::ClientError::InvalidArgument(e.to_string()))?;
    let client = Client::new(client_config)?;
    let options =
        client::ConsumerOptions::new(spec.topic.clone(), spec.group.clone(), spec.mode.into())
            .start_from(spec.start.into());
    let poster = Poster::new(
        spec.id.clone(),
        spec.url.clone(),
        counters.clone(),
        Replier::new(&client),
        config,
        standing::Standing::new(authority, spec.owner.as_deref(), &spec.topic, &spec.group),
    );
    match Consumer::start_with(&client, options, move |m| poster.deliver(m)) {
        Ok(consumer) => Ok((client, consumer)),
        Err(e) => {
            client.close();
            Err(e)
        }
    }
}
