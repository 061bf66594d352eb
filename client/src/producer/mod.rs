//! Producer: sync, async and oneway sends, with optional batching and retry on another queue.

mod batcher;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use protocol::codes::Command;
use protocol::control::{self, ProduceAck};
use protocol::data::BatchAddress;
use protocol::record::{BatchBuilder, MessageType};

use crate::client::{Client, ClientInner};
use crate::error::{ClientError, Result};
use crate::message::Message;
use crate::route::QueueTarget;
use crate::slot::{Waiter, slot};

use batcher::Batcher;

/// Where a sent message was stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendResult {
    /// The topic.
    pub topic: String,
    /// The broker that stored it.
    pub broker_id: String,
    /// The queue id on that broker.
    pub queue_id: u32,
    /// The message's offset in the queue.
    pub offset: u64,
}

/// How a producer picks a queue for a message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QueueSelector {
    /// Round robin over the writable queues (own area first).
    #[default]
    RoundRobin,
    /// Messages with a key go to the queue the key hashes to (FNV-1a), so equal keys stay in
    /// order; messages without one go round robin.
    KeyHash,
}

/// Sends messages. Cheap to clone; clones share the batcher and in-flight bound.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<ProducerInner>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("selector", &self.inner.selector)
            .finish()
    }
}

pub(crate) struct ProducerInner {
    client: Arc<ClientInner>,
    selector: QueueSelector,
    in_flight: Permits,
    batcher: Option<Batcher>,
}

/// Acknowledges one message with its own offset. Each holds an in-flight permit, returned
/// after it is called through [`ProducerInner::ack`] or [`ProducerInner::ack_all`].
pub(crate) type Acker = Box<dyn FnOnce(Result<SendResult>) + Send>;

/// A batch on its way: encoded once, re-sent unchanged on a retry.
pub(crate) struct SendJob {
    pub(crate) topic: String,
    pub(crate) bytes: Bytes,
    /// One per record, in record order.
    pub(crate) ackers: Vec<Acker>,
    /// Hash this key onto a queue, when selecting by key.
    pub(crate) key: Option<Vec<u8>>,
    /// Attempts made so far.
    pub(crate) attempt: u32,
    /// The broker that failed the last attempt.
    pub(crate) avoid_broker: Option<String>,
}

impl Producer {
    /// A producer with round-robin queue selection.
    pub fn new(client: &Client) -> Result<Self> {
        Self::with_selector(client, QueueSelector::RoundRobin)
    }

    /// A producer with the given queue selection.
    pub fn with_selector(client: &Client, selector: QueueSelector) -> Result<Self> {
        let config = &client.inner.config;
        let inner = Arc::new(ProducerInner {
            client: client.inner.clone(),
            selector,
            in_flight: Permits::new(config.in_flight_sends_max.max(1)),
            batcher: (!config.batch_linger.is_zero())
                .then(|| Batcher::start(config.batch_linger, config.batch_bytes_max, config.area)),
        });
        if let Some(batcher) = &inner.batcher {
            batcher.check_started()?;
        }
        Ok(Self { inner })
    }

    /// Sends `message` and waits for the broker's acknowledgement, retrying on another queue
    /// up to the configured retries.
    pub fn send(&self, message: Message) -> Result<SendResult> {
        let timeout = self.send_timeout();
        self.submit_to_slot(message).wait(timeout)
    }

