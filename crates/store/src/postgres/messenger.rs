//! The Messenger data in PostgreSQL (SPEC 8.1, 8.4): certificates, the directory, this
//! server's own Entity Index changes and what peers published: the semantics of
//! `sqlite/messenger.rs`, with the rules (which serials a directory edit makes, what an
//! edit stores, who a published ID belongs to, what ENTITIES reports as its highest
//! serial) in `crate::messenger` and `crate::rules`.
//!
//! What differs because several nodes write at once: a change's serial is a peer's
//! cursor, so its insert takes the cursor lock first (`cursors`); an edit locks the entry
//! it reads as "before" (two edits of one entry at once would otherwise log the same
//! change twice) and the account it belongs to (so the account cannot go in between);
//! ENTITIES reads its changes and its highest serial in one snapshot. Lists are sorted
//! here, by the bytes of their text, as SQLite's BINARY collation does, whatever the
//! database's collation.

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::{IsolationLevel, Row};

use super::base::{db_error, now, sql_limit};
use super::cursors::{self, Cursor};
use super::pool::PostgresStore;
use crate::error::{StoreError, StoreFuture, StoreResult};
use crate::interface::FederationStore;
use crate::messenger::{
    edited_entry, entity_changes, serial_of_cut_list, DirectoryRecord, EntityChangeRow, EntityOp, LearntEntity,
    MessengerPeer, PeerPull, StoredCertificate,
};

/// Whether `address` is an account; when it is, the account cannot be removed until the
/// caller's transaction ends (the lock a foreign key would take).
async fn account_exists(tx: &Transaction<'_>, address: &str) -> StoreResult<bool> {
    let statement =
        tx.prepare_cached("SELECT 1 FROM accounts WHERE address = $1 FOR KEY SHARE").await.map_err(db_error)?;
    Ok(tx.query_opt(&statement, &[&address]).await.map_err(db_error)?.is_some())
}

const CERT_COLUMNS: &str = "address, der, not_before, not_after, fingerprint, stored_at";

fn row_to_cert(r: &Row) -> Result<StoredCertificate, tokio_postgres::Error> {
    Ok(StoredCertificate {
        address: r.try_get(0)?,
        der: r.try_get(1)?,
        not_before: r.try_get(2)?,
        not_after: r.try_get(3)?,
        fingerprint: r.try_get(4)?,
        stored_at: r.try_get(5)?,
    })
}

const DIRECTORY_COLUMNS: &str = "d.address, d.name, d.organisation, d.role, d.published, d.updated_at";

fn row_to_record(r: &Row) -> Result<DirectoryRecord, tokio_postgres::Error> {
    Ok(DirectoryRecord {
        address: r.try_get(0)?,
        name: r.try_get(1)?,
        organisation: r.try_get(2)?,
        role: r.try_get(3)?,
        ids: Vec::new(),
        published: r.try_get(4)?,
        updated_at: r.try_get(5)?,
    })
}

/// Directory rows each joined with one of its IDs (or none: `DIRECTORY_COLUMNS` and
/// `i.published_id`), folded into records; sorted by address, IDs sorted.
fn fold_directory(rows: &[Row]) -> StoreResult<Vec<DirectoryRecord>> {
    let mut records: Vec<DirectoryRecord> = Vec::new();
    for row in rows {
        let address: String = row.try_get(0).map_err(db_error)?;
        let id: Option<String> = row.try_get(6).map_err(db_error)?;
        if records.last().is_none_or(|last| last.address != address) {
            records.push(row_to_record(row).map_err(db_error)?);
        }
        if let (Some(record), Some(id)) = (records.last_mut(), id) {
            record.ids.push(id);
        }
    }
    records.sort_by(|a, b| a.address.cmp(&b.address));
    for record in &mut records {
        record.ids.sort();
    }
    Ok(records)
}

