//! Recovery: turning what `open` finds on disk into a consistent log.
//!
//! Every segment but the last was sealed (log and index fdatasynced) before the next one was
//! created, so its end is trusted: its index is checked for shape and rebuilt if missing or
//! malformed, and invalid data after its last index entry is damage, never cut. The last
//! (tail) segment may end in a torn write: its index entries are checked against the log, its
//! batches are verified (checksums, offset continuity) from the last good index entry on, and
//! whatever follows the last valid batch is cut off, unless the clean-close record
//! ([`super::closed`]) says the tail was whole and longer: then it is damage, kept, and a new
//! tail segment starts at the recorded next offset. Then the tail's files and the directory are
//! synced, because everything recovery serves is from then on treated as durable
//! (`docs/ARCHITECTURE.md` §3.1, step 3).

use std::{collections::BTreeMap, path::Path, rc::Rc};

use protocol::record::{BATCH_HEADER_LEN, BATCH_LEN_MAX, BatchHeader, BatchView};

use crate::{
    file::{self, SegmentFileKind},
    log::{
        LogConfig, LogError, closed,
        config::WRITE_CHUNK_BYTES,
        damage::{Damage, FoundBy},
        index::{IndexEntry, SparseIndex, decode_entries},
        segment::{
            BlockWriter, ChunkWriter, PendingWrite, Segment, SegmentFiles, align_down,
            write_pending,
        },
        storage::Storage,
    },
};

/// Bytes read at a time while scanning a segment.
const SCAN_CHUNK_BYTES: u64 = 1 << 20;

/// What `open` found on disk and what it repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments found (0 for a new log).
    pub segments: usize,
    /// Oldest offset in the log.
    pub start_offset: u64,
    /// Offset the next append gets.
    pub next_offset: u64,
    /// Batches verified in the tail segment.
    pub tail_batches_verified: u64,
    /// Bytes cut from the tail segment: torn or corrupt data, with any zero padding between
    /// the last valid batch and it. Zero padding alone is left in place and not counted.
    pub bytes_truncated: u64,
    /// Why the tail was cut, if it was.
    pub truncation_reason: Option<String>,
    /// Base offsets of segments whose index was missing or malformed and rebuilt by scanning.
    pub indexes_rebuilt: Vec<u64>,
    /// Index entries dropped because they were malformed or did not match the log.
    pub index_entries_dropped: usize,
    /// Index files without a log file, removed.
    pub orphan_indexes_removed: usize,
    /// The earliest damage found in a sealed segment: a sealed segment is never cut, because
    /// what follows the damage may be intact acknowledged data; `defibus log repair` keeps it.
    pub damage: Option<Damage>,
    /// The offset reservation found on disk, if any: offsets below it may have been
    /// acknowledged (`reservation.rs`).
    pub reserved_offset: Option<u64>,
    /// Offsets the reservation made this open skip (lost unsynced `Async` appends), recorded in
    /// the skipped journal before the log served anything.
    pub skipped_at_open: Option<crate::log::skipped::SkippedRange>,
    /// Gaps between segments that no skipped range records: damage (a missing segment).
    pub unrecorded_gaps: Vec<(u64, u64)>,
}

/// The recovered segments.
pub(crate) struct Recovered<F, B> {
    pub(crate) segments: BTreeMap<u64, Segment<F, B>>,
    pub(crate) next_offset: u64,
    pub(crate) report: RecoveryReport,
}

