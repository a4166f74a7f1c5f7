//! SMTP envelope addresses: mailboxes, reverse-paths and forward-paths.
//!
//! Grammar from RFC 5321 4.1.2, extended for internationalised addresses by RFC 6531 3.3
//! (UTF-8 in atoms, quoted strings and domain U-labels). Limits from RFC 5321 4.5.3.1.
//!
//! Relay decisions must use only [`Address::domain`]: the local part is kept literally,
//! including `%`, `!` and quoted `@`, and is never interpreted as a route.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

/// RFC 5321 4.5.3.1.1: maximum length of a local part, in octets.
pub const MAX_LOCAL_PART: usize = 64;
/// RFC 5321 4.5.3.1.2: maximum length of a domain, in octets.
pub const MAX_DOMAIN: usize = 255;
/// RFC 5321 4.5.3.1.3: maximum length of a reverse-path or forward-path, in octets,
/// including the angle brackets.
pub const MAX_PATH: usize = 256;

/// Why an address or path was rejected.
///
/// [`AddressError::is_length`] tells the "too long" variants apart (RFC 5321 4.5.3.1.10
/// suggests 501/553); everything else is a syntax error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressError {
    /// Input was empty where an address was expected.
    Empty,
    /// The path does not start with `<` (RFC 5321 4.1.2 `Path`).
    MissingOpenBracket,
    /// The path is not closed by `>`.
    MissingCloseBracket,
    /// `<>` where a mailbox is required (forward-path).
    NullPath,
    /// The local part is empty (`<@example.com>`, `<"">`).
    EmptyLocalPart,
    /// No `@domain` after the local part (and it is not `<postmaster>`).
    MissingDomain,
    /// A character not allowed in an unquoted local part (RFC 5321 4.1.2 `Dot-string`).
    InvalidLocalPart,
    /// A quoted local part that is not closed, or text glued to a quoted string.
    UnbalancedQuote,
    /// A bad quoted-pair or character inside a quoted local part (RFC 5321 `qtextSMTP`).
    InvalidQuotedString,
    /// A control character (C0, DEL or C1) anywhere in the address.
    ControlCharacter,
    /// White space outside a quoted string.
    Whitespace,
    /// The domain is not a valid RFC 5321 `Domain` (letters, digits, hyphens, dots; U-labels).
    InvalidDomain,
    /// A malformed address literal (`[1.2.3.4]`, `[IPv6:...]`, `[tag:...]`).
    InvalidAddressLiteral,
    /// A malformed source route (`<@a,@b:user@c>`, RFC 5321 4.1.2 `A-d-l`).
    InvalidSourceRoute,
    /// Something other than a space right after the closing `>`.
    TrailingGarbage,
    /// Local part longer than 64 octets (RFC 5321 4.5.3.1.1).
    LocalPartTooLong,
    /// Domain longer than 255 octets (RFC 5321 4.5.3.1.2).
    DomainTooLong,
    /// Path longer than 256 octets (RFC 5321 4.5.3.1.3).
    PathTooLong,
}

impl AddressError {
    /// True for the length-limit variants (RFC 5321 4.5.3.1).
    pub fn is_length(&self) -> bool {
        matches!(self, AddressError::LocalPartTooLong | AddressError::DomainTooLong | AddressError::PathTooLong)
    }
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            AddressError::Empty => "empty address",
            AddressError::MissingOpenBracket => "path must be enclosed in <>",
            AddressError::MissingCloseBracket => "missing closing >",
            AddressError::NullPath => "null path <> not allowed here",
            AddressError::EmptyLocalPart => "empty local part",
            AddressError::MissingDomain => "missing domain",
            AddressError::InvalidLocalPart => "invalid character in local part",
            AddressError::UnbalancedQuote => "unbalanced quotes in local part",
            AddressError::InvalidQuotedString => "invalid quoted string in local part",
            AddressError::ControlCharacter => "control character in address",
            AddressError::Whitespace => "white space in address",
            AddressError::InvalidDomain => "invalid domain",
            AddressError::InvalidAddressLiteral => "invalid address literal",
            AddressError::InvalidSourceRoute => "invalid source route",
            AddressError::TrailingGarbage => "unexpected text after path",
            AddressError::LocalPartTooLong => "local part longer than 64 octets",
            AddressError::DomainTooLong => "domain longer than 255 octets",
            AddressError::PathTooLong => "path longer than 256 octets",
        };
        f.write_str(s)
    }
}

impl std::error::Error for AddressError {}

/// A mailbox `local@domain` in canonical form.
///
/// The local part is stored unquoted (`"john smith"@x` has local part `john smith`) and
/// compared case-sensitively (RFC 5321 2.4: only the receiving host may interpret it). The
/// domain is ASCII-lowercased; U-labels are kept in UTF-8; address literals are kept as
/// written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    local: String,
    domain: String,
}

