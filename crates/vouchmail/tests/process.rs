//! The `vouchmail` binary as an operator runs it: `serve`, the admin CLI on the same store
//! while the server runs, SIGKILL under load, SIGTERM.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::deployment::{subjects_in_mailbox, Deployment};
use common::{binary, SmtpConn};

#[test]
fn first_start_creates_postmaster_and_cli_works_beside_the_server() {
    let d = Deployment::new();
    let (server, _addr, stdout) = d.serve();
    assert!(stdout.starts_with("Created postmaster@local.test with password "), "{stdout}");
    // Issue 9 item 10: a header row for people, --json for scripts.
    let (ok, out, _) = d.cli(&["domain", "list"], None);
    let lines: Vec<&str> = out.lines().collect();
    assert!(ok && lines.len() == 2, "{out}");
    assert!(
        lines[0].starts_with("DOMAIN ") && lines[0].contains(" POLICY ") && lines[0].ends_with("ETRN-HOST"),
        "{out}"
    );
    assert!(lines[1].starts_with("local.test ") && lines[1].contains(" accept "), "{out}");
    let domains = d.list(&["domain", "list"]);
    assert_eq!((domains[0]["domain"].as_str(), domains[0]["policy"].as_str()), (Some("local.test"), Some("accept")));
    assert_eq!(domains[0]["held_for"], serde_json::json!([]));
    let (ok, out, _) = d.cli(&["user", "add", "alice@local.test", "--password-stdin"], Some("secret\n"));
    assert!(ok, "{out}");
    // SPEC 9: every account has these folders.
    let folders = d.list(&["mailbox", "folders", "alice@local.test"]);
    let names: Vec<&str> = folders.iter().filter_map(|f| f["folder"].as_str()).collect();
    assert_eq!(names, ["Archive", "Drafts", "INBOX", "Junk", "Sent", "Tracking", "Trash"], "{folders:?}");
    assert!(folders.iter().all(|f| f["uid_next"] == 1 && f["messages"] == 0), "{folders:?}");
    // Bad input: one clear line, non-zero exit.
    for (args, expected) in [
        (vec!["user", "add", "alice@local.test", "--password-stdin"], "exists already"),
        (vec!["user", "add", "bob@nowhere.test", "--password-stdin"], "not a local domain"),
        (vec!["user", "add", "not an address", "--password-stdin"], "not a valid address"),
        (vec!["domain", "add", "bad domain"], "not a valid domain"),
        (vec!["domain", "add", "x.test", "--policy", "sometimes"], "unknown sender policy"),
        (vec!["domain", "add", "local.test"], "exists already"),
        (vec!["domain", "remove", "local.test"], "account"),
        (vec!["mailbox", "list", "ghost@local.test"], "not found"),
        (vec!["mailbox", "folders", "ghost@local.test"], "not found"),
        (vec!["mailbox", "list", "alice@local.test", "--folder", "Spam"], "unknown folder"),
        (vec!["queue", "show", "NOSUCHID"], "not found"),
        (vec!["alias", "add", "list@nowhere.test", "alice@local.test"], "not a local domain"),
        (
            vec!["domain", "policy", "local.test", "--forged", "bounce"],
            "--forged: unknown sender policy action 'bounce'",
        ),
        (vec!["domain", "policy", "nowhere.test", "--forged", "junk"], "no local domain nowhere.test"),
        (vec!["authkey", "verify", "alice@local.test", "short"], "64 characters"),
        (vec!["authkey", "show", "not an address"], "not a valid address"),
        (vec!["authkey", "rotate", "nobody@local.test"], "no user nobody@local.test"),
        (vec!["authkey", "set", "nobody@local.test", "--agi", "2h", "--avt", "1h"], "no user nobody@local.test"),
        (vec!["authkey", "set", "nosuch.example", "--agi", "2h", "--avt", "1h"], "no local domain nosuch.example"),
        (vec!["authkey", "dns", "nosuch.example"], "no local domain nosuch.example"),
        (vec!["admin", "token", "create", "bad name"], "token name"),
        (vec!["admin", "token", "revoke", "nobody"], "admin token nobody"),
    ] {
        let (ok, _, err) = d.cli(&args, Some("pw\n"));
        assert!(!ok, "{args:?} succeeded");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    // SPEC 12: a token is shown once; the list has names and times, never the token.
    let (ok, token, _) = d.cli(&["admin", "token", "create", "ops"], None);
    assert!(ok && token.starts_with("vmat_") && token.trim().len() == 48, "{token}");
    let (ok, _, err) = d.cli(&["admin", "token", "create", "ops"], None);
    assert!(!ok && err.contains("exists already"), "{err}");
    let tokens = d.list(&["admin", "token", "list"]);
    assert_eq!(
        (tokens.len(), tokens[0]["name"].as_str(), &tokens[0]["revoked"]),
        (1, Some("ops"), &serde_json::Value::Null)
    );
    let (ok, out, _) = d.cli(&["admin", "token", "revoke", "ops"], None);
    assert!(ok && out.contains("token ops revoked"), "{out}");
    assert!(d.list(&["admin", "token", "list"])[0]["revoked"].is_string());
    let (ok, out, _) = d.cli(&["domain", "add", "Strict.Test"], None);
    assert!(ok && out.contains("added domain strict.test (policy reject)"), "{out}");
    // SPEC 2: one case at a time; the other keeps its action.
    let (ok, out, _) = d.cli(&["domain", "policy", "strict.test", "--unauthenticated", "tag"], None);
    assert!(ok && out.contains("now has policy unauthenticated=junk,forged=reject"), "{out}");
    let (ok, out, _) = d.cli(&["domain", "policy", "strict.test", "--forged", "reject-notify-both"], None);
    assert!(ok && out.contains("unauthenticated=junk,forged=reject-notify-both"), "{out}");
    let strict = d.list(&["domain", "list"]).into_iter().find(|row| row["domain"] == "strict.test").unwrap();
    assert_eq!(strict["policy"], "unauthenticated=junk,forged=reject-notify-both");
    assert_eq!(
        (strict["unauthenticated"].as_str(), strict["forged"].as_str()),
        (Some("junk"), Some("reject-notify-both"))
    );
    // Nothing answers VERIFY here: a one-line error and exit 1.
    let key = "k".repeat(64);
    let (ok, _, err) = d.cli(&["authkey", "verify", "alice@local.test", &key, "--server", "127.0.0.1:9"], None);
    assert!(!ok && err.lines().count() == 1 && err.contains("no answer from 127.0.0.1:9"), "{err}");
    let (ok, out, _) = d.cli(&["user", "list"], None);
    assert!(ok && out.contains("alice@local.test") && out.contains("postmaster@local.test"), "{out}");
    assert!(out.starts_with("ADDRESS ") && out.lines().nth(1).is_some_and(|l| l.ends_with(" none")), "{out}");
    // Quota 0 means no quota, in what is set, said and listed.
    let (ok, out, _) = d.cli(&["user", "quota", "alice@local.test", "5000"], None);
    assert!(ok && out.contains("quota of alice@local.test is now 5000 bytes"), "{out}");
    let quota = |d: &Deployment| {
        let users = d.list(&["user", "list"]);
        users.into_iter().find(|u| u["address"] == "alice@local.test").map(|u| u["quota_bytes"].clone())
    };
    assert_eq!(quota(&d), Some(serde_json::json!(5000)));
    let (ok, out, _) = d.cli(&["user", "quota", "alice@local.test", "0"], None);
    assert!(ok && out.contains("alice@local.test has no quota now"), "{out}");
    assert_eq!(quota(&d), Some(serde_json::Value::Null));
    // Exit status (README): 0 done, 1 refused, 2 usage.
    assert_eq!(d.status(&["user", "list"]), Some(0));
    assert_eq!(d.status(&["user", "quota", "ghost@local.test", "0"]), Some(1));
    assert_eq!(d.status(&["user", "quota", "alice@local.test", "lots"]), Some(2));
    assert_eq!(d.status(&["user", "frobnicate"]), Some(2));
    // Issue 9 item 8: aliases and users.
    let refused = |args: &[&str], expected: &str| {
        let (ok, _, err) = d.cli(args, None);
        assert!(!ok && err.lines().count() == 1 && err.contains(expected), "{args:?}: {err}");
    };
    refused(&["alias", "add", "a1@local.test", "a2@local.test"], "a2@local.test is neither an account nor an alias");
    assert!(d.cli(&["alias", "add", "a1@local.test", "a2@local.test", "--allow-missing"], None).0);
    refused(
        &["alias", "add", "a2@local.test", "a1@local.test"],
        "alias loop: a2@local.test -> a1@local.test -> a2@local.test",
    );
    refused(&["alias", "add", "a3@local.test", "a3@local.test"], "alias loop");
    refused(
        &["alias", "remove", "a1@local.test", "alice@local.test"],
        "alice@local.test is not a target of a1@local.test",
    );
    assert!(d.cli(&["alias", "add", "team@local.test", "alice@local.test"], None).0);
    refused(&["user", "remove", "alice@local.test"], "still used by alias(es) team@local.test; pass --force");
    let (ok, out, _) = d.cli(&["user", "remove", "alice@local.test", "--force"], None);
    assert!(ok && out.contains("removed user alice@local.test and its use by alias(es) team@local.test"), "{out}");
    let (_, out, _) = d.cli(&["alias", "list"], None);
    assert!(out.starts_with("ALIAS ") && !out.contains("alice@local.test"), "{out}");
    // Held domains and catch-alls are named too.
    assert!(d.cli(&["user", "add", "carol@local.test", "--password-stdin"], Some("pw\n")).0);
    assert!(d.cli(&["domain", "catch-all", "local.test", "carol@local.test"], None).0);
    assert!(d.cli(&["domain", "add", "held2.test", "--held-for", "carol@local.test"], None).0);
    refused(
        &["user", "remove", "carol@local.test"],
        "still used by held domain(s) held2.test; catch-all of local.test; pass --force",
    );
    assert!(d.cli(&["user", "remove", "carol@local.test", "--force"], None).0);
    let local = d.list(&["domain", "list"]).into_iter().find(|row| row["domain"] == "local.test").unwrap();
    assert_eq!(local["catch_all"], serde_json::Value::Null);
    // An alias that other aliases point at is not removed from under them.
    assert!(d.cli(&["alias", "add", "a4@local.test", "a1@local.test"], None).0);
    refused(&["alias", "remove", "a1@local.test"], "a1@local.test is still used by alias(es) a4@local.test");
    let (ok, out, _) = d.cli(&["alias", "remove", "a1@local.test", "--force"], None);
    assert!(ok && out.contains("removed a1@local.test and its use by alias(es) a4@local.test"), "{out}");
    refused(
        &["user", "cert-unmap", "postmaster@local.test", "abc"],
        "certificate mapping 'abc' of postmaster@local.test",
    );
    // Issue 9 item 9: domains.
    refused(&["domain", "add", "example.org."], "leave out the trailing dot");
    refused(&["domain", "add", "my_domain.org"], "'_'");
    refused(&["domain", "add", "intranet"], "single label");
    refused(&["domain", "add", "192.0.2.1"], "--allow-unusual");
    let (ok, out, _) = d.cli(&["domain", "add", "intranet", "--allow-unusual", "--policy", "accept"], None);
    assert!(ok && out.contains("added domain intranet"), "{out}");
    let (ok, out, _) = d.cli(&["domain", "add", "Bücher.Example"], None);
    assert!(ok && out.contains("added domain xn--bcher-kva.example (bücher.example)"), "{out}");
    assert!(d.cli(&["user", "add", "jörg@bücher.example", "--password-stdin"], Some("pw\n")).0);
    let (_, out, _) = d.cli(&["user", "list"], None);
    assert!(out.contains("jörg@xn--bcher-kva.example"), "{out}");
    let (ok, out, _) = d.cli(&["domain", "add", "held.test", "--held-for", "postmaster@local.test"], None);
    assert!(ok && out.contains("(policy reject), held for postmaster@local.test: mail from the internet"), "{out}");
    server.stop();
}

#[test]
fn mailbox_and_queue_commands_show_delivered_and_queued_mail() {
    let d = Deployment::new();
    let (server, addr, _) = d.serve();
    assert!(d.cli(&["alias", "add", "team@local.test", "postmaster@local.test", "far@remote.test"], None).0);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (mut c, _) = SmtpConn::connect(addr).await;
        c.cmd("EHLO cli.test").await;
        let body = "From: Sender <s@remote.test>\r\nSubject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n\r\nhi\r\n";
        assert_eq!(c.send_message("s@remote.test", &["team@local.test"], body).await.code, 250);
    });
    let (ok, out, _) = d.cli(&["mailbox", "list", "postmaster@local.test"], None);
    assert!(ok && out.lines().count() == 2 && out.starts_with("ID "), "{out}");
    assert!(
        out.lines().nth(1).is_some_and(|l| l.contains(" INBOX ") && l.contains("  Sender <s@remote.test>  Grüße  ")),
        "{out}"
    );
    let rows = d.list(&["mailbox", "list", "postmaster@local.test"]);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0]["from"].as_str(), rows[0]["subject"].as_str()),
        (Some("Sender <s@remote.test>"), Some("Grüße"))
    );
    let id = rows[0]["id"].to_string();
    let (ok, shown, _) = d.cli(&["mailbox", "show", "postmaster@local.test", &id], None);
    assert!(
        ok && shown
            .replace("\r\n ", " ")
            .contains("Authentication-Results: mx.local.test; x-authkey=none header.from=s@remote.test")
            && shown.ends_with("hi\r\n")
    );
    let (ok, queue, _) = d.cli(&["queue", "list"], None);
    assert!(ok && queue.starts_with("QUEUE-ID ") && queue.contains("far@remote.test"), "{queue}");
    let queue = d.list(&["queue", "list"]);
    assert_eq!((queue.len(), queue[0]["recipient"].as_str()), (1, Some("far@remote.test")), "{queue:?}");
    assert_eq!(queue[0]["state"], "queued");
    let queue_id = queue[0]["queue_id"].as_str().unwrap().to_string();
    // SPEC 7.5: the forwarded copy keeps the sender's key fields and the mailbox copy gets
    // ours instead, so they are two messages (committed together): this one is far's only.
    let (ok, show, _) = d.cli(&["queue", "show", &queue_id], None);
    assert!(ok && !show.contains("postmaster@local.test") && show.contains("far@remote.test\tqueued"), "{show}");
    assert!(d.cli(&["queue", "delete", &queue_id], None).0);
    assert!(d.list(&["queue", "list"]).is_empty());
    // The delivered copy stays.
    assert_eq!(subjects_in_mailbox(&d, "postmaster@local.test").len(), 1);
    server.stop();
}

