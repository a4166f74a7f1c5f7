//! The selected state (RFC 9051 6.4): FETCH, STORE, SEARCH, COPY, MOVE (RFC 6851),
//! EXPUNGE, UID EXPUNGE (RFC 4315), CLOSE, UNSELECT and CHECK; everything of the
//! authenticated state too. FETCH and SEARCH run as jobs that ask the driver for message
//! data in batches, so a large FETCH never holds more than a batch and the output cap.

use std::collections::{HashMap, VecDeque};

use super::model::{
    Content, CopyUid, Failure, FlagUpdate, MessageData, StoreOutcome, FETCH_BATCH_MESSAGES, FETCH_BATCH_OCTETS,
    HEADER_BATCH_MESSAGES, HEADER_BATCH_OCTETS, HEADER_ESTIMATE,
};
use super::search::Context;
use super::view::{has_flag, Resolved};
use super::{Event, FetchJob, Job, Pending, SearchJob, Session, Wait};
use crate::imap::command::CommandBody;
use crate::imap::response::{write_fetch, Data, ESearch, ResponseCode, Status, StatusResponse};
use crate::imap::types::{FetchAttribute, Flag, SearchKey, SearchReturn, SequenceSet, Tag};

/// Messages written per step of a FETCH that needs no message data, between checks of
/// the output cap.
const METADATA_BATCH: usize = 1000;

impl Session {
    pub(super) fn handle_selected(&mut self, tag: Tag, body: CommandBody) -> Option<Event> {
        match body {
            // RFC 3501 6.4.1: CHECK is a NOOP here.
            CommandBody::Check => self.complete(&tag, "CHECK completed", true),
            CommandBody::Close => {
                if self.view.as_ref().is_some_and(|v| !v.read_only) {
                    // RFC 9051 6.4.1: expunge silently, then leave the mailbox.
                    self.wait = Wait::Driver(Pending::Expunge { tag, close: true, name: "CLOSE" });
                    return Some(Event::Expunge { uids: None });
                }
                self.deselect();
                self.write(&StatusResponse::ok(&tag, "CLOSE completed"));
            }
            CommandBody::Unselect => {
                self.deselect();
                self.write(&StatusResponse::ok(&tag, "UNSELECT completed"));
            }
            CommandBody::Expunge => {
                if self.read_only(&tag) {
                    return None;
                }
                self.wait = Wait::Driver(Pending::Expunge { tag, close: false, name: "EXPUNGE" });
                return Some(Event::Expunge { uids: None });
            }
            CommandBody::UidExpunge(set) => {
                if self.read_only(&tag) {
                    return None;
                }
                let uids = self.resolve_uids(&tag, &set, true)?;
                self.wait = Wait::Driver(Pending::Expunge { tag, close: false, name: "UID EXPUNGE" });
                return Some(Event::Expunge { uids: Some(uids) });
            }
            CommandBody::Fetch { uid, set, attributes, changed_since } => {
                return self.handle_fetch(tag, uid, &set, attributes, changed_since)
            }
            CommandBody::Store { uid, set, action } => {
                if self.read_only(&tag) {
                    return None;
                }
                if action.flags.contains(&Flag::Recent) {
                    self.bad_tagged(&tag, "\\Recent cannot be stored");
                    return None;
                }
                let uids = self.resolve_uids(&tag, &set, uid)?;
                if action.unchanged_since.is_some() {
                    // RFC 7162 3.1: UNCHANGEDSINCE enables CONDSTORE.
                    self.enabled.condstore = true;
                }
                let name = if uid { "UID STORE completed" } else { "STORE completed" };
                if uids.is_empty() {
                    self.complete(&tag, name, false);
                    return None;
                }
                self.wait = Wait::Driver(Pending::Store { tag, uid, silent: action.silent, name, uids: uids.clone() });
                return Some(Event::Store {
                    uids,
                    mode: action.mode,
                    flags: action.flags,
                    unchanged_since: action.unchanged_since,
                });
            }
            CommandBody::Copy { uid, set, mailbox } => return self.handle_copy(tag, uid, &set, mailbox, false),
            CommandBody::Move { uid, set, mailbox } => {
                if self.read_only(&tag) {
                    return None;
                }
                return self.handle_copy(tag, uid, &set, mailbox, true);
            }
            CommandBody::Search { uid, returns, criteria, .. } => {
                return self.handle_search(tag, uid, returns, criteria)
            }
            other => return self.handle_authenticated(tag, other),
        }
        None
    }

