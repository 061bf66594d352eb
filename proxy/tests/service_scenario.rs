//! Service ids through the proxy: with a GSL configured, a publish or request may name a
//! `service` instead of a `topic`, and goes to the nearest deployment's topic; an unknown
//! service is 404, naming both or neither of topic and service is 400.

mod support;

use std::time::Duration;

use client::Responder;
use defibus_tests::{WAIT, client};
use gsl::rpc::Connection;
use gsl::{GslConfig, GslHandle};
use protocol::codes::Command;
use protocol::control::{self, Deployment, GslUpdate};
use serde_json::json;

use support::Bus;

const SERVICE: &str = "7100";
const TOPIC: &str = "A10-7100";

/// A GSL that knows `SERVICE` as deployed in A10 on `nameserver`'s cluster.
fn gsl_with_service(dir: &std::path::Path, nameserver: &str) -> GslHandle {
    let gsl = gsl::start(GslConfig {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        ..GslConfig::default()
    })
    .expect("GSL starts");
    let update = GslUpdate {
        service_id: SERVICE.into(),
        deployments: vec![Deployment {
            area: "A10".into(),
            topic: TOPIC.into(),
            cluster: "itests".into(),
            nameservers: vec![nameserver.to_owned()],
        }],
    };
    let timeout = Duration::from_secs(5);
    let mut connection = Connection::connect(&gsl.local_addr().to_string(), timeout).unwrap();
    connection
        .call(
            Command::GslUpdate,
            &control::encode(&update).unwrap(),
            timeout,
        )
        .expect("GSL takes the deployment");
    gsl
}

#[test]
fn publishes_and_requests_by_service_id_reach_the_deployment() {
    let gsl_dir = tempfile::tempdir().unwrap();
    let mut gsl = None;
    let bus = Bus::start(&[TOPIC], |config| {
        let handle = gsl_with_service(gsl_dir.path(), &config.nameservers[0]);
        config.gsl_endpoints = vec![handle.local_addr().to_string()];
        gsl = Some(handle);
    });

    let (status, stored) = bus.post(
        "/v1/publish",
        &json!({"service": SERVICE, "value": "by id"}).to_string(),
    );
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["topic"], TOPIC, "{stored}");

    let (status, batch) = bus.post(
        "/v1/publish",
        &json!({"messages": [
            {"service": SERVICE, "value": "one"},
            {"topic": TOPIC, "value": "two"}
        ]})
        .to_string(),
    );
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["results"][0]["topic"], TOPIC, "{batch}");

    let (status, body) = bus.post(
        "/v1/publish",
        &json!({"service": "7999", "value": "nobody"}).to_string(),
    );
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("unknown_service")),
        "{body}"
    );
    let (status, body) = bus.post(
        "/v1/publish",
        &json!({"service": SERVICE, "topic": TOPIC, "value": "both"}).to_string(),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not both"),
        "{body}"
    );

    // A request by service id, answered by a native responder on the deployment's topic.
    let responder_client = client(&bus.cluster.nameserver);
    let responder = Responder::start(&responder_client, TOPIC, "upper", |r| {
        r.value.to_ascii_uppercase()
    })
    .unwrap();
    let reply = testkit::retry_until("a reply by service id", WAIT, || {
        let (status, body) = bus.post(
            "/v1/request",
            &json!({"service": SERVICE, "value": "ping", "timeout_ms": 1000}).to_string(),
        );
        if status == 200 {
            Ok(body)
        } else {
            Err(format!("{status} {body}"))
        }
    });
    assert_eq!(reply["value"], "PING", "{reply}");

    // The stream takes service ids too.
    let mut stream = bus.stream("by-id");
    stream.send(json!({"type": "publish", "ref": 1, "service": SERVICE, "value": "streamed"}));
    let published = stream.recv_type("published");
    assert_eq!(published["topic"], TOPIC, "{published}");
    responder.close().unwrap();
    drop(gsl);
}
