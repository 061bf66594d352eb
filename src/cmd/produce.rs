//! `defibus produce`: send one message (or each line of stdin) to a topic or a service, and
//! print where it was stored.

use std::io::BufRead;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// Deliver the message this many milliseconds from now (a delayed message, held by the
    /// broker until then; its id, `held=topic/queue/offset@broker`, is printed).
    #[arg(long, value_name = "MS", conflicts_with = "deliver_at")]
    delay_ms: Option<u64>,
    /// Deliver the message at this time: Unix milliseconds (`1767225600000`) or RFC 3339
    /// (`2026-01-01T00:00:00Z`, `2026-01-01 00:00:00.5Z`).
    #[arg(long, value_name = "TIME", value_parser = parse_deliver_at)]
    deliver_at: Option<SystemTime>,
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
            message = message.with_ttl(Duration::from_millis(ttl_ms));
        }
        if let Some(delay_ms) = args.delay_ms {
            message = message.with_delay(Duration::from_millis(delay_ms));
        }
        if let Some(at) = args.deliver_at {
            message = message.deliver_at(at);
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
        // A held message's offset is in the queue's held log, not the queue: say so.
        let held = sent
            .held_id()
            .map(|id| format!(" held={id}"))
            .unwrap_or_default();
        println!(
            "{topic}queue={} offset={} broker={}{trace}{held}",
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

/// `--deliver-at`: Unix milliseconds, or an RFC 3339 time.
fn parse_deliver_at(text: &str) -> Result<SystemTime, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let ms: u64 = text
            .parse()
            .map_err(|e| format!("{text}: not Unix milliseconds: {e}"))?;
        return Ok(UNIX_EPOCH + Duration::from_millis(ms));
    }
    humantime::parse_rfc3339_weak(text).map_err(|e| {
        format!(
            "{text}: neither Unix milliseconds nor an RFC 3339 time (2026-01-01T00:00:00Z): {e}"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliver_at_takes_unix_ms_and_rfc3339() {
        let at = UNIX_EPOCH + Duration::from_millis(1_767_225_600_000);
        assert_eq!(parse_deliver_at("1767225600000"), Ok(at));
        assert_eq!(parse_deliver_at("2026-01-01T00:00:00Z"), Ok(at));
        assert_eq!(
            parse_deliver_at("2026-01-01T00:00:00.250Z"),
            Ok(at + Duration::from_millis(250))
        );
        assert!(parse_deliver_at("tomorrow").is_err());
        assert!(parse_deliver_at("").is_err());
        assert!(parse_deliver_at("99999999999999999999999").is_err());
    }

    /// `--help` states the limit in words: it must stay the client's.
    #[test]
    fn the_limit_in_the_help_is_the_clients() {
        assert_eq!(client::config::BATCH_BYTES_MAX_DEFAULT, 1 << 20);
    }
}
