//! Delivery notifications in SQLite (SPEC 8.3): events, records in the Tracking folder, and
//! the NOTIFY outbox. The rules (what is tracked, where a record goes) are in
//! `crate::tracking`; this is the storage.

use super::writer::SqliteStore;
use crate::error::StoreFuture;
use crate::interface::TrackingStore;
use crate::types::*;
use std::ops::Range;

use rusqlite::{params, Connection, OptionalExtension, Row};
use vouchmail_proto::messenger::tracking::Record;

use super::base::{db_error, HEADER_SCAN_BYTES};
use crate::error::StoreResult;
use crate::tracking::{
    folder_route, plan_record, NewTrackingEvent, NotifyStored, OutboxChange, OutboxCounts, OutboxEntry, OutboxState,
    OutboxUpdate, RecordPlan, StoredTrackingRecord, TrackedMessage, TrackingOutcome, TrackingRoute, TrackingSubject,
};
use crate::types::TrackingKind;

fn find_subject(conn: &Connection, recipient: &str, subject: &TrackingSubject) -> StoreResult<Option<TrackedMessage>> {
    match subject {
        TrackingSubject::Mailbox(id) => {
            let found: Option<(String, String, String, Vec<u8>)> = conn
                .prepare_cached(
                    "SELECT m.queue_id, m.sender, m.auth_results, COALESCE(h.header, substr(m.data, 1, ?3))
                     FROM mailbox b JOIN messages m ON m.id = b.message_id JOIN accounts a ON a.id = b.account_id
                          LEFT JOIN message_headers h ON h.message_id = b.message_id
                     WHERE a.address = ?1 AND b.id = ?2",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(params![recipient, id, HEADER_SCAN_BYTES], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                    .optional()
                })
                .map_err(db_error)?;
            Ok(found.map(|(queue_id, sender, auth_results, head)| {
                TrackedMessage::from_stored(queue_id, sender, &auth_results, &head)
            }))
        }
        TrackingSubject::MessageId(message_id) => {
            // Downloaded before (the message may be deleted since): the first event says
            // which message it was and whether it is tracked.
            let seen: Option<(String, String, bool)> = conn
                .prepare_cached(
                    "SELECT queue_id, sender, tracked FROM tracking_events
                     WHERE recipient = ?1 AND message_id = ?2 ORDER BY id LIMIT 1",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(params![recipient, message_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional()
                })
                .map_err(db_error)?;
            if let Some((queue_id, sender, tracked)) = seen {
                return Ok(Some(TrackedMessage { queue_id, message_id: message_id.clone(), sender, tracked }));
            }
            // Still in the mailbox, never downloaded.
            let mut stmt = conn
                .prepare_cached(
                    "SELECT m.queue_id, m.sender, m.auth_results, COALESCE(h.header, substr(m.data, 1, ?2))
                     FROM mailbox b JOIN messages m ON m.id = b.message_id JOIN accounts a ON a.id = b.account_id
                          LEFT JOIN message_headers h ON h.message_id = b.message_id
                     WHERE a.address = ?1 ORDER BY b.id",
                )
                .map_err(db_error)?;
            let mut rows = stmt.query(params![recipient, HEADER_SCAN_BYTES]).map_err(db_error)?;
            while let Some(row) = rows.next().map_err(db_error)? {
                let head: Vec<u8> = row.get(3).map_err(db_error)?;
                let (queue_id, sender, auth_results): (String, String, String) =
                    (row.get(0).map_err(db_error)?, row.get(1).map_err(db_error)?, row.get(2).map_err(db_error)?);
                let found = TrackedMessage::from_stored(queue_id, sender, &auth_results, &head);
                if found.message_id == *message_id {
                    return Ok(Some(found));
                }
            }
            Ok(None)
        }
        TrackingSubject::Read(message) => Ok(Some(message.clone())),
    }
}

/// SPEC 8.3: records the event once per message and recipient, then stores its record
/// where [`plan_record`] says, in the caller's transaction.
fn track_event(conn: &Connection, event: &NewTrackingEvent) -> StoreResult<TrackingOutcome> {
    let found = find_subject(conn, &event.recipient.to_lowercase(), &event.subject)?;
    track_found(conn, event, found.as_ref())
}

