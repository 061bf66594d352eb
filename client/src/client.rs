//! The shared core every producer, consumer, requester and admin of one client uses: its
//! identity, connection pool, route cache, pending replies and background threads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use protocol::control::ClientHeartbeat;
use protocol::names::ClientId;

use crate::config::{ClientConfig, default_client_id};
use crate::error::{ClientError, Result};
use crate::isolation::{Cause, QueueIsolation, StalledBrokers};
use crate::locator::{ServiceCache, ServiceLocator};
use crate::net::{Handshake, PeerKind, Pool, PoolConfig, TlsConnector};
use crate::route::{CachedRoute, QueueTarget, RouteCache};
use crate::rr::replies::ReplyRegistry;
use crate::timer::Timer;

/// Clients created in this process, numbering default client ids.
static INSTANCES: AtomicU64 = AtomicU64::new(0);

/// Bound on deferred tasks (send retries) queued for the task thread.
const TASKS_MAX: usize = 64 * 1024;

/// A handle to a DeFiBus client: cheap to clone, shared by the producers, consumers,
/// requesters, responders and admins built from it. The connections and background threads
/// end when the last handle and the last role built from it are dropped, or at
/// [`Client::close`].
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<ClientInner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("client_id", &self.inner.client_id)
            .finish()
    }
}

/// Work deferred to the client's task thread.
pub(crate) type Task = Box<dyn FnOnce() + Send>;

pub(crate) struct ClientInner {
    pub(crate) config: ClientConfig,
    pub(crate) client_id: ClientId,
    pub(crate) pool: Pool,
    pub(crate) routes: RouteCache,
    pub(crate) services: ServiceCache,
    pub(crate) isolation: QueueIsolation,
    pub(crate) stalled: StalledBrokers,
    pub(crate) replies: Arc<ReplyRegistry>,
    pub(crate) timer: Timer,
    /// The idempotent producer's id and per-queue numbering.
    pub(crate) sequencer: crate::idempotence::Sequencer,
    tasks: Mutex<Option<SyncSender<Task>>>,
    closed: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Dropped to stop the maintenance and probe threads.
    stop: Mutex<Option<(SyncSender<()>, SyncSender<()>)>>,
}

impl Client {
    /// Creates a client: starts its timer, task, maintenance and probe threads. Connections
    /// are opened on first use.
    pub fn new(config: ClientConfig) -> Result<Self> {
        let instance = INSTANCES.fetch_add(1, Ordering::Relaxed);
        let client_id = config
            .client_id
            .clone()
            .unwrap_or_else(|| default_client_id(config.area, instance));
        let replies = Arc::new(ReplyRegistry::default());
        let io = |source| ClientError::Io {
            endpoint: "(local)".into(),
            source,
        };
        let tls = config.tls.as_ref().map(TlsConnector::new).transpose()?;
        let pool = Pool::new(PoolConfig {
            handshake: Handshake {
                heartbeat: ClientHeartbeat {
                    client_id: client_id.to_string(),
                    area: config.area.to_string(),
                },
            },
            replies: replies.clone(),
            connect_timeout: config.connect_timeout,
            backoff_min: config.reconnect_backoff_min,
            backoff_max: config.reconnect_backoff_max,
            token: config.token.clone(),
            tls,
        });
        let (task_tx, task_rx) = mpsc::sync_channel::<Task>(TASKS_MAX);
        let (stop_tx, stop_rx) = mpsc::sync_channel::<()>(1);
        let (probe_stop_tx, probe_stop_rx) = mpsc::sync_channel::<()>(1);
        let inner = Arc::new(ClientInner {
            routes: RouteCache::new(
                config.nameservers.clone(),
                config.request_timeout,
                config.route_refresh_interval,
            ),
            services: ServiceCache::new(
                config.gsl_endpoints.clone(),
                config.area,
                config.service_refresh_interval,
                config.request_timeout,
            ),
            client_id,
            pool,
            isolation: QueueIsolation::default(),
            stalled: StalledBrokers::default(),
            replies,
            timer: Timer::start("defibus-timer").map_err(io)?,
            sequencer: Default::default(),
            tasks: Mutex::new(Some(task_tx)),
            closed: AtomicBool::new(false),
            threads: Mutex::default(),
            stop: Mutex::new(Some((stop_tx, probe_stop_tx))),
            config,
        });
        let tasks = std::thread::Builder::new()
            .name("defibus-tasks".into())
            .spawn(move || {
                for task in task_rx {
                    task();
                }
            })
            .map_err(io)?;
        let weak = Arc::downgrade(&inner);
        let maintenance = std::thread::Builder::new()
            .name("defibus-maintain".into())
            .spawn(move || maintain(&weak, &stop_rx))
            .map_err(io)?;
        let weak = Arc::downgrade(&inner);
        let prober = std::thread::Builder::new()
            .name("defibus-probe".into())
            .spawn(move || probe(&weak, &probe_stop_rx))
            .map_err(io)?;
        inner
            .threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend([tasks, maintenance, prober]);
        log::info!("client {} started", inner.client_id);
        Ok(Self { inner })
    }

