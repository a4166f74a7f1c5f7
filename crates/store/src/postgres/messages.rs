//! Messages in PostgreSQL, as every concern that adds or drops a reference to one sees
//! them: writing a message with its queue and mailbox entries (`commit_message`, the
//! notices of `record_delivery`), a large body streamed from its spool file, and removing
//! a message nothing refers to any more.
//!
//! Locks are taken in one order by every transaction, so that two of them (on two nodes)
//! never wait for each other: queue entries in ascending id, then accounts in ascending id
//! (with their mailbox entries), then existing messages in ascending id.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;

use bytes::{BufMut, Bytes, BytesMut};
use deadpool_postgres::Transaction;
use futures_util::SinkExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::Statement;

use super::base::db_error;
use super::rows::refused_with;
use crate::error::{StoreError, StoreResult};
use crate::types::{Delivery, NewMessage, SpooledBody};

/// The savepoint each job of a group commit runs in (as the SQLite writer's).
const SAVEPOINT: &str = "SAVEPOINT job";
const RELEASE: &str = "RELEASE SAVEPOINT job";

/// How much of a spool file is read and sent at a time.
const SPOOL_CHUNK: usize = 256 * 1024;

/// Octets and mailbox entries that committed messages add to (or deletions take from)
/// accounts, applied once at the end of the transaction.
#[derive(Debug, Default)]
pub(super) struct AccountDeltas(BTreeMap<i64, AccountDelta>);

/// What a transaction changed of one account: its size and entry count, and the folders
/// its new mailbox entries (still without UIDs) went into.
#[derive(Debug, Default)]
pub(super) struct AccountDelta {
    bytes: i64,
    entries: i64,
    new_in: BTreeSet<String>,
}

impl AccountDeltas {
    pub(super) fn add(&mut self, account_id: i64, bytes: i64, entries: i64) {
        let delta = self.0.entry(account_id).or_default();
        delta.bytes += bytes;
        delta.entries += entries;
    }

    /// A mailbox entry was inserted into `folder` without its UID.
    pub(super) fn new_in(&mut self, account_id: i64, folder: &str) {
        self.0.entry(account_id).or_default().new_in.insert(folder.to_string());
    }

    pub(super) fn merge(&mut self, other: AccountDeltas) {
        for (account_id, delta) in other.0 {
            let mine = self.0.entry(account_id).or_default();
            mine.bytes += delta.bytes;
            mine.entries += delta.entries;
            mine.new_in.extend(delta.new_in);
        }
    }

    /// Applies the changes in ascending account id (a BTreeMap's order), all in one round
    /// trip: every transaction that changes several accounts' counts locks them in the
    /// same order, so two group commits on two nodes never deadlock over them. Counts
    /// never go below zero (a deletion of what was never counted). Then the new entries
    /// get their UIDs, folder by folder in the same order (RFC 9051 2.3.1.1): numbered as
    /// the folder's row is locked here, at the end of the transaction, UIDs follow the
    /// commit order, so no session ever sees a UID below one it saw before.
    pub(super) async fn apply(self, tx: &Transaction<'_>) -> StoreResult<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let counts = tx
            .prepare_cached(
                "UPDATE accounts SET used_bytes = GREATEST(used_bytes + $2, 0),
                                     message_count = GREATEST(message_count + $3, 0)
                 WHERE id = $1",
            )
            .await
            .map_err(db_error)?;
        let numbering = tx.prepare_cached(super::folder_rows::NUMBER_NEW_ENTRIES).await.map_err(db_error)?;
        let (counts, numbering) = (&counts, &numbering);
        let mut steps: Vec<Step<'_>> = Vec::new();
        for (id, delta) in &self.0 {
            let AccountDelta { bytes, entries, new_in } = delta;
            steps.push(Box::pin(async move {
                tx.execute(counts, &[id, bytes, entries]).await.map(|_| None).map_err(db_error)
            }));
            for folder in new_in {
                steps.push(Box::pin(async move {
                    super::folder_rows::ensure_folder(tx, *id, folder).await?;
                    tx.execute(numbering, &[id, folder]).await.map(|_| None).map_err(db_error)
                }));
            }
        }
        for result in futures_util::future::join_all(steps).await {
            result?;
        }
        Ok(())
    }
}

