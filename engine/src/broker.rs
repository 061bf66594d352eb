//! The public entry: start a broker's shards, learn their ports, shut them down.

use std::sync::{Arc, OnceLock, mpsc};
use std::time::Duration;

use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::rt::{Executor, ExecutorSpec, StopSignal};
use crate::shard::{self, MESH_CHANNEL_CAPACITY, ShardStart};

/// A running broker: one pinned executor thread per shard.
pub struct Broker {
    broker_id: String,
    ports: Vec<u16>,
    spin_before_park: Duration,
    stop: Arc<StopSignal>,
    handles: Vec<Executor<Result<(), BrokerError>>>,
    /// The `/metrics` endpoint, when one is configured and could listen.
    metrics: Option<telemetry::Endpoint>,
}

impl Broker {
    /// Starts every shard on its own thread; returns once every shard listens (or the first
    /// error, after stopping the shards that did start).
    pub fn start(mut config: BrokerConfig) -> Result<Broker, BrokerError> {
        config.validate()?;
        // The runtime's io_uring openat of a directory fails with EBADF on a relative path, so
        // every path the shards derive must be absolute.
        config.data_dir =
            std::path::absolute(&config.data_dir).map_err(|source| BrokerError::Io {
                op: "resolving the data directory",
                path: config.data_dir.clone(),
                source,
            })?;
        // Built once, before any shard starts, so a bad certificate or key stops the start
        // with the file named; every shard shares the one configuration.
        let tls = match &config.tls {
            Some(settings) => {
                Some(tls::server_config(settings).map_err(|source| BrokerError::Tls { source })?)
            }
            None => None,
        };
        crate::topic::empty_trash(&config.data_dir);
        let security = Arc::new(open_security(&config)?);
        let producer_ids = Arc::new(crate::producers::ids::ProducerIds::new(
            &config.cluster,
            &config.broker_id,
            &config.data_dir,
        ));
        let count = config.shard_count();
        let io_memory = io_memory_per_shard(&config, count);
        let config = Arc::new(config);
        let stop = StopSignal::new();
        let metrics_door = Arc::new(crate::metrics::Door::default());
        let ports_cell = Arc::new(OnceLock::new());
        let mesh = crate::rt::mesh(count, MESH_CHANNEL_CAPACITY);
        let (ready_tx, ready_rx) = mpsc::channel();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let spin_before_park = config.spin_before_park();
        let mut handles = Vec::with_capacity(count);
        for id in 0..count {
            let start = ShardStart {
                id,
                count,
                config: config.clone(),
                mesh: mesh.clone(),
                stop: stop.clone(),
                ports: ports_cell.clone(),
                ready: ready_tx.clone(),
                security: security.clone(),
                producer_ids: producer_ids.clone(),
                tls: tls.clone(),
                metrics_door: metrics_door.clone(),
            };
            let spec = ExecutorSpec {
                name: &format!("defibus-shard-{id}"),
                cpu: id % cpus,
                io_memory_bytes: io_memory,
                spin_before_park,
            };
            let spawned = crate::rt::start_executor(&spec, move || shard::run(start));
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    stop.raise();
                    join_all(handles);
                    return Err(BrokerError::Shard {
                        shard: id,
                        reason: format!("cannot start its executor: {e}"),
                    });
                }
            }
        }
        drop(ready_tx);
        let mut ports = vec![0u16; count];
        let mut first_error = None;
        for _ in 0..count {
            match ready_rx.recv() {
                Ok((id, Ok(port))) => ports[id] = port,
                Ok((_, Err(e))) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert(BrokerError::Shard {
                        shard: 0,
                        reason: "a shard thread ended before listening".into(),
                    });
                    break;
                }
            }
        }
        if let Some(error) = first_error {
            stop.raise();
            join_all(handles);
            return Err(error);
        }
        let _ = ports_cell.set(ports.clone());
        log::info!(
            "broker {} ({} shards) listening on ports {ports:?}",
            config.broker_id,
            count
        );
        let metrics = start_metrics(&config.metrics_address, metrics_door);
        Ok(Broker {
            broker_id: config.broker_id.clone(),
            ports,
            spin_before_park,
            stop,
            handles,
            metrics,
        })
    }

    /// The port each shard listens on, by shard id.
    pub fn shard_ports(&self) -> Vec<u16> {
        self.ports.clone()
    }

    /// How long its executors spin before parking (the configured or the machine's default).
    pub fn spin_before_park(&self) -> Duration {
        self.spin_before_park
    }

    /// Where the `/metrics` endpoint listens; `None` when none is served.
    pub fn metrics_address(&self) -> Option<std::net::SocketAddr> {
        self.metrics.as_ref().map(telemetry::Endpoint::local_addr)
    }

    /// The broker's id.
    pub fn broker_id(&self) -> &str {
        &self.broker_id
    }

    /// Stops accepting, closes connections, unregisters from the nameservers, flushes and
    /// closes every log, and joins the shard threads.
    pub fn shutdown(mut self) -> Result<(), BrokerError> {
        // Scrapes end first: shard 0 stops answering them once it closes.
        drop(self.metrics.take());
        self.stop.raise();
        let mut first_error = None;
        for (id, handle) in std::mem::take(&mut self.handles).into_iter().enumerate() {
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    first_error.get_or_insert(BrokerError::Shard {
                        shard: id,
                        reason: format!("thread failed: {e}"),
                    });
                }
            }
        }
        log::info!("broker {} stopped", self.broker_id);
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // Not shut down explicitly (a panicking test): still stop the threads cleanly.
        self.stop.raise();
        join_all(std::mem::take(&mut self.handles));
    }
}

