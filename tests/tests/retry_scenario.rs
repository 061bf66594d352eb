//! Retries, dead letters and time-to-live (issue 15, ARCHITECTURE §13.2 and §13.5), on a
//! real nameserver and a two-shard broker with short per-group backoff schedules:
//! - a handler that fails three times is delivered four times, each redelivery after its
//!   backoff, then committed, and nothing more arrives;
//! - one that always fails ends in the group's dead-letter topic after `max_redeliveries`
//!   while the messages behind it flow; `resend` brings it back to its topic exactly once;
//! - an ordered consumer retries in place, keeping order, and dead-letters what never passes;
//! - a pending retry survives a broker restart (it is in the log);
//! - events past their time-to-live are not delivered, and are counted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{
    Admin, Client, ConsumeMode, Consumer, ConsumerOptions, Message, Producer, ReceivedMessage,
    RetryPolicy,
};
use defibus_tests::{
    WAIT, broker_config, client, create_topic, endpoint, start_broker, start_nameserver,
    topic_config,
};
use engine::Broker;
use engine::config::GroupRetryConfig;
use nameserver::NameserverHandle;
use protocol::codes::Command;
use protocol::control::FlushMode;
use testkit::wait_until;

const TOPIC: &str = "A10-20190001";

/// A nameserver and one two-shard broker with per-group retry overrides.
struct Bus {
    nameserver: NameserverHandle,
    broker: Option<Broker>,
    groups: Vec<GroupRetryConfig>,
    dir: tempfile::TempDir,
    client: Client,
}

fn group(name: &str, schedule_ms: &[u64], max_redeliveries: u32) -> GroupRetryConfig {
    GroupRetryConfig {
        group: name.into(),
        schedule_ms: Some(schedule_ms.to_vec()),
        max_redeliveries: Some(max_redeliveries),
    }
}

impl Bus {
    fn start(groups: Vec<GroupRetryConfig>) -> Self {
        let nameserver = start_nameserver(|_| {});
        let dir = tempfile::tempdir().unwrap();
        let client = client(&nameserver);
        let mut bus = Self {
            nameserver,
            broker: None,
            groups,
            dir,
            client,
        };
        bus.start_broker();
        create_topic(
            &bus.admin(),
            &[bus.endpoint()],
            &topic_config(TOPIC, 1, FlushMode::Async),
        );
        bus
    }

    fn start_broker(&mut self) {
        let mut config = broker_config("broker-0", 2, &self.dir.path().join("b"), &self.nameserver);
        config.retry.groups = self.groups.clone();
        self.broker = Some(start_broker(config));
    }

    fn endpoint(&self) -> String {
        endpoint(self.broker.as_ref().unwrap().shard_ports()[0])
    }

    fn admin(&self) -> Admin {
        Admin::new(&self.client)
    }

    fn send(&self, producer: &Producer, message: Message) {
        producer
            .send(message)
            .unwrap_or_else(|e| panic!("send to {TOPIC}: {e}"));
    }

    /// The committed offset of `group` and the next offset of every queue of `topic`.
    fn progress(&self, topic: &str, group: &str) -> Vec<(u32, Option<u64>, u64)> {
        let stats = self.admin().stats(&self.endpoint()).unwrap();
        stats
            .queues
            .iter()
            .filter(|q| q.topic == topic)
            .map(|q| {
                let committed = q
                    .groups
                    .iter()
                    .find(|g| g.group == group)
                    .and_then(|g| g.committed_offset);
                (q.queue_id, committed, q.next_offset)
            })
            .collect()
    }
}

/// One handler call: when, which redelivery, the value and the topic it came from.
#[derive(Clone, Debug)]
struct Call {
    at: Instant,
    redelivery: u32,
    value: String,
    origin: String,
}

type Calls = Arc<Mutex<Vec<Call>>>;

