//! The Messenger federation (SPEC 8.1 to 8.4; seed 000): three servers on
//! 127.0.0.2 (galkam.test), 127.0.0.3 (lrsupport.test) and 127.0.0.4 (rogue.test), found
//! through the in-process test DNS (SRV records), relaying CERT, resolving published IDs
//! through the Entity Index, and refusing a rogue server's claims.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{free_port, run, SmtpConn, TestServer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use vouchmail_proto::sasl::Secrets;
use vouchmail_server::federation::x509;
use vouchmail_store::{DirectoryRecord, Folder, SenderPolicy, StoredCertificate};
use vouchmail_testkit::ca::TestCa;
use vouchmail_testkit::dns::TestDns;

const PASSWORD: &str = "pencil";

fn secrets() -> Secrets {
    static SECRETS: std::sync::OnceLock<Secrets> = std::sync::OnceLock::new();
    SECRETS.get_or_init(|| Secrets::from_password(PASSWORD, &[6; vouchmail_proto::sasl::SALTS_LEN]).unwrap()).clone()
}

fn now() -> i64 {
    vouchmail_proto::time::unix_seconds(SystemTime::now())
}

/// A self-signed certificate naming `email` (subjectAltName rfc822Name), valid from the
/// start of year `from` to the start of year `to`.
fn certificate(email: &str, from: i32, to: i32) -> String {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::Rfc822Name(email.try_into().unwrap())];
    params.distinguished_name.push(rcgen::DnType::CommonName, email);
    params.not_before = rcgen::date_time_ymd(from, 1, 1);
    params.not_after = rcgen::date_time_ymd(to, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().pem()
}

/// Stores a certificate for a user as `vouchmail cert import` does, checked.
async fn store_certificate(server: &TestServer, address: &str, pem: &str) {
    let checked = x509::check_pem_for(pem, address, now()).unwrap();
    let cert = StoredCertificate {
        address: address.into(),
        der: checked.der,
        not_before: checked.not_before,
        not_after: checked.not_after,
        fingerprint: checked.fingerprint,
        stored_at: now(),
    };
    server.store.put_certificate(cert).await.unwrap();
}

