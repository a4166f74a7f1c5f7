//! QueueStore: the durable commit of received messages (SPEC 5: one stored copy, one queue
//! entry per recipient; several sessions' commits grouped), leases shared by nodes,
//! outcomes and retries, held mail (RFC 2645), large bodies from a spool file.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Arc;

use vouchmail_store::{
    AccountStore, Delivery, Envelope, Folder, MailboxStore, NewMessage, QueueState, QueueStore, QueueUpdate,
    RecipientDsn, SenderPolicy, SpooledBody, StoreError,
};

use crate::accounts::account;

on_every_backend!(
    store: commit_delivers_locally_and_queues_remote,
    commit_messages_is_all_or_nothing,
    lease_deliver_defer_and_delete,
    outcomes_keep_replies_and_warnings,
    renewed_leases_are_not_taken,
    held_mail_waits_for_its_customer,
    a_spooled_body_is_stored_whole,
    a_short_spool_stores_nothing,
);
on_every_backend!(
    two_nodes: concurrent_commits_are_grouped_and_all_durable,
    a_failing_commit_leaves_its_neighbours,
    two_nodes_never_lease_one_entry,
    an_expired_lease_is_leased_again,
    two_nodes_finishing_one_message_delete_it,
);

pub fn message(queue_id: &str, deliveries: Vec<Delivery>) -> NewMessage {
    NewMessage {
        queue_id: queue_id.into(),
        envelope: Envelope { sender: "s@remote.example".into(), auth_results: "none".into(), ..Default::default() },
        received_at: 1_700_000_000,
        data: b"Subject: t\r\n\r\nbody\r\n".to_vec(),
        spooled: None,
        deliveries: deliveries.into_iter().map(|d| (d, RecipientDsn::default())).collect(),
    }
}

/// A message for remote recipients, received at `now`.
fn remote(queue_id: &str, recipients: &[&str], now: i64) -> NewMessage {
    let mut m = message(queue_id, recipients.iter().map(|r| Delivery::Queue { recipient: r.to_string() }).collect());
    m.received_at = now;
    m.envelope.sender = "a@local.test".into();
    m
}

fn update(id: i64, state: QueueState, next: i64) -> QueueUpdate {
    QueueUpdate {
        id,
        state,
        last_reply: Some(format!("{state}")),
        next_attempt: next,
        attempted: true,
        delay_warned: false,
    }
}

