//! Messages and the queue in SQLite: the commit of a received message, outbound
//! leases and outcomes (`outbound`), held mail (`held`).

use rusqlite::{params, OptionalExtension};

use super::base::*;
use super::writer::SqliteStore;
use crate::error::{StoreError, StoreFuture};
use crate::interface::QueueStore;
use crate::types::*;

impl QueueStore for SqliteStore {
    fn commit_message(&self, message: NewMessage) -> StoreFuture<'_, CommittedMessage> {
        self.write(move |conn| {
            let message_id = super::outbound::insert_message(conn, &message)?;
            Ok(CommittedMessage { message_id, queue_id: message.queue_id })
        })
    }

    fn commit_messages(&self, messages: Vec<NewMessage>) -> StoreFuture<'_, Vec<CommittedMessage>> {
        self.write(move |conn| {
            let mut committed = Vec::with_capacity(messages.len());
            for message in messages {
                let message_id = super::outbound::insert_message(conn, &message)?;
                committed.push(CommittedMessage { message_id, queue_id: message.queue_id });
            }
            Ok(committed)
        })
    }

    fn list_queue(&self) -> StoreFuture<'_, Vec<QueueEntry>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {QUEUE_COLUMNS} FROM queue q JOIN messages m ON m.id = q.message_id
                     WHERE q.state NOT IN ('delivered','bounced') ORDER BY q.next_attempt, q.id"
                ))
                .map_err(db_error)?;
            let rows = stmt.query_map([], row_to_queue_entry).map_err(db_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
        })
    }

    fn get_queued_message(&self, queue_id: &str) -> StoreFuture<'_, Option<(Vec<QueueEntry>, Vec<u8>)>> {
        let queue_id = queue_id.to_string();
        self.read(move |conn| {
            let data: Option<Vec<u8>> = conn
                .query_row("SELECT data FROM messages WHERE queue_id = ?1", params![queue_id], |r| r.get(0))
                .optional()
                .map_err(db_error)?;
            let Some(data) = data else { return Ok(None) };
            let mut stmt = conn
                .prepare(&format!("SELECT {QUEUE_COLUMNS} FROM queue q JOIN messages m ON m.id = q.message_id WHERE m.queue_id = ?1 ORDER BY q.id"))
                .map_err(db_error)?;
            let rows = stmt.query_map(params![queue_id], row_to_queue_entry).map_err(db_error)?;
            let entries = rows.collect::<Result<Vec<_>, _>>().map_err(db_error)?;
            Ok(Some((entries, data)))
        })
    }

    fn delete_queued_message(&self, queue_id: &str) -> StoreFuture<'_, usize> {
        let queue_id = queue_id.to_string();
        self.write(move |conn| {
            let message_id: Option<i64> = conn
                .query_row("SELECT id FROM messages WHERE queue_id = ?1", params![queue_id], |r| r.get(0))
                .optional()
                .map_err(db_error)?;
            let Some(message_id) = message_id else { return Err(StoreError::NotFound(format!("queue id {queue_id}"))) };
            let n = conn
                .execute(
                    "DELETE FROM queue WHERE message_id = ?1 AND state NOT IN ('delivered','bounced')",
                    params![message_id],
                )
                .map_err(db_error)?;
            delete_if_orphan(conn, message_id)?;
            Ok(n)
        })
    }

    fn lease_due(&self, now: i64, lease_until: i64, limit: usize) -> StoreFuture<'_, Vec<crate::types::LeasedEntry>> {
        self.write(move |conn| super::outbound::lease_due(conn, now, lease_until, limit))
    }

    fn renew_leases(&self, ids: Vec<i64>, lease_until: i64) -> StoreFuture<'_, ()> {
        self.write(move |conn| super::outbound::renew_leases(conn, &ids, lease_until))
    }

    fn get_message(&self, message_id: i64) -> StoreFuture<'_, Option<crate::types::StoredMessage>> {
        self.read(move |conn| super::outbound::get_message(conn, message_id))
    }

    fn record_delivery(
        &self,
        updates: Vec<crate::types::QueueUpdate>,
        notices: Vec<NewMessage>,
    ) -> StoreFuture<'_, ()> {
        self.write(move |conn| super::outbound::record_delivery(conn, &updates, &notices))
    }

    fn retry_queued(&self, queue_id: Option<&str>, now: i64) -> StoreFuture<'_, usize> {
        let queue_id = queue_id.map(str::to_string);
        self.write(move |conn| super::outbound::retry_queued(conn, queue_id.as_deref(), now))
    }

    fn next_due(&self) -> StoreFuture<'_, Option<i64>> {
        self.read(super::outbound::next_due)
    }

    fn queue_counts(&self) -> StoreFuture<'_, crate::types::QueueCounts> {
        self.read(super::outbound::queue_counts)
    }

    fn count_held(&self, domains: &[String]) -> StoreFuture<'_, usize> {
        let domains = domains.to_vec();
        self.read(move |conn| super::held::count(conn, &domains))
    }

    fn lease_held(
        &self,
        domains: &[String],
        now: i64,
        lease_until: i64,
    ) -> StoreFuture<'_, Vec<crate::types::LeasedEntry>> {
        let domains = domains.to_vec();
        self.write(move |conn| super::held::lease(conn, &domains, now, lease_until))
    }

    fn lease_expired_held(
        &self,
        created_before: i64,
        now: i64,
        lease_until: i64,
    ) -> StoreFuture<'_, Vec<crate::types::LeasedEntry>> {
        self.write(move |conn| super::held::lease_expired(conn, created_before, now, lease_until))
    }
}