/// The mailbox entries' messages looked up on a read connection, before the write: the
/// single writer's time is every writer's (an IMAP FETCH's batch of `downloaded` events
/// spent half of it here). An entry read here and expunged before the write is still
/// recorded, as it would have been a moment earlier: the download happened. Events by
/// Message-ID (RECEIPT) are looked up in the write, where the batch's own events count;
/// messages the caller read ([`TrackingSubject::Read`]) need no lookup.
fn find_mailbox_subjects(conn: &Connection, events: &[NewTrackingEvent]) -> StoreResult<Vec<Found>> {
    events
        .iter()
        .map(|event| match &event.subject {
            TrackingSubject::Mailbox(_) => {
                find_subject(conn, &event.recipient.to_lowercase(), &event.subject).map(Found::Looked)
            }
            TrackingSubject::MessageId(_) | TrackingSubject::Read(_) => Ok(Found::InWrite),
        })
        .collect()
}

/// An event's message as [`find_mailbox_subjects`] left it.
enum Found {
    Looked(Option<TrackedMessage>),
    InWrite,
}

/// An event, once per (message, recipient, event): the writer's statement per download.
pub(super) const INSERT_EVENT: &str =
    "INSERT OR IGNORE INTO tracking_events (occurred_at, queue_id, message_id, sender, recipient, event, tracked)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// [`track_event`] once the event's message is known (None: no such message).
fn track_found(
    conn: &Connection,
    event: &NewTrackingEvent,
    found: Option<&TrackedMessage>,
) -> StoreResult<TrackingOutcome> {
    let recipient = event.recipient.to_lowercase();
    let Some(subject) = found else {
        return Ok(TrackingOutcome::NotFound);
    };
    let inserted = conn
        .prepare_cached(INSERT_EVENT)
        .and_then(|mut stmt| {
            stmt.execute(params![
                event.at,
                subject.queue_id,
                subject.message_id,
                subject.sender,
                recipient,
                event.kind.as_str(),
                subject.tracked
            ])
        })
        .map_err(db_error)?;
    if inserted == 0 {
        return Ok(TrackingOutcome::Duplicate);
    }
    let is_local = |domain: &str| -> StoreResult<bool> {
        conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM domains WHERE name = ?1)")
            .and_then(|mut stmt| stmt.query_row(params![domain], |r| r.get(0)))
            .map_err(db_error)
    };
    let (record, route) = match plan_record(event, subject, is_local)? {
        RecordPlan::None(route) => return Ok(TrackingOutcome::Recorded { record: None, route }),
        RecordPlan::Folder(record) => {
            let route = folder_route(&record, insert_record(conn, &record, event.at)?);
            (record, route)
        }
        RecordPlan::Outbox { record, line, domain } => {
            conn.prepare_cached(
                "INSERT OR IGNORE INTO notify_outbox (record, domain, message_id, recipient, event, state, attempts,
                                                      next_attempt, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?6, ?6)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![line, domain, record.message_id, record.recipient, event.kind.as_str(), event.at])
            })
            .map_err(db_error)?;
            (record, TrackingRoute::Outbox { domain })
        }
    };
    Ok(TrackingOutcome::Recorded { record: Some(record), route })
}

/// Into the Tracking folder of the record's sender, once per (message, recipient, event).
pub(super) fn insert_record(conn: &Connection, record: &Record, now: i64) -> StoreResult<NotifyStored> {
    let owner = record.sender.to_lowercase();
    let exists: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM accounts WHERE address = ?1)")
        .and_then(|mut stmt| stmt.query_row(params![owner], |r| r.get(0)))
        .map_err(db_error)?;
    if !exists {
        return Ok(NotifyStored::UnknownSender);
    }
    let kind: TrackingKind = record.event.into();
    let n = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO tracking_records (owner, occurred_at, message_id, sender, recipient, event,
                                                     reporting_server, stored_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                owner,
                record.timestamp,
                record.message_id,
                record.sender,
                record.recipient.to_lowercase(),
                kind.as_str(),
                record.reporting_server,
                now
            ])
        })
        .map_err(db_error)?;
    Ok(if n == 1 { NotifyStored::Stored } else { NotifyStored::Duplicate })
}

fn row_to_stored(row: &Row<'_>) -> rusqlite::Result<Option<StoredTrackingRecord>> {
    let event: String = row.get(6)?;
    let Some(kind) = TrackingKind::parse(&event) else { return Ok(None) };
    Ok(Some(StoredTrackingRecord {
        id: row.get(0)?,
        owner: row.get(1)?,
        record: Record {
            timestamp: row.get(2)?,
            message_id: row.get(3)?,
            sender: row.get(4)?,
            recipient: row.get(5)?,
            event: kind.into(),
            reporting_server: row.get(7)?,
        },
        stored_at: row.get(8)?,
    }))
}

