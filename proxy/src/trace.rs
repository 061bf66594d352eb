//! W3C trace context at the proxy (`docs/ARCHITECTURE.md` §12), and one message's life as
//! JSON (`GET /v1/trace`, `defibus trace --json`).
//!
//! **In.** `POST /v1/publish`, `/v1/request` and `/v1/reply` read the `traceparent` and
//! `tracestate` headers; a message may instead carry a `trace` object
//! (`{"traceparent", "tracestate"}`), which wins over the headers for that message (the
//! WebSocket's `publish`, `request` and `reply` carry only the object). A `traceparent` that
//! breaks the W3C rules, or more than one `traceparent` header, is refused with 400 and the
//! rule it breaks. A `tracestate` the rules refuse is dropped and the `traceparent` kept, as
//! W3C asks of a receiver (it must not pass on a list it cannot parse); several `tracestate`
//! headers are one list (RFC 9110 §5.3).
//!
//! **Out.** Every delivered message carries its context as a `trace` object (webhook bodies,
//! WebSocket `message`, `request` and `reply` frames, the request's answer); the answer to
//! `POST /v1/request` and every webhook POST also carry it as `traceparent` and `tracestate`
//! headers.

use axum::http::{HeaderMap, HeaderValue};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use client::{
    CommitTime, GroupLife, MessageLife, MessageType, ReplySearch, TraceContext, TraceParent,
    TraceReply, TraceState,
};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// The `traceparent` header's name.
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` header's name.
pub const TRACESTATE: &str = "tracestate";
/// The group a trace's caller must be allowed to consume as: every group (`*`), since a trace
/// shows every group's progress (the broker checks the proxy's own grant the same way).
pub const TRACE_GROUP: &str = "*";

/// A trace context as JSON: on messages going to the bus and coming from it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceFields {
    /// The W3C `traceparent`.
    pub traceparent: String,
    /// The W3C `tracestate`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

impl TraceFields {
    /// The JSON form of `context`.
    pub fn of(context: &TraceContext) -> Self {
        Self {
            traceparent: context.traceparent(),
            tracestate: context.tracestate().map(str::to_owned),
        }
    }

    /// The context: 400 for an invalid `traceparent`; an invalid `tracestate` is dropped.
    pub fn to_context(&self) -> Result<TraceContext, ApiError> {
        context(&self.traceparent, self.tracestate.as_deref())
    }
}

/// The context of `traceparent` and `tracestate` as received: see the module docs.
fn context(traceparent: &str, tracestate: Option<&str>) -> Result<TraceContext, ApiError> {
    let parent =
        TraceParent::parse(traceparent).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let state = tracestate.and_then(|text| match TraceState::parse(text) {
        Ok(state) => Some(state),
        Err(e) => {
            log::debug!("tracestate dropped: {e}");
            None
        }
    });
    Ok(TraceContext { parent, state })
}

/// The context the `traceparent` and `tracestate` headers carry, if any.
pub fn from_headers(headers: &HeaderMap) -> Result<Option<TraceContext>, ApiError> {
    let mut parents = headers.get_all(TRACEPARENT).iter();
    let Some(parent) = parents.next() else {
        return Ok(None);
    };
    if parents.next().is_some() {
        return Err(ApiError::bad_request(
            "more than one traceparent header: a request carries one",
        ));
    }
    let parent = parent
        .to_str()
        .map_err(|_| ApiError::bad_request("the traceparent header is not ASCII"))?;
    // Several tracestate fields are one list; a field that is not text is not a list.
    let states: Option<Vec<&str>> = headers
        .get_all(TRACESTATE)
        .iter()
        .map(|v| v.to_str().ok())
        .collect();
    let state = states.filter(|s| !s.is_empty()).map(|s| s.join(","));
    context(parent, state.as_deref()).map(Some)
}

/// The context a message of an HTTP call carries: its own `trace` object, else the headers'.
pub fn of_message(
    own: Option<&TraceFields>,
    headers: Option<&TraceContext>,
) -> Result<Option<TraceContext>, ApiError> {
    match own {
        Some(fields) => fields.to_context().map(Some),
        None => Ok(headers.cloned()),
    }
}

/// Sets the `traceparent` and `tracestate` headers of `context`.
pub fn insert_headers(headers: &mut HeaderMap, context: &TraceContext) {
    if let Ok(value) = HeaderValue::from_str(&context.traceparent()) {
        headers.insert(TRACEPARENT, value);
    }
    if let Some(Ok(value)) = context.tracestate().map(HeaderValue::from_str) {
        headers.insert(TRACESTATE, value);
    }
}

/// `GET /v1/trace`'s answer: the topic and every queue asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceAnswer {
    /// The topic.
    pub topic: String,
    /// One entry per queue asked, by broker then queue id.
    pub queues: Vec<QueueTrace>,
}

impl TraceAnswer {
    /// The JSON form of the broker's answers.
    pub fn of(topic: &str, replies: &[TraceReply]) -> Self {
        Self {
            topic: topic.to_owned(),
            queues: replies.iter().map(QueueTrace::of).collect(),
        }
    }
}

/// One queue's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueTrace {
    /// The broker holding the queue.
    pub broker_id: String,
    /// The shard owning it.
    pub shard_id: u32,
    /// The queue id.
    pub queue_id: u32,
    /// Its oldest retained offset when asked.
    pub start_offset: u64,
    /// Its next offset when asked.
    pub next_offset: u64,
    /// The broker's clock when it answered, ms since the Unix epoch.
    pub now_ms: i64,
    /// A key search read offsets `[searched_from, searched_to)`.
    pub searched_from: u64,
    /// See `searched_from`.
    pub searched_to: u64,
    /// The messages found, oldest first.
    pub messages: Vec<MessageTrace>,
}

impl QueueTrace {
    fn of(reply: &TraceReply) -> Self {
        Self {
            broker_id: reply.broker_id.clone(),
            shard_id: reply.shard_id,
            queue_id: reply.queue_id,
            start_offset: reply.start_offset,
            next_offset: reply.next_offset,
            now_ms: reply.now_ms,
            searched_from: reply.searched_from,
            searched_to: reply.searched_to,
            messages: reply
                .messages
                .iter()
                .map(|m| MessageTrace::of(m, reply.now_ms))
                .collect(),
        }
    }
}

/// One message's life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageTrace {
    /// Its offset.
    pub offset: u64,
    /// The first offset of its batch.
    pub batch_base_offset: u64,
    /// Records in its batch.
    pub batch_records: u32,
    /// When the broker stored it, ms since the Unix epoch.
    pub stored_ms: i64,
    /// The producer's create time.
    pub created_ms: i64,
    /// `event`, `request` or `reply`.
    #[serde(rename = "type")]
    pub message_type: String,
    /// The key (lossy UTF-8), `null` when none.
    pub key: Option<String>,
    /// Bytes of the value.
    pub value_bytes: u32,
    /// Its trace context, `null` when none.
    pub trace: Option<TraceFields>,
    /// Per group.
    pub groups: Vec<GroupTrace>,
    /// For a request: deadline and reply; `null` otherwise.
    pub request: Option<RequestTrace>,
}

impl MessageTrace {
    fn of(life: &MessageLife, now_ms: i64) -> Self {
        let message_type = MessageType::from_code(life.message_type).unwrap_or_default();
        Self {
            offset: life.offset,
            batch_base_offset: life.batch_base_offset,
            batch_records: life.batch_records,
            stored_ms: life.stored_ms,
            created_ms: life.created_ms,
            message_type: message_type.name().to_owned(),
            key: (!life.key.is_empty()).then(|| String::from_utf8_lossy(&life.key).into_owned()),
            value_bytes: life.value_bytes,
            trace: life.traceparent.as_ref().map(|traceparent| TraceFields {
                traceparent: traceparent.clone(),
                tracestate: life.tracestate.clone(),
            }),
            groups: life.groups.iter().map(GroupTrace::of).collect(),
            request: life.request.as_ref().map(|request| {
                let (reply, found) = ReplyTrace::of(&request.reply);
                RequestTrace {
                    reply_to: request.reply_to.clone(),
                    correlation_id: BASE64.encode(&request.correlation_id),
                    deadline_ms: request.deadline_ms,
                    expired: !found && now_ms > request.deadline_ms as i64,
                    reply,
                }
            }),
        }
    }
}

/// One push of the message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushTrace {
    /// The member pushed to.
    pub client_id: String,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
    /// First offset of the push.
    pub from_offset: u64,
    /// Offset after its last record.
    pub to_offset: u64,
}

/// One group's dealings with the message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupTrace {
    /// The group (broadcast members as `group/client_id`).
    pub group: String,
    /// The member holding the queue now, `null` when none.
    pub assigned_to: Option<String>,
    /// The pushes that carried the message, oldest first.
    pub pushes: Vec<PushTrace>,
    /// Every push since this time is remembered (older ones may be missing).
    pub pushes_remembered_since_ms: i64,
    /// The group's committed offset now, `null` when none.
    pub committed_offset: Option<u64>,
    /// When it committed past the message.
    pub committed: CommitTrace,
}

impl GroupTrace {
    fn of(group: &GroupLife) -> Self {
        Self {
            group: group.group.clone(),
            assigned_to: (!group.client_id.is_empty()).then(|| group.client_id.clone()),
            pushes: group
                .pushes
                .iter()
                .map(|p| PushTrace {
                    client_id: p.client_id.clone(),
                    at_ms: p.at_ms,
                    from_offset: p.from_offset,
                    to_offset: p.to_offset,
                })
                .collect(),
            pushes_remembered_since_ms: group.pushes_since_ms,
            committed_offset: group.committed_offset,
            committed: CommitTrace::of(&group.committed),
        }
    }
}

/// When a group committed past the message: `state` is `committed` (at `at_ms`),
/// `not_committed`, `after` (the search stopped at a commit stored at `at_ms`: the first
/// commit past the message is later) or `unknown` (`reason`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitTrace {
    /// `committed`, `not_committed`, `after` or `unknown`.
    pub state: String,
    /// See `state`; `null` when it names no time.
    pub at_ms: Option<i64>,
    /// Why the time is unknown; `null` otherwise.
    pub reason: Option<String>,
}

impl CommitTrace {
    fn of(committed: &CommitTime) -> Self {
        let (state, at_ms, reason) = match committed {
            CommitTime::NotCommitted => ("not_committed", None, None),
            CommitTime::At(at) => ("committed", Some(*at), None),
            CommitTime::After(at) => ("after", Some(*at), None),
            CommitTime::Unknown(why) => ("unknown", None, Some(why.clone())),
        };
        Self {
            state: state.to_owned(),
            at_ms,
            reason,
        }
    }
}

/// A request's deadline and reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestTrace {
    /// The requester's client id.
    pub reply_to: String,
    /// The correlation id, base64.
    pub correlation_id: String,
    /// The deadline, ms since the Unix epoch.
    pub deadline_ms: u64,
    /// No reply was found and the deadline has passed.
    pub expired: bool,
    /// The reply.
    pub reply: ReplyTrace,
}

/// A request's reply: `state` is `found` (stored at `at_ms` in the reply queue of shard
/// `shard_id`, at `offset`), `not_found`, `after` (the search stopped at a reply stored at
/// `at_ms`) or `unknown` (`reason`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyTrace {
    /// `found`, `not_found`, `after` or `unknown`.
    pub state: String,
    /// See `state`.
    pub at_ms: Option<i64>,
    /// The shard whose reply queue holds it.
    pub shard_id: Option<u32>,
    /// Its offset in that reply queue.
    pub offset: Option<u64>,
    /// The reply's `traceparent`.
    pub traceparent: Option<String>,
    /// Why it is unknown.
    pub reason: Option<String>,
}

impl ReplyTrace {
    /// The JSON form, and whether the reply was found.
    fn of(search: &ReplySearch) -> (Self, bool) {
        let none = Self {
            state: String::new(),
            at_ms: None,
            shard_id: None,
            offset: None,
            traceparent: None,
            reason: None,
        };
        match search {
            ReplySearch::Found(reply) => (
                Self {
                    state: "found".into(),
                    at_ms: Some(reply.stored_ms),
                    shard_id: Some(reply.shard_id),
                    offset: Some(reply.offset),
                    traceparent: reply.traceparent.clone(),
                    ..none
                },
                true,
            ),
            ReplySearch::NotFound => (
                Self {
                    state: "not_found".into(),
                    ..none
                },
                false,
            ),
            ReplySearch::After(at) => (
                Self {
                    state: "after".into(),
                    at_ms: Some(*at),
                    ..none
                },
                false,
            ),
            ReplySearch::Unknown(why) => (
                Self {
                    state: "unknown".into(),
                    reason: Some(why.clone()),
                    ..none
                },
                false,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn headers_give_a_context_and_an_invalid_tracestate_is_dropped() {
        let mut headers = HeaderMap::new();
        assert_eq!(from_headers(&headers).unwrap(), None);
        headers.insert(TRACEPARENT, HeaderValue::from_static(PARENT));
        headers.append(TRACESTATE, HeaderValue::from_static("a=1"));
        headers.append(TRACESTATE, HeaderValue::from_static("b=2"));
        let context = from_headers(&headers).unwrap().unwrap();
        assert_eq!(context.tracestate(), Some("a=1,b=2"));
        let mut out = HeaderMap::new();
        insert_headers(&mut out, &context);
        assert_eq!(out[TRACEPARENT], PARENT);
        assert_eq!(out[TRACESTATE], "a=1,b=2");
        headers.insert(TRACESTATE, HeaderValue::from_static("a=1,a=2"));
        assert_eq!(from_headers(&headers).unwrap().unwrap().state, None);
        headers.append(TRACEPARENT, HeaderValue::from_static(PARENT));
        assert!(
            from_headers(&headers)
                .unwrap_err()
                .message
                .contains("more than one")
        );
        let mut zero = HeaderMap::new();
        zero.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        );
        let error = from_headers(&zero).unwrap_err();
        assert_eq!(error.status, axum::http::StatusCode::BAD_REQUEST);
        assert!(error.message.contains("all zeros"), "{error}");
    }

    #[test]
    fn a_messages_own_context_wins_over_the_headers() {
        let headers = TraceContext::parse(Some(PARENT), None).unwrap();
        let own = TraceFields {
            traceparent: "00-11111111111111111111111111111111-2222222222222222-00".into(),
            tracestate: None,
        };
        let chosen = of_message(Some(&own), headers.as_ref()).unwrap().unwrap();
        assert_eq!(chosen.traceparent(), own.traceparent);
        assert_eq!(of_message(None, headers.as_ref()).unwrap(), headers);
    }
}
