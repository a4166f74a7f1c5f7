//! DKIM signing keys in SQLite (SPEC 13).

use rusqlite::{params, Row};

use super::base::*;
use super::writer::SqliteStore;
use crate::error::{StoreError, StoreFuture};
use crate::interface::DkimKeyStore;
use crate::types::DkimKey;

const COLUMNS: &str = "domain, selector, algorithm, private_key, public_key, active, created_at";

fn row_to_key(row: &Row<'_>) -> rusqlite::Result<DkimKey> {
    Ok(DkimKey {
        domain: row.get(0)?,
        selector: row.get(1)?,
        algorithm: row.get(2)?,
        private_key: row.get(3)?,
        public_key: row.get(4)?,
        active: row.get(5)?,
        created_at: row.get(6)?,
    })
}

impl DkimKeyStore for SqliteStore {
    fn add_dkim_key(&self, key: DkimKey) -> StoreFuture<'_, ()> {
        self.write(move |conn| {
            let domain = key.domain.to_ascii_lowercase();
            let known: bool = conn
                .query_row("SELECT EXISTS (SELECT 1 FROM domains WHERE name = ?1)", params![domain], |r| r.get(0))
                .map_err(db_error)?;
            if !known {
                return Err(StoreError::NotFound(format!("domain {domain}")));
            }
            conn.execute(
                &format!("INSERT INTO dkim_keys ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                params![
                    domain,
                    key.selector,
                    key.algorithm,
                    key.private_key,
                    key.public_key,
                    key.active,
                    key.created_at
                ],
            )
            .map_err(|e| {
                if is_constraint_violation(&e) {
                    StoreError::Conflict(format!("{domain} has a DKIM selector {} already", key.selector))
                } else {
                    db_error(e)
                }
            })?;
            Ok(())
        })
    }

    fn list_dkim_keys(&self) -> StoreFuture<'_, Vec<DkimKey>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare(&format!("SELECT {COLUMNS} FROM dkim_keys ORDER BY domain, created_at, selector"))
                .map_err(db_error)?;
            let rows = stmt.query_map([], row_to_key).map_err(db_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
        })
    }

    fn set_dkim_key_active(&self, domain: &str, selector: &str, active: bool) -> StoreFuture<'_, ()> {
        let (domain, selector) = (domain.to_ascii_lowercase(), selector.to_string());
        self.write(move |conn| {
            let n = conn
                .execute(
                    "UPDATE dkim_keys SET active = ?3 WHERE domain = ?1 AND selector = ?2",
                    params![domain, selector, active],
                )
                .map_err(db_error)?;
            match n {
                0 => Err(StoreError::NotFound(format!("DKIM selector {selector} of {domain}"))),
                _ => Ok(()),
            }
        })
    }

    fn remove_dkim_key(&self, domain: &str, selector: &str) -> StoreFuture<'_, ()> {
        let (domain, selector) = (domain.to_ascii_lowercase(), selector.to_string());
        self.write(move |conn| {
            let n = conn
                .execute("DELETE FROM dkim_keys WHERE domain = ?1 AND selector = ?2", params![domain, selector])
                .map_err(db_error)?;
            match n {
                0 => Err(StoreError::NotFound(format!("DKIM selector {selector} of {domain}"))),
                _ => Ok(()),
            }
        })
    }
}
