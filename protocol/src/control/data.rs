//! Data-plane control bodies: heartbeats, produce acknowledgements, subscriptions, credit and
//! consumer offsets (`docs/ARCHITECTURE.md` §4.1). The record batches themselves are not here:
//! they travel as frame bodies, addressed by [`crate::data::BatchAddress`].

use rkyv::{Archive, Deserialize, Serialize};

use super::ControlError;
use crate::names::{Area, ClientId, GroupName, Topic};

/// Default interval between client heartbeats, in milliseconds.
pub const HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = 3000;

/// Client → broker, the first frame on every connection and then every heartbeat interval:
/// who the client is. Replies addressed to `client_id` are pushed on this connection.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ClientHeartbeat {
    /// The client instance id, unique per process; requests' `reply_to` names it.
    pub client_id: String,
    /// The client's area code.
    pub area: String,
}

impl ClientHeartbeat {
    /// The client id, parsed.
    pub fn client_id(&self) -> Result<ClientId, ControlError> {
        Ok(self.client_id.parse()?)
    }

    /// The area, parsed.
    pub fn area(&self) -> Result<Area, ControlError> {
        Ok(self.area.parse()?)
    }

    /// Checks both names.
    pub fn validate(&self) -> Result<(), ControlError> {
        self.client_id()?;
        self.area()?;
        Ok(())
    }
}

/// Broker → client: the answer to a heartbeat, saying which shard the connection reached.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct HeartbeatAck {
    /// The broker's id within its cluster.
    pub broker_id: String,
    /// The shard (core) serving this connection, `0..shard_count`.
    pub shard_id: u32,
    /// How many shards the broker runs; a consumer subscribes on a connection to each.
    pub shard_count: u32,
}

/// Broker → producer: where an appended batch landed. Also the answer to `Request` and `Reply`.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ProduceAck {
    /// The queue appended to (for `Reply`, the shard's reply queue).
    pub queue_id: u32,
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// Offset after the batch's last record.
    pub next_offset: u64,
}

/// How a subscription shares a topic with the other members of its group.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum SubscriptionMode {
    /// Unicast: each queue goes to one live member of the group at a time.
    #[default]
    Clustering,
    /// Every member gets every queue; offsets are kept per client id.
    Broadcast,
}

/// Where a subscription starts on a queue that has no committed offset for it.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum StartPosition {
    /// At the committed offset; at the earliest retained record when none is committed.
    #[default]
    Committed,
    /// At the earliest retained record, whatever was committed.
    Earliest,
    /// At the committed offset if any, otherwise at the end (only new records).
    Latest,
}

/// Consumer → broker shard: join `group` on `topic` and receive pushes of the queues this
/// shard owns and assigns to this client.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Subscribe {
    /// The topic, `[area]-[serviceId]`.
    pub topic: String,
    /// The consumer group.
    pub group: String,
    /// The subscribing client's id; members of a group are ordered by it.
    pub client_id: String,
    /// The client's area code.
    pub area: String,
    /// Clustering (unicast) or broadcast.
    pub mode: SubscriptionMode,
    /// Where to start on queues without a committed offset.
    pub start: StartPosition,
    /// Records the broker may push before the first `Credit`.
    pub credit_messages: u32,
}

impl Subscribe {
    /// The topic, parsed.
    pub fn topic(&self) -> Result<Topic, ControlError> {
        Ok(self.topic.parse()?)
    }

    /// The group, parsed.
    pub fn group(&self) -> Result<GroupName, ControlError> {
        Ok(self.group.parse()?)
    }

    /// Checks every name.
    pub fn validate(&self) -> Result<(), ControlError> {
        self.topic()?;
        self.group()?;
        self.client_id.parse::<ClientId>()?;
        self.area.parse::<Area>()?;
        Ok(())
    }
}

/// Broker → consumer: the subscription was recorded.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SubscribeAck {
    /// Id of the subscription on this connection; `Push`, `Credit` and `CommitOffset` name it.
    pub subscription_id: u64,
    /// Queues of the topic this shard owns (not necessarily all assigned to this member).
    pub queue_ids: Vec<u32>,
}

/// Consumer → broker, oneway: the broker may push `messages` more records.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Credit {
    /// The subscription granted.
    pub subscription_id: u64,
    /// Records added to the grant.
    pub messages: u32,
}

/// Consumer → broker: everything below `offset` on the queue is consumed.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct CommitOffset {
    /// The subscription committing (it names topic, group and, for broadcast, the client).
    pub subscription_id: u64,
    /// The queue.
    pub queue_id: u32,
    /// The next record to consume.
    pub offset: u64,
}

/// Any → broker: the committed offset of a group on one queue.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct FetchOffset {
    /// The topic.
    pub topic: String,
    /// The group (for a broadcast subscription, `group` + `/` + client id).
    pub group: String,
    /// The queue.
    pub queue_id: u32,
}

impl FetchOffset {
    /// Checks the topic name (the group may carry a broadcast client suffix).
    pub fn validate(&self) -> Result<(), ControlError> {
        self.topic.parse::<Topic>()?;
        if self.group.is_empty() {
            return Err(ControlError::Invalid {
                field: "group",
                reason: "must not be empty",
            });
        }
        Ok(())
    }
}

/// Broker → any: a committed offset, `None` when nothing was committed.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct OffsetReply {
    /// The next record the group will consume, if it committed one.
    pub offset: Option<u64>,
}

/// Consumer → broker: end a subscription; its queues go to the group's other members.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Unsubscribe {
    /// The subscription to end.
    pub subscription_id: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{decode, encode};

    #[test]
    fn subscribe_validation_names_the_bad_name() {
        let subscribe = Subscribe {
            topic: "A10-20190001".into(),
            group: "g1".into(),
            client_id: "10.0.0.7@4242#A10".into(),
            area: "A10".into(),
            mode: SubscriptionMode::Broadcast,
            start: StartPosition::Latest,
            credit_messages: 1000,
        };
        subscribe.validate().unwrap();
        assert_eq!(
            decode::<Subscribe>(&encode(&subscribe).unwrap()).unwrap(),
            subscribe
        );
        let bad = Subscribe {
            group: "g 1".into(),
            ..subscribe
        };
        let err = bad.validate().unwrap_err();
        assert!(err.to_string().contains("group"), "{err}");
        let heartbeat = ClientHeartbeat {
            client_id: "c1".into(),
            area: "a10".into(),
        };
        assert!(heartbeat.validate().is_err());
    }
}
