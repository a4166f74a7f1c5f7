//! Unit tests of the IMAP session, driven through RFC 9051 examples with a small
//! in-memory store standing in for the driver.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::imap::types::{DateTime, Flag, StoreMode};
use crate::sasl::{Mechanism, Secrets};

fn secrets() -> &'static Secrets {
    static SECRETS: std::sync::OnceLock<Secrets> = std::sync::OnceLock::new();
    SECRETS.get_or_init(|| Secrets::from_password("tanstaaf", &[3; crate::sasl::SALTS_LEN]).unwrap())
}

fn tls() -> TlsInfo {
    TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS13_AES_128_GCM_SHA256".into(),
        channel_binding: Some(vec![7; 32]),
        external_identity: None,
    }
}

const MESSAGE: &[u8] = b"Date: Wed, 17 Jul 1996 02:23:25 -0700\r\nFrom: Terry Gray <gray@cac.washington.edu>\r\nSubject: IMAP4rev2 WG mtg summary and minutes\r\nTo: imap@cac.washington.edu\r\nMessage-Id: <B27397-0100000@cac.washington.edu>\r\n\r\nHello Joe, do you think we can meet at 3:30 tomorrow?\r\n";

#[derive(Default)]
struct Mailbox {
    uid_validity: u32,
    uid_next: u32,
    messages: Vec<(MessageMeta, Vec<u8>)>,
}

struct Harness {
    session: Session,
    store: BTreeMap<String, Mailbox>,
    modseq: u64,
    auth_outcomes: Vec<(Option<String>, bool)>,
    downloaded: Vec<u32>,
    events: Vec<String>,
    /// Each Event::Fetch's UIDs and the `next` it announced.
    batches: Vec<(Vec<u32>, Vec<u32>)>,
}

impl Harness {
    fn new(adjust: impl FnOnce(&mut SessionConfig)) -> Harness {
        let mut config = SessionConfig::new("imap.example.com");
        config.starttls = true;
        config.auth_mechanisms = Mechanism::ALL.to_vec();
        adjust(&mut config);
        let session =
            Session::new(Arc::new(config), crate::sasl::Fresh::new(1_700_000_000, [5; crate::sasl::SEED_LEN]), None);
        let mut store = BTreeMap::new();
        let mut inbox = Mailbox { uid_validity: 3857529045, uid_next: 1, messages: Vec::new() };
        let mut h_modseq = 0;
        for _ in 0..3 {
            h_modseq += 1;
            let uid = inbox.uid_next;
            inbox.uid_next += 1;
            let meta = MessageMeta {
                uid,
                flags: if uid == 1 { vec![Flag::Seen] } else { Vec::new() },
                internal_date: DateTime { unix: 837_566_605, offset_minutes: -420 },
                size: MESSAGE.len() as u64,
                modseq: h_modseq,
            };
            inbox.messages.push((meta, MESSAGE.to_vec()));
        }
        store.insert("INBOX".to_owned(), inbox);
        store.insert("Trash".to_owned(), Mailbox { uid_validity: 99, uid_next: 1, messages: Vec::new() });
        Harness {
            session,
            store,
            modseq: h_modseq,
            auth_outcomes: Vec::new(),
            downloaded: Vec::new(),
            events: Vec::new(),
            batches: Vec::new(),
        }
    }

    fn output(&mut self) -> String {
        String::from_utf8_lossy(&self.session.take_output()).into_owned()
    }

    fn send(&mut self, bytes: &str) -> String {
        self.session.feed(bytes.as_bytes());
        self.run();
        self.output()
    }

    fn login(&mut self) {
        self.session.tls_started(tls());
        let _ = self.output();
        let out = self.send("a001 LOGIN mrose tanstaaf\r\n");
        assert!(out.starts_with("a001 OK [CAPABILITY IMAP4rev2"), "{out}");
    }

    fn selected_mailbox(&self) -> String {
        self.session.selected_mailbox().map(|m| m.as_str().to_owned()).unwrap_or_default()
    }

