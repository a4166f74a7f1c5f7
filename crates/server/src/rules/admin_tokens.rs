//! The admin API's bearer tokens (SPEC 12): made here, shown once, kept as their SHA-256
//! only (a token is 256 random bits, so a hash without a salt or a slow KDF is enough, and
//! looking one up by its hash compares no secret byte by byte). A revoked token is kept, so
//! that a client using it is told it was revoked (403) rather than unknown (401).

use base64::Engine;
use sha2::{Digest, Sha256};
use vouchmail_store::{AdminToken, Store, StoreError};

use crate::net::tls::hex;
use crate::support::time::unix_now;

/// What a token looks like: a prefix (so that a leaked one is recognisable, e.g. by secret
/// scanners) and 43 base64url characters.
pub const TOKEN_PREFIX: &str = "vmat_";

/// What a presented token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    /// A token in force, by name (every change it makes is logged with it).
    Valid(String),
    Revoked(String),
    Unknown,
}

pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// A name the operator can type and logs can show: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Makes a token named `name` and returns it (the only time it is seen).
pub async fn create_token(store: &dyn Store, name: &str) -> Result<String, StoreError> {
    if !valid_name(name) {
        return Err(StoreError::Invalid(format!("token name {name:?}: 1 to 64 letters, digits, '.', '_' or '-'")));
    }
    let mut random = [0u8; 32];
    getrandom::getrandom(&mut random).map_err(|e| StoreError::Unavailable(format!("no random source: {e}")))?;
    let token = format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random));
    let record = AdminToken { name: name.into(), hash: token_hash(&token), created_at: unix_now(), revoked_at: None };
    store.add_admin_token(record).await?;
    Ok(token)
}

pub async fn check_token(store: &dyn Store, token: &str) -> Result<TokenCheck, StoreError> {
    if !token.starts_with(TOKEN_PREFIX) {
        return Ok(TokenCheck::Unknown);
    }
    Ok(match store.admin_token_by_hash(&token_hash(token)).await? {
        Some(found) if found.revoked_at.is_some() => TokenCheck::Revoked(found.name),
        Some(found) => TokenCheck::Valid(found.name),
        None => TokenCheck::Unknown,
    })
}

pub async fn revoke_token(store: &dyn Store, name: &str) -> Result<(), StoreError> {
    store.revoke_admin_token(name, unix_now()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_and_plain() {
        assert!(valid_name("ops-console_1.2"));
        for bad in ["", "a b", "ümlaut", "x/y", &"n".repeat(65)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert_eq!(token_hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
