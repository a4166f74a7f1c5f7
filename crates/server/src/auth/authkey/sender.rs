//! The sending side of AuthKeys (SPEC 7.4): taking a new key from key mail, and stamping
//! `X-Auth-Key` on what local users send.

use crate::support::error::{Error, ErrorKind};
use std::net::IpAddr;

use vouchmail_proto::authkey::codec::is_valid_key;
use vouchmail_proto::headers;
use vouchmail_store::{SenderKey, Store, StoreResult};

use super::verifier::parse_as_record;
use crate::net::dns::Dns;
use crate::support::time::unix_now;

/// SPEC 7.3: the header that carries a new key.
pub const NEW_KEY_HEADER: &str = "X-New-Auth-Key";
/// SPEC 7.4: the headers the sender side adds.
pub const KEY_HEADER: &str = "X-Auth-Key";
pub const AGENT_HEADER: &str = "X-Auth-Agent";

/// `X-Auth-Agent: SMTP - vouchmail <version>` (SPEC 7.4).
pub fn agent() -> String {
    format!("SMTP - vouchmail {}", env!("CARGO_PKG_VERSION"))
}

/// The key a key mail carries: the one `X-New-Auth-Key` field, when it is a well-formed key.
pub fn new_key_in(message: &[u8]) -> Option<String> {
    if headers::count(message, NEW_KEY_HEADER) != 1 {
        return None;
    }
    let key = headers::first_value(message, NEW_KEY_HEADER)?;
    is_valid_key(key.as_bytes()).then_some(key)
}

/// SPEC 7.4: key mail for `address` counts only when the connecting IP is an address of
/// the Authentication Server that the address's domain names in DNS. Returns the AS host
/// when it is, or why not.
pub async fn check_key_source(dns: &Dns, address: &str, peer: IpAddr) -> Result<String, Error> {
    let Some((_, domain)) = address.rsplit_once('@') else {
        return Err(Error::invalid(format!("'{address}' has no domain")));
    };
    let records = dns.txt(domain).await.map_err(|e| Error::dns(format!("TXT {domain}"), e.to_string()))?;
    let (host, _) =
        parse_as_record(&records).ok_or_else(|| Error::dns(domain, "publishes no AS= record").temporary(false))?;
    let ips = dns.addresses(&host).await.map_err(|e| Error::new(ErrorKind::Network, format!("{host}: {e}")))?;
    if ips.contains(&peer) {
        Ok(host)
    } else {
        Err(Error::new(
            ErrorKind::Network,
            format!("{peer} is not an address of {domain}'s Authentication Server {host}"),
        ))
    }
}

/// Records a received key for a local address (the newest replaces the one before).
pub async fn record_key(store: &dyn Store, address: &str, key: &str, source: String) -> StoreResult<()> {
    let key = SenderKey { address: address.to_lowercase(), key: key.to_string(), received_at: unix_now(), source };
    store.record_sender_key(key).await
}

/// The key to stamp for `address`: the newest received by mail, else (when this server is
/// the address's Authentication Server, SPEC 7.3) its newest unexpired own key.
pub async fn current_key(store: &dyn Store, address: &str) -> StoreResult<Option<String>> {
    let received = store.sender_key(address).await?;
    let own = store.authkeys(&address.to_lowercase(), unix_now()).await?.into_iter().next();
    Ok(match (received, own) {
        (Some(r), Some(o)) if o.created_at > r.received_at => Some(o.key),
        (Some(r), _) => Some(r.key),
        (None, own) => own.map(|o| o.key),
    })
}

/// SPEC 7.4: the header fields to add to mail `user` sends, when its From is the envelope
/// sender (whose ownership submission checked), that address has a key, and the message
/// has no `X-Auth-Key` yet. Empty otherwise.
pub async fn stamp_fields(
    store: &dyn Store,
    envelope_sender: &str,
    message: &[u8],
) -> StoreResult<Vec<(&'static str, String)>> {
    if envelope_sender.is_empty() || headers::count(message, KEY_HEADER) > 0 {
        return Ok(Vec::new());
    }
    let Some(from) = headers::from_address(message) else { return Ok(Vec::new()) };
    if !from.eq_ignore_ascii_case(envelope_sender) {
        return Ok(Vec::new());
    }
    let Some(key) = current_key(store, &from).await? else { return Ok(Vec::new()) };
    Ok(vec![(KEY_HEADER, key), (AGENT_HEADER, agent())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_mail_carries_exactly_one_well_formed_key() {
        let key = "a".repeat(64);
        assert_eq!(new_key_in(format!("X-New-Auth-Key: {key}\r\n\r\nbody").as_bytes()), Some(key.clone()));
        assert_eq!(new_key_in(format!("X-New-Auth-Key: {key}\r\nX-New-Auth-Key: {key}\r\n\r\n").as_bytes()), None);
        assert_eq!(new_key_in(b"X-New-Auth-Key: short\r\n\r\n"), None);
        assert_eq!(new_key_in(b"Subject: none\r\n\r\n"), None);
        assert!(agent().starts_with("SMTP - vouchmail "));
    }
}
