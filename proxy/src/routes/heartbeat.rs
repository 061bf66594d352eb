//! `POST /v1/heartbeat`: an HTTP client says it is alive, which renews the lease of its
//! webhook subscriptions (`subscription_lease_ms`).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use crate::api::{Identity, JsonBody};
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatBody {
    identity: Identity,
}

pub async fn heartbeat(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<HeartbeatBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    body.identity.validate()?;
    let client_id = body.identity.client_id();
    let subscriptions = state.shared.webhooks.renew(&client_id);
    Ok(Json(serde_json::json!({
        "client_id": client_id,
        "subscriptions": subscriptions,
        "lease_ms": state.config.subscription_lease_ms,
    })))
}
