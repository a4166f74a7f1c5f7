//! The SMTP server session as a state machine with no I/O.
//!
//! The driver feeds received bytes with [`Session::feed`], then calls
//! [`Session::poll_event`] until it returns `None`, writing [`Session::take_output`] to the
//! peer whenever `poll_event` has nothing more to do (that is when the input buffer holds
//! no complete command: RFC 2920 3.1 lets the server batch its replies until then).
//! Decisions that need the store (is this recipient ours? is the message on disk?) are
//! asked for with an [`Event`] and answered by the driver; until then the session stops
//! reading input, so pipelined commands are executed strictly in order.
//!
//! One file per stage: `ehlo` (greeting, HELO/EHLO), `starttls`, `auth`, `mail`, `rcpt`,
//! `data` (DATA and BDAT), `turn` (ATRN, ETRN), and the Messenger verbs (SPEC 8): `cert`,
//! `pubcert`, `entities`, `book`, remote authentication (SPEC 8.2: `rcram` on the
//! verifier, `rcram_verify` on the home server), and delivery notifications (SPEC 8.3:
//! `notify`, `receipt`, `track`).

mod auth;
mod book;
mod cert;
mod data;
mod ehlo;
mod entities;
mod mail;
mod notify;
mod parts;
mod pubcert;
mod rcpt;
mod rcram;
mod rcram_verify;
mod receipt;
mod spill;
mod starttls;
mod track;
mod turn;

use std::sync::Arc;
use std::time::Duration;

use super::address::{ForwardPath, ReversePath};
use super::command::{parse_command, Command, MailParams, RcptParams};
use super::data::DataDecoder;
use super::reply::Reply;
use crate::sasl::{Mechanism, ServerSession};

pub use parts::{sasl_reply, RcramVerdict, TlsInfo, MAX_PEM};
pub use spill::{MAX_HEADER_SECTION, SPILL_CHUNK};

/// Longest command line, CRLF included (RFC 5321 4.5.3.1.4).
pub const MAX_COMMAND_LINE: usize = 512;
/// Longest AUTH command line (RFC 4954 4: at least 12288 octets must be accepted).
pub const MAX_AUTH_LINE: usize = 12288;
/// Room an empty input buffer keeps while the session waits ([`Session::release_idle_buffers`]):
/// enough for a command line (RFC 5321 4.5.3.1.4), so a session that sends commands one at a
/// time does not allocate anew for each.
const IDLE_INPUT_CAPACITY: usize = MAX_COMMAND_LINE;

/// Which service a session runs for; it decides what the client must do before mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Port 25: mail from other servers to local (and held) domains.
    Mx,
    /// Port 587/465: mail from local users; authentication is always required.
    Submission,
    /// Port 366: the On-Demand Mail Relay provider (RFC 2645): EHLO, AUTH, ATRN, QUIT
    /// (and STARTTLS, RSET, NOOP); the roles reverse after a successful ATRN.
    Odmr,
    /// Port 21025: the Messenger federation and secure-messaging clients (SPEC 8): the
    /// submission rules plus CERT, PUBCERT, ENTITIES, BOOK, NOTIFY, RECEIPT, TRACK and the
    /// RCRAM-MD5 / X-RCRAM-VERIFY mechanisms.
    Messenger,
}

