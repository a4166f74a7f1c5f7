//! The SQLite store's handle: one writer thread that group-commits every write (one
//! fsync per batch, each job in its own savepoint), and a small pool of read connections
//! on tokio's blocking threads.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::base::{in_savepoint, run_cached};
use super::schema::{create_private, migrate, open_connection};
use crate::error::{StoreError, StoreFuture, StoreResult};
use crate::recipient_cache::RecipientCache;

/// Jobs committed together at most.
const MAX_BATCH: usize = 512;

/// Read connections kept open between reads. About as many as are read with at once: the
/// outbound engine's connections each read their next message (20 by default), and a
/// connection opened per read past the pool showed in profiles (issue 25, docs/profiles.md).
/// Each keeps its own page cache, so the pool is not unbounded.
const READERS_KEPT: usize = 32;

type Completion = Box<dyn FnOnce(StoreResult<()>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> Completion + Send>;

/// The SQLite implementation of [`crate::Store`].
pub struct SqliteStore {
    writer: Mutex<Option<mpsc::Sender<Job>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: PathBuf,
    /// RCPT's lookups, kept for a moment (the rule is in `recipient_cache`).
    pub(super) recipients: Arc<RecipientCache>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and runs pending migrations.
    pub fn open(path: &Path) -> StoreResult<SqliteStore> {
        create_private(path)?;
        let mut conn = open_connection(path)?;
        migrate(&mut conn)?;
        let (sender, receiver) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(conn, receiver))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            writer: Mutex::new(Some(sender)),
            writer_thread: Mutex::new(Some(thread)),
            readers: Arc::new(Mutex::new(Vec::new())),
            path: path.to_path_buf(),
            recipients: Arc::default(),
        })
    }

    /// Stops the writer after the jobs already sent to it are committed, and waits for
    /// it. Blocks: from async code use [`SqliteStore::shutdown`].
    pub fn close(&self) {
        if let Some(thread) = self.stop_writer() {
            let _ = thread.join();
        }
    }

    /// [`SqliteStore::close`] for async callers: the wait runs on a blocking thread, not
    /// on the runtime's workers.
    pub async fn shutdown(&self) {
        if let Some(thread) = self.stop_writer() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    /// Closes the writer's channel (it commits what it has, then ends) and hands back its
    /// thread.
    fn stop_writer(&self) -> Option<std::thread::JoinHandle<()>> {
        if let Ok(mut writer) = self.writer.lock() {
            writer.take();
        }
        self.writer_thread.lock().ok().and_then(|mut t| t.take())
    }

    /// Runs `f` in the next group commit and returns its result once it is durable.
    pub(super) fn write<T, F>(&self, f: F) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.write_then(f, None)
    }

    /// [`SqliteStore::write`] of a change to domains, accounts, aliases or held domains:
    /// once its transaction has ended, the recipient cache forgets what it kept (even if the
    /// caller has stopped waiting).
    pub(super) fn write_accounts<T, F>(&self, f: F) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.write_then(f, Some(Arc::clone(&self.recipients)))
    }

    fn write_then<T, F>(&self, f: F, changes: Option<Arc<RecipientCache>>) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, response) = oneshot::channel::<StoreResult<T>>();
        let job: Job = Box::new(move |conn: &Connection| {
            let result = in_savepoint(conn, f);
            Box::new(move |commit: StoreResult<()>| {
                if let Some(cache) = changes {
                    cache.changed();
                }
                let _ = reply.send(commit.and(result));
            })
        });
        let sent = self.writer.lock().ok().and_then(|w| w.as_ref().map(|w| w.send(job).is_ok())).unwrap_or(false);
        Box::pin(async move {
            if !sent {
                return Err(StoreError::Unavailable("the store is closed".into()));
            }
            response.await.map_err(|_| StoreError::Unavailable("the write could not be committed".into()))?
        })
    }

    /// Runs `f` on a pooled read connection, off the async threads.
    pub(super) fn read<T, F>(&self, f: F) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let pool = Arc::clone(&self.readers);
        let path = self.path.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let pooled = pool.lock().ok().and_then(|mut p| p.pop());
                let conn = match pooled {
                    Some(conn) => conn,
                    None => open_connection(&path)?,
                };
                let result = f(&conn);
                if let Ok(mut p) = pool.lock() {
                    if p.len() < READERS_KEPT {
                        p.push(conn);
                    }
                }
                result
            })
            .await
            .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
        })
    }
}

impl Drop for SqliteStore {
    /// Does not wait for the writer: a store dropped inside an async runtime must not block
    /// a worker. The writer still commits what it was sent (those callers were waiting
    /// for it, so none has been told a write is durable before it is).
    fn drop(&mut self) {
        drop(self.stop_writer());
    }
}

/// The writer thread: take every job waiting, run them in one transaction, commit once.
fn writer_loop(conn: Connection, jobs: mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = run_cached(&conn, "BEGIN IMMEDIATE") {
            // Dropping the jobs closes their reply channels: each caller reports the store
            // unavailable, and an SMTP client gets a 451 and retries.
            tracing::error!(error = %e, writes = batch.len(), "store: cannot begin a transaction");
            drop(batch);
            continue;
        }
        let completions: Vec<Completion> = batch.into_iter().map(|job| job(&conn)).collect();
        let commit = run_cached(&conn, "COMMIT");
        if commit.is_err() {
            let _ = run_cached(&conn, "ROLLBACK");
        }
        for done in completions {
            done(commit.clone());
        }
    }
}
