//! A controller group of three voters on mutual TLS, with security on and no tokens: the
//! voters know each other by their certificates (`nameserver`), elect a leader, and commit
//! a topic proposed through a follower, which forwards it to the leader over TLS. A
//! plaintext client of a voter is told the voter speaks TLS, a client of another CA is
//! refused at the handshake, and a certificate without the `broker` grant is denied.
//!
//! Every wait is on a condition with a deadline, never a fixed sleep.

use std::collections::BTreeMap;
use std::error::Error;
use std::time::Duration;

use auth::{Audit, Grant, Policy};
use controller::{Acks, ClusterState, Command, Controller, ControllerConfig, Outcome, place};
use protocol::codes::{Command as Code, Status};
use svc::rpc::{Connection, RpcError, TlsClient};
use tls::dev::DevCerts;
use tokio::net::TcpListener;

/// Long enough for an election on a loaded machine, short enough to fail fast.
const DEADLINE: Duration = Duration::from_secs(10);

/// `nameserver` (the voters) may act as brokers, `admin` may do everything; `app` nothing.
fn authority() -> auth::Authority {
    let mut policy = Policy {
        version: 1,
        ..Policy::default()
    };
    let grant = |principal: &str, action: &str| Grant::parse(principal, action, "*", "*").unwrap();
    policy.grant(grant("nameserver", "broker"));
    policy.grant(grant("admin", "*"));
    auth::Authority::new(policy, Audit::open("controller", None).unwrap())
}

struct Cluster {
    _dir: tempfile::TempDir,
    certs: DevCerts,
    nodes: BTreeMap<u64, Controller>,
}

impl Cluster {
    /// Binds three listeners on port 0, then starts a voter with TLS on each.
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let certs =
            tls::dev::generate(&dir.path().join("certs"), &["nameserver", "admin", "app"]).unwrap();
        let mut listeners = BTreeMap::new();
        for id in 1..=3 {
            listeners.insert(id, TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let voters: BTreeMap<u64, String> = listeners
            .iter()
            .map(|(id, l)| (*id, l.local_addr().unwrap().to_string()))
            .collect();
        let mut nodes = BTreeMap::new();
        for (id, listener) in listeners {
            let mut config = ControllerConfig::new(
                id,
                voters[&id].parse().unwrap(),
                voters.clone(),
                dir.path().join(format!("node-{id}")),
            );
            // Fast timers keep the test short; the ratios are those of the defaults.
            config.heartbeat_interval = Duration::from_millis(50);
            config.election_timeout_min = Duration::from_millis(300);
            config.election_timeout_max = Duration::from_millis(600);
            config.authority = authority();
            // As a nameserver passes its [tls]: the server certificate, and `nameserver`'s
            // client certificate towards the other voters.
            config.tls = Some(certs.server_settings_as("nameserver"));
            let node = Controller::start_on(listener, config).await.unwrap();
            nodes.insert(id, node);
        }
        Self {
            _dir: dir,
            certs,
            nodes,
        }
    }

    /// The leader every node agrees on.
    async fn leader(&self) -> u64 {
        let mut leader = None;
        for node in self.nodes.values() {
            let mut metrics = node.metrics();
            let agreed = metrics.wait_for(|m| {
                m.current_leader.is_some() && (leader.is_none() || m.current_leader == leader)
            });
            let seen = tokio::time::timeout(DEADLINE, agreed)
                .await
                .expect("no leader elected in time")
                .unwrap()
                .current_leader;
            leader = seen;
        }
        leader.unwrap()
    }

    async fn applied_everywhere(&self, what: &str, done: impl Fn(&ClusterState) -> bool) {
        for node in self.nodes.values() {
            let mut states = node.subscribe();
            let waited = tokio::time::timeout(DEADLINE, states.wait_for(|s| done(s))).await;
            assert!(
                waited.is_ok(),
                "node {}: {what} not applied in time",
                node.node_id()
            );
        }
    }

    async fn shutdown(self) {
        for (_, node) in self.nodes {
            node.shutdown().await.unwrap();
        }
    }
}

fn register(broker: &str) -> Command {
    Command::RegisterBroker {
        broker: broker.into(),
        addr: format!("{broker}.test:7000"),
        cluster: "main".into(),
        area: "east".into(),
        shards: 1,
    }
}

/// `ControllerState` from the voter at `endpoint`, over TLS with `tls` (plaintext without),
/// on a blocking thread: `svc::rpc::Connection` is the blocking client tools use.
async fn state_of(endpoint: String, tls: Option<tls::TlsSettings>) -> Result<Vec<u8>, RpcError> {
    tokio::task::spawn_blocking(move || {
        let client = tls.map(|settings| TlsClient::new(&settings).unwrap());
        let mut connection = Connection::connect_tls(&endpoint, client.as_ref(), DEADLINE)?;
        let frame = connection.call(Code::ControllerState, &[], DEADLINE)?;
        Ok(frame.body.to_vec())
    })
    .await
    .unwrap()
}

/// `e` and its causes, as one line.
fn chain(e: &dyn Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        line.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_on_mutual_tls_elect_a_leader_and_commit_a_topic_through_a_follower() {
    let cluster = Cluster::start().await;
    let leader = cluster.leader().await;
    let follower = cluster
        .nodes
        .values()
        .find(|n| n.node_id() != leader)
        .unwrap();

    // Proposals through a follower travel to the leader over TLS, as `nameserver`.
    for broker in ["b1", "b2", "b3"] {
        let outcome = follower.propose(register(broker)).await.unwrap();
        assert_eq!(outcome, Outcome::BrokerRegistered { created: true });
    }
    let assignment = place(&follower.state().brokers, 2, 3, None).unwrap();
    follower
        .propose(Command::CreateTopic {
            topic: "A10-3901".into(),
            replicas: 3,
            acks: Acks::All,
            assignment,
        })
        .await
        .unwrap();
    // Committed on every voter: AppendEntries reached them over TLS.
    cluster
        .applied_everywhere("the topic", |s| s.topics.contains_key("A10-3901"))
        .await;

    // A tool with the admin certificate reads a voter's state over TLS.
    let endpoint = cluster.nodes[&leader].local_addr().to_string();
    let admin = cluster.certs.client_settings("admin");
    let state = state_of(endpoint.clone(), Some(admin)).await.unwrap();
    let state: ClusterState = serde_json::from_slice(&state).unwrap();
    assert!(state.topics.contains_key("A10-3901"));

    // A plaintext client is told the voter speaks TLS.
    let plaintext = state_of(endpoint.clone(), None).await.unwrap_err();
    assert!(
        chain(&plaintext).contains("the server speaks TLS"),
        "{}",
        chain(&plaintext)
    );

    // A client of another CA is refused at the handshake.
    let dir = tempfile::tempdir().unwrap();
    let other = tls::dev::generate(dir.path(), &["admin"]).unwrap();
    let foreign = state_of(endpoint.clone(), Some(other.client_settings("admin")))
        .await
        .unwrap_err();
    assert!(
        matches!(foreign, RpcError::Tls { .. }),
        "{}",
        chain(&foreign)
    );

    // A certificate of this CA names its caller, who needs the `broker` grant.
    let app = cluster.certs.client_settings("app");
    let denied = state_of(endpoint, Some(app)).await.unwrap_err();
    assert_eq!(
        denied.status(),
        Some(Status::PermissionDenied),
        "{}",
        chain(&denied)
    );
    cluster.shutdown().await;
}
