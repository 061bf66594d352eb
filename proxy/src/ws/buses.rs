//! The bus clients WebSocket sessions share: one per area a session names in its `hello`,
//! created at the first such session and kept until the proxy closes.
//!
//! A bus client owns a connection per broker shard and a handful of threads (readers, the
//! batcher, timers). One per session cost 5 threads and a connection per shard per session,
//! 1,280 threads at the default 256 sessions; sharing keeps that at one client per area. A
//! session still acts as itself: its consumers and responders subscribe as members named
//! by its identity ([`client::Member`]), so groups balance over sessions and a reconnecting
//! identity resumes its broadcast offsets; its publishes and requests are its area's (the
//! client's area is the one its messages are stamped with and routed nearby from).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use client::{Client, Producer, Requester};

use crate::error::ApiError;
use crate::state::{AppState, client_config, keyed_producer};

/// Areas whose sessions one proxy serves at once: each costs a bus client, so a caller
/// inventing areas cannot make the proxy open clients without end.
pub const WS_AREAS_MAX: usize = 16;

/// One area's shared bus roles.
pub struct AreaBus {
    client: Client,
    producer: Producer,
    requester: Requester,
}

impl AreaBus {
    /// The client, for subscriptions and service lookups.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Publishes: keyed, coalesced like a batch publish (`publish_batch_linger_ms`).
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// Requests; replies come back to this client and are matched by request id.
    pub fn requester(&self) -> &Requester {
        &self.requester
    }
}

/// The shared clients by area.
#[derive(Default)]
pub struct AreaBuses {
    by_area: Mutex<HashMap<String, Arc<AreaBus>>>,
}

impl AreaBuses {
    /// The bus of `area`, created on first use. Blocking (a new client fetches its first
    /// routes): call it off the runtime. The lock is held while a client is created, so two
    /// sessions of a new area create one; other areas' sessions wait that long too, once.
    pub fn get(&self, state: &AppState, area: &str) -> Result<Arc<AreaBus>, ApiError> {
        let mut by_area = self.by_area.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bus) = by_area.get(area) {
            return Ok(bus.clone());
        }
        if by_area.len() >= WS_AREAS_MAX {
            let mut areas: Vec<&str> = by_area.keys().map(String::as_str).collect();
            areas.sort_unstable();
            return Err(ApiError::too_many(format!(
                "this proxy serves sessions of at most {WS_AREAS_MAX} areas at once ({}); \
                 area {area} is not one of them",
                areas.join(", ")
            )));
        }
        let config = client_config(&state.config, state.shared.bus_token.as_deref(), area, None)
            .map_err(|e| ApiError::bad_request(e.to_string()))?
            .with_batch_linger(Duration::from_millis(state.config.publish_batch_linger_ms));
        let client = Client::new(config)?;
        let producer = keyed_producer(&client)?;
        let requester = Requester::new(&client);
        let bus = Arc::new(AreaBus {
            client,
            producer,
            requester,
        });
        log::info!(
            "WebSocket sessions of area {area} share bus client {}",
            bus.client.client_id()
        );
        by_area.insert(area.to_owned(), bus.clone());
        Ok(bus)
    }

    /// How many areas have a shared client.
    pub fn area_count(&self) -> usize {
        self.by_area
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Closes every shared client; blocking. Sessions are closed before (their
    /// subscriptions committed and gone).
    pub fn close_all(&self) {
        let buses: Vec<Arc<AreaBus>> = self
            .by_area
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, bus)| bus)
            .collect();
        for bus in buses {
            bus.client.close();
        }
    }
}
