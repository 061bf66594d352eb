//! Publish → consume latency at a fixed offered rate, open loop: the measurement behind
//! `e2e` and `fanout`.
//!
//! Producers pace their sends with [`measure::open_loop`]; each message carries its intended
//! send time (nanoseconds since a shared epoch) and whether it was sent inside the window.
//! Consumers time every message against its intended send time, so a stalled producer or a
//! backed-up broker shows in the latency of every message it delayed. After the window the
//! producers stop and the consumers drain, for at most the plan's drain time, until every
//! message sent inside the window has arrived (at each subscriber that should get it); the
//! ones still missing count as undelivered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use client::{ConsumeMode, Consumer, ConsumerOptions, Message, Producer, StartFrom};
use hdrhistogram::Histogram;

use crate::cli::{GlobalArgs, Window};
use crate::latency::{Latency, new_histogram, record_ns};
use crate::measure::{self, Throughput};
use crate::target::Target;

/// Bytes of a payload that carry its timing: the intended send time, then the window flag.
pub const TIMING_BYTES: usize = 9;
/// How long a consumer waits for one message before it checks whether the drain is over.
const RECV_SLICE: Duration = Duration::from_millis(20);
/// Longest wait for a producer's last acknowledgements.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// A rate is kept up with while at least this share of the offered deliveries arrived in
/// the window (and nothing sent in it was missing after the drain).
const KEPT_UP_SHARE: f64 = 0.95;

/// One consumer: its group, and how the group shares the topic.
#[derive(Clone, Debug)]
pub struct Subscriber {
    pub group: String,
    pub mode: ConsumeMode,
}

/// What to run.
pub struct Plan<'a> {
    /// The progress line's label.
    pub label: String,
    pub topic: &'a str,
    pub producers: usize,
    /// Messages per second published in total.
    pub rate_per_s: f64,
    pub message_bytes: usize,
    pub linger: Duration,
    pub batch_bytes: usize,
    pub in_flight: usize,
    pub subscribers: Vec<Subscriber>,
    pub window: Window,
    pub drain: Duration,
}

impl Plan<'_> {
    /// How many deliveries one published message makes: one per clustering group, one per
    /// broadcast member.
    fn copies(&self) -> u64 {
        let mut groups: Vec<&str> = self
            .subscribers
            .iter()
            .filter(|s| s.mode == ConsumeMode::Clustering)
            .map(|s| s.group.as_str())
            .collect();
        groups.sort_unstable();
        groups.dedup();
        let broadcast = self
            .subscribers
            .iter()
            .filter(|s| s.mode == ConsumeMode::Broadcast)
            .count();
        (groups.len() + broadcast) as u64
    }
}

/// What a plan measured.
#[derive(Debug)]
pub struct Delivered {
    /// Every subscriber's latencies; the rate is deliveries per second in the window.
    pub total: Latency,
    pub per_subscriber: Vec<Latency>,
    /// Deliveries the messages acknowledged inside the window should have made that were
    /// missing when the drain ended.
    pub undelivered: u64,
    /// Fewer deliveries in the window than [`KEPT_UP_SHARE`] of the offered ones, or some
    /// still missing after the drain.
    pub saturated: bool,
}

/// Counts shared by the producers and consumers of one run.
#[derive(Default)]
struct Progress {
    /// Messages sent inside the window and acknowledged.
    sent_in_window: AtomicU64,
    /// Deliveries of such messages.
    received_in_window: AtomicU64,
    producers_done: AtomicUsize,
}

/// What one worker returns: a consumer's histogram and deliveries, or nothing (a producer).
enum Worker {
    Producer,
    Consumer {
        histogram: Histogram<u64>,
        delivered_in_window: u64,
    },
}

