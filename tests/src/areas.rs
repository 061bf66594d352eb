//! A two-area topology for the service-model scenarios (DESIGN §6): areas `A10` and `B20`,
//! each with its own nameserver and brokers. Every broker registers with both nameservers,
//! so a route lists the queues of both areas with their area, as one cluster spanning two
//! data centres would; a client names its own area's nameserver first.
//!
//! [`TwoAreas::start_with_area_clusters`] gives each area its own cluster instead (as SGS
//! deploys a service area by area), and [`TwoAreas::start_service_plane`] adds a GSL and an
//! SGS that knows both areas.

use std::collections::BTreeMap;
use std::time::Duration;

use client::{Admin, Client, ClientConfig};
use engine::{Broker, BrokerConfig};
use gsl::{GslConfig, GslHandle};
use nameserver::NameserverHandle;
use protocol::control::{FlushMode, ServiceRecord, ServiceState};
use sgs::client::SgsClient;
use sgs::config::AreaConfig;
use sgs::{SgsConfig, SgsHandle};

use crate::{
    REGISTER_INTERVAL_MS, assignment_on, create_topic, endpoint, start_broker, start_nameserver,
    topic_config, wait_for_assignment_on,
};

/// The areas of a [`TwoAreas`] topology, in index order.
pub const AREAS: [&str; 2] = ["A10", "B20"];

/// One area: its nameserver and its brokers, `<area>-broker-<i>`.
pub struct AreaNodes {
    /// The area code.
    pub area: &'static str,
    /// The area's nameserver (every broker of both areas registers with it).
    pub nameserver: NameserverHandle,
    /// The area's in-process brokers; `None` once stopped by a scenario.
    pub brokers: Vec<Option<Broker>>,
}

/// Two areas, each a nameserver and in-process brokers, data under one temporary directory.
pub struct TwoAreas {
    /// `A10` then `B20`.
    pub areas: Vec<AreaNodes>,
    /// An admin client in `A10`.
    pub admin_client: Client,
    /// Holds every broker's data until the topology is dropped.
    pub dir: tempfile::TempDir,
    shards: usize,
    adjust: Box<dyn Fn(&mut BrokerConfig)>,
    /// Whether each area is its own cluster (`itests-<area>`) rather than one `itests`.
    cluster_per_area: bool,
}

impl TwoAreas {
    /// Starts both areas with `brokers` brokers of `shards` shards each, all in cluster
    /// `itests`.
    pub fn start(brokers: usize, shards: usize) -> Self {
        Self::start_with(brokers, shards, |_| {})
    }

    /// [`Self::start`], with `adjust` applied to every broker's configuration (also on
    /// restarts).
    pub fn start_with(
        brokers: usize,
        shards: usize,
        adjust: impl Fn(&mut BrokerConfig) + 'static,
    ) -> Self {
        Self::start_layout(brokers, shards, false, Box::new(adjust))
    }

    /// Like [`Self::start`], with each area its own cluster, `itests-<area>`: what an SGS
    /// deploying a service area by area needs (it creates the topic on the area's cluster).
    pub fn start_with_area_clusters(brokers: usize, shards: usize) -> Self {
        Self::start_layout(brokers, shards, true, Box::new(|_| {}))
    }

    fn start_layout(
        brokers: usize,
        shards: usize,
        cluster_per_area: bool,
        adjust: Box<dyn Fn(&mut BrokerConfig)>,
    ) -> Self {
        let nameservers: Vec<NameserverHandle> =
            AREAS.iter().map(|_| start_nameserver(|_| {})).collect();
        let addresses: Vec<String> = nameservers
            .iter()
            .map(|n| n.local_addr().to_string())
            .collect();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut topology = Self {
            areas: Vec::new(),
            admin_client: client_in(&addresses, AREAS[0], |c| c),
            dir,
            shards,
            adjust,
            cluster_per_area,
        };
        for (area, nameserver) in AREAS.iter().zip(nameservers) {
            topology.areas.push(AreaNodes {
                area,
                nameserver,
                brokers: Vec::new(),
            });
        }
        for (index, area) in AREAS.iter().enumerate() {
            for i in 0..brokers {
                let config = topology.broker_config(area, &format!("{area}-broker-{i}"));
                topology.areas[index]
                    .brokers
                    .push(Some(start_broker(config)));
            }
        }
        topology
    }

