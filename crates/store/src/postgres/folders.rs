//! IMAP folders in PostgreSQL (SPEC 9), with SQLite's semantics (`sqlite/folders.rs`); a
//! new mailbox entry gets its UID at the end of its commit (`messages::AccountDeltas`).

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::Row;

use super::base::db_error;
use super::folder_rows::{insert_folder, next_modseq, take_uid_validity};
use super::messages::{delete_orphans, insert_messages, AccountDeltas};
use super::pool::PostgresStore;
use super::rows::account_id;
use crate::error::{StoreError, StoreFuture, StoreResult};
use crate::interface::FolderStore;
use crate::rules::{folder_name, is_deleted, rename_order, renamed_folder, stored_flags};
use crate::types::{
    AppendedMessage, CopiedMessages, Envelope, FlagChange, FlagOperation, FlagsStored, FolderInfo, FolderMessage,
    FolderVersion, NewMessage,
};

// Lock order of the changes here, as of a commit's (`messages::AccountDeltas::apply`):
// mailbox rows (in UID order), then the account's row, then the folder's row last (several
// folders of one account: by name). A commit locks no existing mailbox row, so none of
// these can wait on each other in a circle. A change that does not touch the account's
// row may leave it out, never take it after a folder's.
//
// DELETE and RENAME take the account's row although they change nothing in it: a commit
// holds it from its counts to its end, so once DELETE or RENAME has it, no commit is
// between numbering its entries in the folder and committing them. Entries a commit
// numbered there after DELETE or RENAME took the folder's mailbox rows are then visible,
// and the change starts again rather than leave them in a folder that is gone.

/// How often DELETE or RENAME starts again when deliveries keep arriving in its folders.
const ATTEMPTS: usize = 5;

/// Locks the account's row (see above).
async fn lock_account(tx: &Transaction<'_>, account: i64) -> StoreResult<()> {
    tx.query_opt("SELECT id FROM accounts WHERE id = $1 FOR NO KEY UPDATE", &[&account])
        .await
        .map_err(db_error)?
        .map(|_| ())
        .ok_or_else(|| StoreError::NotFound(format!("account {account}")))
}

/// The folder's UIDVALIDITY, None when the account has no such folder.
async fn uid_validity(client: &impl GenericClient, account: i64, folder: &str) -> StoreResult<Option<i64>> {
    let row = client
        .query_opt("SELECT uid_validity FROM folders WHERE account_id = $1 AND name = $2", &[&account, &folder])
        .await
        .map_err(db_error)?;
    row.map(|r| r.try_get(0).map_err(db_error)).transpose()
}

/// Takes `count` UIDs of the folder and one new mod-sequence: (first UID, mod-sequence,
/// UIDVALIDITY); NotFound when the folder is gone.
async fn take_uids(tx: &Transaction<'_>, account: i64, folder: &str, count: i64) -> StoreResult<(i64, i64, i64)> {
    let row = tx
        .query_opt(
            "UPDATE folders SET uid_next = uid_next + $3, highest_modseq = highest_modseq + 1
             WHERE account_id = $1 AND name = $2 RETURNING uid_next - $3, highest_modseq, uid_validity",
            &[&account, &folder, &count],
        )
        .await
        .map_err(db_error)?
        .ok_or_else(|| StoreError::NotFound(format!("folder {folder}")))?;
    Ok((row.try_get(0).map_err(db_error)?, row.try_get(1).map_err(db_error)?, row.try_get(2).map_err(db_error)?))
}

/// Gives entries this transaction inserted without a UID theirs, and the mod-sequence.
async fn set_uids(tx: &Transaction<'_>, numbered: &[(i64, i64)], modseq: i64) -> StoreResult<()> {
    let statement =
        tx.prepare_cached("UPDATE mailbox SET uid = $2, modseq = $3 WHERE id = $1").await.map_err(db_error)?;
    let (statement, shared) = (&statement, tx);
    let writes = numbered
        .iter()
        .map(|(id, uid)| async move { shared.execute(statement, &[id, uid, &modseq]).await.map_err(db_error) });
    for written in futures_util::future::join_all(writes).await {
        written?;
    }
    Ok(())
}

