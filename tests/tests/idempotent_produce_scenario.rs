//! An idempotent producer stores every record exactly once across `kill -9` of its broker
//! (ARCHITECTURE §13.1): a broker in a child process takes a stream of distinct records on a
//! sync-flush topic from a batching producer with retries; partway it is killed with SIGKILL
//! (batches in flight, some stored and unacknowledged) and restarted on the same data. The
//! producer retries what may have been stored on the same queue with the same numbers, and the
//! restarted broker, its duplicate window rebuilt from the log, answers those copies with the
//! original offsets. Then everything is read back: each record exactly once, none missing.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use client::{Admin, ClientError, ConsumeMode, Consumer, ConsumerOptions, Message, Producer};
use client::{SendResult, StartFrom};
use defibus_tests::{
    ChildBroker, WAIT, broker_config, child_broker_main, client, client_with, create_topic,
    endpoint, start_nameserver, topic_config,
};
use protocol::control::FlushMode;

const TOPIC: &str = "A10-3301";
const QUEUES: u32 = 2;
const RECORDS: usize = 20_000;
/// Acknowledged records after which the broker is killed.
const KILL_AFTER: usize = 6_000;
/// The test the child process runs: see [`ChildBroker`].
const CHILD_ENTRY: &str = "child_broker";

#[test]
#[ignore = "entry point of the child broker process, run by ChildBroker::spawn"]
fn child_broker() {
    child_broker_main();
}

type Outcome = (usize, Result<SendResult, ClientError>);

fn send(producer: &Producer, i: usize, outcomes: &mpsc::Sender<Outcome>) {
    let outcomes = outcomes.clone();
    producer.send_with_callback(Message::new(TOPIC, format!("r{i:05}")), move |result| {
        let _ = outcomes.send((i, result));
    });
}

#[test]
fn every_record_is_stored_exactly_once_across_kill_9_of_the_broker() {
    let nameserver = start_nameserver(|_| {});
    let dir = tempfile::tempdir().unwrap();
    let config = broker_config("idem-broker", 2, &dir.path().join("broker"), &nameserver);
    let mut broker = Some(ChildBroker::spawn(CHILD_ENTRY, &config));
    let admin_client = client(&nameserver);
    let first_ports = broker.as_ref().unwrap().shard_ports().to_vec();
    create_topic(
        &Admin::new(&admin_client),
        &[endpoint(first_ports[0])],
        &topic_config(TOPIC, QUEUES, FlushMode::Sync),
    );

    // Idempotence is the default; retries long enough to outlast a restart.
    let producer_client = client_with(&nameserver, |mut c| {
        // Small batches, many in flight on each queue when the broker dies.
        c.batch_bytes_max = 2048;
        c.with_retries(40)
            .with_batch_linger(Duration::from_millis(1))
    });
    let producer = Producer::new(&producer_client).unwrap();
    let (outcomes_tx, outcomes) = mpsc::channel::<Outcome>();
    for i in 0..RECORDS {
        send(&producer, i, &outcomes_tx);
    }

    let mut acked: BTreeMap<usize, (u32, u64)> = BTreeMap::new();
    let mut in_doubt = Vec::new();
    let mut resent = 0usize;
    let deadline = Instant::now() + Duration::from_secs(240);
    while acked.len() + in_doubt.len() < RECORDS {
        let left = deadline.saturating_duration_since(Instant::now());
        let (i, result) = outcomes
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("{} of {RECORDS} sends settled in time", acked.len()));
        match result {
            Ok(sent) => {
                let previous = acked.insert(i, (sent.queue_id, sent.offset));
                assert!(previous.is_none(), "record {i} acknowledged twice");
            }
            Err(e @ ClientError::MaybeStored { .. }) => in_doubt.push((i, e.to_string())),
            // Refused, so not stored: the application sends it again.
            Err(_) => {
                resent += 1;
                send(&producer, i, &outcomes_tx);
            }
        }
        if acked.len() == KILL_AFTER {
            if let Some(running) = broker.take() {
                running.kill_9();
                broker = Some(ChildBroker::spawn(CHILD_ENTRY, &config));
            }
        }
    }
    assert!(in_doubt.is_empty(), "sends given up in doubt: {in_doubt:?}");
    assert!(
        producer.producer_id().is_some(),
        "the producer was numbered"
    );
    let positions: std::collections::BTreeSet<_> = acked.values().collect();
    assert_eq!(positions.len(), RECORDS, "each ack names its own position");
    eprintln!("{resent} sends refused and sent again by the application");

    // Everything stored reads back: each record once.
    let broker = broker.expect("running");
    let stats = Admin::new(&admin_client)
        .stats(&endpoint(broker.shard_ports()[0]))
        .expect("stats");
    let stored: u64 = stats
        .queues
        .iter()
        .filter(|q| q.topic == TOPIC)
        .map(|q| q.next_offset)
        .sum();
    let reader_client = client(&nameserver);
    let reader = Consumer::subscribe_with(
        &reader_client,
        ConsumerOptions::new(TOPIC, "audit", ConsumeMode::Clustering)
            .start_from(StartFrom::Earliest),
    )
    .unwrap();
    let mut read: BTreeMap<String, Vec<(u32, u64)>> = BTreeMap::new();
    for n in 0..stored {
        let message = reader
            .recv(WAIT)
            .expect("recv")
            .unwrap_or_else(|| panic!("record {n} of {stored} stored did not arrive"));
        read.entry(String::from_utf8(message.value).unwrap())
            .or_default()
            .push((message.queue_id, message.offset));
    }
    let twice: Vec<_> = read.iter().filter(|(_, at)| at.len() > 1).collect();
    assert!(twice.is_empty(), "records stored more than once: {twice:?}");
    assert_eq!(stored, RECORDS as u64, "records stored");
    for (i, position) in &acked {
        let value = format!("r{i:05}");
        assert_eq!(
            read.get(&value).map(|at| at[0]),
            Some(*position),
            "record {i} is where its ack said"
        );
    }
}
