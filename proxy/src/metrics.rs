//! The proxy's Prometheus metrics: HTTP requests by route and status with their durations,
//! open WebSocket sessions, webhook deliveries, connections.
//!
//! Recording takes no lock: requests are counted in a table of relaxed atomics allocated at
//! start, one row per route of [`ROUTES`] (method and path template, never the raw path) and
//! one for everything unmatched, one column per status code; durations go to one
//! [`AtomicHistogram`] per row. Webhook posters count into [`crate::webhook::WebhookTotals`].
//! Sessions, subscriptions and connections are read when scraped (each under its registry's
//! lock, once per scrape). The `/metrics` endpoint is a thread of its own
//! ([`telemetry::Endpoint`]) on its own address, apart from the API.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use telemetry::{AtomicHistogram, Scrape};

use crate::conn::Admission;
use crate::routes::ROUTES;
use crate::state::AppState;

/// The row of requests that matched no route of [`ROUTES`] (a wrong path or method).
const UNMATCHED: usize = ROUTES.len();
/// Rows of the table: every route, and the unmatched.
const ROWS: usize = ROUTES.len() + 1;
/// Status codes counted: 100 to 999, all that HTTP can say.
const STATUS_MIN: u16 = 100;
const STATUSES: usize = 900;

/// What the proxy counts as it serves; shared by the router and the endpoint.
pub struct ProxyMetrics {
    /// Requests by row and status: `row * STATUSES + (status - 100)`.
    requests: Box<[AtomicU64]>,
    /// Microseconds from a request's head to its response's, by row.
    durations: Box<[AtomicHistogram]>,
    /// Connections refused at accept (a connection cap reached).
    connections_refused: AtomicU64,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self {
            requests: (0..ROWS * STATUSES).map(|_| AtomicU64::new(0)).collect(),
            durations: (0..ROWS).map(|_| AtomicHistogram::default()).collect(),
            connections_refused: AtomicU64::new(0),
        }
    }
}

impl ProxyMetrics {
    /// One request of `row` answered `status` after `micros`.
    fn served(&self, row: usize, status: u16, micros: u64) {
        let column = usize::from(status.saturating_sub(STATUS_MIN)).min(STATUSES - 1);
        self.requests[row * STATUSES + column].fetch_add(1, Ordering::Relaxed);
        self.durations[row].observe(micros);
    }

    /// A connection was refused at accept.
    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }
}

/// The row of a request: its route's index in [`ROUTES`] when the router matched its path
/// and the route serves its method, else [`UNMATCHED`].
fn row_of(method: &Method, matched: Option<&MatchedPath>) -> usize {
    let Some(path) = matched.map(MatchedPath::as_str) else {
        return UNMATCHED;
    };
    ROUTES
        .iter()
        .position(|(m, p)| *p == path && m.eq_ignore_ascii_case(method.as_str()))
        .unwrap_or(UNMATCHED)
}

/// Middleware around every route and the fallbacks: counts each request by route and status
/// and observes how long it took to answer (to the response head; a WebSocket session is
/// counted once, at its upgrade).
pub(crate) async fn record(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let row = row_of(request.method(), request.extensions().get::<MatchedPath>());
    let response = next.run(request).await;
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    state
        .shared
        .metrics
        .served(row, response.status().as_u16(), micros);
    response
}

/// Serves `/metrics` on `listener` (none when `None`: metrics off, or the address could not
/// be bound, which [`telemetry::bind_or_warn`] logged). A proxy without one still serves.
pub(crate) fn start(
    listener: Option<std::net::TcpListener>,
    state: AppState,
    admission: Arc<Admission>,
) -> Option<telemetry::Endpoint> {
    let render = Box::new(move || Some(scrape(&state, &admission)));
    telemetry::serve_or_warn(listener, render)
}

fn labels_of(row: usize) -> (String, &'static str) {
    match ROUTES.get(row) {
        Some((method, path)) => (method.to_ascii_uppercase(), path),
        None => ("other".to_owned(), "unmatched"),
    }
}

fn scrape(state: &AppState, admission: &Admission) -> Scrape {
    let metrics = &state.shared.metrics;
    let mut scrape = Scrape::default();
    for row in 0..ROWS {
        let (method, route) = labels_of(row);
        let counts = &metrics.requests[row * STATUSES..(row + 1) * STATUSES];
        for (column, count) in counts.iter().enumerate() {
            let count = count.load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            let status = (STATUS_MIN + column as u16).to_string();
            scrape.counter(
                "defibus_proxy_requests",
                "HTTP requests answered, by method, route template (unmatched: no route) and \
                 status.",
                &[("method", &method), ("route", route), ("status", &status)],
                count,
            );
        }
    }
    for row in 0..ROWS {
        let durations = metrics.durations[row].snapshot();
        if durations.count() == 0 {
            continue;
        }
        let (method, route) = labels_of(row);
        scrape.histogram(
            "defibus_proxy_request_duration_seconds",
            "Time from a request's head to its response's, by method and route template.",
            &[("method", &method), ("route", route)],
            &durations,
            1e-6,
        );
    }
    scrape.gauge(
        "defibus_proxy_websocket_sessions",
        "Open WebSocket sessions.",
        &[],
        state.shared.sessions.len() as u64,
    );
    scrape.gauge(
        "defibus_proxy_websocket_bus_clients",
        "Bus clients the WebSocket sessions share: one per area with a session.",
        &[],
        state.shared.session_buses.area_count() as u64,
    );
    let webhooks = &state.shared.webhooks;
    scrape.gauge(
        "defibus_proxy_webhook_subscriptions",
        "Webhook subscriptions held (active, resuming or suspended).",
        &[],
        webhooks.count() as u64,
    );
    for (outcome, count) in webhooks.totals().counts() {
        scrape.counter(
            "defibus_proxy_webhook_deliveries",
            "Webhook deliveries, by outcome: delivered (2xx), failed (an attempt; retried or, \
             the last, given up), given_up (a message skipped after its last attempt), expired \
             (a request past its deadline, not posted), replied (a reply taken from the \
             answer).",
            &[("outcome", outcome)],
            count,
        );
    }
    scrape.gauge(
        "defibus_proxy_connections",
        "Open HTTP and WebSocket connections.",
        &[],
        admission.open() as u64,
    );
    scrape.counter(
        "defibus_proxy_connections_refused",
        "Connections refused at accept: connections_max or connections_per_ip_max reached.",
        &[],
        metrics.connections_refused.load(Ordering::Relaxed),
    );
    scrape
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_counted_in_its_routes_row_and_its_status_column() {
        let metrics = ProxyMetrics::default();
        let publish = ROUTES
            .iter()
            .position(|r| *r == ("post", "/v1/publish"))
            .unwrap();
        metrics.served(publish, 200, 10);
        metrics.served(publish, 200, 20);
        metrics.served(UNMATCHED, 404, 5);
        assert_eq!(
            metrics.requests[publish * STATUSES + 100].load(Ordering::Relaxed),
            2
        );
        assert_eq!(
            metrics.requests[UNMATCHED * STATUSES + 304].load(Ordering::Relaxed),
            1
        );
        assert_eq!(metrics.durations[publish].snapshot().count(), 2);
        assert_eq!(labels_of(publish), ("POST".to_owned(), "/v1/publish"));
        assert_eq!(labels_of(UNMATCHED), ("other".to_owned(), "unmatched"));
    }
}
