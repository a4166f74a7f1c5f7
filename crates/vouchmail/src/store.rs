//! Opening the store the config names: the admin commands never make a new empty one.

use crate::error::CliError;
use std::sync::Arc;

use vouchmail_server::config::{Config, StoreBackend};
use vouchmail_store::SqliteStore;

/// The admin commands work on a store that exists: never a new empty one made by
/// accident in the working directory.
/// `config_file`: where the config came from (None: the dev defaults).
pub fn open_existing_store(
    config: &Config,
    config_file: Option<&std::path::Path>,
) -> Result<Arc<SqliteStore>, CliError> {
    sqlite_only(config)?;
    let path = config.store_path();
    if !path.exists() {
        return Err(CliError::failed(match config_file {
            None => format!(
                "no store at {}; pass --config FILE (or set VOUCHMAIL_CONFIG), or create one with vouchmail init",
                path.display()
            ),
            Some(file) => format!(
                "no store at {} (the data_dir of {}); create it with vouchmail init, or check data_dir",
                path.display(),
                file.display()
            ),
        }));
    }
    open_store(config)
}

pub fn open_store(config: &Config) -> Result<Arc<SqliteStore>, CliError> {
    sqlite_only(config)?;
    let path = config.store_path();
    SqliteStore::open(&path).map(Arc::new).map_err(|e| CliError::failed(format!("{}: {e}", path.display())))
}

/// Issue 21 is bringing the PostgreSQL store in steps; until it implements every concern,
/// a config that asks for it is refused rather than served from SQLite unnoticed.
fn sqlite_only(config: &Config) -> Result<(), CliError> {
    match config.store.backend {
        StoreBackend::Sqlite => Ok(()),
        StoreBackend::Postgres => {
            Err(CliError::failed("store.backend = \"postgres\": the PostgreSQL store cannot serve yet; use \"sqlite\""))
        }
    }
}
