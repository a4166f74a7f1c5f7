//! `vouchmail client` (SPEC 10): the user's side of the Messenger federation, as a library
//! the CLI (crates/vouchmail/src/client.rs) and `vouchmail demo` share.
//!
//! A [`Profile`] (TOML) names the user's address, home server, POP3 server, password file,
//! key and certificate. [`Client`] does what the subcommands do: keygen, PUBCERT, CERT,
//! send (S/MIME by `vouchmail-smime`, delivered through the user's own server with local
//! AUTH, or directly to each recipient's home server with RCRAM-MD5, SPEC 8.2), fetch
//! (POP3, decryption, RECEIPT, SPEC 8.3), receipt, TRACK and BOOK. Every failure is a
//! [`ClientError`]: one line, naming the server and what it answered.

pub mod error;
pub mod known;
pub mod session;

pub use error::ClientError;
use known::KnownCerts;
use vouchmail_server::support::time::unix_now as now;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tokio_rustls::TlsConnector;
use vouchmail_proto::messenger::tracking::{self, Receipt, ReceiptOutcome, Record};
use vouchmail_proto::messenger::ServerReply;
use vouchmail_proto::sasl::{Credentials, Mechanism};
use vouchmail_proto::time::rfc5322_date;
/// The content encryption `send` uses (`--cipher`), re-exported for the CLI.
pub use vouchmail_smime::ContentCipher;
use vouchmail_smime::{Certificate, OuterHeaders, PrivateKey};

use session::{one_line, Session};
use vouchmail_server::net::client_tls::Connectors;
use vouchmail_server::net::discovery::home_servers;
use vouchmail_server::net::dns::Dns;
use vouchmail_server::net::pop3_client::Pop3Client;
use vouchmail_server::net::route::TlsPolicy;

/// The Messenger port (SPEC 8).
pub const MESSENGER_PORT: u16 = 21025;
/// POP3 (RFC 1939), always inside STLS (SPEC 10).
pub const POP3_PORT: u16 = 110;
/// Validity of a certificate `keygen` makes, in days.
pub const KEYGEN_DAYS: u32 = 730;

/// The TOML profile (SPEC 10). Relative paths are relative to the profile's directory.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub address: String,
    /// `"host:port"` of the home server's Messenger listener; absent: discovery (SPEC 8).
    #[serde(default)]
    pub home_server: Option<String>,
    /// `"host:port"`; absent: the home server's host on port 110.
    #[serde(default)]
    pub pop3_server: Option<String>,
    pub secret_file: PathBuf,
    pub key_file: PathBuf,
    pub cert_file: PathBuf,
    /// `["IP:PORT"]` for discovery and host names (absent: the system's resolver).
    #[serde(default)]
    pub nameservers: Vec<SocketAddr>,
    /// Extra CA certificates (PEM) for the servers' TLS certificates.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// The name given in EHLO (default: `client.<address domain>`).
    #[serde(default)]
    pub ehlo_name: Option<String>,
    /// Seconds to wait for a connection and for each reply.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// `known_certs` beside the profile: key continuity (SPEC 10, [`known`]).
    #[serde(skip)]
    pub known_certs: PathBuf,
}

fn default_timeout() -> u64 {
    30
}

impl Profile {
    pub fn load(path: &Path) -> Result<Profile, ClientError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ClientError::new(format!("profile {}: {e}", path.display())))?;
        let mut profile: Profile = toml::from_str(&text)
            .map_err(|e| ClientError::new(format!("profile {}: {}", path.display(), e.message())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for file in [&mut profile.secret_file, &mut profile.key_file, &mut profile.cert_file] {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
        if let Some(ca) = profile.tls_ca_file.as_mut().filter(|p| p.is_relative()) {
            *ca = base.join(&*ca);
        }
        profile.known_certs = base.join("known_certs");
        profile.check()?;
        Ok(profile)
    }

    fn check(&self) -> Result<(), ClientError> {
        let valid = self.address.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty() && !d.is_empty() && !self.address.contains(|c: char| c.is_whitespace() || c.is_control())
        });
        if !valid {
            return Err(ClientError::new(format!("profile: address '{}' is not local@domain", self.address)));
        }
        Ok(())
    }

    pub fn domain(&self) -> &str {
        self.address.rsplit_once('@').map_or("", |(_, d)| d)
    }
}

/// Where `fetch` writes.
#[derive(Debug, Clone)]
pub enum FetchTarget {
    /// One file per message, `<uid>.eml` (mode 600).
    Dir(PathBuf),
    /// Appended to an mbox file (mboxrd quoting of `From ` lines).
    Mbox(PathBuf),
}

