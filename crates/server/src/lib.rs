//! vouchmail's network side: tokio listeners around the protocol state machines of
//! `vouchmail-proto`, carrying out their events against the store.
//!
//! A test (or the binary) starts a whole server in a few lines:
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn vouchmail_store::Store>) {
//! let mut config = vouchmail_server::config::Config::default();
//! config.listeners.mx = vec!["127.0.0.1:0".parse().unwrap()];
//! let server = vouchmail_server::start(&config, store).await.unwrap();
//! println!("MX on {}", server.mx_addrs[0]);
//! server.shutdown().await;
//! # }
//! ```

pub mod auth;
pub mod config;
pub mod federation;
pub mod jobs;
pub mod listen;
pub mod net;
pub mod ops;
pub mod rules;
pub mod support;

use crate::support::error::{Error, ErrorKind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use vouchmail_proto::pop3::session::SessionConfig as Pop3SessionConfig;
use vouchmail_proto::sasl::SiteSecret;
use vouchmail_proto::smtp::address::Address;
use vouchmail_proto::smtp::session::{Service, SessionConfig};
use vouchmail_store::Store;

use auth::limits::AuthLimiter;
use config::Config;
use listen::limits::ConnectionLimiter;
use listen::smtp::SmtpContext;
use net::dns;
use net::tls::Tls;
use support::session_threads::SessionThreads;
use support::tasks::TaskTracker;

/// A started server; drop it or call [`RunningServer::shutdown`] to stop.
pub struct RunningServer {
    pub mx_addrs: Vec<SocketAddr>,
    pub submission_addrs: Vec<SocketAddr>,
    pub submissions_addrs: Vec<SocketAddr>,
    pub odmr_addrs: Vec<SocketAddr>,
    pub pop3_addrs: Vec<SocketAddr>,
    pub pop3s_addrs: Vec<SocketAddr>,
    /// IMAP with STARTTLS and over implicit TLS (SPEC 9).
    pub imap_addrs: Vec<SocketAddr>,
    pub imaps_addrs: Vec<SocketAddr>,
    /// VERIFY (SPEC 7.2): TCP and UDP on each of these.
    pub authkey_addrs: Vec<SocketAddr>,
    /// The Messenger port (SPEC 8).
    pub messenger_addrs: Vec<SocketAddr>,
    /// Admin HTTP (SPEC 12).
    pub admin_addrs: Vec<SocketAddr>,
    /// The one registry of the server's metrics (`/metrics`).
    pub metrics: Arc<support::metrics::Metrics>,
    /// What [`RunningServer::reload`] changes in place.
    live: LiveParts,
    shutdown: watch::Sender<bool>,
    listeners: Vec<JoinHandle<()>>,
    sessions: TaskTracker,
    grace: Duration,
    /// Keeps the shared resolver (and its cache) alive while the server runs.
    _dns: Arc<dns::Dns>,
    /// Where the listeners accept and the sessions run; dropped last, which stops them.
    session_threads: SessionThreads,
}

impl RunningServer {
    /// Stops accepting, lets sessions end (idle ones get 421 at once; ones inside a
    /// transaction may finish) for the grace period, then returns how many were cut off.
    /// A cut-off session never got its 250, so its client still has the message. When it
    /// returns the session threads have ended: nothing of a session runs on.
    pub async fn shutdown(mut self) -> usize {
        let _ = self.shutdown.send(true);
        for listener in &self.listeners {
            listener.abort();
        }
        let remaining = self.sessions.wait(self.grace).await;
        if remaining > 0 {
            tracing::warn!(remaining, "sessions still running after the grace period; closing them");
        }
        self.session_threads.stop().await;
        remaining
    }

    pub fn open_sessions(&self) -> usize {
        self.sessions.running()
    }

    /// Applies what can change while sessions run (SIGHUP, SPEC 12): the TLS certificate
    /// files (read again, for the next handshake), connection limits, and outbound routes;
    /// names what changed and what waits for a restart. Sessions open go on unchanged. A
    /// part that fails (a certificate that does not load) keeps its old value and is named.
    pub fn reload(&mut self, new: &Config) -> Reloaded {
        let mut done = Reloaded::default();
        let old = self.live.config.clone();
        // The listeners' and the Messenger's setups read the same files: one failure is
        // named once.
        match self.live.tls.iter().try_for_each(|tls| tls.reload(new)) {
            Ok(()) => done.applied.push("tls certificate files read again".into()),
            Err(e) => done.failed.push(format!("tls: {e}")),
        }
        let limits = |config: &Config, role: LimitRole| match role {
            LimitRole::Smtp => (config.smtp.max_connections, config.smtp.max_connections_per_ip),
            LimitRole::Messenger => (config.messenger.max_connections, config.messenger.max_connections_per_ip),
            LimitRole::Pop3 => (config.pop3.max_connections, config.pop3.max_connections_per_ip),
            LimitRole::Imap => (config.imap.max_connections, config.imap.max_connections_per_ip),
            LimitRole::Admin => (config.admin.max_connections, config.admin.max_connections_per_ip),
        };
        for (role, limiter) in &self.live.limiters {
            let (total, per_ip) = limits(new, *role);
            if limits(&old, *role) != (total, per_ip) {
                limiter.set_limits(total, per_ip);
                let name = format!("{role:?} connection limits ({total} total, {per_ip} per IP)").to_lowercase();
                if !done.applied.contains(&name) {
                    done.applied.push(name);
                }
            }
        }
        // What the running delivery reads for each message: where mail goes and how.
        let routing = |o: &config::Outbound| {
            (o.relay.clone(), o.routes.clone(), o.port, o.tls.clone(), o.helo_name.clone(), o.prefer_ipv6)
        };
        if routing(&old.outbound) != routing(&new.outbound) {
            match &self.live.routes {
                Some(routes) => match routes.reload(new) {
                    Ok(()) => done.applied.push("outbound routes".into()),
                    Err(e) => done.failed.push(format!("outbound routes: {e}")),
                },
                None => done.needs_restart.push("outbound (delivery was off at start)".into()),
            }
        }
        // Everything else needs a restart: compare with what was just applied taken in.
        let mut applied = old.clone();
        applied.tls = new.tls.clone();
        applied.log = new.log.clone();
        (applied.smtp.max_connections, applied.smtp.max_connections_per_ip) = limits(new, LimitRole::Smtp);
        (applied.messenger.max_connections, applied.messenger.max_connections_per_ip) =
            limits(new, LimitRole::Messenger);
        (applied.pop3.max_connections, applied.pop3.max_connections_per_ip) = limits(new, LimitRole::Pop3);
        (applied.imap.max_connections, applied.imap.max_connections_per_ip) = limits(new, LimitRole::Imap);
        (applied.admin.max_connections, applied.admin.max_connections_per_ip) = limits(new, LimitRole::Admin);
        if self.live.routes.is_some() {
            let o = &mut applied.outbound;
            (o.relay, o.routes, o.port, o.tls, o.helo_name, o.prefer_ipv6) = routing(&new.outbound);
        }
        done.needs_restart.extend(changed_sections(&applied, new));
        self.live.config = applied;
        done
    }
}

/// Which connection limits a limiter has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LimitRole {
    Smtp,
    Messenger,
    Pop3,
    Imap,
    Admin,
}

/// The parts of a running server a reload changes in place, and the configuration they
/// were last set from.
struct LiveParts {
    config: Config,
    tls: Vec<Tls>,
    limiters: Vec<(LimitRole, Arc<ConnectionLimiter>)>,
    routes: Option<jobs::outbound::Routes>,
}

/// What a reload did (one log line: `vouchmail serve` writes it).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub applied: Vec<String>,
    pub needs_restart: Vec<String>,
    pub failed: Vec<String>,
}

