//! What a nack costs (ARCHITECTURE §13.2): a backlog is produced (not measured), then one
//! consumer reads it and nacks every message, each nack a round trip in which the broker
//! reads the record and appends its copy to the group's retry topic; its baseline is a
//! plain read of the same backlog by another group. Both are pull consumers reading one
//! message at a time, so the ratio is the cost of a nack beside a delivery.

use std::time::{Duration, Instant};

use anyhow::Context;
use client::{ConsumeMode, Consumer, ConsumerOptions, StartFrom};

use crate::cli::{ConsumeArgs, GlobalArgs};
use crate::cpu::CpuSample;
use crate::measure::{Throughput, thousands};
use crate::report::{Baseline, Comparison, Measured};
use crate::target::Target;

pub const NAME: &str = "retry";
/// Most records a run nacks: each nack is a synchronous round trip.
const MESSAGES_MAX: u64 = 20_000;
/// The backlog of a `--smoke` run.
const SMOKE_MESSAGES: u64 = 2_000;
/// Longest wait for one record before the read is judged stuck.
const RECV_TIMEOUT: Duration = Duration::from_secs(10);

pub fn run(target: &Target, global: &GlobalArgs, args: &ConsumeArgs) -> anyhow::Result<Comparison> {
    let messages = args.messages.min(if global.smoke {
        SMOKE_MESSAGES
    } else {
        MESSAGES_MAX
    });
    anyhow::ensure!(messages > 0, "--messages must be at least 1");
    let topic = target.create_topic(global, NAME, args.queues, args.flush)?;
    let filled_in = super::consume::fill(target, global, args, &topic, messages)?;
    let plain = read(target, global, args, &topic, "bench_plain", messages, false)?;
    let nacked = read(target, global, args, &topic, "bench_nack", messages, true)?;
    Ok(Comparison {
        workload: NAME.into(),
        setup: format!(
            "{} × {} B records (pre-filled in {:.1} s) read one at a time by a pull consumer \
             that nacks each (the broker copies it to the group's retry topic, {} flush); \
             baseline: the same read without nacks",
            thousands(messages as f64),
            args.message_bytes,
            filled_in.as_secs_f64(),
            args.flush.name(),
        ),
        message_bytes: args.message_bytes,
        concurrency: 1,
        ours: Measured::Throughput(nacked),
        baseline: Some(Baseline {
            name: "plain consume".into(),
            setup: "the same backlog read by another group, no nacks".into(),
            measured: Measured::Throughput(plain),
        }),
    })
}

/// Reads `messages` records as `group` (nacking each with `nack`), timed from the first.
fn read(
    target: &Target,
    global: &GlobalArgs,
    args: &ConsumeArgs,
    topic: &str,
    group: &str,
    messages: u64,
    nack: bool,
) -> anyhow::Result<Throughput> {
    let client = target.client(global, |c| c.with_credit_window(args.credit_window))?;
    // Without the retry topic's consumer: the copies are not to come back mid-run.
    let options = ConsumerOptions::new(topic, group, ConsumeMode::Clustering)
        .start_from(StartFrom::Earliest)
        .without_retries();
    let consumer = Consumer::subscribe_with(&client, options).context("subscribing")?;
    // Timed, and CPU counted (client and embedded broker), from the first record on.
    let mut started = None;
    let mut cpu_start = None;
    let mut bytes = 0;
    for read in 0..messages {
        let message = consumer
            .recv(RECV_TIMEOUT)?
            .with_context(|| format!("{group}: only {read} of {messages} records arrived"))?;
        if started.is_none() {
            started = Some(Instant::now());
            cpu_start = CpuSample::now();
        }
        bytes += message.value.len() as u64;
        if nack {
            consumer
                .nack(&message, "benchmark")
                .with_context(|| format!("nack of record {read}"))?;
        }
    }
    let seconds = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    let used = cpu_start
        .zip(CpuSample::now())
        .map(|(start, end)| start.until(end));
    consumer.close().context("closing the consumer")?;
    client.close();
    Ok(Throughput::new(messages, bytes, 0, seconds.max(1e-9)).with_cpu(used))
}
