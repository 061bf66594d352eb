//! Damaged stored data, seen from the outside (issue 11): a broker whose sealed segment (or,
//! after a clean stop, tail segment) has flipped bytes never serves them or anything past
//! them. The scrub finds the damage before any consumer, `stats` shows it, a consumer gets
//! every record before it in order and then a `DataDamaged` error (not silence), and
//! producers keep being acknowledged.

use std::path::Path;
use std::time::Duration;

use client::{
    Admin, ClientError, ConsumeMode, Consumer, ConsumerOptions, Message, Producer, StartFrom,
};
use defibus_tests::{
    WAIT, broker_config, client, create_topic, endpoint, start_broker, start_nameserver,
    topic_config,
};
use engine::BrokerConfig;
use protocol::codes::Status;
use protocol::control::FlushMode;
use protocol::record::BatchHeader;

const TOPIC: &str = "A10-3301";
const MESSAGES: u64 = 300;

fn config(data: &Path, nameserver: &nameserver::NameserverHandle) -> BrokerConfig {
    let mut config = broker_config("damage-broker", 1, data, nameserver);
    config.storage.segment_bytes_max = 8 << 10;
    // The scrub runs when asked, so the test decides who finds the damage first.
    config.storage.scrub_bytes_per_sec = 0;
    config
}

/// Flips the last payload byte of the middle batch of the second segment of queue 0; returns
/// that batch's base offset.
fn damage_sealed_segment(data: &Path) -> u64 {
    damage_batch(data, Which::MiddleOfSecondSegment)
}

enum Which {
    MiddleOfSecondSegment,
    LastOfTail,
}

/// Flips the last payload byte of a batch of queue 0; returns that batch's base offset.
fn damage_batch(data: &Path, which: Which) -> u64 {
    let dir = engine::topic::queue_dir(data, TOPIC, 0);
    let mut bases: Vec<u64> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            match engine::file::parse_segment_file_name(&name)? {
                (base, engine::file::SegmentFileKind::Log) => Some(base),
                _ => None,
            }
        })
        .collect();
    bases.sort_unstable();
    assert!(bases.len() >= 3, "segments: {bases:?}");
    let base = match which {
        Which::MiddleOfSecondSegment => bases[1],
        Which::LastOfTail => bases[bases.len() - 1],
    };
    let path = engine::file::log_path(&dir, base);
    let mut bytes = std::fs::read(&path).unwrap();
    let mut batches = Vec::new();
    let mut at = 0;
    while let Ok(header) = BatchHeader::decode(&bytes[at..]) {
        if header.batch_len == 0 {
            break;
        }
        batches.push((at, header.batch_len as usize, header.base_offset));
        at += header.batch_len as usize;
    }
    let (position, len, offset) = match which {
        Which::MiddleOfSecondSegment => batches[batches.len() / 2],
        Which::LastOfTail => batches[batches.len() - 1],
    };
    bytes[position + len - 1] ^= 0xFF;
    std::fs::write(&path, bytes).unwrap();
    offset
}

