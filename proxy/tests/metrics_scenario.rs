//! The proxy's `/metrics` endpoint, on its own address: requests by route template and
//! status with their durations, WebSocket sessions, webhook deliveries and connections, as
//! they happened, in text that passes the format check (and `promtool check metrics`, where
//! promtool is installed).

mod support;

use defibus_tests::WAIT;
use serde_json::json;
use telemetry::parse::Exposition;

use support::{Bus, identity, webhook_server};

fn scrape_until(bus: &Bus, what: &str, check: impl Fn(&Exposition) -> bool) {
    let address = bus.proxy().metrics_addr().expect("metrics served");
    testkit::wait_for(what, WAIT, || {
        let (status, text) = testkit::http_get(address, "/metrics").ok()?;
        assert_eq!(status, 200, "{text}");
        let parsed = telemetry::parse::checked(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        check(&parsed).then_some(())
    });
}

fn requests(m: &Exposition, method: &str, route: &str, status: &str) -> Option<f64> {
    m.value(
        "defibus_proxy_requests_total",
        &[("method", method), ("route", route), ("status", status)],
    )
}

#[test]
fn requests_sessions_and_webhook_deliveries_are_counted_by_route_and_outcome() {
    let bus = Bus::start(&["A10-7201"], |c| c.metrics_addr = "127.0.0.1:0".into());
    let publish = r#"{"topic":"A10-7201","value":"hello"}"#;
    assert_eq!(bus.post("/v1/publish", publish).0, 200);
    assert_eq!(bus.post("/v1/publish", publish).0, 200);
    let unknown = r#"{"topic":"A10-7299","value":"x"}"#;
    assert_eq!(bus.post("/v1/publish", unknown).0, 404);
    assert_eq!(bus.get("/v1/no-such-route").0, 404);
    assert_eq!(bus.get("/v1/publish").0, 405);
    assert_eq!(bus.get("/health").0, 200);

    // A webhook that fails its first attempt, then takes the message.
    let (url, received) = webhook_server(1);
    let body = json!({
        "identity": identity("hook"), "topic": "A10-7201", "group": "hooks",
        "start": "latest", "url": url,
    });
    let (status, sub) = bus.post("/v1/subscriptions", &body.to_string());
    assert_eq!(status, 201, "{sub}");
    let id = sub["id"].as_str().unwrap().to_owned();
    // Published until the subscription's consumer, starting at the latest offset, takes one.
    testkit::wait_for("a message posted to the webhook", WAIT, || {
        assert_eq!(bus.post("/v1/publish", publish).0, 200);
        received.recv_timeout(support::SHORT).ok()
    });
    let _session = bus.stream("metrics");

    scrape_until(&bus, "every request counted by route and status", |m| {
        let published = requests(m, "POST", "/v1/publish", "200").unwrap_or(0.0);
        let deliveries = |o| m.value("defibus_proxy_webhook_deliveries_total", &[("outcome", o)]);
        published >= 3.0
            && m.value(
                "defibus_proxy_request_duration_seconds_count",
                &[("method", "POST"), ("route", "/v1/publish")],
            ) == Some(published + 1.0)
            && requests(m, "POST", "/v1/publish", "404") == Some(1.0)
            && requests(m, "other", "unmatched", "404") == Some(1.0)
            && requests(m, "other", "unmatched", "405") == Some(1.0)
            && requests(m, "GET", "/health", "200") == Some(1.0)
            && requests(m, "POST", "/v1/subscriptions", "201") == Some(1.0)
            && requests(m, "GET", "/v1/stream", "101") == Some(1.0)
            && m.value("defibus_proxy_websocket_sessions", &[]) == Some(1.0)
            && m.value("defibus_proxy_webhook_subscriptions", &[]) == Some(1.0)
            && deliveries("failed") == Some(1.0)
            && deliveries("delivered") >= Some(1.0)
            && deliveries("given_up") == Some(0.0)
            && m.value("defibus_proxy_connections", &[]) >= Some(1.0)
            && m.value("defibus_proxy_connections_refused_total", &[]) == Some(0.0)
    });
    // A removed subscription's deliveries stay counted.
    assert_eq!(bus.delete(&format!("/v1/subscriptions/{id}")).0, 204);
    scrape_until(&bus, "the subscription gone, its deliveries kept", |m| {
        m.value("defibus_proxy_webhook_subscriptions", &[]) == Some(0.0)
            && m.value(
                "defibus_proxy_webhook_deliveries_total",
                &[("outcome", "failed")],
            ) == Some(1.0)
    });
}

#[test]
fn an_empty_metrics_address_serves_none() {
    let bus = Bus::start(&[], |c| c.metrics_addr = String::new());
    assert_eq!(bus.proxy().metrics_addr(), None);
    assert_eq!(bus.get("/health").0, 200);
}
