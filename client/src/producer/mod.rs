//! Producer: sync, async and oneway sends, with optional batching and retry on another queue.

mod batcher;
mod permits;
mod transaction;

pub(crate) use transaction::CheckHandler;
pub use transaction::{Half, HalfMessage, HeldId, TransactionOutcome, TransactionalProducer};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use protocol::codes::Command;
use protocol::control::ProduceAck;
use protocol::record::{BatchBuilder, MessageType, SealedBatch};

use crate::client::{Client, ClientInner};
use crate::error::{ClientError, Result};
use crate::message::Message;
use crate::route::QueueTarget;
use crate::send::{self, Job, Outcome, Target};
use crate::slot::{Waiter, slot};

use batcher::Batcher;
use permits::Permits;

/// Where a sent message was stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendResult {
    /// The topic.
    pub topic: String,
    /// The broker that stored it.
    pub broker_id: String,
    /// The queue id on that broker.
    pub queue_id: u32,
    /// The message's offset in the queue; for a delayed or half message, in the queue's
    /// held log (see [`Self::held_id`]).
    pub offset: u64,
    /// True for a delayed or half message: held by the broker until its time or commit.
    pub held: bool,
}

impl SendResult {
    /// The id a delayed or half message is cancelled, committed or rolled back by.
    pub fn held_id(&self) -> Option<HeldId> {
        self.held.then(|| HeldId {
            broker_id: self.broker_id.clone(),
            topic: self.topic.clone(),
            queue_id: self.queue_id,
            offset: self.offset,
        })
    }
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
/// after it is called through [`ProducerInner::ack`] or by [`Acks`].
pub(crate) type Acker = Box<dyn FnOnce(Result<SendResult>) + Send>;

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
        let key = self.key_of(&message);
        let Target { conn, ext, .. } =
            send::target(client, message.topic(), key, None).map_err(|(e, _)| e)?;
        conn.send_oneway(Command::Produce, &ext, &bytes)
    }

    /// The idempotent producer id the client was assigned, once its first numbered batch
    /// went out (`None` before, and with [`crate::config::ClientConfig::idempotence`] off).
    pub fn producer_id(&self) -> Option<u64> {
        self.inner.client.sequencer.known_producer_id()
    }

    /// Waits until every send accepted so far is acknowledged or failed, for at most
    /// `timeout`; the batcher sends what it holds at once.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        if let Some(batcher) = &self.inner.batcher {
            batcher.flush_now();
        }
        self.inner.in_flight.wait_idle(timeout)
    }

    /// Cancels a delayed message before its time. A message already delivered (or cancelled)
    /// is refused with status `HeldSettled` (211).
    pub fn cancel(&self, id: &HeldId) -> Result<()> {
        transaction::call_held(
            &self.inner.client,
            id,
            Command::CancelHeld,
            &protocol::control::encode(&id.held_ref())
                .map_err(|e| ClientError::control(&id.broker_id, e))?,
        )
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
        // Held messages travel alone: a batch must not mix them with plain ones.
        let held = message.is_held();
        if let (Some(batcher), false) = (&inner.batcher, held) {
            return batcher.submit(inner, &message, key, acker);
        }
        let client = &inner.client;
        let mut builder = BatchBuilder::new(client.config.batch_bytes_max);
        if let Err(e) = message.append_to(&mut builder, MessageType::Event, client.config.area, &[])
        {
            return inner.ack(acker, Err(e));
        }
        let Some(sealed) = builder.seal() else {
            return inner.ack(
                acker,
                Err(ClientError::InvalidArgument("empty batch".into())),
            );
        };
        let client = inner.client.clone();
        let acks = Acks {
            producer: inner.clone(),
            ackers: vec![acker],
            held,
        };
        let topic = message.topic().to_owned();
        let bytes = Bytes::from(sealed.bytes);
        // A held batch goes to the queue's held log, which keeps no producer window
        // (ARCHITECTURE §13.1): it is sent unnumbered, so a retry in doubt may hold it twice.
        let job = Job::new(Command::Produce, topic, bytes, key, acks);
        let job = if held {
            job
        } else {
            job.idempotent(sealed.records_crc)
        };
        send::dispatch(&client, job);
    }

    /// Sends a batch of `topic` through the send pipeline, numbered for its queue when the
    /// client is idempotent; its acknowledgement (or failure, after retries) reaches every
    /// acker, in record order.
    pub(crate) fn dispatch(
        producer: Arc<Self>,
        topic: String,
        sealed: SealedBatch,
        key: Option<Vec<u8>>,
        ackers: Vec<Acker>,
    ) {
        let client = producer.client.clone();
        let acks = Acks {
            producer,
            ackers,
            held: false,
        };
        let bytes = Bytes::from(sealed.bytes);
        let job =
            Job::new(Command::Produce, topic, bytes, key, acks).idempotent(sealed.records_crc);
        send::dispatch(&client, job);
    }
}

/// A produce's outcome: each message acknowledged with its own offset, then the permits
/// returned.
struct Acks {
    producer: Arc<ProducerInner>,
    /// One per record, in record order.
    ackers: Vec<Acker>,
    /// The records are held: the acknowledgement names held-log offsets.
    held: bool,
}

impl Outcome for Acks {
    fn stored(self, _: &ClientInner, topic: &str, target: &QueueTarget, ack: &ProduceAck) {
        let count = self.ackers.len();
        for (i, acker) in self.ackers.into_iter().enumerate() {
            acker(Ok(SendResult {
                topic: topic.to_owned(),
                broker_id: target.broker_id.clone(),
                queue_id: ack.queue_id,
                offset: ack.base_offset + i as u64,
                held: self.held,
            }));
        }
        // One wake-up of a waiting sender per batch, not per message.
        self.producer.in_flight.release(count);
    }

    fn failed(self, _: &ClientInner, error: ClientError) {
        let count = self.ackers.len();
        for acker in self.ackers {
            acker(Err(error.duplicate()));
        }
        self.producer.in_flight.release(count);
    }
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