#[test]
fn damaged_data_is_reported_never_served_and_producers_go_on() {
    let nameserver = start_nameserver(|_| {});
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("broker");
    let broker = start_broker(config(&data, &nameserver));
    let admin_client = client(&nameserver);
    let admin = Admin::new(&admin_client);
    let shard = endpoint(broker.shard_ports()[0]);
    create_topic(&admin, &[shard], &topic_config(TOPIC, 1, FlushMode::Sync));
    testkit::wait_until(&format!("a route to {TOPIC}"), WAIT, || {
        admin.topic_route(TOPIC).is_ok_and(|r| r.queues.len() == 1)
    });
    let producer_client = client(&nameserver);
    let producer = Producer::new(&producer_client).unwrap();
    for i in 0..MESSAGES {
        let ack = producer
            .send(Message::new(TOPIC, format!("m{i:04}-{}", "x".repeat(80))))
            .unwrap();
        assert_eq!((ack.queue_id, ack.offset), (0, i));
    }
    drop(producer);
    broker.shutdown().unwrap();

    let damaged = damage_sealed_segment(&data);
    let broker = start_broker(config(&data, &nameserver));
    let port = broker.shard_ports()[0];
    let shard = endpoint(port);
    testkit::wait_until("the route to the restarted broker", WAIT, || {
        admin
            .topic_route(TOPIC)
            .is_ok_and(|r| r.queues.iter().all(|q| q.shard_port == port))
    });

    // The on-demand scrub finds it before any consumer reads.
    let report = admin.scrub(&shard, Some(TOPIC), WAIT).unwrap();
    assert_eq!(report.queues.len(), 1);
    let found = report.queues[0]
        .damage
        .as_ref()
        .expect("the scrub reports the damage");
    assert_eq!(found.offset, damaged);
    assert!(found.detail.contains("checksum"), "{}", found.detail);
    let stats = admin.stats(&shard).unwrap();
    assert_eq!(
        stats.queues[0].damage.as_ref().map(|d| d.offset),
        Some(damaged)
    );

    // Producers are still acknowledged: the queue takes writes, kept for after repair.
    let producer = Producer::new(&producer_client).unwrap();
    let ack = producer.send(Message::new(TOPIC, "after")).unwrap();
    assert_eq!(ack.offset, MESSAGES);

    // A consumer gets everything before the damage, in order, then an error it can see.
    let consumer_client = client(&nameserver);
    let options = ConsumerOptions::new(TOPIC, "readers", ConsumeMode::Clustering)
        .start_from(StartFrom::Earliest);
    let consumer = Consumer::subscribe_with(&consumer_client, options).unwrap();
    for expected in 0..damaged {
        let message = consumer
            .recv(WAIT)
            .expect("no error before the damage")
            .unwrap_or_else(|| panic!("offset {expected} did not arrive within {WAIT:?}"));
        assert_eq!(message.offset, expected, "in order, nothing skipped");
    }
    let error = testkit::wait_for(
        "the damage reported to the consumer",
        WAIT,
        || match consumer.recv(Duration::from_millis(100)) {
            Ok(Some(message)) => panic!("offset {} served past the damage", message.offset),
            Ok(None) => None,
            Err(e) => Some(e),
        },
    );
    match error {
        ClientError::Status { status, message } => {
            assert_eq!(status, Status::DataDamaged);
            assert!(message.contains(&format!("offset {damaged}")), "{message}");
            assert!(message.contains("defibus log repair"), "{message}");
        }
        other => panic!("unexpected error {other:?}"),
    }
    // Nothing past the damage comes afterwards either.
    assert!(matches!(
        consumer.recv(Duration::from_millis(300)),
        Ok(None)
    ));
    drop(consumer);
    broker.shutdown().unwrap();

    // The operator repairs the queue with the broker stopped.
    let queue_dir = engine::topic::queue_dir(&data, TOPIC, 0);
    let report = engine::log::repair::repair_queue_blocking(
        &queue_dir,
        engine::log::repair::RepairOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    assert!(report.consistent, "{report:?}");
    let skipped: Vec<(u64, u64)> = report.skipped.iter().map(|r| (r.from, r.to)).collect();
    assert_eq!(
        skipped,
        vec![(damaged, damaged + 1)],
        "only the damaged batch is skipped"
    );

    // Restarted, the queue serves everything intact, in order, with its own offsets.
    let broker = start_broker(config(&data, &nameserver));
    let port = broker.shard_ports()[0];
    let shard = endpoint(port);
    testkit::wait_until("the route to the repaired broker", WAIT, || {
        admin
            .topic_route(TOPIC)
            .is_ok_and(|r| r.queues.iter().all(|q| q.shard_port == port))
    });
    let stats = admin.stats(&shard).unwrap();
    assert_eq!(stats.queues[0].damage, None, "repaired");
    let recorded: Vec<(u64, u64)> = stats.queues[0]
        .skipped
        .iter()
        .map(|r| (r.from, r.to))
        .collect();
    assert_eq!(
        recorded,
        vec![(damaged, damaged + 1)],
        "stats shows what was skipped"
    );
    let options = ConsumerOptions::new(TOPIC, "after-repair", ConsumeMode::Clustering)
        .start_from(StartFrom::Earliest);
    let consumer = Consumer::subscribe_with(&consumer_client, options).unwrap();
    let want: Vec<u64> = (0..=MESSAGES).filter(|&o| o != damaged).collect();
    for &expected in &want {
        let message = consumer
            .recv(WAIT)
            .expect("no error after repair")
            .unwrap_or_else(|| panic!("offset {expected} did not arrive within {WAIT:?}"));
        assert_eq!(
            message.offset, expected,
            "in order, only the damaged offset skipped"
        );
        let value = String::from_utf8(message.value).unwrap();
        if expected < MESSAGES {
            assert!(value.starts_with(&format!("m{expected:04}-")), "{value}");
        } else {
            assert_eq!(value, "after");
        }
    }
    assert!(matches!(
        consumer.recv(Duration::from_millis(300)),
        Ok(None)
    ));
    consumer.close().unwrap();
    broker.shutdown().unwrap();
}

/// The last batch of the tail, damaged while the broker was stopped cleanly: where a crash's
/// torn write would be, but nothing can be torn after a clean stop. The broker must report it
/// (not cut it, which would lose acknowledged records) and never hand its offsets out again.
#[test]
fn damage_in_the_tail_after_a_clean_stop_is_reported_and_its_offsets_never_reused() {
    let nameserver = start_nameserver(|_| {});
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("broker");
    let broker = start_broker(config(&data, &nameserver));
    let admin_client = client(&nameserver);
    let admin = Admin::new(&admin_client);
    let shard = endpoint(broker.shard_ports()[0]);
    create_topic(&admin, &[shard], &topic_config(TOPIC, 1, FlushMode::Sync));
    testkit::wait_until(&format!("a route to {TOPIC}"), WAIT, || {
        admin.topic_route(TOPIC).is_ok_and(|r| r.queues.len() == 1)
    });
    let producer_client = client(&nameserver);
    let producer = Producer::new(&producer_client).unwrap();
    for i in 0..MESSAGES {
        let ack = producer
            .send(Message::new(TOPIC, format!("m{i:04}-{}", "x".repeat(80))))
            .unwrap();
        assert_eq!((ack.queue_id, ack.offset), (0, i));
    }
    drop(producer);
    broker.shutdown().unwrap();

    let damaged = damage_batch(&data, Which::LastOfTail);
    assert_eq!(damaged, MESSAGES - 1);
    let broker = start_broker(config(&data, &nameserver));
    let port = broker.shard_ports()[0];
    let shard = endpoint(port);
    testkit::wait_until("the route to the restarted broker", WAIT, || {
        admin
            .topic_route(TOPIC)
            .is_ok_and(|r| r.queues.iter().all(|q| q.shard_port == port))
    });
    let stats = admin.stats(&shard).unwrap();
    let queue = &stats.queues[0];
    let damage = queue.damage.as_ref().expect("stats shows the damage");
    assert_eq!(damage.offset, damaged);
    assert!(damage.detail.contains("checksum"), "{}", damage.detail);
    assert_eq!(queue.next_offset, MESSAGES, "nothing cut");

    // The damaged offset is never acknowledged for another record.
    let producer = Producer::new(&producer_client).unwrap();
    let ack = producer.send(Message::new(TOPIC, "after")).unwrap();
    assert_eq!(ack.offset, MESSAGES);

    let consumer_client = client(&nameserver);
    let options = ConsumerOptions::new(TOPIC, "readers", ConsumeMode::Clustering)
        .start_from(StartFrom::Earliest);
    let consumer = Consumer::subscribe_with(&consumer_client, options).unwrap();
    for expected in 0..damaged {
        let message = consumer
            .recv(WAIT)
            .expect("no error before the damage")
            .unwrap_or_else(|| panic!("offset {expected} did not arrive within {WAIT:?}"));
        assert_eq!(message.offset, expected, "in order, nothing skipped");
    }
    let error = testkit::wait_for(
        "the damage reported to the consumer",
        WAIT,
        || match consumer.recv(Duration::from_millis(100)) {
            Ok(Some(message)) => panic!("offset {} served past the damage", message.offset),
            Ok(None) => None,
            Err(e) => Some(e),
        },
    );
    assert!(
        matches!(&error, ClientError::Status { status, .. } if *status == Status::DataDamaged),
        "{error:?}"
    );
    drop(consumer);
    broker.shutdown().unwrap();
}
