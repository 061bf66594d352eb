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
//! | 4  | 4 | `crc32c`: see below | producer |
//! | 8  | 8 | `base_offset`: offset of the first record | broker (stamped) |
//! | 16 | 8 | `append_time_ms`: broker clock when appended, Unix ms | broker (stamped) |
//! | 24 | 4 | `record_count` (≥ 1) | producer |
//! | 28 | 1 | `version` ([`BATCH_VERSION`]) | producer |
//! | 29 | 1 | `attributes` (reserved, zero) | producer |
//! | 30 | 2 | reserved, zero | producer |
//! | 32 | 8 | `first_timestamp_ms`: create time of the first record | producer |
//! | 40 | 8 | `max_timestamp_ms`: latest create time in the batch | producer |
//!
//! Version 3 (issue 15, the idempotent producer) adds [`PRODUCER_FIELDS_LEN`] bytes, so its
//! header is [`BATCH_HEADER_LEN_V3`] bytes and its records start there:
//!
//! | offset | size | field | set by |
//! |---|---|---|---|
//! | 48 | 8 | `producer_id`: broker-assigned id, 0 for a batch without one | producer |
//! | 56 | 4 | `producer_epoch`: the producer's numbering epoch on this queue | producer |
//! | 60 | 4 | `sequence`: the batch's number in that epoch, 0, 1, 2, ... | producer |
//!
//! The producer fields live in the stored batch so that a broker rebuilds its duplicate window
//! from the log after a restart or a failover (`docs/ARCHITECTURE.md` §13.1). The version-3
//! checksum sums them after the record heads and before the stamped fields: header bytes
//! `[CRC_START, 48)`, the record heads, the producer fields `[48, 64)`, then the stamp. A
//! client builds a batch before it knows its queue, and so its sequence; it keeps the sum of
//! what precedes the producer fields ([`SealedBatch::records_crc`]) and numbers the batch for
//! its queue with [`set_producer`] without reading the records again.
//!
//! The batch checksum (version 2) is the CRC32C of header bytes `[CRC_START, BATCH_HEADER_LEN)`,
//! then the first 8 bytes (`record_len` and `crc32c`) of every record in order, then the
//! stamped fields, header bytes `[8, CRC_START)`. Each record's own checksum covers the rest of
//! it, so together they cover every byte after the checksum field, and a writer or reader
//! passes over the payload once, not once per checksum. The stamped fields come *last* so that
//! stamping never re-reads the batch: a producer sums them as zeros; the broker, which verifies
//! the producer's checksum anyway, keeps the sum of everything before them
//! ([`BatchView::body_crc`]) and appends the 16 stamped bytes to it ([`stamp_parsed`]). So a
//! stored offset or append time that changes on disk fails the checksum like any other byte.
//!
//! Version 1 (before issue 11) left the stamped fields out of the checksum. It is still read,
//! so logs written by older brokers stay readable; its stamped fields are guarded only by the
//! log's offset continuity. Nothing writes it any more.
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

mod builder;
mod held;
mod property;
mod retry;
mod view;

pub use builder::{
    BatchBuilder, BuildError, Record, SealedBatch, set_producer, stamp, stamp_parsed,
};
pub use held::{HeldKind, held_kind};
pub use property::{PROPERTY_LEN_MAX, Properties, Property, PropertyError, tag};
pub use retry::{RETRY_MARK_VERSION, RETRY_REASON_LEN_MAX, RetryMark, truncate_reason};
pub use view::{BatchView, RecordView, Records};

