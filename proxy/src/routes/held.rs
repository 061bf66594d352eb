//! Held messages (ARCHITECTURE §13.3-§13.4): `POST /v1/delayed/cancel` cancels a delayed
//! message; `POST /v1/transactions` sends a transactional half, and
//! `POST /v1/transactions/commit` / `.../rollback` give its outcome. Ids are the
//! `topic/queue/offset@broker` strings the sends answer with, so they travel in bodies.

use std::collections::BTreeMap;

use auth::Action;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use client::{Half, HeldId};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{JsonBody, OutgoingMessage};
use crate::caller::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// `{"id"}`: which held message.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ById {
    id: String,
}

impl ById {
    /// The id; 400 when it is not `topic/queue/offset@broker`.
    fn parse(&self) -> Result<HeldId, ApiError> {
        self.id
            .parse::<HeldId>()
            .map_err(|e| ApiError::bad_request(format!("id: {e}")))
    }
}

/// A half: a message and the producer group that answers for it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HalfBody {
    producer_group: String,
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
}

/// `POST /v1/delayed/cancel`: a delayed message is never delivered. 409 (`held_settled`)
/// once it was delivered or cancelled, 404 (`not_held`) for an id that names none.
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<ById>,
) -> Result<Json<Value>, ApiError> {
    let id = body.parse()?;
    caller.check(&state, Action::Produce, &id.topic, None)?;
    state.shared.limits.check_http(&caller.rate_key(), 1)?;
    let shared = state.shared.clone();
    let held = id.clone();
    blocking(move || shared.producer.cancel(&held)).await?;
    Ok(Json(
        json!({ "id": id.to_string(), "outcome": "cancelled" }),
    ))
}

/// `POST /v1/transactions`: stores a half, invisible until committed.
pub async fn begin(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<HalfBody>,
) -> Result<Json<Value>, ApiError> {
    let trace = crate::trace::from_headers(&headers)?;
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
    caller.check(&state, Action::Produce, message.topic(), None)?;
    state.shared.limits.check_http(&caller.rate_key(), 1)?;
    let group = body.producer_group;
    let shared = state.shared.clone();
    let half = blocking(move || {
        let producer = shared.transactions.of(&shared.client, &group)?;
        Ok::<_, ApiError>((producer.send_half(message)?, group))
    });
    let (half, group) = half.await?;
    let id = half.id();
    Ok(Json(json!({
        "id": id.to_string(),
        "producer_group": group,
        "topic": id.topic,
        "broker_id": id.broker_id,
        "queue_id": id.queue_id,
        "offset": id.offset,
    })))
}

/// `POST /v1/transactions/commit`: the half is delivered. Committing twice is no error; after
/// a rollback 409 (`held_settled`).
pub async fn commit(
    state: State<AppState>,
    caller: Caller,
    body: JsonBody<ById>,
) -> Result<Json<Value>, ApiError> {
    end(state, caller, body, true).await
}

/// `POST /v1/transactions/rollback`: the half is never delivered. After a commit 409.
pub async fn rollback(
    state: State<AppState>,
    caller: Caller,
    body: JsonBody<ById>,
) -> Result<Json<Value>, ApiError> {
    end(state, caller, body, false).await
}

async fn end(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<ById>,
    commit: bool,
) -> Result<Json<Value>, ApiError> {
    let id = body.parse()?;
    caller.check(&state, Action::Produce, &id.topic, None)?;
    state.shared.limits.check_http(&caller.rate_key(), 1)?;
    let half = Half::of(&state.shared.client, id.clone());
    blocking(move || {
        if commit {
            half.commit()
        } else {
            half.rollback()
        }
    })
    .await?;
    let outcome = if commit { "committed" } else { "rolled_back" };
    Ok(Json(json!({ "id": id.to_string(), "outcome": outcome })))
}

/// Runs a blocking bus call off the async workers.
async fn blocking<T: Send + 'static, E: Into<ApiError> + Send + 'static>(
    call: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(move || call().map_err(Into::into))
        .await
        .map_err(|e| ApiError::internal(format!("bus call failed: {e}")))?
}
