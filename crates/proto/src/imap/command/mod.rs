//! IMAP client commands (RFC 9051 6, RFC 3501 6 for IMAP4rev1-only ones, and the
//! extensions of SPEC 9): the command values, the parser of one complete command, and the
//! incremental [`CommandReader`] that frames commands and their literals from the byte
//! stream.

mod fetch;
pub mod lexer;
mod reader;
mod search;

use std::borrow::Cow;
use std::fmt;

use lexer::{Cursor, LiteralKind, SyntaxError};

pub use reader::{CommandReader, Limits, ReadEvent, MAX_NON_SYNC_LITERAL};

use super::types::{
    DateTime, FetchAttribute, Flag, MailboxAttribute, MailboxName, NameEncoding, SearchKey, SearchReturn, SequenceSet,
    StatusItem, StoreAction, StoreMode, Tag,
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
    /// 6.3.13 (RFC 2177): the driver then calls [`CommandReader::expect_idle_done`].
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
    /// A line over [`Limits::max_line`]; the rest of it was skipped: BAD [LIMIT].
    LineTooLong,
    /// The command's lines and small literals exceed [`Limits::max_command`]: BAD [LIMIT].
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
    pub fn response(&self) -> super::response::StatusResponse {
        use super::response::{ResponseCode, Status, StatusResponse};
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

/// The tag at the start of a command, if there is a valid one.
pub(crate) fn leading_tag(command: &[u8]) -> Option<Tag> {
    let end = command.iter().position(|&b| b == b' ')?;
    Tag::from_bytes(&command[..end])
}

/// Parses one complete command, CRLF excluded, literals inline (`{n}` CRLF data).
/// `encoding` is how this connection writes mailbox names.
pub fn parse_command(input: &[u8], encoding: NameEncoding) -> Result<Command, CommandError> {
    let tag = leading_tag(input)
        .ok_or_else(|| CommandError::new(None, CommandErrorKind::Syntax, "Missing or invalid command tag"))?;
    let mut cursor = Cursor::new(&input[tag.as_str().len() + 1..]);
    let mut parser = Parser { cursor: &mut cursor, encoding };
    match parser.command() {
        Ok(body) => Ok(Command { tag, body }),
        Err(Refusal::Syntax(text)) => Err(CommandError::new(Some(tag), CommandErrorKind::Syntax, text)),
        Err(Refusal::Unknown) => Err(CommandError::new(Some(tag), CommandErrorKind::UnknownCommand, "Unknown command")),
        Err(Refusal::BadCharset) => Err(CommandError::new(
            Some(tag),
            CommandErrorKind::BadCharset,
            "Only UTF-8 and US-ASCII searches are supported",
        )),
    }
}

/// Why the grammar refused a command.
#[derive(Debug)]
enum Refusal {
    Syntax(SyntaxError),
    Unknown,
    BadCharset,
}

impl From<SyntaxError> for Refusal {
    fn from(text: SyntaxError) -> Refusal {
        Refusal::Syntax(text)
    }
}

impl From<&'static str> for Refusal {
    fn from(text: &'static str) -> Refusal {
        Refusal::Syntax(text.into())
    }
}

struct Parser<'c, 'a> {
    cursor: &'c mut Cursor<'a>,
    encoding: NameEncoding,
}

impl<'a> Parser<'_, 'a> {
    fn command(&mut self) -> Result<CommandBody, Refusal> {
        let name = self.cursor.word().map_err(|_| Refusal::Syntax("Missing command name".into()))?;
        let name = name.to_ascii_uppercase();
        let body = match name.as_str() {
            "CAPABILITY" => CommandBody::Capability,
            "NOOP" => CommandBody::Noop,
            "LOGOUT" => CommandBody::Logout,
            "STARTTLS" => CommandBody::StartTls,
            "NAMESPACE" => CommandBody::Namespace,
            "IDLE" => CommandBody::Idle,
            "CHECK" => CommandBody::Check,
            "CLOSE" => CommandBody::Close,
            "UNSELECT" => CommandBody::Unselect,
            "EXPUNGE" => CommandBody::Expunge,
            "AUTHENTICATE" => self.authenticate()?,
            "LOGIN" => {
                self.cursor.space()?;
                let username = self.cursor.astring_utf8("User name")?;
                self.cursor.space()?;
                let password = self.cursor.astring_utf8("Password")?;
                CommandBody::Login { username, password }
            }
            "ENABLE" => {
                let mut capabilities = Vec::new();
                while self.cursor.eat(b' ') {
                    capabilities.push(self.cursor.atom()?.to_owned());
                }
                if capabilities.is_empty() {
                    return Err("ENABLE needs at least one capability".into());
                }
                CommandBody::Enable(capabilities)
            }
            "SELECT" | "EXAMINE" => {
                self.cursor.space()?;
                let mailbox = self.mailbox()?;
                let condstore = self.select_params()?;
                if name == "SELECT" {
                    CommandBody::Select { mailbox, condstore }
                } else {
                    CommandBody::Examine { mailbox, condstore }
                }
            }
            "CREATE" => self.create()?,
            "DELETE" => CommandBody::Delete(self.one_mailbox()?),
            "SUBSCRIBE" => CommandBody::Subscribe(self.one_mailbox()?),
            "UNSUBSCRIBE" => CommandBody::Unsubscribe(self.one_mailbox()?),
            "GETQUOTAROOT" => CommandBody::GetQuotaRoot(self.one_mailbox()?),
            "RENAME" => {
                let from = self.one_mailbox()?;
                let to = self.one_mailbox()?;
                CommandBody::Rename { from, to }
            }
            "LIST" => self.list()?,
            "LSUB" => {
                let reference = self.one_mailbox()?;
                self.cursor.space()?;
                let pattern = self.pattern()?;
                CommandBody::Lsub { reference, pattern }
            }
            "STATUS" => {
                let mailbox = self.one_mailbox()?;
                self.cursor.space()?;
                let items = self.status_items()?;
                CommandBody::Status { mailbox, items }
            }
            "APPEND" => self.append()?,
            "SEARCH" => self.search(false)?,
            "FETCH" => self.fetch(false)?,
            "STORE" => self.store(false)?,
            "COPY" => self.copy_or_move(false, false)?,
            "MOVE" => self.copy_or_move(false, true)?,
            "UID" => self.uid()?,
            "ID" => self.id()?,
            "GETQUOTA" => {
                self.cursor.space()?;
                CommandBody::GetQuota(self.cursor.astring_utf8("Quota root")?)
            }
            _ => return Err(Refusal::Unknown),
        };
        self.cursor.end()?;
        Ok(body)
    }

    fn uid(&mut self) -> Result<CommandBody, Refusal> {
        self.cursor.space()?;
        let name = self.cursor.word().map_err(|_| Refusal::Syntax("UID needs a command".into()))?;
        match name.to_ascii_uppercase().as_str() {
            "FETCH" => self.fetch(true),
            "STORE" => self.store(true),
            "SEARCH" => self.search(true),
            "COPY" => self.copy_or_move(true, false),
            "MOVE" => self.copy_or_move(true, true),
            // RFC 4315 2.1.
            "EXPUNGE" => {
                self.cursor.space()?;
                Ok(CommandBody::UidExpunge(self.sequence_set()?))
            }
            _ => Err("UID takes FETCH, STORE, SEARCH, COPY, MOVE or EXPUNGE".into()),
        }
    }

    /// RFC 9051 6.2.2 and RFC 4959 3: `AUTHENTICATE mechanism [SP initial-response]`.
    fn authenticate(&mut self) -> Result<CommandBody, Refusal> {
        self.cursor.space()?;
        let mechanism = self.cursor.atom()?.to_ascii_uppercase();
        let initial_response = if self.cursor.eat(b' ') {
            let raw = self.cursor.atom()?;
            // RFC 4959 3: base64 or "=".
            if raw != "=" && !raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')) {
                return Err("The initial response is not base64".into());
            }
            Some(raw.to_owned())
        } else {
            None
        };
        Ok(CommandBody::Authenticate { mechanism, initial_response })
    }

    fn mailbox(&mut self) -> Result<MailboxName, Refusal> {
        let raw = self.cursor.astring()?;
        MailboxName::from_wire(&raw, self.encoding).map_err(Refusal::from)
    }

    /// SP mailbox.
    fn one_mailbox(&mut self) -> Result<MailboxName, Refusal> {
        self.cursor.space()?;
        self.mailbox()
    }

    /// A LIST or LSUB pattern, decoded like a mailbox name (RFC 3501 5.1.3 applies to
    /// patterns too), wildcards kept.
    fn pattern(&mut self) -> Result<String, Refusal> {
        let raw = self.cursor.list_mailbox()?;
        let name = MailboxName::from_wire(&raw, self.encoding)?;
        Ok(name.as_str().to_owned())
    }

    /// RFC 4466 2.5 select-params; only RFC 7162 3.1.8 CONDSTORE is known.
    fn select_params(&mut self) -> Result<bool, Refusal> {
        if !self.cursor.eat(b' ') {
            return Ok(false);
        }
        let mut condstore = false;
        self.cursor.parenthesized(false, |c| {
            if c.eat_keyword("CONDSTORE") {
                condstore = true;
                Ok(())
            } else {
                Err("Unknown SELECT parameter".into())
            }
        })?;
        Ok(condstore)
    }

    /// RFC 9051 6.3.4 and RFC 6154 3: `CREATE mailbox [SP "(" "USE" SP "(" use ... ")" ")"]`.
    fn create(&mut self) -> Result<CommandBody, Refusal> {
        let mailbox = self.one_mailbox()?;
        let mut special_use = Vec::new();
        if self.cursor.eat(b' ') {
            self.cursor.parenthesized(false, |c| {
                if !c.eat_keyword("USE") {
                    return Err("Unknown CREATE parameter".into());
                }
                c.space()?;
                let uses = c.parenthesized(true, |c| {
                    c.expect(b'\\', "Expected a special-use attribute")?;
                    let name = c.atom()?;
                    MailboxAttribute::parse(&format!("\\{name}"))
                        .filter(MailboxAttribute::is_special_use)
                        .ok_or_else(|| SyntaxError::from("Unknown special-use attribute"))
                })?;
                special_use.extend(uses);
                Ok(())
            })?;
        }
        Ok(CommandBody::Create { mailbox, special_use })
    }

    /// RFC 9051 6.3.9: `LIST [SP list-select-opts] SP mailbox SP mbox-or-pat
    /// [SP list-return-opts]`.
    fn list(&mut self) -> Result<CommandBody, Refusal> {
        self.cursor.space()?;
        let mut selection = ListSelection::default();
        if self.cursor.peek() == Some(b'(') {
            self.cursor.parenthesized(true, |c| {
                let option = c.word()?.to_ascii_uppercase();
                match option.as_str() {
                    "SUBSCRIBED" => selection.subscribed = true,
                    "SPECIAL-USE" => selection.special_use = true,
                    "REMOTE" => selection.remote = true,
                    "RECURSIVEMATCH" => selection.recursive_match = true,
                    _ => return Err("Unknown LIST selection option".into()),
                }
                Ok(())
            })?;
            // RFC 5258 3.1: RECURSIVEMATCH alone (or with REMOTE only) is a BAD.
            if selection.recursive_match && !selection.subscribed && !selection.special_use {
                return Err("RECURSIVEMATCH needs another selection option".into());
            }
            self.cursor.space()?;
        }
        let reference = self.mailbox()?;
        self.cursor.space()?;
        let patterns = if self.cursor.peek() == Some(b'(') {
            let mut patterns = Vec::new();
            self.cursor.parenthesized(false, |c| {
                let raw = c.list_mailbox()?;
                patterns.push(raw.into_owned());
                Ok(())
            })?;
            patterns
                .iter()
                .map(|raw| MailboxName::from_wire(raw, self.encoding).map(|n| n.as_str().to_owned()))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            vec![self.pattern()?]
        };
        let mut returns = ListReturn::default();
        if self.cursor.eat(b' ') {
            if !self.cursor.eat_keyword("RETURN") {
                return Err("Expected RETURN".into());
            }
            self.cursor.space()?;
            let mut status = None;
            self.cursor.parenthesized(true, |c| {
                let option = c.word()?.to_ascii_uppercase();
                match option.as_str() {
                    "SUBSCRIBED" => returns.subscribed = true,
                    "CHILDREN" => returns.children = true,
                    "SPECIAL-USE" => returns.special_use = true,
                    // RFC 5819 2.
                    "STATUS" => {
                        c.space()?;
                        status = Some(status_item_list(c)?);
                    }
                    _ => return Err("Unknown LIST return option".into()),
                }
                Ok(())
            })?;
            returns.status = status;
        }
        Ok(CommandBody::List { reference, patterns, selection, returns })
    }

    fn status_items(&mut self) -> Result<Vec<StatusItem>, Refusal> {
        Ok(status_item_list(self.cursor)?)
    }

    /// RFC 9051 6.3.12: `APPEND mailbox [SP flag-list] [SP date-time] SP literal`.
    fn append(&mut self) -> Result<CommandBody, Refusal> {
        let mailbox = self.one_mailbox()?;
        self.cursor.space()?;
        let mut flags = Vec::new();
        if self.cursor.peek() == Some(b'(') {
            flags = flag_list(self.cursor)?;
            self.cursor.space()?;
        }
        let mut date = None;
        if self.cursor.peek() == Some(b'"') {
            date = Some(date_time(self.cursor)?);
            self.cursor.space()?;
        }
        if !matches!(self.cursor.peek(), Some(b'{' | b'~')) {
            return Err("APPEND needs the message as a literal".into());
        }
        let (message, binary) = self.cursor.literal(LiteralKind::AllowLiteral8)?;
        Ok(CommandBody::Append { mailbox, flags, date, message: message.to_vec(), binary })
    }

    /// RFC 9051 6.4.4: `SEARCH [SP search-return-opts] [SP "CHARSET" SP charset]
    /// 1*(SP search-key)`.
    fn search(&mut self, uid: bool) -> Result<CommandBody, Refusal> {
        self.cursor.space()?;
        let mut returns = None;
        if self.cursor.eat_keyword("RETURN") {
            self.cursor.space()?;
            let options = self.cursor.parenthesized(true, |c| {
                let option = c.word()?.to_ascii_uppercase();
                Ok(match option.as_str() {
                    "MIN" => SearchReturn::Min,
                    "MAX" => SearchReturn::Max,
                    "ALL" => SearchReturn::All,
                    "COUNT" => SearchReturn::Count,
                    "SAVE" => SearchReturn::Save,
                    _ => return Err("Unknown SEARCH return option".into()),
                })
            })?;
            returns = Some(options);
            self.cursor.space()?;
        }
        let mut charset = None;
        if self.cursor.eat_keyword("CHARSET") {
            self.cursor.space()?;
            let name = self.cursor.astring_utf8("Charset")?;
            if !name.eq_ignore_ascii_case("UTF-8") && !name.eq_ignore_ascii_case("US-ASCII") {
                return Err(Refusal::BadCharset);
            }
            charset = Some(name);
            self.cursor.space()?;
        }
        let criteria = search::search_criteria(self.cursor)?;
        Ok(CommandBody::Search { uid, charset, returns, criteria })
    }

    /// RFC 9051 6.4.5: `FETCH sequence-set SP (macro / att / "(" att *(SP att) ")")
    /// [SP "(" CHANGEDSINCE n ")"]`.
    fn fetch(&mut self, uid: bool) -> Result<CommandBody, Refusal> {
        self.cursor.space()?;
        let set = self.sequence_set()?;
        self.cursor.space()?;
        let attributes = fetch::fetch_attributes(self.cursor)?;
        let mut changed_since = None;
        if self.cursor.eat(b' ') {
            self.cursor.parenthesized(false, |c| {
                // RFC 7162 3.1.4.
                if !c.eat_keyword("CHANGEDSINCE") {
                    return Err("Unknown FETCH modifier".into());
                }
                c.space()?;
                changed_since = Some(mod_sequence_value(c)?);
                Ok(())
            })?;
        }
        Ok(CommandBody::Fetch { uid, set, attributes, changed_since })
    }

    /// RFC 9051 6.4.6: `STORE sequence-set [SP "(" UNCHANGEDSINCE n ")"] SP
    /// ["+" / "-"] "FLAGS" [".SILENT"] SP (flag-list / flag *(SP flag))`.
    fn store(&mut self, uid: bool) -> Result<CommandBody, Refusal> {
        self.cursor.space()?;
        let set = self.sequence_set()?;
        self.cursor.space()?;
        let mut unchanged_since = None;
        if self.cursor.peek() == Some(b'(') {
            self.cursor.parenthesized(false, |c| {
                // RFC 7162 3.1.3; zero is allowed (mod-sequence-valzer).
                if !c.eat_keyword("UNCHANGEDSINCE") {
                    return Err("Unknown STORE modifier".into());
                }
                c.space()?;
                unchanged_since = Some(c.number64()?);
                Ok(())
            })?;
            self.cursor.space()?;
        }
        let mode = if self.cursor.eat(b'+') {
            StoreMode::Add
        } else if self.cursor.eat(b'-') {
            StoreMode::Remove
        } else {
            StoreMode::Replace
        };
        let item = self.cursor.word()?.to_ascii_uppercase();
        let silent = match item.as_str() {
            "FLAGS" => false,
            "FLAGS.SILENT" => true,
            _ => return Err("STORE takes FLAGS, +FLAGS or -FLAGS".into()),
        };
        self.cursor.space()?;
        let flags = if self.cursor.peek() == Some(b'(') {
            flag_list(self.cursor)?
        } else {
            let mut flags = vec![flag(self.cursor)?];
            while self.cursor.eat(b' ') {
                flags.push(flag(self.cursor)?);
            }
            flags
        };
        Ok(CommandBody::Store { uid, set, action: StoreAction { mode, silent, flags, unchanged_since } })
    }

    fn copy_or_move(&mut self, uid: bool, is_move: bool) -> Result<CommandBody, Refusal> {
        self.cursor.space()?;
        let set = self.sequence_set()?;
        let mailbox = self.one_mailbox()?;
        Ok(if is_move { CommandBody::Move { uid, set, mailbox } } else { CommandBody::Copy { uid, set, mailbox } })
    }

    /// RFC 2971 3.1: `ID SP ("(" string SP nstring *(SP string SP nstring) ")" / NIL)`.
    fn id(&mut self) -> Result<CommandBody, Refusal> {
        self.cursor.space()?;
        if self.cursor.eat_keyword("NIL") {
            return Ok(CommandBody::Id(None));
        }
        let pairs = self.cursor.parenthesized(true, |c| {
            let field = utf8_string(c.string()?, "ID field")?;
            c.space()?;
            let value = c.nstring()?.map(|v| utf8_string(v, "ID value")).transpose()?;
            Ok((field, value))
        })?;
        // RFC 2971 3.3: at most 30 pairs.
        if pairs.len() > 30 {
            return Err("ID takes at most 30 field-value pairs".into());
        }
        Ok(CommandBody::Id(Some(pairs)))
    }

    fn sequence_set(&mut self) -> Result<SequenceSet, Refusal> {
        Ok(sequence_set(self.cursor)?)
    }
}

