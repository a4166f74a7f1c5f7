//! IMAP (SPEC 9) against the real server: Python's imaplib through the commands a mail
//! client uses (LIST with special use, SELECT, FETCH, STORE, SEARCH, CREATE, COPY, MOVE,
//! APPEND, EXPUNGE, STATUS) and over implicit TLS; and IDLE woken by a delivery and by a
//! POP3 DELE made elsewhere, read off the wire.

mod common;

use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use common::{SmtpConn, TestServer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use vouchmail_proto::sasl::Secrets;
use vouchmail_store::{Folder, TrackingKind};

const USER: &str = "user@local.test";
const PASSWORD: &str = "imap secret";
const PYTHON: &str = "/usr/bin/python3";

fn secrets() -> Secrets {
    static SECRETS: OnceLock<Secrets> = OnceLock::new();
    SECRETS
        .get_or_init(|| Secrets::from_password(PASSWORD, &[7; vouchmail_proto::sasl::SALTS_LEN]).expect("secrets"))
        .clone()
}

/// A server whose user has a password and `count` messages in INBOX; LOGIN allowed in
/// the clear (loopback), as `imap.allow_plaintext_login` lets an operator.
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

async fn python(script: &str, args: &[String]) -> serde_json::Value {
    let (script, args) = (script.to_string(), args.to_vec());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(PYTHON)
            .arg("-c")
            .arg(&script)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("python3")
    })
    .await
    .unwrap();
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