/// The sections of the configuration that differ (their names as in the file).
fn changed_sections(a: &Config, b: &Config) -> Vec<String> {
    let mut changed = Vec::new();
    let mut check = |name: &str, same: bool| {
        if !same {
            changed.push(name.to_string());
        }
    };
    check("hostname", a.hostname == b.hostname);
    check("data_dir", a.data_dir == b.data_dir);
    check("listeners", a.listeners == b.listeners);
    check("smtp", a.smtp == b.smtp);
    check("auth", a.auth == b.auth);
    check("pop3", a.pop3 == b.pop3);
    check("imap", a.imap == b.imap);
    check("bootstrap", a.bootstrap == b.bootstrap);
    check("shutdown_grace_secs", a.shutdown_grace_secs == b.shutdown_grace_secs);
    check("outbound", a.outbound == b.outbound);
    check("odmr", a.odmr == b.odmr);
    check("dns", a.dns == b.dns);
    check("authkey", a.authkey == b.authkey);
    check("messenger", a.messenger == b.messenger);
    check("store", a.store == b.store);
    check("dmarc", a.dmarc == b.dmarc);
    check("admin", a.admin == b.admin);
    // A section this list does not name yet still counts.
    if changed.is_empty() && a != b {
        changed.push("other settings".into());
    }
    changed
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for listener in &self.listeners {
            listener.abort();
        }
    }
}

