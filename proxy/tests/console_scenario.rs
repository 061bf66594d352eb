//! The console and its read API against a live bus: the topics, groups and cluster answers
//! carry the figures the brokers' statistics (`admin topic stats`) hold; services are listed
//! from the SGS and deployed through the proxy; the console's files come with their content
//! types and a strict Content-Security-Policy; errors are the API's JSON.

mod support;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use client::{Admin, ConsumeMode, Consumer, Message, Producer, QueueSelector};
use defibus_tests::WAIT;
use protocol::control::{FlushMode, ServiceRecord, ServiceState};
use serde_json::Value;
use testkit::{wait_for, wait_until};

use support::Bus;

const TOPIC: &str = "A10-7501";

/// (start, next, committed offset of `group`) of every queue of `TOPIC`, from the broker.
fn queue_stats(admin: &Admin, endpoint: &str, group: &str) -> Vec<(u32, u64, u64, Option<u64>)> {
    let stats = admin.stats(endpoint).unwrap();
    stats
        .queues
        .iter()
        .filter(|q| q.topic == TOPIC)
        .map(|q| {
            let committed = q
                .groups
                .iter()
                .find(|g| g.group == group)
                .and_then(|g| g.committed_offset);
            (q.queue_id, q.start_offset, q.next_offset, committed)
        })
        .collect()
}

#[test]
fn topics_groups_and_cluster_carry_the_brokers_figures() {
    let bus = Bus::start(&[TOPIC], |_| {});
    let client = defibus_tests::client(&bus.cluster.nameserver);
    let producer = Producer::with_selector(&client, QueueSelector::KeyHash).unwrap();
    // One key: every message in one queue, so the group's lag there is exact.
    for i in 0..6 {
        producer
            .send(Message::new(TOPIC, format!("m{i}").into_bytes()).with_key(b"k".to_vec()))
            .unwrap();
    }
    // The group handles two messages, then holds the third until the test ends: two are
    // committed, four stay behind.
    let (release, gate) = mpsc::channel::<()>();
    let gate = Mutex::new(gate);
    let counter = Arc::new(AtomicU64::new(0));
    let consumer = Consumer::start(&client, TOPIC, "g1", ConsumeMode::Clustering, move |_| {
        if counter.fetch_add(1, Ordering::SeqCst) >= 2 {
            let _ = gate.lock().unwrap().recv();
        }
    })
    .unwrap();
    let _held = Held {
        release: Some(release),
        consumer: Some(consumer),
    };
    let admin = bus.cluster.admin();
    let endpoint = bus.cluster.endpoints()[0].clone();
    wait_until("the group commits its first two messages", WAIT, || {
        queue_stats(&admin, &endpoint, "g1")
            .iter()
            .any(|q| q.3 == Some(2))
    });
    let truth = queue_stats(&admin, &endpoint, "g1");
    let infos = admin.list_topics(&endpoint).unwrap();
    let info = infos.iter().find(|t| t.topic == TOPIC).unwrap();
    let depths = &info.queue_depths;

    let (status, topics) = bus.get(&format!("/v1/topics?topic={TOPIC}"));
    assert_eq!(status, 200, "{topics}");
    assert_eq!(topics["topics"].as_array().unwrap().len(), 1, "{topics}");
    let topic = &topics["topics"][0];
    assert_eq!(topic["topic"], TOPIC);
    assert_eq!(topic["max_queue_depth"], info.max_queue_depth);
    let queues = topic["queues"].as_array().unwrap();
    assert_eq!(queues.len(), truth.len());
    for (queue, (id, start, next, _)) in queues.iter().zip(&truth) {
        assert_eq!(queue["queue_id"], *id);
        assert_eq!(queue["broker_id"], "broker-0");
        assert_eq!(queue["start_offset"], *start);
        assert_eq!(queue["next_offset"], *next);
        assert_eq!(queue["depth"], depths[*id as usize]);
        assert_eq!(queue["max_depth"], info.max_queue_depth);
    }
    assert_eq!(
        queues
            .iter()
            .map(|q| &q["next_offset"])
            .filter(|n| **n == 6)
            .count(),
        1,
        "one queue holds all six: {topics}"
    );
    assert!(topics["read_at_ms"].as_u64().unwrap() > 0);

    let (status, groups) = bus.get(&format!("/v1/groups?topic={TOPIC}"));
    assert_eq!(status, 200, "{groups}");
    let group = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "g1")
        .unwrap_or_else(|| panic!("g1 missing: {groups}"));
    let expected: u64 = truth
        .iter()
        .map(|(_, start, next, committed)| next - committed.unwrap_or(*start))
        .sum();
    assert_eq!(expected, 4, "six stored, two committed");
    assert_eq!(group["lag"], expected);
    assert_eq!(group["members"].as_array().unwrap().len(), 1, "{group}");

    let (status, cluster) = bus.get("/v1/cluster");
    assert_eq!(status, 200, "{cluster}");
    let broker = &cluster["brokers"][0];
    assert_eq!(broker["broker_id"], "broker-0");
    assert_eq!(broker["error"], Value::Null);
    assert_eq!(
        broker["shards"][0]["port"],
        bus.cluster.brokers[0].shard_ports()[0]
    );
    assert!(broker["shards"][0]["connections"].as_u64().unwrap() >= 1);
    let nameserver = &cluster["nameservers"][0];
    assert_eq!(nameserver["reachable"], true);
    assert_eq!(nameserver["brokers"], 1);

    // Bad input is the API's JSON error.
    let (status, bad) = bus.get("/v1/topics?topic=nope");
    assert_eq!(
        (status, bad["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, bad) = bus.get("/v1/groups?colour=red");
    assert_eq!(status, 400, "{bad}");
    // Without an SGS configured, services are unavailable, saying which setting is missing.
    let (status, none) = bus.get("/v1/services");
    assert_eq!(status, 503, "{none}");
    assert!(none["error"]["message"].as_str().unwrap().contains("--sgs"));
}

/// A consumer whose handler is held on a gate: on drop (a failed assertion included) the
/// gate opens first, so the consumer's handler thread can end and the consumer close.
struct Held {
    release: Option<mpsc::Sender<()>>,
    consumer: Option<Consumer>,
}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.release.take());
        drop(self.consumer.take());
    }
}

