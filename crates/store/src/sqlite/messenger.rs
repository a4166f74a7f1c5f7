//! The Messenger data in SQLite (SPEC 8.1, 8.4); which serials a directory edit makes is
//! decided in `crate::messenger`, shared with every backend.

use super::writer::SqliteStore;
use crate::error::StoreFuture;
use crate::interface::FederationStore;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::base::{db_error, now};
use crate::error::{StoreError, StoreResult};
use crate::messenger::{edited_entry, entity_changes, serial_of_cut_list};
use crate::messenger::{
    DirectoryRecord, EntityChangeRow, EntityOp, LearntEntity, MessengerPeer, PeerPull, StoredCertificate,
};

fn account_exists(conn: &Connection, address: &str) -> StoreResult<bool> {
    conn.prepare_cached("SELECT 1 FROM accounts WHERE address = ?1")
        .and_then(|mut stmt| stmt.exists(params![address]))
        .map_err(db_error)
}

pub(super) fn put_certificate(conn: &Connection, cert: &StoredCertificate) -> StoreResult<()> {
    if !account_exists(conn, &cert.address)? {
        return Err(StoreError::NotFound(format!("user {}", cert.address)));
    }
    conn.execute(
        "INSERT INTO certificates (address, der, not_before, not_after, fingerprint, stored_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(address) DO UPDATE SET der = excluded.der, not_before = excluded.not_before,
           not_after = excluded.not_after, fingerprint = excluded.fingerprint, stored_at = excluded.stored_at",
        params![cert.address, cert.der, cert.not_before, cert.not_after, cert.fingerprint, cert.stored_at],
    )
    .map_err(db_error)?;
    Ok(())
}

const CERT_COLUMNS: &str = "address, der, not_before, not_after, fingerprint, stored_at";

fn row_to_cert(r: &Row<'_>) -> rusqlite::Result<StoredCertificate> {
    Ok(StoredCertificate {
        address: r.get(0)?,
        der: r.get(1)?,
        not_before: r.get(2)?,
        not_after: r.get(3)?,
        fingerprint: r.get(4)?,
        stored_at: r.get(5)?,
    })
}

pub(super) fn get_certificate(conn: &Connection, address: &str) -> StoreResult<Option<StoredCertificate>> {
    conn.prepare_cached(&format!("SELECT {CERT_COLUMNS} FROM certificates WHERE address = ?1"))
        .and_then(|mut stmt| stmt.query_row(params![address], row_to_cert).optional())
        .map_err(db_error)
}

pub(super) fn remove_certificate(conn: &Connection, address: &str) -> StoreResult<()> {
    let n = conn.execute("DELETE FROM certificates WHERE address = ?1", params![address]).map_err(db_error)?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("certificate of {address}")));
    }
    Ok(())
}

pub(super) fn list_certificates(conn: &Connection) -> StoreResult<Vec<StoredCertificate>> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {CERT_COLUMNS} FROM certificates ORDER BY address")).map_err(db_error)?;
    let rows = stmt.query_map([], row_to_cert).map_err(db_error)?;
    rows.collect::<Result<_, _>>().map_err(db_error)
}

fn ids_of(conn: &Connection, address: &str) -> StoreResult<Vec<String>> {
    let mut stmt = conn
        .prepare_cached("SELECT published_id FROM directory_ids WHERE address = ?1 ORDER BY published_id")
        .map_err(db_error)?;
    let rows = stmt.query_map(params![address], |r| r.get(0)).map_err(db_error)?;
    rows.collect::<Result<_, _>>().map_err(db_error)
}

fn row_to_record(r: &Row<'_>) -> rusqlite::Result<DirectoryRecord> {
    Ok(DirectoryRecord {
        address: r.get(0)?,
        name: r.get(1)?,
        organisation: r.get(2)?,
        role: r.get(3)?,
        ids: Vec::new(),
        published: r.get::<_, i64>(4)? != 0,
        updated_at: r.get(5)?,
    })
}

const DIRECTORY_COLUMNS: &str = "address, name, organisation, role, published, updated_at";