impl Address {
    /// Parses a bare `local@domain` (no angle brackets, no surrounding spaces).
    pub fn parse(s: &str) -> Result<Address, AddressError> {
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        let mut p = Parser::new(s);
        let addr = p.mailbox(None)?;
        if !p.at_end() {
            return Err(match p.peek() {
                Some(c) if c.is_control() => AddressError::ControlCharacter,
                Some(c) if c.is_whitespace() => AddressError::Whitespace,
                _ => AddressError::InvalidDomain,
            });
        }
        Ok(addr)
    }

    /// Builds an address from an unquoted local part and a domain, applying the same
    /// checks and canonicalisation as [`Address::parse`].
    pub fn from_parts(local: &str, domain: &str) -> Result<Address, AddressError> {
        if local.is_empty() {
            return Err(AddressError::EmptyLocalPart);
        }
        for c in local.chars() {
            check_quoted_char(c)?;
        }
        if local_display_len(local) > MAX_LOCAL_PART {
            return Err(AddressError::LocalPartTooLong);
        }
        let mut p = Parser::new(domain);
        let domain = p.domain(&[])?;
        if !p.at_end() {
            return Err(AddressError::InvalidDomain);
        }
        Ok(Address { local: local.to_owned(), domain })
    }

    /// The local part, unquoted and unescaped.
    pub fn local(&self) -> &str {
        &self.local
    }

    /// The domain: ASCII-lowercased name (U-labels kept as UTF-8) or an address literal
    /// with its brackets, as written.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// True if the domain is an address literal (`[...]`).
    pub fn is_address_literal(&self) -> bool {
        self.domain.starts_with('[')
    }

    /// True if the address is all ASCII; false means it needs SMTPUTF8 (RFC 6531).
    pub fn is_ascii(&self) -> bool {
        self.local.is_ascii() && self.domain.is_ascii()
    }
}

/// Length in octets of a local part in canonical (possibly quoted) form.
fn local_display_len(local: &str) -> usize {
    if is_dot_string(local) {
        local.len()
    } else {
        2 + local.len() + local.chars().filter(|&c| c == '"' || c == '\\').count()
    }
}

impl FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Address, AddressError> {
        Address::parse(s)
    }
}

impl fmt::Display for Address {
    /// Canonical form: the local part is quoted only when it is not a valid `Dot-string`
    /// (RFC 5321 4.1.2: "a Quoted-string ... SHOULD NOT be used unless necessary"), and
    /// inside quotes only `"` and `\` are escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_dot_string(&self.local) {
            f.write_str(&self.local)?;
        } else {
            f.write_str("\"")?;
            for c in self.local.chars() {
                if c == '"' || c == '\\' {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
            f.write_str("\"")?;
        }
        write!(f, "@{}", self.domain)
    }
}

/// The argument of `MAIL FROM:` (RFC 5321 4.1.2 `Reverse-path`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReversePath {
    /// `<>`: bounces and other notifications (RFC 5321 4.5.5).
    Null,
    Mailbox(Address),
}

impl ReversePath {
    /// The mailbox, if not null.
    pub fn address(&self) -> Option<&Address> {
        match self {
            ReversePath::Null => None,
            ReversePath::Mailbox(a) => Some(a),
        }
    }
}

impl fmt::Display for ReversePath {
    /// `<>` or `<local@domain>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => f.write_str("<>"),
            ReversePath::Mailbox(a) => write!(f, "<{a}>"),
        }
    }
}

/// The argument of `RCPT TO:` (RFC 5321 4.1.2 `Forward-path`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ForwardPath {
    /// Bare `<postmaster>` (any case), RFC 5321 4.1.1.3 and 4.5.1.
    Postmaster,
    Mailbox(Address),
}

impl ForwardPath {
    /// The mailbox, if not the bare postmaster.
    pub fn address(&self) -> Option<&Address> {
        match self {
            ForwardPath::Postmaster => None,
            ForwardPath::Mailbox(a) => Some(a),
        }
    }
}

impl fmt::Display for ForwardPath {
    /// `<postmaster>` or `<local@domain>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardPath::Postmaster => f.write_str("<postmaster>"),
            ForwardPath::Mailbox(a) => write!(f, "<{a}>"),
        }
    }
}

/// Parses the text after `MAIL FROM:`. Returns the path and the rest of the line (the
/// ESMTP parameters) with leading spaces removed.
///
/// Spaces before `<` are tolerated (as Postfix does); the angle brackets are required.
/// A source route (`<@a,@b:user@c>`) is accepted and discarded (RFC 5321 4.1.2, appendix C).
pub fn parse_reverse_path(arg: &str) -> Result<(ReversePath, &str), AddressError> {
    match parse_path(arg, false)? {
        (PathKind::Null, rest) => Ok((ReversePath::Null, rest)),
        (PathKind::Mailbox(a), rest) => Ok((ReversePath::Mailbox(a), rest)),
        // Only produced when postmaster is allowed.
        (PathKind::Postmaster, _) => Err(AddressError::MissingDomain),
    }
}

