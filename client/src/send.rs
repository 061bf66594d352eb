//! The one send pipeline, shared by produce and request (ARCHITECTURE §4.4, §4.5).
//!
//! A [`Job`] is an encoded record batch on its way to a queue of its topic: route → choose a
//! queue (own area first, isolated queues and the broker that just failed avoided) → connect
//! → call. A retryable failure isolates the queue, drops the cached route and sends the same
//! bytes again from the task thread while retries last. What happens once the batch is
//! stored, or has failed for good, is the job's [`Outcome`]: a produce acknowledges its
//! messages; a request, already registered for its reply, only waits on (or ends that wait).

use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use protocol::codes::{Command, Status};
use protocol::control::{self, ProduceAck};
use protocol::data::BatchAddress;
use protocol::frame::FrameBytes;

use crate::client::ClientInner;
use crate::error::{ClientError, Result};
use crate::idempotence::{Numbered, StreamKey, Ticket, not_stored};
use crate::net::Connection;
use crate::route::QueueTarget;
use protocol::record::set_producer;

/// What a job does once its batch is stored, or has failed for good. Called on a reader
/// thread, the task thread or the sender's thread: it must not block.
pub(crate) trait Outcome: Send + 'static {
    /// The broker stored the batch of `topic` on `target`, as `ack` says.
    fn stored(self, client: &ClientInner, topic: &str, target: &QueueTarget, ack: &ProduceAck);

    /// The batch was not stored: `error` is the last attempt's, or not retryable.
    fn failed(self, client: &ClientInner, error: ClientError);
}

/// A record batch on its way: encoded once, sent unchanged on every attempt.
pub(crate) struct Job<O> {
    /// `Produce` or `Request`.
    command: Command,
    topic: String,
    bytes: Bytes,
    /// Hash this key onto a queue, when selecting by key.
    key: Option<Vec<u8>>,
    /// Attempts made so far.
    attempt: u32,
    /// The broker that failed the last attempt.
    avoid_broker: Option<String>,
    /// What follows once the batch is stored or has failed for good.
    outcome: O,
    /// For an idempotent produce: the checksum [`set_producer`] continues, to number the
    /// batch for the queue chosen.
    records_crc: Option<u32>,
    /// The queue and numbers the batch carries, once numbered (ARCHITECTURE §13.1).
    ticket: Option<Ticket>,
    /// The job waited for its queue's numbering and comes back in its turn.
    woken: bool,
    /// When the job was made: a batch in doubt is retried on its queue until
    /// `request_timeout × (retries + 1)` after it.
    created: std::time::Instant,
    /// Times the broker's window refused the batch's numbers (209) and it was renumbered:
    /// not failed attempts, but bounded.
    renumbered: u32,
}

impl<O: Outcome> Job<O> {
    /// A first attempt at sending `bytes` to a queue of `topic`.
    pub(crate) fn new(
        command: Command,
        topic: String,
        bytes: Bytes,
        key: Option<Vec<u8>>,
        outcome: O,
    ) -> Self {
        Self {
            command,
            topic,
            bytes,
            key,
            attempt: 0,
            avoid_broker: None,
            outcome,
            records_crc: None,
            ticket: None,
            woken: false,
            created: std::time::Instant::now(),
            renumbered: 0,
        }
    }

    /// Makes the job an idempotent produce of a batch built with [`BatchBuilder::seal`]:
    /// numbered per queue, retried on its queue while an attempt may have stored it.
    pub(crate) fn idempotent(mut self, records_crc: u32) -> Self {
        self.records_crc = Some(records_crc);
        self
    }
}

/// Connects to the queue a numbered batch is bound to: the same broker and queue id.
fn pinned_target(
    client: &ClientInner,
    topic: &str,
    key: &StreamKey,
) -> std::result::Result<Target, TargetError> {
    let route = client.route(topic).map_err(|e| (e, None))?;
    let queue = route
        .queues()
        .find(|q| q.broker_id == key.broker_id && q.queue_id == key.queue_id)
        .ok_or_else(|| {
            let e = ClientError::NoRoute {
                topic: format!("{topic} (queue {} of {})", key.queue_id, key.broker_id),
            };
            (e, None)
        })?;
    connect(client, topic, queue)
}

