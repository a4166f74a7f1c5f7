//! DKIM signing of the mail we send for our domains (SPEC 13, RFC 6376 5): every active key
//! of the signing domain signs (Ed25519 and RSA side by side, RFC 8463 6: receivers that
//! do not know Ed25519 verify the RSA one). Keys come from the store (`rules::dkim` makes
//! them) and are kept in memory for a minute, so a key made or rotated on any node signs
//! everywhere within that time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use vouchmail_store::{DkimKey, Store};

/// How long keys read from the store are used before they are read again.
const KEYS_FRESH_FOR: Duration = Duration::from_secs(60);

/// RFC 6376 5.4.1: the fields we sign. Each is signed even when absent (counted once more
/// than present), so none can be added on the way without breaking the signature.
const SIGNED_FIELDS: [&str; 12] = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

type Done = mail_auth::dkim::Done;

/// A key ready to sign, as two signers: the body canonicalized `relaxed`, or `simple`.
enum Signing {
    Rsa(Box<[DkimSigner<RsaKey<Sha256>, Done>; 2]>),
    Ed25519(Box<[DkimSigner<Ed25519Key, Done>; 2]>),
}

struct Loaded {
    selector: String,
    key: Signing,
}

/// The domains' active keys, as last read.
struct Cache {
    read_at: Option<Instant>,
    by_domain: HashMap<String, Vec<Arc<Loaded>>>,
}

/// Signs messages for local domains with their active keys.
pub struct DkimSigning {
    store: Arc<dyn Store>,
    cache: Mutex<Cache>,
}

impl DkimSigning {
    pub fn new(store: Arc<dyn Store>) -> Arc<DkimSigning> {
        Arc::new(DkimSigning { store, cache: Mutex::new(Cache { read_at: None, by_domain: HashMap::new() }) })
    }

    /// The DKIM-Signature fields (one per active key of `domain`, each ending CRLF) to put
    /// in front of `message`; empty when the domain has no key or signing failed (logged:
    /// the message still goes, unsigned).
    pub async fn sign(&self, domain: &str, message: &[u8]) -> String {
        let keys = self.keys_of(&domain.to_ascii_lowercase()).await;
        let mut fields = String::new();
        // RFC 6376 3.4.4 and mail-auth 0.13's relaxed body: a body that ends in lines of
        // white space only is signed `simple`, which keeps them as they are.
        let which = usize::from(ends_in_blank_lines(message));
        for loaded in keys {
            let signed = match &loaded.key {
                Signing::Rsa(signers) => signers[which].sign(message),
                Signing::Ed25519(signers) => signers[which].sign(message),
            };
            match signed {
                Ok(signature) => fields.push_str(&signature.to_header()),
                Err(e) => tracing::error!(%domain, selector = %loaded.selector, error = %e, "cannot DKIM-sign"),
            }
        }
        fields
    }

    async fn keys_of(&self, domain: &str) -> Vec<Arc<Loaded>> {
        let fresh = |cache: &Cache| cache.read_at.is_some_and(|t| t.elapsed() < KEYS_FRESH_FOR);
        if let Ok(cache) = self.cache.lock() {
            if fresh(&cache) {
                return cache.by_domain.get(domain).cloned().unwrap_or_default();
            }
        }
        let keys = match self.store.list_dkim_keys().await {
            Ok(keys) => keys,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the DKIM keys; mail goes unsigned for now");
                return Vec::new();
            }
        };
        let mut by_domain: HashMap<String, Vec<Arc<Loaded>>> = HashMap::new();
        for key in keys.iter().filter(|k| k.active) {
            match load(key) {
                Some(loaded) => by_domain.entry(key.domain.clone()).or_default().push(Arc::new(loaded)),
                None => {
                    tracing::error!(domain = %key.domain, selector = %key.selector, "a stored DKIM key does not load")
                }
            }
        }
        // Ed25519 first: RFC 8463 receivers that know it try it first, RSA stays beside it.
        for keys in by_domain.values_mut() {
            keys.sort_by_key(|k| matches!(k.key, Signing::Rsa(_)));
        }
        let found = by_domain.get(domain).cloned().unwrap_or_default();
        if let Ok(mut cache) = self.cache.lock() {
            *cache = Cache { read_at: Some(Instant::now()), by_domain };
        }
        found
    }
}

