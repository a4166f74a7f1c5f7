//! The embedded store: SQLite in WAL mode with `synchronous=FULL`.
//!
//! All writes go through one writer thread that batches the jobs waiting for it into a
//! single transaction (group commit): one fsync of the WAL makes a whole batch durable, and
//! every caller is answered only after that commit. Each job runs inside a savepoint, so a
//! failing job (a duplicate user, say) does not undo its neighbours. Reads use a small pool
//! of connections on tokio's blocking threads; WAL lets them run beside the writer and
//! beside other processes (the CLI) using the same file.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row};
use tokio::sync::oneshot;
use vouchmail_proto::sasl::secrets::{SecretFields, Secrets};

use crate::error::{StoreError, StoreFuture, StoreResult};
use crate::interface::Store;
use crate::tracking::{
    NewTrackingEvent, NotifyStored, OutboxCounts, OutboxEntry, OutboxUpdate, StoredTrackingRecord, TrackingOutcome,
};
use crate::types::{
    Account, AuthKey, AuthKeySettings, CertMapping, CertMatch, CommittedMessage, Domain, Folder, MailboxEntry,
    NewAccount, NewMessage, PolicyAction, QueueEntry, SenderKey, SenderPolicy, SettingsSource, TrackingEvent,
    TrackingKind, VerifyLogEntry, VerifySentEntry,
};
use base::{
    db_error, delete_if_orphan, is_unique_violation, now, row_to_queue_entry, HEADER_SCAN_BYTES, QUEUE_COLUMNS,
};

