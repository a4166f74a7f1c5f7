//! IMAP (SPEC 9) against real third-party clients, each as its users run it: mbsync
//! (isync) and offlineimap syncing every folder both ways with a Maildir, neomutt driven
//! through its screen in tmux moving a message out of Junk, and fetchmail fetching INBOX.
//! Each client speaks to the server over TLS where it can, verifying the server's
//! certificate against a test CA, as it would on the internet. A missing client fails its
//! test: scripts/test.sh installs them.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use common::{tool, SmtpConn, TestServer};
use vouchmail_proto::sasl::Secrets;
use vouchmail_store::{AppendedMessage, FlagChange, FlagOperation, FolderMessage, SenderPolicy, TrackingKind};
use vouchmail_testkit::ca::TestCa;

const USER: &str = "user@local.test";
const PASSWORD: &str = "imap secret";
/// Every external client runs under `timeout`, so a client that hangs on a server bug fails
/// its test instead of stalling the suite.
const CLIENT_TIMEOUT_SECS: &str = "60";

fn secrets() -> Secrets {
    static SECRETS: OnceLock<Secrets> = OnceLock::new();
    SECRETS
        .get_or_init(|| Secrets::from_password(PASSWORD, &[7; vouchmail_proto::sasl::SALTS_LEN]).expect("secrets"))
        .clone()
}

/// A test server whose certificate a test CA issued for `localhost`, the name the clients
/// connect to (mbsync checks DNS names only, not IP addresses), and the folder the CA's
/// `ca.pem` is in.
struct Fixture {
    server: TestServer,
    dir: tempfile::TempDir,
}

impl Fixture {
    async fn start() -> Fixture {
        Fixture::start_with(|_| {}).await
    }

    async fn start_with(adjust: impl FnOnce(&mut vouchmail_server::config::Config)) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa::new(&dir.path().join("ca"), "vouchmail IMAP clients test CA");
        let issued = ca.issue(&["localhost", "127.0.0.1"]);
        let server = TestServer::start_with(|c| {
            c.tls.cert = Some(issued.cert.clone());
            c.tls.key = Some(issued.key.clone());
            // IDLE-capable clients hear of changes made elsewhere quickly.
            c.imap.watch_interval_ms = 100;
            adjust(c);
        })
        .await;
        server.store.set_secrets(USER, secrets()).await.expect("secrets");
        Fixture { server, dir }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca").join("ca.pem")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn imaps_port(&self) -> u16 {
        self.server.imaps().port()
    }

    /// Delivers messages over the MX from an unauthenticated internet sender: to INBOX
    /// under the domain's `accept` policy, to Junk under `junk` (SPEC 2).
    async fn deliver(&self, policy: SenderPolicy, subjects: &[&str]) {
        self.server.store.set_domain_policy("local.test", policy).await.expect("policy");
        let (mut c, _) = SmtpConn::connect(self.server.mx()).await;
        c.cmd("EHLO client.test").await;
        for subject in subjects {
            let id = subject.replace(' ', "-");
            let body = format!(
                "From: a@remote.test\r\nTo: {USER}\r\nMessage-ID: <{id}@remote.test>\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n"
            );
            assert_eq!(c.send_message("a@remote.test", &[USER], &body).await.code, 250, "{subject}");
        }
        c.cmd("QUIT").await;
    }

    /// A folder's messages as the store has them, with their text; empty when the folder
    /// does not exist.
    async fn folder(&self, name: &str) -> Vec<(FolderMessage, String)> {
        let Some((_, messages)) = self.server.store.folder_messages(USER, name).await.expect("folder") else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for message in messages {
            let (_, data) =
                self.server.store.get_mailbox_message(USER, message.entry_id).await.expect("get").expect("exists");
            out.push((message, String::from_utf8_lossy(&data).into_owned()));
        }
        out
    }

    async fn folder_names(&self) -> Vec<String> {
        self.server.store.list_folders(USER).await.expect("folders").into_iter().map(|f| f.name).collect()
    }

    /// Whether the message with this UID in a folder has this flag.
    async fn flagged(&self, folder: &str, uid: u32, flag: &str) -> bool {
        self.folder(folder).await.iter().any(|(m, _)| m.uid == uid && has_flag(m, flag))
    }

    /// The UID of the message with this subject in a folder.
    async fn uid_of(&self, folder: &str, subject: &str) -> u32 {
        let messages = self.folder(folder).await;
        let found = messages.iter().find(|(_, text)| text.contains(&format!("Subject: {subject}\r\n")));
        found.unwrap_or_else(|| panic!("{subject} not in {folder}: {messages:?}")).0.uid
    }
}

/// Runs a client under `timeout`, in `dir`, with HOME there too (so no client reads or
/// writes the files of whoever runs the tests).
async fn run_client(dir: &Path, program: &str, args: &[&str]) -> Output {
    let mut command = Command::new(tool("timeout"));
    command
        .arg(CLIENT_TIMEOUT_SECS)
        .arg(tool(program))
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .stdin(Stdio::null());
    let out = common::run(command).await;
    // Shown with the failure of whichever assertion comes later (the harness captures it).
    eprintln!("{program} {args:?}: {}", transcript(&out));
    out
}

