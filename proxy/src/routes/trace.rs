//! `GET /v1/trace`: one message's life (stored, pushed, committed, replied) as
//! [`crate::trace::TraceAnswer`], from the brokers holding the topic's queues.
//!
//! Query: `topic` (required); `offset`, `key` (with `search` and `matches`), `queue` and
//! `broker`:
//! - `offset`: the message at that offset of each queue asked;
//! - `key`: the newest `matches` (default 10, at most 16) messages with that key among the
//!   newest `search` (default 10000, at most 1000000) records of each queue asked;
//! - both: the message at `offset`, only if its key is `key`;
//! - neither: the newest message of each queue asked;
//! - `queue`, `broker`: ask only that queue id, or that broker's queues (none match: an
//!   answer with no queue).
//!
//! The caller needs `consume` on the topic for every group (a grant whose group is `*`): a
//! trace shows every group's progress.

use auth::Action;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use client::{Admin, TraceLookup};
use serde::Deserialize;

use crate::caller::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use crate::trace::TraceAnswer;

/// Records a key search reads by default, newest first.
pub const SEARCH_DEFAULT: u64 = 10_000;
/// Matches a key search returns by default per queue.
pub const MATCHES_DEFAULT: u32 = 10;
/// Longest `key`, in characters (4 KiB of UTF-8 at most, within a record key's limit).
pub const KEY_CHARS_MAX: usize = 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceQuery {
    topic: String,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    queue: Option<u32>,
    #[serde(default)]
    broker: Option<String>,
    #[serde(default)]
    search: Option<u64>,
    #[serde(default)]
    matches: Option<u32>,
}

impl TraceQuery {
    /// What to ask the brokers; 400 for a value out of its documented bounds, whether or not
    /// the lookup would use it.
    fn lookup(&self) -> Result<TraceLookup, ApiError> {
        let search = self.search.unwrap_or(SEARCH_DEFAULT);
        let matches = self.matches.unwrap_or(MATCHES_DEFAULT);
        if search == 0 || search > protocol::control::TRACE_SEARCH_RECORDS_MAX {
            return Err(ApiError::bad_request(format!(
                "search {search}: between 1 and {}",
                protocol::control::TRACE_SEARCH_RECORDS_MAX
            )));
        }
        if matches == 0 || matches > protocol::control::TRACE_MATCHES_MAX {
            return Err(ApiError::bad_request(format!(
                "matches {matches}: between 1 and {}",
                protocol::control::TRACE_MATCHES_MAX
            )));
        }
        if let Some(key) = &self.key {
            if key.is_empty() || key.chars().count() > KEY_CHARS_MAX {
                return Err(ApiError::bad_request(format!(
                    "key: 1 to {KEY_CHARS_MAX} characters"
                )));
            }
        }
        if self.broker.as_deref().is_some_and(str::is_empty) {
            return Err(ApiError::bad_request("broker is empty"));
        }
        let mut lookup = match (self.offset, &self.key) {
            (Some(offset), _) => TraceLookup::offset(offset),
            (None, Some(key)) => TraceLookup::key(key.as_bytes().to_vec(), search, matches),
            (None, None) => TraceLookup::newest(),
        };
        lookup.queue_id = self.queue;
        lookup.broker_id = self.broker.clone();
        Ok(lookup)
    }
}

pub async fn trace(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<TraceQuery>, QueryRejection>,
) -> Result<Json<TraceAnswer>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    query
        .topic
        .parse::<protocol::names::Topic>()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let lookup = query.lookup()?;
    caller.check(
        &state,
        Action::Consume,
        &query.topic,
        Some(crate::trace::TRACE_GROUP),
    )?;
    state.shared.limits.check_http(&caller.rate_key(), 1)?;
    let admin = Admin::new(&state.shared.client);
    let topic = query.topic.clone();
    // The trace reads stored data on the brokers and waits for them: off the async workers.
    let mut replies = tokio::task::spawn_blocking(move || admin.trace(&topic, &lookup))
        .await
        .map_err(|e| ApiError::internal(format!("trace task failed: {e}")))??;
    // With both an offset and a key, the message at the offset counts only with that key.
    if let (Some(_), Some(key)) = (query.offset, &query.key) {
        for reply in &mut replies {
            reply.messages.retain(|m| m.key == key.as_bytes());
        }
    }
    Ok(Json(TraceAnswer::of(&query.topic, &replies)))
}
