//! Webhook subscriptions that outlive the proxy, and requests answered by webhook
//! responders: in the webhook's answer, or later with `POST /v1/reply`.

mod support;

use std::time::Duration;

use client::{Message, Producer, Requester};
use defibus_tests::{WAIT, client};
use serde_json::json;

use support::{Answer, Bus, identity, webhook_server, webhook_server_with};

#[test]
fn webhook_subscriptions_survive_a_proxy_restart_and_lose_nothing() {
    let mut bus = Bus::start(&["A10-7101"], |_| {});
    let (url, received) = webhook_server(0);
    let body = json!({
        "identity": identity("durable"), "topic": "A10-7101", "group": "hooks",
        "start": "earliest", "url": url,
    });
    let (status, sub) = bus.post("/v1/subscriptions", &body.to_string());
    assert_eq!(status, 201, "{sub}");
    let id = sub["id"].as_str().unwrap().to_owned();
    assert_eq!(
        bus.post("/v1/publish", r#"{"topic":"A10-7101","value":"before"}"#)
            .0,
        200
    );
    assert_eq!(
        received.recv_timeout(WAIT).unwrap()["message"]["value"],
        "before"
    );

    // Down: a message is published straight to the broker meanwhile.
    bus.stop_proxy();
    let native = client(&bus.cluster.nameserver);
    Producer::new(&native)
        .unwrap()
        .send(Message::new("A10-7101", b"while down".to_vec()))
        .unwrap();
    bus.start_proxy();

    let (status, info) = bus.get(&format!("/v1/subscriptions/{id}"));
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["state"], "active");
    assert_eq!(
        bus.post("/v1/publish", r#"{"topic":"A10-7101","value":"after"}"#)
            .0,
        200
    );
    let mut values = Vec::new();
    while values.len() < 2 {
        let push = received
            .recv_timeout(WAIT)
            .expect("the messages after the restart");
        assert_eq!(push["subscription"], id.as_str());
        values.push(push["message"]["value"].as_str().unwrap().to_owned());
    }
    values.sort();
    assert_eq!(values, ["after", "while down"]);
    // Resumed at the committed offset: "before" was not posted again.
    assert!(received.recv_timeout(Duration::from_millis(300)).is_err());

    // A new subscription never reuses a stored id; a removal is durable too.
    let other = json!({
        "identity": identity("durable-2"), "topic": "A10-7101", "group": "hooks-2", "url": url,
    });
    let (status, second) = bus.post("/v1/subscriptions", &other.to_string());
    assert_eq!(status, 201, "{second}");
    assert_ne!(second["id"], id.as_str());
    assert_eq!(bus.delete(&format!("/v1/subscriptions/{id}")).0, 204);
    bus.stop_proxy();
    bus.start_proxy();
    assert_eq!(bus.get(&format!("/v1/subscriptions/{id}")).0, 404);
    assert_eq!(
        bus.get(&format!(
            "/v1/subscriptions/{}",
            second["id"].as_str().unwrap()
        ))
        .0,
        200
    );
}

#[test]
fn a_rust_request_is_answered_by_a_webhook_inline_or_with_post_reply() {
    let bus = Bus::start(&["A10-7102"], |_| {});
    // Text requests are answered in the webhook's answer; binary ones later, by POST.
    let (url, received) = webhook_server_with(|push| {
        let message = &push["message"];
        assert!(message["reply_to"].is_string(), "{push}");
        match message["value"].as_str() {
            Some(text) => Answer {
                status: 200,
                body: json!({"value": text.to_uppercase()}).to_string(),
            },
            None => Answer {
                status: 202,
                body: String::new(),
            },
        }
    });
    let body = json!({
        "identity": identity("responder"), "topic": "A10-7102", "group": "svc", "url": url,
    });
    let (status, sub) = bus.post("/v1/subscriptions", &body.to_string());
    assert_eq!(status, 201, "{sub}");

    let requester_client = client(&bus.cluster.nameserver);
    let requester = Requester::new(&requester_client);
    let reply = requester
        .request(Message::new("A10-7102", b"inline please".to_vec()), WAIT)
        .expect("a reply from the webhook's answer");
    assert_eq!(reply.value, b"INLINE PLEASE");
    received.recv_timeout(WAIT).unwrap();

    let pending = {
        let requester = requester.clone();
        std::thread::spawn(move || {
            requester.request(Message::new("A10-7102", vec![0xFF, 0x00]), WAIT)
        })
    };
    let push = received.recv_timeout(WAIT).expect("the binary request");
    let request = &push["message"];
    assert_eq!(request["value_b64"], "/wA=", "{push}");
    let answer = json!({
        "topic": request["topic"], "queue_id": request["queue_id"],
        "reply_to": request["reply_to"], "correlation_id": request["correlation_id"],
        "value_b64": "AP8=",
    });
    let (status, body) = bus.post("/v1/reply", &answer.to_string());
    assert_eq!(status, 204, "{body}");
    let reply = pending.join().unwrap().expect("the reply sent by POST");
    assert_eq!(reply.value, [0x00, 0xFF]);

    let (_, info) = bus.get(&format!(
        "/v1/subscriptions/{}",
        sub["id"].as_str().unwrap()
    ));
    assert_eq!(info["replied"], 1, "{info}");
    assert_eq!(info["delivered"], 2, "{info}");

    // Nobody waits under a client id that is not connected: 404 no_requester.
    let nobody = json!({
        "topic": "A10-7102", "queue_id": request["queue_id"], "reply_to": "ghost@1#A10",
        "correlation_id": request["correlation_id"], "value": "late",
    });
    let (status, body) = bus.post("/v1/reply", &nobody.to_string());
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "no_requester");
    let (status, _) = bus.post("/v1/reply", r#"{"topic":"A10-7102","queue_id":0}"#);
    assert_eq!(status, 400);
}
