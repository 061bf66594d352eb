//! Message kinds through the proxy (ARCHITECTURE §13.3-§13.5): time-to-live and delayed
//! publishes, cancelling a delayed message, transactional halves with their outcomes and the
//! broker's default outcome for a half an HTTP caller leaves open, and the error mapping of
//! each (`held_settled` 409, `not_held` 404, `bad_request` 400).

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use client::{ConsumeMode, Consumer, ConsumerOptions, StartFrom};
use defibus_tests::{Cluster, WAIT, client};
use serde_json::json;

use support::Bus;

fn consumer(bus: &Bus, topic: &str, group: &str) -> Consumer {
    let reader = client(&bus.cluster.nameserver);
    Consumer::subscribe_with(
        &reader,
        ConsumerOptions::new(topic, group, ConsumeMode::Clustering).start_from(StartFrom::Earliest),
    )
    .unwrap()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn a_delayed_publish_answers_its_held_id_is_delivered_at_its_time_and_cancels_once() {
    let bus = Bus::start(&["A10-7101"], |_| {});
    let sent_at = now_ms();
    let (status, stored) = bus.post(
        "/v1/publish",
        r#"{"topic":"A10-7101","value":"later","key":"k","delay_ms":300}"#,
    );
    assert_eq!(status, 200, "{stored}");
    let held = stored["held_id"].as_str().expect("a held id").to_owned();
    assert!(held.starts_with("A10-7101/"), "{held}");
    assert!(held.ends_with(&format!("@{}", stored["broker_id"].as_str().unwrap())));

    let (status, far) = bus.post(
        "/v1/publish",
        &json!({"topic":"A10-7101","value":"never","key":"k","deliver_at_ms": now_ms() + 600_000})
            .to_string(),
    );
    assert_eq!(status, 200, "{far}");
    let far_id = far["held_id"].as_str().unwrap();
    let (status, body) = bus.post("/v1/delayed/cancel", &json!({"id": far_id}).to_string());
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"id": far_id, "outcome": "cancelled"}));
    let (status, body) = bus.post("/v1/delayed/cancel", &json!({"id": far_id}).to_string());
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "held_settled");

    // A plain message behind them on the key's queue: the delayed one comes before it only
    // once its time came, and the cancelled one never.
    let (status, _) = bus.post(
        "/v1/publish",
        r#"{"topic":"A10-7101","value":"now","key":"k"}"#,
    );
    assert_eq!(status, 200);
    let consumer = consumer(&bus, "A10-7101", "kinds");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let m = consumer.recv(WAIT).unwrap().expect("two messages");
        seen.push((String::from_utf8(m.value.clone()).unwrap(), m.timestamp_ms));
    }
    let values: Vec<&str> = seen.iter().map(|(v, _)| v.as_str()).collect();
    assert!(
        values.contains(&"later") && values.contains(&"now"),
        "{values:?}"
    );
    assert!(now_ms() >= sent_at + 300, "delivered before its time");
    // Once fired it cannot be cancelled.
    let (status, body) = bus.post("/v1/delayed/cancel", &json!({"id": held}).to_string());
    assert_eq!(status, 409, "{body}");
}

