//! The outbound side of the queue (SPEC 5): leases, delivery outcomes, retries.
//!
//! A deliverer leases due entries (`inflight` with `lease_until`), delivers, and records the
//! outcome. An entry whose lease runs out (its deliverer died) becomes due again: delivery is
//! at least once, never lost.

use rusqlite::{params, Connection, OptionalExtension};

use super::base::{db_error, delete_if_orphan, is_constraint_violation, row_to_queue_entry, QUEUE_COLUMNS};
use crate::error::{StoreError, StoreResult};
use crate::types::{Delivery, Envelope, LeasedEntry, NewMessage, QueueCounts, QueueUpdate, SpooledBody, StoredMessage};

pub(super) fn lease_due(conn: &Connection, now: i64, lease_until: i64, limit: usize) -> StoreResult<Vec<LeasedEntry>> {
    let ids: Vec<i64> = {
        let mut stmt = conn
            .prepare_cached(
                "UPDATE queue SET state = 'inflight', lease_until = ?2, updated_at = ?1
                 WHERE id IN (SELECT id FROM queue
                              WHERE held_domain IS NULL
                                AND ((state IN ('queued','deferred') AND next_attempt <= ?1)
                                     OR (state = 'inflight' AND (lease_until IS NULL OR lease_until <= ?1)))
                              ORDER BY next_attempt, id LIMIT ?3)
                 RETURNING id",
            )
            .map_err(db_error)?;
        let rows = stmt.query_map(params![now, lease_until, limit as i64], |r| r.get(0)).map_err(db_error)?;
        rows.collect::<Result<_, _>>().map_err(db_error)?
    };
    let mut out = Vec::with_capacity(ids.len());
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {QUEUE_COLUMNS}, q.delay_warned FROM queue q JOIN messages m ON m.id = q.message_id WHERE q.id = ?1"
        ))
        .map_err(db_error)?;
    for id in ids {
        let leased = stmt
            .query_row(params![id], |row| {
                Ok(LeasedEntry { entry: row_to_queue_entry(row)?, delay_warned: row.get::<_, i64>(13)? != 0 })
            })
            .optional()
            .map_err(db_error)?;
        out.extend(leased);
    }
    out.sort_by_key(|l| (l.entry.message_id, l.entry.id));
    Ok(out)
}

pub(super) fn renew_leases(conn: &Connection, ids: &[i64], lease_until: i64) -> StoreResult<()> {
    let mut stmt = conn
        .prepare_cached("UPDATE queue SET lease_until = ?2 WHERE id = ?1 AND state = 'inflight'")
        .map_err(db_error)?;
    for id in ids {
        stmt.execute(params![id, lease_until]).map_err(db_error)?;
    }
    Ok(())
}

pub(super) fn get_message(conn: &Connection, message_id: i64) -> StoreResult<Option<StoredMessage>> {
    conn.prepare_cached(
        "SELECT id, queue_id, sender, dsn_ret, dsn_envid, auth_param, authenticated_as, auth_results, body_8bit,
                smtputf8, received_at, data
         FROM messages WHERE id = ?1",
    )
    .and_then(|mut stmt| {
        stmt.query_row(params![message_id], |r| {
            Ok(StoredMessage {
                id: r.get(0)?,
                queue_id: r.get(1)?,
                envelope: Envelope {
                    sender: r.get(2)?,
                    dsn_ret: r.get(3)?,
                    dsn_envid: r.get(4)?,
                    auth_param: r.get(5)?,
                    authenticated_as: r.get(6)?,
                    auth_results: r.get(7)?,
                    body_8bit: r.get(8)?,
                    smtputf8: r.get(9)?,
                },
                received_at: r.get(10)?,
                data: r.get(11)?,
            })
        })
        .optional()
    })
    .map_err(db_error)
}

pub(super) fn record_delivery(conn: &Connection, updates: &[QueueUpdate], notices: &[NewMessage]) -> StoreResult<()> {
    let now = super::base::now();
    let mut touched = Vec::new();
    {
        let mut stmt = conn
            .prepare_cached(
                "UPDATE queue SET state = ?2, last_reply = COALESCE(?3, last_reply), next_attempt = ?4,
                        attempts = attempts + ?5, delay_warned = MAX(delay_warned, ?6), lease_until = NULL,
                        updated_at = ?7
                 WHERE id = ?1 AND state = 'inflight'
                 RETURNING message_id",
            )
            .map_err(db_error)?;
        for u in updates {
            crate::rules::check_outcome(u)?;
            let message_id: Option<i64> = stmt
                .query_row(
                    params![
                        u.id,
                        u.state.as_str(),
                        u.last_reply,
                        u.next_attempt,
                        i64::from(u.attempted),
                        i64::from(u.delay_warned),
                        now
                    ],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_error)?;
            if let Some(id) = message_id {
                if !touched.contains(&id) {
                    touched.push(id);
                }
            }
        }
    }
    for notice in notices {
        insert_message(conn, notice)?;
    }
    for message_id in touched {
        delete_if_orphan(conn, message_id)?;
    }
    Ok(())
}