    /// Sends `message` to service `service_id`, located through GSL: to its nearest
    /// deployment whose topic is routable and has a healthy writable queue, with the usual
    /// retries there; when that fails with a retryable error, to the next deployment. The
    /// message's own topic is replaced (build it with [`Message::for_service`]).
    pub fn send_to_service(&self, service_id: &str, message: Message) -> Result<SendResult> {
        let topics = self.inner.client.service_topics(service_id)?;
        let mut last_error = None;
        for topic in topics {
            match self.send(message.clone().with_topic(topic.as_str())) {
                Ok(sent) => return Ok(sent),
                Err(e) if e.is_retryable() => {
                    log::debug!(
                        "service {service_id}: send to {topic} failed ({e}); next deployment"
                    );
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error.expect("service_topics is never empty"))
    }

    /// Sends `message` and returns a future of its acknowledgement; works under any async
    /// runtime, or none. The future ends with [`ClientError::Timeout`] if no acknowledgement
    /// comes in time.
    pub fn send_async(&self, message: Message) -> SendFuture {
        let timeout = self.send_timeout();
        let waiter = self.submit_to_slot_with_timeout(message, timeout);
        SendFuture(waiter)
    }

    /// Sends `message` and calls `callback` with the outcome, on a client thread; the callback
    /// must not block for long.
    pub fn send_with_callback(
        &self,
        message: Message,
        callback: impl FnOnce(Result<SendResult>) + Send + 'static,
    ) {
        // The permit goes back once the callback ran (see `ProducerInner::ack`).
        self.inner.in_flight.acquire();
        ProducerInner::submit(&self.inner, message, Box::new(callback));
    }

    fn submit_to_slot(&self, message: Message) -> Waiter<SendResult> {
        let (completer, waiter) = slot();
        self.send_with_callback(message, move |result| {
            completer.complete(result);
        });
        waiter
    }

    fn submit_to_slot_with_timeout(
        &self,
        message: Message,
        timeout: Duration,
    ) -> Waiter<SendResult> {
        let (completer, waiter) = slot();
        let on_timeout = completer.clone();
        self.inner.client.timer.schedule(
            std::time::Instant::now() + timeout,
            Box::new(move || {
                on_timeout.complete(Err(ClientError::Timeout { after: timeout }));
            }),
        );
        self.send_with_callback(message, move |result| {
            completer.complete(result);
        });
        waiter
    }

    /// Sends `message` without waiting for, or asking for, an acknowledgement: the cheapest
    /// send, and the only one that can lose a message silently.
    pub fn send_oneway(&self, message: Message) -> Result<()> {
        let client = &self.inner.client;
        let mut builder = BatchBuilder::new(client.config.batch_bytes_max);
        message.append_to(&mut builder, MessageType::Event, client.config.area, &[])?;
        let bytes = builder
            .finish()
            .ok_or_else(|| ClientError::InvalidArgument("empty batch".into()))?;
        let route = client.route(message.topic())?;
        let key = self.key_of(&message);
        let target = route
            .choose(key, &client.config, &client.isolation, None)
            .ok_or_else(|| ClientError::NoRoute {
                topic: message.topic().to_owned(),
            })?;
        let conn = client.broker(&target.endpoint)?;
        let ext = address_ext(message.topic(), target.queue_id)?;
        conn.send_oneway(Command::Produce, &ext, &bytes)
    }

    /// Waits until every send accepted so far is acknowledged or failed, for at most
    /// `timeout`; the batcher sends what it holds at once.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        if let Some(batcher) = &self.inner.batcher {
            batcher.flush_now();
        }
        self.inner.in_flight.wait_idle(timeout)
    }

    fn send_timeout(&self) -> Duration {
        let config = &self.inner.client.config;
        config.request_timeout * (config.retries + 1) + config.batch_linger
    }

    fn key_of<'m>(&self, message: &'m Message) -> Option<&'m [u8]> {
        (self.inner.selector == QueueSelector::KeyHash && !message.key().is_empty())
            .then_some(message.key())
    }
}

impl ProducerInner {
    /// Calls `acker` with `result` and returns its permit.
    pub(crate) fn ack(&self, acker: Acker, result: Result<SendResult>) {
        acker(result);
        self.in_flight.release(1);
    }

    /// Accepts one message: into the batcher, or straight out as a batch of one. Failures
    /// reach the acker.
    fn submit(inner: &Arc<Self>, message: Message, acker: Acker) {
        let key = (inner.selector == QueueSelector::KeyHash && !message.key().is_empty())
            .then(|| message.key().to_vec());
        if let Some(batcher) = &inner.batcher {
            return batcher.submit(inner, &message, key, acker);
        }
        let client = &inner.client;
        let mut builder = BatchBuilder::new(client.config.batch_bytes_max);
        if let Err(e) = message.append_to(&mut builder, MessageType::Event, client.config.area, &[])
        {
            return inner.ack(acker, Err(e));
        }
        let Some(bytes) = builder.finish() else {
            return inner.ack(
                acker,
                Err(ClientError::InvalidArgument("empty batch".into())),
            );
        };
        Self::dispatch(
            inner,
            SendJob {
                topic: message.topic().to_owned(),
                bytes: Bytes::from(bytes),
                ackers: vec![acker],
                key,
                attempt: 0,
                avoid_broker: None,
            },
        );
    }