/// SPEC 5: a 250 means the message is on disk. Kill -9 the server in the middle of a
/// bounded load; after a restart every acknowledged message is in the mailbox exactly once.
#[test]
fn sigkill_under_load_loses_nothing_that_got_250() {
    let load = Load { sessions: 8, per_session: 400, kill_after: 150, new_connections: false, body_lines: 26 };
    let outcome = sigkill_under(&load);
    assert!(outcome.acknowledged >= 150, "load too slow: {}", outcome.acknowledged);
}

/// Issue 25: the same check under the inbound benchmark's load (`bench/crash.sh`: a release
/// build, `bench/inbound.sh`'s sessions and message size, a new connection per message and
/// connection reuse). Ignored in the suite.
#[test]
#[ignore]
fn bench_sigkill_under_benchmark_load() {
    let sessions = common::env_number("SESSIONS", 20);
    let kill_after = common::env_number("KILL_AFTER", 20_000);
    // bench/inbound.sh's MSG_LEN in lines of 78 octets (76 and CRLF).
    let body_lines = common::env_number("MSG_LEN", 4096) / 78;
    for new_connections in [true, false] {
        let per_session = 2 * kill_after / sessions;
        let load = Load { sessions, per_session, kill_after, new_connections, body_lines };
        let started = Instant::now();
        let outcome = sigkill_under(&load);
        println!(
            "BENCH crash {}: {sessions} sessions, {} octets a message: SIGKILL after {} acknowledged ({:.1} s); \
             after the restart {} stored, every acknowledged one exactly once, {} stored without their 250 (in flight)",
            if new_connections { "new connection per message" } else { "connection reuse" },
            body_lines * 78,
            outcome.acknowledged,
            started.elapsed().as_secs_f64(),
            outcome.stored,
            outcome.in_flight,
        );
        assert!(outcome.acknowledged >= kill_after, "load too slow: {}", outcome.acknowledged);
    }
}

