//! The HTTP API against a real broker and nameserver: publish, request-reply, webhooks,
//! heartbeats, and the documented errors.

mod support;

use std::net::TcpListener;
use std::time::Duration;

use client::{ConsumeMode, Consumer, ConsumerOptions, Responder, StartFrom};
use defibus_tests::{WAIT, client};
use serde_json::json;

use support::{Bus, identity, webhook_server};

#[test]
fn publish_single_and_batch_store_messages_a_consumer_reads() {
    let bus = Bus::start(&["A10-7001"], |_| {});
    let (status, stored) = bus.post(
        "/v1/publish",
        r#"{"topic":"A10-7001","value":"one","key":"k","tag":"t","properties":{"p":"v"}}"#,
    );
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["topic"], "A10-7001");
    assert!(stored["offset"].is_u64());
    let batch = json!({
        "identity": identity("pub-1"),
        "messages": [{"topic":"A10-7001","value":"two"}, {"topic":"A10-7001","value":"three"}],
    });
    let (status, body) = bus.post("/v1/publish", &batch.to_string());
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"].as_array().unwrap().len(), 2);

    let reader = client(&bus.cluster.nameserver);
    let consumer = Consumer::subscribe_with(
        &reader,
        ConsumerOptions::new("A10-7001", "check", ConsumeMode::Clustering)
            .start_from(StartFrom::Earliest),
    )
    .unwrap();
    let mut values = Vec::new();
    while values.len() < 3 {
        let m = consumer.recv(WAIT).unwrap().expect("three messages");
        if m.value == b"one" {
            assert_eq!(m.tag.as_deref(), Some("t"));
            assert_eq!(m.property("p"), Some(&b"v"[..]));
        }
        values.push(String::from_utf8(m.value).unwrap());
    }
    values.sort();
    assert_eq!(values, ["one", "three", "two"]);
}

/// The API promises that equal keys go to one queue, in order: single and batch publishes.
#[test]
fn messages_with_one_key_go_to_one_queue_in_order() {
    let bus = Bus::start(&["A10-7002"], |_| {});
    let mut queues = Vec::new();
    let mut offsets = Vec::new();
    for i in 0..8 {
        let body = json!({"topic": "A10-7002", "key": "order-42", "value": format!("v{i}")});
        let (status, stored) = bus.post("/v1/publish", &body.to_string());
        assert_eq!(status, 200, "{stored}");
        queues.push(stored["queue_id"].as_u64().unwrap());
        offsets.push(stored["offset"].as_u64().unwrap());
    }
    let batch = json!({"messages": (0..8)
        .map(|i| json!({"topic": "A10-7002", "key": "order-42", "value": format!("b{i}")}))
        .collect::<Vec<_>>()});
    let (status, body) = bus.post("/v1/publish", &batch.to_string());
    assert_eq!(status, 200, "{body}");
    for result in body["results"].as_array().unwrap() {
        queues.push(result["queue_id"].as_u64().unwrap());
        offsets.push(result["offset"].as_u64().unwrap());
    }
    assert!(
        queues.iter().all(|q| *q == queues[0]),
        "one queue: {queues:?}"
    );
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "in order: {offsets:?}"
    );
}

/// Errors are JSON, a wrong method's too (it was an empty 405).
#[test]
fn a_wrong_method_is_a_json_405() {
    let bus = Bus::start(&["A10-7003"], |_| {});
    let (status, body) = bus.get("/v1/publish");
    assert_eq!(status, 405, "{body}");
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("GET"),
        "{body}"
    );
}

