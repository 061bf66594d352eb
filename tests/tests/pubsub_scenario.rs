//! Publish/subscribe across two brokers registered with one nameserver: a topic created on
//! both spreads a producer's messages over both brokers' queues; a clustering group gets each
//! message exactly once; two groups each get everything (multicast); three broadcast
//! instances each get everything.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use client::{
    Client, ConsumeMode, Consumer, ConsumerOptions, Message, Producer, ReceivedMessage, StartFrom,
};
use defibus_tests::{Cluster, WAIT, client};
use protocol::control::FlushMode;
use testkit::wait_until;

const QUEUES_PER_BROKER: u32 = 4;
const MESSAGES: usize = 400;

/// Every delivery one consumer saw: (value, broker endpoint, queue id, offset).
type Seen = Arc<Mutex<Vec<(String, String, u32, u64)>>>;

/// Starts a consumer of `topic` in `group` from the earliest message, recording deliveries.
fn consume(client: &Client, topic: &str, group: &str, mode: ConsumeMode) -> (Consumer, Seen) {
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let consumer = Consumer::start_with(
        client,
        ConsumerOptions::new(topic, group, mode).start_from(StartFrom::Earliest),
        move |m: &ReceivedMessage| {
            sink.lock().unwrap().push((
                String::from_utf8(m.value.clone()).unwrap(),
                m.endpoint.clone(),
                m.queue_id,
                m.offset,
            ));
        },
    )
    .unwrap_or_else(|e| panic!("consumer of {topic} in {group}: {e}"));
    (consumer, seen)
}

/// Sends `MESSAGES` messages round robin; returns their values and how many each broker
/// acknowledged, asserting both brokers got some.
fn produce(cluster: &Cluster, topic: &str) -> (BTreeSet<String>, BTreeMap<String, usize>) {
    let producer_client = client(&cluster.nameserver);
    let producer = Producer::new(&producer_client).unwrap();
    let mut values = BTreeSet::new();
    let mut per_broker = BTreeMap::new();
    let mut stored = BTreeSet::new();
    for i in 0..MESSAGES {
        let value = format!("{topic}-m{i}");
        let sent = producer
            .send(Message::new(topic, value.clone()))
            .unwrap_or_else(|e| panic!("send of message {i}: {e}"));
        assert!(
            stored.insert((sent.broker_id.clone(), sent.queue_id, sent.offset)),
            "message {i} acknowledged at an already used position {sent:?}"
        );
        *per_broker.entry(sent.broker_id).or_insert(0) += 1;
        values.insert(value);
    }
    assert_eq!(
        per_broker.len(),
        cluster.brokers.len(),
        "round robin over both brokers' queues; acks per broker: {per_broker:?}"
    );
    // The brokers agree: their queues hold exactly what they acknowledged.
    for (endpoint, broker) in cluster.endpoints().iter().zip(&cluster.brokers) {
        let stats = cluster.admin().stats(endpoint).unwrap();
        let held: u64 = stats
            .queues
            .iter()
            .filter(|q| q.topic == topic)
            .map(|q| q.next_offset - q.start_offset)
            .sum();
        assert_eq!(
            held as usize,
            per_broker[broker.broker_id()],
            "records held by {} versus messages it acknowledged",
            broker.broker_id()
        );
    }
    (values, per_broker)
}

/// Waits until the consumers in `seen` together received at least as many messages as
/// `values` holds, then asserts each value arrived exactly once among them.
fn assert_exactly_once(who: &str, seen: &[&Seen], values: &BTreeSet<String>) {
    let received = || seen.iter().map(|s| s.lock().unwrap().len()).sum::<usize>();
    wait_until(
        &format!("{who} to receive all {} messages", values.len()),
        WAIT,
        || received() >= values.len(),
    );
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for consumer in seen {
        for (value, ..) in consumer.lock().unwrap().iter() {
            *counts.entry(value.clone()).or_insert(0) += 1;
        }
    }
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicated.is_empty(),
        "{who}: {} messages delivered more than once, e.g. {:?}",
        duplicated.len(),
        &duplicated[..duplicated.len().min(5)]
    );
    let received: BTreeSet<String> = counts.into_keys().collect();
    let missing: Vec<_> = values.difference(&received).collect();
    let unexpected: Vec<_> = received.difference(values).collect();
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "{who}: {} missing (e.g. {:?}), {} unexpected (e.g. {:?})",
        missing.len(),
        missing.first(),
        unexpected.len(),
        unexpected.first()
    );
}

