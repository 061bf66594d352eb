//! One shard: an executor pinned to a core, owning its queues, connections, groups,
//! offsets and reply queue. Shards share nothing mutable; they talk over the channel mesh
//! ([`crate::mesh`]).
//!
//! A shard's life: join the mesh → load the topic registry and open the queues it owns, its
//! offset journal and its reply queue → listen → report its port → serve until the broker
//! raises its stop signal → close, then drain, each step waiting on an event, never on a
//! timer: stop accepting and the timed loops, unregister, shut every connection and end every
//! subscription; wait until the last task the shard started has let go ([`Tasks::idle`]);
//! close the mesh ([`crate::mesh::close`]); flush and close every log.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

mod topics;

pub(crate) use topics::{Topics, close_queue, open_topic, redirects_of};

use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::group::Consumption;
use crate::mesh::{MeshMsg, Peers};
use crate::net::clients::Clients;
use crate::offsets::Offsets;
use crate::register::Registration;
use crate::rr::ReplyLog;
use crate::rt::{Mesh, MeshSenders, StopSignal, Tasks, TcpListener};
use crate::topic::Registry;

/// Frames a mesh channel between two shards holds before senders wait.
pub(crate) const MESH_CHANNEL_CAPACITY: usize = 1024;
/// Longest wait at close for the shard's tasks to end. They end on their own once their
/// connections are shut; the bound only keeps a stuck task from holding the broker up.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Counters reported by `Stats`.
#[derive(Default)]
pub(crate) struct Counters {
    pub bad_frames: Cell<u64>,
    pub replies: Cell<u64>,
    /// Nacked messages appended to a retry topic by this shard, by backoff level (§13.2).
    pub retries_by_level: std::cell::RefCell<Vec<u64>>,
    /// Nacked messages appended to a dead-letter topic by this shard.
    pub dead_letters: Cell<u64>,
}

/// Everything one shard owns. Lives in its executor as `Rc<Shard>`.
pub(crate) struct Shard {
    pub id: usize,
    pub count: usize,
    pub config: Arc<BrokerConfig>,
    /// Topics and the queues this shard owns.
    pub topics: Topics,
    /// Shard 0: the durable topic registry, the source of every topic change (empty
    /// elsewhere).
    pub registry: Registry,
    /// Shard 0: its rounds of registration with the nameservers.
    pub registration: Registration,
    /// Connections and where every client is connected.
    pub clients: Clients,
    /// Consumer groups, subscriptions and committed offsets.
    pub consumption: Consumption,
    /// What was pushed lately, per group and queue, for traces.
    pub pushes: crate::trace::Pushes,
    /// The reply queue (request-reply's audit trail).
    pub replies: ReplyLog,
    /// The mesh: channels to the other shards and the calls outstanding on them.
    pub peers: Peers,
    pub counters: Counters,
    /// Requests stored here that wait for their replies (request-reply metrics).
    pub pending_requests: crate::metrics::PendingRequests,
    /// Memory of frames still arriving, shared by the shard's connections.
    pub frame_budget: Rc<crate::net::guard::FrameBudget>,
    /// Rate-limited log of connections closed for bad input.
    pub closing_log: crate::net::guard::ClosingLog,
    /// The policy connections are checked against, and the broker's own token.
    pub security: Arc<crate::security::Security>,
    /// The broker's producer id source (ARCHITECTURE §13.1), shared by its shards.
    pub producer_ids: Arc<crate::producers::ids::ProducerIds>,
    /// Free space of the data directory: produces are refused below it.
    pub watermark: crate::disk::Watermark,
    /// Connections that answer transaction check-backs, per producer group.
    pub held_checkers: crate::held::checks::Checkers,
    /// Every task that holds the shard (connections, requests, pushes, mesh work, timers),
    /// except the mesh receivers, so close can wait until the last one ends.
    pub tasks: Tasks,
    /// Set once the shard began to close: it accepts and starts nothing new.
    stopping: Cell<bool>,
    /// Every shard's port, set by the broker once all listen.
    ports: Arc<OnceLock<Vec<u16>>>,
    next_id: Cell<u64>,
}

impl Shard {
    /// A fresh id for a connection, subscription or mesh call, unique within this shard
    /// (subscription ids carry the shard id in their top byte, so they are broker-unique).
    pub fn next_id(&self) -> u64 {
        let id = self.next_id.get() + 1;
        self.next_id.set(id);
        ((self.id as u64) << 56) | id
    }

    /// Whether the shard began to close.
    pub fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    /// Every shard's listening port, by shard id; empty until all shards listen.
    pub fn ports(&self) -> Vec<u16> {
        self.ports.get().cloned().unwrap_or_default()
    }

    /// Sends `make()` to every other shard, one way.
    pub async fn tell_peers(&self, make: impl Fn() -> MeshMsg) {
        self.peers.tell_all(make).await;
    }