#[test]
fn request_carries_the_reply_or_times_out_with_504() {
    let bus = Bus::start(&["A10-7002"], |_| {});
    let (status, body) = bus.post(
        "/v1/request",
        r#"{"topic":"A10-7002","value":"nobody","timeout_ms":500}"#,
    );
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "timeout");

    let service = client(&bus.cluster.nameserver);
    let responder = Responder::start(&service, "A10-7002", "upper", |r| {
        r.value.to_ascii_uppercase()
    })
    .unwrap();
    // The responder's subscription may take a moment to be assigned the queues.
    let mut answered = None;
    for _ in 0..20 {
        let (status, body) = bus.post(
            "/v1/request",
            r#"{"topic":"A10-7002","value":"hello","timeout_ms":2000}"#,
        );
        if status == 200 {
            answered = Some(body);
            break;
        }
        assert_eq!(status, 504, "{body}");
    }
    let reply = answered.expect("a reply");
    assert_eq!(reply["value"], "HELLO");
    responder.close().unwrap();
}

#[test]
fn bad_inputs_get_the_documented_errors() {
    let bus = Bus::start(&["A10-7003"], |c| c.body_bytes_max = 4096);
    let (status, body) = bus.post("/v1/publish", "{not json");
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "bad_request");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("malformed JSON")
    );

    let (status, body) = bus.post("/v1/publish", r#"{"topic":"A10-7003","valu":"x"}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("valu"));

    let (status, body) = bus.post("/v1/publish", r#"{"topic":"A10-9999","value":"x"}"#);
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "unknown_topic");

    let (status, body) = bus.post("/v1/request", r#"{"topic":"A10-9999","value":"x"}"#);
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        body,
        json!({"error": {"code": "unknown_topic", "message": "no route to topic A10-9999"}})
    );

    let big = json!({"topic": "A10-7003", "value": "x".repeat(8192)}).to_string();
    let (status, body) = bus.post("/v1/publish", &big);
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");

    let bad_identity =
        json!({"identity": {"system":"a b","area":"A10","group":"g","instance":"i"}});
    let (status, body) = bus.post("/v1/heartbeat", &bad_identity.to_string());
    assert_eq!(status, 400, "{body}");

    let (status, _) = bus.post(
        "/v1/request",
        r#"{"topic":"A10-7003","value":"x","timeout_ms":999999999}"#,
    );
    assert_eq!(status, 400);

    let (status, body) = bus.delete("/v1/subscriptions/sub-404");
    assert_eq!(status, 404, "{body}");
    let (status, _) = bus.get("/v1/nothing-here");
    assert_eq!(status, 404);
}

#[test]
fn broker_unavailable_is_503() {
    // A nameserver that nobody listens on: no route can be fetched.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let bus = Bus::start(&[], |c| {
        c.nameservers = vec![addr];
        c.request_timeout_ms = 1000;
    });
    let (status, body) = bus.post("/v1/publish", r#"{"topic":"A10-7004","value":"x"}"#);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
}

