//! DATA (RFC 5321 4.1.1.4) and BDAT (RFC 3030), and the end of a mail transaction.

use super::{DataProgress, Envelope, Event, Session, State};
use crate::headers;
use crate::smtp::data::{DataDecoder, DataEnd};
use crate::smtp::reply::{Reply, SmtpError};

/// RFC 5321 4.5.3.1.6: a text line is at most 1000 octets including CRLF.
const MAX_TEXT_LINE: usize = 1000;

impl<R> Session<R> {
    pub(super) fn handle_data(&mut self) {
        let Some(transaction) = self.transaction.as_ref() else {
            return self.error(Reply::bad_sequence("Need MAIL command first"));
        };
        if transaction.chunks.is_some() {
            return self.error(Reply::bad_sequence("DATA not allowed after BDAT"));
        }
        // RFC 2920 3.1: with every RCPT refused, DATA is refused too.
        if transaction.recipients.is_empty() {
            return self.error(Reply::no_valid_recipients("No valid recipients"));
        }
        self.reply(Reply::plain(354, "End data with <CR><LF>.<CR><LF>"));
        self.state = State::Data(DataDecoder::new(self.config.max_message_size, MAX_TEXT_LINE));
    }

    pub(super) fn poll_data(&mut self) -> DataProgress<R> {
        let State::Data(decoder) = &mut self.state else {
            return DataProgress::Continue;
        };
        if self.input.is_empty() {
            return DataProgress::NeedInput;
        }
        let (consumed, end) = decoder.feed(&self.input);
        self.input.drain(..consumed);
        let Some(end) = end else {
            return DataProgress::NeedInput;
        };
        let body = decoder.take_body();
        self.state = State::Command;
        match end {
            DataEnd::Ok => self.finish_message(body, false),
            DataEnd::TooLarge => {
                self.transaction = None;
                self.error(Reply::too_big("Message size exceeds fixed maximum message size"));
                DataProgress::Continue
            }
            DataEnd::LineTooLong => {
                self.transaction = None;
                self.error(Reply::line_too_long("Message has a line longer than 1000 octets"));
                DataProgress::Continue
            }
        }
    }

    pub(super) fn handle_bdat(&mut self, size: u64, last: bool) {
        // RFC 3030 2: the chunk is always read, even when it is refused.
        let error = match self.transaction.as_mut() {
            None => Some(Reply::bad_sequence("Need MAIL command first")),
            Some(t) if t.recipients.is_empty() => Some(Reply::no_valid_recipients("No valid recipients")),
            Some(t) => {
                let so_far = t.chunks.get_or_insert_with(Vec::new).len() as u64;
                (so_far.saturating_add(size) > self.config.max_message_size as u64)
                    .then(|| Reply::too_big("Message size exceeds fixed maximum message size"))
            }
        };
        self.state = State::Bdat { remaining: size, last, size, error };
    }

    pub(super) fn poll_bdat(&mut self) -> DataProgress<R> {
        let State::Bdat { remaining, last, size, error } = &mut self.state else {
            return DataProgress::Continue;
        };
        if *remaining > 0 {
            let take = (*remaining).min(self.input.len() as u64) as usize;
            if take == 0 {
                return DataProgress::NeedInput;
            }
            if error.is_none() {
                if let Some(chunks) = self.transaction.as_mut().and_then(|t| t.chunks.as_mut()) {
                    chunks.extend_from_slice(&self.input[..take]);
                }
            }
            self.input.drain(..take);
            *remaining -= take as u64;
            if *remaining > 0 {
                return DataProgress::NeedInput;
            }
        }
        let (last, size, error) = (*last, *size, error.take());
        self.state = State::Command;
        if let Some(reply) = error {
            // RFC 3030 2: after a refused chunk the transaction is over.
            self.transaction = None;
            self.error(reply);
            return DataProgress::Continue;
        }
        if !last {
            self.reply(Reply::ok(format!("{size} octets received")));
            return DataProgress::Continue;
        }
        let chunks = self.transaction.as_mut().and_then(|t| t.chunks.take()).unwrap_or_default();
        self.finish_message(normalize_line_endings(&chunks), true)
    }

    /// A complete body: loop check, then hand it to the driver.
    fn finish_message(&mut self, body: Vec<u8>, via_bdat: bool) -> DataProgress<R> {
        let Some(transaction) = self.transaction.take() else {
            return DataProgress::Continue;
        };
        // RFC 5321 6.3: too many Received fields means a mail loop.
        if headers::count(&body, "Received") > self.config.max_hops {
            self.error(Reply::routing_loop("Too many hops, mail loop detected"));
            return DataProgress::Continue;
        }
        self.state = State::AwaitingCommit;
        DataProgress::Event(Event::Message(Envelope {
            from: transaction.from,
            params: transaction.params,
            recipients: transaction.recipients,
            body,
            via_bdat,
        }))
    }

    /// The driver's answer to [`Event::Message`]: the queue id once the message is on
    /// stable storage (SPEC 5: only then 250), or the refusal.
    pub fn message_verdict(&mut self, verdict: Result<String, SmtpError>) {
        if !matches!(self.state, State::AwaitingCommit) {
            return;
        }
        self.state = State::Command;
        match verdict {
            Ok(queue_id) => {
                self.messages_accepted += 1;
                self.reply(Reply::ok(format!("Ok: queued as {queue_id}")));
            }
            Err(reply) => self.error(reply),
        }
    }
}

/// Bare CR and bare LF become CRLF, so stored messages are CRLF-clean like DATA bodies.
pub fn normalize_line_endings(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 64);
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                i += if input.get(i + 1) == Some(&b'\n') { 2 } else { 1 };
            }
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}