/// Parses the text after `RCPT TO:`. Returns the path and the rest of the line (the ESMTP
/// parameters) with leading spaces removed.
///
/// `<postmaster>` (any case, no domain) is [`ForwardPath::Postmaster`] (RFC 5321 4.5.1).
/// `<>` is rejected. Source routes are accepted and discarded.
pub fn parse_forward_path(arg: &str) -> Result<(ForwardPath, &str), AddressError> {
    match parse_path(arg, true)? {
        (PathKind::Null, _) => Err(AddressError::NullPath),
        (PathKind::Mailbox(a), rest) => Ok((ForwardPath::Mailbox(a), rest)),
        (PathKind::Postmaster, rest) => Ok((ForwardPath::Postmaster, rest)),
    }
}

enum PathKind {
    Null,
    Postmaster,
    Mailbox(Address),
}

fn parse_path(arg: &str, allow_postmaster: bool) -> Result<(PathKind, &str), AddressError> {
    // Be liberal: optional white space between the colon and "<".
    let trimmed = arg.trim_start_matches([' ', '\t']);
    if trimmed.is_empty() {
        return Err(AddressError::Empty);
    }
    let mut p = Parser::new(trimmed);
    if !p.eat('<') {
        return Err(AddressError::MissingOpenBracket);
    }
    let kind = if p.eat('>') {
        // RFC 5321 4.1.2: Reverse-path = Path / "<>"
        PathKind::Null
    } else if allow_postmaster && is_bare_postmaster(p.rest()) {
        // RFC 5321 4.5.1: "<Postmaster>" without domain, case-insensitive.
        p.advance("postmaster>".len());
        PathKind::Postmaster
    } else {
        if p.peek() == Some('@') {
            // RFC 5321 4.1.2: Path = "<" [ A-d-l ":" ] Mailbox ">"; the route is
            // ignored (RFC 5321 C: "SHOULD ... ignore the route information").
            p.source_route()?;
        }
        let addr = p.mailbox(Some('>'))?;
        if !p.eat('>') {
            return Err(match p.peek() {
                None => AddressError::MissingCloseBracket,
                Some(c) if c.is_control() => AddressError::ControlCharacter,
                Some(c) if c.is_whitespace() => AddressError::Whitespace,
                Some(_) => AddressError::InvalidDomain,
            });
        }
        PathKind::Mailbox(addr)
    };
    // RFC 5321 4.5.3.1.3: path length including the brackets, both as received and in the
    // canonical form (quoted where needed) that we write when we relay it.
    let canonical_len = match &kind {
        PathKind::Mailbox(addr) => local_display_len(&addr.local) + 1 + addr.domain.len() + 2,
        _ => 0,
    };
    if p.pos > MAX_PATH || canonical_len > MAX_PATH {
        return Err(AddressError::PathTooLong);
    }
    let rest = p.rest();
    // RFC 5321 4.1.1.2: Mail-parameters follow after SP.
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return Err(AddressError::TrailingGarbage);
    }
    Ok((kind, rest.trim_start_matches([' ', '\t'])))
}

fn is_bare_postmaster(rest: &str) -> bool {
    rest.get(.."postmaster>".len()).is_some_and(|s| s.eq_ignore_ascii_case("postmaster>"))
}

/// RFC 5322 3.2.3 `atext`, extended by RFC 6531 3.3 with UTF8-non-ascii.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+-/=?^_`{|}~".contains(c)
        || (!c.is_ascii() && !c.is_control() && !c.is_whitespace())
}

