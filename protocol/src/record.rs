//! Record batches: the unit a producer sends, the log stores and a consumer receives.
//!
//! The same bytes go producer → socket → disk → socket → consumer. The producer builds and
//! checksums a batch once; the broker only *stamps* two header fields in place (the base offset
//! and its append time) and never re-encodes a record. Readers walk a batch without copying.
//!
//! # Layout (all integers little-endian)
//!
//! Batch header, [`BATCH_HEADER_LEN`] bytes:
//!
//! | offset | size | field | set by |
//! |---|---|---|---|
//! | 0  | 4 | `batch_len`: whole batch in bytes, header included | producer |
//! | 4  | 4 | `crc32c` of bytes `[CRC_START, batch_len)` | producer |
//! | 8  | 8 | `base_offset`: offset of the first record | broker (stamped) |
//! | 16 | 8 | `append_time_ms`: broker clock when appended, Unix ms | broker (stamped) |
//! | 24 | 4 | `record_count` (≥ 1) | producer |
//! | 28 | 1 | `version` ([`BATCH_VERSION`]) | producer |
//! | 29 | 1 | `attributes` (reserved, zero) | producer |
//! | 30 | 2 | reserved, zero | producer |
//! | 32 | 8 | `first_timestamp_ms`: create time of the first record | producer |
//! | 40 | 8 | `max_timestamp_ms`: latest create time in the batch | producer |
//!
//! The batch checksum leaves out the stamped fields, so stamping never recomputes it; the log
//! guards them instead by checking that each batch's `base_offset` continues the previous one.
//!
//! Each record, [`RECORD_HEADER_LEN`] bytes of header followed by key, properties and value:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0  | 4 | `record_len`: whole record in bytes |
//! | 4  | 4 | `crc32c` of bytes `[8, record_len)`: end-to-end integrity of this record |
//! | 8  | 4 | `offset_delta`: index in the batch; the offset is `base_offset + offset_delta` |
//! | 12 | 2 | `attributes`: bits 0-1 [`MessageType`], other bits reserved zero |
//! | 14 | 2 | `key_len` |
//! | 16 | 8 | `timestamp_ms`: create time, Unix ms |
//! | 24 | 4 | `properties_len` |
//! | 28 | 4 | `value_len` |
//!
//! Properties are a sequence of `[tag: u8][len: u16][len bytes]`; see [`Property`].

use crate::names::{AREA_LEN, Area};

/// Size of the batch header in bytes.
pub const BATCH_HEADER_LEN: usize = 48;
/// Size of a record header in bytes.
pub const RECORD_HEADER_LEN: usize = 32;
/// First byte covered by the batch checksum: everything after the stamped fields.
pub const CRC_START: usize = 24;
/// The batch format version this crate writes and reads.
pub const BATCH_VERSION: u8 = 1;
/// Largest batch any component accepts unless configured lower (the frame limit bounds it too).
pub const BATCH_LEN_MAX: usize = 64 << 20;

/// The fixed header of a record batch, as laid out on the wire and on disk.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchHeader {
    /// Whole batch in bytes, header included.
    pub batch_len: u32,
    /// CRC32C of bytes `[CRC_START, batch_len)`.
    pub crc32c: u32,
    /// Offset of the first record; stamped by the broker.
    pub base_offset: u64,
    /// Broker clock at append, Unix milliseconds; stamped by the broker.
    pub append_time_ms: i64,
    /// Number of records; at least one.
    pub record_count: u32,
    /// Format version, [`BATCH_VERSION`].
    pub version: u8,
    /// Reserved for compression and timestamp flags; zero.
    pub attributes: u8,
    /// Reserved; zero.
    pub reserved: u16,
    /// Create time of the first record, Unix milliseconds.
    pub first_timestamp_ms: i64,
    /// Latest create time in the batch, Unix milliseconds.
    pub max_timestamp_ms: i64,
}

