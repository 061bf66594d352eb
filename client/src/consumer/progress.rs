//! How far a consumer has come per (endpoint, queue): the next offset expected from pushes,
//! what was processed, what was committed; credit granted back as records are consumed, and
//! offset commits.
//!
//! A position counts as committed only once its broker acknowledged the commit, so a commit
//! that failed (a broker whose offset journal cannot write, a lost connection) is sent again
//! by the next auto commit and by close, whose result says whether everything consumed was
//! committed in the end. Each run of failures of a queue is logged once at ERROR and counted
//! ([`CommitFailures`], `Consumer::commit_failures`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use protocol::codes::Command;
use protocol::control::{self, CommitOffset, Credit};

use super::ConsumerInner;
use super::delivery::Delivery;
use crate::error::{ClientError, Result};

/// Per (endpoint, queue): how far pushes, processing and commits have come.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Position {
    /// The next offset expected from pushes; records below it are skipped.
    pub(super) expected: u64,
    /// One past the last processed record.
    pub(super) processed: Option<u64>,
    /// The last offset committed.
    pub(super) committed: Option<u64>,
}

/// Failed offset commits of one consumer, for the application to see.
#[derive(Debug, Default)]
pub(super) struct CommitFailures {
    /// Commits that failed since the consumer started.
    count: AtomicU64,
    /// The (endpoint, queue) pairs whose last commit failed: each run of failures of a queue
    /// is logged once, so a queue that keeps failing does not flood the log, nor hide behind
    /// another queue that succeeds.
    failing: Mutex<HashSet<(String, u32)>>,
}

impl CommitFailures {
    /// Commits that failed so far.
    pub(super) fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    fn failing(&self) -> MutexGuard<'_, HashSet<(String, u32)>> {
        self.failing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn failed(&self, topic: &str, endpoint: &str, queue_id: u32, error: &ClientError) {
        self.count.fetch_add(1, Ordering::AcqRel);
        if !self.failing().insert((endpoint.to_owned(), queue_id)) {
            log::debug!("{topic}: commit of queue {queue_id} on {endpoint} failed again: {error}");
        } else {
            log::error!(
                "{topic}: offset commit of queue {queue_id} on {endpoint} failed: {error}; \
                 commits are retried, and what was consumed since the last commit is \
                 delivered again if the consumer stops before one succeeds"
            );
        }
    }

    fn succeeded(&self, topic: &str, endpoint: &str, queue_id: u32) {
        if self.failing().remove(&(endpoint.to_owned(), queue_id)) {
            log::info!("{topic}: offset commits of queue {queue_id} on {endpoint} succeed again");
        }
    }
}

impl ConsumerInner {
    /// Records `delivery` as consumed: advances its queue's position and returns credit.
    pub(super) fn processed(&self, delivery: &Delivery) {
        self.processed_all(std::slice::from_ref(delivery));
    }

    /// Records `deliveries`, handled in order, as consumed: [`Self::processed`] for each, with
    /// one position update and one credit count per run of records of one queue and
    /// subscription (a push's batch is one run).
    pub(super) fn processed_all(&self, deliveries: &[Delivery]) {
        // Deliveries of the retry topic share the channel; their positions are its
        // consumer's. A push's batch is of one topic, so they come in runs.
        if let Some(retry) = &self.retry {
            let mut rest = deliveries;
            while let Some(first) = rest.first() {
                let ours = first.message.topic == self.options.topic;
                let len = rest
                    .iter()
                    .take_while(|d| (d.message.topic == self.options.topic) == ours)
                    .count();
                let (run, tail) = rest.split_at(len);
                if ours {
                    self.processed_own(run);
                } else {
                    retry.processed_own(run);
                }
                rest = tail;
            }
            return;
        }
        self.processed_own(deliveries);
    }

    /// [`Self::processed_all`] for deliveries of this consumer's own topic.
    fn processed_own(&self, deliveries: &[Delivery]) {
        let mut runs: Vec<(&str, u64, u32)> = Vec::new();
        {
            let mut positions = self
                .positions
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let mut rest = deliveries;
            while let Some(first) = rest.first() {
                let key = (&first.message.endpoint, first.message.queue_id);
                let len = rest
                    .iter()
                    .take_while(|d| {
                        (&d.message.endpoint, d.message.queue_id) == key
                            && d.subscription_id == first.subscription_id
                    })
                    .count();
                let (run, tail) = rest.split_at(len);
                let next = run.iter().map(|d| d.message.offset + 1).max();
                let position = positions
                    .entry((first.message.endpoint.clone(), first.message.queue_id))
                    .or_default();
                if position.processed < next {
                    position.processed = next;
                }
                runs.push((&first.message.endpoint, first.subscription_id, len as u32));
                rest = tail;
            }
        }
        for (endpoint, subscription_id, count) in runs {
            self.consumed(endpoint, subscription_id, count);
        }
    }

