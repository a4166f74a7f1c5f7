//! The JSON API under `/api/v1/` (SPEC 12, issue 24 item 4): every route needs a bearer
//! token (the `require_token` layer of `routes`), and every handler calls the same
//! operations as the CLI (`crate::ops`), so the two never disagree; the objects sent are
//! the ones the CLI's `--json` listings print. Every change is logged with the token's
//! name.

mod accounts;
mod extract;
mod keys;
mod mailboxes;
mod queue;

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};

use super::state::{AdminState, Operator};

pub fn routes() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/whoami", get(whoami))
        .route("/domains", get(accounts::list_domains).post(accounts::add_domain))
        .route("/domains/{domain}", get(accounts::get_domain).delete(accounts::remove_domain))
        .route("/domains/{domain}/policy", put(accounts::set_policy))
        .route("/domains/{domain}/dns", get(accounts::domain_dns))
        .route("/users", get(accounts::list_users).post(accounts::add_user))
        .route("/users/{address}", get(accounts::get_user).delete(accounts::remove_user))
        .route("/users/{address}/password", put(accounts::set_password))
        .route("/users/{address}/quota", put(accounts::set_quota))
        .route("/aliases", get(accounts::list_aliases).post(accounts::add_alias))
        .route("/aliases/{address}", axum::routing::delete(accounts::remove_alias))
        .route("/queue", get(queue::list))
        .route("/queue/flush", post(queue::flush))
        .route("/queue/{id}", get(queue::show).delete(queue::delete))
        .route("/queue/{id}/retry", post(queue::retry))
        .route("/mailboxes/{address}", get(mailboxes::list))
        .route("/mailboxes/{address}/folders", get(mailboxes::folders))
        .route("/tracking", get(mailboxes::tracking_all))
        .route("/tracking/{address}", get(mailboxes::tracking))
        .route("/authkeys/{target}", get(keys::show_authkey).put(keys::set_authkey))
        .route("/dkim", get(keys::list_dkim))
        .route("/dkim/{domain}", post(keys::new_dkim))
        .route("/dkim/{domain}/rotate", post(keys::rotate_dkim))
        .route("/directory/conflicts", get(keys::conflicts))
}

/// The token's name: what a client can check its token with.
async fn whoami(Extension(Operator(name)): Extension<Operator>) -> Response {
    Json(serde_json::json!({ "token": name })).into_response()
}
