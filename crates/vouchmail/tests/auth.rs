//! SMTP AUTH and TLS with third-party clients: swaks, msmtp (GNU SASL) and Python smtplib.

mod common;

use std::path::Path;
use std::process::Command;

use std::net::IpAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{run, tool, SmtpConn, TestServer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use vouchmail_proto::pop3::RespCode;
use vouchmail_proto::sasl::{self, ClientSession, Credentials, Mechanism, Secrets};
use vouchmail_server::net::pop3_client::{Pop3Client, Pop3ClientError};
use vouchmail_store::{CertMatch, NewAccount};

const PASSWORD: &str = "correct horse battery";

async fn with_alice(server: &TestServer) {
    let secrets = Secrets::from_password(PASSWORD, &[6; vouchmail_proto::sasl::SALTS_LEN]).unwrap();
    let account = NewAccount { address: "alice@local.test".into(), secrets, quota_bytes: 0 };
    server.store.add_account(account).await.unwrap();
}

fn authenticated_as_alice(message: &str) -> bool {
    // RFC 5322 2.2.3: unfold first.
    let unfolded = message.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded.contains("Authentication-Results: mx.local.test; auth=pass smtp.auth=alice@local.test\r\n")
}

async fn swaks(args: &[&str]) -> String {
    let mut cmd = Command::new(tool("swaks"));
    cmd.args(args).args(["--from", "alice@local.test", "--to", "user@local.test", "--helo", "swaks.test"]);
    let out = run(cmd).await;
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_plain_login_cram_md5_with_starttls_and_implicit_tls() {
    let server = TestServer::start().await;
    with_alice(&server).await;
    let submission = server.submission().to_string();
    let submissions = server.submissions().to_string();
    let runs: [(&str, &str, &str); 4] = [
        ("-tls", &submission, "PLAIN"),
        ("-tls", &submission, "LOGIN"),
        ("-tls", &submission, "CRAM-MD5"),
        ("-tlsc", &submissions, "PLAIN"),
    ];
    for (tls, addr, mechanism) in runs {
        let transcript = swaks(&[
            tls,
            "--server",
            addr,
            "--auth",
            mechanism,
            "--auth-user",
            "alice@local.test",
            "--auth-password",
            PASSWORD,
        ])
        .await;
        assert!(transcript.contains("235 2.7.0 Authentication successful"), "{mechanism} {tls}: {transcript}");
        assert!(transcript.contains("250 2.0.0 Ok: queued as"), "{mechanism} {tls}: {transcript}");
    }
    // CRAM-MD5 also works on a clear channel; PLAIN and LOGIN are not even offered there.
    let transcript = swaks(&[
        "--server",
        &submission,
        "--auth",
        "CRAM-MD5",
        "--auth-user",
        "alice@local.test",
        "--auth-password",
        PASSWORD,
    ])
    .await;
    assert!(transcript.contains("235 2.7.0"), "{transcript}");
    assert!(
        transcript.contains("250-AUTH SCRAM-SHA-256 CRAM-MD5\n")
            || transcript.contains("250-AUTH SCRAM-SHA-256 CRAM-MD5\r")
    );
    let inbox = server.inbox("user@local.test").await;
    assert_eq!(inbox.len(), 5);
    assert!(inbox.iter().all(|m| authenticated_as_alice(m)), "{}", inbox[0]);
    assert!(inbox.iter().filter(|m| m.replace("\r\n ", " ").contains("with ESMTPSA")).count() == 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_wrong_password_gets_535() {
    let server = TestServer::start().await;
    with_alice(&server).await;
    let submission = server.submission().to_string();
    let transcript = swaks(&[
        "-tls",
        "--server",
        &submission,
        "--auth",
        "PLAIN",
        "--auth-user",
        "alice@local.test",
        "--auth-password",
        "nope",
    ])
    .await;
    assert!(transcript.contains("535 5.7.8"), "{transcript}");
    assert!(server.inbox("user@local.test").await.is_empty());
}

/// Sends one message as alice with msmtp to the submission port over STARTTLS, with the
/// authentication options given; returns the one message it delivered to user@local.test.
async fn msmtp_as_alice(server: &TestServer, subject: &str, auth_options: &[String]) -> String {
    let mut args = vec![
        "--host=127.0.0.1".to_string(),
        format!("--port={}", server.submission().port()),
        "--tls=on".into(),
        "--tls-starttls=on".into(),
        "--tls-certcheck=off".into(),
        "--user=alice@local.test".into(),
        "--from=alice@local.test".into(),
    ];
    args.extend_from_slice(auth_options);
    args.push("user@local.test".into());
    let message = format!("From: alice@local.test\r\nSubject: {subject}\r\n\r\nbody\r\n");
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new(tool("msmtp"))
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(message.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let inbox = server.inbox("user@local.test").await;
    assert_eq!(inbox.len(), 1);
    assert!(inbox[0].contains(&format!("Subject: {subject}")));
    inbox.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msmtp_scram_sha_256_over_starttls() {
    let server = TestServer::start().await;
    with_alice(&server).await;
    let options = ["--auth=scram-sha-256".to_string(), format!("--passwordeval=echo \"{PASSWORD}\"")];
    let message = msmtp_as_alice(&server, "via msmtp", &options).await;
    assert!(authenticated_as_alice(&message), "{message}");
}

fn make_client_cert(dir: &Path) -> (String, String, String) {
    let key = dir.join("client.key").display().to_string();
    let cert = dir.join("client.pem").display().to_string();
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=alice", "-keyout", &key, "-out", &cert])
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let der = Command::new("openssl").args(["x509", "-in", &cert, "-outform", "DER"]).output().unwrap().stdout;
    use sha2::Digest;
    let fingerprint = sha2::Sha256::digest(&der).iter().map(|b| format!("{b:02x}")).collect();
    (key, cert, fingerprint)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msmtp_external_with_a_mapped_client_certificate() {
    let server = TestServer::start_with(|c| c.tls.request_client_cert = true).await;
    with_alice(&server).await;
    let (key, cert, fingerprint) = make_client_cert(server.dir.path());
    server.store.add_cert_mapping("alice@local.test", CertMatch::Fingerprint, &fingerprint).await.unwrap();
    let options = [format!("--tls-cert-file={cert}"), format!("--tls-key-file={key}"), "--auth=external".into()];
    let message = msmtp_as_alice(&server, "via external", &options).await;
    assert!(authenticated_as_alice(&message), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_smtplib_starttls_login_and_implicit_tls() {
    let server = TestServer::start().await;
    with_alice(&server).await;
    let script = r#"
import smtplib, ssl, sys
host, port, sport, password = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
with smtplib.SMTP(host, port) as s:
    s.ehlo("python.test")
    try:
        s.login("alice@local.test", "wrong")
        sys.exit("login without TLS and a wrong password must fail")
    except smtplib.SMTPAuthenticationError as e:
        assert e.smtp_code == 535, e
    s.starttls(context=ctx)
    s.ehlo("python.test")
    assert "plain" in s.esmtp_features["auth"].lower(), s.esmtp_features
    s.login("alice@local.test", password)
    try:
        s.sendmail("boss@local.test", ["user@local.test"], "Subject: forged\r\n\r\nx\r\n")
        sys.exit("a sender the user does not own was accepted")
    except smtplib.SMTPSenderRefused as e:
        assert e.smtp_code == 553, e
    s.sendmail("alice@local.test", ["user@local.test", "someone@remote.test"], "Subject: starttls\r\n\r\nx\r\n")
with smtplib.SMTP_SSL(host, sport, context=ctx) as s:
    s.login("alice@local.test", password)
    s.sendmail("alice@local.test", ["user@local.test"], "Subject: implicit\r\n\r\nx\r\n")
print("ok")
"#;
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script, "127.0.0.1"])
        .arg(server.submission().port().to_string())
        .arg(server.submissions().port().to_string())
        .arg(PASSWORD);
    let out = run(cmd).await;
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let inbox = server.inbox("user@local.test").await;
    assert_eq!(inbox.len(), 2);
    assert!(inbox.iter().all(|m| authenticated_as_alice(m)));
    // An authenticated user may send anywhere: the remote recipient is queued.
    let queue = server.store.list_queue().await.unwrap();
    assert_eq!(queue.iter().map(|q| q.recipient.as_str()).collect::<Vec<_>>(), ["someone@remote.test"]);
    // Submission adds a missing Date and Message-ID (RFC 6409 8).
    assert!(inbox[0].contains("\r\nDate: ") && inbox[0].contains("\r\nMessage-ID: <"));
}

/// Seed 004 / RFC 3207: a command pipelined behind STARTTLS is never executed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_pipelined_after_starttls_is_never_executed() {
    let server = TestServer::start().await;
    let script = r#"
import socket, ssl, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
f = s.makefile("rb")
def reply(f):
    lines = []
    while True:
        line = f.readline().decode()
        lines.append(line.strip())
        if line[3:4] != "-":
            return lines
reply(f)
s.sendall(b"EHLO py.test\r\n"); reply(f)
s.sendall(b"STARTTLS\r\nMAIL FROM:<evil@remote.test>\r\n")
assert reply(f)[-1].startswith("220 2.0.0"), "no 220"
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
t = ctx.wrap_socket(s, server_hostname="mx.local.test")
g = t.makefile("rb")
t.sendall(b"MAIL FROM:<a@remote.test>\r\n")
first = reply(g)[-1]
assert first.startswith("503 5.5.1"), "MAIL before the new EHLO: " + first
t.sendall(b"EHLO py.test\r\n")
ehlo = reply(g)
assert ehlo[0].startswith("250-mx.local.test"), ehlo
assert not any("STARTTLS" in l for l in ehlo), ehlo
t.sendall(b"MAIL FROM:<a@remote.test>\r\n")
mail = reply(g)[-1]
# Had the pipelined MAIL run, this would be "503 Nested MAIL".
assert mail.startswith("250 2.1.0"), mail
t.sendall(b"QUIT\r\n"); reply(g)
print("ok")
"#;
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script]).arg(server.mx().port().to_string());
    let out = run(cmd).await;
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_reply_codes_over_the_wire_and_failure_limit() {
    let server = TestServer::start_with(|c| {
        c.auth.max_failures_per_ip = 3;
    })
    .await;
    with_alice(&server).await;
    let (mut c, _) = SmtpConn::connect(server.submission()).await;
    let ehlo = c.cmd("EHLO wire.test").await;
    assert!(ehlo.text().contains("250-STARTTLS"), "{}", ehlo.text());
    assert_eq!(c.cmd("MAIL FROM:<alice@local.test>").await.status(), "530 5.7.0");
    assert_eq!(c.cmd("AUTH PLAIN AGFsaWNlQGxvY2FsLnRlc3QAeA==").await.status(), "538 5.7.11");
    assert_eq!(c.cmd("AUTH NOPE").await.status(), "504 5.5.4");
    let cram = c.cmd("AUTH CRAM-MD5").await;
    assert_eq!(cram.code, 334);
    assert_eq!(c.cmd("*").await.status(), "501 5.0.0");
    // Three wrong answers, each slower; then the IP is refused for a while.
    for _ in 0..3 {
        assert_eq!(c.cmd("AUTH CRAM-MD5").await.code, 334);
        assert_eq!(
            c.cmd("YWxpY2VAbG9jYWwudGVzdCAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMA==").await.status(),
            "535 5.7.8"
        );
    }
    assert_eq!(c.cmd("AUTH CRAM-MD5").await.code, 334);
    assert_eq!(
        c.cmd("YWxpY2VAbG9jYWwudGVzdCAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMA==").await.status(),
        "454 4.7.0"
    );
    // The session is still usable.
    assert_eq!(c.cmd("NOOP").await.status(), "250 2.0.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msmtp_external_with_a_ca_verified_certificate_mapped_by_subject() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-days", "2", "-subj", "/O=Example CA/CN=Test CA", "-keyout", &path("ca.key"), "-out", &path("ca.pem")],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &["-subj", "/O=Example/CN=alice", "-keyout", &path("client.key"), "-out", &path("client.csr")],
        ]
        .concat(),
    );
    // webpki accepts only X.509 v3 certificates: give the client certificate extensions.
    std::fs::write(dir.path().join("client.ext"), "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &path("client.csr"),
        "-CA",
        &path("ca.pem"),
        "-CAkey",
        &path("ca.key"),
        "-CAcreateserial",
        "-extfile",
        &path("client.ext"),
        "-days",
        "2",
        "-out",
        &path("client.pem"),
    ]);
    let ca = dir.path().join("ca.pem");
    let server = TestServer::start_with(|c| c.tls.client_ca = Some(ca)).await;
    with_alice(&server).await;
    // Mapped by subject, in RFC 4514 order (the reverse of the certificate's).
    server.store.add_cert_mapping("alice@local.test", CertMatch::Subject, "CN=alice,O=Example").await.unwrap();
    let options = [
        format!("--tls-cert-file={}", path("client.pem")),
        format!("--tls-key-file={}", path("client.key")),
        "--auth=external".into(),
    ];
    let message = msmtp_as_alice(&server, "via subject", &options).await;
    assert!(authenticated_as_alice(&message), "{message}");
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// One CRAM-MD5 AUTH as alice on a new submission connection from `local`; the status of
/// the final reply.
async fn cram_md5_from(server: &TestServer, local: &str, password: &str) -> String {
    let (mut c, _) = SmtpConn::connect_from(server.submission(), ip(local)).await;
    c.cmd("EHLO limits.test").await;
    let challenge = c.cmd("AUTH CRAM-MD5").await;
    assert_eq!(challenge.code, 334, "{}", challenge.text());
    let raw = sasl::decode_challenge(&challenge.lines[0].as_bytes()[4..]).unwrap();
    let mut client = ClientSession::new(Mechanism::CramMd5, Credentials::new("alice@local.test", password));
    let response = client.step(&raw).unwrap();
    c.cmd(&sasl::encode_response(&response)).await.status()
}

/// A POP3 CRAM-MD5 login as alice from `local`: Ok, or the response code of the `-ERR`.
async fn pop3_cram_md5_from(server: &TestServer, local: &str) -> Result<(), Option<RespCode>> {
    let stream = common::connect_from(server.pop3(), ip(local)).await;
    let (mut pop, _) = Pop3Client::connect(stream).await.unwrap();
    match pop.authenticate(Mechanism::CramMd5, Credentials::new("alice@local.test", PASSWORD)).await {
        Ok(_) => Ok(()),
        Err(Pop3ClientError::Server(reply)) => Err(reply.code),
        Err(e) => panic!("POP3 login: {e:?}"),
    }
}

/// SPEC 3: strangers' wrong passwords block the account only for client addresses that
/// never logged in to it; the owner's familiar address keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_from_strangers_do_not_lock_out_a_familiar_address() {
    // Small limits: few failures, so few (growing) delays.
    let server = TestServer::start_with(|c| {
        c.auth.max_failures_per_ip = 3;
        c.auth.max_failures_per_account = 3;
    })
    .await;
    with_alice(&server).await;
    assert_eq!(cram_md5_from(&server, "127.0.0.1", PASSWORD).await, "235 2.7.0");
    // 50 wrong passwords from 50 other addresses: the account's limit is reached after 3,
    // and the others are refused before their password is even looked at.
    let mut replies = Vec::new();
    for n in 2..=51 {
        replies.push(cram_md5_from(&server, &format!("127.0.0.{n}"), "wrong").await);
    }
    assert!(replies[..3].iter().all(|r| r == "535 5.7.8"), "{replies:?}");
    assert!(replies[3..].iter().all(|r| r == "454 4.7.0"), "{replies:?}");
    // The address alice logged in from is subject only to its own limit.
    assert_eq!(cram_md5_from(&server, "127.0.0.1", PASSWORD).await, "235 2.7.0");
    assert_eq!(cram_md5_from(&server, "127.0.0.1", "typo").await, "535 5.7.8");
    assert_eq!(cram_md5_from(&server, "127.0.0.1", PASSWORD).await, "235 2.7.0");
    assert_eq!(pop3_cram_md5_from(&server, "127.0.0.1").await, Ok(()));
    // A new address is refused even with the right password while the attack lasts.
    assert_eq!(cram_md5_from(&server, "127.0.0.200", PASSWORD).await, "454 4.7.0");
    assert_eq!(pop3_cram_md5_from(&server, "127.0.0.201").await, Err(Some(RespCode::SysTemp)));
}

/// SPEC 3: a store that cannot answer is a temporary failure (454 4.7.0, -ERR [SYS/TEMP]),
/// not a wrong password: it is not counted towards the limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_error_during_auth_is_temporary_and_not_counted() {
    let server = TestServer::start_with(|c| c.auth.max_failures_per_ip = 2).await;
    with_alice(&server).await;
    common::raw_sql(&server, "ALTER TABLE accounts RENAME TO accounts_away").await;
    for _ in 0..4 {
        assert_eq!(cram_md5_from(&server, "127.0.0.1", PASSWORD).await, "454 4.7.0");
    }
    assert_eq!(pop3_cram_md5_from(&server, "127.0.0.1").await, Err(Some(RespCode::SysTemp)));
    common::raw_sql(&server, "ALTER TABLE accounts_away RENAME TO accounts").await;
    assert_eq!(cram_md5_from(&server, "127.0.0.1", PASSWORD).await, "235 2.7.0");
}

/// The salt and iteration count the server offers `user` in a SCRAM-SHA-256 exchange
/// (SMTP submission), which is then cancelled.
async fn smtp_scram_salt(addr: std::net::SocketAddr, user: &str) -> (String, String) {
    let (mut c, _) = SmtpConn::connect(addr).await;
    c.cmd("EHLO salt.test").await;
    let first = STANDARD.encode(format!("n,,n={user},r=clientnonce"));
    let challenge = c.cmd(&format!("AUTH SCRAM-SHA-256 {first}")).await;
    assert_eq!(challenge.code, 334, "{}", challenge.text());
    let server_first = sasl::decode_challenge(&challenge.lines[0].as_bytes()[4..]).unwrap();
    assert_eq!(c.cmd("*").await.code, 501);
    salt_and_iterations(&server_first)
}

/// The same over POP3 (RFC 5034).
async fn pop3_scram_salt(addr: std::net::SocketAddr, user: &str) -> (String, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut line = String::new();
    read.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("+OK"), "{line}");
    let first = STANDARD.encode(format!("n,,n={user},r=clientnonce"));
    write.write_all(format!("AUTH SCRAM-SHA-256 {first}\r\n").as_bytes()).await.unwrap();
    line.clear();
    read.read_line(&mut line).await.unwrap();
    let challenge = line.trim_end().strip_prefix("+ ").unwrap_or_else(|| panic!("{line}"));
    let server_first = sasl::decode_challenge(challenge.as_bytes()).unwrap();
    write.write_all(b"*\r\n").await.unwrap();
    salt_and_iterations(&server_first)
}

