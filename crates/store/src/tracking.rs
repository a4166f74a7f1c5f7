//! Delivery notifications (SPEC 8.3): the records the store keeps and the domain rules
//! every backend applies the same way.
//!
//! - An event (`downloaded` at the first POP3 RETR, `decrypted`/`decrypt_failed` from
//!   RECEIPT) is recorded once per message and recipient in `tracking_events`, as before.
//! - A *record* is made from it only for a message that came from an authenticated sender
//!   (SPEC 8.3: through the messenger port with RCRAM-MD5, or from a local user): its stored
//!   Authentication-Results method is `auth=pass` or `x-rcram=pass` ([`is_tracked`]).
//! - The record is routed in the same transaction ([`TrackingRoute`]): a local sender's goes
//!   into its Tracking folder, a remote sender's into the NOTIFY outbox for the sender's
//!   domain.
//!
//! The Tracking folder is not made of mailbox messages: it is the sender's rows of
//! `tracking_records`, unique per (message, recipient, event), listed oldest first (TRACK,
//! `vouchmail tracking list`, and `vouchmail mailbox list --folder Tracking`). So records
//! do not count towards the quota, are not POP3 messages (which would be tracked in turn),
//! and a duplicate NOTIFY is found by a key rather than by reading messages.

use vouchmail_proto::messenger::tracking::{valid_message_id, Event, Record};

use crate::types::TrackingKind;

impl From<Event> for TrackingKind {
    fn from(event: Event) -> TrackingKind {
        match event {
            Event::Downloaded => TrackingKind::Downloaded,
            Event::Decrypted => TrackingKind::Decrypted,
            Event::DecryptFailed => TrackingKind::DecryptFailed,
        }
    }
}

impl From<TrackingKind> for Event {
    fn from(kind: TrackingKind) -> Event {
        match kind {
            TrackingKind::Downloaded => Event::Downloaded,
            TrackingKind::Decrypted => Event::Decrypted,
            TrackingKind::DecryptFailed => Event::DecryptFailed,
        }
    }
}

/// SPEC 8.3: records are made only for messages whose sender was authenticated through the
/// messenger port (`x-rcram=pass`) or as a local user (`auth=pass`), and that have a
/// sender to go back to.
pub fn is_tracked(auth_results: &str, sender: &str) -> bool {
    let method = auth_results.split([' ', ';']).next().unwrap_or("");
    !sender.is_empty() && (method.eq_ignore_ascii_case("auth=pass") || method.eq_ignore_ascii_case("x-rcram=pass"))
}

/// What a backend found of the message an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedMessage {
    pub queue_id: String,
    /// Its Message-ID field, angle brackets included ("" when it has none).
    pub message_id: String,
    pub sender: String,
    /// Whether events about it make records ([`is_tracked`]).
    pub tracked: bool,
}

impl TrackedMessage {
    /// From the stored message: its sender, Authentication-Results method and first
    /// octets (where the Message-ID field is looked for).
    pub fn from_stored(queue_id: String, sender: String, auth_results: &str, head: &[u8]) -> TrackedMessage {
        let message_id =
            vouchmail_proto::headers::first_value(head, "Message-ID").map(|v| v.trim().to_string()).unwrap_or_default();
        TrackedMessage { queue_id, message_id, tracked: is_tracked(auth_results, &sender), sender }
    }
}

/// What a newly recorded event makes (SPEC 8.3), decided once for every backend: the
/// backend then stores the record where this says, in the event's transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordPlan {
    /// No record: the route says why (untracked, or unroutable).
    None(TrackingRoute),
    /// Into the Tracking folder of the record's sender, a local one.
    Folder(Record),
    /// Into the NOTIFY outbox for the sender's domain, as this line.
    Outbox { record: Record, line: String, domain: String },
}

/// SPEC 8.3: the record an event about `message` makes and where it goes. `is_local` says
/// whether a domain is one of this server's (asked only when a record is made). A backend
/// that asks asynchronously calls [`make_record`] and [`MadeRecord::place`] itself.
pub fn plan_record<E>(
    event: &NewTrackingEvent,
    message: &TrackedMessage,
    is_local: impl FnOnce(&str) -> Result<bool, E>,
) -> Result<RecordPlan, E> {
    match make_record(event, message) {
        Err(route) => Ok(RecordPlan::None(route)),
        Ok(made) => {
            let local = is_local(&made.domain)?;
            Ok(made.place(local))
        }
    }
}

