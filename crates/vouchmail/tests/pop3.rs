//! POP3 mailbox download over real sockets: our Rust client, a line client for the error
//! paths, fetchmail (STLS and pop3s, to an MDA) and Python's poplib.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{run, tool, SmtpConn, TestServer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use vouchmail_proto::pop3::RespCode;
use vouchmail_proto::sasl::secrets::Secrets;
use vouchmail_proto::sasl::{Credentials, Mechanism};
use vouchmail_server::net::pop3_client::{Pop3Client, Pop3ClientError};
use vouchmail_store::{Folder, TrackingKind};

const USER: &str = "user@local.test";
const PASSWORD: &str = "pop3 secret";

/// The user's secrets, derived once (Argon2id is slow in debug builds).
fn secrets() -> Secrets {
    static SECRETS: OnceLock<Secrets> = OnceLock::new();
    SECRETS
        .get_or_init(|| Secrets::from_password(PASSWORD, &[6; vouchmail_proto::sasl::SALTS_LEN]).expect("secrets"))
        .clone()
}

/// A server whose `user@local.test` has a password and `count` messages in its INBOX,
/// delivered through the MX.
async fn server_with(count: usize, adjust: impl FnOnce(&mut vouchmail_server::config::Config)) -> TestServer {
    let server = TestServer::start_with(adjust).await;
    server.store.set_secrets(USER, secrets()).await.expect("secrets");
    deliver(&server, 1, count).await;
    server
}

async fn server(count: usize) -> TestServer {
    server_with(count, |_| {}).await
}

/// Delivers messages `first..first+count` (subject "pop3 test N"); every body has a line
/// that starts with a dot, to exercise byte-stuffing both ways.
async fn deliver(server: &TestServer, first: usize, count: usize) {
    let (mut c, _) = SmtpConn::connect(server.mx()).await;
    c.cmd("EHLO client.test").await;
    for n in first..first + count {
        let body = format!(
            "From: a@remote.test\r\nTo: {USER}\r\nMessage-ID: <m{n}@remote.test>\r\nSubject: pop3 test {n}\r\n\r\nline one\r\n..dotted line {n}\r\n"
        );
        assert_eq!(c.send_message("a@remote.test", &[USER], &body).await.code, 250);
    }
    c.cmd("QUIT").await;
}

async fn connect(addr: SocketAddr) -> Pop3Client<TcpStream> {
    let (client, greeting) =
        Pop3Client::connect(TcpStream::connect(addr).await.expect("connect")).await.expect("greeting");
    assert!(greeting.positive);
    client
}

async fn login(addr: SocketAddr) -> Pop3Client<TcpStream> {
    let mut pop = connect(addr).await;
    pop.authenticate(Mechanism::ScramSha256, Credentials::new(USER, PASSWORD)).await.expect("login");
    pop
}

/// Logs in, retrying while an earlier session still holds the maildrop (a dropped
/// connection is noticed by the server a moment later).
async fn login_when_free(addr: SocketAddr) -> Pop3Client<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut pop = connect(addr).await;
        match pop.authenticate(Mechanism::ScramSha256, Credentials::new(USER, PASSWORD)).await {
            Ok(_) => return pop,
            Err(Pop3ClientError::Server(r)) if r.code == Some(RespCode::InUse) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("login: {e}"),
        }
    }
}

/// A line client for exact replies.
struct Line {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Line {
    async fn connect(addr: SocketAddr) -> (Line, String) {
        let (read, write) = TcpStream::connect(addr).await.expect("connect").into_split();
        let mut line = Line { reader: BufReader::new(read), writer: write };
        let greeting = line.read().await.expect("greeting");
        (line, greeting)
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write");
    }

    /// One line without CRLF; None at EOF.
    async fn read(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(30), self.reader.read_line(&mut line))
            .await
            .expect("read timeout")
            .ok()?;
        (n > 0).then(|| line.trim_end_matches(['\r', '\n']).to_string())
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.read().await.expect("reply")
    }

    /// The lines of a multi-line response up to the terminating dot.
    async fn multi(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.read().await.expect("line");
            if line == "." {
                return lines;
            }
            lines.push(line);
        }
    }

    async fn is_closed(&mut self) -> bool {
        self.read().await.is_none()
    }
}

