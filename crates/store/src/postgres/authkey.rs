//! AuthKeys in PostgreSQL (SPEC 7): the Authentication Server's settings, keys and VERIFY
//! log, the sender's received keys, the recipient's verification cache and the VERIFYs it
//! sent: the semantics of `sqlite/authkey.rs`, statement for statement, with the rules
//! (which settings may be stored, which hold for an address) in `crate::rules`.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::base::{db_error, sql_limit};
use super::pool::PostgresStore;
use crate::error::{StoreFuture, StoreResult};
use crate::interface::AuthKeyStore;
use crate::types::{AuthKey, AuthKeySettings, SenderKey, SettingsSource, VerifyLogEntry, VerifySentEntry};

/// The settings stored for one target (an address, or a domain).
async fn settings_of(client: &impl GenericClient, target: &str) -> StoreResult<Option<AuthKeySettings>> {
    let statement = client
        .prepare_cached("SELECT agi_secs, avt_secs FROM authkey_settings WHERE target = $1")
        .await
        .map_err(db_error)?;
    let row = client.query_opt(&statement, &[&target]).await.map_err(db_error)?;
    row.map(|r| Ok(crate::rules::stored_authkey_settings(r.try_get(0)?, r.try_get(1)?))).transpose().map_err(db_error)
}

fn row_to_key(r: &Row) -> Result<AuthKey, tokio_postgres::Error> {
    Ok(AuthKey { address: r.try_get(0)?, key: r.try_get(1)?, created_at: r.try_get(2)?, expires_at: r.try_get(3)? })
}