async fn commit_delivers_locally_and_queues_remote<S: AccountStore + QueueStore + MailboxStore + ?Sized>(store: &S) {
    store.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    let a = store.add_account(account("a@example.org")).await.unwrap();
    let b = store.add_account(account("b@example.org")).await.unwrap();
    let mut m = message(
        "Q1",
        vec![
            Delivery::Mailbox { account_id: a, folder: Folder::Inbox, recipient: "a@example.org".into() },
            Delivery::Mailbox { account_id: b, folder: Folder::Junk, recipient: "b@example.org".into() },
            Delivery::Queue { recipient: "x@remote.example".into() },
        ],
    );
    m.envelope = Envelope {
        sender: "s@remote.example".into(),
        dsn_ret: Some("HDRS".into()),
        dsn_envid: Some("env-1".into()),
        auth_param: Some("<>".into()),
        authenticated_as: None,
        auth_results: "spf=pass".into(),
        body_8bit: true,
        smtputf8: false,
    };
    m.deliveries[2].1 = RecipientDsn { notify: Some("FAILURE".into()), orcpt: Some("rfc822;x@remote.example".into()) };
    let envelope = m.envelope.clone();
    let committed = store.commit_message(m).await.unwrap();
    assert_eq!(committed.queue_id, "Q1");
    let inbox = store.list_mailbox("a@example.org", Some(Folder::Inbox)).await.unwrap();
    assert_eq!(inbox.len(), 1);
    assert_eq!((inbox[0].queue_id.as_str(), inbox[0].received_at), ("Q1", 1_700_000_000));
    assert!(store.list_mailbox("b@example.org", Some(Folder::Inbox)).await.unwrap().is_empty());
    let junk = store.list_mailbox("b@example.org", Some(Folder::Junk)).await.unwrap();
    assert_eq!(junk.len(), 1);
    assert_eq!(store.list_mailbox("b@example.org", None).await.unwrap(), junk);
    assert!(matches!(store.list_mailbox("c@example.org", None).await, Err(StoreError::NotFound(_))));
    // One stored copy for all recipients.
    assert_eq!(inbox[0].message_id, junk[0].message_id);
    assert_eq!(inbox[0].message_id, committed.message_id);
    let (entry, data) = store.get_mailbox_message("A@example.org", inbox[0].id).await.unwrap().unwrap();
    assert_eq!(entry, inbox[0]);
    assert_eq!(data, b"Subject: t\r\n\r\nbody\r\n");
    assert_eq!(entry.size, data.len() as u64);
    assert!(store.get_mailbox_message("b@example.org", inbox[0].id).await.unwrap().is_none());
    let alice = store.get_account("a@example.org").await.unwrap().unwrap();
    assert_eq!((alice.message_count, alice.used_bytes), (1, data.len() as u64));
    let stored = store.get_message(committed.message_id).await.unwrap().unwrap();
    assert_eq!((stored.queue_id.as_str(), &stored.envelope, stored.data.as_slice()), ("Q1", &envelope, &data[..]));
    assert_eq!(stored.received_at, 1_700_000_000);
    let queue = store.list_queue().await.unwrap();
    assert_eq!(queue.len(), 1);
    let q = &queue[0];
    assert_eq!((q.recipient.as_str(), q.state, q.attempts), ("x@remote.example", QueueState::Queued, 0));
    assert_eq!((q.sender.as_str(), q.size, q.next_attempt), ("s@remote.example", data.len() as u64, 1_700_000_000));
    assert_eq!(q.dsn.notify.as_deref(), Some("FAILURE"));
    assert_eq!(q.dsn.orcpt.as_deref(), Some("rfc822;x@remote.example"));
    let (entries, body) = store.get_queued_message("Q1").await.unwrap().unwrap();
    assert_eq!(body, data);
    let states: Vec<(&str, QueueState, Option<&str>)> =
        entries.iter().map(|e| (e.recipient.as_str(), e.state, e.last_reply.as_deref())).collect();
    assert_eq!(
        states,
        [
            ("a@example.org", QueueState::Delivered, Some("delivered to mailbox")),
            ("b@example.org", QueueState::Delivered, Some("delivered to mailbox")),
            ("x@remote.example", QueueState::Queued, None),
        ]
    );
    assert_eq!(store.queue_counts().await.unwrap().queued, 1);
    assert_eq!(store.delete_queued_message("Q1").await.unwrap(), 1);
    assert!(store.list_queue().await.unwrap().is_empty());
    assert!(matches!(store.delete_queued_message("nope").await, Err(StoreError::NotFound(_))));
    // The mailboxes still hold the message.
    assert!(store.get_mailbox_message("a@example.org", inbox[0].id).await.unwrap().is_some());
    assert!(matches!(store.commit_message(message("Q1", vec![])).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.get_message(-1).await.unwrap(), None);
    assert_eq!(store.get_queued_message("nope").await.unwrap(), None);
}

/// The copies of one received message (SPEC 7.5) are stored together or not at all.
async fn commit_messages_is_all_or_nothing<S: AccountStore + QueueStore + MailboxStore + ?Sized>(store: &S) {
    store.add_domain("example.org", SenderPolicy::ACCEPT).await.unwrap();
    let id = store.add_account(account("a@example.org")).await.unwrap();
    let mailbox = || Delivery::Mailbox { account_id: id, folder: Folder::Inbox, recipient: "a@example.org".into() };
    let onward = || Delivery::Queue { recipient: "x@remote.example".into() };
    store.commit_message(message("TAKEN", vec![onward()])).await.unwrap();
    // The second copy's queue id is in use: neither is stored.
    let both = vec![message("FIRST", vec![mailbox()]), message("TAKEN", vec![onward()])];
    assert!(matches!(store.commit_messages(both).await, Err(StoreError::Conflict(_))));
    assert!(store.list_mailbox("a@example.org", None).await.unwrap().is_empty());
    assert_eq!(store.get_account("a@example.org").await.unwrap().unwrap().message_count, 0);
    assert_eq!(store.list_queue().await.unwrap().len(), 1);
    let both = vec![message("FIRST", vec![mailbox()]), message("SECOND", vec![onward()])];
    let committed = store.commit_messages(both).await.unwrap();
    let ids: Vec<&str> = committed.iter().map(|c| c.queue_id.as_str()).collect();
    assert_eq!(ids, ["FIRST", "SECOND"]);
    assert_ne!(committed[0].message_id, committed[1].message_id);
    assert_eq!(store.list_mailbox("a@example.org", None).await.unwrap().len(), 1);
    assert_eq!(store.list_queue().await.unwrap().len(), 2);
    assert_eq!(store.commit_messages(Vec::new()).await.unwrap(), []);
}

async fn lease_deliver_defer_and_delete<S: AccountStore + QueueStore + ?Sized>(store: &S) {
    store.add_domain("local.test", SenderPolicy::JUNK).await.unwrap();
    let now = 1_000;
    assert_eq!(store.next_due().await.unwrap(), None);
    store.commit_message(remote("Q1", &["x@r.test", "y@r.test"], now)).await.unwrap();
    assert_eq!(store.next_due().await.unwrap(), Some(now));
    // Not due before its time.
    assert!(store.lease_due(now - 1, now + 60, 10).await.unwrap().is_empty());
    let leased = store.lease_due(now, now + 60, 10).await.unwrap();
    assert_eq!(leased.len(), 2);
    assert!(leased.iter().all(|l| l.entry.state == QueueState::InFlight && !l.delay_warned));
    assert_eq!(leased[0].entry.queue_id, "Q1");
    assert!(leased[0].entry.id < leased[1].entry.id);
    // Leased entries are not handed out twice while the lease runs...
    assert!(store.lease_due(now + 59, now + 120, 10).await.unwrap().is_empty());
    assert_eq!(store.queue_counts().await.unwrap().inflight, 2);
    assert_eq!(store.next_due().await.unwrap(), Some(now + 60), "the lease's end");
    let msg = store.get_message(leased[0].entry.message_id).await.unwrap().unwrap();
    assert_eq!(msg.queue_id, "Q1");
    // ... but are once it ran out (the deliverer died).
    let again = store.lease_due(now + 60, now + 120, 10).await.unwrap();
    assert_eq!(again.len(), 2);
    store
        .record_delivery(
            vec![
                update(again[0].entry.id, QueueState::Delivered, now),
                update(again[1].entry.id, QueueState::Deferred, now + 300),
            ],
            vec![],
        )
        .await
        .unwrap();
    let counts = store.queue_counts().await.unwrap();
    assert_eq!((counts.deferred, counts.inflight, counts.pending()), (1, 0, 1));
    assert_eq!(store.next_due().await.unwrap(), Some(now + 300));
    assert_eq!(store.retry_queued(Some("Q1"), now + 1).await.unwrap(), 1);
    assert_eq!(store.retry_queued(Some("nope"), now).await.unwrap_err(), StoreError::NotFound("queue id nope".into()));
    let last = store.lease_due(now + 1, now + 60, 10).await.unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].entry.attempts, 1);
    // Only leased entries take an outcome.
    let untouched = update(last[0].entry.id + 1000, QueueState::Delivered, now);
    store.record_delivery(vec![untouched], vec![]).await.unwrap();
    let invalid = update(last[0].entry.id, QueueState::InFlight, now);
    assert!(matches!(store.record_delivery(vec![invalid], vec![]).await, Err(StoreError::Invalid(_))));
    // The last outcome finishes the message: it is deleted, and a notice is committed with it.
    store
        .record_delivery(
            vec![update(last[0].entry.id, QueueState::Bounced, now)],
            vec![remote("DSN1", &["a@elsewhere.test"], now)],
        )
        .await
        .unwrap();
    assert!(store.get_queued_message("Q1").await.unwrap().is_none());
    assert_eq!(store.get_message(msg.id).await.unwrap(), None);
    let queue = store.list_queue().await.unwrap();
    assert_eq!(queue.len(), 1);
    assert_eq!(queue[0].queue_id, "DSN1");
    // A limit takes the earliest due first.
    store.commit_message(remote("Q2", &["a@r.test"], now - 10)).await.unwrap();
    let first = store.lease_due(now + 1_000, now + 2_000, 1).await.unwrap();
    assert_eq!(first.iter().map(|l| l.entry.queue_id.as_str()).collect::<Vec<_>>(), ["Q2"]);
    // Retrying everything makes every pending entry due now, never later.
    assert_eq!(store.retry_queued(None, now - 100).await.unwrap(), 1, "DSN1, due at now");
    assert_eq!(store.next_due().await.unwrap(), Some(now - 100));
}

