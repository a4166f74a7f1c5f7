//! IMAP folders in PostgreSQL (SPEC 9), with SQLite's semantics (`sqlite/folders.rs`); a
//! new mailbox entry gets its UID at the end of its commit (`messages::AccountDeltas`).

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::base::db_error;
use super::messages::{delete_orphans, AccountDeltas};
use super::pool::PostgresStore;
use super::rows::account_id;
use crate::error::{StoreError, StoreFuture, StoreResult};
use crate::interface::FolderStore;
use crate::rules::{folder_name, is_deleted, stored_flags};
use crate::types::{FlagChange, FlagsStored, FolderInfo, FolderMessage};

// Lock order of the changes here, as of a commit's (`messages::AccountDeltas::apply`):
// mailbox rows (in UID order), then the account's row, then the folder's row last. A
// commit locks no existing mailbox row, so none of these can wait on each other in a
// circle.

/// The folder's next mod-sequence, taken at the end of a change (RFC 7162 3.1).
async fn next_modseq(tx: &deadpool_postgres::Transaction<'_>, account: i64, folder: &str) -> StoreResult<i64> {
    let row = tx
        .query_opt(
            "UPDATE folders SET highest_modseq = highest_modseq + 1 WHERE account_id = $1 AND name = $2
             RETURNING highest_modseq",
            &[&account, &folder],
        )
        .await
        .map_err(db_error)?;
    let row = row.ok_or_else(|| StoreError::NotFound(format!("folder {folder}")))?;
    row.try_get(0).map_err(db_error)
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
}
