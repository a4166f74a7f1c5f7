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

pub mod auth_limit;
pub mod bootstrap;
pub mod config;
pub mod inbound;
pub mod limits;
pub mod tasks;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vouchmail_proto::smtp::address::Address;
use vouchmail_proto::smtp::session::{Service, SessionConfig};
use vouchmail_store::Store;

use auth_limit::AuthLimiter;
use config::Config;
use inbound::SmtpContext;
use limits::ConnectionLimiter;
use tasks::TaskTracker;
use tls::Tls;

/// A started server; drop it or call [`RunningServer::shutdown`] to stop.
pub struct RunningServer {
    pub mx_addrs: Vec<SocketAddr>,
    pub submission_addrs: Vec<SocketAddr>,
    pub submissions_addrs: Vec<SocketAddr>,
    shutdown: watch::Sender<bool>,
    listeners: Vec<JoinHandle<()>>,
    sessions: TaskTracker,
    grace: Duration,
}

impl RunningServer {
    /// Stops accepting, lets sessions end (idle ones get 421 at once; ones inside a
    /// transaction may finish) for the grace period, then returns how many were cut off.
    /// A cut-off session never got its 250, so its client still has the message.
    pub async fn shutdown(self) -> usize {
        let _ = self.shutdown.send(true);
        for listener in &self.listeners {
            listener.abort();
        }
        let remaining = self.sessions.wait(self.grace).await;
        if remaining > 0 {
            tracing::warn!(remaining, "sessions still running after the grace period; closing them");
        }
        remaining
    }

    pub fn open_sessions(&self) -> usize {
        self.sessions.running()
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for listener in &self.listeners {
            listener.abort();
        }
    }
}

/// Binds every configured listener and starts serving.
pub async fn start(config: &Config, store: Arc<dyn Store>) -> Result<RunningServer, String> {
    let (shutdown, shutdown_rx) = watch::channel(false);
    let sessions = TaskTracker::default();
    let limiter = ConnectionLimiter::new(config.smtp.max_connections, config.smtp.max_connections_per_ip);
    let postmaster_domain =
        if config.bootstrap.domain.is_empty() { config.hostname.as_str() } else { config.bootstrap.domain.as_str() };
    let postmaster =
        Address::parse(&format!("postmaster@{postmaster_domain}")).map_err(|e| format!("postmaster address: {e}"))?;
    let mut server = RunningServer {
        mx_addrs: Vec::new(),
        submission_addrs: Vec::new(),
        submissions_addrs: Vec::new(),
        shutdown,
        listeners: Vec::new(),
        sessions: sessions.clone(),
        grace: Duration::from_secs(config.shutdown_grace_secs),
    };
    let tls = Tls::from_config(config)?;
    let auth_limiter = Arc::new(AuthLimiter::new(
        config.auth.max_failures_per_ip,
        config.auth.max_failures_per_account,
        Duration::from_secs(config.auth.failure_window_secs),
    ));
    let listeners = [
        (Listener::Mx, &config.listeners.mx),
        (Listener::Submission, &config.listeners.submission),
        (Listener::Submissions, &config.listeners.submissions),
    ];
    for (kind, addrs) in listeners {
        let context = Arc::new(SmtpContext {
            session_config: Arc::new(session_config(config, kind)?),
            store: Arc::clone(&store),
            limiter: Arc::clone(&limiter),
            auth_limiter: Arc::clone(&auth_limiter),
            postmaster: postmaster.clone(),
            tls: Some(tls.clone()),
            implicit_tls: kind == Listener::Submissions,
        });
        for addr in addrs {
            let listener = TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            let local = listener.local_addr().map_err(|e| e.to_string())?;
            tracing::info!(service = ?kind, %local, "listening");
            match kind {
                Listener::Mx => server.mx_addrs.push(local),
                Listener::Submission => server.submission_addrs.push(local),
                Listener::Submissions => server.submissions_addrs.push(local),
            }
            let handle = tokio::spawn(inbound::serve_listener(
                listener,
                Arc::clone(&context),
                shutdown_rx.clone(),
                sessions.clone(),
            ));
            server.listeners.push(handle);
        }
    }
    Ok(server)
}

/// The SMTP listener roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    Mx,
    Submission,
    Submissions,
}

fn session_config(config: &Config, kind: Listener) -> Result<SessionConfig, String> {
    let service = if kind == Listener::Mx { Service::Mx } else { Service::Submission };
    let mut session = SessionConfig::new(service, config.hostname.clone());
    session.max_message_size = config.smtp.max_message_size;
    session.max_recipients = config.smtp.max_recipients;
    session.max_hops = config.smtp.max_hops;
    session.max_errors = config.smtp.max_errors;
    session.command_timeout = config.command_timeout();
    session.data_timeout = config.data_timeout();
    // RFC 3207: STARTTLS on the ports that start in the clear.
    session.starttls = kind != Listener::Submissions;
    if service == Service::Submission || config.auth.on_mx {
        session.auth_mechanisms = config.auth.mechanisms()?;
    }
    session.allow_plaintext_passwords = config.auth.allow_plaintext_passwords;
    session.scram_iterations = config.auth.scram_iterations;
    session.trusted_auth_assertors = config.auth.trusted_relays.clone();
    Ok(session)
}
