//! An owned queue: its log, and the wake-up of consumers tailing it.

use std::cell::Cell;
use std::rc::Rc;

use bytes::BytesMut;

use crate::config::BrokerConfig;
use crate::log::{Appended, FlushMode, Log, LogConfig, LogError};
use crate::notify::Notify;
use protocol::control::{FlushMode as TopicFlushMode, TopicConfig};

/// One queue of a topic, owned by this shard.
pub(crate) struct Queue {
    /// The topic name, shared with every push of this queue.
    pub topic: Rc<str>,
    /// The queue id within the topic.
    pub id: u32,
    /// The queue's durable log.
    pub log: Log,
    /// Notified after every append, so tailing push tasks read again.
    pub appended: Notify,
    /// Request records skipped at push time because their deadline had passed.
    pub expired_requests: Cell<u64>,
    /// Whether the depth warning was logged since the queue last fell below its threshold.
    pub depth_warned: Cell<bool>,
    /// Sync-flush topic: consumers are pushed only what is durable.
    sync: bool,
}

impl Queue {
    /// Opens (recovering) the queue's log under `<data>/queues/<topic>/<id>/`.
    pub async fn open(
        config: &BrokerConfig,
        topic: &TopicConfig,
        topic_name: Rc<str>,
        id: u32,
    ) -> Result<Self, LogError> {
        let log_config = log_config(config, topic, id);
        let log = Log::open(log_config).await?;
        Ok(Self {
            topic: topic_name,
            id,
            log,
            appended: Notify::new(),
            expired_requests: Cell::new(0),
            depth_warned: Cell::new(false),
            sync: topic.flush_mode == TopicFlushMode::Sync,
        })
    }

    /// Records below this offset may be pushed to consumers: in a sync topic only what an
    /// fdatasync covered (a concurrent append may sit in the tail cache, not yet durable), so
    /// a consumer never acts on a record that a crash could take back; in an async topic,
    /// everything appended.
    pub fn pushable_end(&self) -> u64 {
        if self.sync {
            self.log.synced_offset()
        } else {
            self.log.next_offset()
        }
    }

    /// Appends one batch (stamping it) and wakes tailing readers once the append resolved,
    /// which in sync mode means once it is durable: consumers never see what a crash may lose.
    pub async fn append(&self, batch: BytesMut) -> Result<Appended, LogError> {
        let appended = self.log.append(batch).await;
        self.appended.notify();
        appended
    }
}

/// The log configuration of one queue: the broker's storage settings and the topic's
/// durability and retention.
fn log_config(config: &BrokerConfig, topic: &TopicConfig, id: u32) -> LogConfig {
    let mut log = LogConfig::new(crate::topic::queue_dir(&config.data_dir, &topic.topic, id));
    log.segment_bytes_max = config.storage.segment_bytes_max;
    log.tail_cache_bytes = config.storage.tail_cache_bytes;
    log.batch_len_max = config.limits.batch_len_max;
    // A full disk poisons the log; it heals by a reopen once space returns (ARCHITECTURE §3.6).
    log.reopen_after_poison_ms = Some(config.storage.reopen_after_poison_ms);
    log.retention_bytes_max = topic.retention_bytes;
    log.retention_age_ms = topic.retention_age_ms;
    log.flush = match topic.flush_mode {
        TopicFlushMode::Sync => FlushMode::Sync,
        TopicFlushMode::Async => FlushMode::Async {
            interval_ms: config.storage.flush_interval_ms,
            bytes: config.storage.flush_bytes,
        },
    };
    log
}