/// RFC 5321 4.1.2: Dot-string = Atom *("." Atom); Atom = 1*atext.
fn is_dot_string(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

/// A character allowed in the unescaped content of a quoted local part: RFC 5321
/// `qtextSMTP` and `quoted-pairSMTP` together cover %d32-126; RFC 6531 adds UTF-8.
fn check_quoted_char(c: char) -> Result<(), AddressError> {
    if c.is_control() {
        Err(AddressError::ControlCharacter)
    } else if c.is_ascii() || !c.is_whitespace() {
        Ok(())
    } else {
        // Non-ASCII white space (U+00A0, U+2028, ...): never legitimate, confusing.
        Err(AddressError::InvalidQuotedString)
    }
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(s: &'a str) -> Self {
        Parser { s, pos: 0 }
    }

    fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or("")
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn advance(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.s.len());
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    /// RFC 5321 4.1.2: A-d-l = At-domain *( "," At-domain ) ":"; At-domain = "@" Domain.
    fn source_route(&mut self) -> Result<(), AddressError> {
        loop {
            if !self.eat('@') {
                return Err(AddressError::InvalidSourceRoute);
            }
            self.domain(&[',', ':']).map_err(|e| if e.is_length() { e } else { AddressError::InvalidSourceRoute })?;
            if self.eat(':') {
                return Ok(());
            }
            if !self.eat(',') {
                return Err(AddressError::InvalidSourceRoute);
            }
        }
    }

    /// RFC 5321 4.1.2: Mailbox = Local-part "@" ( Domain / address-literal ).
    /// `end` is the character that legitimately follows the domain (`>` in a path).
    fn mailbox(&mut self, end: Option<char>) -> Result<Address, AddressError> {
        let start = self.pos;
        let (local, quoted) =
            if self.peek() == Some('"') { (self.quoted_string()?, true) } else { (self.dot_string()?, false) };
        if local.is_empty() {
            return Err(AddressError::EmptyLocalPart);
        }
        // RFC 5321 4.5.3.1.1: measured as written.
        if self.pos - start > MAX_LOCAL_PART {
            return Err(AddressError::LocalPartTooLong);
        }
        if !self.eat('@') {
            return Err(match self.peek() {
                None => AddressError::MissingDomain,
                Some(c) if Some(c) == end => AddressError::MissingDomain,
                Some('"') => AddressError::UnbalancedQuote,
                Some(_) if quoted => AddressError::UnbalancedQuote,
                Some(_) => AddressError::InvalidLocalPart,
            });
        }
        let domain = self.domain(end.as_slice())?;
        let addr = Address { local, domain };
        // The canonical form must also fit (an unquoted "a..b" is displayed quoted).
        if local_display_len(&addr.local) > MAX_LOCAL_PART {
            return Err(AddressError::LocalPartTooLong);
        }
        Ok(addr)
    }

    /// An unquoted local part. Liberal like Postfix: any atext and dots, including empty
    /// atoms (`a..b`), which the canonical form then quotes.
    fn dot_string(&mut self) -> Result<String, AddressError> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c == '@' {
                break;
            }
            if c == '.' || is_atext(c) {
                self.pos += c.len_utf8();
                continue;
            }
            if c.is_control() {
                return Err(AddressError::ControlCharacter);
            }
            if c.is_whitespace() {
                return Err(AddressError::Whitespace);
            }
            if c == '"' {
                return Err(AddressError::UnbalancedQuote);
            }
            if c == '>' && self.pos == start {
                return Err(AddressError::EmptyLocalPart);
            }
            if c == '>' {
                return Err(AddressError::MissingDomain);
            }
            return Err(AddressError::InvalidLocalPart);
        }
        Ok(self.s.get(start..self.pos).unwrap_or("").to_owned())
    }

    /// RFC 5321 4.1.2: Quoted-string = DQUOTE *QcontentSMTP DQUOTE; returns the content
    /// with quoted-pairs resolved.
    fn quoted_string(&mut self) -> Result<String, AddressError> {
        let mut out = String::new();
        if !self.eat('"') {
            return Err(AddressError::UnbalancedQuote);
        }
        loop {
            match self.bump() {
                None => return Err(AddressError::UnbalancedQuote),
                Some('"') => return Ok(out),
                Some('\\') => match self.bump() {
                    // quoted-pairSMTP = %d92 %d32-126
                    Some(c) if (' '..='~').contains(&c) => out.push(c),
                    Some(c) if c.is_control() => return Err(AddressError::ControlCharacter),
                    None => return Err(AddressError::UnbalancedQuote),
                    Some(_) => return Err(AddressError::InvalidQuotedString),
                },
                Some(c) => {
                    check_quoted_char(c)?;
                    out.push(c);
                }
            }
        }
    }

    /// RFC 5321 4.1.2 `Domain` or `address-literal`, lowercased (literals kept as
    /// written). Stops before any character in `stop` or at the end of input.
    fn domain(&mut self, stop: &[char]) -> Result<String, AddressError> {
        let start = self.pos;
        let rest = self.rest();
        let len = if rest.starts_with('[') {
            // An address literal runs to its "]" (it may contain ":" and ",").
            match rest.find(']') {
                Some(i) => i + 1,
                None => return Err(AddressError::InvalidAddressLiteral),
            }
        } else {
            rest.find(|c: char| stop.contains(&c)).unwrap_or(rest.len())
        };
        let text = rest.get(..len).unwrap_or("");
        if text.is_empty() {
            return Err(AddressError::MissingDomain);
        }
        if text.chars().any(char::is_control) {
            return Err(AddressError::ControlCharacter);
        }
        if text.chars().any(char::is_whitespace) {
            return Err(AddressError::Whitespace);
        }
        // RFC 5321 4.5.3.1.2
        if text.len() > MAX_DOMAIN {
            return Err(AddressError::DomainTooLong);
        }
        let out = if text.starts_with('[') {
            check_address_literal(text)?;
            text.to_owned()
        } else {
            check_domain_name(text)?;
            text.to_ascii_lowercase()
        };
        self.pos = start + len;
        Ok(out)
    }
}

/// RFC 5321 4.1.2: Domain = sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str];
/// RFC 6531 3.3: sub-domain =/ U-label (accepted as any run of non-ASCII letters here;
/// IDNA validity is not checked).
fn check_domain_name(d: &str) -> Result<(), AddressError> {
    for label in d.split('.') {
        if label.is_empty() || label.starts_with('-') || label.ends_with('-') {
            return Err(AddressError::InvalidDomain);
        }
        // RFC 1035 2.3.4: labels are 63 octets or less (U-labels are checked in their
        // A-label form by IDNA, which we do not do here).
        if label.is_ascii() && label.len() > 63 {
            return Err(AddressError::InvalidDomain);
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || is_ulabel_char(c)) {
            return Err(AddressError::InvalidDomain);
        }
    }
    Ok(())
}

