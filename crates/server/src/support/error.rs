//! The server's one error type (issue 20 item 4), after maddy's `exterrors`: an error
//! knows what kind of thing failed, what it was about, and whether trying again later can
//! help; [`Error::reply`] is the one place it becomes an SMTP reply.

use std::fmt;
use std::path::Path;

use vouchmail_proto::smtp::reply::{EnhancedCode, Reply};
use vouchmail_store::StoreError;

/// What failed. The kind gives the default temporariness and the reply's codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A configuration value is wrong or missing (the operator must change it).
    Config,
    /// A file could not be read or written.
    File,
    /// The store failed; its own error says whether that is temporary.
    Store,
    /// Connecting, reading, writing, or a peer that did not answer in time.
    Network,
    /// TLS set-up, a handshake, or a certificate that does not verify.
    Tls,
    /// A DNS lookup.
    Dns,
    /// A peer broke the protocol (a malformed or unexpected reply).
    Protocol,
    /// A peer refused; its reply is kept and decides temporariness.
    Refused,
    /// A value given to us (by the operator, a user or a peer) is not acceptable.
    Invalid,
    /// Something named does not exist.
    NotFound,
    /// The operating system failed us (randomness, a task that died).
    System,
}

/// A failure with its context; `Display` is one line: `subject: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    temporary: bool,
    /// What it was about: a config key, a host, a file, an address.
    subject: Option<String>,
    message: String,
    /// A peer's reply that refused, passed on as it was.
    reply: Option<Reply>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with that kind's usual temporariness.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        let temporary = matches!(
            kind,
            ErrorKind::Network | ErrorKind::Tls | ErrorKind::Dns | ErrorKind::Protocol | ErrorKind::System
        );
        // One line, whatever a peer put in its text.
        let message = message.into().replace(['\r', '\n'], " ");
        Error { kind, temporary, subject: None, message, reply: None }
    }

    /// `key` of the configuration is wrong: permanent.
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Config, message).about(key)
    }

    /// A file could not be read or written.
    pub fn file(path: &Path, error: &std::io::Error) -> Error {
        let temporary = matches!(
            error.kind(),
            std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        );
        Error::new(ErrorKind::File, error.to_string()).about(path.display().to_string()).temporary(temporary)
    }

    /// Network trouble with `peer` (a host, an address): temporary.
    pub fn network(peer: impl Into<String>, message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Network, message).about(peer)
    }

    pub fn tls(peer: impl Into<String>, message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Tls, message).about(peer)
    }

    pub fn dns(name: impl Into<String>, message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Dns, message).about(name)
    }

    pub fn protocol(peer: impl Into<String>, message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Protocol, message).about(peer)
    }

    /// `peer` answered `reply` and so refused: temporary when the reply is (4xx).
    pub fn refused(peer: impl Into<String>, what: impl fmt::Display, reply: Reply) -> Error {
        let temporary = reply.is_temporary();
        let mut error = Error::new(ErrorKind::Refused, format!("{what}: {reply}")).about(peer).temporary(temporary);
        error.reply = Some(reply);
        error
    }

    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Invalid, message)
    }

    pub fn not_found(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::NotFound, message)
    }

    pub fn system(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::System, message)
    }

    /// Names what the error was about (a key, a host, a file, an address); an earlier
    /// subject becomes part of the message.
    pub fn about(mut self, subject: impl Into<String>) -> Error {
        if let Some(inner) = self.subject.take() {
            self.message = format!("{inner}: {}", self.message);
        }
        self.subject = Some(subject.into());
        self
    }

    /// Overrides the kind's usual temporariness.
    pub fn temporary(mut self, temporary: bool) -> Error {
        self.temporary = temporary;
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Trying again later may succeed: 4xx, not 5xx.
    pub fn is_temporary(&self) -> bool {
        self.temporary
    }

    /// The text without the subject.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The peer's reply that refused, as it was.
    pub fn peer_reply(&self) -> Option<&Reply> {
        self.reply.as_ref()
    }

    /// The SMTP reply for a session that must answer this error. Local trouble says no
    /// more than that (the details go to the log, not to a stranger); a peer's refusal is
    /// passed on with its own codes (RFC 3463).
    pub fn reply(&self) -> Reply {
        if let Some(reply) = &self.reply {
            return reply.clone();
        }
        let (code, class) = if self.temporary { (451, 4) } else { (554, 5) };
        let (subject, detail, text) = match self.kind {
            // RFC 3463 4.4: network and routing.
            ErrorKind::Network | ErrorKind::Dns => (4, 4, "Network problem"),
            // RFC 3463 5.5: protocol status.
            ErrorKind::Protocol => (5, 0, "Protocol problem with a peer"),
            ErrorKind::Tls => (7, 0, "TLS problem"),
            ErrorKind::Invalid => (5, 4, "Invalid request"),
            ErrorKind::NotFound => (1, 1, "Not found"),
            // RFC 3463 4.3: mail system status.
            ErrorKind::Config | ErrorKind::File | ErrorKind::Store | ErrorKind::System => (3, 0, "Local problem"),
            ErrorKind::Refused => (0, 0, "Refused"),
        };
        let text = if self.temporary { format!("{text}, please try again later") } else { text.to_string() };
        let code = if self.kind == ErrorKind::NotFound && !self.temporary { 550 } else { code };
        Reply::new(code, EnhancedCode(class, subject, detail), text)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.subject {
            Some(subject) => write!(f, "{subject}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {}

/// The store says whether its failure is temporary (`StoreError::is_temporary`), and so
/// whether a session answers 451 or 5xx.
impl From<StoreError> for Error {
    fn from(error: StoreError) -> Error {
        let temporary = error.is_temporary();
        let kind = match error {
            StoreError::NotFound(_) => ErrorKind::NotFound,
            StoreError::Invalid(_) | StoreError::Conflict(_) => ErrorKind::Invalid,
            StoreError::Unavailable(_) => ErrorKind::Store,
        };
        Error::new(kind, error.to_string()).temporary(temporary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_temporariness_decides_451_or_5xx() {
        let busy = Error::from(StoreError::Unavailable("database is locked".into()));
        assert!(busy.is_temporary());
        assert_eq!((busy.reply().code, busy.reply().enhanced), (451, Some(EnhancedCode(4, 3, 0))));
        let bad = Error::from(StoreError::Invalid("no such domain".into()));
        assert!(!bad.is_temporary());
        assert_eq!(bad.reply().code, 554);
        // The store's words stay in the log, not in the reply.
        assert!(!bad.reply().to_string().contains("no such domain"));
    }

    #[test]
    fn a_peer_refusal_passes_its_reply_on() {
        let reply = Reply::new(550, EnhancedCode(5, 1, 1), "No such user");
        let error = Error::refused("mx.example", "RCPT TO:<a@example>", reply.clone());
        assert!(!error.is_temporary());
        assert_eq!(error.reply(), reply);
        assert_eq!(error.to_string(), "mx.example: RCPT TO:<a@example>: 550 5.1.1 No such user");
    }

    #[test]
    fn subjects_nest_and_lines_stay_single() {
        let error = Error::network("10.0.0.1:25", "reset\r\nby peer").about("mx.example");
        assert_eq!(error.to_string(), "mx.example: 10.0.0.1:25: reset  by peer");
        assert!(error.is_temporary());
        assert_eq!(Error::config("tls.cert", "not PEM").to_string(), "tls.cert: not PEM");
        assert!(!Error::config("tls.cert", "not PEM").is_temporary());
    }
}
