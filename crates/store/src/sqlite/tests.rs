use std::sync::Arc;

use super::schema::MIGRATIONS;
use super::*;
use crate::prelude::*;
use crate::tracking::{NewTrackingEvent, TrackingOutcome, TrackingSubject};
use crate::types::PolicyAction;
use crate::types::*;
use rusqlite::Connection;

fn store() -> (tempfile::TempDir, Arc<SqliteStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("store.db")).unwrap();
    (dir, Arc::new(store))
}

/// A store file as version `version` of the schema left it (its first `version`
/// migrations applied), with `rows` inserted: what an upgrade starts from.
fn store_at_version(path: &std::path::Path, version: usize, rows: &str) {
    let conn = Connection::open(path).unwrap();
    for sql in &MIGRATIONS[..version] {
        conn.execute_batch(sql).unwrap();
    }
    conn.execute_batch(&format!("PRAGMA user_version = {version};")).unwrap();
    conn.execute_batch(rows).unwrap();
}

/// Whether SQLite's program for `sql` opens an ephemeral table (its parameters unbound).
fn opens_ephemeral_table(conn: &Connection, sql: &str) -> bool {
    let mut stmt = conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
    let mut rows = stmt.raw_query();
    while let Some(row) = rows.next().unwrap() {
        if row.get::<_, String>(1).unwrap() == "OpenEphemeral" {
            return true;
        }
    }
    false
}

