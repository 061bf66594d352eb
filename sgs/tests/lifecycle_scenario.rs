//! SGS end to end on two areas, each a real nameserver and broker, with a real GSL: apply,
//! deploy (topics appear on both areas' brokers, GSL resolves them nearby first), offline
//! (drains, deletes, GSL forgets), restarts, and refused requests.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use client::{
    Admin, Client, ClientConfig, ConsumeMode, Consumer, ConsumerOptions, Message, Producer,
    StartFrom,
};
use gsl::{GslConfig, GslHandle};
use nameserver::{NameserverConfig, NameserverHandle};
use protocol::codes::Status;
use protocol::control::{FlushMode, ServiceRecord, ServiceState};
use sgs::client::SgsClient;
use sgs::config::AreaConfig;
use sgs::{SgsConfig, SgsHandle};
use telemetry::parse::Exposition;

const WAIT: Duration = Duration::from_secs(30);

/// One area: a nameserver and a one-shard broker of cluster `cluster-<area>`.
struct Area {
    code: &'static str,
    nameserver: NameserverHandle,
    broker: Option<engine::Broker>,
    _dir: tempfile::TempDir,
}

impl Area {
    fn start(code: &'static str) -> Self {
        let nameserver = nameserver::start(NameserverConfig {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            broker_expiry_ms: 3000,
            sweep_interval_ms: 200,
            ..NameserverConfig::default()
        })
        .expect("nameserver starts");
        let dir = tempfile::tempdir().unwrap();
        let broker = engine::Broker::start(engine::BrokerConfig {
            broker_id: format!("broker-{code}"),
            cluster: format!("cluster-{code}"),
            area: code.into(),
            listen_address: "127.0.0.1".into(),
            port_base: 0,
            shards: 1,
            data_dir: dir.path().to_path_buf(),
            nameservers: vec![nameserver.local_addr().to_string()],
            register_interval_ms: 200,
            io_memory_bytes: 512 << 10,
            ..engine::BrokerConfig::default()
        })
        .expect("broker starts");
        let area = Self {
            code,
            nameserver,
            broker: Some(broker),
            _dir: dir,
        };
        let admin_client = area.client();
        let admin = Admin::new(&admin_client);
        testkit::wait_until(&format!("broker of {code} registered"), WAIT, || {
            admin.cluster_info().is_ok_and(|i| !i.brokers.is_empty())
        });
        area
    }

    fn config(&self) -> AreaConfig {
        AreaConfig {
            cluster: format!("cluster-{}", self.code),
            nameservers: vec![self.nameserver.local_addr().to_string()],
        }
    }

    fn client(&self) -> Client {
        let config = ClientConfig::new([self.nameserver.local_addr().to_string()], self.code)
            .unwrap()
            .with_request_timeout(Duration::from_secs(3));
        Client::new(config).unwrap()
    }

    /// The topics the area's broker holds, with their queue counts.
    fn topics(&self) -> Vec<(String, u32)> {
        let client = self.client();
        let broker = self.broker.as_ref().unwrap();
        let endpoint = format!("127.0.0.1:{}", broker.shard_ports()[0]);
        let topics = Admin::new(&client).list_topics(&endpoint).unwrap();
        topics
            .into_iter()
            .map(|t| (t.topic, t.queue_count))
            .collect()
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        if let Some(broker) = self.broker.take() {
            let _ = broker.shutdown();
        }
    }
}

fn start_gsl(dir: &Path) -> GslHandle {
    gsl::start(GslConfig {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        ..GslConfig::default()
    })
    .expect("GSL starts")
}

fn start_sgs(dir: &Path, gsl: &GslHandle, areas: &[&Area]) -> SgsHandle {
    let areas: BTreeMap<String, AreaConfig> = areas
        .iter()
        .map(|a| (a.code.to_string(), a.config()))
        .collect();
    sgs::start(SgsConfig {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        metrics_addr: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        gsl_endpoints: vec![gsl.local_addr().to_string()],
        attempts: 3,
        retry_backoff_min_ms: 50,
        retry_backoff_max_ms: 200,
        drain_timeout_ms: 1500,
        drain_poll_interval_ms: 100,
        gsl_sync_interval_ms: 60_000,
        areas,
        ..SgsConfig::default()
    })
    .expect("SGS starts")
}