/// The checks of [`start`] that need only the configuration (issue 9): `vouchmail serve`
/// and `init` run them before the store is made, so that a first start that would fail on
/// its configuration does not print the postmaster password and lose it.
pub fn check_config(config: &Config) -> Result<(), Error> {
    // Unset, a self-signed certificate is made at start: nothing to check here.
    if config.tls.cert.is_some() || config.tls.key.is_some() {
        Tls::from_config(config)?;
    }
    postmaster_of(config)?;
    let dns = dns::Dns::for_config(config)?;
    net::route::Router::new(&config.outbound, &config.hostname, dns)?;
    net::client_tls::Connectors::new(config.outbound.ca_file.as_deref()).map_err(|e| e.about("outbound.ca_file"))?;
    net::federation::FederationClient::from_config(config)?;
    for (n, entry) in config.odmr.fetch.iter().enumerate() {
        jobs::odmr_fetch::FetchOptions::from_schedule(config, entry)
            .map_err(|e| Error::new(ErrorKind::Config, format!("odmr.fetch[{n}]: {e}")))?;
    }
    Ok(())
}

fn postmaster_of(config: &Config) -> Result<Address, Error> {
    let domain =
        if config.bootstrap.domain.is_empty() { config.hostname.as_str() } else { config.bootstrap.domain.as_str() };
    Address::parse(&format!("postmaster@{domain}"))
        .map_err(|e| Error::new(ErrorKind::Config, format!("bootstrap.domain: postmaster address: {e}")))
}

