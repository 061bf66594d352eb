//! Offset gaps: what `open` does with the offset reservation and the skipped-ranges journal,
//! and where a read of an offset inside a gap is served from.
//!
//! After recovery (`recovery.rs`) found the segments, `open`
//!
//! 1. reads the reservation `L` ([`super::reservation`]); the log continues at
//!    `max(recovered end E, L)`, so an offset that may have been acknowledged is never reused;
//! 2. if `E < L`, records `[E, L)` in the journal ([`super::skipped`], fdatasynced) before
//!    anything is served or appended;
//! 3. checks every gap between segments against the journal: an unrecorded gap is damage (a
//!    missing segment), logged at ERROR and reported in [`super::RecoveryReport`];
//! 4. in `Async` mode, makes a fresh limit one step past the next offset durable before the
//!    first append can be acknowledged.
//!
//! Steps 1, 2 and 4 apply only with `LogConfig::offset_reservation` (the default).

use std::collections::BTreeMap;

use crate::log::{
    FlushMode, LogConfig, LogError,
    recovery::Recovered,
    reservation::{self, Reservation},
    segment::Segment,
    skipped::{self, Journal, SkipReason, SkippedRange},
    storage::Storage,
};

/// What `open` keeps of the gaps.
pub(crate) struct Settled<F> {
    /// The offset the next append gets.
    pub(crate) next_offset: u64,
    /// Every recorded skipped range.
    pub(crate) skipped: Vec<SkippedRange>,
    /// The reservation, in `Async` mode.
    pub(crate) reservation: Option<Reservation<F>>,
}

/// Steps 1-4 of the module documentation, over what recovery found.
pub(crate) async fn settle<S: Storage>(
    storage: &S,
    config: &LogConfig,
    recovered: &mut Recovered<S::File, S::Buffer>,
) -> Result<Settled<S::File>, LogError> {
    let dir = &config.dir;
    // Without the reservation (a replicated queue) a crash's unsynced offsets are cut, not
    // skipped: the replica fetches them again from the leader (`LogConfig::offset_reservation`).
    let loaded = if config.offset_reservation {
        reservation::load(storage, dir).await?
    } else {
        None
    };
    let limit = loaded
        .as_ref()
        .and_then(|(_, record)| *record)
        .map(|r| r.limit);
    let mut journal = Journal::load(storage, dir).await?;
    let recovered_end = recovered.next_offset;
    let next_offset = recovered_end.max(limit.unwrap_or(0));
    recovered.report.reserved_offset = limit;
    if next_offset > recovered_end {
        let range = SkippedRange {
            from: recovered_end,
            to: next_offset,
            reason: SkipReason::UnsyncedAtCrash,
            time_ms: super::now_ms(),
        };
        ::log::warn!(
            "{}: offsets {recovered_end}..{next_offset} were reserved (maybe acknowledged in \
             async mode) but lost in a crash; the log continues at {next_offset} and records \
             the gap",
            dir.display()
        );
        journal.append(storage, range).await?;
        recovered.report.skipped_at_open = Some(range);
        recovered.next_offset = next_offset;
        recovered.report.next_offset = next_offset;
        drop_empty_tail(storage, config, &mut recovered.segments, next_offset).await?;
        recovered.report.start_offset = recovered.segments.keys().next().copied().unwrap_or(0);
    }
    let mut unrecorded = unrecorded_gaps(&recovered.segments, journal.entries());
    // A gap from where recovery found damage is the damaged segment's own unreadable rest
    // (a cleanly closed tail kept whole, `closed.rs`), already reported as that damage.
    let damaged_from = recovered.report.damage.as_ref().map(|d| d.offset);
    unrecorded.retain(|&(from, _)| Some(from) != damaged_from);
    for &(from, to) in &unrecorded {
        ::log::error!(
            "{}: offsets {from}..{to} lie between segments but no skipped range records them: \
             a segment is missing; `defibus log repair` records the gap once it is understood",
            dir.display()
        );
    }
    recovered.report.unrecorded_gaps = unrecorded;
    let reservation = match config.flush {
        FlushMode::Async { .. } if config.offset_reservation => {
            // While there is room: the gap a crash leaves must be recordable on a full disk.
            journal.preallocate(storage).await?;
            Some(Reservation::start(storage, dir, loaded, next_offset).await?)
        }
        FlushMode::Async { .. } | FlushMode::Sync => None,
    };
    Ok(Settled {
        next_offset,
        skipped: journal.entries().to_vec(),
        reservation,
    })
}

/// Before the log continues past a gap, drops an empty tail segment (a roll whose data a crash
/// lost), removing its files: every gap then starts at the end of a segment holding batches,
/// and no empty segment lingers to move the start offset into a gap. A log left with no
/// segment gets its only one at the new offset, so its start offset moves there too.
async fn drop_empty_tail<S: Storage>(
    storage: &S,
    config: &LogConfig,
    segments: &mut BTreeMap<u64, Segment<S::File, S::Buffer>>,
    next_offset: u64,
) -> Result<(), LogError> {
    let dir = &config.dir;
    let tail_is_empty = segments
        .values()
        .next_back()
        .is_some_and(|s| s.size_bytes() == 0);
    if tail_is_empty {
        if let Some((_, empty)) = segments.pop_last() {
            if let Some(files) = &empty.files {
                for path in [&files.log_path, &files.index_path] {
                    storage
                        .remove(path)
                        .await
                        .map_err(|e| LogError::io("remove", path, e))?;
                }
                crate::file::fsync_directory(storage, dir)
                    .await
                    .map_err(|e| LogError::io("fsync directory", dir, e))?;
            }
        }
    }
    if segments.is_empty() {
        segments.insert(
            next_offset,
            Segment::new(next_offset, config.index_interval_bytes),
        );
    }
    Ok(())
}

/// Gaps between consecutive segments that `entries` do not cover.
pub(crate) fn unrecorded_gaps<F, B>(
    segments: &BTreeMap<u64, Segment<F, B>>,
    entries: &[SkippedRange],
) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut previous_end: Option<u64> = None;
    for segment in segments.values() {
        if let Some(end) = previous_end {
            if end < segment.base_offset {
                out.extend(skipped::uncovered(entries, end, segment.base_offset));
            }
        }
        previous_end = Some(segment.next_offset);
    }
    out
}

/// The offset a read of `offset` is served from: `offset` itself when a segment holds it; the
/// first offset after the gap when it lies in one (consumers see offsets jump, never a
/// stall); `next_offset` when nothing after it exists yet.
pub(crate) fn serve_from<F, B>(
    segments: &BTreeMap<u64, Segment<F, B>>,
    offset: u64,
    next_offset: u64,
) -> u64 {
    if let Some((_, segment)) = segments.range(..=offset).next_back() {
        if offset < segment.next_offset {
            return offset;
        }
    }
    segments
        .range(offset.saturating_add(1)..)
        .next()
        .map_or(next_offset, |(base, _)| *base)
        .max(offset)
}