const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<BatchHeader>() == BATCH_HEADER_LEN);
    assert!(offset_of!(BatchHeader, batch_len) == 0);
    assert!(offset_of!(BatchHeader, crc32c) == 4);
    assert!(offset_of!(BatchHeader, base_offset) == 8);
    assert!(offset_of!(BatchHeader, append_time_ms) == 16);
    assert!(offset_of!(BatchHeader, record_count) == CRC_START);
    assert!(offset_of!(BatchHeader, version) == 28);
    assert!(offset_of!(BatchHeader, attributes) == 29);
    assert!(offset_of!(BatchHeader, reserved) == 30);
    assert!(offset_of!(BatchHeader, first_timestamp_ms) == 32);
    assert!(offset_of!(BatchHeader, max_timestamp_ms) == 40);
    assert!(BATCH_LEN_MAX <= u32::MAX as usize);
};

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    u64_at(b, at) as i64
}

impl BatchHeader {
    /// Reads a header from the first [`BATCH_HEADER_LEN`] bytes of `bytes`, without validating it.
    pub fn decode(bytes: &[u8]) -> Result<Self, BatchError> {
        if bytes.len() < BATCH_HEADER_LEN {
            return Err(BatchError::Incomplete {
                needed: BATCH_HEADER_LEN,
                available: bytes.len(),
            });
        }
        Ok(Self {
            batch_len: u32_at(bytes, 0),
            crc32c: u32_at(bytes, 4),
            base_offset: u64_at(bytes, 8),
            append_time_ms: i64_at(bytes, 16),
            record_count: u32_at(bytes, 24),
            version: bytes[28],
            attributes: bytes[29],
            reserved: u16_at(bytes, 30),
            first_timestamp_ms: i64_at(bytes, 32),
            max_timestamp_ms: i64_at(bytes, 40),
        })
    }

    /// Writes the header into the first [`BATCH_HEADER_LEN`] bytes of `out`.
    ///
    /// # Panics
    /// If `out` is shorter than the header: a caller bug, never a property of input data.
    pub fn encode(&self, out: &mut [u8]) {
        let out = &mut out[..BATCH_HEADER_LEN];
        out[0..4].copy_from_slice(&self.batch_len.to_le_bytes());
        out[4..8].copy_from_slice(&self.crc32c.to_le_bytes());
        out[8..16].copy_from_slice(&self.base_offset.to_le_bytes());
        out[16..24].copy_from_slice(&self.append_time_ms.to_le_bytes());
        out[24..28].copy_from_slice(&self.record_count.to_le_bytes());
        out[28] = self.version;
        out[29] = self.attributes;
        out[30..32].copy_from_slice(&self.reserved.to_le_bytes());
        out[32..40].copy_from_slice(&self.first_timestamp_ms.to_le_bytes());
        out[40..48].copy_from_slice(&self.max_timestamp_ms.to_le_bytes());
    }

    /// Checks the fields that can be judged without the body; says why the header is invalid.
    pub fn validate(&self, batch_len_max: usize) -> Result<(), BatchError> {
        let len = self.batch_len as usize;
        if len < BATCH_HEADER_LEN + RECORD_HEADER_LEN {
            return Err(BatchError::LengthTooSmall {
                len: self.batch_len,
            });
        }
        if len > batch_len_max {
            return Err(BatchError::TooLarge {
                len: self.batch_len,
                max: batch_len_max,
            });
        }
        if self.version != BATCH_VERSION {
            return Err(BatchError::Version(self.version));
        }
        if self.attributes != 0 || self.reserved != 0 {
            return Err(BatchError::Reserved);
        }
        if self.record_count == 0 {
            return Err(BatchError::Empty);
        }
        // Each record needs at least its header: a count the length cannot hold is a lie.
        if self.record_count as usize > (len - BATCH_HEADER_LEN) / RECORD_HEADER_LEN {
            return Err(BatchError::RecordCount {
                declared: self.record_count,
                found: 0,
            });
        }
        if self
            .base_offset
            .checked_add(u64::from(self.record_count))
            .is_none()
        {
            return Err(BatchError::OffsetOverflow {
                base_offset: self.base_offset,
            });
        }
        Ok(())
    }

