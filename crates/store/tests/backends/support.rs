//! The backends under test, and the macro that runs a test on each.

use std::path::PathBuf;

use vouchmail_store::{AuthKeyStore, FederationStore, NodeStore, PostgresOptions, PostgresStore, SqliteStore, Store};

/// One store under test, with what it needs to be opened again.
pub enum Backend {
    Sqlite { store: SqliteStore, path: PathBuf, _dir: tempfile::TempDir },
    Postgres { store: PostgresStore, url: String },
}

impl Backend {
    /// A new SQLite store in a temporary folder.
    pub fn sqlite() -> Backend {
        let dir = tempfile::tempdir().expect("temporary folder");
        let path = dir.path().join("store.db");
        let store = SqliteStore::open(&path).expect("SQLite store");
        Backend::Sqlite { store, path, _dir: dir }
    }

    /// A PostgreSQL store on a new database of the process's cluster; None (with a note)
    /// when PostgreSQL is not installed.
    pub async fn postgres(test: &str) -> Option<Backend> {
        let url = vouchmail_testkit::pg::database_for(test)?;
        let store = PostgresStore::connect(PostgresOptions::new(url.clone())).await.expect("PostgreSQL store");
        Some(Backend::Postgres { store, url })
    }

    /// The whole store, every concern: what the server holds (`Arc<dyn Store>`), for a test
    /// that also reopens the backend (`itself:`).
    pub fn store(&self) -> &dyn Store {
        match self {
            Backend::Sqlite { store, .. } => store,
            Backend::Postgres { store, .. } => store,
        }
    }

    /// The store as its node-state concern.
    pub fn node(&self) -> &dyn NodeStore {
        match self {
            Backend::Sqlite { store, .. } => store,
            Backend::Postgres { store, .. } => store,
        }
    }

    /// The store as its AuthKey concern.
    pub fn authkey(&self) -> &dyn AuthKeyStore {
        match self {
            Backend::Sqlite { store, .. } => store,
            Backend::Postgres { store, .. } => store,
        }
    }

    /// The store as its federation concern.
    pub fn federation(&self) -> &dyn FederationStore {
        match self {
            Backend::Sqlite { store, .. } => store,
            Backend::Postgres { store, .. } => store,
        }
    }

    /// A second handle on the same data, as another node (or process) has.
    pub async fn another_node(&self) -> Box<dyn NodeStore> {
        match self {
            Backend::Sqlite { path, .. } => Box::new(SqliteStore::open(path).expect("SQLite store opens twice")),
            Backend::Postgres { url, .. } => Box::new(
                PostgresStore::connect(PostgresOptions::new(url.clone())).await.expect("PostgreSQL connects twice"),
            ),
        }
    }

    /// The SQLite store itself, for the generic tests (`store:` and `two_nodes:` below).
    pub fn sqlite_store(&self) -> &SqliteStore {
        match self {
            Backend::Sqlite { store, .. } => store,
            Backend::Postgres { .. } => panic!("not SQLite"),
        }
    }

    /// The PostgreSQL store itself, for the generic tests.
    pub fn postgres_store(&self) -> &PostgresStore {
        match self {
            Backend::Postgres { store, .. } => store,
            Backend::Sqlite { .. } => panic!("not PostgreSQL"),
        }
    }

    /// A second SQLite handle on the same file.
    pub fn another_sqlite(&self) -> SqliteStore {
        match self {
            Backend::Sqlite { path, .. } => SqliteStore::open(path).expect("SQLite store opens twice"),
            Backend::Postgres { .. } => panic!("not SQLite"),
        }
    }

    /// A second PostgreSQL store on the same database: another node.
    pub async fn another_postgres(&self) -> PostgresStore {
        match self {
            Backend::Postgres { url, .. } => {
                PostgresStore::connect(PostgresOptions::new(url.clone())).await.expect("PostgreSQL connects twice")
            }
            Backend::Sqlite { .. } => panic!("not PostgreSQL"),
        }
    }

    /// The backend itself, for tests that restart it or open it twice.
    pub fn itself(&mut self) -> &mut Backend {
        self
    }

    /// Closes the store and opens it again on the same data, as a restarted server does.
    pub async fn reopen(&mut self) {
        match self {
            Backend::Sqlite { store, path, .. } => {
                store.shutdown().await;
                *store = SqliteStore::open(path).expect("SQLite store reopens");
            }
            Backend::Postgres { store, url } => {
                store.shutdown().await;
                *store =
                    PostgresStore::connect(PostgresOptions::new(url.clone())).await.expect("PostgreSQL reconnects");
            }
        }
    }
}

/// `on_every_backend!(VIEW: test, test, ...)` makes, for each `test` (an `async fn` in the
/// calling file), a module of that name with a `sqlite` and a `postgres` test that call
/// it with `backend.VIEW()`: the concern's trait object (`node`, `authkey`, `federation`),
/// the whole store (`store()`, from inside a test given the backend), or the backend itself
/// (`itself`) for a test that reopens it.
///
/// `on_every_backend!(store: test, ...)` calls each `test` with the concrete store
/// (`&SqliteStore`, `&PostgresStore`): a test generic over the concerns it needs, such
/// as `async fn t<S: AccountStore + QueueStore + MailboxStore + ?Sized>(store: &S)`,
/// uses several at once without the whole `Store`. `two_nodes:` passes two handles on
/// the same data, as two nodes have: `t(a: &S, b: &S)`.
macro_rules! on_every_backend {
    (store: $($test:ident),+ $(,)?) => {
        $(
            mod $test {
                #[tokio::test]
                async fn sqlite() {
                    let backend = crate::support::Backend::sqlite();
                    super::$test(backend.sqlite_store()).await;
                }

                #[tokio::test]
                async fn postgres() {
                    let Some(backend) = crate::support::Backend::postgres(module_path!()).await else { return };
                    super::$test(backend.postgres_store()).await;
                }
            }
        )+
    };
    (two_nodes: $($test:ident),+ $(,)?) => {
        $(
            mod $test {
                #[tokio::test]
                async fn sqlite() {
                    let backend = crate::support::Backend::sqlite();
                    let other = backend.another_sqlite();
                    super::$test(backend.sqlite_store(), &other).await;
                }

                #[tokio::test]
                async fn postgres() {
                    let Some(backend) = crate::support::Backend::postgres(module_path!()).await else { return };
                    let other = backend.another_postgres().await;
                    super::$test(backend.postgres_store(), &other).await;
                }
            }
        )+
    };
    ($view:ident: $($test:ident),+ $(,)?) => {
        $(
            mod $test {
                // `mut` for the views that take the backend itself.
                #[tokio::test]
                #[allow(unused_mut)]
                async fn sqlite() {
                    let mut backend = crate::support::Backend::sqlite();
                    super::$test(backend.$view()).await;
                }

                #[tokio::test]
                #[allow(unused_mut)]
                async fn postgres() {
                    let Some(mut backend) = crate::support::Backend::postgres(module_path!()).await else {
                        return;
                    };
                    super::$test(backend.$view()).await;
                }
            }
        )+
    };
}
