//! What the workloads run against: an embedded nameserver + broker started here (the default)
//! or a running cluster reached through its nameserver (`--target`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use client::{Admin, Client, ClientConfig, TopicConfig, TopicRoute};
use protocol::control::{Acks, QueueAssignment};

use crate::cli::{Flush, GlobalArgs};

/// How often the embedded broker registers, ms: short, so a new topic is routed at once.
const EMBEDDED_REGISTER_INTERVAL_MS: u64 = 200;
/// How long a new broker or topic may take to appear in the nameserver's answers.
const ROUTE_WAIT: Duration = Duration::from_secs(20);
/// Unconsumed messages per queue before produces would be refused: far above any run, so
/// the benchmark measures the data path and never the circuit breaker.
const BENCH_MAX_QUEUE_DEPTH: u64 = 1 << 40;
/// Connections the embedded nameserver and each embedded broker shard accept: room for the
/// scale sweep's largest default step (1,000 producer clients, each connected to the
/// nameserver and to every shard) and everything else the run keeps open.
pub const EMBEDDED_CONNECTIONS_MAX: usize = 16_384;
/// Open files the process asks for: the scale sweep holds a socket per client connection on
/// both ends, and each queue's segment, index and lock files, in this one process.
const OPEN_FILES_WANTED: u64 = 1 << 17;
/// Timeout of topic creation and deletion: a topic of a thousand queues creates or removes
/// a thousand directories, each made durable, which takes seconds on a busy disk. (The
/// broker deletes on its executor thread: a 1,000-queue topic holding a gigabyte kept it
/// from answering anything for about ten seconds here.)
const ADMIN_TIMEOUT: Duration = Duration::from_secs(180);
/// Heartbeat period of the admin client: the client closes a connection silent for three
/// periods, which must not happen while a broker is busy deleting.
const ADMIN_HEARTBEAT: Duration = Duration::from_secs(ADMIN_TIMEOUT.as_secs() / 3);
/// The principal of the benchmark clients' certificate in a TLS run.
pub const TLS_CLIENT_PRINCIPAL: &str = "bench";
/// Topics created by this process, numbering their names so that topics created within the
/// same millisecond differ.
static TOPICS_CREATED: AtomicU64 = AtomicU64::new(0);

/// The cluster under test.
pub enum Target {
    Embedded {
        nameserver: nameserver::NameserverHandle,
        /// `--brokers` of them, `bench-broker` alone or `bench-broker-0`, `-1`, ...
        brokers: Vec<engine::Broker>,
        /// Kept so the temporary data directory lives as long as the broker.
        _data: Option<tempfile::TempDir>,
        /// TLS settings of this cluster's clients, when its brokers speak TLS.
        client_tls: Option<Box<tls::TlsSettings>>,
    },
    Remote {
        nameserver: String,
    },
}

impl Target {
    /// Starts the embedded cluster, or checks that `--target` answers.
    pub fn start(args: &GlobalArgs) -> anyhow::Result<Self> {
        Self::start_with(args, None)
    }

    /// An embedded cluster whose brokers speak mutual TLS with `certs` (a `certs dev`
    /// directory with a client certificate for `bench`), its clients too.
    pub fn start_tls(args: &GlobalArgs, certs: &tls::dev::DevCerts) -> anyhow::Result<Self> {
        anyhow::ensure!(
            args.target.is_none(),
            "the TLS comparison starts its own embedded brokers: drop --target"
        );
        Self::start_with(args, Some(certs))
    }

