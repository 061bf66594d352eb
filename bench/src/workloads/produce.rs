//! Producer throughput: `producers` threads, each its own client, send records with callbacks
//! as fast as the in-flight bound lets them; the client's batcher coalesces them. Counts the
//! records acknowledged inside the window. With `--sizes`, once per payload size.

use std::time::Duration;

use anyhow::Context;
use client::{Message, Producer};

use crate::cli::{GlobalArgs, ProduceArgs};
use crate::latency::{Latency, new_histogram, record_ns};
use crate::measure::{self, Throughput, thousands};
use crate::report::{Baseline, Comparison, Measured, Metric, Step, Sweep, SweepRatio};
use crate::target::{Placement, Target};

/// Longest wait for the sends still in flight when the window closes.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of one produce request: generous, a sync flush under load queues behind fsyncs.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Sizes a `--smoke` size sweep keeps: its smallest and largest.
const SMOKE_SIZES_MAX: usize = 2;

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
    let throughput = measure_size(target, global, args, &name, &topic, args.message_bytes)?;
    Ok(Comparison {
        workload: name,
        setup: setup(args, &format!("{} B records", args.message_bytes)),
        message_bytes: args.message_bytes,
        concurrency: args.producers,
        ours: Measured::Throughput(throughput),
        baseline,
    })
}

/// `--replicas N` (N > 1): the same produce workload on a topic with one replica (on one
/// broker) and then with N replicas (leaders spread over N brokers, `--acks`), each measured
/// for throughput and for the latency of single sends one at a time; N is reported beside 1.
pub fn run_replicated(
    target: &Target,
    global: &GlobalArgs,
    args: &ProduceArgs,
) -> anyhow::Result<Vec<Comparison>> {
    let acks: protocol::control::Acks = args.acks.into();
    let name = format!("{}-replicas{}-acks-{acks}", name(args), args.replicas);
    let single = target.create(
        global,
        &format!("{name}-r1"),
        args.queues,
        args.flush,
        Placement::OneBroker,
    )?;
    let label = format!("{name} (replicas 1)");
    let throughput_1 = measure_size(target, global, args, &label, &single, args.message_bytes)?;
    let latency_1 = measure_send_latency(target, global, args, &label, &single)?;
    drop(single);
    let replicated = target.create(
        global,
        &name,
        args.queues,
        args.flush,
        Placement::Replicated {
            replicas: args.replicas,
            acks,
        },
    )?;
    let throughput_n = measure_size(target, global, args, &name, &replicated, args.message_bytes)?;
    let latency_n = measure_send_latency(target, global, args, &name, &replicated)?;
    let records = format!("{} B records", args.message_bytes);
    let baseline_setup = format!("{}, one replica on one broker", setup(args, &records));
    let ours_setup = format!(
        "{}, {} replicas, acks={acks}",
        setup(args, &records),
        args.replicas
    );
    Ok(vec![
        Comparison {
            workload: name.clone(),
            setup: ours_setup.clone(),
            message_bytes: args.message_bytes,
            concurrency: args.producers,
            ours: Measured::Throughput(throughput_n),
            baseline: Some(Baseline {
                name: "produce, replicas 1".into(),
                setup: baseline_setup.clone(),
                measured: Measured::Throughput(throughput_1),
            }),
        },
        Comparison {
            workload: format!("{name}-latency"),
            setup: format!("{ours_setup}; one send at a time"),
            message_bytes: args.message_bytes,
            concurrency: 1,
            ours: Measured::Latency(latency_n),
            baseline: Some(Baseline {
                name: "single sends, replicas 1".into(),
                setup: format!("{baseline_setup}; one send at a time"),
                measured: Measured::Latency(latency_1),
            }),
        },
    ])
}

/// The latency of single sends on `topic`, one at a time from one producer (no batching):
/// the time from `send` to its acknowledgement.
fn measure_send_latency(
    target: &Target,
    global: &GlobalArgs,
    args: &ProduceArgs,
    label: &str,
    topic: &str,
) -> anyhow::Result<Latency> {
    let (throughput, histograms) = measure::run_window(
        &format!("{label} latency"),
        global.window(args.duration),
        1,
        |_, shared| {
            let client = target.client(global, |config| {
                config
                    .with_idempotence(!args.no_idempotence)
                    .with_batch_linger(Duration::ZERO)
                    .with_request_timeout(REQUEST_TIMEOUT)
            })?;
            let producer = Producer::new(&client).context("starting a producer")?;
            let meter = shared.meter.child();
            let value = vec![0xA5u8; args.message_bytes];
            let mut histogram = new_histogram();
            while !shared.stopped() {
                let started = std::time::Instant::now();
                producer
                    .send(Message::new(topic, value.as_slice()))
                    .context("a single send")?;
                if shared.recording() {
                    record_ns(&mut histogram, started.elapsed().as_nanos() as u64);
                }
                meter.record(1, value.len() as u64);
            }
            client.close();
            Ok(histogram)
        },
    )?;
    let mut merged = new_histogram();
    for histogram in &histograms {
        merged
            .add(histogram)
            .context("merging latency histograms")?;
    }
    Ok(Latency::new(&merged, throughput))
}

