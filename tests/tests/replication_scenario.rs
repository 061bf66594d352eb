//! Replicated queues under `kill -9`: three brokers in child processes hold one queue with
//! three replicas and `acks=all`; a producer writes to the leader without retries while the
//! leader is killed with SIGKILL at a random moment, round after round. This test plays the
//! controller (it assigns roles with `QueueRole`, the way the controller does): after each
//! kill it elects a surviving in-sync replica for the next epoch, restarts the killed broker
//! on its data as a follower, and takes it back into the in-sync set once its leader reports
//! it caught up.
//!
//! At the end a history checker reads every replica's log from disk: every acknowledged
//! record is there exactly once, in the order it was acknowledged, no record is there twice,
//! and the three logs are byte for byte the same.
//!
//! `DEFIBUS_REPLICATION_ROUNDS` sets the rounds (20 by default; 500 for a long run), and
//! `DEFIBUS_REPLICATION_SEED` replays a run (each run prints its seed).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use bytes::Bytes;
use defibus_tests::replica::{self, Conn, check_history, produce_until_refused};
use defibus_tests::{ChildBroker, WAIT, broker_config, child_broker_main, start_nameserver};
use nameserver::NameserverHandle;
use protocol::codes::Command;
use protocol::control::{self, Acks, FlushMode, QueueAssignment, TopicConfig};
use testkit::wait_until;

const TOPIC: &str = "A10-3301";
const IDS: [&str; 3] = ["replica-a", "replica-b", "replica-c"];
/// The test the child process runs: see [`ChildBroker`].
const CHILD_ENTRY: &str = "child_broker";

#[test]
#[ignore = "entry point of the child broker process, run by ChildBroker::spawn"]
fn child_broker() {
    child_broker_main();
}

/// One broker of the cluster: its data and, while it runs, its process.
struct Node {
    id: &'static str,
    dir: PathBuf,
    child: Option<ChildBroker>,
}

impl Node {
    fn port(&self) -> u16 {
        self.child.as_ref().expect("running").shard_ports()[0]
    }

    fn conn(&self) -> Conn {
        Conn::connect(("127.0.0.1", self.port())).expect("connect to the broker")
    }

    fn start(&mut self, nameserver: &NameserverHandle) {
        let config = broker_config(self.id, 1, &self.dir, nameserver);
        self.child = Some(ChildBroker::spawn(CHILD_ENTRY, &config));
    }
}

/// The three brokers in child processes, data under `root`, each holding the test topic with
/// `queues` queues, three replicas, `acks=all` and sync flush; no roles assigned yet.
fn start_replicas(nameserver: &NameserverHandle, root: &Path, queues: u32) -> Vec<Node> {
    let mut nodes: Vec<Node> = IDS
        .iter()
        .map(|id| Node {
            id,
            dir: root.join(id),
            child: None,
        })
        .collect();
    let mut topic = TopicConfig::new(&TOPIC.parse().unwrap());
    topic.queue_count = queues;
    topic.read_queue_count = queues;
    topic.write_queue_count = queues;
    topic.flush_mode = FlushMode::Sync;
    topic.replicas = 3;
    topic.acks = Acks::All;
    for node in &mut nodes {
        node.start(nameserver);
        node.conn()
            .call_ok(Command::CreateTopic, &control::encode(&topic).unwrap());
    }
    nodes
}

/// What the test knows as the controller.
struct Roles {
    epoch: u64,
    leader: usize,
    in_sync: Vec<usize>,
}

fn assign(nodes: &[Node], to: usize, roles: &Roles) {
    let assignment = QueueAssignment {
        topic: TOPIC.into(),
        queue_id: 0,
        epoch: roles.epoch,
        leader: nodes[roles.leader].id.into(),
        leader_endpoint: format!("127.0.0.1:{}", nodes[roles.leader].port()),
        replicas: nodes.iter().map(|n| n.id.to_string()).collect(),
        in_sync: roles
            .in_sync
            .iter()
            .map(|&i| nodes[i].id.to_string())
            .collect(),
    };
    nodes[to]
        .conn()
        .call_ok(Command::QueueRole, &control::encode(&assignment).unwrap());
}

/// A small deterministic generator, so a failing run can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The leader's view of `follower`'s durable end, if it leads in `epoch`.
fn follower_end(leader: &Node, follower: &str, epoch: u64) -> Option<(u64, u64)> {
    replica::follower_end(&mut leader.conn(), TOPIC, follower, epoch)
}

/// The values stored in the queue log in `dir` (the broker stopped), and its batches.
fn stored(dir: &Path) -> (Vec<String>, Vec<Bytes>) {
    replica::stored(dir, TOPIC)
}

