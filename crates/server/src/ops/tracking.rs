//! Tracking records (SPEC 8.3): a local user's, or every user's, oldest first.

use serde::Serialize;
use vouchmail_store::{Store, StoredTrackingRecord};

use super::{parse_address, time_text, OpError, OpResult};

/// A record as `tracking list --json` prints it and the API sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrackingRow {
    /// The local user whose Tracking folder holds it.
    pub owner: String,
    pub sender: String,
    pub timestamp: String,
    pub event: String,
    pub message_id: String,
    pub recipient: String,
    pub reporting_server: String,
}

impl TrackingRow {
    pub fn new(owner: &str, stored: &StoredTrackingRecord) -> TrackingRow {
        let r = &stored.record;
        TrackingRow {
            owner: owner.to_string(),
            sender: r.sender.clone(),
            timestamp: time_text(r.timestamp),
            event: r.event.to_string(),
            message_id: r.message_id.clone(),
            recipient: r.recipient.clone(),
            reporting_server: r.reporting_server.clone(),
        }
    }
}

/// An RFC 3339 time (e.g. 2026-12-01T10:00:00Z) as Unix seconds.
pub fn parse_since(text: &str) -> OpResult<i64> {
    vouchmail_proto::time::parse_rfc3339(text)
        .ok_or_else(|| OpError::invalid(format!("since '{text}' is not an RFC 3339 time (e.g. 2026-12-01T10:00:00Z)")))
}

/// The records of `address` (404 when it is no local user), or of every user: each with
/// its owner, oldest first per owner; only those at or after `since`.
pub async fn list(
    store: &dyn Store,
    address: Option<&str>,
    since: Option<i64>,
) -> OpResult<Vec<(String, StoredTrackingRecord)>> {
    let owners = match address {
        Some(address) => {
            let address = parse_address(address)?.to_string();
            if store.get_account(&address).await?.is_none() {
                return Err(OpError::not_found(format!("no user {address}")));
            }
            vec![address]
        }
        None => store.list_accounts().await?.into_iter().map(|a| a.address).collect(),
    };
    let mut out = Vec::new();
    for owner in owners {
        for stored in store.tracking_records(&owner, since, usize::MAX).await? {
            out.push((owner.clone(), stored));
        }
    }
    Ok(out)
}
