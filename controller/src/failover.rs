//! Deciding failover, pure: which brokers are dead ([`Liveness`], the clock passed in) and
//! which commands move their queues ([`failover`]). The controller's leader runs both
//! periodically and proposes the commands (see `controller`).
//!
//! Liveness is in memory, on the leader only: a broker's heartbeats are not replicated (a
//! log entry per broker per second would be the busiest thing in the log), and a new leader
//! starts by giving every broker a fresh grace period, [`Liveness::grace_all`], so that a
//! controller election never looks like every broker failing at once.
//!
//! For each queue, against the dead set:
//! - its leader is dead: elect the first live ISR member (in ISR order, which starts with
//!   the preferred replicas), or take the queue offline (`None`) when none is alive. Only
//!   clean elections: choosing data loss (`unclean`) is an operator's call.
//! - it is offline and an ISR member is alive again: elect it.
//! - its leader is alive and dead brokers are in its ISR: shrink the ISR to the live ones,
//!   so `acks = All` produces stop waiting for them.
//!
//! Every command carries the epoch it was decided at, so one decided on a state the queue
//! has since left is refused and decided again on the next look.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::state::{ClusterState, Command};

/// When each broker was last heard from.
#[derive(Debug)]
pub(crate) struct Liveness {
    timeout: Duration,
    last_heard: HashMap<String, Instant>,
}

impl Liveness {
    /// Brokers silent for longer than `timeout` are dead.
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            last_heard: HashMap::new(),
        }
    }

    /// `broker` was heard from at `now`.
    pub(crate) fn heard(&mut self, broker: &str, now: Instant) {
        match self.last_heard.get_mut(broker) {
            Some(at) => *at = (*at).max(now),
            None => {
                self.last_heard.insert(broker.to_owned(), now);
            }
        }
    }

    /// Every broker counts as heard at `now`: the grace period of a new leader, which has
    /// heard nothing yet.
    pub(crate) fn grace_all(&mut self, now: Instant) {
        for heard in self.last_heard.values_mut() {
            *heard = now;
        }
    }

    /// The brokers of `registered` silent for longer than the timeout at `now`. A broker
    /// not heard from yet counts as heard now, when it is first seen: its grace period
    /// starts with the leadership, or with its registration if that came later.
    pub(crate) fn dead<'a>(
        &mut self,
        registered: impl IntoIterator<Item = &'a String>,
        now: Instant,
    ) -> BTreeSet<String> {
        registered
            .into_iter()
            .filter(|broker| {
                let heard = *self.last_heard.entry((*broker).clone()).or_insert(now);
                now.saturating_duration_since(heard) > self.timeout
            })
            .cloned()
            .collect()
    }
}

