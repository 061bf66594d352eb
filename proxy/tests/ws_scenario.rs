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

/// Threads of this process (the proxy runs in it).
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Sessions share their area's bus client (one client per session cost 5 threads each: 1,280
/// at the default 256 sessions), yet each is its own member of a group.
#[test]
fn sessions_of_one_area_share_a_bus_client_and_are_distinct_group_members() {
    let bus = Bus::start(&["A10-7204"], |_| {});
    let mut first = bus.stream("share-0");
    let before = threads();
    let mut others: Vec<_> = (1..24).map(|i| bus.stream(&format!("share-{i}"))).collect();
    let grown = threads().saturating_sub(before);
    assert!(
        grown < others.len(),
        "{} more sessions of one area added {grown} threads",
        others.len()
    );
    let second = &mut others[0];
    for (reference, stream) in [(1, &mut first), (2, &mut *second)] {
        stream.send(json!({
            "type": "subscribe", "ref": reference, "topic": "A10-7204", "group": "shared",
            "start": "earliest",
        }));
        assert_eq!(stream.recv_type("subscribed")["ref"], reference);
    }
    // Keys that land on both queues; each member owns one queue and gets exactly its messages.
    let mut per_queue = [0usize; 2];
    for i in 0..40 {
        let body = json!({"topic": "A10-7204", "key": format!("k{i}"), "value": format!("v{i}")});
        let (status, stored) = bus.post("/v1/publish", &body.to_string());
        assert_eq!(status, 200, "{stored}");
        per_queue[stored["queue_id"].as_u64().unwrap() as usize] += 1;
    }
    assert!(per_queue.iter().all(|n| *n > 0), "{per_queue:?}");
    let take = |stream: &mut support::Stream| {
        let push = stream.recv_type("message");
        let queue = push["message"]["queue_id"].as_u64().unwrap();
        stream.send(json!({"type": "ack", "delivery": push["delivery"]}));
        for _ in 1..per_queue[queue as usize] {
            let push = stream.recv_type("message");
            assert_eq!(push["message"]["queue_id"], queue, "{push}");
            stream.send(json!({"type": "ack", "delivery": push["delivery"]}));
        }
        queue
    };
    let (a, b) = (take(&mut first), take(second));
    assert_ne!(a, b, "each member is given its own queue");
}

/// Each area a session names costs a bus client, so the areas served at once are bounded:
/// one past the bound is refused with the reason, and the sessions already open go on.
#[test]
fn sessions_of_more_areas_than_the_bound_are_refused_naming_it() {
    let bus = Bus::start(&["A10-7205"], |_| {});
    let url = format!("ws://{}/v1/stream", bus.proxy().local_addr());
    let hello = |area: String| {
        let (socket, _) = tungstenite::connect(&url).expect("WebSocket connects");
        let mut stream = support::Stream::from_socket(socket);
        let identity = json!({"system": "it", "area": area, "group": "g", "instance": "1"});
        stream.send(json!({"type": "hello", "identity": identity}));
        (stream.recv(), stream)
    };
    let max = proxy::ws::buses::WS_AREAS_MAX;
    let open: Vec<_> = (0..max)
        .map(|i| {
            let (welcome, stream) = hello(format!("A{}", 30 + i));
            assert_eq!(welcome["type"], "welcome", "{welcome}");
            stream
        })
        .collect();
    let (refused, _) = hello("A99".into());
    assert_eq!(refused["type"], "error", "{refused}");
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("at most {max} areas")) && message.contains("A99"),
        "{message}"
    );
    let mut first = open.into_iter().next().unwrap();
    first.send(json!({"type": "publish", "ref": 1, "topic": "A10-7205", "value": "x"}));
    assert_eq!(first.recv()["type"], "published");
}
