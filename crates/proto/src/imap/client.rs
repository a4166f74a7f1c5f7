//! The IMAP client side with no I/O (RFC 9051, also IMAP4rev1 servers, RFC 3501): commands
//! go out tagged with [`Client::send`] (the client picks the tags), received bytes come in
//! with [`Client::feed`], and [`Client::poll_response`] hands out each complete response:
//! untagged data as a small value tree, continuation requests, and the tagged completion
//! of a command, matched by its tag (so commands may be pipelined, RFC 9051 5.5).
//!
//! Literals in server responses (`{n}`, and `~{n}` of BINARY, RFC 3516 4.2) are read
//! whole, within [`ClientLimits`]: a hostile server gets a [`ClientError`], never an
//! unbounded buffer or a panic. Literals the client sends are synchronizing (held back until
//! the server's `+`, RFC 9051 4.3) unless the server announced LITERAL+ or LITERAL-
//! (RFC 7888), which the client notices in CAPABILITY data and response codes.
//!
//! Helpers read what a client needs from the generic values: capabilities, EXISTS, FETCH
//! items, SEARCH and ESEARCH results, LIST entries and STATUS items.

use std::collections::VecDeque;
use std::fmt;

use super::response::Status;
use super::types::{MailboxName, NameEncoding, Tag};
use crate::sasl;

/// Longest response line accepted (literals apart): a longer one is a protocol error.
pub const MAX_RESPONSE_LINE: usize = 1 << 20;
/// Largest literal accepted in a response by default (a big message's `BODY[]`).
pub const DEFAULT_MAX_LITERAL: usize = 64 * 1024 * 1024;
/// Largest whole response (lines and literals) accepted by default.
pub const DEFAULT_MAX_RESPONSE: usize = 128 * 1024 * 1024;
/// Deepest nesting of parenthesised lists (BODYSTRUCTURE nests; a recursive parser must
/// not let a server overflow the stack with `((((...`).
pub const DEFAULT_MAX_DEPTH: usize = 64;
/// RFC 7888 5: with LITERAL- only literals up to 4096 octets may be non-synchronizing.
pub const LITERAL_MINUS_MAX: usize = 4096;
/// What one line or literal of a response costs beyond its octets, so that a flood of
/// `{0}` literals counts too.
const PART_OVERHEAD: usize = 32;
/// Longest string sent quoted; longer ones go as literals.
const MAX_QUOTED: usize = 1024;

/// The bounds on what a server may make the client hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    pub max_line: usize,
    pub max_literal: usize,
    pub max_response: usize,
    pub max_depth: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            max_line: MAX_RESPONSE_LINE,
            max_literal: DEFAULT_MAX_LITERAL,
            max_response: DEFAULT_MAX_RESPONSE,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// A server that broke the protocol (or a limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError(pub String);

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IMAP protocol error: {}", self.0)
    }
}

impl std::error::Error for ClientError {}

fn error<T>(text: impl Into<String>) -> Result<T, ClientError> {
    Err(ClientError(text.into()))
}

/// A value in a server response (RFC 9051 9 `atom`, `number`, `string`, `nil` and
/// parenthesised lists), read generically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// An atom as sent, also flags (`\Seen`), sets (`1:3,5`) and FETCH item names with
    /// their section and partial (`BODY[HEADER]<0>`).
    Atom(String),
    /// Digits only (`number` / `number64`).
    Number(u64),
    /// A quoted string, unescaped.
    String(Vec<u8>),
    /// A literal (`{n}`) or literal8 (`~{n}`).
    Literal(Vec<u8>),
    Nil,
    List(Vec<Value>),
}

impl Value {
    /// The octets of a string (quoted or literal); an atom's too (`astring`).
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::String(b) | Value::Literal(b) => Some(b),
            Value::Atom(a) => Some(a.as_bytes()),
            _ => None,
        }
    }

    /// The text of an atom or string (lossy for non-UTF-8).
    pub fn text(&self) -> Option<String> {
        match self {
            Value::Number(n) => Some(n.to_string()),
            other => other.as_bytes().map(|b| String::from_utf8_lossy(b).into_owned()),
        }
    }

    pub fn as_number(&self) -> Option<u64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    pub fn is_nil(&self) -> bool {
        *self == Value::Nil
    }

    /// The atom, upper-cased (names compare case-insensitively, RFC 9051 9 note 2).
    fn upper_atom(&self) -> Option<String> {
        match self {
            Value::Atom(a) => Some(a.to_ascii_uppercase()),
            _ => None,
        }
    }
}

/// RFC 9051 7.1 response code: its name (upper case) and the values after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    pub name: String,
    pub values: Vec<Value>,
}

impl Code {
    /// The first value as a number (`UIDNEXT n`, `UIDVALIDITY n`, `HIGHESTMODSEQ n`).
    pub fn number(&self) -> Option<u64> {
        self.values.first()?.as_number()
    }

    /// RFC 4315 3 `APPENDUID uidvalidity uid`.
    pub fn append_uid(&self) -> Option<(u32, u32)> {
        if self.name != "APPENDUID" {
            return None;
        }
        let validity = u32::try_from(self.values.first()?.as_number()?).ok()?;
        let uid = u32::try_from(self.values.get(1)?.as_number()?).ok()?;
        Some((validity, uid))
    }

    /// RFC 9051 7.1 `CAPABILITY` code.
    pub fn capabilities(&self) -> Option<Vec<String>> {
        (self.name == "CAPABILITY").then(|| self.values.iter().filter_map(Value::text).collect())
    }
}

/// A status response's condition, code and text (RFC 9051 7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusText {
    pub status: Status,
    pub code: Option<Code>,
    pub text: String,
}

/// An untagged response (RFC 9051 7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Untagged {
    /// `* OK/NO/BAD/PREAUTH/BYE [code] text` (also the greeting).
    Status(StatusText),
    /// `* n NAME ...`: EXISTS, EXPUNGE, FETCH (one list), RECENT of IMAP4rev1.
    Message { number: u32, name: String, values: Vec<Value> },
    /// `* NAME ...`: CAPABILITY, LIST, STATUS, SEARCH, ESEARCH, FLAGS, ENABLED, ...
    Data { name: String, values: Vec<Value> },
}

impl Untagged {
    /// The capabilities of `* CAPABILITY ...` or of a `[CAPABILITY ...]` code.
    pub fn capabilities(&self) -> Option<Vec<String>> {
        match self {
            Untagged::Data { name, values } if name == "CAPABILITY" => {
                Some(values.iter().filter_map(Value::text).collect())
            }
            Untagged::Status(status) => status.code.as_ref()?.capabilities(),
            _ => None,
        }
    }

    fn message(&self, wanted: &str) -> Option<u32> {
        match self {
            Untagged::Message { number, name, .. } if name == wanted => Some(*number),
            _ => None,
        }
    }

    /// RFC 9051 7.4.1 `* n EXISTS`.
    pub fn exists(&self) -> Option<u32> {
        self.message("EXISTS")
    }

    /// RFC 9051 7.5.1 `* n EXPUNGE`.
    pub fn expunge(&self) -> Option<u32> {
        self.message("EXPUNGE")
    }

