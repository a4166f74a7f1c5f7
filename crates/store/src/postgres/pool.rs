//! The PostgreSQL store's handle: a pool of connections, made at connect after the
//! migrations have run.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};

use super::base::{db_error, pool_error};
use super::commit::Committer;
use super::listen::Announcements;
use super::options::{parse_url, PostgresOptions};
use super::schema::migrate;
use super::tls;
use crate::error::{StoreError, StoreResult};
use crate::recipient_cache::RecipientCache;

/// How long a caller waits for a free connection before the store counts as unavailable
/// (a 451 to an SMTP client, which retries).
const WAIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `close` waits for the work already running to finish.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// The PostgreSQL implementation of the store's traits.
pub struct PostgresStore {
    pool: Pool,
    /// Group commit of received messages (`commit`).
    pub(super) committer: Committer,
    /// What other nodes announce (LISTEN/NOTIFY, SPEC 11).
    pub(super) announcements: Announcements,
    /// RCPT's lookups, kept for a moment (issue 25; the rule is in `recipient_cache`).
    pub(super) recipients: RecipientCache,
}

impl PostgresStore {
    /// Connects, checks the server keeps the durability promise, and brings the schema up
    /// to date (once, however many nodes connect at the same time).
    pub async fn connect(options: PostgresOptions) -> StoreResult<PostgresStore> {
        let mut target = parse_url(&options.url)?;
        if let Some(password) = &options.password {
            target.config.password(password.as_bytes());
        }
        let config = target.config.clone();
        let manager_config = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        let manager = if target.tls {
            Manager::from_config(config, tls::connector(options.ca_file.as_deref())?, manager_config)
        } else {
            Manager::from_config(config, tokio_postgres::NoTls, manager_config)
        };
        let connect_timeout = target.config.get_connect_timeout().copied();
        let pool = Pool::builder(manager)
            .max_size(options.max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(WAIT_TIMEOUT))
            .create_timeout(connect_timeout)
            .recycle_timeout(connect_timeout)
            .build()
            .map_err(|e| StoreError::Unavailable(format!("cannot make the connection pool: {e}")))?;
        let announcements = Announcements::start(&target, options.ca_file.as_deref())?;
        let store = PostgresStore {
            committer: Committer::start(pool.clone()),
            pool,
            announcements,
            recipients: RecipientCache::default(),
        };
        let mut conn = store.conn().await?;
        warn_unless_durable(&conn).await?;
        migrate(&mut conn).await?;
        Ok(store)
    }

    /// A connection from the pool (back to it when dropped).
    pub(crate) async fn conn(&self) -> StoreResult<Object> {
        self.pool.get().await.map_err(pool_error)
    }

    /// Refuses further work and waits (at most [`CLOSE_TIMEOUT`]) until the work already
    /// holding a connection has finished: a write already sent is committed or not, and
    /// its caller told which.
    pub async fn shutdown(&self) {
        self.pool.close();
        let deadline = tokio::time::Instant::now() + CLOSE_TIMEOUT;
        while self.pool.status().size > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The store's promise (a commit is on disk when it returns) needs the server's fsync on:
/// with it off, a crash of the database's machine loses commits. The server's setting,
/// not ours to change, so it is logged loudly rather than refused.
async fn warn_unless_durable(conn: &Object) -> StoreResult<()> {
    for setting in ["fsync", "synchronous_commit"] {
        let row = conn.query_one(&format!("SHOW {setting}"), &[]).await.map_err(db_error)?;
        let value: String = row.try_get(0).map_err(db_error)?;
        if value != "on" {
            tracing::error!(setting, value, "PostgreSQL is not durable: a commit may be lost in a crash (SPEC 11)");
        }
    }
    Ok(())
}
