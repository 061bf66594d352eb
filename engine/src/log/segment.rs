//! One segment: a `.log` file of record batches and its `.idx` sparse index, plus the
//! in-memory state that lets writes go through O_DIRECT.
//!
//! O_DIRECT writes whole aligned blocks from aligned memory, but batches end anywhere. The
//! `.log` side is a [`ChunkWriter`]: appends copy batches straight into aligned buffers of
//! [`WRITE_CHUNK_BYTES`](crate::log::config::WRITE_CHUNK_BYTES) ("chunks"), the only copy on the way to the disk, and full chunks wait
//! in order to be written whole. When a flush must write a chunk that is not full, the chunk is
//! cut at the aligned end of its data (zero padded past the logical end; recovery stops at
//! the zero length of the padding) and a new chunk starts with a copy of its last partial
//! block, which the next write of the file rewrites. The small `.idx` side keeps its tail in a
//! plain [`BlockWriter`].

use std::{
    collections::VecDeque,
    io,
    path::{Path, PathBuf},
    rc::Rc,
};

use crate::log::{
    error::LogError,
    index::SparseIndex,
    storage::{IoBuffer, Storage},
};

/// Aligned bytes of the `.log` file to write at `position`.
#[derive(Debug)]
pub struct Chunk<B> {
    /// The aligned buffer; `buf[..len]` holds file bytes from `position`.
    pub buf: B,
    /// Aligned file position of `buf[0]`.
    pub position: u64,
    /// Bytes of `buf` holding data.
    pub len: usize,
    /// Offset after the last batch that ends in this chunk: once this chunk and every one
    /// before it are written, every offset below it is written.
    pub completes_offset: Option<u64>,
}

impl<B: IoBuffer> Chunk<B> {
    /// Logical file length once this chunk is written.
    pub fn end(&self) -> u64 {
        self.position + self.len as u64
    }

    fn capacity(&self) -> usize {
        self.buf.as_ref().len()
    }
}

/// The `.log` bytes of a segment not yet written, as chunks in file order.
#[derive(Debug)]
pub struct ChunkWriter<B> {
    /// The chunk appends copy into; `None` until the next append when the logical end is
    /// aligned (a new file, or the last chunk was full).
    current: Option<Chunk<B>>,
    /// Chunks handed to the writer (full, or cut by a flush), oldest first.
    ready: VecDeque<Chunk<B>>,
    /// Logical length: written, ready and current bytes.
    logical_len: u64,
    /// Logical length covered by chunks handed to the writer (ready, in flight or written).
    handed_len: u64,
    /// Logical length written to the file (maybe not yet synced), in order.
    written_len: u64,
}

impl<B: IoBuffer> ChunkWriter<B> {
    /// A writer for a new, empty file.
    pub fn new() -> Self {
        Self::sealed(0)
    }

    /// A writer for a file whose logical length is `written_len`, taking no bytes yet.
    pub fn sealed(len: u64) -> Self {
        Self {
            current: None,
            ready: VecDeque::new(),
            logical_len: len,
            handed_len: len,
            written_len: len,
        }
    }

    /// A writer for a file whose written bytes end with `tail`, the bytes from the aligned
    /// `block_start` to the logical end; `buf` (a chunk buffer) holds them from now on.
    pub fn resume(block_start: u64, tail: &[u8], mut buf: B) -> Self {
        let mut writer = Self::sealed(block_start + tail.len() as u64);
        if !tail.is_empty() {
            buf.as_mut()[..tail.len()].copy_from_slice(tail);
            writer.current = Some(Chunk {
                buf,
                position: block_start,
                len: tail.len(),
                completes_offset: None,
            });
        }
        writer
    }

    /// Logical length: written plus buffered bytes.
    pub fn logical_len(&self) -> u64 {
        self.logical_len
    }

    /// Logical length already written to the file.
    pub fn written_len(&self) -> u64 {
        self.written_len
    }

    /// Whether chunks wait to be written.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Chunks waiting to be written.
    pub fn ready_count(&self) -> usize {
        self.ready.len()
    }

    /// Copies `bytes` (one whole batch ending at offset `completes_offset`) to the logical
    /// end, taking chunk buffers from `alloc`. Returns whether a
    /// chunk filled up and waits to be written.
    pub fn push(
        &mut self,
        mut bytes: &[u8],
        completes_offset: u64,
        alloc: &mut impl FnMut() -> B,
    ) -> bool {
        let mut filled = false;
        while !bytes.is_empty() {
            let position = self.logical_len;
            let chunk = self.current.get_or_insert_with(|| Chunk {
                buf: alloc(),
                position,
                len: 0,
                completes_offset: None,
            });
            debug_assert_eq!(chunk.end(), self.logical_len);
            let n = (chunk.capacity() - chunk.len).min(bytes.len());
            chunk.buf.as_mut()[chunk.len..chunk.len + n].copy_from_slice(&bytes[..n]);
            chunk.len += n;
            bytes = &bytes[n..];
            self.logical_len += n as u64;
            if bytes.is_empty() {
                chunk.completes_offset = Some(completes_offset);
            }
            if chunk.len == chunk.capacity() {
                if let Some(full) = self.current.take() {
                    self.handed_len = full.end();
                    self.ready.push_back(full);
                    filled = true;
                }
            }
        }
        filled
    }