/// Settings of one listener's sessions. Shared by all its connections.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub service: Service,
    /// Our name, used in the greeting, EHLO and trace headers.
    pub hostname: String,
    /// RFC 1870 SIZE limit in octets.
    pub max_message_size: usize,
    /// RFC 5321 4.5.3.1.8 requires at least 100.
    pub max_recipients: usize,
    /// Received fields beyond this count mean a loop (RFC 5321 6.3).
    pub max_hops: usize,
    /// Negative replies before the session is closed with 421 (like Postfix's
    /// smtpd_hard_error_limit).
    pub max_errors: u32,
    /// Waiting for the next command (RFC 5321 4.5.3.2.7: at least 5 minutes).
    pub command_timeout: Duration,
    /// Waiting for the next block of message data (RFC 5321 4.5.3.2.5: 3 minutes).
    pub data_timeout: Duration,
    /// Waiting for a client's answer to a relayed RCRAM-MD5 challenge (SPEC 8.2 step 7:
    /// 30 s), while the verifier holds a link to the home server for it.
    pub rcram_answer_timeout: Duration,
    /// STARTTLS is offered (RFC 3207) while the connection is not yet encrypted.
    pub starttls: bool,
    /// SASL mechanisms offered with AUTH (RFC 4954); empty turns AUTH off. PLAIN and LOGIN
    /// are offered only inside TLS unless `allow_plaintext_passwords`.
    pub auth_mechanisms: Vec<Mechanism>,
    /// Allow PLAIN and LOGIN on a clear channel (else 538 5.7.11, RFC 4954 6).
    pub allow_plaintext_passwords: bool,
    /// SCRAM iteration count announced for unknown users.
    pub scram_iterations: u32,
    /// The per-installation key of the fake SCRAM salts of unknown users, so that their
    /// salt is as stable as a real account's. None: a random salt on every attempt, which
    /// shows that the user does not exist.
    pub scram_fake_salt_key: Option<crate::sasl::SiteSecret>,
    /// Authenticated identities trusted to assert another identity with MAIL AUTH=
    /// (RFC 4954 5), e.g. a relay's account.
    pub trusted_auth_assertors: Vec<String>,
    /// Offer and accept ETRN (RFC 1985) on this MX listener.
    pub etrn: bool,
    /// ETRN commands one session may send; the ones past it get 458 without asking the
    /// driver (each costs it store lookups) and count as errors.
    pub max_etrn: u32,
    /// The client is a trusted relay (e.g. our ODMR provider in a reversed session):
    /// its mail counts as authenticated (`x-trusted-relay=pass`).
    pub trusted_relay: bool,
    /// Octets of message body kept in memory; beyond it the part after the header section
    /// goes to the driver's spool ([`Event::BodyChunk`]).
    pub memory_body_limit: usize,
}

impl SessionConfig {
    pub fn new(service: Service, hostname: impl Into<String>) -> SessionConfig {
        SessionConfig {
            service,
            hostname: hostname.into(),
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            max_hops: 50,
            max_errors: 20,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            rcram_answer_timeout: Duration::from_secs(30),
            starttls: false,
            auth_mechanisms: Vec::new(),
            allow_plaintext_passwords: false,
            scram_iterations: crate::sasl::secrets::MIN_SCRAM_ITERATIONS,
            scram_fake_salt_key: None,
            trusted_auth_assertors: Vec::new(),
            etrn: false,
            max_etrn: 10,
            trusted_relay: false,
            memory_body_limit: 128 * 1024,
        }
    }
}

/// A recipient accepted by RCPT, with what the driver resolved it to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient<R> {
    pub path: ForwardPath,
    pub params: RcptParams,
    pub resolved: R,
}

/// A complete message, handed to the driver to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<R> {
    pub from: ReversePath,
    pub params: MailParams,
    pub recipients: Vec<Recipient<R>>,
    /// The message as received: dot-unstuffed, CRLF line ends, no trace fields added yet.
    /// When `spilled` is not 0, only its header section: the rest is in the driver's spool.
    pub body: Vec<u8>,
    /// Octets of the body the driver holds from [`Event::BodyChunk`]s, which follow `body`.
    pub spilled: u64,
    /// How the body arrived: "DATA" or "BDAT".
    pub via_bdat: bool,
}