/// Jobs committed together at most.
const MAX_BATCH: usize = 512;
/// How long a connection waits for another process's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Versioned schema migrations, applied in order; `PRAGMA user_version` records the last.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE domains (
    name TEXT PRIMARY KEY,
    policy TEXT NOT NULL CHECK (policy IN ('require','tag','accept')),
    catch_all TEXT,
    created_at INTEGER NOT NULL
);
CREATE TABLE accounts (
    id INTEGER PRIMARY KEY,
    address TEXT NOT NULL UNIQUE,
    domain TEXT NOT NULL REFERENCES domains(name),
    secret_argon2 TEXT,
    secret_scram_sha256 TEXT,
    secret_cram_md5 TEXT,
    quota_bytes INTEGER NOT NULL DEFAULT 0,
    used_bytes INTEGER NOT NULL DEFAULT 0,
    message_count INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE TABLE aliases (
    alias TEXT NOT NULL,
    target TEXT NOT NULL,
    PRIMARY KEY (alias, target)
);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    queue_id TEXT NOT NULL UNIQUE,
    sender TEXT NOT NULL,
    dsn_ret TEXT,
    dsn_envid TEXT,
    auth_param TEXT,
    authenticated_as TEXT,
    auth_results TEXT NOT NULL,
    body_8bit INTEGER NOT NULL,
    smtputf8 INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    size INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE queue (
    id INTEGER PRIMARY KEY,
    message_id INTEGER NOT NULL REFERENCES messages(id),
    recipient TEXT NOT NULL,
    notify TEXT,
    orcpt TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL,
    last_reply TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX queue_pending ON queue(state, next_attempt) WHERE state NOT IN ('delivered','bounced');
CREATE INDEX queue_message ON queue(message_id);
CREATE TABLE mailbox (
    id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    folder TEXT NOT NULL CHECK (folder IN ('INBOX','Junk','Tracking')),
    message_id INTEGER NOT NULL REFERENCES messages(id),
    received_at INTEGER NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX mailbox_account ON mailbox(account_id, folder, id);
CREATE INDEX mailbox_message ON mailbox(message_id);
"#,
    r#"
CREATE TABLE cert_map (
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('fingerprint','subject')),
    value TEXT NOT NULL,
    PRIMARY KEY (kind, value)
);
"#,
    r#"
ALTER TABLE queue ADD COLUMN lease_until INTEGER;
ALTER TABLE queue ADD COLUMN delay_warned INTEGER NOT NULL DEFAULT 0;
CREATE INDEX queue_lease ON queue(lease_until) WHERE state = 'inflight';
"#,
    r#"
ALTER TABLE domains ADD COLUMN held_for TEXT;
ALTER TABLE domains ADD COLUMN etrn_host TEXT;
ALTER TABLE queue ADD COLUMN held_domain TEXT;
CREATE INDEX queue_held ON queue(held_domain, state) WHERE held_domain IS NOT NULL;
"#,
    // Tracking events (SPEC 8). AUTOINCREMENT: ids are a reader's cursor and never reused.
    // No reference to messages: the record outlives the message.
    r#"
CREATE TABLE tracking_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    occurred_at INTEGER NOT NULL,
    queue_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    event TEXT NOT NULL CHECK (event IN ('downloaded','decrypted','decrypt_failed')),
    UNIQUE (queue_id, recipient, event)
);
"#,
    // ODMR held domains: one row per (domain, account) that may take its mail, compared
    // exactly (RFC 2645 5.2.1). The comma-joined domains.held_for was matched with LIKE,
    // where `_` and `%` in an account name are wildcards; its lists move over here.
    r#"
CREATE TABLE held_accounts (
    domain TEXT NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
    account TEXT NOT NULL,
    PRIMARY KEY (domain, account)
);
CREATE INDEX held_accounts_account ON held_accounts(account);
INSERT OR IGNORE INTO held_accounts (domain, account)
WITH RECURSIVE split(domain, account, rest) AS (
    SELECT name, NULL, held_for || ',' FROM domains WHERE held_for IS NOT NULL
    UNION ALL
    SELECT domain, lower(trim(substr(rest, 1, instr(rest, ',') - 1))), substr(rest, instr(rest, ',') + 1)
    FROM split WHERE rest <> ''
)
SELECT domain, account FROM split WHERE account IS NOT NULL AND account <> '';
ALTER TABLE domains DROP COLUMN held_for;
"#,
    // Client networks each account logged in from, for the AUTH failure limits (SPEC 3).
    r#"
CREATE TABLE login_clients (
    account TEXT NOT NULL,
    client TEXT NOT NULL,
    last_login INTEGER NOT NULL,
    PRIMARY KEY (account, client)
) WITHOUT ROWID;
CREATE INDEX login_clients_age ON login_clients(last_login);
"#,
    // AuthKeys, the Authentication Server side (SPEC 7.1): settings per address or per
    // domain ('@' absent), keys, and the VERIFY log.
    r#"
CREATE TABLE authkey_settings (
    target TEXT PRIMARY KEY,
    agi_secs INTEGER NOT NULL CHECK (agi_secs > 0),
    avt_secs INTEGER NOT NULL CHECK (avt_secs >= 0)
) WITHOUT ROWID;
CREATE TABLE authkeys (
    id INTEGER PRIMARY KEY,
    address TEXT NOT NULL,
    key TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX authkeys_address ON authkeys(address, expires_at);
CREATE INDEX authkeys_expiry ON authkeys(expires_at);
CREATE TABLE verify_log (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    peer TEXT NOT NULL,
    address TEXT NOT NULL,
    result TEXT NOT NULL
);
CREATE INDEX verify_log_at ON verify_log(at);
"#,
    // SPEC 2: one sender policy with two cases (the old single `policy` column allowed only
    // require/tag/accept), and AuthKeys on the sending and receiving side (SPEC 7.4, 7.5):
    // keys received by mail, the verification cache and every VERIFY sent.
    r#"
ALTER TABLE domains ADD COLUMN unauthenticated TEXT NOT NULL DEFAULT 'reject';
ALTER TABLE domains ADD COLUMN forged TEXT NOT NULL DEFAULT 'reject';
UPDATE domains SET unauthenticated = CASE policy WHEN 'tag' THEN 'junk' WHEN 'accept' THEN 'accept' ELSE 'reject' END;
ALTER TABLE domains DROP COLUMN policy;
CREATE TABLE sender_keys (
    address TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    source TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE authkey_cache (
    address TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (address, key_hash)
) WITHOUT ROWID;
CREATE INDEX authkey_cache_expiry ON authkey_cache(expires_at);
CREATE TABLE verify_sent (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    server TEXT NOT NULL,
    address TEXT NOT NULL,
    result TEXT NOT NULL
);
CREATE INDEX verify_sent_at ON verify_sent(at);
"#,
    // Migration 10: the Messenger federation (SPEC 8.1, 8.4). Certificates per address with
    // their validity; the directory and its published IDs (an ID names one local mailbox);
    // this server's own Entity Index changes, whose AUTOINCREMENT rowid is the serial that
    // ENTITIES reports (never reused); entries learnt from peers; the peers and the last
    // serial seen from each.
    r#"
CREATE TABLE certificates (
    address TEXT PRIMARY KEY,
    der BLOB NOT NULL,
    not_before INTEGER NOT NULL,
    not_after INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    stored_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE directory (
    address TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    organisation TEXT NOT NULL,
    role TEXT NOT NULL,
    published INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE directory_ids (
    published_id TEXT PRIMARY KEY,
    address TEXT NOT NULL REFERENCES directory(address) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX directory_ids_address ON directory_ids(address);
CREATE TABLE entity_changes (
    serial INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL CHECK (op IN ('ADD','DEL')),
    published_id TEXT NOT NULL,
    mailbox TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX entity_changes_pair ON entity_changes(published_id, mailbox, serial);
CREATE TABLE entity_index (
    published_id TEXT NOT NULL,
    mailbox TEXT NOT NULL,
    peer TEXT NOT NULL,
    learnt_at INTEGER NOT NULL,
    PRIMARY KEY (published_id, mailbox, peer)
) WITHOUT ROWID;
CREATE INDEX entity_index_peer ON entity_index(peer);
CREATE TABLE messenger_peers (
    domain TEXT PRIMARY KEY,
    configured INTEGER NOT NULL DEFAULT 0,
    last_serial INTEGER NOT NULL DEFAULT 0,
    last_pull INTEGER,
    last_error TEXT
) WITHOUT ROWID;
"#,
    // Migration 11: delivery notifications (SPEC 8.3), after Messenger part 1's 10.
    // `tracked`: the event's message had an authenticated sender, so it makes a record. The Tracking folder of a local
    // sender is its rows of tracking_records; the NOTIFY outbox keeps sent and dropped
    // entries as history and so that a record is never queued twice.
    r#"
ALTER TABLE tracking_events ADD COLUMN tracked INTEGER NOT NULL DEFAULT 0;
CREATE INDEX tracking_events_recipient ON tracking_events(recipient, message_id);
CREATE TABLE tracking_records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT NOT NULL,
    occurred_at INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    event TEXT NOT NULL CHECK (event IN ('downloaded','decrypted','decrypt_failed')),
    reporting_server TEXT NOT NULL,
    stored_at INTEGER NOT NULL,
    UNIQUE (owner, message_id, recipient, event)
);
CREATE INDEX tracking_records_owner ON tracking_records(owner, occurred_at, id);
CREATE TABLE notify_outbox (
    id INTEGER PRIMARY KEY,
    record TEXT NOT NULL,
    domain TEXT NOT NULL,
    message_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    event TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending','inflight','sent','dropped')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL,
    lease_until INTEGER,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (domain, message_id, recipient, event)
);
CREATE INDEX notify_outbox_due ON notify_outbox(state, next_attempt) WHERE state IN ('pending','inflight');
"#,
    // Migration 12: the records a sender's Tracking folder received in a day, counted at
    // every NOTIFY against `[messenger] notify_max_per_day` (SPEC 8.3).
    r#"
CREATE INDEX tracking_records_owner_stored ON tracking_records(owner, stored_at);
"#,
    // Migration 13: when each Messenger peer last answered (a verified call or a pull), so
    // that one unreachable for 30 days can be dropped (SPEC 8.4). Peers known before get
    // their 30 days from now.
    r#"
ALTER TABLE messenger_peers ADD COLUMN last_success INTEGER;
UPDATE messenger_peers SET last_success = CAST(strftime('%s','now') AS INTEGER);
"#,
];

type Completion = Box<dyn FnOnce(StoreResult<()>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> Completion + Send>;

/// The SQLite implementation of [`Store`].
pub struct SqliteStore {
    writer: Mutex<Option<mpsc::Sender<Job>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and runs pending migrations.
    pub fn open(path: &Path) -> StoreResult<SqliteStore> {
        create_private(path)?;
        let mut conn = open_connection(path)?;
        migrate(&mut conn)?;
        let (sender, receiver) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(conn, receiver))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            writer: Mutex::new(Some(sender)),
            writer_thread: Mutex::new(Some(thread)),
            readers: Arc::new(Mutex::new(Vec::new())),
            path: path.to_path_buf(),
        })
    }

    /// Stops the writer after the jobs already sent to it are committed, and waits for
    /// it. Blocks: from async code use [`SqliteStore::shutdown`].
    pub fn close(&self) {
        if let Some(thread) = self.stop_writer() {
            let _ = thread.join();
        }
    }

    /// [`SqliteStore::close`] for async callers: the wait runs on a blocking thread, not
    /// on the runtime's workers.
    pub async fn shutdown(&self) {
        if let Some(thread) = self.stop_writer() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    /// Closes the writer's channel (it commits what it has, then ends) and hands back its
    /// thread.
    fn stop_writer(&self) -> Option<std::thread::JoinHandle<()>> {
        if let Ok(mut writer) = self.writer.lock() {
            writer.take();
        }
        self.writer_thread.lock().ok().and_then(|mut t| t.take())
    }

    /// Runs `f` in the next group commit and returns its result once it is durable.
    fn write<T, F>(&self, f: F) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, response) = oneshot::channel::<StoreResult<T>>();
        let job: Job = Box::new(move |conn: &Connection| {
            let result = in_savepoint(conn, f);
            Box::new(move |commit: StoreResult<()>| {
                let _ = reply.send(commit.and(result));
            })
        });
        let sent = self.writer.lock().ok().and_then(|w| w.as_ref().map(|w| w.send(job).is_ok())).unwrap_or(false);
        Box::pin(async move {
            if !sent {
                return Err(StoreError::Unavailable("the store is closed".into()));
            }
            response.await.map_err(|_| StoreError::Unavailable("the write could not be committed".into()))?
        })
    }

    /// Runs `f` on a pooled read connection, off the async threads.
    fn read<T, F>(&self, f: F) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let pool = Arc::clone(&self.readers);
        let path = self.path.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let pooled = pool.lock().ok().and_then(|mut p| p.pop());
                let conn = match pooled {
                    Some(conn) => conn,
                    None => open_connection(&path)?,
                };
                let result = f(&conn);
                if let Ok(mut p) = pool.lock() {
                    if p.len() < 8 {
                        p.push(conn);
                    }
                }
                result
            })
            .await
            .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
        })
    }
}