    /// RFC 9051 7.3.5 `* FLAGS (...)`.
    pub fn flags(&self) -> Option<Vec<String>> {
        match self {
            Untagged::Data { name, values } if name == "FLAGS" => {
                Some(values.first()?.as_list()?.iter().filter_map(Value::text).collect())
            }
            _ => None,
        }
    }

    /// RFC 9051 7.5.2 FETCH data, taken apart (without copying its literals).
    pub fn into_fetch(self) -> Option<Fetch> {
        let Untagged::Message { number, name, values } = self else { return None };
        if name != "FETCH" {
            return None;
        }
        let Some(Value::List(list)) = values.into_iter().next() else { return None };
        let mut items = Vec::with_capacity(list.len() / 2);
        let mut list = list.into_iter();
        while let Some(name) = list.next() {
            let name = name.upper_atom()?;
            items.push((name, list.next()?));
        }
        Some(Fetch { number, items })
    }

    /// RFC 3501 7.2.5 / RFC 9051 (for IMAP4rev1 servers) `* SEARCH n...`, with CONDSTORE's
    /// trailing `(MODSEQ n)` left out (RFC 7162 3.1.5).
    pub fn search(&self) -> Option<Vec<u32>> {
        match self {
            Untagged::Data { name, values } if name == "SEARCH" => {
                Some(values.iter().filter_map(|v| v.as_number().and_then(|n| u32::try_from(n).ok())).collect())
            }
            _ => None,
        }
    }

    /// RFC 4731 / RFC 9051 7.3.4 `* ESEARCH [(TAG "t")] [UID] name value ...`.
    pub fn esearch(&self) -> Option<Esearch> {
        let Untagged::Data { name, values } = self else { return None };
        if name != "ESEARCH" {
            return None;
        }
        let mut result = Esearch::default();
        let mut rest = values.iter().peekable();
        if let Some(Value::List(correlator)) = rest.peek() {
            if correlator.first().and_then(Value::upper_atom).as_deref() == Some("TAG") {
                result.tag = correlator.get(1).and_then(Value::text);
            }
            rest.next();
        }
        if rest.peek().and_then(|v| v.upper_atom()).as_deref() == Some("UID") {
            result.uid = true;
            rest.next();
        }
        while let Some(name) = rest.next() {
            let name = name.upper_atom()?;
            result.items.push((name, rest.next()?.clone()));
        }
        Some(result)
    }

    /// RFC 9051 7.3.1 `* LIST (attributes) delimiter name [extended]` (also LSUB).
    pub fn list(&self) -> Option<ListEntry> {
        let Untagged::Data { name, values } = self else { return None };
        if name != "LIST" && name != "LSUB" {
            return None;
        }
        let attributes = values.first()?.as_list()?.iter().filter_map(Value::text).collect();
        let delimiter = match values.get(1)? {
            Value::Nil => None,
            other => Some(other.text()?),
        };
        Some(ListEntry { attributes, delimiter, name: values.get(2)?.as_bytes()?.to_vec() })
    }

    /// RFC 9051 7.3.2 `* STATUS mailbox (name number ...)`.
    pub fn status(&self) -> Option<MailboxStatus> {
        let Untagged::Data { name, values } = self else { return None };
        if name != "STATUS" {
            return None;
        }
        let mailbox = values.first()?.as_bytes()?.to_vec();
        let list = values.get(1)?.as_list()?;
        let mut items = Vec::new();
        for pair in list.chunks(2) {
            let [name, value] = pair else { return None };
            items.push((name.upper_atom()?, value.as_number()?));
        }
        Some(MailboxStatus { mailbox, items })
    }
}

/// One message's FETCH data (RFC 9051 7.5.2): item names upper-cased, as sent
/// (`BODY[HEADER]`, `BODY[]<0>`, `BINARY[1]`), each with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    pub number: u32,
    pub items: Vec<(String, Value)>,
}

impl Fetch {
    /// The value of an item by name (case-insensitive).
    pub fn item(&self, name: &str) -> Option<&Value> {
        self.items.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    fn small_number(&self, name: &str) -> Option<u32> {
        u32::try_from(self.item(name)?.as_number()?).ok()
    }

    pub fn uid(&self) -> Option<u32> {
        self.small_number("UID")
    }

    pub fn rfc822_size(&self) -> Option<u64> {
        self.item("RFC822.SIZE")?.as_number()
    }

    pub fn flags(&self) -> Option<Vec<String>> {
        Some(self.item("FLAGS")?.as_list()?.iter().filter_map(Value::text).collect())
    }

    /// RFC 7162 3.1.4 `MODSEQ (n)`.
    pub fn modseq(&self) -> Option<u64> {
        self.item("MODSEQ")?.as_list()?.first()?.as_number()
    }

    /// `BODY[section]` data (RFC 9051 7.5.2), with or without a `<origin>`: `section` as
    /// between the brackets (`""`, `"HEADER"`, `"1.MIME"`). None when absent or NIL.
    pub fn body(&self, section: &str) -> Option<&[u8]> {
        self.section("BODY", section)
    }

    /// `BINARY[section]` data (RFC 3516 4.2, RFC 9051 7.5.2).
    pub fn binary(&self, section: &str) -> Option<&[u8]> {
        self.section("BINARY", section)
    }

    fn section(&self, kind: &str, section: &str) -> Option<&[u8]> {
        let wanted = format!("{kind}[{}]", section.to_ascii_uppercase());
        self.items
            .iter()
            .find(|(name, _)| {
                name.strip_prefix(wanted.as_str())
                    .is_some_and(|rest| rest.is_empty() || (rest.starts_with('<') && rest.ends_with('>')))
            })
            .and_then(|(_, value)| match value {
                Value::String(b) | Value::Literal(b) => Some(b.as_slice()),
                _ => None,
            })
    }
}

/// RFC 4731 ESEARCH result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Esearch {
    /// The tag of the command it answers, when the server said.
    pub tag: Option<String>,
    /// Whether the numbers are UIDs.
    pub uid: bool,
    /// Return items (`MIN`, `MAX`, `COUNT`, `ALL`, `MODSEQ`), names upper-cased.
    pub items: Vec<(String, Value)>,
}

impl Esearch {
    fn item(&self, name: &str) -> Option<&Value> {
        self.items.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    pub fn count(&self) -> Option<u64> {
        self.item("COUNT")?.as_number()
    }

    pub fn min(&self) -> Option<u64> {
        self.item("MIN")?.as_number()
    }

    pub fn max(&self) -> Option<u64> {
        self.item("MAX")?.as_number()
    }

    /// `ALL` as sorted ranges (not expanded: a server's `1:4294967295` must not make the
    /// client allocate four billion numbers).
    pub fn all(&self) -> Option<Vec<(u32, u32)>> {
        parse_sequence_set(&self.item("ALL")?.text()?)
    }
}

/// RFC 9051 9 `sequence-set` of numbers as a server sends it (`1:3,7`), as sorted
/// `(low, high)` ranges; `*` is not valid in responses.
pub fn parse_sequence_set(text: &str) -> Option<Vec<(u32, u32)>> {
    let number = |n: &str| -> Option<u32> {
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        n.parse().ok()
    };
    let mut ranges = Vec::new();
    for range in text.split(',') {
        let (a, b) = match range.split_once(':') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => (number(range)?, number(range)?),
        };
        ranges.push((a.min(b), a.max(b)));
    }
    ranges.sort_unstable();
    Some(ranges)
}