/// One directory entry with its IDs; `for_update` locks it until the caller's
/// transaction ends (an edit's "before").
async fn get_directory_entry(
    client: &impl GenericClient,
    address: &str,
    for_update: bool,
) -> StoreResult<Option<DirectoryRecord>> {
    if for_update {
        // The entry's row only: FOR UPDATE cannot lock the nullable side of an outer join.
        let lock = client
            .prepare_cached("SELECT address FROM directory WHERE address = $1 FOR UPDATE")
            .await
            .map_err(db_error)?;
        if client.query_opt(&lock, &[&address]).await.map_err(db_error)?.is_none() {
            return Ok(None);
        }
    }
    let statement = client
        .prepare_cached(&format!(
            "SELECT {DIRECTORY_COLUMNS}, i.published_id FROM directory d
             LEFT JOIN directory_ids i ON i.address = d.address WHERE d.address = $1"
        ))
        .await
        .map_err(db_error)?;
    let rows = client.query(&statement, &[&address]).await.map_err(db_error)?;
    Ok(fold_directory(&rows)?.pop())
}

/// Logs the Entity Index changes between two states of one entry, each with its serial
/// (a peer's cursor: under the cursor lock).
async fn log_changes(
    tx: &Transaction<'_>,
    before: Option<&DirectoryRecord>,
    after: Option<&DirectoryRecord>,
) -> StoreResult<()> {
    let changes = entity_changes(before, after);
    if changes.is_empty() {
        return Ok(());
    }
    cursors::lock(tx, Cursor::EntityChanges).await?;
    let statement = tx
        .prepare_cached("INSERT INTO entity_changes (op, published_id, mailbox, at) VALUES ($1, $2, $3, $4)")
        .await
        .map_err(db_error)?;
    let at = now();
    for (op, id, mailbox) in changes {
        tx.execute(&statement, &[&op.as_str(), &id, &mailbox, &at]).await.map_err(db_error)?;
    }
    Ok(())
}

async fn set_directory_entry(tx: &Transaction<'_>, record: DirectoryRecord) -> StoreResult<()> {
    if !account_exists(tx, &record.address).await? {
        return Err(StoreError::NotFound(format!("user {}", record.address)));
    }
    let before = get_directory_entry(tx, &record.address, true).await?;
    let record = edited_entry(record, before.as_ref(), now());
    let owner_of =
        tx.prepare_cached("SELECT address FROM directory_ids WHERE published_id = $1").await.map_err(db_error)?;
    let mut owners = Vec::new();
    for id in &record.ids {
        let owner: Option<String> = tx
            .query_opt(&owner_of, &[id])
            .await
            .map_err(db_error)?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(db_error)?;
        owners.extend(owner.map(|o| (id.as_str(), o)));
    }
    // SPEC 8.4: an ID names one local mailbox. Another node claiming a free ID for another
    // entry at the same moment loses on the primary key below: a Conflict as well.
    crate::rules::check_ids_free(&record.address, owners.iter().map(|(id, o)| (*id, o.as_str())))?;
    let upsert = tx
        .prepare_cached(
            "INSERT INTO directory (address, name, organisation, role, published, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT(address) DO UPDATE SET name = excluded.name, organisation = excluded.organisation,
               role = excluded.role, updated_at = excluded.updated_at",
        )
        .await
        .map_err(db_error)?;
    tx.execute(
        &upsert,
        &[&record.address, &record.name, &record.organisation, &record.role, &record.published, &record.updated_at],
    )
    .await
    .map_err(db_error)?;
    let clear = tx.prepare_cached("DELETE FROM directory_ids WHERE address = $1").await.map_err(db_error)?;
    tx.execute(&clear, &[&record.address]).await.map_err(db_error)?;
    let add = tx
        .prepare_cached("INSERT INTO directory_ids (published_id, address) VALUES ($1, $2)")
        .await
        .map_err(db_error)?;
    for id in &record.ids {
        tx.execute(&add, &[id, &record.address]).await.map_err(db_error)?;
    }
    log_changes(tx, before.as_ref(), Some(&record)).await
}

async fn set_directory_published(tx: &Transaction<'_>, address: &str, published: bool) -> StoreResult<()> {
    let Some(before) = get_directory_entry(tx, address, true).await? else {
        return Err(StoreError::NotFound(format!("directory entry of {address}")));
    };
    if before.published == published {
        return Ok(());
    }
    let after = DirectoryRecord { published, updated_at: now(), ..before.clone() };
    let statement = tx
        .prepare_cached("UPDATE directory SET published = $2, updated_at = $3 WHERE address = $1")
        .await
        .map_err(db_error)?;
    tx.execute(&statement, &[&address, &published, &after.updated_at]).await.map_err(db_error)?;
    log_changes(tx, Some(&before), Some(&after)).await
}

