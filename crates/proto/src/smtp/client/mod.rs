//! The SMTP client (RFC 5321) as a state machine with no I/O.
//!
//! The driver connects, then loops: [`Client::poll_event`] until `None`, write
//! [`Client::take_output`], read with [`Client::timeout`] and [`Client::feed`] what arrived
//! (or call [`Client::on_closed`] / [`Client::on_timeout`]). Events tell it when the session
//! is ready for a message ([`ClientEvent::Ready`]), when to run the TLS handshake
//! ([`ClientEvent::StartTls`], then [`Client::tls_started`]), the per-recipient outcome of
//! each message ([`ClientEvent::Done`]) and when the session is unusable
//! ([`ClientEvent::Failed`]).
//!
//! Covered: EHLO with HELO fallback (RFC 5321 4.1.4), PIPELINING (RFC 2920), SIZE (RFC 1870),
//! 8BITMIME (RFC 6152: an 8-bit message to a server without it fails with 5.6.3), SMTPUTF8
//! (RFC 6531), STARTTLS (RFC 3207), AUTH with [`ClientSession`] (RFC 4954), the MAIL AUTH=
//! parameter (RFC 4954 5), DSN parameters (RFC 3461), several recipients per transaction,
//! RSET before reusing a connection whose last transaction did not complete, QUIT.
//!
//! Besides mail transactions, the session runs any command for a shell that speaks another
//! verb set over SMTP (the Messenger's CERT, ENTITIES, BOOK, TRACK and PUBCERT, SPEC 8; ODMR's
//! ATRN, RFC 2645): [`Client::command`] sends one line and reports the whole reply
//! ([`ClientEvent::Reply`], exact octets kept), [`Client::send_block`] sends dot-stuffed
//! lines after a 354, [`Client::authenticate`] runs AUTH on demand
//! ([`ClientEvent::Auth`]), [`Client::pump`] lends the connection to another sans-I/O
//! [`Exchange`] (RCRAM-MD5, SPEC 8.2), and [`Client::release`] hands the connection back
//! with the bytes read beyond the last reply (after ATRN's 250 the roles reverse).
//!
//! The client reads only the replies it awaits: bytes that arrive when none is awaited stay
//! unread ([`Client::take_unread_input`]) and are read as the reply to the next command.

pub mod ehlo;
mod exchange;
pub mod reply;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crate::sasl::{self, ClientSession, Credentials, Mechanism, SaslError, NONCE_RANDOM_LEN};
use crate::smtp::data::dot_stuff;
use crate::smtp::reply::{EnhancedCode, Reply};
use crate::smtp::xtext::{xtext_encode, DsnReturn};

pub use ehlo::Capabilities;
pub use exchange::Exchange;
pub use reply::{ReplyLimits, ReplyParser, ReplySyntaxError, ServerReply};

/// When to use STARTTLS (RFC 3207), like Postfix's `smtp_tls_security_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// Never.
    Never,
    /// When the server offers it; otherwise, or when it refuses, go on in the clear.
    #[default]
    Opportunistic,
    /// When the server offers it, and then the session fails if it refuses; without the
    /// offer, go on in the clear (the Messenger clients, SPEC 8: a server that announces
    /// STARTTLS and then refuses it is not talked to in the clear).
    WhenOffered,
    /// The session fails unless TLS is established.
    Required,
}

/// Reply timeouts (RFC 5321 4.5.3.2); the driver applies them to each read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// 4.5.3.2.1 initial 220: 5 minutes.
    pub greeting: Duration,
    /// EHLO, STARTTLS, AUTH, RSET, QUIT (not fixed by the RFC; 5 minutes like MAIL).
    pub command: Duration,
    /// 4.5.3.2.2 MAIL: 5 minutes.
    pub mail: Duration,
    /// 4.5.3.2.3 RCPT: 5 minutes.
    pub rcpt: Duration,
    /// 4.5.3.2.4 DATA initiation: 2 minutes.
    pub data_init: Duration,
    /// 4.5.3.2.6 DATA termination: 10 minutes.
    pub data_term: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            greeting: Duration::from_secs(300),
            command: Duration::from_secs(300),
            mail: Duration::from_secs(300),
            rcpt: Duration::from_secs(300),
            data_init: Duration::from_secs(120),
            data_term: Duration::from_secs(600),
        }
    }
}

impl Timeouts {
    /// Every timeout the same (tests).
    pub fn all(d: Duration) -> Timeouts {
        Timeouts { greeting: d, command: d, mail: d, rcpt: d, data_init: d, data_term: d }
    }
}

/// How one client session behaves.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Our name for EHLO/HELO.
    pub helo_name: String,
    pub tls: TlsMode,
    /// Authenticate with these (RFC 4954) when set; the session fails if the server offers
    /// no usable mechanism.
    pub credentials: Option<Credentials>,
    /// Allow PLAIN and LOGIN without TLS.
    pub allow_cleartext_auth: bool,
    pub timeouts: Timeouts,
    /// Read replies strictly ([`ReplyParser::strict`]): for replies passed on unchanged
    /// (a relayed CERT reply, SPEC 8.1). Off for delivery to any server.
    pub strict_replies: bool,
    /// The limits of every reply, unless [`Client::command_with_limits`] sets its own.
    pub reply_limits: ReplyLimits,
}