/// A record made from an event, before where it goes is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MadeRecord {
    pub record: Record,
    /// The record as a NOTIFY line.
    pub line: String,
    /// The sender's domain, lower case: whether it is one of this server's decides.
    pub domain: String,
}

impl MadeRecord {
    /// SPEC 8.3: a local sender's record goes into its Tracking folder, a remote sender's
    /// into the NOTIFY outbox for its domain.
    pub fn place(self, sender_domain_is_local: bool) -> RecordPlan {
        let MadeRecord { record, line, domain } = self;
        if sender_domain_is_local {
            RecordPlan::Folder(record)
        } else {
            RecordPlan::Outbox { record, line, domain }
        }
    }
}

/// SPEC 8.3: the record an event about `message` makes, or why it makes none (the route
/// to report: untracked, or unroutable).
pub fn make_record(event: &NewTrackingEvent, message: &TrackedMessage) -> Result<MadeRecord, TrackingRoute> {
    if !message.tracked {
        return Err(TrackingRoute::Untracked);
    }
    if !valid_message_id(&message.message_id) {
        let reason = "the message has no Message-ID".to_string();
        return Err(TrackingRoute::Unroutable { reason });
    }
    let record = Record {
        timestamp: event.at,
        message_id: message.message_id.clone(),
        sender: message.sender.clone(),
        recipient: event.recipient.to_lowercase(),
        event: event.kind.into(),
        reporting_server: event.reporting_server.clone(),
    };
    let line = match record.to_line() {
        Ok(line) => line,
        Err(e) => {
            let reason = format!("no record can be made: {e}");
            return Err(TrackingRoute::Unroutable { reason });
        }
    };
    let domain = record.sender_domain().to_ascii_lowercase();
    Ok(MadeRecord { record, line, domain })
}

/// SPEC 8.3: where a record planned for the Tracking folder ([`RecordPlan::Folder`]) went,
/// given what storing it found: a sender in one of this server's domains without a
/// mailbox here has no folder to hold it.
pub fn folder_route(record: &Record, stored: NotifyStored) -> TrackingRoute {
    match stored {
        NotifyStored::UnknownSender => {
            TrackingRoute::Unroutable { reason: format!("{} has no mailbox here", record.sender) }
        }
        NotifyStored::Stored | NotifyStored::Duplicate => TrackingRoute::Folder { owner: record.sender.to_lowercase() },
    }
}

/// Which message an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackingSubject {
    /// A mailbox entry of the recipient (POP3 RETR).
    Mailbox(i64),
    /// A message by its Message-ID, angle brackets included (RECEIPT): one that was
    /// delivered to the recipient, still in the mailbox or downloaded before.
    MessageId(String),
    /// A mailbox entry of the recipient whose message the caller has just read whole
    /// ([`FetchedMessage::tracked`], an IMAP FETCH): recorded as read, with no second
    /// lookup of the message.
    Read(TrackedMessage),
}

/// A mailbox entry's message as an IMAP FETCH reads it (`MailboxStore::mailbox_messages`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedMessage {
    /// The mailbox entry's id.
    pub entry: i64,
    /// The message, or for a read of header fields its header section (or first octets).
    pub bytes: Vec<u8>,
    /// For a message read whole: what its `downloaded` event records
    /// ([`TrackingSubject::Read`]), taken from the same read.
    pub tracked: Option<TrackedMessage>,
}

/// An event to record (SPEC 8.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTrackingEvent {
    /// The local recipient, the mailbox owner.
    pub recipient: String,
    pub subject: TrackingSubject,
    pub kind: TrackingKind,
    /// Unix time of the event: the record's timestamp.
    pub at: i64,
    /// This server's name, the record's `reporting_server`.
    pub reporting_server: String,
}

/// Where the record of a newly recorded event went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackingRoute {
    /// Not a tracked message (see [`is_tracked`]): the event is kept, no record made.
    Untracked,
    /// Into the local sender's Tracking folder.
    Folder { owner: String },
    /// Into the NOTIFY outbox, for the home server of the sender's domain.
    Outbox { domain: String },
    /// A tracked message whose record cannot be made or delivered (no Message-ID, a
    /// sender in a local domain without a mailbox, a record too long for a NOTIFY line):
    /// the caller logs it.
    Unroutable { reason: String },
}

