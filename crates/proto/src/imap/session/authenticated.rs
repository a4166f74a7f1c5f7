//! The authenticated state (RFC 9051 6.3): ENABLE, SELECT/EXAMINE, CREATE, DELETE, RENAME,
//! SUBSCRIBE, UNSUBSCRIBE, LIST (RFC 5258, RFC 5819, RFC 6154) and LSUB, NAMESPACE,
//! STATUS, APPEND, GETQUOTA/GETQUOTAROOT (RFC 9208) and IDLE; valid in the selected state
//! too.

use super::model::{AppendUid, Failure, ListRequest, MailboxInfo, MailboxSnapshot, MailboxStatus, Quota};
use super::view::View;
use super::{Event, Pending, Session, Wait};
use crate::imap::command::{CommandBody, ListReturn, ListSelection};
use crate::imap::response::{Data, ListEntry, Namespace, ResponseCode, Status, StatusResponse};
use crate::imap::types::{Flag, MailboxAttribute, MailboxName, StatusItem, Tag};

/// vouchmail's hierarchy delimiter (SPEC 9 folders; RFC 9051 5.1).
pub(super) const DELIMITER: char = '/';

impl Session {
    pub(super) fn handle_authenticated(&mut self, tag: Tag, body: CommandBody) -> Option<Event> {
        match body {
            CommandBody::Enable(names) => self.handle_enable(&tag, &names),
            CommandBody::Select { mailbox, condstore } => return self.handle_select(tag, mailbox, false, condstore),
            CommandBody::Examine { mailbox, condstore } => return self.handle_select(tag, mailbox, true, condstore),
            CommandBody::Create { mailbox, special_use } => {
                // RFC 9051 6.3.4: a trailing delimiter only declares the intent to create
                // names below it.
                let name = mailbox.as_str().trim_end_matches(DELIMITER);
                if name.is_empty() || mailbox.is_inbox() {
                    self.write(
                        &StatusResponse::no(&tag, "Cannot create that mailbox").with_code(ResponseCode::AlreadyExists),
                    );
                    return None;
                }
                let mailbox = MailboxName::new(name);
                self.wait = Wait::Driver(Pending::Done { tag, name: "CREATE" });
                return Some(Event::Create { mailbox, special_use });
            }
            CommandBody::Delete(mailbox) => {
                // RFC 9051 6.3.5: deleting INBOX is an error.
                if mailbox.is_inbox() {
                    self.write(&StatusResponse::no(&tag, "INBOX cannot be deleted").with_code(ResponseCode::Cannot));
                    return None;
                }
                self.wait = Wait::Driver(Pending::Done { tag, name: "DELETE" });
                return Some(Event::Delete { mailbox });
            }
            CommandBody::Rename { from, to } => {
                if to.is_inbox() {
                    self.write(
                        &StatusResponse::no(&tag, "Cannot rename to INBOX").with_code(ResponseCode::AlreadyExists),
                    );
                    return None;
                }
                self.wait = Wait::Driver(Pending::Done { tag, name: "RENAME" });
                return Some(Event::Rename { from, to });
            }
            CommandBody::Subscribe(mailbox) => {
                self.wait = Wait::Driver(Pending::Done { tag, name: "SUBSCRIBE" });
                return Some(Event::Subscribe { mailbox, subscribe: true });
            }
            CommandBody::Unsubscribe(mailbox) => {
                self.wait = Wait::Driver(Pending::Done { tag, name: "UNSUBSCRIBE" });
                return Some(Event::Subscribe { mailbox, subscribe: false });
            }
            CommandBody::List { reference, patterns, selection, returns } => {
                return self.handle_list(tag, ListRequest { reference, patterns, selection, returns, lsub: false })
            }
            CommandBody::Lsub { reference, pattern } => {
                let selection = ListSelection { subscribed: true, ..ListSelection::default() };
                let request = ListRequest {
                    reference,
                    patterns: vec![pattern],
                    selection,
                    returns: ListReturn::default(),
                    lsub: true,
                };
                return self.handle_list(tag, request);
            }
            // RFC 9051 6.3.10: one personal namespace, no others.
            CommandBody::Namespace => {
                let personal = vec![Namespace { prefix: String::new(), delimiter: Some(DELIMITER) }];
                self.data(&Data::Namespace { personal, other_users: Vec::new(), shared: Vec::new() });
                self.complete(&tag, "NAMESPACE completed", true);
            }
            CommandBody::Status { mailbox, items } => {
                self.wait = Wait::Driver(Pending::Status { tag, mailbox: mailbox.clone(), items });
                return Some(Event::Status { mailbox });
            }
            CommandBody::Append { mailbox, flags, date, message, .. } => {
                if flags.contains(&Flag::Recent) {
                    self.bad_tagged(&tag, "\\Recent cannot be set");
                    return None;
                }
                self.wait = Wait::Driver(Pending::Append { tag });
                return Some(Event::Append { mailbox, flags, date, message });
            }
            CommandBody::GetQuota(root) => {
                // RFC 9208 4.2: one quota root per user, the empty name.
                if !root.is_empty() {
                    self.write(&StatusResponse::no(&tag, "No such quota root").with_code(ResponseCode::NonExistent));
                    return None;
                }
                self.wait = Wait::Driver(Pending::Quota { tag, mailbox: None });
                return Some(Event::Quota);
            }
            CommandBody::GetQuotaRoot(mailbox) => {
                self.wait = Wait::Driver(Pending::Quota { tag, mailbox: Some(mailbox) });
                return Some(Event::Quota);
            }
            CommandBody::Idle => return self.handle_idle(tag),
            CommandBody::StartTls | CommandBody::Login { .. } | CommandBody::Authenticate { .. } => {
                self.bad_tagged(&tag, "Already authenticated")
            }
            CommandBody::Check
            | CommandBody::Close
            | CommandBody::Unselect
            | CommandBody::Expunge
            | CommandBody::UidExpunge(_)
            | CommandBody::Search { .. }
            | CommandBody::Fetch { .. }
            | CommandBody::Store { .. }
            | CommandBody::Copy { .. }
            | CommandBody::Move { .. } => self.bad_tagged(&tag, "No mailbox selected"),
            // Answered in every state by the caller.
            CommandBody::Capability | CommandBody::Noop | CommandBody::Logout | CommandBody::Id(_) => {}
        }
        None
    }