/// Opens every segment in `config.dir` (which exists and is locked), repairing the tail.
pub(crate) async fn recover<S: Storage>(
    storage: &S,
    config: &LogConfig,
) -> Result<Recovered<S::File, S::Buffer>, LogError> {
    let dir = &config.dir;
    let names = storage
        .list_dir(dir)
        .await
        .map_err(|e| LogError::io("list directory", dir, e))?;
    let mut log_bases = Vec::new();
    let mut index_bases = Vec::new();
    for name in &names {
        match file::parse_segment_file_name(name) {
            Some((base, SegmentFileKind::Log)) => log_bases.push(base),
            Some((base, SegmentFileKind::Index)) => index_bases.push(base),
            None => ::log::debug!("ignoring {name} in {}", dir.display()),
        }
    }
    log_bases.sort_unstable();
    let mut report = RecoveryReport {
        segments: log_bases.len(),
        ..RecoveryReport::default()
    };
    for base in index_bases {
        if log_bases.binary_search(&base).is_err() {
            let path = file::index_path(dir, base);
            ::log::warn!("removing index {} that has no log file", path.display());
            storage
                .remove(&path)
                .await
                .map_err(|e| LogError::io("remove", &path, e))?;
            report.orphan_indexes_removed += 1;
        }
    }
    let mut segments = BTreeMap::new();
    let tail_base = log_bases.last().copied();
    let clean = closed::load(storage, dir)
        .await?
        .filter(|c| Some(c.tail_base) == tail_base);
    let mut damaged_tail = false;
    for &base in &log_bases {
        let tail = (Some(base) == tail_base).then(|| Tail {
            clean_len: clean.map(|c| c.tail_len),
        });
        let opened = open_segment(storage, config, base, tail, &mut report).await?;
        damaged_tail |= opened.damaged_tail;
        segments.insert(base, opened.segment);
    }
    // The record describes the files as they are now; once anything is written it would not.
    let mut keep_clean_record = false;
    if let (true, Some(clean)) = (damaged_tail, clean) {
        // The damaged tail is kept whole and sealed; appends go on in a new tail segment at
        // the offset the clean close recorded, so no acknowledged offset is handed out again.
        // Its files are made now, so the next open judges the damaged one as sealed.
        let mut segment = Segment::new(clean.next_offset, config.index_interval_bytes);
        match create_segment_files(storage, dir, clean.next_offset).await {
            Ok(files) => segment.files = Some(Rc::new(files)),
            Err(e) => {
                // The committer makes them before the first write; until then the record
                // keeps telling the next open that this tail is damaged, not torn.
                ::log::warn!("{e}; the new tail segment's files are made at the first write");
                keep_clean_record = true;
            }
        }
        segments.insert(clean.next_offset, segment);
    }
    if !keep_clean_record {
        closed::remove(storage, dir).await?;
    }
    // What is served from now on is treated as durable, so make it so: the tail may hold
    // writes whose fdatasync failed or never ran (the process died, the page cache kept them),
    // and the directory may hold entries never fsynced. Sealed segments were synced before
    // their successor was created.
    if let Some(tail) = tail_base.and_then(|base| segments.get(&base)) {
        if let Some(files) = &tail.files {
            sync_file(storage, &files.log, &files.log_path).await?;
            sync_file(storage, &files.index, &files.index_path).await?;
        }
    }
    file::fsync_directory(storage, dir)
        .await
        .map_err(|e| LogError::io("fsync directory", dir, e))?;
    // Gaps between segments are judged against the skipped journal by `gaps::settle`.
    let next_offset = segments.values().next_back().map_or(0, |s| s.next_offset);
    if segments.is_empty() {
        segments.insert(0, Segment::new(0, config.index_interval_bytes));
    }
    report.start_offset = segments.keys().next().copied().unwrap_or(0);
    report.next_offset = next_offset;
    Ok(Recovered {
        segments,
        next_offset,
        report,
    })
}

struct Opened<F, B> {
    segment: Segment<F, B>,
    /// The tail was damaged below the length it had at a clean close: kept whole, sealed.
    damaged_tail: bool,
}

/// What is known of the tail segment.
#[derive(Clone, Copy)]
struct Tail {
    /// Its length at the last clean close: invalid bytes below it are damage, not a torn write.
    clean_len: Option<u64>,
}

/// Creates an empty segment's files (the caller fsyncs the directory).
async fn create_segment_files<S: Storage>(
    storage: &S,
    dir: &Path,
    base: u64,
) -> Result<SegmentFiles<S::File>, LogError> {
    let log_path = file::log_path(dir, base);
    let index_path = file::index_path(dir, base);
    let log = storage
        .create(&log_path)
        .await
        .map_err(|e| LogError::io("create", &log_path, e))?;
    let index = storage
        .create(&index_path)
        .await
        .map_err(|e| LogError::io("create", &index_path, e))?;
    Ok(SegmentFiles {
        log,
        index,
        log_path,
        index_path,
    })
}

