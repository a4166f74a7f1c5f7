//! The NOTIFY outbox sender with a fake home server (the federation client is not built
//! yet), and the replies of RECEIPT, NOTIFY and TRACK.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use vouchmail_proto::sasl::Secrets;
use vouchmail_store::{
    Delivery, Envelope, Folder, NewAccount, NewMessage, RecipientDsn, SenderPolicy, SqliteStore, TrackingKind,
};

use super::*;
use crate::rules::tracking::*;
use vouchmail_proto::messenger::tracking::{self, Record};
use vouchmail_store::prelude::*;
use vouchmail_store::{NewTrackingEvent, TrackingOutcome, TrackingRoute, TrackingSubject};

const AT: i64 = 1_796_119_200; // 2026-12-01T10:00:00Z

/// A home server per domain that is up, down (temporary failures) or refusing.
#[derive(Default)]
struct FakeHomeServers {
    behaviour: Mutex<HashMap<String, NotifyOutcome>>,
    delivered: Mutex<Vec<(String, String)>>,
    calls: Mutex<Vec<(String, usize)>>,
}

impl FakeHomeServers {
    fn set(&self, domain: &str, outcome: NotifyOutcome) {
        self.behaviour.lock().unwrap().insert(domain.to_string(), outcome);
    }

    fn delivered(&self) -> Vec<(String, String)> {
        self.delivered.lock().unwrap().clone()
    }

    /// How many records were delivered once `n` were, or when `within` ran out.
    async fn delivered_at_least(&self, n: usize, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        while self.delivered().len() < n && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.delivered().len()
    }
}

impl NotifySender for FakeHomeServers {
    fn send<'a>(
        &'a self,
        domain: &'a str,
        records: &'a [String],
    ) -> Pin<Box<dyn Future<Output = Vec<NotifyOutcome>> + Send + 'a>> {
        Box::pin(async move {
            self.calls.lock().unwrap().push((domain.to_string(), records.len()));
            let outcome = self.behaviour.lock().unwrap().get(domain).cloned().unwrap_or(NotifyOutcome::Delivered);
            if outcome == NotifyOutcome::Delivered {
                let mut delivered = self.delivered.lock().unwrap();
                delivered.extend(records.iter().map(|r| (domain.to_string(), r.clone())));
            }
            vec![outcome; records.len()]
        })
    }
}

fn settings() -> OutboxSettings {
    OutboxSettings {
        retry_min_secs: 60,
        retry_max_secs: 120,
        lifetime_secs: 5 * 86400,
        lease_secs: 600,
        batch: 100,
        poll_interval: Duration::from_millis(20),
        call_deadline: Duration::from_secs(60),
    }
}

/// Issue 19 item 7: a home server that never finishes answering (slow.test) holds back
/// only its own records, and only until the call deadline; galkam's go out in that pass.
struct OneStalls;

impl NotifySender for OneStalls {
    fn send<'a>(
        &'a self,
        domain: &'a str,
        records: &'a [String],
    ) -> Pin<Box<dyn Future<Output = Vec<NotifyOutcome>> + Send + 'a>> {
        Box::pin(async move {
            if domain == "slow.test" {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            vec![NotifyOutcome::Delivered; records.len()]
        })
    }
}

#[tokio::test]
async fn a_stalling_home_server_holds_back_only_its_own_records_until_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (store, account) = setup(&dir).await;
    downloaded(&store, account, "Q1", "glen@galkam.test", AT).await;
    downloaded(&store, account, "Q2", "sam@slow.test", AT).await;
    let settings = OutboxSettings { call_deadline: Duration::from_secs(1), ..settings() };
    let outbox = Outbox::new(store.clone(), Arc::new(OneStalls), settings, OutboxBell::default());
    let started = std::time::Instant::now();
    let pass = outbox.run_once(AT).await;
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(pass, OutboxPass { sent: 1, retried: 1, dropped: 0 });
}

fn open(dir: &tempfile::TempDir) -> Arc<SqliteStore> {
    Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap())
}