/// Connects to the broker shard of `queue`, chosen for a send to `topic`.
fn connect(
    client: &ClientInner,
    topic: &str,
    queue: QueueTarget,
) -> std::result::Result<Target, TargetError> {
    let connected = client.broker(&queue.endpoint).and_then(|conn| {
        let ext = address_ext(topic, queue.queue_id)?;
        Ok((conn, ext))
    });
    match connected {
        Ok((conn, ext)) => Ok(Target { queue, conn, ext }),
        Err(e) => Err((e, Some(queue))),
    }
}

/// A queue chosen for a send, with the connection to its broker shard and the header
/// extension addressing it.
pub(crate) struct Target {
    pub(crate) queue: QueueTarget,
    pub(crate) conn: Arc<Connection>,
    pub(crate) ext: Vec<u8>,
}

/// Why no [`Target`] was found: the error, and the queue it concerns once one was chosen
/// (so that it can be isolated).
pub(crate) type TargetError = (ClientError, Option<QueueTarget>);

/// Chooses a queue of `topic` (by `key` when given, off `avoid_broker` when possible) and
/// connects to its broker shard.
pub(crate) fn target(
    client: &ClientInner,
    topic: &str,
    key: Option<&[u8]>,
    avoid_broker: Option<&str>,
) -> std::result::Result<Target, TargetError> {
    let route = client.route(topic).map_err(|e| (e, None))?;
    let queue = route
        .choose(key, &client.config, &client.isolation, avoid_broker)
        .ok_or_else(|| {
            let e = ClientError::NoRoute {
                topic: topic.to_owned(),
            };
            (e, None)
        })?;
    connect(client, topic, queue)
}

/// Sends `job` to a queue; its outcome learns whether the batch was stored (after retries).
pub(crate) fn dispatch<O: Outcome>(client: &Arc<ClientInner>, mut job: Job<O>) {
    let chosen = match &job.ticket {
        Some(ticket) => pinned_target(client, &job.topic, &ticket.key),
        None => target(
            client,
            &job.topic,
            job.key.as_deref(),
            job.avoid_broker.as_deref(),
        ),
    };
    let Target { queue, conn, ext } = match chosen {
        Ok(target) => target,
        Err((e, queue)) => return retry_or_fail(client, job, e, queue.as_ref()),
    };
    if job.ticket.is_none() && job.records_crc.is_some() && client.config.idempotence {
        job = match number(client, job, &conn, &queue) {
            Numbering::Ready(job) => job,
            Numbering::Parked => return,
            Numbering::Failed(job, e) => return retry_or_fail(client, job, e, Some(&queue)),
        };
    }
    let command = job.command;
    let bytes = job.bytes.clone();
    // Shared so that a failed write can take the job back for a retry, and so that the job
    // is taken once even if the connection also fails the call while the write fails.
    let job = Arc::new(Mutex::new(Some(job)));
    let on_response = {
        let job = job.clone();
        let client = client.clone();
        let queue = queue.clone();
        let endpoint = conn.endpoint().to_owned();
        move |result: Result<FrameBytes>| {
            let Some(job) = take(&job) else {
                return;
            };
            let ack = result.and_then(|frame| {
                control::decode::<ProduceAck>(&frame.body)
                    .map_err(|e| ClientError::control(&endpoint, e))
            });
            match ack {
                Ok(ack) => {
                    client.isolation.lift(&queue);
                    if let Some(ticket) = &job.ticket {
                        resume(&client, client.sequencer.stored(ticket));
                    }
                    job.outcome.stored(&client, &job.topic, &queue, &ack);
                }
                Err(e) => retry_or_fail(&client, job, e, Some(&queue)),
            }
        }
    };
    if let Err(e) = conn.call_with(command, &ext, &bytes, Box::new(on_response)) {
        if let Some(job) = take(&job) {
            retry_or_fail(client, job, e, Some(&queue));
        }
    }
}

