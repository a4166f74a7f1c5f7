//! `vouchmail demo` (SPEC 10; seed 000): three federated servers on 127.0.0.2 (galkam.test),
//! 127.0.0.3 (lrsupport.test) and 127.0.0.4 (rogue.test), found through an in-process DNS
//! (the test kit's), and the seed's story walked with `vouchmail client`'s library, each
//! step printed with its result.
//!
//! A step is `ok`, `FAIL`, `MISSING` (the server does not offer what the step needs: the
//! RCRAM-MD5, RECEIPT, NOTIFY and TRACK wiring of the Messenger listener) or `SKIP` (an
//! earlier step it needs did not pass). The exit status is 0 only when every step is `ok`.

use crate::error::CliError;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use vouchmail_server::support::error::Error;

use base64::Engine;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use vouchmail_client::{write_private, Client, FetchTarget};
use vouchmail_proto::messenger::tracking::{Event, Record};
use vouchmail_proto::sasl::Secrets;
use vouchmail_proto::smtp::client::{ClientConfig, ReplyLimits, Timeouts, TlsMode};
use vouchmail_server::config::Config;
use vouchmail_server::net::smtp_client::{Session, Target};
use vouchmail_server::RunningServer;
use vouchmail_store::prelude::*;
use vouchmail_store::{DirectoryRecord, NewAccount, SenderPolicy, SqliteStore};
use vouchmail_testkit::dns::TestDns;

const GLEN: &str = "glen@galkam.test";
const ABC: &str = "abc555@lrsupport.test";
const PROVIDER_NUMBER: &str = "1234567F";
/// (domain, loopback address) of the three servers.
const SERVERS: [(&str, &str); 3] =
    [("galkam.test", "127.0.0.2"), ("lrsupport.test", "127.0.0.3"), ("rogue.test", "127.0.0.4")];

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok(String),
    Fail(String),
    /// The server does not offer what the step needs yet.
    Missing(String),
    /// An earlier step it needs did not pass.
    Skip(String),
}

impl Outcome {
    fn tag(&self) -> &'static str {
        match self {
            Outcome::Ok(_) => "ok",
            Outcome::Fail(_) => "FAIL",
            Outcome::Missing(_) => "MISSING",
            Outcome::Skip(_) => "SKIP",
        }
    }

    fn text(&self) -> &str {
        match self {
            Outcome::Ok(t) | Outcome::Fail(t) | Outcome::Missing(t) | Outcome::Skip(t) => t,
        }
    }

    fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }
}

/// A client error is `MISSING` when it says the server does not offer the extension.
fn from_error(e: impl std::fmt::Display) -> Outcome {
    let text = e.to_string();
    if text.contains("does not offer") {
        Outcome::Missing(text)
    } else {
        Outcome::Fail(text)
    }
}

struct Report {
    steps: Vec<(String, Outcome)>,
}

impl Report {
    fn step(&mut self, name: &str, outcome: Outcome) -> bool {
        let n = self.steps.len() + 1;
        println!("[{:<7}] {n:2}. {name}", outcome.tag());
        println!("            {}", outcome.text());
        let ok = outcome.is_ok();
        self.steps.push((name.to_string(), outcome));
        ok
    }
}

struct Node {
    domain: String,
    ip: IpAddr,
    messenger: SocketAddr,
    pop3: SocketAddr,
    store: Arc<SqliteStore>,
    server: Option<RunningServer>,
    cert_pem: PathBuf,
}

fn free_port(ip: IpAddr) -> Result<u16, CliError> {
    std::net::TcpListener::bind((ip, 0)).and_then(|l| l.local_addr()).map(|a| a.port()).map_err(|e| {
        CliError::failed(format!("cannot bind {ip}: {e} (the demo needs the loopback addresses 127.0.0.2-4)"))
    })
}

