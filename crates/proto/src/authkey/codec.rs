//! SPEC 7.2: the VERIFY wire format.
//!
//! ```text
//! VERIFY <seq> <address> <authkey>
//! VERIFY_REPLY <seq> <address> VALIDKEY
//! VERIFY_REPLY <seq> <address> INVALIDKEY
//! ERROR <seq or -> <reason>
//! ```
//!
//! Where the spec is silent, this module decides:
//!
//! - Verbs and verdicts are case-sensitive, uppercase as written: `verify` is an unknown
//!   command. Fields are separated by exactly one space; tabs or doubled spaces make the
//!   line malformed.
//! - Since neither seq nor key can contain a space, the address is everything between the
//!   seq and the last field. It must be a mailbox that [`Address::parse`] accepts (so a
//!   quoted local part may contain a space). It is kept and echoed exactly as received, so
//!   a strict peer comparing octets still matches; comparisons in this crate ignore case.
//! - A line may end in CRLF, LF or nothing (UDP datagrams may carry either; TCP lines end
//!   at LF, an optional CR before it is dropped). Any other CR, LF, NUL or control octet
//!   makes the line malformed.
//! - A request whose key is not exactly 64 of `[A-Za-z0-9]` (SPEC 7.1) is malformed and
//!   gets `ERROR <seq> bad key`, not INVALIDKEY: no key of that shape can exist, and the
//!   asking server has a bug worth seeing.
//! - The seq of an ERROR is echoed only when the line starts with `VERIFY`, one space and a
//!   valid seq; otherwise `-`.
//! - ERROR reasons we send are the short fixed strings of [`Reason`]; reasons we receive
//!   are any non-empty text without control characters or surrounding spaces.

use std::fmt;

use crate::smtp::address::Address;

/// SPEC 7.2: a UDP datagram carries at most 512 octets.
pub const MAX_DATAGRAM: usize = 512;
/// Issue 10 item 3: a UDP reply is never larger than its request plus this many octets, so
/// the listener cannot be used to amplify spoofed traffic.
pub const UDP_REPLY_SLACK: usize = 16;
/// SPEC 7.2: a seq is 1 to 32 characters.
pub const MAX_SEQ: usize = 32;
/// SPEC 7.1: an AuthKey is exactly 64 characters.
pub const KEY_LEN: usize = 64;

/// The answer to a VERIFY (SPEC 7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// `VALIDKEY`: the key is one of the address's unexpired keys.
    Valid,
    /// `INVALIDKEY`.
    Invalid,
}

impl Verdict {
    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Valid => "VALIDKEY",
            Verdict::Invalid => "INVALIDKEY",
        }
    }
}

/// Why a request is malformed; [`Reason::as_str`] is the reason sent in the ERROR reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Nothing but a line ending.
    Empty,
    /// The line does not start with `VERIFY` and a space.
    UnknownCommand,
    /// A field is missing.
    Syntax,
    /// The seq is not 1–32 of `[A-Za-z0-9]`.
    BadSeq,
    /// The address is not a valid mailbox (or not UTF-8).
    BadAddress,
    /// The key is not exactly 64 of `[A-Za-z0-9]`.
    BadKey,
    /// A TCP line over the session's limit.
    LineTooLong,
}

impl Reason {
    /// The fixed reason text of the ERROR reply.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Empty => "empty line",
            Reason::UnknownCommand => "unknown command",
            Reason::Syntax => "missing field",
            Reason::BadSeq => "bad seq",
            Reason::BadAddress => "bad address",
            Reason::BadKey => "bad key",
            Reason::LineTooLong => "line too long",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for Reason {}

/// SPEC 7.2: `<seq>` is 1–32 characters of `[A-Za-z0-9]`.
pub fn is_valid_seq(s: &[u8]) -> bool {
    (1..=MAX_SEQ).contains(&s.len()) && s.iter().all(u8::is_ascii_alphanumeric)
}

/// SPEC 7.1: a key is 64 characters of `[A-Za-z0-9]`.
pub fn is_valid_key(s: &[u8]) -> bool {
    s.len() == KEY_LEN && s.iter().all(u8::is_ascii_alphanumeric)
}

/// `VERIFY <seq> <address> <authkey>`. Fields are private so that every value writes a
/// line that parses back to itself.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Request {
    seq: String,
    address: String,
    mailbox: Address,
    key: String,
}

