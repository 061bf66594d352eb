//! Delayed and transactional (half) messages through a real broker (ARCHITECTURE §13.3-§13.4):
//! held in the queue's held log, released at their time or on commit, never twice, also
//! across `kill -9`.

mod broker_common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use broker_common::*;
use protocol::codes::{Command, Status};
use protocol::control::{
    self, CheckRegistration, EndTransaction, FlushMode, HeldRef, HeldStats, HeldStatsRequest,
    ProduceAck, SubscriptionMode, TransactionCheck,
};
use protocol::frame::FrameBytes;
use protocol::record::{BATCH_LEN_MAX, BatchBuilder, BatchView, MessageType, Property, Record};

const TOPIC: &str = "A10-7001";

fn held_ref(offset: u64) -> HeldRef {
    HeldRef {
        topic: TOPIC.into(),
        queue_id: 0,
        offset,
    }
}

/// Produces one record per `(value, properties)` in one batch.
fn produce_held(client: &mut Client, records: &[(&[u8], &[Property<'_>])]) -> FrameBytes {
    let mut builder = BatchBuilder::new(BATCH_LEN_MAX);
    for (value, properties) in records {
        builder
            .push(&Record {
                timestamp_ms: now_ms() as i64,
                message_type: MessageType::Event,
                key: b"",
                properties,
                value,
            })
            .unwrap();
    }
    client.produce_batch(Command::Produce, TOPIC, 0, &builder.finish().unwrap())
}

fn ack_of(frame: &FrameBytes) -> ProduceAck {
    assert_eq!(frame.header.status, 0, "{:?}", error_of(frame));
    control::decode(&frame.body).unwrap()
}

fn held_stats(client: &mut Client) -> HeldStats {
    let request = HeldStatsRequest {
        topic: TOPIC.into(),
        queue_id: 0,
    };
    let body = client.call_ok(Command::HeldStats, &[], &control::encode(&request).unwrap());
    control::decode(&body).unwrap()
}

fn cancel(client: &mut Client, offset: u64) -> Result<(), (Status, String)> {
    let frame = client.call(
        Command::CancelHeld,
        &[],
        &control::encode(&held_ref(offset)).unwrap(),
    );
    match frame.header.status {
        0 => Ok(()),
        _ => Err(error_of(&frame).unwrap()),
    }
}

fn end(client: &mut Client, offset: u64, commit: bool) -> Result<(), (Status, String)> {
    let body = control::encode(&EndTransaction {
        id: held_ref(offset),
        commit,
    })
    .unwrap();
    let frame = client.call(Command::EndTransaction, &[], &body);
    match frame.header.status {
        0 => Ok(()),
        _ => Err(error_of(&frame).unwrap()),
    }
}

/// Every record of the queue, from its start: (offset, value, append time, deliver_at).
fn read_queue(client: &mut Client, group: &str, want: usize) -> Vec<(u64, Vec<u8>, i64, u64)> {
    let sub = client.subscribe_from(TOPIC, group, want as u32);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = client
            .next_push(left)
            .unwrap_or_else(|| panic!("only {} of {want} records arrived", got.len()));
        assert_eq!(frame.header.command, Command::Push.code());
        let view = BatchView::parse(&frame.body, BATCH_LEN_MAX).unwrap();
        let appended = view.header().append_time_ms;
        for r in view.records() {
            got.push((
                r.offset(),
                r.value().to_vec(),
                appended,
                r.deliver_at_ms().unwrap_or(0),
            ));
        }
    }
    let _ = sub;
    got
}

trait SubscribeFrom {
    fn subscribe_from(&mut self, topic: &str, group: &str, credit: u32) -> u64;
}

impl SubscribeFrom for Client {
    fn subscribe_from(&mut self, topic: &str, group: &str, credit: u32) -> u64 {
        self.subscribe(topic, group, SubscriptionMode::Clustering, credit)
            .subscription_id
    }
}

#[test]
fn delayed_messages_arrive_at_their_time_not_before_and_plain_ones_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), 1);
    let mut client = Client::connect(broker.shard_ports()[0], "p1");
    client.create_topic(&topic_config(TOPIC, 1, FlushMode::Sync));
    let t0 = now_ms();
    let dues = [t0 + 900, t0 + 300, t0 + 600];
    let records: Vec<(&[u8], Vec<Property<'_>>)> = vec![
        (b"late", vec![Property::DeliverAtMs(dues[0])]),
        (b"early", vec![Property::DeliverAtMs(dues[1])]),
        (b"middle", vec![Property::DeliverAtMs(dues[2])]),
    ];
    let records: Vec<(&[u8], &[Property<'_>])> =
        records.iter().map(|(v, p)| (*v, p.as_slice())).collect();
    let ack = ack_of(&produce_held(&mut client, &records));
    assert_eq!(ack.next_offset - ack.base_offset, 3, "held-log offsets");
    assert_eq!(held_stats(&mut client).pending_delayed, 3);
    client.produce(TOPIC, 0, &[b"plain"]);

    let mut consumer = Client::connect(broker.shard_ports()[0], "c1");
    consumer.subscribe(TOPIC, "g", SubscriptionMode::Clustering, 100);
    let got = consumer.collect(4);
    let values: Vec<&[u8]> = got.iter().map(|(_, _, v)| v.as_slice()).collect();
    assert_eq!(values, [&b"plain"[..], b"early", b"middle", b"late"]);
    // Each copy was appended at or after its time (the broker's clock), and soon after.
    let all = read_queue(&mut consumer, "audit", 4);
    for (_, value, appended_ms, due) in &all[1..] {
        let late = *appended_ms - *due as i64;
        assert!(late >= 0, "{value:?} released {late} ms early");
        assert!(late < 1_000, "{value:?} released {late} ms late");
    }
    // Each outcome is recorded once its copy is durable, just after the copy is pushable.
    wait_until(|| held_stats(&mut client).pending_delayed == 0);
    drop(broker);
}

/// Waits (polling) until `done`, failing the test after [`WAIT`].
fn wait_until(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "condition not met in {WAIT:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_cancelled_message_never_arrives_and_a_fired_one_cannot_be_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), 2);
    // Talk to the shard that does not own the queue: cancels are forwarded.
    let owner = engine::topic::owner_shard(TOPIC, 0, 2);
    let mut client = Client::connect(broker.shard_ports()[1 - owner], "p1");
    client.create_topic(&topic_config(TOPIC, 1, FlushMode::Async));
    let t0 = now_ms();
    let soon = [Property::DeliverAtMs(t0 + 200)];
    let later = [Property::DeliverAtMs(t0 + 60_000)];
    let ack = ack_of(&produce_held(
        &mut client,
        &[(b"fires", &soon), (b"cancelled", &later)],
    ));
    let (fires, cancelled) = (ack.base_offset, ack.base_offset + 1);
    cancel(&mut client, cancelled).unwrap();
    let again = cancel(&mut client, cancelled).unwrap_err();
    assert_eq!(again.0, Status::HeldSettled);
    assert!(again.1.contains("cancelled"), "{}", again.1);
    assert_eq!(cancel(&mut client, 99).unwrap_err().0, Status::NotHeld);
    // Offset 0 is the held log's base marker, not a message.
    assert_eq!(cancel(&mut client, 0).unwrap_err().0, Status::NotHeld);
    // A record must not ride along with held ones, nor claim to be released.
    let mixed = produce_held(&mut client, &[(b"a", &soon), (b"b", &[])]);
    assert_eq!(error_of(&mixed).unwrap().0, Status::InvalidArgument);
    let forged = produce_held(&mut client, &[(b"a", &[Property::HeldOrigin(0)])]);
    assert_eq!(error_of(&forged).unwrap().0, Status::InvalidArgument);
    let too_far = [Property::DeliverAtMs(t0 + 100 * 24 * 3600 * 1000)];
    let refused = produce_held(&mut client, &[(b"a", &too_far)]);
    assert_eq!(error_of(&refused).unwrap().0, Status::InvalidArgument);

    let mut consumer = Client::connect(broker.shard_ports()[owner], "c1");
    consumer.subscribe(TOPIC, "g", SubscriptionMode::Clustering, 100);
    let got = consumer.collect(1);
    assert_eq!(got[0].2, b"fires");
    let fired = cancel(&mut client, fires).unwrap_err();
    assert_eq!(fired.0, Status::HeldSettled);
    assert!(fired.1.contains("fired"), "{}", fired.1);
    wait_until(|| held_stats(&mut client).pending_delayed == 0);
    // Nothing else is in the queue: the cancelled one never reached it.
    client.produce(TOPIC, 0, &[b"sentinel"]);
    let next = consumer.collect(1);
    assert_eq!(next[0].2, b"sentinel");
    drop(broker);
}

#[test]
fn halves_are_invisible_until_committed_and_a_rolled_back_one_never_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), 1);
    let mut client = Client::connect(broker.shard_ports()[0], "p1");
    client.create_topic(&topic_config(TOPIC, 1, FlushMode::Sync));
    let half = [Property::TxnGroup("orders-tx")];
    let ack = ack_of(&produce_held(
        &mut client,
        &[(b"commit-me", &half), (b"roll-me-back", &half)],
    ));
    assert_eq!(held_stats(&mut client).pending_half, 2);
    // Deciding a delayed message as a transaction, or cancelling a half, is refused.
    let refused = cancel(&mut client, ack.base_offset).unwrap_err();
    assert_eq!(refused.0, Status::InvalidArgument);
    end(&mut client, ack.base_offset + 1, false).unwrap();
    client.produce(TOPIC, 0, &[b"plain"]);
    let mut consumer = Client::connect(broker.shard_ports()[0], "c1");
    consumer.subscribe(TOPIC, "g", SubscriptionMode::Clustering, 100);
    assert_eq!(consumer.collect(1)[0].2, b"plain", "halves are invisible");
    end(&mut client, ack.base_offset, true).unwrap();
    // The same outcome twice is done; the other one is refused.
    end(&mut client, ack.base_offset, true).unwrap();
    let flip = end(&mut client, ack.base_offset, false).unwrap_err();
    assert_eq!(flip.0, Status::HeldSettled);
    assert!(flip.1.contains("committed"), "{}", flip.1);
    let flip = end(&mut client, ack.base_offset + 1, true).unwrap_err();
    assert!(flip.1.contains("rolled back"), "{}", flip.1);
    assert_eq!(consumer.collect(1)[0].2, b"commit-me");
    client.produce(TOPIC, 0, &[b"sentinel"]);
    assert_eq!(
        consumer.collect(1)[0].2,
        b"sentinel",
        "the rolled back never arrives"
    );
    drop(broker);
}

