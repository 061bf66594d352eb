//! `TraceMessage`: one message's life as the broker holding its queue remembers it
//! (`docs/ARCHITECTURE.md` §12).
//!
//! The request names one queue on one broker and a message in it, by offset or by key; the
//! answer says when and where it was stored, which groups were pushed it and when, when each
//! group committed past it, and for a request its deadline and reply. Every time is the
//! broker's clock, ms since the Unix epoch.

use rkyv::{Archive, Deserialize, Serialize};

use super::ControlError;
use crate::names::Topic;

/// Most matches a key search returns per queue.
pub const TRACE_MATCHES_MAX: u32 = 16;
/// Most records of a queue a key search may be asked to read, newest first.
pub const TRACE_SEARCH_RECORDS_MAX: u64 = 1_000_000;
/// Longest key a search may name, bytes (a record key's limit).
pub const TRACE_KEY_LEN_MAX: usize = u16::MAX as usize;

/// Which message of the queue to trace.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum TraceTarget {
    /// The record at this offset (it may sit inside a batch).
    Offset(u64),
    /// The newest record of the queue (at its next offset − 1), if it holds any.
    Newest,
    /// The records with this key among the newest `search_records` of the queue, newest
    /// `matches_max` kept.
    Key {
        /// The key, as produced.
        key: Vec<u8>,
        /// How many of the newest records to read, at most [`TRACE_SEARCH_RECORDS_MAX`] (the
        /// broker's `trace.scan_bytes_max` may stop it sooner; the answer says where).
        search_records: u64,
        /// Most matches to trace, at most [`TRACE_MATCHES_MAX`].
        matches_max: u32,
    },
}

impl Default for TraceTarget {
    fn default() -> Self {
        Self::Offset(0)
    }
}

/// Body of `TraceMessage`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct TraceRequest {
    /// The topic, `[area]-[serviceId]`.
    pub topic: String,
    /// The queue id on the broker asked.
    pub queue_id: u32,
    /// The message.
    pub target: TraceTarget,
}

impl TraceRequest {
    /// The topic, parsed.
    pub fn topic(&self) -> Result<Topic, ControlError> {
        Ok(self.topic.parse()?)
    }

    /// Checks the topic name and the bounds of a key search.
    pub fn validate(&self) -> Result<(), ControlError> {
        self.topic()?;
        if let TraceTarget::Key {
            key,
            search_records,
            matches_max,
        } = &self.target
        {
            let invalid = |field, reason| Err(ControlError::Invalid { field, reason });
            if key.is_empty() || key.len() > TRACE_KEY_LEN_MAX {
                return invalid("key", "1 to 65535 bytes");
            }
            if *search_records == 0 || *search_records > TRACE_SEARCH_RECORDS_MAX {
                return invalid("search_records", "1 to 1000000");
            }
            if *matches_max == 0 || *matches_max > TRACE_MATCHES_MAX {
                return invalid("matches_max", "1 to 16");
            }
        }
        Ok(())
    }
}

/// The answer to `TraceMessage`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct TraceReply {
    /// The broker that answered (and holds the queue).
    pub broker_id: String,
    /// The shard owning the queue.
    pub shard_id: u32,
    /// The topic.
    pub topic: String,
    /// The queue id.
    pub queue_id: u32,
    /// The queue's oldest retained offset when asked.
    pub start_offset: u64,
    /// The queue's next offset when asked.
    pub next_offset: u64,
    /// The broker's clock when it answered.
    pub now_ms: i64,
    /// A key search read offsets `[searched_from, searched_to)`; equal for an offset lookup.
    pub searched_from: u64,
    /// See `searched_from`.
    pub searched_to: u64,
    /// The messages found: none when the offset is outside the queue, in a gap, or no record
    /// has the key; oldest first.
    pub messages: Vec<MessageLife>,
}

/// One message's life.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct MessageLife {
    /// Its offset in the queue.
    pub offset: u64,
    /// The first offset of the batch it was stored in.
    pub batch_base_offset: u64,
    /// How many records that batch holds.
    pub batch_records: u32,
    /// When the broker appended the batch (its stamped append time).
    pub stored_ms: i64,
    /// The producer's create time.
    pub created_ms: i64,
    /// `MessageType` code: 0 event, 1 request, 2 reply.
    pub message_type: u8,
    /// The key; empty when none.
    pub key: Vec<u8>,
    /// Bytes of the value.
    pub value_bytes: u32,
    /// The W3C `traceparent`, when the message carries one.
    pub traceparent: Option<String>,
    /// The W3C `tracestate`, when the message carries one.
    pub tracestate: Option<String>,
    /// Per group that consumes, consumed or was pushed the queue, by group name (broadcast
    /// members as `group/client_id`).
    pub groups: Vec<GroupLife>,
    /// For a request: its deadline and reply.
    pub request: Option<RequestLife>,
}

/// One push of a range of offsets to a member of a group.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct PushLife {
    /// The member pushed to.
    pub client_id: String,
    /// When the push was handed to its connection.
    pub at_ms: i64,
    /// First offset of the push (records below the member's position are not counted).
    pub from_offset: u64,
    /// Offset after the push's last record.
    pub to_offset: u64,
}

/// When a group committed past the message, as its offset journal remembers.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum CommitTime {
    /// The group's committed offset is not past the message.
    #[default]
    NotCommitted,
    /// The first commit past the message stored after the message was.
    At(i64),
    /// The search's byte budget ran out at a commit stored at this time: the first commit
    /// past the message is later.
    After(i64),
    /// The journal could not be read; why.
    Unknown(String),
}

/// One group's dealings with the message.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct GroupLife {
    /// The group (broadcast: `group/client_id`).
    pub group: String,
    /// The member the queue is assigned to now, empty when none is.
    pub client_id: String,
    /// The pushes that carried the message, oldest first (several: redeliveries).
    pub pushes: Vec<PushLife>,
    /// Every push of this group on this queue from this time on is remembered: a message
    /// pushed before it may show no push. The shard's start, or the time of the latest push
    /// the bounded memory (`trace.pushes_remembered`) let go; `i64::MAX` when the broker
    /// remembers no pushes (`trace.pushes_remembered = 0`).
    pub pushes_since_ms: i64,
    /// The group's committed offset now (the next offset it will consume).
    pub committed_offset: Option<u64>,
    /// When it first committed past the message.
    pub committed: CommitTime,
}

/// Where a request's reply is, if anywhere.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum ReplySearch {
    /// No reply stored between the request's storing and its deadline (plus a second of
    /// clock slack), nor since, up to the search's end.
    #[default]
    NotFound,
    /// The reply.
    Found(ReplyLife),
    /// The search's byte budget ran out at a reply stored at this time.
    After(i64),
    /// The reply queue could not be read; why.
    Unknown(String),
}

/// A request's deadline and reply.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RequestLife {
    /// The requester's client id.
    pub reply_to: String,
    /// The correlation id pairing request and reply.
    pub correlation_id: Vec<u8>,
    /// The deadline, ms since the Unix epoch (the requester's clock).
    pub deadline_ms: u64,
    /// The reply, searched in the reply queue of the shard owning the request's queue (where
    /// responders send replies).
    pub reply: ReplySearch,
}

/// A stored reply.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ReplyLife {
    /// When the broker stored it.
    pub stored_ms: i64,
    /// The shard whose reply queue holds it.
    pub shard_id: u32,
    /// Its offset in that reply queue.
    pub offset: u64,
    /// The reply's `traceparent`, when it carries one.
    pub traceparent: Option<String>,
}