/// The owner's records at or after `since`, oldest first: the newest `limit` of them.
pub(super) fn records(
    conn: &Connection,
    owner: &str,
    since: Option<i64>,
    limit: usize,
) -> StoreResult<Vec<StoredTrackingRecord>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, owner, occurred_at, message_id, sender, recipient, event, reporting_server, stored_at
             FROM tracking_records WHERE owner = ?1 AND occurred_at >= ?2
             ORDER BY occurred_at DESC, id DESC LIMIT ?3",
        )
        .map_err(db_error)?;
    let rows = stmt.query_map(params![owner, since.unwrap_or(i64::MIN), limit], row_to_stored).map_err(db_error)?;
    let mut out = Vec::new();
    for row in rows {
        out.extend(row.map_err(db_error)?);
    }
    out.reverse();
    Ok(out)
}

/// How many of the owner's records about recipients in `domain` were stored in
/// `[from, until)`. The domain is matched as the whole part after the recipient's last `@`.
pub(super) fn count_records(conn: &Connection, owner: &str, domain: &str, from: i64, until: i64) -> StoreResult<u64> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM tracking_records
             WHERE owner = ?1 AND stored_at >= ?3 AND stored_at < ?4
               AND length(recipient) > length(?2)
               AND substr(recipient, length(recipient) - length(?2) + 1) = ?2
               AND substr(recipient, length(recipient) - length(?2), 1) = '@'",
        )
        .and_then(|mut stmt| stmt.query_row(params![owner, domain, from, until], |r| r.get(0)))
        .map_err(db_error)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

const OUTBOX_COLUMNS: &str = "id, record, domain, state, attempts, next_attempt, last_error, created_at";

fn row_to_outbox(row: &Row<'_>) -> rusqlite::Result<OutboxEntry> {
    let state: String = row.get(3)?;
    Ok(OutboxEntry {
        id: row.get(0)?,
        record: row.get(1)?,
        domain: row.get(2)?,
        state: OutboxState::parse(&state).unwrap_or(OutboxState::Pending),
        attempts: u32::try_from(row.get::<_, i64>(4)?).unwrap_or(u32::MAX),
        next_attempt: row.get(5)?,
        last_error: row.get(6)?,
        created_at: row.get(7)?,
    })
}

/// Leases up to `limit` due entries (pending and due, or in flight with an expired lease:
/// their sender died) until `lease_until`, oldest due first.
pub(super) fn lease(conn: &Connection, now: i64, lease_until: i64, limit: usize) -> StoreResult<Vec<OutboxEntry>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare_cached(&format!(
            "UPDATE notify_outbox SET state = 'inflight', lease_until = ?2, updated_at = ?1
             WHERE id IN (SELECT id FROM notify_outbox
                          WHERE (state = 'pending' AND next_attempt <= ?1)
                             OR (state = 'inflight' AND (lease_until IS NULL OR lease_until <= ?1))
                          ORDER BY next_attempt, id LIMIT ?3)
             RETURNING {OUTBOX_COLUMNS}"
        ))
        .map_err(db_error)?;
    let rows = stmt.query_map(params![now, lease_until, limit], row_to_outbox).map_err(db_error)?;
    let mut out = rows.collect::<Result<Vec<_>, _>>().map_err(db_error)?;
    out.sort_by_key(|e| (e.next_attempt, e.id));
    Ok(out)
}

/// Records the outcomes of leased entries; entries no longer in flight are left alone.
pub(super) fn finish(conn: &Connection, updates: &[OutboxUpdate], now: i64) -> StoreResult<()> {
    for update in updates {
        let OutboxChange { id, state, next_attempt, attempted, error } = update.change(now);
        conn.prepare_cached(
            "UPDATE notify_outbox SET state = ?2, next_attempt = COALESCE(?3, next_attempt), attempts = attempts + ?4,
                    last_error = COALESCE(?5, last_error), lease_until = NULL, updated_at = ?6
             WHERE id = ?1 AND state = 'inflight'",
        )
        .and_then(|mut stmt| stmt.execute(params![id, state.as_str(), next_attempt, i64::from(attempted), error, now]))
        .map_err(db_error)?;
    }
    Ok(())
}

