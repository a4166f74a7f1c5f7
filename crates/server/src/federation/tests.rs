//! The federation client against scripted home servers: STARTTLS when offered (and EHLO
//! again inside TLS), and the rules of an Entity Index pull (SPEC 8.4): entries kept only
//! from the home server of their domain, never for a local domain, withdrawals applied,
//! and a peer whose serials went back learnt anew.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use vouchmail_store::{SenderPolicy, SqliteStore, Store};
use vouchmail_testkit::dns::TestDns;

use super::Messenger;
use crate::config::Config;
use crate::net::federation::{FederationClient, SMALL_REPLY};

/// One command line a fake home server received, and whether it came inside TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    from: IpAddr,
    tls: bool,
    line: String,
}

type Log = Arc<Mutex<Vec<Seen>>>;
/// The ENTITIES replies to give, in order (the last one repeats).
type Script = Arc<Mutex<VecDeque<String>>>;

async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    from: IpAddr,
    tls: bool,
    log: &Log,
    script: &Script,
) -> Option<S> {
    let mut reader = BufReader::new(stream);
    let mut previous = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let line = line.trim_end().to_string();
        log.lock().unwrap().push(Seen { from, tls, line: line.clone() });
        let after_auth = std::mem::replace(&mut previous, line.clone()) == "AUTH CRAM-MD5";
        let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
        let reply = match verb.as_str() {
            // An older home server: CRAM-MD5, no X-RCRAM-VERIFY (SPEC 8.2 step 6).
            "EHLO" if tls => "250-home.test\r\n250-AUTH CRAM-MD5\r\n250 ENTITIES\r\n".to_string(),
            "AUTH" if line.eq_ignore_ascii_case("AUTH CRAM-MD5") => "334 PDEyMy40NTZAaG9tZS50ZXN0Pg==\r\n".to_string(),
            // Its users' answers to that challenge are checked as a real one would (RFC 2195).
            _ if after_auth => legacy_verdict(&line).to_string(),
            "EHLO" => "250-home.test\r\n250-STARTTLS\r\n250 ENTITIES\r\n".to_string(),
            "STARTTLS" if !tls => {
                reader.get_mut().write_all(b"220 2.0.0 Ready to start TLS\r\n").await.ok()?;
                return Some(reader.into_inner());
            }
            "ENTITIES" => {
                let mut script = script.lock().unwrap();
                let reply = if script.len() > 1 { script.pop_front() } else { script.front().cloned() };
                reply.unwrap_or_else(|| "250 0\r\n".into())
            }
            "CERT" => "550 5.1.1 No such address or published ID\r\n".to_string(),
            "QUIT" => "221 2.0.0 Bye\r\n".to_string(),
            _ => "500 5.5.1 What\r\n".to_string(),
        };
        reader.get_mut().write_all(reply.as_bytes()).await.ok()?;
    }
}

/// The legacy home server's users and passwords.
const LEGACY_USERS: [(&str, &str); 2] = [("ann@home.test", "s3cret"), ("mallory@home.test", "mine")];
/// Its one CRAM-MD5 challenge (`334 PDEyMy40NTZAaG9tZS50ZXN0Pg==`).
const LEGACY_CHALLENGE: &[u8] = b"<123.456@home.test>";

/// The legacy home server's verdict on a CRAM-MD5 answer: whichever user the answer names.
fn legacy_verdict(line: &str) -> &'static str {
    use vouchmail_proto::sasl::CramMd5Secret;
    let Ok(response) = vouchmail_proto::sasl::decode_response(line.as_bytes()) else {
        return "501 5.5.2 Malformed\r\n";
    };
    let good = LEGACY_USERS.iter().any(|(user, password)| {
        vouchmail_proto::messenger::rcram::check_answer(
            &response,
            "<123.456@home.test>",
            &CramMd5Secret::from_password(password),
        )
        .is_some_and(|named| named == *user)
    });
    if good {
        "235 2.7.0 Authentication successful\r\n"
    } else {
        "535 5.7.8 Authentication credentials invalid\r\n"
    }
}

