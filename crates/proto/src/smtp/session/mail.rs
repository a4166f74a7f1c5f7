//! MAIL FROM (RFC 5321 4.1.1.2) with its ESMTP parameters.

use super::{Service, Session, Transaction};
use crate::smtp::address::ReversePath;
use crate::smtp::command::{AuthParam, BodyType, MailParams};
use crate::smtp::reply::Reply;

impl<R> Session<R> {
    pub(super) fn handle_mail(&mut self, from: ReversePath, mut params: MailParams) {
        if self.greeting.is_none() {
            return self.error(Reply::bad_sequence("Send HELO/EHLO first"));
        }
        if self.transaction.is_some() {
            return self.error(Reply::bad_sequence("Nested MAIL command"));
        }
        // SPEC 2: the submission port always requires authentication (RFC 4954 6).
        if self.config.service == Service::Submission && self.authenticated.is_none() {
            return self.error(Reply::auth_required("Authentication required"));
        }
        // RFC 1870 6.1: a declared size over our limit is refused at once.
        if params
            .size
            .is_some_and(|size| size > self.config.max_message_size as u64)
        {
            return self.error(Reply::too_big(
                "Message size exceeds fixed maximum message size",
            ));
        }
        if params.body == BodyType::BinaryMime {
            return self.error(Reply::unknown_parameter("BINARYMIME is not supported"));
        }
        // RFC 6531 3.4: a non-ASCII address needs the SMTPUTF8 parameter.
        if let ReversePath::Mailbox(address) = &from {
            if !address.is_ascii() && !params.smtputf8 {
                return self.error(Reply::utf8_not_permitted(
                    "Non-ASCII sender address needs SMTPUTF8",
                ));
            }
        }
        // RFC 4954 5 and SPEC 3: an asserted AUTH= identity is kept only from an
        // authenticated client trusted to assert it; anyone else's becomes AUTH=<>.
        // Without the parameter the message is unauthentic, even on an authenticated session.
        params.auth = match params.auth.take() {
            None => None,
            Some(AuthParam::Identity(id)) if self.trusts_auth_param() => {
                Some(AuthParam::Identity(id))
            }
            Some(_) => Some(AuthParam::Unauthenticated),
        };
        let text = match &from {
            ReversePath::Null => "Sender <> OK".to_string(),
            ReversePath::Mailbox(address) => format!("Sender <{address}> OK"),
        };
        self.transaction = Some(Transaction {
            from,
            params,
            recipients: Vec::new(),
            pending_recipient: None,
            chunks: None,
        });
        self.reply(Reply::sender_ok(text));
    }

    /// Whether this client may assert another identity with AUTH= (a trusted relay).
    fn trusts_auth_param(&self) -> bool {
        false
    }
}