impl AuthKeyStore for PostgresStore {
    fn set_authkey_settings(&self, target: &str, settings: Option<AuthKeySettings>) -> StoreFuture<'_, ()> {
        let target = target.to_lowercase();
        Box::pin(async move {
            let conn = self.conn().await?;
            let Some(settings) = settings else {
                let statement =
                    conn.prepare_cached("DELETE FROM authkey_settings WHERE target = $1").await.map_err(db_error)?;
                conn.execute(&statement, &[&target]).await.map_err(db_error)?;
                return Ok(());
            };
            let (agi, avt) = crate::rules::check_authkey_settings(&settings)?;
            let statement = conn
                .prepare_cached(
                    "INSERT INTO authkey_settings (target, agi_secs, avt_secs) VALUES ($1, $2, $3)
                     ON CONFLICT(target) DO UPDATE SET agi_secs = excluded.agi_secs, avt_secs = excluded.avt_secs",
                )
                .await
                .map_err(db_error)?;
            conn.execute(&statement, &[&target, &agi, &avt]).await.map_err(db_error)?;
            Ok(())
        })
    }

    fn authkey_settings(&self, address: &str) -> StoreFuture<'_, Option<(AuthKeySettings, SettingsSource)>> {
        let address = address.to_lowercase();
        Box::pin(async move {
            let conn = self.conn().await?;
            let own = settings_of(&conn, &address).await?;
            let domain = match address.rsplit_once('@') {
                Some((_, domain)) if own.is_none() => settings_of(&conn, domain).await?,
                _ => None,
            };
            Ok(crate::rules::effective_authkey_settings(own, domain))
        })
    }

    fn add_authkey(&self, key: AuthKey) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let conn = self.conn().await?;
            let statement = conn
                .prepare_cached("INSERT INTO authkeys (address, key, created_at, expires_at) VALUES ($1, $2, $3, $4)")
                .await
                .map_err(db_error)?;
            conn.execute(&statement, &[&key.address.to_lowercase(), &key.key, &key.created_at, &key.expires_at])
                .await
                .map_err(db_error)?;
            Ok(())
        })
    }

    fn authkeys(&self, address: &str, now: i64) -> StoreFuture<'_, Vec<AuthKey>> {
        let address = address.to_lowercase();
        Box::pin(async move {
            let conn = self.conn().await?;
            // Unexpired: `expires_at` is the first second a key is no longer valid.
            let statement = conn
                .prepare_cached(
                    "SELECT address, key, created_at, expires_at FROM authkeys WHERE address = $1 AND expires_at > $2
                     ORDER BY created_at DESC, id DESC",
                )
                .await
                .map_err(db_error)?;
            let rows = conn.query(&statement, &[&address, &now]).await.map_err(db_error)?;
            rows.iter().map(row_to_key).collect::<Result<_, _>>().map_err(db_error)
        })
    }

    fn newest_authkeys(&self) -> StoreFuture<'_, Vec<(String, i64)>> {
        Box::pin(async move {
            let conn = self.conn().await?;
            let statement = conn
                .prepare_cached("SELECT address, MAX(created_at) FROM authkeys GROUP BY address")
                .await
                .map_err(db_error)?;
            let rows = conn.query(&statement, &[]).await.map_err(db_error)?;
            rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect::<Result<_, _>>().map_err(db_error)
        })
    }

    fn delete_expired_authkeys(&self, now: i64) -> StoreFuture<'_, usize> {
        Box::pin(async move {
            let conn = self.conn().await?;
            let statement =
                conn.prepare_cached("DELETE FROM authkeys WHERE expires_at <= $1").await.map_err(db_error)?;
            let n = conn.execute(&statement, &[&now]).await.map_err(db_error)?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    fn log_verify(&self, entries: Vec<VerifyLogEntry>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(db_error)?;
            let statement = tx
                .prepare_cached("INSERT INTO verify_log (at, peer, address, result) VALUES ($1, $2, $3, $4)")
                .await
                .map_err(db_error)?;
            for entry in &entries {
                tx.execute(&statement, &[&entry.at, &entry.peer, &entry.address, &entry.result])
                    .await
                    .map_err(db_error)?;
            }
            tx.commit().await.map_err(db_error)
        })
    }

    fn verify_log(&self, since: i64, limit: usize) -> StoreFuture<'_, Vec<VerifyLogEntry>> {
        Box::pin(async move {
            let conn = self.conn().await?;
            let statement = conn
                .prepare_cached("SELECT at, peer, address, result FROM verify_log WHERE at >= $1 ORDER BY id LIMIT $2")
                .await
                .map_err(db_error)?;
            let rows = conn.query(&statement, &[&since, &sql_limit(limit)]).await.map_err(db_error)?;
            let entry = |r: &Row| -> Result<VerifyLogEntry, tokio_postgres::Error> {
                Ok(VerifyLogEntry {
                    at: r.try_get(0)?,
                    peer: r.try_get(1)?,
                    address: r.try_get(2)?,
                    result: r.try_get(3)?,
                })
            };
            rows.iter().map(entry).collect::<Result<_, _>>().map_err(db_error)
        })
    }

    fn record_sender_key(&self, key: SenderKey) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let conn = self.conn().await?;
            // SPEC 7.4: the newest key received for a local address replaces the one before.
            let statement = conn
                .prepare_cached(
                    "INSERT INTO sender_keys (address, key, received_at, source) VALUES ($1, $2, $3, $4)
                     ON CONFLICT(address) DO UPDATE SET key = excluded.key, received_at = excluded.received_at,
                         source = excluded.source",
                )
                .await
                .map_err(db_error)?;
            conn.execute(&statement, &[&key.address.to_lowercase(), &key.key, &key.received_at, &key.source])
                .await
                .map_err(db_error)?;
            Ok(())
        })
    }

    fn sender_key(&self, address: &str) -> StoreFuture<'_, Option<SenderKey>> {
        let address = address.to_lowercase();
        Box::pin(async move {
            let conn = self.conn().await?;
            let statement = conn
                .prepare_cached("SELECT address, key, received_at, source FROM sender_keys WHERE address = $1")
                .await
                .map_err(db_error)?;
            let row = conn.query_opt(&statement, &[&address]).await.map_err(db_error)?;
            row.map(|r| {
                Ok(SenderKey {
                    address: r.try_get(0)?,
                    key: r.try_get(1)?,
                    received_at: r.try_get(2)?,
                    source: r.try_get(3)?,
                })
            })
            .transpose()
            .map_err(db_error)
        })
    }

    fn cache_verified_key(&self, address: &str, key_hash: &str, now: i64, expires_at: i64) -> StoreFuture<'_, ()> {
        let (address, key_hash) = (address.to_lowercase(), key_hash.to_string());
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(db_error)?;
            // SPEC 7.5: remembers a key seen valid; expired entries go at the same time.
            let forget =
                tx.prepare_cached("DELETE FROM authkey_cache WHERE expires_at <= $1").await.map_err(db_error)?;
            tx.execute(&forget, &[&now]).await.map_err(db_error)?;
            let remember = tx
                .prepare_cached(
                    "INSERT INTO authkey_cache (address, key_hash, expires_at) VALUES ($1, $2, $3)
                     ON CONFLICT(address, key_hash) DO UPDATE SET expires_at = excluded.expires_at",
                )
                .await
                .map_err(db_error)?;
            tx.execute(&remember, &[&address, &key_hash, &expires_at]).await.map_err(db_error)?;
            tx.commit().await.map_err(db_error)
        })
    }

    fn verified_key_cached(&self, address: &str, key_hash: &str, now: i64) -> StoreFuture<'_, bool> {
        let (address, key_hash) = (address.to_lowercase(), key_hash.to_string());
        Box::pin(async move {
            let conn = self.conn().await?;
            let statement = conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM authkey_cache WHERE address = $1 AND key_hash = $2 AND expires_at > $3)",
                )
                .await
                .map_err(db_error)?;
            conn.query_one(&statement, &[&address, &key_hash, &now]).await.and_then(|r| r.try_get(0)).map_err(db_error)
        })
    }

    fn log_verify_sent(&self, entry: VerifySentEntry) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let conn = self.conn().await?;
            let statement = conn
                .prepare_cached("INSERT INTO verify_sent (at, server, address, result) VALUES ($1, $2, $3, $4)")
                .await
                .map_err(db_error)?;
            conn.execute(&statement, &[&entry.at, &entry.server, &entry.address, &entry.result])
                .await
                .map_err(db_error)?;
            Ok(())
        })
    }

    fn verify_sent_log(&self, since: i64, limit: usize) -> StoreFuture<'_, Vec<VerifySentEntry>> {
        Box::pin(async move {
            let conn = self.conn().await?;
            let statement = conn
                .prepare_cached(
                    "SELECT at, server, address, result FROM verify_sent WHERE at >= $1 ORDER BY id LIMIT $2",
                )
                .await
                .map_err(db_error)?;
            let rows = conn.query(&statement, &[&since, &sql_limit(limit)]).await.map_err(db_error)?;
            let entry = |r: &Row| -> Result<VerifySentEntry, tokio_postgres::Error> {
                Ok(VerifySentEntry {
                    at: r.try_get(0)?,
                    server: r.try_get(1)?,
                    address: r.try_get(2)?,
                    result: r.try_get(3)?,
                })
            };
            rows.iter().map(entry).collect::<Result<_, _>>().map_err(db_error)
        })
    }
}
