//! S/MIME 4.0 (RFC 8551) for the `vouchmail client`: the user's key and certificate,
//! inspection of other users' certificates, and CMS EnvelopedData (RFC 5652, AES-CBC) and
//! AuthEnvelopedData (RFC 5083, AES-GCM per RFC 5084; [`encrypt_with`] and
//! [`ContentCipher`]) encryption and decryption that interoperate with `openssl smime` and
//! `openssl cms`.
//!
//! Pure Rust (RustCrypto's `cms`, `x509-cert`, `rsa`, `aes`, `cbc`, `aes-gcm`, `des`), so
//! the binary builds without libssl. Every function returns an [`Error`] for bad input and never
//! panics on what a peer sent (a fuzz target, `fuzz/fuzz_targets/smime_decrypt.rs`, holds
//! [`decrypt`] to that).
//!
//! ```
//! use std::time::SystemTime;
//! use vouchmail_smime::{decrypt, encrypt_message, keygen, Certificate, OuterHeaders, PrivateKey};
//!
//! // `vouchmail client keygen`: the files the profile's key_file and cert_file name.
//! let (key_pem, cert_pem) = keygen("glen@galkam.test", 365)?;
//! // PUBCERT's check, and `send`'s on what CERT returned.
//! let cert = Certificate::parse(cert_pem.as_bytes())?;
//! cert.validate_for("glen@galkam.test", SystemTime::now())?;
//! // `send`: the inner MIME entity to every recipient (and the sender).
//! let headers = OuterHeaders {
//!     from: "glen@galkam.test".into(),
//!     to: vec!["glen@galkam.test".into()],
//!     date: "Wed, 02 Dec 2026 09:00:00 +0000".into(),
//!     message_id: "1@galkam.test".into(),
//!     subject: Some("Results".into()),
//! };
//! let entity = b"Content-Type: text/plain\r\n\r\nHello\r\n";
//! let message = encrypt_message(entity, &[cert.clone()], &headers)?;
//! // `fetch`: Ok is `RECEIPT ... DECRYPTED`, any Err `RECEIPT ... FAILED`.
//! let key = PrivateKey::parse(key_pem.as_bytes())?;
//! assert_eq!(decrypt(&message, &key, &cert)?, entity);
//! # Ok::<(), vouchmail_smime::Error>(())
//! ```
//!
//! # RUSTSEC-2023-0071 (Marvin attack) and the `rsa` crate
//! `rsa` 0.9's PKCS#1 v1.5 decryption is not constant-time, so an attacker who can time
//! many decryptions of chosen ciphertexts could recover the plaintext of one. Here the
//! decryption runs only in the client, on the user's own machine, with a local key, once
//! per downloaded message; the only signal back to a sender is the `RECEIPT` line, sent
//! after a POP3 download, whose timing is dominated by network and disk noise far above
//! the microseconds the attack measures. In addition the decryption is blinded, and a
//! failed unwrap is indistinguishable in outcome from a wrong key (RFC 3218 section 2.3: a
//! random content key is used instead), so `DECRYPTED`/`FAILED` is not a padding oracle.
//! A server must not use this crate to decrypt for others.

mod ber;
mod cert;
mod envelope;
mod error;
mod gcm;
mod message;
mod oids;
mod text;

pub use cert::{
    keygen, keygen_with, Certificate, PrivateKey, KEYGEN_BACKDATE, KEYGEN_RSA_BITS, MAX_DAYS, MIN_RSA_BITS,
};
pub use envelope::{
    canonicalize, decrypt, encrypt, encrypt_message, encrypt_message_with, encrypt_with, ContentCipher,
};
pub use error::{Error, Result};
pub use message::{extract_cms, wrap_message, OuterHeaders, BASE64_LINE};
