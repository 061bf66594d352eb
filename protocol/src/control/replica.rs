//! Replication payloads (`docs/ARCHITECTURE.md` §10): a queue's roles as the controller
//! decided them, and the follower → leader fetch.

use rkyv::{Archive, Deserialize, Serialize};

use super::ControlError;

/// How many replicas hold a produce before it is acknowledged.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum Acks {
    /// Once the leader holds it by the topic's flush mode. A failover may lose what the
    /// followers had not copied yet.
    #[default]
    Leader,
    /// Once every in-sync replica holds it by the topic's flush mode: a failover to any of
    /// them keeps it.
    All,
}

impl std::fmt::Display for Acks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Leader => "leader",
            Self::All => "all",
        })
    }
}

impl std::str::FromStr for Acks {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "leader" => Ok(Self::Leader),
            "all" => Ok(Self::All),
            other => Err(format!("acks must be `leader` or `all`, not `{other}`")),
        }
    }
}

/// Most replicas a queue may have.
pub const REPLICAS_MAX: u8 = 7;

/// One queue's roles, as the controller decided them for `epoch`: the body of `QueueRole`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct QueueAssignment {
    /// Topic name, `[area]-[serviceId]`.
    pub topic: String,
    /// The queue id.
    pub queue_id: u32,
    /// The leader epoch; raised at every election.
    pub epoch: u64,
    /// The leader's broker id; empty while the queue has no leader (no in-sync replica is
    /// alive and no unclean election was asked for).
    pub leader: String,
    /// `host:port` of the shard owning the queue on the leader, where followers fetch.
    pub leader_endpoint: String,
    /// Every replica's broker id, the leader included.
    pub replicas: Vec<String>,
    /// The in-sync replicas, the leader included.
    pub in_sync: Vec<String>,
}

impl QueueAssignment {
    /// Checks that the leader and the in-sync set are replicas, without duplicates.
    pub fn validate(&self) -> Result<(), ControlError> {
        let invalid = |field, reason| Err(ControlError::Invalid { field, reason });
        if self.replicas.is_empty() || self.replicas.len() > usize::from(REPLICAS_MAX) {
            return invalid("replicas", "a queue has 1 to 7 replicas");
        }
        let mut sorted = self.replicas.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != self.replicas.len() {
            return invalid("replicas", "a broker holds at most one replica of a queue");
        }
        if !self.leader.is_empty() && !self.replicas.contains(&self.leader) {
            return invalid("leader", "the leader must be a replica");
        }
        if !self.in_sync.iter().all(|r| self.replicas.contains(r)) {
            return invalid("in_sync", "every in-sync replica must be a replica");
        }
        if !self.leader.is_empty() && self.leader_endpoint.is_empty() {
            return invalid("leader_endpoint", "a led queue names where to fetch");
        }
        Ok(())
    }
}

/// Where one leader epoch began.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct EpochStart {
    /// The epoch.
    pub epoch: u64,
    /// Its first offset.
    pub start_offset: u64,
}

/// The body of `ReplicaFetch`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ReplicaFetch {
    /// Topic name.
    pub topic: String,
    /// The queue id.
    pub queue_id: u32,
    /// The follower's broker id.
    pub replica: String,
    /// The epoch the follower follows; the leader refuses any other.
    pub epoch: u64,
    /// The follower's log end: it holds every offset below it durably by the topic's flush
    /// mode, and wants the batches from it.
    pub offset: u64,
    /// Most bytes of batches to return (at least one whole batch when any is there).
    pub max_bytes: u32,
    /// How long the leader may hold the fetch when it has nothing past `offset` yet.
    pub max_wait_ms: u32,
    /// The leader's consumer-offset generation the follower last applied (`u64::MAX`: none
    /// yet in this epoch); the leader sends the queue's group offsets when its own differs.
    pub offsets_generation: u64,
}

/// One consumer group's committed offset in a queue.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct GroupOffset {
    /// The group.
    pub group: String,
    /// Its committed offset.
    pub offset: u64,
}

/// The header-extension tag of a `ReplicaFetch` answer's [`ReplicaFetchReply`].
pub const FETCH_REPLY_EXT_TAG: u16 = 0x0601;

/// The answer to `ReplicaFetch`, in its frame's header extension (tag
/// [`FETCH_REPLY_EXT_TAG`]); the frame's body is the batches, back to back, bytes as on the
/// leader's disk, sent without a body checksum (each batch carries its own, and the follower
/// verifies every one), so the leader writes them from its cache without a copy of its own.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ReplicaFetchReply {
    /// The leader's epoch.
    pub epoch: u64,
    /// The commit point: the follower may let consumers read below it once it leads.
    pub committed: u64,
    /// The leader's log end.
    pub leader_end: u64,
    /// The epoch the first batch belongs to and every later one: the follower records them
    /// as it appends, so its epoch journal matches the leader's.
    pub epoch_starts: Vec<EpochStart>,
    /// The leader's consumer-offset generation these group offsets are from.
    pub offsets_generation: u64,
    /// Every group's committed offset in the queue, when the generation changed since the
    /// follower's (empty otherwise): offsets move with their queue, so consumers resume
    /// after a failover where they committed.
    pub group_offsets: Vec<GroupOffset>,
}

