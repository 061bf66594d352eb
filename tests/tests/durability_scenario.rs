//! Committed offsets and sync-flushed messages survive `kill -9` of the broker: a broker in a
//! child process with a fixed data directory takes N acknowledged messages on a sync-flush
//! topic, a group consumes and commits K of them, the broker is killed with SIGKILL and
//! restarted on the same data, and a new member of the group resumes at the committed offsets
//! and gets exactly the other N − K, while every one of the N is still stored.

use std::collections::{BTreeMap, BTreeSet};

use client::{Admin, ConsumeMode, Consumer, ConsumerOptions, Message, Producer, StartFrom};
use defibus_tests::{
    ChildBroker, WAIT, broker_config, child_broker_main, client, create_topic, endpoint,
    start_nameserver, topic_config,
};
use protocol::control::FlushMode;
use testkit::wait_until;

const TOPIC: &str = "A10-3201";
const GROUP: &str = "durable";
const QUEUES: u32 = 2;
const MESSAGES: usize = 200;
const CONSUMED: usize = 120;
/// The test the child process runs: see [`ChildBroker`].
const CHILD_ENTRY: &str = "child_broker";

#[test]
#[ignore = "entry point of the child broker process, run by ChildBroker::spawn"]
fn child_broker() {
    child_broker_main();
}

/// (queue id, offset) → value of each message received.
type Received = BTreeMap<(u32, u64), String>;

/// Receives `count` messages from `consumer`, failing after [`WAIT`] without one.
fn receive(consumer: &Consumer, count: usize, into: &mut Received) {
    for i in 0..count {
        let message = consumer
            .recv(WAIT)
            .expect("recv")
            .unwrap_or_else(|| panic!("message {i} of {count} did not arrive within {WAIT:?}"));
        let value = String::from_utf8(message.value).unwrap();
        let previous = into.insert((message.queue_id, message.offset), value);
        assert!(
            previous.is_none(),
            "queue {} offset {} delivered twice",
            message.queue_id,
            message.offset
        );
    }
}

#[test]
fn committed_offsets_and_sync_messages_survive_kill_9() {
    let nameserver = start_nameserver(|_| {});
    let dir = tempfile::tempdir().unwrap();
    let config = broker_config("durable-broker", 2, &dir.path().join("broker"), &nameserver);
    let broker = ChildBroker::spawn(CHILD_ENTRY, &config);
    let admin_client = client(&nameserver);
    create_topic(
        &Admin::new(&admin_client),
        &[endpoint(broker.shard_ports()[0])],
        &topic_config(TOPIC, QUEUES, FlushMode::Sync),
    );

    // N messages, each acknowledged (after fdatasync, the topic being sync).
    let producer_client = client(&nameserver);
    let producer = Producer::new(&producer_client).unwrap();
    let mut sent = BTreeMap::new();
    for i in 0..MESSAGES {
        let value = format!("d{i}");
        let ack = producer
            .send(Message::new(TOPIC, value.clone()))
            .unwrap_or_else(|e| panic!("send of message {i}: {e}"));
        sent.insert((ack.queue_id, ack.offset), value);
    }
    assert_eq!(sent.len(), MESSAGES, "each ack names its own position");

    // Consume and commit K.
    let consumer_client = client(&nameserver);
    let options = ConsumerOptions::new(TOPIC, GROUP, ConsumeMode::Clustering)
        .start_from(StartFrom::Committed)
        .manual_commit();
    let consumer = Consumer::subscribe_with(&consumer_client, options.clone()).unwrap();
    let mut before = Received::new();
    receive(&consumer, CONSUMED, &mut before);
    consumer.commit().expect("commit of the first K");
    let committed: BTreeMap<u32, u64> = before.keys().fold(BTreeMap::new(), |mut next, (q, o)| {
        let entry = next.entry(*q).or_insert(0);
        *entry = (*entry).max(o + 1);
        next
    });

    // SIGKILL: nothing is flushed or closed cleanly; then restart on the same data.
    let old_ports = broker.shard_ports().to_vec();
    broker.kill_9();
    consumer_client.close();
    drop(consumer);
    let broker = ChildBroker::spawn(CHILD_ENTRY, &config);
    let new_ports = broker.shard_ports().to_vec();
    assert_ne!(old_ports, new_ports, "the restarted broker listens anew");
    wait_until(
        "the route to name the restarted broker's ports",
        WAIT,
        || {
            Admin::new(&admin_client).topic_route(TOPIC).is_ok_and(|r| {
                r.queues.len() == QUEUES as usize
                    && r.queues.iter().all(|q| new_ports.contains(&q.shard_port))
            })
        },
    );

    // Every acknowledged message is still stored.
    let stats = Admin::new(&admin_client)
        .stats(&endpoint(new_ports[0]))
        .expect("stats of the restarted broker");
    let stored: u64 = stats
        .queues
        .iter()
        .filter(|q| q.topic == TOPIC)
        .map(|q| q.next_offset)
        .sum();
    assert_eq!(stored, MESSAGES as u64, "records stored after the restart");

    // A new member of the group resumes at K and gets exactly the rest.
    let resumed_client = client(&nameserver);
    let resumed = Consumer::subscribe_with(&resumed_client, options).unwrap();
    let mut after = Received::new();
    receive(&resumed, MESSAGES - CONSUMED, &mut after);
    for queue in 0..QUEUES {
        let next = committed.get(&queue).copied().unwrap_or(0);
        let first = after.keys().find(|(q, _)| *q == queue).map(|(_, o)| *o);
        // A queue consumed to its end before the crash has nothing left to resume with.
        let expected = sent.contains_key(&(queue, next)).then_some(next);
        assert_eq!(
            first, expected,
            "queue {queue}: first offset after the restart, versus the committed offset {next}"
        );
    }
    let overlap: Vec<_> = before.keys().filter(|k| after.contains_key(k)).collect();
    assert!(
        overlap.is_empty(),
        "committed messages delivered again: {overlap:?}"
    );
    let mut all = before;
    all.extend(after);
    assert_eq!(
        all, sent,
        "before + after the crash is exactly what was acknowledged"
    );

    // And every one of the N is readable from the start by another group.
    let audit_client = client(&nameserver);
    let audit = Consumer::subscribe_with(
        &audit_client,
        ConsumerOptions::new(TOPIC, "audit", ConsumeMode::Clustering)
            .start_from(StartFrom::Earliest),
    )
    .unwrap();
    let mut audited = Received::new();
    receive(&audit, MESSAGES, &mut audited);
    let values: BTreeSet<&String> = audited.values().collect();
    assert_eq!(values.len(), MESSAGES, "distinct values read back");
    assert_eq!(audited, sent, "everything acknowledged reads back");
}