const CLIENT: &str = r#"
import imaplib, json, re, ssl, sys
port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
out = {}
m = imaplib.IMAP4("127.0.0.1", port, timeout=10)
out["capability"] = list(m.capabilities)
m.login(user, password)
typ, data = m.list()
out["list"] = [d.decode() for d in data]
typ, data = m.select("INBOX")
out["exists"] = int(data[0])
out["uidvalidity"] = m.untagged_responses.get("UIDVALIDITY", [b"0"])[0].decode()
typ, data = m.fetch("1:*", "(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
out["headers"] = [d[1].decode().strip() for d in data if isinstance(d, tuple)]
typ, data = m.uid("FETCH", "1", "(BODY[])")
out["body"] = data[0][1].decode()
typ, data = m.fetch("1", "(FLAGS)")
out["flags_after_body"] = data[0].decode()
typ, data = m.store("2", "+FLAGS", "(\\Flagged $Work)")
out["store"] = data[0].decode()
typ, data = m.search(None, "UNSEEN")
out["unseen"] = data[0].decode()
out["create"] = m.create("Work")[0]
typ, data = m.uid("COPY", "1", "Work")
out["copy"] = [typ, m.untagged_responses.pop("COPYUID", [b""])[-1].decode()]
typ, data = m.uid("MOVE", "2", "Work")
out["move"] = typ
typ, data = m.status("Work", "(MESSAGES UIDNEXT UNSEEN)")
out["status_work"] = data[0].decode()
message = b"From: user@local.test\r\nSubject: appended\r\n\r\ndraft text\r\n"
typ, data = m.append("Drafts", "(\\Draft)", '"06-Dec-2026 12:00:00 +0000"', message)
out["append"] = [typ, data[0].decode()]
typ, data = m.select("Drafts")
out["select_drafts"] = [typ, [d.decode() for d in data]]
typ, data = m.fetch("1", "(FLAGS INTERNALDATE BODY[])")
out["draft"] = [d.decode() if isinstance(d, bytes) else [x.decode() for x in d] for d in data]
m.select("Work")
m.store("1", "+FLAGS", "(\\Deleted)")
typ, data = m.expunge()
out["expunge"] = [d.decode() for d in data if d]
typ, data = m.select("Work")
out["work_exists"] = int(data[0])
typ, data = m.select("Nowhere")
out["nowhere"] = typ
out["logout"] = m.logout()[0]
print(json.dumps(out))
"#;

/// SPEC 9 through imaplib: the folders of SPEC 9 with their special uses; FETCH of headers
/// without setting \Seen, then of a whole body that sets it and records `downloaded`
/// (SPEC 8.3); STORE, SEARCH, CREATE, UID COPY and MOVE (COPYUID), STATUS, APPEND with
/// flags and internal date (APPENDUID), EXPUNGE, and NO for a folder that does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imaplib_walks_through_a_mail_clients_commands() {
    let server = server(2).await;
    let port = server.imap().port().to_string();
    let out = python(CLIENT, &[port, USER.into(), PASSWORD.into()]).await;
    let capability: Vec<&str> = out["capability"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    for wanted in ["IMAP4REV1", "IMAP4REV2", "IDLE", "UIDPLUS", "MOVE", "SPECIAL-USE", "CONDSTORE", "STARTTLS"] {
        assert!(capability.contains(&wanted), "{wanted} in {capability:?}");
    }
    let list: Vec<&str> = out["list"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    let folders = [
        ("INBOX", ""),
        ("Junk", "\\Junk"),
        ("Sent", "\\Sent"),
        ("Drafts", "\\Drafts"),
        ("Trash", "\\Trash"),
        ("Archive", "\\Archive"),
        ("Tracking", ""),
    ];
    for (name, special_use) in folders {
        let entry = list
            .iter()
            .find(|l| l.ends_with(&format!("\"/\" \"{name}\"")))
            .unwrap_or_else(|| panic!("{name}: {list:?}"));
        assert!(entry.contains(special_use), "{entry}");
    }
    assert_eq!(out["exists"], 2);
    let headers = out["headers"].to_string();
    assert!(headers.contains("imap test 1") && headers.contains("imap test 2"), "{headers}");
    assert!(out["body"].as_str().unwrap().contains("body 1"), "{out}");
    assert!(out["flags_after_body"].as_str().unwrap().contains("\\Seen"), "{out}");
    assert!(out["store"].as_str().unwrap().contains("\\Flagged"), "{out}");
    assert_eq!(out["unseen"], "2");
    assert_eq!(out["create"], "OK");
    let validity = server.store.list_folders(USER).await.unwrap().into_iter().find(|f| f.name == "Work").unwrap();
    assert_eq!(out["copy"], serde_json::json!(["OK", format!("{} 1 1", validity.uid_validity)]));
    assert_eq!(out["move"], "OK");
    assert!(out["status_work"].as_str().unwrap().contains("MESSAGES 2"), "{out}");
    assert_eq!(out["append"][0], "OK");
    assert!(out["append"][1].as_str().unwrap().contains("APPENDUID"), "{out}");
    assert_eq!(out["select_drafts"], serde_json::json!(["OK", ["1"]]));
    let draft = out["draft"][0].to_string();
    assert!(draft.contains("\\\\Draft") && draft.contains(" 6-Dec-2026 12:00:00 +0000"), "{draft}");
    assert!(draft.contains("draft text"), "{draft}");
    assert_eq!(out["expunge"], serde_json::json!(["1"]));
    assert_eq!(out["work_exists"], 1);
    assert_eq!(out["nowhere"], "NO");
    assert_eq!(out["logout"], "BYE");
    // The store agrees: INBOX has message 1 only (2 moved), Work one, Drafts one.
    let folders = server.store.list_folders(USER).await.unwrap();
    let count = |name: &str| folders.iter().find(|f| f.name == name).map(|f| f.messages);
    assert_eq!((count("INBOX"), count("Work"), count("Drafts")), (Some(1), Some(1), Some(1)));
    // SPEC 8.3, 9: the whole-body FETCH recorded `downloaded`, once.
    let events = server.store.list_tracking_events(0, 100).await.unwrap();
    let downloaded =
        events.iter().filter(|e| e.kind == TrackingKind::Downloaded && e.message_id == "<m1@remote.test>").count();
    assert_eq!(downloaded, 1, "{events:?}");
}

/// RFC 8314: imaps speaks TLS from the first byte, and LOGIN works there without the
/// operator's clear-text permission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imaps_takes_logins_over_tls_and_the_clear_port_refuses_them() {
    let server = TestServer::start().await;
    server.store.set_secrets(USER, secrets()).await.expect("secrets");
    deliver(&server, 1, 1).await;
    let script = r#"
import imaplib, json, ssl, sys
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4_SSL("127.0.0.1", int(sys.argv[1]), ssl_context=context)
m.login(sys.argv[3], sys.argv[4])
typ, data = m.select("INBOX")
clear = imaplib.IMAP4("127.0.0.1", int(sys.argv[2]))
try:
    clear.login(sys.argv[3], sys.argv[4])
    refused = False
except imaplib.IMAP4.error:
    refused = True
print(json.dumps({"exists": int(data[0]), "logindisabled": "LOGINDISABLED" in clear.capabilities, "refused": refused}))
"#;
    let args = [server.imaps().port().to_string(), server.imap().port().to_string(), USER.into(), PASSWORD.into()];
    let out = python(script, &args).await;
    assert_eq!(out, serde_json::json!({"exists": 1, "logindisabled": true, "refused": true}));
}

/// A line-based IMAP client for IDLE, which imaplib lacks.
struct Lines {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Lines {
    async fn connect(server: &TestServer) -> Lines {
        let (read, writer) = TcpStream::connect(server.imap()).await.unwrap().into_split();
        let mut lines = Lines { reader: BufReader::new(read), writer };
        assert!(lines.line().await.starts_with("* OK"));
        lines
    }

    async fn line(&mut self) -> String {
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(5), self.reader.read_line(&mut line)).await;
        assert!(matches!(read, Ok(Ok(n)) if n > 0), "no line within 5 s");
        line
    }

    /// Sends a line and reads until one starting with `until`; the lines read.
    async fn send(&mut self, command: &str, until: &str) -> Vec<String> {
        self.writer.write_all(format!("{command}\r\n").as_bytes()).await.unwrap();
        self.until(until).await
    }

    async fn until(&mut self, prefix: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line().await;
            let done = line.starts_with(prefix);
            lines.push(line);
            if done {
                return lines;
            }
        }
    }
}

