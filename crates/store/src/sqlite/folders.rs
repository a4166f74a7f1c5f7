//! IMAP folders in SQLite (SPEC 9): each account's folders, UIDs given as messages arrive.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::base::*;
use super::folder_rows::{insert_folder, next_modseq, next_uid, take_uid_validity};
use super::writer::SqliteStore;
use crate::error::{StoreError, StoreFuture, StoreResult};
use crate::interface::FolderStore;
use crate::rules::{folder_name, is_deleted, rename_order, renamed_folder, stored_flags};
use crate::types::{
    AppendedMessage, CopiedMessages, Envelope, FlagChange, FlagOperation, FlagsStored, FolderInfo, FolderMessage,
    FolderVersion, NewMessage,
};

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

fn folder_exists(conn: &Connection, account_id: i64, folder: &str) -> StoreResult<()> {
    uid_validity(conn, account_id, folder)?.map(|_| ()).ok_or_else(|| StoreError::NotFound(format!("folder {folder}")))
}

/// The folder's UIDVALIDITY, None when the account has no such folder.
fn uid_validity(conn: &Connection, account_id: i64, folder: &str) -> StoreResult<Option<i64>> {
    conn.prepare_cached("SELECT uid_validity FROM folders WHERE account_id = ?1 AND name = ?2")
        .and_then(|mut stmt| stmt.query_row(params![account_id, folder], |r| r.get(0)).optional())
        .map_err(db_error)
}

/// Copies (or moves) the messages of `from` with these UIDs into `to`, in UID order, each
/// a new mailbox entry of the same message with its flags and internal date and the next
/// UID of `to` (RFC 9051 6.4.7, RFC 6851 3.3); a copy counts in the account as a delivery
/// does, a move does not. MOVE's removal is an expunge of `from` (RFC 6851 4.3), so it
/// takes a new mod-sequence there (RFC 7162 3.1).
fn copy_entries(
    conn: &Connection,
    account: i64,
    from: &str,
    mut uids: Vec<u32>,
    to: &str,
    remove: bool,
) -> StoreResult<CopiedMessages> {
    folder_exists(conn, account, from)?;
    let uid_validity = uid_validity(conn, account, to)?.ok_or_else(|| StoreError::NotFound(format!("folder {to}")))?;
    uids.sort_unstable();
    uids.dedup();
    let mut pairs = Vec::new();
    for uid in uids {
        let entry: Option<(i64, i64, i64, String, i64)> = conn
            .prepare_cached(
                "SELECT id, message_id, size, flags, received_at FROM mailbox
                 WHERE account_id = ?1 AND folder = ?2 AND uid = ?3",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![account, from, uid], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .optional()
            })
            .map_err(db_error)?;
        let Some((id, message_id, size, flags, received_at)) = entry else { continue };
        let (new_uid, modseq) = next_uid(conn, account, to)?;
        conn.prepare_cached(
            "INSERT INTO mailbox (account_id, folder, message_id, received_at, size, uid, flags, modseq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .and_then(|mut stmt| stmt.execute(params![account, to, message_id, received_at, size, new_uid, flags, modseq]))
        .map_err(db_error)?;
        if remove {
            // The message stays referenced by its new entry: only the old entry goes.
            conn.prepare_cached("DELETE FROM mailbox WHERE id = ?1")
                .and_then(|mut stmt| stmt.execute(params![id]))
                .map_err(db_error)?;
        } else {
            add_to_counts(conn, account, size)?;
        }
        pairs.push((uid, new_uid as u32));
    }
    if remove && !pairs.is_empty() {
        next_modseq(conn, account, from)?;
    }
    Ok(CopiedMessages { uid_validity: uid_validity as u32, pairs })
}

