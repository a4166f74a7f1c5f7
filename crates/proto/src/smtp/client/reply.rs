//! Client side: reading the server's replies (RFC 5321 4.2) from a byte stream. The one
//! reply reader of the crate: the delivery client, the Messenger federation client, ODMR,
//! RCRAM-MD5 and TRACK all use it.
//!
//! Every reply keeps its exact octets ([`ServerReply::wire`]). A [`ReplyParser::strict`]
//! reader also guarantees what a reply passed on unchanged needs (a relayed CERT reply goes
//! back to our client as the home server sent it, SPEC 8.1): every line ends in CRLF, no
//! other CR or LF, no NUL, UTF-8, a 2xx-5xx code that is the same on every line; so it is a
//! well-formed reply and can never smuggle a line of its own. The default reader, for
//! delivery to any server, is lenient where RFC 5321 4.2 practice is: a bare LF ends a line,
//! text that is not UTF-8 is shown lossily, 1xx codes are read.

use std::borrow::Cow;

use crate::smtp::reply::{EnhancedCode, Reply};

/// Longest reply line we keep reading, without its line end (RFC 5321 4.5.3.1.5 says 512;
/// be lenient: a peer's BOOK lines may be longer).
pub const MAX_LINE: usize = 4096;
/// Most lines in one reply by default (EHLO with many extensions stays far below).
pub const MAX_LINES: usize = 256;

/// Bounds of one reply: an ENTITIES, BOOK or TRACK answer is far larger than an EHLO or
/// CERT reply, so each command may set its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyLimits {
    /// Most lines.
    pub max_lines: usize,
    /// Most octets, line ends included.
    pub max_bytes: usize,
}

impl ReplyLimits {
    pub const fn new(max_lines: usize, max_bytes: usize) -> ReplyLimits {
        ReplyLimits { max_lines, max_bytes }
    }

    /// `max_lines` lines of any length up to [`MAX_LINE`].
    pub const fn lines(max_lines: usize) -> ReplyLimits {
        ReplyLimits { max_lines, max_bytes: max_lines.saturating_mul(MAX_LINE + 2) }
    }
}

impl Default for ReplyLimits {
    fn default() -> ReplyLimits {
        ReplyLimits::lines(MAX_LINES)
    }
}

/// A reply as read from the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReply {
    pub code: u16,
    /// The enhanced status code of the first line, if the server sent one (RFC 2034).
    pub enhanced: Option<EnhancedCode>,
    /// Text of each line without the code (and without the enhanced code), as EHLO and the
    /// error texts are read. Data lines (CERT, ENTITIES, BOOK) are [`ServerReply::texts`].
    pub lines: Vec<String>,
    /// The reply's octets as received, line ends included.
    pub wire: Vec<u8>,
}

impl ServerReply {
    /// As a [`Reply`]: the lines joined with '\n'.
    pub fn to_reply(&self) -> Reply {
        Reply { code: self.code, enhanced: self.enhanced, text: Cow::Owned(self.lines.join("\n")), from_peer: true }
    }

    /// 2xx and 3xx.
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// The text of each line after `ddd-` / `ddd `, enhanced codes left in: the lines of a
    /// data answer exactly as sent (no part of them is taken for an enhanced code).
    pub fn texts(&self) -> Vec<String> {
        self.wire
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                String::from_utf8_lossy(line.get(4..).unwrap_or(&[])).into_owned()
            })
            .collect()
    }

    /// The EHLO keywords (every line after the first, first word upper-cased).
    pub fn ehlo_keywords(&self) -> Vec<String> {
        self.lines.iter().skip(1).filter_map(|l| l.split(' ').next()).map(str::to_ascii_uppercase).collect()
    }

    /// The text of the last line (enhanced code left in), for logs.
    pub fn last_line(&self) -> String {
        self.texts().pop().unwrap_or_default()
    }

    /// The reply on one line: the code and every line's text joined by ` / `, for logs and
    /// errors (never holds a line break).
    pub fn one_line(&self) -> String {
        let text: Vec<String> = self.texts().iter().map(|t| t.replace(char::is_control, " ")).collect();
        format!("{} {}", self.code, text.join(" / "))
    }
}

