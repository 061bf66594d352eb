//! Automatic failover: a nameserver running the controller (one voter here), three brokers
//! in child processes registering with it every 200 ms, a topic with three replicas and
//! `acks=all` created through the controller. The leader of a queue is killed with SIGKILL;
//! nobody intervenes: the controller sees its heartbeats stop, elects an in-sync replica for
//! the next epoch, drops the dead broker from every in-sync set, and tells the brokers, and
//! the producer's next acknowledged send lands on the new leader. The killed broker, started
//! again on its data, is taken back as a follower and, once caught up, into the in-sync set.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use client::{Admin, Message, Producer};
use defibus_tests::{
    ChildBroker, WAIT, broker_config, child_broker_main, client_with, start_nameserver,
};
use nameserver::config::ControllerSettings;
use protocol::control::{Acks, FlushMode, ReplicaRole, TopicConfig};
use testkit::wait_until;

const TOPIC: &str = "A10-3401";
const CHILD_ENTRY: &str = "child_broker";

#[test]
#[ignore = "entry point of the child broker process, run by ChildBroker::spawn"]
fn child_broker() {
    child_broker_main();
}

/// A free loopback port for the controller's Raft listener (its voters name it up front).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Creates the test topic (one queue, three replicas on `ids`, acks=all, sync) on every
/// broker, then proposes it to the controller until it takes it (it must know the brokers
/// from their registrations first).
fn create_replicated_topic(admin: &Admin, endpoints: &[String], ids: &[&str]) {
    let mut topic = TopicConfig::new(&TOPIC.parse().unwrap());
    topic.queue_count = 1;
    topic.read_queue_count = 1;
    topic.write_queue_count = 1;
    topic.flush_mode = FlushMode::Sync;
    topic.replicas = 3;
    topic.acks = Acks::All;
    for endpoint in endpoints {
        admin.create_topic(endpoint, &topic).unwrap();
    }
    let proposal = controller::Command::CreateTopic {
        topic: TOPIC.into(),
        replicas: 3,
        acks: controller::Acks::All,
        assignment: vec![ids.iter().map(|s| s.to_string()).collect()],
    };
    wait_until(
        "the controller to know the brokers and take the topic",
        WAIT,
        || {
            admin
                .controller_propose(&serde_json::to_vec(&proposal).unwrap())
                .is_ok()
        },
    );
}

/// Each queue's leader and epoch as the brokers report them (the highest epoch wins).
fn leaders(admin: &Admin, endpoints: &[String]) -> BTreeMap<u32, (String, u64)> {
    let mut out: BTreeMap<u32, (String, u64)> = BTreeMap::new();
    for endpoint in endpoints {
        let Ok(stats) = admin.stats(endpoint) else {
            continue;
        };
        for q in stats.queues.iter().filter(|q| q.topic == TOPIC) {
            if let Some(r) = &q.replication {
                if r.role == ReplicaRole::Leader
                    && out.get(&q.queue_id).is_none_or(|(_, e)| r.epoch > *e)
                {
                    out.insert(q.queue_id, (stats.broker_id.clone(), r.epoch));
                }
            }
        }
    }
    out
}

#[test]
fn the_controller_fails_a_killed_leader_over_by_itself() {
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let nameserver = start_nameserver(|c| {
        c.controller = Some(ControllerSettings {
            node_id: 1,
            listen_addr: format!("127.0.0.1:{port}").parse().unwrap(),
            voters: vec![format!("1=127.0.0.1:{port}")],
            data_dir: root.path().join("controller"),
            broker_timeout_ms: 1_000,
            reconcile_interval_ms: 100,
        });
    });
    let ids = ["ctl-a", "ctl-b", "ctl-c"];
    let mut brokers: Vec<Option<ChildBroker>> = ids
        .iter()
        .map(|id| {
            let config = broker_config(id, 1, &root.path().join(id), &nameserver);
            Some(ChildBroker::spawn(CHILD_ENTRY, &config))
        })
        .collect();
    let endpoints = |brokers: &[Option<ChildBroker>]| -> Vec<String> {
        brokers
            .iter()
            .flatten()
            .map(|b| format!("127.0.0.1:{}", b.shard_ports()[0]))
            .collect()
    };
    let configure = |c: client::ClientConfig| {
        c.with_route_refresh_interval(Duration::from_millis(500))
            .with_request_timeout(Duration::from_secs(3))
    };
    let client = client_with(&nameserver, configure);
    let admin = Admin::new(&client);
    wait_until("three brokers registered", WAIT, || {
        admin.cluster_info().is_ok_and(|i| i.brokers.len() == 3)
    });
    create_replicated_topic(&admin, &endpoints(&brokers), &ids);
    wait_until("a leader reported for epoch 1", WAIT, || {
        leaders(&admin, &endpoints(&brokers)).get(&0) == Some(&("ctl-a".to_owned(), 1))
    });
    wait_until("the queue routed to its leader", WAIT, || {
        admin
            .topic_route(TOPIC)
            .is_ok_and(|r| r.queues.iter().any(|q| q.broker_id == "ctl-a"))
    });
    let producer = Producer::new(&client).unwrap();
    let mut acked = Vec::new();
    for n in 0..20 {
        let value = format!("before-{n}");
        producer.send(Message::new(TOPIC, value.clone())).unwrap();
        acked.push(value);
    }
    // SIGKILL the leader; then only wait.
    brokers[0].take().unwrap().kill_9();
    let killed = Instant::now();
    let (leader, epoch) = testkit::wait_for("the controller to elect another leader", WAIT, || {
        leaders(&admin, &endpoints(&brokers))
            .get(&0)
            .filter(|(b, e)| b != "ctl-a" && *e >= 2)
            .cloned()
    });
    let elected = killed.elapsed();
    let first = testkit::wait_for("an acknowledged send on the new leader", WAIT, || {
        producer
            .send(Message::new(TOPIC, "after-0".to_owned()))
            .ok()
            .map(|_| killed.elapsed())
    });
    acked.push("after-0".to_owned());
    for n in 1..20 {
        let value = format!("after-{n}");
        producer.send(Message::new(TOPIC, value.clone())).unwrap();
        acked.push(value);
    }
    eprintln!(
        "controller failover: {leader} leads in epoch {epoch} {elected:?} after the kill; first \
         acknowledged send on it {first:?} after the kill (broker timeout 1 s, heartbeats \
         every 200 ms)"
    );
    // The killed broker returns on its data and is taken back into the in-sync set.
    let config = broker_config(ids[0], 1, &root.path().join(ids[0]), &nameserver);
    brokers[0] = Some(ChildBroker::spawn(CHILD_ENTRY, &config));
    wait_until("the returned broker back in sync", WAIT, || {
        let Some(new_leader) = brokers.iter().flatten().find(|b| {
            admin
                .stats(&format!("127.0.0.1:{}", b.shard_ports()[0]))
                .is_ok_and(|s| s.broker_id == leader)
        }) else {
            return false;
        };
        admin
            .stats(&format!("127.0.0.1:{}", new_leader.shard_ports()[0]))
            .is_ok_and(|s| {
                s.queues.iter().any(|q| {
                    q.topic == TOPIC
                        && q.replication.as_ref().is_some_and(|r| {
                            r.followers
                                .iter()
                                .any(|f| f.broker_id == "ctl-a" && f.in_sync)
                        })
                })
            })
    });
    // Every acknowledged message is there, once.
    let consumer_client = client_with(&nameserver, configure);
    let consumer = client::Consumer::subscribe_with(
        &consumer_client,
        client::ConsumerOptions::new(TOPIC, "audit", client::ConsumeMode::Clustering)
            .start_from(client::StartFrom::Earliest),
    )
    .unwrap();
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    wait_until("every acknowledged message consumed", WAIT, || {
        while let Ok(Some(m)) = consumer.recv(Duration::from_millis(20)) {
            *got.entry(String::from_utf8(m.value).unwrap()).or_default() += 1;
        }
        acked.iter().all(|v| got.contains_key(v))
    });
    let twice: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored twice: {twice:?}");
}

