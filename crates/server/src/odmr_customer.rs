//! On-Demand Mail Relay, customer side (RFC 2645): connect to the provider, authenticate
//! (CRAM-MD5, or EXTERNAL with a client certificate), ATRN, then serve the reversed SMTP
//! session: into our own store with the MX session engine, or relayed byte for byte to an
//! SMTP host (as fetchmail's `smtphost` does).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vouchmail_proto::sasl::{self, ClientSession, Credentials, Mechanism};
use vouchmail_proto::smtp::client::reply::{ReplyParser, ServerReply};

use crate::inbound::SmtpContext;
use crate::stream::Stream;

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
    /// Client certificate and key for SASL EXTERNAL (implies TLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Our name in EHLO.
    pub helo: String,
    /// RFC 2645 5.2.1: at least 10 minutes around ATRN.
    pub timeout: Duration,
}

impl FetchOptions {
    /// The options of a `[[odmr.fetch]]` entry.
    pub fn from_schedule(
        config: &crate::config::Config,
        entry: &crate::config::ScheduledFetch,
    ) -> Result<FetchOptions, String> {
        let password = match (&entry.cert, &entry.password_file) {
            (Some(_), _) => None,
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string(),
            ),
            (None, None) => return Err(format!("odmr.fetch for {}: password_file or cert is needed", entry.provider)),
        };
        Ok(FetchOptions {
            provider: entry.provider.clone(),
            user: entry.user.clone(),
            password,
            domains: entry.domains.clone(),
            smtphost: entry.smtphost.clone(),
            tls: entry.tls,
            client_cert: entry.cert.clone().zip(entry.key.clone()),
            helo: config.hostname.clone(),
            timeout: Duration::from_secs(config.odmr.timeout_secs.max(600)),
        })
    }
}