    /// RFC 9051 6.3.1 (RFC 5161): IMAP4rev2, CONDSTORE (RFC 7162 3.1) and UTF8=ACCEPT
    /// (RFC 6855 3); unknown names are ignored. Only before a mailbox is selected.
    fn handle_enable(&mut self, tag: &Tag, names: &[String]) {
        if self.view.is_some() {
            self.bad_tagged(tag, "ENABLE is not allowed while a mailbox is selected");
            return;
        }
        let mut newly = Vec::new();
        for name in names {
            let flag = match name.to_ascii_uppercase().as_str() {
                "IMAP4REV2" => &mut self.enabled.imap4rev2,
                "CONDSTORE" => &mut self.enabled.condstore,
                "UTF8=ACCEPT" => &mut self.enabled.utf8_accept,
                _ => continue,
            };
            if !std::mem::replace(flag, true) {
                newly.push(name.clone());
            }
        }
        // Mailbox names of the commands that follow are read in the new encoding.
        let encoding = self.encoding();
        self.reader.set_encoding(encoding);
        self.data(&Data::Enabled(newly));
        self.complete(tag, "ENABLE completed", true);
    }

    /// RFC 9051 6.3.2, 6.3.3: a selected mailbox is closed first, with `OK [CLOSED]`.
    fn handle_select(&mut self, tag: Tag, mailbox: MailboxName, read_only: bool, condstore: bool) -> Option<Event> {
        if self.view.is_some() {
            self.flush_updates(true);
            self.deselect();
            self.write(
                &StatusResponse::untagged(Status::Ok, "Previous mailbox is now closed").with_code(ResponseCode::Closed),
            );
        }
        // RFC 7162 3.1.8: SELECT (CONDSTORE) enables CONDSTORE.
        self.enabled.condstore |= condstore;
        self.wait = Wait::Driver(Pending::Select { tag, mailbox: mailbox.clone(), read_only });
        Some(Event::Select { mailbox, read_only, condstore: self.enabled.condstore })
    }

