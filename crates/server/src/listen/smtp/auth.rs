//! AUTH (RFC 4954): the account's secrets fetched under the failure limits (SPEC 3), the
//! CPU-heavy check off the async workers, and the outcome counted, with a growing delay
//! after each failure.

use vouchmail_proto::smtp::session::Event;

use super::context::{Connection, SmtpSession};
use crate::auth::guard::AuthRefusal;
use crate::listen::off_async;
use crate::rules::recipient::Resolved;

impl Connection<'_> {
    /// The session back with the event its verification produced; None when the
    /// verification task failed and the connection must close.
    pub async fn lookup_secrets(
        &mut self,
        mut session: SmtpSession,
        authcid: String,
    ) -> Option<(SmtpSession, Option<Event<Resolved>>)> {
        let (store, limiter) = (self.store(), &self.context.auth_limiter);
        match Box::pin(self.auth.secrets(store, limiter, self.peer, &authcid)).await {
            Err(AuthRefusal::Blocked) => session.auth_blocked(),
            Err(AuthRefusal::Unavailable) => session.auth_unavailable(),
            Ok(secrets) => {
                let Some((returned, event)) = off_async(session, move |s| s.provide_secrets(secrets.as_ref())).await
                else {
                    tracing::error!(peer = %self.peer, "AUTH verification task failed; closing the session");
                    return None;
                };
                return Some((returned, event));
            }
        }
        Some((session, None))
    }

    pub async fn auth_finished(&mut self, authcid: Option<String>, success: bool, via_verifier: bool) {
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