/// Binds every configured listener and starts serving.
pub async fn start(config: &Config, store: Arc<dyn Store>) -> Result<RunningServer, Error> {
    let (shutdown, shutdown_rx) = watch::channel(false);
    let sessions = TaskTracker::default();
    let postmaster = postmaster_of(config)?;
    let mut server = RunningServer {
        mx_addrs: Vec::new(),
        submission_addrs: Vec::new(),
        submissions_addrs: Vec::new(),
        odmr_addrs: Vec::new(),
        pop3_addrs: Vec::new(),
        pop3s_addrs: Vec::new(),
        imap_addrs: Vec::new(),
        imaps_addrs: Vec::new(),
        authkey_addrs: Vec::new(),
        messenger_addrs: Vec::new(),
        admin_addrs: Vec::new(),
        metrics: Arc::new(support::metrics::Metrics::new()),
        live: LiveParts { config: config.clone(), tls: Vec::new(), limiters: Vec::new(), routes: None },
        shutdown,
        listeners: Vec::new(),
        sessions: sessions.clone(),
        grace: Duration::from_secs(config.shutdown_grace_secs),
        _dns: dns::Dns::for_config(config)?,
        session_threads: SessionThreads::per_core()?,
    };
    let tls = Tls::from_config(config)?;
    let peer_tls = Tls::for_peers(config)?;
    server.live.tls = vec![tls.clone(), peer_tls.clone()];
    let fake_salt_key = rules::bootstrap::scram_fake_salt_key(store.as_ref()).await?;
    let mut auth_limiter = AuthLimiter::new(
        config.auth.max_failures_per_ip,
        config.auth.max_failures_per_account,
        Duration::from_secs(config.auth.failure_window_secs),
    )
    .with_max_per_verifier(config.auth.max_failures_per_verifier);
    // SPEC 11: several nodes count failures together; on SQLite this process is the only
    // server (the data_dir lock), and its own counts are all there is.
    if config.store.backend == config::StoreBackend::Postgres {
        auth_limiter = auth_limiter.shared_through(Arc::clone(&store));
    }
    let auth_limiter = Arc::new(auth_limiter);
    let listeners = [
        (Listener::Mx, &config.listeners.mx),
        (Listener::Submission, &config.listeners.submission),
        (Listener::Submissions, &config.listeners.submissions),
        (Listener::Odmr, &config.listeners.odmr),
        (Listener::Messenger, &config.listeners.messenger),
    ];
    let odmr = jobs::held::Odmr::new(config, Arc::clone(&store))?;
    let messenger = federation::Messenger::with_metrics(config, Arc::clone(&store), Arc::clone(&server.metrics))?;
    let memory = listen::smtp::spool::MemoryBudget::new(config.smtp.max_inflight_bytes);
    let authkeys = auth::authkey::AuthKeys::new(&config.authkey, dns::Dns::for_config(config)?, Arc::clone(&store));
    let domain_verifier = domain_verifier(config)?;
    let dmarc_reports = dmarc_reports(config, &store);
    let dkim = auth::dkim_sign::DkimSigning::new(Arc::clone(&store));
    for (kind, addrs) in listeners {
        // One count per role: a flood on the MX must not lock out submission users. The
        // Messenger port has limits of its own (SPEC 8; the AUTH limits are shared).
        let limiter = match kind {
            Listener::Messenger => {
                ConnectionLimiter::new(config.messenger.max_connections, config.messenger.max_connections_per_ip)
            }
            _ => ConnectionLimiter::new(config.smtp.max_connections, config.smtp.max_connections_per_ip),
        };
        let role = if kind == Listener::Messenger { LimitRole::Messenger } else { LimitRole::Smtp };
        server.live.limiters.push((role, Arc::clone(&limiter)));
        let context = Arc::new(SmtpContext {
            session_config: Arc::new(session_config(config, kind, Some(&fake_salt_key))?),
            store: Arc::clone(&store),
            limiter,
            auth_limiter: Arc::clone(&auth_limiter),
            postmaster: postmaster.clone(),
            tls: Some(if kind == Listener::Messenger { peer_tls.clone() } else { tls.clone() }),
            implicit_tls: kind == Listener::Submissions,
            odmr: Arc::clone(&odmr),
            spool_dir: config.data_dir.join("spool"),
            memory: Arc::clone(&memory),
            authkeys: Arc::clone(&authkeys),
            // SPEC 13 checks MX mail; the other listeners' senders authenticate themselves.
            domain_verifier: domain_verifier.clone().filter(|_| kind == Listener::Mx),
            dmarc_reports: dmarc_reports.clone().filter(|_| kind == Listener::Mx),
            dkim: Arc::clone(&dkim),
            messenger: (kind == Listener::Messenger).then(|| Arc::clone(&messenger)),
            metrics: support::metrics::ListenerMetrics::new(&server.metrics, kind.label()),
        });
        for addr in addrs {
            let listener = listen::listen(*addr)?;
            let local = listener.local_addr().map_err(|e| Error::new(ErrorKind::Config, e.to_string()))?;
            tracing::info!(service = ?kind, %local, "listening");
            match kind {
                Listener::Mx => server.mx_addrs.push(local),
                Listener::Submission => server.submission_addrs.push(local),
                Listener::Submissions => server.submissions_addrs.push(local),
                Listener::Odmr => server.odmr_addrs.push(local),
                Listener::Messenger => server.messenger_addrs.push(local),
            }
            let handle = tokio::spawn(listen::serve_listener(
                listener,
                Arc::clone(&context),
                shutdown_rx.clone(),
                sessions.clone(),
                server.session_threads.dispatch(),
            ));
            server.listeners.push(handle);
        }
    }
    // SPEC 8.3: the NOTIFY outbox, sending remote senders' tracking records to the home
    // servers of their domains over the federation client, retried while they are down.
    let sender = Arc::new(federation::notify::FederationNotifySender::new(
        Arc::clone(messenger.client()),
        Arc::clone(&server.metrics),
    ));
    let settings = jobs::notify_outbox::OutboxSettings::from_config(config);
    let outbox =
        jobs::notify_outbox::Outbox::new(Arc::clone(&store), sender, settings, messenger.outbox_bell().clone());
    outbox.spawn(shutdown_rx.clone(), &sessions);
    // SPEC 8.4: the scheduled pull of the peers' Entity Index entries.
    if config.messenger.pull_interval_secs > 0 {
        let interval = Duration::from_secs(config.messenger.pull_interval_secs);
        let peers = config.messenger.peers.clone();
        sessions.spawn(jobs::entity_pulls::run(Arc::clone(&messenger), peers, interval, shutdown_rx.clone()));
    }
    for entry in &config.odmr.fetch {
        let options = jobs::odmr_fetch::FetchOptions::from_schedule(config, entry)?;
        let local = match entry.smtphost {
            Some(_) => None,
            None => {
                Some(customer_context_counted(config, Arc::clone(&store), options.trusts_provider(), &server.metrics)?)
            }
        };
        let interval = Duration::from_secs(entry.interval_secs.max(10));
        sessions.spawn(jobs::odmr_fetch::run_scheduled(options, interval, local, shutdown_rx.clone()));
    }
    let shared = Pop3Shared {
        tls: &tls,
        auth_limiter: &auth_limiter,
        fake_salt_key: &fake_salt_key,
        outbox_bell: messenger.outbox_bell(),
    };
    start_pop3(config, &store, &shared, &shutdown_rx, &sessions, &mut server).await?;
    start_imap(config, &store, &shared, &shutdown_rx, &sessions, &mut server)?;
    start_authkey(config, &store, &shutdown_rx, &sessions, &mut server)?;
    let admin = start_admin(config, &store, &tls, &shutdown_rx, &sessions, &mut server)?;
    if config.dmarc.verify && config.dmarc.reports {
        let reporter = rules::dmarc_report::Reporter { hostname: config.hostname.clone() };
        let verifier = dmarc_verifier(config)?;
        sessions.spawn(jobs::dmarc_reports::run(Arc::clone(&store), verifier, reporter, shutdown_rx.clone()));
    }
    if config.outbound.enabled {
        server.live.routes = Some(jobs::outbound::spawn(
            config,
            Arc::clone(&store),
            Arc::clone(&server.metrics),
            shutdown_rx.clone(),
            &sessions,
        )?);
        let lifetime = config.outbound.lifetime_secs as i64;
        sessions.spawn(Arc::clone(&odmr).sweep_expired(lifetime, shutdown_rx.clone()));
    }
    // Every listener is bound by now (SPEC 12: `/healthz/ready`).
    admin.listeners_bound.store(true, std::sync::atomic::Ordering::Release);
    Ok(server)
}