async fn open_segment<S: Storage>(
    storage: &S,
    config: &LogConfig,
    base: u64,
    tail: Option<Tail>,
    report: &mut RecoveryReport,
) -> Result<Opened<S::File, S::Buffer>, LogError> {
    let is_tail = tail.is_some();
    let log_path = file::log_path(&config.dir, base);
    let index_path = file::index_path(&config.dir, base);
    let log = storage
        .open(&log_path)
        .await
        .map_err(|e| LogError::io("open", &log_path, e))?;
    let file_len = storage
        .len(&log)
        .await
        .map_err(|e| LogError::io("file length", &log_path, e))?;
    let index_file = match storage.open(&index_path).await {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(LogError::io("open", &index_path, e)),
    };
    let index_bytes = match &index_file {
        Some(f) => {
            let len = storage
                .len(f)
                .await
                .map_err(|e| LogError::io("file length", &index_path, e))?;
            storage
                .read_at(f, 0, len as usize)
                .await
                .map_err(|e| LogError::io("read", &index_path, e))?
        }
        None => bytes::Bytes::new(),
    };
    let decoded = decode_entries(&index_bytes, file_len);
    let mut rebuilt = index_file.is_none() || decoded.dropped > 0;
    let mut dropped = decoded.dropped;
    let decoded_len = decoded.entries.len();
    let reader = Reader {
        storage,
        file: &log,
        path: &log_path,
        base,
    };
    // Find the last index entry that points at the batch it names.
    let mut entries = decoded.entries;
    while let Some(last) = entries.last().copied() {
        if reader.entry_matches(last, is_tail).await? {
            break;
        }
        entries.pop();
        dropped += 1;
        rebuilt = true;
        if !is_tail {
            // A sealed segment's index is all or nothing: rebuild it whole.
            dropped += entries.len();
            entries.clear();
        }
    }
    let (start_position, start_offset) = entries.last().map_or((0, base), |e| {
        (u64::from(e.position), base + u64::from(e.relative_offset))
    });
    let mut index = SparseIndex::new(entries, config.index_interval_bytes);
    let scan = reader
        // Checksums too: past the last index entry is at most an index interval of bytes.
        .scan(start_position, start_offset, file_len, true, &mut index)
        .await?;
    report.index_entries_dropped += dropped;
    let mut valid_end = scan.valid_end;
    // Below the clean-close length nothing was torn: whatever stops the scan there is damage.
    let clean_len = tail.and_then(|t| t.clean_len);
    let damaged_tail = clean_len.is_some_and(|len| scan.valid_end < len);
    let stop = match (&scan.stop, clean_len) {
        (Stop::End, Some(len)) if damaged_tail => Stop::Invalid(format!(
            "the segment's batches end here, but it held {len} bytes of batches when the log was closed cleanly"
        )),
        (stop, _) => stop.clone(),
    };
    if let Stop::Invalid(reason) = &stop {
        let cut = file_len.saturating_sub(scan.valid_end);
        if is_tail && !damaged_tail {
            ::log::warn!(
                "{}: cutting {cut} bytes at position {} of the tail segment: {reason}",
                log_path.display(),
                scan.valid_end
            );
            // Made durable with the rest of the tail once every segment is open.
            storage
                .truncate(&log, scan.valid_end)
                .await
                .map_err(|e| LogError::io("truncate", &log_path, e))?;
            report.bytes_truncated += cut;
            report.truncation_reason = Some(reason.clone());
        } else {
            // A sealed segment was whole when it was sealed (and a cleanly closed tail when
            // it was closed), so this is damage, not a torn write: never cut (intact batches
            // may follow), serve up to it, refuse past it.
            let which = if is_tail {
                "cleanly closed tail segment"
            } else {
                "sealed segment"
            };
            let damage = Damage {
                offset: scan.next_offset,
                path: log_path.clone(),
                position: scan.valid_end,
                reason: format!("{which} has {cut} invalid bytes from here: {reason}"),
                found_by: FoundBy::Recovery,
            };
            if report
                .damage
                .as_ref()
                .is_none_or(|d| d.offset > damage.offset)
            {
                report.damage = Some(damage);
            }
            valid_end = scan.valid_end;
        }
    }
    if is_tail {
        report.tail_batches_verified = scan.batches;
    }
    let encoded = index.encode();
    let index_stale = rebuilt || index.entries().len() != decoded_len;
    if rebuilt {
        ::log::warn!(
            "{}: index missing or malformed ({dropped} entries dropped), rebuilt by scanning",
            index_path.display()
        );
        report.indexes_rebuilt.push(base);
    }
    let (index_file, index_writer) = match index_file {
        Some(f) if !index_stale => {
            let index_block = align_down(encoded.len() as u64, storage.alignment(&f));
            let writer = BlockWriter::resume(index_block, encoded[index_block as usize..].to_vec());
            (f, writer)
        }
        _ => rewrite_index_or_defer(storage, &index_path, &encoded).await?,
    };
    let log_writer = if is_tail && !damaged_tail {
        let block = align_down(valid_end, storage.alignment(&log));
        let tail = storage
            .read_at(&log, block, (valid_end - block) as usize)
            .await
            .map_err(|e| LogError::io("read", &log_path, e))?;
        ChunkWriter::resume(block, &tail, storage.alloc_buffer(WRITE_CHUNK_BYTES))
    } else {
        ChunkWriter::sealed(valid_end)
    };
    let mut segment = Segment::new(base, config.index_interval_bytes);
    segment.next_offset = scan.next_offset;
    segment.max_append_time_ms = scan.last_append_time_ms;
    segment.index = index;
    segment.log = log_writer;
    segment.index_writer = index_writer;
    // A damaged tail was synced at its clean close and takes no more writes.
    segment.sealed = !is_tail || damaged_tail;
    segment.files = Some(Rc::new(SegmentFiles {
        log,
        index: index_file,
        log_path,
        index_path,
    }));
    Ok(Opened {
        segment,
        damaged_tail,
    })
}

