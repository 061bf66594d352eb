//! Held messages: the id of a delayed or half message, and the bodies of `CancelHeld`,
//! `EndTransaction`, `TransactionCheck` and `HeldStats` (ARCHITECTURE §13.3-§13.4).

use std::fmt;
use std::str::FromStr;

use rkyv::{Archive, Deserialize, Serialize};

use super::ControlError;
use crate::names::{GroupName, Topic};

/// Where a held message lives: its queue and its offset in that queue's held log. A produce
/// of held records is acknowledged with these offsets; the id is what a producer cancels,
/// commits or rolls back by. Written `topic/queue/offset`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug))]
pub struct HeldRef {
    /// The topic.
    pub topic: String,
    /// The queue id.
    pub queue_id: u32,
    /// The record's offset in the queue's held log.
    pub offset: u64,
}

impl HeldRef {
    /// Checks the topic name.
    pub fn validate(&self) -> Result<(), ControlError> {
        self.topic.parse::<Topic>()?;
        Ok(())
    }
}

impl fmt::Display for HeldRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.topic, self.queue_id, self.offset)
    }
}

impl FromStr for HeldRef {
    type Err = ControlError;

    /// Parses `topic/queue/offset`, as [`HeldRef`]'s `Display` writes it.
    fn from_str(text: &str) -> Result<Self, ControlError> {
        let invalid = |reason| ControlError::Invalid {
            field: "message id",
            reason,
        };
        let mut parts = text.rsplitn(3, '/');
        let (Some(offset), Some(queue), Some(topic)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("expected topic/queue/offset"));
        };
        let id = Self {
            topic: topic.to_owned(),
            queue_id: queue
                .parse()
                .map_err(|_| invalid("queue is not a number"))?,
            offset: offset
                .parse()
                .map_err(|_| invalid("offset is not a number"))?,
        };
        id.validate()?;
        Ok(id)
    }
}

/// Producer → broker (`EndTransaction`): the outcome of a half message's local transaction.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct EndTransaction {
    /// The half message.
    pub id: HeldRef,
    /// True: deliver it; false: discard it.
    pub commit: bool,
}

/// Broker → producer (`TransactionCheck` push): the broker has no outcome for this half
/// message after its check timeout; the producer group's check handler answers with an
/// `EndTransaction`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct TransactionCheck {
    /// The half message.
    pub id: HeldRef,
    /// Its producer group.
    pub producer_group: String,
    /// Which check this is, from 1; the broker applies its default outcome after the last.
    pub check: u32,
    /// The half record itself (one record batch), so the handler can look at its key,
    /// properties and value.
    pub batch: Vec<u8>,
}

/// Producer → broker (`TransactionCheck` request): this connection answers the check-backs
/// of `producer_group`, until it closes.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct CheckRegistration {
    /// The producer group.
    pub producer_group: String,
}

impl CheckRegistration {
    /// Checks the group name.
    pub fn validate(&self) -> Result<(), ControlError> {
        self.producer_group.parse::<GroupName>()?;
        Ok(())
    }
}

/// Admin → broker (`HeldStats`): the held messages of one queue.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct HeldStatsRequest {
    /// The topic.
    pub topic: String,
    /// The queue id.
    pub queue_id: u32,
}

/// Broker → admin: the held messages of one queue.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct HeldStats {
    /// Delayed messages waiting for their time.
    pub pending_delayed: u64,
    /// Half messages waiting for their outcome.
    pub pending_half: u64,
    /// The held log's next offset.
    pub next_offset: u64,
    /// Bytes of memory the queue's timer index takes.
    pub timer_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_ids_print_and_parse_back() {
        let id = HeldRef {
            topic: "A10-1".into(),
            queue_id: 3,
            offset: 42,
        };
        assert_eq!(id.to_string(), "A10-1/3/42");
        assert_eq!("A10-1/3/42".parse::<HeldRef>().unwrap(), id);
        assert!("A10-1/3".parse::<HeldRef>().is_err());
        assert!("A10-1/x/4".parse::<HeldRef>().is_err());
        assert!("bad topic/1/4".parse::<HeldRef>().is_err());
    }
}
