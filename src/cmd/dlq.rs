//! `defibus dlq`: the dead-letter topics of consumer groups (docs/ARCHITECTURE.md §13.2):
//! list them with what is pending, show, resend to the original topic, purge.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use client::Admin;
use protocol::codes::Command;
use protocol::control::DeadLetterReply;
use protocol::names::{GroupName, Topic};

use super::shared::{BusArgs, printable};

const DLQ_HELP: &str = "\
A message a consumer group rejects (a handler error, or `nack`) is redelivered after the
group's backoff ([retry] schedule_ms on the broker); past max_redeliveries (default 16) the
broker stores it in the group's dead-letter topic <topic>.DLQ.<group> (a group whose name
holds '-' or is too long is named by a hash: <topic>.DLQ.h<16 hex digits>). Nothing consumes
it: these commands list, show, resend and purge what is pending there.

Pending is a position per queue (the internal group defibus-dlq's committed offset): resend
re-produces each message, oldest first, to its original topic and queue, then marks it done,
so a second resend does not duplicate it; purge marks messages done without resending.

Examples:
  defibus dlq list
  defibus dlq show --topic A10-20190001 --group orders --limit 20
  defibus dlq resend --topic A10-20190001 --group orders --all
  defibus dlq purge --topic A10-20190001 --group orders";

/// `defibus dlq ...`
#[derive(Args, Debug)]
#[command(after_long_help = DLQ_HELP)]
pub struct DlqArgs {
    #[command(flatten)]
    bus: BusArgs,
    #[command(subcommand)]
    command: DlqCommand,
}

/// Which dead-letter operation.
#[derive(Subcommand, Debug)]
enum DlqCommand {
    /// Every dead-letter topic on the cluster's brokers, with its pending messages.
    List {
        /// Only the dead-letter topics of this (original) topic.
        #[arg(long)]
        topic: Option<Topic>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The pending dead letters of a group on a topic: origin, deliveries, last error and a
    /// preview of the value, oldest first.
    Show {
        #[command(flatten)]
        which: Which,
        /// At most this many per queue (1 to 1000).
        #[arg(long, default_value_t = 20,
              value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-produce pending dead letters to their original topic and queue, then mark them
    /// done: --all, or --offset N (the oldest pending one of --queue).
    Resend {
        #[command(flatten)]
        which: Which,
        /// Only the message at this offset of the dead-letter queue; it must be the oldest
        /// pending one there.
        #[arg(
            long,
            value_name = "N",
            conflicts_with = "all",
            required_unless_present = "all"
        )]
        offset: Option<u64>,
        /// The dead-letter queue of --offset (one per broker: 0).
        #[arg(long, value_name = "ID", default_value_t = 0)]
        queue: u32,
        /// Every pending dead letter.
        #[arg(long)]
        all: bool,
    },
    /// Mark pending dead letters done without resending them.
    Purge {
        #[command(flatten)]
        which: Which,
        /// Only the oldest N per queue (default: all).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
}

/// A group's dead-letter topic, named by the original topic and the group.
#[derive(Args, Debug)]
struct Which {
    /// The original topic, [area]-[serviceId].
    #[arg(long)]
    topic: Topic,
    /// The consumer group.
    #[arg(long)]
    group: GroupName,
}

impl Which {
    fn dead_letter_topic(&self) -> anyhow::Result<String> {
        protocol::retry::dead_letter_topic(&self.topic.to_string(), self.group.as_str())
            .with_context(|| format!("group {} has no dead-letter topic name", self.group))
    }
}

pub fn run(args: DlqArgs) -> anyhow::Result<ExitCode> {
    let client = args.bus.connect()?;
    let admin = Admin::new(&client);
    match args.command {
        DlqCommand::List { topic, json } => list(&admin, topic.as_ref(), json),
        DlqCommand::Show { which, limit, json } => {
            let dlq = which.dead_letter_topic()?;
            let answers = ask(&admin, &dlq, Command::DeadLetterShow, None, limit, None)?;
            show(&dlq, &answers, json)
        }
        DlqCommand::Resend {
            which,
            offset,
            queue,
            all: _,
        } => {
            let dlq = which.dead_letter_topic()?;
            let queue = offset.map(|_| queue);
            let answers = ask(&admin, &dlq, Command::DeadLetterResend, queue, 0, offset)?;
            let done: u64 = answers.iter().map(|(_, _, r)| r.done).sum();
            println!("resent {done} message{} from {dlq}", plural(done));
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Purge { which, limit } => {
            let dlq = which.dead_letter_topic()?;
            let answers = ask(
                &admin,
                &dlq,
                Command::DeadLetterPurge,
                None,
                limit.unwrap_or(0),
                None,
            )?;
            let done: u64 = answers.iter().map(|(_, _, r)| r.done).sum();
            println!("purged {done} message{} from {dlq}", plural(done));
            Ok(ExitCode::SUCCESS)
        }
    }
}

type Answers = Vec<(String, u32, DeadLetterReply)>;

fn ask(
    admin: &Admin,
    dlq: &str,
    command: Command,
    queue: Option<u32>,
    limit: u32,
    offset: Option<u64>,
) -> anyhow::Result<Answers> {
    admin
        .dead_letters_everywhere(dlq, command, queue, limit, offset)
        .with_context(|| format!("{} of {dlq}", command.name()))
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Every dead-letter topic the cluster's brokers hold (of `topic` when given), with the
/// messages pending in it.
fn list(admin: &Admin, topic: Option<&Topic>, json: bool) -> anyhow::Result<ExitCode> {
    let info = admin
        .cluster_info()
        .context("asking the nameservers for brokers")?;
    let mut topics = std::collections::BTreeSet::new();
    for broker in &info.brokers {
        let Some(port) = broker.shard_ports.first() else {
            continue;
        };
        let endpoint = format!("{}:{port}", broker.address);
        let listed = admin
            .list_topics(&endpoint)
            .with_context(|| format!("listing the topics of {}", broker.broker_id))?;
        for info in listed {
            let Some((origin, _)) = protocol::retry::split(&info.topic) else {
                continue;
            };
            if protocol::retry::kind(&info.topic) == protocol::retry::TopicKind::DeadLetter
                && topic.is_none_or(|t| t.to_string() == origin)
            {
                topics.insert(info.topic);
            }
        }
    }
    let mut rows = Vec::new();
    for dlq in &topics {
        let answers = ask(admin, dlq, Command::DeadLetterShow, None, 1, None)?;
        let pending: u64 = answers
            .iter()
            .map(|(_, _, r)| r.next_offset - r.pending_from)
            .sum();
        let stored: u64 = answers
            .iter()
            .map(|(_, _, r)| r.next_offset - r.start_offset)
            .sum();
        rows.push((dlq.clone(), pending, stored));
    }
    if json {
        let rows: Vec<_> = rows
            .iter()
            .map(|(topic, pending, stored)| {
                serde_json::json!({ "topic": topic, "pending": pending, "stored": stored })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no dead-letter topics");
    }
    for (topic, pending, stored) in rows {
        println!("{topic}  pending {pending}  stored {stored}");
    }
    Ok(ExitCode::SUCCESS)
}

fn show(dlq: &str, answers: &Answers, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        let letters: Vec<_> = answers
            .iter()
            .flat_map(|(endpoint, queue, reply)| {
                reply.letters.iter().map(move |l| {
                    serde_json::json!({
                        "broker": endpoint,
                        "queue": queue,
                        "offset": l.offset,
                        "origin_topic": l.origin_topic,
                        "origin_queue": l.origin_queue,
                        "origin_offset": l.origin_offset,
                        "deliveries": l.deliveries,
                        "reason": l.reason,
                        "timestamp_ms": l.timestamp_ms,
                        "key": printable(&l.key),
                        "value_preview": printable(&l.value_preview),
                        "value_len": l.value_len,
                    })
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&letters)?);
        return Ok(ExitCode::SUCCESS);
    }
    for (endpoint, queue, reply) in answers {
        println!(
            "{dlq} queue {queue} at {endpoint}: {} pending (offsets {}..{})",
            reply.next_offset - reply.pending_from,
            reply.pending_from,
            reply.next_offset
        );
        for l in &reply.letters {
            println!(
                "  offset {}  from {} queue {} offset {}  {} deliveries  reason {:?}\n    key={}  {} bytes: {}",
                l.offset,
                l.origin_topic,
                l.origin_queue,
                l.origin_offset,
                l.deliveries,
                l.reason,
                if l.key.is_empty() {
                    "-".to_owned()
                } else {
                    printable(&l.key)
                },
                l.value_len,
                printable(&l.value_preview)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
