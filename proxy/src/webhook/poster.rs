//! Delivery of one subscription's messages to its URL: the retry and give-up policy, and
//! replies to requests taken from the webhook's answer.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use client::{ReceivedMessage, Replier, ReplyAddress};
use serde::Deserialize;

use super::standing::Standing;
use crate::api::{DeliveredMessage, payload};
use crate::config::ProxyConfig;

/// How often a suspended subscription looks at its owner's grant again: the policy itself
/// changes at most every `policy_refresh_ms`.
const STANDING_RECHECK: Duration = Duration::from_millis(250);

/// Deliveries of every subscription the proxy has run, for metrics: what [`Counters`] counts
/// for one, summed as it happens, so a removed subscription's deliveries stay counted.
#[derive(Debug, Default)]
pub struct WebhookTotals {
    delivered: AtomicU64,
    failed: AtomicU64,
    given_up: AtomicU64,
    expired: AtomicU64,
    replied: AtomicU64,
}

impl WebhookTotals {
    /// Each outcome's label and count.
    pub fn counts(&self) -> [(&'static str, u64); 5] {
        [
            ("delivered", &self.delivered),
            ("failed", &self.failed),
            ("given_up", &self.given_up),
            ("expired", &self.expired),
            ("replied", &self.replied),
        ]
        .map(|(label, count)| (label, count.load(Ordering::Relaxed)))
    }
}

/// The counters of one subscription, shared by its poster and the registry.
#[derive(Default)]
pub struct Counters {
    /// Set when the subscription is removed or the proxy stops: retries end.
    pub closed: AtomicBool,
    /// Messages posted with a 2xx answer.
    pub delivered: AtomicU64,
    /// Requests answered from the webhook's response body.
    pub replied: AtomicU64,
    /// Failed attempts.
    pub failed_attempts: AtomicU64,
    /// Messages given up after the last attempt.
    pub given_up: AtomicU64,
    /// Requests skipped because their deadline passed before a delivery.
    pub expired: AtomicU64,
    /// The last failure, for diagnosis.
    pub last_error: Mutex<Option<String>>,
    /// Set while deliveries wait for the owner's `consume` grant (revoked).
    pub suspended: AtomicBool,
    /// Wakes a poster waiting out a retry backoff when `closed` is set ([`Counters::close`]).
    close_wait: (Mutex<()>, Condvar),
    /// The proxy's totals, counted with this subscription's.
    totals: Arc<WebhookTotals>,
}

/// Adds one to a subscription's counter and to its proxy-wide total.
fn count(mine: &AtomicU64, total: &AtomicU64) {
    mine.fetch_add(1, Ordering::Relaxed);
    total.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// Fresh counters of a subscription that also count into `totals`.
    pub fn new(totals: Arc<WebhookTotals>) -> Self {
        Self {
            totals,
            ..Self::default()
        }
    }

    /// Sets `closed` and wakes a poster waiting between retries, so it stops at once.
    pub fn close(&self) {
        let (lock, woken) = &self.close_wait;
        let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.closed.store(true, Ordering::Release);
        woken.notify_all();
    }

    /// Waits `total`, or less if the subscription is closed meanwhile.
    fn wait_unless_closed(&self, total: Duration) {
        let (lock, woken) = &self.close_wait;
        let guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = woken
            .wait_timeout_while(guard, total, |()| !self.closed.load(Ordering::Acquire))
            .unwrap_or_else(PoisonError::into_inner);
    }

    /// Records `error` as the last failure.
    pub fn failed(&self, error: String) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error);
    }
}

/// A reply in a webhook's answer: `{"value": ...}` or `{"value_b64": ...}`, and optionally
/// the reply's `trace` (else the answer's `traceparent` and `tracestate` headers; else the
/// request's context).
#[derive(Deserialize)]
struct AnswerBody {
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    value_b64: Option<String>,
    #[serde(default)]
    trace: Option<crate::trace::TraceFields>,
}

/// Posts messages to one subscriber URL with the retry and give-up policy.
pub struct Poster {
    counters: Arc<Counters>,
    agent: ureq::Agent,
    replier: Replier,
    url: String,
    id: String,
    attempts_max: u32,
    backoff_min: Duration,
    backoff_max: Duration,
    answer_bytes_max: u64,
    /// The owner's grant, checked before each delivery; `None` with security off.
    standing: Option<Standing>,
}

