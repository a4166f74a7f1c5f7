//! Test kit: start a real vouchmail on loopback with ephemeral ports, talk SMTP to it, and
//! run third-party clients against it.
#![allow(dead_code)]

pub mod deployment;
pub mod http;
pub mod postfix;

/// Polls a condition (it may `.await`) every 25 ms until it holds; fails the test with
/// `what` after `secs` seconds. Tests wait for what they can observe (the queue, a mailbox,
/// a peer's transcript), never for a fixed time.
#[macro_export]
macro_rules! wait_until {
    ($what:expr, $secs:expr, $cond:expr) => {{
        let end = std::time::Instant::now() + std::time::Duration::from_secs($secs);
        while !$cond {
            assert!(std::time::Instant::now() < end, "timed out waiting for {}", $what);
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }};
}

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use vouchmail_server::config::Config;
use vouchmail_server::RunningServer;
use vouchmail_store::{Folder, NewAccount, SenderPolicy, SqliteStore, Store};

/// A server started in-process on 127.0.0.1 with ephemeral ports and its own store.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub store: Arc<dyn Store>,
    pub server: Option<RunningServer>,
    pub config: Config,
}

/// `VOUCHMAIL_TEST_STORE=postgres` runs the servers of the tests on PostgreSQL, each on a
/// database of its own in the test process's throwaway cluster (SPEC 11: one suite, both
/// backends); else SQLite in the server's data_dir.
fn wants_postgres() -> bool {
    std::env::var("VOUCHMAIL_TEST_STORE").is_ok_and(|v| v == "postgres")
}

/// The store of a test server (a restarted one gets its own again: the URL is kept in the
/// config).
async fn open_test_store(config: &mut Config) -> Arc<dyn Store> {
    if !wants_postgres() {
        return Arc::new(SqliteStore::open(&config.store_path()).expect("store"));
    }
    if config.store.url.is_none() {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("server_{}_{n}", std::process::id());
        let url = vouchmail_testkit::pg::database_for(&name).expect("VOUCHMAIL_TEST_STORE=postgres: no PostgreSQL");
        config.store.backend = vouchmail_server::config::StoreBackend::Postgres;
        config.store.url = Some(url);
    }
    let options = config.postgres_options().expect("store options").expect("a PostgreSQL URL");
    Arc::new(vouchmail_store::PostgresStore::connect(options).await.expect("PostgreSQL store"))
}

/// The `[store]` lines of a config for the CLI to open this server's store ("" on SQLite,
/// whose store is found by data_dir).
pub fn store_config(config: &Config) -> String {
    match &config.store.url {
        Some(url) if wants_postgres() => format!("[store]\nbackend = \"postgres\"\nurl = {url:?}\n"),
        _ => String::new(),
    }
}

/// Runs one statement on the test server's database behind the store's back (to make the
/// store fail, say), on whichever backend it uses.
pub async fn raw_sql(server: &TestServer, sql: &str) {
    match &server.config.store.url {
        Some(url) if wants_postgres() => {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect");
            tokio::spawn(connection);
            client.batch_execute(sql).await.expect("statement");
        }
        _ => {
            rusqlite::Connection::open(server.config.store_path()).expect("open").execute_batch(sql).expect("statement")
        }
    }
}

