//! The TCP session of the VERIFY listener (SPEC 7.2), with no I/O.
//!
//! The driver feeds received bytes with [`Session::feed`], calls [`Session::poll_event`]
//! until it returns None, answers each [`Event::Verify`] with [`Session::answer`] (in the
//! order the events came: answers fill the oldest unanswered request), and writes
//! [`Session::take_output`]. Replies go out strictly in request order: a malformed line's
//! ERROR waits behind the unanswered requests before it.
//!
//! Lines end at LF; a CR before it is dropped (SPEC 7.2 says CRLF; a bare LF is accepted
//! as most line servers do). A line over [`MAX_LINE`] octets gets `ERROR - line too long`
//! at the point it passes the limit and the rest of it is skipped. A partial line left when
//! the peer closes gets nothing.

use std::collections::VecDeque;

use super::codec::{parse_request, ErrorReply, Reason, Request, Verdict};

/// Longest line, line ending included. A valid request is at most about 360 octets.
pub const MAX_LINE: usize = 1024;
/// Requests handed to the driver and not yet answered; past this the session stops
/// reading lines until answers come, so a pipelining peer cannot queue without bound.
pub const MAX_UNANSWERED: usize = 64;

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Look the key up (SPEC 7.1: valid when one of the address's unexpired keys), log it,
    /// and call [`Session::answer`].
    Verify(Request),
}

/// [`Session::answer`] was called with no request waiting for an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NothingToAnswer;

impl std::fmt::Display for NothingToAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no VERIFY request is waiting for an answer")
    }
}

impl std::error::Error for NothingToAnswer {}

/// One reply in request order.
#[derive(Debug)]
enum Slot {
    Waiting(Request),
    Ready(String),
}

/// One VERIFY connection.
#[derive(Debug, Default)]
pub struct Session {
    input: Vec<u8>,
    /// Inside a line that was already refused as too long: drop up to its LF.
    skipping: bool,
    slots: VecDeque<Slot>,
    unanswered: usize,
    output: Vec<u8>,
    /// ERROR lines queued since the last [`Session::take_errors`], for the VERIFY log.
    errors: Vec<String>,
}

impl Session {
    pub fn new() -> Session {
        Session::default()
    }

    /// Adds received bytes; nothing is parsed until [`Session::poll_event`].
    pub fn feed(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
    }

    /// The next request to answer, after queueing the ERRORs of any malformed lines before
    /// it. None when the input holds no further complete line, or too many requests wait.
    pub fn poll_event(&mut self) -> Option<Event> {
        loop {
            if self.skipping {
                match self.input.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        self.input.drain(..=i);
                        self.skipping = false;
                    }
                    None => {
                        self.input.clear();
                        return None;
                    }
                }
            }
            if self.unanswered >= MAX_UNANSWERED {
                return None;
            }
            let window = &self.input[..self.input.len().min(MAX_LINE)];
            match window.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let line: Vec<u8> = self.input.drain(..=i).collect();
                    match parse_request(&line) {
                        Ok(request) => {
                            self.slots.push_back(Slot::Waiting(request.clone()));
                            self.unanswered += 1;
                            return Some(Event::Verify(request));
                        }
                        // SPEC 7.2: a malformed request gets ERROR, in its turn.
                        Err(e) => {
                            let reply = e.reply();
                            self.errors.push(format!("ERROR {}", reply.reason()));
                            self.push_ready(reply.to_crlf_line());
                        }
                    }
                }
                // No LF within MAX_LINE octets: whatever follows, the line is too long.
                None if self.input.len() >= MAX_LINE => {
                    // Later lines may already be buffered; skipping finds this one's end.
                    self.input.drain(..MAX_LINE);
                    self.skipping = true;
                    self.errors.push(format!("ERROR {}", Reason::LineTooLong.as_str()));
                    self.push_ready(too_long());
                }
                None => return None,
            }
        }
    }

    /// Answers the oldest unanswered request.
    pub fn answer(&mut self, verdict: Verdict) -> Result<(), NothingToAnswer> {
        let slot = self.slots.iter_mut().find(|s| matches!(s, Slot::Waiting(_))).ok_or(NothingToAnswer)?;
        if let Slot::Waiting(request) = slot {
            *slot = Slot::Ready(request.reply(verdict).to_crlf_line());
        }
        self.unanswered -= 1;
        self.flush();
        Ok(())
    }

    /// `ERROR <reason>` for each ERROR reply queued since the last call (SPEC 7.1: every
    /// VERIFY is logged, malformed ones too).
    pub fn take_errors(&mut self) -> Vec<String> {
        std::mem::take(&mut self.errors)
    }

    /// Requests given out by [`Session::poll_event`] and not answered yet.
    pub fn unanswered(&self) -> usize {
        self.unanswered
    }

    /// True while the input holds a line [`Session::poll_event`] has not processed; the
    /// driver should stop reading then (it is waiting for answers).
    pub fn has_buffered_line(&self) -> bool {
        !self.skipping && (self.input.len() >= MAX_LINE || self.input.contains(&b'\n'))
    }

    /// Bytes to write, in request order.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    fn push_ready(&mut self, line: String) {
        self.slots.push_back(Slot::Ready(line));
        self.flush();
    }

    /// Moves replies to the output up to the first request still waiting.
    fn flush(&mut self) {
        while let Some(Slot::Ready(_)) = self.slots.front() {
            if let Some(Slot::Ready(line)) = self.slots.pop_front() {
                self.output.extend_from_slice(line.as_bytes());
            }
        }
    }
}