    /// The offset one past the last record of the batch.
    pub fn next_offset(&self) -> u64 {
        self.base_offset
            .saturating_add(u64::from(self.record_count))
    }
}

/// Why a record batch was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The bytes end before the batch does; more input may complete it.
    #[error("incomplete batch: need {needed} bytes, have {available}")]
    Incomplete {
        /// Bytes the batch needs.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The declared length cannot hold a header and one record.
    #[error("batch length {len} is too small for a header and one record")]
    LengthTooSmall {
        /// The declared length.
        len: u32,
    },
    /// The declared length is over the configured limit.
    #[error("batch length {len} exceeds the limit of {max} bytes")]
    TooLarge {
        /// The declared length.
        len: u32,
        /// The limit.
        max: usize,
    },
    /// A batch version this build does not read.
    #[error("unsupported batch version {0} (this build reads version {BATCH_VERSION})")]
    Version(u8),
    /// Reserved header bytes are not zero.
    #[error("reserved batch header bytes are not zero")]
    Reserved,
    /// A batch with no records.
    #[error("batch holds no records")]
    Empty,
    /// Offsets of the batch would pass `u64::MAX`.
    #[error("base offset {base_offset} plus the record count overflows")]
    OffsetOverflow {
        /// The stamped base offset.
        base_offset: u64,
    },
    /// The batch checksum does not match its content.
    #[error("batch checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// Checksum in the header.
        stored: u32,
        /// Checksum of the bytes.
        computed: u32,
    },
    /// The record count in the header disagrees with the records found.
    #[error("batch declares {declared} records but holds {found}")]
    RecordCount {
        /// Count in the header.
        declared: u32,
        /// Records found in the body.
        found: u32,
    },
    /// One record is malformed.
    #[error("record {index} at byte {at}: {fault}")]
    Record {
        /// Index of the record in the batch.
        index: u32,
        /// Byte position of the record in the batch.
        at: usize,
        /// What is wrong with it.
        fault: RecordFault,
    },
}

/// What is wrong with one record of a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordFault {
    /// The record runs past the end of the batch.
    #[error("runs past the end of the batch")]
    Truncated,
    /// The record length disagrees with the lengths of its parts.
    #[error("length {record_len} disagrees with its parts ({parts} bytes)")]
    LengthMismatch {
        /// The declared record length.
        record_len: u32,
        /// Header plus key, properties and value.
        parts: u64,
    },
    /// The record checksum does not match.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// Checksum in the record.
        stored: u32,
        /// Checksum of the bytes.
        computed: u32,
    },
    /// Records must be numbered 0, 1, 2, ... within a batch.
    #[error("offset delta {found}, expected {expected}")]
    OffsetDelta {
        /// The index the record should carry.
        expected: u32,
        /// The index it carries.
        found: u32,
    },
    /// Reserved attribute bits are set, or the message type is unknown.
    #[error("invalid attributes {0:#06x}")]
    Attributes(u16),
    /// The properties section is malformed.
    #[error("properties: {0}")]
    Property(#[from] PropertyError),
}

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
    #[error("property with tag {tag} at byte {at} is malformed")]
    Malformed {
        /// The property's tag.
        tag: u8,
        /// Its byte position in the section.
        at: usize,
    },
}

/// What a message is for; request-reply needs to tell requests and replies from events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    /// A plain event: published, consumed, never answered.
    #[default]
    Event = 0,
    /// A request awaiting a reply (carries reply-to, correlation id and deadline).
    Request = 1,
    /// A reply to a request (carries the request's reply-to and correlation id).
    Reply = 2,
}

const MESSAGE_TYPE_MASK: u16 = 0b11;

