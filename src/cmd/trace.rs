//! `defibus trace`: one message's life, asked of the broker shard owning each queue (see
//! `docs/ARCHITECTURE.md` §12 and the long help below).

use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use client::{
    Admin, CommitTime, GroupLife, MessageLife, MessageType, ReplySearch, TraceLookup, TraceReply,
};
use protocol::names::Topic;

use super::shared::{BusArgs, printable};

/// The semantics and limits, for `--help`.
const TRACE_HELP: &str = "\
Which message:
  --offset N        the record at offset N of each queue asked (it may sit inside a batch)
  --key K           the newest --matches records with key K among the newest --search
                    records of each queue asked (the broker reads at most its
                    trace.scan_bytes_max, 64 MiB by default, and says where it stopped)
  --offset and --key  the record at offset N, only if its key is K
  neither           the newest record of each queue asked
  --queue, --broker ask only that queue id, or only that broker's queues (offsets are per
                    queue: without --queue every queue is asked about offset N)

What it says, all from the broker holding the queue (its clock):
  stored     when the broker appended the message's batch, by which broker and shard, in
             which queue, and the batch (offset and record count)
  pushed     per group, the pushes that carried it (member, time, offsets); a broker
             remembers the latest trace.pushes_remembered (default 64) pushes per group and
             queue, each a range pushed to one member within one millisecond, since it
             started: an older push shows as \"before the remembered window\"
  committed  per group, when the group first committed past it: the first record of its
             offset journal (which stamps every commit with its time) past the message,
             stored after it; a group whose committed offset is not past it has not
  request    its deadline and requester; its reply, looked for in the reply queue of the
             shard that pushed it (where responders send replies), from its storing to its
             deadline plus one second; \"expired\" when none was stored and the deadline passed

Reads stored data on the brokers within trace.scan_bytes_max per lookup; needs `consume`
on the topic for every group (a grant whose group is `*`) when the bus checks grants.
--json prints the document GET /v1/trace answers.

Examples:
  defibus trace --topic A10-20190001 --queue 0 --offset 3
  defibus trace --topic A10-20190001 --key order-42 --json";

#[derive(Args, Debug)]
#[command(after_long_help = TRACE_HELP)]
pub struct TraceArgs {
    #[command(flatten)]
    bus: BusArgs,
    /// The topic, [area]-[serviceId].
    #[arg(long)]
    topic: Topic,
    /// The message at this offset (of --queue; of every queue without it).
    #[arg(long, value_name = "N")]
    offset: Option<u64>,
    /// The newest messages with this key (with --offset: the message at the offset, if its
    /// key is this).
    #[arg(long, value_name = "KEY")]
    key: Option<String>,
    /// Only this queue id.
    #[arg(long, value_name = "ID")]
    queue: Option<u32>,
    /// Only this broker's queues.
    #[arg(long, value_name = "BROKER_ID")]
    broker: Option<String>,
    /// With --key: how many of the newest records of each queue to search (1 to 1000000).
    #[arg(long, value_name = "RECORDS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    search: u64,
    /// With --key: the most messages shown per queue, newest kept (1 to 16).
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=16))]
    matches: u32,
    /// Print JSON (the document `GET /v1/trace` answers) instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: TraceArgs) -> anyhow::Result<ExitCode> {
    let client = args.bus.connect()?;
    let topic = args.topic.to_string();
    let mut lookup = match (args.offset, &args.key) {
        (Some(offset), _) => TraceLookup::offset(offset),
        (None, Some(key)) => TraceLookup::key(key.as_bytes().to_vec(), args.search, args.matches),
        (None, None) => TraceLookup::newest(),
    };
    lookup.queue_id = args.queue;
    lookup.broker_id = args.broker.clone();
    let mut replies = Admin::new(&client)
        .trace(&topic, &lookup)
        .with_context(|| format!("tracing a message of {topic}"))?;
    if let (Some(_), Some(key)) = (args.offset, &args.key) {
        for reply in &mut replies {
            reply.messages.retain(|m| m.key == key.as_bytes());
        }
    }
    if args.json {
        let answer = proxy::trace::TraceAnswer::of(&topic, &replies);
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print!("{}", text(&args, &replies));
    }
    if replies.iter().all(|r| r.messages.is_empty()) {
        anyhow::bail!("no such message in {topic} (see above)");
    }
    Ok(ExitCode::SUCCESS)
}

/// The answers as text: each message found, or why a queue has none.
fn text(args: &TraceArgs, replies: &[TraceReply]) -> String {
    if replies.is_empty() {
        return format!(
            "{} has no queue{}{}\n",
            args.topic,
            args.queue.map(|q| format!(" {q}")).unwrap_or_default(),
            args.broker
                .as_deref()
                .map(|b| format!(" on broker {b}"))
                .unwrap_or_default()
        );
    }
    let mut out = String::new();
    for reply in replies {
        if reply.messages.is_empty() {
            out += &format!(
                "{} queue {} ({}): {}\n",
                reply.topic,
                reply.queue_id,
                reply.broker_id,
                why_none(args, reply)
            );
        }
        for life in &reply.messages {
            out += &message(reply, life);
        }
    }
    out
}

