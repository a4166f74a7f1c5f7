//! Stored account secrets. No plain-text password is ever kept.
//!
//! Each kind serialises to one text string (one store column per kind):
//! - Argon2id: the PHC string (`$argon2id$v=19$...`), for PLAIN and LOGIN;
//! - SCRAM-SHA-256: `SCRAM-SHA-256$<iterations>$<salt b64>$<StoredKey b64>$<ServerKey b64>`;
//! - CRAM-MD5: `CRAM-MD5$<64 hex>`, the HMAC-MD5 outer then inner MD5 states, each as four
//!   little-endian words (Dovecot's `{CRAM-MD5}` scheme; that form is accepted too).

use std::fmt;
use std::str::FromStr;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::{ct_eq, md5_state, scram};

/// RFC 7677 4: the iteration count SHOULD be at least 4096.
pub const MIN_SCRAM_ITERATIONS: u32 = 4096;

/// Random octets [`Secrets::from_password`] takes: a 16-octet Argon2id salt and a
/// 16-octet SCRAM salt.
pub const SALTS_LEN: usize = 32;

/// Which secrets to derive from a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretsPolicy {
    /// Store the CRAM-MD5 HMAC states (needed for CRAM-MD5 and ODMR; off per site).
    pub cram_md5: bool,
    /// SCRAM-SHA-256 iteration count, at least [`MIN_SCRAM_ITERATIONS`].
    pub scram_iterations: u32,
}

impl Default for SecretsPolicy {
    fn default() -> Self {
        SecretsPolicy { cram_md5: true, scram_iterations: MIN_SCRAM_ITERATIONS }
    }
}

/// The secrets stored for one account.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    /// Argon2id hash in PHC string format, for PLAIN and LOGIN.
    pub argon2: Option<String>,
    /// SCRAM-SHA-256 keys.
    pub scram_sha256: Option<ScramSecret>,
    /// CRAM-MD5 precomputed HMAC-MD5 states.
    pub cram_md5: Option<CramMd5Secret>,
}

/// The text form of [`Secrets`], one string per kind, for the store's columns.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretFields {
    pub argon2: Option<String>,
    pub scram_sha256: Option<String>,
    pub cram_md5: Option<String>,
}