#[test]
fn cancel_ids_and_kind_fields_get_clear_errors() {
    let bus = Bus::start(&["A10-7102"], |_| {});
    for (body, needle) in [
        (r#"{"topic":"A10-7102","value":"x","ttl_ms":0}"#, "ttl_ms"),
        (
            r#"{"topic":"A10-7102","value":"x","delay_ms":0}"#,
            "delay_ms",
        ),
        (
            r#"{"topic":"A10-7102","value":"x","delay_ms":99999999999999999}"#,
            "delay_ms",
        ),
        (
            r#"{"topic":"A10-7102","value":"x","delay_ms":5,"deliver_at_ms":5}"#,
            "not both",
        ),
        (
            r#"{"topic":"A10-7102","value":"x","deliver_at_ms":0}"#,
            "deliver_at_ms",
        ),
        (r#"{"topic":"A10-7102","value":"x","ttl_ms":-1}"#, "-1"),
    ] {
        let (status, answer) = bus.post("/v1/publish", body);
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains(needle),
            "{body}: {answer}"
        );
    }
    // The broker's own bound on delays (40 days) is its 400.
    let (status, answer) = bus.post(
        "/v1/publish",
        r#"{"topic":"A10-7102","value":"x","delay_ms":8640000000}"#,
    );
    assert_eq!(status, 400, "{answer}");

    let (status, body) = bus.post("/v1/delayed/cancel", r#"{"id":"not an id"}"#);
    assert_eq!(status, 400, "{body}");
    let (status, stored) = bus.post("/v1/publish", r#"{"topic":"A10-7102","value":"plain"}"#);
    assert_eq!(status, 200);
    assert!(stored.get("held_id").is_none(), "{stored}");
    let nothing = format!(
        "A10-7102/{}/999999@{}",
        stored["queue_id"],
        stored["broker_id"].as_str().unwrap()
    );
    let (status, body) = bus.post("/v1/delayed/cancel", &json!({"id": nothing}).to_string());
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_held");
    let (status, body) = bus.post("/v1/delayed/cancel", r#"{"id":"A10-9999/0/1@broker-0"}"#);
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "unknown_topic");
}

#[test]
fn an_expired_ttl_message_is_never_delivered() {
    let bus = Bus::start(&["A10-7103"], |_| {});
    let (status, body) = bus.post(
        "/v1/publish",
        r#"{"topic":"A10-7103","value":"stale","key":"k","ttl_ms":1}"#,
    );
    assert_eq!(status, 200, "{body}");
    // The deadline is a wall-clock time: wait until it certainly passed.
    let passed = Instant::now() + Duration::from_millis(20);
    while Instant::now() < passed {
        std::thread::yield_now();
    }
    let (status, _) = bus.post(
        "/v1/publish",
        r#"{"topic":"A10-7103","value":"fresh","key":"k","ttl_ms":600000}"#,
    );
    assert_eq!(status, 200);
    let consumer = consumer(&bus, "A10-7103", "ttl");
    let m = consumer.recv(WAIT).unwrap().expect("the fresh message");
    assert_eq!(m.value, b"fresh");
}

#[test]
fn transactions_commit_and_roll_back_and_refuse_the_other_outcome() {
    let bus = Bus::start(&["A10-7104"], |_| {});
    let (status, half) = bus.post(
        "/v1/transactions",
        r#"{"producer_group":"http-tx","topic":"A10-7104","value":"paid","key":"o-1"}"#,
    );
    assert_eq!(status, 200, "{half}");
    assert_eq!(half["producer_group"], "http-tx");
    let id = half["id"].as_str().unwrap().to_owned();
    let by_id = json!({ "id": id }).to_string();

    let (status, rolled) = bus.post(
        "/v1/transactions",
        r#"{"producer_group":"http-tx","topic":"A10-7104","value":"void","key":"o-1"}"#,
    );
    assert_eq!(status, 200, "{rolled}");
    let rolled_id = json!({ "id": rolled["id"] }).to_string();
    let (status, body) = bus.post("/v1/transactions/rollback", &rolled_id);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "rolled_back");
    let (status, body) = bus.post("/v1/transactions/commit", &rolled_id);
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "held_settled");

    let (status, body) = bus.post("/v1/transactions/commit", &by_id);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"id": id, "outcome": "committed"}));
    let (status, _) = bus.post("/v1/transactions/commit", &by_id);
    assert_eq!(status, 200, "committing twice is no error");
    let (status, body) = bus.post("/v1/transactions/rollback", &by_id);
    assert_eq!(status, 409, "{body}");

    // Only the committed half is delivered: a plain marker after both comes second.
    let (status, _) = bus.post(
        "/v1/publish",
        r#"{"topic":"A10-7104","value":"end","key":"o-1"}"#,
    );
    assert_eq!(status, 200);
    let consumer = consumer(&bus, "A10-7104", "tx-check");
    let first = consumer.recv(WAIT).unwrap().expect("the committed half");
    assert_eq!(first.value, b"paid");
    let second = consumer.recv(WAIT).unwrap().expect("the marker");
    assert_eq!(second.value, b"end");

    for (body, status_expected) in [
        (r#"{"topic":"A10-7104","value":"x"}"#, 400),
        (
            r#"{"producer_group":"a b","topic":"A10-7104","value":"x"}"#,
            400,
        ),
        (
            r#"{"producer_group":"g","topic":"A10-9999","value":"x"}"#,
            404,
        ),
        (
            r#"{"producer_group":"g","topic":"A10-7104","value":"x","delay_ms":5}"#,
            400,
        ),
    ] {
        let (status, answer) = bus.post("/v1/transactions", body);
        assert_eq!(status, status_expected, "{body}: {answer}");
    }
    let (status, _) = bus.post("/v1/transactions/commit", r#"{"id":"nope"}"#);
    assert_eq!(status, 400);
}

/// An HTTP caller cannot be asked: the proxy answers the broker's checks "unknown", and after
/// its last check the broker applies its default outcome (rollback).
#[test]
fn a_half_left_open_gets_the_brokers_default_outcome_after_its_checks() {
    let cluster = Cluster::start_with(1, 1, |c| {
        c.held.check_interval_ms = 100;
        c.held.checks_max = 2;
    });
    let bus = Bus::start_on(cluster, &["A10-7105"], |_| {});
    let (status, half) = bus.post(
        "/v1/transactions",
        r#"{"producer_group":"http-open","topic":"A10-7105","value":"open"}"#,
    );
    assert_eq!(status, 200, "{half}");
    let by_id = json!({ "id": half["id"] }).to_string();
    let deadline = Instant::now() + WAIT;
    loop {
        // Probed without settling it: cancel refuses a half (400) while it is pending, and
        // answers settled (409) once the broker applied its default.
        let (status, body) = bus.post("/v1/delayed/cancel", &by_id);
        if status == 409 {
            assert_eq!(body["error"]["code"], "held_settled");
            break;
        }
        assert_eq!(status, 400, "{body}");
        assert!(Instant::now() < deadline, "the half was never settled");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = bus.post("/v1/transactions/commit", &by_id);
    assert_eq!(status, 409, "rolled back by default: {body}");
}

#[test]
fn a_websocket_publish_takes_a_delay_and_answers_the_held_id() {
    let bus = Bus::start(&["A10-7106"], |_| {});
    let mut stream = bus.stream("kinds-ws");
    stream.send(json!({"type":"publish","ref":1,"topic":"A10-7106","value":"w","delay_ms":60000}));
    let published = stream.recv_type("published");
    let id = published["held_id"].as_str().expect("a held id").to_owned();
    let (status, body) = bus.post("/v1/delayed/cancel", &json!({"id": id}).to_string());
    assert_eq!(status, 200, "{body}");
    stream.send(json!({"type":"publish","ref":2,"topic":"A10-7106","value":"w","ttl_ms":0}));
    let error = stream.recv_type("error");
    assert!(error.to_string().contains("ttl_ms"), "{error}");
}

/// A WebSocket subscriber nacks a push: the broker stores a retry copy and redelivers it
/// after the group's backoff; the nacked push counts as consumed.
#[test]
fn a_websocket_nack_is_redelivered_after_the_backoff() {
    let cluster = Cluster::start_with(1, 1, |c| {
        c.retry.schedule_ms = vec![100];
    });
    let bus = Bus::start_on(cluster, &["A10-7107"], |_| {});
    let (status, _) = bus.post("/v1/publish", r#"{"topic":"A10-7107","value":"bad"}"#);
    assert_eq!(status, 200);
    let mut stream = bus.stream("kinds-nack");
    stream.send(
        json!({"type":"subscribe","ref":1,"topic":"A10-7107","group":"nackers","start":"earliest"}),
    );
    stream.recv_type("subscribed");
    let first = stream.recv_type("message");
    assert_eq!(first["message"]["value"], "bad");
    let delivery = first["delivery"].as_u64().unwrap();
    stream.send(json!({"type":"nack","ref":"n","delivery":delivery,"reason":"cannot parse"}));
    let nacked = stream.recv_type("nacked");
    assert_eq!(
        nacked,
        json!({"type":"nacked","ref":"n","delivery":delivery})
    );
    let again = stream.recv_type("message");
    assert_eq!(again["message"]["value"], "bad", "{again}");
    assert_ne!(again["delivery"].as_u64().unwrap(), delivery);
    stream.send(json!({"type":"nack","ref":"x","delivery":delivery,"reason":"twice"}));
    let error = stream.recv_type("error");
    assert_eq!(error["code"], "not_found", "{error}");
}
