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
//! An embedded broker's queue files are this process's open files. Each step measures how
//! many a queue holds; a later step that would pass the open-file limit is replaced by the
//! largest round count that fits (and the sweep says so), rather than failing mid-way with
//! the broker unable to open sockets or files.

use std::time::Duration;

use anyhow::Context;
use client::{Client, Message, Producer};
use protocol::record::{
    BATCH_HEADER_LEN, BATCH_LEN_MAX, BatchBuilder, MessageType, Property, Record,
};

use crate::cli::{GlobalArgs, ScaleArgs, ScaleAxis};
use crate::measure::{self, Throughput, thousands};
use crate::report::{Measured, Metric, Section, Step, Sweep};
use crate::target::Target;

/// Most queues of one topic (the broker's limit).
const QUEUES_PER_TOPIC_MAX: u32 = engine::topic::QUEUE_COUNT_MAX;
/// Sends all clients of a step may have unacknowledged together; each client gets its share,
/// but never less than two bursts (one in flight while the next fills).
const IN_FLIGHT_TOTAL: usize = client::config::IN_FLIGHT_SENDS_MAX_DEFAULT;
/// Share of the open-file limit a step may plan to use: room for sockets and the rest.
const OPEN_FILES_SHARE: f64 = 0.85;
/// Queue counts below this say too little about open files per queue to extrapolate from.
const OPEN_FILES_SAMPLE_QUEUES_MIN: u32 = 100;
/// Largest queue count a `--smoke` run tries; it runs the first step and the largest within
/// this bound.
const SMOKE_QUEUES_MAX: u32 = 100;
/// Largest client count a `--smoke` run tries, likewise.
const SMOKE_CLIENTS_MAX: usize = 10;
/// Longest wait for a step's last acknowledgements, and for each warming send.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
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
    let steps = smoke_steps(global, &args.queue_steps, SMOKE_QUEUES_MAX);
    let mut measured: Vec<Step> = Vec::new();
    let mut files_per_queue: Option<f64> = None;
    let mut findings = Vec::new();
    for &wanted in &steps {
        let queues = match files_per_queue.filter(|_| target.is_embedded()) {
            Some(per_queue) => match fitting_queues(wanted, per_queue) {
                Fits::Yes => wanted,
                Fits::Instead { queues, reason } => {
                    let replace = measured
                        .last()
                        .is_none_or(|last| f64::from(queues) > last.x);
                    findings.push(format!(
                        "{} queues not run: {reason}{}",
                        thousands(f64::from(wanted)),
                        if replace {
                            format!("; {} run instead", thousands(f64::from(queues)))
                        } else {
                            String::new()
                        }
                    ));
                    if !replace {
                        break;
                    }
                    queues
                }
            },
            None => wanted,
        };
        let open_before = crate::limits::open_files();
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
        let throughput = measure_step(target, global, args, &label, &names, 1);
        // Every queue was written by now, so its files are open: count them before deletion.
        if let (Some(before), Some(after)) = (open_before, crate::limits::open_files()) {
            if queues >= OPEN_FILES_SAMPLE_QUEUES_MIN {
                let per_queue = after.saturating_sub(before) as f64 / f64::from(queues);
                files_per_queue = Some(files_per_queue.unwrap_or(0.0).max(per_queue));
            }
        }
        drop(topics);
        measured.push(step(f64::from(queues), throughput?));
        if queues != wanted {
            break;
        }
    }
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
        steps: measured,
        ratio: None,
        finding: (!findings.is_empty()).then(|| findings.join("; ")),
    }
    .against_first(Metric::OpsPerS))
}

/// Whether a step of `queues` fits this process's open-file limit.
enum Fits {
    Yes,
    /// It does not; `queues` (a round count) would.
    Instead {
        queues: u32,
        reason: String,
    },
}