/// Non-ASCII characters accepted in U-labels: anything that is not white space, a
/// control, or a look-alike of "." or "@" that IDNA would map to structure.
fn is_ulabel_char(c: char) -> bool {
    !c.is_ascii()
        && !c.is_control()
        && !c.is_whitespace()
        && !matches!(c, '\u{3002}' | '\u{FF0E}' | '\u{FF61}' | '\u{FF20}' | '\u{FE6B}')
}

/// RFC 5321 4.1.3: address-literal = "[" ( IPv4-address-literal / IPv6-address-literal /
/// General-address-literal ) "]".
fn check_address_literal(lit: &str) -> Result<(), AddressError> {
    let inner = lit.strip_prefix('[').and_then(|s| s.strip_suffix(']')).ok_or(AddressError::InvalidAddressLiteral)?;
    if inner.is_empty() || !inner.is_ascii() {
        return Err(AddressError::InvalidAddressLiteral);
    }
    if is_ipv4_literal(inner) {
        return Ok(());
    }
    let Some((tag, content)) = inner.split_once(':') else {
        return Err(AddressError::InvalidAddressLiteral);
    };
    if tag.eq_ignore_ascii_case("IPv6") {
        // IPv6-addr (full, compressed, and with an embedded IPv4 address).
        return match content.parse::<Ipv6Addr>() {
            Ok(_) => Ok(()),
            Err(_) => Err(AddressError::InvalidAddressLiteral),
        };
    }
    // General-address-literal = Standardized-tag ":" 1*dcontent;
    // Standardized-tag = Ldh-str; dcontent = %d33-90 / %d94-126.
    let tag_ok = !tag.is_empty()
        && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !tag.ends_with('-')
        && !tag.starts_with('-');
    let content_ok = !content.is_empty() && content.bytes().all(|b| (33..=90).contains(&b) || (94..=126).contains(&b));
    if tag_ok && content_ok {
        Ok(())
    } else {
        Err(AddressError::InvalidAddressLiteral)
    }
}

