//! Delivery notifications in PostgreSQL (SPEC 8.3): events, records in the Tracking folder,
//! and the NOTIFY outbox: the semantics of `sqlite/tracking.rs`, with the rules (what is
//! tracked, what record an event makes, where it goes, what an outbox outcome does) in
//! `crate::tracking`.
//!
//! What differs because several nodes write at once: an event's id is a reader's cursor,
//! so its insert takes the cursor lock first (`cursors`); and the outbox is leased with
//! `FOR UPDATE SKIP LOCKED`, so two nodes never lease the same entry.

use std::ops::Range;

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::Row;
use vouchmail_proto::messenger::tracking::Record;

use super::base::{db_error, sql_limit};
use super::cursors::{self, Cursor};
use super::pool::PostgresStore;
use crate::error::{StoreFuture, StoreResult};
use crate::interface::TrackingStore;
use crate::tracking::{
    folder_route, make_record, NewTrackingEvent, NotifyStored, OutboxChange, OutboxCounts, OutboxEntry, OutboxState,
    OutboxUpdate, RecordPlan, StoredTrackingRecord, TrackedMessage, TrackingOutcome, TrackingRoute, TrackingSubject,
};
use crate::types::{TrackingEvent, TrackingKind};

/// [`crate::rules::HEADER_SCAN_BYTES`] as `substr`'s length argument (an `integer`).
const SCAN: i32 = crate::rules::HEADER_SCAN_BYTES as i32;

/// Mailbox entries read at a time while looking for a Message-ID: the search stops at
/// the first match, without fetching the whole mailbox's headers.
const SCAN_BATCH: i32 = 64;

/// The stored message behind a mailbox row (queue id, sender, Authentication-Results,
/// first octets).
fn stored_message(row: &Row) -> Result<TrackedMessage, tokio_postgres::Error> {
    let (queue_id, sender, auth_results, head): (String, String, String, Vec<u8>) =
        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
    Ok(TrackedMessage::from_stored(queue_id, sender, &auth_results, &head))
}

/// The message an event is about, as the recipient has (or had) it.
async fn find_subject(
    tx: &Transaction<'_>,
    recipient: &str,
    subject: &TrackingSubject,
) -> StoreResult<Option<TrackedMessage>> {
    match subject {
        TrackingSubject::Mailbox(id) => {
            let statement = tx
                .prepare_cached(
                    "SELECT m.queue_id, m.sender, m.auth_results, COALESCE(h.header, substr(m.data, 1, $3))
                     FROM mailbox b JOIN messages m ON m.id = b.message_id JOIN accounts a ON a.id = b.account_id
                          LEFT JOIN message_headers h ON h.message_id = b.message_id
                     WHERE a.address = $1 AND b.id = $2",
                )
                .await
                .map_err(db_error)?;
            let row = tx.query_opt(&statement, &[&recipient, id, &SCAN]).await.map_err(db_error)?;
            row.map(|r| stored_message(&r)).transpose().map_err(db_error)
        }
        TrackingSubject::MessageId(message_id) => {
            // Downloaded before (the message may be deleted since): the first event says
            // which message it was and whether it is tracked.
            let statement = tx
                .prepare_cached(
                    "SELECT queue_id, sender, tracked FROM tracking_events
                     WHERE recipient = $1 AND message_id = $2 ORDER BY id LIMIT 1",
                )
                .await
                .map_err(db_error)?;
            if let Some(row) = tx.query_opt(&statement, &[&recipient, message_id]).await.map_err(db_error)? {
                let (queue_id, sender, tracked) = (
                    row.try_get(0).map_err(db_error)?,
                    row.try_get(1).map_err(db_error)?,
                    row.try_get(2).map_err(db_error)?,
                );
                return Ok(Some(TrackedMessage { queue_id, message_id: message_id.clone(), sender, tracked }));
            }
            // Still in the mailbox, never downloaded.
            let statement = tx
                .prepare_cached(
                    "SELECT m.queue_id, m.sender, m.auth_results, COALESCE(h.header, substr(m.data, 1, $2))
                     FROM mailbox b JOIN messages m ON m.id = b.message_id JOIN accounts a ON a.id = b.account_id
                          LEFT JOIN message_headers h ON h.message_id = b.message_id
                     WHERE a.address = $1 ORDER BY b.id",
                )
                .await
                .map_err(db_error)?;
            let portal = tx.bind(&statement, &[&recipient, &SCAN]).await.map_err(db_error)?;
            loop {
                let rows = tx.query_portal(&portal, SCAN_BATCH).await.map_err(db_error)?;
                if rows.is_empty() {
                    return Ok(None);
                }
                for row in &rows {
                    let found = stored_message(row).map_err(db_error)?;
                    if found.message_id == *message_id {
                        return Ok(Some(found));
                    }
                }
            }
        }
        TrackingSubject::Read(message) => Ok(Some(message.clone())),
    }
}

