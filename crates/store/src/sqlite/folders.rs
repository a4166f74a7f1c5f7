//! IMAP folders in SQLite (SPEC 9): each account's folders, UIDs given as messages arrive.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::base::*;
use super::writer::SqliteStore;
use crate::error::{StoreError, StoreFuture, StoreResult};
use crate::interface::FolderStore;
use crate::rules::{default_special_use, folder_name, is_deleted, stored_flags, DEFAULT_FOLDERS};
use crate::types::{FlagChange, FlagsStored, FolderInfo, FolderMessage};

const FOLDER_COLUMNS: &str = "f.name, f.special_use, f.uid_validity, f.uid_next, f.highest_modseq, f.subscribed,
     (SELECT COUNT(*) FROM mailbox b WHERE b.account_id = f.account_id AND b.folder = f.name)";

fn row_to_folder(row: &Row<'_>) -> rusqlite::Result<FolderInfo> {
    Ok(FolderInfo {
        name: row.get(0)?,
        special_use: row.get(1)?,
        uid_validity: row.get::<_, i64>(2)? as u32,
        uid_next: row.get::<_, i64>(3)? as u32,
        highest_modseq: row.get::<_, i64>(4)? as u64,
        subscribed: row.get(5)?,
        messages: row.get::<_, i64>(6)? as u32,
    })
}

/// Makes the folders every account has (a new account's, in its own transaction).
pub(super) fn create_default_folders(conn: &Connection, account_id: i64) -> StoreResult<()> {
    for (name, special_use) in DEFAULT_FOLDERS {
        create_folder(conn, account_id, name, special_use)?;
    }
    Ok(())
}

fn create_folder(conn: &Connection, account_id: i64, name: &str, special_use: Option<&str>) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO folders (account_id, name, special_use, uid_validity, uid_next, highest_modseq,
                                        subscribed)
         VALUES (?1, ?2, ?3, ?4, 1, 1, 1)",
    )
    .and_then(|mut stmt| stmt.execute(params![account_id, name, special_use, now()]))
    .map_err(db_error)?;
    Ok(())
}

