//! DKIM signing keys in PostgreSQL (SPEC 13), with SQLite's semantics (`sqlite/dkim.rs`).

use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use super::base::db_error;
use super::pool::PostgresStore;
use super::rows::refused_with;
use crate::error::{StoreError, StoreFuture, StoreResult};
use crate::interface::DkimKeyStore;
use crate::types::DkimKey;

const COLUMNS: &str = "domain, selector, algorithm, private_key, public_key, active, created_at";

fn to_key(row: &Row) -> StoreResult<DkimKey> {
    Ok(DkimKey {
        domain: row.try_get(0).map_err(db_error)?,
        selector: row.try_get(1).map_err(db_error)?,
        algorithm: row.try_get(2).map_err(db_error)?,
        private_key: row.try_get(3).map_err(db_error)?,
        public_key: row.try_get(4).map_err(db_error)?,
        active: row.try_get(5).map_err(db_error)?,
        created_at: row.try_get(6).map_err(db_error)?,
    })
}

impl DkimKeyStore for PostgresStore {
    fn add_dkim_key(&self, key: DkimKey) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let domain = key.domain.to_ascii_lowercase();
            let conn = self.conn().await?;
            let known: bool = conn
                .query_one("SELECT EXISTS (SELECT 1 FROM domains WHERE name = $1)", &[&domain])
                .await
                .and_then(|r| r.try_get(0))
                .map_err(db_error)?;
            if !known {
                return Err(StoreError::NotFound(format!("domain {domain}")));
            }
            conn.execute(
                &format!("INSERT INTO dkim_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
                &[
                    &domain,
                    &key.selector,
                    &key.algorithm,
                    &key.private_key,
                    &key.public_key,
                    &key.active,
                    &key.created_at,
                ],
            )
            .await
            .map_err(|e| {
                if refused_with(&e, &SqlState::UNIQUE_VIOLATION) {
                    StoreError::Conflict(format!("{domain} has a DKIM selector {} already", key.selector))
                } else {
                    db_error(e)
                }
            })?;
            Ok(())
        })
    }

    fn list_dkim_keys(&self) -> StoreFuture<'_, Vec<DkimKey>> {
        Box::pin(async move {
            let conn = self.conn().await?;
            let rows = conn
                .query(&format!("SELECT {COLUMNS} FROM dkim_keys ORDER BY domain, created_at, selector"), &[])
                .await
                .map_err(db_error)?;
            rows.iter().map(to_key).collect()
        })
    }

    fn set_dkim_key_active(&self, domain: &str, selector: &str, active: bool) -> StoreFuture<'_, ()> {
        let (domain, selector) = (domain.to_ascii_lowercase(), selector.to_string());
        Box::pin(async move {
            let conn = self.conn().await?;
            let n = conn
                .execute(
                    "UPDATE dkim_keys SET active = $3 WHERE domain = $1 AND selector = $2",
                    &[&domain, &selector, &active],
                )
                .await
                .map_err(db_error)?;
            match n {
                0 => Err(StoreError::NotFound(format!("DKIM selector {selector} of {domain}"))),
                _ => Ok(()),
            }
        })
    }

    fn remove_dkim_key(&self, domain: &str, selector: &str) -> StoreFuture<'_, ()> {
        let (domain, selector) = (domain.to_ascii_lowercase(), selector.to_string());
        Box::pin(async move {
            let conn = self.conn().await?;
            let n = conn
                .execute("DELETE FROM dkim_keys WHERE domain = $1 AND selector = $2", &[&domain, &selector])
                .await
                .map_err(db_error)?;
            match n {
                0 => Err(StoreError::NotFound(format!("DKIM selector {selector} of {domain}"))),
                _ => Ok(()),
            }
        })
    }
}
