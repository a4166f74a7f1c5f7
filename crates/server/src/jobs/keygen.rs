//! The AuthKey generator of the Authentication Server (SPEC 7.1, 7.3): every tick, expired
//! keys go, and every account whose newest key is an AGI old gets a new one, mailed to it.

use crate::support::time::unix_now;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use vouchmail_store::{Account, AuthKey, AuthKeySettings, NewMessage, Store, StoreResult};

use crate::auth::authkey::{generate_key, sender};
use crate::config;
use crate::rules::own_message::OwnMessage;

/// FNV-1a: a stable hash of the address for spreading first keys over the AGI.
fn spread_hash(address: &str) -> u64 {
    address.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// When the first key of an address is due: the first time at or after `from` that falls
/// on the address's own offset within the AGI (SPEC 7.1: first keys spread evenly over the
/// AGI, so a large domain does not generate all at once).
pub fn first_key_due(address: &str, agi_secs: u64, from: i64) -> i64 {
    let agi = agi_secs.clamp(1, i64::MAX as u64) as i64;
    let offset = (spread_hash(address) % agi as u64) as i64;
    let phase = (from - offset).rem_euclid(agi);
    if phase == 0 {
        from
    } else {
        from + (agi - phase)
    }
}

/// The generator: every tick, deletes expired keys and makes a new key for every account
/// whose newest key is an AGI old (SPEC 7.1).
pub async fn run_generator(
    store: Arc<dyn Store>,
    settings: config::AuthKey,
    hostname: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let started = unix_now();
    let tick = Duration::from_secs(settings.tick_secs.max(1));
    let default = AuthKeySettings { agi_secs: settings.default_agi_secs.max(1), avt_secs: settings.default_avt_secs };
    let mail = settings.mail_keys.then(|| KeyMail {
        from: if settings.key_mail_from.is_empty() {
            format!("authkey@{hostname}")
        } else {
            settings.key_mail_from.clone()
        },
        hostname: hostname.clone(),
        keep: settings.keep_key_mail,
    });
    loop {
        if let Err(e) = generate_due(store.as_ref(), default, mail.as_ref(), started, unix_now()).await {
            tracing::warn!(error = %e, "AuthKey generation failed; retrying at the next tick");
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// One pass of the generator at `now`; returns how many keys it made.
pub async fn generate_due(
    store: &dyn Store,
    default: AuthKeySettings,
    mail: Option<&KeyMail>,
    started: i64,
    now: i64,
) -> StoreResult<usize> {
    let deleted = store.delete_expired_authkeys(now).await?;
    if deleted > 0 {
        tracing::info!(deleted, "expired AuthKeys deleted");
    }
    let newest: HashMap<String, i64> = store.newest_authkeys().await?.into_iter().collect();
    let mut made = 0;
    for account in store.list_accounts().await? {
        let settings = store.authkey_settings(&account.address).await?.map_or(default, |(s, _)| s);
        let agi = settings.agi_secs.clamp(1, i64::MAX as u64 / 4) as i64;
        let due = match newest.get(&account.address) {
            Some(&last) => last.saturating_add(agi),
            None => first_key_due(&account.address, settings.agi_secs, started.max(account.created_at)),
        };
        if now < due {
            continue;
        }
        let key = generate_key().map_err(|e| vouchmail_store::StoreError::Unavailable(format!("OS random: {e}")))?;
        let avt = settings.avt_secs.min(i64::MAX as u64 / 4) as i64;
        // SPEC 7.1: expiry = now + AGI + AVT.
        let expires_at = now.saturating_add(agi).saturating_add(avt);
        store
            .add_authkey(AuthKey { address: account.address.clone(), key: key.clone(), created_at: now, expires_at })
            .await?;
        tracing::info!(address = %account.address, expires_at, "new AuthKey generated");
        if let Some(mail) = mail {
            mail.deliver(store, &account, &key, now).await?;
        }
        made += 1;
    }
    Ok(made)
}

/// SPEC 7.3: new keys mailed to their addresses with `X-New-Auth-Key`.
#[derive(Debug, Clone)]
pub struct KeyMail {
    /// The configured From address.
    pub from: String,
    pub hostname: String,
    /// Phase II: the key mail stays in the mailbox (`keep_key_mail`).
    pub keep: bool,
}

impl KeyMail {
    /// The key mail for a local account. The account's SMTP server is this one, so the
    /// mail takes the local part of the delivery path: the sender side records the key
    /// (SPEC 7.4: key mail from this same server counts) and, in phase II, the message is
    /// stored in its INBOX.
    async fn deliver(&self, store: &dyn Store, account: &Account, key: &str, now: i64) -> StoreResult<()> {
        let source = format!("{} (this server)", self.hostname);
        sender::record_key(store, &account.address, key, source).await?;
        if !self.keep {
            return Ok(());
        }
        let message = self.message(account, key, now);
        store.commit_message(message).await?;
        tracing::info!(address = %account.address, "AuthKey mailed");
        Ok(())
    }

    pub fn message(&self, account: &Account, key: &str, now: i64) -> NewMessage {
        let hostname = &self.hostname;
        let queue_id = crate::support::queue_id::new_queue_id();
        let date = vouchmail_proto::time::rfc5322_date(crate::support::time::unix_time(now));
        let (from, to) = (format!("<{}>", self.from), format!("<{}>", account.address));
        let message_id = format!("<{}.authkey@{hostname}>", queue_id.to_lowercase());
        let fields = [
            ("From", from.as_str()),
            ("To", to.as_str()),
            ("Date", date.as_str()),
            ("Message-ID", message_id.as_str()),
            ("Subject", "Your new AuthKey"),
            (sender::NEW_KEY_HEADER, key),
            ("Auto-Submitted", "auto-generated"),
        ];
        let body = "\r\nThis message carries the new AuthKey of this address in its X-New-Auth-Key header.\r\n\
                    Your mail server adds it to the mail you send (SPEC 7.4); there is nothing to do.\r\n";
        let mailbox = vouchmail_store::Delivery::Mailbox {
            account_id: account.id,
            folder: vouchmail_store::Folder::Inbox,
            recipient: account.address.clone(),
        };
        let message =
            OwnMessage { hostname, queue_id, sender: self.from.clone(), fields: &fields, rest: body.as_bytes(), now };
        message.build(vec![mailbox])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_keys_spread_over_the_agi() {
        let agi = 3600;
        let mut slots = [0usize; 4];
        for i in 0..4000 {
            let due = first_key_due(&format!("user{i}@example.org"), agi, 1_000_000);
            assert!((1_000_000..1_000_000 + agi as i64).contains(&due));
            slots[((due - 1_000_000) * 4 / agi as i64) as usize] += 1;
        }
        assert!(slots.iter().all(|&n| (800..1200).contains(&n)), "{slots:?}");
        assert_eq!(first_key_due("a@b", 1, 42), 42);
    }
}
