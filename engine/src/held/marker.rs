//! Outcome markers: the records of a held log that say what became of a held record.
//!
//! A marker is an ordinary record of the held log carrying `HELD_ORIGIN` (the held offset it
//! settles) and this value, little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | version, [`MARKER_VERSION`] |
//! | 1 | 1 | [`Outcome`] |
//! | 2 | 8 | queue offset: of the released copy (`Fired`, `Committed`); for `Base`, where a scan for released copies may start; otherwise 0 |
//!
//! Held records carry `DELIVER_AT_MS` or `TXN_GROUP`, never `HELD_ORIGIN` (the broker
//! refuses produces that carry it), so a record of the held log is a marker exactly when it
//! carries `HELD_ORIGIN`.

use protocol::record::{BatchBuilder, MessageType, Property, Record, RecordView};

/// The marker format this build writes and reads.
pub(crate) const MARKER_VERSION: u8 = 1;
/// Bytes of a marker's value.
pub(crate) const MARKER_LEN: usize = 10;
/// The origin a [`Outcome::Base`] marker names: no held record.
pub(crate) const NO_ORIGIN: u64 = u64::MAX;

/// What became of a held record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Outcome {
    /// Not an outcome: the queue offset from which released copies may lie beyond the last
    /// outcome, written when a held log opens (so recovery never scans the queue from its
    /// start).
    Base = 0,
    /// A delayed message was released into the queue.
    Fired = 1,
    /// A delayed message was cancelled before its time.
    Cancelled = 2,
    /// A half message was committed and released into the queue.
    Committed = 3,
    /// A half message was rolled back.
    RolledBack = 4,
}

impl Outcome {
    fn from_u8(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Base,
            1 => Self::Fired,
            2 => Self::Cancelled,
            3 => Self::Committed,
            4 => Self::RolledBack,
            _ => return None,
        })
    }

    /// In words, for errors and logs.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Base => "base",
            Self::Fired => "fired",
            Self::Cancelled => "cancelled",
            Self::Committed => "committed",
            Self::RolledBack => "rolled back",
        }
    }
}

/// One decoded marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Marker {
    /// The held offset settled ([`NO_ORIGIN`] for a base marker).
    pub origin: u64,
    pub outcome: Outcome,
    pub queue_offset: u64,
}

impl Marker {
    /// Appends this marker to `builder` as one record.
    pub fn push_to(&self, builder: &mut BatchBuilder, now_ms: i64) -> Result<(), String> {
        let mut value = [0u8; MARKER_LEN];
        value[0] = MARKER_VERSION;
        value[1] = self.outcome as u8;
        value[2..].copy_from_slice(&self.queue_offset.to_le_bytes());
        builder
            .push(&Record {
                timestamp_ms: now_ms,
                message_type: MessageType::Event,
                key: &[],
                properties: &[Property::HeldOrigin(self.origin)],
                value: &value,
            })
            .map_err(|e| e.to_string())
    }

    /// The marker `record` is, if it is one; `Err` for a marker this build cannot read.
    pub fn of(record: &RecordView<'_>) -> Result<Option<Self>, String> {
        let Some(origin) = record.held_origin() else {
            return Ok(None);
        };
        let value = record.value();
        let bad = || format!("held marker at offset {} is malformed", record.offset());
        if value.len() != MARKER_LEN || value[0] != MARKER_VERSION {
            return Err(bad());
        }
        let outcome = Outcome::from_u8(value[1]).ok_or_else(bad)?;
        let queue_offset = u64::from_le_bytes(value[2..].try_into().map_err(|_| bad())?);
        Ok(Some(Self {
            origin,
            outcome,
            queue_offset,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::record::{BATCH_LEN_MAX, BatchView};

    /// Golden bytes: the marker value as it lies on disk.
    #[test]
    fn markers_round_trip_and_keep_their_bytes() {
        let marker = Marker {
            origin: 7,
            outcome: Outcome::Fired,
            queue_offset: 0x0102,
        };
        let mut builder = BatchBuilder::new(BATCH_LEN_MAX);
        marker.push_to(&mut builder, 5).unwrap();
        let bytes = builder.finish().unwrap();
        let view = BatchView::parse(&bytes, BATCH_LEN_MAX).unwrap();
        let record = view.records().next().unwrap();
        assert_eq!(record.value(), [1, 1, 2, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            record.properties_bytes(),
            [10, 8, 0, 7, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(Marker::of(&record).unwrap(), Some(marker));
    }
}