/// The peer broke the reply syntax or a limit: not worth talking to (RFC 5321 4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplySyntaxError(pub String);

impl std::fmt::Display for ReplySyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ReplySyntaxError {}

/// Incremental reader of replies; input may arrive in any split.
#[derive(Debug)]
pub struct ReplyParser {
    buffer: Vec<u8>,
    lines: Vec<String>,
    /// The octets of the lines of the reply in progress.
    wire: Vec<u8>,
    code: Option<u16>,
    enhanced: Option<EnhancedCode>,
    limits: ReplyLimits,
    strict: bool,
}

impl Default for ReplyParser {
    fn default() -> ReplyParser {
        ReplyParser::lenient(ReplyLimits::default())
    }
}

impl ReplyParser {
    /// The lenient reader (see the module doc), for delivery to any server.
    pub fn lenient(limits: ReplyLimits) -> ReplyParser {
        ReplyParser {
            buffer: Vec::new(),
            lines: Vec::new(),
            wire: Vec::new(),
            code: None,
            enhanced: None,
            limits,
            strict: false,
        }
    }

    /// The strict reader (see the module doc): every reply it gives may be passed on
    /// unchanged.
    pub fn strict(limits: ReplyLimits) -> ReplyParser {
        ReplyParser { strict: true, ..ReplyParser::lenient(limits) }
    }

    /// A lenient reader that takes replies of up to `max_lines` lines (the default is 256), for
    /// answers that are lists, such as TRACK's (SPEC 8.3).
    pub fn with_max_lines(max_lines: usize) -> ReplyParser {
        ReplyParser::lenient(ReplyLimits::lines(max_lines))
    }

    pub fn is_strict(&self) -> bool {
        self.strict
    }

    pub fn limits(&self) -> ReplyLimits {
        self.limits
    }

