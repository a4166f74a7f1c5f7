//! The web console at `/` (SPEC 12): static pages embedded in the binary that call the
//! JSON API with the operator's token; nothing is loaded from elsewhere.

use std::sync::Arc;

use axum::Router;

use super::routes::AdminState;

pub fn routes() -> Router<Arc<AdminState>> {
    Router::new()
}