/// Throughput vs payload size: one run per `--sizes` entry, with each size's MB/s over the
/// raw stream's (when measured).
pub fn run_sizes(
    target: &Target,
    global: &GlobalArgs,
    args: &ProduceArgs,
    baseline: Option<&Baseline>,
) -> anyhow::Result<Sweep> {
    let mut sizes = args.sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    if global.smoke && sizes.len() > SMOKE_SIZES_MAX {
        sizes = vec![sizes[0], sizes[sizes.len() - 1]];
    }
    let name = format!("{}-sizes", name(args));
    let topic = target.create_topic(global, &name, args.queues, args.flush)?;
    let mut steps = Vec::new();
    for &size in &sizes {
        let label = format!("{name} {size} B");
        let throughput = measure_size(target, global, args, &label, &topic, size)?;
        steps.push(Step {
            label: thousands(size as f64),
            x: size as f64,
            measured: Measured::Throughput(throughput),
            offered_per_s: None,
            saturated: None,
            undelivered: 0,
        });
    }
    let ratio = baseline.and_then(|b| {
        Some(SweepRatio {
            metric: Metric::MbPerS,
            against: format!("{} ({})", b.name, b.setup),
            reference: b.measured.get(Metric::MbPerS)?,
        })
    });
    Ok(Sweep {
        workload: name,
        setup: setup(args, "payload sizes swept"),
        axis: "bytes".into(),
        steps,
        ratio,
        finding: None,
    })
}

fn setup(args: &ProduceArgs, records: &str) -> String {
    format!(
        "{} producer(s), {records}, batch ≤ {} B, linger {:?}, in-flight ≤ {}, {} queue(s), \
         {} flush{}{}",
        args.producers,
        args.batch_bytes,
        args.linger,
        args.in_flight,
        args.queues,
        args.flush.name(),
        if args.traceparent.is_some() {
            ", a traceparent on every message"
        } else {
            ""
        },
        if args.no_idempotence {
            ", idempotence off"
        } else {
            ""
        }
    )
}

/// Measures acknowledged records per second of `message_bytes` each on `topic`.
fn measure_size(
    target: &Target,
    global: &GlobalArgs,
    args: &ProduceArgs,
    label: &str,
    topic: &str,
    message_bytes: usize,
) -> anyhow::Result<Throughput> {
    anyhow::ensure!(args.producers > 0, "--producers must be at least 1");
    let (throughput, _) = measure::run_window(
        label,
        global.window(args.duration),
        args.producers,
        |_, shared| {
            let client = target.client(global, |mut config| {
                config.batch_bytes_max = args.batch_bytes;
                config.in_flight_sends_max = args.in_flight;
                config
                    .with_idempotence(!args.no_idempotence)
                    .with_batch_linger(args.linger)
                    .with_request_timeout(REQUEST_TIMEOUT)
            })?;
            let producer = Producer::new(&client).context("starting a producer")?;
            let trace = args.traceparent.map(client::TraceContext::new);
            send_until_stopped(
                shared,
                &producer,
                topic,
                &vec![0xA5u8; message_bytes],
                trace.as_ref(),
            )?;
            client.close();
            Ok(())
        },
    )?;
    Ok(throughput)
}

/// Sends `value` to `topic` (with `trace` on every message, when given) as fast as the
/// producer takes it until the window stops, counting each acknowledged message, then waits
/// for the last acknowledgements.
pub(crate) fn send_until_stopped(
    shared: &measure::Shared,
    producer: &Producer,
    topic: &str,
    value: &[u8],
    trace: Option<&client::TraceContext>,
) -> anyhow::Result<()> {
    let meter = shared.meter.child();
    while !shared.stopped() {
        let mut message = Message::new(topic, value);
        if let Some(trace) = trace {
            message = message.with_trace(trace.clone());
        }
        producer.send_with_callback(message, meter.on_send(value.len() as u64));
    }
    producer
        .flush(DRAIN_TIMEOUT)
        .context("waiting for the last sends")?;
    Ok(())
}
