//! The command line: global settings, one subcommand per workload, and `all`.
//!
//! Every flag a workload reads is declared here or in [`workloads`] (the args of the
//! publish → consume, scale and client-overhead workloads), so `--help` of each subcommand
//! documents the whole workload. Workload modules take the parsed args; they never parse
//! anything.

mod workloads;

pub use workloads::{
    ConsumeArgs, E2eArgs, FanoutArgs, FanoutMode, OverheadArgs, Rates, ScaleArgs, ScaleAxis,
};

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
/// The longest drain of a `--smoke` run: at its light rates everything arrives in
/// milliseconds, unless something is broken.
pub const SMOKE_DRAIN: Duration = Duration::from_secs(2);

#[derive(Parser, Debug)]
#[command(
    name = "defibus-bench",
    version,
    about = "Load generator for DeFiBus-rs: workloads against a broker, beside baselines measured in the same run",
    long_about = "Load generator for DeFiBus-rs.\n\n\
        Starts an embedded nameserver + broker (data in a temporary directory) unless --target \
        names a running nameserver, and drives it with the real client and protocol. Each \
        workload is measured after a warm-up, beside a baseline measured in the same run \
        (raw loopback TCP, or the same exchange in raw protocol frames; --baseline=false \
        skips the TCP ones) or as a sweep over rates, sizes, queues or connections, and the \
        DESIGN §8 goals are printed as PASS/MISS. Latencies are HDR histograms (p50 to \
        p99.99 and max); open-loop workloads time each message from its intended send time, \
        so stalls are not hidden (coordinated omission). A progress line goes to stderr, the \
        summary table to stdout; --json writes every figure to a file and --plot-dir draws \
        SVG and PNG plots. `defibus bench` runs the same in-process.\n\n\
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
    /// Topics named `<area>-bench.<workload>.<unix ms>.<n>` are created on every broker it
    /// lists. Its connection limits must allow the scale sweep's clients.
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub target: Option<String>,

    /// Measure the raw TCP baselines in the same run and print ours/baseline and the goals.
    #[arg(long, global = true, default_value_t = true, num_args = 0..=1,
          default_missing_value = "true", action = ArgAction::Set, value_name = "BOOL")]
    pub baseline: bool,

    /// Write every figure, ratio and goal to this file as JSON.
    #[arg(long, global = true, value_name = "PATH")]
    pub json: Option<PathBuf>,

    /// A short tiny run that only checks every figure is non-zero and finite (for CI); exits
    /// non-zero otherwise. Windows shrink to 0.3 s warm-up + 1 s, sweeps to two steps (rates,
    /// sizes, the first and the largest of at most 100 queues and 10 clients), fan-out to two
    /// consumers, the consume backlog to 20,000 records and drains to 2 s.
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

    /// Embedded only: brokers in the embedded cluster, each with --shards shards (`produce
    /// --replicas N` needs at least N).
    #[arg(long, global = true, default_value_t = 1)]
    pub brokers: usize,

    /// Embedded broker only: executors spin this long before parking, µs (a wake-up costs
    /// ~25 µs). Default: the broker's (50 on machines with 4 or more cores, 0 below).
    #[arg(long, global = true, value_name = "US")]
    pub spin_before_park_us: Option<u64>,

    /// Embedded broker only: data directory (default: a temporary directory, removed after).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Write plots of the run here (created if missing), each as SVG and PNG: latency
    /// percentile spectra (rr, e2e, fanout), latency vs offered rate (e2e sweep), throughput
    /// vs message size (produce --sizes) and the scale sweeps.
    #[arg(long, global = true, value_name = "DIR")]
    pub plot_dir: Option<PathBuf>,
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
    /// Request-reply round trip: closed loop (each requester sends one request, waits for the
    /// echo Responder's reply, sends the next) or, with --rate, open loop.
    ///
    /// Latencies go to an HDR histogram (p50, p90, p99, p99.9, p99.99, max). Requests are not
    /// batched. Closed loop (`rr`): baseline a raw loopback TCP two-hop relay echo (client →
    /// relay → echo → relay → client, blocking sockets, TCP_NODELAY), one connection per
    /// requester, same size; goals (1 requester, 256 B): p50 ≤ 3×, p99 ≤ 4× the relay.
    /// Open loop (`rr-open`, --rate R): requests start at R per second in total whatever the
    /// replies do, and each latency is measured from the request's intended start time, so
    /// a stall is charged to every request it delayed (corrected for coordinated omission).
    Rr(RrArgs),
    /// Catch-up read: pre-fill a backlog of --messages records, then measure how fast a
    /// consumer group of --consumers members reads it (msg/s, MB/s).
    ///
    /// The backlog is produced first (batched, not measured); the consumers then subscribe
    /// from the earliest offset, each its own client, and the run ends when every record was
    /// read (or at --duration). Redeliveries after the group's first rebalance are counted
    /// and printed.
    Consume(ConsumeArgs),
    /// The cost of a nack: a pre-filled backlog (--messages, at most 20,000) read one
    /// message at a time by a pull consumer that nacks each (the broker copies it to the
    /// group's retry topic), beside the same read without nacks (ratio = nack / plain).
    Retry(ConsumeArgs),
    /// Delayed messages: lateness and produce cost. A consumer subscribes, --messages records
    /// are produced due evenly over --spread starting --lead from now on an otherwise idle
    /// broker, and each is timed on arrival against its deliver_at (p50 ... max; the issue's
    /// goal is p99 ≤ 10 ms in a release build). Then delayed produce throughput (due in an
    /// hour: held and indexed, not fired) beside plain produce, same settings (ratio).
    Delayed(DelayedArgs),
    /// Transactional (half) messages: one producer, closed loop, each message sent as a half
    /// and committed, beside plain single sends in the same run (ratio = half+commit / plain).
    Transactional(TransactionalArgs),
    /// Publish → consume latency at fixed offered rates, open loop, for a sweep of rates up to
    /// saturation.
    ///
    /// Producers send at the offered rate whatever the consumers do; each message carries its
    /// intended send time, and its latency is measured from that time to its arrival at a
    /// consumer (corrected for coordinated omission). Per rate: delivered msg/s and p50, p90,
    /// p99, p99.9, p99.99, max. A rate is saturated when less than 95% of it was delivered
    /// in the window or messages were still missing after the drain; `--rates auto` doubles
    /// the rate until the first saturated one.
    E2e(E2eArgs),
    /// Fan-out: one producer stream at a fixed rate delivered to K consumers, as multicast
    /// (K groups on one topic, each gets every message) and broadcast (K members of one
    /// broadcast group).
    ///
    /// Reports delivered msg/s and publish → consume latency (open loop, as `e2e`) per
    /// consumer and in total.
    Fanout(FanoutArgs),
    /// Flat cost: produce throughput as the queues go 1 → 10,000 and the producer
    /// connections 1 → 1,000, with the ratio of each step to the first.
    ///
    /// Every step sends the same batches (--burst records to one producer, then the next), so
    /// only the number of queues or connections changes. Queues beyond 1,024 (a topic's
    /// limit) are spread over several topics. Connections are producer clients, each with a
    /// connection per broker shard it sends to. The embedded broker and nameserver are started
    /// with connection limits above the largest step. Goal: each axis's last step ≥ 90% of
    /// its first (DESIGN §8: within 10%).
    Scale(ScaleArgs),
    /// Client overhead: the same request-reply exchange through the Rust client and written
    /// directly on the protocol crate (raw frames on blocking sockets), in one run.
    ///
    /// The raw requester and raw responder speak the wire protocol to the broker themselves:
    /// heartbeat, Request, Subscribe, Push, Reply, Credit, ReplyPush. The raw responder
    /// answers on the thread that read the push, so the client side uses an inline
    /// Responder (`rr --inline-responder`), which does the same. Goal (1 requester, 256 B):
    /// client rr p50 ≤ 1.2× the raw-protocol rr p50.
    Overhead(OverheadArgs),
    /// The proxy beside the native client, in one run: publish throughput over HTTP (batch
    /// and single) and WebSocket, and request-reply round trips over WebSocket and HTTP, each
    /// with the native client's figure as its baseline (ratio = proxy / native). Starts an
    /// embedded proxy in front of the target.
    Proxy(crate::workloads::proxy::ProxyArgs),
    /// TLS beside plaintext, in one run: request-reply round trips (1 requester, 256 B) and
    /// produce throughput (1 KiB, async) on an embedded cluster whose brokers speak mutual
    /// TLS 1.3 (certificates from a fresh development CA), each with the plaintext figure as
    /// its baseline (ratio = TLS / plaintext), and the cipher suite negotiated. Goals: rr p50
    /// ≤ 1.15×, produce MB/s ≥ 0.8× plaintext. Embedded only.
    Tls(crate::workloads::tls::TlsArgs),
    /// The figures of record: every workload at the DESIGN §8 settings with its baselines
    /// and goals (produce async and sync, rr, client overhead, rr open loop, consume, e2e
    /// sweep, fanout, scale, produce sizes).
    All(AllArgs),
    /// Redraw the plots of a saved run into --plot-dir from its --json file; runs nothing and
    /// starts no broker.
    Plot(PlotArgs),
}