#[test]
fn the_openapi_document_is_served() {
    let bus = Bus::start(&[], |_| {});
    let (status, doc) = bus.get("/openapi.json");
    assert_eq!(status, 200);
    for (method, path) in proxy::ROUTES {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
}

#[test]
fn webhook_subscription_pushes_retries_and_unsubscribes() {
    let bus = Bus::start(&["A10-7005"], |c| {
        c.webhook_backoff_min_ms = 10;
        c.webhook_backoff_max_ms = 20;
    });
    // The first two attempts fail: the message comes on the third (of five).
    let (url, received) = webhook_server(2);
    let body = json!({
        "identity": identity("hook-1"), "topic": "A10-7005", "group": "hooks",
        "start": "earliest", "url": url,
    });
    let (status, sub) = bus.post("/v1/subscriptions", &body.to_string());
    assert_eq!(status, 201, "{sub}");
    let id = sub["id"].as_str().unwrap().to_owned();
    let (status, again) = bus.post("/v1/subscriptions", &body.to_string());
    assert_eq!(status, 409, "{again}");

    let (status, _) = bus.post("/v1/publish", r#"{"topic":"A10-7005","value":"pushed"}"#);
    assert_eq!(status, 200);
    let push = received.recv_timeout(WAIT).expect("a webhook push");
    assert_eq!(push["subscription"], id.as_str());
    assert_eq!(push["message"]["value"], "pushed");

    // The proxy counts the delivery once it has read the answer.
    testkit::wait_until("the delivery to be counted", WAIT, || {
        bus.get(&format!("/v1/subscriptions/{id}")).1["delivered"] == 1
    });
    let (status, info) = bus.get(&format!("/v1/subscriptions/{id}"));
    assert_eq!(status, 200);
    assert_eq!(info["failed_attempts"], 2);
    assert_eq!(info["given_up"], 0);

    let (status, beat) = bus.post(
        "/v1/heartbeat",
        &json!({"identity": identity("hook-1")}).to_string(),
    );
    assert_eq!(status, 200);
    assert_eq!(beat["subscriptions"], 1);

    let (status, _) = bus.delete(&format!("/v1/subscriptions/{id}"));
    assert_eq!(status, 204);
    let (status, _) = bus.get(&format!("/v1/subscriptions/{id}"));
    assert_eq!(status, 404);
}

#[test]
fn webhook_gives_up_after_the_last_attempt_and_goes_on() {
    let bus = Bus::start(&["A10-7006"], |c| {
        c.webhook_attempts_max = 2;
        c.webhook_backoff_min_ms = 10;
        c.webhook_backoff_max_ms = 10;
    });
    // Both attempts at the first message fail; the second message is delivered.
    let (url, received) = webhook_server(2);
    let body = json!({
        "identity": identity("hook-2"), "topic": "A10-7006", "group": "hooks",
        "start": "earliest", "url": url,
    });
    let (status, sub) = bus.post("/v1/subscriptions", &body.to_string());
    assert_eq!(status, 201, "{sub}");
    let id = sub["id"].as_str().unwrap();
    for value in ["lost", "kept"] {
        let message = json!({"topic": "A10-7006", "value": value, "key": "same-queue"});
        assert_eq!(bus.post("/v1/publish", &message.to_string()).0, 200);
    }
    let push = received.recv_timeout(WAIT).expect("the second message");
    assert_eq!(push["message"]["value"], "kept");
    testkit::wait_until("the delivery to be counted", WAIT, || {
        bus.get(&format!("/v1/subscriptions/{id}")).1["delivered"] == 1
    });
    let (_, info) = bus.get(&format!("/v1/subscriptions/{id}"));
    assert_eq!(info["given_up"], 1, "{info}");
    assert!(received.recv_timeout(Duration::from_millis(200)).is_err());
}

#[test]
fn subscription_leases_expire_without_heartbeats() {
    let bus = Bus::start(&["A10-7007"], |c| c.subscription_lease_ms = 300);
    let (url, _received) = webhook_server(0);
    let body = json!({
        "identity": identity("leased"), "topic": "A10-7007", "group": "hooks", "url": url,
    });
    let (status, sub) = bus.post("/v1/subscriptions", &body.to_string());
    assert_eq!(status, 201, "{sub}");
    let id = sub["id"].as_str().unwrap();
    testkit::wait_until("the lease to expire", WAIT, || {
        bus.get(&format!("/v1/subscriptions/{id}")).0 == 404
    });
}

/// A POST answered with its status, `Retry-After` header and JSON body.
fn post_with_headers(
    bus: &Bus,
    body: &serde_json::Value,
) -> (u16, Option<String>, serde_json::Value) {
    let result = ureq::post(&bus.url("/v1/publish")).send_json(body);
    let response = match result {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(e) => panic!("HTTP call failed: {e}"),
    };
    let status = response.status();
    let retry_after = response.header("retry-after").map(str::to_owned);
    let json = response.into_json().unwrap_or_default();
    (status, retry_after, json)
}

#[test]
fn the_rate_limit_answers_429_with_retry_after_per_caller_address() {
    // One message a second, three at once: the refills are far slower than the test.
    let bus = Bus::start(&["A10-7008"], |c| {
        c.rate_limit_messages_per_s = 1;
        c.rate_limit_burst_messages = 3;
    });
    let one = |who: &str| json!({"identity": identity(who), "topic": "A10-7008", "value": "x"});
    let two = json!({
        "identity": identity("limited"),
        "messages": [{"topic": "A10-7008", "value": "a"}, {"topic": "A10-7008", "value": "b"}],
    });
    assert_eq!(post_with_headers(&bus, &two).0, 200);
    assert_eq!(post_with_headers(&bus, &one("limited")).0, 200);
    let (status, retry_after, body) = post_with_headers(&bus, &one("limited"));
    assert_eq!(status, 429, "{body}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(body["error"]["code"], "rate_limited");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("1 messages/s (burst 3)"), "{message}");
    let wait_ms = body["error"]["retry_after_ms"].as_u64().unwrap();
    assert!(wait_ms > 0 && wait_ms <= 1000, "{body}");

    // The bucket is the caller's address, not the identity it declares: a fresh identity
    // from the same address finds it spent. A batch over the burst can never pass.
    let (status, _, body) = post_with_headers(&bus, &one("other"));
    assert_eq!(status, 429, "{body}");
    let four = json!({
        "identity": identity("big"),
        "messages": vec![json!({"topic": "A10-7008", "value": "m"}); 4],
    });
    let (status, _, body) = post_with_headers(&bus, &four);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("burst of 3")
    );

    // Requests take from the same bucket, and so do callers without identity.
    let (status, body) = bus.post(
        "/v1/request",
        &json!({"identity": identity("limited"), "topic": "A10-7008", "value": "q"}).to_string(),
    );
    assert_eq!(status, 429, "{body}");
    let (status, body) = bus.post("/v1/publish", r#"{"topic":"A10-7008","value":"anon"}"#);
    assert_eq!(status, 429, "{body}");

    // Another address has a bucket of its own.
    let body = r#"{"topic":"A10-7008","value":"elsewhere"}"#;
    for _ in 0..3 {
        let mut stream = support::connect_from("127.0.0.2", bus.proxy().local_addr());
        let request = support::post_request("/v1/publish", body, true);
        let (status, answer) = support::exchange(&mut stream, &request).unwrap();
        assert_eq!(status, 200, "{answer}");
    }
}

#[test]
fn binary_values_go_in_and_out_as_base64() {
    let bus = Bus::start(&["A10-7009", "A10-7010"], |_| {});
    let (status, body) = bus.post("/v1/publish", r#"{"topic":"A10-7009","value_b64":"AP8Q"}"#);
    assert_eq!(status, 200, "{body}");
    let (status, body) = bus.post(
        "/v1/publish",
        r#"{"topic":"A10-7009","value":"text","value_b64":"AP8Q"}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not both")
    );
    let (status, _) = bus.post("/v1/publish", r#"{"topic":"A10-7009","value_b64":"%%"}"#);
    assert_eq!(status, 400);

    let reader = client(&bus.cluster.nameserver);
    let consumer = Consumer::subscribe_with(
        &reader,
        ConsumerOptions::new("A10-7009", "check", ConsumeMode::Clustering)
            .start_from(StartFrom::Earliest),
    )
    .unwrap();
    let m = consumer.recv(WAIT).unwrap().expect("the binary message");
    assert_eq!(m.value, [0x00, 0xFF, 0x10]);

    // A responder answering bytes that are not UTF-8: the reply comes back as base64.
    let service = client(&bus.cluster.nameserver);
    let responder = Responder::start(&service, "A10-7010", "bytes", |r| {
        let mut reply = r.value.clone();
        reply.push(0xFE);
        reply
    })
    .unwrap();
    let reply = testkit::retry_until("a binary reply", WAIT, || {
        let (status, body) = bus.post(
            "/v1/request",
            r#"{"topic":"A10-7010","value_b64":"AAE=","timeout_ms":1000}"#,
        );
        if status == 200 {
            Ok(body)
        } else {
            Err(format!("{status} {body}"))
        }
    });
    assert_eq!(reply["value_b64"], "AAH+", "{reply}");
    assert!(reply.get("value").is_none(), "{reply}");
    responder.close().unwrap();
}