    /// The driver's answer to [`Event::Select`]: the untagged responses of RFC 9051 6.3.2
    /// (with RFC 3501 6.3.1's RECENT and UNSEEN for IMAP4rev1 clients and RFC 7162
    /// 3.1.2.1's HIGHESTMODSEQ once CONDSTORE is on), then the tagged OK.
    pub fn selected(&mut self, result: Result<MailboxSnapshot, Failure>) {
        let Some(pending) = self.take_pending() else { return };
        let Pending::Select { tag, mailbox, read_only } = pending else {
            self.wait = Wait::Driver(pending);
            return;
        };
        let snapshot = match result {
            Ok(snapshot) => snapshot,
            Err(failure) => return self.fail(&tag, failure),
        };
        let permanent = snapshot.permanent_flags.clone();
        let new_keywords = snapshot.new_keywords;
        let view = View::new(mailbox.clone(), read_only, snapshot);
        let read_only = view.read_only;
        let encoding = self.encoding();
        let rev1 = !self.enabled.imap4rev2;
        let untagged = |status_text: &'static str, code: ResponseCode| {
            StatusResponse::untagged(Status::Ok, status_text).with_code(code)
        };
        let mut out = Vec::new();
        Data::Exists(view.exists()).write_to(encoding, &mut out);
        if rev1 {
            Data::Recent(0).write_to(encoding, &mut out);
            if let Some(first) = view.messages().position(|m| !m.flags.contains(&Flag::Seen)) {
                untagged("First unseen", ResponseCode::Unseen(first as u32 + 1)).write_to(&mut out);
            }
        }
        untagged("UIDs valid", ResponseCode::UidValidity(view.uid_validity)).write_to(&mut out);
        untagged("Predicted next UID", ResponseCode::UidNext(view.uid_next)).write_to(&mut out);
        let mut flags = vec![Flag::Answered, Flag::Flagged, Flag::Deleted, Flag::Seen, Flag::Draft];
        for flag in &permanent {
            if matches!(flag, Flag::Keyword(_)) && !flags.iter().any(|f| f.same_as(flag)) {
                flags.push(flag.clone());
            }
        }
        Data::Flags(flags).write_to(encoding, &mut out);
        let (flags, new_keywords) = if read_only { (Vec::new(), false) } else { (permanent, new_keywords) };
        let text = if read_only { "No permanent flags permitted" } else { "Limited" };
        untagged(text, ResponseCode::PermanentFlags { flags, new_keywords }).write_to(&mut out);
        if self.enabled.condstore {
            untagged("Highest", ResponseCode::HighestModSeq(view.highest_modseq)).write_to(&mut out);
        }
        if !rev1 {
            // RFC 9051 6.3.2: the mailbox's LIST response, with its name as the server has it.
            let entry = ListEntry {
                attributes: Vec::new(),
                delimiter: Some(DELIMITER),
                mailbox: mailbox.clone(),
                child_subscribed: false,
                old_name: None,
            };
            Data::List(entry).write_to(encoding, &mut out);
        }
        self.output.extend_from_slice(&out);
        self.view = Some(view);
        let (code, text) = if read_only {
            (ResponseCode::ReadOnly, if read_only { "EXAMINE completed" } else { "SELECT completed" })
        } else {
            (ResponseCode::ReadWrite, "SELECT completed")
        };
        self.complete_with(&tag, code, text, true);
    }

    /// The driver's answer to CREATE, DELETE, RENAME, SUBSCRIBE and UNSUBSCRIBE.
    pub fn done(&mut self, result: Result<(), Failure>) {
        let Some(pending) = self.take_pending() else { return };
        let Pending::Done { tag, name } = pending else {
            self.wait = Wait::Driver(pending);
            return;
        };
        match result {
            Ok(()) => {
                let text = match name {
                    "CREATE" => "CREATE completed",
                    "DELETE" => "DELETE completed",
                    "RENAME" => "RENAME completed",
                    "SUBSCRIBE" => "SUBSCRIBE completed",
                    _ => "UNSUBSCRIBE completed",
                };
                self.complete(&tag, text, true);
            }
            Err(failure) => self.fail(&tag, failure),
        }
    }

    fn handle_list(&mut self, tag: Tag, request: ListRequest) -> Option<Event> {
        // RFC 9051 6.3.9: an empty pattern asks for the delimiter and the root.
        if !request.lsub && request.patterns.iter().all(String::is_empty) {
            let entry = ListEntry {
                attributes: vec![MailboxAttribute::NoSelect],
                delimiter: Some(DELIMITER),
                mailbox: MailboxName::new(""),
                child_subscribed: false,
                old_name: None,
            };
            self.data(&Data::List(entry));
            self.complete(&tag, "LIST completed", true);
            return None;
        }
        let status = request.returns.status.clone();
        self.wait = Wait::Driver(Pending::List { tag, request });
        Some(Event::ListMailboxes { status })
    }

    /// The driver's answer to [`Event::ListMailboxes`]: every mailbox and subscribed name.
    pub fn listed(&mut self, result: Result<Vec<MailboxInfo>, Failure>) {
        let Some(pending) = self.take_pending() else { return };
        let Pending::List { tag, request } = pending else {
            self.wait = Wait::Driver(pending);
            return;
        };
        let mut mailboxes = match result {
            Ok(mailboxes) => mailboxes,
            Err(failure) => return self.fail(&tag, failure),
        };
        mailboxes.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
        mailboxes.dedup_by(|a, b| a.name == b.name);
        let patterns: Vec<String> = request
            .patterns
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| inbox_insensitive(&format!("{}{p}", request.reference.as_str())))
            .collect();
        let matches = |name: &str| patterns.iter().any(|p| wildcard_match(p.as_bytes(), name.as_bytes()));
        let encoding = self.encoding();
        let mut out = Vec::new();
        for info in &mailboxes {
            let name = info.name.as_str();
            let nonexistent = info.attributes.contains(&MailboxAttribute::NonExistent);
            let mut child_subscribed = false;
            if !matches(name) {
                continue;
            }
            if request.selection.subscribed && !info.subscribed {
                // RFC 5258 3.5: with RECURSIVEMATCH a parent of subscribed names is listed
                // with CHILDINFO.
                child_subscribed =
                    request.selection.recursive_match && descendants(&mailboxes, name).any(|child| child.subscribed);
                if !child_subscribed {
                    continue;
                }
            }
            let mut attributes = info.attributes.clone();
            if request.lsub {
                attributes.retain(|a| !a.is_special_use() && *a != MailboxAttribute::NonExistent);
                if nonexistent {
                    attributes.push(MailboxAttribute::NoSelect);
                }
                let entry = ListEntry {
                    attributes,
                    delimiter: Some(DELIMITER),
                    mailbox: info.name.clone(),
                    child_subscribed: false,
                    old_name: None,
                };
                Data::Lsub(entry).write_to(encoding, &mut out);
                continue;
            }
            if !nonexistent {
                let has_children =
                    descendants(&mailboxes, name).any(|c| !c.attributes.contains(&MailboxAttribute::NonExistent));
                attributes.push(if has_children {
                    MailboxAttribute::HasChildren
                } else {
                    MailboxAttribute::HasNoChildren
                });
            }
            if info.subscribed && (request.selection.subscribed || request.returns.subscribed) {
                attributes.push(MailboxAttribute::Subscribed);
            }
            let entry = ListEntry {
                attributes,
                delimiter: Some(DELIMITER),
                mailbox: info.name.clone(),
                child_subscribed,
                old_name: None,
            };
            Data::List(entry).write_to(encoding, &mut out);
            // RFC 5819 2: STATUS after the LIST line of each selectable mailbox.
            if let (Some(items), Some(status), false) = (&request.returns.status, &info.status, nonexistent) {
                let items = status_items(items, status);
                Data::Status { mailbox: info.name.clone(), items }.write_to(encoding, &mut out);
            }
        }
        self.output.extend_from_slice(&out);
        let text = if request.lsub { "LSUB completed" } else { "LIST completed" };
        self.complete(&tag, text, true);
    }

    /// The driver's answer to [`Event::Status`].
    pub fn status(&mut self, result: Result<MailboxStatus, Failure>) {
        let Some(pending) = self.take_pending() else { return };
        let Pending::Status { tag, mailbox, items } = pending else {
            self.wait = Wait::Driver(pending);
            return;
        };
        match result {
            Ok(status) => {
                if items.contains(&StatusItem::HighestModSeq) {
                    // RFC 7162 3.1: STATUS (HIGHESTMODSEQ) enables CONDSTORE.
                    self.enabled.condstore = true;
                }
                let items = status_items(&items, &status);
                self.data(&Data::Status { mailbox, items });
                self.complete(&tag, "STATUS completed", true);
            }
            Err(failure) => self.fail(&tag, failure),
        }
    }

    /// The driver's answer to [`Event::Append`]: RFC 4315 3 APPENDUID.
    pub fn appended(&mut self, result: Result<AppendUid, Failure>) {
        let Some(pending) = self.take_pending() else { return };
        let Pending::Append { tag } = pending else {
            self.wait = Wait::Driver(pending);
            return;
        };
        match result {
            Ok(AppendUid { uid_validity, uid }) => self.complete_with(
                &tag,
                crate::imap::response::ResponseCode::AppendUid { uid_validity, uid },
                "APPEND completed",
                true,
            ),
            Err(failure) => self.fail(&tag, failure),
        }
    }

    /// The driver's answer to [`Event::Quota`]: RFC 9208 5.2 QUOTAROOT (for GETQUOTAROOT)
    /// and 5.1 QUOTA of the user's one root, `""`.
    pub fn quota(&mut self, result: Result<Quota, Failure>) {
        let Some(pending) = self.take_pending() else { return };
        let Pending::Quota { tag, mailbox } = pending else {
            self.wait = Wait::Driver(pending);
            return;
        };
        let resources = match result {
            Ok(resources) => resources,
            Err(failure) => return self.fail(&tag, failure),
        };
        let name = if mailbox.is_some() { "GETQUOTAROOT completed" } else { "GETQUOTA completed" };
        if let Some(mailbox) = mailbox {
            self.data(&Data::QuotaRoot { mailbox, roots: vec![String::new()] });
        }
        self.data(&Data::Quota { root: String::new(), resources });
        self.complete(&tag, name, true);
    }
}

