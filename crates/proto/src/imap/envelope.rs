//! The ENVELOPE of a message (RFC 9051 7.5.2), built from its RFC 5322 header section
//! alone: date, subject, the address lists, In-Reply-To and Message-ID. Values are the
//! header's text, unfolded and not decoded (RFC 9051 7.5.2: encoded words stay encoded).

use super::strings::write_nstring;
use super::types::NameEncoding;
use crate::headers;

/// One element of an address list (RFC 9051 7.5.2 `address`): a mailbox, or the start
/// (`host` None, `mailbox` the group name) or end (everything None) of a group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Address {
    /// The display name.
    pub name: Option<String>,
    /// The source route (`@a,@b`), obsolete but kept.
    pub route: Option<String>,
    /// The local part, or the group name.
    pub mailbox: Option<String>,
    /// The domain; None marks group syntax. A mailbox without a domain gets an empty one.
    pub host: Option<String>,
}

/// RFC 9051 7.5.2 ENVELOPE. An empty address list is NIL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    pub date: Option<String>,
    pub subject: Option<String>,
    pub from: Vec<Address>,
    pub sender: Vec<Address>,
    pub reply_to: Vec<Address>,
    pub to: Vec<Address>,
    pub cc: Vec<Address>,
    pub bcc: Vec<Address>,
    pub in_reply_to: Option<String>,
    pub message_id: Option<String>,
}

impl Envelope {
    /// Reads the header section of `message` (the body is ignored). The first field of
    /// each name counts.
    pub fn from_message(message: &[u8]) -> Envelope {
        let first = |name: &str| headers::fields(message).find(|f| f.name_is(name)).map(|f| f.unfolded_value());
        let addresses = |name: &str| first(name).map(|v| parse_address_list(&v)).unwrap_or_default();
        let from = addresses("From");
        // RFC 9051 7.5.2: an absent or empty Sender or Reply-To is the From.
        let or_from = |list: Vec<Address>| if list.is_empty() { from.clone() } else { list };
        Envelope {
            date: first("Date"),
            subject: first("Subject"),
            sender: or_from(addresses("Sender")),
            reply_to: or_from(addresses("Reply-To")),
            to: addresses("To"),
            cc: addresses("Cc"),
            bcc: addresses("Bcc"),
            in_reply_to: first("In-Reply-To"),
            message_id: first("Message-ID"),
            from,
        }
    }

    /// Writes the parenthesised envelope, the value of the ENVELOPE fetch item.
    pub fn write_to(&self, encoding: NameEncoding, out: &mut Vec<u8>) {
        let nstring = |value: &Option<String>, out: &mut Vec<u8>| {
            write_nstring(value.as_deref().map(str::as_bytes), encoding, out)
        };
        out.push(b'(');
        nstring(&self.date, out);
        out.push(b' ');
        nstring(&self.subject, out);
        for list in [&self.from, &self.sender, &self.reply_to, &self.to, &self.cc, &self.bcc] {
            out.push(b' ');
            write_address_list(list, encoding, out);
        }
        out.push(b' ');
        nstring(&self.in_reply_to, out);
        out.push(b' ');
        nstring(&self.message_id, out);
        out.push(b')');
    }

    pub fn to_wire(&self, encoding: NameEncoding) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(encoding, &mut out);
        out
    }
}

/// RFC 9051 9 `env-from` and the like: `"(" 1*address ")"` (no spaces between the
/// addresses) or NIL.
fn write_address_list(list: &[Address], encoding: NameEncoding, out: &mut Vec<u8>) {
    if list.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for address in list {
        out.push(b'(');
        for (i, part) in [&address.name, &address.route, &address.mailbox, &address.host].into_iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            write_nstring(part.as_deref().map(str::as_bytes), encoding, out);
        }
        out.push(b')');
    }
    out.push(b')');
}

/// Most addresses taken from one field: a header cannot make the response huge.
const MAX_ADDRESSES: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// An atom or dot-atom run.
    Word(String),
    /// A quoted string's content.
    Quoted(String),
    Special(char),
}