/// A LIST or LSUB entry (RFC 9051 7.3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    pub attributes: Vec<String>,
    /// The hierarchy delimiter; None for a flat name space.
    pub delimiter: Option<String>,
    /// The name as sent (UTF-8 from IMAP4rev2 servers, modified UTF-7 from IMAP4rev1
    /// ones, RFC 3501 5.1.3).
    pub name: Vec<u8>,
}

/// A STATUS response (RFC 9051 7.3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxStatus {
    pub mailbox: Vec<u8>,
    pub items: Vec<(String, u64)>,
}

impl MailboxStatus {
    pub fn get(&self, name: &str) -> Option<u64> {
        self.items.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
    }
}

/// The tagged status response that completes a command (RFC 9051 7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub tag: Tag,
    /// OK, NO or BAD.
    pub status: Status,
    pub code: Option<Code>,
    pub text: String,
}

impl Completion {
    pub fn is_ok(&self) -> bool {
        self.status == Status::Ok
    }
}

/// One response from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Untagged(Untagged),
    /// RFC 9051 7.6 `+ text`: to IDLE or AUTHENTICATE (the text of the latter is base64,
    /// [`decode_challenge`]). Those for the client's own synchronizing literals are
    /// consumed by the client and never handed out.
    Continuation(Vec<u8>),
    /// The tagged completion of a command sent with [`Client::send`].
    Done(Completion),
}

/// The text of an AUTHENTICATE challenge (RFC 9051 6.2.2), base64-decoded.
pub fn decode_challenge(text: &[u8]) -> Result<Vec<u8>, ClientError> {
    sasl::decode_challenge(text).map_err(|_| ClientError("bad base64 in a SASL challenge".into()))
}

/// A command to send: its name and arguments, without the tag (the client adds it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Text, each piece followed by a literal.
    literals: Vec<(Vec<u8>, Vec<u8>)>,
    /// The text after the last literal.
    tail: Vec<u8>,
    continues: bool,
}

impl Request {
    /// A command by name (`"SELECT"`, `"UID FETCH"`).
    pub fn new(name: &str) -> Request {
        Request { literals: Vec::new(), tail: Vec::new(), continues: false }.raw(name)
    }

    /// Text as it is, without a space before it. CR and LF become spaces: a caller's
    /// text must not end the command line and start another (command injection).
    pub fn raw(mut self, text: &str) -> Request {
        self.tail.extend(text.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
        self
    }

    /// A space and text as it is: atoms, sequence sets, parenthesised item lists.
    pub fn arg(self, text: &str) -> Request {
        self.raw(" ").raw(text)
    }

    /// A space and a `string` (RFC 9051 4.3): quoted when it can be, else a literal.
    pub fn string(mut self, value: &[u8]) -> Request {
        let quotable = value.len() <= MAX_QUOTED && value.iter().all(|&b| (0x20..0x7f).contains(&b));
        if !quotable {
            return self.literal(value);
        }
        self.tail.extend_from_slice(b" \"");
        for &b in value {
            if b == b'"' || b == b'\\' {
                self.tail.push(b'\\');
            }
            self.tail.push(b);
        }
        self.tail.push(b'"');
        self
    }

    /// A space and an `astring`: bare when every octet is an ASTRING-CHAR and it is not
    /// `NIL`, else a string.
    pub fn astring(mut self, value: &[u8]) -> Request {
        if !value.is_empty()
            && value.iter().all(|&b| super::types::is_astring_char(b))
            && !value.eq_ignore_ascii_case(b"NIL")
        {
            self.tail.push(b' ');
            self.tail.extend_from_slice(value);
            self
        } else {
            self.string(value)
        }
    }

    /// A space and a mailbox name in the connection's encoding (UTF-8 once IMAP4rev2 is
    /// enabled, modified UTF-7 before, RFC 9051 5.1).
    pub fn mailbox(self, name: &str, encoding: NameEncoding) -> Request {
        self.string(MailboxName::new(name).to_wire(encoding).as_bytes())
    }

    /// A space and a literal (synchronizing or not, as the server allows).
    pub fn literal(mut self, value: &[u8]) -> Request {
        self.tail.push(b' ');
        let text = std::mem::take(&mut self.tail);
        self.literals.push((text, value.to_vec()));
        self
    }

    /// The command takes continuation requests for its caller (IDLE, AUTHENTICATE).
    pub fn expect_continuation(mut self) -> Request {
        self.continues = true;
        self
    }
}

/// How the client sends its literals (RFC 7888).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiteralMode {
    /// `{n}`, then wait for `+` (RFC 9051 4.3).
    Synchronizing,
    /// LITERAL+: every literal as `{n+}`, no wait.
    Plus,
    /// LITERAL-: `{n+}` up to 4096 octets, synchronizing above.
    Minus,
}

impl LiteralMode {
    fn non_synchronizing(self, len: usize) -> bool {
        match self {
            LiteralMode::Synchronizing => false,
            LiteralMode::Plus => true,
            LiteralMode::Minus => len <= LITERAL_MINUS_MAX,
        }
    }
}

/// Octets of a command, sent when the ones before them are, and (`after_continuation`)
/// once the server asked for them with `+`.
#[derive(Debug)]
struct Chunk {
    tag: Tag,
    bytes: Vec<u8>,
    after_continuation: bool,
}

#[derive(Debug)]
struct Pending {
    tag: Tag,
    continues: bool,
}

/// A response being framed: its lines and, between them, its literals.
#[derive(Debug, Default)]
struct Frame {
    lines: Vec<Vec<u8>>,
    literals: Vec<Vec<u8>>,
    size: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    Line,
    Literal(usize),
}

/// One client connection's protocol state.
#[derive(Debug)]
pub struct Client {
    input: Vec<u8>,
    /// Where the unread input starts.
    start: usize,
    /// How far the search for the next LF got (so a long line arriving in small pieces is
    /// not searched again from its start each time).
    scanned: usize,
    frame: Frame,
    reading: Reading,
    output: Vec<u8>,
    /// Octets held back behind a synchronizing literal.
    queue: VecDeque<Chunk>,
    /// The first queued chunk waits for the server's `+`.
    awaiting_literal: bool,
    pending: Vec<Pending>,
    next_tag: u32,
    literal_mode: LiteralMode,
    limits: ClientLimits,
    failed: Option<ClientError>,
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

impl Client {
    /// A fresh connection: the first response is the greeting (RFC 9051 7.1, an untagged
    /// OK, PREAUTH or BYE), handed out like any untagged response.
    pub fn new() -> Client {
        Client {
            input: Vec::new(),
            start: 0,
            scanned: 0,
            frame: Frame::default(),
            reading: Reading::Line,
            output: Vec::new(),
            queue: VecDeque::new(),
            awaiting_literal: false,
            pending: Vec::new(),
            next_tag: 1,
            literal_mode: LiteralMode::Synchronizing,
            limits: ClientLimits::default(),
            failed: None,
        }
    }