#[test]
fn a_crashed_producers_half_is_decided_by_a_check_back_to_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), 2);
    config.held.check_interval_ms = 200;
    config.held.checks_max = 50;
    init_logs();
    let broker = engine::Broker::start(config).unwrap();
    let owner = engine::topic::owner_shard(TOPIC, 0, 2);
    let ports = broker.shard_ports();
    let mut crashing = Client::connect(ports[owner], "p1");
    crashing.create_topic(&topic_config(TOPIC, 1, FlushMode::Sync));
    let half = [Property::TxnGroup("orders-tx")];
    let ack = ack_of(&produce_held(
        &mut crashing,
        &[(b"decided-by-check", &half)],
    ));
    drop(crashing); // The producer dies before its outcome.

    // Another member of the group, on the other shard, answers the check.
    let mut survivor = Client::connect(ports[1 - owner], "p2");
    let registration = CheckRegistration {
        producer_group: "orders-tx".into(),
    };
    survivor.call_ok(
        Command::TransactionCheck,
        &[],
        &control::encode(&registration).unwrap(),
    );
    let check = survivor.next_push(WAIT).expect("a check-back");
    assert_eq!(check.header.command, Command::TransactionCheck.code());
    let check: TransactionCheck = control::decode(&check.body).unwrap();
    assert_eq!(check.id, held_ref(ack.base_offset));
    assert_eq!(check.producer_group, "orders-tx");
    let view = BatchView::parse(&check.batch, BATCH_LEN_MAX).unwrap();
    assert_eq!(view.records().next().unwrap().value(), b"decided-by-check");
    end(&mut survivor, check.id.offset, true).unwrap();

    let mut consumer = Client::connect(ports[owner], "c1");
    consumer.subscribe(TOPIC, "g", SubscriptionMode::Clustering, 100);
    assert_eq!(consumer.collect(1)[0].2, b"decided-by-check");
    drop(broker);
}

