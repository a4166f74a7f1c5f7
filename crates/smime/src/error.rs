//! The one error type of the crate. Every failure, whatever the input, is one of these values;
//! nothing here panics on what a peer sent.

use std::fmt;

/// Why an operation failed. `Display` gives a one-line reason fit for a protocol reply
/// (`554 5.7.0 <reason>` for PUBCERT) or a client's error line.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A value given by the caller is unusable (an address, a number of days, a header value,
    /// a key that does not belong to the certificate, an empty recipient list).
    InvalidInput(String),
    /// A private key or certificate does not parse; the string says which and why.
    Parse(String),
    /// The certificate parses but is not usable (for the address, at this time, or at all:
    /// its key is not RSA); the string is the reason ("certificate expired on
    /// 2026-01-01T00:00:00Z").
    Certificate(String),
    /// The message is not an S/MIME enveloped-data or authEnveloped-data message, or its
    /// CMS structure is broken.
    Malformed(String),
    /// Well-formed, but uses something this crate does not implement (another smime-type,
    /// another content or key-encryption algorithm).
    Unsupported(String),
    /// No recipient info of the message names the given certificate: the message was
    /// encrypted for somebody else.
    NotForUs,
    /// The content-encryption key or the content did not decrypt, or (AuthEnvelopedData,
    /// RFC 5083 2.2) its ICV did not check. Deliberately one variant for all, so that
    /// nothing tells a failed RSA unwrap from a failed content decryption (RFC 3218 2.3).
    Decryption,
    /// An internal cryptographic operation failed (random numbers, RSA key generation or
    /// encryption, encoding).
    Crypto(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidInput(s) => write!(f, "invalid input: {s}"),
            Error::Parse(s) => f.write_str(s),
            Error::Certificate(s) => f.write_str(s),
            Error::Malformed(s) => write!(f, "malformed S/MIME message: {s}"),
            Error::Unsupported(s) => write!(f, "unsupported S/MIME message: {s}"),
            Error::NotForUs => f.write_str("message is not encrypted for this certificate"),
            Error::Decryption => f.write_str("decryption failed"),
            Error::Crypto(s) => write!(f, "cryptographic failure: {s}"),
        }
    }
}

impl std::error::Error for Error {}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
