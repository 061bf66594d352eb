//! The broker's `/metrics` endpoint, scraped over HTTP while a producer and a consumer work:
//! every figure matches what happened, and the text passes a strict format check (and
//! `promtool check metrics`, where promtool is installed).

mod broker_common;

use std::net::SocketAddr;

use broker_common::*;
use protocol::codes::{Command, Status};
use protocol::control::{FlushMode, SubscriptionMode};
use protocol::record::MessageType;
use telemetry::parse::Exposition;

const TOPIC: &str = "A10-2301";

/// One scrape, checked for format; `None` while the endpoint cannot answer.
fn scrape(address: SocketAddr) -> Option<(String, Exposition)> {
    let (status, text) = testkit::http_get(address, "/metrics").ok()?;
    assert_eq!(status, 200, "{text}");
    let parsed = telemetry::parse::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    Some((text, parsed))
}

/// Scrapes until `check` holds of a scrape (the figures of other shards arrive over the mesh
/// and pushes run in their own tasks), and returns that scrape.
fn scrape_until(
    address: SocketAddr,
    what: &str,
    check: impl Fn(&Exposition) -> bool,
) -> (String, Exposition) {
    testkit::wait_for(what, WAIT, || scrape(address).filter(|(_, m)| check(m)))
}

fn queue_value(m: &Exposition, name: &str) -> Option<f64> {
    m.value(name, &[("topic", TOPIC), ("queue", "0")])
}

#[test]
fn a_scrape_shows_records_depth_refusals_and_lag_as_they_happened() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), 2);
    let address = broker.metrics_address().expect("metrics served");
    let ports = broker.shard_ports();
    let mut producer = Client::connect(ports[0], "producer");
    let mut topic = topic_config(TOPIC, 1, FlushMode::Sync);
    topic.max_queue_depth = 3;
    producer.create_topic(&topic);

    // The consumer subscribes on every shard; the queue's owner assigns it the queue. No
    // credit yet, so nothing is pushed and the depth grows with every record.
    let mut consumers: Vec<Client> = ports
        .iter()
        .map(|port| Client::connect(*port, "consumer"))
        .collect();
    let (owner, subscription) = consumers
        .iter_mut()
        .enumerate()
        .map(|(shard, c)| {
            (
                shard,
                c.subscribe(TOPIC, "g1", SubscriptionMode::Clustering, 0),
            )
        })
        .find(|(_, ack)| ack.queue_ids == [0])
        .expect("one shard owns the queue");

    let one = batch(&[b"0123456789"], MessageType::Event, &[]);
    for _ in 0..3 {
        producer.produce(TOPIC, 0, &[b"0123456789"]);
    }
    let refused = producer.produce_batch(Command::Produce, TOPIC, 0, &one);
    assert_eq!(
        error_of(&refused).map(|e| e.0),
        Some(Status::QueueDepthExceeded)
    );
    let (_, m) = scrape_until(address, "three records in, one refusal", |m| {
        queue_value(m, "defibus_queue_in_records_total") == Some(3.0)
    });
    assert_eq!(
        queue_value(&m, "defibus_queue_in_bytes_total"),
        Some(3.0 * one.len() as f64)
    );
    assert_eq!(queue_value(&m, "defibus_queue_depth_records"), Some(3.0));
    assert_eq!(
        queue_value(&m, "defibus_queue_depth_limit_records"),
        Some(3.0)
    );
    assert_eq!(
        queue_value(&m, "defibus_queue_depth_refusals_total"),
        Some(1.0)
    );
    assert_eq!(queue_value(&m, "defibus_queue_end_offset"), Some(3.0));
    assert_eq!(
        queue_value(&m, "defibus_queue_expired_requests_total"),
        Some(0.0)
    );
    let shard = owner.to_string();
    let synced = m.value(
        "defibus_broker_fdatasync_seconds_count",
        &[("shard", &shard)],
    );
    assert!(
        synced.unwrap() >= 3.0,
        "a sync topic syncs every produce: {synced:?}"
    );
    let commits = m.value(
        "defibus_broker_group_commit_appends_count",
        &[("shard", &shard)],
    );
    assert!(commits.unwrap() >= 1.0, "{commits:?}");
    let connections: f64 = (0..ports.len())
        .filter_map(|s| m.value("defibus_broker_connections", &[("shard", &s.to_string())]))
        .sum();
    assert_eq!(
        connections, 3.0,
        "a producer and a consumer on each of two shards"
    );

    // Two records pushed and one committed: out counts, depth and lag follow.
    let consumer = &mut consumers[owner];
    consumer.credit(subscription.subscription_id, 2);
    assert_eq!(consumer.collect(2).len(), 2);
    consumer.commit(subscription.subscription_id, 0, 1);
    let (text, m) = scrape_until(address, "two pushed, one committed", |m| {
        queue_value(m, "defibus_queue_out_records_total") == Some(2.0)
            && m.value("defibus_group_lag_records", &[("group", "g1")]) == Some(2.0)
    });
    assert_eq!(
        queue_value(&m, "defibus_queue_out_bytes_total"),
        Some(2.0 * one.len() as f64)
    );
    assert_eq!(queue_value(&m, "defibus_queue_depth_records"), Some(1.0));
    promtool_accepts(&text);

    drop((producer, consumers));
    broker.shutdown().unwrap();
}

#[test]
fn no_metrics_address_serves_no_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    init_logs();
    let mut config = config(dir.path(), 1);
    config.metrics_address = String::new();
    let broker = engine::Broker::start(config).unwrap();
    assert_eq!(broker.metrics_address(), None);
    broker.shutdown().unwrap();
}

fn promtool_accepts(text: &str) {
    match telemetry::parse::promtool_check(text) {
        None => eprintln!("promtool not installed: only telemetry::parse checked the format"),
        Some(verdict) => verdict.unwrap_or_else(|e| panic!("promtool check metrics: {e}\n{text}")),
    }
}
