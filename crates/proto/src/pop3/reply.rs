//! POP3 status lines and the error type of the POP3 layer.
//!
//! Every status line the server sends is a [`Reply`]: `+OK` or `-ERR`, an optional response
//! code (RFC 2449 8, RFC 3206) and a text. Every negative reply has a named constructor
//! here, so a reply is decided in one place and never assembled by hand twice.

use std::borrow::Cow;
use std::fmt;

use crate::sasl::SaslError;

/// An extended response code, sent in brackets after `-ERR` (RFC 2449 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RespCode {
    /// RFC 2449 8.1.1: the maildrop is locked by another session.
    InUse,
    /// RFC 2449 8.1.2: the user logs in too often.
    LoginDelay,
    /// RFC 3206 4: a temporary system problem; try again later.
    SysTemp,
    /// RFC 3206 4: a permanent system problem.
    SysPerm,
    /// RFC 3206 5: the credentials (or their transport) are at fault, not the system.
    Auth,
}

impl RespCode {
    pub fn as_str(self) -> &'static str {
        match self {
            RespCode::InUse => "IN-USE",
            RespCode::LoginDelay => "LOGIN-DELAY",
            RespCode::SysTemp => "SYS/TEMP",
            RespCode::SysPerm => "SYS/PERM",
            RespCode::Auth => "AUTH",
        }
    }

    /// Reads a code from the text of a status line (`[IN-USE] ...`); unknown codes are
    /// ignored (RFC 2449 8: clients must ignore codes they do not know).
    pub fn parse(text: &str) -> Option<RespCode> {
        let inner = text.strip_prefix('[')?.split(']').next()?;
        [RespCode::InUse, RespCode::LoginDelay, RespCode::SysTemp, RespCode::SysPerm, RespCode::Auth]
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(inner))
    }
}

impl fmt::Display for RespCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One status line: `+OK text` or `-ERR [CODE] text` (RFC 1939 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub positive: bool,
    pub code: Option<RespCode>,
    pub text: Cow<'static, str>,
}

/// The error type of the POP3 layer: a negative reply.
pub type Pop3Error = Reply;

impl Reply {
    /// `+OK text`.
    pub fn ok(text: impl Into<Cow<'static, str>>) -> Reply {
        Reply { positive: true, code: None, text: text.into() }
    }

    /// `-ERR text`, for errors no response code fits.
    pub fn err(text: impl Into<Cow<'static, str>>) -> Reply {
        Reply { positive: false, code: None, text: text.into() }
    }

    /// `-ERR [CODE] text`.
    pub fn err_code(code: RespCode, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply { positive: false, code: Some(code), text: text.into() }
    }

    /// Writes the status line. Control characters in the text are replaced, so that no
    /// text can inject a line of its own.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(if self.positive { b"+OK" } else { b"-ERR" });
        if let Some(code) = self.code {
            out.extend_from_slice(b" [");
            out.extend_from_slice(code.as_str().as_bytes());
            out.push(b']');
        }
        if !self.text.is_empty() {
            out.push(b' ');
            crate::smtp::reply::write_reply_text(&self.text, out);
        }
        out.extend_from_slice(b"\r\n");
    }

    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.positive { "+OK" } else { "-ERR" })?;
        if let Some(code) = self.code {
            write!(f, " [{code}]")?;
        }
        if !self.text.is_empty() {
            write!(f, " {}", self.text)?;
        }
        Ok(())
    }
}

impl std::error::Error for Reply {}

/// The negative replies of the server, named after their meaning.
impl Reply {
    /// A keyword the server does not know (RFC 1939 3).
    pub fn unknown_command() -> Reply {
        Reply::err("Unknown command")
    }

    /// A known command in a state where it is not allowed (RFC 1939 3).
    pub fn wrong_state() -> Reply {
        Reply::err("Command not valid in this state")
    }

    /// Missing, extra or malformed arguments.
    pub fn syntax(text: impl Into<Cow<'static, str>>) -> Reply {
        Reply::err(text)
    }

    /// A message number that is not a decimal number.
    pub fn invalid_number() -> Reply {
        Reply::err("Invalid message number")
    }

    /// A message number outside the maildrop (RFC 1939 5).
    pub fn no_such_message() -> Reply {
        Reply::err("No such message")
    }

    /// A message marked as deleted (RFC 1939 5: "may not refer to a message marked as
    /// deleted").
    pub fn already_deleted(number: usize) -> Reply {
        Reply::err(format!("Message {number} already deleted"))
    }

    /// A command line over the limit (RFC 2449 4: 255 octets).
    pub fn line_too_long() -> Reply {
        Reply::err("Line too long")
    }

    /// RFC 2449 8.1.1: another session holds the maildrop.
    pub fn in_use() -> Reply {
        Reply::err_code(RespCode::InUse, "Mailbox is locked by another POP3 session")
    }