/// What [`number`] did with a job.
enum Numbering<O> {
    /// Numbered (or left unnumbered for an older broker): send it.
    Ready(Job<O>),
    /// Parked until its stream settles.
    Parked,
    /// Numbering failed (the producer id could not be had).
    Failed(Job<O>, ClientError),
}

/// Numbers an idempotent job for `queue` (asking for the producer id first if needed) and
/// writes the numbers into its batch.
fn number<O: Outcome>(
    client: &Arc<ClientInner>,
    job: Job<O>,
    conn: &Connection,
    queue: &QueueTarget,
) -> Numbering<O> {
    let producer_id = match client
        .sequencer
        .producer_id(conn, client.config.request_timeout)
    {
        Ok(Some(id)) => id,
        // A broker that predates idempotence: the batch goes unnumbered.
        Ok(None) => return Numbering::Ready(job),
        Err(e) => return Numbering::Failed(job, e),
    };
    let key = StreamKey::new(&job.topic, queue);
    let slot = Arc::new(Mutex::new(Some(job)));
    let parked = slot.clone();
    let retry = client.clone();
    let woken = job_woken(&slot);
    let numbered = client.sequencer.number(key, producer_id, woken, || {
        Box::new(move || {
            if let Some(mut job) = take(&parked) {
                job.woken = true;
                dispatch(&retry, job);
            }
        })
    });
    let ticket = match numbered {
        Numbered::Ticket(ticket) => ticket,
        Numbered::Parked => return Numbering::Parked,
    };
    let Some(mut job) = take(&slot) else {
        return Numbering::Parked;
    };
    job.woken = false;
    let records_crc = job.records_crc.unwrap_or_default();
    let mut bytes = std::mem::take(&mut job.bytes)
        .try_into_mut()
        .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
    if let Err(e) = set_producer(&mut bytes, records_crc, ticket.fields) {
        // A batch this client built: a bug, reported rather than sent unnumbered.
        resume(client, client.sequencer.released(&ticket));
        job.bytes = bytes.freeze();
        let e = ClientError::InvalidArgument(format!("cannot number the batch: {e}"));
        return Numbering::Failed(job, e);
    }
    job.bytes = bytes.freeze();
    job.ticket = Some(ticket);
    Numbering::Ready(job)
}

fn job_woken<O>(slot: &Mutex<Option<Job<O>>>) -> bool {
    slot.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .is_some_and(|job| job.woken)
}

/// Dispatches again the sends parked on a stream that settled.
fn resume(client: &ClientInner, parked: Vec<Box<dyn FnOnce() + Send>>) {
    for send in parked {
        if let Err(e) = client.spawn_task(send) {
            log::warn!("cannot resume a parked send: {e}");
        }
    }
}

