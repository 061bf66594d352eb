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
//! Each subscription has its own bus client, id `system/group/instance/hook#area` from its
//! identity, so two subscribers of one group share its queues and a broadcast subscriber
//! keeps its offsets across re-subscriptions. Subscriptions live in memory: they end with
//! the proxy, and with their lease when `subscription_lease_ms` is set.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use client::{Client, Consumer, ReceivedMessage};
use serde::Serialize;

use crate::api::{DeliveredMessage, Identity, Mode, Start};
use crate::config::ProxyConfig;

/// Sleep slice of a backoff, so a deleted subscription stops retrying promptly.
const BACKOFF_SLICE: Duration = Duration::from_millis(20);

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
    /// Messages posted with a 2xx answer.
    pub delivered: u64,
    /// Failed attempts (each retried or, the last one, given up).
    pub failed_attempts: u64,
    /// Messages given up after `webhook_attempts_max` failed attempts.
    pub given_up: u64,
    /// The last failure, for diagnosis.
    pub last_error: Option<String>,
}

/// What one subscription's handler and the registry share.
struct Hook {
    info: Mutex<HookInfo>,
    owner: String,
    closed: AtomicBool,
    delivered: AtomicU64,
    failed_attempts: AtomicU64,
    given_up: AtomicU64,
}

impl Hook {
    fn info(&self) -> HookInfo {
        let mut info = self
            .info
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        info.delivered = self.delivered.load(Ordering::Relaxed);
        info.failed_attempts = self.failed_attempts.load(Ordering::Relaxed);
        info.given_up = self.given_up.load(Ordering::Relaxed);
        info
    }
}

struct Running {
    hook: Arc<Hook>,
    consumer: Consumer,
    client: Client,
}

/// The live webhook subscriptions and their owners' last heartbeats.
#[derive(Default)]
pub struct Webhooks {
    running: Mutex<HashMap<String, Running>>,
    last_seen: Mutex<HashMap<String, Instant>>,
}

/// What a new subscription asks for.
pub struct HookRequest {
    /// The subscriber; its heartbeats renew the lease.
    pub identity: Identity,
    /// The topic.
    pub topic: String,
    /// The consumer group.
    pub group: String,
    /// Clustering or broadcast.
    pub mode: Mode,
    /// Where a group with no committed offset starts.
    pub start: Start,
    /// Where to POST each message.
    pub url: String,
}

/// Why a subscription could not be created.
pub enum CreateError {
    /// `subscriptions_max` reached.
    TooMany,
    /// The same client already subscribes to the topic.
    Duplicate(String),
    /// The bus refused or failed.
    Client(client::ClientError),
}

impl Webhooks {
    /// Subscribes (blocking: creates a client and subscribes on every broker shard).
    pub fn create(
        &self,
        id: String,
        request: HookRequest,
        config: &ProxyConfig,
    ) -> Result<HookInfo, CreateError> {
        let owner = request.identity.client_id();
        let client_id = format!(
            "{}/{}/{}/hook#{}",
            request.identity.system,
            request.identity.group,
            request.identity.instance,
            request.identity.area
        );
        {
            let running = self.lock();
            if running.len() >= config.subscriptions_max {
                return Err(CreateError::TooMany);
            }
            if let Some(existing) = running.values().find(|r| {
                let info = r.hook.info.lock().unwrap_or_else(PoisonError::into_inner);
                info.client_id == client_id && info.topic == request.topic
            }) {
                return Err(CreateError::Duplicate(existing.hook.info().id));
            }
        }
        let hook = Arc::new(Hook {
            info: Mutex::new(HookInfo {
                id: id.clone(),
                client_id: client_id.clone(),
                topic: request.topic.clone(),
                group: request.group.clone(),
                mode: request.mode,
                url: request.url.clone(),
                delivered: 0,
                failed_attempts: 0,
                given_up: 0,
                last_error: None,
            }),
            owner: owner.clone(),
            closed: AtomicBool::new(false),
            delivered: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            given_up: AtomicU64::new(0),
        });
        let client_config =
            crate::state::client_config(config, &request.identity.area, Some(&client_id)).map_err(
                |e| CreateError::Client(client::ClientError::InvalidArgument(e.to_string())),
            )?;
        let client = Client::new(client_config).map_err(CreateError::Client)?;
        let options = client::ConsumerOptions::new(
            request.topic.clone(),
            request.group.clone(),
            request.mode.into(),
        )
        .start_from(request.start.into());
        let poster = Poster::new(hook.clone(), config);
        let consumer = match Consumer::start_with(&client, options, move |m| poster.deliver(m)) {
            Ok(consumer) => consumer,
            Err(e) => {
                client.close();
                return Err(CreateError::Client(e));
            }
        };
        let info = hook.info();
        self.last_seen_lock().insert(owner, Instant::now());
        self.lock().insert(
            id,
            Running {
                hook,
                consumer,
                client,
            },
        );
        Ok(info)
    }