impl fmt::Debug for SecretFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretFields")
            .field("argon2", &self.argon2.as_ref().map(|_| "<redacted>"))
            .field("scram_sha256", &self.scram_sha256.as_ref().map(|_| "<redacted>"))
            .field("cram_md5", &self.cram_md5.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Secrets {
    /// Derives every secret kind from a password, with the default policy. `salts`: octets
    /// from the OS random source, read by the caller (see [`Secrets::from_password_with`]).
    pub fn from_password(password: &str, salts: &[u8; SALTS_LEN]) -> Result<Secrets, SecretsError> {
        Secrets::from_password_with(password, &SecretsPolicy::default(), salts)
    }

    /// Derives the secrets `policy` asks for from a password. `salts`: fresh octets from the
    /// OS random source; the first 16 salt the Argon2id hash, the last 16 the SCRAM keys
    /// (RFC 5802 5.1 `s`), so the two never share a salt.
    pub fn from_password_with(
        password: &str,
        policy: &SecretsPolicy,
        salts: &[u8; SALTS_LEN],
    ) -> Result<Secrets, SecretsError> {
        if policy.scram_iterations < MIN_SCRAM_ITERATIONS {
            return Err(SecretsError::Policy);
        }
        let (salt, scram_salt) = salts.split_at(SALTS_LEN / 2);
        let phc_salt = SaltString::encode_b64(salt).map_err(|_| SecretsError::Random)?;
        let hash = Argon2::default().hash_password(password.as_bytes(), &phc_salt).map_err(|_| SecretsError::Hash)?;
        Ok(Secrets {
            argon2: Some(hash.to_string()),
            scram_sha256: Some(ScramSecret::derive(password, scram_salt, policy.scram_iterations)),
            cram_md5: policy.cram_md5.then(|| CramMd5Secret::from_password(password)),
        })
    }

    /// Checks a password: against the Argon2id hash (constant-time inside argon2), or, when
    /// there is none, against the SCRAM keys, or else the CRAM-MD5 states.
    pub fn verify_password(&self, password: &str) -> bool {
        if let Some(phc) = &self.argon2 {
            let Ok(parsed) = PasswordHash::new(phc) else {
                return false;
            };
            return Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok();
        }
        if let Some(scram) = &self.scram_sha256 {
            return scram.verify_password(password);
        }
        if let Some(cram) = &self.cram_md5 {
            return cram.verify_password(password);
        }
        false
    }

    /// True when any secret kind that can check a password is present.
    pub fn has_any(&self) -> bool {
        self.argon2.is_some() || self.scram_sha256.is_some() || self.cram_md5.is_some()
    }

    /// The text form of each kind, for storing.
    pub fn to_fields(&self) -> SecretFields {
        SecretFields {
            argon2: self.argon2.clone(),
            scram_sha256: self.scram_sha256.as_ref().map(ToString::to_string),
            cram_md5: self.cram_md5.as_ref().map(ToString::to_string),
        }
    }

    /// Parses stored text forms; any present field that does not parse is an error.
    pub fn from_fields(fields: &SecretFields) -> Result<Secrets, SecretsError> {
        let argon2 = match &fields.argon2 {
            Some(phc) => {
                PasswordHash::new(phc).map_err(|_| SecretsError::Format)?;
                Some(phc.clone())
            }
            None => None,
        };
        Ok(Secrets {
            argon2,
            scram_sha256: fields.scram_sha256.as_deref().map(str::parse).transpose()?,
            cram_md5: fields.cram_md5.as_deref().map(str::parse).transpose()?,
        })
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("argon2", &self.argon2.as_ref().map(|_| "<redacted>"))
            .field("scram_sha256", &self.scram_sha256)
            .field("cram_md5", &self.cram_md5)
            .finish()
    }
}

/// SCRAM-SHA-256 server-side keys (RFC 5802 3).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    pub iterations: u32,
    pub salt: Vec<u8>,
    /// H(ClientKey).
    pub stored_key: [u8; 32],
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: [u8; 32],
}

impl ScramSecret {
    /// RFC 5802 3: SaltedPassword = Hi(password, salt, i), then the two keys.
    /// The password is used as given (no SASLprep); clients do the same for ASCII.
    pub fn derive(password: &str, salt: &[u8], iterations: u32) -> ScramSecret {
        let salted = scram::hi(password.as_bytes(), salt, iterations);
        ScramSecret {
            iterations,
            salt: salt.to_vec(),
            stored_key: scram::h(&scram::client_key(&salted)),
            server_key: scram::server_key(&salted),
        }
    }

    fn verify_password(&self, password: &str) -> bool {
        let other = ScramSecret::derive(password, &self.salt, self.iterations);
        ct_eq(&other.stored_key, &self.stored_key)
    }
}

impl fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramSecret").field("iterations", &self.iterations).finish_non_exhaustive()
    }
}

const SCRAM_PREFIX: &str = "SCRAM-SHA-256$";

impl fmt::Display for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCRAM_PREFIX}{}${}${}${}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }
}

impl FromStr for ScramSecret {
    type Err = SecretsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix(SCRAM_PREFIX).ok_or(SecretsError::Format)?;
        let mut parts = rest.split('$');
        let (Some(iter), Some(salt), Some(stored), Some(server), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(SecretsError::Format);
        };
        let iterations: u32 = iter.parse().map_err(|_| SecretsError::Format)?;
        let salt = STANDARD.decode(salt).map_err(|_| SecretsError::Format)?;
        if iterations == 0 || salt.is_empty() {
            return Err(SecretsError::Format);
        }
        Ok(ScramSecret { iterations, salt, stored_key: decode_key(stored)?, server_key: decode_key(server)? })
    }
}

fn decode_key(b64: &str) -> Result<[u8; 32], SecretsError> {
    let bytes = STANDARD.decode(b64).map_err(|_| SecretsError::Format)?;
    bytes.try_into().map_err(|_| SecretsError::Format)
}

