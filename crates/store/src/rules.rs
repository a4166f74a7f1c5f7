//! Rules every backend applies inside its own transactions (SPEC 11: backends only store
//! and fetch; what a delivery outcome may do to a queue entry, when a message is orphaned,
//! which AuthKey settings hold for an address and who a published ID belongs to are decided
//! once, here). The tracking rules are in [`crate::tracking`], the directory's Entity Index
//! changes in [`crate::messenger`].

use crate::error::{StoreError, StoreResult};
use crate::types::{
    AuthKeySettings, Delivery, FlagOperation, PolicyAction, QueueState, QueueUpdate, SenderPolicy, SettingsSource,
};
use vouchmail_proto::sasl::secrets::{SecretFields, Secrets};

/// The queue entry one delivery of a committed message becomes (SPEC 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewQueueEntry<'a> {
    pub recipient: &'a str,
    pub state: QueueState,
    pub last_reply: Option<&'static str>,
    /// Set for mail of a held (ODMR customer) domain.
    pub held_domain: Option<&'a str>,
}

/// SPEC 5: what a delivery becomes in the queue when its message is committed: a local
/// mailbox's copy is delivered in that very transaction (its entry is history, recorded
/// `delivered`); a remote recipient's waits `queued` for the scheduler; a held domain's
/// waits `queued` too, marked with its domain, until the customer's ATRN or ETRN
/// (RFC 2645), and the scheduler leaves it alone.
pub fn queue_entry_for(delivery: &Delivery) -> NewQueueEntry<'_> {
    match delivery {
        Delivery::Mailbox { recipient, .. } => NewQueueEntry {
            recipient,
            state: QueueState::Delivered,
            last_reply: Some("delivered to mailbox"),
            held_domain: None,
        },
        Delivery::Queue { recipient } => {
            NewQueueEntry { recipient, state: QueueState::Queued, last_reply: None, held_domain: None }
        }
        Delivery::Held { recipient, domain } => {
            NewQueueEntry { recipient, state: QueueState::Queued, last_reply: None, held_domain: Some(domain) }
        }
    }
}

/// The domain of an account's address: what follows its last `@`; an address without one
/// (or with nothing after it) is refused.
pub fn account_domain(address: &str) -> StoreResult<&str> {
    address
        .rsplit_once('@')
        .map(|(_, d)| d)
        .filter(|d| !d.is_empty())
        .ok_or_else(|| StoreError::Invalid(format!("'{address}' is not an address")))
}

/// How much of a message is read to find its Message-ID field (RFC 5322 3.6.4) for a
/// tracking event: the header section is enough, and a body is never read whole for it.
pub const HEADER_SCAN_BYTES: i64 = 64 * 1024;

/// A sender policy as stored (SPEC 2): an action this version does not know (written by
/// a newer one) reads as the strictest, `reject`.
pub fn stored_policy(unauthenticated: &str, forged: &str, dmarc_counts: bool) -> SenderPolicy {
    SenderPolicy {
        unauthenticated: unauthenticated.parse().unwrap_or(PolicyAction::Reject),
        forged: forged.parse().unwrap_or(PolicyAction::Reject),
        dmarc_counts,
    }
}

/// An account's secrets as stored, one column per mechanism (SPEC 4: Argon2id,
/// SCRAM-SHA-256, CRAM-MD5): a column that does not parse counts as absent (that
/// mechanism then fails), and is logged.
pub fn stored_secrets(argon2: Option<String>, scram_sha256: Option<String>, cram_md5: Option<String>) -> Secrets {
    let fields = SecretFields { argon2, scram_sha256, cram_md5 };
    Secrets::from_fields(&fields).unwrap_or_else(|e| {
        tracing::error!(error = %e, "stored secrets do not parse");
        Secrets { argon2: fields.argon2.clone(), ..Secrets::default() }
    })
}

/// A queue entry's state as stored: one this version does not know reads as `queued`, so
/// the entry is tried again rather than lost (SPEC 5).
pub fn stored_queue_state(state: &str) -> QueueState {
    QueueState::parse(state).unwrap_or(QueueState::Queued)
}