/// What a failed statement of a message's commit means for the caller, as on SQLite: the
/// store's trouble, worth a retry (a 451), whatever constraint refused it (a mailbox whose
/// account was removed meanwhile). Only a queue id in use is a conflict (the caller draws
/// another), told where the message itself is inserted.
fn commit_error(e: tokio_postgres::Error) -> StoreError {
    StoreError::Unavailable(db_error(e).to_string())
}

/// One statement of a pipeline: the id it returns, if it returns one.
type Step<'a> = Pin<Box<dyn Future<Output = StoreResult<Option<i64>>> + Send + 'a>>;

/// The statements committing a message takes, prepared once per connection.
struct Statements {
    message: Statement,
    message_id: Statement,
    queue: Statement,
    mailbox: Statement,
    copy: Statement,
    header: Statement,
    savepoint: Statement,
    release: Statement,
}

async fn statements(tx: &Transaction<'_>) -> StoreResult<Statements> {
    let prepare = |sql: &'static str| tx.prepare_cached(sql);
    Ok(Statements {
        message: prepare(
            "INSERT INTO messages (queue_id, sender, dsn_ret, dsn_envid, auth_param, authenticated_as, auth_results,
                                   body_8bit, smtputf8, received_at, size, data)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
        )
        .await
        .map_err(db_error)?,
        message_id: prepare("SELECT id FROM messages WHERE queue_id = $1").await.map_err(db_error)?,
        // The message is named by its queue id (unique), so that these go in the same
        // round trip as the message's own insert, before its id is known.
        queue: prepare(
            "INSERT INTO queue (message_id, recipient, notify, orcpt, state, attempts, next_attempt, last_reply,
                                created_at, updated_at, held_domain)
             VALUES ((SELECT id FROM messages WHERE queue_id = $1), $2, $3, $4, $5, 0, $6, $7, $6, $6, $8)",
        )
        .await
        .map_err(db_error)?,
        // Without its UID: the end of the commit numbers it (`AccountDeltas::apply`).
        mailbox: prepare(
            "INSERT INTO mailbox (account_id, folder, message_id, received_at, size)
             VALUES ($1, $2, (SELECT id FROM messages WHERE queue_id = $3), $4, $5)",
        )
        .await
        .map_err(db_error)?,
        copy: prepare(
            "COPY messages (queue_id, sender, dsn_ret, dsn_envid, auth_param, authenticated_as, auth_results,
                            body_8bit, smtputf8, received_at, size, data) FROM STDIN (FORMAT binary)",
        )
        .await
        .map_err(db_error)?,
        header: prepare(
            "INSERT INTO message_headers (message_id, header)
             VALUES ((SELECT id FROM messages WHERE queue_id = $1), $2)",
        )
        .await
        .map_err(db_error)?,
        savepoint: prepare(SAVEPOINT).await.map_err(db_error)?,
        release: prepare(RELEASE).await.map_err(db_error)?,
    })
}

/// Writes messages, each once, with one queue entry per delivery and the mailbox entries
/// of local deliveries, inside the caller's transaction; returns their ids. Accounts'
/// counts are added to `deltas`, for the caller to apply ([`AccountDeltas::apply`]). On
/// failure the transaction is aborted.
pub(super) async fn insert_messages(
    tx: &Transaction<'_>,
    messages: &[NewMessage],
    deltas: &mut AccountDeltas,
) -> StoreResult<Vec<i64>> {
    write(tx, messages, deltas, false, &mut false).await
}