fn sgs_client(sgs: &SgsHandle) -> SgsClient {
    SgsClient::connect(&sgs.local_addr().to_string(), None).unwrap()
}

fn record(id: &str, areas: &[&str]) -> ServiceRecord {
    ServiceRecord {
        service_id: id.into(),
        name: "payments".into(),
        owner: "team-pay".into(),
        deployed_areas: areas.iter().map(|a| (*a).to_string()).collect(),
        queue_count: 2,
        max_queue_depth: 500,
        flush_mode: FlushMode::Async,
        state: ServiceState::Deployed,
    }
}

/// A client in `from` that locates services through `gsl` (and knows no nameserver).
fn gsl_client(gsl: &GslHandle, from: &str) -> Client {
    let config = ClientConfig::new(Vec::<String>::new(), from)
        .unwrap()
        .with_gsl([gsl.local_addr().to_string()]);
    Client::new(config).unwrap()
}

fn resolved_areas(gsl: &GslHandle, from: &str, service: &str) -> Vec<String> {
    gsl_client(gsl, from)
        .locator()
        .resolve(service)
        .unwrap()
        .iter()
        .map(|d| d.area.clone())
        .collect()
}

fn has_topic(area: &Area, topic: &str) -> bool {
    area.topics().iter().any(|(t, _)| t == topic)
}

