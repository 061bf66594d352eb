//! Zero-copy views of validated batches and records.

use super::*;
use crate::names::Area;

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
        Properties::new(self.properties_bytes())
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

    /// The W3C `traceparent`, when the producer gave one.
    pub fn trace_parent(&self) -> Option<crate::trace::TraceParent> {
        self.find(|p| {
            if let Property::TraceParent(v) = p {
                Some(v)
            } else {
                None
            }
        })
    }

    /// The W3C `tracestate` beside the `traceparent`, when there is one.
    pub fn trace_state(&self) -> Option<&'a str> {
        self.find(|p| {
            if let Property::TraceState(v) = p {
                Some(v)
            } else {
                None
            }
        })
    }

    /// When a delayed message is due, Unix milliseconds.
    pub fn deliver_at_ms(&self) -> Option<u64> {
        self.find(|p| match p {
            Property::DeliverAtMs(v) => Some(v),
            _ => None,
        })
    }

    /// The held-log offset this record was released from (or, on an outcome marker, settles).
    pub fn held_origin(&self) -> Option<u64> {
        self.find(|p| match p {
            Property::HeldOrigin(v) => Some(v),
            _ => None,
        })
    }

    /// The producer group of a transactional half message.
    pub fn txn_group(&self) -> Option<&'a str> {
        self.find(|p| match p {
            Property::TxnGroup(v) => Some(v),
            _ => None,
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
    /// The checksum of everything before the stamped fields (see the module docs).
    body_crc: u32,
    /// The checksum of everything before the producer fields (version 3).
    records_crc: u32,
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
        let mut computed = crc32c::crc32c(&bytes[CRC_START..BATCH_HEADER_LEN]);
        let records_at = header.records_start();
        let mut at = records_at;
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
            computed = super::fold_record_head(computed, &bytes[at..]);
            at += record_len;
            index += 1;
        }
        let records_crc = computed;
        if records_at > BATCH_HEADER_LEN {
            computed = crc32c::crc32c_append(computed, &bytes[PRODUCER_FIELDS]);
        }
        let body_crc = computed;
        if header.version != BATCH_VERSION_V1 {
            computed = fold_stamp(body_crc, bytes);
        }
        if computed != header.crc32c {
            return Err(BatchError::Checksum {
                stored: header.crc32c,
                computed,
            });
        }
        if index != header.record_count {
            return Err(BatchError::RecordCount {
                declared: header.record_count,
                found: index,
            });
        }
        Ok(Self {
            header,
            bytes,
            body_crc,
            records_crc,
        })
    }

    /// The checksum of what precedes the producer fields, which [`set_producer`] continues.
    pub fn records_crc(&self) -> u32 {
        self.records_crc
    }

    /// The idempotent producer's fields; `None` for an older version or a batch without a
    /// producer id.
    pub fn producer(&self) -> Option<ProducerFields> {
        ProducerFields::of(self.bytes)
    }

    /// The checksum of the batch without its stamped fields, which [`stamp_parsed`] completes
    /// with new ones; computed by [`Self::parse`], so stamping never re-reads the batch.
    pub fn body_crc(&self) -> u32 {
        self.body_crc
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
            at: self.header.records_start(),
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
