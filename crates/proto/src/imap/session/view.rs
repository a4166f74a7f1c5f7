//! The selected mailbox as the client knows it (RFC 9051 2.3.1): the sequence number to
//! UID map, each message's flags and mod-sequence as last reported, and the changes the
//! driver pushed that are not reported yet (RFC 9051 7.5.1 decides when they may be).
//!
//! A session may hold a folder of many thousand messages for hours (IDLE), so the view
//! keeps each message in 32 bytes ([`Entry`]): the flags are an index into the view's
//! table of the distinct flag lists it has seen ([`FlagSets`]), which a mailbox has few of.

use std::collections::{HashMap, VecDeque};

use super::model::{Change, MailboxSnapshot, MessageMeta};
use crate::imap::response::{write_fetch, Data, FetchItem};
use crate::imap::types::{DateTime, Flag, MailboxName, NameEncoding, SequenceSet};

/// Changes held back before the oldest are applied regardless: a client that never sends
/// a command cannot make the session hold an unbounded list.
const MAX_PENDING_CHANGES: usize = 100_000;

/// One message of the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    uid: u32,
    /// Index into [`FlagSets`].
    flags: u32,
    modseq: u64,
    size: u64,
    /// The internal date: Unix seconds in the high 48 bits, the zone's minutes east of UTC
    /// (an `i16`) in the low 16.
    date: i64,
}

impl Entry {
    fn pack_date(date: DateTime) -> i64 {
        (date.unix << 16) | i64::from(date.offset_minutes as u16)
    }

    fn internal_date(&self) -> DateTime {
        DateTime { unix: self.date >> 16, offset_minutes: self.date as u16 as i16 }
    }
}

/// A message of the view as the stages read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MessageRef<'a> {
    pub uid: u32,
    pub flags: &'a [Flag],
    pub internal_date: DateTime,
    /// RFC822.SIZE.
    pub size: u64,
    pub modseq: u64,
}

/// The distinct flag lists of a view's messages, each kept once.
#[derive(Debug, Default)]
struct FlagSets {
    lists: Vec<Box<[Flag]>>,
    index: HashMap<Box<[Flag]>, u32>,
}

impl FlagSets {
    fn intern(&mut self, flags: &[Flag]) -> u32 {
        if let Some(&id) = self.index.get(flags) {
            return id;
        }
        let id = u32::try_from(self.lists.len()).unwrap_or(u32::MAX);
        let list: Box<[Flag]> = flags.into();
        self.lists.push(list.clone());
        self.index.insert(list, id);
        id
    }

    fn get(&self, id: u32) -> &[Flag] {
        self.lists.get(id as usize).map_or(&[], |list| list)
    }
}

#[derive(Debug)]
pub(crate) struct View {
    pub mailbox: MailboxName,
    pub read_only: bool,
    pub uid_validity: u32,
    pub uid_next: u32,
    pub highest_modseq: u64,
    /// Ascending UIDs; message sequence number = index + 1.
    entries: Vec<Entry>,
    flag_sets: FlagSets,
    pub pending: VecDeque<Change>,
}

