//! PUBCERT (SPEC 8.1): an authenticated local user uploads its certificate. `354`, then
//! the PEM lines up to a line `.` (dot-stuffed as DATA, RFC 5321 4.5.2), then the driver
//! validates and stores it.

use super::parts::{PemReader, MAX_PEM};
use super::{Event, MessengerRequest, Session, State};
use crate::messenger::replies;
use crate::smtp::reply::Reply;

impl<R> Session<R> {
    pub(super) fn handle_pubcert(&mut self) {
        if self.greeting.is_none() {
            self.error(Reply::greet_first());
            return;
        }
        // SPEC 8.1: only a locally authenticated user publishes its own certificate.
        if self.local_user().is_none() {
            self.error(replies::pubcert_needs_local_auth());
            return;
        }
        if self.transaction.is_some() {
            self.error(Reply::bad_sequence("PUBCERT not allowed inside a mail transaction"));
            return;
        }
        self.reply(replies::pubcert_go_ahead());
        self.state = State::Pubcert(PemReader::default());
    }

    /// One line of the upload (without its line end).
    pub(super) fn handle_pem_line(&mut self, line: &[u8]) -> Option<Event<R>> {
        let State::Pubcert(reader) = &mut self.state else { return None };
        if line == b"." {
            let reader = std::mem::take(reader);
            if let Some(reason) = reader.refused {
                self.state = State::Command;
                self.error(replies::pubcert_refused(reason));
                return None;
            }
            self.state = State::AwaitingMessenger;
            return Some(Event::Messenger(MessengerRequest::Pubcert { pem: reader.text }));
        }
        // RFC 5321 4.5.2: a leading dot was doubled by the sender.
        let line = line.strip_prefix(b".").unwrap_or(line);
        match std::str::from_utf8(line) {
            Ok(text) if reader.text.len() + text.len() < MAX_PEM => {
                reader.text.push_str(text);
                reader.text.push('\n');
            }
            Ok(_) => reader.overflow(),
            Err(_) => {
                reader.refused.get_or_insert("Certificate upload is not text");
            }
        }
        None
    }
}
