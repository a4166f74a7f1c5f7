//! Server responses (RFC 9051 7): status responses with their response codes, untagged
//! data, FETCH data items and continuation requests, written as octets.
//!
//! Strings go out quoted when they can (RFC 9051 4.3: no CR, LF or NUL; 8-bit only to a
//! client that enabled IMAP4rev2 or UTF8=ACCEPT) and as literals otherwise. Mailbox names
//! are written in the connection's [`NameEncoding`]. Free text has its control characters
//! replaced, so no text can inject a line of its own.

use std::borrow::Cow;
use std::fmt::Write as _;

pub use super::strings::{write_astring, write_literal, write_literal8, write_mailbox, write_nstring, write_string};
use super::types::{
    DateTime, Flag, MailboxAttribute, MailboxName, NameEncoding, Section, SequenceSet, StatusItem, Tag,
};

/// RFC 9051 7.1 status conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
    /// Only untagged, in the greeting (RFC 9051 7.1.4).
    PreAuth,
    /// Only untagged (RFC 9051 7.1.5).
    Bye,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::No => "NO",
            Status::Bad => "BAD",
            Status::PreAuth => "PREAUTH",
            Status::Bye => "BYE",
        }
    }
}

/// RFC 9051 7.1 response codes, with those of UIDPLUS (RFC 4315 3), CONDSTORE (RFC 7162
/// 3.1.2, 3.2.x), RFC 4469 TOOBIG and RFC 6154 USEATTR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseCode {
    Alert,
    AlreadyExists,
    /// RFC 4315 3: `APPENDUID uidvalidity uid`.
    AppendUid {
        uid_validity: u32,
        uid: u32,
    },
    AuthenticationFailed,
    AuthorizationFailed,
    BadCharset(Vec<String>),
    Cannot,
    Capability(Vec<String>),
    ClientBug,
    /// RFC 9051 7.1: the previous mailbox was closed by SELECT/EXAMINE.
    Closed,
    ContactAdmin,
    /// RFC 4315 3: `COPYUID uidvalidity source-uids destination-uids`.
    CopyUid {
        uid_validity: u32,
        source: SequenceSet,
        destination: SequenceSet,
    },
    Corruption,
    Expired,
    ExpungeIssued,
    HasChildren,
    /// RFC 7162 3.1.2.1.
    HighestModSeq(u64),
    InUse,
    Limit,
    /// RFC 7162 3.1.3: the messages STORE UNCHANGEDSINCE did not change.
    Modified(SequenceSet),
    /// RFC 7162 3.1.2.2.
    NoModSeq,
    NonExistent,
    NoPerm,
    OverQuota,
    Parse,
    /// `PERMANENTFLAGS (flags)`, with `\*` when clients may create keywords.
    PermanentFlags {
        flags: Vec<Flag>,
        new_keywords: bool,
    },
    PrivacyRequired,
    ReadOnly,
    ReadWrite,
    ServerBug,
    /// RFC 4469 5, RFC 7888 4.
    TooBig,
    TryCreate,
    UidNext(u32),
    UidNotSticky,
    UidValidity(u32),
    Unavailable,
    UnknownCte,
    /// RFC 3501 7.1, IMAP4rev1 only: the first unseen message.
    Unseen(u32),
    /// RFC 6154 6.
    UseAttr,
}