fn salt_and_iterations(server_first: &[u8]) -> (String, String) {
    let text = String::from_utf8(server_first.to_vec()).unwrap();
    let field =
        |name: &str| text.split(',').find_map(|f| f.strip_prefix(name)).unwrap_or_else(|| panic!("{text}")).to_string();
    (field("s="), field("i="))
}

/// An unknown user's SCRAM salt is as stable as a real account's (else two attempts tell
/// whether the account exists), on SMTP and POP3 alike and across a restart on the same
/// store; different unknown users get different salts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_salts_of_unknown_users_are_stable() {
    let server = TestServer::start().await;
    let ghost = smtp_scram_salt(server.submission(), "ghost@local.test").await;
    assert_eq!(ghost.1, "4096");
    assert_eq!(smtp_scram_salt(server.submission(), "ghost@local.test").await, ghost);
    assert_eq!(smtp_scram_salt(server.submission(), "Ghost@Local.test").await, ghost);
    assert_eq!(pop3_scram_salt(server.pop3(), "ghost@local.test").await, ghost);
    let phantom = smtp_scram_salt(server.submission(), "phantom@local.test").await;
    assert_ne!(phantom.0, ghost.0);
    // A restart reads the same secret from the same store.
    let restarted = server.restart().await;
    assert_eq!(smtp_scram_salt(restarted.submission(), "ghost@local.test").await, ghost);
    assert_eq!(pop3_scram_salt(restarted.pop3(), "phantom@local.test").await, phantom);
}
