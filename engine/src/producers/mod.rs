//! The idempotent producer on the broker (`docs/ARCHITECTURE.md` §13.1): producer ids
//! ([`ids`]) and, per queue, the duplicate window ([`window`]) that this module keeps in step
//! with the queue's log.
//!
//! The window is built from the log, lazily: before the first idempotent batch after the queue
//! opened (a restart), after a failover made this broker lead it, or after anything but this
//! module changed the log's end (a follower's copies, a cut, a failed append). It is valid
//! while its end is the log's end and the log's latest leader epoch is the one it was built
//! in; every append through the queue moves its end, in the same synchronous step that stamps
//! the batch ([`crate::log::Log::append_admitted`]), so two copies of one batch can never both
//! be admitted.

pub mod ids;
pub(crate) mod window;

use std::cell::RefCell;
use std::rc::Rc;

use protocol::codes::Status;
use protocol::record::{BatchHeader, ProducerFields};

use crate::log::{Appended, Log, LogError};
use crate::notify::Notify;
use window::{Landing, Pending, Table, Verdict, WindowLimits};

/// Bytes read per step of a rebuild.
const REBUILD_READ_BYTES: usize = 1 << 20;

/// What the window says about one idempotent batch at the moment of its append.
#[derive(Debug)]
pub(crate) enum Admission {
    /// The window no longer matches the log: rebuild it and ask again.
    Stale,
    /// A copy of a batch stored (or being stored): answer with the original.
    Duplicate(Landing),
    /// Not stored.
    Refuse(protocol::codes::Status, String),
}

enum State {
    /// Not built since the queue opened, or let go after the log changed under it.
    Unbuilt,
    /// A task is reading the log's tail; idempotent appends wait for it.
    Building,
    Built {
        table: Table,
        /// The log's end the table covers.
        end: u64,
        /// The log's latest leader epoch when it was built.
        epoch: Option<u64>,
    },
}

/// The duplicate window of one queue, kept in step with its log.
pub(crate) struct Producers {
    limits: WindowLimits,
    rebuild_scan_bytes: u64,
    state: RefCell<State>,
    rebuilt: Notify,
}

impl Producers {
    /// An unbuilt window with these bounds.
    pub fn new(config: &crate::config::ProducersConfig) -> Self {
        Self {
            limits: WindowLimits {
                batches: config.window_batches,
                producers: config.per_queue_max,
            },
            rebuild_scan_bytes: config.rebuild_scan_bytes,
            state: RefCell::new(State::Unbuilt),
            rebuilt: Notify::new(),
        }
    }

    /// A batch without a producer lands at `landing`: the window's end follows, if it was at
    /// the batch's start (else it is stale and is let go).
    pub fn on_plain_append(&self, landing: Appended) {
        let mut state = self.state.borrow_mut();
        if let State::Built { end, .. } = &mut *state {
            if *end == landing.base_offset {
                *end = landing.next_offset;
            } else {
                *state = State::Unbuilt;
            }
        }
    }

    /// An append through the window failed: what reached the log is not known here, so the
    /// window is rebuilt from the log before it judges the next batch.
    pub fn append_failed(&self) {
        let mut state = self.state.borrow_mut();
        if matches!(*state, State::Built { .. }) {
            *state = State::Unbuilt;
        }
    }

    /// Whether the window, valid for a log ending at `log_end`, would take batch `fields` as
    /// its producer's next: the log does not hold it.
    pub fn would_append(&self, fields: ProducerFields, log_end: u64) -> bool {
        match &*self.state.borrow() {
            State::Built { table, end, .. } if *end == log_end => {
                matches!(
                    table.check(fields),
                    Verdict::Append | Verdict::Refuse(Status::OutOfOrderSequence, _)
                )
            }
            _ => false,
        }
    }

