//! The WebSocket protocol: one JSON object per text message, tagged by `type`.
//!
//! A session begins with `hello` (the identity); any other first message closes it. Commands
//! may carry a `ref` (any JSON value) that the proxy echoes in the answer. Pushed messages
//! carry a `delivery` id: a `message` is acked with `ack`, a `request` is answered with
//! `reply`. Offsets are committed to the broker only once every message pushed on the
//! subscription is acked, so an unacked message is delivered again after a reconnect or a
//! proxy restart (at least once: a message acked shortly before a crash may come again).
//!
//! Payloads are `value` (text) or `value_b64` (base64 bytes) both ways, as over HTTP; a W3C
//! trace context travels as a `trace` object (`{"traceparent", "tracestate"}`) on `publish`,
//! `request` and `reply`, and on every delivered message (see [`crate::trace`]). Each
//! `publish` and `request` takes a token from the session's rate-limit bucket; past it the
//! command is answered `error` with code `rate_limited`, a message naming the limit and
//! `retry_after_ms`, and not sent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api::{DeliveredMessage, Identity, Mode, OutgoingMessage, Start, Stored};
use crate::trace::TraceFields;

/// What a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// The first message: who the client is.
    Hello {
        /// The client's identity; the session's bus client id derives from it.
        identity: Identity,
    },
    /// Keeps the session alive; answered with `heartbeat`.
    Heartbeat {
        /// Echoed.
        #[serde(default, rename = "ref")]
        reference: Option<serde_json::Value>,
    },
    /// Subscribe to a topic's messages, or (`responder: true`) to its requests.
    Subscribe {
        /// Echoed.
        #[serde(default, rename = "ref")]
        reference: Option<serde_json::Value>,
        /// The topic.
        topic: String,
        /// The consumer or responder group.
        group: String,
        /// Clustering (default) or broadcast; responders are always clustering.
        #[serde(default)]
        mode: Mode,
        /// Where a group with no committed offset starts.
        #[serde(default)]
        start: Start,
        /// Receive the topic's requests and answer them with `reply`.
        #[serde(default)]
        responder: bool,
    },
    /// Ends a subscription.
    Unsubscribe {
        /// Echoed.
        #[serde(default, rename = "ref")]
        reference: Option<serde_json::Value>,
        /// The id from `subscribed`.
        subscription: String,
    },
    /// Publishes one message; answered with `published`.
    Publish {
        /// Echoed.
        #[serde(default, rename = "ref")]
        reference: Option<serde_json::Value>,
        /// The topic; or else `service`.
        #[serde(default)]
        topic: String,
        /// A service id, sent to its nearest deployment's topic; or else `topic`.
        #[serde(default)]
        service: Option<String>,
        /// The payload as text; or else `value_b64`.
        #[serde(default)]
        value: Option<String>,
        /// The payload as base64 bytes; or else `value`.
        #[serde(default)]
        value_b64: Option<String>,
        /// Optional key.
        #[serde(default)]
        key: Option<String>,
        /// Optional tag.
        #[serde(default)]
        tag: Option<String>,
        /// User properties.
        #[serde(default)]
        properties: BTreeMap<String, String>,
        /// W3C trace context.
        #[serde(default)]
        trace: Option<TraceFields>,
        /// Time-to-live, ms (events only).
        #[serde(default)]
        ttl_ms: Option<u64>,
        /// Deliver this many ms from now; or else `deliver_at_ms`.
        #[serde(default)]
        delay_ms: Option<u64>,
        /// Deliver at this Unix time, ms; or else `delay_ms`.
        #[serde(default)]
        deliver_at_ms: Option<u64>,
    },
    /// Sends a request; answered with `reply` (same `ref`) or `error` (`timeout`).
    Request {
        /// Echoed; needed to match the reply.
        #[serde(default, rename = "ref")]
        reference: Option<serde_json::Value>,
        /// The service topic; or else `service`.
        #[serde(default)]
        topic: String,
        /// A service id, called at its nearest deployment's topic; or else `topic`.
        #[serde(default)]
        service: Option<String>,
        /// The payload as text; or else `value_b64`.
        #[serde(default)]
        value: Option<String>,
        /// The payload as base64 bytes; or else `value`.
        #[serde(default)]
        value_b64: Option<String>,
        /// Optional key.
        #[serde(default)]
        key: Option<String>,
        /// Optional tag.
        #[serde(default)]
        tag: Option<String>,
        /// User properties.
        #[serde(default)]
        properties: BTreeMap<String, String>,
        /// Reply wait; default `request_timeout_ms`.
        #[serde(default)]
        timeout_ms: Option<u64>,
        /// W3C trace context.
        #[serde(default)]
        trace: Option<TraceFields>,
    },
    /// Answers a pushed `request`.
    Reply {
        /// The request's delivery id.
        delivery: u64,
        /// The reply payload as text; or else `value_b64`.
        #[serde(default)]
        value: Option<String>,
        /// The reply payload as base64 bytes; or else `value`.
        #[serde(default)]
        value_b64: Option<String>,
        /// The reply's W3C trace context; without one the reply carries the request's.
        #[serde(default)]
        trace: Option<TraceFields>,
    },
    /// Acknowledges pushed messages: `delivery`, or several in `deliveries`.
    Ack {
        /// One delivery id.
        #[serde(default)]
        delivery: Option<u64>,
        /// Several delivery ids.
        #[serde(default)]
        deliveries: Vec<u64>,
    },
    /// Rejects a pushed message: the broker redelivers it after the group's backoff (past
    /// its `max_redeliveries`, dead-letters it), and it counts as consumed; answered `nacked`
    /// or `error` (then it is still unacked). Clustering subscriptions only.
    Nack {
        /// Echoed.
        #[serde(default, rename = "ref")]
        reference: Option<serde_json::Value>,
        /// The push's delivery id.
        delivery: u64,
        /// Why (kept with the retry copy, at most 512 bytes).
        #[serde(default)]
        reason: String,
    },
    /// Ends the session cleanly.
    Goodbye {},
}

