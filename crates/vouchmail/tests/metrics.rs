//! The server's metrics after traffic (SPEC 12, issue 24 item 2): `/metrics` is scraped
//! before and after a known piece of traffic, and each counter must have moved by exactly
//! what that traffic adds: a message accepted, a RCPT refused, a failed and a good AUTH, a
//! delivery to a peer, VERIFY requests, a CERT relayed to a home server, logins, and IDLE.
//! Every scrape is parsed with Python's `prometheus_client.parser` and, where `promtool`
//! is installed (Debian's `prometheus` package, about 100 MB, which scripts/test.sh does
//! not install), checked with `promtool check metrics`.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::http::get;
use common::{free_port, SmtpConn, TestServer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UdpSocket};
use vouchmail_proto::sasl::{Secrets, SALTS_LEN};
use vouchmail_server::config::Route;
use vouchmail_testkit::dns::TestDns;
use vouchmail_testkit::smtp_peer::Peer;

const PASSWORD: &str = "pencil";

/// Every sample of one scrape: `name{label="value",...}` (labels sorted) to its value.
#[derive(Debug, Clone)]
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    fn value(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }

    /// How much each series moved since `before`, the ones that did not left out.
    fn moved_since(&self, before: &Scrape) -> BTreeMap<String, f64> {
        let mut moved = BTreeMap::new();
        for (series, value) in &self.0 {
            let delta = value - before.value(series);
            if delta != 0.0 {
                moved.insert(series.clone(), delta);
            }
        }
        moved
    }
}

/// The text of `/metrics`, checked by promtool where installed, parsed by
/// `prometheus_client` (the parser Prometheus's own Python client ships).
async fn scrape(server: &TestServer) -> Scrape {
    let response = get(server.admin(), "/metrics", None).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let text = response.text();
    promtool_check(&text).await;
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        labels = ",".join('%s="%s"' % (k, v) for k, v in sorted(sample.labels.items()))
        out["%s{%s}" % (sample.name, labels) if labels else sample.name] = sample.value
print(json.dumps(out))
"#;
    let output = pipe("/usr/bin/python3", &["-c", script], &text).await;
    assert!(output.status.success(), "prometheus_client cannot parse /metrics: {}\n{text}", stderr(&output));
    let parsed: BTreeMap<String, f64> = serde_json::from_slice(&output.stdout).expect("JSON from the parser");
    Scrape(parsed)
}

async fn promtool_check(text: &str) {
    let Some(promtool) =
        ["/usr/bin/promtool", "/usr/local/bin/promtool"].into_iter().find(|p| std::path::Path::new(p).exists())
    else {
        return;
    };
    let output = pipe(promtool, &["check", "metrics"], text).await;
    // promtool exits 1 for lint problems too (a missing HELP); every family here has one.
    assert!(output.status.success(), "promtool check metrics: {}{}\n{text}", stdout(&output), stderr(&output));
}

