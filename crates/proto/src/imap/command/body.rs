//! The command values (RFC 9051 6): what a client asks, and why a command was refused.

use std::borrow::Cow;
use std::fmt;

use crate::imap::types::{
    DateTime, FetchAttribute, Flag, MailboxAttribute, MailboxName, SearchKey, SearchReturn, SequenceSet, StatusItem,
    StoreAction, Tag,
};

/// One command: the client's tag and what it asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub tag: Tag,
    pub body: CommandBody,
}

/// RFC 9051 6.3.9 LIST selection options (RFC 5258 3.1, RFC 6154 5.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListSelection {
    pub subscribed: bool,
    pub special_use: bool,
    pub remote: bool,
    /// Only together with another selection option (RFC 5258 3.1).
    pub recursive_match: bool,
}

/// RFC 9051 6.3.9 LIST return options (RFC 5258 3.2, RFC 5819, RFC 6154 5.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListReturn {
    pub subscribed: bool,
    pub children: bool,
    pub special_use: bool,
    /// `STATUS (items)`: an untagged STATUS after each LIST line (RFC 5819).
    pub status: Option<Vec<StatusItem>>,
}

/// What a command asks, by RFC 9051 section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandBody {
    /// 6.1.1.
    Capability,
    /// 6.1.2.
    Noop,
    /// 6.1.3.
    Logout,
    /// 6.2.1.
    StartTls,
    /// 6.2.2, with RFC 4959 SASL-IR: the initial response as sent (base64, or `=` for an
    /// empty one), for [`crate::sasl::decode_initial_response`].
    Authenticate { mechanism: String, initial_response: Option<String> },
    /// 6.2.3.
    Login { username: String, password: String },
    /// 6.3.1 (RFC 5161): capability names as sent.
    Enable(Vec<String>),
    /// 6.3.2; `condstore` is the RFC 7162 3.1.8 CONDSTORE parameter.
    Select { mailbox: MailboxName, condstore: bool },
    /// 6.3.3.
    Examine { mailbox: MailboxName, condstore: bool },
    /// 6.3.4; `special_use` from RFC 6154 3 `USE (...)`.
    Create { mailbox: MailboxName, special_use: Vec<MailboxAttribute> },
    /// 6.3.5.
    Delete(MailboxName),
    /// 6.3.6.
    Rename { from: MailboxName, to: MailboxName },
    /// 6.3.7.
    Subscribe(MailboxName),
    /// 6.3.8.
    Unsubscribe(MailboxName),
    /// 6.3.9 (extended LIST, RFC 5258). Patterns are decoded like mailbox names.
    List { reference: MailboxName, patterns: Vec<String>, selection: ListSelection, returns: ListReturn },
    /// RFC 3501 6.3.9, IMAP4rev1 only.
    Lsub { reference: MailboxName, pattern: String },
    /// 6.3.10 (RFC 2342).
    Namespace,
    /// 6.3.11.
    Status { mailbox: MailboxName, items: Vec<StatusItem> },
    /// 6.3.12; `binary` when the message came as a literal8 (RFC 3516 4.4).
    Append { mailbox: MailboxName, flags: Vec<Flag>, date: Option<DateTime>, message: Vec<u8>, binary: bool },
    /// 6.3.13 (RFC 2177): the driver then calls [`super::CommandReader::expect_idle_done`].
    Idle,
    /// RFC 3501 6.4.1, IMAP4rev1 only (a NOOP in effect).
    Check,
    /// 6.4.1.
    Close,
    /// 6.4.2.
    Unselect,
    /// 6.4.3.
    Expunge,
    /// 6.4.9 (RFC 4315 2.1).
    UidExpunge(SequenceSet),
    /// 6.4.4, with ESEARCH return options (6.4.4.1) and CONDSTORE MODSEQ.
    Search { uid: bool, charset: Option<String>, returns: Option<Vec<SearchReturn>>, criteria: SearchKey },
    /// 6.4.5, with RFC 7162 3.1.4 CHANGEDSINCE.
    Fetch { uid: bool, set: SequenceSet, attributes: Vec<FetchAttribute>, changed_since: Option<u64> },
    /// 6.4.6, with RFC 7162 3.1.3 UNCHANGEDSINCE (inside the action).
    Store { uid: bool, set: SequenceSet, action: StoreAction },
    /// 6.4.7.
    Copy { uid: bool, set: SequenceSet, mailbox: MailboxName },
    /// 6.4.8 (RFC 6851).
    Move { uid: bool, set: SequenceSet, mailbox: MailboxName },
    /// RFC 2971 3.1: field/value pairs, or None for `ID NIL`.
    Id(Option<Vec<(String, Option<String>)>>),
    /// RFC 9208 4.2.
    GetQuota(String),
    /// RFC 9208 4.3.
    GetQuotaRoot(MailboxName),
}

