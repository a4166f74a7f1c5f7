//! Delivery notifications (SPEC 8.3) in the SQLite store.

use crate::types::RecipientDsn;
use std::sync::Arc;

use vouchmail_proto::messenger::tracking::{Event, Record};

use super::*;
use crate::prelude::*;
use crate::tracking::*;
use crate::tracking::{OutboxState, TrackingRoute, TrackingSubject};
use crate::types::Delivery;
use crate::types::*;
use vouchmail_proto::sasl::secrets::Secrets;

const AT: i64 = 1_796_119_200; // 2026-12-01T10:00:00Z

fn open(dir: &tempfile::TempDir) -> Arc<SqliteStore> {
    Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap())
}

async fn setup(dir: &tempfile::TempDir) -> (Arc<SqliteStore>, i64) {
    let store = open(dir);
    store.add_domain("lrsupport.test", SenderPolicy::REJECT).await.unwrap();
    let abc = store
        .add_account(NewAccount {
            address: "abc555@lrsupport.test".into(),
            secrets: Secrets::default(),
            quota_bytes: 0,
        })
        .await
        .unwrap();
    store
        .add_account(NewAccount { address: "Nurse@lrsupport.test".into(), secrets: Secrets::default(), quota_bytes: 0 })
        .await
        .unwrap();
    (store, abc)
}

async fn deliver(store: &SqliteStore, abc: i64, queue_id: &str, sender: &str, auth: &str, message_id: &str) -> i64 {
    let message = NewMessage {
        queue_id: queue_id.into(),
        envelope: crate::types::Envelope { sender: sender.into(), auth_results: auth.into(), ..Default::default() },
        received_at: AT - 100,
        data: format!("Message-ID: {message_id}\r\nSubject: t\r\n\r\nbody\r\n").into_bytes(),
        spooled: None,
        deliveries: vec![(
            Delivery::Mailbox { account_id: abc, folder: Folder::Inbox, recipient: "abc555@lrsupport.test".into() },
            RecipientDsn::default(),
        )],
    };
    let committed = store.commit_message(message).await.unwrap();
    let entries = store.list_mailbox("abc555@lrsupport.test", None).await.unwrap();
    entries.iter().find(|e| e.queue_id == committed.queue_id).unwrap().id
}

fn event(subject: TrackingSubject, kind: TrackingKind, at: i64) -> NewTrackingEvent {
    NewTrackingEvent {
        recipient: "ABC555@lrsupport.test".into(),
        subject,
        kind,
        at,
        reporting_server: "mx.lrsupport.test".into(),
    }
}

#[tokio::test]
async fn a_remote_senders_records_wait_in_the_outbox_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (store, abc) = setup(&dir).await;
    let id =
        deliver(&store, abc, "Q1", "glen@galkam.test", "x-rcram=pass smtp.auth=glen@galkam.test", "<id@galkam.test>")
            .await;
    let outcome = store.track_event(event(TrackingSubject::Mailbox(id), TrackingKind::Downloaded, AT)).await.unwrap();
    let TrackingOutcome::Recorded { record: Some(record), route } = outcome else { panic!("{outcome:?}") };
    assert_eq!(route, TrackingRoute::Outbox { domain: "galkam.test".into() });
    // SPEC 8.3's example record, exactly.
    assert_eq!(
        record.to_line().unwrap(),
        "2026-12-01T10:00:00Z,<id@galkam.test>,glen@galkam.test,abc555@lrsupport.test,downloaded,mx.lrsupport.test"
    );
    // Once per message, recipient and event.
    let again = store.track_event(event(TrackingSubject::Mailbox(id), TrackingKind::Downloaded, AT + 5)).await;
    assert_eq!(again.unwrap(), TrackingOutcome::Duplicate);
    // The message is deleted (POP3 DELE), then the client decrypts and sends RECEIPT.
    store.delete_mailbox_entries("abc555@lrsupport.test", &[id]).await.unwrap();
    let receipt = event(TrackingSubject::MessageId("<id@galkam.test>".into()), TrackingKind::Decrypted, AT + 60);
    assert!(matches!(store.track_event(receipt.clone()).await.unwrap(), TrackingOutcome::Recorded { .. }));
    assert_eq!(store.track_event(receipt).await.unwrap(), TrackingOutcome::Duplicate);
    let unknown = event(TrackingSubject::MessageId("<other@galkam.test>".into()), TrackingKind::Decrypted, AT);
    assert_eq!(store.track_event(unknown).await.unwrap(), TrackingOutcome::NotFound);
    // Both wait in the outbox, and survive a restart.
    store.shutdown().await;
    drop(store);
    let store = open(&dir);
    let pending = store.list_notify_outbox().await.unwrap();
    assert_eq!(pending.len(), 2);
    assert!(pending.iter().all(|e| e.domain == "galkam.test" && e.state == OutboxState::Pending));
    assert_eq!(Record::parse(&pending[1].record).unwrap().event, Event::Decrypted);
    assert_eq!(store.next_notify_due().await.unwrap(), Some(AT));
    // Leased once: a second lease before the lease ends gets nothing.
    let leased = store.lease_notifies(AT + 60, AT + 120, 10).await.unwrap();
    assert_eq!(leased.len(), 2);
    assert!(store.lease_notifies(AT + 61, AT + 121, 10).await.unwrap().is_empty());
    store
        .finish_notifies(
            vec![
                OutboxUpdate::Sent { id: leased[0].id },
                OutboxUpdate::Retry { id: leased[1].id, next_attempt: AT + 600, error: "451 try later".into() },
            ],
            AT + 61,
        )
        .await
        .unwrap();
    let counts = store.notify_outbox_counts().await.unwrap();
    assert_eq!((counts.pending, counts.inflight, counts.sent, counts.dropped), (1, 0, 1, 0));
    assert!(store.lease_notifies(AT + 599, AT + 700, 10).await.unwrap().is_empty());
    let retried = store.lease_notifies(AT + 600, AT + 700, 10).await.unwrap();
    assert_eq!((retried.len(), retried[0].attempts, retried[0].last_error.as_deref()), (1, 1, Some("451 try later")));
    // A lease that runs out (the sender died) makes the entry due again.
    let again = store.lease_notifies(AT + 701, AT + 800, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    store
        .finish_notifies(vec![OutboxUpdate::Drop { id: again[0].id, reason: "expired".into() }], AT + 702)
        .await
        .unwrap();
    let counts = store.notify_outbox_counts().await.unwrap();
    assert_eq!((counts.pending, counts.sent, counts.dropped), (0, 1, 1));
    assert_eq!(store.next_notify_due().await.unwrap(), None);
    // Finishing an entry not in flight changes nothing.
    store.finish_notifies(vec![OutboxUpdate::Release { id: leased[0].id }], AT + 703).await.unwrap();
    assert_eq!(store.notify_outbox_counts().await.unwrap().sent, 1);
}