/// Records an event about `message` for `recipient` once per (message, recipient, event):
/// true when this call recorded it. Takes the events' cursor lock (`cursors`): every
/// insert into `tracking_events` goes through here (`record_download` too).
pub(super) async fn insert_event(
    tx: &Transaction<'_>,
    at: i64,
    message: &TrackedMessage,
    recipient: &str,
    kind: TrackingKind,
) -> StoreResult<bool> {
    cursors::lock(tx, Cursor::TrackingEvents).await?;
    let statement = tx
        .prepare_cached(
            "INSERT INTO tracking_events (occurred_at, queue_id, message_id, sender, recipient, event, tracked)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .await
        .map_err(db_error)?;
    let inserted = tx
        .execute(
            &statement,
            &[
                &at,
                &message.queue_id,
                &message.message_id,
                &message.sender,
                &recipient,
                &kind.as_str(),
                &message.tracked,
            ],
        )
        .await
        .map_err(db_error)?;
    Ok(inserted == 1)
}

/// SPEC 8.3: records the event once per message and recipient, then stores its record
/// where [`crate::tracking::plan_record`]'s rule says, in the caller's transaction.
async fn track_event(tx: &Transaction<'_>, event: &NewTrackingEvent) -> StoreResult<TrackingOutcome> {
    let recipient = event.recipient.to_lowercase();
    let Some(subject) = find_subject(tx, &recipient, &event.subject).await? else {
        return Ok(TrackingOutcome::NotFound);
    };
    if !insert_event(tx, event.at, &subject, &recipient, event.kind).await? {
        return Ok(TrackingOutcome::Duplicate);
    }
    let made = match make_record(event, &subject) {
        Ok(made) => made,
        Err(route) => return Ok(TrackingOutcome::Recorded { record: None, route }),
    };
    let statement =
        tx.prepare_cached("SELECT EXISTS (SELECT 1 FROM domains WHERE name = $1)").await.map_err(db_error)?;
    let local: bool = tx.query_one(&statement, &[&made.domain]).await.and_then(|r| r.try_get(0)).map_err(db_error)?;
    let (record, route) = match made.place(local) {
        RecordPlan::None(route) => return Ok(TrackingOutcome::Recorded { record: None, route }),
        RecordPlan::Folder(record) => {
            let route = folder_route(&record, insert_record(tx, &record, event.at).await?);
            (record, route)
        }
        RecordPlan::Outbox { record, line, domain } => {
            let statement = tx
                .prepare_cached(
                    "INSERT INTO notify_outbox (record, domain, message_id, recipient, event, state, attempts,
                                                next_attempt, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6, $6) ON CONFLICT DO NOTHING",
                )
                .await
                .map_err(db_error)?;
            tx.execute(
                &statement,
                &[&line, &domain, &record.message_id, &record.recipient, &event.kind.as_str(), &event.at],
            )
            .await
            .map_err(db_error)?;
            (record, TrackingRoute::Outbox { domain })
        }
    };
    Ok(TrackingOutcome::Recorded { record: Some(record), route })
}