/// [`insert_messages`] as one job of a group commit, inside a savepoint of its own whose
/// failure does not undo its neighbours': `Ok(Err(e))` when the job failed and was undone
/// alone (its `deltas` are then to be dropped), `Err` when the transaction is lost with
/// it.
pub(super) async fn insert_job(
    tx: &Transaction<'_>,
    messages: &[NewMessage],
    deltas: &mut AccountDeltas,
) -> StoreResult<StoreResult<Vec<i64>>> {
    let mut sent = false;
    match write(tx, messages, deltas, true, &mut sent).await {
        Ok(ids) => Ok(Ok(ids)),
        // Refused before anything reached the server: the transaction is as it was.
        Err(e) if !sent => Ok(Err(e)),
        // Else the transaction may be aborted: only the rollback to the savepoint (or its
        // failure, when the savepoint never came to be) tells.
        Err(e) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job").await.map_err(db_error)?;
            Ok(Err(e))
        }
    }
}

/// Everything goes in one round trip (the statements pipelined on the connection, the
/// savepoint's with them), unless a message is spooled: its body is then streamed first
/// ([`copy_spooled`]).
async fn write(
    tx: &Transaction<'_>,
    messages: &[NewMessage],
    deltas: &mut AccountDeltas,
    savepoint: bool,
    sent: &mut bool,
) -> StoreResult<Vec<i64>> {
    // Checked before anything is sent: the binary COPY's field length is 32 bits (and a
    // bytea holds at most 1 GB anyway).
    for message in messages {
        if message.spooled.is_some() && i32::try_from(message.size()).is_err() {
            return Err(StoreError::Invalid(format!("message {} is too large to store", message.queue_id)));
        }
    }
    // A statement prepared for the first time is a trip to the server, whose failure
    // aborts the transaction.
    *sent = true;
    let st = statements(tx).await?;
    let mut steps: Vec<Step<'_>> = Vec::new();
    let spooled = messages.iter().any(|m| m.spooled.is_some());
    if savepoint {
        if spooled {
            // The savepoint must be there before the first COPY.
            tx.execute(&st.savepoint, &[]).await.map_err(commit_error)?;
        } else {
            steps.push(Box::pin(async { tx.execute(&st.savepoint, &[]).await.map(|_| None).map_err(commit_error) }));
        }
    }
    for message in messages {
        if let Some(body) = &message.spooled {
            copy_spooled(tx, &st.copy, message, body).await?;
        }
    }
    for message in messages {
        steps.push(message_step(tx, &st, message));
        steps.extend(entry_steps(tx, &st, message, deltas));
    }
    if savepoint {
        steps.push(Box::pin(async { tx.execute(&st.release, &[]).await.map(|_| None).map_err(commit_error) }));
    }
    // Every statement answers in order; the first failure is the cause (those after it
    // only report the transaction aborted).
    let mut ids = Vec::with_capacity(messages.len());
    for result in futures_util::future::join_all(steps).await {
        ids.extend(result?);
    }
    Ok(ids)
}

/// The statement that inserts the message (or, when its body was copied, finds its id).
fn message_step<'a>(tx: &'a Transaction<'_>, st: &'a Statements, message: &'a NewMessage) -> Step<'a> {
    let queue_id = message.queue_id.as_str();
    if message.spooled.is_some() {
        return Box::pin(async move {
            let row = tx.query_one(&st.message_id, &[&queue_id]).await.map_err(commit_error)?;
            row.try_get(0).map(Some).map_err(commit_error)
        });
    }
    Box::pin(async move {
        let env = &message.envelope;
        let size = message.size() as i64;
        let row = tx
            .query_one(
                &st.message,
                &[
                    &queue_id,
                    &env.sender,
                    &env.dsn_ret,
                    &env.dsn_envid,
                    &env.auth_param,
                    &env.authenticated_as,
                    &env.auth_results,
                    &env.body_8bit,
                    &env.smtputf8,
                    &message.received_at,
                    &size,
                    &message.data.as_slice(),
                ],
            )
            .await
            .map_err(|e| {
                if refused_with(&e, &SqlState::UNIQUE_VIOLATION) {
                    StoreError::Conflict(format!("queue id {queue_id} in use"))
                } else {
                    commit_error(e)
                }
            })?;
        row.try_get(0).map(Some).map_err(commit_error)
    })
}

