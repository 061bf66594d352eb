//! Registration with nameservers: periodic, tolerant of a nameserver that is down, and an
//! unregister at clean shutdown.

mod broker_common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;

use broker_common::*;
use bytes::BytesMut;
use protocol::codes::{Command, Status};
use protocol::control::{self, BrokerId, BrokerRegistration, FlushMode, RegisterAck};
use protocol::frame::{FrameMeta, Framer, encode_frame};

/// A fake nameserver: answers every frame and reports what it got.
fn fake_nameserver() -> (String, mpsc::Receiver<(Command, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut buf = BytesMut::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Ok(Some(frame)) = Framer::default().split_frame(&mut buf) {
                        let command = frame.header.command().unwrap();
                        let body = match command {
                            Command::BrokerRegister => {
                                control::encode(&RegisterAck { expiry_ms: 9000 }).unwrap()
                            }
                            _ => Vec::new(),
                        };
                        let mut out = Vec::new();
                        encode_frame(
                            &FrameMeta::response(&frame.header, Status::Ok),
                            &[],
                            &body,
                            &mut out,
                        )
                        .unwrap();
                        if stream.write_all(&out).is_err()
                            || tx.send((command, frame.body.to_vec())).is_err()
                        {
                            return;
                        }
                    }
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (address, rx)
}

#[test]
fn the_broker_registers_with_every_nameserver_and_unregisters_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    init_logs();
    let (address, registrations) = fake_nameserver();
    // A nameserver that is down must not stop registration with the other.
    let down = TcpListener::bind("127.0.0.1:0").unwrap();
    let down_address = down.local_addr().unwrap().to_string();
    drop(down);
    let config = engine::BrokerConfig {
        nameservers: vec![down_address, address],
        register_interval_ms: 50,
        controller_heartbeat_interval_ms: 20,
        cluster: "c1".into(),
        ..config(dir.path(), 2)
    };
    let broker = engine::Broker::start(config).unwrap();
    let ports = broker.shard_ports();
    let mut admin = Client::connect(ports[0], "admin");
    admin.create_topic(&topic_config("A10-5001", 3, FlushMode::Async));
    let registration = testkit::wait_for("a registration listing the topic", WAIT, || {
        let (command, body) = registrations.recv_timeout(WAIT).ok()?;
        if command == Command::BrokerHeartbeat {
            return None;
        }
        assert_eq!(command, Command::BrokerRegister);
        let registration: BrokerRegistration = control::decode(&body).unwrap();
        (!registration.topics.is_empty()).then_some(registration)
    });
    registration.validate().unwrap();
    assert_eq!(registration.broker_id, "test-broker");
    assert_eq!(registration.cluster, "c1");
    assert_eq!(registration.shard_ports, ports);
    assert_eq!(registration.topics[0].topic, "A10-5001");
    assert_eq!(registration.topics[0].queue_depths.len(), 3);
    // Between registrations, the small heartbeats for the replication controller.
    let heartbeat = testkit::wait_for("a heartbeat", WAIT, || {
        let (command, body) = registrations.recv_timeout(WAIT).ok()?;
        (command == Command::BrokerHeartbeat).then_some(body)
    });
    let id: BrokerId = control::decode(&heartbeat).unwrap();
    assert_eq!(id.broker_id, "test-broker");
    drop(admin);
    broker.shutdown().unwrap();
    let unregistered = testkit::wait_for("an unregister", WAIT, || {
        let (command, body) = registrations.recv_timeout(WAIT).ok()?;
        (command == Command::BrokerUnregister).then_some(body)
    });
    let id: BrokerId = control::decode(&unregistered).unwrap();
    assert_eq!(id.broker_id, "test-broker");
}
