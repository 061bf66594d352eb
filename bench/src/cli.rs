//! The command line: global settings, one subcommand per workload, and `all`.
//!
//! Every flag a workload reads is declared here, so `--help` of each subcommand documents the
//! whole workload. Workload modules take the parsed args; they never parse anything.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

/// Sizes and times the runs default to; `--smoke` replaces the times with [`SMOKE_WINDOW`].
pub const WARMUP_DEFAULT: &str = "2s";
pub const DURATION_DEFAULT: &str = "10s";
/// The measured window of a `--smoke` run: long enough to see figures, short enough for CI.
pub const SMOKE_WINDOW: Window = Window {
    warmup: Duration::from_millis(300),
    duration: Duration::from_secs(1),
};

#[derive(Parser, Debug)]
#[command(
    name = "defibus-bench",
    version,
    about = "Load generator for DeFiBus-rs: workloads against a broker, beside raw TCP baselines",
    long_about = "Load generator for DeFiBus-rs.\n\n\
        Starts an embedded nameserver + broker (data in a temporary directory) unless --target \
        names a running nameserver. Each workload is measured after a warm-up, beside a raw \
        loopback TCP baseline measured in the same run (--baseline=false skips it), and the \
        DESIGN §8 goals are printed as PASS/MISS. A progress line goes to stderr, the summary \
        table to stdout, and --json writes every figure to a file.\n\n\
        MB are 10^6 bytes of message payload; latencies are microseconds."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub workload: WorkloadCommand,
}

/// Settings shared by every workload.
#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// A running nameserver (`host:port`) to benchmark its cluster instead of an embedded one.
    /// Topics named `<area>-bench.<workload>.<unix ms>` are created on every broker it lists.
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub target: Option<String>,

    /// Measure the raw TCP baselines in the same run and print ours/baseline and the goals.
    #[arg(long, global = true, default_value_t = true, num_args = 0..=1,
          default_missing_value = "true", action = ArgAction::Set, value_name = "BOOL")]
    pub baseline: bool,

    /// Write every figure, ratio and goal to this file as JSON.
    #[arg(long, global = true, value_name = "PATH")]
    pub json: Option<PathBuf>,

    /// A seconds-long tiny run that only checks every figure is non-zero and finite (for CI);
    /// exits non-zero otherwise.
    #[arg(long, global = true)]
    pub smoke: bool,

    /// Time each workload and baseline runs before measuring starts (connections, routes,
    /// caches). Accepts `500ms`, `2s` or plain seconds.
    #[arg(long, global = true, default_value = WARMUP_DEFAULT, value_parser = parse_duration)]
    pub warmup: Duration,

    /// Area of the benchmark clients (and of the embedded broker).
    #[arg(long, global = true, default_value = "A10")]
    pub area: String,

    /// Embedded broker only: shards (executors); 0 means one per core.
    #[arg(long, global = true, default_value_t = 0)]
    pub shards: usize,

    /// Embedded broker only: executors spin this long before parking, µs (a wake-up costs
    /// ~25 µs; the broker's default is 0).
    #[arg(long, global = true, default_value_t = 0, value_name = "US")]
    pub spin_before_park_us: u64,

    /// Embedded broker only: data directory (default: a temporary directory, removed after).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum WorkloadCommand {
    /// Producer throughput: producers send records as fast as the broker acknowledges them.
    ///
    /// Each producer is its own client sending with callbacks; the client's batcher coalesces
    /// sends (--linger, --batch-bytes) and --in-flight bounds unacknowledged sends. Reports
    /// msg/s and MB/s of payload acknowledged in the window. Baseline: one raw loopback TCP
    /// stream with large writes (the ceiling). Goals: async ≥ 50%, sync ≥ 25% of it.
    Produce(ProduceArgs),
    /// Request-reply round trip, closed loop: each requester sends one request, waits for the
    /// echo Responder's reply, and sends the next.
    ///
    /// Latencies go to an HDR histogram (p50, p90, p99, p99.9, max). Requests are not batched.
    /// Baseline: a raw loopback TCP two-hop relay echo (client → relay → echo → relay →
    /// client, blocking sockets, TCP_NODELAY), one connection per requester, same size.
    /// Goals (1 requester, 256 B): p50 ≤ 3×, p99 ≤ 4× the relay.
    Rr(RrArgs),
    /// The proxy beside the native client, in one run: publish throughput over HTTP (batch
    /// and single) and WebSocket, and request-reply round trips over WebSocket and HTTP, each
    /// with the native client's figure as its baseline (ratio = proxy / native). Starts an
    /// embedded proxy in front of the target.
    Proxy(crate::workloads::proxy::ProxyArgs),
    /// The figures of record: produce async, produce sync and rr with their baselines, at
    /// the DESIGN §8 settings (1 KiB records; 1 requester, 256 B).
    All(AllArgs),
}

/// Flush mode of the benchmark topic.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    /// Acknowledged once in the shard's buffer; flushed on an interval or size.
    Async,
    /// Acknowledged after fdatasync, group-committed with concurrent appends.
    Sync,
}

