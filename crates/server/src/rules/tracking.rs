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
