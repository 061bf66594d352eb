//! The JSON shapes shared by the HTTP routes and the WebSocket protocol: client identity,
//! messages going to the bus and messages coming from it, and the body extractor that turns
//! malformed JSON into 400 and an oversized body into 413.
//!
//! **Values** are text or bytes: a message sent to the bus carries exactly one of `value`
//! (UTF-8 text) or `value_b64` (any bytes, standard base64 with padding); a message delivered
//! by the proxy carries `value` when its payload is valid UTF-8 and `value_b64` otherwise.
//! Keys and property values are UTF-8 text; bytes that are not UTF-8 are delivered with
//! U+FFFD in their place.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use client::{Message, ReceivedMessage};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::state::AppState;

/// Longest system, group or instance name.
pub const IDENTITY_NAME_LEN_MAX: usize = 32;

/// Who a caller is: the bus knows a WebSocket session by the client id derived from it, so
/// a reconnecting client with the same identity resumes its broadcast offsets and replaces
/// its previous session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// The calling system (application), e.g. `payments`.
    pub system: String,
    /// The caller's area, e.g. `A10`: preferred when queues are chosen.
    pub area: String,
    /// The caller's group (deployment unit), e.g. `settlement`.
    pub group: String,
    /// This instance of the system, e.g. `host-1.7`: unique among live clients.
    pub instance: String,
}

impl Identity {
    /// Checks every field: names are 1 to 32 ASCII letters, digits, `_`, `.` or `-`; the area
    /// is a bus area code.
    pub fn validate(&self) -> Result<(), ApiError> {
        for (field, value) in [
            ("system", &self.system),
            ("group", &self.group),
            ("instance", &self.instance),
        ] {
            let ok = !value.is_empty()
                && value.len() <= IDENTITY_NAME_LEN_MAX
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if !ok {
                return Err(ApiError::bad_request(format!(
                    "identity.{field} {value:?}: 1 to {IDENTITY_NAME_LEN_MAX} ASCII letters, \
                     digits, '_', '.' or '-'"
                )));
            }
        }
        self.area
            .parse::<protocol::names::Area>()
            .map_err(|e| ApiError::bad_request(format!("identity.area: {e}")))?;
        Ok(())
    }

    /// The bus client id of this identity: `system/group/instance#area`.
    pub fn client_id(&self) -> String {
        format!(
            "{}/{}/{}#{}",
            self.system, self.group, self.instance, self.area
        )
    }
}

/// A message to publish or send as a request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutgoingMessage {
    /// The topic, `[area]-[serviceId]`; or else `service`.
    #[serde(default)]
    pub topic: String,
    /// A service id, sent to its nearest deployment's topic (through GSL); or else `topic`.
    #[serde(default)]
    pub service: Option<String>,
    /// The payload as UTF-8 text; or else `value_b64`.
    #[serde(default)]
    pub value: Option<String>,
    /// The payload as base64 bytes; or else `value`.
    #[serde(default)]
    pub value_b64: Option<String>,
    /// Optional key: equal keys go to one queue, in order.
    #[serde(default)]
    pub key: Option<String>,
    /// Optional tag (dark launch, filtering).
    #[serde(default)]
    pub tag: Option<String>,
    /// User properties.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// The W3C trace context; wins over the HTTP headers' (see [`crate::trace`]).
    #[serde(default)]
    pub trace: Option<crate::trace::TraceFields>,
    /// Events only: the message is never delivered once this many ms passed since it was sent
    /// (ARCHITECTURE §13.5).
    #[serde(default)]
    pub ttl_ms: Option<u64>,
    /// Deliver this many ms from now (a delayed message, ARCHITECTURE §13.3); or else
    /// `deliver_at_ms`.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Deliver at this time, ms since the Unix epoch (the broker's clock); or else `delay_ms`.
    #[serde(default)]
    pub deliver_at_ms: Option<u64>,
}

/// The longest `ttl_ms` or `delay_ms` the proxy takes (10 years): past it a time would
/// overflow the clock's arithmetic. The broker bounds delays further (`held.delay_max_ms`).
pub const KIND_MS_MAX: u64 = 10 * 365 * 24 * 3600 * 1000;