async fn publish(server: &TestServer, address: &str, name: &str, ids: &[&str]) {
    let record = DirectoryRecord {
        address: address.into(),
        name: name.into(),
        organisation: "Practice, Inc".into(),
        role: "GP".into(),
        ids: ids.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    server.store.set_directory_entry(record).await.unwrap();
    server.store.set_directory_published(address, true).await.unwrap();
}

struct Federation {
    _dns: TestDns,
    /// The test CA's folder: its certificate and each server's.
    _ca: tempfile::TempDir,
    galkam: TestServer,
    lrsupport: TestServer,
    rogue: TestServer,
}

/// (domain, loopback address) of the three servers.
const SERVERS: [(&str, &str); 3] =
    [("galkam.test", "127.0.0.2"), ("lrsupport.test", "127.0.0.3"), ("rogue.test", "127.0.0.4")];

impl Federation {
    /// The three servers; galkam pulls lrsupport and rogue every second. `adjust` is
    /// applied to each config after the federation's settings.
    async fn start(adjust: impl Fn(&mut vouchmail_server::config::Config)) -> Federation {
        let ports: Vec<u16> = SERVERS.iter().map(|(_, ip)| free_port(ip)).collect();
        let mut zone = TestDns::builder();
        for ((domain, ip), port) in SERVERS.iter().zip(&ports) {
            let host = format!("mail.{domain}");
            zone = zone.srv(&format!("_messenger._tcp.{domain}"), 10, 1, *port, &host).a(&host, ip);
        }
        // A domain whose home server listens nowhere: 451 4.4.1.
        zone = zone
            .srv("_messenger._tcp.down.test", 10, 1, free_port("127.0.0.5"), "mail.down.test")
            .a("mail.down.test", "127.0.0.5");
        let dns = zone.start().await;
        // SPEC 8 "Trust between servers": each server's certificate, for its name, from
        // one test CA that every server trusts; calls are verified both ways.
        let ca_dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(ca_dir.path(), "Federation test CA");
        let mut servers = Vec::new();
        for ((domain, ip), port) in SERVERS.iter().zip(&ports) {
            let issued = ca.issue(&[&format!("mail.{domain}")]);
            let server = TestServer::start_with(|c| {
                c.tls.cert = Some(issued.cert.clone());
                c.tls.key = Some(issued.key.clone());
                c.messenger.ca_file = Some(ca.ca_file());
                c.messenger.peer_tls = "verify".into();
                c.hostname = format!("mail.{domain}");
                c.bootstrap.domain = domain.to_string();
                c.bootstrap.policy = "require".into();
                c.listeners.messenger = vec![SocketAddr::new(ip.parse().unwrap(), *port)];
                c.dns.nameservers = vec![dns.addr()];
                c.messenger.source_address = Some(ip.parse().unwrap());
                c.messenger.pull_interval_secs = 1;
                c.messenger.connect_timeout_secs = 2;
                c.auth.allow_plaintext_passwords = true;
                if *domain == "galkam.test" {
                    c.messenger.peers = vec!["lrsupport.test".into(), "rogue.test".into()];
                }
                adjust(c);
            })
            .await;
            servers.push(server);
        }
        let rogue = servers.pop().unwrap();
        let lrsupport = servers.pop().unwrap();
        let galkam = servers.pop().unwrap();
        galkam.store.add_account(account("glen@galkam.test")).await.unwrap();
        lrsupport.store.add_account(account("abc555@lrsupport.test")).await.unwrap();
        lrsupport.store.add_account(account("nocert@lrsupport.test")).await.unwrap();
        Federation { _dns: dns, _ca: ca_dir, galkam, lrsupport, rogue }
    }
}

fn account(address: &str) -> vouchmail_store::NewAccount {
    vouchmail_store::NewAccount { address: address.into(), secrets: secrets(), quota_bytes: 0 }
}

/// A plain line client on a Messenger port: every reply as the octets received.
struct LineClient {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl LineClient {
    async fn connect(addr: SocketAddr) -> LineClient {
        let (read, writer) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut client = LineClient { reader: BufReader::new(read), writer };
        let greeting = client.read().await;
        assert!(greeting.starts_with(b"220 "), "{}", String::from_utf8_lossy(&greeting));
        let ehlo = client.cmd("EHLO client.test").await;
        assert!(String::from_utf8_lossy(&ehlo).contains("250-CERT\r\n"));
        client
    }

    /// One whole reply, as received, CRLFs included.
    async fn read(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = tokio::time::timeout(Duration::from_secs(30), self.reader.read_until(b'\n', &mut line))
                .await
                .expect("reply in time")
                .unwrap();
            assert!(n > 0, "connection closed after {}", String::from_utf8_lossy(&out));
            assert!(line.ends_with(b"\r\n"), "every line ends in CRLF: {line:?}");
            out.extend_from_slice(&line);
            if line.get(3) == Some(&b' ') {
                return out;
            }
        }
    }

    async fn cmd(&mut self, line: &str) -> Vec<u8> {
        self.writer.write_all(format!("{line}\r\n").as_bytes()).await.unwrap();
        self.read().await
    }

    /// The reply's code and enhanced code ("550 5.1.1") from its last line.
    async fn status(&mut self, line: &str) -> String {
        let reply = String::from_utf8(self.cmd(line).await).unwrap();
        let last = reply.trim_end().rsplit("\r\n").next().unwrap().to_string();
        last.split(' ').take(2).collect::<Vec<_>>().join(" ")
    }

    async fn login(&mut self, user: &str) {
        let response = STANDARD.encode(format!("\0{user}\0{PASSWORD}"));
        let reply = self.cmd(&format!("AUTH PLAIN {response}")).await;
        assert!(reply.starts_with(b"235 "), "{}", String::from_utf8_lossy(&reply));
    }
}

/// The PEM text of a CERT success reply, and the address of its first line.
fn pem_of(reply: &[u8]) -> (String, String) {
    let text = String::from_utf8(reply.to_vec()).unwrap();
    let lines: Vec<&str> = text.trim_end_matches("\r\n").split("\r\n").collect();
    assert!(lines.len() >= 4, "{text}");
    assert!(lines[..lines.len() - 1].iter().all(|l| l.starts_with("250-")), "{text}");
    assert_eq!(lines[1], "250------BEGIN CERTIFICATE-----", "{text}");
    assert_eq!(lines[lines.len() - 1], "250 -----END CERTIFICATE-----", "{text}");
    let pem: String = lines[1..].iter().map(|l| format!("{}\n", &l[4..])).collect();
    (lines[0][4..].to_string(), pem)
}

/// What `openssl x509` says the certificate names (its rfc822Names, one a line).
async fn openssl_emails(dir: &std::path::Path, pem: &str) -> String {
    let file = dir.join("cert.pem");
    std::fs::write(&file, pem).unwrap();
    let mut cmd = Command::new("openssl");
    cmd.args(["x509", "-noout", "-email", "-in"]).arg(&file);
    let out = run(cmd).await;
    assert!(out.status.success(), "openssl x509: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_lowercase()
}

#[tokio::test]
async fn the_seed_story_cert_relayed_by_address_and_by_provider_number_and_the_rogue_refused() {
    let f = Federation::start(|_| {}).await;
    store_certificate(&f.lrsupport, "abc555@lrsupport.test", &certificate("abc555@lrsupport.test", 2000, 2090)).await;
    publish(&f.lrsupport, "abc555@lrsupport.test", "Ann Brown", &["1234567F"]).await;
    // The rogue holds a "lrsupport.test" of its own and claims the provider number for it,
    // and publishes an ID of its own mailbox, which galkam may keep.
    f.rogue.add_domain("lrsupport.test", SenderPolicy::REJECT).await;
    f.rogue.store.add_account(account("fake@lrsupport.test")).await.unwrap();
    f.rogue.store.add_account(account("rob@rogue.test")).await.unwrap();
    store_certificate(&f.rogue, "fake@lrsupport.test", &certificate("fake@lrsupport.test", 2000, 2090)).await;
    publish(&f.rogue, "fake@lrsupport.test", "Not Ann", &["1234567F"]).await;
    publish(&f.rogue, "rob@rogue.test", "Rob", &["ROGUE1"]).await;

    // What lrsupport itself answers, to anyone, for its own mailbox.
    let mut direct = LineClient::connect(f.lrsupport.messenger()).await;
    let home_reply = direct.cmd("CERT abc555@lrsupport.test").await;
    let (resolved, pem) = pem_of(&home_reply);
    assert_eq!(resolved, "abc555@lrsupport.test");
    assert_eq!(openssl_emails(f.galkam.dir.path(), &pem).await, "abc555@lrsupport.test");

    // glen asks his own server, which relays to lrsupport and passes the reply on unchanged.
    let mut glen = LineClient::connect(f.galkam.messenger()).await;
    glen.login("glen@galkam.test").await;
    assert_eq!(glen.cmd("CERT abc555@lrsupport.test").await, home_reply, "relayed byte for byte");
    // Again on the same session: the federation client reuses its connection.
    assert_eq!(glen.cmd("CERT <ABC555@lrsupport.test>").await, home_reply);

    // The scheduled pull brings lrsupport's entry (lrsupport is the home server of
    // lrsupport.test) and the rogue's own entry, never the rogue's claim for lrsupport.test.
    wait_until!("galkam learns ROGUE1 and 1234567F", 20, {
        let ids: Vec<String> =
            f.galkam.store.list_learnt_entities().await.unwrap().into_iter().map(|e| e.published_id).collect();
        ids.contains(&"ROGUE1".to_string()) && ids.contains(&"1234567F".to_string())
    });
    let learnt = f.galkam.store.list_learnt_entities().await.unwrap();
    let claims: Vec<(String, String, String)> =
        learnt.iter().map(|e| (e.published_id.clone(), e.mailbox.clone(), e.peer.clone())).collect();
    assert!(
        claims.contains(&("1234567F".into(), "abc555@lrsupport.test".into(), "lrsupport.test".into())),
        "{claims:?}"
    );
    assert!(claims.contains(&("ROGUE1".into(), "rob@rogue.test".into(), "rogue.test".into())), "{claims:?}");
    assert!(!claims.iter().any(|c| c.1 == "fake@lrsupport.test"), "the rogue's claim is dropped: {claims:?}");

    // CERT by provider number: resolved through galkam's Entity Index, then relayed.
    assert_eq!(glen.cmd("CERT 1234567F").await, home_reply);
    assert_eq!(glen.cmd("CERT 1234567f").await, home_reply, "IDs ignore case");

    // lrsupport withdraws the entry: gone from galkam after the next pull.
    f.lrsupport.store.set_directory_published("abc555@lrsupport.test", false).await.unwrap();
    wait_until!("galkam drops 1234567F", 20, {
        f.galkam.store.learnt_entities_for_id("1234567F").await.unwrap().is_empty()
    });
    assert_eq!(glen.status("CERT 1234567F").await, "550 5.1.1");
    // The address still works.
    assert_eq!(glen.cmd("CERT abc555@lrsupport.test").await, home_reply);
    let peers = f.galkam.store.list_messenger_peers().await.unwrap();
    assert!(peers.iter().all(|p| p.last_error.is_none()), "{peers:?}");
}

#[tokio::test]
async fn every_cert_reply_code() {
    let f = Federation::start(|_| {}).await;
    publish(&f.lrsupport, "abc555@lrsupport.test", "Ann Brown", &["1234567F"]).await;
    let mut anonymous = LineClient::connect(f.lrsupport.messenger()).await;
    // Local lookups need no authentication.
    assert_eq!(anonymous.status("CERT nobody@lrsupport.test").await, "550 5.1.1");
    assert_eq!(anonymous.status("CERT nocert@lrsupport.test").await, "550 5.3.0");
    assert_eq!(anonymous.status("CERT 1234567F").await, "550 5.3.0", "a local published ID is a local lookup");
    // An expired certificate counts as none.
    let expired = certificate("abc555@lrsupport.test", 2000, 2001);
    let checked = x509::parse_der(&x509::first_pem_certificate(&expired).unwrap()).unwrap();
    f.lrsupport
        .store
        .put_certificate(StoredCertificate {
            address: "abc555@lrsupport.test".into(),
            der: checked.der,
            not_before: checked.not_before,
            not_after: checked.not_after,
            fingerprint: checked.fingerprint,
            stored_at: now(),
        })
        .await
        .unwrap();
    assert_eq!(anonymous.status("CERT abc555@lrsupport.test").await, "550 5.3.0");
    // Remote lookups (relay or Entity Index) need an authenticated session.
    assert_eq!(anonymous.status("CERT glen@galkam.test").await, "530 5.7.0");
    assert_eq!(anonymous.status("CERT ELSEWHERE9").await, "530 5.7.0");
    for bad in ["CERT", "CERT a b", "CERT <a@b", "CERT 12/34", "CERT a@"] {
        assert_eq!(anonymous.status(bad).await, "501 5.5.4", "{bad}");
    }

    let mut glen = LineClient::connect(f.galkam.messenger()).await;
    glen.login("glen@galkam.test").await;
    assert_eq!(glen.status("CERT ELSEWHERE9").await, "550 5.1.1", "an ID nobody published");
    assert_eq!(glen.status("CERT x@down.test").await, "451 4.4.1", "home server not listening");
    assert_eq!(glen.status("CERT x@nowhere.test").await, "451 4.4.1", "no home server in DNS");
    // The home server's own refusal comes back as it gave it.
    assert_eq!(glen.cmd("CERT nobody@lrsupport.test").await, anonymous.cmd("CERT nobody@lrsupport.test").await);
    assert_eq!(glen.status("CERT nocert@lrsupport.test").await, "550 5.3.0");
    // The relayed CERT reached lrsupport unauthenticated, from galkam's source address,
    // and lrsupport became one of galkam's peers.
    wait_until!("lrsupport recorded as a peer", 10, {
        f.galkam.store.list_messenger_peers().await.unwrap().iter().any(|p| p.domain == "lrsupport.test")
    });
}

#[tokio::test]
async fn pubcert_checks_the_certificate_and_cert_then_serves_it() {
    let f = Federation::start(|_| {}).await;
    let mut c = LineClient::connect(f.lrsupport.messenger()).await;
    assert_eq!(c.status("PUBCERT").await, "530 5.7.0");
    c.login("abc555@lrsupport.test").await;
    let upload = |pem: &str| -> String {
        let mut out = String::new();
        for line in pem.lines() {
            if line.starts_with('.') {
                out.push('.');
            }
            out.push_str(line);
            out.push_str("\r\n");
        }
        out.push_str(".\r\n");
        out
    };
    for (pem, why) in [
        ("not a certificate\n".to_string(), "not PEM"),
        (certificate("glen@galkam.test", 2000, 2090), "names someone else"),
        (certificate("abc555@lrsupport.test", 2000, 2001), "expired"),
        (certificate("abc555@lrsupport.test", 2090, 2091), "not yet valid"),
    ] {
        assert!(c.cmd("PUBCERT").await.starts_with(b"354 "));
        c.writer.write_all(upload(&pem).as_bytes()).await.unwrap();
        let reply = String::from_utf8(c.read().await).unwrap();
        assert!(reply.starts_with("554 5.7.0 "), "{why}: {reply}");
    }
    let good = certificate("abc555@lrsupport.test", 2000, 2090);
    assert!(c.cmd("PUBCERT").await.starts_with(b"354 "));
    c.writer.write_all(upload(&good).as_bytes()).await.unwrap();
    assert_eq!(
        String::from_utf8(c.read().await).unwrap(),
        "250 2.0.0 Certificate stored for abc555@lrsupport.test\r\n"
    );
    let (resolved, pem) = pem_of(&c.cmd("CERT abc555@lrsupport.test").await);
    assert_eq!(resolved, "abc555@lrsupport.test");
    assert_eq!(
        x509::first_pem_certificate(&pem).unwrap(),
        x509::first_pem_certificate(&good).unwrap(),
        "the stored certificate comes back"
    );
    assert_eq!(openssl_emails(f.lrsupport.dir.path(), &pem).await, "abc555@lrsupport.test");
}

#[tokio::test]
async fn entities_for_any_peer_and_book_for_authenticated_sessions() {
    let f = Federation::start(|c| c.messenger.pull_interval_secs = 0).await;
    publish(&f.lrsupport, "abc555@lrsupport.test", "Ann Brown", &["1234567F", "B2"]).await;
    let mut peer = LineClient::connect(f.lrsupport.messenger()).await;
    assert_eq!(
        String::from_utf8(peer.cmd("ENTITIES").await).unwrap(),
        "250-1 ADD 1234567F abc555@lrsupport.test\r\n250-2 ADD B2 abc555@lrsupport.test\r\n250 2\r\n"
    );
    assert_eq!(String::from_utf8(peer.cmd("ENTITIES 2").await).unwrap(), "250 2\r\n");
    f.lrsupport.store.set_directory_published("abc555@lrsupport.test", false).await.unwrap();
    assert_eq!(
        String::from_utf8(peer.cmd("ENTITIES 2").await).unwrap(),
        "250-3 DEL 1234567F abc555@lrsupport.test\r\n250-4 DEL B2 abc555@lrsupport.test\r\n250 4\r\n"
    );
    assert_eq!(peer.status("ENTITIES -1").await, "501 5.5.4");
    f.lrsupport.store.set_directory_published("abc555@lrsupport.test", true).await.unwrap();

    assert_eq!(peer.status("BOOK brown").await, "530 5.7.0");
    peer.login("abc555@lrsupport.test").await;
    assert_eq!(
        String::from_utf8(peer.cmd("BOOK BROWN").await).unwrap(),
        "250-abc555@lrsupport.test,Ann Brown,\"Practice, Inc\",GP,1234567F;B2\r\n250 1 entries\r\n"
    );
    assert_eq!(String::from_utf8(peer.cmd("BOOK 567f").await).unwrap().lines().count(), 2, "by ID");
    assert_eq!(String::from_utf8(peer.cmd("BOOK nobody").await).unwrap(), "250 0 entries\r\n");
    assert_eq!(peer.status("BOOK").await, "501 5.5.4");
    // Unpublished entries are not in the book.
    f.lrsupport.store.set_directory_published("abc555@lrsupport.test", false).await.unwrap();
    assert_eq!(String::from_utf8(peer.cmd("BOOK brown").await).unwrap(), "250 0 entries\r\n");
}

#[tokio::test]
async fn the_messenger_port_needs_authenticated_senders_and_has_its_own_limits() {
    let f = Federation::start(|c| {
        c.messenger.max_connections_per_ip = 2;
        c.auth.max_failures_per_ip = 2;
        c.messenger.pull_interval_secs = 0;
    })
    .await;
    let server = &f.lrsupport;
    let (mut c, _) = SmtpConn::connect(server.messenger()).await;
    c.cmd("EHLO client.test").await;
    assert_eq!(c.cmd("MAIL FROM:<abc555@lrsupport.test>").await.status(), "530 5.7.0");
    let login = STANDARD.encode(format!("\0abc555@lrsupport.test\0{PASSWORD}"));
    assert_eq!(c.cmd(&format!("AUTH PLAIN {login}")).await.code, 235);
    let reply =
        c.send_message("abc555@lrsupport.test", &["nocert@lrsupport.test"], "Subject: hi\r\n\r\nhello\r\n").await;
    assert_eq!(reply.code, 250, "{reply:?}");
    wait_until!("delivered", 10, !server.mailbox("nocert@lrsupport.test", Folder::Inbox).await.is_empty());
    let stored = server.inbox("nocert@lrsupport.test").await.remove(0).replace("\r\n ", " ");
    assert!(stored.contains("auth=pass smtp.auth=abc555@lrsupport.test"), "{stored}");

    // Its own connection limit: a third connection from the same address is refused,
    // while the submission port still takes one.
    let (_second, _) = SmtpConn::connect(server.messenger()).await;
    let (_third, refused) = SmtpConn::connect(server.messenger()).await;
    assert_eq!(refused.status(), "421 4.7.0");
    let (_submission, greeting) = SmtpConn::connect(server.submission()).await;
    assert_eq!(greeting.code, 220);
    drop(c);

    // The AUTH failure limits are those of every other port: failures on submission block
    // AUTH on the Messenger port from the same client network.
    let (mut sub, _) = SmtpConn::connect_from(server.submission(), IpAddr::from([127, 0, 0, 9])).await;
    sub.cmd("EHLO client.test").await;
    let wrong = STANDARD.encode("\0abc555@lrsupport.test\0wrong");
    for _ in 0..2 {
        sub.cmd(&format!("AUTH PLAIN {wrong}")).await;
    }
    let (mut m, _) = SmtpConn::connect_from(server.messenger(), IpAddr::from([127, 0, 0, 9])).await;
    m.cmd("EHLO client.test").await;
    assert_eq!(m.cmd(&format!("AUTH PLAIN {login}")).await.status(), "454 4.7.0");
}

/// `vouchmail cert ...` and `vouchmail directory ...` on a store.
#[tokio::test]
async fn cli_cert_and_directory_commands() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vouchmail.toml");
    std::fs::write(
        &config,
        format!(
            "hostname = \"mail.lrsupport.test\"\ndata_dir = \"{}\"\n[bootstrap]\ndomain = \"lrsupport.test\"\npostmaster = false\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let vouchmail = |args: &[&str]| {
        let mut cmd = Command::new(common::binary());
        cmd.arg("--config").arg(&config).args(args);
        cmd
    };
    let out = run(vouchmail(&["init"])).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ok = |out: std::process::Output| -> String {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let fails = |out: std::process::Output| -> String {
        assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8(out.stderr).unwrap()
    };
    let mut add = vouchmail(&["user", "add", "abc555@lrsupport.test"]);
    add.stdin(std::process::Stdio::null());
    ok(run(add).await);
    let pem_file = dir.path().join("abc.pem");
    std::fs::write(&pem_file, certificate("abc555@lrsupport.test", 2000, 2090)).unwrap();
    let wrong_file = dir.path().join("glen.pem");
    std::fs::write(&wrong_file, certificate("glen@galkam.test", 2000, 2090)).unwrap();
    let pem = pem_file.to_str().unwrap();
    assert!(fails(run(vouchmail(&["cert", "import", "abc555@lrsupport.test", wrong_file.to_str().unwrap()])).await)
        .contains("does not name abc555@lrsupport.test"));
    let nobody_file = dir.path().join("nobody.pem");
    std::fs::write(&nobody_file, certificate("nobody@lrsupport.test", 2000, 2090)).unwrap();
    let nobody = nobody_file.to_str().unwrap();
    assert!(fails(run(vouchmail(&["cert", "import", "nobody@lrsupport.test", nobody])).await).contains("not found"));
    assert!(ok(run(vouchmail(&["cert", "import", "abc555@lrsupport.test", pem])).await).contains("stored"));
    let listed = ok(run(vouchmail(&["cert", "list"])).await);
    let row = listed.lines().nth(1).unwrap_or_default();
    assert!(
        listed.starts_with("ADDRESS ") && row.starts_with("abc555@lrsupport.test  2090-01-01T00:00:00Z"),
        "{listed}"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&ok(run(vouchmail(&["cert", "list", "--json"])).await)).unwrap();
    assert_eq!(
        (listed[0]["address"].as_str(), listed[0]["state"].as_str()),
        (Some("abc555@lrsupport.test"), Some("current"))
    );
    let shown = ok(run(vouchmail(&["cert", "show", "abc555@lrsupport.test"])).await);
    assert_eq!(openssl_emails(dir.path(), &shown).await, "abc555@lrsupport.test");
    ok(run(vouchmail(&["cert", "remove", "abc555@lrsupport.test"])).await);
    assert!(fails(run(vouchmail(&["cert", "show", "abc555@lrsupport.test"])).await).contains("no certificate"));

    let set = ["directory", "set", "abc555@lrsupport.test", "--name", "Ann Brown", "--org", "LR", "--role", "GP"];
    ok(run(vouchmail(&[&set[..], &["--id", "1234567f", "--id", "B2"]].concat())).await);
    assert!(fails(run(vouchmail(&[&set[..], &["--id", "12/34"]].concat())).await).contains("--id"));
    ok(run(vouchmail(&["directory", "publish", "abc555@lrsupport.test"])).await);
    let listed = ok(run(vouchmail(&["directory", "list", "--index"])).await);
    assert!(
        listed.contains("abc555@lrsupport.test  published  Ann Brown  LR            GP    1234567F;B2"),
        "{listed}"
    );
    let listed = ok(run(vouchmail(&["directory", "list", "--index", "--json"])).await);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["directory"][0]["ids"], serde_json::json!(["1234567F", "B2"]));
    assert!(listed["learnt"].is_array() && listed["peers"].is_array(), "{listed}");
    ok(run(vouchmail(&["directory", "unpublish", "abc555@lrsupport.test"])).await);
    assert!(ok(run(vouchmail(&["directory", "list"])).await).contains("unpublished"));
    assert!(fails(run(vouchmail(&["directory", "publish", "nobody@lrsupport.test"])).await).contains("not found"));
}

/// `bench/messenger.sh`: CERT lookups per second over one reused Messenger session, local
/// (lrsupport answers for its own mailbox) and relayed one hop (glen asks galkam, which
/// relays to lrsupport over its kept connection), then with several sessions at once.
/// Ignored in ordinary runs; `N` lookups per session (default 2000), `SESSIONS` (default 8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_cert_lookups() {
    let n: usize = std::env::var("N").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let sessions: usize = std::env::var("SESSIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let f = Federation::start(|c| {
        c.messenger.pull_interval_secs = 0;
        c.messenger.max_idle_per_peer = 16;
    })
    .await;
    store_certificate(&f.lrsupport, "abc555@lrsupport.test", &certificate("abc555@lrsupport.test", 2000, 2090)).await;
    let expected = LineClient::connect(f.lrsupport.messenger()).await.cmd("CERT abc555@lrsupport.test").await;

    async fn run(addr: SocketAddr, login: Option<&str>, n: usize, expected: &[u8]) -> Duration {
        let mut c = LineClient::connect(addr).await;
        if let Some(user) = login {
            c.login(user).await;
        }
        // One warm-up lookup (the relay's first connection and TLS handshake).
        assert_eq!(c.cmd("CERT abc555@lrsupport.test").await, expected);
        let start = std::time::Instant::now();
        for _ in 0..n {
            assert_eq!(c.cmd("CERT abc555@lrsupport.test").await, expected);
        }
        start.elapsed()
    }
    let report = |what: &str, count: usize, elapsed: Duration| {
        let rate = count as f64 / elapsed.as_secs_f64();
        println!("BENCH {what}: {count} CERT lookups in {:.3} s: {rate:.0}/s", elapsed.as_secs_f64());
    };
    let local = run(f.lrsupport.messenger(), None, n, &expected).await;
    report("local, 1 session", n, local);
    let relayed = run(f.galkam.messenger(), Some("glen@galkam.test"), n, &expected).await;
    report("relayed one hop, 1 session", n, relayed);
    for (what, addr, login) in
        [("local", f.lrsupport.messenger(), None), ("relayed one hop", f.galkam.messenger(), Some("glen@galkam.test"))]
    {
        let start = std::time::Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..sessions {
            let expected = expected.clone();
            tasks.push(tokio::spawn(async move { run(addr, login, n, &expected).await }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        report(&format!("{what}, {sessions} sessions"), n * sessions, start.elapsed());
    }
}

// ---------------------------------------------------------------------------------------
// Messenger part 2 (issue 12): remote authentication, RCRAM-MD5 (SPEC 8.2), and delivery
// notifications, NOTIFY / RECEIPT / TRACK (SPEC 8.3), across the same three servers.

use vouchmail_proto::messenger::rcram::{self, RcramClient, RcramEvent, RcramOutcome};
use vouchmail_server::net::pop3_client::Pop3Client;
use vouchmail_store::OutboxState;

impl LineClient {
    /// A client whose connection comes from `local` (a server's own address).
    async fn connect_from(addr: SocketAddr, local: IpAddr) -> LineClient {
        let (read, writer) = common::connect_from(addr, local).await.into_split();
        let mut client = LineClient { reader: BufReader::new(read), writer };
        let greeting = client.read().await;
        assert!(greeting.starts_with(b"220 "), "{}", String::from_utf8_lossy(&greeting));
        client.cmd("EHLO peer.test").await;
        client
    }

    /// `AUTH RCRAM-MD5 <address>` from the user's seat, by the project's client (SPEC 8.2
    /// steps 1, 4, 6): `dialed` is the host name the client connected to.
    async fn rcram(&mut self, address: &str, password: &str, dialed: &str) -> RcramOutcome {
        let mut client = RcramClient::new(address, password, dialed, now());
        client.start();
        loop {
            let out = client.take_output();
            if !out.is_empty() {
                self.writer.write_all(&out).await.unwrap();
            }
            if let Some(RcramEvent::Done(outcome)) = client.poll_event() {
                return outcome;
            }
            let reply = self.read().await;
            client.feed(&reply);
        }
    }

    /// Sends one message; the status of the end of data.
    async fn message(&mut self, from: &str, to: &str, message_id: &str) -> String {
        self.message_with(from, to, message_id, "").await
    }

    /// Sends one message with these header fields (each ending in CRLF) too.
    async fn message_with(&mut self, from: &str, to: &str, message_id: &str, fields: &str) -> String {
        assert_eq!(self.status(&format!("MAIL FROM:<{from}>")).await, "250 2.1.0");
        assert_eq!(self.status(&format!("RCPT TO:<{to}>")).await, "250 2.1.5");
        assert_eq!(self.status("DATA").await.split(' ').next(), Some("354"));
        let body = format!(
            "From: {from}\r\nTo: {to}\r\nMessage-ID: {message_id}\r\nSubject: results\r\n{fields}\r\nencrypted\r\n."
        );
        self.status(&body).await
    }
}

/// `address` downloads every message of its inbox over POP3 (RETR: the `downloaded` event).
async fn download_all(server: &TestServer, address: &str) -> Vec<Vec<u8>> {
    let stream = TcpStream::connect(server.pop3()).await.unwrap();
    let (mut pop, _) = Pop3Client::connect(stream).await.unwrap();
    let credentials = vouchmail_proto::sasl::Credentials::new(address, PASSWORD);
    pop.authenticate(vouchmail_proto::sasl::Mechanism::ScramSha256, credentials).await.unwrap();
    let count = server.store.list_mailbox(address, Some(Folder::Inbox)).await.unwrap().len();
    let mut messages = Vec::new();
    for n in 1..=count as u32 {
        messages.push(pop.retr(n).await.unwrap());
    }
    pop.quit().await.unwrap();
    messages
}

/// glen's Tracking folder at galkam: (message id, event) of each record, oldest first.
async fn glen_records(galkam: &TestServer) -> Vec<(String, String)> {
    let records = galkam.store.tracking_records("glen@galkam.test", None, 100_000).await.unwrap();
    records.into_iter().map(|r| (r.record.message_id, r.record.event.as_str().to_string())).collect()
}

#[tokio::test]
async fn rcram_login_at_lrsupport_then_downloaded_and_decrypted_reach_glen_also_after_an_outage() {
    let mut f = Federation::start(|c| {
        c.messenger.notify_retry_min_secs = 1;
        c.messenger.notify_retry_max_secs = 1;
    })
    .await;
    // glen has no account at lrsupport: RCRAM-MD5, verified by galkam (SPEC 8.2).
    let mut glen = LineClient::connect(f.lrsupport.messenger()).await;
    let ehlo = String::from_utf8(glen.cmd("EHLO glen.test").await).unwrap();
    assert!(ehlo.contains(" RCRAM-MD5 X-RCRAM-VERIFY\r\n"), "{ehlo}");
    for verb in ["NOTIFY", "RECEIPT", "TRACK"] {
        assert!(ehlo.contains(&format!("250-{verb}\r\n")), "{verb} in {ehlo}");
    }
    match glen.rcram("glen@galkam.test", PASSWORD, "mail.lrsupport.test").await {
        RcramOutcome::Authenticated(reply) => {
            assert_eq!(reply.to_string(), "235 2.7.0 Authenticated as glen@galkam.test (remote)")
        }
        other => panic!("RCRAM-MD5 login failed: {other:?}"),
    }
    // After a remote authentication: MAIL FROM only that address, RCPT only local
    // mailboxes; CERT and BOOK allowed; no local-user verbs.
    assert_eq!(glen.status("MAIL FROM:<other@galkam.test>").await, "553 5.7.1");
    assert_eq!(glen.status("MAIL FROM:<glen@galkam.test>").await, "250 2.1.0");
    assert_eq!(glen.status("RCPT TO:<friend@galkam.test>").await, "550 5.7.1");
    assert_eq!(glen.status("RSET").await, "250 2.0.0");
    assert_eq!(glen.status("BOOK Brown").await, "250 0");
    assert_eq!(glen.status("CERT abc555@lrsupport.test").await, "550 5.3.0");
    assert_eq!(glen.status("TRACK").await, "530 5.7.0");
    assert_eq!(glen.message("glen@galkam.test", "abc555@lrsupport.test", "<story1@galkam.test>").await, "250 2.0.0");
    let stored = f.lrsupport.mailbox("abc555@lrsupport.test", Folder::Inbox).await;
    // The Authentication-Results field, unfolded (RFC 5322 2.2.3).
    let text = String::from_utf8_lossy(&stored[0]).replace("\r\n ", " ");
    assert!(text.contains("x-rcram=pass smtp.auth=glen@galkam.test"), "{text}");

    // abc555 downloads it and reports the decryption.
    assert_eq!(download_all(&f.lrsupport, "abc555@lrsupport.test").await.len(), 1);
    let mut abc = LineClient::connect(f.lrsupport.messenger()).await;
    abc.login("abc555@lrsupport.test").await;
    assert_eq!(abc.status("RECEIPT <story1@galkam.test> DECRYPTED").await, "250 2.0.0");
    assert_eq!(abc.status("RECEIPT <story1@galkam.test> DECRYPTED").await, "250 2.0.0", "once, still 250");
    assert_eq!(abc.status("RECEIPT <never@galkam.test> FAILED").await, "550 5.1.0");
    assert_eq!(abc.status("RECEIPT story1@galkam.test DECRYPTED").await, "501 5.5.4");
    let expected = vec![
        ("<story1@galkam.test>".to_string(), "downloaded".to_string()),
        ("<story1@galkam.test>".into(), "decrypted".into()),
    ];
    wait_until!("both records reach glen's Tracking folder", 20, glen_records(&f.galkam).await == expected);

    // TRACK at galkam shows both, oldest first.
    let mut home = LineClient::connect(f.galkam.messenger()).await;
    home.login("glen@galkam.test").await;
    let track = String::from_utf8(home.cmd("TRACK").await).unwrap();
    let lines: Vec<&str> = track.trim_end().split("\r\n").collect();
    assert_eq!(lines.len(), 3, "{track}");
    assert!(
        lines[0].starts_with("250-")
            && lines[0].ends_with(
                ",<story1@galkam.test>,glen@galkam.test,abc555@lrsupport.test,downloaded,mail.lrsupport.test"
            ),
        "{track}"
    );
    assert!(lines[1].ends_with(",decrypted,mail.lrsupport.test"), "{track}");
    assert_eq!(lines[2], "250 2 records");
    assert_eq!(home.status("TRACK 2100-01-01T00:00:00Z").await, "250 0");
    assert_eq!(home.status("TRACK soon").await, "501 5.5.4");
    drop(home);

    // galkam stops: a second message's records wait in lrsupport's outbox.
    let mut glen = LineClient::connect(f.lrsupport.messenger()).await;
    assert!(matches!(
        glen.rcram("glen@galkam.test", PASSWORD, "mail.lrsupport.test").await,
        RcramOutcome::Authenticated(_)
    ));
    assert_eq!(glen.message("glen@galkam.test", "abc555@lrsupport.test", "<story2@galkam.test>").await, "250 2.0.0");
    drop(glen);
    f.galkam.server.take().unwrap().shutdown().await;
    // With the home server down, RCRAM-MD5 cannot be verified: 454 4.7.0.
    let mut late = LineClient::connect(f.lrsupport.messenger()).await;
    match late.rcram("glen@galkam.test", PASSWORD, "mail.lrsupport.test").await {
        RcramOutcome::Temporary(reply) => assert!(reply.to_string().starts_with("454 4.7.0 "), "{reply}"),
        other => panic!("expected 454: {other:?}"),
    }
    download_all(&f.lrsupport, "abc555@lrsupport.test").await;
    assert_eq!(abc.status("RECEIPT <story2@galkam.test> DECRYPTED").await, "250 2.0.0");
    wait_until!("lrsupport retried the records", 20, {
        let outbox = f.lrsupport.store.list_notify_outbox().await.unwrap();
        let story2: Vec<_> = outbox.iter().filter(|e| e.record.contains("<story2@galkam.test>")).collect();
        story2.len() == 2 && story2.iter().all(|e| e.state == OutboxState::Pending && e.attempts >= 1)
    });
    assert_eq!(glen_records(&f.galkam).await.len(), 2, "nothing new while galkam is down");
    f.galkam = f.galkam.restart().await;
    wait_until!("the waiting records arrive after galkam restarts", 30, glen_records(&f.galkam).await.len() == 4);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let records = glen_records(&f.galkam).await;
    assert_eq!(
        records[2..],
        [
            ("<story2@galkam.test>".to_string(), "downloaded".to_string()),
            ("<story2@galkam.test>".into(), "decrypted".into())
        ],
        "once each: {records:?}"
    );
    let outbox = f.lrsupport.store.list_notify_outbox().await.unwrap();
    assert!(outbox.iter().all(|e| e.state == OutboxState::Sent), "{outbox:?}");
}

#[tokio::test]
async fn the_relay_attack_and_every_refusal_of_rcram_and_notify() {
    let f = Federation::start(|_| {}).await;
    let rogue_ip: IpAddr = "127.0.0.4".parse().unwrap();
    let lrsupport_ip: IpAddr = "127.0.0.3".parse().unwrap();

    // The relay attack: the rogue logs in as glen at lrsupport, gets the challenge galkam
    // bound to lrsupport (relayed to it unchanged), and hands it to glen's client, which
    // dialed the rogue: the client refuses with `*`.
    let mut rogue_at_lrsupport = LineClient::connect_from(f.lrsupport.messenger(), rogue_ip).await;
    let challenge_line = rogue_at_lrsupport.cmd("AUTH RCRAM-MD5 glen@galkam.test").await;
    let text = String::from_utf8(challenge_line.clone()).unwrap();
    assert!(text.starts_with("334 ") && text.ends_with("\r\n"), "{text}");
    let challenge = STANDARD.decode(text[4..].trim_end()).unwrap();
    let parsed = rcram::Challenge::parse(&challenge).unwrap();
    assert_eq!(parsed.verifier, "mail.lrsupport.test");
    let mut glen = RcramClient::new("glen@galkam.test", PASSWORD, "mail.rogue.test", now());
    glen.start();
    glen.take_output();
    glen.feed(&challenge_line);
    assert_eq!(glen.take_output(), b"*\r\n", "glen's client cancels a challenge bound to another host");
    glen.feed(b"501 5.0.0 Authentication cancelled\r\n");
    assert!(matches!(glen.poll_event(), Some(RcramEvent::Done(RcramOutcome::Cancelled { .. }))));
    // Without glen's answer the rogue has nothing to relay: a guess is refused.
    let guess = STANDARD.encode("glen@galkam.test 00000000000000000000000000000000");
    assert_eq!(rogue_at_lrsupport.status(&guess).await, "535 5.7.8");

    // The rogue asks galkam directly, claiming to be lrsupport from its own IP: 535 5.7.0.
    let mut rogue_at_galkam = LineClient::connect_from(f.galkam.messenger(), rogue_ip).await;
    assert_eq!(rogue_at_galkam.status("AUTH X-RCRAM-VERIFY glen@galkam.test mail.lrsupport.test").await, "535 5.7.0");
    // Nor can it inject NOTIFY records for galkam's users: 550 5.7.1.
    let record = notify_record(now(), "fake", "decrypted");
    let record = record.as_str();
    assert_eq!(rogue_at_galkam.status(&format!("NOTIFY {record}")).await, "550 5.7.1");

    // From lrsupport's own address: the other refusals and the verification-only 235.
    let mut verifier = LineClient::connect_from(f.galkam.messenger(), lrsupport_ip).await;
    assert_eq!(verifier.status("AUTH X-RCRAM-VERIFY nobody@galkam.test mail.lrsupport.test").await, "535 5.7.8");
    assert_eq!(verifier.status("AUTH X-RCRAM-VERIFY glen@galkam.test").await, "501 5.5.4");
    let reply =
        String::from_utf8(verifier.cmd("AUTH X-RCRAM-VERIFY glen@galkam.test mail.lrsupport.test").await).unwrap();
    assert!(reply.starts_with("334 "), "{reply}");
    let challenge = STANDARD.decode(reply[4..].trim_end()).unwrap();
    let bound = rcram::check_binding(&challenge, "mail.lrsupport.test", now()).unwrap();
    assert!(std::str::from_utf8(&challenge).unwrap().ends_with("@mail.galkam.test>"), "{bound:?}");
    let answer = STANDARD.encode(rcram::answer("glen@galkam.test", PASSWORD, &challenge).unwrap());
    assert_eq!(verifier.status(&answer).await, "235 2.7.0");
    // SPEC 8.2: that 235 grants verification only.
    assert_eq!(verifier.status("MAIL FROM:<glen@galkam.test>").await, "503 5.7.0");
    // The same answer again, to a new exchange: refused (each challenge is answered once).
    let mut replay = LineClient::connect_from(f.galkam.messenger(), lrsupport_ip).await;
    let reply = replay.cmd("AUTH X-RCRAM-VERIFY glen@galkam.test mail.lrsupport.test").await;
    assert!(reply.starts_with(b"334 "));
    assert_eq!(replay.status(&answer).await, "535 5.7.8");
    // A wrong password through the verifier: 535 5.7.8 to the client.
    let mut wrong = LineClient::connect(f.lrsupport.messenger()).await;
    match wrong.rcram("glen@galkam.test", "not the password", "mail.lrsupport.test").await {
        RcramOutcome::Refused(reply) => assert!(reply.to_string().starts_with("535 5.7.8 "), "{reply}"),
        other => panic!("expected 535: {other:?}"),
    }
    // A domain whose home server cannot be reached: 454 4.7.0.
    match wrong.rcram("someone@down.test", PASSWORD, "mail.lrsupport.test").await {
        RcramOutcome::Temporary(reply) => assert!(reply.to_string().starts_with("454 4.7.0 "), "{reply}"),
        other => panic!("expected 454: {other:?}"),
    }

    // NOTIFY from lrsupport's address (the home server of the recipient's domain).
    let mut peer = LineClient::connect_from(f.galkam.messenger(), lrsupport_ip).await;
    assert_eq!(peer.status(&format!("NOTIFY {record}")).await, "250 2.0.0");
    assert_eq!(peer.status(&format!("NOTIFY {record}")).await, "250 2.0.0", "a duplicate is 250");
    assert_eq!(glen_records(&f.galkam).await.len(), 1, "and stored once");
    let stranger = record.replace("glen@galkam.test", "nobody@galkam.test");
    assert_eq!(peer.status(&format!("NOTIFY {stranger}")).await, "550 5.1.1");
    assert_eq!(peer.status("NOTIFY not,a,record").await, "501 5.5.4");
}

/// A record for glen@galkam.test about abc555@lrsupport.test, reported by lrsupport.
fn notify_record(at: i64, id: &str, event: &str) -> String {
    let time = vouchmail_proto::time::rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(at as u64));
    format!("{time},<{id}@galkam.test>,glen@galkam.test,abc555@lrsupport.test,{event},mail.lrsupport.test")
}

/// Issue 19 item 8 (SPEC 8.3): the home server of the recipient's domain is the one peer
/// NOTIFY takes records from, and even it cannot forge their times (an hour ahead, or 31
/// days old: `501 5.5.4`) nor fill a sender's Tracking folder: past `notify_max_per_day`
/// records a day (here 2) it gets `452 4.5.3`.
#[tokio::test]
async fn notify_refuses_forged_times_and_caps_a_domains_records_per_day() {
    let f = Federation::start(|c| c.messenger.notify_max_per_day = 2).await;
    let lrsupport_ip: IpAddr = "127.0.0.3".parse().unwrap();
    let mut peer = LineClient::connect_from(f.galkam.messenger(), lrsupport_ip).await;
    let ahead = notify_record(now() + 3600, "ahead", "downloaded");
    assert_eq!(peer.status(&format!("NOTIFY {ahead}")).await, "501 5.5.4");
    let old = notify_record(now() - 31 * 86_400, "old", "downloaded");
    assert_eq!(peer.status(&format!("NOTIFY {old}")).await, "501 5.5.4");
    assert!(glen_records(&f.galkam).await.is_empty());
    for n in 0..2 {
        let record = notify_record(now(), &format!("m{n}"), "downloaded");
        assert_eq!(peer.status(&format!("NOTIFY {record}")).await, "250 2.0.0");
    }
    let third = notify_record(now(), "m2", "downloaded");
    assert_eq!(peer.status(&format!("NOTIFY {third}")).await, "452 4.5.3");
    assert_eq!(glen_records(&f.galkam).await.len(), 2);
}

/// Issue 19 item 5 (SPEC 7.5): a remotely authenticated sender's message keeps no outside
/// `X-Auth-Key` or `X-Auth-Key-Status` in the recipient's mailbox (today it kept both).
#[tokio::test]
async fn rcram_mail_reaches_the_mailbox_without_outside_key_fields() {
    let f = Federation::start(|_| {}).await;
    let mut glen = LineClient::connect(f.lrsupport.messenger()).await;
    assert!(matches!(
        glen.rcram("glen@galkam.test", PASSWORD, "mail.lrsupport.test").await,
        RcramOutcome::Authenticated(_)
    ));
    let forged = "X-Auth-Key-Status: VALID\r\nX-Auth-Key: ForgedKeyForgedKeyForgedKeyForgedKey\r\n";
    let status = glen.message_with("glen@galkam.test", "abc555@lrsupport.test", "<hygiene@galkam.test>", forged).await;
    assert_eq!(status, "250 2.0.0");
    let stored = f.lrsupport.mailbox("abc555@lrsupport.test", Folder::Inbox).await;
    let text = String::from_utf8_lossy(&stored[0]).replace("\r\n ", " ");
    assert!(text.contains("x-rcram=pass smtp.auth=glen@galkam.test"), "{text}");
    let key_fields: Vec<_> = vouchmail_proto::headers::fields(&stored[0])
        .filter(|f| f.name_is("X-Auth-Key") || f.name_is("X-Auth-Key-Status"))
        .map(|f| f.name().to_string())
        .collect();
    assert!(key_fields.is_empty(), "{key_fields:?} in {text}");
}

/// Benchmark (bench/rcram_notify.sh, docs/bench.md): RCRAM-MD5 logins per second through
/// one verifier (lrsupport) to one home server (galkam), each a new client session and a
/// new verifier-to-home connection (EHLO, STARTTLS, X-RCRAM-VERIFY, answer); then NOTIFY
/// records delivered per second from lrsupport's outbox to galkam (SPEC 8.3). Ignored in
/// ordinary runs; `RCRAM_N` logins per session (default 200), `SESSIONS` (default 8),
/// `NOTIFY_N` records (default 1000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_rcram_logins_and_notify_records() {
    let env = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let (n, sessions, records) = (env("RCRAM_N", 200), env("SESSIONS", 8), env("NOTIFY_N", 1000));
    let mut f = Federation::start(|c| {
        c.messenger.pull_interval_secs = 0;
        c.messenger.notify_retry_min_secs = 1;
        c.messenger.notify_retry_max_secs = 1;
    })
    .await;
    async fn logins(addr: SocketAddr, n: usize) -> Duration {
        let start = std::time::Instant::now();
        for _ in 0..n {
            let mut c = LineClient::connect(addr).await;
            let outcome = c.rcram("glen@galkam.test", PASSWORD, "mail.lrsupport.test").await;
            assert!(matches!(outcome, RcramOutcome::Authenticated(_)), "{outcome:?}");
        }
        start.elapsed()
    }
    let addr = f.lrsupport.messenger();
    logins(addr, 5).await; // warm-up
    let one = logins(addr, n).await;
    println!(
        "BENCH RCRAM-MD5, 1 session: {n} logins in {:.3} s: {:.0}/s",
        one.as_secs_f64(),
        n as f64 / one.as_secs_f64()
    );
    let start = std::time::Instant::now();
    let tasks: Vec<_> = (0..sessions).map(|_| tokio::spawn(logins(addr, n))).collect();
    for task in tasks {
        task.await.unwrap();
    }
    let all = start.elapsed();
    let total = n * sessions;
    println!(
        "BENCH RCRAM-MD5, {sessions} sessions: {total} logins in {:.3} s: {:.0}/s",
        all.as_secs_f64(),
        total as f64 / all.as_secs_f64()
    );

    // NOTIFY: lrsupport is stopped while `records` downloads by abc555 of glen's messages
    // fill its outbox; timed from its restart until galkam holds every record.
    f.lrsupport.server.take().unwrap().shutdown().await;
    let account = f.lrsupport.store.get_account("abc555@lrsupport.test").await.unwrap().unwrap();
    for i in 0..records {
        let message = vouchmail_store::NewMessage {
            queue_id: format!("B{i:06}"),
            envelope: vouchmail_store::Envelope {
                sender: "glen@galkam.test".into(),
                auth_results: "x-rcram=pass smtp.auth=glen@galkam.test".into(),
                ..Default::default()
            },
            received_at: now(),
            data: format!("Message-ID: <b{i}@galkam.test>\r\nSubject: b\r\n\r\nbody\r\n").into_bytes(),
            spooled: None,
            deliveries: vec![(
                vouchmail_store::Delivery::Mailbox {
                    account_id: account.id,
                    folder: Folder::Inbox,
                    recipient: "abc555@lrsupport.test".into(),
                },
                vouchmail_store::RecipientDsn::default(),
            )],
        };
        f.lrsupport.store.commit_message(message).await.unwrap();
        let event = vouchmail_store::NewTrackingEvent {
            recipient: "abc555@lrsupport.test".into(),
            subject: vouchmail_store::TrackingSubject::MessageId(format!("<b{i}@galkam.test>")),
            kind: vouchmail_proto::messenger::tracking::Event::Downloaded.into(),
            at: now(),
            reporting_server: "mail.lrsupport.test".into(),
        };
        f.lrsupport.store.track_event(event).await.unwrap();
    }
    assert_eq!(f.lrsupport.store.list_notify_outbox().await.unwrap().len(), records);
    let start = std::time::Instant::now();
    f.lrsupport = f.lrsupport.restart().await;
    wait_until!("every record reaches galkam", 600, glen_records(&f.galkam).await.len() == records);
    let elapsed = start.elapsed();
    println!(
        "BENCH NOTIFY: {records} records delivered in {:.3} s: {:.0}/s",
        elapsed.as_secs_f64(),
        records as f64 / elapsed.as_secs_f64()
    );
}

#[tokio::test]
async fn rcram_failures_count_towards_the_auth_limits() {
    let f = Federation::start(|c| {
        c.auth.max_failures_per_ip = 2;
        c.auth.max_failures_per_account = 2;
    })
    .await;
    let mut c = LineClient::connect(f.lrsupport.messenger()).await;
    for _ in 0..2 {
        match c.rcram("glen@galkam.test", "wrong", "mail.lrsupport.test").await {
            RcramOutcome::Refused(reply) => assert!(reply.to_string().starts_with("535 5.7.8 "), "{reply}"),
            other => panic!("expected 535: {other:?}"),
        }
    }
    // Over the limit: even the right password gets 454 4.7.0 from this IP for a while.
    match c.rcram("glen@galkam.test", PASSWORD, "mail.lrsupport.test").await {
        RcramOutcome::Temporary(reply) => assert!(reply.to_string().starts_with("454 4.7.0 "), "{reply}"),
        other => panic!("expected 454: {other:?}"),
    }
}

/// RCRAM-MD5 through lrsupport for `address`, from a client at `from`.
async fn rcram_from(f: &Federation, from: &str, address: &str, password: &str) -> RcramOutcome {
    let mut c = LineClient::connect_from(f.lrsupport.messenger(), from.parse().unwrap()).await;
    c.rcram(address, password, "mail.lrsupport.test").await
}

/// SPEC 3 and 8.2: a stranger's wrong passwords, relayed by a verifier, neither lock the
/// owner out (at the verifier or at the home server) nor block the verifier's other users
/// at the home server: there the verifier's IP stands for all its clients.
#[tokio::test]
async fn strangers_rcram_failures_lock_out_neither_the_owner_nor_the_verifiers_other_users() {
    let f = Federation::start(|c| {
        c.auth.max_failures_per_ip = 2;
        c.auth.max_failures_per_account = 2;
    })
    .await;
    f.galkam.store.add_account(account("nurse@galkam.test")).await.unwrap();
    // glen logs in from his usual seat: it becomes familiar to lrsupport for glen (the
    // verifier never becomes familiar to galkam, SPEC 8.2 step 3).
    let seat = "127.0.0.1";
    assert!(matches!(rcram_from(&f, seat, "glen@galkam.test", PASSWORD).await, RcramOutcome::Authenticated(_)));
    // Strangers, each from its own address: two wrong guesses, then glen's account is over
    // its limit for anyone new to it.
    for (n, stranger) in ["127.0.0.60", "127.0.0.61", "127.0.0.62"].into_iter().enumerate() {
        match (n, rcram_from(&f, stranger, "glen@galkam.test", "wrong").await) {
            (0 | 1, RcramOutcome::Refused(reply)) => assert!(reply.to_string().starts_with("535 5.7.8 "), "{reply}"),
            (2, RcramOutcome::Temporary(reply)) => assert!(reply.to_string().starts_with("454 4.7.0 "), "{reply}"),
            (n, other) => panic!("guess {n}: {other:?}"),
        }
    }
    // glen from his seat still gets in: familiar at lrsupport, and galkam holds a verifier
    // to its own budget, not to the address's limit.
    match rcram_from(&f, seat, "glen@galkam.test", PASSWORD).await {
        RcramOutcome::Authenticated(_) => {}
        other => panic!("the owner was locked out: {other:?}"),
    }
    // Another user of the same verifier, from a new address: galkam counted the failures
    // for glen's account, not for lrsupport's IP.
    match rcram_from(&f, "127.0.0.70", "nurse@galkam.test", PASSWORD).await {
        RcramOutcome::Authenticated(_) => {}
        other => panic!("the verifier was blocked at the home server: {other:?}"),
    }
}

/// The home server's side of an X-RCRAM-VERIFY exchange, from `verifier`'s address: the
/// status of the AUTH line, then (after a 334) of `answer` (None: `*`).
async fn verify_once(conn: &mut LineClient, address: &str, answer: Option<&str>) -> (String, Option<String>) {
    let reply =
        String::from_utf8(conn.cmd(&format!("AUTH X-RCRAM-VERIFY {address} mail.lrsupport.test")).await).unwrap();
    let status = reply.split(' ').take(2).collect::<Vec<_>>().join(" ");
    if !reply.starts_with("334 ") {
        return (status.trim_end().to_string(), None);
    }
    let line = match answer {
        Some(answer) => STANDARD.encode(format!("{address} {answer}")),
        None => "*".to_string(),
    };
    (reply[..3].to_string(), Some(conn.status(&line).await))
}

/// Issue 19, item 2 (SPEC 8.2 step 3): a verifier is not a user. lrsupport relays glen's
/// good login to galkam, which used to make lrsupport "familiar" to glen's account there:
/// its guesses then had no limit and no delay. Now they count against the verifier, and
/// past `max_failures_per_verifier` every X-RCRAM-VERIFY from it gets 454 4.7.0, for
/// every address; a cancel counts too.
#[tokio::test]
async fn a_verifier_that_relayed_a_good_login_cannot_guess_without_limit() {
    const LIMIT: usize = 3;
    let f = Federation::start(|c| {
        c.auth.max_failures_per_verifier = LIMIT as u32;
        // One session for all 1,000 guesses.
        c.smtp.max_errors = 10_000;
    })
    .await;
    f.galkam.store.add_account(account("nurse@galkam.test")).await.unwrap();
    // A good login through lrsupport, as glen's client makes it.
    assert!(matches!(rcram_from(&f, "127.0.0.1", "glen@galkam.test", PASSWORD).await, RcramOutcome::Authenticated(_)));
    let lrsupport_ip: IpAddr = "127.0.0.3".parse().unwrap();
    let mut verifier = LineClient::connect_from(f.galkam.messenger(), lrsupport_ip).await;
    let (mut refused, mut blocked) = (0, 0);
    let started = std::time::Instant::now();
    for n in 0..1000 {
        // A cancel is a failure too (SPEC 8.2 step 3).
        let answer = if n == 1 { None } else { Some("00000000000000000000000000000000") };
        match verify_once(&mut verifier, "glen@galkam.test", answer).await {
            (code, Some(status)) if code == "334" => {
                assert!(status == "535 5.7.8" || status == "501 5.0.0", "guess {n}: {status}");
                refused += 1;
            }
            (status, None) if status == "454 4.7.0" => blocked += 1,
            // The session's error limit: a new connection, as an attacker would.
            (status, None) if status.starts_with("421") => {
                verifier = LineClient::connect_from(f.galkam.messenger(), lrsupport_ip).await;
            }
            other => panic!("guess {n}: {other:?}"),
        }
    }
    assert_eq!((refused, blocked), (LIMIT, 1000 - LIMIT), "guesses answered before the verifier's limit");
    assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());
    // For every address, and for glen's own good login through that verifier too.
    let mut fresh = LineClient::connect_from(f.galkam.messenger(), lrsupport_ip).await;
    assert_eq!(verify_once(&mut fresh, "nurse@galkam.test", None).await.0, "454 4.7.0");
    match rcram_from(&f, "127.0.0.1", "glen@galkam.test", PASSWORD).await {
        RcramOutcome::Temporary(reply) => assert!(reply.to_string().starts_with("454 4.7.0 "), "{reply}"),
        other => panic!("expected 454 from a blocked verifier: {other:?}"),
    }
    // galkam still takes glen's own login, and another verifier's exchanges.
    let mut glen = LineClient::connect(f.galkam.messenger()).await;
    glen.login("glen@galkam.test").await;
    let rogue_ip: IpAddr = "127.0.0.4".parse().unwrap();
    let mut other = LineClient::connect_from(f.galkam.messenger(), rogue_ip).await;
    let reply = other.cmd("AUTH X-RCRAM-VERIFY glen@galkam.test mail.rogue.test").await;
    assert!(reply.starts_with(b"334 "), "{}", String::from_utf8_lossy(&reply));
}