fn too_long() -> String {
    // The seq is not read from a line that is refused for its length.
    ErrorReply::new(None, Reason::LineTooLong).map(|e| e.to_crlf_line()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authkey::TEST_KEY as KEY;

    /// The verdict a test driver gives: valid when the key starts with `0`.
    fn verdict_for(r: &Request) -> Verdict {
        if r.key().starts_with('0') {
            Verdict::Valid
        } else {
            Verdict::Invalid
        }
    }

    /// Feeds the chunks, answering every event at once; returns output and seqs asked.
    fn run(chunks: &[&[u8]]) -> (String, Vec<String>) {
        let mut s = Session::new();
        let mut out = Vec::new();
        let mut seqs = Vec::new();
        for chunk in chunks {
            s.feed(chunk);
            while let Some(Event::Verify(r)) = s.poll_event() {
                seqs.push(r.seq().to_owned());
                s.answer(verdict_for(&r)).unwrap();
            }
            out.extend(s.take_output());
        }
        assert_eq!(s.unanswered(), 0);
        (String::from_utf8(out).unwrap(), seqs)
    }

    #[test]
    fn malformed_lines_are_reported_for_the_log() {
        let mut s = Session::new();
        s.feed(format!("HELLO\r\nVERIFY 5 a@b short\r\n{}\n", "x".repeat(MAX_LINE + 5)).as_bytes());
        assert_eq!(s.poll_event(), None);
        assert_eq!(s.take_errors(), ["ERROR unknown command", "ERROR bad key", "ERROR line too long"]);
        assert!(s.take_errors().is_empty());
    }

    fn other_key() -> String {
        format!("X{}", &KEY[1..])
    }

    fn pipeline() -> String {
        format!(
            "VERIFY a1 one@example.com {KEY}\r\nverify a2 x@y {KEY}\r\nVERIFY a3 Two@Example.com {}\r\n\r\nVERIFY a4 \
             three@example.com {KEY}\nVERIFY a5 x@y short\r\n{}\r\nVERIFY a6 four@example.com {KEY}\r\npartial",
            other_key(),
            "z".repeat(MAX_LINE + 10)
        )
    }

    fn pipeline_output() -> String {
        [
            "VERIFY_REPLY a1 one@example.com VALIDKEY\r\n",
            "ERROR - unknown command\r\n",
            "VERIFY_REPLY a3 Two@Example.com INVALIDKEY\r\n",
            "ERROR - empty line\r\n",
            "VERIFY_REPLY a4 three@example.com VALIDKEY\r\n",
            "ERROR a5 bad key\r\n",
            "ERROR - line too long\r\n",
            "VERIFY_REPLY a6 four@example.com VALIDKEY\r\n",
        ]
        .concat()
    }

    #[test]
    fn spec_7_2_one_request() {
        let (out, seqs) = run(&[format!("VERIFY 42 my@domain.com {KEY}\r\n").as_bytes()]);
        assert_eq!(out, "VERIFY_REPLY 42 my@domain.com VALIDKEY\r\n");
        assert_eq!(seqs, ["42"]);
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let input = pipeline();
        let (out, seqs) = run(&[input.as_bytes()]);
        assert_eq!(out, pipeline_output());
        assert_eq!(seqs, ["a1", "a3", "a4", "a6"]);
    }

    #[test]
    fn errors_wait_behind_unanswered_requests() {
        let mut s = Session::new();
        s.feed(format!("VERIFY a1 a@b {KEY}\r\nJUNK\r\nVERIFY a2 c@d {KEY}\r\nJUNK2\r\n").as_bytes());
        let Some(Event::Verify(first)) = s.poll_event() else { panic!("no event") };
        let Some(Event::Verify(second)) = s.poll_event() else { panic!("no event") };
        assert_eq!((first.seq(), second.seq()), ("a1", "a2"));
        assert_eq!(s.poll_event(), None);
        assert_eq!(s.unanswered(), 2);
        assert!(s.take_output().is_empty(), "nothing may overtake a1's reply");
        s.answer(Verdict::Invalid).unwrap();
        assert_eq!(s.take_output(), b"VERIFY_REPLY a1 a@b INVALIDKEY\r\nERROR - unknown command\r\n");
        s.answer(Verdict::Valid).unwrap();
        assert_eq!(s.take_output(), b"VERIFY_REPLY a2 c@d VALIDKEY\r\nERROR - unknown command\r\n");
        assert_eq!(s.answer(Verdict::Valid), Err(NothingToAnswer));
    }

    #[test]
    fn every_split_gives_the_same_result() {
        let input = pipeline();
        let bytes = input.as_bytes();
        let want = (pipeline_output(), vec!["a1".to_owned(), "a3".into(), "a4".into(), "a6".into()]);
        for i in 0..=bytes.len() {
            assert_eq!(run(&[&bytes[..i], &bytes[i..]]), want, "split at {i}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(run(&singles), want);
    }

    #[test]
    fn line_limit_is_exact() {
        // MAX_LINE octets with the CRLF is fine (a bad address, but not too long).
        let pad = |n: usize| format!("VERIFY s {}", "x".repeat(n - 9));
        let at = pad(MAX_LINE - 2);
        assert_eq!(at.len() + 2, MAX_LINE);
        assert_eq!(run(&[format!("{at}\r\n").as_bytes()]).0, "ERROR s missing field\r\n");
        let over = pad(MAX_LINE - 1);
        assert_eq!(run(&[format!("{over}\r\n").as_bytes()]).0, "ERROR - line too long\r\n");
        // With a bare LF the limit counts that one octet.
        assert_eq!(run(&[format!("{over}\n").as_bytes()]).0, "ERROR s missing field\r\n");
        // A very long line gets one ERROR, then the next line is read normally.
        let long = format!("{}\r\nVERIFY t a@b {KEY}\r\n", "y".repeat(5 * MAX_LINE));
        assert_eq!(run(&[long.as_bytes()]).0, "ERROR - line too long\r\nVERIFY_REPLY t a@b VALIDKEY\r\n");
    }

    #[test]
    fn too_many_unanswered_stops_reading() {
        let mut s = Session::new();
        for i in 0..MAX_UNANSWERED + 2 {
            s.feed(format!("VERIFY s{i} a@b {KEY}\r\n").as_bytes());
        }
        let mut n = 0;
        while s.poll_event().is_some() {
            n += 1;
        }
        assert_eq!(n, MAX_UNANSWERED);
        assert!(s.has_buffered_line());
        s.answer(Verdict::Valid).unwrap();
        assert!(matches!(s.poll_event(), Some(Event::Verify(r)) if r.seq() == format!("s{MAX_UNANSWERED}")));
    }

    #[test]
    fn partial_line_gets_nothing() {
        assert_eq!(run(&[format!("VERIFY s a@b {KEY}").as_bytes()]).0, "");
        let mut s = Session::new();
        s.feed(b"VERIFY s");
        assert!(!s.has_buffered_line());
        assert_eq!(s.poll_event(), None);
    }

    #[test]
    fn never_panics_on_binary_input() {
        let junk: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let (out, seqs) = run(&[&junk]);
        assert!(seqs.is_empty());
        assert!(out.lines().all(|l| l.starts_with("ERROR ")));
    }
}
