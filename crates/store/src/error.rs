//! The storage layer's error, and the result and future every store method returns.

use std::future::Future;
use std::pin::Pin;

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;
/// The future every store method returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = StoreResult<T>> + Send + 'a>>;

/// The error type of the storage layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The named thing does not exist.
    NotFound(String),
    /// It exists already, or another record depends on it.
    Conflict(String),
    /// The request itself is wrong (e.g. an address in a domain we do not serve).
    Invalid(String),
    /// The store cannot be used right now (I/O error, locked, closed): worth retrying.
    Unavailable(String),
}

impl StoreError {
    /// A temporary failure: the SMTP layer answers 451 rather than 5xx.
    pub fn is_temporary(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::NotFound(what) => write!(f, "{what} not found"),
            StoreError::Conflict(what) => write!(f, "{what}"),
            StoreError::Invalid(what) => write!(f, "{what}"),
            StoreError::Unavailable(what) => write!(f, "store unavailable: {what}"),
        }
    }
}

impl std::error::Error for StoreError {}