    pub fn with_limits(mut self, limits: ClientLimits) -> Client {
        self.limits = limits;
        self
    }

    /// Sets how literals go out; the next capability list the server sends sets it again.
    pub fn set_literal_mode(&mut self, mode: LiteralMode) {
        self.literal_mode = mode;
    }

    pub fn literal_mode(&self) -> LiteralMode {
        self.literal_mode
    }

    /// Queues a command with a new tag; its completion comes as [`Response::Done`] with
    /// that tag.
    pub fn send(&mut self, request: &Request) -> Tag {
        let tag = self.new_tag();
        let mut current = format!("{tag} ").into_bytes();
        let mut after_continuation = false;
        for (text, value) in &request.literals {
            current.extend_from_slice(text);
            if self.literal_mode.non_synchronizing(value.len()) {
                // RFC 7888 3: `{n+}` and the octets at once.
                current.extend_from_slice(format!("{{{}+}}\r\n", value.len()).as_bytes());
                current.extend_from_slice(value);
            } else {
                // RFC 9051 4.3: the octets only after the server's `+`.
                current.extend_from_slice(format!("{{{}}}\r\n", value.len()).as_bytes());
                let bytes = std::mem::replace(&mut current, value.clone());
                self.queue.push_back(Chunk { tag: tag.clone(), bytes, after_continuation });
                after_continuation = true;
            }
        }
        current.extend_from_slice(&request.tail);
        current.extend_from_slice(b"\r\n");
        self.queue.push_back(Chunk { tag: tag.clone(), bytes: current, after_continuation });
        self.pending.push(Pending { tag: tag.clone(), continues: request.continues });
        self.pump();
        tag
    }

    /// Queues a line inside a command in progress: `DONE` to end IDLE (RFC 2177 3), or an
    /// answer to an AUTHENTICATE challenge. CR and LF inside become spaces.
    pub fn send_line(&mut self, line: &[u8]) {
        let Some(tag) = self.pending.iter().rev().find(|p| p.continues).map(|p| p.tag.clone()) else {
            return;
        };
        let mut bytes: Vec<u8> = line.iter().map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }).collect();
        bytes.extend_from_slice(b"\r\n");
        self.queue.push_back(Chunk { tag, bytes, after_continuation: false });
        self.pump();
    }

    /// RFC 2177 3: ends IDLE; the IDLE command's completion follows.
    pub fn idle_done(&mut self) {
        self.send_line(b"DONE");
    }

    /// Answers an AUTHENTICATE challenge (RFC 9051 6.2.2: base64, empty stays empty).
    pub fn send_sasl_response(&mut self, raw: &[u8]) {
        self.send_line(sasl::encode_response(raw).as_bytes());
    }

    /// Cancels an AUTHENTICATE exchange with `*` (RFC 9051 6.2.2); the server answers BAD.
    pub fn cancel_sasl(&mut self) {
        self.send_line(b"*");
    }

    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        // Drop what was read, now and then, so the buffer does not grow with the session.
        if self.start == self.input.len() {
            self.input.clear();
            self.start = 0;
            self.scanned = 0;
        } else if self.start > 64 * 1024 && self.start > self.input.len() / 2 {
            self.input.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.input.extend_from_slice(bytes);
    }

    /// True while a command has not been completed.
    pub fn is_waiting(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The tags of the commands not yet completed, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &Tag> {
        self.pending.iter().map(|p| &p.tag)
    }

    /// After the OK to STARTTLS and the handshake: nothing received in the clear after
    /// the OK may be taken as a response inside TLS (RFC 9051 6.2.1), and the capabilities
    /// learnt before count no more.
    pub fn tls_started(&mut self) {
        self.input.clear();
        self.start = 0;
        self.scanned = 0;
        self.frame = Frame::default();
        self.reading = Reading::Line;
        self.literal_mode = LiteralMode::Synchronizing;
    }

    /// The next complete response, if one has arrived. After a protocol error every call
    /// returns that error.
    pub fn poll_response(&mut self) -> Result<Option<Response>, ClientError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.poll_inner();
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    fn poll_inner(&mut self) -> Result<Option<Response>, ClientError> {
        loop {
            let Some(frame) = self.next_frame()? else { return Ok(None) };
            let response = Parser::new(frame, self.limits.max_depth).response()?;
            match &response {
                Response::Continuation(_) if self.awaiting_literal => {
                    // RFC 9051 4.3: the go-ahead for our literal; nothing for the caller.
                    self.awaiting_literal = false;
                    if let Some(chunk) = self.queue.pop_front() {
                        self.output.extend_from_slice(&chunk.bytes);
                    }
                    self.pump();
                    continue;
                }
                Response::Continuation(_) => {
                    if !self.pending.iter().any(|p| p.continues) {
                        return error("a continuation request no command asked for");
                    }
                }
                Response::Done(completion) => {
                    let Some(i) = self.pending.iter().position(|p| p.tag == completion.tag) else {
                        return error(format!("a completion for tag {} that is not in use", completion.tag));
                    };
                    let done = self.pending.remove(i);
                    // A command refused before all its literals went: the rest never goes.
                    self.queue.retain(|c| c.tag != done.tag);
                    self.awaiting_literal = false;
                    self.pump();
                    if let Some(capabilities) = completion.code.as_ref().and_then(Code::capabilities) {
                        self.note_capabilities(&capabilities);
                    }
                }
                Response::Untagged(untagged) => {
                    if let Some(capabilities) = untagged.capabilities() {
                        self.note_capabilities(&capabilities);
                    }
                }
            }
            return Ok(Some(response));
        }
    }

    /// RFC 7888 4: LITERAL+ allows every literal non-synchronizing, LITERAL- small ones.
    fn note_capabilities(&mut self, capabilities: &[String]) {
        let has = |name: &str| capabilities.iter().any(|c| c.eq_ignore_ascii_case(name));
        self.literal_mode = if has("LITERAL+") {
            LiteralMode::Plus
        } else if has("LITERAL-") {
            LiteralMode::Minus
        } else {
            LiteralMode::Synchronizing
        };
    }

    fn new_tag(&mut self) -> Tag {
        let n = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1);
        // Letters and digits only: always a valid tag.
        Tag::new(&format!("A{n:04}")).expect("letters and digits make a tag")
    }

    /// Moves queued octets to the output up to the first that waits for a `+`.
    fn pump(&mut self) {
        if self.awaiting_literal {
            return;
        }
        while let Some(chunk) = self.queue.front() {
            if chunk.after_continuation {
                self.awaiting_literal = true;
                return;
            }
            if let Some(chunk) = self.queue.pop_front() {
                self.output.extend_from_slice(&chunk.bytes);
            }
        }
    }

    /// Frames the next response: its lines, and the literal each line but the last
    /// announces at its end.
    fn next_frame(&mut self) -> Result<Option<Frame>, ClientError> {
        loop {
            match self.reading {
                Reading::Literal(n) => {
                    if self.input.len() - self.start < n {
                        return Ok(None);
                    }
                    let literal = self.input[self.start..self.start + n].to_vec();
                    self.start += n;
                    self.scanned = self.start;
                    self.frame.literals.push(literal);
                    self.reading = Reading::Line;
                }
                Reading::Line => {
                    let Some(offset) = self.input[self.scanned..].iter().position(|&b| b == b'\n') else {
                        self.scanned = self.input.len();
                        // A CR at the end may start the line's CRLF: it is not part of the line.
                        let partial = &self.input[self.start..];
                        let partial = partial.strip_suffix(b"\r").unwrap_or(partial);
                        if partial.len() > self.limits.max_line {
                            return error("response line too long");
                        }
                        return Ok(None);
                    };
                    let end = self.scanned + offset;
                    let line = &self.input[self.start..end];
                    let line = line.strip_suffix(b"\r").unwrap_or(line).to_vec();
                    self.start = end + 1;
                    self.scanned = self.start;
                    if line.len() > self.limits.max_line {
                        return error("response line too long");
                    }
                    self.frame.size = self.frame.size.saturating_add(line.len() + PART_OVERHEAD);
                    let literal = literal_at_end(&line)?;
                    self.frame.lines.push(line);
                    if let Some(n) = literal {
                        if n > self.limits.max_literal {
                            return error(format!("a literal of {n} octets (at most {})", self.limits.max_literal));
                        }
                        self.frame.size = self.frame.size.saturating_add(n + PART_OVERHEAD);
                    }
                    if self.frame.size > self.limits.max_response {
                        return error(format!("a response over {} octets", self.limits.max_response));
                    }
                    match literal {
                        Some(n) => self.reading = Reading::Literal(n),
                        None => return Ok(Some(std::mem::take(&mut self.frame))),
                    }
                }
            }
        }
    }
}

