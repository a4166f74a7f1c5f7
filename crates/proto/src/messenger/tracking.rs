//! Delivery notifications (SPEC 8.3, seed 000 "ATTrack"): the tracking record's CSV line,
//! the arguments of `NOTIFY`, `RECEIPT` and `TRACK`, and the `TRACK` answer both ways.
//!
//! A record is one CSV line (RFC 4180), six fields:
//!
//! ```text
//! timestamp,message_id,sender,recipient,event,reporting_server
//! 2026-12-01T10:00:00Z,<id@galkam.test>,glen@galkam.test,abc555@lrsupport.test,downloaded,mx.lrsupport.test
//! ```
//!
//! A field holding `,` or `"` is quoted (RFC 4180 2.6, 2.7). CR, LF and every other control
//! character are refused in every field, quoted or not (RFC 4180 would allow a quoted line
//! break): a record travels as the argument of one SMTP command line (`NOTIFY <record>`)
//! and as one `250-` reply line, and must never end that line or inject another.
//!
//! Nothing here performs I/O; the session stages and the store call these functions.

use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use crate::smtp::client::ReplyParser;
use crate::smtp::reply::Reply;
use crate::time::{parse_rfc3339, parse_rfc3339_utc, rfc3339};

/// The CSV header line of an exported list of records (`vouchmail tracking list --csv`).
pub const CSV_HEADER: &str = "timestamp,message_id,sender,recipient,event,reporting_server";

/// The longest record line: `NOTIFY <record>` must fit in one SMTP command line of 512
/// octets with its CRLF (RFC 5321 4.5.3.1.4; SPEC 3: longer commands get 500 5.5.2).
pub const MAX_RECORD_LEN: usize = 512 - "NOTIFY ".len() - 2;

/// What happened to a delivered message (SPEC 8.3 `event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    /// The recipient retrieved it: the first POP3 RETR or full TOP (SPEC 9).
    Downloaded,
    /// The recipient reported decrypting it: `RECEIPT <id> DECRYPTED`.
    Decrypted,
    /// The recipient reported failing to decrypt it: `RECEIPT <id> FAILED`.
    DecryptFailed,
}

impl Event {
    pub const ALL: [Event; 3] = [Event::Downloaded, Event::Decrypted, Event::DecryptFailed];