/// CRAM-MD5 secret: the MD5 states after absorbing `key ^ opad` and `key ^ ipad`
/// (RFC 2104 2), as Dovecot's CRAM-MD5 scheme. Equivalent to the password for CRAM-MD5,
/// so it must be protected like a password hash.
#[derive(Clone, PartialEq, Eq)]
pub struct CramMd5Secret {
    outer: [u32; 4],
    inner: [u32; 4],
}

impl CramMd5Secret {
    pub fn from_password(password: &str) -> CramMd5Secret {
        let (outer, inner) = md5_state::hmac_states(password.as_bytes());
        CramMd5Secret { outer, inner }
    }

    /// HMAC-MD5(password, message) without knowing the password (RFC 2195 2).
    pub(crate) fn hmac(&self, message: &[u8]) -> [u8; 16] {
        md5_state::hmac_from_states(self.outer, self.inner, message)
    }

    fn to_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (chunk, word) in out.chunks_exact_mut(4).zip(self.outer.iter().chain(&self.inner)) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        out
    }

    fn verify_password(&self, password: &str) -> bool {
        ct_eq(&CramMd5Secret::from_password(password).to_bytes(), &self.to_bytes())
    }
}

impl fmt::Debug for CramMd5Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CramMd5Secret { .. }")
    }
}

const CRAM_PREFIX: &str = "CRAM-MD5$";
const DOVECOT_CRAM_PREFIX: &str = "{CRAM-MD5}";

impl fmt::Display for CramMd5Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(CRAM_PREFIX)?;
        self.to_bytes().iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl FromStr for CramMd5Secret {
    type Err = SecretsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex =
            s.strip_prefix(CRAM_PREFIX).or_else(|| s.strip_prefix(DOVECOT_CRAM_PREFIX)).ok_or(SecretsError::Format)?;
        let bytes = decode_hex(hex).ok_or(SecretsError::Format)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| SecretsError::Format)?;
        let mut words = [0u32; 8];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(4)) {
            *word = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        Ok(CramMd5Secret {
            outer: [words[0], words[1], words[2], words[3]],
            inner: [words[4], words[5], words[6], words[7]],
        })
    }
}

/// Decodes hex of either case; None on odd length or a non-hex digit.
pub(crate) fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    let pairs = hex.as_bytes().chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    pairs
        .map(|pair| {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretsError {
    /// The salt could not be encoded for the Argon2id hash.
    Random,
    Hash,
    /// A stored secret string does not parse.
    Format,
    /// The policy asks for fewer than [`MIN_SCRAM_ITERATIONS`] SCRAM iterations.
    Policy,
}

impl fmt::Display for SecretsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretsError::Random => f.write_str("the salt cannot be used"),
            SecretsError::Hash => f.write_str("password hashing failed"),
            SecretsError::Format => f.write_str("a stored secret is malformed"),
            SecretsError::Policy => f.write_str("SCRAM iteration count below 4096"),
        }
    }
}

