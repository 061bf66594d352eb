//! Hostile clients against the proxy's connection bounds (`limits`): a body trickled a byte a
//! second is cut off at the body timeout while normal publishes are served, and connections
//! past the per-address cap are refused at once while another address is served.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use defibus_tests::WAIT;
use testkit::wait_until;

use support::{Bus, connect_from, exchange, post_request};

const HEALTH: &str = "GET /health HTTP/1.1\r\nHost: proxy\r\n\r\n";

#[test]
fn a_body_sent_a_byte_a_second_is_cut_off_at_the_body_timeout_while_publishes_are_served() {
    let body_timeout = Duration::from_secs(2);
    let bus = Bus::start(&["A10-7501"], |c| {
        c.limits.body_timeout_ms = u64::try_from(body_timeout.as_millis()).unwrap();
    });
    let mut slow = TcpStream::connect(bus.proxy().local_addr()).unwrap();
    slow.set_read_timeout(Some(WAIT)).unwrap();
    let started = Instant::now();
    slow.write_all(
        b"POST /v1/publish HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n\
          Content-Length: 1000\r\n\r\n{",
    )
    .unwrap();
    // The slowloris: one byte a second, for as long as the connection takes them.
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = {
        let (mut writer, stop) = (slow.try_clone().unwrap(), stop.clone());
        std::thread::spawn(move || {
            let mut sent = 1;
            while !stop.load(Ordering::Acquire) && sent < 1000 {
                std::thread::sleep(Duration::from_secs(1));
                if writer.write_all(b" ").is_err() {
                    break;
                }
                sent += 1;
            }
        })
    };
    // Meanwhile a normal publish is served at once.
    let (status, body) = bus.post("/v1/publish", r#"{"topic":"A10-7501","value":"normal"}"#);
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() < body_timeout,
        "served behind the slow body"
    );

    // The slow request is answered 408 and its connection closed.
    let mut answer = Vec::new();
    let read = slow.read_to_end(&mut answer);
    let held = started.elapsed();
    stop.store(true, Ordering::Release);
    trickle.join().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        read.is_ok() || !answer.is_empty(),
        "the connection ends with an answer: {read:?}"
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(
        held >= body_timeout,
        "cut off after {held:?}, before the timeout"
    );
    assert!(
        held < body_timeout + Duration::from_secs(2),
        "cut off after {held:?}, well past the {body_timeout:?} timeout"
    );
    eprintln!(
        "a body sent at 1 byte/s held its connection {held:?} (body timeout {body_timeout:?})"
    );
}

#[test]
fn connections_past_the_per_address_cap_are_refused_while_another_address_is_served() {
    let cap = 8;
    let bus = Bus::start(&["A10-7502"], |c| {
        c.limits.connections_per_ip_max = cap;
    });
    let proxy = bus.proxy().local_addr();
    // `cap` connections from 127.0.0.1, each served once and kept open (keep-alive).
    let mut held: Vec<TcpStream> = (0..cap)
        .map(|_| {
            let mut stream = TcpStream::connect(proxy).unwrap();
            let (status, body) = exchange(&mut stream, HEALTH).expect("admitted");
            assert_eq!(status, 200, "{body}");
            stream
        })
        .collect();
    // Past the cap, each new connection from the same address is closed without an answer.
    let extra = 12;
    let mut refused = 0;
    for _ in 0..extra {
        let mut stream = TcpStream::connect(proxy).unwrap();
        if exchange(&mut stream, HEALTH).is_err() {
            refused += 1;
        }
    }
    assert_eq!(refused, extra, "every connection past the cap is refused");
    eprintln!("{refused} of {extra} connections past the per-address cap of {cap} refused");

    // Another address is served meanwhile.
    let mut other = connect_from("127.0.0.2", proxy);
    let publish = post_request("/v1/publish", r#"{"topic":"A10-7502","value":"v"}"#, true);
    let (status, body) = exchange(&mut other, &publish).unwrap();
    assert_eq!(status, 200, "{body}");

    // The held connections are still served, and one closed frees its place.
    let (status, _) = exchange(&mut held[0], HEALTH).unwrap();
    assert_eq!(status, 200);
    drop(held.pop());
    wait_until("a closed connection frees its place", WAIT, || {
        let mut stream = TcpStream::connect(proxy).unwrap();
        exchange(&mut stream, HEALTH).is_ok()
    });
}