/// Runs the configured fetches on their schedules until shutdown.
pub async fn run_scheduled(
    options: FetchOptions,
    interval: Duration,
    local: Option<Arc<SmtpContext>>,
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

struct Line<S> {
    stream: S,
    parser: ReplyParser,
    buffer: Vec<u8>,
    timeout: Duration,
}

impl<S: Stream> Line<S> {
    async fn reply(&mut self) -> Result<ServerReply, String> {
        loop {
            match self.parser.next_reply() {
                Ok(Some(reply)) => return Ok(reply),
                Ok(None) => {}
                Err(e) => return Err(format!("bad reply from the provider: {}", e.0)),
            }
            let read = tokio::time::timeout(self.timeout, self.stream.read(&mut self.buffer)).await;
            match read {
                Err(_) => return Err("the provider did not answer in time".into()),
                Ok(Ok(0)) | Ok(Err(_)) => return Err("the provider closed the connection".into()),
                Ok(Ok(n)) => self.parser.feed(&self.buffer[..n]),
            }
        }
    }

    async fn command(&mut self, line: &str) -> Result<ServerReply, String> {
        self.stream.write_all(format!("{line}\r\n").as_bytes()).await.map_err(|e| format!("write failed: {e}"))?;
        self.reply().await
    }
}

fn text(reply: &ServerReply) -> String {
    format!("{} {}", reply.code, reply.lines.join(" "))
}

/// Connects, authenticates, sends ATRN and serves the reversed session.
/// `local`: the MX session context to serve the reversed session into our own store.
pub async fn fetch(options: &FetchOptions, local: Option<Arc<SmtpContext>>) -> Result<FetchOutcome, String> {
    let tcp = tokio::time::timeout(Duration::from_secs(30), TcpStream::connect(&options.provider))
        .await
        .map_err(|_| format!("connecting to {} timed out", options.provider))?
        .map_err(|e| format!("cannot connect to {}: {e}", options.provider))?;
    let peer = tcp.peer_addr().map_err(|e| e.to_string())?;
    let mut line: Line<Box<dyn Stream>> =
        Line { stream: Box::new(tcp), parser: ReplyParser::default(), buffer: vec![0; 8192], timeout: options.timeout };
    let greeting = line.reply().await?;
    if greeting.code != 220 {
        return Ok(FetchOutcome::Refused(text(&greeting)));
    }
    let mut ehlo = line.command(&format!("EHLO {}", options.helo)).await?;
    if ehlo.code != 250 {
        return Ok(FetchOutcome::Refused(text(&ehlo)));
    }
    if options.tls || options.client_cert.is_some() {
        let reply = line.command("STARTTLS").await?;
        if reply.code != 220 {
            return Ok(FetchOutcome::Refused(text(&reply)));
        }
        let cert = options.client_cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
        let connector = crate::outbound::tls::connector_with_client_cert(cert)?;
        let host = options.provider.rsplit_once(':').map(|(h, _)| h).unwrap_or(&options.provider);
        let name = crate::outbound::tls::server_name(host).ok_or_else(|| format!("{host} is not a TLS server name"))?;
        // RFC 3207 4.2: nothing from before the handshake carries over.
        let Line { stream, buffer, timeout, .. } = line;
        let tls = connector.connect(name, stream).await.map_err(|e| format!("TLS handshake failed: {e}"))?;
        line = Line { stream: Box::new(tls), parser: ReplyParser::default(), buffer, timeout };
        ehlo = line.command(&format!("EHLO {}", options.helo)).await?;
        if ehlo.code != 250 {
            return Ok(FetchOutcome::Refused(text(&ehlo)));
        }
    }
    if !ehlo.lines.iter().any(|l| l.eq_ignore_ascii_case("ATRN")) {
        return Ok(FetchOutcome::Refused("the provider does not offer ATRN".into()));
    }
    // RFC 2645 5.1.2: CRAM-MD5 is the mechanism every provider supports.
    let auth = if options.client_cert.is_some() {
        line.command("AUTH EXTERNAL =").await?
    } else {
        let password = options.password.clone().ok_or("a password is needed for CRAM-MD5")?;
        let mut client = ClientSession::new(Mechanism::CramMd5, Credentials::new(options.user.clone(), password));
        let mut reply = line.command("AUTH CRAM-MD5").await?;
        while reply.code == 334 {
            let challenge = sasl::decode_challenge(reply.lines.first().map(String::as_bytes).unwrap_or_default())
                .map_err(|e| format!("bad challenge: {e}"))?;
            let response = client.step(&challenge).map_err(|e| format!("CRAM-MD5: {e}"))?;
            reply = line.command(&sasl::encode_response(&response)).await?;
        }
        reply
    };
    if auth.code != 235 {
        return Ok(FetchOutcome::Refused(text(&auth)));
    }
    let atrn =
        if options.domains.is_empty() { "ATRN".to_string() } else { format!("ATRN {}", options.domains.join(",")) };
    let reply = line.command(&atrn).await?;
    match reply.code {
        250 => {}
        453 => return Ok(FetchOutcome::NoMail),
        _ => return Ok(FetchOutcome::Refused(text(&reply))),
    }
    // RFC 2645 5.3: we are the server now. Anything the provider sent already is not
    // expected (it waits for our greeting), so the parser's leftovers are dropped.
    let stream = line.stream;
    match (&options.smtphost, local) {
        (Some(host), _) => {
            relay(stream, host).await?;
            Ok(FetchOutcome::Taken { messages: None })
        }
        (None, Some(context)) => {
            let messages = crate::inbound::serve_stream(stream, peer, &context).await;
            Ok(FetchOutcome::Taken { messages: Some(messages) })
        }
        (None, None) => Err("nowhere to put the mail: give --smtphost or a local store".into()),
    }
}

/// Pumps the reversed session between the provider and the SMTP host: the host's 220
/// becomes our greeting, and the provider talks to the host directly.
async fn relay(mut provider: Box<dyn Stream>, host: &str) -> Result<(), String> {
    let mut smtp =
        TcpStream::connect(host).await.map_err(|e| format!("cannot connect to the SMTP host {host}: {e}"))?;
    match tokio::io::copy_bidirectional(&mut provider, &mut smtp).await {
        Ok(_) => Ok(()),
        // One side closing right after QUIT/221 is the normal end.
        Err(e) if e.kind() == std::io::ErrorKind::NotConnected || e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(format!("relaying to {host} failed: {e}")),
    }
}
