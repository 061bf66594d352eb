//! The GSL's `/metrics` endpoint over HTTP: lookups and updates counted by outcome, the
//! services held and the open connections, in text that passes the format check (and
//! `promtool check metrics`, where promtool is installed).

use std::net::SocketAddr;
use std::time::Duration;

use gsl::rpc::Connection;
use gsl::{GslConfig, GslHandle};
use protocol::codes::Command;
use protocol::control::{self, Deployment, GslResolveRequest, GslUpdate};
use telemetry::parse::Exposition;

const TIMEOUT: Duration = Duration::from_secs(10);

fn update(service: &str, areas: &[&str]) -> GslUpdate {
    GslUpdate {
        service_id: service.into(),
        deployments: areas
            .iter()
            .map(|area| Deployment {
                area: (*area).into(),
                topic: format!("{area}-{service}"),
                cluster: format!("cluster-{area}"),
                nameservers: vec![format!("ns-{area}.example:9876")],
            })
            .collect(),
    }
}

fn resolve(connection: &mut Connection, service: &str, area: &str) {
    let request = GslResolveRequest {
        service_id: service.into(),
        caller_area: area.into(),
    };
    let body = control::encode(&request).unwrap();
    // Refusals are counted too; what this test checks is the count.
    let _ = connection.call(Command::GslResolve, &body, TIMEOUT);
}

fn scrape_until(address: SocketAddr, what: &str, check: impl Fn(&Exposition) -> bool) {
    testkit::wait_for(what, TIMEOUT, || {
        let (status, text) = testkit::http_get(address, "/metrics").ok()?;
        assert_eq!(status, 200, "{text}");
        let parsed = telemetry::parse::checked(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        check(&parsed).then_some(())
    });
}

fn start(dir: &std::path::Path) -> GslHandle {
    let _ = env_logger::builder().is_test(true).try_init();
    gsl::start(GslConfig {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        metrics_addr: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        ..GslConfig::default()
    })
    .expect("GSL starts")
}

#[test]
fn lookups_updates_and_services_are_counted_as_they_happened() {
    let dir = tempfile::tempdir().unwrap();
    let gsl = start(dir.path());
    let metrics = gsl.metrics_addr().expect("metrics served");
    let mut connection = Connection::connect(&gsl.local_addr().to_string(), TIMEOUT).unwrap();
    for update in [
        update("20190001", &["A10", "B20"]),
        update("20190002", &["A10"]),
        update("20190002", &["A10"]),
        update("2019-0001", &["A10"]),
    ] {
        let body = control::encode(&update).unwrap();
        let _ = connection.call(Command::GslUpdate, &body, TIMEOUT);
    }
    resolve(&mut connection, "20190001", "B20");
    resolve(&mut connection, "20190002", "A10");
    resolve(&mut connection, "20190009", "A10");
    resolve(&mut connection, "20190001", "A1");
    scrape_until(metrics, "every request counted by outcome", |m| {
        let updates = |o| m.value("defibus_gsl_updates_total", &[("outcome", o)]);
        let resolves = |o| m.value("defibus_gsl_resolves_total", &[("outcome", o)]);
        updates("changed") == Some(2.0)
            && updates("unchanged") == Some(1.0)
            && updates("refused") == Some(1.0)
            && updates("denied") == Some(0.0)
            && resolves("found") == Some(2.0)
            && resolves("none") == Some(1.0)
            && resolves("invalid") == Some(1.0)
            && m.value("defibus_gsl_services", &[]) == Some(2.0)
            && m.value("defibus_gsl_connections", &[]) == Some(1.0)
    });
    drop(connection);
    scrape_until(metrics, "the connection closed", |m| {
        m.value("defibus_gsl_connections", &[]) == Some(0.0)
    });
    gsl.shutdown().unwrap();
}

#[test]
fn an_empty_metrics_address_serves_none_and_a_taken_one_is_no_failure() {
    let dir = tempfile::tempdir().unwrap();
    let gsl = gsl::start(GslConfig {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        metrics_addr: String::new(),
        data_dir: dir.path().to_path_buf(),
        ..GslConfig::default()
    })
    .unwrap();
    assert_eq!(gsl.metrics_addr(), None);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other = tempfile::tempdir().unwrap();
    let second = gsl::start(GslConfig {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        metrics_addr: taken.local_addr().unwrap().to_string(),
        data_dir: other.path().to_path_buf(),
        ..GslConfig::default()
    })
    .expect("a GSL whose metrics address is taken still serves");
    assert_eq!(second.metrics_addr(), None);
    second.shutdown().unwrap();
    gsl.shutdown().unwrap();
}
