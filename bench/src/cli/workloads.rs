//! Flags of the consume, publish → consume (e2e, fanout), scale and client-overhead
//! workloads. Each has message size, batching, producers, consumers, queues, flush mode and
//! duration as flags, with the defaults `all` runs.

use std::time::Duration;

use clap::{Args, ValueEnum};

use super::{DURATION_DEFAULT, Flush, parse_duration};

/// Measured time of one step of a sweep: long enough for stable figures, short enough that a
/// sweep of five or more steps stays around a minute.
pub const STEP_DURATION_DEFAULT: &str = "5s";
/// How long consumers wait after the window for messages sent inside it.
const DRAIN_DEFAULT: &str = "5s";

#[derive(Args, Debug, Clone)]
pub struct ConsumeArgs {
    /// Payload bytes per record.
    #[arg(long, default_value_t = 1024)]
    pub message_bytes: usize,
    /// Records pre-filled before the consumers start: the backlog they catch up on.
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,
    /// Members of the consumer group, each its own client.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Records a consumer lets the broker push ahead of processing (its credit window).
    #[arg(long, default_value_t = client::config::CREDIT_WINDOW_DEFAULT)]
    pub credit_window: u32,
    /// Queues of the benchmark topic (per broker).
    #[arg(long, default_value_t = 4)]
    pub queues: u32,
    /// Flush mode of the benchmark topic.
    #[arg(long, value_enum, default_value_t = Flush::Async)]
    pub flush: Flush,
    /// Largest batch the pre-filling producer coalesces, bytes.
    #[arg(long, default_value_t = client::config::BATCH_BYTES_MAX_DEFAULT)]
    pub batch_bytes: usize,
    /// Longest the read may take; the run ends there even if records remain.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
}

/// The offered rates of an open-loop sweep.
#[derive(Clone, Debug, PartialEq)]
pub enum Rates {
    /// Start at --rate-start and multiply by --rate-factor until the first saturated rate.
    Auto,
    /// Exactly these rates, msg/s, in this order.
    List(Vec<f64>),
}

/// Parses `auto` or a comma-separated list of positive rates.
fn parse_rates(text: &str) -> Result<Rates, String> {
    if text.trim() == "auto" {
        return Ok(Rates::Auto);
    }
    text.split(',')
        .map(|rate| match rate.trim().parse::<f64>() {
            Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
            _ => Err(format!(
                "{rate:?} is not a positive rate (use `auto` or e.g. 1000,5000,20000)"
            )),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Rates::List)
}

#[derive(Args, Debug, Clone)]
pub struct E2eArgs {
    /// Offered rates, msg/s in total: `auto` (double until saturated) or a list such as
    /// `1000,5000,20000,50000`.
    #[arg(long, default_value = "auto", value_parser = parse_rates, value_name = "auto|R,...")]
    pub rates: Rates,
    /// `--rates auto`: the first rate, msg/s.
    #[arg(long, default_value_t = 1000.0, value_name = "PER_S")]
    pub rate_start: f64,
    /// `--rates auto`: each rate is the previous one times this.
    #[arg(long, default_value_t = 2.0)]
    pub rate_factor: f64,
    /// `--rates auto`: most rates tried.
    #[arg(long, default_value_t = 10)]
    pub rate_steps_max: usize,
    /// Payload bytes per message (at least 9: the intended send time travels in the first
    /// bytes).
    #[arg(long, default_value_t = 1024)]
    pub message_bytes: usize,
    /// Producer threads, each its own client, sharing the offered rate equally.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Members of the (clustering) consumer group, each its own client.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Queues of the benchmark topic (per broker).
    #[arg(long, default_value_t = 4)]
    pub queues: u32,
    /// Flush mode of the benchmark topic.
    #[arg(long, value_enum, default_value_t = Flush::Async)]
    pub flush: Flush,
    /// How long the producer's batcher waits for more sends; 0 sends each message at once.
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    pub linger: Duration,
    /// Largest batch a producer coalesces, bytes (with --linger above 0).
    #[arg(long, default_value_t = client::config::BATCH_BYTES_MAX_DEFAULT)]
    pub batch_bytes: usize,
    /// Sends one producer may have unacknowledged before it waits (the wait is charged to the
    /// latency of the messages it delays).
    #[arg(long, default_value_t = client::config::IN_FLIGHT_SENDS_MAX_DEFAULT)]
    pub in_flight: usize,
    /// Measured time of each rate, after the warm-up.
    #[arg(long, default_value = STEP_DURATION_DEFAULT, value_parser = parse_duration)]
    pub duration: Duration,
    /// How long consumers wait after the window for the messages sent inside it; those still
    /// missing count as undelivered (and at this latency, a lower bound).
    #[arg(long, default_value = DRAIN_DEFAULT, value_parser = parse_duration)]
    pub drain: Duration,
}

/// Which fan-out modes to run.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FanoutMode {
    /// K consumer groups on one topic, one member each: every group gets every message.
    Multicast,
    /// K members of one broadcast group: every member gets every message.
    Broadcast,
    /// Multicast, then broadcast.
    Both,
}

