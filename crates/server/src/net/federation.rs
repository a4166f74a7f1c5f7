//! The federation client (SPEC 8): server-to-server calls on the Messenger port. It finds
//! a domain's home server by discovery, connects from `[messenger] source_address`, sends
//! EHLO with this server's Messenger hostname, uses STARTTLS when offered, and keeps idle
//! connections per domain for the next call. CERT relay and Entity Index pulls use it; so
//! will the RCRAM-MD5 verifier, the NOTIFY outbox and `vouchmail client` (part 2).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use vouchmail_proto::messenger::{ReplyLimits, ReplyParser, ServerReply};

use super::discovery::{home_servers, DiscoveryError};
use crate::config::Config;
use crate::net::client_tls::{server_name, Connectors};
use crate::net::dns::Dns;
use crate::net::route::TlsPolicy;
use crate::net::stream::Connection;

/// A connection to a peer, in the clear or inside TLS.
type PeerStream = Connection<tokio_rustls::client::TlsStream<TcpStream>>;

/// Limits of an ordinary reply (EHLO, CERT): a certificate chain fits.
pub const SMALL_REPLY: (usize, usize) = (512, 64 * 1024);
/// Limits of an ENTITIES reply.
pub const LARGE_REPLY: (usize, usize) = (20_000, 2 * 1024 * 1024);

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// No home server could be found or reached (SPEC 8.1: 451 4.4.1).
    Unreachable(String),
    /// The peer broke the protocol or the connection dropped mid-call.
    Failed(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Unreachable(why) => write!(f, "unreachable: {why}"),
            ClientError::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

/// How the client calls (from `[messenger]`).
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub hostname: String,
    pub source_address: Option<IpAddr>,
    pub port: u16,
    pub starttls: bool,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub idle: Duration,
    pub max_idle_per_peer: usize,
}

impl ClientOptions {
    pub fn from_config(config: &Config) -> ClientOptions {
        let m = &config.messenger;
        ClientOptions {
            hostname: config.messenger_hostname().to_string(),
            source_address: m.source_address,
            port: m.port,
            starttls: m.starttls,
            connect_timeout: Duration::from_secs(m.connect_timeout_secs),
            command_timeout: Duration::from_secs(m.command_timeout_secs),
            idle: Duration::from_secs(m.idle_secs),
            max_idle_per_peer: m.max_idle_per_peer,
        }
    }
}

/// One open session with a domain's home server, greeted and (when offered) encrypted.
pub struct PeerConnection {
    stream: PeerStream,
    parser: ReplyParser,
    /// The domain whose home server this is.
    pub domain: String,
    /// The host discovery gave, and the address connected to.
    pub host: String,
    pub addr: SocketAddr,
    /// EHLO keywords of the last EHLO (upper case).
    pub extensions: Vec<String>,
    /// The SASL mechanisms of the EHLO `AUTH` line (upper case), e.g. X-RCRAM-VERIFY.
    pub auth_mechanisms: Vec<String>,
    pub tls: bool,
    command_timeout: Duration,
}

impl PeerConnection {
    /// The peer's address: what "the peer is the home server of a domain" is checked
    /// against (SPEC 8.4).
    pub fn peer_ip(&self) -> IpAddr {
        self.addr.ip()
    }

    pub fn offers(&self, keyword: &str) -> bool {
        self.extensions.iter().any(|k| k.eq_ignore_ascii_case(keyword))
    }

    /// The peer lists this SASL mechanism in EHLO (RFC 4954 3).
    pub fn offers_auth(&self, mechanism: &str) -> bool {
        self.auth_mechanisms.iter().any(|m| m.eq_ignore_ascii_case(mechanism))
    }

    async fn read_reply(&mut self, limits: (usize, usize)) -> Result<ServerReply, ClientError> {
        self.parser.set_limits(ReplyLimits::new(limits.0, limits.1));
        let mut buffer = [0u8; 8192];
        loop {
            match self.parser.next_reply() {
                Ok(Some(reply)) => return Ok(reply),
                Ok(None) => {}
                Err(e) => return Err(ClientError::Failed(format!("{}: {e}", self.host))),
            }
            let read = tokio::time::timeout(self.command_timeout, self.stream.read(&mut buffer)).await;
            match read {
                Ok(Ok(0)) => return Err(ClientError::Failed(format!("{} closed the connection", self.host))),
                Ok(Ok(n)) => self.parser.feed(&buffer[..n]),
                Ok(Err(e)) => return Err(ClientError::Failed(format!("{}: {e}", self.host))),
                Err(_) => return Err(ClientError::Failed(format!("{}: no reply within the timeout", self.host))),
            }
        }
    }