fn record(calls: &Calls, m: &ReceivedMessage) -> usize {
    let mut calls = calls.lock().unwrap();
    calls.push(Call {
        at: Instant::now(),
        redelivery: m.redelivery_count(),
        value: String::from_utf8(m.value.clone()).unwrap(),
        origin: m.origin_topic().to_owned(),
    });
    calls
        .iter()
        .filter(|c| c.value.as_bytes() == &m.value[..])
        .count()
}

fn calls_of(calls: &Calls, value: &str) -> Vec<Call> {
    calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.value == value)
        .cloned()
        .collect()
}

/// Asserts the gaps between consecutive calls are at least the schedule's delays, and not
/// far past them.
fn assert_backoffs(calls: &[Call], schedule_ms: &[u64]) {
    for (i, pair) in calls.windows(2).enumerate() {
        let gap = pair[1].at - pair[0].at;
        let want = Duration::from_millis(schedule_ms[i.min(schedule_ms.len() - 1)]);
        // The broker keeps due times in whole wall-clock milliseconds (the retry mark's
        // `due_ms`), so a copy may come due up to 1 ms before nack time + delay as this
        // monotonic clock sees it: a gap of 799.97 ms for 800 ms is on time.
        let tick = Duration::from_millis(1);
        assert!(
            gap + tick >= want && gap < want + Duration::from_secs(5),
            "gap {i} between deliveries was {gap:?}, the schedule says {want:?}"
        );
    }
}

#[test]
fn a_handler_that_fails_three_times_is_delivered_four_times_after_its_backoffs_then_committed() {
    let schedule = [200, 400, 800];
    let bus = Bus::start(vec![group("flaky", &schedule, 5)]);
    let calls: Calls = Arc::default();
    let sink = calls.clone();
    let consumer = Consumer::start_with_result(
        &bus.client,
        ConsumerOptions::new(TOPIC, "flaky", ConsumeMode::Clustering),
        move |m: &ReceivedMessage| {
            let seen = record(&sink, m);
            if m.value == b"flaky" && seen <= 3 {
                Err(format!("failure {seen}"))
            } else {
                Ok(())
            }
        },
    )
    .unwrap();
    let producer = Producer::new(&bus.client).unwrap();
    bus.send(&producer, Message::new(TOPIC, "flaky"));
    for i in 0..5 {
        bus.send(&producer, Message::new(TOPIC, format!("after-{i}")));
    }
    wait_until("four deliveries of the flaky message", WAIT, || {
        calls_of(&calls, "flaky").len() >= 4
    });
    let flaky = calls_of(&calls, "flaky");
    let counts: Vec<u32> = flaky.iter().map(|c| c.redelivery).collect();
    assert_eq!(counts, [0, 1, 2, 3], "redelivery counts");
    assert!(flaky.iter().all(|c| c.origin == TOPIC), "{flaky:?}");
    assert_backoffs(&flaky, &schedule);
    // The messages behind it were not held up by its backoff.
    for i in 0..5 {
        let after = calls_of(&calls, &format!("after-{i}"));
        assert_eq!(after.len(), 1, "after-{i} delivered once");
        assert!(after[0].at < flaky[1].at, "after-{i} waited for a retry");
    }
    // Consumed: the original queue and every retry queue are committed to their ends.
    let retry_topic = protocol::retry::retry_topic(TOPIC, "flaky").unwrap();
    wait_until("every queue committed to its end", WAIT, || {
        [TOPIC, retry_topic.as_str()].iter().all(|topic| {
            bus.progress(topic, "flaky")
                .iter()
                .all(|(_, committed, next)| *next == 0 || *committed == Some(*next))
        })
    });
    let stored: u64 = bus
        .progress(&retry_topic, "flaky")
        .iter()
        .map(|(_, _, next)| next)
        .sum();
    assert_eq!(stored, 3, "three copies in the retry topic");
    // An observation window: a fourth redelivery would come within the last backoff.
    let quiet_until = Instant::now() + Duration::from_millis(1500);
    wait_until("the observation window", WAIT, || {
        Instant::now() >= quiet_until
    });
    assert_eq!(calls_of(&calls, "flaky").len(), 4, "nothing more arrived");
    let stats = bus.admin().stats(&bus.endpoint()).unwrap();
    let retries: u64 = stats.shards.iter().flat_map(|s| &s.retries_by_level).sum();
    assert_eq!(retries, 3, "retries counted by level: {:?}", stats.shards);
    consumer.close().unwrap();
}

