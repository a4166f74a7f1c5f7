//! The `vouchmail` binary: the server and the admin commands, all on one store.

mod admin;
mod odmr;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use vouchmail_server::config::Config;
use vouchmail_store::{SqliteStore, Store};

#[derive(Parser)]
#[command(name = "vouchmail", version, about = "A mail server that accepts only authenticated senders")]
struct Cli {
    /// Configuration file (TOML); without it the dev defaults apply.
    #[arg(long, short, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve,
    /// Local domains and their sender policy.
    #[command(subcommand)]
    Domain(admin::DomainCommand),
    /// Accounts.
    #[command(subcommand)]
    User(admin::UserCommand),
    /// Aliases: one address to several (local or remote) targets.
    #[command(subcommand)]
    Alias(admin::AliasCommand),
    /// Read mailboxes.
    #[command(subcommand)]
    Mailbox(admin::MailboxCommand),
    /// Inspect and manage the queue.
    #[command(subcommand)]
    Queue(admin::QueueCommand),
    /// On-Demand Mail Relay customer (RFC 2645).
    #[command(subcommand)]
    Odmr(odmr::OdmrCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("vouchmail: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("vouchmail: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Command::Odmr(command) = cli.command {
        return match runtime.block_on(odmr::run(&config, command)) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("vouchmail: {e}");
                ExitCode::from(2)
            }
        };
    }
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve => serve(config).await,
            command => {
                let store = open_store(&config)?;
                let result = match command {
                    Command::Domain(c) => admin::domain(store.as_ref(), c).await,
                    Command::User(c) => admin::user(store.as_ref(), c, &config.auth.secrets_policy()).await,
                    Command::Alias(c) => admin::alias(store.as_ref(), c).await,
                    Command::Mailbox(c) => admin::mailbox(store.as_ref(), c).await,
                    Command::Queue(c) => admin::queue(Arc::clone(&store) as Arc<dyn Store>, c, &config).await,
                    Command::Serve | Command::Odmr(_) => unreachable!("handled above"),
                };
                store.shutdown().await;
                result
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vouchmail: {e}");
            ExitCode::FAILURE
        }
    }
}

fn open_store(config: &Config) -> Result<Arc<SqliteStore>, String> {
    let path = config.store_path();
    SqliteStore::open(&path).map(Arc::new).map_err(|e| format!("{}: {e}", path.display()))
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

async fn serve(config: Config) -> Result<(), String> {
    init_logging(&config);
    let store = open_store(&config)?;
    if let Some((address, password)) = vouchmail_server::bootstrap::bootstrap(&config, store.as_ref()).await? {
        // Shown once: only its hash is stored.
        println!("Created {address} with password {password}");
        println!("(shown only now; change it with: vouchmail user passwd {address} --password-stdin)");
    }
    let server = vouchmail_server::start(&config, Arc::clone(&store) as Arc<dyn Store>).await?;
    tracing::info!(hostname = %config.hostname, data = %config.data_dir.display(), "vouchmail is running");
    wait_for_signal().await;
    tracing::info!("shutting down: no new connections; letting sessions finish");
    let cut = server.shutdown().await;
    store.shutdown().await;
    tracing::info!(cut_sessions = cut, "stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
