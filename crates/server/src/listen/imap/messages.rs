//! The commands of the selected state (RFC 9051 6.4): message data for FETCH and SEARCH,
//! the `downloaded` tracking event of a whole body (SPEC 8.3, 9), STORE, COPY/MOVE
//! (RFC 6851) and EXPUNGE, on the selected folder of the store.

use vouchmail_proto::headers::header_end;
use vouchmail_proto::imap::session::{Content, CopyUid, FlagUpdate, MessageData, Session, StoreOutcome};
use vouchmail_proto::imap::types::{Flag, StoreMode};
use vouchmail_store::{AppendedMessage, FlagChange, FlagOperation, StoreError};

use super::context::{Connection, HeldOutput, ReadAhead};
use super::mailboxes::{failure, imap_flags, stored_flags};
use crate::rules::{folders, tracking_folder};
use crate::support::queue_id::new_queue_id;
use vouchmail_proto::imap::session::Failure;

/// Octets of each message read for a FETCH or SEARCH of header fields: a header section
/// is almost always far shorter, and a body (attachments) far longer.
const HEADER_PREFIX: usize = 64 * 1024;

/// Octets of a FETCH's output held while their `downloaded` events are written: two of the
/// session's output buffers, one going out while the next is made.
const MAX_HELD_OUTPUT: usize = 2 << 20;