/// What the proxy sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// Answers `hello`.
    Welcome {
        /// The session's bus client id.
        client_id: String,
        /// The per-session window of unacked pushes.
        window: usize,
        /// Close after this much silence.
        idle_timeout_ms: u64,
    },
    /// Answers `heartbeat`.
    Heartbeat {
        /// Echoed.
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<serde_json::Value>,
    },
    /// Answers `subscribe`.
    Subscribed {
        /// Echoed.
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<serde_json::Value>,
        /// The subscription's id in this session.
        subscription: String,
    },
    /// Answers `unsubscribe`.
    Unsubscribed {
        /// Echoed.
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<serde_json::Value>,
        /// The subscription.
        subscription: String,
    },
    /// Answers `publish`.
    Published {
        /// Echoed.
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<serde_json::Value>,
        /// Where it was stored.
        #[serde(flatten)]
        stored: Stored,
    },
    /// The reply to this client's `request`.
    Reply {
        /// Echoed from the request.
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<serde_json::Value>,
        /// The reply.
        message: DeliveredMessage,
    },
    /// A message of a subscription; ack it.
    Message {
        /// The subscription.
        subscription: String,
        /// Ack with this id.
        delivery: u64,
        /// The message.
        message: DeliveredMessage,
    },
    /// A request for this client's responder subscription; answer with `reply`.
    Request {
        /// The subscription.
        subscription: String,
        /// Reply with this id.
        delivery: u64,
        /// The request (its `deadline_ms` says until when a reply is awaited).
        message: DeliveredMessage,
    },
    /// Answers `nack`: the broker stored the retry (or dead-letter) copy.
    Nacked {
        /// Echoed.
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<serde_json::Value>,
        /// The push.
        delivery: u64,
    },
    /// A command failed, or the session is ending for a reason.
    Error {
        /// Echoed from the failed command.
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<serde_json::Value>,
        /// Stable code, as in HTTP error bodies.
        code: &'static str,
        /// For humans.
        message: String,
        /// `rate_limited` only: when the session's bucket has room again.
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// Answers `goodbye`; the proxy closes the session after it.
    Goodbye {},
}

impl ServerFrame {
    /// The error answer to a command.
    pub fn error(reference: Option<serde_json::Value>, error: &crate::error::ApiError) -> Self {
        Self::Error {
            reference,
            code: error.code,
            message: error.message.clone(),
            retry_after_ms: error.retry_after.map(crate::error::retry_after_ms),
        }
    }
}

/// The fields of a `publish` or `request` command's message.
pub struct Outgoing {
    /// The topic (empty when `service` is given).
    pub topic: String,
    /// A service id instead of a topic.
    pub service: Option<String>,
    /// Text payload.
    pub value: Option<String>,
    /// Base64 payload.
    pub value_b64: Option<String>,
    /// Optional key.
    pub key: Option<String>,
    /// Optional tag.
    pub tag: Option<String>,
    /// User properties.
    pub properties: BTreeMap<String, String>,
    /// W3C trace context.
    pub trace: Option<TraceFields>,
    /// `publish` only: time-to-live, delay or delivery time, ms.
    pub ttl_ms: Option<u64>,
    /// See `ttl_ms`.
    pub delay_ms: Option<u64>,
    /// See `ttl_ms`.
    pub deliver_at_ms: Option<u64>,
}

impl From<Outgoing> for OutgoingMessage {
    fn from(o: Outgoing) -> Self {
        OutgoingMessage {
            topic: o.topic,
            service: o.service,
            value: o.value,
            value_b64: o.value_b64,
            key: o.key,
            tag: o.tag,
            properties: o.properties,
            trace: o.trace,
            ttl_ms: o.ttl_ms,
            delay_ms: o.delay_ms,
            deliver_at_ms: o.deliver_at_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_and_render() {
        let frame: ClientFrame = serde_json::from_str(
            r#"{"type":"subscribe","ref":1,"topic":"A10-1","group":"g","mode":"broadcast"}"#,
        )
        .unwrap();
        assert!(matches!(
            frame,
            ClientFrame::Subscribe {
                mode: Mode::Broadcast,
                responder: false,
                ..
            }
        ));
        let err = serde_json::from_str::<ClientFrame>(r#"{"type":"ack","delivery":1,"x":2}"#)
            .unwrap_err();
        assert!(err.to_string().contains('x'), "{err}");
        let out = serde_json::to_value(ServerFrame::Subscribed {
            reference: Some(1.into()),
            subscription: "s1".into(),
        })
        .unwrap();
        assert_eq!(
            out,
            serde_json::json!({"type":"subscribed","ref":1,"subscription":"s1"})
        );
    }
}