fn random_password() -> String {
    let mut bytes = [0u8; 18];
    if getrandom::getrandom(&mut bytes).is_err() {
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos();
        bytes[..16].copy_from_slice(&nanos.to_be_bytes());
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn make_dir() -> Result<PathBuf, CliError> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = std::env::temp_dir().join(format!("vouchmail-demo-{}-{}", std::process::id(), &random_password()[..8]));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| CliError::failed(format!("{}: {e}", dir.display())))?;
    Ok(dir)
}

/// SPEC 8 "Trust between servers": the servers verify each other. Each one's certificate
/// (made as on a first start) goes into one CA file they all trust, as if a public CA had
/// signed them; the rogue's too, as a rogue can have a certificate for its own name.
fn federation_ca(dir: &Path) -> Result<PathBuf, CliError> {
    let mut bundle = String::new();
    for (domain, _) in SERVERS {
        let config = Config { hostname: format!("mail.{domain}"), data_dir: dir.join(domain), ..Config::default() };
        vouchmail_server::net::tls::Tls::from_config(&config)?;
        let cert = config.data_dir.join("tls").join("cert.pem");
        bundle.push_str(
            &std::fs::read_to_string(&cert).map_err(|e| CliError::failed(format!("{}: {e}", cert.display())))?,
        );
    }
    let path = dir.join("federation-ca.pem");
    write_private(&path, bundle.as_bytes()).map_err(|e| CliError::failed(e.to_string()))?;
    Ok(path)
}

async fn start_node(
    dir: &Path,
    dns: SocketAddr,
    (domain, ip): (&str, &str),
    messenger_port: u16,
    peers: &[&str],
    ca_file: &Path,
) -> Result<Node, CliError> {
    let ip: IpAddr = ip.parse().map_err(|_| CliError::failed(format!("bad address {ip}")))?;
    let messenger = SocketAddr::new(ip, messenger_port);
    let pop3 = SocketAddr::new(ip, free_port(ip)?);
    let data_dir = dir.join(domain);
    let mut config = Config {
        hostname: format!("mail.{domain}"),
        data_dir: data_dir.clone(),
        shutdown_grace_secs: 1,
        ..Config::default()
    };
    config.listeners.mx = Vec::new();
    config.listeners.submission = Vec::new();
    config.listeners.submissions = Vec::new();
    config.listeners.odmr = Vec::new();
    config.listeners.pop3s = Vec::new();
    config.listeners.imap = Vec::new();
    config.listeners.imaps = Vec::new();
    config.listeners.admin = Vec::new();
    config.listeners.authkey = Vec::new();
    config.listeners.pop3 = vec![pop3];
    config.listeners.messenger = vec![messenger];
    config.odmr.atrn_interval_secs = 0;
    config.outbound.enabled = false;
    config.bootstrap.domain = domain.to_string();
    config.bootstrap.policy = "require".into();
    config.bootstrap.postmaster = false;
    config.dns.nameservers = vec![dns];
    config.messenger.source_address = Some(ip);
    config.messenger.pull_interval_secs = 1;
    config.messenger.connect_timeout_secs = 2;
    config.messenger.peers = peers.iter().map(|p| p.to_string()).collect();
    config.messenger.notify_retry_min_secs = 1;
    config.messenger.notify_retry_max_secs = 2;
    config.messenger.peer_tls = "verify".into();
    config.messenger.ca_file = Some(ca_file.to_path_buf());
    std::fs::create_dir_all(&data_dir).map_err(|e| CliError::failed(format!("{}: {e}", data_dir.display())))?;
    let store = Arc::new(SqliteStore::open(&config.store_path()).map_err(|e| CliError::failed(e.to_string()))?);
    vouchmail_server::rules::bootstrap::bootstrap(&config, store.as_ref())
        .await
        .map_err(|e| CliError::failed(e.to_string()))?;
    let server = vouchmail_server::start(&config, Arc::clone(&store) as Arc<dyn Store>).await?;
    Ok(Node {
        domain: domain.to_string(),
        ip,
        messenger,
        pop3,
        store,
        server: Some(server),
        cert_pem: data_dir.join("tls").join("cert.pem"),
    })
}

