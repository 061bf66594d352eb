//! An owned queue: its log, and the wake-up of consumers tailing it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use bytes::BytesMut;

use crate::config::BrokerConfig;
use crate::error::Reject;
use crate::log::{Appended, FlushMode, Log, LogConfig, LogError};
use crate::notify::Notify;
use crate::producers::window::Landing;
use crate::producers::{Admission, Producers};
use crate::replica::role::Replication;
use protocol::codes::Status;
use protocol::control::{FlushMode as TopicFlushMode, TopicConfig};
use protocol::record::ProducerFields;

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
    /// The idempotent producers' duplicate window (ARCHITECTURE §13.1).
    producers: Producers,
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
            producers: Producers::new(&config.producers),
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
    ///
    /// A batch of an idempotent producer goes through the queue's duplicate window: a copy
    /// of a batch stored (or being stored) is answered with the original's offsets once they
    /// are durable, and stores nothing; a batch out of its producer's order is refused.
    pub async fn append(&self, batch: BytesMut) -> Result<Appended, Reject> {
        let bytes = batch.len() as u64;
        let appended = match ProducerFields::of(&batch) {
            None => self.append_plain(batch).await,
            Some(fields) => self.append_idempotent(batch, fields).await,
        };
        if let Ok(Stored::Appended(a)) = &appended {
            self.appended.notify();
            self.traffic
                .appended(a.next_offset.saturating_sub(a.base_offset), bytes);
        } else if appended.is_err() {
            // A failed append may still have woken nothing that waits for it.
            self.appended.notify();
        }
        appended.map(Stored::landing)
    }

    async fn append_plain(&self, batch: BytesMut) -> Result<Stored, Reject> {
        let appended = self
            .log
            .append_admitted(batch, |_, landing| {
                self.producers.on_plain_append(landing);
                Ok::<(), std::convert::Infallible>(())
            })
            .await;
        match appended {
            Ok(Ok(a)) => Ok(Stored::Appended(a)),
            Ok(Err((never, _))) => match never {},
            Err(e) => {
                self.producers.append_failed();
                Err(e.into())
            }
        }
    }

    async fn append_idempotent(
        &self,
        mut batch: BytesMut,
        fields: ProducerFields,
    ) -> Result<Stored, Reject> {
        // Each round awaits a rebuild or an append: the window goes stale only when the log
        // changed under it meanwhile, which a reopen or a follower's copy does, rarely.
        for _ in 0..STALE_ROUNDS_MAX {
            self.producers.ensure_built(&self.log).await?;
            let admitted = std::cell::Cell::new(None);
            let appended = self
                .log
                .append_admitted(batch, |_, landing| {
                    admitted.set(Some(self.producers.admit(fields, landing)?));
                    Ok(())
                })
                .await;
            let pending = admitted.take();
            match appended {
                Ok(Ok(a)) => {
                    if let Some(pending) = pending {
                        pending.resolve(Some(a));
                    }
                    return Ok(Stored::Appended(a));
                }
                Err(e) => {
                    if let Some(pending) = pending {
                        pending.resolve(None);
                        self.producers.append_failed();
                        return Err(e.into());
                    }
                    // Refused before the window judged it (a poisoned log): nothing changed.
                    // A batch the log does not hold is then known not stored, and its producer
                    // may send it elsewhere; one it holds stays in doubt.
                    let absent = matches!(e, LogError::Poisoned { .. })
                        && self.producers.would_append(fields, self.log.next_offset());
                    if absent {
                        return Err(Reject::new(
                            Status::OutOfOrderSequence,
                            format!(
                                "queue {} of {} cannot store now ({e}) and does not hold this \
                                 batch: not stored",
                                self.id, self.topic
                            ),
                        ));
                    }
                    return Err(e.into());
                }
                Ok(Err((Admission::Stale, returned))) => batch = returned,
                Ok(Err((Admission::Refuse(status, reason), _))) => {
                    return Err(Reject::new(
                        status,
                        format!("queue {} of {}: {reason}", self.id, self.topic),
                    ));
                }
                Ok(Err((Admission::Duplicate(landing), _))) => {
                    return self.original(landing).await.map(Stored::Duplicate);
                }
            }
        }
        Err(Reject::new(
            Status::StorageError,
            format!(
                "queue {} of {}: the log kept changing while its producer window was rebuilt; \
                 the batch was not stored, retry",
                self.id, self.topic
            ),
        ))
    }

    /// Where the original of a duplicate landed, once durable as an append would be.
    async fn original(&self, landing: Landing) -> Result<Appended, Reject> {
        let stored = match landing {
            Landing::Stored(a) => Some(a),
            Landing::Pending(pending) => pending.outcome().await,
        };
        let Some(stored) = stored else {
            return Err(Reject::new(
                Status::StorageError,
                format!(
                    "queue {} of {}: the first copy of this batch failed to store and may or \
                     may not have reached the disk; retry it unchanged",
                    self.id, self.topic
                ),
            ));
        };
        self.log.wait_durable(stored.next_offset).await?;
        Ok(stored)
    }
}

/// Rebuilds of a stale window one append tries before it gives up.
const STALE_ROUNDS_MAX: usize = 8;

/// What an append did: stored the batch, or found it stored already.
enum Stored {
    Appended(Appended),
    Duplicate(Appended),
}

impl Stored {
    fn landing(self) -> Appended {
        match self {
            Stored::Appended(a) | Stored::Duplicate(a) => a,
        }
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
