//! The idempotent producer at the broker, on raw frames (ARCHITECTURE §13.1): ids are handed
//! out once, a copy of a stored batch is answered with the original offsets and stores
//! nothing, a gap is refused, and the window is rebuilt from the log after a restart.

mod broker_common;

use broker_common::*;
use protocol::codes::{Command, Status};
use protocol::control::{self, FlushMode, InitProducerReply, ProduceAck};
use protocol::record::{BATCH_LEN_MAX, BatchBuilder, ProducerFields, Record, set_producer};

const TOPIC: &str = "A10-5101";

/// A one-record batch `value` numbered (`producer_id`, `epoch`, `sequence`).
fn numbered(value: &[u8], producer_id: u64, epoch: u32, sequence: u32) -> Vec<u8> {
    let mut builder = BatchBuilder::new(BATCH_LEN_MAX);
    builder
        .push(&Record {
            value,
            ..Record::default()
        })
        .unwrap();
    let sealed = builder.seal().unwrap();
    let mut bytes = sealed.bytes;
    let fields = ProducerFields {
        producer_id,
        epoch,
        sequence,
    };
    set_producer(&mut bytes, sealed.records_crc, fields).unwrap();
    bytes
}

fn produce(client: &mut Client, batch: &[u8]) -> Result<ProduceAck, (Status, String)> {
    let frame = client.produce_batch(Command::Produce, TOPIC, 0, batch);
    if frame.header.status == Status::Ok.code() {
        Ok(control::decode(&frame.body).unwrap())
    } else {
        Err(error_of(&frame).expect("an error reply"))
    }
}

fn producer_id(client: &mut Client) -> u64 {
    let body = client.call_ok(Command::InitProducer, &[], &[]);
    control::decode::<InitProducerReply>(&body)
        .unwrap()
        .producer_id
}

#[test]
fn copies_are_answered_with_their_offsets_gaps_refused_and_the_window_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), 1);
    let mut client = Client::connect(broker.shard_ports()[0], "idem@1#A10");
    client.create_topic(&topic_config(TOPIC, 1, FlushMode::Sync));
    let id = producer_id(&mut client);
    assert_ne!(id, producer_id(&mut client), "ids are handed out once");

    // Plain batches and numbered ones share the queue.
    client.produce(TOPIC, 0, &[b"plain"]);
    let first = produce(&mut client, &numbered(b"a", id, 0, 0)).unwrap();
    let second = produce(&mut client, &numbered(b"b", id, 0, 1)).unwrap();
    assert_eq!((first.base_offset, second.base_offset), (1, 2));
    // A copy: the original's offsets, nothing stored.
    assert_eq!(produce(&mut client, &numbered(b"a", id, 0, 0)), Ok(first));
    // A gap, and the start of an unknown producer that is not a start.
    let (status, message) = produce(&mut client, &numbered(b"d", id, 0, 3)).unwrap_err();
    assert_eq!(status, Status::OutOfOrderSequence, "{message}");
    let (status, _) = produce(&mut client, &numbered(b"x", id + 1, 0, 5)).unwrap_err();
    assert_eq!(status, Status::OutOfOrderSequence);
    client.produce(TOPIC, 0, &[b"plain"]);

    // After a restart the window is rebuilt from the log.
    drop(client);
    broker.shutdown().unwrap();
    let broker = start(dir.path(), 1);
    let mut client = Client::connect(broker.shard_ports()[0], "idem@2#A10");
    assert_eq!(produce(&mut client, &numbered(b"b", id, 0, 1)), Ok(second));
    let third = produce(&mut client, &numbered(b"c", id, 0, 2)).unwrap();
    assert_eq!(third.base_offset, 4);
    // A new epoch starts at 0; the old one's copies are still known.
    let (status, _) = produce(&mut client, &numbered(b"e", id, 1, 1)).unwrap_err();
    assert_eq!(status, Status::OutOfOrderSequence);
    produce(&mut client, &numbered(b"e", id, 1, 0)).unwrap();
    assert_eq!(produce(&mut client, &numbered(b"c", id, 0, 2)), Ok(third));
    // Ids are not handed out again after the restart.
    assert!(producer_id(&mut client) > id + 1);

    client.subscribe(
        TOPIC,
        "g",
        protocol::control::SubscriptionMode::Clustering,
        100,
    );
    let values: Vec<Vec<u8>> = client.collect(6).into_iter().map(|(_, _, v)| v).collect();
    let expected: Vec<&[u8]> = vec![b"plain", b"a", b"b", b"plain", b"c", b"e"];
    assert_eq!(values, expected, "each batch stored once, in order");
    broker.shutdown().unwrap();
}