/// A home server on `ip` that offers STARTTLS (with the self-signed certificate of a
/// vouchmail data folder) and answers ENTITIES from `script`.
async fn fake_home(ip: &str, dir: &std::path::Path, script: Script) -> (SocketAddr, Log) {
    let config = Config { hostname: "home.test".into(), data_dir: dir.to_path_buf(), ..Config::default() };
    let acceptor: TlsAcceptor = crate::net::tls::Tls::from_config(&config).unwrap().acceptor();
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log: Log = Arc::default();
    let record = Arc::clone(&log);
    tokio::spawn(async move {
        while let Ok((mut stream, peer)) = listener.accept().await {
            let (log, script, acceptor) = (Arc::clone(&record), Arc::clone(&script), acceptor.clone());
            tokio::spawn(async move {
                stream.write_all(b"220 home.test ESMTP\r\n").await.unwrap();
                if let Some(plain) = session(stream, peer.ip(), false, &log, &script).await {
                    if let Ok(tls) = acceptor.accept(plain).await {
                        session(tls, peer.ip(), true, &log, &script).await;
                    }
                }
            });
        }
    });
    (addr, log)
}

fn config(dir: &std::path::Path, dns: SocketAddr) -> Config {
    let mut config = Config { hostname: "mail.galkam.test".into(), data_dir: dir.to_path_buf(), ..Config::default() };
    config.dns.nameservers = vec![dns];
    config.messenger.source_address = Some("127.0.0.2".parse().unwrap());
    config.messenger.connect_timeout_secs = 2;
    config.messenger.command_timeout_secs = 5;
    // The fake home servers' certificates name home.test, whatever discovery says.
    config.messenger.peer_tls = "insecure".into();
    config
}

/// home.test's home server, the fake one on 127.0.0.3 (with no script), and the DNS that
/// finds it (SRV `_messenger._tcp.home.test` to mail.home.test).
async fn home_test(dir: &std::path::Path) -> (Log, TestDns) {
    let (addr, log) = fake_home("127.0.0.3", dir, Arc::default()).await;
    let dns = TestDns::builder()
        .srv("_messenger._tcp.home.test", 10, 1, addr.port(), "mail.home.test")
        .a("mail.home.test", "127.0.0.3")
        .start()
        .await;
    (log, dns)
}

/// Issue 19 item 1 (SPEC 8 "Trust between servers"): with `peer_tls = "verify"` a call
/// goes only inside TLS whose certificate verifies for the host name discovery gave. A
/// peer with a valid certificate for another name (a man in the middle) and a peer that
/// offers no STARTTLS get no command at all.
#[tokio::test]
async fn verified_tls_between_servers_refuses_another_name_and_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, log) = fake_home("127.0.0.3", dir.path(), Arc::default()).await;
    let plain = vouchmail_testkit::smtp_peer::Peer::builder("127.0.0.5").extensions(&["CERT"]).start();
    let dns = TestDns::builder()
        .srv("_messenger._tcp.right.test", 10, 1, addr.port(), "home.test")
        .srv("_messenger._tcp.wrong.test", 10, 1, addr.port(), "mail.wrong.test")
        .srv("_messenger._tcp.plain.test", 10, 1, plain.addr().port(), "mail.plain.test")
        .a("home.test", "127.0.0.3")
        .a("mail.wrong.test", "127.0.0.3")
        .a("mail.plain.test", "127.0.0.5")
        .start()
        .await;
    let mut verify = config(dir.path(), dns.addr());
    verify.messenger.peer_tls = "verify".into();
    verify.messenger.ca_file = Some(dir.path().join("tls").join("cert.pem"));
    let client = FederationClient::from_config(&verify).unwrap();
    let (reply, _) = client.call("right.test", "CERT a@right.test", SMALL_REPLY).await.unwrap();
    assert_eq!(reply.code, 550, "the certificate names the host discovery gave");
    assert!(log.lock().unwrap().iter().any(|s| s.tls && s.line == "CERT a@right.test"));
    let wrong = client.call("wrong.test", "CERT a@wrong.test", SMALL_REPLY).await.unwrap_err();
    assert!(wrong.is_temporary(), "{wrong}");
    assert!(!log.lock().unwrap().iter().any(|s| s.line.contains("wrong.test")), "nothing sent to another name");
    let cleartext = client.call("plain.test", "CERT a@plain.test", SMALL_REPLY).await.unwrap_err();
    assert!(cleartext.to_string().contains("STARTTLS"), "{cleartext}");
    assert!(!plain.commands().iter().any(|c| c.starts_with("CERT")), "no plaintext fallback: {:?}", plain.commands());
}

