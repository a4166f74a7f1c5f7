//! The `vouchmail` binary: the server and the admin commands, all on one store.

mod admin;
mod client;
mod demo;
mod error;
mod listing;
mod messenger;
mod odmr;
mod progress;
mod store;
mod tokens;

use crate::error::CliError;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use vouchmail_server::config::Config;
use vouchmail_store::Store;

#[derive(Parser)]
#[command(name = "vouchmail", version, about = "A mail server that accepts only authenticated senders")]
struct Cli {
    /// Configuration file (TOML). Without it: $VOUCHMAIL_CONFIG, then
    /// /etc/vouchmail/vouchmail.toml if it exists, else the dev defaults.
    #[arg(long, short, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (creates the store on first start).
    Serve,
    /// Create the store, the first domain and postmaster (printing its password) without
    /// starting the server.
    Init,
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
    /// Delivery notifications: the tracking records of local users (SPEC 8.3).
    #[command(subcommand)]
    Tracking(admin::TrackingCommand),
    /// AuthKeys of the Authentication Server (SPEC 7.1).
    #[command(subcommand)]
    Authkey(admin::AuthKeyCommand),
    /// DKIM signing keys of the local domains (SPEC 13).
    #[command(subcommand)]
    Dkim(admin::DkimCommand),
    /// The admin HTTP API (SPEC 12): its bearer tokens.
    #[command(subcommand)]
    Admin(tokens::AdminCommand),
    /// DMARC aggregate reports (RFC 7489 7.2) to the domains that ask for them.
    #[command(subcommand)]
    Dmarc(admin::DmarcCommand),
    /// Users' certificates for the Messenger CERT lookups (SPEC 8.1).
    #[command(subcommand)]
    Cert(messenger::CertCommand),
    /// The directory and its published IDs, the Entity Index (SPEC 8.4).
    #[command(subcommand)]
    Directory(messenger::DirectoryCommand),
    /// On-Demand Mail Relay customer (RFC 2645).
    #[command(subcommand)]
    Odmr(odmr::OdmrCommand),
    /// The user's client of the Messenger federation (SPEC 10): keygen, pubcert, cert,
    /// send, fetch, receipt, track, book.
    Client(client::ClientArgs),
    /// The store itself: `migrate --to postgres://...` copies the SQLite store into
    /// PostgreSQL (SPEC 11).
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Three federated servers on 127.0.0.2-4 with an in-process DNS, walking the seed's
    /// story step by step (SPEC 10). Exit 0 only if every step did what it should.
    Demo {
        /// Keep the demo's directory (profiles, stores, fetched mail) and print its path.
        #[arg(long)]
        keep: bool,
    },
}

/// Where the config comes from when `--config` is absent, as a system service expects.
const SYSTEM_CONFIG: &str = "/etc/vouchmail/vouchmail.toml";

