//! Delivery notifications (SPEC 8.3), the server's side: recording events and answering
//! the tracking verbs from the store, and what the NOTIFY outbox is given to send with.
//!
//! The Messenger listener's stages call [`receipt_reply`], [`notify_reply`] and
//! [`track_reply`] (after their own checks: an authenticated local session for RECEIPT and
//! TRACK; for NOTIFY, that the peer's IP is an address of the home server of the record's
//! recipient domain, else `Reply::notify_not_home_server`). POP3 calls [`record_event`].
//!
//! Records for a remote sender go to the NOTIFY outbox (`jobs::notify_outbox`), which
//! hands them to a [`NotifySender`] and rings awake on the [`OutboxBell`].

use crate::support::time::unix_now as now;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::Notify;
pub use vouchmail_proto::messenger::tracking::NotifyOutcome;
use vouchmail_proto::messenger::tracking::{self, Receipt, Record};
use vouchmail_proto::smtp::reply::Reply;
use vouchmail_store::{NewTrackingEvent, NotifyStored, Store, TrackingOutcome, TrackingRoute, TrackingSubject};

use crate::rules::recipient::store_reply;

/// What the store announces to the other nodes when a record is queued for NOTIFY.
pub const NOTIFY_OUTBOX_TOPIC: &str = "notify_outbox";

/// Waits until another node announces `topic` (or announcements were lost, when the
/// caller had better look anyway); forever where the store has no other nodes.
pub async fn announced(announcements: &mut Option<tokio::sync::broadcast::Receiver<String>>, topic: &str) {
    use tokio::sync::broadcast::error::RecvError;
    if let Some(receiver) = announcements {
        loop {
            match receiver.recv().await {
                Ok(announced) if announced == topic => return,
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => return,
                Err(RecvError::Closed) => break,
            }
        }
    }
    std::future::pending::<()>().await
}

/// Records an event and logs where its record went. Never fails: a download that went out
/// must not fail because it could not be noted (the error is logged).
/// A record queued for NOTIFY rings `bell`, so the outbox sends it now rather than at its
/// next poll.
pub async fn record_event(store: &dyn Store, event: NewTrackingEvent, bell: &OutboxBell) -> Option<TrackingOutcome> {
    record_events(store, vec![event], bell).await.and_then(|mut outcomes| outcomes.pop())
}

/// [`record_event`] for several events in one store write (an IMAP FETCH batch's
/// `downloaded` events): their outcomes in order, or None when the store failed (logged).
pub async fn record_events(
    store: &dyn Store,
    events: Vec<NewTrackingEvent>,
    bell: &OutboxBell,
) -> Option<Vec<TrackingOutcome>> {
    let noted: Vec<(String, vouchmail_store::TrackingKind)> =
        events.iter().map(|event| (event.recipient.clone(), event.kind)).collect();
    let outcomes = match store.track_events(events).await {
        Ok(outcomes) => outcomes,
        Err(e) => {
            for (recipient, kind) in &noted {
                tracing::warn!(error = %e, %recipient, %kind, "cannot record the tracking event");
            }
            return None;
        }
    };
    let mut queued = false;
    for ((recipient, kind), outcome) in noted.iter().zip(&outcomes) {
        queued |= log_outcome(recipient, *kind, outcome);
    }
    if queued {
        bell.ring();
        // SPEC 11: the other nodes' outboxes may send it too.
        if let Err(e) = store.announce(NOTIFY_OUTBOX_TOPIC).await {
            tracing::debug!(error = %e, "cannot tell the other nodes of the NOTIFY record");
        }
    }
    Some(outcomes)
}