impl TestServer {
    /// Domain `local.test` (policy `accept`: unauthenticated MX mail is delivered to INBOX,
    /// marked `none`) with account `user@local.test`.
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::start_with_users(adjust, &[]).await
    }

    /// Also creates these accounts before the server starts.
    pub async fn start_with_users(adjust: impl FnOnce(&mut Config), users: &[&str]) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            hostname: "mx.local.test".into(),
            data_dir: dir.path().join("data"),
            shutdown_grace_secs: 2,
            ..Config::default()
        };
        config.listeners.mx = vec!["127.0.0.1:0".parse().unwrap()];
        config.listeners.submission = vec!["127.0.0.1:0".parse().unwrap()];
        config.listeners.submissions = vec!["127.0.0.1:0".parse().unwrap()];
        config.listeners.odmr = vec!["127.0.0.1:0".parse().unwrap()];
        config.odmr.atrn_interval_secs = 0;
        config.listeners.pop3 = vec!["127.0.0.1:0".parse().unwrap()];
        config.listeners.pop3s = vec!["127.0.0.1:0".parse().unwrap()];
        config.listeners.imap = vec!["127.0.0.1:0".parse().unwrap()];
        config.listeners.imaps = vec!["127.0.0.1:0".parse().unwrap()];
        config.listeners.admin = vec!["127.0.0.1:0".parse().unwrap()];
        config.listeners.messenger = vec!["127.0.0.1:0".parse().unwrap()];
        config.bootstrap.domain = "local.test".into();
        config.bootstrap.policy = "accept".into();
        config.bootstrap.postmaster = false;
        // Remote mail stays queued unless a test turns delivery on (tests/outbound.rs).
        config.outbound.enabled = false;
        // Each test server makes its own self-signed certificate, which no peer could
        // verify; the federation of tests/messenger.rs uses certificates
        // from a test CA with peer_tls = "verify", as does `vouchmail demo`.
        config.messenger.peer_tls = "insecure".into();
        // SPF, DKIM and DMARC need a DNS that answers for the test's domains: the tests of
        // SPEC 13 (tests/sender_auth.rs) turn them on with their own; elsewhere they would
        // ask the system's resolver about names that exist nowhere.
        config.dmarc.verify = false;
        // An RSA key per test server would cost every test its keygen; the DKIM tests
        // make their keys themselves.
        config.bootstrap.dkim = false;
        adjust(&mut config);
        let store = open_test_store(&mut config).await;
        vouchmail_server::rules::bootstrap::bootstrap(&config, store.as_ref()).await.expect("bootstrap");
        if !config.bootstrap.domain.is_empty() {
            store
                .add_account(NewAccount {
                    address: format!("user@{}", config.bootstrap.domain),
                    secrets: Default::default(),
                    quota_bytes: 0,
                })
                .await
                .expect("account");
        }
        for user in users {
            let account = NewAccount { address: user.to_string(), secrets: Default::default(), quota_bytes: 0 };
            store.add_account(account).await.expect("account");
        }
        let server = vouchmail_server::start(&config, Arc::clone(&store)).await.expect("start");
        TestServer { dir, store, server: Some(server), config }
    }

    /// Stops the server, closes the store, and starts both again from what is on disk
    /// (listeners on new ephemeral ports).
    pub async fn restart(mut self) -> TestServer {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        self.store.close().await.expect("close");
        let store = open_test_store(&mut self.config).await;
        let server = vouchmail_server::start(&self.config, Arc::clone(&store)).await.expect("start");
        TestServer { dir: self.dir, store, server: Some(server), config: self.config }
    }

    pub fn mx(&self) -> SocketAddr {
        self.server.as_ref().expect("running").mx_addrs[0]
    }

    pub fn submission(&self) -> SocketAddr {
        self.server.as_ref().expect("running").submission_addrs[0]
    }

    pub fn odmr(&self) -> SocketAddr {
        self.server.as_ref().expect("running").odmr_addrs[0]
    }

    pub fn submissions(&self) -> SocketAddr {
        self.server.as_ref().expect("running").submissions_addrs[0]
    }

    pub fn pop3(&self) -> SocketAddr {
        self.server.as_ref().expect("running").pop3_addrs[0]
    }

    pub fn messenger(&self) -> SocketAddr {
        self.server.as_ref().expect("running").messenger_addrs[0]
    }

    pub fn pop3s(&self) -> SocketAddr {
        self.server.as_ref().expect("running").pop3s_addrs[0]
    }

    pub fn imap(&self) -> SocketAddr {
        self.server.as_ref().expect("running").imap_addrs[0]
    }

    pub fn imaps(&self) -> SocketAddr {
        self.server.as_ref().expect("running").imaps_addrs[0]
    }

    /// The admin HTTP listener (SPEC 12), on loopback: plain HTTP.
    pub fn admin(&self) -> SocketAddr {
        self.server.as_ref().expect("running").admin_addrs[0]
    }

    /// A bearer token of the admin API, made as `vouchmail admin token create` makes one.
    pub async fn admin_token(&self, name: &str) -> String {
        vouchmail_server::rules::admin_tokens::create_token(self.store.as_ref(), name).await.expect("token")
    }

    pub async fn add_domain(&self, name: &str, policy: SenderPolicy) {
        self.store.add_domain(name, policy).await.expect("domain");
    }

    pub async fn add_user(&self, address: &str) -> i64 {
        self.store
            .add_account(NewAccount { address: address.into(), secrets: Default::default(), quota_bytes: 0 })
            .await
            .expect("account")
    }

    /// Every message in a mailbox folder, as stored.
    pub async fn mailbox(&self, address: &str, folder: Folder) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for entry in self.store.list_mailbox(address, Some(folder)).await.expect("list") {
            let (_, data) = self.store.get_mailbox_message(address, entry.id).await.expect("get").expect("exists");
            out.push(data);
        }
        out
    }

    pub async fn inbox(&self, address: &str) -> Vec<String> {
        self.mailbox(address, Folder::Inbox)
            .await
            .into_iter()
            .map(|m| String::from_utf8_lossy(&m).into_owned())
            .collect()
    }
}