    /// Sends one command line (CRLF added) and reads its reply. `line` must hold no CR or
    /// LF: callers build it from parsed values only.
    pub async fn command(&mut self, line: &str, limits: (usize, usize)) -> Result<ServerReply, ClientError> {
        if line.contains(['\r', '\n']) {
            return Err(ClientError::Failed("a command line may not hold CR or LF".into()));
        }
        let wire = format!("{line}\r\n");
        let written = tokio::time::timeout(self.command_timeout, self.stream.write_all(wire.as_bytes())).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ClientError::Failed(format!("{}: {e}", self.host))),
            Err(_) => return Err(ClientError::Failed(format!("{}: write timed out", self.host))),
        }
        self.read_reply(limits).await
    }

    /// QUIT and close (RFC 5321 4.1.1.10), without waiting long for the peer.
    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = self.stream.write_all(b"QUIT\r\n").await;
            let _ = self.read_reply(SMALL_REPLY).await;
            let _ = self.stream.shutdown().await;
        })
        .await;
    }
}

/// The client, shared by every part of one server.
pub struct FederationClient {
    dns: Arc<Dns>,
    options: ClientOptions,
    tls: Option<TlsConnector>,
    /// Idle connections by domain, with when each went idle.
    pool: Mutex<HashMap<String, Vec<(PeerConnection, Instant)>>>,
}

impl FederationClient {
    pub fn new(dns: Arc<Dns>, options: ClientOptions) -> Result<FederationClient, String> {
        let tls = if options.starttls {
            Some(
                Connectors::new(None)
                    .map_err(|e| e.to_string())?
                    .for_policy(TlsPolicy::May)
                    .cloned()
                    .ok_or("no TLS connector")?,
            )
        } else {
            None
        };
        Ok(FederationClient { dns, options, tls, pool: Mutex::new(HashMap::new()) })
    }