impl MessageType {
    fn from_attributes(attributes: u16) -> Option<Self> {
        if attributes & !MESSAGE_TYPE_MASK != 0 {
            return None;
        }
        match attributes & MESSAGE_TYPE_MASK {
            0 => Some(Self::Event),
            1 => Some(Self::Request),
            2 => Some(Self::Reply),
            _ => None,
        }
    }
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
    /// A user key/value: `[key_len: u8][key: UTF-8][value]`.
    pub const USER: u8 = 0x80;
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
    /// An application key/value.
    User {
        /// The key, UTF-8, at most 255 bytes.
        key: &'a str,
        /// The value.
        value: &'a [u8],
    },
    /// A property from a newer writer; kept so it can be forwarded untouched.
    Unknown {
        /// Its tag.
        tag: u8,
        /// Its raw value.
        value: &'a [u8],
    },
}

impl Property<'_> {
    fn tag(&self) -> u8 {
        match self {
            Self::ReplyTo(_) => tag::REPLY_TO,
            Self::CorrelationId(_) => tag::CORRELATION_ID,
            Self::DeadlineMs(_) => tag::DEADLINE_MS,
            Self::Area(_) => tag::AREA,
            Self::Tag(_) => tag::TAG,
            Self::User { .. } => tag::USER,
            Self::Unknown { tag, .. } => *tag,
        }
    }

    /// Bytes this property takes in a record, tag and length included.
    pub fn encoded_len(&self) -> usize {
        3 + match self {
            Self::ReplyTo(s) | Self::Tag(s) => s.len(),
            Self::CorrelationId(b) | Self::Unknown { value: b, .. } => b.len(),
            Self::DeadlineMs(_) => 8,
            Self::Area(_) => AREA_LEN,
            Self::User { key, value } => 1 + key.len() + value.len(),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), BuildError> {
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
            Self::ReplyTo(s) | Self::Tag(s) => out.extend_from_slice(s.as_bytes()),
            Self::CorrelationId(b) | Self::Unknown { value: b, .. } => out.extend_from_slice(b),
            Self::DeadlineMs(ms) => out.extend_from_slice(&ms.to_le_bytes()),
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
        }
        Ok(())
    }

    fn decode(tag: u8, value: &[u8], at: usize) -> Result<Property<'_>, PropertyError> {
        let malformed = PropertyError::Malformed { tag, at };
        let utf8 = |b| std::str::from_utf8(b).map_err(|_| malformed.clone());
        Ok(match tag {
            tag::REPLY_TO => Property::ReplyTo(utf8(value)?),
            tag::CORRELATION_ID => Property::CorrelationId(value),
            tag::DEADLINE_MS => {
                let ms: [u8; 8] = value.try_into().map_err(|_| malformed.clone())?;
                Property::DeadlineMs(u64::from_le_bytes(ms))
            }
            tag::AREA => Property::Area(Area::from_bytes_checked(value).ok_or(malformed)?),
            tag::TAG => Property::Tag(utf8(value)?),
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

/// A validated record, borrowed from its batch.
#[derive(Clone, Copy, Debug)]
pub struct RecordView<'a> {
    bytes: &'a [u8],
    offset: u64,
}

impl<'a> RecordView<'a> {
    /// The record's absolute offset in its queue.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Create time, Unix milliseconds.
    pub fn timestamp_ms(&self) -> i64 {
        i64_at(self.bytes, 16)
    }

    /// What the message is for.
    pub fn message_type(&self) -> MessageType {
        // Validated when the batch was parsed.
        MessageType::from_attributes(u16_at(self.bytes, 12)).unwrap_or_default()
    }

    fn key_len(&self) -> usize {
        u16_at(self.bytes, 14) as usize
    }

    fn properties_len(&self) -> usize {
        u32_at(self.bytes, 24) as usize
    }

    /// The routing key; empty when the producer gave none.
    pub fn key(&self) -> &'a [u8] {
        &self.bytes[RECORD_HEADER_LEN..RECORD_HEADER_LEN + self.key_len()]
    }

    /// The raw properties section.
    pub fn properties_bytes(&self) -> &'a [u8] {
        let start = RECORD_HEADER_LEN + self.key_len();
        &self.bytes[start..start + self.properties_len()]
    }

    /// The record's properties, decoded lazily.
    pub fn properties(&self) -> Properties<'a> {
        Properties {
            bytes: self.properties_bytes(),
            at: 0,
        }
    }

    /// The payload.
    pub fn value(&self) -> &'a [u8] {
        &self.bytes[RECORD_HEADER_LEN + self.key_len() + self.properties_len()..]
    }

    /// The whole encoded record.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    fn find<T>(&self, pick: impl Fn(Property<'a>) -> Option<T>) -> Option<T> {
        // Validated when the batch was parsed, so errors cannot occur here.
        self.properties().filter_map(Result::ok).find_map(pick)
    }

    /// The requester's client id, on requests and replies.
    pub fn reply_to(&self) -> Option<&'a str> {
        self.find(|p| {
            if let Property::ReplyTo(v) = p {
                Some(v)
            } else {
                None
            }
        })
    }

    /// The id pairing a reply with its request.
    pub fn correlation_id(&self) -> Option<&'a [u8]> {
        self.find(|p| {
            if let Property::CorrelationId(v) = p {
                Some(v)
            } else {
                None
            }
        })
    }

    /// The absolute deadline, Unix milliseconds.
    pub fn deadline_ms(&self) -> Option<u64> {
        self.find(|p| {
            if let Property::DeadlineMs(v) = p {
                Some(v)
            } else {
                None
            }
        })
    }

    /// The producer's area.
    pub fn area(&self) -> Option<Area> {
        self.find(|p| {
            if let Property::Area(v) = p {
                Some(v)
            } else {
                None
            }
        })
    }

    /// The dark-launch or filtering tag.
    pub fn tag(&self) -> Option<&'a str> {
        self.find(|p| {
            if let Property::Tag(v) = p {
                Some(v)
            } else {
                None
            }
        })
    }
}