/// A bounded SMTP load: `sessions` clients, each sending up to `per_session` messages of
/// `body_lines` lines to one mailbox, on one connection or a new one per message.
struct Load {
    sessions: usize,
    per_session: usize,
    kill_after: usize,
    new_connections: bool,
    body_lines: usize,
}

struct Outcome {
    acknowledged: usize,
    stored: usize,
    in_flight: usize,
}

/// Runs `load` against a fresh server, kills it with SIGKILL once `kill_after` messages
/// have their 250 (or after 60 s), restarts it, and asserts that every acknowledged message
/// is stored exactly once and at most one a session without its 250.
fn sigkill_under(load: &Load) -> Outcome {
    let d = Deployment::new();
    let (server, addr, _) = d.serve();
    assert!(d.cli(&["user", "add", "load@local.test", "--password-stdin"], Some("pw\n")).0);
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let tasks: Vec<_> = (0..load.sessions)
        .map(|client| {
            let acknowledged = Arc::clone(&acknowledged);
            let (per_session, new_connections, body_lines) = (load.per_session, load.new_connections, load.body_lines);
            runtime.spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut session = None;
                for n in 0..per_session {
                    if Instant::now() > deadline {
                        return;
                    }
                    if session.is_none() {
                        session = match open_session(addr).await {
                            Some(s) => Some(s),
                            None => return,
                        };
                    }
                    let Some(conn) = session.as_mut() else { return };
                    let subject = format!("load-{client}-{n}");
                    let body = format!(
                        "Subject: {subject}\r\n\r\n{}.\r\n",
                        format!("{}\r\n", "x".repeat(76)).repeat(body_lines)
                    );
                    let envelope = b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<load@local.test>\r\nDATA\r\n";
                    match conn.exchange(envelope, 3).await {
                        Some(codes) if codes == [250, 250, 354] => {}
                        _ => return,
                    }
                    match conn.exchange(body.as_bytes(), 1).await {
                        Some(codes) if codes == [250] => acknowledged.lock().unwrap().push(subject),
                        _ => return,
                    }
                    if new_connections {
                        if conn.exchange(b"QUIT\r\n", 1).await.is_none() {
                            return;
                        }
                        session = None;
                    }
                }
            })
        })
        .collect();
    // Kill once enough messages are acknowledged (bounded wait).
    let start = Instant::now();
    while acknowledged.lock().unwrap().len() < load.kill_after && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(server); // SIGKILL
    for task in tasks {
        runtime.block_on(task).unwrap();
    }
    let acknowledged: Vec<String> = acknowledged.lock().unwrap().clone();

    let (server, _, _) = d.serve();
    let stored = subjects_in_mailbox(&d, "load@local.test");
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for s in &stored {
        *counts.entry(s.as_str()).or_default() += 1;
    }
    for subject in &acknowledged {
        assert_eq!(
            counts.get(subject.as_str()).copied().unwrap_or(0),
            1,
            "{subject} acknowledged but stored {:?} times",
            counts.get(subject.as_str())
        );
    }
    assert!(counts.values().all(|&n| n == 1), "a message was stored twice");
    let acked: HashSet<&String> = acknowledged.iter().collect();
    // At most the messages in flight at the kill (one per client) are stored without their 250.
    let in_flight = stored.iter().filter(|s| !acked.contains(s)).count();
    assert!(in_flight <= load.sessions, "{in_flight} stored without a 250");
    server.stop();
    Outcome { acknowledged: acknowledged.len(), stored: stored.len(), in_flight }
}