impl ResponseCode {
    fn write_to(&self, out: &mut Vec<u8>) {
        let word = |out: &mut Vec<u8>, w: &str| out.extend_from_slice(w.as_bytes());
        match self {
            ResponseCode::Alert => word(out, "ALERT"),
            ResponseCode::AlreadyExists => word(out, "ALREADYEXISTS"),
            ResponseCode::AppendUid { uid_validity, uid } => word(out, &format!("APPENDUID {uid_validity} {uid}")),
            ResponseCode::AuthenticationFailed => word(out, "AUTHENTICATIONFAILED"),
            ResponseCode::AuthorizationFailed => word(out, "AUTHORIZATIONFAILED"),
            ResponseCode::BadCharset(charsets) => {
                word(out, "BADCHARSET");
                if !charsets.is_empty() {
                    word(out, " (");
                    for (i, charset) in charsets.iter().enumerate() {
                        if i > 0 {
                            out.push(b' ');
                        }
                        write_astring(charset.as_bytes(), NameEncoding::ModifiedUtf7, out);
                    }
                    out.push(b')');
                }
            }
            ResponseCode::Cannot => word(out, "CANNOT"),
            ResponseCode::Capability(capabilities) => {
                word(out, "CAPABILITY");
                for capability in capabilities {
                    out.push(b' ');
                    write_atom_text(capability, out);
                }
            }
            ResponseCode::ClientBug => word(out, "CLIENTBUG"),
            ResponseCode::Closed => word(out, "CLOSED"),
            ResponseCode::ContactAdmin => word(out, "CONTACTADMIN"),
            ResponseCode::CopyUid { uid_validity, source, destination } => {
                word(out, &format!("COPYUID {uid_validity} {source} {destination}"))
            }
            ResponseCode::Corruption => word(out, "CORRUPTION"),
            ResponseCode::Expired => word(out, "EXPIRED"),
            ResponseCode::ExpungeIssued => word(out, "EXPUNGEISSUED"),
            ResponseCode::HasChildren => word(out, "HASCHILDREN"),
            ResponseCode::HighestModSeq(modseq) => word(out, &format!("HIGHESTMODSEQ {modseq}")),
            ResponseCode::InUse => word(out, "INUSE"),
            ResponseCode::Limit => word(out, "LIMIT"),
            ResponseCode::Modified(set) => word(out, &format!("MODIFIED {set}")),
            ResponseCode::NoModSeq => word(out, "NOMODSEQ"),
            ResponseCode::NonExistent => word(out, "NONEXISTENT"),
            ResponseCode::NoPerm => word(out, "NOPERM"),
            ResponseCode::OverQuota => word(out, "OVERQUOTA"),
            ResponseCode::Parse => word(out, "PARSE"),
            ResponseCode::PermanentFlags { flags, new_keywords } => {
                word(out, "PERMANENTFLAGS ");
                write_flags(flags.iter().filter(|f| **f != Flag::Recent), *new_keywords, out);
            }
            ResponseCode::PrivacyRequired => word(out, "PRIVACYREQUIRED"),
            ResponseCode::ReadOnly => word(out, "READ-ONLY"),
            ResponseCode::ReadWrite => word(out, "READ-WRITE"),
            ResponseCode::ServerBug => word(out, "SERVERBUG"),
            ResponseCode::TooBig => word(out, "TOOBIG"),
            ResponseCode::TryCreate => word(out, "TRYCREATE"),
            ResponseCode::UidNext(uid) => word(out, &format!("UIDNEXT {uid}")),
            ResponseCode::UidNotSticky => word(out, "UIDNOTSTICKY"),
            ResponseCode::UidValidity(v) => word(out, &format!("UIDVALIDITY {v}")),
            ResponseCode::Unavailable => word(out, "UNAVAILABLE"),
            ResponseCode::UnknownCte => word(out, "UNKNOWN-CTE"),
            ResponseCode::Unseen(n) => word(out, &format!("UNSEEN {n}")),
            ResponseCode::UseAttr => word(out, "USEATTR"),
        }
    }
}

/// A status response (RFC 9051 7.1): `tag OK [CODE] text`, or untagged with `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusResponse {
    /// None: untagged.
    pub tag: Option<Tag>,
    pub status: Status,
    pub code: Option<ResponseCode>,
    pub text: Cow<'static, str>,
}

impl StatusResponse {
    pub fn tagged(tag: &Tag, status: Status, text: impl Into<Cow<'static, str>>) -> StatusResponse {
        StatusResponse { tag: Some(tag.clone()), status, code: None, text: text.into() }
    }

    pub fn untagged(status: Status, text: impl Into<Cow<'static, str>>) -> StatusResponse {
        StatusResponse { tag: None, status, code: None, text: text.into() }
    }

    pub fn ok(tag: &Tag, text: impl Into<Cow<'static, str>>) -> StatusResponse {
        StatusResponse::tagged(tag, Status::Ok, text)
    }

    pub fn no(tag: &Tag, text: impl Into<Cow<'static, str>>) -> StatusResponse {
        StatusResponse::tagged(tag, Status::No, text)
    }

    pub fn bad(tag: &Tag, text: impl Into<Cow<'static, str>>) -> StatusResponse {
        StatusResponse::tagged(tag, Status::Bad, text)
    }

