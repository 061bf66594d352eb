//! Three nameservers with `[security]`, `[tls]` (mutual TLS, no tokens) and a
//! `[controller]` each: the controller's Raft port takes the nameserver's `[tls]`, so the
//! three voters elect a leader and commit over TLS, knowing each other by the nameservers'
//! client certificate (`nameserver`). An admin proposes brokers and a topic through every
//! nameserver (the followers' controllers forward to the leader over TLS); every voter
//! applies them; a plaintext client of a Raft port is told that it speaks TLS.

use std::path::Path;
use std::time::Duration;

use auth::{Grant, Policy};
use controller::{Acks, ClusterState, Command, place};
use defibus_tests::{WAIT, start_nameserver};
use nameserver::NameserverHandle;
use nameserver::config::ControllerSettings;
use protocol::codes::Command as Code;
use svc::rpc::{Connection, RpcError, TlsClient};
use testkit::{retry_until, wait_for};
use tls::dev::DevCerts;

const TOPIC: &str = "A10-3902";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// `admin` may do everything; `nameserver` act as a broker, which the controller asks of
/// its callers.
fn policy() -> Policy {
    let mut policy = Policy {
        version: 1,
        ..Policy::default()
    };
    let grant = |principal: &str, action: &str| Grant::parse(principal, action, "*", "*").unwrap();
    policy.grant(grant("admin", "*"));
    policy.grant(grant("nameserver", "broker"));
    policy
}

/// A free loopback port for a controller's Raft listener (its voters name it up front).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Group {
    _dir: tempfile::TempDir,
    certs: DevCerts,
    nameservers: Vec<NameserverHandle>,
    /// The controllers' Raft endpoints, by voter id (1, 2, 3).
    raft: Vec<String>,
}

impl Group {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let certs =
            tls::dev::generate(&dir.path().join("certs"), &["admin", "nameserver"]).unwrap();
        let raft: Vec<String> = (0..3)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let voters: Vec<String> = raft
            .iter()
            .enumerate()
            .map(|(i, addr)| format!("{}={addr}", i + 1))
            .collect();
        let nameservers = (1..=3u64)
            .map(|id| start_voter(dir.path(), &certs, id, &raft, &voters))
            .collect();
        Self {
            _dir: dir,
            certs,
            nameservers,
            raft,
        }
    }

    fn admin(&self) -> TlsClient {
        TlsClient::new(&self.certs.client_settings("admin")).unwrap()
    }

    /// Proposes `command` through nameserver `index`, as `admin`.
    fn propose(&self, index: usize, command: &Command) -> Result<Vec<u8>, RpcError> {
        let endpoint = self.nameservers[index].local_addr().to_string();
        let mut connection =
            Connection::connect_with(&endpoint, None, Some(&self.admin()), REQUEST_TIMEOUT)?;
        let body = serde_json::to_vec(command).unwrap();
        let frame = connection.call(Code::ControllerPropose, &body, REQUEST_TIMEOUT)?;
        Ok(frame.body.to_vec())
    }

    /// The state the controller at `endpoint` applied, read over TLS as `admin`.
    fn state(&self, endpoint: &str) -> Result<ClusterState, RpcError> {
        let mut connection =
            Connection::connect_tls(endpoint, Some(&self.admin()), REQUEST_TIMEOUT)?;
        let frame = connection.call(Code::ControllerState, &[], REQUEST_TIMEOUT)?;
        Ok(serde_json::from_slice(&frame.body).unwrap())
    }
}

/// Nameserver `id` with security, mutual TLS and voter `id` of the controller.
fn start_voter(
    root: &Path,
    certs: &DevCerts,
    id: u64,
    raft: &[String],
    voters: &[String],
) -> NameserverHandle {
    let policy_file = root.join(format!("policy-{id}.json"));
    std::fs::write(&policy_file, policy().to_json()).unwrap();
    start_nameserver(|c| {
        c.security.enabled = true;
        c.security.policy_file = Some(policy_file);
        // The server certificate for callers, `nameserver`'s towards the other voters.
        c.tls = Some(certs.server_settings_as("nameserver"));
        c.controller = Some(ControllerSettings {
            node_id: id,
            listen_addr: raft[id as usize - 1].parse().unwrap(),
            voters: voters.to_vec(),
            data_dir: root.join(format!("controller-{id}")),
            broker_timeout_ms: 1500,
            reconcile_interval_ms: 250,
        });
    })
}

/// A broker that is never started: the leader's reconciler finds its port closed at once.
fn register(broker: &str) -> Command {
    Command::RegisterBroker {
        broker: broker.into(),
        addr: "127.0.0.1:1".into(),
        cluster: "main".into(),
        area: "east".into(),
        shards: 1,
    }
}

#[test]
fn three_voters_on_tls_commit_a_topic_proposed_through_every_nameserver() {
    let group = Group::start();

    // Each nameserver proposes one broker: at least two of them are followers, whose
    // controllers forward to the leader over TLS. Retried until a leader is elected (a
    // registration is an upsert, so a retry after a lost answer changes nothing).
    for (index, broker) in ["b1", "b2", "b3"].into_iter().enumerate() {
        retry_until(&format!("{broker} registered"), WAIT, || {
            group.propose(index, &register(broker))
        });
    }
    // Voter 3 applied b3 before its nameserver answered, and b1 and b2 before it.
    let brokers = group.state(&group.raft[2]).unwrap().brokers;
    let assignment = place(&brokers, 2, 3, None).unwrap();
    let create = Command::CreateTopic {
        topic: TOPIC.into(),
        replicas: 3,
        acks: Acks::All,
        assignment,
    };
    group.propose(2, &create).unwrap();

    // Every voter applied it: AppendEntries reached each over TLS.
    for endpoint in &group.raft {
        wait_for(&format!("{endpoint} applied the topic"), WAIT, || {
            group
                .state(endpoint)
                .ok()
                .filter(|s| s.topics.contains_key(TOPIC) && s.brokers.len() == 3)
        });
    }

    // A plaintext client of a Raft port is told it speaks TLS.
    let err = Connection::connect(&group.raft[1], REQUEST_TIMEOUT)
        .and_then(|mut c| c.call(Code::ControllerState, &[], REQUEST_TIMEOUT))
        .unwrap_err();
    let chain = chain(&err);
    assert!(chain.contains("the server speaks TLS"), "{chain}");
}

/// `e` and its causes, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        line.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    line
}
