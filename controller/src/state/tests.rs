//! Every command of [`ClusterState::apply`] and every refusal, without Raft.

use super::*;

fn register(broker: &str, area: &str) -> Command {
    Command::RegisterBroker {
        broker: broker.into(),
        addr: format!("{broker}.example:7000"),
        cluster: "main".into(),
        area: area.into(),
        shards: 4,
    }
}

fn strings(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

/// Brokers a, b, c, d and topic `t` with two queues: [a, b, c] and [b, c, d].
fn cluster() -> ClusterState {
    let mut state = ClusterState::default();
    for broker in ["a", "b", "c", "d"] {
        state.apply(&register(broker, "east")).unwrap();
    }
    let create = Command::CreateTopic {
        topic: "t".into(),
        replicas: 3,
        acks: Acks::All,
        assignment: vec![strings(&["a", "b", "c"]), strings(&["b", "c", "d"])],
    };
    assert_eq!(
        state.apply(&create),
        Ok(Outcome::TopicCreated { queues: 2 })
    );
    state
}

fn elect(leader: Option<&str>, expected_epoch: u64, unclean: bool) -> Command {
    Command::ElectLeader {
        topic: "t".into(),
        queue: 0,
        leader: leader.map(str::to_owned),
        expected_epoch,
        unclean,
    }
}

fn alter(leader: &str, leader_epoch: u64, isr: &[&str]) -> Command {
    Command::AlterIsr {
        topic: "t".into(),
        queue: 0,
        leader: leader.into(),
        leader_epoch,
        isr: strings(isr),
    }
}

/// Applies `command`, which must be refused, and checks that the state did not change.
fn refused(state: &mut ClusterState, command: Command) -> Rejected {
    let before = state.clone();
    let rejected = state.apply(&command).unwrap_err();
    assert_eq!(*state, before, "a refused {command:?} changed the state");
    rejected
}

#[test]
fn register_broker_inserts_then_replaces() {
    let mut state = ClusterState::default();
    assert_eq!(
        state.apply(&register("a", "east")),
        Ok(Outcome::BrokerRegistered { created: true })
    );
    assert_eq!(
        state.apply(&register("a", "west")),
        Ok(Outcome::BrokerRegistered { created: false })
    );
    assert_eq!(state.brokers.len(), 1);
    assert_eq!(state.brokers["a"].area, "west");
    assert_eq!(state.brokers["a"].shards, 4);
}

#[test]
fn register_broker_refuses_empty_fields_and_zero_shards() {
    let mut state = ClusterState::default();
    let Command::RegisterBroker {
        addr,
        cluster,
        area,
        ..
    } = register("a", "east")
    else {
        unreachable!()
    };
    let with = |broker: &str, addr: &str, shards| Command::RegisterBroker {
        broker: broker.into(),
        addr: addr.into(),
        cluster: cluster.clone(),
        area: area.clone(),
        shards,
    };
    for (command, field) in [
        (with("", &addr, 1), "broker"),
        (with("a", "", 1), "addr"),
        (with("a", &addr, 0), "shards"),
    ] {
        match refused(&mut state, command) {
            Rejected::InvalidArgument { field: got, .. } => assert_eq!(got, field),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn create_topic_sets_first_replica_leader_epoch_one_and_full_isr() {
    let state = cluster();
    let topic = &state.topics["t"];
    assert_eq!((topic.replicas, topic.acks), (3, Acks::All));
    let queue = state.queue("t", 1).unwrap();
    assert_eq!(queue.replicas, strings(&["b", "c", "d"]));
    assert_eq!(queue.leader.as_deref(), Some("b"));
    assert_eq!(queue.epoch, 1);
    assert_eq!(queue.isr, queue.replicas);
    assert!(state.queue("t", 2).is_none());
}

#[test]
fn create_topic_refusals() {
    let mut state = cluster();
    let create = |topic: &str, replicas, assignment: Vec<Vec<String>>| Command::CreateTopic {
        topic: topic.into(),
        replicas,
        acks: Acks::Leader,
        assignment,
    };
    assert_eq!(
        refused(&mut state, create("t", 1, vec![strings(&["a"])])),
        Rejected::TopicExists { topic: "t".into() }
    );
    assert!(matches!(
        refused(&mut state, create("", 1, vec![strings(&["a"])])),
        Rejected::InvalidArgument { field, .. } if field == "topic"
    ));
    assert!(matches!(
        refused(&mut state, create("u", 0, vec![vec![]])),
        Rejected::InvalidArgument { field, .. } if field == "replicas"
    ));
    assert!(matches!(
        refused(&mut state, create("u", 1, vec![])),
        Rejected::InvalidArgument { field, .. } if field == "assignment"
    ));
    assert_eq!(
        refused(
            &mut state,
            create("u", 2, vec![strings(&["a", "b"]), strings(&["a"])])
        ),
        Rejected::InvalidAssignment {
            queue: 1,
            reason: "1 replicas, the topic has 2".into()
        }
    );
    assert_eq!(
        refused(&mut state, create("u", 2, vec![strings(&["a", "a"])])),
        Rejected::InvalidAssignment {
            queue: 0,
            reason: "broker a holds two replicas".into()
        }
    );
    assert_eq!(
        refused(&mut state, create("u", 2, vec![strings(&["a", "zz"])])),
        Rejected::UnknownBroker {
            broker: "zz".into()
        }
    );
}

#[test]
fn delete_topic_removes_it_once() {
    let mut state = cluster();
    let delete = Command::DeleteTopic { topic: "t".into() };
    assert_eq!(state.apply(&delete), Ok(Outcome::TopicDeleted));
    assert!(state.topics.is_empty());
    assert_eq!(
        refused(&mut state, delete),
        Rejected::UnknownTopic { topic: "t".into() }
    );
}

#[test]
fn clean_election_moves_leadership_within_the_isr_and_bumps_the_epoch() {
    let mut state = cluster();
    assert_eq!(
        state.apply(&elect(Some("b"), 1, false)),
        Ok(Outcome::LeaderElected {
            leader: Some("b".into()),
            epoch: 2
        })
    );
    let queue = state.queue("t", 0).unwrap();
    assert_eq!(queue.leader.as_deref(), Some("b"));
    assert_eq!(
        queue.isr,
        strings(&["a", "b", "c"]),
        "a clean election keeps the ISR"
    );
    // Offline, then back: each step is one epoch on.
    assert_eq!(
        state.apply(&elect(None, 2, false)),
        Ok(Outcome::LeaderElected {
            leader: None,
            epoch: 3
        })
    );
    assert_eq!(
        state.apply(&elect(Some("c"), 3, false)),
        Ok(Outcome::LeaderElected {
            leader: Some("c".into()),
            epoch: 4
        })
    );
}

#[test]
fn election_refusals() {
    let mut state = cluster();
    assert_eq!(
        refused(&mut state, elect(Some("b"), 0, false)),
        Rejected::StaleEpoch {
            topic: "t".into(),
            queue: 0,
            given: 0,
            current: 1
        }
    );
    // A future epoch is as wrong as a past one: the proposer read a state that never was.
    assert!(matches!(
        refused(&mut state, elect(Some("b"), 2, false)),
        Rejected::StaleEpoch { given: 2, .. }
    ));
    assert_eq!(
        refused(&mut state, elect(Some("d"), 1, false)),
        Rejected::NotEligible {
            topic: "t".into(),
            queue: 0,
            broker: "d".into(),
            reason: "not in the ISR".into()
        }
    );
    assert!(matches!(
        refused(&mut state, elect(Some("d"), 1, true)),
        Rejected::NotEligible { reason, .. } if reason == "not a replica"
    ));
    assert!(matches!(
        refused(&mut state, elect(None, 1, true)),
        Rejected::InvalidArgument { field, .. } if field == "leader"
    ));
    let unknown_queue = Command::ElectLeader {
        topic: "t".into(),
        queue: 2,
        leader: None,
        expected_epoch: 1,
        unclean: false,
    };
    assert_eq!(
        refused(&mut state, unknown_queue),
        Rejected::UnknownQueue {
            topic: "t".into(),
            queue: 2,
            queues: 2
        }
    );
    let unknown_topic = Command::ElectLeader {
        topic: "nope".into(),
        queue: 0,
        leader: None,
        expected_epoch: 1,
        unclean: false,
    };
    assert_eq!(
        refused(&mut state, unknown_topic),
        Rejected::UnknownTopic {
            topic: "nope".into()
        }
    );
}

#[test]
fn unclean_election_takes_a_replica_outside_the_isr_and_resets_the_isr_to_it() {
    let mut state = cluster();
    state.apply(&alter("a", 1, &["a"])).unwrap();
    assert_eq!(
        state.apply(&elect(Some("c"), 1, true)),
        Ok(Outcome::LeaderElected {
            leader: Some("c".into()),
            epoch: 2
        })
    );
    let queue = state.queue("t", 0).unwrap();
    assert_eq!(queue.leader.as_deref(), Some("c"));
    assert_eq!(queue.isr, strings(&["c"]));
}

#[test]
fn alter_isr_from_the_leader_replaces_the_isr_and_keeps_the_epoch() {
    let mut state = cluster();
    assert_eq!(
        state.apply(&alter("a", 1, &["a", "c"])),
        Ok(Outcome::IsrAltered {
            isr: strings(&["a", "c"])
        })
    );
    let queue = state.queue("t", 0).unwrap();
    assert_eq!(queue.isr, strings(&["a", "c"]));
    assert_eq!(queue.epoch, 1);
    // And back up: a follower that caught up rejoins.
    state.apply(&alter("a", 1, &["a", "b", "c"])).unwrap();
    assert_eq!(state.queue("t", 0).unwrap().isr.len(), 3);
}

#[test]
fn alter_isr_refusals() {
    let mut state = cluster();
    assert_eq!(
        refused(&mut state, alter("b", 1, &["b"])),
        Rejected::NotLeader {
            topic: "t".into(),
            queue: 0,
            broker: "b".into(),
            leader: Some("a".into())
        }
    );
    assert_eq!(
        refused(&mut state, alter("a", 7, &["a"])),
        Rejected::StaleEpoch {
            topic: "t".into(),
            queue: 0,
            given: 7,
            current: 1
        }
    );
    for (isr, reason) in [
        (&["b", "c"][..], "it lacks the leader a"),
        (&["a", "b", "a"][..], "a appears twice"),
        (&["a", "d"][..], "d is not a replica"),
    ] {
        assert_eq!(
            refused(&mut state, alter("a", 1, isr)),
            Rejected::InvalidIsr {
                topic: "t".into(),
                queue: 0,
                reason: reason.into()
            }
        );
    }
    // A deposed leader is refused even with the epoch it led in.
    state.apply(&elect(Some("b"), 1, false)).unwrap();
    assert!(matches!(
        refused(&mut state, alter("a", 1, &["a"])),
        Rejected::NotLeader { .. }
    ));
    // The new leader with the old epoch is stale.
    assert!(matches!(
        refused(&mut state, alter("b", 1, &["b"])),
        Rejected::StaleEpoch {
            given: 1,
            current: 2,
            ..
        }
    ));
    state.apply(&elect(None, 2, false)).unwrap();
    assert!(matches!(
        refused(&mut state, alter("b", 3, &["b"])),
        Rejected::NotLeader { leader: None, .. }
    ));
}

#[test]
fn epochs_only_grow_and_the_state_survives_serde() {
    let mut state = cluster();
    let mut last = 1;
    for (leader, unclean) in [
        (Some("b"), false),
        (None, false),
        (Some("c"), false),
        (Some("a"), true),
    ] {
        let epoch = state.queue("t", 0).unwrap().epoch;
        state.apply(&elect(leader, epoch, unclean)).unwrap();
        let now = state.queue("t", 0).unwrap().epoch;
        assert_eq!(now, last + 1);
        last = now;
    }
    let json = serde_json::to_string(&state).unwrap();
    let back: ClusterState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, state);
    let rejected = Rejected::StaleEpoch {
        topic: "t".into(),
        queue: 0,
        given: 1,
        current: 2,
    };
    let json = serde_json::to_string(&Err::<Outcome, _>(rejected.clone())).unwrap();
    let back: Result<Outcome, Rejected> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, Err(rejected));
}

#[test]
fn applying_the_same_commands_gives_the_same_state() {
    let commands = [
        register("a", "east"),
        register("b", "west"),
        Command::CreateTopic {
            topic: "t".into(),
            replicas: 2,
            acks: Acks::Leader,
            assignment: vec![strings(&["a", "b"])],
        },
        elect(Some("b"), 1, false),
        alter("b", 2, &["b"]),
        elect(Some("a"), 1, false),
    ];
    let run = || {
        let mut state = ClusterState::default();
        let results: Vec<_> = commands.iter().map(|c| state.apply(c)).collect();
        (state, results)
    };
    assert_eq!(run(), run());
}