async fn setup(dir: &tempfile::TempDir) -> (Arc<SqliteStore>, i64) {
    let store = open(dir);
    store.add_domain("lrsupport.test", SenderPolicy::REJECT).await.unwrap();
    let id = store
        .add_account(NewAccount {
            address: "abc555@lrsupport.test".into(),
            secrets: Secrets::default(),
            quota_bytes: 0,
        })
        .await
        .unwrap();
    (store, id)
}

/// A message from `sender` (remotely authenticated) downloaded by abc555 at `at`.
async fn downloaded(store: &SqliteStore, account: i64, queue_id: &str, sender: &str, at: i64) {
    downloaded_ringing(store, account, queue_id, sender, at, &OutboxBell::default()).await;
}

/// As [`downloaded`], ringing `bell` as POP3 does.
async fn downloaded_ringing(
    store: &SqliteStore,
    account: i64,
    queue_id: &str,
    sender: &str,
    at: i64,
    bell: &OutboxBell,
) {
    let message = NewMessage {
        queue_id: queue_id.into(),
        envelope: Envelope {
            sender: sender.into(),
            auth_results: format!("x-rcram=pass smtp.auth={sender}"),
            ..Default::default()
        },
        received_at: at - 10,
        data: format!("Message-ID: <{queue_id}@x.test>\r\n\r\nbody\r\n").into_bytes(),
        spooled: None,
        deliveries: vec![(
            Delivery::Mailbox { account_id: account, folder: Folder::Inbox, recipient: "abc555@lrsupport.test".into() },
            RecipientDsn::default(),
        )],
    };
    let queue_id = store.commit_message(message).await.unwrap().queue_id;
    let entry = store.list_mailbox("abc555@lrsupport.test", None).await.unwrap();
    let id = entry.iter().find(|e| e.queue_id == queue_id).unwrap().id;
    let event = NewTrackingEvent {
        recipient: "abc555@lrsupport.test".into(),
        subject: TrackingSubject::Mailbox(id),
        kind: TrackingKind::Downloaded,
        at,
        reporting_server: "mx.lrsupport.test".into(),
    };
    let outcome = record_event(store, event.clone(), bell).await.unwrap();
    assert!(matches!(outcome, TrackingOutcome::Recorded { route: TrackingRoute::Outbox { .. }, .. }));
    // Idempotent: the second RETR makes nothing.
    assert_eq!(record_event(store, event, bell).await.unwrap(), TrackingOutcome::Duplicate);
}

#[tokio::test]
async fn records_wait_while_the_home_server_is_down_survive_a_restart_and_arrive_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, account) = setup(&dir).await;
    downloaded(&store, account, "Q1", "glen@galkam.test", AT).await;
    downloaded(&store, account, "Q2", "ann@galkam.test", AT).await;
    downloaded(&store, account, "Q3", "bob@other.test", AT).await;
    let home = Arc::new(FakeHomeServers::default());
    home.set("galkam.test", NotifyOutcome::Temporary("connection refused".into()));
    let outbox = Outbox::new(store.clone(), home.clone(), settings(), OutboxBell::default());
    let pass = outbox.run_once(AT).await;
    assert_eq!(pass, OutboxPass { sent: 1, retried: 2, dropped: 0 });
    // Grouped by domain: one call per domain with all of its records.
    let mut calls = home.calls.lock().unwrap().clone();
    calls.sort();
    assert_eq!(calls, [("galkam.test".to_string(), 2), ("other.test".to_string(), 1)]);
    // The server restarts: the records are in the store.
    drop(outbox);
    store.shutdown().await;
    drop(store);
    let store = open(&dir);
    assert_eq!(store.list_notify_outbox().await.unwrap().len(), 2);
    let outbox = Outbox::new(store.clone(), home.clone(), settings(), OutboxBell::default());
    // Not before the backoff.
    assert_eq!(outbox.run_once(AT + 59).await.handled(), 0);
    home.set("galkam.test", NotifyOutcome::Delivered);
    assert_eq!(outbox.run_once(AT + 60).await, OutboxPass { sent: 2, retried: 0, dropped: 0 });
    assert_eq!(outbox.run_once(AT + 100_000).await.handled(), 0);
    // Each record arrived once.
    let delivered = home.delivered();
    assert_eq!(delivered.len(), 3);
    let mut lines: Vec<&str> = delivered.iter().map(|(_, r)| r.as_str()).collect();
    lines.sort();
    lines.dedup();
    assert_eq!(lines.len(), 3);
    let glen = delivered.iter().find(|(_, r)| r.contains("glen@galkam.test")).unwrap();
    assert_eq!(
        glen,
        &(
            "galkam.test".to_string(),
            "2026-12-01T10:00:00Z,<Q1@x.test>,glen@galkam.test,abc555@lrsupport.test,downloaded,mx.lrsupport.test"
                .to_string()
        )
    );
    let counts = store.notify_outbox_counts().await.unwrap();
    assert_eq!((counts.pending, counts.inflight, counts.sent, counts.dropped), (0, 0, 3, 0));
}

