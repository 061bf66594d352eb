//! Rejected messages (ARCHITECTURE §13.2): nacks to the broker, the consumer of the group's
//! retry topic that brings them back, and the handler form that nacks on error, or, for an
//! ordered consumer, retries in place.

use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use protocol::codes::Command;
use protocol::control::{self, Nack, NackAck};
use protocol::record::truncate_reason;
use protocol::retry::TopicKind;

use super::delivery::{Delivery, Received};
use super::faults::Faults;
use super::progress::CommitFailures;
use super::{ConsumeMode, ConsumerInner, ConsumerOptions, StartFrom};
use crate::client::Client;
use crate::error::{ClientError, Result};
use crate::message::ReceivedMessage;

/// How often a retry topic's consumer asks for a route that was missing (the group has not
/// nacked yet). A nack by this consumer, or a topic change announced by a broker (the one
/// that creates the retry topic announces it to the original topic's subscribers), asks
/// again at once.
pub(super) const ROUTE_RETRY_INTERVAL: Duration = Duration::from_secs(30);

/// Longest wait between attempts to nack while the broker cannot take it.
const NACK_RETRY_MAX: Duration = Duration::from_secs(5);

/// How a nack that is tried until it succeeds ended.
enum Nacking {
    /// The broker stored the copy.
    Stored,
    /// The broker refused it for good (`RetryUnavailable`), saying why.
    Refused(String),
    /// The consumer closed first.
    Closed,
}

/// Where the broker stored a nacked message's copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nacked {
    /// The group's retry topic, or its dead-letter topic.
    pub topic: String,
    /// The queue there: the backoff level in a retry topic.
    pub queue_id: u32,
    /// The copy's offset.
    pub offset: u64,
    /// Which redelivery the copy will be (1 for the first).
    pub attempt: u32,
    /// True when it went to the dead-letter topic.
    pub dead_lettered: bool,
}

/// The consumer of the retry topic of `options`' group, sharing `deliveries`, if the
/// consumer retries through the broker (clustering, not ordered, retries on, a plain topic).
pub(super) fn companion(
    client: &Client,
    options: &ConsumerOptions,
    deliveries: &Sender<Vec<Delivery>>,
) -> Result<Option<Arc<ConsumerInner>>> {
    if options.mode != ConsumeMode::Clustering
        || options.ordered
        || !options.retries
        || protocol::retry::kind(&options.topic) != TopicKind::Plain
    {
        return Ok(None);
    }
    let topic = match protocol::retry::retry_topic(&options.topic, &options.group) {
        Ok(topic) => topic,
        Err(e) => {
            // Nacks are refused the same way by the broker; handled messages are unaffected.
            log::warn!(
                "group {} on {} cannot have a retry topic ({e}); its nacks will be refused",
                options.group,
                options.topic
            );
            return Ok(None);
        }
    };
    let mut retry_options = options.clone().without_retries();
    retry_options.topic = topic;
    // Committed, not Earliest: with a committed offset the broker starts there, without
    // one at the oldest copy.
    retry_options.start = StartFrom::Committed;
    let (_, unused) = std::sync::mpsc::channel();
    let inner = Arc::new(ConsumerInner {
        client: client.inner.clone(),
        options: retry_options,
        sessions: Mutex::default(),
        positions: Mutex::default(),
        deliveries: Mutex::new(Some(deliveries.clone())),
        received: Mutex::new(Received::new(unused)),
        inline: None,
        closed: Default::default(),
        wake: (Mutex::new(false), Default::default()),
        route_invalidated: Mutex::new(None),
        faults: Mutex::new(Faults::default()),
        commit_failures: CommitFailures::default(),
        retry: None,
        route_missing_at: Mutex::new(None),
        expired: Default::default(),
    });
    // Not there before the group's first nack: the supervisor keeps asking.
    inner.ensure_sessions(false)?;
    Ok(Some(inner))
}

