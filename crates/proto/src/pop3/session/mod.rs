//! The POP3 server session (RFC 1939) as a state machine with no I/O, driven like the SMTP
//! one: the driver feeds received bytes with [`Session::feed`], calls
//! [`Session::poll_event`] until it returns `None`, and writes [`Session::take_output`]
//! whenever `poll_event` has nothing more to do. Replies to pipelined commands (RFC 2449
//! 6.6) are batched until the input holds no complete command. What needs the store or the
//! socket is asked for with an [`Event`] and answered by the driver; until then the
//! session reads no further input, so pipelined commands run strictly in order.
//!
//! States (RFC 1939 3): AUTHORIZATION until USER/PASS or AUTH succeeds and the maildrop is
//! opened, then TRANSACTION; QUIT in TRANSACTION enters UPDATE, the only place where
//! messages marked deleted are removed. A dropped connection or a timeout removes nothing.
//!
//! One file per stage: `auth` (USER/PASS, AUTH, STLS), `transaction` (the maildrop).

mod auth;
mod transaction;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::command::{parse_command, Command};
use super::multiline;
use super::reply::Reply;
use crate::sasl::{Mechanism, ServerSession};

/// What the driver learned from the TLS handshake (shared with SMTP).
pub use crate::smtp::session::TlsInfo;

/// RFC 2449 4: a command line is at most 255 octets, CRLF included.
pub const MAX_COMMAND_LINE: usize = 255;
/// Output queued before the session stops reading commands until the driver has written
/// it: pipelined RETRs must not pile whole maildrops up in memory.
pub const MAX_BUFFERED_OUTPUT: usize = 1 << 20;
/// Longest AUTH command or SASL response line. RFC 5034 4 lifts the RFC 2449 limit for the
/// exchange; SCRAM and EXTERNAL messages fit easily, as in SMTP (RFC 4954 4: 12288).
pub const MAX_AUTH_LINE: usize = 12288;

/// Settings of one listener's sessions, shared by all its connections.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our name, used in the greeting and the SASL challenges.
    pub hostname: String,
    /// STLS is offered (RFC 2595 4) while the connection is not yet encrypted.
    pub starttls: bool,
    /// SASL mechanisms offered with AUTH (RFC 5034); empty turns AUTH off.
    pub auth_mechanisms: Vec<Mechanism>,
    /// USER/PASS and SASL PLAIN/LOGIN on a clear channel (RFC 2595 2.1: off by default).
    pub allow_plaintext_passwords: bool,
    /// Negative replies before the session is closed.
    pub max_errors: u32,
    /// RFC 1939 3: the inactivity autologout timer, at least 10 minutes.
    pub idle_timeout: Duration,
    /// Longest command line, CRLF included (RFC 2449 4: 255).
    pub max_command_line: usize,
    /// Longest AUTH command or SASL response line, CRLF included.
    pub max_auth_line: usize,
    /// SCRAM iteration count announced for unknown users.
    pub scram_iterations: u32,
    /// The per-installation key of the fake SCRAM salts of unknown users, so that their
    /// salt is as stable as a real account's. None: a random salt on every attempt, which
    /// shows that the user does not exist.
    pub scram_fake_salt_key: Option<crate::sasl::SiteSecret>,
}

impl SessionConfig {
    pub fn new(hostname: impl Into<String>) -> SessionConfig {
        SessionConfig {
            hostname: hostname.into(),
            starttls: false,
            auth_mechanisms: Vec::new(),
            allow_plaintext_passwords: false,
            max_errors: 20,
            idle_timeout: Duration::from_secs(600),
            max_command_line: MAX_COMMAND_LINE,
            max_auth_line: MAX_AUTH_LINE,
            scram_iterations: crate::sasl::secrets::MIN_SCRAM_ITERATIONS,
            scram_fake_salt_key: None,
        }
    }
}