/// Migration 24: recording an event (once per IMAP download), a record and its NOTIFY
/// outbox entry builds no ephemeral table, which an IN list of three values in a CHECK
/// costs on every write of the column; rows, ids and the records' sequence are kept, and
/// the CHECKs still hold.
#[tokio::test]
async fn tracking_writes_build_no_ephemeral_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    store_at_version(
        &path,
        23,
        "INSERT INTO tracking_events (id, occurred_at, queue_id, message_id, sender, recipient, event, tracked)
             VALUES (9, 1, 'Q0', '<m0@remote.example>', 'b@remote.example', 'a@example.org', 'decrypted', 1);
         INSERT INTO tracking_records (id, owner, occurred_at, message_id, sender, recipient, event, reporting_server, stored_at)
             VALUES (5, 'b@example.org', 1, '<m0@example.org>', 'b@example.org', 'c@remote.example', 'downloaded', 'mx', 2);
         UPDATE sqlite_sequence SET seq = 7 WHERE name = 'tracking_records';
         INSERT INTO notify_outbox (id, record, domain, message_id, recipient, event, state, next_attempt, created_at, updated_at)
             VALUES (3, 'line', 'remote.example', '<m1@example.org>', 'c@remote.example', 'downloaded', 'inflight', 4, 4, 4);",
    );
    let writes = [
        super::tracking::INSERT_EVENT,
        "INSERT INTO tracking_records (owner, occurred_at, message_id, sender, recipient, event, reporting_server, stored_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        "INSERT INTO notify_outbox (record, domain, message_id, recipient, event, state, attempts, next_attempt, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?6, ?6)",
        "UPDATE notify_outbox SET state = ?1, updated_at = ?2 WHERE id = ?3",
    ];
    let before = Connection::open(&path).unwrap();
    for sql in writes {
        assert!(opens_ephemeral_table(&before, sql), "the test no longer sees the cost it guards: {sql}");
    }
    drop(before);
    SqliteStore::open(&path).unwrap().close();
    let conn = Connection::open(&path).unwrap();
    for sql in writes {
        assert!(!opens_ephemeral_table(&conn, sql), "{sql}");
    }
    let event: (i64, String, bool) = conn
        .query_row("SELECT id, event, tracked FROM tracking_events", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap();
    assert_eq!(event, (9, "decrypted".to_string(), true));
    let outbox: (i64, String, i64) = conn
        .query_row("SELECT id, state, next_attempt FROM notify_outbox", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap();
    assert_eq!(outbox, (3, "inflight".to_string(), 4));
    // The next record's id goes on after the sequence, not after the largest id left.
    conn.execute(
        "INSERT INTO tracking_records (owner, occurred_at, message_id, sender, recipient, event, reporting_server, stored_at)
         VALUES ('b@example.org', 3, '<m2@example.org>', 'b@example.org', 'c@remote.example', 'decrypted', 'mx', 3)",
        [],
    )
    .unwrap();
    let ids: Vec<i64> = conn
        .prepare("SELECT id FROM tracking_records ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(ids, [5, 8]);
    let refused = [
        "INSERT INTO tracking_events (occurred_at, queue_id, message_id, sender, recipient, event)
         VALUES (1, 'Q1', '<m1@remote.example>', '', 'a@example.org', 'read')",
        "INSERT INTO tracking_records (owner, occurred_at, message_id, sender, recipient, event, reporting_server, stored_at)
         VALUES ('b@example.org', 3, '<m3@example.org>', 'b@example.org', 'c@remote.example', 'read', 'mx', 3)",
        "UPDATE notify_outbox SET state = 'lost'",
    ];
    for sql in refused {
        assert!(conn.execute(sql, []).unwrap_err().to_string().contains("CHECK constraint failed"), "{sql}");
    }
}

#[tokio::test]
async fn meta_and_reopen_keeps_schema() {
    let (dir, store) = store();
    store.set_meta("k", "v1").await.unwrap();
    store.set_meta("k", "v2").await.unwrap();
    assert_eq!(store.get_meta("k").await.unwrap().as_deref(), Some("v2"));
    drop(store);
    let reopened = SqliteStore::open(&dir.path().join("store.db")).unwrap();
    assert_eq!(reopened.get_meta("k").await.unwrap().as_deref(), Some("v2"));
    assert_eq!(reopened.get_meta("missing").await.unwrap(), None);
}

#[tokio::test]
async fn held_for_lists_move_to_their_own_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    store_at_version(
        &path,
        5,
        "INSERT INTO domains (name, policy, created_at, held_for) VALUES
               ('a.example', 'accept', 0, 'custx1@p,Other@P'), ('b.example', 'accept', 0, 'other@p'),
               ('c.example', 'accept', 0, NULL), ('d.example', 'accept', 0, '');",
    );
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.held_domains_for("custx1@p").await.unwrap(), ["a.example"]);
    assert_eq!(store.held_domains_for("other@p").await.unwrap(), ["a.example", "b.example"]);
    assert!(store.held_domains_for("cust_1@p").await.unwrap().is_empty());
    let held: Vec<(String, Vec<String>)> =
        store.list_domains().await.unwrap().into_iter().map(|d| (d.name, d.held_for)).collect();
    let expected = [
        ("a.example", vec!["custx1@p", "other@p"]),
        ("b.example", vec!["other@p"]),
        ("c.example", vec![]),
        ("d.example", vec![]),
    ];
    let expected: Vec<(String, Vec<String>)> =
        expected.iter().map(|(d, a)| (d.to_string(), a.iter().map(|s| s.to_string()).collect())).collect();
    assert_eq!(held, expected);
}

#[tokio::test]
async fn old_single_policies_become_the_unauthenticated_case() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    store_at_version(
        &path,
        8,
        "INSERT INTO domains (name, policy, created_at) VALUES
               ('a.example', 'require', 0), ('b.example', 'tag', 0), ('c.example', 'accept', 0);",
    );
    let store = SqliteStore::open(&path).unwrap();
    let policies: Vec<(String, PolicyAction, PolicyAction)> = store
        .list_domains()
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.name, d.policy.unauthenticated, d.policy.forged))
        .collect();
    let expected = [
        ("a.example".to_string(), PolicyAction::Reject, PolicyAction::Reject),
        ("b.example".to_string(), PolicyAction::Junk, PolicyAction::Reject),
        ("c.example".to_string(), PolicyAction::Accept, PolicyAction::Reject),
    ];
    assert_eq!(policies, expected);
    let mixed = SenderPolicy {
        unauthenticated: PolicyAction::Junk,
        forged: PolicyAction::RejectNotifyBoth,
        dmarc_counts: true,
    };
    store.set_domain_policy("a.example", mixed).await.unwrap();
    assert_eq!(store.get_domain("a.example").await.unwrap().unwrap().policy, mixed);
}

