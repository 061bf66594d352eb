//! `POST /v1/request`: sends a request and answers with the reply, or 504 at the deadline.

use std::collections::BTreeMap;
use std::time::Duration;

use auth::Action;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use client::Requester;
use serde::Deserialize;

use crate::api::{DeliveredMessage, Identity, JsonBody, OutgoingMessage};
use crate::caller::Caller;
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestBody {
    #[serde(default)]
    identity: Option<Identity>,
    #[serde(default)]
    topic: String,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    value_b64: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    properties: BTreeMap<String, String>,
    /// How long to wait for the reply; also the request's deadline on the bus.
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    trace: Option<crate::trace::TraceFields>,
}

/// Answers with the reply; its trace context also goes out as the `traceparent` and
/// `tracestate` headers.
pub async fn request(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<RequestBody>,
) -> Result<(HeaderMap, Json<DeliveredMessage>), ApiError> {
    let trace = crate::trace::from_headers(&headers)?;
    if let Some(identity) = &body.identity {
        identity.validate()?;
    }
    let timeout = request_timeout(&state, body.timeout_ms)?;
    let mut outgoing = [OutgoingMessage {
        topic: body.topic,
        service: body.service,
        value: body.value,
        value_b64: body.value_b64,
        key: body.key,
        tag: body.tag,
        properties: body.properties,
        trace: body.trace,
        ..OutgoingMessage::default()
    }];
    crate::api::resolve_services(&state.shared.client, &mut outgoing).await?;
    let message = outgoing[0].to_traced_message(trace.as_ref())?;
    caller.check(&state, Action::Request, message.topic(), None)?;
    state.shared.limits.check_http(&caller.rate_key(), 1)?;
    let requester = state.shared.requester.clone();
    let reply = request_reply(requester, message, timeout).await?;
    let mut out = HeaderMap::new();
    if let Some(trace) = &reply.trace {
        crate::trace::insert_headers(&mut out, trace);
    }
    Ok((out, Json(DeliveredMessage::from(&reply))))
}

/// The reply wait a caller asked for, within the configured bounds.
pub fn request_timeout(state: &AppState, timeout_ms: Option<u64>) -> Result<Duration, ApiError> {
    let ms = timeout_ms.unwrap_or(state.config.request_timeout_ms);
    if ms == 0 || ms > state.config.request_timeout_ms_max {
        return Err(ApiError::bad_request(format!(
            "timeout_ms {ms}: between 1 and {}",
            state.config.request_timeout_ms_max
        )));
    }
    Ok(Duration::from_millis(ms))
}

/// Sends `message` as a request and waits for the reply: 504 at the deadline. The send
/// itself may block (connecting, writing), so it starts on the blocking pool; the wait is an
/// async future and holds no thread.
pub async fn request_reply(
    requester: Requester,
    message: client::Message,
    timeout: Duration,
) -> Result<client::Reply, ApiError> {
    let reply = tokio::task::spawn_blocking(move || requester.request_async(message, timeout))
        .await
        .map_err(|e| ApiError::internal(format!("request task failed: {e}")))?;
    // The client ends the wait at the deadline itself; the outer timeout only guards
    // against a future that is never completed.
    match tokio::time::timeout(timeout + Duration::from_secs(1), reply).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(client::ClientError::Timeout { .. })) | Err(_) => Err(ApiError::timeout(timeout)),
        Ok(Err(e)) => Err(ApiError::from(e)),
    }
}