/// What the session needs from the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<R> {
    /// RCPT: decide with [`Session::recipient_verdict`]. The sender and the session's
    /// authentication are available from the session.
    CheckRecipient { path: ForwardPath, params: RcptParams },
    /// End of data: store the message durably, then call [`Session::message_verdict`].
    Message(Envelope<R>),
    /// Part of a large message body that does not stay in memory: write `chunk` at
    /// `offset` of this transaction's spool (offset 0 starts a new spool), or call
    /// [`Session::spill_failed`]. No answer is needed otherwise.
    BodyChunk { offset: u64, chunk: Vec<u8> },
    /// MAIL FROM on an authenticated session: may this user send as this address? Answer
    /// with [`Session::sender_verdict`].
    CheckSender { from: ReversePath },
    /// The 220 to STARTTLS is queued: write the output, run the TLS handshake, then call
    /// [`Session::tls_started`] (or close the connection if the handshake fails).
    StartTls,
    /// AUTH needs the account's stored secrets: call [`Session::provide_secrets`],
    /// [`Session::auth_blocked`] when the failure limit for this client or account is hit,
    /// or [`Session::auth_unavailable`] when they cannot be read now.
    LookupSecrets { authcid: String },
    /// An AUTH exchange ended (for failure counting and the growing delay); no answer needed.
    /// `via_verifier`: an X-RCRAM-VERIFY exchange (SPEC 8.2), whose connecting IP is a
    /// verifier's, standing for all of its clients (it counts them by their own IPs).
    AuthFinished { authcid: Option<String>, success: bool, via_verifier: bool },
    /// ODMR ATRN by the authenticated account (empty: every domain it may take): answer
    /// with [`Session::atrn_verdict`]; on success the roles reverse (RFC 2645 5.2.1).
    Atrn { domains: Vec<String> },
    /// ETRN (RFC 1985): answer with [`Session::etrn_verdict`].
    Etrn { node: String },
    /// A Messenger verb (SPEC 8) the driver answers with the store or the federation
    /// client: call [`Session::messenger_verdict`].
    Messenger(MessengerRequest),
}

/// What a Messenger verb asks of the driver (SPEC 8.1, 8.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessengerRequest {
    /// CERT: the session's authentication decides whether a remote lookup is allowed
    /// (SPEC 8.1: 530 5.7.0 otherwise); the driver knows what is local.
    Cert(crate::messenger::CertTarget),
    /// PUBCERT by the authenticated local user: validate and store the PEM text.
    Pubcert { pem: String },
    /// ENTITIES: this server's own entry changes after `since`.
    Entities { since: u64 },
    /// BOOK by an authenticated session.
    Book { query: String },
    /// SPEC 8.3 `NOTIFY <record>` (any peer): the driver checks the peer's IP against the
    /// home server of the record's recipient domain, then stores it.
    Notify(crate::messenger::tracking::Record),
    /// SPEC 8.3 `RECEIPT` by the authenticated local user.
    Receipt(crate::messenger::tracking::Receipt),
    /// SPEC 8.3 `TRACK [<since>]` by the authenticated local user.
    Track { since: Option<i64> },
    /// SPEC 8.2 step 2, on the verifier: ask the address domain's home server for a
    /// challenge with `AUTH X-RCRAM-VERIFY`; answer with [`Session::rcram_verdict`].
    RcramStart { address: String },
    /// SPEC 8.2 step 5, on the verifier: relay the client's answer line unchanged to the
    /// home server; answer with [`Session::rcram_verdict`].
    RcramAnswer { address: String, line: String },
    /// The client cancelled with `*` (RFC 4954 4): drop the exchange with the home server.
    /// No answer is needed.
    RcramCancel,
    /// SPEC 8.2 step 3, on the home server: `AUTH X-RCRAM-VERIFY <address> <verifier>`.
    /// Check the peer's IP against the verifier's name, the address, then issue a bound
    /// challenge; answer with [`Session::rcram_verdict`].
    VerifyStart { address: String, verifier: String },
    /// SPEC 8.2 step 5, on the home server: the decoded answer to `challenge`.
    VerifyAnswer { address: String, challenge: String, response: Vec<u8> },
    /// SPEC 8.2 step 3, on the home server: the verifier cancelled (`*`) or sent no
    /// answer at all (not base64) to `challenge`. The session has replied; the driver
    /// frees the challenge and counts a failure for the address and against the verifier.
    VerifyCancel { address: String, challenge: String },
}

impl MessengerRequest {
    /// A step of RCRAM-MD5 or X-RCRAM-VERIFY (SPEC 8.2), answered with
    /// [`Session::rcram_verdict`] (or, for `RcramCancel` and `VerifyCancel`, not at all).
    pub fn is_rcram(&self) -> bool {
        matches!(
            self,
            MessengerRequest::RcramStart { .. }
                | MessengerRequest::RcramAnswer { .. }
                | MessengerRequest::RcramCancel
                | MessengerRequest::VerifyStart { .. }
                | MessengerRequest::VerifyAnswer { .. }
                | MessengerRequest::VerifyCancel { .. }
        )
    }
}

