//! One client session on a Messenger port (SPEC 8): greeting, EHLO, STARTTLS when offered
//! (the server's certificate verified), local AUTH CRAM-MD5 (RFC 2195, RFC 4954),
//! RCRAM-MD5 (SPEC 8.2, by the I/O-free [`RcramClient`]), and a mail transaction. A thin
//! tokio shell: the replies are parsed by `vouchmail_proto::messenger::ReplyParser` (strict).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use vouchmail_proto::messenger::rcram::{RcramClient, RcramEvent, RcramOutcome};
use vouchmail_proto::messenger::{ReplyLimits, ReplyParser, ServerReply};
use vouchmail_proto::sasl::{self, ClientSession, Credentials, Mechanism};

use crate::error::ClientError;
use vouchmail_server::net::client_tls::server_name;
use vouchmail_server::net::stream::Connection;

type Stream = Connection<tokio_rustls::client::TlsStream<TcpStream>>;

/// Limits of one reply: a certificate or a BOOK/TRACK answer fits.
const MAX_LINES: usize = 20_000;
const MAX_BYTES: usize = 4 * 1024 * 1024;

pub struct Session {
    stream: Stream,
    parser: ReplyParser,
    /// The host name dialed (from the profile or discovery, never from the server).
    pub host: String,
    pub addr: SocketAddr,
    /// The EHLO lines after the first (upper case), e.g. `AUTH CRAM-MD5 RCRAM-MD5`.
    ehlo: Vec<String>,
    timeout: Duration,
}