/// One fetched message.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub uid: String,
    pub message_id: Option<String>,
    /// Ok: decrypted; Err: why not (the message is written as received).
    pub decrypted: Result<(), ClientError>,
    pub written_to: PathBuf,
    /// The RECEIPT sent: Ok, or why it was not.
    pub receipt: Result<(), ClientError>,
}

/// A sent message.
#[derive(Debug, Clone)]
pub struct Sent {
    pub message_id: String,
    /// Resolved recipient addresses (an ID becomes its mailbox).
    pub recipients: Vec<String>,
    /// How it went: the server's last reply per delivery.
    pub via: Vec<String>,
}

pub struct Client {
    pub profile: Profile,
    dns: Arc<Dns>,
    tls: Option<TlsConnector>,
    timeout: Duration,
}

/// Writes a private file (mode 600), replacing it.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ClientError> {
    vouchmail_server::support::files::write_private(path, bytes)
        .map_err(|e| ClientError::new(format!("{}: {e}", path.display())))
}

fn read_file(what: &str, path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|e| ClientError::new(format!("{what} {}: {e}", path.display())))
}

/// A random token in hex, for Message-IDs.
fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    if getrandom::getrandom(&mut buffer).is_err() {
        // The time keeps IDs distinct enough if the OS source fails.
        buffer = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos().to_be_bytes()
            [..bytes.min(16)]
            .to_vec();
    }
    buffer.iter().map(|b| format!("{b:02x}")).collect()
}

/// A header's value in a message's header section (unfolded), first occurrence.
pub fn header_value(message: &[u8], name: &str) -> Option<String> {
    vouchmail_proto::headers::first_value(message, name).map(|v| v.trim().to_string())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The message `send` encrypts: the input as a MIME entity if it starts with a
/// Content-Type header, else as text/plain UTF-8.
pub fn entity_of(input: &[u8]) -> Vec<u8> {
    let starts_with_content_type = input.len() >= 13 && input[..13].eq_ignore_ascii_case(b"content-type:");
    if starts_with_content_type {
        return input.to_vec();
    }
    let mut entity = b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n".to_vec();
    entity.extend_from_slice(input);
    entity
}

/// RFC 2045 3, RFC 8551 3.1: the content of an S/MIME message is a MIME entity: a header
/// section of well-formed fields with a Content-Type, then an empty line.
fn is_mime_entity(entity: &[u8]) -> bool {
    let Some(end) = find(entity, b"\r\n\r\n").or_else(|| find(entity, b"\n\n")) else { return false };
    let Ok(head) = std::str::from_utf8(&entity[..end]) else { return false };
    let mut content_type = false;
    for line in head.split('\n').map(|l| l.trim_end_matches('\r')) {
        // RFC 5322 2.2.3: a folded line continues the field above it.
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let Some((name, _)) = line.split_once(':') else { return false };
        // RFC 5322 3.6.8: a field name is printable US-ASCII but the colon.
        if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b)) {
            return false;
        }
        content_type |= name.eq_ignore_ascii_case("content-type");
    }
    content_type
}

