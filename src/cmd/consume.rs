//! `defibus consume`: print a topic's (or a service's nearest deployment's) messages as a
//! member of a consumer group, committing
//! what was printed; stops after `--count`, after `--timeout-ms` without a message, or on
//! SIGINT/SIGTERM, and commits on the way out.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use client::{ClientError, ConsumeMode, Consumer, ConsumerOptions, StartFrom};
use protocol::names::GroupName;

use super::shared::{BusArgs, TargetArgs, message_line, stop_on_signal};

/// How often the wait for a message looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    #[command(flatten)]
    bus: BusArgs,
    #[command(flatten)]
    target: TargetArgs,
    /// The consumer group: members of one group share the topic's queues.
    #[arg(long)]
    group: GroupName,
    /// Receive every message, whatever other members of the group receive (offsets are kept
    /// per member).
    #[arg(long)]
    broadcast: bool,
    /// Where to start when the group has no committed offset on a queue (`earliest` always
    /// starts at the oldest message).
    #[arg(long, value_enum, default_value_t = Start::Committed)]
    from: Start,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this long without a message; with --count, fewer messages exit with code 2.
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
    /// Reject (nack) every message received: each comes back after the group's backoff
    /// (the broker's [retry] schedule_ms), and past its max_redeliveries lands in the group's
    /// dead-letter topic (`defibus dlq`). Printed lines say which redelivery each is.
    #[arg(long, conflicts_with = "broadcast")]
    nack: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Start {
    /// The group's committed offset; the oldest message when there is none.
    Committed,
    /// The oldest retained message, even if the group committed past it.
    Earliest,
    /// The next message produced, when the group has no committed offset.
    Latest,
}

impl From<Start> for StartFrom {
    fn from(start: Start) -> Self {
        match start {
            Start::Committed => StartFrom::Committed,
            Start::Earliest => StartFrom::Earliest,
            Start::Latest => StartFrom::Latest,
        }
    }
}

pub fn run(args: ConsumeArgs) -> anyhow::Result<ExitCode> {
    let stop = stop_on_signal()?;
    let client = args.bus.connect()?;
    let mode = if args.broadcast {
        ConsumeMode::Broadcast
    } else {
        ConsumeMode::Clustering
    };
    let topic = args.target.topic(&client)?;
    let options = ConsumerOptions::new(topic.as_str(), args.group.to_string(), mode)
        .start_from(args.from.into());
    let consumer = Consumer::subscribe_with(&client, options)
        .with_context(|| format!("subscribing to {topic} as group {}", args.group))?;
    let idle_max = args.timeout_ms.map(Duration::from_millis);
    let mut received = 0u64;
    let mut last = Instant::now();
    let outcome = loop {
        if args.count.is_some_and(|count| received >= count) {
            break Ok(());
        }
        if stop.load(Ordering::Relaxed) {
            log::info!("signal received: closing");
            break Ok(());
        }
        if let Some(idle_max) = idle_max.filter(|max| last.elapsed() >= *max) {
            break match args.count {
                Some(count) => Err(anyhow::Error::new(ClientError::Timeout { after: idle_max })
                    .context(format!(
                        "{received} of {count} messages before {} ms without one",
                        idle_max.as_millis()
                    ))),
                None => Ok(()),
            };
        }
        match consumer.recv(STOP_POLL) {
            Ok(Some(message)) => {
                println!("{}", message_line(&message));
                if args.nack {
                    match consumer.nack(&message, "rejected by defibus consume --nack") {
                        Ok(nacked) if nacked.dead_lettered => {
                            println!("  nacked: dead-lettered to {}", nacked.topic)
                        }
                        Ok(nacked) => println!(
                            "  nacked: redelivery {} waits in queue {} of {}",
                            nacked.attempt, nacked.queue_id, nacked.topic
                        ),
                        Err(e) => break Err(anyhow::Error::new(e).context("nacking")),
                    }
                }
                received += 1;
                last = Instant::now();
            }
            Ok(None) => {}
            Err(e) => break Err(anyhow::Error::new(e).context("receiving")),
        }
    };
    // Closing commits what was printed, also after an error or a timeout. A commit the broker
    // refused (its disk is full, say) fails the command: the group would receive those
    // messages again, which an exit code of 0 would hide.
    let failures = consumer.commit_failures();
    let closed = consumer.close().with_context(|| {
        format!(
            "committing offsets on close failed ({failures} earlier commits failed too): the \
             messages printed since the last successful commit will be delivered to the group \
             again"
        )
    });
    outcome?;
    closed?;
    Ok(ExitCode::SUCCESS)
}