/// RFC 5322 3.2-3.4 tokens, comments dropped.
fn tokenize(value: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\r' | '\n' => {}
            '(' => {
                let mut depth = 1;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
            }
            '"' => {
                let mut text = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => text.extend(chars.next()),
                        '"' => break,
                        _ => text.push(c),
                    }
                }
                tokens.push(Token::Quoted(text));
            }
            '<' | '>' | ',' | ':' | ';' | '@' => tokens.push(Token::Special(c)),
            _ => {
                let mut word = String::from(c);
                while let Some(&next) = chars.peek() {
                    if matches!(next, ' ' | '\t' | '\r' | '\n' | '(' | '"' | '<' | '>' | ',' | ':' | ';' | '@') {
                        break;
                    }
                    word.push(next);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    tokens
}

/// An addr-spec from its tokens: local part before the last `@`, domain after.
fn mailbox_from_spec(name: Option<String>, route: Option<String>, spec: &[Token]) -> Option<Address> {
    let text = |tokens: &[Token]| {
        tokens
            .iter()
            .map(|t| match t {
                Token::Word(w) | Token::Quoted(w) => w.clone(),
                Token::Special(c) => c.to_string(),
            })
            .collect::<String>()
    };
    if spec.is_empty() {
        return None;
    }
    let at = spec.iter().rposition(|t| *t == Token::Special('@'));
    let (local, host) = match at {
        Some(at) => (text(&spec[..at]), text(&spec[at + 1..])),
        None => (text(spec), String::new()),
    };
    Some(Address { name, route, mailbox: Some(local), host: Some(host) })
}

/// RFC 5322 3.4 `address-list`, leniently: mailboxes, `name <addr>`, and groups.
pub fn parse_address_list(value: &str) -> Vec<Address> {
    let tokens = tokenize(value);
    let mut out = Vec::new();
    let mut phrase: Vec<Token> = Vec::new();
    let mut in_group = false;
    let mut i = 0;
    let phrase_text = |phrase: &[Token]| {
        let words: Vec<&str> = phrase
            .iter()
            .filter_map(|t| match t {
                Token::Word(w) | Token::Quoted(w) => Some(w.as_str()),
                Token::Special(_) => None,
            })
            .collect();
        (!words.is_empty()).then(|| words.join(" "))
    };
    while i < tokens.len() && out.len() < MAX_ADDRESSES {
        match &tokens[i] {
            Token::Special('<') => {
                let close = tokens[i..].iter().position(|t| *t == Token::Special('>')).map_or(tokens.len(), |p| i + p);
                let inner = &tokens[i + 1..close];
                // obs-route: `@a,@b:` before the addr-spec.
                let (route, spec) = match inner.iter().position(|t| *t == Token::Special(':')) {
                    Some(colon) if inner.first() == Some(&Token::Special('@')) => {
                        let route: String = inner[..colon]
                            .iter()
                            .map(|t| match t {
                                Token::Word(w) | Token::Quoted(w) => w.clone(),
                                Token::Special(c) => c.to_string(),
                            })
                            .collect();
                        (Some(route), &inner[colon + 1..])
                    }
                    _ => (None, inner),
                };
                out.extend(mailbox_from_spec(phrase_text(&phrase), route, spec));
                phrase.clear();
                i = close + 1;
                continue;
            }
            Token::Special(':') if !in_group => {
                out.push(Address { mailbox: Some(phrase_text(&phrase).unwrap_or_default()), ..Address::default() });
                phrase.clear();
                in_group = true;
            }
            Token::Special(',') | Token::Special(';') => {
                out.extend(mailbox_from_spec(None, None, &phrase));
                phrase.clear();
                if tokens[i] == Token::Special(';') && in_group {
                    out.push(Address::default());
                    in_group = false;
                }
            }
            token => phrase.push(token.clone()),
        }
        i += 1;
    }
    out.extend(mailbox_from_spec(None, None, &phrase));
    if in_group {
        out.push(Address::default());
    }
    out.truncate(MAX_ADDRESSES);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &[u8] = b"Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\n\
From: Terry Gray <gray@cac.washington.example>\r\n\
Subject: IMAP4rev2 WG mtg summary and minutes\r\n\
To: imap@cac.washington.example\r\n\
cc: minutes@CNRI.Reston.VA.example,\r\n \"John Klensin\" <KLENSIN@MIT.EXAMPLE>\r\n\
Message-Id: <B27397-0100000@cac.washington.example>\r\n\
\r\n\
body\r\n";

    #[test]
    fn rfc9051_example_envelope() {
        let envelope = Envelope::from_message(MESSAGE);
        // RFC 9051 7.5.2 (the example of 8, with its domains).
        assert_eq!(
            String::from_utf8(envelope.to_wire(NameEncoding::ModifiedUtf7)).unwrap(),
            "(\"Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\" \"IMAP4rev2 WG mtg summary and minutes\" \
             ((\"Terry Gray\" NIL \"gray\" \"cac.washington.example\")) \
             ((\"Terry Gray\" NIL \"gray\" \"cac.washington.example\")) \
             ((\"Terry Gray\" NIL \"gray\" \"cac.washington.example\")) \
             ((NIL NIL \"imap\" \"cac.washington.example\")) \
             ((NIL NIL \"minutes\" \"CNRI.Reston.VA.example\")(\"John Klensin\" NIL \"KLENSIN\" \"MIT.EXAMPLE\")) \
             NIL NIL \"<B27397-0100000@cac.washington.example>\")"
        );
    }

    #[test]
    fn groups_routes_and_oddities() {
        let list = parse_address_list("Friends: a@x.example, \"B (b)\" <b@y.example>; c@z.example (comment)");
        assert_eq!(
            list,
            vec![
                Address { mailbox: Some("Friends".into()), ..Address::default() },
                Address { mailbox: Some("a".into()), host: Some("x.example".into()), ..Address::default() },
                Address {
                    name: Some("B (b)".into()),
                    mailbox: Some("b".into()),
                    host: Some("y.example".into()),
                    route: None
                },
                Address::default(),
                Address { mailbox: Some("c".into()), host: Some("z.example".into()), ..Address::default() },
            ]
        );
        let routed = parse_address_list("<@relay.example,@r2.example:joe@x.example>");
        assert_eq!(routed[0].route.as_deref(), Some("@relay.example,@r2.example"));
        assert_eq!(routed[0].mailbox.as_deref(), Some("joe"));
        assert_eq!(parse_address_list("undisclosed-recipients:;").len(), 2);
        assert_eq!(parse_address_list("").len(), 0);
        assert_eq!(parse_address_list("nodomain")[0].host.as_deref(), Some(""));
        // Nothing panics on junk.
        for junk in ["<", ">", "<<>>", ":;:;", "\"unterminated", "(unterminated", "@", "a@", "@b", ",,,"] {
            let _ = parse_address_list(junk);
        }
        let empty = Envelope::from_message(b"no header at all");
        assert_eq!(
            String::from_utf8(empty.to_wire(NameEncoding::Utf8)).unwrap(),
            "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
        );
    }
}
