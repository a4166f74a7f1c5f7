//! Framing of commands in the byte stream (RFC 9051 2.2.1, 4.3, 7.5; RFC 7888): a command
//! is lines joined by literals. The reader collects one command, literals inline, and hands
//! it to [`parse_command`] when its last line ends. It asks for the `+` of each
//! acceptable synchronizing literal, refuses literals and lines over the [`Limits`]
//! without buffering them, and then skips the rest of the refused command, so the next
//! command parses.
//!
//! Driving it: [`CommandReader::feed`] what the socket gave, then call
//! [`CommandReader::next_event`] until it returns `None`. The events are the same however
//! the input is split.

use super::body::{Command, CommandError, CommandErrorKind};
use super::parse::{leading_tag, parse_command};
use crate::imap::types::{NameEncoding, Tag};

/// RFC 7888 4 (LITERAL-): a non-synchronizing literal is at most 4096 octets.
pub const MAX_NON_SYNC_LITERAL: u64 = 4096;

/// How much of a skipped line is kept to see whether it ends in a literal: a literal
/// length of any sane spelling fits.
const SKIPPED_TAIL: usize = 64;

/// What the reader accepts; over them a command is refused with a [`CommandError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest line, CRLF included, literals excluded. RFC 7162 4 asks servers to take at
    /// least 8192 octets; long UID sets need more.
    pub max_line: usize,
    /// Longest APPEND message literal.
    pub max_literal: u64,
    /// Most octets of one command's lines and of its other literals together.
    pub max_command: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_line: 64 * 1024, max_literal: 64 * 1024 * 1024, max_command: 256 * 1024 }
    }
}

/// What the reader has for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadEvent {
    /// A complete command.
    Command(Command),
    /// A refused command: send [`CommandError::response`]. The reader has already skipped
    /// (or will skip) the rest of it.
    Error(CommandError),
    /// A synchronizing literal is acceptable: send the continuation request (`+ ...`,
    /// RFC 9051 7.5) now; the client waits for it before sending the literal.
    SendContinuation,
    /// The client's line in an AUTHENTICATE exchange (RFC 9051 6.2.2), CRLF removed:
    /// base64 or `*`, for [`crate::sasl::decode_response`].
    AuthenticateResponse(Vec<u8>),
    /// `DONE`, the end of IDLE (RFC 2177 3).
    IdleDone,
}

/// What the next line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineKind {
    Command,
    AuthenticateResponse,
    IdleDone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a line of the command.
    Line,
    /// Reading `remaining` octets of an accepted literal into the command.
    Literal { remaining: usize },
    /// Dropping the rest of a refused line.
    SkipLine { literals_follow: bool },
    /// Dropping a refused non-synchronizing literal, then the rest of its line.
    SkipLiteral { remaining: u64 },
}

/// A literal announced at the end of a line: `{n}`, `{n+}`, `~{n}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LiteralMarker {
    length: u64,
    synchronizing: bool,
}

/// The incremental command reader of one connection.
#[derive(Debug)]
pub struct CommandReader {
    limits: Limits,
    encoding: NameEncoding,
    input: Vec<u8>,
    /// Octets of `input` already taken.
    consumed: usize,
    /// The command so far, literals inline.
    command: Vec<u8>,
    /// Where the current line starts in `command`.
    line_start: usize,
    /// Octets of `command` that do not count against `max_command`: the APPEND message.
    exempt: usize,
    phase: Phase,
    next_line: LineKind,
    /// The last octets of the line being skipped.
    skipped_tail: Vec<u8>,
}

impl CommandReader {
    pub fn new(limits: Limits) -> CommandReader {
        CommandReader {
            limits,
            encoding: NameEncoding::ModifiedUtf7,
            input: Vec::new(),
            consumed: 0,
            command: Vec::new(),
            line_start: 0,
            exempt: 0,
            phase: Phase::Line,
            next_line: LineKind::Command,
            skipped_tail: Vec::new(),
        }
    }

    /// How mailbox names are read from now on: [`NameEncoding::Utf8`] once the client
    /// enabled IMAP4rev2 or UTF8=ACCEPT (RFC 9051 6.3.1, RFC 6855 3).
    pub fn set_encoding(&mut self, encoding: NameEncoding) {
        self.encoding = encoding;
    }

    pub fn encoding(&self) -> NameEncoding {
        self.encoding
    }

    /// The next line is a response of the AUTHENTICATE exchange, not a command: call after
    /// sending each `+ challenge`.
    pub fn expect_authenticate_response(&mut self) {
        self.next_line = LineKind::AuthenticateResponse;
    }