/// An account is going: its certificate and directory entry go with it, and the Entity
/// Index changes that withdrawing a published entry makes are logged (SPEC 8.4). For
/// `remove_account`, in its transaction.
pub(super) async fn forget_account(tx: &Transaction<'_>, address: &str) -> StoreResult<()> {
    if let Some(before) = get_directory_entry(tx, address, true).await? {
        log_changes(tx, Some(&before), None).await?;
        let statement = tx.prepare_cached("DELETE FROM directory WHERE address = $1").await.map_err(db_error)?;
        tx.execute(&statement, &[&address]).await.map_err(db_error)?;
    }
    let statement = tx.prepare_cached("DELETE FROM certificates WHERE address = $1").await.map_err(db_error)?;
    tx.execute(&statement, &[&address]).await.map_err(db_error)?;
    Ok(())
}

/// This server's changes after `since` (the latest per ID and mailbox) and the highest
/// serial to report, read in one snapshot: a change committed between two reads would
/// otherwise count as seen without being listed, and a peer would never pull it.
async fn entity_changes_since(
    conn: &mut deadpool_postgres::Object,
    since: i64,
    limit: usize,
) -> StoreResult<(Vec<EntityChangeRow>, i64)> {
    let tx = conn
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(db_error)?;
    let statement = tx
        .prepare_cached(
            "SELECT serial, op, published_id, mailbox FROM entity_changes e
             WHERE serial > $1 AND serial = (SELECT MAX(serial) FROM entity_changes f
                                             WHERE f.published_id = e.published_id AND f.mailbox = e.mailbox)
             ORDER BY serial LIMIT $2",
        )
        .await
        .map_err(db_error)?;
    let rows = tx.query(&statement, &[&since, &sql_limit(limit)]).await.map_err(db_error)?;
    let change = |r: &Row| -> Result<EntityChangeRow, tokio_postgres::Error> {
        let op: String = r.try_get(1)?;
        Ok(EntityChangeRow {
            serial: r.try_get(0)?,
            op: EntityOp::parse(&op).unwrap_or(EntityOp::Del),
            published_id: r.try_get(2)?,
            mailbox: r.try_get(3)?,
        })
    };
    let changes: Vec<EntityChangeRow> = rows.iter().map(change).collect::<Result<_, _>>().map_err(db_error)?;
    let highest = match serial_of_cut_list(&changes, limit) {
        Some(serial) => serial,
        None => {
            let statement =
                tx.prepare_cached("SELECT COALESCE(MAX(serial), 0) FROM entity_changes").await.map_err(db_error)?;
            tx.query_one(&statement, &[]).await.and_then(|r| r.try_get(0)).map_err(db_error)?
        }
    };
    tx.commit().await.map_err(db_error)?;
    Ok((changes, highest))
}

const LEARNT_COLUMNS: &str = "published_id, mailbox, peer, learnt_at";

fn learnt(rows: &[Row]) -> StoreResult<Vec<LearntEntity>> {
    let entity = |r: &Row| -> Result<LearntEntity, tokio_postgres::Error> {
        Ok(LearntEntity {
            published_id: r.try_get(0)?,
            mailbox: r.try_get(1)?,
            peer: r.try_get(2)?,
            learnt_at: r.try_get(3)?,
        })
    };
    rows.iter().map(entity).collect::<Result<_, _>>().map_err(db_error)
}