/// The result of [`crate::interface::Store::track_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackingOutcome {
    /// First time for this message, recipient and event: recorded, and the record routed.
    Recorded { record: Option<Record>, route: TrackingRoute },
    /// Recorded before: nothing done (SPEC 8.3, each event once per message and recipient).
    Duplicate,
    /// No such message was delivered to the recipient (RECEIPT: 550 5.1.0).
    NotFound,
}

/// The result of [`crate::interface::Store::store_notified_record`] (receiving NOTIFY, SPEC 8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyStored {
    /// Stored in the sender's Tracking folder: 250 2.0.0.
    Stored,
    /// The same message, recipient and event is there already: 250 2.0.0, not stored twice.
    Duplicate,
    /// The sender is not a local mailbox: 550 5.1.1.
    UnknownSender,
}

/// One record in a local user's Tracking folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTrackingRecord {
    /// Increasing, never reused.
    pub id: i64,
    /// The local sender whose folder holds it (lower case).
    pub owner: String,
    pub record: Record,
    /// When it was stored here.
    pub stored_at: i64,
}

/// State of a NOTIFY outbox entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxState {
    /// Waiting for its next attempt.
    Pending,
    /// Leased by a sender until its lease ends.
    InFlight,
    /// Delivered (kept as history, and so that the same record is never queued again).
    Sent,
    /// Given up: refused for good, or its lifetime ran out.
    Dropped,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::InFlight => "inflight",
            OutboxState::Sent => "sent",
            OutboxState::Dropped => "dropped",
        }
    }

    pub fn parse(s: &str) -> Option<OutboxState> {
        [OutboxState::Pending, OutboxState::InFlight, OutboxState::Sent, OutboxState::Dropped]
            .into_iter()
            .find(|state| state.as_str() == s)
    }
}

/// One record waiting to be sent as `NOTIFY <record>` (SPEC 8.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: i64,
    /// The record line, as sent.
    pub record: String,
    /// The sender's domain: its home server gets the NOTIFY.
    pub domain: String,
    pub state: OutboxState,
    pub attempts: u32,
    pub next_attempt: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
}

/// The outcome of one NOTIFY attempt, to record with [`crate::interface::Store::finish_notifies`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxUpdate {
    /// Delivered (the home server said 250): done.
    Sent { id: i64 },
    /// Try again at `next_attempt`.
    Retry { id: i64, next_attempt: i64, error: String },
    /// Given up for good.
    Drop { id: i64, reason: String },
    /// Not tried (shutting down): due again at once, no attempt counted.
    Release { id: i64 },
}

/// What recording one [`OutboxUpdate`] does to its entry (still in flight; one no longer
/// in flight is left alone), decided once for every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxChange<'a> {
    pub id: i64,
    pub state: OutboxState,
    /// The next attempt, or None to keep the one the entry has.
    pub next_attempt: Option<i64>,
    /// Whether an attempt is counted.
    pub attempted: bool,
    /// The error to keep as the entry's last one, or None to keep the one it has.
    pub error: Option<&'a str>,
}

impl OutboxUpdate {
    /// SPEC 8.3: sent is done; a retry waits for its time; a drop is final; an entry not
    /// tried (released at shutdown) is due again at once (`now`), no attempt counted. The
    /// lease ends in every case.
    pub fn change(&self, now: i64) -> OutboxChange<'_> {
        let change = |id: &i64, state, next_attempt, attempted, error| OutboxChange {
            id: *id,
            state,
            next_attempt,
            attempted,
            error,
        };
        match self {
            OutboxUpdate::Sent { id } => change(id, OutboxState::Sent, None, true, None),
            OutboxUpdate::Retry { id, next_attempt, error } => {
                change(id, OutboxState::Pending, Some(*next_attempt), true, Some(error.as_str()))
            }
            OutboxUpdate::Drop { id, reason } => change(id, OutboxState::Dropped, None, true, Some(reason.as_str())),
            OutboxUpdate::Release { id } => change(id, OutboxState::Pending, Some(now), false, None),
        }
    }
}