#[test]
fn services_are_listed_and_deployed_through_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let mut plane = None;
    let bus = Bus::start(&[], |config| {
        let gsl = gsl::start(gsl::GslConfig {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("gsl"),
            ..gsl::GslConfig::default()
        })
        .unwrap();
        let area = sgs::config::AreaConfig {
            cluster: "itests".into(),
            nameservers: config.nameservers.clone(),
        };
        let sgs = sgs::start(sgs::SgsConfig {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("sgs"),
            gsl_endpoints: vec![gsl.local_addr().to_string()],
            areas: [("A10".to_owned(), area)].into_iter().collect(),
            ..sgs::SgsConfig::default()
        })
        .unwrap();
        config.gsl_endpoints = vec![gsl.local_addr().to_string()];
        config.sgs_endpoint = Some(sgs.local_addr().to_string());
        plane = Some((gsl, sgs));
    });
    let (gsl, sgs) = plane.unwrap();
    let mut sgs_client =
        sgs::client::SgsClient::connect(&sgs.local_addr().to_string(), None).unwrap();
    let record = ServiceRecord {
        service_id: "7502".into(),
        name: "greeter".into(),
        owner: "team-a".into(),
        deployed_areas: vec!["A10".into()],
        queue_count: 2,
        max_queue_depth: 100,
        flush_mode: FlushMode::Async,
        state: ServiceState::Applied,
    };
    sgs_client.apply(&record).unwrap();

    let (status, services) = bus.get("/v1/services");
    assert_eq!(status, 200, "{services}");
    assert_eq!(services["sgs"], sgs.local_addr().to_string());
    let service = &services["services"][0];
    assert_eq!(service["service_id"], "7502");
    assert_eq!(service["state"], "applied");
    assert_eq!(service["topics"], serde_json::json!(["A10-7502"]));
    assert_eq!(service["actions"], serde_json::json!(["deploy", "offline"]));
    assert_eq!(
        service["resolved_areas"],
        Value::Null,
        "not deployed: GSL not asked"
    );

    let (status, deployed) = bus.post("/v1/services/7502/deploy", "");
    assert_eq!(status, 200, "{deployed}");
    assert_eq!(deployed["state"], "deployed");
    assert_eq!(deployed["resolved_areas"], serde_json::json!(["A10"]));
    let listed = sgs_client.list().unwrap();
    assert_eq!(
        listed[0].state,
        ServiceState::Deployed,
        "the SGS holds the change"
    );
    // Its topic exists on the broker now, and the topics answer shows it.
    let topics = wait_for("the deployed topic is listed", WAIT, || {
        let (_, topics) = bus.get("/v1/topics?topic=A10-7502");
        (topics["topics"].as_array().map(Vec::len) == Some(1)).then_some(topics)
    });
    assert_eq!(topics["topics"][0]["max_queue_depth"], 100);

    let (status, error) = bus.post("/v1/services/7599/deploy", "");
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, error) = bus.post("/v1/services/7502/explode", "");
    assert_eq!(status, 404, "{error}");
    let (status, error) = bus.post("/v1/services/a-b/deploy", "");
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, error) = bus.get("/v1/services/7502/deploy");
    assert_eq!(status, 405, "{error}");

    let (status, offline) = bus.post("/v1/services/7502/offline", "");
    assert_eq!(status, 200, "{offline}");
    assert_eq!(offline["state"], "offline");
    assert_eq!(offline["actions"], serde_json::json!(["deploy"]));
    drop(bus);
    sgs.shutdown().unwrap();
    gsl.shutdown().unwrap();
}

#[test]
fn the_console_is_served_with_its_content_types_and_a_strict_policy() {
    let bus = Bus::start(&[], |_| {});
    let agent = ureq::AgentBuilder::new().timeout(WAIT).build();
    for (path, content_type, contains) in [
        (
            "/console",
            "text/html; charset=utf-8",
            "<title>DeFiBus console</title>",
        ),
        (
            "/console/console.js",
            "text/javascript; charset=utf-8",
            "/v1/topics",
        ),
        ("/console/console.css", "text/css; charset=utf-8", "meter"),
        ("/console/icon.svg", "image/svg+xml", "<svg"),
    ] {
        let response = agent.get(&bus.url(path)).call().unwrap();
        assert_eq!(
            response.header("content-type"),
            Some(content_type),
            "{path}"
        );
        let policy = response
            .header("content-security-policy")
            .unwrap()
            .to_owned();
        assert!(policy.contains("default-src 'none'"), "{policy}");
        assert!(policy.contains("script-src 'self'"), "{policy}");
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
        let body = response.into_string().unwrap();
        assert!(body.contains(contains), "{path}");
    }
    let (status, missing) = bus.get("/console/secrets.txt");
    assert_eq!(
        (status, missing["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
}