    fn run(&mut self) {
        let mut next = self.session.poll_event();
        while let Some(event) = next {
            self.events.push(format!("{event:?}").split([' ', '{', '(']).next().unwrap_or("").to_owned());
            match event {
                Event::StartTls => self.session.tls_started(tls()),
                Event::LookupSecrets { authcid } => {
                    let found = (authcid == "mrose").then(secrets);
                    next = self.session.provide_secrets(found);
                    continue;
                }
                Event::AuthFinished { authcid, success } => self.auth_outcomes.push((authcid, success)),
                Event::Select { mailbox, .. } => {
                    let result = match self.store.get(mailbox.as_str()) {
                        Some(m) => Ok(MailboxSnapshot {
                            uid_validity: m.uid_validity,
                            uid_next: m.uid_next,
                            highest_modseq: self.modseq,
                            messages: m.messages.iter().map(|(meta, _)| meta.clone()).collect(),
                            permanent_flags: vec![Flag::Deleted, Flag::Seen],
                            new_keywords: true,
                            read_only: false,
                        }),
                        None => Err(Failure::nonexistent()),
                    };
                    self.session.selected(result);
                }
                Event::Fetch { uids, mark_seen, next, .. } => {
                    self.batches.push((uids.clone(), next));
                    let mailbox = self.selected_mailbox();
                    let mut data = Vec::new();
                    for uid in uids {
                        let modseq = self.modseq + 1;
                        let Some((meta, bytes)) = self
                            .store
                            .get_mut(&mailbox)
                            .and_then(|m| m.messages.iter_mut().find(|(m, _)| m.uid == uid))
                        else {
                            continue;
                        };
                        let mut seen_set = None;
                        if mark_seen.contains(&uid) {
                            meta.flags.push(Flag::Seen);
                            meta.modseq = modseq;
                            self.modseq = modseq;
                            seen_set = Some((meta.flags.clone(), modseq));
                        }
                        data.push(MessageData { uid, bytes: bytes.clone(), seen_set });
                    }
                    self.session.fetched(Ok(data));
                }
                Event::Downloaded { uids } => self.downloaded.extend(uids),
                Event::Store { uids, mode, flags, .. } => {
                    let mailbox = self.selected_mailbox();
                    let mut updated = Vec::new();
                    for (meta, _) in self.store.get_mut(&mailbox).map(|m| m.messages.as_mut_slice()).unwrap_or(&mut [])
                    {
                        if !uids.contains(&meta.uid) {
                            continue;
                        }
                        match mode {
                            StoreMode::Replace => meta.flags = flags.clone(),
                            StoreMode::Add => meta
                                .flags
                                .extend(flags.iter().filter(|f| !meta.flags.contains(f)).cloned().collect::<Vec<_>>()),
                            StoreMode::Remove => meta.flags.retain(|f| !flags.contains(f)),
                        }
                        self.modseq += 1;
                        meta.modseq = self.modseq;
                        updated.push(FlagUpdate { uid: meta.uid, flags: meta.flags.clone(), modseq: meta.modseq });
                    }
                    self.session.stored(Ok(StoreOutcome { updated, modified: Vec::new() }));
                }
                Event::Copy { uids, target, is_move } => {
                    let source = self.selected_mailbox();
                    if !self.store.contains_key(target.as_str()) {
                        self.session.copied(Err(Failure::try_create()));
                    } else {
                        let moving: Vec<(MessageMeta, Vec<u8>)> = self.store[&source]
                            .messages
                            .iter()
                            .filter(|(m, _)| uids.contains(&m.uid))
                            .cloned()
                            .collect();
                        if is_move {
                            if let Some(m) = self.store.get_mut(&source) {
                                m.messages.retain(|(m, _)| !uids.contains(&m.uid));
                            }
                        }
                        let dest = self.store.get_mut(target.as_str()).unwrap();
                        let mut copy =
                            CopyUid { uid_validity: dest.uid_validity, source: Vec::new(), destination: Vec::new() };
                        for (mut meta, bytes) in moving {
                            copy.source.push(meta.uid);
                            meta.uid = dest.uid_next;
                            dest.uid_next += 1;
                            copy.destination.push(meta.uid);
                            dest.messages.push((meta, bytes));
                        }
                        self.session.copied(Ok(copy));
                    }
                }
                Event::Expunge { uids } => {
                    let mailbox = self.selected_mailbox();
                    let mut gone = Vec::new();
                    if let Some(m) = self.store.get_mut(&mailbox) {
                        m.messages.retain(|(meta, _)| {
                            let hit = meta.flags.contains(&Flag::Deleted)
                                && uids.as_ref().is_none_or(|u| u.contains(&meta.uid));
                            if hit {
                                gone.push(meta.uid);
                            }
                            !hit
                        });
                    }
                    self.session.expunged(Ok(gone));
                }
                Event::Create { mailbox, .. } => {
                    let result = if self.store.contains_key(mailbox.as_str()) {
                        Err(Failure::already_exists())
                    } else {
                        self.store.insert(
                            mailbox.as_str().to_owned(),
                            Mailbox { uid_validity: 7, uid_next: 1, messages: Vec::new() },
                        );
                        Ok(())
                    };
                    self.session.done(result);
                }
                Event::Delete { .. } | Event::Rename { .. } | Event::Subscribe { .. } => self.session.done(Ok(())),
                Event::ListMailboxes { .. } => {
                    let list = self
                        .store
                        .keys()
                        .map(|name| MailboxInfo {
                            name: crate::imap::types::MailboxName::new(name.clone()),
                            attributes: if name == "Trash" {
                                vec![crate::imap::types::MailboxAttribute::Trash]
                            } else {
                                Vec::new()
                            },
                            subscribed: true,
                            status: None,
                        })
                        .collect();
                    self.session.listed(Ok(list));
                }
                Event::Status { mailbox } => {
                    let result = self
                        .store
                        .get(mailbox.as_str())
                        .map(|m| MailboxStatus {
                            messages: m.messages.len() as u32,
                            uid_next: m.uid_next,
                            uid_validity: m.uid_validity,
                            ..MailboxStatus::default()
                        })
                        .ok_or_else(Failure::nonexistent);
                    self.session.status(result);
                }
                Event::Append { .. } => self.session.appended(Ok(AppendUid { uid_validity: 38505, uid: 3955 })),
                Event::Quota => {
                    self.session.quota(Ok(vec![QuotaResource { name: "STORAGE".into(), usage: 10, limit: 512 }]))
                }
                Event::Idle | Event::IdleDone | Event::MailboxClosed => {}
            }
            next = self.session.poll_event();
        }
    }
}