impl OutgoingMessage {
    /// The client message; 400 for a topic that is not a bus topic name, a payload that is
    /// not exactly one of `value` and `value_b64`, or an invalid `traceparent`, before any bus
    /// call. Call [`resolve_services`] first: a `service` must have become its topic.
    pub fn to_message(&self) -> Result<Message, ApiError> {
        self.to_traced_message(None)
    }

    /// Like [`Self::to_message`], with the trace context of the call's headers for a message
    /// that carries none of its own.
    pub fn to_traced_message(
        &self,
        headers: Option<&client::TraceContext>,
    ) -> Result<Message, ApiError> {
        self.topic
            .parse::<protocol::names::Topic>()
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let value = payload(self.value.as_deref(), self.value_b64.as_deref())?;
        let mut message = Message::new(self.topic.clone(), value);
        if let Some(key) = &self.key {
            message = message.with_key(key.as_bytes().to_vec());
        }
        if let Some(tag) = &self.tag {
            message = message.with_tag(tag.clone());
        }
        for (k, v) in &self.properties {
            message = message.with_property(k.clone(), v.as_bytes().to_vec());
        }
        if let Some(trace) = crate::trace::of_message(self.trace.as_ref(), headers)? {
            message = message.with_trace(trace);
        }
        self.with_kind(message)
    }

    /// `message` with the TTL and delay asked for; 400 for a zero or out-of-range time, or
    /// both `delay_ms` and `deliver_at_ms`.
    fn with_kind(&self, mut message: Message) -> Result<Message, ApiError> {
        let in_range = |field: &str, ms: u64| {
            if ms == 0 || ms > KIND_MS_MAX {
                return Err(ApiError::bad_request(format!(
                    "{field} {ms}: 1 to {KIND_MS_MAX} ms"
                )));
            }
            Ok(Duration::from_millis(ms))
        };
        if let Some(ttl) = self.ttl_ms {
            message = message.with_ttl(in_range("ttl_ms", ttl)?);
        }
        match (self.delay_ms, self.deliver_at_ms) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "give delay_ms or deliver_at_ms, not both",
                ));
            }
            (Some(delay), None) => message = message.with_delay(in_range("delay_ms", delay)?),
            (None, Some(at)) => {
                let at = UNIX_EPOCH
                    .checked_add(Duration::from_millis(at))
                    .filter(|_| at > 0)
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "deliver_at_ms {at}: not a time (ms since the Unix epoch)"
                        ))
                    })?;
                message = message.deliver_at(at);
            }
            (None, None) => {}
        }
        Ok(message)
    }
}

/// Replaces each message's `service` with the topic of the service's nearest deployment
/// (GSL, through the proxy's client and its cache): 400 when both or neither of `topic` and
/// `service` are given or no GSL is configured, 404 when the service is not deployed, 503
/// when none of its deployments is routable.
pub async fn resolve_services(
    client: &client::Client,
    messages: &mut [OutgoingMessage],
) -> Result<(), ApiError> {
    for message in messages.iter() {
        match (&message.service, message.topic.is_empty()) {
            (Some(_), false) => {
                return Err(ApiError::bad_request("give topic or service, not both"));
            }
            (None, true) => return Err(ApiError::bad_request("missing topic (or service)")),
            _ => {}
        }
    }
    if messages.iter().all(|m| m.service.is_none()) {
        return Ok(());
    }
    let locator = client.locator();
    let services: Vec<Option<String>> = messages.iter().map(|m| m.service.clone()).collect();
    // The first resolution of a service asks GSL over the network: off the async workers.
    let topics = tokio::task::spawn_blocking(move || {
        services
            .into_iter()
            .map(|service| match service {
                None => Ok(None),
                Some(service) => {
                    service
                        .parse::<protocol::names::ServiceId>()
                        .map_err(|e| ApiError::bad_request(e.to_string()))?;
                    let topics = locator.topics(&service).map_err(ApiError::from)?;
                    Ok(topics.into_iter().next())
                }
            })
            .collect::<Result<Vec<Option<String>>, ApiError>>()
    })
    .await
    .map_err(|e| ApiError::internal(format!("service resolution failed: {e}")))??;
    for (message, topic) in messages.iter_mut().zip(topics) {
        if let Some(topic) = topic {
            message.topic = topic;
            message.service = None;
        }
    }
    Ok(())
}