/// SPEC 8.2 step 3: at most 32 challenges outstanding per verifier; a cancel frees one,
/// and so does the end of the verifier's connection.
#[tokio::test]
async fn a_verifier_holds_at_most_32_challenges() {
    let f = Federation::start(|c| c.messenger.max_connections_per_ip = 40).await;
    let lrsupport_ip: IpAddr = "127.0.0.3".parse().unwrap();
    let challenge = || async {
        let mut c = LineClient::connect_from(f.galkam.messenger(), lrsupport_ip).await;
        let reply = String::from_utf8(c.cmd("AUTH X-RCRAM-VERIFY glen@galkam.test mail.lrsupport.test").await).unwrap();
        (c, reply)
    };
    let mut held = Vec::new();
    for n in 0..32 {
        let (c, reply) = challenge().await;
        assert!(reply.starts_with("334 "), "{n}: {reply}");
        held.push(c);
    }
    let (mut over, reply) = challenge().await;
    assert!(reply.starts_with("454 4.7.0 "), "the 33rd: {reply}");
    // Another verifier is not held up.
    let mut rogue = LineClient::connect_from(f.galkam.messenger(), "127.0.0.4".parse().unwrap()).await;
    assert!(rogue.cmd("AUTH X-RCRAM-VERIFY glen@galkam.test mail.rogue.test").await.starts_with(b"334 "));
    // A cancel frees its challenge (and counts as a failure).
    assert_eq!(held[0].status("*").await, "501 5.0.0");
    let reply = String::from_utf8(over.cmd("AUTH X-RCRAM-VERIFY glen@galkam.test mail.lrsupport.test").await).unwrap();
    assert!(reply.starts_with("334 "), "after a cancel: {reply}");
    assert!(challenge().await.1.starts_with("454 4.7.0 "));
    // So does a verifier's connection that ends.
    drop(held.pop());
    wait_until!("a dropped connection frees its challenge", 10, challenge().await.1.starts_with("334 "));
}

