//! One segment: a `.log` file of record batches and its `.idx` sparse index, plus the
//! in-memory state that lets writes go through O_DIRECT.
//!
//! O_DIRECT writes whole aligned blocks, but batches end anywhere. A [`BlockWriter`] keeps the
//! bytes from the start of the file's last partial block to the logical end in memory; each
//! flush rewrites that block with the new bytes, zero-padded past the logical end (recovery
//! stops at the zero length of the padding).

use std::{
    io,
    path::{Path, PathBuf},
    rc::Rc,
};

use crate::log::{error::LogError, index::SparseIndex, storage::Storage};

/// Bytes taken from a [`BlockWriter`] to be written at `position`.
#[derive(Debug)]
pub struct PendingWrite {
    /// Aligned file position of `data[0]`.
    pub position: u64,
    /// Bytes to write; the write is padded with zeros to the alignment.
    pub data: Vec<u8>,
}

impl PendingWrite {
    /// Logical file length once this write is done.
    pub fn end(&self) -> u64 {
        self.position + self.data.len() as u64
    }
}

/// The unwritten tail of one file.
#[derive(Debug, Default)]
pub struct BlockWriter {
    /// File bytes from `block_start` to the logical end.
    buf: Vec<u8>,
    /// Aligned position of `buf[0]`.
    block_start: u64,
    /// Logical length already written to the file (maybe not yet synced).
    written_len: u64,
    /// A recycled buffer, so steady-state flushes do not allocate.
    spare: Vec<u8>,
}

impl BlockWriter {
    /// A writer for a file whose logical length is `written_len`, with `tail` holding the
    /// file's bytes from `block_start` (aligned) to `written_len`.
    pub fn resume(block_start: u64, tail: Vec<u8>) -> Self {
        Self {
            written_len: block_start + tail.len() as u64,
            buf: tail,
            block_start,
            spare: Vec::new(),
        }
    }

    /// A writer for a sealed file of logical length `len` that takes no more bytes.
    pub fn sealed(len: u64) -> Self {
        Self {
            buf: Vec::new(),
            block_start: len,
            written_len: len,
            spare: Vec::new(),
        }
    }

    /// Logical length: written plus buffered bytes.
    pub fn logical_len(&self) -> u64 {
        self.block_start + self.buf.len() as u64
    }

    /// Logical length already written to the file.
    pub fn written_len(&self) -> u64 {
        self.written_len
    }

    /// Buffers bytes at the logical end.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Takes the bytes to write so the file reaches logical length `end` (at most
    /// [`Self::logical_len`]), keeping the last partial block buffered for the next flush.
    /// `None` when the file already reaches `end`. Only one write may be in flight.
    pub fn take_pending(&mut self, end: u64, alignment: u64) -> Option<PendingWrite> {
        let end = end.min(self.logical_len());
        if end <= self.written_len {
            return None;
        }
        let new_block_start = align_down(end, alignment).max(self.block_start);
        let keep_from = (new_block_start - self.block_start) as usize;
        let mut next = std::mem::take(&mut self.spare);
        next.clear();
        next.extend_from_slice(&self.buf[keep_from..]);
        let mut data = std::mem::replace(&mut self.buf, next);
        data.truncate((end - self.block_start) as usize);
        let position = self.block_start;
        self.block_start = new_block_start;
        Some(PendingWrite { position, data })
    }

    /// Records that `write` reached the file; recycles its buffer.
    pub fn complete(&mut self, mut write: PendingWrite) {
        self.written_len = self.written_len.max(write.end());
        write.data.clear();
        if write.data.capacity() > self.spare.capacity() {
            self.spare = write.data;
        }
    }
}

/// Largest multiple of `alignment` (a power of two) at or below `value`.
pub fn align_down(value: u64, alignment: u64) -> u64 {
    value & !(alignment - 1)
}

/// Smallest multiple of `alignment` (a power of two) at or above `value`.
pub fn align_up(value: u64, alignment: u64) -> u64 {
    align_down(value + alignment - 1, alignment)
}

/// Writes `write` through O_DIRECT: copies into aligned buffers, pads with zeros, and finishes
/// a short write by writing the rest (from the aligned position where the kernel stopped).
pub async fn write_pending<S: Storage>(
    storage: &S,
    file: &S::File,
    path: &Path,
    write: &PendingWrite,
) -> Result<(), LogError> {
    let alignment = storage.alignment(file);
    let mut done = 0usize;
    while done < write.data.len() {
        let rest = &write.data[done..];
        let len = align_up(rest.len() as u64, alignment) as usize;
        let mut buf = storage.alloc_buffer(file, len);
        let target = buf.as_mut();
        target[..rest.len()].copy_from_slice(rest);
        target[rest.len()..].fill(0);
        let position = write.position + done as u64;
        let written = storage
            .write_at(file, buf, position)
            .await
            .map_err(|e| LogError::io("write", path, e))?;
        if written == 0 {
            return Err(LogError::io(
                "write",
                path,
                io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("wrote 0 bytes at {position}"),
                ),
            ));
        }
        if written < rest.len() {
            ::log::debug!(
                "short write to {}: {written} of {len} bytes at {position}",
                path.display()
            );
            // Rewrite from the block where the kernel stopped: O_DIRECT needs aligned positions.
            done = align_down((done + written) as u64, alignment) as usize;
        } else {
            done = write.data.len();
        }
    }
    Ok(())
}

