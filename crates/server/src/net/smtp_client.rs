//! The one tokio shell around the SMTP client state machine (`vouchmail_proto::smtp::client`):
//! one connection to one host. Outbound delivery, the Messenger federation client, the ODMR
//! customer, the user's client and the demo all drive their sessions through it; none of
//! them writes a protocol line or reads a reply by hand.
//!
//! [`Session::connect`] opens TCP (within a timeout, from a source address when given),
//! [`Session::start`] runs greeting, EHLO, STARTTLS (with the connector given, the target's
//! host as the TLS server name) and AUTH at setup until the session is ready; then
//! [`Session::command`], [`Session::send_block`], [`Session::authenticate`],
//! [`Session::pump`] (another exchange over the session, e.g. RCRAM-MD5),
//! [`Session::send_message`], [`Session::quit`], or [`Session::release`] (the connection
//! and the bytes read beyond the last reply, after ATRN).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use vouchmail_proto::sasl::ClientSession;
use vouchmail_proto::smtp::client::{
    connection_lost, AuthOutcome, Capabilities, Client, ClientConfig, ClientEvent, CommandError, Exchange,
    OutboundMessage, ReplyLimits, ServerReply, TransactionResult,
};
use vouchmail_proto::smtp::reply::{EnhancedCode, Reply};

use super::client_tls::server_name;
pub use super::route::Target;
use crate::support::error::Error;

pub use crate::net::stream::Stream;

/// A client-side connection before or after STARTTLS, or one opened by someone else (the
/// ODMR provider's reversed session).
type Conn = crate::net::stream::Connection<TlsStream<TcpStream>>;

/// Why opening a session failed.
#[derive(Debug, Clone)]
pub struct OpenError {
    /// The reply a delivery records: the server's, or one made up here (4xx for trouble
    /// with the connection).
    pub reply: Reply,
    /// The host it was about.
    pub host: String,
    /// The TLS handshake itself failed (with opportunistic TLS, try again in the clear):
    /// why, as the TLS library said.
    pub tls_handshake: Option<Arc<std::io::Error>>,
}

impl OpenError {
    fn new(host: &str, reply: Reply) -> OpenError {
        OpenError { reply, host: host.to_string(), tls_handshake: None }
    }

    /// The error as the server's one type: a refusal keeps the server's reply.
    pub fn error(&self) -> Error {
        error_of(&self.host, "session setup", &self.reply)
    }

    /// The server answered the setup with a refusal of its own (a greeting, EHLO, STARTTLS
    /// or AUTH reply), rather than the connection failing.
    pub fn refused(&self) -> Option<&Reply> {
        Some(&self.reply).filter(|r| r.from_peer)
    }
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.error())
    }
}

/// A reply the client made up or the server gave, as the server's error type.
fn error_of(host: &str, what: &str, reply: &Reply) -> Error {
    if reply.from_peer {
        return Error::refused(host, what, reply.clone());
    }
    let text = format!("{what}: {}", reply.text);
    let error = match reply.enhanced {
        Some(EnhancedCode(_, 7, _)) => Error::tls(host, text),
        Some(EnhancedCode(_, 5, _)) => Error::protocol(host, text),
        Some(EnhancedCode(_, 3, _)) => Error::system(text).about(host),
        _ => Error::network(host, text),
    };
    error.temporary(reply.is_temporary())
}

/// Our reply for a connection failure (RFC 3463 4.4.1: no answer from host).
fn connect_failure(target: &Target, error: impl std::fmt::Display) -> Reply {
    Reply::new(421, EnhancedCode(4, 4, 1), format!("Cannot connect to {} [{}]: {error}", target.host, target.addr))
}

/// Octets from the OS random source for a SCRAM client nonce (RFC 5802 5.1).
fn scram_random() -> Result<[u8; vouchmail_proto::sasl::NONCE_RANDOM_LEN], Reply> {
    let mut random = [0u8; vouchmail_proto::sasl::NONCE_RANDOM_LEN];
    getrandom::getrandom(&mut random)
        .map_err(|e| Reply::new(451, EnhancedCode(4, 3, 0), format!("No OS random source: {e}")))?;
    Ok(random)
}

