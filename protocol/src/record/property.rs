//! Record properties: typed well-known ones and user key/values.

use super::BuildError;
use crate::names::{AREA_LEN, Area};
use crate::trace::{TRACEPARENT_BYTES, TraceParent};

use super::retry::RetryMark;

/// Why a record's properties section was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PropertyError {
    /// A property runs past the end of the section.
    #[error("property with tag {tag} at byte {at} runs past the end")]
    Truncated {
        /// The property's tag.
        tag: u8,
        /// Its byte position in the section.
        at: usize,
    },
    /// A well-known property has the wrong size or encoding.
    #[error("property with tag {tag} ({}) at byte {at} is malformed", tag::name(*tag))]
    Malformed {
        /// The property's tag.
        tag: u8,
        /// Its byte position in the section.
        at: usize,
    },
}

/// Property tags. Tags below [`tag::USER`] are well-known; unknown ones are skipped by readers
/// that do not know them (they surface as [`Property::Unknown`]), so new ones can be added.
pub mod tag {
    /// Client id of the requester, where the reply goes. UTF-8.
    pub const REPLY_TO: u8 = 1;
    /// Opaque id pairing a reply with its request.
    pub const CORRELATION_ID: u8 = 2;
    /// Absolute deadline, Unix ms, `u64` little-endian: a request past it is never delivered.
    pub const DEADLINE_MS: u8 = 3;
    /// Area of the producer, three ASCII characters.
    pub const AREA: u8 = 4;
    /// Dark-launch and filtering tag. UTF-8.
    pub const TAG: u8 = 5;
    /// W3C `traceparent`: trace id (16 bytes), parent id (8), flags (1); version 00 implied.
    /// Neither id may be all zeros (see [`crate::trace`]).
    pub const TRACEPARENT: u8 = 6;
    /// W3C `tracestate`, normalised text (see [`crate::trace::TraceState`]); only beside a
    /// [`TRACEPARENT`].
    pub const TRACESTATE: u8 = 7;
    // ---- held messages (delayed and transactional, ARCHITECTURE §13.3-§13.4) ----
    /// When a delayed message is due, Unix ms, `u64` little-endian: the broker holds the record
    /// in its queue's held log until then.
    pub const DELIVER_AT_MS: u8 = 9;
    /// The held-log offset a record came from, `u64` little-endian. Set only by the broker: on
    /// the copy it releases into the queue, and on the outcome markers of its held log.
    pub const HELD_ORIGIN: u8 = 10;
    /// A transactional half message: the producer group (UTF-8) whose members answer its
    /// check-back. Held invisible until committed.
    pub const TXN_GROUP: u8 = 11;
    // ---- end of held messages ----
    // ---- retries and dead letters (ARCHITECTURE §13.2) ----
    /// The retry mark of a copy the broker appended to a retry or dead-letter topic: attempt,
    /// due time, origin and rejecting group ([`crate::record::RetryMark`]).
    pub const RETRY: u8 = 12;
    /// A user key/value: `[key_len: u8][key: UTF-8][value]`.
    pub const USER: u8 = 0x80;

    /// The property a tag stands for, for error messages.
    pub fn name(tag: u8) -> &'static str {
        match tag {
            REPLY_TO => "reply_to",
            CORRELATION_ID => "correlation id",
            DEADLINE_MS => "deadline",
            AREA => "area",
            TAG => "tag",
            TRACEPARENT => "traceparent",
            TRACESTATE => "tracestate",
            DELIVER_AT_MS => "deliver_at",
            HELD_ORIGIN => "held origin",
            TXN_GROUP => "transaction group",
            RETRY => "retry mark",
            USER => "user property",
            _ => "unknown",
        }
    }
}

/// Largest encoded property value.
pub const PROPERTY_LEN_MAX: usize = u16::MAX as usize;