    /// Sets the limits from the reply in progress on (a connection reads small and large
    /// replies).
    pub fn set_limits(&mut self, limits: ReplyLimits) {
        self.limits = limits;
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes received but not yet part of a complete reply.
    pub fn pending(&self) -> usize {
        self.buffer.len() + self.wire.len()
    }

    /// Takes out every byte received but not yet part of a complete reply, exactly as
    /// received; the reader starts afresh (same limits and strictness).
    pub fn take_unread(&mut self) -> Vec<u8> {
        let mut unread = std::mem::take(&mut self.wire);
        unread.append(&mut self.buffer);
        self.clear();
        unread
    }

    /// Forgets everything read (RFC 3207 4.2 after STARTTLS); keeps limits and strictness.
    pub fn clear(&mut self) {
        *self = ReplyParser { limits: self.limits, strict: self.strict, ..ReplyParser::default() };
    }

    /// The next complete reply, if one is buffered. After an error the connection is not
    /// worth reading further.
    pub fn next_reply(&mut self) -> Result<Option<ServerReply>, ReplySyntaxError> {
        loop {
            let Some(newline) = self.buffer.iter().position(|&b| b == b'\n') else {
                // A CR at the end may start the line's CRLF: it is not part of the line.
                let partial = self.buffer.strip_suffix(b"\r").unwrap_or(&self.buffer);
                if partial.len() > MAX_LINE {
                    return Err(ReplySyntaxError("reply line too long".into()));
                }
                if self.wire.len() + partial.len() > self.limits.max_bytes {
                    return Err(ReplySyntaxError("reply too large".into()));
                }
                return Ok(None);
            };
            let raw: Vec<u8> = self.buffer.drain(..=newline).collect();
            let line = if self.strict {
                // RFC 5321 4.2 and 2.3.8: every line ends in CRLF; a bare LF, or a CR
                // anywhere else, is not a line we pass on.
                raw.strip_suffix(b"\r\n").ok_or_else(|| ReplySyntaxError("reply line not ended by CRLF".into()))?
            } else {
                let line = raw.strip_suffix(b"\n").unwrap_or(&raw);
                line.strip_suffix(b"\r").unwrap_or(line)
            };
            if line.len() > MAX_LINE {
                return Err(ReplySyntaxError("reply line too long".into()));
            }
            let text = if self.strict {
                if line.iter().any(|&b| b == b'\r' || b == 0) {
                    return Err(ReplySyntaxError("control character in a reply line".into()));
                }
                Cow::Borrowed(
                    std::str::from_utf8(line).map_err(|_| ReplySyntaxError("reply line is not UTF-8".into()))?,
                )
            } else {
                String::from_utf8_lossy(line)
            };
            // RFC 5321 4.2: Reply-line = *( Reply-code "-" [ textstring ] CRLF )
            //                            Reply-code [ SP textstring ] CRLF
            // 1xx is read leniently only: no verb of ours has a 1xx reply to pass on.
            let lowest = if self.strict { 200 } else { 100 };
            let code = text
                .get(..3)
                .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|c| c.parse::<u16>().ok())
                .filter(|c| (lowest..600).contains(c))
                .ok_or_else(|| ReplySyntaxError(format!("malformed reply line: {}", clip(&text))))?;
            if self.code.is_some_and(|c| c != code) {
                return Err(ReplySyntaxError("reply code changed within a reply".into()));
            }
            self.code = Some(code);
            let (last, rest) = match text.as_bytes().get(3) {
                None => (true, ""),
                Some(b' ') => (true, text.get(4..).unwrap_or("")),
                Some(b'-') => (false, text.get(4..).unwrap_or("")),
                Some(_) => return Err(ReplySyntaxError(format!("malformed reply line: {}", clip(&text)))),
            };
            let (enhanced, rest) = split_enhanced(code, rest);
            if self.lines.is_empty() {
                self.enhanced = enhanced;
            }
            self.lines.push(rest.to_string());
            self.wire.extend_from_slice(&raw);
            if self.lines.len() > self.limits.max_lines {
                return Err(ReplySyntaxError("reply has too many lines".into()));
            }
            if self.wire.len() > self.limits.max_bytes {
                return Err(ReplySyntaxError("reply too large".into()));
            }
            if last {
                let reply = ServerReply {
                    code,
                    enhanced: self.enhanced.take(),
                    lines: std::mem::take(&mut self.lines),
                    wire: std::mem::take(&mut self.wire),
                };
                self.code = None;
                return Ok(Some(reply));
            }
        }
    }
}

fn clip(text: &str) -> String {
    text.chars().take(80).filter(|c| !c.is_control()).collect()
}