async fn add_user(node: &Node, address: &str, password: &str) -> Result<(), CliError> {
    let mut salts = [0u8; vouchmail_proto::sasl::SALTS_LEN];
    getrandom::getrandom(&mut salts).map_err(|e| CliError::failed(format!("random source: {e}")))?;
    let secrets = Secrets::from_password(password, &salts).map_err(|e| CliError::failed(e.to_string()))?;
    node.store
        .add_account(NewAccount { address: address.into(), secrets, quota_bytes: 0 })
        .await
        .map(|_| ())
        .map_err(|e| CliError::failed(e.to_string()))
}

async fn publish(node: &Node, address: &str, name: &str, ids: &[&str]) -> Result<(), CliError> {
    let record = DirectoryRecord {
        address: address.into(),
        name: name.into(),
        organisation: format!("{} practice", node.domain),
        role: "GP".into(),
        ids: ids.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    node.store.set_directory_entry(record).await.map_err(|e| CliError::failed(e.to_string()))?;
    node.store.set_directory_published(address, true).await.map_err(|e| CliError::failed(e.to_string()))
}

/// Writes a profile (and its password file) for a user of `node`.
fn profile(
    dir: &Path,
    node: &Node,
    address: &str,
    password: &str,
    dns: SocketAddr,
    ca: &Path,
) -> Result<PathBuf, CliError> {
    let local = address.split('@').next().unwrap_or("user");
    let secret = dir.join(format!("{local}.secret"));
    write_private(&secret, format!("{password}\n").as_bytes()).map_err(|e| CliError::failed(e.to_string()))?;
    let text = format!(
        "address = \"{address}\"\nhome_server = \"mail.{d}:{mp}\"\npop3_server = \"mail.{d}:{pp}\"\n\
         secret_file = \"{local}.secret\"\nkey_file = \"{local}.key\"\ncert_file = \"{local}.crt\"\n\
         nameservers = [\"{dns}\"]\ntls_ca_file = \"{ca}\"\ntimeout_secs = 10\n",
        d = node.domain,
        mp = node.messenger.port(),
        pp = node.pop3.port(),
        ca = ca.display(),
    );
    let path = dir.join(format!("{local}.toml"));
    write_private(&path, text.as_bytes()).map_err(|e| CliError::failed(e.to_string()))?;
    Ok(path)
}

/// A session from a chosen local address (the rogue's) on the server's one SMTP client
/// shell: greeting and EHLO as `mail.rogue.test`, no TLS, strict replies.
async fn rogue_session(from: IpAddr, to: SocketAddr) -> Result<Session, Error> {
    let config = ClientConfig {
        tls: TlsMode::Never,
        timeouts: Timeouts::all(Duration::from_secs(10)),
        strict_replies: true,
        reply_limits: ReplyLimits::new(1000, 1 << 20),
        ..ClientConfig::new("mail.rogue.test")
    };
    let target = Target { host: to.ip().to_string(), addr: to };
    let mut session =
        Session::connect(&target, Some(from), Duration::from_secs(5), config).await.map_err(|e| e.error())?;
    session.start(None).await.map_err(|e| e.error())?;
    Ok(session)
}

/// Sends the rogue's `line`; `ok` when the server answers `code`.
async fn refused_to_rogue(mut rogue: Session, line: &str, code: u16, said: &str) -> Result<Outcome, Error> {
    let reply = rogue.command(line).await?;
    rogue.quit().await;
    Ok(if reply.code == code {
        Outcome::Ok(format!("{said}: {}", reply.one_line()))
    } else {
        Outcome::Fail(format!("galkam answered {}", reply.one_line()))
    })
}

/// A rogue verifier: it hands out a challenge bound to lrsupport (SPEC 8.2: one that the
/// rogue could use to log in there as the user). Returns what the client sent after it.
/// The client's next command line, upper case; None when it closed.
async fn next_command<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> Option<String> {
    use tokio::io::AsyncBufReadExt;
    let mut line = String::new();
    match reader.read_line(&mut line).await.ok()? {
        0 => None,
        _ => Some(line.trim().to_ascii_uppercase()),
    }
}

async fn fake_rogue_verifier(listener: TcpListener, tls: vouchmail_server::net::tls::Tls) -> Option<String> {
    use tokio::io::AsyncBufReadExt;
    let (stream, _) = listener.accept().await.ok()?;
    // SPEC 10 Trust: the client speaks only inside TLS, so the rogue offers STARTTLS with a
    // certificate for its own name; what must stop the client is the bound challenge.
    let mut plain = tokio::io::BufReader::new(stream);
    plain.get_mut().write_all(b"220 mail.rogue.test ESMTP\r\n").await.ok()?;
    loop {
        let upper = next_command(&mut plain).await?;
        if upper.starts_with("EHLO") {
            plain.get_mut().write_all(b"250-mail.rogue.test\r\n250 STARTTLS\r\n").await.ok()?;
        } else if upper == "STARTTLS" {
            plain.get_mut().write_all(b"220 2.0.0 Ready to start TLS\r\n").await.ok()?;
            break;
        } else {
            plain.get_mut().write_all(b"530 5.7.0 Must issue a STARTTLS command first\r\n").await.ok()?;
        }
    }
    let stream = tls.acceptor().accept(plain.into_inner()).await.ok()?;
    let (read, mut write) = tokio::io::split(stream);
    let mut lines = tokio::io::BufReader::new(read);
    loop {
        let upper = next_command(&mut lines).await?;
        if upper.starts_with("EHLO") {
            write.write_all(b"250-mail.rogue.test\r\n250 AUTH RCRAM-MD5\r\n").await.ok()?;
        } else if upper.starts_with("AUTH RCRAM-MD5") {
            let now = vouchmail_proto::time::unix_seconds(SystemTime::now());
            let challenge = format!("<9f8e7d6c5b4a3921.{now}.rcram.mail.lrsupport.test@mail.galkam.test>");
            let line = format!("334 {}\r\n", base64::engine::general_purpose::STANDARD.encode(challenge));
            write.write_all(line.as_bytes()).await.ok()?;
            let mut answer = String::new();
            lines.read_line(&mut answer).await.ok()?;
            let _ = write.write_all(b"501 5.7.0 Authentication cancelled\r\n").await;
            return Some(answer.trim().to_string());
        } else if upper.starts_with("QUIT") {
            return None;
        } else {
            write.write_all(b"502 5.5.2 Not here\r\n").await.ok()?;
        }
    }
}

/// The rogue's TLS: a certificate for its own name, made as a server makes one on first
/// start, and a connector that trusts it (as if a public CA had signed it).
fn rogue_tls(dir: &Path) -> Result<(vouchmail_server::net::tls::Tls, Option<tokio_rustls::TlsConnector>), CliError> {
    let config = Config { hostname: "mail.rogue.test".into(), data_dir: dir.join("rogue-fake"), ..Config::default() };
    let tls = vouchmail_server::net::tls::Tls::from_config(&config)?;
    let ca = config.data_dir.join("tls").join("cert.pem");
    let connectors = vouchmail_server::net::client_tls::Connectors::new(Some(&ca))?;
    Ok((tls, connectors.for_policy(vouchmail_server::net::route::TlsPolicy::Verify).cloned()))
}

async fn wait_for<F, Fut, T>(secs: u64, mut probe: F) -> Result<T, CliError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, CliError>>,
{
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        match probe().await {
            Ok(Some(t)) => return Ok(t),
            Ok(None) if Instant::now() < end => tokio::time::sleep(Duration::from_millis(200)).await,
            Ok(None) => return Err(CliError::failed(format!("not within {secs} s"))),
            Err(e) => return Err(e),
        }
    }
}