/// One record property, borrowed from the batch bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Property<'a> {
    /// Where the reply goes: the requester's client id.
    ReplyTo(&'a str),
    /// Pairs a reply with its request.
    CorrelationId(&'a [u8]),
    /// Absolute deadline in Unix milliseconds.
    DeadlineMs(u64),
    /// The producer's area.
    Area(Area),
    /// Dark-launch or filtering tag.
    Tag(&'a str),
    /// The W3C `traceparent`.
    TraceParent(TraceParent),
    /// The W3C `tracestate`, normalised.
    TraceState(&'a str),
    /// When a delayed message is due, Unix milliseconds.
    DeliverAtMs(u64),
    /// The held-log offset a released record (or an outcome marker) refers to.
    HeldOrigin(u64),
    /// The producer group of a transactional half message.
    TxnGroup(&'a str),
    /// An application key/value.
    User {
        /// The key, UTF-8, at most 255 bytes.
        key: &'a str,
        /// The value.
        value: &'a [u8],
    },
    /// The retry mark of a redelivered copy (tag 12).
    Retry(RetryMark<'a>),
    /// A property from a newer writer; kept so it can be forwarded untouched.
    Unknown {
        /// Its tag.
        tag: u8,
        /// Its raw value.
        value: &'a [u8],
    },
}

impl Property<'_> {
    pub(crate) fn tag(&self) -> u8 {
        match self {
            Self::ReplyTo(_) => tag::REPLY_TO,
            Self::CorrelationId(_) => tag::CORRELATION_ID,
            Self::DeadlineMs(_) => tag::DEADLINE_MS,
            Self::Area(_) => tag::AREA,
            Self::Tag(_) => tag::TAG,
            Self::TraceParent(_) => tag::TRACEPARENT,
            Self::TraceState(_) => tag::TRACESTATE,
            Self::DeliverAtMs(_) => tag::DELIVER_AT_MS,
            Self::HeldOrigin(_) => tag::HELD_ORIGIN,
            Self::TxnGroup(_) => tag::TXN_GROUP,
            Self::User { .. } => tag::USER,
            Self::Retry(_) => tag::RETRY,
            Self::Unknown { tag, .. } => *tag,
        }
    }

    /// Bytes this property takes in a record, tag and length included.
    pub fn encoded_len(&self) -> usize {
        3 + match self {
            Self::ReplyTo(s) | Self::Tag(s) | Self::TraceState(s) | Self::TxnGroup(s) => s.len(),
            Self::CorrelationId(b) | Self::Unknown { value: b, .. } => b.len(),
            Self::DeadlineMs(_) | Self::DeliverAtMs(_) | Self::HeldOrigin(_) => 8,
            Self::Area(_) => AREA_LEN,
            Self::TraceParent(_) => TRACEPARENT_BYTES,
            Self::User { key, value } => 1 + key.len() + value.len(),
            Self::Retry(mark) => mark.encoded_len(),
        }
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), BuildError> {
        let len = self.encoded_len() - 3;
        if len > PROPERTY_LEN_MAX {
            return Err(BuildError::PropertyTooLarge {
                tag: self.tag(),
                len,
            });
        }
        out.push(self.tag());
        out.extend_from_slice(&(len as u16).to_le_bytes());
        match self {
            Self::ReplyTo(s) | Self::Tag(s) | Self::TraceState(s) | Self::TxnGroup(s) => {
                out.extend_from_slice(s.as_bytes())
            }
            Self::TraceParent(parent) => out.extend_from_slice(&parent.to_bytes()),
            Self::CorrelationId(b) | Self::Unknown { value: b, .. } => out.extend_from_slice(b),
            Self::DeadlineMs(ms) | Self::DeliverAtMs(ms) | Self::HeldOrigin(ms) => {
                out.extend_from_slice(&ms.to_le_bytes())
            }
            Self::Area(area) => out.extend_from_slice(area.as_bytes()),
            Self::User { key, value } => {
                let key_len =
                    u8::try_from(key.len()).map_err(|_| BuildError::PropertyTooLarge {
                        tag: tag::USER,
                        len,
                    })?;
                out.push(key_len);
                out.extend_from_slice(key.as_bytes());
                out.extend_from_slice(value);
            }
            Self::Retry(mark) => {
                mark.encode(out).ok_or(BuildError::PropertyTooLarge {
                    tag: tag::RETRY,
                    len,
                })?;
            }
        }
        Ok(())
    }

    pub(crate) fn decode(tag: u8, value: &[u8], at: usize) -> Result<Property<'_>, PropertyError> {
        let malformed = PropertyError::Malformed { tag, at };
        let utf8 = |b| std::str::from_utf8(b).map_err(|_| malformed.clone());
        Ok(match tag {
            tag::REPLY_TO => Property::ReplyTo(utf8(value)?),
            tag::CORRELATION_ID => Property::CorrelationId(value),
            tag::DEADLINE_MS => {
                let ms: [u8; 8] = value.try_into().map_err(|_| malformed.clone())?;
                Property::DeadlineMs(u64::from_le_bytes(ms))
            }
            tag::DELIVER_AT_MS | tag::HELD_ORIGIN => {
                let raw: [u8; 8] = value.try_into().map_err(|_| malformed.clone())?;
                let raw = u64::from_le_bytes(raw);
                if tag == tag::DELIVER_AT_MS {
                    Property::DeliverAtMs(raw)
                } else {
                    Property::HeldOrigin(raw)
                }
            }
            // A group name, checked like every name, so a check-back can always address it.
            tag::TXN_GROUP => {
                let text = utf8(value)?;
                if text.parse::<crate::names::GroupName>().is_err() {
                    return Err(malformed);
                }
                Property::TxnGroup(text)
            }
            tag::AREA => Property::Area(Area::from_bytes_checked(value).ok_or(malformed)?),
            tag::TAG => Property::Tag(utf8(value)?),
            // Checked like the client and the proxy check them, so a batch built by hand
            // cannot store a context no reader could pass on.
            tag::TRACEPARENT => {
                Property::TraceParent(TraceParent::from_bytes(value).ok_or(malformed)?)
            }
            tag::TRACESTATE => {
                let text = utf8(value)?;
                if !crate::trace::is_stored_tracestate(text) {
                    return Err(malformed);
                }
                Property::TraceState(text)
            }
            tag::USER => {
                let (&key_len, rest) = value.split_first().ok_or_else(|| malformed.clone())?;
                if rest.len() < key_len as usize {
                    return Err(malformed);
                }
                let (key, value) = rest.split_at(key_len as usize);
                Property::User {
                    key: utf8(key)?,
                    value,
                }
            }
            tag::RETRY => Property::Retry(RetryMark::decode(value).ok_or(malformed)?),
            _ => Property::Unknown { tag, value },
        })
    }
}

/// Iterates the properties of a record; yields an error once and then stops on malformed input.
#[derive(Clone, Debug)]
pub struct Properties<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Properties<'a> {
    /// Iterates an encoded properties section.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }
}

impl<'a> Iterator for Properties<'a> {
    type Item = Result<Property<'a>, PropertyError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.bytes.get(self.at..).filter(|r| !r.is_empty())?;
        let start = self.at;
        let tag = rest[0];
        let Some(len) = rest
            .get(1..3)
            .map(|l| u16::from_le_bytes([l[0], l[1]]) as usize)
        else {
            self.at = self.bytes.len();
            return Some(Err(PropertyError::Truncated { tag, at: start }));
        };
        let Some(value) = rest.get(3..3 + len) else {
            self.at = self.bytes.len();
            return Some(Err(PropertyError::Truncated { tag, at: start }));
        };
        self.at += 3 + len;
        let property = Property::decode(tag, value, start);
        if property.is_err() {
            self.at = self.bytes.len();
        }
        Some(property)
    }
}