    /// The next line ends IDLE: call after sending the `+ idling` of IDLE (RFC 2177 3).
    pub fn expect_idle_done(&mut self) {
        self.next_line = LineKind::IdleDone;
    }

    /// Appends received octets.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.consumed == self.input.len() {
            self.input.clear();
            self.consumed = 0;
        } else if self.consumed > 4096 && self.consumed * 2 > self.input.len() {
            self.input.drain(..self.consumed);
            self.consumed = 0;
        }
        self.input.extend_from_slice(bytes);
    }

    /// Whether part of a command (or of a line) has been received and not yet handed out:
    /// the driver's idle timer may treat this as a client in the middle of a command.
    pub fn has_partial_input(&self) -> bool {
        !self.command.is_empty() || self.consumed < self.input.len() || self.phase != Phase::Line
    }

    /// Gives back buffers that grew (a long command, an APPEND, pipelined commands) and
    /// hold nothing now, before the driver waits for the client: a session waiting
    /// between commands then holds next to nothing (issue 25). Changes nothing else.
    pub fn release_idle_buffers(&mut self) {
        const KEPT: usize = 1024;
        if self.consumed == self.input.len() && self.input.capacity() > KEPT {
            self.input = Vec::new();
            self.consumed = 0;
        }
        if self.command.is_empty() && self.command.capacity() > KEPT {
            self.command = Vec::new();
        }
    }

    /// Octets held: input not yet read and the command being assembled.
    pub fn buffered(&self) -> usize {
        self.input.len() - self.consumed + self.command.len()
    }

    /// The next event, or `None` when more input is needed.
    pub fn next_event(&mut self) -> Option<ReadEvent> {
        loop {
            let available = &self.input[self.consumed..];
            if available.is_empty() {
                return None;
            }
            match self.phase {
                Phase::Literal { remaining } => {
                    let n = remaining.min(available.len());
                    self.command.extend_from_slice(&available[..n]);
                    self.consumed += n;
                    self.phase = Phase::Literal { remaining: remaining - n };
                    if n == remaining {
                        self.phase = Phase::Line;
                        self.line_start = self.command.len();
                    }
                }
                Phase::SkipLiteral { remaining } => {
                    let n = usize::try_from(remaining).unwrap_or(usize::MAX).min(available.len());
                    self.consumed += n;
                    let remaining = remaining - n as u64;
                    self.phase = if remaining == 0 {
                        self.skipped_tail.clear();
                        Phase::SkipLine { literals_follow: true }
                    } else {
                        Phase::SkipLiteral { remaining }
                    };
                }
                Phase::SkipLine { literals_follow } => match available.iter().position(|&b| b == b'\n') {
                    None => {
                        let all = available.len();
                        remember_tail(&mut self.skipped_tail, available);
                        self.consumed += all;
                    }
                    Some(newline) => {
                        remember_tail(&mut self.skipped_tail, &available[..newline]);
                        self.consumed += newline + 1;
                        self.end_skipped_line(literals_follow);
                    }
                },
                Phase::Line => match available.iter().position(|&b| b == b'\n') {
                    None => {
                        let all = available.len();
                        self.command.extend_from_slice(available);
                        self.consumed += all;
                        let line_length = self.command.len() - self.line_start;
                        if let Some(error) = self.overflow(line_length) {
                            let line = &self.command[self.line_start..];
                            self.skipped_tail.clear();
                            remember_tail(&mut self.skipped_tail, line);
                            let literals_follow = self.next_line == LineKind::Command;
                            self.reset();
                            self.phase = Phase::SkipLine { literals_follow };
                            return Some(ReadEvent::Error(error));
                        }
                    }
                    Some(newline) => {
                        self.command.extend_from_slice(&available[..=newline]);
                        self.consumed += newline + 1;
                        if let Some(event) = self.finish_line() {
                            return Some(event);
                        }
                    }
                },
            }
        }
    }

    /// The error for a line of `line_length` octets so far, if it broke a limit. Which
    /// limit it is depends only on the room left when the line started, so a line fed in
    /// pieces gets the same error as one fed whole.
    fn overflow(&self, line_length: usize) -> Option<CommandError> {
        let line_room = self.limits.max_line;
        let counted_before = self.line_start - self.exempt;
        let command_room = self.limits.max_command.saturating_sub(counted_before);
        let room = line_room.min(command_room);
        if line_length <= room {
            return None;
        }
        let tag = self.tag_within(self.line_start + room);
        let error = match self.next_line {
            LineKind::Command if command_room < line_room => {
                CommandError::new(tag, CommandErrorKind::CommandTooLarge, "Command too large")
            }
            LineKind::Command => CommandError::new(tag, CommandErrorKind::LineTooLong, "Command line too long"),
            LineKind::AuthenticateResponse | LineKind::IdleDone => {
                CommandError::new(None, CommandErrorKind::LineTooLong, "Line too long")
            }
        };
        Some(error)
    }

    /// The command's tag, looking only at its first `within` octets.
    fn tag_within(&self, within: usize) -> Option<Tag> {
        if self.next_line != LineKind::Command {
            return None;
        }
        leading_tag(&self.command[..within.min(self.command.len())])
    }

    /// A line of the command ended (its LF is the last octet of `command`).
    fn finish_line(&mut self) -> Option<ReadEvent> {
        let line_length = self.command.len() - self.line_start;
        if let Some(error) = self.overflow(line_length) {
            let line = &self.command[self.line_start..self.command.len() - 1];
            self.skipped_tail.clear();
            remember_tail(&mut self.skipped_tail, line);
            let literals_follow = self.next_line == LineKind::Command;
            self.reset();
            self.end_skipped_line(literals_follow);
            return Some(ReadEvent::Error(error));
        }
        // RFC 9051 2.2: lines end in CRLF; a bare LF is taken too.
        let mut end = self.command.len() - 1;
        if end > self.line_start && self.command[end - 1] == b'\r' {
            end -= 1;
        }
        match self.next_line {
            LineKind::AuthenticateResponse => {
                let line = self.command[..end].to_vec();
                self.reset();
                Some(ReadEvent::AuthenticateResponse(line))
            }
            LineKind::IdleDone => {
                let done = self.command[..end].eq_ignore_ascii_case(b"DONE");
                self.reset();
                Some(if done {
                    ReadEvent::IdleDone
                } else {
                    ReadEvent::Error(CommandError::new(None, CommandErrorKind::ExpectedDone, "Expected DONE"))
                })
            }
            LineKind::Command => self.finish_command_line(end),
        }
    }

    fn finish_command_line(&mut self, end: usize) -> Option<ReadEvent> {
        if end == 0 {
            // An empty line between commands: nothing to answer.
            self.reset();
            return None;
        }
        let Some(marker) = literal_marker(&self.command[self.line_start..end]) else {
            let event = match parse_command(&self.command[..end], self.encoding) {
                Ok(command) => ReadEvent::Command(command),
                Err(error) => ReadEvent::Error(error),
            };
            self.reset();
            return Some(event);
        };
        let tag = leading_tag(&self.command);
        // RFC 7888 4: LITERAL- takes non-synchronizing literals up to 4096 octets only.
        if !marker.synchronizing && marker.length > MAX_NON_SYNC_LITERAL {
            let error = CommandError::new(
                tag,
                CommandErrorKind::LiteralTooLarge,
                "Non-synchronizing literals are limited to 4096 octets",
            );
            self.reset();
            self.phase = Phase::SkipLiteral { remaining: marker.length };
            return Some(ReadEvent::Error(error));
        }
        // The APPEND message may be large, once, up to max_literal (RFC 9051 6.3.12: the
        // literal after the mailbox, flags and date); every other literal counts against
        // max_command.
        let counted = self.command.len() - self.exempt;
        let small_room = self.limits.max_command.saturating_sub(counted) as u64;
        let message = self.exempt == 0 && self.is_append() && !self.is_append_mailbox(end);
        let allowed = if message { self.limits.max_literal } else { small_room };
        if marker.length > allowed {
            let error = CommandError::new(tag, CommandErrorKind::LiteralTooLarge, "Literal too large");
            self.reset();
            // A refused synchronizing literal is never sent: the client sees the error.
            if !marker.synchronizing {
                self.phase = Phase::SkipLiteral { remaining: marker.length };
            }
            return Some(ReadEvent::Error(error));
        }
        // The parser expects the literal's CRLF.
        self.command.truncate(end);
        self.command.extend_from_slice(b"\r\n");
        // `allowed` is at most max_literal or max_command, both in memory.
        let length = usize::try_from(marker.length).unwrap_or(usize::MAX);
        if message {
            self.exempt = length;
        }
        self.phase = Phase::Literal { remaining: length };
        self.line_start = self.command.len();
        if marker.synchronizing {
            Some(ReadEvent::SendContinuation)
        } else {
            None
        }
    }

    /// A skipped line ended: if it announced a non-synchronizing literal, that is skipped
    /// too (the client sends it without waiting); a synchronizing one is never sent.
    fn end_skipped_line(&mut self, literals_follow: bool) {
        let marker = literal_marker(self.skipped_tail.strip_suffix(b"\r").unwrap_or(&self.skipped_tail));
        self.skipped_tail.clear();
        self.phase = match marker {
            Some(marker) if literals_follow && !marker.synchronizing => Phase::SkipLiteral { remaining: marker.length },
            _ => Phase::Line,
        };
    }

    /// The literal announced at `end` is APPEND's mailbox name (`tag APPEND {n}` on the
    /// first line), not its message.
    fn is_append_mailbox(&self, end: usize) -> bool {
        self.line_start == 0 && self.command[..end].split(|&b| b == b' ').filter(|w| !w.is_empty()).count() == 3
    }

    fn is_append(&self) -> bool {
        let mut words = self.command.split(|&b| b == b' ');
        words.next();
        words.next().is_some_and(|name| name.eq_ignore_ascii_case(b"APPEND"))
    }

    /// Forgets the command; the next line is a command.
    fn reset(&mut self) {
        self.command.clear();
        self.line_start = 0;
        self.exempt = 0;
        self.phase = Phase::Line;
        self.next_line = LineKind::Command;
    }
}