impl ClientConfig {
    pub fn new(helo_name: impl Into<String>) -> ClientConfig {
        ClientConfig {
            helo_name: helo_name.into(),
            tls: TlsMode::Opportunistic,
            credentials: None,
            allow_cleartext_auth: false,
            timeouts: Timeouts::default(),
            strict_replies: false,
            reply_limits: ReplyLimits::default(),
        }
    }
}

/// One recipient of an outgoing message, with its DSN parameters as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRecipient {
    /// `local@domain`, canonical form.
    pub address: String,
    /// RFC 3461 4.1 NOTIFY value, e.g. `SUCCESS,FAILURE` or `NEVER`.
    pub notify: Option<String>,
    /// RFC 3461 4.2 ORCPT, decoded: `addr-type;address`.
    pub orcpt: Option<String>,
}

/// A message to send in one transaction.
#[derive(Debug, Clone)]
pub struct OutboundMessage {
    /// The reverse-path without brackets; empty for the null sender `<>`.
    pub sender: String,
    pub recipients: Vec<OutboundRecipient>,
    /// The message, CRLF line ends, not dot-stuffed.
    pub data: Arc<Vec<u8>>,
    pub ret: Option<DsnReturn>,
    /// RFC 3461 4.4, decoded.
    pub envid: Option<String>,
    /// The identity for MAIL AUTH= (RFC 4954 5); `None` sends `AUTH=<>`. Used only with
    /// servers that announce AUTH (SPEC 3).
    pub auth: Option<String>,
    /// The message was received with SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
}

/// The outcome of one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionResult {
    /// One reply per recipient, in the order given: positive means the server took
    /// responsibility for that recipient.
    pub replies: Vec<Reply>,
    /// The server announced DSN, so NOTIFY/ORCPT went along (RFC 3461 5.2.1).
    pub dsn_relayed: bool,
    /// The message data went out (the final "." was sent).
    pub data_sent: bool,
}

impl TransactionResult {
    pub fn accepted(&self) -> usize {
        self.replies.iter().filter(|r| r.is_positive()).count()
    }
}

/// What the client needs from its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// Greeting, EHLO, STARTTLS and AUTH are done: call [`Client::send_message`] or
    /// [`Client::quit`].
    Ready,
    /// The STARTTLS 220 arrived: run the TLS handshake on the connection, then call
    /// [`Client::tls_started`] (or drop the connection if it fails).
    StartTls,
    /// A transaction ended; the session is ready again unless `Failed` follows.
    Done(TransactionResult),
    /// The session cannot go on; close the connection. The reply says why (the server's,
    /// or one made up here with a 4xx code for connection problems).
    Failed(Reply),
    /// QUIT was answered, or the server closed after it.
    Closed,
    /// The reply to [`Client::command`] or [`Client::send_block`], whole and with its exact
    /// octets; the session is ready again.
    Reply(ServerReply),
    /// How [`Client::authenticate`] ended. The session is ready again, unless `Failed`
    /// follows (the server's SCRAM proof was wrong).
    Auth(AuthOutcome),
}

/// How an AUTH started with [`Client::authenticate`] ended (RFC 4954 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// 235 (and, for SCRAM, the server proved it knows the password).
    Success,
    /// The server refused (535, 534, 538, 504, 454...): its reply as received.
    Refused(ServerReply),
    /// Our side gave up: a challenge we could not answer (we cancelled with `*`, RFC 4954 4,
    /// and the server answered), or a wrong SCRAM server proof. Why, as a reply.
    Failed(Reply),
}

/// Why a command was not sent. Nothing went to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// The line holds a CR or LF: it would end the command early and send the rest as a
    /// command of its own (RFC 5321 2.3.8).
    LineBreak,
    /// The session is not ready: still in setup, a reply awaited, an exchange running, or
    /// closed.
    NotReady,
    /// [`Client::send_block`] without a 354 to the command before it (RFC 5321 4.1.1.4).
    NoGoAhead,
    /// The SASL client could not begin (e.g. SCRAM without a nonce).
    Sasl(SaslError),
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandError::LineBreak => f.write_str("a command line may not hold CR or LF"),
            CommandError::NotReady => f.write_str("the SMTP session is not ready for a command"),
            CommandError::NoGoAhead => f.write_str("a block of lines goes only after a 354 reply"),
            CommandError::Sasl(e) => write!(f, "AUTH: {e}"),
        }
    }
}

impl std::error::Error for CommandError {}

/// What a reply answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    Auth,
    Rset,
    /// The reply to [`Client::command`].
    Command,
    /// The reply to [`Client::send_block`] (like the final "." of DATA).
    Block,
    Mail,
    Rcpt(usize),
    Data,
    Dot,
    /// RFC 2920 3.1: 354 although no recipient was accepted; we sent only ".".
    DotDiscard,
    Quit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Setup,
    TlsHandshake,
    Ready,
    Transaction,
    /// A command's, a block's or an on-demand AUTH's reply is awaited.
    Busy,
    /// Another exchange runs over the session ([`Client::pump`]).
    Exchange,
    Quitting,
    Closed,
    /// Handed back with [`Client::release`].
    Released,
}