    /// Counts `count` records as consumed on a subscription and grants credit back once half
    /// the window is used.
    pub(super) fn consumed(&self, endpoint: &str, subscription_id: u64, count: u32) {
        let session = self
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(endpoint)
            .cloned();
        let Some(session) = session.filter(|s| s.subscription_id == subscription_id) else {
            return; // A subscription since replaced: its credit died with it.
        };
        let half = self.client.config.credit_window / 2;
        let total = session.consumed.fetch_add(count, Ordering::AcqRel) + count;
        if total >= half {
            let granted = session.consumed.swap(0, Ordering::AcqRel);
            if granted == 0 {
                return;
            }
            let credit = Credit {
                subscription_id,
                messages: granted,
            };
            let sent = control::encode(&credit)
                .map_err(|e| ClientError::control(endpoint, e))
                .and_then(|body| session.conn.send_oneway(Command::Credit, &[], &body));
            if let Err(e) = sent {
                log::debug!("{endpoint}: credit not granted: {e}");
            }
        }
    }

    /// Commits every position processed past its last commit. With `wait`, waits for the
    /// acks and returns the first failure; otherwise failures are logged and counted as
    /// their answers come. Either way a position counts as committed only once acknowledged.
    pub(super) fn commit(self: &Arc<Self>, wait: bool) -> Result<()> {
        let due: Vec<((String, u32), u64)> = self
            .positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(|(key, p)| {
                let processed = p.processed?;
                (p.committed.is_none_or(|c| c < processed)).then(|| (key.clone(), processed))
            })
            .collect();
        let mut first_error = None;
        for ((endpoint, queue_id), offset) in due {
            let session = self
                .sessions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&endpoint)
                .cloned();
            let Some(session) = session.filter(|s| !s.conn.is_closed()) else {
                continue; // Committed after the resubscribe.
            };
            if self.client.stalled.is_isolated(&endpoint) {
                continue; // Nobody waits on a stalled broker; committed after it recovers.
            }
            let request = CommitOffset {
                subscription_id: session.subscription_id,
                queue_id,
                offset,
            };
            let body = match control::encode(&request) {
                Ok(body) => body,
                Err(e) => return Err(ClientError::control(&endpoint, e)),
            };
            let result = if wait {
                session
                    .conn
                    .call(
                        Command::CommitOffset,
                        &[],
                        &body,
                        self.client.config.request_timeout,
                    )
                    .map(drop)
            } else {
                let consumer = Arc::downgrade(self);
                let endpoint = endpoint.clone();
                let sent = session.conn.call_with(
                    Command::CommitOffset,
                    &[],
                    &body,
                    Box::new(move |answer| {
                        if let Some(consumer) = Weak::upgrade(&consumer) {
                            consumer.commit_answered(&endpoint, queue_id, offset, answer.map(drop));
                        }
                    }),
                );
                // Sent: the answer settles it. Not sent: it failed here and now (and the
                // callback was dropped uncalled).
                match sent {
                    Ok(_) => continue,
                    Err(e) => Err(e),
                }
            };
            if let Err(e) = &result {
                first_error.get_or_insert(e.duplicate());
            }
            self.commit_answered(&endpoint, queue_id, offset, result);
        }
        first_error.map_or(Ok(()), Err)
    }

    /// A broker answered (or a send failed) the commit of `offset` on `queue_id`.
    fn commit_answered(&self, endpoint: &str, queue_id: u32, offset: u64, answer: Result<()>) {
        let topic = &self.options.topic;
        match answer {
            Ok(()) => {
                self.commit_failures.succeeded(topic, endpoint, queue_id);
                let mut positions = self
                    .positions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if let Some(p) = positions.get_mut(&(endpoint.to_owned(), queue_id)) {
                    p.committed = Some(p.committed.map_or(offset, |c| c.max(offset)));
                }
            }
            Err(e) => self.commit_failures.failed(topic, endpoint, queue_id, &e),
        }
    }
}
