//! Outbound delivery end to end: MX routing through an in-process DNS server, a scripted
//! remote SMTP server, retries, bounces (checked with Python's email parser), a relay host
//! with AUTH, Postfix's smtp-sink, a real Postfix both ways, and what a crash between the
//! remote's 250 and the queue update does.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use common::postfix::Postfix;
use common::{binary, free_port, python_dsn_summary, tool, SmtpConn, TestServer};
use vouchmail_server::config::{Config, Route};
use vouchmail_testkit::dns::TestDns;
use vouchmail_testkit::smtp_peer::{Message, Peer, Stage};

const BODY: &str = "From: User <user@local.test>\r\nTo: someone\r\nSubject: outbound test\r\nMessage-ID: <test-1@local.test>\r\n\r\nHello\r\n..leading dot\r\n";

/// DNS for `remote.test`: MX 10 mx.remote.test, which is 127.0.0.2.
async fn remote_dns() -> TestDns {
    TestDns::builder().mx("remote.test", 10, "mx.remote.test").a("mx.remote.test", "127.0.0.2").start().await
}

/// Delivery on, with seconds instead of minutes.
fn fast(config: &mut Config, dns: &TestDns, port: u16) {
    let o = &mut config.outbound;
    o.enabled = true;
    o.nameservers = vec![dns.addr()];
    o.port = port;
    o.retry_min_secs = 1;
    o.retry_max_secs = 2;
    o.poll_interval_ms = 50;
    o.connection_idle_secs = 1;
    o.command_timeout_secs = 10;
    o.connect_timeout_secs = 5;
}

async fn start(dns: &TestDns, port: u16, adjust: impl FnOnce(&mut Config)) -> TestServer {
    let server = TestServer::start_with(|c| {
        fast(c, dns, port);
        adjust(c);
    })
    .await;
    server.store.add_alias("fwd@local.test", &["bob@remote.test".to_string()]).await.unwrap();
    server
}

/// One message into our MX.
async fn send(mx: SocketAddr, from: &str, to: &[&str], body: &str) {
    let (mut c, _) = SmtpConn::connect(mx).await;
    assert_eq!(c.cmd("EHLO client.test").await.code, 250);
    let reply = c.send_message(from, to, body).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    c.cmd("QUIT").await;
}

async fn wait_queue_empty(server: &TestServer) {
    wait_until!("an empty queue", 20, server.store.list_queue().await.unwrap().is_empty());
}