/// The signer of one key for `domain` and `selector`, relaxed/`body`.
/// The DKIM-Signature fields for a message this server writes itself (a DSN, From
/// `MAILER-DAEMON@<hostname>`): signed by the local domain that is `hostname` or the
/// nearest parent of it with active keys, which DMARC's relaxed alignment accepts (RFC 7489
/// 3.1.1); empty when there is none. Reads the keys from the store each time: notices
/// are rare.
pub async fn sign_own_message(store: &dyn Store, hostname: &str, message: &[u8]) -> String {
    let keys = match store.list_dkim_keys().await {
        Ok(keys) => keys,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the DKIM keys; the notice goes unsigned");
            return String::new();
        }
    };
    let hostname = hostname.to_ascii_lowercase();
    let covers = |domain: &str| hostname == domain || hostname.ends_with(&format!(".{domain}"));
    let Some(domain) =
        keys.iter().filter(|k| k.active && covers(&k.domain)).map(|k| k.domain.clone()).max_by_key(|d| d.len())
    else {
        return String::new();
    };
    let which = usize::from(ends_in_blank_lines(message));
    let mut fields = String::new();
    for key in keys.iter().filter(|k| k.active && k.domain == domain) {
        let signed = match load(key).map(|l| l.key) {
            Some(Signing::Rsa(signers)) => signers[which].sign(message),
            Some(Signing::Ed25519(signers)) => signers[which].sign(message),
            None => continue,
        };
        match signed {
            Ok(signature) => fields.push_str(&signature.to_header()),
            Err(e) => tracing::error!(%domain, error = %e, "cannot DKIM-sign a notice"),
        }
    }
    fields
}

fn signer<T: mail_auth::common::crypto::SigningKey<Hasher = Sha256>>(
    key: T,
    domain: &str,
    selector: &str,
    body: Canonicalization,
) -> DkimSigner<T, Done> {
    DkimSigner::from_key(key)
        .domain(domain)
        .selector(selector)
        .headers(SIGNED_FIELDS)
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(body)
}

fn load(key: &DkimKey) -> Option<Loaded> {
    let (domain, selector) = (key.domain.as_str(), key.selector.as_str());
    let bodies = [Canonicalization::Relaxed, Canonicalization::Simple];
    let signing = match key.algorithm.as_str() {
        "ed25519-sha256" => {
            let mut signers = Vec::new();
            for body in bodies {
                signers.push(signer(Ed25519Key::from_pkcs8_der(&key.private_key).ok()?, domain, selector, body));
            }
            Signing::Ed25519(Box::new(signers.try_into().ok()?))
        }
        "rsa-sha256" => {
            let mut signers = Vec::new();
            for body in bodies {
                let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.private_key.as_slice()));
                signers.push(signer(RsaKey::<Sha256>::from_key_der(der).ok()?, domain, selector, body));
            }
            Signing::Rsa(Box::new(signers.try_into().ok()?))
        }
        _ => return None,
    };
    Some(Loaded { selector: selector.to_string(), key: signing })
}

/// Whether the body ends in one or more lines holding only spaces or tabs.
fn ends_in_blank_lines(message: &[u8]) -> bool {
    let body = &message[vouchmail_proto::headers::body_start(message).min(message.len())..];
    let trimmed = body.strip_suffix(b"\r\n").unwrap_or(body);
    let last_line = trimmed.rsplit(|&b| b == b'\n').next().unwrap_or(&[]);
    let last_line = last_line.strip_suffix(b"\r").unwrap_or(last_line);
    !last_line.is_empty() && last_line.iter().all(|&b| b == b' ' || b == b'\t')
}