impl Connection<'_> {
    /// Starts reading the batch the session will ask for after this one, if any.
    fn read_ahead(&mut self, next: Vec<u32>, content: Content) {
        if let Some(stale) = self.read_ahead.take() {
            stale.cancel();
        }
        if next.is_empty() || folders::is_tracking(&self.folder()) {
            return;
        }
        let ids: Vec<i64> = next.iter().filter_map(|&uid| self.entry_of(uid)).collect();
        let (store, user) = (std::sync::Arc::clone(&self.context.store), self.user().to_string());
        let prefix = (content == Content::Header).then_some(HEADER_PREFIX);
        let read = tokio::spawn(async move { store.mailbox_messages(&user, &ids, prefix).await });
        self.read_ahead = Some(Box::new(ReadAhead { uids: next, content, read }));
    }

    /// The selected folder's name, and the entry id of a UID in it.
    fn entry_of(&self, uid: u32) -> Option<i64> {
        self.selected.as_ref()?.entry_of(uid)
    }

    fn folder(&self) -> String {
        self.selected.as_ref().map(|s| s.folder.clone()).unwrap_or_default()
    }

    /// RFC 9051 6.4.5: the messages' data (the header section or all of it); `\Seen` set
    /// on `mark_seen` first (a FETCH of body data in a read-write folder). `next`: the
    /// batch after this one, read ahead.
    pub async fn fetch(
        &mut self,
        session: &mut Session,
        uids: Vec<u32>,
        content: Content,
        mark_seen: Vec<u32>,
        next: Vec<u32>,
    ) {
        let mut seen_now = std::collections::BTreeMap::new();
        if !mark_seen.is_empty() && !folders::is_read_only(&self.folder()) {
            let change = FlagChange {
                uids: mark_seen,
                operation: FlagOperation::Add,
                flags: vec!["\\Seen".into()],
                unchanged_since: None,
            };
            match self.store().store_flags(self.user(), &self.folder(), change).await {
                Ok(stored) => {
                    for (uid, flags, modseq) in stored.changed {
                        seen_now.insert(uid, (imap_flags(&flags), modseq));
                    }
                }
                Err(e) => return session.fetched(Err(failure(e, "FETCH"))),
            }
        }
        let messages = match self.messages(&uids, content, next).await {
            Ok(messages) => messages,
            Err(e) => return session.fetched(Err(failure(e, "FETCH"))),
        };
        // For `Content::Header` the bytes may go on past the header section (a prefix):
        // the session reads no further than the header's empty line.
        let data = messages
            .into_iter()
            .map(|(uid, bytes)| MessageData { uid, bytes, seen_set: seen_now.remove(&uid) })
            .collect();
        session.fetched(Ok(data));
    }

    /// The selected folder's messages with these UIDs, each as (UID, bytes): whole, or for
    /// [`Content::Header`] at least their header section. One expunged meanwhile is left
    /// out (the session answers for what is left).
    async fn messages(
        &mut self,
        uids: &[u32],
        content: Content,
        next: Vec<u32>,
    ) -> Result<Vec<(u32, Vec<u8>)>, StoreError> {
        let mut messages = Vec::with_capacity(uids.len());
        if folders::is_tracking(&self.folder()) {
            let records = self.tracking_records().await?;
            for &uid in uids {
                if let Some(stored) = self.entry_of(uid).and_then(|entry| records.get(&entry)) {
                    messages.push((uid, tracking_folder::tracking_message(stored, self.hostname())));
                }
            }
            return Ok(messages);
        }
        let entries: std::collections::HashMap<i64, u32> =
            uids.iter().filter_map(|&uid| Some((self.entry_of(uid)?, uid))).collect();
        let prefix = (content == Content::Header).then_some(HEADER_PREFIX);
        let current = self.read_ahead.take();
        self.read_ahead(next, content);
        let rows = match current {
            Some(ahead) if ahead.uids == uids && ahead.content == content => {
                ahead.read.await.map_err(|e| StoreError::Unavailable(format!("the read ahead failed: {e}")))??
            }
            stale => {
                if let Some(stale) = stale {
                    stale.cancel();
                }
                let ids: Vec<i64> = entries.keys().copied().collect();
                self.store().mailbox_messages(self.user(), &ids, prefix).await?
            }
        };
        self.read_tracked.clear();
        let mut cut_short = Vec::new();
        for fetched in rows {
            // A header section longer than the prefix (no end in it): read whole.
            let bytes = fetched.bytes;
            if prefix.is_some() && bytes.len() >= HEADER_PREFIX && header_end(&bytes) >= bytes.len() {
                cut_short.push(fetched.entry);
            } else if let Some(&uid) = entries.get(&fetched.entry) {
                messages.push((uid, bytes));
                if let Some(tracked) = fetched.tracked {
                    self.read_tracked.insert(fetched.entry, tracked);
                }
            }
        }
        if !cut_short.is_empty() {
            for fetched in self.store().mailbox_messages(self.user(), &cut_short, None).await? {
                if let Some(&uid) = entries.get(&fetched.entry) {
                    messages.push((uid, fetched.bytes));
                }
            }
        }
        Ok(messages)
    }

    /// SPEC 8.3, 9: the first whole-body FETCH records `downloaded`, once per message and
    /// recipient (the store keeps it once), as POP3 RETR does. A batch's events are
    /// gathered here and recorded in one store write when the driver lets the batch's output
    /// out ([`Connection::releasable_output`]), which sends no body before its event is
    /// recorded; the store's writer commits writes that wait together at once.
    pub fn downloaded(&mut self, uids: Vec<u32>) {
        // The Tracking folder's messages are records, not deliveries.
        if folders::is_tracking(&self.folder()) {
            return;
        }
        let entries: Vec<i64> = uids.into_iter().filter_map(|uid| self.entry_of(uid)).collect();
        for entry in entries {
            // The batch was just read whole: its messages as read (no second lookup).
            let subject = match self.read_tracked.remove(&entry) {
                Some(read) => vouchmail_store::TrackingSubject::Read(read),
                None => vouchmail_store::TrackingSubject::Mailbox(entry),
            };
            self.downloads.push(subject);
        }
    }

    /// The gathered `downloaded` events as one store write, under way (none when there are
    /// none). Dropping the set aborts a write not yet sent to the store, whose bodies then
    /// never went out either.
    fn record_downloads(&mut self) -> tokio::task::JoinSet<()> {
        let mut writes = tokio::task::JoinSet::new();
        if self.downloads.is_empty() {
            return writes;
        }
        let at = crate::support::time::unix_now();
        let events: Vec<_> = std::mem::take(&mut self.downloads)
            .into_iter()
            .map(|subject| vouchmail_store::NewTrackingEvent {
                recipient: self.user().to_string(),
                subject,
                kind: vouchmail_store::TrackingKind::Downloaded,
                at,
                reporting_server: self.context.session_config.hostname.clone(),
            })
            .collect();
        let (store, bell) = (std::sync::Arc::clone(&self.context.store), self.context.outbox_bell.clone());
        writes.spawn(async move {
            crate::rules::tracking::record_events(store.as_ref(), events, &bell).await;
        });
        writes
    }

    /// SPEC 8.3, 9: of the session's `output`, what may be written now: a body goes out
    /// only once its `downloaded` event is recorded. While the command `going_on` has
    /// batches left, output whose events are still being written is held (up to
    /// [`MAX_HELD_OUTPUT`]) and the session runs its next batch meanwhile, so the writes
    /// do not stop the FETCH; at its end everything is waited for.
    pub async fn releasable_output(&mut self, output: Vec<u8>, going_on: bool) -> Vec<u8> {
        if self.downloads.is_empty() && self.held.is_empty() {
            return output;
        }
        let writes = self.record_downloads();
        self.held.push_back(HeldOutput { output, writes });
        let mut release = Vec::new();
        loop {
            let held: usize = self.held.iter().map(|h| h.output.len()).sum();
            let Some(front) = self.held.front_mut() else { break };
            while front.writes.try_join_next().is_some() {}
            if !front.writes.is_empty() {
                if going_on && held <= MAX_HELD_OUTPUT {
                    break;
                }
                while front.writes.join_next().await.is_some() {}
            }
            let Some(front) = self.held.pop_front() else { break };
            if release.is_empty() {
                release = front.output;
            } else {
                release.extend_from_slice(&front.output);
            }
        }
        release
    }

    /// RFC 9051 6.4.6, RFC 7162 3.1.3.
    pub async fn store_flags(
        &mut self,
        session: &mut Session,
        uids: Vec<u32>,
        mode: StoreMode,
        flags: Vec<Flag>,
        unchanged_since: Option<u64>,
    ) {
        if folders::is_read_only(&self.folder()) {
            return session.stored(Err(Failure::no_perm()));
        }
        let operation = match mode {
            StoreMode::Add => FlagOperation::Add,
            StoreMode::Remove => FlagOperation::Remove,
            StoreMode::Replace => FlagOperation::Replace,
        };
        let change = FlagChange { uids: uids.clone(), operation, flags: stored_flags(&flags), unchanged_since };
        let stored = match self.store().store_flags(self.user(), &self.folder(), change).await {
            Ok(stored) => stored,
            Err(e) => return session.stored(Err(failure(e, "STORE"))),
        };
        // The session reports the messages named and left as they were with the flags it knows.
        let updated = stored
            .changed
            .into_iter()
            .map(|(uid, flags, modseq)| FlagUpdate { uid, flags: imap_flags(&flags), modseq })
            .collect();
        session.stored(Ok(StoreOutcome { updated, modified: stored.refused }));
    }

    /// RFC 9051 6.4.7 COPY, RFC 6851 MOVE, with RFC 4315 COPYUID.
    pub async fn copy(&mut self, session: &mut Session, uids: Vec<u32>, target: String, is_move: bool) {
        if folders::is_read_only(&target) || (is_move && folders::is_read_only(&self.folder())) {
            return session.copied(Err(Failure::no_perm()));
        }
        if folders::is_tracking(&self.folder()) {
            return self.copy_records(session, uids, &target).await;
        }
        let result = self.store().copy_messages(self.user(), &self.folder(), uids, &target, is_move).await;
        match result {
            Ok(copied) => {
                if is_move {
                    if let Some(selected) = &mut self.selected {
                        for (source, _) in &copied.pairs {
                            selected.remove(*source);
                        }
                    }
                }
                let (source, destination) = copied.pairs.into_iter().unzip();
                session.copied(Ok(CopyUid { uid_validity: copied.uid_validity, source, destination }));
            }
            Err(StoreError::NotFound(_)) => session.copied(Err(Failure::try_create())),
            Err(e) => session.copied(Err(failure(e, "COPY"))),
        }
    }

    /// COPY out of the Tracking folder: each record's message appended to the target as a
    /// message of its own (then the user's to change or delete).
    async fn copy_records(&mut self, session: &mut Session, uids: Vec<u32>, target: &str) {
        let records = match self.tracking_records().await {
            Ok(records) => records,
            Err(e) => return session.copied(Err(failure(e, "COPY"))),
        };
        let (mut uid_validity, mut source, mut destination) = (0, Vec::new(), Vec::new());
        for uid in uids {
            let Some(stored) = self.entry_of(uid).and_then(|entry| records.get(&entry)) else { continue };
            // RFC 9051 6.4.7: the internal date kept (the record's flags are not the user's).
            let appended = AppendedMessage {
                queue_id: new_queue_id(),
                flags: Vec::new(),
                received_at: stored.stored_at,
                data: tracking_folder::tracking_message(stored, self.hostname()),
            };
            match self.store().append_message(self.user(), target, appended).await {
                Ok((validity, new_uid)) => {
                    uid_validity = validity;
                    source.push(uid);
                    destination.push(new_uid);
                }
                Err(StoreError::NotFound(_)) => return session.copied(Err(Failure::try_create())),
                Err(e) => return session.copied(Err(failure(e, "COPY"))),
            }
        }
        session.copied(Ok(CopyUid { uid_validity, source, destination }));
    }

    /// RFC 9051 6.4.3 EXPUNGE (and CLOSE), RFC 4315 2.1 UID EXPUNGE.
    pub async fn expunge(&mut self, session: &mut Session, uids: Option<Vec<u32>>) {
        if folders::is_read_only(&self.folder()) {
            return session.expunged(Ok(Vec::new()));
        }
        match self.store().expunge(self.user(), &self.folder(), uids).await {
            Ok(expunged) => {
                if let Some(selected) = &mut self.selected {
                    for uid in &expunged {
                        selected.remove(*uid);
                    }
                }
                session.expunged(Ok(expunged));
            }
            Err(e) => session.expunged(Err(failure(e, "EXPUNGE"))),
        }
    }
}
