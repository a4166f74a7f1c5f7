//! The selected mailbox as the client knows it (RFC 9051 2.3.1): the sequence number to
//! UID map, each message's flags and mod-sequence as last reported, and the changes the
//! driver pushed that are not reported yet (RFC 9051 7.5.1 decides when they may be).

use std::collections::VecDeque;

use super::model::{Change, MailboxSnapshot, MessageMeta};
use crate::imap::response::{write_fetch, Data, FetchItem};
use crate::imap::types::{Flag, MailboxName, NameEncoding, SequenceSet};

/// Changes held back before the oldest are applied regardless: a client that never sends
/// a command cannot make the session hold an unbounded list.
const MAX_PENDING_CHANGES: usize = 100_000;

#[derive(Debug)]
pub(crate) struct View {
    pub mailbox: MailboxName,
    pub read_only: bool,
    pub uid_validity: u32,
    pub uid_next: u32,
    pub highest_modseq: u64,
    /// Ascending UIDs; message sequence number = index + 1.
    pub messages: Vec<MessageMeta>,
    pub pending: VecDeque<Change>,
}

/// What a sequence set names in the view.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Resolved {
    /// Indexes into `messages`, ascending.
    Indexes(Vec<usize>),
    /// A message sequence number that names no message (RFC 9051 9: BAD).
    Invalid,
}

impl View {
    pub fn new(mailbox: MailboxName, read_only: bool, mut snapshot: MailboxSnapshot) -> View {
        snapshot.messages.sort_by_key(|m| m.uid);
        snapshot.messages.dedup_by_key(|m| m.uid);
        let highest = snapshot.messages.iter().map(|m| m.modseq).max().unwrap_or(0);
        let last_uid = snapshot.messages.last().map_or(0, |m| m.uid);
        View {
            mailbox,
            read_only: read_only || snapshot.read_only,
            uid_validity: snapshot.uid_validity,
            uid_next: snapshot.uid_next.max(last_uid.saturating_add(1)),
            highest_modseq: snapshot.highest_modseq.max(highest),
            messages: snapshot.messages,
            pending: VecDeque::new(),
        }
    }

    pub fn exists(&self) -> u32 {
        u32::try_from(self.messages.len()).unwrap_or(u32::MAX)
    }

    pub fn index_of(&self, uid: u32) -> Option<usize> {
        self.messages.binary_search_by_key(&uid, |m| m.uid).ok()
    }

    /// The messages `set` names: UIDs when `uid` (those that do not exist are left out,
    /// RFC 9051 6.4.8), else sequence numbers, which must exist. `$` is `saved`, UIDs of
    /// the last SEARCH RETURN (SAVE) (RFC 5182 2.1).
    pub fn resolve(&self, set: &SequenceSet, uid: bool, saved: &[u32]) -> Resolved {
        let mut found = Vec::new();
        match set {
            SequenceSet::Saved => {
                found.extend(saved.iter().filter_map(|&u| self.index_of(u)));
                found.sort_unstable();
                found.dedup();
            }
            SequenceSet::Ranges(_) if uid => {
                let largest = self.messages.last().map_or(0, |m| m.uid);
                for (low, high) in set.to_bounds(largest) {
                    let start = self.messages.partition_point(|m| m.uid < low);
                    let end = self.messages.partition_point(|m| m.uid <= high);
                    found.extend(start..end.max(start));
                }
            }
            SequenceSet::Ranges(_) => {
                let exists = self.exists();
                for (low, high) in set.to_bounds(exists) {
                    if low == 0 || high > exists {
                        return Resolved::Invalid;
                    }
                    found.extend((low as usize - 1)..(high as usize));
                }
            }
        }
        Resolved::Indexes(found)
    }

    /// Queues a change the driver pushed.
    pub fn push(&mut self, change: Change) {
        self.pending.push_back(change);
    }

    /// Whether more changes are held than a silent client may make the session keep.
    pub fn overfull(&self) -> bool {
        self.pending.len() > MAX_PENDING_CHANGES
    }