async fn pipe(program: &str, args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}; run scripts/test.sh, which installs it"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    tokio::task::spawn_blocking(move || {
        stdin.write_all(input.as_bytes()).unwrap();
        drop(stdin);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Scrapes until `done` holds of the scrape (sessions end and deliveries are recorded a
/// moment after the client sees its last reply).
async fn scrape_until(server: &TestServer, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    for _ in 0..200 {
        let now = scrape(server).await;
        if done(&now) {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not seen in /metrics within 10 s:\n{:?}", scrape(server).await);
}

/// The moves a test expects, as `(series, delta)`; every other series must stay still
/// except the ones `ignored` names (by prefix): the admin listener's own sessions, and
/// histogram buckets and sums whose values depend on timing.
fn assert_moved(before: &Scrape, after: &Scrape, expected: &[(&str, f64)], ignored: &[&str]) {
    let moved = after.moved_since(before);
    let mut unexpected = Vec::new();
    for (series, delta) in &moved {
        let wanted = expected.iter().find(|(s, _)| s == series).map(|(_, d)| *d);
        match wanted {
            Some(d) if d == *delta => {}
            Some(d) => unexpected.push(format!("{series} moved by {delta}, expected {d}")),
            None if ignored.iter().any(|prefix| series.starts_with(prefix)) => {}
            None => unexpected.push(format!("{series} moved by {delta}, expected no move")),
        }
    }
    for (series, delta) in expected {
        if !moved.contains_key(*series) && *delta != 0.0 {
            unexpected.push(format!("{series} did not move, expected {delta}"));
        }
    }
    assert!(unexpected.is_empty(), "{}\nall moves: {moved:#?}", unexpected.join("\n"));
}

/// What moves on its own in every scrape: the scraper's own admin session, histograms'
/// buckets and sums (timing), and the queue gauge (read from the store at each scrape).
const ALWAYS_IGNORED: &[&str] = &[
    "vouchmail_sessions_total{listener=\"admin\"}",
    "vouchmail_sessions_open{listener=\"admin\"}",
    "vouchmail_delivery_duration_seconds_bucket",
    "vouchmail_delivery_duration_seconds_sum",
    "vouchmail_store_commit_duration_seconds_bucket",
    "vouchmail_store_commit_duration_seconds_sum",
    "vouchmail_queue_messages",
];

fn secrets() -> Secrets {
    Secrets::from_password(PASSWORD, &[6; SALTS_LEN]).unwrap()
}

/// A message accepted on the MX, a RCPT refused there and a MAIL refused for its declared
/// size, a MAIL before AUTH, a failed then a good AUTH on submission and the user's
/// message to a remote peer delivered: each counter moves by exactly its amount, and
/// nothing else moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_traffic_and_a_delivery_move_exactly_their_counters() {
    let peer = Peer::builder("127.0.0.1").start();
    let peer_addr = format!("127.0.0.1:{}", peer.port());
    let server = TestServer::start_with(|c| {
        c.auth.allow_plaintext_passwords = true;
        let o = &mut c.outbound;
        o.enabled = true;
        o.poll_interval_ms = 50;
        o.routes = vec![Route { domain: "remote.test".into(), host: peer_addr.clone(), ..Route::default() }];
    })
    .await;
    server.store.set_secrets("user@local.test", secrets()).await.unwrap();
    let before = scrape(&server).await;

    let (mut mx, greeting) = SmtpConn::connect(server.mx()).await;
    assert_eq!(greeting.code, 220);
    assert_eq!(mx.cmd("EHLO client.test").await.code, 250);
    let body = "From: a@client.test\r\nTo: user@local.test\r\nSubject: counted\r\n\r\nHello\r\n";
    assert_eq!(mx.send_message("a@client.test", &["user@local.test"], body).await.code, 250);
    assert_eq!(mx.cmd("MAIL FROM:<a@client.test>").await.code, 250);
    let refused = mx.cmd("RCPT TO:<nobody@local.test>").await;
    assert_eq!(refused.code, 550, "{refused:?}");
    assert_eq!(mx.cmd("RSET").await.code, 250);
    // RFC 1870 6.1: a declared size over the limit, refused by the session itself.
    assert_eq!(mx.cmd("MAIL FROM:<a@client.test> SIZE=100000000000").await.code, 552);
    assert_eq!(mx.cmd("QUIT").await.code, 221);

    let (mut submission, _) = SmtpConn::connect(server.submission()).await;
    assert_eq!(submission.cmd("EHLO client.test").await.code, 250);
    assert_eq!(submission.cmd("MAIL FROM:<user@local.test>").await.code, 530, "AUTH first (RFC 4954 6)");
    let wrong = STANDARD.encode("\0user@local.test\0not the password");
    assert_eq!(submission.cmd(&format!("AUTH PLAIN {wrong}")).await.code, 535);
    let good = STANDARD.encode(format!("\0user@local.test\0{PASSWORD}"));
    assert_eq!(submission.cmd(&format!("AUTH PLAIN {good}")).await.code, 235);
    let body = "From: user@local.test\r\nTo: carol@remote.test\r\nSubject: out\r\n\r\nHello\r\n";
    assert_eq!(submission.send_message("user@local.test", &["carol@remote.test"], body).await.code, 250);
    assert_eq!(submission.cmd("QUIT").await.code, 221);
    peer.wait_for_messages(1, Duration::from_secs(20)).await;

    let delivered = "vouchmail_delivery_attempts_total{result=\"delivered\"}";
    let after = scrape_until(&server, "the delivery recorded and both sessions closed", |s| {
        s.value(delivered) == before.value(delivered) + 1.0
            && s.value("vouchmail_sessions_open{listener=\"mx\"}") == 0.0
            && s.value("vouchmail_sessions_open{listener=\"submission\"}") == 0.0
    })
    .await;
    assert_moved(
        &before,
        &after,
        &[
            ("vouchmail_sessions_total{listener=\"mx\"}", 1.0),
            ("vouchmail_sessions_total{listener=\"submission\"}", 1.0),
            ("vouchmail_messages_accepted_total{listener=\"mx\"}", 1.0),
            ("vouchmail_messages_accepted_total{listener=\"submission\"}", 1.0),
            ("vouchmail_messages_refused_total{listener=\"mx\",reason=\"recipient\"}", 1.0),
            ("vouchmail_messages_refused_total{listener=\"mx\",reason=\"size\"}", 1.0),
            ("vouchmail_messages_refused_total{listener=\"submission\",reason=\"auth_required\"}", 1.0),
            ("vouchmail_auth_attempts_total{listener=\"submission\",mechanism=\"PLAIN\",result=\"failure\"}", 1.0),
            ("vouchmail_auth_attempts_total{listener=\"submission\",mechanism=\"PLAIN\",result=\"success\"}", 1.0),
            (delivered, 1.0),
            ("vouchmail_delivery_duration_seconds_count{result=\"delivered\"}", 1.0),
            ("vouchmail_store_commit_duration_seconds_count{result=\"ok\"}", 2.0),
        ],
        ALWAYS_IGNORED,
    );
    // The duration histogram saw the delivery in a bucket no wider than the transaction.
    let inf = "vouchmail_delivery_duration_seconds_bucket{le=\"+Inf\",result=\"delivered\"}";
    assert_eq!(after.value(inf) - before.value(inf), 1.0);
    let sum = "vouchmail_delivery_duration_seconds_sum{result=\"delivered\"}";
    let took = after.value(sum) - before.value(sum);
    assert!(took > 0.0 && took < 20.0, "{took}");
}

/// VERIFY over UDP and TCP (SPEC 7.2): two valid keys, one invalid and one malformed
/// request, by result; the TCP connection is a session of the `authkey` listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_requests_are_counted_by_result() {
    let server = TestServer::start_with(|c| {
        c.authkey.server = true;
        c.authkey.default_agi_secs = 2;
        c.authkey.default_avt_secs = 600;
        c.authkey.tick_secs = 1;
        c.listeners.authkey = vec!["127.0.0.1:0".parse().unwrap()];
    })
    .await;
    let addr = server.server.as_ref().unwrap().authkey_addrs[0];
    let key = first_key(&server, "user@local.test").await;
    let before = scrape(&server).await;

    let valid = udp(addr, format!("VERIFY 1 user@local.test {key}\r\n").as_bytes()).await;
    assert_eq!(valid, "VERIFY_REPLY 1 user@local.test VALIDKEY\r\n");
    // The key with its first character changed.
    let first = if key.starts_with('A') { "B" } else { "A" };
    let wrong = format!("{first}{}", key.get(1..).unwrap_or_default());
    let invalid = udp(addr, format!("VERIFY 2 user@local.test {wrong}\r\n").as_bytes()).await;
    assert_eq!(invalid, "VERIFY_REPLY 2 user@local.test INVALIDKEY\r\n");
    let malformed = udp(addr, b"VERIFY 3 user@local.test short\r\n").await;
    assert_eq!(malformed, "ERROR 3 bad key\r\n");
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("VERIFY a user@local.test {key}\r\n").as_bytes()).await.unwrap();
    let mut reply = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut reply)).await.unwrap().unwrap();
    assert_eq!(String::from_utf8_lossy(&reply[..n]), "VERIFY_REPLY a user@local.test VALIDKEY\r\n");
    drop(tcp);

    let after = scrape_until(&server, "the VERIFY session closed", |s| {
        s.value("vouchmail_sessions_total{listener=\"authkey\"}") == 1.0
            && s.value("vouchmail_sessions_open{listener=\"authkey\"}") == 0.0
    })
    .await;
    assert_moved(
        &before,
        &after,
        &[
            ("vouchmail_verify_requests_total{result=\"valid\"}", 2.0),
            ("vouchmail_verify_requests_total{result=\"invalid\"}", 1.0),
            ("vouchmail_verify_requests_total{result=\"error\"}", 1.0),
            ("vouchmail_sessions_total{listener=\"authkey\"}", 1.0),
        ],
        ALWAYS_IGNORED,
    );
}

