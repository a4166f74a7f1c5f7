//! Meta values, the client networks accounts logged in from, and the leases and marks
//! every node shares, in SQLite.

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

    fn try_lease(&self, name: &str, holder: &str, now: i64, until: i64) -> StoreFuture<'_, bool> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.write(move |conn| {
            let taken = conn
                .prepare_cached(
                    "INSERT INTO node_leases (name, holder, until) VALUES (?1, ?2, ?4)
                     ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, until = excluded.until
                     WHERE node_leases.holder = excluded.holder OR node_leases.until < ?3",
                )
                .and_then(|mut stmt| stmt.execute(params![name, holder, now, until]))
                .map_err(db_error)?;
            Ok(taken == 1)
        })
    }

    fn count_leases(&self, prefix: &str, now: i64) -> StoreFuture<'_, u64> {
        let prefix = prefix.to_string();
        self.read(move |conn| {
            // substr, not LIKE: a name may hold `_` or `%`.
            conn.prepare_cached(
                "SELECT COUNT(*) FROM node_leases WHERE substr(name, 1, length(?1)) = ?1 AND until >= ?2",
            )
            .and_then(|mut stmt| stmt.query_row(params![prefix, now], |r| r.get::<_, i64>(0)))
            .map(|n| n.max(0) as u64)
            .map_err(db_error)
        })
    }

    fn release_lease(&self, name: &str, holder: &str) -> StoreFuture<'_, ()> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM node_leases WHERE name = ?1 AND holder = ?2")
                .and_then(|mut stmt| stmt.execute(params![name, holder]))
                .map_err(db_error)?;
            Ok(())
        })
    }

    fn mark_if_older(&self, name: &str, now: i64, not_after: i64) -> StoreFuture<'_, bool> {
        let name = name.to_string();
        self.write(move |conn| {
            let set = conn
                .prepare_cached(
                    "INSERT INTO node_marks (name, at) VALUES (?1, ?2)
                     ON CONFLICT(name) DO UPDATE SET at = excluded.at WHERE node_marks.at <= ?3",
                )
                .and_then(|mut stmt| stmt.execute(params![name, now, not_after]))
                .map_err(db_error)?;
            Ok(set == 1)
        })
    }

    fn add_events(&self, names: Vec<String>, at: i64, forget_before: i64) -> StoreFuture<'_, ()> {
        self.write(move |conn| {
            let mut insert =
                conn.prepare_cached("INSERT INTO node_events (name, at) VALUES (?1, ?2)").map_err(db_error)?;
            for name in &names {
                insert.execute(params![name, at]).map_err(db_error)?;
            }
            conn.prepare_cached("DELETE FROM node_events WHERE at < ?1")
                .and_then(|mut stmt| stmt.execute(params![forget_before]))
                .map_err(db_error)?;
            Ok(())
        })
    }

    fn count_events(&self, names: Vec<String>, since: i64) -> StoreFuture<'_, Vec<u64>> {
        self.read(move |conn| {
            let mut count = conn
                .prepare_cached("SELECT COUNT(*) FROM node_events WHERE name = ?1 AND at >= ?2")
                .map_err(db_error)?;
            names
                .iter()
                .map(|name| count.query_row(params![name, since], |r| r.get::<_, i64>(0)).map(|n| n.max(0) as u64))
                .collect::<Result<_, _>>()
                .map_err(db_error)
        })
    }

    /// One process writes a SQLite store: its own bells are the announcements.
    fn announce(&self, _topic: &str) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    fn announcements(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        None
    }
}