async fn sync_file<S: Storage>(storage: &S, file: &S::File, path: &Path) -> Result<(), LogError> {
    storage
        .fdatasync(file)
        .await
        .map_err(|e| LogError::io("fdatasync", path, e))
}

/// Rewrites a whole index file ([`rewrite_index`]); on a full disk, leaves it empty with
/// every entry unwritten in its writer, so a broker starts on a full disk. The index only
/// speeds reads up and recovery rebuilt it in memory, so serving from that loses nothing. The
/// committer writes a tail's index with its next round; a sealed segment's stays empty and
/// the next open rebuilds it again.
async fn rewrite_index_or_defer<S: Storage>(
    storage: &S,
    path: &Path,
    encoded: &[u8],
) -> Result<(S::File, BlockWriter), LogError> {
    match rewrite_index(storage, path, encoded).await {
        Ok(file) => {
            let index_block = align_down(encoded.len() as u64, storage.alignment(&file));
            let writer = BlockWriter::resume(index_block, encoded[index_block as usize..].to_vec());
            Ok((file, writer))
        }
        Err(LogError::Io { source, .. }) if source.kind() == std::io::ErrorKind::StorageFull => {
            ::log::warn!(
                "{}: no space to rewrite the index; serving it from memory until the log \
                 writes it ({source})",
                path.display()
            );
            let file = storage
                .open(path)
                .await
                .map_err(|e| LogError::io("open", path, e))?;
            storage
                .truncate(&file, 0)
                .await
                .map_err(|e| LogError::io("truncate", path, e))?;
            let mut writer = BlockWriter::default();
            writer.push(encoded);
            Ok((file, writer))
        }
        Err(e) => Err(e),
    }
}

/// Writes a whole index file afresh and fdatasyncs it.
async fn rewrite_index<S: Storage>(
    storage: &S,
    path: &Path,
    encoded: &[u8],
) -> Result<S::File, LogError> {
    let file = storage
        .create(path)
        .await
        .map_err(|e| LogError::io("create", path, e))?;
    let write = PendingWrite {
        position: 0,
        data: encoded.to_vec(),
    };
    write_pending(storage, &file, path, &write).await?;
    storage
        .fdatasync(&file)
        .await
        .map_err(|e| LogError::io("fdatasync", path, e))?;
    Ok(file)
}

/// Why a scan stopped.
#[derive(Debug, Clone)]
enum Stop {
    /// At the end of the file, or at zero padding followed only by zeros.
    End,
    /// At invalid data: the reason.
    Invalid(String),
}

#[derive(Debug)]
struct Scan {
    valid_end: u64,
    next_offset: u64,
    last_append_time_ms: i64,
    batches: u64,
    stop: Stop,
}

struct Reader<'a, S: Storage> {
    storage: &'a S,
    file: &'a S::File,
    path: &'a Path,
    base: u64,
}

