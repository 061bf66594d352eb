//! Control-plane payloads: the bodies of admin, nameserver, GSL and SGS frames.
//!
//! Each payload is a plain owned struct archived with rkyv (little-endian, 32-bit relative
//! pointers, the crate's fixed defaults), so that a receiver can validate an archive with
//! bytecheck and read it in place, or [`decode`] it into the owned type. Control traffic is
//! rare next to the data plane, so the format favours safety and evolution by new commands
//! over raw speed; names travel as strings and are checked into [`crate::names`] types by each
//! payload's helpers, at the edge, where the error can be answered with
//! [`Status::InvalidName`].
//!
//! Archives are validated before use: [`access`] and [`decode`] never trust a byte of input.
//! A frame body starts 8-aligned in its frame (the header and extension keep it so), which is
//! the alignment every archive here needs ([`ARCHIVE_ALIGN`]); [`decode`] copies a misaligned
//! input rather than failing, [`access`] reports it.

use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::de::Pool;
use rkyv::rancor::{self, Strategy};
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

use crate::codes::{Status, UnknownStatus};
use crate::names::NameError;

mod admin;
mod broker;
mod data;
mod held;
mod producer;
mod replica;
mod retry;
mod security;
mod service;
mod trace;

pub use admin::{
    BrokerId, BrokerStats, GroupQueueStats, QueueDamage, QueueScrub, QueueStats, RegisterAck,
    ScrubReply, ScrubRequest, ShardStats, SkippedOffsets, TopicList, TopicName,
};
pub use broker::{
    BrokerRegistration, BrokerSummary, ClusterInfo, MAX_QUEUE_DEPTH_DEFAULT, QUEUE_COUNT_DEFAULT,
    QueueRoute, REDIRECTS_MAX, RETENTION_AGE_MS_DEFAULT, RedirectRule, TopicConfig, TopicConfigV1,
    TopicInfo, TopicRoute,
};
pub use data::{
    ClientHeartbeat, CommitOffset, Credit, FetchOffset, HEARTBEAT_INTERVAL_MS_DEFAULT,
    HeartbeatAck, OffsetReply, ProduceAck, StartPosition, Subscribe, SubscribeAck,
    SubscriptionMode, Unsubscribe,
};
pub use held::{
    CheckRegistration, EndTransaction, HeldRef, HeldStats, HeldStatsRequest, TransactionCheck,
};
pub use producer::InitProducerReply;
pub use replica::{
    Acks, EpochStart, FETCH_REPLY_EXT_TAG, FollowerStatus, GroupOffset, QueueAssignment,
    QueueReplication, REPLICAS_MAX, ReplicaEpochEnd, ReplicaEpochEndReply, ReplicaFetch,
    ReplicaFetchReply, ReplicaRole,
};
pub use retry::{
    DEAD_LETTER_GROUP, DEAD_LETTER_PREVIEW_BYTES, DEAD_LETTERS_SHOWN_MAX, DeadLetter,
    DeadLetterReply, DeadLetterRequest, Nack, NackAck,
};
pub use security::{Authenticate, Authenticated, PolicyDocument, PolicyGet};
pub use service::{
    Deployment, GslResolveReply, GslResolveRequest, GslUpdate, ServiceIdRequest, ServiceList,
    ServiceRecord, ServiceState,
};
pub use trace::{
    CommitTime, GroupLife, MessageLife, PushLife, ReplyLife, ReplySearch, RequestLife,
    TRACE_KEY_LEN_MAX, TRACE_MATCHES_MAX, TRACE_SEARCH_RECORDS_MAX, TraceReply, TraceRequest,
    TraceTarget,
};

/// The alignment every control archive needs in memory: the largest field is a `u64`.
pub const ARCHIVE_ALIGN: usize = 8;