fn transcript(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The files of a Maildir folder (`new` and `cur`), with their text.
fn maildir(folder: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(entries) = std::fs::read_dir(folder.join(sub)) else { continue };
        for entry in entries {
            let path = entry.expect("entry").path();
            let text = String::from_utf8_lossy(&std::fs::read(&path).expect("read")).into_owned();
            out.push((path, text));
        }
    }
    out.sort();
    out
}

/// The Maildir file of the message with this subject.
fn maildir_file(folder: &Path, subject: &str) -> Option<PathBuf> {
    let wanted = format!("Subject: {subject}\r\n");
    let wanted_lf = format!("Subject: {subject}\n");
    maildir(folder).into_iter().find(|(_, text)| text.contains(&wanted) || text.contains(&wanted_lf)).map(|(p, _)| p)
}

/// The Maildir flags of a message file (the letters after `:2,`).
fn maildir_flags(path: &Path) -> String {
    let name = path.file_name().expect("name").to_string_lossy().into_owned();
    name.rsplit_once(":2,").map(|(_, flags)| flags.to_string()).unwrap_or_default()
}

/// Writes a new message into a Maildir folder (made if missing), as a mail client
/// saving a sent message would: `tmp` then `new` (Maildir's delivery rule).
fn maildir_add(folder: &Path, name: &str, text: &str) {
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(folder.join(sub)).expect("maildir");
    }
    let tmp = folder.join("tmp").join(name);
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, folder.join("new").join(name)).expect("rename");
}

/// Adds a Maildir flag to a message, as a mail client reading it would: the file moves to
/// `cur` with the flag among the letters after `:2,`, kept in ASCII order (Maildir's rule).
fn maildir_set_flag(path: &Path, flag: char) {
    let name = path.file_name().expect("name").to_string_lossy().into_owned();
    let (base, flags) = name.rsplit_once(":2,").unwrap_or((&name, ""));
    let mut flags: Vec<char> = flags.chars().chain([flag]).collect();
    flags.sort();
    flags.dedup();
    let folder = path.parent().and_then(Path::parent).expect("folder");
    let target = folder.join("cur").join(format!("{base}:2,{}", flags.into_iter().collect::<String>()));
    std::fs::rename(path, target).expect("rename");
}

fn has_flag(message: &FolderMessage, flag: &str) -> bool {
    message.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
}

/// An mbsync configuration syncing every folder both ways between the server (`ssl`:
/// mbsync's SSLType, IMAPS or STARTTLS) and a Maildir at `mail`.
fn mbsync_config(f: &Fixture, mail: &Path, ssl: &str, port: u16) -> String {
    format!(
        "IMAPAccount vouchmail\n\
         Host localhost\n\
         Port {port}\n\
         User {USER}\n\
         Pass \"{PASSWORD}\"\n\
         SSLType {ssl}\n\
         SystemCertificates no\n\
         CertificateFile {ca}\n\
         \n\
         IMAPStore remote\n\
         Account vouchmail\n\
         \n\
         MaildirStore local\n\
         Path {mail}/\n\
         Inbox {mail}/INBOX\n\
         SubFolders Verbatim\n\
         \n\
         Channel everything\n\
         Far :remote:\n\
         Near :local:\n\
         Patterns *\n\
         Create Both\n\
         Expunge Both\n\
         SyncState *\n",
        ca = f.ca_file().display(),
        mail = mail.display(),
    )
}

