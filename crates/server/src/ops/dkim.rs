//! DKIM signing keys of the local domains (SPEC 13, RFC 6376): list (the public part
//! only: the private key never leaves the store), new, rotate, retire.

use serde::{Deserialize, Serialize};
use vouchmail_store::{DkimKey, Store};

use super::{local_domain, parse_domain, time_text, OpResult};
use crate::rules::dkim::{self, Algorithm, DnsRecord};

/// A key as `dkim list --json` prints it and the API sends it: never its private part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DkimRow {
    pub domain: String,
    pub selector: String,
    pub algorithm: String,
    /// Signs new mail; an inactive key stays published until retired.
    pub active: bool,
    pub created: String,
    /// The `p=` of its TXT record.
    pub public_key: String,
}

impl From<&DkimKey> for DkimRow {
    fn from(key: &DkimKey) -> DkimRow {
        DkimRow {
            domain: key.domain.clone(),
            selector: key.selector.clone(),
            algorithm: key.algorithm.clone(),
            active: key.active,
            created: time_text(key.created_at),
            public_key: key.public_key.clone(),
        }
    }
}

/// A key just made, with the TXT record to publish for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewKeyInfo {
    #[serde(flatten)]
    pub key: DkimRow,
    pub record: super::domains::RecordInfo,
}

impl NewKeyInfo {
    pub fn new(key: &DkimKey) -> NewKeyInfo {
        NewKeyInfo { key: DkimRow::from(key), record: super::domains::RecordInfo::from(&record_of(key)) }
    }
}

/// The TXT record of a key.
pub fn record_of(key: &DkimKey) -> DnsRecord {
    let (name, value) = dkim::txt_record(key);
    DnsRecord {
        name,
        value,
        purpose: format!("DKIM (RFC 6376) {} key {} of {}", key.algorithm, key.selector, key.domain),
    }
}

pub async fn list(store: &dyn Store) -> OpResult<Vec<DkimRow>> {
    Ok(store.list_dkim_keys().await?.iter().map(DkimRow::from).collect())
}

/// `dkim new` and `POST /api/v1/dkim/{domain}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// Default: rsaYYYYMMDD or edYYYYMMDD.
    #[serde(default)]
    pub selector: Option<String>,
    /// rsa-sha256 (the default) or ed25519-sha256 (RFC 8463).
    #[serde(default)]
    pub algorithm: Option<String>,
}

/// A new key for a local domain (404 for another), signing from now on.
pub async fn new_key(store: &dyn Store, domain: &str, new: &NewKey) -> OpResult<DkimKey> {
    let domain = local_domain(store, domain).await?;
    let algorithm = Algorithm::parse(new.algorithm.as_deref().unwrap_or("rsa-sha256"))?;
    Ok(dkim::new_key(store, &domain, algorithm, new.selector.as_deref()).await?)
}

/// New keys sign for the domain, one per algorithm it signs with; the old ones stay
/// published until retired.
pub async fn rotate(store: &dyn Store, domain: &str) -> OpResult<Vec<DkimKey>> {
    let domain = local_domain(store, domain).await?;
    Ok(dkim::rotate(store, &domain).await?)
}

/// Removes a key that no longer signs; returns the domain's stored name.
pub async fn retire(store: &dyn Store, domain: &str, selector: &str) -> OpResult<String> {
    let domain = parse_domain(domain)?;
    dkim::retire(store, &domain, selector).await?;
    Ok(domain)
}