/// Issue 19, item 6 (SPEC 8.2 step 7): silent RCRAM-MD5 clients used to hold every
/// connection from the verifier to the home server for 300 s, so no one else could log in
/// there (nor CERT, nor NOTIFY). Now a client network holds at most 2 unfinished
/// exchanges, a home domain 16, and a client has the answer timeout (here 5 s) to answer.
#[tokio::test]
async fn silent_rcram_clients_do_not_hold_the_links_to_a_home_server() {
    let f = Federation::start(|c| c.messenger.rcram_answer_timeout_secs = 5).await;
    f.galkam.store.add_account(account("nurse@galkam.test")).await.unwrap();
    let addr = f.lrsupport.messenger();
    let silent_client = |from: String| async move {
        let mut c = LineClient::connect_from(addr, from.parse().unwrap()).await;
        let reply = String::from_utf8(c.cmd("AUTH RCRAM-MD5 glen@galkam.test").await).unwrap();
        (c, reply)
    };
    // Past the answer timeout a silent client is dropped, and its link freed.
    async fn timed_out(silent: Vec<LineClient>) {
        for mut c in silent {
            let reply = String::from_utf8(c.read().await).unwrap();
            assert!(reply.starts_with("421 4.4.2 "), "{reply}");
        }
    }
    // Twenty silent clients claiming glen, from one network: two get their challenge, the
    // rest 454.
    let mut silent = Vec::new();
    for n in 0..20 {
        let (c, reply) = silent_client("127.0.0.50".into()).await;
        if n < 2 {
            assert!(reply.starts_with("334 "), "{n}: {reply}");
            silent.push(c);
        } else {
            assert!(reply.starts_with("454 4.7.0 "), "{n}: {reply}");
        }
    }
    // Another user's login to the same home server works.
    assert!(matches!(rcram_from(&f, "127.0.0.1", "nurse@galkam.test", PASSWORD).await, RcramOutcome::Authenticated(_)));
    timed_out(silent).await;

    // Twenty silent clients, each from its own address: sixteen hold, four get 454.
    let mut silent = Vec::new();
    for n in 0..20 {
        let (c, reply) = silent_client(format!("127.0.1.{}", n + 1)).await;
        if n < 16 {
            assert!(reply.starts_with("334 "), "{n}: {reply}");
            silent.push(c);
        } else {
            assert!(reply.starts_with("454 4.7.0 "), "{n}: {reply}");
        }
    }
    // galkam still has connections for lrsupport's CERT relays.
    let mut cert = LineClient::connect(addr).await;
    cert.login("abc555@lrsupport.test").await;
    assert_eq!(cert.status("CERT glen@galkam.test").await, "550 5.3.0");
    timed_out(silent).await;
    assert!(matches!(rcram_from(&f, "127.0.0.1", "nurse@galkam.test", PASSWORD).await, RcramOutcome::Authenticated(_)));
}

