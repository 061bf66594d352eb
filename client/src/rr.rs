//! Request-reply (DESIGN §5): the requester sends a request record carrying its client id as
//! `reply_to`, a unique correlation id and a deadline; a responder consumes it and answers on
//! the broker that pushed it; that broker pushes the reply to the requester's connection.

use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use protocol::codes::Command;
use protocol::control::ProduceAck;
use protocol::record::{BatchBuilder, MessageType, Property};

use crate::client::{Client, ClientInner, encode_correlation, schedule_reply_timeout};
use crate::consumer::{ConsumeMode, Consumer, ConsumerOptions, Delivery, StartFrom};
use crate::error::{ClientError, Result};
use crate::message::{Message, ReceivedMessage, Reply, now_ms};
use crate::route::QueueTarget;
use crate::send::{self, Job, Outcome, address_ext};
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
    fn start(
        &self,
        message: Message,
        timeout: Duration,
        callback: crate::client::ReplyCallback,
    ) -> Result<u64> {
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

/// Answers requests on a topic: consumes it in a clustering group and turns each handler
/// return value into the reply.
///
/// By default the handler runs on a thread of its own, fed by the connections' reader
/// threads; [`ResponderOptions::inline`] runs it on the reader threads themselves, one thread
/// handoff less per request. A handler that panics sends no reply (the requester times out)
/// and the responder goes on with the next request, in either mode.
#[derive(Debug)]
pub struct Responder {
    consumer: Consumer,
}

/// What a [`Responder`] answers and where its handler runs.
#[derive(Clone, Debug)]
pub struct ResponderOptions {
    /// The request topic, `[area]-[serviceId]`.
    pub topic: String,
    /// The consumer group the responder consumes the topic in (clustering).
    pub group: String,
    /// Whether the handler runs on the connections' reader threads; see [`Self::inline`].
    pub inline: bool,
}

impl ResponderOptions {
    /// Options for requests of `topic` consumed in `group`, handled on a thread of the
    /// responder's own.
    pub fn new(topic: impl Into<String>, group: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            group: group.into(),
            inline: false,
        }
    }

    /// Runs the handler on the reader thread of the broker connection the request arrived
    /// on, and writes the reply from there: no handoff to a handler thread, so a round trip
    /// costs one thread wake-up less (what a responder written on raw frames does).
    ///
    /// The contract: the handler must be quick and must not block. While it runs, that
    /// connection delivers nothing else: not this topic's next requests, not other
    /// subscriptions' pushes, not responses or replies to anything else this client sent to
    /// that broker shard. So it must not make blocking calls through the client either
    /// (a synchronous send, request or commit may wait for a response only that very thread
    /// would read, until its timeout). Calls are serialised: requests arriving on two shards
    /// at once are handled one after the other. Acks, credit and offset commits work as in
    /// the threaded mode: a request counts as consumed once its handler returned, and
    /// [`Responder::close`] waits for a running handler before its final commit. For slow
    /// or blocking handlers keep the default.
    pub fn inline(mut self) -> Self {
        self.inline = true;
        self
    }
}

impl Responder {
    /// Consumes requests of `topic` in `group` and replies with `handler`'s return value
    /// (the reply's value). Requests already past their deadline are skipped: nobody waits for
    /// them. Replies go to the broker connection that pushed the request.
    pub fn start(
        client: &Client,
        topic: &str,
        group: &str,
        handler: impl FnMut(&ReceivedMessage) -> Vec<u8> + Send + 'static,
    ) -> Result<Self> {
        Self::start_with(client, ResponderOptions::new(topic, group), handler)
    }

    /// Like [`Self::start`], with full options (an inline handler, say).
    pub fn start_with(
        client: &Client,
        options: ResponderOptions,
        handler: impl FnMut(&ReceivedMessage) -> Vec<u8> + Send + 'static,
    ) -> Result<Self> {
        // Requests waiting from before the start are answered too while their deadline lasts;
        // older ones are skipped as expired.
        let consumer_options =
            ConsumerOptions::new(options.topic, options.group, ConsumeMode::Clustering)
                .start_from(StartFrom::Committed);
        let inner = client.inner.clone();
        let mut handler = handler;
        let answer = move |delivery: &Delivery| {
            let request = &delivery.message;
            if request.message_type != MessageType::Request {
                log::debug!("responder skips a non-request record at {}", request.offset);
                return;
            }
            if request.is_expired() {
                log::debug!(
                    "request at offset {} expired before handling",
                    request.offset
                );
                return;
            }
            // Caught so that one bad request costs its reply, not the responder: an inline
            // handler would otherwise take the connection's reader thread down with it.
            let value = match panic::catch_unwind(AssertUnwindSafe(|| handler(request))) {
                Ok(value) => value,
                Err(_) => {
                    log::warn!(
                        "responder handler panicked on the request at offset {} of queue {}; \
                         no reply sent",
                        request.offset,
                        request.queue_id
                    );
                    return;
                }
            };
            if request.is_expired() {
                log::debug!("request at offset {} expired while handled", request.offset);
                return;
            }
            if let Err(e) = reply(&inner, delivery, value) {
                log::warn!("reply to {:?} not sent: {e}", request.reply_to);
            }
        };
        let consumer = if options.inline {
            Consumer::start_inline_deliveries(client, consumer_options, answer)?
        } else {
            Consumer::start_deliveries(client, consumer_options, answer)?
        };
        Ok(Self { consumer })
    }

