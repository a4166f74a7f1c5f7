//! The folder rows a commit, a new account or a folder command writes (SPEC 9): made where
//! missing with a UIDVALIDITY no earlier folder of their name had, and the new entries of
//! a commit numbered.

use deadpool_postgres::{GenericClient, Transaction};

use super::base::{db_error, now};
use crate::error::{StoreError, StoreResult};
use crate::rules::{default_special_use, new_uid_validity, DEFAULT_FOLDERS};

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
    let uid_validity = take_uid_validity(tx, account_id).await?;
    for (name, special_use) in DEFAULT_FOLDERS {
        insert_folder(tx, account_id, name, special_use, uid_validity, true).await?;
    }
    Ok(())
}

/// Makes a folder a delivery goes to when the account lacks it (deleted meanwhile). The
/// common case, the folder there, costs the one statement; a folder made gets its
/// UIDVALIDITY then (the commit has locked the account's row already, `AccountDeltas`).
pub(super) async fn ensure_folder(tx: &Transaction<'_>, account_id: i64, name: &str) -> StoreResult<()> {
    if insert_folder(tx, account_id, name, default_special_use(name), 0, true).await? {
        let uid_validity = take_uid_validity(tx, account_id).await?;
        tx.execute(
            "UPDATE folders SET uid_validity = $3 WHERE account_id = $1 AND name = $2",
            &[&account_id, &name, &uid_validity],
        )
        .await
        .map_err(db_error)?;
    }
    Ok(())
}

/// The UIDVALIDITY of a folder the account makes now (`rules::new_uid_validity`, from the
/// highest the account gave so far), remembered as its highest. Locks the account's row:
/// two folders made at once are numbered one after the other.
pub(super) async fn take_uid_validity(client: &impl GenericClient, account_id: i64) -> StoreResult<i64> {
    let row = client
        .query_opt("SELECT last_uid_validity FROM accounts WHERE id = $1 FOR NO KEY UPDATE", &[&account_id])
        .await
        .map_err(db_error)?
        .ok_or_else(|| StoreError::NotFound(format!("account {account_id}")))?;
    let last: i64 = row.try_get(0).map_err(db_error)?;
    let row = client
        .query_one("SELECT COALESCE(MAX(uid_validity), 0) FROM folders WHERE account_id = $1", &[&account_id])
        .await
        .map_err(db_error)?;
    let folders: i64 = row.try_get(0).map_err(db_error)?;
    let uid_validity = new_uid_validity(now(), last.max(folders));
    client
        .execute("UPDATE accounts SET last_uid_validity = $2 WHERE id = $1", &[&account_id, &uid_validity])
        .await
        .map_err(db_error)?;
    Ok(uid_validity)
}

/// Inserts a folder unless the account has one of that name; whether it did.
pub(super) async fn insert_folder(
    client: &impl GenericClient,
    account_id: i64,
    name: &str,
    special_use: Option<&str>,
    uid_validity: i64,
    subscribed: bool,
) -> StoreResult<bool> {
    let statement = client
        .prepare_cached(
            "INSERT INTO folders (account_id, name, special_use, uid_validity, uid_next, highest_modseq, subscribed)
             VALUES ($1, $2, $3, $4, 1, 1, $5) ON CONFLICT (account_id, name) DO NOTHING",
        )
        .await
        .map_err(db_error)?;
    let inserted = client
        .execute(&statement, &[&account_id, &name, &special_use, &uid_validity, &subscribed])
        .await
        .map_err(db_error)?;
    Ok(inserted == 1)
}

/// The folder's next mod-sequence, taken at the end of a change (RFC 7162 3.1).
pub(super) async fn next_modseq(
    tx: &deadpool_postgres::Transaction<'_>,
    account: i64,
    folder: &str,
) -> StoreResult<i64> {
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