/// What an outcome keeps: the last reply when none is given, a delay warning once sent,
/// the attempt count; a message handed back untried (`Queued`) is not an attempt.
async fn outcomes_keep_replies_and_warnings<S: AccountStore + QueueStore + ?Sized>(store: &S) {
    store.commit_message(remote("Q1", &["x@r.test"], 100)).await.unwrap();
    let id = store.lease_due(100, 160, 10).await.unwrap()[0].entry.id;
    let mut deferred = update(id, QueueState::Deferred, 200);
    deferred.last_reply = Some("451 try later".into());
    deferred.delay_warned = true;
    store.record_delivery(vec![deferred], vec![]).await.unwrap();
    let leased = store.lease_due(200, 260, 10).await.unwrap();
    assert!(leased[0].delay_warned);
    assert_eq!((leased[0].entry.attempts, leased[0].entry.last_reply.as_deref()), (1, Some("451 try later")));
    let untried = QueueUpdate {
        id,
        state: QueueState::Queued,
        last_reply: None,
        next_attempt: 300,
        attempted: false,
        delay_warned: false,
    };
    store.record_delivery(vec![untried], vec![]).await.unwrap();
    let leased = store.lease_due(300, 360, 10).await.unwrap();
    assert!(leased[0].delay_warned, "a warning once sent stays sent");
    assert_eq!((leased[0].entry.attempts, leased[0].entry.last_reply.as_deref()), (1, Some("451 try later")));
    // A retry never postpones: an entry due earlier stays due then.
    store.record_delivery(vec![update(id, QueueState::Deferred, 500)], vec![]).await.unwrap();
    assert_eq!(store.retry_queued(Some("Q1"), 600).await.unwrap(), 1);
    assert_eq!(store.next_due().await.unwrap(), Some(500));
    assert_eq!(store.retry_queued(None, 600).await.unwrap(), 0);
    assert_eq!(store.retry_queued(Some("Q1"), 400).await.unwrap(), 1);
    assert_eq!(store.next_due().await.unwrap(), Some(400));
}