/// Runs `plan`: subscribes, publishes at the rate through the window, drains.
pub fn run(target: &Target, global: &GlobalArgs, plan: &Plan<'_>) -> anyhow::Result<Delivered> {
    anyhow::ensure!(
        plan.message_bytes >= TIMING_BYTES,
        "messages must hold at least {TIMING_BYTES} bytes to carry their send time"
    );
    anyhow::ensure!(
        plan.producers > 0 && !plan.subscribers.is_empty(),
        "at least one producer and one consumer are needed"
    );
    let consumers = plan
        .subscribers
        .iter()
        .map(|subscriber| {
            let client = target.client(global, |c| c)?;
            let options = ConsumerOptions::new(plan.topic, &subscriber.group, subscriber.mode)
                .start_from(StartFrom::Latest);
            let consumer = Consumer::subscribe_with(&client, options)
                .with_context(|| format!("subscribing {} to {}", subscriber.group, plan.topic))?;
            Ok((client, consumer))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let epoch = Instant::now();
    let progress = Arc::new(Progress::default());
    let copies = plan.copies();
    let measured = measure::run_window(
        &plan.label,
        plan.window,
        plan.producers + consumers.len(),
        |index, shared| {
            if index < plan.producers {
                produce(target, global, plan, shared, epoch, &progress).map(|()| Worker::Producer)
            } else {
                let (_, consumer) = &consumers[index - plan.producers];
                consume(plan, shared, consumer, epoch, &progress, copies)
            }
        },
    );
    for (client, consumer) in consumers {
        consumer.close().context("closing a consumer")?;
        client.close();
    }
    let (throughput, workers) = measured?;
    let mut total = new_histogram();
    let mut per_subscriber = Vec::new();
    for worker in workers {
        match worker {
            Worker::Producer => {}
            Worker::Consumer {
                histogram,
                delivered_in_window,
            } => {
                total.add(&histogram)?;
                let rate = Throughput::new(
                    delivered_in_window,
                    delivered_in_window * plan.message_bytes as u64,
                    0,
                    throughput.seconds,
                );
                per_subscriber.push(Latency::new(&histogram, rate));
            }
        }
    }
    let expected = progress.sent_in_window.load(Ordering::Acquire) * copies;
    let undelivered = expected.saturating_sub(progress.received_in_window.load(Ordering::Acquire));
    // A message still missing waited at least the drain: counted there, a lower bound, so
    // the tail is not flattered by the messages that never came.
    if undelivered > 0 {
        total.saturating_record_n(plan.drain.as_nanos() as u64, undelivered);
    }
    let offered_deliveries = plan.rate_per_s * copies as f64;
    let saturated = undelivered > 0 || throughput.ops_per_s < KEPT_UP_SHARE * offered_deliveries;
    Ok(Delivered {
        total: Latency::new(&total, throughput),
        per_subscriber,
        undelivered,
        saturated,
    })
}

/// One producer: sends its share of the rate, then waits for its acknowledgements.
fn produce(
    target: &Target,
    global: &GlobalArgs,
    plan: &Plan<'_>,
    shared: &measure::Shared,
    epoch: Instant,
    progress: &Arc<Progress>,
) -> anyhow::Result<()> {
    let client = target.client(global, |mut config| {
        config.batch_bytes_max = plan.batch_bytes;
        config.in_flight_sends_max = plan.in_flight;
        config.with_batch_linger(plan.linger)
    })?;
    let producer = Producer::new(&client).context("starting a producer")?;
    let rate = plan.rate_per_s / plan.producers as f64;
    let paced = measure::open_loop(shared, rate, |intended, in_window| {
        let mut value = vec![0xA5u8; plan.message_bytes];
        encode_timing(&mut value, intended - epoch, in_window);
        let (meter, progress) = (shared.meter.clone(), progress.clone());
        producer.send_with_callback(
            Message::new(plan.topic, value),
            move |result| match result {
                Ok(_) if in_window => {
                    progress.sent_in_window.fetch_add(1, Ordering::AcqRel);
                }
                Ok(_) => {}
                Err(e) => {
                    log::debug!("send failed: {e}");
                    meter.error();
                }
            },
        );
        Ok(())
    });
    let flushed = producer.flush(FLUSH_TIMEOUT);
    progress.producers_done.fetch_add(1, Ordering::AcqRel);
    client.close();
    flushed.context("waiting for the last sends")?;
    paced.map(drop)
}

/// One consumer: times every message against its intended send time until the drain ends.
fn consume(
    plan: &Plan<'_>,
    shared: &measure::Shared,
    consumer: &Consumer,
    epoch: Instant,
    progress: &Progress,
    copies: u64,
) -> anyhow::Result<Worker> {
    let mut histogram = new_histogram();
    let mut delivered_in_window = 0u64;
    let mut drain_until = None;
    loop {
        if shared.stopped() {
            let until = *drain_until.get_or_insert_with(|| Instant::now() + plan.drain);
            let all_sent = progress.producers_done.load(Ordering::Acquire) == plan.producers;
            let expected = progress.sent_in_window.load(Ordering::Acquire) * copies;
            let arrived = progress.received_in_window.load(Ordering::Acquire) >= expected;
            if (all_sent && arrived) || Instant::now() >= until {
                break;
            }
        }
        let Some(message) = consumer.recv(RECV_SLICE)? else {
            continue;
        };
        let arrived = epoch.elapsed();
        let (intended, in_window) = decode_timing(&message.value)
            .with_context(|| format!("a message of {} B without timing", message.value.len()))?;
        if shared.recording() {
            shared.meter.record(1, message.value.len() as u64);
            delivered_in_window += 1;
        }
        if in_window {
            record_ns(
                &mut histogram,
                arrived.saturating_sub(intended).as_nanos() as u64,
            );
            progress.received_in_window.fetch_add(1, Ordering::AcqRel);
        }
    }
    Ok(Worker::Consumer {
        histogram,
        delivered_in_window,
    })
}

/// Writes the intended send time (since the run's epoch) and the window flag into the first
/// [`TIMING_BYTES`] of `value`.
fn encode_timing(value: &mut [u8], intended: Duration, in_window: bool) {
    value[..8].copy_from_slice(&(intended.as_nanos() as u64).to_le_bytes());
    value[8] = u8::from(in_window);
}

/// The timing [`encode_timing`] wrote.
fn decode_timing(value: &[u8]) -> Option<(Duration, bool)> {
    let nanos = u64::from_le_bytes(value.get(..8)?.try_into().ok()?);
    Some((Duration::from_nanos(nanos), *value.get(8)? == 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_round_trips() {
        let mut value = vec![0u8; 16];
        encode_timing(&mut value, Duration::from_nanos(123_456_789), true);
        assert_eq!(
            decode_timing(&value),
            Some((Duration::from_nanos(123_456_789), true))
        );
        encode_timing(&mut value, Duration::from_secs(7), false);
        assert_eq!(decode_timing(&value), Some((Duration::from_secs(7), false)));
        assert_eq!(decode_timing(&value[..8]), None);
    }

    #[test]
    fn copies_count_groups_and_broadcast_members() {
        let subscriber = |group: &str, mode| Subscriber {
            group: group.into(),
            mode,
        };
        let mut plan = Plan {
            label: "test".into(),
            topic: "A10-1",
            producers: 1,
            rate_per_s: 1.0,
            message_bytes: 16,
            linger: Duration::ZERO,
            batch_bytes: 1024,
            in_flight: 1,
            subscribers: vec![
                subscriber("a", ConsumeMode::Clustering),
                subscriber("a", ConsumeMode::Clustering),
                subscriber("b", ConsumeMode::Clustering),
            ],
            window: crate::cli::SMOKE_WINDOW,
            drain: Duration::ZERO,
        };
        assert_eq!(plan.copies(), 2);
        plan.subscribers = vec![
            subscriber("g", ConsumeMode::Broadcast),
            subscriber("g", ConsumeMode::Broadcast),
            subscriber("g", ConsumeMode::Broadcast),
        ];
        assert_eq!(plan.copies(), 3);
    }
}