fn utf8_string(raw: Cow<'_, [u8]>, what: &'static str) -> Result<String, SyntaxError> {
    String::from_utf8(raw.into_owned()).map_err(|_| format!("{what} is not UTF-8").into())
}

/// RFC 9051 9 `sequence-set`, with `$` (RFC 5182).
pub(crate) fn sequence_set(c: &mut Cursor<'_>) -> Result<SequenceSet, SyntaxError> {
    use super::types::{SeqNumber, SeqRange};
    if c.eat(b'$') {
        return Ok(SequenceSet::Saved);
    }
    let seq_number = |c: &mut Cursor<'_>| -> Result<SeqNumber, SyntaxError> {
        if c.eat(b'*') {
            Ok(SeqNumber::Largest)
        } else {
            c.nz_number().map(SeqNumber::Value).map_err(|_| "Invalid sequence set".into())
        }
    };
    let mut ranges = Vec::new();
    loop {
        let first = seq_number(c)?;
        let last = if c.eat(b':') { seq_number(c)? } else { first };
        ranges.push(SeqRange { first, last });
        if !c.eat(b',') {
            return Ok(SequenceSet::Ranges(ranges));
        }
    }
}

/// RFC 9051 9 `flag`.
pub(crate) fn flag(c: &mut Cursor<'_>) -> Result<Flag, SyntaxError> {
    let backslash = c.eat(b'\\');
    let name = c.atom().map_err(|_| SyntaxError::from("Invalid flag"))?;
    let flag = if backslash { Flag::parse(&format!("\\{name}")) } else { Flag::parse(name) };
    flag.ok_or_else(|| "Invalid flag".into())
}

