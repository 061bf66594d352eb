//! Delayed and transactional messages through the Rust client (ARCHITECTURE §13.3-§13.4):
//! a delayed message arrives after its delay and a cancelled one never; a half is invisible
//! until committed; a producer that dies before its outcome is decided by a check-back to
//! another member of its producer group; a rolled-back half never arrives.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use client::{
    ClientError, ConsumeMode, Consumer, ConsumerOptions, Message, Producer, ReceivedMessage,
    StartFrom, TransactionOutcome, TransactionalProducer,
};
use defibus_tests::{Cluster, WAIT, client};
use protocol::codes::Status;
use protocol::control::FlushMode;
use testkit::wait_until;

type Seen = Arc<Mutex<Vec<(String, Instant)>>>;

fn consume(client: &client::Client, topic: &str) -> (Consumer, Seen) {
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let consumer = Consumer::start_with(
        client,
        ConsumerOptions::new(topic, "g", ConsumeMode::Clustering).start_from(StartFrom::Earliest),
        move |m: &ReceivedMessage| {
            let value = String::from_utf8(m.value.clone()).unwrap();
            sink.lock().unwrap().push((value, Instant::now()));
        },
    )
    .unwrap();
    (consumer, seen)
}

fn values(seen: &Seen) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|(v, _)| v.clone())
        .collect()
}

#[test]
fn delayed_messages_wait_for_their_time_and_cancelled_ones_never_come() {
    let cluster = Cluster::start(1, 1);
    let topic = "A10-7101";
    cluster.create_topic(topic, 1, FlushMode::Sync);
    let client = client(&cluster.nameserver);
    let producer = Producer::new(&client).unwrap();
    let (_consumer, seen) = consume(&client, topic);
    let sent_at = Instant::now();
    let delayed = producer
        .send(Message::new(topic, "in-300ms").with_delay(Duration::from_millis(300)))
        .unwrap();
    let id = delayed.held_id().expect("a delayed message has a held id");
    assert_eq!(id.to_string().parse::<client::HeldId>().unwrap(), id);
    let later = producer
        .send(Message::new(topic, "cancelled").deliver_at(SystemTime::now() + WAIT))
        .unwrap();
    producer.cancel(&later.held_id().unwrap()).unwrap();
    producer.send(Message::new(topic, "now")).unwrap();
    wait_until("the messages to arrive", WAIT, || values(&seen).len() >= 2);
    assert_eq!(values(&seen), ["now", "in-300ms"]);
    let arrived = seen.lock().unwrap()[1].1;
    assert!(arrived - sent_at >= Duration::from_millis(290), "too early");
    let refused: ClientError = producer.cancel(&id).unwrap_err();
    assert_eq!(refused.status(), Some(Status::HeldSettled), "{refused}");
    producer.send(Message::new(topic, "sentinel")).unwrap();
    wait_until("the messages to arrive", WAIT, || values(&seen).len() >= 3);
    assert_eq!(values(&seen), ["now", "in-300ms", "sentinel"]);
}

#[test]
fn a_half_of_a_crashed_producer_is_decided_by_another_member_of_its_group() {
    let cluster = Cluster::start_with(1, 1, |config| {
        config.held.check_interval_ms = 200;
    });
    let topic = "A10-7102";
    cluster.create_topic(topic, 1, FlushMode::Sync);
    let consumer_client = client(&cluster.nameserver);
    let (_consumer, seen) = consume(&consumer_client, topic);

    let crashing_client = client(&cluster.nameserver);
    let crashing = TransactionalProducer::new(&crashing_client, "orders-tx", |_| {
        TransactionOutcome::Unknown
    })
    .unwrap();
    let committed = crashing
        .send_half(Message::new(topic, "committed"))
        .unwrap();
    let rolled_back = crashing
        .send_half(Message::new(topic, "rolled-back"))
        .unwrap();
    crashing.send_half(Message::new(topic, "orphan")).unwrap();
    rolled_back.rollback().unwrap();
    committed.commit().unwrap();
    committed.commit().unwrap(); // twice is done, not an error
    wait_until("the messages to arrive", WAIT, || !values(&seen).is_empty());
    // The producer dies before deciding the orphan.
    crashing_client.close();
    drop(crashing);

    let asked = Arc::new(Mutex::new(Vec::new()));
    let record = asked.clone();
    let survivor_client = client(&cluster.nameserver);
    let survivor = TransactionalProducer::new(&survivor_client, "orders-tx", move |half| {
        let value = String::from_utf8(half.message.value.clone()).unwrap();
        record.lock().unwrap().push(value.clone());
        if value == "orphan" {
            TransactionOutcome::Commit
        } else {
            TransactionOutcome::Rollback
        }
    })
    .unwrap();
    survivor.listen(topic).unwrap();
    wait_until("the messages to arrive", WAIT, || values(&seen).len() >= 2);
    assert_eq!(values(&seen), ["committed", "orphan"]);
    assert!(asked.lock().unwrap().iter().all(|v| v == "orphan"));
    producer_sentinel(&cluster, topic);
    wait_until("the messages to arrive", WAIT, || values(&seen).len() >= 3);
    assert_eq!(
        values(&seen),
        ["committed", "orphan", "sentinel"],
        "no roll-back arrives"
    );
}

fn producer_sentinel(cluster: &Cluster, topic: &str) {
    let client = client(&cluster.nameserver);
    Producer::new(&client)
        .unwrap()
        .send(Message::new(topic, "sentinel"))
        .unwrap();
}
