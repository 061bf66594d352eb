//! Who is calling. With `[security]` on, every route but `/openapi.json` and `/health` needs
//! `Authorization: Bearer <token>` (the WebSocket upgrade also takes `?access_token=`, since a
//! browser cannot set headers on a WebSocket handshake) or, over TLS, a verified client
//! certificate, whose principal ([`tls::principal_of`]) stands for a token's (a token
//! presented beside a certificate is the one that counts); [`authenticate`] checks this
//! before any handler runs and leaves a [`Caller`] for the handlers. The proxy acts for its callers
//! with its own bus credentials, so it must never do more than the caller may: before each
//! bus action a handler asks [`Caller::check`], which answers 403 with the denial (audited by
//! the authority) when the caller's principal has no grant for it.
//!
//! With security off, [`Caller`] carries no principal and every check passes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use auth::{Action, AuthError};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// The WebSocket endpoint, the one route that also takes its token from the query string.
const STREAM_PATH: &str = "/v1/stream";
/// The query parameter carrying a token on the WebSocket upgrade (RFC 6750 §2.3).
const ACCESS_TOKEN_PARAM: &str = "access_token";

/// The principal a connection's verified client certificate names (`crate::handshake`),
/// put on each of its requests.
#[derive(Clone, Debug)]
pub struct CertificatePrincipal(pub Arc<str>);

/// The authenticated caller of one HTTP request or WebSocket session.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The token's principal; `None` with security off.
    principal: Option<Arc<str>>,
    /// The peer address, for the audit log and the rate limit with security off.
    peer: SocketAddr,
    /// Until when the token holds, ms since the Unix epoch: a WebSocket session outlives the
    /// upgrade, so each check looks again. `u64::MAX` for a certificate, whose validity the
    /// handshake checked.
    expires_at_ms: u64,
}

impl Caller {
    /// The token's principal, when security is on.
    pub fn principal(&self) -> Option<&str> {
        self.principal.as_deref()
    }

    /// The peer address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The caller's rate-limit bucket: its principal when authenticated, else its IP address
    /// (the port changes with every connection). Never anything the caller declares about
    /// itself, so a fresh `identity` per request does not get a fresh bucket.
    pub fn rate_key(&self) -> String {
        match &self.principal {
            Some(principal) => format!("principal {principal}"),
            None => format!("address {}", self.peer.ip()),
        }
    }

    /// May the caller have the proxy do `action` on `resource` (as `group`, for `consume`)?
    /// 401 once the token has expired, 403 naming principal, action and resource without a
    /// grant (audited by the authority).
    pub fn check(
        &self,
        state: &AppState,
        action: Action,
        resource: &str,
        group: Option<&str>,
    ) -> Result<(), ApiError> {
        let Some(principal) = &self.principal else {
            return Ok(());
        };
        if auth::now_ms() >= self.expires_at_ms {
            return Err(ApiError::unauthenticated(format!(
                "the token of principal {principal:?} has expired"
            )));
        }
        state
            .shared
            .authority
            .check(principal, &self.peer.to_string(), action, resource, group)
            .map_err(|denial| ApiError::forbidden(denial.to_string()))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // Every route that extracts a caller sits behind `authenticate`, which inserts it.
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::internal("route served without authentication"))
    }
}

/// The middleware in front of every protected route: authenticates the request's token and
/// inserts its [`Caller`], or answers 401 `unauthenticated` with `WWW-Authenticate: Bearer`.
/// Failures are audited by the authority.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0), |c| {
            c.0
        });
    let authority = &state.shared.authority;
    if !authority.is_enabled() {
        request.extensions_mut().insert(Caller {
            principal: None,
            peer,
            expires_at_ms: u64::MAX,
        });
        return next.run(request).await;
    }
    let peer_text = peer.to_string();
    let certificate = request
        .extensions()
        .get::<CertificatePrincipal>()
        .map(|c| c.0.clone());
    let token = match presented_token(&request) {
        Ok(Some(token)) => token,
        Ok(None) if certificate.is_some() => {
            request.extensions_mut().insert(Caller {
                principal: certificate,
                peer,
                expires_at_ms: u64::MAX,
            });
            return next.run(request).await;
        }
        Ok(None) => {
            authority.refuse_unauthenticated(&peer_text, request.uri().path());
            return unauthenticated(
                None,
                format!("{}: send Authorization: Bearer <token>", AuthError::Missing),
            );
        }
        Err(reason) => {
            authority.refuse_unauthenticated(&peer_text, request.uri().path());
            return unauthenticated(Some("invalid_request"), reason.to_owned());
        }
    };
    match authority.authenticate(&token, &peer_text) {
        Ok(session) => {
            request.extensions_mut().insert(Caller {
                principal: Some(Arc::from(session.principal)),
                peer,
                expires_at_ms: session.expires_at_ms,
            });
            next.run(request).await
        }
        Err(e) => unauthenticated(Some("invalid_token"), e.to_string()),
    }
}

/// The token the request presents: the `Authorization: Bearer` header, else (WebSocket
/// upgrade only) the `access_token` query parameter. `Err` for an `Authorization` header
/// that is not a bearer token.
fn presented_token(request: &Request) -> Result<Option<String>, &'static str> {
    if let Some(value) = request.headers().get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| "the Authorization header is not ASCII")?;
        let (scheme, token) = value
            .trim()
            .split_once(' ')
            .ok_or("the Authorization header must be `Bearer <token>`")?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err("the Authorization header must be `Bearer <token>`");
        }
        return Ok(Some(token.trim().to_owned()));
    }
    if request.uri().path() != STREAM_PATH {
        return Ok(None);
    }
    let token = request.uri().query().and_then(|query| {
        query.split('&').find_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            (name == ACCESS_TOKEN_PARAM && !value.is_empty()).then(|| value.to_owned())
        })
    });
    Ok(token)
}

/// 401 with the challenge RFC 6750 asks for (`error` names what was wrong with a token).
fn unauthenticated(error: Option<&str>, message: String) -> Response {
    let challenge = match error {
        Some(error) => format!("Bearer realm=\"defibus\", error=\"{error}\""),
        None => "Bearer realm=\"defibus\"".to_owned(),
    };
    let mut response = ApiError::unauthenticated(message).into_response();
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}