/// Entries of the outbox by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxCounts {
    pub pending: u64,
    pub inflight: u64,
    pub sent: u64,
    pub dropped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> NewTrackingEvent {
        NewTrackingEvent {
            recipient: "ABC555@lrsupport.test".into(),
            subject: TrackingSubject::Mailbox(1),
            kind: TrackingKind::Downloaded,
            at: 1_796_119_200,
            reporting_server: "mx.lrsupport.test".into(),
        }
    }

    fn message(auth_results: &str, head: &[u8]) -> TrackedMessage {
        TrackedMessage::from_stored("Q1".into(), "glen@galkam.test".into(), auth_results, head)
    }

    #[test]
    fn a_record_goes_to_the_local_senders_folder_or_the_remote_senders_outbox() {
        let tracked = message("x-rcram=pass smtp.auth=glen@galkam.test", b"Message-ID: <m1@galkam.test>\r\n\r\n");
        let local = plan_record::<()>(&event(), &tracked, |d| Ok(d == "galkam.test")).unwrap();
        let RecordPlan::Folder(record) = local else { panic!("{local:?}") };
        assert_eq!(
            (record.recipient.as_str(), record.message_id.as_str()),
            ("abc555@lrsupport.test", "<m1@galkam.test>")
        );
        let remote = plan_record::<()>(&event(), &tracked, |_| Ok(false)).unwrap();
        let RecordPlan::Outbox { domain, line, .. } = remote else { panic!("{remote:?}") };
        assert_eq!(domain, "galkam.test");
        assert!(line.starts_with("2026-12-01T10:00:00Z,<m1@galkam.test>,glen@galkam.test,"), "{line}");
    }

    #[test]
    fn no_record_for_an_untracked_message_or_one_without_message_id() {
        let asked = |_: &str| -> Result<bool, ()> { panic!("locality asked without a record") };
        let untracked = message("none", b"Message-ID: <m1@galkam.test>\r\n\r\n");
        assert_eq!(plan_record(&event(), &untracked, asked), Ok(RecordPlan::None(TrackingRoute::Untracked)));
        let no_id = message("auth=pass", b"Subject: x\r\n\r\n");
        assert!(matches!(plan_record(&event(), &no_id, asked), Ok(RecordPlan::None(TrackingRoute::Unroutable { .. }))));
    }

    #[test]
    fn a_local_sender_without_a_mailbox_is_unroutable() {
        let tracked = message("auth=pass", b"Message-ID: <m1@galkam.test>\r\n\r\n");
        let made = make_record(&event(), &tracked).unwrap();
        assert_eq!(made.domain, "galkam.test");
        let RecordPlan::Folder(record) = made.clone().place(true) else { panic!() };
        assert!(matches!(made.place(false), RecordPlan::Outbox { .. }));
        assert_eq!(
            folder_route(&record, NotifyStored::Stored),
            TrackingRoute::Folder { owner: "glen@galkam.test".into() }
        );
        assert_eq!(
            folder_route(&record, NotifyStored::Duplicate),
            TrackingRoute::Folder { owner: "glen@galkam.test".into() }
        );
        assert!(matches!(folder_route(&record, NotifyStored::UnknownSender), TrackingRoute::Unroutable { .. }));
    }

    #[test]
    fn outbox_outcomes() {
        let change = |update: OutboxUpdate| {
            let c = update.change(500);
            (c.id, c.state, c.next_attempt, c.attempted, c.error.map(str::to_string))
        };
        assert_eq!(change(OutboxUpdate::Sent { id: 1 }), (1, OutboxState::Sent, None, true, None));
        let retry = OutboxUpdate::Retry { id: 2, next_attempt: 900, error: "451".into() };
        assert_eq!(change(retry), (2, OutboxState::Pending, Some(900), true, Some("451".into())));
        let drop = OutboxUpdate::Drop { id: 3, reason: "550".into() };
        assert_eq!(change(drop), (3, OutboxState::Dropped, None, true, Some("550".into())));
        assert_eq!(change(OutboxUpdate::Release { id: 4 }), (4, OutboxState::Pending, Some(500), false, None));
    }

    #[test]
    fn only_authenticated_senders_are_tracked() {
        assert!(is_tracked("auth=pass smtp.auth=glen@galkam.test", "glen@galkam.test"));
        assert!(is_tracked("x-rcram=pass smtp.auth=glen@galkam.test", "glen@galkam.test"));
        assert!(!is_tracked("x-rcram=pass smtp.auth=glen@galkam.test", ""));
        for other in ["none", "x-trusted-relay=pass", "x-authkey=pass header.from=a@b", "auth=fail", "auth=passx"] {
            assert!(!is_tracked(other, "glen@galkam.test"), "{other}");
        }
        for event in Event::ALL {
            assert_eq!(Event::from(TrackingKind::from(event)), event);
            assert_eq!(TrackingKind::from(event).as_str(), event.as_str());
        }
    }
}
