//! Consumer: subscribes on every shard of every broker of a topic, receives pushes under a
//! credit window, skips what it already saw, commits offsets, and resubscribes after a
//! reconnect.
//!
//! Each broker shard decides which of its queues this member consumes (ARCHITECTURE §4.2), so
//! the consumer subscribes on every shard connection and takes whatever is pushed. Pushes of a
//! queue may restart below what was already received (after a reconnect or a rebalance): the
//! consumer keeps the next offset it expects per queue and skips records below it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use protocol::codes::Command;
use protocol::control::{
    self, CommitOffset, Credit, StartPosition, Subscribe, SubscribeAck, SubscriptionMode,
    Unsubscribe,
};
use protocol::data::BatchAddress;
use protocol::frame::FrameBytes;
use protocol::names::{GroupName, Topic};
use protocol::record::{BATCH_LEN_MAX, BatchView};

use crate::client::{Client, ClientInner};
use crate::error::{ClientError, Result};
use crate::isolation::is_stall;
use crate::message::ReceivedMessage;
use crate::net::{Connection, PushSink};
use crate::route::CachedRoute;
use crate::slot::slot;

/// How a group shares a topic's messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConsumeMode {
    /// Unicast: each message goes to one member of the group.
    #[default]
    Clustering,
    /// Every member gets every message (offsets are kept per member).
    Broadcast,
}

/// Where a member with no committed offset starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartFrom {
    /// At the group's committed offset (the broker's choice when there is none).
    #[default]
    Committed,
    /// At the oldest retained message.
    Earliest,
    /// At the next message produced.
    Latest,
}

/// When consumed offsets are committed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CommitMode {
    /// Every auto-commit interval and on close.
    #[default]
    Auto,
    /// Only on [`Consumer::commit`].
    Manual,
}

/// What to consume and how.
#[derive(Clone, Debug)]
pub struct ConsumerOptions {
    /// The topic, `[area]-[serviceId]`.
    pub topic: String,
    /// The consumer group.
    pub group: String,
    /// Unicast or broadcast.
    pub mode: ConsumeMode,
    /// Where to start without a committed offset.
    pub start: StartFrom,
    /// When to commit.
    pub commit: CommitMode,
}

impl ConsumerOptions {
    /// Options for `topic` and `group` in `mode`, starting at the committed offset, with auto
    /// commit.
    pub fn new(topic: impl Into<String>, group: impl Into<String>, mode: ConsumeMode) -> Self {
        Self {
            topic: topic.into(),
            group: group.into(),
            mode,
            start: StartFrom::Committed,
            commit: CommitMode::Auto,
        }
    }

    /// Sets where to start.
    pub fn start_from(mut self, start: StartFrom) -> Self {
        self.start = start;
        self
    }

    /// Commits only on [`Consumer::commit`].
    pub fn manual_commit(mut self) -> Self {
        self.commit = CommitMode::Manual;
        self
    }
}

/// A pushed record on its way to the application, with the connection it came on.
pub(crate) struct Delivery {
    pub(crate) message: ReceivedMessage,
    pub(crate) conn: Arc<Connection>,
    pub(crate) subscription_id: u64,
}

/// A handler run on the reader thread of the connection each push arrives on, one call at a
/// time: no handoff to a handler thread (see [`Consumer::start_inline_deliveries`]).
type InlineHandler = Mutex<Box<dyn FnMut(&Delivery) + Send>>;

/// A subscription on one broker shard.
struct Session {
    conn: Arc<Connection>,
    subscription_id: u64,
    /// Records received or skipped since credit was last granted.
    consumed: AtomicU32,
}

/// Per (endpoint, queue): how far pushes, processing and commits have come.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Position {
    /// The next offset expected from pushes; records below it are skipped.
    expected: u64,
    /// One past the last processed record.
    processed: Option<u64>,
    /// The last offset committed.
    committed: Option<u64>,
}

pub(crate) struct ConsumerInner {
    client: Arc<ClientInner>,
    options: ConsumerOptions,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    positions: Mutex<HashMap<(String, u32), Position>>,
    deliveries: Mutex<Option<Sender<Delivery>>>,
    received: Mutex<Receiver<Delivery>>,
    /// Set for an inline consumer, whose pushes never go through `deliveries`.
    inline: Option<InlineHandler>,
    closed: AtomicBool,
    wake: (Mutex<bool>, Condvar),
    /// When the route was last invalidated after a failed subscribe.
    route_invalidated: Mutex<Option<Instant>>,
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
        let supervisor = ConsumerInner::spawn_supervisor(&inner)?;
        Ok(Self {
            inner,
            threads: vec![supervisor],
        })
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