    /// `* BYE text` (RFC 9051 7.1.5).
    pub fn bye(text: impl Into<Cow<'static, str>>) -> StatusResponse {
        StatusResponse::untagged(Status::Bye, text)
    }

    pub fn with_code(mut self, code: ResponseCode) -> StatusResponse {
        self.code = Some(code);
        self
    }

    pub fn write_to(&self, out: &mut Vec<u8>) {
        match &self.tag {
            Some(tag) => out.extend_from_slice(tag.as_str().as_bytes()),
            None => out.push(b'*'),
        }
        out.push(b' ');
        out.extend_from_slice(self.status.as_str().as_bytes());
        out.push(b' ');
        if let Some(code) = &self.code {
            out.push(b'[');
            code.write_to(out);
            out.extend_from_slice(b"] ");
        }
        write_text(&self.text, self.code.is_none(), out);
        out.extend_from_slice(b"\r\n");
    }

    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }
}

/// RFC 9051 7.5: `+ text`, the continuation request for a literal, an AUTHENTICATE
/// challenge (base64, possibly empty) or IDLE.
/// An empty text is an empty challenge (`+ ` CRLF).
pub fn write_continuation(text: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"+ ");
    crate::smtp::reply::write_reply_text(text, out);
    out.extend_from_slice(b"\r\n");
}

/// RFC 9051 9 `text`: at least one character, no CR or LF; a text that could be taken
/// for a response code (a leading `[`) is not allowed when no code precedes it.
fn write_text(text: &str, guard_bracket: bool, out: &mut Vec<u8>) {
    if text.is_empty() {
        out.extend_from_slice(b"Done");
        return;
    }
    if guard_bracket && text.starts_with('[') {
        out.push(b' ');
    }
    crate::smtp::reply::write_reply_text(text, out);
}

/// An atom-like token (capability, ENABLE name) written bare; characters an atom cannot
/// hold are dropped, so nothing can break the line.
fn write_atom_text(text: &str, out: &mut Vec<u8>) {
    // Capabilities such as AUTH=PLAIN and LITERAL- are atoms; `=` and `-` are atom chars.
    out.extend(text.bytes().filter(|&b| super::types::is_atom_char(b)));
}

/// `(flag ...)`, with `\*` at the end when `new_keywords`.
fn write_flags<'f>(flags: impl IntoIterator<Item = &'f Flag>, new_keywords: bool, out: &mut Vec<u8>) {
    out.push(b'(');
    let mut first = true;
    for flag in flags {
        if !first {
            out.push(b' ');
        }
        first = false;
        out.extend_from_slice(flag.to_string().as_bytes());
    }
    if new_keywords {
        if !first {
            out.push(b' ');
        }
        out.extend_from_slice(b"\\*");
    }
    out.push(b')');
}

/// `fmt::Write` into a byte vector.
struct ByteWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// One line of a LIST or LSUB response (RFC 9051 7.3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    pub attributes: Vec<MailboxAttribute>,
    /// The hierarchy delimiter; None for a flat namespace (written NIL).
    pub delimiter: Option<char>,
    pub mailbox: MailboxName,
    /// RFC 5258 4: `CHILDINFO ("SUBSCRIBED")`, for RECURSIVEMATCH.
    pub child_subscribed: bool,
    /// RFC 9051 7.3.1 `OLDNAME`, after a RENAME.
    pub old_name: Option<MailboxName>,
}

/// One namespace of a NAMESPACE response (RFC 9051 7.3.5): prefix and delimiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub prefix: String,
    pub delimiter: Option<char>,
}

/// RFC 9208 5.1 resource usage and limit, for the QUOTA response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaResource {
    /// `STORAGE` (in units of 1024 octets), `MESSAGE`, `MAILBOX`...
    pub name: String,
    pub usage: u64,
    pub limit: u64,
}

/// RFC 9051 7.3.4 ESEARCH (RFC 4731 3.1): the result of `SEARCH RETURN (...)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ESearch {
    /// The tag of the SEARCH command (`(TAG "A282")`).
    pub tag: Option<Tag>,
    pub uid: bool,
    pub min: Option<u32>,
    pub max: Option<u32>,
    /// None when ALL was not asked or nothing matched (RFC 4731 3.1).
    pub all: Option<SequenceSet>,
    pub count: Option<u32>,
    /// RFC 7162 3.1.5.
    pub modseq: Option<u64>,
}