#[tokio::test]
async fn records_are_dropped_after_their_lifetime_or_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let (store, account) = setup(&dir).await;
    downloaded(&store, account, "Q1", "glen@galkam.test", AT).await;
    downloaded(&store, account, "Q2", "bob@other.test", AT).await;
    let home = Arc::new(FakeHomeServers::default());
    home.set("galkam.test", NotifyOutcome::Temporary("451 4.3.0 later".into()));
    home.set("other.test", NotifyOutcome::Permanent("550 5.1.1 no such sender".into()));
    let settings = OutboxSettings { lifetime_secs: 300, ..settings() };
    let outbox = Outbox::new(store.clone(), home.clone(), settings, OutboxBell::default());
    assert_eq!(outbox.run_once(AT).await, OutboxPass { sent: 0, retried: 1, dropped: 1 });
    // Backoff 60, then 120 (the maximum): tries at +60 and +180; the next would be at +300.
    assert_eq!(outbox.run_once(AT + 60).await.retried, 1);
    assert_eq!(outbox.run_once(AT + 179).await.handled(), 0);
    assert_eq!(outbox.run_once(AT + 180).await, OutboxPass { sent: 0, retried: 0, dropped: 1 });
    assert_eq!(outbox.run_once(AT + 100_000).await.handled(), 0);
    let counts = store.notify_outbox_counts().await.unwrap();
    assert_eq!((counts.pending, counts.dropped), (0, 2));
    assert!(home.delivered().is_empty());
    assert_eq!(settings.backoff(1), 60);
    assert_eq!(settings.backoff(2), 120);
    assert_eq!(settings.backoff(40), 120);
}

#[tokio::test]
async fn the_task_sends_and_stops_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let (store, account) = setup(&dir).await;
    let now = now();
    downloaded(&store, account, "Q1", "glen@galkam.test", now).await;
    let home = Arc::new(FakeHomeServers::default());
    let outbox = Outbox::new(store.clone(), home.clone(), settings(), OutboxBell::default());
    let (stop, shutdown) = watch::channel(false);
    let tasks = TaskTracker::default();
    outbox.spawn(shutdown, &tasks);
    assert_eq!(home.delivered_at_least(1, Duration::from_secs(2)).await, 1);
    stop.send(true).unwrap();
    assert_eq!(tasks.wait(Duration::from_secs(5)).await, 0);
}

/// A queued record goes out when it is queued, not at the outbox's next poll (here an
/// hour away).
#[tokio::test]
async fn a_queued_record_rings_the_outbox_awake() {
    let dir = tempfile::tempdir().unwrap();
    let (store, account) = setup(&dir).await;
    let home = Arc::new(FakeHomeServers::default());
    let bell = OutboxBell::default();
    let settings = OutboxSettings { poll_interval: Duration::from_secs(3600), ..settings() };
    let outbox = Outbox::new(store.clone(), home.clone(), settings, bell.clone());
    let (stop, shutdown) = watch::channel(false);
    let tasks = TaskTracker::default();
    // The first record is there when the task starts: its first pass sends it, then it
    // has nothing due and waits its hour.
    downloaded(&store, account, "Q1", "glen@galkam.test", now()).await;
    outbox.spawn(shutdown, &tasks);
    assert_eq!(home.delivered_at_least(1, Duration::from_secs(20)).await, 1);
    downloaded_ringing(&store, account, "Q2", "ann@galkam.test", now(), &bell).await;
    assert_eq!(home.delivered_at_least(2, Duration::from_secs(20)).await, 2, "the ring woke the outbox");
    stop.send(true).unwrap();
    assert_eq!(tasks.wait(Duration::from_secs(5)).await, 0);
}

