//! Client side: reading the server's replies (RFC 5321 4.2) from a byte stream.

use std::borrow::Cow;

use crate::smtp::reply::{EnhancedCode, Reply};

/// Longest reply line we keep reading (RFC 5321 4.5.3.1.5 says 512; be lenient).
const MAX_LINE: usize = 4096;
/// Most lines in one reply (EHLO with many extensions stays far below).
const MAX_LINES: usize = 256;

/// A reply as read from the wire, with every line (EHLO needs them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReply {
    pub code: u16,
    /// The enhanced status code of the first line, if the server sent one (RFC 2034).
    pub enhanced: Option<EnhancedCode>,
    /// Text of each line without the code (and without the enhanced code).
    pub lines: Vec<String>,
}

impl ServerReply {
    /// As a [`Reply`]: the lines joined with '\n'.
    pub fn to_reply(&self) -> Reply {
        Reply { code: self.code, enhanced: self.enhanced, text: Cow::Owned(self.lines.join("\n")), from_peer: true }
    }
}

/// The peer broke the reply syntax: not worth talking to (RFC 5321 4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplySyntaxError(pub String);

/// Incremental reader of replies; input may arrive in any split.
#[derive(Debug)]
pub struct ReplyParser {
    buffer: Vec<u8>,
    lines: Vec<String>,
    code: Option<u16>,
    enhanced: Option<EnhancedCode>,
    max_lines: usize,
}

impl Default for ReplyParser {
    fn default() -> ReplyParser {
        ReplyParser::with_max_lines(MAX_LINES)
    }
}

impl ReplyParser {
    /// A reader that takes replies of up to `max_lines` lines (the default is 256), for
    /// answers that are lists, such as TRACK's (SPEC 8.3).
    pub fn with_max_lines(max_lines: usize) -> ReplyParser {
        ReplyParser { buffer: Vec::new(), lines: Vec::new(), code: None, enhanced: None, max_lines }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes received but not yet part of a complete reply.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }

    pub fn clear(&mut self) {
        *self = ReplyParser::with_max_lines(self.max_lines);
    }

    /// The next complete reply, if one is buffered.
    pub fn next_reply(&mut self) -> Result<Option<ServerReply>, ReplySyntaxError> {
        loop {
            let Some(newline) = self.buffer.iter().position(|&b| b == b'\n') else {
                // A CR at the end may start the line's CRLF: it is not part of the line.
                let partial = self.buffer.strip_suffix(b"\r").unwrap_or(&self.buffer);
                if partial.len() > MAX_LINE {
                    return Err(ReplySyntaxError("reply line too long".into()));
                }
                return Ok(None);
            };
            let raw: Vec<u8> = self.buffer.drain(..=newline).collect();
            let line = raw.strip_suffix(b"\n").unwrap_or(&raw);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() > MAX_LINE {
                return Err(ReplySyntaxError("reply line too long".into()));
            }
            let text = String::from_utf8_lossy(line);
            // RFC 5321 4.2: Reply-line = *( Reply-code "-" [ textstring ] CRLF )
            //                            Reply-code [ SP textstring ] CRLF
            let code = text
                .get(..3)
                .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|c| c.parse::<u16>().ok())
                .filter(|c| (200..600).contains(c) || (100..200).contains(c))
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
            if self.lines.len() > self.max_lines {
                return Err(ReplySyntaxError("reply has too many lines".into()));
            }
            if last {
                let reply =
                    ServerReply { code, enhanced: self.enhanced.take(), lines: std::mem::take(&mut self.lines) };
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
}