/// Untagged server data (RFC 9051 7.2 - 7.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// 7.2.2.
    Capability(Vec<String>),
    /// 7.2.1 (RFC 5161 3.2).
    Enabled(Vec<String>),
    /// 7.4.1.
    Exists(u32),
    /// RFC 3501 7.3.2, IMAP4rev1 only.
    Recent(u32),
    /// 7.5.1.
    Expunge(u32),
    /// 7.3.5.
    Flags(Vec<Flag>),
    /// 7.3.1.
    List(ListEntry),
    /// RFC 3501 7.2.3.
    Lsub(ListEntry),
    /// 7.3.2.
    Status { mailbox: MailboxName, items: Vec<(StatusItem, u64)> },
    /// RFC 3501 7.2.5 (IMAP4rev1 clients without ESEARCH), with RFC 7162 3.1.5 MODSEQ.
    Search { numbers: Vec<u32>, highest_modseq: Option<u64> },
    /// 7.3.4.
    ESearch(ESearch),
    /// 7.3.3 (RFC 2342 5): personal, other users', shared; an empty list is NIL.
    Namespace { personal: Vec<Namespace>, other_users: Vec<Namespace>, shared: Vec<Namespace> },
    /// RFC 2971 3.2; None is `ID NIL`.
    Id(Option<Vec<(String, Option<String>)>>),
    /// RFC 9208 5.1.
    Quota { root: String, resources: Vec<QuotaResource> },
    /// RFC 9208 5.2.
    QuotaRoot { mailbox: MailboxName, roots: Vec<String> },
}

impl Data {
    /// Writes `* ...` CRLF; mailbox names and strings follow `encoding`.
    pub fn write_to(&self, encoding: NameEncoding, out: &mut Vec<u8>) {
        out.extend_from_slice(b"* ");
        match self {
            Data::Capability(capabilities) | Data::Enabled(capabilities) => {
                out.extend_from_slice(if matches!(self, Data::Capability(_)) { b"CAPABILITY" } else { b"ENABLED" });
                for capability in capabilities {
                    out.push(b' ');
                    write_atom_text(capability, out);
                }
            }
            Data::Exists(n) => push_fmt(out, format_args!("{n} EXISTS")),
            Data::Recent(n) => push_fmt(out, format_args!("{n} RECENT")),
            Data::Expunge(n) => push_fmt(out, format_args!("{n} EXPUNGE")),
            Data::Flags(flags) => {
                out.extend_from_slice(b"FLAGS ");
                write_flags(flags.iter().filter(|f| **f != Flag::Recent), false, out);
            }
            Data::List(entry) => write_list_entry(b"LIST", entry, encoding, out),
            Data::Lsub(entry) => write_list_entry(b"LSUB", entry, encoding, out),
            Data::Status { mailbox, items } => {
                out.extend_from_slice(b"STATUS ");
                write_mailbox(mailbox, encoding, out);
                out.extend_from_slice(b" (");
                for (i, (item, value)) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b' ');
                    }
                    push_fmt(out, format_args!("{} {value}", item.as_str()));
                }
                out.push(b')');
            }
            Data::Search { numbers, highest_modseq } => {
                out.extend_from_slice(b"SEARCH");
                for n in numbers {
                    push_fmt(out, format_args!(" {n}"));
                }
                // RFC 7162 3.1.5: only when something matched.
                if let (Some(modseq), false) = (highest_modseq, numbers.is_empty()) {
                    push_fmt(out, format_args!(" (MODSEQ {modseq})"));
                }
            }
            Data::ESearch(result) => write_esearch(result, out),
            Data::Namespace { personal, other_users, shared } => {
                out.extend_from_slice(b"NAMESPACE");
                for namespaces in [personal, other_users, shared] {
                    out.push(b' ');
                    if namespaces.is_empty() {
                        out.extend_from_slice(b"NIL");
                        continue;
                    }
                    out.push(b'(');
                    for namespace in namespaces {
                        out.push(b'(');
                        let prefix = MailboxName::new(namespace.prefix.clone()).to_wire(encoding);
                        write_string(prefix.as_bytes(), encoding, out);
                        out.push(b' ');
                        write_delimiter(namespace.delimiter, out);
                        out.push(b')');
                    }
                    out.push(b')');
                }
            }
            Data::Id(None) => out.extend_from_slice(b"ID NIL"),
            Data::Id(Some(pairs)) => {
                out.extend_from_slice(b"ID (");
                for (i, (field, value)) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push(b' ');
                    }
                    write_string(field.as_bytes(), encoding, out);
                    out.push(b' ');
                    write_nstring(value.as_deref().map(str::as_bytes), encoding, out);
                }
                out.push(b')');
            }
            Data::Quota { root, resources } => {
                out.extend_from_slice(b"QUOTA ");
                write_astring(root.as_bytes(), encoding, out);
                out.extend_from_slice(b" (");
                for (i, resource) in resources.iter().enumerate() {
                    if i > 0 {
                        out.push(b' ');
                    }
                    write_atom_text(&resource.name, out);
                    push_fmt(out, format_args!(" {} {}", resource.usage, resource.limit));
                }
                out.push(b')');
            }
            Data::QuotaRoot { mailbox, roots } => {
                out.extend_from_slice(b"QUOTAROOT ");
                write_mailbox(mailbox, encoding, out);
                for root in roots {
                    out.push(b' ');
                    write_astring(root.as_bytes(), encoding, out);
                }
            }
        }
        out.extend_from_slice(b"\r\n");
    }

    pub fn to_wire(&self, encoding: NameEncoding) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(encoding, &mut out);
        out
    }
}