/// One more message of `size` octets in the account (as a delivery counts one).
fn add_to_counts(conn: &Connection, account: i64, size: i64) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE accounts SET used_bytes = used_bytes + ?2, message_count = message_count + 1 WHERE id = ?1",
    )
    .and_then(|mut stmt| stmt.execute(params![account, size]))
    .map_err(db_error)?;
    Ok(())
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

    fn folder_version(&self, address: &str, folder: &str) -> StoreFuture<'_, Option<FolderVersion>> {
        let (address, folder) = (address.to_lowercase(), folder_name(folder).to_string());
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT f.uid_validity, f.uid_next, f.highest_modseq FROM folders f
                 JOIN accounts a ON a.id = f.account_id WHERE a.address = ?1 AND f.name = ?2",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![address, folder], |r| {
                    Ok(FolderVersion {
                        uid_validity: r.get::<_, i64>(0)? as u32,
                        uid_next: r.get::<_, i64>(1)? as u32,
                        highest_modseq: r.get::<_, i64>(2)? as u64,
                    })
                })
                .optional()
            })
            .map_err(db_error)
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

    fn create_folder(&self, address: &str, name: &str, special_use: Option<&str>) -> StoreFuture<'_, ()> {
        let (address, name) = (address.to_lowercase(), folder_name(name).to_string());
        let special_use = special_use.map(str::to_string);
        self.write(move |conn| {
            let account = account_id(conn, &address)?;
            if uid_validity(conn, account, &name)?.is_some() {
                return Err(StoreError::Conflict(format!("folder {name} exists")));
            }
            let uid_validity = take_uid_validity(conn, account)?;
            insert_folder(conn, account, &name, special_use.as_deref(), uid_validity, false)?;
            Ok(())
        })
    }

    fn delete_folder(&self, address: &str, name: &str) -> StoreFuture<'_, ()> {
        let (address, name) = (address.to_lowercase(), folder_name(name).to_string());
        self.write(move |conn| {
            let account = account_id(conn, &address)?;
            folder_exists(conn, account, &name)?;
            let entries: Vec<(i64, i64, i64)> = {
                let mut stmt = conn
                    .prepare_cached("SELECT id, message_id, size FROM mailbox WHERE account_id = ?1 AND folder = ?2")
                    .map_err(db_error)?;
                let rows = stmt
                    .query_map(params![account, name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .map_err(db_error)?;
                rows.collect::<Result<_, _>>().map_err(db_error)?
            };
            // As EXPUNGE removes them (RFC 9051 6.3.5: the folder's messages go with it).
            for (id, message_id, size) in entries {
                super::mailboxes::delete_entry(conn, id, account, message_id, size)?;
            }
            conn.prepare_cached("DELETE FROM folders WHERE account_id = ?1 AND name = ?2")
                .and_then(|mut stmt| stmt.execute(params![account, name]))
                .map_err(db_error)?;
            Ok(())
        })
    }

    fn rename_folder(&self, address: &str, from: &str, to: &str) -> StoreFuture<'_, ()> {
        let address = address.to_lowercase();
        let (from, to) = (folder_name(from).to_string(), folder_name(to).to_string());
        self.write(move |conn| {
            let account = account_id(conn, &address)?;
            folder_exists(conn, account, &from)?;
            if uid_validity(conn, account, &to)?.is_some() {
                return Err(StoreError::Conflict(format!("folder {to} exists")));
            }
            if from == "INBOX" {
                // RFC 9051 6.3.6: INBOX's messages move to a new folder, INBOX stays (empty);
                // its inferiors are not renamed.
                let uid_validity = take_uid_validity(conn, account)?;
                insert_folder(conn, account, &to, None, uid_validity, false)?;
                let uids: Vec<u32> = {
                    let mut stmt = conn
                        .prepare_cached("SELECT uid FROM mailbox WHERE account_id = ?1 AND folder = 'INBOX'")
                        .map_err(db_error)?;
                    let rows = stmt.query_map(params![account], |r| r.get(0)).map_err(db_error)?;
                    rows.collect::<Result<_, _>>().map_err(db_error)?
                };
                copy_entries(conn, account, &from, uids, &to, true)?;
                return Ok(());
            }
            let names: Vec<String> = {
                let mut stmt =
                    conn.prepare_cached("SELECT name FROM folders WHERE account_id = ?1").map_err(db_error)?;
                let rows = stmt.query_map(params![account], |r| r.get(0)).map_err(db_error)?;
                rows.collect::<Result<_, _>>().map_err(db_error)?
            };
            let mut moving: Vec<String> =
                names.iter().filter(|n| renamed_folder(n, &from, &to).is_some()).cloned().collect();
            // An inferior's new name taken by a folder that stays is taken: `to` itself is
            // checked above, `to/x` here.
            for name in &moving {
                if let Some(new) = renamed_folder(name, &from, &to) {
                    if names.contains(&new) && !moving.contains(&new) {
                        return Err(StoreError::Conflict(format!("folder {new} exists")));
                    }
                }
            }
            rename_order(&mut moving, &from, &to);
            for old in moving {
                let Some(new) = renamed_folder(&old, &from, &to) else { continue };
                conn.prepare_cached("UPDATE folders SET name = ?3 WHERE account_id = ?1 AND name = ?2")
                    .and_then(|mut stmt| stmt.execute(params![account, old, new]))
                    .map_err(db_error)?;
                // The messages keep their UIDs: UIDVALIDITY and UIDNEXT went with the folder.
                conn.prepare_cached("UPDATE mailbox SET folder = ?3 WHERE account_id = ?1 AND folder = ?2")
                    .and_then(|mut stmt| stmt.execute(params![account, old, new]))
                    .map_err(db_error)?;
            }
            Ok(())
        })
    }

    fn subscribe_folder(&self, address: &str, name: &str, subscribed: bool) -> StoreFuture<'_, ()> {
        let (address, name) = (address.to_lowercase(), folder_name(name).to_string());
        self.write(move |conn| {
            let account = account_id(conn, &address)?;
            let changed = conn
                .prepare_cached("UPDATE folders SET subscribed = ?3 WHERE account_id = ?1 AND name = ?2")
                .and_then(|mut stmt| stmt.execute(params![account, name, subscribed]))
                .map_err(db_error)?;
            if changed == 0 {
                return Err(StoreError::NotFound(format!("folder {name}")));
            }
            Ok(())
        })
    }

    fn copy_messages(
        &self,
        address: &str,
        from: &str,
        uids: Vec<u32>,
        to: &str,
        remove: bool,
    ) -> StoreFuture<'_, CopiedMessages> {
        let address = address.to_lowercase();
        let (from, to) = (folder_name(from).to_string(), folder_name(to).to_string());
        self.write(move |conn| {
            let account = account_id(conn, &address)?;
            copy_entries(conn, account, &from, uids, &to, remove)
        })
    }

    fn append_message(&self, address: &str, folder: &str, message: AppendedMessage) -> StoreFuture<'_, (u32, u32)> {
        let (address, folder) = (address.to_lowercase(), folder_name(folder).to_string());
        self.write(move |conn| {
            let account = account_id(conn, &address)?;
            let uid_validity = uid_validity(conn, account, &folder)?
                .ok_or_else(|| StoreError::NotFound(format!("folder {folder}")))?;
            let flags = stored_flags("", FlagOperation::Replace, &message.flags);
            let size = message.data.len() as i64;
            // The message row as a commit writes it, without queue entries: the mailbox
            // entry below is its only reference.
            let new = NewMessage {
                queue_id: message.queue_id,
                envelope: Envelope { sender: String::new(), auth_results: "none".into(), ..Default::default() },
                received_at: message.received_at,
                data: message.data,
                spooled: None,
                deliveries: Vec::new(),
            };
            let message_id = super::outbound::insert_message(conn, &new)?;
            let (uid, modseq) = next_uid(conn, account, &folder)?;
            conn.prepare_cached(
                "INSERT INTO mailbox (account_id, folder, message_id, received_at, size, uid, flags, modseq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![account, folder, message_id, new.received_at, size, uid, flags, modseq])
            })
            .map_err(db_error)?;
            add_to_counts(conn, account, size)?;
            Ok((uid_validity as u32, uid as u32))
        })
    }
}