#[derive(Debug)]
struct Transaction {
    message: OutboundMessage,
    mail: Option<Reply>,
    rcpts: Vec<Option<Reply>>,
    /// The reply to DATA, if it was not 354.
    data: Option<Reply>,
    dot: Option<Reply>,
    data_sent: bool,
}

/// One client session.
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    parser: ReplyParser,
    phase: Phase,
    awaiting: VecDeque<Expect>,
    /// Commands waiting for the previous reply (no PIPELINING).
    unsent: VecDeque<(Vec<u8>, Expect)>,
    output: Vec<u8>,
    events: VecDeque<ClientEvent>,
    caps: Capabilities,
    tls_active: bool,
    authenticated: bool,
    sasl: Option<ClientSession>,
    transaction: Option<Transaction>,
    /// The last transaction left MAIL/RCPT state behind: RSET before the next.
    needs_rset: bool,
    transactions: u64,
    /// Why we cancelled an AUTH exchange, reported once the server answers the "*".
    pending_auth_failure: Option<Reply>,
    /// The AUTH running was started by [`Client::authenticate`]: its end is an event, not
    /// the end of setup.
    auth_on_demand: bool,
    /// The last command was answered 354: a block may follow.
    go_ahead: bool,
    /// Random octets for a SCRAM client nonce at setup (RFC 5802 5.1).
    scram_random: [u8; NONCE_RANDOM_LEN],
}

fn made_up(code: u16, enhanced: EnhancedCode, text: impl Into<String>) -> Reply {
    Reply::new(code, enhanced, text.into())
}

/// A reply that ends the session, or decides a recipient without a delivery, is never
/// positive: 1xx-3xx where no such reply fits (a greeting of 250, a 334 to EHLO, a 250 to
/// AUTH or to DATA, a 354 to the final ".") breaks RFC 5321 4.2.1 and 4.3.2, and passed on
/// it would read as a delivery to whoever records the outcome.
fn never_positive(reply: Reply) -> Reply {
    if reply.is_positive() {
        made_up(451, EnhancedCode(4, 5, 0), format!("Protocol error: unexpected reply {}", reply.code))
    } else {
        reply
    }
}

/// Our reply for a connection that ended or stalled unexpectedly (RFC 3463 4.4.2).
pub fn connection_lost(text: impl Into<String>) -> Reply {
    made_up(421, EnhancedCode(4, 4, 2), text)
}

impl Client {
    /// A session on a fresh connection; the server speaks first. `scram_random`: octets
    /// from the OS random source, the nonce of a SCRAM-SHA-256 login at setup (RFC 5802
    /// 5.1; unused by the other mechanisms).
    pub fn new(config: ClientConfig, scram_random: [u8; NONCE_RANDOM_LEN]) -> Client {
        let parser = if config.strict_replies {
            ReplyParser::strict(config.reply_limits)
        } else {
            ReplyParser::lenient(config.reply_limits)
        };
        Client {
            config,
            parser,
            phase: Phase::Setup,
            awaiting: VecDeque::from([Expect::Greeting]),
            unsent: VecDeque::new(),
            output: Vec::new(),
            events: VecDeque::new(),
            caps: Capabilities::default(),
            tls_active: false,
            authenticated: false,
            sasl: None,
            transaction: None,
            needs_rset: false,
            transactions: 0,
            pending_auth_failure: None,
            auth_on_demand: false,
            go_ahead: false,
            scram_random,
        }
    }

