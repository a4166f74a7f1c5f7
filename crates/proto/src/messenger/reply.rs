//! The federation client's reader of a peer's replies (RFC 5321 4.2, SPEC 8).
//!
//! Unlike the delivery client's reader it keeps each reply's exact octets: a relayed CERT
//! reply goes back to our client unchanged (SPEC 8.1), so what is passed on must be
//! exactly what the home server sent, and must be a well-formed reply, never anything
//! that could smuggle a line of its own (a bare CR or LF, a changed code, a NUL).

/// Longest reply line, CRLF included (RFC 5321 4.5.3.1.5 says 512; a peer's BOOK lines may
/// be longer, so be lenient).
pub const MAX_LINE: usize = 2048;

/// A reply as read from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawReply {
    pub code: u16,
    /// The text of each line after `ddd-` / `ddd ` (enhanced codes left in).
    pub lines: Vec<String>,
    /// The reply's octets as received, every line CRLF-terminated.
    pub wire: Vec<u8>,
}

impl RawReply {
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// The EHLO keywords (every line after the first, first word upper-cased).
    pub fn ehlo_keywords(&self) -> Vec<String> {
        self.lines.iter().skip(1).filter_map(|l| l.split(' ').next()).map(str::to_ascii_uppercase).collect()
    }

    /// The text of the last line, for logs.
    pub fn last_line(&self) -> &str {
        self.lines.last().map(String::as_str).unwrap_or("")
    }
}

/// The peer broke the reply syntax or a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyError(pub String);

impl std::fmt::Display for ReplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Incremental reader; input may arrive in any split.
#[derive(Debug)]
pub struct RawReplyParser {
    buffer: Vec<u8>,
    code: Option<u16>,
    lines: Vec<String>,
    wire: Vec<u8>,
    max_lines: usize,
    max_bytes: usize,
}

impl RawReplyParser {
    /// `max_lines` and `max_bytes` bound one reply (an ENTITIES answer is larger than a
    /// CERT).
    pub fn new(max_lines: usize, max_bytes: usize) -> RawReplyParser {
        RawReplyParser { buffer: Vec::new(), code: None, lines: Vec::new(), wire: Vec::new(), max_lines, max_bytes }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes received that are not part of a complete reply yet.
    pub fn pending(&self) -> usize {
        self.buffer.len() + self.wire.len()
    }

    /// Sets the limits for the next reply (a connection reads small and large replies).
    pub fn set_limits(&mut self, max_lines: usize, max_bytes: usize) {
        self.max_lines = max_lines;
        self.max_bytes = max_bytes;
    }

    /// The next complete reply, if one is buffered. After an error the connection is not
    /// worth reading further.
    pub fn next_reply(&mut self) -> Result<Option<RawReply>, ReplyError> {
        loop {
            let Some(newline) = self.buffer.iter().position(|&b| b == b'\n') else {
                if self.buffer.len() > MAX_LINE {
                    return Err(ReplyError("reply line too long".into()));
                }
                return Ok(None);
            };
            if newline + 1 > MAX_LINE {
                return Err(ReplyError("reply line too long".into()));
            }
            let raw: Vec<u8> = self.buffer.drain(..=newline).collect();
            // RFC 5321 4.2 and 2.3.8: every line ends in CRLF; a bare LF, or a CR anywhere
            // else, is not a line we pass on.
            let Some(line) = raw.strip_suffix(b"\r\n") else {
                return Err(ReplyError("reply line not ended by CRLF".into()));
            };
            if line.iter().any(|&b| b == b'\r' || b == 0) {
                return Err(ReplyError("control character in a reply line".into()));
            }
            let text = std::str::from_utf8(line).map_err(|_| ReplyError("reply line is not UTF-8".into()))?;
            let code = text
                .get(..3)
                .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|c| c.parse::<u16>().ok())
                .filter(|c| (200..600).contains(c))
                .ok_or_else(|| ReplyError(format!("malformed reply line: {}", clip(text))))?;
            if self.code.is_some_and(|c| c != code) {
                return Err(ReplyError("reply code changed within a reply".into()));
            }
            let last = match text.as_bytes().get(3) {
                None | Some(b' ') => true,
                Some(b'-') => false,
                Some(_) => return Err(ReplyError(format!("malformed reply line: {}", clip(text)))),
            };
            self.code = Some(code);
            self.lines.push(text.get(4..).unwrap_or("").to_string());
            self.wire.extend_from_slice(&raw);
            if self.lines.len() > self.max_lines || self.wire.len() > self.max_bytes {
                return Err(ReplyError("reply too large".into()));
            }
            if last {
                self.code = None;
                return Ok(Some(RawReply {
                    code,
                    lines: std::mem::take(&mut self.lines),
                    wire: std::mem::take(&mut self.wire),
                }));
            }
        }
    }
}

fn clip(text: &str) -> String {
    text.chars().take(80).filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_exact_octets_across_splits() {
        let wire =
            b"250-abc@x.test\r\n250------BEGIN CERTIFICATE-----\r\n250-QUJD\r\n250 -----END CERTIFICATE-----\r\n";
        let mut parser = RawReplyParser::new(100, 10_000);
        for chunk in wire.chunks(5) {
            parser.feed(chunk);
        }
        parser.feed(b"220 next\r\n");
        let reply = parser.next_reply().unwrap().unwrap();
        assert_eq!(reply.code, 250);
        assert_eq!(reply.wire, wire.to_vec());
        assert_eq!(reply.lines[1], "-----BEGIN CERTIFICATE-----");
        assert_eq!(parser.next_reply().unwrap().unwrap().lines, vec!["next".to_string()]);
        assert_eq!(parser.next_reply().unwrap(), None);
    }

    #[test]
    fn refuses_what_could_smuggle_a_line() {
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
            let mut parser = RawReplyParser::new(100, 10_000);
            parser.feed(bad);
            assert!(parser.next_reply().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn limits_hold() {
        let mut parser = RawReplyParser::new(2, 10_000);
        parser.feed(b"250-a\r\n250-b\r\n250 c\r\n");
        assert!(parser.next_reply().is_err());
        let mut parser = RawReplyParser::new(100, 10_000);
        parser.feed(&vec![b'2'; MAX_LINE + 1]);
        assert!(parser.next_reply().is_err());
        let mut parser = RawReplyParser::new(100, 10_000);
        parser.feed(b"250 ok");
        assert_eq!(parser.next_reply().unwrap(), None);
        assert_eq!(parser.pending(), 6);
    }

    #[test]
    fn ehlo_keywords() {
        let mut parser = RawReplyParser::new(100, 10_000);
        parser.feed(b"250-mx.test\r\n250-starttls\r\n250-AUTH CRAM-MD5\r\n250 CERT\r\n");
        let reply = parser.next_reply().unwrap().unwrap();
        assert_eq!(reply.ehlo_keywords(), vec!["STARTTLS", "AUTH", "CERT"]);
    }
}