/// The bytes of a payload given as exactly one of `value` (text) and `value_b64` (base64).
pub fn payload(value: Option<&str>, value_b64: Option<&str>) -> Result<Vec<u8>, ApiError> {
    match (value, value_b64) {
        (Some(text), None) => Ok(text.as_bytes().to_vec()),
        (None, Some(encoded)) => BASE64
            .decode(encoded)
            .map_err(|e| ApiError::bad_request(format!("value_b64 is not base64: {e}"))),
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "give value (text) or value_b64 (base64 bytes), not both",
        )),
        (None, None) => Err(ApiError::bad_request(
            "missing value (text) or value_b64 (base64 bytes)",
        )),
    }
}

/// A payload as delivered: `value` when it is UTF-8 text, else `value_b64`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Value {
    /// The payload, when it is valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The payload in base64, when it is not valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_b64: Option<String>,
}

impl Value {
    /// The JSON form of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => Self {
                value: Some(text.to_owned()),
                value_b64: None,
            },
            Err(_) => Self {
                value: None,
                value_b64: Some(BASE64.encode(bytes)),
            },
        }
    }
}

/// Base64 of bytes that have no text form (correlation ids).
pub fn base64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// The bytes of base64 `text` in field `field`, or 400.
pub fn unbase64(field: &str, text: &str) -> Result<Vec<u8>, ApiError> {
    BASE64
        .decode(text)
        .map_err(|e| ApiError::bad_request(format!("{field} is not base64: {e}")))
}

/// A message as delivered to a caller: pushed to a webhook or a WebSocket, or a reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveredMessage {
    /// The topic it was stored in.
    pub topic: String,
    /// The queue of the topic.
    pub queue_id: u32,
    /// Its offset in that queue.
    pub offset: u64,
    /// The payload: `value` (UTF-8 text) or `value_b64` (base64 bytes).
    #[serde(flatten)]
    pub value: Value,
    /// The key, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The tag, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The request's deadline (ms since the Unix epoch), for requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Requests only: the requester's client id, for `POST /v1/reply`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Requests only: the request's correlation id (base64), for `POST /v1/reply`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Producer timestamp, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// User properties (lossy UTF-8 values).
    pub properties: BTreeMap<String, String>,
    /// The W3C trace context the sender gave, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<crate::trace::TraceFields>,
}

impl From<&ReceivedMessage> for DeliveredMessage {
    fn from(m: &ReceivedMessage) -> Self {
        let request = m.message_type == client::MessageType::Request;
        Self {
            topic: m.topic.clone(),
            queue_id: m.queue_id,
            offset: m.offset,
            value: Value::of(&m.value),
            key: (!m.key.is_empty()).then(|| String::from_utf8_lossy(&m.key).into_owned()),
            tag: m.tag.clone(),
            deadline_ms: m.deadline_ms,
            reply_to: m.reply_to.clone().filter(|_| request),
            correlation_id: m.correlation_id.as_deref().filter(|_| request).map(base64),
            timestamp_ms: m.timestamp_ms,
            properties: m
                .properties
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                .collect(),
            trace: m.trace.as_ref().map(crate::trace::TraceFields::of),
        }
    }
}

/// Where a published message was stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The topic.
    pub topic: String,
    /// The broker that stored it.
    pub broker_id: String,
    /// The queue.
    pub queue_id: u32,
    /// The offset in the queue; for a delayed message, in the queue's held log.
    pub offset: u64,
    /// A delayed message's id (`topic/queue/offset@broker`), to cancel it by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_id: Option<String>,
}

impl From<client::SendResult> for Stored {
    fn from(r: client::SendResult) -> Self {
        Self {
            held_id: r.held_id().map(|id| id.to_string()),
            topic: r.topic,
            broker_id: r.broker_id,
            queue_id: r.queue_id,
            offset: r.offset,
        }
    }
}