impl Drop for SqliteStore {
    /// Does not wait for the writer: a store dropped inside an async runtime must not block
    /// a worker. The writer still commits what it was sent (those callers were waiting
    /// for it, so none has been told a write is durable before it is).
    fn drop(&mut self) {
        drop(self.stop_writer());
    }
}

/// The store holds every mailbox and the password hashes: its folder is made 700 and the
/// database file 600 before SQLite opens it (the -wal and -shm files SQLite makes take the
/// database file's mode).
fn create_private(path: &Path) -> StoreResult<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", parent.display())))?;
        }
    }
    if !path.exists() {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", path.display())))?;
    }
    Ok(())
}

fn open_connection(path: &Path) -> StoreResult<Connection> {
    let conn =
        Connection::open(path).map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_error)?;
    // SPEC 11: WAL, and synchronous=FULL so a commit is on disk when it returns.
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")
        .map_err(db_error)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(db_error)?;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Unavailable(format!(
            "the database schema is version {version}, newer than this vouchmail ({})",
            MIGRATIONS.len()
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db_error)?;
        tx.execute_batch(sql).map_err(db_error)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", index + 1)).map_err(db_error)?;
        tx.commit().map_err(db_error)?;
        tracing::info!(version = index + 1, "store schema migrated");
    }
    Ok(())
}

/// The writer thread: take every job waiting, run them in one transaction, commit once.
fn writer_loop(conn: Connection, jobs: mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = run_cached(&conn, "BEGIN IMMEDIATE") {
            // Dropping the jobs closes their reply channels: each caller reports the store
            // unavailable, and an SMTP client gets a 451 and retries.
            tracing::error!(error = %e, writes = batch.len(), "store: cannot begin a transaction");
            drop(batch);
            continue;
        }
        let completions: Vec<Completion> = batch.into_iter().map(|job| job(&conn)).collect();
        let commit = run_cached(&conn, "COMMIT");
        if commit.is_err() {
            let _ = run_cached(&conn, "ROLLBACK");
        }
        for done in completions {
            done(commit.clone());
        }
    }
}

fn lookup_domain(conn: &Connection, name: &str) -> StoreResult<Option<Domain>> {
    conn.prepare_cached(&format!("SELECT {DOMAIN_COLUMNS} FROM domains WHERE name = ?1"))
        .and_then(|mut stmt| stmt.query_row(params![name], row_to_domain).optional())
        .map_err(db_error)
}

fn lookup_account(conn: &Connection, address: &str) -> StoreResult<Option<Account>> {
    conn.prepare_cached(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE address = ?1"))
        .and_then(|mut stmt| stmt.query_row(params![address], row_to_account).optional())
        .map_err(db_error)
}

fn lookup_alias_targets(conn: &Connection, alias: &str) -> StoreResult<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT target FROM aliases WHERE alias = ?1 ORDER BY target").map_err(db_error)?;
    let rows = stmt.query_map(params![alias], |r| r.get(0)).map_err(db_error)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
}