pub(super) fn get_directory_entry(conn: &Connection, address: &str) -> StoreResult<Option<DirectoryRecord>> {
    let record = conn
        .prepare_cached(&format!("SELECT {DIRECTORY_COLUMNS} FROM directory WHERE address = ?1"))
        .and_then(|mut stmt| stmt.query_row(params![address], row_to_record).optional())
        .map_err(db_error)?;
    let Some(mut record) = record else { return Ok(None) };
    record.ids = ids_of(conn, address)?;
    Ok(Some(record))
}

pub(super) fn list_directory(conn: &Connection) -> StoreResult<Vec<DirectoryRecord>> {
    let mut records: Vec<DirectoryRecord> = {
        let mut stmt = conn
            .prepare_cached(&format!("SELECT {DIRECTORY_COLUMNS} FROM directory ORDER BY address"))
            .map_err(db_error)?;
        let rows = stmt.query_map([], row_to_record).map_err(db_error)?;
        rows.collect::<Result<_, _>>().map_err(db_error)?
    };
    for record in &mut records {
        record.ids = ids_of(conn, &record.address)?;
    }
    Ok(records)
}

/// Logs the Entity Index changes between two states of one entry, each with its serial.
fn log_changes(
    conn: &Connection,
    before: Option<&DirectoryRecord>,
    after: Option<&DirectoryRecord>,
) -> StoreResult<()> {
    let at = now();
    for (op, id, mailbox) in entity_changes(before, after) {
        conn.prepare_cached("INSERT INTO entity_changes (op, published_id, mailbox, at) VALUES (?1, ?2, ?3, ?4)")
            .and_then(|mut stmt| stmt.execute(params![op.as_str(), id, mailbox, at]))
            .map_err(db_error)?;
    }
    Ok(())
}

pub(super) fn set_directory_entry(conn: &Connection, record: DirectoryRecord) -> StoreResult<()> {
    if !account_exists(conn, &record.address)? {
        return Err(StoreError::NotFound(format!("user {}", record.address)));
    }
    let before = get_directory_entry(conn, &record.address)?;
    let record = edited_entry(record, before.as_ref(), now());
    let mut owners = Vec::new();
    for id in &record.ids {
        let owner: Option<String> = conn
            .query_row("SELECT address FROM directory_ids WHERE published_id = ?1", params![id], |r| r.get(0))
            .optional()
            .map_err(db_error)?;
        owners.extend(owner.map(|o| (id.as_str(), o)));
    }
    crate::rules::check_ids_free(&record.address, owners.iter().map(|(id, o)| (*id, o.as_str())))?;
    conn.execute(
        "INSERT INTO directory (address, name, organisation, role, published, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(address) DO UPDATE SET name = excluded.name, organisation = excluded.organisation,
           role = excluded.role, updated_at = excluded.updated_at",
        params![
            record.address,
            record.name,
            record.organisation,
            record.role,
            record.published as i64,
            record.updated_at
        ],
    )
    .map_err(db_error)?;
    conn.execute("DELETE FROM directory_ids WHERE address = ?1", params![record.address]).map_err(db_error)?;
    for id in &record.ids {
        conn.execute("INSERT INTO directory_ids (published_id, address) VALUES (?1, ?2)", params![id, record.address])
            .map_err(db_error)?;
    }
    log_changes(conn, before.as_ref(), Some(&record))
}

pub(super) fn set_directory_published(conn: &Connection, address: &str, published: bool) -> StoreResult<()> {
    let Some(before) = get_directory_entry(conn, address)? else {
        return Err(StoreError::NotFound(format!("directory entry of {address}")));
    };
    if before.published == published {
        return Ok(());
    }
    let after = DirectoryRecord { published, updated_at: now(), ..before.clone() };
    conn.execute(
        "UPDATE directory SET published = ?2, updated_at = ?3 WHERE address = ?1",
        params![address, published as i64, after.updated_at],
    )
    .map_err(db_error)?;
    log_changes(conn, Some(&before), Some(&after))
}

