//! Records on their way to the application: pushes checked and deduplicated on the reader
//! thread, then handed to the inline handler, or through a channel to `recv` or to the
//! handler thread.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use protocol::codes::Status;
use protocol::frame::FrameBytes;
use protocol::record::MessageType;

use super::ConsumerInner;
use crate::error::{ClientError, Result};
use crate::message::ReceivedMessage;
use crate::net::{Connection, pushed_batch};

/// A pushed record on its way to the application, with the connection it came on.
pub(crate) struct Delivery {
    pub(crate) message: ReceivedMessage,
    pub(crate) conn: Arc<Connection>,
    pub(crate) subscription_id: u64,
}

/// A handler run on the reader thread of the connection each push arrives on, one call at a
/// time: no handoff to a handler thread (see [`Consumer::start_inline_deliveries`]).
pub(super) type InlineHandler = Mutex<Box<dyn FnMut(&Delivery) + Send>>;

/// The receiving end of the delivery channel, with what is left of the last batch taken
/// one record at a time (by `recv`).
pub(super) struct Received {
    batches: Receiver<Vec<Delivery>>,
    backlog: VecDeque<Delivery>,
}

impl Received {
    pub(super) fn new(batches: Receiver<Vec<Delivery>>) -> Self {
        Self {
            batches,
            backlog: VecDeque::new(),
        }
    }
}

impl ConsumerInner {
    /// Starts the thread that calls `handler` for each delivery, in order; a delivery counts
    /// as consumed once the handler returns true (false: the consumer closed before it was
    /// done, so it is neither consumed nor committed). Positions and credit are updated once
    /// per batch, after its last handled record.
    pub(super) fn spawn_handler_thread(
        inner: &Arc<Self>,
        mut handler: impl FnMut(&Delivery) -> bool + Send + 'static,
    ) -> Result<JoinHandle<()>> {
        let inner = inner.clone();
        std::thread::Builder::new()
            .name(format!("defibus-consume-{}", inner.options.topic))
            .spawn(move || {
                while let Some(batch) = inner.next_batch(None) {
                    let mut handled = 0;
                    for delivery in &batch {
                        // Nothing is handled once the consumer is closed.
                        if inner.closed.load(Ordering::Acquire) || !handler(delivery) {
                            break;
                        }
                        handled += 1;
                    }
                    inner.processed_all(&batch[..handled]);
                }
            })
            .map_err(|source| ClientError::Io {
                endpoint: "(local)".into(),
                source,
            })
    }

    /// The next delivery; `None` on timeout, on a wake-up for a fault, or once closed.
    /// `timeout: None` waits until one of those, checking for close every 100 ms.
    pub(super) fn next_delivery(&self, timeout: Option<Duration>) -> Option<Delivery> {
        let mut received = self.received.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(delivery) = received.backlog.pop_front() {
            return Some(delivery);
        }
        let mut batch = self.next_batch_locked(&mut received, timeout)?.into_iter();
        let first = batch.next();
        received.backlog.extend(batch);
        first
    }

    /// The next batch of deliveries (what is left of a batch `recv` began, else the next
    /// push's; empty for a wake-up); `None` on timeout or once closed.
    fn next_batch(&self, timeout: Option<Duration>) -> Option<Vec<Delivery>> {
        let mut received = self.received.lock().unwrap_or_else(PoisonError::into_inner);
        if !received.backlog.is_empty() {
            return Some(received.backlog.drain(..).collect());
        }
        self.next_batch_locked(&mut received, timeout)
    }

    fn next_batch_locked(
        &self,
        received: &mut Received,
        timeout: Option<Duration>,
    ) -> Option<Vec<Delivery>> {
        let slice = Duration::from_millis(100);
        let deadline = timeout.map(|t| Instant::now() + t);
        // A batch that comes promptly is taken without parking, where cores are to spare.
        let mut spun = None;
        crate::spin::spin_until(deadline.unwrap_or(Instant::now() + slice), || {
            // An empty batch is a wake-up (a fault to report): returned like a batch.
            spun = received.batches.try_recv().ok();
            spun.is_some() || self.closed.load(Ordering::Acquire)
        });
        if let Some(batch) = spun {
            return Some(batch);
        }
        loop {
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            let wait = match deadline {
                Some(deadline) => deadline
                    .saturating_duration_since(Instant::now())
                    .min(slice),
                None => slice,
            };
            match received.batches.recv_timeout(wait) {
                Ok(batch) => return Some(batch),
                Err(RecvTimeoutError::Timeout) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return None;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Handles one pushed batch (on a reader thread): skips what was already received, hands
    /// the rest on (to the inline handler, else to the delivery channel), and counts the
    /// skipped records as consumed.
    pub(super) fn on_push(
        &self,
        conn: &Arc<Connection>,
        endpoint: &str,
        subscription_id: u64,
        frame: &FrameBytes,
    ) {
        let (address, batch) = match pushed_batch(endpoint, frame) {
            Ok(pushed) => pushed,
            Err(e) => {
                // Its records are not delivered: say so, never just drop them.
                self.fault(
                    Status::ChecksumMismatch,
                    format!("a push failed its checks and was not delivered: {e}"),
                );
                return;
            }
        };
        let mut fresh = Vec::with_capacity(batch.record_count() as usize);
        let mut skipped = 0u32;
        let mut expired = 0u64;
        let now_ms = crate::message::now_ms();
        {
            let mut positions = self
                .positions
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let position = positions
                .entry((endpoint.to_owned(), address.queue_id))
                .or_default();
            for record in batch.records() {
                if record.offset() < position.expected {
                    skipped += 1;
                    continue;
                }
                position.expected = record.offset() + 1;
                // An event past its time-to-live in a batch the broker pushed for its live
                // records: dropped here, never delivered (ARCHITECTURE §13.5).
                if record.message_type() == MessageType::Event
                    && record.deadline_ms().is_some_and(|d| d <= now_ms)
                {
                    skipped += 1;
                    expired += 1;
                    continue;
                }
                fresh.push(ReceivedMessage::from_record(
                    &record,
                    address.topic,
                    address.queue_id,
                    endpoint,
                ));
            }
        }
        if expired > 0 {
            self.expired.fetch_add(expired, Ordering::AcqRel);
            log::debug!(
                "{endpoint}: dropped {expired} events of queue {} past their time-to-live",
                address.queue_id
            );
        }
        if skipped > 0 {
            log::debug!(
                "{endpoint}: skipped {skipped} already received records of queue {}",
                address.queue_id
            );
            self.consumed(endpoint, subscription_id, skipped);
        }
        if let Some(handler) = &self.inline {
            let mut handler = handler.lock().unwrap_or_else(PoisonError::into_inner);
            for message in fresh {
                // Checked under the lock that close takes: nothing is handled after it.
                if self.closed.load(Ordering::Acquire) {
                    return;
                }
                let delivery = Delivery {
                    message,
                    conn: conn.clone(),
                    subscription_id,
                };
                handler(&delivery);
                self.processed(&delivery);
            }
            return;
        }
        let deliveries = self
            .deliveries
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(deliveries) = deliveries.as_ref() {
            if fresh.is_empty() {
                return;
            }
            let batch = fresh
                .into_iter()
                .map(|message| Delivery {
                    message,
                    conn: conn.clone(),
                    subscription_id,
                })
                .collect();
            let _ = deliveries.send(batch);
        }
    }
}