/// The UID and mod-sequence of a message arriving in `folder` (RFC 9051 2.3.1.1: each new
/// message a higher UID than all before it; RFC 7162 3.1: a higher mod-sequence). Inside
/// the writer's transaction, so UIDs follow the commit order. A folder the account lacks
/// (a delivery to a folder deleted meanwhile) is made again.
pub(super) fn next_uid(conn: &Connection, account_id: i64, folder: &str) -> StoreResult<(i64, i64)> {
    let take = |conn: &Connection| {
        conn.prepare_cached(
            "UPDATE folders SET uid_next = uid_next + 1, highest_modseq = highest_modseq + 1
             WHERE account_id = ?1 AND name = ?2 RETURNING uid_next - 1, highest_modseq",
        )
        .and_then(|mut stmt| stmt.query_row(params![account_id, folder], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(db_error)
    };
    if let Some(numbers) = take(conn)? {
        return Ok(numbers);
    }
    create_folder(conn, account_id, folder, default_special_use(folder))?;
    take(conn)?.ok_or_else(|| StoreError::NotFound(format!("folder {folder}")))
}

/// The folder's next mod-sequence, taken (RFC 7162 3.1: every change gets a higher one).
fn next_modseq(conn: &Connection, account_id: i64, folder: &str) -> StoreResult<i64> {
    conn.prepare_cached(
        "UPDATE folders SET highest_modseq = highest_modseq + 1 WHERE account_id = ?1 AND name = ?2
         RETURNING highest_modseq",
    )
    .and_then(|mut stmt| stmt.query_row(params![account_id, folder], |r| r.get(0)).optional())
    .map_err(db_error)?
    .ok_or_else(|| StoreError::NotFound(format!("folder {folder}")))
}

fn folder_exists(conn: &Connection, account_id: i64, folder: &str) -> StoreResult<()> {
    let found: Option<i64> = conn
        .prepare_cached("SELECT id FROM folders WHERE account_id = ?1 AND name = ?2")
        .and_then(|mut stmt| stmt.query_row(params![account_id, folder], |r| r.get(0)).optional())
        .map_err(db_error)?;
    found.map(|_| ()).ok_or_else(|| StoreError::NotFound(format!("folder {folder}")))
}

/// (entry id, message id, size, flags, modseq) of the folder's message with this UID.
type Row5 = (i64, i64, i64, String, i64);

fn entry_by_uid(conn: &Connection, account_id: i64, folder: &str, uid: u32) -> StoreResult<Option<Row5>> {
    conn.prepare_cached(
        "SELECT id, message_id, size, flags, modseq FROM mailbox WHERE account_id = ?1 AND folder = ?2 AND uid = ?3",
    )
    .and_then(|mut stmt| {
        stmt.query_row(params![account_id, folder, uid], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()
    })
    .map_err(db_error)
}

fn account_id(conn: &Connection, address: &str) -> StoreResult<i64> {
    conn.query_row("SELECT id FROM accounts WHERE address = ?1", params![address], |r| r.get(0))
        .optional()
        .map_err(db_error)?
        .ok_or_else(|| StoreError::NotFound(format!("user {address}")))
}

impl FolderStore for SqliteStore {
    fn list_folders(&self, address: &str) -> StoreFuture<'_, Vec<FolderInfo>> {
        let address = address.to_lowercase();
        self.read(move |conn| {
            let account = account_id(conn, &address)?;
            let mut stmt = conn
                .prepare(&format!("SELECT {FOLDER_COLUMNS} FROM folders f WHERE f.account_id = ?1 ORDER BY f.name"))
                .map_err(db_error)?;
            let rows = stmt.query_map(params![account], row_to_folder).map_err(db_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
        })
    }

    fn folder_messages(
        &self,
        address: &str,
        folder: &str,
    ) -> StoreFuture<'_, Option<(FolderInfo, Vec<FolderMessage>)>> {
        let (address, folder) = (address.to_lowercase(), folder_name(folder).to_string());
        self.read(move |conn| {
            let account = account_id(conn, &address)?;
            // One read transaction: the folder's numbers and its messages agree.
            let tx = conn.unchecked_transaction().map_err(db_error)?;
            let info = tx
                .query_row(
                    &format!("SELECT {FOLDER_COLUMNS} FROM folders f WHERE f.account_id = ?1 AND f.name = ?2"),
                    params![account, folder],
                    row_to_folder,
                )
                .optional()
                .map_err(db_error)?;
            let Some(info) = info else { return Ok(None) };
            let mut stmt = tx
                .prepare(
                    "SELECT uid, id, message_id, flags, modseq, received_at, size FROM mailbox
                     WHERE account_id = ?1 AND folder = ?2 ORDER BY uid",
                )
                .map_err(db_error)?;
            let rows = stmt
                .query_map(params![account, folder], |row| {
                    let flags: String = row.get(3)?;
                    Ok(FolderMessage {
                        uid: row.get::<_, i64>(0)? as u32,
                        entry_id: row.get(1)?,
                        message_id: row.get(2)?,
                        flags: flags.split_whitespace().map(str::to_string).collect(),
                        modseq: row.get::<_, i64>(4)? as u64,
                        received_at: row.get(5)?,
                        size: row.get::<_, i64>(6)? as u64,
                    })
                })
                .map_err(db_error)?;
            let messages = rows.collect::<Result<Vec<_>, _>>().map_err(db_error)?;
            drop(stmt);
            tx.finish().map_err(db_error)?;
            Ok(Some((info, messages)))
        })
    }

    fn store_flags(&self, address: &str, folder: &str, change: FlagChange) -> StoreFuture<'_, FlagsStored> {
        let (address, folder) = (address.to_lowercase(), folder_name(folder).to_string());
        self.write(move |conn| {
            let account = account_id(conn, &address)?;
            folder_exists(conn, account, &folder)?;
            let mut stored = FlagsStored::default();
            let mut updates = Vec::new();
            let mut uids = change.uids.clone();
            uids.sort_unstable();
            uids.dedup();
            for uid in uids {
                let Some((id, _, _, flags, modseq)) = entry_by_uid(conn, account, &folder, uid)? else { continue };
                // RFC 7162 3.1.3: a message changed after UNCHANGEDSINCE is left alone.
                if change.unchanged_since.is_some_and(|since| modseq as u64 > since) {
                    stored.refused.push(uid);
                    continue;
                }
                let new = stored_flags(&flags, change.operation, &change.flags);
                if new != flags {
                    updates.push((id, uid, new));
                }
            }
            if updates.is_empty() {
                return Ok(stored);
            }
            let modseq = next_modseq(conn, account, &folder)?;
            for (id, uid, flags) in updates {
                conn.prepare_cached("UPDATE mailbox SET flags = ?2, modseq = ?3 WHERE id = ?1")
                    .and_then(|mut stmt| stmt.execute(params![id, flags, modseq]))
                    .map_err(db_error)?;
                stored.changed.push((uid, flags.split_whitespace().map(str::to_string).collect(), modseq as u64));
            }
            Ok(stored)
        })
    }

    fn expunge(&self, address: &str, folder: &str, uids: Option<Vec<u32>>) -> StoreFuture<'_, Vec<u32>> {
        let (address, folder) = (address.to_lowercase(), folder_name(folder).to_string());
        self.write(move |conn| {
            let account = account_id(conn, &address)?;
            folder_exists(conn, account, &folder)?;
            let candidates: Vec<(u32, Row5)> = {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT uid, id, message_id, size, flags, modseq FROM mailbox
                         WHERE account_id = ?1 AND folder = ?2 ORDER BY uid",
                    )
                    .map_err(db_error)?;
                let rows = stmt
                    .query_map(params![account, folder], |r| {
                        Ok((r.get::<_, i64>(0)? as u32, (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
                    })
                    .map_err(db_error)?;
                rows.collect::<Result<_, _>>().map_err(db_error)?
            };
            let mut expunged = Vec::new();
            for (uid, (id, message_id, size, flags, _)) in candidates {
                if is_deleted(&flags) && uids.as_ref().is_none_or(|set| set.contains(&uid)) {
                    super::mailboxes::delete_entry(conn, id, account, message_id, size)?;
                    expunged.push(uid);
                }
            }
            if !expunged.is_empty() {
                next_modseq(conn, account, &folder)?;
            }
            Ok(expunged)
        })
    }
}
