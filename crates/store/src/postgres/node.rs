//! Meta values, the client networks accounts logged in from, and the leases, marks and
//! events every node shares, in PostgreSQL: the semantics of `sqlite/node.rs`, statement
//! for statement.

use super::base::db_error;
use super::pool::PostgresStore;
use crate::error::StoreFuture;
use crate::interface::NodeStore;

impl NodeStore for PostgresStore {
    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.shutdown().await;
            Ok(())
        })
    }

    fn get_meta(&self, key: &str) -> StoreFuture<'_, Option<String>> {
        let key = key.to_string();
        Box::pin(async move {
            let conn = self.conn().await?;
            let row = conn.query_opt("SELECT value FROM meta WHERE key = $1", &[&key]).await.map_err(db_error)?;
            row.map(|r| r.try_get(0)).transpose().map_err(db_error)
        })
    }

    fn set_meta(&self, key: &str, value: &str) -> StoreFuture<'_, ()> {
        let (key, value) = (key.to_string(), value.to_string());
        Box::pin(async move {
            let conn = self.conn().await?;
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                &[&key, &value],
            )
            .await
            .map_err(db_error)?;
            Ok(())
        })
    }

    fn get_or_init_meta(&self, key: &str, value: &str) -> StoreFuture<'_, String> {
        let (key, value) = (key.to_string(), value.to_string());
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(db_error)?;
            // A concurrent first insert by another node makes this one wait for its
            // commit, then do nothing; the read after it (a new statement, a new snapshot
            // at READ COMMITTED) sees the value that won.
            tx.execute("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT(key) DO NOTHING", &[&key, &value])
                .await
                .map_err(db_error)?;
            let stored: String = tx
                .query_one("SELECT value FROM meta WHERE key = $1", &[&key])
                .await
                .and_then(|r| r.try_get(0))
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            Ok(stored)
        })
    }

    fn last_login_from(&self, account: &str, client: &str) -> StoreFuture<'_, Option<i64>> {
        let (account, client) = (account.to_lowercase(), client.to_string());
        Box::pin(async move {
            let conn = self.conn().await?;
            let statement = conn
                .prepare_cached("SELECT last_login FROM login_clients WHERE account = $1 AND client = $2")
                .await
                .map_err(db_error)?;
            let row = conn.query_opt(&statement, &[&account, &client]).await.map_err(db_error)?;
            row.map(|r| r.try_get(0)).transpose().map_err(db_error)
        })
    }

    fn remember_login(&self, account: &str, client: &str, at: i64, forget_before: i64) -> StoreFuture<'_, ()> {
        let (account, client) = (account.to_lowercase(), client.to_string());
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(db_error)?;
            // A later login moves the time on, an older report never moves it back (the
            // portable form of SQLite's MAX(a, b): an update only when newer).
            let remember = tx
                .prepare_cached(
                    "INSERT INTO login_clients (account, client, last_login) VALUES ($1, $2, $3)
                     ON CONFLICT(account, client) DO UPDATE SET last_login = excluded.last_login
                     WHERE excluded.last_login > login_clients.last_login",
                )
                .await
                .map_err(db_error)?;
            tx.execute(&remember, &[&account, &client, &at]).await.map_err(db_error)?;
            let forget =
                tx.prepare_cached("DELETE FROM login_clients WHERE last_login < $1").await.map_err(db_error)?;
            tx.execute(&forget, &[&forget_before]).await.map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            Ok(())
        })
    }

    fn try_lease(&self, name: &str, holder: &str, now: i64, until: i64) -> StoreFuture<'_, bool> {
        let (name, holder) = (name.to_string(), holder.to_string());
        Box::pin(async move {
            let conn = self.conn().await?;
            // One statement, so atomic across nodes: a concurrent taker waits for this
            // row's commit, then finds it held.
            let statement = conn
                .prepare_cached(
                    "INSERT INTO node_leases (name, holder, until) VALUES ($1, $2, $4)
                     ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, until = excluded.until
                     WHERE node_leases.holder = excluded.holder OR node_leases.until < $3",
                )
                .await
                .map_err(db_error)?;
            let taken = conn.execute(&statement, &[&name, &holder, &now, &until]).await.map_err(db_error)?;
            Ok(taken == 1)
        })
    }

    fn count_leases(&self, prefix: &str, now: i64) -> StoreFuture<'_, u64> {
        let prefix = prefix.to_string();
        Box::pin(async move {
            let conn = self.conn().await?;
            // substr, not LIKE: a name may hold `_` or `%`.
            let statement = conn
                .prepare_cached(
                    "SELECT COUNT(*) FROM node_leases WHERE substr(name, 1, length($1)) = $1 AND until >= $2",
                )
                .await
                .map_err(db_error)?;
            let count: i64 =
                conn.query_one(&statement, &[&prefix, &now]).await.and_then(|r| r.try_get(0)).map_err(db_error)?;
            Ok(count.max(0) as u64)
        })
    }

    fn release_lease(&self, name: &str, holder: &str) -> StoreFuture<'_, ()> {
        let (name, holder) = (name.to_string(), holder.to_string());
        Box::pin(async move {
            let conn = self.conn().await?;
            let statement = conn
                .prepare_cached("DELETE FROM node_leases WHERE name = $1 AND holder = $2")
                .await
                .map_err(db_error)?;
            conn.execute(&statement, &[&name, &holder]).await.map_err(db_error)?;
            Ok(())
        })
    }

    fn mark_if_older(&self, name: &str, now: i64, not_after: i64) -> StoreFuture<'_, bool> {
        let name = name.to_string();
        Box::pin(async move {
            let conn = self.conn().await?;
            let statement = conn
                .prepare_cached(
                    "INSERT INTO node_marks (name, at) VALUES ($1, $2)
                     ON CONFLICT(name) DO UPDATE SET at = excluded.at WHERE node_marks.at <= $3",
                )
                .await
                .map_err(db_error)?;
            let set = conn.execute(&statement, &[&name, &now, &not_after]).await.map_err(db_error)?;
            Ok(set == 1)
        })
    }

    fn add_events(&self, names: Vec<String>, at: i64, forget_before: i64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(db_error)?;
            let insert =
                tx.prepare_cached("INSERT INTO node_events (name, at) VALUES ($1, $2)").await.map_err(db_error)?;
            for name in &names {
                tx.execute(&insert, &[name, &at]).await.map_err(db_error)?;
            }
            let forget = tx.prepare_cached("DELETE FROM node_events WHERE at < $1").await.map_err(db_error)?;
            tx.execute(&forget, &[&forget_before]).await.map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            Ok(())
        })
    }

    fn count_events(&self, names: Vec<String>, since: i64) -> StoreFuture<'_, Vec<u64>> {
        Box::pin(async move {
            let conn = self.conn().await?;
            let count = conn
                .prepare_cached("SELECT COUNT(*) FROM node_events WHERE name = $1 AND at >= $2")
                .await
                .map_err(db_error)?;
            let mut counts = Vec::with_capacity(names.len());
            for name in &names {
                let n: i64 =
                    conn.query_one(&count, &[name, &since]).await.and_then(|r| r.try_get(0)).map_err(db_error)?;
                counts.push(n.max(0) as u64);
            }
            Ok(counts)
        })
    }

    fn announce(&self, topic: &str) -> StoreFuture<'_, ()> {
        let topic = topic.to_string();
        Box::pin(async move {
            let conn = self.conn().await?;
            conn.execute("SELECT pg_notify($1, $2)", &[&super::listen::CHANNEL, &topic]).await.map_err(db_error)?;
            Ok(())
        })
    }

    fn announcements(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        Some(self.announcements.subscribe())
    }
}