#[test]
fn greeting_and_capabilities_before_tls() {
    let mut h = Harness::new(|_| {});
    let greeting = h.output();
    assert!(greeting.starts_with("* OK [CAPABILITY IMAP4rev2 IMAP4rev1 STARTTLS AUTH=SCRAM-SHA-256"), "{greeting}");
    assert!(greeting.contains("LOGINDISABLED") && !greeting.contains("AUTH=PLAIN"), "{greeting}");
    // RFC 9051 6.2.3: LOGIN on a clear channel is refused.
    let out = h.send("a001 LOGIN mrose tanstaaf\r\n");
    assert_eq!(out, "a001 NO [PRIVACYREQUIRED] LOGIN is disabled on an unencrypted connection\r\n");
    // RFC 9051 6.2.1, with pipelined bytes after STARTTLS dropped.
    let out = h.send("a002 STARTTLS\r\na003 LOGIN mrose tanstaaf\r\n");
    assert_eq!(out, "a002 OK Begin TLS negotiation now\r\n");
    let out = h.send("a004 CAPABILITY\r\n");
    assert!(out.contains("AUTH=PLAIN") && !out.contains("STARTTLS") && !out.contains("LOGINDISABLED"), "{out}");
    assert!(h.session.user().is_none());
}

#[test]
fn login_and_authenticate() {
    let mut h = Harness::new(|_| {});
    h.session.tls_started(tls());
    let _ = h.output();
    // RFC 9051 6.2.3 example, wrong password first.
    let out = h.send("a001 LOGIN SMITH SESAME\r\n");
    assert_eq!(out, "a001 NO [AUTHENTICATIONFAILED] Authentication failed\r\n");
    assert_eq!(h.auth_outcomes, vec![(Some("SMITH".into()), false)]);
    // RFC 4959 SASL-IR: PLAIN with the initial response on the command line.
    let ir = crate::sasl::encode_initial_response(b"\0mrose\0tanstaaf");
    let out = h.send(&format!("a002 AUTHENTICATE PLAIN {ir}\r\n"));
    assert!(out.starts_with("a002 OK [CAPABILITY IMAP4rev2 IMAP4rev1 IDLE"), "{out}");
    assert_eq!(h.session.user(), Some("mrose"));
    assert_eq!(h.auth_outcomes.last(), Some(&(Some("mrose".into()), true)));
    let out = h.send("a003 LOGIN mrose tanstaaf\r\n");
    assert_eq!(out, "a003 BAD Already authenticated\r\n");
}