pub(super) fn directory_mailbox_for_id(conn: &Connection, id: &str) -> StoreResult<Option<String>> {
    conn.prepare_cached(
        "SELECT d.address FROM directory_ids i JOIN directory d ON d.address = i.address
         JOIN accounts a ON a.address = d.address
         WHERE i.published_id = ?1 AND d.published = 1",
    )
    .and_then(|mut stmt| stmt.query_row(params![id], |r| r.get(0)).optional())
    .map_err(db_error)
}

pub(super) fn entity_changes_since(
    conn: &Connection,
    since: i64,
    limit: usize,
) -> StoreResult<(Vec<EntityChangeRow>, i64)> {
    // One read transaction: the highest serial is of the same snapshot as the changes
    // listed, so a change committed between the two reads is not reported as seen.
    let tx = conn.unchecked_transaction().map_err(db_error)?;
    let conn = &*tx;
    let sql_limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare_cached(
            "SELECT serial, op, published_id, mailbox FROM entity_changes e
             WHERE serial > ?1 AND serial = (SELECT MAX(serial) FROM entity_changes f
                                             WHERE f.published_id = e.published_id AND f.mailbox = e.mailbox)
             ORDER BY serial LIMIT ?2",
        )
        .map_err(db_error)?;
    let rows = stmt
        .query_map(params![since, sql_limit], |r| {
            let op: String = r.get(1)?;
            Ok(EntityChangeRow {
                serial: r.get(0)?,
                op: EntityOp::parse(&op).unwrap_or(EntityOp::Del),
                published_id: r.get(2)?,
                mailbox: r.get(3)?,
            })
        })
        .map_err(db_error)?;
    let changes: Vec<EntityChangeRow> = rows.collect::<Result<_, _>>().map_err(db_error)?;
    drop(stmt);
    let highest = match serial_of_cut_list(&changes, limit) {
        Some(serial) => serial,
        None => {
            conn.query_row("SELECT COALESCE(MAX(serial), 0) FROM entity_changes", [], |r| r.get(0)).map_err(db_error)?
        }
    };
    tx.commit().map_err(db_error)?;
    Ok((changes, highest))
}

pub(super) fn learnt_entities_for_id(conn: &Connection, id: &str) -> StoreResult<Vec<LearntEntity>> {
    let mut stmt = conn
        .prepare_cached("SELECT published_id, mailbox, peer, learnt_at FROM entity_index WHERE published_id = ?1")
        .map_err(db_error)?;
    let rows = stmt.query_map(params![id], row_to_learnt).map_err(db_error)?;
    rows.collect::<Result<_, _>>().map_err(db_error)
}

fn row_to_learnt(r: &Row<'_>) -> rusqlite::Result<LearntEntity> {
    Ok(LearntEntity { published_id: r.get(0)?, mailbox: r.get(1)?, peer: r.get(2)?, learnt_at: r.get(3)? })
}

pub(super) fn list_learnt_entities(conn: &Connection) -> StoreResult<Vec<LearntEntity>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT published_id, mailbox, peer, learnt_at FROM entity_index ORDER BY published_id, mailbox, peer",
        )
        .map_err(db_error)?;
    let rows = stmt.query_map([], row_to_learnt).map_err(db_error)?;
    rows.collect::<Result<_, _>>().map_err(db_error)
}

pub(super) fn note_peer(conn: &Connection, domain: &str, configured: bool, success: Option<i64>) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO messenger_peers (domain, configured, last_success) VALUES (?1, ?2, ?3)
         ON CONFLICT(domain) DO UPDATE SET configured = MAX(configured, excluded.configured),
             last_success = MAX(COALESCE(last_success, 0), COALESCE(excluded.last_success, 0))",
    )
    .and_then(|mut stmt| stmt.execute(params![domain, configured as i64, success]))
    .map_err(db_error)?;
    Ok(())
}

pub(super) fn forget_peer(conn: &Connection, domain: &str) -> StoreResult<usize> {
    let entries = conn.execute("DELETE FROM entity_index WHERE peer = ?1", params![domain]).map_err(db_error)?;
    conn.execute("DELETE FROM messenger_peers WHERE domain = ?1", params![domain]).map_err(db_error)?;
    Ok(entries)
}