/// After a failed attempt: isolates the queue, and sends again, off its broker, while retries
/// and the error allow; else the job has failed.
///
/// A numbered (idempotent) job whose attempt may have stored the batch is sent again to the
/// same queue with the same bytes, after a short pause, so the broker's window recognises a
/// copy; only once a refusal proves it was not stored does it leave the queue, renumbered.
/// Given up while still in doubt, it fails with [`ClientError::MaybeStored`].
fn retry_or_fail<O: Outcome>(
    client: &Arc<ClientInner>,
    mut job: Job<O>,
    error: ClientError,
    queue: Option<&QueueTarget>,
) {
    let mut renumbering = false;
    if let Some(mut ticket) = job.ticket.take() {
        if not_stored(&error, ticket.ambiguous) {
            resume(client, client.sequencer.released(&ticket));
            // Refused by the window (a restarted broker, a broken stream): the batch was not
            // stored and is numbered again, which is no failed delivery.
            renumbering = error.status() == Some(Status::OutOfOrderSequence)
                && job.renumbered < RENUMBERS_MAX;
        } else {
            ticket.ambiguous = true;
            job.ticket = Some(ticket);
        }
    }
    if job.ticket.is_some() {
        return retry_pinned(client, job, error, queue);
    }
    if let Some(queue) = queue.filter(|_| !renumbering) {
        client.isolate_after(queue, &error);
        job.avoid_broker = Some(queue.broker_id.clone());
    }
    if error.is_retryable() {
        // The broker may have moved (restarted on other ports) or lost the queue.
        client.routes.invalidate(&job.topic);
    }
    if renumbering && !client.is_closed() {
        job.renumbered += 1;
        job.avoid_broker = None;
    } else if !(send_retryable(&error)
        && job.attempt < client.config.retries
        && !client.is_closed())
    {
        return job.outcome.failed(client, error);
    } else {
        job.attempt += 1;
    }
    log::debug!(
        "send to {} failed ({error}); retry {} of {}",
        job.topic,
        job.attempt,
        client.config.retries
    );
    // A retry may connect to another broker: work for the task thread, not a reader thread.
    let job = Arc::new(Mutex::new(Some(job)));
    let queued = job.clone();
    let retry = client.clone();
    let spawned = client.spawn_task(Box::new(move || {
        if let Some(job) = take(&queued) {
            dispatch(&retry, job);
        }
    }));
    if let Err(e) = spawned {
        if let Some(job) = take(&job) {
            job.outcome.failed(client, e);
        }
    }
}

/// [`retry_or_fail`] for a job bound to its queue: the same bytes again after a pause while
/// retries last.
fn retry_pinned<O: Outcome>(
    client: &Arc<ClientInner>,
    mut job: Job<O>,
    error: ClientError,
    queue: Option<&QueueTarget>,
) {
    if let Some(queue) = queue {
        client.isolate_after(queue, &error);
    }
    if error.is_retryable() {
        client.routes.invalidate(&job.topic);
    }
    let deadline = client.config.request_timeout * (client.config.retries + 1);
    let give_up = !send_retryable(&error)
        || job.created.elapsed() >= deadline
        || job.attempt >= PINNED_ATTEMPTS_MAX
        || client.is_closed();
    if give_up {
        let ticket = job.ticket.take();
        if let Some(ticket) = &ticket {
            resume(client, client.sequencer.released(ticket));
        }
        let error = ClientError::MaybeStored {
            attempts: job.attempt + 1,
            last: Box::new(error),
        };
        return job.outcome.failed(client, error);
    }
    job.attempt += 1;
    log::debug!(
        "send to {} may or may not have been stored ({error}); retry {} on the same queue",
        job.topic,
        job.attempt,
    );
    let pause = PINNED_RETRY_PAUSE_MIN
        .saturating_mul(1 << job.attempt.min(6))
        .min(PINNED_RETRY_PAUSE_MAX);
    let slot = Arc::new(Mutex::new(Some(job)));
    let retry = client.clone();
    client.timer.schedule(
        std::time::Instant::now() + pause,
        Box::new(move || {
            let queued = slot.clone();
            let task_client = retry.clone();
            let spawned = retry.spawn_task(Box::new(move || {
                if let Some(job) = take(&queued) {
                    dispatch(&task_client, job);
                }
            }));
            if let Err(e) = spawned {
                if let Some(mut job) = take(&slot) {
                    if let Some(ticket) = job.ticket.take() {
                        resume(&retry, retry.sequencer.released(&ticket));
                    }
                    let error = ClientError::MaybeStored {
                        attempts: job.attempt,
                        last: Box::new(e),
                    };
                    job.outcome.failed(&retry, error);
                }
            }
        }),
    );
}

/// Renumberings of one batch refused by the broker's window before it fails.
const RENUMBERS_MAX: u32 = 16;
/// Attempts of a job bound to its queue, whatever its deadline.
const PINNED_ATTEMPTS_MAX: u32 = 1024;

