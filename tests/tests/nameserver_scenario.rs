//! A broker killed with SIGKILL stops registering without unregistering; the nameserver
//! stops routing to it within its expiry and then drops it, and producers route around it:
//! every send keeps succeeding, on the surviving broker.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{Admin, Message, Producer, SendResult};
use defibus_tests::{
    ChildBroker, REGISTER_INTERVAL_MS, WAIT, broker_config, child_broker_main, client, client_with,
    create_topic, endpoint, start_nameserver, topic_config,
};
use protocol::control::FlushMode;
use testkit::wait_until;

const TOPIC: &str = "A10-3401";
const QUEUES: u32 = 2;
const EXPIRY_MS: u64 = 1000;
const SWEEP_MS: u64 = 100;
/// The test the child processes run: see [`ChildBroker`].
const CHILD_ENTRY: &str = "child_broker";

/// Every send's completion time and outcome (the acknowledgement, or the error's text).
type SendLog = Arc<Mutex<Vec<(Instant, Result<SendResult, String>)>>>;

#[test]
#[ignore = "entry point of the child broker process, run by ChildBroker::spawn"]
fn child_broker() {
    child_broker_main();
}

#[test]
fn a_dead_broker_expires_and_producers_route_around_it() {
    let nameserver = start_nameserver(|c| {
        c.broker_expiry_ms = EXPIRY_MS;
        c.sweep_interval_ms = SWEEP_MS;
    });
    let dir = tempfile::tempdir().unwrap();
    let survivor = ChildBroker::spawn(
        CHILD_ENTRY,
        &broker_config("survivor", 1, &dir.path().join("survivor"), &nameserver),
    );
    let victim = ChildBroker::spawn(
        CHILD_ENTRY,
        &broker_config("victim", 1, &dir.path().join("victim"), &nameserver),
    );
    let admin_client = client(&nameserver);
    let admin = Admin::new(&admin_client);
    create_topic(
        &admin,
        &[
            endpoint(survivor.shard_ports()[0]),
            endpoint(victim.shard_ports()[0]),
        ],
        &topic_config(TOPIC, QUEUES, FlushMode::Async),
    );

    // A producer sends without pause from before the kill until well after the expiry.
    // At-least-once failover: with idempotence on (the default), a batch in doubt on the
    // killed broker waits for it instead of moving (ARCHITECTURE §13.1); this test is about
    // moving.
    let producer_client = client_with(&nameserver, |c| c.with_retries(3).with_idempotence(false));
    let producer = Producer::new(&producer_client).unwrap();
    let results: SendLog = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (results, stop) = (results.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Acquire) {
                let sent = producer
                    .send(Message::new(TOPIC, format!("n{i}")))
                    .map_err(|e| e.to_string());
                results.lock().unwrap().push((Instant::now(), sent));
                i += 1;
            }
        })
    };
    let acked_by = |broker: &str| {
        results
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, r)| r.as_ref().is_ok_and(|s| s.broker_id == broker))
            .count()
    };
    wait_until("sends to reach both brokers", WAIT, || {
        acked_by("survivor") > 0 && acked_by("victim") > 0
    });

    let killed = Instant::now();
    victim.kill_9();
    // Its last registration was at most one interval before the kill.
    wait_until("the victim's queues to leave the route", WAIT, || {
        admin
            .topic_route(TOPIC)
            .is_ok_and(|r| r.queues.iter().all(|q| q.broker_id == "survivor"))
    });
    let unrouted_after = killed.elapsed();
    let bound = Duration::from_millis(EXPIRY_MS + REGISTER_INTERVAL_MS);
    assert!(
        unrouted_after <= bound,
        "the victim was still routed {unrouted_after:?} after the kill; expiry {EXPIRY_MS} ms"
    );
    wait_until("the victim to leave the cluster info", WAIT, || {
        admin
            .cluster_info()
            .is_ok_and(|i| i.brokers.iter().all(|b| b.broker_id != "victim"))
    });
    assert!(
        unrouted_after >= Duration::from_millis(EXPIRY_MS - REGISTER_INTERVAL_MS),
        "the victim left the route after {unrouted_after:?}: sooner than its expiry \
         allows, so not through expiry"
    );

    // Keep sending a while past the expiry, then check every send.
    let expired_at = Instant::now();
    wait_until("100 more sends after the expiry", WAIT, || {
        results
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| *at > expired_at)
            .count()
            >= 100
    });
    stop.store(true, Ordering::Release);
    sender.join().expect("the sender thread");

    let results = results.lock().unwrap();
    let failures: Vec<_> = results
        .iter()
        .filter_map(|(at, r)| r.as_ref().err().map(|e| (at.duration_since(killed), e)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} sends failed (time after the kill, error), e.g. {:?}",
        failures.len(),
        results.len(),
        &failures[..failures.len().min(5)]
    );
    let mut after_expiry: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, r) in results.iter().filter(|(at, _)| *at > expired_at) {
        *after_expiry
            .entry(r.as_ref().unwrap().broker_id.as_str())
            .or_insert(0) += 1;
    }
    assert_eq!(
        after_expiry.keys().copied().collect::<Vec<_>>(),
        ["survivor"],
        "brokers acknowledging sends after the expiry: {after_expiry:?}"
    );
    drop(survivor);
}
