//! IMAP folders in PostgreSQL (SPEC 9), with SQLite's semantics (`sqlite/folders.rs`); a
//! new mailbox entry gets its UID at the end of its commit (`messages::AccountDeltas`).

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::base::db_error;
use super::pool::PostgresStore;
use super::rows::account_id;
use crate::error::{StoreError, StoreFuture, StoreResult};
use crate::interface::FolderStore;
use crate::rules::folder_name;
use crate::types::{FolderInfo, FolderMessage};

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
}
