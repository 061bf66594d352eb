//! The answering side: a responder consumes a request topic in a group, runs its handler
//! (on a thread of its own, or inline on the reader threads) and replies on the connection
//! each request came on.

use std::panic::{self, AssertUnwindSafe};

use protocol::codes::Command;
use protocol::record::MessageType;

use super::replier::{Answer, ReplyAddress};
use crate::client::{Client, ClientInner};
use crate::consumer::{ConsumeMode, Consumer, ConsumerOptions, Delivery, Member, StartFrom};
use crate::error::{ClientError, Result};
use crate::message::ReceivedMessage;
use crate::send::address_ext;

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
    /// Who the broker sees as the group's member; see [`Self::as_member`].
    member: Option<Member>,
}

impl ResponderOptions {
    /// Options for requests of `topic` consumed in `group`, handled on a thread of the
    /// responder's own.
    pub fn new(topic: impl Into<String>, group: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            group: group.into(),
            inline: false,
            member: None,
        }
    }

    /// Answers as `member` rather than as the client itself
    /// ([`ConsumerOptions::as_member`]): one client can carry many responders of a group.
    pub fn as_member(mut self, member: Member) -> Self {
        self.member = Some(member);
        self
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
    /// Consumes requests of `topic` in `group` and replies with `handler`'s return value: the
    /// reply's value (`Vec<u8>`), or an [`Answer`] that also sets the reply's trace context
    /// (without one the reply carries the request's context unchanged). Requests already past
    /// their deadline are skipped: nobody waits for them. Replies go to the broker connection
    /// that pushed the request.
    pub fn start<A: Into<Answer>>(
        client: &Client,
        topic: &str,
        group: &str,
        handler: impl FnMut(&ReceivedMessage) -> A + Send + 'static,
    ) -> Result<Self> {
        Self::start_with(client, ResponderOptions::new(topic, group), handler)
    }

    /// Like [`Self::start`], with full options (an inline handler, say).
    pub fn start_with<A: Into<Answer>>(
        client: &Client,
        options: ResponderOptions,
        handler: impl FnMut(&ReceivedMessage) -> A + Send + 'static,
    ) -> Result<Self> {
        // Requests waiting from before the start are answered too while their deadline lasts;
        // older ones are skipped as expired.
        // Requests are not retried (their requester waits for a reply, not a redelivery).
        let mut consumer_options =
            ConsumerOptions::new(options.topic, options.group, ConsumeMode::Clustering)
                .start_from(StartFrom::Committed)
                .without_retries();
        if let Some(member) = options.member {
            consumer_options = consumer_options.as_member(member);
        }
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
            let answer = match panic::catch_unwind(AssertUnwindSafe(|| handler(request).into())) {
                Ok(answer) => answer,
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
            if let Err(e) = reply(&inner, delivery, answer) {
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
    pub fn start_service<A: Into<Answer>>(
        client: &Client,
        service_id: &str,
        group: &str,
        handler: impl FnMut(&ReceivedMessage) -> A + Send + 'static,
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

/// Sends `answer` as the reply to the request in `delivery`, on the connection it came on.
fn reply(client: &ClientInner, delivery: &Delivery, answer: Answer) -> Result<()> {
    let request = &delivery.message;
    let address = ReplyAddress::of(request).ok_or_else(|| {
        ClientError::InvalidArgument("request without reply_to or correlation id".into())
    })?;
    let bytes = address.batch(client, answer)?;
    let ext = address_ext(&request.topic, request.queue_id)?;
    // Nobody waits for the broker's word on a reply (the requester's ReplyPush is the news):
    // it answers only a refusal, which the reader thread logs. One frame and one wake-up of
    // the responder's reader fewer per request.
    delivery
        .conn
        .send_failures_only(Command::Reply, &ext, &bytes)
}