async fn wait_inbox(server: &TestServer, address: &str, n: usize) -> Vec<String> {
    wait_until!(format!("{n} message(s) for {address}"), 20, server.inbox(address).await.len() >= n);
    server.inbox(address).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_to_the_mx_found_in_dns_and_reuses_the_connection() {
    let dns = remote_dns().await;
    let peer = Peer::builder("127.0.0.2").start();
    let server = start(&dns, peer.port(), |c| c.outbound.max_connections_per_destination = 1).await;
    server
        .store
        .add_alias("team@local.test", &["a@remote.test".to_string(), "b@remote.test".to_string()])
        .await
        .unwrap();
    for _ in 0..3 {
        send(server.mx(), "sender@client.test", &["team@local.test"], BODY).await;
    }
    let messages = peer.wait_for_messages(3, Duration::from_secs(20)).await;
    for m in &messages {
        // Both recipients in one transaction, the sender kept, SIZE and BODY as announced.
        assert_eq!(m.recipients(), ["a@remote.test", "b@remote.test"]);
        assert!(m.mail_from.starts_with("MAIL FROM:<sender@client.test> SIZE="), "{}", m.mail_from);
        assert!(m.helo.starts_with("EHLO mx.local.test"));
        let text = m.text();
        assert!(text.contains("by mx.local.test (vouchmail)"), "{text}");
        // Stored as ".leading dot" (unstuffed on the way in), stuffed again on the way out.
        assert!(text.contains("\r\n.leading dot\r\n"), "{text}");
    }
    // One destination, one connection at a time: all three over a reused connection.
    assert_eq!(peer.counts().connections, 1, "{:?}", peer.commands());
    wait_queue_empty(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_is_retried_and_the_message_delivered_once() {
    let dns = remote_dns().await;
    let peer = Peer::builder("127.0.0.2")
        .script(|stage, n| match stage {
            Stage::DataEnd(_) if n.data_ends == 1 => Some("451 4.3.0 Temporary problem, try again".into()),
            _ => None,
        })
        .start();
    let server = start(&dns, peer.port(), |_| {}).await;
    send(server.mx(), "user@local.test", &["fwd@local.test"], BODY).await;
    peer.wait_for_messages(1, Duration::from_secs(20)).await;
    wait_queue_empty(&server).await;
    // Every connection ended with QUIT: no delivery is still under way that could repeat it.
    let quits = || peer.commands().iter().filter(|c| c.eq_ignore_ascii_case("QUIT")).count();
    wait_until!("every connection to end with QUIT", 20, quits() == peer.counts().connections);
    assert_eq!(peer.messages().len(), 1, "delivered exactly once");
    assert_eq!(peer.counts().data_ends, 2, "one refused attempt, one accepted");
    // No notice for a delay that short.
    assert!(server.inbox("user@local.test").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_returns_a_dsn_that_python_parses_as_multipart_report() {
    let dns = remote_dns().await;
    let peer = Peer::builder("127.0.0.2")
        .script(|stage, _| match stage {
            Stage::Rcpt(_) => Some("550 5.1.1 <bob@remote.test>: Recipient address rejected: no such user".into()),
            _ => None,
        })
        .start();
    let server = start(&dns, peer.port(), |_| {}).await;
    send(server.mx(), "user@local.test", &["fwd@local.test"], BODY).await;
    let inbox = wait_inbox(&server, "user@local.test", 1).await;
    let dsn = &inbox[0];
    assert!(dsn.contains("Subject: Undelivered Mail Returned to Sender"), "{dsn}");
    let summary = python_dsn_summary(dsn).await;
    let fields: Vec<&str> = summary.split('|').collect();
    assert_eq!(
        fields[..7],
        [
            "multipart/report",
            "delivery-status",
            "3",
            "text/plain",
            "message/delivery-status",
            "message/rfc822",
            "dns; mx.local.test"
        ],
        "{summary}"
    );
    assert_eq!(fields[7..10], ["failed", "5.1.1", "rfc822; bob@remote.test"], "{summary}");
    assert!(fields[10].contains("550 5.1.1"), "{summary}");
    // The original is returned whole (no RET=HDRS).
    assert!(dsn.contains("Subject: outbound test") && dsn.contains("Hello\r\n"));
    wait_queue_empty(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounce_is_never_bounced() {
    let dns = remote_dns().await;
    let peer = Peer::builder("127.0.0.2")
        .script(|stage, _| matches!(stage, Stage::Rcpt(_)).then(|| "550 5.1.1 no".into()))
        .start();
    let server = start(&dns, peer.port(), |_| {}).await;
    send(server.mx(), "", &["fwd@local.test"], BODY).await;
    wait_until!("the refusal", 20, peer.commands().iter().any(|c| c.starts_with("RCPT")));
    // A notice would have been committed with the outcome, in the transaction that emptied
    // the queue: nothing can still be on its way.
    wait_queue_empty(&server).await;
    assert!(server.inbox("user@local.test").await.is_empty());
    assert!(server.store.list_queue().await.unwrap().is_empty(), "no notice queued for <>");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_mx_bounces_at_once() {
    let dns = TestDns::builder().null_mx("nomail.test").start().await;
    let server = start(&dns, 25, |_| {}).await;
    server.store.add_alias("gone@local.test", &["x@nomail.test".to_string()]).await.unwrap();
    send(server.mx(), "user@local.test", &["gone@local.test"], BODY).await;
    let inbox = wait_inbox(&server, "user@local.test", 1).await;
    assert!(inbox[0].contains("Status: 5.1.10\r\n"), "{}", inbox[0]);
    assert!(inbox[0].contains("null MX"), "{}", inbox[0]);
    wait_queue_empty(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounce_for_a_refused_connection_quotes_no_server() {
    let dns = remote_dns().await;
    // Nothing listens there: every attempt is a refused connection.
    let closed = std::net::TcpListener::bind("127.0.0.2:0").unwrap().local_addr().unwrap().port();
    let server = start(&dns, closed, |c| c.outbound.lifetime_secs = 2).await;
    send(server.mx(), "user@local.test", &["fwd@local.test"], BODY).await;
    let bounce = &wait_inbox(&server, "user@local.test", 1).await[0];
    assert!(bounce.contains("Action: failed\r\n"), "{bounce}");
    // RFC 3464 2.3.5, 2.3.6: no server replied, so no Remote-MTA and no Diagnostic-Code,
    // and the human part says what happened instead of quoting a made-up reply.
    assert!(!bounce.contains("Diagnostic-Code") && !bounce.contains("Remote-MTA"), "{bounce}");
    // (No reply line such as `421 ...`; a queue id or a date may well hold the digits.)
    let made_up_reply = bounce.lines().any(|l| l.trim_start().starts_with("421") || l.contains(" 421 "));
    assert!(!bounce.contains("said:") && !made_up_reply, "{bounce}");
    assert!(bounce.contains("Cannot connect to mx.remote.test [127.0.0.2"), "{bounce}");
    let summary = python_dsn_summary(bounce).await;
    assert!(summary.ends_with("|failed|5.4.7|rfc822; bob@remote.test|None"), "{summary}");
    wait_queue_empty(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_warning_then_a_bounce_when_the_lifetime_ends() {
    let dns = remote_dns().await;
    let peer = Peer::builder("127.0.0.2")
        .script(|stage, _| matches!(stage, Stage::Mail(_)).then(|| "421 4.3.2 busy".into()))
        .start();
    let server = start(&dns, peer.port(), |c| {
        c.outbound.delay_warning_secs = 1;
        c.outbound.lifetime_secs = 4;
    })
    .await;
    let mut c = SmtpConn::connect(server.mx()).await.0;
    c.cmd("EHLO client.test").await;
    assert_eq!(c.cmd("MAIL FROM:<user@local.test> RET=HDRS ENVID=env+2B1").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<fwd@local.test> NOTIFY=DELAY,FAILURE").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send_raw(format!("{BODY}.\r\n").as_bytes()).await;
    assert_eq!(c.read_reply().await.unwrap().code, 250);
    let inbox = wait_inbox(&server, "user@local.test", 2).await;
    let (delay, bounce) = (&inbox[0], &inbox[1]);
    assert!(delay.contains("Subject: Delayed Mail (still being retried)"), "{delay}");
    assert!(delay.contains("Action: delayed\r\n") && delay.contains("Will-Retry-Until:"), "{delay}");
    assert!(delay.contains("Original-Envelope-Id: env+1\r\n"), "{delay}");
    assert!(bounce.contains("Action: failed\r\nStatus: 5.4.7\r\n"), "{bounce}");
    assert!(bounce.contains("421 4.3.2 busy"), "{bounce}");
    // RET=HDRS: headers only.
    assert!(bounce.contains("Content-Type: text/rfc822-headers") && !bounce.contains(".leading dot"), "{bounce}");
    wait_queue_empty(&server).await;
    assert!(peer.counts().connections >= 2, "retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dsn_parameters_go_along_and_a_relayed_notice_comes_back_from_a_peer_without_dsn() {
    let dns = remote_dns().await;
    let peer = Peer::builder("127.0.0.2").start();
    let server = start(&dns, peer.port(), |_| {}).await;
    let mut c = SmtpConn::connect(server.mx()).await.0;
    c.cmd("EHLO client.test").await;
    assert_eq!(c.cmd("MAIL FROM:<user@local.test> RET=FULL ENVID=QQ314159").await.code, 250);
    assert_eq!(
        c.cmd("RCPT TO:<fwd@local.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;fwd+2Bx@local.test").await.code,
        250
    );
    c.cmd("DATA").await;
    c.send_raw(format!("{BODY}.\r\n").as_bytes()).await;
    assert_eq!(c.read_reply().await.unwrap().code, 250);
    let m = &peer.wait_for_messages(1, Duration::from_secs(20)).await[0];
    assert!(m.mail_from.contains(" RET=FULL ENVID=QQ314159"), "{}", m.mail_from);
    assert_eq!(m.rcpt_to, ["RCPT TO:<bob@remote.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;fwd+2Bx@local.test"]);
    // The peer announced DSN: the success notice is its business, not ours.
    wait_queue_empty(&server).await;
    assert!(server.inbox("user@local.test").await.is_empty());

    // Without DSN at the peer, we say "relayed" (RFC 3461 6.2.2) and send no parameters.
    let plain = Peer::builder("127.0.0.3").port(peer.port()).extensions(&["PIPELINING", "8BITMIME"]).start();
    let dns3 =
        TestDns::builder().mx("remote.test", 10, "mx.remote.test").a("mx.remote.test", "127.0.0.3").start().await;
    let server3 = start(&dns3, plain.port(), |_| {}).await;
    let mut c = SmtpConn::connect(server3.mx()).await.0;
    c.cmd("EHLO client.test").await;
    c.cmd("MAIL FROM:<user@local.test>").await;
    c.cmd("RCPT TO:<fwd@local.test> NOTIFY=SUCCESS").await;
    c.cmd("DATA").await;
    c.send_raw(format!("{BODY}.\r\n").as_bytes()).await;
    assert_eq!(c.read_reply().await.unwrap().code, 250);
    let m = &plain.wait_for_messages(1, Duration::from_secs(20)).await[0];
    assert_eq!(m.rcpt_to, ["RCPT TO:<bob@remote.test>"]);
    let inbox = wait_inbox(&server3, "user@local.test", 1).await;
    assert!(inbox[0].contains("Subject: Successful Mail Delivery Report"), "{}", inbox[0]);
    assert!(inbox[0].contains("Action: relayed\r\n"), "{}", inbox[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_host_with_auth_gets_the_auth_parameter() {
    let dns = TestDns::builder().start().await;
    let peer = Peer::builder("127.0.0.4").auth_plain("relayuser", "s3cret").start();
    let server = start(&dns, 25, |c| {
        c.outbound.relay = Some(Route {
            host: peer.addr().to_string(),
            username: Some("relayuser".into()),
            password: Some("s3cret".into()),
            allow_cleartext_auth: true,
            ..Route::default()
        });
    })
    .await;
    send(server.mx(), "user@local.test", &["fwd@local.test"], BODY).await;
    let m = &peer.wait_for_messages(1, Duration::from_secs(20)).await[0];
    assert_eq!(m.authenticated.as_deref(), Some("relayuser"));
    // SPEC 3: the message was not authenticated here, so AUTH=<> to a peer that has AUTH.
    assert!(m.mail_from.ends_with(" AUTH=<>"), "{}", m.mail_from);
    wait_queue_empty(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_relay_password_defers_instead_of_bouncing() {
    let dns = TestDns::builder().start().await;
    let peer = Peer::builder("127.0.0.4").auth_plain("relayuser", "s3cret").start();
    let server = start(&dns, 25, |c| {
        c.outbound.relay = Some(Route {
            host: peer.addr().to_string(),
            username: Some("relayuser".into()),
            password: Some("wrong".into()),
            allow_cleartext_auth: true,
            ..Route::default()
        });
    })
    .await;
    send(server.mx(), "user@local.test", &["fwd@local.test"], BODY).await;
    wait_until!(
        "a deferral",
        20,
        server.store.list_queue().await.unwrap().iter().any(|e| e.attempts > 0 && e.state.as_str() == "deferred")
    );
    let entry = &server.store.list_queue().await.unwrap()[0];
    let (entries, _) = server.store.get_queued_message(&entry.queue_id).await.unwrap().unwrap();
    assert!(entries[0].last_reply.as_deref().unwrap_or("").contains("535"), "{entries:?}");
    assert!(server.inbox("user@local.test").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_to_postfix_smtp_sink() {
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("dump");
    std::fs::write(&dump, b"").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dump, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let port = free_port("127.0.0.2");
    let mut sink = Command::new(tool("smtp-sink"))
        .args(["-u", "nobody", "-D"])
        .arg(&dump)
        .arg(format!("127.0.0.2:{port}"))
        .arg("10")
        .stderr(Stdio::null())
        .spawn()
        .expect("smtp-sink");
    let dns = remote_dns().await;
    let server = start(&dns, port, |_| {}).await;
    wait_until!("smtp-sink", 10, std::net::TcpStream::connect(("127.0.0.2", port)).is_ok());
    for _ in 0..3 {
        send(server.mx(), "user@local.test", &["fwd@local.test"], BODY).await;
    }
    wait_queue_empty(&server).await;
    let text = std::fs::read_to_string(&dump).unwrap_or_default();
    let _ = sink.kill();
    let _ = sink.wait();
    assert_eq!(text.matches("Subject: outbound test").count(), 3, "{text}");
    assert!(server.inbox("user@local.test").await.is_empty(), "no bounce");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_both_ways() {
    let dns = TestDns::builder().start().await;
    // vouchmail routes remote.test to Postfix; Postfix routes local.test to vouchmail's MX.
    let pf = free_port("127.0.0.1");
    let server = start(&dns, 25, |c| {
        c.outbound.routes =
            vec![Route { domain: "remote.test".into(), host: format!("127.0.0.1:{pf}"), ..Route::default() }];
    })
    .await;
    let Some(postfix) = Postfix::start(pf, server.mx().port(), "remote.test", &["pf"]) else { return };
    server.store.add_alias("topf@local.test", &["pf@remote.test".to_string()]).await.unwrap();

    // vouchmail -> Postfix.
    send(server.mx(), "user@local.test", &["topf@local.test"], BODY).await;
    wait_until!("the Postfix maildir", 30, !postfix.maildir_messages("pf").is_empty());
    let delivered = postfix.maildir_messages("pf");
    assert!(delivered[0].contains("Subject: outbound test"), "{}", postfix.log());
    assert!(delivered[0].contains("by mx.local.test (vouchmail)"));
    wait_queue_empty(&server).await;

    // Postfix -> vouchmail's MX.
    let (mut c, greeting) = SmtpConn::connect(format!("127.0.0.1:{pf}").parse().unwrap()).await;
    assert_eq!(greeting.code, 220);
    c.cmd("EHLO client.test").await;
    let reply = c.send_message("someone@remote.test", &["user@local.test"], "Subject: via postfix\r\n\r\nhi\r\n").await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let inbox = wait_inbox(&server, "user@local.test", 1).await;
    assert!(inbox[0].contains("Subject: via postfix"), "{}", postfix.log());
    assert!(inbox[0].contains("from postfix.remote.test"), "{}", inbox[0]);
}

// ------------------------------------------------------------------ the binary, as a process

/// `vouchmail serve` from a config file, for the crash and CLI tests.
struct Deployment {
    dir: tempfile::TempDir,
    config: PathBuf,
    mx: SocketAddr,
}

impl Deployment {
    fn new(dns: &TestDns, peer_port: u16, outbound_enabled: bool) -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("vouchmail.toml");
        let mx: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1")).parse().unwrap();
        // Without the server delivering, `queue flush` tries each entry once: a deferred one
        // must not come due again within the same flush on a slow machine.
        let retry = if outbound_enabled { 1 } else { 60 };
        let retry_max = retry * 2;
        let text = format!(
            "hostname = \"mx.local.test\"\ndata_dir = \"{}\"\nshutdown_grace_secs = 2\n\
             [listeners]\nmx = [\"{mx}\"]\nsubmission = []\nsubmissions = []\nodmr = []\npop3 = []\npop3s = []\nimap = []\nimaps = []\nadmin = []\nmessenger = []\n\
             [bootstrap]\ndomain = \"local.test\"\npolicy = \"accept\"\npostmaster = false\n\
             [outbound]\nenabled = {outbound_enabled}\nnameservers = [\"{}\"]\nport = {peer_port}\n\
             retry_min_secs = {retry}\nretry_max_secs = {retry_max}\nlease_secs = 2\npoll_interval_ms = 50\nconnection_idle_secs = 0\n",
            dir.path().join("data").display(),
            dns.addr()
        );
        std::fs::write(&config, text).unwrap();
        Deployment { dir, config, mx }
    }

    fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(binary()).arg("--config").arg(&self.config).args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    async fn serve(&self) -> Child {
        let log = self.dir.path().join(format!("serve-{}.log", free_port("127.0.0.1")));
        let child = Command::new(binary())
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        // Ready once it says so: a first start bootstraps its domain after binding.
        let running = || std::fs::read_to_string(&log).unwrap_or_default().contains("vouchmail is running");
        wait_until!("vouchmail to start", 20, running());
        child
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("data/vouchmail.db")
    }
}

fn entry_states(db: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT state FROM queue WHERE recipient = 'bob@remote.test' ORDER BY id").unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().map(|r| r.unwrap()).collect()
}

/// The at-least-once window, shown: the remote answers 250, and the process dies before the
/// queue update is on disk. After a restart the entry's lease runs out and the message is
/// sent again, so the remote has it twice (never zero times).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_the_remote_250_and_the_queue_update_delivers_twice() {
    let (reached_tx, reached_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let hooks = Mutex::new((reached_tx, go_rx));
    let peer = Peer::builder("127.0.0.2")
        .script(move |stage, n| {
            if let Stage::DataEnd(_) = stage {
                if n.data_ends == 1 {
                    // Hold the 250 until the test has locked the store.
                    let hooks = hooks.lock().unwrap();
                    hooks.0.send(()).unwrap();
                    hooks.1.recv_timeout(Duration::from_secs(30)).unwrap();
                }
            }
            None
        })
        .start();
    let dns = remote_dns().await;
    let d = Deployment::new(&dns, peer.port(), true);
    let mut server = d.serve().await;
    assert!(d.cli(&["alias", "add", "fwd@local.test", "bob@remote.test"]).0);
    send(d.mx, "user@local.test", &["fwd@local.test"], BODY).await;
    tokio::task::spawn_blocking(move || reached_rx.recv_timeout(Duration::from_secs(20)).unwrap()).await.unwrap();

    // Take the store's write lock, so the outcome cannot be recorded, then let the 250 go.
    let lock = rusqlite::Connection::open(d.db()).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    go_tx.send(()).unwrap();
    peer.wait_for_messages(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill().unwrap(); // SIGKILL: the crash.
    server.wait().unwrap();
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    assert_eq!(entry_states(&d.db()), ["inflight"], "the 250 never reached the disk");

    let mut server = d.serve().await;
    let messages: Vec<Message> = peer.wait_for_messages(2, Duration::from_secs(20)).await;
    assert_eq!(messages[0].data, messages[1].data, "the same message, sent again");
    wait_until!("the delivered state", 10, entry_states(&d.db()).is_empty());
    let (_, _, err) = d.cli(&["queue", "list"]);
    assert!(err.contains("0 queued recipient(s)"), "{err}");
    server.kill().unwrap();
    server.wait().unwrap();
    assert_eq!(peer.messages().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_flush_retry_and_delete() {
    let peer = Peer::builder("127.0.0.2")
        .script(|stage, n| match stage {
            Stage::DataEnd(_) if n.data_ends == 2 => Some("451 4.3.0 later".into()),
            _ => None,
        })
        .start();
    let dns = remote_dns().await;
    let d = Deployment::new(&dns, peer.port(), false);
    let mut server = d.serve().await;
    assert!(d.cli(&["alias", "add", "fwd@local.test", "bob@remote.test"]).0);
    send(d.mx, "user@local.test", &["fwd@local.test"], BODY).await;
    let (ok, out, _) = d.cli(&["queue", "list"]);
    assert!(ok && out.contains("  queued  ") && out.contains("bob@remote.test"), "{out}");

    // The server does not deliver (outbound off); flush does, from the CLI process.
    let (ok, out, err) = d.cli(&["queue", "flush"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "flushed 1 of 1 entry: delivered 1, deferred 0, bounced 0");
    assert_eq!(peer.messages().len(), 1);

    // A second message is refused with 451 during the flush: deferred.
    send(d.mx, "user@local.test", &["fwd@local.test"], BODY).await;
    let (_, out, _) = d.cli(&["queue", "flush"]);
    assert_eq!(out.trim(), "flushed 1 of 1 entry: delivered 0, deferred 1, bounced 0");
    let (_, list, _) = d.cli(&["queue", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!((list[0]["state"].as_str(), list[0]["attempts"].as_u64()), (Some("deferred"), Some(1)), "{list}");
    let queue_id = list[0]["queue_id"].as_str().unwrap().to_string();
    let (ok, out, _) = d.cli(&["queue", "retry", &queue_id]);
    assert!(ok && out.trim() == "1 entry due now", "{out}");
    let (ok, out, _) = d.cli(&["queue", "delete", "--all"]);
    assert!(ok && out.trim() == "deleted 1 pending entry of 1 message(s)", "{out}");
    let (_, _, err) = d.cli(&["queue", "list"]);
    assert!(err.contains("0 queued recipient(s)"), "{err}");
    let (ok, _, err) = d.cli(&["queue", "retry"]);
    assert!(!ok && err.contains("required"), "{err}");
    server.kill().unwrap();
    server.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vouchmail_to_vouchmail_over_required_starttls() {
    let dns = TestDns::builder().start().await;
    // B: the remote side, an ordinary vouchmail MX offering STARTTLS (self-signed certificate).
    let b = TestServer::start_with(|c| {
        c.hostname = "mx.remote.test".into();
        c.bootstrap.domain = "remote.test".into();
    })
    .await;
    b.store.add_alias("bob@remote.test", &["user@remote.test".to_string()]).await.unwrap();
    // A: routes remote.test to B's MX and insists on TLS.
    let b_mx = b.mx();
    let a = start(&dns, 25, |c| {
        c.outbound.routes = vec![Route {
            domain: "remote.test".into(),
            host: b_mx.to_string(),
            tls: "encrypt".into(),
            ..Route::default()
        }];
    })
    .await;
    send(a.mx(), "user@local.test", &["fwd@local.test"], BODY).await;
    let inbox = wait_inbox(&b, "user@remote.test", 1).await;
    let unfolded = inbox[0].replace("\r\n ", " ");
    assert!(
        unfolded.contains("from mx.local.test ([127.0.0.1]) by mx.remote.test (vouchmail) with ESMTPS"),
        "{unfolded}"
    );
    assert!(unfolded.contains("by mx.local.test (vouchmail)"), "A's trace field travelled along");
    wait_queue_empty(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_from_an_authenticated_user_carries_auth_identity() {
    let dns = remote_dns().await;
    let peer = Peer::builder("127.0.0.2").extensions(&["PIPELINING", "8BITMIME", "AUTH PLAIN"]).start();
    let server = start(&dns, peer.port(), |c| c.auth.allow_plaintext_passwords = true).await;
    let secrets = vouchmail_proto::sasl::Secrets::from_password("pw", &[6; vouchmail_proto::sasl::SALTS_LEN]).unwrap();
    server.store.set_secrets("user@local.test", secrets).await.unwrap();
    let (mut c, _) = SmtpConn::connect(server.submission()).await;
    c.cmd("EHLO client.test").await;
    // RFC 4616: \0user@local.test\0pw
    assert_eq!(c.cmd("AUTH PLAIN AHVzZXJAbG9jYWwudGVzdABwdw==").await.code, 235);
    let reply = c.send_message("user@local.test", &["carol@remote.test"], BODY).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let m = &peer.wait_for_messages(1, Duration::from_secs(20)).await[0];
    // SPEC 3: relayed onward with the identity this server authenticated.
    assert!(m.mail_from.ends_with(" AUTH=user@local.test"), "{}", m.mail_from);
    assert_eq!(m.recipients(), ["carol@remote.test"]);
}
