//! `defibus admin topic create|update|delete|list|stats`: topic administration over the
//! client's `Admin`, applied on every broker the nameservers list (or one, with `--broker`).

use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use client::{Admin, ClientError, TopicConfig, TopicInfo};
use protocol::codes::Status;
use protocol::control::{Acks, FlushMode, RedirectRule};
use protocol::names::Topic;

use super::shared::{BusArgs, table};

#[derive(Args, Debug)]
pub struct AdminArgs {
    #[command(flatten)]
    bus: BusArgs,
    /// Talk to this broker (host:port of any of its shards) instead of every broker the
    /// nameservers list.
    #[arg(long, value_name = "HOST:PORT", global = true)]
    broker: Option<String>,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Topics: create, change, delete, list, describe, statistics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Queues of replicated topics: move a queue's leadership.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Brokers: list the live brokers the nameservers know.
    #[command(subcommand)]
    Broker(BrokerCommand),
    /// The access control list: which principal may do what, where (needs admin_acl).
    #[command(subcommand)]
    Acl(super::acl::AclCommand),
    /// Tokens: issue, revoke and list the bearer tokens principals authenticate with
    /// (needs admin_acl).
    #[command(subcommand)]
    Token(super::acl::TokenCommand),
}

#[derive(Subcommand, Debug)]
enum BrokerCommand {
    /// Print every live broker: cluster, area, address, shard ports, topics and the age of
    /// its last registration.
    List,
    /// Move every replicated queue a broker leads to an in-sync follower (before
    /// maintenance), through the controller if the nameservers run one; waits until each
    /// move is routed. Exits 1 naming the queues that have no in-sync follower.
    Drain {
        /// The broker's id (as `admin broker list` shows it).
        #[arg(long)]
        broker_id: String,
    },
}

#[derive(Subcommand, Debug)]
enum QueueCommand {
    /// Start the next epoch of a replicated queue with a new leader.
    ///
    /// The leader is the live replica holding the most of the queue unless --leader names
    /// another; one holding less is refused unless --unclean (it could lose acknowledged
    /// records). Every live replica is told; those holding as much as the new leader stay
    /// in sync, the others catch up. The old leader, if it still runs, answers produces
    /// waiting for acknowledgement with `NotLeader` and follows.
    Elect {
        /// The topic, [area]-[serviceId].
        #[arg(long)]
        topic: Topic,
        /// The queue id.
        #[arg(long)]
        queue: u32,
        /// The broker id to lead [default: the live replica holding the most].
        #[arg(long)]
        leader: Option<String>,
        /// Elect --leader even if another replica holds more of the queue.
        #[arg(long)]
        unclean: bool,
    },
}

#[derive(Subcommand, Debug)]
enum TopicCommand {
    /// Create a topic on every broker. One that already has it with the same settings (the
    /// flags given, and the defaults below for the others) is left as it is; one that has it
    /// with other settings fails the command, naming them (change them with `admin topic
    /// update`).
    ///
    /// A broker registers a new topic with the nameservers before it answers, and create
    /// then checks that the nameservers route the topic to every broker it was created on:
    /// producers and consumers started afterwards find it. Not routed within 10 s (a
    /// nameserver down or slow) exits with code 2 (the topic was created). With --broker it
    /// does not wait.
    Create {
        /// The topic, [area]-[serviceId], e.g. A10-20190001.
        #[arg(long)]
        topic: Topic,
        #[command(flatten)]
        settings: TopicSettings,
    },
    /// Change a topic's settings on every broker that has it; unset flags keep their values.
    ///
    /// Routes show a new queue count after the broker's next registration (every 3 s by
    /// default).
    Update {
        /// The topic, [area]-[serviceId].
        #[arg(long)]
        topic: Topic,
        #[command(flatten)]
        settings: TopicSettings,
    },
    /// Delete a topic and its data on every broker that has it.
    Delete {
        /// The topic, [area]-[serviceId].
        #[arg(long)]
        topic: Topic,
    },
    /// Print a table of topics: queues, flush mode, depth limit and per-queue depths.
    List,
    /// Print each queue of a replicated topic: leader, epoch, in-sync replicas, commit point
    /// and each follower's lag in records, as the brokers report them.
    Describe {
        /// The topic, [area]-[serviceId].
        #[arg(long)]
        topic: Topic,
    },
    /// Print per-queue offsets and, per consumer group, delivered and committed offsets.
    ///
    /// Columns: START, the oldest offset the queue still holds (retention moves it); NEXT, the
    /// offset the next record gets; DATA, `ok` or `DAMAGED@offset` (the queue serves nothing
    /// past it until `defibus log repair`); EXPIRED_REQUESTS, requests dropped undelivered
    /// because their deadline passed first (since the broker started); then one row per
    /// group with a live member: DELIVERED, the next offset handed to it; COMMITTED, what it
    /// acknowledged; LAG, NEXT minus COMMITTED (or minus START before its first commit).
    Stats {
        /// Only this topic.
        #[arg(long)]
        topic: Option<Topic>,
    },
}

