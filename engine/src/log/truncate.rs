//! Cutting a log back to an earlier end: what a replica does with a divergent tail before it
//! copies the leader's batches (`docs/ARCHITECTURE.md`, replication).
//!
//! [`Log::truncate_to`](super::Log::truncate_to) flushes, stops the committer and releases the
//! lock, then [`cut`] works on files nothing else writes:
//!
//! 1. the leader-epoch journal forgets the epochs that began at or past the new end (first, so
//!    a crash midway leaves a history no longer than the log, and the replica's next
//!    comparison with its leader cuts again);
//! 2. segments that begin past the new end are removed, newest first;
//! 3. the segment holding the new end is cut at the batch that begins there (to zero bytes
//!    when the segment begins there: it keeps the log's end, even for an empty log), fdatasynced,
//!    and its index rewritten without the entries past the cut.
//!
//! The log then opens again from what is on disk.

use std::path::Path;

use protocol::record::{BATCH_HEADER_LEN, BatchHeader};

use crate::{
    file,
    log::{
        Shared,
        epochs::{self, EpochEvent},
        error::LogError,
        index::SparseIndex,
        repair::write_new_file,
        storage::Storage,
    },
};

/// Steps 1-3 of the module documentation, on the stopped incarnation `shared`.
pub(crate) async fn cut<S: Storage>(shared: &Shared<S>, offset: u64) -> Result<(), LogError> {
    let storage = &shared.storage;
    let dir = shared.config.dir.as_path();
    let (later, holder) = {
        let state = shared.state.borrow();
        let later: Vec<u64> = state
            .segments
            .range(offset.saturating_add(1)..)
            .map(|(&base, _)| base)
            .rev()
            .collect();
        let holder = state
            .segments
            .range(..=offset)
            .next_back()
            .map(|(&base, segment)| (base, segment.index.clone()));
        (later, holder)
    };
    // Where the cut falls, found before anything changes: a refused cut leaves the log whole.
    let position = match &holder {
        Some((base, index)) => Some(locate(storage, dir, *base, index, offset).await?),
        None => None,
    };
    epochs::append(storage, dir, &shared.epochs, EpochEvent::Truncate(offset)).await?;
    for base in later {
        for path in [file::log_path(dir, base), file::index_path(dir, base)] {
            match storage.remove(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io("remove", path, e)),
            }
        }
    }
    if let (Some((base, index)), Some(position)) = (holder, position) {
        cut_segment(storage, dir, base, &index, offset, position).await?;
    }
    file::fsync_directory(storage, dir)
        .await
        .map_err(|e| LogError::io("fsync directory", dir, e))
}

/// The byte position in the segment at `base` of the batch that begins at `offset`, scanning
/// batch headers from the indexed batch before it (at most one index interval away).
async fn locate<S: Storage>(
    storage: &S,
    dir: &Path,
    base: u64,
    index: &SparseIndex,
    offset: u64,
) -> Result<u64, LogError> {
    let log_path = file::log_path(dir, base);
    let (relative, mut position) = index.lookup(offset - base);
    let mut at_offset = base + relative;
    if at_offset == offset {
        return Ok(position);
    }
    let file = storage
        .open(&log_path)
        .await
        .map_err(|e| LogError::io("open", &log_path, e))?;
    let len = storage
        .len(&file)
        .await
        .map_err(|e| LogError::io("file length", &log_path, e))?;
    while at_offset < offset && position + BATCH_HEADER_LEN as u64 <= len {
        let header = storage
            .read_at(&file, position, BATCH_HEADER_LEN)
            .await
            .map_err(|e| LogError::io("read", &log_path, e))?;
        let header = BatchHeader::decode(&header).map_err(|e| LogError::Corrupt {
            path: log_path.clone(),
            position,
            reason: format!("batch header while looking for offset {offset}: {e}"),
        })?;
        if header.base_offset != at_offset || header.batch_len == 0 {
            return Err(LogError::Corrupt {
                path: log_path,
                position,
                reason: format!(
                    "batch at offset {} where offset {at_offset} was expected",
                    header.base_offset
                ),
            });
        }
        position += u64::from(header.batch_len);
        at_offset = header.next_offset();
    }
    if at_offset != offset {
        return Err(LogError::Truncate {
            offset,
            reason: format!(
                "no batch begins there in {} (the batch holding it ends at {at_offset})",
                log_path.display()
            ),
        });
    }
    Ok(position)
}

/// Step 3: cuts the segment at `base` at `position`, where the batch at `offset` begins.
async fn cut_segment<S: Storage>(
    storage: &S,
    dir: &Path,
    base: u64,
    index: &SparseIndex,
    offset: u64,
    position: u64,
) -> Result<(), LogError> {
    let log_path = file::log_path(dir, base);
    let file = storage
        .open(&log_path)
        .await
        .map_err(|e| LogError::io("open", &log_path, e))?;
    storage
        .truncate(&file, position)
        .await
        .map_err(|e| LogError::io("truncate", &log_path, e))?;
    storage
        .fdatasync(&file)
        .await
        .map_err(|e| LogError::io("fdatasync", &log_path, e))?;
    let relative = offset - base;
    let mut encoded = Vec::new();
    for entry in index.entries() {
        if u64::from(entry.relative_offset) < relative {
            entry.encode(&mut encoded);
        }
    }
    write_new_file(storage, &file::index_path(dir, base), &encoded).await
}