fn push_fmt(out: &mut Vec<u8>, args: std::fmt::Arguments<'_>) {
    let _ = ByteWriter(out).write_fmt(args);
}

/// RFC 9051 9 `mailbox-list` delimiter: a quoted character or NIL.
fn write_delimiter(delimiter: Option<char>, out: &mut Vec<u8>) {
    match delimiter {
        Some(c) => {
            let mut buf = [0u8; 4];
            write_string(c.encode_utf8(&mut buf).as_bytes(), NameEncoding::Utf8, out);
        }
        None => out.extend_from_slice(b"NIL"),
    }
}

fn write_list_entry(keyword: &[u8], entry: &ListEntry, encoding: NameEncoding, out: &mut Vec<u8>) {
    out.extend_from_slice(keyword);
    out.extend_from_slice(b" (");
    for (i, attribute) in entry.attributes.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        write_atom_text_with_backslash(attribute.as_str(), out);
    }
    out.extend_from_slice(b") ");
    write_delimiter(entry.delimiter, out);
    out.push(b' ');
    write_mailbox(&entry.mailbox, encoding, out);
    // RFC 9051 9 `mbox-list-extended`.
    let mut extended: Vec<Vec<u8>> = Vec::new();
    if entry.child_subscribed {
        extended.push(b"\"CHILDINFO\" (\"SUBSCRIBED\")".to_vec());
    }
    if let Some(old) = &entry.old_name {
        let mut item = b"\"OLDNAME\" (".to_vec();
        write_mailbox(old, encoding, &mut item);
        item.push(b')');
        extended.push(item);
    }
    if !extended.is_empty() {
        out.extend_from_slice(b" (");
        out.extend_from_slice(&extended.join(&b' '));
        out.push(b')');
    }
}

/// `\Name` with the backslash kept and everything else filtered to atom chars.
fn write_atom_text_with_backslash(text: &str, out: &mut Vec<u8>) {
    if let Some(rest) = text.strip_prefix('\\') {
        out.push(b'\\');
        write_atom_text(rest, out);
    } else {
        write_atom_text(text, out);
    }
}

fn write_esearch(result: &ESearch, out: &mut Vec<u8>) {
    out.extend_from_slice(b"ESEARCH");
    if let Some(tag) = &result.tag {
        out.extend_from_slice(b" (TAG ");
        write_string(tag.as_str().as_bytes(), NameEncoding::ModifiedUtf7, out);
        out.push(b')');
    }
    if result.uid {
        out.extend_from_slice(b" UID");
    }
    if let Some(min) = result.min {
        push_fmt(out, format_args!(" MIN {min}"));
    }
    if let Some(max) = result.max {
        push_fmt(out, format_args!(" MAX {max}"));
    }
    if let Some(all) = &result.all {
        push_fmt(out, format_args!(" ALL {all}"));
    }
    if let Some(count) = result.count {
        push_fmt(out, format_args!(" COUNT {count}"));
    }
    if let Some(modseq) = result.modseq {
        push_fmt(out, format_args!(" MODSEQ {modseq}"));
    }
}

