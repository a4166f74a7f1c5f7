//! The vouchmail store: one interface over everything durable, with the embedded SQLite
//! implementation (PostgreSQL implements the same trait for several nodes).
//!
//! Callers hold an `Arc<dyn Store>`; methods return boxed futures so the trait stays
//! object-safe and implementations may run blocking work on their own threads.

mod error;
mod interface;
mod messenger;
mod sqlite;
pub mod tracking;
mod types;

pub use error::{StoreError, StoreFuture, StoreResult};
pub use interface::Store;
pub use messenger::*;
pub use sqlite::SqliteStore;
pub use tracking::{
    NewTrackingEvent, NotifyStored, OutboxCounts, OutboxEntry, OutboxState, OutboxUpdate, StoredTrackingRecord,
    TrackingOutcome, TrackingRoute, TrackingSubject,
};
pub use types::*;
