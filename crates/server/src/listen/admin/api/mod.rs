//! The JSON API under `/api/v1/` (SPEC 12): every route needs a bearer token (the
//! `require_token` layer of `routes`), and every handler calls the same operations as the
//! CLI, so the two never disagree.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};

use super::routes::{AdminState, Operator};

pub fn routes() -> Router<Arc<AdminState>> {
    Router::new().route("/whoami", get(whoami))
}

/// The token's name: what a client can check its token with.
async fn whoami(Extension(Operator(name)): Extension<Operator>) -> Response {
    Json(serde_json::json!({ "token": name })).into_response()
}