#[test]
fn authenticate_exchange_and_cancel() {
    let mut h = Harness::new(|_| {});
    h.session.tls_started(tls());
    let _ = h.output();
    assert_eq!(h.send("a001 AUTHENTICATE PLAIN\r\n"), "+ \r\n");
    assert_eq!(h.send("*\r\n"), "a001 BAD Authentication cancelled\r\n");
    assert_eq!(h.send("a002 AUTHENTICATE PLAIN\r\n"), "+ \r\n");
    let response = crate::sasl::encode_response(b"\0mrose\0tanstaaf");
    assert!(h.send(&format!("{response}\r\n")).starts_with("a002 OK [CAPABILITY"));
    assert_eq!(h.send("a003 AUTHENTICATE KERBEROS_V4\r\n"), "a003 BAD Already authenticated\r\n");
}

#[test]
fn select_as_in_rfc9051_6_3_2() {
    let mut h = Harness::new(|_| {});
    h.login();
    let out = h.send("A142 SELECT INBOX\r\n");
    // IMAP4rev1 client: RECENT and UNSEEN too, no LIST.
    assert_eq!(
        out,
        "* 3 EXISTS\r\n* 0 RECENT\r\n* OK [UNSEEN 2] First unseen\r\n* OK [UIDVALIDITY 3857529045] UIDs valid\r\n\
         * OK [UIDNEXT 4] Predicted next UID\r\n* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n\
         * OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited\r\nA142 OK [READ-WRITE] SELECT completed\r\n"
    );
    let out = h.send("A143 ENABLE IMAP4rev2\r\n");
    assert_eq!(out, "A143 BAD ENABLE is not allowed while a mailbox is selected\r\n");
    let out = h.send("A144 UNSELECT\r\nA145 ENABLE IMAP4rev2 CONDSTORE\r\nA146 EXAMINE INBOX\r\n");
    assert_eq!(
        out,
        "A144 OK UNSELECT completed\r\n* ENABLED IMAP4rev2 CONDSTORE\r\nA145 OK ENABLE completed\r\n\
         * 3 EXISTS\r\n* OK [UIDVALIDITY 3857529045] UIDs valid\r\n* OK [UIDNEXT 4] Predicted next UID\r\n\
         * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n* OK [PERMANENTFLAGS ()] No permanent flags permitted\r\n\
         * OK [HIGHESTMODSEQ 3] Highest\r\n* LIST () \"/\" \"INBOX\"\r\nA146 OK [READ-ONLY] EXAMINE completed\r\n"
    );
    let out = h.send("A147 SELECT nosuch\r\n");
    assert_eq!(out, "* OK [CLOSED] Previous mailbox is now closed\r\nA147 NO [NONEXISTENT] No such mailbox\r\n");
    assert!(h.session.selected_mailbox().is_none());
    assert!(h.events.contains(&"MailboxClosed".to_owned()));
    // A SELECT of another mailbox: the driver hears the old one closed before the new one
    // is asked for, so it does not stop watching the new one.
    h.send("A148 SELECT INBOX\r\n");
    h.events.clear();
    h.send("A149 SELECT INBOX\r\n");
    let order: Vec<&str> =
        h.events.iter().map(String::as_str).filter(|e| *e == "MailboxClosed" || *e == "Select").collect();
    assert_eq!(order, ["MailboxClosed", "Select"], "{:?}", h.events);
}

