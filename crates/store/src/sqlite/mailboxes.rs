//! Mailboxes in SQLite: listing, reading, deleting, the download event.

use rusqlite::{params, Connection, OptionalExtension};

use super::base::*;
use super::folder_rows::next_modseq;
use super::writer::SqliteStore;
use crate::error::{StoreError, StoreFuture, StoreResult};
use crate::interface::MailboxStore;
use crate::tracking::{FetchedMessage, TrackedMessage};
use crate::types::*;

impl MailboxStore for SqliteStore {
    fn list_mailbox(&self, address: &str, folder: Option<Folder>) -> StoreFuture<'_, Vec<MailboxEntry>> {
        let address = address.to_lowercase();
        self.read(move |conn| {
            let account: Option<i64> = conn
                .query_row("SELECT id FROM accounts WHERE address = ?1", params![address], |r| r.get(0))
                .optional()
                .map_err(db_error)?;
            let Some(account) = account else {
                return Err(StoreError::NotFound(format!("user {address}")));
            };
            let mut stmt = conn
                .prepare(
                    "SELECT b.id, b.folder, b.message_id, m.queue_id, b.received_at, b.size, b.uid
                     FROM mailbox b JOIN messages m ON m.id = b.message_id
                     WHERE b.account_id = ?1 AND (?2 IS NULL OR b.folder = ?2) ORDER BY b.id",
                )
                .map_err(db_error)?;
            let rows =
                stmt.query_map(params![account, folder.map(|f| f.as_str())], row_to_mailbox_entry).map_err(db_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
        })
    }