impl std::error::Error for SecretsError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fixed salts: the derivation is deterministic.
    const SALTS: [u8; SALTS_LEN] = *b"argon2 salt 16o.scram salt 16oc.";

    #[test]
    fn the_two_salts_are_the_callers_halves() {
        let s = Secrets::from_password("pencil", &SALTS).unwrap();
        assert_eq!(s.scram_sha256.as_ref().unwrap().salt, b"scram salt 16oc.");
        let phc = s.argon2.as_deref().unwrap();
        let salt = PasswordHash::new(phc).unwrap().salt.unwrap().to_string();
        assert_eq!(salt, SaltString::encode_b64(b"argon2 salt 16o.").unwrap().as_str());
        assert_eq!(Secrets::from_password("pencil", &SALTS).unwrap(), s, "same salts, same secrets");
    }

    #[test]
    fn from_password_derives_every_kind_and_verifies() {
        let s = Secrets::from_password("pencil", &SALTS).unwrap();
        assert!(s.argon2.is_some() && s.scram_sha256.is_some() && s.cram_md5.is_some());
        assert_eq!(s.scram_sha256.as_ref().unwrap().iterations, 4096);
        assert!(s.verify_password("pencil"));
        assert!(!s.verify_password("pencil2"));
    }

    #[test]
    fn policy_switches_cram_off_and_rejects_weak_iterations() {
        let policy = SecretsPolicy { cram_md5: false, scram_iterations: 5000 };
        let s = Secrets::from_password_with("x", &policy, &SALTS).unwrap();
        assert!(s.cram_md5.is_none());
        assert_eq!(s.scram_sha256.unwrap().iterations, 5000);
        let weak = SecretsPolicy { cram_md5: true, scram_iterations: 4095 };
        assert_eq!(Secrets::from_password_with("x", &weak, &SALTS), Err(SecretsError::Policy));
    }

    #[test]
    fn verify_falls_back_to_scram_then_cram() {
        let scram_only = Secrets { scram_sha256: Some(ScramSecret::derive("pw", b"salt", 4096)), ..Secrets::default() };
        assert!(scram_only.verify_password("pw"));
        assert!(!scram_only.verify_password("pW"));
        let cram_only = Secrets { cram_md5: Some(CramMd5Secret::from_password("pw")), ..Secrets::default() };
        assert!(cram_only.verify_password("pw"));
        assert!(!cram_only.verify_password("px"));
        assert!(!Secrets::default().verify_password(""));
    }

    #[test]
    fn fields_round_trip() {
        let s = Secrets::from_password("tanstaaftanstaaf", &SALTS).unwrap();
        let f = s.to_fields();
        assert!(f.scram_sha256.as_deref().unwrap().starts_with("SCRAM-SHA-256$4096$"));
        assert!(f.cram_md5.as_deref().unwrap().starts_with("CRAM-MD5$"));
        assert_eq!(f.cram_md5.as_deref().unwrap().len(), "CRAM-MD5$".len() + 64);
        assert_eq!(Secrets::from_fields(&f).unwrap(), s);
        assert_eq!(Secrets::from_fields(&SecretFields::default()).unwrap(), Secrets::default());
    }

    #[test]
    fn bad_fields_are_rejected() {
        for bad in [
            SecretFields { argon2: Some("nope".into()), ..Default::default() },
            SecretFields { scram_sha256: Some("SCRAM-SHA-256$4096$$AA==$AA==".into()), ..Default::default() },
            SecretFields { scram_sha256: Some("SCRAM-SHA-256$x$c2FsdA==$AA==$AA==".into()), ..Default::default() },
            SecretFields { cram_md5: Some("CRAM-MD5$00".into()), ..Default::default() },
            SecretFields { cram_md5: Some(format!("CRAM-MD5${}", "zz".repeat(32))), ..Default::default() },
            SecretFields { cram_md5: Some("MD5$00".into()), ..Default::default() },
        ] {
            assert_eq!(Secrets::from_fields(&bad), Err(SecretsError::Format), "{bad:?}");
        }
    }

    #[test]
    fn rfc7677_keys() {
        // RFC 7677 3: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, i=4096.
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let secret = ScramSecret::derive("pencil", &salt, 4096);
        let text = secret.to_string();
        assert_eq!(text.parse::<ScramSecret>().unwrap(), secret);
        assert!(text.starts_with("SCRAM-SHA-256$4096$W22ZaJ0SNY7soEsUEjb6gQ==$"));
    }

    #[test]
    fn cram_states_match_hmac_and_dovecot_prefix() {
        let secret = CramMd5Secret::from_password("tanstaaftanstaaf");
        // RFC 2195 2 example digest.
        let digest = secret.hmac(b"<1896.697170952@postoffice.reston.mci.net>");
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "b913a602c7eda7a495b4e6e7334d3890");
        let dovecot = secret.to_string().replace("CRAM-MD5$", "{CRAM-MD5}");
        assert_eq!(dovecot.parse::<CramMd5Secret>().unwrap(), secret);
        // The stored form holds no password and the outer state comes first.
        let (outer, _) = md5_state::hmac_states(b"tanstaaftanstaaf");
        assert!(secret.to_string()[9..].starts_with(&format!("{:02x}", outer[0] & 0xff)));
    }

    #[test]
    fn debug_redacts() {
        let s = Secrets::from_password("secret", &SALTS).unwrap();
        let shown = format!("{s:?} {:?}", s.to_fields());
        assert!(!shown.contains("argon2id") && !shown.contains("CRAM-MD5$"), "{shown}");
    }
}
