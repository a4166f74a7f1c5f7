//! On-Demand Mail Relay, customer side (RFC 2645): connect to the provider, authenticate
//! (CRAM-MD5, or EXTERNAL with a client certificate), ATRN, then serve the reversed SMTP
//! session: into our own store with the MX session engine, or relayed byte for byte to an
//! SMTP host (as fetchmail's `smtphost` does).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rustls::CertificateError;
use vouchmail_proto::sasl::{ClientSession, Credentials, Mechanism};
use vouchmail_proto::smtp::client::{AuthOutcome, ClientConfig, ServerReply, Timeouts, TlsMode};
use vouchmail_proto::smtp::session::TlsInfo;

use crate::net::client_tls::{self, ServerTrust};
use crate::net::smtp_client::{OpenError, Session, Target};
use crate::net::stream::Stream;
use crate::support::error::{Error, ErrorKind};

mod relay;
pub use relay::RelayTimeouts;

/// What `vouchmail odmr fetch` (or a scheduled fetch) asks for.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// host:port of the provider's ODMR service.
    pub provider: String,
    pub user: String,
    /// For CRAM-MD5; None with a client certificate (EXTERNAL).
    pub password: Option<String>,
    /// ATRN domains; empty asks for every domain the account may take.
    pub domains: Vec<String>,
    /// Relay the reversed session to this host:port instead of storing locally.
    pub smtphost: Option<String>,
    /// STARTTLS before authenticating.
    pub tls: bool,
    /// How the provider's certificate is checked, with `tls`. Only a provider that the
    /// check authenticated is a trusted relay (SPEC 2).
    pub trust: ServerTrust,
    /// Client certificate and key for SASL EXTERNAL (implies TLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Our name in EHLO.
    pub helo: String,
    /// RFC 2645 5.2.1: at least 10 minutes around ATRN.
    pub timeout: Duration,
    /// Connecting to `smtphost` and waiting for its replies.
    pub relay_timeouts: RelayTimeouts,
    /// Name servers of the resolver that finds the provider (the server's shared one).
    pub nameservers: Vec<std::net::SocketAddr>,
}

impl FetchOptions {
    /// The options of a `[[odmr.fetch]]` entry.
    pub fn from_schedule(
        config: &crate::config::Config,
        entry: &crate::config::ScheduledFetch,
    ) -> Result<FetchOptions, Error> {
        let key = || format!("odmr.fetch for {}", entry.provider);
        let password = match (&entry.cert, &entry.password_file) {
            (Some(_), _) => None,
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| Error::file(path, &e))?
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string(),
            ),
            (None, None) => return Err(Error::config(key(), "password_file or cert is needed")),
        };
        let trust = entry.trust().map_err(|e| e.about(key()))?;
        Ok(FetchOptions {
            provider: entry.provider.clone(),
            user: entry.user.clone(),
            password,
            domains: entry.domains.clone(),
            smtphost: entry.smtphost.clone(),
            // Asking how to check the certificate, or presenting one, means TLS.
            tls: entry.tls || entry.cert.is_some() || !trust.is_default(),
            trust,
            client_cert: entry.cert.clone().zip(entry.key.clone()),
            helo: config.hostname.clone(),
            timeout: customer_timeout(config),
            relay_timeouts: RelayTimeouts::from_config(config, customer_timeout(config)),
            nameservers: config.nameservers().to_vec(),
        })
    }

    /// Whether the reversed session counts as a trusted relay's (SPEC 2): not when TLS
    /// accepted any certificate. Without TLS the operator chose to trust the network path
    /// to the provider, as for configured peer networks.
    pub fn trusts_provider(&self) -> bool {
        !self.tls || self.trust.authenticates()
    }

    /// The host part of `provider` (host:port, [v6]:port), for the certificate check.
    fn provider_host(&self) -> &str {
        let p = self.provider.as_str();
        if let Some(rest) = p.strip_prefix('[') {
            return rest.split_once(']').map(|(h, _)| h).unwrap_or(rest);
        }
        match p.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => p,
        }
    }
}

/// RFC 2645 5.2.1: the timeout around ATRN and for the provider in the reversed session
/// is at least 10 minutes.
pub fn customer_timeout(config: &crate::config::Config) -> Duration {
    Duration::from_secs(config.odmr.timeout_secs.max(600))
}

