//! Our own IMAP client (`vouchmail_server::net::imap_client`) against the real server:
//! a mail client's session over plain TCP (LOGIN, SELECT, FETCH, SEARCH, STORE, APPEND with
//! a non-synchronizing and a synchronizing literal, LIST, STATUS, IDLE woken by a delivery,
//! LOGOUT) and one over implicit TLS. And `bench_imap` (ignored; bench/imap.sh runs it):
//! the same client timing vouchmail against Dovecot.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{env_number, SmtpConn, TestServer};
use vouchmail_proto::imap::client::{Response, Untagged};
use vouchmail_proto::sasl::Secrets;
use vouchmail_server::net::client_tls::{client_connector, server_name, ServerTrust};
use vouchmail_server::net::imap_client::{self, append_request, ImapClient};

const USER: &str = "user@local.test";
const PASSWORD: &str = "imap secret";

fn secrets() -> Secrets {
    static SECRETS: OnceLock<Secrets> = OnceLock::new();
    SECRETS
        .get_or_init(|| Secrets::from_password(PASSWORD, &[7; vouchmail_proto::sasl::SALTS_LEN]).expect("secrets"))
        .clone()
}

async fn server(count: usize) -> TestServer {
    let server = TestServer::start_with(|c| {
        c.imap.allow_plaintext_login = true;
        c.imap.watch_interval_ms = 100;
    })
    .await;
    server.store.set_secrets(USER, secrets()).await.expect("secrets");
    deliver(&server, 1, count).await;
    server
}

async fn deliver(server: &TestServer, first: usize, count: usize) {
    let (mut c, _) = SmtpConn::connect(server.mx()).await;
    c.cmd("EHLO client.test").await;
    for n in first..first + count {
        let body = format!(
            "From: a@remote.test\r\nTo: {USER}\r\nMessage-ID: <m{n}@remote.test>\r\nSubject: imap test {n}\r\n\r\nbody {n}\r\n"
        );
        assert_eq!(c.send_message("a@remote.test", &[USER], &body).await.code, 250);
    }
    c.cmd("QUIT").await;
}

