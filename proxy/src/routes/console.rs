//! The read API the console (and any tool) uses, and the service lifecycle actions:
//! `GET /v1/cluster`, `GET /v1/topics[?topic=]`, `GET /v1/groups[?topic=]`,
//! `GET /v1/services`, `POST /v1/services/{id}/deploy|offline`. See [`crate::console`].
//!
//! Who may call them follows the bus: reading brokers' statistics, topic lists, the cluster
//! and the SGS's service list needs an authenticated caller and no grant (as `admin topic
//! stats`, `admin broker list` and `sgs service list` do against the brokers, nameservers
//! and SGS); a lifecycle action needs `admin_service` on the service id, as the SGS asks
//! of `defibus sgs service deploy`.

use auth::Action;
use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;

use crate::caller::Caller;
use crate::console::sgs::Lifecycle;
use crate::console::view::{ClusterView, GroupsView, ServiceView, ServicesView, TopicsView};
use crate::error::ApiError;
use crate::state::AppState;

/// `?topic=`: only this topic.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicFilter {
    topic: Option<String>,
}

impl TopicFilter {
    /// The topic asked for, checked to be a topic name (400 otherwise).
    fn topic(self) -> Result<Option<String>, ApiError> {
        if let Some(topic) = &self.topic {
            topic
                .parse::<protocol::names::Topic>()
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
        }
        Ok(self.topic)
    }
}

pub async fn cluster(State(state): State<AppState>) -> Result<Json<ClusterView>, ApiError> {
    state.shared.console.cluster().await.map(Json)
}

pub async fn topics(
    State(state): State<AppState>,
    filter: Result<Query<TopicFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<TopicsView>, ApiError> {
    let only = query(filter)?.topic()?;
    state.shared.console.topics(only).await.map(Json)
}

pub async fn groups(
    State(state): State<AppState>,
    filter: Result<Query<TopicFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<GroupsView>, ApiError> {
    let only = query(filter)?.topic()?;
    state.shared.console.groups(only).await.map(Json)
}

pub async fn services(State(state): State<AppState>) -> Result<Json<ServicesView>, ApiError> {
    state.shared.console.services().await.map(Json)
}

/// `POST /v1/services/{id}/{action}`: 400 for a bad id, 404 for an action the SGS does not
/// offer or a service it does not hold, 403 without `admin_service` on the id.
pub async fn act(
    State(state): State<AppState>,
    caller: Caller,
    Path((service_id, action)): Path<(String, String)>,
) -> Result<Json<ServiceView>, ApiError> {
    let action = Lifecycle::parse(&action).ok_or_else(|| {
        ApiError::not_found(format!(
            "no service action {action:?}: the actions are deploy and offline"
        ))
    })?;
    service_id
        .parse::<protocol::names::ServiceId>()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    caller.check(&state, Action::AdminService, &service_id, None)?;
    state.shared.console.act(action, service_id).await.map(Json)
}

/// The query, or 400 naming what is wrong with it.
fn query<T>(
    query: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}
