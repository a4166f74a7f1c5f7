//! Group commit of received messages on PostgreSQL (SPEC 5: many sessions' commits share
//! one flush), as the SQLite store's writer does it: the messages of every session that
//! asks while a commit is in flight go into the next transaction together, each session's
//! in a savepoint of its own, so that one failing (a queue id in use) does not undo the
//! others; every caller is answered once that transaction has committed, with
//! `synchronous_commit = on`, so its 250 follows a flush to the server's WAL.
//!
//! PostgreSQL itself lets concurrent commits share a WAL flush; what batching saves on top
//! is a transaction, its round trips and its commit record per message, and the account
//! row that every message into one mailbox updates is locked once per batch rather than
//! once per message until its flush ([`IN_FLIGHT`] has the measurements).

use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::base::{db_error, pool_error};
use super::messages::{insert_job, insert_messages, AccountDeltas};
use crate::error::{StoreError, StoreResult};
use crate::types::{CommittedMessage, NewMessage};

/// Sessions' jobs committed together at most (the SQLite writer's batch).
const MAX_BATCH: usize = 512;

/// Transactions in flight at once: while one waits for its flush, the next is written.
/// Measured (`tests::group_commit_pays`, 2 cores, PostgreSQL 15 on the same machine, 4 KiB
/// messages): with 20 and 50 sessions, 2 in flight commit 20-60 % more messages a second
/// than each commit alone to remote recipients, and 5-6 times more into one busy mailbox
/// (whose account row each commit alone must lock until its flush); 1 in flight stalls
/// during each flush and is no better than alone to remote recipients; 4 is no better
/// than 2. One session alone is the same either way.
const IN_FLIGHT: usize = 2;

type Reply = oneshot::Sender<StoreResult<Vec<CommittedMessage>>>;

/// One session's messages: all of them or none (`commit_messages`).
struct Job {
    messages: Vec<NewMessage>,
    reply: Reply,
}

/// The handle sessions commit through; the batching task ends when it is dropped.
pub(super) struct Committer {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Committer {
    /// Starts the batching task on the current tokio runtime.
    pub(super) fn start(pool: Pool) -> Committer {
        Committer::with_batches(pool, IN_FLIGHT)
    }

    /// With `in_flight` transactions at once at most.
    pub(super) fn with_batches(pool: Pool, in_flight: usize) -> Committer {
        let (jobs, receiver) = mpsc::unbounded_channel();
        tokio::spawn(batch_loop(pool, receiver, in_flight.max(1)));
        Committer { jobs }
    }

    /// Commits the messages (all or none) in the next group commit; returns once that
    /// transaction has committed.
    pub(super) async fn commit(&self, messages: Vec<NewMessage>) -> StoreResult<Vec<CommittedMessage>> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job { messages, reply }).map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        answer.await.map_err(|_| StoreError::Unavailable("the write could not be committed".into()))?
    }
}

/// Takes every job waiting (up to [`MAX_BATCH`]) once a transaction may start, and commits
/// them together on a task of their own.
async fn batch_loop(pool: Pool, mut jobs: mpsc::UnboundedReceiver<Job>, in_flight: usize) {
    let slots = Arc::new(Semaphore::new(in_flight));
    while let Some(first) = jobs.recv().await {
        // Waiting here is what fills the next batch.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { break };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            commit_batch(&pool, batch).await;
            drop(slot);
        });
    }
}

