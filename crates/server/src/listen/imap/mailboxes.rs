//! The commands of the authenticated state on the account's folders (RFC 9051 6.3):
//! SELECT/EXAMINE, CREATE, DELETE, RENAME, SUBSCRIBE, LIST, STATUS, APPEND, and QUOTA (RFC
//! 9208), over the store's folders (SPEC 9) and the folder rules (`rules::folders`).

use vouchmail_proto::imap::response::{QuotaResource, ResponseCode};
use vouchmail_proto::imap::session::{
    AppendUid, Failure, MailboxInfo, MailboxSnapshot, MailboxStatus, MessageMeta, Session,
};
use vouchmail_proto::imap::types::{DateTime, Flag, MailboxAttribute, MailboxName, StatusItem};
use vouchmail_store::{AppendedMessage, FolderMessage, StoreError};

use super::context::{Connection, Selected};
use crate::rules::folders;
use crate::support::queue_id::new_queue_id;
use crate::support::time::unix_now;

/// The store's flags as IMAP flags (what does not parse was never a valid flag: left out).
pub fn imap_flags(flags: &[String]) -> Vec<Flag> {
    flags.iter().filter_map(|f| Flag::parse(f)).collect()
}

pub fn stored_flags(flags: &[Flag]) -> Vec<String> {
    flags.iter().filter(|f| **f != Flag::Recent).map(ToString::to_string).collect()
}

pub fn meta(message: &FolderMessage) -> MessageMeta {
    MessageMeta {
        uid: message.uid,
        flags: imap_flags(&message.flags),
        internal_date: DateTime::utc(message.received_at),
        size: message.size,
        modseq: message.modseq,
    }
}

/// A store failure as the NO of the command: a missing folder is NONEXISTENT, the rest a
/// temporary UNAVAILABLE (logged).
pub fn failure(e: StoreError, what: &str) -> Failure {
    match e {
        StoreError::NotFound(_) => Failure::nonexistent(),
        StoreError::Conflict(_) => Failure::already_exists(),
        e => {
            tracing::error!(error = %e, "store error on IMAP {what}");
            Failure::unavailable()
        }
    }
}

fn special_use(attributes: &[MailboxAttribute]) -> Option<&'static str> {
    attributes.iter().find_map(|a| match a {
        MailboxAttribute::Archive => Some("\\Archive"),
        MailboxAttribute::Drafts => Some("\\Drafts"),
        MailboxAttribute::Junk => Some("\\Junk"),
        MailboxAttribute::Sent => Some("\\Sent"),
        MailboxAttribute::Trash => Some("\\Trash"),
        MailboxAttribute::Flagged => Some("\\Flagged"),
        MailboxAttribute::All => Some("\\All"),
        _ => None,
    })
}

fn attribute(special_use: &str) -> Option<MailboxAttribute> {
    Some(match special_use {
        "\\Archive" => MailboxAttribute::Archive,
        "\\Drafts" => MailboxAttribute::Drafts,
        "\\Junk" => MailboxAttribute::Junk,
        "\\Sent" => MailboxAttribute::Sent,
        "\\Trash" => MailboxAttribute::Trash,
        "\\Flagged" => MailboxAttribute::Flagged,
        "\\All" => MailboxAttribute::All,
        _ => return None,
    })
}

fn status_of(info: &vouchmail_store::FolderInfo, messages: &[FolderMessage]) -> MailboxStatus {
    let has = |m: &FolderMessage, flag: &str| m.flags.iter().any(|f| f.eq_ignore_ascii_case(flag));
    MailboxStatus {
        messages: messages.len() as u32,
        uid_next: info.uid_next,
        uid_validity: info.uid_validity,
        unseen: messages.iter().filter(|m| !has(m, "\\Seen")).count() as u32,
        deleted: messages.iter().filter(|m| has(m, "\\Deleted")).count() as u32,
        size: messages.iter().map(|m| m.size).sum(),
        highest_modseq: info.highest_modseq,
    }
}

