//! AuthKeys of the Authentication Server (SPEC 7.1): settings, keys and the VERIFY log.
//! Only storing and fetching; the key comparison is in the trait (constant time).

use super::writer::SqliteStore;
use crate::error::StoreFuture;
use crate::interface::AuthKeyStore;
use rusqlite::{params, Connection, OptionalExtension};

use super::base::db_error;
use crate::error::StoreResult;
use crate::types::{AuthKey, AuthKeySettings, SenderKey, SettingsSource, VerifyLogEntry, VerifySentEntry};

/// Settings of an address, or of a domain (a target without `@`); lower-cased by the caller.
pub(super) fn set_settings(conn: &Connection, target: &str, settings: Option<AuthKeySettings>) -> StoreResult<()> {
    let Some(settings) = settings else {
        conn.execute("DELETE FROM authkey_settings WHERE target = ?1", params![target]).map_err(db_error)?;
        return Ok(());
    };
    let (agi, avt) = crate::rules::check_authkey_settings(&settings)?;
    conn.execute(
        "INSERT INTO authkey_settings (target, agi_secs, avt_secs) VALUES (?1, ?2, ?3)
         ON CONFLICT(target) DO UPDATE SET agi_secs = excluded.agi_secs, avt_secs = excluded.avt_secs",
        params![target, agi, avt],
    )
    .map_err(db_error)?;
    Ok(())
}

fn settings_of(conn: &Connection, target: &str) -> StoreResult<Option<AuthKeySettings>> {
    conn.prepare_cached("SELECT agi_secs, avt_secs FROM authkey_settings WHERE target = ?1")
        .and_then(|mut stmt| {
            stmt.query_row(params![target], |r| Ok(crate::rules::stored_authkey_settings(r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(db_error)
}

/// The settings that hold for an address (`crate::rules::effective_authkey_settings`).
pub(super) fn settings(conn: &Connection, address: &str) -> StoreResult<Option<(AuthKeySettings, SettingsSource)>> {
    let own = settings_of(conn, address)?;
    let domain = match address.rsplit_once('@') {
        Some((_, domain)) if own.is_none() => settings_of(conn, domain)?,
        _ => None,
    };
    Ok(crate::rules::effective_authkey_settings(own, domain))
}

pub(super) fn add(conn: &Connection, key: &AuthKey) -> StoreResult<()> {
    conn.prepare_cached("INSERT INTO authkeys (address, key, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)")
        .and_then(|mut stmt| stmt.execute(params![key.address.to_lowercase(), key.key, key.created_at, key.expires_at]))
        .map_err(db_error)?;
    Ok(())
}

/// Keys with `expires_at > now`, newest first.
pub(super) fn unexpired(conn: &Connection, address: &str, now: i64) -> StoreResult<Vec<AuthKey>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT address, key, created_at, expires_at FROM authkeys WHERE address = ?1 AND expires_at > ?2
             ORDER BY created_at DESC, id DESC",
        )
        .map_err(db_error)?;
    let rows = stmt
        .query_map(params![address, now], |r| {
            Ok(AuthKey { address: r.get(0)?, key: r.get(1)?, created_at: r.get(2)?, expires_at: r.get(3)? })
        })
        .map_err(db_error)?;
    rows.collect::<Result<_, _>>().map_err(db_error)
}

pub(super) fn newest(conn: &Connection) -> StoreResult<Vec<(String, i64)>> {
    let mut stmt =
        conn.prepare_cached("SELECT address, MAX(created_at) FROM authkeys GROUP BY address").map_err(db_error)?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(db_error)?;
    rows.collect::<Result<_, _>>().map_err(db_error)
}

pub(super) fn delete_expired(conn: &Connection, now: i64) -> StoreResult<usize> {
    conn.prepare_cached("DELETE FROM authkeys WHERE expires_at <= ?1")
        .and_then(|mut stmt| stmt.execute(params![now]))
        .map_err(db_error)
}

pub(super) fn log_verify(conn: &Connection, entry: &VerifyLogEntry) -> StoreResult<()> {
    conn.prepare_cached("INSERT INTO verify_log (at, peer, address, result) VALUES (?1, ?2, ?3, ?4)")
        .and_then(|mut stmt| stmt.execute(params![entry.at, entry.peer, entry.address, entry.result]))
        .map_err(db_error)?;
    Ok(())
}

pub(super) fn verify_log(conn: &Connection, since: i64, limit: usize) -> StoreResult<Vec<VerifyLogEntry>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare_cached("SELECT at, peer, address, result FROM verify_log WHERE at >= ?1 ORDER BY id LIMIT ?2")
        .map_err(db_error)?;
    let rows = stmt
        .query_map(params![since, limit], |r| {
            Ok(VerifyLogEntry { at: r.get(0)?, peer: r.get(1)?, address: r.get(2)?, result: r.get(3)? })
        })
        .map_err(db_error)?;
    rows.collect::<Result<_, _>>().map_err(db_error)
}

/// SPEC 7.4: the newest key received for a local address replaces the one before.
pub(super) fn record_sender_key(conn: &Connection, key: &SenderKey) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO sender_keys (address, key, received_at, source) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(address) DO UPDATE SET key = excluded.key, received_at = excluded.received_at,
             source = excluded.source",
    )
    .and_then(|mut stmt| stmt.execute(params![key.address.to_lowercase(), key.key, key.received_at, key.source]))
    .map_err(db_error)?;
    Ok(())
}

