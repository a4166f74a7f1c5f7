//! On-Demand Mail Relay (RFC 2645): the vouchmail provider with fetchmail and with our own
//! customer, every ATRN reply code, ETRN, and customers that fail part way.

mod common;

use std::io::Write;
use std::process::Command;

use common::{binary, run, tool, Reply, SmtpConn, TestServer};
use vouchmail_proto::sasl::{self, ClientSession, Credentials, Mechanism, Secrets};
use vouchmail_store::{NewAccount, QueueState, SenderPolicy};

const PASSWORD: &str = "odmr secret";

/// A provider holding example.org (and example.net) for cust@local.test, with `messages`
/// messages waiting for example.org, each to alice@ and bob@example.org.
async fn provider(messages: usize) -> TestServer {
    provider_with(messages, |_| {}).await
}

async fn provider_with(messages: usize, adjust: impl FnOnce(&mut vouchmail_server::config::Config)) -> TestServer {
    let server = TestServer::start_with(adjust).await;
    let secrets = Secrets::from_password(PASSWORD, &[6; vouchmail_proto::sasl::SALTS_LEN]).unwrap();
    server.store.add_account(NewAccount { address: "cust@local.test".into(), secrets, quota_bytes: 0 }).await.unwrap();
    for domain in ["example.org", "example.net"] {
        server.store.add_domain(domain, SenderPolicy::ACCEPT).await.unwrap();
        server.store.set_domain_held(domain, &["cust@local.test".to_string()], None).await.unwrap();
    }
    let (mut c, _) = SmtpConn::connect(server.mx()).await;
    c.cmd("EHLO sender.test").await;
    for n in 0..messages {
        let body = format!("Subject: held {n}\r\n\r\nfor the customer\r\n");
        let reply = c.send_message("s@remote.test", &["alice@example.org", "bob@example.org"], &body).await;
        assert_eq!(reply.code, 250);
    }
    server
}