    /// RFC 9051 6.4: STORE, EXPUNGE and MOVE need a read-write mailbox.
    fn read_only(&mut self, tag: &Tag) -> bool {
        if self.view.as_ref().is_some_and(|v| v.read_only) {
            self.flush_updates(true);
            self.write(&StatusResponse::no(tag, "Mailbox is read-only").with_code(ResponseCode::ReadOnly));
            return true;
        }
        false
    }

    /// The UIDs `set` names; None (with BAD queued) for a sequence number that names no
    /// message.
    fn resolve_uids(&mut self, tag: &Tag, set: &SequenceSet, uid: bool) -> Option<Vec<u32>> {
        let view = self.view.as_ref()?;
        match view.resolve(set, uid, &self.saved) {
            Resolved::Indexes(indexes) => Some(indexes.into_iter().map(|i| view.uid_at(i)).collect()),
            Resolved::Invalid => {
                self.bad_tagged(tag, "Invalid message sequence number");
                None
            }
        }
    }

    /// RFC 9051 6.4.5 FETCH (RFC 7162 3.1.4 CHANGEDSINCE).
    fn handle_fetch(
        &mut self,
        tag: Tag,
        uid: bool,
        set: &SequenceSet,
        mut attributes: Vec<FetchAttribute>,
        changed_since: Option<u64>,
    ) -> Option<Event> {
        let mut uids = self.resolve_uids(&tag, set, uid)?;
        if changed_since.is_some() || attributes.contains(&FetchAttribute::ModSeq) {
            // RFC 7162 3.1: both enable CONDSTORE.
            self.enabled.condstore = true;
        }
        if let (Some(since), Some(view)) = (changed_since, self.view.as_ref()) {
            uids.retain(|u| view.index_of(*u).is_some_and(|i| view.message(i).modseq > since));
            if !attributes.contains(&FetchAttribute::ModSeq) {
                attributes.push(FetchAttribute::ModSeq);
            }
        }
        // RFC 9051 6.4.9: UID FETCH responses carry the UID.
        if uid && !attributes.contains(&FetchAttribute::Uid) {
            attributes.insert(0, FetchAttribute::Uid);
        }
        let read_only = self.view.as_ref().is_none_or(|v| v.read_only);
        let job = FetchJob {
            tag,
            name: if uid { "UID FETCH completed" } else { "FETCH completed" },
            content: super::fetch::content_needed(&attributes),
            mark_seen: !read_only && attributes.iter().any(FetchAttribute::sets_seen),
            attributes,
            queue: uids.into(),
            missing: false,
        };
        self.job = Some(Job::Fetch(job));
        None
    }

    /// One step of the running FETCH or SEARCH: a batch event, or the end.
    pub(super) fn continue_job(&mut self) -> Option<Event> {
        match self.job.take()? {
            Job::Fetch(job) => self.continue_fetch(job),
            Job::Search(job) => self.continue_search(job),
        }
    }

