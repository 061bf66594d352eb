//! `admin topic create --replicas`, `admin topic describe` and `admin queue elect`: replicated
//! queues as an operator sees them.
//!
//! Roles are assigned with `QueueRole`, the command the controller sends (docs/ARCHITECTURE.md
//! §8). Until the controller runs in the nameservers, these commands play its part by hand:
//! `create` assigns epoch 1 (leaders spread over the replicas), `elect` moves a queue's
//! leadership to a replica for the next epoch. `describe` reads what every broker reports.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use client::{Admin, TopicConfig};
use protocol::control::{QueueAssignment, QueueReplication, ReplicaRole};
use protocol::names::Topic;

use super::admin::Broker;
use super::shared::table;

/// What one broker reports of one replicated queue, with its shard endpoint for the queue.
struct Report {
    broker: String,
    /// `host:port` of the shard owning the queue on this broker.
    endpoint: String,
    replication: QueueReplication,
}

/// Each replicated queue's reports, by queue id.
type Reports = BTreeMap<u32, Vec<Report>>;

/// Every broker's reports of `topic`'s replicated queues, by queue id; and the brokers
/// that hold the topic.
fn reports(
    admin: &Admin,
    brokers: &[Broker],
    topic: &str,
) -> anyhow::Result<(Reports, Vec<String>)> {
    let mut by_queue: BTreeMap<u32, Vec<Report>> = BTreeMap::new();
    let mut holders = Vec::new();
    for broker in brokers {
        // A dead broker stays registered until it expires: it holds nothing we can read.
        let stats = match admin.stats(&broker.endpoint) {
            Ok(stats) => stats,
            Err(
                e @ (client::ClientError::Io { .. }
                | client::ClientError::Disconnected { .. }
                | client::ClientError::Timeout { .. }),
            ) => {
                eprintln!("{} does not answer ({e}): left out", broker.id);
                continue;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("reading the statistics of {}", broker.id));
            }
        };
        let host = broker
            .endpoint
            .rsplit_once(':')
            .map_or(broker.endpoint.as_str(), |(h, _)| h);
        let mut holds = false;
        for queue in stats.queues.iter().filter(|q| q.topic == topic) {
            holds = true;
            let Some(replication) = &queue.replication else {
                continue;
            };
            let port = shard_port(admin, &broker.endpoint, queue.shard_id)?;
            by_queue.entry(queue.queue_id).or_default().push(Report {
                broker: stats.broker_id.clone(),
                endpoint: format!("{host}:{port}"),
                replication: replication.clone(),
            });
        }
        if holds {
            holders.push(stats.broker_id.clone());
        }
    }
    Ok((by_queue, holders))
}

/// The port of shard `shard_id` of the broker at `endpoint`, from the nameservers' view.
fn shard_port(admin: &Admin, endpoint: &str, shard_id: u32) -> anyhow::Result<u16> {
    let info = admin.cluster_info().context("listing the brokers")?;
    let port: u16 = endpoint
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .context("a broker endpoint is host:port")?;
    info.brokers
        .iter()
        .find(|b| b.shard_ports.contains(&port))
        .and_then(|b| b.shard_ports.get(shard_id as usize).copied())
        .with_context(|| format!("no registered broker has the shard port {port}"))
}

/// The shard endpoint owning `queue_id` of `topic` on a broker, from its registration.
fn owner_endpoint(
    admin: &Admin,
    broker_id: &str,
    topic: &str,
    queue_id: u32,
) -> anyhow::Result<String> {
    let info = admin.cluster_info().context("listing the brokers")?;
    let broker = info
        .brokers
        .iter()
        .find(|b| b.broker_id == broker_id)
        .with_context(|| format!("{broker_id} is not registered with the nameservers"))?;
    let shard = protocol::routing::queue_shard(topic, queue_id, broker.shard_ports.len());
    let port = broker
        .shard_ports
        .get(shard)
        .with_context(|| format!("{broker_id} registered no shard ports"))?;
    Ok(format!("{}:{port}", broker.address))
}

