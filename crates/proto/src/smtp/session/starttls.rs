//! STARTTLS (RFC 3207) and the state reset the SMTP AUTH design team asked for (seed 004).

use super::parts::TlsInfo;
use super::{Event, Session, State};
use crate::smtp::reply::{EnhancedCode, Reply};

impl<R> Session<R> {
    pub(super) fn handle_starttls(&mut self) -> Option<Event<R>> {
        if self.tls.is_some() {
            self.error(Reply::bad_sequence("TLS already active"));
            return None;
        }
        if !self.config.starttls {
            self.error(Reply::not_implemented("STARTTLS is not available"));
            return None;
        }
        if self.greeting.is_none() {
            self.error(Reply::bad_sequence("Send EHLO first: STARTTLS is an ESMTP extension"));
            return None;
        }
        if self.transaction.is_some() {
            self.error(Reply::bad_sequence("STARTTLS not allowed inside a mail transaction"));
            return None;
        }
        self.reply(Reply::new(220, EnhancedCode(2, 0, 0), "Ready to start TLS"));
        // RFC 3207 4.2 and seed 004: nothing the client sent after STARTTLS in the clear may
        // ever be executed; the bytes are dropped, not buffered for after the handshake.
        self.input.clear();
        self.state = State::AwaitingTls;
        Some(Event::StartTls)
    }

    /// The handshake succeeded (after STARTTLS, or at once on an implicit-TLS port). The
    /// server forgets everything from before: EHLO, authentication, transaction (RFC 3207
    /// 4.2); the client must EHLO again.
    pub fn tls_started(&mut self, info: TlsInfo) {
        if self.is_closed() {
            return;
        }
        self.tls = Some(info);
        self.greeting = None;
        self.authenticated = None;
        self.remote = false;
        self.verified_only = false;
        self.rcram = None;
        self.transaction = None;
        self.sasl = None;
        self.input.clear();
        self.state = State::Command;
    }
}
