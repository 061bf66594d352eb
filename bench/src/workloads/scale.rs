//! Flat cost (DESIGN §8): produce throughput as the queues go 1 → 10,000 and the producer
//! connections 1 → 1,000, each step against the first.
//!
//! Every step sends the same batches, so that only the count under test changes: sending
//! threads go round their producer clients, `burst` records to one before the next, and each
//! client's batch bound holds exactly `burst` records, so every burst leaves as one batch
//! sent by the thread that filled it. The round-robin queue choice is per batch, so batches
//! spread over every queue of a step. Before a step is measured, every client sends one
//! batch to every queue, so connections, routes and queue files are all open.
//!
//! Queues past a topic's limit are spread over several topics, bursts going to each in turn.
//! Each step's topics are deleted after it, so later steps do not carry earlier queues.
//!
//! An embedded broker's queue files and connections are this process's, and the clients
//! always are. Each step measures what one queue or client holds (open files, memory); a
//! later step that would pass the open-file limit or half the machine's available memory
//! is replaced by the largest round count that fits (and the sweep says so), rather than
//! failing mid-way with the broker unable to open sockets, or starving the machine.

use std::time::Duration;

use anyhow::Context;
use client::{Client, Message, Producer};
use protocol::record::{
    BATCH_HEADER_LEN_V3, BATCH_LEN_MAX, BatchBuilder, MessageType, Property, Record,
};

use crate::cli::{GlobalArgs, ScaleArgs, ScaleAxis};
use crate::measure::{self, Throughput, thousands};
use crate::report::{Measured, Metric, Section, Step, Sweep};
use crate::resources::{self, Fit, UnitCost, Usage};
use crate::target::Target;
use crate::workloads::produce::DRAIN_TIMEOUT;

/// Most queues of one topic (the broker's limit).
const QUEUES_PER_TOPIC_MAX: u32 = engine::topic::QUEUE_COUNT_MAX;
/// Sends all clients of a step may have unacknowledged together; each client gets its share,
/// but never less than two bursts (one in flight while the next fills).
const IN_FLIGHT_TOTAL: usize = client::config::IN_FLIGHT_SENDS_MAX_DEFAULT;
/// Steps smaller than this say too little about what one queue or client holds to
/// extrapolate from.
const COST_SAMPLE_UNITS_MIN: u64 = 100;
/// Longest wait for the files of the last step (deleted topics, closed clients) to close.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest queue count a `--smoke` run tries; it runs the first step and the largest within
/// this bound.
const SMOKE_QUEUES_MAX: u64 = 100;
/// Largest client count a `--smoke` run tries, likewise.
const SMOKE_CLIENTS_MAX: u64 = 10;
/// Timeout of one produce request: generous, a thousand connections queue behind each other.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(target: &Target, global: &GlobalArgs, args: &ScaleArgs) -> anyhow::Result<Vec<Section>> {
    anyhow::ensure!(
        args.burst > 0 && args.producers > 0,
        "--burst and --producers must be ≥ 1"
    );
    let mut sections = Vec::new();
    if matches!(args.axis, ScaleAxis::Queues | ScaleAxis::Both) {
        sections.push(queues(target, global, args)?.into());
    }
    if matches!(args.axis, ScaleAxis::Connections | ScaleAxis::Both) {
        sections.push(connections(target, global, args)?.into());
    }
    Ok(sections)
}

