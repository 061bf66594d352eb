//! Topic retention is enforced on the broker's queues, not only stored in their config.

mod broker_common;

use broker_common::*;
use engine::Broker;
use protocol::codes::Command;
use protocol::control::{self, BrokerStats, FlushMode};

#[test]
fn retention_by_size_deletes_old_segments_and_moves_the_start_offset() {
    let dir = tempfile::tempdir().unwrap();
    init_logs();
    let mut config = config(dir.path(), 1);
    // Small segments so a few produces roll several; frequent passes so the test is quick.
    config.storage.segment_bytes_max = 4096;
    config.storage.retention_check_interval_ms = 20;
    let broker = Broker::start(config).expect("broker starts");
    let mut client = Client::connect(broker.shard_ports()[0], "retention");
    let mut topic = topic_config("A10-7001", 1, FlushMode::Sync);
    topic.retention_bytes = Some(8192);
    topic.retention_age_ms = None;
    client.create_topic(&topic);
    let value = [7u8; 1000];
    let mut next = 0;
    for _ in 0..40 {
        next = client.produce("A10-7001", 0, &[&value]).next_offset;
    }
    // About 40 KB were written against an 8 KB limit of 4 KB segments: passes that ran while
    // producing trimmed part of it, the next pass must leave at most ~8 KB (start ≥ 30).
    let start = testkit::wait_for(
        "retention to trim the queue to its 8 KB limit",
        WAIT,
        || {
            let stats: BrokerStats =
                control::decode(&client.call_ok(Command::Stats, &[], &[])).unwrap();
            let queue = stats.queues.iter().find(|q| q.topic == "A10-7001")?;
            (queue.start_offset >= 30).then_some(queue.start_offset)
        },
    );
    assert!(
        start < next,
        "retention keeps the active segment: start {start}, next {next}"
    );
    drop(client);
    broker.shutdown().unwrap();
}
