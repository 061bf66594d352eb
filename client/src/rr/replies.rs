//! The replies this client's requesters wait for: a registry of callbacks by correlation id,
//! completed by the reply pushes that reader threads hand over ([`ReplySink`]), by the
//! timer at a request's deadline, or with the error that ended a send.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use protocol::frame::FrameBytes;
use protocol::record::MessageType;

use crate::client::ClientInner;
use crate::config::PENDING_REPLIES_MAX;
use crate::error::{ClientError, Result};
use crate::message::{ReceivedMessage, Reply};
use crate::net::{ReplySink, pushed_batch};

/// Called with a reply, or with the error that ended the wait.
pub(crate) type ReplyCallback = Box<dyn FnOnce(Result<Reply>) + Send>;

/// Replies awaited by this client's requesters, by correlation id.
#[derive(Default)]
pub(crate) struct ReplyRegistry {
    waiting: Mutex<HashMap<u64, ReplyCallback>>,
    next: AtomicU64,
    /// Transaction check-back handlers by producer group (`TransactionalProducer`): the
    /// other client-wide push a broker sends.
    checks: Mutex<HashMap<String, crate::producer::CheckHandler>>,
}

impl ReplyRegistry {
    /// Routes the check-backs of `group` to `handler` from now on.
    pub(crate) fn set_check_handler(&self, group: &str, handler: crate::producer::CheckHandler) {
        let mut checks = self.checks.lock().unwrap_or_else(PoisonError::into_inner);
        checks.insert(group.to_owned(), handler);
    }

    /// Registers a wait and returns its correlation id.
    pub(crate) fn register(&self, callback: ReplyCallback) -> Result<u64> {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if waiting.len() >= PENDING_REPLIES_MAX {
            return Err(ClientError::InvalidArgument(format!(
                "more than {PENDING_REPLIES_MAX} requests awaiting replies"
            )));
        }
        waiting.insert(id, callback);
        Ok(id)
    }

    /// Ends the wait for `id` with `result`; false when it already ended.
    pub(crate) fn complete(&self, id: u64, result: Result<Reply>) -> bool {
        let callback = self
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        match callback {
            Some(callback) => {
                callback(result);
                true
            }
            None => false,
        }
    }

    /// Requests still awaiting replies.
    pub(crate) fn len(&self) -> usize {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Ends every wait with [`ClientError::Closed`] (the client closed).
    pub(crate) fn fail_all(&self) {
        let waiting =
            std::mem::take(&mut *self.waiting.lock().unwrap_or_else(PoisonError::into_inner));
        for (_, callback) in waiting {
            callback(Err(ClientError::Closed));
        }
    }
}

/// The correlation id of request `id` as it travels: 16 lowercase hex digits, readable in
/// logs and by clients in any language.
pub(super) fn encode_correlation(id: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    let hex = format!("{id:016x}");
    out.copy_from_slice(hex.as_bytes());
    out
}

/// The id in a correlation id this client produced; `None` for anyone else's.
fn decode_correlation(bytes: &[u8]) -> Option<u64> {
    if bytes.len() != 16 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(bytes).ok()?, 16).ok()
}

impl ReplySink for ReplyRegistry {
    fn on_transaction_check(&self, endpoint: &str, frame: FrameBytes) {
        let Ok(check) =
            protocol::control::decode::<protocol::control::TransactionCheck>(&frame.body)
        else {
            log::warn!("{endpoint}: malformed transaction check dropped");
            return;
        };
        let handler = self
            .checks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&check.producer_group)
            .cloned();
        match handler {
            Some(handler) => handler(endpoint, check),
            None => log::debug!(
                "{endpoint}: check for producer group {} we do not answer for",
                check.producer_group
            ),
        }
    }

    fn on_reply_push(&self, endpoint: &str, frame: FrameBytes) {
        let Ok((address, batch)) = pushed_batch(endpoint, &frame)
            .map_err(|e| log::error!("reply push dropped, its requests will time out: {e}"))
        else {
            return;
        };
        for record in batch.records() {
            if record.message_type() != MessageType::Reply {
                continue;
            }
            let Some(id) = record.correlation_id().and_then(decode_correlation) else {
                log::debug!("{endpoint}: reply without our correlation id dropped");
                continue;
            };
            let reply =
                ReceivedMessage::from_record(&record, address.topic, address.queue_id, endpoint);
            if !self.complete(id, Ok(reply)) {
                log::debug!("{endpoint}: late reply {id} dropped (timed out or answered)");
            }
        }
    }
}

/// Waits for `deadline` on the timer, then ends the reply wait `id` with a timeout.
pub(super) fn schedule_reply_timeout(
    client: &ClientInner,
    id: u64,
    deadline: Instant,
    timeout: Duration,
) {
    let replies = Arc::downgrade(&client.replies);
    client.timer.schedule(
        deadline,
        Box::new(move || {
            if let Some(replies) = replies.upgrade() {
                replies.complete(id, Err(ClientError::Timeout { after: timeout }));
            }
        }),
    );
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    #[test]
    fn correlation_ids_round_trip_and_reject_foreign_ones() {
        for id in [0, 1, 0xdead_beef, u64::MAX] {
            assert_eq!(decode_correlation(&encode_correlation(id)), Some(id));
        }
        assert_eq!(decode_correlation(b"not-ours"), None);
        assert_eq!(decode_correlation(b"zzzzzzzzzzzzzzzz"), None);
    }

    #[test]
    fn the_registry_completes_each_wait_once() {
        let registry = ReplyRegistry::default();
        let (tx, rx) = mpsc::channel();
        let ids: Vec<u64> = (0..3)
            .map(|i| {
                let tx = tx.clone();
                registry
                    .register(Box::new(move |r| tx.send((i, r.is_ok())).unwrap()))
                    .unwrap()
            })
            .collect();
        assert_eq!(registry.len(), 3);
        assert!(registry.complete(ids[1], Err(ClientError::Closed)));
        assert!(!registry.complete(ids[1], Err(ClientError::Closed)));
        assert_eq!(rx.try_recv().unwrap(), (1, false));
        registry.fail_all();
        assert_eq!(registry.len(), 0);
        let mut rest: Vec<_> = rx.try_iter().map(|(i, _)| i).collect();
        rest.sort();
        assert_eq!(rest, [0, 2]);
    }
}