/// TCP to `addr`, bound to `source` when it is of the same family (so the peer can check
/// who calls, SPEC 8).
async fn tcp(addr: SocketAddr, source: Option<IpAddr>, timeout: Duration) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(source) = source.filter(|s| s.is_ipv4() == addr.is_ipv4()) {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    let stream = tokio::time::timeout(timeout, socket.connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))??;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// One SMTP session.
pub struct Session {
    conn: Conn,
    client: Client,
    buffer: Vec<u8>,
    pub target: Target,
    /// STARTTLS was done (or the stream given was inside TLS).
    pub tls: bool,
    /// For the TLS handshake and for writes when no reply is awaited.
    command_timeout: Duration,
}

impl Session {
    fn with(conn: Conn, target: &Target, config: ClientConfig, tls: bool) -> Result<Session, OpenError> {
        let scram_random = scram_random().map_err(|reply| OpenError::new(&target.host, reply))?;
        let command_timeout = config.timeouts.command;
        Ok(Session {
            conn,
            client: Client::new(config, scram_random),
            buffer: vec![0; 16 * 1024],
            target: target.clone(),
            tls,
            command_timeout,
        })
    }

    /// Opens TCP to the target within `connect_timeout`, from `source` when given. Nothing
    /// is read yet: [`Session::start`] runs the setup.
    pub async fn connect(
        target: &Target,
        source: Option<IpAddr>,
        connect_timeout: Duration,
        config: ClientConfig,
    ) -> Result<Session, OpenError> {
        let stream = tcp(target.addr, source, connect_timeout)
            .await
            .map_err(|e| OpenError::new(&target.host, connect_failure(target, e)))?;
        Session::with(Conn::Plain(stream), target, config, false)
    }

    /// Greeting, EHLO, STARTTLS (as the configured mode says, with `connector`; the
    /// server's certificate is for the target's host) and AUTH at setup, until the session
    /// is ready.
    pub async fn start(&mut self, connector: Option<&TlsConnector>) -> Result<(), OpenError> {
        loop {
            match self.next_event().await {
                ClientEvent::Ready => return Ok(()),
                ClientEvent::StartTls => self.start_tls(connector).await?,
                ClientEvent::Failed(reply) => {
                    self.close().await;
                    return Err(OpenError::new(&self.target.host, reply));
                }
                ClientEvent::Done(_) | ClientEvent::Closed | ClientEvent::Reply(_) | ClientEvent::Auth(_) => {
                    let reply = connection_lost("Unexpected end of the session setup");
                    return Err(OpenError::new(&self.target.host, reply));
                }
            }
        }
    }

    /// Connects and runs greeting, EHLO, STARTTLS and AUTH until the session is ready.
    pub async fn open(
        target: &Target,
        config: ClientConfig,
        connector: Option<&TlsConnector>,
        connect_timeout: Duration,
    ) -> Result<Session, OpenError> {
        let mut session = Session::connect(target, None, connect_timeout, config).await?;
        session.start(connector).await?;
        Ok(session)
    }

    /// Runs the client over a connection that is already open, whose peer speaks first
    /// (RFC 2645 5.3: after ATRN the customer sends the greeting). `prebuffered` holds bytes
    /// of it already read.
    /// `tls`: the stream runs inside TLS the caller set up (an ODMR reversed session).
    pub async fn over(
        stream: Box<dyn Stream>,
        prebuffered: &[u8],
        target: &Target,
        config: ClientConfig,
        tls: bool,
    ) -> Result<Session, OpenError> {
        let mut session = Session::with(Conn::Other(stream), target, config, tls)?;
        if !prebuffered.is_empty() {
            session.client.feed(prebuffered);
        }
        // No STARTTLS here (the caller chose the channel): no connector.
        session.start(None).await?;
        Ok(session)
    }

    async fn start_tls(&mut self, connector: Option<&TlsConnector>) -> Result<(), OpenError> {
        let host = self.target.host.clone();
        let failure = |text: String, why: std::io::Error| OpenError {
            reply: Reply::new(454, EnhancedCode(4, 7, 5), text),
            host: host.clone(),
            tls_handshake: Some(Arc::new(why)),
        };
        let other = |text: &str| std::io::Error::other(text.to_string());
        let Some(connector) = connector else {
            let text = "TLS required, but no CA certificates are configured to verify the server";
            return Err(failure(text.into(), other(text)));
        };
        let name = server_name(&host).or_else(|| server_name(&self.target.addr.ip().to_string())).ok_or_else(|| {
            let text = format!("{host} is not a valid TLS server name");
            failure(text.clone(), other(&text))
        })?;
        let Conn::Plain(tcp) = std::mem::replace(&mut self.conn, Conn::Closed) else {
            let text = "STARTTLS on a connection that is not plain";
            return Err(failure(text.into(), other(text)));
        };
        match tokio::time::timeout(self.command_timeout, connector.connect(name, tcp)).await {
            Ok(Ok(tls)) => {
                self.conn = Conn::Tls(Box::new(tls));
                self.tls = true;
                self.client.tls_started();
                Ok(())
            }
            Ok(Err(e)) => Err(failure(format!("TLS handshake with {host} failed: {e}"), e)),
            Err(_) => {
                let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
                Err(failure(format!("TLS handshake with {host} failed: {e}"), e))
            }
        }
    }

