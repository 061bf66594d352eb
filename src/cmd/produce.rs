//! `defibus produce`: send one message (or each line of stdin) to a topic or a service, and
//! print where it was stored.

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use client::{Producer, QueueSelector};

use super::shared::{BusArgs, MessageArgs};

#[derive(Args, Debug)]
pub struct ProduceArgs {
    #[command(flatten)]
    bus: BusArgs,
    #[command(flatten)]
    message: MessageArgs,
    /// Send MESSAGE this many times.
    #[arg(long, default_value_t = 1, requires = "value")]
    count: u64,
    /// Time-to-live: a message not delivered within this many milliseconds of its sending
    /// is never delivered (and is counted: `defibus_queue_expired_events`).
    #[arg(long, value_name = "MS")]
    ttl_ms: Option<u64>,
    /// The message value (text); without it, every line of stdin is sent as one message.
    /// A message may be at most 1 MiB (1,048,576 bytes) with its key, properties and record
    /// header; a larger one is refused before it is sent.
    #[arg(value_name = "MESSAGE")]
    value: Option<String>,
}

pub fn run(args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let client = args.bus.connect()?;
    // With a key, equal keys must land on one queue to keep their order.
    let selector = if args.message.key.is_some() {
        QueueSelector::KeyHash
    } else {
        QueueSelector::RoundRobin
    };
    let producer = Producer::with_selector(&client, selector).context("starting the producer")?;
    let target = &args.message.target;
    let send = |value: String| -> anyhow::Result<()> {
        let mut message = args.message.message(value);
        if let Some(ttl_ms) = args.ttl_ms {
            message = message.with_ttl(std::time::Duration::from_millis(ttl_ms));
        }
        let trace = message
            .trace()
            .map(|t| format!(" traceparent={}", t.traceparent()))
            .unwrap_or_default();
        let sent = match &target.service {
            None => producer.send(message),
            Some(service) => producer.send_to_service(service.as_str(), message),
        }
        .with_context(|| format!("sending to {target}"))?;
        // By service id, the deployment it reached is worth seeing.
        let topic = match target.service {
            Some(_) => format!("topic={} ", sent.topic),
            None => String::new(),
        };
        println!(
            "{topic}queue={} offset={} broker={}{trace}",
            sent.queue_id, sent.offset, sent.broker_id
        );
        Ok(())
    };
    match &args.value {
        Some(value) => {
            for _ in 0..args.count {
                send(value.clone())?;
            }
        }
        None => {
            for line in std::io::stdin().lock().lines() {
                send(line.context("reading stdin")?)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    /// `--help` states the limit in words: it must stay the client's.
    #[test]
    fn the_limit_in_the_help_is_the_clients() {
        assert_eq!(client::config::BATCH_BYTES_MAX_DEFAULT, 1 << 20);
    }
}