#[tokio::test]
async fn receipt_notify_and_track_replies() {
    let dir = tempfile::tempdir().unwrap();
    let (store, account) = setup(&dir).await;
    downloaded(&store, account, "Q1", "glen@galkam.test", AT).await;
    let receipt = tracking::parse_receipt_argument("<Q1@x.test> DECRYPTED").unwrap();
    let reply =
        receipt_reply(store.as_ref(), "abc555@lrsupport.test", &receipt, "mx.lrsupport.test", &OutboxBell::default())
            .await;
    assert_eq!(reply.to_wire(), b"250 2.0.0 Tracking record stored\r\n");
    // Each event once: a second RECEIPT is 250 and queues nothing more.
    let again =
        receipt_reply(store.as_ref(), "abc555@lrsupport.test", &receipt, "mx.lrsupport.test", &OutboxBell::default())
            .await;
    assert_eq!(again.code, 250);
    assert_eq!(store.list_notify_outbox().await.unwrap().len(), 2);
    let unknown = tracking::parse_receipt_argument("<nope@x.test> FAILED").unwrap();
    let reply =
        receipt_reply(store.as_ref(), "abc555@lrsupport.test", &unknown, "mx.lrsupport.test", &OutboxBell::default())
            .await;
    assert!(reply.to_wire().starts_with(b"550 5.1.0 "));
    // NOTIFY for a local sender (abc555 sent a message to someone at galkam).
    let record = tracking::parse_notify_argument(
        "2026-12-01T10:00:00Z,<id@lrsupport.test>,abc555@lrsupport.test,glen@galkam.test,downloaded,mx.galkam.test",
    )
    .unwrap();
    let notify = |record: Record| notify_reply(store.as_ref(), record, 10_000, AT + 120);
    assert_eq!(notify(record.clone()).await.to_wire(), b"250 2.0.0 Tracking record stored\r\n");
    assert_eq!(notify(record.clone()).await.code, 250);
    let stranger = Record { sender: "x@galkam.test".into(), ..record.clone() };
    assert!(notify(stranger).await.to_wire().starts_with(b"550 5.1.1 "));
    let decrypted = Record { event: tracking::Event::Decrypted, timestamp: AT + 60, ..record.clone() };
    notify(decrypted.clone()).await;
    // TRACK: oldest first, and since a time.
    let all = track_reply(store.as_ref(), "abc555@lrsupport.test", None).await;
    let expected = format!("250-{}\r\n250-{}\r\n250 2 records\r\n", record, decrypted);
    assert_eq!(String::from_utf8(all.to_wire()).unwrap(), expected);
    let since = track_reply(store.as_ref(), "abc555@lrsupport.test", Some(AT + 1)).await;
    assert_eq!(String::from_utf8(since.to_wire()).unwrap(), format!("250-{decrypted}\r\n250 1 records\r\n"));
    assert_eq!(track_reply(store.as_ref(), "glen@galkam.test", None).await.to_wire(), b"250 0 records\r\n");
}

/// Issue 19 item 8, SPEC 8.3: a home server forging timestamps into a local sender's
/// Tracking folder (an hour ahead, a year old) is refused `501 5.5.4`; the window's edges
/// pass.
#[tokio::test]
async fn notify_refuses_timestamps_ahead_or_too_old() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = setup(&dir).await;
    let now = AT;
    let record = |n: i64, timestamp: i64| Record {
        timestamp,
        message_id: format!("<{n}@lrsupport.test>"),
        sender: "abc555@lrsupport.test".into(),
        recipient: "glen@galkam.test".into(),
        event: tracking::Event::Downloaded,
        reporting_server: "mx.galkam.test".into(),
    };
    for (n, timestamp) in [(1, now + 3600), (2, now + 301), (3, now - 365 * 86_400), (4, now - 30 * 86_400 - 1)] {
        let reply = notify_reply(store.as_ref(), record(n, timestamp), 10_000, now).await;
        assert!(reply.to_wire().starts_with(b"501 5.5.4 "), "{n}: {reply}");
    }
    assert!(store.tracking_records("abc555@lrsupport.test", None, 100).await.unwrap().is_empty());
    for (n, timestamp) in [(5, now + 300), (6, now - 30 * 86_400), (7, now)] {
        assert_eq!(notify_reply(store.as_ref(), record(n, timestamp), 10_000, now).await.code, 250, "{n}");
    }
    assert_eq!(store.tracking_records("abc555@lrsupport.test", None, 100).await.unwrap().len(), 3);
}