/// Commits one batch and answers each of its callers.
async fn commit_batch(pool: &Pool, batch: Vec<Job>) {
    let (messages, replies): (Vec<Vec<NewMessage>>, Vec<Reply>) =
        batch.into_iter().map(|job| (job.messages, job.reply)).unzip();
    match run_batch(pool, &messages).await {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            if messages.len() > 1 {
                tracing::error!(error = %e, writes = messages.len(), "store: a group commit failed");
            }
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// Runs the jobs in one transaction, each in a savepoint of its own when there are
/// several, and commits: each job's result, or the error that failed them all (no
/// connection, the transaction or its commit failed).
pub(super) async fn run_batch(
    pool: &Pool,
    jobs: &[Vec<NewMessage>],
) -> StoreResult<Vec<StoreResult<Vec<CommittedMessage>>>> {
    let mut conn = pool.get().await.map_err(pool_error)?;
    let tx = conn.transaction().await.map_err(db_error)?;
    let mut deltas = AccountDeltas::default();
    let mut results = Vec::with_capacity(jobs.len());
    if let [messages] = jobs {
        // One job alone has no neighbours to protect: no savepoint, two statements fewer.
        // On failure, dropping the transaction rolls it back.
        let ids = match insert_messages(&tx, messages, &mut deltas).await {
            Ok(ids) => ids,
            Err(e) => return Ok(vec![Err(e)]),
        };
        results.push(Ok(committed(ids, messages)));
    } else {
        for messages in jobs {
            let mut own = AccountDeltas::default();
            // The outer error: the transaction is lost, and every job with it.
            match insert_job(&tx, messages, &mut own).await? {
                Ok(ids) => {
                    deltas.merge(own);
                    results.push(Ok(committed(ids, messages)));
                }
                Err(e) => results.push(Err(e)),
            }
        }
    }
    if results.iter().all(|r| r.is_err()) {
        return Ok(results);
    }
    // PostgreSQL answers COMMIT in an aborted transaction by rolling back, and the client
    // is not told: so every path above either stopped at an error or left the transaction
    // sound (a job's last statement answered, or the rollback to its savepoint did).
    deltas.apply(&tx).await?;
    tx.commit().await.map_err(db_error)?;
    Ok(results)
}

fn committed(ids: Vec<i64>, messages: &[NewMessage]) -> Vec<CommittedMessage> {
    ids.into_iter()
        .zip(messages)
        .map(|(message_id, m)| CommittedMessage { message_id, queue_id: m.queue_id.clone() })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use deadpool_postgres::{Manager, Pool};
    use vouchmail_testkit::pg::database_for;

    use super::*;
    use crate::interface::{AccountStore, MailboxStore, QueueStore};
    use crate::postgres::{PostgresOptions, PostgresStore};
    use crate::types::{Delivery, Envelope, Folder, NewAccount, RecipientDsn, SenderPolicy};

    /// A store with one account (its id), and a pool of `size` connections of our own on
    /// its database, to run batches by hand.
    async fn setup(test: &str, size: usize) -> Option<(PostgresStore, Pool, i64)> {
        let url = database_for(test)?;
        let store = PostgresStore::connect(PostgresOptions::new(url.clone())).await.unwrap();
        store.add_domain("example.org", SenderPolicy::ACCEPT).await.unwrap();
        let account = NewAccount { address: "a@example.org".into(), secrets: Default::default(), quota_bytes: 0 };
        let id = store.add_account(account).await.unwrap();
        let config: tokio_postgres::Config = url.parse().unwrap();
        let manager = Manager::new(config, tokio_postgres::NoTls);
        let pool = Pool::builder(manager).max_size(size).build().unwrap();
        Some((store, pool, id))
    }

    fn message(queue_id: &str, deliveries: Vec<Delivery>, size: usize) -> NewMessage {
        let mut data = b"Subject: t\r\n\r\n".to_vec();
        data.resize(size, b'x');
        NewMessage {
            queue_id: queue_id.into(),
            envelope: Envelope { sender: "s@remote.example".into(), auth_results: "none".into(), ..Default::default() },
            received_at: 1_700_000_000,
            data,
            spooled: None,
            deliveries: deliveries.into_iter().map(|d| (d, RecipientDsn::default())).collect(),
        }
    }

    /// One transaction, several jobs: the one that fails (a queue id in use, a mailbox of
    /// no account, a spool file shorter than announced) is undone alone; its neighbours,
    /// before and after it, are committed with their counts.
    #[tokio::test]
    async fn a_failing_job_does_not_undo_its_neighbours() {
        let Some((store, pool, a)) = setup("a_failing_job_does_not_undo_its_neighbours", 2).await else { return };
        let inbox = |account_id| Delivery::Mailbox { account_id, folder: Folder::Inbox, recipient: "a@x".into() };
        store.commit_message(message("TAKEN", vec![], 20)).await.unwrap();
        let short = {
            let file = tempfile::tempfile().unwrap();
            let mut m = message("SHORT", vec![inbox(a)], 20);
            m.spooled = Some(crate::types::SpooledBody { file: std::sync::Arc::new(file), len: 10 });
            m
        };
        let jobs = vec![
            vec![message("J1", vec![inbox(a)], 100)],
            vec![message("J2", vec![inbox(a)], 100), message("TAKEN", vec![], 100)],
            vec![message("J3", vec![inbox(a)], 100)],
            vec![message("J4", vec![inbox(a + 1000)], 100)],
            vec![short],
            vec![message("J5", vec![inbox(a), Delivery::Queue { recipient: "x@r.test".into() }], 100)],
        ];
        let results = run_batch(&pool, &jobs).await.unwrap();
        let outcome: Vec<Result<Vec<&str>, &StoreError>> =
            results.iter().map(|r| r.as_ref().map(|c| c.iter().map(|c| c.queue_id.as_str()).collect())).collect();
        assert_eq!(outcome[0], Ok(vec!["J1"]));
        assert!(matches!(outcome[1], Err(StoreError::Conflict(_))), "{:?}", outcome[1]);
        assert_eq!(outcome[2], Ok(vec!["J3"]));
        assert!(matches!(outcome[3], Err(StoreError::Unavailable(_))), "{:?}", outcome[3]);
        assert!(matches!(outcome[4], Err(StoreError::Unavailable(_))), "{:?}", outcome[4]);
        assert_eq!(outcome[5], Ok(vec!["J5"]));
        let ids: Vec<String> =
            store.list_mailbox("a@example.org", None).await.unwrap().into_iter().map(|e| e.queue_id).collect();
        assert_eq!(ids, ["J1", "J3", "J5"]);
        let account = store.get_account("a@example.org").await.unwrap().unwrap();
        assert_eq!((account.message_count, account.used_bytes), (3, 300));
        for gone in ["J2", "J4", "SHORT"] {
            assert!(store.get_queued_message(gone).await.unwrap().is_none(), "{gone}");
        }
        assert_eq!(store.list_queue().await.unwrap().len(), 1);
    }

    /// The measurement behind [`IN_FLIGHT`] and group commit itself (run it in release:
    /// `cargo test --release -p vouchmail-store --lib group_commit_pays -- --ignored
    /// --nocapture`): sessions committing 4 KiB messages one after the other, as SMTP
    /// sessions do, each commit alone in its transaction (PostgreSQL still shares WAL
    /// flushes between concurrent commits) or through the committer with 1, 2 or 4
    /// transactions in flight.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn group_commit_pays() {
        const TOTAL: usize = 4_000;
        for (local, sessions, mode) in [true, false]
            .into_iter()
            .flat_map(|local| [1, 20, 50].map(|sessions| (local, sessions)))
            .flat_map(|(local, sessions)| [0, 1, 2, 4].map(|mode| (local, sessions, mode)))
        {
            let name = format!("group_commit_pays_{local}_{sessions}_{mode}");
            let Some((_store, pool, a)) = setup(&name, sessions + 2).await else { return };
            let committer = Arc::new(Committer::with_batches(pool.clone(), mode.max(1)));
            let per_session = TOTAL / sessions;
            let started = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for s in 0..sessions {
                let (pool, committer) = (pool.clone(), Arc::clone(&committer));
                tasks.spawn(async move {
                    for i in 0..per_session {
                        // One busy mailbox (its account's counts change with
                        // every message), or a remote recipient.
                        let d = match local {
                            true => Delivery::Mailbox { account_id: a, folder: Folder::Inbox, recipient: "a@x".into() },
                            false => Delivery::Queue { recipient: "x@remote.example".into() },
                        };
                        let m = vec![message(&format!("S{s}M{i}"), vec![d], 4096)];
                        if mode == 0 {
                            run_batch(&pool, &[m]).await.unwrap().remove(0).unwrap();
                        } else {
                            committer.commit(m).await.unwrap();
                        }
                    }
                });
            }
            while let Some(done) = tasks.join_next().await {
                done.unwrap();
            }
            let elapsed = started.elapsed().as_secs_f64();
            let total = (per_session * sessions) as f64;
            let how = if mode == 0 { "alone".to_string() } else { format!("grouped, {mode} in flight") };
            let to = if local { "a mailbox" } else { "remote" };
            println!(
                "{to:<9}, {sessions:>3} sessions, {how:<22}: {:>7.0} messages/s, {:>6.2} ms per commit",
                total / elapsed,
                elapsed * 1000.0 * sessions as f64 / total
            );
        }
    }
}
