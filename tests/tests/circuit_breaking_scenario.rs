//! Circuit breaking on queue depth (DESIGN §6), on the two-area topology: a consumer that
//! stops consuming lets its queues fill to `max_queue_depth`; from then on produces to those
//! queues are refused with `QueueDepthExceeded`, a producer with retries lands every message
//! on the other queues, one without retries sees the status, and once the consumer resumes the
//! group gets every acknowledged message.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, mpsc};

use client::{
    ConsumeMode, Consumer, ConsumerOptions, Message, Producer, ReceivedMessage, StartFrom,
};
use defibus_tests::WAIT;
use defibus_tests::areas::TwoAreas;
use protocol::codes::Status;
use testkit::wait_until;

const TOPIC: &str = "A10-7001";
const GROUP: &str = "depth";
const MAX_DEPTH: u64 = 40;
const STALLED: &str = "a-stalled#A10";
const LIVE: &str = "b-live#A10";

#[test]
fn a_stalled_consumers_queues_refuse_produces_and_messages_go_elsewhere() {
    let topology = TwoAreas::start(2, 1);
    topology.create_topic(TOPIC, 2, |c| c.max_queue_depth = MAX_DEPTH);

    // The stalled consumer's handler blocks on its first message until released; with a
    // credit window of 10 the broker pushes it at most 10 records per queue.
    let seen: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let (release, released) = mpsc::channel::<()>();
    let released = Mutex::new(released);
    let stalled_client = topology.client("A10", |c| {
        c.with_client_id(STALLED).unwrap().with_credit_window(10)
    });
    let sink = seen.clone();
    let stalled = Consumer::start_with(
        &stalled_client,
        ConsumerOptions::new(TOPIC, GROUP, ConsumeMode::Clustering).start_from(StartFrom::Earliest),
        move |m: &ReceivedMessage| {
            sink.lock().unwrap().insert(value_of(m));
            let _ = released.lock().unwrap().recv();
        },
    )
    .expect("the stalled consumer subscribes");
    let live_client = topology.client("A10", |c| c.with_client_id(LIVE).unwrap());
    let sink = seen.clone();
    let live = Consumer::start_with(
        &live_client,
        ConsumerOptions::new(TOPIC, GROUP, ConsumeMode::Clustering).start_from(StartFrom::Earliest),
        move |m: &ReceivedMessage| {
            sink.lock().unwrap().insert(value_of(m));
        },
    )
    .expect("the live consumer subscribes");
    topology.wait_for_assignment("split over both consumers", TOPIC, GROUP, |a| {
        a.len() == 8
            && a.values().all(|m| m == STALLED || m == LIVE)
            && a.values().any(|m| m == STALLED)
            && a.values().any(|m| m == LIVE)
    });
    let assignment = topology.assignment(TOPIC, GROUP);
    let stalled_queues: BTreeSet<(String, u32)> = assignment
        .iter()
        .filter(|((broker, _), member)| broker.starts_with("A10") && *member == STALLED)
        .map(|(queue, _)| queue.clone())
        .collect();
    assert!(!stalled_queues.is_empty(), "{assignment:?}");

    // Every send succeeds: refused sends are retried on the live consumer's queues.
    let producer_client = topology.client("A10", |c| c);
    let producer = Producer::new(&producer_client).unwrap();
    let mut acked = BTreeSet::new();
    let mut per_queue: BTreeMap<(String, u32), u64> = BTreeMap::new();
    for i in 0..400 {
        let value = format!("m{i}");
        let sent = producer
            .send(Message::new(TOPIC, value.clone()))
            .unwrap_or_else(|e| panic!("send {i}: {e}"));
        *per_queue
            .entry((sent.broker_id, sent.queue_id))
            .or_default() += 1;
        acked.insert(value);
    }
    // Each stalled queue stopped exactly at the limit: depth = next offset - delivered.
    let admin = topology.admin();
    for endpoint in topology.endpoints(Some("A10")) {
        let stats = admin.stats(&endpoint).unwrap();
        for queue in stats.queues.iter().filter(|q| q.topic == TOPIC) {
            let key = (stats.broker_id.clone(), queue.queue_id);
            if !stalled_queues.contains(&key) {
                continue;
            }
            let delivered = queue.groups.iter().find(|g| g.group == GROUP).unwrap();
            assert_eq!(
                queue.next_offset - delivered.delivered_offset,
                MAX_DEPTH,
                "{key:?} filled to its depth limit and no further: {queue:?}"
            );
        }
    }
    let on_live: u64 = per_queue
        .iter()
        .filter(|(q, _)| !stalled_queues.contains(*q))
        .map(|(_, n)| n)
        .sum();
    assert!(
        on_live >= 400 - stalled_queues.len() as u64 * (MAX_DEPTH + 10),
        "the rest went to the live consumer's queues: {per_queue:?}"
    );

    // Without retries the producer sees the status itself, and only from stalled queues.
    let strict_client = topology.client("A10", |c| c.with_retries(0));
    let strict = Producer::new(&strict_client).unwrap();
    let mut refused = 0;
    for i in 0..8 {
        let value = format!("strict{i}");
        match strict.send(Message::new(TOPIC, value.clone())) {
            Ok(sent) => {
                assert!(
                    !stalled_queues.contains(&(sent.broker_id.clone(), sent.queue_id)),
                    "a full queue accepted a message: {sent:?}"
                );
                acked.insert(value);
            }
            Err(e) => {
                assert_eq!(e.status(), Some(Status::QueueDepthExceeded), "{e}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "round robin reached a full queue");

    // The consumer resumes: the group gets every acknowledged message.
    drop(release);
    wait_until(
        "the group to consume every acknowledged message",
        WAIT,
        || acked.is_subset(&seen.lock().unwrap()),
    );
    stalled.close().unwrap();
    live.close().unwrap();
}

fn value_of(m: &ReceivedMessage) -> String {
    String::from_utf8(m.value.clone()).expect("UTF-8 values")
}

/// A request to a service whose only responder is stuck fails at once with the depth status
/// once its queues are full, instead of waiting out its deadline behind the backlog.
#[test]
fn requests_to_a_stuck_responder_fail_fast_at_the_depth_limit() {
    const SERVICE: &str = "A10-7006";
    let cluster = defibus_tests::Cluster::start(1, 1);
    let mut config = defibus_tests::topic_config(SERVICE, 2, protocol::control::FlushMode::Async);
    config.max_queue_depth = 20;
    defibus_tests::create_topic(&cluster.admin(), &cluster.endpoints(), &config);

    let (release, released) = mpsc::channel::<()>();
    let released = Mutex::new(released);
    let responder_client =
        defibus_tests::client_with(&cluster.nameserver, |c| c.with_credit_window(4));
    let responder = client::Responder::start(&responder_client, SERVICE, "stuck", move |_| {
        let _ = released.lock().unwrap().recv();
        b"late".to_vec()
    })
    .unwrap();
    cluster.wait_for_assignment(SERVICE, "stuck", 2, &[responder_client.client_id()]);

    // Requests pile up behind the one the responder is stuck on until both queues are full.
    let requester_client = defibus_tests::client(&cluster.nameserver);
    let requester = client::Requester::new(&requester_client);
    let backlog: Vec<_> = (0..60)
        .map(|i| {
            requester.request_async(
                Message::new(SERVICE, format!("backlog{i}")),
                std::time::Duration::from_secs(5),
            )
        })
        .collect();
    wait_until("both queues at the depth limit", WAIT, || {
        let stats = cluster.admin().stats(&cluster.endpoints()[0]).unwrap();
        stats.queues.iter().filter(|q| q.topic == SERVICE).all(|q| {
            q.groups
                .iter()
                .any(|g| q.next_offset - g.delivered_offset >= config.max_queue_depth)
        })
    });
    let started = std::time::Instant::now();
    let err = requester
        .request(
            Message::new(SERVICE, "ping"),
            std::time::Duration::from_secs(20),
        )
        .expect_err("the service's queues are full");
    assert_eq!(err.status(), Some(Status::QueueDepthExceeded), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "failed fast, not at the 20 s deadline: {:?}",
        started.elapsed()
    );
    drop(release);
    drop(backlog);
    responder.close().unwrap();
}
