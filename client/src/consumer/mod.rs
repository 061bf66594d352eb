//! Consumer: subscribes on every shard of every broker of a topic, receives pushes under a
//! credit window, skips what it already saw, commits offsets, and resubscribes after a
//! reconnect.
//!
//! Each broker shard decides which of its queues this member consumes (ARCHITECTURE §4.2), so
//! the consumer subscribes on every shard connection and takes whatever is pushed. Pushes of a
//! queue may restart below what was already received (after a reconnect or a rebalance): the
//! consumer keeps the next offset it expects per queue and skips records below it.
//!
//! - `options`: what to consume and how ([`ConsumerOptions`]);
//! - `subscriptions`: a session per broker shard, opened, dropped and left alone on a stall;
//! - `supervisor`: the thread that keeps subscriptions up and auto-commits;
//! - `delivery`: pushes on their way to the application, inline or through a channel;
//! - `progress`: positions per queue, credit granted back, offset commits.

mod delivery;
mod faults;
mod options;
mod progress;
mod retries;
mod subscriptions;
mod supervisor;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use protocol::names::{GroupName, Topic};

use crate::client::{Client, ClientInner};
use crate::error::{ClientError, Result};
use crate::message::ReceivedMessage;

pub(crate) use delivery::Delivery;
use delivery::{InlineHandler, Received};
pub use options::{CommitMode, ConsumeMode, ConsumerOptions, Member, RetryPolicy, StartFrom};
use progress::{CommitFailures, Position};
pub use retries::Nacked;
use subscriptions::Session;

/// What a consumer's threads share: the public handle, the supervisor, the handler thread
/// and the reader threads its pushes arrive on. Its methods live with the part they serve
/// (subscriptions, delivery, progress, supervisor).
pub(crate) struct ConsumerInner {
    client: Arc<ClientInner>,
    options: ConsumerOptions,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    positions: Mutex<HashMap<(String, u32), Position>>,
    /// One message per push: the batch's fresh records, so the handler thread wakes and the
    /// channel is touched once per batch, not once per record.
    deliveries: Mutex<Option<Sender<Vec<Delivery>>>>,
    received: Mutex<Received>,
    /// Set for an inline consumer, whose pushes never go through `deliveries`.
    inline: Option<InlineHandler>,
    closed: AtomicBool,
    wake: (Mutex<bool>, Condvar),
    /// When the route was last invalidated after a failed subscribe.
    route_invalidated: Mutex<Option<Instant>>,
    /// Errors reported outside any call, until the application takes them.
    faults: Mutex<faults::Faults>,
    /// Offset commits that failed.
    commit_failures: CommitFailures,
    /// The consumer of the group's retry topic, whose deliveries share this one's channel
    /// (ARCHITECTURE §13.2); `None` for broadcast, ordered or inline consumers, and for the
    /// retry consumer itself.
    retry: Option<Arc<ConsumerInner>>,
    /// For a retry topic's consumer: when its route was last found missing. The topic appears
    /// at the group's first nack; until then the route is asked for rarely
    /// ([`retries::ROUTE_RETRY_INTERVAL`]), and at once when a nack or a topic change says it
    /// may exist.
    route_missing_at: Mutex<Option<Instant>>,
    /// Events dropped on arrival because their time-to-live had passed.
    expired: std::sync::atomic::AtomicU64,
}

/// A consumer; see the module docs. Pull-style ([`Consumer::subscribe`], then
/// [`Consumer::recv`]) or with a handler ([`Consumer::start`]).
pub struct Consumer {
    inner: Arc<ConsumerInner>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("options", &self.inner.options)
            .finish()
    }
}

impl Consumer {
    /// Subscribes pull-style: messages wait for [`Self::recv`].
    pub fn subscribe(client: &Client, topic: &str, group: &str, mode: ConsumeMode) -> Result<Self> {
        Self::subscribe_with(client, ConsumerOptions::new(topic, group, mode))
    }