pub(super) fn sender_key(conn: &Connection, address: &str) -> StoreResult<Option<SenderKey>> {
    conn.prepare_cached("SELECT address, key, received_at, source FROM sender_keys WHERE address = ?1")
        .and_then(|mut stmt| {
            stmt.query_row(params![address.to_lowercase()], |r| {
                Ok(SenderKey { address: r.get(0)?, key: r.get(1)?, received_at: r.get(2)?, source: r.get(3)? })
            })
            .optional()
        })
        .map_err(db_error)
}

/// SPEC 7.5: remembers a key seen valid; expired entries go at the same time.
pub(super) fn cache_key(
    conn: &Connection,
    address: &str,
    key_hash: &str,
    now: i64,
    expires_at: i64,
) -> StoreResult<()> {
    conn.prepare_cached("DELETE FROM authkey_cache WHERE expires_at <= ?1")
        .and_then(|mut stmt| stmt.execute(params![now]))
        .map_err(db_error)?;
    conn.prepare_cached(
        "INSERT INTO authkey_cache (address, key_hash, expires_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(address, key_hash) DO UPDATE SET expires_at = excluded.expires_at",
    )
    .and_then(|mut stmt| stmt.execute(params![address.to_lowercase(), key_hash, expires_at]))
    .map_err(db_error)?;
    Ok(())
}

pub(super) fn key_cached(conn: &Connection, address: &str, key_hash: &str, now: i64) -> StoreResult<bool> {
    conn.prepare_cached("SELECT 1 FROM authkey_cache WHERE address = ?1 AND key_hash = ?2 AND expires_at > ?3")
        .and_then(|mut stmt| stmt.exists(params![address.to_lowercase(), key_hash, now]))
        .map_err(db_error)
}

pub(super) fn log_verify_sent(conn: &Connection, entry: &VerifySentEntry) -> StoreResult<()> {
    conn.prepare_cached("INSERT INTO verify_sent (at, server, address, result) VALUES (?1, ?2, ?3, ?4)")
        .and_then(|mut stmt| stmt.execute(params![entry.at, entry.server, entry.address, entry.result]))
        .map_err(db_error)?;
    Ok(())
}

pub(super) fn verify_sent(conn: &Connection, since: i64, limit: usize) -> StoreResult<Vec<VerifySentEntry>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare_cached("SELECT at, server, address, result FROM verify_sent WHERE at >= ?1 ORDER BY id LIMIT ?2")
        .map_err(db_error)?;
    let rows = stmt
        .query_map(params![since, limit], |r| {
            Ok(VerifySentEntry { at: r.get(0)?, server: r.get(1)?, address: r.get(2)?, result: r.get(3)? })
        })
        .map_err(db_error)?;
    rows.collect::<Result<_, _>>().map_err(db_error)
}

impl AuthKeyStore for SqliteStore {
    fn set_authkey_settings(&self, target: &str, settings: Option<AuthKeySettings>) -> StoreFuture<'_, ()> {
        let target = target.to_lowercase();
        self.write(move |conn| set_settings(conn, &target, settings))
    }

    fn authkey_settings(&self, address: &str) -> StoreFuture<'_, Option<(AuthKeySettings, SettingsSource)>> {
        let address = address.to_lowercase();
        self.read(move |conn| settings(conn, &address))
    }

    fn add_authkey(&self, key: AuthKey) -> StoreFuture<'_, ()> {
        self.write(move |conn| add(conn, &key))
    }

    fn authkeys(&self, address: &str, now: i64) -> StoreFuture<'_, Vec<AuthKey>> {
        let address = address.to_lowercase();
        self.read(move |conn| unexpired(conn, &address, now))
    }

    fn newest_authkeys(&self) -> StoreFuture<'_, Vec<(String, i64)>> {
        self.read(newest)
    }

    fn delete_expired_authkeys(&self, now: i64) -> StoreFuture<'_, usize> {
        self.write(move |conn| delete_expired(conn, now))
    }

    fn log_verify(&self, entries: Vec<VerifyLogEntry>) -> StoreFuture<'_, ()> {
        self.write(move |conn| entries.iter().try_for_each(|entry| log_verify(conn, entry)))
    }

    fn verify_log(&self, since: i64, limit: usize) -> StoreFuture<'_, Vec<VerifyLogEntry>> {
        self.read(move |conn| verify_log(conn, since, limit))
    }

    fn record_sender_key(&self, key: SenderKey) -> StoreFuture<'_, ()> {
        self.write(move |conn| record_sender_key(conn, &key))
    }

    fn sender_key(&self, address: &str) -> StoreFuture<'_, Option<SenderKey>> {
        let address = address.to_string();
        self.read(move |conn| sender_key(conn, &address))
    }

    fn cache_verified_key(&self, address: &str, key_hash: &str, now: i64, expires_at: i64) -> StoreFuture<'_, ()> {
        let (address, key_hash) = (address.to_string(), key_hash.to_string());
        self.write(move |conn| cache_key(conn, &address, &key_hash, now, expires_at))
    }

    fn verified_key_cached(&self, address: &str, key_hash: &str, now: i64) -> StoreFuture<'_, bool> {
        let (address, key_hash) = (address.to_string(), key_hash.to_string());
        self.read(move |conn| key_cached(conn, &address, &key_hash, now))
    }

    fn log_verify_sent(&self, entry: VerifySentEntry) -> StoreFuture<'_, ()> {
        self.write(move |conn| log_verify_sent(conn, &entry))
    }

    fn verify_sent_log(&self, since: i64, limit: usize) -> StoreFuture<'_, Vec<VerifySentEntry>> {
        self.read(move |conn| verify_sent(conn, since, limit))
    }
}