#[test]
fn fetch_sets_seen_and_reports_downloads() {
    let mut h = Harness::new(|_| {});
    h.login();
    let _ = h.send("a SELECT INBOX\r\n");
    let out = h.send("A654 FETCH 2:3 (FLAGS BODY.PEEK[HEADER.FIELDS (DATE FROM)])\r\n");
    assert_eq!(
        out,
        "* 2 FETCH (FLAGS () BODY[HEADER.FIELDS (DATE FROM)] {85}\r\nDate: Wed, 17 Jul 1996 02:23:25 -0700\r\n\
         From: Terry Gray <gray@cac.washington.edu>\r\n\r\n)\r\n* 3 FETCH (FLAGS () BODY[HEADER.FIELDS (DATE FROM)] {85}\r\n\
         Date: Wed, 17 Jul 1996 02:23:25 -0700\r\nFrom: Terry Gray <gray@cac.washington.edu>\r\n\r\n)\r\nA654 OK FETCH completed\r\n"
    );
    assert!(h.downloaded.is_empty());
    let out = h.send("A655 UID FETCH 2 (BODY[])\r\n");
    let expected = format!(
        "* 2 FETCH (UID 2 BODY[] {{{}}}\r\n{} FLAGS (\\Seen))\r\nA655 OK UID FETCH completed\r\n",
        MESSAGE.len(),
        String::from_utf8_lossy(MESSAGE)
    );
    // RFC 9051 6.4.5: \Seen set by the fetch goes out with the data.
    assert_eq!(out, expected);
    assert_eq!(h.downloaded, vec![2]);
    let out = h.send("A656 FETCH 1 (UID RFC822.SIZE INTERNALDATE ENVELOPE)\r\n");
    assert!(
        out.starts_with(
            "* 1 FETCH (UID 1 RFC822.SIZE 265 INTERNALDATE \"16-Jul-1996 18:23:25 -0700\" ENVELOPE (\"Wed, 17 Jul 1996"
        ),
        "{out}"
    );
    let out = h.send("A657 FETCH 9 FLAGS\r\n");
    assert_eq!(out, "A657 BAD Invalid message sequence number\r\n");
    let out = h.send("A658 FETCH 1 BODYSTRUCTURE\r\n");
    assert_eq!(out, "* 1 FETCH (BODYSTRUCTURE (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 55 1 NIL NIL NIL NIL))\r\nA658 OK FETCH completed\r\n");
}

#[test]
fn store_copy_move_and_expunge() {
    let mut h = Harness::new(|_| {});
    h.login();
    let _ = h.send("a SELECT INBOX\r\n");
    // RFC 9051 6.4.6 example.
    let out = h.send("A003 STORE 2:3 +FLAGS (\\Deleted)\r\n");
    assert_eq!(out, "* 2 FETCH (FLAGS (\\Deleted))\r\n* 3 FETCH (FLAGS (\\Deleted))\r\nA003 OK STORE completed\r\n");
    // RFC 4315 3: UID COPY with COPYUID.
    let out = h.send("A004 UID COPY 1:2 Trash\r\n");
    assert_eq!(out, "A004 OK [COPYUID 99 1:2 1:2] UID COPY completed\r\n");
    let out = h.send("A005 COPY 1 Nowhere\r\n");
    assert_eq!(out, "A005 NO [TRYCREATE] No such mailbox\r\n");
    // RFC 6851 4.3: MOVE sends COPYUID untagged, then the EXPUNGEs.
    let out = h.send("A006 MOVE 1 Trash\r\n");
    assert_eq!(
        out,
        "* OK [COPYUID 99 1 3] Moved\r\n* 1 EXPUNGE\r\nA006 MOVE completed\r\n".replace("A006 MOVE", "A006 OK MOVE")
    );
    // RFC 9051 6.4.3: both remaining messages carry \Deleted.
    let out = h.send("A202 EXPUNGE\r\n");
    assert_eq!(out, "* 1 EXPUNGE\r\n* 1 EXPUNGE\r\nA202 OK EXPUNGE completed\r\n");
    let out = h.send("A203 FETCH 1:* FLAGS\r\n");
    assert_eq!(out, "A203 BAD Invalid message sequence number\r\n");
}

#[test]
fn idle_reports_updates_at_once() {
    let mut h = Harness::new(|_| {});
    h.login();
    let _ = h.send("a SELECT INBOX\r\n");
    // An update before IDLE waits for a command.
    h.session.mailbox_changed(vec![Change::Flags { uid: 3, flags: vec![Flag::Flagged], modseq: 10 }]);
    assert!(!h.session.has_output());
    let out = h.send("A001 IDLE\r\n");
    assert_eq!(out, "+ idling\r\n* 3 FETCH (FLAGS (\\Flagged) UID 3)\r\n");
    assert!(h.session.is_idling());
    let meta = MessageMeta { uid: 4, flags: Vec::new(), internal_date: DateTime::utc(0), size: 10, modseq: 11 };
    h.session.mailbox_changed(vec![Change::New(meta), Change::Expunged { uid: 1 }]);
    assert_eq!(h.output(), "* 4 EXISTS\r\n* 1 EXPUNGE\r\n");
    assert_eq!(h.send("DONE\r\n"), "A001 OK IDLE terminated\r\n");
    assert_eq!(h.events.iter().filter(|e| *e == "Idle" || *e == "IdleDone").count(), 2);
}

