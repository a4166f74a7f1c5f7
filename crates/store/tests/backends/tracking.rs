//! TrackingStore (SPEC 8.3): events once per message and recipient, records routed into
//! the local sender's Tracking folder or the NOTIFY outbox, receiving NOTIFY, TRACK, the
//! outbox's leases across nodes, and event ids that readers can follow as a cursor while
//! several nodes write.

use std::cell::Cell;
use std::collections::BTreeSet;

use vouchmail_proto::messenger::tracking::{Event, Record};
use vouchmail_proto::sasl::secrets::Secrets;
use vouchmail_store::{
    AccountStore, Delivery, Envelope, Folder, MailboxStore, NewAccount, NewMessage, NewTrackingEvent, NotifyStored,
    OutboxState, OutboxUpdate, QueueStore, RecipientDsn, SenderPolicy, StoreError, StoredTrackingRecord, TrackingKind,
    TrackingOutcome, TrackingRoute, TrackingStore, TrackingSubject,
};

use crate::support::Backend;

on_every_backend!(
    store: notified_records_are_stored_once_for_local_senders_only,
    records_are_counted_per_owner_recipient_domain_and_time,
    past_the_limit_the_newest_records_are_listed,
);
on_every_backend!(two_nodes: a_record_notified_to_two_nodes_at_once_is_stored_once);

on_every_backend!(
    store: downloads_are_recorded_once_per_message_and_recipient,
    a_local_senders_records_go_into_its_tracking_folder,
    unauthenticated_mail_makes_events_but_no_records,
    a_batch_of_events_is_recorded_in_one_write_with_an_outcome_each,
    messages_read_by_a_fetch_are_recorded_as_if_looked_up,
);
on_every_backend!(itself: a_remote_senders_records_wait_in_the_outbox_across_a_restart);
on_every_backend!(
    two_nodes: two_nodes_never_lease_the_same_notify,
    event_ids_are_a_cursor_while_two_nodes_write,
);

/// The concerns these tests use: accounts to track, messages committed into mailboxes.
pub trait Tracked: AccountStore + QueueStore + MailboxStore + TrackingStore {}
impl<T: AccountStore + QueueStore + MailboxStore + TrackingStore + ?Sized> Tracked for T {}

const AT: i64 = 1_796_119_200; // 2026-12-01T10:00:00Z
const RCRAM: &str = "x-rcram=pass smtp.auth=glen@galkam.test";

/// The recipient's domain with abc555 (whose account id is returned) and Nurse.
async fn setup<S: AccountStore + ?Sized>(store: &S) -> i64 {
    store.add_domain("lrsupport.test", SenderPolicy::REJECT).await.unwrap();
    let account = |address: &str| NewAccount { address: address.into(), secrets: Secrets::default(), quota_bytes: 0 };
    let abc = store.add_account(account("abc555@lrsupport.test")).await.unwrap();
    store.add_account(account("Nurse@lrsupport.test")).await.unwrap();
    abc
}

fn message(queue_id: &str, sender: &str, auth: &str, message_id: &str, to: &[(i64, &str)]) -> NewMessage {
    let header = if message_id.is_empty() { String::new() } else { format!("Message-ID: {message_id}\r\n") };
    NewMessage {
        queue_id: queue_id.into(),
        envelope: Envelope { sender: sender.into(), auth_results: auth.into(), ..Default::default() },
        received_at: AT - 100,
        data: format!("{header}Subject: t\r\n\r\nbody\r\n").into_bytes(),
        spooled: None,
        deliveries: to
            .iter()
            .map(|(account_id, recipient)| {
                let delivery = Delivery::Mailbox {
                    account_id: *account_id,
                    folder: Folder::Inbox,
                    recipient: recipient.to_string(),
                };
                (delivery, RecipientDsn::default())
            })
            .collect(),
    }
}