/// Why a control payload could not be encoded, decoded or accepted.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Serialization failed (only for payloads too large for 32-bit relative pointers).
    #[error("cannot encode {type_name}: {source}")]
    Encode {
        /// The payload type.
        type_name: &'static str,
        /// What rkyv reported.
        #[source]
        source: rancor::Error,
    },
    /// The bytes are not a valid archive of the expected type.
    #[error("invalid {type_name} archive of {len} bytes: {source}")]
    Decode {
        /// The payload type expected.
        type_name: &'static str,
        /// Length of the input.
        len: usize,
        /// What validation found.
        #[source]
        source: rancor::Error,
    },
    /// The input is not aligned to [`ARCHIVE_ALIGN`] for in-place access.
    #[error("{type_name} archive at an address misaligned by {misalignment} bytes")]
    Misaligned {
        /// The payload type expected.
        type_name: &'static str,
        /// The address modulo [`ARCHIVE_ALIGN`].
        misalignment: usize,
    },
    /// A name in the payload is not well formed.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A field is out of range or inconsistent with another.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl ControlError {
    /// The status to answer a request with when its payload was refused.
    pub fn status(&self) -> Status {
        match self {
            Self::Encode { .. } => Status::Internal,
            Self::Decode { .. } | Self::Misaligned { .. } => Status::MalformedFrame,
            Self::Name(_) => Status::InvalidName,
            Self::Invalid { .. } => Status::InvalidArgument,
        }
    }
}

/// Archives `value` into a new buffer, ready to be a frame body.
pub fn encode<T>(value: &T) -> Result<Vec<u8>, ControlError>
where
    T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
{
    rkyv::to_bytes::<rancor::Error>(value)
        .map(AlignedVec::into_vec)
        .map_err(|source| ControlError::Encode {
            type_name: std::any::type_name::<T>(),
            source,
        })
}

/// Validates `bytes` as an archived `T` and returns a view into them, without copying.
///
/// `bytes` must start at an address aligned to [`ARCHIVE_ALIGN`], as frame bodies do.
pub fn access<T>(bytes: &[u8]) -> Result<&T::Archived, ControlError>
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    let type_name = std::any::type_name::<T>();
    let misalignment = bytes.as_ptr() as usize % ARCHIVE_ALIGN;
    if misalignment != 0 {
        return Err(ControlError::Misaligned {
            type_name,
            misalignment,
        });
    }
    rkyv::access::<T::Archived, rancor::Error>(bytes).map_err(|source| ControlError::Decode {
        type_name,
        len: bytes.len(),
        source,
    })
}

/// Validates `bytes` as an archived `T` and deserializes it into an owned value.
///
/// A misaligned input is copied once into an aligned buffer of the same size; allocation is
/// otherwise proportional to the input, which the frame limit already bounds.
pub fn decode<T>(bytes: &[u8]) -> Result<T, ControlError>
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + Deserialize<T, Strategy<Pool, rancor::Error>>,
{
    let type_name = std::any::type_name::<T>();
    let decode_aligned = |bytes: &[u8]| {
        rkyv::from_bytes::<T, rancor::Error>(bytes).map_err(|source| ControlError::Decode {
            type_name,
            len: bytes.len(),
            source,
        })
    };
    if (bytes.as_ptr() as usize) % ARCHIVE_ALIGN == 0 {
        decode_aligned(bytes)
    } else {
        let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        decode_aligned(&aligned)
    }
}

/// How a topic's appends are made durable.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum FlushMode {
    /// Acknowledge once written to the shard's buffer; flushed on an interval or size.
    #[default]
    Async,
    /// Acknowledge after `fdatasync` (group-committed with concurrent appends).
    Sync,
}

impl FlushMode {
    /// The mode as configuration and listings spell it: `async` or `sync`.
    pub const fn as_str(self) -> &'static str {
        match self {
            FlushMode::Async => "async",
            FlushMode::Sync => "sync",
        }
    }
}

/// The body of an error response: the status again, plus what a human needs to fix it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ErrorReply {
    /// The [`Status`] code, repeated from the header so the body stands alone in logs.
    pub status: u16,
    /// Human-readable detail: which name, which limit, which queue.
    pub message: String,
}

impl ErrorReply {
    /// An error reply with `status` and `message`.
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        Self {
            status: status.code(),
            message: message.into(),
        }
    }

    /// The status, if this build knows it.
    pub fn status(&self) -> Result<Status, UnknownStatus> {
        Status::try_from(self.status)
    }
}