#[tokio::test]
async fn starttls_when_offered_then_ehlo_again_inside_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (log, dns) = home_test(dir.path()).await;
    let client = FederationClient::from_config(&config(dir.path(), dns.addr())).unwrap();
    let (reply, _) = client.call("home.test", "CERT a@home.test", SMALL_REPLY).await.unwrap();
    assert_eq!(reply.wire, b"550 5.1.1 No such address or published ID\r\n");
    let seen: Vec<(bool, String)> = log.lock().unwrap().iter().map(|s| (s.tls, s.line.clone())).collect();
    assert_eq!(
        seen,
        [
            (false, "EHLO mail.galkam.test".to_string()),
            (false, "STARTTLS".to_string()),
            (true, "EHLO mail.galkam.test".to_string()),
            (true, "CERT a@home.test".to_string()),
        ]
    );
    assert!(log.lock().unwrap().iter().all(|s| s.from == "127.0.0.2".parse::<IpAddr>().unwrap()));

    // With STARTTLS turned off the same peer is spoken to in the clear.
    let mut plain = config(dir.path(), dns.addr());
    plain.messenger.starttls = false;
    let client = FederationClient::from_config(&plain).unwrap();
    client.call("home.test", "CERT b@home.test", SMALL_REPLY).await.unwrap();
    let last = log.lock().unwrap().last().cloned().unwrap();
    assert_eq!((last.tls, last.line.as_str()), (false, "CERT b@home.test"));
}

