//! Nearby send (DESIGN §6) on two areas whose brokers all carry one topic: a producer in A10
//! sends only to A10 queues while A10 has enough healthy writable ones (`min_local_queues`,
//! default 1); when it has fewer, every area's queues take the traffic; when A10 comes back,
//! the traffic goes home. No send fails on the way: a send that hits a stopped broker is
//! retried elsewhere.

use std::collections::BTreeSet;
use std::time::Duration;

use client::{Admin, Client, Message, Producer};
use defibus_tests::WAIT;
use defibus_tests::areas::{TwoAreas, broker_area};
use testkit::wait_until;

const QUEUES: u32 = 2;
/// Messages sent per phase: enough for round robin to visit every queue several times.
const BATCH: usize = 32;

/// The brokers `count` sends of one producer land on; every send must succeed.
fn send_batch(producer: &Producer, topic: &str, phase: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            producer
                .send(Message::new(topic, format!("{phase}-{i}")))
                .unwrap_or_else(|e| panic!("{phase}: send {i} failed: {e}"))
                .broker_id
        })
        .collect()
}

fn distinct(brokers: &[String]) -> BTreeSet<&str> {
    brokers.iter().map(String::as_str).collect()
}

/// Waits until `area`'s own nameserver routes `queues` queues of `topic`.
fn wait_for_routed_queues(topology: &TwoAreas, area: &str, topic: &str, queues: usize) {
    let client = topology.client(area, |c| c);
    let admin = Admin::new(&client);
    wait_until(&format!("{queues} routed queues of {topic}"), WAIT, || {
        admin
            .topic_route(topic)
            .is_ok_and(|r| r.queues.len() == queues)
    });
}

fn producer_client(topology: &TwoAreas, min_local_queues: usize) -> Client {
    topology.client("A10", |c| {
        c.with_min_local_queues(min_local_queues)
            // Short, so that brokers coming back are seen within the scenario.
            .with_route_refresh_interval(Duration::from_millis(300))
    })
}

#[test]
fn an_a10_producer_stays_home_leaves_when_a10_is_down_and_comes_back() {
    let mut topology = TwoAreas::start(2, 1);
    let topic = "A10-7101";
    topology.create_topic(topic, QUEUES, |_| {});
    let client = producer_client(&topology, 1);
    let producer = Producer::new(&client).unwrap();

    let home = send_batch(&producer, topic, "home", BATCH);
    assert_eq!(
        distinct(&home),
        BTreeSet::from(["A10-broker-0", "A10-broker-1"]),
        "only A10 queues, both A10 brokers"
    );

    // Both A10 brokers stop (cleanly: they leave the routes). Sends go to B20, none fails.
    let configs = [
        topology.stop_broker("A10", 0),
        topology.stop_broker("A10", 1),
    ];
    let away = send_batch(&producer, topic, "away", BATCH);
    assert!(
        away.iter().all(|b| broker_area(b) == "B20"),
        "with A10 down every message lands in B20: {away:?}"
    );
    assert_eq!(distinct(&away).len(), 2, "both B20 brokers share it");

    // A10 returns (new ports, same data): once the producer's route has it, home again.
    for (index, config) in configs.into_iter().enumerate() {
        topology.restart_broker("A10", index, config);
    }
    wait_for_routed_queues(&topology, "A10", topic, 4 * QUEUES as usize);
    wait_until("a send landing in A10 again", WAIT, || {
        let sent = send_batch(&producer, topic, "probe", 1);
        broker_area(&sent[0]) == "A10"
    });
    let back = send_batch(&producer, topic, "back", BATCH);
    assert!(
        back.iter().all(|b| broker_area(b) == "A10"),
        "back in A10, nothing leaves the area: {back:?}"
    );
    assert!(
        client.isolated_queues().is_empty(),
        "queues of the stopped brokers are not isolated on their new ports: {:?}",
        client.isolated_queues()
    );
}

#[test]
fn fewer_healthy_a10_queues_than_min_local_queues_spread_sends_over_both_areas() {
    let mut topology = TwoAreas::start(2, 1);
    let topic = "A10-7102";
    topology.create_topic(topic, QUEUES, |_| {});
    // A10 has 4 queues; ask for at least 3 to stay home.
    let client = producer_client(&topology, 3);
    let producer = Producer::new(&client).unwrap();

    let home = send_batch(&producer, topic, "home", BATCH);
    assert!(home.iter().all(|b| broker_area(b) == "A10"), "{home:?}");

    // One A10 broker stops: 2 healthy A10 queues are fewer than 3, so every area's queues
    // share the traffic, the remaining A10 broker's among them.
    topology.stop_broker("A10", 1);
    wait_for_routed_queues(&topology, "A10", topic, 3 * QUEUES as usize);
    let spread = send_batch(&producer, topic, "spread", BATCH);
    assert_eq!(
        distinct(&spread),
        BTreeSet::from(["A10-broker-0", "B20-broker-0", "B20-broker-1"]),
        "{spread:?}"
    );
}
