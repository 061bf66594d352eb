//! Bad input closes the offending connection, with an error answer, and nothing else.

mod support;

use protocol::codes::{Command, Status};
use protocol::control;
use protocol::frame::{FrameHeader, FrameMeta, HEADER_LEN};
use support::{Client, PATIENCE, broker, error_reply, start_nameserver, topic};
use testkit::wait_until;

const TOPIC: &str = "A10-20190001";
const FRAME_LEN_MAX: usize = 64 << 10;

/// A nameserver with one broker registered, and a connection that must keep being served.
fn nameserver_with_bystander() -> (nameserver::NameserverHandle, Client) {
    let ns = start_nameserver(|config| config.frame_len_max = FRAME_LEN_MAX);
    let mut bystander = Client::connect(ns.local_addr());
    bystander.register(&broker("a", &[1001], vec![topic(TOPIC, 2, 2, 2)]));
    (ns, bystander)
}

fn assert_still_served(bystander: &mut Client) {
    assert_eq!(bystander.route(TOPIC).unwrap().queues.len(), 2);
}

#[test]
fn garbage_bytes_get_an_error_to_request_id_zero_and_a_close() {
    let (ns, mut bystander) = nameserver_with_bystander();
    let mut conn = Client::connect(ns.local_addr());
    conn.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let frame = conn.expect_frame();
    assert_eq!(frame.header.request_id, 0);
    assert_eq!(frame.header.status(), Ok(Status::MalformedFrame));
    assert!(error_reply(&frame).message.contains("magic"));
    conn.expect_closed();
    assert_still_served(&mut bystander);
}

#[test]
fn an_oversized_frame_is_refused_from_its_header() {
    let (ns, mut bystander) = nameserver_with_bystander();
    let mut conn = Client::connect(ns.local_addr());
    // Only the header is sent: the nameserver must answer without awaiting the body.
    let body = vec![0u8; FRAME_LEN_MAX];
    let header =
        FrameHeader::seal(&FrameMeta::request(Command::BrokerRegister, 77), &[], &body).unwrap();
    conn.send_raw(&header.encode());
    let frame = conn.expect_frame();
    assert_eq!(frame.header.request_id, 77);
    assert_eq!(frame.header.status(), Ok(Status::FrameTooLarge));
    assert!(error_reply(&frame).message.contains("exceeds"));
    conn.expect_closed();
    assert_still_served(&mut bystander);
}

#[test]
fn a_frame_cut_short_by_the_peer_is_answered_then_closed() {
    let (ns, mut bystander) = nameserver_with_bystander();
    let mut conn = Client::connect(ns.local_addr());
    let body = control::encode(&broker("b", &[2001], vec![])).unwrap();
    let (request_id, bytes) = conn.request_bytes(Command::BrokerRegister.code(), &body);
    conn.send_raw(&bytes[..HEADER_LEN + 3]);
    conn.shutdown_write();
    let frame = conn.expect_frame();
    assert_eq!(frame.header.request_id, request_id);
    assert_eq!(frame.header.status(), Ok(Status::MalformedFrame));
    assert!(error_reply(&frame).message.contains("mid-frame"));
    conn.expect_closed();
    assert_eq!(
        bystander.broker_ids(),
        ["a"],
        "the cut registration was not applied"
    );
}

#[test]
fn a_corrupted_body_fails_its_checksum() {
    let (ns, mut bystander) = nameserver_with_bystander();
    let mut conn = Client::connect(ns.local_addr());
    let body = control::encode(&broker("b", &[2001], vec![])).unwrap();
    let (request_id, mut bytes) = conn.request_bytes(Command::BrokerRegister.code(), &body);
    *bytes.last_mut().unwrap() ^= 0xFF;
    conn.send_raw(&bytes);
    let frame = conn.expect_frame();
    assert_eq!(frame.header.request_id, request_id);
    assert_eq!(frame.header.status(), Ok(Status::ChecksumMismatch));
    conn.expect_closed();
    assert_still_served(&mut bystander);
}

#[test]
fn unknown_and_foreign_commands_are_answered_then_closed() {
    let (ns, mut bystander) = nameserver_with_bystander();
    for code in [
        0x03FF,
        Command::Produce.code(),
        Command::TopicConfigChanged.code(),
    ] {
        let mut conn = Client::connect(ns.local_addr());
        let (request_id, bytes) = conn.request_bytes(code, &[]);
        conn.send_raw(&bytes);
        let frame = conn.expect_frame();
        assert_eq!(frame.header.request_id, request_id);
        assert_eq!(frame.header.command, code);
        assert_eq!(frame.header.status(), Ok(Status::UnknownCommand));
        conn.expect_closed();
    }
    assert_still_served(&mut bystander);
}