/// Copies (or moves) the messages of `from` with these UIDs into `to`, in UID order, each
/// a new mailbox entry of the same message with its flags and internal date and the next
/// UID of `to` (RFC 9051 6.4.7, RFC 6851 3.3); a copy counts in the account as a delivery
/// does, a move does not. MOVE's removal is an expunge of `from` (RFC 6851 4.3), so `from`
/// takes a new mod-sequence (RFC 7162 3.1). Locks: the source entries (in UID order), the
/// account's row for a copy, then the folders by name.
async fn copy_entries(
    tx: &Transaction<'_>,
    account: i64,
    from: &str,
    uids: &[u32],
    to: &str,
    remove: bool,
) -> StoreResult<CopiedMessages> {
    folder_exists(tx, account, from).await?;
    let Some(uid_validity) = uid_validity(tx, account, to).await? else {
        return Err(StoreError::NotFound(format!("folder {to}")));
    };
    let uids: Vec<i64> = uids.iter().map(|&u| i64::from(u)).collect();
    // Shared for a copy (two copies of one message at once may both go ahead), exclusive for
    // a move, as EXPUNGE takes them.
    let lock = if remove { "FOR UPDATE" } else { "FOR SHARE" };
    let rows = tx
        .query(
            &format!(
                "SELECT uid, id, message_id, size, flags, received_at FROM mailbox
                 WHERE account_id = $1 AND folder = $2 AND uid = ANY($3) ORDER BY uid {lock}"
            ),
            &[&account, &from, &uids],
        )
        .await
        .map_err(db_error)?;
    if rows.is_empty() {
        return Ok(CopiedMessages { uid_validity: uid_validity as u32, pairs: Vec::new() });
    }
    let insert = tx
        .prepare_cached(
            "INSERT INTO mailbox (account_id, folder, message_id, received_at, size, flags)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .await
        .map_err(db_error)?;
    let (insert, shared) = (&insert, tx);
    let mut deltas = AccountDeltas::default();
    let mut copies = Vec::with_capacity(rows.len());
    let mut sources = Vec::with_capacity(rows.len());
    for row in &rows {
        let size: i64 = row.try_get(3).map_err(db_error)?;
        deltas.add(account, size, 1);
        sources.push((row.try_get::<_, i64>(0).map_err(db_error)?, row.try_get::<_, i64>(1).map_err(db_error)?));
        let message_id: i64 = row.try_get(2).map_err(db_error)?;
        let flags: String = row.try_get(4).map_err(db_error)?;
        let received_at: i64 = row.try_get(5).map_err(db_error)?;
        copies.push(async move {
            let row = shared.query_one(insert, &[&account, &to, &message_id, &received_at, &size, &flags]).await?;
            row.try_get::<_, i64>(0)
        });
    }
    let mut new_ids = Vec::with_capacity(copies.len());
    for inserted in futures_util::future::join_all(copies).await {
        new_ids.push(inserted.map_err(db_error)?);
    }
    if remove {
        // The messages stay referenced by their new entries: only the old entries go.
        let old: Vec<i64> = sources.iter().map(|(_, id)| *id).collect();
        tx.execute("DELETE FROM mailbox WHERE id = ANY($1)", &[&old]).await.map_err(db_error)?;
    } else {
        deltas.apply(tx).await?;
    }
    let mut folders = vec![to];
    if remove && from != to {
        folders.push(from);
    }
    folders.sort_unstable();
    let mut numbers = None;
    for folder in folders {
        if folder == to {
            numbers = Some(take_uids(tx, account, to, new_ids.len() as i64).await?);
        } else {
            next_modseq(tx, account, from).await?;
        }
    }
    let Some((first, modseq, uid_validity)) = numbers else {
        return Err(StoreError::NotFound(format!("folder {to}")));
    };
    let numbered: Vec<(i64, i64)> = new_ids.iter().zip(first..).map(|(id, uid)| (*id, uid)).collect();
    set_uids(tx, &numbered, modseq).await?;
    let pairs = sources.iter().zip(first..).map(|((uid, _), new)| (*uid as u32, new as u32)).collect();
    Ok(CopiedMessages { uid_validity: uid_validity as u32, pairs })
}

async fn folder_exists(client: &impl GenericClient, account: i64, folder: &str) -> StoreResult<()> {
    let found = client
        .query_opt("SELECT id FROM folders WHERE account_id = $1 AND name = $2", &[&account, &folder])
        .await
        .map_err(db_error)?;
    found.map(|_| ()).ok_or_else(|| StoreError::NotFound(format!("folder {folder}")))
}

const FOLDER_COLUMNS: &str = "f.name, f.special_use, f.uid_validity, f.uid_next, f.highest_modseq, f.subscribed,
     (SELECT COUNT(*) FROM mailbox b WHERE b.account_id = f.account_id AND b.folder = f.name)";

fn to_folder(row: &Row) -> StoreResult<FolderInfo> {
    Ok(FolderInfo {
        name: row.try_get(0).map_err(db_error)?,
        special_use: row.try_get(1).map_err(db_error)?,
        uid_validity: row.try_get::<_, i64>(2).map_err(db_error)? as u32,
        uid_next: row.try_get::<_, i64>(3).map_err(db_error)? as u32,
        highest_modseq: row.try_get::<_, i64>(4).map_err(db_error)? as u64,
        subscribed: row.try_get(5).map_err(db_error)?,
        messages: row.try_get::<_, i64>(6).map_err(db_error)? as u32,
    })
}

async fn existing_account(client: &impl GenericClient, address: &str) -> StoreResult<i64> {
    account_id(client, address).await?.ok_or_else(|| StoreError::NotFound(format!("user {address}")))
}

impl FolderStore for PostgresStore {
    fn list_folders(&self, address: &str) -> StoreFuture<'_, Vec<FolderInfo>> {
        let address = address.to_lowercase();
        Box::pin(async move {
            let conn = self.conn().await?;
            let account = existing_account(&conn, &address).await?;
            let rows = conn
                .query(
                    &format!("SELECT {FOLDER_COLUMNS} FROM folders f WHERE f.account_id = $1 ORDER BY f.name"),
                    &[&account],
                )
                .await
                .map_err(db_error)?;
            rows.iter().map(to_folder).collect()
        })
    }

    fn folder_version(&self, address: &str, folder: &str) -> StoreFuture<'_, Option<FolderVersion>> {
        let (address, folder) = (address.to_lowercase(), folder_name(folder).to_string());
        Box::pin(async move {
            let conn = self.conn().await?;
            let statement = conn
                .prepare_cached(
                    "SELECT f.uid_validity, f.uid_next, f.highest_modseq FROM folders f
                     JOIN accounts a ON a.id = f.account_id WHERE a.address = $1 AND f.name = $2",
                )
                .await
                .map_err(db_error)?;
            let Some(row) = conn.query_opt(&statement, &[&address, &folder]).await.map_err(db_error)? else {
                return Ok(None);
            };
            Ok(Some(FolderVersion {
                uid_validity: row.try_get::<_, i64>(0).map_err(db_error)? as u32,
                uid_next: row.try_get::<_, i64>(1).map_err(db_error)? as u32,
                highest_modseq: row.try_get::<_, i64>(2).map_err(db_error)? as u64,
            }))
        })
    }

    fn folder_messages(
        &self,
        address: &str,
        folder: &str,
    ) -> StoreFuture<'_, Option<(FolderInfo, Vec<FolderMessage>)>> {
        let (address, folder) = (address.to_lowercase(), folder_name(folder).to_string());
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let account = existing_account(&conn, &address).await?;
            // One snapshot: the folder's numbers and its messages agree.
            let tx = conn
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(db_error)?;
            let info = tx
                .query_opt(
                    &format!("SELECT {FOLDER_COLUMNS} FROM folders f WHERE f.account_id = $1 AND f.name = $2"),
                    &[&account, &folder],
                )
                .await
                .map_err(db_error)?;
            let Some(info) = info.as_ref().map(to_folder).transpose()? else { return Ok(None) };
            let rows = tx
                .query(
                    "SELECT uid, id, message_id, flags, modseq, received_at, size FROM mailbox
                     WHERE account_id = $1 AND folder = $2 ORDER BY uid",
                    &[&account, &folder],
                )
                .await
                .map_err(db_error)?;
            let messages = rows
                .iter()
                .map(|row| {
                    let flags: String = row.try_get(3).map_err(db_error)?;
                    Ok(FolderMessage {
                        uid: row.try_get::<_, i64>(0).map_err(db_error)? as u32,
                        entry_id: row.try_get(1).map_err(db_error)?,
                        message_id: row.try_get(2).map_err(db_error)?,
                        flags: flags.split_whitespace().map(str::to_string).collect(),
                        modseq: row.try_get::<_, i64>(4).map_err(db_error)? as u64,
                        received_at: row.try_get(5).map_err(db_error)?,
                        size: row.try_get::<_, i64>(6).map_err(db_error)? as u64,
                    })
                })
                .collect::<StoreResult<Vec<_>>>()?;
            tx.commit().await.map_err(db_error)?;
            Ok(Some((info, messages)))
        })
    }

    fn store_flags(&self, address: &str, folder: &str, change: FlagChange) -> StoreFuture<'_, FlagsStored> {
        let (address, folder) = (address.to_lowercase(), folder_name(folder).to_string());
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let account = existing_account(&conn, &address).await?;
            let tx = conn.transaction().await.map_err(db_error)?;
            folder_exists(&tx, account, &folder).await?;
            let uids: Vec<i64> = change.uids.iter().map(|&u| i64::from(u)).collect();
            let rows = tx
                .query(
                    "SELECT uid, id, flags, modseq FROM mailbox WHERE account_id = $1 AND folder = $2
                     AND uid = ANY($3) ORDER BY uid FOR UPDATE",
                    &[&account, &folder, &uids],
                )
                .await
                .map_err(db_error)?;
            let mut stored = FlagsStored::default();
            let mut updates = Vec::new();
            for row in &rows {
                let uid = row.try_get::<_, i64>(0).map_err(db_error)? as u32;
                let id: i64 = row.try_get(1).map_err(db_error)?;
                let flags: String = row.try_get(2).map_err(db_error)?;
                let modseq: i64 = row.try_get(3).map_err(db_error)?;
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
                tx.commit().await.map_err(db_error)?;
                return Ok(stored);
            }
            let modseq = next_modseq(&tx, account, &folder).await?;
            let statement = tx
                .prepare_cached("UPDATE mailbox SET flags = $2, modseq = $3 WHERE id = $1")
                .await
                .map_err(db_error)?;
            let (statement, shared) = (&statement, &tx);
            let writes = updates.iter().map(|(id, _, flags)| async move {
                shared.execute(statement, &[id, flags, &modseq]).await.map_err(db_error)
            });
            for written in futures_util::future::join_all(writes).await {
                written?;
            }
            tx.commit().await.map_err(db_error)?;
            stored.changed = updates
                .into_iter()
                .map(|(_, uid, flags)| (uid, flags.split_whitespace().map(str::to_string).collect(), modseq as u64))
                .collect();
            Ok(stored)
        })
    }

    fn expunge(&self, address: &str, folder: &str, uids: Option<Vec<u32>>) -> StoreFuture<'_, Vec<u32>> {
        let (address, folder) = (address.to_lowercase(), folder_name(folder).to_string());
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let account = existing_account(&conn, &address).await?;
            let tx = conn.transaction().await.map_err(db_error)?;
            folder_exists(&tx, account, &folder).await?;
            let rows = tx
                .query(
                    "SELECT uid, id, flags FROM mailbox WHERE account_id = $1 AND folder = $2 ORDER BY uid FOR UPDATE",
                    &[&account, &folder],
                )
                .await
                .map_err(db_error)?;
            let mut chosen = Vec::new();
            for row in &rows {
                let uid = row.try_get::<_, i64>(0).map_err(db_error)? as u32;
                let flags: String = row.try_get(2).map_err(db_error)?;
                if is_deleted(&flags) && uids.as_ref().is_none_or(|set| set.contains(&uid)) {
                    chosen.push((uid, row.try_get::<_, i64>(1).map_err(db_error)?));
                }
            }
            if chosen.is_empty() {
                tx.commit().await.map_err(db_error)?;
                return Ok(Vec::new());
            }
            let statement = tx
                .prepare_cached("DELETE FROM mailbox WHERE id = $1 RETURNING message_id, size")
                .await
                .map_err(db_error)?;
            let (statement, shared) = (&statement, &tx);
            let deletions = chosen.iter().map(|(_, id)| async move { shared.query_one(statement, &[id]).await });
            let mut deltas = AccountDeltas::default();
            let mut messages = Vec::new();
            for deleted in futures_util::future::join_all(deletions).await {
                let row = deleted.map_err(db_error)?;
                messages.push(row.try_get::<_, i64>(0).map_err(db_error)?);
                deltas.add(account, -row.try_get::<_, i64>(1).map_err(db_error)?, -1);
            }
            deltas.apply(&tx).await?;
            next_modseq(&tx, account, &folder).await?;
            delete_orphans(&tx, messages).await?;
            tx.commit().await.map_err(db_error)?;
            Ok(chosen.into_iter().map(|(uid, _)| uid).collect())
        })
    }

    fn create_folder(&self, address: &str, name: &str, special_use: Option<&str>) -> StoreFuture<'_, ()> {
        let (address, name) = (address.to_lowercase(), folder_name(name).to_string());
        let special_use = special_use.map(str::to_string);
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let account = existing_account(&conn, &address).await?;
            let tx = conn.transaction().await.map_err(db_error)?;
            // The account's row first, then the new folder's.
            let uid_validity = take_uid_validity(&tx, account).await?;
            if !insert_folder(&tx, account, &name, special_use.as_deref(), uid_validity, false).await? {
                return Err(StoreError::Conflict(format!("folder {name} exists")));
            }
            tx.commit().await.map_err(db_error)
        })
    }

    fn delete_folder(&self, address: &str, name: &str) -> StoreFuture<'_, ()> {
        let (address, name) = (address.to_lowercase(), folder_name(name).to_string());
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let account = existing_account(&conn, &address).await?;
            for _ in 0..ATTEMPTS {
                let tx = conn.transaction().await.map_err(db_error)?;
                folder_exists(&tx, account, &name).await?;
                // As EXPUNGE removes them (RFC 9051 6.3.5: the folder's messages go with it).
                let rows = tx
                    .query(
                        "SELECT id FROM mailbox WHERE account_id = $1 AND folder = $2 ORDER BY uid FOR UPDATE",
                        &[&account, &name],
                    )
                    .await
                    .map_err(db_error)?;
                let ids =
                    rows.iter().map(|r| r.try_get::<_, i64>(0)).collect::<Result<Vec<_>, _>>().map_err(db_error)?;
                let deleted = tx
                    .query("DELETE FROM mailbox WHERE id = ANY($1) RETURNING message_id, size", &[&ids])
                    .await
                    .map_err(db_error)?;
                lock_account(&tx, account).await?;
                let mut deltas = AccountDeltas::default();
                let mut messages = Vec::with_capacity(deleted.len());
                for row in &deleted {
                    messages.push(row.try_get::<_, i64>(0).map_err(db_error)?);
                    deltas.add(account, -row.try_get::<_, i64>(1).map_err(db_error)?, -1);
                }
                deltas.apply(&tx).await?;
                let gone = tx
                    .execute("DELETE FROM folders WHERE account_id = $1 AND name = $2", &[&account, &name])
                    .await
                    .map_err(db_error)?;
                if gone == 0 {
                    return Err(StoreError::NotFound(format!("folder {name}")));
                }
                let late = tx
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM mailbox WHERE account_id = $1 AND folder = $2)",
                        &[&account, &name],
                    )
                    .await
                    .map_err(db_error)?;
                if late.try_get::<_, bool>(0).map_err(db_error)? {
                    // A delivery numbered its message here meanwhile (see the top): again.
                    tx.rollback().await.map_err(db_error)?;
                    continue;
                }
                delete_orphans(&tx, messages).await?;
                return tx.commit().await.map_err(db_error);
            }
            Err(StoreError::Unavailable(format!("folder {name} keeps receiving mail")))
        })
    }

    fn rename_folder(&self, address: &str, from: &str, to: &str) -> StoreFuture<'_, ()> {
        let address = address.to_lowercase();
        let (from, to) = (folder_name(from).to_string(), folder_name(to).to_string());
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let account = existing_account(&conn, &address).await?;
            for _ in 0..ATTEMPTS {
                let tx = conn.transaction().await.map_err(db_error)?;
                folder_exists(&tx, account, &from).await?;
                let rows =
                    tx.query("SELECT name FROM folders WHERE account_id = $1", &[&account]).await.map_err(db_error)?;
                let names =
                    rows.iter().map(|r| r.try_get::<_, String>(0)).collect::<Result<Vec<_>, _>>().map_err(db_error)?;
                if names.contains(&to) {
                    return Err(StoreError::Conflict(format!("folder {to} exists")));
                }
                if from == "INBOX" {
                    // RFC 9051 6.3.6: INBOX's messages move to a new folder, INBOX stays
                    // (empty); its inferiors are not renamed. INBOX's entries first, then the
                    // account's row (the new folder's UIDVALIDITY), then the folders.
                    let rows = tx
                        .query(
                            "SELECT uid FROM mailbox WHERE account_id = $1 AND folder = 'INBOX' ORDER BY uid
                             FOR UPDATE",
                            &[&account],
                        )
                        .await
                        .map_err(db_error)?;
                    let uids = rows
                        .iter()
                        .map(|r| r.try_get::<_, i64>(0).map(|u| u as u32))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(db_error)?;
                    let uid_validity = take_uid_validity(&tx, account).await?;
                    if !insert_folder(&tx, account, &to, None, uid_validity, false).await? {
                        return Err(StoreError::Conflict(format!("folder {to} exists")));
                    }
                    copy_entries(&tx, account, &from, &uids, &to, true).await?;
                    return tx.commit().await.map_err(db_error);
                }
                let mut moving: Vec<String> =
                    names.iter().filter(|n| renamed_folder(n, &from, &to).is_some()).cloned().collect();
                // An inferior's new name taken by a folder that stays is taken: `to` itself
                // is checked above, `to/x` here.
                for name in &moving {
                    if let Some(new) = renamed_folder(name, &from, &to) {
                        if names.contains(&new) && !moving.contains(&new) {
                            return Err(StoreError::Conflict(format!("folder {new} exists")));
                        }
                    }
                }
                // Their entries, the account's row, the folders by name (as Rust orders
                // names: the bytes, whatever the database's collation).
                let entries = tx
                    .query(
                        "SELECT id FROM mailbox WHERE account_id = $1 AND folder = ANY($2)
                         ORDER BY folder COLLATE \"C\", uid FOR UPDATE",
                        &[&account, &moving],
                    )
                    .await
                    .map_err(db_error)?
                    .len() as i64;
                lock_account(&tx, account).await?;
                let folders = tx
                    .query(
                        "SELECT id FROM folders WHERE account_id = $1 AND name = ANY($2)
                         ORDER BY name COLLATE \"C\" FOR UPDATE",
                        &[&account, &moving],
                    )
                    .await
                    .map_err(db_error)?;
                let now = tx
                    .query_one(
                        "SELECT COUNT(*) FROM mailbox WHERE account_id = $1 AND folder = ANY($2)",
                        &[&account, &moving],
                    )
                    .await
                    .map_err(db_error)?;
                if folders.len() != moving.len() || now.try_get::<_, i64>(0).map_err(db_error)? != entries {
                    // A folder went, or a delivery numbered its message in one meanwhile
                    // (see the top): again.
                    tx.rollback().await.map_err(db_error)?;
                    continue;
                }
                rename_order(&mut moving, &from, &to);
                for old in moving {
                    let Some(new) = renamed_folder(&old, &from, &to) else { continue };
                    tx.execute(
                        "UPDATE folders SET name = $3 WHERE account_id = $1 AND name = $2",
                        &[&account, &old, &new],
                    )
                    .await
                    .map_err(db_error)?;
                    // The messages keep their UIDs: UIDVALIDITY and UIDNEXT went with the
                    // folder.
                    tx.execute(
                        "UPDATE mailbox SET folder = $3 WHERE account_id = $1 AND folder = $2",
                        &[&account, &old, &new],
                    )
                    .await
                    .map_err(db_error)?;
                }
                return tx.commit().await.map_err(db_error);
            }
            Err(StoreError::Unavailable(format!("folder {from} keeps changing")))
        })
    }

    fn subscribe_folder(&self, address: &str, name: &str, subscribed: bool) -> StoreFuture<'_, ()> {
        let (address, name) = (address.to_lowercase(), folder_name(name).to_string());
        Box::pin(async move {
            let conn = self.conn().await?;
            let account = existing_account(&conn, &address).await?;
            let changed = conn
                .execute(
                    "UPDATE folders SET subscribed = $3 WHERE account_id = $1 AND name = $2",
                    &[&account, &name, &subscribed],
                )
                .await
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
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let account = existing_account(&conn, &address).await?;
            let tx = conn.transaction().await.map_err(db_error)?;
            let copied = copy_entries(&tx, account, &from, &uids, &to, remove).await?;
            tx.commit().await.map_err(db_error)?;
            Ok(copied)
        })
    }

    fn append_message(&self, address: &str, folder: &str, message: AppendedMessage) -> StoreFuture<'_, (u32, u32)> {
        let (address, folder) = (address.to_lowercase(), folder_name(folder).to_string());
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let account = existing_account(&conn, &address).await?;
            let tx = conn.transaction().await.map_err(db_error)?;
            folder_exists(&tx, account, &folder).await?;
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
            let mut deltas = AccountDeltas::default();
            let ids = insert_messages(&tx, std::slice::from_ref(&new), &mut deltas).await?;
            let message_id =
                ids.first().copied().ok_or_else(|| StoreError::Unavailable("the message was not stored".into()))?;
            let entry = tx
                .query_one(
                    "INSERT INTO mailbox (account_id, folder, message_id, received_at, size, flags)
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    &[&account, &folder, &message_id, &new.received_at, &size, &flags],
                )
                .await
                .map_err(db_error)?;
            let entry: i64 = entry.try_get(0).map_err(db_error)?;
            // Numbered here, in the lock order (the account's row, then the folder's), so the
            // UID follows the commit order as a delivery's does.
            deltas.add(account, size, 1);
            deltas.apply(&tx).await?;
            let (uid, modseq, uid_validity) = take_uids(&tx, account, &folder, 1).await?;
            set_uids(&tx, &[(entry, uid)], modseq).await?;
            tx.commit().await.map_err(db_error)?;
            Ok((uid_validity as u32, uid as u32))
        })
    }
}