/// Size of the batch header of versions 1 and 2, and of the part every version starts with.
pub const BATCH_HEADER_LEN: usize = 48;
/// Size of the version-3 header: the common part and the producer fields.
pub const BATCH_HEADER_LEN_V3: usize = BATCH_HEADER_LEN + PRODUCER_FIELDS_LEN;
/// Bytes of the version-3 producer fields: `producer_id`, `producer_epoch`, `sequence`.
pub const PRODUCER_FIELDS_LEN: usize = 16;
/// Where the producer fields sit in a version-3 header.
pub const PRODUCER_FIELDS: std::ops::Range<usize> = BATCH_HEADER_LEN..BATCH_HEADER_LEN_V3;
/// Size of a record header in bytes.
pub const RECORD_HEADER_LEN: usize = 32;
/// First byte of the producer's part of the header; the checksum sums `[CRC_START, ..)` first and
/// the stamped fields `STAMP` last.
pub const CRC_START: usize = 24;
/// The broker's stamped fields, `base_offset` and `append_time_ms`: summed last (version 2).
pub const STAMP: std::ops::Range<usize> = 8..CRC_START;
/// Bytes of each record head the batch checksum covers: `record_len` and `crc32c`.
const RECORD_HEAD_CHECKED: usize = 8;

/// Folds one record's head into a batch checksum being computed (see the module docs).
fn fold_record_head(crc: u32, record: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, &record[..RECORD_HEAD_CHECKED])
}
/// The batch format version this crate writes; it reads this one, [`BATCH_VERSION_V2`] and
/// [`BATCH_VERSION_V1`].
pub const BATCH_VERSION: u8 = 3;
/// The format before the producer fields: a 48-byte header; read and stamped, not built.
pub const BATCH_VERSION_V2: u8 = 2;
/// The first format, whose checksum leaves the stamped fields out; read, never written.
pub const BATCH_VERSION_V1: u8 = 1;

/// Where the records of a batch of format `version` start: after its header.
pub const fn records_start(version: u8) -> usize {
    if version >= BATCH_VERSION {
        BATCH_HEADER_LEN_V3
    } else {
        BATCH_HEADER_LEN
    }
}

/// The idempotent producer's fields of a version-3 batch (`docs/ARCHITECTURE.md` §13.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProducerFields {
    /// The broker-assigned producer id; 0 marks a batch without idempotence.
    pub producer_id: u64,
    /// The producer's numbering epoch on the batch's queue: a new epoch restarts the sequence.
    pub epoch: u32,
    /// The batch's number within the epoch.
    pub sequence: u32,
}

impl ProducerFields {
    /// Reads the fields of a batch; `None` for an older version, a short buffer, or a batch
    /// without a producer id.
    pub fn of(batch: &[u8]) -> Option<Self> {
        if batch.len() < BATCH_HEADER_LEN_V3 || batch[28] < BATCH_VERSION {
            return None;
        }
        let fields = Self {
            producer_id: u64_at(batch, 48),
            epoch: u32_at(batch, 56),
            sequence: u32_at(batch, 60),
        };
        (fields.producer_id != 0).then_some(fields)
    }

    /// The fields as they are stored, little-endian.
    pub fn encode(&self) -> [u8; PRODUCER_FIELDS_LEN] {
        let mut out = [0u8; PRODUCER_FIELDS_LEN];
        out[0..8].copy_from_slice(&self.producer_id.to_le_bytes());
        out[8..12].copy_from_slice(&self.epoch.to_le_bytes());
        out[12..16].copy_from_slice(&self.sequence.to_le_bytes());
        out
    }
}

/// Folds the stamped fields into the checksum of everything before them (version 2).
pub(crate) fn fold_stamp(body_crc: u32, batch: &[u8]) -> u32 {
    crc32c::crc32c_append(body_crc, &batch[STAMP])
}
/// Largest batch any component accepts unless configured lower (the frame limit bounds it too).
pub const BATCH_LEN_MAX: usize = 64 << 20;

/// The fixed header of a record batch, as laid out on the wire and on disk.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchHeader {
    /// Whole batch in bytes, header included.
    pub batch_len: u32,
    /// Batch checksum: see the module docs.
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