/// The admin HTTP listeners (SPEC 12): plain HTTP on loopback, HTTPS with the server's
/// certificate on any other address.
fn start_admin(
    config: &Config,
    store: &Arc<dyn Store>,
    tls: &Tls,
    shutdown_rx: &watch::Receiver<bool>,
    sessions: &TaskTracker,
    server: &mut RunningServer,
) -> Result<Arc<listen::admin::AdminState>, Error> {
    let state = Arc::new(listen::admin::AdminState {
        store: Arc::clone(store),
        metrics: Arc::clone(&server.metrics),
        hostname: config.hostname.clone(),
        open_metrics: config.admin.open_metrics,
        listeners_bound: std::sync::atomic::AtomicBool::new(false),
        // Bound before the admin listener: the ports clients are told are the real ones.
        client_ports: listen::admin::ClientPorts {
            imaps: listen::admin::ClientPorts::first(&server.imaps_addrs),
            imap: listen::admin::ClientPorts::first(&server.imap_addrs),
            pop3s: listen::admin::ClientPorts::first(&server.pop3s_addrs),
            pop3: listen::admin::ClientPorts::first(&server.pop3_addrs),
            submissions: listen::admin::ClientPorts::first(&server.submissions_addrs),
            submission: listen::admin::ClientPorts::first(&server.submission_addrs),
        },
        ops: ops::Settings::from_config(config),
    });
    let timeout = Duration::from_secs(config.admin.request_timeout_secs.max(1));
    let router = listen::admin::router(Arc::clone(&state), config.admin.max_body_bytes, timeout);
    let limiter = ConnectionLimiter::new(config.admin.max_connections, config.admin.max_connections_per_ip);
    server.live.limiters.push((LimitRole::Admin, Arc::clone(&limiter)));
    for addr in &config.listeners.admin {
        let context = Arc::new(listen::admin::AdminContext {
            router: router.clone(),
            state: Arc::clone(&state),
            limiter: Arc::clone(&limiter),
            tls: (!addr.ip().is_loopback()).then(|| tls.clone()),
            header_timeout: timeout,
        });
        let locals = serve_on(std::slice::from_ref(addr), &context, "admin", shutdown_rx, sessions, server)?;
        server.admin_addrs.extend(locals);
    }
    Ok(state)
}

/// The Authentication Server (SPEC 7.1, 7.2): the key generator when `[authkey] server`,
/// and the VERIFY listeners, TCP and UDP on each `listeners.authkey` address.
fn start_authkey(
    config: &Config,
    store: &Arc<dyn Store>,
    shutdown_rx: &watch::Receiver<bool>,
    sessions: &TaskTracker,
    server: &mut RunningServer,
) -> Result<(), Error> {
    if config.authkey.server {
        let hostname = config.hostname.clone();
        sessions.spawn(jobs::keygen::run_generator(
            Arc::clone(store),
            config.authkey.clone(),
            hostname,
            shutdown_rx.clone(),
        ));
    }
    if config.listeners.authkey.is_empty() {
        return Ok(());
    }
    let (context, log_writer) =
        listen::authkey::VerifyContext::new(&config.authkey, Arc::clone(store), &server.metrics);
    for addr in &config.listeners.authkey {
        let listener = listen::listen(*addr)?;
        let local = listener.local_addr().map_err(|e| Error::new(ErrorKind::Config, e.to_string()))?;
        // The same port for UDP, also when the configured port is 0.
        let udp = if config.authkey.udp { Some(listen::authkey::bind_udp(local)?) } else { None };
        tracing::info!(service = "authkey", %local, udp = udp.is_some(), "listening");
        server.authkey_addrs.push(local);
        server.listeners.push(tokio::spawn(listen::serve_listener(
            listener,
            Arc::clone(&context),
            shutdown_rx.clone(),
            sessions.clone(),
            server.session_threads.dispatch(),
        )));
        if let Some(udp) = udp {
            server.listeners.push(tokio::spawn(listen::authkey::serve_udp(
                udp,
                Arc::clone(&context),
                shutdown_rx.clone(),
            )));
        }
    }
    // Ends when the listeners (holding the context) are gone, after writing what is queued.
    drop(context);
    tokio::spawn(log_writer);
    Ok(())
}