    /// Sends `msg` to shard `to` over the mesh; false if that shard is gone (shutting down).
    pub async fn send_to(&self, to: usize, msg: MeshMsg) -> bool {
        self.peers.send_to(to, msg).await
    }
}

/// What the broker hands each shard thread.
pub(crate) struct ShardStart {
    pub id: usize,
    pub count: usize,
    pub config: Arc<BrokerConfig>,
    pub mesh: Mesh<MeshMsg>,
    pub stop: Arc<StopSignal>,
    pub ports: Arc<OnceLock<Vec<u16>>>,
    pub ready: mpsc::Sender<(usize, Result<u16, BrokerError>)>,
    pub security: Arc<crate::security::Security>,
    /// The broker's producer id source, shared by its shards.
    pub producer_ids: Arc<crate::producers::ids::ProducerIds>,
    /// The listener's TLS configuration, when `[tls]` is set.
    pub tls: Option<Arc<tls::rustls::ServerConfig>>,
    /// Where the metrics endpoint leaves scrapes; shard 0 answers them.
    pub metrics_door: Arc<crate::metrics::Door>,
}

/// The body of a shard's executor: runs until the stop flag is set.
pub(crate) async fn run(start: ShardStart) -> Result<(), BrokerError> {
    let ShardStart {
        id,
        count,
        config,
        mesh,
        stop,
        ports,
        ready,
        security,
        producer_ids,
        tls,
        metrics_door,
    } = start;
    let shard_error = |reason: String| BrokerError::Shard { shard: id, reason };
    // Before any queue opens: the shard's logs share one tail-cache budget.
    crate::log::set_shard_budget(config.storage.tail_cache_shard_bytes);
    let (senders, receivers) = crate::rt::join_mesh(mesh)
        .await
        .map_err(|e| shard_error(format!("cannot join the shard mesh: {e}")))?;
    let opened = open(
        id,
        count,
        config.clone(),
        senders,
        ports,
        security,
        producer_ids,
    )
    .await;
    let shard = match opened {
        Ok(shard) => Rc::new(shard),
        Err(e) => {
            let reason = e.to_string();
            let _ = ready.send((id, Err(e)));
            return Err(shard_error(reason));
        }
    };
    let port = if config.port_base == 0 {
        0
    } else {
        config.port_base + id as u16
    };
    let address = format!("{}:{port}", config.listen_address);
    let listener = match TcpListener::bind(&address) {
        Ok(listener) => listener,
        Err(e) => {
            let error = BrokerError::Io {
                op: "listen on",
                path: address.into(),
                source: e.into(),
            };
            let reason = error.to_string();
            let _ = ready.send((id, Err(error)));
            close(shard).await;
            return Err(shard_error(reason));
        }
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(port);
    log::info!(
        "shard {id}/{count} listening on {}:{port}",
        config.listen_address
    );

    let mesh_receivers = crate::mesh::spawn_receivers(&shard, receivers);
    // Held messages waiting on disk are recovered before the shard serves, so a restarted
    // broker answers for them (and fires them) at once.
    crate::held::start_all(&shard).await;
    let tasks = &shard.tasks;
    let acceptor = tls.map(crate::rt::TlsAcceptor::from);
    let accept = tasks.spawn(crate::net::accept_loop(shard.clone(), listener, acceptor));
    let sweeper = tasks.spawn(crate::net::sweep_loop(shard.clone()));
    let request_sweeper = tasks.spawn(crate::metrics::requests::sweep_loop(shard.clone()));
    let retention = tasks.spawn(crate::retention::run(shard.clone()));
    let scrub = tasks.spawn(crate::scrub::run(shard.clone()));
    let register = (id == 0).then(|| tasks.spawn(crate::register::run(shard.clone())));
    let metrics =
        (id == 0).then(|| tasks.spawn(crate::metrics::serve(shard.clone(), metrics_door.clone())));
    let dynamic = (id == 0).then(|| tasks.spawn(crate::dynamic::run(shard.clone())));
    let policy = (id == 0 && shard.security.is_enabled())
        .then(|| tasks.spawn(crate::security::refresh(shard.clone())));
    let heartbeats: Vec<_> = if id == 0 && shard.config.controller_heartbeat_interval_ms > 0 {
        (shard.config.nameservers.iter())
            .map(|address| tasks.spawn(crate::register::heartbeat(shard.clone(), address.clone())))
            .collect()
    } else {
        Vec::new()
    };
    let _ = ready.send((id, Ok(port)));

    stop.wait().await;
    log::info!("shard {id}: shutting down");
    // Close: nothing new starts.
    shard.stopping.set(true);
    drop(accept);
    drop(sweeper);
    drop(request_sweeper);
    drop(retention);
    drop(scrub);
    drop(dynamic);
    drop(metrics);
    metrics_door.close();
    drop(policy);
    drop(heartbeats);
    if let Some(register) = register {
        drop(register);
        shard.registration.stop();
        crate::register::unregister(&shard).await;
    }
    crate::net::close_all(&shard);
    crate::group::close_all(&shard);
    crate::held::stop_all(&shard);
    // Drain: what was started ends, then the mesh.
    drain_tasks(&shard, "closing").await;
    log::debug!("shard {id}: its tasks ended; closing the mesh");
    crate::mesh::close(&shard, mesh_receivers).await;
    log::debug!("shard {id}: mesh closed; closing the logs");
    close(shard).await;
    log::debug!("shard {id}: closed");
    Ok(())
}

/// Waits until the shard's last task has ended (at most [`CLOSE_TIMEOUT`]); `step` names the
/// close step in the warning when some have not.
pub(crate) async fn drain_tasks(shard: &Shard, step: &str) {
    if crate::rt::timeout(CLOSE_TIMEOUT, shard.tasks.idle())
        .await
        .is_none()
    {
        log::warn!(
            "shard {}: {} tasks still running after {CLOSE_TIMEOUT:?} of {step}",
            shard.id,
            shard.tasks.live()
        );
    }
}

/// Builds the shard: topics from the registry, owned queues, offsets and replies.
async fn open(
    id: usize,
    count: usize,
    config: Arc<BrokerConfig>,
    mesh: MeshSenders<MeshMsg>,
    ports: Arc<OnceLock<Vec<u16>>>,
    security: Arc<crate::security::Security>,
    producer_ids: Arc<crate::producers::ids::ProducerIds>,
) -> Result<Shard, BrokerError> {
    let log_error = |what: String| {
        move |source| BrokerError::Log {
            shard: id,
            what,
            source,
        }
    };
    std::fs::create_dir_all(&config.data_dir).map_err(|source| BrokerError::Io {
        op: "create data directory",
        path: config.data_dir.clone(),
        source,
    })?;
    let registry = crate::topic::load_registry(&config.data_dir)?;
    let offsets_dir = config.data_dir.join("offsets").join(format!("shard-{id}"));
    let offsets = Offsets::open(&offsets_dir, config.storage.reopen_after_poison_ms)
        .await
        .map_err(log_error(format!(
            "offset journal {}",
            offsets_dir.display()
        )))?;
    let replies_dir = config.data_dir.join("replies").join(format!("shard-{id}"));
    let replies = ReplyLog::open(&config, &replies_dir)
        .await
        .map_err(log_error(format!("reply queue {}", replies_dir.display())))?;
    let topics = Topics::default();
    for topic in registry.values() {
        let entry = open_topic(&config, id, count, topic, None)
            .await
            .map_err(log_error(format!("topic {}", topic.topic)))?;
        topics.insert(entry);
    }
    log::info!(
        "shard {id}: {} topics, {} owned queues",
        topics.len(),
        topics.queues().len()
    );
    let registry = Registry::new(
        &config.data_dir,
        if id == 0 { registry } else { BTreeMap::new() },
        id == 0,
    );
    let watermark = crate::disk::Watermark::new(&config.data_dir, config.storage.min_free_percent);
    let frame_budget =
        crate::net::guard::FrameBudget::new(config.limits.partial_frame_bytes_shard_max);
    let pushes = crate::trace::Pushes::new(config.trace.pushes_remembered, crate::log::now_ms());
    Ok(Shard {
        id,
        count,
        config,
        topics,
        registry,
        registration: Registration::default(),
        clients: Clients::default(),
        consumption: Consumption::new(offsets),
        pushes,
        replies,
        peers: Peers::new(id, count, mesh),
        counters: Counters::default(),
        pending_requests: Default::default(),
        frame_budget,
        closing_log: Default::default(),
        security,
        producer_ids,
        watermark,
        held_checkers: Default::default(),
        tasks: Tasks::default(),
        stopping: Cell::new(false),
        ports,
        next_id: Cell::new(0),
    })
}

/// Flushes and closes every log of the shard.
async fn close(shard: Rc<Shard>) {
    let id = shard.id;
    for queue in shard
        .topics
        .take_all()
        .into_iter()
        .flat_map(|t| t.queues)
        .flatten()
    {
        close_queue(id, queue).await;
    }
    let Ok(shard) = Rc::try_unwrap(shard) else {
        log::warn!(
            "shard {id}: tasks still hold the shard at close; offsets and replies are flushed by their drop"
        );
        return;
    };
    if let Err(e) = shard.consumption.into_offsets().close().await {
        log::error!("shard {id}: closing the offset journal: {e}");
    }
    if let Err(e) = shard.replies.close().await {
        log::error!("shard {id}: closing the reply queue: {e}");
    }
}