    /// Judges batch `fields` about to land at `landing`, in the append's synchronous step:
    /// admitted, it is remembered as pending at once (the returned handle settles it).
    pub fn admit(
        &self,
        fields: ProducerFields,
        landing: Appended,
    ) -> Result<Rc<Pending>, Admission> {
        let mut state = self.state.borrow_mut();
        let State::Built { table, end, .. } = &mut *state else {
            return Err(Admission::Stale);
        };
        if *end != landing.base_offset {
            *state = State::Unbuilt;
            return Err(Admission::Stale);
        }
        match table.check(fields) {
            Verdict::Append => {
                let pending = Rc::new(Pending::default());
                table.record(fields, Landing::Pending(pending.clone()));
                *end = landing.next_offset;
                Ok(pending)
            }
            Verdict::Duplicate(landing) => Err(Admission::Duplicate(landing)),
            Verdict::Refuse(status, reason) => Err(Admission::Refuse(status, reason)),
        }
    }

    /// Returns once the window matches `log`, rebuilding it from the log's tail if needed.
    pub async fn ensure_built<S: crate::log::Storage + 'static>(
        &self,
        log: &Log<S>,
    ) -> Result<(), LogError> {
        loop {
            let seen = self.rebuilt.generation();
            let latest_epoch = log.latest_epoch();
            let building = {
                let mut state = self.state.borrow_mut();
                match &*state {
                    State::Built { end, epoch, .. }
                        if *end == log.next_offset() && *epoch == latest_epoch =>
                    {
                        return Ok(());
                    }
                    State::Building => true,
                    _ => {
                        *state = State::Building;
                        false
                    }
                }
            };
            if building {
                // Another task reads the tail: wait for its table.
                self.rebuilt.wait(seen).await;
                continue;
            }
            let built = self.scan(log).await;
            match built {
                Ok((table, end)) => {
                    *self.state.borrow_mut() = State::Built {
                        table,
                        end,
                        epoch: latest_epoch,
                    };
                    self.rebuilt.notify();
                }
                Err(e) => {
                    *self.state.borrow_mut() = State::Unbuilt;
                    self.rebuilt.notify();
                    return Err(e);
                }
            }
        }
    }

    /// Reads the log's last `rebuild_scan_bytes` (to within an index interval) into a table;
    /// returns it with the end it covers, the log's end once the last read returned.
    async fn scan<S: crate::log::Storage + 'static>(
        &self,
        log: &Log<S>,
    ) -> Result<(Table, u64), LogError> {
        let mut table = Table::new(self.limits);
        let mut offset = log
            .tail_start_offset(self.rebuild_scan_bytes)
            .max(log.start_offset());
        while offset < log.next_offset() {
            let batches = match log.read(offset, REBUILD_READ_BYTES).await {
                Ok(batches) => batches,
                Err(LogError::Damaged { damage }) => {
                    // Nothing past damage is served until a repair: the window starts empty,
                    // so every producer renumbers (ARCHITECTURE §13.1), and the queue keeps
                    // taking writes as it does without idempotence.
                    ::log::warn!(
                        "{}: the idempotent producer window starts empty: its tail is damaged at \
                         offset {}",
                        damage.path.display(),
                        damage.offset
                    );
                    return Ok((Table::new(self.limits), log.next_offset()));
                }
                Err(e) => return Err(e),
            };
            let Some(last) = batches.last() else {
                break;
            };
            let next = BatchHeader::decode(last)
                .map_err(|source| LogError::InvalidBatch { source })?
                .next_offset();
            for batch in &batches {
                let header = BatchHeader::decode(batch)
                    .map_err(|source| LogError::InvalidBatch { source })?;
                if let Some(fields) = ProducerFields::of(batch) {
                    let stored = Appended {
                        base_offset: header.base_offset,
                        next_offset: header.next_offset(),
                    };
                    table.record(fields, Landing::Stored(stored));
                }
            }
            offset = next.max(offset + 1);
        }
        Ok((table, offset.max(log.next_offset())))
    }
}
