//! Transactional (half) messages (ARCHITECTURE §13.4): one producer, closed loop, each
//! message sent as a half and then committed (two round trips; the commit releases the half
//! into its queue: read, copy, copy durable by the flush mode, marker), beside plain single
//! sends (one round trip, no batching) to another topic in the same run. Ratio = committed
//! messages per second / plain sends per second.

use std::time::Duration;

use anyhow::Context;
use client::{Message, Producer, TransactionOutcome, TransactionalProducer};

use crate::cli::{GlobalArgs, TransactionalArgs};
use crate::measure::{self, Throughput};
use crate::report::{Baseline, Comparison, Measured};
use crate::target::Target;

pub const NAME: &str = "transactional";
/// The producer group of the halves.
const GROUP: &str = "bench_txn";
/// Timeout of one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub fn run(
    target: &Target,
    global: &GlobalArgs,
    args: &TransactionalArgs,
) -> anyhow::Result<Comparison> {
    let plain_topic = target.create_topic(global, "txn-plain", args.queues, args.flush)?;
    let plain = closed_loop(target, global, args, "plain send", &plain_topic, false)?;
    drop(plain_topic);
    let topic = target.create_topic(global, NAME, args.queues, args.flush)?;
    let committed = closed_loop(target, global, args, "half + commit", &topic, true)?;
    let setup = |what: &str| {
        format!(
            "1 producer, {} B records, one at a time (no batching), {what}, {} queue(s), {} \
             flush",
            args.message_bytes,
            args.queues,
            args.flush.name()
        )
    };
    Ok(Comparison {
        workload: NAME.into(),
        setup: setup("each sent as a half then committed"),
        message_bytes: args.message_bytes,
        concurrency: 1,
        ours: Measured::Throughput(committed),
        baseline: Some(Baseline {
            name: "plain send".into(),
            setup: setup("each a plain send"),
            measured: Measured::Throughput(plain),
        }),
    })
}

/// Messages per second one closed loop gets through on `topic`: plain sends, or halves each
/// committed before the next is sent.
fn closed_loop(
    target: &Target,
    global: &GlobalArgs,
    args: &TransactionalArgs,
    label: &str,
    topic: &str,
    transactional: bool,
) -> anyhow::Result<Throughput> {
    let (throughput, _) =
        measure::run_window(label, global.window(args.duration), 1, |_, shared| {
            let client = target.client(global, |config| {
                config
                    .with_batch_linger(Duration::ZERO)
                    .with_request_timeout(REQUEST_TIMEOUT)
            })?;
            let meter = shared.meter.child();
            let value = vec![0xA5u8; args.message_bytes];
            if transactional {
                // Every half is committed at once: a check-back would mean a lost commit.
                let producer =
                    TransactionalProducer::new(&client, GROUP, |_| TransactionOutcome::Commit)
                        .context("starting a transactional producer")?;
                while !shared.stopped() {
                    let half = producer
                        .send_half(Message::new(topic, value.as_slice()))
                        .context("sending a half")?;
                    half.commit().context("committing a half")?;
                    meter.record(1, value.len() as u64);
                }
            } else {
                let producer = Producer::new(&client).context("starting a producer")?;
                while !shared.stopped() {
                    producer
                        .send(Message::new(topic, value.as_slice()))
                        .context("a plain send")?;
                    meter.record(1, value.len() as u64);
                }
            }
            client.close();
            Ok(())
        })?;
    Ok(throughput)
}