impl Poster {
    pub fn new(
        id: String,
        url: String,
        counters: Arc<Counters>,
        replier: Replier,
        config: &ProxyConfig,
        standing: Option<Standing>,
    ) -> Self {
        Self {
            counters,
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_millis(config.webhook_timeout_ms))
                .build(),
            replier,
            url,
            id,
            attempts_max: config.webhook_attempts_max,
            backoff_min: Duration::from_millis(config.webhook_backoff_min_ms),
            backoff_max: Duration::from_millis(config.webhook_backoff_max_ms),
            answer_bytes_max: config.body_bytes_max as u64,
            standing,
        }
    }

    /// Waits while the owner may not consume what this subscription pushes; false when the
    /// subscription closed meanwhile. The message is not posted and not committed while
    /// it waits: it stays on the bus for when the grant returns or another consumer.
    fn wait_for_standing(&self) -> bool {
        let Some(standing) = &self.standing else {
            return true;
        };
        while !standing.allowed(&self.id) {
            if !self.counters.suspended.swap(true, Ordering::AcqRel) {
                self.counters.failed(standing.why_suspended());
            }
            if self.counters.closed.load(Ordering::Acquire) {
                return false;
            }
            self.sleep(STANDING_RECHECK);
        }
        self.counters.suspended.store(false, Ordering::Release);
        true
    }

    /// Delivers one message: POSTs until a 2xx answer, at most `attempts_max` times, then
    /// gives it up. A request is not posted past its deadline (nobody waits for the answer).
    /// The message's trace context goes as the `traceparent` and `tracestate` headers too.
    pub fn deliver(&self, message: &ReceivedMessage) {
        let body = serde_json::json!({
            "subscription": self.id,
            "message": DeliveredMessage::from(message),
        });
        let reply_address = ReplyAddress::of(message);
        let mut backoff = self.backoff_min;
        for attempt in 1..=self.attempts_max {
            if self.counters.closed.load(Ordering::Acquire) || !self.wait_for_standing() {
                return;
            }
            if reply_address.is_some() && message.is_expired() {
                count(&self.counters.expired, &self.counters.totals.expired);
                log::debug!(
                    "webhook {}: request {} queue {} offset {} expired before delivery",
                    self.id,
                    message.topic,
                    message.queue_id,
                    message.offset
                );
                return;
            }
            let mut post = self.agent.post(&self.url);
            if let Some(trace) = &message.trace {
                post = post.set(crate::trace::TRACEPARENT, &trace.traceparent());
                if let Some(state) = trace.tracestate() {
                    post = post.set(crate::trace::TRACESTATE, state);
                }
            }
            let error = match post.send_json(&body) {
                Ok(response) if (200..300).contains(&response.status()) => {
                    count(&self.counters.delivered, &self.counters.totals.delivered);
                    if let Some(address) = &reply_address {
                        self.reply_from(response, address);
                    }
                    return;
                }
                Ok(response) => format!("status {}", response.status()),
                Err(ureq::Error::Status(status, _)) => format!("status {status}"),
                Err(e) => e.to_string(),
            };
            count(&self.counters.failed_attempts, &self.counters.totals.failed);
            log::debug!(
                "webhook {} attempt {attempt}/{}: {error}",
                self.id,
                self.attempts_max
            );
            self.counters.failed(error);
            if attempt < self.attempts_max {
                self.sleep(backoff);
                backoff = (backoff * 2).min(self.backoff_max);
            }
        }
        count(&self.counters.given_up, &self.counters.totals.given_up);
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

    /// Sends the reply a webhook put in its answer to a request, if it put one: a JSON
    /// object with `value` or `value_b64`. Any other answer (empty, or not such an object)
    /// means the subscriber replies later with `POST /v1/reply`, or not at all.
    fn reply_from(&self, response: ureq::Response, address: &ReplyAddress) {
        let headers_trace =
            response
                .header(crate::trace::TRACEPARENT)
                .map(|parent| crate::trace::TraceFields {
                    traceparent: parent.to_owned(),
                    tracestate: response.header(crate::trace::TRACESTATE).map(str::to_owned),
                });
        let mut text = Vec::new();
        let read = response
            .into_reader()
            .take(self.answer_bytes_max)
            .read_to_end(&mut text);
        if read.is_err() || text.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let Ok(answer) = serde_json::from_slice::<AnswerBody>(&text) else {
            log::debug!("webhook {}: answer is not a reply object", self.id);
            return;
        };
        if answer.value.is_none() && answer.value_b64.is_none() {
            return;
        }
        let sent = payload(answer.value.as_deref(), answer.value_b64.as_deref())
            .and_then(|value| {
                let reply = client::Answer::new(value);
                match answer.trace.as_ref().or(headers_trace.as_ref()) {
                    Some(fields) => Ok(reply.with_trace(fields.to_context()?)),
                    None => Ok(reply),
                }
            })
            .map_err(|e| e.message)
            .and_then(|reply| {
                self.replier
                    .reply(address, reply)
                    .map_err(|e| e.to_string())
            });
        match sent {
            Ok(()) => {
                count(&self.counters.replied, &self.counters.totals.replied);
            }
            Err(e) => {
                log::debug!("webhook {}: reply not sent: {e}", self.id);
                self.counters.failed(format!("reply not sent: {e}"));
            }
        }
    }

    fn sleep(&self, total: Duration) {
        self.counters.wait_unless_closed(total);
    }
}
