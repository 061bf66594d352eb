//! Dynamic queues (DESIGN §6) on the two-area topology: a topic with `dynamic_queues` follows
//! the number of its A10 consumers on A10's brokers, growing readable queues before writable
//! ones and shrinking writable queues before readable ones, while a producer sends
//! throughout; no acknowledged message is lost. B20's brokers, with no B20 consumer, keep
//! their counts.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::{
    Admin, Client, ConsumeMode, Consumer, ConsumerOptions, Message, Producer, ReceivedMessage,
    StartFrom,
};
use defibus_tests::WAIT;
use defibus_tests::areas::TwoAreas;
use testkit::wait_until;

const TOPIC: &str = "A10-7005";
const GROUP: &str = "elastic";

/// (read, write) queue counts of `TOPIC` on the broker behind `endpoint`.
fn counts(admin: &Admin, endpoint: &str) -> (u32, u32) {
    let topics = admin.list_topics(endpoint).unwrap();
    let info = topics.iter().find(|t| t.topic == TOPIC).unwrap();
    (info.read_queue_count, info.write_queue_count)
}

fn consumer(
    topology: &TwoAreas,
    id: &str,
    seen: &Arc<Mutex<BTreeSet<String>>>,
) -> (Client, Consumer) {
    let client = topology.client("A10", |c| c.with_client_id(id).unwrap());
    let sink = seen.clone();
    let consumer = Consumer::start_with(
        &client,
        ConsumerOptions::new(TOPIC, GROUP, ConsumeMode::Clustering).start_from(StartFrom::Earliest),
        move |m: &ReceivedMessage| {
            sink.lock()
                .unwrap()
                .insert(String::from_utf8(m.value.clone()).unwrap());
        },
    )
    .unwrap_or_else(|e| panic!("consumer {id}: {e}"));
    (client, consumer)
}

#[test]
fn queues_follow_the_consumers_reads_first_on_growth_writes_first_on_shrink() {
    let topology = TwoAreas::start_with(2, 2, |c| {
        c.dynamic_queues_interval_ms = 100;
        c.dynamic_queues_write_delay_ms = 600;
    });
    topology.create_topic(TOPIC, 1, |c| c.dynamic_queues = true);
    let admin = topology.admin();
    let watched = topology.endpoints(Some("A10"))[0].clone();

    // Every (read, write) the watched broker shows, in order, from a watcher thread.
    let history: Arc<Mutex<Vec<(u32, u32)>>> = Arc::new(Mutex::new(vec![(1, 1)]));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (history, stop) = (history.clone(), stop.clone());
        let admin_client = topology.client("A10", |c| c);
        let watched = watched.clone();
        std::thread::spawn(move || {
            let admin = Admin::new(&admin_client);
            while !stop.load(Ordering::Acquire) {
                let now = counts(&admin, &watched);
                let mut history = history.lock().unwrap();
                if history.last() != Some(&now) {
                    history.push(now);
                }
                drop(history);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    // A producer sends throughout.
    let sending = Arc::new(AtomicBool::new(true));
    let producer = {
        let sending = sending.clone();
        let client = topology.client("A10", |c| c.with_retries(4));
        std::thread::spawn(move || {
            let producer = Producer::new(&client).unwrap();
            let mut acked = BTreeSet::new();
            let mut i = 0;
            while sending.load(Ordering::Acquire) {
                let value = format!("m{i}");
                producer
                    .send(Message::new(TOPIC, value.clone()))
                    .unwrap_or_else(|e| panic!("send {value}: {e}"));
                acked.insert(value);
                i += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            acked
        })
    };

    let seen: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut consumers: Vec<(Client, Consumer)> = ["c1#A10", "c2#A10", "c3#A10"]
        .iter()
        .map(|id| consumer(&topology, id, &seen))
        .collect();
    wait_until("three queues on both A10 brokers", WAIT, || {
        topology
            .endpoints(Some("A10"))
            .iter()
            .all(|e| counts(&admin, e) == (3, 3))
    });
    topology.wait_for_assignment(
        "each consumer holding a queue per A10 broker",
        TOPIC,
        GROUP,
        |a| {
            ["c1#A10", "c2#A10", "c3#A10"].iter().all(|c| {
                a.iter()
                    .filter(|((broker, _), member)| broker.starts_with("A10") && member == c)
                    .count()
                    == 2
            })
        },
    );

    // Two consumers leave: writes shrink at once, reads once the retired queues drained.
    for (client, consumer) in consumers.drain(1..) {
        consumer.close().unwrap();
        drop(client);
    }
    wait_until("one queue on both A10 brokers", WAIT, || {
        topology
            .endpoints(Some("A10"))
            .iter()
            .all(|e| counts(&admin, e) == (1, 1))
    });
    sending.store(false, Ordering::Release);
    let acked = producer.join().expect("the producer thread");
    stop.store(true, Ordering::Release);
    watcher.join().unwrap();

    let history = history.lock().unwrap().clone();
    assert!(
        history.iter().all(|(read, write)| write <= read),
        "a queue was writable before it was readable: {history:?}"
    );
    assert!(
        history.contains(&(3, 1)),
        "reads grew before writes: {history:?}"
    );
    assert!(history.contains(&(3, 3)), "{history:?}");
    assert!(
        history
            .iter()
            .skip_while(|c| **c != (3, 3))
            .any(|c| *c == (3, 1)),
        "writes shrank before reads: {history:?}"
    );
    for endpoint in topology.endpoints(Some("B20")) {
        assert_eq!(
            counts(&admin, &endpoint),
            (1, 1),
            "no B20 consumer: unchanged"
        );
    }
    wait_until("every acknowledged message consumed", WAIT, || {
        acked.is_subset(&seen.lock().unwrap())
    });
    assert!(
        acked.len() > 100,
        "the producer ran throughout: {}",
        acked.len()
    );
}