    fn continue_fetch(&mut self, mut job: FetchJob) -> Option<Event> {
        if job.queue.is_empty() {
            self.flush_updates(false);
            let response = StatusResponse::ok(&job.tag, job.name);
            // RFC 9051 7.1: some messages were expunged by another session meanwhile.
            let response = if job.missing { response.with_code(ResponseCode::ExpungeIssued) } else { response };
            self.write(&response);
            return None;
        }
        let Some(content) = job.content else {
            let batch: Vec<u32> = job.queue.drain(..job.queue.len().min(METADATA_BATCH)).collect();
            for uid in batch {
                self.write_fetch_response(&job, uid, &[], false);
            }
            self.job = Some(Job::Fetch(job));
            return None;
        };
        let uids = self.take_batch(&mut job.queue, content);
        let next = self.peek_batch(&job.queue, content);
        let mark_seen = match (&self.view, job.mark_seen) {
            (Some(view), true) => uids
                .iter()
                .filter(|&&u| view.index_of(u).is_some_and(|i| !has_flag(view.message(i).flags, &Flag::Seen)))
                .copied()
                .collect(),
            _ => Vec::new(),
        };
        self.job = Some(Job::Fetch(job));
        self.wait = Wait::Driver(Pending::Batch { uids: uids.clone() });
        Some(Event::Fetch { uids, content, mark_seen, next })
    }

    /// The next UIDs to load: up to [`FETCH_BATCH_MESSAGES`] or [`FETCH_BATCH_OCTETS`]
    /// (by the sizes in the view; for header sections the `HEADER_` limits), at least one.
    fn take_batch(&self, queue: &mut VecDeque<u32>, content: Content) -> Vec<u32> {
        let (len, _) = self.batch_len(queue, content);
        queue.drain(..len).collect()
    }

    /// The batch after this one, as [`Session::take_batch`] will take it (the driver may
    /// read it ahead while this one is answered); empty at the end, and for a message
    /// larger than a batch, which is not held twice.
    fn peek_batch(&self, queue: &VecDeque<u32>, content: Content) -> Vec<u32> {
        let (len, oversized) = self.batch_len(queue, content);
        if oversized {
            return Vec::new();
        }
        queue.iter().take(len).copied().collect()
    }

    /// How many UIDs from the front of `queue` make the next batch, and whether they pass
    /// the batch's octets (one message larger than a batch).
    fn batch_len(&self, queue: &VecDeque<u32>, content: Content) -> (usize, bool) {
        let (max_messages, max_octets, estimate) = match content {
            Content::Full => (FETCH_BATCH_MESSAGES, FETCH_BATCH_OCTETS, u64::MAX),
            Content::Header => (HEADER_BATCH_MESSAGES, HEADER_BATCH_OCTETS, HEADER_ESTIMATE),
        };
        let mut len = 0;
        let mut octets = 0u64;
        for &uid in queue {
            let size = match &self.view {
                Some(view) => view.index_of(uid).map_or(0, |i| view.message(i).size).min(estimate),
                None => 0,
            };
            if len > 0 && (len >= max_messages || octets.saturating_add(size) > max_octets) {
                break;
            }
            octets = octets.saturating_add(size);
            len += 1;
        }
        (len, octets > max_octets)
    }

    /// `* n FETCH (...)` for one message still in the view; false when it is not.
    fn write_fetch_response(&mut self, job: &FetchJob, uid: u32, bytes: &[u8], flags_changed: bool) -> bool {
        let encoding = self.encoding();
        let condstore = self.enabled.condstore;
        let Some(view) = self.view.as_ref() else { return false };
        let Some(index) = view.index_of(uid) else { return false };
        let items =
            super::fetch::items(&job.attributes, view.message(index), bytes, flags_changed, condstore, encoding);
        write_fetch(index as u32 + 1, &items, encoding, &mut self.output);
        true
    }