    /// Like [`Self::start_with`], with the handler seeing each delivery's connection.
    pub(crate) fn start_deliveries(
        client: &Client,
        options: ConsumerOptions,
        mut handler: impl FnMut(&Delivery) + Send + 'static,
    ) -> Result<Self> {
        let mut consumer = Self::subscribe_with(client, options)?;
        let inner = consumer.inner.clone();
        let worker = std::thread::Builder::new()
            .name(format!("defibus-consume-{}", inner.options.topic))
            .spawn(move || {
                while let Some(delivery) = inner.next_delivery(None) {
                    handler(&delivery);
                    inner.processed(&delivery);
                }
            })
            .map_err(|source| ClientError::Io {
                endpoint: "(local)".into(),
                source,
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
    pub fn recv(&self, timeout: Duration) -> Result<Option<ReceivedMessage>> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(ClientError::Closed);
        }
        Ok(self.inner.next_delivery(Some(timeout)).map(|delivery| {
            self.inner.processed(&delivery);
            delivery.message
        }))
    }

    /// Messages as they come, until the consumer is closed.
    pub fn iter(&self) -> impl Iterator<Item = ReceivedMessage> + '_ {
        std::iter::from_fn(move || {
            let delivery = self.inner.next_delivery(None)?;
            self.inner.processed(&delivery);
            Some(delivery.message)
        })
    }

    /// The topic consumed.
    pub fn topic(&self) -> &str {
        &self.inner.options.topic
    }

    /// Commits the offsets of everything consumed so far and waits for the brokers' acks.
    pub fn commit(&self) -> Result<()> {
        self.inner.commit(true)
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
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        if let Some(handler) = &self.inner.inline {
            // A reader thread may be inside the handler: let it finish, so that what it
            // handled is committed below and no call starts after close returns.
            drop(handler.lock().unwrap_or_else(PoisonError::into_inner));
        }
        let committed = if self.inner.options.commit == CommitMode::Auto {
            self.inner.commit(true)
        } else {
            Ok(())
        };
        self.inner.unsubscribe_all();
        committed
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            log::warn!(
                "consumer of {}: final commit failed: {e}",
                self.inner.options.topic
            );
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
        let inner = Arc::new(Self {
            client: client.inner.clone(),
            options,
            sessions: Mutex::default(),
            positions: Mutex::default(),
            deliveries: Mutex::new(Some(tx)),
            received: Mutex::new(rx),
            inline,
            closed: AtomicBool::new(false),
            wake: (Mutex::new(false), Condvar::new()),
            route_invalidated: Mutex::new(None),
        });
        // The first pass reports a topic nobody routes; brokers that do not answer yet are
        // retried by the supervisor.
        inner.ensure_sessions(true)?;
        Ok(inner)
    }

    fn spawn_supervisor(inner: &Arc<Self>) -> Result<JoinHandle<()>> {
        let weak = Arc::downgrade(inner);
        std::thread::Builder::new()
            .name(format!("defibus-subscribe-{}", inner.options.topic))
            .spawn(move || supervise(&weak))
            .map_err(|source| ClientError::Io {
                endpoint: "(local)".into(),
                source,
            })
    }

    fn wake_supervisor(&self) {
        *self.wake.0.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.wake.1.notify_all();
    }