/// Checks one record at the start of `bytes` and returns its length.
fn check_record(bytes: &[u8], expected_delta: u32) -> Result<usize, RecordFault> {
    if bytes.len() < RECORD_HEADER_LEN {
        return Err(RecordFault::Truncated);
    }
    let record_len = u32_at(bytes, 0);
    let parts = RECORD_HEADER_LEN as u64
        + u64::from(u16_at(bytes, 14))
        + u64::from(u32_at(bytes, 24))
        + u64::from(u32_at(bytes, 28));
    if u64::from(record_len) != parts {
        return Err(RecordFault::LengthMismatch { record_len, parts });
    }
    let record = bytes
        .get(..record_len as usize)
        .ok_or(RecordFault::Truncated)?;
    let stored = u32_at(record, 4);
    let computed = crc32c::crc32c(&record[8..]);
    if stored != computed {
        return Err(RecordFault::Checksum { stored, computed });
    }
    let found = u32_at(record, 8);
    if found != expected_delta {
        return Err(RecordFault::OffsetDelta {
            expected: expected_delta,
            found,
        });
    }
    let attributes = u16_at(record, 12);
    if MessageType::from_attributes(attributes).is_none() {
        return Err(RecordFault::Attributes(attributes));
    }
    let view = RecordView {
        bytes: record,
        offset: 0,
    };
    if let Some(Err(e)) = view.properties().find(Result::is_err) {
        return Err(e.into());
    }
    Ok(record_len as usize)
}

/// A validated record batch, borrowed from a buffer.
#[derive(Clone, Copy, Debug)]
pub struct BatchView<'a> {
    header: BatchHeader,
    bytes: &'a [u8],
}