/// RFC 9051 9 `flag-list`: `(` [flag *(SP flag)] `)`.
pub(crate) fn flag_list(c: &mut Cursor<'_>) -> Result<Vec<Flag>, SyntaxError> {
    c.parenthesized(true, flag)
}

fn status_item_list(c: &mut Cursor<'_>) -> Result<Vec<StatusItem>, SyntaxError> {
    c.parenthesized(false, |c| {
        let name = c.word()?;
        StatusItem::from_name(name).ok_or_else(|| "Unknown STATUS item".into())
    })
}

/// RFC 7162 7 `mod-sequence-value`: 1 to 2^63-1.
pub(crate) fn mod_sequence_value(c: &mut Cursor<'_>) -> Result<u64, SyntaxError> {
    match c.number64()? {
        0 => Err("A mod-sequence cannot be zero here".into()),
        n => Ok(n),
    }
}

/// RFC 9051 9 `date-day` `-` `date-month` `-` `date-year`.
fn date_parts(c: &mut Cursor<'_>, padded_day: bool) -> Result<(u16, u8, u8), SyntaxError> {
    const BAD: &str = "Invalid date";
    let digits = |c: &mut Cursor<'_>, min: usize, max: usize| -> Result<u32, SyntaxError> {
        let count = c.rest().iter().take_while(|b| b.is_ascii_digit()).count();
        if !(min..=max).contains(&count) {
            return Err(BAD.into());
        }
        let value = c.rest()[..count].iter().fold(0u32, |v, &d| v * 10 + u32::from(d - b'0'));
        c.advance(count);
        Ok(value)
    };
    // RFC 9051 9 `date-day-fixed`: SP DIGIT or 2DIGIT.
    let day = if padded_day && c.eat(b' ') { digits(c, 1, 1)? } else { digits(c, 1, 2)? };
    c.expect(b'-', BAD)?;
    let month = c.rest().get(..3).and_then(super::types::month_from_name).ok_or(BAD)?;
    c.advance(3);
    c.expect(b'-', BAD)?;
    let year = digits(c, 4, 4)?;
    let date = super::types::Date::new(year as u16, month, day as u8).ok_or(BAD)?;
    Ok((date.year, date.month, date.day))
}