impl Flush {
    pub fn name(self) -> &'static str {
        match self {
            Flush::Async => "async",
            Flush::Sync => "sync",
        }
    }
}

impl From<Flush> for protocol::control::FlushMode {
    fn from(flush: Flush) -> Self {
        match flush {
            Flush::Async => protocol::control::FlushMode::Async,
            Flush::Sync => protocol::control::FlushMode::Sync,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct ProduceArgs {
    /// Payload bytes per record.
    #[arg(long, default_value_t = 1024)]
    pub message_bytes: usize,
    /// Largest batch the client coalesces, bytes.
    #[arg(long, default_value_t = client::config::BATCH_BYTES_MAX_DEFAULT)]
    pub batch_bytes: usize,
    /// How long the batcher waits for more sends; 0 turns batching off (one record per
    /// request).
    #[arg(long, default_value = "1ms", value_parser = parse_duration)]
    pub linger: Duration,
    /// Sends one producer may have unacknowledged before it waits.
    #[arg(long, default_value_t = client::config::IN_FLIGHT_SENDS_MAX_DEFAULT)]
    pub in_flight: usize,
    /// Producer threads, each with its own client.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Queues of the benchmark topic (per broker).
    #[arg(long, default_value_t = 4)]
    pub queues: u32,
    /// Flush mode of the benchmark topic.
    #[arg(long, value_enum, default_value_t = Flush::Async)]
    pub flush: Flush,
    /// Measured time, after the warm-up.
    #[arg(long, default_value = DURATION_DEFAULT, value_parser = parse_duration)]
    pub duration: Duration,
    /// Bytes per write() of the raw TCP stream baseline.
    #[arg(long, default_value_t = 1 << 20)]
    pub baseline_write_bytes: usize,
}

#[derive(Args, Debug, Clone)]
pub struct RrArgs {
    /// Payload bytes of each request (the reply echoes it).
    #[arg(long, default_value_t = 256)]
    pub message_bytes: usize,
    /// Requester threads, each with its own client, each one request at a time.
    #[arg(long, default_value_t = 1)]
    pub requesters: usize,
    /// Queues of the request topic (per broker).
    #[arg(long, default_value_t = 1)]
    pub queues: u32,
    /// Flush mode of the request topic.
    #[arg(long, value_enum, default_value_t = Flush::Async)]
    pub flush: Flush,
    /// Measured time, after the warm-up.
    #[arg(long, default_value = DURATION_DEFAULT, value_parser = parse_duration)]
    pub duration: Duration,
    /// Deadline of each request; a timeout fails the run.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Args, Debug, Clone)]
pub struct AllArgs {
    /// Measured time of each workload and baseline, after the warm-up.
    #[arg(long, default_value = DURATION_DEFAULT, value_parser = parse_duration)]
    pub duration: Duration,
    /// Producer threads of the produce workloads.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
}

impl AllArgs {
    /// The produce workload of `all` in `flush` mode: the defaults, at this duration.
    pub fn produce(&self, flush: Flush) -> ProduceArgs {
        let mut args = defaults::<ProduceArgs>();
        args.flush = flush;
        args.duration = self.duration;
        args.producers = self.producers;
        args
    }

    /// The request-reply workload of `all`: the defaults, at this duration.
    pub fn rr(&self) -> RrArgs {
        let mut args = defaults::<RrArgs>();
        args.duration = self.duration;
        args
    }
}

/// A workload's args with every flag at its default, so `all` and the subcommands never
/// disagree on a default.
fn defaults<A: Args>() -> A {
    let command = A::augment_args(clap::Command::new("defaults").no_binary_name(true));
    let matches = command
        .try_get_matches_from(std::iter::empty::<String>())
        .expect("every workload flag has a default");
    A::from_arg_matches(&matches).expect("defaults parse")
}

/// Warm-up and measured time of one run.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub warmup: Duration,
    pub duration: Duration,
}

impl GlobalArgs {
    /// The window a workload measuring for `duration` runs in, shortened under `--smoke`.
    pub fn window(&self, duration: Duration) -> Window {
        if self.smoke {
            SMOKE_WINDOW
        } else {
            Window {
                warmup: self.warmup,
                duration,
            }
        }
    }
}

/// Parses `250ms`, `2s`, `1.5s` or plain (fractional) seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 1e-3)
    } else if let Some(us) = text.strip_suffix("us") {
        (us, 1e-6)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 500ms, 2s, 10)"))?;
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn all_uses_the_subcommand_defaults() {
        let all = AllArgs {
            duration: Duration::from_secs(3),
            producers: 1,
        };
        let produce = all.produce(Flush::Sync);
        assert_eq!(produce.message_bytes, 1024);
        assert_eq!(produce.flush, Flush::Sync);
        assert_eq!(produce.duration, Duration::from_secs(3));
        let rr = all.rr();
        assert_eq!((rr.message_bytes, rr.requesters), (256, 1));
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn baseline_is_on_unless_turned_off() {
        let cli = Cli::try_parse_from(["b", "rr"]).unwrap();
        assert!(cli.global.baseline);
        let cli = Cli::try_parse_from(["b", "rr", "--baseline=false"]).unwrap();
        assert!(!cli.global.baseline);
    }
}