/// Queues 1 → N, one producer client.
fn queues(target: &Target, global: &GlobalArgs, args: &ScaleArgs) -> anyhow::Result<Sweep> {
    let name = "scale-queues";
    let wanted = smoke_steps(global, &args.queue_steps, SMOKE_QUEUES_MAX);
    let (steps, findings) = run_steps(&wanted, "queue", |queues| {
        let queues = u32::try_from(queues).context("queue count")?;
        let topic_count = queues.div_ceil(QUEUES_PER_TOPIC_MAX);
        let topics = (0..topic_count)
            .map(|t| {
                // Spread evenly: 10,000 queues are 10 topics of 1,000.
                let share = queues / topic_count + u32::from(t < queues % topic_count);
                target.create_topic(global, name, share, args.flush)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let label = format!("{name} {}", thousands(f64::from(queues)));
        let names: Vec<&str> = topics.iter().map(|t| t.as_str()).collect();
        // Every queue is written once before the load: the sample then counts its files.
        measure_step(target, global, args, &label, &names, 1)
    })?;
    Ok(Sweep {
        workload: name.into(),
        setup: format!(
            "1 producer client, {} B records in bursts of {} (one batch each), linger {:?}, \
             {} flush; queues past {QUEUES_PER_TOPIC_MAX} spread over several topics",
            args.message_bytes,
            args.burst,
            args.linger,
            args.flush.name()
        ),
        axis: "queues".into(),
        steps,
        ratio: None,
        finding: findings,
    }
    .against_first(Metric::OpsPerS))
}

/// Producer clients 1 → N on one topic.
fn connections(target: &Target, global: &GlobalArgs, args: &ScaleArgs) -> anyhow::Result<Sweep> {
    let name = "scale-connections";
    let wanted = smoke_steps(global, &args.connection_steps, SMOKE_CLIENTS_MAX);
    let topic = target.create_topic(global, name, args.queues, args.flush)?;
    let route = target.route(global, &topic)?;
    let mut shards: Vec<(&str, u16)> = route
        .queues
        .iter()
        .map(|q| (q.address.as_str(), q.shard_port))
        .collect();
    shards.sort_unstable();
    shards.dedup();
    let (steps, findings) = run_steps(&wanted, "client", |clients| {
        let clients = usize::try_from(clients).context("client count")?;
        let label = format!("{name} {}", thousands(clients as f64));
        measure_step(target, global, args, &label, &[topic.as_str()], clients)
    })?;
    Ok(Sweep {
        workload: name.into(),
        setup: format!(
            "N producer clients, each with one connection to each of the {} broker shard(s) of \
             the topic (N × {} broker connections), driven by {} thread(s); {} B records in \
             bursts of {} (one batch each), linger {:?}, {} queue(s), {} flush",
            shards.len(),
            shards.len(),
            args.producers,
            args.message_bytes,
            args.burst,
            args.linger,
            args.queues,
            args.flush.name()
        ),
        axis: "clients".into(),
        steps,
        ratio: None,
        finding: findings,
    }
    .against_first(Metric::OpsPerS))
}

/// Runs `run_step` for each count of `wanted` (queues or clients: the `unit`), learning from
/// each step what one unit holds (open files, memory). A step that would not fit this
/// process and machine is replaced by the largest round count that does, which ends the
/// sweep; the findings say so. `run_step` returns its throughput and its usage sampled once
/// every unit was opened and written once, before the load.
fn run_steps(
    wanted: &[u64],
    unit: &str,
    mut run_step: impl FnMut(u64) -> anyhow::Result<(Throughput, Option<Usage>)>,
) -> anyhow::Result<(Vec<Step>, Option<String>)> {
    let baseline = Usage::now();
    let mut cost = UnitCost::default();
    let mut steps: Vec<Step> = Vec::new();
    let mut findings = Vec::new();
    for &count in wanted {
        // A deleted topic's queue files close after the deletion is answered.
        if let Some(baseline) = baseline {
            if !resources::settle(baseline.open_files, SETTLE_TIMEOUT) {
                log::warn!("open files did not fall back after the last step");
            }
        }
        // A step writes about what the last one did; the broker may cache all of it.
        let data_bytes = steps.last().map_or(0, |s| s.measured.throughput().bytes);
        let units = match resources::fit(count, cost, data_bytes, unit) {
            Fit::Yes => count,
            Fit::Instead { units, reason } => {
                let replace = steps.last().is_none_or(|last| units as f64 > last.x);
                findings.push(format!(
                    "{} {unit}s not run: {reason}{}",
                    thousands(count as f64),
                    if replace {
                        format!("; {} run instead", thousands(units as f64))
                    } else {
                        String::new()
                    }
                ));
                if !replace {
                    break;
                }
                units
            }
        };
        let before = Usage::now();
        let (throughput, warmed) = run_step(units)?;
        if let (Some(before), Some(warmed)) = (before, warmed) {
            if units >= COST_SAMPLE_UNITS_MIN {
                cost.learn(before, warmed, units);
                log::info!(
                    "a {unit} holds {:.1} open files and {:.2} MB (learned up to {units})",
                    cost.open_files,
                    cost.bytes / 1e6
                );
            }
        }
        steps.push(step(units as f64, throughput));
        if units != count {
            break;
        }
    }
    Ok((steps, (!findings.is_empty()).then(|| findings.join("; "))))
}

/// The non-zero steps; under `--smoke` only the first and the largest up to `smoke_max`.
fn smoke_steps<T: Copy + Ord + Default>(global: &GlobalArgs, steps: &[T], smoke_max: T) -> Vec<T> {
    let steps: Vec<T> = steps
        .iter()
        .copied()
        .filter(|&n| n > T::default())
        .collect();
    if !global.smoke {
        return steps;
    }
    let within: Vec<T> = steps.iter().copied().filter(|&n| n <= smoke_max).collect();
    match (within.first(), within.iter().max()) {
        (Some(&first), Some(&largest)) if first != largest => vec![first, largest],
        (Some(&first), _) => vec![first],
        _ => Vec::new(),
    }
}

fn step(x: f64, throughput: Throughput) -> Step {
    Step {
        label: thousands(x),
        x,
        measured: Measured::Throughput(throughput),
        offered_per_s: None,
        saturated: None,
        undelivered: 0,
    }
}

/// One step: `clients` producer clients sending bursts round the `topics`. Returns the
/// throughput, and what the process held once every client and queue was opened and written
/// once, before the load.
fn measure_step(
    target: &Target,
    global: &GlobalArgs,
    args: &ScaleArgs,
    label: &str,
    topics: &[&str],
    clients: usize,
) -> anyhow::Result<(Throughput, Option<Usage>)> {
    let batch_bytes = batch_bytes_for(args.burst, args.message_bytes, &global.area)?;
    let in_flight = (IN_FLIGHT_TOTAL / clients).max(2 * args.burst);
    eprint!("\r\x1b[2K{label:<24} starting {clients} client(s)");
    let producers = (0..clients)
        .map(|_| {
            let client = target.client(global, |mut config| {
                config.batch_bytes_max = batch_bytes;
                config.in_flight_sends_max = in_flight;
                config
                    .with_batch_linger(args.linger)
                    .with_request_timeout(REQUEST_TIMEOUT)
            })?;
            let producer = Producer::new(&client).context("starting a producer")?;
            Ok((client, producer))
        })
        .collect::<anyhow::Result<Vec<(Client, Producer)>>>();
    producers.and_then(|producers| {
        warm(
            target,
            global,
            label,
            topics,
            &producers,
            args.message_bytes,
        )?;
        let warmed = Usage::now();
        let value = vec![0xA5u8; args.message_bytes];
        let message_bytes = args.message_bytes as u64;
        let (throughput, _) = measure::run_window(
            label,
            global.window(args.duration),
            args.producers,
            |worker, shared| {
                let mine: Vec<&Producer> = producers
                    .iter()
                    .skip(worker)
                    .step_by(args.producers)
                    .map(|(_, p)| p)
                    .collect();
                let mut bursts = 0usize;
                let meter = shared.meter.child();
                while !shared.stopped() {
                    for producer in &mine {
                        let topic = &topics[bursts % topics.len()];
                        bursts += 1;
                        for _ in 0..args.burst {
                            producer.send_with_callback(
                                Message::new(*topic, value.clone()),
                                meter.on_send(message_bytes),
                            );
                        }
                        if shared.stopped() {
                            break;
                        }
                    }
                }
                Ok(())
            },
        )?;
        for (_, producer) in &producers {
            producer
                .flush(DRAIN_TIMEOUT)
                .context("waiting for the last sends")?;
        }
        for (client, _) in &producers {
            client.close();
        }
        Ok((throughput, warmed))
    })
}

/// Sends one batch from every client to every queue of `topics`, so that every route,
/// connection and queue file is open before the step is measured.
fn warm(
    target: &Target,
    global: &GlobalArgs,
    label: &str,
    topics: &[&str],
    producers: &[(Client, Producer)],
    message_bytes: usize,
) -> anyhow::Result<()> {
    let queue_counts = topics
        .iter()
        .map(|topic| Ok(target.route(global, topic)?.queues.len()))
        .collect::<anyhow::Result<Vec<usize>>>()?;
    let value = vec![0xA5u8; message_bytes];
    for (index, (_, producer)) in producers.iter().enumerate() {
        if index % 50 == 0 {
            eprint!(
                "\r\x1b[2K{label:<24} warming client {} of {}",
                index + 1,
                producers.len()
            );
        }
        for (topic, &queues) in topics.iter().zip(&queue_counts) {
            // The queue is chosen per batch, round robin: one flushed batch per queue.
            for _ in 0..queues {
                producer.send_with_callback(Message::new(*topic, value.clone()), |r| {
                    if let Err(e) = r {
                        log::debug!("warming send failed: {e}");
                    }
                });
                producer
                    .flush(DRAIN_TIMEOUT)
                    .context("warming a producer")?;
            }
        }
    }
    eprintln!();
    Ok(())
}

/// The batch bound at which `burst` records of `message_bytes` (as the client encodes them:
/// an event with the sender's area) leave as one batch, sent by the caller that added the
/// last. The client sends a batch once it reaches 90% of its bound, so the bound is the
/// burst's size × 10/9: the burst's last record reaches 90%, the one before does not.
fn batch_bytes_for(burst: usize, message_bytes: usize, area: &str) -> anyhow::Result<usize> {
    let area = area.parse().context("benchmark area")?;
    let value = vec![0u8; message_bytes];
    let mut builder = BatchBuilder::new(BATCH_LEN_MAX);
    builder.push(&Record {
        timestamp_ms: 0,
        message_type: MessageType::Event,
        key: &[],
        properties: &[Property::Area(area)],
        value: &value,
    })?;
    let record = builder.len_bytes() - BATCH_HEADER_LEN_V3;
    let full = BATCH_HEADER_LEN_V3 + burst * record;
    let bound = full * 10 / 9;
    anyhow::ensure!(
        bound <= BATCH_LEN_MAX,
        "a burst of {burst} × {message_bytes} B exceeds the largest batch ({BATCH_LEN_MAX} B)"
    );
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_fills_its_batch_bound_to_the_send_threshold() {
        let bound = batch_bytes_for(256, 1024, "A10").unwrap();
        let area = "A10".parse().unwrap();
        let value = vec![0u8; 1024];
        let mut builder = BatchBuilder::new(bound);
        let record = Record {
            timestamp_ms: 1,
            message_type: MessageType::Event,
            key: &[],
            properties: &[Property::Area(area)],
            value: &value,
        };
        for n in 1..=256 {
            builder.push(&record).unwrap();
            let due = builder.len_bytes() * 10 >= bound * 9;
            assert_eq!(due, n == 256, "record {n}");
        }
    }
}