    /// The name in a record (SPEC 8.3), lower case.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Downloaded => "downloaded",
            Event::Decrypted => "decrypted",
            Event::DecryptFailed => "decrypt_failed",
        }
    }

    /// Exactly one of the three names (records are machine-written: no case folding).
    pub fn parse(name: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One tracking record (SPEC 8.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Record {
    /// When the event happened, seconds since the Unix epoch (written as RFC 3339 UTC).
    pub timestamp: i64,
    /// The message's Message-ID with its angle brackets, `<id@host>`.
    pub message_id: String,
    /// The envelope sender: the address the record goes back to.
    pub sender: String,
    /// The recipient whose download or decryption the record reports.
    pub recipient: String,
    pub event: Event,
    /// The server that saw the event (the recipient's home server).
    pub reporting_server: String,
}

/// Why a record (or a command argument) is refused: a `501 5.5.4` on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// Not six fields, a stray or unterminated quote.
    Csv(&'static str),
    /// A field breaks its own syntax; names the field.
    Field(&'static str),
    /// A control character (CR, LF, ...) in a field.
    ControlCharacter(&'static str),
    /// Longer than [`MAX_RECORD_LEN`].
    TooLong,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Csv(why) => write!(f, "malformed record: {why}"),
            RecordError::Field(name) => write!(f, "malformed record: bad {name}"),
            RecordError::ControlCharacter(name) => write!(f, "malformed record: control character in {name}"),
            RecordError::TooLong => write!(f, "record longer than {MAX_RECORD_LEN} octets"),
        }
    }
}

impl std::error::Error for RecordError {}

impl RecordError {
    /// SPEC 8.3: a malformed NOTIFY (or RECEIPT, TRACK argument) is `501 5.5.4`.
    pub fn to_reply(&self) -> Reply {
        Reply::syntax(self.to_string())
    }
}

const FIELD_NAMES: [&str; 6] = ["timestamp", "message_id", "sender", "recipient", "event", "reporting_server"];

impl Record {
    /// The record's CSV line (without CRLF), after checking every field as [`Record::parse`]
    /// does, so what is written always parses back to the same record.
    pub fn to_line(&self) -> Result<String, RecordError> {
        self.check()?;
        let timestamp = format_timestamp(self.timestamp).ok_or(RecordError::Field("timestamp"))?;
        let fields = [
            timestamp.as_str(),
            self.message_id.as_str(),
            self.sender.as_str(),
            self.recipient.as_str(),
            self.event.as_str(),
            self.reporting_server.as_str(),
        ];
        // No field may hold a line break (checked above), so the record is one line.
        let line = crate::csv::record(fields);
        if line.len() > MAX_RECORD_LEN {
            return Err(RecordError::TooLong);
        }
        Ok(line)
    }

    /// Parses one record line (without CRLF).
    pub fn parse(line: &str) -> Result<Record, RecordError> {
        if line.len() > MAX_RECORD_LEN {
            return Err(RecordError::TooLong);
        }
        let fields = crate::csv::parse_record(line, FIELD_NAMES.len()).map_err(|e| match e.0 {
            "too many fields" => RecordError::Csv("a record has six fields"),
            why => RecordError::Csv(why),
        })?;
        let [timestamp, message_id, sender, recipient, event, reporting_server]: [String; 6] =
            fields.try_into().map_err(|_| RecordError::Csv("a record has six fields"))?;
        let record = Record {
            // SPEC 8.3: RFC 3339, UTC.
            timestamp: parse_rfc3339_utc(&timestamp)
                .filter(|&t| format_timestamp(t).is_some())
                .ok_or(RecordError::Field("timestamp"))?,
            message_id,
            sender,
            recipient,
            event: Event::parse(&event).ok_or(RecordError::Field("event"))?,
            reporting_server,
        };
        record.check()?;
        Ok(record)
    }

    /// The field rules, shared by both directions.
    fn check(&self) -> Result<(), RecordError> {
        let texts = [&self.message_id, &self.sender, &self.recipient, &self.reporting_server];
        for (text, name) in texts.into_iter().zip([FIELD_NAMES[1], FIELD_NAMES[2], FIELD_NAMES[3], FIELD_NAMES[5]]) {
            if text.chars().any(char::is_control) {
                return Err(RecordError::ControlCharacter(name));
            }
        }
        if !valid_message_id(&self.message_id) {
            return Err(RecordError::Field("message_id"));
        }
        if !valid_address(&self.sender) {
            return Err(RecordError::Field("sender"));
        }
        if !valid_address(&self.recipient) {
            return Err(RecordError::Field("recipient"));
        }
        if !valid_host(&self.reporting_server) {
            return Err(RecordError::Field("reporting_server"));
        }
        Ok(())
    }

    /// The domain of the sender: where a remote sender's record is sent (SPEC 8.3).
    pub fn sender_domain(&self) -> &str {
        domain_of(&self.sender)
    }

    /// The domain of the recipient: a NOTIFY is taken only from that domain's home server
    /// (SPEC 8.3).
    pub fn recipient_domain(&self) -> &str {
        domain_of(&self.recipient)
    }
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_line() {
            Ok(line) => f.write_str(&line),
            Err(e) => write!(f, "<invalid record: {e}>"),
        }
    }
}

/// RFC 3339 UTC, whole seconds: `2026-12-01T10:00:00Z`. Only for times from 1970 to 9999
/// (the four-digit year of RFC 3339 5.6).
fn format_timestamp(secs: i64) -> Option<String> {
    const YEAR_10000: i64 = 253_402_300_800;
    let secs = u64::try_from(secs).ok().filter(|&s| (s as i64) < YEAR_10000)?;
    Some(rfc3339(UNIX_EPOCH + Duration::from_secs(secs)))
}

/// A Message-ID as the field holds it (RFC 5322 3.6.4 `msg-id`, leniently): `<`, at least
/// one character without angle brackets or white space, `>`.
pub fn valid_message_id(id: &str) -> bool {
    id.len() >= 3
        && id.starts_with('<')
        && id.ends_with('>')
        && !id[1..id.len() - 1].contains(|c: char| c == '<' || c == '>' || c.is_whitespace() || c.is_control())
}

/// An address as a record holds it: a non-empty local part, `@`, a host name. The local
/// part may be quoted (RFC 5321 4.1.2), so it may hold `,` and `"` (then the CSV field is
/// quoted); no control characters.
fn valid_address(address: &str) -> bool {
    match address.rsplit_once('@') {
        Some((local, domain)) => !local.is_empty() && valid_host(domain) && !address.chars().any(char::is_control),
        None => false,
    }
}

/// A host name or address literal: non-empty, no white space, quotes, commas or `@`.
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && !host.contains(|c: char| c.is_whitespace() || c.is_control() || matches!(c, ',' | '"' | '@' | '<' | '>'))
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, domain)| domain)
}

