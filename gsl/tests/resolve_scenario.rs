//! GSL end to end: a real server on port 0, updates over the wire as SGS sends them, and
//! resolution through the client SDK's `ServiceLocator`, across restarts.

use std::path::Path;
use std::time::{Duration, Instant};

use client::{Client, ClientConfig, ClientError, ServiceLocator};
use gsl::rpc::{Connection, RpcError};
use gsl::{GslConfig, GslError, GslHandle};
use protocol::codes::{Command, Status};
use protocol::control::{self, Deployment, GslResolveReply, GslResolveRequest, GslUpdate};

const TIMEOUT: Duration = Duration::from_secs(5);

fn start(dir: &Path) -> GslHandle {
    let _ = env_logger::builder().is_test(true).try_init();
    gsl::start(GslConfig {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        ..GslConfig::default()
    })
    .expect("GSL starts")
}

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

fn push(gsl: &GslHandle, update: &GslUpdate) -> Result<(), RpcError> {
    let mut connection = Connection::connect(&gsl.local_addr().to_string(), TIMEOUT)?;
    let body = control::encode(update).unwrap();
    connection
        .call(Command::GslUpdate, &body, TIMEOUT)
        .map(drop)
}

/// A client in `area` that knows no nameserver, only `gsl`, with `adjust` applied.
fn client_of(
    gsl: &GslHandle,
    area: &str,
    adjust: impl FnOnce(ClientConfig) -> ClientConfig,
) -> Client {
    let config = ClientConfig::new(Vec::<String>::new(), area)
        .unwrap()
        .with_gsl([gsl.local_addr().to_string()])
        .with_request_timeout(TIMEOUT);
    Client::new(adjust(config)).unwrap()
}

fn locator(gsl: &GslHandle, area: &str) -> ServiceLocator {
    client_of(gsl, area, |c| c).locator()
}

fn areas(deployments: &[Deployment]) -> Vec<String> {
    deployments.iter().map(|d| d.area.clone()).collect()
}

#[test]
fn resolve_orders_nearby_first_and_a_restarted_gsl_keeps_every_service() {
    let dir = tempfile::tempdir().unwrap();
    let gsl = start(dir.path());
    push(&gsl, &update("20190001", &["C30", "A10", "B20"])).unwrap();
    push(&gsl, &update("20190002", &["A10"])).unwrap();

    let from_b20 = locator(&gsl, "B20").resolve("20190001").unwrap();
    assert_eq!(areas(&from_b20), ["B20", "A10", "C30"]);
    assert_eq!(from_b20[0].topic, "B20-20190001");
    assert_eq!(from_b20[0].cluster, "cluster-B20");
    assert_eq!(from_b20[0].nameservers, ["ns-B20.example:9876"]);
    let from_a10 = locator(&gsl, "A10");
    assert_eq!(
        areas(&from_a10.resolve("20190001").unwrap()),
        ["A10", "B20", "C30"]
    );
    // No deployment in the caller's area: every area, in code order.
    assert_eq!(
        areas(&locator(&gsl, "Z99").resolve("20190001").unwrap()),
        ["A10", "B20", "C30"]
    );
    assert_eq!(
        locator(&gsl, "B20").nearest("20190002").unwrap().area,
        "A10"
    );

    gsl.shutdown().unwrap();
    let gsl = start(dir.path());
    let after_restart = locator(&gsl, "B20");
    assert_eq!(
        areas(&after_restart.resolve("20190001").unwrap()),
        ["B20", "A10", "C30"]
    );
    assert_eq!(areas(&after_restart.resolve("20190002").unwrap()), ["A10"]);

    // An empty update takes the service out of resolution, durably.
    push(&gsl, &update("20190002", &[])).unwrap();
    gsl.shutdown().unwrap();
    let gsl = start(dir.path());
    assert!(locator(&gsl, "A10").resolve("20190002").unwrap().is_empty());
    let err = locator(&gsl, "A10").nearest("20190002").unwrap_err();
    assert!(matches!(err, ClientError::NotDeployed { .. }), "{err}");
    assert!(err.to_string().contains("20190002"), "{err}");
    assert_eq!(locator(&gsl, "A10").resolve("20190001").unwrap().len(), 3);
}