    /// The id brokers know this client by.
    pub fn client_id(&self) -> &str {
        self.inner.client_id.as_str()
    }

    /// Requests still waiting for their replies.
    pub fn pending_replies(&self) -> usize {
        self.inner.replies.len()
    }

    /// The configuration in force.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Locates services by id through GSL ([`ClientConfig::with_gsl`]).
    pub fn locator(&self) -> ServiceLocator {
        ServiceLocator::new(self)
    }

    /// The queues this client's producers and requesters avoid now, after sends to them
    /// failed (fault isolation).
    pub fn isolated_queues(&self) -> Vec<QueueTarget> {
        self.inner.isolation.snapshot()
    }

    /// The broker shard endpoints this client's consumers avoid now, after the broker
    /// stalled.
    pub fn stalled_endpoints(&self) -> Vec<String> {
        self.inner.stalled.snapshot()
    }

    /// The TLS cipher suite of a live broker connection (e.g. `TLS13_AES_256_GCM_SHA384`):
    /// `None` without TLS, or before the first broker connection. Every connection shares
    /// the client's settings, so one speaks for all (benchmarks report it).
    pub fn tls_cipher_suite(&self) -> Option<String> {
        (self.inner.pool.connections().iter()).find_map(|conn| conn.tls_cipher_suite())
    }

    /// Closes every connection and stops the background threads; calls in flight fail with
    /// [`ClientError::Disconnected`] or [`ClientError::Closed`]. Roles built from this client
    /// stop working.
    pub fn close(&self) {
        self.inner.close();
    }
}

impl ClientInner {
    /// The route of `topic`, from the cache or the nameservers.
    pub(crate) fn route(&self, topic: &str) -> Result<Arc<CachedRoute>> {
        if self.is_closed() {
            return Err(ClientError::Closed);
        }
        self.routes.get(&self.pool, topic)
    }

    /// The connection to a broker shard.
    pub(crate) fn broker(&self, endpoint: &str) -> Result<Arc<crate::net::Connection>> {
        if self.is_closed() {
            return Err(ClientError::Closed);
        }
        self.pool.get(endpoint, PeerKind::Broker)
    }

    /// Isolates `target` after a send to it failed with `error`, when the error is one
    /// another queue may not have (see [`Cause::of`]).
    pub(crate) fn isolate_after(&self, target: &QueueTarget, error: &ClientError) {
        if let Some(cause) = Cause::of(error) {
            log::debug!(
                "isolating queue {} of {} ({}) for {:?}: {error}",
                target.queue_id,
                target.broker_id,
                target.endpoint,
                self.config.queue_isolation
            );
            self.isolation
                .isolate(target, cause, self.config.queue_isolation);
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Runs `task` on the client's task thread: work a reader thread must not do itself
    /// (a retry that may connect to another broker).
    pub(crate) fn spawn_task(&self, task: Task) -> Result<()> {
        let tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        let sender = tasks.as_ref().ok_or(ClientError::Closed)?;
        sender.try_send(task).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => {
                ClientError::InvalidArgument("too many retries queued".into())
            }
            mpsc::TrySendError::Disconnected(_) => ClientError::Closed,
        })
    }

    fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        // Dropping the senders wakes and ends the maintenance and probe threads.
        self.stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.pool.close_all();
        self.replies.fail_all();
        self.timer.stop();
        let threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for thread in threads {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
        log::info!("client {} closed", self.client_id);
    }
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        self.close();
    }
}

/// The maintenance loop: heartbeats every interval on every broker connection, closes
/// connections silent for three intervals (marking them silent: the peer stalled), times out
/// requests unanswered for `request_timeout` (so a send stuck on a stalled broker is retried
/// elsewhere within one more interval), refreshes
/// cached routes and service locations.
fn maintain(client: &Weak<ClientInner>, stop: &Receiver<()>) {
    let mut last_refresh = Instant::now();
    while let Some((client, interval)) = tick(client, stop, |c| c.heartbeat_interval) {
        // Nameserver connections carry no heartbeat: only broker ones can be judged silent.
        for conn in client
            .pool
            .connections()
            .iter()
            .filter(|c| c.sends_heartbeats())
        {
            if conn.idle_for() > interval * 3 {
                log::warn!(
                    "{}: nothing received for {:?}; closing",
                    conn.endpoint(),
                    conn.idle_for()
                );
                conn.close_silent();
            } else if let Err(e) = conn.heartbeat() {
                log::debug!("{}: heartbeat not sent: {e}", conn.endpoint());
            }
        }
        for conn in client.pool.connections() {
            let expired = conn.expire_pending(client.config.request_timeout);
            if expired > 0 {
                log::debug!(
                    "{}: {expired} request(s) unanswered after {:?}",
                    conn.endpoint(),
                    client.config.request_timeout
                );
            }
        }
        if last_refresh.elapsed() >= client.config.route_refresh_interval {
            last_refresh = Instant::now();
            for topic in client.routes.topics() {
                if let Err(e) = client.routes.refresh(&client.pool, &topic) {
                    log::debug!("route refresh of {topic} failed: {e}");
                }
            }
        }
        // Each resolution refreshes itself once older than its interval.
        client.services.refresh_stale(&client.pool);
    }
}

/// The probe loop: every `isolation_probe_interval`, pings (with a heartbeat) each shard
/// endpoint that queues were isolated from as unreachable, and lifts those isolations when
/// it answers. A thread of its own, so that probing a stalled shard (which holds a connect
/// or a ping until its timeout) never delays heartbeats.
fn probe(client: &Weak<ClientInner>, stop: &Receiver<()>) {
    while let Some((client, _)) = tick(client, stop, |c| c.isolation_probe_interval) {
        for endpoint in client.isolation.unreachable_endpoints() {
            if client.is_closed() {
                return;
            }
            // While the pool backs off from a failed endpoint this fails at once, so a dead
            // shard is dialled at most once per backoff step.
            let answered = client
                .pool
                .get(&endpoint, PeerKind::Broker)
                .and_then(|conn| conn.ping(client.config.request_timeout));
            match answered {
                Ok(()) => {
                    let lifted = client.isolation.lift_endpoint(&endpoint);
                    log::info!(
                        "{endpoint} answers again: lifted the isolation of {lifted} queue(s)"
                    );
                }
                Err(e) => log::debug!("probe of isolated {endpoint}: {e}"),
            }
        }
    }
}

/// One period of a background loop: waits the period `interval_of` the client's config (read
/// anew each time) and hands back the client with the period, or `None` once the loop must
/// end (stopped, or the client dropped). Holds no strong reference while it waits, so a
/// dropped client ends its loops.
fn tick(
    client: &Weak<ClientInner>,
    stop: &Receiver<()>,
    interval_of: impl Fn(&ClientConfig) -> Duration,
) -> Option<(Arc<ClientInner>, Duration)> {
    let interval = interval_of(&client.upgrade()?.config);
    match stop.recv_timeout(interval) {
        Err(RecvTimeoutError::Timeout) => Some((client.upgrade()?, interval)),
        _ => None,
    }
}