/// Topic settings; on create an unset flag takes the protocol default.
#[derive(Args, Debug, Default)]
struct TopicSettings {
    /// Queues per broker [create default: 4].
    #[arg(long)]
    queues: Option<u32>,
    /// When a produce is acknowledged: async (once buffered) or sync (after fdatasync)
    /// [create default: async].
    #[arg(long, value_enum)]
    flush: Option<Flush>,
    /// Unconsumed messages a queue may hold before produces are refused [create default:
    /// 500].
    #[arg(long)]
    max_queue_depth: Option<u64>,
    /// Delete data older than this many ms, or `none` [default: 259200000, three days].
    #[arg(long, value_name = "MS|none")]
    retention_age_ms: Option<Limit>,
    /// Delete the oldest data past this many bytes per queue, or `none` [default: none].
    #[arg(long, value_name = "BYTES|none")]
    retention_bytes: Option<Limit>,
    /// Dark launch: messages tagged FLAG go only to queues that the named instances of
    /// GROUP consume (an instance ending in `*` is a client-id prefix). Repeatable; replaces
    /// an existing rule for the same GROUP and FLAG [default: no rules].
    #[arg(long, value_name = "GROUP/FLAG=INSTANCE[,INSTANCE...]")]
    redirect: Vec<Redirect>,
    /// Remove every redirect rule before adding those given with --redirect.
    #[arg(long)]
    clear_redirects: bool,
    /// Let the broker follow the consumers: read and write queue counts become the largest
    /// number of same-area consumers of any clustering group (1 to 1024) [create default:
    /// false].
    #[arg(long, value_name = "BOOL")]
    dynamic_queues: Option<bool>,
    /// Copies of each queue, on that many brokers (the first by id), one leading each queue
    /// [create only; default: 1].
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=7))]
    replicas: Option<u8>,
    /// With --replicas above 1: acknowledge a produce once the leader holds it (`leader`) or
    /// once every in-sync replica does (`all`) [create only; default: leader].
    #[arg(long, value_name = "leader|all")]
    acks: Option<Acks>,
}

/// A `--redirect` rule as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Redirect(RedirectRule);

impl FromStr for Redirect {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let usage = "expected GROUP/FLAG=INSTANCE[,INSTANCE...]";
        let (selector, instances) = s.split_once('=').ok_or(usage)?;
        let (group, flag) = selector.split_once('/').ok_or(usage)?;
        let rule = RedirectRule {
            group: group.to_owned(),
            flag: flag.to_owned(),
            instances: instances.split(',').map(str::to_owned).collect(),
        };
        rule.validate().map_err(|e| e.to_string())?;
        Ok(Self(rule))
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Flush {
    /// Acknowledge once written to the shard's buffer; flushed on an interval or size.
    Async,
    /// Acknowledge after fdatasync (group-committed with concurrent appends).
    Sync,
}

impl From<Flush> for FlushMode {
    fn from(flush: Flush) -> Self {
        match flush {
            Flush::Async => FlushMode::Async,
            Flush::Sync => FlushMode::Sync,
        }
    }
}

/// A retention limit: a positive number, or `none` for no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Limit(Option<u64>);

impl FromStr for Limit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "none" {
            return Ok(Self(None));
        }
        match s.parse::<u64>() {
            Ok(0) => Err("0 would delete every message; use `none` for no limit".into()),
            Ok(n) => Ok(Self(Some(n))),
            Err(e) => Err(format!("expected a number or `none`: {e}")),
        }
    }
}