#[tokio::test]
async fn a_local_senders_records_go_into_its_tracking_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (store, abc) = setup(&dir).await;
    let id = deliver(
        &store,
        abc,
        "Q1",
        "Nurse@lrsupport.test",
        "auth=pass smtp.auth=nurse@lrsupport.test",
        "<n1@lrsupport.test>",
    )
    .await;
    let outcome = store.track_event(event(TrackingSubject::Mailbox(id), TrackingKind::Downloaded, AT)).await.unwrap();
    assert!(matches!(
        outcome,
        TrackingOutcome::Recorded { route: TrackingRoute::Folder { ref owner }, .. } if owner == "nurse@lrsupport.test"
    ));
    // RECEIPT before any deletion finds the message in the mailbox too.
    let receipt = event(TrackingSubject::MessageId("<n1@lrsupport.test>".into()), TrackingKind::DecryptFailed, AT + 9);
    assert!(matches!(store.track_event(receipt).await.unwrap(), TrackingOutcome::Recorded { .. }));
    let records = store.tracking_records("nurse@LRSUPPORT.test", None, 100).await.unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].record.event, Event::Downloaded);
    assert_eq!(records[1].record.event, Event::DecryptFailed);
    assert_eq!(records[0].record.sender, "Nurse@lrsupport.test");
    assert_eq!(store.tracking_records("nurse@lrsupport.test", Some(AT + 1), 100).await.unwrap(), records[1..]);
    // SPEC 8.3: past the limit, the newest records (TRACK past 10,000).
    assert_eq!(store.tracking_records("nurse@lrsupport.test", Some(AT), 1).await.unwrap(), records[1..]);
    assert!(store.tracking_records("abc555@lrsupport.test", None, 100).await.unwrap().is_empty());
    assert!(store.list_notify_outbox().await.unwrap().is_empty());
    // Not a mailbox message: the mailbox and its quota are untouched.
    assert_eq!(store.list_mailbox("nurse@lrsupport.test", None).await.unwrap(), vec![]);
}

#[tokio::test]
async fn unauthenticated_mail_makes_events_but_no_records() {
    let dir = tempfile::tempdir().unwrap();
    let (store, abc) = setup(&dir).await;
    for (queue_id, auth) in [("Q1", "none"), ("Q2", "x-trusted-relay=pass"), ("Q3", "x-authkey=pass header.from=a@b")] {
        let id = deliver(&store, abc, queue_id, "glen@galkam.test", auth, &format!("<{queue_id}@galkam.test>")).await;
        let outcome = store.track_event(event(TrackingSubject::Mailbox(id), TrackingKind::Downloaded, AT)).await;
        assert_eq!(outcome.unwrap(), TrackingOutcome::Recorded { record: None, route: TrackingRoute::Untracked });
    }
    assert_eq!(store.list_tracking_events(0, 10).await.unwrap().len(), 3);
    assert!(store.list_notify_outbox().await.unwrap().is_empty());
    // Without a Message-ID no record can be made.
    let id = deliver(&store, abc, "Q4", "glen@galkam.test", "x-rcram=pass smtp.auth=glen@galkam.test", "").await;
    let outcome = store.track_event(event(TrackingSubject::Mailbox(id), TrackingKind::Downloaded, AT)).await;
    assert!(matches!(outcome.unwrap(), TrackingOutcome::Recorded { route: TrackingRoute::Unroutable { .. }, .. }));
    // Another user's entry is not found.
    let mut other = event(TrackingSubject::Mailbox(id), TrackingKind::Downloaded, AT);
    other.recipient = "nurse@lrsupport.test".into();
    assert_eq!(store.track_event(other).await.unwrap(), TrackingOutcome::NotFound);
}

