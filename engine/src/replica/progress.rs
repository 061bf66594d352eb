//! What a leader knows of its followers: how far each holds the log durably, which are in
//! sync, and the commit point (high watermark) that `acks=all` produces and consumers wait on.
//!
//! A follower's fetch from offset `o` says it holds `[.., o)` durably by the topic's flush
//! mode (it fetches only after that), so a fetch is also its acknowledgement: no separate ack
//! message, no extra round trip (Kafka's design; a leader push would need both). The commit
//! point is the least durable end over the in-sync set, the leader's own included, and never
//! goes back. A follower is in sync while it has been caught up (fetched from the leader's
//! end as it was then) within `lag_time_max`; one that falls behind is reported for removal,
//! and one that reaches the commit point again for re-admission. The controller decides both
//! (`AlterIsr`); this state only applies what it accepted.
//!
//! Pure: the clock is passed in, so every rule is tested without time passing.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

/// Why a follower's fetch is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchRefused {
    /// The follower is not a replica of this queue.
    #[error("{replica} is not a replica of this queue")]
    NotReplica {
        /// The broker that asked.
        replica: String,
    },
    /// The follower's epoch is not the leader's: an older one means the follower has not
    /// learned of this leader yet; a newer one means this leader is deposed.
    #[error("fetch in epoch {fetch_epoch}, but this leader's epoch is {leader_epoch}")]
    EpochMismatch {
        /// The follower's view.
        fetch_epoch: u64,
        /// This leader's epoch.
        leader_epoch: u64,
    },
    /// The follower claims more than the leader holds: its tail diverged, and it must cut it
    /// (by the epoch journal) before fetching.
    #[error("fetch from offset {fetch_offset}, past the leader's end {log_end}")]
    AheadOfLeader {
        /// Where the follower asked from.
        fetch_offset: u64,
        /// The leader's end.
        log_end: u64,
    },
}

/// One follower as its leader reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerView {
    /// The follower's broker id.
    pub broker_id: String,
    /// Offsets below this are durable on it.
    pub durable_end: u64,
    /// In the in-sync set.
    pub in_sync: bool,
    /// In the set, but not caught up within the lag time.
    pub lagging: bool,
    /// Out of the set, but holding the log up to the commit point.
    pub caught_up: bool,
}

/// One follower, as its leader sees it.
#[derive(Debug, Clone)]
struct Follower {
    /// Offsets below this are durable on the follower (its last fetch offset).
    end: u64,
    /// The last time it fetched from the leader's end as it was then.
    caught_up_at: Instant,
}

/// Who leads a queue in which epoch, and with which replicas: what the controller decided.
#[derive(Debug, Clone, Copy)]
pub struct Term<'a> {
    /// The leader's broker id.
    pub leader: &'a str,
    /// The epoch of its leadership.
    pub epoch: u64,
    /// Every replica, the leader included.
    pub replicas: &'a [String],
    /// The in-sync replicas.
    pub in_sync: &'a [String],
}

/// The leader's view of one replicated queue for one epoch.
#[derive(Debug, Clone)]
pub struct ReplicaSet {
    leader: String,
    epoch: u64,
    followers: BTreeMap<String, Follower>,
    /// In-sync followers (the leader is always in sync with itself).
    in_sync: Vec<String>,
    leader_durable: u64,
    committed: u64,
    lag_time_max: Duration,
}

impl ReplicaSet {
    /// The state of a leader that took over for `term`, its log durable to `leader_durable`.
    /// The commit point starts at `committed`, what the leader knows was committed (its own
    /// durable end bounds it: a new leader never commits past what it holds). Every follower
    /// starts as caught up `now`: a new leader gives each the full lag time to fetch.
    pub fn new(
        term: Term<'_>,
        leader_durable: u64,
        committed: u64,
        lag_time_max: Duration,
        now: Instant,
    ) -> Self {
        let Term {
            leader,
            epoch,
            replicas,
            in_sync,
        } = term;
        let followers = replicas
            .iter()
            .filter(|r| *r != leader)
            .map(|r| {
                let follower = Follower {
                    end: 0,
                    caught_up_at: now,
                };
                (r.clone(), follower)
            })
            .collect();
        let mut set = Self {
            leader: leader.to_owned(),
            epoch,
            followers,
            in_sync: Vec::new(),
            leader_durable,
            committed: committed.min(leader_durable),
            lag_time_max,
        };
        set.set_in_sync(in_sync);
        set
    }