impl<S: Storage> Reader<'_, S> {
    async fn read(&self, position: u64, len: u64) -> Result<bytes::Bytes, LogError> {
        self.storage
            .read_at(self.file, position, len as usize)
            .await
            .map_err(|e| LogError::io("read", self.path, e))
    }

    /// Whether the batch at the entry's position is valid and carries the entry's offset
    /// (for the tail, fully parsed with checksums; for sealed segments, its header).
    async fn entry_matches(&self, entry: IndexEntry, verify: bool) -> Result<bool, LogError> {
        let position = u64::from(entry.position);
        let head = self.read(position, BATCH_HEADER_LEN as u64).await?;
        let Ok(header) = BatchHeader::decode(&head) else {
            return Ok(false);
        };
        if header.validate(BATCH_LEN_MAX).is_err()
            || header.base_offset != self.base + u64::from(entry.relative_offset)
        {
            return Ok(false);
        }
        if verify {
            let bytes = self.read(position, u64::from(header.batch_len)).await?;
            return Ok(BatchView::parse(&bytes, BATCH_LEN_MAX).is_ok());
        }
        Ok(true)
    }

    /// Walks batches from `position` (holding offset `expected`) to `file_len`, checking each
    /// header and offset continuity, and with `verify` every checksum; feeds `index`.
    async fn scan(
        &self,
        mut position: u64,
        mut expected: u64,
        file_len: u64,
        verify: bool,
        index: &mut SparseIndex,
    ) -> Result<Scan, LogError> {
        let mut scan = Scan {
            valid_end: position,
            next_offset: expected,
            last_append_time_ms: i64::MIN,
            batches: 0,
            stop: Stop::End,
        };
        let mut need = 0u64;
        while position < file_len {
            let len = SCAN_CHUNK_BYTES.max(need).min(file_len - position);
            let chunk = self.read(position, len).await?;
            let at_eof = position + chunk.len() as u64 >= file_len;
            let mut at = 0usize;
            loop {
                let rest = &chunk[at..];
                let here = position + at as u64;
                if rest.len() < BATCH_HEADER_LEN {
                    if at_eof {
                        if !rest.is_empty() && rest.iter().any(|&b| b != 0) {
                            scan.stop = Stop::Invalid(format!(
                                "torn batch header: {} bytes at the end",
                                rest.len()
                            ));
                        }
                        scan.valid_end = here;
                        return self.finish(scan, here, file_len).await;
                    }
                    break;
                }
                let header = match BatchHeader::decode(rest) {
                    Ok(h) => h,
                    Err(e) => return self.stop(scan, here, e.to_string()),
                };
                if header.batch_len == 0 {
                    // Zero padding after the last batch, or garbage after a zero length.
                    return self.finish(scan, here, file_len).await;
                }
                if let Err(e) = header.validate(BATCH_LEN_MAX) {
                    return self.stop(scan, here, e.to_string());
                }
                let batch_len = header.batch_len as usize;
                if rest.len() < batch_len {
                    if at_eof {
                        return self.stop(
                            scan,
                            here,
                            format!(
                                "torn batch: {batch_len} bytes declared, {} in the file",
                                rest.len()
                            ),
                        );
                    }
                    if at == 0 {
                        need = batch_len as u64;
                    }
                    break;
                }
                if verify {
                    if let Err(e) = BatchView::parse(rest, BATCH_LEN_MAX) {
                        return self.stop(scan, here, e.to_string());
                    }
                }
                if header.base_offset != expected {
                    return self.stop(
                        scan,
                        here,
                        format!(
                            "batch has base offset {} where {expected} was expected",
                            header.base_offset
                        ),
                    );
                }
                let relative = u32::try_from(expected - self.base).unwrap_or(u32::MAX);
                index.on_batch(relative, here);
                expected = header.next_offset();
                scan.next_offset = expected;
                scan.last_append_time_ms = header.append_time_ms;
                scan.batches += 1;
                at += batch_len;
                scan.valid_end = position + at as u64;
            }
            position += at as u64;
        }
        Ok(scan)
    }

    fn stop(&self, mut scan: Scan, position: u64, reason: String) -> Result<Scan, LogError> {
        scan.valid_end = position;
        scan.stop = Stop::Invalid(reason);
        Ok(scan)
    }

    /// The scan reached a zero length or the end: the rest must be zero padding, else it is
    /// garbage to cut.
    async fn finish(&self, mut scan: Scan, position: u64, file_len: u64) -> Result<Scan, LogError> {
        scan.valid_end = position;
        if matches!(scan.stop, Stop::Invalid(_)) {
            return Ok(scan);
        }
        let mut at = position;
        while at < file_len {
            let len = SCAN_CHUNK_BYTES.min(file_len - at);
            let chunk = self.read(at, len).await?;
            if let Some(i) = chunk.iter().position(|&b| b != 0) {
                scan.stop = Stop::Invalid(format!(
                    "non-zero byte at position {} after the last batch",
                    at + i as u64
                ));
                return Ok(scan);
            }
            if chunk.is_empty() {
                break;
            }
            at += chunk.len() as u64;
        }
        Ok(scan)
    }
}
