//! The Messenger listener's verbs (SPEC 8): CERT, PUBCERT, ENTITIES, BOOK, NOTIFY, RECEIPT
//! and TRACK answered by `federation`, and the RCRAM-MD5 steps (SPEC 8.2) of both roles,
//! under the AUTH limits.

use vouchmail_proto::sasl::SaslError;
use vouchmail_proto::smtp::reply::Reply;
use vouchmail_proto::smtp::session::{sasl_reply, Event, MessengerAnswer, MessengerRequest, RcramVerdict};

use super::context::{Connection, SmtpSession};
use crate::federation::rcram::Caller;
use crate::net::tls::peer_chain;
use crate::rules::recipient::Resolved;

impl Connection<'_> {
    pub async fn messenger(&mut self, session: &mut SmtpSession, request: MessengerRequest) -> Option<Event<Resolved>> {
        if request.is_rcram() {
            return self.rcram(session, request).await;
        }
        let user = session.authenticated().map(str::to_string);
        let answer = match &self.context.messenger {
            Some(messenger) => Box::pin(messenger.answer(request, user.as_deref(), self.peer)).await,
            None => MessengerAnswer::Reply(Reply::not_implemented("Command not implemented")),
        };
        session.messenger_verdict(answer);
        None
    }

    /// SPEC 8.2: the RCRAM steps, with this session's exchange (verifier) and the AUTH
    /// limits.
    async fn rcram(&mut self, session: &mut SmtpSession, request: MessengerRequest) -> Option<Event<Resolved>> {
        let Some(messenger) = &self.context.messenger else {
            session.messenger_verdict(MessengerAnswer::Reply(Reply::not_implemented("Command not implemented")));
            return None;
        };
        let (store, limiter, peer) = (self.store(), self.context.auth_limiter.as_ref(), self.peer);
        let link = self.rcram_link.get_or_insert_with(Box::default);
        let verdict = match request {
            // SPEC 8.2 / SPEC 3: the AUTH limits hold for remote logins too, with the same
            // exemption for familiar clients.
            MessengerRequest::RcramStart { address }
                if Box::pin(self.auth.admit(store, limiter, peer, &address)).await.is_err() =>
            {
                link.cancel();
                Some(RcramVerdict::Unavailable(sasl_reply(SaslError::Temporary)))
            }
            // SPEC 8.2 step 3: a verifier is never familiar; its own budget holds.
            MessengerRequest::VerifyStart { address, .. }
                if self.auth.admit_verifier(limiter, peer, &address).is_err() =>
            {
                Some(RcramVerdict::Unavailable(sasl_reply(SaslError::Temporary)))
            }
            MessengerRequest::RcramStart { address } => {
                Some(Box::pin(messenger.rcram_start(link, &address, peer)).await)
            }
            MessengerRequest::RcramAnswer { address, line } => {
                Some(Box::pin(messenger.rcram_answer(link, &address, &line, peer)).await)
            }
            MessengerRequest::VerifyStart { address, verifier } => {
                let chain = peer_chain(&self.stream).unwrap_or_default();
                let caller = Caller { ip: peer, chain: &chain };
                Some(Box::pin(messenger.verify_start(link, &address, &verifier, caller, limiter)).await)
            }
            MessengerRequest::VerifyAnswer { address, challenge, response } => {
                Some(Box::pin(messenger.verify_answer(link, &address, &challenge, &response, peer)).await)
            }
            // SPEC 8.2 step 3: the session has answered the cancel; the challenge is freed
            // and the cancel counts as a failed attempt (for the address, against the
            // verifier).
            MessengerRequest::VerifyCancel { address, challenge } => {
                messenger.verify_cancel(link, &address, &challenge, peer);
                return Some(Event::AuthFinished { authcid: Some(address), success: false, via_verifier: true });
            }
            _ => {
                link.cancel();
                None
            }
        };
        verdict.and_then(|verdict| session.rcram_verdict(verdict))
    }
}
