//! The federation client (SPEC 8): server-to-server calls on the Messenger port. It finds
//! a domain's home server by discovery, connects from `[messenger] source_address`, sends
//! EHLO with this server's Messenger hostname, uses STARTTLS when offered, and keeps idle
//! connections per domain for the next call. CERT relay, Entity Index pulls, the RCRAM-MD5
//! verifier and the NOTIFY outbox use it. Every session runs over the one SMTP client shell
//! ([`crate::net::smtp_client`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_rustls::TlsConnector;
use vouchmail_proto::smtp::client::{Capabilities, ClientConfig, ReplyLimits, ServerReply, Timeouts, TlsMode};

use super::discovery::{home_servers, DiscoveryError};
use crate::config::Config;
use crate::net::client_tls::{ClientIdentity, Connectors, PeerTrust};
use crate::net::dns::Dns;
use crate::net::route::TlsPolicy;
use crate::net::smtp_client::{Session, Target};
use crate::support::error::Error;
use crate::support::session_threads;

/// Limits of an ordinary reply (EHLO, CERT): a certificate chain fits.
pub const SMALL_REPLY: ReplyLimits = ReplyLimits::new(512, 64 * 1024);
/// Limits of an ENTITIES reply.
pub const LARGE_REPLY: ReplyLimits = ReplyLimits::new(20_000, 2 * 1024 * 1024);

/// How the client calls (from `[messenger]`).
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub hostname: String,
    pub source_address: Option<IpAddr>,
    pub port: u16,
    pub starttls: bool,
    /// SPEC 8: STARTTLS required and the peer's certificate verified (`peer_tls =
    /// "verify"`), against the system's roots plus `ca_file`.
    pub verify_peers: bool,
    pub ca_file: Option<std::path::PathBuf>,
    /// Our certificate and key, presented as a TLS client certificate so that a home
    /// server can know us by it (SPEC 8.2 step 3): the configured `[tls]` pair, or the
    /// self-signed one in the data folder. Not presented when unreadable.
    pub identity: Option<(PathBuf, PathBuf)>,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// One call in all, whatever the per-read timeouts allow (SPEC 8).
    pub call_deadline: Duration,
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
            verify_peers: m.peer_tls != "insecure",
            ca_file: m.ca_file.clone(),
            identity: Some(crate::net::tls::certificate_files(config)),
            connect_timeout: Duration::from_secs(m.connect_timeout_secs),
            command_timeout: Duration::from_secs(m.command_timeout_secs),
            call_deadline: Duration::from_secs(m.call_deadline_secs),
            idle: Duration::from_secs(m.idle_secs),
            max_idle_per_peer: m.max_idle_per_peer,
        }
    }

    /// The SMTP client's settings: our Messenger name in EHLO, STARTTLS when offered (and
    /// a refusal ends the call), strict replies (a CERT reply is passed on unchanged).
    fn session_config(&self) -> ClientConfig {
        ClientConfig {
            // SPEC 8 "Trust between servers": no plaintext fallback when verifying.
            tls: match (self.verify_peers, self.starttls) {
                (true, _) => TlsMode::Required,
                (false, true) => TlsMode::WhenOffered,
                (false, false) => TlsMode::Never,
            },
            timeouts: Timeouts::all(self.command_timeout),
            strict_replies: true,
            reply_limits: SMALL_REPLY,
            ..ClientConfig::new(self.hostname.clone())
        }
    }
}

/// One open session with a domain's home server, greeted and (when offered) encrypted.
pub struct PeerConnection {
    session: Session,
    /// The domain whose home server this is.
    pub domain: String,
    /// The session thread it was opened on, whose reactor serves its socket (None: the
    /// shared runtime's).
    home_thread: Option<usize>,
}

impl PeerConnection {
    /// The peer's address: what "the peer is the home server of a domain" is checked
    /// against (SPEC 8.4).
    pub fn peer_ip(&self) -> IpAddr {
        self.session.peer_ip()
    }

    /// The host discovery gave.
    pub fn host(&self) -> &str {
        &self.session.target.host
    }