#[test]
fn a_message_that_always_fails_is_dead_lettered_without_blocking_and_resent_exactly_once() {
    let schedule = [200, 400];
    let bus = Bus::start(vec![group("poisoned", &schedule, 2)]);
    let calls: Calls = Arc::default();
    let failing = Arc::new(AtomicBool::new(true));
    let (sink, fail) = (calls.clone(), failing.clone());
    let consumer = Consumer::start_with_result(
        &bus.client,
        ConsumerOptions::new(TOPIC, "poisoned", ConsumeMode::Clustering),
        move |m: &ReceivedMessage| {
            record(&sink, m);
            if m.value == b"poison" && fail.load(Ordering::Acquire) {
                Err("always fails")
            } else {
                Ok(())
            }
        },
    )
    .unwrap();
    let producer = Producer::new(&bus.client).unwrap();
    bus.send(
        &producer,
        Message::new(TOPIC, "poison")
            .with_key("k1")
            .with_property("p", "v"),
    );
    for i in 0..20 {
        bus.send(&producer, Message::new(TOPIC, format!("fine-{i}")));
    }
    let dlq = protocol::retry::dead_letter_topic(TOPIC, "poisoned").unwrap();
    let admin = bus.admin();
    let show = || {
        admin
            .dead_letters_everywhere(&dlq, Command::DeadLetterShow, None, 0, None)
            .map(|answers| {
                answers
                    .into_iter()
                    .flat_map(|(_, _, reply)| reply.letters)
                    .collect::<Vec<_>>()
            })
    };
    wait_until("the poison message in the dead-letter topic", WAIT, || {
        show().is_ok_and(|letters| letters.len() == 1)
    });
    let poison = calls_of(&calls, "poison");
    assert_eq!(
        poison.len(),
        3,
        "delivered once and redelivered max_redeliveries times"
    );
    assert_backoffs(&poison, &schedule);
    for i in 0..20 {
        let fine = calls_of(&calls, &format!("fine-{i}"));
        assert_eq!(fine.len(), 1, "fine-{i} delivered once");
        assert!(
            fine[0].at < poison[1].at,
            "fine-{i} waited behind the poison message"
        );
    }
    let letter = show().unwrap().remove(0);
    assert_eq!(letter.origin_topic, TOPIC);
    assert_eq!((letter.origin_queue, letter.origin_offset), (0, 0));
    assert_eq!(letter.deliveries, 3);
    assert_eq!(letter.reason, "always fails");
    assert_eq!(
        (letter.key.as_slice(), letter.value_preview.as_slice()),
        (&b"k1"[..], &b"poison"[..])
    );
    let stats = admin.stats(&bus.endpoint()).unwrap();
    assert_eq!(stats.shards.iter().map(|s| s.dead_letters).sum::<u64>(), 1);

    // Fixed: resend it to its topic, once.
    failing.store(false, Ordering::Release);
    let resent: u64 = admin
        .dead_letters_everywhere(&dlq, Command::DeadLetterResend, None, 0, None)
        .unwrap()
        .iter()
        .map(|(_, _, reply)| reply.done)
        .sum();
    assert_eq!(resent, 1);
    wait_until("the resent message delivered", WAIT, || {
        calls_of(&calls, "poison").len() >= 4
    });
    let again = calls_of(&calls, "poison").pop().unwrap();
    assert_eq!(
        (again.redelivery, again.origin.as_str()),
        (0, TOPIC),
        "a fresh message"
    );
    let twice: u64 = admin
        .dead_letters_everywhere(&dlq, Command::DeadLetterResend, None, 0, None)
        .unwrap()
        .iter()
        .map(|(_, _, reply)| reply.done)
        .sum();
    assert_eq!(twice, 0, "a second resend has nothing to do");
    assert!(show().unwrap().is_empty(), "nothing pending");
    let quiet_until = Instant::now() + Duration::from_millis(1000);
    wait_until("the observation window", WAIT, || {
        Instant::now() >= quiet_until
    });
    assert_eq!(calls_of(&calls, "poison").len(), 4, "resent exactly once");
    consumer.close().unwrap();
}