/// Remembers a peer: `configured` is only ever raised, `last_success` only moved forward
/// (SQLite's two-argument MAX as GREATEST; a peer already known with neither time reads 0
/// after it, as there).
async fn note_peer(
    client: &impl GenericClient,
    domain: &str,
    configured: bool,
    success: Option<i64>,
) -> StoreResult<()> {
    let statement = client
        .prepare_cached(
            "INSERT INTO messenger_peers (domain, configured, last_success) VALUES ($1, $2, $3)
             ON CONFLICT(domain) DO UPDATE SET configured = messenger_peers.configured OR excluded.configured,
                 last_success = GREATEST(COALESCE(messenger_peers.last_success, 0),
                                         COALESCE(excluded.last_success, 0))",
        )
        .await
        .map_err(db_error)?;
    client.execute(&statement, &[&domain, &configured, &success]).await.map_err(db_error)?;
    Ok(())
}

async fn apply_peer_pull(tx: &Transaction<'_>, pull: &PeerPull) -> StoreResult<()> {
    note_peer(tx, &pull.peer, false, Some(pull.at)).await?;
    if pull.reset {
        let statement = tx.prepare_cached("DELETE FROM entity_index WHERE peer = $1").await.map_err(db_error)?;
        tx.execute(&statement, &[&pull.peer]).await.map_err(db_error)?;
    }
    let remove = tx
        .prepare_cached("DELETE FROM entity_index WHERE published_id = $1 AND mailbox = $2 AND peer = $3")
        .await
        .map_err(db_error)?;
    for (id, mailbox) in &pull.remove {
        tx.execute(&remove, &[id, mailbox, &pull.peer]).await.map_err(db_error)?;
    }
    let add = tx
        .prepare_cached(
            "INSERT INTO entity_index (published_id, mailbox, peer, learnt_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT(published_id, mailbox, peer) DO NOTHING",
        )
        .await
        .map_err(db_error)?;
    for (id, mailbox) in &pull.add {
        tx.execute(&add, &[id, mailbox, &pull.peer, &pull.at]).await.map_err(db_error)?;
    }
    let statement = tx
        .prepare_cached(
            "UPDATE messenger_peers SET last_serial = $2, last_pull = $3, last_error = NULL WHERE domain = $1",
        )
        .await
        .map_err(db_error)?;
    tx.execute(&statement, &[&pull.peer, &pull.last_serial, &pull.at]).await.map_err(db_error)?;
    Ok(())
}

