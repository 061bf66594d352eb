//! The replication controller in the nameserver (docs/ARCHITECTURE.md §8.6): a voter of the
//! controller's Raft group ([`controller::Controller`]), fed by the brokers' registrations
//! (their heartbeats, and their reports of what each replicated queue is doing), and, on the
//! Raft leader, a reconciliation loop that acts on the difference ([`crate::roles::plan`]):
//!
//! - it sends `QueueRole` to every live replica whose report differs from the controller's
//!   decision, the queue's leader first;
//! - it elects anew a queue whose leader restarted (a broker leads only in a new epoch),
//!   choosing a live in-sync replica; a silent leader is the controller's own failure
//!   detector's to replace;
//! - it applies the in-sync sets leaders ask for (`AlterIsr`).
//!
//! Sending twice is harmless, so nothing is tracked between rounds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use controller::{Command, Controller};
use log::{debug, info, warn};
use protocol::codes::Command as Wire;
use protocol::control::{self, BrokerRegistration, QueueAssignment};
use tokio::sync::watch;

use crate::command::Shared;
use crate::roles::{self, Reports};

/// Longest wait for a broker to answer a `QueueRole`.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// After a registration: the broker is alive, and its record is current.
pub(crate) fn on_register(ctl: &Arc<Controller>, registration: &BrokerRegistration) {
    let ctl = Arc::clone(ctl);
    let broker = registration.broker_id.clone();
    let (addr, cluster, area) = (
        registration.address.clone(),
        registration.cluster.clone(),
        registration.area.clone(),
    );
    let shards = u16::try_from(registration.shard_ports.len()).unwrap_or(u16::MAX);
    tokio::spawn(async move {
        let known = ctl.state().brokers.get(&broker).is_some_and(|b| {
            b.addr == addr && b.cluster == cluster && b.area == area && b.shards == shards
        });
        if !known {
            let record = Command::RegisterBroker {
                broker: broker.clone(),
                addr,
                cluster,
                area,
                shards,
            };
            if let Err(e) = ctl.propose(record).await {
                debug!("recording broker {broker} with the controller: {e}");
            }
        }
        heartbeat(&ctl, &broker).await;
    });
}

/// After a heartbeat: the broker is alive.
pub(crate) fn on_heartbeat(ctl: &Arc<Controller>, broker: String) {
    let ctl = Arc::clone(ctl);
    tokio::spawn(async move {
        heartbeat(&ctl, &broker).await;
    });
}

/// Tells the controller `broker` is alive (a follower node forwards it to the leader).
async fn heartbeat(ctl: &Controller, broker: &str) {
    if let Err(e) = ctl.broker_heartbeat(broker).await {
        debug!("heartbeat of broker {broker} to the controller: {e}");
    }
}

/// Reconciles every `interval`, and whenever the controller's state changes, while this node
/// leads the controller, until `stop`.
pub(crate) async fn run(
    shared: Arc<Shared>,
    ctl: Arc<Controller>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A decision (a failover above all) is acted on when it is applied, not at the next tick.
    let mut decisions = ctl.subscribe();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            changed = decisions.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = stop.changed() => return,
        }
        if ctl.is_leader() {
            round(&shared, &ctl).await;
        }
    }
}

