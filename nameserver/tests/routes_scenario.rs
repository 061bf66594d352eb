//! Brokers register, clients fetch routes and cluster info; several nameservers stay apart.

mod support;

use nameserver::routing::queue_shard;
use protocol::codes::Status;
use protocol::control::QueueRoute;
use support::{Client, broker, start_nameserver, topic};

const TOPIC: &str = "A10-20190001";

#[test]
fn routes_list_every_queue_of_every_broker_with_owner_port_and_flags() {
    let ns = start_nameserver(|_| {});
    let mut a_conn = Client::connect(ns.local_addr());
    let mut b_conn = Client::connect(ns.local_addr());
    let a = broker(
        "broker-a",
        &[10911, 10912, 10913],
        vec![topic(TOPIC, 4, 4, 3)],
    );
    let mut b = broker(
        "broker-b",
        &[20911, 20912],
        vec![topic(TOPIC, 2, 1, 2), topic("A10-other", 1, 1, 1)],
    );
    b.area = "B20".into();
    b.cluster = "c2".into();
    assert_eq!(a_conn.register(&a).expiry_ms, 9_000);
    assert_eq!(b_conn.register(&b).expiry_ms, 9_000);

    let mut client = Client::connect(ns.local_addr());
    let route = client.route(TOPIC).unwrap();
    assert_eq!(route.topic, TOPIC);
    let expected: Vec<QueueRoute> = [(&a, 4u32, 4u32, 3u32), (&b, 2, 1, 2)]
        .into_iter()
        .flat_map(|(reg, queues, read, write)| {
            (0..queues).map(move |queue_id| QueueRoute {
                broker_id: reg.broker_id.clone(),
                cluster: reg.cluster.clone(),
                area: reg.area.clone(),
                address: reg.address.clone(),
                shard_port: reg.shard_ports[queue_shard(TOPIC, queue_id, reg.shard_ports.len())],
                queue_id,
                readable: queue_id < read,
                writable: queue_id < write,
            })
        })
        .collect();
    assert_eq!(route.queues, expected);
    // The hash really spreads this topic over more than one shard of broker a.
    let a_ports: std::collections::BTreeSet<u16> =
        route.queues[..4].iter().map(|q| q.shard_port).collect();
    assert!(a_ports.len() > 1, "{a_ports:?}");

    let other = client.route("A10-other").unwrap();
    assert_eq!(other.queues.len(), 1);
    assert_eq!(other.queues[0].broker_id, "broker-b");
}

#[test]
fn cluster_info_summarises_every_live_broker() {
    let ns = start_nameserver(|_| {});
    let mut conn = Client::connect(ns.local_addr());
    let before_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    conn.register(&broker("b2", &[2001], vec![]));
    conn.register(&broker(
        "b1",
        &[1001, 1002],
        vec![topic(TOPIC, 1, 1, 1), topic("A10-x", 1, 1, 1)],
    ));
    let info = conn.cluster_info();
    assert_eq!(info.brokers.len(), 2);
    let b1 = &info.brokers[0];
    assert_eq!(b1.broker_id, "b1", "sorted by broker id");
    assert_eq!(b1.cluster, "c1");
    assert_eq!(b1.area, "A10");
    assert_eq!(b1.address, "127.0.0.1");
    assert_eq!(b1.shard_ports, [1001, 1002]);
    assert_eq!(b1.topic_count, 2);
    assert!(b1.last_heartbeat_ms >= before_ms, "{b1:?}");
    assert_eq!(info.brokers[1].topic_count, 0);
}

#[test]
fn reregistration_replaces_the_previous_registration() {
    let ns = start_nameserver(|_| {});
    let mut conn = Client::connect(ns.local_addr());
    conn.register(&broker("a", &[1001], vec![topic(TOPIC, 4, 4, 4)]));
    conn.register(&broker("a", &[1001, 1002], vec![topic("A10-new", 2, 2, 2)]));
    assert_eq!(
        conn.route(TOPIC).unwrap_err().status(),
        Ok(Status::UnknownTopic)
    );
    assert_eq!(conn.route("A10-new").unwrap().queues.len(), 2);
    assert_eq!(conn.cluster_info().brokers[0].shard_ports, [1001, 1002]);
}

#[test]
fn unregister_removes_the_broker_and_its_routes_and_is_idempotent() {
    let ns = start_nameserver(|_| {});
    let mut conn = Client::connect(ns.local_addr());
    conn.register(&broker("a", &[1001], vec![topic(TOPIC, 2, 2, 2)]));
    conn.register(&broker("b", &[2001], vec![topic(TOPIC, 2, 2, 2)]));
    conn.unregister("a");
    assert_eq!(conn.broker_ids(), ["b"]);
    let route = conn.route(TOPIC).unwrap();
    assert!(route.queues.iter().all(|q| q.broker_id == "b"), "{route:?}");
    conn.unregister("a");
    conn.unregister("b");
    assert!(conn.cluster_info().brokers.is_empty());
    assert_eq!(
        conn.route(TOPIC).unwrap_err().status(),
        Ok(Status::UnknownTopic)
    );
}

#[test]
fn unknown_topics_and_bad_requests_are_refused_on_a_connection_that_stays_open() {
    let ns = start_nameserver(|_| {});
    let mut conn = Client::connect(ns.local_addr());
    let err = conn.route("A10-nobody").unwrap_err();
    assert_eq!(err.status(), Ok(Status::UnknownTopic));
    assert!(err.message.contains("A10-nobody"), "{err:?}");

    let err = conn.route("not a topic").unwrap_err();
    assert_eq!(err.status(), Ok(Status::InvalidName));

    let mut bad_area = broker("a", &[1001], vec![]);
    bad_area.area = "a1".into();
    let (status, frame) = conn.call(
        protocol::codes::Command::BrokerRegister,
        &protocol::control::encode(&bad_area).unwrap(),
    );
    assert_eq!(status, Status::InvalidName);
    assert!(support::error_reply(&frame).message.contains("a1"));

    let mut bad_counts = broker("a", &[1001], vec![topic(TOPIC, 2, 3, 2)]);
    bad_counts.topics[0].queue_depths = vec![0, 0];
    let (status, _) = conn.call(
        protocol::codes::Command::BrokerRegister,
        &protocol::control::encode(&bad_counts).unwrap(),
    );
    assert_eq!(status, Status::InvalidArgument);

    // Nothing refused was recorded, and the connection still answers.
    assert!(conn.cluster_info().brokers.is_empty());
}

#[test]
fn independent_nameservers_each_serve_what_was_registered_with_them() {
    let first = start_nameserver(|_| {});
    let second = start_nameserver(|_| {});
    assert_ne!(first.local_addr(), second.local_addr());
    let mut one = Client::connect(first.local_addr());
    let mut two = Client::connect(second.local_addr());
    one.register(&broker("a", &[1001], vec![topic("A10-one", 1, 1, 1)]));
    two.register(&broker("b", &[2001], vec![topic("A10-two", 1, 1, 1)]));
    assert_eq!(one.broker_ids(), ["a"]);
    assert_eq!(two.broker_ids(), ["b"]);
    assert_eq!(one.route("A10-one").unwrap().queues[0].broker_id, "a");
    assert_eq!(two.route("A10-two").unwrap().queues[0].broker_id, "b");
    assert!(one.route("A10-two").is_err());
    assert!(two.route("A10-one").is_err());
    // Stopping one leaves the other serving.
    first.shutdown().unwrap();
    assert_eq!(two.broker_ids(), ["b"]);
}