/// The STATUS items asked for, with their values (RECENT is always 0: vouchmail keeps no
/// `\Recent`, RFC 9051 dropped it).
fn status_items(items: &[StatusItem], status: &MailboxStatus) -> Vec<(StatusItem, u64)> {
    items
        .iter()
        .map(|&item| {
            let value = match item {
                StatusItem::Messages => u64::from(status.messages),
                StatusItem::UidNext => u64::from(status.uid_next),
                StatusItem::UidValidity => u64::from(status.uid_validity),
                StatusItem::Unseen => u64::from(status.unseen),
                StatusItem::Deleted => u64::from(status.deleted),
                StatusItem::Size => status.size,
                StatusItem::HighestModSeq => status.highest_modseq,
                StatusItem::Recent => 0,
            };
            (item, value)
        })
        .collect()
}

/// The mailboxes below `name` (sorted input).
fn descendants<'a>(mailboxes: &'a [MailboxInfo], name: &str) -> impl Iterator<Item = &'a MailboxInfo> {
    let prefix = format!("{name}{DELIMITER}");
    let start = mailboxes.partition_point(|m| m.name.as_str() < prefix.as_str());
    mailboxes[start..].iter().take_while(move |m| m.name.as_str().starts_with(&prefix))
}

/// RFC 9051 5.1: `INBOX` is case-insensitive, so a pattern starting with any spelling of
/// it matches the INBOX as stored.
fn inbox_insensitive(pattern: &str) -> String {
    match pattern.get(..5) {
        Some(head) if head.eq_ignore_ascii_case("INBOX") => format!("INBOX{}", &pattern[5..]),
        _ => pattern.to_owned(),
    }
}

/// RFC 9051 6.3.9 wildcards: `*` matches anything, `%` anything but the delimiter.
/// Dynamic programming over the name, O(pattern x name); patterns longer than any sane
/// name match nothing.
pub(super) fn wildcard_match(pattern: &[u8], name: &[u8]) -> bool {
    if pattern.len() > 4096 {
        return false;
    }
    // row[j]: the pattern so far matches name[..j].
    let mut row = vec![false; name.len() + 1];
    row[0] = true;
    for &p in pattern {
        let mut next = vec![false; name.len() + 1];
        next[0] = row[0] && (p == b'*' || p == b'%');
        for j in 1..=name.len() {
            let c = name[j - 1];
            next[j] = match p {
                b'*' => row[j] || next[j - 1],
                b'%' => row[j] || (next[j - 1] && c != DELIMITER as u8),
                _ => row[j - 1] && c == p,
            };
        }
        row = next;
    }
    row[name.len()]
}