impl TopicSettings {
    /// `config` with the flags that were given applied.
    fn apply(&self, mut config: TopicConfig) -> TopicConfig {
        if let Some(queues) = self.queues {
            config.queue_count = queues;
            config.read_queue_count = queues;
            config.write_queue_count = queues;
        }
        if let Some(flush) = self.flush {
            config.flush_mode = flush.into();
        }
        if let Some(depth) = self.max_queue_depth {
            config.max_queue_depth = depth;
        }
        if let Some(Limit(age)) = self.retention_age_ms {
            config.retention_age_ms = age;
        }
        if let Some(Limit(bytes)) = self.retention_bytes {
            config.retention_bytes = bytes;
        }
        if let Some(dynamic) = self.dynamic_queues {
            config.dynamic_queues = dynamic;
        }
        if let Some(replicas) = self.replicas {
            config.replicas = replicas;
        }
        if let Some(acks) = self.acks {
            config.acks = acks;
        }
        if self.clear_redirects {
            config.redirects.clear();
        }
        for Redirect(rule) in &self.redirect {
            config
                .redirects
                .retain(|r| (&r.group, &r.flag) != (&rule.group, &rule.flag));
            config.redirects.push(rule.clone());
        }
        config
    }
}

/// The settings a broker reports for `topic`, as a config to apply flags to.
fn current_config(topic: &Topic, current: &TopicInfo) -> TopicConfig {
    TopicConfig {
        queue_count: current.queue_count,
        read_queue_count: current.read_queue_count,
        write_queue_count: current.write_queue_count,
        flush_mode: current.flush_mode,
        max_queue_depth: current.max_queue_depth,
        retention_bytes: current.retention_bytes,
        retention_age_ms: current.retention_age_ms,
        redirects: current.redirects.clone(),
        dynamic_queues: current.dynamic_queues,
        // A broker that predates replication reports 0: its topics have one copy.
        replicas: current.replicas.max(1),
        acks: current.acks,
        ..TopicConfig::new(topic)
    }
}

/// How the topic `current` differs from the one `create` asked for (its flags, and create's
/// defaults for those not given), one `name existing (asked new)` per setting; empty when
/// it is the same topic.
fn differences(current: &TopicConfig, asked: &TopicConfig) -> Vec<String> {
    let mut differ = Vec::new();
    let mut check = |name: &str, now: String, wanted: String| {
        if now != wanted {
            differ.push(format!("{name} {now} (asked {wanted})"));
        }
    };
    // Queues that follow their consumers have whatever count the consumers made.
    if !(current.dynamic_queues && asked.dynamic_queues) {
        check(
            "queues",
            current.queue_count.to_string(),
            asked.queue_count.to_string(),
        );
    }
    check(
        "flush",
        current.flush_mode.as_str().to_owned(),
        asked.flush_mode.as_str().to_owned(),
    );
    check(
        "max depth",
        current.max_queue_depth.to_string(),
        asked.max_queue_depth.to_string(),
    );
    check(
        "retention age ms",
        format!("{:?}", current.retention_age_ms),
        format!("{:?}", asked.retention_age_ms),
    );
    check(
        "retention bytes",
        format!("{:?}", current.retention_bytes),
        format!("{:?}", asked.retention_bytes),
    );
    check(
        "dynamic queues",
        current.dynamic_queues.to_string(),
        asked.dynamic_queues.to_string(),
    );
    check(
        "replicas",
        current.replicas.to_string(),
        asked.replicas.to_string(),
    );
    check(
        "acks",
        format!("{:?}", current.acks).to_lowercase(),
        format!("{:?}", asked.acks).to_lowercase(),
    );
    check(
        "redirects",
        current.redirects.len().to_string(),
        asked.redirects.len().to_string(),
    );
    if current.redirects != asked.redirects && current.redirects.len() == asked.redirects.len() {
        differ.push("redirect rules differ".to_owned());
    }
    differ
}

