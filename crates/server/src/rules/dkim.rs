//! DKIM keys of the local domains (SPEC 13): making them, naming their selectors, the TXT
//! records to publish, and rotation (the new key signs; the old one stays published until
//! retired). The store only keeps them (`DkimKeyStore`); the signing is `auth::dkim_sign`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use vouchmail_store::{DkimKey, Store};

use crate::support::error::{Error, ErrorKind};
use crate::support::time::unix_now;

/// The two algorithms we sign with (RFC 6376 3.3, RFC 8463 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RsaSha256,
    Ed25519Sha256,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa-sha256",
            Algorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    }

    pub fn parse(text: &str) -> Result<Algorithm, Error> {
        match text.to_ascii_lowercase().as_str() {
            "rsa-sha256" | "rsa" => Ok(Algorithm::RsaSha256),
            "ed25519-sha256" | "ed25519" => Ok(Algorithm::Ed25519Sha256),
            other => Err(Error::new(
                ErrorKind::Invalid,
                format!("unknown DKIM algorithm '{other}' (rsa-sha256 or ed25519-sha256)"),
            )),
        }
    }

    /// The `k=` of the key record (RFC 6376 3.6.1, RFC 8463 4.2).
    fn key_type(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa",
            Algorithm::Ed25519Sha256 => "ed25519",
        }
    }

    /// The first part of selectors we name.
    fn prefix(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa",
            Algorithm::Ed25519Sha256 => "ed",
        }
    }
}

/// RSA keys we make: 2048 bits (RFC 8301 3.2: at least 1024, 2048 recommended; longer
/// ones do not fit many DNS providers' TXT limits).
const RSA_BITS: usize = 2048;

/// A new key pair: (PKCS#8 DER private key, `p=` value).
pub fn generate(algorithm: Algorithm) -> Result<(Vec<u8>, String), Error> {
    let failed = |e: String| Error::new(ErrorKind::System, format!("cannot make a DKIM key: {e}"));
    match algorithm {
        Algorithm::Ed25519Sha256 => {
            use ring::signature::KeyPair;
            let random = ring::rand::SystemRandom::new();
            let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&random).map_err(|e| failed(e.to_string()))?;
            let pair =
                ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| failed(e.to_string()))?;
            // RFC 8463 4.2: p= is the base64 of the raw 32-octet public key.
            Ok((pkcs8.as_ref().to_vec(), STANDARD.encode(pair.public_key().as_ref())))
        }
        Algorithm::RsaSha256 => {
            use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
            let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, RSA_BITS).map_err(|e| failed(e.to_string()))?;
            let private = key.to_pkcs8_der().map_err(|e| failed(e.to_string()))?;
            // RFC 6376 3.6.1: p= is the base64 of the SubjectPublicKeyInfo.
            let public = rsa::RsaPublicKey::from(&key).to_public_key_der().map_err(|e| failed(e.to_string()))?;
            Ok((private.as_bytes().to_vec(), STANDARD.encode(public.as_bytes())))
        }
    }
}

/// The name and value of the TXT record that publishes `key` (RFC 6376 3.6.2.1).
pub fn txt_record(key: &DkimKey) -> (String, String) {
    let algorithm = Algorithm::parse(&key.algorithm).map(Algorithm::key_type).unwrap_or("rsa");
    (format!("{}._domainkey.{}", key.selector, key.domain), format!("v=DKIM1; k={algorithm}; p={}", key.public_key))
}

/// A selector for a new key of `domain` that none of `taken` uses: `rsa20261206`,
/// `ed20261206`, then `...b`, `...c` for more on one day.
fn new_selector(algorithm: Algorithm, taken: &[DkimKey], domain: &str) -> String {
    let day: String = vouchmail_proto::time::rfc3339(std::time::SystemTime::now())
        .chars()
        .take(10)
        .filter(char::is_ascii_digit)
        .collect();
    let base = format!("{}{day}", algorithm.prefix());
    let used = |s: &str| taken.iter().any(|k| k.domain == domain && k.selector == s);
    std::iter::once(base.clone())
        .chain(('b'..='z').map(|c| format!("{base}{c}")))
        .find(|s| !used(s))
        .unwrap_or_else(|| format!("{base}-{}", unix_now()))
}

