//! Routes and failures against a real nameserver: unknown topics, a broker that is down.

mod support;

use std::time::{Duration, Instant};

use client::{Admin, ClientError, Message, Producer, Requester};
use protocol::codes::Command;
use protocol::control::{self, BrokerRegistration, TopicInfo};
use protocol::frame::{FrameMeta, Framer, encode_frame};
use std::io::{Read, Write};

use support::{client, client_with, start_nameserver};
use testkit::wait_until;

#[test]
fn an_unknown_topic_is_a_typed_no_route() {
    let ns = start_nameserver();
    let client = client(&ns);
    let producer = Producer::new(&client).unwrap();
    let err = producer
        .send(Message::new("A10-404", b"x".to_vec()))
        .unwrap_err();
    assert!(
        matches!(err, ClientError::NoRoute { ref topic } if topic == "A10-404"),
        "{err}"
    );
    let err = Requester::new(&client)
        .request(
            Message::new("A10-404", b"x".to_vec()),
            Duration::from_secs(1),
        )
        .unwrap_err();
    assert!(matches!(err, ClientError::NoRoute { .. }), "{err}");
    let err = producer
        .send(Message::new("not a topic", b"x".to_vec()))
        .unwrap_err();
    assert!(!err.to_string().is_empty());
    assert!(
        Admin::new(&client)
            .cluster_info()
            .unwrap()
            .brokers
            .is_empty()
    );
}

#[test]
fn unreachable_nameservers_are_skipped() {
    let ns = start_nameserver();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let client = client_with(&ns, |mut c| {
        c.nameservers.insert(0, dead_addr);
        c
    });
    let info = Admin::new(&client).cluster_info().unwrap();
    assert!(info.brokers.is_empty());
}

/// Registers a broker at a port nobody listens on, as a broker that died would be until it
/// expires: sends must fail after their retries, promptly and with a retryable error.
#[test]
fn a_dead_broker_fails_sends_after_retries_without_hanging() {
    let ns = start_nameserver();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let registration = BrokerRegistration {
        broker_id: "gone".into(),
        cluster: "c".into(),
        area: "A10".into(),
        address: "127.0.0.1".into(),
        shard_ports: vec![dead_port],
        topics: vec![TopicInfo {
            topic: "A10-7".into(),
            queue_count: 2,
            read_queue_count: 2,
            write_queue_count: 2,
            queue_depths: vec![0, 0],
            ..TopicInfo::default()
        }],
    };
    register(&ns.local_addr().to_string(), &registration);
    let client = client(&ns);
    let admin = Admin::new(&client);
    wait_until("the route", Duration::from_secs(10), || {
        admin.topic_route("A10-7").is_ok()
    });
    let producer = Producer::new(&client).unwrap();
    let started = Instant::now();
    let err = producer
        .send(Message::new("A10-7", b"x".to_vec()))
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let err = Requester::new(&client)
        .request(Message::new("A10-7", b"x".to_vec()), Duration::from_secs(5))
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(client.pending_replies(), 0);
}

/// One registration, sent the way a broker sends it.
fn register(nameserver: &str, registration: &BrokerRegistration) {
    let mut stream = std::net::TcpStream::connect(nameserver).unwrap();
    let body = control::encode(registration).unwrap();
    let mut frame = Vec::new();
    encode_frame(
        &FrameMeta::request(Command::BrokerRegister, 1),
        &[],
        &body,
        &mut frame,
    )
    .unwrap();
    stream.write_all(&frame).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "nameserver closed before answering");
        buf.extend_from_slice(&chunk[..n]);
        if let Ok(response) = Framer::default().parse(&buf) {
            assert_eq!(response.header.status, 0, "registration accepted");
            return;
        }
    }
}
