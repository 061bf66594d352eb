//! `POST /v1/reply`: answers a request that reached the caller by a webhook (or any other
//! way), addressed by what the request carried: `topic`, `queue_id`, `reply_to` and
//! `correlation_id` (base64). 204 once a broker took the reply; 404 `no_requester` when the
//! requester is gone or its deadline passed (nobody waits for the reply).

use auth::Action;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use client::ReplyAddress;
use serde::Deserialize;

use crate::api::{Identity, JsonBody, payload, unbase64};
use crate::caller::Caller;
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyBody {
    #[serde(default)]
    identity: Option<Identity>,
    /// The request's topic.
    topic: String,
    /// The queue the request was stored in.
    queue_id: u32,
    /// The requester's client id, from the request's `reply_to`.
    reply_to: String,
    /// The request's `correlation_id`, base64 as delivered.
    correlation_id: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    value_b64: Option<String>,
    /// The reply's trace context; wins over the headers'.
    #[serde(default)]
    trace: Option<crate::trace::TraceFields>,
}

/// The reply carries the trace context the caller gives (its `trace` object, else the
/// `traceparent` and `tracestate` headers), none otherwise: the proxy keeps nothing of the
/// requests it pushed, so a responder passes on the context the request came with.
pub async fn reply(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<ReplyBody>,
) -> Result<StatusCode, ApiError> {
    let headers_trace = crate::trace::from_headers(&headers)?;
    if let Some(identity) = &body.identity {
        identity.validate()?;
    }
    body.topic
        .parse::<protocol::names::Topic>()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if body.reply_to.is_empty() {
        return Err(ApiError::bad_request("reply_to is empty"));
    }
    caller.check(&state, Action::Respond, &body.topic, None)?;
    let value = payload(body.value.as_deref(), body.value_b64.as_deref())?;
    let address = ReplyAddress {
        topic: body.topic,
        queue_id: body.queue_id,
        reply_to: body.reply_to,
        correlation_id: unbase64("correlation_id", &body.correlation_id)?,
        trace: crate::trace::of_message(body.trace.as_ref(), headers_trace.as_ref())?,
    };
    let replier = state.shared.replier.clone();
    tokio::task::spawn_blocking(move || replier.reply(&address, value))
        .await
        .map_err(|e| ApiError::internal(format!("reply task failed: {e}")))??;
    Ok(StatusCode::NO_CONTENT)
}
