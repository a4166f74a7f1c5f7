//! Messages in PostgreSQL, as every concern that adds or drops a reference to one sees
//! them: removing a message nothing refers to any more.

use deadpool_postgres::Transaction;

use super::base::db_error;
use crate::error::StoreResult;

/// Deletes a message once no mailbox entry and no queue entry refers to it any more
/// (`rules::is_orphan`), inside the caller's transaction.
///
/// The message's row is locked first. Two transactions that each end one of its last
/// references (two nodes recording the outcomes of two of its recipients, or a delivery
/// and a mailbox deletion) are so taken one after the other, and the second one's check,
/// a new statement and so a new snapshot at READ COMMITTED, sees the first one's change:
/// the message is deleted by one of them, never left behind by both. Callers lock
/// messages in ascending id order, so that two transactions never wait for each other.
pub(super) async fn delete_if_orphan(tx: &Transaction<'_>, message_id: i64) -> StoreResult<()> {
    let lock = tx.prepare_cached("SELECT id FROM messages WHERE id = $1 FOR UPDATE").await.map_err(db_error)?;
    if tx.query_opt(&lock, &[&message_id]).await.map_err(db_error)?.is_none() {
        return Ok(());
    }
    let check = tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM mailbox WHERE message_id = $1),
                    EXISTS (SELECT 1 FROM queue WHERE message_id = $1 AND state NOT IN ('delivered','bounced'))",
        )
        .await
        .map_err(db_error)?;
    let row = tx.query_one(&check, &[&message_id]).await.map_err(db_error)?;
    let (in_a_mailbox, still_queued): (bool, bool) =
        (row.try_get(0).map_err(db_error)?, row.try_get(1).map_err(db_error)?);
    if crate::rules::is_orphan(in_a_mailbox, still_queued) {
        // Finished queue entries are history only; they go first (they reference the message).
        let history = tx.prepare_cached("DELETE FROM queue WHERE message_id = $1").await.map_err(db_error)?;
        tx.execute(&history, &[&message_id]).await.map_err(db_error)?;
        let message = tx.prepare_cached("DELETE FROM messages WHERE id = $1").await.map_err(db_error)?;
        tx.execute(&message, &[&message_id]).await.map_err(db_error)?;
    }
    Ok(())
}
