//! Bad frames close only their own connection, after an error response.

mod broker_common;

use std::io::Write;
use std::net::Shutdown;
use std::time::Duration;

use broker_common::*;
use protocol::codes::{Command, Status};
use protocol::control::{self, FlushMode, TopicList};
use protocol::frame::{FrameHeader, FrameMeta, HEADER_LEN, encode_frame};

fn expect_error_then_close(client: &mut Client, status: Status, request_id: u64) {
    let frame = client.read_frame(WAIT).expect("an error response");
    assert_eq!(frame.header.status, status.code(), "{:?}", error_of(&frame));
    assert_eq!(frame.header.request_id, request_id);
    assert!(
        client.read_frame(WAIT).is_none(),
        "then the connection closes"
    );
}

#[test]
fn garbage_oversized_and_cut_off_frames_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), 1);
    let port = broker.shard_ports()[0];
    let mut healthy = Client::connect(port, "healthy");
    healthy.create_topic(&topic_config("A10-4001", 1, FlushMode::Async));

    let mut garbage = Client::connect(port, "garbage");
    garbage.stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    expect_error_then_close(&mut garbage, Status::MalformedFrame, 0);

    let mut oversized = Client::connect(port, "oversized");
    let mut header =
        FrameHeader::seal(&FrameMeta::request(Command::Produce, 77), &[], &[]).unwrap();
    header.body_len = u32::MAX - 64;
    header.header_crc32c = header.compute_header_crc();
    oversized.stream.write_all(&header.encode()).unwrap();
    expect_error_then_close(&mut oversized, Status::FrameTooLarge, 77);

    let mut cut = Client::connect(port, "cut");
    let mut frame = Vec::new();
    encode_frame(
        &FrameMeta::request(Command::ListTopics, 91),
        &[],
        &[0u8; 64],
        &mut frame,
    )
    .unwrap();
    cut.stream.write_all(&frame[..HEADER_LEN + 10]).unwrap();
    cut.stream.shutdown(Shutdown::Write).unwrap();
    expect_error_then_close(&mut cut, Status::MalformedFrame, 91);

    let mut unknown = Client::connect(port, "unknown");
    let mut frame = Vec::new();
    let meta = FrameMeta {
        command: 0x01FF,
        ..FrameMeta::request(Command::Produce, 5)
    };
    encode_frame(&meta, &[], &[], &mut frame).unwrap();
    unknown.stream.write_all(&frame).unwrap();
    let reply = unknown.read_frame(WAIT).unwrap();
    assert_eq!(reply.header.status, Status::UnknownCommand.code());

    // The healthy connection never noticed.
    healthy.produce("A10-4001", 0, &[b"still fine"]);
    let list: TopicList = control::decode(&healthy.call_ok(Command::ListTopics, &[], &[])).unwrap();
    assert_eq!(list.topics.len(), 1);
    assert!(healthy.next_push(Duration::from_millis(10)).is_none());
    drop((healthy, unknown));
    broker.shutdown().unwrap();
}

#[test]
fn idle_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    init_logs();
    let config = engine::BrokerConfig {
        idle_timeout_ms: 200,
        ..config(dir.path(), 1)
    };
    let broker = engine::Broker::start(config).unwrap();
    let mut idle = Client::connect(broker.shard_ports()[0], "idle");
    let started = std::time::Instant::now();
    assert!(idle.read_frame(WAIT).is_none());
    assert!(
        started.elapsed() < WAIT,
        "closed by the broker, not by the test's timeout"
    );
    broker.shutdown().unwrap();
}