    fn start_with(args: &GlobalArgs, certs: Option<&tls::dev::DevCerts>) -> anyhow::Result<Self> {
        crate::resources::raise_open_files(OPEN_FILES_WANTED);
        if let Some(nameserver) = &args.target {
            let target = Target::Remote {
                nameserver: nameserver.clone(),
            };
            let client = target.client(args, |c| c)?;
            let info = Admin::new(&client)
                .cluster_info()
                .with_context(|| format!("asking {nameserver} for its cluster"))?;
            log::info!("target {nameserver}: {} live brokers", info.brokers.len());
            return Ok(target);
        }
        let nameserver = nameserver::start(nameserver::NameserverConfig {
            listen_addr: "127.0.0.1:0".parse().expect("constant address"),
            max_connections: EMBEDDED_CONNECTIONS_MAX,
            tls: certs.map(tls::dev::DevCerts::server_settings),
            ..nameserver::NameserverConfig::default()
        })
        .context("starting the embedded nameserver")?;
        let (data_dir, data) = match &args.data_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("defibus-bench-")
                    .tempdir()
                    .context("creating a temporary data directory")?;
                (dir.path().to_path_buf(), Some(dir))
            }
        };
        let count = args.brokers.max(1);
        let mut brokers = Vec::with_capacity(count);
        for i in 0..count {
            let (broker_id, dir) = if count == 1 {
                ("bench-broker".to_owned(), data_dir.clone())
            } else {
                (
                    format!("bench-broker-{i}"),
                    data_dir.join(format!("broker-{i}")),
                )
            };
            let broker = engine::Broker::start(engine::BrokerConfig {
                broker_id: broker_id.clone(),
                area: args.area.clone(),
                listen_address: "127.0.0.1".into(),
                port_base: 0,
                shards: args.shards,
                data_dir: dir,
                nameservers: vec![nameserver.local_addr().to_string()],
                register_interval_ms: EMBEDDED_REGISTER_INTERVAL_MS,
                spin_before_park_us: args.spin_before_park_us,
                // The broker connects out (to the nameserver) with the bench's certificate.
                tls: certs.map(|c| c.server_settings_as(TLS_CLIENT_PRINCIPAL)),
                limits: engine::config::Limits {
                    connections_per_shard_max: EMBEDDED_CONNECTIONS_MAX,
                    ..engine::config::Limits::default()
                },
                ..engine::BrokerConfig::default()
            })
            .with_context(|| format!("starting the embedded broker {broker_id}"))?;
            log::info!(
                "embedded broker {broker_id}: shard ports {:?}",
                broker.shard_ports()
            );
            brokers.push(broker);
        }
        log::info!("embedded nameserver {}", nameserver.local_addr());
        let target = Target::Embedded {
            nameserver,
            brokers,
            _data: data,
            client_tls: certs.map(|c| Box::new(c.client_settings(TLS_CLIENT_PRINCIPAL))),
        };
        target.wait_for_brokers(args)?;
        Ok(target)
    }

    /// Waits until the nameserver lists a live broker, so topics can be created on it.
    fn wait_for_brokers(&self, args: &GlobalArgs) -> anyhow::Result<()> {
        let client = self.client(args, |c| c)?;
        let admin = Admin::new(&client);
        let deadline = Instant::now() + ROUTE_WAIT;
        while !admin
            .cluster_info()
            .is_ok_and(|info| !info.brokers.is_empty())
        {
            anyhow::ensure!(
                Instant::now() < deadline,
                "no broker registered with the nameserver after {ROUTE_WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// A description for the report.
    pub fn describe(&self) -> String {
        match self {
            Target::Embedded { brokers, .. } => format!(
                "embedded {}, {} shards each, spin before park {} µs",
                match brokers.len() {
                    1 => "broker".to_owned(),
                    n => format!("cluster of {n} brokers"),
                },
                brokers[0].shard_ports().len(),
                brokers[0].spin_before_park().as_micros()
            ),
            Target::Remote { nameserver } => format!("cluster of nameserver {nameserver}"),
        }
    }

    fn nameserver(&self) -> String {
        match self {
            Target::Embedded { nameserver, .. } => nameserver.local_addr().to_string(),
            Target::Remote { nameserver } => nameserver.clone(),
        }
    }

    /// A new client of the cluster, its config adjusted by `adjust`.
    pub fn client(
        &self,
        args: &GlobalArgs,
        adjust: impl FnOnce(ClientConfig) -> ClientConfig,
    ) -> anyhow::Result<Client> {
        let mut config = ClientConfig::new([self.nameserver()], &args.area)
            .with_context(|| format!("area {:?}", args.area))?;
        if let Target::Embedded {
            client_tls: Some(settings),
            ..
        } = self
        {
            config = config.with_tls((**settings).clone());
        }
        Client::new(adjust(config)).context("starting a client")
    }

    /// Creates a fresh topic for `workload` on every broker and waits until it is routed. It
    /// is deleted, data and all, when the returned handle drops: a full run writes tens of
    /// gigabytes, which the disk need not keep.
    pub fn create_topic<'a>(
        &'a self,
        args: &'a GlobalArgs,
        workload: &str,
        queues: u32,
        flush: Flush,
    ) -> anyhow::Result<BenchTopic<'a>> {
        self.create(args, workload, queues, flush, Placement::EveryBroker)
    }

    /// Creates a fresh topic for `workload` as [`Self::create_topic`] does, placed as asked:
    /// on one broker, or with replicated queues.
    pub fn create<'a>(
        &'a self,
        args: &'a GlobalArgs,
        workload: &str,
        queues: u32,
        flush: Flush,
        placement: Placement,
    ) -> anyhow::Result<BenchTopic<'a>> {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let sequence = TOPICS_CREATED.fetch_add(1, Ordering::Relaxed);
        // Service ids hold letters, digits, '_' and '.' only.
        let service = workload.replace('-', "_");
        let topic = format!("{}-bench.{service}.{unix_ms}.{sequence}", args.area);
        let mut config = TopicConfig::new(&topic.parse().context("benchmark topic name")?);
        config.queue_count = queues;
        config.read_queue_count = queues;
        config.write_queue_count = queues;
        config.flush_mode = flush.into();
        config.max_queue_depth = BENCH_MAX_QUEUE_DEPTH;
        // A broker that was busy (deleting the last step's topics) may have missed a
        // registration and be briefly unknown to the nameserver.
        self.wait_for_brokers(args)?;
        let client = self.admin_client(args)?;
        let admin = Admin::new(&client);
        let expected = match placement {
            Placement::EveryBroker => {
                let brokers = admin
                    .create_topic_on_cluster(None, &config)
                    .with_context(|| format!("creating topic {topic}"))?;
                queues as usize * brokers.len()
            }
            Placement::OneBroker => {
                let brokers = sorted_brokers(&admin)?;
                admin
                    .create_topic(&brokers[0].1, &config)
                    .with_context(|| format!("creating topic {topic} on {}", brokers[0].0))?;
                queues as usize
            }
            Placement::Replicated { replicas, acks } => {
                config.replicas = replicas;
                config.acks = acks;
                replicate(&admin, &config)?;
                queues as usize
            }
        };
        let deadline = Instant::now() + ROUTE_WAIT;
        loop {
            match admin.topic_route(&topic) {
                Ok(route) if route.queues.len() >= expected => {
                    return Ok(BenchTopic {
                        target: self,
                        args,
                        name: topic,
                    });
                }
                _ if Instant::now() >= deadline => {
                    anyhow::bail!("topic {topic} not routed after {ROUTE_WAIT:?}")
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// The route of `topic` as the nameserver has it.
    pub fn route(&self, args: &GlobalArgs, topic: &str) -> anyhow::Result<TopicRoute> {
        let client = self.client(args, |c| c)?;
        let route = Admin::new(&client)
            .topic_route(topic)
            .with_context(|| format!("fetching the route of {topic}"));
        client.close();
        route
    }

    /// A client for topic creation and deletion, patient with a busy broker.
    fn admin_client(&self, args: &GlobalArgs) -> anyhow::Result<Client> {
        self.client(args, |mut c| {
            c.connect_timeout = ADMIN_TIMEOUT;
            c.with_request_timeout(ADMIN_TIMEOUT)
                .with_heartbeat_interval(ADMIN_HEARTBEAT)
        })
    }

    /// Deletes `topic` and its data from every broker.
    fn delete_topic(&self, args: &GlobalArgs, topic: &str) -> anyhow::Result<()> {
        let started = Instant::now();
        let client = self.admin_client(args)?;
        let admin = Admin::new(&client);
        let brokers = admin.cluster_info().context("listing the brokers")?.brokers;
        for broker in brokers {
            let Some(port) = broker.shard_ports.first() else {
                continue;
            };
            let endpoint = format!("{}:{port}", broker.address);
            admin
                .delete_topic(&endpoint, topic)
                .with_context(|| format!("deleting {topic} from {}", broker.broker_id))?;
        }
        client.close();
        log::info!("deleted {topic} in {:?}", started.elapsed());
        Ok(())
    }

    /// Stops the embedded cluster; a remote one is left as it is.
    pub fn shutdown(self) -> anyhow::Result<()> {
        if let Target::Embedded {
            nameserver,
            brokers,
            ..
        } = self
        {
            for broker in brokers {
                broker.shutdown().context("stopping an embedded broker")?;
            }
            nameserver
                .shutdown()
                .context("stopping the embedded nameserver")?;
        }
        Ok(())
    }
}

/// Where a benchmark topic's queues live.
#[derive(Clone, Copy, Debug)]
pub enum Placement {
    /// `queues` queues on every broker (the default).
    EveryBroker,
    /// `queues` queues on the first broker by id.
    OneBroker,
    /// `queues` queues, each with `replicas` copies on the first `replicas` brokers by id,
    /// leaders spread over them.
    Replicated { replicas: u8, acks: Acks },
}

/// Every live broker as (id, endpoint of its first shard, shard ports), sorted by id.
fn sorted_brokers(admin: &Admin) -> anyhow::Result<Vec<(String, String, Vec<u16>)>> {
    let mut brokers: Vec<_> = admin
        .cluster_info()
        .context("listing the brokers")?
        .brokers
        .into_iter()
        .filter_map(|b| {
            let port = *b.shard_ports.first()?;
            Some((b.broker_id, format!("{}:{port}", b.address), b.shard_ports))
        })
        .collect();
    brokers.sort();
    anyhow::ensure!(!brokers.is_empty(), "the cluster has no live broker");
    Ok(brokers)
}

/// Creates `config`'s replicated topic on its first `replicas` brokers and assigns each
/// queue's roles for epoch 1, leaders spread round-robin: what a controller does (this
/// build has none yet), through the same `QueueRole` command.
fn replicate(admin: &Admin, config: &TopicConfig) -> anyhow::Result<()> {
    let brokers = sorted_brokers(admin)?;
    let replicas = usize::from(config.replicas);
    anyhow::ensure!(
        brokers.len() >= replicas,
        "{replicas} replicas need {replicas} brokers; the cluster has {} (embedded: --brokers)",
        brokers.len()
    );
    let chosen = &brokers[..replicas];
    for (id, endpoint, _) in chosen {
        admin
            .create_topic(endpoint, config)
            .with_context(|| format!("creating topic {} on {id}", config.topic))?;
    }
    let ids: Vec<String> = chosen.iter().map(|(id, ..)| id.clone()).collect();
    for queue_id in 0..config.queue_count {
        let (_, leader_endpoint, leader_ports) = &chosen[queue_id as usize % replicas];
        let owner =
            |ports: &[u16]| protocol::routing::queue_shard(&config.topic, queue_id, ports.len());
        let host = leader_endpoint
            .rsplit_once(':')
            .map_or(leader_endpoint.as_str(), |(h, _)| h);
        let assignment = QueueAssignment {
            topic: config.topic.clone(),
            queue_id,
            epoch: 1,
            leader: chosen[queue_id as usize % replicas].0.clone(),
            leader_endpoint: format!("{host}:{}", leader_ports[owner(leader_ports)]),
            replicas: ids.clone(),
            in_sync: ids.clone(),
        };
        // The leader first: its followers then find it leading when they first fetch.
        let mut order: Vec<_> = chosen.iter().collect();
        order.sort_by_key(|(id, ..)| *id != assignment.leader);
        for (id, endpoint, _) in order {
            admin
                .assign_queue_role(endpoint, &assignment)
                .with_context(|| format!("assigning queue {queue_id} roles on {id}"))?;
        }
    }
    Ok(())
}

/// A benchmark topic, deleted from every broker when dropped (see [`Target::create_topic`]).
pub struct BenchTopic<'a> {
    target: &'a Target,
    args: &'a GlobalArgs,
    name: String,
}

impl BenchTopic<'_> {
    pub fn as_str(&self) -> &str {
        &self.name
    }
}

impl std::ops::Deref for BenchTopic<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.name
    }
}

/// A topic handle goes into JSON bodies (the proxy workload's) as its name.
impl serde::Serialize for BenchTopic<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.name)
    }
}

impl Drop for BenchTopic<'_> {
    fn drop(&mut self) {
        // The figures are measured by now: a topic left behind costs disk, not results.
        if let Err(e) = self.target.delete_topic(self.args, &self.name) {
            log::warn!("benchmark topic {} not deleted: {e:#}", self.name);
        }
    }
}
