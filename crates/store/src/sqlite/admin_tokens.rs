//! The admin API's bearer tokens in SQLite (SPEC 12), by hash.

use rusqlite::{params, OptionalExtension, Row};

use super::base::*;
use super::writer::SqliteStore;
use crate::error::{StoreError, StoreFuture};
use crate::interface::AdminTokenStore;
use crate::types::AdminToken;

const COLUMNS: &str = "name, hash, created_at, revoked_at";

fn row_to_token(row: &Row<'_>) -> rusqlite::Result<AdminToken> {
    Ok(AdminToken { name: row.get(0)?, hash: row.get(1)?, created_at: row.get(2)?, revoked_at: row.get(3)? })
}

impl AdminTokenStore for SqliteStore {
    fn add_admin_token(&self, token: AdminToken) -> StoreFuture<'_, ()> {
        self.write(move |conn| {
            conn.execute(
                &format!("INSERT INTO admin_tokens ({COLUMNS}) VALUES (?1, ?2, ?3, ?4)"),
                params![token.name, token.hash, token.created_at, token.revoked_at],
            )
            .map_err(|e| {
                if is_constraint_violation(&e) {
                    StoreError::Conflict(format!("an admin token named {} exists already", token.name))
                } else {
                    db_error(e)
                }
            })?;
            Ok(())
        })
    }

    fn admin_tokens(&self) -> StoreFuture<'_, Vec<AdminToken>> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare(&format!("SELECT {COLUMNS} FROM admin_tokens ORDER BY id")).map_err(db_error)?;
            let rows = stmt.query_map([], row_to_token).map_err(db_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
        })
    }

    fn admin_token_by_hash(&self, hash: &str) -> StoreFuture<'_, Option<AdminToken>> {
        let hash = hash.to_string();
        self.read(move |conn| {
            conn.prepare_cached(&format!("SELECT {COLUMNS} FROM admin_tokens WHERE hash = ?1"))
                .and_then(|mut stmt| stmt.query_row(params![hash], row_to_token).optional())
                .map_err(db_error)
        })
    }

    fn revoke_admin_token(&self, name: &str, at: i64) -> StoreFuture<'_, ()> {
        let name = name.to_string();
        self.write(move |conn| {
            let n = conn
                .execute(
                    "UPDATE admin_tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
                    params![name, at],
                )
                .map_err(db_error)?;
            match n {
                0 => Err(StoreError::NotFound(format!("admin token {name}"))),
                _ => Ok(()),
            }
        })
    }
}