/// The commands that move queues away from the `dead` brokers (see the module docs).
pub(crate) fn failover(state: &ClusterState, dead: &BTreeSet<String>) -> Vec<Command> {
    let mut commands = Vec::new();
    for (topic, topic_state) in &state.topics {
        for (queue, q) in (0u32..).zip(&topic_state.queues) {
            let alive_isr = || q.isr.iter().find(|b| !dead.contains(*b)).cloned();
            match &q.leader {
                Some(leader) if dead.contains(leader) => commands.push(Command::ElectLeader {
                    topic: topic.clone(),
                    queue,
                    leader: alive_isr(),
                    expected_epoch: q.epoch,
                    unclean: false,
                }),
                None => {
                    if let Some(leader) = alive_isr() {
                        commands.push(Command::ElectLeader {
                            topic: topic.clone(),
                            queue,
                            leader: Some(leader),
                            expected_epoch: q.epoch,
                            unclean: false,
                        });
                    }
                }
                Some(leader) => {
                    if q.isr.iter().any(|b| dead.contains(b)) {
                        commands.push(Command::AlterIsr {
                            topic: topic.clone(),
                            queue,
                            leader: leader.clone(),
                            leader_epoch: q.epoch,
                            isr: q
                                .isr
                                .iter()
                                .filter(|b| !dead.contains(*b))
                                .cloned()
                                .collect(),
                        });
                    }
                }
            }
        }
    }
    commands
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Acks, QueueState, TopicState};

    fn strings(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    fn queue(leader: Option<&str>, epoch: u64, isr: &[&str]) -> QueueState {
        QueueState {
            replicas: strings(&["a", "b", "c"]),
            leader: leader.map(str::to_owned),
            epoch,
            isr: strings(isr),
        }
    }

    fn state(queues: Vec<QueueState>) -> ClusterState {
        let mut state = ClusterState::default();
        state.topics.insert(
            "t".into(),
            TopicState {
                replicas: 3,
                acks: Acks::All,
                queues,
            },
        );
        state
    }

    #[test]
    fn brokers_die_after_the_timeout_and_a_new_leader_grants_grace() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(3);
        let mut liveness = Liveness::new(timeout);
        let brokers = strings(&["a", "b"]);
        // The new leader's first look: neither was heard yet, both start their grace.
        assert!(liveness.dead(&brokers, t0).is_empty());
        liveness.heard("a", t0 + Duration::from_secs(2));
        assert!(liveness.dead(&brokers, t0 + timeout).is_empty());
        // b was never heard: its grace started with the leadership.
        assert_eq!(
            liveness.dead(&brokers, t0 + Duration::from_secs(4)),
            set(&["b"])
        );
        assert_eq!(
            liveness.dead(&brokers, t0 + Duration::from_secs(6)),
            set(&["a", "b"])
        );
        // A heartbeat older than the latest one does not make a broker older.
        liveness.heard("a", t0 + Duration::from_secs(7));
        liveness.heard("a", t0);
        assert_eq!(
            liveness.dead(&brokers, t0 + Duration::from_secs(8)),
            set(&["b"])
        );
        // A new leadership: nobody is dead until the timeout passes again.
        let t1 = t0 + Duration::from_secs(20);
        liveness.grace_all(t1);
        assert!(liveness.dead(&brokers, t1 + timeout).is_empty());
        assert_eq!(liveness.dead(&brokers, t1 + timeout * 2), set(&["a", "b"]));
    }

    #[test]
    fn a_broker_registered_later_gets_its_grace_from_when_it_is_first_seen() {
        let t0 = Instant::now();
        let mut liveness = Liveness::new(Duration::from_secs(3));
        assert!(liveness.dead(&strings(&["old"]), t0).is_empty());
        let later = t0 + Duration::from_secs(10);
        let brokers = strings(&["old", "new"]);
        // First seen at `later`, long after the leadership began: not dead yet.
        assert_eq!(liveness.dead(&brokers, later), set(&["old"]));
        assert_eq!(
            liveness.dead(&brokers, later + Duration::from_secs(4)),
            set(&["old", "new"])
        );
    }

    #[test]
    fn a_dead_leader_hands_over_to_the_first_live_isr_member() {
        let state = state(vec![queue(Some("a"), 4, &["a", "b", "c"])]);
        assert_eq!(
            failover(&state, &set(&["a", "b"])),
            [Command::ElectLeader {
                topic: "t".into(),
                queue: 0,
                leader: Some("c".into()),
                expected_epoch: 4,
                unclean: false,
            }]
        );
    }

    #[test]
    fn no_live_isr_member_takes_the_queue_offline_and_one_coming_back_leads_it() {
        let dead_isr = state(vec![queue(Some("a"), 2, &["a", "b"])]);
        assert_eq!(
            failover(&dead_isr, &set(&["a", "b"])),
            [Command::ElectLeader {
                topic: "t".into(),
                queue: 0,
                leader: None,
                expected_epoch: 2,
                unclean: false,
            }]
        );
        let offline = state(vec![queue(None, 3, &["a", "b"])]);
        assert!(failover(&offline, &set(&["a", "b"])).is_empty());
        assert_eq!(
            failover(&offline, &set(&["a"])),
            [Command::ElectLeader {
                topic: "t".into(),
                queue: 0,
                leader: Some("b".into()),
                expected_epoch: 3,
                unclean: false,
            }]
        );
    }

    #[test]
    fn a_live_leader_drops_dead_followers_from_its_isr() {
        let state = state(vec![
            queue(Some("b"), 5, &["b", "a", "c"]),
            queue(Some("c"), 1, &["c"]),
        ]);
        assert_eq!(
            failover(&state, &set(&["a"])),
            [Command::AlterIsr {
                topic: "t".into(),
                queue: 0,
                leader: "b".into(),
                leader_epoch: 5,
                isr: strings(&["b", "c"]),
            }]
        );
        assert!(failover(&state, &BTreeSet::new()).is_empty());
    }

    #[test]
    fn the_commands_apply_cleanly_to_the_state_they_were_decided_on() {
        let mut cluster = ClusterState::default();
        for broker in ["a", "b", "c"] {
            cluster
                .apply(&Command::RegisterBroker {
                    broker: broker.into(),
                    addr: "h:1".into(),
                    cluster: "c".into(),
                    area: "x".into(),
                    shards: 1,
                })
                .unwrap();
        }
        let assignment = crate::place(&cluster.brokers, 3, 3, None).unwrap();
        cluster
            .apply(&Command::CreateTopic {
                topic: "t".into(),
                replicas: 3,
                acks: Acks::All,
                assignment,
            })
            .unwrap();
        let dead = set(&["a"]);
        // Two rounds: elections first, then the new leaders shrink their ISRs.
        for _ in 0..2 {
            for command in failover(&cluster, &dead) {
                cluster.apply(&command).unwrap();
            }
        }
        assert!(failover(&cluster, &dead).is_empty());
        for q in &cluster.topics["t"].queues {
            assert_ne!(q.leader.as_deref(), Some("a"));
            assert!(!q.isr.contains(&"a".to_owned()), "{q:?}");
        }
    }
}
