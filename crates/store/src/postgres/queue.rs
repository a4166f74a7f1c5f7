//! Messages and the queue in PostgreSQL, with SQLite's semantics (`sqlite/queue.rs`,
//! `outbound.rs`, `held.rs`): the group commit of received messages (`commit`), outbound
//! leases, outcomes and retries (SPEC 5), held mail (RFC 2645).
//!
//! Several nodes share the queue (SPEC 5, 11): a node leases entries with `SELECT ... FOR
//! UPDATE SKIP LOCKED`, so two nodes leasing at once take different entries (a row another
//! node is leasing is skipped, one it has leased no longer qualifies), and a lease that
//! runs out (its node died) makes the entry due again: no entry is lost, and none is
//! delivered twice while its lease runs.

use tokio_postgres::types::ToSql;

use super::base::{db_error, now};
use super::messages::{delete_orphans, insert_messages, AccountDeltas};
use super::pool::PostgresStore;
use super::rows::{to_queue_entry, QUEUE_COLUMNS};
use crate::error::{StoreError, StoreFuture, StoreResult};
use crate::interface::QueueStore;
use crate::types::*;

/// Entries a lease may take: pending ones, and in-flight ones whose lease ran out (their
/// deliverer died) or never had one. `$1` is now.
const LEASABLE: &str =
    "(state IN ('queued','deferred') OR (state = 'inflight' AND (lease_until IS NULL OR lease_until <= $1)))";