    /// Writes pending output, then reads until the client has an event.
    async fn next_event(&mut self) -> ClientEvent {
        loop {
            if let Some(event) = self.client.poll_event() {
                return event;
            }
            if !self.flush().await {
                continue;
            }
            let Some(timeout) = self.client.timeout() else {
                // Nothing awaited and no event: only when the session is closed.
                return ClientEvent::Failed(connection_lost("SMTP client idle without a pending reply"));
            };
            self.read(timeout).await;
        }
    }

    /// Writes what the client has to send; false when the connection broke (the client
    /// knows it then).
    async fn flush(&mut self) -> bool {
        let output = self.client.take_output();
        if output.is_empty() {
            return true;
        }
        let timeout = self.client.timeout().unwrap_or(self.command_timeout);
        match tokio::time::timeout(timeout, self.conn.write_all(&output)).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::debug!(host = %self.target.host, error = %e, "write failed");
                self.client.on_closed();
                false
            }
            Err(_) => {
                tracing::debug!(host = %self.target.host, "write timed out");
                self.client.on_timeout();
                false
            }
        }
    }

    /// Reads once within `timeout` and hands the client what arrived.
    async fn read(&mut self, timeout: Duration) {
        match tokio::time::timeout(timeout, self.conn.read(&mut self.buffer)).await {
            Err(_) => self.client.on_timeout(),
            Ok(Ok(0)) | Ok(Err(_)) => self.client.on_closed(),
            Ok(Ok(n)) => {
                if let Some(data) = self.buffer.get(..n) {
                    self.client.feed(data);
                }
            }
        }
    }

    fn command_error(&self, what: &str, error: CommandError) -> Error {
        let text = format!("{what}: {error}");
        match error {
            CommandError::NotReady if self.client.is_closed() => Error::network(&self.target.host, text),
            CommandError::NotReady => Error::protocol(&self.target.host, text),
            CommandError::LineBreak | CommandError::NoGoAhead | CommandError::Sasl(_) => {
                Error::invalid(text).about(&self.target.host)
            }
        }
    }

    /// The reply to what was just sent.
    async fn reply(&mut self, what: &str) -> Result<ServerReply, Error> {
        match self.next_event().await {
            ClientEvent::Reply(reply) => Ok(reply),
            ClientEvent::Failed(reply) => {
                self.close().await;
                Err(error_of(&self.target.host, what, &reply))
            }
            other => Err(Error::protocol(&self.target.host, format!("{what}: SMTP session out of step: {other:?}"))),
        }
    }

    /// Sends one command line (CRLF added; `line` must hold no CR or LF: build it from
    /// parsed values only) and returns its whole reply.
    pub async fn command(&mut self, line: &str) -> Result<ServerReply, Error> {
        let what = line.split(' ').next().unwrap_or_default().to_string();
        self.client.command(line).map_err(|e| self.command_error(&what, e))?;
        self.reply(&what).await
    }

    /// [`Session::command`] with limits of its own for the reply (ENTITIES, BOOK, TRACK).
    pub async fn command_with_limits(&mut self, line: &str, limits: ReplyLimits) -> Result<ServerReply, Error> {
        let what = line.split(' ').next().unwrap_or_default().to_string();
        self.client.command_with_limits(line, limits).map_err(|e| self.command_error(&what, e))?;
        self.reply(&what).await
    }

    /// Sends `text` as dot-stuffed lines and a final "." (RFC 5321 4.5.2), only right after
    /// a 354, and returns the reply: a DATA body, a PUBCERT certificate (SPEC 8.1).
    pub async fn send_block(&mut self, text: &[u8]) -> Result<ServerReply, Error> {
        self.client.send_block(text).map_err(|e| self.command_error("data", e))?;
        self.reply("end of data").await
    }

    /// AUTH now (RFC 4954 4) with the SASL client given; the outcome. After
    /// [`AuthOutcome::Failed`] for a wrong SCRAM server proof the session is closed.
    pub async fn authenticate(&mut self, sasl: ClientSession) -> Result<AuthOutcome, Error> {
        let what = format!("AUTH {}", sasl.mechanism().name());
        self.client.authenticate(sasl).map_err(|e| self.command_error(&what, e))?;
        match self.next_event().await {
            ClientEvent::Auth(outcome) => Ok(outcome),
            ClientEvent::Failed(reply) => {
                self.close().await;
                Err(error_of(&self.target.host, &what, &reply))
            }
            other => Err(Error::protocol(&self.target.host, format!("{what}: SMTP session out of step: {other:?}"))),
        }
    }

    /// Lends the session to another exchange (RCRAM-MD5, SPEC 8.2), already started, until
    /// it is done; its outcome is the exchange's own. A connection lost meanwhile is told
    /// to the exchange, which ends it.
    pub async fn pump(&mut self, exchange: &mut dyn Exchange) -> Result<(), Error> {
        loop {
            if let Err(e) = self.client.pump(exchange) {
                if exchange.is_done() {
                    return Ok(());
                }
                return Err(self.command_error("exchange", e));
            }
            let written = self.flush().await;
            if exchange.is_done() {
                return Ok(());
            }
            if written {
                let timeout = self.client.timeout().unwrap_or(self.command_timeout);
                self.read(timeout).await;
            }
        }
    }

    /// Sends one message. `Err` when the session broke: the result covers the message
    /// (every recipient without a final answer gets a temporary failure), and the session
    /// must not be used again.
    pub async fn send_message(
        &mut self,
        message: OutboundMessage,
    ) -> Result<TransactionResult, (TransactionResult, Reply)> {
        let count = message.recipients.len();
        self.client.send_message(message);
        let mut result: Option<TransactionResult> = None;
        loop {
            match self.next_event().await {
                ClientEvent::Done(r) => {
                    if self.client.is_ready() {
                        return Ok(r);
                    }
                    result = Some(r);
                }
                ClientEvent::Failed(reply) => {
                    let result = result.unwrap_or_else(|| TransactionResult {
                        replies: vec![reply.clone(); count],
                        dsn_relayed: false,
                        data_sent: false,
                    });
                    self.close().await;
                    return Err((result, reply));
                }
                ClientEvent::Ready
                | ClientEvent::StartTls
                | ClientEvent::Closed
                | ClientEvent::Reply(_)
                | ClientEvent::Auth(_) => {
                    let reply = connection_lost("SMTP session out of step");
                    self.close().await;
                    let result = result.unwrap_or_else(|| TransactionResult {
                        replies: vec![reply.clone(); count],
                        dsn_relayed: false,
                        data_sent: false,
                    });
                    return Err((result, reply));
                }
            }
        }
    }

    /// What the server announced in its last EHLO.
    pub fn capabilities(&self) -> &Capabilities {
        self.client.capabilities()
    }

    /// The address connected to.
    pub fn peer_ip(&self) -> IpAddr {
        self.target.addr.ip()
    }

    /// The TLS connection, after STARTTLS: protocol version, cipher suite.
    pub fn tls_connection(&self) -> Option<&rustls::ClientConnection> {
        match &self.conn {
            Conn::Tls(stream) => Some(stream.get_ref().1),
            _ => None,
        }
    }

    /// Ends the client without QUIT and hands back the connection with the bytes read
    /// beyond the last reply: after a 250 to ATRN the roles reverse (RFC 2645 4).
    pub fn release(mut self) -> (Box<dyn Stream>, Vec<u8>) {
        let unread = self.client.release();
        let conn = std::mem::replace(&mut self.conn, Conn::Closed);
        (Box::new(conn), unread)
    }

    /// QUIT (RFC 5321 4.1.1.10), waiting briefly for the 221.
    pub async fn quit(mut self) {
        self.client.quit();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match self.next_event().await {
                    ClientEvent::Closed | ClientEvent::Failed(_) => break,
                    _ => {}
                }
            }
        })
        .await;
        self.close().await;
    }

    async fn close(&mut self) {
        let output = self.client.take_output();
        if !output.is_empty() {
            let _ = tokio::time::timeout(Duration::from_secs(2), self.conn.write_all(&output)).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.conn.shutdown()).await;
        self.conn = Conn::Closed;
    }
}
