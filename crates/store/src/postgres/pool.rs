//! The PostgreSQL store's handle: a pool of connections, made at connect after the
//! migrations have run.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use deadpool_postgres::{Connect, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config, Socket};

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
        let runtime = Handle::current();
        let manager = if target.tls {
            let connect = OnStoreRuntime { tls: tls::connector(options.ca_file.as_deref())?, runtime };
            Manager::from_connect(config, connect, manager_config)
        } else {
            Manager::from_connect(config, OnStoreRuntime { tls: tokio_postgres::NoTls, runtime }, manager_config)
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

/// Opens the pool's connections on the runtime the store was opened on, socket and driver
/// task alike, whichever runtime asks for one: a connection belongs to the pool, not to the
/// caller, and must outlive a caller's runtime (a server's session threads stop before the
/// store closes; a connection they had opened would die with them while the pool still
/// handed it out).
struct OnStoreRuntime<T> {
    tls: T,
    runtime: Handle,
}

type Connecting<'a> =
    Pin<Box<dyn Future<Output = Result<(Client, JoinHandle<()>), tokio_postgres::Error>> + Send + 'a>>;

impl<T> Connect for OnStoreRuntime<T>
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    fn connect(&self, pg_config: &Config) -> Connecting<'_> {
        let (tls, pg_config) = (self.tls.clone(), pg_config.clone());
        let connecting = self.runtime.spawn(open_connection(pg_config.clone(), tls.clone()));
        Box::pin(async move {
            match connecting.await {
                Ok(opened) => opened,
                // The store's runtime is shutting down (the process ends): this caller's
                // runtime is the one left.
                Err(_) => open_connection(pg_config, tls).await,
            }
        })
    }
}

/// Connects and starts the connection's driver on the current runtime.
async fn open_connection<T>(pg_config: Config, tls: T) -> Result<(Client, JoinHandle<()>), tokio_postgres::Error>
where
    T: MakeTlsConnect<Socket> + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let (client, connection) = pg_config.connect(tls).await?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection closed with an error");
        }
    });
    Ok((client, driver))
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
