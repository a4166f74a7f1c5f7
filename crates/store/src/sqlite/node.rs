//! Meta values and the client networks accounts logged in from, in SQLite.

use rusqlite::{params, OptionalExtension};

use super::base::*;
use super::writer::SqliteStore;
use crate::error::StoreFuture;
use crate::interface::NodeStore;

impl NodeStore for SqliteStore {
    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.shutdown().await;
            Ok(())
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
}