/// mbsync (isync) over imaps, verifying the server against the test CA, syncs every folder
/// both ways (Patterns *, Create Both, Expunge Both): the first run brings INBOX and Junk
/// with their messages and the other folders of SPEC 9 into a Maildir; then a message
/// saved locally in Sent, a new local folder with a message, a message read locally, a
/// message flagged and another deleted on the server; the second run carries each change
/// to the other side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mbsync_syncs_every_folder_both_ways() {
    let f = Fixture::start().await;
    f.deliver(SenderPolicy::ACCEPT, &["inbox one", "inbox two"]).await;
    f.deliver(SenderPolicy::JUNK, &["junk one"]).await;
    assert_eq!(f.folder("Junk").await.len(), 1, "the junk policy files the message in Junk");
    let mail = f.path("mail");
    std::fs::create_dir_all(&mail).unwrap();
    let config = mbsync_config(&f, &mail, "IMAPS", f.imaps_port());
    let rc = f.path("mbsyncrc");
    std::fs::write(&rc, config).unwrap();
    let rc = rc.to_string_lossy().into_owned();
    let args = ["-V", "-c", &rc, "-a"];
    let sync = || run_client(f.dir.path(), "mbsync", &args);

    let out = sync().await;
    assert!(out.status.success(), "first sync: {}", transcript(&out));
    for name in ["INBOX", "Junk", "Sent", "Drafts", "Trash", "Archive"] {
        assert!(mail.join(name).join("cur").is_dir(), "{name} made locally: {}", transcript(&out));
    }
    for subject in ["inbox one", "inbox two"] {
        assert!(maildir_file(&mail.join("INBOX"), subject).is_some(), "{subject}: {}", transcript(&out));
    }
    assert!(maildir_file(&mail.join("Junk"), "junk one").is_some(), "junk one: {}", transcript(&out));

    // Local changes: a sent message, a new folder with a message, a junk message read.
    maildir_add(
        &mail.join("Sent"),
        "1700000000.M1P1.localhost",
        "From: user@local.test\nTo: b@remote.test\nMessage-ID: <sent-locally@local.test>\nSubject: sent locally\n\nsent text\n",
    );
    maildir_add(
        &mail.join("Projects"),
        "1700000001.M2P1.localhost",
        "From: b@remote.test\nTo: user@local.test\nSubject: filed locally\n\nproject text\n",
    );
    maildir_set_flag(&maildir_file(&mail.join("Junk"), "junk one").unwrap(), 'S');
    // Server changes, as another client's STORE and EXPUNGE would make them.
    let one = f.uid_of("INBOX", "inbox one").await;
    let two = f.uid_of("INBOX", "inbox two").await;
    let flag = |uids: Vec<u32>, flag: &str| FlagChange {
        uids,
        operation: FlagOperation::Add,
        flags: vec![flag.to_string()],
        unchanged_since: None,
    };
    f.server.store.store_flags(USER, "INBOX", flag(vec![one], "\\Flagged")).await.unwrap();
    f.server.store.store_flags(USER, "INBOX", flag(vec![two], "\\Deleted")).await.unwrap();
    assert_eq!(f.server.store.expunge(USER, "INBOX", None).await.unwrap(), vec![two]);

    let out = sync().await;
    assert!(out.status.success(), "second sync: {}", transcript(&out));
    // The server has the local changes ...
    let sent = f.folder("Sent").await;
    assert!(
        sent.iter().any(|(_, text)| text.contains("Subject: sent locally") && text.contains("sent text")),
        "Sent on the server: {sent:?}\n{}",
        transcript(&out)
    );
    assert!(f.folder_names().await.contains(&"Projects".to_string()), "{}", transcript(&out));
    let projects = f.folder("Projects").await;
    assert!(projects.iter().any(|(_, text)| text.contains("project text")), "{projects:?}");
    let junk = f.folder("Junk").await;
    assert!(has_flag(&junk[0].0, "\\Seen"), "read locally, \\Seen on the server: {junk:?}");
    // ... and the Maildir the server's.
    let one = maildir_file(&mail.join("INBOX"), "inbox one").expect("inbox one kept");
    assert!(maildir_flags(&one).contains('F'), "flagged on the server: {one:?}");
    assert!(maildir_file(&mail.join("INBOX"), "inbox two").is_none(), "expunged on the server: {}", transcript(&out));
    // A third run finds nothing left to do: both sides agree.
    let out = sync().await;
    assert!(out.status.success(), "third sync: {}", transcript(&out));
    assert_eq!(maildir(&mail.join("INBOX")).len(), 1);
    assert_eq!(f.folder("INBOX").await.len(), 1);
    assert_eq!(f.folder("Sent").await.len(), 1, "the sent message uploaded once");
}

