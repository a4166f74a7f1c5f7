//! RCPT TO (RFC 5321 4.1.1.3).

use super::{Event, Recipient, Session, State};
use crate::smtp::address::ForwardPath;
use crate::smtp::command::RcptParams;
use crate::smtp::reply::{Reply, SmtpError};

impl<R> Session<R> {
    pub(super) fn handle_rcpt(&mut self, to: ForwardPath, params: RcptParams) -> Option<Event<R>> {
        let max_recipients = self.config.max_recipients;
        let Some(transaction) = self.transaction.as_mut() else {
            self.error(Reply::bad_sequence("Need MAIL command first"));
            return None;
        };
        if transaction.chunks.is_some() {
            self.error(Reply::bad_sequence("RCPT not allowed after BDAT"));
            return None;
        }
        // RFC 5321 4.5.3.1.10: 452 for too many recipients; the client sends the rest later.
        if transaction.recipients.len() >= max_recipients {
            let reply = Reply::too_many_recipients("Too many recipients");
            self.refusals.push(reply.clone());
            self.reply(reply);
            return None;
        }
        // RFC 6531 3.4
        if let ForwardPath::Mailbox(address) = &to {
            if !address.is_ascii() && !transaction.params.smtputf8 {
                self.refuse(Reply::utf8_not_permitted("Non-ASCII recipient address needs SMTPUTF8"));
                return None;
            }
        }
        transaction.pending_recipient = Some((to.clone(), params.clone()));
        self.state = State::AwaitingRecipient;
        Some(Event::CheckRecipient { path: to, params })
    }

    /// The driver's answer to [`Event::CheckRecipient`].
    pub fn recipient_verdict(&mut self, verdict: Result<R, SmtpError>) {
        if !matches!(self.state, State::AwaitingRecipient) {
            return;
        }
        self.state = State::Command;
        let pending = self.transaction.as_mut().and_then(|t| t.pending_recipient.take().map(|p| (t, p)));
        let Some((transaction, (path, params))) = pending else {
            return;
        };
        match verdict {
            Ok(resolved) => {
                let text = match &path {
                    ForwardPath::Postmaster => "Recipient <Postmaster> OK".to_string(),
                    ForwardPath::Mailbox(address) => format!("Recipient <{address}> OK"),
                };
                transaction.recipients.push(Recipient { path, params, resolved });
                self.reply(Reply::recipient_ok(text));
            }
            Err(reply) => self.error(reply),
        }
    }
}
