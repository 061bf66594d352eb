//! Topic administration against a real broker.

mod broker_common;

use broker_common::*;
use protocol::codes::{Command, Status};
use protocol::control::{self, FlushMode, TopicList, TopicName};

#[test]
fn topics_are_created_listed_updated_and_deleted_across_shards() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), 2);
    let ports = broker.shard_ports();
    assert_eq!(ports.len(), 2);
    // Admin on shard 1 is forwarded to shard 0, which owns the registry.
    let mut admin = Client::connect(ports[1], "admin-1");
    admin.create_topic(&topic_config("A10-1001", 4, FlushMode::Async));
    admin.create_topic(&topic_config("A10-1002", 2, FlushMode::Sync));
    let again = admin.call(
        Command::CreateTopic,
        &[],
        &control::encode(&topic_config("A10-1001", 4, FlushMode::Async)).unwrap(),
    );
    assert_eq!(error_of(&again).unwrap().0, Status::TopicExists);
    let bad = admin.call(
        Command::CreateTopic,
        &[],
        &control::encode(&topic_config("A10-1001", 4, FlushMode::Async))
            .unwrap()
            .iter()
            .map(|b| b ^ 0xFF)
            .collect::<Vec<u8>>(),
    );
    assert_ne!(bad.header.status, 0);

    let mut other = Client::connect(ports[0], "admin-0");
    let list: TopicList = control::decode(&other.call_ok(Command::ListTopics, &[], &[])).unwrap();
    let names: Vec<&str> = list.topics.iter().map(|t| t.topic.as_str()).collect();
    assert_eq!(names, ["A10-1001", "A10-1002"]);
    assert_eq!(list.topics[0].queue_count, 4);
    assert_eq!(list.topics[1].flush_mode, FlushMode::Sync);
    // Retention travels with the topic, so an update can keep what it does not change.
    assert_eq!(
        list.topics[0].retention_age_ms,
        Some(control::RETENTION_AGE_MS_DEFAULT)
    );
    assert_eq!(list.topics[0].retention_bytes, None);

    other.call_ok(
        Command::UpdateTopic,
        &[],
        &control::encode(&topic_config("A10-1002", 3, FlushMode::Sync)).unwrap(),
    );
    // Every shard applied the update before the answer: queue 2 is writable on its owner.
    for q in 0..3 {
        admin.produce("A10-1002", q, &[b"x"]);
    }

    let delete = control::encode(&TopicName {
        topic: "A10-1001".into(),
    })
    .unwrap();
    admin.call_ok(Command::DeleteTopic, &[], &delete);
    let list: TopicList = control::decode(&other.call_ok(Command::ListTopics, &[], &[])).unwrap();
    assert_eq!(list.topics.len(), 1);
    let gone = admin.produce_batch(
        Command::Produce,
        "A10-1001",
        0,
        &batch(&[b"x"], protocol::record::MessageType::Event, &[]),
    );
    assert_eq!(error_of(&gone).unwrap().0, Status::UnknownTopic);
    assert_eq!(
        error_of(&admin.call(Command::DeleteTopic, &[], &delete))
            .unwrap()
            .0,
        Status::UnknownTopic
    );
    assert!(!dir.path().join("queues").join("A10-1001").exists());
    drop((admin, other));
    broker.shutdown().unwrap();

    // The registry survives a restart.
    let broker = start(dir.path(), 2);
    let mut admin = Client::connect(broker.shard_ports()[0], "admin");
    let list: TopicList = control::decode(&admin.call_ok(Command::ListTopics, &[], &[])).unwrap();
    assert_eq!(list.topics.len(), 1);
    assert_eq!(list.topics[0].queue_count, 3);
    broker.shutdown().unwrap();
}