/// One reconciliation.
async fn round(shared: &Shared, ctl: &Controller) {
    let state = ctl.state();
    let registrations = shared.registry().live_registrations(Instant::now());
    let by_id: BTreeMap<&str, &BrokerRegistration> = registrations
        .iter()
        .map(|r| (r.broker_id.as_str(), r))
        .collect();
    let endpoint = |broker: &str, topic: &str, queue: u32| {
        let reg = by_id.get(broker)?;
        let shard = protocol::routing::queue_shard(topic, queue, reg.shard_ports.len());
        Some(format!("{}:{}", reg.address, reg.shard_ports.get(shard)?))
    };
    let mut desired = Vec::new();
    for (topic, t) in &state.topics {
        for (queue_id, q) in t.queues.iter().enumerate() {
            let queue_id = queue_id as u32;
            let leader = q.leader.clone().unwrap_or_default();
            // A leader that is not live has no endpoint: the plan sends nothing for it.
            let leader_endpoint = if leader.is_empty() {
                String::new()
            } else {
                endpoint(&leader, topic, queue_id).unwrap_or_default()
            };
            desired.push(QueueAssignment {
                topic: topic.clone(),
                queue_id,
                epoch: q.epoch,
                leader,
                leader_endpoint,
                replicas: q.replicas.clone(),
                in_sync: q.isr.clone(),
            });
        }
    }
    let mut reports: Reports = BTreeMap::new();
    for reg in &registrations {
        let queues = reports.entry(reg.broker_id.clone()).or_default();
        for info in &reg.topics {
            for r in &info.replication {
                queues.insert((info.topic.clone(), r.queue_id), r.clone());
            }
        }
    }
    let plan = roles::plan(&desired, &reports);
    for (broker, assignment) in plan.send {
        if assignment.leader_endpoint.is_empty() {
            continue;
        }
        let Some(target) = endpoint(&broker, &assignment.topic, assignment.queue_id) else {
            continue;
        };
        send(
            target,
            broker,
            assignment,
            shared.token(),
            shared.tls_client(),
        )
        .await;
    }
    for (topic, queue) in plan.elect {
        let Some(q) = state.queue(&topic, queue) else {
            continue;
        };
        // A live in-sync replica other than a restarted leader, else the leader itself.
        let live = |b: &String| by_id.contains_key(b.as_str());
        let leader = q
            .isr
            .iter()
            .filter(|b| Some(*b) != q.leader.as_ref())
            .find(|b| live(b))
            .or_else(|| q.leader.as_ref().filter(|b| live(b)))
            .cloned();
        let Some(leader) = leader else { continue };
        let command = Command::ElectLeader {
            topic: topic.clone(),
            queue,
            leader: Some(leader.clone()),
            expected_epoch: q.epoch,
            unclean: false,
        };
        match ctl.propose(command).await {
            Ok(_) => info!(
                "queue {queue} of {topic}: {leader} leads from epoch {}",
                q.epoch + 1
            ),
            Err(e) => debug!("electing a leader of queue {queue} of {topic}: {e}"),
        }
    }
    for ((topic, queue), isr) in plan.in_sync {
        let Some(q) = state.queue(&topic, queue) else {
            continue;
        };
        let Some(leader) = q.leader.clone() else {
            continue;
        };
        let command = Command::AlterIsr {
            topic: topic.clone(),
            queue,
            leader,
            leader_epoch: q.epoch,
            isr: isr.clone(),
        };
        match ctl.propose(command).await {
            Ok(_) => info!("queue {queue} of {topic}: in sync now {}", isr.join(", ")),
            Err(e) => debug!("changing the in-sync set of queue {queue} of {topic}: {e}"),
        }
    }
}

/// Sends one `QueueRole` (blocking socket on the blocking pool; the answer is logged).
async fn send(
    target: String,
    broker: String,
    assignment: QueueAssignment,
    token: Option<String>,
    tls: Option<svc::rpc::TlsClient>,
) {
    let body = match control::encode(&assignment) {
        Ok(body) => body,
        Err(e) => {
            warn!("cannot encode an assignment: {e}");
            return;
        }
    };
    let what = format!(
        "queue {} of {} epoch {} to {broker}",
        assignment.queue_id, assignment.topic, assignment.epoch
    );
    let sent = tokio::task::spawn_blocking(move || {
        let mut connection = svc::rpc::Connection::connect_with(
            &target,
            token.as_deref(),
            tls.as_ref(),
            SEND_TIMEOUT,
        )?;
        connection
            .call(Wire::QueueRole, &body, SEND_TIMEOUT)
            .map(drop)
    })
    .await;
    match sent {
        Ok(Ok(())) => debug!("sent {what}"),
        Ok(Err(e)) => debug!("sending {what}: {e}"),
        Err(e) => warn!("sending {what}: {e}"),
    }
}