/// The driver's answer to [`Event::Messenger`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessengerAnswer {
    /// A reply of ours.
    Reply(Reply),
    /// A home server's reply, passed on unchanged (SPEC 8.1): its code and its octets as
    /// the federation client read and checked them.
    Relayed { code: u16, wire: Vec<u8> },
}

/// The HELO/EHLO the client gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    pub name: String,
    pub extended: bool,
}

#[derive(Debug)]
enum State {
    Command,
    Data(DataDecoder),
    /// Reading a BDAT chunk; `error` is the reply owed once the chunk has been read.
    Bdat {
        remaining: u64,
        last: bool,
        size: u64,
        error: Option<Reply>,
    },
    /// The data has ended and its last chunk went to the driver's spool; the message
    /// follows on the next poll.
    Spilled {
        body: Vec<u8>,
        via_bdat: bool,
    },
    AwaitingRecipient,
    AwaitingCommit,
    AwaitingSender,
    /// STARTTLS accepted; waiting for the driver's handshake.
    AwaitingTls,
    /// Inside an AUTH exchange, waiting for the client's next response line.
    Auth,
    AwaitingSecrets,
    AwaitingAtrn,
    AwaitingEtrn,
    /// Reading the PEM lines of PUBCERT (SPEC 8.1) up to the line `.`.
    Pubcert(parts::PemReader),
    AwaitingMessenger,
    /// An RCRAM-MD5 or X-RCRAM-VERIFY step waits for the driver (SPEC 8.2).
    AwaitingRcram,
    /// Inside an RCRAM-MD5 or X-RCRAM-VERIFY exchange, waiting for the client's answer.
    RcramResponse,
    /// ATRN succeeded: the connection now belongs to the provider's SMTP client.
    Reversed,
    Closed,
}

#[derive(Debug)]
struct Transaction<R> {
    from: ReversePath,
    params: MailParams,
    recipients: Vec<Recipient<R>>,
    /// A RCPT waiting for the driver's verdict.
    pending_recipient: Option<(ForwardPath, RcptParams)>,
    /// Accumulated BDAT chunks (RFC 3030), line endings already normalised.
    chunks: Option<Vec<u8>>,
    /// BDAT octets received so far, for the size limit (the buffer may have been spilled).
    bdat_received: u64,
    /// The last BDAT chunk ended in CR: a CRLF may be split across chunks.
    bdat_pending_cr: bool,
}

/// One SMTP server session.
#[derive(Debug)]
pub struct Session<R> {
    config: Arc<SessionConfig>,
    state: State,
    input: Vec<u8>,
    output: Vec<u8>,
    greeting: Option<Greeting>,
    tls: Option<TlsInfo>,
    authenticated: Option<String>,
    /// `authenticated` came from the address's home server (SPEC 8.2 RCRAM-MD5), not from
    /// a local account.
    remote: bool,
    /// A 235 to X-RCRAM-VERIFY: this connection verified an answer and may not send mail
    /// (SPEC 8.2: 503 5.7.0).
    verified_only: bool,
    /// The RCRAM-MD5 / X-RCRAM-VERIFY exchange in progress.
    rcram: Option<parts::Exchange>,
    sasl: Option<ServerSession>,
    /// The mechanism of the latest AUTH exchange, for the driver's metrics (SPEC 12).
    auth_mechanism: &'static str,
    /// Refusals the session decided itself (not the driver's verdicts), until the driver
    /// takes them for its metrics (SPEC 12).
    refusals: Vec<Reply>,
    /// The driver's clock and random seed; each AUTH exchange gets its own values from it.
    fresh: crate::sasl::Fresh,
    /// AUTH exchanges started, numbering their [`crate::sasl::Fresh::nth`] values.
    exchanges: u64,
    /// Unix time as last given by the driver.
    clock: u64,
    transaction: Option<Transaction<R>>,
    errors: u32,
    /// ETRN commands so far (against `max_etrn`); STARTTLS does not reset it.
    etrn_commands: u32,
    /// Set while skipping the rest of an over-long line.
    discarding_long_line: bool,
    messages_accepted: u64,
    /// The 250 text of a MAIL waiting for the driver's sender check.
    pending_sender_text: Option<String>,
    /// Events raised where no event could be returned directly, handed out first.
    pending_events: std::collections::VecDeque<Event<R>>,
    /// The current message body's spill state.
    spill: spill::Spill,
    /// The driver's in-flight message memory is exhausted: new DATA/BDAT get 452 4.3.1.
    memory_pressure: bool,
    /// Counts complete input units (command lines, blocks of message data); the driver
    /// restarts its read deadline when it changes.
    progress: u64,
    /// Message data octets consumed in this DATA/BDAT, for `progress`.
    data_consumed: u64,
}