/// RFC 9051 9 `date`: `date-text` or the same in quotes.
pub(crate) fn date(c: &mut Cursor<'_>) -> Result<super::types::Date, SyntaxError> {
    let quoted = c.eat(b'"');
    let (year, month, day) = date_parts(c, false)?;
    if quoted {
        c.expect(b'"', "Invalid date")?;
    }
    super::types::Date::new(year, month, day).ok_or_else(|| "Invalid date".into())
}

/// RFC 9051 9 `date-time`: `"dd-Mon-yyyy hh:mm:ss +zzzz"`, day padded with a space or
/// a zero (or, leniently, not at all).
pub(crate) fn date_time(c: &mut Cursor<'_>) -> Result<DateTime, SyntaxError> {
    const BAD: &str = "Invalid date-time";
    c.expect(b'"', BAD)?;
    let (year, month, day) = date_parts(c, true).map_err(|_| BAD)?;
    c.expect(b' ', BAD)?;
    let two_digits = |c: &mut Cursor<'_>| -> Result<u32, SyntaxError> {
        match *c.rest() {
            [a, b, ..] if a.is_ascii_digit() && b.is_ascii_digit() => {
                c.advance(2);
                Ok(u32::from(a - b'0') * 10 + u32::from(b - b'0'))
            }
            _ => Err(BAD.into()),
        }
    };
    let hour = two_digits(c)?;
    c.expect(b':', BAD)?;
    let minute = two_digits(c)?;
    c.expect(b':', BAD)?;
    let second = two_digits(c)?;
    c.expect(b' ', BAD)?;
    let sign: i64 = if c.eat(b'+') {
        1
    } else if c.eat(b'-') {
        -1
    } else {
        return Err(BAD.into());
    };
    let zone_hours = two_digits(c)?;
    let zone_minutes = two_digits(c)?;
    c.expect(b'"', BAD)?;
    if hour > 23 || minute > 59 || second > 60 || zone_minutes > 59 {
        return Err(BAD.into());
    }
    let offset_minutes = sign * i64::from(zone_hours * 60 + zone_minutes);
    let local =
        crate::time::civil_to_unix_seconds(i64::from(year), u32::from(month), u32::from(day), hour, minute, second);
    Ok(DateTime { unix: local - offset_minutes * 60, offset_minutes: offset_minutes as i16 })
}