/// Serves the reversed session into our own store: the MX session engine of the listener
/// room, handed in where the server is wired (a job does not reach up into listeners).
pub trait ReversedServer: Send + Sync {
    /// Serves an SMTP session over `stream` (inside TLS when `tls` says so); returns the
    /// number of messages accepted.
    fn serve<'a>(
        &'a self,
        stream: Box<dyn Stream>,
        peer: SocketAddr,
        tls: Option<TlsInfo>,
    ) -> Pin<Box<dyn Future<Output = u64> + Send + 'a>>;

    /// The session treats the provider as a trusted relay (SPEC 2).
    fn trusts_provider(&self) -> bool;
}

/// Runs the configured fetches on their schedules until shutdown.
pub async fn run_scheduled(
    options: FetchOptions,
    interval: Duration,
    local: Option<Arc<dyn ReversedServer>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        match fetch(&options, local.clone()).await {
            Ok(outcome) => tracing::info!(provider = %options.provider, ?outcome, "scheduled ODMR fetch"),
            Err(e) => tracing::warn!(provider = %options.provider, error = %e, "scheduled ODMR fetch failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// How a fetch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The roles reversed; `messages` were accepted (counted when stored locally).
    Taken { messages: Option<u64> },
    /// 453: nothing waiting.
    NoMail,
    /// The provider refused (450, 451, 530, 535, ...): its reply.
    Refused(String),
}

fn text(reply: &ServerReply) -> String {
    format!("{} {}", reply.code, reply.lines.join(" "))
}

/// Resolves the provider with the shared resolver (RFC 2645: port 366 when none is given)
/// and connects to the first of its addresses that answers.
async fn connect_provider(options: &FetchOptions, config: ClientConfig) -> Result<Session, Error> {
    let dns = crate::net::dns::Dns::shared(&options.nameservers).map_err(|e| e.about("nameservers"))?;
    let addrs = dns
        .socket_addrs(&options.provider, 366)
        .await
        .map_err(|e| Error::dns(&options.provider, format!("cannot resolve the provider: {e}")))?;
    let mut last = Error::dns(&options.provider, "no address");
    for addr in addrs {
        let target = Target { host: options.provider_host().to_string(), addr };
        match Session::connect(&target, None, Duration::from_secs(30), config.clone()).await {
            Ok(session) => return Ok(session),
            Err(e) => last = e.error().about(&options.provider),
        }
    }
    Err(last)
}

/// Connects, authenticates, sends ATRN and serves the reversed session.
/// `local`: the MX session context to serve the reversed session into our own store.
pub async fn fetch(options: &FetchOptions, local: Option<Arc<dyn ReversedServer>>) -> Result<FetchOutcome, Error> {
    // SPEC 2: a provider whose certificate nobody checked is not a trusted relay; the local
    // context must have been made for that (customer_context with trusts_provider()).
    if local.as_ref().is_some_and(|c| c.trusts_provider() && !options.trusts_provider()) {
        return Err(Error::invalid("refusing to take unauthenticated mail as from a trusted relay"));
    }
    let tls = options.tls || options.client_cert.is_some();
    // Built first: a missing CA file fails before we ask the provider for anything.
    let connector = if tls {
        let cert = options.client_cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
        let host = options.provider_host();
        if client_tls::server_name(host).is_none() {
            return Err(Error::config("provider", format!("{host} is not a TLS server name")));
        }
        Some(client_tls::client_connector(&options.trust, cert).map_err(|e| e.about(options.provider.clone()))?)
    } else {
        None
    };
    let config = ClientConfig {
        tls: if tls { TlsMode::Required } else { TlsMode::Never },
        timeouts: Timeouts::all(options.timeout),
        ..ClientConfig::new(options.helo.clone())
    };
    let mut session = connect_provider(options, config).await?;
    let peer = session.target.addr;
    if let Err(e) = session.start(connector.as_ref().map(|(c, _)| c)).await {
        return match e.refused() {
            // The provider said no to the greeting, EHLO or STARTTLS.
            Some(reply) => Ok(FetchOutcome::Refused(format!("{} {}", reply.code, reply.text.replace('\n', " ")))),
            None => Err(setup_error(options, &e, connector.as_ref().and_then(|(_, p)| p.fingerprint()))),
        };
    }
    let tls_info = session.tls_connection().map(|connection| TlsInfo {
        version: connection
            .protocol_version()
            .map(|v| format!("{v:?}").replace("TLSv1_", "TLSv1."))
            .unwrap_or_default(),
        cipher: connection.negotiated_cipher_suite().map(|c| format!("{:?}", c.suite())).unwrap_or_default(),
        channel_binding: None,
        external_identity: None,
    });
    if let Some((_, presented)) = connector.as_ref().filter(|_| !options.trust.authenticates()) {
        tracing::warn!(provider = %options.provider, certificate = ?presented.fingerprint(), "ODMR: the provider's certificate is not checked (insecure); its mail is not from a trusted relay");
    }
    if !session.capabilities().offers("ATRN") {
        session.quit().await;
        return Ok(FetchOutcome::Refused("the provider does not offer ATRN".into()));
    }
    // RFC 2645 5.1.2: CRAM-MD5 is the mechanism every provider supports.
    let sasl = if options.client_cert.is_some() {
        ClientSession::new(Mechanism::External, Credentials::new("", ""))
    } else {
        let password =
            options.password.clone().ok_or_else(|| Error::config("password", "a password is needed for CRAM-MD5"))?;
        ClientSession::new(Mechanism::CramMd5, Credentials::new(options.user.clone(), password))
    };
    match session.authenticate(sasl).await? {
        AuthOutcome::Success => {}
        AuthOutcome::Refused(reply) => {
            session.quit().await;
            return Ok(FetchOutcome::Refused(text(&reply)));
        }
        AuthOutcome::Failed(why) => {
            session.quit().await;
            return Err(Error::protocol(&options.provider, format!("AUTH: {why}")));
        }
    }
    let atrn =
        if options.domains.is_empty() { "ATRN".to_string() } else { format!("ATRN {}", options.domains.join(",")) };
    let reply = session.command(&atrn).await?;
    match reply.code {
        250 => {}
        453 => {
            session.quit().await;
            return Ok(FetchOutcome::NoMail);
        }
        _ => {
            session.quit().await;
            return Ok(FetchOutcome::Refused(text(&reply)));
        }
    }
    // RFC 2645 5.3: we are the server now. Anything the provider sent already is not
    // expected (it waits for our greeting), so what was read beyond the 250 is dropped.
    let (stream, unread) = session.release();
    if !unread.is_empty() {
        tracing::debug!(provider = %options.provider, octets = unread.len(), "ODMR: the provider spoke before our greeting; dropped");
    }
    match (&options.smtphost, local) {
        (Some(host), _) => {
            let messages = relay::relay(stream, host, options.relay_timeouts).await?;
            Ok(FetchOutcome::Taken { messages })
        }
        (None, Some(context)) => {
            let messages = context.serve(stream, peer, tls_info).await;
            Ok(FetchOutcome::Taken { messages: Some(messages) })
        }
        (None, None) => Err(Error::config("smtphost", "nowhere to put the mail: give --smtphost or a local store")),
    }
}

/// A setup that failed on our side or on the connection: a refused certificate in words an
/// operator can act on.
fn setup_error(options: &FetchOptions, error: &OpenError, presented: Option<String>) -> Error {
    match &error.tls_handshake {
        Some(handshake) => handshake_error(options, handshake, presented),
        None => error.error(),
    }
}

/// Why a handshake failed, in words an operator can act on: a refused certificate names
/// the options that would accept it and its fingerprint (to compare out of band).
fn handshake_error(options: &FetchOptions, error: &std::io::Error, presented: Option<String>) -> Error {
    let provider = &options.provider;
    let Some(problem) = client_tls::certificate_error(error) else {
        return Error::tls(provider, format!("TLS handshake failed: {error}"));
    };
    let seen = presented.map(|f| format!(" (its SHA-256 fingerprint is {f})")).unwrap_or_default();
    let why = match (&options.trust, problem) {
        (ServerTrust::Fingerprint(_), _) => "it is not the certificate of the fingerprint given".to_string(),
        (ServerTrust::SystemRoots, CertificateError::UnknownIssuer) => {
            "no CA of the system's bundle issued it (self-signed, or a private CA)".to_string()
        }
        (ServerTrust::CaFile(path), CertificateError::UnknownIssuer) => {
            format!("no CA certificate in {} issued it", path.display())
        }
        (_, problem) => problem.to_string(),
    };
    let name_problem =
        matches!(problem, CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. });
    let remedy = if name_problem {
        "Give --provider a name the certificate is for, or pin it (--tls-fingerprint HEX, or tls_fingerprint)"
    } else {
        "To accept it, give the CA that issued it (--tls-ca FILE, or tls_ca) or pin it (--tls-fingerprint HEX, or \
         tls_fingerprint)"
    };
    let text = format!(
        "the certificate of {provider} was refused: {why}{seen}. {remedy}; --tls-insecure (tls_insecure) takes the \
         mail without checking, as from an unauthenticated relay"
    );
    Error::new(ErrorKind::Tls, text)
}
