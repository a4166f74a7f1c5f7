//! Client autoconfiguration: Thunderbird's autoconfig XML and Microsoft's autodiscover,
//! with this server's IMAP, POP3 and submission settings for the asked address.

use std::sync::Arc;

use axum::Router;

use super::routes::AdminState;

pub fn routes() -> Router<Arc<AdminState>> {
    Router::new()
}