/// RFC 6376 3.1: a selector is dot-separated sub-domain labels.
fn check_selector(selector: &str) -> Result<(), Error> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if selector.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(Error::new(ErrorKind::Invalid, format!("'{selector}' is not a DKIM selector (letters, digits, '-', '.')")))
    }
}

/// `dkim new`: makes a key for a local domain and stores it as active; returns it.
pub async fn new_key(
    store: &dyn Store,
    domain: &str,
    algorithm: Algorithm,
    selector: Option<&str>,
) -> Result<DkimKey, Error> {
    let domain = domain.to_ascii_lowercase();
    let taken = store.list_dkim_keys().await.map_err(Error::from)?;
    let selector = match selector {
        Some(s) => {
            check_selector(s)?;
            s.to_ascii_lowercase()
        }
        None => new_selector(algorithm, &taken, &domain),
    };
    // Keygen is CPU work (RSA: a good part of a second): off the async threads.
    let (private_key, public_key) = tokio::task::spawn_blocking(move || generate(algorithm))
        .await
        .map_err(|e| Error::new(ErrorKind::System, e.to_string()))??;
    let key = DkimKey {
        domain,
        selector,
        algorithm: algorithm.name().to_string(),
        private_key,
        public_key,
        active: true,
        created_at: unix_now(),
    };
    store.add_dkim_key(key.clone()).await.map_err(Error::from)?;
    Ok(key)
}

/// `dkim rotate`: for each active key of `domain`, a new one of the same algorithm signs
/// from now on; the old ones stay published (inactive) until `retire`. Returns the new keys.
pub async fn rotate(store: &dyn Store, domain: &str) -> Result<Vec<DkimKey>, Error> {
    let domain = domain.to_ascii_lowercase();
    let active: Vec<DkimKey> = store
        .list_dkim_keys()
        .await
        .map_err(Error::from)?
        .into_iter()
        .filter(|k| k.domain == domain && k.active)
        .collect();
    if active.is_empty() {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("{domain} has no active DKIM key to rotate (make one with 'vouchmail dkim new {domain}')"),
        ));
    }
    let mut made = Vec::new();
    for old in &active {
        let algorithm = Algorithm::parse(&old.algorithm)?;
        made.push(new_key(store, &domain, algorithm, None).await?);
        store.set_dkim_key_active(&domain, &old.selector, false).await.map_err(Error::from)?;
    }
    Ok(made)
}

/// `dkim retire`: removes an inactive key (its TXT record can then go). An active key is
/// refused: rotate first, so that mail is never left unsigned by accident.
pub async fn retire(store: &dyn Store, domain: &str, selector: &str) -> Result<(), Error> {
    let domain = domain.to_ascii_lowercase();
    let keys = store.list_dkim_keys().await.map_err(Error::from)?;
    let Some(key) = keys.iter().find(|k| k.domain == domain && k.selector == selector) else {
        return Err(Error::new(ErrorKind::NotFound, format!("{domain} has no DKIM selector {selector}")));
    };
    if key.active {
        return Err(Error::new(
            ErrorKind::Invalid,
            format!("{selector} still signs {domain}'s mail: 'vouchmail dkim rotate {domain}' first"),
        ));
    }
    store.remove_dkim_key(&domain, selector).await.map_err(Error::from)
}

/// A DNS record an operator publishes for a domain (SPEC 13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    /// The owner name, without the final dot.
    pub name: String,
    /// The TXT value.
    pub value: String,
    /// What it is for, as a zone-file comment.
    pub purpose: String,
}