async fn renewed_leases_are_not_taken<S: AccountStore + QueueStore + ?Sized>(store: &S) {
    store.commit_message(remote("Q1", &["x@r.test", "y@r.test"], 100)).await.unwrap();
    let leased = store.lease_due(100, 160, 10).await.unwrap();
    store.renew_leases(vec![leased[0].entry.id], 400).await.unwrap();
    // Renewing what is no longer in flight does nothing.
    store.record_delivery(vec![update(leased[1].entry.id, QueueState::Delivered, 100)], vec![]).await.unwrap();
    store.renew_leases(vec![leased[1].entry.id, 12345], 400).await.unwrap();
    assert!(store.lease_due(300, 500, 10).await.unwrap().is_empty());
    assert_eq!(store.next_due().await.unwrap(), Some(400));
    let taken = store.lease_due(400, 500, 10).await.unwrap();
    assert_eq!(taken.iter().map(|l| l.entry.id).collect::<Vec<_>>(), [leased[0].entry.id]);
    store.renew_leases(Vec::new(), 0).await.unwrap();
}

async fn held_mail_waits_for_its_customer<S: AccountStore + QueueStore + ?Sized>(store: &S) {
    let held = |recipient: &str, domain: &str| Delivery::Held { recipient: recipient.into(), domain: domain.into() };
    let mut m = message("H1", vec![held("a@h1.test", "h1.test"), held("b@h2.test", "h2.test")]);
    m.received_at = 100;
    store.commit_message(m).await.unwrap();
    let mut m = message("H2", vec![held("c@h1.test", "h1.test"), Delivery::Queue { recipient: "d@r.test".into() }]);
    m.received_at = 200;
    store.commit_message(m).await.unwrap();
    // The scheduler leaves held mail alone.
    let due = store.lease_due(1_000, 1_060, 10).await.unwrap();
    assert_eq!(due.iter().map(|l| l.entry.recipient.as_str()).collect::<Vec<_>>(), ["d@r.test"]);
    assert_eq!(store.count_held(&["h1.test".into()]).await.unwrap(), 2);
    assert_eq!(store.count_held(&["h1.test".into(), "h2.test".into()]).await.unwrap(), 3);
    assert_eq!(store.count_held(&[]).await.unwrap(), 0);
    assert!(store.lease_held(&[], 1_000, 1_060).await.unwrap().is_empty());
    let taken = store.lease_held(&["h1.test".into()], 1_000, 1_060).await.unwrap();
    let recipients: Vec<&str> = taken.iter().map(|l| l.entry.recipient.as_str()).collect();
    assert_eq!(recipients, ["a@h1.test", "c@h1.test"], "by message");
    assert!(taken.iter().all(|l| l.entry.state == QueueState::InFlight));
    // Leased: not again until the lease ends, but still counted as held.
    assert!(store.lease_held(&["h1.test".into()], 1_059, 1_100).await.unwrap().is_empty());
    assert_eq!(store.count_held(&["h1.test".into()]).await.unwrap(), 2);
    assert_eq!(store.lease_held(&["h1.test".into()], 1_060, 1_100).await.unwrap().len(), 2);
    // Its lifetime over: mail received before the cut-off, of any held domain.
    let expired = store.lease_expired_held(150, 2_000, 2_060).await.unwrap();
    let recipients: Vec<&str> = expired.iter().map(|l| l.entry.recipient.as_str()).collect();
    assert_eq!(recipients, ["a@h1.test", "b@h2.test"]);
    store.record_delivery(vec![update(expired[1].entry.id, QueueState::Bounced, 2_000)], vec![]).await.unwrap();
    assert_eq!(store.count_held(&["h2.test".into()]).await.unwrap(), 0);
}

