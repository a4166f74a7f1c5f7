//! Rules every backend applies inside its own transactions (SPEC 11: backends only store
//! and fetch; what a delivery outcome may do to a queue entry, when a message is orphaned,
//! which AuthKey settings hold for an address and who a published ID belongs to are decided
//! once, here). The tracking rules are in [`crate::tracking`], the directory's Entity Index
//! changes in [`crate::messenger`].

use crate::error::{StoreError, StoreResult};
use crate::types::{AuthKeySettings, QueueState, QueueUpdate, SettingsSource};

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
}
