//! STARTTLS (RFC 9051 6.2.1) and LOGIN/AUTHENTICATE (RFC 9051 6.2.2, 6.2.3): the upgrade,
//! the account's secrets under the failure limits shared with SMTP and POP3 (SPEC 3), and
//! each outcome counted.

use vouchmail_proto::imap::session::{Event, Session};

use super::context::Connection;
use crate::listen::lookup_secrets;
use crate::net::tls::upgrade;

impl Connection<'_> {
    /// False: the handshake failed and the connection must close.
    pub async fn start_tls(&mut self, session: &mut Session) -> bool {
        let pending = session.take_output();
        let (context, store) = (self.context, self.store());
        match upgrade(&mut self.stream, &pending, context.tls.as_ref(), store).await {
            Some(info) => {
                session.tls_started(info);
                true
            }
            None => false,
        }
    }

    /// The session back with the event its verification produced; None when the
    /// verification task failed and the connection must close.
    pub async fn lookup_secrets(&mut self, session: Session, authcid: String) -> Option<(Session, Option<Event>)> {
        let (store, limiter) = (self.store(), &self.context.auth_limiter);
        lookup_secrets(&mut self.auth, store, limiter, self.peer, &authcid, session).await
    }

    pub async fn auth_finished(&mut self, authcid: Option<String>, success: bool) {
        let (store, limiter, peer) = (self.store(), &self.context.auth_limiter, self.peer);
        let delay = Box::pin(self.auth.finished(store, limiter, peer, authcid.as_deref(), success, false)).await;
        if success {
            tracing::info!(%peer, user = ?authcid, "IMAP login");
        } else {
            tracing::warn!(%peer, user = ?authcid, "IMAP authentication failed");
            // The growing delay slows password guessing (SPEC 3).
            tokio::time::sleep(delay).await;
        }
    }
}
