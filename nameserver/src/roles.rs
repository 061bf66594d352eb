//! What the controller must tell brokers, from what they report: the reconciliation of
//! replicated queues' assignments (the controller's decisions) with the roles brokers report
//! in their registrations (docs/ARCHITECTURE.md §8).
//!
//! Pure: given the desired assignments and the live brokers' reports, [`plan`] says which
//! broker must be sent which `QueueRole` (each queue's leader first), which queues need a new
//! election, and which in-sync sets their leaders ask to change. The controller's leader runs
//! it after every registration and state change; sending an assignment twice is harmless (a
//! broker ignores one it already applied), so the plan is recomputed rather than tracked.

use std::collections::BTreeMap;

use protocol::control::{QueueAssignment, QueueReplication, ReplicaRole};

/// One queue of one topic.
pub type QueueKey = (String, u32);

/// What a live broker reports of the replicated queues it holds, by queue.
pub type Reports = BTreeMap<String, BTreeMap<QueueKey, QueueReplication>>;

/// What to do, in the order to do it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// `(broker id, assignment)` to send with `QueueRole`; a queue's leader before its
    /// followers.
    pub send: Vec<(String, QueueAssignment)>,
    /// Queues whose leader cannot lead in its epoch any more (it restarted: a broker leads
    /// only in a new epoch): the controller elects again, from the in-sync set. (A leader
    /// that is not live is the failure detector's to replace.)
    pub elect: Vec<QueueKey>,
    /// In-sync sets the leaders ask for: followers that fell behind leave, followers that
    /// caught up return. The controller applies them (a new assignment, same epoch).
    pub in_sync: Vec<(QueueKey, Vec<String>)>,
}

/// The plan for `desired` assignments given `reports` of the live brokers.
pub fn plan(desired: &[QueueAssignment], reports: &Reports) -> Plan {
    let mut out = Plan::default();
    for a in desired {
        let key = (a.topic.clone(), a.queue_id);
        let report_of = |broker: &str| reports.get(broker).and_then(|queues| queues.get(&key));
        if a.leader.is_empty() {
            if !a.in_sync.is_empty() {
                out.elect.push(key.clone());
            }
            continue;
        }
        let Some(leader) = report_of(&a.leader) else {
            // Not live: the controller's failure detector replaces it once its heartbeats
            // stop. Live but not reporting the queue yet (its next registration will): wait.
            continue;
        };
        if leader.epoch == a.epoch && leader.role != ReplicaRole::Leader {
            out.elect.push(key.clone());
            continue;
        }
        let leader_current = leader.epoch == a.epoch && leader.role == ReplicaRole::Leader;
        if !leader_current || reported_in_sync(&a.leader, leader) != sorted(&a.in_sync) {
            out.send.push((a.leader.clone(), a.clone()));
        }
        for replica in a.replicas.iter().filter(|r| **r != a.leader) {
            let Some(r) = report_of(replica) else {
                continue;
            };
            let current = r.epoch == a.epoch && r.role == ReplicaRole::Follower;
            if !current && r.epoch <= a.epoch {
                out.send.push((replica.clone(), a.clone()));
            }
        }
        if leader_current {
            let mut wanted: Vec<String> = a
                .in_sync
                .iter()
                .filter(|r| {
                    !leader
                        .followers
                        .iter()
                        .any(|f| f.broker_id == **r && f.lagging)
                })
                .cloned()
                .collect();
            for f in leader.followers.iter().filter(|f| f.caught_up) {
                if !wanted.contains(&f.broker_id) {
                    wanted.push(f.broker_id.clone());
                }
            }
            let wanted = sorted(&wanted);
            if wanted != sorted(&a.in_sync) {
                out.in_sync.push((key, wanted));
            }
        }
    }
    out
}

/// The in-sync set a leader reports: itself and its in-sync followers, sorted.
fn reported_in_sync(leader: &str, report: &QueueReplication) -> Vec<String> {
    let mut set: Vec<String> = report
        .followers
        .iter()
        .filter(|f| f.in_sync)
        .map(|f| f.broker_id.clone())
        .collect();
    set.push(leader.to_owned());
    set.sort();
    set
}

