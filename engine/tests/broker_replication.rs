//! Replicated queues on three real brokers in this process, with roles assigned the way the
//! controller assigns them (`QueueRole`): `acks=all` produces are answered only once every
//! in-sync replica holds them, followers copy the leader's log byte for byte, a deposed
//! leader acknowledges nothing after the new epoch and rejoins as a follower with its
//! unacknowledged tail cut, and a replica whose data was wiped catches up from the leader.

mod broker_common;

use std::path::{Path, PathBuf};
use std::thread;

use broker_common::*;
use bytes::Bytes;
use engine::{Broker, FlushMode as LogFlushMode, Log, LogConfig};
use protocol::codes::{Command, Status};
use protocol::control::{self, Acks, FlushMode, QueueAssignment, SubscriptionMode};

const TOPIC: &str = "A10-3001";
const IDS: [&str; 3] = ["broker-a", "broker-b", "broker-c"];

struct Cluster {
    dirs: Vec<tempfile::TempDir>,
    brokers: Vec<Option<Broker>>,
}

impl Cluster {
    fn start() -> Self {
        init_logs();
        let dirs: Vec<_> = IDS.iter().map(|_| tempfile::tempdir().unwrap()).collect();
        let brokers = IDS
            .iter()
            .zip(&dirs)
            .map(|(id, dir)| Some(start_broker(id, dir.path())))
            .collect();
        let cluster = Self { dirs, brokers };
        let mut config = topic_config(TOPIC, 1, FlushMode::Sync);
        config.replicas = 3;
        config.acks = Acks::All;
        for i in 0..3 {
            cluster.client(i, "admin").create_topic(&config);
        }
        cluster
    }

    fn port(&self, i: usize) -> u16 {
        self.brokers[i].as_ref().expect("running").shard_ports()[0]
    }

    fn client(&self, i: usize, name: &str) -> Client {
        Client::connect(self.port(i), name)
    }

    /// Tells broker `i` the queue's roles for `epoch`: `leader` leads, `in_sync` are in sync.
    fn assign(&self, i: usize, epoch: u64, leader: usize, in_sync: &[usize]) {
        let assignment = QueueAssignment {
            topic: TOPIC.into(),
            queue_id: 0,
            epoch,
            leader: IDS[leader].into(),
            leader_endpoint: format!("127.0.0.1:{}", self.port(leader)),
            replicas: IDS.iter().map(|s| s.to_string()).collect(),
            in_sync: in_sync.iter().map(|&r| IDS[r].to_string()).collect(),
        };
        let body = control::encode(&assignment).unwrap();
        self.client(i, "controller")
            .call_ok(Command::QueueRole, &[], &body);
    }

    fn stop(&mut self, i: usize) {
        if let Some(broker) = self.brokers[i].take() {
            broker.shutdown().unwrap();
        }
    }

    fn restart(&mut self, i: usize) {
        self.brokers[i] = Some(start_broker(IDS[i], self.dirs[i].path()));
    }

    fn queue_dir(&self, i: usize) -> PathBuf {
        engine::topic::queue_dir(self.dirs[i].path(), TOPIC, 0)
    }

    fn stop_all(&mut self) {
        for i in 0..3 {
            self.stop(i);
        }
    }
}

fn start_broker(id: &str, dir: &Path) -> Broker {
    let mut config = config(dir, 1);
    config.broker_id = id.into();
    Broker::start(config).expect("broker starts")
}

fn produce(client: &mut Client, value: &str) -> Result<u64, (Status, String)> {
    let batch = batch(
        &[value.as_bytes()],
        protocol::record::MessageType::Event,
        &[],
    );
    let frame = client.produce_batch(Command::Produce, TOPIC, 0, &batch);
    match error_of(&frame) {
        Some(error) if frame.header.status != 0 => Err(error),
        _ => Ok(control::decode::<control::ProduceAck>(&frame.body)
            .unwrap()
            .next_offset),
    }
}

