//! The client commands of RFC 9051 6 (and of RFC 3501 8, RFC 7162, RFC 2971, RFC 9208,
//! RFC 6154, RFC 5819) replayed through the reader, plus robustness: any split of the
//! input gives the same events, garbage gives an error and the next command parses, and
//! the limits hold without buffering what they refuse.

use super::command::{ListReturn, ListSelection};
use super::types::{
    Date, DateTime, EntryType, MailboxAttribute, Partial, SearchReturn, Section, SectionText, SeqNumber, SeqRange,
    StoreMode,
};
use super::*;

fn tag(t: &str) -> Tag {
    Tag::new(t).unwrap()
}

fn mailbox(name: &str) -> MailboxName {
    MailboxName::new(name)
}

fn set(text: &str) -> SequenceSet {
    let number = |n: &str| if n == "*" { SeqNumber::Largest } else { SeqNumber::Value(n.parse().unwrap()) };
    if text == "$" {
        return SequenceSet::Saved;
    }
    SequenceSet::Ranges(
        text.split(',')
            .map(|r| match r.split_once(':') {
                Some((a, b)) => SeqRange { first: number(a), last: number(b) },
                None => SeqRange::single(number(r)),
            })
            .collect(),
    )
}

/// Feeds `input` in pieces of `step` octets (0: whole), taking every event after each.
fn events_split(input: &[u8], step: usize) -> Vec<ReadEvent> {
    let mut reader = CommandReader::new(Limits::default());
    let mut events = Vec::new();
    let step = if step == 0 { input.len().max(1) } else { step };
    for chunk in input.chunks(step) {
        reader.feed(chunk);
        while let Some(event) = reader.next_event() {
            events.push(event);
        }
    }
    events
}

fn events(input: &[u8]) -> Vec<ReadEvent> {
    events_split(input, 0)
}

/// The one command `input` holds (after any continuation requests).
fn command(input: &str) -> CommandBody {
    let events = events(input.as_bytes());
    let commands: Vec<_> = events
        .into_iter()
        .filter(|e| *e != ReadEvent::SendContinuation)
        .map(|e| match e {
            ReadEvent::Command(c) => c,
            other => panic!("{input:?} gave {other:?}"),
        })
        .collect();
    assert_eq!(commands.len(), 1, "{input:?}");
    commands[0].body.clone()
}

fn error(input: &str) -> CommandError {
    match events(input.as_bytes()).as_slice() {
        [.., ReadEvent::Error(e)] => e.clone(),
        other => panic!("{input:?} gave {other:?}"),
    }
}

/// RFC 9051 6.3.12 (and RFC 3501 6.3.11): the message of the APPEND example.
const APPEND_MESSAGE: &str = "Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\n\
From: Fred Foobar <foobar@Blurdybloop.example>\r\n\
Subject: afternoon meeting\r\n\
To: mooch@owatagu.siam.edu.example\r\n\
Message-Id: <B27397-0100000@Blurdybloop.example>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\
\r\n\
Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n";

