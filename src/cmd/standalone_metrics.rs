//! A standalone bus of two brokers serves Prometheus metrics from every part, each on its own
//! address as its banner says; every scrape passes the format check (and `promtool check
//! metrics`, where installed); and every metric the Grafana dashboard and the alert rules
//! under `docs/ops/` name is in some part's real output, so they cannot drift apart.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use client::{Admin, Client, ClientConfig, Message, Producer, Requester, Responder};
use protocol::control::TopicConfig;
use telemetry::parse::Exposition;

use super::standalone::{Bus, StandaloneArgs};

const WAIT: Duration = Duration::from_secs(30);
const TOPIC: &str = "A10-20190001";
const SERVICE_TOPIC: &str = "A10-20190002";

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    args: StandaloneArgs,
}

fn args(data: &Path, extra: &[&str]) -> StandaloneArgs {
    use clap::Parser;
    let data = data.to_str().unwrap();
    let argv = [
        "standalone",
        "--data-dir",
        data,
        "--nameserver-addr",
        "127.0.0.1:0",
        "--port-base",
        "0",
        "--gsl-addr",
        "127.0.0.1:0",
        "--sgs-addr",
        "127.0.0.1:0",
        "--proxy-addr",
        "127.0.0.1:0",
        "--shards",
        "1",
    ];
    Cli::try_parse_from(argv.iter().chain(extra)).unwrap().args
}

/// One scrape of `address`, checked for format (and by promtool where installed); `None`
/// while it does not answer.
fn scrape(address: SocketAddr) -> Option<Exposition> {
    let (status, text) = testkit::http_get(address, "/metrics").ok()?;
    assert_eq!(status, 200, "{address}: {text}");
    Some(telemetry::parse::checked(&text).unwrap_or_else(|e| panic!("{address}: {e}\n{text}")))
}

/// The metric names (`defibus_…`, as PromQL writes samples) in `text`.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("defibus_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

/// Traffic that makes every per-topic and per-group series appear: records produced, a
/// request answered by a responder group (kept consuming, so its group's series stay), a
/// proxy request. Returns the client and the responder, to close after the scrapes.
fn traffic(bus: &Bus) -> (Client, Responder) {
    let config = ClientConfig::new([bus.nameserver_addr().to_string()], "A10")
        .unwrap()
        .with_request_timeout(Duration::from_secs(10));
    let client = Client::new(config).unwrap();
    let admin = Admin::new(&client);
    testkit::wait_until("both brokers registered", WAIT, || {
        admin.cluster_info().is_ok_and(|i| i.brokers.len() == 2)
    });
    for topic in [TOPIC, SERVICE_TOPIC] {
        let mut config = TopicConfig::new(&topic.parse().unwrap());
        config.queue_count = 1;
        config.read_queue_count = 1;
        config.write_queue_count = 1;
        let brokers = admin.create_topic_on_cluster(None, &config).unwrap();
        assert_eq!(brokers.len(), 2, "{topic} on both brokers");
        testkit::wait_until(&format!("{topic} routed on both brokers"), WAIT, || {
            admin.topic_route(topic).is_ok_and(|r| r.queues.len() == 2)
        });
    }
    let producer = Producer::new(&client).unwrap();
    for i in 0..4 {
        producer
            .send(Message::new(TOPIC, format!("event {i}").into_bytes()))
            .unwrap();
    }
    let responder = Responder::start(&client, SERVICE_TOPIC, "svc", |m| m.value.clone()).unwrap();
    let reply = Requester::new(&client)
        .request(Message::new(SERVICE_TOPIC, b"ping".to_vec()), WAIT)
        .unwrap();
    assert_eq!(reply.value, b"ping");
    (client, responder)
}

