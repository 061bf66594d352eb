//! An async-flush topic never gives an acknowledged offset to another message after `kill -9`
//! (ARCHITECTURE §3.1, step 11): a broker in a child process takes N acknowledged messages on an
//! async topic and is killed with SIGKILL right after, losing its unsynced tail; restarted on the
//! same data, it acknowledges new messages only past every offset acknowledged before, and a
//! consumer reading from the start gets every surviving message at its own offset, jumps over
//! the recorded gap and gets every new one.

use std::collections::BTreeMap;

use client::{Admin, ConsumeMode, Consumer, ConsumerOptions, Message, Producer, StartFrom};
use defibus_tests::{
    ChildBroker, WAIT, broker_config, child_broker_main, client, create_topic, endpoint,
    start_nameserver, topic_config,
};
use protocol::control::FlushMode;
use testkit::wait_until;

const TOPIC: &str = "A10-3301";
const QUEUES: u32 = 2;
const BEFORE: usize = 300;
const AFTER: usize = 40;
/// The test the child process runs: see [`ChildBroker`].
const CHILD_ENTRY: &str = "child_broker";

#[test]
#[ignore = "entry point of the child broker process, run by ChildBroker::spawn"]
fn child_broker() {
    child_broker_main();
}

/// Sends `count` messages `prefix0..`; returns (queue id, offset) → value of each ack.
fn send(producer: &Producer, prefix: &str, count: usize) -> BTreeMap<(u32, u64), String> {
    let mut sent = BTreeMap::new();
    for i in 0..count {
        let value = format!("{prefix}{i}");
        let ack = producer
            .send(Message::new(TOPIC, value.clone()))
            .unwrap_or_else(|e| panic!("send of {value}: {e}"));
        assert!(
            sent.insert((ack.queue_id, ack.offset), value).is_none(),
            "queue {} offset {} acknowledged twice",
            ack.queue_id,
            ack.offset
        );
    }
    sent
}

#[test]
fn acknowledged_async_offsets_are_never_reused_after_kill_9() {
    let nameserver = start_nameserver(|_| {});
    let dir = tempfile::tempdir().unwrap();
    let config = broker_config("async-broker", 1, &dir.path().join("broker"), &nameserver);
    let broker = ChildBroker::spawn(CHILD_ENTRY, &config);
    let admin_client = client(&nameserver);
    create_topic(
        &Admin::new(&admin_client),
        &[endpoint(broker.shard_ports()[0])],
        &topic_config(TOPIC, QUEUES, FlushMode::Async),
    );
    let producer_client = client(&nameserver);
    let before = send(&Producer::new(&producer_client).unwrap(), "b", BEFORE);

    // SIGKILL right after the last ack: the unsynced tail is lost.
    broker.kill_9();
    producer_client.close();
    let broker = ChildBroker::spawn(CHILD_ENTRY, &config);
    let ports = broker.shard_ports().to_vec();
    wait_until("the route to name the restarted broker", WAIT, || {
        Admin::new(&admin_client).topic_route(TOPIC).is_ok_and(|r| {
            r.queues.len() == QUEUES as usize
                && r.queues.iter().all(|q| ports.contains(&q.shard_port))
        })
    });

    let producer_client = client(&nameserver);
    let after = send(&Producer::new(&producer_client).unwrap(), "a", AFTER);
    for queue in 0..QUEUES {
        let acked_before = before
            .keys()
            .filter(|(q, _)| *q == queue)
            .map(|(_, o)| *o)
            .max();
        let first_after = after
            .keys()
            .filter(|(q, _)| *q == queue)
            .map(|(_, o)| *o)
            .min();
        if let (Some(acked), Some(first)) = (acked_before, first_after) {
            assert!(
                first > acked,
                "queue {queue}: offset {first} acknowledged again after the crash (offsets up to \
                 {acked} were acknowledged before it)"
            );
        }
    }

    // From the start: survivors at their own offsets, then (past the gap) every new message.
    let audit_client = client(&nameserver);
    let audit = Consumer::subscribe_with(
        &audit_client,
        ConsumerOptions::new(TOPIC, "audit", ConsumeMode::Clustering)
            .start_from(StartFrom::Earliest),
    )
    .unwrap();
    let mut received = BTreeMap::new();
    let mut new_seen = 0;
    while new_seen < AFTER {
        let message = audit.recv(WAIT).expect("recv").unwrap_or_else(|| {
            panic!("{new_seen} of {AFTER} new messages arrived within {WAIT:?}: a stall")
        });
        let key = (message.queue_id, message.offset);
        let value = String::from_utf8(message.value).unwrap();
        let acked = before.get(&key).or_else(|| after.get(&key));
        assert_eq!(
            acked,
            Some(&value),
            "queue {} offset {} holds {value:?}, not the message acknowledged there",
            key.0,
            key.1
        );
        new_seen += usize::from(after.contains_key(&key));
        assert!(
            received.insert(key, value).is_none(),
            "{key:?} delivered twice"
        );
    }
    let survived = received.keys().filter(|k| before.contains_key(k)).count();
    println!("{survived} of {BEFORE} async-acknowledged messages survived the kill -9");
}
