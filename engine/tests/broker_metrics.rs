//! The broker's `/metrics` endpoint, scraped over HTTP while producers, consumers, requesters
//! and responders work: every figure matches what happened, and the text passes a strict
//! format check (and `promtool check metrics`, where promtool is installed).

mod broker_common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use broker_common::*;
use protocol::codes::{Command, Status};
use protocol::control::{FlushMode, SubscriptionMode};
use protocol::record::{BATCH_LEN_MAX, BatchView, MessageType, Property};
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

const RR_TOPIC: &str = "A10-2302";
const REDELIVERY_TOPIC: &str = "A10-2303";

/// Sends one request for `requester` with `correlation` and a deadline `ttl` from now;
/// returns the deadline.
fn request(requester: &mut Client, correlation: &str, ttl: Duration) -> u64 {
    let deadline = now_ms() + ttl.as_millis() as u64;
    let request = batch(
        &[b"ping"],
        MessageType::Request,
        &[
            Property::ReplyTo("requester"),
            Property::CorrelationId(correlation.as_bytes()),
            Property::DeadlineMs(deadline),
        ],
    );
    let ack = requester.produce_batch(Command::Request, RR_TOPIC, 0, &request);
    assert_eq!(ack.header.status, 0, "{:?}", error_of(&ack));
    deadline
}

/// The correlation id of the request pushed next to `responder`.
fn next_request(responder: &mut Client) -> Vec<u8> {
    let push = responder.next_push(WAIT).expect("a request pushed");
    assert_eq!(push.header.command, Command::Push.code());
    let view = BatchView::parse(&push.body, BATCH_LEN_MAX).unwrap();
    let record = view.records().next().unwrap();
    record.correlation_id().unwrap().to_vec()
}

/// `replier` answers the request `correlation` of "requester", which then receives it.
fn reply(replier: &mut Client, requester: &mut Client, correlation: &[u8]) {
    let reply = batch(
        &[b"pong"],
        MessageType::Reply,
        &[
            Property::ReplyTo("requester"),
            Property::CorrelationId(correlation),
        ],
    );
    let ack = replier.produce_batch(Command::Reply, RR_TOPIC, 0, &reply);
    assert_eq!(ack.header.status, 0, "{:?}", error_of(&ack));
    let pushed = requester.next_push(WAIT).expect("the reply pushed");
    assert_eq!(pushed.header.command, Command::ReplyPush.code());
}

#[test]
fn request_reply_latency_and_timeouts_are_counted_per_service() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), 2);
    let address = broker.metrics_address().expect("metrics served");
    let ports = broker.shard_ports();
    let owner = engine::topic::owner_shard(RR_TOPIC, 0, 2);
    // The requester sends from the other shard (its request is forwarded to the owner); the
    // responder is pushed the requests on the owner and answers there.
    let mut requester = Client::connect(ports[1 - owner], "requester");
    requester.create_topic(&topic_config(RR_TOPIC, 1, FlushMode::Async));
    let mut responder = Client::connect(ports[owner], "responder");
    responder.subscribe(RR_TOPIC, "service", SubscriptionMode::Clustering, 100);
    // A replier answering on the other shard, as a proxy answering by address may: the owner
    // hears of the reply over the mesh.
    let mut elsewhere = Client::connect(ports[1 - owner], "replier");

    let started = Instant::now();
    for i in 0..5 {
        request(&mut requester, &format!("r{i}"), Duration::from_secs(60));
        let correlation = next_request(&mut responder);
        let replier = if i == 4 {
            &mut elsewhere
        } else {
            &mut responder
        };
        reply(replier, &mut requester, &correlation);
    }
    let elapsed = started.elapsed();
    let labels = [("topic", RR_TOPIC)];
    let (_, m) = scrape_until(address, "five request-replies observed", |m| {
        m.value("defibus_request_reply_seconds_count", &labels) == Some(5.0)
    });
    let sum = m
        .value("defibus_request_reply_seconds_sum", &labels)
        .unwrap();
    assert!(
        sum > 0.0 && sum < elapsed.as_secs_f64(),
        "five store-to-store latencies within the {elapsed:?} of the exchanges: {sum}"
    );
    assert_eq!(
        m.value("defibus_request_timeouts_total", &labels),
        Some(0.0)
    );

    // A request nobody answers before its deadline is a timeout; so is one answered late.
    request(&mut requester, "unanswered", Duration::from_millis(300));
    assert_eq!(next_request(&mut responder), b"unanswered");
    let deadline = request(&mut requester, "late", Duration::from_millis(300));
    let late = next_request(&mut responder);
    testkit::wait_for("the late request's deadline to pass", WAIT, || {
        (now_ms() > deadline).then_some(())
    });
    reply(&mut responder, &mut requester, &late);
    let (text, m) = scrape_until(address, "two timeouts", |m| {
        m.value("defibus_request_timeouts_total", &labels) == Some(2.0)
    });
    assert_eq!(
        m.value("defibus_request_reply_seconds_count", &labels),
        Some(5.0),
        "a late reply is no latency"
    );
    let untracked: f64 = (0..ports.len())
        .filter_map(|s| {
            m.value(
                "defibus_request_untracked_total",
                &[("shard", &s.to_string())],
            )
        })
        .sum();
    assert_eq!(untracked, 0.0);
    promtool_accepts(&text);
    drop((requester, responder, elsewhere));
    broker.shutdown().unwrap();
}