/// What a sequence set names in the view.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Resolved {
    /// Indexes into the view, ascending.
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
        let mut flag_sets = FlagSets::default();
        let entries = snapshot.messages.iter().map(|m| Entry::new(m, &mut flag_sets)).collect();
        View {
            mailbox,
            read_only: read_only || snapshot.read_only,
            uid_validity: snapshot.uid_validity,
            uid_next: snapshot.uid_next.max(last_uid.saturating_add(1)),
            highest_modseq: snapshot.highest_modseq.max(highest),
            entries,
            flag_sets,
            pending: VecDeque::new(),
        }
    }

    pub fn exists(&self) -> u32 {
        u32::try_from(self.entries.len()).unwrap_or(u32::MAX)
    }

    /// Message `index` (sequence number - 1); it must exist.
    pub fn message(&self, index: usize) -> MessageRef<'_> {
        let entry = &self.entries[index];
        MessageRef {
            uid: entry.uid,
            flags: self.flag_sets.get(entry.flags),
            internal_date: entry.internal_date(),
            size: entry.size,
            modseq: entry.modseq,
        }
    }

    /// Every message, in sequence number order.
    pub fn messages(&self) -> impl Iterator<Item = MessageRef<'_>> {
        (0..self.entries.len()).map(|index| self.message(index))
    }

    pub fn uid_at(&self, index: usize) -> u32 {
        self.entries[index].uid
    }

    /// The largest UID in the view (`*` of UIDs), 0 when empty.
    pub fn largest_uid(&self) -> u32 {
        self.entries.last().map_or(0, |e| e.uid)
    }

    pub fn index_of(&self, uid: u32) -> Option<usize> {
        self.entries.binary_search_by_key(&uid, |e| e.uid).ok()
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
                for (low, high) in set.to_bounds(self.largest_uid()) {
                    let start = self.entries.partition_point(|e| e.uid < low);
                    let end = self.entries.partition_point(|e| e.uid <= high);
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
                    if self.entries.last().is_none_or(|e| e.uid < meta.uid) {
                        self.uid_next = self.uid_next.max(meta.uid.saturating_add(1));
                        self.highest_modseq = self.highest_modseq.max(meta.modseq);
                        let entry = Entry::new(&meta, &mut self.flag_sets);
                        self.entries.push(entry);
                        exists_changed = true;
                    }
                }
                Change::Flags { uid, flags, modseq } => {
                    let Some(index) = self.index_of(uid) else { continue };
                    let known = self.entries[index];
                    let newer = modseq > known.modseq
                        || (modseq == known.modseq && !same_flags(&flags, self.flag_sets.get(known.flags)));
                    if !newer {
                        continue;
                    }
                    self.set_flags_at(index, &flags, modseq);
                    self.write_flags(index, true, condstore, encoding, out);
                }
                Change::Expunged { uid } if allow_expunge => {
                    if let Some(index) = self.index_of(uid) {
                        self.entries.remove(index);
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
        let message = self.message(index);
        let mut items = vec![FetchItem::Flags(message.flags.to_vec())];
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
        self.entries.remove(index);
        Some(index as u32 + 1)
    }

    /// Sets a message's flags after our own STORE or FETCH; false when it is not in the view.
    pub fn set_flags(&mut self, uid: u32, flags: &[Flag], modseq: u64) -> bool {
        let Some(index) = self.index_of(uid) else { return false };
        self.set_flags_at(index, flags, modseq);
        true
    }

    fn set_flags_at(&mut self, index: usize, flags: &[Flag], modseq: u64) {
        let id = self.flag_sets.intern(flags);
        let entry = &mut self.entries[index];
        entry.flags = id;
        entry.modseq = entry.modseq.max(modseq);
        self.highest_modseq = self.highest_modseq.max(modseq);
        self.compact_flag_sets();
    }

    /// A client changing keywords for hours makes lists no message has any more: when
    /// they outnumber the messages, the table is made again from the messages' own.
    fn compact_flag_sets(&mut self) {
        if self.flag_sets.lists.len() <= 2 * self.entries.len() + 64 {
            return;
        }
        let mut fresh = FlagSets::default();
        for entry in &mut self.entries {
            entry.flags = fresh.intern(self.flag_sets.get(entry.flags));
        }
        self.flag_sets = fresh;
    }
}

impl Entry {
    fn new(meta: &MessageMeta, flag_sets: &mut FlagSets) -> Entry {
        Entry {
            uid: meta.uid,
            flags: flag_sets.intern(&meta.flags),
            modseq: meta.modseq,
            size: meta.size,
            date: Entry::pack_date(meta.internal_date),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(uid: u32, flags: Vec<Flag>, offset_minutes: i16) -> MessageMeta {
        MessageMeta {
            uid,
            flags,
            internal_date: DateTime { unix: 1_700_000_000 + i64::from(uid), offset_minutes },
            size: 1000 + u64::from(uid),
            modseq: u64::from(uid),
        }
    }

    fn view(messages: Vec<MessageMeta>) -> View {
        let snapshot = MailboxSnapshot {
            uid_validity: 1,
            uid_next: 1,
            highest_modseq: 0,
            messages,
            permanent_flags: Vec::new(),
            new_keywords: true,
            read_only: false,
        };
        View::new(MailboxName::new("INBOX"), false, snapshot)
    }

    #[test]
    fn an_entry_is_32_bytes_and_gives_back_what_it_was_given() {
        assert_eq!(std::mem::size_of::<Entry>(), 32);
        let given = vec![meta(3, vec![Flag::Seen], -480), meta(7, vec![Flag::Keyword("$Junk".into())], 330)];
        let view = view(given.clone());
        for (index, m) in given.iter().enumerate() {
            let read = view.message(index);
            assert_eq!(
                (read.uid, read.flags, read.internal_date, read.size, read.modseq),
                (m.uid, &m.flags[..], m.internal_date, m.size, m.modseq)
            );
        }
        let before_epoch = DateTime { unix: -86_400, offset_minutes: -720 };
        assert_eq!(Entry { date: Entry::pack_date(before_epoch), ..view.entries[0] }.internal_date(), before_epoch);
    }

    #[test]
    fn messages_with_the_same_flags_share_one_list_and_churn_is_compacted() {
        let mut view = view((1..=1000).map(|uid| meta(uid, vec![Flag::Seen], 0)).collect());
        assert_eq!(view.flag_sets.lists.len(), 1);
        for n in 0..5000u32 {
            assert!(view.set_flags(1, &[Flag::Keyword(format!("k{n}"))], 2000 + u64::from(n)));
        }
        assert!(view.flag_sets.lists.len() <= 2 * 1000 + 64 + 1);
        assert_eq!(view.message(0).flags, &[Flag::Keyword("k4999".into())]);
        assert_eq!(view.message(1).flags, &[Flag::Seen]);
    }
}
