use crate::types::{QueueState, RecipientDsn};
use std::sync::Arc;

use super::schema::MIGRATIONS;
use super::*;
use crate::error::StoreError;
use crate::prelude::*;
use crate::types::*;
use crate::types::{Delivery, PolicyAction};
use rusqlite::Connection;
use vouchmail_proto::sasl::secrets::Secrets;

fn store() -> (tempfile::TempDir, Arc<SqliteStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("store.db")).unwrap();
    (dir, Arc::new(store))
}

fn account(address: &str) -> NewAccount {
    NewAccount { address: address.into(), secrets: Secrets::default(), quota_bytes: 0 }
}

fn message(queue_id: &str, deliveries: Vec<Delivery>) -> NewMessage {
    NewMessage {
        queue_id: queue_id.into(),
        envelope: crate::types::Envelope {
            sender: "s@remote.example".into(),
            auth_results: "none".into(),
            ..Default::default()
        },
        received_at: 1_700_000_000,
        data: b"Subject: t\r\n\r\nbody\r\n".to_vec(),
        spooled: None,
        deliveries: deliveries.into_iter().map(|d| (d, RecipientDsn::default())).collect(),
    }
}

#[tokio::test]
async fn commit_delivers_locally_and_queues_remote() {
    let (_dir, store) = store();
    store.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    let a = store.add_account(account("a@example.org")).await.unwrap();
    let b = store.add_account(account("b@example.org")).await.unwrap();
    let committed = store
        .commit_message(message(
            "Q1",
            vec![
                Delivery::Mailbox { account_id: a, folder: Folder::Inbox, recipient: "a@example.org".into() },
                Delivery::Mailbox { account_id: b, folder: Folder::Junk, recipient: "b@example.org".into() },
                Delivery::Queue { recipient: "x@remote.example".into() },
            ],
        ))
        .await
        .unwrap();
    assert_eq!(committed.queue_id, "Q1");
    let inbox = store.list_mailbox("a@example.org", Some(Folder::Inbox)).await.unwrap();
    assert_eq!(inbox.len(), 1);
    assert!(store.list_mailbox("b@example.org", Some(Folder::Inbox)).await.unwrap().is_empty());
    let junk = store.list_mailbox("b@example.org", Some(Folder::Junk)).await.unwrap();
    assert_eq!(junk.len(), 1);
    // One stored copy for all recipients.
    assert_eq!(inbox[0].message_id, junk[0].message_id);
    let (entry, data) = store.get_mailbox_message("a@example.org", inbox[0].id).await.unwrap().unwrap();
    assert_eq!(entry.queue_id, "Q1");
    assert_eq!(data, b"Subject: t\r\n\r\nbody\r\n");
    assert!(store.get_mailbox_message("b@example.org", inbox[0].id).await.unwrap().is_none());
    let alice = store.get_account("a@example.org").await.unwrap().unwrap();
    assert_eq!((alice.message_count, alice.used_bytes), (1, data.len() as u64));
    let queue = store.list_queue().await.unwrap();
    assert_eq!(queue.len(), 1);
    assert_eq!((queue[0].recipient.as_str(), queue[0].state), ("x@remote.example", QueueState::Queued));
    let (entries, _) = store.get_queued_message("Q1").await.unwrap().unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(store.delete_queued_message("Q1").await.unwrap(), 1);
    assert!(store.list_queue().await.unwrap().is_empty());
    // The mailboxes still hold the message.
    assert!(store.get_mailbox_message("a@example.org", inbox[0].id).await.unwrap().is_some());
    assert!(matches!(store.commit_message(message("Q1", vec![])).await, Err(StoreError::Conflict(_))));
}

