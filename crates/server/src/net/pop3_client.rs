//! A POP3 client over any async stream: a thin tokio shell around
//! `vouchmail_proto::pop3::client`, for the tests and for `vouchmail client fetch`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), vouchmail_server::net::pop3_client::Pop3ClientError> {
//! use vouchmail_proto::sasl::{Credentials, Mechanism};
//! use vouchmail_server::net::pop3_client::Pop3Client;
//! let tcp = tokio::net::TcpStream::connect("127.0.0.1:2110").await?;
//! let (mut pop, _greeting) = Pop3Client::connect(tcp).await?;
//! pop.authenticate(Mechanism::ScramSha256, Credentials::new("user@localhost", "secret")).await?;
//! for (number, uid) in pop.uidl().await? {
//!     let message = pop.retr(number).await?;
//!     println!("{uid}: {} octets", message.len());
//! }
//! pop.quit().await?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use vouchmail_proto::pop3::client::{self, Capabilities, Client, ClientError, Response};
use vouchmail_proto::pop3::{Command, Reply};
use vouchmail_proto::sasl::{self, ClientSession, Credentials, Mechanism, SaslError};

/// Why a client operation failed.
#[derive(Debug)]
pub enum Pop3ClientError {
    Io(std::io::Error),
    /// No response in time.
    Timeout,
    /// The server broke the protocol.
    Protocol(ClientError),
    /// The server answered `-ERR` (with its response code, if any).
    Server(Reply),
    /// The SASL exchange failed on our side (e.g. the server's SCRAM signature was wrong).
    Sasl(SaslError),
}

impl fmt::Display for Pop3ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pop3ClientError::Io(e) => write!(f, "POP3 connection: {e}"),
            Pop3ClientError::Timeout => f.write_str("POP3 server did not answer in time"),
            Pop3ClientError::Protocol(e) => write!(f, "{e}"),
            Pop3ClientError::Server(reply) => write!(f, "POP3 server: {reply}"),
            Pop3ClientError::Sasl(e) => write!(f, "POP3 authentication: {e}"),
        }
    }
}

impl std::error::Error for Pop3ClientError {}

impl From<std::io::Error> for Pop3ClientError {
    fn from(e: std::io::Error) -> Self {
        Pop3ClientError::Io(e)
    }
}

impl From<ClientError> for Pop3ClientError {
    fn from(e: ClientError) -> Self {
        Pop3ClientError::Protocol(e)
    }
}

pub type Pop3Result<T> = Result<T, Pop3ClientError>;

