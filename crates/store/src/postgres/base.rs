//! What the PostgreSQL concern files share: how a database error becomes a [`StoreError`],
//! and the clock.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio_postgres::error::SqlState;

use crate::error::StoreError;

/// A tokio-postgres error as the store's: see [`from_state`] for errors the server
/// reported; everything else (the connection refused, closed or timed out, a TLS
/// failure, a protocol error) is worth retrying.
pub(crate) fn db_error(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => from_state(db.code(), db.message()),
        None => StoreError::Unavailable(e.to_string()),
    }
}

/// An error the server reported, by its SQLSTATE (PostgreSQL manual, appendix A):
/// - a unique or foreign-key violation is a [`StoreError::Conflict`] (it exists already,
///   or another record depends on it);
/// - any other integrity violation and a data exception (class 22: a value out of range,
///   text with a NUL byte, ...) are the request's own fault, the same on every retry:
///   [`StoreError::Invalid`];
/// - everything else is [`StoreError::Unavailable`], which the SMTP layer answers with a
///   4xx so the client retries: serialization failures and deadlocks (class 40), lost
///   connections (08), the server out of resources (53) or shutting down (57), system
///   errors (58, XX), and also errors in our own SQL (42), where a temporary failure
///   keeps the mail with the client until the fix.
pub(super) fn from_state(state: &SqlState, message: &str) -> StoreError {
    let message = message.to_string();
    if *state == SqlState::UNIQUE_VIOLATION || *state == SqlState::FOREIGN_KEY_VIOLATION {
        StoreError::Conflict(message)
    } else if state.code().starts_with("22") || state.code().starts_with("23") {
        StoreError::Invalid(message)
    } else {
        StoreError::Unavailable(message)
    }
}

/// A pool that could not hand out a connection: closed, timed out, or the server
/// refused a new one.
pub(super) fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => db_error(e),
        PoolError::Closed => StoreError::Unavailable("the store is closed".into()),
        e => StoreError::Unavailable(format!("no database connection: {e}")),
    }
}

/// A count as a `LIMIT` argument (a `bigint`): beyond its range, no limit.
pub(super) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

pub(super) fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}
