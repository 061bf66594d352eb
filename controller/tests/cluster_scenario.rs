//! Controller clusters of three in-process nodes on 127.0.0.1: elections, proposals through
//! followers, a leader's shutdown, restarts from disk, and broker failover.
//!
//! Every wait is on a condition with a deadline (openraft's metrics, the applied-state
//! channel), never a fixed sleep.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use controller::{
    Acks, ClusterState, Command, Controller, ControllerConfig, ControllerError, Outcome, place,
};
use protocol::codes::{Command as Code, Status};
use svc::rpc::Connection;
use tokio::net::TcpListener;

/// Long enough for an election on a loaded machine, short enough to fail fast.
const DEADLINE: Duration = Duration::from_secs(10);

struct Cluster {
    dir: tempfile::TempDir,
    voters: BTreeMap<u64, String>,
    nodes: BTreeMap<u64, Controller>,
}

fn config(id: u64, voters: &BTreeMap<u64, String>, dir: &tempfile::TempDir) -> ControllerConfig {
    let mut config = ControllerConfig::new(
        id,
        voters[&id].parse().unwrap(),
        voters.clone(),
        dir.path().join(format!("node-{id}")),
    );
    // Fast timers keep the tests short; the ratios are those of the defaults.
    config.heartbeat_interval = Duration::from_millis(50);
    config.election_timeout_min = Duration::from_millis(300);
    config.election_timeout_max = Duration::from_millis(600);
    config.broker_heartbeat_interval = Duration::from_millis(100);
    config.broker_timeout = Duration::from_millis(400);
    config.request_timeout = Duration::from_secs(5);
    config
}

