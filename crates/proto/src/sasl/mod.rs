//! SASL mechanisms (RFC 4422) as I/O-free state machines, and the stored secrets they check.
//!
//! Server side: [`ServerSession`] takes raw (base64-decoded) client responses and yields
//! [`ServerStep`]s; when it needs an account's secrets it asks with
//! [`ServerStep::NeedSecrets`] and the driver answers with
//! [`ServerSession::provide_secrets`]. Client side: [`ClientSession`]. Line coding for
//! SMTP (RFC 4954 4) and POP3 (RFC 5034 4): [`decode_response`], [`encode_challenge`].

mod client;
mod md5_state;
mod scram;
pub mod secrets;
mod server;
#[cfg(test)]
mod tests;

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

pub use client::{ClientSession, Credentials};
pub use secrets::{CramMd5Secret, ScramSecret, SecretFields, Secrets, SecretsError, SecretsPolicy, SALTS_LEN};
pub use server::{ServerOptions, ServerSession, ServerStep, SiteSecret};

/// A SASL mechanism this crate implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// RFC 4616.
    Plain,
    /// draft-murchison-sasl-login.
    Login,
    /// RFC 2195.
    CramMd5,
    /// RFC 7677 / RFC 5802.
    ScramSha256,
    /// RFC 7677 / RFC 5802 with tls-exporter channel binding (RFC 9266).
    ScramSha256Plus,
    /// RFC 4422 appendix A; the identity comes from the TLS client certificate.
    External,
}

impl Mechanism {
    /// Every mechanism, strongest first (a sensible advertising order).
    pub const ALL: [Mechanism; 6] = [
        Mechanism::ScramSha256Plus,
        Mechanism::ScramSha256,
        Mechanism::External,
        Mechanism::CramMd5,
        Mechanism::Plain,
        Mechanism::Login,
    ];

    /// The registered name, as advertised in EHLO/CAPA.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::CramMd5 => "CRAM-MD5",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            Mechanism::External => "EXTERNAL",
        }
    }

    /// Looks a mechanism up by name, ignoring case (RFC 4422 3.1).
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// True when the mechanism sends the password in the clear, so it must only be offered
    /// over TLS (RFC 4616 6; SPEC 3: 538 5.7.11 otherwise).
    pub fn needs_tls_for_clear(self) -> bool {
        matches!(self, Mechanism::Plain | Mechanism::Login)
    }

    /// True for mechanisms that need channel-binding data from the TLS layer.
    pub fn needs_channel_binding(self) -> bool {
        self == Mechanism::ScramSha256Plus
    }

    /// True when the client speaks first, so an initial response is allowed
    /// (RFC 4954 4: otherwise an initial response gets 501).
    pub fn client_first(self) -> bool {
        !matches!(self, Mechanism::Login | Mechanism::CramMd5)
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an authentication exchange ended without success. Each kind maps to one SMTP reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SaslError {
    /// The client sent `*` (RFC 4954 4): 501 5.0.0.
    Cancelled,
    /// Bad base64 or a message that breaks the mechanism's syntax: 501 5.5.2.
    Malformed,
    /// An initial response for a mechanism where the server speaks first (RFC 4954 4):
    /// 501 5.7.0.
    UnexpectedInitialResponse,
    /// Wrong password, unknown user, or failed proof: 535 5.7.8.
    BadCredentials,
    /// The authenticated identity may not act as the requested authzid: 535 5.7.8.
    AuthzDenied,
    /// The account has no secret usable by this mechanism (e.g. no CRAM-MD5 state stored),
    /// or the channel lacks what the mechanism needs (EXTERNAL without a certificate,
    /// -PLUS without binding data). On the wire identical to `BadCredentials`, so that it
    /// does not reveal which accounts exist.
    MechanismUnavailable,
    /// A local failure (the store cannot be read; a client given no nonce): 454 4.7.0.
    Temporary,
    /// Driver use: AUTH names a mechanism not offered: 504 5.5.4 (RFC 4954 4).
    UnknownMechanism,
    /// Driver use: PLAIN/LOGIN on a clear channel: 538 5.7.11 (RFC 4954 6).
    EncryptionRequired,
    /// Driver use: an exchange line over the limit: 500 5.5.6 (RFC 4954 4).
    LineTooLong,
    /// Client side only: the server's SCRAM signature was missing or wrong, so the server
    /// does not know the password and must not be trusted.
    BadServerSignature,
}

impl SaslError {
    /// Whether the failure was a guess at a password, for the AUTH failure limits (SPEC
    /// 3): a cancel, a syntax slip or a local failure is not.
    pub fn counts_as_guess(self) -> bool {
        matches!(self, SaslError::BadCredentials | SaslError::AuthzDenied | SaslError::MechanismUnavailable)
    }

    /// SMTP reply code (RFC 4954 4, 6).
    pub fn code(self) -> u16 {
        match self {
            SaslError::Cancelled | SaslError::Malformed | SaslError::UnexpectedInitialResponse => 501,
            SaslError::BadCredentials
            | SaslError::AuthzDenied
            | SaslError::MechanismUnavailable
            | SaslError::BadServerSignature => 535,
            SaslError::Temporary => 454,
            SaslError::UnknownMechanism => 504,
            SaslError::EncryptionRequired => 538,
            SaslError::LineTooLong => 500,
        }
    }

    /// Enhanced status code (RFC 3463, RFC 4954 6).
    pub fn enhanced(self) -> &'static str {
        match self {
            SaslError::Cancelled => "5.0.0",
            SaslError::Malformed => "5.5.2",
            SaslError::UnexpectedInitialResponse => "5.7.0",
            SaslError::BadCredentials
            | SaslError::AuthzDenied
            | SaslError::MechanismUnavailable
            | SaslError::BadServerSignature => "5.7.8",
            SaslError::Temporary => "4.7.0",
            SaslError::UnknownMechanism => "5.5.4",
            SaslError::EncryptionRequired => "5.7.11",
            SaslError::LineTooLong => "5.5.6",
        }
    }

    /// Reply text to send to the peer.
    pub fn text(self) -> &'static str {
        match self {
            SaslError::Cancelled => "Authentication cancelled",
            SaslError::Malformed => "Cannot decode the authentication response",
            SaslError::UnexpectedInitialResponse => {
                "Client initiated authentication exchange not allowed for this mechanism"
            }
            SaslError::BadCredentials | SaslError::MechanismUnavailable => "Authentication credentials invalid",
            SaslError::AuthzDenied => "Not authorized to act as the requested identity",
            SaslError::Temporary => "Temporary authentication failure",
            SaslError::BadServerSignature => "Server failed to prove its identity",
            SaslError::UnknownMechanism => "Unrecognized authentication type",
            SaslError::EncryptionRequired => "Encryption required for requested authentication mechanism",
            SaslError::LineTooLong => "Authentication Exchange line is too long",
        }
    }
}