/// Into the Tracking folder of the record's sender, once per (message, recipient, event).
async fn insert_record(client: &impl GenericClient, record: &Record, now: i64) -> StoreResult<NotifyStored> {
    let owner = record.sender.to_lowercase();
    let statement =
        client.prepare_cached("SELECT EXISTS (SELECT 1 FROM accounts WHERE address = $1)").await.map_err(db_error)?;
    let exists: bool = client.query_one(&statement, &[&owner]).await.and_then(|r| r.try_get(0)).map_err(db_error)?;
    if !exists {
        return Ok(NotifyStored::UnknownSender);
    }
    let kind: TrackingKind = record.event.into();
    // Two nodes storing the same record at once: the second waits for the first's
    // commit on the unique key, then stores nothing (a duplicate, as SPEC 8.3 asks).
    let statement = client
        .prepare_cached(
            "INSERT INTO tracking_records (owner, occurred_at, message_id, sender, recipient, event,
                                           reporting_server, stored_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .await
        .map_err(db_error)?;
    let n = client
        .execute(
            &statement,
            &[
                &owner,
                &record.timestamp,
                &record.message_id,
                &record.sender,
                &record.recipient.to_lowercase(),
                &kind.as_str(),
                &record.reporting_server,
                &now,
            ],
        )
        .await
        .map_err(db_error)?;
    Ok(if n == 1 { NotifyStored::Stored } else { NotifyStored::Duplicate })
}

/// A Tracking folder row; None for an event this version does not know (written by a
/// newer one), which is left out.
fn row_to_stored(row: &Row) -> Result<Option<StoredTrackingRecord>, tokio_postgres::Error> {
    let event: String = row.try_get(6)?;
    let Some(kind) = TrackingKind::parse(&event) else { return Ok(None) };
    Ok(Some(StoredTrackingRecord {
        id: row.try_get(0)?,
        owner: row.try_get(1)?,
        record: Record {
            timestamp: row.try_get(2)?,
            message_id: row.try_get(3)?,
            sender: row.try_get(4)?,
            recipient: row.try_get(5)?,
            event: kind.into(),
            reporting_server: row.try_get(7)?,
        },
        stored_at: row.try_get(8)?,
    }))
}

const OUTBOX_COLUMNS: &str = "id, record, domain, state, attempts, next_attempt, last_error, created_at";

fn row_to_outbox(row: &Row) -> Result<OutboxEntry, tokio_postgres::Error> {
    let state: String = row.try_get(3)?;
    let attempts: i64 = row.try_get(4)?;
    Ok(OutboxEntry {
        id: row.try_get(0)?,
        record: row.try_get(1)?,
        domain: row.try_get(2)?,
        state: OutboxState::parse(&state).unwrap_or(OutboxState::Pending),
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt: row.try_get(5)?,
        last_error: row.try_get(6)?,
        created_at: row.try_get(7)?,
    })
}

fn outbox_entries(rows: &[Row]) -> StoreResult<Vec<OutboxEntry>> {
    rows.iter().map(row_to_outbox).collect::<Result<_, _>>().map_err(db_error)
}

impl TrackingStore for PostgresStore {
    fn list_tracking_events(&self, after_id: i64, limit: usize) -> StoreFuture<'_, Vec<TrackingEvent>> {
        Box::pin(async move {
            let conn = self.conn().await?;
            // Safe as a cursor: ids are handed out in commit order (`cursors`), so no row
            // with an id at or below the last one read can still appear.
            let statement = conn
                .prepare_cached(
                    "SELECT id, occurred_at, queue_id, message_id, sender, recipient, event FROM tracking_events
                     WHERE id > $1 ORDER BY id LIMIT $2",
                )
                .await
                .map_err(db_error)?;
            let rows = conn.query(&statement, &[&after_id, &sql_limit(limit)]).await.map_err(db_error)?;
            let event = |r: &Row| -> Result<TrackingEvent, tokio_postgres::Error> {
                let kind: String = r.try_get(6)?;
                Ok(TrackingEvent {
                    id: r.try_get(0)?,
                    occurred_at: r.try_get(1)?,
                    queue_id: r.try_get(2)?,
                    message_id: r.try_get(3)?,
                    sender: r.try_get(4)?,
                    recipient: r.try_get(5)?,
                    kind: TrackingKind::parse(&kind).unwrap_or(TrackingKind::Downloaded),
                })
            };
            rows.iter().map(event).collect::<Result<_, _>>().map_err(db_error)
        })
    }

    fn track_events(&self, events: Vec<NewTrackingEvent>) -> StoreFuture<'_, Vec<TrackingOutcome>> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(db_error)?;
            let mut outcomes = Vec::with_capacity(events.len());
            for event in &events {
                outcomes.push(track_event(&tx, event).await?);
            }
            tx.commit().await.map_err(db_error)?;
            Ok(outcomes)
        })
    }

    fn store_notified_record(&self, record: Record, now: i64) -> StoreFuture<'_, NotifyStored> {
        Box::pin(async move {
            let conn = self.conn().await?;
            insert_record(&conn, &record, now).await
        })
    }

    fn count_tracking_records(&self, owner: &str, recipient_domain: &str, stored: Range<i64>) -> StoreFuture<'_, u64> {
        let (owner, domain) = (owner.to_lowercase(), recipient_domain.to_lowercase());
        Box::pin(async move {
            let conn = self.conn().await?;
            // The domain is matched as the whole part after the recipient's last `@`.
            let statement = conn
                .prepare_cached(
                    "SELECT COUNT(*) FROM tracking_records
                     WHERE owner = $1 AND stored_at >= $3 AND stored_at < $4
                       AND length(recipient) > length($2)
                       AND substr(recipient, length(recipient) - length($2) + 1) = $2
                       AND substr(recipient, length(recipient) - length($2), 1) = '@'",
                )
                .await
                .map_err(db_error)?;
            let n: i64 = conn
                .query_one(&statement, &[&owner, &domain, &stored.start, &stored.end])
                .await
                .and_then(|r| r.try_get(0))
                .map_err(db_error)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    fn tracking_records(
        &self,
        owner: &str,
        since: Option<i64>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<StoredTrackingRecord>> {
        let owner = owner.to_lowercase();
        Box::pin(async move {
            let conn = self.conn().await?;
            // The newest `limit` at or after `since`, then listed oldest first.
            let statement = conn
                .prepare_cached(
                    "SELECT id, owner, occurred_at, message_id, sender, recipient, event, reporting_server, stored_at
                     FROM tracking_records WHERE owner = $1 AND occurred_at >= $2
                     ORDER BY occurred_at DESC, id DESC LIMIT $3",
                )
                .await
                .map_err(db_error)?;
            let rows = conn
                .query(&statement, &[&owner, &since.unwrap_or(i64::MIN), &sql_limit(limit)])
                .await
                .map_err(db_error)?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                out.extend(row_to_stored(row).map_err(db_error)?);
            }
            out.reverse();
            Ok(out)
        })
    }

    fn lease_notifies(&self, now: i64, lease_until: i64, limit: usize) -> StoreFuture<'_, Vec<OutboxEntry>> {
        Box::pin(async move {
            let conn = self.conn().await?;
            // Due entries (pending and due, or in flight with a lease run out: their
            // sender died), oldest due first. SKIP LOCKED: an entry another node is
            // leasing right now is left to it rather than waited for, and one whose lease
            // it has just committed no longer matches when its row is locked, so no two
            // nodes ever hold (and send) the same entry (SPEC 11).
            let statement = conn
                .prepare_cached(&format!(
                    "UPDATE notify_outbox SET state = 'inflight', lease_until = $2, updated_at = $1
                     WHERE id IN (SELECT id FROM notify_outbox
                                  WHERE (state = 'pending' AND next_attempt <= $1)
                                     OR (state = 'inflight' AND (lease_until IS NULL OR lease_until <= $1))
                                  ORDER BY next_attempt, id LIMIT $3
                                  FOR UPDATE SKIP LOCKED)
                     RETURNING {OUTBOX_COLUMNS}"
                ))
                .await
                .map_err(db_error)?;
            let rows = conn.query(&statement, &[&now, &lease_until, &sql_limit(limit)]).await.map_err(db_error)?;
            let mut out = outbox_entries(&rows)?;
            out.sort_by_key(|e| (e.next_attempt, e.id));
            Ok(out)
        })
    }

    fn finish_notifies(&self, updates: Vec<OutboxUpdate>, now: i64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(db_error)?;
            // Entries no longer in flight are left alone.
            let statement = tx
                .prepare_cached(
                    "UPDATE notify_outbox SET state = $2, next_attempt = COALESCE($3, next_attempt),
                            attempts = attempts + $4, last_error = COALESCE($5, last_error), lease_until = NULL,
                            updated_at = $6
                     WHERE id = $1 AND state = 'inflight'",
                )
                .await
                .map_err(db_error)?;
            for update in &updates {
                let OutboxChange { id, state, next_attempt, attempted, error } = update.change(now);
                let attempted = i64::from(attempted);
                tx.execute(&statement, &[&id, &state.as_str(), &next_attempt, &attempted, &error, &now])
                    .await
                    .map_err(db_error)?;
            }
            tx.commit().await.map_err(db_error)
        })
    }

    fn next_notify_due(&self) -> StoreFuture<'_, Option<i64>> {
        Box::pin(async move {
            let conn = self.conn().await?;
            let statement = conn
                .prepare_cached(
                    "SELECT MIN(CASE state WHEN 'pending' THEN next_attempt ELSE COALESCE(lease_until, 0) END)
                     FROM notify_outbox WHERE state IN ('pending','inflight')",
                )
                .await
                .map_err(db_error)?;
            conn.query_one(&statement, &[]).await.and_then(|r| r.try_get(0)).map_err(db_error)
        })
    }

    fn list_notify_outbox(&self) -> StoreFuture<'_, Vec<OutboxEntry>> {
        Box::pin(async move {
            let conn = self.conn().await?;
            let statement = conn
                .prepare_cached(&format!(
                    "SELECT {OUTBOX_COLUMNS} FROM notify_outbox WHERE state IN ('pending','inflight') ORDER BY id"
                ))
                .await
                .map_err(db_error)?;
            let rows = conn.query(&statement, &[]).await.map_err(db_error)?;
            outbox_entries(&rows)
        })
    }

    fn notify_outbox_counts(&self) -> StoreFuture<'_, OutboxCounts> {
        Box::pin(async move {
            let conn = self.conn().await?;
            let statement = conn
                .prepare_cached("SELECT state, COUNT(*) FROM notify_outbox GROUP BY state")
                .await
                .map_err(db_error)?;
            let mut counts = OutboxCounts::default();
            for row in conn.query(&statement, &[]).await.map_err(db_error)? {
                let (state, n): (String, i64) = (row.try_get(0).map_err(db_error)?, row.try_get(1).map_err(db_error)?);
                let n = u64::try_from(n).unwrap_or(0);
                match OutboxState::parse(&state) {
                    Some(OutboxState::Pending) => counts.pending = n,
                    Some(OutboxState::InFlight) => counts.inflight = n,
                    Some(OutboxState::Sent) => counts.sent = n,
                    Some(OutboxState::Dropped) => counts.dropped = n,
                    None => {}
                }
            }
            Ok(counts)
        })
    }
}