#[derive(Args, Debug, Clone)]
pub struct PlotArgs {
    /// A report written by an earlier run with --json.
    #[arg(long, value_name = "PATH")]
    pub from: PathBuf,
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
    /// Sweep the payload size instead of --message-bytes: one run per size (e.g.
    /// `64,256,1024,4096,16384`), printed as throughput vs size with the ratio to the raw
    /// TCP stream.
    #[arg(long, value_delimiter = ',', value_name = "BYTES,...")]
    pub sizes: Vec<usize>,
    /// Copies of each queue. Above 1, the run measures the same workload on a topic with one
    /// replica (on one broker) and then with N (leaders spread over N brokers), and prints
    /// N beside 1: throughput, and the latency of single sends one at a time.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=7))]
    pub replicas: u8,
    /// With --replicas above 1: when a produce is acknowledged, by the leader alone or by
    /// every in-sync replica.
    #[arg(long, value_enum, default_value_t = AcksArg::All)]
    pub acks: AcksArg,
    /// Carry this W3C traceparent on every message (e.g.
    /// 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01): what tracing costs.
    #[arg(long, value_name = "TRACEPARENT")]
    pub traceparent: Option<client::TraceParent>,
    /// Produce without the idempotent producer (on by default, ARCHITECTURE §13.1): what
    /// idempotence costs, run beside a run without this flag.
    #[arg(long)]
    pub no_idempotence: bool,
}