/// A new SMTP session past its greeting and EHLO; None if the server is gone.
async fn open_session(addr: std::net::SocketAddr) -> Option<SmtpConn> {
    let (mut conn, greeting) = SmtpConn::try_connect(addr).await?;
    (greeting.code == 220 && conn.exchange(b"EHLO load.test\r\n", 1).await? == [250]).then_some(conn)
}

#[test]
fn sigterm_closes_idle_sessions_with_421_and_exits_cleanly() {
    let d = Deployment::new();
    let (mut server, addr, _) = d.serve();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (mut c, _) = runtime.block_on(SmtpConn::connect(addr));
    runtime.block_on(c.cmd("EHLO idle.test"));
    server.signal("TERM");
    let reply = runtime.block_on(c.read_reply()).expect("421 before close");
    assert_eq!(reply.status(), "421 4.3.2");
    server.stop();
}

/// Peak resident memory of a process (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn concurrent_large_messages_keep_memory_bounded() {
    // Issue 14: each session held its whole message in memory, so concurrent large
    // messages took concurrency × size. With spooling the peak stays far below that; the
    // full measurement (50 × 20 MB against that ceiling) is bench/large_messages.sh.
    const SESSIONS: usize = 16;
    const SIZE: usize = 8 * 1024 * 1024;
    let d = Deployment::new();
    let (server, addr, _) = d.serve();
    let pid = server.0.id();
    let before = peak_rss_kib(pid);
    let line = "0123456789 the quick brown fox jumps over the lazy dog 0123456789\r\n";
    let body: Vec<u8> = {
        let mut b = b"Subject: large\r\n\r\n".to_vec();
        while b.len() < SIZE {
            b.extend_from_slice(line.as_bytes());
        }
        b.extend_from_slice(b".\r\n");
        b
    };
    let body = Arc::new(body);
    let clients: Vec<_> = (0..SESSIONS)
        .map(|_| {
            let body = Arc::clone(&body);
            std::thread::spawn(move || {
                let stream = std::net::TcpStream::connect(addr).unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                let mut reply = || {
                    let mut line = String::new();
                    loop {
                        line.clear();
                        reader.read_line(&mut line).unwrap();
                        if line.as_bytes().get(3) != Some(&b'-') {
                            return line.clone();
                        }
                    }
                };
                reply();
                for command in
                    ["EHLO load.test", "MAIL FROM:<a@remote.test>", "RCPT TO:<postmaster@local.test>", "DATA"]
                {
                    writer.write_all(format!("{command}\r\n").as_bytes()).unwrap();
                    reply();
                }
                writer.write_all(&body).unwrap();
                let end = reply();
                writer.write_all(b"QUIT\r\n").unwrap();
                end
            })
        })
        .collect();
    for client in clients {
        let end = client.join().unwrap();
        assert!(end.starts_with("250 "), "{end}");
    }
    let grown_mib = (peak_rss_kib(pid).saturating_sub(before)) / 1024;
    let in_flight_mib = (SESSIONS * SIZE / (1024 * 1024)) as u64;
    eprintln!("peak RSS grew by {grown_mib} MiB for {in_flight_mib} MiB of concurrent message data");
    // Loose: a third of what holding every message would take.
    assert!(grown_mib < in_flight_mib / 3, "peak RSS grew by {grown_mib} MiB");
    assert_eq!(subjects_in_mailbox(&d, "postmaster@local.test").len(), SESSIONS);
    server.stop();
}

