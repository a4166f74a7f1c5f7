//! First start: the dev-default domain and the postmaster account (SPEC 1).

use vouchmail_proto::sasl::secrets::Secrets;
use vouchmail_store::{NewAccount, SenderPolicy, Store};

use crate::config::Config;

const BOOTSTRAPPED: &str = "bootstrapped";

/// A password of `len` characters from `[A-Za-z0-9]`, from the OS random source.
pub fn generate_password(len: usize) -> Result<String, String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut bytes = [0u8; 64];
        getrandom::getrandom(&mut bytes).map_err(|e| format!("random source: {e}"))?;
        // Rejection sampling keeps every character equally likely.
        for b in bytes {
            if (b as usize) < 256 - 256 % ALPHABET.len() && out.len() < len {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

/// Creates what the config's `[bootstrap]` asks for, once per store. Returns the postmaster
/// address and its generated password when one was created, so it can be shown once.
pub async fn bootstrap(config: &Config, store: &dyn Store) -> Result<Option<(String, String)>, String> {
    if store.get_meta(BOOTSTRAPPED).await.map_err(|e| e.to_string())?.is_some() {
        return Ok(None);
    }
    let mut created = None;
    let domain = config.bootstrap.domain.to_ascii_lowercase();
    if !domain.is_empty() {
        let policy: SenderPolicy = config.bootstrap.policy.parse()?;
        if store.get_domain(&domain).await.map_err(|e| e.to_string())?.is_none() {
            store.add_domain(&domain, policy).await.map_err(|e| e.to_string())?;
            tracing::info!(%domain, %policy, "created the first local domain");
        }
        let postmaster = format!("postmaster@{domain}");
        if config.bootstrap.postmaster && store.get_account(&postmaster).await.map_err(|e| e.to_string())?.is_none() {
            let password = generate_password(20)?;
            let secrets =
                Secrets::from_password_with(&password, &config.auth.secrets_policy()).map_err(|e| e.to_string())?;
            store
                .add_account(NewAccount { address: postmaster.clone(), secrets, quota_bytes: 0 })
                .await
                .map_err(|e| e.to_string())?;
            created = Some((postmaster, password));
        }
    }
    store.set_meta(BOOTSTRAPPED, "1").await.map_err(|e| e.to_string())?;
    Ok(created)
}