    /// Every nameserver's address, `area`'s own first.
    pub fn nameservers_for(&self, area: &str) -> Vec<String> {
        let mut nodes: Vec<&AreaNodes> = self.areas.iter().collect();
        nodes.sort_by_key(|n| n.area != area);
        nodes
            .iter()
            .map(|n| n.nameserver.local_addr().to_string())
            .collect()
    }

    /// The cluster of `area`'s brokers.
    pub fn cluster_of(&self, area: &str) -> String {
        if self.cluster_per_area {
            format!("itests-{area}")
        } else {
            "itests".into()
        }
    }

    /// The configuration of a broker `broker_id` in `area`, registering with both
    /// nameservers, its data under the topology's directory.
    pub fn broker_config(&self, area: &str, broker_id: &str) -> BrokerConfig {
        let mut config = BrokerConfig {
            broker_id: broker_id.into(),
            cluster: self.cluster_of(area),
            area: area.into(),
            listen_address: "127.0.0.1".into(),
            port_base: 0,
            shards: self.shards,
            data_dir: self.dir.path().join(broker_id),
            nameservers: self.nameservers_for(area),
            register_interval_ms: REGISTER_INTERVAL_MS,
            io_memory_bytes: 512 << 10,
            ..BrokerConfig::default()
        };
        (self.adjust)(&mut config);
        config
    }

    /// A client in `area` (2 s request timeout, 200 ms auto commits), adjusted by `adjust`.
    pub fn client(&self, area: &str, adjust: impl FnOnce(ClientConfig) -> ClientConfig) -> Client {
        client_in(&self.nameservers_for(area), area, adjust)
    }

    /// An admin over [`Self::admin_client`].
    pub fn admin(&self) -> Admin {
        Admin::new(&self.admin_client)
    }

    /// The running brokers of `area` (or of both areas when `None`).
    pub fn brokers(&self, area: Option<&str>) -> Vec<&Broker> {
        self.areas
            .iter()
            .filter(|n| area.is_none_or(|a| a == n.area))
            .flat_map(|n| n.brokers.iter().flatten())
            .collect()
    }

    /// The first shard's endpoint of every running broker of `area` (or of both).
    pub fn endpoints(&self, area: Option<&str>) -> Vec<String> {
        self.brokers(area)
            .iter()
            .map(|b| endpoint(b.shard_ports()[0]))
            .collect()
    }

    /// Creates `topic` with `queues` queues on every running broker of both areas, with
    /// `adjust` applied to the configuration, and waits until both nameservers route them.
    pub fn create_topic(
        &self,
        topic: &str,
        queues: u32,
        adjust: impl FnOnce(&mut client::TopicConfig),
    ) {
        let mut config = topic_config(topic, queues, FlushMode::Async);
        adjust(&mut config);
        create_topic(&self.admin(), &self.endpoints(None), &config);
        let want = config.queue_count as usize * self.brokers(None).len();
        for area in AREAS {
            let client = self.client(area, |c| c);
            let admin = Admin::new(&client);
            testkit::wait_until(
                &format!("{area}'s nameserver routing all {want} queues of {topic}"),
                crate::WAIT,
                || {
                    admin
                        .topic_route(topic)
                        .is_ok_and(|r| r.queues.len() == want)
                },
            );
        }
    }

    /// For every queue of `topic` on every running broker, the member of `group` it is
    /// assigned to (empty when none), keyed by (broker id, queue id).
    pub fn assignment(&self, topic: &str, group: &str) -> BTreeMap<(String, u32), String> {
        assignment_on(&self.admin(), &self.endpoints(None), topic, group)
    }

    /// Waits until `settled` holds of the assignment of `group` on `topic`; panics with the
    /// last assignment after [`crate::WAIT`].
    pub fn wait_for_assignment(
        &self,
        what: &str,
        topic: &str,
        group: &str,
        settled: impl FnMut(&BTreeMap<(String, u32), String>) -> bool,
    ) {
        wait_for_assignment_on(
            &self.admin(),
            &self.endpoints(None),
            what,
            topic,
            group,
            settled,
        );
    }

    /// Stops broker `index` of `area` cleanly (it unregisters), returning its configuration
    /// so a scenario can start it again on the same data.
    pub fn stop_broker(&mut self, area: &str, index: usize) -> BrokerConfig {
        let broker = self.nodes_mut(area).brokers[index]
            .take()
            .expect("a running broker");
        let config = self.broker_config(area, broker.broker_id());
        broker.shutdown().expect("the broker stops cleanly");
        config
    }

