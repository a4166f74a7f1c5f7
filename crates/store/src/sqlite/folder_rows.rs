//! The folder rows a new account, a delivery and the folder commands write (SPEC 9): made
//! with a UIDVALIDITY no earlier folder of their name had, and their UIDs taken.

use rusqlite::{params, Connection, OptionalExtension};

use super::base::*;
use crate::error::{StoreError, StoreResult};
use crate::rules::{default_special_use, new_uid_validity, DEFAULT_FOLDERS};

/// Makes the folders every account has (a new account's, in its own transaction).
pub(super) fn create_default_folders(conn: &Connection, account_id: i64) -> StoreResult<()> {
    let uid_validity = take_uid_validity(conn, account_id)?;
    for (name, special_use) in DEFAULT_FOLDERS {
        insert_folder(conn, account_id, name, special_use, uid_validity, true)?;
    }
    Ok(())
}

/// The UIDVALIDITY of a folder the account makes now (`rules::new_uid_validity`, from the
/// highest the account gave so far), remembered as its highest.
pub(super) fn take_uid_validity(conn: &Connection, account_id: i64) -> StoreResult<i64> {
    let highest: i64 = conn
        .prepare_cached(
            "SELECT MAX(a.last_uid_validity, COALESCE((SELECT MAX(f.uid_validity) FROM folders f
                                                       WHERE f.account_id = a.id), 0))
             FROM accounts a WHERE a.id = ?1",
        )
        .and_then(|mut stmt| stmt.query_row(params![account_id], |r| r.get(0)).optional())
        .map_err(db_error)?
        .ok_or_else(|| StoreError::NotFound(format!("account {account_id}")))?;
    let uid_validity = new_uid_validity(now(), highest);
    conn.prepare_cached("UPDATE accounts SET last_uid_validity = ?2 WHERE id = ?1")
        .and_then(|mut stmt| stmt.execute(params![account_id, uid_validity]))
        .map_err(db_error)?;
    Ok(uid_validity)
}

/// Inserts a folder unless the account has one of that name; whether it did.
pub(super) fn insert_folder(
    conn: &Connection,
    account_id: i64,
    name: &str,
    special_use: Option<&str>,
    uid_validity: i64,
    subscribed: bool,
) -> StoreResult<bool> {
    let inserted = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO folders (account_id, name, special_use, uid_validity, uid_next, highest_modseq,
                                            subscribed)
             VALUES (?1, ?2, ?3, ?4, 1, 1, ?5)",
        )
        .and_then(|mut stmt| stmt.execute(params![account_id, name, special_use, uid_validity, subscribed]))
        .map_err(db_error)?;
    Ok(inserted == 1)
}

/// The UID and mod-sequence of a message arriving in `folder` (RFC 9051 2.3.1.1: each new
/// message a higher UID than all before it; RFC 7162 3.1: a higher mod-sequence). Inside
/// the writer's transaction, so UIDs follow the commit order. A folder the account lacks
/// (a delivery to a folder deleted meanwhile) is made again, with a new UIDVALIDITY.
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
    let uid_validity = take_uid_validity(conn, account_id)?;
    insert_folder(conn, account_id, folder, default_special_use(folder), uid_validity, true)?;
    take(conn)?.ok_or_else(|| StoreError::NotFound(format!("folder {folder}")))
}

/// The folder's next mod-sequence, taken (RFC 7162 3.1: every change gets a higher one).
pub(super) fn next_modseq(conn: &Connection, account_id: i64, folder: &str) -> StoreResult<i64> {
    conn.prepare_cached(
        "UPDATE folders SET highest_modseq = highest_modseq + 1 WHERE account_id = ?1 AND name = ?2
         RETURNING highest_modseq",
    )
    .and_then(|mut stmt| stmt.query_row(params![account_id, folder], |r| r.get(0)).optional())
    .map_err(db_error)?
    .ok_or_else(|| StoreError::NotFound(format!("folder {folder}")))
}