/// Every example command, as the client sends it.
fn examples() -> Vec<String> {
    let mut all: Vec<String> = [
        "abcd CAPABILITY\r\n",
        "a002 NOOP\r\n",
        "A023 LOGOUT\r\n",
        "a002 STARTTLS\r\n",
        "a004 AUTHENTICATE PLAIN dGVzdAB0ZXN0AHRlc3Q=\r\n",
        "A001 AUTHENTICATE GSSAPI\r\n",
        "a001 LOGIN SMITH SESAME\r\n",
        "a001 LOGIN {5}\r\nSMITH {6}\r\nSESAME\r\n",
        "t2 ENABLE CONDSTORE X-GOOD-IDEA\r\n",
        "A142 SELECT INBOX\r\n",
        "A932 EXAMINE blurdybloop\r\n",
        "A003 CREATE owatagusiam/\r\n",
        "A004 CREATE owatagusiam/blurdybloop\r\n",
        "t1 CREATE MySpecial (USE (\\Drafts \\Sent))\r\n",
        "A683 DELETE blurdybloop\r\n",
        "A683 RENAME blurdybloop sarasoop\r\n",
        "A002 SUBSCRIBE #news.comp.mail.mime\r\n",
        "A002 UNSUBSCRIBE #news.comp.mail.mime\r\n",
        "A682 LIST \"\" *\r\n",
        "A101 LIST \"\" \"\"\r\n",
        "A102 LIST #news.comp.mail.misc \"\"\r\n",
        "A202 LIST ~/Mail/ %\r\n",
        "A02 LIST (SUBSCRIBED) \"\" \"*\"\r\n",
        "A03 LIST () \"\" \"%\" RETURN (CHILDREN)\r\n",
        "A04 LIST (REMOTE) \"\" \"%\" RETURN (CHILDREN)\r\n",
        "A05 LIST (SUBSCRIBED RECURSIVEMATCH) \"\" \"%\" RETURN (CHILDREN)\r\n",
        "A06 LIST \"\" (\"INBOX\" \"Drafts\" \"Sent/%\")\r\n",
        "t3 LIST (SPECIAL-USE) \"\" \"*\"\r\n",
        "t1 LIST \"\" \"%\" RETURN (SPECIAL-USE)\r\n",
        "A01 LIST \"\" % RETURN (STATUS (MESSAGES UNSEEN))\r\n",
        "A002 LSUB \"#news.\" \"comp.mail.*\"\r\n",
        "A001 NAMESPACE\r\n",
        "A042 STATUS blurdybloop (UIDNEXT MESSAGES)\r\n",
        "A001 IDLE\r\n",
        "A341 CLOSE\r\n",
        "A342 UNSELECT\r\n",
        "A202 EXPUNGE\r\n",
        "FXXZ CHECK\r\n",
        "A282 SEARCH RETURN (MIN COUNT) FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\"\r\n",
        "A283 SEARCH RETURN () FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\"\r\n",
        "A284 SEARCH TEXT \"string not in mailbox\"\r\n",
        "A285 SEARCH CHARSET UTF-8 TEXT {12}\r\n\u{43e}\u{442}\u{43f}\u{443}\u{441}\u{43a}\r\n",
        "A301 SEARCH RETURN (SAVE) SINCE 1-Jan-2004 NOT FROM \"Smith\"\r\n",
        "A302 FETCH $ (UID INTERNALDATE FLAGS RFC822.SIZE)\r\n",
        "A303 SEARCH UNDELETED UNKEYWORD $Junk (OR $ 1,3000:3021) TEXT {7}\r\nfishing\r\n",
        "a003 fetch 12 (flags internaldate rfc822.size envelope body[header])\r\n",
        "a004 fetch 12 body[header]\r\n",
        "A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])\r\n",
        "A655 FETCH 1 (BODY.PEEK[1.2.MIME] BODY[3]<0.1024> BINARY.PEEK[1] BINARY.SIZE[2] BINARY[]<5.10>)\r\n",
        "A656 FETCH 1:* FULL\r\n",
        "A657 FETCH 7 (RFC822 RFC822.HEADER RFC822.TEXT BODYSTRUCTURE BODY MODSEQ)\r\n",
        "a005 store 12 +flags \\deleted\r\n",
        "A003 STORE 2:4 +FLAGS (\\Deleted)\r\n",
        "A004 STORE 3 FLAGS.SILENT ()\r\n",
        "a UID STORE 1:* +FLAGS.SILENT (\\Deleted)\r\n",
        "a103 UID STORE 6,4,8 (UNCHANGEDSINCE 12121230045) -FLAGS.SILENT (\\Deleted $Junk)\r\n",
        "A003 COPY 2:4 MEETING\r\n",
        "a UID MOVE 42:69 foo\r\n",
        "A999 UID FETCH 4827313:4828442 FLAGS\r\n",
        "s100 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)\r\n",
        "A003 UID EXPUNGE 3000:3002\r\n",
        "A004 UID COPY 305:310 \"Other Messages\"\r\n",
        "A005 UID SEARCH UID 1:100 LARGER 1024 SMALLER 10000 HEADER Message-Id \"<x@y>\"\r\n",
        "a SEARCH MODSEQ \"/flags/\\\\draft\" all 620162338\r\n",
        "t SELECT INBOX (CONDSTORE)\r\n",
        "a023 ID (\"name\" \"sodr\" \"version\" \"19.34\" \"vendor\" \"Pink Floyd Music Limited\")\r\n",
        "a024 ID NIL\r\n",
        "G0001 GETQUOTA \"!partition/sda4\"\r\n",
        "A003 GETQUOTAROOT INBOX\r\n",
        "A006 SEARCH OR NEW OLD RECENT\r\n",
        "A007 SEARCH SENTBEFORE \"1-Feb-1994\" SENTON 2-Feb-1994 SENTSINCE 3-Feb-1994 BEFORE 4-Feb-1994 \
         ON 28-Feb-1994 ANSWERED DELETED DRAFT SEEN UNANSWERED UNDELETED UNDRAFT UNFLAGGED UNSEEN ALL \
         KEYWORD $Forwarded BCC a CC b TO c SUBJECT d BODY e\r\n",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    all.push(format!("A003 APPEND saved-messages (\\Seen) {{{}}}\r\n{APPEND_MESSAGE}\r\n", APPEND_MESSAGE.len()));
    all.push(format!(
        "A004 APPEND Drafts (\\Draft $MDNSent) \" 5-Nov-2020 12:00:00 +0100\" ~{{{}}}\r\n{APPEND_MESSAGE}\r\n",
        APPEND_MESSAGE.len()
    ));
    all.push(format!("A005 APPEND INBOX {{{}+}}\r\n{APPEND_MESSAGE}\r\n", APPEND_MESSAGE.len()));
    all
}

#[test]
fn every_example_parses() {
    for example in examples() {
        let events = events(example.as_bytes());
        assert!(matches!(events.last(), Some(ReadEvent::Command(_))), "{example:?} gave {events:?}");
    }
}

#[test]
fn every_split_gives_the_same_events() {
    let mut all = String::new();
    for example in examples() {
        let whole = events(example.as_bytes());
        assert_eq!(events_split(example.as_bytes(), 1), whole, "{example:?} byte by byte");
        for cut in 1..example.len() {
            let mut reader = CommandReader::new(Limits::default());
            let mut split = Vec::new();
            for piece in [&example.as_bytes()[..cut], &example.as_bytes()[cut..]] {
                reader.feed(piece);
                while let Some(event) = reader.next_event() {
                    split.push(event);
                }
            }
            assert_eq!(split, whole, "{example:?} cut at {cut}");
        }
        all.push_str(&example);
    }
    // All of them pipelined.
    let whole = events(all.as_bytes());
    for step in [1, 2, 3, 7, 64, 1000] {
        assert_eq!(events_split(all.as_bytes(), step), whole, "steps of {step}");
    }
}

#[test]
fn connection_commands() {
    assert_eq!(command("abcd CAPABILITY\r\n"), CommandBody::Capability);
    assert_eq!(command("a002 noop\r\n"), CommandBody::Noop);
    assert_eq!(command("A023 LOGOUT\r\n"), CommandBody::Logout);
    assert_eq!(command("a002 STARTTLS\r\n"), CommandBody::StartTls);
    assert_eq!(
        command("a004 AUTHENTICATE PLAIN dGVzdAB0ZXN0AHRlc3Q=\r\n"),
        CommandBody::Authenticate { mechanism: "PLAIN".into(), initial_response: Some("dGVzdAB0ZXN0AHRlc3Q=".into()) }
    );
    assert_eq!(
        command("A001 authenticate scram-sha-256 =\r\n"),
        CommandBody::Authenticate { mechanism: "SCRAM-SHA-256".into(), initial_response: Some("=".into()) }
    );
    assert_eq!(
        command("a001 LOGIN SMITH SESAME\r\n"),
        CommandBody::Login { username: "SMITH".into(), password: "SESAME".into() }
    );
    assert_eq!(
        command("a001 LOGIN \"fred\" {7}\r\np\"a ss\\\r\n"),
        CommandBody::Login { username: "fred".into(), password: "p\"a ss\\".into() }
    );
    assert_eq!(
        command("t2 ENABLE CONDSTORE X-GOOD-IDEA\r\n"),
        CommandBody::Enable(vec!["CONDSTORE".into(), "X-GOOD-IDEA".into()])
    );
    assert_eq!(command("A001 NAMESPACE\r\n"), CommandBody::Namespace);
    assert_eq!(
        command("a023 ID (\"name\" \"sodr\" \"version\" \"19.34\" \"os\" NIL)\r\n"),
        CommandBody::Id(Some(vec![
            ("name".into(), Some("sodr".into())),
            ("version".into(), Some("19.34".into())),
            ("os".into(), None)
        ]))
    );
    assert_eq!(command("a024 ID NIL\r\n"), CommandBody::Id(None));
    assert_eq!(command("G0001 GETQUOTA \"!partition/sda4\"\r\n"), CommandBody::GetQuota("!partition/sda4".into()));
    assert_eq!(command("A003 GETQUOTAROOT inbox\r\n"), CommandBody::GetQuotaRoot(mailbox("INBOX")));
}

#[test]
fn mailbox_commands() {
    assert_eq!(command("A142 SELECT INBOX\r\n"), CommandBody::Select { mailbox: mailbox("INBOX"), condstore: false });
    assert_eq!(
        command("t SELECT inbox (CONDSTORE)\r\n"),
        CommandBody::Select { mailbox: mailbox("INBOX"), condstore: true }
    );
    assert_eq!(
        command("A932 EXAMINE blurdybloop\r\n"),
        CommandBody::Examine { mailbox: mailbox("blurdybloop"), condstore: false }
    );
    assert_eq!(
        command("A003 CREATE owatagusiam/\r\n"),
        CommandBody::Create { mailbox: mailbox("owatagusiam/"), special_use: Vec::new() }
    );
    assert_eq!(
        command("t1 CREATE MySpecial (USE (\\Drafts \\Sent))\r\n"),
        CommandBody::Create {
            mailbox: mailbox("MySpecial"),
            special_use: vec![MailboxAttribute::Drafts, MailboxAttribute::Sent]
        }
    );
    assert_eq!(command("A683 DELETE blurdybloop\r\n"), CommandBody::Delete(mailbox("blurdybloop")));
    assert_eq!(
        command("A683 RENAME blurdybloop sarasoop\r\n"),
        CommandBody::Rename { from: mailbox("blurdybloop"), to: mailbox("sarasoop") }
    );
    assert_eq!(
        command("A002 SUBSCRIBE #news.comp.mail.mime\r\n"),
        CommandBody::Subscribe(mailbox("#news.comp.mail.mime"))
    );
    assert_eq!(command("A002 UNSUBSCRIBE \"a b\"\r\n"), CommandBody::Unsubscribe(mailbox("a b")));
    assert_eq!(
        command("A042 STATUS blurdybloop (UIDNEXT MESSAGES)\r\n"),
        CommandBody::Status { mailbox: mailbox("blurdybloop"), items: vec![StatusItem::UidNext, StatusItem::Messages] }
    );
    assert_eq!(
        command("A043 STATUS x (UNSEEN DELETED SIZE HIGHESTMODSEQ RECENT UIDVALIDITY)\r\n"),
        CommandBody::Status {
            mailbox: mailbox("x"),
            items: vec![
                StatusItem::Unseen,
                StatusItem::Deleted,
                StatusItem::Size,
                StatusItem::HighestModSeq,
                StatusItem::Recent,
                StatusItem::UidValidity
            ]
        }
    );
    // RFC 3501 5.1.3: an IMAP4rev1 client's names are modified UTF-7.
    assert_eq!(
        command("A1 SELECT Entw&APw-rfe\r\n"),
        CommandBody::Select { mailbox: mailbox("Entw\u{fc}rfe"), condstore: false }
    );
}

#[test]
fn utf8_names_after_enable() {
    let mut reader = CommandReader::new(Limits::default());
    reader.feed("A1 SELECT Entw&APw-rfe\r\nA2 SELECT \"Entw\u{fc}rfe\"\r\n".as_bytes());
    let Some(ReadEvent::Command(first)) = reader.next_event() else { panic!() };
    assert_eq!(first.body, CommandBody::Select { mailbox: mailbox("Entw\u{fc}rfe"), condstore: false });
    // ENABLE IMAP4rev2 took effect between the two pipelined commands.
    reader.set_encoding(NameEncoding::Utf8);
    let Some(ReadEvent::Command(second)) = reader.next_event() else { panic!() };
    assert_eq!(second.body, CommandBody::Select { mailbox: mailbox("Entw\u{fc}rfe"), condstore: false });
    reader.feed(b"A3 SELECT Entw&APw-rfe\r\n");
    let Some(ReadEvent::Command(third)) = reader.next_event() else { panic!() };
    assert_eq!(third.body, CommandBody::Select { mailbox: mailbox("Entw&APw-rfe"), condstore: false });
    assert!(
        matches!(events(b"A4 SELECT &Jjo\r\n").as_slice(), [ReadEvent::Error(e)] if e.kind == CommandErrorKind::Syntax)
    );
}

#[test]
fn list_forms() {
    assert_eq!(
        command("A682 LIST \"\" *\r\n"),
        CommandBody::List {
            reference: mailbox(""),
            patterns: vec!["*".into()],
            selection: ListSelection::default(),
            returns: ListReturn::default()
        }
    );
    assert_eq!(
        command("A202 LIST ~/Mail/ %\r\n"),
        CommandBody::List {
            reference: mailbox("~/Mail/"),
            patterns: vec!["%".into()],
            selection: ListSelection::default(),
            returns: ListReturn::default()
        }
    );
    assert_eq!(
        command("A05 LIST (SUBSCRIBED RECURSIVEMATCH) \"\" \"%\" RETURN (CHILDREN SPECIAL-USE SUBSCRIBED)\r\n"),
        CommandBody::List {
            reference: mailbox(""),
            patterns: vec!["%".into()],
            selection: ListSelection { subscribed: true, recursive_match: true, ..ListSelection::default() },
            returns: ListReturn { children: true, special_use: true, subscribed: true, status: None }
        }
    );
    assert_eq!(
        command("A06 LIST (REMOTE SPECIAL-USE) \"\" (\"INBOX\" \"Drafts\" Sent/%)\r\n"),
        CommandBody::List {
            reference: mailbox(""),
            patterns: vec!["INBOX".into(), "Drafts".into(), "Sent/%".into()],
            selection: ListSelection { remote: true, special_use: true, ..ListSelection::default() },
            returns: ListReturn::default()
        }
    );
    assert_eq!(
        command("A01 LIST \"\" % RETURN (STATUS (MESSAGES UNSEEN))\r\n"),
        CommandBody::List {
            reference: mailbox(""),
            patterns: vec!["%".into()],
            selection: ListSelection::default(),
            returns: ListReturn {
                status: Some(vec![StatusItem::Messages, StatusItem::Unseen]),
                ..ListReturn::default()
            }
        }
    );
    assert_eq!(
        command("A002 LSUB \"#news.\" \"comp.mail.*\"\r\n"),
        CommandBody::Lsub { reference: mailbox("#news."), pattern: "comp.mail.*".into() }
    );
    // RFC 5258 3.1: RECURSIVEMATCH needs another selection option.
    assert_eq!(error("A1 LIST (RECURSIVEMATCH) \"\" %\r\n").kind, CommandErrorKind::Syntax);
    assert_eq!(error("A1 LIST (BOGUS) \"\" %\r\n").kind, CommandErrorKind::Syntax);
}

#[test]
fn append_forms() {
    let example = format!("A003 APPEND saved-messages (\\Seen) {{{}}}\r\n{APPEND_MESSAGE}\r\n", APPEND_MESSAGE.len());
    let events = events(example.as_bytes());
    assert_eq!(events[0], ReadEvent::SendContinuation);
    assert_eq!(
        events[1],
        ReadEvent::Command(Command {
            tag: tag("A003"),
            body: CommandBody::Append {
                mailbox: mailbox("saved-messages"),
                flags: vec![Flag::Seen],
                date: None,
                message: APPEND_MESSAGE.as_bytes().to_vec(),
                binary: false
            }
        })
    );
    assert_eq!(
        command("A004 APPEND Drafts (\\Draft $MDNSent) \" 5-Nov-2020 12:00:00 +0100\" ~{3}\r\na\0b\r\n"),
        CommandBody::Append {
            mailbox: mailbox("Drafts"),
            flags: vec![Flag::Draft, Flag::Keyword("$MDNSent".into())],
            date: Some(DateTime { unix: 1_604_574_000, offset_minutes: 60 }),
            message: b"a\0b".to_vec(),
            binary: true
        }
    );
    assert_eq!(
        command("A005 APPEND INBOX \"17-Jul-1996 02:44:25 -0700\" {1+}\r\nx\r\n"),
        CommandBody::Append {
            mailbox: mailbox("INBOX"),
            flags: Vec::new(),
            date: Some(DateTime { unix: 837_596_665, offset_minutes: -420 }),
            message: b"x".to_vec(),
            binary: false
        }
    );
    // A non-synchronizing literal needs no continuation.
    assert_eq!(events_split(b"A005 APPEND INBOX {1+}\r\nx\r\n", 1).len(), 1);
    assert_eq!(error("A1 APPEND INBOX \"31-Feb-2020 00:00:00 +0000\" {1}\r\nx\r\n").kind, CommandErrorKind::Syntax);
    assert_eq!(error("A1 APPEND INBOX {1}\r\n\0\r\n").kind, CommandErrorKind::Syntax);
    assert_eq!(error("A1 APPEND INBOX\r\n").kind, CommandErrorKind::Syntax);
}

#[test]
fn search_forms() {
    let smith = SearchKey::Not(Box::new(SearchKey::From("Smith".into())));
    let feb1 = Date::new(1994, 2, 1).unwrap();
    assert_eq!(
        command("A282 SEARCH RETURN (MIN COUNT) FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\"\r\n"),
        CommandBody::Search {
            uid: false,
            charset: None,
            returns: Some(vec![SearchReturn::Min, SearchReturn::Count]),
            criteria: SearchKey::And(vec![SearchKey::Flagged, SearchKey::Since(feb1), smith.clone()])
        }
    );
    assert_eq!(
        command("A283 SEARCH RETURN () FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\"\r\n"),
        CommandBody::Search {
            uid: false,
            charset: None,
            returns: Some(Vec::new()),
            criteria: SearchKey::And(vec![SearchKey::Flagged, SearchKey::Since(feb1), smith])
        }
    );
    assert_eq!(
        command("A285 SEARCH CHARSET UTF-8 TEXT {12}\r\n\u{43e}\u{442}\u{43f}\u{443}\u{441}\u{43a}\r\n"),
        CommandBody::Search {
            uid: false,
            charset: Some("UTF-8".into()),
            returns: None,
            criteria: SearchKey::Text("\u{43e}\u{442}\u{43f}\u{443}\u{441}\u{43a}".into())
        }
    );
    // RFC 9051 6.4.4: an unsupported charset is a NO [BADCHARSET].
    let bad = error("A286 SEARCH CHARSET KOI8-R (OR $ 1,3000:3021) TEXT {4}\r\nabcd\r\n");
    assert_eq!(bad.kind, CommandErrorKind::BadCharset);
    assert_eq!(
        String::from_utf8(bad.response().to_wire()).unwrap(),
        "A286 NO [BADCHARSET (UTF-8 US-ASCII)] Only UTF-8 and US-ASCII searches are supported\r\n"
    );
    assert_eq!(
        command("A303 UID SEARCH UNKEYWORD $Junk (OR $ 1,3000:3021) UID 5:*\r\n"),
        CommandBody::Search {
            uid: true,
            charset: None,
            returns: None,
            criteria: SearchKey::And(vec![
                SearchKey::Unkeyword("$Junk".into()),
                SearchKey::And(vec![SearchKey::Or(
                    Box::new(SearchKey::SequenceSet(SequenceSet::Saved)),
                    Box::new(SearchKey::SequenceSet(set("1,3000:3021")))
                )]),
                SearchKey::Uid(set("5:*"))
            ])
        }
    );
    assert_eq!(
        command("a SEARCH MODSEQ \"/flags/\\\\draft\" all 620162338\r\n"),
        CommandBody::Search {
            uid: false,
            charset: None,
            returns: None,
            criteria: SearchKey::ModSeq { entry: Some(("/flags/\\draft".into(), EntryType::All)), modseq: 620162338 }
        }
    );
    assert_eq!(
        command("a SEARCH HEADER Message-Id \"<x@y>\" LARGER 1024\r\n"),
        CommandBody::Search {
            uid: false,
            charset: None,
            returns: None,
            criteria: SearchKey::And(vec![
                SearchKey::Header("Message-Id".into(), "<x@y>".into()),
                SearchKey::Larger(1024)
            ])
        }
    );
    assert_eq!(error("a SEARCH\r\n").kind, CommandErrorKind::Syntax);
    assert_eq!(error("a SEARCH BOGUS\r\n").kind, CommandErrorKind::Syntax);
    assert_eq!(error("a SEARCH SINCE 32-Jan-2000\r\n").kind, CommandErrorKind::Syntax);
    assert_eq!(error("a SEARCH KEYWORD \\Seen\r\n").kind, CommandErrorKind::Syntax);
    // Nesting is bounded: no stack overflow however deep a client nests.
    let deep = format!("a SEARCH {}ALL{}\r\n", "(".repeat(10_000), ")".repeat(10_000));
    assert_eq!(error(&deep).kind, CommandErrorKind::Syntax);
    let deep = format!("a SEARCH {}ALL\r\n", "NOT ".repeat(10_000));
    assert_eq!(error(&deep).kind, CommandErrorKind::Syntax);
}

#[test]
fn fetch_forms() {
    assert_eq!(
        command("a003 fetch 12 (flags internaldate rfc822.size envelope body[header])\r\n"),
        CommandBody::Fetch {
            uid: false,
            set: set("12"),
            attributes: vec![
                FetchAttribute::Flags,
                FetchAttribute::InternalDate,
                FetchAttribute::Rfc822Size,
                FetchAttribute::Envelope,
                FetchAttribute::BodySection {
                    section: Section { part: Vec::new(), text: Some(SectionText::Header) },
                    partial: None,
                    peek: false
                }
            ],
            changed_since: None
        }
    );
    assert_eq!(
        command("A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])\r\n"),
        CommandBody::Fetch {
            uid: false,
            set: set("2:4"),
            attributes: vec![
                FetchAttribute::Flags,
                FetchAttribute::BodySection {
                    section: Section {
                        part: Vec::new(),
                        text: Some(SectionText::HeaderFields(vec!["DATE".into(), "FROM".into()]))
                    },
                    partial: None,
                    peek: false
                }
            ],
            changed_since: None
        }
    );
    assert_eq!(
        command("A655 FETCH 1 (BODY.PEEK[1.2.MIME] BODY[3]<0.1024> BINARY.PEEK[1] BINARY.SIZE[2] BINARY[]<5.10>)\r\n"),
        CommandBody::Fetch {
            uid: false,
            set: set("1"),
            attributes: vec![
                FetchAttribute::BodySection {
                    section: Section { part: vec![1, 2], text: Some(SectionText::Mime) },
                    partial: None,
                    peek: true
                },
                FetchAttribute::BodySection {
                    section: Section { part: vec![3], text: None },
                    partial: Some(Partial { offset: 0, length: 1024 }),
                    peek: false
                },
                FetchAttribute::Binary { part: vec![1], partial: None, peek: true },
                FetchAttribute::BinarySize { part: vec![2] },
                FetchAttribute::Binary {
                    part: Vec::new(),
                    partial: Some(Partial { offset: 5, length: 10 }),
                    peek: false
                },
            ],
            changed_since: None
        }
    );
    assert_eq!(
        command("A656 FETCH 1:* FULL\r\n"),
        CommandBody::Fetch {
            uid: false,
            set: set("1:*"),
            attributes: vec![
                FetchAttribute::Flags,
                FetchAttribute::InternalDate,
                FetchAttribute::Rfc822Size,
                FetchAttribute::Envelope,
                FetchAttribute::Body
            ],
            changed_since: None
        }
    );
    assert_eq!(
        command("s100 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)\r\n"),
        CommandBody::Fetch {
            uid: true,
            set: set("1:*"),
            attributes: vec![FetchAttribute::Flags],
            changed_since: Some(12345)
        }
    );
    assert_eq!(
        command("A999 UID FETCH 4827313:4828442 FLAGS\r\n"),
        CommandBody::Fetch {
            uid: true,
            set: set("4827313:4828442"),
            attributes: vec![FetchAttribute::Flags],
            changed_since: None
        }
    );
    let CommandBody::Fetch { attributes, .. } =
        command("A657 FETCH 7 (RFC822 RFC822.HEADER RFC822.TEXT BODYSTRUCTURE BODY MODSEQ UID BODY[] BINARY[])\r\n")
    else {
        panic!()
    };
    assert_eq!(
        &attributes[..7],
        &[
            FetchAttribute::Rfc822,
            FetchAttribute::Rfc822Header,
            FetchAttribute::Rfc822Text,
            FetchAttribute::BodyStructure,
            FetchAttribute::Body,
            FetchAttribute::ModSeq,
            FetchAttribute::Uid
        ]
    );
    assert!(attributes.iter().filter(|a| a.is_whole_message()).count() == 3);
    assert!(attributes[0].sets_seen() && !attributes[1].sets_seen());
    for bad in [
        "a FETCH 0 FLAGS\r\n",
        "a FETCH 1 BODY[MIME]\r\n",
        "a FETCH 1 BODY[1.]\r\n",
        "a FETCH 1 BODY[]<1.0>\r\n",
        "a FETCH 1 (FLAGS\r\n",
        "a FETCH 1 ()\r\n",
        "a FETCH 1 FLAGS (CHANGEDSINCE 0)\r\n",
        "a FETCH 1,,2 FLAGS\r\n",
        "a FETCH 1 BOGUS\r\n",
    ] {
        assert_eq!(error(bad).kind, CommandErrorKind::Syntax, "{bad:?}");
    }
}

#[test]
fn store_copy_move_expunge() {
    assert_eq!(
        command("a005 store 12 +flags \\deleted\r\n"),
        CommandBody::Store {
            uid: false,
            set: set("12"),
            action: StoreAction {
                mode: StoreMode::Add,
                silent: false,
                flags: vec![Flag::Deleted],
                unchanged_since: None
            }
        }
    );
    assert_eq!(
        command("a UID STORE 1:* +FLAGS.SILENT (\\Deleted)\r\n"),
        CommandBody::Store {
            uid: true,
            set: set("1:*"),
            action: StoreAction {
                mode: StoreMode::Add,
                silent: true,
                flags: vec![Flag::Deleted],
                unchanged_since: None
            }
        }
    );
    assert_eq!(
        command("a103 UID STORE 6,4,8 (UNCHANGEDSINCE 12121230045) -FLAGS.SILENT (\\Deleted $Junk)\r\n"),
        CommandBody::Store {
            uid: true,
            set: set("6,4,8"),
            action: StoreAction {
                mode: StoreMode::Remove,
                silent: true,
                flags: vec![Flag::Deleted, Flag::Keyword("$Junk".into())],
                unchanged_since: Some(12121230045)
            }
        }
    );
    assert_eq!(
        command("A004 STORE 3 FLAGS ()\r\n"),
        CommandBody::Store {
            uid: false,
            set: set("3"),
            action: StoreAction { mode: StoreMode::Replace, silent: false, flags: Vec::new(), unchanged_since: None }
        }
    );
    assert_eq!(
        command("A003 COPY 2:4 MEETING\r\n"),
        CommandBody::Copy { uid: false, set: set("2:4"), mailbox: mailbox("MEETING") }
    );
    assert_eq!(
        command("a UID MOVE 42:69 foo\r\n"),
        CommandBody::Move { uid: true, set: set("42:69"), mailbox: mailbox("foo") }
    );
    assert_eq!(
        command("A302 MOVE $ Trash\r\n"),
        CommandBody::Move { uid: false, set: set("$"), mailbox: mailbox("Trash") }
    );
    assert_eq!(command("A003 UID EXPUNGE 3000:3002\r\n"), CommandBody::UidExpunge(set("3000:3002")));
    for bad in
        ["a STORE 1 FLAGS\r\n", "a STORE 1 +FLAGS.LOUD (\\Seen)\r\n", "a STORE 1 FLAGS (\\)\r\n", "a UID BOGUS 1\r\n"]
    {
        assert_eq!(error(bad).kind, CommandErrorKind::Syntax, "{bad:?}");
    }
}

#[test]
fn garbage_gets_an_error_and_the_next_command_parses() {
    let garbage: [&[u8]; 12] = [
        b"garbage\r\n",
        b"* NOOP\r\n",
        b"+tag NOOP\r\n",
        b"a\r\n",
        b"a \r\n",
        b"a XYZZY\r\n",
        b"\x00\xff\xfe\r\n",
        b"a LOGIN \"unterminated\r\n",
        b"a LOGIN {x}\r\n",
        b"a SELECT \"\xff\"\r\n",
        b"a NOOP extra\r\n",
        b"a FETCH 1 BODY[HEADER.FIELDS ()]\r\n",
    ];
    for bad in garbage {
        let mut input = bad.to_vec();
        input.extend_from_slice(b"n1 NOOP\r\n");
        let events = events(&input);
        assert!(
            matches!(
                events.as_slice(),
                [ReadEvent::Error(_), ReadEvent::Command(Command { body: CommandBody::Noop, .. })]
            ),
            "{:?} gave {events:?}",
            String::from_utf8_lossy(bad)
        );
        assert_eq!(events_split(&input, 1), events);
    }
    let unknown = error("a XYZZY\r\n");
    assert_eq!(unknown.kind, CommandErrorKind::UnknownCommand);
    assert_eq!(String::from_utf8(unknown.response().to_wire()).unwrap(), "a BAD Unknown command\r\n");
    assert_eq!(error("garbage\r\n").tag, None);
    // Blank lines are ignored; bare LF ends a line.
    assert!(matches!(events(b"\r\n\na NOOP\n").as_slice(), [ReadEvent::Command(_)]));
}

fn small_limits() -> Limits {
    Limits { max_line: 100, max_literal: 1000, max_command: 300 }
}

fn limited(input: &[u8], step: usize) -> Vec<ReadEvent> {
    let mut reader = CommandReader::new(small_limits());
    let mut events = Vec::new();
    for chunk in input.chunks(if step == 0 { input.len() } else { step }) {
        reader.feed(chunk);
        while let Some(event) = reader.next_event() {
            events.push(event);
        }
        // Never more than one literal, one command budget and one chunk.
        assert!(step == 0 || reader.buffered() <= 1000 + 300 + step, "buffered {}", reader.buffered());
    }
    events
}

fn check_limited(input: &[u8], expected: &[Option<CommandErrorKind>]) {
    let whole = limited(input, 0);
    let kinds: Vec<Option<CommandErrorKind>> = whole
        .iter()
        .filter(|e| **e != ReadEvent::SendContinuation)
        .map(|e| match e {
            ReadEvent::Error(e) => Some(e.kind),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, expected, "{:?}: {whole:?}", String::from_utf8_lossy(input));
    for step in [1, 5, 64] {
        assert_eq!(limited(input, step), whole, "steps of {step}");
    }
}

#[test]
fn long_lines_are_refused_and_skipped() {
    let mut input = format!("a1 NOOP {}\r\n", "x".repeat(500)).into_bytes();
    input.extend_from_slice(b"a2 NOOP\r\n");
    check_limited(&input, &[Some(CommandErrorKind::LineTooLong), None]);
    let events = limited(&input, 0);
    let ReadEvent::Error(e) = &events[0] else { panic!() };
    assert_eq!(e.tag, Some(tag("a1")));
    assert_eq!(String::from_utf8(e.response().to_wire()).unwrap(), "a1 BAD [LIMIT] Command line too long\r\n");
    // A long line that announces a non-synchronizing literal: the literal is skipped too,
    // even when it looks like commands.
    let mut input = format!("a1 LOGIN {} {{22+}}\r\n", "x".repeat(200)).into_bytes();
    input.extend_from_slice(b"b1 LOGOUT\r\nb2 LOGOUT\r\n\r\na2 NOOP\r\n");
    check_limited(&input, &[Some(CommandErrorKind::LineTooLong), None]);
    // Without a tag in reach, the error is untagged.
    let input = format!("{}\r\na2 NOOP\r\n", "y".repeat(300));
    check_limited(input.as_bytes(), &[Some(CommandErrorKind::LineTooLong), None]);
    assert!(matches!(&limited(input.as_bytes(), 0)[0], ReadEvent::Error(e) if e.tag.is_none()));
}

#[test]
fn literal_limits() {
    // A synchronizing literal over the limit: no continuation, BAD [TOOBIG]; the client
    // sends nothing more of it.
    let input = b"a1 LOGIN {5000}\r\na2 NOOP\r\n";
    check_limited(input, &[Some(CommandErrorKind::LiteralTooLarge), None]);
    assert!(!limited(input, 0).contains(&ReadEvent::SendContinuation));
    // RFC 7888 4: a non-synchronizing literal over 4096 is refused and skipped.
    let mut input = b"a1 APPEND INBOX {5000+}\r\n".to_vec();
    input.extend(std::iter::repeat_n(b"z NOOP\r\n".as_slice(), 625).flatten());
    input.extend_from_slice(b"\r\na2 NOOP\r\n");
    assert_eq!(input.len(), 25 + 5000 + 2 + 9);
    let mut reader = CommandReader::new(Limits::default());
    reader.feed(&input);
    let ReadEvent::Error(e) = reader.next_event().unwrap() else { panic!() };
    assert_eq!(
        String::from_utf8(e.response().to_wire()).unwrap(),
        "a1 BAD [TOOBIG] Non-synchronizing literals are limited to 4096 octets\r\n"
    );
    assert!(matches!(reader.next_event(), Some(ReadEvent::Command(Command { body: CommandBody::Noop, .. }))));
    assert_eq!(reader.next_event(), None);
    // Within small limits: a non-synchronizing literal over the command budget is skipped.
    let mut input = b"a1 LOGIN {400+}\r\n".to_vec();
    input.extend_from_slice(&[b'q'; 400]);
    input.extend_from_slice(b" x\r\na2 NOOP\r\n");
    check_limited(&input, &[Some(CommandErrorKind::LiteralTooLarge), None]);
    // The APPEND message may exceed max_command, up to max_literal, once.
    let mut input = b"a1 APPEND INBOX {900}\r\n".to_vec();
    input.extend_from_slice(&[b'm'; 900]);
    input.extend_from_slice(b"\r\na2 APPEND INBOX {1001}\r\na3 NOOP\r\n");
    check_limited(&input, &[None, Some(CommandErrorKind::LiteralTooLarge), None]);
    let mut input = b"a1 APPEND {5}\r\nINBOX {900}\r\n".to_vec();
    input.extend_from_slice(&[b'm'; 900]);
    input.extend_from_slice(b" {900}\r\na3 NOOP\r\n");
    check_limited(&input, &[Some(CommandErrorKind::LiteralTooLarge), None]);
    // Many small literals add up to max_command.
    let mut input = b"a1 ID (".to_vec();
    for _ in 0..10 {
        input.extend_from_slice(b"{40}\r\n");
        input.extend_from_slice(&[b'k'; 40]);
        input.push(b' ');
    }
    input.extend_from_slice(b"NIL)\r\na2 NOOP\r\n");
    let whole = limited(&input, 0);
    assert!(whole.iter().any(|e| matches!(e, ReadEvent::Error(e) if e.kind == CommandErrorKind::LiteralTooLarge)));
    assert!(matches!(whole.last(), Some(ReadEvent::Command(Command { body: CommandBody::Noop, .. }))));
    // The APPEND message is held to max_literal even where max_command has room; a
    // mailbox name as a literal is not the message.
    let limits = Limits { max_line: 1024, max_literal: 50, max_command: 4096 };
    let mut reader = CommandReader::new(limits);
    reader.feed(b"a1 APPEND INBOX (\\Seen) {100}\r\n");
    assert!(matches!(reader.next_event(), Some(ReadEvent::Error(e)) if e.kind == CommandErrorKind::LiteralTooLarge));
    let mut reader = CommandReader::new(limits);
    reader.feed(b"a2 APPEND {60}\r\n");
    assert_eq!(reader.next_event(), Some(ReadEvent::SendContinuation));
    reader.feed(&[b'n'; 60]);
    reader.feed(b" {20}\r\n");
    assert_eq!(reader.next_event(), Some(ReadEvent::SendContinuation));
    // A literal8 outside APPEND is a syntax error, not a framing one.
    assert_eq!(error("a LOGIN ~{1}\r\nx y\r\n").kind, CommandErrorKind::Syntax);
}

#[test]
fn authenticate_exchange() {
    let mut reader = CommandReader::new(Limits::default());
    reader.feed(b"A001 AUTHENTICATE PLAIN\r\ndGVzdAB0ZXN0AHRlc3Q=\r\nA002 NOOP\r\n");
    let Some(ReadEvent::Command(command)) = reader.next_event() else { panic!() };
    assert_eq!(command.body, CommandBody::Authenticate { mechanism: "PLAIN".into(), initial_response: None });
    // The server sent `+ ` and expects the response line.
    reader.expect_authenticate_response();
    assert_eq!(reader.next_event(), Some(ReadEvent::AuthenticateResponse(b"dGVzdAB0ZXN0AHRlc3Q=".to_vec())));
    assert!(matches!(reader.next_event(), Some(ReadEvent::Command(Command { body: CommandBody::Noop, .. }))));
    // `*` cancels (RFC 9051 6.2.2); it is passed on as it is.
    reader.expect_authenticate_response();
    reader.feed(b"*\r\n");
    assert_eq!(reader.next_event(), Some(ReadEvent::AuthenticateResponse(b"*".to_vec())));
    // A response line that looks like a literal is not one.
    reader.expect_authenticate_response();
    reader.feed(b"{5}\r\n");
    assert_eq!(reader.next_event(), Some(ReadEvent::AuthenticateResponse(b"{5}".to_vec())));
    assert_eq!(reader.next_event(), None);
}

#[test]
fn idle_and_done() {
    let mut reader = CommandReader::new(Limits::default());
    reader.feed(b"A001 IDLE\r\ndone\r\nA002 IDLE\r\nNOOP\r\nA003 NOOP\r\n");
    assert!(matches!(reader.next_event(), Some(ReadEvent::Command(Command { body: CommandBody::Idle, .. }))));
    reader.expect_idle_done();
    assert_eq!(reader.next_event(), Some(ReadEvent::IdleDone));
    assert!(matches!(reader.next_event(), Some(ReadEvent::Command(Command { body: CommandBody::Idle, .. }))));
    reader.expect_idle_done();
    assert!(matches!(reader.next_event(), Some(ReadEvent::Error(e)) if e.kind == CommandErrorKind::ExpectedDone));
    assert!(matches!(reader.next_event(), Some(ReadEvent::Command(Command { body: CommandBody::Noop, .. }))));
    assert!(!reader.has_partial_input());
    reader.feed(b"A004 NO");
    assert_eq!(reader.next_event(), None);
    assert!(reader.has_partial_input());
}

#[test]
fn parse_command_alone() {
    // The parser takes a command without its CRLF, literals inline.
    let command = parse_command(b"a1 LOGIN {3}\r\nabc \"d\"", NameEncoding::Utf8).unwrap();
    assert_eq!(command.body, CommandBody::Login { username: "abc".into(), password: "d".into() });
    assert!(parse_command(b"a1 LOGIN {30}\r\nabc", NameEncoding::Utf8).is_err());
    assert_eq!(command.body.name(), "LOGIN");
}

/// What `fuzz/fuzz_targets/imap_command.rs` checks, on pseudo-random token soup: the same
/// events however the input is split, with a driver answering IDLE and AUTHENTICATE.
#[test]
fn token_soup_splits_consistently() {
    const TOKENS: [&str; 32] = [
        "a1 ",
        "A2 ",
        "NOOP",
        "IDLE",
        "DONE",
        "AUTHENTICATE PLAIN",
        "APPEND INBOX ",
        "LOGIN ",
        "FETCH 1:* ",
        "(FLAGS BODY[])",
        "SEARCH ",
        "OR ",
        "NOT ",
        "(",
        ")",
        "\"q\\\"s\"",
        "{3}",
        "{4+}",
        "~{2}",
        "{5000+}",
        "{99999}",
        "\r\n",
        "\n",
        " ",
        "x",
        "&Jjo-",
        "*",
        "$",
        "\0",
        "\u{e9}",
        "ENABLE IMAP4rev2",
        "1,2:4",
    ];
    let limits = Limits { max_line: 200, max_literal: 2000, max_command: 600 };
    let run = |input: &[u8], step: usize| {
        let mut reader = CommandReader::new(limits);
        let mut events = Vec::new();
        for chunk in input.chunks(step.max(1)) {
            reader.feed(chunk);
            while let Some(event) = reader.next_event() {
                match &event {
                    ReadEvent::Command(c) if c.body == CommandBody::Idle => reader.expect_idle_done(),
                    ReadEvent::Command(Command {
                        body: CommandBody::Authenticate { initial_response: None, .. },
                        ..
                    }) => reader.expect_authenticate_response(),
                    ReadEvent::Command(Command { body: CommandBody::Enable(_), .. }) => {
                        reader.set_encoding(NameEncoding::Utf8)
                    }
                    ReadEvent::Error(e) => {
                        let wire = e.response().to_wire();
                        assert_eq!(wire.iter().filter(|&&b| b == b'\n').count(), 1);
                    }
                    _ => {}
                }
                events.push(event);
            }
            assert!(reader.buffered() <= 2000 + 600 + step + 64);
        }
        events
    };
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..300 {
        let mut input = Vec::new();
        let tokens = next() % 60;
        for _ in 0..tokens {
            let token = TOKENS[(next() % TOKENS.len() as u64) as usize];
            input.extend_from_slice(token.as_bytes());
            if token == "{5000+}" && next() % 2 == 0 {
                input.extend_from_slice(b"\r\n");
                input.extend(std::iter::repeat_n(b'z', 5000));
            }
        }
        let whole = run(&input, input.len());
        for step in [1, 2, 13] {
            assert_eq!(run(&input, step), whole, "{:?} in steps of {step}", String::from_utf8_lossy(&input));
        }
    }
}

#[test]
fn modified_utf7_round_trips() {
    for name in ["", "&", "&&-", "a&b-c", "\u{e9}&\u{e9}", "\u{1f600}\u{1f601}x\u{1f602}", "\u{fc}\u{fc}\u{fc}", "-&-"]
    {
        let wire = types::encode_modified_utf7(name);
        assert!(wire.is_ascii());
        assert_eq!(types::decode_modified_utf7(&wire).as_deref(), Ok(name), "{wire}");
    }
}
