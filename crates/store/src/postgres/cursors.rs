//! Ids that readers use as cursors, handed out in commit order.
//!
//! `tracking_events.id` (`list_tracking_events` after an id) and `entity_changes.serial`
//! (ENTITIES since a serial, SPEC 8.4) are read as "everything above the last one seen".
//! An identity column hands its value out at insert, but transactions commit in any
//! order: with A given 5 and B given 6, B may commit first, a reader sees 6 and moves its
//! cursor past 5, and A's row, committed a moment later, is never read. SQLite's single
//! writer cannot do this; here every insert into such a table first takes the table's
//! cursor lock, held until its transaction ends, so the next id is handed out only after
//! the transaction holding the one before has committed or rolled back. A reader then
//! never sees a gap that a later commit fills.
//!
//! The lock is a row lock on a `meta` row per table (an upsert: the row is made by the
//! first writer), not an advisory lock, so that a PostgreSQL-compatible database without
//! advisory locks keeps the guarantee (SPEC 11). It is taken late, just before the insert,
//! so it is held only for the rest of its transaction; and whoever holds it waits after
//! that only for transactions that never take it (another node storing the same NOTIFY
//! record), so no lock cycle forms through it.

use deadpool_postgres::Transaction;

use super::base::db_error;
use crate::error::StoreResult;

/// A table whose ids are read as a cursor.
#[derive(Debug, Clone, Copy)]
pub(super) enum Cursor {
    TrackingEvents,
    EntityChanges,
}

impl Cursor {
    /// The `meta` row whose lock serialises the table's inserts.
    fn lock_key(self) -> &'static str {
        match self {
            Cursor::TrackingEvents => "cursor-lock:tracking_events",
            Cursor::EntityChanges => "cursor-lock:entity_changes",
        }
    }
}

/// Takes the cursor lock of `cursor`'s table until `tx` ends: call it right before
/// inserting into that table.
pub(super) async fn lock(tx: &Transaction<'_>, cursor: Cursor) -> StoreResult<()> {
    let statement = tx
        .prepare_cached(
            "INSERT INTO meta (key, value) VALUES ($1, '') ON CONFLICT (key) DO UPDATE SET value = meta.value",
        )
        .await
        .map_err(db_error)?;
    tx.execute(&statement, &[&cursor.lock_key()]).await.map_err(db_error)?;
    Ok(())
}