/// Open files of a segment.
#[derive(Debug)]
pub struct SegmentFiles<F> {
    /// The `.log` file.
    pub log: F,
    /// The `.idx` file.
    pub index: F,
    /// Path of the `.log` file.
    pub log_path: PathBuf,
    /// Path of the `.idx` file.
    pub index_path: PathBuf,
}

/// In-memory state of one segment.
#[derive(Debug)]
pub struct Segment<F> {
    /// Offset of the first batch, also in the file names.
    pub base_offset: u64,
    /// Offset after the last batch.
    pub next_offset: u64,
    /// Newest append time, Unix ms (retention by age); `i64::MIN` when empty.
    pub max_append_time_ms: i64,
    /// The complete sparse index.
    pub index: SparseIndex,
    /// The files, once created (a new segment exists in memory until the flusher creates it).
    pub files: Option<Rc<SegmentFiles<F>>>,
    /// Unwritten tail of the `.log` file.
    pub log: BlockWriter,
    /// Unwritten tail of the `.idx` file.
    pub index_writer: BlockWriter,
    /// No more batches will be added and both files are written and synced.
    pub sealed: bool,
}

impl<F> Segment<F> {
    /// A new, empty segment that has no files yet.
    pub fn new(base_offset: u64, index_interval_bytes: u32) -> Self {
        Self {
            base_offset,
            next_offset: base_offset,
            max_append_time_ms: i64::MIN,
            index: SparseIndex::new(Vec::new(), index_interval_bytes),
            files: None,
            log: BlockWriter::default(),
            index_writer: BlockWriter::default(),
            sealed: false,
        }
    }

    /// Logical size of the `.log` file.
    pub fn size_bytes(&self) -> u64 {
        self.log.logical_len()
    }

    /// Whether a batch of `len` bytes ending at `next_offset` must go to a new segment.
    pub fn must_roll(&self, len: u64, next_offset: u64, segment_bytes_max: u64) -> bool {
        let size = self.size_bytes();
        size > 0
            && (size + len > segment_bytes_max
                || next_offset - self.base_offset > u64::from(u32::MAX))
    }

    /// Adds a stamped batch at the logical end.
    pub fn append(
        &mut self,
        batch: &[u8],
        base_offset: u64,
        next_offset: u64,
        append_time_ms: i64,
    ) {
        let position = self.log.logical_len();
        // must_roll keeps relative offsets within u32.
        let relative = u32::try_from(base_offset - self.base_offset).unwrap_or(u32::MAX);
        if let Some(entry) = self.index.on_batch(relative, position) {
            let mut encoded = Vec::with_capacity(crate::log::index::INDEX_ENTRY_LEN);
            entry.encode(&mut encoded);
            self.index_writer.push(&encoded);
        }
        self.log.push(batch);
        self.next_offset = next_offset;
        self.max_append_time_ms = self.max_append_time_ms.max(append_time_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_writer_keeps_partial_block() {
        let mut w = BlockWriter::default();
        w.push(&[1; 10]);
        let p = w.take_pending(10, 4).unwrap();
        assert_eq!((p.position, p.data.len()), (0, 10));
        // Appends while the write is in flight.
        w.push(&[2; 3]);
        w.complete(p);
        assert_eq!(w.written_len(), 10);
        let p = w.take_pending(13, 4).unwrap();
        // Rewrites from the block holding byte 10.
        assert_eq!(p.position, 8);
        assert_eq!(p.data, vec![1, 1, 2, 2, 2]);
        w.complete(p);
        assert!(w.take_pending(13, 4).is_none());
        // Full blocks only: nothing until a block past the written length fills.
        w.push(&[3; 2]);
        assert!(w.take_pending(align_down(w.logical_len(), 4), 4).is_none());
        w.push(&[4; 4]);
        let p = w.take_pending(align_down(w.logical_len(), 4), 4).unwrap();
        assert_eq!((p.position, p.data.len()), (12, 4));
        w.complete(p);
        assert_eq!((w.written_len(), w.logical_len()), (16, 19));
    }
}
