//! Catch-up read: a backlog is produced first (not measured), then a consumer group reads it
//! from the earliest offset as fast as the broker pushes it. The run ends when every record
//! was read, so the figure is the backlog over the time it took.
//!
//! Completion is judged per queue: the consumers publish, per queue, one past the highest
//! offset they read. A queue handed from one member to another (the group's first
//! rebalance) restarts at the committed offset, below what was read, so what was read of a
//! queue is always a prefix, and the backlog is read once those prefixes add up to it.
//! Records read twice across such a handover are counted and printed as redeliveries.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use client::{ConsumeMode, Consumer, ConsumerOptions, Message, Producer, StartFrom};

use crate::cli::{ConsumeArgs, GlobalArgs, Window};
use crate::measure::{self, InFlight, thousands};
use crate::report::{Comparison, Measured};
use crate::target::Target;

pub const NAME: &str = "consume";
/// The backlog of a `--smoke` run.
const SMOKE_MESSAGES: u64 = 20_000;
/// The consumers' group.
const GROUP: &str = "bench-consume";
/// How long a consumer waits for one record before it looks at the progress again.
const RECV_SLICE: Duration = Duration::from_millis(100);
/// Records a consumer reads between publishing its progress.
const PROGRESS_EVERY: u64 = 1024;
/// How long the pre-fill may take.
const FILL_TIMEOUT: Duration = Duration::from_secs(300);

/// Per (broker endpoint, queue): one past the highest offset read.
#[derive(Default)]
struct Read {
    ends: Mutex<HashMap<(String, u32), u64>>,
}

impl Read {
    /// Merges a consumer's ends; returns the records read of the backlog so far.
    fn merge(&self, ends: &HashMap<(String, u32), u64>) -> u64 {
        let mut all = self.ends.lock().unwrap_or_else(PoisonError::into_inner);
        for (queue, &end) in ends {
            let known = all.entry(queue.clone()).or_default();
            *known = (*known).max(end);
        }
        all.values().sum()
    }
}

pub fn run(target: &Target, global: &GlobalArgs, args: &ConsumeArgs) -> anyhow::Result<Comparison> {
    let messages = if global.smoke {
        args.messages.min(SMOKE_MESSAGES)
    } else {
        args.messages
    };
    anyhow::ensure!(
        messages > 0 && args.consumers > 0,
        "--messages and --consumers must be at least 1"
    );
    let topic = target.create_topic(global, NAME, args.queues, args.flush)?;
    let filled_in = fill(target, global, args, &topic, messages)?;
    let read = Read::default();
    // The read is its own warm-up: subscribing and the first rebalance are part of catching
    // up, and the window closes when the backlog is read.
    let window = Window {
        warmup: Duration::ZERO,
        duration: args.duration,
    };
    let (throughput, delivered) =
        measure::run_window(NAME, window, args.consumers, |_, shared| {
            let client = target.client(global, |c| c.with_credit_window(args.credit_window))?;
            let options = ConsumerOptions::new(topic.as_str(), GROUP, ConsumeMode::Clustering)
                .start_from(StartFrom::Earliest);
            let consumer = Consumer::subscribe_with(&client, options).context("subscribing")?;
            let mut ends: HashMap<(String, u32), u64> = HashMap::new();
            let mut delivered = 0u64;
            while !shared.stopped() {
                let message = consumer.recv(RECV_SLICE)?;
                if let Some(message) = &message {
                    shared.meter.record(1, message.value.len() as u64);
                    delivered += 1;
                    let end = ends
                        .entry((message.endpoint.clone(), message.queue_id))
                        .or_default();
                    *end = (*end).max(message.offset + 1);
                }
                if (message.is_none() || delivered % PROGRESS_EVERY == 0)
                    && read.merge(&ends) >= messages
                {
                    shared.finish();
                }
            }
            consumer.close().context("closing the consumer")?;
            client.close();
            Ok(delivered)
        })?;
    let delivered: u64 = delivered.iter().sum();
    let read_all = read.merge(&HashMap::new());
    anyhow::ensure!(
        read_all >= messages,
        "only {read_all} of {messages} records read within {:?}",
        args.duration
    );
    Ok(Comparison {
        workload: NAME.into(),
        setup: format!(
            "catch-up read of {} × {} B records (pre-filled in {:.1} s) by {} consumer(s) in \
             one group, credit window {}, {} queue(s), {} flush; {} redelivered",
            thousands(messages as f64),
            args.message_bytes,
            filled_in.as_secs_f64(),
            args.consumers,
            args.credit_window,
            args.queues,
            args.flush.name(),
            thousands(delivered.saturating_sub(messages) as f64)
        ),
        message_bytes: args.message_bytes,
        concurrency: args.consumers,
        ours: Measured::Throughput(throughput),
        baseline: None,
    })
}

/// Produces the backlog, batched, and waits until every record is acknowledged.
pub(crate) fn fill(
    target: &Target,
    global: &GlobalArgs,
    args: &ConsumeArgs,
    topic: &str,
    messages: u64,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let client = target.client(global, |mut config| {
        config.batch_bytes_max = args.batch_bytes;
        config.with_batch_linger(Duration::from_millis(1))
    })?;
    let producer = Producer::new(&client).context("starting the pre-fill producer")?;
    let value = vec![0xA5u8; args.message_bytes];
    let in_flight = Arc::new(InFlight::default());
    let failures = Arc::new(AtomicU64::new(0));
    for sent in 0..messages {
        if sent % 100_000 == 0 {
            eprint!(
                "\r\x1b[2K{NAME:<24} pre-filling {} of {} records",
                thousands(sent as f64),
                thousands(messages as f64)
            );
        }
        in_flight.add();
        let (in_flight, failures) = (in_flight.clone(), failures.clone());
        producer.send_with_callback(Message::new(topic, value.clone()), move |result| {
            if let Err(e) = result {
                log::debug!("pre-fill send failed: {e}");
                failures.fetch_add(1, Ordering::Relaxed);
            }
            in_flight.done();
        });
    }
    let missing = in_flight.wait_drained(FILL_TIMEOUT);
    eprintln!();
    client.close();
    let failed = failures.load(Ordering::Relaxed);
    anyhow::ensure!(
        missing == 0 && failed == 0,
        "pre-fill: {failed} sends failed, {missing} unacknowledged after {FILL_TIMEOUT:?}"
    );
    Ok(started.elapsed())
}