/// RFC 5321 4.1.3: IPv4-address-literal = Snum 3("." Snum); Snum = 1*3DIGIT (0-255).
fn is_ipv4_literal(s: &str) -> bool {
    let mut n = 0;
    for part in s.split('.') {
        n += 1;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        match part.parse::<u16>() {
            Ok(v) if v <= 255 => {}
            _ => return false,
        }
    }
    n == 4
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Address {
        match Address::parse(s) {
            Ok(a) => a,
            Err(e) => panic!("{s:?}: {e}"),
        }
    }

    fn rev(s: &str) -> Result<(ReversePath, &str), AddressError> {
        parse_reverse_path(s)
    }

    fn fwd(s: &str) -> Result<(ForwardPath, &str), AddressError> {
        parse_forward_path(s)
    }

    #[test]
    fn simple_mailbox() {
        let a = addr("user@Example.COM");
        assert_eq!(a.local(), "user");
        assert_eq!(a.domain(), "example.com");
        assert_eq!(a.to_string(), "user@example.com");
        assert!(a.is_ascii());
        assert!(!a.is_address_literal());
    }

    #[test]
    fn local_part_case_is_kept() {
        // RFC 5321 2.4: local parts are case-sensitive.
        let a = addr("John.Smith@example.com");
        assert_eq!(a.local(), "John.Smith");
        assert_ne!(a, addr("john.smith@example.com"));
        assert_eq!(a, addr("John.Smith@EXAMPLE.com"));
    }

    #[test]
    fn atext_specials() {
        // RFC 5322 3.2.3 atext.
        for s in ["a!b#c$d%e&f'g*h+i-j/k=l?m^n_o`p{q|r}s~t@x.org", "user+tag@example.com", "a%b@c", "a!b@c"] {
            let a = addr(s);
            assert_eq!(a.to_string(), s);
        }
    }

    #[test]
    fn quoted_local_parts() {
        // RFC 5321 4.1.2 Quoted-string; stored unquoted, displayed quoted only if needed.
        let a = addr("\"john smith\"@example.com");
        assert_eq!(a.local(), "john smith");
        assert_eq!(a.to_string(), "\"john smith\"@example.com");

        let a = addr("\"john\"@example.com");
        assert_eq!(a.local(), "john");
        assert_eq!(a.to_string(), "john@example.com");
        assert_eq!(a, addr("john@example.com"));

        let a = addr(r#""a\"b\\c"@x"#);
        assert_eq!(a.local(), r#"a"b\c"#);
        assert_eq!(a.to_string(), r#""a\"b\\c"@x"#);

        // Quoted-pair of an ordinary character is just the character.
        let a = addr(r#""\a\b"@x"#);
        assert_eq!(a.local(), "ab");
        assert_eq!(a.to_string(), "ab@x");

        // Quoted @ is kept literally, never routed.
        let a = addr("\"victim@other.example\"@example.com");
        assert_eq!(a.local(), "victim@other.example");
        assert_eq!(a.domain(), "example.com");
        assert_eq!(a.to_string(), "\"victim@other.example\"@example.com");

        let a = addr("\"a..b\"@x");
        assert_eq!(a.to_string(), "\"a..b\"@x");
        let a = addr("\".a\"@x");
        assert_eq!(a.to_string(), "\".a\"@x");
    }

    #[test]
    fn liberal_dots_are_quoted_in_canonical_form() {
        let a = addr("a..b@x");
        assert_eq!(a.local(), "a..b");
        assert_eq!(a.to_string(), "\"a..b\"@x");
        assert_eq!(addr("a.@x").to_string(), "\"a.\"@x");
    }

    #[test]
    fn display_roundtrip() {
        for s in [
            "user@example.com",
            "\"john smith\"@example.com",
            "\"a\\\"b\"@x",
            "\"a@b\"@c",
            r#""\""@x"#,
            "用户@例子.广告",
            "user@[192.0.2.1]",
            "user@[IPv6:2001:db8::1]",
        ] {
            let a = addr(s);
            let again = addr(&a.to_string());
            assert_eq!(a, again, "{s}");
            assert_eq!(again.to_string(), a.to_string());
        }
    }

    #[test]
    fn utf8_addresses() {
        // RFC 6531 3.3.
        let a = addr("Pelé@Exämple.ORG");
        assert_eq!(a.local(), "Pelé");
        assert_eq!(a.domain(), "exämple.org");
        assert!(!a.is_ascii());
        let a = addr("\"Ünïcödé user\"@x");
        assert_eq!(a.local(), "Ünïcödé user");
        assert!(!a.is_ascii());
        let a = addr("user@xn--exmple-cua.org");
        assert!(a.is_ascii());
    }

    #[test]
    fn address_literals() {
        let a = addr("user@[192.0.2.1]");
        assert_eq!(a.domain(), "[192.0.2.1]");
        assert!(a.is_address_literal());
        let a = addr("user@[IPv6:2001:DB8::1]");
        assert_eq!(a.domain(), "[IPv6:2001:DB8::1]");
        let a = addr("user@[IPv6:::ffff:192.0.2.1]");
        assert_eq!(a.domain(), "[IPv6:::ffff:192.0.2.1]");
        let a = addr("user@[x-tag:some-thing]");
        assert_eq!(a.domain(), "[x-tag:some-thing]");
        for bad in [
            "user@[256.1.1.1]",
            "user@[1.2.3]",
            "user@[1.2.3.4.5]",
            "user@[IPv6:zz::1]",
            "user@[IPv6:1.2.3.4]",
            "user@[]",
            "user@[1.2.3.4",
            "user@[-tag:x]",
            "user@[tag:a[b]",
            "user@[tag:]",
            "user@[1.2.3.4]x",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Address::parse("user@[999.1.1.1]"), Err(AddressError::InvalidAddressLiteral));
    }

    #[test]
    fn bad_addresses() {
        use AddressError::*;
        let cases: &[(&str, AddressError)] = &[
            ("", Empty),
            ("@example.com", EmptyLocalPart),
            ("\"\"@example.com", EmptyLocalPart),
            ("user", MissingDomain),
            ("user@", MissingDomain),
            ("user name@x", Whitespace),
            ("user@exa mple.com", Whitespace),
            ("us\u{7}er@x", ControlCharacter),
            ("user@x\u{0}", ControlCharacter),
            ("us\u{85}er@x", ControlCharacter),
            ("\"abc@x", UnbalancedQuote),
            ("\"abc\"def@x", UnbalancedQuote),
            ("abc\"def\"@x", UnbalancedQuote),
            ("\"a\tb\"@x", ControlCharacter),
            ("\"a\\\u{1}\"@x", ControlCharacter),
            ("\"a\\é\"@x", InvalidQuotedString),
            ("a(b)@x", InvalidLocalPart),
            ("a,b@x", InvalidLocalPart),
            ("a<b@x", InvalidLocalPart),
            ("a\\b@x", InvalidLocalPart),
            ("user@-example.com", InvalidDomain),
            ("user@example-.com", InvalidDomain),
            ("user@example..com", InvalidDomain),
            ("user@.example.com", InvalidDomain),
            ("user@example.com.", InvalidDomain),
            ("user@exa_mple.com", InvalidDomain),
            ("user@b@c", InvalidDomain),
            ("user@ex>ample", InvalidDomain),
            ("user@例子。广告", InvalidDomain),
        ];
        for (s, e) in cases {
            assert_eq!(Address::parse(s), Err(*e), "{s:?}");
        }
    }

    #[test]
    fn length_limits() {
        // RFC 5321 4.5.3.1.1: 64 octets of local part.
        let l64 = "a".repeat(64);
        assert!(Address::parse(&format!("{l64}@x")).is_ok());
        assert_eq!(Address::parse(&format!("{l64}a@x")), Err(AddressError::LocalPartTooLong));
        // Quoted form measured as written: 62 characters inside quotes is 64.
        let q = format!("\"{}\"@x", " ".repeat(62));
        assert!(Address::parse(&q).is_ok());
        let q = format!("\"{}\"@x", " ".repeat(63));
        assert_eq!(Address::parse(&q), Err(AddressError::LocalPartTooLong));
        // Multi-byte characters count as octets.
        let e = format!("{}@x", "é".repeat(33));
        assert_eq!(Address::parse(&e), Err(AddressError::LocalPartTooLong));

        // RFC 5321 4.5.3.1.2: 255 octets of domain.
        let label = "a".repeat(63);
        let d255 = format!("{label}.{label}.{label}.{}", "b".repeat(63));
        assert_eq!(d255.len(), 255);
        assert!(Address::parse(&format!("u@{d255}")).is_ok());
        let d256 = format!("{d255}c");
        assert_eq!(Address::parse(&format!("u@{d256}")), Err(AddressError::DomainTooLong));
        // Label over 63 octets.
        assert_eq!(Address::parse(&format!("u@{}.com", "a".repeat(64))), Err(AddressError::InvalidDomain));

        // RFC 5321 4.5.3.1.3: 256 octets of path including brackets.
        let local = "l".repeat(64);
        let domain = format!("{label}.{label}.{}", "b".repeat(61));
        let path = format!("<{local}@{domain}>");
        assert_eq!(path.len(), 256);
        assert!(fwd(&path).is_ok());
        let domain = format!("{label}.{label}.{}", "b".repeat(62));
        let path = format!("<{local}@{domain}>");
        assert_eq!(path.len(), 257);
        assert_eq!(fwd(&path), Err(AddressError::PathTooLong));
        assert!(AddressError::PathTooLong.is_length());
        assert!(!AddressError::InvalidDomain.is_length());
    }

    #[test]
    fn path_whose_canonical_form_is_too_long_is_refused() {
        // Found by the fuzzer: 256 octets as received, but the local part needs quotes
        // (leading and trailing dots), so the form we would relay is 258 octets.
        let local = ".ccc~ccccccccaaaaaaa.a.a1cccccccccc.";
        let label = "q".repeat(60);
        let domain = format!("{label}.{label}.{label}.{}", "a".repeat(34));
        let path = format!("<{local}@{domain}>");
        assert_eq!(path.len(), 256);
        assert_eq!(fwd(&path), Err(AddressError::PathTooLong));
        // The same length with a local part that needs no quotes is fine.
        let plain = format!("<{}@{domain}>", "c".repeat(local.len()));
        assert_eq!(plain.len(), 256);
        assert!(fwd(&plain).is_ok());
    }

    #[test]
    fn reverse_paths() {
        assert_eq!(rev("<>"), Ok((ReversePath::Null, "")));
        assert_eq!(rev("<> SIZE=100"), Ok((ReversePath::Null, "SIZE=100")));
        let (p, rest) = rev("<user@example.com> SIZE=1000 BODY=8BITMIME").unwrap();
        assert_eq!(p, ReversePath::Mailbox(addr("user@example.com")));
        assert_eq!(rest, "SIZE=1000 BODY=8BITMIME");
        assert_eq!(p.to_string(), "<user@example.com>");
        assert_eq!(ReversePath::Null.to_string(), "<>");
        assert_eq!(p.address(), Some(&addr("user@example.com")));
        assert_eq!(ReversePath::Null.address(), None);
        // Spaces before "<" are tolerated; several spaces before parameters too.
        let (p, rest) = rev("   <a@b>    AUTH=<>").unwrap();
        assert_eq!(p, ReversePath::Mailbox(addr("a@b")));
        assert_eq!(rest, "AUTH=<>");
        // <postmaster> is not a valid reverse-path.
        assert_eq!(rev("<postmaster>"), Err(AddressError::MissingDomain));
        assert_eq!(rev("user@example.com"), Err(AddressError::MissingOpenBracket));
        assert_eq!(rev("<user@example.com"), Err(AddressError::MissingCloseBracket));
        assert_eq!(rev("<user@example.com>SIZE=1"), Err(AddressError::TrailingGarbage));
        assert_eq!(rev(""), Err(AddressError::Empty));
        assert_eq!(rev("   "), Err(AddressError::Empty));
        assert_eq!(rev("<"), Err(AddressError::EmptyLocalPart));
        assert_eq!(rev("< user@x>"), Err(AddressError::Whitespace));
        assert_eq!(rev("<user@x >"), Err(AddressError::Whitespace));
        assert_eq!(rev("<user >"), Err(AddressError::Whitespace));
        assert_eq!(rev("<user>"), Err(AddressError::MissingDomain));
        assert_eq!(rev("<@x>"), Err(AddressError::InvalidSourceRoute));
        assert_eq!(rev("<<a@b>>"), Err(AddressError::InvalidLocalPart));
    }

    #[test]
    fn forward_paths() {
        for s in ["<postmaster>", "<Postmaster>", "<POSTMASTER>", " <PostMaster>"] {
            assert_eq!(fwd(s), Ok((ForwardPath::Postmaster, "")), "{s}");
        }
        assert_eq!(fwd("<postmaster> NOTIFY=NEVER"), Ok((ForwardPath::Postmaster, "NOTIFY=NEVER")));
        assert_eq!(ForwardPath::Postmaster.to_string(), "<postmaster>");
        assert_eq!(ForwardPath::Postmaster.address(), None);
        // Postmaster with a domain is an ordinary mailbox.
        let (p, _) = fwd("<Postmaster@Example.com>").unwrap();
        assert_eq!(p, ForwardPath::Mailbox(addr("Postmaster@example.com")));
        assert_eq!(p.address().map(|a| a.local()), Some("Postmaster"));
        assert_eq!(fwd("<postmasterx>"), Err(AddressError::MissingDomain));
        assert_eq!(fwd("<>"), Err(AddressError::NullPath));
        let (p, rest) = fwd("<\"a b\"@x> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@x").unwrap();
        assert_eq!(p.to_string(), "<\"a b\"@x>");
        assert_eq!(rest, "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@x");
        // A ">" inside a quoted local part does not close the path.
        let (p, rest) = fwd("<\"a>b\"@x> X").unwrap();
        assert_eq!(p.address().map(|a| a.local()), Some("a>b"));
        assert_eq!(rest, "X");
    }

    #[test]
    fn source_routes_are_discarded() {
        // RFC 5321 4.1.2 / appendix C.
        let (p, rest) = fwd("<@hosta.int,@jkl.org:userc@d.bar.org>").unwrap();
        assert_eq!(p, ForwardPath::Mailbox(addr("userc@d.bar.org")));
        assert_eq!(rest, "");
        let (p, _) = rev("<@a:user@c>").unwrap();
        assert_eq!(p, ReversePath::Mailbox(addr("user@c")));
        let (p, _) = fwd("<@[1.2.3.4],@[IPv6:::1],@b:u@c>").unwrap();
        assert_eq!(p.address().map(|a| a.domain()), Some("c"));
        for bad in ["<@a>", "<@a,b:u@c>", "<@a,@:u@c>", "<@:u@c>", "<@a,,@b:u@c>", "<@a;u@c>", "<@a b:u@c>"] {
            assert!(fwd(bad).is_err(), "{bad}");
        }
        assert_eq!(fwd("<@a>"), Err(AddressError::InvalidSourceRoute));
    }

    #[test]
    fn relay_tricks_keep_the_domain_authoritative() {
        // The domain is always what follows the last unquoted "@"; local parts are literal.
        let (p, _) = fwd("<user%other.example@local.example>").unwrap();
        let a = p.address().unwrap();
        assert_eq!(a.domain(), "local.example");
        assert_eq!(a.local(), "user%other.example");
        let (p, _) = fwd("<other.example!user@local.example>").unwrap();
        assert_eq!(p.address().unwrap().domain(), "local.example");
        let (p, _) = fwd("<\"user@other.example\"@local.example>").unwrap();
        assert_eq!(p.address().unwrap().domain(), "local.example");
        let (p, _) = fwd("<@local.example:user@other.example>").unwrap();
        assert_eq!(p.address().unwrap().domain(), "other.example");
        // Two unquoted "@" are a syntax error, not a route.
        assert!(fwd("<user@other.example@local.example>").is_err());
    }

    #[test]
    fn from_parts() {
        let a = Address::from_parts("john smith", "Example.COM").unwrap();
        assert_eq!(a, addr("\"john smith\"@example.com"));
        assert_eq!(Address::from_parts("", "x"), Err(AddressError::EmptyLocalPart));
        assert_eq!(Address::from_parts("a\nb", "x"), Err(AddressError::ControlCharacter));
        assert_eq!(Address::from_parts("a", "x y"), Err(AddressError::Whitespace));
        assert_eq!(Address::from_parts("a", "x>"), Err(AddressError::InvalidDomain));
        assert_eq!(Address::from_parts(&"\"".repeat(32), "x"), Err(AddressError::LocalPartTooLong));
        assert!("a@b".parse::<Address>().is_ok());
    }

    #[test]
    fn errors_display() {
        assert_eq!(AddressError::PathTooLong.to_string(), "path longer than 256 octets");
        let e: Box<dyn std::error::Error> = Box::new(AddressError::InvalidDomain);
        assert_eq!(e.to_string(), "invalid domain");
    }

    #[test]
    fn never_panics_on_odd_input() {
        let pieces = [
            "<",
            ">",
            "@",
            "\"",
            "\\",
            ".",
            ",",
            ":",
            " ",
            "a",
            "é",
            "[",
            "]",
            "\u{0}",
            "IPv6:",
            "postmaster",
            "用",
            "\u{3002}",
        ];
        // Exhaustive over short combinations.
        let mut stack = vec![String::new()];
        let mut n = 0;
        while let Some(s) = stack.pop() {
            let _ = parse_reverse_path(&s);
            let _ = parse_forward_path(&s);
            if let Ok(a) = Address::parse(&s) {
                // Canonical form must reparse to the same address.
                assert_eq!(Address::parse(&a.to_string()).as_ref(), Ok(&a), "{s:?}");
            }
            n += 1;
            if s.chars().count() < 5 {
                for p in pieces {
                    stack.push(format!("{s}{p}"));
                }
            }
        }
        assert!(n > 1000);
    }
}
