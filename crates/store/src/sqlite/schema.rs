//! The SQLite schema: versioned migrations applied in order at open (`PRAGMA
//! user_version` records the last), and how the database file and its connections are
//! made.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::base::db_error;
use crate::error::{StoreError, StoreResult};

/// How long a connection waits for another process's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Versioned schema migrations, applied in order; `PRAGMA user_version` records the last.
pub(super) const MIGRATIONS: &[&str] = &[
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
    // Migration 14: state every node shares (SPEC 11): leases with expiry (a POP3 maildrop
    // held by a session on some node), marks (when an account last had an ATRN), and
    // timed events counted within a window (failed AUTH attempts per network and account).
    r#"
CREATE TABLE node_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE node_marks (
    name TEXT PRIMARY KEY,
    at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE node_events (
    name TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX node_events_name_at ON node_events(name, at);
CREATE INDEX node_events_at ON node_events(at);
"#,
    // Migration 15: whether a domain counts a DMARC pass as its senders' authentication
    // (SPEC 2, 13): on for every domain, existing ones included.
    r#"
ALTER TABLE domains ADD COLUMN dmarc_counts INTEGER NOT NULL DEFAULT 1;
"#,
    // Migration 16: DKIM signing keys of the local domains (SPEC 13).
    r#"
CREATE TABLE dkim_keys (
    domain TEXT NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
    selector TEXT NOT NULL,
    algorithm TEXT NOT NULL CHECK (algorithm IN ('rsa-sha256','ed25519-sha256')),
    private_key BLOB NOT NULL,
    public_key TEXT NOT NULL,
    active INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (domain, selector)
);
"#,
    // Migration 17: the addresses an account may send as besides its own and its aliases'
    // (SPEC 3 `may_send_as`).
    r#"
CREATE TABLE send_as (
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    address TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (account_id, address)
);
"#,
    // Migration 18: DMARC results waiting for their aggregate report (RFC 7489 7.2).
    r#"
CREATE TABLE dmarc_results (
    period INTEGER NOT NULL,
    domain TEXT NOT NULL,
    record TEXT NOT NULL,
    policy TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (period, domain, record)
);
"#,
    // Migration 19: IMAP folders (SPEC 9). Every account gets the folders of SPEC 9, each
    // with its UIDVALIDITY, the next UID and the highest mod-sequence (RFC 9051 2.3.1.1,
    // RFC 7162); a mailbox entry gets its UID (existing ones numbered in arrival order),
    // flags and mod-sequence, and may be in any folder of its account (the table is
    // rebuilt without its check of three folder names).
    r#"
CREATE TABLE folders (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    special_use TEXT,
    uid_validity INTEGER NOT NULL,
    uid_next INTEGER NOT NULL,
    highest_modseq INTEGER NOT NULL,
    subscribed INTEGER NOT NULL,
    UNIQUE (account_id, name)
);
CREATE TABLE mailbox_with_uids (
    id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    folder TEXT NOT NULL,
    message_id INTEGER NOT NULL REFERENCES messages(id),
    received_at INTEGER NOT NULL,
    size INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    flags TEXT NOT NULL DEFAULT '',
    modseq INTEGER NOT NULL DEFAULT 1
);
INSERT INTO mailbox_with_uids (id, account_id, folder, message_id, received_at, size, uid)
    SELECT id, account_id, folder, message_id, received_at, size,
           ROW_NUMBER() OVER (PARTITION BY account_id, folder ORDER BY id)
    FROM mailbox;
DROP TABLE mailbox;
ALTER TABLE mailbox_with_uids RENAME TO mailbox;
CREATE UNIQUE INDEX mailbox_account ON mailbox(account_id, folder, uid);
CREATE INDEX mailbox_message ON mailbox(message_id);
INSERT INTO folders (account_id, name, special_use, uid_validity, uid_next, highest_modseq, subscribed)
    SELECT a.id, f.name, f.special_use, CAST(strftime('%s', 'now') AS INTEGER),
           COALESCE((SELECT MAX(b.uid) FROM mailbox b WHERE b.account_id = a.id AND b.folder = f.name), 0) + 1,
           1, 1
    FROM accounts a CROSS JOIN (
        SELECT 'INBOX' AS name, NULL AS special_use UNION ALL SELECT 'Junk', '\Junk'
        UNION ALL SELECT 'Sent', '\Sent' UNION ALL SELECT 'Drafts', '\Drafts'
        UNION ALL SELECT 'Trash', '\Trash' UNION ALL SELECT 'Archive', '\Archive'
        UNION ALL SELECT 'Tracking', NULL
    ) f;
"#,
    // Migration 20: the highest UIDVALIDITY each account has given a folder, kept past the
    // folder's deletion, so that a folder made again never gets an earlier one's (RFC 9051
    // 2.3.1.1, `rules::new_uid_validity`).
    r#"
ALTER TABLE accounts ADD COLUMN last_uid_validity INTEGER NOT NULL DEFAULT 0;
UPDATE accounts SET last_uid_validity =
    COALESCE((SELECT MAX(f.uid_validity) FROM folders f WHERE f.account_id = accounts.id), 0);
"#,
    // Migration 21: the admin API's bearer tokens (SPEC 12): only each token's SHA-256 is
    // kept; a revoked token keeps its row (and name), so using it is told apart (403).
    "
    CREATE TABLE admin_tokens (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        hash TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
    );
    ",
    // Migration 22: each message's header section, beside it (`NewMessage::header_section`):
    // IMAP header FETCHes, ENVELOPE and SEARCH of header fields read this short row, not
    // the message (SQLite loads a whole value to cut a prefix of it). Messages stored
    // before have none; those are read as before.
    "
    CREATE TABLE message_headers (
        message_id INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
        header BLOB NOT NULL
    );
    ",
    // Migration 23: tracking_events without AUTOINCREMENT, whose read and update of
    // sqlite_sequence on every insert was a sixth of the writer's time per IMAP download.
    // Events are never deleted, so the next id (the largest plus one) still only grows:
    // `list_tracking_events` readers keep their cursor. The ids are kept as they were.
    "
    CREATE TABLE tracking_events_rebuilt (
        id INTEGER PRIMARY KEY,
        occurred_at INTEGER NOT NULL,
        queue_id TEXT NOT NULL,
        message_id TEXT NOT NULL,
        sender TEXT NOT NULL,
        recipient TEXT NOT NULL,
        event TEXT NOT NULL CHECK (event IN ('downloaded','decrypted','decrypt_failed')),
        tracked INTEGER NOT NULL DEFAULT 0,
        UNIQUE (queue_id, recipient, event)
    );
    INSERT INTO tracking_events_rebuilt (id, occurred_at, queue_id, message_id, sender, recipient, event, tracked)
        SELECT id, occurred_at, queue_id, message_id, sender, recipient, event, tracked FROM tracking_events;
    DROP TABLE tracking_events;
    ALTER TABLE tracking_events_rebuilt RENAME TO tracking_events;
    CREATE INDEX tracking_events_recipient ON tracking_events(recipient, message_id);
    DELETE FROM sqlite_sequence WHERE name = 'tracking_events';
    ",
    // Migration 24: the CHECKs on the tables written per download and per NOTIFY record
    // as ORs. SQLite evaluates an IN list of three or more values through an ephemeral
    // table, built and dropped on every insert or update of the column: a third of the
    // writer's time per IMAP download. Ids are kept, and tracking_records' AUTOINCREMENT
    // sequence (its ids are the Tracking folder's UIDs) goes on from where it was.
    "
    CREATE TABLE tracking_events_rebuilt (
        id INTEGER PRIMARY KEY,
        occurred_at INTEGER NOT NULL,
        queue_id TEXT NOT NULL,
        message_id TEXT NOT NULL,
        sender TEXT NOT NULL,
        recipient TEXT NOT NULL,
        event TEXT NOT NULL CHECK (event = 'downloaded' OR event = 'decrypted' OR event = 'decrypt_failed'),
        tracked INTEGER NOT NULL DEFAULT 0,
        UNIQUE (queue_id, recipient, event)
    );
    INSERT INTO tracking_events_rebuilt (id, occurred_at, queue_id, message_id, sender, recipient, event, tracked)
        SELECT id, occurred_at, queue_id, message_id, sender, recipient, event, tracked FROM tracking_events;
    DROP TABLE tracking_events;
    ALTER TABLE tracking_events_rebuilt RENAME TO tracking_events;
    CREATE INDEX tracking_events_recipient ON tracking_events(recipient, message_id);

    CREATE TABLE tracking_records_rebuilt (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        owner TEXT NOT NULL,
        occurred_at INTEGER NOT NULL,
        message_id TEXT NOT NULL,
        sender TEXT NOT NULL,
        recipient TEXT NOT NULL,
        event TEXT NOT NULL CHECK (event = 'downloaded' OR event = 'decrypted' OR event = 'decrypt_failed'),
        reporting_server TEXT NOT NULL,
        stored_at INTEGER NOT NULL,
        UNIQUE (owner, message_id, recipient, event)
    );
    INSERT INTO tracking_records_rebuilt (id, owner, occurred_at, message_id, sender, recipient, event,
                                          reporting_server, stored_at)
        SELECT id, owner, occurred_at, message_id, sender, recipient, event, reporting_server, stored_at
        FROM tracking_records;
    DELETE FROM sqlite_sequence WHERE name = 'tracking_records_rebuilt';
    INSERT INTO sqlite_sequence (name, seq)
        SELECT 'tracking_records_rebuilt', seq FROM sqlite_sequence WHERE name = 'tracking_records';
    DROP TABLE tracking_records;
    ALTER TABLE tracking_records_rebuilt RENAME TO tracking_records;
    CREATE INDEX tracking_records_owner ON tracking_records(owner, occurred_at, id);
    CREATE INDEX tracking_records_owner_stored ON tracking_records(owner, stored_at);

    CREATE TABLE notify_outbox_rebuilt (
        id INTEGER PRIMARY KEY,
        record TEXT NOT NULL,
        domain TEXT NOT NULL,
        message_id TEXT NOT NULL,
        recipient TEXT NOT NULL,
        event TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state = 'pending' OR state = 'inflight' OR state = 'sent' OR state = 'dropped'),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt INTEGER NOT NULL,
        lease_until INTEGER,
        last_error TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        UNIQUE (domain, message_id, recipient, event)
    );
    INSERT INTO notify_outbox_rebuilt (id, record, domain, message_id, recipient, event, state, attempts,
                                       next_attempt, lease_until, last_error, created_at, updated_at)
        SELECT id, record, domain, message_id, recipient, event, state, attempts, next_attempt, lease_until,
               last_error, created_at, updated_at
        FROM notify_outbox;
    DROP TABLE notify_outbox;
    ALTER TABLE notify_outbox_rebuilt RENAME TO notify_outbox;
    CREATE INDEX notify_outbox_due ON notify_outbox(state, next_attempt) WHERE state IN ('pending','inflight');
    ",
];

/// The store holds every mailbox and the password hashes: its folder is made 700 and the
/// database file 600 before SQLite opens it (the -wal and -shm files SQLite makes take the
/// database file's mode).
pub(super) fn create_private(path: &Path) -> StoreResult<()> {
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

/// Octets of the database file mapped (SQLite caps it at its compile-time maximum).
const MMAP_SIZE: u64 = 1 << 30;

pub(super) fn open_connection(path: &Path) -> StoreResult<Connection> {
    let conn =
        Connection::open(path).map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_error)?;
    // SPEC 11: WAL, and synchronous=FULL so a commit is on disk when it returns.
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")
        .map_err(db_error)?;
    // Pages are read from a shared mapping of the file rather than copied by a read(2) into
    // each connection's own cache (2 MB, so a large mailbox never stays in it): an IMAP
    // SEARCH over 10,000 messages spent a third of its time in pread. Writes still go
    // through the WAL. https://sqlite.org/mmap.html
    conn.execute_batch(&format!("PRAGMA mmap_size={MMAP_SIZE};")).map_err(db_error)?;
    // Each write job runs in a savepoint, whose statement journal spilled into a temporary
    // file past 64 KiB: an IMAP FETCH's batch of `downloaded` events created, wrote and
    // unlinked one per commit. In memory it is bounded by the pages one job changes.
    // https://sqlite.org/tempfiles.html#statement_journals
    conn.execute_batch("PRAGMA temp_store=MEMORY;").map_err(db_error)?;
    Ok(conn)
}

pub(super) fn migrate(conn: &mut Connection) -> StoreResult<()> {
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