impl Connection<'_> {
    /// RFC 9051 6.3.2, 6.3.3: the folder as it is now; from here on its changes are watched.
    pub async fn select(&mut self, session: &mut Session, mailbox: MailboxName) {
        self.selected = None;
        let name = mailbox.as_str().to_string();
        // Read before the folder: a change in between only makes the first look read it again.
        let stamp = self.folder_stamp(&name).await.unwrap_or_default();
        let found = match self.folder_contents(&name).await {
            Ok(Some(found)) => found,
            Ok(None) => return session.selected(Err(Failure::nonexistent())),
            Err(e) => return session.selected(Err(failure(e, "SELECT"))),
        };
        let (info, messages) = found;
        let system = [Flag::Seen, Flag::Answered, Flag::Flagged, Flag::Deleted, Flag::Draft];
        let read_only = folders::is_read_only(&info.name);
        let snapshot = MailboxSnapshot {
            uid_validity: info.uid_validity,
            uid_next: info.uid_next,
            highest_modseq: info.highest_modseq,
            messages: messages.iter().map(meta).collect(),
            permanent_flags: if read_only { Vec::new() } else { system.to_vec() },
            new_keywords: !read_only,
            read_only,
        };
        self.selected = Some(Selected::new(info.name, info.uid_validity, &messages, stamp));
        session.selected(Ok(snapshot));
    }

    pub fn closed(&mut self) {
        self.selected = None;
    }

    pub async fn create(&mut self, session: &mut Session, mailbox: MailboxName, attributes: Vec<MailboxAttribute>) {
        let name = mailbox.as_str();
        if !folders::may_create(name) {
            return session.done(Err(Failure::with_code(ResponseCode::Cannot, "That name cannot be a folder here")));
        }
        let result = self.store().create_folder(self.user(), name, special_use(&attributes)).await;
        session.done(result.map_err(|e| failure(e, "CREATE")));
    }

    pub async fn delete(&mut self, session: &mut Session, mailbox: MailboxName) {
        let name = mailbox.as_str();
        if folders::is_permanent(name) {
            return session.done(Err(Failure::with_code(ResponseCode::Cannot, "Every account keeps this folder")));
        }
        let result = self.store().delete_folder(self.user(), name).await;
        session.done(result.map_err(|e| failure(e, "DELETE")));
    }

    pub async fn rename(&mut self, session: &mut Session, from: MailboxName, to: MailboxName) {
        let (from, to) = (from.as_str(), to.as_str());
        // RFC 9051 6.3.6: INBOX may be renamed (its messages move); the other folders every
        // account has stay where they are.
        if (folders::is_permanent(from) && !from.eq_ignore_ascii_case("INBOX")) || !folders::may_create(to) {
            return session.done(Err(Failure::with_code(ResponseCode::Cannot, "This folder cannot be renamed so")));
        }
        let result = self.store().rename_folder(self.user(), from, to).await;
        session.done(result.map_err(|e| failure(e, "RENAME")));
    }

    pub async fn subscribe(&mut self, session: &mut Session, mailbox: MailboxName, subscribe: bool) {
        let result = self.store().subscribe_folder(self.user(), mailbox.as_str(), subscribe).await;
        session.done(result.map_err(|e| failure(e, "SUBSCRIBE")));
    }

    /// RFC 9051 6.3.9: every folder; with RFC 5819's STATUS, each one's counts.
    pub async fn list(&mut self, session: &mut Session, status: Option<Vec<StatusItem>>) {
        let folders = match self.store().list_folders(self.user()).await {
            Ok(folders) => folders,
            Err(e) => return session.listed(Err(failure(e, "LIST"))),
        };
        let mut listed = Vec::with_capacity(folders.len());
        for folder in folders {
            let status = match &status {
                Some(_) => match self.folder_contents(&folder.name).await {
                    Ok(Some((info, messages))) => Some(status_of(&info, &messages)),
                    Ok(None) => None,
                    Err(e) => return session.listed(Err(failure(e, "LIST"))),
                },
                None => None,
            };
            let attributes = folder.special_use.as_deref().and_then(attribute).into_iter().collect();
            listed.push(MailboxInfo {
                name: MailboxName::new(folder.name),
                attributes,
                subscribed: folder.subscribed,
                status,
            });
        }
        session.listed(Ok(listed));
    }

    pub async fn status(&mut self, session: &mut Session, mailbox: MailboxName) {
        let result = match self.folder_contents(mailbox.as_str()).await {
            Ok(Some((info, messages))) => Ok(status_of(&info, &messages)),
            Ok(None) => Err(Failure::nonexistent()),
            Err(e) => Err(failure(e, "STATUS")),
        };
        session.status(result);
    }

    /// RFC 9051 6.3.12: the message into the folder (TRYCREATE when it does not exist),
    /// within the account's quota.
    pub async fn append(
        &mut self,
        session: &mut Session,
        mailbox: MailboxName,
        flags: Vec<Flag>,
        date: Option<DateTime>,
        message: Vec<u8>,
    ) {
        let name = mailbox.as_str();
        if folders::is_read_only(name) {
            return session.appended(Err(Failure::no_perm()));
        }
        match self.store().get_account(self.user()).await {
            Ok(Some(account))
                if account.quota_bytes > 0 && account.used_bytes + message.len() as u64 > account.quota_bytes =>
            {
                return session.appended(Err(Failure::over_quota()));
            }
            Ok(_) => {}
            Err(e) => return session.appended(Err(failure(e, "APPEND"))),
        }
        let appended = AppendedMessage {
            queue_id: new_queue_id(),
            flags: stored_flags(&flags),
            received_at: date.map_or_else(unix_now, |d| d.unix),
            data: message,
        };
        let result = match self.store().append_message(self.user(), name, appended).await {
            Ok((uid_validity, uid)) => {
                // RFC 9051 6.3.12: appended to the selected folder, the client hears of it
                // (EXISTS) before the tagged OK.
                let selected = self.selected.as_ref().map(|s| s.folder.clone());
                if selected.is_some_and(|folder| vouchmail_store::rules::folder_name(name) == folder) {
                    self.watch(session).await;
                }
                Ok(AppendUid { uid_validity, uid })
            }
            Err(StoreError::NotFound(_)) => Err(Failure::try_create()),
            Err(e) => Err(failure(e, "APPEND")),
        };
        session.appended(result);
    }

    /// RFC 9208 4.2, 4.3: the account's storage (in KiB) and message count against its
    /// quota (SPEC 3: `user quota`); no quota, no resources.
    pub async fn quota(&mut self, session: &mut Session) {
        let result = match self.store().get_account(self.user()).await {
            Ok(Some(account)) if account.quota_bytes > 0 => Ok(vec![QuotaResource {
                name: "STORAGE".into(),
                usage: account.used_bytes.div_ceil(1024),
                limit: account.quota_bytes / 1024,
            }]),
            Ok(_) => Ok(Vec::new()),
            Err(e) => Err(failure(e, "GETQUOTA")),
        };
        session.quota(result);
    }
}