    pub fn from_config(config: &Config) -> Result<FederationClient, String> {
        FederationClient::new(Dns::for_config(config).map_err(|e| e.to_string())?, ClientOptions::from_config(config))
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    pub fn dns(&self) -> &Arc<Dns> {
        &self.dns
    }

    /// A new connection to `domain`'s home server: each discovered host and each of its
    /// addresses in turn, until one greets with 220 and answers EHLO.
    pub async fn connect(&self, domain: &str) -> Result<PeerConnection, ClientError> {
        let servers = home_servers(&self.dns, domain, self.options.port).await.map_err(|e| match e {
            DiscoveryError::None(why) | DiscoveryError::Temporary(why) => ClientError::Unreachable(why),
        })?;
        let mut errors = Vec::new();
        for server in servers {
            let ips = match self.dns.addresses(&server.host).await {
                Ok(ips) => ips,
                Err(e) => {
                    errors.push(format!("{}: {e}", server.host));
                    continue;
                }
            };
            for ip in ips {
                let addr = SocketAddr::new(ip, server.port);
                match self.open(domain, &server.host, addr).await {
                    Ok(connection) => return Ok(connection),
                    Err(e) => {
                        tracing::debug!(%domain, host = %server.host, %addr, error = %e, "Messenger peer not usable");
                        errors.push(format!("{addr}: {e}"));
                    }
                }
            }
        }
        Err(ClientError::Unreachable(format!("home server of {domain}: {}", errors.join("; "))))
    }

    async fn tcp(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        // SPEC 8: bound to the configured source address, so the peer can check who calls.
        if let Some(source) = self.options.source_address.filter(|s| s.is_ipv4() == addr.is_ipv4()) {
            socket.bind(SocketAddr::new(source, 0))?;
        }
        let stream = tokio::time::timeout(self.options.connect_timeout, socket.connect(addr))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn open(&self, domain: &str, host: &str, addr: SocketAddr) -> Result<PeerConnection, ClientError> {
        let tcp = self.tcp(addr).await.map_err(|e| ClientError::Unreachable(e.to_string()))?;
        let mut connection = PeerConnection {
            stream: Connection::Plain(tcp),
            parser: ReplyParser::strict(ReplyLimits::new(SMALL_REPLY.0, SMALL_REPLY.1)),
            domain: domain.to_ascii_lowercase(),
            host: host.to_string(),
            addr,
            extensions: Vec::new(),
            auth_mechanisms: Vec::new(),
            tls: false,
            command_timeout: self.options.command_timeout,
        };
        let greeting = connection.read_reply(SMALL_REPLY).await?;
        if greeting.code != 220 {
            return Err(ClientError::Unreachable(format!("greeting {} {}", greeting.code, greeting.last_line())));
        }
        self.ehlo(&mut connection).await?;
        if let Some(tls) = self.tls.as_ref().filter(|_| connection.offers("STARTTLS")) {
            let reply = connection.command("STARTTLS", SMALL_REPLY).await?;
            if reply.code != 220 {
                return Err(ClientError::Unreachable(format!(
                    "STARTTLS refused: {} {}",
                    reply.code,
                    reply.last_line()
                )));
            }
            let name = server_name(host)
                .or_else(|| server_name(&addr.ip().to_string()))
                .ok_or_else(|| ClientError::Failed(format!("{host} is not a TLS server name")))?;
            let Connection::Plain(tcp) = std::mem::replace(&mut connection.stream, Connection::Closed) else {
                return Err(ClientError::Failed("connection not in the clear".into()));
            };
            let handshake = tokio::time::timeout(self.options.command_timeout, tls.connect(name, tcp)).await;
            let stream = match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return Err(ClientError::Unreachable(format!("TLS handshake: {e}"))),
                Err(_) => return Err(ClientError::Unreachable("TLS handshake timed out".into())),
            };
            connection.stream = Connection::Tls(Box::new(stream));
            connection.tls = true;
            // RFC 3207 4.2: everything is forgotten; greet again.
            connection.parser = ReplyParser::strict(ReplyLimits::new(SMALL_REPLY.0, SMALL_REPLY.1));
            self.ehlo(&mut connection).await?;
        }
        Ok(connection)
    }

    async fn ehlo(&self, connection: &mut PeerConnection) -> Result<(), ClientError> {
        let reply = connection.command(&format!("EHLO {}", self.options.hostname), SMALL_REPLY).await?;
        if reply.code != 250 {
            return Err(ClientError::Unreachable(format!("EHLO refused: {} {}", reply.code, reply.last_line())));
        }
        connection.extensions = reply.ehlo_keywords();
        connection.auth_mechanisms = reply
            .lines
            .iter()
            .skip(1)
            .filter_map(|l| l.split_once(' ').filter(|(k, _)| k.eq_ignore_ascii_case("AUTH")).map(|(_, m)| m))
            .flat_map(|m| m.split(' ').filter(|w| !w.is_empty()).map(str::to_ascii_uppercase))
            .collect();
        Ok(())
    }

    /// An idle connection to `domain`'s home server if one is kept, else a new one.
    pub async fn checkout(&self, domain: &str) -> Result<(PeerConnection, bool), ClientError> {
        let domain = domain.to_ascii_lowercase();
        let idle = self.options.idle;
        let reused = {
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            let list = pool.entry(domain.clone()).or_default();
            list.retain(|(_, since)| since.elapsed() < idle);
            list.pop().map(|(connection, _)| connection)
        };
        match reused {
            Some(connection) => Ok((connection, true)),
            None => Ok((self.connect(&domain).await?, false)),
        }
    }

    /// Gives a connection back for the next call (or closes it when none are kept).
    pub fn checkin(&self, connection: PeerConnection) {
        if self.options.idle.is_zero() {
            tokio::spawn(connection.quit());
            return;
        }
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        let list = pool.entry(connection.domain.clone()).or_default();
        if list.len() < self.options.max_idle_per_peer {
            list.push((connection, Instant::now()));
        } else {
            tokio::spawn(connection.quit());
        }
    }

    /// One command to `domain`'s home server on a kept or new connection. A kept
    /// connection the peer closed meanwhile is replaced once. Returns the reply and the
    /// address of the peer that gave it.
    pub async fn call(
        &self,
        domain: &str,
        line: &str,
        limits: (usize, usize),
    ) -> Result<(ServerReply, IpAddr), ClientError> {
        if line.contains(['\r', '\n']) {
            return Err(ClientError::Failed("a command line may not hold CR or LF".into()));
        }
        let (mut connection, reused) = self.checkout(domain).await?;
        let reply = match connection.command(line, limits).await {
            Ok(reply) => reply,
            Err(_) if reused => {
                connection = self.connect(domain).await?;
                connection.command(line, limits).await?
            }
            Err(e) => return Err(e),
        };
        let ip = connection.peer_ip();
        // 421: the peer is closing (RFC 5321 3.8); do not keep the connection.
        if reply.code != 421 {
            self.checkin(connection);
        }
        Ok((reply, ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::TcpListener;
    use vouchmail_testkit::dns::TestDns;

    /// What a fake home server saw: (source address, every command line).
    type Seen = Arc<Mutex<Vec<(IpAddr, Vec<String>)>>>;

    /// A home server that greets, answers EHLO without STARTTLS, answers CERT with a fixed
    /// multi-line reply, and closes after `per_connection` CERTs.
    async fn fake_home(ip: &str, per_connection: usize) -> (SocketAddr, Seen) {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Seen = Arc::default();
        let record = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let record = Arc::clone(&record);
                tokio::spawn(async move {
                    let index = {
                        let mut seen = record.lock().unwrap();
                        seen.push((peer.ip(), Vec::new()));
                        seen.len() - 1
                    };
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    write.write_all(b"220 home.test ESMTP\r\n").await.unwrap();
                    let mut certs = 0;
                    while let Ok(Some(line)) = lines.next_line().await {
                        record.lock().unwrap()[index].1.push(line.clone());
                        let reply: &[u8] = match line.split(' ').next().unwrap_or("") {
                            "EHLO" => b"250-home.test\r\n250-PIPELINING\r\n250 CERT\r\n",
                            "CERT" => b"250-a@home.test\r\n250------BEGIN CERTIFICATE-----\r\n250 -----END CERTIFICATE-----\r\n",
                            "QUIT" => b"221 bye\r\n",
                            _ => b"500 what\r\n",
                        };
                        write.write_all(reply).await.unwrap();
                        if line.starts_with("CERT") {
                            certs += 1;
                            if certs == per_connection {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, seen)
    }

    fn options(source: &str) -> ClientOptions {
        ClientOptions {
            hostname: "mail.galkam.test".into(),
            source_address: Some(source.parse().unwrap()),
            port: 21025,
            starttls: true,
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(5),
            idle: Duration::from_secs(30),
            max_idle_per_peer: 2,
        }
    }

    #[tokio::test]
    async fn calls_from_the_source_address_with_our_name_and_reuses_the_connection() {
        let (addr, seen) = fake_home("127.0.0.3", usize::MAX).await;
        let (closing, closing_seen) = fake_home("127.0.0.3", 1).await;
        let dns = TestDns::builder()
            .srv("_messenger._tcp.home.test", 10, 1, addr.port(), "mail.home.test")
            .srv("_messenger._tcp.closing.test", 10, 1, closing.port(), "mail.home.test")
            .a("mail.home.test", "127.0.0.3")
            .start()
            .await;
        let client = FederationClient::new(Dns::shared(&[dns.addr()]).unwrap(), options("127.0.0.2")).unwrap();
        for _ in 0..3 {
            let (reply, ip) = client.call("home.test", "CERT a@home.test", SMALL_REPLY).await.unwrap();
            assert_eq!(reply.code, 250);
            assert_eq!(
                reply.wire,
                b"250-a@home.test\r\n250------BEGIN CERTIFICATE-----\r\n250 -----END CERTIFICATE-----\r\n"
            );
            assert_eq!(ip, "127.0.0.3".parse::<IpAddr>().unwrap());
        }
        let sessions = seen.lock().unwrap().clone();
        assert_eq!(sessions.len(), 1, "one connection for three calls: {sessions:?}");
        assert_eq!(sessions[0].0, "127.0.0.2".parse::<IpAddr>().unwrap(), "bound to the source address");
        assert_eq!(sessions[0].1[0], "EHLO mail.galkam.test");
        // A kept connection the peer closed is replaced without the caller noticing.
        for _ in 0..2 {
            let (reply, _) = client.call("closing.test", "CERT a@home.test", SMALL_REPLY).await.unwrap();
            assert_eq!(reply.code, 250);
        }
        assert_eq!(closing_seen.lock().unwrap().len(), 2);
        // Nothing listening, or nothing in DNS: unreachable.
        assert!(matches!(
            client.call("nowhere.test", "CERT a@nowhere.test", SMALL_REPLY).await,
            Err(ClientError::Unreachable(_))
        ));
        let line = client.call("home.test", "CERT a\r\nQUIT", SMALL_REPLY).await;
        assert!(matches!(line, Err(ClientError::Failed(_))), "no CR or LF in a command line");
    }
}