/// SPEC 9: the folders every account has, with their special use (RFC 6154); the
/// `Tracking` folder holds the tracking records (SPEC 8.3) and is read-only over IMAP.
pub const DEFAULT_FOLDERS: [(&str, Option<&str>); 7] = [
    ("INBOX", None),
    ("Junk", Some("\\Junk")),
    ("Sent", Some("\\Sent")),
    ("Drafts", Some("\\Drafts")),
    ("Trash", Some("\\Trash")),
    ("Archive", Some("\\Archive")),
    ("Tracking", None),
];

/// A folder name as stored: INBOX is INBOX in any case (RFC 9051 5.1); other names are
/// kept as given.
pub fn folder_name(name: &str) -> &str {
    if name.eq_ignore_ascii_case("INBOX") {
        "INBOX"
    } else {
        name
    }
}

/// The UIDVALIDITY of a folder made now (CREATE, a delivery remaking a deleted folder, the
/// new folder of an INBOX RENAME): RFC 9051 2.3.1.1 forbids giving a new folder the
/// UIDVALIDITY an earlier folder of that name had, or a client would take the old UIDs it
/// cached for the new folder's. The creation time is the RFC's suggestion, but a folder
/// deleted and made again within one second would get the same one, so it is above
/// `highest_given`, the highest UIDVALIDITY the account has given any folder (the backends
/// remember it past the folder's deletion, `accounts.last_uid_validity`).
pub fn new_uid_validity(now: i64, highest_given: i64) -> i64 {
    now.max(highest_given.saturating_add(1))
}

/// The name a folder takes when `from` is renamed to `to` (RFC 9051 6.3.6): `from` itself
/// and its inferiors (`from/...`, "/" is the hierarchy delimiter) move along; None for any
/// other folder (`fromX` is no inferior of `from`).
pub fn renamed_folder(name: &str, from: &str, to: &str) -> Option<String> {
    if name == from {
        return Some(to.to_string());
    }
    let rest = name.strip_prefix(from)?.strip_prefix('/')?;
    Some(format!("{to}/{rest}"))
}

/// The order in which the folders of a RENAME are renamed one by one, so that no name is
/// taken while its folder still has it: when the new names are longer than the old ones
/// (`A` to `A/B`, where `A/B/x` may become `A/B/B/x` as `A/x` becomes `A/B/x`) the longest
/// first, else the shortest first.
pub fn rename_order(names: &mut [String], from: &str, to: &str) {
    if to.len() > from.len() {
        names.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    } else {
        names.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
    }
}

/// A message's flags after a STORE (RFC 9051 6.4.6), as stored: one space between them,
/// each once (system flags matched in any case, RFC 9051 2.3.2), in the order first seen.
/// `\Recent` is the server's to set and never stored (RFC 3501 2.3.2).
pub fn stored_flags(current: &str, operation: FlagOperation, flags: &[String]) -> String {
    let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let wanted: Vec<&str> = flags.iter().map(String::as_str).filter(|f| !same(f, "\\Recent")).collect();
    let kept: Vec<&str> = match operation {
        FlagOperation::Replace => wanted,
        FlagOperation::Add => current.split_whitespace().chain(wanted).collect(),
        FlagOperation::Remove => current.split_whitespace().filter(|f| !wanted.iter().any(|w| same(w, f))).collect(),
    };
    let mut out: Vec<&str> = Vec::with_capacity(kept.len());
    for flag in kept {
        if !out.iter().any(|f| same(f, flag)) {
            out.push(flag);
        }
    }
    out.join(" ")
}

/// Whether stored flags hold `\Deleted` (what EXPUNGE removes, RFC 9051 6.4.3).
pub fn is_deleted(flags: &str) -> bool {
    flags.split_whitespace().any(|f| f.eq_ignore_ascii_case("\\Deleted"))
}

/// The special use of a folder name, for a folder a delivery finds missing.
pub fn default_special_use(name: &str) -> Option<&'static str> {
    DEFAULT_FOLDERS.iter().find(|(n, _)| *n == name).and_then(|(_, use_)| *use_)
}

