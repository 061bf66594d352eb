//! The sparse offset index of one segment.
//!
//! One entry per `index_interval_bytes` of log: the batch's offset relative to the segment's
//! base offset (`u32`) and its byte position in the `.log` file (`u32`), both little-endian.
//! Position 0 (the segment's first batch) is implied and never stored, so an all-zero entry
//! marks the end of the entries (the file's zero padding).

/// Size of one encoded entry.
pub const INDEX_ENTRY_LEN: usize = 8;

/// One index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Offset of the batch minus the segment's base offset.
    pub relative_offset: u32,
    /// Byte position of the batch in the segment's log file.
    pub position: u32,
}

impl IndexEntry {
    /// Appends the encoded entry to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.relative_offset.to_le_bytes());
        out.extend_from_slice(&self.position.to_le_bytes());
    }

    /// Decodes an entry from exactly [`INDEX_ENTRY_LEN`] bytes.
    pub fn decode(bytes: [u8; INDEX_ENTRY_LEN]) -> Self {
        let [a, b, c, d, e, f, g, h] = bytes;
        Self {
            relative_offset: u32::from_le_bytes([a, b, c, d]),
            position: u32::from_le_bytes([e, f, g, h]),
        }
    }
}

/// What [`decode_entries`] found in an index file.
#[derive(Debug, Default)]
pub struct DecodedIndex {
    /// The longest prefix of entries that are well formed.
    pub entries: Vec<IndexEntry>,
    /// Non-zero entries after that prefix: garbage, or entries of a torn write.
    pub dropped: usize,
}

/// Decodes the longest well-formed prefix of an index file: entries strictly increasing in
/// both fields, positions inside a log of `log_len` bytes. Stops at the zero padding.
pub fn decode_entries(bytes: &[u8], log_len: u64) -> DecodedIndex {
    let mut decoded = DecodedIndex::default();
    let mut chunks = bytes.chunks_exact(INDEX_ENTRY_LEN);
    for chunk in chunks.by_ref() {
        let mut raw = [0u8; INDEX_ENTRY_LEN];
        raw.copy_from_slice(chunk);
        let entry = IndexEntry::decode(raw);
        let increasing = decoded.entries.last().is_none_or(|last| {
            entry.relative_offset > last.relative_offset && entry.position > last.position
        });
        if entry.position == 0 || !increasing || u64::from(entry.position) >= log_len {
            if raw != [0; INDEX_ENTRY_LEN] {
                decoded.dropped += 1;
            }
            break;
        }
        decoded.entries.push(entry);
    }
    decoded.dropped += chunks.filter(|c| c.iter().any(|&b| b != 0)).count();
    decoded
}

/// The in-memory index of one segment, complete for every batch appended so far.
#[derive(Debug, Clone)]
pub struct SparseIndex {
    entries: Vec<IndexEntry>,
    interval_bytes: u32,
    last_indexed_position: u64,
}

impl SparseIndex {
    /// An index with the given entries (already checked) adding one every `interval_bytes`.
    pub fn new(entries: Vec<IndexEntry>, interval_bytes: u32) -> Self {
        let last_indexed_position = entries.last().map_or(0, |e| u64::from(e.position));
        Self {
            entries,
            interval_bytes,
            last_indexed_position,
        }
    }

    /// Called for every batch in log order; returns the entry to store when one is due.
    pub fn on_batch(&mut self, relative_offset: u32, position: u64) -> Option<IndexEntry> {
        if position < self.last_indexed_position + u64::from(self.interval_bytes) {
            return None;
        }
        let entry = IndexEntry {
            relative_offset,
            position: u32::try_from(position).ok()?,
        };
        self.entries.push(entry);
        self.last_indexed_position = position;
        Some(entry)
    }

    /// Position of the last indexed batch at or below `relative_offset` (0 when none), and
    /// that batch's relative offset: where a scan for `relative_offset` starts.
    pub fn lookup(&self, relative_offset: u64) -> (u64, u64) {
        let at = self
            .entries
            .partition_point(|e| u64::from(e.relative_offset) <= relative_offset);
        match at.checked_sub(1).and_then(|i| self.entries.get(i)) {
            Some(e) => (u64::from(e.relative_offset), u64::from(e.position)),
            None => (0, 0),
        }
    }

    /// All entries, in order.
    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    /// The encoded index file content.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * INDEX_ENTRY_LEN);
        for entry in &self.entries {
            entry.encode(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(relative_offset: u32, position: u32) -> IndexEntry {
        IndexEntry {
            relative_offset,
            position,
        }
    }

    #[test]
    fn adds_entries_every_interval_and_looks_up() {
        let mut index = SparseIndex::new(Vec::new(), 100);
        assert_eq!(index.on_batch(0, 0), None);
        assert_eq!(index.on_batch(3, 60), None);
        assert_eq!(index.on_batch(5, 120), Some(entry(5, 120)));
        assert_eq!(index.on_batch(9, 200), None);
        assert_eq!(index.on_batch(12, 230), Some(entry(12, 230)));
        assert_eq!(index.lookup(0), (0, 0));
        assert_eq!(index.lookup(4), (0, 0));
        assert_eq!(index.lookup(5), (5, 120));
        assert_eq!(index.lookup(11), (5, 120));
        assert_eq!(index.lookup(1000), (12, 230));
    }

    #[test]
    fn decodes_prefix_and_counts_garbage() {
        let mut bytes = Vec::new();
        entry(5, 120).encode(&mut bytes);
        entry(12, 230).encode(&mut bytes);
        entry(3, 300).encode(&mut bytes); // not increasing
        entry(20, 400).encode(&mut bytes);
        bytes.extend_from_slice(&[0; 16]);
        let decoded = decode_entries(&bytes, 1000);
        assert_eq!(decoded.entries, vec![entry(5, 120), entry(12, 230)]);
        assert_eq!(decoded.dropped, 2);

        let decoded = decode_entries(&bytes[..16], 200);
        assert_eq!(decoded.entries, vec![entry(5, 120)]);
        assert_eq!(decoded.dropped, 1);

        let mut padded = bytes[..16].to_vec();
        padded.resize(4096, 0);
        let decoded = decode_entries(&padded, 1000);
        assert_eq!(decoded.entries.len(), 2);
        assert_eq!(decoded.dropped, 0);
    }
}
