//! Replies by address: a request's [`ReplyAddress`] lets any client answer it later
//! ([`Replier`]), without the delivery it came in.

use std::sync::Arc;

use protocol::codes::Command;
use protocol::record::{BatchBuilder, MessageType, Property};
use protocol::trace::TraceContext;

use crate::client::{Client, ClientInner};
use crate::error::{ClientError, Result};
use crate::message::{Message, ReceivedMessage};
use crate::send::address_ext;

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
    /// The request's trace context: the reply carries it when the answer gives none.
    pub trace: Option<TraceContext>,
}

/// What a responder answers a request with: the reply's value and, optionally, its trace
/// context. A plain `Vec<u8>` is an answer without one, so the reply carries the request's
/// context unchanged (see [`crate::trace`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// The reply's value.
    pub value: Vec<u8>,
    /// The reply's trace context: typically the request's trace with the responder's own
    /// span id ([`crate::trace::child_of`]). `None`: the request's context, unchanged.
    pub trace: Option<TraceContext>,
}

impl Answer {
    /// An answer carrying `value`.
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        Self {
            value: value.into(),
            trace: None,
        }
    }

    /// Sets the reply's trace context.
    pub fn with_trace(mut self, context: TraceContext) -> Self {
        self.trace = Some(context);
        self
    }
}

impl From<Vec<u8>> for Answer {
    fn from(value: Vec<u8>) -> Self {
        Self::new(value)
    }
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
            trace: request.trace.clone(),
        })
    }

    pub(super) fn batch(&self, client: &ClientInner, answer: Answer) -> Result<bytes::Bytes> {
        let mut builder = BatchBuilder::new(client.config.batch_bytes_max);
        let mut reply = Message::new(self.topic.clone(), answer.value);
        if let Some(trace) = answer.trace.or_else(|| self.trace.clone()) {
            reply = reply.with_trace(trace);
        }
        reply.append_to(
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

    /// Sends `answer` (a value, or an [`Answer`] with a trace context) as the reply to the
    /// request at `address` and waits for a broker to take it. [`ClientError::Status`] with
    /// `NoResponder` means no broker has the requester (gone, or closed after its deadline):
    /// nobody waits for this reply.
    pub fn reply(&self, address: &ReplyAddress, answer: impl Into<Answer>) -> Result<()> {
        let client = &self.client;
        let bytes = address.batch(client, answer.into())?;
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
