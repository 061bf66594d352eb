//! Shutdown with clients still connected: close, then drain, and nothing acknowledged lost.

mod broker_common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use broker_common::*;
use protocol::control::{FlushMode, SubscriptionMode};

/// Warnings and errors the broker logged, as `target: message`.
static LOGGED: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let line = format!("{}: {}", record.target(), record.args());
            LOGGED.lock().unwrap().push(line);
        }
    }

    fn flush(&self) {}
}

static CAPTURE: Capture = Capture;

#[test]
fn a_broker_with_live_clients_stops_with_nothing_holding_a_shard_and_keeps_every_ack() {
    log::set_logger(&CAPTURE).expect("the first logger of this test binary");
    log::set_max_level(log::LevelFilter::Warn);
    let topic = "A10-3001";
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), 2);
    let ports = broker.shard_ports();
    let mut admin = Client::connect(ports[0], "admin");
    // One queue: one shard owns it, the other owns none and has no log to close (nothing to
    // await before it lets the shard go, which once left tasks holding it).
    admin.create_topic(&topic_config(topic, 1, FlushMode::Sync));
    // A consumer subscribed on every shard, pushed to and never committing, and a producer on
    // every shard, one of which is forwarded to the owner.
    let mut consumers = Vec::new();
    for &port in &ports {
        let mut consumer = Client::connect(port, "consumer-1");
        consumer.subscribe(topic, "group-1", SubscriptionMode::Clustering, 100);
        consumers.push(consumer);
    }
    let mut acknowledged = 0;
    for (i, &port) in ports.iter().enumerate() {
        let mut producer = Client::connect(port, &format!("producer-{i}"));
        for n in 0..3 {
            producer.produce(topic, 0, &[format!("{i}/{n}").as_bytes()]);
            acknowledged += 1;
        }
    }

    let started = Instant::now();
    broker.shutdown().expect("a clean shutdown");
    let took = started.elapsed();
    let logged = LOGGED.lock().unwrap().clone();
    let held: Vec<&String> = logged
        .iter()
        .filter(|line| line.starts_with("engine::shard") || line.starts_with("engine::mesh"))
        .collect();
    assert!(
        held.is_empty(),
        "closing warned (a task outlived the drain?): {held:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "shutdown took {took:?}: it waited out a bound instead of an event"
    );

    // Every log was closed: a new broker opens the directory and has every acknowledged record.
    let broker = start(dir.path(), 2);
    let mut recovered = 0;
    for (i, port) in broker.shard_ports().into_iter().enumerate() {
        let mut consumer = Client::connect(port, &format!("reader-{i}"));
        let ack = consumer.subscribe(topic, "group-2", SubscriptionMode::Clustering, 100);
        if !ack.queue_ids.is_empty() {
            recovered += consumer.collect(acknowledged).len();
        }
    }
    assert_eq!(recovered, acknowledged);
    broker.shutdown().unwrap();
}