pub async fn run(keep: bool) -> ExitCode {
    let dir = match make_dir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("vouchmail demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = story(&dir).await;
    if keep {
        println!("the demo's files are in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("vouchmail demo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn story(dir: &Path) -> Result<bool, CliError> {
    // The zone: each domain's Messenger home server by SRV (SPEC 8), its A record.
    let mut ports = Vec::new();
    for (_, ip) in SERVERS {
        let ip: IpAddr = ip.parse().map_err(|_| CliError::failed("bad address".to_string()))?;
        ports.push(free_port(ip)?);
    }
    // The servers take their Messenger ports from the zone, so the zone comes first.
    let messenger_ports = ports;
    let mut zone = TestDns::builder();
    for ((domain, ip), port) in SERVERS.iter().zip(&messenger_ports) {
        let host = format!("mail.{domain}");
        zone = zone.srv(&format!("_messenger._tcp.{domain}"), 10, 1, *port, &host).a(&host, ip);
    }
    let dns = zone.start().await;
    println!("vouchmail demo (SPEC 10, seed 000): DNS on {}", dns.addr());
    let peers: [&[&str]; 3] = [&["lrsupport.test", "rogue.test"], &["galkam.test"], &[]];
    let ca_file = federation_ca(dir)?;
    let mut nodes = Vec::new();
    for (((domain, ip), port), peers) in SERVERS.iter().zip(&messenger_ports).zip(peers) {
        let node = start_node(dir, dns.addr(), (domain, ip), *port, peers, &ca_file).await?;
        println!("  {domain}: Messenger {} POP3 {}", node.messenger, node.pop3);
        nodes.push(node);
    }
    let outcome = walk(dir, dns.addr(), &nodes).await;
    for node in nodes.iter_mut() {
        if let Some(server) = node.server.take() {
            server.shutdown().await;
        }
        node.store.shutdown().await;
    }
    let report = outcome?;
    let ok = report.steps.iter().filter(|(_, o)| o.is_ok()).count();
    let missing = report.steps.iter().filter(|(_, o)| matches!(o, Outcome::Missing(_))).count();
    let failed = report.steps.iter().filter(|(_, o)| matches!(o, Outcome::Fail(_))).count();
    let skipped = report.steps.iter().filter(|(_, o)| matches!(o, Outcome::Skip(_))).count();
    println!("{ok} of {} steps ok, {failed} failed, {missing} missing, {skipped} skipped", report.steps.len());
    if missing > 0 {
        println!(
            "missing: the Messenger listener does not offer what those steps need (RCRAM-MD5, RECEIPT, NOTIFY, TRACK; issue 12)"
        );
    }
    Ok(ok == report.steps.len())
}

async fn walk(dir: &Path, dns: SocketAddr, nodes: &[Node]) -> Result<Report, CliError> {
    let (galkam, lrsupport, rogue) = (&nodes[0], &nodes[1], &nodes[2]);
    let mut report = Report { steps: Vec::new() };
    // Every server's TLS certificate is self-signed for its host name: the clients trust
    // these three.
    let mut bundle = Vec::new();
    for node in nodes {
        bundle.extend(
            std::fs::read(&node.cert_pem).map_err(|e| CliError::failed(format!("{}: {e}", node.cert_pem.display())))?,
        );
    }
    let ca = dir.join("servers-ca.pem");
    write_private(&ca, &bundle).map_err(|e| CliError::failed(e.to_string()))?;
    let (glen_pw, abc_pw) = (random_password(), random_password());
    add_user(galkam, GLEN, &glen_pw).await?;
    add_user(lrsupport, ABC, &abc_pw).await?;
    let glen = Client::from_file(&profile(dir, galkam, GLEN, &glen_pw, dns, &ca)?)
        .map_err(|e| CliError::failed(e.to_string()))?;
    let abc = Client::from_file(&profile(dir, lrsupport, ABC, &abc_pw, dns, &ca)?)
        .map_err(|e| CliError::failed(e.to_string()))?;

    // 1-2: keys and certificates, uploaded to the own servers.
    let keys = match (glen.keygen(365, true), abc.keygen(365, true)) {
        (Ok(a), Ok(b)) => {
            Outcome::Ok(format!("RSA keys and S/MIME certificates for {:?} and {:?}", a.addresses(), b.addresses()))
        }
        (Err(e), _) | (_, Err(e)) => Outcome::Fail(e.to_string()),
    };
    let keys_ok = report.step("keygen: glen and abc555 make their keys and certificates", keys);
    let upload = if !keys_ok {
        Outcome::Skip("needs step 1".into())
    } else {
        match (glen.pubcert().await, abc.pubcert().await) {
            (Ok(a), Ok(b)) => Outcome::Ok(format!("galkam: {a}; lrsupport: {b}")),
            (Err(e), _) | (_, Err(e)) => Outcome::Fail(e.to_string()),
        }
    };
    let certs_ok = report.step("pubcert: each uploads the certificate to the own server (PUBCERT)", upload);

    // 3: lrsupport publishes abc555 with the provider number; the rogue claims it too.
    let published = async {
        publish(lrsupport, ABC, "Dr A. B. Cole", &[PROVIDER_NUMBER]).await?;
        rogue
            .store
            .add_domain("lrsupport.test", SenderPolicy::REJECT)
            .await
            .map_err(|e| CliError::failed(e.to_string()))?;
        add_user(rogue, "fake@lrsupport.test", &random_password()).await?;
        publish(rogue, "fake@lrsupport.test", "Not Dr Cole", &[PROVIDER_NUMBER]).await
    }
    .await;
    report.step(
        "directory: lrsupport publishes abc555 with provider number 1234567F; the rogue claims 1234567F for a fake lrsupport.test mailbox",
        match published {
            Ok(()) => Outcome::Ok("published".into()),
            Err(e) => Outcome::Fail(e.to_string()),
        },
    );

    // 4: CERT relayed.
    let relayed = if !certs_ok {
        Outcome::Skip("needs step 2".into())
    } else {
        match glen.cert(ABC).await {
            Ok((address, pem)) => match vouchmail_smime::Certificate::parse(pem.as_bytes()) {
                Ok(c) if address == ABC && c.addresses().iter().any(|a| a.eq_ignore_ascii_case(ABC)) => {
                    Outcome::Ok(format!("galkam relayed CERT {ABC} to lrsupport: certificate of {:?}", c.addresses()))
                }
                Ok(c) => Outcome::Fail(format!("resolved {address}, certificate of {:?}", c.addresses())),
                Err(e) => Outcome::Fail(e.to_string()),
            },
            Err(e) => Outcome::Fail(e.to_string()),
        }
    };
    report.step("cert abc555@lrsupport.test: glen asks galkam, which relays to lrsupport", relayed);

    // 5: the Entity Index.
    let learnt = wait_for(20, || async {
        let learnt = galkam.store.list_learnt_entities().await.map_err(|e| CliError::failed(e.to_string()))?;
        let good = learnt.iter().any(|e| e.published_id.eq_ignore_ascii_case(PROVIDER_NUMBER) && e.mailbox == ABC);
        let bad = learnt.iter().any(|e| e.mailbox == "fake@lrsupport.test");
        if bad {
            return Err(CliError::failed("galkam kept the rogue's claim for fake@lrsupport.test"));
        }
        Ok(good.then_some(()))
    })
    .await;
    let index_ok = report.step(
        "Entity Index: galkam learns 1234567F -> abc555@lrsupport.test from lrsupport and drops the rogue's claim",
        match learnt {
            Ok(()) => {
                Outcome::Ok("1234567F -> abc555@lrsupport.test (peer lrsupport.test); the rogue's entry dropped".into())
            }
            Err(e) => Outcome::Fail(e.to_string()),
        },
    );

    // 6: CERT by provider number.
    let by_id = if !(certs_ok && index_ok) {
        Outcome::Skip("needs steps 2 and 5".into())
    } else {
        match glen.cert(PROVIDER_NUMBER).await {
            Ok((address, _)) if address == ABC => Outcome::Ok(format!("CERT {PROVIDER_NUMBER} resolved to {address}")),
            Ok((address, _)) => Outcome::Fail(format!("resolved to {address}")),
            Err(e) => Outcome::Fail(e.to_string()),
        }
    };
    let by_id_ok = report.step("cert 1234567F: by provider number, through galkam's Entity Index", by_id);

    // 7: send directly to lrsupport with RCRAM-MD5.
    let body = "Dear Dr Cole,\r\nthe results for our patient are attached.\r\nGlen\r\n";
    let mut message_id = None;
    let sent = if !by_id_ok {
        Outcome::Skip("needs step 6".into())
    } else {
        match glen.send(&[PROVIDER_NUMBER.to_string()], Some("Patient results"), true, body.as_bytes()).await {
            Ok(sent) => {
                message_id = Some(sent.message_id.clone());
                Outcome::Ok(format!("{} to {}: {}", sent.message_id, sent.recipients.join(", "), sent.via.join("; ")))
            }
            Err(e) => from_error(e),
        }
    };
    report.step("send --direct --to 1234567F: encrypted, delivered to lrsupport with RCRAM-MD5", sent);

    // 8-10: download, decryption, RECEIPT.
    let inbox = dir.join("abc555-mail");
    let mut fetched_ok = false;
    let (download, decryption, receipt) = match &message_id {
        None => (
            Outcome::Skip("needs step 7".into()),
            Outcome::Skip("needs step 7".into()),
            Outcome::Skip("needs step 7".into()),
        ),
        Some(id) => match abc.fetch(&FetchTarget::Dir(inbox.clone())).await {
            Err(e) => (
                Outcome::Fail(e.to_string()),
                Outcome::Skip("needs step 8".into()),
                Outcome::Skip("needs step 8".into()),
            ),
            Ok(fetched) => match fetched.iter().find(|f| f.message_id.as_deref() == Some(id.as_str())) {
                None => (
                    Outcome::Fail(format!("{} messages, none is {id}", fetched.len())),
                    Outcome::Skip("needs step 8".into()),
                    Outcome::Skip("needs step 8".into()),
                ),
                Some(f) => {
                    fetched_ok = true;
                    let written = std::fs::read_to_string(&f.written_to).unwrap_or_default();
                    let decryption = match &f.decrypted {
                        Ok(()) if written.contains("the results for our patient") => {
                            Outcome::Ok(format!("decrypted with abc555's key: {}", f.written_to.display()))
                        }
                        Ok(()) => Outcome::Fail("decrypted, but the text is not the one sent".into()),
                        Err(e) => Outcome::Fail(e.to_string()),
                    };
                    let receipt = match &f.receipt {
                        Ok(()) => Outcome::Ok(format!("RECEIPT {id} DECRYPTED: 250")),
                        Err(e) => from_error(e),
                    };
                    (Outcome::Ok(format!("POP3 RETR of {id} from lrsupport")), decryption, receipt)
                }
            },
        },
    };
    report.step("fetch: abc555 downloads the message over POP3", download);
    let decrypted_ok = report.step("fetch: the message decrypts with abc555's key", decryption);
    let receipt_ok = report.step("fetch: RECEIPT DECRYPTED sent to lrsupport", receipt);

    // 11: the tracking records at glen's Tracking folder.
    let tracking = match &message_id {
        None => Outcome::Skip("needs step 7".into()),
        Some(_) if !fetched_ok => Outcome::Skip("needs step 8".into()),
        Some(id) => {
            let wanted = if receipt_ok && decrypted_ok {
                vec![Event::Downloaded, Event::Decrypted]
            } else {
                vec![Event::Downloaded]
            };
            let found = wait_for(20, || async {
                let records: Vec<Record> = glen.track(None).await.map_err(|e| CliError::failed(e.to_string()))?;
                let mine: Vec<&Record> = records.iter().filter(|r| &r.message_id == id).collect();
                let all = wanted.iter().all(|w| mine.iter().any(|r| r.event == *w && r.recipient == ABC));
                Ok(all.then(|| mine.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(" | ")))
            })
            .await;
            match found {
                Ok(lines) if receipt_ok => Outcome::Ok(lines),
                Ok(lines) => Outcome::Fail(format!("only {lines} (no decrypted record, step 10)")),
                Err(e) => from_error(e),
            }
        }
    };
    report
        .step("track: the downloaded and decrypted records arrive at glen's Tracking folder (NOTIFY, TRACK)", tracking);

    // 12: the relay attack, the client's side: a challenge bound to lrsupport from the rogue.
    let listener =
        TcpListener::bind(SocketAddr::new(rogue.ip, 0)).await.map_err(|e| CliError::failed(e.to_string()))?;
    let fake = listener.local_addr().map_err(|e| CliError::failed(e.to_string()))?;
    let (rogue_tls, trusting) = rogue_tls(dir)?;
    let verifier = tokio::spawn(fake_rogue_verifier(listener, rogue_tls));
    let refused = match vouchmail_client::session::Session::open(
        "mail.rogue.test",
        fake,
        trusting.as_ref(),
        "client.galkam.test",
        Duration::from_secs(5),
    )
    .await
    {
        Err(e) => Outcome::Fail(e.to_string()),
        Ok(mut session) => {
            let login =
                session.login_remote(GLEN, &glen_pw, vouchmail_proto::time::unix_seconds(SystemTime::now())).await;
            let answer = verifier.await.ok().flatten();
            match (login, answer.as_deref()) {
                (Err(e), Some("*")) => Outcome::Ok(format!("glen's client sent '*', not an answer: {e}")),
                (Err(e), other) => Outcome::Fail(format!("{e}; the client sent {other:?}")),
                (Ok(()), other) => Outcome::Fail(format!("the client answered the rogue's challenge: {other:?}")),
            }
        }
    };
    report.step(
        "relay attack (client): glen dials the rogue, which hands on a challenge bound to lrsupport; refused",
        refused,
    );

    // 13: the relay attack, the home server's side.
    let verify = async {
        let rogue = rogue_session(rogue.ip, galkam.messenger).await?;
        if !rogue.capabilities().offers_auth("X-RCRAM-VERIFY") {
            return Ok(Outcome::Missing("galkam does not offer AUTH X-RCRAM-VERIFY (SPEC 8.2)".into()));
        }
        let line = format!("AUTH X-RCRAM-VERIFY {GLEN} mail.lrsupport.test");
        refused_to_rogue(rogue, &line, 535, "galkam to the rogue's address").await
    }
    .await;
    report.step(
        "relay attack (home server): the rogue asks galkam for glen's challenge bound to lrsupport; refused",
        verify.unwrap_or_else(|e| Outcome::Fail(e.to_string())),
    );

    // 14: NOTIFY injection.
    let forged_id = "<forged.1@rogue.test>";
    let notify = async {
        let rogue = rogue_session(rogue.ip, galkam.messenger).await?;
        if !rogue.capabilities().offers("NOTIFY") {
            return Ok(Outcome::Missing("galkam does not offer NOTIFY (SPEC 8.3)".into()));
        }
        let record = Record {
            timestamp: vouchmail_proto::time::unix_seconds(SystemTime::now()),
            message_id: forged_id.into(),
            sender: GLEN.into(),
            recipient: ABC.into(),
            event: Event::Decrypted,
            reporting_server: "mail.lrsupport.test".into(),
        };
        let line = record.to_line().map_err(|e| Error::invalid(e.to_string()))?;
        refused_to_rogue(rogue, &format!("NOTIFY {line}"), 550, "galkam to the rogue").await
    }
    .await;
    report.step(
        "NOTIFY injection: the rogue claims abc555 decrypted a message of glen's; refused",
        notify.unwrap_or_else(|e| Outcome::Fail(e.to_string())),
    );
    Ok(report)
}
