//! Real servers on port 0 for the client's scenarios, and waiting on conditions.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use client::{Admin, Client, ClientConfig, TopicConfig};
use nameserver::{NameserverConfig, NameserverHandle};

/// Starts a nameserver on a free loopback port.
pub fn start_nameserver() -> NameserverHandle {
    let config = NameserverConfig {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        broker_expiry_ms: 3000,
        sweep_interval_ms: 200,
        ..NameserverConfig::default()
    };
    nameserver::start(config).expect("nameserver starts")
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

/// Polls `condition` until it holds or `timeout` passes; panics with `what` on timeout.
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
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
    wait_for(
        &format!("a route to {topic}"),
        Duration::from_secs(20),
        || {
            admin
                .topic_route(topic)
                .is_ok_and(|r| r.queues.len() == queues as usize)
        },
    );
}
