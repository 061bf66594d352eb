//! A full disk, as an operator meets it: the broker's data directory on a small loop-mounted
//! ext4 (or a tmpfs) that a filler file fills to the last block.
//!
//! - Writes that cannot be made fail visibly: a produce with a storage error once every queue
//!   it may go to refused it, a commit with an error from `Consumer::commit`; nothing
//!   acknowledged is lost, now or after a restart.
//! - Once the filler is deleted, the poisoned queues and offset journals take writes again
//!   without a restart (they reopen themselves).
//! - At the free-space watermark, produces get the retryable `DiskFull` while commits go on.
//! - A topic is deleted on a full disk; the broker starts on a full disk and serves reads.
//!
//! Mounting needs root; without it (or without loop devices) each test prints that it was
//! skipped.

use std::collections::BTreeMap;
use std::time::Duration;

use client::{
    Admin, Client, ClientError, ConsumeMode, Consumer, ConsumerOptions, Message, Producer,
    StartFrom,
};
use defibus_tests::disk::SmallDisk;
use defibus_tests::{
    WAIT, broker_config, client_with, create_topic, endpoint, start_broker, start_nameserver,
    topic_config,
};
use engine::{Broker, BrokerConfig};
use nameserver::NameserverHandle;
use protocol::codes::Status;
use protocol::control::FlushMode;
use testkit::{retry_until, wait_until};

const QUEUES: u32 = 4;
/// Values large enough that a few dozen fill the partial blocks a full disk still has room in.
const VALUE_BYTES: usize = 200;

/// (queue id, offset) → value.
type Stored = BTreeMap<(u32, u64), String>;

fn value(i: usize) -> String {
    format!("{i:0>width$}", width = VALUE_BYTES)
}

/// A broker on `disk` whose writes really reach a full disk (no watermark), and whose
/// poisoned logs reopen 100 ms after a failure.
fn config_on(disk: &SmallDisk, nameserver: &NameserverHandle) -> BrokerConfig {
    let mut config = broker_config("full", 2, &disk.path().join("broker"), nameserver);
    config.storage.min_free_percent = 0;
    config.storage.reopen_after_poison_ms = 100;
    config
}

/// A client that retries a refused send on up to 8 other queues, avoiding each failed one
/// for half a second. Idempotence off: a batch whose write failed is in doubt, and an
/// idempotent producer keeps it on its queue until its deadline rather than moving it
/// (ARCHITECTURE §13.1); these tests are about the storage errors and moving on.
fn retrying_client(nameserver: &NameserverHandle) -> Client {
    client_with(nameserver, |c| {
        c.with_idempotence(false)
            .with_retries(8)
            .with_queue_isolation(Duration::from_millis(500))
    })
}

/// Sends `values`, sync; returns what was acknowledged and the errors.
fn produce(
    producer: &Producer,
    topic: &str,
    values: impl Iterator<Item = usize>,
) -> (Stored, Vec<ClientError>) {
    let mut acked = Stored::new();
    let mut errors = Vec::new();
    for i in values {
        match producer.send(Message::new(topic, value(i))) {
            Ok(ack) => {
                acked.insert((ack.queue_id, ack.offset), value(i));
            }
            Err(e) => errors.push(e),
        }
    }
    (acked, errors)
}

/// Waits until the nameserver routes every queue of `topic` again (after a restart).
fn wait_for_route(client: &Client, topic: &str) {
    let admin = Admin::new(client);
    wait_until(
        &format!("a route to the {QUEUES} queues of {topic}"),
        WAIT,
        || {
            admin
                .topic_route(topic)
                .is_ok_and(|r| r.queues.len() == QUEUES as usize)
        },
    );
}

fn consumer(client: &Client, topic: &str, group: &str) -> Consumer {
    let options = ConsumerOptions::new(topic, group, ConsumeMode::Clustering)
        // The group's committed offsets; the oldest message where it committed none.
        .start_from(StartFrom::Committed)
        .manual_commit();
    Consumer::subscribe_with(client, options).expect("subscribe")
}

/// Receives until every message of `want` arrived (others, stored by writes whose failure was
/// answered, may come too: at least once); fails after [`WAIT`] without progress.
fn receive_all(consumer: &Consumer, want: &Stored) -> Stored {
    let mut got = Stored::new();
    while !want.keys().all(|k| got.contains_key(k)) {
        let missing = want.keys().filter(|k| !got.contains_key(*k)).count();
        let message = consumer.recv(WAIT).expect("recv").unwrap_or_else(|| {
            panic!("{missing} acknowledged messages did not arrive within {WAIT:?}")
        });
        got.insert(
            (message.queue_id, message.offset),
            String::from_utf8(message.value).unwrap(),
        );
    }
    for (key, value) in want {
        assert_eq!(got.get(key), Some(value), "message at {key:?}");
    }
    got
}