/// What `fetch` writes for a decrypted message: the outer headers but the MIME ones, then
/// the decrypted entity.
fn readable(message: &[u8], entity: &[u8]) -> Vec<u8> {
    let end = find(message, b"\r\n\r\n").or_else(|| find(message, b"\n\n")).unwrap_or(message.len());
    let head = String::from_utf8_lossy(&message[..end]).replace("\r\n", "\n");
    let mut out = Vec::new();
    let mut skipping = false;
    for line in head.split('\n') {
        if line.starts_with([' ', '\t']) {
            if !skipping {
                out.extend_from_slice(line.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            continue;
        }
        let name = line.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
        skipping = name.starts_with("content-") || name == "mime-version";
        if !skipping && !line.is_empty() {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"MIME-Version: 1.0\r\n");
    out.extend_from_slice(entity);
    out
}

impl Client {
    pub fn new(profile: Profile) -> Result<Client, ClientError> {
        let dns = Dns::shared(&profile.nameservers).map_err(|e| ClientError::new(e.to_string()))?;
        let connectors = Connectors::new(profile.tls_ca_file.as_deref())
            .map_err(|e| ClientError::new(format!("tls_ca_file: {e}")))?;
        let tls = connectors.for_policy(TlsPolicy::Verify).cloned();
        let timeout = Duration::from_secs(profile.timeout_secs.max(1));
        Ok(Client { profile, dns, tls, timeout })
    }

    pub fn from_file(path: &Path) -> Result<Client, ClientError> {
        Client::new(Profile::load(path)?)
    }

    fn password(&self) -> Result<String, ClientError> {
        let text = std::fs::read_to_string(&self.profile.secret_file)
            .map_err(|e| ClientError::new(format!("secret_file {}: {e}", self.profile.secret_file.display())))?;
        let first = text.lines().next().unwrap_or("").to_string();
        if first.is_empty() {
            return Err(ClientError::new(format!(
                "secret_file {}: empty first line",
                self.profile.secret_file.display()
            )));
        }
        Ok(first)
    }

    fn ehlo_name(&self) -> String {
        self.profile.ehlo_name.clone().unwrap_or_else(|| format!("client.{}", self.profile.domain()))
    }

    /// Host and addresses of `"host:port"`.
    async fn resolve(&self, text: &str, default_port: u16) -> Result<(String, Vec<SocketAddr>), ClientError> {
        let host = match text.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => text,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let addrs =
            self.dns.socket_addrs(text, default_port).await.map_err(|e| ClientError::new(format!("{text}: {e}")))?;
        if addrs.is_empty() {
            return Err(ClientError::new(format!("{text}: no address")));
        }
        Ok((host, addrs))
    }

    async fn open_first(&self, host: &str, addrs: &[SocketAddr]) -> Result<Session, ClientError> {
        let mut last = ClientError::new(format!("{host}: no address"));
        for addr in addrs {
            match Session::open(host, *addr, self.tls.as_ref(), &self.ehlo_name(), self.timeout).await {
                Ok(session) => return Ok(session),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// A session on the user's own home server (the profile's, or by discovery of the
    /// address's domain), logged in with local AUTH.
    pub async fn home(&self) -> Result<Session, ClientError> {
        let mut session = match &self.profile.home_server {
            Some(text) => {
                let (host, addrs) = self.resolve(text, MESSENGER_PORT).await?;
                self.open_first(&host, &addrs).await?
            }
            None => self.discover(self.profile.domain()).await?,
        };
        session.login(&self.profile.address, &self.password()?).await?;
        Ok(session)
    }

    /// A session on `domain`'s home server by discovery (SPEC 8), not logged in. The host
    /// dialed is the one discovery gave.
    pub async fn discover(&self, domain: &str) -> Result<Session, ClientError> {
        let servers = home_servers(&self.dns, domain, MESSENGER_PORT)
            .await
            .map_err(|e| ClientError::new(format!("home server of {domain}: {e:?}")))?;
        let mut last = ClientError::new(format!("home server of {domain}: none found"));
        for server in servers {
            let addrs: Vec<SocketAddr> = match self.dns.addresses(&server.host).await {
                Ok(ips) => ips.into_iter().map(|ip| SocketAddr::new(ip, server.port)).collect(),
                Err(e) => {
                    last = ClientError::new(format!("{}: {e}", server.host));
                    continue;
                }
            };
            match self.open_first(&server.host, &addrs).await {
                Ok(session) => return Ok(session),
                Err(e) => last = e,
            }
        }
        Err(ClientError::new(format!("home server of {domain} unreachable: {last}")))
    }

    /// `keygen`: an RSA key and an S/MIME certificate for the address (SPEC 10), written
    /// mode 600. Refuses to replace existing files unless `force`.
    pub fn keygen(&self, days: u32, force: bool) -> Result<Certificate, ClientError> {
        for path in [&self.profile.key_file, &self.profile.cert_file] {
            if path.exists() && !force {
                return Err(ClientError::new(format!("{} exists (use --force to replace it)", path.display())));
            }
        }
        let (key, cert) = vouchmail_smime::keygen(&self.profile.address, days)
            .map_err(|e| ClientError::new(format!("keygen: {e}")))?;
        write_private(&self.profile.key_file, key.as_bytes())?;
        write_private(&self.profile.cert_file, cert.as_bytes())?;
        Certificate::parse(cert.as_bytes()).map_err(|e| ClientError::new(format!("keygen: {e}")))
    }

    fn own_certificate(&self) -> Result<(Certificate, String), ClientError> {
        let pem = read_file("cert_file", &self.profile.cert_file)?;
        let cert = Certificate::parse(&pem)
            .map_err(|e| ClientError::new(format!("cert_file {}: {e}", self.profile.cert_file.display())))?;
        Ok((cert, String::from_utf8_lossy(&pem).into_owned()))
    }

    /// `pubcert`: uploads the user's certificate (SPEC 8.1).
    pub async fn pubcert(&self) -> Result<String, ClientError> {
        let (cert, pem) = self.own_certificate()?;
        cert.validate_for(&self.profile.address, SystemTime::now())
            .map_err(|e| ClientError::new(format!("cert_file: {e}")))?;
        let mut session = self.home().await?;
        let reply = session.command("PUBCERT").await?;
        if reply.code != 354 {
            return Err(session.refused("PUBCERT", &reply));
        }
        let pem_only: String = pem.lines().filter(|l| !l.trim().is_empty()).collect::<Vec<_>>().join("\n");
        let reply = session.send_block(pem_only.as_bytes()).await?;
        session.quit().await;
        if reply.code != 250 {
            return Err(ClientError::new(format!("PUBCERT refused: {} {}", reply.code, one_line(&reply))));
        }
        Ok(one_line(&reply))
    }

    /// `CERT <address|ID>` on a session: the resolved address and the PEM (SPEC 8.1).
    pub async fn cert_on(session: &mut Session, target: &str) -> Result<(String, String), ClientError> {
        if target.is_empty() || target.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(ClientError::new(format!("'{target}' is not an address or published ID")));
        }
        let reply = session.command(&format!("CERT {target}")).await?;
        parse_cert_reply(target, &reply)
    }

    /// `cert --accept`: looks the address up, checks the certificate as `send` does, and
    /// remembers it in place of the one known (SPEC 10 key continuity). Returns the new and
    /// the old fingerprint.
    pub async fn accept_cert(&self, target: &str) -> Result<(String, String, Option<String>), ClientError> {
        let mut session = self.home().await?;
        let found = Client::recipient(&mut session, target).await;
        session.quit().await;
        let (address, cert) = found?;
        let der = cert.to_der().map_err(|e| ClientError::new(format!("certificate of {address}: {e}")))?;
        let fingerprint = known::fingerprint(&der);
        let mut known = KnownCerts::load(self.profile.known_certs.clone())?;
        let old = known.accept(&address, &fingerprint, now())?;
        Ok((address, fingerprint, old.map(|k| k.fingerprint)))
    }

    /// `cert`: the certificate of an address or published ID, through the home server.
    pub async fn cert(&self, target: &str) -> Result<(String, String), ClientError> {
        let mut session = self.home().await?;
        let found = Client::cert_on(&mut session, target).await;
        session.quit().await;
        found
    }

    /// CERT, then the certificate checked: it parses, is current and names the address.
    async fn recipient(session: &mut Session, target: &str) -> Result<(String, Certificate), ClientError> {
        let (address, pem) = Client::cert_on(session, target).await?;
        let cert = Certificate::parse(pem.as_bytes())
            .map_err(|e| ClientError::new(format!("certificate of {address}: {e}")))?;
        cert.validate_for(&address, SystemTime::now())
            .map_err(|e| ClientError::new(format!("certificate of {address}: {e}")))?;
        Ok((address, cert))
    }

    /// Encrypts `input` to every recipient (looked up with CERT) and the sender, as S/MIME
    /// (SPEC 10) with `cipher` (EnvelopedData with AES-256-CBC, or AuthEnvelopedData with
    /// AES-256-GCM), returning the message and the resolved recipients.
    pub async fn compose(
        &self,
        session: &mut Session,
        to: &[String],
        subject: Option<&str>,
        cipher: ContentCipher,
        input: &[u8],
    ) -> Result<(Vec<u8>, String, Vec<String>), ClientError> {
        if to.is_empty() {
            return Err(ClientError::new("no recipient (--to)"));
        }
        let (own, _) = self.own_certificate()?;
        own.validate_for(&self.profile.address, SystemTime::now())
            .map_err(|e| ClientError::new(format!("own certificate (cert_file): {e}")))?;
        let mut recipients: BTreeMap<String, Certificate> = BTreeMap::new();
        let mut order = Vec::new();
        let mut known = KnownCerts::load(self.profile.known_certs.clone())?;
        for target in to {
            let (address, cert) = Client::recipient(session, target).await?;
            // SPEC 10 Trust: key continuity; a changed certificate is refused until accepted.
            let der = cert.to_der().map_err(|e| ClientError::new(format!("certificate of {address}: {e}")))?;
            known.check(&address, &known::fingerprint(&der), now())?;
            let key = address.to_ascii_lowercase();
            recipients.entry(key).or_insert_with(|| {
                order.push(address.clone());
                cert
            });
        }
        let mut certs: Vec<Certificate> = recipients.values().cloned().collect();
        certs.push(own);
        let message_id = format!("<{}.{}@{}>", random_hex(12), now(), self.profile.domain());
        let headers = OuterHeaders {
            from: self.profile.address.clone(),
            to: order.clone(),
            date: rfc5322_date(SystemTime::now()),
            message_id: message_id.clone(),
            subject: subject.map(str::to_string),
        };
        let message = vouchmail_smime::encrypt_message_with(&entity_of(input), &certs, &headers, cipher)
            .map_err(|e| ClientError::new(format!("encryption: {e}")))?;
        Ok((message, message_id, order))
    }

    /// `send`: encrypted to the recipients with the default cipher (AES-256-CBC), delivered
    /// through the home server, or with `direct` to each recipient domain's home server
    /// with RCRAM-MD5 (SPEC 8.2). [`Client::send_with`] chooses the cipher.
    pub async fn send(
        &self,
        to: &[String],
        subject: Option<&str>,
        direct: bool,
        input: &[u8],
    ) -> Result<Sent, ClientError> {
        self.send_with(to, subject, direct, ContentCipher::default(), input).await
    }

    /// `send --cipher`: [`Client::send`] with the content encryption given (SPEC 10:
    /// `aes256-gcm` makes S/MIME 4.0 AuthEnvelopedData).
    pub async fn send_with(
        &self,
        to: &[String],
        subject: Option<&str>,
        direct: bool,
        cipher: ContentCipher,
        input: &[u8],
    ) -> Result<Sent, ClientError> {
        let mut home = self.home().await?;
        let (message, message_id, recipients) = self.compose(&mut home, to, subject, cipher, input).await?;
        let mut via = Vec::new();
        if !direct {
            let reply = home.transaction(&self.profile.address, &recipients, &message).await?;
            via.push(format!("{}: {} {}", home.host, reply.code, one_line(&reply)));
            home.quit().await;
            return Ok(Sent { message_id, recipients, via });
        }
        home.quit().await;
        let password = self.password()?;
        let mut by_domain: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for rcpt in &recipients {
            let domain = rcpt.rsplit_once('@').map_or("", |(_, d)| d).to_ascii_lowercase();
            by_domain.entry(domain).or_default().push(rcpt.clone());
        }
        for (domain, rcpts) in by_domain {
            let mut session = self.discover(&domain).await?;
            session.login_remote(&self.profile.address, &password, now()).await?;
            let reply = session.transaction(&self.profile.address, &rcpts, &message).await?;
            via.push(format!("{} (RCRAM-MD5): {} {}", session.host, reply.code, one_line(&reply)));
            session.quit().await;
        }
        Ok(Sent { message_id, recipients, via })
    }

    /// `receipt` on a logged-in session (SPEC 8.3).
    pub async fn receipt_on(session: &mut Session, receipt: &Receipt) -> Result<(), ClientError> {
        if !session.offers("RECEIPT") {
            return Err(ClientError::new(format!(
                "{} does not offer RECEIPT (delivery notifications, SPEC 8.3, are not available there)",
                session.host
            )));
        }
        let reply = session.command(&receipt.command_line()).await?;
        if reply.code != 250 {
            return Err(session.refused("RECEIPT", &reply));
        }
        Ok(())
    }

    /// `receipt MESSAGE-ID DECRYPTED|FAILED`.
    pub async fn receipt(&self, message_id: &str, outcome: &str) -> Result<(), ClientError> {
        let receipt = tracking::parse_receipt_argument(&format!("{message_id} {outcome}"))
            .map_err(|e| ClientError::new(format!("receipt: {e}")))?;
        let mut session = self.home().await?;
        let result = Client::receipt_on(&mut session, &receipt).await;
        session.quit().await;
        result
    }

    /// `track [--since T]`: the user's tracking records (SPEC 8.3).
    pub async fn track(&self, since: Option<&str>) -> Result<Vec<Record>, ClientError> {
        let since = match since {
            Some(t) => Some(
                vouchmail_proto::time::parse_rfc3339(t)
                    .ok_or_else(|| ClientError::new(format!("--since '{t}' is not an RFC 3339 time")))?,
            ),
            None => None,
        };
        let mut session = self.home().await?;
        if !session.offers("TRACK") {
            return Err(ClientError::new(format!(
                "{} does not offer TRACK (delivery notifications, SPEC 8.3, are not available there)",
                session.host
            )));
        }
        let reply = session.command(&tracking::track_command_line(since)).await?;
        session.quit().await;
        tracking::parse_track_answer(reply.code, &reply.texts()).map_err(|e| ClientError::new(e.to_string()))
    }

    /// `book QUERY`: the directory lines (SPEC 8.4).
    pub async fn book(&self, query: &str) -> Result<Vec<String>, ClientError> {
        if query.is_empty() || query.contains(['\r', '\n']) {
            return Err(ClientError::new("book: the query must be one non-empty line"));
        }
        let mut session = self.home().await?;
        let reply = session.command(&format!("BOOK {query}")).await?;
        session.quit().await;
        if reply.code != 250 {
            return Err(ClientError::new(format!("BOOK: {} {}", reply.code, one_line(&reply))));
        }
        let mut lines = reply.texts();
        lines.pop();
        Ok(lines)
    }

    fn pop3_address(&self) -> Result<String, ClientError> {
        if let Some(pop3) = &self.profile.pop3_server {
            return Ok(pop3.clone());
        }
        match &self.profile.home_server {
            Some(home) => {
                let host = home.rsplit_once(':').map_or(home.as_str(), |(h, _)| h);
                Ok(format!("{host}:{POP3_PORT}"))
            }
            None => Err(ClientError::new("profile: pop3_server is needed when home_server is found by discovery")),
        }
    }

    /// `fetch`: downloads every message over POP3 (inside STLS), decrypts it,
    /// writes it, deletes it from the server, then sends RECEIPT DECRYPTED or FAILED for
    /// each (SPEC 10). A message that does not decrypt is written as received, and its
    /// receipt is FAILED.
    pub async fn fetch(&self, target: &FetchTarget) -> Result<Vec<Fetched>, ClientError> {
        let key_pem = read_file("key_file", &self.profile.key_file)?;
        let key = PrivateKey::parse(&key_pem).map_err(|e| ClientError::new(format!("key_file: {e}")))?;
        let (cert, _) = self.own_certificate()?;
        if let FetchTarget::Dir(dir) = target {
            std::fs::create_dir_all(dir).map_err(|e| ClientError::new(format!("{}: {e}", dir.display())))?;
        }
        let text = self.pop3_address()?;
        let (host, addrs) = self.resolve(&text, POP3_PORT).await?;
        let mut tcp = None;
        let mut last = String::new();
        for addr in &addrs {
            match tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    tcp = Some(s);
                    break;
                }
                Ok(Err(e)) => last = format!("{addr}: {e}"),
                Err(_) => last = format!("{addr}: connection timed out"),
            }
        }
        let tcp = tcp.ok_or_else(|| ClientError::new(format!("POP3 server {text}: {last}")))?;
        let pop_err =
            |e: vouchmail_server::net::pop3_client::Pop3ClientError| ClientError::new(format!("POP3 {host}: {e}"));
        let (mut pop, _) = Pop3Client::connect(tcp).await.map_err(pop_err)?;
        let capa = pop.capa().await.map_err(pop_err)?;
        // SPEC 10 Trust: only inside TLS; a POP3 server without STLS is an error, never a
        // plaintext session (the login would cross the wire in the clear).
        if !capa.has("STLS") {
            return Err(ClientError::new(format!("POP3 {host} offers no STLS; the client talks only inside TLS")));
        }
        let tls = self.tls.clone().ok_or_else(|| {
            ClientError::new(format!("no CA certificates are available to check POP3 {host} (set tls_ca_file)"))
        })?;
        let tcp = pop.stls().await.map_err(pop_err)?;
        let name = vouchmail_server::net::client_tls::server_name(&host)
            .ok_or_else(|| ClientError::new(format!("{host} is not a TLS server name")))?;
        let stream = tokio::time::timeout(self.timeout, tls.connect(name, tcp))
            .await
            .map_err(|_| ClientError::new(format!("POP3 {host}: TLS handshake timed out")))?
            .map_err(|e| ClientError::new(format!("POP3 {host}: TLS: {e}")))?;
        let downloaded = self.download(Pop3Client::resume(stream), &host, &key, &cert, target).await?;
        let mut fetched = downloaded;
        if fetched.is_empty() {
            return Ok(fetched);
        }
        // RECEIPT for each (SPEC 8.3), on one session with the home server.
        match self.home().await {
            Ok(mut session) => {
                for f in fetched.iter_mut() {
                    let Some(id) = f.message_id.clone() else {
                        f.receipt = Err(ClientError::new("the message has no Message-ID"));
                        continue;
                    };
                    let outcome = if f.decrypted.is_ok() { ReceiptOutcome::Decrypted } else { ReceiptOutcome::Failed };
                    let receipt = Receipt { message_id: id, outcome };
                    f.receipt = Client::receipt_on(&mut session, &receipt).await;
                }
                session.quit().await;
            }
            Err(e) => {
                for f in fetched.iter_mut() {
                    f.receipt = Err(e.clone());
                }
            }
        }
        Ok(fetched)
    }

    async fn download<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        &self,
        mut pop: Pop3Client<S>,
        host: &str,
        key: &PrivateKey,
        cert: &Certificate,
        target: &FetchTarget,
    ) -> Result<Vec<Fetched>, ClientError> {
        let pop_err =
            |e: vouchmail_server::net::pop3_client::Pop3ClientError| ClientError::new(format!("POP3 {host}: {e}"));
        let password = self.password()?;
        pop.authenticate(Mechanism::CramMd5, Credentials::new(self.profile.address.as_str(), password.as_str()))
            .await
            .map_err(|e| {
                ClientError::new(format!(
                    "POP3 {host}: login of {} refused (wrong password?): {e}",
                    self.profile.address
                ))
            })?;
        let list = pop.uidl().await.map_err(pop_err)?;
        let mut fetched = Vec::new();
        for (number, uid) in list {
            let message = pop.retr(number).await.map_err(pop_err)?;
            let message_id =
                header_value(&message, "Message-ID").filter(|id| tracking::valid_message_id(id) && !id.contains(' '));
            // Attacker-made CMS: any failure is a FAILED receipt, never a crash. That
            // includes AuthEnvelopedData whose ICV does not check (RFC 5083 2.2): damaged or
            // forged, it gives no content at all.
            let (bytes, decrypted) = match vouchmail_smime::decrypt(&message, key, cert) {
                // SPEC 10: what decrypts must be a MIME entity; CBC decrypts a damaged or
                // forged ciphertext into garbage, which is no DECRYPTED.
                Ok(entity) if !is_mime_entity(&entity) => {
                    (message.clone(), Err(ClientError::new("decrypted content is not a MIME entity")))
                }
                Ok(entity) => (readable(&message, &entity), Ok(())),
                Err(e) => (message.clone(), Err(ClientError::new(e.to_string()))),
            };
            let written_to = self.write_fetched(target, &uid, &bytes)?;
            pop.dele(number).await.map_err(pop_err)?;
            fetched.push(Fetched {
                uid,
                message_id,
                decrypted,
                written_to,
                receipt: Err(ClientError::new("not sent")),
            });
        }
        // RFC 1939 6: the deletions take effect at QUIT; the new files' names must be on
        // disk first, or a crash could lose mail the server no longer has.
        if let (FetchTarget::Dir(dir), false) = (target, fetched.is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| ClientError::new(format!("{}: {e}", dir.display())))?;
        }
        pop.quit().await.map_err(pop_err)?;
        Ok(fetched)
    }

    fn write_fetched(&self, target: &FetchTarget, uid: &str, bytes: &[u8]) -> Result<PathBuf, ClientError> {
        match target {
            FetchTarget::Dir(dir) => {
                let safe: String = uid
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
                    .collect();
                let path = dir.join(format!("{safe}.eml"));
                write_private(&path, bytes)?;
                Ok(path)
            }
            FetchTarget::Mbox(path) => {
                use std::os::unix::fs::OpenOptionsExt;
                let created = !path.exists();
                let mut file = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| ClientError::new(format!("{}: {e}", path.display())))?;
                let from = header_value(bytes, "From").unwrap_or_else(|| "MAILER-DAEMON".into());
                let sender = from
                    .rsplit_once('<')
                    .map_or(from.as_str(), |(_, a)| a.trim_end_matches('>'))
                    .split_whitespace()
                    .next()
                    .unwrap_or("MAILER-DAEMON")
                    .to_string();
                let mut out = format!("From {sender} {}\n", mbox_date()).into_bytes();
                let text = String::from_utf8_lossy(bytes).replace("\r\n", "\n");
                for line in text.split_inclusive('\n') {
                    // mboxrd: any run of '>' before "From " gets one more.
                    if line.trim_start_matches('>').starts_with("From ") {
                        out.push(b'>');
                    }
                    out.extend_from_slice(line.as_bytes());
                }
                if !out.ends_with(b"\n") {
                    out.push(b'\n');
                }
                out.push(b'\n');
                // On disk before the DELE that follows.
                file.write_all(&out)
                    .and_then(|_| file.sync_data())
                    .map_err(|e| ClientError::new(format!("{}: {e}", path.display())))?;
                // A new mbox's name must be on disk too before the server deletes.
                if created {
                    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                    std::fs::File::open(folder)
                        .and_then(|d| d.sync_all())
                        .map_err(|e| ClientError::new(format!("{}: {e}", folder.display())))?;
                }
                Ok(path.clone())
            }
        }
    }
}

