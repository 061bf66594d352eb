//! Producer throughput: `producers` threads, each its own client, send records with callbacks
//! as fast as the in-flight bound lets them; the client's batcher coalesces them. Counts the
//! records acknowledged inside the window.

use std::time::Duration;

use anyhow::Context;
use client::{Message, Producer};

use crate::cli::{GlobalArgs, ProduceArgs};
use crate::measure;
use crate::report::{Baseline, Comparison, Measured};
use crate::target::Target;

/// Longest wait for the sends still in flight when the window closes.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of one produce request: generous, a sync flush under load queues behind fsyncs.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The name goals refer to: `produce-async` or `produce-sync`.
pub fn name(args: &ProduceArgs) -> String {
    format!("produce-{}", args.flush.name())
}

pub fn run(
    target: &Target,
    global: &GlobalArgs,
    args: &ProduceArgs,
    baseline: Option<Baseline>,
) -> anyhow::Result<Comparison> {
    let name = name(args);
    let topic = target.create_topic(global, &name, args.queues, args.flush)?;
    let message_bytes = args.message_bytes;
    let (throughput, _) = measure::run_window(
        &name,
        global.window(args.duration),
        args.producers,
        |_, shared| {
            let client = target.client(global, |mut config| {
                config.batch_bytes_max = args.batch_bytes;
                config.in_flight_sends_max = args.in_flight;
                config
                    .with_batch_linger(args.linger)
                    .with_request_timeout(REQUEST_TIMEOUT)
            })?;
            let producer = Producer::new(&client).context("starting a producer")?;
            let value = vec![0xA5u8; message_bytes];
            while !shared.stopped() {
                let meter = shared.meter.clone();
                producer.send_with_callback(
                    Message::new(topic.as_str(), value.clone()),
                    move |result| match result {
                        Ok(_) => meter.record(1, message_bytes as u64),
                        Err(e) => {
                            log::debug!("send failed: {e}");
                            meter.error();
                        }
                    },
                );
            }
            producer
                .flush(DRAIN_TIMEOUT)
                .context("waiting for the last sends")?;
            client.close();
            Ok(())
        },
    )?;
    Ok(Comparison {
        workload: name,
        setup: format!(
            "{} producer(s), {} B records, batch ≤ {} B, linger {:?}, in-flight ≤ {}, \
             {} queue(s), {} flush",
            args.producers,
            args.message_bytes,
            args.batch_bytes,
            args.linger,
            args.in_flight,
            args.queues,
            args.flush.name()
        ),
        message_bytes,
        concurrency: args.producers,
        ours: Measured::Throughput(throughput),
        baseline,
    })
}