/// offlineimap over imaps, verifying the server against the test CA: a one-shot sync brings
/// every folder of SPEC 9 and the messages of INBOX and Junk into a Maildir, and a folder
/// with a non-ASCII name under its UTF-8 name; then a message saved in the local Sent, a
/// message read locally and a new local folder with a non-ASCII name go back to the server
/// on the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offlineimap_syncs_folders_and_a_local_change() {
    let f = Fixture::start().await;
    f.deliver(SenderPolicy::ACCEPT, &["inbox one", "inbox two"]).await;
    f.deliver(SenderPolicy::JUNK, &["junk one"]).await;
    let mail = f.path("mail");
    std::fs::create_dir_all(&mail).unwrap();
    let config = format!(
        "[general]\n\
         accounts = vouchmail\n\
         metadata = {meta}\n\
         \n\
         [Account vouchmail]\n\
         localrepository = local\n\
         remoterepository = remote\n\
         utf8foldernames = yes\n\
         \n\
         [Repository local]\n\
         type = Maildir\n\
         localfolders = {mail}\n\
         \n\
         [Repository remote]\n\
         type = IMAP\n\
         remotehost = localhost\n\
         remoteport = {port}\n\
         remoteuser = {USER}\n\
         remotepass = {PASSWORD}\n\
         ssl = yes\n\
         sslcacertfile = {ca}\n\
         holdconnectionopen = no\n\
         maxconnections = 1\n",
        meta = f.path("offlineimap").display(),
        mail = mail.display(),
        port = f.imaps_port(),
        ca = f.ca_file().display(),
    );
    // A folder with a non-ASCII name, which an IMAP4rev1 client sees in modified UTF-7
    // (RFC 3501 5.1.3) and offlineimap (utf8foldernames) makes UTF-8 again.
    f.server.store.create_folder(USER, "Entw\u{fc}rfe", None).await.unwrap();
    let draft = AppendedMessage {
        queue_id: "IMAPCLIENTS2".into(),
        flags: vec!["\\Draft".into()],
        received_at: 1_700_000_000,
        data: b"From: user@local.test\r\nSubject: unfinished\r\n\r\ndraft text\r\n".to_vec(),
    };
    f.server.store.append_message(USER, "Entw\u{fc}rfe", draft).await.unwrap();
    let rc = f.path("offlineimaprc");
    std::fs::write(&rc, config).unwrap();
    let rc = rc.to_string_lossy().into_owned();
    let args = ["-c", &rc, "-o", "-u", "basic"];
    let sync = || run_client(f.dir.path(), "offlineimap", &args);

    let out = sync().await;
    assert!(out.status.success(), "first sync: {}", transcript(&out));
    for name in ["INBOX", "Junk", "Sent", "Drafts", "Trash", "Archive"] {
        assert!(mail.join(name).join("cur").is_dir(), "{name} made locally: {}", transcript(&out));
    }
    for subject in ["inbox one", "inbox two"] {
        assert!(maildir_file(&mail.join("INBOX"), subject).is_some(), "{subject}: {}", transcript(&out));
    }
    assert!(maildir_file(&mail.join("Junk"), "junk one").is_some(), "junk one: {}", transcript(&out));
    let draft = maildir_file(&mail.join("Entw\u{fc}rfe"), "unfinished");
    let draft = draft.unwrap_or_else(|| panic!("Entw\u{fc}rfe: {}", transcript(&out)));
    assert!(maildir_flags(&draft).contains('D'), "{draft:?}");

    maildir_add(
        &mail.join("Sent"),
        "1700000000.M1P1.localhost",
        "From: user@local.test\nTo: b@remote.test\nMessage-ID: <sent-by-offlineimap@local.test>\nSubject: sent locally\n\nsent text\n",
    );
    maildir_add(
        &mail.join("Pr\u{fc}fung"),
        "1700000001.M2P1.localhost",
        "From: b@remote.test\nTo: user@local.test\nSubject: exam\n\nexam text\n",
    );
    maildir_set_flag(&maildir_file(&mail.join("INBOX"), "inbox two").unwrap(), 'S');
    let out = sync().await;
    assert!(out.status.success(), "second sync: {}", transcript(&out));
    let sent = f.folder("Sent").await;
    assert!(
        sent.iter().any(|(_, text)| text.contains("Subject: sent locally") && text.contains("sent text")),
        "Sent on the server: {sent:?}\n{}",
        transcript(&out)
    );
    let two = f.uid_of("INBOX", "inbox two").await;
    let inbox = f.folder("INBOX").await;
    let two = inbox.iter().find(|(m, _)| m.uid == two).unwrap();
    assert!(has_flag(&two.0, "\\Seen"), "read locally, \\Seen on the server: {inbox:?}\n{}", transcript(&out));
    let exam = f.folder("Pr\u{fc}fung").await;
    assert!(exam.iter().any(|(_, t)| t.contains("exam text")), "{:?}\n{}", f.folder_names().await, transcript(&out));
    // offlineimap keeps the uploaded message under the UID the server gave it (APPENDUID,
    // RFC 4315 3): a third sync neither uploads it again nor fetches a second copy.
    let out = sync().await;
    assert!(out.status.success(), "third sync: {}", transcript(&out));
    assert_eq!(f.folder("Sent").await.len(), 1, "{}", transcript(&out));
    assert_eq!(maildir(&mail.join("Sent")).len(), 1, "{}", transcript(&out));
}

/// A tmux server of the test's own (`tmux -L`, so that tests running side by side do not
/// share one), killed with everything in it when the guard goes, also when the test fails.
struct Tmux {
    socket: String,
    home: PathBuf,
    /// `timeout` and `tmux`, found before the guard exists: Drop must not panic looking.
    timeout: PathBuf,
    tmux: PathBuf,
}

impl Tmux {
    fn new(home: &Path) -> Tmux {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Tmux {
            socket: format!("vouchmail-imap-{}-{n}", std::process::id()),
            home: home.to_path_buf(),
            timeout: tool("timeout"),
            tmux: tool("tmux"),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.timeout);
        // No tmux.conf of whoever runs the tests (-f /dev/null); HOME is the test's, which
        // the tmux server and so the program in it inherit.
        command.arg("10").arg(&self.tmux).args(["-f", "/dev/null", "-L", &self.socket]);
        command.args(args).current_dir(&self.home).env("HOME", &self.home).stdin(Stdio::null());
        command
    }

    async fn run(&self, args: &[&str]) -> Output {
        let out = common::run(self.command(args)).await;
        assert!(out.status.success(), "tmux {args:?}: {}", transcript(&out));
        out
    }