#[test]
fn the_store_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let d = Deployment::new();
    let (server, _addr, _) = d.serve();
    let data = d.config.parent().unwrap().join("data");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "data folder");
    for entry in std::fs::read_dir(&data).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let expected = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&path), expected, "{}", path.display());
    }
    assert!(data.join("vouchmail.db-wal").exists(), "the WAL was made and checked");
    server.stop();
}

#[test]
fn a_second_server_on_the_same_store_is_refused() {
    let d = Deployment::new();
    let (server, _addr, _) = d.serve();
    let out = Command::new(binary()).arg("--config").arg(&d.config).arg("serve").output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another vouchmail serve (pid "), "{stderr}");
    // The admin commands still work beside the running server.
    let (ok, out, err) = d.cli(&["domain", "list"], None);
    assert!(ok && out.contains("local.test"), "{out}{err}");
    server.stop();
}

#[test]
fn admin_commands_never_create_a_store_by_accident() {
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(binary())
        .current_dir(empty.path())
        .env_remove("VOUCHMAIL_CONFIG")
        .args(["domain", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no store at ./vouchmail-data/vouchmail.db; pass --config FILE"), "{stderr}");
    // With a config whose store is not made yet, the message says so rather than ask for one.
    let fresh = Deployment::new();
    let (ok, _, err) = fresh.cli(&["domain", "list"], None);
    assert!(!ok && err.contains("(the data_dir of ") && err.contains("create it with vouchmail init"), "{err}");
    assert!(!empty.path().join("vouchmail-data").exists(), "nothing was created");
    // VOUCHMAIL_CONFIG is read when --config is absent; init makes the store.
    let d = Deployment::new();
    let init = Command::new(binary()).env("VOUCHMAIL_CONFIG", &d.config).arg("init").output().unwrap();
    let stdout = String::from_utf8_lossy(&init.stdout);
    assert!(init.status.success() && stdout.contains("Created postmaster@local.test with password "), "{stdout}");
    let list = Command::new(binary()).env("VOUCHMAIL_CONFIG", &d.config).args(["domain", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("local.test"));
    // The first serve after init does not print a password again.
    let (server, _addr, stdout) = d.serve();
    assert!(!stdout.contains("password"), "{stdout}");
    server.stop();
}

#[test]
fn a_first_start_that_fails_on_its_config_keeps_the_password_for_the_next() {
    let d = Deployment::new();
    let good = std::fs::read_to_string(&d.config).unwrap();
    // A listener address that cannot be bound (not ours) fails the start.
    std::fs::write(&d.config, good.replace("mx = [\"127.0.0.1:0\"]", "mx = [\"192.0.2.1:25\"]")).unwrap();
    let out = Command::new(binary()).arg("--config").arg(&d.config).arg("serve").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen on 192.0.2.1:25"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("password"));
    std::fs::write(&d.config, good).unwrap();
    let (server, _addr, stdout) = d.serve();
    assert!(stdout.starts_with("Created postmaster@local.test with password "), "{stdout}");
    server.stop();
}

/// `user cert-map --cert FILE` maps the certificate's SHA-256 fingerprint; a file with no
/// PEM certificate is named in a one-line refusal.
#[test]
fn cert_map_takes_a_pem_file_and_refuses_one_without_a_certificate() {
    let d = Deployment::new();
    assert!(Command::new(binary()).arg("--config").arg(&d.config).arg("init").output().unwrap().status.success());
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["client.test".to_string()]).unwrap().self_signed(&key).unwrap();
    let dir = d.config.parent().unwrap();
    let pem = dir.join("client.pem");
    std::fs::write(&pem, cert.pem()).unwrap();
    use sha2::Digest;
    let expected: String = sha2::Sha256::digest(cert.der()).iter().map(|b| format!("{b:02x}")).collect();
    let (ok, out, err) = d.cli(&["user", "cert-map", "postmaster@local.test", "--cert", pem.to_str().unwrap()], None);
    assert!(ok && out.contains(&expected), "{out}{err}");
    let maps = d.list(&["user", "cert-maps"]);
    assert_eq!((maps[0]["kind"].as_str(), maps[0]["value"].as_str()), (Some("fingerprint"), Some(expected.as_str())));
    let bad = dir.join("bad.pem");
    std::fs::write(&bad, "not a certificate\n").unwrap();
    let (ok, _, err) = d.cli(&["user", "cert-map", "postmaster@local.test", "--cert", bad.to_str().unwrap()], None);
    assert!(!ok && err.lines().count() == 1 && err.contains("bad.pem: no PEM certificate"), "{err}");
}

/// Issue 9: a bad `tls.cert` (missing, or not PEM) is refused by `serve` and `init` with
/// exit 2 naming the key, before any store or account exists; the next good start prints
/// the postmaster password, once.
#[test]
fn a_first_start_with_a_bad_tls_cert_exits_2_and_keeps_the_password() {
    let d = Deployment::new();
    let good = std::fs::read_to_string(&d.config).unwrap();
    let dir = d.config.parent().unwrap().to_path_buf();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["mx.local.test".to_string()]).unwrap().self_signed(&key).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("junk.pem"), "not a certificate\n").unwrap();
    for (file, expected) in [
        ("missing.pem", format!("tls.cert: cannot read {}", dir.join("missing.pem").display())),
        ("junk.pem", format!("tls.cert: {} holds no PEM certificate", dir.join("junk.pem").display())),
    ] {
        std::fs::write(&d.config, format!("{good}[tls]\ncert = \"{file}\"\nkey = \"key.pem\"\n")).unwrap();
        for command in ["serve", "init"] {
            let (code, stdout, stderr) = d.refused(command);
            assert_eq!(code, Some(2), "{command} {file}: {stderr}");
            assert!(stderr.contains(&expected), "{command} {file}: {stderr}");
            assert!(!stdout.contains("password"), "{stdout}");
            assert!(!d.store_exists(), "{command} {file} made a store");
        }
    }
    std::fs::write(&d.config, format!("{good}[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n")).unwrap();
    let (server, _addr, stdout) = d.serve();
    assert!(stdout.starts_with("Created postmaster@local.test with password "), "{stdout}");
    server.stop();
    let (server, _addr, stdout) = d.serve();
    assert!(!stdout.contains("password"), "{stdout}");
    server.stop();
}

/// Issue 9: a relay host that the router could not parse is refused at load, exit 2,
/// naming the key.
#[test]
fn a_bad_relay_host_exits_2_naming_the_key() {
    let d = Deployment::new();
    let good = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, format!("{good}[outbound.relay]\nhost = \"relay.example:notaport\"\n")).unwrap();
    for command in ["serve", "init"] {
        let (code, stdout, stderr) = d.refused(command);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains("outbound.relay.host: 'relay.example:notaport' is not host[:port]"), "{stderr}");
        assert!(!stdout.contains("password") && !d.store_exists(), "{stdout}");
    }
}