#[derive(Args, Debug, Clone)]
pub struct FanoutArgs {
    /// Multicast, broadcast or both.
    #[arg(long, value_enum, default_value_t = FanoutMode::Both)]
    pub mode: FanoutMode,
    /// Consumers K: groups (multicast) or members (broadcast), each its own client.
    #[arg(long, default_value_t = 4)]
    pub consumers: usize,
    /// Offered rate, msg/s published in total (each is delivered K times).
    #[arg(long, default_value_t = 10_000.0, value_name = "PER_S")]
    pub rate: f64,
    /// Payload bytes per message (at least 9).
    #[arg(long, default_value_t = 1024)]
    pub message_bytes: usize,
    /// Producer threads, each its own client, sharing the rate equally.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Queues of the benchmark topic (per broker).
    #[arg(long, default_value_t = 4)]
    pub queues: u32,
    /// Flush mode of the benchmark topic.
    #[arg(long, value_enum, default_value_t = Flush::Async)]
    pub flush: Flush,
    /// How long the producer's batcher waits for more sends; 0 sends each message at once.
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    pub linger: Duration,
    /// Largest batch a producer coalesces, bytes (with --linger above 0).
    #[arg(long, default_value_t = client::config::BATCH_BYTES_MAX_DEFAULT)]
    pub batch_bytes: usize,
    /// Measured time of each mode, after the warm-up.
    #[arg(long, default_value = DURATION_DEFAULT, value_parser = parse_duration)]
    pub duration: Duration,
    /// How long consumers wait after the window for the messages sent inside it.
    #[arg(long, default_value = DRAIN_DEFAULT, value_parser = parse_duration)]
    pub drain: Duration,
}

/// Which scale sweeps to run.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleAxis {
    /// Queues 1 → 10,000 (--queue-steps), one producer connection.
    Queues,
    /// Producer connections 1 → 1,000 (--connection-steps), --queues queues.
    Connections,
    /// Queues, then connections.
    Both,
}

#[derive(Args, Debug, Clone)]
pub struct ScaleArgs {
    /// Which sweep: queues, connections or both.
    #[arg(long, value_enum, default_value_t = ScaleAxis::Both)]
    pub axis: ScaleAxis,
    /// Queue counts of the queues sweep.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,10,100,1000,10000",
        value_name = "N,..."
    )]
    pub queue_steps: Vec<u64>,
    /// Producer clients (connections) of the connections sweep.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,10,100,1000",
        value_name = "N,..."
    )]
    pub connection_steps: Vec<u64>,
    /// Queues of the connections sweep's topic (per broker).
    #[arg(long, default_value_t = 4)]
    pub queues: u32,
    /// Payload bytes per record.
    #[arg(long, default_value_t = 1024)]
    pub message_bytes: usize,
    /// Records sent to one producer before moving to the next; each producer's batch bound
    /// holds exactly this many, so every step sends batches of the same size.
    #[arg(long, default_value_t = 256)]
    pub burst: usize,
    /// How long a producer's batcher waits for more sends.
    #[arg(long, default_value = "1ms", value_parser = parse_duration)]
    pub linger: Duration,
    /// Sending threads; each drives its share of the producer clients in turn.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Flush mode of the benchmark topics.
    #[arg(long, value_enum, default_value_t = Flush::Async)]
    pub flush: Flush,
    /// Measured time of each step, after the warm-up.
    #[arg(long, default_value = STEP_DURATION_DEFAULT, value_parser = parse_duration)]
    pub duration: Duration,
}

#[derive(Args, Debug, Clone)]
pub struct OverheadArgs {
    /// Payload bytes of each request (the reply echoes it).
    #[arg(long, default_value_t = 256)]
    pub message_bytes: usize,
    /// Requester threads on each side (client and raw), one request at a time each.
    #[arg(long, default_value_t = 1)]
    pub requesters: usize,
    /// Queues of the request topic (per broker).
    #[arg(long, default_value_t = 1)]
    pub queues: u32,
    /// Flush mode of the request topic.
    #[arg(long, value_enum, default_value_t = Flush::Async)]
    pub flush: Flush,
    /// Measured time of each side, after the warm-up.
    #[arg(long, default_value = DURATION_DEFAULT, value_parser = parse_duration)]
    pub duration: Duration,
    /// Deadline of each request; a timeout fails the run.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_as_auto_or_a_list() {
        assert_eq!(parse_rates("auto"), Ok(Rates::Auto));
        assert_eq!(
            parse_rates("1000, 5000,2e4"),
            Ok(Rates::List(vec![1000.0, 5000.0, 20000.0]))
        );
        assert!(parse_rates("1000,-5").is_err());
        assert!(parse_rates("fast").is_err());
    }
}