/// What the POP3 listeners share with the SMTP ones.
struct Pop3Shared<'a> {
    tls: &'a Tls,
    auth_limiter: &'a Arc<AuthLimiter>,
    fake_salt_key: &'a SiteSecret,
    outbox_bell: &'a rules::tracking::OutboxBell,
}

/// The POP3 listeners (SPEC 9): pop3 with STLS and pop3s with implicit TLS, sharing one
/// maildrop lock map and the AUTH failure limits of SMTP.
async fn start_pop3(
    config: &Config,
    store: &Arc<dyn Store>,
    shared: &Pop3Shared<'_>,
    shutdown_rx: &watch::Receiver<bool>,
    sessions: &TaskTracker,
    server: &mut RunningServer,
) -> Result<(), Error> {
    let limiter = ConnectionLimiter::new(config.pop3.max_connections, config.pop3.max_connections_per_ip);
    server.live.limiters.push((LimitRole::Pop3, Arc::clone(&limiter)));
    let locks = rules::maildrop_lock::MaildropLocks::new(Arc::clone(store), config.pop3.lock_lease_secs);
    for implicit_tls in [false, true] {
        let addrs = if implicit_tls { &config.listeners.pop3s } else { &config.listeners.pop3 };
        let service = if implicit_tls { "pop3s" } else { "pop3" };
        let context = Arc::new(listen::pop3::Pop3Context {
            session_config: Arc::new(pop3_session_config(config, implicit_tls, shared.fake_salt_key)?),
            store: Arc::clone(store),
            limiter: Arc::clone(&limiter),
            auth_limiter: Arc::clone(shared.auth_limiter),
            locks: Arc::clone(&locks),
            tls: Some(shared.tls.clone()),
            implicit_tls,
            outbox_bell: shared.outbox_bell.clone(),
            metrics: support::metrics::ListenerMetrics::new(&server.metrics, service),
        });
        let locals = serve_on(addrs, &context, service, shutdown_rx, sessions, server)?;
        if implicit_tls {
            server.pop3s_addrs.extend(locals);
        } else {
            server.pop3_addrs.extend(locals);
        }
    }
    Ok(())
}

/// Binds each of `addrs` and serves it with `context`; the addresses bound (a port 0
/// resolved).
fn serve_on<S: listen::Service>(
    addrs: &[SocketAddr],
    context: &Arc<S>,
    service: &'static str,
    shutdown_rx: &watch::Receiver<bool>,
    sessions: &TaskTracker,
    server: &mut RunningServer,
) -> Result<Vec<SocketAddr>, Error> {
    let mut locals = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let listener = listen::listen(*addr)?;
        let local = listener.local_addr().map_err(|e| Error::new(ErrorKind::Config, e.to_string()))?;
        tracing::info!(service, %local, "listening");
        let serving = listen::serve_listener(
            listener,
            Arc::clone(context),
            shutdown_rx.clone(),
            sessions.clone(),
            server.session_threads.dispatch(),
        );
        server.listeners.push(tokio::spawn(serving));
        locals.push(local);
    }
    Ok(locals)
}

