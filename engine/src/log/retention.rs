//! Retention: deleting whole old segments by total size and by age.

use crate::{
    file,
    log::{LogError, Shared, storage::Storage},
};

/// What one retention pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segments deleted.
    pub segments_removed: usize,
    /// Log bytes deleted.
    pub bytes_removed: u64,
    /// The log's start offset after the pass.
    pub start_offset: u64,
}

/// Removes the oldest sealed segments while the log is over `retention_bytes_max` or their
/// newest append is older than `retention_age_ms` at `now_ms`. The active segment and any
/// segment not yet sealed stay.
pub(crate) async fn apply<S: Storage>(
    shared: &Shared<S>,
    now_ms: i64,
) -> Result<RetentionReport, crate::log::LogError> {
    let config = &shared.config;
    let mut report = RetentionReport::default();
    let mut removed_files = Vec::new();
    {
        let mut state = shared.state.borrow_mut();
        loop {
            let mut segments = state.segments.iter();
            let (Some((&base, oldest)), Some(_)) = (segments.next(), segments.next()) else {
                break; // never the active segment
            };
            if !oldest.sealed {
                break;
            }
            let over_size = config
                .retention_bytes_max
                .is_some_and(|max| state.size_bytes > max);
            let too_old = config.retention_age_ms.is_some_and(|age| {
                let age = i64::try_from(age).unwrap_or(i64::MAX);
                oldest.max_append_time_ms.saturating_add(age) < now_ms
            });
            if !over_size && !too_old {
                break;
            }
            let size = oldest.size_bytes();
            if let Some(segment) = state.segments.remove(&base) {
                removed_files.push((base, segment.files));
            }
            state.size_bytes -= size;
            report.segments_removed += 1;
            report.bytes_removed += size;
        }
        report.start_offset = state.start_offset();
    }
    if removed_files.is_empty() {
        return Ok(report);
    }
    let storage = &shared.storage;
    for (base, files) in removed_files {
        // Open handles (in-flight reads) keep the data readable until they are dropped.
        drop(files);
        for path in [
            file::log_path(&config.dir, base),
            file::index_path(&config.dir, base),
        ] {
            storage
                .remove(&path)
                .await
                .map_err(|e| LogError::io("remove", &path, e))?;
        }
    }
    file::fsync_directory(storage, &config.dir)
        .await
        .map_err(|e| LogError::io("fsync directory", &config.dir, e))?;
    ::log::info!(
        "retention removed {} segments ({} bytes) from {}; start offset now {}",
        report.segments_removed,
        report.bytes_removed,
        config.dir.display(),
        report.start_offset
    );
    Ok(report)
}
