//! Which kind of batch a produce carries: plain, delayed or transactional half
//! (ARCHITECTURE §13.3-§13.4).
//!
//! The broker decides where a produced batch goes (its queue, or the queue's held log) before
//! it appends, and the append is where the batch is verified. So this walk reads only the
//! record heads and property tags, without checksums, and never trusts a length: a batch it
//! cannot walk is reported [`HeldKind::Plain`] and the append's full check refuses it. It costs
//! a few loads per record, not a pass over the payload.

use super::{RECORD_HEADER_LEN, records_start, tag, u16_at, u32_at};

/// What the records of a batch ask of the broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeldKind {
    /// No record is delayed or half: appended to the queue as usual.
    Plain,
    /// Every record carries a `DELIVER_AT_MS`: held until due.
    Delayed,
    /// Every record carries a `TXN_GROUP`: held until committed or rolled back.
    Half,
    /// The records disagree (some held, some not, or both kinds): refused, so that no record
    /// is delivered before its time by riding along with plain ones.
    Mixed,
    /// A record carries `HELD_ORIGIN`, which only the broker writes: refused, since recovery
    /// reads it as "already released".
    Origin,
}

/// Walks the record heads of `batch` (see the module docs).
pub fn held_kind(batch: &[u8]) -> HeldKind {
    // Version 3 batches (an idempotent producer's fields) start their records further in.
    let Some(&version) = batch.get(28) else {
        return HeldKind::Plain;
    };
    let mut at = records_start(version);
    let (mut delayed, mut half, mut records) = (0usize, 0usize, 0usize);
    while at + RECORD_HEADER_LEN <= batch.len() {
        let record_len = u32_at(batch, at) as usize;
        let Some(record) = batch.get(at..at.saturating_add(record_len)) else {
            break;
        };
        if record_len < RECORD_HEADER_LEN {
            break;
        }
        let key_len = u16_at(record, 14) as usize;
        let properties_len = u32_at(record, 24) as usize;
        let start = RECORD_HEADER_LEN + key_len;
        let Some(properties) = record.get(start..start.saturating_add(properties_len)) else {
            break;
        };
        let (mut is_delayed, mut is_half) = (false, false);
        let mut p = 0;
        while p + 3 <= properties.len() {
            let len = u16_at(properties, p + 1) as usize;
            match properties[p] {
                tag::DELIVER_AT_MS => is_delayed = true,
                tag::TXN_GROUP => is_half = true,
                tag::HELD_ORIGIN => return HeldKind::Origin,
                _ => {}
            }
            p += 3 + len;
        }
        delayed += usize::from(is_delayed);
        half += usize::from(is_half);
        records += 1;
        at += record_len;
    }
    match (delayed, half) {
        (0, 0) => HeldKind::Plain,
        (d, 0) if d == records => HeldKind::Delayed,
        (0, h) if h == records => HeldKind::Half,
        _ => HeldKind::Mixed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{BATCH_LEN_MAX, BatchBuilder, Property, Record};

    fn batch(properties: &[&[Property<'_>]]) -> Vec<u8> {
        let mut builder = BatchBuilder::new(BATCH_LEN_MAX);
        for props in properties {
            builder
                .push(&Record {
                    key: b"k",
                    properties: props,
                    value: b"v",
                    ..Record::default()
                })
                .unwrap();
        }
        builder.finish().unwrap()
    }

    #[test]
    fn batches_are_told_apart_by_their_records() {
        let at = Property::DeliverAtMs(5);
        let half = Property::TxnGroup("pg");
        let tag = Property::Tag("t");
        assert_eq!(held_kind(&batch(&[&[tag], &[]])), HeldKind::Plain);
        assert_eq!(held_kind(&batch(&[&[tag, at], &[at]])), HeldKind::Delayed);
        assert_eq!(held_kind(&batch(&[&[half]])), HeldKind::Half);
        assert_eq!(held_kind(&batch(&[&[at], &[]])), HeldKind::Mixed);
        assert_eq!(held_kind(&batch(&[&[at], &[half]])), HeldKind::Mixed);
        let origin = Property::HeldOrigin(3);
        assert_eq!(held_kind(&batch(&[&[], &[origin]])), HeldKind::Origin);
    }

    #[test]
    fn garbage_never_panics() {
        let good = batch(&[&[Property::DeliverAtMs(5)]]);
        for cut in 0..good.len() {
            let _ = held_kind(&good[..cut]);
        }
        let first = records_start(good[28]);
        let mut bad = good.clone();
        bad[first..first + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(held_kind(&bad), HeldKind::Plain);
        let mut bad = good;
        bad[first + 24..first + 28].copy_from_slice(&9999u32.to_le_bytes());
        assert_eq!(held_kind(&bad), HeldKind::Plain);
    }
}