/// `NOTIFY <record>` (SPEC 8.3): the argument is exactly one record. Surrounding spaces are
/// ignored.
pub fn parse_notify_argument(argument: &str) -> Result<Record, RecordError> {
    let argument = argument.trim_matches(' ');
    if argument.is_empty() {
        return Err(RecordError::Csv("NOTIFY needs a record"));
    }
    Record::parse(argument)
}

/// The recipient's report in `RECEIPT` (SPEC 8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptOutcome {
    /// `DECRYPTED`: the `decrypted` event.
    Decrypted,
    /// `FAILED`: the `decrypt_failed` event.
    Failed,
}

impl ReceiptOutcome {
    /// The event it records.
    pub fn event(self) -> Event {
        match self {
            ReceiptOutcome::Decrypted => Event::Decrypted,
            ReceiptOutcome::Failed => Event::DecryptFailed,
        }
    }

    /// The keyword on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptOutcome::Decrypted => "DECRYPTED",
            ReceiptOutcome::Failed => "FAILED",
        }
    }
}

/// The argument of `RECEIPT <message-id> DECRYPTED|FAILED`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// With its angle brackets.
    pub message_id: String,
    pub outcome: ReceiptOutcome,
}

impl Receipt {
    /// The command line a client sends (without CRLF).
    pub fn command_line(&self) -> String {
        format!("RECEIPT {} {}", self.message_id, self.outcome.as_str())
    }
}

/// `RECEIPT <message-id> DECRYPTED|FAILED` (SPEC 8.3): the Message-ID with its angle
/// brackets, one or more spaces, the keyword in any case (RFC 5321 2.4: verbs and keywords
/// are case-insensitive).
pub fn parse_receipt_argument(argument: &str) -> Result<Receipt, RecordError> {
    let mut words = argument.split(' ').filter(|w| !w.is_empty());
    let (Some(message_id), Some(keyword), None) = (words.next(), words.next(), words.next()) else {
        return Err(RecordError::Csv("RECEIPT needs <message-id> DECRYPTED|FAILED"));
    };
    if message_id.chars().any(char::is_control) || !valid_message_id(message_id) {
        return Err(RecordError::Field("message_id"));
    }
    let outcome = if keyword.eq_ignore_ascii_case("DECRYPTED") {
        ReceiptOutcome::Decrypted
    } else if keyword.eq_ignore_ascii_case("FAILED") {
        ReceiptOutcome::Failed
    } else {
        return Err(RecordError::Field("RECEIPT keyword (DECRYPTED or FAILED)"));
    };
    Ok(Receipt { message_id: message_id.to_string(), outcome })
}