    /// RFC 3206 4: a temporary failure of the server (the store, say).
    pub fn sys_temp(text: impl Into<Cow<'static, str>>) -> Reply {
        Reply::err_code(RespCode::SysTemp, text)
    }

    /// The store could not be read or written just now.
    pub fn mailbox_unavailable() -> Reply {
        Reply::sys_temp("Mailbox temporarily unavailable, try again later")
    }

    /// An authenticated identity without a maildrop (RFC 3206 4: not the user's fault,
    /// and trying again will not help).
    pub fn no_maildrop() -> Reply {
        Reply::err_code(RespCode::SysPerm, "No maildrop for this user")
    }

    /// A message listed at login was removed since (by an administrator).
    pub fn message_gone() -> Reply {
        Reply::err_code(RespCode::SysPerm, "Message no longer exists")
    }

    /// RFC 3206 5: wrong user name or password.
    pub fn auth_failed() -> Reply {
        Reply::err_code(RespCode::Auth, "Authentication failed")
    }

    /// RFC 2595 2.1 and SPEC 4: no clear-text password on a clear channel.
    pub fn plaintext_disallowed() -> Reply {
        Reply::err_code(RespCode::Auth, "Plaintext authentication disallowed on non-secure connections; use STLS")
    }

    /// PASS without a preceding USER (RFC 1939 7).
    pub fn user_first() -> Reply {
        Reply::err("Send USER first")
    }

    /// APOP needs a plain-text-equivalent secret, which vouchmail never stores (SPEC 4).
    pub fn apop_unavailable() -> Reply {
        Reply::err("APOP is not available")
    }

    /// STLS when it is not offered, or inside TLS already (RFC 2595 4).
    pub fn stls_unavailable() -> Reply {
        Reply::err("STLS is not available")
    }

    pub fn tls_active() -> Reply {
        Reply::err("Command not permitted when TLS active")
    }

    /// Too many negative replies: the session is closed after this one.
    pub fn too_many_errors() -> Reply {
        Reply::err("Too many errors, closing connection")
    }

    /// The server is going down; nothing was deleted.
    pub fn shutting_down() -> Reply {
        Reply::sys_temp("Server shutting down")
    }

    /// RFC 1939 6: the UPDATE state could not remove every message marked deleted.
    pub fn update_failed() -> Reply {
        Reply::sys_temp("Some deleted messages not removed")
    }

    /// RFC 5034 4: the reply that ends a failed AUTH exchange.
    pub fn sasl(error: SaslError) -> Reply {
        match error {
            SaslError::Cancelled => Reply::err("Authentication cancelled"),
            SaslError::Malformed => Reply::err("Cannot decode the authentication response"),
            SaslError::UnexpectedInitialResponse => Reply::err("Initial response not allowed for this mechanism"),
            SaslError::BadCredentials
            | SaslError::AuthzDenied
            | SaslError::MechanismUnavailable
            | SaslError::BadServerSignature => Reply::auth_failed(),
            SaslError::Temporary => Reply::sys_temp("Temporary authentication failure, try again later"),
            SaslError::UnknownMechanism => Reply::err("Unrecognized authentication mechanism"),
            SaslError::EncryptionRequired => Reply::plaintext_disallowed(),
            SaslError::LineTooLong => Reply::err("Authentication line too long"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(Reply::ok("2 320").to_wire(), b"+OK 2 320\r\n");
        assert_eq!(Reply::ok("").to_wire(), b"+OK\r\n");
        assert_eq!(Reply::in_use().to_wire(), b"-ERR [IN-USE] Mailbox is locked by another POP3 session\r\n");
        assert_eq!(Reply::auth_failed().to_string(), "-ERR [AUTH] Authentication failed");
    }

    #[test]
    fn control_characters_cannot_inject_lines() {
        assert_eq!(Reply::err("a\r\n+OK b").to_wire(), b"-ERR a??+OK b\r\n");
    }

    #[test]
    fn codes_parse_and_unknown_ones_are_ignored() {
        assert_eq!(RespCode::parse("[in-use] locked"), Some(RespCode::InUse));
        assert_eq!(RespCode::parse("[SYS/TEMP] x"), Some(RespCode::SysTemp));
        assert_eq!(RespCode::parse("[X-FOO] x"), None);
        assert_eq!(RespCode::parse("no code"), None);
    }

    #[test]
    fn every_sasl_error_has_a_reply() {
        assert_eq!(Reply::sasl(SaslError::BadCredentials).code, Some(RespCode::Auth));
        assert_eq!(Reply::sasl(SaslError::Temporary).code, Some(RespCode::SysTemp));
        assert_eq!(Reply::sasl(SaslError::EncryptionRequired).code, Some(RespCode::Auth));
        assert!(!Reply::sasl(SaslError::Cancelled).positive);
    }
}
