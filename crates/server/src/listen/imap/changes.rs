//! Changes made elsewhere to the selected folder (SPEC 9: deliveries, other IMAP or POP3
//! sessions, other nodes on the store): every `imap.watch_interval_ms` the folder's stamp
//! (its UIDNEXT and HIGHESTMODSEQ, which every change moves) is looked at; when it moved,
//! the folder is read again and compared with what this session last saw, and the
//! differences are pushed to the session, which reports them when RFC 9051 7.5.1 allows
//! (at once during IDLE).

use vouchmail_proto::imap::session::{Change, Session};

use super::context::Connection;
use super::mailboxes::{imap_flags, meta};

impl Connection<'_> {
    pub async fn watch(&mut self, session: &mut Session) {
        let Some(selected) = &self.selected else { return };
        let (folder, before) = (selected.folder.clone(), selected.stamp);
        // The folder is read again only when its stamp moved: an idle session costs one
        // row per look.
        let stamp = match self.folder_stamp(&folder).await {
            Ok(stamp) if stamp.is_some() && stamp == before => return,
            Ok(stamp) => stamp,
            Err(e) => {
                tracing::warn!(error = %e, "store error watching an IMAP folder");
                return;
            }
        };
        let (info, messages) = match self.folder_contents(&folder).await {
            Ok(Some(found)) => found,
            // Deleted or unreadable now: the next command's own store access answers.
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "store error watching an IMAP folder");
                return;
            }
        };
        let Some(selected) = &mut self.selected else { return };
        if info.uid_validity != selected.uid_validity {
            // Deleted and made again: the session's UIDs mean nothing now.
            return;
        }
        let mut changes = Vec::new();
        for message in &messages {
            if !selected.contains(message.uid) {
                changes.push(Change::New(meta(message)));
            } else if message.modseq > selected.seen_modseq {
                // Changed since it was read (by this session too: the session drops what
                // it already knows).
                changes.push(Change::Flags {
                    uid: message.uid,
                    flags: imap_flags(&message.flags),
                    modseq: message.modseq,
                });
            }
        }
        let mut now: Vec<u32> = messages.iter().map(|m| m.uid).collect();
        now.sort_unstable();
        for &uid in selected.uids() {
            if now.binary_search(&uid).is_err() {
                changes.push(Change::Expunged { uid });
            }
        }
        selected.read(&messages);
        selected.stamp = stamp;
        if !changes.is_empty() {
            session.mailbox_changed(changes);
        }
    }
}
