//! The IMAP server session: never panic on any input, whatever the state. The first byte
//! chooses a canned prelude (authenticated with EXTERNAL, a mailbox selected, CONDSTORE or
//! IMAP4rev2 enabled) and the cap on buffered output; the rest is fed in pieces, every
//! event answered from a small canned store. Events may only name UIDs the store has.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vouchmail_proto::imap::session::{
    AppendUid, Change, CopyUid, Event, Failure, FlagUpdate, MailboxInfo, MailboxSnapshot, MailboxStatus, MessageData,
    MessageMeta, QuotaResource, Session, SessionConfig, StoreOutcome, TlsInfo,
};
use vouchmail_proto::imap::types::{DateTime, Flag, MailboxName};
use vouchmail_proto::sasl::{CramMd5Secret, Fresh, Mechanism, Secrets, SEED_LEN};

const MESSAGES: [&[u8]; 3] = [
    b"Subject: a\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\none\r\n--x\r\nContent-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\ntwo\r\n--x--\r\n",
    b"From: b@example.org\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n",
    b"no header",
];

fn meta(i: usize) -> MessageMeta {
    MessageMeta {
        uid: i as u32 * 2 + 1,
        flags: if i == 0 { vec![Flag::Seen, Flag::Deleted] } else { Vec::new() },
        internal_date: DateTime::utc(1_700_000_000),
        size: MESSAGES[i].len() as u64,
        modseq: i as u64 + 1,
    }
}

fn answer(session: &mut Session, event: Event) -> Option<Event> {
    let known = |uid: &u32| (0..MESSAGES.len()).any(|i| meta(i).uid == *uid);
    match event {
        Event::StartTls => session.tls_started(TlsInfo::default()),
        Event::LookupSecrets { authcid } => {
            let s = Secrets { cram_md5: Some(CramMd5Secret::from_password("secret")), ..Secrets::default() };
            return session.provide_secrets((authcid == "u").then_some(&s));
        }
        Event::Select { mailbox, .. } => session.selected(if mailbox.as_str() == "Nope" {
            Err(Failure::nonexistent())
        } else {
            Ok(MailboxSnapshot {
                uid_validity: 7,
                uid_next: 10,
                highest_modseq: 3,
                messages: (0..MESSAGES.len()).map(meta).collect(),
                permanent_flags: vec![Flag::Seen, Flag::Deleted],
                new_keywords: true,
                read_only: mailbox.as_str() == "Tracking",
            })
        }),
        Event::Fetch { uids, mark_seen, .. } => {
            assert!(uids.iter().all(known) && mark_seen.iter().all(known));
            let data = uids
                .iter()
                .filter(|u| **u != 5)
                .map(|&uid| MessageData {
                    uid,
                    bytes: MESSAGES[(uid as usize - 1) / 2].to_vec(),
                    seen_set: mark_seen.contains(&uid).then(|| (vec![Flag::Seen], 9)),
                })
                .collect();
            session.fetched(Ok(data));
            // A change arriving in the middle of a FETCH.
            session.mailbox_changed(vec![
                Change::Expunged { uid: 3 },
                Change::Flags { uid: 1, flags: Vec::new(), modseq: 20 },
            ]);
        }
        Event::Store { uids, flags, .. } => {
            assert!(uids.iter().all(known));
            let updated = uids.iter().map(|&uid| FlagUpdate { uid, flags: flags.clone(), modseq: 30 }).collect();
            session.stored(Ok(StoreOutcome { updated, modified: uids.iter().copied().filter(|u| *u == 5).collect() }));
        }
        Event::Copy { uids, target, .. } => {
            assert!(uids.iter().all(known));
            session.copied(if target.as_str() == "Nope" {
                Err(Failure::try_create())
            } else {
                Ok(CopyUid { uid_validity: 9, destination: uids.iter().map(|u| u + 100).collect(), source: uids })
            })
        }
        Event::Expunge { uids } => session.expunged(Ok(uids.unwrap_or_else(|| vec![1]))),
        Event::Create { .. } | Event::Delete { .. } | Event::Rename { .. } | Event::Subscribe { .. } => {
            session.done(Ok(()))
        }
        Event::ListMailboxes { status } => session.listed(Ok(["INBOX", "Work", "Work/a", "Trash"]
            .iter()
            .map(|n| MailboxInfo {
                name: MailboxName::new(*n),
                attributes: Vec::new(),
                subscribed: n.len() % 2 == 0,
                status: status.as_ref().map(|_| MailboxStatus::default()),
            })
            .collect())),
        Event::Status { .. } => session.status(Ok(MailboxStatus { messages: 3, ..MailboxStatus::default() })),
        Event::Append { .. } => session.appended(Ok(AppendUid { uid_validity: 7, uid: 11 })),
        Event::Quota => session.quota(Ok(vec![QuotaResource { name: "STORAGE".into(), usage: 1, limit: 2 }])),
        Event::Idle => session.mailbox_changed(vec![Change::New(MessageMeta { uid: 12, ..meta(1) })]),
        Event::AuthFinished { .. } | Event::Downloaded { .. } | Event::IdleDone | Event::MailboxClosed => {}
    }
    None
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else { return };
    let mut config = SessionConfig::new("fuzz.example");
    config.starttls = true;
    config.auth_mechanisms = Mechanism::ALL.to_vec();
    config.max_errors = 1000;
    config.max_buffered_output = if mode & 0x40 != 0 { 64 } else { 1 << 20 };
    let tls = TlsInfo { external_identity: Some("u".into()), ..TlsInfo::default() };
    let mut session = Session::new(Arc::new(config), Fresh::new(1_700_000_000, [1; SEED_LEN]), Some(tls));
    let mut prelude = Vec::new();
    if mode & 1 != 0 {
        prelude.extend_from_slice(b"p1 AUTHENTICATE EXTERNAL =\r\n");
        if mode & 4 != 0 {
            prelude.extend_from_slice(b"p2 ENABLE CONDSTORE IMAP4rev2\r\n");
        }
        if mode & 2 != 0 {
            prelude.extend_from_slice(if mode & 8 != 0 { b"p3 SELECT Tracking\r\n" } else { b"p3 SELECT INBOX\r\n" });
        }
    }
    let step = usize::from(mode >> 4) + 1;
    for chunk in prelude.chunks(64).chain(input.chunks(step)) {
        session.feed(chunk);
        let mut rounds = 0;
        loop {
            let mut next = session.poll_event();
            while let Some(event) = next.take() {
                next = answer(&mut session, event).or_else(|| session.poll_event());
            }
            let _ = session.take_output();
            rounds += 1;
            if !session.has_buffered_command() || rounds > 10_000 {
                break;
            }
        }
        if session.is_closed() {
            break;
        }
    }
});
