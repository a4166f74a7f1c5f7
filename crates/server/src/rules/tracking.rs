//! Delivery notifications (SPEC 8.3), the server's side: recording events and answering
//! the tracking verbs from the store, and the NOTIFY outbox sender.
//!
//! The Messenger listener's stages call [`receipt_reply`], [`notify_reply`] and
//! [`track_reply`] (after their own checks: an authenticated local session for RECEIPT and
//! TRACK; for NOTIFY, that the peer's IP is an address of the home server of the record's
//! recipient domain, else `Reply::notify_not_home_server`). POP3 calls [`record_event`].
//!
//! The outbox sender ([`Outbox`]) takes due records from the store, groups them by the
//! sender's domain, and hands each group to a [`NotifySender`] (the federation client
//! implements it: discovery of the domain's home server, one connection, `NOTIFY <record>`
//! per record). Records not taken are retried with doubling waits, and dropped with a log
//! line once their lifetime is over. A record is marked sent only after the home server's
//! 250; if this server dies in between, the record is sent again and the home server's
//! idempotent NOTIFY (same message, recipient, event: 250, not stored twice) keeps it once.

use crate::support::time::unix_now as now;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
pub use vouchmail_proto::messenger::tracking::NotifyOutcome;
use vouchmail_proto::messenger::tracking::{self, Receipt, Record};
use vouchmail_proto::smtp::reply::Reply;
use vouchmail_store::{
    NewTrackingEvent, NotifyStored, OutboxEntry, OutboxUpdate, Store, TrackingOutcome, TrackingRoute, TrackingSubject,
};

use crate::config::Config;
use crate::rules::recipient::store_reply;
use crate::support::tasks::TaskTracker;

/// Records an event and logs where its record went. Never fails: a download that went out
/// must not fail because it could not be noted (the error is logged).
/// A record queued for NOTIFY rings `bell`, so the outbox sends it now rather than at its
/// next poll.
pub async fn record_event(store: &dyn Store, event: NewTrackingEvent, bell: &OutboxBell) -> Option<TrackingOutcome> {
    let (recipient, kind) = (event.recipient.clone(), event.kind);
    match store.track_event(event).await {
        Ok(outcome) => {
            match &outcome {
                TrackingOutcome::Recorded { route, .. } => match route {
                    TrackingRoute::Untracked => {
                        tracing::debug!(%recipient, %kind, "tracking event (untracked message)")
                    }
                    TrackingRoute::Folder { owner } => {
                        tracing::info!(%recipient, %kind, %owner, "tracking record into the sender's Tracking folder")
                    }
                    TrackingRoute::Outbox { domain } => {
                        tracing::info!(%recipient, %kind, %domain, "tracking record queued for NOTIFY");
                        bell.ring();
                    }
                    TrackingRoute::Unroutable { reason } => {
                        tracing::warn!(%recipient, %kind, %reason, "tracking record not made")
                    }
                },
                TrackingOutcome::Duplicate => tracing::debug!(%recipient, %kind, "tracking event recorded before"),
                TrackingOutcome::NotFound => {
                    tracing::debug!(%recipient, %kind, "tracking event for an unknown message")
                }
            }
            Some(outcome)
        }
        Err(e) => {
            tracing::warn!(error = %e, %recipient, %kind, "cannot record the tracking event");
            None
        }
    }
}

/// `RECEIPT <message-id> DECRYPTED|FAILED` from `user` (an authenticated local session),
/// SPEC 8.3: `250 2.0.0` (also when recorded before: each event once), `550 5.1.0` when no
/// such message was delivered to the user, `451 4.3.0` when the store fails.
pub async fn receipt_reply(
    store: &dyn Store,
    user: &str,
    receipt: &Receipt,
    reporting_server: &str,
    bell: &OutboxBell,
) -> Reply {
    let event = NewTrackingEvent {
        recipient: user.to_string(),
        subject: TrackingSubject::MessageId(receipt.message_id.clone()),
        kind: receipt.outcome.event().into(),
        at: now(),
        reporting_server: reporting_server.to_string(),
    };
    match record_event(store, event, bell).await {
        Some(TrackingOutcome::NotFound) => Reply::receipt_no_such_message(&receipt.message_id),
        Some(_) => Reply::tracking_stored(),
        None => Reply::local_error("Cannot record the receipt now, try again later"),
    }
}

