//! The not authenticated state (RFC 9051 6.2): STARTTLS with the same reset as SMTP
//! STARTTLS, LOGIN (checked as SASL PLAIN, so password checks live in one place), and
//! AUTHENTICATE with every mechanism of the shared SASL layer and SASL-IR (RFC 4959),
//! exactly as POP3 AUTH: clear-text passwords only inside TLS unless the operator allows
//! them, fake SCRAM salts for unknown users.

use super::{Event, Session, TlsInfo, Wait};
use crate::imap::command::{CommandBody, CommandReader};
use crate::imap::response::{write_continuation, ResponseCode, Status, StatusResponse};
use crate::imap::types::Tag;
use crate::sasl::{self, Mechanism, SaslError, Secrets, ServerOptions, ServerSession, ServerStep};

impl Session {
    /// Whether a clear-text password may be sent now: inside TLS, or where the operator
    /// allows it (SPEC 9: loopback).
    pub(super) fn plaintext_allowed(&self) -> bool {
        self.tls.is_some() || self.config.allow_plaintext_passwords
    }

    fn sasl_channel(&self) -> sasl::Channel<'_> {
        let tls = self.tls.as_ref();
        sasl::Channel {
            encrypted: tls.is_some(),
            plaintext_allowed: self.plaintext_allowed(),
            channel_binding: tls.and_then(|t| t.channel_binding.as_deref()),
            external_identity: tls.and_then(|t| t.external_identity.as_deref()),
        }
    }

    /// The mechanisms AUTHENTICATE offers right now (`AUTH=` capabilities).
    pub fn offered_mechanisms(&self) -> Vec<Mechanism> {
        sasl::offered_mechanisms(&self.config.auth_mechanisms, &self.sasl_channel())
    }

    fn sasl_options(&self) -> ServerOptions {
        ServerOptions::for_channel(
            &self.config.hostname,
            &self.sasl_channel(),
            self.config.scram_iterations,
            self.config.scram_fake_salt_key.as_ref(),
        )
    }

    pub(super) fn handle_not_authenticated(&mut self, tag: Tag, body: CommandBody) -> Option<Event> {
        match body {
            CommandBody::StartTls => return self.handle_starttls(tag),
            CommandBody::Login { username, password } => return self.handle_login(tag, &username, &password),
            CommandBody::Authenticate { mechanism, initial_response } => {
                return self.handle_authenticate(tag, &mechanism, initial_response.as_deref())
            }
            _ => self.bad_tagged(&tag, "Log in first"),
        }
        None
    }

    /// The mechanism of the latest AUTH exchange as its SASL name (RFC 4422 3.1), or
    /// `PASSWORD` for a password command outside SASL (IMAP LOGIN, POP3 USER/PASS): a
    /// label from a fixed set for the driver's metrics (SPEC 12), never the client's text.
    pub fn auth_mechanism(&self) -> &'static str {
        self.auth_mechanism
    }

    /// RFC 9051 6.2.1 STARTTLS.
    fn handle_starttls(&mut self, tag: Tag) -> Option<Event> {
        if self.tls.is_some() || !self.config.starttls {
            self.bad_tagged(&tag, "STARTTLS is not available");
            return None;
        }
        self.write(&StatusResponse::ok(&tag, "Begin TLS negotiation now"));
        // RFC 9051 6.2.1 and seed 004: nothing the client pipelined after STARTTLS in the
        // clear is ever executed; the bytes are dropped with the reader.
        self.reader = CommandReader::new(self.config.limits);
        self.wait = Wait::Tls;
        Some(Event::StartTls)
    }

    /// The handshake succeeded after STARTTLS. The session forgets any input from before;
    /// the client asks for the capabilities again (RFC 9051 6.2.1).
    pub fn tls_started(&mut self, info: TlsInfo) {
        if self.closed {
            return;
        }
        self.tls = Some(info);
        self.sasl = None;
        self.reader = CommandReader::new(self.config.limits);
        self.wait = Wait::Ready;
    }

    /// RFC 9051 6.2.3 LOGIN, refused on a clear channel (LOGINDISABLED).
    fn handle_login(&mut self, tag: Tag, username: &str, password: &str) -> Option<Event> {
        if !self.plaintext_allowed() {
            let response = StatusResponse::no(&tag, "LOGIN is disabled on an unencrypted connection")
                .with_code(ResponseCode::PrivacyRequired);
            self.write(&response);
            self.count_error();
            return None;
        }
        if username.contains('\0') || password.contains('\0') || username.is_empty() || password.is_empty() {
            self.bad_tagged(&tag, "Invalid user name or password");
            return None;
        }
        let message = format!("\0{username}\0{password}");
        self.auth_mechanism = "PASSWORD";
        let fresh = self.next_fresh();
        let mut server = ServerSession::new(Mechanism::Plain, &self.sasl_options(), fresh);
        let step = server.start(Some(message.as_bytes()));
        self.sasl = Some(server);
        self.apply_sasl_step(tag, step)
    }

    /// RFC 9051 6.2.2 AUTHENTICATE with RFC 4959 SASL-IR.
    fn handle_authenticate(&mut self, tag: Tag, mechanism: &str, initial_response: Option<&str>) -> Option<Event> {
        let channel = self.sasl_channel();
        let chosen = sasl::select_mechanism(mechanism, &self.config.auth_mechanisms, &channel)
            .and_then(|m| Ok((m, sasl::decode_initial_response(initial_response)?)));
        let (mechanism, initial) = match chosen {
            Ok(chosen) => chosen,
            Err(error) => {
                self.sasl_failure_response(&tag, error);
                return None;
            }
        };
        self.auth_mechanism = mechanism.name();
        let fresh = self.next_fresh();
        let mut server = ServerSession::new(mechanism, &self.sasl_options(), fresh);
        let step = server.start(initial.as_deref());
        self.sasl = Some(server);
        self.apply_sasl_step(tag, step)
    }

    /// A response line inside the exchange; `*` cancels (RFC 9051 6.2.2).
    pub(super) fn handle_auth_response(&mut self, tag: Tag, line: &[u8]) -> Option<Event> {
        let step = match sasl::decode_response(line) {
            Err(error) => ServerStep::Failure(error),
            Ok(response) => match self.sasl.as_mut() {
                Some(server) => server.step(&response),
                None => ServerStep::Failure(SaslError::Malformed),
            },
        };
        self.apply_sasl_step(tag, step)
    }

    /// The driver's answer to [`Event::LookupSecrets`] (None: no such account). This may
    /// verify an Argon2id hash: drivers run it off their async threads.
    pub fn provide_secrets(&mut self, secrets: Option<&Secrets>) -> Option<Event> {
        let Wait::Secrets { tag } = std::mem::replace(&mut self.wait, Wait::Ready) else {
            return None;
        };
        let step = match self.sasl.as_mut() {
            Some(server) => server.provide_secrets(secrets),
            None => ServerStep::Failure(SaslError::Temporary),
        };
        self.apply_sasl_step(tag, step)
    }

    /// The client or account has too many recent failures (SPEC 3): `NO [UNAVAILABLE]`.
    pub fn auth_blocked(&mut self) {
        self.auth_unavailable();
    }

    /// The secrets cannot be read now: `NO [UNAVAILABLE]`, not counted as a guess.
    pub fn auth_unavailable(&mut self) {
        if let Wait::Secrets { tag } = std::mem::replace(&mut self.wait, Wait::Ready) {
            self.finish_auth_failure(&tag, SaslError::Temporary);
        }
    }

    fn apply_sasl_step(&mut self, tag: Tag, step: ServerStep) -> Option<Event> {
        match step {
            ServerStep::Challenge(challenge) => {
                // RFC 9051 6.2.2: "+ " and the base64 challenge.
                write_continuation(&sasl::encode_challenge(&challenge), &mut self.output);
                self.reader.expect_authenticate_response();
                self.wait = Wait::AuthExchange { tag };
                None
            }
            ServerStep::NeedSecrets { authcid } => {
                self.wait = Wait::Secrets { tag };
                Some(Event::LookupSecrets { authcid })
            }
            ServerStep::Success { authcid, authzid } => {
                // RFC 4616 2: acting as another identity is not allowed here.
                if authzid.as_deref().is_some_and(|z| !z.eq_ignore_ascii_case(&authcid)) {
                    self.finish_auth_failure(&tag, SaslError::AuthzDenied);
                    return self.pending_events.pop_front();
                }
                self.sasl = None;
                self.wait = Wait::Ready;
                self.user = Some(authcid.clone());
                // RFC 9051 6.2.2, 6.2.3: the capabilities may change after login; the OK says
                // which they are now.
                let response =
                    StatusResponse::ok(&tag, "Logged in").with_code(ResponseCode::Capability(self.capabilities()));
                self.write(&response);
                Some(Event::AuthFinished { authcid: Some(authcid), success: true })
            }
            ServerStep::Failure(error) => {
                self.finish_auth_failure(&tag, error);
                self.pending_events.pop_front()
            }
        }
    }

    /// Ends the exchange with the error's response; the state stays not authenticated.
    fn finish_auth_failure(&mut self, tag: &Tag, error: SaslError) {
        let authcid = self.sasl.take().and_then(|s| s.authcid().map(str::to_string));
        self.wait = Wait::Ready;
        self.sasl_failure_response(tag, error);
        if error.counts_as_guess() {
            self.pending_events.push_back(Event::AuthFinished { authcid, success: false });
        }
    }

    /// RFC 9051 6.2.2: BAD for a cancelled or malformed exchange, NO with the RFC 9051 7.1
    /// code for a refusal. Each counts towards the error limit.
    fn sasl_failure_response(&mut self, tag: &Tag, error: SaslError) {
        let (status, code) = match error {
            SaslError::Cancelled
            | SaslError::Malformed
            | SaslError::UnexpectedInitialResponse
            | SaslError::LineTooLong => (Status::Bad, None),
            SaslError::BadCredentials | SaslError::MechanismUnavailable | SaslError::BadServerSignature => {
                (Status::No, Some(ResponseCode::AuthenticationFailed))
            }
            SaslError::AuthzDenied => (Status::No, Some(ResponseCode::AuthorizationFailed)),
            SaslError::Temporary => (Status::No, Some(ResponseCode::Unavailable)),
            SaslError::UnknownMechanism => (Status::No, Some(ResponseCode::Cannot)),
            SaslError::EncryptionRequired => (Status::No, Some(ResponseCode::PrivacyRequired)),
        };
        let text = match error {
            SaslError::BadCredentials | SaslError::MechanismUnavailable => "Authentication failed",
            other => other.text(),
        };
        let response = StatusResponse { tag: Some(tag.clone()), status, code, text: text.into() };
        self.write(&response);
        if error != SaslError::Temporary {
            self.count_error();
        }
    }
}
