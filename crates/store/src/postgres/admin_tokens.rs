//! The admin API's bearer tokens in PostgreSQL (SPEC 12), with SQLite's semantics
//! (`sqlite/admin_tokens.rs`).

use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use super::base::db_error;
use super::pool::PostgresStore;
use super::rows::refused_with;
use crate::error::{StoreError, StoreFuture, StoreResult};
use crate::interface::AdminTokenStore;
use crate::types::AdminToken;

const COLUMNS: &str = "name, hash, created_at, revoked_at";

fn to_token(row: &Row) -> StoreResult<AdminToken> {
    Ok(AdminToken {
        name: row.try_get(0).map_err(db_error)?,
        hash: row.try_get(1).map_err(db_error)?,
        created_at: row.try_get(2).map_err(db_error)?,
        revoked_at: row.try_get(3).map_err(db_error)?,
    })
}

impl AdminTokenStore for PostgresStore {
    fn add_admin_token(&self, token: AdminToken) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let conn = self.conn().await?;
            conn.execute(
                &format!("INSERT INTO admin_tokens ({COLUMNS}) VALUES ($1, $2, $3, $4)"),
                &[&token.name, &token.hash, &token.created_at, &token.revoked_at],
            )
            .await
            .map_err(|e| {
                if refused_with(&e, &SqlState::UNIQUE_VIOLATION) {
                    StoreError::Conflict(format!("an admin token named {} exists already", token.name))
                } else {
                    db_error(e)
                }
            })?;
            Ok(())
        })
    }

    fn admin_tokens(&self) -> StoreFuture<'_, Vec<AdminToken>> {
        Box::pin(async move {
            let conn = self.conn().await?;
            let rows =
                conn.query(&format!("SELECT {COLUMNS} FROM admin_tokens ORDER BY id"), &[]).await.map_err(db_error)?;
            rows.iter().map(to_token).collect()
        })
    }

    fn admin_token_by_hash(&self, hash: &str) -> StoreFuture<'_, Option<AdminToken>> {
        let hash = hash.to_string();
        Box::pin(async move {
            let conn = self.conn().await?;
            let statement = conn
                .prepare_cached(&format!("SELECT {COLUMNS} FROM admin_tokens WHERE hash = $1"))
                .await
                .map_err(db_error)?;
            conn.query_opt(&statement, &[&hash]).await.map_err(db_error)?.as_ref().map(to_token).transpose()
        })
    }

    fn revoke_admin_token(&self, name: &str, at: i64) -> StoreFuture<'_, ()> {
        let name = name.to_string();
        Box::pin(async move {
            let conn = self.conn().await?;
            let n = conn
                .execute(
                    "UPDATE admin_tokens SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL",
                    &[&name, &at],
                )
                .await
                .map_err(db_error)?;
            match n {
                0 => Err(StoreError::NotFound(format!("admin token {name}"))),
                _ => Ok(()),
            }
        })
    }
}
