//! What every admin request may use (SPEC 12): the shared state, the operator behind a
//! request, and the JSON error body. Its own file, so the routes and the handlers they
//! mount all depend on it and not on each other.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use vouchmail_store::Store;

use crate::support::metrics::Metrics;

/// What every admin request may use.
pub struct AdminState {
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub hostname: String,
    /// `/metrics` and health without a token from loopback.
    pub open_metrics: bool,
    /// Set once every listener of the server is bound (`/healthz/ready`).
    pub listeners_bound: AtomicBool,
    /// The IMAP, POP3 and submission ports as bound, for client autoconfiguration.
    pub client_ports: ClientPorts,
    /// What the API's operations need of the configuration (`crate::ops`).
    pub ops: crate::ops::Settings,
}

/// The ports mail clients use, as bound (the first address of each listener), None where
/// the listener is off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientPorts {
    /// IMAP over implicit TLS (RFC 8314 3.3).
    pub imaps: Option<u16>,
    /// IMAP with STARTTLS (RFC 9051 6.2.1).
    pub imap: Option<u16>,
    pub pop3s: Option<u16>,
    pub pop3: Option<u16>,
    /// Submission over implicit TLS (RFC 8314 3.3).
    pub submissions: Option<u16>,
    /// Submission with STARTTLS (RFC 6409, RFC 3207).
    pub submission: Option<u16>,
}

impl ClientPorts {
    /// The port of the first of `addrs`.
    pub fn first(addrs: &[SocketAddr]) -> Option<u16> {
        addrs.first().map(SocketAddr::port)
    }
}

/// The name of the token a request came with, for the handlers' logs.
#[derive(Debug, Clone)]
pub struct Operator(pub String);

/// An error of the admin HTTP layer as JSON: `{"error": "..."}` with its status.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}