/// `--acks`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcksArg {
    /// Once the leader holds the batch by the topic's flush mode.
    Leader,
    /// Once every in-sync replica holds it by the topic's flush mode.
    All,
}

impl From<AcksArg> for protocol::control::Acks {
    fn from(acks: AcksArg) -> Self {
        match acks {
            AcksArg::Leader => protocol::control::Acks::Leader,
            AcksArg::All => protocol::control::Acks::All,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct DelayedArgs {
    /// Records of the lateness run (a `--smoke` run keeps at most 1,000, due over 0.5 s
    /// from 0.5 s ahead).
    #[arg(long, default_value_t = 10_000)]
    pub messages: u64,
    /// How far ahead of the run's start the first record is due: longer than producing them
    /// takes, or the first ones are late because of the producer.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub lead: Duration,
    /// The records' due times are spread evenly over this long (the release rate is
    /// --messages / --spread).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub spread: Duration,
    /// Payload bytes per record.
    #[arg(long, default_value_t = 256)]
    pub message_bytes: usize,
    /// Queues of the benchmark topics.
    #[arg(long, default_value_t = 4)]
    pub queues: u32,
    /// Flush mode of the benchmark topics.
    #[arg(long, value_enum, default_value_t = Flush::Async)]
    pub flush: Flush,
    /// How long the batcher waits for more sends.
    #[arg(long, default_value = "1ms", value_parser = parse_duration)]
    pub linger: Duration,
    /// Measured time of each produce-throughput run, after the warm-up.
    #[arg(long, default_value = DURATION_DEFAULT, value_parser = parse_duration)]
    pub duration: Duration,
}

#[derive(Args, Debug, Clone)]
pub struct TransactionalArgs {
    /// Payload bytes per record.
    #[arg(long, default_value_t = 256)]
    pub message_bytes: usize,
    /// Queues of the benchmark topics.
    #[arg(long, default_value_t = 4)]
    pub queues: u32,
    /// Flush mode of the benchmark topics.
    #[arg(long, value_enum, default_value_t = Flush::Async)]
    pub flush: Flush,
    /// Measured time of each run, after the warm-up.
    #[arg(long, default_value = DURATION_DEFAULT, value_parser = parse_duration)]
    pub duration: Duration,
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
    /// Deadline of each request; in the closed loop a timeout fails the run, in the open
    /// loop it is counted as an error and timed at the deadline.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Open loop: start this many requests per second in total (split over the requesters),
    /// whatever the replies do, and time each from its intended start. Without it, closed
    /// loop.
    #[arg(long, value_name = "PER_S")]
    pub rate: Option<f64>,
    /// Run the echo responder's handler inline, on its connections' reader threads
    /// (`ResponderOptions::inline`), instead of on a handler thread of its own.
    #[arg(long)]
    pub inline_responder: bool,
}

#[derive(Args, Debug, Clone)]
pub struct AllArgs {
    /// Measured time of each workload and baseline, after the warm-up.
    #[arg(long, default_value = DURATION_DEFAULT, value_parser = parse_duration)]
    pub duration: Duration,
    /// Producer threads of the produce workloads.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Measured time of each step of the sweeps (e2e rates, scale steps, produce sizes).
    #[arg(long, default_value = workloads::STEP_DURATION_DEFAULT, value_parser = parse_duration)]
    pub step_duration: Duration,
    /// Offered rate of `rr` in open loop, requests per second.
    #[arg(long, default_value_t = 1000.0, value_name = "PER_S")]
    pub rr_rate: f64,
    /// Payload sizes of the produce size sweep.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "BYTES,...",
        default_value = "64,256,1024,4096,16384"
    )]
    pub sizes: Vec<usize>,
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

    /// `rr` in open loop at `--rr-rate`.
    pub fn rr_open(&self) -> RrArgs {
        let mut args = self.rr();
        args.rate = Some(self.rr_rate);
        args
    }

    /// The produce size sweep of `all`: async flush, at the step duration.
    pub fn produce_sizes(&self) -> ProduceArgs {
        let mut args = self.produce(Flush::Async);
        args.duration = self.step_duration;
        args.sizes = self.sizes.clone();
        args
    }

    /// The client-overhead workload of `all`: the defaults, at this duration.
    pub fn overhead(&self) -> OverheadArgs {
        let mut args = defaults::<OverheadArgs>();
        args.duration = self.duration;
        args
    }

    /// The catch-up read of `all`: the defaults (its own time cap).
    pub fn consume(&self) -> ConsumeArgs {
        defaults::<ConsumeArgs>()
    }

    /// The e2e sweep of `all`: the defaults, each rate at the step duration.
    pub fn e2e(&self) -> E2eArgs {
        let mut args = defaults::<E2eArgs>();
        args.duration = self.step_duration;
        args
    }

    /// Fan-out of `all`: both modes, at this duration.
    pub fn fanout(&self) -> FanoutArgs {
        let mut args = defaults::<FanoutArgs>();
        args.duration = self.duration;
        args
    }

    /// The scale sweeps of `all`: both axes, each step at the step duration.
    pub fn scale(&self) -> ScaleArgs {
        let mut args = defaults::<ScaleArgs>();
        args.duration = self.step_duration;
        args
    }
}

/// A workload's args with every flag at its default, so `all` and the subcommands never
/// disagree on a default.
pub(crate) fn defaults<A: Args>() -> A {
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

    /// The drain after an open-loop window, shortened under `--smoke`.
    pub fn drain(&self, drain: Duration) -> Duration {
        if self.smoke {
            drain.min(SMOKE_DRAIN)
        } else {
            drain
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
            step_duration: Duration::from_secs(2),
            rr_rate: 500.0,
            sizes: vec![64, 1024],
        };
        let produce = all.produce(Flush::Sync);
        assert_eq!(produce.message_bytes, 1024);
        assert_eq!(produce.flush, Flush::Sync);
        assert_eq!(produce.duration, Duration::from_secs(3));
        let rr = all.rr();
        assert_eq!((rr.message_bytes, rr.requesters, rr.rate), (256, 1, None));
        assert_eq!(all.rr_open().rate, Some(500.0));
        assert_eq!(all.produce_sizes().sizes, [64, 1024]);
        assert_eq!(all.e2e().duration, Duration::from_secs(2));
        assert_eq!(all.scale().duration, Duration::from_secs(2));
        assert_eq!(all.overhead().duration, Duration::from_secs(3));
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
