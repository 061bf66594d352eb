//! Committed consumer offsets of one shard: a journal on [`Log`] in sync mode.
//!
//! Each commit appends one record (key `topic \n group \n queue`, value the offset as `u64` LE)
//! and is acknowledged only once the append resolved, i.e. after an fdatasync covered it (group
//! commit batches concurrent commits into one fdatasync). At open the journal is replayed in
//! order; the last record of a key wins. Each shard has its own journal, so a failed write
//! poisons the commits of that shard only. The shard owning a queue owns its offsets, so no
//! offset is ever written by two shards.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

use bytes::BytesMut;
use protocol::record::{BatchBuilder, BatchView, MessageType, Record};

use crate::log::{FlushMode, Log, LogConfig, LogError};
use crate::notify::Notify;

/// Bytes read per replay step.
const REPLAY_READ_BYTES: usize = 1 << 20;

/// The committed offsets of every (topic, group, queue) this shard owns.
pub(crate) struct Offsets {
    journal: Log,
    committed: RefCell<HashMap<String, u64>>,
    /// Notified after every durable commit; handovers wait on it.
    pub changed: Notify,
}

fn key(topic: &str, group: &str, queue_id: u32) -> String {
    format!("{topic}\n{group}\n{queue_id}")
}

impl Offsets {
    /// Opens the journal in `dir` and replays it. A journal poisoned by a failed write (a
    /// full disk) is reopened by the first commit `reopen_after_poison_ms` after it; until
    /// then every commit fails, and the failure is answered to the consumer.
    pub async fn open(dir: &Path, reopen_after_poison_ms: u64) -> Result<Self, LogError> {
        let mut config = LogConfig::new(dir);
        config.reopen_after_poison_ms = Some(reopen_after_poison_ms);
        config.flush = FlushMode::Sync;
        config.segment_bytes_max = 64 << 20;
        config.tail_cache_bytes = 1 << 20;
        let journal = Log::open(config).await?;
        let mut committed = HashMap::new();
        let mut offset = journal.start_offset();
        while offset < journal.next_offset() {
            let batches = match journal.read(offset, REPLAY_READ_BYTES).await {
                Ok(batches) => batches,
                Err(LogError::Damaged { damage }) => {
                    // Commits past the damage are lost; the groups restart from older
                    // offsets (redelivery, at-least-once), which beats not starting at all.
                    ::log::error!(
                        "offset journal {}: replay stops at damage, commits from journal offset {} on are lost and their groups will see redeliveries: {damage}",
                        dir.display(),
                        damage.offset
                    );
                    break;
                }
                Err(e) => return Err(e),
            };
            if batches.is_empty() {
                break;
            }
            for batch in &batches {
                let view = BatchView::parse(batch, protocol::record::BATCH_LEN_MAX)
                    .map_err(|source| LogError::InvalidBatch { source })?;
                for record in view.records().filter(|r| r.offset() >= offset) {
                    if let (Ok(k), Ok(v)) = (
                        std::str::from_utf8(record.key()),
                        <[u8; 8]>::try_from(record.value()),
                    ) {
                        committed.insert(k.to_owned(), u64::from_le_bytes(v));
                    }
                }
                offset = view.next_offset();
            }
        }
        Ok(Self {
            journal,
            committed: RefCell::new(committed),
            changed: Notify::new(),
        })
    }

    /// The committed offset, if any.
    pub fn get(&self, topic: &str, group: &str, queue_id: u32) -> Option<u64> {
        self.committed
            .borrow()
            .get(&key(topic, group, queue_id))
            .copied()
    }

    /// Every group's committed offset in queue `queue_id` of `topic` (what a leader sends its
    /// followers). A scan of the shard's commits: it runs only when they changed since the
    /// follower last heard.
    pub fn for_queue(&self, topic: &str, queue_id: u32) -> Vec<(String, u64)> {
        let queue = queue_id.to_string();
        self.committed
            .borrow()
            .iter()
            .filter_map(|(key, &offset)| {
                let mut parts = key.splitn(3, '\n');
                let (t, group, q) = (parts.next()?, parts.next()?, parts.next()?);
                (t == topic && q == queue).then(|| (group.to_owned(), offset))
            })
            .collect()
    }

    /// The generation of the commits: it changes with every commit.
    pub fn generation(&self) -> u64 {
        self.changed.generation()
    }

    /// When group `group` first committed past `offset` of queue `queue_id`, looking at the
    /// commits stored from `since_ms` on (when the message was stored): each journal record is
    /// stamped with the time the broker appended it. See [`crate::trace`].
    pub async fn first_commit_past(
        &self,
        topic: &str,
        group: &str,
        queue_id: u32,
        offset: u64,
        since_ms: i64,
        budget: &crate::trace::scan::Budget,
    ) -> protocol::control::CommitTime {
        use crate::trace::scan::{self, Step};
        let key = key(topic, group, queue_id);
        let scanned = async {
            let from = scan::first_at_or_after(&self.journal, since_ms, budget).await?;
            scan::forward(&self.journal, from, budget, |view| {
                let passes = view.records().any(|record| {
                    record.key() == key.as_bytes()
                        && <[u8; 8]>::try_from(record.value())
                            .is_ok_and(|v| u64::from_le_bytes(v) > offset)
                });
                if passes {
                    Step::Found(view.header().append_time_ms)
                } else {
                    Step::Next
                }
            })
            .await
        };
        crate::trace::commit_time(scanned.await)
    }

    /// Records a commit; resolves once it is durable.
    pub async fn commit(
        &self,
        topic: &str,
        group: &str,
        queue_id: u32,
        offset: u64,
    ) -> Result<(), LogError> {
        let key = key(topic, group, queue_id);
        let mut builder = BatchBuilder::new(protocol::record::BATCH_LEN_MAX);
        let value = offset.to_le_bytes();
        builder
            .push(&Record {
                timestamp_ms: 0,
                message_type: MessageType::Event,
                key: key.as_bytes(),
                properties: &[],
                value: &value,
            })
            .map_err(|e| LogError::Config {
                reason: format!("offset record for {key:?}: {e}"),
            })?;
        let Some(batch) = builder.finish() else {
            return Ok(());
        };
        self.journal.append(BytesMut::from(&batch[..])).await?;
        self.committed.borrow_mut().insert(key, offset);
        self.changed.notify();
        Ok(())
    }

    /// Makes everything durable and stops the journal's flusher.
    pub async fn close(self) -> Result<(), LogError> {
        self.journal.close().await
    }
}
