//! The duplicate window of one queue: per idempotent producer, its numbering epoch, the last
//! sequence stored and where its last few batches landed (`docs/ARCHITECTURE.md` §13.1).
//!
//! Pure bookkeeping, no IO: the queue asks [`Table::check`] about a batch, appends it if told
//! to, and [`Table::record`]s where it landed (or will land: a pending entry, so that a copy of
//! the batch arriving while the first is still being made durable waits for it instead of being
//! stored again). Rebuilding after a restart or a failover is [`Table::record`] over the
//! batches of the log's tail, in log order.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use protocol::codes::Status;
use protocol::record::ProducerFields;

use crate::log::Appended;
use crate::notify::Notify;

/// Bounds of one queue's window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WindowLimits {
    /// Batches remembered per producer (with their offsets), the newest.
    pub batches: usize,
    /// Producers remembered; the least recently used one is forgotten for a new one.
    pub producers: usize,
}

/// An append whose outcome is not known yet: copies of its batch wait here.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// `Some(Some(a))` once stored at `a`; `Some(None)` once the append failed.
    outcome: Cell<Option<Option<Appended>>>,
    resolved: Notify,
}

impl Pending {
    /// Settles the append: `Some` where it landed, `None` when it failed.
    pub fn resolve(&self, outcome: Option<Appended>) {
        self.outcome.set(Some(outcome));
        self.resolved.notify();
    }

    /// Waits for the append's outcome: where it landed, `None` when it failed.
    pub async fn outcome(&self) -> Option<Appended> {
        loop {
            let seen = self.resolved.generation();
            if let Some(outcome) = self.outcome.get() {
                return outcome;
            }
            self.resolved.wait(seen).await;
        }
    }
}

/// Where a remembered batch is: stored at known offsets, or still being appended.
#[derive(Clone, Debug)]
pub(crate) enum Landing {
    Stored(Appended),
    Pending(Rc<Pending>),
}

/// What to do with a batch of an idempotent producer.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// The next batch of its producer (or the first this queue knows of): append it.
    Append,
    /// A copy of a remembered batch: answer with the original's landing, store nothing.
    Duplicate(Landing),
    /// Not stored, for the reason given.
    Refuse(Status, String),
}

#[derive(Debug)]
struct Entry {
    epoch: u32,
    sequence: u32,
    landing: Landing,
}

#[derive(Debug)]
struct Producer {
    epoch: u32,
    /// The last sequence stored (or being stored) in `epoch`.
    last: u32,
    /// The newest batches, oldest first, at most `WindowLimits::batches`.
    entries: VecDeque<Entry>,
    /// The table's clock when the producer was last seen, for eviction.
    used: u64,
}

/// The window of one queue.
#[derive(Debug)]
pub(crate) struct Table {
    producers: HashMap<u64, Producer>,
    limits: WindowLimits,
    clock: u64,
    /// Producers forgotten to make room, for metrics and tests.
    evicted: u64,
}

impl Table {
    /// An empty window.
    pub fn new(limits: WindowLimits) -> Self {
        Self {
            producers: HashMap::new(),
            limits: WindowLimits {
                batches: limits.batches.max(1),
                producers: limits.producers.max(1),
            },
            clock: 0,
            evicted: 0,
        }
    }

    /// Judges a batch of producer `fields.producer_id` against what it stored last.
    pub fn check(&self, fields: ProducerFields) -> Verdict {
        let Some(producer) = self.producers.get(&fields.producer_id) else {
            // New here, forgotten to make room, or last seen before the rebuilt tail: only
            // the start of an epoch is taken. A later sequence may follow a batch that never
            // arrived (retries of a broker restart arrive in any order), so it is refused and
            // the producer renumbers in a new epoch.
            return if fields.sequence == 0 {
                Verdict::Append
            } else {
                Verdict::Refuse(
                    Status::OutOfOrderSequence,
                    format!(
                        "producer {} is not known to this queue (new, forgotten or last seen \
                         before the tail the window was rebuilt from): its numbering must \
                         start at sequence 0, this batch has {}: not stored",
                        fields.producer_id, fields.sequence
                    ),
                )
            };
        };
        if let Some(entry) = producer
            .entries
            .iter()
            .find(|e| e.epoch == fields.epoch && e.sequence == fields.sequence)
        {
            return Verdict::Duplicate(entry.landing.clone());
        }
        let id = fields.producer_id;
        let (epoch, sequence) = (fields.epoch, fields.sequence);
        if epoch > producer.epoch {
            return if sequence == 0 {
                Verdict::Append
            } else {
                Verdict::Refuse(
                    Status::OutOfOrderSequence,
                    format!(
                        "producer {id}: epoch {epoch} starts at sequence 0, this batch has {sequence}"
                    ),
                )
            };
        }
        if epoch < producer.epoch {
            return Verdict::Refuse(
                Status::OutOfOrderSequence,
                format!(
                    "producer {id}: epoch {epoch} is older than the queue's {} for it and the \
                     batch is not among its last {}: not stored",
                    producer.epoch, self.limits.batches
                ),
            );
        }
        if sequence == producer.last.wrapping_add(1) {
            Verdict::Append
        } else if sequence <= producer.last {
            Verdict::Refuse(
                Status::DuplicateSequence,
                format!(
                    "producer {id}: sequence {sequence} of epoch {epoch} was stored earlier (the \
                     last is {}), past the window of its last {} batches: not stored again, \
                     its offsets are no longer known",
                    producer.last, self.limits.batches
                ),
            )
        } else {
            Verdict::Refuse(
                Status::OutOfOrderSequence,
                format!(
                    "producer {id}: sequence {sequence} of epoch {epoch} does not follow the last \
                     stored, {}: not stored",
                    producer.last
                ),
            )
        }
    }