/// The IMAP listeners (SPEC 9): imap with STARTTLS and imaps with implicit TLS, with the
/// AUTH failure limits of SMTP and POP3.
fn start_imap(
    config: &Config,
    store: &Arc<dyn Store>,
    shared: &Pop3Shared<'_>,
    shutdown_rx: &watch::Receiver<bool>,
    sessions: &TaskTracker,
    server: &mut RunningServer,
) -> Result<(), Error> {
    let limiter = ConnectionLimiter::new(config.imap.max_connections, config.imap.max_connections_per_ip);
    server.live.limiters.push((LimitRole::Imap, Arc::clone(&limiter)));
    for implicit_tls in [false, true] {
        let addrs = if implicit_tls { &config.listeners.imaps } else { &config.listeners.imap };
        let service = if implicit_tls { "imaps" } else { "imap" };
        let context = Arc::new(listen::imap::ImapContext {
            session_config: Arc::new(imap_session_config(config, implicit_tls, shared.fake_salt_key)?),
            store: Arc::clone(store),
            limiter: Arc::clone(&limiter),
            auth_limiter: Arc::clone(shared.auth_limiter),
            tls: Some(shared.tls.clone()),
            implicit_tls,
            outbox_bell: shared.outbox_bell.clone(),
            watch_interval: Duration::from_millis(config.imap.watch_interval_ms.max(10)),
            metrics: support::metrics::ListenerMetrics::new(&server.metrics, service),
        });
        let locals = serve_on(addrs, &context, service, shutdown_rx, sessions, server)?;
        if implicit_tls {
            server.imaps_addrs.extend(locals);
        } else {
            server.imap_addrs.extend(locals);
        }
    }
    Ok(())
}

fn imap_session_config(
    config: &Config,
    implicit_tls: bool,
    fake_salt_key: &SiteSecret,
) -> Result<vouchmail_proto::imap::session::SessionConfig, Error> {
    let mut session = vouchmail_proto::imap::session::SessionConfig::new(config.hostname.clone());
    // RFC 9051 6.2.1: STARTTLS on the port that starts in the clear.
    session.starttls = !implicit_tls;
    session.auth_mechanisms = config.auth.mechanisms()?;
    session.allow_plaintext_passwords = config.imap.allow_plaintext_login;
    session.max_errors = config.imap.max_errors;
    session.autologout = Duration::from_secs(config.imap.autologout_secs);
    session.limits = vouchmail_proto::imap::command::Limits {
        max_line: config.imap.max_line_length,
        max_literal: match config.imap.max_append_size {
            0 => config.smtp.max_message_size as u64,
            size => size,
        },
        max_command: config.imap.max_command_size,
    };
    session.scram_iterations = config.auth.scram_iterations;
    session.scram_fake_salt_key = Some(fake_salt_key.clone());
    Ok(session)
}

fn pop3_session_config(
    config: &Config,
    implicit_tls: bool,
    fake_salt_key: &SiteSecret,
) -> Result<Pop3SessionConfig, Error> {
    let mut session = Pop3SessionConfig::new(config.hostname.clone());
    // RFC 2595 4: STLS on the port that starts in the clear.
    session.starttls = !implicit_tls;
    session.auth_mechanisms = config.auth.mechanisms()?;
    session.allow_plaintext_passwords = config.pop3.allow_plaintext_user_pass;
    session.max_errors = config.pop3.max_errors;
    session.idle_timeout = Duration::from_secs(config.pop3.idle_timeout_secs);
    session.max_command_line = config.pop3.max_line_length;
    session.max_auth_line = config.pop3.max_auth_line_length;
    session.scram_iterations = config.auth.scram_iterations;
    session.scram_fake_salt_key = Some(fake_salt_key.clone());
    Ok(session)
}

/// The SMTP listener roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    Mx,
    Submission,
    Submissions,
    Odmr,
    Messenger,
}

impl Listener {
    /// The `listener` label of its metrics (SPEC 12).
    fn label(self) -> &'static str {
        match self {
            Listener::Mx => "mx",
            Listener::Submission => "submission",
            Listener::Submissions => "submissions",
            Listener::Odmr => "odmr",
            Listener::Messenger => "messenger",
        }
    }
}

fn session_config(config: &Config, kind: Listener, fake_salt_key: Option<&SiteSecret>) -> Result<SessionConfig, Error> {
    let service = match kind {
        Listener::Mx => Service::Mx,
        Listener::Submission | Listener::Submissions => Service::Submission,
        Listener::Odmr => Service::Odmr,
        Listener::Messenger => Service::Messenger,
    };
    let mut session = SessionConfig::new(service, config.hostname.clone());
    session.max_message_size = config.smtp.max_message_size;
    session.max_recipients = config.smtp.max_recipients;
    session.max_hops = config.smtp.max_hops;
    session.max_errors = config.smtp.max_errors;
    session.command_timeout = config.command_timeout();
    session.data_timeout = config.data_timeout();
    session.rcram_answer_timeout = Duration::from_secs(config.messenger.rcram_answer_timeout_secs);
    // RFC 3207: STARTTLS on the ports that start in the clear.
    session.starttls = kind != Listener::Submissions;
    if service != Service::Mx || config.auth.on_mx {
        session.auth_mechanisms = config.auth.mechanisms()?;
    }
    session.etrn = service == Service::Mx && config.odmr.etrn;
    session.max_etrn = config.odmr.max_etrn_per_session;
    session.allow_plaintext_passwords = config.auth.allow_plaintext_passwords;
    session.scram_iterations = config.auth.scram_iterations;
    session.scram_fake_salt_key = fake_salt_key.cloned();
    session.trusted_auth_assertors = config.auth.trusted_relays.clone();
    session.memory_body_limit = config.smtp.memory_body_limit;
    Ok(session)
}