impl ConsumerInner {
    /// True while a missing route was seen less than [`ROUTE_RETRY_INTERVAL`] ago.
    pub(super) fn route_recently_missing(&self) -> bool {
        self.route_missing_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() < ROUTE_RETRY_INTERVAL)
    }

    /// Records a failed route lookup; only a retry topic's consumer waits before the next.
    pub(super) fn route_missing(&self, error: &ClientError) {
        if protocol::retry::kind(&self.options.topic) == TopicKind::Retry
            && matches!(
                error,
                ClientError::NoRoute { .. } | ClientError::Status { .. }
            )
        {
            *self
                .route_missing_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        }
    }

    pub(super) fn route_found(&self) {
        self.route_missing_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// The route may exist now: look at once.
    pub(super) fn route_may_exist(&self) {
        self.route_found();
        self.client.routes.invalidate(&self.options.topic);
        self.wake_supervisor();
    }

    /// Sends the nack of `message` (to the broker shard that pushed it, on the subscription
    /// it came on) and waits for the broker to store its copy.
    pub(super) fn nack(
        &self,
        message: &ReceivedMessage,
        reason: &str,
        dead_letter: bool,
    ) -> Result<Nacked> {
        let owner = if message.topic == self.options.topic {
            self
        } else {
            match &self.retry {
                Some(retry) if retry.options.topic == message.topic => retry,
                _ => {
                    return Err(ClientError::InvalidArgument(format!(
                        "{} is not consumed by this consumer of {}",
                        message.topic, self.options.topic
                    )));
                }
            }
        };
        let session = owner
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&message.endpoint)
            .cloned()
            .ok_or_else(|| ClientError::Disconnected {
                endpoint: message.endpoint.clone(),
            })?;
        let request = Nack {
            subscription_id: session.subscription_id,
            queue_id: message.queue_id,
            offset: message.offset,
            dead_letter,
            reason: truncate_reason(reason).to_owned(),
        };
        let endpoint = &message.endpoint;
        let body = control::encode(&request).map_err(|e| ClientError::control(endpoint, e))?;
        let frame = session.conn.call(
            Command::Nack,
            &[],
            &body,
            self.client.config.request_timeout,
        )?;
        let ack: NackAck =
            control::decode(&frame.body).map_err(|e| ClientError::control(endpoint, e))?;
        if !ack.dead_lettered {
            if let Some(retry) = &self.retry {
                if retry
                    .sessions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_empty()
                {
                    retry.route_may_exist();
                }
            }
        }
        Ok(Nacked {
            topic: ack.topic,
            queue_id: ack.queue_id,
            offset: ack.offset,
            attempt: ack.attempt,
            dead_lettered: ack.dead_lettered,
        })
    }

    /// Runs `handler` on `delivery`; on error, nacks it, or for an ordered consumer retries
    /// in place and dead-letters it past the policy's redeliveries. True once the message
    /// is consumed (handled, or its copy stored); false if the consumer closed first.
    ///
    /// A broker that refuses the nack for good (`RetryUnavailable`: a broadcast group, or a
    /// group whose retry topic cannot be named) makes the consumer retry in place instead;
    /// when even the dead letter is refused, the message is given up as a fault the
    /// application sees (`take_error`, `close`), never dropped silently.
    pub(super) fn handle_or_retry<E: std::fmt::Display>(
        &self,
        delivery: &Delivery,
        handler: &mut impl FnMut(&ReceivedMessage) -> std::result::Result<(), E>,
    ) -> bool {
        let message = &delivery.message;
        let mut in_place = self.options.ordered;
        let mut attempt = 0;
        loop {
            let error = match handler(message) {
                Ok(()) => return true,
                Err(error) => error.to_string(),
            };
            if !in_place {
                match self.nack_until_stored(message, &error, false) {
                    Nacking::Stored => return true,
                    Nacking::Closed => return false,
                    Nacking::Refused(refusal) => {
                        log::warn!(
                            "{}: nack of offset {} of queue {} refused ({refusal}); retrying \
                             it in place",
                            message.topic,
                            message.offset,
                            message.queue_id
                        );
                        in_place = true;
                    }
                }
            }
            attempt += 1;
            if attempt > self.options.retry_policy.max_redeliveries {
                log::warn!(
                    "{}: offset {} of queue {} failed {attempt} times; dead-lettering it: {error}",
                    message.topic,
                    message.offset,
                    message.queue_id
                );
                return match self.nack_until_stored(message, &error, true) {
                    Nacking::Stored => true,
                    Nacking::Closed => false,
                    Nacking::Refused(refusal) => {
                        self.fault(
                            protocol::codes::Status::RetryUnavailable,
                            format!(
                                "gave up on offset {} of queue {} of {} at {} after {attempt} \
                                 failures ({error}); it could not be dead-lettered: {refusal}",
                                message.offset, message.queue_id, message.topic, message.endpoint
                            ),
                        );
                        true
                    }
                };
            }
            if !self.sleep_unless_closed(self.options.retry_policy.delay(attempt)) {
                return false;
            }
        }
    }

    /// Nacks `message` until the broker stored its copy (a broker restarting, a lost
    /// connection: waits and tries again, so a rejected message is never just dropped), the
    /// broker refused it for good, or the consumer closed (the message is then unconsumed).
    fn nack_until_stored(
        &self,
        message: &ReceivedMessage,
        reason: &str,
        dead_letter: bool,
    ) -> Nacking {
        let mut wait = Duration::from_millis(100);
        loop {
            match self.nack(message, reason, dead_letter) {
                Ok(_) => return Nacking::Stored,
                Err(ClientError::Status { status, message })
                    if status == protocol::codes::Status::RetryUnavailable =>
                {
                    return Nacking::Refused(format!("{status}: {message}"));
                }
                Err(e) => log::warn!(
                    "{}: nack of offset {} of queue {} failed, trying again in {wait:?}: {e}",
                    message.topic,
                    message.offset,
                    message.queue_id
                ),
            }
            if !self.sleep_unless_closed(wait) {
                return Nacking::Closed;
            }
            wait = (wait * 2).min(NACK_RETRY_MAX);
        }
    }

    /// Sleeps `duration`, waking every 100 ms to see whether the consumer closed; false if
    /// it did.
    fn sleep_unless_closed(&self, duration: Duration) -> bool {
        let until = Instant::now() + duration;
        loop {
            if self.closed.load(Ordering::Acquire) {
                return false;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }
}