/// Issue 9, RFC 5321 4.5.3.2: a timeout below the RFC minimum is logged as a warning naming
/// the key and the rule (`init` prints it); 0 is refused with exit 2.
#[test]
fn a_short_timeout_is_warned_of_and_zero_is_refused() {
    let d = Deployment::new();
    let good = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, format!("{good}[smtp]\ncommand_timeout_secs = 0\n")).unwrap();
    let (code, stdout, stderr) = d.refused("serve");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("smtp.command_timeout_secs must be at least 1"), "{stderr}");
    assert!(!stdout.contains("password") && !d.store_exists(), "{stdout}");
    std::fs::write(&d.config, format!("{good}[smtp]\ncommand_timeout_secs = 2\n")).unwrap();
    let warned = |line: &str| {
        line.contains("smtp.command_timeout_secs = 2 is below the RFC minimum of 300 seconds (RFC 5321 4.5.3.2.7")
    };
    let init = Command::new(binary()).arg("--config").arg(&d.config).arg("init").output().unwrap();
    let stderr = String::from_utf8_lossy(&init.stderr);
    assert!(init.status.success() && stderr.lines().any(warned), "{stderr}");
    let (server, _addr, _stdout, log) = d.serve_logging();
    assert!(log.iter().any(|l| l.contains("WARN") && warned(l)), "{log:#?}");
    server.stop();
}