impl QueueStore for PostgresStore {
    fn commit_message(&self, message: NewMessage) -> StoreFuture<'_, CommittedMessage> {
        Box::pin(async move {
            let committed = self.committer.commit(vec![message]).await?;
            committed.into_iter().next().ok_or_else(|| StoreError::Unavailable("the message was not committed".into()))
        })
    }

    fn commit_messages(&self, messages: Vec<NewMessage>) -> StoreFuture<'_, Vec<CommittedMessage>> {
        Box::pin(self.committer.commit(messages))
    }

    fn list_queue(&self) -> StoreFuture<'_, Vec<QueueEntry>> {
        Box::pin(async move {
            let conn = self.conn().await?;
            let rows = conn
                .query(
                    &format!(
                        "SELECT {QUEUE_COLUMNS} FROM queue q JOIN messages m ON m.id = q.message_id
                         WHERE q.state NOT IN ('delivered','bounced') ORDER BY q.next_attempt, q.id"
                    ),
                    &[],
                )
                .await
                .map_err(db_error)?;
            rows.iter().map(to_queue_entry).collect()
        })
    }

    fn get_queued_message(&self, queue_id: &str) -> StoreFuture<'_, Option<(Vec<QueueEntry>, Vec<u8>)>> {
        let queue_id = queue_id.to_string();
        Box::pin(async move {
            let conn = self.conn().await?;
            let Some(row) = conn
                .query_opt("SELECT data FROM messages WHERE queue_id = $1", &[&queue_id])
                .await
                .map_err(db_error)?
            else {
                return Ok(None);
            };
            let data: Vec<u8> = row.try_get(0).map_err(db_error)?;
            drop(row);
            let rows = conn
                .query(
                    &format!(
                        "SELECT {QUEUE_COLUMNS} FROM queue q JOIN messages m ON m.id = q.message_id
                         WHERE m.queue_id = $1 ORDER BY q.id"
                    ),
                    &[&queue_id],
                )
                .await
                .map_err(db_error)?;
            let entries = rows.iter().map(to_queue_entry).collect::<StoreResult<Vec<_>>>()?;
            Ok(Some((entries, data)))
        })
    }

    fn delete_queued_message(&self, queue_id: &str) -> StoreFuture<'_, usize> {
        let queue_id = queue_id.to_string();
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(db_error)?;
            let Some(message_id) = message_id_of(&tx, &queue_id).await? else {
                return Err(StoreError::NotFound(format!("queue id {queue_id}")));
            };
            let n = tx
                .execute(
                    "DELETE FROM queue WHERE message_id = $1 AND state NOT IN ('delivered','bounced')",
                    &[&message_id],
                )
                .await
                .map_err(db_error)?;
            delete_orphans(&tx, vec![message_id]).await?;
            tx.commit().await.map_err(db_error)?;
            Ok(n as usize)
        })
    }

    fn lease_due(&self, now: i64, lease_until: i64, limit: usize) -> StoreFuture<'_, Vec<LeasedEntry>> {
        Box::pin(async move {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let conn = self.conn().await?;
            lease(
                &conn,
                "held_domain IS NULL
                 AND ((state IN ('queued','deferred') AND next_attempt <= $1)
                      OR (state = 'inflight' AND (lease_until IS NULL OR lease_until <= $1)))
                 ORDER BY next_attempt, id LIMIT $3",
                &[&now, &lease_until, &limit],
            )
            .await
        })
    }

    fn renew_leases(&self, ids: Vec<i64>, lease_until: i64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let conn = self.conn().await?;
            // One statement that locks the rows in ascending id, the order `record_delivery`
            // locks them in: renewing in any other order deadlocks with the same node's
            // outcomes, and a renewal lost that way lets the lease run out under a live
            // delivery (another node then sends the message again).
            let statement = conn
                .prepare_cached(
                    "UPDATE queue SET lease_until = $2
                     WHERE id IN (SELECT id FROM queue WHERE id = ANY($1) AND state = 'inflight'
                                  ORDER BY id FOR UPDATE)",
                )
                .await
                .map_err(db_error)?;
            conn.execute(&statement, &[&ids, &lease_until]).await.map_err(db_error)?;
            Ok(())
        })
    }

    fn get_message(&self, message_id: i64) -> StoreFuture<'_, Option<StoredMessage>> {
        Box::pin(async move {
            let conn = self.conn().await?;
            let statement = conn
                .prepare_cached(
                    "SELECT id, queue_id, sender, dsn_ret, dsn_envid, auth_param, authenticated_as, auth_results,
                            body_8bit, smtputf8, received_at, data
                     FROM messages WHERE id = $1",
                )
                .await
                .map_err(db_error)?;
            let Some(r) = conn.query_opt(&statement, &[&message_id]).await.map_err(db_error)? else {
                return Ok(None);
            };
            Ok(Some(StoredMessage {
                id: r.try_get(0).map_err(db_error)?,
                queue_id: r.try_get(1).map_err(db_error)?,
                envelope: Envelope {
                    sender: r.try_get(2).map_err(db_error)?,
                    dsn_ret: r.try_get(3).map_err(db_error)?,
                    dsn_envid: r.try_get(4).map_err(db_error)?,
                    auth_param: r.try_get(5).map_err(db_error)?,
                    authenticated_as: r.try_get(6).map_err(db_error)?,
                    auth_results: r.try_get(7).map_err(db_error)?,
                    body_8bit: r.try_get(8).map_err(db_error)?,
                    smtputf8: r.try_get(9).map_err(db_error)?,
                },
                received_at: r.try_get(10).map_err(db_error)?,
                data: r.try_get(11).map_err(db_error)?,
            }))
        })
    }

    fn record_delivery(&self, updates: Vec<QueueUpdate>, notices: Vec<NewMessage>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            for update in &updates {
                crate::rules::check_outcome(update)?;
            }
            // In ascending id: the order every transaction locks queue rows in.
            let mut updates = updates;
            updates.sort_by_key(|u| u.id);
            let now = now();
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(db_error)?;
            // Only an entry still in flight takes an outcome; the last reply is kept when
            // none is given, and a delay warning once sent stays sent.
            let statement = tx
                .prepare_cached(
                    "UPDATE queue SET state = $2, last_reply = COALESCE($3, last_reply), next_attempt = $4,
                            attempts = attempts + $5, delay_warned = delay_warned OR $6, lease_until = NULL,
                            updated_at = $7
                     WHERE id = $1 AND state = 'inflight'
                     RETURNING message_id",
                )
                .await
                .map_err(db_error)?;
            let states: Vec<&str> = updates.iter().map(|u| u.state.as_str()).collect();
            let attempted: Vec<i64> = updates.iter().map(|u| i64::from(u.attempted)).collect();
            let recorded = updates.iter().enumerate().map(|(i, u)| {
                let params: [&(dyn ToSql + Sync); 7] =
                    [&u.id, &states[i], &u.last_reply, &u.next_attempt, &attempted[i], &u.delay_warned, &now];
                let statement = &statement;
                let tx = &tx;
                async move { tx.query_opt(statement, &params).await }
            });
            let mut touched = Vec::new();
            for row in futures_util::future::join_all(recorded).await {
                if let Some(row) = row.map_err(db_error)? {
                    touched.push(row.try_get::<_, i64>(0).map_err(db_error)?);
                }
            }
            let mut deltas = AccountDeltas::default();
            insert_messages(&tx, &notices, &mut deltas).await?;
            deltas.apply(&tx).await?;
            delete_orphans(&tx, touched).await?;
            tx.commit().await.map_err(db_error)
        })
    }

    fn retry_queued(&self, queue_id: Option<&str>, now: i64) -> StoreFuture<'_, usize> {
        let queue_id = queue_id.map(str::to_string);
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let Some(queue_id) = queue_id else {
                let n = conn
                    .execute(
                        "UPDATE queue SET next_attempt = $1, updated_at = $1
                         WHERE state IN ('queued','deferred') AND next_attempt > $1",
                        &[&now],
                    )
                    .await
                    .map_err(db_error)?;
                return Ok(n as usize);
            };
            let tx = conn.transaction().await.map_err(db_error)?;
            let Some(message_id) = message_id_of(&tx, &queue_id).await? else {
                return Err(StoreError::NotFound(format!("queue id {queue_id}")));
            };
            let n = tx
                .execute(
                    "UPDATE queue SET next_attempt = LEAST(next_attempt, $2), updated_at = $2
                     WHERE message_id = $1 AND state IN ('queued','deferred')",
                    &[&message_id, &now],
                )
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            Ok(n as usize)
        })
    }

    fn next_due(&self) -> StoreFuture<'_, Option<i64>> {
        Box::pin(async move {
            let conn = self.conn().await?;
            let statement = conn
                .prepare_cached(
                    "SELECT MIN(CASE WHEN state = 'inflight' THEN COALESCE(lease_until, 0) ELSE next_attempt END)
                     FROM queue WHERE state IN ('queued','deferred','inflight') AND held_domain IS NULL",
                )
                .await
                .map_err(db_error)?;
            conn.query_one(&statement, &[]).await.and_then(|r| r.try_get(0)).map_err(db_error)
        })
    }

    fn queue_counts(&self) -> StoreFuture<'_, QueueCounts> {
        Box::pin(async move {
            let conn = self.conn().await?;
            let rows = conn
                .query(
                    "SELECT state, COUNT(*) FROM queue WHERE state IN ('queued','deferred','inflight') GROUP BY state",
                    &[],
                )
                .await
                .map_err(db_error)?;
            let mut counts = QueueCounts::default();
            for row in rows {
                let state: String = row.try_get(0).map_err(db_error)?;
                let n = row.try_get::<_, i64>(1).map_err(db_error)?.max(0) as u64;
                match state.as_str() {
                    "queued" => counts.queued = n,
                    "deferred" => counts.deferred = n,
                    "inflight" => counts.inflight = n,
                    _ => {}
                }
            }
            Ok(counts)
        })
    }

    fn count_held(&self, domains: &[String]) -> StoreFuture<'_, usize> {
        let domains = domains.to_vec();
        Box::pin(async move {
            if domains.is_empty() {
                return Ok(0);
            }
            let conn = self.conn().await?;
            let sql = format!(
                "SELECT COUNT(*) FROM queue WHERE held_domain IN ({}) AND state IN ('queued','deferred','inflight')",
                placeholders(domains.len(), 1)
            );
            let params: Vec<&(dyn ToSql + Sync)> = domains.iter().map(|d| d as &(dyn ToSql + Sync)).collect();
            let n: i64 = conn.query_one(&sql, &params).await.and_then(|r| r.try_get(0)).map_err(db_error)?;
            Ok(n.max(0) as usize)
        })
    }

    fn lease_held(&self, domains: &[String], now: i64, lease_until: i64) -> StoreFuture<'_, Vec<LeasedEntry>> {
        let domains = domains.to_vec();
        Box::pin(async move {
            if domains.is_empty() {
                return Ok(Vec::new());
            }
            let conn = self.conn().await?;
            let condition = format!("held_domain IN ({}) AND {LEASABLE}", placeholders(domains.len(), 3));
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&now, &lease_until];
            params.extend(domains.iter().map(|d| d as &(dyn ToSql + Sync)));
            lease(&conn, &condition, &params).await
        })
    }

    fn lease_expired_held(&self, created_before: i64, now: i64, lease_until: i64) -> StoreFuture<'_, Vec<LeasedEntry>> {
        Box::pin(async move {
            let conn = self.conn().await?;
            let condition = format!("held_domain IS NOT NULL AND created_at < $3 AND {LEASABLE}");
            lease(&conn, &condition, &[&now, &lease_until, &created_before]).await
        })
    }
}

