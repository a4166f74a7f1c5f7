//! What the SQLite concern files and the store itself share: the error mapping, the clock,
//! the queue row, and removing a message nothing refers to any more.

use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::error::{StoreError, StoreResult};
use vouchmail_proto::sasl::secrets::Secrets;

use crate::types::{Account, Domain, MailboxEntry, QueueEntry, RecipientDsn};

pub(super) fn db_error(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

pub(super) fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A UNIQUE, FOREIGN KEY or CHECK constraint refused the statement.
pub(super) fn is_constraint_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(err, _) if err.code == rusqlite::ErrorCode::ConstraintViolation)
}

pub(super) const QUEUE_COLUMNS: &str = "q.id, m.queue_id, q.message_id, m.sender, q.recipient, q.notify, q.orcpt, q.state, q.attempts, q.next_attempt, q.last_reply, q.created_at, m.size";

pub(super) fn row_to_queue_entry(row: &Row<'_>) -> rusqlite::Result<QueueEntry> {
    let state: String = row.get(7)?;
    Ok(QueueEntry {
        id: row.get(0)?,
        queue_id: row.get(1)?,
        message_id: row.get(2)?,
        sender: row.get(3)?,
        recipient: row.get(4)?,
        dsn: RecipientDsn { notify: row.get(5)?, orcpt: row.get(6)? },
        state: crate::rules::stored_queue_state(&state),
        attempts: row.get::<_, i64>(8)? as u32,
        next_attempt: row.get(9)?,
        last_reply: row.get(10)?,
        created_at: row.get(11)?,
        size: row.get::<_, i64>(12)? as u64,
    })
}

/// Deletes a message once no mailbox entry and no queue entry refers to it any more. Runs
/// for every delivery outcome: its statements come from the statement cache (parsing them
/// each time was a tenth of the outbound writer's work, docs/profiles.md).
pub(super) fn delete_if_orphan(conn: &Connection, message_id: i64) -> StoreResult<()> {
    let (in_a_mailbox, still_queued): (bool, bool) = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM mailbox WHERE message_id = ?1),
                    EXISTS (SELECT 1 FROM queue WHERE message_id = ?1 AND state NOT IN ('delivered','bounced'))",
        )
        .and_then(|mut stmt| stmt.query_row(params![message_id], |r| Ok((r.get(0)?, r.get(1)?))))
        .map_err(db_error)?;
    if crate::rules::is_orphan(in_a_mailbox, still_queued) {
        // Finished queue entries are history only; they go first (they reference the message).
        run_cached_with(conn, "DELETE FROM queue WHERE message_id = ?1", message_id)?;
        run_cached_with(conn, "DELETE FROM messages WHERE id = ?1", message_id)?;
    }
    Ok(())
}

/// Runs a statement with one integer parameter through the statement cache.
fn run_cached_with(conn: &Connection, sql: &str, id: i64) -> StoreResult<()> {
    conn.prepare_cached(sql).and_then(|mut stmt| stmt.execute(params![id])).map(|_| ()).map_err(db_error)
}

/// How much of a message `record_download` reads to find its Message-ID field.
pub(super) const HEADER_SCAN_BYTES: i64 = crate::rules::HEADER_SCAN_BYTES;

/// The lookups' SQL, built once: they run for every RCPT not answered from the recipient
/// cache, and for every login.
static DOMAIN_BY_NAME: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {DOMAIN_COLUMNS} FROM domains WHERE name = ?1"));
static ACCOUNT_BY_ADDRESS: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE address = ?1"));

pub(super) fn lookup_domain(conn: &Connection, name: &str) -> StoreResult<Option<Domain>> {
    conn.prepare_cached(&DOMAIN_BY_NAME)
        .and_then(|mut stmt| stmt.query_row(params![name], row_to_domain).optional())
        .map_err(db_error)
}

pub(super) fn lookup_account(conn: &Connection, address: &str) -> StoreResult<Option<Account>> {
    conn.prepare_cached(&ACCOUNT_BY_ADDRESS)
        .and_then(|mut stmt| stmt.query_row(params![address], row_to_account).optional())
        .map_err(db_error)
}