/// One message of the maildrop as the driver listed it when it opened the maildrop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// RFC 1939 7: the unique-id, 1 to 70 characters in 0x21..=0x7E, stable across
    /// sessions and never reused for another message of the maildrop.
    pub uid: String,
    /// Octets as RETR sends them before byte-stuffing (RFC 1939 5 LIST).
    pub size: u64,
}

/// What the session needs from the driver. Message numbers are 1-based, as on the wire,
/// and index the list given to [`Session::mailbox_opened`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The `+OK` to STLS is queued: write the output, run the TLS handshake, then call
    /// [`Session::tls_started`] (or close the connection if the handshake fails).
    StartTls,
    /// USER/PASS or AUTH needs the account's stored secrets: call
    /// [`Session::provide_secrets`] (off the async threads: it may hash a password),
    /// [`Session::auth_blocked`] when the failure limit for this client or account is hit,
    /// or [`Session::auth_unavailable`] when they cannot be read now.
    LookupSecrets { authcid: String },
    /// An authentication attempt ended (for failure counting); no answer needed.
    AuthFinished { authcid: Option<String>, success: bool },
    /// `user` authenticated: lock its maildrop and list it, then call
    /// [`Session::mailbox_opened`] (an `[IN-USE]` error when another session holds it).
    OpenMailbox { user: String },
    /// RETR (`top` None) or TOP: load the message and call [`Session::message_loaded`].
    Fetch { number: usize, top: Option<u32> },
    /// The first RETR of this message in this session (or the first TOP that sent all of
    /// it) was answered: record the `downloaded` tracking event (SPEC 9). No answer needed.
    Downloaded { number: usize },
    /// QUIT in TRANSACTION (RFC 1939 6, UPDATE): remove these messages in one go, release
    /// the maildrop, then call [`Session::update_done`]. Sent even when nothing is deleted.
    Update { deleted: Vec<usize> },
}

#[derive(Debug)]
enum State {
    /// RFC 1939 4; `user` is the name a USER command gave.
    Authorization {
        user: Option<String>,
    },
    /// Inside an AUTH exchange, waiting for the client's next response line.
    Auth,
    AwaitingSecrets,
    /// Authenticated as `user`; waiting for the driver to open the maildrop.
    AwaitingMailbox {
        user: String,
    },
    /// RFC 1939 5.
    Transaction,
    AwaitingMessage {
        number: usize,
        top: Option<u32>,
    },
    /// RFC 1939 6.
    AwaitingUpdate,
    /// STLS accepted; waiting for the driver's handshake.
    AwaitingTls,
    Closed,
}

/// One message of the open maildrop.
#[derive(Debug)]
struct Entry {
    info: MessageInfo,
    deleted: bool,
    downloaded: bool,
}

/// One POP3 server session.
#[derive(Debug)]
pub struct Session {
    config: Arc<SessionConfig>,
    state: State,
    input: Vec<u8>,
    output: Vec<u8>,
    tls: Option<TlsInfo>,
    /// The authenticated user, from the successful login on.
    user: Option<String>,
    sasl: Option<ServerSession>,
    /// The mechanism of the latest AUTH exchange, for the driver's metrics (SPEC 12).
    auth_mechanism: &'static str,
    /// The driver's clock and random seed; each AUTH exchange gets its own values from it.
    fresh: crate::sasl::Fresh,
    /// AUTH exchanges started, numbering their [`crate::sasl::Fresh::nth`] values.
    exchanges: u64,
    /// Unix time as last given by the driver.
    clock: u64,
    maildrop: Vec<Entry>,
    errors: u32,
    /// Set while skipping the rest of an over-long line.
    discarding_long_line: bool,
    /// Events raised where no event could be returned directly, handed out first.
    pending_events: VecDeque<Event>,
    /// Complete lines taken so far; the driver restarts its read deadline when it changes.
    progress: u64,
}

