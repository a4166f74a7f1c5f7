//! Keeping a message body's memory small while it arrives (DATA and BDAT alike).
//!
//! The header section stays in memory: the trace fields, the loop check and the
//! Authentication-Results clean-up work on it. Once a body outgrows
//! [`SessionConfig::memory_body_limit`](super::SessionConfig), everything after the header
//! section goes to the driver in chunks ([`Event::BodyChunk`](super::Event)), which keeps
//! them in a spool file; [`Envelope::spilled`](super::Envelope) says how many octets it
//! holds. A small message never leaves memory.

use crate::headers;
use crate::smtp::reply::Reply;

/// The driver gets spilled content in pieces of at least this size (the last may be less).
pub const SPILL_CHUNK: usize = 64 * 1024;

/// The longest header section accepted. Postfix keeps 100 KB of header (header_size_limit)
/// and treats the rest as body; refusing is safer than handling a header we could not see
/// whole (a forged Authentication-Results past the limit would survive).
pub const MAX_HEADER_SECTION: usize = 256 * 1024;

/// The spill state of one message body.
#[derive(Debug, Default)]
pub(super) struct Spill {
    /// Length of the header section (up to and including the blank line), once known.
    head_len: Option<usize>,
    /// Octets handed to the driver so far.
    pub(super) spilled: u64,
    /// The reply owed at the end of the data: the body is being read and dropped.
    pub(super) refused: Option<Reply>,
}

impl Spill {
    /// Called after `body` grew (and once more with `end` when the data is complete).
    /// Returns the content to hand to the driver, taken out of `body`, if any is due.
    pub(super) fn check(&mut self, body: &mut Vec<u8>, memory_limit: usize, end: bool) -> Option<Vec<u8>> {
        if self.refused.is_some() {
            body.clear();
            return None;
        }
        if self.spilled == 0 && body.len() <= memory_limit {
            return None;
        }
        let head_len = match self.head_len {
            Some(n) => n,
            None => match header_section_len(body, end) {
                Some(n) => *self.head_len.insert(n),
                // Still inside the header section: it is too long once it passes the limit.
                None if body.len() > MAX_HEADER_SECTION => MAX_HEADER_SECTION + 1,
                None => return None,
            },
        };
        if head_len > MAX_HEADER_SECTION {
            self.refuse(Reply::too_big(format!("Header section exceeds {MAX_HEADER_SECTION} octets")));
            body.clear();
            return None;
        }
        let tail = body.len().saturating_sub(head_len);
        if tail == 0 || (tail < SPILL_CHUNK && !end) {
            return None;
        }
        let chunk = body.split_off(head_len);
        self.spilled += chunk.len() as u64;
        Some(chunk)
    }

    /// Decides the reply for this body now; the rest of it is read and dropped. The first
    /// reason given wins.
    pub(super) fn refuse(&mut self, reply: Reply) {
        self.refused.get_or_insert(reply);
    }

    /// Offset in the spool of the next chunk [`Spill::check`] returns.
    pub(super) fn offset(&self) -> u64 {
        self.spilled
    }
}

/// The length of the header section at the start of `body`, blank line included, once it
/// is certain: the line that ends it (blank, or not a header field) is complete, or the
/// data has ended.
fn header_section_len(body: &[u8], end: bool) -> Option<usize> {
    let header_end = headers::header_end(body);
    let rest = body.get(header_end..).unwrap_or(&[]);
    // The line at `header_end` could still become a field (or a continuation) while it
    // is incomplete; the decoder's lines always end in CRLF.
    if !end && !rest.contains(&b'\n') {
        return None;
    }
    Some(headers::body_start(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_bodies_stay_in_memory() {
        let mut spill = Spill::default();
        let mut body = b"Subject: x\r\n\r\nhello\r\n".to_vec();
        assert_eq!(spill.check(&mut body, 1024, false), None);
        assert_eq!(spill.check(&mut body, 1024, true), None);
        assert_eq!(spill.spilled, 0);
    }

    #[test]
    fn large_bodies_spill_after_the_header_section() {
        let mut spill = Spill::default();
        let head = b"Subject: x\r\nFrom: a@b\r\n\r\n".to_vec();
        let mut body = head.clone();
        body.extend(std::iter::repeat_n(b'a', SPILL_CHUNK + 10));
        let chunk = spill.check(&mut body, 1024, false).expect("spills");
        assert_eq!(body, head);
        assert_eq!(chunk.len(), SPILL_CHUNK + 10);
        body.extend_from_slice(b"tail\r\n");
        // Less than a chunk: kept until the end.
        assert_eq!(spill.check(&mut body, 1024, false), None);
        assert_eq!(spill.offset(), (SPILL_CHUNK + 10) as u64);
        assert_eq!(spill.check(&mut body, 1024, true).as_deref(), Some(&b"tail\r\n"[..]));
        assert_eq!(body, head);
        assert_eq!(spill.spilled, (SPILL_CHUNK + 16) as u64);
    }

    #[test]
    fn an_incomplete_last_line_may_still_be_a_field() {
        // "X-Long" could become "X-Long: ..."; nothing is spilled until the line is whole.
        let mut body = b"Subject: x\r\nX-Long".to_vec();
        assert_eq!(header_section_len(&body, false), None);
        body.extend_from_slice(b": y\r\n");
        assert_eq!(header_section_len(&body, false), None);
        body.extend_from_slice(b"\r\nbody");
        assert_eq!(header_section_len(&body, false), Some(25));
        // A line that is no field ends the header section too.
        assert_eq!(header_section_len(b"Subject: x\r\nnot a field\r\n", false), Some(12));
    }

    #[test]
    fn an_endless_header_section_is_refused() {
        let mut spill = Spill::default();
        let mut body = Vec::new();
        while body.len() <= MAX_HEADER_SECTION {
            body.extend_from_slice(b"X-Filler: 0123456789\r\n");
        }
        assert_eq!(spill.check(&mut body, 1024, false), None);
        assert!(body.is_empty());
        assert_eq!(spill.refused.as_ref().map(|r| r.code), Some(552));
        body.extend_from_slice(b"more\r\n");
        assert_eq!(spill.check(&mut body, 1024, true), None);
        assert!(body.is_empty());
    }
}