#[tokio::test]
async fn a_pull_keeps_only_what_the_peer_may_publish_and_starts_again_when_serials_go_back() {
    let dir = tempfile::tempdir().unwrap();
    let script: Script = Arc::new(Mutex::new(VecDeque::from([
        // peer.test's own mailbox: kept. other.test's: its home server is elsewhere.
        // galkam.test is ours: never learnt from a peer.
        "250-1 ADD P1 ann@peer.test\r\n250-2 ADD P2 bob@other.test\r\n250-3 ADD P3 glen@galkam.test\r\n\
         250-4 ADD P4 cat@peer.test\r\n250 4\r\n"
            .to_string(),
        "250-5 DEL P4 cat@peer.test\r\n250 5\r\n".to_string(),
        // The peer's store started again: its highest serial is below the last one seen,
        // so the whole list is asked for again (ENTITIES 0).
        "250 1\r\n".to_string(),
        "250-1 ADD P9 dan@peer.test\r\n250 1\r\n".to_string(),
    ])));
    let (addr, log) = fake_home("127.0.0.3", dir.path(), Arc::clone(&script)).await;
    let dns = TestDns::builder()
        .srv("_messenger._tcp.peer.test", 10, 1, addr.port(), "mail.peer.test")
        .a("mail.peer.test", "127.0.0.3")
        .a("other.test", "127.0.0.9")
        .start()
        .await;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap());
    store.add_domain("galkam.test", SenderPolicy::REJECT).await.unwrap();
    let messenger = Messenger::new(&config(dir.path(), dns.addr()), Arc::clone(&store)).unwrap();
    store.note_messenger_peer("peer.test", true, None).await.unwrap();
    let learnt = || async {
        let mut pairs: Vec<(String, String)> =
            store.list_learnt_entities().await.unwrap().into_iter().map(|e| (e.published_id, e.mailbox)).collect();
        pairs.sort();
        pairs
    };
    let peer = || async { store.list_messenger_peers().await.unwrap().remove(0) };

    let outcome = messenger.pull_peer(&peer().await).await.unwrap();
    assert_eq!((outcome.added, outcome.dropped, outcome.highest), (2, 2, 4));
    assert_eq!(learnt().await, [("P1".into(), "ann@peer.test".into()), ("P4".into(), "cat@peer.test".into())]);
    assert_eq!(peer().await.last_serial, 4);

    let outcome = messenger.pull_peer(&peer().await).await.unwrap();
    assert_eq!((outcome.removed, outcome.highest), (1, 5));
    assert_eq!(learnt().await, [("P1".to_string(), "ann@peer.test".to_string())]);

    messenger.pull_peer(&peer().await).await.unwrap();
    assert_eq!(learnt().await, [("P9".to_string(), "dan@peer.test".to_string())], "learnt anew");
    assert_eq!(peer().await.last_serial, 1);
    let asked: Vec<String> =
        log.lock().unwrap().iter().filter(|s| s.line.starts_with("ENTITIES")).map(|s| s.line.clone()).collect();
    assert_eq!(asked, ["ENTITIES 0", "ENTITIES 4", "ENTITIES 5", "ENTITIES 0"]);

    // A peer that answers nonsense: the pull fails and nothing changes.
    script.lock().unwrap().clear();
    script.lock().unwrap().push_back("250-9 ADD bad\r\n250 9\r\n".into());
    assert!(messenger.pull_peer(&peer().await).await.is_err());
    assert_eq!(learnt().await, [("P9".to_string(), "dan@peer.test".to_string())]);
}