pub(super) fn list_peers(conn: &Connection) -> StoreResult<Vec<MessengerPeer>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT domain, configured, last_serial, last_pull, last_error, last_success FROM messenger_peers
             ORDER BY domain",
        )
        .map_err(db_error)?;
    let rows = stmt
        .query_map([], |r| {
            Ok(MessengerPeer {
                domain: r.get(0)?,
                configured: r.get::<_, i64>(1)? != 0,
                last_serial: r.get(2)?,
                last_pull: r.get(3)?,
                last_error: r.get(4)?,
                last_success: r.get(5)?,
            })
        })
        .map_err(db_error)?;
    rows.collect::<Result<_, _>>().map_err(db_error)
}

pub(super) fn apply_peer_pull(conn: &Connection, pull: &PeerPull) -> StoreResult<()> {
    note_peer(conn, &pull.peer, false, Some(pull.at))?;
    if pull.reset {
        conn.execute("DELETE FROM entity_index WHERE peer = ?1", params![pull.peer]).map_err(db_error)?;
    }
    for (id, mailbox) in &pull.remove {
        conn.prepare_cached("DELETE FROM entity_index WHERE published_id = ?1 AND mailbox = ?2 AND peer = ?3")
            .and_then(|mut stmt| stmt.execute(params![id, mailbox, pull.peer]))
            .map_err(db_error)?;
    }
    for (id, mailbox) in &pull.add {
        conn.prepare_cached(
            "INSERT INTO entity_index (published_id, mailbox, peer, learnt_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(published_id, mailbox, peer) DO NOTHING",
        )
        .and_then(|mut stmt| stmt.execute(params![id, mailbox, pull.peer, pull.at]))
        .map_err(db_error)?;
    }
    conn.execute(
        "UPDATE messenger_peers SET last_serial = ?2, last_pull = ?3, last_error = NULL WHERE domain = ?1",
        params![pull.peer, pull.last_serial, pull.at],
    )
    .map_err(db_error)?;
    Ok(())
}

pub(super) fn forget_learnt_binding(conn: &Connection, id: &str, mailbox: &str) -> StoreResult<usize> {
    conn.execute("DELETE FROM entity_index WHERE published_id = ?1 AND mailbox = ?2", params![id, mailbox])
        .map_err(db_error)
}

pub(super) fn count_learnt_for_peer(conn: &Connection, peer: &str) -> StoreResult<usize> {
    conn.query_row("SELECT COUNT(*) FROM entity_index WHERE peer = ?1", params![peer], |r| r.get::<_, i64>(0))
        .map(|n| n.max(0) as usize)
        .map_err(db_error)
}

pub(super) fn record_peer_error(conn: &Connection, domain: &str, at: i64, error: &str) -> StoreResult<()> {
    note_peer(conn, domain, false, None)?;
    conn.execute(
        "UPDATE messenger_peers SET last_pull = ?2, last_error = ?3 WHERE domain = ?1",
        params![domain, at, error],
    )
    .map_err(db_error)?;
    Ok(())
}

/// An account is going: its certificate and directory entry go with it, and the Entity
/// Index changes that withdrawing a published entry makes are logged (SPEC 8.4).
pub(super) fn forget_account(conn: &Connection, address: &str) -> StoreResult<()> {
    if let Some(before) = get_directory_entry(conn, address)? {
        log_changes(conn, Some(&before), None)?;
        conn.execute("DELETE FROM directory WHERE address = ?1", params![address]).map_err(db_error)?;
    }
    conn.execute("DELETE FROM certificates WHERE address = ?1", params![address]).map_err(db_error)?;
    Ok(())
}