fn sorted(set: &[String]) -> Vec<String> {
    let mut set = set.to_vec();
    set.sort();
    set.dedup();
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::control::FollowerStatus;

    const IDS: [&str; 3] = ["a", "b", "c"];

    fn assignment(epoch: u64, leader: &str, in_sync: &[&str]) -> QueueAssignment {
        QueueAssignment {
            topic: "A10-1".into(),
            queue_id: 0,
            epoch,
            leader: leader.into(),
            leader_endpoint: format!("{leader}:1"),
            replicas: IDS.iter().map(|s| s.to_string()).collect(),
            in_sync: in_sync.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn follower(id: &str, in_sync: bool, lagging: bool, caught_up: bool) -> FollowerStatus {
        FollowerStatus {
            broker_id: id.into(),
            durable_end: 0,
            in_sync,
            lagging,
            caught_up,
        }
    }

    fn report(epoch: u64, role: ReplicaRole, followers: Vec<FollowerStatus>) -> QueueReplication {
        QueueReplication {
            queue_id: 0,
            epoch,
            role,
            followers,
            ..QueueReplication::default()
        }
    }

    fn reports(list: Vec<(&str, QueueReplication)>) -> Reports {
        list.into_iter()
            .map(|(broker, r)| {
                (
                    broker.to_owned(),
                    BTreeMap::from([(("A10-1".to_owned(), 0), r)]),
                )
            })
            .collect()
    }

    fn sent(plan: &Plan) -> Vec<&str> {
        plan.send.iter().map(|(b, _)| b.as_str()).collect()
    }

    #[test]
    fn a_new_epoch_goes_to_its_leader_first_then_its_followers() {
        let desired = [assignment(2, "b", &["b", "c"])];
        let now = reports(vec![
            ("a", report(1, ReplicaRole::Follower, vec![])),
            ("b", report(1, ReplicaRole::Follower, vec![])),
            ("c", report(1, ReplicaRole::Follower, vec![])),
        ]);
        let plan = plan(&desired, &now);
        assert_eq!(sent(&plan), ["b", "a", "c"]);
        assert!(plan.elect.is_empty() && plan.in_sync.is_empty());
    }

    #[test]
    fn brokers_that_report_the_assignment_are_left_alone() {
        let desired = [assignment(2, "b", &["b", "c"])];
        let now = reports(vec![
            (
                "b",
                report(
                    2,
                    ReplicaRole::Leader,
                    vec![
                        follower("a", false, false, false),
                        follower("c", true, false, false),
                    ],
                ),
            ),
            ("c", report(2, ReplicaRole::Follower, vec![])),
            ("a", report(2, ReplicaRole::Follower, vec![])),
        ]);
        assert_eq!(plan(&desired, &now), Plan::default());
    }

    #[test]
    fn a_restarted_leader_needs_an_election_a_silent_one_is_left_to_the_detector() {
        let desired = [assignment(2, "b", &["b", "c"])];
        let dead = reports(vec![("c", report(2, ReplicaRole::Follower, vec![]))]);
        assert_eq!(
            plan(&desired, &dead),
            Plan::default(),
            "a silent leader is the failure detector's to replace"
        );
        let restarted = reports(vec![
            ("b", report(2, ReplicaRole::Unassigned, vec![])),
            ("c", report(2, ReplicaRole::Follower, vec![])),
        ]);
        let p = plan(&desired, &restarted);
        assert_eq!(p.elect, [("A10-1".to_owned(), 0)]);
        assert!(
            p.send.is_empty(),
            "a restarted leader is not told to resume its epoch"
        );
    }

    #[test]
    fn a_restarted_follower_is_told_again() {
        let desired = [assignment(2, "b", &["b", "c"])];
        let now = reports(vec![
            (
                "b",
                report(
                    2,
                    ReplicaRole::Leader,
                    vec![follower("c", true, false, false)],
                ),
            ),
            ("c", report(2, ReplicaRole::Unassigned, vec![])),
        ]);
        assert_eq!(sent(&plan(&desired, &now)), ["c"]);
    }

    #[test]
    fn leaders_ask_to_drop_laggards_and_take_back_who_caught_up() {
        let desired = [assignment(2, "b", &["a", "b", "c"])];
        let now = reports(vec![(
            "b",
            report(
                2,
                ReplicaRole::Leader,
                vec![
                    follower("a", true, true, false),
                    follower("c", true, false, false),
                ],
            ),
        )]);
        let p = plan(&desired, &now);
        assert_eq!(
            p.in_sync,
            [(
                ("A10-1".to_owned(), 0),
                vec!["b".to_owned(), "c".to_owned()]
            )]
        );
        let desired = [assignment(2, "b", &["b", "c"])];
        let now = reports(vec![(
            "b",
            report(
                2,
                ReplicaRole::Leader,
                vec![
                    follower("a", false, false, true),
                    follower("c", true, false, false),
                ],
            ),
        )]);
        let p = plan(&desired, &now);
        assert_eq!(
            p.in_sync,
            [(
                ("A10-1".to_owned(), 0),
                vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]
            )]
        );
        assert!(p.send.is_empty());
    }

    #[test]
    fn a_leader_told_another_in_sync_set_is_told_again() {
        let desired = [assignment(2, "b", &["b", "c"])];
        let now = reports(vec![(
            "b",
            report(
                2,
                ReplicaRole::Leader,
                vec![
                    follower("a", true, false, false),
                    follower("c", true, false, false),
                ],
            ),
        )]);
        assert_eq!(sent(&plan(&desired, &now)), ["b"]);
    }
}