    fn get_mailbox_message(&self, address: &str, id: i64) -> StoreFuture<'_, Option<(MailboxEntry, Vec<u8>)>> {
        let address = address.to_lowercase();
        self.read(move |conn| {
            conn.query_row(
                "SELECT b.id, b.folder, b.message_id, m.queue_id, b.received_at, b.size, b.uid, m.data
                 FROM mailbox b JOIN messages m ON m.id = b.message_id JOIN accounts a ON a.id = b.account_id
                 WHERE a.address = ?1 AND b.id = ?2",
                params![address, id],
                |row| Ok((row_to_mailbox_entry(row)?, row.get::<_, Vec<u8>>(7)?)),
            )
            .optional()
            .map_err(db_error)
        })
    }

    fn mailbox_messages(
        &self,
        address: &str,
        ids: &[i64],
        prefix: Option<usize>,
    ) -> StoreFuture<'_, Vec<FetchedMessage>> {
        let address = address.to_lowercase();
        // One statement for the batch (its ids as a JSON array): one snapshot, and no
        // statement run, account lookup and reset per message.
        let ids = format!("[{}]", ids.iter().map(i64::to_string).collect::<Vec<_>>().join(","));
        self.read(move |conn| {
            // CROSS JOIN: each id looked up by rowid, not the account's entries scanned for
            // the ids (which the planner prefers otherwise).
            let sql = if prefix.is_some() {
                // The stored header section; for a message stored without one, the prefix
                // (substr makes a copy: only for a message longer than the prefix). COALESCE
                // reads the message only when there is no header row.
                "SELECT b.id, COALESCE(h.header,
                        (SELECT CASE WHEN length(m.data) > ?3 THEN substr(m.data, 1, ?3) ELSE m.data END
                         FROM messages m WHERE m.id = b.message_id))
                 FROM json_each(?2) AS j CROSS JOIN mailbox b ON b.id = j.value
                      LEFT JOIN message_headers h ON h.message_id = b.message_id
                 WHERE b.account_id = (SELECT id FROM accounts WHERE address = ?1)"
            } else {
                // With what a `downloaded` event records, from the row read anyway.
                "SELECT b.id, m.data, m.queue_id, m.sender, m.auth_results
                 FROM json_each(?2) AS j CROSS JOIN mailbox b ON b.id = j.value
                      JOIN messages m ON m.id = b.message_id
                 WHERE b.account_id = (SELECT id FROM accounts WHERE address = ?1)"
            };
            let mut stmt = conn.prepare_cached(sql).map_err(db_error)?;
            let fetched = |r: &rusqlite::Row<'_>| {
                let bytes: Vec<u8> = r.get(1)?;
                let tracked = match prefix {
                    Some(_) => None,
                    None => {
                        let auth_results: String = r.get(4)?;
                        Some(TrackedMessage::from_stored(r.get(2)?, r.get(3)?, &auth_results, &bytes))
                    }
                };
                Ok(FetchedMessage { entry: r.get(0)?, bytes, tracked })
            };
            let rows = match prefix.map(|p| i64::try_from(p).unwrap_or(i64::MAX)) {
                Some(prefix) => stmt.query_map(params![address, ids, prefix], fetched),
                None => stmt.query_map(params![address, ids], fetched),
            };
            rows.and_then(|rows| rows.collect()).map_err(db_error)
        })
    }

    fn delete_mailbox_entries(&self, address: &str, ids: &[i64]) -> StoreFuture<'_, usize> {
        let address = address.to_lowercase();
        let ids = ids.to_vec();
        self.write(move |conn| {
            let mut removed = 0;
            let mut folders = std::collections::BTreeSet::new();
            for id in ids {
                let entry: Option<(i64, i64, i64, String)> = conn
                    .prepare_cached(
                        "SELECT b.account_id, b.message_id, b.size, b.folder FROM mailbox b
                         JOIN accounts a ON a.id = b.account_id WHERE a.address = ?1 AND b.id = ?2",
                    )
                    .and_then(|mut stmt| {
                        stmt.query_row(params![address, id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    })
                    .optional()
                    .map_err(db_error)?;
                let Some((account_id, message_id, size, folder)) = entry else { continue };
                delete_entry(conn, id, account_id, message_id, size)?;
                folders.insert((account_id, folder));
                removed += 1;
            }
            // An expunge to IMAP (SPEC 9): its folder takes a new mod-sequence (RFC 7162
            // 3.1), which is also how IMAP sessions watching the folder notice it.
            for (account_id, folder) in folders {
                next_modseq(conn, account_id, &folder)?;
            }
            Ok(removed)
        })
    }

    fn record_download(&self, address: &str, mailbox_id: i64) -> StoreFuture<'_, bool> {
        let address = address.to_lowercase();
        self.write(move |conn| {
            // The header section is enough to find the Message-ID.
            let found: Option<(String, String, Vec<u8>)> = conn
                .query_row(
                    "SELECT m.queue_id, m.sender, COALESCE(h.header, substr(m.data, 1, ?3))
                     FROM mailbox b JOIN messages m ON m.id = b.message_id JOIN accounts a ON a.id = b.account_id
                          LEFT JOIN message_headers h ON h.message_id = b.message_id
                     WHERE a.address = ?1 AND b.id = ?2",
                    params![address, mailbox_id, HEADER_SCAN_BYTES],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(db_error)?;
            let Some((queue_id, sender, head)) = found else {
                return Err(StoreError::NotFound(format!("message {mailbox_id} of {address}")));
            };
            let message_id = vouchmail_proto::headers::first_value(&head, "Message-ID").unwrap_or_default();
            let n = conn
                .execute(
                    "INSERT OR IGNORE INTO tracking_events (occurred_at, queue_id, message_id, sender, recipient, event)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![now(), queue_id, message_id, sender, address, TrackingKind::Downloaded.as_str()],
                )
                .map_err(db_error)?;
            Ok(n == 1)
        })
    }
}

/// Removes one mailbox entry, keeps its account's size and count right, and deletes its
/// message when nothing refers to it any more (a POP3 DELE, an IMAP EXPUNGE).
pub(super) fn delete_entry(conn: &Connection, id: i64, account_id: i64, message_id: i64, size: i64) -> StoreResult<()> {
    conn.prepare_cached("DELETE FROM mailbox WHERE id = ?1")
        .and_then(|mut stmt| stmt.execute(params![id]))
        .map_err(db_error)?;
    conn.prepare_cached(
        "UPDATE accounts SET used_bytes = MAX(used_bytes - ?2, 0), message_count = MAX(message_count - 1, 0)
         WHERE id = ?1",
    )
    .and_then(|mut stmt| stmt.execute(params![account_id, size]))
    .map_err(db_error)?;
    delete_if_orphan(conn, message_id)
}