/// `NOTIFY <record>` from a peer already checked to be the home server of the record's
/// recipient domain (SPEC 8.3): `250 2.0.0` stored or stored before, `550 5.1.1` when the
/// sender is not a local mailbox, `451 4.3.0` when the store fails.
pub async fn notify_reply(store: &dyn Store, record: Record) -> Reply {
    let sender = record.sender.clone();
    match store.store_notified_record(record).await {
        Ok(NotifyStored::Stored) => {
            tracing::info!(%sender, "NOTIFY record stored in the Tracking folder");
            Reply::tracking_stored()
        }
        Ok(NotifyStored::Duplicate) => Reply::tracking_stored(),
        Ok(NotifyStored::UnknownSender) => Reply::notify_unknown_sender(&sender),
        Err(e) => {
            tracing::error!(error = %e, "cannot store a NOTIFY record");
            store_reply(&e)
        }
    }
}

/// Most records one TRACK answer lists.
pub const TRACK_LIMIT: usize = tracking::MAX_TRACK_RECORDS;

/// `TRACK [<since>]` for an authenticated local `user` (SPEC 8.3): its Tracking records,
/// oldest first, as `250-<record>` lines and `250 <n> records`.
pub async fn track_reply(store: &dyn Store, user: &str, since: Option<i64>) -> Reply {
    match store.tracking_records(user, since, TRACK_LIMIT).await {
        Ok(records) => tracking::track_reply(&records.into_iter().map(|r| r.record).collect::<Vec<_>>()),
        Err(e) => {
            tracing::error!(error = %e, "cannot read tracking records");
            store_reply(&e)
        }
    }
}

/// Delivers tracking records to the home server of a domain (SPEC 8.3): the Messenger
/// federation client implements it. `records` are record lines, each to be sent as
/// `NOTIFY <record>`; the answer has one outcome per record, in order (missing ones count
/// as temporary failures). `vouchmail_proto::messenger::tracking::NotifyClient` speaks the commands on
/// a connection and gives these outcomes.
pub trait NotifySender: Send + Sync {
    fn send<'a>(
        &'a self,
        domain: &'a str,
        records: &'a [String],
    ) -> Pin<Box<dyn Future<Output = Vec<NotifyOutcome>> + Send + 'a>>;
}

/// How the outbox sender retries (`[messenger]` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxSettings {
    pub retry_min_secs: i64,
    pub retry_max_secs: i64,
    pub lifetime_secs: i64,
    /// How long a leased batch is ours; a sender that dies leaves it to be leased again.
    pub lease_secs: i64,
    /// Records leased at once.
    pub batch: usize,
    /// The longest sleep between looks at the outbox.
    pub poll_interval: Duration,
}

impl OutboxSettings {
    pub fn from_config(config: &Config) -> OutboxSettings {
        let m = &config.messenger;
        OutboxSettings {
            retry_min_secs: i64::try_from(m.notify_retry_min_secs).unwrap_or(i64::MAX).max(1),
            retry_max_secs: i64::try_from(m.notify_retry_max_secs).unwrap_or(i64::MAX).max(1),
            lifetime_secs: i64::try_from(m.notify_lifetime_secs).unwrap_or(i64::MAX),
            lease_secs: 600,
            batch: 200,
            // A queued record waits at most this long (no sooner than the first retry would).
            poll_interval: Duration::from_secs(m.notify_retry_min_secs.clamp(1, 30)),
        }
    }

    /// The wait before attempt `attempts + 1`, doubling from the minimum to the maximum
    /// (as the outbound queue, RFC 5321 4.5.4.1).
    pub fn backoff(&self, attempts: u32) -> i64 {
        let doublings = attempts.saturating_sub(1).min(30);
        self.retry_min_secs.saturating_mul(1i64 << doublings).min(self.retry_max_secs)
    }
}

/// What one pass of the outbox did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxPass {
    pub sent: usize,
    pub retried: usize,
    pub dropped: usize,
}

impl OutboxPass {
    pub fn handled(&self) -> usize {
        self.sent + self.retried + self.dropped
    }
}

/// Makes the running outbox look at its entries now. Cloned into whatever queues records
/// (POP3 RETR, RECEIPT); a ring while the outbox is busy is kept for its next wait.
#[derive(Debug, Clone, Default)]
pub struct OutboxBell(Arc<Notify>);

impl OutboxBell {
    pub fn ring(&self) {
        self.0.notify_one();
    }
}

/// The NOTIFY outbox sender.
pub struct Outbox {
    store: Arc<dyn Store>,
    sender: Arc<dyn NotifySender>,
    settings: OutboxSettings,
    bell: OutboxBell,
}

impl Outbox {
    pub fn new(
        store: Arc<dyn Store>,
        sender: Arc<dyn NotifySender>,
        settings: OutboxSettings,
        bell: OutboxBell,
    ) -> Arc<Outbox> {
        Arc::new(Outbox { store, sender, settings, bell })
    }

    /// Starts the sender as a server task; it stops when `shutdown` turns true.
    pub fn spawn(self: &Arc<Self>, shutdown: watch::Receiver<bool>, tasks: &TaskTracker) {
        let outbox = Arc::clone(self);
        tasks.spawn(async move { outbox.run(shutdown).await });
    }

