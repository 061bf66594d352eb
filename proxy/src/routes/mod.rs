//! The HTTP API: one module per resource. [`ROUTES`] lists every (method, path) the router
//! serves; a test checks that the OpenAPI document describes each of them.

mod console;
mod heartbeat;
mod held;
mod openapi;
mod publish;
mod reply;
mod request;
mod subscriptions;
mod trace;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::state::AppState;

pub use request::{request_reply, request_timeout};

/// Every route: (method, path in OpenAPI form).
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/publish"),
    ("post", "/v1/request"),
    ("post", "/v1/reply"),
    ("post", "/v1/delayed/cancel"),
    ("post", "/v1/transactions"),
    ("post", "/v1/transactions/commit"),
    ("post", "/v1/transactions/rollback"),
    ("post", "/v1/subscriptions"),
    ("get", "/v1/subscriptions/{id}"),
    ("delete", "/v1/subscriptions/{id}"),
    ("post", "/v1/heartbeat"),
    ("get", "/v1/trace"),
    ("get", "/v1/stream"),
    ("get", "/openapi.json"),
    ("get", "/health"),
    ("get", "/v1/cluster"),
    ("get", "/v1/topics"),
    ("get", "/v1/groups"),
    ("get", "/v1/services"),
    ("post", "/v1/services/{id}/{action}"),
    ("get", "/console"),
    ("get", "/console/{file}"),
];

/// The router of the whole API, WebSocket endpoint included. Every route but
/// `/openapi.json`, `/health` and the console's files sits behind [`crate::caller::authenticate`] (which lets
/// everyone through with security off).
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.body_bytes_max;
    let authenticated = Router::new()
        .route("/v1/publish", post(publish::publish))
        .route("/v1/request", post(request::request))
        .route("/v1/reply", post(reply::reply))
        .route("/v1/delayed/cancel", post(held::cancel))
        .route("/v1/transactions", post(held::begin))
        .route("/v1/transactions/commit", post(held::commit))
        .route("/v1/transactions/rollback", post(held::rollback))
        .route("/v1/subscriptions", post(subscriptions::create))
        .route(
            "/v1/subscriptions/{id}",
            get(subscriptions::show).delete(subscriptions::remove),
        )
        .route("/v1/heartbeat", post(heartbeat::heartbeat))
        .route("/v1/trace", get(trace::trace))
        .route("/v1/stream", get(crate::ws::upgrade))
        .route("/v1/cluster", get(console::cluster))
        .route("/v1/topics", get(console::topics))
        .route("/v1/groups", get(console::groups))
        .route("/v1/services", get(console::services))
        .route("/v1/services/{id}/{action}", post(console::act))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::caller::authenticate,
        ));
    Router::new()
        .merge(authenticated)
        .route("/openapi.json", get(openapi::document))
        .route("/health", get(health))
        // The console's files are open to all (they hold no data; the page asks for a
        // token when the API answers 401).
        .route("/console", get(crate::console::assets::page))
        .route("/console/{file}", get(crate::console::assets::file))
        // After every route: errors are JSON (the API's promise), a wrong method too.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(|| async { crate::error::ApiError::not_found("no such endpoint") })
        .layer(DefaultBodyLimit::max(body_limit))
        // Outermost, after routing: sees each request's route template and final status.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::record,
        ))
        .with_state(state)
}

/// 405 for a route that exists with another method, as the API's JSON error.
async fn method_not_allowed(
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> crate::error::ApiError {
    crate::error::ApiError::method_not_allowed(format!("{method} is not allowed on {}", uri.path()))
}

/// `GET /health`: the proxy is serving. Open to all, for load balancers and probes; says
/// nothing about the bus behind it.
async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_describes_every_route() {
        let doc: serde_json::Value = serde_json::from_str(openapi::OPENAPI_JSON).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        for (method, path) in ROUTES {
            let operation = &doc["paths"][path][method];
            assert!(
                operation.is_object(),
                "{method} {path} missing from openapi.json"
            );
            assert!(
                operation["responses"].is_object(),
                "{method} {path} has no responses"
            );
        }
        let documented: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| {
                let methods = ["get", "post", "put", "patch", "delete"];
                p.as_object()
                    .unwrap()
                    .keys()
                    .filter(|k| methods.contains(&k.as_str()))
                    .count()
            })
            .sum();
        assert_eq!(
            documented,
            ROUTES.len(),
            "openapi.json documents a route not served"
        );
    }
}
