//! Delayed messages (ARCHITECTURE §13.3), two figures:
//!
//! - *lateness* on an otherwise idle broker: one consumer subscribes, then `--messages`
//!   records are produced with `deliver_at` spread evenly over `--spread` starting `--lead`
//!   from now, and each is timed on arrival against its `deliver_at` (consumer receive time,
//!   Unix µs, minus `deliver_at`): the whole path of timer, release, copy fdatasync (sync
//!   topic) and push. A record arriving early (which would be a bug) counts as 1 ns and is
//!   reported in the setup text;
//! - *produce cost*: delayed produce throughput (due an hour ahead, so nothing fires inside
//!   the window) beside plain produce to another topic, same producer settings, in the same
//!   run (ratio = delayed / plain).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use client::{ConsumeMode, Consumer, ConsumerOptions, Message, Producer, StartFrom};

use crate::cli::{DelayedArgs, GlobalArgs};
use crate::latency::{Latency, new_histogram, record_ns};
use crate::measure::{self, Throughput, thousands};
use crate::report::{Baseline, Comparison, Measured};
use crate::target::Target;
use crate::workloads::produce::DRAIN_TIMEOUT;

pub const NAME: &str = "delayed";
/// Records of a `--smoke` lateness run, and its lead and spread.
const SMOKE_MESSAGES: u64 = 1_000;
const SMOKE_LEAD: Duration = Duration::from_millis(500);
const SMOKE_SPREAD: Duration = Duration::from_millis(500);
/// How far ahead the produce-cost run's records are due: past the window, so the timer
/// only indexes them.
const FAR_DELAY: Duration = Duration::from_secs(3600);
/// How long after the last record was due the consumer waits for stragglers.
const ARRIVAL_GRACE: Duration = Duration::from_secs(10);
/// Timeout of one produce request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

pub fn run(
    target: &Target,
    global: &GlobalArgs,
    args: &DelayedArgs,
) -> anyhow::Result<Vec<Comparison>> {
    let lateness = lateness(target, global, args)?;
    let plain_topic = target.create_topic(global, "delayed-plain", args.queues, args.flush)?;
    let plain = produce(target, global, args, "plain produce", &plain_topic, None)?;
    drop(plain_topic);
    let delayed_topic = target.create_topic(global, NAME, args.queues, args.flush)?;
    let delayed = produce(
        target,
        global,
        args,
        "delayed produce",
        &delayed_topic,
        Some(FAR_DELAY),
    )?;
    let producer_setup = format!(
        "1 producer, {} B records, client batching (linger {:?}), {} queue(s), {} flush",
        args.message_bytes,
        args.linger,
        args.queues,
        args.flush.name()
    );
    Ok(vec![
        lateness,
        Comparison {
            workload: format!("{NAME}-produce"),
            setup: format!("{producer_setup}; every record due in 1 h (held, indexed, not fired)"),
            message_bytes: args.message_bytes,
            concurrency: 1,
            ours: Measured::Throughput(delayed),
            baseline: Some(Baseline {
                name: "plain produce".into(),
                setup: producer_setup,
                measured: Measured::Throughput(plain),
            }),
        },
    ])
}

