//! Turning the connection around: ATRN for the ODMR provider (RFC 2645 5.2.1) and ETRN on
//! the MX listener (RFC 1985).

use super::{Event, Service, Session, State};
use crate::smtp::reply::{Reply, SmtpError};

impl<R> Session<R> {
    pub(super) fn handle_atrn(&mut self, domains: Vec<String>) -> Option<Event<R>> {
        if self.config.service != Service::Odmr {
            self.error(Reply::not_implemented("Command not implemented"));
            return None;
        }
        // RFC 2645 5.2.1: "MUST be rejected if the session has not been authenticated".
        if self.authenticated.is_none() {
            self.error(Reply::auth_required("Authentication required"));
            return None;
        }
        self.state = State::AwaitingAtrn;
        Some(Event::Atrn { domains })
    }

    /// The driver's answer to [`Event::Atrn`]: Ok reverses the roles (250), or the refusal
    /// (450 not allowed or too soon, 451 cannot check now, 453 no mail).
    pub fn atrn_verdict(&mut self, verdict: Result<(), SmtpError>) {
        if !matches!(self.state, State::AwaitingAtrn) {
            return;
        }
        self.state = State::Command;
        match verdict {
            Ok(()) => {
                self.reply(Reply::atrn_reversing());
                // Anything the customer sent after ATRN belongs to the reversed session.
                self.state = State::Reversed;
            }
            Err(reply) => self.error(reply),
        }
    }

    /// Bytes the client sent after ATRN that the session did not consume (the customer's
    /// greeting may already be here).
    pub fn take_unread_input(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.input)
    }

    pub(super) fn handle_etrn(&mut self, node: String) -> Option<Event<R>> {
        if self.config.service != Service::Mx || !self.config.etrn {
            self.error(Reply::not_implemented("Command not implemented"));
            return None;
        }
        if self.greeting.is_none() {
            self.error(Reply::greet_first());
            return None;
        }
        // RFC 1985 5: not inside a mail transaction.
        if self.transaction.is_some() {
            self.error(Reply::bad_sequence("ETRN not allowed inside a mail transaction"));
            return None;
        }
        // Each ETRN costs the server store lookups: past the cap the session answers alone,
        // and each refusal counts as an error, so a flood ends in 421 (RFC 1985 5: 458).
        self.etrn_commands = self.etrn_commands.saturating_add(1);
        if self.etrn_commands > self.config.max_etrn {
            self.error(Reply::etrn_too_many(&node));
            return None;
        }
        self.state = State::AwaitingEtrn;
        Some(Event::Etrn { node })
    }

    /// The driver's answer to [`Event::Etrn`]: 250/251/252/253, or 458/459, which are
    /// errors and count towards `max_errors` (RFC 1985 5).
    pub fn etrn_verdict(&mut self, reply: Reply) {
        if !matches!(self.state, State::AwaitingEtrn) {
            return;
        }
        self.state = State::Command;
        // RFC 1985 makes 251 ("no messages waiting") a success, but each one cost a store
        // trip for nothing: counted with the errors, a client polling ETRN in a loop ends
        // in 421 like any other misbehaving client (issue 14).
        if reply.is_positive() && reply.code != 251 {
            self.reply(reply);
        } else {
            self.error(reply);
        }
    }
}