/// Runs a job inside a savepoint: its failure is rolled back alone.
fn in_savepoint<T>(conn: &Connection, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
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
fn run_cached(conn: &Connection, sql: &str) -> StoreResult<()> {
    conn.prepare_cached(sql).and_then(|mut stmt| stmt.execute([])).map(|_| ()).map_err(db_error)
}

/// One text column per secret kind (SPEC 4): Argon2id, SCRAM-SHA-256, CRAM-MD5.
fn secrets_to_columns(secrets: &Secrets) -> (Option<String>, Option<String>, Option<String>) {
    let fields = secrets.to_fields();
    (fields.argon2, fields.scram_sha256, fields.cram_md5)
}

/// A column that does not parse is treated as absent (that mechanism then fails), and logged.
fn secrets_from_columns(argon2: Option<String>, scram_sha256: Option<String>, cram_md5: Option<String>) -> Secrets {
    let fields = SecretFields { argon2, scram_sha256, cram_md5 };
    Secrets::from_fields(&fields).unwrap_or_else(|e| {
        tracing::error!(error = %e, "stored secrets do not parse");
        Secrets { argon2: fields.argon2.clone(), ..Secrets::default() }
    })
}

fn domain_of(address: &str) -> StoreResult<&str> {
    address
        .rsplit_once('@')
        .map(|(_, d)| d)
        .filter(|d| !d.is_empty())
        .ok_or_else(|| StoreError::Invalid(format!("'{address}' is not an address")))
}

/// The held-for accounts come along in one trip, newline-separated (no address contains a
/// line break), in the order they were set.
const DOMAIN_COLUMNS: &str = "name, unauthenticated, catch_all, created_at,
    (SELECT group_concat(account, char(10) ORDER BY rowid) FROM held_accounts WHERE domain = domains.name),
    etrn_host, forged";

fn row_to_domain(row: &Row<'_>) -> rusqlite::Result<Domain> {
    let unauthenticated: String = row.get(1)?;
    let forged: String = row.get(6)?;
    let held_for: Option<String> = row.get(4)?;
    // A value this version does not know (written by a newer one) reads as the strictest.
    let policy = SenderPolicy {
        unauthenticated: unauthenticated.parse().unwrap_or(PolicyAction::Reject),
        forged: forged.parse().unwrap_or(PolicyAction::Reject),
    };
    Ok(Domain {
        name: row.get(0)?,
        policy,
        catch_all: row.get(2)?,
        created_at: row.get(3)?,
        held_for: held_for
            .map(|h| h.split('\n').filter(|a| !a.is_empty()).map(str::to_string).collect())
            .unwrap_or_default(),
        etrn_host: row.get(5)?,
    })
}

const ACCOUNT_COLUMNS: &str = "id, address, domain, secret_argon2, secret_scram_sha256, secret_cram_md5, quota_bytes, used_bytes, message_count, created_at";

fn row_to_account(row: &Row<'_>) -> rusqlite::Result<Account> {
    let secrets = secrets_from_columns(row.get(3)?, row.get(4)?, row.get(5)?);
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

fn row_to_mailbox_entry(row: &Row<'_>) -> rusqlite::Result<MailboxEntry> {
    let folder: String = row.get(1)?;
    Ok(MailboxEntry {
        id: row.get(0)?,
        folder: folder.parse().unwrap_or(Folder::Inbox),
        message_id: row.get(2)?,
        queue_id: row.get(3)?,
        received_at: row.get(4)?,
        size: row.get::<_, i64>(5)? as u64,
    })
}

impl Store for SqliteStore {
    fn add_domain(&self, name: &str, policy: SenderPolicy) -> StoreFuture<'_, ()> {
        let name = name.to_ascii_lowercase();
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO domains (name, unauthenticated, forged, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![name, policy.unauthenticated.as_str(), policy.forged.as_str(), now()],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict(format!("domain {name} exists already"))
                } else {
                    db_error(e)
                }
            })?;
            Ok(())
        })
    }

    fn remove_domain(&self, name: &str) -> StoreFuture<'_, ()> {
        let name = name.to_ascii_lowercase();
        self.write(move |conn| {
            let accounts: i64 = conn
                .query_row("SELECT COUNT(*) FROM accounts WHERE domain = ?1", params![name], |r| r.get(0))
                .map_err(db_error)?;
            if accounts > 0 {
                return Err(StoreError::Conflict(format!(
                    "domain {name} still has {accounts} account(s); remove them first"
                )));
            }
            let removed = conn.execute("DELETE FROM domains WHERE name = ?1", params![name]).map_err(db_error)?;
            if removed == 0 {
                return Err(StoreError::NotFound(format!("domain {name}")));
            }
            conn.execute("DELETE FROM aliases WHERE alias LIKE '%@' || ?1", params![name]).map_err(db_error)?;
            Ok(())
        })
    }

    fn get_domain(&self, name: &str) -> StoreFuture<'_, Option<Domain>> {
        let name = name.to_ascii_lowercase();
        self.read(move |conn| lookup_domain(conn, &name))
    }

    fn list_domains(&self) -> StoreFuture<'_, Vec<Domain>> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare(&format!("SELECT {DOMAIN_COLUMNS} FROM domains ORDER BY name")).map_err(db_error)?;
            let rows = stmt.query_map([], row_to_domain).map_err(db_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
        })
    }

    fn set_domain_policy(&self, name: &str, policy: SenderPolicy) -> StoreFuture<'_, ()> {
        let name = name.to_ascii_lowercase();
        self.write(move |conn| {
            let n = conn
                .execute(
                    "UPDATE domains SET unauthenticated = ?2, forged = ?3 WHERE name = ?1",
                    params![name, policy.unauthenticated.as_str(), policy.forged.as_str()],
                )
                .map_err(db_error)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("domain {name}")));
            }
            Ok(())
        })
    }

    fn set_catch_all(&self, name: &str, account: Option<&str>) -> StoreFuture<'_, ()> {
        let name = name.to_ascii_lowercase();
        let account = account.map(str::to_lowercase);
        self.write(move |conn| {
            if let Some(account) = &account {
                let exists: Option<i64> = conn
                    .query_row("SELECT id FROM accounts WHERE address = ?1", params![account], |r| r.get(0))
                    .optional()
                    .map_err(db_error)?;
                if exists.is_none() {
                    return Err(StoreError::NotFound(format!("account {account}")));
                }
            }
            let n = conn
                .execute("UPDATE domains SET catch_all = ?2 WHERE name = ?1", params![name, account])
                .map_err(db_error)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("domain {name}")));
            }
            Ok(())
        })
    }

    fn add_account(&self, account: NewAccount) -> StoreFuture<'_, i64> {
        self.write(move |conn| {
            let address = account.address.to_lowercase();
            let domain = domain_of(&address)?.to_string();
            let known: Option<String> = conn
                .query_row("SELECT name FROM domains WHERE name = ?1", params![domain], |r| r.get(0))
                .optional()
                .map_err(db_error)?;
            if known.is_none() {
                return Err(StoreError::Invalid(format!("domain {domain} is not a local domain (add it with 'vouchmail domain add {domain}')")));
            }
            let (argon2, scram, cram) = secrets_to_columns(&account.secrets);
            conn.execute(
                "INSERT INTO accounts (address, domain, secret_argon2, secret_scram_sha256, secret_cram_md5, quota_bytes, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![address, domain, argon2, scram, cram, account.quota_bytes as i64, now()],
            )
            .map_err(|e| if is_unique_violation(&e) { StoreError::Conflict(format!("user {address} exists already")) } else { db_error(e) })?;
            Ok(conn.last_insert_rowid())
        })
    }

    fn remove_account(&self, address: &str) -> StoreFuture<'_, ()> {
        let address = address.to_lowercase();
        self.write(move |conn| {
            let id: Option<i64> = conn
                .query_row("SELECT id FROM accounts WHERE address = ?1", params![address], |r| r.get(0))
                .optional()
                .map_err(db_error)?;
            let Some(id) = id else {
                return Err(StoreError::NotFound(format!("user {address}")));
            };
            let message_ids: Vec<i64> = {
                let mut stmt =
                    conn.prepare("SELECT DISTINCT message_id FROM mailbox WHERE account_id = ?1").map_err(db_error)?;
                let rows = stmt.query_map(params![id], |r| r.get(0)).map_err(db_error)?;
                rows.collect::<Result<_, _>>().map_err(db_error)?
            };
            conn.execute("DELETE FROM mailbox WHERE account_id = ?1", params![id]).map_err(db_error)?;
            conn.execute("UPDATE domains SET catch_all = NULL WHERE catch_all = ?1", params![address])
                .map_err(db_error)?;
            conn.execute("DELETE FROM accounts WHERE id = ?1", params![id]).map_err(db_error)?;
            conn.execute("DELETE FROM login_clients WHERE account = ?1", params![address]).map_err(db_error)?;
            messenger::forget_account(conn, &address)?;
            for message_id in message_ids {
                delete_if_orphan(conn, message_id)?;
            }
            Ok(())
        })
    }

    fn get_account(&self, address: &str) -> StoreFuture<'_, Option<Account>> {
        let address = address.to_lowercase();
        self.read(move |conn| lookup_account(conn, &address))
    }

    fn list_accounts(&self) -> StoreFuture<'_, Vec<Account>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY domain, address"))
                .map_err(db_error)?;
            let rows = stmt.query_map([], row_to_account).map_err(db_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
        })
    }

    fn set_secrets(&self, address: &str, secrets: Secrets) -> StoreFuture<'_, ()> {
        let address = address.to_lowercase();
        self.write(move |conn| {
            let (argon2, scram, cram) = secrets_to_columns(&secrets);
            let n = conn
                .execute(
                    "UPDATE accounts SET secret_argon2 = ?2, secret_scram_sha256 = ?3, secret_cram_md5 = ?4 WHERE address = ?1",
                    params![address, argon2, scram, cram],
                )
                .map_err(db_error)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("user {address}")));
            }
            Ok(())
        })
    }

    fn set_quota(&self, address: &str, quota_bytes: u64) -> StoreFuture<'_, ()> {
        let address = address.to_lowercase();
        self.write(move |conn| {
            let n = conn
                .execute(
                    "UPDATE accounts SET quota_bytes = ?2 WHERE address = ?1",
                    params![address, quota_bytes as i64],
                )
                .map_err(db_error)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("user {address}")));
            }
            Ok(())
        })
    }

    fn add_alias(&self, alias: &str, targets: &[String]) -> StoreFuture<'_, ()> {
        let alias = alias.to_lowercase();
        let targets: Vec<String> = targets.iter().map(|t| t.to_lowercase()).collect();
        self.write(move |conn| {
            let domain = domain_of(&alias)?.to_string();
            let known: Option<String> = conn
                .query_row("SELECT name FROM domains WHERE name = ?1", params![domain], |r| r.get(0))
                .optional()
                .map_err(db_error)?;
            if known.is_none() {
                return Err(StoreError::Invalid(format!("domain {domain} is not a local domain")));
            }
            let is_account: Option<i64> = conn
                .query_row("SELECT id FROM accounts WHERE address = ?1", params![alias], |r| r.get(0))
                .optional()
                .map_err(db_error)?;
            if is_account.is_some() {
                return Err(StoreError::Conflict(format!("{alias} is a user; an alias cannot have the same address")));
            }
            for target in &targets {
                if *target == alias {
                    return Err(StoreError::Invalid(format!("alias {alias} cannot point to itself")));
                }
                conn.execute("INSERT OR IGNORE INTO aliases (alias, target) VALUES (?1, ?2)", params![alias, target])
                    .map_err(db_error)?;
            }
            Ok(())
        })
    }

    fn remove_alias(&self, alias: &str, target: Option<&str>) -> StoreFuture<'_, ()> {
        let alias = alias.to_lowercase();
        let target = target.map(str::to_lowercase);
        self.write(move |conn| {
            let n = match &target {
                Some(t) => conn.execute("DELETE FROM aliases WHERE alias = ?1 AND target = ?2", params![alias, t]),
                None => conn.execute("DELETE FROM aliases WHERE alias = ?1", params![alias]),
            }
            .map_err(db_error)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("alias {alias}")));
            }
            Ok(())
        })
    }

    fn alias_targets(&self, alias: &str) -> StoreFuture<'_, Vec<String>> {
        let alias = alias.to_lowercase();
        self.read(move |conn| lookup_alias_targets(conn, &alias))
    }

    fn lookup_recipient(&self, address: &str) -> StoreFuture<'_, crate::types::RecipientRecord> {
        let address = address.to_lowercase();
        self.read(move |conn| {
            let domain_name = address.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            let domain = lookup_domain(conn, domain_name)?;
            let account = match &domain {
                Some(_) => lookup_account(conn, &address)?,
                None => None,
            };
            let alias_targets = match (&domain, &account) {
                (Some(_), None) => lookup_alias_targets(conn, &address)?,
                _ => Vec::new(),
            };
            Ok(crate::types::RecipientRecord { domain, account, alias_targets })
        })
    }

    fn list_aliases(&self) -> StoreFuture<'_, Vec<(String, String)>> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare("SELECT alias, target FROM aliases ORDER BY alias, target").map_err(db_error)?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(db_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
        })
    }

    fn commit_message(&self, message: NewMessage) -> StoreFuture<'_, CommittedMessage> {
        self.write(move |conn| {
            let message_id = outbound::insert_message(conn, &message)?;
            Ok(CommittedMessage { message_id, queue_id: message.queue_id })
        })
    }

    fn commit_messages(&self, messages: Vec<NewMessage>) -> StoreFuture<'_, Vec<CommittedMessage>> {
        self.write(move |conn| {
            let mut committed = Vec::with_capacity(messages.len());
            for message in messages {
                let message_id = outbound::insert_message(conn, &message)?;
                committed.push(CommittedMessage { message_id, queue_id: message.queue_id });
            }
            Ok(committed)
        })
    }

    fn list_mailbox(&self, address: &str, folder: Option<Folder>) -> StoreFuture<'_, Vec<MailboxEntry>> {
        let address = address.to_lowercase();
        self.read(move |conn| {
            let account: Option<i64> = conn
                .query_row("SELECT id FROM accounts WHERE address = ?1", params![address], |r| r.get(0))
                .optional()
                .map_err(db_error)?;
            let Some(account) = account else {
                return Err(StoreError::NotFound(format!("user {address}")));
            };
            let mut stmt = conn
                .prepare(
                    "SELECT b.id, b.folder, b.message_id, m.queue_id, b.received_at, b.size
                     FROM mailbox b JOIN messages m ON m.id = b.message_id
                     WHERE b.account_id = ?1 AND (?2 IS NULL OR b.folder = ?2) ORDER BY b.id",
                )
                .map_err(db_error)?;
            let rows =
                stmt.query_map(params![account, folder.map(|f| f.as_str())], row_to_mailbox_entry).map_err(db_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
        })
    }

    fn get_mailbox_message(&self, address: &str, id: i64) -> StoreFuture<'_, Option<(MailboxEntry, Vec<u8>)>> {
        let address = address.to_lowercase();
        self.read(move |conn| {
            conn.query_row(
                "SELECT b.id, b.folder, b.message_id, m.queue_id, b.received_at, b.size, m.data
                 FROM mailbox b JOIN messages m ON m.id = b.message_id JOIN accounts a ON a.id = b.account_id
                 WHERE a.address = ?1 AND b.id = ?2",
                params![address, id],
                |row| Ok((row_to_mailbox_entry(row)?, row.get::<_, Vec<u8>>(6)?)),
            )
            .optional()
            .map_err(db_error)
        })
    }

    fn list_queue(&self) -> StoreFuture<'_, Vec<QueueEntry>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {QUEUE_COLUMNS} FROM queue q JOIN messages m ON m.id = q.message_id
                     WHERE q.state NOT IN ('delivered','bounced') ORDER BY q.next_attempt, q.id"
                ))
                .map_err(db_error)?;
            let rows = stmt.query_map([], row_to_queue_entry).map_err(db_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
        })
    }

    fn get_queued_message(&self, queue_id: &str) -> StoreFuture<'_, Option<(Vec<QueueEntry>, Vec<u8>)>> {
        let queue_id = queue_id.to_string();
        self.read(move |conn| {
            let data: Option<Vec<u8>> = conn
                .query_row("SELECT data FROM messages WHERE queue_id = ?1", params![queue_id], |r| r.get(0))
                .optional()
                .map_err(db_error)?;
            let Some(data) = data else { return Ok(None) };
            let mut stmt = conn
                .prepare(&format!("SELECT {QUEUE_COLUMNS} FROM queue q JOIN messages m ON m.id = q.message_id WHERE m.queue_id = ?1 ORDER BY q.id"))
                .map_err(db_error)?;
            let rows = stmt.query_map(params![queue_id], row_to_queue_entry).map_err(db_error)?;
            let entries = rows.collect::<Result<Vec<_>, _>>().map_err(db_error)?;
            Ok(Some((entries, data)))
        })
    }

    fn delete_queued_message(&self, queue_id: &str) -> StoreFuture<'_, usize> {
        let queue_id = queue_id.to_string();
        self.write(move |conn| {
            let message_id: Option<i64> = conn
                .query_row("SELECT id FROM messages WHERE queue_id = ?1", params![queue_id], |r| r.get(0))
                .optional()
                .map_err(db_error)?;
            let Some(message_id) = message_id else { return Err(StoreError::NotFound(format!("queue id {queue_id}"))) };
            let n = conn
                .execute(
                    "DELETE FROM queue WHERE message_id = ?1 AND state NOT IN ('delivered','bounced')",
                    params![message_id],
                )
                .map_err(db_error)?;
            delete_if_orphan(conn, message_id)?;
            Ok(n)
        })
    }

    fn get_meta(&self, key: &str) -> StoreFuture<'_, Option<String>> {
        let key = key.to_string();
        self.read(move |conn| {
            conn.query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| r.get(0))
                .optional()
                .map_err(db_error)
        })
    }

    fn set_meta(&self, key: &str, value: &str) -> StoreFuture<'_, ()> {
        let (key, value) = (key.to_string(), value.to_string());
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map_err(db_error)?;
            Ok(())
        })
    }

    fn get_or_init_meta(&self, key: &str, value: &str) -> StoreFuture<'_, String> {
        let (key, value) = (key.to_string(), value.to_string());
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO NOTHING",
                params![key, value],
            )
            .map_err(db_error)?;
            conn.query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| r.get(0)).map_err(db_error)
        })
    }

    fn last_login_from(&self, account: &str, client: &str) -> StoreFuture<'_, Option<i64>> {
        let (account, client) = (account.to_lowercase(), client.to_string());
        self.read(move |conn| {
            conn.prepare_cached("SELECT last_login FROM login_clients WHERE account = ?1 AND client = ?2")
                .and_then(|mut stmt| stmt.query_row(params![account, client], |r| r.get(0)).optional())
                .map_err(db_error)
        })
    }

    fn remember_login(&self, account: &str, client: &str, at: i64, forget_before: i64) -> StoreFuture<'_, ()> {
        let (account, client) = (account.to_lowercase(), client.to_string());
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO login_clients (account, client, last_login) VALUES (?1, ?2, ?3)
                 ON CONFLICT(account, client) DO UPDATE SET last_login = MAX(last_login, excluded.last_login)",
            )
            .and_then(|mut stmt| stmt.execute(params![account, client, at]))
            .map_err(db_error)?;
            conn.prepare_cached("DELETE FROM login_clients WHERE last_login < ?1")
                .and_then(|mut stmt| stmt.execute(params![forget_before]))
                .map_err(db_error)?;
            Ok(())
        })
    }

    fn add_cert_mapping(&self, address: &str, kind: CertMatch, value: &str) -> StoreFuture<'_, ()> {
        let address = address.to_lowercase();
        let value = kind.normalize(value);
        self.write(move |conn| {
            let id: Option<i64> = conn
                .query_row("SELECT id FROM accounts WHERE address = ?1", params![address], |r| r.get(0))
                .optional()
                .map_err(db_error)?;
            let Some(id) = id else { return Err(StoreError::NotFound(format!("user {address}"))) };
            conn.execute(
                "INSERT INTO cert_map (account_id, kind, value) VALUES (?1, ?2, ?3)",
                params![id, kind.as_str(), value],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict(format!("that certificate {} is mapped already", kind.as_str()))
                } else {
                    db_error(e)
                }
            })?;
            Ok(())
        })
    }

    fn remove_cert_mapping(&self, address: &str, value: &str) -> StoreFuture<'_, ()> {
        let address = address.to_lowercase();
        let values = [CertMatch::Fingerprint.normalize(value), CertMatch::Subject.normalize(value)];
        let given = value.trim().to_string();
        self.write(move |conn| {
            let n = conn
                .execute(
                    "DELETE FROM cert_map WHERE value IN (?2, ?3)
                       AND account_id = (SELECT id FROM accounts WHERE address = ?1)",
                    params![address, values[0], values[1]],
                )
                .map_err(db_error)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("certificate mapping '{given}' of {address}")));
            }
            Ok(())
        })
    }

    fn cert_mapping_account(&self, fingerprint: &str, subject: Option<&str>) -> StoreFuture<'_, Option<String>> {
        let fingerprint = CertMatch::Fingerprint.normalize(fingerprint);
        let subject = subject.map(|s| CertMatch::Subject.normalize(s));
        self.read(move |conn| {
            conn.query_row(
                "SELECT a.address FROM cert_map c JOIN accounts a ON a.id = c.account_id
                 WHERE (c.kind = 'fingerprint' AND c.value = ?1) OR (c.kind = 'subject' AND c.value = ?2)
                 ORDER BY c.kind LIMIT 1",
                params![fingerprint, subject],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_error)
        })
    }

    fn list_cert_mappings(&self) -> StoreFuture<'_, Vec<CertMapping>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare("SELECT a.address, c.kind, c.value FROM cert_map c JOIN accounts a ON a.id = c.account_id ORDER BY a.address")
                .map_err(db_error)?;
            let rows = stmt
                .query_map([], |r| {
                    let kind: String = r.get(1)?;
                    Ok(CertMapping {
                        address: r.get(0)?,
                        kind: if kind == "subject" { CertMatch::Subject } else { CertMatch::Fingerprint },
                        value: r.get(2)?,
                    })
                })
                .map_err(db_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
        })
    }

    fn lease_due(&self, now: i64, lease_until: i64, limit: usize) -> StoreFuture<'_, Vec<crate::types::LeasedEntry>> {
        self.write(move |conn| outbound::lease_due(conn, now, lease_until, limit))
    }

    fn renew_leases(&self, ids: Vec<i64>, lease_until: i64) -> StoreFuture<'_, ()> {
        self.write(move |conn| outbound::renew_leases(conn, &ids, lease_until))
    }

    fn get_message(&self, message_id: i64) -> StoreFuture<'_, Option<crate::types::StoredMessage>> {
        self.read(move |conn| outbound::get_message(conn, message_id))
    }

    fn record_delivery(
        &self,
        updates: Vec<crate::types::QueueUpdate>,
        notices: Vec<NewMessage>,
    ) -> StoreFuture<'_, ()> {
        self.write(move |conn| outbound::record_delivery(conn, &updates, &notices))
    }

    fn retry_queued(&self, queue_id: Option<&str>, now: i64) -> StoreFuture<'_, usize> {
        let queue_id = queue_id.map(str::to_string);
        self.write(move |conn| outbound::retry_queued(conn, queue_id.as_deref(), now))
    }

    fn next_due(&self) -> StoreFuture<'_, Option<i64>> {
        self.read(outbound::next_due)
    }

    fn queue_counts(&self) -> StoreFuture<'_, crate::types::QueueCounts> {
        self.read(outbound::queue_counts)
    }

    fn set_domain_held(&self, name: &str, accounts: &[String], etrn_host: Option<&str>) -> StoreFuture<'_, ()> {
        let name = name.to_ascii_lowercase();
        // Lower-cased here and on lookup: account names compare case-insensitively.
        let accounts: Vec<String> = accounts.iter().map(|a| a.to_lowercase()).filter(|a| !a.is_empty()).collect();
        let etrn_host = etrn_host.map(str::to_string);
        self.write(move |conn| held::set_domain_held(conn, &name, &accounts, etrn_host.as_deref()))
    }

    fn held_domains_for(&self, account: &str) -> StoreFuture<'_, Vec<String>> {
        let account = account.to_lowercase();
        self.read(move |conn| held::domains_for(conn, &account))
    }

    fn count_held(&self, domains: &[String]) -> StoreFuture<'_, usize> {
        let domains = domains.to_vec();
        self.read(move |conn| held::count(conn, &domains))
    }

    fn lease_held(
        &self,
        domains: &[String],
        now: i64,
        lease_until: i64,
    ) -> StoreFuture<'_, Vec<crate::types::LeasedEntry>> {
        let domains = domains.to_vec();
        self.write(move |conn| held::lease(conn, &domains, now, lease_until))
    }

    fn lease_expired_held(
        &self,
        created_before: i64,
        now: i64,
        lease_until: i64,
    ) -> StoreFuture<'_, Vec<crate::types::LeasedEntry>> {
        self.write(move |conn| held::lease_expired(conn, created_before, now, lease_until))
    }

    fn delete_mailbox_entries(&self, address: &str, ids: &[i64]) -> StoreFuture<'_, usize> {
        let address = address.to_lowercase();
        let ids = ids.to_vec();
        self.write(move |conn| {
            let mut removed = 0;
            for id in ids {
                let entry: Option<(i64, i64, i64)> = conn
                    .prepare_cached(
                        "SELECT b.account_id, b.message_id, b.size FROM mailbox b JOIN accounts a ON a.id = b.account_id
                         WHERE a.address = ?1 AND b.id = ?2",
                    )
                    .and_then(|mut stmt| stmt.query_row(params![address, id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))))
                    .optional()
                    .map_err(db_error)?;
                let Some((account_id, message_id, size)) = entry else { continue };
                conn.execute("DELETE FROM mailbox WHERE id = ?1", params![id]).map_err(db_error)?;
                conn.prepare_cached(
                    "UPDATE accounts SET used_bytes = MAX(used_bytes - ?2, 0), message_count = MAX(message_count - 1, 0)
                     WHERE id = ?1",
                )
                .and_then(|mut stmt| stmt.execute(params![account_id, size]))
                .map_err(db_error)?;
                delete_if_orphan(conn, message_id)?;
                removed += 1;
            }
            Ok(removed)
        })
    }

    fn record_download(&self, address: &str, mailbox_id: i64) -> StoreFuture<'_, bool> {
        let address = address.to_lowercase();
        self.write(move |conn| {
            // The header section is enough to find the Message-ID.
            let found: Option<(String, String, Vec<u8>)> = conn
                .query_row(
                    "SELECT m.queue_id, m.sender, substr(m.data, 1, ?3)
                     FROM mailbox b JOIN messages m ON m.id = b.message_id JOIN accounts a ON a.id = b.account_id
                     WHERE a.address = ?1 AND b.id = ?2",
                    params![address, mailbox_id, HEADER_SCAN_BYTES],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(db_error)?;
            let Some((queue_id, sender, head)) = found else {
                return Err(StoreError::NotFound(format!("message {mailbox_id} of {address}")));
            };
            let message_id = vouchmail_proto::headers::first_value(&head, "Message-ID").unwrap_or_default();
            let n = conn
                .execute(
                    "INSERT OR IGNORE INTO tracking_events (occurred_at, queue_id, message_id, sender, recipient, event)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![now(), queue_id, message_id, sender, address, TrackingKind::Downloaded.as_str()],
                )
                .map_err(db_error)?;
            Ok(n == 1)
        })
    }

    fn set_authkey_settings(&self, target: &str, settings: Option<AuthKeySettings>) -> StoreFuture<'_, ()> {
        let target = target.to_lowercase();
        self.write(move |conn| authkey::set_settings(conn, &target, settings))
    }

    fn authkey_settings(&self, address: &str) -> StoreFuture<'_, Option<(AuthKeySettings, SettingsSource)>> {
        let address = address.to_lowercase();
        self.read(move |conn| authkey::settings(conn, &address))
    }

    fn add_authkey(&self, key: AuthKey) -> StoreFuture<'_, ()> {
        self.write(move |conn| authkey::add(conn, &key))
    }

    fn authkeys(&self, address: &str, now: i64) -> StoreFuture<'_, Vec<AuthKey>> {
        let address = address.to_lowercase();
        self.read(move |conn| authkey::unexpired(conn, &address, now))
    }

    fn newest_authkeys(&self) -> StoreFuture<'_, Vec<(String, i64)>> {
        self.read(authkey::newest)
    }

    fn delete_expired_authkeys(&self, now: i64) -> StoreFuture<'_, usize> {
        self.write(move |conn| authkey::delete_expired(conn, now))
    }

    fn log_verify(&self, entries: Vec<VerifyLogEntry>) -> StoreFuture<'_, ()> {
        self.write(move |conn| entries.iter().try_for_each(|entry| authkey::log_verify(conn, entry)))
    }

    fn verify_log(&self, since: i64, limit: usize) -> StoreFuture<'_, Vec<VerifyLogEntry>> {
        self.read(move |conn| authkey::verify_log(conn, since, limit))
    }

    fn put_certificate(&self, mut cert: crate::messenger::StoredCertificate) -> StoreFuture<'_, ()> {
        cert.address = cert.address.to_lowercase();
        self.write(move |conn| messenger::put_certificate(conn, &cert))
    }

    fn get_certificate(&self, address: &str) -> StoreFuture<'_, Option<crate::messenger::StoredCertificate>> {
        let address = address.to_lowercase();
        self.read(move |conn| messenger::get_certificate(conn, &address))
    }

    fn remove_certificate(&self, address: &str) -> StoreFuture<'_, ()> {
        let address = address.to_lowercase();
        self.write(move |conn| messenger::remove_certificate(conn, &address))
    }

    fn list_certificates(&self) -> StoreFuture<'_, Vec<crate::messenger::StoredCertificate>> {
        self.read(messenger::list_certificates)
    }

    fn set_directory_entry(&self, mut record: crate::messenger::DirectoryRecord) -> StoreFuture<'_, ()> {
        record.address = record.address.to_lowercase();
        self.write(move |conn| messenger::set_directory_entry(conn, record))
    }

    fn set_directory_published(&self, address: &str, published: bool) -> StoreFuture<'_, ()> {
        let address = address.to_lowercase();
        self.write(move |conn| messenger::set_directory_published(conn, &address, published))
    }

    fn get_directory_entry(&self, address: &str) -> StoreFuture<'_, Option<crate::messenger::DirectoryRecord>> {
        let address = address.to_lowercase();
        self.read(move |conn| messenger::get_directory_entry(conn, &address))
    }

    fn list_directory(&self) -> StoreFuture<'_, Vec<crate::messenger::DirectoryRecord>> {
        self.read(messenger::list_directory)
    }

    fn directory_mailbox_for_id(&self, published_id: &str) -> StoreFuture<'_, Option<String>> {
        let id = published_id.to_ascii_uppercase();
        self.read(move |conn| messenger::directory_mailbox_for_id(conn, &id))
    }

    fn entity_changes_since(
        &self,
        since: i64,
        limit: usize,
    ) -> StoreFuture<'_, (Vec<crate::messenger::EntityChangeRow>, i64)> {
        self.read(move |conn| messenger::entity_changes_since(conn, since, limit))
    }

    fn learnt_mailboxes_for_id(&self, published_id: &str) -> StoreFuture<'_, Vec<String>> {
        let id = published_id.to_ascii_uppercase();
        self.read(move |conn| messenger::learnt_mailboxes_for_id(conn, &id))
    }

    fn forget_learnt_binding(&self, published_id: &str, mailbox: &str) -> StoreFuture<'_, usize> {
        let (id, mailbox) = (published_id.to_ascii_uppercase(), mailbox.to_lowercase());
        self.write(move |conn| messenger::forget_learnt_binding(conn, &id, &mailbox))
    }

    fn count_learnt_for_peer(&self, peer: &str) -> StoreFuture<'_, usize> {
        let peer = peer.to_ascii_lowercase();
        self.read(move |conn| messenger::count_learnt_for_peer(conn, &peer))
    }

    fn list_learnt_entities(&self) -> StoreFuture<'_, Vec<crate::messenger::LearntEntity>> {
        self.read(messenger::list_learnt_entities)
    }

    fn note_messenger_peer(&self, domain: &str, configured: bool, answered_at: Option<i64>) -> StoreFuture<'_, ()> {
        let domain = domain.to_ascii_lowercase();
        self.write(move |conn| messenger::note_peer(conn, &domain, configured, answered_at))
    }

    fn forget_messenger_peer(&self, domain: &str) -> StoreFuture<'_, usize> {
        let domain = domain.to_ascii_lowercase();
        self.write(move |conn| messenger::forget_peer(conn, &domain))
    }

    fn list_messenger_peers(&self) -> StoreFuture<'_, Vec<crate::messenger::MessengerPeer>> {
        self.read(messenger::list_peers)
    }

    fn apply_peer_pull(&self, mut pull: crate::messenger::PeerPull) -> StoreFuture<'_, ()> {
        pull.peer = pull.peer.to_ascii_lowercase();
        self.write(move |conn| messenger::apply_peer_pull(conn, &pull))
    }

    fn record_peer_error(&self, domain: &str, at: i64, error: &str) -> StoreFuture<'_, ()> {
        let (domain, error) = (domain.to_ascii_lowercase(), error.to_string());
        self.write(move |conn| messenger::record_peer_error(conn, &domain, at, &error))
    }

    fn record_sender_key(&self, key: SenderKey) -> StoreFuture<'_, ()> {
        self.write(move |conn| authkey::record_sender_key(conn, &key))
    }

    fn sender_key(&self, address: &str) -> StoreFuture<'_, Option<SenderKey>> {
        let address = address.to_string();
        self.read(move |conn| authkey::sender_key(conn, &address))
    }

    fn cache_verified_key(&self, address: &str, key_hash: &str, now: i64, expires_at: i64) -> StoreFuture<'_, ()> {
        let (address, key_hash) = (address.to_string(), key_hash.to_string());
        self.write(move |conn| authkey::cache_key(conn, &address, &key_hash, now, expires_at))
    }

    fn verified_key_cached(&self, address: &str, key_hash: &str, now: i64) -> StoreFuture<'_, bool> {
        let (address, key_hash) = (address.to_string(), key_hash.to_string());
        self.read(move |conn| authkey::key_cached(conn, &address, &key_hash, now))
    }

    fn log_verify_sent(&self, entry: VerifySentEntry) -> StoreFuture<'_, ()> {
        self.write(move |conn| authkey::log_verify_sent(conn, &entry))
    }

    fn verify_sent_log(&self, since: i64, limit: usize) -> StoreFuture<'_, Vec<VerifySentEntry>> {
        self.read(move |conn| authkey::verify_sent(conn, since, limit))
    }

    fn list_tracking_events(&self, after_id: i64, limit: usize) -> StoreFuture<'_, Vec<TrackingEvent>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, occurred_at, queue_id, message_id, sender, recipient, event FROM tracking_events
                     WHERE id > ?1 ORDER BY id LIMIT ?2",
                )
                .map_err(db_error)?;
            let rows = stmt
                .query_map(params![after_id, limit], |r| {
                    let kind: String = r.get(6)?;
                    Ok(TrackingEvent {
                        id: r.get(0)?,
                        occurred_at: r.get(1)?,
                        queue_id: r.get(2)?,
                        message_id: r.get(3)?,
                        sender: r.get(4)?,
                        recipient: r.get(5)?,
                        kind: TrackingKind::parse(&kind).unwrap_or(TrackingKind::Downloaded),
                    })
                })
                .map_err(db_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
        })
    }

    fn track_event(&self, event: NewTrackingEvent) -> StoreFuture<'_, TrackingOutcome> {
        self.write(move |conn| tracking::track_event(conn, &event))
    }

    fn store_notified_record(
        &self,
        record: vouchmail_proto::messenger::tracking::Record,
        now: i64,
    ) -> StoreFuture<'_, NotifyStored> {
        self.write(move |conn| tracking::insert_record(conn, &record, now))
    }

    fn count_tracking_records(&self, owner: &str, recipient_domain: &str, stored: Range<i64>) -> StoreFuture<'_, u64> {
        let (owner, domain) = (owner.to_lowercase(), recipient_domain.to_lowercase());
        self.read(move |conn| tracking::count_records(conn, &owner, &domain, stored.start, stored.end))
    }

    fn tracking_records(
        &self,
        owner: &str,
        since: Option<i64>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<StoredTrackingRecord>> {
        let owner = owner.to_lowercase();
        self.read(move |conn| tracking::records(conn, &owner, since, limit))
    }

    fn lease_notifies(&self, now: i64, lease_until: i64, limit: usize) -> StoreFuture<'_, Vec<OutboxEntry>> {
        self.write(move |conn| tracking::lease(conn, now, lease_until, limit))
    }

    fn finish_notifies(&self, updates: Vec<OutboxUpdate>, now: i64) -> StoreFuture<'_, ()> {
        self.write(move |conn| tracking::finish(conn, &updates, now))
    }

    fn next_notify_due(&self) -> StoreFuture<'_, Option<i64>> {
        self.read(tracking::next_due)
    }

    fn list_notify_outbox(&self) -> StoreFuture<'_, Vec<OutboxEntry>> {
        self.read(tracking::pending)
    }

    fn notify_outbox_counts(&self) -> StoreFuture<'_, OutboxCounts> {
        self.read(tracking::counts)
    }
}

mod authkey;
mod base;
mod held;
mod messenger;
mod outbound;
#[cfg(test)]
mod tests;
mod tracking;
#[cfg(test)]
mod tracking_tests;
