//! The JSON shapes shared by the HTTP routes and the WebSocket protocol: client identity,
//! messages going to the bus and messages coming from it, and the body extractor that turns
//! malformed JSON into 400 and an oversized body into 413.
//!
//! Values, keys and property values are UTF-8 text; bytes that are not UTF-8 are delivered
//! with U+FFFD in their place.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
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
    /// The topic, `[area]-[serviceId]`.
    pub topic: String,
    /// The payload, UTF-8 text.
    pub value: String,
    /// Optional key: equal keys go to one queue, in order.
    #[serde(default)]
    pub key: Option<String>,
    /// Optional tag (dark launch, filtering).
    #[serde(default)]
    pub tag: Option<String>,
    /// User properties.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl OutgoingMessage {
    /// The client message.
    pub fn to_message(&self) -> Message {
        let mut message = Message::new(self.topic.clone(), self.value.as_bytes().to_vec());
        if let Some(key) = &self.key {
            message = message.with_key(key.as_bytes().to_vec());
        }
        if let Some(tag) = &self.tag {
            message = message.with_tag(tag.clone());
        }
        for (k, v) in &self.properties {
            message = message.with_property(k.clone(), v.as_bytes().to_vec());
        }
        message
    }

    /// Rejects a topic that is not a bus topic name before any bus call.
    pub fn validate(&self) -> Result<(), ApiError> {
        self.topic
            .parse::<protocol::names::Topic>()
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(())
    }
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
    /// The payload (lossy UTF-8).
    pub value: String,
    /// The key, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The tag, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The request's deadline (ms since the Unix epoch), for requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Producer timestamp, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// User properties (lossy UTF-8 values).
    pub properties: BTreeMap<String, String>,
}

impl From<&ReceivedMessage> for DeliveredMessage {
    fn from(m: &ReceivedMessage) -> Self {
        Self {
            topic: m.topic.clone(),
            queue_id: m.queue_id,
            offset: m.offset,
            value: String::from_utf8_lossy(&m.value).into_owned(),
            key: (!m.key.is_empty()).then(|| String::from_utf8_lossy(&m.key).into_owned()),
            tag: m.tag.clone(),
            deadline_ms: m.deadline_ms,
            timestamp_ms: m.timestamp_ms,
            properties: m
                .properties
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                .collect(),
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
    /// The offset in the queue.
    pub offset: u64,
}

impl From<client::SendResult> for Stored {
    fn from(r: client::SendResult) -> Self {
        Self {
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
                    ApiError::payload_too_large(limit)
                } else {
                    ApiError::bad_request(rejection.body_text())
                }
            })?;
        parse_json(&bytes).map(JsonBody)
    }
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
        m.validate().unwrap();
        assert_eq!(m.to_message().properties(), &[("k".into(), b"x".to_vec())]);
        assert!(parse_json::<OutgoingMessage>(br#"{"topic":"A10-1","valu":"v"}"#).is_err());
        let bad: OutgoingMessage = parse_json(br#"{"topic":"no topic","value":""}"#).unwrap();
        assert!(bad.validate().is_err());
    }
}