/// One FETCH data item of a response (RFC 9051 7.5.2). Bodies are borrowed or owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchItem<'a> {
    Uid(u32),
    Flags(Vec<Flag>),
    InternalDate(DateTime),
    Rfc822Size(u64),
    /// RFC 7162 3.1.4.1: `MODSEQ (n)`.
    ModSeq(u64),
    /// `BODY[section]<origin> nstring`: `origin` is the partial offset when one was asked.
    BodySection {
        section: Section,
        origin: Option<u64>,
        data: Option<Cow<'a, [u8]>>,
    },
    /// `BINARY[part]<origin>`: a literal8 when the data holds NUL (RFC 9051 7.5.2).
    Binary {
        part: Vec<u32>,
        origin: Option<u64>,
        data: Option<Cow<'a, [u8]>>,
    },
    BinarySize {
        part: Vec<u32>,
        size: u64,
    },
    /// RFC 3501 7.4.2, answering `RFC822`, `RFC822.HEADER`, `RFC822.TEXT`.
    Rfc822(Option<Cow<'a, [u8]>>),
    Rfc822Header(Option<Cow<'a, [u8]>>),
    Rfc822Text(Option<Cow<'a, [u8]>>),
    /// RFC 9051 7.5.2 ENVELOPE.
    Envelope(Box<super::envelope::Envelope>),
    /// A value rendered elsewhere (BODY, BODYSTRUCTURE): `name` SP `value`,
    /// `value` already in IMAP syntax.
    Raw {
        name: &'static str,
        value: Cow<'a, [u8]>,
    },
}

/// Writes `* seq FETCH (items)` CRLF.
pub fn write_fetch(seq: u32, items: &[FetchItem<'_>], encoding: NameEncoding, out: &mut Vec<u8>) {
    push_fmt(out, format_args!("* {seq} FETCH ("));
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        write_fetch_item(item, encoding, out);
    }
    out.extend_from_slice(b")\r\n");
}

fn write_part(part: &[u32], out: &mut Vec<u8>) {
    for (i, n) in part.iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        push_fmt(out, format_args!("{n}"));
    }
}

/// A body is always a literal: message text is rarely quotable, and a literal never
/// needs escaping.
fn write_body(data: Option<&[u8]>, out: &mut Vec<u8>) {
    match data {
        Some(data) => write_literal(data, out),
        None => out.extend_from_slice(b"NIL"),
    }
}

fn write_fetch_item(item: &FetchItem<'_>, encoding: NameEncoding, out: &mut Vec<u8>) {
    match item {
        FetchItem::Envelope(envelope) => {
            out.extend_from_slice(b"ENVELOPE ");
            envelope.write_to(encoding, out);
        }
        FetchItem::Uid(uid) => push_fmt(out, format_args!("UID {uid}")),
        FetchItem::Flags(flags) => {
            out.extend_from_slice(b"FLAGS ");
            write_flags(flags, false, out);
        }
        FetchItem::InternalDate(date) => push_fmt(out, format_args!("INTERNALDATE {date}")),
        FetchItem::Rfc822Size(size) => push_fmt(out, format_args!("RFC822.SIZE {size}")),
        FetchItem::ModSeq(modseq) => push_fmt(out, format_args!("MODSEQ ({modseq})")),
        FetchItem::BodySection { section, origin, data } => {
            push_fmt(out, format_args!("BODY[{section}]"));
            if let Some(origin) = origin {
                push_fmt(out, format_args!("<{origin}>"));
            }
            out.push(b' ');
            write_body(data.as_deref(), out);
        }
        FetchItem::Binary { part, origin, data } => {
            out.extend_from_slice(b"BINARY[");
            write_part(part, out);
            out.push(b']');
            if let Some(origin) = origin {
                push_fmt(out, format_args!("<{origin}>"));
            }
            out.push(b' ');
            match data {
                Some(data) if data.contains(&0) => write_literal8(data, out),
                _ => write_body(data.as_deref(), out),
            }
        }
        FetchItem::BinarySize { part, size } => {
            out.extend_from_slice(b"BINARY.SIZE[");
            write_part(part, out);
            push_fmt(out, format_args!("] {size}"));
        }
        FetchItem::Rfc822(data) => {
            out.extend_from_slice(b"RFC822 ");
            write_body(data.as_deref(), out);
        }
        FetchItem::Rfc822Header(data) => {
            out.extend_from_slice(b"RFC822.HEADER ");
            write_body(data.as_deref(), out);
        }
        FetchItem::Rfc822Text(data) => {
            out.extend_from_slice(b"RFC822.TEXT ");
            write_body(data.as_deref(), out);
        }
        FetchItem::Raw { name, value } => {
            write_atom_text(name, out);
            out.push(b' ');
            out.extend_from_slice(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::types::{SeqNumber, SeqRange};

    fn tag(t: &str) -> Tag {
        Tag::new(t).unwrap()
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn status_responses() {
        let ok = StatusResponse::ok(&tag("A142"), "[READ-WRITE] SELECT completed");
        assert_eq!(text(ok.to_wire()), "A142 OK  [READ-WRITE] SELECT completed\r\n");
        let ok = StatusResponse::ok(&tag("A142"), "SELECT completed").with_code(ResponseCode::ReadWrite);
        assert_eq!(text(ok.to_wire()), "A142 OK [READ-WRITE] SELECT completed\r\n");
        let flags = StatusResponse::untagged(Status::Ok, "Limited").with_code(ResponseCode::PermanentFlags {
            flags: vec![Flag::Deleted, Flag::Seen, Flag::Recent],
            new_keywords: true,
        });
        assert_eq!(text(flags.to_wire()), "* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited\r\n");
        let copy = StatusResponse::ok(&tag("A004"), "Done").with_code(ResponseCode::CopyUid {
            uid_validity: 38505,
            source: SequenceSet::from_numbers(&[304, 319, 320]),
            destination: SequenceSet::Ranges(vec![SeqRange {
                first: SeqNumber::Value(3956),
                last: SeqNumber::Value(3958),
            }]),
        });
        assert_eq!(text(copy.to_wire()), "A004 OK [COPYUID 38505 304,319:320 3956:3958] Done\r\n");
        assert_eq!(text(StatusResponse::bye("bye\r\n* OK x").to_wire()), "* BYE bye??* OK x\r\n");
        assert_eq!(text(StatusResponse::no(&tag("a"), "").to_wire()), "a NO Done\r\n");
        let charset = StatusResponse::no(&tag("a"), "x").with_code(ResponseCode::BadCharset(vec!["UTF-8".into()]));
        assert_eq!(text(charset.to_wire()), "a NO [BADCHARSET (UTF-8)] x\r\n");
    }

    #[test]
    fn strings_are_quoted_or_literal() {
        let mut out = Vec::new();
        write_string(b"a \"b\" \\c", NameEncoding::ModifiedUtf7, &mut out);
        assert_eq!(text(out), "\"a \\\"b\\\" \\\\c\"");
        let mut out = Vec::new();
        write_string(b"two\r\nlines", NameEncoding::Utf8, &mut out);
        assert_eq!(text(out), "{10}\r\ntwo\r\nlines");
        let mut out = Vec::new();
        write_string("caf\u{e9}".as_bytes(), NameEncoding::ModifiedUtf7, &mut out);
        assert_eq!(text(out), "{5}\r\ncaf\u{e9}");
        let mut out = Vec::new();
        write_string("caf\u{e9}".as_bytes(), NameEncoding::Utf8, &mut out);
        assert_eq!(text(out), "\"caf\u{e9}\"");
        let mut out = Vec::new();
        write_astring(b"nil", NameEncoding::Utf8, &mut out);
        assert_eq!(text(out), "\"nil\"");
    }

    #[test]
    fn untagged_data() {
        let enc = NameEncoding::ModifiedUtf7;
        assert_eq!(text(Data::Exists(172).to_wire(enc)), "* 172 EXISTS\r\n");
        assert_eq!(text(Data::Expunge(3).to_wire(enc)), "* 3 EXPUNGE\r\n");
        assert_eq!(
            text(Data::Flags(vec![Flag::Answered, Flag::Flagged, Flag::Recent]).to_wire(enc)),
            "* FLAGS (\\Answered \\Flagged)\r\n"
        );
        let list = Data::List(ListEntry {
            attributes: vec![MailboxAttribute::HasNoChildren, MailboxAttribute::Drafts],
            delimiter: Some('/'),
            mailbox: MailboxName::new("Entw\u{fc}rfe"),
            child_subscribed: false,
            old_name: None,
        });
        assert_eq!(text(list.to_wire(enc)), "* LIST (\\HasNoChildren \\Drafts) \"/\" \"Entw&APw-rfe\"\r\n");
        assert_eq!(
            text(list.to_wire(NameEncoding::Utf8)),
            "* LIST (\\HasNoChildren \\Drafts) \"/\" \"Entw\u{fc}rfe\"\r\n"
        );
        let status = Data::Status {
            mailbox: MailboxName::new("blurdybloop"),
            items: vec![(StatusItem::Messages, 231), (StatusItem::UidNext, 44292)],
        };
        assert_eq!(text(status.to_wire(enc)), "* STATUS \"blurdybloop\" (MESSAGES 231 UIDNEXT 44292)\r\n");
        let search = Data::Search { numbers: vec![2, 84, 882], highest_modseq: None };
        assert_eq!(text(search.to_wire(enc)), "* SEARCH 2 84 882\r\n");
        let esearch =
            Data::ESearch(ESearch { tag: Some(tag("A282")), min: Some(2), count: Some(3), ..ESearch::default() });
        assert_eq!(text(esearch.to_wire(enc)), "* ESEARCH (TAG \"A282\") MIN 2 COUNT 3\r\n");
        let namespace = Data::Namespace {
            personal: vec![Namespace { prefix: String::new(), delimiter: Some('/') }],
            other_users: Vec::new(),
            shared: Vec::new(),
        };
        assert_eq!(text(namespace.to_wire(enc)), "* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n");
        let id = Data::Id(Some(vec![("name".into(), Some("vouchmail".into())), ("os".into(), None)]));
        assert_eq!(text(id.to_wire(enc)), "* ID (\"name\" \"vouchmail\" \"os\" NIL)\r\n");
        let quota = Data::Quota {
            root: String::new(),
            resources: vec![QuotaResource { name: "STORAGE".into(), usage: 10, limit: 512 }],
        };
        assert_eq!(text(quota.to_wire(enc)), "* QUOTA \"\" (STORAGE 10 512)\r\n");
        let root = Data::QuotaRoot { mailbox: MailboxName::new("INBOX"), roots: vec![String::new()] };
        assert_eq!(text(root.to_wire(enc)), "* QUOTAROOT \"INBOX\" \"\"\r\n");
        assert_eq!(
            text(Data::Enabled(vec!["CONDSTORE".into(), "bad\r\n".into()]).to_wire(enc)),
            "* ENABLED CONDSTORE bad\r\n"
        );
    }

    #[test]
    fn fetch_responses() {
        let mut out = Vec::new();
        write_fetch(
            12,
            &[
                FetchItem::Flags(vec![Flag::Seen]),
                FetchItem::InternalDate(DateTime { unix: 837_596_665, offset_minutes: -420 }),
                FetchItem::Rfc822Size(4286),
                FetchItem::BodySection {
                    section: Section { part: Vec::new(), text: Some(crate::imap::types::SectionText::Header) },
                    origin: None,
                    data: Some(Cow::Borrowed(b"Subject: x\r\n\r\n")),
                },
                FetchItem::Binary { part: vec![1], origin: Some(0), data: Some(Cow::Borrowed(b"a\0b")) },
                FetchItem::ModSeq(7),
                FetchItem::Uid(9),
            ],
            NameEncoding::ModifiedUtf7,
            &mut out,
        );
        assert_eq!(
            text(out),
            "* 12 FETCH (FLAGS (\\Seen) INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" RFC822.SIZE 4286 \
             BODY[HEADER] {14}\r\nSubject: x\r\n\r\n BINARY[1]<0> ~{3}\r\na\0b MODSEQ (7) UID 9)\r\n"
        );
    }

    #[test]
    fn continuation() {
        let mut out = Vec::new();
        write_continuation("", &mut out);
        write_continuation("Ready", &mut out);
        assert_eq!(text(out), "+ \r\n+ Ready\r\n");
    }
}