    /// Answers requests to service `service_id`: consumes the topic of its nearest routable
    /// deployment (the client's own area's when there is one), located through GSL at this
    /// call; otherwise as [`Self::start`].
    pub fn start_service(
        client: &Client,
        service_id: &str,
        group: &str,
        handler: impl FnMut(&ReceivedMessage) -> Vec<u8> + Send + 'static,
    ) -> Result<Self> {
        let topic = crate::consumer::service_topic(client, service_id)?;
        Self::start(client, &topic, group, handler)
    }

    /// The topic whose requests are answered.
    pub fn topic(&self) -> &str {
        self.consumer.topic()
    }

    /// Stops answering: waits for a running handler, commits, unsubscribes and stops the
    /// handler thread (if any). Not to be called from the handler itself.
    pub fn close(self) -> Result<()> {
        self.consumer.close()
    }
}

/// Where the reply to a request goes: what the request carried. With it any client can
/// answer a request later, without the delivery it came in (see [`Replier`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyAddress {
    /// The request's topic.
    pub topic: String,
    /// The queue the request was stored in.
    pub queue_id: u32,
    /// The requester's client id.
    pub reply_to: String,
    /// The request's correlation id.
    pub correlation_id: Vec<u8>,
}

impl ReplyAddress {
    /// The address of a received request; `None` for a record that is not one.
    pub fn of(request: &ReceivedMessage) -> Option<Self> {
        if request.message_type != MessageType::Request {
            return None;
        }
        Some(Self {
            topic: request.topic.clone(),
            queue_id: request.queue_id,
            reply_to: request.reply_to.clone()?,
            correlation_id: request.correlation_id.clone()?,
        })
    }

    fn batch(&self, client: &ClientInner, value: Vec<u8>) -> Result<bytes::Bytes> {
        let mut builder = BatchBuilder::new(client.config.batch_bytes_max);
        Message::new(self.topic.clone(), value).append_to(
            &mut builder,
            MessageType::Reply,
            client.config.area,
            &[
                Property::ReplyTo(&self.reply_to),
                Property::CorrelationId(&self.correlation_id),
            ],
        )?;
        Ok(builder
            .finish()
            .ok_or_else(|| ClientError::InvalidArgument("empty batch".into()))?
            .into())
    }
}

/// Sends replies to requests this client did not receive itself: a request handed to
/// someone else (an HTTP responder behind the proxy) and answered later by address.
///
/// A broker takes a reply when the requester is connected to it, and the requester is
/// connected to the broker it sent the request to; so the reply is offered to each broker
/// holding the request's queue id in the topic's route until one takes it.
#[derive(Clone)]
pub struct Replier {
    client: Arc<ClientInner>,
}

impl std::fmt::Debug for Replier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replier")
            .field("client_id", &self.client.client_id)
            .finish()
    }
}

impl Replier {
    /// A replier sending through `client`'s connections.
    pub fn new(client: &Client) -> Self {
        Self {
            client: client.inner.clone(),
        }
    }

    /// Sends `value` as the reply to the request at `address` and waits for a broker to take
    /// it. [`ClientError::Status`] with `NoResponder` means no broker has the requester
    /// (gone, or closed after its deadline): nobody waits for this reply.
    pub fn reply(&self, address: &ReplyAddress, value: Vec<u8>) -> Result<()> {
        let client = &self.client;
        let bytes = address.batch(client, value)?;
        let ext = address_ext(&address.topic, address.queue_id)?;
        let route = client.route(&address.topic)?;
        let mut endpoints: Vec<String> = route
            .route
            .queues
            .iter()
            .filter(|q| q.queue_id == address.queue_id)
            .map(crate::route::endpoint_of)
            .collect();
        endpoints.dedup();
        let mut last_error = ClientError::NoRoute {
            topic: address.topic.clone(),
        };
        for endpoint in endpoints {
            let sent = client.broker(&endpoint).and_then(|conn| {
                conn.call(Command::Reply, &ext, &bytes, client.config.request_timeout)
            });
            match sent {
                Ok(_) => return Ok(()),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }
}

/// Sends `value` as the reply to the request in `delivery`, on the connection it came on.
fn reply(client: &ClientInner, delivery: &Delivery, value: Vec<u8>) -> Result<()> {
    let request = &delivery.message;
    let address = ReplyAddress::of(request).ok_or_else(|| {
        ClientError::InvalidArgument("request without reply_to or correlation id".into())
    })?;
    let bytes = address.batch(client, value)?;
    let ext = address_ext(&request.topic, request.queue_id)?;
    let endpoint = delivery.conn.endpoint().to_owned();
    delivery
        .conn
        .call_with(
            Command::Reply,
            &ext,
            &bytes,
            Box::new(move |result| {
                if let Err(e) = result {
                    log::debug!("{endpoint}: reply refused: {e}");
                }
            }),
        )
        .map(drop)
}