/// The MX session context an ODMR customer serves its reversed session with: mail goes
/// into this store like MX mail. `trusted_relay`: the provider is a trusted relay (SPEC 2),
/// which it is only when the customer knows it is talking to its provider
/// ([`jobs::odmr_fetch::FetchOptions::trusts_provider`]); otherwise its mail is judged as any
/// unauthenticated MX mail, by the recipient domain's sender policy.
pub fn customer_context(
    config: &Config,
    store: Arc<dyn Store>,
    trusted_relay: bool,
) -> Result<Arc<dyn jobs::odmr_fetch::ReversedServer>, Error> {
    // A fetch from the CLI has no /metrics: a registry of its own.
    customer_context_counted(config, store, trusted_relay, &Arc::new(support::metrics::Metrics::new()))
}

/// [`customer_context`] counting into `metrics` as the `odmr_fetch` listener (SPEC 12).
fn customer_context_counted(
    config: &Config,
    store: Arc<dyn Store>,
    trusted_relay: bool,
    metrics: &Arc<support::metrics::Metrics>,
) -> Result<Arc<dyn jobs::odmr_fetch::ReversedServer>, Error> {
    // No AUTH in this session, so no fake salts either.
    let mut session = session_config(config, Listener::Mx, None)?;
    session.trusted_relay = trusted_relay;
    session.etrn = false;
    session.auth_mechanisms.clear();
    session.starttls = false;
    let postmaster_domain =
        if config.bootstrap.domain.is_empty() { config.hostname.as_str() } else { config.bootstrap.domain.as_str() };
    let postmaster = Address::parse(&format!("postmaster@{postmaster_domain}"))
        .map_err(|e| Error::new(ErrorKind::Config, e.to_string()))?;
    Ok(Arc::new(SmtpContext {
        session_config: Arc::new(session),
        store: Arc::clone(&store),
        limiter: ConnectionLimiter::new(1, 1),
        auth_limiter: Arc::new(AuthLimiter::new(1, 1, Duration::from_secs(1))),
        postmaster,
        tls: None,
        implicit_tls: false,
        odmr: jobs::held::Odmr::new(config, Arc::clone(&store))?,
        spool_dir: config.data_dir.join("spool"),
        memory: listen::smtp::spool::MemoryBudget::new(config.smtp.max_inflight_bytes),
        authkeys: auth::authkey::AuthKeys::new(&config.authkey, dns::Dns::for_config(config)?, Arc::clone(&store)),
        domain_verifier: domain_verifier(config)?,
        dmarc_reports: dmarc_reports(config, &store),
        dkim: auth::dkim_sign::DkimSigning::new(store),
        messenger: None,
        metrics: support::metrics::ListenerMetrics::new(metrics, "odmr_fetch"),
    }))
}

/// The SPF, DKIM, DMARC and iprev checks of MX mail (SPEC 13), on the shared resolver;
/// None when `dmarc.verify` is off.
fn domain_verifier(config: &Config) -> Result<Option<Arc<auth::sending_domain::DomainVerifier>>, Error> {
    if !config.dmarc.verify {
        return Ok(None);
    }
    dmarc_verifier(config).map(Some)
}

/// A verifier on the configured resolver, also for the DMARC report destinations (RFC
/// 7489 7.1) where MX mail is not checked.
pub fn dmarc_verifier(config: &Config) -> Result<Arc<auth::sending_domain::DomainVerifier>, Error> {
    let dns = dns::Dns::for_config(config)?;
    let deadline = Duration::from_secs(config.dmarc.timeout_secs.max(1));
    Ok(auth::sending_domain::DomainVerifier::new(&dns, &config.hostname, deadline))
}

/// The counting of DMARC results for aggregate reports: where MX mail is checked and
/// `dmarc.reports` is on.
fn dmarc_reports(config: &Config, store: &Arc<dyn Store>) -> Option<Arc<rules::dmarc_report::DmarcReports>> {
    (config.dmarc.verify && config.dmarc.reports).then(|| rules::dmarc_report::DmarcReports::new(Arc::clone(store)))
}