#[test]
fn a_clustering_group_across_two_brokers_gets_each_message_exactly_once() {
    let topic = "A10-3001";
    let cluster = Cluster::start(2, 2);
    cluster.create_topic(topic, QUEUES_PER_BROKER, FlushMode::Async);
    let (client_a, client_b) = (client(&cluster.nameserver), client(&cluster.nameserver));
    let (_a, seen_a) = consume(&client_a, topic, "pubsub", ConsumeMode::Clustering);
    let (_b, seen_b) = consume(&client_b, topic, "pubsub", ConsumeMode::Clustering);
    // Produce only once the group settled, so no queue moves between members mid-stream.
    cluster.wait_for_assignment(
        topic,
        "pubsub",
        2 * QUEUES_PER_BROKER as usize,
        &[client_a.client_id(), client_b.client_id()],
    );
    let (values, _) = produce(&cluster, topic);

    assert_exactly_once("group pubsub (both members)", &[&seen_a, &seen_b], &values);
    let (count_a, count_b) = (seen_a.lock().unwrap().len(), seen_b.lock().unwrap().len());
    assert!(
        count_a > 0 && count_b > 0,
        "both members share the queues: member a got {count_a}, member b got {count_b}"
    );
    // A member only ever hears from queues the group assigned to it: no queue is shared.
    let queues = |seen: &Seen| -> BTreeSet<(String, u32)> {
        seen.lock()
            .unwrap()
            .iter()
            .map(|(_, e, q, _)| (e.clone(), *q))
            .collect()
    };
    let shared: Vec<_> = queues(&seen_a)
        .intersection(&queues(&seen_b))
        .cloned()
        .collect();
    assert!(
        shared.is_empty(),
        "queues consumed by both members: {shared:?}"
    );
}

#[test]
fn two_groups_each_get_every_message() {
    let topic = "A10-3002";
    let cluster = Cluster::start(2, 2);
    cluster.create_topic(topic, QUEUES_PER_BROKER, FlushMode::Async);
    let (client_1, client_2) = (client(&cluster.nameserver), client(&cluster.nameserver));
    let (_g1, seen_1) = consume(&client_1, topic, "multicast-1", ConsumeMode::Clustering);
    let (_g2, seen_2) = consume(&client_2, topic, "multicast-2", ConsumeMode::Clustering);
    let queues_total = 2 * QUEUES_PER_BROKER as usize;
    cluster.wait_for_assignment(topic, "multicast-1", queues_total, &[client_1.client_id()]);
    cluster.wait_for_assignment(topic, "multicast-2", queues_total, &[client_2.client_id()]);
    let (values, _) = produce(&cluster, topic);
    assert_exactly_once("group multicast-1", &[&seen_1], &values);
    assert_exactly_once("group multicast-2", &[&seen_2], &values);
}

#[test]
fn three_broadcast_instances_each_get_every_message() {
    let topic = "A10-3003";
    let cluster = Cluster::start(2, 2);
    cluster.create_topic(topic, QUEUES_PER_BROKER, FlushMode::Async);
    let clients: Vec<Client> = (0..3).map(|_| client(&cluster.nameserver)).collect();
    let ids: BTreeSet<&str> = clients.iter().map(Client::client_id).collect();
    assert_eq!(ids.len(), 3, "three distinct instances: {ids:?}");
    // Broadcast offsets are per instance and start at the earliest message, so instances
    // need not be settled before producing.
    let consumers: Vec<_> = clients
        .iter()
        .map(|c| consume(c, topic, "broadcast", ConsumeMode::Broadcast))
        .collect();
    let (values, _) = produce(&cluster, topic);
    for (i, (_, seen)) in consumers.iter().enumerate() {
        assert_exactly_once(&format!("broadcast instance {i}"), &[seen], &values);
    }
}

/// A member joining a group whose queues were never pushed from should get its share at once:
/// there is nothing uncommitted to wait for.
///
/// Diagnosis: `engine/src/group.rs` `wait_for_commit` returns early only when
/// `committed.is_some_and(|c| c >= delivered)`; a queue nobody ever committed (`None`) waits
/// the whole `revoke_timeout_ms` (3 s by default) even when `delivered` is still the start
/// offset ("uncommitted below 0" in the log). Every rebalance of a fresh group stalls its
/// moved queues for the revoke timeout; the scenarios above take ~3 s longer for it.
#[test]
fn a_joining_member_gets_untouched_queues_before_the_revoke_timeout() {
    let topic = "A10-3004";
    let cluster = Cluster::start(1, 2);
    cluster.create_topic(topic, QUEUES_PER_BROKER, FlushMode::Async);
    let (client_a, client_b) = (client(&cluster.nameserver), client(&cluster.nameserver));
    let (_a, seen_a) = consume(&client_a, topic, "join", ConsumeMode::Clustering);
    let queues = QUEUES_PER_BROKER as usize;
    cluster.wait_for_assignment(topic, "join", queues, &[client_a.client_id()]);
    let (_b, seen_b) = consume(&client_b, topic, "join", ConsumeMode::Clustering);
    // The assignment in the statistics changes at once; the pushes of moved queues are what
    // the revoke pause holds back.
    cluster.wait_for_assignment(
        topic,
        "join",
        queues,
        &[client_a.client_id(), client_b.client_id()],
    );
    let produced = std::time::Instant::now();
    let (values, _) = produce(&cluster, topic);
    assert_exactly_once("group join (both members)", &[&seen_a, &seen_b], &values);
    let delivered_after = produced.elapsed();
    let revoke_timeout =
        std::time::Duration::from_millis(engine::config::REVOKE_TIMEOUT_MS_DEFAULT);
    assert!(
        delivered_after < revoke_timeout / 2,
        "{} messages took {delivered_after:?} to reach the group: moved queues waited for a \
         commit although nothing was pushed from them; the revoke timeout is {revoke_timeout:?}",
        values.len()
    );
}