/// SPEC 9 through our client: what a mail client does, and both ways of sending a literal
/// (RFC 7888: vouchmail has LITERAL-, so a small message goes `{n+}` and a large one waits
/// for the server's `+`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_walks_through_a_session() {
    let server = server(2).await;
    let tcp = tokio::net::TcpStream::connect(server.imap()).await.unwrap();
    let (mut imap, greeting) = ImapClient::connect(tcp).await.unwrap();
    assert_eq!(greeting.status, vouchmail_proto::imap::Status::Ok);
    let capabilities = imap.capability().await.unwrap();
    assert!(capabilities.iter().any(|c| c == "IDLE"), "{capabilities:?}");
    assert!(imap.has_capability("LITERAL-"), "{capabilities:?}");
    assert!(matches!(
        imap.login(USER, "wrong").await,
        Err(imap_client::ImapClientError::Server(c)) if c.status == vouchmail_proto::imap::Status::No
    ));
    imap.login(USER, PASSWORD).await.unwrap();

    let folders = imap.list("", "*").await.unwrap();
    let sent = folders.iter().find(|f| f.name == b"Sent").expect("Sent");
    assert!(sent.attributes.iter().any(|a| a == "\\Sent"), "{sent:?}");

    let inbox = imap.select("INBOX").await.unwrap();
    assert_eq!(inbox.exists, 2);
    assert!(inbox.uid_validity.is_some() && inbox.uid_next.is_some(), "{inbox:?}");
    assert!(!inbox.read_only);

    let headers = imap.fetch("1:*", "(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])").await.unwrap();
    assert_eq!(headers.len(), 2);
    assert_eq!(headers[1].body("HEADER.FIELDS (SUBJECT)"), Some(&b"Subject: imap test 2\r\n\r\n"[..]));
    assert!(headers.iter().all(|f| f.rfc822_size().unwrap() > 0 && f.flags() == Some(Vec::new())));
    let uid = headers[0].uid().unwrap();
    let body = imap.uid_fetch(&uid.to_string(), "(BODY[])").await.unwrap();
    assert!(body[0].body("").unwrap().ends_with(b"\r\nbody 1\r\n"), "{body:?}");
    assert_eq!(imap.search("UNSEEN").await.unwrap(), [2]);
    assert_eq!(imap.uid_search("SUBJECT \"test 2\"").await.unwrap(), [headers[1].uid().unwrap()]);
    let stored = imap.store("2", "+FLAGS (\\Flagged)").await.unwrap();
    assert!(stored.iter().all(|f| f.number == 2), "{stored:?}");
    let flags = imap.fetch("2", "(FLAGS)").await.unwrap();
    assert!(flags[0].flags().unwrap().contains(&"\\Flagged".to_string()), "{flags:?}");
    assert!(imap.store("1:2", "-FLAGS.SILENT (\\Seen)").await.unwrap().is_empty());

    // LITERAL- (RFC 7888 5): 4096 octets at most go without waiting.
    let small = b"From: user@local.test\r\nSubject: small\r\n\r\nshort\r\n".to_vec();
    let mut large = b"From: user@local.test\r\nSubject: large\r\n\r\n".to_vec();
    while large.len() < 10_000 {
        large.extend_from_slice(b"a line of the large message, sent after the server's go-ahead\r\n");
    }
    let appended = imap.append("INBOX", Some("(\\Seen)"), &small).await.unwrap();
    assert!(appended.is_some_and(|(validity, _)| Some(validity) == inbox.uid_validity), "{appended:?}");
    let reply = imap.command(&append_request("INBOX", imap.encoding, None, &large)).await.unwrap();
    let large_uid = reply.completion.code.as_ref().and_then(|c| c.append_uid()).expect("APPENDUID").1;
    // RFC 9051 6.3.12: the server SHOULD announce the new messages (EXISTS) at once; at
    // the latest a NOOP after the session's next look brings it.
    let mut seen: Vec<u32> = reply.untagged.iter().filter_map(Untagged::exists).collect();
    let started = Instant::now();
    while !seen.contains(&4) && started.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen.extend(imap.noop().await.unwrap().iter().filter_map(Untagged::exists));
    }
    assert!(seen.contains(&4), "EXISTS seen after the APPENDs: {seen:?}");
    let fetched = imap.uid_fetch(&large_uid.to_string(), "(RFC822.SIZE BODY.PEEK[])").await.unwrap();
    assert_eq!(fetched[0].body(""), Some(&large[..]));
    let status = imap.status("INBOX", "(MESSAGES UIDNEXT)").await.unwrap();
    assert_eq!(status.get("MESSAGES"), Some(4));

    // RFC 2177: a delivery wakes IDLE (SPEC 9: within a second); DONE ends it.
    let (idle, _) = imap.idle_start().await.unwrap();
    let started = Instant::now();
    deliver(&server, 3, 1).await;
    let mut woke = false;
    while started.elapsed() < Duration::from_secs(3) {
        if let Some(untagged) = imap.idle_wait(Duration::from_millis(500)).await.unwrap() {
            if untagged.exists() == Some(5) {
                woke = true;
                break;
            }
        }
    }
    assert!(woke, "no EXISTS in IDLE");
    imap.idle_done(&idle).await.unwrap();
    assert_eq!(imap.fetch("5", "(UID)").await.unwrap().len(), 1);
    imap.logout().await.unwrap();
}