impl FederationStore for SqliteStore {
    fn put_certificate(&self, mut cert: crate::messenger::StoredCertificate) -> StoreFuture<'_, ()> {
        cert.address = cert.address.to_lowercase();
        self.write(move |conn| put_certificate(conn, &cert))
    }

    fn get_certificate(&self, address: &str) -> StoreFuture<'_, Option<crate::messenger::StoredCertificate>> {
        let address = address.to_lowercase();
        self.read(move |conn| get_certificate(conn, &address))
    }

    fn remove_certificate(&self, address: &str) -> StoreFuture<'_, ()> {
        let address = address.to_lowercase();
        self.write(move |conn| remove_certificate(conn, &address))
    }

    fn list_certificates(&self) -> StoreFuture<'_, Vec<crate::messenger::StoredCertificate>> {
        self.read(list_certificates)
    }

    fn set_directory_entry(&self, mut record: crate::messenger::DirectoryRecord) -> StoreFuture<'_, ()> {
        record.address = record.address.to_lowercase();
        self.write(move |conn| set_directory_entry(conn, record))
    }

    fn set_directory_published(&self, address: &str, published: bool) -> StoreFuture<'_, ()> {
        let address = address.to_lowercase();
        self.write(move |conn| set_directory_published(conn, &address, published))
    }

    fn get_directory_entry(&self, address: &str) -> StoreFuture<'_, Option<crate::messenger::DirectoryRecord>> {
        let address = address.to_lowercase();
        self.read(move |conn| get_directory_entry(conn, &address))
    }

    fn list_directory(&self) -> StoreFuture<'_, Vec<crate::messenger::DirectoryRecord>> {
        self.read(list_directory)
    }

    fn directory_mailbox_for_id(&self, published_id: &str) -> StoreFuture<'_, Option<String>> {
        let id = published_id.to_ascii_uppercase();
        self.read(move |conn| directory_mailbox_for_id(conn, &id))
    }

    fn entity_changes_since(
        &self,
        since: i64,
        limit: usize,
    ) -> StoreFuture<'_, (Vec<crate::messenger::EntityChangeRow>, i64)> {
        self.read(move |conn| entity_changes_since(conn, since, limit))
    }

    fn learnt_entities_for_id(&self, published_id: &str) -> StoreFuture<'_, Vec<LearntEntity>> {
        let id = published_id.to_ascii_uppercase();
        self.read(move |conn| learnt_entities_for_id(conn, &id))
    }

    fn forget_learnt_binding(&self, published_id: &str, mailbox: &str) -> StoreFuture<'_, usize> {
        let (id, mailbox) = (published_id.to_ascii_uppercase(), mailbox.to_lowercase());
        self.write(move |conn| forget_learnt_binding(conn, &id, &mailbox))
    }

    fn count_learnt_for_peer(&self, peer: &str) -> StoreFuture<'_, usize> {
        let peer = peer.to_ascii_lowercase();
        self.read(move |conn| count_learnt_for_peer(conn, &peer))
    }

    fn list_learnt_entities(&self) -> StoreFuture<'_, Vec<crate::messenger::LearntEntity>> {
        self.read(list_learnt_entities)
    }

    fn note_messenger_peer(&self, domain: &str, configured: bool, answered_at: Option<i64>) -> StoreFuture<'_, ()> {
        let domain = domain.to_ascii_lowercase();
        self.write(move |conn| note_peer(conn, &domain, configured, answered_at))
    }

    fn forget_messenger_peer(&self, domain: &str) -> StoreFuture<'_, usize> {
        let domain = domain.to_ascii_lowercase();
        self.write(move |conn| forget_peer(conn, &domain))
    }

    fn list_messenger_peers(&self) -> StoreFuture<'_, Vec<crate::messenger::MessengerPeer>> {
        self.read(list_peers)
    }

    fn apply_peer_pull(&self, mut pull: crate::messenger::PeerPull) -> StoreFuture<'_, ()> {
        pull.peer = pull.peer.to_ascii_lowercase();
        self.write(move |conn| apply_peer_pull(conn, &pull))
    }

    fn record_peer_error(&self, domain: &str, at: i64, error: &str) -> StoreFuture<'_, ()> {
        let (domain, error) = (domain.to_ascii_lowercase(), error.to_string());
        self.write(move |conn| record_peer_error(conn, &domain, at, &error))
    }
}
