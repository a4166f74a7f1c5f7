//! The admin routes (SPEC 12): `/metrics` and `/healthz/*` (open to loopback when
//! `[admin] open_metrics`, else with a token), and under `/api/v1/` the JSON API, which
//! always needs a bearer token (`vouchmail admin token create`): 401 without one or with
//! an unknown one, 403 with a revoked one. Request bodies are limited and every request
//! has a deadline.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::rules::admin_tokens::{check_token, TokenCheck};
use crate::support::metrics;

use super::state::{error, AdminState, Operator};

/// The store must answer a readiness probe within this.
const READY_WITHIN: Duration = Duration::from_secs(1);

pub fn router(state: Arc<AdminState>, max_body_bytes: usize, request_timeout: Duration) -> Router {
    let open = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz/live", get(live))
        .route("/healthz/ready", get(ready))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), open_on_loopback));
    let api = super::api::routes().layer(middleware::from_fn_with_state(Arc::clone(&state), require_token));
    Router::new()
        .merge(open)
        .nest("/api/v1", api)
        .merge(super::console::routes())
        .merge(super::autoconfig::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn(move |request: Request, next: Next| deadline(request, next, request_timeout)))
        .with_state(state)
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such page")
}

async fn deadline(request: Request, next: Next, within: Duration) -> Response {
    match tokio::time::timeout(within, next.run(request)).await {
        Ok(response) => response,
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the request took too long"),
    }
}

/// RFC 6750 2.1: `Authorization: Bearer <token>`.
fn bearer(request: &Request) -> Option<&str> {
    let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn is_loopback(request: &Request) -> bool {
    request.extensions().get::<ConnectInfo<SocketAddr>>().is_some_and(|ConnectInfo(peer)| peer.ip().is_loopback())
}

async fn open_on_loopback(State(state): State<Arc<AdminState>>, request: Request, next: Next) -> Response {
    if state.open_metrics && is_loopback(&request) {
        return next.run(request).await;
    }
    require_token(State(state), request, next).await
}

async fn require_token(State(state): State<Arc<AdminState>>, mut request: Request, next: Next) -> Response {
    let Some(token) = bearer(&request) else {
        return challenge(StatusCode::UNAUTHORIZED, "a bearer token is needed (vouchmail admin token create NAME)");
    };
    match check_token(state.store.as_ref(), token).await {
        Ok(TokenCheck::Valid(name)) => {
            request.extensions_mut().insert(Operator(name));
            next.run(request).await
        }
        Ok(TokenCheck::Revoked(name)) => {
            tracing::warn!(token = %name, "admin request with a revoked token");
            error(StatusCode::FORBIDDEN, format!("the token {name} was revoked"))
        }
        Ok(TokenCheck::Unknown) => challenge(StatusCode::UNAUTHORIZED, "unknown token"),
        Err(e) => {
            tracing::error!(error = %e, "cannot check an admin token");
            error(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable")
        }
    }
}

/// RFC 6750 3: a 401 names the scheme.
fn challenge(status: StatusCode, message: &str) -> Response {
    let mut response = error(status, message);
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"vouchmail\""));
    response
}

async fn scrape(State(state): State<Arc<AdminState>>) -> Response {
    // The queue gauge is read at each scrape: the queue lives in the store, which other
    // nodes and the CLI change too.
    match state.store.queue_counts().await {
        Ok(counts) => {
            let gauge = &state.metrics.queue_messages;
            gauge.with_label_values(&["queued"]).set(counts.queued as i64);
            gauge.with_label_values(&["inflight"]).set(counts.inflight as i64);
            gauge.with_label_values(&["deferred"]).set(counts.deferred as i64);
        }
        Err(e) => tracing::warn!(error = %e, "cannot count the queue for /metrics"),
    }
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], state.metrics.render()).into_response()
}

async fn live() -> Response {
    (StatusCode::OK, Json(serde_json::json!({ "status": "live" }))).into_response()
}

/// Ready: every listener bound and the store answering within a second.
async fn ready(State(state): State<Arc<AdminState>>) -> Response {
    if !state.listeners_bound.load(Ordering::Acquire) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "listeners are still being bound");
    }
    match tokio::time::timeout(READY_WITHIN, state.store.queue_counts()).await {
        Ok(Ok(_)) => (StatusCode::OK, Json(serde_json::json!({ "status": "ready" }))).into_response(),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, format!("the store fails: {e}")),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the store did not answer within a second"),
    }
}