    /// The epoch this leader serves.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The in-sync followers, the leader not included.
    pub fn in_sync(&self) -> &[String] {
        &self.in_sync
    }

    /// The commit point: every offset below it is durable on the leader and every in-sync
    /// follower. Produces with `acks=all` are answered once it passes them; consumers read
    /// only below it (a record above it may still be cut by a failover).
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Where `replica` holds the log durably, as its last fetch said.
    pub fn follower_end(&self, replica: &str) -> Option<u64> {
        self.followers.get(replica).map(|f| f.end)
    }

    /// The leader's own log became durable to `end`. Returns whether the commit point moved.
    pub fn on_leader_durable(&mut self, end: u64) -> bool {
        self.leader_durable = self.leader_durable.max(end);
        self.advance()
    }

    /// A fetch by `replica` in `epoch` from `offset`, against the leader's log end `log_end`:
    /// the follower holds `[.., offset)` durably. Returns whether the commit point moved.
    pub fn on_fetch(
        &mut self,
        replica: &str,
        epoch: u64,
        offset: u64,
        log_end: u64,
        now: Instant,
    ) -> Result<bool, FetchRefused> {
        if epoch != self.epoch {
            return Err(FetchRefused::EpochMismatch {
                fetch_epoch: epoch,
                leader_epoch: self.epoch,
            });
        }
        let Some(follower) = self.followers.get_mut(replica) else {
            return Err(FetchRefused::NotReplica {
                replica: replica.to_owned(),
            });
        };
        if offset > log_end {
            return Err(FetchRefused::AheadOfLeader {
                fetch_offset: offset,
                log_end,
            });
        }
        follower.end = offset;
        if offset >= log_end {
            follower.caught_up_at = now;
        }
        Ok(self.advance())
    }

    /// In-sync followers that have not been caught up within the lag time: the leader asks
    /// the controller to drop them, so the commit point stops waiting on them.
    pub fn lagging(&self, now: Instant) -> Vec<String> {
        self.in_sync
            .iter()
            .filter(|r| {
                self.followers.get(*r).is_some_and(|f| {
                    now.saturating_duration_since(f.caught_up_at) > self.lag_time_max
                })
            })
            .cloned()
            .collect()
    }