fn config_path(given: Option<PathBuf>) -> Option<PathBuf> {
    given
        .or_else(|| std::env::var_os("VOUCHMAIL_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from))
        .or_else(|| Some(PathBuf::from(SYSTEM_CONFIG)).filter(|p| p.exists()))
}

/// Exit status (README "Exit status"): 0 done, 1 refused or failed (one line on standard
/// error says why), 2 usage: the command line or the configuration is not understood
/// (clap exits 2 for the command line by itself).
/// Blocks of 128 KiB and more get pages of their own, given back to the system when
/// freed. Without a fixed threshold glibc raises it to the largest block freed (up to
/// 32 MiB), so the 19 MiB of each Argon2id verification then stay in the verifying
/// thread's arena: measured, about 16 MB of RSS per IMAP login that never came back
/// (`bench/imap.sh`); with it, 75 KiB per idle IMAP connection (debug build).
///
/// Fixing that threshold also fixes the trim threshold at its 128 KiB default, so a heap
/// gave back its free top after every IMAP batch (up to 1 MiB of messages) and grew again
/// for the next: a fifth of an IMAP SEARCH's time went to `sysmalloc` and page faults.
/// Up to 8 MiB of free top is kept; the trim after a burst (below) still gives it back.
fn keep_large_blocks_returnable() {
    // SAFETY: mallopt only changes a tunable of the allocator, before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 * 1024 * 1024);
    }
}

/// Issue 25: the memory a burst of connections used goes back to the system once it is
/// over. glibc keeps what is freed in its arenas (one per thread, up to 8 per core) and
/// gives back only the free top of each heap, which a block still in use above it holds
/// down: measured, the RSS stayed at its peak after 1,000 connections closed. The
/// listeners say when a burst is over (`limits::on_quiet`); a thread of the lowest
/// priority then trims every arena (`malloc_trim`, which also returns whole free pages
/// inside the heaps), a second later so that the closed sessions' tasks have ended, and
/// once for every closing of the burst that asked meanwhile.
fn give_back_after_bursts() {
    static WAKE: std::sync::OnceLock<std::sync::mpsc::SyncSender<()>> = std::sync::OnceLock::new();
    let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
    if WAKE.set(wake).is_err() {
        return;
    }
    let trimmer = std::thread::Builder::new().name("malloc-trim".into()).spawn(move || {
        // SAFETY: setpriority only lowers this thread's own scheduling priority (Linux
        // keeps it per thread); a failure leaves it as it was.
        unsafe {
            libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
        }
        while woken.recv().is_ok() {
            std::thread::sleep(std::time::Duration::from_secs(1));
            while woken.try_recv().is_ok() {}
            // SAFETY: malloc_trim only returns free memory of the allocator to the system;
            // it takes each arena's lock as malloc does.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    });
    if trimmer.is_ok() {
        vouchmail_server::listen::limits::on_quiet(|| {
            if let Some(wake) = WAKE.get() {
                // Full: a trim is due already, which covers this one.
                let _ = wake.try_send(());
            }
        });
    }
}

fn main() -> ExitCode {
    // Issue 9: everything we create (store, spool, keys, lock) is ours alone.
    // SAFETY: umask only sets the process's file mode mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
    keep_large_blocks_returnable();
    let cli = Cli::parse();
    // The client and the demo need no server configuration.
    if matches!(cli.command, Command::Client(_) | Command::Demo { .. }) {
        let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => {
                eprintln!("vouchmail: cannot start the runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
        return match cli.command {
            Command::Client(args) => runtime.block_on(client::run(args)),
            Command::Demo { keep } => runtime.block_on(demo::run(keep)),
            _ => ExitCode::FAILURE,
        };
    }
    let config_file = config_path(cli.config);
    let config = match Config::load(config_file.as_deref()) {
        Ok(config) if tracing_subscriber::EnvFilter::try_new(&config.log).is_err() => {
            eprintln!(
                "vouchmail: log: '{}' is not a tracing filter (e.g. \"info\" or \"vouchmail_server=debug\")",
                config.log
            );
            return ExitCode::from(2);
        }
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
    // Issue 9: what `serve` would refuse in its configuration is refused before `serve` or
    // `init` creates anything (and prints the postmaster password).
    if matches!(cli.command, Command::Serve | Command::Init) {
        if let Err(e) = runtime.block_on(async { vouchmail_server::check_config(&config) }) {
            eprintln!("vouchmail: {e}");
            return ExitCode::from(2);
        }
    }
    if let Command::Odmr(command) = cli.command {
        return match runtime.block_on(odmr::run(&config, config_file.as_deref(), command)) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("vouchmail: {e}");
                e.exit_code()
            }
        };
    }
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve => serve(config, config_file).await,
            Command::Init => init(config).await,
            Command::Store(c) => store::store(&config, c).await,
            command => {
                let store = store::open_existing_store(&config, config_file.as_deref()).await?;
                let result = match command {
                    Command::Domain(c) => admin::domain(store.as_ref(), c, &config).await,
                    Command::Dkim(c) => admin::dkim(store.as_ref(), c).await,
                    Command::Dmarc(c) => admin::dmarc(store.as_ref(), c, &config).await,
                    Command::Admin(c) => tokens::admin(store.as_ref(), c).await,
                    Command::User(c) => admin::user(store.as_ref(), c, &config.auth.secrets_policy()).await,
                    Command::Alias(c) => admin::alias(store.as_ref(), c).await,
                    Command::Mailbox(c) => admin::mailbox(store.as_ref(), c).await,
                    Command::Tracking(c) => admin::tracking(store.as_ref(), c).await,
                    Command::Queue(c) => admin::queue(Arc::clone(&store), c, &config).await,
                    Command::Authkey(c) => admin::authkey(Arc::clone(&store), c, &config).await,
                    Command::Cert(c) => messenger::cert(store.as_ref(), c).await,
                    Command::Directory(c) => messenger::directory(store.as_ref(), c).await,
                    Command::Serve
                    | Command::Init
                    | Command::Store(_)
                    | Command::Odmr(_)
                    | Command::Client(_)
                    | Command::Demo { .. } => {
                        unreachable!("handled above")
                    }
                };
                let _ = store.close().await;
                result
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vouchmail: {e}");
            e.exit_code()
        }
    }
}

/// Replaces the log filter of the running process (SIGHUP): the new `log`, or an error
/// naming why it does not parse.
type SetLogFilter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

fn init_logging(config: &Config) -> SetLogFilter {
    // RUST_LOG, when set, wins at start and over reloads.
    let from_env = std::env::var("RUST_LOG").is_ok();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(quiet_rustls(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter_reloading();
    let handle = builder.reload_handle();
    builder.init();
    Box::new(move |log: &str| {
        if from_env {
            return Err("RUST_LOG is set and takes precedence".into());
        }
        let filter = tracing_subscriber::EnvFilter::try_new(log).map_err(|e| format!("'{log}': {e}"))?;
        handle.reload(quiet_rustls(filter)).map_err(|e| e.to_string())
    })
}

fn quiet_rustls(mut filter: tracing_subscriber::EnvFilter) -> tracing_subscriber::EnvFilter {
    // rustls warns about every client that sends an IP address as SNI (msmtp, fetchmail,
    // Python do): noise at info level, shown from debug on (or when rustls is named).
    let debugging = filter.max_level_hint().is_some_and(|level| level >= tracing::level_filters::LevelFilter::DEBUG);
    if !debugging && !filter.to_string().contains("rustls") {
        if let Ok(quiet) = "rustls=error".parse() {
            filter = filter.add_directive(quiet);
        }
    }
    filter
}

async fn init(config: Config) -> Result<(), CliError> {
    for warning in config.warnings() {
        eprintln!("vouchmail: warning: {warning}");
    }
    let existed =
        config.store.backend == vouchmail_server::config::StoreBackend::Postgres || config.store_path().exists();
    let store = store::open_store(&config).await?;
    let created = bootstrap(&config, store.as_ref()).await?;
    let _ = store.close().await;
    let place = match &config.store.url {
        Some(url) if config.store.backend == vouchmail_server::config::StoreBackend::Postgres => {
            format!("the PostgreSQL store at {url}")
        }
        _ => format!("the store at {}", config.store_path().display()),
    };
    if existed && !created {
        println!("{place} exists already; nothing to do");
    } else {
        println!("created {place}");
    }
    Ok(())
}

/// First start: the domain, postmaster and DKIM keys. True when something was created.
async fn bootstrap(config: &Config, store: &dyn Store) -> Result<bool, CliError> {
    let made = vouchmail_server::rules::bootstrap::bootstrap(config, store).await?;
    if let Some((address, password)) = &made.postmaster {
        // Shown once: only its hash is stored.
        println!("Created {address} with password {password}");
        println!("(shown only now; change it with: vouchmail user passwd {address} --password-stdin)");
    }
    if let Some(domain) = &made.dkim_domain {
        println!("Publish these DNS records for {domain} (again at any time: vouchmail domain dns {domain}):");
        for record in admin::records_to_publish(store, config, domain).await? {
            println!("{record}");
        }
    }
    Ok(made.postmaster.is_some() || made.dkim_domain.is_some())
}

/// One server per store: an exclusive lock on `<data_dir>/vouchmail.lock`, holding our PID,
/// kept while the process lives. The admin commands do not take it.
fn lock_data_dir(config: &Config) -> Result<std::fs::File, CliError> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::io::AsRawFd;
    let path = config.data_dir.join("vouchmail.lock");
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| CliError::failed(format!("cannot create {}: {e}", config.data_dir.display())))?;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| CliError::failed(format!("cannot open {}: {e}", path.display())))?;
    // SAFETY: flock on a descriptor we own; it only reports success or failure.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        return Err(CliError::failed(format!(
            "another vouchmail serve (pid {}) is using {}; stop it first",
            pid.trim(),
            config.data_dir.display()
        )));
    }
    let written = file.set_len(0).and_then(|_| file.rewind()).and_then(|_| writeln!(file, "{}", std::process::id()));
    written.map_err(|e| CliError::failed(format!("cannot write {}: {e}", path.display())))?;
    Ok(file)
}

