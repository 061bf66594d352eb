//! `GET /v1/stream`: the WebSocket endpoint (protocol in [`protocol`]).
//!
//! Sessions share one bus client per area ([`buses`]); each subscribes as a group member
//! whose id derives from the identity in `hello`, so a client reconnecting with the same
//! identity resumes where it left: its subscriptions' groups restart at their committed
//! offsets, which cover only acked messages. A `hello` with an identity already connected
//! replaces the older session (closed first).
//!
//! Module map: [`protocol`] the JSON frames, `session` one connection's life and commands,
//! [`buses`] the shared bus clients, `pump` the blocking threads that move messages from a
//! consumer to the socket under the unacked window, and the responder bridge.

pub mod buses;
pub mod protocol;
mod pump;
mod session;

pub use buses::AreaBuses;

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use crate::caller::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// The live sessions by client id, each with a stop signal and a done signal.
pub struct Sessions {
    live: Mutex<HashMap<String, SessionEntry>>,
    /// Sessions upgraded and not yet ended, identified or not (for `ws_sessions_max`).
    count: Mutex<usize>,
    /// Set at proxy shutdown; every session, identified or not, watches it.
    shutdown: watch::Sender<bool>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self {
            live: Mutex::default(),
            count: Mutex::default(),
            shutdown: watch::channel(false).0,
        }
    }
}

struct SessionEntry {
    generation: u64,
    stop: watch::Sender<bool>,
    done: watch::Receiver<bool>,
}

impl Sessions {
    /// Registers `client_id` for a new session; returns the stop signal it must watch and
    /// the done signal of a session it replaces (the caller waits for that first).
    fn register(
        &self,
        client_id: &str,
        generation: u64,
        done: watch::Receiver<bool>,
    ) -> (watch::Receiver<bool>, Option<watch::Receiver<bool>>) {
        let (stop, stopped) = watch::channel(false);
        let entry = SessionEntry {
            generation,
            stop,
            done,
        };
        let old = self.lock().insert(client_id.to_owned(), entry);
        let replaced = old.map(|old| {
            let _ = old.stop.send(true);
            old.done
        });
        (stopped, replaced)
    }

    /// Forgets `client_id` if `generation` still holds it.
    fn unregister(&self, client_id: &str, generation: u64) {
        let mut live = self.lock();
        if live
            .get(client_id)
            .is_some_and(|e| e.generation == generation)
        {
            live.remove(client_id);
        }
    }

    /// Tells every session to close (proxy shutdown), without waiting.
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    /// The proxy-wide shutdown signal.
    fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Tells every session to stop and waits until each has closed its client (each for at
    /// most `WS_REPLACE_WAIT`), woken by its done signal rather than polling it.
    pub async fn close_all(&self) {
        let entries: Vec<SessionEntry> = self.lock().drain().map(|(_, e)| e).collect();
        for entry in &entries {
            let _ = entry.stop.send(true);
        }
        for mut entry in entries {
            // An error means the session is gone, which is as done as it gets.
            let done = entry.done.wait_for(|done| *done);
            let _ = tokio::time::timeout(crate::config::WS_REPLACE_WAIT, done).await;
        }
    }

    /// Sessions identified so far.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no session is identified.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn try_admit(&self, max: usize) -> bool {
        let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        if *count >= max {
            return false;
        }
        *count += 1;
        true
    }

    fn release(&self) {
        let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        *count = count.saturating_sub(1);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionEntry>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Upgrades to a WebSocket session for `caller` (authenticated on the upgrade request), or
/// 429 when `ws_sessions_max` sessions are open.
pub async fn upgrade(
    State(state): State<AppState>,
    caller: Caller,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // A request that is no WebSocket upgrade gets the API's JSON error, not axum's text.
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            return ApiError::bad_request(format!(
                "/v1/stream is a WebSocket endpoint: {}",
                rejection.body_text()
            ))
            .into_response();
        }
    };
    if !state
        .shared
        .sessions
        .try_admit(state.config.ws_sessions_max)
    {
        return ApiError::too_many(format!(
            "{} WebSocket sessions open",
            state.config.ws_sessions_max
        ))
        .into_response();
    }
    let max = state.config.body_bytes_max;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_failed_upgrade({
            let state = state.clone();
            move |e| {
                log::debug!("WebSocket upgrade failed: {e}");
                state.shared.sessions.release();
            }
        })
        .on_upgrade(move |socket| async move {
            session::run(state.clone(), socket, caller).await;
            state.shared.sessions.release();
        })
}