impl Request {
    /// Builds a request, checking each field as the parser does.
    pub fn new(seq: &str, address: &str, key: &str) -> Result<Request, Reason> {
        if !is_valid_seq(seq.as_bytes()) {
            return Err(Reason::BadSeq);
        }
        if !is_valid_key(key.as_bytes()) {
            return Err(Reason::BadKey);
        }
        let mailbox = parse_mailbox(address.as_bytes()).ok_or(Reason::BadAddress)?;
        Ok(Request { seq: seq.to_owned(), address: address.to_owned(), mailbox, key: key.to_owned() })
    }

    pub fn seq(&self) -> &str {
        &self.seq
    }

    /// The address as written on the wire.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The address, parsed.
    pub fn mailbox(&self) -> &Address {
        &self.mailbox
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// The reply to this request: seq and address echoed as received (SPEC 7.2).
    pub fn reply(&self, verdict: Verdict) -> Reply {
        Reply { seq: self.seq.clone(), address: self.address.clone(), mailbox: self.mailbox.clone(), verdict }
    }

    /// The line without a line ending (a UDP datagram may be sent as is).
    pub fn to_line(&self) -> String {
        format!("VERIFY {} {} {}", self.seq, self.address, self.key)
    }

    /// The TCP form, CRLF-terminated.
    pub fn to_crlf_line(&self) -> String {
        self.to_line() + "\r\n"
    }
}

impl fmt::Debug for Request {
    /// The key stays out of logs: it authenticates mail from the address until it expires.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request").field("seq", &self.seq).field("address", &self.address).finish_non_exhaustive()
    }
}

/// `VERIFY_REPLY <seq> <address> VALIDKEY|INVALIDKEY`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reply {
    seq: String,
    address: String,
    mailbox: Address,
    verdict: Verdict,
}

impl Reply {
    pub fn new(seq: &str, address: &str, verdict: Verdict) -> Result<Reply, Reason> {
        if !is_valid_seq(seq.as_bytes()) {
            return Err(Reason::BadSeq);
        }
        let mailbox = parse_mailbox(address.as_bytes()).ok_or(Reason::BadAddress)?;
        Ok(Reply { seq: seq.to_owned(), address: address.to_owned(), mailbox, verdict })
    }

    pub fn seq(&self) -> &str {
        &self.seq
    }

    /// The address as written on the wire.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The address, parsed.
    pub fn mailbox(&self) -> &Address {
        &self.mailbox
    }

    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    pub fn to_line(&self) -> String {
        format!("VERIFY_REPLY {} {} {}", self.seq, self.address, self.verdict.as_str())
    }

    pub fn to_crlf_line(&self) -> String {
        self.to_line() + "\r\n"
    }
}

/// `ERROR <seq or -> <reason>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ErrorReply {
    seq: Option<String>,
    reason: String,
}

impl ErrorReply {
    /// An ERROR with one of our fixed reasons; `seq` is None when it could not be read.
    pub fn new(seq: Option<&str>, reason: Reason) -> Result<ErrorReply, Reason> {
        match seq {
            Some(s) if !is_valid_seq(s.as_bytes()) => Err(Reason::BadSeq),
            _ => Ok(ErrorReply { seq: seq.map(str::to_owned), reason: reason.as_str().to_owned() }),
        }
    }

    /// The echoed seq; None is `-` on the wire.
    pub fn seq(&self) -> Option<&str> {
        self.seq.as_deref()
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }

    pub fn to_line(&self) -> String {
        format!("ERROR {} {}", self.seq.as_deref().unwrap_or("-"), self.reason)
    }