/// A body partly in a spool file is stored whole (its start in memory, the rest read from
/// the file), and read back whole.
async fn a_spooled_body_is_stored_whole<S: AccountStore + QueueStore + MailboxStore + ?Sized>(store: &S) {
    store.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    let a = store.add_account(account("a@example.org")).await.unwrap();
    let head = b"Received: by us\r\nSubject: big\r\n\r\n".to_vec();
    // Over a megabyte, not a multiple of any chunk size.
    let rest: Vec<u8> = (0..1_300_007u32).map(|i| (i % 251) as u8).collect();
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(&rest).unwrap();
    file.write_all(b"not part of the message").unwrap();
    let mut m = message(
        "BIG",
        vec![
            Delivery::Mailbox { account_id: a, folder: Folder::Inbox, recipient: "a@example.org".into() },
            Delivery::Queue { recipient: "x@remote.example".into() },
        ],
    );
    m.data = head.clone();
    m.spooled = Some(SpooledBody { file: Arc::new(file), len: rest.len() as u64 });
    let size = m.size();
    let committed = store.commit_message(m).await.unwrap();
    let whole: Vec<u8> = head.iter().chain(&rest).copied().collect();
    assert_eq!(size, whole.len() as u64);
    let stored = store.get_message(committed.message_id).await.unwrap().unwrap();
    assert!(stored.data == whole, "the whole body, in order");
    let entry = store.list_mailbox("a@example.org", None).await.unwrap().remove(0);
    assert_eq!(entry.size, size);
    assert_eq!(store.get_account("a@example.org").await.unwrap().unwrap().used_bytes, size);
    assert_eq!(store.list_queue().await.unwrap()[0].size, size);
    // Beside small ones in one group, and as one of the copies of commit_messages.
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(&rest).unwrap();
    let mut big = message("BIG2", vec![Delivery::Queue { recipient: "y@remote.example".into() }]);
    big.spooled = Some(SpooledBody { file: Arc::new(file), len: rest.len() as u64 });
    let small = message("SMALL", vec![Delivery::Queue { recipient: "y@remote.example".into() }]);
    let (x, y) = tokio::join!(store.commit_messages(vec![small, big]), store.commit_message(message("OTHER", vec![])));
    let (x, _) = (x.unwrap(), y.unwrap());
    let stored = store.get_message(x[1].message_id).await.unwrap().unwrap();
    assert_eq!(stored.data.len(), b"Subject: t\r\n\r\nbody\r\n".len() + rest.len());
    assert_eq!(store.get_message(x[0].message_id).await.unwrap().unwrap().data, b"Subject: t\r\n\r\nbody\r\n");
}

