//! RCPT: who the recipient is and whether this sender may reach it (the rule is
//! `rules::recipient`); the session records the verdict.

use vouchmail_proto::smtp::address::ForwardPath;

use super::context::{Connection, SmtpSession};
use crate::rules::recipient::{resolve_recipient, SenderContext};

impl Connection<'_> {
    pub async fn check_recipient(&mut self, session: &mut SmtpSession, path: ForwardPath) {
        let context = self.context;
        let sender = SenderContext {
            authenticated: session.authenticated(),
            remote_auth: session.is_remote_authenticated(),
            declared_size: session.mail_params().and_then(|p| p.size).unwrap_or(0),
            trusted_relay: context.session_config.trusted_relay,
            later_methods: context.authkeys.verify,
            dmarc_checked: context.domain_verifier.is_some(),
            transaction_policy: session.recipients().iter().find_map(|r| r.resolved.policy),
        };
        let verdict = Box::pin(resolve_recipient(self.store(), &context.postmaster, &path, sender)).await;
        if let Err(reply) = &verdict {
            context.metrics.refused_reply(reply);
        }
        session.recipient_verdict(verdict);
    }
}
