//! AUTH (RFC 4954): the account's secrets fetched under the failure limits (SPEC 3), the
//! CPU-heavy check off the async workers, and the outcome counted, with a growing delay
//! after each failure.

use vouchmail_proto::smtp::session::Event;

use super::context::{Connection, SmtpSession};
use crate::listen::lookup_secrets;
use crate::rules::recipient::Resolved;

impl Connection<'_> {
    /// The session back with the event its verification produced; None when the
    /// verification task failed and the connection must close.
    pub async fn lookup_secrets(
        &mut self,
        session: SmtpSession,
        authcid: String,
    ) -> Option<(SmtpSession, Option<Event<Resolved>>)> {
        let (store, limiter) = (self.store(), &self.context.auth_limiter);
        lookup_secrets(&mut self.auth, store, limiter, self.peer, &authcid, session).await
    }

    /// `mechanism`: the session's name of the exchange's mechanism (a fixed set).
    pub async fn auth_finished(
        &mut self,
        authcid: Option<String>,
        success: bool,
        via_verifier: bool,
        mechanism: &'static str,
    ) {
        self.context.metrics.auth(mechanism, success);
        let (store, limiter, peer) = (self.store(), &self.context.auth_limiter, self.peer);
        let delay = Box::pin(self.auth.finished(store, limiter, peer, authcid.as_deref(), success, via_verifier)).await;
        if success && via_verifier {
            tracing::info!(%peer, user = ?authcid, "verified for a verifier (X-RCRAM-VERIFY)");
        } else if success {
            tracing::info!(%peer, user = ?authcid, "authenticated");
        } else {
            tracing::warn!(%peer, user = ?authcid, "authentication failed");
            // The growing delay slows password guessing (SPEC 3).
            tokio::time::sleep(delay).await;
        }
    }
}
