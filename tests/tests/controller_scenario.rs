//! Automatic failover, with the controller deciding: three brokers in child processes
//! sending it heartbeats, a topic with three replicas and `acks=all` created through the
//! controller, and nobody else intervening. The first scenario runs the default timings,
//! the others faster registrations and a 1 s broker timeout.
//!
//! - The queue's leader killed with SIGKILL: the controller sees its heartbeats stop, elects
//!   an in-sync replica for the next epoch, drops the dead broker from every in-sync set and
//!   tells the brokers; the producer's next acknowledged send lands on the new leader. The
//!   killed broker, started again on its data, is taken back as a follower and, once caught
//!   up, into the in-sync set.
//! - Three nameservers (three voters) in child processes, the controller's own Raft leader
//!   killed with SIGKILL, then the queue's leader: the two remaining voters still hold the
//!   topic's metadata and fail the queue over.
//! - A partition made with network namespaces between the queue's leader and the controller
//!   (every process in its own namespace on a bridge): a new leader is elected, the cut-off
//!   leader acknowledges nothing it could not commit, and after the partition heals it
//!   rejoins as a follower with a log byte for byte like the others.
//! - A follower killed and its data directory wiped: the controller drops it from the
//!   in-sync set; restarted empty (and the topic created on it again), it copies the log
//!   back from the leader and is taken back into the set.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use client::{Admin, Message, Producer};
use defibus_tests::child_nameserver::{ChildNameserver, child_nameserver_main};
use defibus_tests::netns::Net;
use defibus_tests::replica::{self, Conn, check_history};
use defibus_tests::{
    ChildBroker, WAIT, broker_config, broker_config_for, child_broker_main, client_with,
    start_nameserver,
};
use nameserver::NameserverConfig;
use nameserver::config::ControllerSettings;
use protocol::codes::Status;
use protocol::control::{Acks, FlushMode, ReplicaRole, TopicConfig};
use testkit::wait_until;

const TOPIC: &str = "A10-3401";
const CHILD_ENTRY: &str = "child_broker";
const NAMESERVER_ENTRY: &str = "child_nameserver";

#[test]
#[ignore = "entry point of the child broker process, run by ChildBroker::spawn"]
fn child_broker() {
    child_broker_main();
}

#[test]
#[ignore = "entry point of the child nameserver process, run by ChildNameserver::spawn"]
fn child_nameserver() {
    child_nameserver_main();
}

/// A free loopback port for the controller's Raft listener (its voters name it up front).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The settings of a controller that is its own only voter, on a free loopback port, with
/// its data under `root`.
fn single_voter(
    root: &Path,
    broker_timeout_ms: u64,
    reconcile_interval_ms: u64,
) -> ControllerSettings {
    let port = free_port();
    ControllerSettings {
        node_id: 1,
        listen_addr: format!("127.0.0.1:{port}").parse().unwrap(),
        voters: vec![format!("1=127.0.0.1:{port}")],
        data_dir: root.join("controller"),
        broker_timeout_ms,
        reconcile_interval_ms,
    }
}

/// The test topic: one queue, three replicas, acks=all, sync flush.
fn replicated_topic() -> TopicConfig {
    let mut topic = TopicConfig::new(&TOPIC.parse().unwrap());
    topic.queue_count = 1;
    topic.read_queue_count = 1;
    topic.write_queue_count = 1;
    topic.flush_mode = FlushMode::Sync;
    topic.replicas = 3;
    topic.acks = Acks::All;
    topic
}