#[test]
fn every_part_serves_metrics_on_its_own_address_and_the_dashboard_names_only_real_ones() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::start(&args(
        dir.path(),
        &["--brokers", "2", "--metrics-port-base", "0"],
    ))
    .expect("the bus starts");
    let metrics = bus.metrics();
    let parts: Vec<&str> = metrics.iter().map(|(part, _)| part.as_str()).collect();
    assert_eq!(
        parts,
        ["broker-a", "broker-b", "nameserver", "gsl", "sgs", "proxy"]
    );
    let addresses: BTreeSet<SocketAddr> = metrics
        .iter()
        .map(|(part, address)| address.unwrap_or_else(|| panic!("{part} serves no metrics")))
        .collect();
    assert_eq!(addresses.len(), metrics.len(), "each on its own address");
    let banner = bus.banner();
    for (part, address) in &metrics {
        let line = format!(
            "  metrics     {part:<11} http://{}/metrics",
            address.unwrap()
        );
        assert!(banner.contains(&line), "{line:?} not in\n{banner}");
    }

    let (client, responder) = traffic(&bus);
    let proxy = bus.proxy_addr().expect("the proxy runs");
    assert_eq!(testkit::http_get(proxy, "/health").unwrap().0, 200);

    let mut names = BTreeSet::new();
    let mut replies_seen = 0.0;
    for (part, address) in &metrics {
        let address = address.unwrap();
        let scraped = testkit::wait_for(&format!("{part}'s figures"), WAIT, || {
            scrape(address).filter(|m| match part.as_str() {
                "nameserver" => m.value("defibus_nameserver_live_brokers", &[]) == Some(2.0),
                "proxy" => m
                    .value(
                        "defibus_proxy_requests_total",
                        &[("route", "/health"), ("status", "200")],
                    )
                    .is_some(),
                "gsl" | "sgs" => true,
                // Both brokers hold a queue of each topic; the group's lag is reported by
                // both, and the one that took the request has its latency.
                _ => m
                    .value(
                        "defibus_group_lag_records",
                        &[("topic", SERVICE_TOPIC), ("group", "svc")],
                    )
                    .is_some(),
            })
        });
        replies_seen += scraped
            .value(
                "defibus_request_reply_seconds_count",
                &[("topic", SERVICE_TOPIC)],
            )
            .unwrap_or(0.0);
        names.extend(scraped.samples.into_iter().map(|s| s.name));
    }
    assert_eq!(replies_seen, 1.0, "one request-reply, on one broker");
    responder.close().unwrap();
    client.close();

    let ops = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ops");
    let mut checked = 0;
    for file in [
        "defibus-dashboard.json",
        "defibus-alerts.yml",
        "defibus-alerts.test.yml",
    ] {
        let text = std::fs::read_to_string(ops.join(file)).unwrap();
        let used = names_in(&text);
        assert!(!used.is_empty(), "{file} names no metric");
        let missing: Vec<&String> = used.iter().filter(|n| !names.contains(*n)).collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics no part serves: {missing:?}"
        );
        checked += used.len();
    }
    assert!(checked > 20, "{checked} names checked");
    bus.shutdown().unwrap();
}

/// Every query of the dashboard, with Grafana's variables given values, as Prometheus would
/// run it.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ops/defibus-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap().to_owned();
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {title:?} queries nothing");
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$topic", ".*");
            queries.push((title.clone(), expr));
        }
    }
    queries
}

#[test]
fn the_dashboard_imports_and_every_query_parses() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 30, "{} queries", queries.len());
    // promtool parses PromQL only in rules: each query as a recording rule.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in queries.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::to_string(expr).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(&file, &rules).unwrap();
    match std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
    {
        Err(_) => eprintln!("promtool not installed: the dashboard's queries are not parsed"),
        Ok(out) => assert!(
            out.status.success(),
            "promtool check rules on the dashboard's queries: {}{}\n{rules}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[test]
fn no_metrics_serves_none_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::start(&args(dir.path(), &["--no-metrics", "--no-proxy"])).unwrap();
    assert!(bus.metrics().iter().all(|(_, address)| address.is_none()));
    assert!(bus.banner().contains("  metrics     off (--no-metrics)\n"));
    bus.shutdown().unwrap();
}

#[test]
fn the_metrics_ports_follow_the_base_in_the_servers_default_order() {
    let dir = tempfile::tempdir().unwrap();
    let all = args(
        dir.path(),
        &["--brokers", "3", "--metrics-port-base", "19110"],
    );
    use super::standalone::metrics_plan;
    assert_eq!(
        metrics_plan(&all).unwrap(),
        [
            ("broker-a", "127.0.0.1:19110"),
            ("nameserver", "127.0.0.1:19111"),
            ("gsl", "127.0.0.1:19112"),
            ("sgs", "127.0.0.1:19113"),
            ("proxy", "127.0.0.1:19114"),
            ("broker-b", "127.0.0.1:19115"),
            ("broker-c", "127.0.0.1:19116"),
        ]
        .map(|(part, address)| (part.to_owned(), address.to_owned()))
    );
    let high = args(dir.path(), &["--metrics-port-base", "65534"]);
    let err = metrics_plan(&high).unwrap_err();
    assert!(err.to_string().contains("--metrics-port-base"), "{err}");
}