    pub fn is_tls(&self) -> bool {
        self.session.tls
    }

    /// What the peer announced in EHLO (keywords, SASL mechanisms).
    pub fn capabilities(&self) -> &Capabilities {
        self.session.capabilities()
    }

    /// Sends one command line and reads its reply within `limits`. `line` must hold no CR
    /// or LF: callers build it from parsed values only.
    pub async fn command(&mut self, line: &str, limits: ReplyLimits) -> Result<ServerReply, Error> {
        self.session.command_with_limits(line, limits).await
    }

    /// QUIT and close (RFC 5321 4.1.1.10).
    pub async fn quit(self) {
        self.session.quit().await;
    }
}

/// A domain, and the session thread a connection to its home server was opened on.
type PoolKey = (String, Option<usize>);

/// The client, shared by every part of one server.
pub struct FederationClient {
    dns: Arc<Dns>,
    options: ClientOptions,
    tls: Option<TlsConnector>,
    /// What vouches for a peer, both ways (SPEC 8); None without roots.
    trust: Option<PeerTrust>,
    /// Idle connections by domain and the session thread they were opened on, with when
    /// each went idle: a session reuses only its own thread's, whose socket events its
    /// own thread's reactor sees (one from another thread's pool makes every reply wake
    /// that thread first).
    pool: Mutex<HashMap<PoolKey, Vec<(PeerConnection, Instant)>>>,
}

impl FederationClient {
    pub fn new(dns: Arc<Dns>, options: ClientOptions) -> Result<FederationClient, Error> {
        let trust = PeerTrust::load(options.ca_file.as_deref()).map_err(|e| e.about("messenger.ca_file"))?;
        let tls = if options.verify_peers {
            // SPEC 8 "Trust between servers": verified, or no call at all.
            let identity = options.identity.as_ref().and_then(|(cert, key)| match ClientIdentity::load(cert, key) {
                Ok(identity) => Some(identity),
                Err(e) => {
                    tracing::debug!(error = %e, "no client certificate for Messenger calls");
                    None
                }
            });
            let connector = trust.as_ref().map(|trust| trust.connector(identity.as_ref())).transpose()?;
            if connector.is_none() {
                // The server still starts; every federation call fails, saying why.
                tracing::warn!("no CA certificates to verify Messenger peers against: set [messenger] ca_file (or install the system's CA bundle)");
            }
            connector
        } else if options.starttls {
            let connectors = Connectors::new(None).map_err(|e| e.about("messenger client"))?;
            Some(
                connectors
                    .for_policy(TlsPolicy::May)
                    .cloned()
                    .ok_or_else(|| Error::tls("messenger client", "no TLS connector"))?,
            )
        } else {
            None
        };
        Ok(FederationClient { dns, options, tls, trust, pool: Mutex::new(HashMap::new()) })
    }

