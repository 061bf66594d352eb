//! The replicated state: which brokers make up the data plane, which topics exist, and for
//! each queue its replicas, its leader, its leader epoch and its in-sync replicas (ISR).
//!
//! Everything here is pure and deterministic: [`ClusterState::apply`] is a function of the
//! state and one [`Command`], with no clock, no randomness and no IO, and iterates only
//! ordered maps. Every controller node applies the same committed commands in the same order,
//! so every node holds the same state; that is what makes it safe to replicate through Raft.
//!
//! A command that is invalid against the current state is refused with a [`Rejected`] value,
//! which is itself replicated as the command's result: a refusal is as deterministic as a
//! success, and `apply` never panics on what a proposer sent.
//!
//! # Epochs
//!
//! A queue's `epoch` is its leader epoch. It starts at 1 and only [`Command::ElectLeader`]
//! changes it, always by exactly one, so it is monotonic. Brokers stamp what they do as
//! leader with it; the controller refuses an [`Command::ElectLeader`] proposed against an
//! older epoch (the proposer decided on stale information) and an [`Command::AlterIsr`] from
//! a leader whose epoch is not the current one (a deposed leader must not shrink or grow an
//! ISR it no longer owns).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The whole replicated state of the controller.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Registered brokers by id: the membership of the data plane, not its liveness (which
    /// the leader tracks in memory from heartbeats).
    pub brokers: BTreeMap<String, BrokerInfo>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicState>,
}

/// A registered broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    /// Where clients and replicas reach it, `host:port`.
    pub addr: String,
    /// The cluster it belongs to.
    pub cluster: String,
    /// The area (data centre, zone) it runs in; placement may prefer one.
    pub area: String,
    /// How many shards (cores) serve its queues.
    pub shards: u16,
}

/// How many replicas must have a record before a produce is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Acks {
    /// The queue's leader alone.
    Leader,
    /// Every member of the ISR.
    All,
}

/// A topic's replication settings and its queues.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicState {
    /// Replicas per queue.
    pub replicas: u8,
    /// The acknowledgement the topic's produces wait for.
    pub acks: Acks,
    /// The queues, by queue id (the index).
    pub queues: Vec<QueueState>,
}

/// One queue's replication state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueState {
    /// Broker ids holding a replica, distinct; the first is the preferred leader.
    pub replicas: Vec<String>,
    /// The broker serving the queue, or `None` while it is offline (no live ISR member).
    pub leader: Option<String>,
    /// The leader epoch (see the module docs).
    pub epoch: u64,
    /// The replicas caught up with the leader; the leader is always one of them.
    pub isr: Vec<String>,
}

/// A change to the state, proposed through Raft and applied on every node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Adds a broker, or replaces what is recorded of it (an upsert: a broker re-registers
    /// after a restart, possibly at a new address).
    RegisterBroker {
        /// The broker's id.
        broker: String,
        /// `host:port`.
        addr: String,
        /// Its cluster.
        cluster: String,
        /// Its area.
        area: String,
        /// Its shard count, at least 1.
        shards: u16,
    },
    /// Creates a topic with the placement `assignment` (one replica list per queue),
    /// computed by the proposer with [`crate::place`].
    CreateTopic {
        /// The topic's name.
        topic: String,
        /// Replicas per queue; every list of `assignment` has this many.
        replicas: u8,
        /// The acknowledgement its produces wait for.
        acks: Acks,
        /// Per queue, the brokers holding a replica; the first becomes the leader.
        assignment: Vec<Vec<String>>,
    },
    /// Deletes a topic.
    DeleteTopic {
        /// The topic's name.
        topic: String,
    },
    /// Makes `leader` the queue's leader (or takes the queue offline with `None`), one epoch
    /// on from `expected_epoch`.
    ElectLeader {
        /// The topic.
        topic: String,
        /// The queue id.
        queue: u32,
        /// The new leader, or `None` for offline.
        leader: Option<String>,
        /// The epoch the proposer decided on; refused if the queue has moved on since.
        expected_epoch: u64,
        /// Allows a leader outside the ISR (records it had not replicated are lost); the
        /// ISR becomes the new leader alone.
        unclean: bool,
    },
    /// The queue's leader reports its new ISR.
    AlterIsr {
        /// The topic.
        topic: String,
        /// The queue id.
        queue: u32,
        /// The broker sending the change; must be the queue's leader.
        leader: String,
        /// The epoch it leads in; must be the current one.
        leader_epoch: u64,
        /// The new ISR: replicas only, the leader included.
        isr: Vec<String>,
    },
}

/// What an applied command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The broker is recorded; `created` is false when it replaced an earlier record.
    BrokerRegistered {
        /// True for a broker not known before.
        created: bool,
    },
    /// The topic exists with this many queues.
    TopicCreated {
        /// Its queue count.
        queues: u32,
    },
    /// The topic is gone.
    TopicDeleted,
    /// The queue has a new leader (or none) in a new epoch.
    LeaderElected {
        /// The leader, `None` for offline.
        leader: Option<String>,
        /// The new epoch.
        epoch: u64,
    },
    /// The queue's ISR is replaced.
    IsrAltered {
        /// The new ISR.
        isr: Vec<String>,
    },
}