/// A spool file shorter than announced (the disk lost it) stores nothing: the caller
/// answers 451 and the client sends again.
async fn a_short_spool_stores_nothing<S: AccountStore + QueueStore + MailboxStore + ?Sized>(store: &S) {
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(&[b'x'; 1000]).unwrap();
    let mut m = message("SHORT", vec![Delivery::Queue { recipient: "x@remote.example".into() }]);
    m.spooled = Some(SpooledBody { file: Arc::new(file), len: 5000 });
    let error = store.commit_message(m).await.unwrap_err();
    assert!(error.is_temporary(), "{error}");
    assert!(store.get_queued_message("SHORT").await.unwrap().is_none());
    assert!(store.list_queue().await.unwrap().is_empty());
    // The store goes on.
    store.commit_message(message("NEXT", vec![])).await.unwrap();
}

/// SPEC 5: every commit is durable when it returns, however many sessions commit at
/// once; another handle on the store (another node, or the store reopened) sees them all.
async fn concurrent_commits_are_grouped_and_all_durable<S: AccountStore + QueueStore + MailboxStore + ?Sized>(
    store: &S,
    other: &S,
) {
    store.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    let a = store.add_account(account("a@example.org")).await.unwrap();
    let commits = (0..300).map(|i| {
        let d = Delivery::Mailbox { account_id: a, folder: Folder::Inbox, recipient: "a@example.org".into() };
        store.commit_message(message(&format!("C{i}"), vec![d]))
    });
    for committed in futures_util::future::join_all(commits).await {
        committed.unwrap();
    }
    assert_eq!(other.list_mailbox("a@example.org", None).await.unwrap().len(), 300);
    let alice = other.get_account("a@example.org").await.unwrap().unwrap();
    assert_eq!(alice.message_count, 300);
    assert_eq!(alice.used_bytes, 300 * b"Subject: t\r\n\r\nbody\r\n".len() as u64);
}

/// A commit that fails (its queue id in use) fails alone: the commits grouped with it
/// are stored, whichever transaction they share.
async fn a_failing_commit_leaves_its_neighbours<S: AccountStore + QueueStore + MailboxStore + ?Sized>(
    store: &S,
    other: &S,
) {
    store.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    let a = store.add_account(account("a@example.org")).await.unwrap();
    store.commit_message(message("TAKEN", vec![])).await.unwrap();
    let inbox = || Delivery::Mailbox { account_id: a, folder: Folder::Inbox, recipient: "a@example.org".into() };
    let commits = (0..100).map(|i| {
        let queue_id = if i % 10 == 5 { "TAKEN".to_string() } else { format!("N{i}") };
        store.commit_message(message(&queue_id, vec![inbox(), Delivery::Queue { recipient: "x@r.test".into() }]))
    });
    let results = futures_util::future::join_all(commits).await;
    for (i, result) in results.iter().enumerate() {
        match result {
            Err(StoreError::Conflict(_)) if i % 10 == 5 => {}
            Ok(c) if i % 10 != 5 => assert_eq!(c.queue_id, format!("N{i}")),
            other => panic!("commit {i}: {other:?}"),
        }
    }
    assert_eq!(other.list_mailbox("a@example.org", None).await.unwrap().len(), 90);
    assert_eq!(other.list_queue().await.unwrap().len(), 90);
    assert_eq!(other.get_account("a@example.org").await.unwrap().unwrap().message_count, 90);
}

