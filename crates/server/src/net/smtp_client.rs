//! The tokio driver of the SMTP client state machine: one connection to one host.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use vouchmail_proto::smtp::client::{
    connection_lost, Client, ClientConfig, ClientEvent, OutboundMessage, TransactionResult,
};
use vouchmail_proto::smtp::reply::{EnhancedCode, Reply};

use super::client_tls::server_name;
use super::route::Target;

pub use crate::net::stream::Stream;

/// A client-side connection before or after STARTTLS, or one opened by someone else (the
/// ODMR provider's reversed session).
type Conn = crate::net::stream::Connection<TlsStream<TcpStream>>;

/// Why opening a session failed.
#[derive(Debug, Clone)]
pub struct OpenError {
    pub reply: Reply,
    /// The TLS handshake itself failed: with opportunistic TLS, try again in the clear.
    pub tls_handshake: bool,
}

/// One SMTP session, ready for messages.
pub struct Session {
    conn: Conn,
    client: Client,
    buffer: Vec<u8>,
    pub target: Target,
    /// STARTTLS was done.
    pub tls: bool,
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

impl Session {
    /// Connects and runs greeting, EHLO, STARTTLS and AUTH until the session is ready.
    pub async fn open(
        target: &Target,
        config: ClientConfig,
        connector: Option<&TlsConnector>,
        connect_timeout: Duration,
    ) -> Result<Session, OpenError> {
        let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(target.addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(OpenError { reply: connect_failure(target, e), tls_handshake: false }),
            Err(_) => return Err(OpenError { reply: connect_failure(target, "timed out"), tls_handshake: false }),
        };
        let _ = stream.set_nodelay(true);
        let scram_random = scram_random().map_err(|reply| OpenError { reply, tls_handshake: false })?;
        let mut session = Session {
            conn: Conn::Plain(stream),
            client: Client::new(config, scram_random),
            buffer: vec![0; 16 * 1024],
            target: target.clone(),
            tls: false,
        };
        loop {
            match session.next_event().await {
                ClientEvent::Ready => return Ok(session),
                ClientEvent::StartTls => {
                    if let Err(reply) = session.start_tls(connector).await {
                        return Err(OpenError { reply, tls_handshake: true });
                    }
                }
                ClientEvent::Failed(reply) => {
                    session.close().await;
                    return Err(OpenError { reply, tls_handshake: false });
                }
                ClientEvent::Done(_) | ClientEvent::Closed | ClientEvent::Reply(_) | ClientEvent::Auth(_) => {
                    let reply = connection_lost("Unexpected end of the session setup");
                    return Err(OpenError { reply, tls_handshake: false });
                }
            }
        }
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
        let scram_random = scram_random().map_err(|reply| OpenError { reply, tls_handshake: false })?;
        let mut session = Session {
            conn: Conn::Other(stream),
            client: Client::new(config, scram_random),
            buffer: vec![0; 16 * 1024],
            target: target.clone(),
            tls,
        };
        if !prebuffered.is_empty() {
            session.client.feed(prebuffered);
        }
        // No STARTTLS here (the caller chose the channel), so the first event decides.
        match session.next_event().await {
            ClientEvent::Ready => Ok(session),
            ClientEvent::Failed(reply) => {
                session.close().await;
                Err(OpenError { reply, tls_handshake: false })
            }
            ClientEvent::StartTls
            | ClientEvent::Done(_)
            | ClientEvent::Closed
            | ClientEvent::Reply(_)
            | ClientEvent::Auth(_) => {
                let reply = connection_lost("Unexpected end of the session setup");
                Err(OpenError { reply, tls_handshake: false })
            }
        }
    }

    async fn start_tls(&mut self, connector: Option<&TlsConnector>) -> Result<(), Reply> {
        let failure = |text: String| Reply::new(454, EnhancedCode(4, 7, 5), text);
        let Some(connector) = connector else {
            return Err(failure("TLS required, but no CA certificates are configured to verify the server".into()));
        };
        let name = server_name(&self.target.host)
            .ok_or_else(|| failure(format!("{} is not a valid TLS server name", self.target.host)))?;
        let Conn::Plain(tcp) = std::mem::replace(&mut self.conn, Conn::Closed) else {
            return Err(failure("STARTTLS on a connection that is not plain".into()));
        };
        match connector.connect(name, tcp).await {
            Ok(tls) => {
                self.conn = Conn::Tls(Box::new(tls));
                self.tls = true;
                self.client.tls_started();
                Ok(())
            }
            Err(e) => Err(failure(format!("TLS handshake with {} failed: {e}", self.target.host))),
        }
    }

    /// Writes pending output, then reads until the client has an event.
    async fn next_event(&mut self) -> ClientEvent {
        loop {
            if let Some(event) = self.client.poll_event() {
                return event;
            }
            let output = self.client.take_output();
            if !output.is_empty() {
                if let Err(e) = self.conn.write_all(&output).await {
                    tracing::debug!(host = %self.target.host, error = %e, "write failed");
                    self.client.on_closed();
                    continue;
                }
            }
            let Some(timeout) = self.client.timeout() else {
                // Nothing awaited and no event: only when the session is closed.
                return ClientEvent::Failed(connection_lost("SMTP client idle without a pending reply"));
            };
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
    }

    /// Sends one message. `Err` when the session broke: the result covers the message
    /// (every recipient without a final answer gets a temporary failure), and the session
    /// must not be used again.
    pub async fn send(&mut self, message: OutboundMessage) -> Result<TransactionResult, (TransactionResult, Reply)> {
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

    pub fn capabilities(&self) -> &vouchmail_proto::smtp::client::Capabilities {
        self.client.capabilities()
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
