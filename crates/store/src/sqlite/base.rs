//! What the SQLite concern files and the store itself share: the error mapping, the clock,
//! the queue row, and removing a message nothing refers to any more.

use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, Row};

use crate::error::{StoreError, StoreResult};
use crate::types::{QueueEntry, QueueState, RecipientDsn};

pub(super) fn db_error(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

pub(super) fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

pub(super) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(err, _) if err.code == rusqlite::ErrorCode::ConstraintViolation)
}

pub(super) const QUEUE_COLUMNS: &str = "q.id, m.queue_id, q.message_id, m.sender, q.recipient, q.notify, q.orcpt, q.state, q.attempts, q.next_attempt, q.last_reply, q.created_at, m.size";

pub(super) fn row_to_queue_entry(row: &Row<'_>) -> rusqlite::Result<QueueEntry> {
    let state: String = row.get(7)?;
    Ok(QueueEntry {
        id: row.get(0)?,
        queue_id: row.get(1)?,
        message_id: row.get(2)?,
        sender: row.get(3)?,
        recipient: row.get(4)?,
        dsn: RecipientDsn { notify: row.get(5)?, orcpt: row.get(6)? },
        state: QueueState::parse(&state).unwrap_or(QueueState::Queued),
        attempts: row.get::<_, i64>(8)? as u32,
        next_attempt: row.get(9)?,
        last_reply: row.get(10)?,
        created_at: row.get(11)?,
        size: row.get::<_, i64>(12)? as u64,
    })
}

/// Deletes a message once no mailbox entry and no queue entry refers to it any more.
pub(super) fn delete_if_orphan(conn: &Connection, message_id: i64) -> StoreResult<()> {
    let orphan: bool = conn
        .query_row(
            "SELECT NOT EXISTS (SELECT 1 FROM mailbox WHERE message_id = ?1)
                AND NOT EXISTS (SELECT 1 FROM queue WHERE message_id = ?1 AND state NOT IN ('delivered','bounced'))",
            params![message_id],
            |r| r.get(0),
        )
        .map_err(db_error)?;
    if orphan {
        // Finished queue entries are history only; they go first (they reference the message).
        conn.execute("DELETE FROM queue WHERE message_id = ?1", params![message_id]).map_err(db_error)?;
        conn.execute("DELETE FROM messages WHERE id = ?1", params![message_id]).map_err(db_error)?;
    }
    Ok(())
}

/// How much of a message `record_download` reads to find its Message-ID field.
pub(super) const HEADER_SCAN_BYTES: i64 = 64 * 1024;
