//! How far a consumer has come per (endpoint, queue): the next offset expected from pushes,
//! what was processed, what was committed; credit granted back as records are consumed, and
//! offset commits.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;

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

impl ConsumerInner {
    /// Records `delivery` as consumed: advances its queue's position and returns credit.
    pub(super) fn processed(&self, delivery: &Delivery) {
        self.processed_all(std::slice::from_ref(delivery));
    }

    /// Records `deliveries`, handled in order, as consumed: [`Self::processed`] for each, with
    /// one position update and one credit count per run of records of one queue and
    /// subscription (a push's batch is one run).
    pub(super) fn processed_all(&self, deliveries: &[Delivery]) {
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
    /// acks and returns the first failure; otherwise failures are logged.
    pub(super) fn commit(&self, wait: bool) -> Result<()> {
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
                let endpoint = endpoint.clone();
                session
                    .conn
                    .call_with(
                        Command::CommitOffset,
                        &[],
                        &body,
                        Box::new(move |r| {
                            if let Err(e) = r {
                                log::debug!("{endpoint}: commit of queue {queue_id} failed: {e}");
                            }
                        }),
                    )
                    .map(drop)
            };
            match result {
                Ok(()) => {
                    let mut positions = self
                        .positions
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    if let Some(p) = positions.get_mut(&(endpoint, queue_id)) {
                        p.committed = Some(p.committed.map_or(offset, |c| c.max(offset)));
                    }
                }
                Err(e) => {
                    log::debug!("commit of queue {queue_id} failed: {e}");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