    /// Followers out of the in-sync set that hold the log up to the commit point again: the
    /// leader asks the controller to re-admit them.
    pub fn caught_up(&self) -> Vec<String> {
        self.followers
            .iter()
            .filter(|(r, f)| !self.in_sync.contains(r) && f.end >= self.committed)
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// Every follower: its durable end, whether it is in sync, lagging ([`Self::lagging`]) or
    /// caught up ([`Self::caught_up`]), by broker id.
    pub fn followers(&self, now: Instant) -> Vec<FollowerView> {
        let lagging = self.lagging(now);
        let caught_up = self.caught_up();
        self.followers
            .iter()
            .map(|(id, f)| FollowerView {
                broker_id: id.clone(),
                durable_end: f.end,
                in_sync: self.in_sync.contains(id),
                lagging: lagging.contains(id),
                caught_up: caught_up.contains(id),
            })
            .collect()
    }

    /// Applies the in-sync set the controller accepted (the leader, if listed, is dropped:
    /// it is always in sync). Returns whether the commit point moved (it may, once a laggard
    /// left).
    pub fn set_in_sync(&mut self, in_sync: &[String]) -> bool {
        self.in_sync = in_sync
            .iter()
            .filter(|r| **r != self.leader && self.followers.contains_key(*r))
            .cloned()
            .collect();
        self.advance()
    }

    /// Moves the commit point to the least durable end over the in-sync set, never back.
    fn advance(&mut self) -> bool {
        let least = self
            .in_sync
            .iter()
            .filter_map(|r| self.followers.get(r).map(|f| f.end))
            .fold(self.leader_durable, u64::min);
        if least > self.committed {
            self.committed = least;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn set(now: Instant) -> ReplicaSet {
        let all = names(&["a", "b", "c"]);
        let term = Term {
            leader: "a",
            epoch: 3,
            replicas: &all,
            in_sync: &all,
        };
        ReplicaSet::new(term, 0, 0, Duration::from_secs(10), now)
    }

    #[test]
    fn the_commit_point_is_the_least_durable_end_of_the_in_sync_set() {
        let now = Instant::now();
        let mut s = set(now);
        assert!(!s.on_leader_durable(100));
        assert_eq!(s.committed(), 0);
        assert!(!s.on_fetch("b", 3, 80, 100, now).unwrap());
        assert!(s.on_fetch("c", 3, 60, 100, now).unwrap());
        assert_eq!(s.committed(), 60);
        s.on_fetch("c", 3, 100, 100, now).unwrap();
        assert_eq!(s.committed(), 80);
        s.on_fetch("b", 3, 100, 100, now).unwrap();
        assert_eq!(s.committed(), 100);
        // The leader's own durability bounds it too.
        s.on_fetch("b", 3, 100, 150, now).unwrap();
        assert_eq!(s.committed(), 100);
    }

    #[test]
    fn the_commit_point_never_goes_back() {
        let now = Instant::now();
        let mut s = set(now);
        s.on_leader_durable(50);
        s.on_fetch("b", 3, 50, 50, now).unwrap();
        s.on_fetch("c", 3, 50, 50, now).unwrap();
        assert_eq!(s.committed(), 50);
        // A follower that restarted and fetches from lower (it cut and refetches) does not
        // undo what was committed.
        s.on_fetch("c", 3, 20, 50, now).unwrap();
        assert_eq!(s.committed(), 50);
    }

    #[test]
    fn fetches_from_another_epoch_a_stranger_or_past_the_end_are_refused() {
        let now = Instant::now();
        let mut s = set(now);
        assert!(matches!(
            s.on_fetch("b", 2, 0, 10, now),
            Err(FetchRefused::EpochMismatch {
                fetch_epoch: 2,
                leader_epoch: 3
            })
        ));
        assert!(matches!(
            s.on_fetch("b", 4, 0, 10, now),
            Err(FetchRefused::EpochMismatch { .. })
        ));
        assert!(matches!(
            s.on_fetch("z", 3, 0, 10, now),
            Err(FetchRefused::NotReplica { .. })
        ));
        assert!(matches!(
            s.on_fetch("b", 3, 11, 10, now),
            Err(FetchRefused::AheadOfLeader { .. })
        ));
        assert_eq!(
            s.follower_end("b"),
            Some(0),
            "a refused fetch changes nothing"
        );
    }

    #[test]
    fn a_laggard_is_reported_dropped_and_readmitted_once_caught_up() {
        let t0 = Instant::now();
        let mut s = set(t0);
        s.on_leader_durable(100);
        s.on_fetch("b", 3, 100, 100, t0).unwrap();
        s.on_fetch("c", 3, 40, 100, t0).unwrap();
        assert_eq!(s.committed(), 40);
        // b keeps up; c fetches but never reaches the end.
        let t1 = t0 + Duration::from_secs(11);
        s.on_fetch("b", 3, 100, 100, t1).unwrap();
        s.on_fetch("c", 3, 60, 100, t1).unwrap();
        assert_eq!(s.lagging(t1), names(&["c"]));
        // The controller accepted the shrink: the commit point stops waiting for c.
        assert!(s.set_in_sync(&names(&["a", "b"])));
        assert_eq!(s.committed(), 100);
        assert!(s.caught_up().is_empty(), "c is below the commit point");
        s.on_fetch("c", 3, 100, 100, t1).unwrap();
        assert_eq!(s.caught_up(), names(&["c"]));
        s.set_in_sync(&names(&["a", "b", "c"]));
        assert!(s.lagging(t1).is_empty());
        let views = s.followers(t1);
        assert_eq!(views.len(), 2);
        assert!(
            views
                .iter()
                .all(|v| v.in_sync && !v.lagging && v.durable_end == 100)
        );
    }

    #[test]
    fn a_new_leader_never_commits_past_what_it_holds() {
        let now = Instant::now();
        let term = Term {
            leader: "b",
            epoch: 4,
            replicas: &names(&["a", "b"]),
            in_sync: &names(&["b"]),
        };
        let s = ReplicaSet::new(term, 30, 45, Duration::from_secs(10), now);
        assert_eq!(s.committed(), 30);
        assert!(s.in_sync().is_empty());
    }
}
