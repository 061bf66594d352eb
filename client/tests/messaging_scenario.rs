//! Produce and consume against a real broker and nameserver on loopback.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::{
    ConsumeMode, Consumer, ConsumerOptions, Member, Message, Producer, QueueSelector, StartFrom,
};

use support::{Cluster, client, client_with};
use testkit::wait_until;

const WAIT: Duration = Duration::from_secs(30);

fn values(count: usize, prefix: &str) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

/// Collects every value delivered to a handler.
fn collector() -> (
    Arc<Mutex<Vec<String>>>,
    impl FnMut(&client::ReceivedMessage) + Send,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    (seen, move |m: &client::ReceivedMessage| {
        sink.lock()
            .unwrap()
            .push(String::from_utf8(m.value.clone()).unwrap());
    })
}

#[test]
fn produce_consume_round_trip() {
    let cluster = Cluster::start("A10-1001", 4);
    let client = client(&cluster.nameserver);
    let consumer = Consumer::subscribe_with(
        &client,
        ConsumerOptions::new("A10-1001", "round-trip", ConsumeMode::Clustering)
            .start_from(StartFrom::Earliest),
    )
    .unwrap();
    let producer = Producer::with_selector(&client, QueueSelector::KeyHash).unwrap();
    let sent = values(100, "m");
    let mut offsets = BTreeSet::new();
    for (i, value) in sent.iter().enumerate() {
        let message = Message::new("A10-1001", value.clone())
            .with_key(format!("k{}", i % 7))
            .with_tag("t")
            .with_property("index", i.to_string());
        let result = producer.send(message).unwrap();
        assert!(
            offsets.insert((result.queue_id, result.offset)),
            "{result:?}"
        );
    }
    let mut got = HashMap::new();
    while got.len() < sent.len() {
        let message = consumer
            .recv(WAIT)
            .unwrap()
            .unwrap_or_else(|| panic!("only {} of {} arrived", got.len(), sent.len()));
        assert_eq!(message.tag.as_deref(), Some("t"));
        let index: usize = std::str::from_utf8(message.property("index").unwrap())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(message.key, format!("k{}", index % 7).into_bytes());
        got.insert(String::from_utf8(message.value).unwrap(), message.offset);
    }
    let got: BTreeSet<_> = got.into_keys().collect();
    assert_eq!(got, sent.into_iter().collect());
    consumer.close().unwrap();
}

#[test]
fn batched_async_sends_are_each_acknowledged() {
    let cluster = Cluster::start("A10-1002", 2);
    let client = client_with(&cluster.nameserver, |c| {
        c.with_batch_linger(Duration::from_millis(2))
    });
    let producer = Producer::new(&client).unwrap();
    let futures: Vec<_> = values(500, "b")
        .into_iter()
        .map(|v| producer.send_async(Message::new("A10-1002", v)))
        .collect();
    let mut offsets = BTreeSet::new();
    for future in futures {
        let result = future.wait(WAIT).unwrap();
        assert!(
            offsets.insert((result.queue_id, result.offset)),
            "{result:?}"
        );
    }
    assert_eq!(offsets.len(), 500);
    producer.flush(WAIT).unwrap();
    let (seen, handler) = collector();
    let _consumer = Consumer::start_with(
        &client,
        ConsumerOptions::new("A10-1002", "batched", ConsumeMode::Clustering)
            .start_from(StartFrom::Earliest),
        handler,
    )
    .unwrap();
    wait_until("500 batched messages", WAIT, || {
        seen.lock().unwrap().len() >= 500
    });
    let distinct: BTreeSet<_> = seen.lock().unwrap().iter().cloned().collect();
    assert_eq!(distinct.len(), 500);
}

#[test]
fn two_groups_both_get_everything() {
    let cluster = Cluster::start("A10-1003", 4);
    let client = client(&cluster.nameserver);
    let (seen_a, handler_a) = collector();
    let (seen_b, handler_b) = collector();
    let start = |group: &str, handler| {
        Consumer::start_with(
            &client,
            ConsumerOptions::new("A10-1003", group, ConsumeMode::Clustering)
                .start_from(StartFrom::Earliest),
            handler,
        )
        .unwrap()
    };
    let _a = start("group-a", handler_a);
    let _b = start("group-b", handler_b);
    let producer = Producer::new(&client).unwrap();
    let sent = values(200, "g");
    for value in &sent {
        producer
            .send(Message::new("A10-1003", value.clone()))
            .unwrap();
    }
    for seen in [&seen_a, &seen_b] {
        wait_until("every message in each group", WAIT, || {
            seen.lock().unwrap().iter().collect::<BTreeSet<_>>().len() == sent.len()
        });
    }
}

