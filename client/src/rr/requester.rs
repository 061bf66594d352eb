//! The requesting side: a request is a send (the one pipeline, `crate::send`) that first
//! registers for its reply and then waits for it, until the deadline it also carries.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use protocol::codes::Command;
use protocol::control::ProduceAck;
use protocol::record::{BatchBuilder, MessageType, Property};

use super::replies::{ReplyCallback, encode_correlation, schedule_reply_timeout};
use crate::client::{Client, ClientInner};
use crate::error::{ClientError, Result};
use crate::message::{Message, Reply, now_ms};
use crate::route::QueueTarget;
use crate::send::{self, Job, Outcome};
use crate::slot::{Waiter, slot};

/// Sends requests and waits for their replies. Cheap to clone.
#[derive(Clone)]
pub struct Requester {
    client: Arc<ClientInner>,
}

impl std::fmt::Debug for Requester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requester")
            .field("client_id", &self.client.client_id)
            .finish()
    }
}

impl Requester {
    /// A requester replying to `client`'s id.
    pub fn new(client: &Client) -> Self {
        Self {
            client: client.inner.clone(),
        }
    }

    /// Sends `message` as a request and blocks for its reply; ends with
    /// [`ClientError::Timeout`] at `now + timeout`, which is also the request's deadline on
    /// the broker (an undelivered request past it is dropped there).
    pub fn request(&self, message: Message, timeout: Duration) -> Result<Reply> {
        let (completer, waiter) = slot();
        let deadline = Instant::now() + timeout;
        let id = self.start(
            message,
            timeout,
            Box::new(move |result| {
                completer.complete(result);
            }),
        )?;
        let result = waiter.wait_until(deadline, timeout);
        if result.is_err() {
            // Drop the registration so a late reply finds nothing.
            self.client.replies.complete(id, Err(ClientError::Closed));
        }
        result
    }

    /// Sends `message` as a request to service `service_id`, located through GSL, and blocks
    /// for the reply until `timeout`. The request goes to the nearest deployment whose topic
    /// is routable and has a healthy writable queue; when it cannot be sent there (after
    /// retries), to the next deployment. A request that was sent is never sent again: no
    /// reply by the deadline is [`ClientError::Timeout`]. The message's own topic is
    /// replaced (build it with [`Message::for_service`]).
    pub fn request_service(
        &self,
        service_id: &str,
        message: Message,
        timeout: Duration,
    ) -> Result<Reply> {
        let deadline = Instant::now() + timeout;
        let topics = self.client.service_topics(service_id)?;
        let mut last_error = None;
        for topic in topics {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.request(message.clone().with_topic(topic.as_str()), left) {
                Ok(reply) => return Ok(reply),
                Err(e @ ClientError::Timeout { .. }) => return Err(e),
                Err(e) if e.is_retryable() => {
                    log::debug!(
                        "service {service_id}: request to {topic} not sent ({e}); next deployment"
                    );
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or(ClientError::Timeout { after: timeout }))
    }

    /// Sends `message` as a request and returns a future of the reply, usable from any
    /// async runtime; it ends with [`ClientError::Timeout`] at the deadline.
    pub fn request_async(&self, message: Message, timeout: Duration) -> ReplyFuture {
        let (completer, waiter) = slot();
        let failed = completer.clone();
        if let Err(e) = self.request_with_callback(message, timeout, move |result| {
            completer.complete(result);
        }) {
            failed.complete(Err(e));
        }
        ReplyFuture(waiter)
    }

    /// Sends `message` as a request and calls `callback` with the reply or the error that
    /// ended the wait (at the latest the timeout), on a client thread; the callback must not
    /// block for long.
    pub fn request_with_callback(
        &self,
        message: Message,
        timeout: Duration,
        callback: impl FnOnce(Result<Reply>) + Send + 'static,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let id = self.start(message, timeout, Box::new(callback))?;
        schedule_reply_timeout(&self.client, id, deadline, timeout);
        Ok(())
    }

    /// Registers the wait, then sends the request; returns the correlation id.
    fn start(&self, message: Message, timeout: Duration, callback: ReplyCallback) -> Result<u64> {
        let client = &self.client;
        let id = client.replies.register(callback)?;
        let correlation = encode_correlation(id);
        let deadline_ms = now_ms() + timeout.as_millis() as u64;
        let mut builder = BatchBuilder::new(client.config.batch_bytes_max);
        let appended = message.append_to(
            &mut builder,
            MessageType::Request,
            client.config.area,
            &[
                Property::ReplyTo(client.client_id.as_str()),
                Property::CorrelationId(&correlation),
                Property::DeadlineMs(deadline_ms),
            ],
        );
        let sent = appended.and_then(|()| {
            let bytes = builder
                .finish()
                .ok_or_else(|| ClientError::InvalidArgument("empty batch".into()))?;
            let topic = message.topic().to_owned();
            let job = Job::new(
                Command::Request,
                topic,
                bytes.into(),
                None,
                AwaitReply { id },
            );
            send::dispatch(client, job);
            Ok(())
        });
        if let Err(e) = sent {
            let reported = e.duplicate();
            client.replies.complete(id, Err(e));
            return Err(reported);
        }
        Ok(id)
    }
}

/// A request's outcome: once stored, it waits on for its reply (registered as `id` before
/// the send); a request that could not be stored ends that wait with the error.
struct AwaitReply {
    id: u64,
}

impl Outcome for AwaitReply {
    fn stored(self, _: &ClientInner, _: &str, _: &QueueTarget, _: &ProduceAck) {}

    fn failed(self, client: &ClientInner, error: ClientError) {
        client.replies.complete(self.id, Err(error));
    }
}

/// The future of a reply.
pub struct ReplyFuture(Waiter<Reply>);

impl Future for ReplyFuture {
    type Output = Result<Reply>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl std::fmt::Debug for ReplyFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplyFuture")
    }
}