pub(crate) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}
pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}
pub(crate) fn i64_at(b: &[u8], at: usize) -> i64 {
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
        if !(BATCH_VERSION_V1..=BATCH_VERSION).contains(&self.version) {
            return Err(BatchError::Version(self.version));
        }
        let records_at = records_start(self.version);
        if len < records_at + RECORD_HEADER_LEN {
            return Err(BatchError::LengthTooSmall {
                len: self.batch_len,
            });
        }
        if self.attributes != 0 || self.reserved != 0 {
            return Err(BatchError::Reserved);
        }
        if self.record_count == 0 {
            return Err(BatchError::Empty);
        }
        // Each record needs at least its header: a count the length cannot hold is a lie.
        if self.record_count as usize > (len - records_at) / RECORD_HEADER_LEN {
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

    /// Where the records start: after the header of this version.
    pub fn records_start(&self) -> usize {
        records_start(self.version)
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
    #[error(
        "unsupported batch version {0} (this build reads versions {BATCH_VERSION_V1} to {BATCH_VERSION})"
    )]
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
    /// The type of code `code` (`MessageType as u8`), as control payloads carry it.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::from_attributes(u16::from(code))
    }

    /// `event`, `request` or `reply`, for people and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Event => "event",
            Self::Request => "request",
            Self::Reply => "reply",
        }
    }

    pub(crate) fn from_attributes(attributes: u16) -> Option<Self> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Area;

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
    fn every_byte_after_the_checksum_is_checked_once() {
        let mut good = sample();
        stamp(&mut good, 1000, 99).unwrap();
        // The stored checksum is the header part, each record's head, the producer fields,
        // then the stamped fields: nothing more.
        let mut expected = crc32c::crc32c(&good[CRC_START..BATCH_HEADER_LEN]);
        let first = BATCH_HEADER_LEN_V3;
        let first_len = u32_at(&good, first) as usize;
        expected = crc32c::crc32c_append(expected, &good[first..first + 8]);
        expected = crc32c::crc32c_append(expected, &good[first + first_len..first + first_len + 8]);
        expected = crc32c::crc32c_append(expected, &good[PRODUCER_FIELDS]);
        let body_crc = expected;
        expected = crc32c::crc32c_append(expected, &good[STAMP]);
        let view = BatchView::parse(&good, BATCH_LEN_MAX).unwrap();
        assert_eq!(view.header().crc32c, expected);
        assert_eq!(view.body_crc(), body_crc);
        // The stamped fields: a relabelled offset or append time is caught.
        for at in [8, 15, 16, 23] {
            let mut bytes = good.clone();
            bytes[at] ^= 1;
            assert!(
                matches!(
                    BatchView::parse(&bytes, BATCH_LEN_MAX),
                    Err(BatchError::Checksum { .. })
                ),
                "stamped byte {at}"
            );
        }
        // Header fields only the batch checksum covers: first_timestamp_ms, the producer's.
        for at in [33, 48, 56, 63] {
            let mut bytes = good.clone();
            bytes[at] ^= 1;
            assert!(
                matches!(
                    BatchView::parse(&bytes, BATCH_LEN_MAX),
                    Err(BatchError::Checksum { .. })
                ),
                "header byte {at}"
            );
        }
        // A payload byte only its record's checksum covers.
        let mut bytes = good.clone();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(
            BatchView::parse(&bytes, BATCH_LEN_MAX),
            Err(BatchError::Record {
                index: 1,
                fault: RecordFault::Checksum { .. },
                ..
            })
        ));
        // A record's checksum field: its record disagrees before the batch is summed.
        let mut bytes = good;
        bytes[BATCH_HEADER_LEN_V3 + 4] ^= 1;
        assert!(BatchView::parse(&bytes, BATCH_LEN_MAX).is_err());
    }

    /// `sample()` in an older format: the 48-byte header, version `version`, checksum of
    /// `[CRC_START, 48)` and the record heads (the stamped fields added for version 2).
    fn sample_in(version: u8) -> Vec<u8> {
        let v3 = sample();
        let mut old = v3[..BATCH_HEADER_LEN].to_vec();
        old.extend_from_slice(&v3[BATCH_HEADER_LEN_V3..]);
        let len = old.len() as u32;
        old[0..4].copy_from_slice(&len.to_le_bytes());
        old[28] = version;
        let mut crc = crc32c::crc32c(&old[CRC_START..BATCH_HEADER_LEN]);
        let mut at = BATCH_HEADER_LEN;
        while at < old.len() {
            crc = fold_record_head(crc, &old[at..]);
            at += u32_at(&old, at) as usize;
        }
        if version == BATCH_VERSION_V2 {
            crc = fold_stamp(crc, &old);
        }
        old[4..8].copy_from_slice(&crc.to_le_bytes());
        old
    }

    #[test]
    fn version_2_batches_are_still_read_and_stamped() {
        let mut v2 = sample_in(BATCH_VERSION_V2);
        stamp(&mut v2, 40, 9).unwrap();
        let view = BatchView::parse(&v2, BATCH_LEN_MAX).unwrap();
        assert_eq!((view.base_offset(), view.next_offset()), (40, 42));
        assert_eq!(view.producer(), None);
        let values: Vec<_> = view.records().map(|r| r.value()).collect();
        assert_eq!(values, [&b"hello"[..], &b"world"[..]]);
        // A v2 batch has no producer fields to set.
        let crc = view.records_crc();
        let fields = ProducerFields {
            producer_id: 1,
            ..ProducerFields::default()
        };
        assert_eq!(
            set_producer(&mut v2, crc, fields),
            Err(BatchError::Version(BATCH_VERSION_V2))
        );
    }

    #[test]
    fn setting_the_producer_fields_keeps_the_batch_valid_without_reading_it() {
        let mut builder = BatchBuilder::new(BATCH_LEN_MAX);
        builder
            .push(&Record {
                value: b"x",
                ..Record::default()
            })
            .unwrap();
        let sealed = builder.seal().unwrap();
        let unset = BatchView::parse(&sealed.bytes, BATCH_LEN_MAX).unwrap();
        assert_eq!(unset.producer(), None);
        assert_eq!(unset.records_crc(), sealed.records_crc);
        let mut bytes = sealed.bytes.clone();
        for (epoch, sequence) in [(0, 0), (0, 1), (7, u32::MAX)] {
            let fields = ProducerFields {
                producer_id: u64::MAX,
                epoch,
                sequence,
            };
            set_producer(&mut bytes, sealed.records_crc, fields).unwrap();
            let view = BatchView::parse(&bytes, BATCH_LEN_MAX).unwrap();
            assert_eq!(view.producer(), Some(fields));
        }
        // Clearing them (a broker moving a batch) gives back the batch as built.
        set_producer(&mut bytes, sealed.records_crc, ProducerFields::default()).unwrap();
        assert_eq!(bytes, sealed.bytes);
    }

    #[test]
    fn version_1_batches_are_still_read_with_their_stamp_unchecked() {
        // A version-1 batch as older brokers stored it: checksum without the stamped fields.
        let mut v1 = sample_in(BATCH_VERSION_V1);
        v1[8..16].copy_from_slice(&7u64.to_le_bytes());
        let view = BatchView::parse(&v1, BATCH_LEN_MAX).unwrap();
        assert_eq!(view.base_offset(), 7);
        // The broker stamps versions 2 and 3 only: not what it would store unchecked.
        assert_eq!(
            stamp(&mut v1, 9, 9),
            Err(BatchError::Version(BATCH_VERSION_V1))
        );
    }

    #[test]
    fn stamping_a_parsed_batch_completes_its_checksum() {
        let mut bytes = sample();
        let body_crc = BatchView::parse(&bytes, BATCH_LEN_MAX).unwrap().body_crc();
        stamp_parsed(&mut bytes, body_crc, u64::MAX - 2, -5).unwrap();
        let view = BatchView::parse(&bytes, BATCH_LEN_MAX).unwrap();
        assert_eq!(view.base_offset(), u64::MAX - 2);
        assert_eq!(view.header().append_time_ms, -5);
        assert_eq!(view.body_crc(), body_crc);
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