    /// Subscribes pull-style to service `service_id`: to the topic of its nearest routable
    /// deployment (the client's own area's when there is one), located through GSL at this
    /// call. A service instance serves the deployment of its area; callers elsewhere reach
    /// it when their own area has none.
    pub fn subscribe_service(
        client: &Client,
        service_id: &str,
        group: &str,
        mode: ConsumeMode,
    ) -> Result<Self> {
        let topic = service_topic(client, service_id)?;
        Self::subscribe_with(client, ConsumerOptions::new(topic, group, mode))
    }

    /// Subscribes pull-style with full options.
    pub fn subscribe_with(client: &Client, options: ConsumerOptions) -> Result<Self> {
        let inner = ConsumerInner::new(client, options, None)?;
        let mut threads = vec![ConsumerInner::spawn_supervisor(&inner)?];
        if let Some(retry) = &inner.retry {
            threads.push(ConsumerInner::spawn_supervisor(retry)?);
        }
        Ok(Self { inner, threads })
    }

    /// Subscribes and calls `handler` for each message, in order, on a dedicated thread. A
    /// message counts as consumed once the handler returns.
    pub fn start(
        client: &Client,
        topic: &str,
        group: &str,
        mode: ConsumeMode,
        handler: impl FnMut(&ReceivedMessage) + Send + 'static,
    ) -> Result<Self> {
        Self::start_with(client, ConsumerOptions::new(topic, group, mode), handler)
    }

    /// Like [`Self::start`], with full options.
    pub fn start_with(
        client: &Client,
        options: ConsumerOptions,
        mut handler: impl FnMut(&ReceivedMessage) + Send + 'static,
    ) -> Result<Self> {
        Self::start_deliveries(client, options, move |d: &Delivery| handler(&d.message))
    }

    /// Like [`Self::start_with`], with a handler that may reject a message: on `Err` the
    /// message is nacked (ARCHITECTURE §13.2) and comes back after the group's backoff,
    /// without holding up the messages behind it; past the group's `max_redeliveries` it goes
    /// to the group's dead-letter topic. An [ordered](ConsumerOptions::ordered) consumer
    /// retries in place instead. Either way the message counts as consumed once handled or
    /// stored for redelivery. The error's text is kept with the copy as the reason.
    pub fn start_with_result<E: std::fmt::Display>(
        client: &Client,
        options: ConsumerOptions,
        mut handler: impl FnMut(&ReceivedMessage) -> std::result::Result<(), E> + Send + 'static,
    ) -> Result<Self> {
        let mut consumer = Self::subscribe_with(client, options)?;
        let inner = consumer.inner.clone();
        let worker = ConsumerInner::spawn_handler_thread(&consumer.inner, move |d: &Delivery| {
            inner.handle_or_retry(d, &mut handler)
        })?;
        consumer.threads.push(worker);
        Ok(consumer)
    }

    /// Like [`Self::start_with`], with the handler seeing each delivery's connection.
    pub(crate) fn start_deliveries(
        client: &Client,
        options: ConsumerOptions,
        mut handler: impl FnMut(&Delivery) + Send + 'static,
    ) -> Result<Self> {
        let mut consumer = Self::subscribe_with(client, options)?;
        let worker = ConsumerInner::spawn_handler_thread(&consumer.inner, move |d: &Delivery| {
            handler(d);
            true
        })?;
        consumer.threads.push(worker);
        Ok(consumer)
    }

    /// Like [`Self::start_deliveries`], with `handler` run on the reader thread of the
    /// connection each push arrives on instead of a handler thread: one thread handoff less
    /// per message. Calls are serialised (pushes from several shards wait for each other) and
    /// each delivery counts as consumed once its call returns. `handler` must not block for
    /// long, must not wait on a response over the client (the reader it runs on may be the
    /// one to read it) and must not panic.
    pub(crate) fn start_inline_deliveries(
        client: &Client,
        options: ConsumerOptions,
        handler: impl FnMut(&Delivery) + Send + 'static,
    ) -> Result<Self> {
        // Installed before the first subscribe, so no push can find it missing.
        let inner = ConsumerInner::new(client, options, Some(Mutex::new(Box::new(handler))))?;
        let supervisor = ConsumerInner::spawn_supervisor(&inner)?;
        Ok(Self {
            inner,
            threads: vec![supervisor],
        })
    }

