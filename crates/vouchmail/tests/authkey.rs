//! The Authentication Server of AuthKeys (SPEC 7.1, 7.2): keys the server makes answer
//! VERIFY over UDP and TCP; wrong, malformed, oversized and expired requests do not pass.
//! Two servers with the test DNS: the sender side stamps, the recipient side verifies, and
//! the six sender-policy actions (SPEC 2, 7.3–7.5).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{free_port, SmtpConn, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use vouchmail_server::config::Config;
use vouchmail_store::{Folder, PolicyAction, SenderPolicy};
use vouchmail_testkit::dns::TestDns;

const USER: &str = "user@local.test";

async fn start(agi: u64, avt: u64) -> TestServer {
    TestServer::start_with(|c| {
        c.authkey.server = true;
        c.authkey.default_agi_secs = agi;
        c.authkey.default_avt_secs = avt;
        c.authkey.tick_secs = 1;
        c.listeners.authkey = vec!["127.0.0.1:0".parse().unwrap()];
    })
    .await
}

fn verify_addr(server: &TestServer) -> SocketAddr {
    server.server.as_ref().unwrap().authkey_addrs[0]
}

fn now() -> i64 {
    vouchmail_proto::time::unix_seconds(std::time::SystemTime::now())
}

/// Waits for the server's first key of the address.
async fn first_key(server: &TestServer, address: &str) -> String {
    for _ in 0..100 {
        if let Some(k) = server.store.authkeys(address, now()).await.unwrap().into_iter().next() {
            return k.key;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no AuthKey generated for {address}");
}

/// One datagram out; the reply, or None after a short wait.
async fn udp(addr: SocketAddr, datagram: &[u8]) -> Option<String> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(datagram, addr).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(3), socket.recv(&mut buf)).await.ok()?.unwrap();
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[tokio::test]
async fn server_keys_verify_over_udp_and_tcp() {
    let server = start(2, 600).await;
    let addr = verify_addr(&server);
    let key = first_key(&server, USER).await;
    assert_eq!(key.len(), 64);
    assert!(key.bytes().all(|b| b.is_ascii_alphanumeric()));

    let reply = udp(addr, format!("VERIFY 1 {USER} {key}\r\n").as_bytes()).await;
    assert_eq!(reply.as_deref(), Some(format!("VERIFY_REPLY 1 {USER} VALIDKEY\r\n").as_str()));
    let wrong = format!("X{}", &key[1..]);
    let wrong = if wrong == key { format!("Y{}", &key[1..]) } else { wrong };
    let reply = udp(addr, format!("VERIFY 2 {USER} {wrong}\r\n").as_bytes()).await;
    assert_eq!(reply.as_deref(), Some(format!("VERIFY_REPLY 2 {USER} INVALIDKEY\r\n").as_str()));
    let reply = udp(addr, format!("VERIFY 3 {USER} short\r\n").as_bytes()).await;
    assert_eq!(reply.as_deref(), Some("ERROR 3 bad key\r\n"));
    let big = format!("VERIFY 4 {USER} {key}{}\r\n", " ".repeat(600));
    assert_eq!(udp(addr, big.as_bytes()).await, None, "an oversized datagram gets no reply");

    // TCP: two pipelined requests in one write, answered in order.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("VERIFY a {USER} {key}\r\nVERIFY b {USER} {wrong}\r\n").as_bytes()).await.unwrap();
    let want = format!("VERIFY_REPLY a {USER} VALIDKEY\r\nVERIFY_REPLY b {USER} INVALIDKEY\r\n");
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while got.len() < want.len() {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(String::from_utf8_lossy(&got), want);
    tcp.write_all(b"HELLO\r\n").await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], b"ERROR - unknown command\r\n");

    // SPEC 7.1: every VERIFY is logged.
    let mut log = Vec::new();
    for _ in 0..50 {
        log = server.store.verify_log(0, 100).await.unwrap();
        if log.len() >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let results: Vec<(&str, &str)> =
        log.iter().map(|e| (e.peer.split(' ').next().unwrap(), e.result.as_str())).collect();
    for want in [
        ("udp", "VALIDKEY"),
        ("udp", "INVALIDKEY"),
        ("udp", "ERROR bad key"),
        ("tcp", "VALIDKEY"),
        ("tcp", "INVALIDKEY"),
        ("tcp", "ERROR unknown command"),
    ] {
        assert!(results.contains(&want), "{want:?} not in {results:?}");
    }
    assert!(log.iter().filter(|e| e.result.ends_with("KEY")).all(|e| e.address == USER));
}

#[tokio::test]
async fn keys_expire_after_agi_plus_avt() {
    let server = start(1, 1).await;
    let addr = verify_addr(&server);
    let key = first_key(&server, USER).await;
    let stored = server.store.authkeys(USER, 0).await.unwrap();
    let created = stored.iter().find(|k| k.key == key).unwrap();
    assert_eq!(created.expires_at, created.created_at + 2, "expiry = now + AGI + AVT");
    // Past its expiry the key is no longer valid (and the generator deletes it).
    while now() <= created.expires_at {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reply = udp(addr, format!("VERIFY 9 {USER} {key}\r\n").as_bytes()).await;
    assert_eq!(reply.as_deref(), Some(format!("VERIFY_REPLY 9 {USER} INVALIDKEY\r\n").as_str()));
    // Newer keys keep coming every AGI.
    assert!(server.store.authkeys(USER, now()).await.unwrap().iter().all(|k| k.key != key));
    wait_until!("a newer key", 15, !server.store.authkeys(USER, now()).await.unwrap().is_empty());
}

// ---- Two servers: the sender side stamps, the recipient side verifies (SPEC 7.3–7.5) ----

const GLEN: &str = "glen@galkam.test";
const ABC: &str = "abc555@lrsupport.test";
const PASSWORD: &str = "pw-glen";

fn auth_plain(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
}

/// galkam.test (127.0.0.2): the sender's server and its Authentication Server on
/// `as_port`, mailing keys (kept in the mailbox, phase II); delivery to lrsupport's MX.
/// lrsupport.test (127.0.0.3): the recipient's MX, verifying.
struct Federation {
    _dns: TestDns,
    galkam: TestServer,
    lrsupport: TestServer,
    as_addr: SocketAddr,
}

fn on(ip: &str) -> Vec<SocketAddr> {
    vec![format!("{ip}:0").parse().unwrap()]
}

async fn federation(policy: SenderPolicy, galkam_udp: bool, adjust: impl FnOnce(&mut Config)) -> Federation {
    let as_port = free_port("127.0.0.2");
    let dns = TestDns::builder()
        .txt("galkam.test", "v=spf1 -all")
        .txt("galkam.test", &format!("AS=as.galkam.test:{as_port}"))
        .a("as.galkam.test", "127.0.0.2")
        .mx("galkam.test", 10, "mx.galkam.test")
        .a("mx.galkam.test", "127.0.0.2")
        .mx("lrsupport.test", 10, "mx.lrsupport.test")
        .a("mx.lrsupport.test", "127.0.0.3")
        .start()
        .await;
    let nameservers = vec![dns.addr()];
    let ns = nameservers.clone();
    let lrsupport = TestServer::start_with_users(
        |c| {
            c.hostname = "mx.lrsupport.test".into();
            c.bootstrap.domain = "lrsupport.test".into();
            c.bootstrap.policy = policy.to_string();
            c.listeners.mx = on("127.0.0.3");
            c.dns.nameservers = ns;
            // Generous for a loaded CI machine; the TCP test shortens the UDP wait.
            c.authkey.udp_timeout_ms = 3000;
            c.authkey.tcp_timeout_secs = 10;
            adjust(c);
        },
        &[ABC],
    )
    .await;
    let mx_port = lrsupport.mx().port();
    let galkam = TestServer::start_with(|c| {
        c.hostname = "mx.galkam.test".into();
        c.bootstrap.domain = "galkam.test".into();
        c.listeners.mx = on("127.0.0.2");
        c.listeners.submission = on("127.0.0.2");
        c.listeners.authkey = vec![format!("127.0.0.2:{as_port}").parse().unwrap()];
        c.auth.allow_plaintext_passwords = true;
        c.authkey.server = true;
        c.authkey.udp = galkam_udp;
        c.authkey.tick_secs = 1;
        // The first key within 2 s; glen_key() then slows the generator down.
        c.authkey.default_agi_secs = 2;
        c.authkey.mail_keys = true;
        c.authkey.keep_key_mail = true;
        c.dns.nameservers = nameservers;
        c.outbound.enabled = true;
        c.outbound.port = mx_port;
        c.outbound.retry_min_secs = 1;
        c.outbound.poll_interval_ms = 50;
    })
    .await;
    let secrets =
        vouchmail_proto::sasl::Secrets::from_password(PASSWORD, &[6; vouchmail_proto::sasl::SALTS_LEN]).unwrap();
    let account = vouchmail_store::NewAccount { address: GLEN.into(), secrets, quota_bytes: 0 };
    galkam.store.add_account(account).await.unwrap();
    let as_addr = verify_addr(&galkam);
    Federation { _dns: dns, galkam, lrsupport, as_addr }
}

/// Glen's first key; later keys only after an hour, so a test sees one key throughout.
async fn glen_key(f: &Federation) -> String {
    let key = first_key(&f.galkam, GLEN).await;
    let slow = vouchmail_store::AuthKeySettings { agi_secs: 3600, avt_secs: 3600 };
    f.galkam.store.set_authkey_settings("galkam.test", Some(slow)).await.unwrap();
    key
}

/// Glen sends to abc555 through galkam's submission port, as a mail client does.
async fn glen_sends(f: &Federation, subject: &str, extra_header: &str) {
    glen_sends_to(f, &[ABC], subject, extra_header).await
}

async fn glen_sends_to(f: &Federation, to: &[&str], subject: &str, extra_header: &str) {
    let (mut c, _) = SmtpConn::connect(f.galkam.submission()).await;
    assert_eq!(c.cmd("EHLO glen-laptop").await.code, 250);
    assert_eq!(c.cmd(&format!("AUTH PLAIN {}", auth_plain(GLEN, PASSWORD))).await.code, 235);
    let body = format!(
        "From: Glen <{GLEN}>\r\nTo: <{ABC}>\r\nSubject: {subject}\r\n{extra_header}Message-ID: <{subject}@galkam.test>\r\n\r\nHello\r\n"
    );
    let reply = c.send_message(GLEN, to, &body).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    c.cmd("QUIT").await;
}

async fn messages(server: &TestServer, address: &str, folder: Folder) -> Vec<String> {
    // RFC 5322 2.2.3: unfolded, so a test can match a whole field.
    let unfold = |m: Vec<u8>| String::from_utf8_lossy(&m).replace("\r\n ", " ").replace("\r\n\t", " ");
    server.mailbox(address, folder).await.into_iter().map(unfold).collect()
}

/// Waits until `address` has a message whose Subject is `subject`, in any folder.
async fn arrived(server: &TestServer, address: &str, subject: &str) -> (Folder, String) {
    // Up to 30 s: delivery crosses two servers on a possibly busy machine.
    for _ in 0..600 {
        for folder in Folder::ALL {
            if let Some(m) = messages(server, address, folder)
                .await
                .into_iter()
                .find(|m| m.contains(&format!("Subject: {subject}\r\n")))
            {
                return (folder, m);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no message '{subject}' for {address}");
}

#[tokio::test]
async fn a_mailed_key_is_stamped_and_verified_over_udp_then_cached() {
    let f = federation(SenderPolicy::REJECT, true, |_| {}).await;
    // Seed 001: the key arrives by mail from galkam's Authentication Server.
    let key = glen_key(&f).await;
    wait_until!(
        "the key mail",
        10,
        messages(&f.galkam, GLEN, Folder::Inbox).await.iter().any(|m| m.contains(&format!("X-New-Auth-Key: {key}")))
    );
    let received = f.galkam.store.sender_key(GLEN).await.unwrap().expect("key recorded");
    assert_eq!(received.key, key);

    // One message to abc555 and to a local colleague of glen's.
    glen_sends_to(&f, &[ABC, "user@galkam.test"], "first", "").await;
    let (folder, stored) = arrived(&f.lrsupport, ABC, "first").await;
    assert_eq!(folder, Folder::Inbox, "{stored}");
    assert!(stored.contains(&format!("x-authkey=pass header.from={GLEN}")), "{stored}");
    assert!(stored.contains("X-Auth-Key-Status: valid\r\n"), "{stored}");
    // SPEC 7.5: the key does not travel on into the mailbox.
    assert!(!stored.contains(&key), "{stored}");
    // The stamp is put on the copy that leaves: the local copy never holds glen's key.
    let (_, local) = arrived(&f.galkam, "user@galkam.test", "first").await;
    assert!(!local.contains("X-Auth-Key") && !local.contains(&key), "{local}");
    let sent = f.lrsupport.store.verify_sent_log(0, 100).await.unwrap();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].server.starts_with("udp ") && sent[0].result == "VALIDKEY", "{sent:?}");
    // The AS saw the request over UDP.
    wait_until!(
        "the VERIFY log row",
        10,
        f.galkam.store.verify_log(0, 10).await.unwrap().iter().any(|e| e.peer.starts_with("udp "))
    );

    // A cached valid key is not verified again.
    glen_sends(&f, "second", "").await;
    let (_, stored) = arrived(&f.lrsupport, ABC, "second").await;
    assert!(stored.contains("x-authkey=pass"), "{stored}");
    assert_eq!(f.lrsupport.store.verify_sent_log(0, 100).await.unwrap().len(), 1);
}

#[tokio::test]
async fn with_udp_dropped_the_check_goes_over_tcp() {
    // galkam answers VERIFY over TCP only; its UDP port is a socket that drops everything.
    let f = federation(SenderPolicy::REJECT, false, |c| c.authkey.udp_timeout_ms = 500).await;
    let _black_hole = std::net::UdpSocket::bind(f.as_addr).unwrap();
    glen_key(&f).await;
    wait_until!("the key recorded", 10, f.galkam.store.sender_key(GLEN).await.unwrap().is_some());
    glen_sends(&f, "over-tcp", "").await;
    let (folder, stored) = arrived(&f.lrsupport, ABC, "over-tcp").await;
    assert_eq!(folder, Folder::Inbox);
    assert!(stored.contains("x-authkey=pass"), "{stored}");
    let sent = f.lrsupport.store.verify_sent_log(0, 100).await.unwrap();
    let transports: Vec<&str> = sent.iter().map(|e| e.server.split(' ').next().unwrap()).collect();
    assert_eq!(transports, ["udp", "udp", "udp", "tcp"], "{sent:?}");
    assert!(sent[..3].iter().all(|e| e.result.contains("timeout")), "{sent:?}");
}

/// One unauthenticated message from a stranger at 127.0.0.9 to lrsupport's MX.
async fn stranger_sends(f: &Federation, subject: &str, key_header: &str) -> common::Reply {
    let (mut c, _) = SmtpConn::connect_from(f.lrsupport.mx(), "127.0.0.9".parse().unwrap()).await;
    assert_eq!(c.cmd("EHLO stranger.test").await.code, 250);
    let body = format!("From: <{GLEN}>\r\nTo: <{ABC}>\r\nSubject: {subject}\r\n{key_header}\r\nbody\r\n");
    let reply = c.send_message(GLEN, &[ABC], &body).await;
    c.cmd("QUIT").await;
    reply
}

#[tokio::test]
async fn forged_missing_and_unreachable_keys_meet_the_policy() {
    let policy = SenderPolicy {
        unauthenticated: PolicyAction::Junk,
        forged: PolicyAction::RejectNotifyBoth,
        dmarc_counts: true,
    };
    let mut f = federation(policy, true, |_| {}).await;
    let key = glen_key(&f).await;
    // Missing key: the unauthenticated case, junk.
    assert_eq!(stranger_sends(&f, "no-key", "").await.code, 250);
    let (folder, stored) = arrived(&f.lrsupport, ABC, "no-key").await;
    assert_eq!(folder, Folder::Junk);
    assert!(stored.contains("X-Auth-Key-Status: none"), "{stored}");
    assert!(stored.contains(&format!("x-authkey=none header.from={GLEN}")), "{stored}");
    // A forged key: the forged case, refused with instructions and a notice to abc555.
    let forged = "F".repeat(64);
    let reply = stranger_sends(&f, "forged", &format!("X-Auth-Key: {forged}\r\n")).await;
    assert_eq!(reply.status(), "550 5.7.1", "{reply:?}");
    assert!(reply.text().contains("INVALIDKEY") && reply.text().contains("SMTP AUTH"), "{reply:?}");
    let (folder, notice) = arrived(&f.lrsupport, ABC, &format!("Refused message from <{GLEN}>")).await;
    assert_eq!(folder, Folder::Inbox);
    assert!(notice.contains("Subject: forged") && !notice.contains("body\r\n"), "{notice}");
    // The real key, sent by the stranger: valid is valid (the key is what authenticates).
    let reply = stranger_sends(&f, "stolen-but-valid", &format!("X-Auth-Key: {key}\r\n")).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    // A key valid until now + AGI + AVT (here 3 s), then not: forged.
    let short = vouchmail_store::AuthKey {
        address: GLEN.into(),
        key: "E".repeat(64),
        created_at: now(),
        expires_at: now() + 3,
    };
    f.galkam.store.add_authkey(short.clone()).await.unwrap();
    // The AS reads an address's keys from the store at most once a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let valid = udp(f.as_addr, format!("VERIFY e1 {GLEN} {}\r\n", short.key).as_bytes()).await;
    assert_eq!(valid.as_deref(), Some(format!("VERIFY_REPLY e1 {GLEN} VALIDKEY\r\n").as_str()));
    while now() <= short.expires_at {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reply = stranger_sends(&f, "after-expiry", &format!("X-Auth-Key: {}\r\n", short.key)).await;
    assert_eq!(reply.status(), "550 5.7.1", "{reply:?}");
    // Unreachable AS: temperror, 451 since the forged action refuses.
    f.galkam.server.take().unwrap().shutdown().await;
    let reply = stranger_sends(&f, "unreachable", &format!("X-Auth-Key: {}\r\n", "U".repeat(64))).await;
    assert_eq!(reply.status(), "451 4.7.0", "{reply:?}");
}

#[tokio::test]
async fn each_action_is_seen_from_outside() {
    let f = federation(SenderPolicy::REJECT, true, |_| {}).await;
    let cases = [
        (PolicyAction::Accept, 250, Some(Folder::Inbox), false),
        (PolicyAction::Junk, 250, Some(Folder::Junk), false),
        (PolicyAction::Reject, 550, None, false),
        (PolicyAction::RejectNotifySender, 550, None, false),
        (PolicyAction::RejectNotifyRecipient, 550, None, true),
        (PolicyAction::RejectNotifyBoth, 550, None, true),
    ];
    for (action, code, folder, notice) in cases {
        let policy = SenderPolicy { unauthenticated: action, forged: PolicyAction::Reject, dmarc_counts: true };
        f.lrsupport.store.set_domain_policy("lrsupport.test", policy).await.unwrap();
        let subject = format!("case-{action}");
        let reply = stranger_sends(&f, &subject, "").await;
        assert_eq!(reply.code, code, "{action}: {reply:?}");
        assert_eq!(reply.text().contains("SMTP AUTH"), action.notifies_sender(), "{action}: {reply:?}");
        if let Some(folder) = folder {
            assert_eq!(arrived(&f.lrsupport, ABC, &subject).await.0, folder, "{action}");
        }
        let refused = format!("Subject: Refused message from <{GLEN}>");
        let notices = |all: Vec<String>| {
            all.iter().filter(|m| m.contains(&refused) && m.contains(&format!("Subject: {subject}\r\n"))).count()
        };
        if notice {
            wait_until!("the notice", 10, notices(messages(&f.lrsupport, ABC, Folder::Inbox).await) == 1);
        } else {
            assert_eq!(notices(messages(&f.lrsupport, ABC, Folder::Inbox).await), 0, "{action}");
        }
    }
}

#[tokio::test]
async fn recipients_with_other_policies_wait_for_their_own_transaction() {
    let f = federation(SenderPolicy::ACCEPT, true, |_| {}).await;
    f.lrsupport.store.add_domain("other.test", SenderPolicy::JUNK).await.unwrap();
    f.lrsupport.add_user("x@other.test").await;
    f.lrsupport.store.add_domain("same.test", SenderPolicy::ACCEPT).await.unwrap();
    f.lrsupport.add_user("y@same.test").await;
    let (mut c, _) = SmtpConn::connect(f.lrsupport.mx()).await;
    c.cmd("EHLO stranger.test").await;
    c.cmd(&format!("MAIL FROM:<{GLEN}>")).await;
    assert_eq!(c.cmd(&format!("RCPT TO:<{ABC}>")).await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<y@same.test>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<x@other.test>").await.status(), "450 4.5.3");
}

#[tokio::test]
async fn key_mail_counts_only_from_the_domains_authentication_server() {
    // lrsupport's users get keys from an AS at 127.0.0.2 (DNS: AS=as.lrsupport.test).
    let dns = TestDns::builder()
        .txt("lrsupport.test", "AS=as.lrsupport.test")
        .a("as.lrsupport.test", "127.0.0.2")
        .start()
        .await;
    let ns = vec![dns.addr()];
    let server = TestServer::start_with_users(
        |c| {
            c.bootstrap.domain = "lrsupport.test".into();
            c.bootstrap.policy = "reject".into();
            c.listeners.mx = on("127.0.0.3");
            c.dns.nameservers = ns;
        },
        &[ABC],
    )
    .await;
    let key = "K".repeat(63) + "1";
    let key_mail =
        |key: &str| format!("From: <as@lrsupport.test>\r\nSubject: key\r\nX-New-Auth-Key: {key}\r\n\r\nnew key\r\n");
    // From a stranger's IP: not recorded, and (unauthenticated, policy reject) refused.
    let (mut c, _) = SmtpConn::connect_from(server.mx(), "127.0.0.9".parse().unwrap()).await;
    c.cmd("EHLO as.evil.test").await;
    assert_eq!(c.send_message("as@lrsupport.test", &[ABC], &key_mail(&key)).await.code, 550);
    assert!(server.store.sender_key(ABC).await.unwrap().is_none());
    // From the AS's address: recorded and dropped (phase I).
    let (mut c, _) = SmtpConn::connect_from(server.mx(), "127.0.0.2".parse().unwrap()).await;
    c.cmd("EHLO as.lrsupport.test").await;
    assert_eq!(c.send_message("as@lrsupport.test", &[ABC], &key_mail(&key)).await.code, 250);
    assert_eq!(server.store.sender_key(ABC).await.unwrap().map(|k| k.key), Some(key.clone()));
    assert!(server.mailbox(ABC, Folder::Inbox).await.is_empty(), "phase I drops key mail");
    // The key survives a restart, as does the cache.
    let server = server.restart().await;
    assert_eq!(server.store.sender_key(ABC).await.unwrap().map(|k| k.key), Some(key));
}

#[tokio::test]
async fn forwarded_mail_is_not_stamped() {
    let f = federation(SenderPolicy::ACCEPT, true, |_| {}).await;
    glen_key(&f).await;
    wait_until!("the key recorded", 10, f.galkam.store.sender_key(GLEN).await.unwrap().is_some());
    // An alias at galkam forwarding to abc555: mail arriving at galkam's MX passes through.
    f.galkam.store.set_domain_policy("galkam.test", SenderPolicy::ACCEPT).await.unwrap();
    f.galkam.store.add_alias("fwd@galkam.test", &[ABC.to_string()]).await.unwrap();
    let (mut c, _) = SmtpConn::connect_from(f.galkam.mx(), "127.0.0.9".parse().unwrap()).await;
    c.cmd("EHLO outside.test").await;
    let body = format!("From: <{GLEN}>\r\nTo: <fwd@galkam.test>\r\nSubject: forwarded\r\n\r\nhi\r\n");
    assert_eq!(c.send_message(GLEN, &["fwd@galkam.test"], &body).await.code, 250);
    let (_, stored) = arrived(&f.lrsupport, ABC, "forwarded").await;
    assert!(stored.contains("X-Auth-Key-Status: none") && stored.contains("x-authkey=none"), "{stored}");
    // A message a user stamps itself keeps its own key (none added).
    glen_sends(&f, "own-key", &format!("X-Auth-Key: {}\r\n", "Z".repeat(64))).await;
    let (_, stored) = arrived(&f.lrsupport, ABC, "own-key").await;
    assert!(stored.contains("X-Auth-Key-Status: invalid"), "{stored}");
}

// ---- Header hygiene (issue 19 item 5, SPEC 7.5 last paragraph) ----

/// Fields an outsider writes to pass as verified: a status in upper case, one in the
/// obsolete syntax (white space before the colon), and a key of its own.
const FORGED_FIELDS: &str =
    "X-Auth-Key-Status: VALID\r\nx-auth-key-status : valid\r\nX-Auth-Key: ForgedKeyForgedKeyForgedKeyForgedKey\r\n";

/// local.test (policy accept) with user@local.test (password PASSWORD, AUTH PLAIN allowed
/// in the clear) and a test DNS that knows no name: a From domain has no `AS=` record.
async fn hygiene_server() -> (TestDns, TestServer) {
    let dns = TestDns::builder().start().await;
    let ns = vec![dns.addr()];
    let server = TestServer::start_with(|c| {
        c.auth.allow_plaintext_passwords = true;
        c.dns.nameservers = ns;
    })
    .await;
    let secrets =
        vouchmail_proto::sasl::Secrets::from_password(PASSWORD, &[6; vouchmail_proto::sasl::SALTS_LEN]).unwrap();
    server.store.set_secrets(USER, secrets).await.unwrap();
    (dns, server)
}

/// The unfolded header section's fields named X-Auth-Key or X-Auth-Key-Status (any case,
/// any spacing before the colon), as `name: value` lines.
fn key_fields(message: &[u8]) -> Vec<String> {
    vouchmail_proto::headers::fields(message)
        .filter(|f| f.name_is("X-Auth-Key") || f.name_is("X-Auth-Key-Status"))
        .map(|f| format!("{}: {}", f.name(), f.unfolded_value()))
        .collect()
}

/// The stored message of `address` with this Subject.
async fn stored_with_subject(server: &TestServer, address: &str, subject: &str) -> Vec<u8> {
    let all = server.mailbox(address, Folder::Inbox).await;
    let wanted = format!("Subject: {subject}\r\n");
    all.into_iter()
        .find(|m| String::from_utf8_lossy(m).contains(&wanted))
        .unwrap_or_else(|| panic!("no message '{subject}' for {address}"))
}

fn forged_message(from: &str, subject: &str) -> String {
    format!("From: <{from}>\r\nTo: <{USER}>\r\nSubject: {subject}\r\n{FORGED_FIELDS}Message-ID: <{subject}@test>\r\n\r\nhi\r\n")
}

#[tokio::test]
async fn outside_key_fields_never_reach_a_mailbox_after_local_auth_or_the_mx() {
    let (_dns, server) = hygiene_server().await;
    // A local user's client (SMTP AUTH on submission): today the forged fields stay.
    let (mut c, _) = SmtpConn::connect(server.submission()).await;
    assert_eq!(c.cmd("EHLO laptop").await.code, 250);
    assert_eq!(c.cmd(&format!("AUTH PLAIN {}", auth_plain(USER, PASSWORD))).await.code, 235);
    let reply = c.send_message(USER, &[USER], &forged_message(USER, "by-auth")).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let stored = stored_with_subject(&server, USER, "by-auth").await;
    assert!(String::from_utf8_lossy(&stored).contains("auth=pass smtp.auth=user@local.test"));
    // No key was checked: no status at all, ours or theirs.
    assert_eq!(key_fields(&stored), Vec::<String>::new(), "{}", String::from_utf8_lossy(&stored));

    // A stranger at the MX: only this server's own status (the forged key is malformed:
    // `invalid`, the forged case; the policy here accepts it).
    let (mut c, _) = SmtpConn::connect(server.mx()).await;
    assert_eq!(c.cmd("EHLO stranger.test").await.code, 250);
    let reply = c.send_message("s@stranger.test", &[USER], &forged_message("s@stranger.test", "by-mx")).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let stored = stored_with_subject(&server, USER, "by-mx").await;
    assert_eq!(key_fields(&stored), ["X-Auth-Key-Status: invalid"], "{}", String::from_utf8_lossy(&stored));
}

#[tokio::test]
async fn a_forwarded_copy_keeps_the_senders_key_byte_for_byte() {
    let (_dns, server) = hygiene_server().await;
    server.store.add_alias("fwd@local.test", &["friend@remote.test".to_string()]).await.unwrap();
    // A key field as a sender's server may write it: folded, odd spacing.
    let key_field = "X-Auth-Key:   SendersKey0123456789\r\n\tSendersKeyContinued\r\n";
    let body = format!(
        "From: <s@stranger.test>\r\nTo: <fwd@local.test>\r\nSubject: both\r\n{key_field}X-Auth-Key-Status: VALID\r\n\r\nhi\r\n"
    );
    // One transaction: a local mailbox and an alias that forwards to a remote address.
    let (mut c, _) = SmtpConn::connect(server.mx()).await;
    assert_eq!(c.cmd("EHLO stranger.test").await.code, 250);
    let reply = c.send_message("s@stranger.test", &[USER, "fwd@local.test"], &body).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    // The mailbox copy: only our own status.
    let stored = stored_with_subject(&server, USER, "both").await;
    assert_eq!(key_fields(&stored), ["X-Auth-Key-Status: invalid"], "{}", String::from_utf8_lossy(&stored));
    // The forwarded copy: the sender's fields exactly as they arrived (a forwarder passes
    // them on untouched; the final recipient's server verifies), and no status of ours.
    let forwarded = queued_copy(&server, "friend@remote.test").await;
    let text = String::from_utf8_lossy(&forwarded);
    assert!(text.contains(&format!("\r\n{key_field}X-Auth-Key-Status: VALID\r\n")), "{text}");
    assert_eq!(key_fields(&forwarded).len(), 2, "{text}");

    // The same from a local user through submission: the local copy loses the key, the
    // copy that leaves keeps it (and so is not stamped again, SPEC 7.4).
    let (mut c, _) = SmtpConn::connect(server.submission()).await;
    assert_eq!(c.cmd("EHLO laptop").await.code, 250);
    assert_eq!(c.cmd(&format!("AUTH PLAIN {}", auth_plain(USER, PASSWORD))).await.code, 235);
    let body = format!("From: <{USER}>\r\nTo: <x@remote.test>\r\nSubject: mine\r\n{key_field}\r\nhi\r\n");
    let reply = c.send_message(USER, &[USER, "x@remote.test"], &body).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let stored = stored_with_subject(&server, USER, "mine").await;
    assert_eq!(key_fields(&stored), Vec::<String>::new(), "{}", String::from_utf8_lossy(&stored));
    let onward = queued_copy(&server, "x@remote.test").await;
    assert!(String::from_utf8_lossy(&onward).contains(&format!("\r\n{key_field}")));
}

/// The stored message queued for `recipient` (outbound delivery is off in the kit).
async fn queued_copy(server: &TestServer, recipient: &str) -> Vec<u8> {
    let queue = server.store.list_queue().await.unwrap();
    let entry = queue
        .iter()
        .find(|e| e.recipient == recipient)
        .unwrap_or_else(|| panic!("nothing queued for {recipient}: {queue:?}"));
    server.store.get_queued_message(&entry.queue_id).await.unwrap().expect("queued").1
}