    pub fn to_crlf_line(&self) -> String {
        self.to_line() + "\r\n"
    }
}

/// What an Authentication Server answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Response {
    Reply(Reply),
    Error(ErrorReply),
}

impl Response {
    pub fn to_line(&self) -> String {
        match self {
            Response::Reply(r) => r.to_line(),
            Response::Error(e) => e.to_line(),
        }
    }

    pub fn to_crlf_line(&self) -> String {
        self.to_line() + "\r\n"
    }
}

/// A malformed request: why, and its seq if it could be read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestError {
    seq: Option<String>,
    reason: Reason,
}

impl RequestError {
    /// The seq, when the line started with `VERIFY`, a space and a valid seq.
    pub fn seq(&self) -> Option<&str> {
        self.seq.as_deref()
    }

    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// SPEC 7.2: the ERROR reply, with the seq if it could be read, else `-`.
    pub fn reply(&self) -> ErrorReply {
        ErrorReply { seq: self.seq.clone(), reason: self.reason.as_str().to_owned() }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason.as_str())
    }
}

impl std::error::Error for RequestError {}

/// A response line that is not one of the SPEC 7.2 forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MalformedResponse(&'static str);

impl MalformedResponse {
    /// Which part was wrong, for logs.
    pub fn what(&self) -> &'static str {
        self.0
    }
}

impl fmt::Display for MalformedResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed VERIFY response: {}", self.0)
    }
}

impl std::error::Error for MalformedResponse {}

/// Drops one trailing CRLF or LF, if any.
fn strip_terminator(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r\n").or_else(|| line.strip_suffix(b"\n")).unwrap_or(line)
}

/// The line ending a datagram arrived with, so that its reply can use the same.
fn terminator(line: &[u8]) -> &'static [u8] {
    if line.ends_with(b"\r\n") {
        b"\r\n"
    } else if line.ends_with(b"\n") {
        b"\n"
    } else {
        b""
    }
}

fn split_once(s: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|&b| b == sep)?;
    Some((&s[..i], &s[i + 1..]))
}

fn rsplit_once(s: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let i = s.iter().rposition(|&b| b == sep)?;
    Some((&s[..i], &s[i + 1..]))
}

/// Callers have checked that `s` is UTF-8 (an ASCII seq or key, or a parsed address), so
/// nothing is ever replaced.
fn text(s: &[u8]) -> String {
    String::from_utf8_lossy(s).into_owned()
}

/// SPEC 7.2: a syntactically valid mailbox. The address parser rejects white space outside
/// quotes and every control character, so stray separators, CR, LF and NUL land here.
fn parse_mailbox(s: &[u8]) -> Option<Address> {
    Address::parse(std::str::from_utf8(s).ok()?).ok()
}

/// Parses one request: a TCP line or a UDP datagram, with or without its CRLF or LF.
pub fn parse_request(line: &[u8]) -> Result<Request, RequestError> {
    let fail = |seq: Option<&[u8]>, reason| Err(RequestError { seq: seq.map(text), reason });
    let line = strip_terminator(line);
    if line.is_empty() {
        return fail(None, Reason::Empty);
    }
    let Some((verb, rest)) = split_once(line, b' ') else {
        return fail(None, if line == b"VERIFY" { Reason::Syntax } else { Reason::UnknownCommand });
    };
    // SPEC 7.2: the verb as written, case-sensitive.
    if verb != b"VERIFY" {
        return fail(None, Reason::UnknownCommand);
    }
    let (seq, rest) = match split_once(rest, b' ') {
        Some((seq, rest)) => (seq, Some(rest)),
        None => (rest, None),
    };
    if !is_valid_seq(seq) {
        return fail(None, Reason::BadSeq);
    }
    // From here on the seq is known and is echoed in the ERROR.
    let Some((address, key)) = rest.and_then(|r| rsplit_once(r, b' ')) else {
        return fail(Some(seq), Reason::Syntax);
    };
    if !is_valid_key(key) {
        return fail(Some(seq), Reason::BadKey);
    }
    let Some(mailbox) = parse_mailbox(address) else {
        return fail(Some(seq), Reason::BadAddress);
    };
    Ok(Request { seq: text(seq), address: text(address), mailbox, key: text(key) })
}