    /// The next message, waiting at most `timeout`; `None` when none came. With auto commit,
    /// a message returned here counts as consumed.
    ///
    /// An error the brokers reported meanwhile (see [`Self::take_error`]) is returned once,
    /// as `Err`, ahead of further messages; the consumer goes on after it.
    pub fn recv(&self, timeout: Duration) -> Result<Option<ReceivedMessage>> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(ClientError::Closed);
        }
        // What was pushed before a fault came before it on the wire, so it is taken first.
        let mut delivery = self.inner.next_delivery(Some(Duration::ZERO));
        if delivery.is_none() {
            if let Some(fault) = self.inner.take_fault() {
                return Err(fault);
            }
            delivery = self.inner.next_delivery(Some(timeout));
        }
        match delivery {
            Some(delivery) => {
                self.inner.processed(&delivery);
                Ok(Some(delivery.message))
            }
            None => self.inner.take_fault().map_or(Ok(None), Err),
        }
    }

    /// The oldest error reported for this consumer outside any call and not yet taken: a
    /// queue a broker cannot serve because its stored data is damaged
    /// ([`Status::DataDamaged`](protocol::codes::Status::DataDamaged)), or a push that failed
    /// its checks. Consumers using a handler ([`Self::start`]) poll it; `recv` and `close`
    /// return these errors too.
    pub fn take_error(&self) -> Option<ClientError> {
        self.inner.take_fault()
    }

    /// Messages as they come, until the consumer is closed.
    pub fn iter(&self) -> impl Iterator<Item = ReceivedMessage> + '_ {
        std::iter::from_fn(move || {
            loop {
                // `None` is a wake-up for a fault (left for `take_error`) unless closed.
                if let Some(delivery) = self.inner.next_delivery(None) {
                    self.inner.processed(&delivery);
                    return Some(delivery.message);
                }
                if self.inner.closed.load(Ordering::Acquire) {
                    return None;
                }
            }
        })
    }

    /// The topic consumed.
    pub fn topic(&self) -> &str {
        &self.inner.options.topic
    }

    /// Commits the offsets of everything consumed so far and waits for the brokers' acks;
    /// the first commit a broker refused (e.g. its disk is full) is the error.
    pub fn commit(&self) -> Result<()> {
        let own = self.inner.commit(true);
        let retries = self.inner.retry.as_ref().map_or(Ok(()), |r| r.commit(true));
        own.and(retries)
    }

    /// Rejects `message` (one this consumer received): the broker stores a copy in the
    /// group's retry topic, redelivered after the group's backoff, or past its
    /// `max_redeliveries` in the group's dead-letter topic; then the message counts as
    /// consumed, so the ones behind it are not held up. `reason` is kept with the copy (at
    /// most 512 bytes are). Only clustering consumers nack; an
    /// [ordered](ConsumerOptions::ordered) one retries in place, or gives up with
    /// [`Self::dead_letter`].
    pub fn nack(&self, message: &ReceivedMessage, reason: &str) -> Result<Nacked> {
        if self.inner.options.ordered {
            return Err(ClientError::InvalidArgument(
                "an ordered consumer retries in place: handle the message again, or give it up \
                 with dead_letter"
                    .into(),
            ));
        }
        self.inner.nack(message, reason, false)
    }

    /// Gives up on `message`: the broker stores it in the group's dead-letter topic at once
    /// (`defibus dlq` lists, shows and resends it); then it counts as consumed.
    pub fn dead_letter(&self, message: &ReceivedMessage, reason: &str) -> Result<Nacked> {
        self.inner.nack(message, reason, true)
    }

    /// Events dropped on arrival because their time-to-live had passed (the broker drops
    /// the ones whose whole batch expired before pushing, and counts those).
    pub fn expired_on_arrival(&self) -> u64 {
        self.inner.expired.load(Ordering::Acquire)
    }

    /// Offset commits that failed since the consumer started, auto commits included (each
    /// queue's run of failures is also logged at ERROR). A failed commit is sent again by the
    /// next auto commit and by [`Self::close`], whose result says whether everything consumed
    /// was committed in the end; until then, a restarted consumer receives those messages
    /// again.
    pub fn commit_failures(&self) -> u64 {
        self.inner.commit_failures.count()
    }

    /// The broker shard endpoints this member has subscriptions on, as (endpoint, live)
    /// pairs.
    pub fn endpoints(&self) -> Vec<(String, bool)> {
        let sessions = self
            .inner
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut endpoints: Vec<_> = sessions
            .iter()
            .map(|(e, s)| (e.clone(), !s.conn.is_closed()))
            .collect();
        endpoints.sort();
        endpoints
    }

    /// Commits (with auto commit), unsubscribes everywhere and stops the threads.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.wake_supervisor();
        if let Some(retry) = &self.inner.retry {
            retry.closed.store(true, Ordering::Release);
            retry.wake_supervisor();
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        if let Some(handler) = &self.inner.inline {
            // A reader thread may be inside the handler: let it finish, so that what it
            // handled is committed below and no call starts after close returns.
            drop(handler.lock().unwrap_or_else(PoisonError::into_inner));
        }
        let committed = if self.inner.options.commit == CommitMode::Auto {
            let own = self.inner.commit(true);
            let retries = self.inner.retry.as_ref().map_or(Ok(()), |r| r.commit(true));
            own.and(retries)
        } else {
            Ok(())
        };
        self.inner.unsubscribe_all();
        if let Some(retry) = &self.inner.retry {
            retry.unsubscribe_all();
        }
        committed?;
        // An error nobody took is not dropped with the consumer.
        self.inner.take_fault().map_or(Ok(()), Err)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            log::warn!("consumer of {}: closing: {e}", self.inner.options.topic);
        }
    }
}