#[test]
fn an_ordered_consumer_retries_in_place_keeping_order_and_dead_letters_what_never_passes() {
    let bus = Bus::start(Vec::new());
    let calls: Calls = Arc::default();
    let sink = calls.clone();
    let policy = RetryPolicy {
        schedule: vec![Duration::from_millis(100), Duration::from_millis(200)],
        max_redeliveries: 3,
    };
    let consumer = Consumer::start_with_result(
        &bus.client,
        ConsumerOptions::new(TOPIC, "ordered", ConsumeMode::Clustering)
            .ordered()
            .retry_policy(policy),
        move |m: &ReceivedMessage| {
            let seen = record(&sink, m);
            match m.value.as_slice() {
                b"m1" if seen <= 2 => Err("not yet"),
                b"never" => Err("never"),
                _ => Ok(()),
            }
        },
    )
    .unwrap();
    let producer = Producer::new(&bus.client).unwrap();
    for value in ["m0", "m1", "m2", "never", "m3"] {
        bus.send(&producer, Message::new(TOPIC, value).with_key("same"));
    }
    wait_until("m3 handled", WAIT, || !calls_of(&calls, "m3").is_empty());
    let order: Vec<String> = calls
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.value.clone())
        .collect();
    assert_eq!(
        order,
        [
            "m0", "m1", "m1", "m1", "m2", "never", "never", "never", "never", "m3"
        ],
        "retried in place, in order"
    );
    let m1 = calls_of(&calls, "m1");
    assert!(
        m1.iter().all(|c| c.redelivery == 0),
        "the same delivery, not a redelivery"
    );
    assert!(m1[1].at - m1[0].at >= Duration::from_millis(100));
    assert!(m1[2].at - m1[1].at >= Duration::from_millis(200));
    let admin = bus.admin();
    let retry_topic = protocol::retry::retry_topic(TOPIC, "ordered").unwrap();
    assert!(
        admin.topic_route(&retry_topic).is_err(),
        "no retry topic for an ordered group"
    );
    let dlq = protocol::retry::dead_letter_topic(TOPIC, "ordered").unwrap();
    let letters: Vec<_> = admin
        .dead_letters_everywhere(&dlq, Command::DeadLetterShow, None, 0, None)
        .unwrap()
        .into_iter()
        .flat_map(|(_, _, reply)| reply.letters)
        .collect();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (
            letters[0].value_preview.as_slice(),
            letters[0].origin_offset
        ),
        (&b"never"[..], 3)
    );
    assert_eq!(letters[0].reason, "never");
    consumer.close().unwrap();
}

#[test]
fn a_pending_retry_survives_a_broker_restart() {
    let mut bus = Bus::start(vec![group("restart", &[1500], 5)]);
    let producer = Producer::new(&bus.client).unwrap();
    bus.send(&producer, Message::new(TOPIC, "survivor"));
    let consumer = Consumer::subscribe_with(
        &bus.client,
        ConsumerOptions::new(TOPIC, "restart", ConsumeMode::Clustering),
    )
    .unwrap();
    let first = testkit::wait_for("the first delivery", WAIT, || {
        consumer.recv(Duration::from_millis(100)).ok().flatten()
    });
    let nacked = consumer.nack(&first, "later").unwrap();
    assert_eq!((nacked.attempt, nacked.dead_lettered), (1, false));
    consumer.close().unwrap();
    drop(producer);
    bus.broker.take().unwrap().shutdown().unwrap();
    bus.start_broker();
    let ports = bus.broker.as_ref().unwrap().shard_ports().to_vec();
    wait_until("the route to name the restarted broker", WAIT, || {
        bus.admin()
            .topic_route(TOPIC)
            .is_ok_and(|r| r.queues.iter().all(|q| ports.contains(&q.shard_port)))
    });
    let fresh = client(&bus.nameserver);
    let consumer = Consumer::subscribe_with(
        &fresh,
        ConsumerOptions::new(TOPIC, "restart", ConsumeMode::Clustering),
    )
    .unwrap();
    let again = testkit::wait_for("the retry after the restart", WAIT, || {
        consumer.recv(Duration::from_millis(100)).ok().flatten()
    });
    assert_eq!(again.value, b"survivor");
    assert_eq!(again.redelivery_count(), 1);
    assert_eq!(again.origin_topic(), TOPIC);
    let redelivery = again.redelivery.clone().unwrap();
    assert_eq!(
        (redelivery.origin_queue_id, redelivery.origin_offset),
        (0, 0)
    );
    assert_eq!(redelivery.reason, "later");
    consumer.commit().unwrap();
    consumer.close().unwrap();
}