/// The queue entry of each delivery and the mailbox entry of each local one (SPEC 5:
/// `rules::queue_entry_for`), with their accounts' counts added to `deltas`.
fn entry_steps<'a>(
    tx: &'a Transaction<'_>,
    st: &'a Statements,
    message: &'a NewMessage,
    deltas: &mut AccountDeltas,
) -> Vec<Step<'a>> {
    let queue_id = message.queue_id.as_str();
    let now = message.received_at;
    let size = message.size() as i64;
    let mut steps: Vec<Step<'a>> = Vec::new();
    if let Some(header) = message.header_section_to_keep() {
        steps.push(Box::pin(async move {
            tx.execute(&st.header, &[&queue_id, &header.as_slice()]).await.map(|_| None).map_err(commit_error)
        }));
    }
    for (delivery, dsn) in &message.deliveries {
        let entry = crate::rules::queue_entry_for(delivery);
        steps.push(Box::pin(async move {
            tx.execute(
                &st.queue,
                &[
                    &queue_id,
                    &entry.recipient,
                    &dsn.notify,
                    &dsn.orcpt,
                    &entry.state.as_str(),
                    &now,
                    &entry.last_reply,
                    &entry.held_domain,
                ],
            )
            .await
            .map(|_| None)
            .map_err(commit_error)
        }));
        if let Delivery::Mailbox { account_id, folder, .. } = delivery {
            deltas.add(*account_id, size, 1);
            deltas.new_in(*account_id, folder.as_str());
            steps.push(Box::pin(async move {
                tx.execute(&st.mailbox, &[account_id, &folder.as_str(), &queue_id, &now, &size])
                    .await
                    .map(|_| None)
                    .map_err(commit_error)
            }));
        }
    }
    steps
}

/// Inserts a message whose body is `message.data` followed by a spool file's content with
/// COPY, streaming the file in chunks: the body is never in memory whole (the SQLite
/// store fills a zero blob piece by piece for the same reason). The one statement the
/// portable SQL has no form for: a value sent in pieces. Binary format (PostgreSQL
/// manual, COPY, "Binary Format"): a header, one tuple of 12 fields each with its length,
/// a trailer.
async fn copy_spooled(
    tx: &Transaction<'_>,
    copy: &Statement,
    message: &NewMessage,
    spooled: &SpooledBody,
) -> StoreResult<()> {
    let env = &message.envelope;
    let total = i32::try_from(message.size())
        .map_err(|_| StoreError::Invalid(format!("message {} is too large to store", message.queue_id)))?;
    let mut head = BytesMut::with_capacity(256 + message.data.len());
    head.put_slice(b"PGCOPY\n\xff\r\n\0");
    head.put_i32(0); // flags
    head.put_i32(0); // header extension length
    head.put_i16(12);
    let text = |buf: &mut BytesMut, value: Option<&str>| match value {
        Some(value) => {
            buf.put_i32(value.len() as i32);
            buf.put_slice(value.as_bytes());
        }
        None => buf.put_i32(-1),
    };
    text(&mut head, Some(&message.queue_id));
    text(&mut head, Some(&env.sender));
    text(&mut head, env.dsn_ret.as_deref());
    text(&mut head, env.dsn_envid.as_deref());
    text(&mut head, env.auth_param.as_deref());
    text(&mut head, env.authenticated_as.as_deref());
    text(&mut head, Some(&env.auth_results));
    for flag in [env.body_8bit, env.smtputf8] {
        head.put_i32(1);
        head.put_u8(u8::from(flag));
    }
    for number in [message.received_at, i64::from(total)] {
        head.put_i32(8);
        head.put_i64(number);
    }
    head.put_i32(total);
    head.put_slice(&message.data);

    let sink = tx.copy_in::<_, Bytes>(copy).await.map_err(commit_error)?;
    futures_util::pin_mut!(sink);
    sink.send(head.freeze()).await.map_err(commit_error)?;
    let mut done = 0u64;
    while done < spooled.len {
        let want = (spooled.len - done).min(SPOOL_CHUNK as u64) as usize;
        let file = std::sync::Arc::clone(&spooled.file);
        let chunk = tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            let mut buffer = vec![0u8; want];
            let n = file.read_at(&mut buffer, done)?;
            buffer.truncate(n);
            Ok::<_, std::io::Error>(buffer)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("cannot read the spooled message: {e}")))?
        .map_err(|e| StoreError::Unavailable(format!("cannot read the spooled message: {e}")))?;
        if chunk.is_empty() {
            // Dropping the sink fails the COPY: nothing of the message is stored.
            return Err(StoreError::Unavailable("the spooled message is shorter than announced".into()));
        }
        done += chunk.len() as u64;
        sink.send(Bytes::from(chunk)).await.map_err(commit_error)?;
    }
    sink.send(Bytes::from_static(&[0xff, 0xff])).await.map_err(commit_error)?; // trailer: -1
    sink.as_mut().finish().await.map_err(|e| {
        if refused_with(&e, &SqlState::UNIQUE_VIOLATION) {
            StoreError::Conflict(format!("queue id {} in use", message.queue_id))
        } else {
            commit_error(e)
        }
    })?;
    Ok(())
}

