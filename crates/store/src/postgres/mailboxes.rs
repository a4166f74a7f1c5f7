//! Mailboxes in PostgreSQL (SPEC 9): listing, reading, deleting, the download event; the
//! semantics of `sqlite/mailboxes.rs`.

use super::base::{db_error, now};
use super::folder_rows::next_modseq;
use super::messages::{delete_orphans, AccountDeltas};
use super::pool::PostgresStore;
use super::rows::{account_id, to_mailbox_entry, MAILBOX_COLUMNS};
use super::tracking::insert_event;
use crate::error::{StoreError, StoreFuture};
use crate::interface::MailboxStore;
use crate::tracking::{FetchedMessage, TrackedMessage};
use crate::types::*;

impl MailboxStore for PostgresStore {
    fn list_mailbox(&self, address: &str, folder: Option<Folder>) -> StoreFuture<'_, Vec<MailboxEntry>> {
        let address = address.to_lowercase();
        Box::pin(async move {
            let conn = self.conn().await?;
            let Some(account) = account_id(&conn, &address).await? else {
                return Err(StoreError::NotFound(format!("user {address}")));
            };
            let from = format!("SELECT {MAILBOX_COLUMNS} FROM mailbox b JOIN messages m ON m.id = b.message_id");
            let rows = match folder {
                Some(folder) => {
                    let statement = conn
                        .prepare_cached(&format!("{from} WHERE b.account_id = $1 AND b.folder = $2 ORDER BY b.id"))
                        .await
                        .map_err(db_error)?;
                    conn.query(&statement, &[&account, &folder.as_str()]).await
                }
                None => {
                    let statement = conn
                        .prepare_cached(&format!("{from} WHERE b.account_id = $1 ORDER BY b.id"))
                        .await
                        .map_err(db_error)?;
                    conn.query(&statement, &[&account]).await
                }
            }
            .map_err(db_error)?;
            rows.iter().map(to_mailbox_entry).collect()
        })
    }

    fn get_mailbox_message(&self, address: &str, id: i64) -> StoreFuture<'_, Option<(MailboxEntry, Vec<u8>)>> {
        let address = address.to_lowercase();
        Box::pin(async move {
            let conn = self.conn().await?;
            let statement = conn
                .prepare_cached(&format!(
                    "SELECT {MAILBOX_COLUMNS}, m.data
                     FROM mailbox b JOIN messages m ON m.id = b.message_id JOIN accounts a ON a.id = b.account_id
                     WHERE a.address = $1 AND b.id = $2"
                ))
                .await
                .map_err(db_error)?;
            let Some(row) = conn.query_opt(&statement, &[&address, &id]).await.map_err(db_error)? else {
                return Ok(None);
            };
            Ok(Some((to_mailbox_entry(&row)?, row.try_get(7).map_err(db_error)?)))
        })
    }

    fn mailbox_messages(
        &self,
        address: &str,
        ids: &[i64],
        prefix: Option<usize>,
    ) -> StoreFuture<'_, Vec<FetchedMessage>> {
        let address = address.to_lowercase();
        let ids = ids.to_vec();
        Box::pin(async move {
            let conn = self.conn().await?;
            let rows = match prefix {
                None => {
                    let statement = conn
                        .prepare_cached(
                            // With what a `downloaded` event records, from the row read anyway.
                            "SELECT b.id, m.data, m.queue_id, m.sender, m.auth_results
                             FROM mailbox b JOIN messages m ON m.id = b.message_id JOIN accounts a ON a.id = b.account_id
                             WHERE a.address = $1 AND b.id = ANY($2)",
                        )
                        .await
                        .map_err(db_error)?;
                    conn.query(&statement, &[&address, &ids]).await.map_err(db_error)?
                }
                Some(prefix) => {
                    let statement = conn
                        .prepare_cached(
                            // The stored header section; the prefix for a message stored
                            // without one (COALESCE reads the message only then).
                            "SELECT b.id, COALESCE(h.header, substring(m.data FROM 1 FOR $3))
                             FROM mailbox b JOIN messages m ON m.id = b.message_id JOIN accounts a ON a.id = b.account_id
                                  LEFT JOIN message_headers h ON h.message_id = b.message_id
                             WHERE a.address = $1 AND b.id = ANY($2)",
                        )
                        .await
                        .map_err(db_error)?;
                    let prefix = i32::try_from(prefix).unwrap_or(i32::MAX);
                    conn.query(&statement, &[&address, &ids, &prefix]).await.map_err(db_error)?
                }
            };
            let fetched = |row: &tokio_postgres::Row| {
                let bytes: Vec<u8> = row.try_get(1)?;
                let tracked = match prefix {
                    Some(_) => None,
                    None => {
                        let auth_results: String = row.try_get(4)?;
                        Some(TrackedMessage::from_stored(row.try_get(2)?, row.try_get(3)?, &auth_results, &bytes))
                    }
                };
                Ok(FetchedMessage { entry: row.try_get(0)?, bytes, tracked })
            };
            rows.iter().map(fetched).collect::<Result<_, tokio_postgres::Error>>().map_err(db_error)
        })
    }

    fn delete_mailbox_entries(&self, address: &str, ids: &[i64]) -> StoreFuture<'_, usize> {
        let address = address.to_lowercase();
        let ids = ids.to_vec();
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(db_error)?;
            // The account first (its counts change below), so that this and removing the
            // account take their locks in one order. No account: nothing of it to delete.
            let Some(account) = tx
                .query_opt("SELECT id FROM accounts WHERE address = $1 FOR NO KEY UPDATE", &[&address])
                .await
                .map_err(db_error)?
            else {
                return Ok(0);
            };
            let account: i64 = account.try_get(0).map_err(db_error)?;
            // Each entry is deleted only if it is still there and the account's: a
            // concurrent deletion of the same entry counts once, in one of them.
            let statement = tx
                .prepare_cached(
                    "DELETE FROM mailbox WHERE id = $1 AND account_id = $2 RETURNING message_id, size, folder",
                )
                .await
                .map_err(db_error)?;
            let (statement, shared) = (&statement, &tx);
            let deletions = ids.iter().map(|id| async move { shared.query_opt(statement, &[id, &account]).await });
            let mut deltas = AccountDeltas::default();
            let mut messages = Vec::new();
            let mut folders = std::collections::BTreeSet::new();
            for deleted in futures_util::future::join_all(deletions).await {
                if let Some(row) = deleted.map_err(db_error)? {
                    messages.push(row.try_get::<_, i64>(0).map_err(db_error)?);
                    deltas.add(account, -row.try_get::<_, i64>(1).map_err(db_error)?, -1);
                    folders.insert(row.try_get::<_, String>(2).map_err(db_error)?);
                }
            }
            let removed = messages.len();
            // An expunge to IMAP (SPEC 9): its folder takes a new mod-sequence (RFC 7162
            // 3.1), which is also how IMAP sessions watching the folder notice it.
            for folder in folders {
                next_modseq(&tx, account, &folder).await?;
            }
            // Counts never below zero, as on SQLite (one clamp of the sum is the same as
            // one per entry: they only go down).
            deltas.apply(&tx).await?;
            delete_orphans(&tx, messages).await?;
            tx.commit().await.map_err(db_error)?;
            Ok(removed)
        })
    }

    fn record_download(&self, address: &str, mailbox_id: i64) -> StoreFuture<'_, bool> {
        let address = address.to_lowercase();
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(db_error)?;
            // The header section is enough to find the Message-ID.
            let statement = tx
                .prepare_cached(
                    "SELECT m.queue_id, m.sender, COALESCE(h.header, substring(m.data FROM 1 FOR $3))
                     FROM mailbox b JOIN messages m ON m.id = b.message_id JOIN accounts a ON a.id = b.account_id
                          LEFT JOIN message_headers h ON h.message_id = b.message_id
                     WHERE a.address = $1 AND b.id = $2",
                )
                .await
                .map_err(db_error)?;
            let scan = crate::rules::HEADER_SCAN_BYTES as i32;
            let Some(row) = tx.query_opt(&statement, &[&address, &mailbox_id, &scan]).await.map_err(db_error)? else {
                return Err(StoreError::NotFound(format!("message {mailbox_id} of {address}")));
            };
            let head: &[u8] = row.try_get(2).map_err(db_error)?;
            let message = TrackedMessage {
                queue_id: row.try_get(0).map_err(db_error)?,
                message_id: vouchmail_proto::headers::first_value(head, "Message-ID").unwrap_or_default(),
                sender: row.try_get(1).map_err(db_error)?,
                tracked: false,
            };
            // Through `tracking::insert_event`: event ids are a reader's cursor, handed out
            // under the cursor lock (`cursors`).
            let recorded = insert_event(&tx, now(), &message, &address, TrackingKind::Downloaded).await?;
            tx.commit().await.map_err(db_error)?;
            Ok(recorded)
        })
    }
}