impl Cluster {
    /// Binds three listeners on port 0, then starts a node on each.
    async fn start() -> Self {
        let mut listeners = BTreeMap::new();
        for id in 1..=3 {
            listeners.insert(id, TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let voters: BTreeMap<u64, String> = listeners
            .iter()
            .map(|(id, l)| (*id, l.local_addr().unwrap().to_string()))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = BTreeMap::new();
        for (id, listener) in listeners {
            let node = Controller::start_on(listener, config(id, &voters, &dir))
                .await
                .unwrap();
            nodes.insert(id, node);
        }
        Self { dir, voters, nodes }
    }

    /// Starts node `id` again from its data directory, on its old address.
    async fn restart(&mut self, id: u64) {
        let listener = TcpListener::bind(&self.voters[&id]).await.unwrap();
        let node = Controller::start_on(listener, config(id, &self.voters, &self.dir))
            .await
            .unwrap();
        self.nodes.insert(id, node);
    }

    async fn stop(&mut self, id: u64) {
        self.nodes.remove(&id).unwrap().shutdown().await.unwrap();
    }

    /// The leader every running node agrees on.
    async fn leader(&self) -> u64 {
        let mut leader = None;
        for node in self.nodes.values() {
            let metrics = node.metrics();
            let seen = tokio::time::timeout(
                DEADLINE,
                wait_metrics(metrics, |m| {
                    m.current_leader
                        .is_some_and(|l| self.nodes.contains_key(&l))
                        && (leader.is_none() || m.current_leader == leader)
                }),
            )
            .await
            .expect("no leader elected in time");
            leader = seen;
        }
        leader.unwrap()
    }

    fn follower(&self, leader: u64) -> &Controller {
        self.nodes.values().find(|n| n.node_id() != leader).unwrap()
    }

    /// Waits until every running node has applied a state satisfying `done`.
    async fn applied_everywhere(&self, what: &str, done: impl Fn(&ClusterState) -> bool) {
        for node in self.nodes.values() {
            applied(node, what, &done).await;
        }
    }

    async fn shutdown(self) {
        for (_, node) in self.nodes {
            node.shutdown().await.unwrap();
        }
    }
}

async fn wait_metrics(
    mut metrics: tokio::sync::watch::Receiver<openraft::RaftMetrics<u64, openraft::BasicNode>>,
    done: impl Fn(&openraft::RaftMetrics<u64, openraft::BasicNode>) -> bool,
) -> Option<u64> {
    metrics.wait_for(|m| done(m)).await.unwrap().current_leader
}

async fn applied(node: &Controller, what: &str, done: impl Fn(&ClusterState) -> bool) {
    let mut states = node.subscribe();
    let waited = tokio::time::timeout(DEADLINE, states.wait_for(|s| done(s))).await;
    assert!(
        waited.is_ok(),
        "node {}: {what} not applied in time; state: {:?}",
        node.node_id(),
        node.state()
    );
}

fn register(broker: &str) -> Command {
    Command::RegisterBroker {
        broker: broker.into(),
        addr: format!("{broker}.test:7000"),
        cluster: "main".into(),
        area: "east".into(),
        shards: 2,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_a_leader_and_a_proposal_through_a_follower_commits_on_all() {
    let cluster = Cluster::start().await;
    let leader = cluster.leader().await;
    let follower = cluster.follower(leader);
    assert!(!follower.is_leader());
    assert!(cluster.nodes[&leader].is_leader());

    let outcome = follower.propose(register("b1")).await.unwrap();
    assert_eq!(outcome, Outcome::BrokerRegistered { created: true });
    cluster
        .applied_everywhere("b1's registration", |s| s.brokers.contains_key("b1"))
        .await;

    // A refusal travels back through the follower as a value.
    let refused = follower
        .propose(Command::DeleteTopic {
            topic: "none".into(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            ControllerError::Rejected(controller::Rejected::UnknownTopic { .. })
        ),
        "{refused}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_leader_shuts_down_the_other_two_elect_and_still_commit() {
    let mut cluster = Cluster::start().await;
    let first = cluster.leader().await;
    cluster.nodes[&first].propose(register("b1")).await.unwrap();
    cluster
        .applied_everywhere("b1", |s| s.brokers.contains_key("b1"))
        .await;

    cluster.stop(first).await;
    let second = cluster.leader().await;
    assert_ne!(second, first);
    let survivor = cluster.follower(second);
    survivor.propose(register("b2")).await.unwrap();
    cluster
        .applied_everywhere("b2 after the failover", |s| {
            s.brokers.contains_key("b1") && s.brokers.contains_key("b2")
        })
        .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_recovers_its_state_from_disk_alone_then_rejoins() {
    let mut cluster = Cluster::start().await;
    let leader = cluster.leader().await;
    let node = &cluster.nodes[&leader];
    for broker in ["b1", "b2"] {
        node.propose(register(broker)).await.unwrap();
    }
    let assignment = place(&node.state().brokers, 2, 2, None).unwrap();
    node.propose(Command::CreateTopic {
        topic: "orders".into(),
        replicas: 2,
        acks: Acks::All,
        assignment,
    })
    .await
    .unwrap();
    cluster
        .applied_everywhere("the topic", |s| s.topics.contains_key("orders"))
        .await;
    let before = cluster.nodes[&leader].state();

    // Every node down; one comes back alone, with no leader to learn from.
    for id in [1, 2, 3] {
        cluster.stop(id).await;
    }
    cluster.restart(2).await;
    applied(&cluster.nodes[&2], "the state from disk", |s| *s == *before).await;

    // The others come back; the cluster commits again on top of the recovered state.
    cluster.restart(1).await;
    cluster.restart(3).await;
    let leader = cluster.leader().await;
    cluster.nodes[&leader]
        .propose(register("b3"))
        .await
        .unwrap();
    // (No broker heartbeats here: the failure detector may take the queues offline, so
    // only the placement is compared.)
    let replicas = |s: &ClusterState| -> Vec<Vec<String>> {
        s.topics["orders"]
            .queues
            .iter()
            .map(|q| q.replicas.clone())
            .collect()
    };
    cluster
        .applied_everywhere("b3 on the recovered state", |s| {
            s.brokers.len() == 3 && replicas(s) == replicas(&before)
        })
        .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_stops_heartbeating_loses_its_queues_to_an_isr_member() {
    let cluster = Cluster::start().await;
    let leader = cluster.leader().await;
    let follower = cluster.follower(leader);
    for broker in ["b1", "b2", "b3"] {
        follower.propose(register(broker)).await.unwrap();
    }
    let assignment = place(&follower.state().brokers, 3, 3, None).unwrap();
    assert_eq!(assignment[0][0], "b1", "b1 leads queue 0");
    follower
        .propose(Command::CreateTopic {
            topic: "orders".into(),
            replicas: 3,
            acks: Acks::All,
            assignment,
        })
        .await
        .unwrap();

    // b2 and b3 heartbeat (through a follower, so forwarded); b1 falls silent.
    let states = cluster.nodes[&leader].subscribe();
    let heartbeats = async {
        let mut ticks = tokio::time::interval(Duration::from_millis(100));
        loop {
            ticks.tick().await;
            for broker in ["b2", "b3"] {
                follower.broker_heartbeat(broker).await.unwrap();
            }
        }
    };
    let failed_over = async {
        let mut states = states.clone();
        states
            .wait_for(|s| {
                let q0 = s.queue("orders", 0).unwrap();
                q0.leader.as_deref() == Some("b2")
                    && s.topics["orders"]
                        .queues
                        .iter()
                        .all(|q| !q.isr.contains(&"b1".to_owned()))
            })
            .await
            .map(|s| Arc::clone(&s))
    };
    let state = tokio::select! {
        state = tokio::time::timeout(DEADLINE, failed_over) => state,
        () = heartbeats => unreachable!("heartbeats never end"),
    };
    let state = state
        .unwrap_or_else(|_| panic!("no failover in time: {:?}", cluster.nodes[&leader].state()))
        .unwrap();
    let q0 = state.queue("orders", 0).unwrap();
    assert_eq!(q0.epoch, 2, "one election, one epoch on");
    assert_eq!(q0.isr, ["b2", "b3"]);
    // Queues b1 did not lead keep their leader and epoch.
    let q1 = state.queue("orders", 1).unwrap();
    assert_eq!((q1.leader.as_deref(), q1.epoch), (Some("b2"), 1));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_over_frames_serves_state_anywhere_and_proposals_only_on_the_leader() {
    let cluster = Cluster::start().await;
    let leader = cluster.leader().await;
    let follower = cluster.follower(leader).local_addr().to_string();
    let leader_addr = cluster.nodes[&leader].local_addr().to_string();
    let body = serde_json::to_vec(&register("b9")).unwrap();
    let (refused, applied, state) = tokio::task::spawn_blocking(move || {
        let timeout = Duration::from_secs(5);
        let mut follower = Connection::connect(&follower, timeout).unwrap();
        let refused = follower
            .call(Code::ControllerPropose, &body, timeout)
            .unwrap_err();
        let mut leader = Connection::connect(&leader_addr, timeout).unwrap();
        let applied = leader
            .call(Code::ControllerPropose, &body, timeout)
            .unwrap();
        // The refusal kept the connection open.
        let state = follower.call(Code::ControllerState, &[], timeout).unwrap();
        (refused, applied.body.to_vec(), state.body.to_vec())
    })
    .await
    .unwrap();
    assert_eq!(refused.status(), Some(Status::NotLeader));
    assert!(
        refused
            .to_string()
            .contains(&format!("the leader is node {leader}")),
        "{refused}"
    );
    let applied: serde_json::Value = serde_json::from_slice(&applied).unwrap();
    assert_eq!(
        applied["result"],
        serde_json::json!({"Ok": {"BrokerRegistered": {"created": true}}})
    );
    let _: ClusterState = serde_json::from_slice(&state).unwrap();

    // A second node on a running node's data directory is refused at once.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = Controller::start_on(listener, config(leader, &cluster.voters, &cluster.dir))
        .await
        .err()
        .expect("two nodes on one data directory");
    assert!(matches!(error, ControllerError::Storage { .. }), "{error}");
    cluster.shutdown().await;
}