impl<R> Session<R> {
    /// Starts a session; the 220 greeting is queued at once (RFC 5321 4.3.1). `fresh`: the
    /// time now and a seed from the OS random source, for the AUTH challenges and nonces.
    pub fn new(config: Arc<SessionConfig>, fresh: crate::sasl::Fresh) -> Session<R> {
        let mut session = Session {
            config,
            state: State::Command,
            input: Vec::new(),
            output: Vec::new(),
            greeting: None,
            tls: None,
            authenticated: None,
            remote: false,
            verified_only: false,
            rcram: None,
            sasl: None,
            auth_mechanism: "none",
            refusals: Vec::new(),
            fresh,
            exchanges: 0,
            clock: fresh.unix_time,
            transaction: None,
            errors: 0,
            etrn_commands: 0,
            discarding_long_line: false,
            messages_accepted: 0,
            pending_sender_text: None,
            pending_events: std::collections::VecDeque::new(),
            spill: spill::Spill::default(),
            memory_pressure: false,
            progress: 0,
            data_consumed: 0,
        };
        let banner = format!("{} ESMTP vouchmail", session.config.hostname);
        session.reply(Reply::plain(220, banner));
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

    /// Gives back the room of an input buffer that a burst of input (a message body,
    /// pipelined commands) grew and that is now empty, before the driver waits for the
    /// client: a session waiting between commands then holds next to nothing (issue 25).
    /// Changes nothing the session does.
    pub fn release_idle_buffers(&mut self) {
        if self.input.is_empty() && self.input.capacity() > IDLE_INPUT_CAPACITY {
            self.input = Vec::new();
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
        matches!(self.state, State::Closed | State::Reversed)
    }

    /// True after a successful ATRN: the driver now runs the provider's SMTP client on the
    /// same connection (RFC 2645 5.3).
    pub fn is_reversed(&self) -> bool {
        matches!(self.state, State::Reversed)
    }

    /// True while the driver owes a verdict.
    pub fn is_awaiting_driver(&self) -> bool {
        matches!(
            self.state,
            State::AwaitingRecipient
                | State::AwaitingCommit
                | State::AwaitingSender
                | State::AwaitingTls
                | State::AwaitingSecrets
                | State::AwaitingAtrn
                | State::AwaitingEtrn
                | State::AwaitingMessenger
                | State::AwaitingRcram
        )
    }

    /// True between commands with no transaction open: a good moment to close on shutdown.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Command) && self.transaction.is_none() && self.input.is_empty()
    }

    /// Changes each time a complete piece of input (a command line, a block of message
    /// data) has been taken. The driver gives the client [`Session::read_timeout`] from the
    /// last change (or from its last reply) to send the next one whole: a deadline, not a
    /// gap between reads, so a client that drips a byte at a time cannot hold the
    /// connection (RFC 5321 4.5.3.2 values, like Postfix's smtpd_per_record_deadline).
    pub fn progress(&self) -> u64 {
        self.progress
    }

    /// Octets of input and message body this session holds in memory now, for the
    /// driver's budget of in-flight message memory.
    pub fn buffered_len(&self) -> usize {
        let body = match &self.state {
            State::Data(decoder) => decoder.body().len(),
            _ => self.transaction.as_ref().and_then(|t| t.chunks.as_ref()).map_or(0, Vec::len),
        };
        body + self.input.len()
    }

    /// The driver's in-flight message memory is (or is no longer) exhausted: DATA and BDAT
    /// are answered 452 4.3.1 while it is.
    pub fn set_memory_pressure(&mut self, exhausted: bool) {
        self.memory_pressure = exhausted;
    }

    /// The message being received does not fit the driver's memory budget: the rest of it
    /// is read and dropped, and the end of data is answered 452 4.3.1.
    pub fn memory_exhausted(&mut self) {
        self.refuse_body(parts::out_of_message_memory());
    }

    /// The driver could not write an [`Event::BodyChunk`]: the end of data gets 451 4.3.0.
    pub fn spill_failed(&mut self) {
        self.refuse_body(Reply::local_error("Local error in processing, try again later"));
    }

    /// How long the driver waits for input in the current state (RFC 5321 4.5.3.2).
    pub fn read_timeout(&self) -> Duration {
        match self.state {
            State::Data(_) | State::Bdat { .. } => self.config.data_timeout,
            // SPEC 8.2 step 7: a client that does not answer in time loses the exchange
            // (the session closes, and with it the link to the home server).
            State::RcramResponse if matches!(self.rcram, Some(parts::Exchange::Relay { .. })) => {
                self.config.rcram_answer_timeout.min(self.config.command_timeout)
            }
            _ => self.config.command_timeout,
        }
    }

    /// The read timed out: 421 and close (RFC 5321 4.5.3.2).
    pub fn on_timeout(&mut self) {
        self.close_with(Reply::timeout(format!("{} Timeout waiting for client input", self.config.hostname)));
    }

    /// The server is shutting down: 421 and close (RFC 5321 3.8).
    pub fn on_shutdown(&mut self) {
        self.close_with(Reply::shutting_down(format!("{} Service shutting down", self.config.hostname)));
    }

    pub fn greeting(&self) -> Option<&Greeting> {
        self.greeting.as_ref()
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }

    /// The authenticated identity, if the client authenticated.
    pub fn authenticated(&self) -> Option<&str> {
        self.authenticated.as_deref()
    }

    /// True when the authenticated identity was verified by its home server (SPEC 8.2):
    /// MAIL FROM only that address, RCPT only local mailboxes, `x-rcram=pass`.
    pub fn is_remote_authenticated(&self) -> bool {
        self.remote && self.authenticated.is_some()
    }

    /// The local user the client authenticated as (not a remote RCRAM-MD5 identity).
    pub fn local_user(&self) -> Option<&str> {
        self.authenticated.as_deref().filter(|_| !self.remote)
    }

    /// True after a 235 to X-RCRAM-VERIFY (SPEC 8.2: verification only).
    pub fn is_verified_only(&self) -> bool {
        self.verified_only
    }

    /// The reverse-path of the open transaction.
    pub fn sender(&self) -> Option<&ReversePath> {
        self.transaction.as_ref().map(|t| &t.from)
    }

    /// The recipients accepted so far in the open transaction.
    pub fn recipients(&self) -> &[Recipient<R>] {
        self.transaction.as_ref().map_or(&[], |t| t.recipients.as_slice())
    }

    pub fn mail_params(&self) -> Option<&MailParams> {
        self.transaction.as_ref().map(|t| &t.params)
    }

    pub fn messages_accepted(&self) -> u64 {
        self.messages_accepted
    }

    /// Runs the session on buffered input until it needs the driver or more input.
    pub fn poll_event(&mut self) -> Option<Event<R>> {
        if let Some(event) = self.pending_events.pop_front() {
            return Some(event);
        }
        loop {
            match &mut self.state {
                State::Closed
                | State::AwaitingRecipient
                | State::AwaitingCommit
                | State::AwaitingSender
                | State::AwaitingTls
                | State::AwaitingSecrets
                | State::AwaitingAtrn
                | State::AwaitingEtrn
                | State::AwaitingMessenger
                | State::AwaitingRcram
                | State::Reversed => return None,
                State::RcramResponse => {
                    let line = self.next_line()?;
                    if let Some(event) = self.handle_rcram_response(&line) {
                        return Some(event);
                    }
                }
                State::Pubcert(_) => {
                    let line = self.next_line()?;
                    if let Some(event) = self.handle_pem_line(&line) {
                        return Some(event);
                    }
                }
                State::Auth => {
                    let line = self.next_line()?;
                    if let Some(event) = self.handle_auth_response(&line) {
                        return Some(event);
                    }
                }
                State::Data(_) => match self.poll_data() {
                    DataProgress::NeedInput => return None,
                    DataProgress::Event(event) => return Some(event),
                    DataProgress::Continue => {}
                },
                State::Spilled { .. } => match self.poll_spilled() {
                    DataProgress::NeedInput => return None,
                    DataProgress::Event(event) => return Some(event),
                    DataProgress::Continue => {}
                },
                State::Bdat { .. } => match self.poll_bdat() {
                    DataProgress::NeedInput => return None,
                    DataProgress::Event(event) => return Some(event),
                    DataProgress::Continue => {}
                },
                State::Command => {
                    let line = self.next_line()?;
                    if let Some(event) = self.handle_line(&line) {
                        return Some(event);
                    }
                }
            }
        }
    }

    /// Takes the next complete command line from the input, enforcing the length limit
    /// (RFC 5321 4.5.3.1.4); an over-long line is answered with 500 5.5.2 and skipped, and
    /// the session goes on.
    fn next_line(&mut self) -> Option<Vec<u8>> {
        loop {
            let newline = self.input.iter().position(|&b| b == b'\n');
            let Some(end) = newline else {
                if self.input.len() > MAX_AUTH_LINE {
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
            let sasl_line =
                matches!(self.state, State::Auth | State::RcramResponse) || starts_with_ignore_case(&line, b"AUTH ");
            let limit = if sasl_line { MAX_AUTH_LINE } else { MAX_COMMAND_LINE };
            if std::mem::take(&mut self.discarding_long_line) || line.len() + 2 > limit {
                if let State::Pubcert(reader) = &mut self.state {
                    // Not a PEM line: the upload is refused at its end, with one reply.
                    reader.overflow();
                    continue;
                }
                if matches!(self.state, State::Auth) {
                    // RFC 4954 4: an over-long exchange line ends the exchange.
                    self.finish_auth_failure(crate::sasl::SaslError::LineTooLong);
                    continue;
                }
                if matches!(self.state, State::RcramResponse) {
                    self.abandon_rcram(crate::sasl::SaslError::LineTooLong);
                    continue;
                }
                self.error(Reply::line_too_long("Line too long"));
                if self.is_closed() {
                    return None;
                }
                continue;
            }
            return Some(line);
        }
    }

    fn handle_line(&mut self, line: &[u8]) -> Option<Event<R>> {
        let command = match parse_command(line) {
            Ok(command) => command,
            Err(reply) => {
                self.error(reply);
                return None;
            }
        };
        if !self.allowed_by_service(&command) {
            self.error(Reply::not_implemented("Command not implemented"));
            return None;
        }
        match command {
            Command::Helo(name) => self.handle_helo(name, false),
            Command::Ehlo(name) => self.handle_helo(name, true),
            Command::Mail { from, params } => return self.handle_mail(from, params),
            Command::Rcpt { to, params } => return self.handle_rcpt(to, params),
            Command::Data => self.handle_data(),
            Command::Bdat { size, last } => self.handle_bdat(size, last),
            Command::Rset => {
                // RFC 5321 4.1.1.5
                self.transaction = None;
                self.reply(Reply::ok("Flushed"));
            }
            Command::Noop => self.reply(Reply::ok("Ok")),
            Command::Quit => {
                let text = format!("{} closing connection", self.config.hostname);
                self.close_with(Reply::closing(text));
            }
            // RFC 5321 3.5.3: 252 when we will not say whether a mailbox exists.
            Command::Vrfy(_) => {
                self.reply(Reply::cannot_verify("Cannot VRFY user, but will accept message and attempt delivery"))
            }
            // RFC 5321 3.5.2: EXPN may be disabled; it would reveal alias members.
            Command::Expn(_) => self.error(Reply::not_implemented("EXPN is not available")),
            Command::Help => self.reply(Reply::new(
                214,
                super::reply::EnhancedCode(2, 0, 0),
                "See https://www.rfc-editor.org/rfc/rfc5321",
            )),
            Command::StartTls => return self.handle_starttls(),
            Command::Auth { mechanism, initial_response } => {
                return self.handle_auth(&mechanism, initial_response.as_deref())
            }
            Command::Etrn(node) => return self.handle_etrn(node),
            Command::Atrn(domains) => return self.handle_atrn(domains),
            Command::Cert(target) => return self.handle_cert(target),
            Command::Pubcert => self.handle_pubcert(),
            Command::Entities(since) => return self.handle_entities(since),
            Command::Book(query) => return self.handle_book(query),
            Command::Notify(record) => return self.handle_notify(record),
            Command::Receipt(receipt) => return self.handle_receipt(receipt),
            Command::Track(since) => return self.handle_track(since),
        }
        None
    }

    /// RFC 2645 5.4: the ODMR provider takes only EHLO, AUTH, ATRN and QUIT (plus STARTTLS,
    /// RSET and NOOP); everything else is 502.
    fn allowed_by_service(&self, command: &Command) -> bool {
        match self.config.service {
            Service::Odmr => matches!(
                command,
                Command::Ehlo(_)
                    | Command::Auth { .. }
                    | Command::Atrn(_)
                    | Command::Quit
                    | Command::StartTls
                    | Command::Rset
                    | Command::Noop
            ),
            // SPEC 8: the Messenger port is ESMTP with its own verbs; ATRN and ETRN belong
            // to the ODMR and MX ports.
            Service::Messenger => !matches!(command, Command::Atrn(_) | Command::Etrn(_)),
            Service::Mx | Service::Submission => !is_messenger_verb(command) && !matches!(command, Command::Atrn(_)),
        }
    }

    /// The driver's answer to [`Event::Messenger`]. Negative replies, ours or relayed,
    /// count towards `max_errors`.
    pub fn messenger_verdict(&mut self, answer: MessengerAnswer) {
        if !matches!(self.state, State::AwaitingMessenger) {
            return;
        }
        self.state = State::Command;
        match answer {
            MessengerAnswer::Reply(reply) if reply.is_positive() => self.reply(reply),
            MessengerAnswer::Reply(reply) => self.error(reply),
            MessengerAnswer::Relayed { code, wire } => {
                // SPEC 8.1: the home server's reply, unchanged.
                self.output.extend_from_slice(&wire);
                if code >= 400 {
                    self.count_error();
                }
            }
        }
    }

    /// Queues a positive or informational reply.
    fn reply(&mut self, reply: Reply) {
        reply.write_to(&mut self.output);
    }

    /// Refuses a step of a mail transaction (MAIL, RCPT, the message) by the session's own
    /// rules, noted for [`Session::take_refusals`]; a 503 out of sequence is an error, not a
    /// refusal of mail.
    fn refuse(&mut self, reply: Reply) {
        if reply.code != 503 {
            self.refusals.push(reply.clone());
        }
        self.error(reply);
    }

    /// The refusals the session made by its own rules since the last call (a size over
    /// the limit, AUTH required, too many recipients, a mail loop, ...): the driver counts
    /// them with the refusals it decides itself (SPEC 12). Empty without allocating when
    /// there were none.
    pub fn take_refusals(&mut self) -> Vec<Reply> {
        std::mem::take(&mut self.refusals)
    }

    /// Queues a negative reply and counts it; too many end the session.
    fn error(&mut self, reply: Reply) {
        self.reply(reply);
        self.count_error();
    }

    /// Counts a negative reply already queued; too many end the session.
    fn count_error(&mut self) {
        self.errors += 1;
        if self.errors >= self.config.max_errors {
            let text = format!("{} Too many errors, closing connection", self.config.hostname);
            self.close_with(Reply::too_many(text));
        }
    }

    /// Queues a final reply and ends the session.
    fn close_with(&mut self, reply: Reply) {
        if !self.is_closed() {
            self.reply(reply);
            self.state = State::Closed;
            self.input.clear();
            self.transaction = None;
            self.sasl = None;
            self.rcram = None;
        }
    }
}

enum DataProgress<R> {
    NeedInput,
    Continue,
    Event(Event<R>),
}

fn is_messenger_verb(command: &Command) -> bool {
    matches!(
        command,
        Command::Cert(_)
            | Command::Pubcert
            | Command::Entities(_)
            | Command::Book(_)
            | Command::Notify(_)
            | Command::Receipt(_)
            | Command::Track(_)
    )
}

fn starts_with_ignore_case(line: &[u8], prefix: &[u8]) -> bool {
    line.len() >= prefix.len() && line[..prefix.len()].eq_ignore_ascii_case(prefix)
}

#[cfg(test)]
mod tests;