impl fmt::Display for SaslError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            SaslError::MechanismUnavailable => "no usable secret or channel data for mechanism",
            other => other.text(),
        };
        f.write_str(what)
    }
}

impl std::error::Error for SaslError {}

/// Decodes one client response line (without CRLF, which is tolerated) or an AUTH initial
/// response argument. `*` is `Err(Cancelled)` (RFC 4954 4); `=` (initial response) and an
/// empty line (continuation) are the empty response; anything else must be canonical
/// base64 (else `Err(Malformed)`).
pub fn decode_response(line: &[u8]) -> Result<Vec<u8>, SaslError> {
    let line = trim_crlf(line);
    match line {
        b"*" => Err(SaslError::Cancelled),
        b"" | b"=" => Ok(Vec::new()),
        _ => STANDARD.decode(line).map_err(|_| SaslError::Malformed),
    }
}

/// Encodes a raw server challenge for a `334 ` (SMTP) or `+ ` (POP3) line.
pub fn encode_challenge(raw: &[u8]) -> String {
    STANDARD.encode(raw)
}

/// Client side: decodes the text of a `334 `/`+ ` challenge line.
pub fn decode_challenge(line: &[u8]) -> Result<Vec<u8>, SaslError> {
    let line = trim_crlf(line);
    if line == b"=" {
        return Ok(Vec::new());
    }
    STANDARD.decode(line).map_err(|_| SaslError::Malformed)
}

/// Client side: encodes a continuation response line (empty stays empty, RFC 4954 4).
pub fn encode_response(raw: &[u8]) -> String {
    STANDARD.encode(raw)
}

/// Client side: encodes an AUTH initial-response argument; empty becomes `=` (RFC 4954 4).
pub fn encode_initial_response(raw: &[u8]) -> String {
    if raw.is_empty() {
        "=".to_owned()
    } else {
        STANDARD.encode(raw)
    }
}

/// What the connection offers the mechanisms: every protocol (SMTP, POP3) decides the
/// offered list, the mechanism choice and the server options the same way from these.
#[derive(Debug, Clone, Copy, Default)]
pub struct Channel<'a> {
    /// Inside TLS.
    pub encrypted: bool,
    /// PLAIN and LOGIN may be used (inside TLS, or where the site allows clear-text passwords).
    pub plaintext_allowed: bool,
    /// tls-exporter binding data, for SCRAM-SHA-256-PLUS.
    pub channel_binding: Option<&'a [u8]>,
    /// The account a verified client certificate maps to, for EXTERNAL.
    pub external_identity: Option<&'a str>,
}