impl CommandBody {
    /// The command name as the tagged response may echo it (`UID FETCH`, `SELECT`).
    pub fn name(&self) -> &'static str {
        match self {
            CommandBody::Capability => "CAPABILITY",
            CommandBody::Noop => "NOOP",
            CommandBody::Logout => "LOGOUT",
            CommandBody::StartTls => "STARTTLS",
            CommandBody::Authenticate { .. } => "AUTHENTICATE",
            CommandBody::Login { .. } => "LOGIN",
            CommandBody::Enable(_) => "ENABLE",
            CommandBody::Select { .. } => "SELECT",
            CommandBody::Examine { .. } => "EXAMINE",
            CommandBody::Create { .. } => "CREATE",
            CommandBody::Delete(_) => "DELETE",
            CommandBody::Rename { .. } => "RENAME",
            CommandBody::Subscribe(_) => "SUBSCRIBE",
            CommandBody::Unsubscribe(_) => "UNSUBSCRIBE",
            CommandBody::List { .. } => "LIST",
            CommandBody::Lsub { .. } => "LSUB",
            CommandBody::Namespace => "NAMESPACE",
            CommandBody::Status { .. } => "STATUS",
            CommandBody::Append { .. } => "APPEND",
            CommandBody::Idle => "IDLE",
            CommandBody::Check => "CHECK",
            CommandBody::Close => "CLOSE",
            CommandBody::Unselect => "UNSELECT",
            CommandBody::Expunge => "EXPUNGE",
            CommandBody::UidExpunge(_) => "UID EXPUNGE",
            CommandBody::Search { uid: false, .. } => "SEARCH",
            CommandBody::Search { uid: true, .. } => "UID SEARCH",
            CommandBody::Fetch { uid: false, .. } => "FETCH",
            CommandBody::Fetch { uid: true, .. } => "UID FETCH",
            CommandBody::Store { uid: false, .. } => "STORE",
            CommandBody::Store { uid: true, .. } => "UID STORE",
            CommandBody::Copy { uid: false, .. } => "COPY",
            CommandBody::Copy { uid: true, .. } => "UID COPY",
            CommandBody::Move { uid: false, .. } => "MOVE",
            CommandBody::Move { uid: true, .. } => "UID MOVE",
            CommandBody::Id(_) => "ID",
            CommandBody::GetQuota(_) => "GETQUOTA",
            CommandBody::GetQuotaRoot(_) => "GETQUOTAROOT",
        }
    }
}

/// Why a command was refused before it ran; [`CommandError::response`] is the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandErrorKind {
    /// Malformed arguments: BAD.
    Syntax,
    /// A command name the server does not know: BAD.
    UnknownCommand,
    /// A line over [`super::Limits::max_line`]; the rest of it was skipped: BAD [LIMIT].
    LineTooLong,
    /// The command's lines and small literals exceed [`super::Limits::max_command`]: BAD [LIMIT].
    CommandTooLarge,
    /// A literal over the limits. When it was synchronizing no `+` was sent and the client
    /// sends nothing more of the command; a non-synchronizing one was skipped. BAD [TOOBIG]
    /// (RFC 7888 4, RFC 4469 5).
    LiteralTooLarge,
    /// A search CHARSET other than UTF-8 or US-ASCII: NO [BADCHARSET (UTF-8 US-ASCII)]
    /// (RFC 9051 6.4.4).
    BadCharset,
    /// The line after IDLE was not DONE (RFC 2177 3): the IDLE ends with BAD.
    ExpectedDone,
}

/// A command the reader or the parser refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    /// The command's tag when it could be read; else the answer is untagged.
    pub tag: Option<Tag>,
    pub kind: CommandErrorKind,
    /// What is wrong, for the response text.
    pub text: Cow<'static, str>,
}

impl CommandError {
    pub(crate) fn new(tag: Option<Tag>, kind: CommandErrorKind, text: impl Into<Cow<'static, str>>) -> CommandError {
        CommandError { tag, kind, text: text.into() }
    }

    /// The status response that answers the error.
    pub fn response(&self) -> crate::imap::response::StatusResponse {
        use crate::imap::response::{ResponseCode, Status, StatusResponse};
        let (status, code) = match self.kind {
            CommandErrorKind::Syntax | CommandErrorKind::UnknownCommand | CommandErrorKind::ExpectedDone => {
                (Status::Bad, None)
            }
            CommandErrorKind::LineTooLong | CommandErrorKind::CommandTooLarge => {
                (Status::Bad, Some(ResponseCode::Limit))
            }
            CommandErrorKind::LiteralTooLarge => (Status::Bad, Some(ResponseCode::TooBig)),
            CommandErrorKind::BadCharset => {
                (Status::No, Some(ResponseCode::BadCharset(vec!["UTF-8".into(), "US-ASCII".into()])))
            }
        };
        StatusResponse { tag: self.tag.clone(), status, code, text: self.text.clone() }
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for CommandError {}