/// The lateness run: see the module docs.
fn lateness(
    target: &Target,
    global: &GlobalArgs,
    args: &DelayedArgs,
) -> anyhow::Result<Comparison> {
    let (messages, lead, spread) = if global.smoke {
        (args.messages.min(SMOKE_MESSAGES), SMOKE_LEAD, SMOKE_SPREAD)
    } else {
        (args.messages, args.lead, args.spread)
    };
    anyhow::ensure!(messages > 0, "--messages must be at least 1");
    let topic =
        target.create_topic(global, &format!("{NAME}-lateness"), args.queues, args.flush)?;
    let consumer_client = target.client(global, |c| c)?;
    let options = ConsumerOptions::new(topic.as_str(), "bench_delayed", ConsumeMode::Clustering)
        .start_from(StartFrom::Earliest)
        .without_retries();
    let consumer = Consumer::subscribe_with(&consumer_client, options).context("subscribing")?;

    let producer_client = target.client(global, |config| {
        config
            .with_batch_linger(args.linger)
            .with_request_timeout(REQUEST_TIMEOUT)
    })?;
    let producer = Producer::new(&producer_client).context("starting a producer")?;
    let value = vec![0xA5u8; args.message_bytes];
    let first_due = SystemTime::now() + lead;
    let step = spread.as_secs_f64() / messages as f64;
    let failed = Arc::new(AtomicU64::new(0));
    let produced_at = Instant::now();
    for i in 0..messages {
        let at = first_due + Duration::from_secs_f64(step * i as f64);
        let failed = failed.clone();
        producer.send_with_callback(
            Message::new(topic.as_str(), value.as_slice()).deliver_at(at),
            move |result| {
                if let Err(e) = result {
                    log::warn!("a delayed send failed: {e}");
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            },
        );
    }
    producer
        .flush(DRAIN_TIMEOUT)
        .context("waiting for the delayed sends")?;
    let failed = failed.load(Ordering::Relaxed);
    anyhow::ensure!(failed == 0, "{failed} of {messages} delayed sends failed");
    let produced_in = produced_at.elapsed();
    producer_client.close();
    // Records due before the producer finished may be late because of it: say so.
    let produce_overran = produced_in.saturating_sub(lead);

    let mut histogram = new_histogram();
    let (mut received, mut early, mut bytes) = (0u64, 0u64, 0u64);
    let deadline = Instant::now() + lead + spread + ARRIVAL_GRACE;
    let mut first_arrival = None;
    while received < messages {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let Some(message) = consumer.recv(left.min(Duration::from_secs(1)))? else {
            continue;
        };
        let now_us = unix_us();
        first_arrival.get_or_insert_with(Instant::now);
        let due_us = message
            .deliver_at_ms
            .context("a released copy without its deliver_at")?
            * 1000;
        if now_us < due_us {
            early += 1;
        }
        record_ns(&mut histogram, now_us.saturating_sub(due_us) * 1000);
        received += 1;
        bytes += message.value.len() as u64;
    }
    let seconds = first_arrival.map_or(0.0, |t| t.elapsed().as_secs_f64());
    consumer.close().context("closing the consumer")?;
    consumer_client.close();
    anyhow::ensure!(
        received == messages,
        "only {received} of {messages} delayed records arrived within {:?} of the last one's time",
        ARRIVAL_GRACE
    );
    Ok(Comparison {
        workload: format!("{NAME}-lateness"),
        setup: format!(
            "{} × {} B delayed records over {} queue(s), {} flush, due evenly over {:?} from \
             {:?} after the run began (produced in {:.0} ms{}), one consumer; latency = \
             arrival at the consumer − deliver_at{}",
            thousands(messages as f64),
            args.message_bytes,
            args.queues,
            args.flush.name(),
            spread,
            lead,
            produced_in.as_secs_f64() * 1e3,
            if produce_overran.is_zero() {
                String::new()
            } else {
                format!(
                    ", {:.0} ms past the first's time",
                    produce_overran.as_secs_f64() * 1e3
                )
            },
            if early == 0 {
                String::new()
            } else {
                format!("; {early} arrived EARLY")
            },
        ),
        message_bytes: args.message_bytes,
        concurrency: 1,
        ours: Measured::Latency(Latency::new(
            &histogram,
            Throughput::new(received, bytes, 0, seconds.max(1e-9)),
        )),
        baseline: None,
    })
}

/// Produce throughput on `topic`, each record delayed by `delay` when given.
fn produce(
    target: &Target,
    global: &GlobalArgs,
    args: &DelayedArgs,
    label: &str,
    topic: &str,
    delay: Option<Duration>,
) -> anyhow::Result<Throughput> {
    let (throughput, _) =
        measure::run_window(label, global.window(args.duration), 1, |_, shared| {
            let client = target.client(global, |config| {
                config
                    .with_batch_linger(args.linger)
                    .with_request_timeout(REQUEST_TIMEOUT)
            })?;
            let producer = Producer::new(&client).context("starting a producer")?;
            let meter = shared.meter.child();
            let value = vec![0xA5u8; args.message_bytes];
            while !shared.stopped() {
                let mut message = Message::new(topic, value.as_slice());
                if let Some(delay) = delay {
                    message = message.with_delay(delay);
                }
                producer.send_with_callback(message, meter.on_send(value.len() as u64));
            }
            producer
                .flush(DRAIN_TIMEOUT)
                .context("waiting for the last sends")?;
            client.close();
            Ok(())
        })?;
    Ok(throughput)
}