/// Header sections are read from the store as a prefix of each message (64 KiB): one longer
/// than that is read whole, so FETCH and SEARCH of header fields still see all of it.
#[tokio::test]
async fn a_header_section_longer_than_the_prefix_read_is_seen_whole() {
    let server = server(0).await;
    let tcp = tokio::net::TcpStream::connect(server.imap()).await.unwrap();
    let (mut imap, _) = ImapClient::connect(tcp).await.unwrap();
    imap.login(USER, PASSWORD).await.unwrap();
    let mut header = b"From: user@local.test\r\nSubject: long header\r\n".to_vec();
    let mut n = 0;
    while header.len() < 70 * 1024 {
        header.extend_from_slice(format!("X-Filler-{n}: a field that makes the header section long\r\n").as_bytes());
        n += 1;
    }
    header.extend_from_slice(b"X-Last: needle\r\n\r\n");
    let message = [&header[..], b"body\r\n"].concat();
    let reply = imap.command(&append_request("INBOX", imap.encoding, None, &message)).await.unwrap();
    assert!(reply.completion.code.as_ref().and_then(|c| c.append_uid()).is_some(), "{reply:?}");
    imap.append("INBOX", None, b"From: user@local.test\r\nSubject: short\r\n\r\nbody\r\n").await.unwrap();
    imap.select("INBOX").await.unwrap();
    let fetched = imap.fetch("1:2", "(BODY.PEEK[HEADER])").await.unwrap();
    assert_eq!(fetched[0].body("HEADER"), Some(&header[..]));
    assert!(fetched[1].body("HEADER").is_some_and(|h| h.ends_with(b"Subject: short\r\n\r\n")), "{fetched:?}");
    assert_eq!(imap.search("HEADER X-Last needle").await.unwrap(), [1]);
    assert_eq!(imap.search("SUBJECT short").await.unwrap(), [2]);
    imap.logout().await.unwrap();
}

/// SPEC 8.3, 9: a FETCH of more bodies than the session's output buffers hold (1 MiB) goes
/// on while their `downloaded` events are written, and still sends none before its event is
/// recorded: every body arrives whole, and once the FETCH has answered, every event is in
/// the store, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_of_many_bodies_records_each_download_before_sending_it() {
    let server = server(0).await;
    let count = 48;
    let filler = "a line of a long body, so that the FETCH fills several output buffers\r\n".repeat(1000);
    let (mut c, _) = SmtpConn::connect(server.mx()).await;
    c.cmd("EHLO client.test").await;
    for n in 1..=count {
        let body = format!(
            "From: a@remote.test\r\nTo: {USER}\r\nMessage-ID: <big{n}@remote.test>\r\nSubject: big {n}\r\n\r\n{filler}end {n}\r\n"
        );
        assert_eq!(c.send_message("a@remote.test", &[USER], &body).await.code, 250);
    }
    c.cmd("QUIT").await;
    let tcp = tokio::net::TcpStream::connect(server.imap()).await.unwrap();
    let (mut imap, _) = ImapClient::connect(tcp).await.unwrap();
    imap.login(USER, PASSWORD).await.unwrap();
    imap.select("INBOX").await.unwrap();
    let fetched = imap.fetch("1:*", "(BODY.PEEK[])").await.unwrap();
    let events = server.store.list_tracking_events(0, 1000).await.unwrap();
    assert_eq!(fetched.len(), count);
    let total: usize = fetched.iter().map(|f| f.body("").map_or(0, <[u8]>::len)).sum();
    assert!(total > 3 << 20, "{total} octets: not several output buffers");
    for (n, message) in (1..=count).zip(&fetched) {
        let body = message.body("").expect("body");
        assert!(body.ends_with(format!("\r\n{filler}end {n}\r\n").as_bytes()), "message {n} is not whole");
    }
    let mut downloaded: Vec<&str> = events.iter().map(|e| e.message_id.as_str()).collect();
    downloaded.sort_unstable();
    downloaded.dedup();
    assert_eq!((events.len(), downloaded.len()), (count, count), "{events:?}");
    // Fetched again: no second event.
    imap.fetch("1:*", "(BODY.PEEK[])").await.unwrap();
    assert_eq!(server.store.list_tracking_events(0, 1000).await.unwrap().len(), count);
    imap.logout().await.unwrap();
}

