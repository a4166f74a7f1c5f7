//! One client session on a Messenger port (SPEC 8): greeting, EHLO, STARTTLS when offered
//! (the server's certificate verified; a refusal ends the session), local AUTH CRAM-MD5
//! (RFC 2195, RFC 4954), RCRAM-MD5 (SPEC 8.2, the I/O-free [`RcramClient`] lent the
//! session), and a mail transaction. The server's one SMTP client shell
//! (`vouchmail_server::net::smtp_client`) runs it; this file only says what each answer
//! means to the user.

use std::net::SocketAddr;
use std::time::Duration;

use tokio_rustls::TlsConnector;
use vouchmail_proto::messenger::rcram::{RcramClient, RcramEvent, RcramOutcome};
use vouchmail_proto::messenger::ServerReply;
use vouchmail_proto::sasl::{ClientSession, Credentials, Mechanism};
use vouchmail_proto::smtp::client::{AuthOutcome, ClientConfig, ReplyLimits, Timeouts, TlsMode};
use vouchmail_server::net::smtp_client::{self, Target};

use crate::error::ClientError;

/// Limits of one reply: a certificate or a BOOK/TRACK answer fits.
const MAX_LINES: usize = 20_000;
const MAX_BYTES: usize = 4 * 1024 * 1024;

pub struct Session {
    inner: smtp_client::Session,
    /// The host name dialed (from the profile or discovery, never from the server).
    pub host: String,
    pub addr: SocketAddr,
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
        // SPEC 10 Trust: only inside TLS whose certificate verifies; a server that offers
        // no STARTTLS is an error, never a plaintext session.
        let Some(tls) = tls else {
            return Err(ClientError::new(format!(
                "no CA certificates are available to check {host} (set tls_ca_file)"
            )));
        };
        let config = ClientConfig {
            tls: TlsMode::Required,
            timeouts: Timeouts::all(timeout),
            strict_replies: true,
            reply_limits: ReplyLimits::new(MAX_LINES, MAX_BYTES),
            ..ClientConfig::new(ehlo_name)
        };
        let target = Target { host: host.to_string(), addr };
        let mut inner = smtp_client::Session::connect(&target, None, timeout, config)
            .await
            .map_err(|e| ClientError::from(e.error()))?;
        if let Err(e) = inner.start(Some(tls)).await {
            return Err(e.error().into());
        }
        Ok(Session { inner, host: host.to_string(), addr })
    }

    /// The server advertised this EHLO keyword.
    pub fn offers(&self, keyword: &str) -> bool {
        self.inner.capabilities().offers(keyword)
    }

    /// The server lists this SASL mechanism in its EHLO AUTH line (RFC 4954 3).
    pub fn offers_auth(&self, mechanism: &str) -> bool {
        self.inner.capabilities().offers_auth(mechanism)
    }

    /// A one-line error naming the host and what it said.
    pub fn refused(&self, what: &str, reply: &ServerReply) -> ClientError {
        ClientError::new(format!("{}: {what}: {}", self.host, reply.one_line()))
    }

    /// One command line (CRLF added) and its reply. The line must hold no CR or LF.
    pub async fn command(&mut self, line: &str) -> Result<ServerReply, ClientError> {
        Ok(self.inner.command(line).await?)
    }

    /// Lines then a line `.`, dot-stuffed (RFC 5321 4.5.2), right after a 354, and the
    /// reply: the body of DATA and of PUBCERT (SPEC 8.1).
    pub async fn send_block(&mut self, text: &[u8]) -> Result<ServerReply, ClientError> {
        Ok(self.inner.send_block(text).await?)
    }

    /// Local authentication, CRAM-MD5 (RFC 2195; RFC 4954 4): the password never crosses
    /// the wire.
    pub async fn login(&mut self, address: &str, password: &str) -> Result<(), ClientError> {
        if !self.offers_auth("CRAM-MD5") {
            return Err(ClientError::new(format!("{} does not offer AUTH CRAM-MD5", self.host)));
        }
        let sasl = ClientSession::new(Mechanism::CramMd5, Credentials::new(address, password));
        match self.inner.authenticate(sasl).await? {
            AuthOutcome::Success => Ok(()),
            AuthOutcome::Refused(reply) if reply.code == 535 => Err(ClientError::new(format!(
                "{} refused the login of {address} (wrong password?): {}",
                self.host,
                reply.one_line()
            ))),
            AuthOutcome::Refused(reply) => Err(self.refused("AUTH CRAM-MD5", &reply)),
            AuthOutcome::Failed(why) => Err(ClientError::new(format!("{}: AUTH CRAM-MD5: {why}", self.host))),
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
        self.inner.pump(&mut rcram).await?;
        let Some(RcramEvent::Done(outcome)) = rcram.poll_event() else {
            return Err(ClientError::new(format!("{}: RCRAM-MD5 ended without an outcome", self.host)));
        };
        match outcome {
            RcramOutcome::Authenticated(_) => Ok(()),
            RcramOutcome::Cancelled { why, .. } => {
                Err(ClientError::new(format!("{}: RCRAM-MD5 challenge refused, not answered: {why}", self.host)))
            }
            RcramOutcome::Refused(r) => Err(ClientError::new(format!(
                "{} refused the remote login of {address} (wrong password?): {r}",
                self.host
            ))),
            RcramOutcome::Temporary(r) | RcramOutcome::Failed(r) => {
                Err(ClientError::new(format!("{}: RCRAM-MD5: {r}", self.host)))
            }
        }
    }

    /// MAIL, RCPT for each recipient, DATA (RFC 5321 3.3): all or nothing, the first
    /// refusal ends the transaction before the data goes.
    pub async fn transaction(&mut self, from: &str, to: &[String], message: &[u8]) -> Result<ServerReply, ClientError> {
        let mail = format!("MAIL FROM:<{from}>");
        let reply = self.command(&mail).await?;
        if reply.code != 250 {
            return Err(self.refused(&mail, &reply));
        }
        for rcpt in to {
            let line = format!("RCPT TO:<{rcpt}>");
            let reply = self.command(&line).await?;
            if reply.code != 250 && reply.code != 251 {
                return Err(self.refused(&line, &reply));
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

    pub async fn quit(self) {
        self.inner.quit().await;
    }
}

/// The reply's text on one line (multi-line replies joined by ` / `).
pub fn one_line(reply: &ServerReply) -> String {
    reply.texts().join(" / ")
}