#[test]
fn broadcast_reaches_every_consumer() {
    let cluster = Cluster::start("A10-1004", 2);
    let (seen_1, handler_1) = collector();
    let (seen_2, handler_2) = collector();
    let client_1 = client(&cluster.nameserver);
    let client_2 = client(&cluster.nameserver);
    assert_ne!(client_1.client_id(), client_2.client_id());
    let options = ConsumerOptions::new("A10-1004", "everyone", ConsumeMode::Broadcast)
        .start_from(StartFrom::Earliest);
    let _c1 = Consumer::start_with(&client_1, options.clone(), handler_1).unwrap();
    let _c2 = Consumer::start_with(&client_2, options, handler_2).unwrap();
    let producer = Producer::new(&client_1).unwrap();
    let sent = values(100, "all");
    for value in &sent {
        producer
            .send(Message::new("A10-1004", value.clone()))
            .unwrap();
    }
    for seen in [&seen_1, &seen_2] {
        wait_until("every message at each broadcast member", WAIT, || {
            seen.lock().unwrap().iter().collect::<BTreeSet<_>>().len() == sent.len()
        });
    }
}

/// A gateway (the proxy) carries many callers over one client: each consumer subscribes as
/// its own member, so a clustering group balances over them and a broadcast group feeds each.
#[test]
fn members_of_one_client_are_balanced_and_broadcast_to_as_distinct_members() {
    let cluster = Cluster::start("A10-1007", 4);
    let client = client(&cluster.nameserver);
    let member = |id: &str| Member {
        client_id: id.parse().unwrap(),
        area: "A10".parse().unwrap(),
    };
    let clustering = |id: &str| {
        ConsumerOptions::new("A10-1007", "shared", ConsumeMode::Clustering)
            .start_from(StartFrom::Earliest)
            .as_member(member(id))
    };
    let broadcast = |id: &str| {
        ConsumerOptions::new("A10-1007", "everyone", ConsumeMode::Broadcast)
            .start_from(StartFrom::Earliest)
            .as_member(member(id))
    };
    let (seen_1, handler_1) = collector();
    let (seen_2, handler_2) = collector();
    let (all_1, all_handler_1) = collector();
    let (all_2, all_handler_2) = collector();
    let _c1 = Consumer::start_with(&client, clustering("gw/a/1#A10"), handler_1).unwrap();
    let _c2 = Consumer::start_with(&client, clustering("gw/a/2#A10"), handler_2).unwrap();
    let _b1 = Consumer::start_with(&client, broadcast("gw/b/1#A10"), all_handler_1).unwrap();
    let _b2 = Consumer::start_with(&client, broadcast("gw/b/2#A10"), all_handler_2).unwrap();
    let producer = Producer::new(&client).unwrap();
    let sent = values(200, "member");
    for value in &sent {
        producer
            .send(Message::new("A10-1007", value.clone()))
            .unwrap();
    }
    wait_until("every message once in the clustering group", WAIT, || {
        seen_1.lock().unwrap().len() + seen_2.lock().unwrap().len() >= sent.len()
    });
    let (one, two) = (seen_1.lock().unwrap(), seen_2.lock().unwrap());
    assert!(
        !one.is_empty() && !two.is_empty(),
        "both members take a share of the queues: {} and {}",
        one.len(),
        two.len()
    );
    let union: BTreeSet<&String> = one.iter().chain(two.iter()).collect();
    assert_eq!(union.len(), sent.len(), "each message once");
    for seen in [&all_1, &all_2] {
        wait_until("every message at each broadcast member", WAIT, || {
            seen.lock().unwrap().iter().collect::<BTreeSet<_>>().len() == sent.len()
        });
    }
}

#[test]
fn oneway_sends_arrive() {
    let cluster = Cluster::start("A10-1005", 1);
    let client = client(&cluster.nameserver);
    let producer = Producer::new(&client).unwrap();
    for value in values(20, "o") {
        producer
            .send_oneway(Message::new("A10-1005", value))
            .unwrap();
    }
    let (seen, handler) = collector();
    let _consumer = Consumer::start_with(
        &client,
        ConsumerOptions::new("A10-1005", "oneway", ConsumeMode::Clustering)
            .start_from(StartFrom::Earliest),
        handler,
    )
    .unwrap();
    wait_until("20 oneway messages", WAIT, || {
        seen.lock().unwrap().len() >= 20
    });
}

#[test]
fn consumers_resubscribe_and_producers_reroute_after_a_broker_restart() {
    let mut cluster = Cluster::start("A10-1006", 2);
    let client = client_with(&cluster.nameserver, |c| {
        c.with_retries(5)
            .with_request_timeout(Duration::from_secs(2))
    });
    let (seen, handler) = collector();
    let _consumer = Consumer::start_with(
        &client,
        ConsumerOptions::new("A10-1006", "restart", ConsumeMode::Clustering)
            .start_from(StartFrom::Earliest),
        handler,
    )
    .unwrap();
    let producer = Producer::new(&client).unwrap();
    for value in values(20, "before") {
        producer.send(Message::new("A10-1006", value)).unwrap();
    }
    wait_until("messages before the restart", WAIT, || {
        seen.lock().unwrap().len() >= 20
    });
    cluster.restart_broker();
    let after = values(20, "after");
    for value in &after {
        let message = Message::new("A10-1006", value.clone());
        testkit::retry_until("a send after the restart", WAIT, || {
            producer.send(message.clone())
        });
    }
    wait_until("messages after the restart", WAIT, || {
        let seen = seen.lock().unwrap();
        after.iter().all(|v| seen.contains(v))
    });
}