async fn first_key(server: &TestServer, address: &str) -> String {
    let now = || vouchmail_proto::time::unix_seconds(std::time::SystemTime::now());
    for _ in 0..100 {
        if let Some(k) = server.store.authkeys(address, now()).await.unwrap().into_iter().next() {
            return k.key;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no AuthKey generated for {address}");
}

async fn udp(addr: SocketAddr, datagram: &[u8]) -> String {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(datagram, addr).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf)).await.expect("a reply").unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A CERT for a remote mailbox (SPEC 8.1): the asking server counts it `relayed`, the home
/// server, which has no such mailbox, `unknown`; both count their Messenger sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_cert_is_counted_on_both_servers() {
    let home_port = free_port("127.0.0.1");
    let dns = TestDns::builder()
        .srv("_messenger._tcp.remote.test", 10, 1, home_port, "mail.remote.test")
        .a("mail.remote.test", "127.0.0.1")
        .start()
        .await;
    let home = TestServer::start_with(|c| {
        c.hostname = "mail.remote.test".into();
        c.bootstrap.domain = "remote.test".into();
        c.listeners.messenger = vec![SocketAddr::from(([127, 0, 0, 1], home_port))];
    })
    .await;
    let asking = TestServer::start_with(|c| {
        c.dns.nameservers = vec![dns.addr()];
        c.auth.allow_plaintext_passwords = true;
    })
    .await;
    asking.store.set_secrets("user@local.test", secrets()).await.unwrap();
    let (home_before, asking_before) = (scrape(&home).await, scrape(&asking).await);

    let (mut c, _) = SmtpConn::connect(asking.messenger()).await;
    assert_eq!(c.cmd("EHLO client.test").await.code, 250);
    let good = STANDARD.encode(format!("\0user@local.test\0{PASSWORD}"));
    assert_eq!(c.cmd(&format!("AUTH PLAIN {good}")).await.code, 235);
    let reply = c.cmd("CERT nobody@remote.test").await;
    assert_eq!(reply.code, 550, "the home server's answer, relayed: {reply:?}");
    assert_eq!(c.cmd("QUIT").await.code, 221);

    let closed = |s: &Scrape| s.value("vouchmail_sessions_open{listener=\"messenger\"}") == 0.0;
    let asking_after = scrape_until(&asking, "the Messenger session closed", closed).await;
    // The asking server keeps its connection to the home server for the next call.
    let unknown = "vouchmail_cert_lookups_total{result=\"unknown\"}";
    let home_after = scrape(&home).await;
    assert_eq!(home_after.value("vouchmail_sessions_open{listener=\"messenger\"}"), 1.0, "{home_after:?}");
    assert_moved(
        &asking_before,
        &asking_after,
        &[
            ("vouchmail_sessions_total{listener=\"messenger\"}", 1.0),
            ("vouchmail_auth_attempts_total{listener=\"messenger\",mechanism=\"PLAIN\",result=\"success\"}", 1.0),
            ("vouchmail_cert_lookups_total{result=\"relayed\"}", 1.0),
        ],
        ALWAYS_IGNORED,
    );
    assert_moved(
        &home_before,
        &home_after,
        &[
            ("vouchmail_sessions_total{listener=\"messenger\"}", 1.0),
            ("vouchmail_sessions_open{listener=\"messenger\"}", 1.0),
            (unknown, 1.0),
        ],
        ALWAYS_IGNORED,
    );
}