    async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                break;
            }
            let pass = self.run_once(now()).await;
            if pass.handled() >= self.settings.batch {
                continue; // More may be due.
            }
            let mut wait = self.settings.poll_interval;
            match self.store.next_notify_due().await {
                Ok(Some(due)) => {
                    let until = u64::try_from(due.saturating_sub(now())).unwrap_or(0);
                    wait = wait.min(Duration::from_secs(until.max(1)));
                }
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "NOTIFY outbox: cannot read the outbox"),
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.bell.0.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// One pass at time `now`: leases what is due, sends it domain by domain (the domains
    /// at the same time), and records every outcome.
    pub async fn run_once(&self, now: i64) -> OutboxPass {
        let leased = match self.store.lease_notifies(now, now + self.settings.lease_secs, self.settings.batch).await {
            Ok(leased) => leased,
            Err(e) => {
                tracing::error!(error = %e, "NOTIFY outbox: cannot lease records");
                return OutboxPass::default();
            }
        };
        let mut pass = OutboxPass::default();
        let mut updates = Vec::new();
        let mut by_domain: BTreeMap<String, Vec<OutboxEntry>> = BTreeMap::new();
        for entry in leased {
            if self.expired(&entry, now) {
                updates.push(self.drop_expired(&entry, &mut pass));
            } else {
                by_domain.entry(entry.domain.clone()).or_default().push(entry);
            }
        }
        let mut sends = tokio::task::JoinSet::new();
        for (domain, entries) in by_domain {
            let sender = Arc::clone(&self.sender);
            sends.spawn(async move {
                let lines: Vec<String> = entries.iter().map(|e| e.record.clone()).collect();
                let outcomes = sender.send(&domain, &lines).await;
                (entries, outcomes)
            });
        }
        while let Some(joined) = sends.join_next().await {
            let Ok((entries, outcomes)) = joined else {
                // A sender that panicked: its entries are leased and come back after the lease.
                tracing::error!("NOTIFY outbox: a sender task failed");
                continue;
            };
            let mut outcomes = outcomes.into_iter();
            for entry in entries {
                let outcome =
                    outcomes.next().unwrap_or_else(|| NotifyOutcome::Temporary("no outcome from the sender".into()));
                updates.push(self.conclude(&entry, outcome, now, &mut pass));
            }
        }
        if let Err(e) = self.store.finish_notifies(updates, now).await {
            // The leases run out and the records are sent again (the receiver keeps one).
            tracing::error!(error = %e, "NOTIFY outbox: cannot record outcomes");
        }
        pass
    }

    /// SPEC 8.3: retried for up to the lifetime (5 days by default).
    fn expired(&self, entry: &OutboxEntry, now: i64) -> bool {
        now.saturating_sub(entry.created_at) >= self.settings.lifetime_secs
    }

    fn drop_expired(&self, entry: &OutboxEntry, pass: &mut OutboxPass) -> OutboxUpdate {
        tracing::warn!(
            domain = %entry.domain,
            record = %entry.record,
            attempts = entry.attempts,
            last_error = entry.last_error.as_deref().unwrap_or(""),
            "NOTIFY record dropped: not delivered within its lifetime"
        );
        pass.dropped += 1;
        OutboxUpdate::Drop { id: entry.id, reason: "lifetime over".into() }
    }

    fn conclude(&self, entry: &OutboxEntry, outcome: NotifyOutcome, now: i64, pass: &mut OutboxPass) -> OutboxUpdate {
        match outcome {
            NotifyOutcome::Delivered => {
                tracing::info!(domain = %entry.domain, record = %entry.record, "NOTIFY record delivered");
                pass.sent += 1;
                OutboxUpdate::Sent { id: entry.id }
            }
            NotifyOutcome::Permanent(reason) => {
                tracing::warn!(domain = %entry.domain, record = %entry.record, %reason, "NOTIFY record refused; dropped");
                pass.dropped += 1;
                OutboxUpdate::Drop { id: entry.id, reason }
            }
            NotifyOutcome::Temporary(error) => {
                let next_attempt = now.saturating_add(self.settings.backoff(entry.attempts + 1));
                if next_attempt.saturating_sub(entry.created_at) >= self.settings.lifetime_secs {
                    let entry = OutboxEntry { last_error: Some(error), ..entry.clone() };
                    return self.drop_expired(&entry, pass);
                }
                tracing::debug!(domain = %entry.domain, %error, next_attempt, "NOTIFY record deferred");
                pass.retried += 1;
                OutboxUpdate::Retry { id: entry.id, next_attempt, error }
            }
        }
    }
}

#[cfg(test)]
#[path = "tracking_tests.rs"]
mod tests;
