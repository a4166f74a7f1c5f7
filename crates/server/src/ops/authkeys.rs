//! AuthKey settings (SPEC 7.1): AGI and AVT of an address or of a domain (the default of
//! its addresses), an address's unexpired keys and the key its sender side stamps.

use serde::{Deserialize, Serialize};
use vouchmail_store::{AuthKeySettings, Store};

use super::{local_account, local_domain, time_text, unix_now, OpError, OpResult, Settings};

/// An address's settings and keys, as `authkey show --json` prints them and the API sends
/// them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddressKeys {
    pub address: String,
    pub agi_secs: u64,
    pub avt_secs: u64,
    /// Where the settings come from: address, domain or default (the configuration's).
    pub settings: String,
    pub keys: Vec<KeyRow>,
    pub received_key: Option<ReceivedKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyRow {
    pub key: String,
    pub created: String,
    pub expires: String,
}

/// The key the sender side stamps, as the Authentication Server handed it over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReceivedKey {
    pub key: String,
    pub received: String,
    pub source: String,
}

/// A domain's settings, the default of its addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DomainSettings {
    pub domain: String,
    pub agi_secs: u64,
    pub avt_secs: u64,
    /// domain, or default (the configuration's).
    pub settings: String,
}

/// One address or one domain: `GET /api/v1/authkeys/{address-or-domain}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum AuthKeyView {
    Address(AddressKeys),
    Domain(DomainSettings),
}

/// An address's AGI and AVT, and where they come from: `address`, `domain` or `default`.
pub async fn settings_of(store: &dyn Store, settings: &Settings, address: &str) -> OpResult<(AuthKeySettings, String)> {
    Ok(match store.authkey_settings(address).await? {
        Some((s, source)) => (s, format!("{source:?}").to_lowercase()),
        None => (settings.default_authkey, "default".to_string()),
    })
}

/// An address's settings and unexpired keys; 404 when it is no local user.
pub async fn show(store: &dyn Store, settings: &Settings, address: &str) -> OpResult<AddressKeys> {
    let address = local_account(store, address).await?;
    let (s, source) = settings_of(store, settings, &address).await?;
    let keys = store.authkeys(&address, unix_now()).await?;
    let received = store.sender_key(&address).await?;
    Ok(AddressKeys {
        address,
        agi_secs: s.agi_secs,
        avt_secs: s.avt_secs,
        settings: source,
        keys: keys
            .into_iter()
            .map(|k| KeyRow { key: k.key, created: time_text(k.created_at), expires: time_text(k.expires_at) })
            .collect(),
        received_key: received.map(|k| ReceivedKey {
            key: k.key,
            received: time_text(k.received_at),
            source: k.source,
        }),
    })
}

/// An address (with `@`) or a local domain.
pub async fn show_target(store: &dyn Store, settings: &Settings, target: &str) -> OpResult<AuthKeyView> {
    if target.contains('@') {
        return show(store, settings, target).await.map(AuthKeyView::Address);
    }
    let domain = local_domain(store, target).await?;
    // The store looks an address's settings up by the address, then by its domain; an
    // empty local part is never a target of its own, so this finds the domain's.
    let (s, source) = settings_of(store, settings, &format!("@{domain}")).await?;
    Ok(AuthKeyView::Domain(DomainSettings { domain, agi_secs: s.agi_secs, avt_secs: s.avt_secs, settings: source }))
}

/// An interval as the operator writes it: seconds, or `7200m`, `2h`, `2d`; or a number of
/// seconds in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Interval {
    Secs(u64),
    Text(String),
}

impl Interval {
    pub fn secs(&self) -> OpResult<u64> {
        match self {
            Interval::Secs(n) => Ok(*n),
            Interval::Text(text) => parse_interval(text),
        }
    }
}

/// `authkey set` and `PUT /api/v1/authkeys/{address-or-domain}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsChange {
    /// Key generation interval.
    pub agi: Interval,
    /// Validity after the next key.
    pub avt: Interval,
}

/// Sets the AGI and AVT of an address or a local domain; returns the stored target and
/// the settings.
pub async fn set(store: &dyn Store, target: &str, change: &SettingsChange) -> OpResult<(String, AuthKeySettings)> {
    let target =
        if target.contains('@') { local_account(store, target).await? } else { local_domain(store, target).await? };
    let settings = AuthKeySettings { agi_secs: change.agi.secs()?, avt_secs: change.avt.secs()? };
    store.set_authkey_settings(&target, Some(settings)).await?;
    Ok((target, settings))
}

/// `7200m`, `2h`, `30` (seconds).
pub fn parse_interval(text: &str) -> OpResult<u64> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_lowercase()),
        _ => (text, 's'),
    };
    let n: u64 =
        digits.parse().map_err(|_| OpError::invalid(format!("bad interval {text:?}: a number with s, m, h or d")))?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        _ => return Err(OpError::invalid(format!("bad interval {text:?}: the unit is s, m, h or d"))),
    };
    n.checked_mul(scale).ok_or_else(|| OpError::invalid(format!("interval {text:?} is too large")))
}