impl ReplicaFetchReply {
    /// The header extension carrying `self`; `None` when it exceeds one extension field
    /// (64 KiB: a queue with thousands of groups), which the caller avoids by sending the
    /// group offsets another time.
    pub fn encode_ext(&self) -> Result<Option<Vec<u8>>, ControlError> {
        let archive = super::encode(self)?;
        let mut ext = Vec::with_capacity(archive.len() + 8);
        let field = crate::frame::ExtField {
            tag: FETCH_REPLY_EXT_TAG,
            value: &archive,
        };
        Ok(crate::frame::encode_ext(&[field], &mut ext)
            .ok()
            .map(|()| ext))
    }

    /// The answer in the header extension `ext` of a `ReplicaFetch` response.
    pub fn decode_ext(ext: &[u8]) -> Result<Self, ControlError> {
        let invalid = |reason| ControlError::Invalid {
            field: "ReplicaFetch answer",
            reason,
        };
        let mut found = None;
        for field in crate::frame::ExtFields::new(ext) {
            let field = field.map_err(|_| invalid("malformed header extension"))?;
            if field.tag == FETCH_REPLY_EXT_TAG {
                if found.is_some() {
                    return Err(invalid("the answer field appears twice"));
                }
                found = Some(field.value);
            }
        }
        super::decode(found.ok_or(invalid("no answer field in the header extension"))?)
    }
}

/// The body of `ReplicaEpochEnd`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ReplicaEpochEnd {
    /// Topic name.
    pub topic: String,
    /// The queue id.
    pub queue_id: u32,
    /// The epoch the follower follows now.
    pub epoch: u64,
    /// The follower's latest recorded epoch.
    pub last_epoch: u64,
}

/// The answer to `ReplicaEpochEnd`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ReplicaEpochEndReply {
    /// Whether the leader's history knows an epoch at or below `last_epoch`; when not, the
    /// follower cuts to what it knows was committed.
    pub found: bool,
    /// The latest epoch at or below `last_epoch` in the leader's history.
    pub epoch: u64,
    /// Where that epoch ended in the leader's log: the follower keeps what is below.
    pub end_offset: u64,
}

/// A queue's role on the broker that reports it.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum ReplicaRole {
    /// No leader is known for the epoch (or none was assigned yet).
    #[default]
    Unassigned,
    /// This broker leads the queue.
    Leader,
    /// This broker copies the leader's log.
    Follower,
}

/// One follower as its leader sees it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct FollowerStatus {
    /// The follower's broker id.
    pub broker_id: String,
    /// Offsets below this are durable on the follower, as its last fetch said.
    pub durable_end: u64,
    /// In the in-sync set.
    pub in_sync: bool,
    /// In the set but not caught up within the lag time: the leader asks for its removal.
    pub lagging: bool,
    /// Out of the set but holding the log up to the commit point: the leader asks for its
    /// return.
    pub caught_up: bool,
}

/// A replicated queue's state on the broker that reports it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct QueueReplication {
    /// The queue id.
    pub queue_id: u32,
    /// The epoch of the role.
    pub epoch: u64,
    /// The role.
    pub role: ReplicaRole,
    /// The commit point as this broker knows it.
    pub committed: u64,
    /// The local log's end.
    pub log_end: u64,
    /// The leader's view of each follower (empty on followers).
    pub followers: Vec<FollowerStatus>,
    /// Every replica, as the last assignment named them (empty before the first).
    pub replicas: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{decode, encode};

    fn assignment() -> QueueAssignment {
        QueueAssignment {
            topic: "A10-1".into(),
            queue_id: 2,
            epoch: 7,
            leader: "b".into(),
            leader_endpoint: "127.0.0.1:10912".into(),
            replicas: vec!["a".into(), "b".into(), "c".into()],
            in_sync: vec!["b".into(), "c".into()],
        }
    }

    #[test]
    fn payloads_round_trip() {
        let a = assignment();
        assert_eq!(decode::<QueueAssignment>(&encode(&a).unwrap()).unwrap(), a);
        let reply = ReplicaFetchReply {
            epoch: 3,
            committed: 10,
            leader_end: 12,
            epoch_starts: vec![EpochStart {
                epoch: 3,
                start_offset: 9,
            }],
            offsets_generation: 4,
            group_offsets: vec![GroupOffset {
                group: "g".into(),
                offset: 5,
            }],
        };
        assert_eq!(
            decode::<ReplicaFetchReply>(&encode(&reply).unwrap()).unwrap(),
            reply
        );
        let ext = reply.encode_ext().unwrap().unwrap();
        assert_eq!(ReplicaFetchReply::decode_ext(&ext).unwrap(), reply);
        assert!(ReplicaFetchReply::decode_ext(&[]).is_err());
        assert_eq!("all".parse::<Acks>(), Ok(Acks::All));
        assert_eq!(Acks::Leader.to_string(), "leader");
        assert!("most".parse::<Acks>().unwrap_err().contains("leader"));
    }

    #[test]
    fn an_assignment_names_only_replicas() {
        assignment().validate().unwrap();
        let mut bad = assignment();
        bad.leader = "z".into();
        assert!(bad.validate().is_err());
        let mut bad = assignment();
        bad.in_sync.push("z".into());
        assert!(bad.validate().is_err());
        let mut bad = assignment();
        bad.replicas.push("a".into());
        assert!(bad.validate().is_err(), "duplicate replica");
        let mut bad = assignment();
        bad.leader_endpoint.clear();
        assert!(bad.validate().is_err());
        let mut offline = assignment();
        offline.leader.clear();
        offline.leader_endpoint.clear();
        offline.validate().unwrap();
    }
}