impl ConsumerInner {
    fn new(
        client: &Client,
        options: ConsumerOptions,
        inline: Option<InlineHandler>,
    ) -> Result<Arc<Self>> {
        options.topic.parse::<Topic>()?;
        options.group.parse::<GroupName>()?;
        let (tx, rx) = mpsc::channel();
        let retry = if inline.is_none() {
            retries::companion(client, &options, &tx)?
        } else {
            None
        };
        let inner = Arc::new(Self {
            client: client.inner.clone(),
            options,
            sessions: Mutex::default(),
            positions: Mutex::default(),
            deliveries: Mutex::new(Some(tx)),
            received: Mutex::new(Received::new(rx)),
            inline,
            closed: AtomicBool::new(false),
            wake: (Mutex::new(false), Condvar::new()),
            route_invalidated: Mutex::new(None),
            faults: Mutex::default(),
            commit_failures: CommitFailures::default(),
            retry,
            route_missing_at: Mutex::new(None),
            expired: Default::default(),
        });
        // The first pass reports a topic nobody routes; brokers that do not answer yet are
        // retried by the supervisor.
        inner.ensure_sessions(true)?;
        Ok(inner)
    }
}

/// The topic a subscriber of `service_id` consumes: its most preferred deployment's.
pub(crate) fn service_topic(client: &Client, service_id: &str) -> Result<String> {
    let topics = client.inner.service_topics(service_id)?;
    Ok(topics
        .into_iter()
        .next()
        .expect("service_topics is never empty"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_default_to_committed_auto() {
        let options = ConsumerOptions::new("A10-1", "g", ConsumeMode::Broadcast)
            .start_from(StartFrom::Earliest)
            .manual_commit();
        assert_eq!(options.start, StartFrom::Earliest);
        assert_eq!(options.commit, CommitMode::Manual);
        assert_eq!(ConsumeMode::default(), ConsumeMode::Clustering);
        assert_eq!(Position::default().expected, 0);
    }
}
