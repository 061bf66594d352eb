//! Building batches, and the broker's in-place stamp.

use super::*;

/// Writes the broker's fields into a batch in place, the base offset and append time, and
/// completes its checksum with them, given the checksum of the rest from [`BatchView::body_crc`]
/// of the same bytes: no pass over the records. Stamps versions 2 and 3, whose checksums
/// cover the stamp.
pub fn stamp_parsed(
    batch: &mut [u8],
    body_crc: u32,
    base_offset: u64,
    append_time_ms: i64,
) -> Result<(), BatchError> {
    if batch.len() < BATCH_HEADER_LEN {
        return Err(BatchError::Incomplete {
            needed: BATCH_HEADER_LEN,
            available: batch.len(),
        });
    }
    if batch[28] != BATCH_VERSION && batch[28] != BATCH_VERSION_V2 {
        return Err(BatchError::Version(batch[28]));
    }
    batch[8..16].copy_from_slice(&base_offset.to_le_bytes());
    batch[16..24].copy_from_slice(&append_time_ms.to_le_bytes());
    let crc = fold_stamp(body_crc, batch);
    batch[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Like [`stamp_parsed`] for a batch not parsed here: validates it first (one pass over it).
pub fn stamp(batch: &mut [u8], base_offset: u64, append_time_ms: i64) -> Result<(), BatchError> {
    let body_crc = BatchView::parse(batch, BATCH_LEN_MAX)?.body_crc();
    stamp_parsed(batch, body_crc, base_offset, append_time_ms)
}

/// Writes the producer fields of a version-3 batch in place and completes its checksum, given
/// the checksum of what precedes them ([`SealedBatch::records_crc`] or
/// [`BatchView::records_crc`] of the same bytes): a producer numbers a batch for the queue it
/// chose, and a broker clears the fields of a batch it moves, without reading the records.
pub fn set_producer(
    batch: &mut [u8],
    records_crc: u32,
    fields: ProducerFields,
) -> Result<(), BatchError> {
    if batch.len() < BATCH_HEADER_LEN_V3 {
        return Err(BatchError::Incomplete {
            needed: BATCH_HEADER_LEN_V3,
            available: batch.len(),
        });
    }
    if batch[28] != BATCH_VERSION {
        return Err(BatchError::Version(batch[28]));
    }
    batch[PRODUCER_FIELDS].copy_from_slice(&fields.encode());
    let crc = crc32c::crc32c_append(records_crc, &batch[PRODUCER_FIELDS]);
    let crc = fold_stamp(crc, batch);
    batch[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// A finished batch with the checksum [`set_producer`] continues from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedBatch {
    /// The encoded batch, producer fields zero (no producer).
    pub bytes: Vec<u8>,
    /// The checksum of what precedes the producer fields.
    pub records_crc: u32,
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
        let mut buf = Vec::with_capacity(capacity.max(BATCH_HEADER_LEN_V3));
        buf.resize(BATCH_HEADER_LEN_V3, 0);
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
    /// zero until the broker stamps them, the producer fields zero (no producer). Returns
    /// `None` when no record was added.
    pub fn finish(self) -> Option<Vec<u8>> {
        self.seal().map(|sealed| sealed.bytes)
    }

    /// Like [`Self::finish`], keeping the checksum [`set_producer`] needs.
    pub fn seal(mut self) -> Option<SealedBatch> {
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
        let mut crc = crc32c::crc32c(&self.buf[CRC_START..BATCH_HEADER_LEN]);
        let mut at = BATCH_HEADER_LEN_V3;
        while at < self.buf.len() {
            crc = super::fold_record_head(crc, &self.buf[at..]);
            at += u32::from_le_bytes(self.buf[at..at + 4].try_into().expect("4 bytes")) as usize;
        }
        let records_crc = crc;
        // The producer fields, then the stamped fields: zero until set, and summed last.
        let crc = crc32c::crc32c_append(crc, &self.buf[PRODUCER_FIELDS]);
        let crc = fold_stamp(crc, &self.buf);
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        Some(SealedBatch {
            bytes: self.buf,
            records_crc,
        })
    }
}