impl Session {
    /// Connects, reads the greeting, sends EHLO, and upgrades with STARTTLS when the
    /// server offers it (`tls`: the verifying connector; `None` when no CA is available,
    /// which then refuses a server offering STARTTLS rather than skip the check).
    pub async fn open(
        host: &str,
        addr: SocketAddr,
        tls: Option<&TlsConnector>,
        ehlo_name: &str,
        timeout: Duration,
    ) -> Result<Session, ClientError> {
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::new(format!("{host} ({addr}): connection timed out")))?
            .map_err(|e| ClientError::new(format!("{host} ({addr}): {e}")))?;
        let mut session = Session {
            stream: Connection::Plain(tcp),
            parser: ReplyParser::strict(ReplyLimits::new(MAX_LINES, MAX_BYTES)),
            host: host.to_string(),
            addr,
            ehlo: Vec::new(),
            timeout,
        };
        let greeting = session.read_reply().await?;
        if greeting.code != 220 {
            return Err(session.refused("greeting", &greeting));
        }
        session.hello(ehlo_name).await?;
        if session.offers("STARTTLS") {
            let Some(tls) = tls else {
                return Err(ClientError::new(format!(
                    "{host} offers STARTTLS but no CA certificates are available to check it (set tls_ca_file)"
                )));
            };
            let reply = session.command("STARTTLS").await?;
            if reply.code != 220 {
                return Err(session.refused("STARTTLS", &reply));
            }
            let name = server_name(host).ok_or_else(|| ClientError::new(format!("{host} is not a TLS server name")))?;
            let Connection::Plain(tcp) = std::mem::replace(&mut session.stream, Connection::Closed) else {
                return Err(ClientError::new("connection not in the clear"));
            };
            let stream = tokio::time::timeout(timeout, tls.connect(name, tcp))
                .await
                .map_err(|_| ClientError::new(format!("{host}: TLS handshake timed out")))?
                .map_err(|e| ClientError::new(format!("{host}: TLS: {e}")))?;
            session.stream = Connection::Tls(Box::new(stream));
            // RFC 3207 4.2: greet again.
            session.parser = ReplyParser::strict(ReplyLimits::new(MAX_LINES, MAX_BYTES));
            session.hello(ehlo_name).await?;
        }
        Ok(session)
    }

    async fn hello(&mut self, name: &str) -> Result<(), ClientError> {
        let reply = self.command(&format!("EHLO {name}")).await?;
        if reply.code != 250 {
            return Err(self.refused("EHLO", &reply));
        }
        self.ehlo = reply.lines.iter().skip(1).map(|l| l.trim().to_ascii_uppercase()).collect();
        Ok(())
    }

    /// The server advertised this EHLO keyword.
    pub fn offers(&self, keyword: &str) -> bool {
        self.ehlo.iter().any(|l| l.split(' ').next().is_some_and(|k| k.eq_ignore_ascii_case(keyword)))
    }

    /// The server lists this SASL mechanism in its EHLO AUTH line (RFC 4954 3).
    pub fn offers_auth(&self, mechanism: &str) -> bool {
        self.ehlo.iter().any(|l| {
            let mut words = l.split(' ');
            words.next() == Some("AUTH") && words.any(|m| m.eq_ignore_ascii_case(mechanism))
        })
    }

    /// A one-line error naming the host and what it said.
    pub fn refused(&self, what: &str, reply: &ServerReply) -> ClientError {
        ClientError::new(format!("{}: {what}: {} {}", self.host, reply.code, one_line(reply)))
    }

    async fn read_reply(&mut self) -> Result<ServerReply, ClientError> {
        let mut buffer = [0u8; 8192];
        loop {
            match self.parser.next_reply() {
                Ok(Some(reply)) => return Ok(reply),
                Ok(None) => {}
                Err(e) => return Err(ClientError::new(format!("{}: {e}", self.host))),
            }
            let n = self.read_some(&mut buffer).await?;
            self.parser.feed(&buffer[..n]);
        }
    }

    async fn read_some(&mut self, buffer: &mut [u8]) -> Result<usize, ClientError> {
        match tokio::time::timeout(self.timeout, self.stream.read(buffer)).await {
            Ok(Ok(0)) => Err(ClientError::new(format!("{} closed the connection", self.host))),
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(ClientError::new(format!("{}: {e}", self.host))),
            Err(_) => Err(ClientError::new(format!("{}: no reply in time", self.host))),
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        match tokio::time::timeout(self.timeout, self.stream.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ClientError::new(format!("{}: {e}", self.host))),
            Err(_) => Err(ClientError::new(format!("{}: write timed out", self.host))),
        }
    }

    /// One command line (CRLF added) and its reply. The line must hold no CR or LF.
    pub async fn command(&mut self, line: &str) -> Result<ServerReply, ClientError> {
        if line.contains(['\r', '\n']) {
            return Err(ClientError::new("a command may not hold CR or LF"));
        }
        self.write(format!("{line}\r\n").as_bytes()).await?;
        self.read_reply().await
    }

    /// Lines (each without CR/LF) then a line `.`, dot-stuffed (RFC 5321 4.5.2), and the
    /// reply: the body of DATA and of PUBCERT (SPEC 8.1).
    pub async fn send_block(&mut self, text: &[u8]) -> Result<ServerReply, ClientError> {
        let mut wire = Vec::with_capacity(text.len() + text.len() / 40 + 8);
        for line in split_lines(text) {
            if line.first() == Some(&b'.') {
                wire.push(b'.');
            }
            wire.extend_from_slice(line);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b".\r\n");
        self.write(&wire).await?;
        self.read_reply().await
    }

    /// Local authentication, CRAM-MD5 (RFC 2195; RFC 4954 4): the password never crosses
    /// the wire.
    pub async fn login(&mut self, address: &str, password: &str) -> Result<(), ClientError> {
        if !self.offers_auth("CRAM-MD5") {
            return Err(ClientError::new(format!("{} does not offer AUTH CRAM-MD5", self.host)));
        }
        let reply = self.command("AUTH CRAM-MD5").await?;
        if reply.code != 334 {
            return Err(self.refused("AUTH CRAM-MD5", &reply));
        }
        let challenge = sasl::decode_challenge(reply.last_line().trim().as_bytes())
            .map_err(|e| ClientError::new(format!("{}: bad CRAM-MD5 challenge: {e}", self.host)))?;
        let response = ClientSession::new(Mechanism::CramMd5, Credentials::new(address, password))
            .step(&challenge)
            .map_err(|e| ClientError::new(format!("CRAM-MD5: {e}")))?;
        let reply = self.command(&sasl::encode_response(&response)).await?;
        match reply.code {
            235 => Ok(()),
            535 => Err(ClientError::new(format!(
                "{} refused the login of {address} (wrong password?): {} {}",
                self.host,
                reply.code,
                one_line(&reply)
            ))),
            _ => Err(self.refused("AUTH CRAM-MD5", &reply)),
        }
    }

    /// Remote authentication (SPEC 8.2) on a server where `address` has no account, with
    /// the challenge checked against the host dialed ([`Session::host`]).
    pub async fn login_remote(&mut self, address: &str, password: &str, now: i64) -> Result<(), ClientError> {
        if !self.offers_auth(vouchmail_proto::messenger::rcram::MECHANISM) {
            return Err(ClientError::new(format!(
                "{} does not offer AUTH RCRAM-MD5 (remote authentication, SPEC 8.2, is not available there)",
                self.host
            )));
        }
        let mut rcram = RcramClient::new(address, password, &self.host, now);
        rcram.start();
        let mut buffer = [0u8; 4096];
        loop {
            let output = rcram.take_output();
            if !output.is_empty() {
                self.write(&output).await?;
            }
            if let Some(RcramEvent::Done(outcome)) = rcram.poll_event() {
                return match outcome {
                    RcramOutcome::Authenticated(_) => Ok(()),
                    RcramOutcome::Cancelled { why, .. } => Err(ClientError::new(format!(
                        "{}: RCRAM-MD5 challenge refused, not answered: {why}",
                        self.host
                    ))),
                    RcramOutcome::Refused(r) => Err(ClientError::new(format!(
                        "{} refused the remote login of {address} (wrong password?): {r}",
                        self.host
                    ))),
                    RcramOutcome::Temporary(r) | RcramOutcome::Failed(r) => {
                        Err(ClientError::new(format!("{}: RCRAM-MD5: {r}", self.host)))
                    }
                };
            }
            match self.read_some(&mut buffer).await {
                Ok(n) => rcram.feed(&buffer[..n]),
                Err(_) => rcram.on_closed(),
            }
        }
    }

    /// MAIL, RCPT for each recipient, DATA (RFC 5321 3.3).
    pub async fn transaction(&mut self, from: &str, to: &[String], message: &[u8]) -> Result<ServerReply, ClientError> {
        let reply = self.command(&format!("MAIL FROM:<{from}>")).await?;
        if reply.code != 250 {
            return Err(self.refused(&format!("MAIL FROM:<{from}>"), &reply));
        }
        for rcpt in to {
            let reply = self.command(&format!("RCPT TO:<{rcpt}>")).await?;
            if reply.code != 250 && reply.code != 251 {
                return Err(self.refused(&format!("RCPT TO:<{rcpt}>"), &reply));
            }
        }
        let reply = self.command("DATA").await?;
        if reply.code != 354 {
            return Err(self.refused("DATA", &reply));
        }
        let reply = self.send_block(message).await?;
        if reply.code != 250 {
            return Err(self.refused("end of DATA", &reply));
        }
        Ok(reply)
    }

    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            if self.write(b"QUIT\r\n").await.is_ok() {
                let _ = self.read_reply().await;
            }
        })
        .await;
    }
}

/// The reply's text on one line (multi-line replies joined by ` / `).
pub fn one_line(reply: &ServerReply) -> String {
    reply.texts().join(" / ")
}

/// Splits text into lines at LF, CRLF or a lone CR; no trailing empty line.
fn split_lines(text: &[u8]) -> Vec<&[u8]> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'\n' => {
                lines.push(&text[start..i]);
                start = i + 1;
            }
            b'\r' => {
                lines.push(&text[start..i]);
                if text.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if start < text.len() {
        lines.push(&text[start..]);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::split_lines;

    #[test]
    fn lines_at_any_line_end() {
        assert_eq!(split_lines(b"a\r\nb\nc\rd"), vec![&b"a"[..], b"b", b"c", b"d"]);
        assert_eq!(split_lines(b"a\r\n"), vec![&b"a"[..]]);
        assert_eq!(split_lines(b""), Vec::<&[u8]>::new());
    }
}