/// Sends a marker and checks it is the first message `group` receives: the group had
/// committed everything before it.
fn expect_first(group: &Consumer, producer: &Producer, topic: &str) {
    let marker = "after-the-commit";
    retry_until("the marker is stored", WAIT, || {
        producer.send(Message::new(topic, marker))
    });
    let first = group.recv(WAIT).expect("recv").expect("the marker arrives");
    assert_eq!(
        String::from_utf8(first.value).unwrap(),
        marker,
        "a message the group had committed came again"
    );
}

fn is_storage_refusal(e: &ClientError) -> bool {
    matches!(e.status(), Some(Status::StorageError | Status::DiskFull))
}

#[test]
fn a_full_disk_fails_writes_visibly_loses_nothing_acked_and_heals_without_a_restart() {
    let test = "a_full_disk_fails_writes_visibly_loses_nothing_acked_and_heals_without_a_restart";
    let Some(disk) = SmallDisk::ext4(test, 64) else {
        return;
    };
    let nameserver = start_nameserver(|_| {});
    let config = config_on(&disk, &nameserver);
    let broker = start_broker(config.clone());
    let topic = "A10-4101";
    let client = retrying_client(&nameserver);
    let admin = Admin::new(&client);
    create_topic(
        &admin,
        &[endpoint(broker.shard_ports()[0])],
        &topic_config(topic, QUEUES, FlushMode::Sync),
    );
    let producer = Producer::new(&client).unwrap();
    let (mut acked, errors) = produce(&producer, topic, 0..100);
    assert!(errors.is_empty(), "before the disk fills: {errors:?}");

    // The disk fills. Produces go on while some queue has room in its last block, then fail
    // with a storage error: never silently.
    disk.fill("filler");
    let (more, errors) = produce(&producer, topic, 100..400);
    acked.extend(more);
    assert!(
        !errors.is_empty(),
        "300 messages of 200 bytes fit on a full disk"
    );
    for e in &errors {
        assert!(is_storage_refusal(e), "a produce refused otherwise: {e}");
    }

    // Reads go on; the first commit of the group needs a block of its shard's journal, so it
    // fails, and the consumer sees it.
    let members = retrying_client(&nameserver);
    let group = consumer(&members, topic, "ledger");
    receive_all(&group, &acked);
    let refused = group.commit().expect_err("a commit on a full disk");
    assert_eq!(refused.status(), Some(Status::StorageError), "{refused}");
    assert!(group.commit_failures() >= 1);
    // Auto commits that fail are counted as they fail, and closing, which commits a last
    // time, says so: the messages would come again.
    let auto = Consumer::subscribe_with(
        &members,
        ConsumerOptions::new(topic, "auto", ConsumeMode::Clustering),
    )
    .unwrap();
    receive_all(&auto, &acked);
    wait_until("an auto commit failed", WAIT, || {
        auto.commit_failures() >= 1
    });
    let closed = auto.close().expect_err("closing commits, which fails");
    assert_eq!(closed.status(), Some(Status::StorageError), "{closed}");

    // Space returns: the same broker takes produces and commits again.
    std::fs::remove_file(disk.path().join("filler")).unwrap();
    let ack = retry_until("a produce once space returned", WAIT, || {
        producer.send(Message::new(topic, value(400)))
    });
    let (mut healed, errors) = produce(&producer, topic, 401..450);
    assert!(errors.is_empty(), "after space returned: {errors:?}");
    healed.insert((ack.queue_id, ack.offset), value(400));
    receive_all(&group, &healed);
    acked.extend(healed);
    retry_until("a commit once space returned", WAIT, || group.commit());
    group.close().unwrap();

    // Every acknowledged message is stored, before and after a restart.
    let fresh = consumer(&members, topic, "audit");
    receive_all(&fresh, &acked);
    fresh.close().unwrap();
    broker.shutdown().unwrap();
    let broker = start_broker(config);
    let after = retrying_client(&nameserver);
    wait_for_route(&after, topic);
    let audit = consumer(&after, topic, "audit-after-restart");
    receive_all(&audit, &acked);
    // The group committed everything: a new member's first message is the next one sent.
    let resumed = consumer(&after, topic, "ledger");
    expect_first(&resumed, &Producer::new(&after).unwrap(), topic);
    drop((audit, resumed, broker));
}