    pub fn from_config(config: &Config) -> Result<FederationClient, Error> {
        let dns = Dns::for_config(config).map_err(|e| e.about("nameservers"))?;
        FederationClient::new(dns, ClientOptions::from_config(config))
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    pub fn dns(&self) -> &Arc<Dns> {
        &self.dns
    }

    /// Whether a peer's verified client certificate chain names `host` (SPEC 8.2 step 3),
    /// against the roots our calls use.
    pub fn vouches_for(&self, chain: &[rustls::pki_types::CertificateDer<'_>], host: &str) -> bool {
        self.trust.as_ref().is_some_and(|trust| trust.vouches_for(chain, host))
    }

    /// A new connection to `domain`'s home server: each discovered host and each of its
    /// addresses in turn, until one greets with 220 and answers EHLO.
    /// No home server found or reachable is a temporary DNS or network error (SPEC 8.1:
    /// 451 4.4.1).
    pub async fn connect(&self, domain: &str) -> Result<PeerConnection, Error> {
        let servers = home_servers(&self.dns, domain, self.options.port).await.map_err(|e| match e {
            DiscoveryError::None(why) | DiscoveryError::Temporary(why) => {
                Error::dns(format!("home server of {domain}"), why).temporary(true)
            }
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
        Err(Error::network(format!("home server of {domain}"), errors.join("; ")))
    }

    async fn open(&self, domain: &str, host: &str, addr: SocketAddr) -> Result<PeerConnection, Error> {
        let target = Target { host: host.to_string(), addr };
        let config = self.options.session_config();
        // SPEC 8: from the configured source address, so the peer can check who calls.
        let source = self.options.source_address;
        let open = async {
            let mut session = Session::connect(&target, source, self.options.connect_timeout, config).await?;
            session.start(self.tls.as_ref()).await?;
            Ok(session)
        };
        let session = open.await.map_err(|e: crate::net::smtp_client::OpenError| e.error())?;
        Ok(PeerConnection { session, domain: domain.to_ascii_lowercase(), home_thread: session_threads::current() })
    }

    /// An idle connection to `domain`'s home server if one is kept, else a new one.
    pub async fn checkout(&self, domain: &str) -> Result<(PeerConnection, bool), Error> {
        let domain = domain.to_ascii_lowercase();
        let idle = self.options.idle;
        let reused = {
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            let list = pool.entry((domain.clone(), session_threads::current())).or_default();
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
        let list = pool.entry((connection.domain.clone(), connection.home_thread)).or_default();
        if list.len() < self.options.max_idle_per_peer {
            list.push((connection, Instant::now()));
        } else {
            tokio::spawn(connection.quit());
        }
    }

    /// One command to `domain`'s home server on a kept or new connection. A kept
    /// connection the peer closed meanwhile is replaced once. Returns the reply and the
    /// address of the peer that gave it.
    pub async fn call(&self, domain: &str, line: &str, limits: ReplyLimits) -> Result<(ServerReply, IpAddr), Error> {
        if line.contains(['\r', '\n']) {
            return Err(Error::invalid("a command line may not hold CR or LF"));
        }
        // SPEC 8: an overall deadline, so a peer that trickles (each read in time, the
        // reply never complete) holds only this call, and only so long.
        let deadline = self.options.call_deadline;
        match tokio::time::timeout(deadline, self.call_unbounded(domain, line, limits)).await {
            Ok(result) => result,
            Err(_) => Err(Error::network(
                domain,
                format!("no complete answer within the call deadline of {} s", deadline.as_secs()),
            )),
        }
    }

    async fn call_unbounded(
        &self,
        domain: &str,
        line: &str,
        limits: ReplyLimits,
    ) -> Result<(ServerReply, IpAddr), Error> {
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
    use crate::support::error::ErrorKind;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
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

    /// DNS naming mail.home.test (127.0.0.3), on these ports, the home server of two domains.
    async fn two_homes(first: (&str, u16), second: (&str, u16)) -> TestDns {
        TestDns::builder()
            .srv(&format!("_messenger._tcp.{}", first.0), 10, 1, first.1, "mail.home.test")
            .srv(&format!("_messenger._tcp.{}", second.0), 10, 1, second.1, "mail.home.test")
            .a("mail.home.test", "127.0.0.3")
            .start()
            .await
    }

    fn options(source: &str) -> ClientOptions {
        ClientOptions {
            hostname: "mail.galkam.test".into(),
            source_address: Some(source.parse().unwrap()),
            port: 21025,
            starttls: true,
            verify_peers: false,
            ca_file: None,
            identity: None,
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(5),
            call_deadline: Duration::from_secs(60),
            idle: Duration::from_secs(30),
            max_idle_per_peer: 2,
        }
    }

    #[tokio::test]
    async fn calls_from_the_source_address_with_our_name_and_reuses_the_connection() {
        let (addr, seen) = fake_home("127.0.0.3", usize::MAX).await;
        let (closing, closing_seen) = fake_home("127.0.0.3", 1).await;
        let dns = two_homes(("home.test", addr.port()), ("closing.test", closing.port())).await;
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
        // Nothing listening, or nothing in DNS: unreachable, for now.
        let nowhere = client.call("nowhere.test", "CERT a@nowhere.test", SMALL_REPLY).await.unwrap_err();
        assert!(matches!(nowhere.kind(), ErrorKind::Dns | ErrorKind::Network), "{nowhere}");
        assert!(nowhere.is_temporary());
        let line = client.call("home.test", "CERT a\r\nQUIT", SMALL_REPLY).await.unwrap_err();
        assert_eq!(line.kind(), ErrorKind::Invalid, "no CR or LF in a command line");
    }

    /// A kept connection is reused on the session thread that opened it, whose reactor
    /// serves its socket, and not by a session on another thread (nor by a job on the
    /// shared runtime).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_kept_connection_is_reused_on_the_session_thread_that_opened_it() {
        let (addr, seen) = fake_home("127.0.0.3", usize::MAX).await;
        let dns = two_homes(("home.test", addr.port()), ("unused.test", 9)).await;
        let client =
            Arc::new(FederationClient::new(Dns::shared(&[dns.addr()]).unwrap(), options("127.0.0.2")).unwrap());
        let threads = crate::support::session_threads::SessionThreads::start(2).unwrap();
        let dispatch = threads.dispatch();
        let call_on = |thread: Option<usize>| {
            let client = Arc::clone(&client);
            let (done, result) = tokio::sync::oneshot::channel();
            let call = async move {
                let called = client.call("home.test", "CERT a@home.test", SMALL_REPLY).await.map(|(r, _)| r.code);
                let _ = done.send(called.map_err(|e| e.to_string()));
            };
            match thread {
                Some(index) => drop(dispatch.spawn_on(index, call)),
                None => drop(tokio::spawn(call)),
            }
            result
        };
        let connections = || seen.lock().unwrap().len();
        for (thread, expected) in
            [(Some(0), 1), (Some(0), 1), (Some(1), 2), (Some(0), 2), (Some(1), 2), (None, 3), (None, 3)]
        {
            assert_eq!(call_on(thread).await.unwrap(), Ok(250));
            assert_eq!(connections(), expected, "connections after a call on {thread:?}");
        }
    }

    /// Issue 19 item 7: a peer that answers CERT one byte at a time, each byte within the
    /// per-read timeout, is cut off at the call's deadline; another peer's call meanwhile
    /// is not held up.
    #[tokio::test]
    async fn a_trickling_peer_is_cut_off_at_the_call_deadline() {
        let listener = TcpListener::bind(("127.0.0.3", 0)).await.unwrap();
        let slow = listener.local_addr().unwrap();
        let trickler = tokio::spawn(async move {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            let _ = write.write_all(b"220 slow.test ESMTP\r\n").await;
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("EHLO") {
                    let _ = write.write_all(b"250-slow.test\r\n250 CERT\r\n").await;
                    continue;
                }
                // Bounded: at most 60 bytes, one every 200 ms.
                for byte in b"250-a@slow.test\r\n250-".iter().cycle().take(60) {
                    if write.write_all(&[*byte]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                return;
            }
        });
        let (fast, _) = fake_home("127.0.0.3", usize::MAX).await;
        let dns = two_homes(("slow.test", slow.port()), ("home.test", fast.port())).await;
        let options = ClientOptions { call_deadline: Duration::from_secs(2), ..options("127.0.0.2") };
        let client = Arc::new(FederationClient::new(Dns::shared(&[dns.addr()]).unwrap(), options).unwrap());
        let started = std::time::Instant::now();
        let slow_call = {
            let client = Arc::clone(&client);
            tokio::spawn(async move { client.call("slow.test", "CERT a@slow.test", SMALL_REPLY).await })
        };
        let (reply, _) = client.call("home.test", "CERT a@home.test", SMALL_REPLY).await.unwrap();
        assert_eq!(reply.code, 250);
        assert!(started.elapsed() < Duration::from_secs(2), "the fast peer waited for the slow one");
        let error = slow_call.await.unwrap().unwrap_err();
        assert!(error.to_string().contains("call deadline"), "{error}");
        assert!(error.is_temporary());
        assert!(started.elapsed() < Duration::from_secs(6), "cut off at the deadline: {:?}", started.elapsed());
        trickler.abort();
    }
}