/// RFC 2177 and SPEC 9: a session in IDLE hears of a message delivered meanwhile (EXISTS)
/// and of a message deleted by POP3 elsewhere (EXPUNGE), each within a second; DONE ends
/// IDLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_wakes_for_new_mail_and_a_pop3_deletion() {
    let server = server(2).await;
    let mut imap = Lines::connect(&server).await;
    imap.send(&format!("a LOGIN {USER} \"{PASSWORD}\""), "a ").await;
    let selected = imap.send("b SELECT INBOX", "b ").await;
    assert!(selected.iter().any(|l| l.starts_with("* 2 EXISTS")), "{selected:?}");
    assert!(imap.send("c IDLE", "+").await.last().unwrap().starts_with("+"));
    let started = std::time::Instant::now();
    deliver(&server, 3, 1).await;
    let woke = imap.until("* 3 EXISTS").await;
    assert!(started.elapsed() < Duration::from_secs(2), "{woke:?} after {:?}", started.elapsed());
    // POP3 elsewhere deletes message 1 (its lock is POP3's own).
    let entries = server.store.list_mailbox(USER, Some(Folder::Inbox)).await.unwrap();
    let started = std::time::Instant::now();
    assert_eq!(server.store.delete_mailbox_entries(USER, &[entries[0].id]).await.unwrap(), 1);
    let woke = imap.until("* 1 EXPUNGE").await;
    assert!(started.elapsed() < Duration::from_secs(2), "{woke:?}");
    let done = imap.send("DONE", "c ").await;
    assert!(done.last().unwrap().starts_with("c OK"), "{done:?}");
    let fetched = imap.send("d FETCH 1:* (UID)", "d ").await;
    assert_eq!(fetched.iter().filter(|l| l.starts_with("* ")).count(), 2, "{fetched:?}");
}

/// A tracking record (SPEC 8.3) about a message `user` sent, as NOTIFY stores it.
fn record(n: u32) -> vouchmail_proto::messenger::tracking::Record {
    vouchmail_proto::messenger::tracking::Record {
        timestamp: 1_796_119_200 + i64::from(n),
        message_id: format!("<sent{n}@local.test>"),
        sender: USER.into(),
        recipient: format!("reader{n}@remote.test"),
        event: vouchmail_proto::messenger::tracking::Event::Downloaded,
        reporting_server: "mx.remote.test".into(),
    }
}

