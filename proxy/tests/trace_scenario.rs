//! W3C trace context through the proxy (headers in on publish, request and reply; out on the
//! request's answer, webhook POSTs and WebSocket frames) and `GET /v1/trace`.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;

use client::{Answer, ConsumeMode, Consumer, ConsumerOptions, Responder, StartFrom};
use defibus_tests::{WAIT, client};
use serde_json::{Value, json};
use testkit::wait_for;

use support::{Bus, identity};

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const OTHER: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";

/// POSTs `body` to `url` with `headers`; (status, the answer's trace headers, JSON body).
fn post(url: &str, headers: &[(&str, &str)], body: &Value) -> (u16, Traced, Value) {
    let agent = ureq::AgentBuilder::new().timeout(WAIT).build();
    let mut request = agent.post(url).set("content-type", "application/json");
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let response = match request.send_string(&body.to_string()) {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(e) => panic!("HTTP call failed: {e}"),
    };
    let traced = Traced {
        traceparent: response.header("traceparent").map(str::to_owned),
        tracestate: response.header("tracestate").map(str::to_owned),
    };
    let status = response.status();
    let text = response.into_string().unwrap_or_default();
    (
        status,
        traced,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Traced {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

fn consumer(bus: &Bus, topic: &str, group: &str) -> Consumer {
    let reader = client(&bus.cluster.nameserver);
    Consumer::subscribe_with(
        &reader,
        ConsumerOptions::new(topic, group, ConsumeMode::Clustering).start_from(StartFrom::Earliest),
    )
    .unwrap()
}

#[test]
fn publish_headers_reach_consumers_and_a_messages_own_trace_wins() {
    let topic = "A10-7501";
    let bus = Bus::start(&[topic], |_| {});
    let headers = [("traceparent", PARENT), ("tracestate", "rojo=1")];
    let (status, _, body) = post(
        &bus.url("/v1/publish"),
        &headers,
        &json!({"topic": topic, "value": "single"}),
    );
    assert_eq!(status, 200, "{body}");
    let batch = json!({"messages": [
        {"topic": topic, "value": "from-headers"},
        {"topic": topic, "value": "own", "trace": {"traceparent": OTHER}},
    ]});
    let (status, _, body) = post(&bus.url("/v1/publish"), &headers, &batch);
    assert_eq!(status, 200, "{body}");
    // A tracestate W3C's rules refuse is dropped; the traceparent stays.
    let bad_state = [("traceparent", PARENT), ("tracestate", "a=1,a=2")];
    let (status, _, body) = post(
        &bus.url("/v1/publish"),
        &bad_state,
        &json!({"topic": topic, "value": "no-state"}),
    );
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = post(
        &bus.url("/v1/publish"),
        &[],
        &json!({"topic": topic, "value": "none"}),
    );
    assert_eq!(status, 200, "{body}");
    let consumer = consumer(&bus, topic, "check");
    let mut got = std::collections::BTreeMap::new();
    while got.len() < 5 {
        let m = consumer.recv(WAIT).unwrap().expect("five messages");
        let trace = m
            .trace
            .map(|t| (t.traceparent(), t.tracestate().map(str::to_owned)));
        got.insert(String::from_utf8(m.value).unwrap(), trace);
    }
    let with_state = Some((PARENT.to_owned(), Some("rojo=1".to_owned())));
    assert_eq!(got["single"], with_state);
    assert_eq!(got["from-headers"], with_state);
    assert_eq!(got["own"], Some((OTHER.to_owned(), None)));
    assert_eq!(got["no-state"], Some((PARENT.to_owned(), None)));
    assert_eq!(got["none"], None);

    // An invalid traceparent is refused with the rule it breaks, in a header or a body.
    let zero = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
    let (status, _, body) = post(
        &bus.url("/v1/publish"),
        &[("traceparent", zero)],
        &json!({"topic": topic, "value": "x"}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("all zeros"),
        "{body}"
    );
    let short = json!({"topic": topic, "value": "x", "trace": {"traceparent": "00-abc"}});
    let (status, _, body) = post(&bus.url("/v1/publish"), &[], &short);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("55 characters"),
        "{body}"
    );
}

#[test]
fn a_request_carries_its_trace_to_the_responder_and_the_reply_comes_back_in_headers() {
    let topic = "A10-7502";
    let bus = Bus::start(&[topic], |_| {});
    let service = client(&bus.cluster.nameserver);
    let (seen_tx, seen) = mpsc::channel();
    let responder = Responder::start(&service, topic, "svc", move |request| {
        seen_tx.send(request.trace.clone()).unwrap();
        let answer = Answer::new(request.value.to_ascii_uppercase());
        match (&request.value[..], &request.trace) {
            (b"own", Some(trace)) => answer.with_trace(client::trace::child_of(trace)),
            _ => answer,
        }
    })
    .unwrap();
    let ask = |value: &str| {
        wait_for("a reply", WAIT, || {
            let (status, traced, body) = post(
                &bus.url("/v1/request"),
                &[("traceparent", PARENT), ("tracestate", "rojo=1")],
                &json!({"topic": topic, "value": value, "timeout_ms": 2000}),
            );
            (status == 200).then_some((traced, body))
        })
    };
    let (traced, body) = ask("pass");
    assert_eq!(traced.traceparent.as_deref(), Some(PARENT), "{body}");
    assert_eq!(traced.tracestate.as_deref(), Some("rojo=1"));
    assert_eq!(
        body["trace"],
        json!({"traceparent": PARENT, "tracestate": "rojo=1"})
    );
    let (traced, body) = ask("own");
    let own = traced.traceparent.expect("the responder's context");
    assert_eq!(own[..36], PARENT[..36], "same trace id");
    assert_ne!(own, PARENT, "the responder's span id");
    assert_eq!(body["trace"]["traceparent"], own.as_str());
    let received = seen
        .recv_timeout(WAIT)
        .unwrap()
        .expect("the request's context");
    assert_eq!(received.traceparent(), PARENT);
    responder.close().unwrap();
}

/// A webhook receiver that records each POST's trace headers and body, and answers a request
/// with a reply carrying a trace of its own.
fn tracing_webhook() -> (String, mpsc::Receiver<(Traced, Value)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut length, mut traced) = (0, Traced::default());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let (name, value) = line.split_once(':').unwrap_or((&line, ""));
                let value = value.trim().to_owned();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.parse().unwrap_or(0),
                    "traceparent" => traced.traceparent = Some(value),
                    "tracestate" => traced.tracestate = Some(value),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let json: Value = serde_json::from_slice(&body).unwrap_or_default();
            let answer = if json["message"]["reply_to"].is_string() {
                json!({"value": "answered", "trace": {"traceparent": OTHER}}).to_string()
            } else {
                String::new()
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
            if tx.send((traced, json)).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

#[test]
fn webhooks_get_the_trace_in_headers_and_body_and_answer_with_their_own() {
    let topic = "A10-7503";
    let bus = Bus::start(&[topic], |_| {});
    let (url, posts) = tracing_webhook();
    let subscription = json!({
        "identity": identity("hook"), "topic": topic, "group": "hooks", "start": "earliest",
        "url": url,
    });
    let (status, body) = bus.post("/v1/subscriptions", &subscription.to_string());
    assert_eq!(status, 201, "{body}");
    let headers = [("traceparent", PARENT), ("tracestate", "rojo=1")];
    let (status, _, body) = post(
        &bus.url("/v1/publish"),
        &headers,
        &json!({"topic": topic, "value": "event"}),
    );
    assert_eq!(status, 200, "{body}");
    let (traced, push) = posts.recv_timeout(WAIT).unwrap();
    assert_eq!(
        traced,
        Traced {
            traceparent: Some(PARENT.into()),
            tracestate: Some("rojo=1".into())
        }
    );
    assert_eq!(push["message"]["trace"]["traceparent"], PARENT);
    // A request: the webhook's answer carries its own trace, which the reply takes.
    let (status, traced, body) = post(
        &bus.url("/v1/request"),
        &[("traceparent", PARENT)],
        &json!({"topic": topic, "value": "question", "timeout_ms": 10000}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"], "answered");
    assert_eq!(traced.traceparent.as_deref(), Some(OTHER));
}

#[test]
fn websocket_frames_carry_the_trace_both_ways() {
    let topic = "A10-7504";
    let bus = Bus::start(&[topic], |_| {});
    let mut stream = bus.stream("ws-trace");
    stream.send(
        json!({"type": "subscribe", "ref": 1, "topic": topic, "group": "g", "start": "earliest"}),
    );
    stream.recv_type("subscribed");
    stream.send(json!({
        "type": "publish", "ref": 2, "topic": topic, "value": "hi",
        "trace": {"traceparent": PARENT, "tracestate": "rojo=1"},
    }));
    let message = stream.recv_type("message");
    assert_eq!(
        message["message"]["trace"],
        json!({"traceparent": PARENT, "tracestate": "rojo=1"})
    );
    // A responder session answers with a trace of its own; the HTTP requester gets it back.
    let mut responder = bus.stream("ws-responder");
    responder.send(
        json!({"type": "subscribe", "ref": 3, "topic": topic, "group": "svc", "responder": true}),
    );
    responder.recv_type("subscribed");
    let asker = std::thread::scope(|scope| {
        let url = bus.url("/v1/request");
        let asker = scope.spawn(move || {
            post(
                &url,
                &[("traceparent", PARENT)],
                &json!({"topic": topic, "value": "q", "timeout_ms": 10000}),
            )
        });
        let request = responder.recv_type("request");
        assert_eq!(request["message"]["trace"]["traceparent"], PARENT);
        responder.send(json!({
            "type": "reply", "delivery": request["delivery"], "value": "a",
            "trace": {"traceparent": OTHER},
        }));
        asker.join().unwrap()
    });
    let (status, traced, body) = asker;
    assert_eq!(status, 200, "{body}");
    assert_eq!(traced.traceparent.as_deref(), Some(OTHER));
}

#[test]
fn get_trace_answers_one_messages_life_as_json() {
    let topic = "A10-7505";
    let bus = Bus::start(&[topic], |_| {});
    let (status, _, stored) = post(
        &bus.url("/v1/publish"),
        &[("traceparent", PARENT)],
        &json!({"topic": topic, "value": "traced", "key": "order-9"}),
    );
    assert_eq!(status, 200, "{stored}");
    let (queue, offset) = (
        stored["queue_id"].as_u64().unwrap(),
        stored["offset"].as_u64().unwrap(),
    );
    let consumer = consumer(&bus, topic, "readers");
    consumer.recv(WAIT).unwrap().expect("the message");
    let path = format!("/v1/trace?topic={topic}&queue={queue}&offset={offset}");
    let answer = wait_for("the group's commit in the trace", WAIT, || {
        let (status, answer) = bus.get(&path);
        assert_eq!(status, 200, "{answer}");
        let committed = &answer["queues"][0]["messages"][0]["groups"][0]["committed"];
        (committed["state"] == "committed").then_some(answer)
    });
    assert_eq!(answer["topic"], topic);
    let queues = answer["queues"].as_array().unwrap();
    assert_eq!(queues.len(), 1);
    let life = &queues[0]["messages"][0];
    assert_eq!(life["offset"], offset);
    assert_eq!(life["type"], "event");
    assert_eq!(life["key"], "order-9");
    assert_eq!(life["trace"], json!({"traceparent": PARENT}));
    assert_eq!(life["request"], Value::Null);
    let group = &life["groups"][0];
    assert_eq!(group["group"], "readers");
    assert_eq!(group["pushes"].as_array().unwrap().len(), 1);
    assert!(group["committed"]["at_ms"].as_i64().unwrap() >= life["stored_ms"].as_i64().unwrap());
    // The same JSON as the CLI's `--json`: the proxy's rendering of the client's answer.
    let admin = client::Admin::new(&client(&bus.cluster.nameserver));
    let replies = admin
        .trace(
            topic,
            &client::TraceLookup::offset(offset).queue(queue as u32),
        )
        .unwrap();
    let rendered = serde_json::to_value(proxy::trace::TraceAnswer::of(topic, &replies)).unwrap();
    assert_eq!(
        rendered["queues"][0]["messages"],
        answer["queues"][0]["messages"]
    );

    // By key, every queue: the message is found where it is.
    let (status, by_key) = bus.get(&format!("/v1/trace?topic={topic}&key=order-9"));
    assert_eq!(status, 200, "{by_key}");
    let found: Vec<&Value> = by_key["queues"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|q| q["messages"].as_array().unwrap())
        .collect();
    assert_eq!(found.len(), 1, "{by_key}");
    assert_eq!(found[0]["offset"], offset);
    // Offset and another key: the message at the offset does not count.
    let (status, filtered) = bus.get(&format!("{path}&key=other"));
    assert_eq!(status, 200);
    assert!(
        filtered["queues"][0]["messages"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // Neither: the newest message of each queue.
    let (status, newest) = bus.get(&format!("/v1/trace?topic={topic}&queue={queue}"));
    assert_eq!(status, 200);
    assert_eq!(newest["queues"][0]["messages"][0]["offset"], offset);
    // A queue the topic does not have: no queue; bad input: 400; unknown topic: 404.
    let (status, none) = bus.get(&format!("/v1/trace?topic={topic}&queue=99&offset=0"));
    assert_eq!((status, none["queues"].as_array().unwrap().len()), (200, 0));
    for bad in [
        "topic=nope",
        &format!("topic={topic}&matches=17"),
        &format!("topic={topic}&key="),
    ] {
        let (status, body) = bus.get(&format!("/v1/trace?{bad}"));
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "bad_request");
    }
    assert_eq!(bus.get("/v1/trace?topic=A10-7599&offset=0").0, 404);
    consumer.close().unwrap();
}
