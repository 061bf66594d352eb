//! The WebSocket stream: the per-session rate limit and binary values both ways.

mod support;

use client::{Message, Requester};
use defibus_tests::{WAIT, client};
use serde_json::json;

use support::Bus;

#[test]
fn a_session_past_its_rate_limit_gets_an_error_frame_naming_the_limit() {
    let bus = Bus::start(&["A10-7201"], |c| {
        c.rate_limit_messages_per_s = 1;
        c.rate_limit_burst_messages = 2;
    });
    let mut stream = bus.stream("limited-ws");
    for reference in 1..=3 {
        stream
            .send(json!({"type": "publish", "ref": reference, "topic": "A10-7201", "value": "x"}));
    }
    let mut published = 0;
    let refused = loop {
        let frame = stream.recv();
        match frame["type"].as_str() {
            Some("published") => published += 1,
            Some("error") => break frame,
            _ => panic!("unexpected {frame}"),
        }
    };
    assert_eq!(refused["ref"], 3, "{refused}");
    assert_eq!(refused["code"], "rate_limited");
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.contains("1 messages/s (burst 2) per session"),
        "{message}"
    );
    assert!(refused["retry_after_ms"].as_u64().unwrap() > 0);
    while published < 2 {
        assert_eq!(stream.recv()["type"], "published");
        published += 1;
    }
    // A request takes from the same bucket; another session has a bucket of its own.
    stream.send(json!({"type": "request", "ref": 4, "topic": "A10-7201", "value": "q"}));
    assert_eq!(stream.recv_type("error")["code"], "rate_limited");
    let mut other = bus.stream("other-ws");
    other.send(json!({"type": "publish", "ref": 1, "topic": "A10-7201", "value": "y"}));
    assert_eq!(other.recv()["type"], "published");
}

#[test]
fn binary_values_are_pushed_and_answered_as_base64() {
    let bus = Bus::start(&["A10-7202", "A10-7203"], |_| {});
    let mut stream = bus.stream("binary-ws");
    stream.send(json!({
        "type": "subscribe", "ref": 1, "topic": "A10-7202", "group": "g", "start": "earliest",
    }));
    assert_eq!(stream.recv_type("subscribed")["ref"], 1);
    stream.send(json!({"type": "publish", "ref": 2, "topic": "A10-7202", "value_b64": "gIE="}));
    let push = stream.recv_type("message");
    assert_eq!(push["message"]["value_b64"], "gIE=", "{push}");
    stream.send(json!({"type": "ack", "delivery": push["delivery"]}));

    // This session answers requests from a native requester, with bytes.
    stream.send(json!({
        "type": "subscribe", "ref": 3, "topic": "A10-7203", "group": "svc", "responder": true,
    }));
    assert_eq!(stream.recv_type("subscribed")["ref"], 3);
    let native = client(&bus.cluster.nameserver);
    let requester = Requester::new(&native);
    let pending = std::thread::spawn(move || {
        requester.request(Message::new("A10-7203", vec![0xC0, 0x01]), WAIT)
    });
    let request = stream.recv_type("request");
    assert_eq!(request["message"]["value_b64"], "wAE=", "{request}");
    stream.send(json!({"type": "reply", "delivery": request["delivery"], "value_b64": "/w=="}));
    let reply = pending.join().unwrap().expect("the binary reply");
    assert_eq!(reply.value, [0xFF]);
}