/// Judges a step of `queues` at `per_queue` open files each, against the limit.
fn fitting_queues(queues: u32, per_queue: f64) -> Fits {
    let (Some(limit), Some(open)) = (
        crate::limits::open_files_limit(),
        crate::limits::open_files(),
    ) else {
        return Fits::Yes;
    };
    let budget = limit as f64 * OPEN_FILES_SHARE - open as f64;
    let needed = per_queue * f64::from(queues);
    if needed <= budget || per_queue <= 0.0 {
        return Fits::Yes;
    }
    let fits = round_down((budget / per_queue).max(1.0) as u32);
    Fits::Instead {
        queues: fits,
        reason: format!(
            "the embedded broker holds {per_queue:.1} open files per queue (measured), {} \
             for this step, over {:.0}% of this process's open-file limit of {} (the hard \
             limit; raising it needs CAP_SYS_RESOURCE)",
            thousands(needed),
            OPEN_FILES_SHARE * 100.0,
            thousands(limit as f64)
        ),
    }
}

/// The largest of 1, 2 or 5 × 10^k not above `n` (`n` ≥ 1).
fn round_down(n: u32) -> u32 {
    let mut best = 1;
    let mut decade = 1u32;
    while decade <= n {
        for m in [1, 2, 5] {
            if let Some(candidate) = decade.checked_mul(m).filter(|&c| c <= n) {
                best = best.max(candidate);
            }
        }
        let Some(next) = decade.checked_mul(10) else {
            break;
        };
        decade = next;
    }
    best
}

/// Producer clients 1 → N on one topic.
fn connections(target: &Target, global: &GlobalArgs, args: &ScaleArgs) -> anyhow::Result<Sweep> {
    let name = "scale-connections";
    let steps = smoke_steps(global, &args.connection_steps, SMOKE_CLIENTS_MAX);
    let topic = target.create_topic(global, name, args.queues, args.flush)?;
    let route = target.route(global, &topic)?;
    let mut shards: Vec<(&str, u16)> = route
        .queues
        .iter()
        .map(|q| (q.address.as_str(), q.shard_port))
        .collect();
    shards.sort_unstable();
    shards.dedup();
    let mut measured = Vec::new();
    for &clients in &steps {
        let label = format!("{name} {}", thousands(clients as f64));
        let throughput = measure_step(target, global, args, &label, &[topic.as_str()], clients)?;
        measured.push(step(clients as f64, throughput));
    }
    drop(topic);
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
        steps: measured,
        ratio: None,
        finding: None,
    }
    .against_first(Metric::OpsPerS))
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

/// One step: `clients` producer clients sending bursts round the `topics`.
fn measure_step(
    target: &Target,
    global: &GlobalArgs,
    args: &ScaleArgs,
    label: &str,
    topics: &[&str],
    clients: usize,
) -> anyhow::Result<Throughput> {
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
    let measured = producers.and_then(|producers| {
        warm(
            target,
            global,
            label,
            topics,
            &producers,
            args.message_bytes,
        )?;
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
                while !shared.stopped() {
                    for producer in &mine {
                        let topic = &topics[bursts % topics.len()];
                        bursts += 1;
                        for _ in 0..args.burst {
                            let meter = shared.meter.clone();
                            producer.send_with_callback(
                                Message::new(*topic, value.clone()),
                                move |result| match result {
                                    Ok(_) => meter.record(1, message_bytes),
                                    Err(e) => {
                                        log::debug!("send failed: {e}");
                                        meter.error();
                                    }
                                },
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
        Ok(throughput)
    });
    measured
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
    let record = builder.len_bytes() - BATCH_HEADER_LEN;
    let full = BATCH_HEADER_LEN + burst * record;
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
    fn round_counts_round_down() {
        assert_eq!(round_down(1), 1);
        assert_eq!(round_down(4), 2);
        assert_eq!(round_down(5_333), 5_000);
        assert_eq!(round_down(19_999), 10_000);
        assert_eq!(round_down(u32::MAX), 2_000_000_000);
    }

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
