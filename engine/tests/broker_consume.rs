//! Produce and consume against a real broker: push with credit, multicast, broadcast,
//! unicast rebalancing, committed offsets across restarts, forwarding between shards.

mod broker_common;

use std::time::Duration;

use broker_common::*;
use protocol::codes::Command;
use protocol::control::{self, FetchOffset, FlushMode, OffsetReply, SubscriptionMode};

const TOPIC: &str = "A10-2001";

fn values(prefix: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("{prefix}-{i}").into_bytes())
        .collect()
}

fn produce_all(client: &mut Client, queue: u32, values: &[Vec<u8>]) {
    for v in values {
        client.produce(TOPIC, queue, &[v]);
    }
}

#[test]
fn produced_records_are_pushed_back_within_credit() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), 1);
    let port = broker.shard_ports()[0];
    let mut producer = Client::connect(port, "producer");
    producer.create_topic(&topic_config(TOPIC, 1, FlushMode::Async));
    let ack = producer.produce(TOPIC, 0, &[b"a", b"b"]);
    assert_eq!((ack.base_offset, ack.next_offset), (0, 2));
    let ack = producer.produce(TOPIC, 0, &[b"c"]);
    assert_eq!((ack.base_offset, ack.next_offset), (2, 3));

    let mut consumer = Client::connect(port, "consumer");
    let sub = consumer.subscribe(TOPIC, "g1", SubscriptionMode::Clustering, 2);
    assert_eq!(sub.queue_ids, [0]);
    let got = consumer.collect(2);
    assert_eq!(got, [(0, 0, b"a".to_vec()), (0, 1, b"b".to_vec())]);
    // Credit is spent: nothing more until granted.
    assert!(consumer.next_push(Duration::from_millis(200)).is_none());
    consumer.credit(sub.subscription_id, 10);
    assert_eq!(consumer.collect(1), [(0, 2, b"c".to_vec())]);
    // Tailing: a new append is pushed at once.
    producer.produce(TOPIC, 0, &[b"d"]);
    assert_eq!(consumer.collect(1), [(0, 3, b"d".to_vec())]);
    drop((producer, consumer));
    broker.shutdown().unwrap();
}

#[test]
fn two_groups_each_get_everything_and_broadcast_members_too() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), 1);
    let port = broker.shard_ports()[0];
    let mut producer = Client::connect(port, "producer");
    producer.create_topic(&topic_config(TOPIC, 2, FlushMode::Async));
    let sent = values("m", 6);
    for (i, v) in sent.iter().enumerate() {
        producer.produce(TOPIC, i as u32 % 2, &[v]);
    }
    let mut consumers: Vec<Client> = Vec::new();
    for (client, group, mode) in [
        ("c1", "g1", SubscriptionMode::Clustering),
        ("c2", "g2", SubscriptionMode::Clustering),
        ("b1", "gb", SubscriptionMode::Broadcast),
        ("b2", "gb", SubscriptionMode::Broadcast),
    ] {
        let mut c = Client::connect(port, client);
        c.subscribe(TOPIC, group, mode, 100);
        consumers.push(c);
    }
    for c in &mut consumers {
        let mut got: Vec<Vec<u8>> = c.collect(6).into_iter().map(|(_, _, v)| v).collect();
        got.sort();
        let mut want = sent.clone();
        want.sort();
        assert_eq!(got, want, "{} got everything", c.client_id);
    }
    drop((producer, consumers));
    broker.shutdown().unwrap();
}