    /// Starts a GSL and an SGS that deploys to both areas: each area's cluster and its own
    /// nameserver (so a deployment names only its area's nameserver, as in production).
    pub fn start_service_plane(&self) -> ServicePlane {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let gsl = gsl::start(GslConfig {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("gsl"),
            ..GslConfig::default()
        })
        .expect("GSL starts");
        let areas: BTreeMap<String, AreaConfig> = self
            .areas
            .iter()
            .map(|n| {
                let config = AreaConfig {
                    cluster: self.cluster_of(n.area),
                    nameservers: vec![n.nameserver.local_addr().to_string()],
                };
                (n.area.to_owned(), config)
            })
            .collect();
        let sgs = sgs::start(SgsConfig {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("sgs"),
            gsl_endpoints: vec![gsl.local_addr().to_string()],
            retry_backoff_min_ms: 50,
            retry_backoff_max_ms: 500,
            areas,
            ..SgsConfig::default()
        })
        .expect("SGS starts");
        ServicePlane {
            gsl: Some(gsl),
            sgs: Some(sgs),
            _dir: dir,
        }
    }

    fn nodes_mut(&mut self, area: &str) -> &mut AreaNodes {
        self.areas
            .iter_mut()
            .find(|n| n.area == area)
            .expect("a known area")
    }

    /// Starts broker `index` of `area` again from `config`.
    pub fn restart_broker(&mut self, area: &str, index: usize, config: BrokerConfig) {
        let nodes = self.nodes_mut(area);
        assert!(nodes.brokers[index].is_none(), "broker {index} is running");
        nodes.brokers[index] = Some(start_broker(config));
    }
}

/// A GSL and an SGS beside a [`TwoAreas`], data under their own temporary directory; both
/// stop when it is dropped.
pub struct ServicePlane {
    gsl: Option<GslHandle>,
    sgs: Option<SgsHandle>,
    _dir: tempfile::TempDir,
}

impl ServicePlane {
    /// The GSL's endpoint, for [`ClientConfig::with_gsl`].
    pub fn gsl_endpoint(&self) -> String {
        self.gsl.as_ref().expect("running").local_addr().to_string()
    }

    /// A connection to the SGS.
    pub fn sgs(&self) -> SgsClient {
        let endpoint = self.sgs.as_ref().expect("running").local_addr().to_string();
        SgsClient::connect(&endpoint, None).expect("connect to the SGS")
    }

    /// Applies service `service_id` for `areas` with `queues` queues per topic, deploys it,
    /// and returns the deployed record.
    pub fn apply_and_deploy(&self, service_id: &str, areas: &[&str], queues: u32) -> ServiceRecord {
        let mut sgs = self.sgs();
        let record = ServiceRecord {
            service_id: service_id.into(),
            name: format!("service {service_id}"),
            owner: "itests".into(),
            deployed_areas: areas.iter().map(|a| (*a).to_owned()).collect(),
            queue_count: queues,
            max_queue_depth: 1_000_000,
            flush_mode: FlushMode::Async,
            state: ServiceState::Applied,
        };
        sgs.apply(&record)
            .unwrap_or_else(|e| panic!("apply {service_id}: {e}"));
        let deployed = sgs
            .deploy(service_id)
            .unwrap_or_else(|e| panic!("deploy {service_id}: {e}"));
        assert_eq!(deployed.state, ServiceState::Deployed);
        deployed
    }
}

impl Drop for ServicePlane {
    fn drop(&mut self) {
        if let Some(sgs) = self.sgs.take() {
            let _ = sgs.shutdown();
        }
        if let Some(gsl) = self.gsl.take() {
            let _ = gsl.shutdown();
        }
    }
}

/// The area of a client id made by the client's default (`…#AREA`).
pub fn area_of(client_id: &str) -> &str {
    client_id.rsplit_once('#').map_or("", |(_, area)| area)
}

/// The area of a broker started by [`TwoAreas`] (`AREA-broker-i`).
pub fn broker_area(broker_id: &str) -> &str {
    broker_id.split_once('-').map_or("", |(area, _)| area)
}

fn client_in(
    nameservers: &[String],
    area: &str,
    adjust: impl FnOnce(ClientConfig) -> ClientConfig,
) -> Client {
    crate::init_logs();
    let config = ClientConfig::new(nameservers.to_vec(), area)
        .unwrap()
        .with_request_timeout(Duration::from_secs(2))
        .with_auto_commit_interval(Duration::from_millis(200));
    Client::new(adjust(config)).expect("client starts")
}
