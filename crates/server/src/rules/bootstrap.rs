//! First start: the dev-default domain and the postmaster account (SPEC 1).

use crate::support::error::{Error, ErrorKind};
use vouchmail_proto::sasl::secrets::Secrets;
use vouchmail_proto::sasl::SiteSecret;
use vouchmail_store::{NewAccount, SenderPolicy, Store};

use crate::config::Config;

const BOOTSTRAPPED: &str = "bootstrapped";
/// The meta key of the per-installation secret the fake SCRAM salts derive from.
pub const SCRAM_FAKE_SALT_SECRET: &str = "scram_fake_salt_secret";

/// A password of `len` characters from `[A-Za-z0-9]`, from the OS random source.
pub fn generate_password(len: usize) -> Result<String, Error> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut bytes = [0u8; 64];
        getrandom::getrandom(&mut bytes).map_err(|e| Error::new(ErrorKind::System, format!("random source: {e}")))?;
        // Rejection sampling keeps every character equally likely.
        for b in bytes {
            if (b as usize) < 256 - 256 % ALPHABET.len() && out.len() < len {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

/// What a first start created.
#[derive(Debug, Default)]
pub struct Bootstrapped {
    /// The postmaster address and its generated password, to be shown once.
    pub postmaster: Option<(String, String)>,
    /// The domain that got its DKIM keys (SPEC 13): its DNS records are to be shown.
    pub dkim_domain: Option<String>,
}

/// Creates what the config's `[bootstrap]` asks for, once per store: the first domain,
/// its postmaster, and its DKIM keys (an Ed25519 and an RSA-2048 one).
pub async fn bootstrap(config: &Config, store: &dyn Store) -> Result<Bootstrapped, Error> {
    if store.get_meta(BOOTSTRAPPED).await?.is_some() {
        return Ok(Bootstrapped::default());
    }
    let mut made = Bootstrapped::default();
    let mut created = None;
    let domain = config.bootstrap.domain.to_ascii_lowercase();
    if !domain.is_empty() {
        let policy: SenderPolicy = config
            .bootstrap
            .policy
            .parse()
            .map_err(|e: vouchmail_store::StoreError| Error::config("bootstrap.policy", e.to_string()))?;
        if store.get_domain(&domain).await?.is_none() {
            store.add_domain(&domain, policy).await?;
            tracing::info!(%domain, %policy, "created the first local domain");
        }
        let postmaster = format!("postmaster@{domain}");
        if config.bootstrap.postmaster && store.get_account(&postmaster).await?.is_none() {
            let password = generate_password(20)?;
            let mut salts = [0u8; vouchmail_proto::sasl::SALTS_LEN];
            getrandom::getrandom(&mut salts)
                .map_err(|e| Error::new(ErrorKind::System, format!("random source: {e}")))?;
            let secrets = Secrets::from_password_with(&password, &config.auth.secrets_policy(), &salts)
                .map_err(|e| Error::system(format!("password hash: {e}")))?;
            store.add_account(NewAccount { address: postmaster.clone(), secrets, quota_bytes: 0 }).await?;
            created = Some((postmaster, password));
        }
        let has_keys = store.list_dkim_keys().await?.iter().any(|k| k.domain == domain);
        if config.bootstrap.dkim && !has_keys {
            for algorithm in [super::dkim::Algorithm::Ed25519Sha256, super::dkim::Algorithm::RsaSha256] {
                let key = super::dkim::new_key(store, &domain, algorithm, None).await?;
                tracing::info!(%domain, selector = %key.selector, algorithm = %key.algorithm, "made a DKIM key");
            }
            made.dkim_domain = Some(domain.clone());
        }
    }
    store.set_meta(BOOTSTRAPPED, "1").await?;
    made.postmaster = created;
    Ok(made)
}

/// The key of the fake SCRAM salts for unknown users: made from the OS random source on
/// first start and kept in the store, so the salt of an unknown name stays the same across
/// attempts, restarts and the nodes sharing a store, as a real account's does, and SCRAM
/// does not tell which accounts exist.
pub async fn scram_fake_salt_key(store: &dyn Store) -> Result<SiteSecret, Error> {
    let stored = match store.get_meta(SCRAM_FAKE_SALT_SECRET).await? {
        Some(stored) => stored,
        None => {
            let mut bytes = [0u8; 32];
            getrandom::getrandom(&mut bytes)
                .map_err(|e| Error::new(ErrorKind::System, format!("random source: {e}")))?;
            let fresh: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            // Another process may have stored one meanwhile: everyone uses the stored one.
            store.get_or_init_meta(SCRAM_FAKE_SALT_SECRET, &fresh).await?
        }
    };
    if stored.len() < 32 {
        return Err(Error::new(
            ErrorKind::System,
            format!("the store's {SCRAM_FAKE_SALT_SECRET} is too short; delete it to make a new one"),
        ));
    }
    Ok(SiteSecret::new(stored.into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fake_salt_key_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = vouchmail_store::SqliteStore::open(&path).unwrap();
        let first = scram_fake_salt_key(&store).await.unwrap();
        assert_eq!(first.as_bytes().len(), 64);
        assert_eq!(scram_fake_salt_key(&store).await.unwrap(), first);
        store.close();
        let reopened = vouchmail_store::SqliteStore::open(&path).unwrap();
        assert_eq!(scram_fake_salt_key(&reopened).await.unwrap(), first);
        let other = vouchmail_store::SqliteStore::open(&dir.path().join("other.db")).unwrap();
        assert_ne!(scram_fake_salt_key(&other).await.unwrap(), first);
    }
}
