//! Multi-line responses (RFC 1939 3): lines end in CRLF, a line that starts with the
//! termination octet `.` is byte-stuffed with a second `.`, and `.` CRLF ends the response.

/// Writes `body` as the lines of a multi-line response, stuffed and terminated. Line ends
/// are normalised to CRLF; a last line without one gets it.
pub fn write_stuffed(body: &[u8], out: &mut Vec<u8>) {
    out.reserve(body.len() + body.len() / 64 + 3);
    let mut rest = body;
    while !rest.is_empty() {
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(nl) => (&rest[..nl], &rest[nl + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
        rest = next;
    }
    out.extend_from_slice(b".\r\n");
}

/// Writes each item as one line of a multi-line response (listings, CAPA).
pub fn write_lines<I, S>(lines: I, out: &mut Vec<u8>)
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    for line in lines {
        let line = line.as_ref();
        if line.starts_with('.') {
            out.push(b'.');
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
}

/// RFC 1939 7 TOP: the header, the blank line after it, and the first `lines` lines of
/// the body (the whole body when it has fewer).
pub fn top(message: &[u8], lines: u32) -> &[u8] {
    let body_start = crate::headers::body_start(message);
    let mut end = body_start;
    for _ in 0..lines {
        if end >= message.len() {
            break;
        }
        end = match message[end..].iter().position(|&b| b == b'\n') {
            Some(nl) => end + nl + 1,
            None => message.len(),
        };
    }
    &message[..end]
}

/// Client side: reassembles a multi-line response from its lines.
#[derive(Debug, Default)]
pub struct Unstuffer {
    lines: Vec<Vec<u8>>,
}

impl Unstuffer {
    /// Takes one line without its CRLF; returns true at the terminating `.`.
    pub fn push_line(&mut self, line: &[u8]) -> bool {
        if line == b"." {
            return true;
        }
        let line = if line.first() == Some(&b'.') { &line[1..] } else { line };
        self.lines.push(line.to_vec());
        false
    }

    /// The lines received, unstuffed.
    pub fn into_lines(self) -> Vec<Vec<u8>> {
        self.lines
    }
}

/// Joins unstuffed lines back into a message with CRLF line ends.
pub fn join_lines(lines: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines.iter().map(|l| l.len() + 2).sum());
    for line in lines {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuffed(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_stuffed(body, &mut out);
        out
    }

    #[test]
    fn stuffs_leading_dots_and_terminates() {
        assert_eq!(stuffed(b"a\r\n.b\r\n..c\r\n.\r\n"), b"a\r\n..b\r\n...c\r\n..\r\n.\r\n");
        assert_eq!(stuffed(b""), b".\r\n");
        // A last line without CRLF gets one; bare LF becomes CRLF.
        assert_eq!(stuffed(b"a\nb"), b"a\r\nb\r\n.\r\n");
    }

    #[test]
    fn unstuffing_inverts_stuffing() {
        let body = b"Subject: x\r\n\r\n.\r\n..two\r\nplain\r\n";
        let wire = stuffed(body);
        let mut unstuffer = Unstuffer::default();
        let mut done = false;
        for line in wire.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            assert!(!done);
            done = unstuffer.push_line(line.strip_suffix(b"\r").unwrap());
        }
        assert!(done);
        assert_eq!(join_lines(&unstuffer.into_lines()), body);
    }

    #[test]
    fn top_takes_header_and_n_body_lines() {
        let msg = b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3\r\n";
        assert_eq!(top(msg, 0), b"A: 1\r\nB: 2\r\n\r\n");
        assert_eq!(top(msg, 2), b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\n");
        assert_eq!(top(msg, 10), msg);
        assert_eq!(top(b"A: 1\r\n", 3), b"A: 1\r\n");
        assert_eq!(top(b"A: 1\r\n\r\nno newline", 1), b"A: 1\r\n\r\nno newline");
    }

    #[test]
    fn listing_lines() {
        let mut out = Vec::new();
        write_lines(["1 120", "2 200"], &mut out);
        assert_eq!(out, b"1 120\r\n2 200\r\n.\r\n");
    }
}
