//! A queue whose offsets have a recorded gap (after an async crash or a `log repair`) is
//! delivered across it: consumers get every record before and after the gap, see the offsets
//! jump, and keep getting new records; the push loop neither stalls nor spins at the gap.

mod broker_common;

use broker_common::*;
use engine::{
    Broker, file,
    log::{SkipReason, SkippedRange},
    topic::queue_dir,
};
use protocol::control::{FlushMode, SubscriptionMode};
use protocol::record::{MessageType, stamp};

const TOPIC: &str = "A10-7100";

#[test]
fn consumers_get_every_record_across_a_recorded_gap() {
    let dir = tempfile::tempdir().unwrap();
    init_logs();
    let broker = Broker::start(config(dir.path(), 1)).expect("broker starts");
    let mut client = Client::connect(broker.shard_ports()[0], "gap-producer");
    client.create_topic(&topic_config(TOPIC, 1, FlushMode::Sync));
    for value in [&b"zero"[..], b"one", b"two"] {
        client.produce(TOPIC, 0, &[value]);
    }
    drop(client);
    broker.shutdown().unwrap();

    // What a repair leaves: offsets 3..100 recorded as skipped, a segment from 100.
    let queue = queue_dir(dir.path(), TOPIC, 0);
    let mut after = batch(&[b"hundred"], MessageType::Event, &[]);
    stamp(&mut after, 100, 1).unwrap();
    std::fs::write(file::log_path(&queue, 100), &after).unwrap();
    let skipped = SkippedRange {
        from: 3,
        to: 100,
        reason: SkipReason::Damaged,
        time_ms: 1,
    };
    std::fs::write(file::skipped_path(&queue), skipped.encode()).unwrap();

    let broker = Broker::start(config(dir.path(), 1)).expect("broker restarts");
    let mut producer = Client::connect(broker.shard_ports()[0], "gap-producer");
    let mut consumer = Client::connect(broker.shard_ports()[0], "gap-consumer");
    let ack = consumer.subscribe(TOPIC, "gap-group", SubscriptionMode::Clustering, 100);
    let got: Vec<(u64, Vec<u8>)> = consumer
        .collect(4)
        .into_iter()
        .map(|(_, offset, value)| (offset, value))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, b"zero".to_vec()),
            (1, b"one".to_vec()),
            (2, b"two".to_vec()),
            (100, b"hundred".to_vec()),
        ],
        "subscription {ack:?}"
    );
    // New records after the gap keep flowing.
    let produced = producer.produce(TOPIC, 0, &[b"after"]);
    assert_eq!(produced.next_offset, 102);
    let next: Vec<u64> = consumer.collect(1).iter().map(|(_, o, _)| *o).collect();
    assert_eq!(next, vec![101]);
    drop((producer, consumer));
    broker.shutdown().unwrap();
}

#[test]
fn a_consumer_waiting_in_a_gap_at_the_end_gets_the_next_record() {
    let dir = tempfile::tempdir().unwrap();
    init_logs();
    let broker = Broker::start(config(dir.path(), 1)).expect("broker starts");
    let mut client = Client::connect(broker.shard_ports()[0], "gap-producer");
    client.create_topic(&topic_config(TOPIC, 1, FlushMode::Sync));
    for value in [&b"zero"[..], b"one", b"two"] {
        client.produce(TOPIC, 0, &[value]);
    }
    drop(client);
    broker.shutdown().unwrap();

    // What an async crash leaves: a reservation past the recovered end. The broker's open
    // records the gap 3..100 itself and continues at 100.
    let queue = queue_dir(dir.path(), TOPIC, 0);
    let reserved = engine::log::reservation::Record {
        sequence: 1,
        limit: 100,
    };
    let mut bytes = vec![0u8; 2 * engine::log::reservation::SLOT_BYTES];
    bytes[engine::log::reservation::SLOT_BYTES..].copy_from_slice(&reserved.encode());
    std::fs::write(file::reservation_path(&queue), bytes).unwrap();

    let broker = Broker::start(config(dir.path(), 1)).expect("broker restarts");
    let mut producer = Client::connect(broker.shard_ports()[0], "gap-producer");
    let mut consumer = Client::connect(broker.shard_ports()[0], "gap-consumer");
    consumer.subscribe(TOPIC, "gap-group", SubscriptionMode::Clustering, 100);
    let got: Vec<u64> = consumer.collect(3).iter().map(|(_, o, _)| *o).collect();
    assert_eq!(got, vec![0, 1, 2]);
    // The push loop now waits at offset 3, inside the gap; the next record lands at 100.
    let produced = producer.produce(TOPIC, 0, &[b"hundred"]);
    assert_eq!(
        produced.base_offset, 100,
        "an offset below the reservation was reused"
    );
    let next: Vec<(u64, Vec<u8>)> = consumer
        .collect(1)
        .into_iter()
        .map(|(_, offset, value)| (offset, value))
        .collect();
    assert_eq!(next, vec![(100, b"hundred".to_vec())]);
    drop((producer, consumer));
    broker.shutdown().unwrap();
}
