//! A broker that stops registering is dropped within its expiry; one that keeps on stays.

mod support;

use std::time::{Duration, Instant};

use protocol::codes::Status;
use support::{Client, PATIENCE, broker, start_nameserver, topic};
use testkit::wait_until;

const TOPIC: &str = "A10-20190001";
const EXPIRY_MS: u64 = 1_000;

#[test]
fn a_silent_broker_is_dropped_within_its_expiry_while_a_registering_one_stays() {
    let ns = start_nameserver(|config| {
        config.broker_expiry_ms = EXPIRY_MS;
        config.sweep_interval_ms = 50;
    });
    let mut silent = Client::connect(ns.local_addr());
    let mut alive = Client::connect(ns.local_addr());
    let mut client = Client::connect(ns.local_addr());
    let a = broker("silent", &[1001], vec![topic(TOPIC, 2, 2, 2)]);
    let b = broker("alive", &[2001], vec![topic(TOPIC, 2, 2, 2)]);
    assert_eq!(silent.register(&a).expiry_ms, EXPIRY_MS);
    let last_registration = Instant::now();
    alive.register(&b);
    assert_eq!(client.broker_ids(), ["alive", "silent"]);

    // `alive` keeps registering at a fifth of the expiry; `silent` sends nothing more.
    let mut next_heartbeat = Instant::now();
    wait_until("the silent broker to be dropped", PATIENCE, || {
        if Instant::now() >= next_heartbeat {
            alive.register(&b);
            next_heartbeat += Duration::from_millis(EXPIRY_MS / 5);
        }
        client.broker_ids() == ["alive"]
    });
    let dropped_after = last_registration.elapsed();
    assert!(
        dropped_after >= Duration::from_millis(EXPIRY_MS),
        "dropped after {dropped_after:?}, before its expiry"
    );
    let route = client.route(TOPIC).unwrap();
    assert!(
        route.queues.iter().all(|q| q.broker_id == "alive"),
        "{route:?}"
    );

    // Registering again brings it back.
    silent.register(&a);
    assert_eq!(client.broker_ids(), ["alive", "silent"]);
}

#[test]
fn the_last_broker_of_a_topic_expiring_makes_the_topic_unknown() {
    let ns = start_nameserver(|config| {
        config.broker_expiry_ms = EXPIRY_MS;
        config.sweep_interval_ms = 50;
    });
    let mut conn = Client::connect(ns.local_addr());
    conn.register(&broker("only", &[1001], vec![topic(TOPIC, 1, 1, 1)]));
    assert!(conn.route(TOPIC).is_ok());
    wait_until("the topic to have no live broker", PATIENCE, || {
        conn.route(TOPIC)
            .is_err_and(|e| e.status() == Ok(Status::UnknownTopic))
    });
    assert!(conn.cluster_info().brokers.is_empty());
}