/// Every stored batch of the (closed) queue log in `dir`, and its leader epochs.
fn stored(dir: &Path) -> (Vec<Bytes>, Vec<(u64, u64)>) {
    let dir = dir.to_path_buf();
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let mut config = LogConfig::new(&dir);
            config.flush = LogFlushMode::Sync;
            config.offset_reservation = false;
            let log = Log::open(config).await.unwrap();
            let mut batches = Vec::new();
            let mut offset = log.start_offset();
            while offset < log.next_offset() {
                let got = log.read(offset, 1 << 20).await.unwrap();
                offset = protocol::record::BatchHeader::decode(got.last().unwrap())
                    .unwrap()
                    .next_offset();
                batches.extend(got);
            }
            let epochs = log
                .epochs()
                .starts()
                .iter()
                .map(|s| (s.epoch, s.start_offset))
                .collect();
            log.close().await.unwrap();
            (batches, epochs)
        })
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn acks_all_answers_once_every_in_sync_replica_holds_the_batch() {
    let mut cluster = Cluster::start();
    for i in 0..3 {
        cluster.assign(i, 1, 0, &[0, 1, 2]);
    }
    let mut producer = cluster.client(0, "producer");
    for n in 0..50 {
        assert_eq!(produce(&mut producer, &format!("m{n}")), Ok(n + 1));
    }
    // Followers take no produces, and say who leads.
    let refused = produce(&mut cluster.client(1, "stray"), "x").unwrap_err();
    assert_eq!(refused.0, Status::NotLeader);
    assert!(
        refused.1.contains("broker-a leads it in epoch 1"),
        "{}",
        refused.1
    );

    // Consumers of the leader get every committed record.
    let mut consumer = cluster.client(0, "consumer");
    consumer.subscribe(TOPIC, "g1", SubscriptionMode::Clustering, 100);
    let got = consumer.collect(50);
    assert_eq!(got.len(), 50);
    drop(producer);
    drop(consumer);

    cluster.stop_all();
    let (leader, epochs) = stored(&cluster.queue_dir(0));
    assert_eq!(leader.len(), 50);
    assert_eq!(epochs, [(1, 0)]);
    for (i, id) in IDS.iter().enumerate().skip(1) {
        let (copy, copy_epochs) = stored(&cluster.queue_dir(i));
        assert_eq!(copy, leader, "{id} holds the leader's bytes");
        assert_eq!(copy_epochs, epochs);
    }
}

