//! The AUTHORIZATION state: USER/PASS (RFC 1939 7), AUTH (RFC 5034) with every mechanism
//! of the shared SASL layer, STLS (RFC 2595 4) with the same reset as SMTP STARTTLS, and
//! the opening of the maildrop.

use super::{multiline, Event, MessageInfo, Session, State, TlsInfo};
use crate::pop3::command::Command;
use crate::pop3::reply::Reply;
use crate::sasl::{self, Mechanism, SaslError, Secrets, ServerOptions, ServerSession, ServerStep};

impl Session {
    /// Whether a clear-text password may be sent now: inside TLS, or where the site
    /// allows it (RFC 2595 2.1).
    pub(super) fn plaintext_allowed(&self) -> bool {
        self.tls.is_some() || self.config.allow_plaintext_passwords
    }

    /// What this connection offers the SASL mechanisms.
    fn sasl_channel(&self) -> sasl::Channel<'_> {
        let tls = self.tls.as_ref();
        sasl::Channel {
            encrypted: tls.is_some(),
            plaintext_allowed: self.plaintext_allowed(),
            channel_binding: tls.and_then(|t| t.channel_binding.as_deref()),
            external_identity: tls.and_then(|t| t.external_identity.as_deref()),
        }
    }

    /// The mechanisms AUTH offers right now (RFC 5034 3).
    pub fn offered_mechanisms(&self) -> Vec<Mechanism> {
        sasl::offered_mechanisms(&self.config.auth_mechanisms, &self.sasl_channel())
    }

    pub(super) fn handle_authorization(&mut self, command: Command) -> Option<Event> {
        match command {
            Command::User(name) => self.handle_user(name),
            Command::Pass(password) => return self.handle_pass(password),
            Command::Auth { mechanism: None, .. } => self.handle_auth_list(),
            Command::Auth { mechanism: Some(mechanism), initial_response } => {
                return self.handle_auth(&mechanism, initial_response.as_deref())
            }
            Command::Apop { .. } => self.error(Reply::apop_unavailable()),
            Command::Stls => return self.handle_stls(),
            // RFC 1939 4: QUIT in AUTHORIZATION closes without entering UPDATE.
            Command::Quit => {
                let text = format!("{} POP3 server signing off", self.config.hostname);
                self.reply(Reply::ok(text));
                self.close();
            }
            Command::Capa => {}
            Command::Stat
            | Command::List(_)
            | Command::Retr(_)
            | Command::Dele(_)
            | Command::Noop
            | Command::Rset
            | Command::Top { .. }
            | Command::Uidl(_) => self.error(Reply::wrong_state()),
        }
        None
    }

    /// The mechanism of the latest AUTH exchange as its SASL name (RFC 4422 3.1), or
    /// `PASSWORD` for a password command outside SASL (IMAP LOGIN, POP3 USER/PASS): a
    /// label from a fixed set for the driver's metrics (SPEC 12), never the client's text.
    pub fn auth_mechanism(&self) -> &'static str {
        self.auth_mechanism
    }

    /// RFC 1939 7 USER. The reply does not tell whether the user exists.
    fn handle_user(&mut self, name: String) {
        if !self.plaintext_allowed() {
            self.error(Reply::plaintext_disallowed());
            return;
        }
        self.state = State::Authorization { user: Some(name) };
        self.reply(Reply::ok("Send PASS"));
    }

    /// RFC 1939 7 PASS: checked as SASL PLAIN (RFC 4616) with the USER name, so password
    /// checks live in one place.
    fn handle_pass(&mut self, password: String) -> Option<Event> {
        if !self.plaintext_allowed() {
            self.error(Reply::plaintext_disallowed());
            return None;
        }
        let State::Authorization { user: Some(user) } =
            std::mem::replace(&mut self.state, State::Authorization { user: None })
        else {
            self.error(Reply::user_first());
            return None;
        };
        if user.contains('\0') || password.contains('\0') {
            self.error(Reply::syntax("NUL is not allowed in a user name or password"));
            return None;
        }
        let message = format!("\0{user}\0{password}");
        self.auth_mechanism = "PASSWORD";
        let fresh = self.next_fresh();
        let mut server = ServerSession::new(Mechanism::Plain, &self.sasl_options(), fresh);
        let step = server.start(Some(message.as_bytes()));
        self.sasl = Some(server);
        self.apply_sasl_step(step)
    }

    /// `AUTH` without a mechanism: the list, as RFC 1734 servers answer it.
    fn handle_auth_list(&mut self) {
        let mechanisms: Vec<&str> = self.offered_mechanisms().iter().map(|m| m.name()).collect();
        self.reply(Reply::ok("Supported SASL mechanisms follow"));
        multiline::write_lines(mechanisms, &mut self.output);
    }

    /// RFC 5034 4 AUTH.
    fn handle_auth(&mut self, mechanism: &str, initial_response: Option<&str>) -> Option<Event> {
        let channel = self.sasl_channel();
        let chosen = sasl::select_mechanism(mechanism, &self.config.auth_mechanisms, &channel)
            .and_then(|m| Ok((m, sasl::decode_initial_response(initial_response)?)));
        let (mechanism, initial) = match chosen {
            Ok(chosen) => chosen,
            Err(error) => {
                self.error(Reply::sasl(error));
                return None;
            }
        };
        self.state = State::Authorization { user: None };
        self.auth_mechanism = mechanism.name();
        let fresh = self.next_fresh();
        let mut server = ServerSession::new(mechanism, &self.sasl_options(), fresh);
        let step = server.start(initial.as_deref());
        self.sasl = Some(server);
        self.apply_sasl_step(step)
    }

    fn sasl_options(&self) -> ServerOptions {
        ServerOptions::for_channel(
            &self.config.hostname,
            &self.sasl_channel(),
            self.config.scram_iterations,
            self.config.scram_fake_salt_key.as_ref(),
        )
    }

    /// A response line inside the exchange; `*` cancels (RFC 5034 4).
    pub(super) fn handle_auth_response(&mut self, line: &[u8]) -> Option<Event> {
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
    pub fn provide_secrets(&mut self, secrets: Option<&Secrets>) -> Option<Event> {
        if !matches!(self.state, State::AwaitingSecrets) {
            return None;
        }
        let step = match self.sasl.as_mut() {
            Some(server) => server.provide_secrets(secrets),
            None => ServerStep::Failure(SaslError::Temporary),
        };
        self.apply_sasl_step(step)
    }

    /// The client or account has too many recent failures: `-ERR [SYS/TEMP]`, try later.
    pub fn auth_blocked(&mut self) {
        self.auth_unavailable();
    }

    /// The secrets cannot be read now (a store error): `-ERR [SYS/TEMP]` (RFC 3206 4), not
    /// counted as a failed attempt.
    pub fn auth_unavailable(&mut self) {
        if matches!(self.state, State::AwaitingSecrets) {
            self.finish_auth_failure(SaslError::Temporary);
        }
    }

    fn apply_sasl_step(&mut self, step: ServerStep) -> Option<Event> {
        match step {
            ServerStep::Challenge(challenge) => {
                // RFC 5034 4: "+ " and the base64 challenge; an empty one is a bare "+ ".
                self.output.extend_from_slice(b"+ ");
                self.output.extend_from_slice(sasl::encode_challenge(&challenge).as_bytes());
                self.output.extend_from_slice(b"\r\n");
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
                self.state = State::AwaitingMailbox { user: authcid.clone() };
                self.pending_events.push_back(Event::OpenMailbox { user: authcid.clone() });
                Some(Event::AuthFinished { authcid: Some(authcid), success: true })
            }
            ServerStep::Failure(error) => {
                self.finish_auth_failure(error);
                self.pending_events.pop_front()
            }
        }
    }

    /// Ends the exchange with the error's reply; the session stays in AUTHORIZATION
    /// (RFC 5034 4, RFC 1939 7).
    pub(super) fn finish_auth_failure(&mut self, error: SaslError) {
        let authcid = self.sasl.take().and_then(|s| s.authcid().map(str::to_string));
        self.state = State::Authorization { user: None };
        self.error(Reply::sasl(error));
        if error.counts_as_guess() {
            self.pending_events.push_back(Event::AuthFinished { authcid, success: false });
        }
    }

    /// The driver's answer to [`Event::OpenMailbox`]: the maildrop's messages in order, or
    /// the reply to give (`[IN-USE]`, `[SYS/TEMP]`). RFC 1939 7: on failure the session
    /// stays in AUTHORIZATION and the client may try again.
    pub fn mailbox_opened(&mut self, result: Result<Vec<MessageInfo>, Reply>) {
        let State::AwaitingMailbox { user } = std::mem::replace(&mut self.state, State::Authorization { user: None })
        else {
            return;
        };
        match result {
            Ok(messages) => {
                let size: u64 = messages.iter().map(|m| m.size).sum();
                let count = messages.len();
                self.maildrop =
                    messages.into_iter().map(|info| super::Entry { info, deleted: false, downloaded: false }).collect();
                self.state = State::Transaction;
                self.reply(Reply::ok(format!("{user}'s maildrop has {count} messages ({size} octets)")));
                self.user = Some(user);
            }
            Err(reply) => self.error(reply),
        }
    }

    /// RFC 2595 4 STLS: only in AUTHORIZATION, only once.
    fn handle_stls(&mut self) -> Option<Event> {
        if self.tls.is_some() {
            self.error(Reply::tls_active());
            return None;
        }
        if !self.config.starttls {
            self.error(Reply::stls_unavailable());
            return None;
        }
        self.reply(Reply::ok("Begin TLS negotiation"));
        // RFC 2595 4 and seed 004: nothing the client sent after STLS in the clear may ever
        // be executed; the bytes are dropped, not buffered for after the handshake.
        self.input.clear();
        self.state = State::AwaitingTls;
        Some(Event::StartTls)
    }

    /// The handshake succeeded (after STLS, or at once on the POP3S port). The session
    /// forgets everything from before, as after SMTP STARTTLS: a USER name, any exchange,
    /// and any input.
    pub fn tls_started(&mut self, info: TlsInfo) {
        if self.is_closed() {
            return;
        }
        self.tls = Some(info);
        self.sasl = None;
        self.input.clear();
        self.state = State::Authorization { user: None };
    }
}