/// Parses one response line (VERIFY_REPLY or ERROR), with or without its CRLF or LF.
pub fn parse_response(line: &[u8]) -> Result<Response, MalformedResponse> {
    let line = strip_terminator(line);
    let (verb, rest) = split_once(line, b' ').ok_or(MalformedResponse("no fields"))?;
    match verb {
        b"VERIFY_REPLY" => {
            let (seq, rest) = split_once(rest, b' ').ok_or(MalformedResponse("missing field"))?;
            if !is_valid_seq(seq) {
                return Err(MalformedResponse("bad seq"));
            }
            let (address, verdict) = rsplit_once(rest, b' ').ok_or(MalformedResponse("missing field"))?;
            let verdict = match verdict {
                b"VALIDKEY" => Verdict::Valid,
                b"INVALIDKEY" => Verdict::Invalid,
                _ => return Err(MalformedResponse("bad verdict")),
            };
            let mailbox = parse_mailbox(address).ok_or(MalformedResponse("bad address"))?;
            Ok(Response::Reply(Reply { seq: text(seq), address: text(address), mailbox, verdict }))
        }
        b"ERROR" => {
            let (seq, reason) = split_once(rest, b' ').ok_or(MalformedResponse("missing field"))?;
            let seq = match seq {
                b"-" => None,
                s if is_valid_seq(s) => Some(text(s)),
                _ => return Err(MalformedResponse("bad seq")),
            };
            let reason = std::str::from_utf8(reason).map_err(|_| MalformedResponse("bad reason"))?;
            if reason.is_empty()
                || reason.starts_with(' ')
                || reason.ends_with(' ')
                || reason.chars().any(char::is_control)
            {
                return Err(MalformedResponse("bad reason"));
            }
            Ok(Response::Error(ErrorReply { seq, reason: reason.to_owned() }))
        }
        _ => Err(MalformedResponse("unknown verb")),
    }
}

/// Parses a UDP datagram; None when it is over 512 octets (SPEC 7.2), which gets no reply
/// and no lookup. The driver must receive into a buffer larger than 512 octets to see that.
pub fn parse_datagram(datagram: &[u8]) -> Option<Result<Request, RequestError>> {
    (datagram.len() <= MAX_DATAGRAM).then(|| parse_request(datagram))
}