/// Issue 19 item 4, the Entity Index hijack: rogue.test publishes lrsupport's provider
/// number for a mailbox of its own, later, and re-sends it at every pull. The first binding
/// stays (CERT by the ID keeps answering with it), the claim is a conflict the operator
/// sees, and resolving it keeps the chosen binding.
#[tokio::test]
async fn a_later_claim_on_a_published_id_is_a_conflict_not_the_binding() {
    let dir = tempfile::tempdir().unwrap();
    let honest: Script =
        Arc::new(Mutex::new(VecDeque::from(["250-1 ADD 1234567F abc555@lrsupport.test\r\n250 1\r\n".to_string()])));
    let rogue: Script =
        Arc::new(Mutex::new(VecDeque::from(["250-7 ADD 1234567F aaa@rogue.test\r\n250 7\r\n".to_string()])));
    let (honest_addr, _) = fake_home("127.0.0.3", dir.path(), honest).await;
    let (rogue_addr, _) = fake_home("127.0.0.4", dir.path(), Arc::clone(&rogue)).await;
    let dns = TestDns::builder()
        .srv("_messenger._tcp.lrsupport.test", 10, 1, honest_addr.port(), "mail.lrsupport.test")
        .a("mail.lrsupport.test", "127.0.0.3")
        .srv("_messenger._tcp.rogue.test", 10, 1, rogue_addr.port(), "mail.rogue.test")
        .a("mail.rogue.test", "127.0.0.4")
        .start()
        .await;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap());
    let messenger = Messenger::new(&config(dir.path(), dns.addr()), Arc::clone(&store)).unwrap();
    store.note_messenger_peer("lrsupport.test", true, None).await.unwrap();
    let peer = |domain: &'static str| {
        let store = Arc::clone(&store);
        async move { store.list_messenger_peers().await.unwrap().into_iter().find(|p| p.domain == domain).unwrap() }
    };
    messenger.pull_peer(&peer("lrsupport.test").await).await.unwrap();
    store.note_messenger_peer("rogue.test", true, None).await.unwrap();
    // The rogue re-sends its claim at every pull (here: from serial 0 each time).
    for _ in 0..2 {
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        messenger.pull_peer(&peer("lrsupport.test").await).await.unwrap();
        let mut rogue_peer = peer("rogue.test").await;
        rogue_peer.last_serial = 0;
        messenger.pull_peer(&rogue_peer).await.unwrap();
    }
    let bound = |entries: Vec<vouchmail_store::LearntEntity>| {
        vouchmail_proto::messenger::bindings::first_learnt(&entries).map(|e| e.mailbox.clone())
    };
    let first = bound(store.learnt_entities_for_id("1234567F").await.unwrap());
    assert_eq!(first.as_deref(), Some("abc555@lrsupport.test"), "the first binding answers CERT by the ID");
    let conflicts = crate::rules::entity_index::conflicts(store.as_ref()).await.unwrap();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].bound.mailbox(), "abc555@lrsupport.test");
    assert_eq!(conflicts[0].claims.iter().map(|c| c.mailbox.as_str()).collect::<Vec<_>>(), ["aaa@rogue.test"]);
    // The operator confirms the binding: the claim is forgotten, and when the rogue sends it
    // again it is a conflict again, never the binding.
    assert_eq!(
        crate::rules::entity_index::resolve(store.as_ref(), "1234567f", "abc555@lrsupport.test").await.unwrap(),
        1
    );
    assert!(crate::rules::entity_index::conflicts(store.as_ref()).await.unwrap().is_empty());
    let mut rogue_peer = peer("rogue.test").await;
    rogue_peer.last_serial = 0;
    messenger.pull_peer(&rogue_peer).await.unwrap();
    let first = bound(store.learnt_entities_for_id("1234567F").await.unwrap());
    assert_eq!(first.as_deref(), Some("abc555@lrsupport.test"));
    assert_eq!(crate::rules::entity_index::conflicts(store.as_ref()).await.unwrap().len(), 1);
    let wrong = crate::rules::entity_index::resolve(store.as_ref(), "1234567F", "x@nowhere.test").await.unwrap_err();
    assert!(wrong.to_string().contains("neither"), "{wrong}");
}

#[tokio::test]
async fn rcram_to_a_home_server_without_x_rcram_verify_is_454_unless_legacy_mode() {
    use vouchmail_proto::smtp::session::RcramVerdict;
    let dir = tempfile::tempdir().unwrap();
    let (log, dns) = home_test(dir.path()).await;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap());
    let peer: SocketAddr = "127.0.0.9:4000".parse().unwrap();
    let mut link = super::rcram::RcramLink::default();
    let messenger = Messenger::new(&config(dir.path(), dns.addr()), Arc::clone(&store)).unwrap();
    let verdict = messenger.rcram_start(&mut link, "ann@home.test", peer).await;
    match verdict {
        RcramVerdict::Unavailable(reply) => assert!(reply.to_string().starts_with("454 4.7.0 "), "{reply}"),
        other => panic!("expected 454: {other:?}"),
    }
    assert!(!log.lock().unwrap().iter().any(|s| s.line.starts_with("AUTH")), "no AUTH sent");

    // legacy_rcram: the plain CRAM-MD5 exchange is proxied, lines unchanged.
    let mut legacy = config(dir.path(), dns.addr());
    legacy.messenger.legacy_rcram = true;
    let messenger = Messenger::new(&legacy, Arc::clone(&store)).unwrap();
    let verdict = messenger.rcram_start(&mut link, "ann@home.test", peer).await;
    assert_eq!(verdict, RcramVerdict::Relayed334 { wire: b"334 PDEyMy40NTZAaG9tZS50ZXN0Pg==\r\n".to_vec() });
    let ann = legacy_answer("ann@home.test", "s3cret");
    let verdict = messenger.rcram_answer(&mut link, "ann@home.test", &ann, peer).await;
    assert_eq!(verdict, RcramVerdict::Success);
    let lines: Vec<String> = log.lock().unwrap().iter().map(|s| s.line.clone()).collect();
    assert!(lines.contains(&"AUTH CRAM-MD5".to_string()) && lines.contains(&ann), "{lines:?}");
}

