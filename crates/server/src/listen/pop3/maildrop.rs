//! The maildrop (RFC 1939): opened and locked at PASS/AUTH, messages read for RETR and TOP,
//! the `downloaded` tracking event (SPEC 8.3, 9), and the deletions of the UPDATE state.

use vouchmail_proto::pop3::reply::Reply;
use vouchmail_proto::pop3::session::{MessageInfo, Session};
use vouchmail_store::{Folder, StoreError};

use super::context::{Connection, OpenMaildrop, Pop3Context};

impl Connection<'_> {
    pub async fn open_mailbox(&mut self, session: &mut Session, user: String) {
        let result = open_maildrop(self.context, &user).await;
        let peer = self.peer;
        let maildrop = &mut self.maildrop;
        session.mailbox_opened(result.map(|(open, infos)| {
            tracing::info!(%peer, %user, messages = infos.len(), "POP3 maildrop opened");
            *maildrop = Some(open);
            infos
        }));
    }

    pub async fn fetch(&mut self, session: &mut Session, number: usize, top: Option<u32>) {
        let result = match self.entry(number) {
            Some((user, id)) => match self.store().get_mailbox_message(user, id).await {
                Ok(Some((_, data))) => Ok(data),
                Ok(None) => Err(Reply::message_gone()),
                Err(e) => {
                    tracing::error!(error = %e, "store error reading a message for POP3");
                    Err(Reply::mailbox_unavailable())
                }
            },
            None => Err(Reply::message_gone()),
        };
        tracing::debug!(peer = %self.peer, number, ?top, ok = result.is_ok(), "POP3 fetch");
        session.message_loaded(result);
    }

    pub async fn downloaded(&mut self, number: usize) {
        let Some((user, id)) = self.entry(number) else { return };
        // SPEC 8.3, 9: the `downloaded` event once per message, and its tracking record
        // routed to the sender. The message went out; failing to note it must not fail
        // RETR (it is logged).
        let event = vouchmail_store::NewTrackingEvent {
            recipient: user.to_string(),
            subject: vouchmail_store::TrackingSubject::Mailbox(id),
            kind: vouchmail_store::TrackingKind::Downloaded,
            at: crate::support::time::unix_now(),
            reporting_server: self.context.session_config.hostname.clone(),
        };
        crate::rules::tracking::record_event(self.store(), event, &self.context.outbox_bell).await;
    }

    pub async fn update(&mut self, session: &mut Session, deleted: Vec<usize>) {
        let result = match &self.maildrop {
            Some(open) if !deleted.is_empty() => {
                let ids: Vec<i64> =
                    deleted.iter().filter_map(|n| n.checked_sub(1).and_then(|i| open.ids.get(i)).copied()).collect();
                match self.store().delete_mailbox_entries(&open.user, &ids).await {
                    Ok(removed) => {
                        tracing::info!(peer = %self.peer, user = %open.user, removed, "POP3 update");
                        Ok(())
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "store error in the POP3 UPDATE state");
                        Err(Reply::update_failed())
                    }
                }
            }
            _ => Ok(()),
        };
        // RFC 1939 6: release the maildrop, then answer; a client that reconnects at once
        // finds it free.
        self.close_maildrop().await;
        session.update_done(result);
    }

    /// The user and mailbox entry id of message `number` (1-based).
    fn entry(&self, number: usize) -> Option<(&str, i64)> {
        let open = self.maildrop.as_ref()?;
        let id = *open.ids.get(number.checked_sub(1)?)?;
        Some((open.user.as_str(), id))
    }
}

/// Locks and lists the user's INBOX.
async fn open_maildrop(context: &Pop3Context, user: &str) -> Result<(OpenMaildrop, Vec<MessageInfo>), Reply> {
    let lock = match context.locks.try_lock(user).await {
        Ok(Some(lock)) => lock,
        Ok(None) => return Err(Reply::in_use()),
        Err(e) => {
            tracing::error!(error = %e, "store error locking a POP3 maildrop");
            return Err(Reply::mailbox_unavailable());
        }
    };
    let entries = context.store.list_mailbox(user, Some(Folder::Inbox)).await.map_err(|e| match e {
        StoreError::NotFound(_) => Reply::no_maildrop(),
        e => {
            tracing::error!(error = %e, "store error opening a POP3 maildrop");
            Reply::mailbox_unavailable()
        }
    })?;
    let infos = entries.iter().map(|e| MessageInfo { uid: e.unique_id(), size: e.size }).collect();
    let ids = entries.iter().map(|e| e.id).collect();
    Ok((OpenMaildrop { user: user.to_lowercase(), ids, lock }, infos))
}
