//! Rows of the PostgreSQL store as the store's records: the column lists the concern files
//! select and how each row reads, as `sqlite/base.rs` has them (what a stored value this
//! version does not know reads as is `crate::rules`' decision), and the lookups several
//! concerns share.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::base::db_error;
use crate::error::StoreResult;
use crate::types::{Account, Domain, MailboxEntry, QueueEntry, RecipientDsn};

/// The held-for accounts come along in one trip, newline-separated (no address contains a
/// line break), in the order they were set (`rowid`): SQLite's group_concat with ORDER BY
/// is string_agg here.
pub(super) const DOMAIN_COLUMNS: &str = "name, unauthenticated, catch_all, created_at,
    (SELECT string_agg(account, chr(10) ORDER BY rowid) FROM held_accounts WHERE domain = domains.name),
    etrn_host, forged, dmarc_counts";

pub(super) fn to_domain(row: &Row) -> StoreResult<Domain> {
    let unauthenticated: String = row.try_get(1).map_err(db_error)?;
    let forged: String = row.try_get(6).map_err(db_error)?;
    let dmarc_counts: bool = row.try_get(7).map_err(db_error)?;
    let held_for: Option<String> = row.try_get(4).map_err(db_error)?;
    Ok(Domain {
        name: row.try_get(0).map_err(db_error)?,
        policy: crate::rules::stored_policy(&unauthenticated, &forged, dmarc_counts),
        catch_all: row.try_get(2).map_err(db_error)?,
        created_at: row.try_get(3).map_err(db_error)?,
        held_for: held_for
            .map(|h| h.split('\n').filter(|a| !a.is_empty()).map(str::to_string).collect())
            .unwrap_or_default(),
        etrn_host: row.try_get(5).map_err(db_error)?,
    })
}

pub(super) const ACCOUNT_COLUMNS: &str = "id, address, domain, secret_argon2, secret_scram_sha256, secret_cram_md5, quota_bytes, used_bytes, message_count, created_at";

pub(super) fn to_account(row: &Row) -> StoreResult<Account> {
    let secrets = crate::rules::stored_secrets(
        row.try_get(3).map_err(db_error)?,
        row.try_get(4).map_err(db_error)?,
        row.try_get(5).map_err(db_error)?,
    );
    Ok(Account {
        id: row.try_get(0).map_err(db_error)?,
        address: row.try_get(1).map_err(db_error)?,
        domain: row.try_get(2).map_err(db_error)?,
        secrets,
        quota_bytes: row.try_get::<_, i64>(6).map_err(db_error)? as u64,
        used_bytes: row.try_get::<_, i64>(7).map_err(db_error)? as u64,
        message_count: row.try_get::<_, i64>(8).map_err(db_error)? as u64,
        created_at: row.try_get(9).map_err(db_error)?,
    })
}

/// Over `queue q JOIN messages m ON m.id = q.message_id`.
pub(super) const QUEUE_COLUMNS: &str = "q.id, m.queue_id, q.message_id, m.sender, q.recipient, q.notify, q.orcpt, q.state, q.attempts, q.next_attempt, q.last_reply, q.created_at, m.size";

pub(super) fn to_queue_entry(row: &Row) -> StoreResult<QueueEntry> {
    let state: String = row.try_get(7).map_err(db_error)?;
    Ok(QueueEntry {
        id: row.try_get(0).map_err(db_error)?,
        queue_id: row.try_get(1).map_err(db_error)?,
        message_id: row.try_get(2).map_err(db_error)?,
        sender: row.try_get(3).map_err(db_error)?,
        recipient: row.try_get(4).map_err(db_error)?,
        dsn: RecipientDsn { notify: row.try_get(5).map_err(db_error)?, orcpt: row.try_get(6).map_err(db_error)? },
        state: crate::rules::stored_queue_state(&state),
        attempts: row.try_get::<_, i64>(8).map_err(db_error)? as u32,
        next_attempt: row.try_get(9).map_err(db_error)?,
        last_reply: row.try_get(10).map_err(db_error)?,
        created_at: row.try_get(11).map_err(db_error)?,
        size: row.try_get::<_, i64>(12).map_err(db_error)? as u64,
    })
}

/// Over `mailbox b JOIN messages m ON m.id = b.message_id`.
pub(super) const MAILBOX_COLUMNS: &str = "b.id, b.folder, b.message_id, m.queue_id, b.received_at, b.size, b.uid";

pub(super) fn to_mailbox_entry(row: &Row) -> StoreResult<MailboxEntry> {
    Ok(MailboxEntry {
        id: row.try_get(0).map_err(db_error)?,
        folder: row.try_get(1).map_err(db_error)?,
        // Without one only inside the transaction that commits it (`AccountDeltas`).
        uid: row.try_get::<_, Option<i64>>(6).map_err(db_error)?.unwrap_or(0) as u32,
        message_id: row.try_get(2).map_err(db_error)?,
        queue_id: row.try_get(3).map_err(db_error)?,
        received_at: row.try_get(4).map_err(db_error)?,
        size: row.try_get::<_, i64>(5).map_err(db_error)? as u64,
    })
}

pub(super) async fn lookup_domain(client: &impl GenericClient, name: &str) -> StoreResult<Option<Domain>> {
    let statement = client
        .prepare_cached(&format!("SELECT {DOMAIN_COLUMNS} FROM domains WHERE name = $1"))
        .await
        .map_err(db_error)?;
    let row = client.query_opt(&statement, &[&name]).await.map_err(db_error)?;
    row.as_ref().map(to_domain).transpose()
}

pub(super) async fn lookup_account(client: &impl GenericClient, address: &str) -> StoreResult<Option<Account>> {
    let statement = client
        .prepare_cached(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE address = $1"))
        .await
        .map_err(db_error)?;
    let row = client.query_opt(&statement, &[&address]).await.map_err(db_error)?;
    row.as_ref().map(to_account).transpose()
}

pub(super) async fn lookup_alias_targets(client: &impl GenericClient, alias: &str) -> StoreResult<Vec<String>> {
    let statement =
        client.prepare_cached("SELECT target FROM aliases WHERE alias = $1 ORDER BY target").await.map_err(db_error)?;
    let rows = client.query(&statement, &[&alias]).await.map_err(db_error)?;
    rows.iter().map(|r| r.try_get(0).map_err(db_error)).collect()
}

/// The id of the account with this address.
pub(super) async fn account_id(client: &impl GenericClient, address: &str) -> StoreResult<Option<i64>> {
    let statement = client.prepare_cached("SELECT id FROM accounts WHERE address = $1").await.map_err(db_error)?;
    let row = client.query_opt(&statement, &[&address]).await.map_err(db_error)?;
    row.map(|r| r.try_get(0)).transpose().map_err(db_error)
}

/// Whether the server refused the statement with this SQLSTATE.
pub(super) fn refused_with(e: &tokio_postgres::Error, state: &tokio_postgres::error::SqlState) -> bool {
    e.code() == Some(state)
}
