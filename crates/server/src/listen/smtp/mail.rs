//! MAIL FROM on submission: the address must be the user's own (`rules::mail_from`).

use vouchmail_proto::smtp::address::ReversePath;

use super::context::{Connection, SmtpSession};
use crate::rules::mail_from::check_sender;

impl Connection<'_> {
    pub async fn check_sender(&mut self, session: &mut SmtpSession, from: ReversePath) {
        let user = session.authenticated().unwrap_or_default().to_string();
        let verdict = Box::pin(check_sender(self.store(), &user, &from)).await;
        if let Err(reply) = &verdict {
            self.context.metrics.refused_reply(reply);
        }
        session.sender_verdict(verdict);
    }
}
