//! AUTH (RFC 4954) with the rules of the SMTP AUTH design team (seed 004): no AUTH inside a
//! mail transaction, none after a successful one, `=` for an empty initial response, `*`
//! to cancel.

use super::parts::sasl_reply;
use super::{Event, Service, Session, State};
use crate::sasl::{self, Mechanism, SaslError, Secrets, ServerOptions, ServerSession, ServerStep};
use crate::smtp::reply::{EnhancedCode, Reply};

impl<R> Session<R> {
    /// The mechanism of the latest AUTH exchange as its SASL name (RFC 4422 3.1), or
    /// `PASSWORD` for a password command outside SASL (IMAP LOGIN, POP3 USER/PASS): a
    /// label from a fixed set for the driver's metrics (SPEC 12), never the client's text.
    pub fn auth_mechanism(&self) -> &'static str {
        self.auth_mechanism
    }

    /// What this connection offers the SASL mechanisms.
    fn sasl_channel(&self) -> sasl::Channel<'_> {
        let tls = self.tls.as_ref();
        sasl::Channel {
            encrypted: tls.is_some(),
            plaintext_allowed: tls.is_some() || self.config.allow_plaintext_passwords,
            channel_binding: tls.and_then(|t| t.channel_binding.as_deref()),
            external_identity: tls.and_then(|t| t.external_identity.as_deref()),
        }
    }

    /// The mechanisms AUTH offers right now (RFC 4954 3).
    pub fn offered_mechanisms(&self) -> Vec<Mechanism> {
        sasl::offered_mechanisms(&self.config.auth_mechanisms, &self.sasl_channel())
    }

    pub(super) fn handle_auth(&mut self, mechanism: &str, initial_response: Option<&str>) -> Option<Event<R>> {
        let rcram = self.config.service == Service::Messenger
            && (mechanism.eq_ignore_ascii_case(crate::messenger::rcram::MECHANISM)
                || mechanism.eq_ignore_ascii_case(crate::messenger::rcram::VERIFY_MECHANISM));
        if self.config.auth_mechanisms.is_empty() && !rcram {
            self.error(Reply::not_implemented("AUTH is not available"));
            return None;
        }
        if self.greeting.is_none() {
            self.error(Reply::bad_sequence("Send EHLO first: AUTH is an ESMTP extension"));
            return None;
        }
        // RFC 4954 4: a second AUTH after success is refused.
        if self.authenticated.is_some() || self.verified_only {
            self.error(Reply::bad_sequence("Already authenticated"));
            return None;
        }
        // Seed 004: AUTH only outside a mail transaction.
        if self.transaction.is_some() {
            self.error(Reply::bad_sequence("AUTH not allowed inside a mail transaction"));
            return None;
        }
        // SPEC 8.2: the two RCRAM mechanisms of the Messenger port are stages of their own.
        if rcram && mechanism.eq_ignore_ascii_case(crate::messenger::rcram::MECHANISM) {
            self.auth_mechanism = crate::messenger::rcram::MECHANISM;
            return self.handle_rcram(initial_response);
        }
        if rcram {
            self.auth_mechanism = crate::messenger::rcram::VERIFY_MECHANISM;
            return self.handle_rcram_verify(initial_response);
        }
        let channel = self.sasl_channel();
        let chosen = sasl::select_mechanism(mechanism, &self.config.auth_mechanisms, &channel)
            .and_then(|m| Ok((m, sasl::decode_initial_response(initial_response)?)));
        let (mechanism, initial) = match chosen {
            Ok(chosen) => chosen,
            Err(error) => {
                self.error(sasl_reply(error));
                return None;
            }
        };
        let options = ServerOptions::for_channel(
            &self.config.hostname,
            &channel,
            self.config.scram_iterations,
            self.config.scram_fake_salt_key.as_ref(),
        );
        self.auth_mechanism = mechanism.name();
        let fresh = self.next_fresh();
        let mut server = ServerSession::new(mechanism, &options, fresh);
        let step = server.start(initial.as_deref());
        self.sasl = Some(server);
        self.apply_sasl_step(step)
    }

    /// A response line inside the exchange.
    pub(super) fn handle_auth_response(&mut self, line: &[u8]) -> Option<Event<R>> {
        let step = match sasl::decode_response(line) {
            Err(error) => ServerStep::Failure(error),
            Ok(response) => match self.sasl.as_mut() {
                Some(server) => server.step(&response),
                None => ServerStep::Failure(SaslError::Malformed),
            },
        };
        self.apply_sasl_step(step)
    }

    /// The driver's answer to [`Event::LookupSecrets`] (None: no such account). This may
    /// verify an Argon2id hash: drivers run it off their async threads.
    pub fn provide_secrets(&mut self, secrets: Option<&Secrets>) -> Option<Event<R>> {
        if !matches!(self.state, State::AwaitingSecrets) {
            return None;
        }
        let step = match self.sasl.as_mut() {
            Some(server) => server.provide_secrets(secrets),
            None => ServerStep::Failure(SaslError::Temporary),
        };
        self.apply_sasl_step(step)
    }

    /// The client or account has too many recent failures: 454 4.7.0, try later.
    pub fn auth_blocked(&mut self) {
        self.auth_unavailable();
    }

    /// The secrets cannot be read now (a store error): 454 4.7.0, a temporary failure
    /// (SPEC 3), not counted as a failed attempt.
    pub fn auth_unavailable(&mut self) {
        if matches!(self.state, State::AwaitingSecrets) {
            self.finish_auth_failure(SaslError::Temporary);
        }
    }

    fn apply_sasl_step(&mut self, step: ServerStep) -> Option<Event<R>> {
        match step {
            ServerStep::Challenge(challenge) => {
                let text = sasl::encode_challenge(&challenge);
                // RFC 4954 4: `334 <base64>`; an empty challenge is a bare "334 ".
                self.reply(Reply::plain(334, text));
                self.state = State::Auth;
                None
            }
            ServerStep::NeedSecrets { authcid } => {
                self.state = State::AwaitingSecrets;
                Some(Event::LookupSecrets { authcid })
            }
            ServerStep::Success { authcid, authzid } => {
                // RFC 4616 2: acting as another identity is not allowed here.
                if authzid.as_deref().is_some_and(|z| !z.eq_ignore_ascii_case(&authcid)) {
                    self.finish_auth_failure(SaslError::AuthzDenied);
                    return self.pending_events.pop_front();
                }
                self.sasl = None;
                self.state = State::Command;
                self.reply(Reply::new(235, EnhancedCode(2, 7, 0), "Authentication successful"));
                self.authenticated = Some(authcid.clone());
                Some(Event::AuthFinished { authcid: Some(authcid), success: true, via_verifier: false })
            }
            ServerStep::Failure(error) => {
                self.finish_auth_failure(error);
                self.pending_events.pop_front()
            }
        }
    }

    /// Ends the exchange with the error's reply; the session stays usable (RFC 4954 4).
    pub(super) fn finish_auth_failure(&mut self, error: SaslError) {
        let authcid = self.sasl.take().and_then(|s| s.authcid().map(str::to_string));
        self.state = State::Command;
        self.error(sasl_reply(error));
        if error.counts_as_guess() {
            self.pending_events.push_back(Event::AuthFinished { authcid, success: false, via_verifier: false });
        }
    }
}