/// SPEC 5: a delivery attempt ends an entry `Delivered`, `Bounced` or `Deferred`, or hands
/// it back untried (`Queued`); nothing else may be recorded for a leased entry.
pub fn check_outcome(update: &QueueUpdate) -> StoreResult<()> {
    match update.state {
        QueueState::Delivered | QueueState::Bounced | QueueState::Deferred | QueueState::Queued => Ok(()),
        other => Err(StoreError::Invalid(format!("cannot record state {other}"))),
    }
}

/// A message is kept while a mailbox holds it or a queue entry still has to deliver it;
/// then it (and its finished queue entries, history only) goes.
pub fn is_orphan(in_a_mailbox: bool, still_queued: bool) -> bool {
    !in_a_mailbox && !still_queued
}

/// SPEC 7.1: the AuthKey settings to store, as whole seconds: the generation interval
/// (AGI) at least one second.
pub fn check_authkey_settings(settings: &AuthKeySettings) -> StoreResult<(i64, i64)> {
    let agi = i64::try_from(settings.agi_secs).map_err(|_| StoreError::Invalid("AGI too large".into()))?;
    let avt = i64::try_from(settings.avt_secs).map_err(|_| StoreError::Invalid("AVT too large".into()))?;
    if agi == 0 {
        return Err(StoreError::Invalid("AGI must be at least one second".into()));
    }
    Ok((agi, avt))
}

/// The settings [`check_authkey_settings`] stored, read back: a value out of range (written
/// by hand) reads as the nearest one allowed.
pub fn stored_authkey_settings(agi_secs: i64, avt_secs: i64) -> AuthKeySettings {
    AuthKeySettings { agi_secs: agi_secs.max(1) as u64, avt_secs: avt_secs.max(0) as u64 }
}

/// SPEC 7.1: an address's own AuthKey settings, else its domain's default.
pub fn effective_authkey_settings(
    own: Option<AuthKeySettings>,
    domain: Option<AuthKeySettings>,
) -> Option<(AuthKeySettings, SettingsSource)> {
    own.map(|s| (s, SettingsSource::Address)).or_else(|| domain.map(|s| (s, SettingsSource::Domain)))
}