/// Issue 9: a store readable by other local users exposes every mailbox and the password
/// hashes; say so at start (new stores are made 700/600).
fn warn_if_exposed(config: &Config) {
    use std::os::unix::fs::PermissionsExt;
    let path = config.store_path();
    for item in [config.data_dir.clone(), path.clone(), PathBuf::from(format!("{}-wal", path.display()))] {
        if let Ok(meta) = std::fs::metadata(&item) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(path = %item.display(), mode = format!("{mode:o}"), "the store is readable by other users; chmod go-rwx it");
            }
        }
    }
}

async fn serve(config: Config, config_file: Option<PathBuf>) -> Result<(), CliError> {
    let set_log_filter = init_logging(&config);
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let signals = StopSignals::install();
    give_back_after_bursts();
    let _lock = lock_data_dir(&config)?;
    warn_if_exposed(&config);
    let store = store::open_store(&config).await?;
    // Issue 9: the listeners, TLS and routes come up first; only then does a first start
    // create the domain and print the postmaster password, so a start that fails on the
    // configuration does not use the password up unseen.
    let mut server = vouchmail_server::start(&config, Arc::clone(&store)).await?;
    bootstrap(&config, store.as_ref()).await?;
    tracing::info!(hostname = %config.hostname, data = %config.data_dir.display(), "vouchmail is running");
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let stop = signals.wait();
    tokio::pin!(stop);
    let mut log = config.log.clone();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(()) = async { hangups.as_mut()?.recv().await } => {
                reload(&mut server, config_file.as_deref(), &mut log, &set_log_filter);
            }
        }
    }
    tracing::info!("shutting down: no new connections; letting sessions finish");
    let cut = server.shutdown().await;
    let _ = store.close().await;
    tracing::info!(cut_sessions = cut, "stopped");
    Ok(())
}