/// How long `create` waits for the nameservers to route a new topic: three registrations
/// at the default `register_interval_ms` (3000), and a margin.
const ROUTE_WAIT_MAX: Duration = Duration::from_secs(10);
/// How often `create` asks the nameservers for the new topic's route.
const ROUTE_POLL: Duration = Duration::from_millis(200);

/// A broker to administer: its id (or the address given) and a shard endpoint.
#[derive(Debug)]
pub(super) struct Broker {
    pub(super) id: String,
    pub(super) endpoint: String,
}

pub fn run(args: AdminArgs) -> anyhow::Result<ExitCode> {
    let client = args.bus.connect()?;
    let admin = Admin::new(&client);
    let command = match args.command {
        AdminCommand::Acl(command) => return super::acl::acl(&admin, command),
        AdminCommand::Token(command) => return super::acl::token(&admin, command),
        command => command,
    };
    let brokers = brokers(&admin, args.broker.as_deref())?;
    let command = match command {
        AdminCommand::Topic(command) => command,
        AdminCommand::Broker(BrokerCommand::List) => {
            list_brokers(&admin)?;
            return Ok(ExitCode::SUCCESS);
        }
        AdminCommand::Broker(BrokerCommand::Drain { broker_id }) => {
            super::replicas::drain(&admin, &brokers, &broker_id)?;
            return Ok(ExitCode::SUCCESS);
        }
        AdminCommand::Acl(_) | AdminCommand::Token(_) => unreachable!("answered above"),
        AdminCommand::Queue(QueueCommand::Elect {
            topic,
            queue,
            leader,
            unclean,
        }) => {
            super::replicas::elect(&admin, &brokers, &topic, queue, leader.as_deref(), unclean)?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    match command {
        TopicCommand::Create { topic, settings } if settings.replicas.unwrap_or(1) > 1 => {
            let config = settings.apply(TopicConfig::new(&topic));
            config.validate().context("topic settings")?;
            super::replicas::create(&admin, &brokers, &config)?;
            // Routed once every leader reports its queues (leaders go round-robin).
            let leaders = usize::from(config.replicas).min(config.queue_count as usize);
            wait_for_route(&admin, &brokers[..leaders], &topic)
        }
        TopicCommand::Create { topic, settings } => {
            create(&admin, &brokers, &topic, &settings)?;
            if args.broker.is_none() {
                wait_for_route(&admin, &brokers, &topic)?;
            }
            Ok(())
        }
        TopicCommand::Describe { topic } => super::replicas::describe(&admin, &brokers, &topic),
        TopicCommand::Update { topic, settings } => update(&admin, &brokers, &topic, &settings),
        TopicCommand::Delete { topic } => delete(&admin, &brokers, &topic),
        TopicCommand::List => list(&admin, &brokers),
        TopicCommand::Stats { topic } => stats(&admin, &brokers, topic.as_ref()),
    }?;
    Ok(ExitCode::SUCCESS)
}

/// The broker given with `--broker`, else every live broker the nameservers know.
pub(super) fn brokers(admin: &Admin, broker: Option<&str>) -> anyhow::Result<Vec<Broker>> {
    if let Some(endpoint) = broker {
        return Ok(vec![Broker {
            id: endpoint.to_owned(),
            endpoint: endpoint.to_owned(),
        }]);
    }
    let info = admin
        .cluster_info()
        .context("asking the nameservers for the brokers")?;
    let mut brokers: Vec<Broker> = info
        .brokers
        .iter()
        .filter_map(|b| {
            let port = b.shard_ports.first()?;
            Some(Broker {
                id: b.broker_id.clone(),
                endpoint: format!("{}:{port}", b.address),
            })
        })
        .collect();
    if brokers.is_empty() {
        bail!("the nameservers know no live broker (is one running and registered?)");
    }
    brokers.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(brokers)
}

fn create(
    admin: &Admin,
    brokers: &[Broker],
    topic: &Topic,
    settings: &TopicSettings,
) -> anyhow::Result<()> {
    let config = settings.apply(TopicConfig::new(topic));
    config.validate().context("topic settings")?;
    for broker in brokers {
        match admin.create_topic(&broker.endpoint, &config) {
            Ok(()) => println!(
                "created {topic} on {}: {} queues, flush {}, max depth {}",
                broker.id,
                config.queue_count,
                config.flush_mode.as_str(),
                config.max_queue_depth
            ),
            Err(ClientError::Status {
                status: Status::TopicExists,
                ..
            }) => {
                // Idempotent when the topic already is what was asked; an error when it is
                // not, so a script never goes on believing its settings are in force.
                let topics = admin
                    .list_topics(&broker.endpoint)
                    .with_context(|| format!("listing the topics of {}", broker.id))?;
                let current = topics
                    .iter()
                    .find(|t| t.topic == topic.to_string())
                    .map(|t| current_config(topic, t));
                let differ = current
                    .as_ref()
                    .map(|current| differences(current, &config))
                    .unwrap_or_default();
                if !differ.is_empty() {
                    bail!(
                        "{topic} already exists on {} with other settings: {}; change them \
                         with `defibus admin topic update --topic {topic} ...`",
                        broker.id,
                        differ.join(", ")
                    );
                }
                println!(
                    "{topic} already exists on {} with these settings: unchanged",
                    broker.id
                );
            }
            Err(e) => {
                return Err(e).with_context(|| format!("creating {topic} on {}", broker.id));
            }
        }
    }
    Ok(())
}

/// `admin broker list`.
fn list_brokers(admin: &Admin) -> anyhow::Result<()> {
    let mut info = admin
        .cluster_info()
        .context("asking the nameservers for the brokers")?;
    info.brokers.sort_by(|a, b| a.broker_id.cmp(&b.broker_id));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let rows: Vec<Vec<String>> = info
        .brokers
        .iter()
        .map(|b| {
            vec![
                b.broker_id.clone(),
                b.cluster.clone(),
                b.area.clone(),
                b.address.clone(),
                b.shard_ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                b.topic_count.to_string(),
                format!(
                    "{} ms ago",
                    now_ms.saturating_sub(b.last_heartbeat_ms).max(0)
                ),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "BROKER",
                "CLUSTER",
                "AREA",
                "ADDRESS",
                "SHARD PORTS",
                "TOPICS",
                "REGISTERED"
            ],
            &rows
        )
    );
    Ok(())
}

/// Waits until the nameservers route `topic` to every one of `brokers`.
fn wait_for_route(admin: &Admin, brokers: &[Broker], topic: &Topic) -> anyhow::Result<()> {
    let started = Instant::now();
    let name = topic.to_string();
    loop {
        let missing: Vec<&str> = match admin.topic_route(&name) {
            Ok(route) => brokers
                .iter()
                .filter(|b| !route.queues.iter().any(|q| q.broker_id == b.id))
                .map(|b| b.id.as_str())
                .collect(),
            Err(e) if e.is_retryable() => brokers.iter().map(|b| b.id.as_str()).collect(),
            Err(e) => return Err(e).context("asking the nameservers for the route"),
        };
        if missing.is_empty() {
            println!("{topic} is routable ({} ms)", started.elapsed().as_millis());
            return Ok(());
        }
        if started.elapsed() >= ROUTE_WAIT_MAX {
            return Err(anyhow::Error::new(ClientError::Timeout {
                after: ROUTE_WAIT_MAX,
            })
            .context(format!(
                "{topic} was created, but the nameservers do not route it to {} yet \
                 (are those brokers registered with these nameservers?)",
                missing.join(", ")
            )));
        }
        std::thread::sleep(ROUTE_POLL);
    }
}

fn update(
    admin: &Admin,
    brokers: &[Broker],
    topic: &Topic,
    settings: &TopicSettings,
) -> anyhow::Result<()> {
    let mut updated = 0;
    for broker in brokers {
        let topics = admin
            .list_topics(&broker.endpoint)
            .with_context(|| format!("listing the topics of {}", broker.id))?;
        let Some(current) = topics.iter().find(|t| t.topic == topic.to_string()) else {
            println!("{topic} does not exist on {}: skipped", broker.id);
            continue;
        };
        let config = settings.apply(current_config(topic, current));
        config.validate().context("topic settings")?;
        admin
            .update_topic(&broker.endpoint, &config)
            .with_context(|| format!("updating {topic} on {}", broker.id))?;
        println!(
            "updated {topic} on {}: {} queues, flush {}, max depth {}, {} redirect rule(s)",
            broker.id,
            config.queue_count,
            config.flush_mode.as_str(),
            config.max_queue_depth,
            config.redirects.len()
        );
        updated += 1;
    }
    if updated == 0 {
        bail!("no broker has topic {topic}");
    }
    Ok(())
}

fn delete(admin: &Admin, brokers: &[Broker], topic: &Topic) -> anyhow::Result<()> {
    let mut deleted = 0;
    for broker in brokers {
        match admin.delete_topic(&broker.endpoint, &topic.to_string()) {
            Ok(()) => {
                println!("deleted {topic} on {}", broker.id);
                deleted += 1;
            }
            Err(ClientError::Status {
                status: Status::UnknownTopic,
                ..
            }) => println!("{topic} does not exist on {}: skipped", broker.id),
            Err(e) => {
                return Err(e).with_context(|| format!("deleting {topic} on {}", broker.id));
            }
        }
    }
    if deleted == 0 {
        bail!("no broker has topic {topic}");
    }
    Ok(())
}

fn list(admin: &Admin, brokers: &[Broker]) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for broker in brokers {
        let topics = admin
            .list_topics(&broker.endpoint)
            .with_context(|| format!("listing the topics of {}", broker.id))?;
        rows.extend(topics.iter().map(|t| topic_row(&broker.id, t)));
    }
    print!(
        "{}",
        table(
            &[
                "BROKER",
                "TOPIC",
                "QUEUES",
                "READ/WRITE",
                "FLUSH",
                "MAX_DEPTH",
                "DEPTHS"
            ],
            &rows
        )
    );
    Ok(())
}

fn topic_row(broker: &str, topic: &TopicInfo) -> Vec<String> {
    let depths: Vec<String> = topic.queue_depths.iter().map(u64::to_string).collect();
    vec![
        broker.to_owned(),
        topic.topic.clone(),
        topic.queue_count.to_string(),
        format!("{}/{}", topic.read_queue_count, topic.write_queue_count),
        topic.flush_mode.as_str().to_owned(),
        topic.max_queue_depth.to_string(),
        depths.join(","),
    ]
}

fn stats(admin: &Admin, brokers: &[Broker], topic: Option<&Topic>) -> anyhow::Result<()> {
    let topic = topic.map(Topic::to_string);
    let mut rows = Vec::new();
    let mut damaged = Vec::new();
    let mut skipped = Vec::new();
    let mut replicas = Vec::new();
    for broker in brokers {
        let stats = admin
            .stats(&broker.endpoint)
            .with_context(|| format!("reading the statistics of {}", broker.id))?;
        let queues = stats
            .queues
            .iter()
            .filter(|q| topic.as_ref().is_none_or(|t| *t == q.topic));
        for queue in queues {
            if let Some(replication) = &queue.replication {
                replicas.push(format!(
                    "replica: {} {}/{}: {}",
                    broker.id,
                    queue.topic,
                    queue.queue_id,
                    describe_replication(replication)
                ));
            }
            for range in &queue.skipped {
                skipped.push(format!(
                    "skipped: {} {}/{}: offsets {}..{} hold no record ({})",
                    broker.id, queue.topic, queue.queue_id, range.from, range.to, range.reason
                ));
            }
            let state = match &queue.damage {
                Some(damage) => {
                    damaged.push(format!(
                        "{} {}/{}: {}",
                        broker.id, queue.topic, queue.queue_id, damage.detail
                    ));
                    format!("DAMAGED@{}", damage.offset)
                }
                None => "ok".to_owned(),
            };
            let cells = |group: &str, delivered: String, committed: String, lag: String| {
                vec![
                    broker.id.clone(),
                    queue.topic.clone(),
                    queue.queue_id.to_string(),
                    queue.start_offset.to_string(),
                    queue.next_offset.to_string(),
                    state.clone(),
                    queue.expired_requests.to_string(),
                    group.to_owned(),
                    delivered,
                    committed,
                    lag,
                ]
            };
            if queue.groups.is_empty() {
                rows.push(cells("-", "-".into(), "-".into(), "-".into()));
            }
            for group in &queue.groups {
                let committed = group.committed_offset;
                rows.push(cells(
                    &group.group,
                    group.delivered_offset.to_string(),
                    committed.map_or("-".into(), |c| c.to_string()),
                    queue
                        .next_offset
                        .saturating_sub(committed.unwrap_or(queue.start_offset))
                        .to_string(),
                ));
            }
        }
    }
    print!(
        "{}",
        table(
            &[
                "BROKER",
                "TOPIC",
                "QUEUE",
                "START",
                "NEXT",
                "DATA",
                "EXPIRED_REQUESTS",
                "GROUP",
                "DELIVERED",
                "COMMITTED",
                "LAG"
            ],
            &rows
        )
    );
    if !replicas.is_empty() {
        println!();
        for line in &replicas {
            println!("{line}");
        }
    }
    if !skipped.is_empty() {
        println!();
        for line in &skipped {
            println!("{line}");
        }
    }
    if !damaged.is_empty() {
        // Said where an operator looks: a damaged queue serves nothing from its damage on
        // until `defibus log repair`.
        println!();
        for line in &damaged {
            println!("damaged: {line}");
        }
        eprintln!(
            "{} queue(s) have damaged stored data and are not served past it; see `defibus log repair --help`",
            damaged.len()
        );
    }
    Ok(())
}

/// One replicated queue's state on one broker, in words: the role, the commit point and,
/// from a leader, each follower's durable end.
fn describe_replication(r: &protocol::control::QueueReplication) -> String {
    use protocol::control::ReplicaRole;
    let role = match r.role {
        ReplicaRole::Leader => "leader",
        ReplicaRole::Follower => "follower",
        ReplicaRole::Unassigned => "no leader",
    };
    let mut line = format!(
        "{role} in epoch {}, committed {} of {}",
        r.epoch, r.committed, r.log_end
    );
    for f in &r.followers {
        let state = match (f.in_sync, f.lagging, f.caught_up) {
            (true, true, _) => "lagging",
            (true, false, _) => "in sync",
            (false, _, true) => "caught up",
            (false, _, false) => "out of sync",
        };
        line.push_str(&format!("; {} {state} at {}", f.broker_id, f.durable_end));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_describes_its_followers() {
        use protocol::control::{FollowerStatus, QueueReplication, ReplicaRole};
        let follower = |id: &str, end, in_sync, lagging| FollowerStatus {
            broker_id: id.into(),
            durable_end: end,
            in_sync,
            lagging,
            caught_up: false,
        };
        let r = QueueReplication {
            queue_id: 0,
            epoch: 2,
            role: ReplicaRole::Leader,
            committed: 25,
            log_end: 30,
            followers: vec![
                follower("broker-b", 30, true, false),
                follower("broker-c", 12, true, true),
                follower("broker-d", 3, false, false),
            ],
            replicas: Vec::new(),
        };
        assert_eq!(
            describe_replication(&r),
            "leader in epoch 2, committed 25 of 30; broker-b in sync at 30; broker-c lagging \
             at 12; broker-d out of sync at 3"
        );
    }

    #[test]
    fn limits_are_positive_numbers_or_none() {
        assert_eq!("none".parse::<Limit>(), Ok(Limit(None)));
        assert_eq!("60000".parse::<Limit>(), Ok(Limit(Some(60_000))));
        assert!("0".parse::<Limit>().unwrap_err().contains("none"));
        assert!("-1".parse::<Limit>().is_err());
    }

    #[test]
    fn settings_override_only_what_was_given() {
        let topic: Topic = "A10-20190001".parse().unwrap();
        let defaults = TopicConfig::new(&topic);
        assert_eq!(TopicSettings::default().apply(defaults.clone()), defaults);
        let settings = TopicSettings {
            queues: Some(8),
            flush: Some(Flush::Sync),
            retention_age_ms: Some(Limit(None)),
            ..TopicSettings::default()
        };
        let config = settings.apply(defaults.clone());
        assert_eq!(
            (
                config.queue_count,
                config.read_queue_count,
                config.write_queue_count
            ),
            (8, 8, 8)
        );
        assert_eq!(config.flush_mode, FlushMode::Sync);
        assert_eq!(config.retention_age_ms, None);
        assert_eq!(config.max_queue_depth, defaults.max_queue_depth);
    }

    #[test]
    fn redirects_parse_and_replace_the_rule_for_their_group_and_flag() {
        let rule: Redirect = "svc/gray=canary-*,host@1#A10".parse().unwrap();
        assert_eq!(rule.0.instances, ["canary-*", "host@1#A10"]);
        assert!(
            "svc-gray=x"
                .parse::<Redirect>()
                .unwrap_err()
                .contains("GROUP/FLAG")
        );
        assert!(
            "svc/gray="
                .parse::<Redirect>()
                .unwrap_err()
                .contains("instance")
        );
        let mut config = TopicConfig::new(&"A10-1".parse().unwrap());
        config.redirects.push(rule.0.clone());
        let newer: Redirect = "svc/gray=v2-*".parse().unwrap();
        let settings = TopicSettings {
            redirect: vec![newer.clone()],
            ..TopicSettings::default()
        };
        assert_eq!(settings.apply(config.clone()).redirects, [newer.0]);
        let cleared = TopicSettings {
            clear_redirects: true,
            ..TopicSettings::default()
        };
        assert!(cleared.apply(config).redirects.is_empty());
    }
}

#[cfg(test)]
mod create_tests {
    use super::*;

    fn settings(args: &[&str]) -> TopicSettings {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            settings: TopicSettings,
        }
        use clap::Parser;
        Cli::try_parse_from(std::iter::once("create").chain(args.iter().copied()))
            .unwrap()
            .settings
    }

    #[test]
    fn the_same_topic_differs_in_nothing_and_another_names_each_setting() {
        let topic: Topic = "A10-20190002".parse().unwrap();
        let existing =
            settings(&["--queues", "2", "--flush", "sync"]).apply(TopicConfig::new(&topic));
        let same = settings(&["--queues", "2", "--flush", "sync"]).apply(TopicConfig::new(&topic));
        assert!(differences(&existing, &same).is_empty());
        // An omitted flag asks for create's default, not for whatever the topic has.
        let defaults = settings(&["--queues", "2"]).apply(TopicConfig::new(&topic));
        assert_eq!(
            differences(&existing, &defaults),
            ["flush sync (asked async)"]
        );
        let other =
            settings(&["--queues", "3", "--max-queue-depth", "9"]).apply(TopicConfig::new(&topic));
        assert_eq!(
            differences(&existing, &other),
            [
                "queues 2 (asked 3)",
                "flush sync (asked async)",
                "max depth 500 (asked 9)"
            ]
        );
    }

    #[test]
    fn queues_that_follow_their_consumers_are_not_compared_by_count() {
        let topic: Topic = "A10-20190002".parse().unwrap();
        let mut existing = settings(&["--dynamic-queues", "true"]).apply(TopicConfig::new(&topic));
        existing.queue_count = 7;
        let asked = settings(&["--dynamic-queues", "true"]).apply(TopicConfig::new(&topic));
        assert!(differences(&existing, &asked).is_empty());
    }
}