#[test]
fn at_the_watermark_produces_get_disk_full_while_reads_and_commits_go_on() {
    let test = "at_the_watermark_produces_get_disk_full_while_reads_and_commits_go_on";
    let Some(disk) = SmallDisk::tmpfs(test, 8) else {
        return;
    };
    let nameserver = start_nameserver(|_| {});
    let mut config = config_on(&disk, &nameserver);
    config.storage.min_free_percent = 50;
    let broker = start_broker(config);
    let topic = "A10-4102";
    let client = retrying_client(&nameserver);
    create_topic(
        &Admin::new(&client),
        &[endpoint(broker.shard_ports()[0])],
        &topic_config(topic, QUEUES, FlushMode::Sync),
    );
    let producer = Producer::new(&client).unwrap();
    let (acked, errors) = produce(&producer, topic, 0..40);
    assert!(errors.is_empty(), "below the watermark: {errors:?}");

    // 5 of 8 MiB taken by a filler: under 50% free.
    let filler = disk.path().join("filler");
    std::fs::write(&filler, vec![0u8; 5 << 20]).unwrap();
    assert!(disk.used_percent() > 50);
    let refused = retry_until(
        "a produce refused at the watermark",
        WAIT,
        || match producer.send(Message::new(topic, value(1000))) {
            Ok(ack) => Err(format!("stored at {ack:?}")),
            Err(e) => Ok(e),
        },
    );
    assert_eq!(refused.status(), Some(Status::DiskFull), "{refused}");
    assert!(
        refused.to_string().contains("free-space watermark"),
        "{refused}"
    );

    // Consumers read and commit at the watermark.
    let members = retrying_client(&nameserver);
    let group = consumer(&members, topic, "ledger");
    receive_all(&group, &acked);
    group.commit().expect("a commit at the watermark");

    std::fs::remove_file(&filler).unwrap();
    retry_until("a produce once space returned", WAIT, || {
        producer.send(Message::new(topic, value(2000)))
    });
    group.close().unwrap();
    drop(broker);
}

#[test]
fn a_topic_is_deleted_on_a_full_disk() {
    let test = "a_topic_is_deleted_on_a_full_disk";
    let Some(disk) = SmallDisk::ext4(test, 64) else {
        return;
    };
    let nameserver = start_nameserver(|_| {});
    let broker = start_broker(config_on(&disk, &nameserver));
    let client = retrying_client(&nameserver);
    let admin = Admin::new(&client);
    let broker_endpoint = endpoint(broker.shard_ports()[0]);
    for topic in ["A10-4103", "A10-4104"] {
        create_topic(
            &admin,
            std::slice::from_ref(&broker_endpoint),
            &topic_config(topic, QUEUES, FlushMode::Sync),
        );
    }
    let producer = Producer::new(&client).unwrap();
    let (_, errors) = produce(&producer, "A10-4103", 0..200);
    assert!(errors.is_empty(), "{errors:?}");

    disk.fill("filler");
    let used = disk.used_percent();
    admin
        .delete_topic(&broker_endpoint, "A10-4103")
        .expect("a topic delete on a full disk");
    let topics = admin.list_topics(&broker_endpoint).unwrap();
    assert!(
        topics.iter().all(|t| t.topic != "A10-4103"),
        "deleted: {topics:?}"
    );
    assert!(topics.iter().any(|t| t.topic == "A10-4104"));
    // Its data goes in the background, and the reserve is filled again from it.
    let data = disk.path().join("broker").join("queues").join("A10-4103");
    wait_until("the deleted topic's data is gone", WAIT, || !data.exists());
    assert!(disk.used_percent() <= used, "deleting freed space");
    drop(broker);
}

#[test]
fn the_broker_starts_on_a_full_disk_and_serves_every_message() {
    let test = "the_broker_starts_on_a_full_disk_and_serves_every_message";
    let Some(disk) = SmallDisk::ext4(test, 64) else {
        return;
    };
    let nameserver = start_nameserver(|_| {});
    let config = config_on(&disk, &nameserver);
    let broker = start_broker(config.clone());
    let topic = "A10-4105";
    let client = retrying_client(&nameserver);
    create_topic(
        &Admin::new(&client),
        &[endpoint(broker.shard_ports()[0])],
        &topic_config(topic, QUEUES, FlushMode::Sync),
    );
    let producer = Producer::new(&client).unwrap();
    let (acked, errors) = produce(&producer, topic, 0..100);
    assert!(errors.is_empty(), "{errors:?}");
    // A group commits part of it, so the journal has data to replay at the next start.
    let group = consumer(&client, topic, "ledger");
    receive_all(&group, &acked);
    group.commit().unwrap();
    group.close().unwrap();
    drop((producer, client));
    broker.shutdown().unwrap();

    disk.fill("filler");
    let broker: Broker = Broker::start(config).expect("the broker starts on a full disk");
    let client = retrying_client(&nameserver);
    wait_for_route(&client, topic);
    let audit = consumer(&client, topic, "audit");
    receive_all(&audit, &acked);
    // The committed offsets were read on the full disk: once there is room for a new
    // message, it is the group's first.
    let resumed = consumer(&client, topic, "ledger");
    std::fs::remove_file(disk.path().join("filler")).unwrap();
    expect_first(&resumed, &Producer::new(&client).unwrap(), topic);
    drop((audit, resumed, broker));
}