/// SPEC 13, issue 22 item 4: `init` makes an Ed25519 and an RSA key for the first domain
/// and prints the records to publish; `domain dns` prints them again; `dkim new`, `rotate`
/// (the new key signs, the old stays published) and `retire` (only a key that no longer
/// signs) manage them.
#[test]
fn dkim_keys_are_made_at_first_start_and_rotated_from_the_cli() {
    let d = Deployment::new();
    let (ok, out, err) = d.cli(&["init"], None);
    assert!(ok, "{err}");
    assert!(out.contains("Publish these DNS records for local.test"), "{out}");
    for expected in [
        "local.test. 3600 IN TXT \"v=spf1 mx a:mx.local.test -all\"",
        "_dmarc.local.test.",
        "k=ed25519; p=",
        "k=rsa; p=",
    ] {
        assert!(out.contains(expected), "{expected} in {out}");
    }
    let keys = d.list(&["dkim", "list"]);
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().all(|k| k["active"] == true && k["domain"] == "local.test"), "{keys:?}");
    let (_, dns, _) = d.cli(&["domain", "dns", "local.test"], None);
    for key in &keys {
        let selector = key["selector"].as_str().unwrap();
        assert!(dns.contains(&format!("{selector}._domainkey.local.test. 3600 IN TXT")), "{dns}");
    }

    let (ok, out, err) =
        d.cli(&["dkim", "new", "local.test", "--selector", "extra", "--algorithm", "ed25519-sha256"], None);
    assert!(ok && out.contains("extra._domainkey.local.test. 3600 IN TXT \"v=DKIM1; k=ed25519; p="), "{out}{err}");
    let (ok, _, err) = d.cli(&["dkim", "new", "local.test", "--selector", "extra"], None);
    assert!(!ok && err.contains("extra"), "a selector twice: {err}");
    let (ok, _, err) = d.cli(&["dkim", "retire", "local.test", "extra"], None);
    assert!(!ok && err.contains("dkim rotate local.test"), "an active key retired: {err}");
    let (ok, out, err) = d.cli(&["dkim", "rotate", "local.test"], None);
    assert!(ok, "{err}");
    assert_eq!(out.matches("IN TXT").count(), 3, "one new key per active one: {out}");
    let keys = d.list(&["dkim", "list"]);
    assert_eq!(keys.iter().filter(|k| k["active"] == true).count(), 3, "{keys:?}");
    assert_eq!(keys.iter().filter(|k| k["active"] == false).count(), 3, "{keys:?}");
    assert!(d.cli(&["dkim", "retire", "local.test", "extra"], None).0);
    assert_eq!(d.list(&["dkim", "list"]).len(), 5);
    let (ok, _, err) = d.cli(&["dkim", "new", "nowhere.test"], None);
    assert!(!ok && err.contains("nowhere.test"), "{err}");
    // SPEC 3: what else a user may send as.
    assert!(d.cli(&["user", "add", "alice@local.test", "--password-stdin"], Some("pencil\n")).0);
    let (ok, out, _) = d.cli(&["user", "send-as", "alice@local.test", "news@local.test", "ceo@other.test"], None);
    assert!(ok && out.contains("may also send as news@local.test, ceo@other.test"), "{out}");
    let (ok, out, _) = d.cli(&["user", "send-as", "alice@local.test", "--clear"], None);
    assert!(ok && out.contains("sends only as itself and its aliases"), "{out}");
    // RFC 7489 7.2: nothing counted, nothing to report (sender_auth.rs sends one).
    let (ok, out, err) = d.cli(&["dmarc", "report", "--now"], None);
    assert!(ok && out.contains("no DMARC aggregate report to send"), "{out}{err}");
}

