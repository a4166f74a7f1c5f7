//! The NOTIFY outbox (SPEC 8.3): tracking records of remote senders, leased from the
//! store, sent to the home servers of their domains by a [`NotifySender`] (the federation
//! client's, `federation::notify`), retried with backoff while a home server is down, and
//! dropped after their lifetime or a refusal. A queued record rings the outbox awake.

//!
//! The outbox sender ([`Outbox`]) takes due records from the store, groups them by the
//! sender's domain, and hands each group to a [`NotifySender`] (the federation client
//! implements it: discovery of the domain's home server, one connection, `NOTIFY <record>`
//! per record). Records not taken are retried with doubling waits, and dropped with a log
//! line once their lifetime is over. A record is marked sent only after the home server's
//! 250; if this server dies in between, the record is sent again and the home server's
//! idempotent NOTIFY (same message, recipient, event: 250, not stored twice) keeps it once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use vouchmail_store::{OutboxEntry, OutboxUpdate, Store};

use crate::config::Config;
use crate::rules::tracking::{announced, NotifyOutcome, NotifySender, OutboxBell, NOTIFY_OUTBOX_TOPIC};
use crate::support::tasks::{run_bounded, TaskTracker};
use crate::support::time::unix_now as now;

/// Home servers sent to at once in one pass.
const PARALLEL_PEERS: usize = 16;
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
    /// One home server's batch in all (SPEC 8: a slow peer delays only its own records).
    pub call_deadline: Duration,
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
            call_deadline: Duration::from_secs(m.call_deadline_secs),
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
        // SPEC 11: records queued on other nodes wake this one too (PostgreSQL LISTEN);
        // the poll below finds them anyway if an announcement is lost.
        let mut announcements = self.store.announcements();
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
                _ = self.bell.rung() => {}
                _ = announced(&mut announcements, NOTIFY_OUTBOX_TOPIC) => {}
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
        // One task per home server, at most PARALLEL_PEERS at once, each under the call
        // deadline: a peer that trickles holds its own records back, and only so long.
        // A sender that panicked is left out: its entries are leased and come back after
        // the lease.
        let deadline = self.settings.call_deadline;
        let sent = run_bounded(by_domain, PARALLEL_PEERS, |(domain, entries)| {
            let sender = Arc::clone(&self.sender);
            async move {
                let lines: Vec<String> = entries.iter().map(|e| e.record.clone()).collect();
                let outcomes = match tokio::time::timeout(deadline, sender.send(&domain, &lines)).await {
                    Ok(outcomes) => outcomes,
                    Err(_) => {
                        let why = format!("{domain}: no answer within the call deadline of {} s", deadline.as_secs());
                        tracing::info!(%domain, "NOTIFY: the home server did not answer within the call deadline");
                        vec![NotifyOutcome::Temporary(why); lines.len()]
                    }
                };
                (entries, outcomes)
            }
        })
        .await;
        for (entries, outcomes) in sent {
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
#[path = "notify_outbox_tests.rs"]
mod tests;