#[test]
fn a_consumer_back_without_committing_is_counted_as_redeliveries() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), 2);
    let address = broker.metrics_address().expect("metrics served");
    let ports = broker.shard_ports();
    let owner = engine::topic::owner_shard(REDELIVERY_TOPIC, 0, 2);
    let mut producer = Client::connect(ports[owner], "producer");
    producer.create_topic(&topic_config(REDELIVERY_TOPIC, 1, FlushMode::Async));
    for value in [b"a", b"b", b"c"] {
        producer.produce(REDELIVERY_TOPIC, 0, &[value]);
    }
    let mut consumer = Client::connect(ports[owner], "consumer");
    let sub = consumer.subscribe(REDELIVERY_TOPIC, "g2", SubscriptionMode::Clustering, 10);
    assert_eq!(consumer.collect(3).len(), 3);
    consumer.commit(sub.subscription_id, 0, 1);
    let group = [("topic", REDELIVERY_TOPIC), ("group", "g2")];
    scrape_until(address, "three pushed once", |m| {
        m.value("defibus_group_redelivered_records_total", &group) == Some(0.0)
    });

    // The consumer comes back (a new connection, as after a crash) without having committed
    // offsets 1 and 2: they are pushed again, and counted.
    drop(consumer);
    let mut consumer = Client::connect(ports[owner], "consumer");
    consumer.subscribe(REDELIVERY_TOPIC, "g2", SubscriptionMode::Clustering, 10);
    let again = consumer.collect(2);
    assert_eq!(again.iter().map(|r| r.1).collect::<Vec<_>>(), [1, 2]);
    producer.produce(REDELIVERY_TOPIC, 0, &[b"d"]);
    assert_eq!(consumer.collect(1)[0].1, 3, "a new record");
    let (text, m) = scrape_until(address, "two redelivered, one new", |m| {
        m.value(
            "defibus_queue_out_records_total",
            &[("topic", REDELIVERY_TOPIC)],
        ) == Some(6.0)
    });
    assert_eq!(
        m.value("defibus_group_redelivered_records_total", &group),
        Some(2.0)
    );
    // Every shard ran tasks (accepting, serving, the mesh), and shows it.
    for shard in 0..ports.len() {
        let shard = shard.to_string();
        let labels = [("shard", shard.as_str())];
        let busy = m.value("defibus_broker_shard_busy_seconds_total", &labels);
        let active = m.value("defibus_broker_shard_active_seconds_total", &labels);
        let tasks = m.value("defibus_broker_shard_tasks_total", &labels);
        assert!(
            busy > Some(0.0) && active >= busy && tasks > Some(0.0),
            "shard {shard}: busy {busy:?}, active {active:?}, tasks {tasks:?}"
        );
    }
    promtool_accepts(&text);
    drop((producer, consumer));
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
