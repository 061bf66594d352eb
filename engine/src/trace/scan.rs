//! Reading a log for a trace, within a byte budget: find where a time begins (bisection on
//! the batches' stamped append times), then visit batches forward until the visitor has what
//! it looks for, the log ends, or the budget runs out.
//!
//! Every read goes through [`Log::read`], which verifies what it reads from disk; a scan
//! served from a tail cache never waits, so it yields to the shard's other tasks between reads.

use std::cell::Cell;

use protocol::record::{BATCH_LEN_MAX, BatchHeader, BatchView};

use crate::log::{Log, LogError};

/// Bytes read per step of a scan.
const SCAN_READ_BYTES: usize = 256 << 10;

/// Stored bytes one trace may still read.
pub(crate) struct Budget {
    left: Cell<u64>,
}

impl Budget {
    pub fn new(bytes: u64) -> Self {
        Self {
            left: Cell::new(bytes),
        }
    }

    fn spend(&self, bytes: usize) {
        self.left.set(self.left.get().saturating_sub(bytes as u64));
    }

    pub fn exhausted(&self) -> bool {
        self.left.get() == 0
    }
}

/// What a visitor says after one batch.
pub(crate) enum Step<T> {
    /// Go on with the next batch.
    Next,
    /// Found it.
    Found(T),
    /// Nothing further can match (past a deadline): stop.
    Stop,
}

/// How a scan ended.
pub(crate) enum Scanned<T> {
    Found(T),
    /// The log ended, or the visitor stopped: nothing matched.
    NotFound,
    /// The budget ran out; the last batch visited was stored at this time.
    OutOfBudget(i64),
}

/// The first offset whose batch was stored at or after `time_ms`, assuming append times grow
/// with offsets (they are the broker's clock at append); the log's next offset if none was.
pub(crate) async fn first_at_or_after(
    log: &Log,
    time_ms: i64,
    budget: &Budget,
) -> Result<u64, LogError> {
    let (mut low, mut high) = (log.start_offset(), log.next_offset());
    while low < high {
        let middle = low + (high - low) / 2;
        let batches = log.read(middle, 1).await?;
        let Some(batch) = batches.first() else {
            high = middle;
            continue;
        };
        budget.spend(batch.len());
        let header = header_of(batch)?;
        if header.append_time_ms < time_ms {
            low = header.next_offset().max(middle + 1);
        } else {
            high = middle;
        }
    }
    Ok(low)
}

/// Visits every batch of `log` from `offset` on, in order, until `visit` finds or stops, the
/// log ends, or `budget` runs out.
pub(crate) async fn forward<T>(
    log: &Log,
    mut offset: u64,
    budget: &Budget,
    mut visit: impl FnMut(&BatchView<'_>) -> Step<T>,
) -> Result<Scanned<T>, LogError> {
    let mut last_ms = 0;
    loop {
        if offset >= log.next_offset() {
            return Ok(Scanned::NotFound);
        }
        if budget.exhausted() {
            return Ok(Scanned::OutOfBudget(last_ms));
        }
        let batches = log.read(offset, SCAN_READ_BYTES).await?;
        if batches.is_empty() {
            return Ok(Scanned::NotFound);
        }
        for batch in &batches {
            budget.spend(batch.len());
            let view = BatchView::parse(batch, BATCH_LEN_MAX)
                .map_err(|source| LogError::InvalidBatch { source })?;
            last_ms = view.header().append_time_ms;
            match visit(&view) {
                Step::Next => {}
                Step::Found(found) => return Ok(Scanned::Found(found)),
                Step::Stop => return Ok(Scanned::NotFound),
            }
            offset = view.next_offset();
            if budget.exhausted() {
                return Ok(Scanned::OutOfBudget(last_ms));
            }
        }
        crate::rt::yield_if_needed().await;
    }
}

fn header_of(batch: &[u8]) -> Result<BatchHeader, LogError> {
    BatchHeader::decode(batch).map_err(|source| LogError::InvalidBatch { source })
}