/// Deletes a message once no mailbox entry and no queue entry refers to it any more
/// (`rules::is_orphan`), inside the caller's transaction.
///
/// The message's row is locked first. Two transactions that each end one of its last
/// references (two nodes recording the outcomes of two of its recipients, or a delivery
/// and a mailbox deletion) are so taken one after the other, and the second one's check,
/// a new statement and so a new snapshot at READ COMMITTED, sees the first one's change:
/// the message is deleted by one of them, never left behind by both. Callers lock
/// messages in ascending id order, so that two transactions never wait for each other.
pub(super) async fn delete_if_orphan(tx: &Transaction<'_>, message_id: i64) -> StoreResult<()> {
    let lock = tx.prepare_cached("SELECT id FROM messages WHERE id = $1 FOR UPDATE").await.map_err(db_error)?;
    if tx.query_opt(&lock, &[&message_id]).await.map_err(db_error)?.is_none() {
        return Ok(());
    }
    let check = tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM mailbox WHERE message_id = $1),
                    EXISTS (SELECT 1 FROM queue WHERE message_id = $1 AND state NOT IN ('delivered','bounced'))",
        )
        .await
        .map_err(db_error)?;
    let row = tx.query_one(&check, &[&message_id]).await.map_err(db_error)?;
    let (in_a_mailbox, still_queued): (bool, bool) =
        (row.try_get(0).map_err(db_error)?, row.try_get(1).map_err(db_error)?);
    if crate::rules::is_orphan(in_a_mailbox, still_queued) {
        // Finished queue entries are history only; they go first (they reference the message).
        let history = tx.prepare_cached("DELETE FROM queue WHERE message_id = $1").await.map_err(db_error)?;
        tx.execute(&history, &[&message_id]).await.map_err(db_error)?;
        let message = tx.prepare_cached("DELETE FROM messages WHERE id = $1").await.map_err(db_error)?;
        tx.execute(&message, &[&message_id]).await.map_err(db_error)?;
    }
    Ok(())
}

/// [`delete_if_orphan`] for each message, in ascending id and once each.
pub(super) async fn delete_orphans(tx: &Transaction<'_>, mut message_ids: Vec<i64>) -> StoreResult<()> {
    message_ids.sort_unstable();
    message_ids.dedup();
    for message_id in message_ids {
        delete_if_orphan(tx, message_id).await?;
    }
    Ok(())
}
