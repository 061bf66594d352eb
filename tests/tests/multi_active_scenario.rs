//! Nearby consume and multi-active (DESIGN §6) on the two-area topology: each area's queues
//! go to that area's consumers; when every consumer of A10 dies, B20's consumers take A10's
//! queues; when A10's consumers come back, the queues return to them; nothing acknowledged is
//! lost on the way.

use std::collections::BTreeMap;
use std::sync::Arc;

use client::{Client, ConsumeMode, Consumer, ConsumerOptions, Message, Producer, StartFrom};
use defibus_tests::areas::{TwoAreas, area_of, broker_area};
use defibus_tests::{Seen, WAIT, record_seen};
use testkit::wait_until;

const TOPIC: &str = "A10-7002";
const GROUP: &str = "active";

fn start_consumer(topology: &TwoAreas, id: &str, seen: &Seen) -> (Client, Consumer) {
    let area = area_of(id).to_owned();
    let client = topology.client(&area, |c| c.with_client_id(id).unwrap());
    let consumer = Consumer::start_with(
        &client,
        ConsumerOptions::new(TOPIC, GROUP, ConsumeMode::Clustering)
            .start_from(StartFrom::Committed),
        record_seen(seen, id),
    )
    .unwrap_or_else(|e| panic!("consumer {id}: {e}"));
    (client, consumer)
}

/// Sends `count` messages tagged `phase`; returns value → the area of the broker storing it.
fn produce(producer: &Producer, phase: &str, count: usize) -> BTreeMap<String, String> {
    (0..count)
        .map(|i| {
            let value = format!("{phase}-{i}");
            let sent = producer
                .send(Message::new(TOPIC, value.clone()))
                .unwrap_or_else(|e| panic!("send {value}: {e}"));
            (value, broker_area(&sent.broker_id).to_owned())
        })
        .collect()
}

/// Waits until every value of `sent` was consumed, then checks each was consumed only by
/// consumers of the area `expected` names for the area of the queue it was stored in.
fn expect_consumed(
    seen: &Seen,
    sent: &BTreeMap<String, String>,
    what: &str,
    expected: impl Fn(&str) -> &'static str,
) {
    wait_until(what, WAIT, || {
        let seen = seen.lock().unwrap();
        sent.keys().all(|v| seen.contains_key(v))
    });
    let seen = seen.lock().unwrap();
    for (value, stored_in) in sent {
        let want = expected(stored_in);
        assert!(
            seen[value].iter().all(|c| area_of(c) == want),
            "{what}: {value} (stored in {stored_in}) consumed by {:?}, expected only {want}",
            seen[value]
        );
    }
}

/// The assignment is nearby: each area's queues held by that area's consumers.
fn nearby(assignment: &BTreeMap<(String, u32), String>) -> bool {
    assignment.len() == 8
        && assignment
            .iter()
            .all(|((broker, _), member)| area_of(member) == broker_area(broker))
}

#[test]
fn an_areas_queues_move_to_the_other_area_while_its_consumers_are_dead_and_return() {
    let topology = TwoAreas::start(2, 1);
    topology.create_topic(TOPIC, 2, |_| {});
    let seen: Seen = Arc::default();
    let mut a_consumers: Vec<(Client, Consumer)> = ["a1#A10", "a2#A10"]
        .iter()
        .map(|id| start_consumer(&topology, id, &seen))
        .collect();
    let _b_consumers: Vec<(Client, Consumer)> = ["b1#B20", "b2#B20"]
        .iter()
        .map(|id| start_consumer(&topology, id, &seen))
        .collect();
    topology.wait_for_assignment("nearby", TOPIC, GROUP, nearby);

    let a_client = topology.client("A10", |c| c);
    let a_producer = Producer::new(&a_client).unwrap();
    let b_client = topology.client("B20", |c| c);
    let b_producer = Producer::new(&b_client).unwrap();
    let mut all = BTreeMap::new();

    // Nearby send and nearby consume: each area's messages stay in that area.
    let mut sent = produce(&a_producer, "a-before", 100);
    assert!(
        sent.values().all(|area| area == "A10"),
        "nearby send: {sent:?}"
    );
    let from_b = produce(&b_producer, "b-before", 100);
    assert!(
        from_b.values().all(|area| area == "B20"),
        "nearby send: {from_b:?}"
    );
    sent.extend(from_b);
    expect_consumed(&seen, &sent, "nearby consume", |area| {
        if area == "A10" { "A10" } else { "B20" }
    });
    all.extend(sent);

    // Every A10 consumer dies abruptly: B20's consumers take A10's queues.
    for (client, consumer) in a_consumers.drain(..) {
        client.close();
        drop(consumer);
    }
    topology.wait_for_assignment("all held by B20", TOPIC, GROUP, |a| {
        a.len() == 8 && a.values().all(|m| area_of(m) == "B20")
    });
    let sent = produce(&a_producer, "a-while-dead", 100);
    assert!(sent.values().all(|area| area == "A10"));
    expect_consumed(&seen, &sent, "A10's messages consumed in B20", |_| "B20");
    all.extend(sent);

    // A10's consumers come back: its queues return to them.
    let _a_consumers: Vec<(Client, Consumer)> = ["a1#A10", "a2#A10"]
        .iter()
        .map(|id| start_consumer(&topology, id, &seen))
        .collect();
    topology.wait_for_assignment("nearby again", TOPIC, GROUP, nearby);
    let sent = produce(&a_producer, "a-after", 100);
    expect_consumed(&seen, &sent, "A10's messages back in A10", |_| "A10");
    all.extend(sent);

    let seen = seen.lock().unwrap();
    let lost: Vec<&String> = all.keys().filter(|v| !seen.contains_key(*v)).collect();
    assert!(lost.is_empty(), "lost: {lost:?}");
}