/// SIGHUP (SPEC 12): the configuration file read again and what can change applied; one
/// log line says what changed and what needs a restart. A file that does not load changes
/// nothing.
fn reload(
    server: &mut vouchmail_server::RunningServer,
    config_file: Option<&std::path::Path>,
    log: &mut String,
    set_log_filter: &SetLogFilter,
) {
    let new = match Config::load(config_file) {
        Ok(new) => new,
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: the configuration does not load; nothing changed");
            return;
        }
    };
    let mut done = server.reload(&new);
    if new.log != *log {
        match set_log_filter(&new.log) {
            Ok(()) => {
                done.applied.push(format!("log filter {}", new.log));
                log.clone_from(&new.log);
            }
            Err(e) => done.failed.push(format!("log: {e}")),
        }
    }
    let list = |items: &[String]| if items.is_empty() { "nothing".to_string() } else { items.join(", ") };
    tracing::info!(
        "configuration reloaded on SIGHUP: applied: {}; needs a restart: {}; failed: {}",
        list(&done.applied),
        list(&done.needs_restart),
        list(&done.failed)
    );
}

/// SIGTERM and SIGINT, listened for from the start of `serve`, so that a signal during
/// start-up stops the server cleanly instead of killing it.
struct StopSignals(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl StopSignals {
    fn install() -> StopSignals {
        use tokio::signal::unix::{signal, SignalKind};
        StopSignals(signal(SignalKind::terminate()).ok().zip(signal(SignalKind::interrupt()).ok()))
    }

    async fn wait(self) {
        match self.0 {
            Some((mut term, mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Issue 9: `--help` explains every command, positional argument and flag.
    #[test]
    fn every_command_and_argument_has_a_help_line() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>, seen: &mut usize) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") || arg.is_hide_set() {
                    continue;
                }
                *seen += 1;
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() && sub.get_long_about().is_none() {
                    missing.push(path.clone());
                }
                walk(sub, &path, missing, seen);
            }
        }
        let mut command = Cli::command();
        command.build();
        let (mut missing, mut seen) = (Vec::new(), 0);
        walk(&command, "vouchmail", &mut missing, &mut seen);
        assert!(missing.is_empty(), "no help line for: {missing:#?}");
        assert!(seen > 100, "only {seen} arguments seen: the walk missed the subcommands");
        command.debug_assert();
    }
}