    /// The driver's answer to [`Event::Fetch`]: the messages of the batch that still
    /// exist (with their flags when `\Seen` was set).
    pub fn fetched(&mut self, result: Result<Vec<MessageData>, Failure>) {
        let Some(pending) = self.take_pending() else { return };
        let Pending::Batch { uids } = pending else {
            self.wait = Wait::Driver(pending);
            return;
        };
        let job = self.job.take();
        let messages = match result {
            Ok(messages) => messages,
            Err(failure) => {
                let tag = match &job {
                    Some(Job::Fetch(job)) => job.tag.clone(),
                    Some(Job::Search(job)) => job.tag.clone(),
                    None => return,
                };
                return self.fail(&tag, failure);
            }
        };
        let mut by_uid: HashMap<u32, MessageData> = messages.into_iter().map(|m| (m.uid, m)).collect();
        match job {
            Some(Job::Fetch(mut job)) => {
                let whole = job.attributes.iter().any(FetchAttribute::is_whole_message);
                let mut downloaded = Vec::new();
                for uid in uids {
                    let Some(data) = by_uid.remove(&uid) else {
                        job.missing = true;
                        continue;
                    };
                    let mut flags_changed = false;
                    if let (Some((flags, modseq)), Some(view)) = (data.seen_set, self.view.as_mut()) {
                        flags_changed = view.set_flags(uid, &flags, modseq);
                    }
                    if self.write_fetch_response(&job, uid, &data.bytes, flags_changed) {
                        if whole {
                            downloaded.push(uid);
                        }
                    } else {
                        job.missing = true;
                    }
                }
                if !downloaded.is_empty() {
                    self.pending_events.push_back(Event::Downloaded { uids: downloaded });
                }
                self.job = Some(Job::Fetch(job));
            }
            Some(Job::Search(mut job)) => {
                let Some(view) = self.view.as_ref() else { return };
                let cx = Context { exists: view.exists(), largest_uid: view.largest_uid(), saved: &self.saved };
                for uid in uids {
                    let (Some(data), Some(index)) = (by_uid.remove(&uid), view.index_of(uid)) else { continue };
                    let seq = index as u32 + 1;
                    if super::search::matches(&job.criteria, seq, &view.message(index), Some(&data.bytes), &cx)
                        == Some(true)
                    {
                        job.matches.push(uid);
                    }
                }
                self.job = Some(Job::Search(job));
            }
            None => {}
        }
    }