#[test]
fn a_full_queue_poisons_only_that_queue_and_producers_go_to_the_others() {
    let test = "a_full_queue_poisons_only_that_queue_and_producers_go_to_the_others";
    let dir = tempfile::tempdir().unwrap();
    let nameserver = start_nameserver(|_| {});
    let mut config = broker_config("full", 2, &dir.path().join("broker"), &nameserver);
    config.storage.reopen_after_poison_ms = 100;
    let topic = "A10-4106";
    // Queue 2 alone lives on a tiny tmpfs, filled before the topic exists.
    let full_queue = 2;
    let queue_dir = engine::topic::queue_dir(&config.data_dir, topic, full_queue);
    std::fs::create_dir_all(&queue_dir).unwrap();
    let Some(queue_disk) = SmallDisk::tmpfs_at(test, &queue_dir, 64) else {
        return;
    };
    let filler = queue_disk.fill("filler");
    let broker = start_broker(config);
    let client = retrying_client(&nameserver);
    create_topic(
        &Admin::new(&client),
        &[endpoint(broker.shard_ports()[0])],
        &topic_config(topic, QUEUES, FlushMode::Sync),
    );

    // Round robin reaches queue 2, which refuses; the send goes to another queue.
    let producer = Producer::new(&client).unwrap();
    let (acked, errors) = produce(&producer, topic, 0..100);
    assert!(errors.is_empty(), "every send found a queue: {errors:?}");
    assert!(acked.keys().all(|(queue, _)| *queue != full_queue));
    let queues: std::collections::BTreeSet<u32> = acked.keys().map(|(q, _)| *q).collect();
    assert_eq!(
        queues.len(),
        QUEUES as usize - 1,
        "the other queues all took writes"
    );

    // Space returns: queue 2 takes writes again, without a restart.
    std::fs::remove_file(filler).unwrap();
    retry_until("a send stored on the queue that was full", WAIT, || {
        let ack = producer
            .send(Message::new(topic, value(1000)))
            .map_err(|e| e.to_string())?;
        if ack.queue_id == full_queue {
            Ok(())
        } else {
            Err(format!("stored on queue {}", ack.queue_id))
        }
    });
    let members = retrying_client(&nameserver);
    let group = consumer(&members, topic, "ledger");
    receive_all(&group, &acked);
    drop((group, broker, queue_disk));
}

#[test]
fn the_broker_restarts_on_a_disk_filled_before_any_commit_and_serves_every_message() {
    let test = "the_broker_restarts_on_a_disk_filled_before_any_commit_and_serves_every_message";
    let Some(disk) = SmallDisk::ext4(test, 64) else {
        return;
    };
    let nameserver = start_nameserver(|_| {});
    let config = config_on(&disk, &nameserver);
    let broker = start_broker(config.clone());
    let topic = "A10-4107";
    let client = retrying_client(&nameserver);
    create_topic(
        &Admin::new(&client),
        &[endpoint(broker.shard_ports()[0])],
        &topic_config(topic, QUEUES, FlushMode::Sync),
    );
    let producer = Producer::new(&client).unwrap();
    let (acked, errors) = produce(&producer, topic, 0..100);
    assert!(errors.is_empty(), "{errors:?}");

    // The first commits meet a full disk: the journals get segment files without data, the
    // files a restarted shard opens first.
    disk.fill("filler");
    let group = consumer(&client, topic, "ledger");
    receive_all(&group, &acked);
    group.commit().expect_err("a commit on a full disk");
    group.close().unwrap();
    drop((producer, client));
    broker.shutdown().unwrap();

    let broker = Broker::start(config).expect("the broker starts on a full disk");
    let client = retrying_client(&nameserver);
    wait_for_route(&client, topic);
    let audit = consumer(&client, topic, "audit");
    receive_all(&audit, &acked);

    // Nothing was committed: the group gets everything again, and commits once there is room.
    std::fs::remove_file(disk.path().join("filler")).unwrap();
    let group = consumer(&client, topic, "ledger");
    receive_all(&group, &acked);
    retry_until("a commit once space returned", WAIT, || group.commit());
    group.close().unwrap();
    let resumed = consumer(&client, topic, "ledger");
    expect_first(&resumed, &Producer::new(&client).unwrap(), topic);
    drop((audit, resumed, broker));
}