    /// What the server announced (after EHLO; after TLS, the second EHLO).
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    pub fn is_tls(&self) -> bool {
        self.tls_active
    }

    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// Ready for [`Client::send_message`].
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// Closed, or handed back with [`Client::release`].
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed | Phase::Released)
    }

    /// Transactions completed on this session.
    pub fn transactions(&self) -> u64 {
        self.transactions
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// How long to wait for the reply now awaited (or for the server's part of an
    /// exchange); `None` when nothing is awaited.
    pub fn timeout(&self) -> Option<Duration> {
        let t = &self.config.timeouts;
        if self.phase == Phase::Exchange {
            return Some(t.command);
        }
        self.awaiting.front().map(|e| match e {
            Expect::Greeting => t.greeting,
            Expect::Mail => t.mail,
            Expect::Rcpt(_) => t.rcpt,
            Expect::Data => t.data_init,
            Expect::Dot | Expect::DotDiscard | Expect::Block => t.data_term,
            _ => t.command,
        })
    }

    /// Bytes from the server. Only awaited replies are read; the rest stays unread.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.is_closed() {
            return;
        }
        self.parser.feed(bytes);
        loop {
            // Nothing awaited (ready, an exchange running): the bytes are someone else's,
            // e.g. the reversed session's after ATRN (RFC 2645 4).
            if self.is_closed() || self.phase == Phase::TlsHandshake || self.awaiting.is_empty() {
                return;
            }
            match self.parser.next_reply() {
                Ok(Some(reply)) => self.on_reply(reply),
                Ok(None) => return,
                Err(e) => {
                    let reply = made_up(421, EnhancedCode(4, 5, 0), format!("Protocol error: {}", e.0));
                    self.abort(reply);
                    return;
                }
            }
        }
    }

    /// The server closed the connection (or it broke).
    pub fn on_closed(&mut self) {
        match self.phase {
            Phase::Closed | Phase::Released => {}
            Phase::Quitting => {
                self.phase = Phase::Closed;
                self.events.push_back(ClientEvent::Closed);
            }
            _ => self.abort(connection_lost("Connection closed by the remote server")),
        }
    }

    /// No reply within [`Client::timeout`].
    pub fn on_timeout(&mut self) {
        match self.phase {
            Phase::Closed | Phase::Released => {}
            Phase::Quitting => {
                self.phase = Phase::Closed;
                self.events.push_back(ClientEvent::Closed);
            }
            _ => self.abort(connection_lost("Timed out waiting for the remote server")),
        }
    }

    /// The TLS handshake succeeded: RFC 3207 4.2, start over with EHLO.
    pub fn tls_started(&mut self) {
        if self.phase != Phase::TlsHandshake {
            return;
        }
        self.tls_active = true;
        self.caps = Capabilities::default();
        self.parser.clear();
        self.phase = Phase::Setup;
        self.send_line(format!("EHLO {}", self.config.helo_name), Expect::Ehlo);
    }

    /// Sends a message; only when ready. The outcome arrives as [`ClientEvent::Done`].
    pub fn send_message(&mut self, message: OutboundMessage) {
        if self.phase != Phase::Ready {
            let reply = made_up(451, EnhancedCode(4, 3, 0), "SMTP client not ready");
            let replies = vec![reply; message.recipients.len()];
            self.events.push_back(ClientEvent::Done(TransactionResult {
                replies,
                dsn_relayed: false,
                data_sent: false,
            }));
            return;
        }
        if let Some(refusal) = self.precheck(&message) {
            self.transactions += 1;
            let replies = vec![refusal; message.recipients.len()];
            self.events.push_back(ClientEvent::Done(TransactionResult {
                replies,
                dsn_relayed: false,
                data_sent: false,
            }));
            return;
        }
        let mut commands: Vec<(Vec<u8>, Expect)> = Vec::new();
        if self.needs_rset {
            commands.push((b"RSET\r\n".to_vec(), Expect::Rset));
            self.needs_rset = false;
        }
        commands.push((self.mail_line(&message), Expect::Mail));
        for (i, rcpt) in message.recipients.iter().enumerate() {
            commands.push((self.rcpt_line(rcpt), Expect::Rcpt(i)));
        }
        commands.push((b"DATA\r\n".to_vec(), Expect::Data));
        self.transaction = Some(Transaction {
            rcpts: vec![None; message.recipients.len()],
            message,
            mail: None,
            data: None,
            dot: None,
            data_sent: false,
        });
        self.phase = Phase::Transaction;
        if self.caps.pipelining {
            // RFC 2920 3.1: MAIL, RCPT... and DATA (last in the group) in one write.
            for (line, expect) in commands {
                self.output.extend_from_slice(&line);
                self.awaiting.push_back(expect);
            }
        } else {
            self.unsent.extend(commands);
            self.send_next_unsent();
        }
    }

    /// Sends one command line (CRLF added) when ready; its reply comes as
    /// [`ClientEvent::Reply`], read within [`ClientConfig::reply_limits`].
    pub fn command(&mut self, line: &str) -> Result<(), CommandError> {
        self.command_with_limits(line, self.config.reply_limits)
    }

    /// [`Client::command`] with limits of its own for the reply (an ENTITIES, BOOK or TRACK
    /// answer is far larger than an EHLO reply); the next replies are read within the
    /// configured limits again.
    pub fn command_with_limits(&mut self, line: &str, limits: ReplyLimits) -> Result<(), CommandError> {
        // RFC 5321 2.3.8: CR and LF only as the line end.
        if line.contains(['\r', '\n']) {
            return Err(CommandError::LineBreak);
        }
        if self.phase != Phase::Ready {
            return Err(CommandError::NotReady);
        }
        self.go_ahead = false;
        self.parser.set_limits(limits);
        self.phase = Phase::Busy;
        self.send_line(line.to_string(), Expect::Command);
        Ok(())
    }

    /// Sends `text` as lines (each ended by CRLF, whatever line ends it had), dot-stuffed,
    /// then a line "." (RFC 5321 4.5.2): a DATA body, or a PUBCERT certificate (SPEC 8.1).
    /// Only right after a 354 to [`Client::command`]; the reply comes as
    /// [`ClientEvent::Reply`].
    pub fn send_block(&mut self, text: &[u8]) -> Result<(), CommandError> {
        if self.phase != Phase::Ready {
            return Err(CommandError::NotReady);
        }
        // RFC 5321 4.1.1.4: the data only after the server's go-ahead.
        if !std::mem::take(&mut self.go_ahead) {
            return Err(CommandError::NoGoAhead);
        }
        dot_stuff(text, &mut self.output);
        self.parser.set_limits(self.config.reply_limits);
        self.phase = Phase::Busy;
        self.awaiting.push_back(Expect::Block);
        Ok(())
    }

    /// Runs AUTH (RFC 4954 4) now, with a SASL client the caller prepared (mechanism,
    /// credentials, for SCRAM a nonce; EXTERNAL with empty credentials for a TLS client
    /// certificate). The outcome comes as [`ClientEvent::Auth`].
    pub fn authenticate(&mut self, session: ClientSession) -> Result<(), CommandError> {
        if self.phase != Phase::Ready {
            return Err(CommandError::NotReady);
        }
        let mut session = session;
        let initial = session.initial_response().map_err(CommandError::Sasl)?;
        let line = auth_line(session.mechanism(), initial);
        self.sasl = Some(session);
        self.go_ahead = false;
        self.auth_on_demand = true;
        self.pending_auth_failure = None;
        self.parser.set_limits(self.config.reply_limits);
        self.phase = Phase::Busy;
        self.send_line(line, Expect::Auth);
        Ok(())
    }

    /// Lends the session to another sans-I/O exchange that speaks on it (RCRAM-MD5, SPEC
    /// 8.2): hands it the bytes read and not yet taken, and takes its output as ours to
    /// send. Call it when ready (with the exchange started), then after every
    /// [`Client::feed`] until the exchange is done; the session is ready again then. When
    /// the connection was lost meanwhile, the exchange is told so.
    pub fn pump(&mut self, exchange: &mut dyn Exchange) -> Result<(), CommandError> {
        match self.phase {
            Phase::Ready => {
                self.go_ahead = false;
                self.phase = Phase::Exchange;
            }
            Phase::Exchange => {}
            Phase::Closed => {
                exchange.on_closed();
                return Err(CommandError::NotReady);
            }
            _ => return Err(CommandError::NotReady),
        }
        let input = self.parser.take_unread();
        if !input.is_empty() {
            exchange.feed(&input);
        }
        self.output.extend_from_slice(&exchange.take_output());
        if exchange.is_done() {
            self.phase = Phase::Ready;
        }
        Ok(())
    }

    /// The bytes read beyond the last awaited reply, taken out (none while a reply is
    /// awaited: they are that reply's).
    pub fn take_unread_input(&mut self) -> Vec<u8> {
        if !self.awaiting.is_empty() {
            return Vec::new();
        }
        self.parser.take_unread()
    }

    /// Ends the client without QUIT and hands back the bytes read beyond the last reply:
    /// after a 250 to ATRN (RFC 2645 4) the connection belongs to the reversed session, where
    /// we are the server. Output not yet taken is dropped.
    pub fn release(&mut self) -> Vec<u8> {
        self.phase = Phase::Released;
        self.awaiting.clear();
        self.unsent.clear();
        self.output.clear();
        self.sasl = None;
        self.parser.take_unread()
    }

    /// Ends the session politely (RFC 5321 4.1.1.10).
    pub fn quit(&mut self) {
        match self.phase {
            Phase::Closed | Phase::Quitting | Phase::Released => {}
            _ => {
                self.unsent.clear();
                self.awaiting.clear();
                self.output.extend_from_slice(b"QUIT\r\n");
                self.awaiting.push_back(Expect::Quit);
                self.phase = Phase::Quitting;
            }
        }
    }

    // ------------------------------------------------------------------ internals

    fn send_line(&mut self, line: String, expect: Expect) {
        self.output.extend_from_slice(line.as_bytes());
        self.output.extend_from_slice(b"\r\n");
        self.awaiting.push_back(expect);
    }

    fn send_next_unsent(&mut self) {
        if let Some((line, expect)) = self.unsent.pop_front() {
            self.output.extend_from_slice(&line);
            self.awaiting.push_back(expect);
        }
    }

    /// Ends the session: a transaction in progress gets `reply` for every recipient not
    /// already answered for good, then `Failed`.
    fn abort(&mut self, reply: Reply) {
        let reply = never_positive(reply);
        if self.transaction.is_some() {
            self.finish_transaction(Some(&reply));
        }
        self.unsent.clear();
        self.awaiting.clear();
        self.phase = Phase::Closed;
        self.events.push_back(ClientEvent::Failed(reply));
    }

    /// Fails the session on a negative reply during setup, saying QUIT first.
    fn fail_setup(&mut self, reply: Reply) {
        let reply = never_positive(reply);
        self.unsent.clear();
        self.awaiting.clear();
        if !matches!(reply.code, 421) {
            self.output.extend_from_slice(b"QUIT\r\n");
        }
        self.phase = Phase::Closed;
        self.events.push_back(ClientEvent::Failed(reply));
    }

    fn on_reply(&mut self, server: ServerReply) {
        let Some(expect) = self.awaiting.pop_front() else {
            // A reply nobody asked for.
            self.abort(made_up(421, EnhancedCode(4, 5, 0), "Protocol error: unexpected reply"));
            return;
        };
        let reply = server.to_reply();
        match expect {
            Expect::Greeting => {
                // RFC 5321 3.1: 220 to go on; 554 (or anything else) to stop.
                if reply.code == 220 {
                    self.send_line(format!("EHLO {}", self.config.helo_name), Expect::Ehlo);
                } else {
                    self.fail_setup(reply);
                }
            }
            Expect::Ehlo => {
                if reply.code / 100 == 2 {
                    self.caps = Capabilities::from_ehlo(&server.lines);
                    self.after_ehlo();
                } else if reply.code / 100 == 5 && !self.tls_active {
                    // RFC 5321 4.1.4: a server that does not know EHLO; try HELO.
                    self.send_line(format!("HELO {}", self.config.helo_name), Expect::Helo);
                } else {
                    self.fail_setup(reply);
                }
            }
            Expect::Helo => {
                if reply.code / 100 == 2 {
                    self.caps = Capabilities::default();
                    self.after_ehlo();
                } else {
                    self.fail_setup(reply);
                }
            }
            Expect::StartTls => {
                if reply.code == 220 {
                    // RFC 3207 / CVE-2011-0411: anything the server sent after its 220 must
                    // not be read as a reply inside TLS.
                    if self.parser.pending() > 0 {
                        self.abort(made_up(
                            421,
                            EnhancedCode(4, 5, 0),
                            "Protocol error: data after the STARTTLS reply",
                        ));
                        return;
                    }
                    self.phase = Phase::TlsHandshake;
                    self.events.push_back(ClientEvent::StartTls);
                } else if matches!(self.config.tls, TlsMode::Required | TlsMode::WhenOffered) {
                    self.fail_setup(reply);
                } else {
                    self.after_tls_decision();
                }
            }
            Expect::Auth => self.on_auth_reply(reply, server),
            Expect::Command | Expect::Block => {
                self.go_ahead = expect == Expect::Command && server.code == 354;
                self.parser.set_limits(self.config.reply_limits);
                self.phase = Phase::Ready;
                self.events.push_back(ClientEvent::Reply(server));
            }
            Expect::Rset => {
                if reply.code / 100 == 2 {
                    self.send_next_unsent();
                } else {
                    self.abort(reply);
                }
            }
            Expect::Mail => self.on_mail_reply(reply),
            Expect::Rcpt(i) => self.on_rcpt_reply(i, reply),
            Expect::Data => self.on_data_reply(reply),
            Expect::Dot => {
                if let Some(t) = self.transaction.as_mut() {
                    t.dot = Some(reply);
                }
                self.finish_transaction(None);
            }
            Expect::DotDiscard => {
                self.needs_rset = true;
                self.finish_transaction(None);
            }
            Expect::Quit => {
                self.phase = Phase::Closed;
                self.events.push_back(ClientEvent::Closed);
            }
        }
    }

    fn after_ehlo(&mut self) {
        if !self.tls_active {
            match self.config.tls {
                TlsMode::Never => {}
                _ if self.caps.starttls => {
                    self.send_line("STARTTLS".into(), Expect::StartTls);
                    return;
                }
                TlsMode::Required => {
                    self.fail_setup(made_up(
                        454,
                        EnhancedCode(4, 7, 0),
                        "TLS is required, but the server does not offer STARTTLS",
                    ));
                    return;
                }
                TlsMode::Opportunistic | TlsMode::WhenOffered => {}
            }
        }
        self.after_tls_decision();
    }

    fn after_tls_decision(&mut self) {
        if self.config.credentials.is_some() && !self.authenticated {
            self.start_auth();
        } else {
            self.become_ready();
        }
    }

    fn become_ready(&mut self) {
        self.phase = Phase::Ready;
        self.events.push_back(ClientEvent::Ready);
    }

    /// RFC 4954 4: pick the strongest offered mechanism we may use here.
    fn start_auth(&mut self) {
        let Some(credentials) = self.config.credentials.clone() else {
            self.become_ready();
            return;
        };
        let clear_ok = self.tls_active || self.config.allow_cleartext_auth;
        let preference = [Mechanism::ScramSha256, Mechanism::CramMd5, Mechanism::Plain, Mechanism::Login];
        let chosen = preference
            .into_iter()
            .find(|m| self.caps.auth_mechanisms.contains(m) && (clear_ok || !m.needs_tls_for_clear()));
        let Some(mechanism) = chosen else {
            let why = if self.caps.auth {
                "The server offers no authentication mechanism usable here"
            } else {
                "Authentication is configured, but the server does not offer AUTH"
            };
            self.fail_setup(made_up(454, EnhancedCode(4, 7, 0), why));
            return;
        };
        let mut session = ClientSession::new(mechanism, credentials).with_random_nonce(&self.scram_random);
        let line = match session.initial_response() {
            Ok(initial) => auth_line(mechanism, initial),
            Err(e) => {
                self.fail_setup(made_up(454, EnhancedCode(4, 7, 0), format!("AUTH: {e}")));
                return;
            }
        };
        self.sasl = Some(session);
        self.auth_on_demand = false;
        self.send_line(line, Expect::Auth);
    }

    fn on_auth_reply(&mut self, reply: Reply, server: ServerReply) {
        match reply.code {
            334 => {
                let step = sasl::decode_challenge(reply.text.trim().as_bytes())
                    .and_then(|c| self.sasl.as_mut().ok_or(sasl::SaslError::Malformed).and_then(|s| s.step(&c)));
                match step {
                    Ok(response) => {
                        self.send_line(sasl::encode_response(&response), Expect::Auth);
                    }
                    Err(e) => {
                        // RFC 4954 4: "*" cancels the exchange; the server answers 501.
                        self.output.extend_from_slice(b"*\r\n");
                        self.awaiting.push_back(Expect::Auth);
                        self.sasl = None;
                        self.pending_auth_failure =
                            Some(made_up(454, EnhancedCode(4, 7, 0), format!("AUTH failed on our side: {e}")));
                    }
                }
            }
            235 => {
                let finished = self.sasl.take().map(|mut s| s.finish(None));
                match finished {
                    Some(Ok(())) => {
                        self.authenticated = true;
                        if self.auth_on_demand {
                            self.auth_done(AuthOutcome::Success);
                        } else {
                            self.become_ready();
                        }
                    }
                    Some(Err(e)) => {
                        // RFC 5802 3: a server that cannot prove it knows the password is
                        // not the one we meant to talk to; the session ends either way.
                        let why = made_up(
                            454,
                            EnhancedCode(4, 7, 0),
                            format!("The server's authentication proof failed: {e}"),
                        );
                        if self.auth_on_demand {
                            self.events.push_back(ClientEvent::Auth(AuthOutcome::Failed(why.clone())));
                        }
                        self.fail_setup(why);
                    }
                    None => {
                        // A 235 to our "*": the server took a cancelled exchange as success.
                        let reply = self
                            .pending_auth_failure
                            .take()
                            .unwrap_or_else(|| made_up(454, EnhancedCode(4, 7, 0), "AUTH: unexpected 235"));
                        if self.auth_on_demand {
                            self.events.push_back(ClientEvent::Auth(AuthOutcome::Failed(reply.clone())));
                        }
                        self.fail_setup(reply);
                    }
                }
            }
            _ => {
                self.sasl = None;
                let cancelled = self.pending_auth_failure.take();
                if self.auth_on_demand {
                    // RFC 4954 4: the exchange is over; the session goes on unauthenticated.
                    let outcome = match cancelled {
                        Some(why) => AuthOutcome::Failed(why),
                        None => AuthOutcome::Refused(server),
                    };
                    self.auth_done(outcome);
                } else {
                    self.fail_setup(cancelled.unwrap_or(reply));
                }
            }
        }
    }

    fn auth_done(&mut self, outcome: AuthOutcome) {
        self.auth_on_demand = false;
        self.phase = Phase::Ready;
        self.events.push_back(ClientEvent::Auth(outcome));
    }

    /// Refusals decided before anything is sent (RFC 1870, 6152, 6531).
    fn precheck(&self, message: &OutboundMessage) -> Option<Reply> {
        let data = message.data.as_slice();
        // RFC 1870 6: do not send what the server said it will refuse.
        if let Some(limit) = self.caps.size.filter(|&l| l > 0) {
            if data.len() as u64 > limit {
                return Some(made_up(
                    552,
                    EnhancedCode(5, 3, 4),
                    format!("Message size {} exceeds the remote server's limit of {limit}", data.len()),
                ));
            }
        }
        // RFC 6531 3.2: SMTPUTF8 mail only to servers that announce it.
        if self.needs_smtputf8(message) && !self.caps.smtputf8 {
            let ascii_addresses = message.sender.is_ascii() && message.recipients.iter().all(|r| r.address.is_ascii());
            return Some(if ascii_addresses {
                made_up(
                    554,
                    EnhancedCode(5, 6, 9),
                    "The remote server does not support SMTPUTF8, required by the message header",
                )
            } else {
                made_up(
                    553,
                    EnhancedCode(5, 6, 7),
                    "The remote server does not support SMTPUTF8, required by the addresses",
                )
            });
        }
        // RFC 6152 3: 8-bit data only to servers that announce 8BITMIME.
        if has_8bit(data) && !self.caps.eight_bit_mime {
            return Some(made_up(
                554,
                EnhancedCode(5, 6, 3),
                "The remote server does not support 8BITMIME and the message has 8-bit data",
            ));
        }
        None
    }

    fn needs_smtputf8(&self, message: &OutboundMessage) -> bool {
        let addresses = !message.sender.is_ascii() || message.recipients.iter().any(|r| !r.address.is_ascii());
        let header_end = crate::headers::header_end(&message.data);
        let header = message.data.get(..header_end).unwrap_or(&[]);
        addresses || (message.smtputf8 && has_8bit(header))
    }

    /// RFC 5321 4.1.1.2 MAIL with the ESMTP parameters the server announced.
    fn mail_line(&self, message: &OutboundMessage) -> Vec<u8> {
        let mut line = format!("MAIL FROM:<{}>", message.sender);
        if self.caps.size.is_some() {
            line.push_str(&format!(" SIZE={}", message.data.len()));
        }
        if self.caps.eight_bit_mime && has_8bit(&message.data) {
            line.push_str(" BODY=8BITMIME");
        }
        if self.caps.smtputf8 && self.needs_smtputf8(message) {
            line.push_str(" SMTPUTF8");
        }
        if self.caps.dsn {
            // RFC 3461 4.3, 4.4.
            match message.ret {
                Some(DsnReturn::Full) => line.push_str(" RET=FULL"),
                Some(DsnReturn::Headers) => line.push_str(" RET=HDRS"),
                None => {}
            }
            if let Some(envid) = &message.envid {
                line.push_str(&format!(" ENVID={}", xtext_encode(envid)));
            }
        }
        if self.caps.auth {
            // RFC 4954 5 and SPEC 3: our identity for authenticated mail, else <>.
            match &message.auth {
                Some(identity) => line.push_str(&format!(" AUTH={}", xtext_encode(identity))),
                None => line.push_str(" AUTH=<>"),
            }
        }
        line.push_str("\r\n");
        line.into_bytes()
    }

    /// RFC 5321 4.1.1.3 RCPT, with RFC 3461 4.1/4.2 parameters when the server has DSN.
    fn rcpt_line(&self, rcpt: &OutboundRecipient) -> Vec<u8> {
        let mut line = format!("RCPT TO:<{}>", rcpt.address);
        if self.caps.dsn {
            if let Some(notify) = &rcpt.notify {
                line.push_str(&format!(" NOTIFY={notify}"));
            }
            if let Some((kind, address)) = rcpt.orcpt.as_deref().and_then(|o| o.split_once(';')) {
                line.push_str(&format!(" ORCPT={kind};{}", xtext_encode(address)));
            }
        }
        line.push_str("\r\n");
        line.into_bytes()
    }

    fn on_mail_reply(&mut self, reply: Reply) {
        let positive = reply.is_positive();
        if let Some(t) = self.transaction.as_mut() {
            t.mail = Some(reply);
        }
        if positive {
            self.send_next_unsent();
        } else if !self.caps.pipelining {
            // Nothing was opened, so no RSET is needed.
            self.unsent.clear();
            self.finish_transaction(None);
        }
        // With PIPELINING the RCPT and DATA replies are still on their way.
    }

    fn on_rcpt_reply(&mut self, index: usize, reply: Reply) {
        if let Some(slot) = self.transaction.as_mut().and_then(|t| t.rcpts.get_mut(index)) {
            *slot = Some(reply);
        }
        if self.caps.pipelining {
            return;
        }
        if matches!(self.unsent.front(), Some((_, Expect::Data))) && self.accepted_so_far() == 0 {
            // No recipient took it: do not send DATA; the MAIL is still open.
            self.unsent.clear();
            self.needs_rset = true;
            self.finish_transaction(None);
        } else {
            self.send_next_unsent();
        }
    }

    fn accepted_so_far(&self) -> usize {
        self.transaction
            .as_ref()
            .map_or(0, |t| t.rcpts.iter().filter(|r| r.as_ref().is_some_and(Reply::is_positive)).count())
    }

    fn on_data_reply(&mut self, reply: Reply) {
        let mail_ok = self.transaction.as_ref().and_then(|t| t.mail.as_ref()).is_some_and(Reply::is_positive);
        let accepted = self.accepted_so_far();
        if reply.code == 354 {
            if mail_ok && accepted > 0 {
                // RFC 5321 4.5.2: dot-stuffed data, then CRLF "." CRLF.
                if let Some(t) = self.transaction.as_mut() {
                    dot_stuff(&t.message.data, &mut self.output);
                    t.data_sent = true;
                }
                self.awaiting.push_back(Expect::Dot);
            } else {
                // RFC 2920 3.1: the server should have refused DATA; send an empty message
                // and forget it.
                self.output.extend_from_slice(b".\r\n");
                self.awaiting.push_back(Expect::DotDiscard);
            }
            return;
        }
        if let Some(t) = self.transaction.as_mut() {
            t.data = Some(reply);
        }
        // The MAIL (if accepted) is still open.
        self.needs_rset = mail_ok;
        self.finish_transaction(None);
    }

    /// Reports the transaction. `lost`: the session broke; every recipient without a final
    /// answer gets that reply.
    fn finish_transaction(&mut self, lost: Option<&Reply>) {
        let Some(t) = self.transaction.take() else {
            return;
        };
        self.transactions += 1;
        let missing =
            || lost.cloned().unwrap_or_else(|| made_up(451, EnhancedCode(4, 5, 0), "No reply from the server"));
        let replies = t
            .rcpts
            .iter()
            .map(|rcpt| {
                match &t.mail {
                    Some(m) if !m.is_positive() => return m.clone(),
                    Some(_) => {}
                    None => return missing(),
                }
                match rcpt {
                    Some(r) if !r.is_positive() => return r.clone(),
                    Some(_) => {}
                    None => return missing(),
                }
                if let Some(d) = &t.data {
                    // DATA answered with something other than 354: the data never went out.
                    return never_positive(d.clone());
                }
                match &t.dot {
                    // RFC 5321 4.3.2: only a 2xx to the final "." is a delivery.
                    Some(d) if d.code / 100 == 2 || !d.is_positive() => d.clone(),
                    Some(d) => never_positive(d.clone()),
                    None => missing(),
                }
            })
            .collect();
        self.events.push_back(ClientEvent::Done(TransactionResult {
            replies,
            dsn_relayed: self.caps.dsn,
            data_sent: t.data_sent,
        }));
        if lost.is_none() && self.phase == Phase::Transaction {
            self.phase = Phase::Ready;
        }
    }
}

/// RFC 4954 4: `AUTH <mechanism> [<initial response>]`, `=` for an empty one.
fn auth_line(mechanism: Mechanism, initial: Option<Vec<u8>>) -> String {
    match initial {
        Some(initial) => format!("AUTH {} {}", mechanism.name(), sasl::encode_initial_response(&initial)),
        None => format!("AUTH {}", mechanism.name()),
    }
}

/// True when the data has octets above 127 (RFC 6152).
pub fn has_8bit(data: &[u8]) -> bool {
    data.iter().any(|&b| b >= 0x80)
}