    /// RFC 9051 6.4.6 (RFC 7162 3.1.3): the driver's answer to [`Event::Store`].
    pub fn stored(&mut self, result: Result<StoreOutcome, Failure>) {
        let Some(pending) = self.take_pending() else { return };
        let Pending::Store { tag, uid, silent, name, uids: named } = pending else {
            self.wait = Wait::Driver(pending);
            return;
        };
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(failure) => return self.fail(&tag, failure),
        };
        let encoding = self.encoding();
        let condstore = self.enabled.condstore;
        let Some(view) = self.view.as_mut() else { return };
        let mut changed: HashMap<u32, FlagUpdate> = outcome.updated.into_iter().map(|u| (u.uid, u)).collect();
        for named_uid in named.into_iter().filter(|u| !outcome.modified.contains(u)) {
            // A message STORE left as it was is reported with the flags the view has.
            let update = match changed.remove(&named_uid) {
                Some(update) => update,
                None => match view.index_of(named_uid) {
                    Some(index) => {
                        let message = view.message(index);
                        FlagUpdate { uid: named_uid, flags: message.flags.to_vec(), modseq: message.modseq }
                    }
                    None => continue,
                },
            };
            if !view.set_flags(update.uid, &update.flags, update.modseq) {
                continue;
            }
            // RFC 9051 6.4.6: the new flags unless .SILENT; RFC 7162 3.2: with CONDSTORE the
            // MODSEQ goes out even then.
            if let Some(index) = view.index_of(update.uid) {
                if !silent {
                    view.write_flags(index, uid, condstore, encoding, &mut self.output);
                } else if condstore {
                    let mut items = vec![crate::imap::response::FetchItem::ModSeq(view.message(index).modseq)];
                    if uid {
                        items.insert(0, crate::imap::response::FetchItem::Uid(update.uid));
                    }
                    write_fetch(index as u32 + 1, &items, encoding, &mut self.output);
                }
            }
        }
        if outcome.modified.is_empty() {
            return self.complete(&tag, name, false);
        }
        // RFC 7162 3.1.3: MODIFIED lists UIDs for UID STORE, sequence numbers otherwise.
        let numbers: Vec<u32> = if uid {
            outcome.modified
        } else {
            outcome.modified.iter().filter_map(|&u| view.index_of(u).map(|i| i as u32 + 1)).collect()
        };
        let code = ResponseCode::Modified(SequenceSet::from_numbers(&numbers));
        self.complete_with(&tag, code, "Conditional STORE failed", false);
    }

    /// RFC 9051 6.4.7 COPY, 6.4.8 MOVE (RFC 6851).
    fn handle_copy(
        &mut self,
        tag: Tag,
        uid: bool,
        set: &SequenceSet,
        target: crate::imap::types::MailboxName,
        is_move: bool,
    ) -> Option<Event> {
        let uids = self.resolve_uids(&tag, set, uid)?;
        let name = match (uid, is_move) {
            (false, false) => "COPY completed",
            (true, false) => "UID COPY completed",
            (false, true) => "MOVE completed",
            (true, true) => "UID MOVE completed",
        };
        if uids.is_empty() {
            // RFC 4315 3: nothing to copy, no COPYUID.
            self.complete(&tag, name, true);
            return None;
        }
        self.wait = Wait::Driver(Pending::Copy { tag, is_move, name });
        Some(Event::Copy { uids, target, is_move })
    }

    /// The driver's answer to [`Event::Copy`]: COPYUID in the tagged OK of COPY; for MOVE
    /// in an untagged OK before the EXPUNGEs of the moved messages (RFC 6851 4.3).
    pub fn copied(&mut self, result: Result<CopyUid, Failure>) {
        let Some(pending) = self.take_pending() else { return };
        let Pending::Copy { tag, is_move, name } = pending else {
            self.wait = Wait::Driver(pending);
            return;
        };
        let copy = match result {
            Ok(copy) => copy,
            Err(failure) => return self.fail(&tag, failure),
        };
        let code =
            (!copy.source.is_empty() && copy.source.len() == copy.destination.len()).then(|| ResponseCode::CopyUid {
                uid_validity: copy.uid_validity,
                source: SequenceSet::from_numbers(&copy.source),
                destination: SequenceSet::from_numbers(&copy.destination),
            });
        if !is_move {
            return match code {
                Some(code) => self.complete_with(&tag, code, name, true),
                None => self.complete(&tag, name, true),
            };
        }
        if let Some(code) = code {
            self.write(&StatusResponse::untagged(Status::Ok, "Moved").with_code(code));
        }
        self.expunge_uids(&copy.source);
        self.complete(&tag, name, true);
    }

    /// `* n EXPUNGE` for each UID still in the view (RFC 9051 7.5.1), pending updates first.
    fn expunge_uids(&mut self, uids: &[u32]) {
        self.flush_updates(true);
        let encoding = self.encoding();
        let Some(view) = self.view.as_mut() else { return };
        for &uid in uids {
            if let Some(seq) = view.remove(uid) {
                Data::Expunge(seq).write_to(encoding, &mut self.output);
            }
        }
        self.saved.retain(|u| !uids.contains(u));
    }

    /// The driver's answer to [`Event::Expunge`]: the UIDs it removed.
    pub fn expunged(&mut self, result: Result<Vec<u32>, Failure>) {
        let Some(pending) = self.take_pending() else { return };
        let Pending::Expunge { tag, close, name } = pending else {
            self.wait = Wait::Driver(pending);
            return;
        };
        let uids = match result {
            Ok(uids) => uids,
            Err(failure) => return self.fail(&tag, failure),
        };
        if close {
            // RFC 9051 6.4.1: no untagged EXPUNGE for CLOSE.
            self.deselect();
            self.write(&StatusResponse::ok(&tag, name));
            return;
        }
        self.expunge_uids(&uids);
        let text = if name == "EXPUNGE" { "EXPUNGE completed" } else { "UID EXPUNGE completed" };
        self.complete(&tag, text, true);
    }

    /// RFC 9051 6.4.4 SEARCH with ESEARCH return options (6.4.4.1) and SAVE (RFC 5182).
    fn handle_search(
        &mut self,
        tag: Tag,
        uid: bool,
        returns: Option<Vec<SearchReturn>>,
        criteria: SearchKey,
    ) -> Option<Event> {
        if criteria.uses_modseq() {
            // RFC 7162 3.1: SEARCH MODSEQ enables CONDSTORE.
            self.enabled.condstore = true;
        }
        let content = super::search::content_needed(&criteria);
        let view = self.view.as_ref()?;
        let cx = Context { exists: view.exists(), largest_uid: view.largest_uid(), saved: &self.saved };
        let mut matches = Vec::new();
        let mut queue = VecDeque::new();
        for (index, meta) in view.messages().enumerate() {
            match super::search::matches(&criteria, index as u32 + 1, &meta, None, &cx) {
                Some(true) => matches.push(meta.uid),
                Some(false) => {}
                None => queue.push_back(meta.uid),
            }
        }
        let job =
            SearchJob { tag, uid, returns, criteria, queue, content: content.unwrap_or(Content::Header), matches };
        self.job = Some(Job::Search(job));
        None
    }

    fn continue_search(&mut self, mut job: SearchJob) -> Option<Event> {
        if job.queue.is_empty() {
            self.finish_search(job);
            return None;
        }
        let uids = self.take_batch(&mut job.queue, job.content);
        let content = job.content;
        let next = self.peek_batch(&job.queue, content);
        self.job = Some(Job::Search(job));
        self.wait = Wait::Driver(Pending::Batch { uids: uids.clone() });
        Some(Event::Fetch { uids, content, mark_seen: Vec::new(), next })
    }

    /// The SEARCH (IMAP4rev1 without RETURN) or ESEARCH response, then the tagged OK.
    fn finish_search(&mut self, mut job: SearchJob) {
        let Some(view) = self.view.as_ref() else { return };
        job.matches.sort_unstable();
        let modseq = if job.criteria.uses_modseq() {
            job.matches.iter().filter_map(|&u| view.index_of(u).map(|i| view.message(i).modseq)).max()
        } else {
            None
        };
        let numbers: Vec<u32> = if job.uid {
            job.matches.clone()
        } else {
            job.matches.iter().filter_map(|&u| view.index_of(u).map(|i| i as u32 + 1)).collect()
        };
        // IMAP4rev2 answers a SEARCH without RETURN as RETURN (ALL) (RFC 9051 6.4.4).
        let returns = match (&job.returns, self.enabled.imap4rev2) {
            (Some(r), _) if r.is_empty() => Some(vec![SearchReturn::All]),
            (Some(r), _) => Some(r.clone()),
            (None, true) => Some(vec![SearchReturn::All]),
            (None, false) => None,
        };
        match returns {
            None => self.data(&Data::Search { numbers, highest_modseq: modseq }),
            Some(returns) => {
                if returns.contains(&SearchReturn::Save) {
                    self.saved = job.matches.clone();
                }
                // RFC 5182 2.4: SAVE alone sends no ESEARCH.
                if returns.iter().any(|r| *r != SearchReturn::Save) {
                    let mut result = ESearch { tag: Some(job.tag.clone()), uid: job.uid, ..ESearch::default() };
                    for r in &returns {
                        match r {
                            SearchReturn::Min => result.min = numbers.first().copied(),
                            SearchReturn::Max => result.max = numbers.last().copied(),
                            SearchReturn::All if !numbers.is_empty() => {
                                result.all = Some(SequenceSet::from_numbers(&numbers))
                            }
                            SearchReturn::Count => result.count = Some(numbers.len() as u32),
                            _ => {}
                        }
                    }
                    if !numbers.is_empty() {
                        result.modseq = modseq;
                    }
                    self.data(&Data::ESearch(result));
                }
            }
        }
        let name = if job.uid { "UID SEARCH completed" } else { "SEARCH completed" };
        self.complete(&job.tag, name, false);
    }
}