    /// Reports pending changes, in order, as untagged responses (RFC 9051 7.4.1 EXISTS,
    /// 7.5.1 EXPUNGE, 7.5.2 FETCH). Without `allow_expunge` (during FETCH, STORE and
    /// SEARCH, RFC 9051 7.5.1) expunges stay pending and the rest is reported around
    /// them: sequence numbers are always those the client knows.
    pub fn flush(&mut self, allow_expunge: bool, condstore: bool, encoding: NameEncoding, out: &mut Vec<u8>) {
        let mut held = VecDeque::new();
        let mut exists_changed = false;
        while let Some(change) = self.pending.pop_front() {
            if !matches!(change, Change::New(_)) && exists_changed {
                Data::Exists(self.exists()).write_to(encoding, out);
                exists_changed = false;
            }
            match change {
                Change::New(meta) => {
                    if self.messages.last().is_none_or(|m| m.uid < meta.uid) {
                        self.uid_next = self.uid_next.max(meta.uid.saturating_add(1));
                        self.highest_modseq = self.highest_modseq.max(meta.modseq);
                        self.messages.push(meta);
                        exists_changed = true;
                    }
                }
                Change::Flags { uid, flags, modseq } => {
                    let Some(index) = self.index_of(uid) else { continue };
                    let message = &mut self.messages[index];
                    let newer =
                        modseq > message.modseq || (modseq == message.modseq && !same_flags(&flags, &message.flags));
                    if !newer {
                        continue;
                    }
                    message.flags = flags;
                    message.modseq = message.modseq.max(modseq);
                    self.highest_modseq = self.highest_modseq.max(modseq);
                    self.write_flags(index, true, condstore, encoding, out);
                }
                Change::Expunged { uid } if allow_expunge => {
                    if let Some(index) = self.index_of(uid) {
                        self.messages.remove(index);
                        Data::Expunge(index as u32 + 1).write_to(encoding, out);
                    }
                }
                held_back @ Change::Expunged { .. } => held.push_back(held_back),
            }
        }
        if exists_changed {
            Data::Exists(self.exists()).write_to(encoding, out);
        }
        self.pending = held;
    }

    /// `* n FETCH (FLAGS (...) [UID u] [MODSEQ (m)])` for message `index`.
    pub fn write_flags(
        &self,
        index: usize,
        with_uid: bool,
        condstore: bool,
        encoding: NameEncoding,
        out: &mut Vec<u8>,
    ) {
        let message = &self.messages[index];
        let mut items = vec![FetchItem::Flags(message.flags.clone())];
        if with_uid {
            items.push(FetchItem::Uid(message.uid));
        }
        if condstore {
            items.push(FetchItem::ModSeq(message.modseq));
        }
        write_fetch(index as u32 + 1, &items, encoding, out);
    }

    /// Removes the message with this UID (after our own EXPUNGE or MOVE): its sequence
    /// number, for the EXPUNGE response.
    pub fn remove(&mut self, uid: u32) -> Option<u32> {
        let index = self.index_of(uid)?;
        self.messages.remove(index);
        Some(index as u32 + 1)
    }

    /// Sets a message's flags after our own STORE or FETCH; false when it is not in the view.
    pub fn set_flags(&mut self, uid: u32, flags: Vec<Flag>, modseq: u64) -> bool {
        let Some(index) = self.index_of(uid) else { return false };
        let message = &mut self.messages[index];
        message.flags = flags;
        message.modseq = message.modseq.max(modseq);
        self.highest_modseq = self.highest_modseq.max(modseq);
        true
    }
}

/// The same flags in any order, compared as RFC 9051 2.3.2 says (case-insensitively).
pub(crate) fn same_flags(a: &[Flag], b: &[Flag]) -> bool {
    a.len() == b.len() && a.iter().all(|f| b.iter().any(|g| g.same_as(f)))
}

/// Whether `flags` holds `flag`.
pub(crate) fn has_flag(flags: &[Flag], flag: &Flag) -> bool {
    flags.iter().any(|f| f.same_as(flag))
}