#[test]
fn the_locator_caches_refreshes_and_survives_a_gsl_outage() {
    let dir = tempfile::tempdir().unwrap();
    let gsl = start(dir.path());
    push(&gsl, &update("7001", &["A10"])).unwrap();
    // A long refresh interval first: the cached answer holds however GSL changes.
    let cached = client_of(&gsl, "B20", |c| {
        c.with_service_refresh_interval(Duration::from_secs(3600))
    })
    .locator();
    assert_eq!(areas(&cached.resolve("7001").unwrap()), ["A10"]);
    let refreshed = client_of(&gsl, "B20", |c| {
        c.with_service_refresh_interval(Duration::from_millis(100))
    });
    let locator = refreshed.locator();
    assert_eq!(areas(&locator.resolve("7001").unwrap()), ["A10"]);

    push(&gsl, &update("7001", &["A10", "B20"])).unwrap();
    assert_eq!(
        areas(&cached.resolve("7001").unwrap()),
        ["A10"],
        "cached until the refresh interval passes"
    );
    // A short interval picks the change up, nearest first.
    testkit::wait_until("the refreshed resolution", TIMEOUT, || {
        areas(&locator.resolve("7001").unwrap()) == ["B20", "A10"]
    });

    // With GSL gone, the stale answer is still served; an unknown service is an error.
    gsl.shutdown().unwrap();
    let stale_by = Instant::now() + Duration::from_millis(100);
    testkit::wait_until("the cached answer to go stale", TIMEOUT, || {
        Instant::now() >= stale_by
    });
    assert_eq!(areas(&locator.resolve("7001").unwrap()), ["B20", "A10"]);
    let err = locator.resolve("7002").unwrap_err();
    assert!(
        matches!(err, ClientError::ServiceUnavailable { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("no GSL answered"), "{err}");
    // invalidate forgets: now 7001 fails too.
    locator.invalidate("7001");
    assert!(locator.resolve("7001").is_err());
}

#[test]
fn bad_service_ids_areas_and_deployments_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let gsl = start(dir.path());

    let err = push(&gsl, &update("2019-0001", &["A10"])).unwrap_err();
    assert_eq!(err.status(), Some(Status::InvalidName), "{err}");
    assert!(err.to_string().contains("service id"), "{err}");
    let err = push(&gsl, &update("20190001", &["a10"])).unwrap_err();
    assert_eq!(err.status(), Some(Status::InvalidName), "{err}");
    let mut wrong_topic = update("20190001", &["A10"]);
    wrong_topic.deployments[0].topic = "B20-20190001".into();
    let err = push(&gsl, &wrong_topic).unwrap_err();
    assert_eq!(err.status(), Some(Status::InvalidArgument), "{err}");
    assert!(err.to_string().contains("should be A10-20190001"), "{err}");

    // A raw resolve from a malformed area is refused by name, and the connection stays up.
    let mut connection = Connection::connect(&gsl.local_addr().to_string(), TIMEOUT).unwrap();
    let request = GslResolveRequest {
        service_id: "20190001".into(),
        caller_area: "A1".into(),
    };
    let err = connection
        .call(
            Command::GslResolve,
            &control::encode(&request).unwrap(),
            TIMEOUT,
        )
        .unwrap_err();
    assert_eq!(err.status(), Some(Status::InvalidName), "{err}");
    assert!(err.to_string().contains("area"), "{err}");
    let request = GslResolveRequest {
        service_id: "20190001".into(),
        caller_area: "A10".into(),
    };
    let frame = connection
        .call(
            Command::GslResolve,
            &control::encode(&request).unwrap(),
            TIMEOUT,
        )
        .unwrap();
    let reply: GslResolveReply = control::decode(&frame.body).unwrap();
    assert!(reply.deployments.is_empty(), "nothing was accepted");
    // A command GSL does not serve closes the connection with a clear status.
    let err = connection
        .call(Command::ServiceList, &[], TIMEOUT)
        .unwrap_err();
    assert_eq!(err.status(), Some(Status::UnknownCommand), "{err}");

    let err = locator(&gsl, "A10").resolve("bad id").unwrap_err();
    assert!(matches!(err, ClientError::InvalidName(_)), "{err}");
    let no_gsl = Client::new(ClientConfig::new(Vec::<String>::new(), "A10").unwrap()).unwrap();
    let err = no_gsl.locator().resolve("20190001").unwrap_err();
    assert!(err.to_string().contains("with_gsl"), "{err}");

    // A second GSL on the same directory is refused before it listens.
    let err = gsl::start(GslConfig {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        ..GslConfig::default()
    })
    .unwrap_err();
    assert!(matches!(err, GslError::Storage { .. }), "{err}");
    assert!(err.to_string().contains("locked"), "{err}");
}