/// Why a queue's answer holds no message.
fn why_none(args: &TraceArgs, reply: &TraceReply) -> String {
    match (args.offset, &args.key) {
        (Some(offset), _) if offset < reply.start_offset => format!(
            "offset {offset} is older than the oldest retained offset {} (retention removed it)",
            reply.start_offset
        ),
        (Some(offset), _) if offset >= reply.next_offset => format!(
            "offset {offset} is past the end (next offset {})",
            reply.next_offset
        ),
        (Some(offset), Some(key)) => {
            format!("the message at offset {offset} does not have key {key:?}")
        }
        (Some(offset), None) => format!("offset {offset} holds no record (a gap)"),
        (None, Some(key)) => format!(
            "no message with key {key:?} at offsets {}..{}",
            reply.searched_from, reply.searched_to
        ),
        (None, None) => "the queue holds no message".into(),
    }
}

/// One message's life, as lines.
fn message(reply: &TraceReply, life: &MessageLife) -> String {
    let stored = life.stored_ms;
    let since = |ms: i64| relative(ms - stored);
    let kind = MessageType::from_code(life.message_type).unwrap_or_default();
    let key = if life.key.is_empty() {
        "-".to_owned()
    } else {
        printable(&life.key)
    };
    let mut out = format!(
        "{} queue {} offset {} on {} shard {}\n",
        reply.topic, reply.queue_id, life.offset, reply.broker_id, reply.shard_id
    );
    out += &format!(
        "  stored       {}  in the batch at offset {} ({} record{})\n",
        time(stored),
        life.batch_base_offset,
        life.batch_records,
        if life.batch_records == 1 { "" } else { "s" }
    );
    out += &format!(
        "  created      {}  {}  key={key}  {} bytes\n",
        since(life.created_ms),
        kind.name(),
        life.value_bytes
    );
    if let Some(traceparent) = &life.traceparent {
        out += &format!("  traceparent  {traceparent}\n");
    }
    if let Some(tracestate) = &life.tracestate {
        out += &format!("  tracestate   {tracestate}\n");
    }
    if life.groups.is_empty() {
        out += "  groups       none consumes, committed on or was pushed this queue\n";
    }
    for group in &life.groups {
        out += &group_lines(group, life, &since);
    }
    if let Some(request) = &life.request {
        out += &format!(
            "  request      deadline {} ({}), reply to {}\n",
            since(request.deadline_ms as i64),
            time(request.deadline_ms as i64),
            request.reply_to
        );
        let expired = reply.now_ms > request.deadline_ms as i64;
        out += &match &request.reply {
            ReplySearch::Found(found) => format!(
                "    reply      stored {} in the reply queue of shard {} at offset {}{}\n",
                since(found.stored_ms),
                found.shard_id,
                found.offset,
                found
                    .traceparent
                    .as_deref()
                    .map(|t| format!(", traceparent {t}"))
                    .unwrap_or_default()
            ),
            ReplySearch::NotFound if expired => {
                "    reply      none: expired (no reply stored by its deadline)\n".into()
            }
            ReplySearch::NotFound => "    reply      none yet\n".into(),
            ReplySearch::After(at) => format!(
                "    reply      not found in the replies stored until {} (the search's byte budget ran out)\n",
                since(*at)
            ),
            ReplySearch::Unknown(why) => format!("    reply      unknown: {why}\n"),
        };
    }
    out
}

fn group_lines(group: &GroupLife, life: &MessageLife, since: &dyn Fn(i64) -> String) -> String {
    let assigned = if group.client_id.is_empty() {
        String::new()
    } else {
        format!(" (queue assigned to {})", group.client_id)
    };
    let mut out = format!("  group {}{assigned}\n", group.group);
    for push in &group.pushes {
        out += &format!(
            "    pushed     {} to {} (offsets {}..{})\n",
            since(push.at_ms),
            push.client_id,
            push.from_offset,
            push.to_offset
        );
    }
    if group.pushes.is_empty() {
        out += &if group.pushes_since_ms == i64::MAX {
            "    pushed     unknown (the broker remembers no pushes: trace.pushes_remembered = 0)\n"
                .to_owned()
        } else if life.stored_ms < group.pushes_since_ms {
            format!(
                "    pushed     before the remembered window (pushes remembered since {})\n",
                since(group.pushes_since_ms)
            )
        } else {
            "    pushed     not yet\n".to_owned()
        };
    }
    let now = group
        .committed_offset
        .map(|o| format!("committed offset now {o}"))
        .unwrap_or_else(|| "no committed offset".into());
    out += &match &group.committed {
        CommitTime::At(at) => format!("    committed  {} ({now})\n", since(*at)),
        CommitTime::NotCommitted => format!("    committed  no ({now})\n"),
        CommitTime::After(at) => format!(
            "    committed  after {} ({now}; the search's byte budget ran out)\n",
            since(*at)
        ),
        CommitTime::Unknown(why) => format!("    committed  yes, time unknown: {why} ({now})\n"),
    };
    out
}

/// `ms` since the Unix epoch as RFC 3339 UTC with milliseconds.
fn time(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(ms) => {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        Err(_) => format!("{ms} ms"),
    }
}

/// A time relative to the message's storing: `+12 ms`, `+1.250 s`, `-3 ms`.
fn relative(delta_ms: i64) -> String {
    let sign = if delta_ms < 0 { "-" } else { "+" };
    let abs = delta_ms.unsigned_abs();
    if abs < 1000 {
        format!("{sign}{abs} ms")
    } else {
        format!("{sign}{}.{:03} s", abs / 1000, abs % 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_instants_and_offsets_from_the_storing() {
        assert_eq!(time(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(relative(12), "+12 ms");
        assert_eq!(relative(1250), "+1.250 s");
        assert_eq!(relative(-3), "-3 ms");
    }
}
