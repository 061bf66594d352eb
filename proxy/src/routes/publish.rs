//! `POST /v1/publish`: one message (`{"topic", "value", ...}`) or a batch
//! (`{"messages": [...]}`), each stored before the answer.

use std::collections::{BTreeMap, BTreeSet};

use auth::Action;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::api::{Identity, JsonBody, OutgoingMessage, Stored};
use crate::caller::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// A single publish: the message's fields at the top level.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Single {
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
    #[serde(default)]
    trace: Option<crate::trace::TraceFields>,
    #[serde(default)]
    ttl_ms: Option<u64>,
    #[serde(default)]
    delay_ms: Option<u64>,
    #[serde(default)]
    deliver_at_ms: Option<u64>,
}

/// A batch publish.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    #[serde(default)]
    identity: Option<Identity>,
    messages: Vec<OutgoingMessage>,
}

pub async fn publish(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Result<Response, ApiError> {
    let trace = crate::trace::from_headers(&headers)?;
    let is_batch = body.get("messages").is_some();
    let (identity, mut messages) = if is_batch {
        let batch: Batch = from_value(body)?;
        (batch.identity, batch.messages)
    } else {
        let single: Single = from_value(body)?;
        let message = OutgoingMessage {
            topic: single.topic,
            service: single.service,
            value: single.value,
            value_b64: single.value_b64,
            key: single.key,
            tag: single.tag,
            properties: single.properties,
            trace: single.trace,
            ttl_ms: single.ttl_ms,
            delay_ms: single.delay_ms,
            deliver_at_ms: single.deliver_at_ms,
        };
        (single.identity, vec![message])
    };
    if let Some(identity) = &identity {
        identity.validate()?;
    }
    if messages.is_empty() {
        return Err(ApiError::bad_request("messages is empty"));
    }
    if messages.len() > state.config.publish_batch_max {
        return Err(ApiError::bad_request(format!(
            "{} messages: at most {} per publish",
            messages.len(),
            state.config.publish_batch_max
        )));
    }
    crate::api::resolve_services(&state.shared.client, &mut messages).await?;
    let messages = messages
        .iter()
        .map(|m| m.to_traced_message(trace.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    // The whole publish is refused when one topic is not granted: a caller learns of the
    // denial before anything it sent is stored. Checked before the rate limit, so refused
    // publishes take no tokens.
    let topics: BTreeSet<&str> = messages.iter().map(client::Message::topic).collect();
    for topic in topics {
        caller.check(&state, Action::Produce, topic, None)?;
    }
    state
        .shared
        .limits
        .check_http(&caller.rate_key(), messages.len())?;
    let results = send_all(&state, messages, is_batch).await?;
    if !is_batch {
        let result = results.into_iter().next().expect("one message, one result");
        return result.map(|stored| Json(stored).into_response());
    }
    let first_error = results.iter().find_map(|r| r.as_ref().err()).cloned();
    let items: Vec<serde_json::Value> = results
        .into_iter()
        .map(|r| match r {
            Ok(stored) => serde_json::to_value(stored).unwrap_or_default(),
            Err(e) => e.body(),
        })
        .collect();
    match first_error {
        None => Ok((
            StatusCode::OK,
            Json(serde_json::json!({ "results": items })),
        )
            .into_response()),
        // The batch is answered with its first failure's status; `results` tells which
        // messages were stored, so a caller can retry only the others.
        Some(error) => {
            let mut body = error.body();
            body["results"] = serde_json::Value::Array(items);
            Ok((error.status, Json(body)).into_response())
        }
    }
}

/// `body`, parsed once already, as `T`; a mismatch is the caller's 400.
fn from_value<T: serde::de::DeserializeOwned>(body: serde_json::Value) -> Result<T, ApiError> {
    serde_json::from_value(body).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
}

/// Sends every message concurrently and waits for each acknowledgement. The client may
/// block the sending thread (connecting, writing), so this runs on the blocking pool.
async fn send_all(
    state: &AppState,
    messages: Vec<client::Message>,
    is_batch: bool,
) -> Result<Vec<Result<Stored, ApiError>>, ApiError> {
    let shared = state.shared.clone();
    let timeout = state.config.request_timeout();
    tokio::task::spawn_blocking(move || {
        let producer = if is_batch {
            &shared.batch_producer
        } else {
            &shared.producer
        };
        let pending: Vec<_> = messages
            .into_iter()
            .map(|m| producer.send_async(m))
            .collect();
        pending
            .into_iter()
            .map(|future| {
                future
                    .wait(timeout)
                    .map(Stored::from)
                    .map_err(ApiError::from)
            })
            .collect()
    })
    .await
    .map_err(|e| ApiError::internal(format!("publish task failed: {e}")))
}