/// Logs where an event's record went; true when it was queued for NOTIFY.
fn log_outcome(recipient: &str, kind: vouchmail_store::TrackingKind, outcome: &TrackingOutcome) -> bool {
    match outcome {
        TrackingOutcome::Recorded { route, .. } => match route {
            TrackingRoute::Untracked => {
                tracing::debug!(%recipient, %kind, "tracking event (untracked message)")
            }
            TrackingRoute::Folder { owner } => {
                tracing::info!(%recipient, %kind, %owner, "tracking record into the sender's Tracking folder")
            }
            TrackingRoute::Outbox { domain } => {
                tracing::info!(%recipient, %kind, %domain, "tracking record queued for NOTIFY");
                return true;
            }
            TrackingRoute::Unroutable { reason } => {
                tracing::warn!(%recipient, %kind, %reason, "tracking record not made")
            }
        },
        TrackingOutcome::Duplicate => tracing::debug!(%recipient, %kind, "tracking event recorded before"),
        TrackingOutcome::NotFound => tracing::debug!(%recipient, %kind, "tracking event for an unknown message"),
    }
    false
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

/// SPEC 8.3: a NOTIFY record's timestamp may be at most this far ahead of our clock...
pub const NOTIFY_MAX_AHEAD_SECS: i64 = 5 * 60;
/// ...and at most this old.
pub const NOTIFY_MAX_AGE_SECS: i64 = 30 * 86_400;

/// SPEC 8.3: whether a NOTIFY record's timestamp is in the window the home server takes
/// (`now - 30 days ..= now + 5 minutes`); outside it the record is `501 5.5.4`.
pub fn notify_time_acceptable(timestamp: i64, now: i64) -> bool {
    timestamp <= now.saturating_add(NOTIFY_MAX_AHEAD_SECS) && timestamp >= now.saturating_sub(NOTIFY_MAX_AGE_SECS)
}

/// The UTC day `now` falls in, as `[start, end)` in Unix seconds.
pub fn utc_day(now: i64) -> (i64, i64) {
    let start = now - now.rem_euclid(86_400);
    (start, start.saturating_add(86_400))
}

/// `NOTIFY <record>` from a peer already checked to be the home server of the record's
/// recipient domain, arriving at `now` (SPEC 8.3): `501 5.5.4` for a timestamp more than 5
/// minutes ahead or more than 30 days old; `452 4.5.3` once the sender's Tracking folder
/// received `max_per_day` records about that domain's recipients this UTC day; else
/// `250 2.0.0` stored or stored before, `550 5.1.1` when the sender is not a local
/// mailbox; a store failure by its temporariness (`store_reply`).
///
/// The count and the insert are two steps: sessions of one peer storing at the same moment
/// may pass the cap by as many records as they run at once.
pub async fn notify_reply(store: &dyn Store, record: Record, max_per_day: u64, now: i64) -> Reply {
    let sender = record.sender.clone();
    let domain = record.recipient_domain().to_ascii_lowercase();
    if !notify_time_acceptable(record.timestamp, now) {
        tracing::warn!(%sender, %domain, timestamp = record.timestamp, now, "NOTIFY refused: timestamp out of range");
        return Reply::syntax("Record timestamp more than 5 minutes ahead or more than 30 days old");
    }
    let (day_start, day_end) = utc_day(now);
    match store.count_tracking_records(&sender, &domain, day_start..day_end).await {
        Ok(n) if n >= max_per_day => {
            tracing::warn!(%sender, %domain, max_per_day, "NOTIFY refused: the day's cap is reached");
            return Reply::notify_over_daily_cap(&domain, &sender);
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %e, "cannot count tracking records");
            return store_reply(&e);
        }
    }
    match store.store_notified_record(record, now).await {
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
/// oldest first, as `250-<record>` lines and `250 <n> records`; past [`TRACK_LIMIT`]
/// records, the newest ones (the store gives the newest `limit`).
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

/// Makes the running outbox look at its entries now. Cloned into whatever queues records
/// (POP3 RETR, RECEIPT); a ring while the outbox is busy is kept for its next wait.
#[derive(Debug, Clone, Default)]
pub struct OutboxBell(Arc<Notify>);

impl OutboxBell {
    pub fn ring(&self) {
        self.0.notify_one();
    }

    /// Waits for the next ring (or one kept from while nobody waited).
    pub async fn rung(&self) {
        self.0.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_119_200; // 2026-12-01T10:00:00Z

    #[test]
    fn the_notify_time_window() {
        assert!(notify_time_acceptable(NOW, NOW));
        assert!(notify_time_acceptable(NOW + 300, NOW));
        assert!(!notify_time_acceptable(NOW + 301, NOW));
        assert!(notify_time_acceptable(NOW - 30 * 86_400, NOW));
        assert!(!notify_time_acceptable(NOW - 30 * 86_400 - 1, NOW));
        assert!(!notify_time_acceptable(i64::MAX, NOW) && !notify_time_acceptable(i64::MIN, NOW));
    }

    #[test]
    fn the_utc_day() {
        let midnight = NOW - 10 * 3600;
        assert_eq!(utc_day(NOW), (midnight, midnight + 86_400));
        assert_eq!(utc_day(midnight), (midnight, midnight + 86_400));
        assert_eq!(utc_day(midnight - 1), (midnight - 86_400, midnight));
        assert_eq!(utc_day(-1), (-86_400, 0));
    }
}