/// Longest a scrape waits for shard 0 to gather every shard's figures.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts the `/metrics` endpoint on `address` (none when empty). A broker that cannot listen
/// there still carries messages: the failure is logged, not returned.
fn start_metrics(address: &str, door: Arc<crate::metrics::Door>) -> Option<telemetry::Endpoint> {
    let render = Box::new(move || door.ask(SCRAPE_TIMEOUT));
    telemetry::serve_or_warn(telemetry::bind_or_warn(address), render)
}

fn join_all(handles: Vec<Executor<Result<(), BrokerError>>>) {
    for handle in handles {
        let _ = handle.join();
    }
}

/// Raises RLIMIT_MEMLOCK so every shard can register its IO memory with io_uring, and says
/// which path is in use. When the limit cannot be raised (not root), shrinks each shard's IO
/// memory to fit what is allowed, since the runtime would otherwise only warn and run slower.
fn io_memory_per_shard(config: &BrokerConfig, shards: usize) -> usize {
    // Room for the rings themselves besides the buffers.
    const RING_SLACK_BYTES: u64 = 1 << 20;
    let wanted = config.io_memory_bytes as u64 * shards as u64 + RING_SLACK_BYTES;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    #[allow(unsafe_code)]
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } == 0;
    if got && (limit.rlim_cur == libc::RLIM_INFINITY || limit.rlim_cur >= wanted) {
        log::info!(
            "IO memory: registered buffers, {} bytes per shard (memlock limit suffices)",
            config.io_memory_bytes
        );
        return config.io_memory_bytes;
    }
    let raised = libc::rlimit {
        rlim_cur: wanted.max(limit.rlim_cur),
        rlim_max: wanted.max(limit.rlim_max),
    };
    #[allow(unsafe_code)]
    // SAFETY: setrlimit only reads the struct we pass.
    let set = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) } == 0;
    if set {
        log::info!(
            "IO memory: raised RLIMIT_MEMLOCK to {wanted} bytes; registered buffers, {} bytes per shard",
            config.io_memory_bytes
        );
        return config.io_memory_bytes;
    }
    let allowed = limit.rlim_cur.saturating_sub(RING_SLACK_BYTES) / shards.max(1) as u64;
    let fitted = (allowed as usize).max(64 << 10);
    log::warn!(
        "IO memory: cannot raise RLIMIT_MEMLOCK from {} to {wanted} bytes ({}); registered buffers shrunk to {fitted} bytes per shard",
        limit.rlim_cur,
        std::io::Error::last_os_error()
    );
    fitted
}

/// The policy and the broker's own token, from `[security]`.
fn open_security(config: &BrokerConfig) -> Result<crate::security::Security, BrokerError> {
    let settings = &config.security;
    let error = |e: auth::settings::SettingsError| BrokerError::Config {
        reason: e.to_string(),
    };
    let authority = settings
        .authority(&format!("broker {}", config.broker_id))
        .map_err(error)?;
    let token = settings.token().map_err(error)?;
    if authority.is_enabled() {
        log::info!(
            "security on: connections must authenticate; the policy comes from the \
             nameservers every {} ms",
            settings.policy_refresh_ms
        );
    }
    Ok(crate::security::Security::new(authority, token))
}