#[test]
fn apply_deploy_resolve_and_offline_across_two_areas_with_restarts() {
    let _ = env_logger::builder().is_test(true).try_init();
    let (a10, b20) = (Area::start("A10"), Area::start("B20"));
    let (gsl_dir, sgs_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let gsl = start_gsl(gsl_dir.path());
    let sgs = start_sgs(sgs_dir.path(), &gsl, &[&a10, &b20]);
    let mut client = sgs_client(&sgs);

    // Apply: stored as Applied whatever the request said, areas sorted; not resolvable yet.
    let applied = client.apply(&record("20190001", &["B20", "A10"])).unwrap();
    assert_eq!(applied.state, ServiceState::Applied);
    assert_eq!(applied.deployed_areas, ["A10", "B20"]);
    assert!(resolved_areas(&gsl, "A10", "20190001").is_empty());
    assert!(!has_topic(&a10, "A10-20190001"));

    // Deploy: the topic on each area's broker, GSL resolving nearby first; deploy is idempotent.
    let deployed = client.deploy("20190001").unwrap();
    assert_eq!(deployed.state, ServiceState::Deployed);
    assert!(
        a10.topics().contains(&("A10-20190001".into(), 2)),
        "{:?}",
        a10.topics()
    );
    assert!(
        b20.topics().contains(&("B20-20190001".into(), 2)),
        "{:?}",
        b20.topics()
    );
    assert!(!has_topic(&a10, "B20-20190001"));
    assert_eq!(resolved_areas(&gsl, "B20", "20190001"), ["B20", "A10"]);
    assert_eq!(resolved_areas(&gsl, "A10", "20190001"), ["A10", "B20"]);
    let nearest = gsl_client(&gsl, "B20")
        .locator()
        .nearest("20190001")
        .unwrap();
    assert_eq!(nearest.topic, "B20-20190001");
    assert_eq!(nearest.cluster, "cluster-B20");
    assert_eq!(
        nearest.nameservers,
        [b20.nameserver.local_addr().to_string()]
    );
    assert_eq!(
        client.deploy("20190001").unwrap().state,
        ServiceState::Deployed
    );
    client.apply(&record("20190002", &["A10"])).unwrap();

    // A restarted SGS has its registry; a GSL that lost its state gets everything back from
    // the SGS's push at start.
    drop(client);
    sgs.shutdown().unwrap();
    gsl.shutdown().unwrap();
    let empty_gsl_dir = tempfile::tempdir().unwrap();
    let gsl = start_gsl(empty_gsl_dir.path());
    assert!(resolved_areas(&gsl, "A10", "20190001").is_empty());
    let sgs = start_sgs(sgs_dir.path(), &gsl, &[&a10, &b20]);
    let mut client = sgs_client(&sgs);
    let services = client.list().unwrap();
    let states: Vec<(&str, ServiceState)> = services
        .iter()
        .map(|r| (r.service_id.as_str(), r.state))
        .collect();
    assert_eq!(
        states,
        [
            ("20190001", ServiceState::Deployed),
            ("20190002", ServiceState::Applied)
        ]
    );
    assert_eq!(client.show("20190001").unwrap().name, "payments");
    testkit::wait_until("GSL re-pushed by the restarted SGS", WAIT, || {
        resolved_areas(&gsl, "A10", "20190001") == ["A10", "B20"]
    });

    // Offline with a consumer behind: the service stops resolving at once, but the topics
    // stay until every group has committed the end.
    let app = a10.client();
    let consumer = Consumer::subscribe_with(
        &app,
        ConsumerOptions::new("A10-20190001", "G1", ConsumeMode::Clustering)
            .start_from(StartFrom::Earliest)
            .manual_commit(),
    )
    .unwrap();
    Producer::new(&app)
        .unwrap()
        .send(Message::new("A10-20190001", b"last order".to_vec()))
        .unwrap();
    let received = consumer.recv(WAIT).unwrap().expect("the message arrives");
    assert_eq!(received.value, b"last order");
    let err = client.offline("20190001").unwrap_err();
    assert_eq!(err.status(), Some(Status::SystemBusy), "{err}");
    assert!(err.to_string().contains("not drained"), "{err}");
    assert!(err.to_string().contains("G1"), "{err}");
    assert!(resolved_areas(&gsl, "A10", "20190001").is_empty());
    assert_eq!(
        client.show("20190001").unwrap().state,
        ServiceState::Offline
    );
    assert!(has_topic(&a10, "A10-20190001") && has_topic(&b20, "B20-20190001"));

    // Once consumed to the end, offline finishes: the topics are gone from both areas.
    consumer.commit().unwrap();
    let offline = client.offline("20190001").unwrap();
    assert_eq!(offline.state, ServiceState::Offline);
    assert!(!has_topic(&a10, "A10-20190001"), "{:?}", a10.topics());
    assert!(!has_topic(&b20, "B20-20190001"), "{:?}", b20.topics());
    assert!(resolved_areas(&gsl, "B20", "20190001").is_empty());
    drop(consumer);
    app.close();

    // An offline service can be changed and deployed again.
    let reapplied = client.apply(&record("20190001", &["B20"])).unwrap();
    assert_eq!(reapplied.state, ServiceState::Applied);
    client.deploy("20190001").unwrap();
    assert_eq!(resolved_areas(&gsl, "A10", "20190001"), ["B20"]);
    sgs.shutdown().unwrap();
    gsl.shutdown().unwrap();
}

/// Scrapes `sgs`'s `/metrics` until `check` holds of a scrape, each checked for format (and
/// by promtool where installed).
fn scrape_until(sgs: &SgsHandle, what: &str, check: impl Fn(&Exposition) -> bool) {
    let address = sgs.metrics_addr().expect("metrics served");
    testkit::wait_for(what, WAIT, || {
        let (status, text) = testkit::http_get(address, "/metrics").ok()?;
        assert_eq!(status, 200, "{text}");
        let parsed = telemetry::parse::checked(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        check(&parsed).then_some(())
    });
}

#[test]
fn metrics_count_services_by_state_and_actions_by_outcome() {
    let _ = env_logger::builder().is_test(true).try_init();
    let a10 = Area::start("A10");
    let (gsl_dir, sgs_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let gsl = start_gsl(gsl_dir.path());
    let sgs = start_sgs(sgs_dir.path(), &gsl, &[&a10]);
    let mut client = sgs_client(&sgs);
    client.apply(&record("20190011", &["A10"])).unwrap();
    client.deploy("20190011").unwrap();
    client.apply(&record("20190012", &["A10"])).unwrap();
    client.offline("20190012").unwrap();
    client.apply(&record("20190013", &["C30"])).unwrap_err();
    client.deploy("20190099").unwrap_err();
    scrape_until(&sgs, "every action counted by outcome", |m| {
        let action = |a, o| {
            m.value(
                "defibus_sgs_actions_total",
                &[("action", a), ("outcome", o)],
            )
        };
        let state = |s| m.value("defibus_sgs_services", &[("state", s)]);
        action("apply", "ok") == Some(2.0)
            && action("apply", "refused") == Some(1.0)
            && action("deploy", "ok") == Some(1.0)
            && action("deploy", "refused") == Some(1.0)
            && action("offline", "ok") == Some(1.0)
            && action("offline", "failed") == Some(0.0)
            && state("applied") == Some(0.0)
            && state("deployed") == Some(1.0)
            && state("offline") == Some(1.0)
            && m.value("defibus_sgs_gsl_syncs_total", &[("outcome", "ok")]) >= Some(1.0)
            && m.value("defibus_sgs_connections", &[]) == Some(1.0)
    });
    drop(client);
    sgs.shutdown().unwrap();
    gsl.shutdown().unwrap();
}

#[test]
fn bad_service_ids_and_areas_get_clear_errors() {
    let _ = env_logger::builder().is_test(true).try_init();
    let a10 = Area::start("A10");
    let (gsl_dir, sgs_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let gsl = start_gsl(gsl_dir.path());
    let sgs = start_sgs(sgs_dir.path(), &gsl, &[&a10]);
    let mut client = sgs_client(&sgs);
    let refused = |result: Result<ServiceRecord, sgs::rpc::RpcError>, status, text: &str| {
        let err = result.unwrap_err();
        assert_eq!(err.status(), Some(status), "{err}");
        assert!(err.to_string().contains(text), "{err} lacks {text}");
    };

    refused(
        client.apply(&record("2019-0001", &["A10"])),
        Status::InvalidName,
        "service id",
    );
    refused(
        client.apply(&record("20190001", &["a10"])),
        Status::InvalidName,
        "area",
    );
    refused(
        client.apply(&record("20190001", &["A10", "Z99"])),
        Status::InvalidArgument,
        "area Z99 not configured in SGS (configured: A10)",
    );
    refused(
        client.apply(&record("20190001", &[])),
        Status::InvalidArgument,
        "at least one area",
    );
    refused(
        client.apply(&record("20190001", &["A10", "A10"])),
        Status::InvalidArgument,
        "twice",
    );
    let mut zero_queues = record("20190001", &["A10"]);
    zero_queues.queue_count = 0;
    refused(
        client.apply(&zero_queues),
        Status::InvalidArgument,
        "queue_count",
    );
    refused(
        client.deploy("20190009"),
        Status::InvalidArgument,
        "unknown service 20190009",
    );
    refused(
        client.show("20190009"),
        Status::InvalidArgument,
        "unknown service",
    );
    refused(client.offline("bad id"), Status::InvalidName, "service id");
    assert!(
        client.list().unwrap().is_empty(),
        "nothing refused was stored"
    );

    client.apply(&record("20190001", &["A10"])).unwrap();
    client.deploy("20190001").unwrap();
    refused(
        client.apply(&record("20190001", &["A10"])),
        Status::InvalidArgument,
        "take it offline before changing it",
    );

    // A second SGS on the same registry is refused before it listens.
    let err = sgs::start(SgsConfig {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: sgs_dir.path().to_path_buf(),
        ..SgsConfig::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("locked"), "{err}");
    sgs.shutdown().unwrap();
    gsl.shutdown().unwrap();
}
