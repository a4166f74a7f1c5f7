//! The parser of one complete command (RFC 9051 9 `command`), literals inline.

use super::body::{Command, CommandBody, CommandError, CommandErrorKind, ListReturn, ListSelection};
use super::fetch::fetch_attributes;
use super::grammar::{date_time, flag, flag_list, mod_sequence_value, sequence_set, status_item_list, utf8_string};
use super::lexer::{Cursor, LiteralKind, SyntaxError};
use super::search::search_criteria;
use crate::imap::types::{
    MailboxAttribute, MailboxName, NameEncoding, SearchReturn, SequenceSet, StatusItem, StoreAction, StoreMode, Tag,
};

/// The tag at the start of a command, if there is a valid one.
pub(super) fn leading_tag(command: &[u8]) -> Option<Tag> {
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
        let criteria = search_criteria(self.cursor)?;
        Ok(CommandBody::Search { uid, charset, returns, criteria })
    }

    /// RFC 9051 6.4.5: `FETCH sequence-set SP (macro / att / "(" att *(SP att) ")")
    /// [SP "(" CHANGEDSINCE n ")"]`.
    fn fetch(&mut self, uid: bool) -> Result<CommandBody, Refusal> {
        self.cursor.space()?;
        let set = self.sequence_set()?;
        self.cursor.space()?;
        let attributes = fetch_attributes(self.cursor)?;
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