    /// Hands the current chunk to the writer if it holds bytes not handed yet: cut at the
    /// `alignment` boundary after its data, zero padded. With `keep_appending`, a new current
    /// chunk (from `alloc`) starts with a copy of its last partial block, which the next write
    /// rewrites; without, the file takes no more bytes. Returns whether a chunk was handed.
    pub fn cut_current(
        &mut self,
        alignment: u64,
        keep_appending: bool,
        alloc: &mut impl FnMut() -> B,
    ) -> bool {
        if self.logical_len == self.handed_len {
            return false;
        }
        let Some(mut chunk) = self.current.take() else {
            return false;
        };
        let padded = (align_up(chunk.len as u64, alignment) as usize).min(chunk.capacity());
        let block = align_down(chunk.len as u64, alignment) as usize;
        if keep_appending && block < chunk.len {
            let mut buf = alloc();
            buf.as_mut()[..chunk.len - block]
                .copy_from_slice(&chunk.buf.as_ref()[block..chunk.len]);
            self.current = Some(Chunk {
                buf,
                position: chunk.position + block as u64,
                len: chunk.len - block,
                completes_offset: None,
            });
        }
        chunk.buf.as_mut()[chunk.len..padded].fill(0);
        chunk.buf.truncate(padded);
        self.handed_len = chunk.end();
        self.ready.push_back(chunk);
        true
    }

    /// The oldest chunk waiting to be written.
    pub fn take_ready(&mut self) -> Option<Chunk<B>> {
        self.ready.pop_front()
    }

    /// Records that every chunk up to one ending at `end` reached the file; returns how many
    /// logical bytes that newly covers.
    pub fn complete(&mut self, end: u64) -> u64 {
        let before = self.written_len;
        self.written_len = self.written_len.max(end);
        self.written_len - before
    }
}

impl<B: IoBuffer> Default for ChunkWriter<B> {
    fn default() -> Self {
        Self::new()
    }
}

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

    /// Logical length: written plus buffered bytes.
    pub fn logical_len(&self) -> u64 {
        self.block_start + self.buf.len() as u64
    }

    /// Logical length already written to the file.
    #[cfg(test)]
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
    write_padded(storage, file, path, write.position, &write.data).await
}

/// Writes one chunk whole, finishing a short write; returns its buffer for reuse.
pub async fn write_chunk<S: Storage>(
    storage: &S,
    files: Rc<SegmentFiles<S::File>>,
    buf: Rc<S::Buffer>,
    position: u64,
) -> Result<Rc<S::Buffer>, LogError> {
    let path = &files.log_path;
    let len = buf.as_ref().as_ref().len();
    let written = storage
        .write_at(&files.log, buf.clone(), position)
        .await
        .map_err(|e| LogError::io("write", path, e))?;
    if written < len {
        ::log::debug!(
            "short write to {}: {written} of {len} bytes at {position}",
            path.display()
        );
        if written == 0 {
            return Err(write_zero(path, position));
        }
        // Rewrite from the block where the kernel stopped: O_DIRECT needs aligned positions.
        let done = align_down(written as u64, storage.alignment(&files.log));
        let rest = &buf.as_ref().as_ref()[done as usize..];
        write_padded(storage, &files.log, path, position + done, rest).await?;
    }
    Ok(buf)
}

fn write_zero(path: &Path, position: u64) -> LogError {
    LogError::io(
        "write",
        path,
        io::Error::new(
            io::ErrorKind::WriteZero,
            format!("wrote 0 bytes at {position}"),
        ),
    )
}

