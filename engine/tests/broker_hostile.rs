//! Hostile clients are held to what one client may hold, and everyone else is served
//! meanwhile: a slowloris is closed at its frame's deadline, half-sent large frames hold no
//! more than the shard's partial-frame budget, and a connection sending unknown commands is
//! closed after a few.

mod broker_common;

use std::io::Write;
use std::time::{Duration, Instant};

use broker_common::*;
use protocol::codes::{Command, Status};
use protocol::control::{self, BrokerStats, FlushMode, TopicList};
use protocol::frame::{FrameHeader, FrameMeta, HEADER_LEN, encode_frame};

const TOPIC: &str = "A10-4101";

fn stats(client: &mut Client) -> BrokerStats {
    control::decode(&client.call_ok(Command::Stats, &[], &[])).unwrap()
}

fn list_topics(client: &mut Client) -> usize {
    let list: TopicList = control::decode(&client.call_ok(Command::ListTopics, &[], &[])).unwrap();
    list.topics.len()
}

#[test]
fn a_slowloris_is_closed_at_its_frames_deadline_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    init_logs();
    let config = engine::BrokerConfig {
        frame_timeout_ms: 300,
        ..config(dir.path(), 1)
    };
    let broker = engine::Broker::start(config).unwrap();
    let port = broker.shard_ports()[0];
    let mut healthy = Client::connect(port, "healthy");
    healthy.create_topic(&topic_config(TOPIC, 1, FlushMode::Async));

    let mut frame = Vec::new();
    encode_frame(
        &FrameMeta::request(Command::ListTopics, 7),
        &[],
        &[0u8; 64],
        &mut frame,
    )
    .unwrap();
    let mut slow = Client::connect(port, "slowloris");
    let mut writer = slow.stream.try_clone().unwrap();
    let started = Instant::now();
    // One byte every 20 ms: each read comes well within the idle timeout (60 s), but the
    // frame would take 2 s to arrive.
    let trickle = std::thread::spawn(move || {
        for byte in frame {
            if writer.write_all(&[byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    // Meanwhile the broker serves others.
    for _ in 0..10 {
        assert_eq!(list_topics(&mut healthy), 1);
    }
    assert!(
        slow.read_frame(WAIT).is_none(),
        "the slowloris gets no answer, only the close"
    );
    let closed_after = started.elapsed();
    assert!(
        closed_after < Duration::from_secs(2),
        "closed at the frame deadline (300 ms), not when the frame ended: {closed_after:?}"
    );
    trickle.join().unwrap();
    assert_eq!(list_topics(&mut healthy), 1);
    drop(healthy);
    broker.shutdown().unwrap();
}

#[test]
fn half_sent_large_frames_hold_no_more_than_the_shards_budget() {
    let dir = tempfile::tempdir().unwrap();
    init_logs();
    let mut config = config(dir.path(), 1);
    config.frame_timeout_ms = 1_000;
    config.limits.batch_len_max = 1 << 20;
    config.limits.frame_len_max = HEADER_LEN + (64 << 10) + (1 << 20);
    // Room for two such frames at once.
    let frame_len = HEADER_LEN + (1 << 20);
    config.limits.partial_frame_bytes_shard_max = 2 * config.limits.frame_len_max;
    let budget = config.limits.partial_frame_bytes_shard_max as u64;
    let broker = engine::Broker::start(config).unwrap();
    let port = broker.shard_ports()[0];
    let mut healthy = Client::connect(port, "healthy");
    healthy.create_topic(&topic_config(TOPIC, 1, FlushMode::Async));

    // Five attackers each announce a 1 MiB produce and send half of it.
    let mut attackers = Vec::new();
    for i in 0..5 {
        let mut attacker = Client::connect(port, &format!("attacker-{i}"));
        let meta = FrameMeta::request(Command::Produce, 100 + i).without_body_crc();
        let mut header = FrameHeader::seal(&meta, &[], &[]).unwrap();
        header.body_len = 1 << 20;
        header.header_crc32c = header.compute_header_crc();
        attacker.stream.write_all(&header.encode()).unwrap();
        // The kernel takes what fits its buffers; the broker reads only within its budget.
        attacker
            .stream
            .set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let _ = attacker.stream.write_all(&vec![0u8; 512 << 10]);
        attackers.push(attacker);
    }
    let started = Instant::now();
    // Two frames fit the budget; the other three wait, reading nothing.
    testkit::wait_until("two frames reserved", WAIT, || {
        stats(&mut healthy).shards[0].partial_frame_bytes == 2 * frame_len as u64
    });
    let mut peak = 0;
    // Small requests go on meanwhile.
    for _ in 0..20 {
        healthy.produce(TOPIC, 0, &[b"small"]);
        peak = peak.max(stats(&mut healthy).shards[0].partial_frame_bytes);
    }
    assert!(peak <= budget, "{peak} bytes reserved, budget {budget}");
    // At their frames' deadline every attacker is closed and the budget is free again.
    for attacker in &mut attackers {
        assert!(
            attacker.read_frame(WAIT).is_none(),
            "closed without an answer"
        );
    }
    testkit::wait_until("the budget freed", WAIT, || {
        stats(&mut healthy).shards[0].partial_frame_bytes == 0
    });
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "closed at the 1 s frame deadline: {elapsed:?}"
    );
    // An honest large produce goes through.
    let big = vec![7u8; 512 << 10];
    healthy.produce(TOPIC, 0, &[&big]);
    drop(healthy);
    broker.shutdown().unwrap();
}

#[test]
fn a_connection_sending_unknown_commands_is_closed_after_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), 1);
    let port = broker.shard_ports()[0];
    let mut healthy = Client::connect(port, "healthy");
    let mut fuzzer = Client::connect(port, "fuzzer");
    let limit = engine::config::UNKNOWN_COMMANDS_PER_CONNECTION_MAX_DEFAULT;
    for i in 0..limit + 10 {
        let meta = FrameMeta {
            command: 0x01FF,
            ..FrameMeta::request(Command::Produce, u64::from(i))
        };
        let mut frame = Vec::new();
        encode_frame(&meta, &[], &[], &mut frame).unwrap();
        if fuzzer.stream.write_all(&frame).is_err() {
            break;
        }
    }
    let mut answered = 0;
    while let Some(frame) = fuzzer.read_frame(WAIT) {
        assert_eq!(frame.header.status, Status::UnknownCommand.code());
        answered += 1;
    }
    assert_eq!(answered, limit, "each answered, then the connection closed");
    assert_eq!(list_topics(&mut healthy), 0);
    drop(healthy);
    broker.shutdown().unwrap();
}