impl Session {
    /// Starts a session; the greeting is queued at once (RFC 1939 4). It carries no
    /// timestamp: APOP is not offered.
    /// `fresh`: the time now and a seed from the OS random source, for the AUTH challenges
    /// and nonces.
    pub fn new(config: Arc<SessionConfig>, fresh: crate::sasl::Fresh) -> Session {
        let mut session = Session {
            config,
            state: State::Authorization { user: None },
            input: Vec::new(),
            output: Vec::new(),
            tls: None,
            user: None,
            sasl: None,
            auth_mechanism: "none",
            fresh,
            exchanges: 0,
            clock: fresh.unix_time,
            maildrop: Vec::new(),
            errors: 0,
            discarding_long_line: false,
            pending_events: VecDeque::new(),
            progress: 0,
        };
        let banner = format!("{} POP3 server (vouchmail) ready", session.config.hostname);
        session.reply(Reply::ok(banner));
        session
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The time now (Unix seconds), for the AUTH exchanges that follow; without it they use
    /// the time the session started with.
    pub fn set_clock(&mut self, unix_time: u64) {
        self.clock = unix_time;
    }

    /// The time and random seed of the next AUTH exchange.
    fn next_fresh(&mut self) -> crate::sasl::Fresh {
        self.exchanges += 1;
        self.fresh.nth(self.exchanges, self.clock)
    }

    /// Adds received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        if !matches!(self.state, State::Closed) {
            self.input.extend_from_slice(bytes);
        }
    }

    /// Bytes to send to the client.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// True once the session has ended (QUIT, too many errors, timeout, shutdown). The
    /// driver writes the remaining output and closes the connection.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// True while the driver owes an answer.
    pub fn is_awaiting_driver(&self) -> bool {
        matches!(
            self.state,
            State::AwaitingSecrets
                | State::AwaitingMailbox { .. }
                | State::AwaitingMessage { .. }
                | State::AwaitingUpdate
                | State::AwaitingTls
        )
    }

    /// True between commands with no input waiting: a good moment to close on shutdown.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Authorization { .. } | State::Transaction) && self.input.is_empty()
    }

    /// True in the TRANSACTION state (the maildrop is open).
    pub fn in_transaction(&self) -> bool {
        matches!(self.state, State::Transaction | State::AwaitingMessage { .. })
    }

    /// True when a complete command is buffered but was left for after the driver writes
    /// the output (see [`MAX_BUFFERED_OUTPUT`]): poll again before reading more.
    pub fn has_buffered_command(&self) -> bool {
        !self.is_closed() && !self.is_awaiting_driver() && self.input.contains(&b'\n')
    }

    /// Changes each time a complete line has been taken. The driver gives the client
    /// [`Session::read_timeout`] from the last change (or its last reply) to send the next
    /// line whole, so a client dripping a byte at a time cannot hold the connection.
    pub fn progress(&self) -> u64 {
        self.progress
    }

    /// How long the driver waits for input (RFC 1939 3: at least 10 minutes).
    pub fn read_timeout(&self) -> Duration {
        self.config.idle_timeout
    }

    /// RFC 1939 3: when the autologout timer expires the server closes the connection
    /// without a response and without entering UPDATE: nothing is deleted.
    pub fn on_timeout(&mut self) {
        self.close();
    }

    /// The server is shutting down: `-ERR [SYS/TEMP]` and close; nothing is deleted.
    pub fn on_shutdown(&mut self) {
        if !self.is_closed() {
            self.reply(Reply::shutting_down());
            self.close();
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }

    /// The authenticated user, once the maildrop is open.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The unique-id of message `number` (1-based), deleted or not.
    pub fn uid(&self, number: usize) -> Option<&str> {
        self.entry(number).map(|e| e.info.uid.as_str())
    }

    /// Runs the session on buffered input until it needs the driver or more input.
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(event) = self.pending_events.pop_front() {
            return Some(event);
        }
        loop {
            match self.state {
                State::Closed
                | State::AwaitingSecrets
                | State::AwaitingMailbox { .. }
                | State::AwaitingMessage { .. }
                | State::AwaitingUpdate
                | State::AwaitingTls => return None,
                _ if self.output.len() >= MAX_BUFFERED_OUTPUT => return None,
                State::Auth => {
                    let line = self.next_line()?;
                    if let Some(event) = self.handle_auth_response(&line) {
                        return Some(event);
                    }
                }
                State::Authorization { .. } | State::Transaction => {
                    let line = self.next_line()?;
                    if let Some(event) = self.handle_line(&line) {
                        return Some(event);
                    }
                }
            }
            if let Some(event) = self.pending_events.pop_front() {
                return Some(event);
            }
        }
    }

    /// Takes the next complete line from the input, enforcing the length limits; an
    /// over-long command is answered with `-ERR` and skipped, and the session goes on.
    fn next_line(&mut self) -> Option<Vec<u8>> {
        loop {
            let Some(end) = self.input.iter().position(|&b| b == b'\n') else {
                if self.input.len() > self.config.max_auth_line.max(self.config.max_command_line) {
                    self.input.clear();
                    self.discarding_long_line = true;
                }
                return None;
            };
            let mut line: Vec<u8> = self.input.drain(..=end).collect();
            self.progress += 1;
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let in_exchange = matches!(self.state, State::Auth);
            let sasl_line = in_exchange || starts_with_ignore_case(&line, b"AUTH ");
            let limit = if sasl_line { self.config.max_auth_line } else { self.config.max_command_line };
            if std::mem::take(&mut self.discarding_long_line) || line.len() + 2 > limit {
                if in_exchange {
                    self.finish_auth_failure(crate::sasl::SaslError::LineTooLong);
                } else {
                    self.error(Reply::line_too_long());
                }
                if self.is_closed() {
                    return None;
                }
                continue;
            }
            return Some(line);
        }
    }

    fn handle_line(&mut self, line: &[u8]) -> Option<Event> {
        let command = match parse_command(line) {
            Ok(command) => command,
            Err(reply) => {
                self.error(reply);
                return None;
            }
        };
        if let Command::Capa = command {
            self.handle_capa();
            return None;
        }
        match self.state {
            State::Authorization { .. } => self.handle_authorization(command),
            State::Transaction => self.handle_transaction(command),
            _ => None,
        }
    }

    /// RFC 2449 5: capabilities available in the AUTHORIZATION state are announced in
    /// both states, so the list does not depend on the state.
    fn handle_capa(&mut self) {
        let mut caps: Vec<String> =
            ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"].into_iter().map(String::from).collect();
        if self.plaintext_allowed() {
            caps.push("USER".into());
        }
        let mechanisms = self.offered_mechanisms();
        if !mechanisms.is_empty() {
            let names: Vec<&str> = mechanisms.iter().map(|m| m.name()).collect();
            caps.push(format!("SASL {}", names.join(" ")));
        }
        if self.config.starttls && self.tls.is_none() {
            caps.push("STLS".into());
        }
        caps.push("IMPLEMENTATION vouchmail".into());
        self.reply(Reply::ok("Capability list follows"));
        multiline::write_lines(caps, &mut self.output);
    }

    /// Queues a positive reply or a status line that does not count as an error.
    fn reply(&mut self, reply: Reply) {
        reply.write_to(&mut self.output);
    }

    /// Queues a negative reply and counts it; too many end the session after this one
    /// (a second status line would be taken for the answer to the next command).
    fn error(&mut self, reply: Reply) {
        self.reply(reply);
        self.errors += 1;
        if self.errors >= self.config.max_errors {
            self.close();
        }
    }

    /// Ends the session with nothing more to say. Nothing marked deleted is removed.
    fn close(&mut self) {
        self.state = State::Closed;
        self.input.clear();
        self.sasl = None;
        self.maildrop.clear();
    }

    fn entry(&self, number: usize) -> Option<&Entry> {
        number.checked_sub(1).and_then(|i| self.maildrop.get(i))
    }
}

fn starts_with_ignore_case(line: &[u8], prefix: &[u8]) -> bool {
    line.len() >= prefix.len() && line[..prefix.len()].eq_ignore_ascii_case(prefix)
}

#[cfg(test)]
mod tests;