/// A self-signed certificate for `name`, made with openssl: (cert, key) paths.
fn certificate(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
        .arg("-subj")
        .arg(format!("/CN={name}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success());
    (cert, key)
}

/// The subject of the certificate a STARTTLS on `addr` shows (openssl s_client).
fn presented_subject(addr: std::net::SocketAddr) -> String {
    let out = Command::new("timeout")
        .args(["10", "openssl", "s_client", "-starttls", "smtp", "-connect"])
        .arg(addr.to_string())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().find(|l| l.starts_with("subject=")).unwrap_or_default().to_string()
}

/// SPEC 12 (issue 24 item 7): SIGHUP while a submission session is open applies a new
/// outbound route, a lower connection limit and a new certificate; one log line says so
/// and names what needs a restart; the open session finishes its message, which goes by
/// the new route.
#[test]
fn sighup_applies_a_route_a_limit_and_a_certificate_while_a_session_finishes() {
    use vouchmail_testkit::smtp_peer::Peer;
    let d = Deployment::new();
    let dir = d.config.parent().unwrap().to_path_buf();
    let (first_cert, first_key) = certificate(&dir, "first.test");
    let (second_cert, second_key) = certificate(&dir, "second.test");
    let (old_peer, new_peer) = (Peer::builder("127.0.0.1").start(), Peer::builder("127.0.0.1").start());
    let settings = |cert: &std::path::Path, key: &std::path::Path, peer: &Peer, per_ip: u32| {
        format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n[smtp]\nmax_connections_per_ip = {per_ip}\n\
             [outbound]\nretry_min_secs = 1\n[[outbound.route]]\ndomain = \"remote.test\"\nhost = \"127.0.0.1:{}\"\n",
            cert.display(),
            key.display(),
            peer.port()
        )
    };
    let base = std::fs::read_to_string(&d.config).unwrap().replace("[outbound]\nenabled = false\n", "");
    let base = base.replace("submission = []", "submission = [\"127.0.0.1:0\"]");
    // AUTH PLAIN before STARTTLS keeps the session simple; the certificate is read by
    // openssl's own STARTTLS.
    let base = format!("{base}[auth]\nallow_plaintext_passwords = true\n");
    d.configure(|_| format!("{base}{}", settings(&first_cert, &first_key, &old_peer, 10)));
    let (mut server, _, _, log) = d.serve_logging();
    let (ok, _, err) = d.cli(&["user", "add", "alice@local.test", "--password-stdin"], Some("secret\n"));
    assert!(ok, "{err}");
    let submission = common::deployment::listener_address(&log, "Submission");
    assert!(presented_subject(submission).contains("first.test"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // A session in the middle of its transaction when the signal comes.
    let mut session = runtime.block_on(async {
        let (mut c, _) = SmtpConn::connect(submission).await;
        c.cmd("EHLO client.test").await;
        let auth = c.cmd("AUTH PLAIN AGFsaWNlQGxvY2FsLnRlc3QAc2VjcmV0").await;
        assert_eq!(auth.code, 235, "{auth:?}");
        assert_eq!(c.cmd("MAIL FROM:<alice@local.test>").await.code, 250);
        c
    });
    d.configure(|_| format!("{base}{}", settings(&second_cert, &second_key, &new_peer, 1)));
    // A change that only a restart applies is named as such.
    d.configure(|text| text.replace("shutdown_grace_secs = 2", "shutdown_grace_secs = 3"));
    server.signal("HUP");
    let line = server.log_line("configuration reloaded", Duration::from_secs(10));
    for applied in ["tls certificate files read again", "smtp connection limits (", "outbound routes"] {
        assert!(line.contains(applied), "{applied}: {line}");
    }
    assert!(line.contains("needs a restart: shutdown_grace_secs"), "{line}");
    // The new limit: one connection per IP, and the open session is that one.
    let refused = runtime.block_on(async { SmtpConn::connect(submission).await.1 });
    assert_eq!(refused.code, 421, "{refused:?}");
    // The open session finishes; its message goes by the new route.
    runtime.block_on(async {
        assert_eq!(session.cmd("RCPT TO:<bob@remote.test>").await.code, 250);
        assert_eq!(session.cmd("DATA").await.code, 354);
        let sent = session.cmd("From: alice@local.test\r\nSubject: after the reload\r\n\r\nhello\r\n.").await;
        assert_eq!(sent.code, 250, "{sent:?}");
        session.cmd("QUIT").await;
    });
    let end = Instant::now() + Duration::from_secs(20);
    while new_peer.messages().is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!((new_peer.messages().len(), old_peer.messages().len()), (1, 0));
    assert!(new_peer.messages()[0].text().contains("after the reload"));
    // The next handshake shows the new certificate.
    assert!(presented_subject(submission).contains("second.test"));
    // A configuration that does not load changes nothing.
    d.configure(|text| format!("{text}\n[nonsense\n"));
    server.signal("HUP");
    server.log_line("the configuration does not load", Duration::from_secs(10));
    server.stop();
}