/// `TRACK [<since>]` (SPEC 8.3): None (all records) without an argument, else the RFC 3339
/// time (any offset), in seconds since the epoch.
pub fn parse_track_argument(argument: &str) -> Result<Option<i64>, RecordError> {
    let argument = argument.trim_matches(' ');
    if argument.is_empty() {
        return Ok(None);
    }
    parse_rfc3339(argument).map(Some).ok_or(RecordError::Field("TRACK time (RFC 3339)"))
}

/// The `TRACK` command a client sends (without CRLF).
pub fn track_command_line(since: Option<i64>) -> String {
    match since.and_then(format_timestamp) {
        Some(time) => format!("TRACK {time}"),
        None => "TRACK".to_string(),
    }
}

/// The answer to `TRACK` (SPEC 8.3): one `250-<record>` line per record, oldest first as
/// given, and a last `250 <n> records`. No enhanced codes: the wire format is fixed by the
/// SPEC. A record that does not make a valid line is left out (and not counted); the
/// store only holds records that do.
pub fn track_reply(records: &[Record]) -> Reply {
    let mut text = String::new();
    let mut count = 0usize;
    for line in records.iter().filter_map(|r| r.to_line().ok()) {
        text.push_str(&line);
        text.push('\n');
        count += 1;
    }
    text.push_str(&format!("{count} records"));
    Reply::plain(250, text)
}

/// Why a `TRACK` answer could not be read (client side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackAnswerError {
    /// The server refused: its reply code (and text).
    Refused(u16, String),
    /// A record line that does not parse, or a count that does not match.
    Malformed(String),
}

impl fmt::Display for TrackAnswerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrackAnswerError::Refused(code, text) => write!(f, "TRACK refused: {code} {text}"),
            TrackAnswerError::Malformed(why) => write!(f, "malformed TRACK answer: {why}"),
        }
    }
}

impl std::error::Error for TrackAnswerError {}

/// Client side: the records of a `TRACK` answer, given its reply code and the text of its
/// lines (without `250-`/`250 `, as [`crate::smtp::client::ServerReply`] keeps them). The
/// last line must be `<n> records` with n the number of record lines.
pub fn parse_track_answer(code: u16, lines: &[String]) -> Result<Vec<Record>, TrackAnswerError> {
    if code != 250 {
        return Err(TrackAnswerError::Refused(code, lines.join(" ")));
    }
    let Some((last, record_lines)) = lines.split_last() else {
        return Err(TrackAnswerError::Malformed("empty answer".into()));
    };
    let count = last
        .strip_suffix(" records")
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<usize>().ok())
        .ok_or_else(|| TrackAnswerError::Malformed("the last line is not '<n> records'".into()))?;
    if count != record_lines.len() {
        return Err(TrackAnswerError::Malformed(format!(
            "{} record lines, but the last line says {count}",
            record_lines.len()
        )));
    }
    record_lines
        .iter()
        .enumerate()
        .map(|(i, line)| Record::parse(line).map_err(|e| TrackAnswerError::Malformed(format!("line {}: {e}", i + 1))))
        .collect()
}

/// Most records one TRACK answer lists (the server's limit, and what the client's reader
/// takes: see [`track_answer_parser`]).
pub const MAX_TRACK_RECORDS: usize = 10_000;

/// Client side: a reply reader for the TRACK answer, which may have up to
/// [`MAX_TRACK_RECORDS`] record lines and the count line (more than an SMTP reply).
pub fn track_answer_parser() -> ReplyParser {
    ReplyParser::with_max_lines(MAX_TRACK_RECORDS + 1)
}

/// The outcome of one `NOTIFY <record>` at a home server (SPEC 8.3), for the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyOutcome {
    /// `250`: stored, or stored before.
    Delivered,
    /// The home server could not be reached, or answered 4xx: try again later.
    Temporary(String),
    /// The home server refused the record for good (5xx: 550 5.7.1 not its recipient
    /// domain's home server, 550 5.1.1 unknown sender, 501 5.5.4 malformed): drop it.
    Permanent(String),
}

