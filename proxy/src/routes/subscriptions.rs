//! `POST /v1/subscriptions` (webhook push), `GET` and `DELETE /v1/subscriptions/{id}`. The
//! delivery and give-up policy is in [`crate::webhook`].

use auth::Action;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use crate::api::{Identity, JsonBody, Mode, Start};
use crate::caller::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use crate::webhook::store::HookSpec;
use crate::webhook::{HookError, HookInfo};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    identity: Identity,
    topic: String,
    group: String,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    start: Start,
    /// Where to POST each message: `http://host:port/path`.
    url: String,
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<(StatusCode, Json<HookInfo>), ApiError> {
    body.identity.validate()?;
    body.topic
        .parse::<protocol::names::Topic>()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    body.group
        .parse::<protocol::names::GroupName>()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if !body.url.starts_with("http://") || body.url.len() <= "http://".len() {
        return Err(ApiError::bad_request(format!(
            "url {:?}: an http:// URL is needed",
            body.url
        )));
    }
    caller.check(&state, Action::Consume, &body.topic, Some(&body.group))?;
    let spec = HookSpec {
        id: state.shared.webhooks.next_id(),
        identity: body.identity,
        topic: body.topic,
        group: body.group,
        mode: body.mode,
        start: body.start,
        url: body.url,
        owner: caller.principal().map(str::to_owned),
    };
    let shared = state.shared.clone();
    let config = state.config.clone();
    let created = tokio::task::spawn_blocking(move || shared.webhooks.create(spec, &config))
        .await
        .map_err(|e| ApiError::internal(format!("subscribe task failed: {e}")))?;
    match created {
        Ok(info) => {
            log::info!(
                "webhook subscription {} to {} -> {}",
                info.id,
                info.topic,
                info.url
            );
            Ok((StatusCode::CREATED, Json(info)))
        }
        Err(error) => Err(hook_error(&state, error)),
    }
}

fn hook_error(state: &AppState, error: HookError) -> ApiError {
    match error {
        HookError::TooMany => ApiError::too_many(format!(
            "{} webhook subscriptions exist",
            state.config.subscriptions_max
        )),
        HookError::Duplicate(existing) => ApiError::conflict(format!(
            "this identity already subscribes to the topic as {existing}"
        )),
        HookError::Client(e) => ApiError::from(e),
        HookError::Storage(e) => ApiError::storage(e),
    }
}

pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<HookInfo>, ApiError> {
    let info = state
        .shared
        .webhooks
        .info(&id)
        .ok_or_else(|| ApiError::not_found(format!("no subscription {id}")))?;
    caller.check(&state, Action::Consume, &info.topic, Some(&info.group))?;
    Ok(Json(info))
}

/// Only a caller that could have created the subscription (one granted `consume` on its topic
/// as its group) may remove it.
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if let Some(info) = state.shared.webhooks.info(&id) {
        caller.check(&state, Action::Consume, &info.topic, Some(&info.group))?;
    }
    let shared = state.shared.clone();
    let lookup = id.clone();
    let removed = tokio::task::spawn_blocking(move || shared.webhooks.remove(&lookup))
        .await
        .map_err(|e| ApiError::internal(format!("unsubscribe task failed: {e}")))?
        .map_err(|e| hook_error(&state, e))?;
    if removed {
        log::info!("webhook subscription {id} removed");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no subscription {id}")))
    }
}
