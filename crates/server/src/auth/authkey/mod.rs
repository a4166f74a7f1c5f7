//! AuthKeys (SPEC 7): what the SMTP sessions use of them, the sender side's stamping
//! (`sender`) and the recipient side's check of another domain's keys (`verifier`), and
//! the making of a key. The key generator is a job (`jobs::keygen`), the VERIFY listener
//! a listener (`listen::authkey`).

use std::sync::Arc;

use vouchmail_proto::authkey::codec::KEY_LEN;
use vouchmail_store::Store;

pub mod sender;
pub mod verifier;

use crate::config;
use crate::net::dns::Dns;

/// What the SMTP sessions use of AuthKeys: the sender side's settings and the recipient
/// side's verifier (SPEC 7.4, 7.5).
pub struct AuthKeys {
    pub verifier: verifier::Verifier,
    pub dns: Arc<Dns>,
    /// Phase II: key mail stays in the mailbox.
    pub keep_key_mail: bool,
    /// Check X-Auth-Key on MX mail.
    pub verify: bool,
}

impl AuthKeys {
    pub fn new(config: &config::AuthKey, dns: Arc<Dns>, store: Arc<dyn Store>) -> Arc<AuthKeys> {
        Arc::new(AuthKeys {
            verifier: verifier::Verifier::new(config, Arc::clone(&dns), store),
            dns,
            keep_key_mail: config.keep_key_mail,
            verify: config.verify,
        })
    }
}

/// SPEC 7.1: the alphabet of a key.
const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A new key: 64 characters of `[A-Za-z0-9]` from the OS random source (SPEC 7.1). Bytes of
/// 248 and above are rejected (248 = 4 * 62), so every character is equally likely.
pub fn generate_key() -> Result<String, getrandom::Error> {
    let mut key = String::with_capacity(KEY_LEN);
    let mut buf = [0u8; 96];
    while key.len() < KEY_LEN {
        getrandom::getrandom(&mut buf)?;
        for &b in &buf {
            if key.len() == KEY_LEN {
                break;
            }
            if b < 248 {
                key.push(char::from(ALPHABET[usize::from(b % 62)]));
            }
        }
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_64_alphanumerics_and_differ() {
        let a = generate_key().unwrap();
        let b = generate_key().unwrap();
        assert_eq!(a.len(), KEY_LEN);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
