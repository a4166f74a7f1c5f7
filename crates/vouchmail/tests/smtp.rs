//! The SMTP server over real sockets: our line client, swaks and Python's smtplib.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{run, tool, SmtpConn, TestServer};
use vouchmail_store::{Folder, SenderPolicy};

const BODY: &str = "From: a@remote.test\r\nTo: user@local.test\r\nSubject: hello\r\n\r\nbody line\r\n..leading dot\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_to_mailbox_with_trace_fields() {
    let server = TestServer::start().await;
    let (mut c, greeting) = SmtpConn::connect(server.mx()).await;
    assert_eq!(greeting.lines, ["220 mx.local.test ESMTP vouchmail"]);
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(ehlo.text().contains("PIPELINING") && ehlo.text().contains("CHUNKING"));
    let reply = c.send_message("a@remote.test", &["user@local.test"], BODY).await;
    assert_eq!(reply.status(), "250 2.0.0");
    let inbox = server.inbox("user@local.test").await;
    assert_eq!(inbox.len(), 1);
    // RFC 5322 2.2.3: unfold before matching.
    let message = &inbox[0].replace("\r\n ", " ").replace("\r\n\t", " ");
    assert!(
        message.starts_with(
            "Authentication-Results: mx.local.test; x-authkey=none header.from=a@remote.test\r\nReceived: from client.test ([127.0.0.1])"
        ),
        "{message}"
    );
    assert!(message.contains("by mx.local.test (vouchmail) with ESMTP id"));
    assert!(message.contains("for <user@local.test>;"));
    assert!(message.ends_with("\r\nbody line\r\n.leading dot\r\n"), "{message}");
    assert_eq!(c.cmd("QUIT").await.status(), "221 2.0.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_authentication_results_for_our_name_are_removed() {
    let server = TestServer::start().await;
    let (mut c, _) = SmtpConn::connect(server.mx()).await;
    c.cmd("EHLO client.test").await;
    let body = "Authentication-Results: mx.local.test; auth=pass smtp.auth=ceo@local.test\r\nAuthentication-Results: other.test; spf=pass\r\nSubject: forged\r\n\r\nx\r\n";
    assert_eq!(c.send_message("a@remote.test", &["user@local.test"], body).await.code, 250);
    let message = &server.inbox("user@local.test").await[0];
    assert_eq!(message.matches("Authentication-Results: mx.local.test").count(), 1);
    assert!(!message.contains("ceo@local.test"));
    assert!(message.contains("Authentication-Results: other.test; spf=pass"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_policy_refuses_unauthenticated_senders_at_rcpt_when_nothing_can_pass_later() {
    // No AuthKey check: no method could pass after the body, so RCPT refuses (SPEC 2).
    let server = TestServer::start_with(|c| c.authkey.verify = false).await;
    server.add_domain("strict.test", SenderPolicy::REJECT).await;
    server.add_user("boss@strict.test").await;
    let (mut c, _) = SmtpConn::connect(server.mx()).await;
    c.cmd("EHLO client.test").await;
    c.cmd("MAIL FROM:<a@remote.test>").await;
    assert_eq!(c.cmd("RCPT TO:<boss@strict.test>").await.status(), "550 5.7.1");
    // An unknown user of a `require` domain gets the same answer: no user enumeration.
    assert_eq!(c.cmd("RCPT TO:<nobody@strict.test>").await.status(), "550 5.7.1");
    assert_eq!(c.cmd("RCPT TO:<user@local.test>").await.status(), "250 2.1.5");
    assert_eq!(c.cmd("RCPT TO:<nobody@local.test>").await.status(), "550 5.1.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_policy_decides_at_the_end_of_data_when_an_authkey_could_pass() {
    let server = TestServer::start().await;
    server.add_domain("strict.test", SenderPolicy::REJECT).await;
    server.add_user("boss@strict.test").await;
    let (mut c, _) = SmtpConn::connect(server.mx()).await;
    c.cmd("EHLO client.test").await;
    c.cmd("MAIL FROM:<a@remote.test>").await;
    assert_eq!(c.cmd("RCPT TO:<boss@strict.test>").await.status(), "250 2.1.5");
    // SPEC 2: another policy in the same transaction waits for its own.
    assert_eq!(c.cmd("RCPT TO:<user@local.test>").await.status(), "450 4.5.3");
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send_raw(b"From: <a@remote.test>\r\nSubject: s\r\n\r\nx\r\n.\r\n").await;
    let reply = c.read_reply().await.unwrap();
    assert_eq!(reply.status(), "550 5.7.1", "{reply:?}");
    assert!(reply.text().contains("a@remote.test is not authenticated"), "{reply:?}");
    assert!(server.mailbox("boss@strict.test", Folder::Inbox).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_open_relay_whatever_the_address_syntax() {
    let server = TestServer::start().await;
    let (mut c, _) = SmtpConn::connect(server.mx()).await;
    c.cmd("EHLO client.test").await;
    c.cmd("MAIL FROM:<a@remote.test>").await;
    for rcpt in [
        "<victim@remote.test>",
        "<victim%remote.test@local.test>",
        "<remote.test!victim@local.test>",
        "<\"victim@remote.test\"@local.test>",
        "<@local.test:victim@remote.test>",
        "<victim@remote.test@local.test>",
        "<victim@[127.0.0.1]>",
        "<victim@local.test.>",
    ] {
        let reply = c.cmd(&format!("RCPT TO:{rcpt}")).await;
        assert!(reply.code >= 500, "{rcpt} was accepted: {:?}", reply.lines);
    }
    // A source route to a local address is fine: the route is ignored.
    assert_eq!(c.cmd("RCPT TO:<@relay.test:user@local.test>").await.code, 250);
    assert!(server.store.list_queue().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_catch_all_and_quota() {
    let server = TestServer::start().await;
    server.add_user("b@local.test").await;
    server.add_user("catch@local.test").await;
    server
        .store
        .add_alias("team@local.test", &["user@local.test".into(), "b@local.test".into(), "far@remote.test".into()])
        .await
        .unwrap();
    let (mut c, _) = SmtpConn::connect(server.mx()).await;
    c.cmd("EHLO client.test").await;
    // Alias plus a direct recipient it includes: one copy per mailbox.
    let reply =
        c.send_message("a@remote.test", &["team@local.test", "user@local.test"], "Subject: team\r\n\r\nx\r\n").await;
    assert_eq!(reply.code, 250);
    assert_eq!(server.inbox("user@local.test").await.len(), 1);
    assert_eq!(server.inbox("b@local.test").await.len(), 1);
    let queue = server.store.list_queue().await.unwrap();
    assert_eq!(queue.len(), 1);
    assert_eq!(queue[0].recipient, "far@remote.test");
    // Catch-all is off by default, then on.
    c.cmd("MAIL FROM:<a@remote.test>").await;
    assert_eq!(c.cmd("RCPT TO:<whoever@local.test>").await.status(), "550 5.1.1");
    c.cmd("RSET").await;
    server.store.set_catch_all("local.test", Some("catch@local.test")).await.unwrap();
    assert_eq!(c.send_message("a@remote.test", &["whoever@local.test"], "Subject: c\r\n\r\nx\r\n").await.code, 250);
    assert_eq!(server.inbox("catch@local.test").await.len(), 1);
    // Quota: b has one message now; a quota below its usage refuses more with 452 4.2.2.
    server.store.set_quota("b@local.test", 10).await.unwrap();
    c.cmd("MAIL FROM:<a@remote.test>").await;
    assert_eq!(c.cmd("RCPT TO:<b@local.test>").await.status(), "452 4.2.2");
    // Through an alias or the catch-all, the full account is not named (issue 9).
    let via_alias = c.cmd("RCPT TO:<team@local.test>").await;
    assert_eq!(via_alias.status(), "452 4.2.2");
    assert!(!via_alias.lines.concat().contains("b@local.test"), "{:?}", via_alias.lines);
    server.store.set_quota("catch@local.test", 10).await.unwrap();
    let via_catch_all = c.cmd("RCPT TO:<whoever@local.test>").await;
    assert_eq!(via_catch_all.status(), "452 4.2.2");
    assert!(!via_catch_all.lines.concat().contains("catch@"), "{:?}", via_catch_all.lines);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bdat_and_pipelining_over_the_socket() {
    let server = TestServer::start().await;
    let (mut c, _) = SmtpConn::connect(server.mx()).await;
    c.cmd("EHLO client.test").await;
    let chunk1 = "Subject: chunked\r\n\r\nfirst ";
    let chunk2 = "second\r\n.\r\n";
    c.send_raw(
        format!(
            "MAIL FROM:<a@remote.test>\r\nRCPT TO:<user@local.test>\r\nBDAT {}\r\n{chunk1}BDAT {} LAST\r\n{chunk2}NOOP\r\n",
            chunk1.len(),
            chunk2.len()
        )
        .as_bytes(),
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(c.read_reply().await.unwrap().status());
    }
    assert_eq!(statuses, ["250 2.1.0", "250 2.1.5", "250 2.0.0", "250 2.0.0", "250 2.0.0"]);
    let message = &server.inbox("user@local.test").await[0];
    assert!(message.ends_with("Subject: chunked\r\n\r\nfirst second\r\n.\r\n"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_with_bare_lf_is_not_end_of_data() {
    let server = TestServer::start().await;
    let (mut c, _) = SmtpConn::connect(server.mx()).await;
    c.cmd("EHLO client.test").await;
    c.cmd("MAIL FROM:<a@remote.test>").await;
    c.cmd("RCPT TO:<user@local.test>").await;
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send_raw(b"Subject: one\r\n\r\nx\n.\nMAIL FROM:<evil@remote.test>\r\nRCPT TO:<user@local.test>\r\nDATA\r\nSubject: smuggled\r\n\r\ny\r\n.\r\n").await;
    assert_eq!(c.read_reply().await.unwrap().status(), "250 2.0.0");
    assert_eq!(c.cmd("NOOP").await.status(), "250 2.0.0");
    let inbox = server.inbox("user@local.test").await;
    assert_eq!(inbox.len(), 1, "the smuggled message must not be separate");
    assert!(inbox[0].contains("MAIL FROM:<evil@remote.test>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lines_and_garbage_keep_the_session() {
    let server = TestServer::start().await;
    let (mut c, _) = SmtpConn::connect(server.mx()).await;
    c.cmd("EHLO client.test").await;
    assert_eq!(c.cmd(&format!("NOOP {}", "x".repeat(600))).await.status(), "500 5.5.2");
    assert_eq!(c.cmd("\u{1}\u{2}garbage").await.code, 500);
    assert_eq!(c.cmd("MAIL FROM:<a@remote.test> SIZE=999999999999").await.status(), "552 5.3.4");
    let long_body = format!("Subject: long\r\n\r\n{}\r\n", "y".repeat(1200));
    assert_eq!(c.send_message("a@remote.test", &["user@local.test"], &long_body).await.status(), "500 5.5.2");
    assert_eq!(c.send_message("a@remote.test", &["user@local.test"], BODY).await.status(), "250 2.0.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submission_requires_authentication() {
    let server = TestServer::start().await;
    let (mut c, _) = SmtpConn::connect(server.submission()).await;
    c.cmd("EHLO client.test").await;
    assert_eq!(c.cmd("MAIL FROM:<user@local.test>").await.status(), "530 5.7.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_and_timeouts() {
    let server = TestServer::start_with(|c| {
        c.smtp.max_connections_per_ip = 2;
        c.smtp.command_timeout_secs = 1;
    })
    .await;
    let (_a, _) = SmtpConn::connect(server.mx()).await;
    let (_b, _) = SmtpConn::connect(server.mx()).await;
    let (mut third, greeting) = SmtpConn::connect(server.mx()).await;
    assert_eq!(greeting.status(), "421 4.7.0");
    assert!(third.is_closed().await);
    // An idle client is dropped after the command timeout.
    let (mut idle, _) = {
        drop(_a);
        tokio::time::sleep(Duration::from_millis(200)).await;
        SmtpConn::connect(server.mx()).await
    };
    let reply = idle.read_reply().await.unwrap();
    assert_eq!(reply.status(), "421 4.4.2");
    assert!(idle.is_closed().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_says_421_to_idle_sessions_and_lets_transactions_finish() {
    let mut server = TestServer::start().await;
    let mx = server.mx();
    let (mut idle, _) = SmtpConn::connect(mx).await;
    idle.cmd("EHLO idle.test").await;
    let (mut busy, _) = SmtpConn::connect(mx).await;
    busy.cmd("EHLO busy.test").await;
    busy.cmd("MAIL FROM:<a@remote.test>").await;
    busy.cmd("RCPT TO:<user@local.test>").await;
    assert_eq!(busy.cmd("DATA").await.code, 354);
    let running = server.server.take().unwrap();
    let shutdown = tokio::spawn(running.shutdown());
    assert_eq!(idle.read_reply().await.unwrap().status(), "421 4.3.2");
    // New connections are refused once the listener stops.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(tokio::net::TcpStream::connect(mx).await.is_err());
    busy.send_raw(b"Subject: finishing\r\n\r\nx\r\n.\r\n").await;
    assert_eq!(busy.read_reply().await.unwrap().status(), "250 2.0.0");
    assert_eq!(busy.read_reply().await.unwrap().status(), "421 4.3.2");
    assert_eq!(shutdown.await.unwrap(), 0);
    assert_eq!(server.inbox("user@local.test").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_delivers_with_pipelining() {
    let server = TestServer::start().await;
    let mut cmd = Command::new(tool("swaks"));
    cmd.args([
        "--server",
        &server.mx().to_string(),
        "--from",
        "sender@remote.test",
        "--to",
        "user@local.test,nobody@local.test",
    ])
    .args(["--pipeline", "--h-Subject", "via swaks", "--body", "hello from swaks", "--helo", "swaks.test"]);
    let out = run(cmd).await;
    let transcript = String::from_utf8_lossy(&out.stdout);
    // swaks sees one refused and one accepted recipient, then 250 for the message.
    assert!(transcript.contains("550 5.1.1"), "{transcript}");
    assert!(transcript.contains("250 2.0.0 Ok: queued as"), "{transcript}");
    let inbox = server.inbox("user@local.test").await;
    assert_eq!(inbox.len(), 1);
    assert!(inbox[0].contains("Subject: via swaks") && inbox[0].contains("hello from swaks"));
    assert!(inbox[0].contains("Received: from swaks.test ([127.0.0.1])"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_sees_the_require_policy() {
    let server = TestServer::start().await;
    server.store.set_domain_policy("local.test", SenderPolicy::REJECT).await.unwrap();
    let mut cmd = Command::new(tool("swaks"));
    cmd.args(["--server", &server.mx().to_string(), "--from", "sender@remote.test", "--to", "user@local.test"]);
    let out = run(cmd).await;
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(transcript.contains("550 5.7.1"), "{transcript}");
    assert!(!out.status.success());
    assert!(server.mailbox("user@local.test", Folder::Inbox).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_smtplib_sends_utf8_and_8bit() {
    let server = TestServer::start().await;
    server.add_user("jörg@local.test").await;
    let script = r#"
import smtplib, sys
from email.message import EmailMessage
host, port = sys.argv[1], int(sys.argv[2])
msg = EmailMessage()
msg["From"] = "sender@remote.test"
msg["To"] = "jörg@local.test"
msg["Subject"] = "Grüße"
msg.set_content("Ein Text mit Umlauten: äöü\n")
with smtplib.SMTP(host, port) as s:
    s.ehlo("python.test")
    assert s.has_extn("smtputf8") and s.has_extn("8bitmime") and s.has_extn("size")
    refused = s.send_message(msg, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    assert refused == {}, refused
    try:
        s.sendmail("sender@remote.test", ["nobody@local.test"], "Subject: x\r\n\r\nx\r\n")
        sys.exit("unknown recipient was accepted")
    except smtplib.SMTPRecipientsRefused as e:
        code = e.recipients["nobody@local.test"][0]
        assert code == 550, code
    print("ok")
"#;
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script, "127.0.0.1", &server.mx().port().to_string()]);
    let out = run(cmd).await;
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let inbox = server.inbox("jörg@local.test").await;
    assert_eq!(inbox.len(), 1);
    assert!(inbox[0].contains("Umlauten"));
    // RFC 6531 4.3: the Received field names the SMTPUTF8 transaction.
    assert!(inbox[0].contains("with\r\n UTF8SMTP id ") || inbox[0].contains("with UTF8SMTP id "), "{}", inbox[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_dripping_a_byte_a_second_is_dropped_within_the_command_timeout() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let server = TestServer::start_with(|c| c.smtp.command_timeout_secs = 3).await;
    let stream = tokio::net::TcpStream::connect(server.mx()).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut read = tokio::io::BufReader::new(read);
    let mut line = String::new();
    read.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("220 "), "{line}");
    let started = std::time::Instant::now();
    // Each byte comes well within the timeout, but the line never completes in time
    // (issue 14: the timeout was a gap between reads, so this held the slot for ever).
    let drip = tokio::spawn(async move {
        for b in b"EHLO a-very-long-name-that-takes-a-while.example".iter().take(20) {
            if write.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    line.clear();
    tokio::time::timeout(Duration::from_secs(10), read.read_line(&mut line)).await.unwrap().unwrap();
    assert!(line.starts_with("421 4.4.2"), "{line}");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(5), "dropped at the deadline, not after {elapsed:?}");
    line.clear();
    assert_eq!(read.read_line(&mut line).await.unwrap_or(0), 0, "closed after the 421");
    drip.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_on_the_mx_leaves_submission_open() {
    let server = TestServer::start_with(|c| {
        c.smtp.max_connections = 2;
        c.smtp.max_connections_per_ip = 10;
    })
    .await;
    let (_a, _) = SmtpConn::connect(server.mx()).await;
    let (_b, _) = SmtpConn::connect(server.mx()).await;
    let (_, refused) = SmtpConn::connect(server.mx()).await;
    assert_eq!(refused.status(), "421 4.7.0");
    let (_, greeting) = SmtpConn::connect(server.submission()).await;
    assert_eq!(greeting.code, 220, "each listener role counts its own connections");
}

/// A body of `lines` numbered lines after a small header section.
fn large_body(lines: usize) -> String {
    let mut body = String::from("Subject: large\r\n\r\n");
    for i in 0..lines {
        body.push_str(&format!("{i:08} the quick brown fox jumps over the lazy dog, again and again\r\n"));
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_message_is_spooled_and_stored_whole() {
    let server = TestServer::start_with(|c| c.smtp.memory_body_limit = 32 * 1024).await;
    let body = large_body(40_000);
    assert!(body.len() > 2 * 1024 * 1024);
    let (mut c, _) = SmtpConn::connect(server.mx()).await;
    c.cmd("EHLO client.test").await;
    assert_eq!(c.send_message("a@remote.test", &["user@local.test"], &body).await.status(), "250 2.0.0");
    // BDAT, in two chunks.
    c.cmd("MAIL FROM:<a@remote.test>").await;
    c.cmd("RCPT TO:<user@local.test>").await;
    let (first, second) = body.as_bytes().split_at(body.len() / 2);
    let mut wire = format!("BDAT {}\r\n", first.len()).into_bytes();
    wire.extend_from_slice(first);
    wire.extend_from_slice(format!("BDAT {} LAST\r\n", second.len()).as_bytes());
    wire.extend_from_slice(second);
    c.send_raw(&wire).await;
    assert_eq!(c.read_reply().await.unwrap().code, 250);
    assert_eq!(c.read_reply().await.unwrap().status(), "250 2.0.0");
    let stored = server.mailbox("user@local.test", Folder::Inbox).await;
    assert_eq!(stored.len(), 2);
    for message in stored {
        let start = vouchmail_proto::headers::header_end(&message);
        let text = String::from_utf8(message).unwrap();
        assert!(text.starts_with("Authentication-Results: mx.local.test"), "our trace fields on top");
        assert!(text.ends_with(&body[body.find("\r\n\r\n").unwrap()..]), "the body arrived whole");
        assert!(text[..start].contains("Subject: large"));
    }
    let spool = server.config.data_dir.join("spool");
    assert_eq!(std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0), 0, "no spool file left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_is_checked_against_the_size_received_not_the_size_declared() {
    let server = TestServer::start().await;
    server.store.set_quota("user@local.test", 10_000).await.unwrap();
    let (mut c, _) = SmtpConn::connect(server.mx()).await;
    c.cmd("EHLO client.test").await;
    // SIZE=100 passes RCPT; the 50 kB that follow do not fit.
    c.cmd("MAIL FROM:<a@remote.test> SIZE=100").await;
    assert_eq!(c.cmd("RCPT TO:<user@local.test>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    let mut wire = large_body(700).into_bytes();
    wire.extend_from_slice(b".\r\n");
    c.send_raw(&wire).await;
    assert_eq!(c.read_reply().await.unwrap().status(), "452 4.2.2");
    assert!(server.inbox("user@local.test").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_memory_budget_data_gets_452() {
    // A budget smaller than one read: the first DATA block passes it.
    let server = TestServer::start_with(|c| c.smtp.max_inflight_bytes = 4096).await;
    let (mut c, _) = SmtpConn::connect(server.mx()).await;
    c.cmd("EHLO client.test").await;
    c.cmd("MAIL FROM:<a@remote.test>").await;
    c.cmd("RCPT TO:<user@local.test>").await;
    assert_eq!(c.cmd("DATA").await.code, 354);
    let mut wire = large_body(2_000).into_bytes();
    wire.extend_from_slice(b".\r\n");
    c.send_raw(&wire).await;
    assert_eq!(c.read_reply().await.unwrap().status(), "452 4.3.1");
    // The session goes on, and a small message fits.
    assert_eq!(c.send_message("a@remote.test", &["user@local.test"], "Subject: s\r\n\r\nsmall\r\n").await.code, 250);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_success_on_a_local_delivery_returns_a_delivered_dsn() {
    let server = TestServer::start_with_users(|_| {}, &["bob@local.test"]).await;
    let (mut c, _) = SmtpConn::connect(server.mx()).await;
    c.cmd("EHLO client.test").await;
    assert_eq!(c.cmd("MAIL FROM:<user@local.test> ENVID=track-1").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<bob@local.test> NOTIFY=SUCCESS ORCPT=rfc822;bob@local.test").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send_raw(b"Subject: with receipt\r\n\r\nhello\r\n.\r\n").await;
    assert_eq!(c.read_reply().await.unwrap().code, 250);
    assert_eq!(server.inbox("bob@local.test").await.len(), 1);
    // RFC 3461 4.1 / RFC 3464: a "delivered" report to the sender, headers only, no
    // Diagnostic-Code (no server replied; we delivered it).
    let notices = server.inbox("user@local.test").await;
    assert_eq!(notices.len(), 1, "{notices:?}");
    let dsn = &notices[0];
    assert!(dsn.contains("multipart/report; report-type=delivery-status"), "{dsn}");
    assert!(dsn.contains("Action: delivered"), "{dsn}");
    assert!(dsn.contains("Final-Recipient: rfc822; bob@local.test"), "{dsn}");
    assert!(dsn.contains("Original-Envelope-Id: track-1"), "{dsn}");
    assert!(dsn.contains("Subject: with receipt"), "{dsn}");
    assert!(!dsn.contains("Diagnostic-Code"), "{dsn}");
    // As a mail reader parses it (RFC 3464 with Python's email): three parts, headers only
    // returned (RET=HDRS is the default for a success), one recipient delivered, 2.0.0.
    let summary = common::python_dsn_summary(dsn).await;
    let fields: Vec<&str> = summary.split('|').collect();
    assert_eq!(
        &fields[..6],
        ["multipart/report", "delivery-status", "3", "text/plain", "message/delivery-status", "text/rfc822-headers"],
        "{summary}"
    );
    assert_eq!(fields[6], "dns; mx.local.test", "{summary}");
    assert_eq!(&fields[7..], ["delivered", "2.0.0", "rfc822; bob@local.test", "None"], "{summary}");
    // Without NOTIFY=SUCCESS nothing comes back.
    assert_eq!(c.send_message("user@local.test", &["bob@local.test"], "Subject: plain\r\n\r\nx\r\n").await.code, 250);
    assert_eq!(server.inbox("user@local.test").await.len(), 1);
}