/// The `-ERR` line a client call ended with.
fn err(result: Result<(), Pop3ClientError>) -> String {
    match result {
        Err(Pop3ClientError::Server(reply)) => reply.to_string(),
        Ok(()) => "ok".to_string(),
        Err(e) => e.to_string(),
    }
}

/// How many `downloaded` events the store holds.
async fn downloads(server: &TestServer) -> Vec<vouchmail_store::TrackingEvent> {
    let events = server.store.list_tracking_events(0, 1000).await.expect("events");
    assert!(events.iter().all(|e| e.kind == TrackingKind::Downloaded));
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_with_scram_on_a_clear_channel() {
    let server = server(2).await;
    let mut pop = connect(server.pop3()).await;
    let caps = pop.capa().await.unwrap();
    for tag in ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "STLS", "IMPLEMENTATION"] {
        assert!(caps.has(tag), "{tag} missing: {caps:?}");
    }
    // No clear-text passwords without TLS.
    assert!(!caps.has("USER"));
    assert_eq!(caps.args("SASL"), ["SCRAM-SHA-256", "CRAM-MD5"]);
    let ok = pop.authenticate(Mechanism::ScramSha256, Credentials::new(USER, PASSWORD)).await.unwrap();
    assert!(ok.text.contains("has 2 messages"), "{ok}");
    let stored = server.mailbox(USER, Folder::Inbox).await;
    let (count, size) = pop.stat().await.unwrap();
    assert_eq!((count, size), (2, stored.iter().map(|m| m.len() as u64).sum()));
    assert_eq!(pop.list().await.unwrap(), [(1, stored[0].len() as u64), (2, stored[1].len() as u64)]);
    let entries = server.store.list_mailbox(USER, Some(Folder::Inbox)).await.unwrap();
    let uids: Vec<String> = entries.iter().map(|e| e.unique_id()).collect();
    assert_eq!(pop.uidl().await.unwrap(), [(1, uids[0].clone()), (2, uids[1].clone())]);
    // RETR gives back exactly what was stored, dot-stuffing undone.
    let message = pop.retr(1).await.unwrap();
    assert_eq!(message, stored[0]);
    assert!(String::from_utf8_lossy(&message).contains("\r\n.dotted line 1\r\n"));
    let top = String::from_utf8(pop.top(2, 1).await.unwrap()).unwrap();
    assert!(top.contains("Subject: pop3 test 2\r\n\r\nline one\r\n") && !top.contains("dotted"), "{top}");
    pop.quit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cram_md5_and_bad_credentials() {
    let server = server(1).await;
    let mut pop = connect(server.pop3()).await;
    let err = pop.authenticate(Mechanism::CramMd5, Credentials::new(USER, "wrong")).await.unwrap_err();
    assert!(matches!(&err, Pop3ClientError::Server(r) if r.code == Some(RespCode::Auth)), "{err}");
    let err = pop.authenticate(Mechanism::ScramSha256, Credentials::new("nobody@local.test", "x")).await.unwrap_err();
    assert!(matches!(&err, Pop3ClientError::Server(r) if r.code == Some(RespCode::Auth)), "{err}");
    pop.authenticate(Mechanism::CramMd5, Credentials::new(USER, PASSWORD)).await.unwrap();
    assert_eq!(pop.stat().await.unwrap().0, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_err_path_over_the_wire() {
    let server = server(2).await;
    let (mut c, greeting) = Line::connect(server.pop3()).await;
    assert_eq!(greeting, "+OK mx.local.test POP3 server (vouchmail) ready");
    // AUTHORIZATION.
    let plaintext = "-ERR [AUTH] Plaintext authentication disallowed on non-secure connections; use STLS";
    assert_eq!(c.cmd(&format!("USER {USER}")).await, plaintext);
    assert_eq!(c.cmd("PASS x").await, plaintext);
    assert_eq!(c.cmd("AUTH PLAIN AHVzZXIAeA==").await, plaintext);
    assert_eq!(c.cmd("AUTH X-NONE").await, "-ERR Unrecognized authentication mechanism");
    assert_eq!(c.cmd("AUTH CRAM-MD5 =").await, "-ERR Initial response not allowed for this mechanism");
    assert_eq!(c.cmd("AUTH SCRAM-SHA-256 !!").await, "-ERR Cannot decode the authentication response");
    assert_eq!(c.cmd("AUTH CRAM-MD5").await.get(..2), Some("+ "));
    assert_eq!(c.cmd("*").await, "-ERR Authentication cancelled");
    assert_eq!(c.cmd("APOP user c4c9334bac560ecc979e58001b3e22fb").await, "-ERR APOP is not available");
    assert_eq!(c.cmd("STAT").await, "-ERR Command not valid in this state");
    assert_eq!(c.cmd("FOO").await, "-ERR Unknown command");
    assert_eq!(c.cmd(&format!("NOOP {}", "x".repeat(300))).await, "-ERR Line too long");
    // TRANSACTION, after a login with SCRAM.
    drop(c);
    let mut pop = login(server.pop3()).await;
    pop.dele(1).await.unwrap();
    assert_eq!(err(pop.dele(1).await.map(|_| ())), "-ERR Message 1 already deleted");
    assert_eq!(err(pop.retr(1).await.map(|_| ())), "-ERR Message 1 already deleted");
    assert_eq!(err(pop.retr(3).await.map(|_| ())), "-ERR No such message");
    assert_eq!(err(pop.top(0, 1).await.map(|_| ())), "-ERR No such message");
    use vouchmail_proto::pop3::Command as C;
    assert_eq!(err(pop.command(&C::Stls).await.map(|_| ())), "-ERR Command not valid in this state");
    assert_eq!(err(pop.command(&C::User(USER.into())).await.map(|_| ())), "-ERR Command not valid in this state");
    pop.quit().await.unwrap();
    assert_eq!(server.mailbox(USER, Folder::Inbox).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_per_mailbox() {
    let server = server(1).await;
    let first = login(server.pop3()).await;
    let mut second = connect(server.pop3()).await;
    let err = second.authenticate(Mechanism::ScramSha256, Credentials::new(USER, PASSWORD)).await.unwrap_err();
    let Pop3ClientError::Server(reply) = err else { panic!("{err}") };
    assert_eq!(reply.to_string(), "-ERR [IN-USE] Mailbox is locked by another POP3 session");
    // Not a password failure: the same connection may try again once the first is gone.
    first.quit().await.unwrap();
    second.authenticate(Mechanism::ScramSha256, Credentials::new(USER, PASSWORD)).await.unwrap();
    assert_eq!(second.stat().await.unwrap().0, 1);
}

/// Whether a session of another node could take the maildrop of `USER` now: the store
/// holds no lease on it (the probe's own lease is given back at once).
async fn maildrop_free_in_store(server: &TestServer) -> bool {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let name = format!("pop3:{USER}");
    let free = server.store.try_lease(&name, "probe", now, now + 60).await.expect("lease");
    if free {
        server.store.release_lease(&name, "probe").await.expect("release");
    }
    free
}

/// RFC 1939 6: the maildrop is released, then QUIT is answered. And a session that a
/// stopping server ends gives its maildrop back before the shutdown returns, so a store
/// closed (or copied elsewhere) next holds no lease of a process that is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_maildrop_is_free_in_the_store_when_quit_is_answered_and_when_the_server_has_stopped() {
    let mut server = server(1).await;
    let pop = login(server.pop3()).await;
    assert!(!maildrop_free_in_store(&server).await, "held while the session runs");
    pop.quit().await.unwrap();
    assert!(maildrop_free_in_store(&server).await, "free when QUIT was answered");

    let mut pop = login(server.pop3()).await;
    assert_eq!(pop.stat().await.unwrap().0, 1);
    server.server.take().expect("running").shutdown().await;
    assert!(maildrop_free_in_store(&server).await, "free when the shutdown returned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_deletes_nothing() {
    let server = server(2).await;
    let mut pop = login(server.pop3()).await;
    pop.dele(1).await.unwrap();
    pop.dele(2).await.unwrap();
    assert_eq!(pop.stat().await.unwrap().0, 0);
    drop(pop.into_inner());
    let mut pop = login_when_free(server.pop3()).await;
    assert_eq!(pop.stat().await.unwrap().0, 2);
    pop.quit().await.unwrap();
    assert_eq!(server.mailbox(USER, Folder::Inbox).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_timer_closes_silently_and_deletes_nothing() {
    let server = server_with(1, |c| c.pop3.idle_timeout_secs = 1).await;
    let mut pop = login(server.pop3()).await;
    pop.dele(1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // RFC 1939 3: no response, just the end of the connection.
    let err = pop.stat().await.unwrap_err();
    assert!(matches!(err, Pop3ClientError::Io(_)), "{err}");
    let mut pop = login_when_free(server.pop3()).await;
    assert_eq!(pop.stat().await.unwrap().0, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quit_removes_marked_messages_and_keeps_counters() {
    let server = server(3).await;
    let before = server.store.get_account(USER).await.unwrap().unwrap();
    assert_eq!(before.message_count, 3);
    let mut pop = login(server.pop3()).await;
    pop.dele(2).await.unwrap();
    let bye = pop.quit().await.unwrap();
    assert!(bye.text.ends_with("(2 messages left)"), "{bye}");
    let inbox = server.inbox(USER).await;
    assert_eq!(inbox.len(), 2);
    assert!(inbox[0].contains("pop3 test 1") && inbox[1].contains("pop3 test 3"));
    let after = server.store.get_account(USER).await.unwrap().unwrap();
    let sizes: u64 = server.mailbox(USER, Folder::Inbox).await.iter().map(|m| m.len() as u64).sum();
    assert_eq!((after.message_count, after.used_bytes), (2, sizes));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uidl_is_stable_across_sessions() {
    let server = server(2).await;
    let mut pop = login(server.pop3()).await;
    let first = pop.uidl().await.unwrap();
    pop.quit().await.unwrap();
    deliver(&server, 3, 1).await;
    let mut pop = login(server.pop3()).await;
    let second = pop.uidl().await.unwrap();
    assert_eq!(second[..2], first[..]);
    assert_eq!(second.len(), 3);
    pop.dele(1).await.unwrap();
    pop.quit().await.unwrap();
    // Message numbers move up; unique-ids stay with their messages.
    let mut pop = login(server.pop3()).await;
    let third = pop.uidl().await.unwrap();
    assert_eq!(third, [(1, second[1].1.clone()), (2, second[2].1.clone())]);
    // A new message never gets the id of a deleted one.
    pop.dele(2).await.unwrap();
    pop.quit().await.unwrap();
    deliver(&server, 4, 1).await;
    let mut pop = login(server.pop3()).await;
    let fourth = pop.uidl().await.unwrap();
    assert_eq!(fourth.len(), 2);
    assert!(second.iter().all(|(_, uid)| *uid != fourth[1].1), "{second:?} {fourth:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retr_records_downloaded_once() {
    let server = server(2).await;
    let mut pop = login(server.pop3()).await;
    pop.top(1, 0).await.unwrap();
    pop.top(1, 1).await.unwrap();
    assert!(downloads(&server).await.is_empty(), "a partial TOP is not a download");
    pop.retr(1).await.unwrap();
    pop.retr(1).await.unwrap();
    pop.quit().await.unwrap();
    let mut pop = login(server.pop3()).await;
    pop.retr(1).await.unwrap();
    let events = downloads(&server).await;
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].message_id.as_str(), events[0].recipient.as_str()), ("<m1@remote.test>", USER));
    assert_eq!(events[0].sender, "a@remote.test");
    // A TOP that sends the whole message is one (fetchmail retrieves that way).
    pop.top(2, 1000).await.unwrap();
    assert_eq!(downloads(&server).await.len(), 2);
    pop.retr(2).await.unwrap();
    pop.quit().await.unwrap();
    let events = downloads(&server).await;
    assert_eq!(
        events.iter().map(|e| e.message_id.as_str()).collect::<Vec<_>>(),
        ["<m1@remote.test>", "<m2@remote.test>"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_hit_the_shared_limit() {
    let server = server_with(1, |c| c.auth.max_failures_per_ip = 2).await;
    let mut pop = connect(server.pop3()).await;
    for _ in 0..2 {
        let err = pop.authenticate(Mechanism::CramMd5, Credentials::new(USER, "guess")).await.unwrap_err();
        assert!(matches!(&err, Pop3ClientError::Server(r) if r.code == Some(RespCode::Auth)), "{err}");
    }
    let err = pop.authenticate(Mechanism::ScramSha256, Credentials::new(USER, PASSWORD)).await.unwrap_err();
    assert!(matches!(&err, Pop3ClientError::Server(r) if r.code == Some(RespCode::SysTemp)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_idle_sessions_without_deleting() {
    let mut server = server(1).await;
    let (mut c, _) = Line::connect(server.pop3()).await;
    assert_eq!(c.cmd("CAPA").await, "+OK Capability list follows");
    c.multi().await;
    let running = server.server.take().unwrap();
    let shutdown = tokio::spawn(running.shutdown());
    assert_eq!(c.read().await.unwrap(), "-ERR [SYS/TEMP] Server shutting down");
    assert!(c.is_closed().await);
    assert_eq!(shutdown.await.unwrap(), 0);
    assert_eq!(server.mailbox(USER, Folder::Inbox).await.len(), 1);
}

/// Runs a Python script with the POP3 ports as arguments; returns its stdout.
async fn python(server: &TestServer, script: &str) -> String {
    let mut cmd = Command::new(tool("python3"));
    cmd.args(["-c", script, &server.pop3().port().to_string(), &server.pop3s().port().to_string(), USER, PASSWORD]);
    let out = run(cmd).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_poplib_stls_user_pass_uidl_retr_dele() {
    let server = server(2).await;
    let script = r#"
import poplib, ssl, sys
port, port_s, user, password = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl._create_unverified_context()
p = poplib.POP3("127.0.0.1", port, timeout=30)
caps = p.capa()
assert "STLS" in caps and "USER" not in caps, caps
try:
    p.user(user)
    sys.exit("USER accepted in the clear")
except poplib.error_proto as e:
    assert str(e).startswith("b'-ERR [AUTH]"), e
p.stls(ctx)
caps = p.capa()
assert "USER" in caps and "STLS" not in caps, caps
assert "PLAIN" in caps["SASL"], caps
p.user(user)
p.pass_(password)
resp, listing, _ = p.uidl()
assert len(listing) == 2, listing
resp, lines, octets = p.retr(1)
text = b"\r\n".join(lines)
assert b"Subject: pop3 test 1" in text and b"\r\n.dotted line 1" in text, text
assert octets >= len(text), (octets, len(text))
p.dele(1)
print(p.quit().decode())
p = poplib.POP3_SSL("127.0.0.1", port_s, context=ctx, timeout=30)
assert "STLS" not in p.capa()
p.user(user)
p.pass_(password)
count, size = p.stat()
assert count == 1, count
print("uid", p.uidl(1).decode())
p.quit()
"#;
    let out = python(&server, script).await;
    assert!(out.contains("signing off (1 message left)"), "{out}");
    let entries = server.store.list_mailbox(USER, Some(Folder::Inbox)).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert!(out.contains(&format!("uid +OK 1 {}", entries[0].unique_id())), "{out}");
    assert_eq!(downloads(&server).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stls_discards_pipelined_commands() {
    let server = server(1).await;
    // The NOOP sent in the clear behind STLS must never be answered: the first answer
    // inside TLS is the one to CAPA.
    let script = r#"
import socket, ssl, sys
port = int(sys.argv[1])
s = socket.create_connection(("127.0.0.1", port), timeout=30)
f = s.makefile("rb")
assert f.readline().startswith(b"+OK")
s.sendall(b"STLS\r\nNOOP\r\n")
assert f.readline() == b"+OK Begin TLS negotiation\r\n"
t = ssl._create_unverified_context().wrap_socket(s)
t.sendall(b"CAPA\r\n")
g = t.makefile("rb")
first = g.readline()
assert first == b"+OK Capability list follows\r\n", first
print("ok")
"#;
    assert_eq!(python(&server, script).await.trim(), "ok");
}

/// Runs fetchmail with `rc` as its run control file, in a private HOME; returns its exit
/// status (0: mail fetched, 1: no new mail) and log.
async fn fetchmail(dir: &std::path::Path, rc: &str) -> (i32, String) {
    use std::os::unix::fs::PermissionsExt;
    let rc_path = dir.join("fetchmailrc");
    std::fs::write(&rc_path, rc).unwrap();
    // fetchmail refuses a run control file others can read.
    std::fs::set_permissions(&rc_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cmd = Command::new(tool("fetchmail"));
    cmd.env("HOME", dir)
        .env("FETCHMAILHOME", dir)
        .args(["--nodetach", "--nosyslog", "-v", "-f"])
        .arg(&rc_path)
        .arg("-i")
        .arg(dir.join("fetchids"))
        // As root fetchmail keeps its lock in /var/run/fetchmail.pid: two tests running it
        // at once would refuse each other ("another foreground fetchmail").
        .arg("--pidfile")
        .arg(dir.join("fetchmail.pid"));
    let out = run(cmd).await;
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let code = out.status.code().unwrap_or(-1);
    assert!(code == 0 || code == 1, "fetchmail failed: {log}");
    (code, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetchmail_with_stls_delivers_to_an_mda_and_deletes() {
    let server = server(3).await;
    let dir = tempfile::tempdir().unwrap();
    let mbox = dir.path().join("mbox");
    let rc = format!(
        "set no bouncemail\npoll 127.0.0.1 service {} proto pop3\n  user \"{USER}\" password \"{PASSWORD}\"\n  \
         sslproto \"tls1.2+\" no sslcertck\n  mda \"cat >> {}\"\n",
        server.pop3().port(),
        mbox.display()
    );
    let (code, log) = fetchmail(dir.path(), &rc).await;
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("POP3> STLS"), "{log}");
    assert!(log.contains("3 messages for"), "{log}");
    let delivered = std::fs::read_to_string(&mbox).unwrap();
    for n in 1..=3 {
        assert!(delivered.contains(&format!("Subject: pop3 test {n}")), "{delivered}");
        assert!(delivered.contains(&format!("\n.dotted line {n}")), "{delivered}");
    }
    // fetchmail deletes what it delivered, at QUIT.
    assert!(server.mailbox(USER, Folder::Inbox).await.is_empty());
    assert_eq!(downloads(&server).await.len(), 3, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetchmail_with_user_pass_over_pop3s_keeps_mail() {
    let server = server(2).await;
    let dir = tempfile::tempdir().unwrap();
    let mbox = dir.path().join("mbox");
    let rc = format!(
        "set no bouncemail\npoll 127.0.0.1 service {} proto pop3 auth password\n  user \"{USER}\" password \"{PASSWORD}\"\n  \
         ssl no sslcertck keep\n  mda \"cat >> {}\"\n",
        server.pop3s().port(),
        mbox.display()
    );
    let (code, log) = fetchmail(dir.path(), &rc).await;
    assert_eq!(code, 0, "{log}");
    assert!(log.contains(&format!("POP3> USER {USER}")), "{log}");
    assert!(!log.contains("STLS"), "{log}");
    let delivered = std::fs::read_to_string(&mbox).unwrap();
    assert_eq!(delivered.matches("Subject: pop3 test").count(), 2, "{delivered}");
    assert_eq!(server.mailbox(USER, Folder::Inbox).await.len(), 2);
    // A second run sees both as seen by their UIDLs and fetches nothing.
    let (code, log) = fetchmail(dir.path(), &rc).await;
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("2 messages (2 seen)"), "{log}");
    assert_eq!(std::fs::read_to_string(&mbox).unwrap(), delivered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_dripping_a_command_is_closed_at_the_autologout_deadline() {
    let server = server_with(1, |c| c.pop3.idle_timeout_secs = 2).await;
    let (line, greeting) = Line::connect(server.pop3()).await;
    assert!(greeting.starts_with("+OK"), "{greeting}");
    let started = Instant::now();
    // A byte every 500 ms never completes a line in time, though each read alone is prompt.
    let Line { mut reader, mut writer } = line;
    let drip = tokio::spawn(async move {
        for b in b"USER a-long-user-name-that-never-ends@local.test".iter().take(12) {
            if writer.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let mut rest = String::new();
    // RFC 1939 3: the autologout timer closes without a response.
    let n = tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut rest)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "closed without a response, got {rest:?}");
    assert!(started.elapsed() < Duration::from_secs(4), "closed at the deadline: {:?}", started.elapsed());
    drip.abort();
}