/// Issue 19 item 8, SPEC 8.3: past `notify_max_per_day` records a UTC day from one
/// recipient domain for one local sender, NOTIFY is `452 4.5.3`; another domain, another
/// sender and the next day are not held back, and a duplicate past the cap stores nothing.
#[tokio::test]
async fn notify_past_the_days_cap_is_452() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = setup(&dir).await;
    store
        .add_account(NewAccount { address: "nurse@lrsupport.test".into(), secrets: Secrets::default(), quota_bytes: 0 })
        .await
        .unwrap();
    let (day_start, day_end) = utc_day(AT);
    let record = |n: usize, sender: &str, recipient: &str| Record {
        timestamp: day_start,
        message_id: format!("<{n}@lrsupport.test>"),
        sender: sender.into(),
        recipient: recipient.into(),
        event: tracking::Event::Downloaded,
        reporting_server: "mx.galkam.test".into(),
    };
    let notify = |record: Record, now: i64| notify_reply(store.as_ref(), record, 3, now);
    for n in 0..3 {
        let at = day_start + 60 * n as i64;
        assert_eq!(notify(record(n, "abc555@lrsupport.test", "glen@galkam.test"), at).await.code, 250);
    }
    let reply = notify(record(3, "abc555@lrsupport.test", "Ann@GALKAM.test"), day_start + 3600).await;
    assert!(reply.to_wire().starts_with(b"452 4.5.3 "), "{reply}");
    assert_eq!(store.tracking_records("abc555@lrsupport.test", None, 100).await.unwrap().len(), 3);
    // Another reporting domain, another local sender: their own counts.
    assert_eq!(notify(record(4, "abc555@lrsupport.test", "x@other.test"), day_start + 3600).await.code, 250);
    assert_eq!(notify(record(5, "nurse@lrsupport.test", "glen@galkam.test"), day_start + 3600).await.code, 250);
    // The next UTC day starts a new count.
    assert_eq!(notify(record(6, "abc555@lrsupport.test", "glen@galkam.test"), day_end - 1).await.code, 452);
    assert_eq!(notify(record(6, "abc555@lrsupport.test", "glen@galkam.test"), day_end).await.code, 250);
}

/// SPEC 8.3: TRACK past its limit answers with the newest records, oldest first.
#[tokio::test]
async fn track_past_its_limit_lists_the_newest_records() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = setup(&dir).await;
    let extra = 3;
    let mut records = Vec::new();
    for n in 0..TRACK_LIMIT + extra {
        records.push(Record {
            timestamp: AT + n as i64,
            message_id: format!("<{n}@lrsupport.test>"),
            sender: "abc555@lrsupport.test".into(),
            recipient: "glen@galkam.test".into(),
            event: tracking::Event::Downloaded,
            reporting_server: "mx.galkam.test".into(),
        });
    }
    // Side by side (the store commits them in batches), newest first: the records' times
    // decide, not the order they arrived in.
    let tasks: Vec<_> = records
        .iter()
        .rev()
        .map(|r| {
            let (store, r) = (Arc::clone(&store), r.clone());
            tokio::spawn(async move { store.store_notified_record(r, AT).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), vouchmail_store::NotifyStored::Stored);
    }
    let reply = String::from_utf8(track_reply(store.as_ref(), "abc555@lrsupport.test", None).await.to_wire()).unwrap();
    let lines: Vec<&str> = reply.trim_end().split("\r\n").collect();
    assert_eq!(lines.len(), TRACK_LIMIT + 1);
    assert_eq!(lines[0], format!("250-{}", records[extra]));
    assert_eq!(lines[TRACK_LIMIT - 1], format!("250-{}", records[TRACK_LIMIT + extra - 1]));
    assert_eq!(lines[TRACK_LIMIT], format!("250 {TRACK_LIMIT} records"));
}