/// Issue 19, item 1 (SPEC 8 "Trust between servers", 8.2 step 3): lrsupport calls galkam
/// from an address its name does not resolve to (NAT, renumbering). Its client
/// certificate, issued by the federation's CA for mail.lrsupport.test, names it, so galkam
/// issues the challenge; the same call with a self-signed certificate nothing vouches for
/// falls back to forward DNS and is refused, 535 5.7.0 at galkam, which lrsupport gives
/// its client as 454 4.7.0 (step 6: the home server would not verify for it).
#[tokio::test]
async fn a_verifier_known_by_its_client_certificate_needs_no_forward_dns() {
    // A loopback address that DNS gives to no name.
    const NAT: &str = "127.0.0.9";
    let f = Federation::start(|c| {
        if c.bootstrap.domain == "lrsupport.test" {
            c.messenger.source_address = Some(NAT.parse().unwrap());
        }
    })
    .await;
    match rcram_from(&f, "127.0.0.1", "glen@galkam.test", PASSWORD).await {
        RcramOutcome::Authenticated(reply) => {
            assert!(reply.to_string().starts_with("235 2.7.0 Authenticated as glen@galkam.test"), "{reply}")
        }
        other => panic!("a verifier named by its verified client certificate was refused: {other:?}"),
    }

    let f = Federation::start(|c| {
        if c.bootstrap.domain == "lrsupport.test" {
            c.messenger.source_address = Some(NAT.parse().unwrap());
            // The self-signed certificate the server makes itself: no CA vouches for it.
            c.tls.cert = None;
            c.tls.key = None;
        }
    })
    .await;
    match rcram_from(&f, "127.0.0.1", "glen@galkam.test", PASSWORD).await {
        RcramOutcome::Temporary(reply) => assert!(reply.to_string().starts_with("454 4.7.0 "), "{reply}"),
        other => panic!("a verifier neither named by a verified certificate nor by DNS was let in: {other:?}"),
    }
}