/// Migration 19 (SPEC 9): an existing store's accounts get every folder, and their mail
/// gets UIDs in arrival order per folder, each folder's next UID after its last.
#[tokio::test]
async fn existing_mail_is_numbered_into_folders() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    store_at_version(
        &path,
        18,
        "INSERT INTO domains (name, created_at) VALUES ('example.org', 0);
             INSERT INTO accounts (id, address, domain, created_at) VALUES (7, 'a@example.org', 'example.org', 0);
             INSERT INTO messages (id, queue_id, sender, auth_results, body_8bit, smtputf8, received_at, size, data)
                 VALUES (1, 'Q1', '', 'none', 0, 0, 0, 1, x'41');
             INSERT INTO mailbox (id, account_id, folder, message_id, received_at, size) VALUES
                 (10, 7, 'INBOX', 1, 0, 1), (11, 7, 'Junk', 1, 0, 1), (12, 7, 'INBOX', 1, 0, 1);",
    );
    let store = SqliteStore::open(&path).unwrap();
    let (inbox, messages) = store.folder_messages("a@example.org", "INBOX").await.unwrap().unwrap();
    let numbered: Vec<(i64, u32)> = messages.iter().map(|m| (m.entry_id, m.uid)).collect();
    assert_eq!(numbered, [(10, 1), (12, 2)]);
    assert_eq!(inbox.uid_next, 3);
    let (junk, messages) = store.folder_messages("a@example.org", "Junk").await.unwrap().unwrap();
    assert_eq!((junk.uid_next, messages[0].uid, junk.special_use.as_deref()), (2, 1, Some("\\Junk")));
    assert_eq!(store.list_folders("a@example.org").await.unwrap().len(), 7);
}

/// Migration 23: tracking_events rebuilt without AUTOINCREMENT keeps every event and its
/// id, and the next event's id still comes after the largest (readers page by id).
#[tokio::test]
async fn tracking_events_keep_their_ids_without_autoincrement() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    store_at_version(
        &path,
        22,
        "INSERT INTO domains (name, created_at) VALUES ('example.org', 0);
             INSERT INTO accounts (id, address, domain, created_at) VALUES (7, 'a@example.org', 'example.org', 0);
             INSERT INTO messages (id, queue_id, sender, auth_results, body_8bit, smtputf8, received_at, size, data)
                 VALUES (1, 'Q1', 'b@remote.example', 'none', 0, 0, 0, 30, CAST('Message-ID: <m1@remote.example>' || char(13,10,13,10) AS BLOB));
             INSERT INTO mailbox (id, account_id, folder, message_id, received_at, size, uid) VALUES (10, 7, 'INBOX', 1, 0, 30, 1);
             INSERT INTO tracking_events (id, occurred_at, queue_id, message_id, sender, recipient, event, tracked) VALUES
                 (5, 1, 'Q0', '<m0@remote.example>', 'b@remote.example', 'a@example.org', 'downloaded', 0),
                 (41, 2, 'Q0', '<m0@remote.example>', 'b@remote.example', 'a@example.org', 'decrypted', 0);",
    );
    let store = SqliteStore::open(&path).unwrap();
    let event = NewTrackingEvent {
        recipient: "a@example.org".into(),
        subject: TrackingSubject::Mailbox(10),
        kind: TrackingKind::Downloaded,
        at: 3,
        reporting_server: "mx.example.org".into(),
    };
    assert!(matches!(store.track_event(event.clone()).await.unwrap(), TrackingOutcome::Recorded { .. }));
    assert_eq!(store.track_event(event).await.unwrap(), TrackingOutcome::Duplicate);
    let events = store.list_tracking_events(0, 10).await.unwrap();
    let ids: Vec<(i64, &str)> = events.iter().map(|e| (e.id, e.message_id.as_str())).collect();
    assert_eq!(ids, [(5, "<m0@remote.example>"), (41, "<m0@remote.example>"), (42, "<m1@remote.example>")]);
    store.close();
    let conn = Connection::open(&path).unwrap();
    let sequences: i64 = conn
        .query_row("SELECT COUNT(*) FROM sqlite_sequence WHERE name = 'tracking_events'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sequences, 0);
}