#[test]
fn failovers_go_on_when_the_controllers_own_leader_dies() {
    let root = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let voters: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
        .collect();
    let mut nameservers: Vec<Option<nameserver::NameserverHandle>> = (0..3)
        .map(|i| {
            let voters = voters.clone();
            let dir = root.path().join(format!("controller-{}", i + 1));
            Some(start_nameserver(|c| {
                c.controller = Some(ControllerSettings {
                    node_id: i as u64 + 1,
                    listen_addr: format!("127.0.0.1:{}", ports[i]).parse().unwrap(),
                    voters,
                    data_dir: dir,
                    broker_timeout_ms: 1_000,
                    reconcile_interval_ms: 100,
                });
            }))
        })
        .collect();
    let addrs: Vec<String> = nameservers
        .iter()
        .flatten()
        .map(|n| n.local_addr().to_string())
        .collect();
    let ids = ["ha-a", "ha-b", "ha-c"];
    let mut brokers: Vec<Option<ChildBroker>> = ids
        .iter()
        .map(|id| {
            let mut config = broker_config(
                id,
                1,
                &root.path().join(id),
                nameservers[0].as_ref().unwrap(),
            );
            config.nameservers = addrs.clone();
            Some(ChildBroker::spawn(CHILD_ENTRY, &config))
        })
        .collect();
    let endpoints = |brokers: &[Option<ChildBroker>]| -> Vec<String> {
        brokers
            .iter()
            .flatten()
            .map(|b| format!("127.0.0.1:{}", b.shard_ports()[0]))
            .collect()
    };
    // Clients know every nameserver, so losing one loses nothing.
    let client = client::Client::new(
        client::ClientConfig::new(addrs.clone(), "A10")
            .unwrap()
            .with_route_refresh_interval(Duration::from_millis(500))
            .with_request_timeout(Duration::from_secs(3)),
    )
    .unwrap();
    let admin = Admin::new(&client);
    wait_until("three brokers registered", WAIT, || {
        admin.cluster_info().is_ok_and(|i| i.brokers.len() == 3)
    });
    create_replicated_topic(&admin, &endpoints(&brokers), &ids);
    wait_until("ha-a leading epoch 1", WAIT, || {
        leaders(&admin, &endpoints(&brokers)).get(&0) == Some(&("ha-a".to_owned(), 1))
    });
    // The first voter initialised the group and is its first leader (openraft elects the
    // initialising node at once): stop its nameserver.
    nameservers[0].take().unwrap().shutdown().unwrap();
    // Then kill the queue's leader: the two remaining voters elect among themselves and
    // still fail the queue over.
    brokers[0].take().unwrap().kill_9();
    let killed = Instant::now();
    let (leader, epoch) = testkit::wait_for("another queue leader", WAIT, || {
        leaders(&admin, &endpoints(&brokers))
            .get(&0)
            .filter(|(b, e)| b != "ha-a" && *e >= 2)
            .cloned()
    });
    let producer = Producer::new(&client).unwrap();
    let first = testkit::wait_for("an acknowledged send on the new leader", WAIT, || {
        producer
            .send(Message::new(TOPIC, "after".to_owned()))
            .ok()
            .map(|_| killed.elapsed())
    });
    eprintln!(
        "with the controller's leader gone: {leader} leads in epoch {epoch}; first acknowledged \
         send {first:?} after the queue leader's kill"
    );
}
