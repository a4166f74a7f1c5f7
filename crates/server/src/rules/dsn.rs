//! Delivery status notifications to the envelope sender (RFC 3461, RFC 3464): what to
//! report for each outcome, and the notice as a message ready to commit.

use std::collections::HashSet;

use vouchmail_proto::dsn::{self, RecipientStatus, Return};
use vouchmail_proto::smtp::reply::{EnhancedCode, Reply};
use vouchmail_store::{Delivery, Folder, NewMessage, Store, StoreError, StoredMessage};

use crate::rules::own_message::OwnMessage;
use crate::support::queue_id::new_queue_id;
use crate::support::time::unix_time;

/// Alias chains deeper than this are not followed for notices.
const MAX_DEPTH: usize = 8;

/// RFC 3461 4.1 NOTIFY, as stored: absent means the MTA's default (failures and delays).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifyWanted {
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

impl NotifyWanted {
    pub fn from_stored(notify: Option<&str>) -> NotifyWanted {
        match notify {
            None => NotifyWanted { success: false, failure: true, delay: true },
            Some(text) => {
                let has = |word: &str| text.split(',').any(|w| w.trim().eq_ignore_ascii_case(word));
                NotifyWanted { success: has("SUCCESS"), failure: has("FAILURE"), delay: has("DELAY") }
            }
        }
    }
}

/// The enhanced code of a reply, or a generic one of its class (RFC 3463 3.1).
pub fn enhanced_of(reply: &Reply) -> EnhancedCode {
    reply.enhanced.unwrap_or(match reply.code {
        200..=299 => EnhancedCode(2, 0, 0),
        400..=499 => EnhancedCode(4, 0, 0),
        _ => EnhancedCode(5, 0, 0),
    })
}

/// Builds the notice for `statuses` about `original`, addressed to its envelope sender, as a
/// message to commit (local mailbox or queued). `None` for the null sender: never bounce a
/// bounce (RFC 5321 4.5.5, RFC 3464 6).
pub async fn notice(
    store: &dyn Store,
    hostname: &str,
    original: &StoredMessage,
    statuses: &[RecipientStatus],
    return_content: Return,
    now: i64,
) -> Result<Option<NewMessage>, StoreError> {
    let sender = original.envelope.sender.as_str();
    if sender.is_empty() || statuses.is_empty() {
        return Ok(None);
    }
    let queue_id = new_queue_id();
    let message_id = format!("{queue_id}.dsn@{hostname}");
    let report = dsn::Report {
        reporting_mta: hostname,
        to: sender,
        envid: original.envelope.dsn_envid.as_deref(),
        arrival: unix_time(original.received_at),
        date: unix_time(now),
        message_id: &message_id,
        recipients: statuses,
        original: &original.data,
        return_content,
    };
    let report = dsn::build(&report);
    let deliveries = deliveries_for(store, sender).await?;
    if deliveries.is_empty() {
        tracing::warn!(to = sender, queue_id = %original.queue_id, "no mailbox for a delivery notice; dropped");
        return Ok(None);
    }
    let goes_out = deliveries.iter().any(|d| matches!(d, Delivery::Queue { .. }));
    let notice = OwnMessage { hostname, queue_id, sender: String::new(), fields: &[], rest: &report, now };
    let mut message = notice.build(deliveries);
    // SPEC 13: what we send out is DKIM-signed, our own notices too.
    if goes_out {
        let fields = crate::auth::dkim_sign::sign_own_message(store, hostname, &message.data).await;
        if !fields.is_empty() {
            let mut data = fields.into_bytes();
            data.extend_from_slice(&message.data);
            message.data = data;
        }
    }
    Ok(Some(message))
}

/// Where a notice to `address` goes: a local account's INBOX (through aliases and the
/// catch-all), the queue for a remote address, or held for a held domain's customer.
pub(crate) async fn deliveries_for(store: &dyn Store, address: &str) -> Result<Vec<Delivery>, StoreError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut pending = vec![(address.to_lowercase(), 0usize)];
    while let Some((address, depth)) = pending.pop() {
        if depth > MAX_DEPTH || !seen.insert(address.clone()) {
            continue;
        }
        let domain_name = address.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        let Some(domain) = store.get_domain(domain_name).await? else {
            out.push(Delivery::Queue { recipient: address });
            continue;
        };
        // SPEC 6, RFC 2645: a held domain's mail waits for its customer, notices too (as
        // RCPT places it, inbound/resolve.rs); it has no mailboxes here to find.
        if !domain.held_for.is_empty() {
            let delivery = Delivery::Held { recipient: address, domain: domain.name };
            if !out.contains(&delivery) {
                out.push(delivery);
            }
            continue;
        }
        if let Some(account) = store.get_account(&address).await? {
            let delivery =
                Delivery::Mailbox { account_id: account.id, folder: Folder::Inbox, recipient: account.address };
            if !out.contains(&delivery) {
                out.push(delivery);
            }
            continue;
        }
        let targets = store.alias_targets(&address).await?;
        if !targets.is_empty() {
            pending.extend(targets.into_iter().map(|t| (t, depth + 1)));
            continue;
        }
        if let Some(catch_all) = domain.catch_all {
            pending.push((catch_all, depth + 1));
        }
    }
    Ok(out)
}