/// RFC 8314 implicit TLS: the same client over imaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_over_imaps() {
    let server = TestServer::start().await;
    server.store.set_secrets(USER, secrets()).await.expect("secrets");
    deliver(&server, 1, 1).await;
    // The test server's certificate is self-signed.
    let (connector, presented) = client_connector(&ServerTrust::Insecure, None).unwrap();
    let tcp = tokio::net::TcpStream::connect(server.imaps()).await.unwrap();
    let (mut imap, _) = imap_client::connect_tls(tcp, &connector, server_name("mx.local.test").unwrap()).await.unwrap();
    assert!(presented.fingerprint().is_some());
    imap.login(USER, PASSWORD).await.unwrap();
    assert_eq!(imap.examine("INBOX").await.unwrap().exists, 1);
    imap.logout().await.unwrap();
}

// ------------------------------------------------------------------ benchmark

/// The benchmark's message `n` of about `size` octets: one in ten has `needle` in its
/// subject, one in seven `haystack` in its body (for SEARCH).
fn bench_message(n: usize, size: usize) -> Vec<u8> {
    let needle = if n.is_multiple_of(10) { " needle" } else { "" };
    let mut text = format!(
        "From: sender{k}@client.example\r\nTo: bench@bench.example\r\nSubject: bench message {n}{needle}\r\n\
         Date: Mon, 7 Feb 2026 21:52:25 +0000\r\nMessage-ID: <bench{n}@client.example>\r\n\r\n",
        k = n % 50
    );
    if n.is_multiple_of(7) {
        text.push_str("there is a haystack here\r\n");
    }
    let mut line = 0;
    while text.len() < size {
        text.push_str(&format!("line {line} of message {n}: the quick brown fox jumps over the lazy dog\r\n"));
        line += 1;
    }
    text.into_bytes()
}

type Conn = ImapClient<tokio::net::TcpStream>;

async fn bench_login(addr: &str, user: &str, password: &str) -> Conn {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("{addr}: {e}"));
    let (mut imap, _) = ImapClient::connect(tcp).await.unwrap();
    imap.login(user, password).await.unwrap_or_else(|e| panic!("{addr}: login: {e}"));
    imap
}

/// APPENDs messages `first..first+count`, 100 in flight at a time.
async fn bench_load(imap: &mut Conn, first: usize, count: usize, size: usize) {
    let mut n = first;
    while n < first + count {
        let batch = (first + count - n).min(100);
        for k in n..n + batch {
            let flags = if k.is_multiple_of(3) { Some("(\\Seen)") } else { None };
            imap.send(&append_request("INBOX", imap.encoding, flags, &bench_message(k, size)));
        }
        imap.flush().await.unwrap();
        let mut done = 0;
        while done < batch {
            match imap.next_response().await.unwrap() {
                Response::Done(c) => {
                    assert!(c.is_ok(), "APPEND: {c:?}");
                    done += 1;
                }
                Response::Untagged(_) => {}
                other => panic!("{other:?}"),
            }
        }
        n += batch;
    }
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    proc_field(pid, "status", "VmRSS:")
}

/// Pss of a process (its share of shared pages), in KiB.
fn pss_kib(pid: u32) -> u64 {
    proc_field(pid, "smaps_rollup", "Pss:")
}

fn proc_field(pid: u32, file: &str, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `root` and every process below it.
fn process_tree(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // The parent is the second field after the command name, which is in parentheses.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents.push((pid, ppid));
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(parents.iter().filter(|(_, p)| *p == parent).map(|(pid, _)| *pid));
        i += 1;
    }
    tree
}