    /// Sends a job to a queue; its acknowledgement (or failure, after retries) reaches every
    /// acker.
    pub(crate) fn dispatch(inner: &Arc<Self>, job: SendJob) {
        let client = &inner.client;
        let route = match client.route(&job.topic) {
            Ok(route) => route,
            Err(e) => return Self::retry_or_fail(inner, job, e, None),
        };
        let chosen = route.choose(
            job.key.as_deref(),
            &client.config,
            &client.isolation,
            job.avoid_broker.as_deref(),
        );
        let Some(target) = chosen else {
            let e = ClientError::NoRoute {
                topic: job.topic.clone(),
            };
            return Self::retry_or_fail(inner, job, e, None);
        };
        let connected = client.broker(&target.endpoint).and_then(|conn| {
            let ext = address_ext(&job.topic, target.queue_id)?;
            Ok((conn, ext))
        });
        let (conn, ext) = match connected {
            Ok(v) => v,
            Err(e) => return Self::retry_or_fail(inner, job, e, Some(&target)),
        };
        let bytes = job.bytes.clone();
        // Shared so that a failed write can take the job back for a retry.
        let job = Arc::new(Mutex::new(Some(job)));
        let on_response = {
            let job = job.clone();
            let inner = inner.clone();
            let target = target.clone();
            let endpoint = conn.endpoint().to_owned();
            move |result: Result<protocol::frame::FrameBytes>| {
                let Some(job) = job.lock().unwrap_or_else(PoisonError::into_inner).take() else {
                    return;
                };
                let ack = result.and_then(|frame| {
                    control::decode::<ProduceAck>(&frame.body)
                        .map_err(|e| ClientError::control(&endpoint, e))
                });
                match ack {
                    Ok(ack) => {
                        inner.client.isolation.lift(&target);
                        let count = job.ackers.len();
                        for (i, acker) in job.ackers.into_iter().enumerate() {
                            acker(Ok(SendResult {
                                topic: job.topic.clone(),
                                broker_id: target.broker_id.clone(),
                                queue_id: ack.queue_id,
                                offset: ack.base_offset + i as u64,
                            }));
                        }
                        // One wake-up of a waiting sender per batch, not per message.
                        inner.in_flight.release(count);
                    }
                    Err(e) => Self::retry_or_fail(&inner, job, e, Some(&target)),
                }
            }
        };
        let sent = conn.call_with(Command::Produce, &ext, &bytes, Box::new(on_response));
        if let Err(e) = sent {
            let job = job.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(job) = job {
                Self::retry_or_fail(inner, job, e, Some(&target));
            }
        }
    }

    /// After a failed attempt: isolate the queue, and resend on another queue while retries
    /// and the error allow; else fail every acker.
    fn retry_or_fail(
        inner: &Arc<Self>,
        mut job: SendJob,
        error: ClientError,
        target: Option<&QueueTarget>,
    ) {
        let client = &inner.client;
        if let Some(target) = target {
            client.isolate_after(target, &error);
            job.avoid_broker = Some(target.broker_id.clone());
        }
        if error.is_retryable() {
            // The broker may have moved (restarted on other ports) or lost the queue.
            client.routes.invalidate(&job.topic);
        }
        if error.is_retryable() && job.attempt < client.config.retries && !client.is_closed() {
            job.attempt += 1;
            log::debug!(
                "send to {} failed ({error}); retry {} of {}",
                job.topic,
                job.attempt,
                client.config.retries
            );
            let retry = inner.clone();
            let job = Arc::new(Mutex::new(Some(job)));
            let queued = job.clone();
            let spawned = client.spawn_task(Box::new(move || {
                if let Some(job) = queued.lock().unwrap_or_else(PoisonError::into_inner).take() {
                    Self::dispatch(&retry, job);
                }
            }));
            if let Err(e) = spawned {
                if let Some(job) = job.lock().unwrap_or_else(PoisonError::into_inner).take() {
                    fail_all(inner, job, &e);
                }
            }
            return;
        }
        fail_all(inner, job, &error);
    }
}