/// Keeps the last [`SKIPPED_TAIL`] octets of `tail` followed by `more`.
fn remember_tail(tail: &mut Vec<u8>, more: &[u8]) {
    if more.len() >= SKIPPED_TAIL {
        tail.clear();
        tail.extend_from_slice(&more[more.len() - SKIPPED_TAIL..]);
    } else {
        tail.extend_from_slice(more);
        if tail.len() > SKIPPED_TAIL {
            tail.drain(..tail.len() - SKIPPED_TAIL);
        }
    }
}

/// The literal announced at the end of a line (CRLF removed), RFC 9051 4.3: `{n}`,
/// `{n+}` (RFC 7888), `~{n}` (literal8). A length too large for u64 reads as u64::MAX,
/// which every limit refuses.
fn literal_marker(line: &[u8]) -> Option<LiteralMarker> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let spec = &inner[open + 1..];
    let (digits, synchronizing) = match spec.strip_suffix(b"+") {
        Some(digits) => (digits, false),
        None => (spec, true),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let length = digits.iter().try_fold(0u64, |v, &d| v.checked_mul(10)?.checked_add(u64::from(d - b'0')));
    Some(LiteralMarker { length: length.unwrap_or(u64::MAX), synchronizing })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers() {
        assert_eq!(literal_marker(b"a APPEND x {12}"), Some(LiteralMarker { length: 12, synchronizing: true }));
        assert_eq!(literal_marker(b"~{5+}"), Some(LiteralMarker { length: 5, synchronizing: false }));
        assert_eq!(literal_marker(b"{}"), None);
        assert_eq!(literal_marker(b"{1a}"), None);
        assert_eq!(literal_marker(b"{99999999999999999999999}").map(|m| m.length), Some(u64::MAX));
    }

    #[test]
    fn buffers_that_grew_are_given_back_only_when_they_hold_nothing() {
        let mut reader = CommandReader::new(Limits::default());
        let line = format!("a1 SEARCH SUBJECT \"{}\"\r\n", "x".repeat(5000));
        let (first, rest) = line.as_bytes().split_at(3000);
        reader.feed(first);
        assert_eq!(reader.next_event(), None);
        reader.release_idle_buffers();
        reader.feed(rest);
        let Some(ReadEvent::Command(command)) = reader.next_event() else { panic!("no command") };
        assert_eq!(command.tag.as_str(), "a1");
        assert!(reader.input.capacity() > 1024 || reader.command.capacity() > 1024);
        reader.release_idle_buffers();
        assert_eq!((reader.input.capacity(), reader.command.capacity()), (0, 0));
        reader.feed(b"a2 NOOP\r\n");
        assert!(matches!(reader.next_event(), Some(ReadEvent::Command(c)) if c.tag.as_str() == "a2"));
    }

    #[test]
    fn tails() {
        let mut tail = Vec::new();
        remember_tail(&mut tail, &[b'x'; 100]);
        remember_tail(&mut tail, b"{5+}");
        assert_eq!(tail.len(), SKIPPED_TAIL);
        assert!(tail.ends_with(b"{5+}"));
    }
}
