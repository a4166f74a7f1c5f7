//! DATA (RFC 5321 4.1.1.4) and BDAT (RFC 3030), and the end of a mail transaction.

use super::parts::out_of_message_memory;
use super::{DataProgress, Envelope, Event, Session, State};
use crate::headers;
use crate::smtp::data::{DataDecoder, DataEnd};
use crate::smtp::reply::{Reply, SmtpError};

use super::spill::Spill;

/// RFC 5321 4.5.3.1.6: a text line is at most 1000 octets including CRLF.
const MAX_TEXT_LINE: usize = 1000;

/// Message data octets that count as one unit of progress for the read deadline: a
/// client must send at least this much per data timeout (RFC 5321 4.5.3.2.5).
const DATA_PROGRESS_OCTETS: u64 = 8 * 1024;

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
        if self.memory_pressure {
            return self.error(out_of_message_memory());
        }
        self.reply(Reply::plain(354, "End data with <CR><LF>.<CR><LF>"));
        self.start_body();
        self.state = State::Data(DataDecoder::new(self.config.max_message_size, MAX_TEXT_LINE));
    }

    fn start_body(&mut self) {
        self.spill = Spill::default();
        self.data_consumed = 0;
    }

    /// Counts consumed message data towards the read deadline.
    fn data_progress(&mut self, consumed: usize) {
        let before = self.data_consumed / DATA_PROGRESS_OCTETS;
        self.data_consumed = self.data_consumed.saturating_add(consumed as u64);
        self.progress += self.data_consumed / DATA_PROGRESS_OCTETS - before;
    }

    /// Decides the reply of the body being received now; the rest of it is dropped.
    pub(super) fn refuse_body(&mut self, reply: Reply) {
        match &mut self.state {
            State::Data(decoder) => decoder.discard(),
            State::Spilled { .. } => {}
            _ => match self.transaction.as_mut().and_then(|t| t.chunks.as_mut()) {
                Some(chunks) => *chunks = Vec::new(),
                None => return,
            },
        }
        self.spill.refuse(reply);
    }

    /// Hands the part of the body that is due to the driver's spool.
    fn spill_event(&mut self, end: bool) -> Option<Event<R>> {
        let limit = self.config.memory_body_limit;
        let offset = self.spill.offset();
        let body = match &mut self.state {
            State::Data(decoder) => decoder.body_mut(),
            _ => self.transaction.as_mut()?.chunks.as_mut()?,
        };
        let chunk = self.spill.check(body, limit, end)?;
        Some(Event::BodyChunk { offset, chunk })
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
        self.data_progress(consumed);
        let Some(end) = end else {
            return match self.spill_event(false) {
                Some(event) => DataProgress::Event(event),
                None => DataProgress::NeedInput,
            };
        };
        self.progress += 1;
        let spilled_last = if end == DataEnd::Ok { self.spill_event(true) } else { None };
        let State::Data(decoder) = &mut self.state else {
            return DataProgress::Continue;
        };
        let body = decoder.take_body();
        self.state = State::Command;
        match end {
            DataEnd::Ok => self.finish_after(spilled_last, body, false),
            DataEnd::TooLarge => {
                self.transaction = None;
                self.refuse(Reply::too_big("Message size exceeds fixed maximum message size"));
                DataProgress::Continue
            }
            DataEnd::LineTooLong => {
                self.transaction = None;
                self.refuse(Reply::line_too_long("Message has a line longer than 1000 octets"));
                DataProgress::Continue
            }
        }
    }

    /// The end of the data: the last spilled chunk goes to the driver first, so that a
    /// failure to write it still decides the reply.
    fn finish_after(&mut self, spilled_last: Option<Event<R>>, body: Vec<u8>, via_bdat: bool) -> DataProgress<R> {
        match spilled_last {
            Some(chunk) => {
                self.state = State::Spilled { body, via_bdat };
                DataProgress::Event(chunk)
            }
            None => self.finish_message(body, via_bdat),
        }
    }

    /// After the last chunk: the message (or the refusal decided meanwhile).
    pub(super) fn poll_spilled(&mut self) -> DataProgress<R> {
        match std::mem::replace(&mut self.state, State::Command) {
            State::Spilled { body, via_bdat } => self.finish_message(body, via_bdat),
            other => {
                self.state = other;
                DataProgress::Continue
            }
        }
    }

    pub(super) fn handle_bdat(&mut self, size: u64, last: bool) {
        // RFC 3030 2: the chunk is always read, even when it is refused.
        let max_size = self.config.max_message_size as u64;
        let memory_pressure = self.memory_pressure;
        let mut first = false;
        let error = match self.transaction.as_mut() {
            None => Some(Reply::bad_sequence("Need MAIL command first")),
            Some(t) if t.recipients.is_empty() => Some(Reply::no_valid_recipients("No valid recipients")),
            Some(t) => {
                first = t.chunks.is_none();
                if first {
                    t.chunks = Some(Vec::new());
                    t.bdat_received = 0;
                    t.bdat_pending_cr = false;
                }
                t.bdat_received = t.bdat_received.saturating_add(size);
                if first && memory_pressure {
                    Some(out_of_message_memory())
                } else {
                    (t.bdat_received > max_size)
                        .then(|| Reply::too_big("Message size exceeds fixed maximum message size"))
                }
            }
        };
        if first {
            self.start_body();
        }
        self.state = State::Bdat { remaining: size, last, size, error };
    }

    pub(super) fn poll_bdat(&mut self) -> DataProgress<R> {
        let State::Bdat { remaining, error, .. } = &mut self.state else {
            return DataProgress::Continue;
        };
        if *remaining > 0 {
            let take = (*remaining).min(self.input.len() as u64) as usize;
            if take == 0 {
                return DataProgress::NeedInput;
            }
            if error.is_none() && self.spill.refused.is_none() {
                if let Some(t) = self.transaction.as_mut() {
                    if let Some(chunks) = t.chunks.as_mut() {
                        normalize_into(&self.input[..take], chunks, &mut t.bdat_pending_cr);
                    }
                }
            }
            self.input.drain(..take);
            *remaining -= take as u64;
            let more = *remaining > 0;
            self.data_progress(take);
            if more {
                return match self.spill_event(false) {
                    Some(event) => DataProgress::Event(event),
                    None => DataProgress::NeedInput,
                };
            }
        }
        let State::Bdat { last, size, error, .. } = &mut self.state else {
            return DataProgress::Continue;
        };
        let (last, size, error) = (*last, *size, error.take());
        self.progress += 1;
        self.state = State::Command;
        if let Some(reply) = error {
            // RFC 3030 2: after a refused chunk the transaction is over.
            self.transaction = None;
            self.refuse(reply);
            return DataProgress::Continue;
        }
        if !last {
            self.reply(Reply::ok(format!("{size} octets received")));
            return self.spill_event(false).map_or(DataProgress::Continue, DataProgress::Event);
        }
        if let Some(t) = self.transaction.as_mut() {
            if std::mem::take(&mut t.bdat_pending_cr) {
                if let Some(chunks) = t.chunks.as_mut() {
                    chunks.extend_from_slice(b"\r\n");
                }
            }
        }
        let spilled_last = self.spill_event(true);
        let chunks = self.transaction.as_mut().and_then(|t| t.chunks.take()).unwrap_or_default();
        self.finish_after(spilled_last, chunks, true)
    }

    /// A complete body: loop check, then hand it to the driver.
    fn finish_message(&mut self, body: Vec<u8>, via_bdat: bool) -> DataProgress<R> {
        let Some(transaction) = self.transaction.take() else {
            return DataProgress::Continue;
        };
        if let Some(reply) = self.spill.refused.take() {
            self.refuse(reply);
            return DataProgress::Continue;
        }
        // RFC 5321 6.3: too many Received fields means a mail loop.
        if headers::count(&body, "Received") > self.config.max_hops {
            self.refuse(Reply::routing_loop("Too many hops, mail loop detected"));
            return DataProgress::Continue;
        }
        self.state = State::AwaitingCommit;
        DataProgress::Event(Event::Message(Envelope {
            from: transaction.from,
            params: transaction.params,
            recipients: transaction.recipients,
            body,
            spilled: self.spill.spilled,
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

/// Appends `input` to `out` with bare CR and bare LF turned into CRLF; `pending_cr` carries
/// a CR at the end of one piece over to the next, so the result does not depend on how
/// the input is split.
fn normalize_into(input: &[u8], out: &mut Vec<u8>, pending_cr: &mut bool) {
    out.reserve(input.len() + input.len() / 64);
    for &b in input {
        if std::mem::take(pending_cr) {
            out.extend_from_slice(b"\r\n");
            if b == b'\n' {
                continue;
            }
        }
        match b {
            b'\r' => *pending_cr = true,
            b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
    }
}