/// Creates the test topic ([`replicated_topic`], replicas on `ids`) on every broker, then
/// proposes it to the controller until it takes it (it must know the brokers from their
/// registrations first).
fn create_replicated_topic(admin: &Admin, endpoints: &[String], ids: &[&str]) {
    let topic = replicated_topic();
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
    let nameserver = start_nameserver(|c| {
        c.controller = Some(single_voter(
            root.path(),
            nameserver::config::CONTROLLER_BROKER_TIMEOUT_MS_DEFAULT,
            nameserver::config::RECONCILE_INTERVAL_MS_DEFAULT,
        ));
    });
    // The brokers' default timings: heartbeats every 500 ms, registrations every 3 s.
    let default_timings = |id: &str| {
        let mut config = broker_config(id, 1, &root.path().join(id), &nameserver);
        config.register_interval_ms = engine::config::REGISTER_INTERVAL_MS_DEFAULT;
        config
    };
    let ids = ["ctl-a", "ctl-b", "ctl-c"];
    let mut brokers: Vec<Option<ChildBroker>> = ids
        .iter()
        .map(|id| Some(ChildBroker::spawn(CHILD_ENTRY, &default_timings(id))))
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
         acknowledged send on it {first:?} after the kill (default timings: heartbeats every \
         {} ms, broker timeout {} ms, registrations every {} ms)",
        engine::config::CONTROLLER_HEARTBEAT_INTERVAL_MS_DEFAULT,
        nameserver::config::CONTROLLER_BROKER_TIMEOUT_MS_DEFAULT,
        engine::config::REGISTER_INTERVAL_MS_DEFAULT
    );
    // The killed broker returns on its data and is taken back into the in-sync set.
    brokers[0] = Some(ChildBroker::spawn(CHILD_ENTRY, &default_timings(ids[0])));
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

/// A nameserver with the controller as voter `node_id` of `voters`, listening on `addr`.
fn controller_nameserver(
    addr: SocketAddr,
    node_id: u64,
    raft: SocketAddr,
    voters: Vec<String>,
    data_dir: PathBuf,
) -> NameserverConfig {
    NameserverConfig {
        listen_addr: addr,
        broker_expiry_ms: 3000,
        sweep_interval_ms: 200,
        controller: Some(ControllerSettings {
            node_id,
            listen_addr: raft,
            voters,
            data_dir,
            broker_timeout_ms: 1_000,
            reconcile_interval_ms: 100,
        }),
        ..NameserverConfig::default()
    }
}