/// A minimal SMTP client for driving the server line by line.
pub struct SmtpConn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

/// One reply: the code and all its lines.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// "250 2.1.0" style: code and enhanced code of the last line.
    pub fn status(&self) -> String {
        let last = self.lines.last().map(String::as_str).unwrap_or("");
        last.split(' ').take(2).collect::<Vec<_>>().join(" ")
    }

    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

impl SmtpConn {
    /// Connects and reads the greeting.
    pub async fn connect(addr: SocketAddr) -> (SmtpConn, Reply) {
        SmtpConn::over(TcpStream::connect(addr).await.expect("connect")).await
    }

    /// Connects from a chosen local address (any of 127.0.0.0/8 on loopback) and reads the
    /// greeting.
    pub async fn connect_from(addr: SocketAddr, local: std::net::IpAddr) -> (SmtpConn, Reply) {
        SmtpConn::over(connect_from(addr, local).await).await
    }

    async fn over(stream: TcpStream) -> (SmtpConn, Reply) {
        SmtpConn::try_over(stream).await.expect("greeting")
    }

    /// [`SmtpConn::connect`] for a server that may be gone (killed under load): None
    /// instead of a panic.
    pub async fn try_connect(addr: SocketAddr) -> Option<(SmtpConn, Reply)> {
        SmtpConn::try_over(TcpStream::connect(addr).await.ok()?).await
    }

    async fn try_over(stream: TcpStream) -> Option<(SmtpConn, Reply)> {
        // A command written after the body's last line must not wait out Nagle's algorithm
        // against the server's delayed ACK (40 ms a message).
        stream.set_nodelay(true).ok()?;
        let (read, write) = stream.into_split();
        let mut conn = SmtpConn { reader: BufReader::new(read), writer: write };
        let greeting = conn.read_reply().await?;
        Some((conn, greeting))
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write");
    }

    /// Writes `bytes` (pipelined commands, or a message's body) and reads `replies`
    /// replies; their codes, or None once the connection fails (the server was killed).
    pub async fn exchange(&mut self, bytes: &[u8], replies: usize) -> Option<Vec<u16>> {
        self.writer.write_all(bytes).await.ok()?;
        let mut codes = Vec::with_capacity(replies);
        for _ in 0..replies {
            codes.push(self.read_reply().await?.code);
        }
        Some(codes)
    }

