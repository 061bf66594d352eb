//! Garbage bytes, an oversized frame and a frame cut off mid-way, sent to the nameserver's
//! port and to every broker shard's port, each get an error answer and a closed connection,
//! while a producer keeps being served throughout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use client::{Message, Producer};
use defibus_tests::{Cluster, RawConnection, WAIT, client};
use protocol::codes::{Command, Status};
use protocol::control::FlushMode;
use protocol::frame::{FrameHeader, FrameMeta, HEADER_LEN, encode_frame};
use testkit::wait_until;

const TOPIC: &str = "A10-3501";

/// Sends garbage, an oversized header and a truncated frame to `port` on three connections,
/// asserting each is answered with the right status and then closed. `command` is a request
/// the server knows, used for the well-formed parts.
fn feed_bad_input(name: &str, port: u16, command: Command) {
    let mut garbage = RawConnection::connect(port);
    garbage.send_raw(b"GET / HTTP/1.1\r\nHost: defibus\r\n\r\n");
    let (status, _, reply) = garbage.expect_error_then_close(&format!("{name}: garbage"));
    assert_eq!(
        status,
        Status::MalformedFrame.code(),
        "{name}: garbage answered {status} ({})",
        reply.message
    );

    // Only a header, announcing a body far past any limit: refused from the header alone.
    let mut oversized = RawConnection::connect(port);
    let mut header = FrameHeader::seal(&FrameMeta::request(command, 77), &[], &[]).unwrap();
    header.body_len = u32::MAX - 64;
    header.header_crc32c = header.compute_header_crc();
    oversized.send_raw(&header.encode());
    let (status, request_id, reply) =
        oversized.expect_error_then_close(&format!("{name}: oversized frame"));
    assert_eq!(
        (status, request_id),
        (Status::FrameTooLarge.code(), 77),
        "{name}: oversized frame answered {status} to request {request_id} ({})",
        reply.message
    );

    // A valid frame of which only the header and 10 body bytes arrive before the peer's end.
    let mut cut = RawConnection::connect(port);
    let mut frame = Vec::new();
    encode_frame(
        &FrameMeta::request(command, 91),
        &[],
        &[0u8; 64],
        &mut frame,
    )
    .unwrap();
    cut.send_raw(&frame[..HEADER_LEN + 10]);
    cut.shutdown_write();
    let (status, request_id, reply) =
        cut.expect_error_then_close(&format!("{name}: frame cut off mid-way"));
    assert_eq!(
        (status, request_id),
        (Status::MalformedFrame.code(), 91),
        "{name}: cut-off frame answered {status} to request {request_id} ({})",
        reply.message
    );
}

#[test]
fn bad_frames_on_every_port_close_only_their_connection() {
    let cluster = Cluster::start(1, 2);
    cluster.create_topic(TOPIC, 4, FlushMode::Async);

    // A bystander producing without pause, from before the bad input until after it.
    let producer_client = client(&cluster.nameserver);
    let producer = Producer::new(&producer_client).unwrap();
    let acked = Arc::new(Mutex::new(0usize));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (acked, failures, stop) = (acked.clone(), failures.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Acquire) {
                match producer.send(Message::new(TOPIC, format!("b{i}"))) {
                    Ok(_) => *acked.lock().unwrap() += 1,
                    Err(e) => failures.lock().unwrap().push(format!("send {i}: {e}")),
                }
                i += 1;
            }
        })
    };
    let acked_now = || *acked.lock().unwrap();
    wait_until("the bystander's first sends", WAIT, || acked_now() > 0);

    let nameserver_port = cluster.nameserver.local_addr().port();
    feed_bad_input("nameserver", nameserver_port, Command::ClusterInfo);
    let shard_ports = cluster.brokers[0].shard_ports();
    for (shard, port) in shard_ports.iter().enumerate() {
        feed_bad_input(&format!("broker shard {shard}"), *port, Command::ListTopics);
    }

    // The bystander was served during the bad input and still is after it.
    let after_bad_input = acked_now();
    wait_until("50 more bystander sends after the bad input", WAIT, || {
        acked_now() >= after_bad_input + 50
    });
    stop.store(true, Ordering::Release);
    sender.join().expect("the sender thread");
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of the bystander's sends failed, e.g. {:?}",
        failures.len(),
        failures.first()
    );

    // Each shard counted the three bad frames it refused.
    let stats = cluster.admin().stats(&cluster.endpoints()[0]).unwrap();
    for shard in &stats.shards {
        assert_eq!(
            shard.bad_frames, 3,
            "bad frames counted by shard {}",
            shard.shard_id
        );
    }
    assert_eq!(stats.shards.len(), shard_ports.len());
}
