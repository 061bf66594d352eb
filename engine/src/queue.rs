//! An owned queue: its log, and the wake-up of consumers tailing it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use bytes::BytesMut;

use crate::config::BrokerConfig;
use crate::log::{Appended, FlushMode, Log, LogConfig, LogError};
use crate::notify::Notify;
use crate::replica::role::Replication;
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
    /// Event records skipped at push time because their time-to-live had passed (§13.5).
    pub expired_events: Cell<u64>,
    /// Records and bytes in and out, for metrics.
    pub traffic: crate::metrics::Traffic,
    /// Request-reply latency and timeouts of the requests stored here, for metrics.
    pub requests: Rc<crate::metrics::RequestStats>,
    /// What each clustering group was pushed, to count redeliveries, for metrics.
    pub deliveries: crate::metrics::Deliveries,
    /// Whether the depth warning was logged since the queue last fell below its threshold.
    pub depth_warned: Cell<bool>,
    /// Sync-flush topic: consumers are pushed only what is durable.
    sync: bool,
    /// The queue's role, when its topic has more than one replica.
    replication: Option<Replication>,
    /// Its delayed and half messages, once its held log is open ([`crate::held`]).
    held: RefCell<Option<Rc<crate::held::Held>>>,
    /// Held by whoever opens the held log, so it opens once.
    pub held_opening: crate::rt::Semaphore,
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
        let last_epoch = log.epochs().latest().map_or(0, |e| e.epoch);
        Ok(Self {
            topic: topic_name,
            id,
            log,
            appended: Notify::new(),
            expired_requests: Cell::new(0),
            expired_events: Cell::new(0),
            traffic: Default::default(),
            requests: Default::default(),
            deliveries: Default::default(),
            depth_warned: Cell::new(false),
            sync: topic.flush_mode == TopicFlushMode::Sync,
            // A restarted replica knows the last epoch it took part in from its journal, so an
            // assignment for an older one is refused as stale.
            replication: (topic.replicas > 1).then(|| Replication::new(topic.acks, last_epoch)),
            held: RefCell::new(None),
            held_opening: crate::rt::Semaphore::new(1),
        })
    }

    /// The queue's held messages, if its held log is open.
    pub fn held(&self) -> Option<Rc<crate::held::Held>> {
        self.held.borrow().clone()
    }

    /// Keeps the opened held log.
    pub fn set_held(&self, held: Rc<crate::held::Held>) {
        *self.held.borrow_mut() = Some(held);
    }

    /// Stops the held messages' timer and closes the held log, before the queue closes.
    pub async fn close_held(&self) {
        let held = self.held.borrow_mut().take();
        if let Some(held) = held {
            if let Err(e) = held.close().await {
                log::error!("{}/{}: closing the held log: {e}", self.topic, self.id);
            }
        }
    }

    /// The replication state, when the topic has more than one replica.
    pub fn replication(&self) -> Option<&Replication> {
        self.replication.as_ref()
    }

    /// Offsets below this are durable here by the topic's flush mode: fdatasynced in a sync
    /// topic, buffered in an async one.
    pub fn durable_end(&self) -> u64 {
        if self.sync {
            self.log.synced_offset()
        } else {
            self.log.next_offset()
        }
    }

    /// The commit point as this broker knows it (0 for a queue with one replica).
    pub fn replication_committed(&self) -> u64 {
        self.replication.as_ref().map_or(0, Replication::committed)
    }

    /// The leader told this follower its commit point.
    pub fn learned_committed(&self, committed: u64) {
        if let Some(replication) = &self.replication {
            replication.learned_committed(committed);
        }
    }

    /// Ends the queue's replication role (a follower's task stops), before it closes.
    pub async fn stop_replication(&self) {
        if let Some(replication) = &self.replication {
            replication.close().await;
        }
    }

    /// Records below this offset may be pushed to consumers: in a sync topic only what an
    /// fdatasync covered (a concurrent append may sit in the tail cache, not yet durable), so
    /// a consumer never acts on a record that a crash could take back; in an async topic,
    /// everything appended.
    ///
    /// In a replicated topic, only what the commit point passed: a record above it may still
    /// be cut by a failover, and a consumer must never see a record that then disappears.
    pub fn pushable_end(&self) -> u64 {
        let local = self.durable_end();
        match &self.replication {
            Some(replication) => local.min(replication.committed()),
            None => local,
        }
    }

    /// Appends one batch (stamping it) and wakes tailing readers once the append resolved,
    /// which in sync mode means once it is durable: consumers never see what a crash may lose.
    pub async fn append(&self, batch: BytesMut) -> Result<Appended, LogError> {
        let bytes = batch.len() as u64;
        let appended = self.log.append(batch).await;
        self.appended.notify();
        if let Ok(a) = &appended {
            self.traffic
                .appended(a.next_offset.saturating_sub(a.base_offset), bytes);
        }
        appended
    }
}

/// The configuration of a queue's held log (`<queue dir>/held/`): the queue's storage and
/// flush mode, so a held produce is as durable as a plain one when acknowledged; no
/// retention (a held record stays until its outcome).
pub(crate) fn held_log_config(config: &BrokerConfig, topic: &TopicConfig, id: u32) -> LogConfig {
    let mut log = log_config(config, topic, id);
    log.dir = log.dir.join(crate::held::HELD_DIR);
    log.retention_bytes_max = None;
    log.retention_age_ms = None;
    log.offset_reservation = true;
    log.tail_cache_bytes = log.tail_cache_bytes.min(1 << 20);
    log
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
    // A replica's offsets are its leader's: a crash's unsynced tail is cut and fetched again,
    // never skipped (`LogConfig::offset_reservation`).
    log.offset_reservation = topic.replicas <= 1;
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