#[test]
fn unicast_members_split_queues_and_a_dead_members_queues_move_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), 1);
    let port = broker.shard_ports()[0];
    let mut producer = Client::connect(port, "producer");
    producer.create_topic(&topic_config(TOPIC, 4, FlushMode::Async));
    let mut a = Client::connect(port, "member-a");
    let sub_a = a.subscribe(TOPIC, "g", SubscriptionMode::Clustering, 1000);
    let mut b = Client::connect(port, "member-b");
    b.subscribe(TOPIC, "g", SubscriptionMode::Clustering, 1000);
    // member-a sorts first: queues 0 and 2; member-b: 1 and 3 (after a's revoke pause).
    for q in 0..4 {
        producer.produce(TOPIC, q, &[format!("q{q}").as_bytes()]);
    }
    let got_a = a.collect(2);
    let got_b = b.collect(2);
    let queues = |got: &[(u32, u64, Vec<u8>)]| {
        let mut q: Vec<u32> = got.iter().map(|g| g.0).collect();
        q.sort();
        q
    };
    assert_eq!(queues(&got_a), [0, 2]);
    assert_eq!(queues(&got_b), [1, 3]);
    // a commits queue 0 only, then dies with queue 2's record uncommitted.
    a.commit(sub_a.subscription_id, 0, 1);
    for q in 0..4 {
        producer.produce(TOPIC, q, &[format!("q{q}-second").as_bytes()]);
    }
    let _ = a.collect(2);
    drop(a);
    // b takes queues 0 and 2 at once: 0 from its commit (offset 1), 2 from the start.
    let got = b.collect(5);
    let mut values: Vec<String> = got
        .iter()
        .map(|g| String::from_utf8(g.2.clone()).unwrap())
        .collect();
    values.sort();
    assert_eq!(
        values,
        ["q0-second", "q1-second", "q2", "q2-second", "q3-second"]
    );
    drop((producer, b));
    broker.shutdown().unwrap();
}

#[test]
fn committed_offsets_and_sync_records_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), 1);
    let port = broker.shard_ports()[0];
    let mut client = Client::connect(port, "c1");
    client.create_topic(&topic_config(TOPIC, 1, FlushMode::Sync));
    produce_all(&mut client, 0, &values("s", 5));
    let sub = client.subscribe(TOPIC, "g", SubscriptionMode::Clustering, 1000);
    assert_eq!(client.collect(5).len(), 5);
    client.commit(sub.subscription_id, 0, 3);
    let fetch = FetchOffset {
        topic: TOPIC.into(),
        group: "g".into(),
        queue_id: 0,
    };
    let reply: OffsetReply = control::decode(&client.call_ok(
        Command::FetchOffset,
        &[],
        &control::encode(&fetch).unwrap(),
    ))
    .unwrap();
    assert_eq!(reply.offset, Some(3));
    drop(client);
    broker.shutdown().unwrap();

    let broker = start(dir.path(), 1);
    let mut client = Client::connect(broker.shard_ports()[0], "c1");
    client.subscribe(TOPIC, "g", SubscriptionMode::Clustering, 1000);
    let got = client.collect(2);
    assert_eq!(got, [(0, 3, b"s-3".to_vec()), (0, 4, b"s-4".to_vec())]);
    drop(client);
    broker.shutdown().unwrap();
}

#[test]
fn requests_for_another_shards_queue_are_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), 2);
    let ports = broker.shard_ports();
    let mut on_0 = Client::connect(ports[0], "p0");
    let mut on_1 = Client::connect(ports[1], "p1");
    on_0.create_topic(&topic_config(TOPIC, 8, FlushMode::Async));
    let owners: Vec<usize> = (0..8)
        .map(|q| engine::topic::owner_shard(TOPIC, q, 2))
        .collect();
    assert!(owners.contains(&0) && owners.contains(&1));
    // Every queue is produced to through both shards.
    for q in 0..8u32 {
        let a = on_0.produce(TOPIC, q, &[b"via-0"]);
        let b = on_1.produce(TOPIC, q, &[b"via-1"]);
        assert_eq!((a.base_offset, b.base_offset), (0, 1), "queue {q}");
    }
    // A consumer subscribes on each shard and receives each shard's own queues.
    let mut total = 0;
    for (shard, port) in ports.iter().enumerate() {
        let mut c = Client::connect(*port, "consumer");
        let sub = c.subscribe(TOPIC, "g", SubscriptionMode::Clustering, 1000);
        let mut expected: Vec<u32> = (0..8).filter(|&q| owners[q as usize] == shard).collect();
        assert_eq!(sub.queue_ids, expected);
        let got = c.collect(expected.len() * 2);
        let mut queues: Vec<u32> = got.iter().map(|g| g.0).collect();
        queues.dedup();
        queues.sort();
        queues.dedup();
        expected.sort();
        assert_eq!(queues, expected);
        total += got.len();
    }
    assert_eq!(total, 16);
    drop((on_0, on_1));
    broker.shutdown().unwrap();
}