#[tokio::test]
async fn notified_records_are_stored_once_for_local_senders_only() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = setup(&dir).await;
    let record = Record::parse(
        "2026-12-01T10:00:00Z,<id@lrsupport.test>,nurse@lrsupport.test,abc555@galkam.test,downloaded,mx.galkam.test",
    )
    .unwrap();
    assert_eq!(store.store_notified_record(record.clone(), AT).await.unwrap(), NotifyStored::Stored);
    let later = Record { timestamp: AT + 99, ..record.clone() };
    assert_eq!(store.store_notified_record(later, AT).await.unwrap(), NotifyStored::Duplicate);
    let remote = Record { sender: "glen@galkam.test".into(), ..record.clone() };
    assert_eq!(store.store_notified_record(remote, AT).await.unwrap(), NotifyStored::UnknownSender);
    let nobody = Record { sender: "nobody@lrsupport.test".into(), ..record.clone() };
    assert_eq!(store.store_notified_record(nobody, AT).await.unwrap(), NotifyStored::UnknownSender);
    let stored = store.tracking_records("nurse@lrsupport.test", None, 10).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].record, record);
    assert_eq!(stored[0].stored_at, AT);
}

/// The count behind `[messenger] notify_max_per_day` (SPEC 8.3): one owner's records about
/// one recipient domain, by the time they were stored.
#[tokio::test]
async fn records_are_counted_per_owner_recipient_domain_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = setup(&dir).await;
    let record = |n: usize, recipient: &str| Record {
        timestamp: AT,
        message_id: format!("<{n}@lrsupport.test>"),
        sender: "nurse@lrsupport.test".into(),
        recipient: recipient.into(),
        event: Event::Downloaded,
        reporting_server: "mx.galkam.test".into(),
    };
    for (n, recipient, at) in [
        (1, "a@galkam.test", AT),
        (2, "B@Galkam.test", AT + 10),
        (3, "c@galkam.test", AT + 100),
        (4, "d@sub.galkam.test", AT),
        (5, "e@xgalkam.test", AT),
    ] {
        assert_eq!(store.store_notified_record(record(n, recipient), at).await.unwrap(), NotifyStored::Stored);
    }
    let count = |owner: &'static str, domain: &'static str, from: i64, until: i64| {
        let store = &store;
        async move { store.count_tracking_records(owner, domain, from..until).await.unwrap() }
    };
    assert_eq!(count("nurse@lrsupport.test", "galkam.test", AT, AT + 100).await, 2);
    assert_eq!(count("Nurse@lrsupport.test", "GALKAM.test", AT, AT + 101).await, 3);
    assert_eq!(count("nurse@lrsupport.test", "galkam.test", AT + 1, AT + 101).await, 2);
    assert_eq!(count("nurse@lrsupport.test", "sub.galkam.test", AT, AT + 101).await, 1);
    assert_eq!(count("abc555@lrsupport.test", "galkam.test", AT, AT + 101).await, 0);
}

/// SPEC 8.3: TRACK past its limit gives the newest records, listed oldest first.
#[tokio::test]
async fn past_the_limit_the_newest_records_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = setup(&dir).await;
    for n in 0..5i64 {
        let record = Record {
            // Stored out of order: the records' own times decide.
            timestamp: AT + (n * 3) % 5,
            message_id: format!("<{n}@lrsupport.test>"),
            sender: "nurse@lrsupport.test".into(),
            recipient: "a@galkam.test".into(),
            event: Event::Downloaded,
            reporting_server: "mx.galkam.test".into(),
        };
        store.store_notified_record(record, AT).await.unwrap();
    }
    let times = |records: Vec<crate::tracking::StoredTrackingRecord>| {
        records.into_iter().map(|r| r.record.timestamp - AT).collect::<Vec<_>>()
    };
    assert_eq!(times(store.tracking_records("nurse@lrsupport.test", None, 10).await.unwrap()), [0, 1, 2, 3, 4]);
    assert_eq!(times(store.tracking_records("nurse@lrsupport.test", None, 3).await.unwrap()), [2, 3, 4]);
    assert_eq!(times(store.tracking_records("nurse@lrsupport.test", Some(AT + 3), 3).await.unwrap()), [3, 4]);
}