impl From<&ControlError> for ErrorReply {
    fn from(error: &ControlError) -> Self {
        Self::new(error.status(), error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_reply_round_trips_at_any_alignment() {
        let reply = ErrorReply::new(Status::QueueDepthExceeded, "queue 3 holds 500");
        let bytes = encode(&reply).unwrap();
        assert_eq!(decode::<ErrorReply>(&bytes).unwrap(), reply);
        let mut shifted = vec![0u8; bytes.len() + 1];
        shifted[1..].copy_from_slice(&bytes);
        let shifted = &shifted[1..];
        assert_eq!(decode::<ErrorReply>(shifted).unwrap(), reply);
        if (shifted.as_ptr() as usize) % ARCHIVE_ALIGN != 0 {
            assert!(matches!(
                access::<ErrorReply>(shifted),
                Err(ControlError::Misaligned { .. })
            ));
        }
        let mut aligned = AlignedVec::<16>::new();
        aligned.extend_from_slice(&bytes);
        let archived = access::<ErrorReply>(&aligned).unwrap();
        assert_eq!(archived.status, 301);
        assert_eq!(archived.message.as_str(), "queue 3 holds 500");
        assert_eq!(reply.status(), Ok(Status::QueueDepthExceeded));
    }

    #[test]
    fn archive_align_covers_every_payload() {
        use std::mem::align_of;
        let aligns = [
            align_of::<ArchivedErrorReply>(),
            align_of::<ArchivedFlushMode>(),
            align_of::<broker::ArchivedTopicInfo>(),
            align_of::<broker::ArchivedBrokerRegistration>(),
            align_of::<broker::ArchivedQueueRoute>(),
            align_of::<broker::ArchivedTopicRoute>(),
            align_of::<broker::ArchivedBrokerSummary>(),
            align_of::<broker::ArchivedClusterInfo>(),
            align_of::<broker::ArchivedTopicConfig>(),
            align_of::<service::ArchivedServiceRecord>(),
            align_of::<service::ArchivedServiceState>(),
            align_of::<service::ArchivedGslResolveRequest>(),
            align_of::<service::ArchivedDeployment>(),
            align_of::<service::ArchivedGslResolveReply>(),
            align_of::<service::ArchivedGslUpdate>(),
            align_of::<data::ArchivedClientHeartbeat>(),
            align_of::<data::ArchivedHeartbeatAck>(),
            align_of::<data::ArchivedProduceAck>(),
            align_of::<producer::ArchivedInitProducerReply>(),
            align_of::<data::ArchivedSubscribe>(),
            align_of::<data::ArchivedSubscribeAck>(),
            align_of::<data::ArchivedCredit>(),
            align_of::<data::ArchivedCommitOffset>(),
            align_of::<data::ArchivedFetchOffset>(),
            align_of::<data::ArchivedOffsetReply>(),
            align_of::<data::ArchivedUnsubscribe>(),
            align_of::<admin::ArchivedTopicName>(),
            align_of::<admin::ArchivedTopicList>(),
            align_of::<admin::ArchivedBrokerStats>(),
            align_of::<admin::ArchivedQueueStats>(),
            align_of::<admin::ArchivedGroupQueueStats>(),
            align_of::<admin::ArchivedQueueDamage>(),
            align_of::<admin::ArchivedScrubRequest>(),
            align_of::<admin::ArchivedSkippedOffsets>(),
            align_of::<admin::ArchivedQueueScrub>(),
            align_of::<admin::ArchivedScrubReply>(),
            align_of::<admin::ArchivedShardStats>(),
            align_of::<admin::ArchivedRegisterAck>(),
            align_of::<admin::ArchivedBrokerId>(),
            align_of::<rkyv::Archived<u64>>(),
        ];
        assert!(aligns.iter().all(|&a| a <= ARCHIVE_ALIGN), "{aligns:?}");
    }

    #[test]
    fn errors_cross_threads() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<ControlError>();
    }

    #[test]
    fn garbage_is_a_decode_error_naming_the_type() {
        let err = decode::<ErrorReply>(&[0xFF; 3]).unwrap_err();
        assert!(err.to_string().contains("ErrorReply"), "{err}");
        assert_eq!(err.status(), Status::MalformedFrame);
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn flush_mode_archive_rejects_unknown_variants() {
        let mut bytes = AlignedVec::<16>::new();
        bytes.extend_from_slice(&encode(&FlushMode::Sync).unwrap());
        assert_eq!(decode::<FlushMode>(&bytes).unwrap(), FlushMode::Sync);
        bytes[0] = 7;
        assert!(decode::<FlushMode>(&bytes).is_err());
    }
}