/// The configured mechanisms usable on this channel: PLAIN and LOGIN only when clear-text
/// passwords are allowed, -PLUS only with channel binding data, EXTERNAL only with a mapped
/// client certificate.
pub fn offered_mechanisms(configured: &[Mechanism], channel: &Channel<'_>) -> Vec<Mechanism> {
    configured
        .iter()
        .copied()
        .filter(|m| match m {
            Mechanism::Plain | Mechanism::Login => channel.plaintext_allowed,
            Mechanism::ScramSha256Plus => channel.channel_binding.is_some(),
            Mechanism::External => channel.external_identity.is_some(),
            _ => true,
        })
        .collect()
}

/// The mechanism an AUTH command names, or why it cannot be used here: not offered
/// (RFC 4954 4: 504), or it needs encryption first (RFC 4954 6: 538).
pub fn select_mechanism(name: &str, configured: &[Mechanism], channel: &Channel<'_>) -> Result<Mechanism, SaslError> {
    let mechanism = Mechanism::from_name(name).filter(|m| configured.contains(m)).ok_or(SaslError::UnknownMechanism)?;
    if offered_mechanisms(configured, channel).contains(&mechanism) {
        return Ok(mechanism);
    }
    if mechanism.needs_tls_for_clear() && !channel.encrypted {
        return Err(SaslError::EncryptionRequired);
    }
    Err(SaslError::UnknownMechanism)
}

/// An AUTH command's initial response: none, `=` for empty (RFC 4954 4, RFC 5034 4), or
/// base64.
pub fn decode_initial_response(initial: Option<&str>) -> Result<Option<Vec<u8>>, SaslError> {
    initial.map(|ir| decode_response(ir.as_bytes())).transpose()
}

impl ServerOptions {
    /// The options for one exchange on this channel.
    pub fn for_channel(
        hostname: &str,
        channel: &Channel<'_>,
        scram_iterations: u32,
        fake_salt_key: Option<&SiteSecret>,
    ) -> ServerOptions {
        ServerOptions {
            hostname: hostname.to_string(),
            channel_binding: channel.channel_binding.map(<[u8]>::to_vec),
            external_identity: channel.external_identity.map(str::to_string),
            scram_iterations,
            fake_salt_key: fake_salt_key.cloned(),
            ..ServerOptions::default()
        }
    }
}

fn trim_crlf(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Constant-time equality of two byte strings (the length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Length of [`Fresh::seed`].
pub const SEED_LEN: usize = 32;

/// Random octets a SCRAM client nonce is made of ([`ClientSession::with_random_nonce`]):
/// 18 octets, 24 base64 characters, as the server's own nonce.
pub const NONCE_RANDOM_LEN: usize = 18;

/// What an exchange needs from outside the state machine: the clock and the OS random
/// source. The driver reads both and hands them in, so the mechanisms never do I/O and
/// tests are deterministic.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fresh {
    /// Unix time in seconds (the CRAM-MD5 challenge's timestamp, RFC 2195 2).
    pub unix_time: u64,
    /// Octets from the OS random source, used for one exchange only (or as the seed of a
    /// session's exchanges, see [`Fresh::nth`]).
    pub seed: [u8; SEED_LEN],
}

impl Fresh {
    pub fn new(unix_time: u64, seed: [u8; SEED_LEN]) -> Fresh {
        Fresh { unix_time, seed }
    }

    /// The values of a session's `n`-th exchange (a session may run several AUTHs): a
    /// different seed for each, all derived from this one, at `unix_time`.
    pub fn nth(&self, n: u64, unix_time: u64) -> Fresh {
        let mut label = b"vouchmail exchange ".to_vec();
        label.extend_from_slice(&n.to_be_bytes());
        Fresh { unix_time, seed: scram::hmac(&self.seed, &label) }
    }

    /// `N` (at most 32) octets for one purpose. HMAC-SHA-256 of the seed under a label, so
    /// the CRAM-MD5 random part, the SCRAM nonce and a fake salt are independent of each
    /// other although they come from one seed.
    pub(crate) fn derive<const N: usize>(&self, label: &str) -> [u8; N] {
        let mac = scram::hmac(&self.seed, label.as_bytes());
        let mut out = [0u8; N];
        let n = N.min(mac.len());
        out[..n].copy_from_slice(&mac[..n]);
        out
    }
}

impl fmt::Debug for Fresh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The seed decides nonces: never printed.
        f.debug_struct("Fresh").field("unix_time", &self.unix_time).finish_non_exhaustive()
    }
}

/// A nonce of printable characters without `,` (RFC 5802 7 `printable`): base64 of the
/// random octets.
pub(crate) fn nonce_from(random: &[u8; NONCE_RANDOM_LEN]) -> String {
    STANDARD.encode(random)
}