/// RFC 2034 4: `status-code SP text`, where the class matches the reply code's first digit.
fn split_enhanced(code: u16, text: &str) -> (Option<EnhancedCode>, &str) {
    let (word, rest) = match text.split_once(' ') {
        Some((w, r)) => (w, r),
        None => (text, ""),
    };
    let mut parts = word.split('.');
    let parsed = (|| {
        let class: u8 = parts.next()?.parse().ok()?;
        let subject: u16 = parts.next()?.parse().ok()?;
        let detail: u16 = parts.next()?.parse().ok()?;
        if parts.next().is_some() || u16::from(class) != code / 100 {
            return None;
        }
        // RFC 3463 3: subject and detail have 1 to 3 digits.
        if subject > 999 || detail > 999 {
            return None;
        }
        Some(EnhancedCode(class, subject, detail))
    })();
    match parsed {
        Some(e) => (Some(e), rest),
        None => (None, text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Vec<ServerReply> {
        let mut p = ReplyParser::default();
        p.feed(input);
        let mut out = Vec::new();
        while let Some(r) = p.next_reply().unwrap() {
            out.push(r);
        }
        out
    }

    #[test]
    fn rfc5321_multiline_ehlo() {
        // RFC 5321 4.2.1 / appendix D.1 shape.
        let r = parse_all(b"250-foo.com greets bar.com\r\n250-8BITMIME\r\n250-SIZE\r\n250-DSN\r\n250 HELP\r\n");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].code, 250);
        assert_eq!(r[0].lines, ["foo.com greets bar.com", "8BITMIME", "SIZE", "DSN", "HELP"]);
    }

    #[test]
    fn enhanced_codes_rfc2034() {
        let r = parse_all(b"550 5.1.1 Mailbox \"nosuchuser\" does not exist\r\n");
        assert_eq!(r[0].enhanced, Some(EnhancedCode(5, 1, 1)));
        assert_eq!(r[0].lines[0], "Mailbox \"nosuchuser\" does not exist");
        // The class must match the reply code.
        let r = parse_all(b"250 5.1.1 odd\r\n");
        assert_eq!(r[0].enhanced, None);
        assert_eq!(r[0].to_reply().text, "5.1.1 odd");
    }

    #[test]
    fn split_anywhere_and_bare_code() {
        let mut p = ReplyParser::default();
        p.feed(b"22");
        assert_eq!(p.next_reply().unwrap(), None);
        p.feed(b"0\r\n354 go\r");
        assert_eq!(p.next_reply().unwrap().unwrap().code, 220);
        assert_eq!(p.next_reply().unwrap(), None);
        p.feed(b"\n");
        assert_eq!(p.next_reply().unwrap().unwrap().lines, ["go"]);
    }

    #[test]
    fn the_line_count_limit_is_the_parsers() {
        let mut long = "250-x\r\n".repeat(300);
        long.push_str("250 end\r\n");
        let mut p = ReplyParser::default();
        p.feed(long.as_bytes());
        assert!(p.next_reply().is_err());
        let mut p = ReplyParser::with_max_lines(1000);
        p.feed(long.as_bytes());
        assert_eq!(p.next_reply().unwrap().unwrap().lines.len(), 301);
        p.clear();
        p.feed(long.as_bytes());
        assert!(p.next_reply().unwrap().is_some());
    }

    #[test]
    fn garbage_is_an_error() {
        let mut p = ReplyParser::default();
        p.feed(b"hello\r\n");
        assert!(p.next_reply().is_err());
        let mut p = ReplyParser::default();
        p.feed(b"250-a\r\n251 b\r\n");
        assert!(p.next_reply().is_err());
        let mut p = ReplyParser::default();
        p.feed(&vec![b'2'; MAX_LINE + 10]);
        assert!(p.next_reply().is_err());
    }

    #[test]
    fn the_line_limit_does_not_depend_on_the_split() {
        // Caught by the smtp_reply fuzz target's split check: a line of exactly MAX_LINE
        // octets whose CR arrived without its LF was refused, the same bytes at once were not.
        let mut line = b"250 ".to_vec();
        line.resize(MAX_LINE, b'x');
        let mut p = ReplyParser::default();
        p.feed(&line);
        p.feed(b"\r");
        assert_eq!(p.next_reply(), Ok(None));
        p.feed(b"\n");
        assert_eq!(p.next_reply().unwrap().unwrap().lines[0].len(), MAX_LINE - 4);
        // One octet more is too long however it arrives.
        line.push(b'x');
        let mut p = ReplyParser::default();
        p.feed(&line);
        p.feed(b"\r");
        assert!(p.next_reply().is_err());
        let mut p = ReplyParser::default();
        p.feed(&[&line[..], b"\r\n"].concat());
        assert!(p.next_reply().is_err());
    }

    // ---- the strict reader (was the messenger's RawReplyParser) ----

    fn strict() -> ReplyParser {
        ReplyParser::strict(ReplyLimits::new(100, 10_000))
    }

    #[test]
    fn keeps_the_exact_octets_across_splits() {
        let wire =
            b"250-abc@x.test\r\n250------BEGIN CERTIFICATE-----\r\n250-QUJD\r\n250 -----END CERTIFICATE-----\r\n";
        for mut parser in [strict(), ReplyParser::default()] {
            for chunk in wire.chunks(5) {
                parser.feed(chunk);
            }
            parser.feed(b"220 next\r\n");
            let reply = parser.next_reply().unwrap().unwrap();
            assert_eq!(reply.code, 250);
            assert_eq!(reply.wire, wire.to_vec());
            assert_eq!(reply.texts()[1], "-----BEGIN CERTIFICATE-----");
            assert_eq!(parser.next_reply().unwrap().unwrap().lines, vec!["next".to_string()]);
            assert_eq!(parser.next_reply().unwrap(), None);
        }
    }

    #[test]
    fn texts_keep_what_lines_read_as_an_enhanced_code() {
        let mut parser = strict();
        parser.feed(b"250-2.0.0 first\r\n250 2.1.5 data\r\n");
        let reply = parser.next_reply().unwrap().unwrap();
        assert_eq!(reply.enhanced, Some(EnhancedCode(2, 0, 0)));
        assert_eq!(reply.lines, ["first", "data"]);
        assert_eq!(reply.texts(), ["2.0.0 first", "2.1.5 data"]);
        assert_eq!(reply.last_line(), "2.1.5 data");
        assert_eq!(reply.one_line(), "250 2.0.0 first / 2.1.5 data");
    }

    #[test]
    fn strict_refuses_what_could_smuggle_a_line() {
        for bad in [
            &b"250 ok\n"[..],
            b"250 a\rb\r\n",
            b"250-a\r\n550 b\r\n",
            b"25 ok\r\n",
            b"150 ok\r\n",
            b"250xok\r\n",
            b"250 \x00\r\n",
            b"250 \xff\r\n",
        ] {
            let mut parser = strict();
            parser.feed(bad);
            assert!(parser.next_reply().is_err(), "{bad:?}");
        }
        // The lenient reader takes the ones a delivery must live with.
        for tolerated in [&b"250 ok\n"[..], b"150 ok\r\n", b"250 \xff\r\n"] {
            let mut parser = ReplyParser::default();
            parser.feed(tolerated);
            assert!(parser.next_reply().unwrap().is_some(), "{tolerated:?}");
        }
    }

    #[test]
    fn byte_and_line_limits_hold_and_can_change_per_reply() {
        let mut parser = ReplyParser::strict(ReplyLimits::new(2, 10_000));
        parser.feed(b"250-a\r\n250-b\r\n250 c\r\n");
        assert!(parser.next_reply().is_err());
        let mut parser = ReplyParser::strict(ReplyLimits::new(100, 20));
        parser.feed(b"250-0123456789\r\n250 x\r\n");
        assert_eq!(parser.next_reply().unwrap_err().0, "reply too large");
        // Refused as soon as the partial line passes the limit, however it is split.
        let mut parser = ReplyParser::strict(ReplyLimits::new(100, 20));
        parser.feed(b"250-0123456789\r\n250 abcde");
        assert!(parser.next_reply().is_err());
        let mut parser = strict();
        parser.feed(&vec![b'2'; MAX_LINE + 1]);
        assert!(parser.next_reply().is_err());
        let mut parser = strict();
        parser.feed(b"250 ok");
        assert_eq!(parser.next_reply().unwrap(), None);
        assert_eq!(parser.pending(), 6);
        // A large answer after a small one.
        let mut parser = ReplyParser::strict(ReplyLimits::new(2, 1000));
        parser.feed(b"250 small\r\n250-1\r\n250-2\r\n250 3\r\n");
        assert!(parser.next_reply().unwrap().is_some());
        parser.set_limits(ReplyLimits::new(20_000, 4 << 20));
        assert_eq!(parser.next_reply().unwrap().unwrap().lines.len(), 3);
    }

    #[test]
    fn unread_bytes_come_back_exactly() {
        let mut parser = strict();
        parser.feed(b"250 ok\r\n220-half\r\n220 ");
        assert!(parser.next_reply().unwrap().is_some());
        assert_eq!(parser.next_reply().unwrap(), None);
        assert_eq!(parser.take_unread(), b"220-half\r\n220 ");
        assert_eq!(parser.pending(), 0);
        assert!(parser.is_strict());
    }

    #[test]
    fn ehlo_keywords() {
        let mut parser = strict();
        parser.feed(b"250-mx.test\r\n250-starttls\r\n250-AUTH CRAM-MD5\r\n250 CERT\r\n");
        let reply = parser.next_reply().unwrap().unwrap();
        assert_eq!(reply.ehlo_keywords(), vec!["STARTTLS", "AUTH", "CERT"]);
    }
}