impl NotifyOutcome {
    /// What a reply to NOTIFY means (RFC 5321 4.2.1: 2yz done, 4yz transient, 5yz
    /// permanent; anything else breaks the protocol and is tried again later).
    pub fn from_reply(reply: &Reply) -> NotifyOutcome {
        match reply.code {
            200..=299 => NotifyOutcome::Delivered,
            500..=599 => NotifyOutcome::Permanent(reply.to_string()),
            _ => NotifyOutcome::Temporary(reply.to_string()),
        }
    }
}

/// The command line for one record (without CRLF).
pub fn notify_command_line(record: &str) -> String {
    format!("NOTIFY {record}")
}

/// The client side of a run of `NOTIFY <record>` commands on a session that is past EHLO
/// (SPEC 8.3): one command at a time (no PIPELINING is assumed), one outcome per record.
/// Drive it like the other client machines: [`NotifyClient::start`], write
/// [`NotifyClient::take_output`], [`NotifyClient::feed`] what arrives, until
/// [`NotifyClient::is_done`]; then [`NotifyClient::outcomes`]. A record that is not a
/// valid record line is not sent (a permanent failure).
#[derive(Debug)]
pub struct NotifyClient {
    records: Vec<String>,
    outcomes: Vec<NotifyOutcome>,
    parser: ReplyParser,
    output: Vec<u8>,
    started: bool,
    broken: bool,
}

impl NotifyClient {
    pub fn new(records: Vec<String>) -> NotifyClient {
        NotifyClient {
            records,
            outcomes: Vec::new(),
            parser: ReplyParser::default(),
            output: Vec::new(),
            started: false,
            broken: false,
        }
    }

    /// Sends the first command.
    pub fn start(&mut self) {
        if !self.started {
            self.started = true;
            self.send_next();
        }
    }

    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// Every record has its outcome.
    pub fn is_done(&self) -> bool {
        self.outcomes.len() == self.records.len()
    }

    /// One outcome per record, in order (only complete once [`NotifyClient::is_done`]).
    pub fn outcomes(&self) -> &[NotifyOutcome] {
        &self.outcomes
    }

    pub fn into_outcomes(self) -> Vec<NotifyOutcome> {
        self.outcomes
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        if self.is_done() || !self.started {
            return;
        }
        self.parser.feed(bytes);
        while !self.is_done() {
            match self.parser.next_reply() {
                Ok(Some(reply)) => {
                    self.outcomes.push(NotifyOutcome::from_reply(&reply.to_reply()));
                    self.send_next();
                }
                Ok(None) => return,
                Err(e) => return self.on_broken(&format!("protocol error: {}", e.0)),
            }
        }
    }

    /// The connection closed or timed out: the records not answered are tried later.
    pub fn on_closed(&mut self) {
        self.on_broken("connection lost");
    }

    fn on_broken(&mut self, why: &str) {
        self.broken = true;
        while !self.is_done() {
            self.outcomes.push(NotifyOutcome::Temporary(why.to_string()));
        }
    }

