//! MAIL FROM (RFC 5321 4.1.1.2) with its ESMTP parameters.

use super::{Event, Service, Session, State, Transaction};
use crate::smtp::address::ReversePath;
use crate::smtp::command::{AuthParam, BodyType, MailParams};
use crate::smtp::reply::{Reply, SmtpError};

impl<R> Session<R> {
    pub(super) fn handle_mail(&mut self, from: ReversePath, mut params: MailParams) -> Option<Event<R>> {
        if let Err(reply) = self.check_mail(&from, &params) {
            self.refuse(reply);
            return None;
        }
        // RFC 4954 5 and SPEC 3: an asserted AUTH= identity is kept only from an
        // authenticated client trusted to assert it; anyone else's becomes AUTH=<>.
        // Without the parameter the message is unauthentic, even on an authenticated session.
        params.auth = match params.auth.take() {
            None => None,
            Some(AuthParam::Identity(id)) if self.trusts_auth_param(&id) => Some(AuthParam::Identity(id)),
            Some(_) => Some(AuthParam::Unauthenticated),
        };
        let text = match &from {
            ReversePath::Null => "Sender <> OK".to_string(),
            ReversePath::Mailbox(address) => format!("Sender <{address}> OK"),
        };
        // SPEC 8.2: a remotely authenticated client sends only as its own address; the
        // session knows it, no store is asked.
        if self.is_remote_authenticated() {
            let own = from.address().is_some_and(|a| {
                self.authenticated.as_deref().is_some_and(|user| a.to_string().eq_ignore_ascii_case(user))
            });
            if !own {
                let user = self.authenticated.clone().unwrap_or_default();
                self.refuse(Reply::rcram_sender_mismatch(&user));
                return None;
            }
        }
        let check = self.local_user().is_some().then(|| from.clone());
        self.transaction = Some(Transaction {
            from,
            params,
            recipients: Vec::new(),
            pending_recipient: None,
            chunks: None,
            bdat_received: 0,
            bdat_pending_cr: false,
        });
        if let Some(from) = check {
            // The driver checks the user may send as this address (553 5.7.1 otherwise).
            self.state = State::AwaitingSender;
            self.pending_sender_text = Some(text);
            return Some(Event::CheckSender { from });
        }
        self.reply(Reply::sender_ok(text));
        None
    }

    fn check_mail(&self, from: &ReversePath, params: &MailParams) -> Result<(), SmtpError> {
        if self.greeting.is_none() {
            return Err(Reply::greet_first());
        }
        if self.transaction.is_some() {
            return Err(Reply::bad_sequence("Nested MAIL command"));
        }
        // SPEC 2: the submission and messenger ports always require authentication
        // (RFC 4954 6; SPEC 8: MAIL, RCPT and DATA need an authenticated sender).
        // SPEC 8.2: a 235 to X-RCRAM-VERIFY grants verification only.
        if self.verified_only {
            return Err(Reply::verification_only());
        }
        if matches!(self.config.service, Service::Submission | Service::Messenger) && self.authenticated.is_none() {
            return Err(Reply::auth_required("Authentication required"));
        }
        // RFC 1870 6.1: a declared size over our limit is refused at once.
        if params.size.is_some_and(|size| size > self.config.max_message_size as u64) {
            return Err(Reply::too_big("Message size exceeds fixed maximum message size"));
        }
        if params.body == BodyType::BinaryMime {
            return Err(Reply::unknown_parameter("BINARYMIME is not supported"));
        }
        // RFC 6531 3.4: a non-ASCII address needs the SMTPUTF8 parameter.
        if let ReversePath::Mailbox(address) = from {
            if !address.is_ascii() && !params.smtputf8 {
                return Err(Reply::utf8_not_permitted("Non-ASCII sender address needs SMTPUTF8"));
            }
        }
        Ok(())
    }

    /// The driver's answer to [`Event::CheckSender`].
    pub fn sender_verdict(&mut self, verdict: Result<(), SmtpError>) {
        if !matches!(self.state, State::AwaitingSender) {
            return;
        }
        self.state = State::Command;
        let text = self.pending_sender_text.take().unwrap_or_default();
        match verdict {
            Ok(()) => self.reply(Reply::sender_ok(text)),
            Err(reply) => {
                self.transaction = None;
                self.error(reply);
            }
        }
    }

    /// Whether this client may assert `identity` with AUTH=: its own identity, or any when
    /// it is a configured trusted relay account.
    fn trusts_auth_param(&self, identity: &str) -> bool {
        self.authenticated.as_deref().is_some_and(|user| {
            user.eq_ignore_ascii_case(identity)
                || self.config.trusted_auth_assertors.iter().any(|t| t.eq_ignore_ascii_case(user))
        })
    }
}