#[test]
fn acknowledged_records_survive_kill_9_of_the_leader_exactly_once_and_in_order() {
    let rounds: usize = std::env::var("DEFIBUS_REPLICATION_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("DEFIBUS_REPLICATION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("replication scenario: {rounds} rounds, DEFIBUS_REPLICATION_SEED={seed}");
    let mut rng = Rng(seed);
    let nameserver = start_nameserver(|_| {});
    let root = tempfile::tempdir().unwrap();
    let mut nodes = start_replicas(&nameserver, root.path(), 1);
    let mut roles = Roles {
        epoch: 1,
        leader: 0,
        in_sync: vec![0, 1, 2],
    };
    for i in 0..3 {
        assign(&nodes, i, &roles);
    }

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut failovers = Vec::new();
    for round in 0..rounds {
        let leader = roles.leader;
        let port = nodes[leader].port();
        let before = acked.lock().unwrap().len();
        let kill_after = before + 1 + rng.below(40) as usize;
        let producer = {
            let acked = acked.clone();
            thread::spawn(move || {
                produce_until_refused(("127.0.0.1", port), TOPIC, &round.to_string(), &acked);
            })
        };
        wait_until("produces acknowledged before the kill", WAIT, || {
            acked.lock().unwrap().len() >= kill_after || producer.is_finished()
        });
        assert!(
            !producer.is_finished(),
            "round {round}: the producer stopped before the kill"
        );
        nodes[leader].child.take().expect("running").kill_9();
        producer.join().unwrap();

        // Elect a surviving in-sync replica for the next epoch.
        let killed_at = Instant::now();
        let survivors: Vec<usize> = roles
            .in_sync
            .iter()
            .copied()
            .filter(|&i| i != leader)
            .collect();
        let next = survivors[rng.below(survivors.len() as u64) as usize];
        roles = Roles {
            epoch: roles.epoch + 1,
            leader: next,
            in_sync: survivors.clone(),
        };
        // The new leader first (as the controller and `admin queue elect` do): a follower
        // that asks before it leads is refused and retries after a backoff.
        assign(&nodes, next, &roles);
        for &i in survivors.iter().filter(|&&i| i != next) {
            assign(&nodes, i, &roles);
        }
        // The new leader takes acknowledged produces at once.
        let value = format!("{round}-failover");
        let answer = nodes[next].conn().produce(TOPIC, 0, &value).unwrap();
        assert!(
            answer.is_ok(),
            "round {round}: the new leader refused: {answer:?}"
        );
        acked.lock().unwrap().push(value);
        failovers.push(killed_at.elapsed());

        // The killed broker returns on its data, follows, and rejoins once caught up.
        nodes[leader].start(&nameserver);
        assign(&nodes, leader, &roles);
        let id = nodes[leader].id;
        wait_until("the restarted broker to catch up", WAIT, || {
            follower_end(&nodes[next], id, roles.epoch).is_some_and(|(end, log_end)| end >= log_end)
        });
        roles.in_sync = vec![0, 1, 2];
        assign(&nodes, next, &roles);
    }
    // Everything caught up: stop the brokers and read their logs.
    let leader = roles.leader;
    for i in 0..3 {
        if i != leader {
            let id = nodes[i].id;
            wait_until("a follower to hold the whole log", WAIT, || {
                follower_end(&nodes[leader], id, roles.epoch)
                    .is_some_and(|(end, log_end)| end >= log_end)
            });
        }
    }
    for node in &mut nodes {
        node.child.take().expect("running").kill_9();
    }
    let acked = acked.lock().unwrap().clone();
    let (values, batches) = stored(&nodes[leader].dir);
    check_history(&acked, &values, &format!("seed {seed}"));
    for (i, node) in nodes.iter().enumerate() {
        if i != leader {
            let (_, copy) = stored(&node.dir);
            assert_eq!(copy, batches, "{} differs from the leader", node.id);
        }
    }
    failovers.sort();
    eprintln!(
        "{rounds} rounds: {} acknowledged, {} stored, 0 lost; failover (kill → first acked \
         produce on the new leader) median {:?}, max {:?}",
        acked.len(),
        values.len(),
        failovers[failovers.len() / 2],
        failovers[failovers.len() - 1]
    );
}

#[test]
fn a_paused_leader_acknowledges_nothing_after_the_new_epoch_and_rejoins_as_a_follower() {
    let nameserver = start_nameserver(|_| {});
    let root = tempfile::tempdir().unwrap();
    let mut nodes = start_replicas(&nameserver, root.path(), 1);
    let mut roles = Roles {
        epoch: 1,
        leader: 0,
        in_sync: vec![0, 1, 2],
    };
    for i in 0..3 {
        assign(&nodes, i, &roles);
    }
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let port = nodes[0].port();
    let producer = {
        let acked = acked.clone();
        thread::spawn(move || produce_until_refused(("127.0.0.1", port), TOPIC, "0", &acked))
    };
    wait_until("some produces acknowledged", WAIT, || {
        acked.lock().unwrap().len() >= 20
    });
    // SIGSTOP: the leader stalls with a produce in flight; a new epoch begins without it.
    nodes[0].child.as_ref().unwrap().pause();
    roles = Roles {
        epoch: 2,
        leader: 1,
        in_sync: vec![1, 2],
    };
    assign(&nodes, 1, &roles);
    assign(&nodes, 2, &roles);
    let mut new_leader = nodes[1].conn();
    for n in 0..10 {
        let value = format!("epoch2-{n}");
        let answer = new_leader.produce(TOPIC, 0, &value).unwrap();
        assert!(answer.is_ok(), "the new leader takes produces: {answer:?}");
        acked.lock().unwrap().push(value);
    }
    // SIGCONT: the old leader runs again, still in epoch 1 until told otherwise. Its
    // followers left, so nothing it takes now can be committed (an answer it had ready for
    // a produce committed before the pause may still arrive: that record is on every
    // replica, which the history check below shows)...
    nodes[0].child.as_ref().unwrap().resume();
    // ...and once it learns of epoch 2, the produce waiting for its commit point fails (or,
    // sent after that, is refused outright): either way with NotLeader.
    assign(&nodes, 0, &roles);
    let refusal = producer.join().unwrap();
    let (status, message) = refusal.expect("the deposed leader answers the waiting produce");
    assert_eq!(
        status,
        protocol::codes::Status::NotLeader.code(),
        "{message}"
    );
    assert!(
        message.contains("retry on the new leader") || message.contains("replica-b leads it"),
        "{message}"
    );
    wait_until("the old leader to catch up as a follower", WAIT, || {
        follower_end(&nodes[1], IDS[0], 2).is_some_and(|(end, log_end)| end >= log_end)
    });
    wait_until("the other follower to catch up", WAIT, || {
        follower_end(&nodes[1], IDS[2], 2).is_some_and(|(end, log_end)| end >= log_end)
    });
    for node in &mut nodes {
        node.child.take().expect("running").kill_9();
    }
    let acked = acked.lock().unwrap().clone();
    let (values, batches) = stored(&nodes[1].dir);
    for value in &acked {
        assert!(values.contains(value), "acknowledged {value} is lost");
    }
    for i in [0, 2] {
        assert_eq!(stored(&nodes[i].dir).1, batches, "{} differs", IDS[i]);
    }
}

#[test]
fn consumers_and_producers_keep_going_through_a_failover() {
    use client::{ConsumeMode, Consumer, ConsumerOptions, Message, Producer, StartFrom};
    use std::collections::BTreeSet;
    use std::time::Duration;

    let nameserver = start_nameserver(|_| {});
    let root = tempfile::tempdir().unwrap();
    let mut nodes = start_replicas(&nameserver, root.path(), 2);
    // Queue 0 led by a, queue 1 by b; the test plays the controller.
    let assign_queue =
        |nodes: &[Node], queue_id: u32, epoch: u64, leader: usize, in_sync: &[usize]| {
            let assignment = QueueAssignment {
                topic: TOPIC.into(),
                queue_id,
                epoch,
                leader: nodes[leader].id.into(),
                leader_endpoint: format!("127.0.0.1:{}", nodes[leader].port()),
                replicas: nodes.iter().map(|n| n.id.to_string()).collect(),
                in_sync: in_sync.iter().map(|&i| nodes[i].id.to_string()).collect(),
            };
            for &i in in_sync {
                nodes[i]
                    .conn()
                    .call_ok(Command::QueueRole, &control::encode(&assignment).unwrap());
            }
        };
    assign_queue(&nodes, 0, 1, 0, &[0, 1, 2]);
    assign_queue(&nodes, 1, 1, 1, &[0, 1, 2]);
    // Clients follow a failover within one route refresh: 1 s here.
    let configure = |c: client::ClientConfig| {
        c.with_route_refresh_interval(Duration::from_secs(1))
            .with_request_timeout(Duration::from_secs(5))
    };
    let producer_client = defibus_tests::client_with(&nameserver, configure);
    wait_until("both queues routed", WAIT, || {
        client::Admin::new(&producer_client)
            .topic_route(TOPIC)
            .is_ok_and(|r| r.queues.len() == 2)
    });
    let consumer_client = defibus_tests::client_with(&nameserver, configure);
    let options = ConsumerOptions::new(TOPIC, "audit", ConsumeMode::Clustering)
        .start_from(StartFrom::Earliest);
    let consumer = Consumer::subscribe_with(&consumer_client, options).unwrap();
    let producer = Producer::new(&producer_client).unwrap();
    let mut acked = BTreeSet::new();
    let mut received: HashMap<String, usize> = HashMap::new();
    let drain = |received: &mut HashMap<String, usize>| {
        while let Ok(Some(message)) = consumer.recv(Duration::from_millis(10)) {
            *received
                .entry(String::from_utf8(message.value).unwrap())
                .or_default() += 1;
        }
    };
    for i in 0..100 {
        if i == 50 {
            // The leader of queue 0 dies: b takes it over with c in epoch 2, and a leaves
            // queue 1's in-sync set (what the controller does when a broker dies).
            nodes[0].child.take().expect("running").kill_9();
            assign_queue(&nodes, 0, 2, 1, &[1, 2]);
            assign_queue(&nodes, 1, 1, 1, &[1, 2]);
        }
        let value = format!("v{i}");
        // The client retries a send whose broker died on another queue.
        if producer.send(Message::new(TOPIC, value.clone())).is_ok() {
            acked.insert(value);
        }
        drain(&mut received);
    }
    assert!(
        acked.len() >= 95,
        "only {} of 100 sends acknowledged",
        acked.len()
    );
    wait_until(
        "the group to receive every acknowledged message",
        WAIT,
        || {
            drain(&mut received);
            acked.iter().all(|v| received.contains_key(v))
        },
    );
    let redelivered: usize = received.values().map(|n| n - 1).sum();
    eprintln!(
        "failover with a live consumer: {} acknowledged, all received, {redelivered} redelivered",
        acked.len()
    );
}

#[test]
fn requesters_keep_getting_replies_through_a_failover() {
    use client::{Message, Requester, Responder};
    use std::time::Duration;

    let nameserver = start_nameserver(|_| {});
    let root = tempfile::tempdir().unwrap();
    let mut nodes = start_replicas(&nameserver, root.path(), 1);
    let mut roles = Roles {
        epoch: 1,
        leader: 0,
        in_sync: vec![0, 1, 2],
    };
    for i in 0..3 {
        assign(&nodes, i, &roles);
    }
    let configure = |c: client::ClientConfig| {
        c.with_route_refresh_interval(Duration::from_secs(1))
            .with_request_timeout(Duration::from_secs(3))
    };
    let responder_client = defibus_tests::client_with(&nameserver, configure);
    wait_until("the queue routed", WAIT, || {
        client::Admin::new(&responder_client)
            .topic_route(TOPIC)
            .is_ok_and(|r| r.queues.len() == 1)
    });
    let _responder = Responder::start(&responder_client, TOPIC, "echo", |request| {
        let mut reply = b"re:".to_vec();
        reply.extend_from_slice(&request.value);
        reply
    })
    .unwrap();
    let requester_client = defibus_tests::client_with(&nameserver, configure);
    let requester = Requester::new(&requester_client);
    let ask = |i: usize| {
        requester
            .request(Message::new(TOPIC, format!("q{i}")), Duration::from_secs(3))
            .map(|reply| String::from_utf8(reply.value).unwrap())
    };
    for i in 0..20 {
        assert_eq!(ask(i).unwrap(), format!("re:q{i}"));
    }
    // The leader dies; b leads with c. Requests in flight may time out (the typed error);
    // after one route refresh every request is answered again.
    nodes[0].child.take().expect("running").kill_9();
    roles = Roles {
        epoch: 2,
        leader: 1,
        in_sync: vec![1, 2],
    };
    assign(&nodes, 1, &roles);
    assign(&nodes, 2, &roles);
    let mut failed = 0;
    let mut first_error: Option<String> = None;
    let mut answered = 0;
    let killed = Instant::now();
    let mut resumed: Option<std::time::Duration> = None;
    let deadline = Instant::now() + WAIT;
    let mut i = 20;
    while answered < 20 {
        assert!(
            Instant::now() < deadline,
            "requests still fail after the failover"
        );
        match ask(i) {
            Ok(reply) => {
                assert_eq!(reply, format!("re:q{i}"));
                answered += 1;
                resumed.get_or_insert_with(|| killed.elapsed());
            }
            Err(e) => {
                assert!(
                    answered == 0,
                    "a request failed after requests were answered again: {e}"
                );
                failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
                // The caller's retry interval; the loop waits for answers, not on time.
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        i += 1;
    }
    eprintln!(
        "request-reply through a failover: replies resumed {:?} after the kill; {failed} \
         request(s) failed before ({first_error:?})",
        resumed.unwrap_or_default()
    );
}
