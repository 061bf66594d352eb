//! Retry control bodies: a consumer's rejection of one message (`Nack`) and the broker's
//! answer (ARCHITECTURE §13.2).

use rkyv::{Archive, Deserialize, Serialize};

use super::ControlError;
use crate::record::RETRY_REASON_LEN_MAX;

/// Consumer → the broker shard that pushed the message: the message at `offset` of
/// `queue_id` was rejected. The subscription names the topic and group (so only a member
/// that was pushed the queue can nack it). The broker appends a copy to the group's retry
/// topic (or, past the group's `max_redeliveries` or with `dead_letter`, to its dead-letter
/// topic) and answers once the copy is stored as its topic promises; the consumer then counts
/// the message as consumed.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Nack {
    /// The subscription the message was pushed on.
    pub subscription_id: u64,
    /// The queue it was pushed from.
    pub queue_id: u32,
    /// Its offset there.
    pub offset: u64,
    /// Straight to the dead-letter topic, whatever the attempt (an ordered consumer that
    /// retried in place and gave up).
    pub dead_letter: bool,
    /// Why it was rejected (a handler's error), kept in the copy; at most
    /// [`RETRY_REASON_LEN_MAX`] bytes.
    pub reason: String,
}

impl Nack {
    /// Checks the fields a broker relies on.
    pub fn validate(&self) -> Result<(), ControlError> {
        if self.reason.len() > RETRY_REASON_LEN_MAX {
            return Err(ControlError::Invalid {
                field: "reason",
                reason: "is longer than 512 bytes",
            });
        }
        Ok(())
    }
}

/// Broker → consumer: where the copy of a nacked message was stored.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct NackAck {
    /// The retry or dead-letter topic.
    pub topic: String,
    /// Its queue: the backoff level in a retry topic, 0 in a dead-letter topic.
    pub queue_id: u32,
    /// The copy's offset there.
    pub offset: u64,
    /// The copy's attempt: 1 for the first redelivery.
    pub attempt: u32,
    /// True when the copy went to the dead-letter topic.
    pub dead_lettered: bool,
}

/// The internal group whose committed offset on a dead-letter queue marks what was resent
/// or purged: messages below it are done, the rest pending.
pub const DEAD_LETTER_GROUP: &str = "defibus-dlq";

/// Most dead letters one `DeadLetterShow` returns.
pub const DEAD_LETTERS_SHOWN_MAX: u32 = 1000;

/// Bytes of each value a `DeadLetterShow` returns.
pub const DEAD_LETTER_PREVIEW_BYTES: u32 = 256;

/// Admin → broker: one queue of a dead-letter topic, for `DeadLetterShow`,
/// `DeadLetterResend` and `DeadLetterPurge`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DeadLetterRequest {
    /// The dead-letter topic, `<topic>.DLQ.<group>`.
    pub topic: String,
    /// Its queue (one per broker: 0).
    pub queue_id: u32,
    /// Show: at most this many (capped at [`DEAD_LETTERS_SHOWN_MAX`]); resend and purge:
    /// 0 for all pending, else at most this many, oldest first.
    pub limit: u32,
    /// Resend only the message at this offset; it must be the oldest pending one (what
    /// was resent is tracked as a position, so a later one cannot be marked done alone).
    pub offset: Option<u64>,
}

impl DeadLetterRequest {
    /// Checks the topic is a dead-letter topic.
    pub fn validate(&self) -> Result<(), ControlError> {
        self.topic.parse::<crate::names::Topic>()?;
        if crate::retry::kind(&self.topic) != crate::retry::TopicKind::DeadLetter {
            return Err(ControlError::Invalid {
                field: "topic",
                reason: "is not a dead-letter topic (<topic>.DLQ.<group>)",
            });
        }
        Ok(())
    }
}

/// One dead letter as `DeadLetterShow` returns it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DeadLetter {
    /// Its offset in the dead-letter queue.
    pub offset: u64,
    /// Create time of the original message, Unix ms.
    pub timestamp_ms: i64,
    /// The topic it was first delivered from.
    pub origin_topic: String,
    /// Its queue there.
    pub origin_queue: u32,
    /// Its offset there.
    pub origin_offset: u64,
    /// Deliveries before it was dead-lettered, the first included.
    pub deliveries: u32,
    /// The last rejection's reason.
    pub reason: String,
    /// The key.
    pub key: Vec<u8>,
    /// The first [`DEAD_LETTER_PREVIEW_BYTES`] of the value.
    pub value_preview: Vec<u8>,
    /// The value's whole length.
    pub value_len: u32,
}

/// Broker → admin: the answer to a dead-letter request.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DeadLetterReply {
    /// Oldest retained offset of the queue.
    pub start_offset: u64,
    /// Offset the next dead letter gets.
    pub next_offset: u64,
    /// First pending offset before the request (what was resent or purged is below it).
    pub pending_from: u64,
    /// Show: the pending dead letters, oldest first.
    pub letters: Vec<DeadLetter>,
    /// Resend and purge: how many were resent or marked done.
    pub done: u64,
}