fn fail_all(inner: &ProducerInner, job: SendJob, error: &ClientError) {
    let count = job.ackers.len();
    for acker in job.ackers {
        acker(Err(error.duplicate()));
    }
    inner.in_flight.release(count);
}

/// The header extension addressing a batch to `queue_id` of `topic`.
pub(crate) fn address_ext(topic: &str, queue_id: u32) -> Result<Vec<u8>> {
    let mut ext = Vec::with_capacity(32 + topic.len());
    BatchAddress::new(topic, queue_id)
        .encode(&mut ext)
        .map_err(|e| ClientError::InvalidArgument(format!("topic {topic}: {e}")))?;
    Ok(ext)
}

/// The future of a send's acknowledgement.
pub struct SendFuture(Waiter<SendResult>);

impl Future for SendFuture {
    type Output = Result<SendResult>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl std::fmt::Debug for SendFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SendFuture")
    }
}

impl SendFuture {
    /// Blocks for the acknowledgement, for at most `timeout`.
    pub fn wait(self, timeout: Duration) -> Result<SendResult> {
        self.0.wait(timeout)
    }
}

/// A counting bound on sends in flight. Taking and returning permits is one atomic operation
/// while nobody waits; the lock and condition variable are only for waiters, so returning a
/// batch's permits costs no system call on the (reader) thread that acknowledges it.
struct Permits {
    used: AtomicUsize,
    max: usize,
    /// Threads blocked in `acquire` or `wait_idle`.
    waiters: AtomicUsize,
    lock: Mutex<()>,
    changed: Condvar,
}

impl Permits {
    fn new(max: usize) -> Self {
        Self {
            used: AtomicUsize::new(0),
            max,
            waiters: AtomicUsize::new(0),
            lock: Mutex::new(()),
            changed: Condvar::new(),
        }
    }

    fn try_acquire(&self) -> bool {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                (used < self.max).then_some(used + 1)
            })
            .is_ok()
    }

    fn acquire(&self) {
        if self.try_acquire() {
            return;
        }
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        // Registered before the re-check, so a release either sees us or frees a permit the
        // re-check finds (both sides use SeqCst).
        self.waiters.fetch_add(1, Ordering::SeqCst);
        while !self.try_acquire() {
            guard = self
                .changed
                .wait(guard)
                .unwrap_or_else(PoisonError::into_inner);
        }
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    fn release(&self, count: usize) {
        if count == 0 {
            return;
        }
        let _ = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                Some(used.saturating_sub(count))
            });
        if self.waiters.load(Ordering::SeqCst) > 0 {
            // Taking the lock orders this wake-up after a waiter's re-check.
            drop(self.lock.lock().unwrap_or_else(PoisonError::into_inner));
            self.changed.notify_all();
        }
    }

    fn wait_idle(&self, timeout: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        if self.used.load(Ordering::SeqCst) == 0 {
            return Ok(());
        }
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let result = loop {
            if self.used.load(Ordering::SeqCst) == 0 {
                break Ok(());
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                break Err(ClientError::Timeout { after: timeout });
            }
            guard = self
                .changed
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        };
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        drop(guard);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_bound_and_drain() {
        let permits = Arc::new(Permits::new(2));
        permits.acquire();
        permits.acquire();
        let waiter = permits.clone();
        let t = std::thread::spawn(move || {
            waiter.acquire();
            waiter.release(1);
        });
        assert!(permits.wait_idle(Duration::from_millis(5)).is_err());
        permits.release(1);
        t.join().unwrap();
        permits.release(1);
        permits.wait_idle(Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn address_ext_carries_topic_and_queue() {
        let ext = address_ext("A10-1", 7).unwrap();
        let address = BatchAddress::decode(&ext).unwrap();
        assert_eq!((address.topic, address.queue_id), ("A10-1", 7));
        assert!(address_ext(&"x".repeat(200), 0).is_err());
    }
}