#[test]
fn no_expunge_during_fetch_store_search() {
    let mut h = Harness::new(|_| {});
    h.login();
    let _ = h.send("a SELECT INBOX\r\n");
    h.session.mailbox_changed(vec![Change::Expunged { uid: 2 }]);
    // RFC 9051 7.5.1: not during FETCH or SEARCH; NOOP reports it.
    let out = h.send("A1 FETCH 3 UID\r\n");
    assert_eq!(out, "* 3 FETCH (UID 3)\r\nA1 OK FETCH completed\r\n");
    let out = h.send("A2 SEARCH UNSEEN\r\n");
    assert_eq!(out, "* SEARCH 2 3\r\nA2 OK SEARCH completed\r\n");
    let out = h.send("A3 NOOP\r\n");
    assert_eq!(out, "* 2 EXPUNGE\r\nA3 OK NOOP completed\r\n");
    let out = h.send("A4 SEARCH RETURN (MIN COUNT) SUBJECT \"wg mtg\"\r\n");
    assert_eq!(out, "* ESEARCH (TAG \"A4\") MIN 1 COUNT 2\r\nA4 OK SEARCH completed\r\n");
}

#[test]
fn mailbox_commands() {
    let mut h = Harness::new(|_| {});
    h.login();
    let out = h.send("A1 LIST \"\" *\r\n");
    assert_eq!(out, "* LIST (\\HasNoChildren) \"/\" \"INBOX\"\r\n* LIST (\\Trash \\HasNoChildren) \"/\" \"Trash\"\r\nA1 OK LIST completed\r\n");
    assert_eq!(h.send("A2 LIST \"\" \"\"\r\n"), "* LIST (\\Noselect) \"/\" \"\"\r\nA2 OK LIST completed\r\n");
    assert_eq!(h.send("A3 CREATE Work/\r\n"), "A3 OK CREATE completed\r\n");
    assert_eq!(h.send("A4 CREATE Work\r\n"), "A4 NO [ALREADYEXISTS] Mailbox already exists\r\n");
    assert_eq!(h.send("A5 DELETE inbox\r\n"), "A5 NO [CANNOT] INBOX cannot be deleted\r\n");
    let out = h.send("A6 STATUS INBOX (MESSAGES UIDNEXT)\r\n");
    assert_eq!(out, "* STATUS \"INBOX\" (MESSAGES 3 UIDNEXT 4)\r\nA6 OK STATUS completed\r\n");
    let out = h.send("A7 APPEND Trash (\\Seen) {5+}\r\nhello\r\n");
    assert_eq!(out, "A7 OK [APPENDUID 38505 3955] APPEND completed\r\n");
    let out = h.send("A8 GETQUOTAROOT INBOX\r\n");
    assert_eq!(out, "* QUOTAROOT \"INBOX\" \"\"\r\n* QUOTA \"\" (STORAGE 10 512)\r\nA8 OK GETQUOTAROOT completed\r\n");
    assert_eq!(h.send("A9 NAMESPACE\r\n"), "* NAMESPACE ((\"\" \"/\")) NIL NIL\r\nA9 OK NAMESPACE completed\r\n");
    assert_eq!(h.send("A10 FETCH 1 FLAGS\r\n"), "A10 BAD No mailbox selected\r\n");
    let out = h.send("A11 LOGOUT\r\n");
    assert_eq!(out, "* BYE Logging out\r\nA11 OK LOGOUT completed\r\n");
    assert!(h.session.is_closed());
}

#[test]
fn wildcards() {
    use super::authenticated::wildcard_match;
    assert!(wildcard_match(b"*", b"a/b"));
    assert!(wildcard_match(b"%", b"ab"));
    assert!(!wildcard_match(b"%", b"a/b"));
    assert!(wildcard_match(b"a/%", b"a/b"));
    assert!(wildcard_match(b"*b", b"a/b"));
    assert!(!wildcard_match(b"a", b"ab"));
}

#[test]
fn garbage_gets_bad_then_bye() {
    let mut h = Harness::new(|c| c.max_errors = 3);
    let _ = h.output();
    assert_eq!(h.send("\r\n"), "");
    assert_eq!(h.send("a1 FROB\r\n"), "a1 BAD Unknown command\r\n");
    assert_eq!(h.send("a2 SELECT INBOX\r\n"), "a2 BAD Log in first\r\n");
    let out = h.send("}}}\r\nnever\r\n");
    assert!(out.ends_with("* BYE Too many errors\r\n"), "{out}");
    assert!(h.session.is_closed());
    assert_eq!(h.send("a3 NOOP\r\n"), "");
}