/// A user's CRAM-MD5 answer to the legacy home server's challenge, base64.
fn legacy_answer(user: &str, password: &str) -> String {
    let raw = vouchmail_proto::messenger::rcram::answer(user, password, LEGACY_CHALLENGE).unwrap();
    vouchmail_proto::sasl::encode_response(&raw)
}

/// Issue 19, item 3 (SPEC 8.2 step 6): in the legacy mode, mallory claims ceo's address
/// (`AUTH RCRAM-MD5 ceo@home.test`) and answers the plain challenge as herself. The home
/// server would take that answer (it is mallory's, and right); the verifier must not relay
/// it, and must not say she is ceo.
#[tokio::test]
async fn legacy_rcram_refuses_an_answer_for_another_user_without_relaying_it() {
    use vouchmail_proto::smtp::session::RcramVerdict;
    let dir = tempfile::tempdir().unwrap();
    let (log, dns) = home_test(dir.path()).await;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap());
    let peer: SocketAddr = "127.0.0.9:4000".parse().unwrap();
    let mut legacy = config(dir.path(), dns.addr());
    legacy.messenger.legacy_rcram = true;
    let messenger = Messenger::new(&legacy, Arc::clone(&store)).unwrap();
    let mallory = legacy_answer("mallory@home.test", "mine");
    // The home server itself takes mallory's answer, as mallory.
    assert_eq!(legacy_verdict(&mallory), "235 2.7.0 Authentication successful\r\n");
    let attacks = [
        ("ceo@home.test", mallory.clone()),
        // Not a CRAM-MD5 answer at all, and a near miss of the address.
        ("ceo@home.test", vouchmail_proto::sasl::encode_response(b"ceo@home.test")),
        ("ceo@home.test", legacy_answer("ceo@home.test.", "mine")),
    ];
    for (claimed, answer) in attacks {
        let mut link = super::rcram::RcramLink::default();
        let verdict = messenger.rcram_start(&mut link, claimed, peer).await;
        assert!(matches!(verdict, RcramVerdict::Relayed334 { .. }), "{verdict:?}");
        match messenger.rcram_answer(&mut link, claimed, &answer, peer).await {
            RcramVerdict::Refused(reply) => assert!(reply.to_string().starts_with("535 5.7.8 "), "{reply}"),
            other => panic!("{claimed} with {answer}: expected 535 5.7.8, got {other:?}"),
        }
        assert!(!log.lock().unwrap().iter().any(|s| s.line == answer), "{answer} was relayed");
    }
    // Her answer for her own address is relayed as before.
    let mut link = super::rcram::RcramLink::default();
    messenger.rcram_start(&mut link, "mallory@home.test", peer).await;
    assert_eq!(messenger.rcram_answer(&mut link, "mallory@home.test", &mallory, peer).await, RcramVerdict::Success);
}