    async fn screen(&self, session: &str) -> String {
        let out = common::run(self.command(&["capture-pane", "-p", "-t", session])).await;
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls the screen (every 200 ms, at most `secs`) until it shows `text`; the screen.
    async fn wait_for(&self, session: &str, text: &str, secs: u64) -> String {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let screen = self.screen(session).await;
            if screen.contains(text) {
                return screen;
            }
            assert!(std::time::Instant::now() < end, "{text:?} not on the screen within {secs} s:\n{screen}");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    async fn keys(&self, session: &str, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", session];
        args.extend_from_slice(keys);
        self.run(&args).await;
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command(&["kill-server"]).output();
    }
}

/// neomutt, as a user drives it in a terminal (tmux), over imaps verifying the server
/// against the test CA: a message from an unauthenticated internet sender, filed in Junk by
/// the junk policy (SPEC 2), shows in neomutt's index of Junk; saved to INBOX (`s`) and
/// the folder synced (`$`), it is in INBOX on the server and gone from Junk. Then in INBOX
/// a message delivered meanwhile shows by itself (IDLE), reading it sets \Seen and records
/// `downloaded`, and flagging and deleting it reach the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neomutt_moves_a_message_out_of_junk_and_reads_new_mail() {
    let f = Fixture::start().await;
    f.deliver(SenderPolicy::JUNK, &["not really spam"]).await;
    assert_eq!(f.folder("Junk").await.len(), 1, "the junk policy files the message in Junk");
    let muttrc = format!(
        "set imap_user = \"{USER}\"\n\
         set imap_pass = \"{PASSWORD}\"\n\
         set folder = \"imaps://localhost:{port}/\"\n\
         set spoolfile = \"+Junk\"\n\
         set ssl_force_tls = yes\n\
         set ssl_ca_certificates_file = \"{ca}\"\n\
         set certificate_file = \"{certs}\"\n\
         set header_cache = \"\"\n\
         set message_cachedir = \"\"\n\
         set mbox_type = Maildir\n\
         set record = \"\"\n\
         set postponed = \"+Drafts\"\n\
         set confirmappend = no\n\
         set confirmcreate = no\n\
         set delete = yes\n\
         set move = no\n\
         set quit = yes\n\
         set wait_key = no\n\
         set imap_passive = yes\n\
         set mail_check = 1\n\
         set timeout = 1\n\
         set imap_idle = yes\n\
         set sidebar_visible = no\n",
        port = f.imaps_port(),
        ca = f.ca_file().display(),
        certs = f.path("certificates").display(),
    );
    std::fs::write(f.path("muttrc"), muttrc).unwrap();
    let tmux = Tmux::new(f.dir.path());
    let session = "neomutt";
    let neomutt =
        format!("{} {CLIENT_TIMEOUT_SECS} {} -n -F muttrc", tool("timeout").display(), tool("neomutt").display());
    tmux.run(&["new-session", "-d", "-s", session, "-x", "200", "-y", "50", &neomutt]).await;
    tmux.wait_for(session, "not really spam", 20).await;
    // Save to INBOX: the prompt offers a mailbox of its own (a save-hook default), which
    // C-u clears before the name is typed.
    tmux.keys(session, &["s"]).await;
    tmux.wait_for(session, "Save to mailbox", 10).await;
    tmux.keys(session, &["C-u", "=INBOX", "Enter"]).await;
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while f.folder("INBOX").await.is_empty() {
        assert!(std::time::Instant::now() < end, "not saved to INBOX:\n{}", tmux.screen(session).await);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Saving marks the message deleted in Junk; `$` expunges it ($delete = yes: no question).
    tmux.keys(session, &["$"]).await;
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !f.folder("Junk").await.is_empty() {
        assert!(std::time::Instant::now() < end, "still in Junk:\n{}", tmux.screen(session).await);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let inbox = f.folder("INBOX").await;
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    assert!(inbox[0].1.contains("Subject: not really spam"), "{inbox:?}");

    // In INBOX, a message delivered meanwhile shows by itself: neomutt IDLEs (RFC 2177).
    tmux.keys(session, &["c"]).await;
    tmux.wait_for(session, "Open mailbox", 10).await;
    tmux.keys(session, &["C-u", "=INBOX", "Enter"]).await;
    tmux.wait_for(session, "not really spam", 20).await;
    f.deliver(SenderPolicy::ACCEPT, &["arrives while watching"]).await;
    tmux.wait_for(session, "arrives while watching", 20).await;
    // Read it: its whole body is fetched (SPEC 8.3, 9: `downloaded`, once) and \Seen set.
    tmux.keys(session, &["/", "arrives", "Enter"]).await;
    tmux.keys(session, &["Enter"]).await;
    tmux.wait_for(session, "body of arrives while watching", 20).await;
    tmux.keys(session, &["i"]).await;
    let uid = f.uid_of("INBOX", "arrives while watching").await;
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !f.flagged("INBOX", uid, "\\Seen").await {
        assert!(std::time::Instant::now() < end, "not \\Seen:\n{}", tmux.screen(session).await);
        tmux.keys(session, &["$"]).await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let events = f.server.store.list_tracking_events(0, 100).await.unwrap();
    let downloaded = events
        .iter()
        .filter(|e| e.kind == TrackingKind::Downloaded && e.message_id == "<arrives-while-watching@remote.test>")
        .count();
    assert_eq!(downloaded, 1, "{events:?}");
    // Flag it, then delete it: each synced with `$`.
    tmux.keys(session, &["F", "$"]).await;
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !f.flagged("INBOX", uid, "\\Flagged").await {
        assert!(std::time::Instant::now() < end, "not \\Flagged:\n{}", tmux.screen(session).await);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    tmux.keys(session, &["d", "$"]).await;
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while f.folder("INBOX").await.len() != 1 {
        assert!(std::time::Instant::now() < end, "not expunged:\n{}", tmux.screen(session).await);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(f.folder("INBOX").await[0].1.contains("Subject: not really spam"));
    tmux.keys(session, &["q"]).await;
}

/// Runs fetchmail with `rc` as its run control file, in the test's HOME; its exit status
/// (0: mail fetched, 1: no new mail) and log.
async fn fetchmail(dir: &Path, rc: &str) -> (i32, String) {
    use std::os::unix::fs::PermissionsExt;
    let rc_path = dir.join("fetchmailrc");
    std::fs::write(&rc_path, rc).unwrap();
    // fetchmail refuses a run control file others can read.
    std::fs::set_permissions(&rc_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let rc_path = rc_path.to_string_lossy().into_owned();
    // As root fetchmail keeps its lock in /var/run/fetchmail.pid: two tests running it at
    // once would refuse each other ("another foreground fetchmail").
    let pid = dir.join("fetchmail.pid").to_string_lossy().into_owned();
    let args = ["--nodetach", "--nosyslog", "-v", "-f", &rc_path, "--pidfile", &pid];
    let out = run_client(dir, "fetchmail", &args).await;
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let code = out.status.code().unwrap_or(-1);
    assert!(code == 0 || code == 1, "fetchmail failed: {log}");
    (code, log)
}

/// fetchmail over imaps (the certificate checked against the test CA) fetches INBOX to an
/// MDA: with `keep` the messages stay, marked \Seen; a later run without `keep` fetches
/// only the new message and deletes it
/// (STORE \Deleted, EXPUNGE); a third finds nothing new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetchmail_fetches_inbox_keeping_then_deleting() {
    let f = Fixture::start().await;
    f.deliver(SenderPolicy::ACCEPT, &["fetch one", "fetch two"]).await;
    let out = f.path("out");
    std::fs::create_dir_all(&out).unwrap();
    // Each message to a file of its own (fetchmail runs the MDA with sh -c).
    let rc = |keep: &str| {
        format!(
            "set no bouncemail\npoll localhost service {port} proto IMAP\n  user \"{USER}\" password \"{PASSWORD}\"\n  \
             folder INBOX ssl sslcertck sslcertfile \"{ca}\" {keep}\n  mda \"cat > $(mktemp {out}/msg.XXXXXX)\"\n",
            port = f.imaps_port(),
            ca = f.ca_file().display(),
            out = out.display(),
        )
    };
    let files = || {
        let mut texts: Vec<String> =
            std::fs::read_dir(&out).unwrap().map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap()).collect();
        texts.sort();
        texts
    };

    let (code, log) = fetchmail(f.dir.path(), &rc("keep")).await;
    assert_eq!(code, 0, "{log}");
    let fetched = files();
    assert_eq!(fetched.len(), 2, "{log}");
    for subject in ["fetch one", "fetch two"] {
        assert!(fetched.iter().any(|t| t.contains(&format!("body of {subject}"))), "{subject}: {fetched:?}\n{log}");
    }
    let inbox = f.folder("INBOX").await;
    assert_eq!(inbox.len(), 2, "kept: {inbox:?}");
    assert!(inbox.iter().all(|(m, _)| has_flag(m, "\\Seen")), "fetched, so \\Seen: {inbox:?}\n{log}");
    // No `downloaded` event is asked for here: fetchmail fetches RFC822.HEADER and then
    // BODY.PEEK[TEXT], never the whole body at once, which is what SPEC 9 counts.
    assert!(log.contains("BODY.PEEK[TEXT]"), "{log}");

    f.deliver(SenderPolicy::ACCEPT, &["fetch three"]).await;
    let (code, log) = fetchmail(f.dir.path(), &rc("")).await;
    assert_eq!(code, 0, "{log}");
    let fetched = files();
    assert_eq!(fetched.len(), 3, "only the new message: {fetched:?}\n{log}");
    assert!(fetched.iter().any(|t| t.contains("body of fetch three")), "{fetched:?}\n{log}");
    let inbox = f.folder("INBOX").await;
    assert_eq!(inbox.len(), 2, "the new message deleted, the seen ones not fetched: {inbox:?}\n{log}");
    assert!(inbox.iter().all(|(_, text)| !text.contains("fetch three")), "{inbox:?}");

    let (code, log) = fetchmail(f.dir.path(), &rc("")).await;
    assert_eq!(code, 1, "nothing new: {log}");
    assert_eq!(files().len(), 3, "{log}");
}

/// mbsync over the clear port with STARTTLS (RFC 9051 6.2.1), through what a sync meets
/// besides: a 1 MB message and an 8-bit one with bare LF line ends saved locally (mbsync
/// APPENDs them with CRLF, the first in a synchronizing literal, RFC 9051 4.3), a nested
/// local folder, a message deleted locally (STORE \Deleted and UID EXPUNGE, RFC 4315 2.1),
/// and on the server a message moved to Archive and a new nested folder with a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mbsync_over_starttls_carries_big_and_8bit_messages_moves_and_deletions() {
    let f = Fixture::start().await;
    f.deliver(SenderPolicy::ACCEPT, &["keep me", "delete me locally", "move me on the server"]).await;
    let mail = f.path("mail");
    std::fs::create_dir_all(&mail).unwrap();
    let rc = f.path("mbsyncrc");
    std::fs::write(&rc, mbsync_config(&f, &mail, "STARTTLS", f.server.imap().port())).unwrap();
    let rc = rc.to_string_lossy().into_owned();
    let args = ["-V", "-c", &rc, "-a"];
    let sync = || run_client(f.dir.path(), "mbsync", &args);
    let out = sync().await;
    assert!(out.status.success(), "first sync: {}", transcript(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Connection is now encrypted"), "{}", transcript(&out));
    assert_eq!(maildir(&mail.join("INBOX")).len(), 3, "{}", transcript(&out));

    // Local: a big message and an 8-bit one in a nested folder, a deletion in INBOX.
    let line = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\n";
    let big = format!("From: user@local.test\nSubject: big one\n\n{}end of big\n", line.repeat(14_000));
    maildir_add(&mail.join("Projects").join("2026"), "1700000002.M3P1.localhost", &big);
    let eight_bit = "From: user@local.test\nSubject: eight bit\nContent-Type: text/plain; charset=utf-8\n\
                     Content-Transfer-Encoding: 8bit\n\nGr\u{fc}\u{df}e aus K\u{f6}ln \u{2014} \u{1f600}\n";
    maildir_add(&mail.join("Projects").join("2026"), "1700000003.M4P1.localhost", eight_bit);
    std::fs::remove_file(maildir_file(&mail.join("INBOX"), "delete me locally").unwrap()).unwrap();
    // Server: a message moved to Archive, a new nested folder with a message.
    let moved = f.uid_of("INBOX", "move me on the server").await;
    f.server.store.copy_messages(USER, "INBOX", vec![moved], "Archive", true).await.unwrap();
    f.server.store.create_folder(USER, "Lists/rust", None).await.unwrap();
    let appended = AppendedMessage {
        queue_id: "IMAPCLIENTS1".into(),
        flags: vec!["\\Seen".into()],
        received_at: 1_700_000_000,
        data: b"From: list@rust.test\r\nSubject: from the list\r\n\r\nlist text\r\n".to_vec(),
    };
    f.server.store.append_message(USER, "Lists/rust", appended).await.unwrap();

    let out = sync().await;
    assert!(out.status.success(), "second sync: {}", transcript(&out));
    // The server has the local changes, line ends made CRLF and every byte kept.
    let projects = f.folder("Projects/2026").await;
    let big_text = projects.iter().find(|(_, t)| t.contains("Subject: big one")).map(|(_, t)| t.clone());
    let big_text = big_text.unwrap_or_else(|| panic!("big one: {}", transcript(&out)));
    // mbsync puts its own X-TUID header in what it uploads (to find the message's UID).
    let without_tuid = |text: &str| text.lines().filter(|l| !l.starts_with("X-TUID: ")).collect::<Vec<_>>().join("\n");
    let as_sent = big.replace('\n', "\r\n");
    assert!(big_text.ends_with("\r\nend of big\r\n"), "big: {} bytes, not CRLF", big_text.len());
    assert!(without_tuid(&big_text) == without_tuid(&as_sent), "big: {} bytes, sent {}", big_text.len(), as_sent.len());
    let eight = projects.iter().find(|(_, t)| t.contains("Subject: eight bit")).map(|(_, t)| without_tuid(t));
    let eight = eight.unwrap_or_else(|| panic!("eight bit: {}", transcript(&out)));
    assert_eq!(eight, without_tuid(&eight_bit.replace('\n', "\r\n")), "{}", transcript(&out));
    let inbox = f.folder("INBOX").await;
    assert_eq!(inbox.len(), 1, "deleted locally, expunged on the server: {inbox:?}\n{}", transcript(&out));
    assert!(inbox[0].1.contains("Subject: keep me"), "{inbox:?}");
    // ... and the Maildir the server's.
    assert!(maildir_file(&mail.join("INBOX"), "move me on the server").is_none(), "{}", transcript(&out));
    assert!(maildir_file(&mail.join("Archive"), "move me on the server").is_some(), "{}", transcript(&out));
    let list = maildir_file(&mail.join("Lists").join("rust"), "from the list");
    let list = list.unwrap_or_else(|| panic!("Lists/rust: {}", transcript(&out)));
    assert!(maildir_flags(&list).contains('S'), "{list:?}");
    // A third run finds both sides agreeing.
    let out = sync().await;
    assert!(out.status.success(), "third sync: {}", transcript(&out));
    assert_eq!(f.folder("Projects/2026").await.len(), 2, "{}", transcript(&out));
    assert_eq!(maildir(&mail.join("Projects").join("2026")).len(), 2, "{}", transcript(&out));
}

/// neomutt with a header cache and CONDSTORE (RFC 7162 3.1): opened again after a flag was
/// set elsewhere, it asks only for what changed since the mod-sequence it kept
/// (`CHANGEDSINCE`) and shows the message flagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neomutt_with_condstore_sees_a_flag_set_elsewhere() {
    let f = Fixture::start().await;
    f.deliver(SenderPolicy::ACCEPT, &["alpha message", "beta message"]).await;
    let muttrc = format!(
        "set imap_user = \"{USER}\"\n\
         set imap_pass = \"{PASSWORD}\"\n\
         set folder = \"imaps://localhost:{port}/\"\n\
         set spoolfile = \"+INBOX\"\n\
         set ssl_force_tls = yes\n\
         set ssl_ca_certificates_file = \"{ca}\"\n\
         set certificate_file = \"{certs}\"\n\
         set header_cache = \"{hcache}\"\n\
         set message_cachedir = \"\"\n\
         set imap_condstore = yes\n\
         set record = \"\"\n\
         set quit = yes\n\
         set wait_key = no\n\
         set sidebar_visible = no\n\
         set index_format = \"%4C %Z [%s]\"\n",
        port = f.imaps_port(),
        ca = f.ca_file().display(),
        certs = f.path("certificates").display(),
        hcache = f.path("hcache").display(),
    );
    std::fs::write(f.path("muttrc"), muttrc).unwrap();
    let tmux = Tmux::new(f.dir.path());
    let log = f.path("neomutt.log");
    let neomutt = format!(
        "{} {CLIENT_TIMEOUT_SECS} {} -n -F muttrc -d 2 -l {}",
        tool("timeout").display(),
        tool("neomutt").display(),
        log.display()
    );
    tmux.run(&["new-session", "-d", "-s", "first", "-x", "200", "-y", "50", &neomutt]).await;
    tmux.wait_for("first", "[beta message]", 20).await;
    tmux.keys("first", &["q"]).await;
    // neomutt writes its header cache as it leaves the folder.
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while common::run(tmux.command(&["has-session", "-t", "first"])).await.status.success() {
        assert!(std::time::Instant::now() < end, "neomutt did not quit:\n{}", tmux.screen("first").await);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let beta = f.uid_of("INBOX", "beta message").await;
    let change = FlagChange {
        uids: vec![beta],
        operation: FlagOperation::Add,
        flags: vec!["\\Flagged".into()],
        unchanged_since: None,
    };
    f.server.store.store_flags(USER, "INBOX", change).await.unwrap();

    let tmux = Tmux::new(f.dir.path());
    tmux.run(&["new-session", "-d", "-s", "second", "-x", "200", "-y", "50", &neomutt]).await;
    let screen = tmux.wait_for("second", "[beta message]", 20).await;
    let mut line = screen.lines().find(|l| l.contains("[beta message]")).unwrap_or_default().to_string();
    // %Z shows `!` for a flagged message.
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !line.contains('!') {
        assert!(std::time::Instant::now() < end, "beta not shown flagged: {line:?}\n{screen}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let screen = tmux.screen("second").await;
        line = screen.lines().find(|l| l.contains("[beta message]")).unwrap_or_default().to_string();
    }
    let alpha = tmux.screen("second").await;
    let alpha = alpha.lines().find(|l| l.contains("[alpha message]")).unwrap_or_default().to_string();
    assert!(!alpha.contains('!'), "{alpha:?}");
    tmux.keys("second", &["q"]).await;
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while common::run(tmux.command(&["has-session", "-t", "second"])).await.status.success() {
        assert!(std::time::Instant::now() < end, "neomutt did not quit:\n{}", tmux.screen("second").await);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // neomutt numbers its logs (neomutt.log0, ...): the second run's is the newest.
    let mut logs: Vec<(std::time::SystemTime, String)> = std::fs::read_dir(f.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("neomutt.log"))
        .map(|e| (e.metadata().unwrap().modified().unwrap(), std::fs::read_to_string(e.path()).unwrap_or_default()))
        .collect();
    logs.sort();
    let log = logs.pop().map(|(_, text)| text).unwrap_or_default();
    assert!(log.contains("CHANGEDSINCE"), "neomutt did not resync with CONDSTORE:\n{log}");
}