/// RFC 9051 4.3: a line ending in `{n}` (or `~{n}`) is followed by n octets of literal.
fn literal_at_end(line: &[u8]) -> Result<Option<usize>, ClientError> {
    let Some(body) = line.strip_suffix(b"}") else { return Ok(None) };
    let Some(open) = body.iter().rposition(|&b| b == b'{') else { return Ok(None) };
    let digits = &body[open + 1..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Ok(None);
    }
    // RFC 9051 9: number64 at most; anything longer is no size a server can mean.
    let size = std::str::from_utf8(digits).ok().and_then(|d| d.parse::<u64>().ok());
    match size.and_then(|s| usize::try_from(s).ok()) {
        Some(n) => Ok(Some(n)),
        None => error("a literal size out of range"),
    }
}

/// Reads one framed response: values over its lines, a literal wherever a line ends in
/// its announcement.
struct Parser {
    lines: Vec<Vec<u8>>,
    literals: Vec<Vec<u8>>,
    line: usize,
    pos: usize,
    max_depth: usize,
}

impl Parser {
    fn new(frame: Frame, max_depth: usize) -> Parser {
        Parser { lines: frame.lines, literals: frame.literals, line: 0, pos: 0, max_depth }
    }

    fn current(&self) -> &[u8] {
        self.lines.get(self.line).map_or(&[], Vec::as_slice)
    }