/// (RSS, PSS) of a process tree, in KiB, and how many processes.
fn memory(root: u32) -> (u64, u64, usize) {
    let tree = process_tree(root);
    (tree.iter().map(|&p| rss_kib(p)).sum(), tree.iter().map(|&p| pss_kib(p)).sum(), tree.len())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One round of the timed operations on a fresh connection; the milliseconds of each,
/// and the SEARCH result sizes (to check both servers agree).
async fn bench_round(
    addr: &str,
    user: &str,
    password: &str,
    n: usize,
    bodies: usize,
    round: usize,
) -> (Vec<f64>, Vec<usize>) {
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
    let mut imap = bench_login(addr, user, password).await;
    let mut times = Vec::new();
    let t = Instant::now();
    let selected = imap.select("INBOX").await.unwrap();
    let headers = imap.fetch(&format!("1:{n}"), "(UID BODY.PEEK[HEADER])").await.unwrap();
    times.push(ms(t));
    assert_eq!(selected.exists as usize, n, "{addr}");
    assert_eq!(headers.len(), n, "{addr}");
    assert!(headers.iter().all(|f| f.body("HEADER").is_some_and(|h| h.starts_with(b"From: "))));
    // A different thousand each round: what a client downloading new mail fetches.
    let first = (round * bodies) % n.saturating_sub(bodies).max(1) + 1;
    let t = Instant::now();
    let fetched = imap.fetch(&format!("{first}:{}", first + bodies - 1), "(BODY.PEEK[])").await.unwrap();
    times.push(ms(t));
    assert_eq!(fetched.len(), bodies, "{addr}");
    assert!(fetched.iter().all(|f| f.body("").is_some_and(|b| b.len() > 1000)));
    let mut found = Vec::new();
    for criteria in ["SUBJECT \"needle\"", "TEXT \"haystack\"", "UNSEEN"] {
        let t = Instant::now();
        found.push(imap.search(criteria).await.unwrap().len());
        times.push(ms(t));
    }
    // Flags change every round: set, then clear.
    let action = if round.is_multiple_of(2) { "+FLAGS.SILENT (\\Flagged)" } else { "-FLAGS.SILENT (\\Flagged)" };
    let t = Instant::now();
    imap.store(&format!("1:{n}"), action).await.unwrap();
    times.push(ms(t));
    imap.logout().await.unwrap();
    (times, found)
}

/// `count` connections logged in, with INBOX selected and in IDLE; 32 set up at a time.
async fn idle_connections(addr: &str, user: &str, password: &str, count: usize) -> Vec<Conn> {
    let mut conns = Vec::with_capacity(count);
    let mut left = count;
    while left > 0 {
        let batch = left.min(32);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..batch {
            let (addr, user, password) = (addr.to_string(), user.to_string(), password.to_string());
            set.spawn(async move {
                let mut imap = bench_login(&addr, &user, &password).await;
                imap.select("INBOX").await.unwrap();
                imap.idle_start().await.unwrap();
                imap
            });
        }
        while let Some(imap) = set.join_next().await {
            conns.push(imap.expect("idle connection"));
        }
        left -= batch;
    }
    conns
}

/// Issue 23: bench/imap.sh starts vouchmail (release) and Dovecot with the same account
/// and runs this with their addresses; see the script for the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_imap() {
    let vm = std::env::var("IMAP_BENCH_VOUCHMAIL").expect("IMAP_BENCH_VOUCHMAIL");
    let dc = std::env::var("IMAP_BENCH_DOVECOT").expect("IMAP_BENCH_DOVECOT");
    let user = std::env::var("IMAP_BENCH_USER").expect("IMAP_BENCH_USER");
    let password = std::env::var("IMAP_BENCH_PASSWORD").expect("IMAP_BENCH_PASSWORD");
    let vm_pid: u32 = std::env::var("IMAP_BENCH_VOUCHMAIL_PID").ok().and_then(|p| p.parse().ok()).expect("pid");
    let dc_pid: u32 = std::env::var("IMAP_BENCH_DOVECOT_PID").ok().and_then(|p| p.parse().ok()).expect("pid");
    let n = env_number("N", 10_000);
    let bodies = env_number("BODIES", 1000).min(n);
    let repeat = env_number("REPEAT", 3);
    let size = env_number("MSG_LEN", 2048);
    let idle = env_number("IDLE_CONNS", 1000);
    let servers = [("vouchmail", vm.as_str()), ("dovecot", dc.as_str())];

    // The same messages in both, through the same client (APPEND, 100 in flight).
    for (name, addr) in servers {
        let mut imap = bench_login(addr, &user, &password).await;
        let have = imap.select("INBOX").await.unwrap().exists as usize;
        assert!(have <= n, "{name} already has {have} messages");
        let mode = imap.literal_mode();
        let t = Instant::now();
        bench_load(&mut imap, have + 1, n - have, size).await;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "BENCH imap load {name}: {} APPENDs of {size} octets in {secs:.1} s ({:.0}/s, literals {mode:?})",
            n - have,
            (n - have) as f64 / secs
        );
        assert_eq!(imap.select("INBOX").await.unwrap().exists as usize, n);
        imap.logout().await.unwrap();
    }

    let ops = [
        format!("SELECT + FETCH {n} headers (BODY.PEEK[HEADER])"),
        format!("FETCH {bodies} full bodies (BODY.PEEK[])"),
        "SEARCH SUBJECT \"needle\"".to_string(),
        "SEARCH TEXT \"haystack\"".to_string(),
        "SEARCH UNSEEN".to_string(),
        format!("STORE {n} +/-FLAGS.SILENT (\\Flagged)"),
    ];
    let mut times = [vec![Vec::new(); ops.len()], vec![Vec::new(); ops.len()]];
    let mut found = [Vec::new(), Vec::new()];
    // Warm-up: the page cache, each server's caches and indexes.
    for (_, addr) in servers {
        bench_round(addr, &user, &password, n, bodies, repeat).await;
    }
    for round in 0..repeat {
        // The order alternates, so neither side always runs on a warmer machine.
        let order = if round.is_multiple_of(2) { [0, 1] } else { [1, 0] };
        for i in order {
            let (t, f) = bench_round(servers[i].1, &user, &password, n, bodies, round).await;
            for (k, ms) in t.into_iter().enumerate() {
                times[i][k].push(ms);
            }
            found[i] = f;
        }
    }
    if found[0] == found[1] {
        println!("BENCH imap searches found {:?} of {n} in both", found[0]);
    } else {
        println!("BENCH imap searches DIFFER: vouchmail found {:?}, dovecot {:?} of {n}", found[0], found[1]);
    }
    for (k, op) in ops.iter().enumerate() {
        let (v, d) = (median(times[0][k].clone()), median(times[1][k].clone()));
        let ratio = d / v;
        let verdict = if ratio >= 1.0 { "met" } else { "NOT met" };
        println!(
            "BENCH imap {op}: vouchmail {v:.1} ms, dovecot {d:.1} ms; dovecot/vouchmail {ratio:.2} (target >= 1: {verdict})"
        );
    }

    // Memory per idle connection: logged in, INBOX selected, in IDLE.
    let mut per_conn = [0.0f64; 2];
    for (i, (name, addr)) in servers.iter().enumerate() {
        let root = if i == 0 { vm_pid } else { dc_pid };
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (rss0, pss0, procs0) = memory(root);
        let t = Instant::now();
        let conns = idle_connections(addr, &user, &password, idle).await;
        let setup = t.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (rss1, pss1, procs1) = memory(root);
        per_conn[i] = (rss1 as f64 - rss0 as f64) / idle as f64;
        println!(
            "BENCH imap memory {name}: {idle} idle connections (set up in {setup:.1} s): RSS {rss0} KiB -> {rss1} KiB \
             ({procs0} -> {procs1} processes), {:.1} KiB per connection; PSS {pss0} KiB -> {pss1} KiB, {:.1} KiB per connection",
            per_conn[i],
            (pss1 as f64 - pss0 as f64) / idle as f64,
        );
        drop(conns);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let ratio = per_conn[0] / per_conn[1];
    let verdict = if ratio <= 0.1 { "met" } else { "NOT met" };
    println!(
        "BENCH imap memory per idle connection: vouchmail {:.1} KiB, dovecot {:.1} KiB; vouchmail/dovecot {ratio:.3} (target <= 0.1: {verdict})",
        per_conn[0], per_conn[1]
    );
}