impl std::fmt::Display for DnsRecord {
    /// A zone-file line; a value longer than a character-string (255 octets) is written
    /// as several quoted strings, which resolvers join (RFC 7208 3.3, RFC 6376 3.6.2.2).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let strings: Vec<String> = self
            .value
            .as_bytes()
            .chunks(255)
            .map(|c| format!("\"{}\"", String::from_utf8_lossy(c).replace('"', "\\\"")))
            .collect();
        write!(f, "; {}\n{}. 3600 IN TXT {}", self.purpose, self.name, strings.join(" "))
    }
}

/// What `domain` should publish for our mail to pass SPF, DKIM and DMARC (SPEC 13), and
/// its `AS=` record when this server is an Authentication Server (SPEC 7.3). `hostname`:
/// the host our mail leaves from; `authentication_server`: `AS=`'s host[:port], if any.
pub async fn records_to_publish(
    store: &dyn Store,
    domain: &str,
    hostname: &str,
    authentication_server: Option<&str>,
) -> Result<Vec<DnsRecord>, Error> {
    let domain = domain.to_ascii_lowercase();
    if store.get_domain(&domain).await.map_err(Error::from)?.is_none() {
        return Err(Error::new(ErrorKind::NotFound, format!("no local domain {domain}")));
    }
    let record = |name: String, value: String, purpose: &str| DnsRecord { name, value, purpose: purpose.to_string() };
    // RFC 7208: the domain's MX hosts and this host may send for it.
    let mut records = vec![record(
        domain.clone(),
        format!("v=spf1 mx a:{hostname} -all"),
        "SPF (RFC 7208): who sends for the domain",
    )];
    for key in store.list_dkim_keys().await.map_err(Error::from)?.iter().filter(|k| k.domain == domain) {
        let (name, value) = txt_record(key);
        let state = if key.active { "signs" } else { "retired from signing; remove after 'dkim retire'" };
        records.push(record(name, value, &format!("DKIM (RFC 6376) {} key, {state}", key.algorithm)));
    }
    records.push(record(
        format!("_dmarc.{domain}"),
        format!("v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}"),
        "DMARC (RFC 7489): what receivers do with mail that fails, and where they report",
    ));
    if let Some(server) = authentication_server {
        records.push(record(domain.clone(), format!("AS={server}"), "AuthKeys (SPEC 7.3): the Authentication Server"));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_publish_as_rfc_6376_and_8463_ask() {
        let (private, public) = generate(Algorithm::Ed25519Sha256).unwrap();
        assert_eq!(STANDARD.decode(&public).unwrap().len(), 32, "raw Ed25519 key");
        assert!(mail_auth::common::crypto::Ed25519Key::from_pkcs8_der(&private).is_ok());
        let key = DkimKey {
            domain: "example.org".into(),
            selector: "ed1".into(),
            algorithm: "ed25519-sha256".into(),
            private_key: private,
            public_key: public.clone(),
            active: true,
            created_at: 0,
        };
        assert_eq!(txt_record(&key), ("ed1._domainkey.example.org".into(), format!("v=DKIM1; k=ed25519; p={public}")));
    }

    #[test]
    fn selectors_are_labels_and_new_ones_are_free() {
        assert!(check_selector("rsa2026.a-b").is_ok());
        for bad in ["", "a..b", "-a", "a b", "a_b", "é"] {
            assert!(check_selector(bad).is_err(), "{bad}");
        }
        let first = new_selector(Algorithm::RsaSha256, &[], "example.org");
        assert!(first.starts_with("rsa") && first.len() == 11, "{first}");
        let taken = DkimKey {
            domain: "example.org".into(),
            selector: first.clone(),
            algorithm: "rsa-sha256".into(),
            private_key: Vec::new(),
            public_key: String::new(),
            active: true,
            created_at: 0,
        };
        assert_eq!(new_selector(Algorithm::RsaSha256, &[taken], "example.org"), format!("{first}b"));
    }
}