/// The asctime-style date of an mbox `From ` line.
fn mbox_date() -> String {
    let (y, mo, d, h, mi, s, wd) = vouchmail_proto::time::unix_seconds_to_civil(now());
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let day = DAYS.get(wd as usize).unwrap_or(&"Sun");
    let month = MONTHS.get((mo as usize).saturating_sub(1)).unwrap_or(&"Jan");
    format!("{day} {month} {d:2} {h:02}:{mi:02}:{s:02} {y}")
}

/// A CERT reply (SPEC 8.1), by `vouchmail_proto::messenger::replies::parse_cert_answer`.
/// An answer for an address must name that address (SPEC 10 Trust: a server, or whoever
/// is on the path, must not hand us someone else's certificate for it); for a published
/// ID, the address it resolved to is used and shown.
pub fn parse_cert_reply(target: &str, reply: &ServerReply) -> Result<(String, String), ClientError> {
    let (address, pem) = vouchmail_proto::messenger::replies::parse_cert_answer(reply.code, &reply.texts())
        .map_err(|e| ClientError::new(format!("CERT {target}: {e}")))?;
    if target.contains('@') && !address.eq_ignore_ascii_case(target) {
        return Err(ClientError::new(format!(
            "CERT {target}: the answer is for {address}, not the address asked for; not used"
        )));
    }
    Ok((address, pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_unfold_and_stop_at_the_body() {
        let m = b"From: a@b\r\nMessage-ID:\r\n <x@y>\r\nSubject: s\r\n\r\nMessage-ID: <body@z>\r\n";
        assert_eq!(header_value(m, "message-id").as_deref(), Some("<x@y>"));
        assert_eq!(header_value(m, "To"), None);
    }

    #[test]
    fn plain_input_becomes_text_plain_and_an_entity_stays() {
        assert!(entity_of(b"hello").starts_with(b"Content-Type: text/plain; charset=utf-8\r\n"));
        let e = b"content-type: text/html\r\n\r\n<p>x</p>";
        assert_eq!(entity_of(e), e.to_vec());
    }

    #[test]
    fn only_a_mime_entity_counts_as_decrypted() {
        assert!(is_mime_entity(b"Content-Type: text/plain\r\n\r\nhello"));
        assert!(is_mime_entity(b"MIME-Version: 1.0\nContent-Type: multipart/mixed;\n boundary=x\n\n--x--\n"));
        assert!(!is_mime_entity(b"\x8f\x01garbage\xff\r\n\r\nmore"));
        assert!(!is_mime_entity(b"hello, no header at all"));
        assert!(!is_mime_entity(b"Subject: no content type\r\n\r\nbody"));
        assert!(!is_mime_entity(b"not a field line\r\nContent-Type: text/plain\r\n\r\n"));
    }

    #[test]
    fn a_cert_answer_for_another_address_is_not_used() {
        let mut parser = vouchmail_proto::messenger::ReplyParser::default();
        parser.feed(b"250-mallory@evil.test\r\n250------BEGIN CERTIFICATE-----\r\n250-AAAA\r\n250 -----END CERTIFICATE-----\r\n");
        let reply = parser.next_reply().unwrap().unwrap();
        let error = parse_cert_reply("abc@lr.test", &reply).unwrap_err().to_string();
        assert!(error.contains("not the address asked for"), "{error}");
        // A published ID resolves to whatever address the answer names.
        assert_eq!(parse_cert_reply("1234567F", &reply).unwrap().0, "mallory@evil.test");
        assert_eq!(parse_cert_reply("MALLORY@evil.test", &reply).unwrap().0, "mallory@evil.test");
    }

    #[test]
    fn cert_replies_parse_or_fail_on_one_line() {
        let reply = |wire: &[u8]| {
            let mut parser = vouchmail_proto::messenger::ReplyParser::default();
            parser.feed(wire);
            parser.next_reply().unwrap().unwrap()
        };
        let ok = reply(
            b"250-abc@lr.test\r\n250------BEGIN CERTIFICATE-----\r\n250-AAAA\r\n250 -----END CERTIFICATE-----\r\n",
        );
        let (a, pem) = parse_cert_reply("1234567F", &ok).unwrap();
        assert_eq!(a, "abc@lr.test");
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\nAAAA\n"));
        let no = reply(b"550-5.1.1 No such\r\n550 thing\r\n");
        let e = parse_cert_reply("x", &no).unwrap_err();
        assert!(!e.0.contains('\n') && e.0.contains("550"), "{e}");
        let bad = reply(b"250 not an address\r\n");
        assert!(parse_cert_reply("x", &bad).is_err());
    }
}