#[test]
fn failovers_go_on_when_the_controllers_own_leader_is_killed() {
    let root = tempfile::tempdir().unwrap();
    let raft_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let voters: Vec<String> = raft_ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
        .collect();
    let config = |i: usize| {
        controller_nameserver(
            format!("127.0.0.1:{}", ports[i]).parse().unwrap(),
            i as u64 + 1,
            format!("127.0.0.1:{}", raft_ports[i]).parse().unwrap(),
            voters.clone(),
            root.path().join(format!("controller-{}", i + 1)),
        )
    };
    let mut nameservers: Vec<Option<ChildNameserver>> = (0..3)
        .map(|i| Some(ChildNameserver::spawn(None, NAMESERVER_ENTRY, &config(i))))
        .collect();
    let addrs: Vec<String> = nameservers
        .iter()
        .flatten()
        .map(ChildNameserver::endpoint)
        .collect();
    let ids = ["ha-a", "ha-b", "ha-c"];
    let mut brokers: Vec<Option<ChildBroker>> = ids
        .iter()
        .map(|id| {
            let config = broker_config_for(id, 1, &root.path().join(id), addrs.clone());
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
    // initialising node at once): kill -9 its process, Raft log and all in flight.
    nameservers[0].take().unwrap().kill_9();
    // Then kill the queue's leader: the two remaining voters elect among themselves, still
    // know the topic's replicas and in-sync set (the metadata survived), and fail it over.
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
        "with the controller's leader killed: {leader} leads in epoch {epoch}; first \
         acknowledged send {first:?} after the queue leader's kill"
    );
    // The killed voter, started again on its Raft data, catches up with the group: the
    // queue's leader comes back to ha-a's old broker as a follower through it as well.
    nameservers[0] = Some(ChildNameserver::spawn(None, NAMESERVER_ENTRY, &config(0)));
    let config = broker_config_for(ids[0], 1, &root.path().join(ids[0]), addrs.clone());
    brokers[0] = Some(ChildBroker::spawn(CHILD_ENTRY, &config));
    wait_until("the returned broker following the new leader", WAIT, || {
        let b = brokers[0].as_ref().unwrap();
        admin
            .stats(&format!("127.0.0.1:{}", b.shard_ports()[0]))
            .is_ok_and(|s| {
                s.queues.iter().any(|q| {
                    q.topic == TOPIC
                        && q.replication
                            .as_ref()
                            .is_some_and(|r| r.role == ReplicaRole::Follower && r.epoch == epoch)
                })
            })
    });
}

#[test]
fn a_leader_cut_off_from_the_controller_is_replaced_and_commits_nothing_after() {
    let mut net = match Net::create() {
        Ok(net) => net,
        Err(why) => {
            eprintln!(
                "SKIPPED: network namespaces cannot be made here (root and iproute2 are \
                 needed): {why}"
            );
            return;
        }
    };
    const CONTROLLER: u8 = 2;
    let hosts = [11u8, 12, 13];
    let ctl_ns = net.add_node(CONTROLLER).unwrap();
    let broker_ns: Vec<String> = hosts.iter().map(|&h| net.add_node(h).unwrap()).collect();
    let root = tempfile::tempdir().unwrap();
    let ctl = net.address(CONTROLLER);
    let nameserver = ChildNameserver::spawn(
        Some(&ctl_ns),
        NAMESERVER_ENTRY,
        &controller_nameserver(
            SocketAddr::new(ctl.into(), 9876),
            1,
            SocketAddr::new(ctl.into(), 9886),
            vec![format!("1={ctl}:9886")],
            root.path().join("controller"),
        ),
    );
    let ids = ["cut-a", "cut-b", "cut-c"];
    let brokers: Vec<ChildBroker> = (0..3)
        .map(|i| {
            let mut config = broker_config_for(
                ids[i],
                1,
                &root.path().join(ids[i]),
                vec![nameserver.endpoint()],
            );
            config.listen_address = net.address(hosts[i]).to_string();
            ChildBroker::spawn_in(Some(&broker_ns[i]), CHILD_ENTRY, &config)
        })
        .collect();
    let endpoints: Vec<String> = (0..3)
        .map(|i| format!("{}:{}", net.address(hosts[i]), brokers[i].shard_ports()[0]))
        .collect();
    let client = client::Client::new(
        client::ClientConfig::new([nameserver.endpoint()], "A10")
            .unwrap()
            .with_request_timeout(Duration::from_secs(3)),
    )
    .unwrap();
    let admin = Admin::new(&client);
    wait_until("three brokers registered", WAIT, || {
        admin.cluster_info().is_ok_and(|i| i.brokers.len() == 3)
    });
    create_replicated_topic(&admin, &endpoints, &ids);
    wait_until("cut-a leading epoch 1", WAIT, || {
        leaders(&admin, &endpoints).get(&0) == Some(&("cut-a".to_owned(), 1))
    });

    // A producer on the leader, which stays reachable from here throughout.
    let acked_old = Arc::new(Mutex::new(Vec::<String>::new()));
    let old_producer = {
        let acked = acked_old.clone();
        let endpoint = endpoints[0].clone();
        thread::spawn(move || replica::produce_until_refused(endpoint, TOPIC, "old", &acked))
    };
    wait_until("produces acknowledged by the leader", WAIT, || {
        acked_old.lock().unwrap().len() >= 20
    });

    // Cut the leader off from the controller only: it still reaches its followers and they
    // it, and this process reaches all of them.
    net.partition(hosts[0], CONTROLLER);
    let cut = Instant::now();
    let old_at_cut = acked_old.lock().unwrap().len();
    let (leader, epoch) = testkit::wait_for("the controller to elect another leader", WAIT, || {
        leaders(&admin, &endpoints)
            .get(&0)
            .filter(|(b, e)| b != "cut-a" && *e >= 2)
            .cloned()
    });
    let elected = cut.elapsed();
    let old_at_election = acked_old.lock().unwrap().len();
    let new = ids.iter().position(|id| *id == leader).unwrap();
    // The old leader still believes it leads (nothing can tell it), but its followers now
    // fetch from the new leader, so nothing it takes reaches its commit point: its producer
    // gets no acknowledgement from here on (the history check below holds it to that).
    let mut conn = Conn::connect(endpoints[new].as_str()).unwrap();
    let mut acked_new = Vec::new();
    let first = testkit::wait_for("an acknowledged produce on the new leader", WAIT, || {
        matches!(conn.produce(TOPIC, 0, "new-0"), Ok(Ok(()))).then(|| cut.elapsed())
    });
    acked_new.push("new-0".to_owned());
    for n in 1..50 {
        let value = format!("new-{n}");
        let answer = conn.produce(TOPIC, 0, &value).unwrap();
        assert!(answer.is_ok(), "the new leader takes produces: {answer:?}");
        acked_new.push(value);
    }
    assert!(
        !old_producer.is_finished(),
        "the cut-off leader answered its waiting produce before it could know of epoch {epoch}"
    );

    // Heal: the controller reaches the old leader again and makes it a follower of the new
    // epoch; its waiting produce fails with NotLeader, its uncommitted tail is cut, and it
    // catches up and rejoins the in-sync set.
    net.heal(hosts[0], CONTROLLER);
    let (status, message) = old_producer
        .join()
        .unwrap()
        .expect("the deposed leader answers its waiting produce");
    assert_eq!(status, Status::NotLeader.code(), "{message}");
    wait_until("the old leader back in sync as a follower", WAIT, || {
        let mut conn = Conn::connect(endpoints[new].as_str()).unwrap();
        let caught_up = replica::follower_end(&mut conn, TOPIC, "cut-a", epoch)
            .is_some_and(|(end, log_end)| end >= log_end);
        caught_up
            && admin.stats(&endpoints[new]).is_ok_and(|s| {
                s.queues.iter().any(|q| {
                    q.topic == TOPIC
                        && q.replication.as_ref().is_some_and(|r| {
                            r.followers.iter().all(|f| f.in_sync) && r.followers.len() == 2
                        })
                })
            })
    });
    let old_total = acked_old.lock().unwrap().len();
    eprintln!(
        "partition: {leader} leads in epoch {epoch} {elected:?} after the cut; first \
         acknowledged produce on it {first:?} after the cut (broker timeout 1 s, registrations \
         every 200 ms); the cut-off leader acknowledged {old_at_cut} before the cut, {} \
         between the cut and the election, {} after",
        old_at_election - old_at_cut,
        old_total - old_at_election
    );
    let dirs: Vec<PathBuf> = ids.iter().map(|id| root.path().join(id)).collect();
    for broker in brokers {
        broker.kill_9();
    }
    let (values, batches) = replica::stored(&dirs[new], TOPIC);
    check_history(
        &acked_old.lock().unwrap(),
        &values,
        "the old leader's producer",
    );
    check_history(&acked_new, &values, "the new leader's producer");
    for (i, dir) in dirs.iter().enumerate() {
        assert_eq!(
            replica::stored(dir, TOPIC).1,
            batches,
            "{} differs from the leader",
            ids[i]
        );
    }
}

#[test]
fn a_follower_whose_disk_was_wiped_catches_up_and_rejoins_the_in_sync_set() {
    let root = tempfile::tempdir().unwrap();
    let nameserver = start_nameserver(|c| {
        c.controller = Some(single_voter(root.path(), 1_000, 100));
    });
    let ids = ["wipe-a", "wipe-b", "wipe-c"];
    let config = |id: &str| broker_config(id, 1, &root.path().join(id), &nameserver);
    let mut brokers: Vec<ChildBroker> = ids
        .iter()
        .map(|id| ChildBroker::spawn(CHILD_ENTRY, &config(id)))
        .collect();
    let endpoint = |b: &ChildBroker| format!("127.0.0.1:{}", b.shard_ports()[0]);
    let client = client_with(&nameserver, |c| c);
    let admin = Admin::new(&client);
    wait_until("three brokers registered", WAIT, || {
        admin.cluster_info().is_ok_and(|i| i.brokers.len() == 3)
    });
    let endpoints: Vec<String> = brokers.iter().map(endpoint).collect();
    create_replicated_topic(&admin, &endpoints, &ids);
    wait_until("wipe-a leading epoch 1", WAIT, || {
        leaders(&admin, &endpoints).get(&0) == Some(&("wipe-a".to_owned(), 1))
    });
    let mut leader = Conn::connect(endpoints[0].as_str()).unwrap();
    let mut acked = Vec::new();
    let mut produce = |leader: &mut Conn, n: usize| {
        let value = format!("m{n}");
        let answer = leader.produce(TOPIC, 0, &value).unwrap();
        assert!(answer.is_ok(), "the leader takes produces: {answer:?}");
        acked.push(value);
    };
    for n in 0..200 {
        produce(&mut leader, n);
    }
    // wipe-c is lost with its disk: the controller drops it from the in-sync set, and
    // produces go on with two copies.
    let wiped = root.path().join(ids[2]);
    brokers.pop().unwrap().kill_9();
    std::fs::remove_dir_all(&wiped).unwrap();
    let in_sync = |leader: &mut Conn| -> Vec<String> {
        let stats = leader.stats();
        let queue = stats.queues.iter().find(|q| q.topic == TOPIC).unwrap();
        let replication = queue.replication.as_ref().unwrap();
        let mut set: Vec<String> = replication
            .followers
            .iter()
            .filter(|f| f.in_sync)
            .map(|f| f.broker_id.clone())
            .collect();
        set.push(stats.broker_id.clone());
        set.sort();
        set
    };
    wait_until("wipe-c dropped from the in-sync set", WAIT, || {
        !in_sync(&mut leader).contains(&ids[2].to_owned())
    });
    for n in 200..400 {
        produce(&mut leader, n);
    }
    // A new disk: the broker starts empty; the operator creates the topic on it again (as
    // `admin topic create` does on every broker lacking it) and the controller does the rest.
    std::fs::create_dir_all(&wiped).unwrap();
    brokers.push(ChildBroker::spawn(CHILD_ENTRY, &config(ids[2])));
    admin
        .create_topic(&endpoint(&brokers[2]), &replicated_topic())
        .unwrap();
    let caught_up = Instant::now();
    wait_until("wipe-c back in the in-sync set", WAIT, || {
        in_sync(&mut leader) == ids.map(String::from).to_vec()
    });
    let rejoined = caught_up.elapsed();
    // Back in the set, a produce is acknowledged only once wipe-c holds it too.
    for n in 400..410 {
        produce(&mut leader, n);
    }
    wait_until("wipe-c holding the whole log", WAIT, || {
        replica::follower_end(&mut leader, TOPIC, ids[2], 1)
            .is_some_and(|(end, log_end)| end >= log_end)
    });
    eprintln!(
        "wiped follower: 400 records copied back, the replica in sync {rejoined:?} after the \
         topic was created on its empty disk"
    );
    drop(leader);
    for broker in brokers {
        broker.kill_9();
    }
    let (values, batches) = replica::stored(&root.path().join(ids[0]), TOPIC);
    check_history(&acked, &values, "wiped follower");
    for id in &ids[1..] {
        assert_eq!(
            replica::stored(&root.path().join(id), TOPIC).1,
            batches,
            "{id} differs from the leader"
        );
    }
}