fn count(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl FederationStore for PostgresStore {
    fn put_certificate(&self, mut cert: StoredCertificate) -> StoreFuture<'_, ()> {
        cert.address = cert.address.to_lowercase();
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(db_error)?;
            if !account_exists(&tx, &cert.address).await? {
                return Err(StoreError::NotFound(format!("user {}", cert.address)));
            }
            let statement = tx
                .prepare_cached(
                    "INSERT INTO certificates (address, der, not_before, not_after, fingerprint, stored_at)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT(address) DO UPDATE SET der = excluded.der, not_before = excluded.not_before,
                       not_after = excluded.not_after, fingerprint = excluded.fingerprint,
                       stored_at = excluded.stored_at",
                )
                .await
                .map_err(db_error)?;
            tx.execute(
                &statement,
                &[&cert.address, &cert.der, &cert.not_before, &cert.not_after, &cert.fingerprint, &cert.stored_at],
            )
            .await
            .map_err(db_error)?;
            tx.commit().await.map_err(db_error)
        })
    }

    fn get_certificate(&self, address: &str) -> StoreFuture<'_, Option<StoredCertificate>> {
        let address = address.to_lowercase();
        Box::pin(async move {
            let conn = self.conn().await?;
            let statement = conn
                .prepare_cached(&format!("SELECT {CERT_COLUMNS} FROM certificates WHERE address = $1"))
                .await
                .map_err(db_error)?;
            let row = conn.query_opt(&statement, &[&address]).await.map_err(db_error)?;
            row.map(|r| row_to_cert(&r)).transpose().map_err(db_error)
        })
    }

    fn remove_certificate(&self, address: &str) -> StoreFuture<'_, ()> {
        let address = address.to_lowercase();
        Box::pin(async move {
            let conn = self.conn().await?;
            let statement =
                conn.prepare_cached("DELETE FROM certificates WHERE address = $1").await.map_err(db_error)?;
            if conn.execute(&statement, &[&address]).await.map_err(db_error)? == 0 {
                return Err(StoreError::NotFound(format!("certificate of {address}")));
            }
            Ok(())
        })
    }

    fn list_certificates(&self) -> StoreFuture<'_, Vec<StoredCertificate>> {
        Box::pin(async move {
            let conn = self.conn().await?;
            let statement =
                conn.prepare_cached(&format!("SELECT {CERT_COLUMNS} FROM certificates")).await.map_err(db_error)?;
            let rows = conn.query(&statement, &[]).await.map_err(db_error)?;
            let mut certs: Vec<StoredCertificate> =
                rows.iter().map(row_to_cert).collect::<Result<_, _>>().map_err(db_error)?;
            certs.sort_by(|a, b| a.address.cmp(&b.address));
            Ok(certs)
        })
    }

    fn set_directory_entry(&self, mut record: DirectoryRecord) -> StoreFuture<'_, ()> {
        record.address = record.address.to_lowercase();
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(db_error)?;
            set_directory_entry(&tx, record).await?;
            tx.commit().await.map_err(db_error)
        })
    }

    fn set_directory_published(&self, address: &str, published: bool) -> StoreFuture<'_, ()> {
        let address = address.to_lowercase();
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(db_error)?;
            set_directory_published(&tx, &address, published).await?;
            tx.commit().await.map_err(db_error)
        })
    }

    fn get_directory_entry(&self, address: &str) -> StoreFuture<'_, Option<DirectoryRecord>> {
        let address = address.to_lowercase();
        Box::pin(async move {
            let conn = self.conn().await?;
            get_directory_entry(&conn, &address, false).await
        })
    }

    fn list_directory(&self) -> StoreFuture<'_, Vec<DirectoryRecord>> {
        Box::pin(async move {
            let conn = self.conn().await?;
            // One statement, so every entry comes with the IDs it had at that moment.
            let statement = conn
                .prepare_cached(&format!(
                    "SELECT {DIRECTORY_COLUMNS}, i.published_id FROM directory d
                     LEFT JOIN directory_ids i ON i.address = d.address ORDER BY d.address"
                ))
                .await
                .map_err(db_error)?;
            let rows = conn.query(&statement, &[]).await.map_err(db_error)?;
            fold_directory(&rows)
        })
    }

    fn directory_mailbox_for_id(&self, published_id: &str) -> StoreFuture<'_, Option<String>> {
        let id = published_id.to_ascii_uppercase();
        Box::pin(async move {
            let conn = self.conn().await?;
            let statement = conn
                .prepare_cached(
                    "SELECT d.address FROM directory_ids i JOIN directory d ON d.address = i.address
                     JOIN accounts a ON a.address = d.address
                     WHERE i.published_id = $1 AND d.published",
                )
                .await
                .map_err(db_error)?;
            let row = conn.query_opt(&statement, &[&id]).await.map_err(db_error)?;
            row.map(|r| r.try_get(0)).transpose().map_err(db_error)
        })
    }

    fn entity_changes_since(&self, since: i64, limit: usize) -> StoreFuture<'_, (Vec<EntityChangeRow>, i64)> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            entity_changes_since(&mut conn, since, limit).await
        })
    }

    fn learnt_entities_for_id(&self, published_id: &str) -> StoreFuture<'_, Vec<LearntEntity>> {
        let id = published_id.to_ascii_uppercase();
        Box::pin(async move {
            let conn = self.conn().await?;
            let statement = conn
                .prepare_cached(&format!("SELECT {LEARNT_COLUMNS} FROM entity_index WHERE published_id = $1"))
                .await
                .map_err(db_error)?;
            learnt(&conn.query(&statement, &[&id]).await.map_err(db_error)?)
        })
    }

    fn forget_learnt_binding(&self, published_id: &str, mailbox: &str) -> StoreFuture<'_, usize> {
        let (id, mailbox) = (published_id.to_ascii_uppercase(), mailbox.to_lowercase());
        Box::pin(async move {
            let conn = self.conn().await?;
            let statement = conn
                .prepare_cached("DELETE FROM entity_index WHERE published_id = $1 AND mailbox = $2")
                .await
                .map_err(db_error)?;
            Ok(count(conn.execute(&statement, &[&id, &mailbox]).await.map_err(db_error)?))
        })
    }

    fn count_learnt_for_peer(&self, peer: &str) -> StoreFuture<'_, usize> {
        let peer = peer.to_ascii_lowercase();
        Box::pin(async move {
            let conn = self.conn().await?;
            let statement =
                conn.prepare_cached("SELECT COUNT(*) FROM entity_index WHERE peer = $1").await.map_err(db_error)?;
            let n: i64 = conn.query_one(&statement, &[&peer]).await.and_then(|r| r.try_get(0)).map_err(db_error)?;
            Ok(n.max(0) as usize)
        })
    }

    fn list_learnt_entities(&self) -> StoreFuture<'_, Vec<LearntEntity>> {
        Box::pin(async move {
            let conn = self.conn().await?;
            let statement =
                conn.prepare_cached(&format!("SELECT {LEARNT_COLUMNS} FROM entity_index")).await.map_err(db_error)?;
            let mut entities = learnt(&conn.query(&statement, &[]).await.map_err(db_error)?)?;
            entities
                .sort_by(|a, b| (&a.published_id, &a.mailbox, &a.peer).cmp(&(&b.published_id, &b.mailbox, &b.peer)));
            Ok(entities)
        })
    }

    fn note_messenger_peer(&self, domain: &str, configured: bool, answered_at: Option<i64>) -> StoreFuture<'_, ()> {
        let domain = domain.to_ascii_lowercase();
        Box::pin(async move {
            let conn = self.conn().await?;
            note_peer(&conn, &domain, configured, answered_at).await
        })
    }

    fn forget_messenger_peer(&self, domain: &str) -> StoreFuture<'_, usize> {
        let domain = domain.to_ascii_lowercase();
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(db_error)?;
            let entries = tx.prepare_cached("DELETE FROM entity_index WHERE peer = $1").await.map_err(db_error)?;
            let n = tx.execute(&entries, &[&domain]).await.map_err(db_error)?;
            let peer = tx.prepare_cached("DELETE FROM messenger_peers WHERE domain = $1").await.map_err(db_error)?;
            tx.execute(&peer, &[&domain]).await.map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            Ok(count(n))
        })
    }

    fn list_messenger_peers(&self) -> StoreFuture<'_, Vec<MessengerPeer>> {
        Box::pin(async move {
            let conn = self.conn().await?;
            let statement = conn
                .prepare_cached(
                    "SELECT domain, configured, last_serial, last_pull, last_error, last_success FROM messenger_peers",
                )
                .await
                .map_err(db_error)?;
            let rows = conn.query(&statement, &[]).await.map_err(db_error)?;
            let peer = |r: &Row| -> Result<MessengerPeer, tokio_postgres::Error> {
                Ok(MessengerPeer {
                    domain: r.try_get(0)?,
                    configured: r.try_get(1)?,
                    last_serial: r.try_get(2)?,
                    last_pull: r.try_get(3)?,
                    last_error: r.try_get(4)?,
                    last_success: r.try_get(5)?,
                })
            };
            let mut peers: Vec<MessengerPeer> = rows.iter().map(peer).collect::<Result<_, _>>().map_err(db_error)?;
            peers.sort_by(|a, b| a.domain.cmp(&b.domain));
            Ok(peers)
        })
    }

    fn apply_peer_pull(&self, mut pull: PeerPull) -> StoreFuture<'_, ()> {
        pull.peer = pull.peer.to_ascii_lowercase();
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(db_error)?;
            apply_peer_pull(&tx, &pull).await?;
            tx.commit().await.map_err(db_error)
        })
    }

    fn record_peer_error(&self, domain: &str, at: i64, error: &str) -> StoreFuture<'_, ()> {
        let (domain, error) = (domain.to_ascii_lowercase(), error.to_string());
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(db_error)?;
            note_peer(&tx, &domain, false, None).await?;
            let statement = tx
                .prepare_cached("UPDATE messenger_peers SET last_pull = $2, last_error = $3 WHERE domain = $1")
                .await
                .map_err(db_error)?;
            tx.execute(&statement, &[&domain, &at, &error]).await.map_err(db_error)?;
            tx.commit().await.map_err(db_error)
        })
    }
}