/// The earliest time a pending entry is due, or an in-flight lease ends.
pub(super) fn next_due(conn: &Connection) -> StoreResult<Option<i64>> {
    conn.query_row(
        "SELECT MIN(CASE state WHEN 'pending' THEN next_attempt ELSE COALESCE(lease_until, 0) END)
         FROM notify_outbox WHERE state IN ('pending','inflight')",
        [],
        |r| r.get(0),
    )
    .map_err(db_error)
}

/// Entries still to send (pending and in flight), oldest first.
pub(super) fn pending(conn: &Connection) -> StoreResult<Vec<OutboxEntry>> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM notify_outbox WHERE state IN ('pending','inflight') ORDER BY id"
        ))
        .map_err(db_error)?;
    let rows = stmt.query_map([], row_to_outbox).map_err(db_error)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
}

pub(super) fn counts(conn: &Connection) -> StoreResult<OutboxCounts> {
    let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM notify_outbox GROUP BY state").map_err(db_error)?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))).map_err(db_error)?;
    let mut counts = OutboxCounts::default();
    for row in rows {
        let (state, n) = row.map_err(db_error)?;
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
}

impl TrackingStore for SqliteStore {
    fn list_tracking_events(&self, after_id: i64, limit: usize) -> StoreFuture<'_, Vec<TrackingEvent>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, occurred_at, queue_id, message_id, sender, recipient, event FROM tracking_events
                     WHERE id > ?1 ORDER BY id LIMIT ?2",
                )
                .map_err(db_error)?;
            let rows = stmt
                .query_map(params![after_id, limit], |r| {
                    let kind: String = r.get(6)?;
                    Ok(TrackingEvent {
                        id: r.get(0)?,
                        occurred_at: r.get(1)?,
                        queue_id: r.get(2)?,
                        message_id: r.get(3)?,
                        sender: r.get(4)?,
                        recipient: r.get(5)?,
                        kind: TrackingKind::parse(&kind).unwrap_or(TrackingKind::Downloaded),
                    })
                })
                .map_err(db_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
        })
    }

    fn track_events(&self, events: Vec<NewTrackingEvent>) -> StoreFuture<'_, Vec<TrackingOutcome>> {
        Box::pin(async move {
            let (events, found) = if events.iter().any(|e| matches!(e.subject, TrackingSubject::Mailbox(_))) {
                self.read(move |conn| {
                    let found = find_mailbox_subjects(conn, &events)?;
                    Ok((events, found))
                })
                .await?
            } else {
                // Nothing to look up first (an IMAP FETCH's batch, a RECEIPT): no read.
                let found = events.iter().map(|_| Found::InWrite).collect();
                (events, found)
            };
            self.write(move |conn| {
                events
                    .iter()
                    .zip(found)
                    .map(|(event, found)| match found {
                        Found::Looked(found) => track_found(conn, event, found.as_ref()),
                        Found::InWrite => track_event(conn, event),
                    })
                    .collect()
            })
            .await
        })
    }

    fn store_notified_record(
        &self,
        record: vouchmail_proto::messenger::tracking::Record,
        now: i64,
    ) -> StoreFuture<'_, NotifyStored> {
        self.write(move |conn| insert_record(conn, &record, now))
    }

    fn count_tracking_records(&self, owner: &str, recipient_domain: &str, stored: Range<i64>) -> StoreFuture<'_, u64> {
        let (owner, domain) = (owner.to_lowercase(), recipient_domain.to_lowercase());
        self.read(move |conn| count_records(conn, &owner, &domain, stored.start, stored.end))
    }

    fn tracking_records(
        &self,
        owner: &str,
        since: Option<i64>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<StoredTrackingRecord>> {
        let owner = owner.to_lowercase();
        self.read(move |conn| records(conn, &owner, since, limit))
    }

    fn lease_notifies(&self, now: i64, lease_until: i64, limit: usize) -> StoreFuture<'_, Vec<OutboxEntry>> {
        self.write(move |conn| lease(conn, now, lease_until, limit))
    }

    fn finish_notifies(&self, updates: Vec<OutboxUpdate>, now: i64) -> StoreFuture<'_, ()> {
        self.write(move |conn| finish(conn, &updates, now))
    }

    fn next_notify_due(&self) -> StoreFuture<'_, Option<i64>> {
        self.read(next_due)
    }

    fn list_notify_outbox(&self) -> StoreFuture<'_, Vec<OutboxEntry>> {
        self.read(pending)
    }

    fn notify_outbox_counts(&self) -> StoreFuture<'_, OutboxCounts> {
        self.read(counts)
    }
}