#[test]
fn events_past_their_time_to_live_are_not_delivered_and_are_counted() {
    let bus = Bus::start(Vec::new());
    let producer = Producer::new(&bus.client).unwrap();
    let sent = Instant::now();
    for i in 0..3 {
        bus.send(
            &producer,
            Message::new(TOPIC, format!("stale-{i}")).with_ttl(Duration::from_millis(100)),
        );
    }
    // Time-to-live is wall-clock time: let it pass before anyone consumes.
    wait_until("the time-to-live to pass", WAIT, || {
        sent.elapsed() > Duration::from_millis(300)
    });
    bus.send(&producer, Message::new(TOPIC, "live"));
    bus.send(
        &producer,
        Message::new(TOPIC, "live-ttl").with_ttl(Duration::from_secs(600)),
    );
    let consumer = Consumer::subscribe_with(
        &bus.client,
        ConsumerOptions::new(TOPIC, "ttl", ConsumeMode::Clustering).without_retries(),
    )
    .unwrap();
    let mut got = BTreeMap::new();
    wait_until("the live messages", WAIT, || {
        if let Ok(Some(m)) = consumer.recv(Duration::from_millis(100)) {
            *got.entry(String::from_utf8(m.value).unwrap()).or_insert(0) += 1;
        }
        got.len() >= 2
    });
    assert_eq!(
        got,
        BTreeMap::from([("live".to_owned(), 1), ("live-ttl".to_owned(), 1)])
    );
    wait_until("three expired events counted", WAIT, || {
        let stats = bus.admin().stats(&bus.endpoint()).unwrap();
        let counted: u64 = stats.queues.iter().map(|q| q.expired_events).sum();
        counted + consumer.expired_on_arrival() == 3
    });
    consumer.close().unwrap();
}

#[test]
fn a_consumer_whose_nacks_are_refused_retries_in_place_instead() {
    // Broadcast members have no retry topic: the broker refuses their nacks for good.
    let bus = Bus::start(Vec::new());
    let calls: Calls = Arc::default();
    let sink = calls.clone();
    let policy = RetryPolicy {
        schedule: vec![Duration::from_millis(100)],
        max_redeliveries: 3,
    };
    let consumer = Consumer::start_with_result(
        &bus.client,
        ConsumerOptions::new(TOPIC, "everyone", ConsumeMode::Broadcast).retry_policy(policy),
        move |m: &ReceivedMessage| {
            let seen = record(&sink, m);
            if m.value == b"once" && seen == 1 {
                Err("first time")
            } else {
                Ok(())
            }
        },
    )
    .unwrap();
    let producer = Producer::new(&bus.client).unwrap();
    bus.send(&producer, Message::new(TOPIC, "once"));
    bus.send(&producer, Message::new(TOPIC, "next"));
    wait_until("next handled", WAIT, || {
        !calls_of(&calls, "next").is_empty()
    });
    let order: Vec<String> = calls
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.value.clone())
        .collect();
    assert_eq!(
        order,
        ["once", "once", "next"],
        "retried in place after the refusal"
    );
    assert!(consumer.take_error().is_none());
    consumer.close().unwrap();
}