    /// The subscription's description and counters.
    pub fn info(&self, id: &str) -> Option<HookInfo> {
        self.lock().get(id).map(|r| r.hook.info())
    }

    /// Removes and stops a subscription (blocking); false when there is none.
    pub fn remove(&self, id: &str) -> bool {
        let running = self.lock().remove(id);
        match running {
            Some(running) => {
                stop(running);
                true
            }
            None => false,
        }
    }

    /// Renews the lease of `owner`'s subscriptions; returns how many it has.
    pub fn renew(&self, owner: &str) -> usize {
        self.last_seen_lock()
            .insert(owner.to_owned(), Instant::now());
        self.lock()
            .values()
            .filter(|r| r.hook.owner == owner)
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
                .filter(|(_, r)| stale(&r.hook.owner))
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in &expired {
            log::info!("webhook subscription {id}: lease expired, removing");
            self.remove(id);
        }
        expired.len()
    }

    /// Stops every subscription (blocking).
    pub fn close_all(&self) {
        let all: Vec<Running> = self.lock().drain().map(|(_, r)| r).collect();
        for running in all {
            stop(running);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn last_seen_lock(&self) -> MutexGuard<'_, HashMap<String, Instant>> {
        self.last_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn stop(running: Running) {
    running.hook.closed.store(true, Ordering::Release);
    if let Err(e) = running.consumer.close() {
        log::debug!("webhook consumer close: {e}");
    }
    running.client.close();
}

/// Posts messages to one subscriber URL with the retry and give-up policy.
struct Poster {
    hook: Arc<Hook>,
    agent: ureq::Agent,
    url: String,
    id: String,
    attempts_max: u32,
    backoff_min: Duration,
    backoff_max: Duration,
}

impl Poster {
    fn new(hook: Arc<Hook>, config: &ProxyConfig) -> Self {
        let (url, id) = {
            let info = hook.info.lock().unwrap_or_else(PoisonError::into_inner);
            (info.url.clone(), info.id.clone())
        };
        Self {
            hook,
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_millis(config.webhook_timeout_ms))
                .build(),
            url,
            id,
            attempts_max: config.webhook_attempts_max,
            backoff_min: Duration::from_millis(config.webhook_backoff_min_ms),
            backoff_max: Duration::from_millis(config.webhook_backoff_max_ms),
        }
    }

    fn deliver(&self, message: &ReceivedMessage) {
        let body = serde_json::json!({
            "subscription": self.id,
            "message": DeliveredMessage::from(message),
        });
        let mut backoff = self.backoff_min;
        for attempt in 1..=self.attempts_max {
            if self.hook.closed.load(Ordering::Acquire) {
                return;
            }
            let error = match self.agent.post(&self.url).send_json(&body) {
                Ok(response) if (200..300).contains(&response.status()) => {
                    self.hook.delivered.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Ok(response) => format!("status {}", response.status()),
                Err(ureq::Error::Status(status, _)) => format!("status {status}"),
                Err(e) => e.to_string(),
            };
            self.hook.failed_attempts.fetch_add(1, Ordering::Relaxed);
            log::debug!(
                "webhook {} attempt {attempt}/{}: {error}",
                self.id,
                self.attempts_max
            );
            self.hook
                .info
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .last_error = Some(error);
            if attempt < self.attempts_max {
                self.sleep(backoff);
                backoff = (backoff * 2).min(self.backoff_max);
            }
        }
        self.hook.given_up.fetch_add(1, Ordering::Relaxed);
        log::warn!(
            "webhook {}: gave up on {} queue {} offset {} after {} attempts to {}",
            self.id,
            message.topic,
            message.queue_id,
            message.offset,
            self.attempts_max,
            self.url
        );
    }

    fn sleep(&self, total: Duration) {
        let end = Instant::now() + total;
        while !self.hook.closed.load(Ordering::Acquire) {
            let now = Instant::now();
            if now >= end {
                return;
            }
            std::thread::sleep((end - now).min(BACKOFF_SLICE));
        }
    }
}
