//! The folder rows a commit or a new account writes (SPEC 9): made where missing, and
//! the new entries of a commit numbered.

use deadpool_postgres::{GenericClient, Transaction};

use super::base::{db_error, now};
use crate::error::StoreResult;
use crate::rules::{default_special_use, DEFAULT_FOLDERS};

/// Numbers the entries of account `$1`'s folder `$2` that this transaction inserted
/// without a UID, in insertion order, from the folder's next UID, with one new
/// mod-sequence (RFC 7162 3.1: several messages may share one); the folder's row is locked
/// here until the commit, so UIDs follow the commit order (RFC 9051 2.3.1.1).
pub(super) const NUMBER_NEW_ENTRIES: &str = "
    WITH new AS (
        SELECT id, ROW_NUMBER() OVER (ORDER BY id) AS k FROM mailbox
        WHERE account_id = $1 AND folder = $2 AND uid IS NULL
    ), folder AS (
        UPDATE folders SET uid_next = uid_next + (SELECT COUNT(*) FROM new), highest_modseq = highest_modseq + 1
        WHERE account_id = $1 AND name = $2
        RETURNING uid_next - (SELECT COUNT(*) FROM new) AS first, highest_modseq
    )
    UPDATE mailbox b SET uid = folder.first + new.k - 1, modseq = folder.highest_modseq
    FROM folder, new WHERE b.id = new.id";

/// Makes the folders every account has (a new account's, in its own transaction).
pub(super) async fn create_default_folders(tx: &Transaction<'_>, account_id: i64) -> StoreResult<()> {
    for (name, special_use) in DEFAULT_FOLDERS {
        create_folder(tx, account_id, name, special_use).await?;
    }
    Ok(())
}

/// Makes a folder a delivery goes to when the account lacks it (deleted meanwhile).
pub(super) async fn ensure_folder(tx: &Transaction<'_>, account_id: i64, name: &str) -> StoreResult<()> {
    create_folder(tx, account_id, name, default_special_use(name)).await
}

async fn create_folder(
    client: &impl GenericClient,
    account_id: i64,
    name: &str,
    special_use: Option<&str>,
) -> StoreResult<()> {
    let statement = client
        .prepare_cached(
            "INSERT INTO folders (account_id, name, special_use, uid_validity, uid_next, highest_modseq, subscribed)
             VALUES ($1, $2, $3, $4, 1, 1, TRUE) ON CONFLICT (account_id, name) DO NOTHING",
        )
        .await
        .map_err(db_error)?;
    client.execute(&statement, &[&account_id, &name, &special_use, &now()]).await.map_err(db_error)?;
    Ok(())
}