/// Why a command was refused. Refusals are results, replicated like successes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejected {
    /// A field is empty or out of range.
    #[error("invalid argument {field}: {reason}")]
    InvalidArgument {
        /// The command's field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The topic to create exists.
    #[error("topic {topic} already exists")]
    TopicExists {
        /// The topic.
        topic: String,
    },
    /// The topic does not exist.
    #[error("unknown topic {topic}")]
    UnknownTopic {
        /// The topic.
        topic: String,
    },
    /// The topic has no such queue.
    #[error("topic {topic} has {queues} queues, no queue {queue}")]
    UnknownQueue {
        /// The topic.
        topic: String,
        /// The queue asked for.
        queue: u32,
        /// The topic's queue count.
        queues: u32,
    },
    /// A broker named by the command is not registered.
    #[error("unknown broker {broker}")]
    UnknownBroker {
        /// The broker.
        broker: String,
    },
    /// A queue's replica list is not `replicas` distinct brokers.
    #[error("queue {queue}: {reason}")]
    InvalidAssignment {
        /// The queue id.
        queue: u32,
        /// What is wrong with its replica list.
        reason: String,
    },
    /// The command was decided against an epoch the queue has left.
    #[error("{topic}/{queue}: epoch {given} is stale, the queue is at epoch {current}")]
    StaleEpoch {
        /// The topic.
        topic: String,
        /// The queue id.
        queue: u32,
        /// The epoch the command carried.
        given: u64,
        /// The queue's epoch.
        current: u64,
    },
    /// A clean election named a broker outside the ISR, or an unclean one a non-replica.
    #[error("{topic}/{queue}: {broker} is not eligible: {reason}")]
    NotEligible {
        /// The topic.
        topic: String,
        /// The queue id.
        queue: u32,
        /// The broker named as leader.
        broker: String,
        /// Not in the ISR, or not a replica.
        reason: String,
    },
    /// An ISR change came from a broker that does not lead the queue.
    #[error("{topic}/{queue}: {broker} does not lead the queue (leader {leader:?})")]
    NotLeader {
        /// The topic.
        topic: String,
        /// The queue id.
        queue: u32,
        /// The broker that sent the change.
        broker: String,
        /// The queue's leader.
        leader: Option<String>,
    },
    /// The ISR lacks the leader, repeats a broker or names a non-replica.
    #[error("{topic}/{queue}: invalid ISR: {reason}")]
    InvalidIsr {
        /// The topic.
        topic: String,
        /// The queue id.
        queue: u32,
        /// What is wrong with it.
        reason: String,
    },
}

impl ClusterState {
    /// Applies `command`, or refuses it and leaves the state unchanged.
    pub fn apply(&mut self, command: &Command) -> Result<Outcome, Rejected> {
        match command {
            Command::RegisterBroker {
                broker,
                addr,
                cluster,
                area,
                shards,
            } => {
                non_empty("broker", broker)?;
                non_empty("addr", addr)?;
                if *shards == 0 {
                    return Err(invalid("shards", "a broker has at least one shard"));
                }
                let info = BrokerInfo {
                    addr: addr.clone(),
                    cluster: cluster.clone(),
                    area: area.clone(),
                    shards: *shards,
                };
                let created = self.brokers.insert(broker.clone(), info).is_none();
                Ok(Outcome::BrokerRegistered { created })
            }
            Command::CreateTopic {
                topic,
                replicas,
                acks,
                assignment,
            } => self.create_topic(topic, *replicas, *acks, assignment),
            Command::DeleteTopic { topic } => match self.topics.remove(topic) {
                Some(_) => Ok(Outcome::TopicDeleted),
                None => Err(Rejected::UnknownTopic {
                    topic: topic.clone(),
                }),
            },
            Command::ElectLeader {
                topic,
                queue,
                leader,
                expected_epoch,
                unclean,
            } => {
                let state = self.queue_mut(topic, *queue)?;
                elect_leader(state, topic, *queue, leader, *expected_epoch, *unclean)
            }
            Command::AlterIsr {
                topic,
                queue,
                leader,
                leader_epoch,
                isr,
            } => {
                let state = self.queue_mut(topic, *queue)?;
                alter_isr(state, topic, *queue, leader, *leader_epoch, isr)
            }
        }
    }

    /// The queue `queue` of `topic`.
    pub fn queue(&self, topic: &str, queue: u32) -> Option<&QueueState> {
        self.topics.get(topic)?.queues.get(queue as usize)
    }

    fn queue_mut(&mut self, topic: &str, queue: u32) -> Result<&mut QueueState, Rejected> {
        let state = self
            .topics
            .get_mut(topic)
            .ok_or_else(|| Rejected::UnknownTopic {
                topic: topic.to_owned(),
            })?;
        let queues = state.queues.len() as u32;
        state
            .queues
            .get_mut(queue as usize)
            .ok_or_else(|| Rejected::UnknownQueue {
                topic: topic.to_owned(),
                queue,
                queues,
            })
    }