    /// The next delivery; `None` on timeout or once closed. `timeout: None` waits until
    /// closed, checking every 100 ms.
    fn next_delivery(&self, timeout: Option<Duration>) -> Option<Delivery> {
        let slice = Duration::from_millis(100);
        let deadline = timeout.map(|t| Instant::now() + t);
        let received = self.received.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            let wait = match deadline {
                Some(deadline) => deadline
                    .saturating_duration_since(Instant::now())
                    .min(slice),
                None => slice,
            };
            match received.recv_timeout(wait) {
                Ok(delivery) => return Some(delivery),
                Err(RecvTimeoutError::Timeout) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return None;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Records `delivery` as consumed: advances its queue's position and returns credit.
    pub(crate) fn processed(&self, delivery: &Delivery) {
        let message = &delivery.message;
        {
            let mut positions = self
                .positions
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let position = positions
                .entry((message.endpoint.clone(), message.queue_id))
                .or_default();
            let next = message.offset + 1;
            if position.processed.is_none_or(|p| p < next) {
                position.processed = Some(next);
            }
        }
        self.consumed(&message.endpoint, delivery.subscription_id, 1);
    }

    /// Counts `count` records as consumed on a subscription and grants credit back once half
    /// the window is used.
    fn consumed(&self, endpoint: &str, subscription_id: u64, count: u32) {
        let session = self
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(endpoint)
            .cloned();
        let Some(session) = session.filter(|s| s.subscription_id == subscription_id) else {
            return; // A subscription since replaced: its credit died with it.
        };
        let half = self.client.config.credit_window / 2;
        let total = session.consumed.fetch_add(count, Ordering::AcqRel) + count;
        if total >= half {
            let granted = session.consumed.swap(0, Ordering::AcqRel);
            if granted == 0 {
                return;
            }
            let credit = Credit {
                subscription_id,
                messages: granted,
            };
            let sent = control::encode(&credit)
                .map_err(|e| ClientError::control(endpoint, e))
                .and_then(|body| session.conn.send_oneway(Command::Credit, &[], &body));
            if let Err(e) = sent {
                log::debug!("{endpoint}: credit not granted: {e}");
            }
        }
    }

    /// Subscribes on every shard of the route that has no live subscription. With
    /// `report_route_errors`, a route failure is returned; otherwise it is logged.
    fn ensure_sessions(self: &Arc<Self>, report_route_errors: bool) -> Result<()> {
        let route = match self.client.route(&self.options.topic) {
            Ok(route) => route,
            Err(e) if report_route_errors => return Err(e),
            Err(e) => {
                log::debug!("route of {}: {e}", self.options.topic);
                return Ok(());
            }
        };
        let endpoints = route.read_endpoints();
        for endpoint in &endpoints {
            if self.closed.load(Ordering::Acquire) {
                break;
            }
            let existing = self
                .sessions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(endpoint)
                .cloned();
            if let Some(session) = existing {
                if !session.conn.is_closed() {
                    continue;
                }
                // A dead session is looked at once: it either stalled or went away.
                self.sessions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(endpoint);
                if session.conn.closed_silent() {
                    self.broker_stalled(&route, endpoint, "stopped answering heartbeats");
                }
            }
            if self.client.stalled.is_isolated(endpoint) {
                continue;
            }
            match self.subscribe_on(endpoint) {
                Ok(session) => {
                    log::debug!(
                        "{}: subscribed to {} as {} (subscription {})",
                        endpoint,
                        self.options.topic,
                        self.options.group,
                        session.subscription_id
                    );
                    self.sessions
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(endpoint.clone(), session);
                }
                Err(e) if is_stall(&e) => {
                    self.broker_stalled(&route, endpoint, &format!("subscribe: {e}"));
                }
                Err(e) => {
                    // The broker may be gone or back on other ports: refetch the route, at
                    // most once per second so a dead broker does not flood the nameservers.
                    let mut last = self
                        .route_invalidated
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                        *last = Some(Instant::now());
                        self.client.routes.invalidate(&self.options.topic);
                    }
                    drop(last);
                    log::debug!(
                        "{endpoint}: subscribe to {} failed: {e}",
                        self.options.topic
                    );
                }
            }
        }
        // Shards that left the route: drop their subscriptions.
        let gone: Vec<Arc<Session>> = {
            let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
            let stale: Vec<String> = sessions
                .keys()
                .filter(|e| !endpoints.contains(e))
                .cloned()
                .collect();
            stale.iter().filter_map(|e| sessions.remove(e)).collect()
        };
        for session in gone {
            self.unsubscribe(&session);
        }
        Ok(())
    }

    /// Isolates the broker owning `endpoint` after it stalled: every one of its shards in
    /// `route`, for `stalled_broker_isolation`, so no pass of the supervisor waits on it
    /// again before then (DESIGN §6, consumer fault isolation).
    fn broker_stalled(&self, route: &CachedRoute, endpoint: &str, why: &str) {
        let broker_endpoints = route.broker_read_endpoints(endpoint);
        let period = self.client.config.stalled_broker_isolation;
        log::warn!(
            "{endpoint} stalled ({why}); consumers of this client leave {} alone for {period:?}",
            broker_endpoints.join(", ")
        );
        self.client.stalled.isolate(&broker_endpoints, period);
    }

    fn subscribe_on(self: &Arc<Self>, endpoint: &str) -> Result<Arc<Session>> {
        let client = &self.client;
        let conn = client.broker(endpoint)?;
        let request = Subscribe {
            topic: self.options.topic.clone(),
            group: self.options.group.clone(),
            client_id: client.client_id.to_string(),
            area: client.config.area.to_string(),
            mode: match self.options.mode {
                ConsumeMode::Clustering => SubscriptionMode::Clustering,
                ConsumeMode::Broadcast => SubscriptionMode::Broadcast,
            },
            start: match self.options.start {
                StartFrom::Committed => StartPosition::Committed,
                StartFrom::Earliest => StartPosition::Earliest,
                StartFrom::Latest => StartPosition::Latest,
            },
            credit_messages: client.config.credit_window,
        };
        let body = control::encode(&request).map_err(|e| ClientError::control(endpoint, e))?;
        // The sink is registered on the reader thread as the ack is read, before any push
        // that follows it, so no push finds the subscription missing.
        let (completer, waiter) = slot::<Arc<Session>>();
        let weak = Arc::downgrade(self);
        let registering = conn.clone();
        let endpoint_owned = endpoint.to_owned();
        let request_id = conn.call_with(
            Command::Subscribe,
            &[],
            &body,
            Box::new(move |result: Result<FrameBytes>| {
                let ack = result.and_then(|frame| {
                    control::decode::<SubscribeAck>(&frame.body)
                        .map_err(|e| ClientError::control(&endpoint_owned, e))
                });
                let session = ack.map(|ack| {
                    registering.add_subscription(
                        ack.subscription_id,
                        Arc::new(SubscriptionSink {
                            consumer: weak.clone(),
                            endpoint: endpoint_owned.clone(),
                            subscription_id: ack.subscription_id,
                        }),
                    );
                    Arc::new(Session {
                        conn: registering.clone(),
                        subscription_id: ack.subscription_id,
                        consumed: AtomicU32::new(0),
                    })
                });
                match session {
                    Ok(session) => {
                        if !completer.complete(Ok(session.clone())) {
                            // The caller gave up waiting: undo the registration.
                            registering.remove_subscription(session.subscription_id);
                        }
                    }
                    Err(e) => {
                        completer.complete(Err(e));
                    }
                }
            }),
        )?;
        let session = waiter.wait(client.config.request_timeout);
        if session.is_err() {
            conn.forget(request_id);
        }
        let session = session?;
        let weak = Arc::downgrade(self);
        conn.on_close(Box::new(move || {
            if let Some(consumer) = weak.upgrade() {
                consumer.wake_supervisor();
            }
        }));
        Ok(session)
    }

    fn unsubscribe(&self, session: &Session) {
        session.conn.remove_subscription(session.subscription_id);
        if session.conn.is_closed() || self.client.stalled.is_isolated(session.conn.endpoint()) {
            return;
        }
        let request = Unsubscribe {
            subscription_id: session.subscription_id,
        };
        let result = control::encode(&request)
            .map_err(|e| ClientError::control(session.conn.endpoint(), e))
            .and_then(|body| {
                session.conn.call(
                    Command::Unsubscribe,
                    &[],
                    &body,
                    self.client.config.request_timeout,
                )
            });
        if let Err(e) = result {
            log::debug!("{}: unsubscribe failed: {e}", session.conn.endpoint());
        }
    }

    fn unsubscribe_all(&self) {
        let sessions: Vec<_> = self
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, s)| s)
            .collect();
        for session in sessions {
            self.unsubscribe(&session);
        }
        self.deliveries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// Commits every position processed past its last commit. With `wait`, waits for the
    /// acks and returns the first failure; otherwise failures are logged.
    fn commit(&self, wait: bool) -> Result<()> {
        let due: Vec<((String, u32), u64)> = self
            .positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(|(key, p)| {
                let processed = p.processed?;
                (p.committed.is_none_or(|c| c < processed)).then(|| (key.clone(), processed))
            })
            .collect();
        let mut first_error = None;
        for ((endpoint, queue_id), offset) in due {
            let session = self
                .sessions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&endpoint)
                .cloned();
            let Some(session) = session.filter(|s| !s.conn.is_closed()) else {
                continue; // Committed after the resubscribe.
            };
            if self.client.stalled.is_isolated(&endpoint) {
                continue; // Nobody waits on a stalled broker; committed after it recovers.
            }
            let request = CommitOffset {
                subscription_id: session.subscription_id,
                queue_id,
                offset,
            };
            let body = match control::encode(&request) {
                Ok(body) => body,
                Err(e) => return Err(ClientError::control(&endpoint, e)),
            };
            let result = if wait {
                session
                    .conn
                    .call(
                        Command::CommitOffset,
                        &[],
                        &body,
                        self.client.config.request_timeout,
                    )
                    .map(drop)
            } else {
                let endpoint = endpoint.clone();
                session
                    .conn
                    .call_with(
                        Command::CommitOffset,
                        &[],
                        &body,
                        Box::new(move |r| {
                            if let Err(e) = r {
                                log::debug!("{endpoint}: commit of queue {queue_id} failed: {e}");
                            }
                        }),
                    )
                    .map(drop)
            };
            match result {
                Ok(()) => {
                    let mut positions = self
                        .positions
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    if let Some(p) = positions.get_mut(&(endpoint, queue_id)) {
                        p.committed = Some(p.committed.map_or(offset, |c| c.max(offset)));
                    }
                }
                Err(e) => {
                    log::debug!("commit of queue {queue_id} failed: {e}");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Handles one pushed batch (on a reader thread): skips what was already received, hands
    /// the rest on (to the inline handler, else to the delivery channel), and counts the
    /// skipped records as consumed.
    fn on_push(
        &self,
        conn: &Arc<Connection>,
        endpoint: &str,
        subscription_id: u64,
        frame: &FrameBytes,
    ) {
        let address = match BatchAddress::decode(&frame.ext) {
            Ok(address) => address,
            Err(e) => {
                log::warn!("{endpoint}: push with a bad address dropped: {e}");
                return;
            }
        };
        let batch = match BatchView::parse(&frame.body, BATCH_LEN_MAX) {
            Ok(batch) => batch,
            Err(e) => {
                log::warn!("{endpoint}: push with a corrupt batch dropped: {e}");
                return;
            }
        };
        let mut fresh = Vec::with_capacity(batch.record_count() as usize);
        let mut skipped = 0u32;
        {
            let mut positions = self
                .positions
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let position = positions
                .entry((endpoint.to_owned(), address.queue_id))
                .or_default();
            for record in batch.records() {
                if record.offset() < position.expected {
                    skipped += 1;
                    continue;
                }
                position.expected = record.offset() + 1;
                fresh.push(ReceivedMessage::from_record(
                    &record,
                    address.topic,
                    address.queue_id,
                    endpoint,
                ));
            }
        }
        if skipped > 0 {
            log::debug!(
                "{endpoint}: skipped {skipped} already received records of queue {}",
                address.queue_id
            );
            self.consumed(endpoint, subscription_id, skipped);
        }
        if let Some(handler) = &self.inline {
            let mut handler = handler.lock().unwrap_or_else(PoisonError::into_inner);
            for message in fresh {
                // Checked under the lock that close takes: nothing is handled after it.
                if self.closed.load(Ordering::Acquire) {
                    return;
                }
                let delivery = Delivery {
                    message,
                    conn: conn.clone(),
                    subscription_id,
                };
                handler(&delivery);
                self.processed(&delivery);
            }
            return;
        }
        let deliveries = self
            .deliveries
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(deliveries) = deliveries.as_ref() {
            for message in fresh {
                let _ = deliveries.send(Delivery {
                    message,
                    conn: conn.clone(),
                    subscription_id,
                });
            }
        }
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

/// The supervisor: resubscribes after reconnects, follows route changes, auto-commits.
fn supervise(consumer: &Weak<ConsumerInner>) {
    let tick = Duration::from_millis(100);
    let mut last_commit = Instant::now();
    loop {
        let Some(inner) = consumer.upgrade() else {
            return;
        };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = inner.ensure_sessions(false) {
            log::debug!("{}: {e}", inner.options.topic);
        }
        if inner.options.commit == CommitMode::Auto
            && last_commit.elapsed() >= inner.client.config.auto_commit_interval
        {
            last_commit = Instant::now();
            if let Err(e) = inner.commit(false) {
                log::debug!("auto commit: {e}");
            }
        }
        let (lock, changed) = &inner.wake;
        let woken = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let mut woken = if *woken {
            woken
        } else {
            changed
                .wait_timeout(woken, tick)
                .unwrap_or_else(PoisonError::into_inner)
                .0
        };
        *woken = false;
    }
}

/// Routes one subscription's pushes to its consumer.
struct SubscriptionSink {
    consumer: Weak<ConsumerInner>,
    endpoint: String,
    subscription_id: u64,
}

impl PushSink for SubscriptionSink {
    fn on_push(&self, conn: &Arc<Connection>, frame: FrameBytes) {
        if let Some(consumer) = self.consumer.upgrade() {
            consumer.on_push(conn, &self.endpoint, self.subscription_id, &frame);
        }
    }

    fn on_topic_changed(&self) {
        if let Some(consumer) = self.consumer.upgrade() {
            // Cheap here on the reader thread; the supervisor refetches the route and
            // subscribes where queues appeared.
            consumer.client.routes.invalidate(&consumer.options.topic);
            consumer.wake_supervisor();
        }
    }
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