/// Marks the entries `pick` selects (SQL over `queue`, after WHERE: a condition, perhaps
/// with ORDER BY and LIMIT; `$1` is now, `$2` the lease's end) in flight until `$2`, and
/// returns them, by message. One statement, so no explicit transaction: its row locks
/// (`FOR UPDATE SKIP LOCKED`) make two nodes leasing at once take different entries; an
/// entry one node has just leased no longer matches `pick` when another reaches it
/// (PostgreSQL checks the newest version of a row it locks, at READ COMMITTED).
async fn lease(
    client: &deadpool_postgres::Object,
    pick: &str,
    params: &[&(dyn ToSql + Sync)],
) -> StoreResult<Vec<LeasedEntry>> {
    let sql = format!(
        "UPDATE queue q SET state = 'inflight', lease_until = $2, updated_at = $1
         FROM messages m
         WHERE m.id = q.message_id
           AND q.id IN (SELECT id FROM queue WHERE {pick} FOR UPDATE SKIP LOCKED)
         RETURNING {QUEUE_COLUMNS}, q.delay_warned"
    );
    let statement = client.prepare_cached(&sql).await.map_err(db_error)?;
    let rows = client.query(&statement, params).await.map_err(db_error)?;
    let mut leased = rows
        .iter()
        .map(|row| Ok(LeasedEntry { entry: to_queue_entry(row)?, delay_warned: row.try_get(13).map_err(db_error)? }))
        .collect::<StoreResult<Vec<_>>>()?;
    leased.sort_by_key(|l| (l.entry.message_id, l.entry.id));
    Ok(leased)
}

async fn message_id_of(tx: &deadpool_postgres::Transaction<'_>, queue_id: &str) -> StoreResult<Option<i64>> {
    let row = tx.query_opt("SELECT id FROM messages WHERE queue_id = $1", &[&queue_id]).await.map_err(db_error)?;
    row.map(|r| r.try_get(0)).transpose().map_err(db_error)
}

/// `$first, $first+1, ...`: `n` parameters.
fn placeholders(n: usize, first: usize) -> String {
    (0..n).map(|i| format!("${}", first + i)).collect::<Vec<_>>().join(",")
}
