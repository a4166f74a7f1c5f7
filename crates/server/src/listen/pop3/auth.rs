//! STLS (RFC 2595) and AUTH/USER-PASS (RFC 5034, RFC 1939): the upgrade, the account's
//! secrets under the failure limits (SPEC 3), and each outcome counted.

use vouchmail_proto::pop3::session::{Event, Session};

use super::context::Connection;
use crate::listen::{lookup_secrets, mailbox_login_finished};

impl Connection<'_> {
    /// False: the handshake failed and the connection must close.
    pub async fn start_tls(&mut self, session: &mut Session) -> bool {
        let (context, store) = (self.context, self.store());
        crate::listen::start_tls(session, &mut self.stream, context.tls.as_ref(), store).await
    }

    /// The session back with the event its verification produced; None when the
    /// verification task failed and the connection must close.
    pub async fn lookup_secrets(&mut self, session: Session, authcid: String) -> Option<(Session, Option<Event>)> {
        let (store, limiter) = (self.store(), &self.context.auth_limiter);
        lookup_secrets(&mut self.auth, store, limiter, self.peer, &authcid, session).await
    }

    /// `mechanism`: the session's name of the exchange's mechanism (a fixed set).
    pub async fn auth_finished(&mut self, authcid: Option<String>, success: bool, mechanism: &'static str) {
        self.context.metrics.auth(mechanism, success);
        let (store, limiter, peer) = (self.store(), &self.context.auth_limiter, self.peer);
        mailbox_login_finished(&mut self.auth, store, limiter, peer, authcid, success, "POP3").await;
    }
}