#[tokio::test]
async fn removing_the_last_reference_deletes_the_message() {
    let (_dir, store) = store();
    store.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    let a = store.add_account(account("a@example.org")).await.unwrap();
    store
        .commit_message(message(
            "Q2",
            vec![Delivery::Mailbox { account_id: a, folder: Folder::Inbox, recipient: "a@example.org".into() }],
        ))
        .await
        .unwrap();
    store.remove_account("a@example.org").await.unwrap();
    assert!(store.get_queued_message("Q2").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_are_grouped_and_all_durable() {
    let (dir, store) = store();
    store.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    let a = store.add_account(account("a@example.org")).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..300 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let d = Delivery::Mailbox { account_id: a, folder: Folder::Inbox, recipient: "a@example.org".into() };
            store.commit_message(message(&format!("C{i}"), vec![d])).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    store.close();
    drop(store);
    let reopened = SqliteStore::open(&dir.path().join("store.db")).unwrap();
    assert_eq!(reopened.list_mailbox("a@example.org", None).await.unwrap().len(), 300);
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
async fn closed_store_reports_unavailable() {
    let (_dir, store) = store();
    store.close();
    let err = store.set_meta("k", "v").await.unwrap_err();
    assert!(err.is_temporary());
}

#[tokio::test]
async fn deleting_mailbox_entries_keeps_counters_and_collects_orphans() {
    let (_dir, store) = store();
    store.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    let a = store.add_account(account("a@example.org")).await.unwrap();
    let b = store.add_account(account("b@example.org")).await.unwrap();
    let inbox = |account_id, recipient: &str| Delivery::Mailbox {
        account_id,
        folder: Folder::Inbox,
        recipient: recipient.into(),
    };
    // Q1 goes to both accounts, Q2 to `a` only.
    store.commit_message(message("Q1", vec![inbox(a, "a@example.org"), inbox(b, "b@example.org")])).await.unwrap();
    store.commit_message(message("Q2", vec![inbox(a, "a@example.org")])).await.unwrap();
    let entries = store.list_mailbox("a@example.org", Some(Folder::Inbox)).await.unwrap();
    let ids: Vec<i64> = entries.iter().map(|e| e.id).collect();
    let b_id = store.list_mailbox("b@example.org", None).await.unwrap()[0].id;
    // b's entry is not a's to delete; unknown ids are skipped.
    assert_eq!(store.delete_mailbox_entries("A@example.org", &[ids[0], ids[1], b_id, 9999]).await.unwrap(), 2);
    assert!(store.list_mailbox("a@example.org", None).await.unwrap().is_empty());
    let alice = store.get_account("a@example.org").await.unwrap().unwrap();
    assert_eq!((alice.message_count, alice.used_bytes), (0, 0));
    // Q1 is still referenced by b's mailbox; Q2 is gone.
    assert!(store.get_queued_message("Q1").await.unwrap().is_some());
    assert!(store.get_queued_message("Q2").await.unwrap().is_none());
    assert_eq!(store.delete_mailbox_entries("b@example.org", &[b_id]).await.unwrap(), 1);
    assert!(store.get_queued_message("Q1").await.unwrap().is_none());
    assert_eq!(store.delete_mailbox_entries("b@example.org", &[b_id]).await.unwrap(), 0);
}

#[tokio::test]
async fn unique_ids_are_not_reused_after_deletion() {
    let (_dir, store) = store();
    store.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    let a = store.add_account(account("a@example.org")).await.unwrap();
    let d = || Delivery::Mailbox { account_id: a, folder: Folder::Inbox, recipient: "a@example.org".into() };
    store.commit_message(message("Q1", vec![d()])).await.unwrap();
    let first = store.list_mailbox("a@example.org", None).await.unwrap().remove(0);
    store.delete_mailbox_entries("a@example.org", &[first.id]).await.unwrap();
    store.commit_message(message("Q2", vec![d()])).await.unwrap();
    let second = store.list_mailbox("a@example.org", None).await.unwrap().remove(0);
    assert_ne!(first.unique_id(), second.unique_id());
    assert_eq!(second.unique_id(), format!("{}.Q2", second.id));
}

#[tokio::test]
async fn held_for_lists_move_to_their_own_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    {
        // A store as the version before held_accounts left it.
        let conn = Connection::open(&path).unwrap();
        for sql in &MIGRATIONS[..5] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(
            "PRAGMA user_version = 5;
             INSERT INTO domains (name, policy, created_at, held_for) VALUES
               ('a.example', 'accept', 0, 'custx1@p,Other@P'), ('b.example', 'accept', 0, 'other@p'),
               ('c.example', 'accept', 0, NULL), ('d.example', 'accept', 0, '');",
        )
        .unwrap();
    }
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
async fn get_or_init_meta_keeps_the_first_value() {
    let (_dir, store) = store();
    assert_eq!(store.get_or_init_meta("k", "first").await.unwrap(), "first");
    assert_eq!(store.get_or_init_meta("k", "second").await.unwrap(), "first");
    assert_eq!(store.get_meta("k").await.unwrap().as_deref(), Some("first"));
}

#[tokio::test]
async fn old_single_policies_become_the_unauthenticated_case() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    {
        let conn = Connection::open(&path).unwrap();
        for sql in &MIGRATIONS[..8] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(
            "PRAGMA user_version = 8;
             INSERT INTO domains (name, policy, created_at) VALUES
               ('a.example', 'require', 0), ('b.example', 'tag', 0), ('c.example', 'accept', 0);",
        )
        .unwrap();
    }
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
    let mixed = SenderPolicy { unauthenticated: PolicyAction::Junk, forged: PolicyAction::RejectNotifyBoth };
    store.set_domain_policy("a.example", mixed).await.unwrap();
    assert_eq!(store.get_domain("a.example").await.unwrap().unwrap().policy, mixed);
}

/// The copies of one received message (SPEC 7.5) are stored together or not at all.
#[tokio::test]
async fn commit_messages_is_all_or_nothing() {
    let (_dir, store) = store();
    store.add_domain("example.org", SenderPolicy::ACCEPT).await.unwrap();
    let id = store.add_account(account("a@example.org")).await.unwrap();
    let mailbox = || Delivery::Mailbox { account_id: id, folder: Folder::Inbox, recipient: "a@example.org".into() };
    let onward = || Delivery::Queue { recipient: "x@remote.example".into() };
    store.commit_message(message("TAKEN", vec![onward()])).await.unwrap();
    // The second copy's queue id is in use: neither is stored.
    let both = vec![message("FIRST", vec![mailbox()]), message("TAKEN", vec![onward()])];
    assert!(matches!(store.commit_messages(both).await, Err(StoreError::Conflict(_))));
    assert!(store.list_mailbox("a@example.org", None).await.unwrap().is_empty());
    assert_eq!(store.list_queue().await.unwrap().len(), 1);
    let both = vec![message("FIRST", vec![mailbox()]), message("SECOND", vec![onward()])];
    let committed = store.commit_messages(both).await.unwrap();
    let ids: Vec<&str> = committed.iter().map(|c| c.queue_id.as_str()).collect();
    assert_eq!(ids, ["FIRST", "SECOND"]);
    assert_eq!(store.list_mailbox("a@example.org", None).await.unwrap().len(), 1);
    assert_eq!(store.list_queue().await.unwrap().len(), 2);
}

/// SPEC 11: leases and marks are atomic check-and-set state every node shares.
#[tokio::test]
async fn leases_and_marks() {
    let (_dir, store) = store();
    assert!(store.try_lease("pop3:a@x", "n1/1", 100, 220).await.unwrap());
    assert!(!store.try_lease("pop3:a@x", "n2/1", 150, 270).await.unwrap(), "held until 220");
    assert!(store.try_lease("pop3:a@x", "n1/1", 200, 320).await.unwrap(), "its holder renews it");
    assert!(store.try_lease("pop3:a@x", "n2/1", 321, 441).await.unwrap(), "expired: taken over");
    store.release_lease("pop3:a@x", "n1/1").await.unwrap();
    assert!(!store.try_lease("pop3:a@x", "n1/2", 322, 442).await.unwrap(), "only its holder releases it");
    store.release_lease("pop3:a@x", "n2/1").await.unwrap();
    assert!(store.try_lease("pop3:a@x", "n1/2", 323, 443).await.unwrap());
    store.try_lease("rcram:v.test:c1", "n1", 400, 700).await.unwrap();
    store.try_lease("rcram:v.test:c2", "n2", 400, 500).await.unwrap();
    store.try_lease("rcram:v_test:c3", "n2", 400, 700).await.unwrap();
    assert_eq!(store.count_leases("rcram:v.test:", 450).await.unwrap(), 2);
    assert_eq!(store.count_leases("rcram:v.test:", 600).await.unwrap(), 1, "c2 expired at 500");

    assert!(store.mark_if_older("atrn:a@x", 1000, 970).await.unwrap(), "unset");
    assert!(!store.mark_if_older("atrn:a@x", 1010, 980).await.unwrap(), "set at 1000, after 980");
    assert!(store.mark_if_older("atrn:a@x", 1030, 1000).await.unwrap(), "set at 1000, not after 1000");

    store.add_events(vec!["auth:net:a".into(), "auth:account:u".into()], 100, 0).await.unwrap();
    store.add_events(vec!["auth:net:a".into()], 150, 0).await.unwrap();
    let names = vec!["auth:net:a".to_string(), "auth:account:u".to_string(), "auth:net:b".to_string()];
    assert_eq!(store.count_events(names.clone(), 100).await.unwrap(), [2, 1, 0]);
    assert_eq!(store.count_events(names.clone(), 120).await.unwrap(), [1, 0, 0]);
    store.add_events(vec!["auth:net:b".into()], 200, 150).await.unwrap();
    assert_eq!(store.count_events(names, 0).await.unwrap(), [1, 0, 1], "events before 150 forgotten");
}