/// Writes a message, its queue entries and its local mailbox entries inside the caller's
/// transaction; returns the message's row id. `commit_message` and the notices of
/// `record_delivery` both use it.
pub(super) fn insert_message(conn: &Connection, message: &NewMessage) -> StoreResult<i64> {
    let env = &message.envelope;
    let size = message.size() as i64;
    // A spooled message is written into a zero-filled blob piece by piece (below), so that
    // it never sits in memory whole.
    let inline = message.spooled.is_none().then_some(&message.data);
    conn.prepare_cached(
        "INSERT INTO messages (queue_id, sender, dsn_ret, dsn_envid, auth_param, authenticated_as, auth_results,
                               body_8bit, smtputf8, received_at, size, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, COALESCE(?12, zeroblob(?11)))",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            message.queue_id,
            env.sender,
            env.dsn_ret,
            env.dsn_envid,
            env.auth_param,
            env.authenticated_as,
            env.auth_results,
            env.body_8bit,
            env.smtputf8,
            message.received_at,
            size,
            inline
        ])
    })
    .map_err(|e| {
        if is_constraint_violation(&e) {
            StoreError::Conflict(format!("queue id {} in use", message.queue_id))
        } else {
            db_error(e)
        }
    })?;
    let message_id = conn.last_insert_rowid();
    if let Some(spooled) = &message.spooled {
        write_spooled(conn, message_id, &message.data, spooled)?;
    }
    if let Some(header) = message.header_section_to_keep() {
        conn.prepare_cached("INSERT INTO message_headers (message_id, header) VALUES (?1, ?2)")
            .and_then(|mut stmt| stmt.execute(params![message_id, header]))
            .map_err(db_error)?;
    }
    let now = message.received_at;
    for (delivery, dsn) in &message.deliveries {
        let entry = crate::rules::queue_entry_for(delivery);
        conn.prepare_cached(
            "INSERT INTO queue (message_id, recipient, notify, orcpt, state, attempts, next_attempt, last_reply,
                                created_at, updated_at, held_domain)
             VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, ?6, ?6, ?8)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                message_id,
                entry.recipient,
                dsn.notify,
                dsn.orcpt,
                entry.state.as_str(),
                now,
                entry.last_reply,
                entry.held_domain
            ])
        })
        .map_err(db_error)?;
        if let Delivery::Mailbox { account_id, folder, .. } = delivery {
            let (uid, modseq) = super::folder_rows::next_uid(conn, *account_id, folder.as_str())?;
            conn.prepare_cached(
                "INSERT INTO mailbox (account_id, folder, message_id, received_at, size, uid, modseq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut stmt| stmt.execute(params![account_id, folder.as_str(), message_id, now, size, uid, modseq]))
            .map_err(db_error)?;
            conn.prepare_cached(
                "UPDATE accounts SET used_bytes = used_bytes + ?2, message_count = message_count + 1 WHERE id = ?1",
            )
            .and_then(|mut stmt| stmt.execute(params![account_id, size]))
            .map_err(db_error)?;
        }
    }
    Ok(message_id)
}

/// Fills the zero blob of `message_id` with `head` and then the spool file's content.
fn write_spooled(conn: &Connection, message_id: i64, head: &[u8], spooled: &SpooledBody) -> StoreResult<()> {
    use std::os::unix::fs::FileExt;
    let mut blob =
        conn.blob_open(rusqlite::DatabaseName::Main, "messages", "data", message_id, false).map_err(db_error)?;
    blob.write_at(head, 0).map_err(db_error)?;
    let mut buffer = vec![0u8; 64 * 1024];
    let mut done = 0u64;
    while done < spooled.len {
        let want = (spooled.len - done).min(buffer.len() as u64) as usize;
        let n = spooled
            .file
            .read_at(&mut buffer[..want], done)
            .map_err(|e| StoreError::Unavailable(format!("cannot read the spooled message: {e}")))?;
        if n == 0 {
            return Err(StoreError::Unavailable("the spooled message is shorter than announced".into()));
        }
        let at = head.len() + done as usize;
        blob.write_at(&buffer[..n], at).map_err(db_error)?;
        done += n as u64;
    }
    Ok(())
}

pub(super) fn retry_queued(conn: &Connection, queue_id: Option<&str>, now: i64) -> StoreResult<usize> {
    match queue_id {
        None => conn
            .execute(
                "UPDATE queue SET next_attempt = ?1, updated_at = ?1
                 WHERE state IN ('queued','deferred') AND next_attempt > ?1",
                params![now],
            )
            .map_err(db_error),
        Some(queue_id) => {
            let message_id: Option<i64> = conn
                .query_row("SELECT id FROM messages WHERE queue_id = ?1", params![queue_id], |r| r.get(0))
                .optional()
                .map_err(db_error)?;
            let Some(message_id) = message_id else {
                return Err(StoreError::NotFound(format!("queue id {queue_id}")));
            };
            conn.execute(
                "UPDATE queue SET next_attempt = MIN(next_attempt, ?2), updated_at = ?2
                 WHERE message_id = ?1 AND state IN ('queued','deferred')",
                params![message_id, now],
            )
            .map_err(db_error)
        }
    }
}

pub(super) fn next_due(conn: &Connection) -> StoreResult<Option<i64>> {
    conn.query_row(
        "SELECT MIN(CASE WHEN state = 'inflight' THEN COALESCE(lease_until, 0) ELSE next_attempt END)
         FROM queue WHERE state IN ('queued','deferred','inflight') AND held_domain IS NULL",
        [],
        |r| r.get(0),
    )
    .map_err(db_error)
}

pub(super) fn queue_counts(conn: &Connection) -> StoreResult<QueueCounts> {
    let mut counts = QueueCounts::default();
    let mut stmt = conn
        .prepare_cached(
            "SELECT state, COUNT(*) FROM queue WHERE state IN ('queued','deferred','inflight') GROUP BY state",
        )
        .map_err(db_error)?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))).map_err(db_error)?;
    for row in rows {
        let (state, n) = row.map_err(db_error)?;
        let n = n.max(0) as u64;
        match state.as_str() {
            "queued" => counts.queued = n,
            "deferred" => counts.deferred = n,
            "inflight" => counts.inflight = n,
            _ => {}
        }
    }
    Ok(counts)
}