/// Writes `data` at the aligned `start` through fresh aligned buffers, zero padded to the
/// alignment, finishing short writes.
async fn write_padded<S: Storage>(
    storage: &S,
    file: &S::File,
    path: &Path,
    start: u64,
    data: &[u8],
) -> Result<(), LogError> {
    let alignment = storage.alignment(file);
    let mut done = 0usize;
    while done < data.len() {
        let rest = &data[done..];
        let len = align_up(rest.len() as u64, alignment) as usize;
        let mut buf = storage.alloc_buffer(len);
        let target = buf.as_mut();
        target[..rest.len()].copy_from_slice(rest);
        target[rest.len()..].fill(0);
        let position = start + done as u64;
        let written = storage
            .write_at(file, Rc::new(buf), position)
            .await
            .map_err(|e| LogError::io("write", path, e))?;
        if written == 0 {
            return Err(write_zero(path, position));
        }
        if written < rest.len() {
            ::log::debug!(
                "short write to {}: {written} of {len} bytes at {position}",
                path.display()
            );
            // Rewrite from the block where the kernel stopped: O_DIRECT needs aligned positions.
            done = align_down((done + written) as u64, alignment) as usize;
        } else {
            done = data.len();
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
pub struct Segment<F, B> {
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
    /// Unwritten bytes of the `.log` file.
    pub log: ChunkWriter<B>,
    /// Unwritten tail of the `.idx` file.
    pub index_writer: BlockWriter,
    /// No more batches will be added and both files are written and synced.
    pub sealed: bool,
}

impl<F, B: IoBuffer> Segment<F, B> {
    /// A new, empty segment that has no files yet.
    pub fn new(base_offset: u64, index_interval_bytes: u32) -> Self {
        Self {
            base_offset,
            next_offset: base_offset,
            max_append_time_ms: i64::MIN,
            index: SparseIndex::new(Vec::new(), index_interval_bytes),
            files: None,
            log: ChunkWriter::new(),
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

    /// Adds a stamped batch at the logical end, taking chunk buffers from `alloc`; returns
    /// whether a chunk filled up and waits to be written.
    pub fn append(
        &mut self,
        batch: &[u8],
        base_offset: u64,
        next_offset: u64,
        append_time_ms: i64,
        alloc: &mut impl FnMut() -> B,
    ) -> bool {
        let position = self.log.logical_len();
        // must_roll keeps relative offsets within u32.
        let relative = u32::try_from(base_offset - self.base_offset).unwrap_or(u32::MAX);
        if let Some(entry) = self.index.on_batch(relative, position) {
            let mut encoded = Vec::with_capacity(crate::log::index::INDEX_ENTRY_LEN);
            entry.encode(&mut encoded);
            self.index_writer.push(&encoded);
        }
        let filled = self.log.push(batch, next_offset, alloc);
        self.next_offset = next_offset;
        self.max_append_time_ms = self.max_append_time_ms.max(append_time_ms);
        filled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::config::WRITE_CHUNK_BYTES;

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

    #[derive(Debug)]
    struct TestBuffer(Vec<u8>);

    impl AsRef<[u8]> for TestBuffer {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }

    impl AsMut<[u8]> for TestBuffer {
        fn as_mut(&mut self) -> &mut [u8] {
            &mut self.0
        }
    }

    impl IoBuffer for TestBuffer {
        fn truncate(&mut self, len: usize) {
            self.0.truncate(len);
        }
    }

    #[test]
    fn chunk_writer_fills_cuts_and_rewrites_the_partial_block() {
        let mut alloc = || TestBuffer(vec![0xAB; WRITE_CHUNK_BYTES]);
        let mut w = ChunkWriter::new();
        let batch = vec![7u8; WRITE_CHUNK_BYTES / 2 + 100];
        assert!(!w.push(&batch, 1, &mut alloc));
        assert!(w.push(&batch, 2, &mut alloc), "the first chunk filled");
        let full = w.take_ready().unwrap();
        assert_eq!((full.position, full.len), (0, WRITE_CHUNK_BYTES));
        // Batch 2 ends in the second chunk.
        assert_eq!(full.completes_offset, Some(1));
        assert_eq!(w.complete(full.end()), WRITE_CHUNK_BYTES as u64);
        // A flush cuts the partial chunk at the block boundary, zero padded.
        assert!(w.cut_current(4096, true, &mut alloc));
        assert!(
            !w.cut_current(4096, true, &mut alloc),
            "nothing new to hand"
        );
        let cut = w.take_ready().unwrap();
        assert_eq!((cut.position, cut.len), (WRITE_CHUNK_BYTES as u64, 200));
        assert_eq!(cut.buf.0.len(), 4096);
        assert!(cut.buf.0[200..].iter().all(|&b| b == 0));
        assert_eq!(cut.completes_offset, Some(2));
        // The next bytes go to a chunk starting at that block, holding its first 200 bytes.
        w.push(&[9u8; 10], 3, &mut alloc);
        assert!(w.cut_current(4096, false, &mut alloc));
        let next = w.take_ready().unwrap();
        assert_eq!((next.position, next.len), (WRITE_CHUNK_BYTES as u64, 210));
        assert_eq!(&next.buf.0[..200], &cut.buf.0[..200]);
        assert_eq!(&next.buf.0[200..210], &[9u8; 10]);
        assert_eq!(next.completes_offset, Some(3));
        assert_eq!(w.logical_len(), WRITE_CHUNK_BYTES as u64 + 210);
    }
}