/// SPEC 5 and 11: nodes leasing from one queue at the same time never get the same entry,
/// and between them take every due one.
async fn two_nodes_never_lease_one_entry<S: AccountStore + QueueStore + ?Sized>(a: &S, b: &S) {
    for i in 0..40 {
        let recipients: Vec<String> = (0..5).map(|r| format!("r{r}@remote.test")).collect();
        let recipients: Vec<&str> = recipients.iter().map(String::as_str).collect();
        a.commit_message(remote(&format!("M{i}"), &recipients, 100 + i)).await.unwrap();
    }
    let mut seen = BTreeSet::new();
    let mut total = 0;
    for round in 0..20 {
        let (x, y) = tokio::join!(a.lease_due(1_000, 2_000, 7), b.lease_due(1_000, 2_000, 7));
        let (x, y) = (x.unwrap(), y.unwrap());
        for leased in x.iter().chain(&y) {
            assert!(seen.insert(leased.entry.id), "round {round}: entry {} leased twice", leased.entry.id);
        }
        total += x.len() + y.len();
    }
    assert_eq!(total, 200, "every entry leased, once");
    assert!(a.lease_due(1_000, 2_000, 100).await.unwrap().is_empty());
    assert!(b.lease_due(1_999, 2_000, 100).await.unwrap().is_empty());
}

/// A node that leased entries and died: once the lease ran out, another node leases them
/// (SPEC 5: nothing is lost when a node dies), and the dead node's late outcome no
/// longer counts once the other has recorded its own.
async fn an_expired_lease_is_leased_again<S: AccountStore + QueueStore + ?Sized>(a: &S, b: &S) {
    a.commit_message(remote("Q1", &["x@r.test", "y@r.test"], 100)).await.unwrap();
    let dead = a.lease_due(100, 160, 10).await.unwrap();
    assert_eq!(dead.len(), 2);
    assert!(b.lease_due(159, 219, 10).await.unwrap().is_empty(), "held until 160");
    assert_eq!(b.next_due().await.unwrap(), Some(160));
    let taken = b.lease_due(160, 220, 10).await.unwrap();
    assert_eq!(
        taken.iter().map(|l| l.entry.id).collect::<Vec<_>>(),
        dead.iter().map(|l| l.entry.id).collect::<Vec<_>>()
    );
    assert_eq!(taken[0].entry.attempts, 0);
    b.record_delivery(taken.iter().map(|l| update(l.entry.id, QueueState::Delivered, 160)).collect(), vec![])
        .await
        .unwrap();
    a.record_delivery(dead.iter().map(|l| update(l.entry.id, QueueState::Deferred, 500)).collect(), vec![])
        .await
        .unwrap();
    assert!(a.get_queued_message("Q1").await.unwrap().is_none(), "delivered, and gone");
    assert_eq!(a.queue_counts().await.unwrap().pending(), 0);
}

/// Two nodes recording the last outcomes of one message at the same time: it has nothing
/// left to deliver, and it is deleted (by one of them), never left behind by both.
async fn two_nodes_finishing_one_message_delete_it<S: AccountStore + QueueStore + ?Sized>(a: &S, b: &S) {
    for i in 0..20 {
        let queue_id = format!("M{i}");
        a.commit_message(remote(&queue_id, &["x@r.test", "y@r.test"], 100)).await.unwrap();
        let x = a.lease_due(100, 160, 1).await.unwrap();
        let y = b.lease_due(100, 160, 1).await.unwrap();
        assert_eq!((x.len(), y.len()), (1, 1));
        let (p, q) = tokio::join!(
            a.record_delivery(vec![update(x[0].entry.id, QueueState::Delivered, 100)], vec![]),
            b.record_delivery(vec![update(y[0].entry.id, QueueState::Bounced, 100)], vec![]),
        );
        p.unwrap();
        q.unwrap();
        assert!(a.get_queued_message(&queue_id).await.unwrap().is_none(), "{queue_id} left behind");
        assert!(a.get_message(x[0].entry.message_id).await.unwrap().is_none());
    }
}