pub(super) fn lookup_alias_targets(conn: &Connection, alias: &str) -> StoreResult<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT target FROM aliases WHERE alias = ?1 ORDER BY target").map_err(db_error)?;
    let rows = stmt.query_map(params![alias], |r| r.get(0)).map_err(db_error)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
}

/// Runs a job inside a savepoint: its failure is rolled back alone.
pub(super) fn in_savepoint<T>(conn: &Connection, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
    run_cached(conn, "SAVEPOINT job")?;
    match f(conn) {
        Ok(value) => {
            run_cached(conn, "RELEASE job")?;
            Ok(value)
        }
        Err(e) => {
            let _ = run_cached(conn, "ROLLBACK TO job");
            let _ = run_cached(conn, "RELEASE job");
            Err(e)
        }
    }
}

/// Runs a parameterless statement through the statement cache: these run for every write,
/// and parsing them each time shows in profiles.
pub(super) fn run_cached(conn: &Connection, sql: &str) -> StoreResult<()> {
    conn.prepare_cached(sql).and_then(|mut stmt| stmt.execute([])).map(|_| ()).map_err(db_error)
}

/// One text column per secret kind (SPEC 4): Argon2id, SCRAM-SHA-256, CRAM-MD5.
pub(super) fn secrets_to_columns(secrets: &Secrets) -> (Option<String>, Option<String>, Option<String>) {
    let fields = secrets.to_fields();
    (fields.argon2, fields.scram_sha256, fields.cram_md5)
}

/// The held-for accounts come along in one trip, newline-separated (no address contains a
/// line break), in the order they were set.
pub(super) const DOMAIN_COLUMNS: &str = "name, unauthenticated, catch_all, created_at,
    (SELECT group_concat(account, char(10) ORDER BY rowid) FROM held_accounts WHERE domain = domains.name),
    etrn_host, forged, dmarc_counts";

pub(super) fn row_to_domain(row: &Row<'_>) -> rusqlite::Result<Domain> {
    let unauthenticated: String = row.get(1)?;
    let forged: String = row.get(6)?;
    let dmarc_counts: bool = row.get(7)?;
    let held_for: Option<String> = row.get(4)?;
    Ok(Domain {
        name: row.get(0)?,
        policy: crate::rules::stored_policy(&unauthenticated, &forged, dmarc_counts),
        catch_all: row.get(2)?,
        created_at: row.get(3)?,
        held_for: held_for
            .map(|h| h.split('\n').filter(|a| !a.is_empty()).map(str::to_string).collect())
            .unwrap_or_default(),
        etrn_host: row.get(5)?,
    })
}

pub(super) const ACCOUNT_COLUMNS: &str = "id, address, domain, secret_argon2, secret_scram_sha256, secret_cram_md5, quota_bytes, used_bytes, message_count, created_at";

pub(super) fn row_to_account(row: &Row<'_>) -> rusqlite::Result<Account> {
    let secrets = crate::rules::stored_secrets(row.get(3)?, row.get(4)?, row.get(5)?);
    Ok(Account {
        id: row.get(0)?,
        address: row.get(1)?,
        domain: row.get(2)?,
        secrets,
        quota_bytes: row.get::<_, i64>(6)? as u64,
        used_bytes: row.get::<_, i64>(7)? as u64,
        message_count: row.get::<_, i64>(8)? as u64,
        created_at: row.get(9)?,
    })
}

pub(super) fn row_to_mailbox_entry(row: &Row<'_>) -> rusqlite::Result<MailboxEntry> {
    Ok(MailboxEntry {
        id: row.get(0)?,
        folder: row.get(1)?,
        uid: row.get::<_, i64>(6)? as u32,
        message_id: row.get(2)?,
        queue_id: row.get(3)?,
        received_at: row.get(4)?,
        size: row.get::<_, i64>(5)? as u64,
    })
}