/// SPEC 9: the Tracking folder is read-only and holds one text/csv message per tracking
/// record; its messages can be copied out; IDLE there hears of a new record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tracking_folder_shows_each_record_as_a_csv_message() {
    let server = server(0).await;
    let now = vouchmail_server::support::time::unix_now();
    for n in 1..=2 {
        server.store.store_notified_record(record(n), now).await.expect("stored");
    }
    let mut imap = Lines::connect(&server).await;
    imap.send(&format!("a LOGIN {USER} \"{PASSWORD}\""), "a ").await;
    let selected = imap.send("b SELECT Tracking", "b ").await;
    assert!(selected.iter().any(|l| l.starts_with("* 2 EXISTS")), "{selected:?}");
    assert!(selected.last().unwrap().starts_with("b OK [READ-ONLY]"), "{selected:?}");
    let fetched = imap.send("c FETCH 1:* (UID FLAGS BODY[])", "c ").await.concat();
    assert!(fetched.contains("Content-Type: text/csv; charset=utf-8; header=present"), "{fetched}");
    assert!(fetched.contains("Subject: downloaded by reader2@remote.test"), "{fetched}");
    assert!(
        fetched.contains(
            "\r\n2026-12-01T10:00:01Z,<sent1@local.test>,user@local.test,reader1@remote.test,downloaded,mx.remote.test\r\n"
        ),
        "{fetched}"
    );
    assert!(fetched.contains("FLAGS (\\Seen)"), "{fetched}");
    // Nothing changes there; a copy elsewhere is the user's own message.
    assert!(imap.send("d STORE 1 +FLAGS (\\Flagged)", "d ").await.last().unwrap().starts_with("d NO"));
    let copied = imap.send("e COPY 2 Archive", "e ").await;
    assert!(copied.last().unwrap().starts_with("e OK [COPYUID "), "{copied:?}");
    let (_, archived) = server.store.folder_messages(USER, "Archive").await.unwrap().unwrap();
    assert_eq!(archived.len(), 1);
    let (_, bytes) = server.store.get_mailbox_message(USER, archived[0].entry_id).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&bytes).contains("<sent2@local.test>,user@local.test,reader2@remote.test"));
    // No `downloaded` record of a record: the folder's messages are not deliveries.
    assert!(server.store.list_tracking_events(0, 100).await.unwrap().is_empty());
    // A record arriving while the client is in IDLE shows at once.
    assert!(imap.send("f IDLE", "+").await.last().unwrap().starts_with("+"));
    server.store.store_notified_record(record(3), now).await.expect("stored");
    imap.until("* 3 EXISTS").await;
    assert!(imap.send("DONE", "f ").await.last().unwrap().starts_with("f OK"));
    let status = imap.send("g STATUS Tracking (MESSAGES UNSEEN)", "g ").await;
    assert!(status[0].contains("MESSAGES 3 UNSEEN 0"), "{status:?}");
}

/// SPEC 9 limits from the configuration: an APPEND larger than `imap.max_append_size` is
/// refused before its literal is sent (RFC 9051 7.1 TOOBIG), a line longer than
/// `imap.max_line_length` gets BAD, and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_limits_refuse_large_appends_and_lines_and_the_session_survives() {
    let server = TestServer::start_with(|c| {
        c.imap.allow_plaintext_login = true;
        c.imap.max_append_size = 100;
        c.imap.max_line_length = 8192;
    })
    .await;
    server.store.set_secrets(USER, secrets()).await.expect("secrets");
    let mut imap = Lines::connect(&server).await;
    imap.send(&format!("a LOGIN {USER} \"{PASSWORD}\""), "a ").await;
    let refused = imap.send("b APPEND INBOX {200}", "b ").await;
    assert!(refused.last().unwrap().contains("[TOOBIG]"), "{refused:?}");
    let long = imap.send(&format!("c NOOP {}", "x".repeat(9000)), "").await;
    assert!(long.last().unwrap().contains(" BAD "), "{long:?}");
    // A message within the limit goes in; appended to the selected folder, it is
    // announced before the tagged OK (RFC 9051 6.3.12).
    assert!(imap.send("s SELECT INBOX", "s ").await.iter().any(|l| l.starts_with("* 0 EXISTS")));
    assert!(imap.send("d APPEND INBOX {11}", "+").await.last().unwrap().starts_with("+"));
    let appended = imap.send("Subject: x\r", "d ").await;
    assert!(appended.last().unwrap().starts_with("d OK"), "{appended:?}");
    assert!(appended.iter().any(|l| l.starts_with("* 1 EXISTS")), "{appended:?}");
    let (_, messages) = server.store.folder_messages(USER, "INBOX").await.unwrap().unwrap();
    assert_eq!(messages.len(), 1);
}