async fn queue_states(server: &TestServer) -> Vec<(String, QueueState)> {
    let mut out: Vec<_> =
        server.store.list_queue().await.unwrap().into_iter().map(|e| (e.recipient, e.state)).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Connects to the ODMR port and authenticates with CRAM-MD5 as cust@local.test.
async fn authenticated(server: &TestServer) -> SmtpConn {
    authenticated_as(server, "cust@local.test").await
}

/// Connects to the ODMR port and authenticates with CRAM-MD5 as `user` (password PASSWORD).
async fn authenticated_as(server: &TestServer, user: &str) -> SmtpConn {
    let (mut c, greeting) = SmtpConn::connect(server.odmr()).await;
    assert_eq!(greeting.code, 220);
    let ehlo = c.cmd("EHLO customer.example").await;
    assert!(ehlo.lines.iter().any(|l| l == "250 ATRN"), "{:?}", ehlo.lines);
    assert!(ehlo.lines.iter().any(|l| l.starts_with("250-AUTH") && l.contains("CRAM-MD5")), "{:?}", ehlo.lines);
    let challenge = c.cmd("AUTH CRAM-MD5").await;
    assert_eq!(challenge.code, 334);
    let raw = sasl::decode_challenge(&challenge.lines[0].as_bytes()[4..]).unwrap();
    let mut client = ClientSession::new(Mechanism::CramMd5, Credentials::new(user, PASSWORD));
    let response = client.step(&raw).unwrap();
    assert_eq!(c.cmd(&sasl::encode_response(&response)).await.code, 235);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atrn_reply_codes() {
    let server = provider(1).await;
    // Held mail is accepted on the MX but waits: nothing is delivered anywhere.
    assert_eq!(queue_states(&server).await.len(), 2);
    let (mut c, _) = SmtpConn::connect(server.odmr()).await;
    c.cmd("EHLO customer.example").await;
    // RFC 2645 5.2.1: 530 before AUTH; 5.4: 502 for other commands. RFC 2034: the ODMR
    // listener offers ENHANCEDSTATUSCODES, so every reply has its code.
    assert_eq!(c.cmd("ATRN example.org").await.lines, ["530 5.7.0 Authentication required"]);
    assert_eq!(c.cmd("MAIL FROM:<a@b.example>").await.code, 502);
    assert_eq!(c.cmd("HELO x").await.code, 502);
    let mut c = authenticated(&server).await;
    assert_eq!(c.cmd("ATRN example.org,other.example").await.code, 450);
    assert_eq!(c.cmd("ATRN example.net").await.lines, ["453 4.0.0 You have no mail"]);
    // Nothing was sent by the refusals.
    assert!(queue_states(&server).await.iter().all(|(_, s)| *s == QueueState::Queued));
    assert_eq!(c.cmd("QUIT").await.code, 221);
    // STARTTLS on the ODMR listener carries its enhanced code like every other reply.
    let (mut t, _) = SmtpConn::connect(server.odmr()).await;
    let ehlo = t.cmd("EHLO customer.example").await;
    assert!(ehlo.lines.iter().any(|l| l == "250-ENHANCEDSTATUSCODES"), "{:?}", ehlo.lines);
    assert_eq!(t.cmd("STARTTLS").await.status(), "220 2.0.0");
}

/// RFC 2645 5.2.1: an account takes only the domains held for it. `_` in an account name
/// once matched any character (a LIKE pattern), so cust_1 took custx1's domain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atrn_refuses_a_look_alike_accounts_domain() {
    let server = provider(1).await;
    for user in ["custx1@local.test", "cust_1@local.test"] {
        let secrets = Secrets::from_password(PASSWORD, &[6; vouchmail_proto::sasl::SALTS_LEN]).unwrap();
        server.store.add_account(NewAccount { address: user.into(), secrets, quota_bytes: 0 }).await.unwrap();
    }
    server.store.set_domain_held("example.org", &["custx1@local.test".to_string()], None).await.unwrap();
    let mut c = authenticated_as(&server, "cust_1@local.test").await;
    assert_eq!(
        c.cmd("ATRN example.org").await.lines,
        ["450 4.7.1 ATRN request refused: not authorized for example.org"]
    );
    assert_eq!(c.cmd("ATRN").await.lines, ["450 4.7.1 ATRN request refused: no domains are held for you"]);
    assert_eq!(c.cmd("QUIT").await.code, 221);
    // The mail waits for its own customer.
    assert!(queue_states(&server).await.iter().all(|(_, s)| *s == QueueState::Queued));
    let mut c = authenticated_as(&server, "CustX1@local.test").await;
    assert_eq!(c.cmd("ATRN example.org").await.code, 250);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_atrn_within_the_interval_is_450() {
    let server = provider(1).await;
    // The kit sets the interval to 0; a provider with the default interval refuses a repeat.
    let strict = TestServer::start_with(|c| c.odmr.atrn_interval_secs = 3600).await;
    let secrets = Secrets::from_password(PASSWORD, &[6; vouchmail_proto::sasl::SALTS_LEN]).unwrap();
    strict.store.add_account(NewAccount { address: "cust@local.test".into(), secrets, quota_bytes: 0 }).await.unwrap();
    strict.store.add_domain("example.org", SenderPolicy::ACCEPT).await.unwrap();
    strict.store.set_domain_held("example.org", &["cust@local.test".to_string()], None).await.unwrap();
    let (mut s, _) = SmtpConn::connect(strict.mx()).await;
    s.cmd("EHLO x").await;
    assert_eq!(s.send_message("a@remote.test", &["x@example.org"], "Subject: a\r\n\r\nx\r\n").await.code, 250);
    let mut first = authenticated(&strict).await;
    assert_eq!(first.cmd("ATRN").await.code, 250);
    drop(first);
    // The provider saw the customer go: the entry is back in the queue, deferred.
    wait_until!(
        "the first session's outcome",
        20,
        queue_states(&strict).await.iter().all(|(_, s)| *s == QueueState::Deferred)
    );
    let mut second = authenticated(&strict).await;
    assert_eq!(second.cmd("ATRN").await.code, 450);
    drop(server);
}

/// Plays the customer's server side of the reversed session by hand.
async fn serve_reversed(
    c: &mut SmtpConn,
    rcpt_reply: impl Fn(&str) -> &'static str,
    die_after: Option<usize>,
) -> usize {
    c.send_raw(b"220 customer.example ESMTP ready\r\n").await;
    let mut messages = 0;
    loop {
        let Some(line) = c.read_line().await else { return messages };
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            c.send_raw(b"250-customer.example\r\n250 8BITMIME\r\n").await;
        } else if upper.starts_with("MAIL") {
            if die_after == Some(messages) {
                return messages;
            }
            c.send_raw(b"250 ok\r\n").await;
        } else if upper.starts_with("RCPT") {
            c.send_raw(format!("{}\r\n", rcpt_reply(&line)).as_bytes()).await;
        } else if upper.starts_with("DATA") {
            c.send_raw(b"354 go\r\n").await;
            while let Some(data) = c.read_line().await {
                if data == "." {
                    break;
                }
            }
            messages += 1;
            c.send_raw(b"250 stored\r\n").await;
        } else if upper.starts_with("RSET") || upper.starts_with("NOOP") {
            c.send_raw(b"250 ok\r\n").await;
        } else if upper.starts_with("QUIT") {
            c.send_raw(b"221 bye\r\n").await;
            return messages;
        } else {
            c.send_raw(b"500 what\r\n").await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_recipient_replies_update_the_queue() {
    let server = provider(1).await;
    let mut c = authenticated(&server).await;
    assert_eq!(c.cmd("ATRN example.org").await.lines, ["250 2.0.0 OK now reversing the connection"]);
    let answer = |line: &str| if line.contains("alice") { "250 ok" } else { "550 no such user" };
    assert_eq!(serve_reversed(&mut c, answer, None).await, 1);
    // alice delivered, bob bounced (5xx), and the bounce went to the sender (queued remote).
    let bounced = [("s@remote.test".to_string(), QueueState::Queued)];
    wait_until!(format!("{bounced:?}"), 20, queue_states(&server).await == bounced);

    let server = provider(1).await;
    let mut c = authenticated(&server).await;
    assert_eq!(c.cmd("ATRN").await.code, 250);
    let answer = |line: &str| if line.contains("alice") { "250 ok" } else { "452 try later" };
    serve_reversed(&mut c, answer, None).await;
    // 4xx stays queued for the next ATRN.
    let deferred = [("bob@example.org".to_string(), QueueState::Deferred)];
    wait_until!(format!("{deferred:?}"), 20, queue_states(&server).await == deferred);
    let mut again = authenticated(&server).await;
    assert_eq!(again.cmd("ATRN").await.code, 250);
    assert_eq!(serve_reversed(&mut again, |_| "250 ok", None).await, 1);
    wait_until!("an empty queue", 20, queue_states(&server).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_dying_mid_session_loses_and_duplicates_nothing() {
    let server = provider(3).await;
    let mut c = authenticated(&server).await;
    assert_eq!(c.cmd("ATRN").await.code, 250);
    // Takes the first message, then vanishes at the second MAIL.
    assert_eq!(serve_reversed(&mut c, |_| "250 ok", Some(1)).await, 1);
    drop(c);
    // The provider notices the customer is gone and defers what was not taken.
    wait_until!("the deferrals", 20, queue_states(&server).await.iter().all(|(_, s)| *s == QueueState::Deferred));
    let states = queue_states(&server).await;
    assert_eq!(states.len(), 4, "{states:?}");
    assert!(states.iter().all(|(_, s)| *s == QueueState::Deferred), "{states:?}");
    // The next ATRN delivers exactly the two messages not yet taken.
    let mut c = authenticated(&server).await;
    assert_eq!(c.cmd("ATRN").await.code, 250);
    assert_eq!(serve_reversed(&mut c, |_| "250 ok", None).await, 2);
    wait_until!("an empty queue", 20, queue_states(&server).await.is_empty());
}

/// The customer's own vouchmail: a config with its local domain example.org.
fn customer_config(dir: &std::path::Path) -> std::path::PathBuf {
    let config = dir.join("customer.toml");
    let text = format!(
        "hostname = \"customer.example\"\ndata_dir = \"{}\"\n[listeners]\nmx = []\nsubmission = []\nsubmissions = []\nodmr = []\n\
         [bootstrap]\ndomain = \"example.org\"\npolicy = \"require\"\npostmaster = false\n[outbound]\nenabled = false\n",
        dir.join("customer-data").display()
    );
    std::fs::write(&config, text).unwrap();
    let password = dir.join("password");
    std::fs::write(&password, format!("{PASSWORD}\n")).unwrap();
    config
}

fn vouchmail(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(binary()).arg("--config").arg(config).args(args).output().unwrap()
}

/// The customer's store: its domain (policy require: only a trusted relay gets mail in)
/// and its users alice@ and bob@example.org. Returns the config.
fn customer_store(dir: &std::path::Path) -> std::path::PathBuf {
    let config = customer_config(dir);
    // The admin commands never create a store; init does, with the bootstrap domain.
    assert!(vouchmail(&config, &["init"]).status.success());
    let domains = vouchmail(&config, &["domain", "list"]);
    let domains = String::from_utf8_lossy(&domains.stdout);
    assert!(domains.lines().nth(1).is_some_and(|l| l.starts_with("example.org  reject ")), "{domains}");
    for user in ["alice@example.org", "bob@example.org"] {
        let mut child = Command::new(binary())
            .arg("--config")
            .arg(&config)
            .args(["user", "add", user, "--password-stdin"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"pw\n").unwrap();
        assert!(child.wait().unwrap().success());
    }
    config
}

/// The newest message in a customer mailbox, as stored.
fn newest_message(config: &std::path::Path, address: &str) -> String {
    let list = vouchmail(config, &["mailbox", "list", address]);
    let listing = String::from_utf8_lossy(&list.stdout);
    let newest = listing.lines().filter_map(|l| l.split(' ').next()?.parse::<i64>().ok()).max();
    let id = newest.unwrap_or_else(|| panic!("no message for {address}: {listing}")).to_string();
    String::from_utf8_lossy(&vouchmail(config, &["mailbox", "show", address, &id]).stdout).into_owned()
}

/// The provider's certificate (self-signed on its first start, for its host name).
fn provider_certificate(server: &TestServer) -> std::path::PathBuf {
    server.config.data_dir.join("tls/cert.pem")
}

/// A certificate's SHA-256 fingerprint as openssl prints it (`AB:CD:...`), the spelling an
/// operator would paste.
fn openssl_fingerprint(cert: &std::path::Path) -> String {
    let out = Command::new(tool("openssl"))
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().rsplit_once('=').unwrap_or_else(|| panic!("openssl said {text:?}")).1.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_customer_into_its_own_mailboxes_with_and_without_tls() {
    for tls in [false, true] {
        let server = provider(2).await;
        let dir = server.dir.path();
        let config = customer_store(dir);
        let fingerprint = openssl_fingerprint(&provider_certificate(&server));
        let provider_addr = server.odmr().to_string();
        let mut args = vec!["odmr", "fetch", "--provider", &provider_addr, "--user", "cust@local.test"];
        let password = dir.join("password").display().to_string();
        args.extend(["--password-file", &password]);
        if tls {
            // Pinned: the provider's self-signed certificate names mx.local.test, not the
            // address dialed (our_customer_checks_the_providers_certificate has the rest).
            args.extend(["--tls-fingerprint", &fingerprint]);
        }
        let cmd = {
            let mut c = Command::new(binary());
            c.arg("--config").arg(&config).args(&args);
            c
        };
        let out = run(cmd).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("took 2 message(s)"), "{stdout}");
        wait_until!("an empty queue", 20, queue_states(&server).await.is_empty());
        let list = vouchmail(&config, &["mailbox", "list", "alice@example.org"]);
        let listing = String::from_utf8_lossy(&list.stdout);
        assert_eq!(listing.lines().count(), 3, "a header row and two messages: {listing}");
        let id = listing.lines().nth(1).and_then(|l| l.split(' ').next()).unwrap().to_string();
        let shown = vouchmail(&config, &["mailbox", "show", "alice@example.org", &id]);
        let message = String::from_utf8_lossy(&shown.stdout);
        assert!(message.contains("Authentication-Results: customer.example; x-trusted-relay=pass"), "{message}");
        // RFC 3848: the reversed session runs inside the customer's TLS when it started it.
        let protocol = if tls { " with ESMTPS id " } else { " with ESMTP id " };
        assert!(message.replace("\r\n\t", " ").replace("\r\n ", " ").contains(protocol), "{message}");
        // Nothing left: a second fetch says so, and that is no failure (exit status 0).
        let out = vouchmail(&config, &args[..]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && stdout.contains("no mail waiting"), "{stdout}");
        // A wrong password is refused with exit status 1.
        std::fs::write(dir.join("password"), "wrong\n").unwrap();
        let out = vouchmail(&config, &args[..]);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("535"));
    }
}

/// Our customer with `args` after the provider and the account; its output.
async fn fetch_with(config: &std::path::Path, provider: &str, args: &[&str]) -> std::process::Output {
    let password = config.with_file_name("password");
    let mut cmd = Command::new(binary());
    cmd.arg("--config").arg(config).args(["odmr", "fetch", "--provider", provider, "--user", "cust@local.test"]);
    cmd.arg("--password-file").arg(password).args(args);
    run(cmd).await
}

/// One more message held for example.org, to alice@ only.
async fn hold_one(server: &TestServer, subject: &str) {
    let (mut c, _) = SmtpConn::connect(server.mx()).await;
    c.cmd("EHLO sender.test").await;
    let reply =
        c.send_message("s@remote.test", &["alice@example.org"], &format!("Subject: {subject}\r\n\r\nx\r\n")).await;
    assert_eq!(reply.code, 250);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_customer_checks_the_providers_certificate() {
    // The provider's self-signed certificate names "localhost", which the customer dials.
    let server = provider_with(0, |c| c.hostname = "localhost".into()).await;
    hold_one(&server, "first").await;
    let config = customer_store(server.dir.path());
    let cert = provider_certificate(&server);
    let ca = cert.display().to_string();
    let fingerprint = openssl_fingerprint(&cert);
    let (by_name, by_address) = (format!("localhost:{}", server.odmr().port()), server.odmr().to_string());
    let refused = |out: &std::process::Output| {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("was refused") && stderr.contains("--tls-fingerprint"), "{stderr}");
        stderr
    };

    // --tls alone: no CA of the system's bundle issued a self-signed certificate. The
    // message names the certificate, and nothing was taken.
    let stderr = refused(&fetch_with(&config, &by_name, &["--tls"]).await);
    assert!(stderr.contains("system") && stderr.contains("--tls-ca") && stderr.contains(&fingerprint), "{stderr}");
    // Its CA, but dialed by address: the certificate is not for 127.0.0.1.
    let stderr = refused(&fetch_with(&config, &by_address, &["--tls-ca", &ca]).await);
    assert!(stderr.contains("127.0.0.1") && stderr.contains("a name the certificate is for"), "{stderr}");
    // Another certificate's fingerprint.
    let stderr = refused(&fetch_with(&config, &by_name, &["--tls-fingerprint", &"00".repeat(32)]).await);
    assert!(stderr.contains("fingerprint given"), "{stderr}");
    assert_eq!(queue_states(&server).await, [("alice@example.org".to_string(), QueueState::Queued)]);

    // Its CA, dialed by the name in the certificate: a trusted relay.
    let out = fetch_with(&config, &by_name, &["--tls-ca", &ca]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let message = newest_message(&config, "alice@example.org");
    assert!(
        message.contains("Subject: first") && message.contains("customer.example; x-trusted-relay=pass"),
        "{message}"
    );

    // The fingerprint, in openssl's spelling: pinned, so the address dialed does not matter.
    hold_one(&server, "second").await;
    let out = fetch_with(&config, &by_address, &["--tls-fingerprint", &fingerprint]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let message = newest_message(&config, "alice@example.org");
    assert!(
        message.contains("Subject: second") && message.contains("customer.example; x-trusted-relay=pass"),
        "{message}"
    );

    // Unchecked: the mail is judged as from an unauthenticated relay (SPEC 2). Under the
    // domain's policy require it is refused, so it stays with the provider, bounced...
    hold_one(&server, "third").await;
    let out = fetch_with(&config, &by_address, &["--tls-insecure"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("took 0 message(s)"));
    let bounced = [("s@remote.test".to_string(), QueueState::Queued)];
    wait_until!(format!("{bounced:?}"), 20, queue_states(&server).await == bounced);
    // ...and under tag it is stored as unauthenticated, never as x-trusted-relay=pass.
    assert!(vouchmail(&config, &["domain", "policy", "example.org", "tag"]).status.success());
    hold_one(&server, "fourth").await;
    let out = fetch_with(&config, &by_address, &["--tls-insecure"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let message = newest_message(&config, "alice@example.org");
    assert!(message.contains("Subject: fourth"), "{message}");
    // Our one header: no method vouched (SPF, DKIM and DMARC of SPEC 13 may have their say).
    assert_eq!(message.matches("Authentication-Results: customer.example;").count(), 1, "{message}");
    assert!(!message.contains("x-trusted-relay") && !message.contains("=pass smtp.auth"), "{message}");
}

/// A second vouchmail whose MX takes example.org: the `--smtphost` of our customer and of
/// fetchmail.
async fn smtphost() -> TestServer {
    TestServer::start_with(|c| {
        c.bootstrap.domain = "example.org".into();
        c.bootstrap.policy = "accept".into();
        c.hostname = "smtphost.example".into();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_customer_relays_to_an_smtphost() {
    let server = provider(2).await;
    let host = smtphost().await;
    host.add_user("alice@example.org").await;
    let dir = server.dir.path();
    let config = customer_config(dir);
    let provider_addr = server.odmr().to_string();
    let smtphost_addr = host.mx().to_string();
    let password = dir.join("password").display().to_string();
    let cmd = {
        let mut c = Command::new(binary());
        c.arg("--config").arg(&config).args([
            "odmr",
            "fetch",
            "--provider",
            &provider_addr,
            "--user",
            "cust@local.test",
        ]);
        c.args(["--password-file", &password, "--smtphost", &smtphost_addr, "--domains", "example.org"]);
        c
    };
    let out = run(cmd).await;
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // bob does not exist at the smtphost: its 550 bounces those recipients at the provider.
    wait_until!("the outcomes", 20, !queue_states(&server).await.iter().any(|(r, _)| r.ends_with("@example.org")));
    assert_eq!(host.inbox("alice@example.org").await.len(), 2);
    // Issue 9: the success line counts what the SMTP host accepted.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("took 2 message(s) from ") && stdout.contains(&format!("into {smtphost_addr}")),
        "{stdout}"
    );
    let states = queue_states(&server).await;
    assert!(!states.iter().any(|(r, _)| r.ends_with("@example.org")), "{states:?}");
}

/// Runs a command; kills it and fails the test if it still runs after `secs` seconds.
async fn run_within(mut command: Command, secs: u64, what: &str) -> std::process::Output {
    command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still running after {secs} s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    child.wait_with_output().unwrap()
}

/// Our customer relaying to `smtphost`, with `outbound` settings (the relay's timeouts).
async fn relay_to(server: &TestServer, smtphost: &str, outbound: &str) -> std::process::Output {
    let config = customer_config(server.dir.path());
    let mut text = std::fs::read_to_string(&config).unwrap();
    assert!(text.ends_with("[outbound]\nenabled = false\n"), "{text}");
    text.push_str(outbound);
    std::fs::write(&config, text).unwrap();
    let mut cmd = Command::new(binary());
    cmd.arg("--config").arg(&config);
    cmd.args(["odmr", "fetch", "--provider", &server.odmr().to_string(), "--user", "cust@local.test"]);
    cmd.arg("--password-file").arg(server.dir.path().join("password")).args(["--smtphost", smtphost]);
    run_within(cmd, 30, "the relay to a stuck SMTP host").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_customer_gives_up_on_an_smtphost_that_never_greets() {
    let server = provider(1).await;
    // Accepts the connection and says nothing.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let smtphost = silent.local_addr().unwrap().to_string();
    let out = relay_to(&server, &smtphost, "command_timeout_secs = 2\n").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("did not answer its greeting within 2 s"), "{stderr}");
    // The provider never got a greeting either: the mail stays with it.
    wait_until!("the deferrals", 20, queue_states(&server).await.iter().all(|(_, s)| *s == QueueState::Deferred));
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_customer_gives_up_on_an_smtphost_that_never_answers_the_data() {
    let server = provider(1).await;
    // Takes the message, then sits on its reply past the data timeout.
    let peer = vouchmail_testkit::smtp_peer::Peer::builder("127.0.0.2")
        .script(|stage, _| {
            if let vouchmail_testkit::smtp_peer::Stage::DataEnd(_) = stage {
                std::thread::sleep(std::time::Duration::from_secs(8));
            }
            None
        })
        .start();
    // A command timeout longer than the test: only the data termination one can end it.
    let outbound = "command_timeout_secs = 60\ndata_timeout_secs = 2\n";
    let out = relay_to(&server, &peer.addr().to_string(), outbound).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("did not answer the end of the data within 2 s"), "{stderr}");
    assert!(peer.commands().iter().any(|c| c.starts_with("RCPT")), "{:?}", peer.commands());
    wait_until!("the deferrals", 20, queue_states(&server).await.iter().all(|(_, s)| *s == QueueState::Deferred));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetchmail_as_the_customer() {
    let server = provider(3).await;
    let host = smtphost().await;
    host.add_user("alice@example.org").await;
    host.add_user("bob@example.org").await;
    let dir = server.dir.path();
    let rc = dir.join("fetchmailrc");
    let text = format!(
        "set no syslog\npoll 127.0.0.1 proto odmr service {} auth cram-md5 user \"cust@local.test\" password \"{PASSWORD}\" \
         fetchdomains example.org smtphost 127.0.0.1/{}\n",
        server.odmr().port(),
        host.mx().port()
    );
    std::fs::write(&rc, text).unwrap();
    std::fs::set_permissions(&rc, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut cmd = Command::new(tool("fetchmail"));
    // Its own lock file: as root, fetchmail's default is /var/run/fetchmail.pid, and two
    // tests running it at once would refuse each other ("another foreground fetchmail").
    cmd.arg("-f").arg(&rc).args(["--nodetach", "-v"]).arg("--pidfile").arg(dir.join("fetchmail.pid"));
    cmd.env("HOME", dir).env("FETCHMAILHOME", dir);
    let out = run(cmd).await;
    let transcript = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    wait_until!(format!("an empty queue: {transcript}"), 20, queue_states(&server).await.is_empty());
    assert_eq!(host.inbox("alice@example.org").await.len(), 3, "{transcript}");
    assert_eq!(host.inbox("bob@example.org").await.len(), 3, "{transcript}");
    assert!(queue_states(&server).await.is_empty(), "{transcript}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etrn_delivers_to_the_configured_host() {
    let server = provider(1).await;
    let host = smtphost().await;
    host.add_user("alice@example.org").await;
    host.add_user("bob@example.org").await;
    let etrn_host = host.mx().to_string();
    server.store.set_domain_held("example.org", &["cust@local.test".to_string()], Some(&etrn_host)).await.unwrap();
    let (mut c, _) = SmtpConn::connect(server.mx()).await;
    let ehlo = c.cmd("EHLO static.example").await;
    assert!(ehlo.text().contains("250-ETRN"));
    // RFC 1985 5 and RFC 3463 2: a 459 carries a 4.x.x enhanced code (the MX profile
    // advertises ENHANCEDSTATUSCODES).
    assert_eq!(c.cmd("ETRN unknown.example").await.status(), "459 4.7.1");
    assert_eq!(c.cmd("ETRN example.net").await.status(), "459 4.7.1");
    assert_eq!(c.cmd("ETRN #queue").await.status(), "459 4.5.4");
    let reply: Reply = c.cmd("ETRN example.org").await;
    assert_eq!(reply.code, 253, "{:?}", reply.lines);
    wait_until!("an empty queue", 20, queue_states(&server).await.is_empty());
    assert_eq!(host.inbox("alice@example.org").await.len(), 1);
    assert_eq!(host.inbox("bob@example.org").await.len(), 1);
    assert_eq!(c.cmd("ETRN example.org").await.code, 251);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etrn_with_nothing_waiting_needs_no_store_write() {
    let server = provider(0).await;
    server.store.set_domain_held("example.org", &["cust@local.test".to_string()], Some("127.0.0.1:9")).await.unwrap();
    // Hold the store's write lock: an ETRN that wanted to write would wait for it and fail.
    let lock = rusqlite::Connection::open(server.config.store_path()).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (mut c, _) = SmtpConn::connect(server.mx()).await;
    c.cmd("EHLO static.example").await;
    let reply = tokio::time::timeout(std::time::Duration::from_secs(5), c.cmd("ETRN example.org")).await;
    lock.execute_batch("ROLLBACK").unwrap();
    assert_eq!(reply.expect("ETRN waited for the store's write lock").status(), "251 2.0.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_etrn_while_one_delivers_starts_nothing() {
    let server = provider(1).await;
    // An ETRN host that accepts the connection and never greets: the delivery stays running.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = silent.local_addr().unwrap().to_string();
    server.store.set_domain_held("example.org", &["cust@local.test".to_string()], Some(&host)).await.unwrap();
    let (mut c, _) = SmtpConn::connect(server.mx()).await;
    c.cmd("EHLO static.example").await;
    assert_eq!(c.cmd("ETRN example.org").await.status(), "253 2.0.0");
    let _held_open = silent.accept().await.unwrap();
    // The mail is leased to the running delivery: no second lease, no second connection.
    assert_eq!(c.cmd("ETRN example.org").await.status(), "250 2.0.0");
    assert!(queue_states(&server).await.iter().all(|(_, s)| *s == QueueState::InFlight));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etrn_flood_is_capped_and_ends_the_session() {
    let server = TestServer::start_with(|c| {
        c.odmr.max_etrn_per_session = 3;
        c.smtp.max_errors = 6;
    })
    .await;
    let (mut c, _) = SmtpConn::connect(server.mx()).await;
    c.cmd("EHLO static.example").await;
    for _ in 0..3 {
        assert_eq!(c.cmd("ETRN unknown.example").await.status(), "459 4.7.1");
    }
    // Past the cap: 458 without a look at the store; the refusals (459 too) are errors.
    assert_eq!(c.cmd("ETRN unknown.example").await.status(), "458 4.7.0");
    assert_eq!(c.cmd("ETRN other.example").await.status(), "458 4.7.0");
    // The sixth error closes the session.
    assert_eq!(c.cmd("ETRN unknown.example").await.status(), "458 4.7.0");
    assert_eq!(c.read_reply().await.unwrap().status(), "421 4.7.0");
    assert!(c.is_closed().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_fetch_runs_at_start() {
    let server = provider(2).await;
    let password_file = server.dir.path().join("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let provider_addr = server.odmr().to_string();
    let fingerprint = openssl_fingerprint(&provider_certificate(&server)).to_lowercase().replace(':', "");
    let users = ["alice@example.org", "bob@example.org"];
    let customer = TestServer::start_with_users(
        |c| {
            c.hostname = "customer.example".into();
            c.bootstrap.domain = "example.org".into();
            c.bootstrap.policy = "require".into();
            c.odmr.fetch = vec![vouchmail_server::config::ScheduledFetch {
                provider: provider_addr,
                user: "cust@local.test".into(),
                password_file: Some(password_file),
                cert: None,
                key: None,
                domains: vec![],
                smtphost: None,
                tls: true,
                tls_ca: None,
                tls_fingerprint: Some(fingerprint),
                tls_insecure: false,
                interval_secs: 3600,
            }];
        },
        &users,
    )
    .await;
    wait_until!("bob's two messages", 20, customer.inbox("bob@example.org").await.len() >= 2);
    assert_eq!(customer.inbox("alice@example.org").await.len(), 2);
    assert_eq!(customer.inbox("bob@example.org").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetchmail_into_smtp_sink() {
    let server = provider(3).await;
    let dir = server.dir.path().to_path_buf();
    let dump = dir.join("sink");
    std::fs::create_dir_all(&dump).unwrap();
    std::fs::set_permissions(&dump, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // smtp-sink must drop root privileges (-u); it writes one file per transaction.
    let sink = Command::new(tool("smtp-sink"))
        .args(["-u", "nobody", "-d"])
        .arg(format!("{}/%M.", dump.display()))
        .arg(format!("127.0.0.1:{port}"))
        .arg("50")
        .spawn()
        .unwrap();
    // Ends smtp-sink even when an assertion fails (it would hold the test's output open).
    struct Sink(std::process::Child);
    impl Drop for Sink {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let sink = Sink(sink);
    wait_until!("smtp-sink to listen", 20, std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let rc = dir.join("fetchmailrc-sink");
    let text = format!(
        "set no syslog\npoll 127.0.0.1 proto odmr service {} auth cram-md5 user \"cust@local.test\" password \"{PASSWORD}\" \
         fetchdomains example.org smtphost 127.0.0.1/{port}\n",
        server.odmr().port()
    );
    std::fs::write(&rc, text).unwrap();
    std::fs::set_permissions(&rc, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut cmd = Command::new(tool("fetchmail"));
    cmd.arg("-f").arg(&rc).args(["--nodetach", "-v"]).arg("--pidfile").arg(dir.join("fetchmail.pid"));
    cmd.env("HOME", &dir).env("FETCHMAILHOME", &dir);
    let out = run(cmd).await;
    let transcript = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let dumped = || std::fs::read_dir(&dump).unwrap().count();
    wait_until!(format!("three dumped messages: {transcript}"), 20, dumped() >= 3);
    drop(sink);
    assert_eq!(dumped(), 3, "{transcript}");
    assert!(queue_states(&server).await.is_empty(), "{transcript}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_customer_relays_to_postfix() {
    let server = provider(2).await;
    let pf = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let Some(postfix) = common::postfix::Postfix::start(pf, server.mx().port(), "example.org", &["alice", "bob"])
    else {
        return;
    };
    let dir = server.dir.path();
    let config = customer_config(dir);
    let provider_addr = server.odmr().to_string();
    let smtphost_addr = format!("127.0.0.1:{pf}");
    let password = dir.join("password").display().to_string();
    let cmd = {
        let mut c = Command::new(binary());
        c.arg("--config").arg(&config).args([
            "odmr",
            "fetch",
            "--provider",
            &provider_addr,
            "--user",
            "cust@local.test",
        ]);
        // Relayed: Postfix, not we, decides whom it trusts; the certificate goes unchecked.
        c.args(["--password-file", &password, "--smtphost", &smtphost_addr, "--tls-insecure"]);
        c
    };
    let out = run(cmd).await;
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    wait_until!(
        format!("bob's messages at Postfix: {}", postfix.log()),
        20,
        postfix.maildir_messages("bob").len() >= 2
    );
    assert_eq!(postfix.maildir_messages("alice").len(), 2, "{}", postfix.log());
    assert_eq!(postfix.maildir_messages("bob").len(), 2, "{}", postfix.log());
    assert!(queue_states(&server).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounce_to_a_sender_in_a_held_domain_waits_for_its_customer() {
    let dns = vouchmail_testkit::dns::TestDns::builder().null_mx("nomail.test").start().await;
    let server = provider_with(0, |c| {
        c.outbound.enabled = true;
        c.outbound.nameservers = vec![dns.addr()];
    })
    .await;
    server.store.add_alias("gone@local.test", &["x@nomail.test".to_string()]).await.unwrap();
    // A customer's user writes to an address whose domain takes no mail (null MX, RFC
    // 7505): the bounce is for example.org, which only the customer can take.
    let (mut c, _) = SmtpConn::connect(server.mx()).await;
    c.cmd("EHLO customer.example").await;
    let reply = c.send_message("alice@example.org", &["gone@local.test"], "Subject: to nowhere\r\n\r\nx\r\n").await;
    assert_eq!(reply.code, 250);
    let held = [("alice@example.org".to_string(), QueueState::Queued)];
    wait_until!(format!("{held:?}"), 20, queue_states(&server).await == held);
    assert_eq!(server.store.count_held(&["example.org".to_string()]).await.unwrap(), 1);
    // The customer's next ATRN takes it, as any mail for the domain.
    let mut customer = authenticated(&server).await;
    assert_eq!(customer.cmd("ATRN example.org").await.code, 250);
    assert_eq!(serve_reversed(&mut customer, |_| "250 ok", None).await, 1);
    wait_until!("an empty queue", 20, queue_states(&server).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_mail_expires_with_a_dsn() {
    let server = TestServer::start_with(|c| {
        c.outbound.enabled = true;
        c.outbound.lifetime_secs = 2;
    })
    .await;
    server.add_user("cust@local.test").await;
    server.store.add_domain("example.org", SenderPolicy::ACCEPT).await.unwrap();
    server.store.set_domain_held("example.org", &["cust@local.test".to_string()], None).await.unwrap();
    let (mut c, _) = SmtpConn::connect(server.mx()).await;
    c.cmd("EHLO sender.test").await;
    let reply =
        c.send_message("user@local.test", &["alice@example.org"], "Subject: never collected\r\n\r\nx\r\n").await;
    assert_eq!(reply.code, 250);
    wait_until!("the DSN", 20, !server.inbox("user@local.test").await.is_empty());
    let inbox = server.inbox("user@local.test").await;
    assert_eq!(inbox.len(), 1, "no DSN for the expired held mail");
    assert!(inbox[0].contains("multipart/report") && inbox[0].contains("alice@example.org"), "{}", inbox[0]);
    assert!(queue_states(&server).await.is_empty());
}

/// Issue 19 item 5 (SPEC 7.5): the provider relays held mail with an outsider's
/// `X-Auth-Key` and `X-Auth-Key-Status` untouched; the customer, taking it from a trusted
/// relay, stores it without them (today it kept both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_relay_mail_reaches_the_mailbox_without_outside_key_fields() {
    let server = provider(0).await;
    let (mut c, _) = SmtpConn::connect(server.mx()).await;
    c.cmd("EHLO sender.test").await;
    let body = "Subject: forged\r\nX-Auth-Key-Status: VALID\r\nX-Auth-Key: ForgedKeyForgedKeyForgedKey\r\n\r\nx\r\n";
    assert_eq!(c.send_message("s@remote.test", &["alice@example.org"], body).await.code, 250);
    // The held copy is relayed on: the provider leaves the fields alone.
    let queue = server.store.list_queue().await.unwrap();
    let (_, held) = server.store.get_queued_message(&queue[0].queue_id).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&held).contains("X-Auth-Key-Status: VALID\r\nX-Auth-Key: Forged"));
    let config = customer_store(server.dir.path());
    let out = fetch_with(&config, &server.odmr().to_string(), &[]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let message = newest_message(&config, "alice@example.org");
    assert!(message.contains("customer.example; x-trusted-relay=pass"), "{message}");
    assert!(message.contains("Subject: forged"), "{message}");
    assert!(!message.to_ascii_lowercase().contains("x-auth-key"), "{message}");
}