/// The UDP reply to `request` (issue 10 item 3): the answer ends in the line ending the
/// request had, and is None (not sent) when the request is over 512 octets or the reply
/// would be larger than the request plus 16 octets or than 512 octets. A VERIFY_REPLY to a
/// well-formed request is always shorter than it (the verdict replaces a 64-octet key), so
/// this only silences ERRORs to short junk, which is what a spoofed flood sends.
pub fn udp_reply(request: &[u8], answer: &Response) -> Option<Vec<u8>> {
    if request.len() > MAX_DATAGRAM {
        return None;
    }
    let mut out = answer.to_line().into_bytes();
    out.extend_from_slice(terminator(request));
    (out.len() <= request.len() + UDP_REPLY_SLACK && out.len() <= MAX_DATAGRAM).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authkey::TEST_KEY as KEY;

    fn req(line: &str) -> Result<Request, RequestError> {
        parse_request(line.as_bytes())
    }

    fn bad(line: &[u8]) -> (Option<String>, Reason) {
        match parse_request(line) {
            Ok(r) => panic!("{:?} parsed as {r:?}", String::from_utf8_lossy(line)),
            Err(e) => (e.seq().map(str::to_owned), e.reason()),
        }
    }

    #[test]
    fn spec_7_2_request() {
        assert_eq!(KEY.len(), 64);
        let r = req(&format!("VERIFY a1B2 my@domain.com {KEY}\r\n")).unwrap();
        assert_eq!(r.seq(), "a1B2");
        assert_eq!(r.address(), "my@domain.com");
        assert_eq!(r.mailbox(), &Address::parse("my@domain.com").unwrap());
        assert_eq!(r.key(), KEY);
        assert_eq!(r.to_line(), format!("VERIFY a1B2 my@domain.com {KEY}"));
        assert_eq!(r.to_crlf_line(), format!("VERIFY a1B2 my@domain.com {KEY}\r\n"));
        assert_eq!(Request::new("a1B2", "my@domain.com", KEY), Ok(r));
    }

    #[test]
    fn spec_7_2_replies() {
        let r = req(&format!("VERIFY 7 my@domain.com {KEY}")).unwrap();
        assert_eq!(r.reply(Verdict::Valid).to_line(), "VERIFY_REPLY 7 my@domain.com VALIDKEY");
        assert_eq!(r.reply(Verdict::Invalid).to_crlf_line(), "VERIFY_REPLY 7 my@domain.com INVALIDKEY\r\n");
        let parsed = parse_response(b"VERIFY_REPLY 7 my@domain.com VALIDKEY\r\n").unwrap();
        assert_eq!(parsed, Response::Reply(r.reply(Verdict::Valid)));
        let parsed = parse_response(b"VERIFY_REPLY 7 my@domain.com INVALIDKEY").unwrap();
        assert_eq!(parsed, Response::Reply(Reply::new("7", "my@domain.com", Verdict::Invalid).unwrap()));
    }

    #[test]
    fn spec_7_2_error() {
        let e = bad(format!("VERIFY s1 my@domain.com {}\r\n", &KEY[1..]).as_bytes());
        assert_eq!(e, (Some("s1".into()), Reason::BadKey));
        let reply = parse_request(format!("VERIFY s1 my@domain.com {}", &KEY[1..]).as_bytes()).unwrap_err().reply();
        assert_eq!(reply.to_line(), "ERROR s1 bad key");
        assert_eq!(parse_response(b"ERROR s1 bad key\r\n"), Ok(Response::Error(reply)));
        let dash = parse_request(b"HELO x").unwrap_err().reply();
        assert_eq!(dash.to_crlf_line(), "ERROR - unknown command\r\n");
        assert_eq!(parse_response(b"ERROR - unknown command"), Ok(Response::Error(dash)));
        assert_eq!(ErrorReply::new(None, Reason::LineTooLong).unwrap().to_line(), "ERROR - line too long");
        assert_eq!(ErrorReply::new(Some("x y"), Reason::Syntax), Err(Reason::BadSeq));
    }

    #[test]
    fn line_endings_crlf_lf_or_none() {
        let base = format!("VERIFY s my@domain.com {KEY}");
        let want = req(&base).unwrap();
        for end in ["\r\n", "\n"] {
            assert_eq!(req(&format!("{base}{end}")), Ok(want.clone()));
        }
        // Only one line ending is dropped; a lone CR or a second ending is junk in the key.
        for end in ["\r", "\r\n\r\n", "\n\n", "\r\r\n", "\n\r"] {
            assert_eq!(bad(format!("{base}{end}").as_bytes()), (Some("s".into()), Reason::BadKey), "{end:?}");
        }
        // Two requests in one datagram are one malformed request (the CRLF is in the address).
        let two = format!("{base}\r\n{base}\r\n");
        assert_eq!(bad(two.as_bytes()), (Some("s".into()), Reason::BadAddress));
    }

    #[test]
    fn malformed_requests() {
        let k = KEY;
        let s33 = "a".repeat(33);
        let s32 = "a".repeat(32);
        let cases: Vec<(String, Option<&str>, Reason)> = vec![
            (String::new(), None, Reason::Empty),
            ("\r\n".into(), None, Reason::Empty),
            ("\n".into(), None, Reason::Empty),
            (" ".into(), None, Reason::UnknownCommand),
            ("VERIFY".into(), None, Reason::Syntax),
            ("VERIFY ".into(), None, Reason::BadSeq),
            ("VERIFY s".into(), Some("s"), Reason::Syntax),
            ("VERIFY s ".into(), Some("s"), Reason::Syntax),
            ("VERIFY s a@b".into(), Some("s"), Reason::Syntax),
            (format!("VERIFY s {k}"), Some("s"), Reason::Syntax),
            (format!("VERIFY s  {k}"), Some("s"), Reason::BadAddress),
            (format!("verify s a@b {k}"), None, Reason::UnknownCommand),
            (format!("Verify s a@b {k}"), None, Reason::UnknownCommand),
            (format!("VERIFYX s a@b {k}"), None, Reason::UnknownCommand),
            (format!("VERIFY_REPLY s a@b {k}"), None, Reason::UnknownCommand),
            (format!(" VERIFY s a@b {k}"), None, Reason::UnknownCommand),
            (format!("VERIFY\ts a@b {k}"), None, Reason::UnknownCommand),
            (format!("VERIFY  s a@b {k}"), None, Reason::BadSeq),
            (format!("VERIFY s\ta@b {k}"), None, Reason::BadSeq),
            (format!("VERIFY s  a@b {k}"), Some("s"), Reason::BadAddress),
            (format!("VERIFY s a@b  {k}"), Some("s"), Reason::BadAddress),
            (format!("VERIFY s a@b\t{k}"), Some("s"), Reason::Syntax),
            (format!("VERIFY s a@b {k} "), Some("s"), Reason::BadKey),
            (format!("VERIFY s a@b {k} x"), Some("s"), Reason::BadKey),
            (format!("VERIFY s a@b {k}\t"), Some("s"), Reason::BadKey),
            (format!("VERIFY {s33} a@b {k}"), None, Reason::BadSeq),
            (format!("VERIFY s-1 a@b {k}"), None, Reason::BadSeq),
            (format!("VERIFY s_1 a@b {k}"), None, Reason::BadSeq),
            (format!("VERIFY sé a@b {k}"), None, Reason::BadSeq),
            (format!("VERIFY - a@b {k}"), None, Reason::BadSeq),
            (format!("VERIFY {s32} a@b {}", &k[1..]), Some(&s32), Reason::BadKey),
            (format!("VERIFY s a@b {k}A"), Some("s"), Reason::BadKey),
            (format!("VERIFY s a@b {}-", &k[1..]), Some("s"), Reason::BadKey),
            (format!("VERIFY s a@b {}é", &k[2..]), Some("s"), Reason::BadKey),
            (format!("VERIFY s a {k}"), Some("s"), Reason::BadAddress),
            (format!("VERIFY s <a@b> {k}"), Some("s"), Reason::BadAddress),
            (format!("VERIFY s a@ {k}"), Some("s"), Reason::BadAddress),
            (format!("VERIFY s @b {k}"), Some("s"), Reason::BadAddress),
            (format!("VERIFY s a@b@c {k}"), Some("s"), Reason::BadAddress),
            (format!("VERIFY s a b@c {k}"), Some("s"), Reason::BadAddress),
            (format!("VERIFY s {}@b {k}", "x".repeat(65)), Some("s"), Reason::BadAddress),
        ];
        for (line, seq, reason) in cases {
            assert_eq!(bad(line.as_bytes()), (seq.map(str::to_owned), reason), "{line:?}");
        }
    }

    #[test]
    fn nul_and_non_utf8_are_malformed() {
        let k = KEY;
        assert_eq!(bad(format!("VERIFY s a\0@b {k}").as_bytes()), (Some("s".into()), Reason::BadAddress));
        assert_eq!(bad(format!("VERIFY s a@b {}\0", &k[1..]).as_bytes()), (Some("s".into()), Reason::BadKey));
        assert_eq!(bad(format!("VERIFY s\0 a@b {k}").as_bytes()), (None, Reason::BadSeq));
        assert_eq!(bad(format!("\0VERIFY s a@b {k}").as_bytes()), (None, Reason::UnknownCommand));
        let mut line = b"VERIFY s a\xff@b ".to_vec();
        line.extend_from_slice(k.as_bytes());
        assert_eq!(bad(&line), (Some("s".into()), Reason::BadAddress));
        assert_eq!(bad(b"\xff\xfe"), (None, Reason::UnknownCommand));
    }

    #[test]
    fn seq_and_key_bounds() {
        for n in [1, 2, 31, 32] {
            let seq = "Z9".repeat(16)[..n].to_owned();
            assert_eq!(req(&format!("VERIFY {seq} a@b {KEY}")).unwrap().seq(), seq);
        }
        assert!(is_valid_key(KEY.as_bytes()));
        assert!(!is_valid_key(&KEY.as_bytes()[1..]));
        assert!(!is_valid_key(format!("{KEY}a").as_bytes()));
        assert!(!is_valid_seq(b""));
        assert!(!is_valid_seq(&[b'a'; 33]));
        assert_eq!(Request::new("", "a@b", KEY), Err(Reason::BadSeq));
        assert_eq!(Request::new("s", "a@b", &KEY[1..]), Err(Reason::BadKey));
        assert_eq!(Request::new("s", "a@b c", KEY), Err(Reason::BadAddress));
        assert_eq!(Reply::new("s", "", Verdict::Valid), Err(Reason::BadAddress));
    }

    #[test]
    fn address_is_echoed_as_received() {
        let r = req(&format!("VERIFY s My@Domain.COM {KEY}")).unwrap();
        assert_eq!(r.address(), "My@Domain.COM");
        assert_eq!(r.mailbox().domain(), "domain.com");
        assert_eq!(r.reply(Verdict::Valid).to_line(), "VERIFY_REPLY s My@Domain.COM VALIDKEY");
        // A quoted local part may hold a space: the address is all between seq and key.
        let q = req(&format!("VERIFY s \"john smith\"@example.com {KEY}")).unwrap();
        assert_eq!(q.mailbox().local(), "john smith");
        assert_eq!(req(&q.to_line()), Ok(q.clone()));
        let reply = Response::Reply(q.reply(Verdict::Invalid));
        assert_eq!(parse_response(reply.to_line().as_bytes()), Ok(reply));
        let utf8 = req(&format!("VERIFY s jörg@bücher.example {KEY}")).unwrap();
        assert_eq!(utf8.address(), "jörg@bücher.example");
    }

    #[test]
    fn debug_hides_the_key() {
        let r = req(&format!("VERIFY s a@b {KEY}")).unwrap();
        assert!(!format!("{r:?}").contains(KEY));
    }

    #[test]
    fn malformed_responses() {
        let cases: &[&[u8]] = &[
            b"",
            b"\r\n",
            b"VERIFY_REPLY",
            b"VERIFY_REPLY s a@b",
            b"VERIFY_REPLY s VALIDKEY",
            b"VERIFY_REPLY s a@b validkey",
            b"VERIFY_REPLY s a@b VALIDKEY ",
            b"VERIFY_REPLY s a@b  VALIDKEY",
            b"VERIFY_REPLY  s a@b VALIDKEY",
            b"VERIFY_REPLY - a@b VALIDKEY",
            b"VERIFY_REPLY s-1 a@b VALIDKEY",
            b"VERIFY_REPLY s a VALIDKEY",
            b"VERIFY_REPLY s a@b\tVALIDKEY",
            b"VERIFY_REPLY s a@b VALIDKEY\r\n\r\n",
            b"verify_reply s a@b VALIDKEY",
            b"VERIFY s a@b VALIDKEY",
            b"ERROR",
            b"ERROR -",
            b"ERROR - ",
            b"ERROR -  x",
            b"ERROR - x ",
            b"ERROR - a\tb",
            b"ERROR - a\0b",
            b"ERROR - \xff",
            b"ERROR s-1 x",
            b"ERROR -- x",
            b"error - x",
        ];
        for line in cases {
            assert!(parse_response(line).is_err(), "{:?}", String::from_utf8_lossy(line));
        }
        assert_eq!(
            parse_response(b"ERROR abc temporary failure, try later\n"),
            Ok(Response::Error(ErrorReply { seq: Some("abc".into()), reason: "temporary failure, try later".into() }))
        );
    }

    #[test]
    fn every_reason_round_trips_as_an_error_reply() {
        let reasons = [
            Reason::Empty,
            Reason::UnknownCommand,
            Reason::Syntax,
            Reason::BadSeq,
            Reason::BadAddress,
            Reason::BadKey,
            Reason::LineTooLong,
        ];
        for reason in reasons {
            for seq in [None, Some("q1")] {
                let e = Response::Error(ErrorReply::new(seq, reason).unwrap());
                assert_eq!(parse_response(e.to_crlf_line().as_bytes()), Ok(e.clone()));
                assert!(e.to_line().len() <= 32 + 25, "reasons are short");
            }
        }
    }

    #[test]
    fn udp_reply_is_never_larger_than_request_plus_16() {
        // A well-formed request: the reply is always shorter, with the same line ending.
        for end in ["", "\n", "\r\n"] {
            let d = format!("VERIFY s a@b {KEY}{end}");
            let r = parse_datagram(d.as_bytes()).unwrap().unwrap();
            let out = udp_reply(d.as_bytes(), &Response::Reply(r.reply(Verdict::Invalid))).unwrap();
            assert_eq!(out, format!("VERIFY_REPLY s a@b INVALIDKEY{end}").into_bytes());
            assert!(out.len() < d.len());
        }
        // Short junk: the ERROR would be larger than request + 16, so nothing is sent.
        for d in [&b""[..], b"x", b"\r\n", b"VERIF"] {
            let e = Response::Error(parse_request(d).unwrap_err().reply());
            assert_eq!(udp_reply(d, &e), None, "{d:?}");
        }
        // Exactly at the limit is sent; one octet less is not.
        let e = Response::Error(ErrorReply::new(None, Reason::UnknownCommand).unwrap());
        let len = e.to_line().len(); // "ERROR - unknown command" = 23
        assert_eq!(udp_reply(&vec![b'x'; len - 16], &e), Some(e.to_line().into_bytes()));
        assert_eq!(udp_reply(&vec![b'x'; len - 17], &e), None);
        // Junk long enough gets its ERROR.
        let d = b"HELLO THERE, I AM NOT A VERIFY\r\n";
        assert_eq!(udp_reply(d, &e), Some(b"ERROR - unknown command\r\n".to_vec()));
    }

    #[test]
    fn udp_oversized_datagram_gets_no_reply() {
        let pad = "x".repeat(MAX_DATAGRAM);
        let d = format!("VERIFY s {pad}@b {KEY}");
        assert!(d.len() > MAX_DATAGRAM);
        assert_eq!(parse_datagram(d.as_bytes()), None);
        let e = Response::Error(ErrorReply::new(Some("s"), Reason::BadAddress).unwrap());
        assert_eq!(udp_reply(d.as_bytes(), &e), None);
        assert_eq!(udp_reply(&[b'x'; MAX_DATAGRAM + 1], &e), None);
        assert!(udp_reply(&[b'x'; MAX_DATAGRAM], &e).is_some());
        // The largest valid request fits in a datagram.
        let local = "l".repeat(64);
        let domain = format!("{}.example", "d".repeat(60));
        let big = format!("VERIFY {} {local}@{domain} {KEY}\r\n", "s".repeat(32));
        assert!(big.len() <= MAX_DATAGRAM);
        assert!(parse_datagram(big.as_bytes()).unwrap().is_ok());
    }

    #[test]
    fn parse_never_panics_on_short_inputs() {
        // Every 1- and 2-octet input, plus each with a valid prefix.
        let prefix = b"VERIFY s a@b ";
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let _ = parse_request(&[a, b]);
                let _ = parse_response(&[a, b]);
            }
            let mut p = prefix.to_vec();
            p.push(a);
            let _ = parse_request(&p);
            let _ = parse_response(&p);
        }
    }
}