#[test]
fn an_unanswered_half_takes_the_default_outcome_after_its_checks() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), 1);
    config.held.check_interval_ms = 50;
    config.held.checks_max = 2;
    init_logs();
    let broker = engine::Broker::start(config).unwrap();
    let mut client = Client::connect(broker.shard_ports()[0], "p1");
    client.create_topic(&topic_config(TOPIC, 1, FlushMode::Sync));
    let half = [Property::TxnGroup("nobody-answers")];
    let ack = ack_of(&produce_held(&mut client, &[(b"x", &half)]));
    wait_until(|| held_stats(&mut client).pending_half == 0);
    let refused = end(&mut client, ack.base_offset, true).unwrap_err();
    assert!(refused.1.contains("rolled back"), "{}", refused.1);
    client.produce(TOPIC, 0, &[b"sentinel"]);
    let mut consumer = Client::connect(broker.shard_ports()[0], "c1");
    consumer.subscribe(TOPIC, "g", SubscriptionMode::Clustering, 100);
    assert_eq!(consumer.collect(1)[0].2, b"sentinel");
    drop(broker);
}

/// Starts the broker binary on ephemeral ports (one shard) and reads its port.
fn spawn_broker(dir: &std::path::Path) -> (Child, u16) {
    let mut child = Process::new(env!("CARGO_BIN_EXE_defibus-broker"))
        .args(["--port-base", "0", "--shards", "1", "--listen", "127.0.0.1"])
        .args(["--held-check-interval-ms", "600000", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn defibus-broker");
    let stdout = child.stdout.take().unwrap();
    let line = BufReader::new(stdout)
        .lines()
        .next()
        .expect("a port line")
        .unwrap();
    let port = line
        .strip_prefix("shard 0 port ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));
    (child, port)
}

/// The proof: 100,000 delayed messages, `kill -9` while they fire, a restart: each
/// reaches the queue exactly once, and those not held up by the crash on time.
#[test]
fn a_hundred_thousand_delayed_messages_survive_kill_9_each_delivered_once() {
    const COUNT: usize = 100_000;
    const PER_BATCH: usize = 500;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, port) = spawn_broker(dir.path());
    let mut client = Client::connect(port, "p1");
    client.create_topic(&topic_config(TOPIC, 1, FlushMode::Sync));
    // Due over three seconds, starting once all are stored (about a second at most).
    let start = now_ms() + 2_000;
    let due = |i: usize| start + (i as u64 * 3_000) / COUNT as u64;
    let mut values = Vec::with_capacity(COUNT);
    for chunk in (0..COUNT).collect::<Vec<_>>().chunks(PER_BATCH) {
        let mut builder = BatchBuilder::new(BATCH_LEN_MAX);
        for &i in chunk {
            let value = format!("m{i:06}");
            builder
                .push(&Record {
                    timestamp_ms: now_ms() as i64,
                    message_type: MessageType::Event,
                    key: b"",
                    properties: &[Property::DeliverAtMs(due(i))],
                    value: value.as_bytes(),
                })
                .unwrap();
            values.push(value);
        }
        let frame = client.produce_batch(Command::Produce, TOPIC, 0, &builder.finish().unwrap());
        ack_of(&frame);
    }
    let stored_ms = now_ms();
    assert!(
        stored_ms < start,
        "storing took too long to test firing on time"
    );
    // Kill it while about half have fired.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pending = held_stats(&mut client).pending_delayed;
        if pending < (COUNT / 2) as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nothing fired: {pending} pending"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let killed_ms = now_ms();
    child.kill().unwrap();
    child.wait().unwrap();
    drop(client);

    let (mut child, port) = spawn_broker(dir.path());
    let restarted_ms = now_ms();
    let mut consumer = Client::connect(port, "c1");
    let all = read_queue(&mut consumer, "audit", COUNT);
    let mut seen: HashMap<Vec<u8>, u32> = HashMap::new();
    for (_, value, _, _) in &all {
        *seen.entry(value.clone()).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} delivered twice, e.g. {:?}",
        twice.len(),
        twice.first()
    );
    for value in &values {
        assert!(
            seen.contains_key(value.as_bytes()),
            "{value} never delivered"
        );
    }
    assert_eq!(all.len(), COUNT);
    // Nothing more arrives: the queue holds exactly COUNT records.
    let stats = held_stats(&mut consumer);
    assert_eq!(stats.pending_delayed, 0);
    let mut checker = Client::connect(port, "p2");
    let end_ack = checker.produce(TOPIC, 0, &[b"sentinel"]);
    assert_eq!(
        end_ack.base_offset,
        all.iter().map(|r| r.0).max().unwrap() + 1
    );

    // Lateness of the releases the crash did not hold up (the broker's clock at append).
    let mut late: Vec<i64> = all
        .iter()
        .filter(|(_, _, _, due)| *due + 50 < killed_ms || *due > restarted_ms + 2_000)
        .map(|(_, _, appended, due)| *appended - *due as i64)
        .collect();
    assert!(late.iter().all(|&l| l >= 0), "a message fired early");
    late.sort_unstable();
    let p = |q: f64| late[((late.len() as f64 * q) as usize).min(late.len() - 1)];
    eprintln!(
        "lateness over {} releases: p50 {} ms, p99 {} ms, max {} ms",
        late.len(),
        p(0.5),
        p(0.99),
        late[late.len() - 1]
    );
    // A debug build on a two-core machine that runs the whole suite beside it: alone it
    // keeps p99 near 60 ms, under the suite's load near 800 ms. The bound catches a timer that
    // stops firing on time (seconds), not the 10 ms goal, which is for a release build on an
    // idle broker.
    assert!(p(0.99) <= 2_000, "p99 lateness {} ms", p(0.99));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn pending_halves_survive_kill_9_none_lost_none_visible() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, port) = spawn_broker(dir.path());
    let mut client = Client::connect(port, "p1");
    client.create_topic(&topic_config(TOPIC, 1, FlushMode::Sync));
    let half = [Property::TxnGroup("orders-tx")];
    let ack = ack_of(&produce_held(
        &mut client,
        &[(b"h0", &half), (b"h1", &half), (b"h2", &half)],
    ));
    end(&mut client, ack.base_offset, true).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();

    let (mut child, port) = spawn_broker(dir.path());
    let mut client = Client::connect(port, "p1");
    assert_eq!(held_stats(&mut client).pending_half, 2, "none lost");
    client.produce(TOPIC, 0, &[b"sentinel"]);
    let mut consumer = Client::connect(port, "c1");
    consumer.subscribe(TOPIC, "g", SubscriptionMode::Clustering, 100);
    let got = consumer.collect(2);
    let values: Vec<&[u8]> = got.iter().map(|(_, _, v)| v.as_slice()).collect();
    assert_eq!(values, [&b"h0"[..], b"sentinel"], "none visible by mistake");
    end(&mut client, ack.base_offset + 1, false).unwrap();
    end(&mut client, ack.base_offset + 2, true).unwrap();
    assert_eq!(consumer.collect(1)[0].2, b"h2");
    assert_eq!(held_stats(&mut client).pending_half, 0);
    child.kill().unwrap();
    child.wait().unwrap();
}
