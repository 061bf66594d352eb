//! A clustering consumer dies mid-stream: its client closes every connection at once, with
//! messages processed but not committed. Its queues move to the surviving members and restart
//! at the committed offsets, so nothing is lost, and the only duplicates are messages the dead
//! member processed after its last commit.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use client::{ConsumeMode, Consumer, ConsumerOptions, Message, Producer, StartFrom};
use defibus_tests::{Cluster, WAIT, client, client_with};
use protocol::control::FlushMode;
use testkit::wait_until;

const TOPIC: &str = "A10-3101";
const GROUP: &str = "failover";
/// Six queues, so each of three members holds two.
const QUEUES: u32 = 6;
const MESSAGES: usize = 900;
/// The victim commits after every this many messages …
const COMMIT_EVERY: usize = 20;
/// … does so this many times …
const COMMITS: usize = 2;
/// … then processes this many more without committing, and dies.
const UNCOMMITTED: usize = 15;

#[test]
fn a_killed_consumers_queues_move_to_the_survivors_with_bounded_duplicates() {
    let cluster = Cluster::start(1, 2);
    cluster.create_topic(TOPIC, QUEUES, FlushMode::Async);
    // `Committed` (the earliest message while nothing is committed): a queue taken over must
    // resume at the group's commit; `Earliest` would restart it from the oldest message.
    let options = ConsumerOptions::new(TOPIC, GROUP, ConsumeMode::Clustering)
        .start_from(StartFrom::Committed);

    // Two survivors with a handler and auto commit.
    let survivor_clients = [client(&cluster.nameserver), client(&cluster.nameserver)];
    let survivor_seen: Vec<Arc<Mutex<Vec<String>>>> =
        (0..2).map(|_| Arc::new(Mutex::new(Vec::new()))).collect();
    let _survivors: Vec<Consumer> = survivor_clients
        .iter()
        .zip(&survivor_seen)
        .map(|(c, seen)| {
            let seen = seen.clone();
            Consumer::start_with(c, options.clone(), move |m| {
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8(m.value.clone()).unwrap());
            })
            .unwrap()
        })
        .collect();
    // The victim pulls, commits by hand, and keeps a small credit window so most of its
    // queues' messages are still unpushed when it dies.
    let victim_client = client_with(&cluster.nameserver, |c| c.with_credit_window(10));
    let victim = Consumer::subscribe_with(&victim_client, options.clone().manual_commit()).unwrap();
    cluster.wait_for_assignment(
        TOPIC,
        GROUP,
        QUEUES as usize,
        &[
            victim_client.client_id(),
            survivor_clients[0].client_id(),
            survivor_clients[1].client_id(),
        ],
    );
    let victim_queues: BTreeSet<u32> = cluster
        .assignment(TOPIC, GROUP)
        .into_iter()
        .filter(|(_, member)| member == victim_client.client_id())
        .map(|((_, queue), _)| queue)
        .collect();

    // Produce the whole stream while the victim consumes.
    let producer_client = client(&cluster.nameserver);
    let producer = std::thread::spawn(move || {
        let producer = Producer::new(&producer_client).unwrap();
        (0..MESSAGES)
            .map(|i| {
                let value = format!("m{i}");
                producer
                    .send(Message::new(TOPIC, value.clone()))
                    .unwrap_or_else(|e| panic!("send of message {i}: {e}"));
                value
            })
            .collect::<BTreeSet<String>>()
    });

    let mut committed = Vec::new();
    let mut uncommitted = Vec::new();
    for _ in 0..COMMITS {
        for _ in 0..COMMIT_EVERY {
            uncommitted.push(victim_value(&victim));
        }
        victim.commit().expect("the victim's commit");
        committed.append(&mut uncommitted);
    }
    for _ in 0..UNCOMMITTED {
        uncommitted.push(victim_value(&victim));
    }
    // Abrupt death: every connection closes at once; nothing more is committed.
    victim_client.close();
    drop(victim);

    wait_until("the victim's queues to move to the survivors", WAIT, || {
        let assignment = cluster.assignment(TOPIC, GROUP);
        victim_queues.iter().all(|q| {
            assignment.iter().any(|((_, queue), member)| {
                queue == q && survivor_clients.iter().any(|c| c.client_id() == member)
            })
        })
    });
    let sent = producer.join().expect("the producer thread");

    // Nothing is lost: the victim's and the survivors' deliveries together hold every message.
    let victim_seen: Vec<&String> = committed.iter().chain(&uncommitted).collect();
    wait_until("every message to be consumed by someone", WAIT, || {
        let survivors: BTreeSet<String> = survivor_seen
            .iter()
            .flat_map(|s| s.lock().unwrap().clone())
            .collect();
        sent.iter()
            .all(|v| survivors.contains(v) || victim_seen.contains(&v))
    });

    let mut deliveries: BTreeMap<&str, usize> = BTreeMap::new();
    let survivor_values: Vec<String> = survivor_seen
        .iter()
        .flat_map(|s| s.lock().unwrap().clone())
        .collect();
    for value in victim_seen
        .iter()
        .map(|v| v.as_str())
        .chain(survivor_values.iter().map(String::as_str))
    {
        *deliveries.entry(value).or_insert(0) += 1;
    }
    let unexpected: Vec<_> = deliveries.keys().filter(|v| !sent.contains(**v)).collect();
    assert!(unexpected.is_empty(), "values never sent: {unexpected:?}");
    let duplicates: usize = deliveries.values().map(|n| n - 1).sum();
    let duplicated: BTreeSet<&str> = deliveries
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(v, _)| *v)
        .collect();
    let window: BTreeSet<&str> = uncommitted.iter().map(String::as_str).collect();
    eprintln!(
        "victim: {} committed, {} uncommitted; survivors: {} deliveries; duplicates: {duplicates}",
        committed.len(),
        uncommitted.len(),
        survivor_values.len()
    );
    assert!(
        duplicates <= uncommitted.len(),
        "{duplicates} duplicate deliveries exceed the {} messages the victim processed but \
         did not commit",
        uncommitted.len()
    );
    let outside: Vec<_> = duplicated.difference(&window).collect();
    assert!(
        outside.is_empty(),
        "duplicated messages outside the victim's uncommitted window: {outside:?}"
    );
    let redelivered_committed: Vec<_> = committed
        .iter()
        .filter(|v| deliveries[v.as_str()] > 1)
        .collect();
    assert!(
        redelivered_committed.is_empty(),
        "messages the victim committed were delivered again: {redelivered_committed:?}"
    );
}

/// The victim's next message, which must come within [`WAIT`].
fn victim_value(victim: &Consumer) -> String {
    let message = victim
        .recv(WAIT)
        .expect("the victim receives")
        .unwrap_or_else(|| panic!("the victim got nothing within {WAIT:?}"));
    String::from_utf8(message.value).unwrap()
}