/// Issue 19 item 4 (SPEC 8.4): a learnt peer that has not answered for 30 days is dropped
/// with every entry learnt from it when the pulls next list their peers; one that answered
/// within 30 days stays, and so does a configured peer, answered or not.
#[tokio::test]
async fn a_learnt_peer_unreachable_for_thirty_days_is_dropped_with_its_entries() {
    let dir = tempfile::tempdir().unwrap();
    let dns = TestDns::builder().start().await;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap());
    let messenger = Messenger::new(&config(dir.path(), dns.addr()), Arc::clone(&store)).unwrap();
    let now = crate::support::time::unix_now();
    let day = 86_400;
    for (peer, answered) in [("old.test", now - 31 * day), ("fresh.test", now - 29 * day)] {
        let id = format!("ID-{peer}");
        let pull = vouchmail_store::PeerPull {
            peer: peer.into(),
            add: vec![(id, format!("ann@{peer}"))],
            last_serial: 1,
            at: answered,
            ..Default::default()
        };
        store.apply_peer_pull(pull).await.unwrap();
    }
    store.note_messenger_peer("configured.test", true, None).await.unwrap();
    let mut kept: Vec<String> = messenger.peers_to_pull().await.into_iter().map(|p| p.domain).collect();
    kept.sort();
    assert_eq!(kept, ["configured.test", "fresh.test"]);
    let listed: Vec<String> = store.list_messenger_peers().await.unwrap().into_iter().map(|p| p.domain).collect();
    assert!(!listed.contains(&"old.test".to_string()), "{listed:?}");
    let learnt: Vec<String> = store.list_learnt_entities().await.unwrap().into_iter().map(|e| e.published_id).collect();
    assert_eq!(learnt, ["ID-fresh.test"], "the old peer's entries went with it");
}

/// SPEC 8.2 step 3 and 11: a verifier has at most 32 challenges outstanding on all the
/// nodes of one store together. 32 on node A leave none for it on node B; one answered
/// (or its connection gone) frees a place on both.
#[tokio::test]
async fn a_verifiers_outstanding_challenges_are_counted_across_nodes() {
    use vouchmail_proto::smtp::session::RcramVerdict;
    let dir = tempfile::tempdir().unwrap();
    let dns = TestDns::builder().a("mail.verifier.test", "127.0.0.9").start().await;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap());
    store.add_domain("galkam.test", SenderPolicy::REJECT).await.unwrap();
    let secrets =
        vouchmail_proto::sasl::Secrets::from_password("pencil", &[6; vouchmail_proto::sasl::SALTS_LEN]).unwrap();
    let account = vouchmail_store::NewAccount { address: "glen@galkam.test".into(), secrets, quota_bytes: 0 };
    store.add_account(account).await.unwrap();
    let node_a = Messenger::new(&config(dir.path(), dns.addr()), Arc::clone(&store)).unwrap();
    let node_b = Messenger::new(&config(dir.path(), dns.addr()), Arc::clone(&store)).unwrap();
    let limiter = crate::auth::limits::AuthLimiter::new(1000, 1000, std::time::Duration::from_secs(60));
    let caller = || super::rcram::Caller { ip: "127.0.0.9:4000".parse().unwrap(), chain: &[] };
    let mut links: Vec<super::rcram::RcramLink> = Vec::new();
    for n in 0..vouchmail_proto::messenger::rcram::MAX_OUTSTANDING_PER_VERIFIER {
        let mut link = super::rcram::RcramLink::default();
        let verdict =
            node_a.verify_start(&mut link, "glen@galkam.test", "mail.verifier.test", caller(), &limiter).await;
        assert!(matches!(verdict, RcramVerdict::Issued { .. }), "challenge {n}: {verdict:?}");
        links.push(link);
    }
    let mut link = super::rcram::RcramLink::default();
    let verdict = node_b.verify_start(&mut link, "glen@galkam.test", "mail.verifier.test", caller(), &limiter).await;
    assert!(matches!(verdict, RcramVerdict::Unavailable(_)), "node B issued a 33rd: {verdict:?}");
    // One connection ends on node A: its place is free on node B.
    links.pop();
    for _ in 0..100 {
        let verdict =
            node_b.verify_start(&mut link, "glen@galkam.test", "mail.verifier.test", caller(), &limiter).await;
        if matches!(verdict, RcramVerdict::Issued { .. }) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the freed place was not seen on node B");
}
