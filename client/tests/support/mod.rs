//! Real servers on port 0 for the client's scenarios, and waiting on conditions.

#![allow(dead_code)]

use std::time::Duration;

use client::{Admin, Client, ClientConfig, TopicConfig};
use nameserver::{NameserverConfig, NameserverHandle};

/// Starts a nameserver on a free loopback port.
pub fn start_nameserver() -> NameserverHandle {
    nameserver::start(nameserver_config()).expect("nameserver starts")
}

/// The settings of [`start_nameserver`]: port 0 on loopback, quick expiry.
pub fn nameserver_config() -> NameserverConfig {
    NameserverConfig {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        broker_expiry_ms: 3000,
        sweep_interval_ms: 200,
        ..NameserverConfig::default()
    }
}

/// A client of the nameserver at `nameserver`, in area A10, with short timeouts.
pub fn client(nameserver: &NameserverHandle) -> Client {
    client_with(nameserver, |c| c)
}

/// Like [`client`], with the config adjusted by `adjust`.
pub fn client_with(
    nameserver: &NameserverHandle,
    adjust: impl FnOnce(ClientConfig) -> ClientConfig,
) -> Client {
    let config = ClientConfig::new([nameserver.local_addr().to_string()], "A10")
        .unwrap()
        .with_request_timeout(Duration::from_secs(2))
        .with_auto_commit_interval(Duration::from_millis(200));
    Client::new(adjust(config)).expect("client starts")
}

/// Creates `topic` with `queues` queues on `broker` (`host:port`) and waits until the
/// nameserver routes it.
pub fn create_topic(admin: &Admin, broker: &str, topic: &str, queues: u32) {
    let mut config = TopicConfig::new(&topic.parse().unwrap());
    config.queue_count = queues;
    config.read_queue_count = queues;
    config.write_queue_count = queues;
    config.max_queue_depth = 1_000_000;
    admin.create_topic(broker, &config).expect("topic created");
    testkit::wait_until(
        &format!("a route to {topic}"),
        Duration::from_secs(20),
        || {
            admin
                .topic_route(topic)
                .is_ok_and(|r| r.queues.len() == queues as usize)
        },
    );
}

/// A broker with two shards on free loopback ports, registering with `nameserver` every
/// 200 ms, storing under `dir`.
pub fn start_broker(
    nameserver: &NameserverHandle,
    broker_id: &str,
    dir: &std::path::Path,
) -> engine::Broker {
    let config = engine::BrokerConfig {
        broker_id: broker_id.into(),
        cluster: "test".into(),
        area: "A10".into(),
        listen_address: "127.0.0.1".into(),
        port_base: 0,
        shards: 2,
        data_dir: dir.to_path_buf(),
        nameservers: vec![nameserver.local_addr().to_string()],
        register_interval_ms: 200,
        ..engine::BrokerConfig::default()
    };
    engine::Broker::start(config).expect("broker starts")
}

/// `host:port` of the broker's first shard, for admin calls.
pub fn broker_endpoint(broker: &engine::Broker) -> String {
    format!("127.0.0.1:{}", broker.shard_ports()[0])
}

/// A nameserver, a broker and a topic with `queues` queues, ready to use.
pub struct Cluster {
    pub nameserver: NameserverHandle,
    pub broker: Option<engine::Broker>,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts everything and creates `topic`.
    pub fn start(topic: &str, queues: u32) -> Self {
        let _ = env_logger::builder().is_test(true).try_init();
        let nameserver = start_nameserver();
        let dir = tempfile::tempdir().unwrap();
        let broker = start_broker(&nameserver, "broker-a", dir.path());
        let admin_client = client(&nameserver);
        create_topic(
            &Admin::new(&admin_client),
            &broker_endpoint(&broker),
            topic,
            queues,
        );
        Self {
            nameserver,
            broker: Some(broker),
            dir,
        }
    }

    /// The running broker.
    pub fn broker(&self) -> &engine::Broker {
        self.broker.as_ref().expect("broker running")
    }

    /// Stops the broker and starts it again on the same data (on new ports).
    pub fn restart_broker(&mut self) {
        if let Some(broker) = self.broker.take() {
            broker.shutdown().expect("broker stops");
        }
        self.broker = Some(start_broker(&self.nameserver, "broker-a", self.dir.path()));
    }

    /// Creates one more topic.
    pub fn create_topic(&self, topic: &str, queues: u32) {
        let admin_client = client(&self.nameserver);
        create_topic(
            &Admin::new(&admin_client),
            &broker_endpoint(self.broker()),
            topic,
            queues,
        );
    }
}
