//! The nameserver's `/metrics` endpoint over HTTP: a registered broker shows as live and
//! counted, an unregistered one is counted too, and the text passes the format check.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{Client, broker, start_nameserver};
use telemetry::parse::Exposition;

/// A port free a moment ago: `run` binds the metrics address itself.
fn free_loopback_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn scrape_until(address: SocketAddr, what: &str, check: impl Fn(&Exposition) -> bool) {
    testkit::wait_for(what, Duration::from_secs(10), || {
        let (status, text) = testkit::http_get(address, "/metrics").ok()?;
        assert_eq!(status, 200, "{text}");
        let parsed = telemetry::parse::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        if let Some(verdict) = telemetry::parse::promtool_check(&text) {
            verdict.unwrap_or_else(|e| panic!("promtool check metrics: {e}\n{text}"));
        }
        check(&parsed).then_some(())
    });
}

#[test]
fn a_registered_broker_shows_live_and_counted() {
    let metrics = free_loopback_address();
    let server = start_nameserver(|c| c.metrics_addr = metrics.to_string());
    let mut conn = Client::connect(server.local_addr());
    conn.register(&broker("a", &[1001], vec![]));
    conn.register(&broker("a", &[1001], vec![]));
    conn.register(&broker("b", &[1002], vec![]));
    scrape_until(metrics, "two live brokers, one refreshed", |m| {
        m.value("defibus_nameserver_live_brokers", &[]) == Some(2.0)
            && m.value(
                "defibus_nameserver_registrations_total",
                &[("outcome", "new")],
            ) == Some(2.0)
            && m.value(
                "defibus_nameserver_registrations_total",
                &[("outcome", "refreshed")],
            ) == Some(1.0)
            && m.value("defibus_nameserver_connections", &[]) == Some(1.0)
    });
    conn.unregister("b");
    scrape_until(metrics, "one unregistered", |m| {
        m.value("defibus_nameserver_live_brokers", &[]) == Some(1.0)
            && m.value("defibus_nameserver_unregistrations_total", &[]) == Some(1.0)
            && m.value("defibus_nameserver_expiries_total", &[]) == Some(0.0)
    });
    drop(conn);
    server.shutdown().unwrap();
}
