//! Damage: where a log's stored data stops being trustworthy.
//!
//! A log records the earliest damage it knows of, found by recovery (a sealed segment that
//! ends early or holds invalid bytes), by a read (a batch that fails its checksums or breaks
//! offset continuity) or by the scrubber. From then on it refuses to serve any offset at or
//! past it with [`LogError::Damaged`](super::LogError::Damaged): serving on would skip or
//! relabel records silently. Appends go on, so nothing new is refused or lost; an operator's
//! `defibus log repair` (the broker stopped) skips the damaged range, keeps every intact batch
//! after it and records what it skipped, and the queue serves again.

use std::fmt;
use std::path::PathBuf;

use protocol::record::{BATCH_LEN_MAX, BatchHeader, BatchView};

/// What a verified read found at one position of a segment.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// A whole, valid batch with the expected base offset.
    Batch(BatchHeader),
    /// The header is valid, but `bytes` ends before the batch does (or before its header).
    Incomplete,
    /// Invalid: why.
    Invalid(String),
}

/// Verifies the batch at the start of `bytes`, which must hold `expected` as base offset: its
/// header, every checksum (the stamped fields included) and offset continuity. The one
/// judgement that reads, recovery, the scrub and `defibus log verify` share, so they agree.
pub(crate) fn verify_batch(bytes: &[u8], expected: u64) -> Verdict {
    let header =
        match BatchHeader::decode(bytes).and_then(|h| h.validate(BATCH_LEN_MAX).map(|()| h)) {
            Ok(header) => header,
            Err(protocol::record::BatchError::Incomplete { .. }) => return Verdict::Incomplete,
            Err(e) => return Verdict::Invalid(e.to_string()),
        };
    let len = header.batch_len as usize;
    if bytes.len() < len {
        return Verdict::Incomplete;
    }
    if let Err(e) = BatchView::parse(&bytes[..len], len) {
        return Verdict::Invalid(e.to_string());
    }
    if header.base_offset != expected {
        return Verdict::Invalid(format!(
            "batch has base offset {} where {expected} was expected",
            header.base_offset
        ));
    }
    Verdict::Batch(header)
}

/// Who found the damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoundBy {
    /// Recovery, when the log was opened.
    Recovery,
    /// A read serving a consumer.
    Read,
    /// The background or on-demand scrub.
    Scrub,
}

impl fmt::Display for FoundBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FoundBy::Recovery => "recovery",
            FoundBy::Read => "a read",
            FoundBy::Scrub => "the scrub",
        })
    }
}

/// The earliest damage a log knows of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The first offset that cannot be served: the offset the damaged batch should hold.
    pub offset: u64,
    /// The segment file holding the damage.
    pub path: PathBuf,
    /// Byte position of the damage in that file.
    pub position: u64,
    /// What is wrong, e.g. a checksum mismatch.
    pub reason: String,
    /// Who found it.
    pub found_by: FoundBy,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "offset {} in {} at byte {}: {} (found by {})",
            self.offset,
            self.path.display(),
            self.position,
            self.reason,
            self.found_by
        )
    }
}

/// A log's damage record: the earliest damage wins.
#[derive(Debug, Default)]
pub(crate) struct DamageRecord {
    earliest: Option<Damage>,
}

impl DamageRecord {
    /// Records `damage` and logs it when it is new and earlier than what was known; returns
    /// whether it was.
    pub(crate) fn record(&mut self, damage: Damage) -> bool {
        if self
            .earliest
            .as_ref()
            .is_some_and(|known| known.offset <= damage.offset)
        {
            return false;
        }
        ::log::error!(
            "stored data is damaged, offsets from {} are not served until `defibus log repair`: {damage}",
            damage.offset
        );
        self.earliest = Some(damage);
        true
    }

    /// The damage that `offset` lies at or past, if any.
    pub(crate) fn covering(&self, offset: u64) -> Option<&Damage> {
        self.earliest.as_ref().filter(|d| offset >= d.offset)
    }

    /// The earliest damage.
    pub(crate) fn earliest(&self) -> Option<&Damage> {
        self.earliest.as_ref()
    }
}