#[test]
fn output_cap_pauses_large_fetches() {
    let mut h = Harness::new(|c| c.max_buffered_output = 300);
    h.login();
    let _ = h.send("a SELECT INBOX\r\n");
    h.session.feed(b"b FETCH 1:* BODY.PEEK[]\r\nc NOOP\r\n");
    h.run();
    let first = h.output();
    assert!(first.starts_with("* 1 FETCH") && !first.contains("b OK"), "first: {first}");
    assert!(h.session.has_buffered_command());
    let mut rest = String::new();
    while h.session.has_buffered_command() {
        h.run();
        rest.push_str(&h.output());
    }
    assert!(first.contains("* 3 FETCH") && rest.ends_with("b OK FETCH completed\r\nc OK NOOP completed\r\n"), "{rest}");
}

#[test]
fn random_input_never_panics() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let pieces: [&[u8]; 12] = [
        b"a LOGIN mrose tanstaaf\r\n",
        b"b SELECT INBOX\r\n",
        b"c FETCH 1:* (BODY[1.2.MIME] BINARY[1] BODYSTRUCTURE)\r\n",
        b"d IDLE\r\n",
        b"DONE\r\n",
        b"e STORE * -FLAGS.SILENT (\\Seen)\r\n",
        b"f UID SEARCH OR TEXT x NOT FROM y\r\n",
        b"{3}\r\n",
        b"\xff\x00(",
        b"g MOVE 1 Trash\r\n",
        b"h AUTHENTICATE SCRAM-SHA-256\r\n",
        b"i SEARCH RETURN (SAVE) ALL\r\nj FETCH $ UID\r\n",
    ];
    for _ in 0..40 {
        let mut h = Harness::new(|c| c.allow_plaintext_passwords = true);
        for _ in 0..20 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let piece = pieces[(seed % pieces.len() as u64) as usize];
            let cut = (seed >> 8) as usize % (piece.len() + 1);
            h.session.feed(&piece[..cut]);
            h.run();
            h.session.feed(&piece[cut..]);
            h.run();
            let _ = h.output();
        }
    }
}

/// Each batch of a FETCH or SEARCH announces the next one (the driver reads it ahead):
/// exactly the UIDs the following event asks for, and nothing after the last.
#[test]
fn each_batch_announces_the_next() {
    let mut h = Harness::new(|_| {});
    let inbox = h.store.get_mut("INBOX").unwrap();
    for _ in 0..150 {
        let uid = inbox.uid_next;
        inbox.uid_next += 1;
        let meta = MessageMeta {
            uid,
            flags: Vec::new(),
            internal_date: DateTime { unix: 837_566_605, offset_minutes: 0 },
            size: MESSAGE.len() as u64,
            modseq: 1,
        };
        inbox.messages.push((meta, MESSAGE.to_vec()));
    }
    h.login();
    h.send("a1 SELECT INBOX\r\n");
    for command in ["a2 FETCH 1:* BODY.PEEK[]\r\n", "a3 SEARCH BODY afternoon\r\n"] {
        h.batches.clear();
        let out = h.send(command);
        assert!(out.contains(" OK "), "{out}");
        assert!(h.batches.len() >= 2, "{command}: {:?}", h.batches.len());
        let all: Vec<u32> = h.batches.iter().flat_map(|(uids, _)| uids.clone()).collect();
        assert_eq!(all, (1..=153).collect::<Vec<u32>>(), "{command}");
        for pair in h.batches.windows(2) {
            assert_eq!(pair[0].1, pair[1].0, "{command}");
        }
        assert_eq!(h.batches.last().map(|(_, next)| next.len()), Some(0), "{command}");
    }
    // A message larger than a batch is not read ahead (it would be held twice).
    let inbox = h.store.get_mut("INBOX").unwrap();
    inbox.messages[1].0.size = FETCH_BATCH_OCTETS + 1;
    h.send("a4 SELECT INBOX\r\n");
    h.batches.clear();
    h.send("a5 FETCH 1:3 BODY.PEEK[]\r\n");
    assert_eq!(h.batches, [(vec![1], vec![]), (vec![2], vec![3]), (vec![3], vec![])]);
}
