//! Opening the store the config names: the admin commands never make a new empty one.

use crate::error::CliError;
use std::sync::Arc;

use vouchmail_server::config::{Config, StoreBackend};
use vouchmail_store::{PostgresStore, SqliteStore, Store};

/// The admin commands work on a store that exists: never a new empty one made by
/// accident in the working directory (SQLite), nor a schema made in a database nobody
/// set up for us (PostgreSQL: it must exist, and `init` or `serve` migrate it).
/// `config_file`: where the config came from (None: the dev defaults).
pub async fn open_existing_store(
    config: &Config,
    config_file: Option<&std::path::Path>,
) -> Result<Arc<dyn Store>, CliError> {
    if config.store.backend == StoreBackend::Sqlite && !config.store_path().exists() {
        let path = config.store_path();
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
    open_store(config).await
}

/// The store `[store]` names: SQLite in data_dir, or PostgreSQL at `url` (SPEC 11).
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, CliError> {
    match config.postgres_options()? {
        Some(options) => match PostgresStore::connect(options).await {
            Ok(store) => Ok(Arc::new(store)),
            Err(e) => Err(CliError::failed(format!("the PostgreSQL store (store.url): {e}"))),
        },
        None => {
            let path = config.store_path();
            SqliteStore::open(&path)
                .map(|s| Arc::new(s) as Arc<dyn Store>)
                .map_err(|e| CliError::failed(format!("{}: {e}", path.display())))
        }
    }
}

/// `vouchmail store ...`: the store itself.
#[derive(clap::Subcommand, Debug)]
pub enum StoreCommand {
    /// Copy this server's SQLite store (data_dir/vouchmail.db) into an empty PostgreSQL
    /// database, everything in one transaction, with a progress bar; then set
    /// `[store] backend = "postgres"` and `url` to serve from it (stop the server first).
    Migrate {
        /// postgres://user@host:port/database (add ?sslmode=require or verify-full for
        /// TLS); never a password: give it with --password-file.
        #[arg(long, value_name = "URL")]
        to: String,
        /// A file whose first line is the database password.
        #[arg(long, value_name = "FILE")]
        password_file: Option<std::path::PathBuf>,
        /// PEM CA certificates the database server's certificate is verified against,
        /// beside the system's roots.
        #[arg(long, value_name = "FILE")]
        ca_file: Option<std::path::PathBuf>,
    },
}

pub async fn store(config: &Config, command: StoreCommand) -> Result<(), CliError> {
    match command {
        StoreCommand::Migrate { to, password_file, ca_file } => {
            vouchmail_store::PostgresOptions::check_url(&to).map_err(|e| CliError::usage(format!("--to: {e}")))?;
            let source = config.store_path();
            if !source.exists() {
                return Err(CliError::failed(format!("no store at {} to copy", source.display())));
            }
            let options = vouchmail_server::config::postgres_options(&to, password_file.as_deref(), ca_file)
                .map_err(|e| CliError::failed(format!("--password-file: {e}")))?;
            let target = vouchmail_store::PostgresStore::connect(options)
                .await
                .map_err(|e| CliError::failed(format!("the PostgreSQL database: {e}")))?;
            let mut bar: Option<crate::progress::ProgressBar> = None;
            let copied = vouchmail_store::copy::sqlite_to_postgres(&source, &target, |p| {
                let bar = bar.get_or_insert_with(|| crate::progress::ProgressBar::new("copying", p.all_total));
                bar.set(p.all_copied, &format!("{} {}/{}", p.table, p.copied, p.total));
            })
            .await;
            target.shutdown().await;
            if let Some(bar) = bar.as_mut() {
                bar.finish();
            }
            let report = copied.map_err(|e| CliError::failed(format!("nothing copied: {e}")))?;
            let rows: u64 = report.iter().map(|(_, n)| n).sum();
            for (table, n) in report.iter().filter(|(_, n)| *n > 0) {
                println!("{table:<24} {n:>10}");
            }
            println!(
                "copied {rows} rows in {} tables from {}; serve from it with [store] backend = \"postgres\" and url",
                report.len(),
                source.display()
            );
            Ok(())
        }
    }
}