    /// Remembers a batch that is appended (or being appended) at `landing`; the newest of its
    /// producer from now on. Forgets the least recently used producer when the table is full.
    pub fn record(&mut self, fields: ProducerFields, landing: Landing) {
        self.clock += 1;
        let clock = self.clock;
        if !self.producers.contains_key(&fields.producer_id)
            && self.producers.len() >= self.limits.producers
        {
            let oldest = self
                .producers
                .iter()
                .min_by_key(|(_, p)| p.used)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.producers.remove(&oldest);
                self.evicted += 1;
            }
        }
        let producer = self
            .producers
            .entry(fields.producer_id)
            .or_insert_with(|| Producer {
                epoch: fields.epoch,
                last: fields.sequence,
                entries: VecDeque::new(),
                used: clock,
            });
        producer.epoch = fields.epoch;
        producer.last = fields.sequence;
        producer.used = clock;
        if producer.entries.len() >= self.limits.batches {
            producer.entries.pop_front();
        }
        producer.entries.push_back(Entry {
            epoch: fields.epoch,
            sequence: fields.sequence,
            landing,
        });
    }

    /// Producers remembered.
    #[cfg(test)]
    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }

    /// Producers forgotten to make room since the table was built.
    #[cfg(test)]
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(producer_id: u64, epoch: u32, sequence: u32) -> ProducerFields {
        ProducerFields {
            producer_id,
            epoch,
            sequence,
        }
    }

    fn at(base_offset: u64) -> Landing {
        Landing::Stored(Appended {
            base_offset,
            next_offset: base_offset + 1,
        })
    }

    fn table() -> Table {
        Table::new(WindowLimits {
            batches: 3,
            producers: 2,
        })
    }

    fn refused(verdict: Verdict) -> Status {
        match verdict {
            Verdict::Refuse(status, _) => status,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_copy_of_a_remembered_batch_is_answered_with_its_offsets() {
        let mut t = table();
        for seq in 0..5 {
            assert!(matches!(t.check(fields(7, 0, seq)), Verdict::Append));
            t.record(fields(7, 0, seq), at(u64::from(seq) * 10));
        }
        match t.check(fields(7, 0, 3)) {
            Verdict::Duplicate(Landing::Stored(a)) => assert_eq!(a.base_offset, 30),
            other => panic!("{other:?}"),
        }
        // Sequence 1 is past the window of three: stored, offsets unknown.
        assert_eq!(refused(t.check(fields(7, 0, 1))), Status::DuplicateSequence);
        // A gap is refused; the next one is taken.
        assert_eq!(
            refused(t.check(fields(7, 0, 6))),
            Status::OutOfOrderSequence
        );
        assert!(matches!(t.check(fields(7, 0, 5)), Verdict::Append));
    }

    #[test]
    fn a_new_epoch_starts_at_zero_and_older_epochs_are_refused_unless_remembered() {
        let mut t = table();
        t.record(fields(7, 0, 0), at(0));
        t.record(fields(7, 0, 1), at(1));
        assert_eq!(
            refused(t.check(fields(7, 1, 1))),
            Status::OutOfOrderSequence
        );
        assert!(matches!(t.check(fields(7, 1, 0)), Verdict::Append));
        t.record(fields(7, 1, 0), at(2));
        // A copy of epoch 0's last batch is still known; a batch of epoch 0 never stored is not.
        assert!(matches!(
            t.check(fields(7, 0, 1)),
            Verdict::Duplicate(Landing::Stored(_))
        ));
        assert_eq!(
            refused(t.check(fields(7, 0, 2))),
            Status::OutOfOrderSequence
        );
    }

    #[test]
    fn the_least_recently_used_producer_is_forgotten_for_a_new_one() {
        let mut t = table();
        t.record(fields(1, 0, 0), at(0));
        t.record(fields(2, 0, 0), at(1));
        t.record(fields(1, 0, 1), at(2));
        t.record(fields(3, 0, 0), at(3));
        assert_eq!((t.producer_count(), t.evicted()), (2, 1));
        // Producer 2 is unknown again: only the start of an epoch is taken.
        assert_eq!(
            refused(t.check(fields(2, 0, 9))),
            Status::OutOfOrderSequence
        );
        assert!(matches!(t.check(fields(2, 4, 0)), Verdict::Append));
        assert!(matches!(t.check(fields(1, 0, 1)), Verdict::Duplicate(_)));
    }

    #[test]
    fn a_pending_landing_is_waited_for() {
        let pending = Rc::new(Pending::default());
        let mut t = table();
        t.record(fields(1, 0, 0), Landing::Pending(pending.clone()));
        let Verdict::Duplicate(Landing::Pending(copy)) = t.check(fields(1, 0, 0)) else {
            panic!("not pending");
        };
        let stored = Appended {
            base_offset: 4,
            next_offset: 6,
        };
        pending.resolve(Some(stored));
        let outcome = futures_lite::future::block_on(copy.outcome());
        assert_eq!(outcome, Some(stored));
    }
}