#[test]
fn a_deposed_leader_acknowledges_nothing_after_the_new_epoch_and_rejoins_as_a_follower() {
    let mut cluster = Cluster::start();
    for i in 0..3 {
        cluster.assign(i, 1, 0, &[0, 1, 2]);
    }
    let mut old = cluster.client(0, "producer-a");
    for n in 0..10 {
        produce(&mut old, &format!("e1-{n}")).unwrap();
    }
    // Epoch 2: b leads with c; a has not heard (a partition or a pause).
    cluster.assign(1, 2, 1, &[1, 2]);
    cluster.assign(2, 2, 1, &[1, 2]);
    // a still takes the produce but cannot get it committed: its followers left.
    let stuck = thread::spawn(move || produce(&mut old, "never-acked"));
    let mut new = cluster.client(1, "producer-b");
    for n in 0..10 {
        produce(&mut new, &format!("e2-{n}")).unwrap();
    }
    assert!(
        !stuck.is_finished(),
        "a deposed leader acknowledged a produce"
    );
    // a learns of epoch 2: the waiting produce fails, and it follows b.
    cluster.assign(0, 2, 1, &[1, 2]);
    let failed = stuck.join().unwrap().unwrap_err();
    assert_eq!(failed.0, Status::NotLeader, "{}", failed.1);
    assert!(failed.1.contains("retry on the new leader"), "{}", failed.1);
    // Back in sync once b's in-sync set has it again; produces then need all three.
    cluster.assign(1, 2, 1, &[0, 1, 2]);
    for n in 10..15 {
        produce(&mut new, &format!("e2-{n}")).unwrap();
    }
    drop(new);

    cluster.stop_all();
    let (leader, epochs) = stored(&cluster.queue_dir(1));
    assert_eq!(leader.len(), 25);
    assert_eq!(epochs, [(1, 0), (2, 10)]);
    let (a, a_epochs) = stored(&cluster.queue_dir(0));
    assert_eq!(a, leader, "a cut the unacknowledged batch and copied b's");
    assert_eq!(a_epochs, epochs);
    let values: Vec<Vec<u8>> = a
        .iter()
        .flat_map(|b| {
            protocol::record::BatchView::parse(b, protocol::record::BATCH_LEN_MAX)
                .unwrap()
                .records()
                .map(|r| r.value().to_vec())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(!values.iter().any(|v| v == b"never-acked"));
}

#[test]
fn a_replica_whose_data_was_wiped_catches_up_from_the_leader() {
    let mut cluster = Cluster::start();
    for i in 0..3 {
        cluster.assign(i, 1, 0, &[0, 1, 2]);
    }
    let mut producer = cluster.client(0, "producer");
    for n in 0..20 {
        produce(&mut producer, &format!("m{n}")).unwrap();
    }
    // c is lost with its disk; the controller drops it from the in-sync set.
    cluster.stop(2);
    cluster.assign(0, 1, 0, &[0, 1]);
    for n in 20..30 {
        produce(&mut producer, &format!("m{n}")).unwrap();
    }
    std::fs::remove_dir_all(cluster.dirs[2].path()).unwrap();
    std::fs::create_dir_all(cluster.dirs[2].path()).unwrap();
    cluster.restart(2);
    let mut config = topic_config(TOPIC, 1, FlushMode::Sync);
    config.replicas = 3;
    config.acks = Acks::All;
    cluster.client(2, "admin").create_topic(&config);
    cluster.assign(2, 1, 0, &[0, 1]);
    // Once back in the set, a produce is acknowledged only when c holds it too.
    cluster.assign(0, 1, 0, &[0, 1, 2]);
    assert_eq!(produce(&mut producer, "m30"), Ok(31));
    drop(producer);
    cluster.stop_all();
    let (leader, _) = stored(&cluster.queue_dir(0));
    let (c, _) = stored(&cluster.queue_dir(2));
    assert_eq!(leader.len(), 31);
    assert_eq!(c, leader);
}

#[test]
fn consumer_offsets_move_with_their_queue() {
    let cluster = Cluster::start();
    for i in 0..3 {
        cluster.assign(i, 1, 0, &[0, 1, 2]);
    }
    let mut producer = cluster.client(0, "producer");
    for n in 0..10 {
        produce(&mut producer, &format!("m{n}")).unwrap();
    }
    let mut consumer = cluster.client(0, "consumer");
    let sub = consumer.subscribe(TOPIC, "g1", SubscriptionMode::Clustering, 100);
    consumer.collect(10);
    consumer.commit(sub.subscription_id, 0, 7);
    let fetch_offset = |i: usize| {
        let request = control::FetchOffset {
            topic: TOPIC.into(),
            group: "g1".into(),
            queue_id: 0,
        };
        let body = cluster.client(i, "reader").call_ok(
            Command::FetchOffset,
            &[],
            &control::encode(&request).unwrap(),
        );
        control::decode::<control::OffsetReply>(&body)
            .unwrap()
            .offset
    };
    // The followers hold the commit once their next fetch brought it (within a fetch's wait).
    for i in 1..3 {
        testkit::wait_for("the committed offset on a follower", WAIT, || {
            (fetch_offset(i) == Some(7)).then_some(())
        });
    }
    // After a failover to b, the group resumes where it committed.
    cluster.assign(1, 2, 1, &[1, 2]);
    cluster.assign(2, 2, 1, &[1, 2]);
    cluster.assign(0, 2, 1, &[1, 2]);
    assert_eq!(fetch_offset(1), Some(7));
    let mut resumed = cluster.client(1, "consumer-2");
    resumed.subscribe(TOPIC, "g1", SubscriptionMode::Clustering, 100);
    let got = resumed.collect(3);
    let offsets: Vec<u64> = got.iter().map(|(_, o, _)| *o).collect();
    assert_eq!(offsets, [7, 8, 9]);
}

#[test]
fn bad_replication_requests_get_clear_refusals_and_change_nothing() {
    let cluster = Cluster::start();
    for i in 0..3 {
        cluster.assign(i, 2, 0, &[0, 1, 2]);
    }
    let mut producer = cluster.client(0, "producer");
    produce(&mut producer, "m0").unwrap();
    let mut admin = cluster.client(0, "admin");
    let refusal = |client: &mut Client, command: Command, body: Vec<u8>| {
        let frame = client.call(command, &[], &body);
        assert_ne!(frame.header.status, 0, "{command} was accepted");
        error_of(&frame).expect("an error reply")
    };
    let assignment = |epoch: u64, replicas: &[&str]| QueueAssignment {
        topic: TOPIC.into(),
        queue_id: 0,
        epoch,
        leader: "broker-a".into(),
        leader_endpoint: format!("127.0.0.1:{}", cluster.port(0)),
        replicas: replicas.iter().map(|s| s.to_string()).collect(),
        in_sync: vec!["broker-a".into()],
    };
    // An older epoch, a broker that is not a replica, a leader that is not a replica.
    let (status, message) = refusal(
        &mut admin,
        Command::QueueRole,
        control::encode(&assignment(1, &IDS)).unwrap(),
    );
    assert_eq!(status, Status::StaleEpoch, "{message}");
    let (status, message) = refusal(
        &mut admin,
        Command::QueueRole,
        control::encode(&assignment(3, &["broker-b", "broker-c", "broker-x"])).unwrap(),
    );
    assert_eq!(status, Status::InvalidArgument, "{message}");
    assert!(message.contains("leader must be a replica"), "{message}");
    let mut stranger = assignment(3, &["broker-a", "broker-x"]);
    stranger.leader = "broker-x".into();
    stranger.in_sync = vec!["broker-x".into()];
    let (status, message) = refusal(
        &mut cluster.client(1, "admin"),
        Command::QueueRole,
        control::encode(&stranger).unwrap(),
    );
    assert_eq!(status, Status::InvalidArgument, "{message}");
    assert!(message.contains("broker-b is not a replica"), "{message}");
    // Fetches: from a stranger, in another epoch, past the leader's end, to a follower.
    let fetch = |replica: &str, epoch: u64, offset: u64| {
        control::encode(&control::ReplicaFetch {
            topic: TOPIC.into(),
            queue_id: 0,
            replica: replica.into(),
            epoch,
            offset,
            max_bytes: u32::MAX,
            max_wait_ms: 0,
            offsets_generation: u64::MAX,
        })
        .unwrap()
    };
    let (status, message) = refusal(&mut admin, Command::ReplicaFetch, fetch("broker-x", 2, 0));
    assert_eq!(status, Status::InvalidArgument, "{message}");
    let (status, _) = refusal(&mut admin, Command::ReplicaFetch, fetch("broker-b", 1, 0));
    assert_eq!(status, Status::StaleEpoch);
    let (status, message) = refusal(&mut admin, Command::ReplicaFetch, fetch("broker-b", 2, 99));
    assert_eq!(status, Status::InvalidArgument, "{message}");
    assert!(message.contains("past the leader's end"), "{message}");
    let (status, _) = refusal(
        &mut cluster.client(1, "admin"),
        Command::ReplicaFetch,
        fetch("broker-c", 2, 0),
    );
    assert_eq!(status, Status::NotLeader);
    // Garbage bodies are malformed, not a crash.
    let (status, _) = refusal(&mut admin, Command::QueueRole, vec![7; 40]);
    assert_eq!(status, Status::MalformedFrame);
    let (status, _) = refusal(&mut admin, Command::ReplicaFetch, vec![7; 40]);
    assert_eq!(status, Status::MalformedFrame);
    // The queue goes on as it was.
    assert_eq!(produce(&mut producer, "m1"), Ok(2));
}

#[test]
fn a_restarted_replica_follows_in_its_epoch_but_leads_only_in_a_new_one() {
    let mut cluster = Cluster::start();
    for i in 0..3 {
        cluster.assign(i, 1, 0, &[0, 1, 2]);
    }
    let mut producer = cluster.client(0, "producer");
    for n in 0..5 {
        produce(&mut producer, &format!("m{n}")).unwrap();
    }
    drop(producer);
    // c restarts: it knows epoch 1 from its journal, follows again in it.
    cluster.stop(2);
    cluster.restart(2);
    let old = QueueAssignment {
        topic: TOPIC.into(),
        queue_id: 0,
        epoch: 0,
        leader: IDS[0].into(),
        leader_endpoint: format!("127.0.0.1:{}", cluster.port(0)),
        replicas: IDS.iter().map(|s| s.to_string()).collect(),
        in_sync: IDS.iter().map(|s| s.to_string()).collect(),
    };
    let frame = cluster.client(2, "controller").call(
        Command::QueueRole,
        &[],
        &control::encode(&old).unwrap(),
    );
    assert_eq!(error_of(&frame).map(|e| e.0), Some(Status::StaleEpoch));
    cluster.assign(2, 1, 0, &[0, 1, 2]);
    assert_eq!(produce(&mut cluster.client(0, "p2"), "m5"), Ok(6));
    // a restarts: leading again in epoch 1 is refused; in epoch 2 it is taken.
    cluster.stop(0);
    cluster.restart(0);
    let mut again = old.clone();
    again.epoch = 1;
    again.leader_endpoint = format!("127.0.0.1:{}", cluster.port(0));
    let frame = cluster.client(0, "controller").call(
        Command::QueueRole,
        &[],
        &control::encode(&again).unwrap(),
    );
    let (status, message) = error_of(&frame).expect("refused");
    assert_eq!(status, Status::StaleEpoch, "{message}");
    assert!(message.contains("only in a new epoch"), "{message}");
    for i in 0..3 {
        cluster.assign(i, 2, 0, &[0, 1, 2]);
    }
    assert_eq!(produce(&mut cluster.client(0, "p3"), "m6"), Ok(7));
    cluster.stop_all();
    let (a, epochs) = stored(&cluster.queue_dir(0));
    assert_eq!(a.len(), 7);
    assert_eq!(epochs, [(1, 0), (2, 6)]);
    assert_eq!(stored(&cluster.queue_dir(2)).0, a);
}