/// Commits a message to abc555's inbox; its mailbox entry's id.
async fn deliver<S: QueueStore + MailboxStore + ?Sized>(
    store: &S,
    abc: i64,
    queue_id: &str,
    sender: &str,
    auth: &str,
    message_id: &str,
) -> i64 {
    let committed = store
        .commit_message(message(queue_id, sender, auth, message_id, &[(abc, "abc555@lrsupport.test")]))
        .await
        .unwrap();
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

fn retr(mailbox_id: i64) -> NewTrackingEvent {
    event(TrackingSubject::Mailbox(mailbox_id), TrackingKind::Downloaded, AT)
}

fn notified(n: usize, recipient: &str) -> Record {
    Record {
        timestamp: AT,
        message_id: format!("<{n}@lrsupport.test>"),
        sender: "nurse@lrsupport.test".into(),
        recipient: recipient.into(),
        event: Event::Downloaded,
        reporting_server: "mx.galkam.test".into(),
    }
}

async fn downloads_are_recorded_once_per_message_and_recipient<S: Tracked + ?Sized>(store: &S) {
    store.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    let account = |address: &str| NewAccount { address: address.into(), secrets: Secrets::default(), quota_bytes: 0 };
    let a = store.add_account(account("a@example.org")).await.unwrap();
    let b = store.add_account(account("b@example.org")).await.unwrap();
    let mut m = message("Q1", "s@remote.example", "none", "", &[(a, "a@example.org"), (b, "b@example.org")]);
    m.data = b"Message-ID:\r\n <abc@remote.example>\r\nSubject: t\r\n\r\nbody\r\n".to_vec();
    m.received_at = 1_700_000_000;
    store.commit_message(m).await.unwrap();
    let a_entry = store.list_mailbox("a@example.org", None).await.unwrap()[0].id;
    let b_entry = store.list_mailbox("b@example.org", None).await.unwrap()[0].id;
    assert!(store.record_download("a@example.org", a_entry).await.unwrap());
    assert!(!store.record_download("a@example.org", a_entry).await.unwrap());
    assert!(matches!(store.record_download("a@example.org", b_entry).await, Err(StoreError::NotFound(_))));
    assert!(store.record_download("B@example.org", b_entry).await.unwrap());
    let events = store.list_tracking_events(0, 10).await.unwrap();
    assert_eq!(events.len(), 2);
    let e = &events[0];
    assert_eq!(
        (e.queue_id.as_str(), e.message_id.as_str(), e.sender.as_str(), e.recipient.as_str(), e.kind),
        ("Q1", "<abc@remote.example>", "s@remote.example", "a@example.org", TrackingKind::Downloaded)
    );
    assert!(e.occurred_at > 1_700_000_000);
    assert_eq!(events[1].recipient, "b@example.org");
    // The cursor and the limit.
    assert_eq!(store.list_tracking_events(e.id, 10).await.unwrap(), events[1..]);
    assert_eq!(store.list_tracking_events(0, 1).await.unwrap(), events[..1]);
    assert_eq!(store.list_tracking_events(events[1].id, 10).await.unwrap(), vec![]);
    // The record outlives the message.
    store.delete_mailbox_entries("a@example.org", &[a_entry]).await.unwrap();
    store.delete_mailbox_entries("b@example.org", &[b_entry]).await.unwrap();
    assert_eq!(store.list_tracking_events(0, 10).await.unwrap(), events);
}

/// SPEC 8.3: a remote sender's records are queued durably for its domain's home server;
/// the outbox survives a restart, an entry is leased by one sender at a time, retried,
/// and dropped for good.
async fn a_remote_senders_records_wait_in_the_outbox_across_a_restart(backend: &mut Backend) {
    let store = backend.store();
    let abc = setup(store).await;
    let id = deliver(store, abc, "Q1", "glen@galkam.test", RCRAM, "<id@galkam.test>").await;
    let outcome = store.track_event(retr(id)).await.unwrap();
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
    backend.reopen().await;
    let store = backend.store();
    let pending = store.list_notify_outbox().await.unwrap();
    assert_eq!(pending.len(), 2);
    assert!(pending.iter().all(|e| e.domain == "galkam.test" && e.state == OutboxState::Pending));
    assert!(pending.iter().all(|e| e.attempts == 0 && e.last_error.is_none() && e.created_at >= AT));
    assert_eq!(Record::parse(&pending[1].record).unwrap().event, Event::Decrypted);
    assert_eq!(store.next_notify_due().await.unwrap(), Some(AT));
    // Leased once: a second lease before the lease ends gets nothing.
    let leased = store.lease_notifies(AT + 60, AT + 120, 10).await.unwrap();
    assert_eq!(leased.iter().map(|e| e.id).collect::<Vec<_>>(), pending.iter().map(|e| e.id).collect::<Vec<_>>());
    assert!(leased.iter().all(|e| e.state == OutboxState::InFlight));
    assert!(store.lease_notifies(AT + 61, AT + 121, 10).await.unwrap().is_empty());
    assert_eq!(store.next_notify_due().await.unwrap(), Some(AT + 120), "when the lease ends");
    let counts = store.notify_outbox_counts().await.unwrap();
    assert_eq!((counts.pending, counts.inflight), (0, 2));
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
    assert_eq!(store.list_notify_outbox().await.unwrap().len(), 1, "sent entries are history");
    assert_eq!(store.next_notify_due().await.unwrap(), Some(AT + 600));
    assert!(store.lease_notifies(AT + 599, AT + 700, 10).await.unwrap().is_empty());
    let retried = store.lease_notifies(AT + 600, AT + 700, 10).await.unwrap();
    assert_eq!((retried.len(), retried[0].attempts, retried[0].last_error.as_deref()), (1, 1, Some("451 try later")));
    // A lease that runs out (the sender died) makes the entry due again.
    let again = store.lease_notifies(AT + 701, AT + 800, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    // Released (not tried): due at once, no attempt counted, the last error kept.
    store.finish_notifies(vec![OutboxUpdate::Release { id: again[0].id }], AT + 702).await.unwrap();
    let released = store.list_notify_outbox().await.unwrap();
    assert_eq!(
        (released[0].state, released[0].attempts, released[0].next_attempt),
        (OutboxState::Pending, 1, AT + 702)
    );
    assert_eq!(released[0].last_error.as_deref(), Some("451 try later"));
    let again = store.lease_notifies(AT + 702, AT + 800, 10).await.unwrap();
    store
        .finish_notifies(vec![OutboxUpdate::Drop { id: again[0].id, reason: "expired".into() }], AT + 703)
        .await
        .unwrap();
    let counts = store.notify_outbox_counts().await.unwrap();
    assert_eq!((counts.pending, counts.sent, counts.dropped), (0, 1, 1));
    assert_eq!(store.next_notify_due().await.unwrap(), None);
    assert!(store.list_notify_outbox().await.unwrap().is_empty());
    // Finishing an entry not in flight changes nothing.
    store.finish_notifies(vec![OutboxUpdate::Release { id: leased[0].id }], AT + 704).await.unwrap();
    assert_eq!(store.notify_outbox_counts().await.unwrap().sent, 1);
}

async fn a_local_senders_records_go_into_its_tracking_folder<S: Tracked + ?Sized>(store: &S) {
    let abc = setup(store).await;
    let auth = "auth=pass smtp.auth=nurse@lrsupport.test";
    let id = deliver(store, abc, "Q1", "Nurse@lrsupport.test", auth, "<n1@lrsupport.test>").await;
    let outcome = store.track_event(retr(id)).await.unwrap();
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
    assert_eq!((records[0].owner.as_str(), records[0].stored_at), ("nurse@lrsupport.test", AT));
    assert_eq!(records[0].record.recipient, "abc555@lrsupport.test");
    assert!(records[0].id < records[1].id);
    assert_eq!(store.tracking_records("nurse@lrsupport.test", Some(AT + 1), 100).await.unwrap(), records[1..]);
    // SPEC 8.3: past the limit, the newest records (TRACK past 10,000).
    assert_eq!(store.tracking_records("nurse@lrsupport.test", Some(AT), 1).await.unwrap(), records[1..]);
    assert!(store.tracking_records("abc555@lrsupport.test", None, 100).await.unwrap().is_empty());
    assert!(store.list_notify_outbox().await.unwrap().is_empty());
    // Not a mailbox message: the mailbox and its quota are untouched.
    assert_eq!(store.list_mailbox("nurse@lrsupport.test", None).await.unwrap(), vec![]);
    assert_eq!(store.get_account("nurse@lrsupport.test").await.unwrap().unwrap().message_count, 0);
    // A sender in a local domain without a mailbox here: recorded, but unroutable.
    let id = deliver(store, abc, "Q2", "gone@lrsupport.test", "auth=pass", "<g1@lrsupport.test>").await;
    let outcome = store.track_event(retr(id)).await.unwrap();
    assert!(matches!(outcome, TrackingOutcome::Recorded { record: Some(_), route: TrackingRoute::Unroutable { .. } }));
    assert!(store.tracking_records("gone@lrsupport.test", None, 100).await.unwrap().is_empty());
}

async fn unauthenticated_mail_makes_events_but_no_records<S: Tracked + ?Sized>(store: &S) {
    let abc = setup(store).await;
    for (queue_id, auth) in [("Q1", "none"), ("Q2", "x-trusted-relay=pass"), ("Q3", "x-authkey=pass header.from=a@b")] {
        let id = deliver(store, abc, queue_id, "glen@galkam.test", auth, &format!("<{queue_id}@galkam.test>")).await;
        let outcome = store.track_event(retr(id)).await;
        assert_eq!(outcome.unwrap(), TrackingOutcome::Recorded { record: None, route: TrackingRoute::Untracked });
    }
    assert_eq!(store.list_tracking_events(0, 10).await.unwrap().len(), 3);
    assert!(store.list_notify_outbox().await.unwrap().is_empty());
    // An untracked message stays untracked for a RECEIPT after its deletion.
    let q1 = store.list_mailbox("abc555@lrsupport.test", None).await.unwrap()[0].id;
    store.delete_mailbox_entries("abc555@lrsupport.test", &[q1]).await.unwrap();
    let receipt = event(TrackingSubject::MessageId("<Q1@galkam.test>".into()), TrackingKind::Decrypted, AT);
    let outcome = store.track_event(receipt).await.unwrap();
    assert_eq!(outcome, TrackingOutcome::Recorded { record: None, route: TrackingRoute::Untracked });
    // Without a Message-ID no record can be made.
    let id = deliver(store, abc, "Q4", "glen@galkam.test", RCRAM, "").await;
    let outcome = store.track_event(retr(id)).await;
    assert!(matches!(outcome.unwrap(), TrackingOutcome::Recorded { route: TrackingRoute::Unroutable { .. }, .. }));
    // Another user's entry is not found.
    let mut other = retr(id);
    other.recipient = "nurse@lrsupport.test".into();
    assert_eq!(store.track_event(other).await.unwrap(), TrackingOutcome::NotFound);
    assert_eq!(store.track_event(retr(id + 1000)).await.unwrap(), TrackingOutcome::NotFound);
}

/// An IMAP FETCH batch's `downloaded` events in one write: each gets the outcome it
/// would get alone, in order (a duplicate within the batch too), and nothing is lost.
async fn a_batch_of_events_is_recorded_in_one_write_with_an_outcome_each<S: Tracked + ?Sized>(store: &S) {
    let abc = setup(store).await;
    let tracked = deliver(store, abc, "Q1", "glen@galkam.test", RCRAM, "<t1@galkam.test>").await;
    let plain = deliver(store, abc, "Q2", "glen@galkam.test", "none", "<p1@galkam.test>").await;
    let before = store.track_event(retr(plain)).await.unwrap();
    assert_eq!(before, TrackingOutcome::Recorded { record: None, route: TrackingRoute::Untracked });
    let outcomes = store.track_events(vec![retr(tracked), retr(plain), retr(tracked), retr(plain + 1000)]).await;
    let outcomes = outcomes.unwrap();
    assert_eq!(outcomes.len(), 4, "{outcomes:?}");
    assert!(
        matches!(&outcomes[0], TrackingOutcome::Recorded { record: Some(_), route: TrackingRoute::Outbox { domain } } if domain == "galkam.test"),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[1..], [TrackingOutcome::Duplicate, TrackingOutcome::Duplicate, TrackingOutcome::NotFound]);
    assert_eq!(store.list_tracking_events(0, 10).await.unwrap().len(), 2);
    assert_eq!(store.list_notify_outbox().await.unwrap().len(), 1);
    assert_eq!(store.track_events(Vec::new()).await.unwrap(), []);
}

/// SPEC 9: an IMAP FETCH's whole-message read carries what its `downloaded` events record
/// (`TrackingSubject::Read`): the same events, records and routes as a lookup by entry.
async fn messages_read_by_a_fetch_are_recorded_as_if_looked_up<S: Tracked + ?Sized>(store: &S) {
    let abc = setup(store).await;
    let looked_up = deliver(store, abc, "Q1", "glen@galkam.test", RCRAM, "<t1@galkam.test>").await;
    let read = deliver(store, abc, "Q2", "glen@galkam.test", RCRAM, "<t2@galkam.test>").await;
    let plain = deliver(store, abc, "Q3", "glen@galkam.test", "none", "<p1@galkam.test>").await;
    let fetched = store.mailbox_messages("abc555@lrsupport.test", &[read, plain], None).await.unwrap();
    let tracked_of = |entry: i64| fetched.iter().find(|f| f.entry == entry).and_then(|f| f.tracked.clone()).unwrap();
    assert_eq!(tracked_of(read).message_id, "<t2@galkam.test>");
    assert!(tracked_of(read).tracked && !tracked_of(plain).tracked);
    let by_read = |entry: i64| event(TrackingSubject::Read(tracked_of(entry)), TrackingKind::Downloaded, AT);
    let outcomes = store.track_events(vec![retr(looked_up), by_read(read), by_read(plain), by_read(read)]).await;
    let outcomes = outcomes.unwrap();
    let line = |outcome: &TrackingOutcome| match outcome {
        TrackingOutcome::Recorded { record: Some(record), route: TrackingRoute::Outbox { domain } } => {
            assert_eq!(domain, "galkam.test");
            record.to_line().unwrap()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(line(&outcomes[0]).replace("<t1@", "<t2@"), line(&outcomes[1]));
    assert_eq!(outcomes[2], TrackingOutcome::Recorded { record: None, route: TrackingRoute::Untracked });
    assert_eq!(outcomes[3], TrackingOutcome::Duplicate);
    let events = store.list_tracking_events(0, 10).await.unwrap();
    let recorded: Vec<_> =
        events.iter().map(|e| (e.queue_id.as_str(), e.message_id.as_str(), e.sender.as_str())).collect();
    assert_eq!(
        recorded,
        [
            ("Q1", "<t1@galkam.test>", "glen@galkam.test"),
            ("Q2", "<t2@galkam.test>", "glen@galkam.test"),
            ("Q3", "<p1@galkam.test>", "glen@galkam.test")
        ]
    );
    assert!(events.iter().all(|e| e.recipient == "abc555@lrsupport.test"));
    // A header read carries none: its bytes are not a download.
    let headers = store.mailbox_messages("abc555@lrsupport.test", &[read], Some(10)).await.unwrap();
    assert_eq!(headers[0].tracked, None);
}

async fn notified_records_are_stored_once_for_local_senders_only<S: AccountStore + TrackingStore + ?Sized>(store: &S) {
    setup(store).await;
    let record = Record::parse(
        "2026-12-01T10:00:00Z,<id@lrsupport.test>,nurse@lrsupport.test,abc555@galkam.test,downloaded,mx.galkam.test",
    )
    .unwrap();
    assert_eq!(store.store_notified_record(record.clone(), AT).await.unwrap(), NotifyStored::Stored);
    let later = Record { timestamp: AT + 99, ..record.clone() };
    assert_eq!(store.store_notified_record(later, AT).await.unwrap(), NotifyStored::Duplicate);
    let shouting = Record { recipient: "ABC555@galkam.test".into(), ..record.clone() };
    assert_eq!(store.store_notified_record(shouting, AT).await.unwrap(), NotifyStored::Duplicate);
    let decrypted = Record { event: Event::Decrypted, ..record.clone() };
    assert_eq!(store.store_notified_record(decrypted, AT + 1).await.unwrap(), NotifyStored::Stored);
    let remote = Record { sender: "glen@galkam.test".into(), ..record.clone() };
    assert_eq!(store.store_notified_record(remote, AT).await.unwrap(), NotifyStored::UnknownSender);
    let nobody = Record { sender: "nobody@lrsupport.test".into(), ..record.clone() };
    assert_eq!(store.store_notified_record(nobody, AT).await.unwrap(), NotifyStored::UnknownSender);
    let stored = store.tracking_records("nurse@lrsupport.test", None, 10).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].record, record);
    assert_eq!(stored[0].stored_at, AT);
}

/// The count behind `[messenger] notify_max_per_day` (SPEC 8.3): one owner's records about
/// one recipient domain, by the time they were stored.
async fn records_are_counted_per_owner_recipient_domain_and_time<S: AccountStore + TrackingStore + ?Sized>(store: &S) {
    setup(store).await;
    for (n, recipient, at) in [
        (1, "a@galkam.test", AT),
        (2, "B@Galkam.test", AT + 10),
        (3, "c@galkam.test", AT + 100),
        (4, "d@sub.galkam.test", AT),
        (5, "e@xgalkam.test", AT),
        (6, "galkam.test", AT),
        (7, "f%@galkam_test", AT),
    ] {
        assert_eq!(store.store_notified_record(notified(n, recipient), at).await.unwrap(), NotifyStored::Stored);
    }
    let count = |owner: &'static str, domain: &'static str, from: i64, until: i64| async move {
        store.count_tracking_records(owner, domain, from..until).await.unwrap()
    };
    assert_eq!(count("nurse@lrsupport.test", "galkam.test", AT, AT + 100).await, 2);
    assert_eq!(count("Nurse@lrsupport.test", "GALKAM.test", AT, AT + 101).await, 3);
    assert_eq!(count("nurse@lrsupport.test", "galkam.test", AT + 1, AT + 101).await, 2);
    assert_eq!(count("nurse@lrsupport.test", "sub.galkam.test", AT, AT + 101).await, 1);
    assert_eq!(count("nurse@lrsupport.test", "galkam_test", AT, AT + 101).await, 1, "no wildcards");
    assert_eq!(count("nurse@lrsupport.test", "_alkam.test", AT, AT + 101).await, 0, "no wildcards");
    assert_eq!(count("abc555@lrsupport.test", "galkam.test", AT, AT + 101).await, 0);
}

/// SPEC 8.3: TRACK past its limit gives the newest records, listed oldest first.
async fn past_the_limit_the_newest_records_are_listed<S: AccountStore + TrackingStore + ?Sized>(store: &S) {
    setup(store).await;
    for n in 0..5usize {
        // Stored out of order: the records' own times decide.
        let record = Record { timestamp: AT + (n as i64 * 3) % 5, ..notified(n, "a@galkam.test") };
        store.store_notified_record(record, AT).await.unwrap();
    }
    let times =
        |records: Vec<StoredTrackingRecord>| records.into_iter().map(|r| r.record.timestamp - AT).collect::<Vec<_>>();
    assert_eq!(times(store.tracking_records("nurse@lrsupport.test", None, 10).await.unwrap()), [0, 1, 2, 3, 4]);
    assert_eq!(times(store.tracking_records("nurse@lrsupport.test", None, 3).await.unwrap()), [2, 3, 4]);
    assert_eq!(times(store.tracking_records("nurse@lrsupport.test", Some(AT + 3), 3).await.unwrap()), [3, 4]);
    assert_eq!(
        times(store.tracking_records("nurse@lrsupport.test", Some(AT + 5), 3).await.unwrap()),
        Vec::<i64>::new()
    );
}

/// SPEC 11: the NOTIFY outbox is shared; two nodes leasing at once each get their own
/// entries, and between them every due entry once.
async fn two_nodes_never_lease_the_same_notify<S: Tracked + ?Sized>(a: &S, b: &S) {
    let abc = setup(a).await;
    const N: usize = 30;
    for n in 0..N {
        let message_id = format!("<{n}@galkam.test>");
        let id = deliver(a, abc, &format!("Q{n}"), "glen@galkam.test", RCRAM, &message_id).await;
        a.track_event(retr(id)).await.unwrap();
    }
    let (x, y) = tokio::join!(lease_all(a), lease_all(b));
    let (x_set, y_set): (BTreeSet<i64>, BTreeSet<i64>) = (x.iter().copied().collect(), y.iter().copied().collect());
    assert_eq!(x_set.len() + y_set.len(), N, "each entry leased once: {x:?} {y:?}");
    assert!(x_set.is_disjoint(&y_set));
    let all: BTreeSet<i64> = a.list_notify_outbox().await.unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(x_set.union(&y_set).copied().collect::<BTreeSet<_>>(), all);
    assert_eq!(a.notify_outbox_counts().await.unwrap().inflight, N as u64);
    // When the leases run out, once more between them.
    let (x, y) = tokio::join!(a.lease_notifies(AT + 100, AT + 200, N), b.lease_notifies(AT + 100, AT + 200, N));
    assert_eq!(x.unwrap().len() + y.unwrap().len(), N);
}

/// Leases due outbox entries, a few at a time, until none is left; their ids.
async fn lease_all<S: TrackingStore + ?Sized>(store: &S) -> Vec<i64> {
    let mut got = Vec::new();
    loop {
        let leased = store.lease_notifies(AT + 10, AT + 100, 4).await.unwrap();
        if leased.is_empty() {
            return got;
        }
        got.extend(leased.into_iter().map(|e| e.id));
        tokio::task::yield_now().await;
    }
}

/// Event ids are a reader's cursor (`list_tracking_events` after the last id read): with
/// two nodes recording events at once, a reader following the cursor meanwhile misses
/// none, though ids are handed out before their transactions commit.
async fn event_ids_are_a_cursor_while_two_nodes_write<S: Tracked + ?Sized>(a: &S, b: &S) {
    let abc = setup(a).await;
    const WRITERS: usize = 4;
    const EACH: usize = 15;
    for n in 0..WRITERS * EACH {
        let m = message(
            &format!("Q{n}"),
            "glen@galkam.test",
            RCRAM,
            &format!("<{n}@galkam.test>"),
            &[(abc, "abc555@lrsupport.test")],
        );
        a.commit_message(m).await.unwrap();
    }
    let entries: Vec<i64> =
        a.list_mailbox("abc555@lrsupport.test", None).await.unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(entries.len(), WRITERS * EACH);
    let finished = Cell::new(0);
    let write = |node: &'static str, ids: Vec<i64>| {
        let store = if node == "a" { a } else { b };
        let finished = &finished;
        async move {
            for id in ids {
                store.track_event(retr(id)).await.unwrap();
            }
            finished.set(finished.get() + 1);
        }
    };
    let read = async {
        let (mut cursor, mut seen) = (0, Vec::new());
        loop {
            let done = finished.get() == WRITERS;
            let batch = b.list_tracking_events(cursor, 3).await.unwrap();
            for e in &batch {
                assert!(e.id > cursor);
                cursor = e.id;
                seen.push(e.id);
            }
            if done && batch.is_empty() {
                return seen;
            }
            tokio::task::yield_now().await;
        }
    };
    let groups: Vec<Vec<i64>> = entries.chunks(EACH).map(|c| c.to_vec()).collect();
    let (seen, ..) = tokio::join!(
        read,
        write("a", groups[0].clone()),
        write("b", groups[1].clone()),
        write("a", groups[2].clone()),
        write("b", groups[3].clone()),
    );
    let all: Vec<i64> = a.list_tracking_events(0, 1000).await.unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(all.len(), WRITERS * EACH);
    assert_eq!(seen, all, "the reader following the cursor saw every event, once, in order");
}

/// SPEC 8.3: a record is stored once per (message, recipient, event), however many nodes
/// receive its NOTIFY at once.
async fn a_record_notified_to_two_nodes_at_once_is_stored_once<S: AccountStore + TrackingStore + ?Sized>(a: &S, b: &S) {
    setup(a).await;
    for n in 0..10 {
        let record = notified(n, "x@galkam.test");
        let (x, y) = tokio::join!(a.store_notified_record(record.clone(), AT), b.store_notified_record(record, AT));
        let mut outcomes = [x.unwrap(), y.unwrap()];
        outcomes.sort_by_key(|o| *o == NotifyStored::Duplicate);
        assert_eq!(outcomes, [NotifyStored::Stored, NotifyStored::Duplicate], "record {n}");
    }
    assert_eq!(a.tracking_records("nurse@lrsupport.test", None, 100).await.unwrap().len(), 10);
}