    fn send_next(&mut self) {
        while let Some(record) = self.records.get(self.outcomes.len()) {
            if self.broken {
                return;
            }
            // Checked again here, so nothing but one valid record can go on the line.
            match Record::parse(record) {
                Ok(_) => {
                    self.output.extend_from_slice(notify_command_line(record).as_bytes());
                    self.output.extend_from_slice(b"\r\n");
                    return;
                }
                Err(e) => self.outcomes.push(NotifyOutcome::Permanent(format!("not sent: {e}"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPEC 8.3's example record.
    const EXAMPLE: &str =
        "2026-12-01T10:00:00Z,<id@galkam.test>,glen@galkam.test,abc555@lrsupport.test,downloaded,mx.lrsupport.test";

    fn example() -> Record {
        Record {
            timestamp: parse_rfc3339("2026-12-01T10:00:00Z").unwrap(),
            message_id: "<id@galkam.test>".into(),
            sender: "glen@galkam.test".into(),
            recipient: "abc555@lrsupport.test".into(),
            event: Event::Downloaded,
            reporting_server: "mx.lrsupport.test".into(),
        }
    }

    #[test]
    fn spec_example_both_ways() {
        let record = Record::parse(EXAMPLE).unwrap();
        assert_eq!(record, example());
        assert_eq!(record.to_line().unwrap(), EXAMPLE);
        assert_eq!(record.sender_domain(), "galkam.test");
        assert_eq!(record.recipient_domain(), "lrsupport.test");
        assert_eq!(CSV_HEADER.split(',').collect::<Vec<_>>(), FIELD_NAMES);
    }

    #[test]
    fn every_event_round_trips() {
        for event in Event::ALL {
            let record = Record { event, ..example() };
            let line = record.to_line().unwrap();
            assert!(line.contains(&format!(",{event},")));
            assert_eq!(Record::parse(&line).unwrap(), record);
        }
        assert!(Record::parse(&EXAMPLE.replace("downloaded", "Downloaded")).is_err());
        assert!(Record::parse(&EXAMPLE.replace("downloaded", "read")).is_err());
    }

    #[test]
    fn rfc4180_quoting_where_a_field_holds_comma_or_quote() {
        let record = Record { sender: "\"glen,o\\\"k\"@galkam.test".into(), ..example() };
        let line = record.to_line().unwrap();
        assert_eq!(
            line,
            "2026-12-01T10:00:00Z,<id@galkam.test>,\"\"\"glen,o\\\"\"k\"\"@galkam.test\",abc555@lrsupport.test,downloaded,mx.lrsupport.test"
        );
        assert_eq!(Record::parse(&line).unwrap(), record);
        let record = Record { message_id: "<a,b@galkam.test>".into(), ..example() };
        let line = record.to_line().unwrap();
        assert!(line.contains(",\"<a,b@galkam.test>\","));
        assert_eq!(Record::parse(&line).unwrap(), record);
        // A quoted field without need is read too (RFC 4180 2.5).
        let quoted = EXAMPLE.replace("glen@galkam.test", "\"glen@galkam.test\"");
        assert_eq!(Record::parse(&quoted).unwrap(), example());
    }

    #[test]
    fn line_breaks_can_never_get_into_a_record() {
        for bad in ["glen@galkam.test\r\nRCPT TO:<x@y>", "glen\n@galkam.test", "glen@galkam.test\r"] {
            let record = Record { sender: bad.into(), ..example() };
            assert_eq!(record.to_line(), Err(RecordError::ControlCharacter("sender")));
        }
        let record = Record { reporting_server: "mx\r\n.test".into(), ..example() };
        assert!(record.to_line().is_err());
        // Not even quoted, which RFC 4180 2.6 would allow.
        let line = EXAMPLE.replace("glen@galkam.test", "\"glen\r\n@galkam.test\"");
        assert_eq!(Record::parse(&line), Err(RecordError::ControlCharacter("sender")));
        assert!(Record::parse(&format!("{EXAMPLE}\r\n")).is_err());
        assert!(Record::parse(&EXAMPLE.replace("<id@", "<i\0d@")).is_err());
    }

    #[test]
    fn malformed_records() {
        for bad in [
            "",
            "2026-12-01T10:00:00Z,<id@galkam.test>,glen@galkam.test,abc555@lrsupport.test,downloaded",
            &format!("{EXAMPLE},extra"),
            &EXAMPLE.replace("2026-12-01T10:00:00Z", "2026-12-01T11:00:00+01:00"),
            &EXAMPLE.replace("2026-12-01T10:00:00Z", "yesterday"),
            &EXAMPLE.replace("2026-12-01T10:00:00Z", "1969-12-31T23:59:59Z"),
            &EXAMPLE.replace("<id@galkam.test>", "id@galkam.test"),
            &EXAMPLE.replace("<id@galkam.test>", "<>"),
            &EXAMPLE.replace("<id@galkam.test>", "<id @galkam.test>"),
            &EXAMPLE.replace("glen@galkam.test", "glen"),
            &EXAMPLE.replace("glen@galkam.test", "@galkam.test"),
            &EXAMPLE.replace("glen@galkam.test", ""),
            &EXAMPLE.replace("abc555@lrsupport.test", "abc555@"),
            &EXAMPLE.replace("mx.lrsupport.test", ""),
            &EXAMPLE.replace("mx.lrsupport.test", "mx lrsupport"),
            &EXAMPLE.replace("glen@galkam.test", "gl\"en@galkam.test"),
            &EXAMPLE.replace("glen@galkam.test", "\"glen@galkam.test"),
            &EXAMPLE.replace("glen@galkam.test", "\"glen\"x@galkam.test"),
        ] {
            assert!(Record::parse(bad).is_err(), "{bad:?}");
        }
        let long = Record { message_id: format!("<{}@galkam.test>", "x".repeat(MAX_RECORD_LEN)), ..example() };
        assert_eq!(long.to_line(), Err(RecordError::TooLong));
        assert_eq!(Record::parse(&"x".repeat(MAX_RECORD_LEN + 1)), Err(RecordError::TooLong));
        assert!(Record { timestamp: -1, ..example() }.to_line().is_err());
        assert_eq!(RecordError::TooLong.to_reply().code, 501);
        assert_eq!(RecordError::Field("sender").to_reply().to_wire(), b"501 5.5.4 malformed record: bad sender\r\n");
    }

    #[test]
    fn notify_argument() {
        assert_eq!(parse_notify_argument(EXAMPLE).unwrap(), example());
        assert_eq!(parse_notify_argument(&format!(" {EXAMPLE} ")).unwrap(), example());
        assert!(parse_notify_argument("").is_err());
        assert!(parse_notify_argument("hello").is_err());
    }

    #[test]
    fn receipt_argument() {
        let r = parse_receipt_argument("<id@galkam.test> DECRYPTED").unwrap();
        assert_eq!(r, Receipt { message_id: "<id@galkam.test>".into(), outcome: ReceiptOutcome::Decrypted });
        assert_eq!(r.outcome.event(), Event::Decrypted);
        assert_eq!(r.command_line(), "RECEIPT <id@galkam.test> DECRYPTED");
        let r = parse_receipt_argument("<id@galkam.test>  failed").unwrap();
        assert_eq!(r.outcome, ReceiptOutcome::Failed);
        assert_eq!(r.outcome.event(), Event::DecryptFailed);
        for bad in [
            "",
            "<id@galkam.test>",
            "id@galkam.test DECRYPTED",
            "<id@galkam.test> READ",
            "<id@galkam.test> DECRYPTED now",
            "DECRYPTED <id@galkam.test>",
        ] {
            assert!(parse_receipt_argument(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn track_argument() {
        assert_eq!(parse_track_argument(""), Ok(None));
        assert_eq!(parse_track_argument(" "), Ok(None));
        assert_eq!(parse_track_argument("2026-12-01T10:00:00Z"), Ok(Some(example().timestamp)));
        assert_eq!(parse_track_argument("2026-12-01T11:00:00+01:00"), Ok(Some(example().timestamp)));
        assert!(parse_track_argument("2026-12-01").is_err());
        assert!(parse_track_argument("2026-12-01T10:00:00Z 2026-12-02T10:00:00Z").is_err());
        assert_eq!(track_command_line(None), "TRACK");
        assert_eq!(track_command_line(Some(example().timestamp)), "TRACK 2026-12-01T10:00:00Z");
    }

    #[test]
    fn track_reply_and_its_parser() {
        let decrypted = Record { event: Event::Decrypted, timestamp: example().timestamp + 60, ..example() };
        let records = vec![example(), decrypted.clone()];
        let wire = track_reply(&records).to_wire();
        let expected = format!(
            "250-{EXAMPLE}\r\n250-{}\r\n250 2 records\r\n",
            EXAMPLE.replace("10:00:00Z", "10:01:00Z").replace("downloaded", "decrypted")
        );
        assert_eq!(String::from_utf8(wire.clone()).unwrap(), expected);
        assert_eq!(track_reply(&[]).to_wire(), b"250 0 records\r\n");
        // The client reads it back with the SMTP reply reader.
        let mut parser = ReplyParser::default();
        parser.feed(&wire);
        let reply = parser.next_reply().unwrap().unwrap();
        assert_eq!(parse_track_answer(reply.code, &reply.lines).unwrap(), records);
        assert_eq!(parse_track_answer(250, &["0 records".to_string()]).unwrap(), vec![]);
    }

    #[test]
    fn bad_track_answers() {
        let lines = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(matches!(
            parse_track_answer(530, &lines(&["Authentication required"])),
            Err(TrackAnswerError::Refused(530, _))
        ));
        for bad in [
            lines(&[]),
            lines(&[EXAMPLE]),
            lines(&[EXAMPLE, "2 records"]),
            lines(&[EXAMPLE, "1 record"]),
            lines(&["garbage", "1 records"]),
            lines(&["-1 records"]),
            lines(&[" records"]),
        ] {
            assert!(matches!(parse_track_answer(250, &bad), Err(TrackAnswerError::Malformed(_))), "{bad:?}");
        }
    }

    #[test]
    fn notify_client_sends_each_record_and_classifies_the_replies() {
        let second = EXAMPLE.replace("downloaded", "decrypted");
        let records = vec![EXAMPLE.to_string(), "bad\r\nRCPT TO:<x@y>".to_string(), second.clone(), EXAMPLE.into()];
        let mut client = NotifyClient::new(records);
        client.start();
        assert_eq!(client.take_output(), format!("NOTIFY {EXAMPLE}\r\n").into_bytes());
        client.feed(b"250 2.0.0 Tracking record stored\r\n");
        // The malformed record is never sent.
        assert_eq!(client.take_output(), format!("NOTIFY {second}\r\n").into_bytes());
        client.feed(b"550 5.7.1 You are not the home server of lrsupport.test\r\n451 4.3");
        assert_eq!(client.take_output(), format!("NOTIFY {EXAMPLE}\r\n").into_bytes());
        assert!(!client.is_done());
        client.feed(b".0 later\r\n");
        assert!(client.is_done());
        let outcomes = client.into_outcomes();
        assert_eq!(outcomes[0], NotifyOutcome::Delivered);
        assert!(matches!(&outcomes[1], NotifyOutcome::Permanent(why) if why.contains("not sent")));
        assert!(matches!(&outcomes[2], NotifyOutcome::Permanent(why) if why.starts_with("550 5.7.1")));
        assert!(matches!(&outcomes[3], NotifyOutcome::Temporary(why) if why.starts_with("451 4.3.0")));
        // A lost connection leaves the rest for later.
        let mut client = NotifyClient::new(vec![EXAMPLE.into(), EXAMPLE.into()]);
        client.start();
        client.take_output();
        client.feed(b"250 ok\r\n");
        client.on_closed();
        assert_eq!(
            client.into_outcomes(),
            [NotifyOutcome::Delivered, NotifyOutcome::Temporary("connection lost".into())]
        );
        let mut client = NotifyClient::new(vec![]);
        client.start();
        assert!(client.is_done() && client.take_output().is_empty());
    }

    #[test]
    fn track_answers_may_be_longer_than_an_smtp_reply() {
        let records = vec![example(); 1000];
        let mut parser = track_answer_parser();
        parser.feed(&track_reply(&records).to_wire());
        let reply = parser.next_reply().unwrap().unwrap();
        assert_eq!(parse_track_answer(reply.code, &reply.lines).unwrap().len(), 1000);
    }
}