/// One POP3 connection.
pub struct Pop3Client<S> {
    stream: S,
    client: Client,
    buffer: Vec<u8>,
    /// How long to wait for each response.
    pub timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Pop3Client<S> {
    /// Reads the greeting on a fresh connection (or on a pop3s one after the handshake).
    pub async fn connect(stream: S) -> Pop3Result<(Pop3Client<S>, Reply)> {
        let mut pop = Pop3Client::with(stream, Client::new());
        let greeting = pop.status().await?;
        Ok((pop, greeting))
    }

    /// Continues on a stream wrapped in TLS after [`Pop3Client::stls`]; no greeting comes
    /// (RFC 2595 4).
    pub fn resume(stream: S) -> Pop3Client<S> {
        Pop3Client::with(stream, Client::after_greeting())
    }

    fn with(stream: S, client: Client) -> Pop3Client<S> {
        Pop3Client { stream, client, buffer: vec![0; 16 * 1024], timeout: Duration::from_secs(600) }
    }

    /// Sends one command and reads its response; `-ERR` is an error.
    pub async fn command(&mut self, command: &Command) -> Pop3Result<Response> {
        self.client.send(command);
        self.flush().await?;
        let response = self.response().await?;
        match response.status() {
            Some(status) if !status.positive => Err(Pop3ClientError::Server(status.clone())),
            _ => Ok(response),
        }
    }

    /// RFC 2449 5.
    pub async fn capa(&mut self) -> Pop3Result<Capabilities> {
        match self.command(&Command::Capa).await? {
            Response::Multi { lines, .. } => Ok(Capabilities::parse(&lines)),
            other => Err(unexpected(other)),
        }
    }

    /// RFC 2595 4: sends STLS and hands back the stream for the TLS handshake; continue
    /// with [`Pop3Client::resume`] on the TLS stream.
    pub async fn stls(mut self) -> Pop3Result<S> {
        self.command(&Command::Stls).await?;
        Ok(self.stream)
    }

    /// RFC 1939 7 USER and PASS.
    pub async fn user_pass(&mut self, user: &str, password: &str) -> Pop3Result<Reply> {
        self.command(&Command::User(user.to_owned())).await?;
        let response = self.command(&Command::Pass(password.to_owned())).await?;
        status_of(response)
    }

    /// RFC 5034 AUTH with one of the shared SASL mechanisms.
    pub async fn authenticate(&mut self, mechanism: Mechanism, credentials: Credentials) -> Pop3Result<Reply> {
        // RFC 5802 5.1: a SCRAM client nonce from the OS random source.
        let mut random = [0u8; sasl::NONCE_RANDOM_LEN];
        getrandom::getrandom(&mut random).map_err(|_| Pop3ClientError::Sasl(sasl::SaslError::Temporary))?;
        self.authenticate_with(ClientSession::new(mechanism, credentials).with_random_nonce(&random)).await
    }

    /// AUTH with a prepared SASL client (e.g. with channel binding for -PLUS).
    pub async fn authenticate_with(&mut self, mut sasl_client: ClientSession) -> Pop3Result<Reply> {
        let initial = sasl_client.initial_response().map_err(Pop3ClientError::Sasl)?;
        self.client.send(&Command::Auth {
            mechanism: Some(sasl_client.mechanism().name().to_owned()),
            initial_response: initial.as_deref().map(sasl::encode_initial_response),
        });
        self.flush().await?;
        loop {
            match self.response().await? {
                Response::Continuation(challenge) => match sasl_client.step(&challenge) {
                    Ok(answer) => self.client.send_sasl_response(&answer),
                    Err(e) => {
                        // Cancel; the server's -ERR ends the exchange.
                        self.client.cancel_sasl();
                        self.flush().await?;
                        self.response().await?;
                        return Err(Pop3ClientError::Sasl(e));
                    }
                },
                Response::Status(status) if status.positive => {
                    sasl_client.finish(None).map_err(Pop3ClientError::Sasl)?;
                    return Ok(status);
                }
                Response::Status(status) => return Err(Pop3ClientError::Server(status)),
                other => return Err(unexpected(other)),
            }
            self.flush().await?;
        }
    }

    /// RFC 1939 5 STAT: message count and octets.
    pub async fn stat(&mut self) -> Pop3Result<(u32, u64)> {
        let status = status_of(self.command(&Command::Stat).await?)?;
        client::parse_stat(&status).ok_or_else(|| ClientError(format!("bad STAT answer: {status}")).into())
    }

    /// RFC 1939 5 LIST: message numbers and sizes.
    pub async fn list(&mut self) -> Pop3Result<Vec<(u32, u64)>> {
        match self.command(&Command::List(None)).await? {
            Response::Multi { lines, .. } => Ok(client::parse_list(&lines)),
            other => Err(unexpected(other)),
        }
    }

    /// RFC 1939 7 UIDL: message numbers and unique-ids.
    pub async fn uidl(&mut self) -> Pop3Result<Vec<(u32, String)>> {
        match self.command(&Command::Uidl(None)).await? {
            Response::Multi { lines, .. } => Ok(client::parse_uidl(&lines)),
            other => Err(unexpected(other)),
        }
    }

    /// RFC 1939 5 RETR: the message, unstuffed, CRLF line ends.
    pub async fn retr(&mut self, number: u32) -> Pop3Result<Vec<u8>> {
        let response = self.command(&Command::Retr(number)).await?;
        response.body().ok_or_else(|| unexpected(response))
    }

    /// RFC 1939 7 TOP.
    pub async fn top(&mut self, number: u32, lines: u32) -> Pop3Result<Vec<u8>> {
        let response = self.command(&Command::Top { msg: number, lines }).await?;
        response.body().ok_or_else(|| unexpected(response))
    }

    pub async fn dele(&mut self, number: u32) -> Pop3Result<Reply> {
        status_of(self.command(&Command::Dele(number)).await?)
    }

    /// RFC 1939 6: ends the session; messages marked deleted are removed now.
    pub async fn quit(mut self) -> Pop3Result<Reply> {
        status_of(self.command(&Command::Quit).await?)
    }

    /// The underlying stream (e.g. to drop the connection without QUIT).
    pub fn into_inner(self) -> S {
        self.stream
    }

    async fn flush(&mut self) -> Pop3Result<()> {
        let output = self.client.take_output();
        if !output.is_empty() {
            self.stream.write_all(&output).await?;
            self.stream.flush().await?;
        }
        Ok(())
    }

    async fn status(&mut self) -> Pop3Result<Reply> {
        status_of(self.response().await?)
    }

    async fn response(&mut self) -> Pop3Result<Response> {
        loop {
            if let Some(response) = self.client.poll_response()? {
                return Ok(response);
            }
            let read = tokio::time::timeout(self.timeout, self.stream.read(&mut self.buffer))
                .await
                .map_err(|_| Pop3ClientError::Timeout)??;
            if read == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
            self.client.feed(&self.buffer[..read]);
        }
    }
}

fn status_of(response: Response) -> Pop3Result<Reply> {
    match response {
        Response::Status(status) if status.positive => Ok(status),
        Response::Status(status) => Err(Pop3ClientError::Server(status)),
        other => Err(unexpected(other)),
    }
}

fn unexpected(response: Response) -> Pop3ClientError {
    Pop3ClientError::Protocol(ClientError(format!("unexpected response {response:?}")))
}