/// How a subscription consumes: one member of the group per message, or every member.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Each message goes to one member of the group.
    #[default]
    Clustering,
    /// Each member gets every message.
    Broadcast,
}

impl From<Mode> for client::ConsumeMode {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Clustering => Self::Clustering,
            Mode::Broadcast => Self::Broadcast,
        }
    }
}

/// Where a group with no committed offset starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    /// At the committed offset, else the oldest message.
    #[default]
    Committed,
    /// At the oldest message.
    Earliest,
    /// At the next message.
    Latest,
}

impl From<Start> for client::StartFrom {
    fn from(start: Start) -> Self {
        match start {
            Start::Committed => Self::Committed,
            Start::Earliest => Self::Earliest,
            Start::Latest => Self::Latest,
        }
    }
}

/// Parses a JSON value, answering 400 with serde's message (line and column included).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
}

/// A JSON body, whatever its content type (curl's `-d` says form data): 413 past
/// `body_bytes_max`, 400 when it is not the expected JSON.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.config.body_bytes_max;
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    return ApiError::payload_too_large(limit);
                }
                match body_timeout(&rejection) {
                    Some(after) => ApiError::request_timeout(after),
                    None => ApiError::bad_request(rejection.body_text()),
                }
            })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// The body timeout, when that is why the body could not be read (the deadline's error sits
/// somewhere in the rejection's chain of causes).
fn body_timeout(rejection: &(dyn std::error::Error + 'static)) -> Option<std::time::Duration> {
    let mut cause = Some(rejection);
    while let Some(error) = cause {
        if let Some(crate::conn::BodyError::TimedOut { after }) = error.downcast_ref() {
            return Some(*after);
        }
        cause = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            system: "payments".into(),
            area: "A10".into(),
            group: "settle".into(),
            instance: "host-1.7".into(),
        }
    }

    #[test]
    fn identities_validate_and_map_to_valid_client_ids() {
        let id = identity();
        id.validate().unwrap();
        assert_eq!(id.client_id(), "payments/settle/host-1.7#A10");
        id.client_id().parse::<protocol::names::ClientId>().unwrap();
        let bad = Identity {
            instance: "a b".into(),
            ..identity()
        };
        assert!(bad.validate().unwrap_err().message.contains("instance"));
        let bad = Identity {
            area: "a1".into(),
            ..identity()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn outgoing_messages_reject_unknown_fields_and_bad_topics() {
        let m: OutgoingMessage =
            parse_json(br#"{"topic":"A10-1","value":"v","properties":{"k":"x"}}"#).unwrap();
        let message = m.to_message().unwrap();
        assert_eq!(message.properties(), &[("k".into(), b"x".to_vec())]);
        assert_eq!(message.value(), b"v");
        assert!(parse_json::<OutgoingMessage>(br#"{"topic":"A10-1","valu":"v"}"#).is_err());
        let bad: OutgoingMessage = parse_json(br#"{"topic":"no topic","value":""}"#).unwrap();
        assert!(bad.to_message().is_err());
    }

    #[test]
    fn values_are_text_or_base64_exactly_once() {
        let m: OutgoingMessage = parse_json(br#"{"topic":"A10-1","value_b64":"AP8="}"#).unwrap();
        assert_eq!(m.to_message().unwrap().value(), [0x00, 0xFF]);
        for bad in [
            r#"{"topic":"A10-1"}"#,
            r#"{"topic":"A10-1","value":"a","value_b64":"YQ=="}"#,
            r#"{"topic":"A10-1","value_b64":"not base64!"}"#,
        ] {
            let m: OutgoingMessage = parse_json(bad.as_bytes()).unwrap();
            let error = m.to_message().unwrap_err();
            assert!(error.message.contains("value"), "{bad}: {error}");
        }
        let text = serde_json::to_value(Value::of(b"caf\xc3\xa9")).unwrap();
        assert_eq!(text, serde_json::json!({"value": "café"}));
        let bytes = serde_json::to_value(Value::of(&[0x00, 0xFF])).unwrap();
        assert_eq!(bytes, serde_json::json!({"value_b64": "AP8="}));
    }
}