/// First pause before a job bound to its queue is sent again; it doubles per attempt.
const PINNED_RETRY_PAUSE_MIN: std::time::Duration = std::time::Duration::from_millis(25);
/// Longest pause before a job bound to its queue is sent again.
const PINNED_RETRY_PAUSE_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether a failed send may go again to another queue. Beside the retryable statuses, a
/// storage error: it poisoned only the queue that answered it (a full disk, a failed fsync;
/// the broker reopens it later), so another queue, isolated from it, may store the batch. The
/// failed write may have reached the disk all the same, so such a retry is at-least-once: the
/// batch may be stored twice (ARCHITECTURE §4.5).
pub(crate) fn send_retryable(error: &ClientError) -> bool {
    error.is_retryable() || error.status() == Some(Status::StorageError)
}

fn take<O>(job: &Mutex<Option<Job<O>>>) -> Option<Job<O>> {
    job.lock().unwrap_or_else(PoisonError::into_inner).take()
}

/// The header extension addressing a batch to `queue_id` of `topic`.
pub(crate) fn address_ext(topic: &str, queue_id: u32) -> Result<Vec<u8>> {
    let mut ext = Vec::with_capacity(32 + topic.len());
    BatchAddress::new(topic, queue_id)
        .encode(&mut ext)
        .map_err(|e| ClientError::InvalidArgument(format!("topic {topic}: {e}")))?;
    Ok(ext)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{self, Sender};
    use std::time::Duration;

    use super::*;
    use crate::client::Client;
    use crate::config::ClientConfig;

    /// Reports what the pipeline told it: the stored queue id, or the error.
    struct Recorder(Sender<std::result::Result<u32, ClientError>>);

    impl Outcome for Recorder {
        fn stored(self, _: &ClientInner, _: &str, target: &QueueTarget, _: &ProduceAck) {
            self.0.send(Ok(target.queue_id)).unwrap();
        }

        fn failed(self, _: &ClientInner, error: ClientError) {
            self.0.send(Err(error)).unwrap();
        }
    }

    /// A client whose only nameserver is a port nobody listens on.
    fn unroutable_client() -> Client {
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_addr = dead.local_addr().unwrap().to_string();
        drop(dead);
        let config = ClientConfig::new([dead_addr], "A10")
            .unwrap()
            .with_retries(2)
            .with_connect_timeout(Duration::from_secs(1));
        Client::new(config).unwrap()
    }

    fn job(outcome: Recorder) -> Job<Recorder> {
        let bytes = Bytes::from_static(b"not looked at before a queue is chosen");
        Job::new(Command::Produce, "A10-1".into(), bytes, None, outcome)
    }

    #[test]
    fn a_job_that_finds_no_route_fails_once_with_a_retryable_error() {
        let client = unroutable_client();
        let (tx, rx) = mpsc::channel();
        dispatch(&client.inner, job(Recorder(tx)));
        let outcome = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        let error = outcome.unwrap_err();
        assert!(error.is_retryable(), "{error}");
        // The outcome was consumed by that call, and no retry holds a copy of the job: the
        // channel's only sender is gone.
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(30)).unwrap_err(),
            mpsc::RecvTimeoutError::Disconnected
        );
    }

    #[test]
    fn a_closed_client_fails_a_job_without_retrying() {
        let client = unroutable_client();
        client.close();
        let (tx, rx) = mpsc::channel();
        dispatch(&client.inner, job(Recorder(tx)));
        assert!(matches!(rx.try_recv().unwrap(), Err(ClientError::Closed)));
    }

    #[test]
    fn address_ext_carries_topic_and_queue() {
        let ext = address_ext("A10-1", 7).unwrap();
        let address = BatchAddress::decode(&ext).unwrap();
        assert_eq!((address.topic, address.queue_id), ("A10-1", 7));
        assert!(address_ext(&"x".repeat(200), 0).is_err());
    }
}