/// POP3 and IMAP logins by mechanism and result, and the IDLE gauge: up while a session
/// idles, and down again when the client drops the connection without DONE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_and_the_idle_gauge() {
    let server = TestServer::start_with(|c| {
        c.pop3.allow_plaintext_user_pass = true;
        c.imap.allow_plaintext_login = true;
    })
    .await;
    server.store.set_secrets("user@local.test", secrets()).await.unwrap();
    let before = scrape(&server).await;

    let mut pop3 = Lines::connect(server.pop3()).await;
    assert!(pop3.cmd("USER user@local.test").await.starts_with("+OK"));
    assert!(pop3.cmd("PASS wrong").await.starts_with("-ERR"));
    assert!(pop3.cmd("QUIT").await.starts_with("+OK"));

    let mut imap = Lines::connect(server.imap()).await;
    assert!(imap.cmd(&format!("a LOGIN user@local.test {PASSWORD}")).await.starts_with("a OK"));
    assert!(imap.cmd("b SELECT INBOX").await.starts_with("b OK"));
    assert_eq!(&imap.cmd("c IDLE").await[..2], "+ ");
    let idling = scrape_until(&server, "the session in IDLE", |s| s.value("vouchmail_imap_idle_sessions") == 1.0).await;
    assert_eq!(idling.value("vouchmail_sessions_open{listener=\"imap\"}"), 1.0);
    // Gone without DONE: the gauge must not keep the session.
    drop(imap);

    let after = scrape_until(&server, "the IMAP session closed", |s| {
        s.value("vouchmail_sessions_open{listener=\"imap\"}") == 0.0
            && s.value("vouchmail_sessions_open{listener=\"pop3\"}") == 0.0
    })
    .await;
    assert_moved(
        &before,
        &after,
        &[
            ("vouchmail_sessions_total{listener=\"pop3\"}", 1.0),
            ("vouchmail_sessions_total{listener=\"imap\"}", 1.0),
            ("vouchmail_auth_attempts_total{listener=\"pop3\",mechanism=\"PASSWORD\",result=\"failure\"}", 1.0),
            ("vouchmail_auth_attempts_total{listener=\"imap\",mechanism=\"PASSWORD\",result=\"success\"}", 1.0),
        ],
        ALWAYS_IGNORED,
    );
    assert_eq!(after.value("vouchmail_imap_idle_sessions"), 0.0);
}

/// A line client for POP3 and IMAP: the tagged (or single-line) answer to a command.
struct Lines {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Lines {
    async fn connect(addr: SocketAddr) -> Lines {
        let (read, writer) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut lines = Lines { reader: BufReader::new(read), writer };
        let greeting = lines.line().await;
        assert!(greeting.starts_with("+OK") || greeting.starts_with("* OK"), "{greeting}");
        lines
    }

    async fn line(&mut self) -> String {
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(10), self.reader.read_line(&mut line)).await;
        assert!(read.expect("a line in time").unwrap() > 0, "connection closed");
        line
    }

    /// The first line that is not untagged (`* ...`).
    async fn cmd(&mut self, command: &str) -> String {
        self.writer.write_all(format!("{command}\r\n").as_bytes()).await.unwrap();
        loop {
            let line = self.line().await;
            if !line.starts_with("* ") {
                return line;
            }
        }
    }
}