    fn create_topic(
        &mut self,
        topic: &str,
        replicas: u8,
        acks: Acks,
        assignment: &[Vec<String>],
    ) -> Result<Outcome, Rejected> {
        non_empty("topic", topic)?;
        if self.topics.contains_key(topic) {
            return Err(Rejected::TopicExists {
                topic: topic.to_owned(),
            });
        }
        if replicas == 0 {
            return Err(invalid("replicas", "a queue has at least one replica"));
        }
        if assignment.is_empty() {
            return Err(invalid("assignment", "a topic has at least one queue"));
        }
        let queue_count = u32::try_from(assignment.len())
            .map_err(|_| invalid("assignment", format!("{} queues", assignment.len())))?;
        let mut queues = Vec::with_capacity(assignment.len());
        for (queue, brokers) in (0u32..).zip(assignment) {
            if brokers.len() != usize::from(replicas) {
                return Err(Rejected::InvalidAssignment {
                    queue,
                    reason: format!("{} replicas, the topic has {replicas}", brokers.len()),
                });
            }
            if let Some(broker) = first_duplicate(brokers) {
                return Err(Rejected::InvalidAssignment {
                    queue,
                    reason: format!("broker {broker} holds two replicas"),
                });
            }
            if let Some(broker) = brokers.iter().find(|b| !self.brokers.contains_key(*b)) {
                return Err(Rejected::UnknownBroker {
                    broker: broker.clone(),
                });
            }
            queues.push(QueueState {
                replicas: brokers.clone(),
                leader: brokers.first().cloned(),
                epoch: 1,
                isr: brokers.clone(),
            });
        }
        self.topics.insert(
            topic.to_owned(),
            TopicState {
                replicas,
                acks,
                queues,
            },
        );
        Ok(Outcome::TopicCreated {
            queues: queue_count,
        })
    }
}

fn elect_leader(
    state: &mut QueueState,
    topic: &str,
    queue: u32,
    leader: &Option<String>,
    expected_epoch: u64,
    unclean: bool,
) -> Result<Outcome, Rejected> {
    if expected_epoch != state.epoch {
        return Err(Rejected::StaleEpoch {
            topic: topic.to_owned(),
            queue,
            given: expected_epoch,
            current: state.epoch,
        });
    }
    let not_eligible = |broker: &str, reason: &str| Rejected::NotEligible {
        topic: topic.to_owned(),
        queue,
        broker: broker.to_owned(),
        reason: reason.to_owned(),
    };
    match (leader, unclean) {
        (None, true) => return Err(invalid("leader", "an unclean election names a leader")),
        (None, false) => {}
        (Some(broker), false) => {
            if !state.isr.contains(broker) {
                return Err(not_eligible(broker, "not in the ISR"));
            }
        }
        (Some(broker), true) => {
            if !state.replicas.contains(broker) {
                return Err(not_eligible(broker, "not a replica"));
            }
            // Only the new leader is known to hold what it holds: the others must catch up
            // with it before they count as in sync again.
            state.isr = vec![broker.clone()];
        }
    }
    state.leader = leader.clone();
    state.epoch += 1;
    Ok(Outcome::LeaderElected {
        leader: leader.clone(),
        epoch: state.epoch,
    })
}

fn alter_isr(
    state: &mut QueueState,
    topic: &str,
    queue: u32,
    leader: &str,
    leader_epoch: u64,
    isr: &[String],
) -> Result<Outcome, Rejected> {
    if state.leader.as_deref() != Some(leader) {
        return Err(Rejected::NotLeader {
            topic: topic.to_owned(),
            queue,
            broker: leader.to_owned(),
            leader: state.leader.clone(),
        });
    }
    if leader_epoch != state.epoch {
        return Err(Rejected::StaleEpoch {
            topic: topic.to_owned(),
            queue,
            given: leader_epoch,
            current: state.epoch,
        });
    }
    let invalid_isr = |reason: String| Rejected::InvalidIsr {
        topic: topic.to_owned(),
        queue,
        reason,
    };
    if !isr.iter().any(|b| b == leader) {
        return Err(invalid_isr(format!("it lacks the leader {leader}")));
    }
    if let Some(broker) = first_duplicate(isr) {
        return Err(invalid_isr(format!("{broker} appears twice")));
    }
    if let Some(broker) = isr.iter().find(|b| !state.replicas.contains(b)) {
        return Err(invalid_isr(format!("{broker} is not a replica")));
    }
    state.isr = isr.to_vec();
    Ok(Outcome::IsrAltered { isr: isr.to_vec() })
}

fn non_empty(field: &'static str, value: &str) -> Result<(), Rejected> {
    if value.is_empty() {
        return Err(invalid(field, "empty"));
    }
    Ok(())
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Rejected {
    Rejected::InvalidArgument {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

fn first_duplicate(brokers: &[String]) -> Option<&String> {
    let mut seen = BTreeSet::new();
    brokers.iter().find(|b| !seen.insert(*b))
}

#[cfg(test)]
mod tests;