/// `admin topic create` with more than one replica: the topic on the first `replicas`
/// brokers (by id), then epoch 1 of every queue, leaders spread over them.
pub(super) fn create(
    admin: &Admin,
    brokers: &[Broker],
    config: &TopicConfig,
) -> anyhow::Result<()> {
    let replicas = usize::from(config.replicas);
    if brokers.len() < replicas {
        bail!(
            "{} replicas need {replicas} brokers; the nameservers know {} ({})",
            config.replicas,
            brokers.len(),
            brokers
                .iter()
                .map(|b| b.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let chosen = &brokers[..replicas];
    for broker in chosen {
        admin
            .create_topic(&broker.endpoint, config)
            .with_context(|| format!("creating {} on {}", config.topic, broker.id))?;
    }
    let ids: Vec<String> = chosen.iter().map(|b| b.id.clone()).collect();
    // With a controller in the nameservers, it decides and tells the brokers (and fails
    // over by itself); without one, this command assigns epoch 1.
    let replicas_count = ids.len();
    let placement: Vec<Vec<String>> = (0..config.queue_count as usize)
        .map(|q| {
            let mut replicas = ids.clone();
            replicas.rotate_left(q % replicas_count);
            replicas
        })
        .collect();
    let proposal = controller::Command::CreateTopic {
        topic: config.topic.clone(),
        replicas: config.replicas,
        acks: match config.acks {
            protocol::control::Acks::Leader => controller::Acks::Leader,
            protocol::control::Acks::All => controller::Acks::All,
        },
        assignment: placement,
    };
    match admin.controller_propose(&serde_json::to_vec(&proposal)?) {
        Ok(_) => {
            println!(
                "created {} with {} queues, {} replicas on {} (acks={}); the controller assigns \
                 the leaders",
                config.topic,
                config.queue_count,
                config.replicas,
                ids.join(", "),
                config.acks
            );
            return Ok(());
        }
        Err(client::ClientError::Status {
            status: protocol::codes::Status::UnknownCommand,
            ..
        }) => {}
        Err(e) => return Err(e).context("proposing the topic to the controller"),
    }
    for queue_id in 0..config.queue_count {
        let leader = &ids[queue_id as usize % replicas];
        let assignment = QueueAssignment {
            topic: config.topic.clone(),
            queue_id,
            epoch: 1,
            leader: leader.clone(),
            leader_endpoint: owner_endpoint(admin, leader, &config.topic, queue_id)?,
            replicas: ids.clone(),
            in_sync: ids.clone(),
        };
        // The leader first: its followers then find it leading when they first fetch.
        let mut order: Vec<&Broker> = chosen.iter().collect();
        order.sort_by_key(|b| b.id != *leader);
        for broker in order {
            admin
                .assign_queue_role(&broker.endpoint, &assignment)
                .with_context(|| format!("assigning queue {queue_id} on {}", broker.id))?;
        }
    }
    println!(
        "created {} with {} queues, {} replicas on {} (acks={}); leaders: {}",
        config.topic,
        config.queue_count,
        config.replicas,
        ids.join(", "),
        config.acks,
        (0..config.queue_count)
            .map(|q| format!("{q}→{}", ids[q as usize % replicas]))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}

/// `admin topic describe`: each replicated queue's leader, epoch, in-sync set and each
/// follower's lag, as the brokers report them.
pub(super) fn describe(admin: &Admin, brokers: &[Broker], topic: &Topic) -> anyhow::Result<()> {
    let name = topic.to_string();
    let (by_queue, holders) = reports(admin, brokers, &name)?;
    if holders.is_empty() {
        bail!("no live broker holds {topic}");
    }
    if by_queue.is_empty() {
        println!(
            "{topic} has one replica of each queue, on {}",
            holders.join(", ")
        );
        return Ok(());
    }
    let mut rows = Vec::new();
    for (queue_id, reports) in &by_queue {
        let leader = reports
            .iter()
            .filter(|r| r.replication.role == ReplicaRole::Leader)
            .max_by_key(|r| r.replication.epoch);
        let epoch = reports
            .iter()
            .map(|r| r.replication.epoch)
            .max()
            .unwrap_or(0);
        let Some(leader) = leader else {
            rows.push(vec![
                queue_id.to_string(),
                epoch.to_string(),
                "none".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
            continue;
        };
        let r = &leader.replication;
        let mut in_sync = vec![leader.broker.clone()];
        let mut lags = Vec::new();
        for f in &r.followers {
            if f.in_sync {
                in_sync.push(f.broker_id.clone());
            }
            let state = match (f.in_sync, f.lagging) {
                (true, false) => "",
                (true, true) => " lagging",
                (false, _) => " out of sync",
            };
            lags.push(format!(
                "{}:{}{state}",
                f.broker_id,
                r.log_end.saturating_sub(f.durable_end)
            ));
        }
        rows.push(vec![
            queue_id.to_string(),
            r.epoch.to_string(),
            leader.broker.clone(),
            in_sync.join(","),
            format!("{} / {}", r.committed, r.log_end),
            lags.join(" "),
        ]);
    }
    print!(
        "{}",
        table(
            &[
                "QUEUE",
                "EPOCH",
                "LEADER",
                "IN SYNC",
                "COMMITTED / END",
                "FOLLOWER LAG"
            ],
            &rows
        )
    );
    Ok(())
}

/// `admin queue elect`: the next epoch of one queue, led by `leader` (by default the live
/// replica holding the most).
pub(super) fn elect(
    admin: &Admin,
    brokers: &[Broker],
    topic: &Topic,
    queue_id: u32,
    leader: Option<&str>,
    unclean: bool,
) -> anyhow::Result<()> {
    let name = topic.to_string();
    let (mut by_queue, holders) = reports(admin, brokers, &name)?;
    let Some(reports) = by_queue.remove(&queue_id) else {
        bail!("no live broker reports queue {queue_id} of {topic} as replicated");
    };
    let epoch = reports
        .iter()
        .map(|r| r.replication.epoch)
        .max()
        .unwrap_or(0)
        + 1;
    let most = reports
        .iter()
        .max_by_key(|r| (r.replication.log_end, r.replication.epoch))
        .context("no replica reports the queue")?;
    let chosen = match leader {
        Some(id) => reports
            .iter()
            .find(|r| r.broker == id)
            .with_context(|| format!("{id} is not a live replica of queue {queue_id}"))?,
        None => most,
    };
    if chosen.replication.log_end < most.replication.log_end && !unclean {
        bail!(
            "{} holds queue {queue_id} up to offset {}, {} up to {}: electing it could lose \
             acknowledged records; pass --unclean to elect it anyway",
            chosen.broker,
            chosen.replication.log_end,
            most.broker,
            most.replication.log_end
        );
    }
    // Replicas: as the last assignment named them (a dead one stays a replica), else every
    // live broker that holds the topic.
    let mut replicas: Vec<String> = reports
        .iter()
        .flat_map(|r| r.replication.replicas.iter().cloned())
        .collect();
    if replicas.is_empty() {
        replicas = holders;
    }
    replicas.sort();
    replicas.dedup();
    let in_sync: Vec<String> = reports
        .iter()
        .filter(|r| {
            r.broker == chosen.broker || r.replication.log_end >= chosen.replication.log_end
        })
        .map(|r| r.broker.clone())
        .collect();
    let assignment = QueueAssignment {
        topic: name.clone(),
        queue_id,
        epoch,
        leader: chosen.broker.clone(),
        leader_endpoint: chosen.endpoint.clone(),
        replicas,
        in_sync: in_sync.clone(),
    };
    // The new leader first: its followers then find it leading when they fetch.
    let mut order: Vec<&Report> = reports.iter().collect();
    order.sort_by_key(|r| r.broker != chosen.broker);
    for r in order {
        admin
            .assign_queue_role(&r.endpoint, &assignment)
            .with_context(|| format!("telling {} of epoch {epoch}", r.broker))?;
    }
    println!(
        "queue {queue_id} of {topic}: {} leads in epoch {epoch} from offset {}; in sync: {}",
        chosen.broker,
        chosen.replication.log_end,
        in_sync.join(", ")
    );
    wait_for_leader(admin, &name, queue_id, &chosen.broker)
}

/// How long `elect` waits for the nameservers to route the queue to its new leader: the
/// leader reports its role at its next registration (every 3 s by default).
const ROUTE_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits until the nameservers route `queue_id` of `topic` to `leader`, so producers started
/// afterwards send there.
fn wait_for_leader(admin: &Admin, topic: &str, queue_id: u32, leader: &str) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    loop {
        let routed = admin.topic_route(topic).is_ok_and(|route| {
            route
                .queues
                .iter()
                .any(|q| q.queue_id == queue_id && q.broker_id == leader)
        });
        if routed {
            println!("routed to {leader} ({} ms)", started.elapsed().as_millis());
            return Ok(());
        }
        if started.elapsed() >= ROUTE_WAIT_MAX {
            bail!(
                "{leader} leads queue {queue_id} of {topic}, but the nameservers do not route it \
                 there after {ROUTE_WAIT_MAX:?} (is {leader} registered with them?)"
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// `admin broker drain`: moves every leadership `broker_id` holds to one of the queue's
/// in-sync followers, through the controller when the nameservers run one (an `ElectLeader`
/// proposal) and with `elect` otherwise; prints each move. A queue with no in-sync follower
/// stays where it is, and is named.
pub(super) fn drain(admin: &Admin, brokers: &[Broker], broker_id: &str) -> anyhow::Result<()> {
    let broker = brokers
        .iter()
        .find(|b| b.id == broker_id)
        .with_context(|| format!("{broker_id} is not a live broker the nameservers know"))?;
    let stats = admin
        .stats(&broker.endpoint)
        .with_context(|| format!("reading the statistics of {broker_id}"))?;
    let led: Vec<_> = stats
        .queues
        .iter()
        .filter_map(|q| {
            let r = q.replication.as_ref()?;
            (r.role == ReplicaRole::Leader).then(|| (q.topic.clone(), q.queue_id, r.clone()))
        })
        .collect();
    if led.is_empty() {
        println!("{broker_id} leads no replicated queue");
        return Ok(());
    }
    let mut stuck = Vec::new();
    for (topic, queue_id, r) in led {
        let mut candidates: Vec<&str> = r
            .followers
            .iter()
            .filter(|f| f.in_sync)
            .map(|f| f.broker_id.as_str())
            .collect();
        candidates.sort_unstable();
        let Some(next) = candidates.first().copied() else {
            stuck.push(format!("{topic}/{queue_id}"));
            continue;
        };
        let proposal = controller::Command::ElectLeader {
            topic: topic.clone(),
            queue: queue_id,
            leader: Some(next.to_owned()),
            expected_epoch: r.epoch,
            unclean: false,
        };
        match admin.controller_propose(&serde_json::to_vec(&proposal)?) {
            Ok(_) => {
                println!(
                    "queue {queue_id} of {topic}: {next} leads from epoch {} (the controller \
                     tells the brokers)",
                    r.epoch + 1
                );
                wait_for_leader(admin, &topic, queue_id, next)?;
            }
            Err(client::ClientError::Status {
                status: protocol::codes::Status::UnknownCommand,
                ..
            }) => {
                let topic: Topic = topic.parse()?;
                elect(admin, brokers, &topic, queue_id, Some(next), false)?;
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("moving queue {queue_id} of {topic} to {next}"));
            }
        }
    }
    if !stuck.is_empty() {
        bail!(
            "{broker_id} still leads {} (no in-sync follower to take over): {}",
            stuck.len(),
            stuck.join(", ")
        );
    }
    println!("{broker_id} leads nothing now: it can be stopped");
    Ok(())
}