/// SPEC 8.4: a published ID names one local mailbox: `address` may publish the IDs whose
/// current `owners` (ID, address) are none or itself.
pub fn check_ids_free<'a>(address: &str, owners: impl IntoIterator<Item = (&'a str, &'a str)>) -> StoreResult<()> {
    for (id, owner) in owners {
        if owner != address {
            return Err(StoreError::Conflict(format!("published ID {id} belongs to {owner}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Folder;

    #[test]
    fn outcomes_orphans_settings_and_ids() {
        let update = |state| QueueUpdate {
            id: 1,
            state,
            last_reply: None,
            next_attempt: 0,
            attempted: true,
            delay_warned: false,
        };
        assert!(check_outcome(&update(QueueState::Deferred)).is_ok());
        assert!(matches!(check_outcome(&update(QueueState::InFlight)), Err(StoreError::Invalid(_))));
        assert!(is_orphan(false, false) && !is_orphan(true, false) && !is_orphan(false, true));
        let s = AuthKeySettings { agi_secs: 60, avt_secs: 3600 };
        assert_eq!(check_authkey_settings(&s).unwrap(), (60, 3600));
        assert!(check_authkey_settings(&AuthKeySettings { agi_secs: 0, avt_secs: 1 }).is_err());
        assert_eq!(stored_authkey_settings(60, 3600), s);
        assert_eq!(stored_authkey_settings(0, -1), AuthKeySettings { agi_secs: 1, avt_secs: 0 });
        let d = AuthKeySettings { agi_secs: 1, avt_secs: 2 };
        assert_eq!(effective_authkey_settings(Some(s), Some(d)), Some((s, SettingsSource::Address)));
        assert_eq!(effective_authkey_settings(None, Some(d)), Some((d, SettingsSource::Domain)));
        assert!(check_ids_free("a@x.test", [("P1", "a@x.test")]).is_ok());
        assert!(matches!(check_ids_free("a@x.test", [("P1", "b@x.test")]), Err(StoreError::Conflict(_))));
    }

    #[test]
    fn deliveries_become_queue_entries_and_stored_values_read_safely() {
        let mailbox = Delivery::Mailbox { account_id: 1, folder: Folder::Junk, recipient: "a@x.test".into() };
        let entry = queue_entry_for(&mailbox);
        assert_eq!(
            (entry.state, entry.last_reply, entry.held_domain),
            (QueueState::Delivered, Some("delivered to mailbox"), None)
        );
        let remote = Delivery::Queue { recipient: "b@y.test".into() };
        assert_eq!(
            queue_entry_for(&remote),
            NewQueueEntry { recipient: "b@y.test", state: QueueState::Queued, last_reply: None, held_domain: None }
        );
        let held = Delivery::Held { recipient: "c@h.test".into(), domain: "h.test".into() };
        assert_eq!(
            (queue_entry_for(&held).state, queue_entry_for(&held).held_domain),
            (QueueState::Queued, Some("h.test"))
        );
        assert_eq!(
            stored_policy("junk", "from-the-future", true),
            SenderPolicy { unauthenticated: PolicyAction::Junk, forged: PolicyAction::Reject, dmarc_counts: true }
        );
        assert_eq!(stored_queue_state("deferred"), QueueState::Deferred);
        assert_eq!(stored_queue_state("parked"), QueueState::Queued);
        assert_eq!(default_special_use("Junk"), Some("\\Junk"));
        assert_eq!(default_special_use("INBOX"), None);
        assert_eq!(account_domain("a@b@x.test"), Ok("x.test"));
        assert!(matches!(account_domain("a@"), Err(StoreError::Invalid(_))));
        let secrets = stored_secrets(Some("not a hash".into()), None, None);
        assert!(secrets.scram_sha256.is_none() && secrets.cram_md5.is_none());
    }

    #[test]
    fn flags_are_stored_once_each_in_the_order_first_seen() {
        let flags = |list: &[&str]| list.iter().map(|f| f.to_string()).collect::<Vec<_>>();
        assert_eq!(stored_flags("", FlagOperation::Add, &flags(&["\\Seen", "$Work", "\\seen"])), "\\Seen $Work");
        assert_eq!(stored_flags("\\Seen $Work", FlagOperation::Add, &flags(&["\\Flagged"])), "\\Seen $Work \\Flagged");
        assert_eq!(stored_flags("\\Seen $Work", FlagOperation::Remove, &flags(&["\\SEEN"])), "$Work");
        assert_eq!(stored_flags("\\Seen", FlagOperation::Replace, &flags(&["\\Deleted", "\\Recent"])), "\\Deleted");
        assert!(is_deleted("$Work \\deleted") && !is_deleted("\\Seen"));
    }

    #[test]
    fn new_folders_get_a_new_uid_validity_and_renames_take_inferiors_along() {
        // Now, unless the account gave that (or more) already: then one above it.
        assert_eq!(new_uid_validity(1_700_000_100, 1_700_000_000), 1_700_000_100);
        assert_eq!(new_uid_validity(1_700_000_000, 1_700_000_000), 1_700_000_001);
        assert_eq!(new_uid_validity(1_700_000_000, 1_700_000_005), 1_700_000_006);
        assert_eq!(renamed_folder("A", "A", "B").as_deref(), Some("B"));
        assert_eq!(renamed_folder("A/x/y", "A", "B/C").as_deref(), Some("B/C/x/y"));
        assert_eq!(renamed_folder("AB", "A", "B"), None);
        assert_eq!(renamed_folder("B/A", "A", "B"), None);
        let mut names = vec!["A".to_string(), "A/B/x".to_string(), "A/x".to_string()];
        rename_order(&mut names, "A", "A/B");
        assert_eq!(names, ["A/B/x", "A/x", "A"]);
        // `A/B` to `A`: `A/B/x` becomes `A/x` before `A/B/B/x` becomes `A/B/x`.
        let mut names = vec!["A/B/B/x".to_string(), "A/B/x".to_string(), "A/B".to_string()];
        rename_order(&mut names, "A/B", "A");
        assert_eq!(names, ["A/B", "A/B/x", "A/B/B/x"]);
    }
}