#[test]
fn an_undecodable_body_is_answered_then_closed() {
    let (ns, mut bystander) = nameserver_with_bystander();
    let mut conn = Client::connect(ns.local_addr());
    let (status, frame) = conn.call(Command::BrokerRegister, &[0xAB; 24]);
    assert_eq!(status, Status::MalformedFrame);
    assert!(error_reply(&frame).message.contains("BrokerRegistration"));
    conn.expect_closed();
    assert_still_served(&mut bystander);
}

#[test]
fn pipelined_requests_are_answered_in_order_and_oneway_ones_silently() {
    let (ns, _bystander) = nameserver_with_bystander();
    let mut conn = Client::connect(ns.local_addr());
    let registration = control::encode(&broker("b", &[2001], vec![])).unwrap();
    let (first, mut bytes) = conn.request_bytes(Command::ClusterInfo.code(), &[]);
    let mut oneway = Vec::new();
    protocol::frame::encode_frame(
        &FrameMeta::oneway(Command::BrokerRegister, 999),
        &[],
        &registration,
        &mut oneway,
    )
    .unwrap();
    bytes.extend_from_slice(&oneway);
    let (second, more) = conn.request_bytes(Command::ClusterInfo.code(), &[]);
    bytes.extend_from_slice(&more);
    conn.send_raw(&bytes);
    assert_eq!(conn.expect_frame().header.request_id, first);
    let frame = conn.expect_frame();
    assert_eq!(frame.header.request_id, second);
    let info: protocol::control::ClusterInfo = control::decode(&frame.body).unwrap();
    assert_eq!(info.brokers.len(), 2, "the oneway registration was applied");
}

#[test]
fn idle_connections_are_closed() {
    let ns = start_nameserver(|config| config.idle_timeout_ms = 100);
    let mut idle = Client::connect(ns.local_addr());
    idle.expect_closed();
    // A fresh connection is served as usual.
    assert!(
        Client::connect(ns.local_addr())
            .cluster_info()
            .brokers
            .is_empty()
    );
}

#[test]
fn connections_past_the_limit_are_closed_and_slots_are_reused() {
    let ns = start_nameserver(|config| config.max_connections = 2);
    let mut first = Client::connect(ns.local_addr());
    let mut second = Client::connect(ns.local_addr());
    // Both hold their slot once they have been answered.
    first.cluster_info();
    second.cluster_info();
    let mut third = Client::connect(ns.local_addr());
    third.expect_closed();
    drop(first);
    wait_until("a slot to be free again", PATIENCE, || {
        let mut retry = Client::connect(ns.local_addr());
        let (_, bytes) = retry.request_bytes(Command::ClusterInfo.code(), &[]);
        retry.send_raw(&bytes);
        retry.read_frame().is_some()
    });
    second.cluster_info();
}

#[test]
fn a_slowloris_is_closed_at_the_frame_deadline_while_brokers_register() {
    const FRAME_TIMEOUT_MS: u64 = 300;
    let ns = start_nameserver(|config| {
        config.frame_len_max = FRAME_LEN_MAX;
        config.frame_timeout_ms = FRAME_TIMEOUT_MS;
    });
    let mut bystander = Client::connect(ns.local_addr());
    bystander.register(&broker("a", &[1001], vec![topic(TOPIC, 2, 2, 2)]));
    let mut slow = Client::connect(ns.local_addr());
    let (_, frame) = slow.request_bytes(Command::ClusterInfo.code(), &[0; 64]);
    // Header and half the body: never completed, while the idle timeout (60 s) never fires.
    let started = std::time::Instant::now();
    slow.send_raw(&frame[..HEADER_LEN + 32]);
    for _ in 0..10 {
        assert_still_served(&mut bystander);
    }
    let answer = slow.expect_frame();
    assert_eq!(answer.header.status(), Ok(Status::RequestExpired));
    assert!(
        error_reply(&answer)
            .message
            .contains("not complete within 300 ms")
    );
    slow.expect_closed();
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert_still_served(&mut bystander);
}

#[test]
fn one_address_cannot_take_every_connection() {
    let ns = start_nameserver(|config| config.connections_per_ip_max = 2);
    let mut first = Client::connect(ns.local_addr());
    first.register(&broker("a", &[1001], vec![topic(TOPIC, 2, 2, 2)]));
    let mut second = Client::connect(ns.local_addr());
    assert_still_served(&mut second);
    let mut refused = Client::connect(ns.local_addr());
    refused.expect_closed();
    drop(second);
    // The slot comes back once a connection closes.
    wait_until("a slot for 127.0.0.1 again", PATIENCE, || {
        let mut conn = Client::connect(ns.local_addr());
        let (_, bytes) = conn.request_bytes(Command::TopicRoute.code(), &[]);
        conn.send_raw(&bytes);
        // A refused connection is closed without an answer.
        conn.read_frame().is_some()
    });
    assert_still_served(&mut first);
}
