//! The vouchmail store: one interface over everything durable, with the embedded SQLite
//! implementation and PostgreSQL for several nodes (`postgres`).
//!
//! The interface is split by concern (`AccountStore`, `QueueStore`, `MailboxStore`,
//! `TrackingStore`, `AuthKeyStore`, `FederationStore`, `NodeStore`); [`Store`] combines
//! them. Callers hold an `Arc<dyn Store>`; methods return boxed futures so the traits stay
//! object-safe and implementations may run blocking work on their own threads.

pub mod copy;
mod error;
mod interface;
mod messenger;
mod postgres;
mod recipient_cache;
pub mod rules;
mod sqlite;
pub mod tracking;
mod types;

pub use error::{StoreError, StoreFuture, StoreResult};
pub use interface::{
    AccountStore, AdminTokenStore, AuthKeyStore, DkimKeyStore, DmarcReportStore, FederationStore, FolderStore,
    MailboxStore, NodeStore, QueueStore, Store, TrackingStore,
};

/// Every concern's trait, for code that calls a concrete backend (`SqliteStore`) rather
/// than a `dyn Store`: `use vouchmail_store::prelude::*;`.
pub mod prelude {
    pub use crate::interface::{
        AccountStore, AdminTokenStore, AuthKeyStore, DkimKeyStore, DmarcReportStore, FederationStore, FolderStore,
        MailboxStore, NodeStore, QueueStore, Store, TrackingStore,
    };
}
pub use messenger::*;
pub use postgres::{PostgresOptions, PostgresStore};
pub use sqlite::SqliteStore;
pub use tracking::{
    FetchedMessage, NewTrackingEvent, NotifyStored, OutboxCounts, OutboxEntry, OutboxState, OutboxUpdate,
    StoredTrackingRecord, TrackedMessage, TrackingOutcome, TrackingRoute, TrackingSubject,
};
pub use types::*;