    /// Reads one (possibly multi-line) reply; None when the server closed the connection.
    pub async fn read_reply(&mut self) -> Option<Reply> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(30), self.reader.read_line(&mut line))
                .await
                .expect("reply timeout")
                .ok()?;
            if n == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            let done = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if done {
                let code = lines.last()?.get(..3)?.parse().ok()?;
                return Some(Reply { code, lines });
            }
        }
    }

    /// One line from the peer without its line end (for playing the server side).
    pub async fn read_line(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(30), self.reader.read_line(&mut line)).await.ok()?.ok()?;
        (n > 0).then(|| line.trim_end_matches(['\r', '\n']).to_string())
    }

    /// Sends one command line and reads its reply.
    pub async fn cmd(&mut self, line: &str) -> Reply {
        self.send_raw(format!("{line}\r\n").as_bytes()).await;
        self.read_reply().await.expect("reply")
    }

    /// True when the server has closed the connection (reads EOF).
    pub async fn is_closed(&mut self) -> bool {
        let mut line = String::new();
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.reader.read_line(&mut line)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    /// EHLO, MAIL, RCPT..., DATA with `body`; returns the final reply.
    pub async fn send_message(&mut self, from: &str, to: &[&str], body: &str) -> Reply {
        let mail = self.cmd(&format!("MAIL FROM:<{from}>")).await;
        if mail.code != 250 {
            return mail;
        }
        for rcpt in to {
            self.cmd(&format!("RCPT TO:<{rcpt}>")).await;
        }
        let data = self.cmd("DATA").await;
        if data.code != 354 {
            return data;
        }
        self.send_raw(body.as_bytes()).await;
        let end: &[u8] = if body.ends_with("\r\n") { b".\r\n" } else { b"\r\n.\r\n" };
        self.send_raw(end).await;
        self.read_reply().await.expect("reply to end of data")
    }
}

/// A port free on `ip` for TCP and UDP, for a server that must be named in DNS before it
/// starts. Taken below Linux's ephemeral range (32768-60999): a port the kernel handed out
/// (`bind(0)`) and released may be handed to another test's socket before the server binds
/// it, which made tests fail with "Address already in use".
/// A benchmark's setting from the environment (`bench/*.sh`), or its default.
pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

pub fn free_port(ip: &str) -> u16 {
    use std::hash::{BuildHasher, Hasher};
    for _ in 0..1000 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
        let port = 20_000 + (hasher.finish() % 12_000) as u16;
        let tcp = std::net::TcpListener::bind((ip, port));
        let udp = std::net::UdpSocket::bind((ip, port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no free port on {ip}");
}

/// A TCP connection to `addr` from the local address `local` (port chosen by the system).
pub async fn connect_from(addr: SocketAddr, local: std::net::IpAddr) -> TcpStream {
    let socket = if local.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() };
    let socket = socket.expect("socket");
    socket.bind(SocketAddr::new(local, 0)).expect("bind the local address");
    socket.connect(addr).await.expect("connect")
}

/// Runs a command to completion off the async threads.
pub async fn run(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().expect("spawn")).await.expect("join")
}

/// Finds a tool in PATH or /usr/sbin (Postfix's tools live there).
pub fn tool(name: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain(["/usr/sbin", "/usr/bin"]) {
        let candidate = Path::new(dir).join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("{name} is not installed; run scripts/test.sh, which installs it");
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vouchmail"))
}

/// Parses a DSN with Python's `email` module; returns "type|parts|action|status|...".
pub async fn python_dsn_summary(message: &str) -> String {
    let script = r#"
import email, sys
from email import policy
m = email.message_from_bytes(sys.stdin.buffer.read(), policy=policy.default)
parts = list(m.iter_parts())
status = parts[1].get_payload()
recipients = status[1:]
out = [m.get_content_type(), m.get_param('report-type'), str(len(parts)),
       parts[0].get_content_type(), parts[1].get_content_type(), parts[2].get_content_type(),
       str(status[0]['Reporting-MTA'])]
for r in recipients:
    out += [str(r['Action']), str(r['Status']), str(r['Final-Recipient']), str(r['Diagnostic-Code'])]
print('|'.join(out))
"#;
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(message.as_bytes()).unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