    fn peek(&self) -> Option<u8> {
        self.current().get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.current().len() && self.line + 1 >= self.lines.len()
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    fn response(mut self) -> Result<Response, ClientError> {
        match self.peek() {
            None => error("an empty response line"),
            Some(b'+') => {
                // RFC 9051 7.6 `+ text` (some servers send a bare `+`).
                self.pos += 1;
                if self.peek() == Some(b' ') {
                    self.pos += 1;
                }
                Ok(Response::Continuation(self.rest()))
            }
            Some(b'*') => {
                self.pos += 1;
                if self.peek() != Some(b' ') {
                    return error("no space after `*`");
                }
                self.skip_spaces();
                self.untagged().map(Response::Untagged)
            }
            Some(_) => {
                let line = self.current();
                let end = line[self.pos..].iter().position(|&b| b == b' ').map_or(line.len(), |p| self.pos + p);
                let Some(tag) = Tag::from_bytes(&line[self.pos..end]) else {
                    return error(format!("not a response: {}", String::from_utf8_lossy(line)));
                };
                self.pos = end;
                self.skip_spaces();
                let status = match self.word()?.as_str() {
                    "OK" => Status::Ok,
                    "NO" => Status::No,
                    "BAD" => Status::Bad,
                    other => return error(format!("a tagged {other} response")),
                };
                let StatusText { status, code, text } = self.status_text(status);
                Ok(Response::Done(Completion { tag, status, code, text }))
            }
        }
    }

    fn untagged(&mut self) -> Result<Untagged, ClientError> {
        let first = self.value(0)?;
        if let Value::Number(number) = first {
            // RFC 9051 7.4, 7.5: message data.
            let Ok(number) = u32::try_from(number) else { return error("a message number out of range") };
            self.skip_spaces();
            let name = self.word()?;
            let values = self.values_to_end()?;
            return Ok(Untagged::Message { number, name, values });
        }
        let Some(name) = first.upper_atom() else { return error("untagged data without a name") };
        let status = match name.as_str() {
            "OK" => Status::Ok,
            "NO" => Status::No,
            "BAD" => Status::Bad,
            "PREAUTH" => Status::PreAuth,
            "BYE" => Status::Bye,
            _ => return Ok(Untagged::Data { name, values: self.values_to_end()? }),
        };
        Ok(Untagged::Status(self.status_text(status)))
    }

    /// An atom, upper-cased; an error when there is none.
    fn word(&mut self) -> Result<String, ClientError> {
        match self.value(0)? {
            Value::Atom(a) => Ok(a.to_ascii_uppercase()),
            other => error(format!("{other:?} where a name belongs")),
        }
    }

    /// RFC 9051 7.1 `resp-text`: `[code] text`, or text alone. A code that does not parse
    /// is left in the text (RFC 9051 7.1: clients ignore codes they do not know).
    fn status_text(&mut self, status: Status) -> StatusText {
        self.skip_spaces();
        let mut code = None;
        if self.peek() == Some(b'[') {
            let (line, pos) = (self.line, self.pos);
            self.pos += 1;
            match self.code() {
                Ok(c) => {
                    code = Some(c);
                    self.skip_spaces();
                }
                Err(_) => (self.line, self.pos) = (line, pos),
            }
        }
        let text = String::from_utf8_lossy(&self.rest()).into_owned();
        StatusText { status, code, text }
    }

    fn code(&mut self) -> Result<Code, ClientError> {
        let name = self.word()?;
        let mut values = Vec::new();
        loop {
            self.skip_spaces();
            match self.peek() {
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Code { name, values });
                }
                None => return error("a response code without `]`"),
                Some(_) => values.push(self.value(0)?),
            }
        }
    }

    fn values_to_end(&mut self) -> Result<Vec<Value>, ClientError> {
        let mut values = Vec::new();
        loop {
            self.skip_spaces();
            if self.at_end() {
                return Ok(values);
            }
            values.push(self.value(0)?);
        }
    }

    /// Everything left, lines and literals joined as sent (free text).
    fn rest(&mut self) -> Vec<u8> {
        let mut out = self.current().get(self.pos..).unwrap_or(&[]).to_vec();
        while self.line + 1 < self.lines.len() {
            if let Some(literal) = self.literals.get(self.line) {
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(literal);
            }
            self.line += 1;
            out.extend_from_slice(self.current());
        }
        self.pos = self.current().len();
        out
    }

    fn value(&mut self, depth: usize) -> Result<Value, ClientError> {
        match self.peek() {
            None => error("a value missing at the end of the line"),
            Some(b'(') => {
                if depth >= self.max_depth {
                    return error("lists nested too deep");
                }
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_spaces();
                    match self.peek() {
                        Some(b')') => {
                            self.pos += 1;
                            return Ok(Value::List(items));
                        }
                        None => return error("a list without `)`"),
                        Some(_) => items.push(self.value(depth + 1)?),
                    }
                }
            }
            Some(b'"') => self.quoted(),
            Some(b'{') => self.literal(),
            Some(b'~') if self.current().get(self.pos + 1) == Some(&b'{') => {
                self.pos += 1;
                self.literal()
            }
            Some(b')' | b']') => error("an unexpected bracket"),
            Some(_) => self.atom(),
        }
    }

    /// RFC 9051 9 `quoted`: `\` escapes the next octet.
    fn quoted(&mut self) -> Result<Value, ClientError> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return error("a quoted string without its closing quote"),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Value::String(out));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(b) => out.push(b),
                        None => return error("a quoted string ending in `\\`"),
                    }
                }
                Some(b) => out.push(b),
            }
            self.pos += 1;
        }
    }

    /// `{n}` at the end of the line; the literal framed after it.
    fn literal(&mut self) -> Result<Value, ClientError> {
        let line = self.current();
        let Some(close) = line[self.pos..].iter().position(|&b| b == b'}') else {
            return error("a literal without `}`");
        };
        if self.pos + close + 1 != line.len() || self.line >= self.literals.len() {
            return error("a literal announced before the end of the line");
        }
        let literal = std::mem::take(&mut self.literals[self.line]);
        self.line += 1;
        self.pos = 0;
        Ok(Value::Literal(literal))
    }

    /// An atom, number or NIL. Loosely: anything up to a space, parenthesis, quote, brace
    /// or `]`, with `[...]` sections taken whole (`BODY[HEADER.FIELDS (DATE)]<0>`).
    fn atom(&mut self) -> Result<Value, ClientError> {
        let start = self.pos;
        let line_no = self.line;
        loop {
            match self.peek() {
                None | Some(b' ' | b'(' | b')' | b'"' | b'{' | b']') => break,
                Some(b'[') => self.skip_section()?,
                Some(_) => self.pos += 1,
            }
        }
        debug_assert_eq!(line_no, self.line);
        let bytes = &self.current()[start..self.pos];
        if bytes.is_empty() {
            return error("an empty atom");
        }
        if bytes.len() <= 20 && bytes.iter().all(u8::is_ascii_digit) {
            if let Some(n) = std::str::from_utf8(bytes).ok().and_then(|d| d.parse().ok()) {
                return Ok(Value::Number(n));
            }
        }
        if bytes.eq_ignore_ascii_case(b"NIL") {
            return Ok(Value::Nil);
        }
        Ok(Value::Atom(String::from_utf8_lossy(bytes).into_owned()))
    }

    /// From `[` past its matching `]` on this line, quoted strings inside skipped whole.
    fn skip_section(&mut self) -> Result<(), ClientError> {
        let mut depth = 0usize;
        let mut quoted = false;
        loop {
            let Some(b) = self.peek() else { return error("a section without `]`") };
            self.pos += 1;
            match b {
                b'\\' if quoted => self.pos += 1,
                b'"' => quoted = !quoted,
                b'[' if !quoted => depth += 1,
                b']' if !quoted => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn responses(client: &mut Client, wire: &[u8]) -> Vec<Response> {
        client.feed(wire);
        let mut out = Vec::new();
        while let Some(r) = client.poll_response().unwrap() {
            out.push(r);
        }
        out
    }

    fn untagged(r: &Response) -> &Untagged {
        match r {
            Response::Untagged(u) => u,
            other => panic!("{other:?}"),
        }
    }

    fn done(r: &Response) -> &Completion {
        match r {
            Response::Done(c) => c,
            other => panic!("{other:?}"),
        }
    }

    fn atom(a: &str) -> Value {
        Value::Atom(a.into())
    }

    #[test]
    fn greeting_capability_and_login() {
        // RFC 9051 6.1.1 and 6.2.3 examples.
        let mut c = Client::new();
        let got = responses(&mut c, b"* OK [CAPABILITY IMAP4rev2 STARTTLS LITERAL+] IMAP4rev2 server ready\r\n");
        let Untagged::Status(greeting) = untagged(&got[0]) else { panic!() };
        assert_eq!(greeting.status, Status::Ok);
        assert_eq!(greeting.text, "IMAP4rev2 server ready");
        assert_eq!(untagged(&got[0]).capabilities().unwrap(), ["IMAP4rev2", "STARTTLS", "LITERAL+"]);
        assert_eq!(c.literal_mode(), LiteralMode::Plus);
        let capability = c.send(&Request::new("CAPABILITY"));
        let login = c.send(&Request::new("LOGIN").astring(b"SMITH").string(b"SESAME"));
        assert_eq!(c.take_output(), b"A0001 CAPABILITY\r\nA0002 LOGIN SMITH \"SESAME\"\r\n");
        let got = responses(
            &mut c,
            b"* CAPABILITY IMAP4rev2 STARTTLS AUTH=GSSAPI LOGINDISABLED\r\nA0001 OK CAPABILITY completed\r\n\
              A0002 OK [CAPABILITY IMAP4rev2 LITERAL-] LOGIN completed\r\n",
        );
        assert_eq!(untagged(&got[0]).capabilities().unwrap()[2], "AUTH=GSSAPI");
        assert_eq!(done(&got[1]).tag, capability);
        assert!(done(&got[1]).is_ok());
        assert_eq!(done(&got[2]).tag, login);
        assert_eq!(done(&got[2]).code.as_ref().unwrap().name, "CAPABILITY");
        assert_eq!(c.literal_mode(), LiteralMode::Minus);
        assert!(!c.is_waiting());
    }

    #[test]
    fn select_response() {
        // RFC 9051 6.3.2 example.
        let mut c = Client::new();
        c.send(&Request::new("SELECT").mailbox("INBOX", NameEncoding::Utf8));
        assert_eq!(c.take_output(), b"A0001 SELECT \"INBOX\"\r\n");
        let got = responses(
            &mut c,
            b"* 172 EXISTS\r\n* OK [UIDVALIDITY 3857529045] UIDs valid\r\n* OK [UIDNEXT 4392] Predicted next UID\r\n\
              * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n\
              * OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited\r\n\
              * LIST () \"/\" INBOX\r\nA0001 OK [READ-WRITE] SELECT completed\r\n",
        );
        assert_eq!(untagged(&got[0]).exists(), Some(172));
        let Untagged::Status(validity) = untagged(&got[1]) else { panic!() };
        assert_eq!(validity.code, Some(Code { name: "UIDVALIDITY".into(), values: vec![Value::Number(3857529045)] }));
        assert_eq!(validity.text, "UIDs valid");
        assert_eq!(untagged(&got[3]).flags().unwrap(), ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"]);
        let Untagged::Status(permanent) = untagged(&got[4]) else { panic!() };
        let code = permanent.code.as_ref().unwrap();
        assert_eq!(code.values, [Value::List(vec![atom("\\Deleted"), atom("\\Seen"), atom("\\*")])]);
        let list = untagged(&got[5]).list().unwrap();
        assert_eq!((list.delimiter.as_deref(), list.name.as_slice()), (Some("/"), &b"INBOX"[..]));
        assert_eq!(done(&got[6]).code.as_ref().unwrap().name, "READ-WRITE");
    }

    #[test]
    fn fetch_with_literals() {
        // RFC 9051 6.4.5 and 7.5.2 examples, BODY[] as a literal.
        let mut c = Client::new();
        c.send(&Request::new("FETCH").arg("2:4").arg("(FLAGS BODY[HEADER.FIELDS (DATE FROM)])"));
        let got = responses(
            &mut c,
            b"* 2 FETCH (FLAGS (\\Deleted) BODY[HEADER.FIELDS (DATE FROM)] {9}\r\nDate: x\r\n)\r\n\
              * 12 FETCH (FLAGS (\\Seen) INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" RFC822.SIZE 4286 \
              ENVELOPE (\"Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\" \"IMAP4rev2 WG mtg summary and minutes\" \
              ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) NIL NIL NIL NIL NIL \
              \"<B27397-0100000@cac.washington.edu>\") BODY (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \
              \"7BIT\" 3028 92) UID 4827313 MODSEQ (12121231000))\r\n\
              * 3 FETCH (UID 7 BODY[]<0> {5}\r\nab\r\nc BINARY[1] ~{2}\r\n\0\x01)\r\n\
              A0001 OK FETCH completed\r\n",
        );
        let first = untagged(&got[0]).clone().into_fetch().unwrap();
        assert_eq!(first.number, 2);
        assert_eq!(first.flags().unwrap(), ["\\Deleted"]);
        assert_eq!(first.body("header.fields (date from)"), Some(&b"Date: x\r\n"[..]));
        let second = untagged(&got[1]).clone().into_fetch().unwrap();
        assert_eq!(
            (second.uid(), second.rfc822_size(), second.modseq()),
            (Some(4827313), Some(4286), Some(12121231000))
        );
        let envelope = second.item("ENVELOPE").unwrap().as_list().unwrap();
        assert_eq!(envelope[1].as_bytes(), Some(&b"IMAP4rev2 WG mtg summary and minutes"[..]));
        assert!(envelope[3].is_nil());
        let third = untagged(&got[2]).clone().into_fetch().unwrap();
        assert_eq!(third.body(""), Some(&b"ab\r\nc"[..]));
        assert_eq!(third.binary("1"), Some(&b"\0\x01"[..]));
        assert!(done(&got[3]).is_ok());
    }

    #[test]
    fn search_esearch_status() {
        // RFC 9051 6.4.4, 7.3.4 and 6.3.11 examples; RFC 3501 7.2.5 SEARCH.
        let mut c = Client::new();
        c.send(&Request::new("SEARCH").arg("RETURN (MIN COUNT ALL)").arg("FLAGGED"));
        c.send(&Request::new("STATUS").mailbox("blurdybloop", NameEncoding::Utf8).arg("(UIDNEXT MESSAGES)"));
        let got = responses(
            &mut c,
            b"* ESEARCH (TAG \"A0001\") UID MIN 2 COUNT 5 ALL 2,10:11,4:5\r\n* SEARCH 2 3 6 (MODSEQ 917162500)\r\n\
              * STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)\r\nA0002 OK\r\nA0001 OK done\r\n",
        );
        let esearch = untagged(&got[0]).esearch().unwrap();
        assert_eq!((esearch.tag.as_deref(), esearch.uid), (Some("A0001"), true));
        assert_eq!((esearch.min(), esearch.count(), esearch.max()), (Some(2), Some(5), None));
        assert_eq!(esearch.all().unwrap(), [(2, 2), (4, 5), (10, 11)]);
        assert_eq!(untagged(&got[1]).search().unwrap(), [2, 3, 6]);
        let status = untagged(&got[2]).status().unwrap();
        assert_eq!((status.get("messages"), status.get("UIDNEXT")), (Some(231), Some(44292)));
        // Completions out of order match their commands by tag.
        assert_eq!(done(&got[3]).tag.as_str(), "A0002");
        assert_eq!(done(&got[4]).tag.as_str(), "A0001");
        assert!(!c.is_waiting());
    }

    #[test]
    fn synchronizing_literal_waits_for_the_continuation() {
        // RFC 9051 6.3.12 APPEND example.
        let mut c = Client::new();
        let message = b"Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\n\r\nHello Joe\r\n";
        let append = c.send(
            &Request::new("APPEND").mailbox("saved-messages", NameEncoding::Utf8).arg("(\\Seen)").literal(message),
        );
        let noop = c.send(&Request::new("NOOP"));
        assert_eq!(
            c.take_output(),
            format!("A0001 APPEND \"saved-messages\" (\\Seen) {{{}}}\r\n", message.len()).as_bytes()
        );
        // The `+` is ours, not the caller's.
        assert_eq!(responses(&mut c, b"+ Ready for literal data\r\n"), []);
        assert_eq!(c.take_output(), [&message[..], b"\r\nA0002 NOOP\r\n"].concat());
        let got = responses(&mut c, b"A0001 OK [APPENDUID 38505 3955] APPEND completed\r\nA0002 OK\r\n");
        assert_eq!(done(&got[0]).tag, append);
        assert_eq!(done(&got[0]).code.as_ref().unwrap().append_uid(), Some((38505, 3955)));
        assert_eq!(done(&got[1]).tag, noop);
    }

    #[test]
    fn refused_literal_is_never_sent() {
        let mut c = Client::new();
        c.send(&Request::new("APPEND").arg("INBOX").literal(b"abc").literal(b"def"));
        c.send(&Request::new("NOOP"));
        assert_eq!(c.take_output(), b"A0001 APPEND INBOX {3}\r\n");
        let got = responses(&mut c, b"A0001 NO [TOOBIG] too big\r\n");
        assert_eq!(done(&got[0]).status, Status::No);
        assert_eq!(c.take_output(), b"A0002 NOOP\r\n");
        // A `+` now would be nobody's.
        assert!(c.feed_and_poll(b"+ go\r\n").is_err());
    }

    #[test]
    fn non_synchronizing_literals() {
        // RFC 7888 3 and 5.
        let mut c = Client::new();
        c.set_literal_mode(LiteralMode::Minus);
        let big = vec![b'x'; LITERAL_MINUS_MAX + 1];
        c.send(&Request::new("APPEND").arg("INBOX").literal(b"small").literal(&big));
        let out = c.take_output();
        assert!(out.starts_with(b"A0001 APPEND INBOX {5+}\r\nsmall {4097}\r\n"), "{}", String::from_utf8_lossy(&out));
        responses(&mut c, b"+ go\r\n");
        assert_eq!(c.take_output(), [&big[..], b"\r\n"].concat());
        c.set_literal_mode(LiteralMode::Plus);
        c.send(&Request::new("APPEND").arg("INBOX").literal(&big));
        assert_eq!(c.take_output().len(), "A0002 APPEND INBOX {4097+}\r\n".len() + big.len() + 2);
    }

    #[test]
    fn idle_and_authenticate_continuations() {
        // RFC 2177 3 and RFC 9051 6.2.2 examples.
        let mut c = Client::new();
        let idle = c.send(&Request::new("IDLE").expect_continuation());
        let got = responses(&mut c, b"+ idling\r\n* 4 EXISTS\r\n");
        assert_eq!(got[0], Response::Continuation(b"idling".to_vec()));
        assert_eq!(untagged(&got[1]).exists(), Some(4));
        c.idle_done();
        assert_eq!(c.take_output(), b"A0001 IDLE\r\nDONE\r\n");
        assert_eq!(done(&responses(&mut c, b"A0001 OK IDLE terminated\r\n")[0]).tag, idle);
        c.send(&Request::new("AUTHENTICATE").arg("PLAIN").expect_continuation());
        let got = responses(&mut c, b"+\r\n");
        assert_eq!(got[0], Response::Continuation(Vec::new()));
        c.send_sasl_response(b"\0u\0p");
        assert_eq!(c.take_output(), b"A0002 AUTHENTICATE PLAIN\r\nAHUAcA==\r\n");
        assert_eq!(
            decode_challenge(b"PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+").unwrap()[..6],
            *b"<1896."
        );
    }

    #[test]
    fn strings_quoted_or_literal_and_no_injection() {
        let mut c = Client::new();
        c.set_literal_mode(LiteralMode::Plus);
        c.send(&Request::new("LOGIN").astring(b"a\"b").astring(b"NIL").string(b"line\r\nbreak").arg("x\r\nA9 LOGOUT"));
        assert_eq!(c.take_output(), b"A0001 LOGIN \"a\\\"b\" \"NIL\" {11+}\r\nline\r\nbreak x  A9 LOGOUT\r\n");
    }

    #[test]
    fn bye_and_odd_codes() {
        let mut c = Client::new();
        let got = responses(
            &mut c,
            b"* BYE Autologout; idle for too long\r\n* OK [ALERT] System shutdown in 10 minutes\r\n\
              * NO [BAD CODE \"x] still text\r\n* OK [UNKNOWN-CTE] [nested] text\r\n",
        );
        let Untagged::Status(bye) = untagged(&got[0]) else { panic!() };
        assert_eq!((bye.status, bye.text.as_str()), (Status::Bye, "Autologout; idle for too long"));
        let Untagged::Status(broken) = untagged(&got[2]) else { panic!() };
        assert_eq!((&broken.code, broken.text.as_str()), (&None, "[BAD CODE \"x] still text"));
        let Untagged::Status(unknown) = untagged(&got[3]) else { panic!() };
        assert_eq!(unknown.code.as_ref().unwrap().name, "UNKNOWN-CTE");
        assert_eq!(unknown.text, "[nested] text");
    }

    #[test]
    fn protocol_errors() {
        let mut c = Client::new();
        assert!(c.feed_and_poll(b"A0001 OK not ours\r\n").is_err());
        // The error stays.
        assert!(c.feed_and_poll(b"* OK fine\r\n").is_err());
        for wire in [
            &b"220 smtp\r\n"[..],
            b"* 99999999999 EXISTS\r\n",
            b"* LIST (\\Noselect \"/\" x\r\n",
            b"* LIST ) x\r\n",
            b"* SEARCH {3} 1\r\n",
            b"*\r\n",
            b"\r\n",
            b"* 1 FETCH (BODY[HEADER {3}\r\nabc)\r\n",
        ] {
            let mut c = Client::new();
            assert!(c.feed_and_poll(wire).is_err(), "{}", String::from_utf8_lossy(wire));
        }
    }

    #[test]
    fn limits_hold() {
        let limits = ClientLimits { max_line: 100, max_literal: 50, max_response: 200, max_depth: 4 };
        let mut c = Client::new().with_limits(limits);
        assert!(c.feed_and_poll(&[b'x'; 101]).is_err());
        let mut c = Client::new().with_limits(limits);
        assert!(c.feed_and_poll(b"* 1 FETCH (BODY[] {51}\r\n").is_err());
        let mut c = Client::new().with_limits(limits);
        assert!(c.feed_and_poll(b"* 1 FETCH (BODY[] {18446744073709551616}\r\n").is_err());
        // Many small literals add up.
        let mut c = Client::new().with_limits(limits);
        assert!(c.feed_and_poll(&b"* X {0}\r\n".repeat(10)).is_err());
        let mut c = Client::new().with_limits(limits);
        assert!(c.feed_and_poll(b"* X ((((((1))))))\r\n").is_err());
        let mut c = Client::new().with_limits(limits);
        assert!(matches!(c.feed_and_poll(b"* X (((1)))\r\n"), Ok(Some(_))));
        // At the line limit, a CR waiting for its LF is fine; the split does not matter.
        let mut c = Client::new().with_limits(limits);
        let mut line = b"* OK ".to_vec();
        line.resize(100, b'x');
        assert_eq!(c.feed_and_poll(&line), Ok(None));
        assert_eq!(c.feed_and_poll(b"\r"), Ok(None));
        assert!(c.feed_and_poll(b"\n").unwrap().is_some());
        let mut c = Client::new().with_limits(limits);
        line.push(b'x');
        assert!(c.feed_and_poll(&[&line[..], b"\r\n"].concat()).is_err());
    }

    #[test]
    fn any_split_gives_the_same_responses() {
        let wire: &[u8] = b"* OK hi\r\n* 1 FETCH (UID 5 BODY[] {12}\r\nhello\r\nworld FLAGS ())\r\nA0001 OK done\r\n";
        let whole = {
            let mut c = Client::new();
            c.send(&Request::new("NOOP"));
            responses(&mut c, wire)
        };
        assert_eq!(whole.len(), 3);
        for step in 1..wire.len() {
            let mut c = Client::new();
            c.send(&Request::new("NOOP"));
            let mut got = Vec::new();
            for piece in wire.chunks(step) {
                got.extend(responses(&mut c, piece));
            }
            assert_eq!(got, whole, "step {step}");
        }
    }

    #[test]
    fn sequence_sets() {
        assert_eq!(parse_sequence_set("1:3,7,9:8"), Some(vec![(1, 3), (7, 7), (8, 9)]));
        assert_eq!(parse_sequence_set("1:*"), None);
        assert_eq!(parse_sequence_set(""), None);
        assert_eq!(parse_sequence_set("4294967296"), None);
    }

    impl Client {
        fn feed_and_poll(&mut self, bytes: &[u8]) -> Result<Option<Response>, ClientError> {
            self.feed(bytes);
            self.poll_response()
        }
    }
}