impl<'a> BatchView<'a> {
    /// Parses and fully validates the batch at the start of `bytes`: header, batch checksum and
    /// every record. Trailing bytes after the batch are left alone (see [`Self::len`]).
    ///
    /// Reports [`BatchError::Incomplete`] when `bytes` ends before the batch does, apart from
    /// invalid input, so a stream reader knows whether to wait for more. Never allocates.
    pub fn parse(bytes: &'a [u8], batch_len_max: usize) -> Result<Self, BatchError> {
        let header = BatchHeader::decode(bytes)?;
        header.validate(batch_len_max)?;
        let len = header.batch_len as usize;
        let bytes = bytes.get(..len).ok_or(BatchError::Incomplete {
            needed: len,
            available: bytes.len(),
        })?;
        let computed = crc32c::crc32c(&bytes[CRC_START..]);
        if computed != header.crc32c {
            return Err(BatchError::Checksum {
                stored: header.crc32c,
                computed,
            });
        }
        let mut at = BATCH_HEADER_LEN;
        let mut index = 0u32;
        while at < len {
            if index == header.record_count {
                return Err(BatchError::RecordCount {
                    declared: header.record_count,
                    found: index + 1,
                });
            }
            let record_len = check_record(&bytes[at..], index)
                .map_err(|fault| BatchError::Record { index, at, fault })?;
            at += record_len;
            index += 1;
        }
        if index != header.record_count {
            return Err(BatchError::RecordCount {
                declared: header.record_count,
                found: index,
            });
        }
        Ok(Self { header, bytes })
    }

    /// The batch header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// Offset of the first record.
    pub fn base_offset(&self) -> u64 {
        self.header.base_offset
    }

    /// Offset one past the last record.
    pub fn next_offset(&self) -> u64 {
        self.header.next_offset()
    }

    /// Number of records.
    pub fn record_count(&self) -> u32 {
        self.header.record_count
    }

    /// Length of the batch in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: a valid batch holds at least one record.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The whole encoded batch.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The records, in offset order, without copying.
    pub fn records(&self) -> Records<'a> {
        Records {
            bytes: self.bytes,
            at: BATCH_HEADER_LEN,
            offset: self.header.base_offset,
        }
    }
}

/// Iterates the records of a validated batch.
#[derive(Clone, Debug)]
pub struct Records<'a> {
    bytes: &'a [u8],
    at: usize,
    offset: u64,
}

impl<'a> Iterator for Records<'a> {
    type Item = RecordView<'a>;

    fn next(&mut self) -> Option<RecordView<'a>> {
        let rest = self
            .bytes
            .get(self.at..)
            .filter(|r| r.len() >= RECORD_HEADER_LEN)?;
        let len = u32_at(rest, 0) as usize;
        let bytes = rest.get(..len)?;
        let view = RecordView {
            bytes,
            offset: self.offset,
        };
        self.at += len;
        self.offset += 1;
        Some(view)
    }
}

/// Writes the broker's fields into an encoded batch in place: the base offset and append time.
///
/// The batch checksum does not cover these fields, so nothing is recomputed.
pub fn stamp(batch: &mut [u8], base_offset: u64, append_time_ms: i64) -> Result<(), BatchError> {
    if batch.len() < BATCH_HEADER_LEN {
        return Err(BatchError::Incomplete {
            needed: BATCH_HEADER_LEN,
            available: batch.len(),
        });
    }
    batch[8..16].copy_from_slice(&base_offset.to_le_bytes());
    batch[16..24].copy_from_slice(&append_time_ms.to_le_bytes());
    Ok(())
}

/// Why a batch could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// A key longer than `u16::MAX` bytes.
    #[error("key of {0} bytes exceeds the 65535-byte limit")]
    KeyTooLarge(usize),
    /// A property value over [`PROPERTY_LEN_MAX`] bytes, or a user key over 255 bytes.
    #[error("property with tag {tag} of {len} bytes is too large")]
    PropertyTooLarge {
        /// The property's tag.
        tag: u8,
        /// Its encoded length.
        len: usize,
    },
    /// The batch would exceed its size limit.
    #[error("batch would grow to {len} bytes, over the limit of {max}")]
    BatchTooLarge {
        /// Size the batch would have.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// One record to add to a batch.
#[derive(Clone, Copy, Debug, Default)]
pub struct Record<'a> {
    /// Create time, Unix milliseconds.
    pub timestamp_ms: i64,
    /// What the message is for.
    pub message_type: MessageType,
    /// Routing key; may be empty.
    pub key: &'a [u8],
    /// Properties, written in this order.
    pub properties: &'a [Property<'a>],
    /// Payload.
    pub value: &'a [u8],
}

