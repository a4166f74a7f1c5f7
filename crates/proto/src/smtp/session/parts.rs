//! What the session holds and hands its driver, apart from the stages that work on it:
//! the TLS facts, the RCRAM exchange and verdicts, the PEM being uploaded, and the replies
//! more than one stage gives. The stage files use these; none of them uses a stage.

use crate::sasl::SaslError;
use crate::smtp::reply::{EnhancedCode, Reply};

/// What the driver learned from the TLS handshake.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// e.g. "TLSv1.3".
    pub version: String,
    pub cipher: String,
    /// tls-exporter channel binding (RFC 9266), for SCRAM-SHA-256-PLUS.
    pub channel_binding: Option<Vec<u8>>,
    /// The account a verified client certificate maps to, for SASL EXTERNAL.
    pub external_identity: Option<String>,
}

/// The driver's answer to an RCRAM request (SPEC 8.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcramVerdict {
    /// Verifier, step 4: the home server's `334` line, as read, passed on unchanged.
    Relayed334 { wire: Vec<u8> },
    /// Home server, step 3: the bound challenge issued for this exchange (the session
    /// sends it base64-encoded in a `334`).
    Issued { challenge: String },
    /// Step 5 / 6: the answer is right. On the verifier the client is now authenticated as
    /// the address (remotely); on the home server the connection is verification-only.
    Success,
    /// A refusal that counts as a failed attempt (`535 5.7.0`, `535 5.7.8`).
    Refused(Reply),
    /// Cannot be decided now (`454 4.7.0`); not a failed attempt.
    Unavailable(Reply),
}

/// The RCRAM exchange in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Exchange {
    /// On the verifier: the client's `AUTH RCRAM-MD5 <address>`.
    Relay { address: String },
    /// On the home server: `AUTH X-RCRAM-VERIFY <address> <verifier>`; `challenge` once
    /// issued.
    Verify { address: String, challenge: Option<String> },
}

impl Exchange {
    pub(super) fn address(&self) -> &str {
        match self {
            Exchange::Relay { address } | Exchange::Verify { address, .. } => address,
        }
    }
}

/// Most octets of PEM text one upload may hold (a certificate with a chain fits easily).
pub const MAX_PEM: usize = 32 * 1024;

/// The PEM lines read so far.
#[derive(Debug, Default)]
pub(super) struct PemReader {
    pub(super) text: String,
    /// Too large, a line over the limit, or not text: refused at the end.
    pub(super) refused: Option<&'static str>,
}

impl PemReader {
    pub(super) fn overflow(&mut self) {
        self.refused.get_or_insert("Certificate upload too large");
    }
}

/// The SMTP reply for a SASL failure.
pub fn sasl_reply(error: SaslError) -> Reply {
    let mut parts = error.enhanced().split('.').map(|p| p.parse::<u16>().unwrap_or(0));
    let class = parts.next().unwrap_or(5) as u8;
    let enhanced = EnhancedCode(class, parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    Reply::new(error.code(), enhanced, error.text())
}

/// 452 4.3.1: the driver's in-flight message memory is used up (RFC 5321 4.3.2 allows 452
/// for DATA); the client tries again later.
pub(super) fn out_of_message_memory() -> Reply {
    Reply::insufficient_storage("Insufficient system storage, try again later")
}