/// Builds a batch into one contiguous buffer, ready to send as it is.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    record_count: u32,
    first_timestamp_ms: i64,
    max_timestamp_ms: i64,
    batch_len_max: usize,
}

impl BatchBuilder {
    /// A builder whose batches may not exceed `batch_len_max` bytes.
    pub fn new(batch_len_max: usize) -> Self {
        Self::with_capacity(batch_len_max, 4096)
    }

    /// Like [`Self::new`], reserving `capacity` bytes up front.
    pub fn with_capacity(batch_len_max: usize, capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity.max(BATCH_HEADER_LEN));
        buf.resize(BATCH_HEADER_LEN, 0);
        Self {
            buf,
            record_count: 0,
            first_timestamp_ms: 0,
            max_timestamp_ms: i64::MIN,
            batch_len_max: batch_len_max.min(BATCH_LEN_MAX),
        }
    }

    /// Records added so far.
    pub fn record_count(&self) -> u32 {
        self.record_count
    }

    /// Bytes the batch would have if finished now.
    pub fn len_bytes(&self) -> usize {
        self.buf.len()
    }

    /// True when no record was added.
    pub fn is_empty(&self) -> bool {
        self.record_count == 0
    }

    /// Appends a record; on error the builder is unchanged.
    pub fn push(&mut self, record: &Record<'_>) -> Result<(), BuildError> {
        let key_len = u16::try_from(record.key.len())
            .map_err(|_| BuildError::KeyTooLarge(record.key.len()))?;
        let properties_len: usize = record.properties.iter().map(Property::encoded_len).sum();
        let record_len = RECORD_HEADER_LEN + record.key.len() + properties_len + record.value.len();
        let new_len = self.buf.len() + record_len;
        if new_len > self.batch_len_max {
            return Err(BuildError::BatchTooLarge {
                len: new_len,
                max: self.batch_len_max,
            });
        }
        let start = self.buf.len();
        let mut header = [0u8; RECORD_HEADER_LEN];
        header[0..4].copy_from_slice(&(record_len as u32).to_le_bytes());
        header[8..12].copy_from_slice(&self.record_count.to_le_bytes());
        header[12..14].copy_from_slice(&(record.message_type as u16).to_le_bytes());
        header[14..16].copy_from_slice(&key_len.to_le_bytes());
        header[16..24].copy_from_slice(&record.timestamp_ms.to_le_bytes());
        header[24..28].copy_from_slice(&(properties_len as u32).to_le_bytes());
        header[28..32].copy_from_slice(&(record.value.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(&header);
        self.buf.extend_from_slice(record.key);
        for property in record.properties {
            if let Err(e) = property.encode(&mut self.buf) {
                self.buf.truncate(start);
                return Err(e);
            }
        }
        self.buf.extend_from_slice(record.value);
        let crc = crc32c::crc32c(&self.buf[start + 8..]);
        self.buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        if self.record_count == 0 {
            self.first_timestamp_ms = record.timestamp_ms;
        }
        self.max_timestamp_ms = self.max_timestamp_ms.max(record.timestamp_ms);
        self.record_count += 1;
        Ok(())
    }

    /// Finishes the batch: writes the header and checksum. Base offset and append time are
    /// zero until the broker stamps them. Returns `None` when no record was added.
    pub fn finish(mut self) -> Option<Vec<u8>> {
        if self.record_count == 0 {
            return None;
        }
        let header = BatchHeader {
            batch_len: self.buf.len() as u32,
            crc32c: 0,
            base_offset: 0,
            append_time_ms: 0,
            record_count: self.record_count,
            version: BATCH_VERSION,
            attributes: 0,
            reserved: 0,
            first_timestamp_ms: self.first_timestamp_ms,
            max_timestamp_ms: self.max_timestamp_ms,
        };
        header.encode(&mut self.buf);
        let crc = crc32c::crc32c(&self.buf[CRC_START..]);
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        Some(self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let area: Area = "A10".parse().unwrap();
        let props = [
            Property::ReplyTo("10.0.0.7@42#A10"),
            Property::CorrelationId(b"c-1"),
            Property::DeadlineMs(1_700_000_000_123),
            Property::Area(area),
            Property::Tag("gray"),
            Property::User {
                key: "k",
                value: b"v",
            },
        ];
        let mut builder = BatchBuilder::new(BATCH_LEN_MAX);
        let request = Record {
            timestamp_ms: 5,
            message_type: MessageType::Request,
            key: b"key",
            properties: &props,
            value: b"hello",
        };
        builder.push(&request).unwrap();
        builder
            .push(&Record {
                timestamp_ms: 7,
                value: b"world",
                ..Record::default()
            })
            .unwrap();
        builder.finish().unwrap()
    }

    #[test]
    fn built_batches_parse_and_stamping_keeps_them_valid() {
        let mut bytes = sample();
        stamp(&mut bytes, 1000, 99).unwrap();
        let batch = BatchView::parse(&bytes, BATCH_LEN_MAX).unwrap();
        assert_eq!(batch.base_offset(), 1000);
        assert_eq!(batch.next_offset(), 1002);
        assert_eq!(batch.header().append_time_ms, 99);
        assert_eq!(batch.header().first_timestamp_ms, 5);
        assert_eq!(batch.header().max_timestamp_ms, 7);
        let records: Vec<_> = batch.records().collect();
        assert_eq!(records.len(), 2);
        let r = records[0];
        assert_eq!(
            (r.offset(), r.key(), r.value()),
            (1000, &b"key"[..], &b"hello"[..])
        );
        assert_eq!(r.message_type(), MessageType::Request);
        assert_eq!(r.reply_to(), Some("10.0.0.7@42#A10"));
        assert_eq!(r.correlation_id(), Some(&b"c-1"[..]));
        assert_eq!(r.deadline_ms(), Some(1_700_000_000_123));
        assert_eq!(r.area().map(|a| a.to_string()), Some("A10".into()));
        assert_eq!(r.tag(), Some("gray"));
        assert!(r.properties().any(|p| p
            == Ok(Property::User {
                key: "k",
                value: b"v"
            })));
        assert_eq!(
            (records[1].offset(), records[1].value()),
            (1001, &b"world"[..])
        );
        assert_eq!(records[1].message_type(), MessageType::Event);
    }

    #[test]
    fn every_truncation_is_incomplete_and_every_bit_flip_is_caught() {
        let bytes = sample();
        for cut in 0..bytes.len() {
            assert!(
                matches!(
                    BatchView::parse(&bytes[..cut], BATCH_LEN_MAX),
                    Err(BatchError::Incomplete { .. })
                ),
                "cut at {cut}"
            );
        }
        for bit in (CRC_START * 8)..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                BatchView::parse(&flipped, BATCH_LEN_MAX).is_err(),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn oversized_batches_are_refused_before_reading_the_body() {
        let bytes = sample();
        let err = BatchView::parse(&bytes[..BATCH_HEADER_LEN], 64).unwrap_err();
        assert!(matches!(err, BatchError::TooLarge { max: 64, .. }), "{err}");
        let mut builder = BatchBuilder::new(100);
        let big = [0u8; 100];
        let err = builder
            .push(&Record {
                value: &big,
                ..Record::default()
            })
            .unwrap_err();
        assert!(matches!(err, BuildError::BatchTooLarge { .. }));
        assert!(builder.finish().is_none());
    }
}
